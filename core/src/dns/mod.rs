//! weftDNS records: which container answers to which name, replicated to every router.
//!
//! What it does: keeps a set of records `name -> IPv4 address`, each owned by the peer
//! that registered it and tagged with the container it belongs to, as a CRDT merged by
//! gossip on [`crate::wire::frame::CHANNEL_DNS`]. Only the owner changes its records: it
//! adds them live and removes them by a tombstone with a higher version; a merge keeps,
//! per record, the highest `(version, tombstone)`. Tombstones are forgotten after
//! [`TOMBSTONE_TTL_MS`]; the owner re-tombstones any stale copy of its own records a peer
//! gossips back (and re-announces its live ones with a higher version after a restart),
//! so expiry cannot resurrect a removed record while the owner lives. When a peer leaves
//! the topology (the router's peer GC) its records are dropped everywhere and gossip
//! about them is ignored for [`REMOVED_PEER_TTL_MS`] unless the peer comes back.
//!
//! What it does not do: speak DNS (the host's server does, from [`Dns::lookup`] and
//! [`Dns::reverse`] through the router), pick a domain (names are any FQDN; the host
//! decides which domain it answers for), send anything itself or read a clock. It is
//! driven by [`crate::router::Router`] through `dns/glue.rs`, which routes channel
//! `CHANNEL_DNS` here and sends its [`Output`]s.
//!
//! Layout: this file holds the value types and limits, [`table`] the CRDT, [`wire`] the
//! gossip codec.

pub mod table;
pub mod wire;

#[cfg(test)]
mod tests;

pub use self::table::Dns;

use crate::peer::PeerName;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::net::Ipv4Addr;

/// Longest name, in bytes, without the trailing dot (RFC 1035's 255 on the wire).
pub const NAME_LEN_MAX: usize = 253;
/// Longest label of a name, in bytes.
pub const LABEL_LEN_MAX: usize = 63;
/// Longest container tag, in bytes.
pub const CONTAINER_LEN_MAX: usize = 64;
/// Most records (live and tombstones) one router keeps; further adds are refused and
/// further gossip is dropped and counted.
pub const RECORDS_MAX: usize = 65_536;
/// How long a tombstone is kept after it was made or learned.
pub const TOMBSTONE_TTL_MS: u64 = 600_000;
/// How long gossip about the records of a peer removed from the topology is ignored.
pub const REMOVED_PEER_TTL_MS: u64 = 600_000;
/// How often [`Dns::handle_timeout`] wants to run (tombstone expiry).
pub const DNS_TICK_MS: u64 = 1_000;
/// Most [`Output`]s queued; further ones are dropped and counted.
pub const DNS_QUEUE_LEN_MAX: usize = 1024;
/// Most peers remembered as removed.
pub const REMOVED_PEERS_MAX: usize = 4096;
/// The container tag of records added by hand (`weft dns-add` without a container).
pub const CONTAINER_EXTERN: &str = "weft:extern";
/// The container tag of the host's own name (`weft expose -h FQDN`).
pub const CONTAINER_HOST: &str = "weft:expose";

/// Why a DNS command or record was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsError {
    /// Not a host name: empty or empty label, longer than [`NAME_LEN_MAX`] or a label
    /// longer than [`LABEL_LEN_MAX`], or a byte other than letters, digits, `-` and `_`.
    BadName,
    /// A container tag that is empty, longer than [`CONTAINER_LEN_MAX`] bytes, or not
    /// printable ASCII.
    BadContainer,
    /// [`RECORDS_MAX`] records already.
    Full,
    /// The address is unspecified, broadcast or multicast.
    BadAddress,
}

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BadName => {
                "not a host name: labels of 1-63 letters, digits, '-' or '_', 253 bytes at most"
            }
            Self::BadContainer => "container id must be 1 to 64 printable ASCII bytes",
            Self::Full => "too many DNS records (65536); remove some first",
            Self::BadAddress => "not a unicast IPv4 address",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for DnsError {}

/// A fully qualified name in canonical form: lowercase ASCII, no trailing dot
/// (`web.weave.local`). Compare and store only canonical names; [`DnsName::new`] makes one.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DnsName(String);

impl DnsName {
    /// Checks and canonicalizes `name` (one trailing dot allowed, case folded).
    pub fn new(name: &str) -> Result<Self, DnsError> {
        let name = name.strip_suffix('.').unwrap_or(name);
        let name = String::from(name).to_ascii_lowercase();
        check_name(name.as_bytes())?;
        Ok(Self(name))
    }

    /// Accepts `bytes` only if already canonical (for the wire: one encoding per name).
    pub fn from_canonical(bytes: &[u8]) -> Result<Self, DnsError> {
        check_name(bytes)?;
        if bytes.iter().any(u8::is_ascii_uppercase) {
            return Err(DnsError::BadName);
        }
        let s = core::str::from_utf8(bytes).map_err(|_| DnsError::BadName)?;
        Ok(Self(String::from(s)))
    }

    /// The name without trailing dot.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True if this name is `domain` or below it (`domain` canonical, e.g. `weave.local`).
    pub fn is_in(&self, domain: &Self) -> bool {
        self.0 == domain.0
            || (self.0.len() > domain.0.len()
                && self.0.ends_with(domain.0.as_str())
                && self.0.as_bytes()[self.0.len() - domain.0.len() - 1] == b'.')
    }
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn check_name(b: &[u8]) -> Result<(), DnsError> {
    if b.is_empty() || b.len() > NAME_LEN_MAX {
        return Err(DnsError::BadName);
    }
    for label in b.split(|c| *c == b'.') {
        let ok = !label.is_empty()
            && label.len() <= LABEL_LEN_MAX
            && label
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_');
        if !ok {
            return Err(DnsError::BadName);
        }
    }
    Ok(())
}

/// Which container a record belongs to: its attachment id, [`CONTAINER_EXTERN`] or
/// [`CONTAINER_HOST`]. 1 to [`CONTAINER_LEN_MAX`] printable ASCII bytes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Container(String);

impl Container {
    /// Checks the tag.
    pub fn new(tag: &str) -> Result<Self, DnsError> {
        Self::from_bytes(tag.as_bytes())
    }

    /// Checks raw bytes (the wire form).
    pub fn from_bytes(b: &[u8]) -> Result<Self, DnsError> {
        if b.is_empty() || b.len() > CONTAINER_LEN_MAX || !b.iter().all(|c| c.is_ascii_graphic()) {
            return Err(DnsError::BadContainer);
        }
        let s = core::str::from_utf8(b).map_err(|_| DnsError::BadContainer)?;
        Ok(Self(String::from(s)))
    }

    /// The tag as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn min() -> Self {
        Self(String::new())
    }
}

impl fmt::Display for Container {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Identifies one record. Ordered by name first, so a name's records are adjacent.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordKey {
    /// The name.
    pub name: DnsName,
    /// The address it resolves to.
    pub addr: Ipv4Addr,
    /// The peer that registered it (the only one that changes it).
    pub owner: PeerName,
    /// The container it belongs to.
    pub container: Container,
}

impl RecordKey {
    /// The first possible key of `name` (for range scans).
    fn first_of(name: &DnsName) -> Self {
        Self {
            name: name.clone(),
            addr: Ipv4Addr::UNSPECIFIED,
            owner: PeerName::from_u64(0),
            container: Container::min(),
        }
    }
}

/// One record as gossiped: key, owner's version, and whether it is a tombstone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Which record.
    pub key: RecordKey,
    /// The owner's version; higher wins.
    pub version: u64,
    /// True once removed.
    pub tombstone: bool,
}

impl Record {
    /// The merge order: higher version wins, and a tombstone beats a live record of the
    /// same version (so that merge is a max, hence commutative, associative, idempotent).
    pub fn rank(&self) -> (u64, bool) {
        (self.version, self.tombstone)
    }
}

/// Which of our own live records [`Dns::remove`] removes: every given field must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only records of this name.
    pub name: Option<DnsName>,
    /// Only records with this address.
    pub addr: Option<Ipv4Addr>,
    /// Only records of this container.
    pub container: Option<Container>,
}

impl Filter {
    /// Whether `k` matches.
    pub fn matches(&self, k: &RecordKey) -> bool {
        self.name.as_ref().is_none_or(|n| *n == k.name)
            && self.addr.is_none_or(|a| a == k.addr)
            && self.container.as_ref().is_none_or(|c| *c == k.container)
    }
}

/// A message for the router to send on [`crate::wire::frame::CHANNEL_DNS`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// To every neighbour but `except` (news, flooded on).
    Neighbours {
        /// The neighbour it came from, if any.
        except: Option<PeerName>,
        /// The encoded message.
        msg: Vec<u8>,
    },
    /// To a few random neighbours (periodic anti-entropy).
    Random(Vec<u8>),
    /// To this neighbour only (full state for a new neighbour).
    Neighbour(PeerName, Vec<u8>),
}

/// Counters, shown by `weft status dns`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsStats {
    /// Messages that did not parse.
    pub malformed: u64,
    /// Records received that changed our state.
    pub records_merged: u64,
    /// Records received about peers removed from the topology (ignored).
    pub records_of_removed_peers: u64,
    /// Stale copies of our own records a peer had, answered with a newer version.
    pub own_records_refreshed: u64,
    /// Tombstones forgotten after [`TOMBSTONE_TTL_MS`].
    pub tombstones_expired: u64,
    /// Records dropped because their owner left the topology.
    pub records_of_dead_peers_dropped: u64,
    /// Records not taken because [`RECORDS_MAX`] was reached.
    pub drops_full: u64,
    /// Outputs dropped on a full queue.
    pub drops_queue_full: u64,
}

/// `weft status dns` (the core part).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsStatus {
    /// Live records, in key order, with their version.
    pub records: Vec<(RecordKey, u64)>,
    /// Tombstones kept.
    pub tombstones: usize,
    /// Peers whose gossip is ignored because they left the topology.
    pub removed_peers: usize,
    /// Counters.
    pub stats: DnsStats,
}
