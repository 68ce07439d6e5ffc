//! The state dir: what a router keeps across restarts.
//!
//! - `peer-name`: the router's name, picked at random on first start (or given with
//!   `--name`), so that a restarted router is the same peer to the others.
//! - `state.json`: attachments and exposed addresses, so that a restarted router adopts
//!   the veths it made without touching them.
//! - `router.log`: the log of a router started with `weft launch`.
//! - `ipam.state`: the address ring and the addresses given out (`crate::ipam`), written
//!   before anything that depends on it leaves the router, behind a SHA-256 checksum (a
//!   corrupted file stops start-up; one from before the checksum is loaded and rewritten).
//!
//! Every write is atomic: a temporary file is written and fsynced, then renamed over the
//! old one and the directory fsynced, so a crash leaves either the old or the new file.

use crate::cli::Cidr;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use weft_core::peer::PeerName;

/// Format version of `state.json`; a file with another version is refused, not guessed at.
pub(crate) const STATE_VERSION: u32 = 1;
/// Mode of every file written here (a peer's identity and its address book).
pub(crate) const STATE_FILE_MODE: u32 = 0o600;
/// Largest `state.json` read, in bytes.
pub(crate) const STATE_FILE_LEN_MAX: u64 = 16 * 1024 * 1024;

/// One network namespace plugged into the bridge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Attachment {
    /// Stable id: the namespace's inode, in hex (`ns-4026532281`).
    pub(crate) id: String,
    /// The namespace path it was attached by (`/var/run/netns/a`, `/proc/PID/ns/net`).
    pub(crate) netns: PathBuf,
    /// The namespace's inode number (identifies it when the path is a pid's).
    pub(crate) netns_inode: u64,
    /// The host end of the veth, enslaved to the bridge.
    pub(crate) host_ifname: String,
    /// The interface inside the namespace (`ethwe`).
    pub(crate) ifname: String,
    /// MAC of the interface inside, when known.
    pub(crate) mac: Option<String>,
    /// Addresses on the interface inside.
    pub(crate) addresses: Vec<Cidr>,
    /// The DNS name given with `attach --name`, registered again after a router restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) dns_name: Option<String>,
    /// What network policy sees of it: namespace, labels, named ports.
    #[serde(default, skip_serializing_if = "PodMeta::is_empty")]
    pub(crate) pod: PodMeta,
}

/// An attachment's policy namespace, labels and named ports (`attach --namespace NS
/// --label K=V --port NAME=PORT/PROTO`, `weft label`, Docker's container labels, CNI's
/// `K8S_POD_NAMESPACE`). Checked when set; see `crate::policy::pods`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PodMeta {
    /// The namespace (`default` when none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) namespace: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub(crate) labels: std::collections::BTreeMap<String, String>,
    /// Named ports, `NAME=PORT/PROTO`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) ports: Vec<String>,
}

impl PodMeta {
    /// Nothing set.
    pub(crate) fn is_empty(&self) -> bool {
        self.namespace.is_none() && self.labels.is_empty() && self.ports.is_empty()
    }
}

/// Everything in `state.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Persisted {
    /// Format version ([`STATE_VERSION`]).
    pub(crate) version: u32,
    /// Attachments, in the order they were made.
    pub(crate) attachments: Vec<Attachment>,
    /// Addresses given to the host on the bridge.
    pub(crate) exposed: Vec<Cidr>,
    /// The names `expose -h FQDN` gave exposed addresses, registered again after a
    /// router restart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) exposed_names: Vec<ExposedName>,
}

/// One `expose -h FQDN`: an exposed address and its weftDNS name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ExposedName {
    /// The exposed address.
    pub(crate) address: Cidr,
    /// The name, qualified, with its trailing dot.
    pub(crate) fqdn: String,
}

/// The state directory of one router.
#[derive(Clone, Debug)]
pub(crate) struct StateDir {
    path: PathBuf,
}

impl StateDir {
    /// The directory at `path` (not created until [`StateDir::ensure`]).
    pub(crate) fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Its path.
    #[cfg(test)]
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the directory (mode 0700: it may hold a peer's identity).
    pub(crate) fn ensure(&self) -> Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.path)
            .map_err(Error::io("create state dir", &self.path))
    }

    /// The log file a launched router writes.
    pub(crate) fn log_path(&self) -> PathBuf {
        self.path.join("router.log")
    }

    /// A file of this router in the directory (e.g. the IPAM state).
    pub(crate) fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    fn name_path(&self) -> PathBuf {
        self.path.join("peer-name")
    }

    fn state_path(&self) -> PathBuf {
        self.path.join("state.json")
    }

    /// The peer name: `given` if set (and then remembered), else the remembered one, else a
    /// new random one (remembered). `random` supplies 6 random bytes.
    pub(crate) fn peer_name(
        &self,
        given: Option<PeerName>,
        random: impl FnOnce() -> Result<[u8; 6]>,
    ) -> Result<PeerName> {
        let path = self.name_path();
        if let Some(name) = given {
            write_atomic(&path, format!("{name}\n").as_bytes())?;
            return Ok(name);
        }
        match fs::read_to_string(&path) {
            Ok(text) => text.trim().parse::<PeerName>().map_err(|e| {
                Error::Other(format!(
                    "{}: {e}; fix it, or delete it to get a new name",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = random()?;
                // Like a MAC: locally administered, unicast.
                bytes[0] = (bytes[0] | 0x02) & !0x01;
                let name = PeerName::from_bytes(bytes);
                write_atomic(&path, format!("{name}\n").as_bytes())?;
                Ok(name)
            }
            Err(e) => Err(Error::io("read", path)(e)),
        }
    }

    /// Loads `state.json`; a missing file is an empty state.
    pub(crate) fn load(&self) -> Result<Persisted> {
        let path = self.state_path();
        let Some(bytes) = read_bounded(&path, STATE_FILE_LEN_MAX)? else {
            return Ok(Persisted {
                version: STATE_VERSION,
                ..Persisted::default()
            });
        };
        let state: Persisted = serde_json::from_slice(&bytes).map_err(|e| {
            Error::Other(format!(
                "{}: not a weft state file ({e}); move it away to start with no attachments",
                path.display()
            ))
        })?;
        if state.version != STATE_VERSION {
            return Err(Error::Other(format!(
                "{}: state version {} is not {STATE_VERSION}; move it away to start with no attachments",
                path.display(),
                state.version
            )));
        }
        Ok(state)
    }

    /// Saves `state.json` atomically.
    pub(crate) fn save(&self, state: &Persisted) -> Result<()> {
        let mut bytes = serde_json::to_vec_pretty(state)
            .map_err(|e| Error::Other(format!("encode state: {e}")))?;
        bytes.push(b'\n');
        write_atomic(&self.state_path(), &bytes)
    }

    /// Removes the files this module writes (not the directory, which may be shared).
    pub(crate) fn wipe(&self) -> Result<()> {
        for p in [
            self.name_path(),
            self.state_path(),
            self.log_path(),
            self.file(crate::ipam::STATE_FILE),
        ] {
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove", p)(e)),
            }
        }
        Ok(())
    }
}

/// Reads a state file of at most `len_max` bytes; `None` if it does not exist.
pub(crate) fn read_bounded(path: &Path, len_max: u64) -> Result<Option<Vec<u8>>> {
    let file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open", path)(e)),
    };
    let mut bytes = Vec::new();
    file.take(len_max + 1)
        .read_to_end(&mut bytes)
        .map_err(Error::io("read", path))?;
    if bytes.len() as u64 > len_max {
        return Err(Error::Other(format!(
            "{}: larger than {len_max} bytes",
            path.display()
        )));
    }
    Ok(Some(bytes))
}

/// The temporary file [`write_atomic`] writes `path`'s new content to.
fn temp_path(path: &Path) -> PathBuf {
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    dir.join(format!(".{file_name}.tmp.{}", std::process::id()))
}

/// Opens `tmp` as a new file (mode 0600), never through a symlink or into an existing
/// file: O_CREAT|O_EXCL|O_NOFOLLOW.
fn create_temp(tmp: &Path) -> std::io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(STATE_FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(tmp)
}

/// Writes `bytes` to `path` so that readers see the old or the new content, never a mix:
/// a new temp file in the same directory (mode 0600, O_EXCL|O_NOFOLLOW, so nothing
/// planted there is followed or written into), fsync, rename, fsync the directory.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = temp_path(path);
    let result = (|| {
        let mut f = match create_temp(&tmp) {
            // Left by a crash of a process with our pid, or planted: unlink the entry
            // itself (unlink never follows a symlink) and try once more.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                fs::remove_file(&tmp).map_err(Error::io("remove stale", &tmp))?;
                create_temp(&tmp)
            }
            r => r,
        }
        .map_err(Error::io("create", &tmp))?;
        f.write_all(bytes).map_err(Error::io("write", &tmp))?;
        f.sync_all().map_err(Error::io("fsync", &tmp))?;
        fs::rename(&tmp, path).map_err(Error::io("rename into place", path))?;
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(Error::io("fsync dir", dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("weft-state-test-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        p
    }

    fn sample() -> Persisted {
        Persisted {
            version: STATE_VERSION,
            attachments: vec![Attachment {
                pod: PodMeta::default(),
                id: "ns-1234".into(),
                netns: "/var/run/netns/a".into(),
                netns_inode: 0x1234,
                host_ifname: "vwe1234".into(),
                ifname: "ethwe".into(),
                mac: Some("02:00:00:00:00:01".into()),
                addresses: vec!["10.32.0.5/12".parse().unwrap()],
                dns_name: Some("web.weave.local".into()),
            }],
            exposed: vec!["10.32.0.1/12".parse().unwrap()],
            exposed_names: vec![ExposedName {
                address: "10.32.0.1/12".parse().unwrap(),
                fqdn: "gw.weave.local.".into(),
            }],
        }
    }

    #[test]
    fn state_round_trips_and_missing_is_empty() {
        let dir = StateDir::new(tmpdir("rt"));
        dir.ensure().unwrap();
        let empty = dir.load().unwrap();
        assert!(empty.attachments.is_empty());
        assert_eq!(empty.version, STATE_VERSION);
        let s = sample();
        dir.save(&s).unwrap();
        assert_eq!(dir.load().unwrap(), s);
        // No temp files are left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
        fs::remove_dir_all(dir.path()).unwrap();
    }

    #[test]
    fn corrupt_or_foreign_state_is_refused_with_advice() {
        let dir = StateDir::new(tmpdir("bad"));
        dir.ensure().unwrap();
        fs::write(dir.path().join("state.json"), b"{\"version\": 1, \"attach").unwrap();
        let err = dir.load().unwrap_err().to_string();
        assert!(err.contains("move it away"), "{err}");
        fs::write(
            dir.path().join("state.json"),
            b"{\"version\":9,\"attachments\":[],\"exposed\":[]}",
        )
        .unwrap();
        let err = dir.load().unwrap_err().to_string();
        assert!(err.contains("version 9"), "{err}");
        fs::remove_dir_all(dir.path()).unwrap();
    }

    #[test]
    fn write_atomic_does_not_follow_a_symlink_at_the_temp_path() {
        use std::os::unix::fs::PermissionsExt;
        let base = tmpdir("symlink");
        fs::create_dir_all(&base).unwrap();
        let victim = base.join("victim");
        fs::write(&victim, b"keep me").unwrap();
        let target = base.join("state.json");
        std::os::unix::fs::symlink(&victim, temp_path(&target)).unwrap();
        write_atomic(&target, b"new state").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"keep me");
        assert_eq!(fs::read(&target).unwrap(), b"new state");
        assert!(
            !fs::symlink_metadata(&target)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        let mode = fs::metadata(&target).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(
            fs::symlink_metadata(temp_path(&target)).is_err(),
            "temp left"
        );
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn peer_name_is_created_once_and_kept() {
        let dir = StateDir::new(tmpdir("name"));
        dir.ensure().unwrap();
        let first = dir.peer_name(None, || Ok([0xff, 1, 2, 3, 4, 5])).unwrap();
        // Locally administered, unicast.
        assert_eq!(first.to_bytes()[0], 0xfe);
        let again = dir
            .peer_name(None, || panic!("must not draw a new name"))
            .unwrap();
        assert_eq!(first, again);
        let given: PeerName = "0a:00:00:00:00:07".parse().unwrap();
        assert_eq!(
            dir.peer_name(Some(given), || unreachable!()).unwrap(),
            given
        );
        assert_eq!(dir.peer_name(None, || unreachable!()).unwrap(), given);
        fs::write(dir.path().join("peer-name"), "garbage").unwrap();
        assert!(dir.peer_name(None, || unreachable!()).is_err());
        dir.wipe().unwrap();
        assert!(!dir.path().join("peer-name").exists());
        fs::remove_dir_all(dir.path()).unwrap();
    }
}
