//! The control socket as a file: where it may be created, with which mode, and who may
//! talk on it.
//!
//! What it does: claims the path (a live router there is refused, a stale socket is
//! removed, anything that is not a socket is left alone and refused), creates a missing
//! directory 0700, binds the listener and makes the socket 0600, and checks every
//! accepted connection's `SO_PEERCRED`: only root and the router's own uid are served.
//! What it does not do: the HTTP API on the socket (`crate::api`).

use crate::error::{Error, Result};
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use tokio::net::UnixListener;

/// Mode of the control socket: only its owner (root) may connect.
pub(crate) const SOCKET_MODE: u32 = 0o600;
/// Mode of a socket directory the router creates.
pub(crate) const SOCKET_DIR_MODE: u32 = 0o700;

/// The effective uid of this process (the owner of `/proc/self`).
pub(crate) fn effective_uid() -> Result<u32> {
    fs::metadata("/proc/self")
        .map(|m| m.uid())
        .map_err(Error::io("inspect", "/proc/self"))
}

/// What kind of file `t` is, for error messages.
fn kind(t: fs::FileType) -> &'static str {
    if t.is_file() {
        "regular file"
    } else if t.is_dir() {
        "directory"
    } else if t.is_symlink() {
        "symbolic link"
    } else if t.is_fifo() {
        "FIFO"
    } else {
        "special file"
    }
}

/// Makes `path` free for a new listener: refuses if a router answers there or if it is
/// anything but a socket (which is left as it is), removes a socket nobody listens on,
/// and creates the missing directory (mode 0700). `flag` names the option that moves the
/// path, for the refusal.
pub(crate) fn claim(path: &Path, flag: &str) -> Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("inspect", path)(e)),
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(Error::Other(format!(
                "{} is a {}, not a socket; weft leaves it alone: move it away or pick another {flag}",
                path.display(),
                kind(meta.file_type())
            )));
        }
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(Error::AlreadyRunning(path.to_path_buf())),
            // Nobody listens: a router that died left it.
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                fs::remove_file(path).map_err(Error::io("remove stale socket", path))?;
            }
            Err(e) => return Err(Error::io("check the existing socket", path)(e)),
        },
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        ensure_dir(dir)?;
    }
    Ok(())
}

/// Creates `dir` (and its parents) with mode 0700 if missing. An existing directory keeps
/// its mode (it may be shared, like /tmp); one that others may write to without the
/// sticky bit is warned about, since they could replace the socket.
fn ensure_dir(dir: &Path) -> Result<()> {
    match fs::metadata(dir) {
        Ok(meta) => {
            let mode = meta.mode();
            if mode & 0o022 != 0 && mode & 0o1000 == 0 {
                tracing::warn!(
                    "the control socket's directory {} is writable by other users (mode {:o}); they could replace the socket",
                    dir.display(),
                    mode & 0o7777
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(SOCKET_DIR_MODE)
                .create(dir)
                .map_err(Error::io("create socket dir", dir))?;
            // Exactly 0700 whatever the umask.
            fs::set_permissions(dir, fs::Permissions::from_mode(SOCKET_DIR_MODE))
                .map_err(Error::io("set the mode of", dir))
        }
        Err(e) => Err(Error::io("inspect", dir)(e)),
    }
}

/// Binds the control socket at `path` (claimed with [`claim`]) and makes it 0600. Until
/// the mode is set the umask's applies; [`caller_allowed`] still refuses strangers.
pub(crate) fn bind(path: &Path) -> Result<UnixListener> {
    let listener = UnixListener::bind(path).map_err(Error::io("listen on", path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(SOCKET_MODE))
        .map_err(Error::io("set the mode of", path))?;
    Ok(listener)
}

/// Whether the process at the other end of `stream` may use the API: root or `own_uid`.
/// `Err` carries the one-line refusal for it.
pub(crate) fn caller_allowed(
    stream: &tokio::net::UnixStream,
    own_uid: u32,
) -> std::result::Result<(), String> {
    let uid = stream
        .peer_cred()
        .map_err(|e| format!("permission denied: cannot tell who is calling ({e})"))?
        .uid();
    check_uid(uid, own_uid)
}

fn check_uid(uid: u32, own_uid: u32) -> std::result::Result<(), String> {
    if uid == 0 || uid == own_uid {
        return Ok(());
    }
    Err(format!(
        "permission denied: the weft control socket serves only root{} and you are uid {uid}; run weft with sudo",
        if own_uid == 0 {
            String::new()
        } else {
            format!(" and uid {own_uid}")
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn tmpdir(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("weft-control-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        p
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().mode() & 0o7777
    }

    #[tokio::test]
    async fn socket_is_0600_in_a_new_0700_dir() {
        let base = tmpdir("mode");
        let path = base.join("run/weft/weft.sock");
        claim(&path, "--socket").unwrap();
        let _l = bind(&path).unwrap();
        assert_eq!(mode(&path), SOCKET_MODE);
        assert_eq!(mode(&base.join("run/weft")), SOCKET_DIR_MODE);
        assert_eq!(mode(&base.join("run")), SOCKET_DIR_MODE);
        fs::remove_dir_all(&base).unwrap();
    }

    #[tokio::test]
    async fn a_live_socket_is_refused_and_a_stale_one_replaced() {
        let base = tmpdir("stale");
        let path = base.join("weft.sock");
        let live = bind(&path).unwrap();
        let err = claim(&path, "--socket").unwrap_err();
        assert!(matches!(err, Error::AlreadyRunning(_)), "{err}");
        drop(live);
        // The file stays behind, nobody listens: stale.
        assert!(path.exists());
        claim(&path, "--socket").unwrap();
        assert!(!path.exists());
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_regular_file_at_the_socket_path_is_refused_and_kept() {
        let base = tmpdir("file");
        let path = base.join("weft.sock");
        fs::write(&path, b"precious").unwrap();
        let err = claim(&path, "--socket").unwrap_err().to_string();
        assert!(err.contains("regular file, not a socket"), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"precious");
        // A symlink to a file is not followed either.
        let link = base.join("link.sock");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let err = claim(&link, "--socket").unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        assert!(fs::symlink_metadata(&link).is_ok());
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn only_root_and_the_routers_uid_are_served() {
        assert!(check_uid(0, 0).is_ok());
        assert!(check_uid(1000, 1000).is_ok());
        assert!(check_uid(0, 1000).is_ok());
        let err = check_uid(65534, 0).unwrap_err();
        assert!(err.contains("uid 65534") && !err.contains('\n'), "{err}");
        assert!(check_uid(65534, 1000).unwrap_err().contains("uid 1000"));
    }
}
