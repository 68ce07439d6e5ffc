//! Address management on the host: the `--ipalloc-*` flags, `weft attach` without an
//! address (or with `net:default` / `net:CIDR`), claims of explicit addresses inside the
//! range, frees on `detach`, `weft rmpeer` and `weft status ipam`.
//!
//! What it does: parse the flags into [`weft_core::ipam::IpamConfig`], turn an attach
//! request into IPAM requests for the router task and wait for their answers (up to the
//! request timeout), persist and restore the IPAM state in the state dir (the driver half
//! is `driver/ipam.rs`), and render `status ipam`.
//! What it does not do: the ring CRDT itself (`weft_core::ipam`), or the veths
//! (`plumbing`). Addresses outside the range (and IPv6) are passed through unmanaged, as
//! Weave does.

use crate::api::Api;
use crate::cli::Cidr;
use crate::driver::{Input, IpamRequest, ask};
use crate::error::{Error, Result};
use crate::messages::{ApiError, IpamStatus, RmpeerReply};
use crate::state::StateDir;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration as StdDuration;
use tokio::sync::oneshot;
use weft_core::ipam::{Cidr as V4Cidr, InitMode, IpamConfig};
use weft_core::router::Router;
use weft_core::time::{Duration, Instant};

/// `--ipalloc-range` unless given.
pub(crate) const RANGE_DEFAULT: &str = "10.32.0.0/12";
/// `--ipalloc-timeout` unless given: how long `attach` waits for an address.
pub(crate) const REQUEST_TIMEOUT_DEFAULT: &str = "30s";
/// Longest `--ipalloc-timeout` (the CLI waits a little longer than this for the daemon).
pub(crate) const REQUEST_TIMEOUT_MAX_MS: u64 = 80_000;
/// Most addresses one `attach` asks for.
pub(crate) const ADDRESSES_PER_ATTACH_MAX: usize = 16;
/// The file in the state dir holding the IPAM export.
pub(crate) const STATE_FILE: &str = "ipam.state";
/// First bytes of an `ipam.state` with a checksum; the SHA-256 of the rest follows.
pub(crate) const STATE_CHECKSUM_TAG: &[u8] = b"weft-ipam-sha256\n";
/// Length of the SHA-256 after [`STATE_CHECKSUM_TAG`], in bytes.
pub(crate) const STATE_DIGEST_LEN: usize = 32;
/// Largest IPAM state file read, in bytes.
pub(crate) const STATE_FILE_LEN_MAX: u64 = 64 * 1024 * 1024;

/// `--ipalloc-range` / `--ipalloc-default-subnet`: an IPv4 block, aligned.
pub(crate) fn parse_block(s: &str) -> std::result::Result<V4Cidr, String> {
    let c: V4Cidr = s.parse().map_err(|e| format!("bad CIDR {s:?}: {e}"))?;
    if c.network() != c {
        return Err(format!(
            "bad CIDR {s:?}: host bits set; did you mean {}?",
            c.network()
        ));
    }
    Ok(c)
}

/// `--ipalloc-init consensus=N | observer`.
pub(crate) fn parse_init(s: &str) -> std::result::Result<InitMode, String> {
    let bad = || {
        format!(
            "bad --ipalloc-init {s:?}: expected consensus=N (N = number of initial peers, 1 to {}) or observer",
            weft_core::ipam::wire::PROPOSAL_NAMES_MAX
        )
    };
    if s == "observer" {
        return Ok(InitMode::Observer);
    }
    let n = s.strip_prefix("consensus=").ok_or_else(bad)?;
    let quorum: u16 = n.parse().map_err(|_| bad())?;
    if quorum == 0 || usize::from(quorum) > weft_core::ipam::wire::PROPOSAL_NAMES_MAX {
        return Err(bad());
    }
    Ok(InitMode::Consensus { quorum })
}

/// A duration like `90s`, `10m`, `2h`, `500ms` (a bare number is seconds).
pub(crate) fn parse_duration(s: &str) -> std::result::Result<StdDuration, String> {
    let bad = || format!("bad duration {s:?}: expected a number with a unit, e.g. 30s, 10m or 1h");
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    if n.is_empty() || n.len() > 12 {
        return Err(bad());
    }
    let n: u64 = n.parse().map_err(|_| bad())?;
    let ms = match unit {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        _ => None,
    }
    .ok_or_else(bad)?;
    if ms == 0 {
        return Err(format!("bad duration {s:?}: must be more than zero"));
    }
    Ok(StdDuration::from_millis(ms))
}

/// `--ipalloc-timeout`: a duration up to [`REQUEST_TIMEOUT_MAX_MS`].
pub(crate) fn parse_timeout(s: &str) -> std::result::Result<StdDuration, String> {
    let d = parse_duration(s)?;
    if d.as_millis() > u128::from(REQUEST_TIMEOUT_MAX_MS) {
        return Err(format!(
            "bad --ipalloc-timeout {s:?}: at most {} s",
            REQUEST_TIMEOUT_MAX_MS / 1000
        ));
    }
    Ok(d)
}

fn core_duration(d: StdDuration) -> Duration {
    Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The IPAM settings from the flags. Without `--ipalloc-init`, the quorum is the number of
/// peers given on the command line plus one (ourselves), as Weave does.
pub(crate) fn config(
    range: Option<V4Cidr>,
    default_subnet: Option<V4Cidr>,
    init: Option<InitMode>,
    reclaim_after: Option<StdDuration>,
    request_timeout: StdDuration,
    peers: usize,
) -> Result<IpamConfig> {
    let range = match range {
        Some(r) => r,
        None => parse_block(RANGE_DEFAULT).map_err(Error::Other)?,
    };
    let default_subnet = default_subnet.unwrap_or(range);
    if !range.contains_block(&default_subnet) {
        return Err(Error::Other(format!(
            "--ipalloc-default-subnet {default_subnet} is not inside --ipalloc-range {range}"
        )));
    }
    let quorum = u16::try_from(peers + 1)
        .unwrap_or(u16::MAX)
        .min(u16::try_from(weft_core::ipam::wire::PROPOSAL_NAMES_MAX).unwrap_or(u16::MAX));
    Ok(IpamConfig {
        range,
        default_subnet,
        init: init.unwrap_or(InitMode::Consensus { quorum }),
        reclaim_after: reclaim_after.map(core_duration),
        request_timeout: core_duration(request_timeout),
    })
}

/// `consensus=N` or `observer`.
pub(crate) fn init_text(init: InitMode) -> String {
    match init {
        InitMode::Consensus { quorum } => format!("consensus={quorum}"),
        InitMode::Observer => "observer".to_owned(),
    }
}

/// Where the IPAM state lives in `dir`.
pub(crate) fn state_path(dir: &StateDir) -> std::path::PathBuf {
    dir.file(STATE_FILE)
}

/// The file bytes for an IPAM export: [`STATE_CHECKSUM_TAG`], the SHA-256 of `export`,
/// then `export`.
pub(crate) fn seal_state(export: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    let mut out = Vec::with_capacity(STATE_CHECKSUM_TAG.len() + STATE_DIGEST_LEN + export.len());
    out.extend_from_slice(STATE_CHECKSUM_TAG);
    out.extend_from_slice(&sha2::Sha256::digest(export));
    out.extend_from_slice(export);
    out
}

/// What an `ipam.state` holds, once its checksum is checked.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum StateFile<'a> {
    /// An export whose checksum matched.
    Checked(&'a [u8]),
    /// A file without a checksum (written before weft had one): the bare export, left to
    /// the core's strict parser, and rewritten with a checksum once loaded.
    Unchecked(&'a [u8]),
}

/// Checks the checksum of the `ipam.state` bytes `file`; `Err` says what is wrong.
pub(crate) fn open_state(file: &[u8]) -> std::result::Result<StateFile<'_>, &'static str> {
    use sha2::Digest;
    let Some(rest) = file.strip_prefix(STATE_CHECKSUM_TAG) else {
        return Ok(StateFile::Unchecked(file));
    };
    if rest.len() < STATE_DIGEST_LEN {
        return Err("truncated (its checksum is cut off)");
    }
    let (digest, export) = rest.split_at(STATE_DIGEST_LEN);
    if sha2::Sha256::digest(export).as_slice() != digest {
        return Err("checksum mismatch: the file is corrupted or was cut short");
    }
    Ok(StateFile::Checked(export))
}

/// Loads the persisted IPAM state into a freshly made router; a missing file is a first
/// start. Returns whether the file on disk is current (a file without a checksum is not,
/// so it is written again, with one). A corrupted file stops the router: loading part of
/// it could hand out addresses that are in use.
pub(crate) fn restore(router: &mut Router, dir: &StateDir) -> Result<bool> {
    let path = state_path(dir);
    let Some(bytes) = crate::state::read_bounded(&path, STATE_FILE_LEN_MAX)? else {
        return Ok(false);
    };
    let (export, current) = match open_state(&bytes) {
        Ok(StateFile::Checked(e)) => (e, true),
        Ok(StateFile::Unchecked(e)) => (e, false),
        Err(why) => {
            return Err(Error::Other(format!(
                "{}: {why}; restore it from a backup, or move it away to start with an empty address book (addresses this router gave out may then be given out again)",
                path.display()
            )));
        }
    };
    router.ipam_restore(Instant::ZERO, export).map_err(|e| {
        Error::Other(format!(
            "{}: {e}; start with the flags it was written with, or `weft reset` to start over",
            path.display()
        ))
    })?;
    if !current {
        tracing::info!(
            "{}: no checksum (written by an older weft); it is written again with one",
            path.display()
        );
    }
    Ok(current)
}

/// `net:default` or `net:CIDR` in `weft attach`: allocate an address in that subnet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NetSpec(pub(crate) Option<V4Cidr>);

impl fmt::Display for NetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("net:default"),
            Some(c) => write!(f, "net:{c}"),
        }
    }
}

impl FromStr for NetSpec {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let rest = s
            .strip_prefix("net:")
            .ok_or_else(|| format!("bad subnet {s:?}: expected net:default or net:CIDR"))?;
        if rest == "default" {
            return Ok(Self(None));
        }
        let c = parse_block(rest).map_err(|e| format!("bad subnet {s:?}: {e}"))?;
        Ok(Self(Some(c)))
    }
}

impl serde::Serialize for NetSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for NetSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One argument of `weft attach`: `ADDR/CIDR`, `net:default` or `net:CIDR`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AttachAddr {
    /// This address (claimed when inside the range).
    Addr(Cidr),
    /// Any address of this subnet.
    Net(NetSpec),
}

impl fmt::Display for AttachAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Addr(c) => c.fmt(f),
            Self::Net(n) => n.fmt(f),
        }
    }
}

impl FromStr for AttachAddr {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s.starts_with("net:") {
            return s.parse().map(Self::Net);
        }
        s.parse().map(Self::Addr)
    }
}

/// Splits `attach` arguments into explicit addresses and subnets to allocate in.
pub(crate) fn split(args: &[AttachAddr]) -> (Vec<Cidr>, Vec<NetSpec>) {
    let mut addrs = Vec::new();
    let mut nets = Vec::new();
    for a in args {
        match a {
            AttachAddr::Addr(c) => addrs.push(*c),
            AttachAddr::Net(n) => nets.push(*n),
        }
    }
    (addrs, nets)
}

/// The IPAM container id of the namespace at `netns`: `ns-<inode>`, the attachment id.
pub(crate) fn container_id(netns: &Path) -> Result<String> {
    Ok(format!("ns-{}", crate::plumbing::netns_inode(netns)?))
}

/// What IPAM gave an attach.
#[derive(Debug, Default)]
pub(crate) struct Given {
    /// Every address to put on the interface (explicit ones and allocated ones).
    pub(crate) addrs: Vec<Cidr>,
    /// Addresses this request recorded anew (freed again if the attach fails).
    pub(crate) fresh: Vec<Ipv4Addr>,
}

fn v4(c: &Cidr) -> Option<V4Cidr> {
    match c.addr {
        IpAddr::V4(a) => Some(V4Cidr {
            addr: a,
            prefix_len: c.prefix_len,
        }),
        IpAddr::V6(_) => None,
    }
}

/// Resolves an attach's addresses through IPAM: explicit IPv4 addresses inside the range
/// are claimed, subnets allocated in (the default subnet when nothing is given); waits for
/// every answer, up to the request timeout. On failure nothing stays recorded.
pub(crate) async fn resolve(
    api: &Api,
    container: &str,
    explicit: &[Cidr],
    nets: &[NetSpec],
) -> std::result::Result<Given, ApiError> {
    let mut nets = nets.to_vec();
    if explicit.is_empty() && nets.is_empty() {
        nets.push(NetSpec(None));
    }
    if explicit.len() + nets.len() > ADDRESSES_PER_ATTACH_MAX {
        return Err(ApiError::Ipam(format!(
            "at most {ADDRESSES_PER_ATTACH_MAX} addresses per attach"
        )));
    }
    let claims: Vec<V4Cidr> = explicit.iter().filter_map(v4).collect();
    let (answer, rx) = oneshot::channel();
    let subnets = nets.iter().map(|n| n.0).collect();
    let started = ask(&api.inbox, |started| {
        Input::Ipam(IpamRequest::Attach {
            container: container.to_owned(),
            claims,
            subnets,
            started,
            answer,
        })
    })
    .await??;
    let wait = started.timeout + StdDuration::from_secs(2);
    let allocated = match tokio::time::timeout(wait, rx).await {
        Ok(Ok(r)) => r?,
        Ok(Err(_)) => return Err(ApiError::Stopping),
        Err(_) => {
            let group = started.group;
            let why = ask(&api.inbox, |answer| {
                Input::Ipam(IpamRequest::Abandon { group, answer })
            })
            .await?;
            return Err(why);
        }
    };
    let mut given = Given::default();
    // Explicit addresses keep their order and prefix (IPv6 and outside the range too).
    given.addrs.extend_from_slice(explicit);
    for a in allocated.allocated {
        let c = Cidr {
            addr: IpAddr::V4(a.addr),
            prefix_len: a.prefix_len,
        };
        if !given.addrs.contains(&c) {
            given.addrs.push(c);
        }
    }
    given.fresh = allocated.fresh;
    Ok(given)
}

/// Frees `addrs` of `container` (all of its addresses when `None`); returns how many.
pub(crate) async fn free(
    api: &Api,
    container: &str,
    addrs: Option<Vec<Ipv4Addr>>,
) -> std::result::Result<u64, ApiError> {
    let container = container.to_owned();
    ask(&api.inbox, |answer| {
        Input::Ipam(IpamRequest::Free {
            container,
            addrs,
            answer,
        })
    })
    .await
}

/// Hands `addr` from owner `from` to owner `to` in one step of the router task.
pub(crate) async fn transfer(
    api: &Api,
    from: &str,
    to: &str,
    addr: Ipv4Addr,
) -> std::result::Result<(), ApiError> {
    let (from, to) = (from.to_owned(), to.to_owned());
    ask(&api.inbox, |answer| {
        Input::Ipam(IpamRequest::Transfer {
            from,
            to,
            addr,
            answer,
        })
    })
    .await?
}

/// The IPv4 addresses of `addrs` (for frees).
pub(crate) fn ipv4s(addrs: &[Cidr]) -> Vec<Ipv4Addr> {
    addrs.iter().filter_map(v4).map(|c| c.addr).collect()
}

/// `POST /ipam/rmpeer {"peer": NAME-OR-NICKNAME}`.
pub(crate) async fn rmpeer(api: &Api, peer: &str) -> std::result::Result<RmpeerReply, ApiError> {
    let peer = peer.to_owned();
    ask(&api.inbox, |answer| {
        Input::Ipam(IpamRequest::Rmpeer { peer, answer })
    })
    .await?
}

/// `GET /status/ipam`.
pub(crate) async fn status(api: &Api) -> std::result::Result<IpamStatus, ApiError> {
    ask(&api.inbox, |answer| {
        Input::Ipam(IpamRequest::Status { answer })
    })
    .await
}

/// `weft status ipam` for humans.
pub(crate) fn render_status(v: &IpamStatus) -> String {
    use std::fmt::Write;
    let s = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
    let mut o = String::new();
    let row = |o: &mut String, k: &str, val: String| {
        let _ = writeln!(o, "{k:>16}: {val}");
    };
    row(&mut o, "Range", s(&v.range));
    row(&mut o, "Default subnet", s(&v.default_subnet));
    let ring = match &v.ring {
        None => format!("none yet ({})", s(&v.waiting_for)),
        Some(r) => format!("ready ({r})"),
    };
    row(&mut o, "Init", format!("{}, ring {ring}", s(&v.init)));
    row(
        &mut o,
        "Allocations",
        format!("{} here ({} pending)", v.allocations, v.pending),
    );
    if v.peers.is_empty() {
        return o;
    }
    let total = v.peers.iter().map(|p| p.addresses).sum::<u64>() as f64;
    let _ = writeln!(
        o,
        "\n{:<18} {:<16} {:>10} {:>6} {:>10} {:>10}  STATUS",
        "PEER", "NICKNAME", "ADDRESSES", "SHARE", "FREE", "IN USE"
    );
    for p in &v.peers {
        let share = if total > 0.0 {
            format!("{:.1}%", p.addresses as f64 * 100.0 / total)
        } else {
            "-".to_owned()
        };
        let status = match (p.ourself, p.reachable) {
            (true, _) => "ourself",
            (_, true) => "reachable",
            _ => "unreachable (weft rmpeer to take its space)",
        };
        let _ = writeln!(
            o,
            "{:<18} {:<16} {:>10} {:>6} {:>10} {:>10}  {status}",
            s(&p.peer),
            s(&p.nickname),
            p.addresses,
            share,
            p.free,
            p.addresses.saturating_sub(p.free),
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_checksum_refuses_any_change_and_accepts_files_without_one() {
        let export = b"\x57\x49\x50\x4dsome export bytes".to_vec();
        let file = seal_state(&export);
        assert!(file.starts_with(STATE_CHECKSUM_TAG));
        assert_eq!(open_state(&file), Ok(StateFile::Checked(&export[..])));
        // Every single-bit flip anywhere after the tag, and every cut, is refused.
        for i in STATE_CHECKSUM_TAG.len()..file.len() {
            let mut bad = file.clone();
            bad[i] ^= 0x01;
            assert!(open_state(&bad).is_err(), "flip at {i} accepted");
        }
        for n in STATE_CHECKSUM_TAG.len()..file.len() {
            assert!(open_state(&file[..n]).is_err(), "cut at {n} accepted");
        }
        // An older file (the bare export) is handed on, marked unchecked.
        assert_eq!(open_state(&export), Ok(StateFile::Unchecked(&export[..])));
    }

    #[test]
    fn flags_parse_and_refuse_with_one_line() {
        assert_eq!(parse_block("10.32.0.0/12").unwrap().prefix_len, 12);
        for bad in [
            "10.32.0.1/12",
            "10.32.0.0",
            "10.32.0.0/40",
            "x",
            "10.0.0.0/4",
        ] {
            let e = parse_block(bad).unwrap_err();
            assert!(!e.contains('\n') && e.contains(bad), "{e}");
        }
        assert_eq!(
            parse_init("consensus=3").unwrap(),
            InitMode::Consensus { quorum: 3 }
        );
        assert_eq!(parse_init("observer").unwrap(), InitMode::Observer);
        for bad in [
            "consensus=0",
            "consensus=",
            "consensus=x",
            "seed",
            "consensus=100000",
        ] {
            assert!(parse_init(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_duration("10m").unwrap(), StdDuration::from_secs(600));
        assert_eq!(parse_duration("45").unwrap(), StdDuration::from_secs(45));
        assert_eq!(
            parse_duration("500ms").unwrap(),
            StdDuration::from_millis(500)
        );
        for bad in ["", "m", "10x", "0s", "-1s", "1.5m"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(parse_timeout("2m").is_err());
        assert!(parse_timeout("20s").is_ok());
    }

    #[test]
    fn quorum_defaults_to_peers_plus_one_and_subnet_must_fit() {
        let c = config(None, None, None, None, StdDuration::from_secs(5), 2).unwrap();
        assert_eq!(c.init, InitMode::Consensus { quorum: 3 });
        assert_eq!(c.range.to_string(), RANGE_DEFAULT);
        assert_eq!(c.default_subnet, c.range);
        assert_eq!(c.reclaim_after, None);
        let r = parse_block("10.0.0.0/16").ok();
        let outside = parse_block("10.1.0.0/24").ok();
        let e = config(r, outside, None, None, StdDuration::from_secs(5), 0).unwrap_err();
        assert!(e.to_string().contains("not inside"), "{e}");
        let inside = parse_block("10.0.3.0/24").ok();
        let c = config(
            r,
            inside,
            Some(InitMode::Observer),
            None,
            StdDuration::from_secs(5),
            0,
        )
        .unwrap();
        assert_eq!(c.init, InitMode::Observer);
    }

    #[test]
    fn attach_arguments() {
        assert_eq!(
            "net:default".parse::<AttachAddr>().unwrap(),
            AttachAddr::Net(NetSpec(None))
        );
        let n: AttachAddr = "net:10.32.4.0/24".parse().unwrap();
        assert_eq!(
            n,
            AttachAddr::Net(NetSpec(parse_block("10.32.4.0/24").ok()))
        );
        assert!(matches!(
            "10.32.0.5/12".parse::<AttachAddr>().unwrap(),
            AttachAddr::Addr(_)
        ));
        assert!("net:10.32.4.1/24".parse::<AttachAddr>().is_err());
        assert!("net:".parse::<AttachAddr>().is_err());
        let json = serde_json::to_string(&NetSpec(None)).unwrap();
        assert_eq!(json, "\"net:default\"");
        let (a, n) = split(&[
            "10.32.0.5/12".parse().unwrap(),
            "net:default".parse().unwrap(),
        ]);
        assert_eq!((a.len(), n.len()), (1, 1));
    }
}
