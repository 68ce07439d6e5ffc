//! IP address management: every router hands out container addresses from its own share
//! of one address range, with no external store.
//!
//! What it does: keeps the range as a [`ring::Ring`] of spans, each owned by one peer and
//! merged by gossip as a CRDT; seeds the ring once by a small consensus among the first
//! peers ([`InitMode`]); allocates, claims and frees addresses per container in subnets of
//! the range; asks a peer with free space to donate part of it when ours runs out; hands a
//! dead peer's space over on `rmpeer` (and, opt-in, after `reclaim_after`); exports and
//! imports its state for the host to persist.
//!
//! What it does not do: send anything itself, read a clock or touch a file. [`Ipam`] is
//! driven by [`crate::router::Router`], which routes channel
//! [`crate::wire::frame::CHANNEL_IPAM`] to it and sends its [`Output`]s; answers to
//! requests come out as [`IpamEvent`]s inside [`crate::router::Event::Ipam`].
//!
//! Persistence contract (for the host): [`Ipam::generation`] changes on every change of
//! the state [`Ipam::export`] writes. Whenever it changed, the host writes the export
//! (atomically, fsynced) **before** it sends the router's next transmit and before it
//! replies to any client. Then nothing another peer or a container has seen is ever
//! forgotten by a restart: an address is given out only after its record is on disk, and
//! space is donated only after the donor's shrunk share is.
//!
//! Layout: [`space`] address arithmetic, [`ring`] the CRDT, [`wire`] the gossip codec,
//! [`alloc`] the allocator, [`requests`] pending requests, [`donate`] donations, [`consensus`]
//! seeding, [`persist`] export/import. The router glue is `router/ipam` (a child of
//! `router.rs`, in `ipam/glue.rs`).

pub mod alloc;
pub mod consensus;
pub mod donate;
pub mod persist;
pub mod requests;
pub mod ring;
pub mod space;
pub mod wire;

#[cfg(test)]
mod tests;

pub use self::alloc::Ipam;
pub use self::ring::{Entry, Merged, Ring, RingError, RingId, Span};
pub use self::space::{BadCidr, Cidr};

use crate::peer::PeerName;
use crate::time::Duration;
use ::alloc::collections::BTreeSet;
use ::alloc::string::String;
use ::alloc::vec::Vec;
use core::fmt;
use core::net::Ipv4Addr;

/// Longest container id, in bytes.
pub const CONTAINER_ID_LEN_MAX: usize = 64;
/// Most addresses one container holds.
pub const ADDRS_PER_CONTAINER_MAX: usize = 16;
/// Most addresses one router records as given out.
pub const ALLOCATIONS_MAX: usize = 262_144;
/// Most requests waiting for the ring or for a donation; further ones are refused.
pub const PENDING_REQUESTS_MAX: usize = 1024;
/// Most peers one request asks for a donation before it gives up.
pub const DONATION_ASKS_MAX: usize = 64;
/// How long a donation request waits for its answer before the next peer is asked.
pub const DONATION_TIMEOUT_MS: u64 = 5_000;
/// How often [`Ipam::handle_timeout`] wants to run (timeouts, reclaim, proposals).
pub const IPAM_TICK_MS: u64 = 1_000;
/// Most [`Output`]s and [`IpamEvent`]s queued; further ones are dropped and counted.
pub const IPAM_QUEUE_LEN_MAX: usize = 4096;

/// How the ring comes to exist (`--ipalloc-init`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitMode {
    /// `consensus=N`: once this peer has heard of `quorum` peers in consensus mode
    /// (itself included), the lowest name among them seeds the ring, split evenly among
    /// the `quorum` lowest names. Give every initial peer the same N: the number of
    /// initial peers (what Weave does), so that two groups can never both reach it.
    Consensus {
        /// N, 1..=[`wire::PROPOSAL_NAMES_MAX`].
        quorum: u16,
    },
    /// Never seeds; waits for a ring from a peer.
    Observer,
}

/// IPAM settings, part of [`crate::router::Config`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpamConfig {
    /// The whole range (`--ipalloc-range`, 10.32.0.0/12 by default).
    pub range: Cidr,
    /// Where `weft attach` without a subnet allocates (the whole range by default).
    pub default_subnet: Cidr,
    /// How the ring is seeded.
    pub init: InitMode,
    /// Reclaim the space of a peer unreachable by all for this long (off by default).
    pub reclaim_after: Option<Duration>,
    /// A request still unanswered this long after the ring exists fails.
    pub request_timeout: Duration,
}

impl Default for IpamConfig {
    /// 10.32.0.0/12, the range as default subnet, `consensus=1`, no reclaim, 60 s requests.
    fn default() -> Self {
        let range = Cidr {
            addr: Ipv4Addr::new(10, 32, 0, 0),
            prefix_len: 12,
        };
        Self {
            range,
            default_subnet: range,
            init: InitMode::Consensus { quorum: 1 },
            reclaim_after: None,
            request_timeout: Duration::from_secs(60),
        }
    }
}

/// A container's id (Docker id, CNI container id, or `netns:PATH`): 1 to
/// [`CONTAINER_ID_LEN_MAX`] bytes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContainerId(String);

impl ContainerId {
    /// Checks the length.
    pub fn new(id: &str) -> Result<Self, IpamError> {
        if id.is_empty() || id.len() > CONTAINER_ID_LEN_MAX {
            return Err(IpamError::BadContainerId);
        }
        Ok(Self(String::from(id)))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Identifies a request until its [`IpamEvent`] answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// Why an IPAM request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpamError {
    /// A container id that is empty or longer than [`CONTAINER_ID_LEN_MAX`] bytes.
    BadContainerId,
    /// The address or subnet is not inside the range.
    OutsideRange,
    /// The address is the network or broadcast address of its subnet.
    Reserved,
    /// The address is held by another container.
    InUse,
    /// No free address left in that subnet anywhere we could ask.
    RangeFull,
    /// The container holds [`ADDRS_PER_CONTAINER_MAX`] addresses already.
    TooManyAddresses,
    /// Too many requests waiting, or [`ALLOCATIONS_MAX`] reached.
    Busy,
    /// No answer within the request timeout (the owner may be unreachable).
    Timeout,
    /// Cancelled by the caller.
    Cancelled,
    /// `rmpeer` of ourselves.
    IsSelf,
    /// No ring yet.
    NoRing,
}

impl fmt::Display for IpamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BadContainerId => "container id must be 1 to 64 bytes",
            Self::OutsideRange => "address or subnet outside the allocation range (see --ipalloc-range)",
            Self::Reserved => "that is the network or broadcast address of its subnet",
            Self::InUse => "address already in use by another container",
            Self::RangeFull => "no free address left in that subnet",
            Self::TooManyAddresses => "the container already holds the most addresses allowed (16)",
            Self::Busy => "too many address requests pending; try again",
            Self::Timeout => "no answer in time: the peer owning that space may be unreachable (see weft status ipam)",
            Self::Cancelled => "request cancelled",
            Self::IsSelf => "cannot rmpeer this peer itself",
            Self::NoRing => "no address ring yet: waiting for the initial peers (see --ipalloc-init)",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for IpamError {}

/// An answer or a notice for the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpamEvent {
    /// The request got `addr` (address and its subnet's prefix length).
    Allocated {
        /// Which request.
        request: RequestId,
        /// The address.
        addr: Cidr,
    },
    /// The request failed.
    Failed {
        /// Which request.
        request: RequestId,
        /// Why.
        error: IpamError,
    },
    /// An address we had given out now lies in space another peer took (rmpeer or reclaim
    /// of us elsewhere); its record was dropped.
    Lost {
        /// The address.
        addr: Ipv4Addr,
    },
    /// The ring exists now (seeded here or received).
    RingReady,
    /// A ring message from neighbour `from` claimed space we own (a newer version of one
    /// of our entries, or a new token inside one of our spans); those entries were
    /// refused and our allocations kept. Another peer is hostile, or ran `rmpeer` (or
    /// reclaim) on us while we are alive.
    TakeoverRefused {
        /// The neighbour that sent it (not necessarily who wrote it).
        from: PeerName,
        /// How many entries were refused.
        entries: usize,
    },
}

/// A message for the router to send on [`crate::wire::frame::CHANNEL_IPAM`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// To every neighbour (news).
    Neighbours(Vec<u8>),
    /// To a few random neighbours (periodic anti-entropy).
    Random(Vec<u8>),
    /// To this neighbour only.
    Neighbour(PeerName, Vec<u8>),
    /// To this peer, through the next hop towards it.
    Unicast(PeerName, Vec<u8>),
}

/// What the router knows of other peers, for reclaim and status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerView {
    /// Peers we have a route to.
    pub reachable: BTreeSet<PeerName>,
    /// Peers still in our topology or listed as a connection by a reachable peer.
    pub seen: BTreeSet<PeerName>,
}

/// Counters, shown by `weft status ipam`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IpamStats {
    /// Messages that did not parse.
    pub malformed: u64,
    /// Ring messages from a different ring (separately seeded peers).
    pub ring_conflicts: u64,
    /// Ring messages for another range.
    pub range_mismatches: u64,
    /// Donations we gave.
    pub donations_given: u64,
    /// Donations we received.
    pub donations_received: u64,
    /// Addresses taken over by rmpeer or reclaim.
    pub addresses_reclaimed: u64,
    /// Allocation records dropped because another peer took their space.
    pub allocations_lost: u64,
    /// Ring entries refused because they claimed space we own.
    pub takeovers_refused: u64,
    /// Outputs or events dropped on a full queue.
    pub drops_queue_full: u64,
    /// Unicast messages dropped (TTL, no route).
    pub drops_unrouted: u64,
}

/// One peer's share, as `weft status ipam` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerShare {
    /// The peer.
    pub peer: PeerName,
    /// Addresses it owns.
    pub addresses: u64,
    /// Of those, not handed out (as last gossiped).
    pub free: u64,
    /// Whether we have a route to it (always true for ourselves).
    pub reachable: bool,
}

/// The IPAM part of `weft status ipam`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpamStatus {
    /// The range.
    pub range: Cidr,
    /// The default subnet.
    pub default_subnet: Cidr,
    /// Init mode.
    pub init: InitMode,
    /// The ring's id, once it exists.
    pub ring: Option<RingId>,
    /// Consensus peers heard of, while there is no ring.
    pub consensus_heard: usize,
    /// Each owner's share, in name order.
    pub peers: Vec<PeerShare>,
    /// Addresses we gave out.
    pub allocations: usize,
    /// Requests not answered yet.
    pub pending: usize,
    /// Counters.
    pub stats: IpamStats,
}
