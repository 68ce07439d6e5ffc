//! The sleeve forwarding engine: what to do with an Ethernet frame from the local bridge
//! and with a sleeve datagram from a peer. Sans-IO like the rest of the core; the datapath
//! thread owns one [`Sleeve`] and feeds it frames and datagrams.
//!
//! What it does: MAC learning, unicast to the next hop, flooding down the per-source
//! broadcast tree, relaying for peers without a direct path, sealing per hop with the
//! datagram keys of each connection (when a password is set), heartbeats that tell
//! whether a peer's UDP path works, and path-MTU probes. What it does not do: decide
//! routes (the control plane hands it next hops and broadcast children), or any I/O.
//!
//! Datagram payload for frames (inside the seal):
//! `origin (6) | destination (6, all-ones = broadcast) | [len u16][frame]...`.
//! The header's sender/receiver are the hop; origin/destination are end to end.
//!
//! Where things are:
//! - `mod.rs` (here): the public types ([`Sleeve`], [`Output`], [`Spread`], [`DropReason`],
//!   [`SleeveStats`], [`PeerPath`]), the limits, and the calls that configure the engine
//!   (peers, routes, fast-path peers, link MTUs) or report on it.
//! - `transmit.rs`: frames from the bridge ([`Sleeve::handle_bridge_frame`]) to the next
//!   hop or down the broadcast tree, one datagram each.
//! - `receive.rs`: a datagram from a peer ([`Sleeve::handle_datagram`]): header checks,
//!   opening or the plain replay check, delivery to the bridge and relaying.
//! - `batch.rs`: super-frames cut into segments and sealed as one GSO batch, and GRO
//!   batches opened together ([`Sleeve::handle_datagrams`]), both shared out by a
//!   [`Spread`].
//! - `probes.rs`: heartbeats and path-MTU probes ([`Sleeve::handle_timeout`]).
//! - `framing.rs`: the datagram header and counter, the routing prefix, and the byte
//!   budget of a frame on a link.
//! - `tests/`: unit tests, on a line of three engines (`tests/mod.rs`).

mod batch;
mod framing;
mod probes;
mod receive;
mod transmit;

use crate::crypto::{DatagramOpener, DatagramSealer, ReplayWindow, TAG_LEN_BYTES};
use crate::peer::PeerName;
use crate::switch::MacTable;
use crate::time::{Duration, Instant};
use crate::wire::WireError;
use crate::wire::datagram::{DATAGRAM_HEADER_LEN, DATAGRAM_LEN_MAX};
use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::net::SocketAddr;
use core::sync::atomic::{AtomicU64, Ordering};
use framing::{frame_overhead, segment_room};

/// The destination name meaning "every peer down the broadcast tree".
pub const BROADCAST: PeerName = PeerName::from_u64(PeerName::MASK);
/// Bytes before the frames inside a frames payload: origin and destination.
pub const ROUTING_PREFIX_LEN: usize = 12;
/// Bytes a frame costs on top of itself in a datagram (sleeve header, routing prefix,
/// length, tag), not counting IP and UDP.
pub const SLEEVE_OVERHEAD_BYTES: usize =
    DATAGRAM_HEADER_LEN + ROUTING_PREFIX_LEN + 2 + TAG_LEN_BYTES;
/// Default heartbeat period per peer.
pub const HEARTBEAT_INTERVAL_MS: u64 = 1000;
/// A peer not heard for this long counts as down on the sleeve.
pub const HEARTBEAT_TIMEOUT_MS: u64 = 5000;
/// Most peers the engine keeps state for.
pub const SLEEVE_PEERS_MAX: usize = 4096;
/// Plain datagram counters start at `clock_micros << PLAIN_COUNTER_SHIFT`: room for 4096
/// datagrams per microsecond of uptime before a later start could overtake them, and
/// 142 years of unix time in a u64.
pub const PLAIN_COUNTER_SHIFT: u32 = 12;
/// Most datagrams in one GSO batch (the kernel's `UDP_MAX_SEGMENTS`).
pub const GSO_BATCH_SEGMENTS_MAX: usize = crate::wire::GSO_SEGMENTS_MAX;
/// Most bytes in one GSO batch (one UDP payload over IPv4).
pub const GSO_BATCH_LEN_MAX: usize = crate::wire::UDP_V4_PAYLOAD_LEN_MAX;
/// Smallest link MTU segments are cut to fit (IPv6's minimum); below it the kernel
/// fragments.
pub const LINK_MTU_MIN: u16 = 1280;

/// What the engine wants done.
#[derive(Debug, PartialEq, Eq)]
pub enum Output<'a> {
    /// Send these bytes as one UDP datagram.
    Datagram {
        /// To whom.
        to: SocketAddr,
        /// The datagram, or with `segment_size` several back to back.
        bytes: &'a [u8],
        /// `Some(n)`: `bytes` are datagrams of `n` bytes each (the last may be shorter),
        /// to send as one UDP GSO batch (or cut and sent one by one).
        segment_size: Option<u16>,
    },
    /// Build a GSO batch of datagrams straight into the caller's send buffer (no copy):
    /// call `build` with a buffer of `len_max` bytes; it returns how many it filled, as
    /// datagrams of `segment_size` bytes each (the last may be shorter). Not calling it
    /// (no room) drops the batch.
    DatagramsInPlace {
        /// To whom.
        to: SocketAddr,
        /// Room the batch may need.
        len_max: usize,
        /// Bytes per datagram, for UDP GSO.
        segment_size: u16,
        /// Writes the batch.
        build: Build<'a>,
    },
    /// Write this Ethernet frame to the local bridge port.
    Frame(&'a [u8]),
    /// Write this Ethernet frame to the local bridge port; if it is an IPv4/IPv6 TCP or
    /// UDP frame, its L4 checksum field holds only the pseudo-header sum: write it with a
    /// partial-checksum hint (`NEEDS_CSUM` at [`crate::segment::l4_csum_at`]) or complete
    /// it first ([`crate::segment::complete_l4_csum`]).
    FrameCsumPartial(&'a [u8]),
}

/// The writer of an [`Output::DatagramsInPlace`] batch.
pub struct Build<'a>(pub &'a mut dyn FnMut(&mut [u8]) -> usize);

impl Build<'_> {
    /// Writes the batch into `buf` and returns the bytes used.
    pub fn fill(&mut self, buf: &mut [u8]) -> usize {
        (self.0)(buf)
    }
}

impl core::fmt::Debug for Build<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Build(..)")
    }
}

impl PartialEq for Build<'_> {
    /// Two writers are equal only if they are the same closure.
    fn eq(&self, other: &Self) -> bool {
        core::ptr::addr_eq(&raw const *self.0, &raw const *other.0)
    }
}

impl Eq for Build<'_> {}

/// Shares out the independent pieces of one batch (sealing or opening its datagrams),
/// perhaps among several threads. The host provides it ([`Sleeve::set_spread`]); without
/// one the engine does the pieces in turn.
pub trait Spread: Send + core::fmt::Debug {
    /// Calls `work(i, piece)` exactly once for each `piece` of `buf.chunks_mut(piece_len)`,
    /// `i` its index, and returns only when every call has returned.
    fn spread(
        &mut self,
        buf: &mut [u8],
        piece_len: usize,
        work: &(dyn Fn(usize, &mut [u8]) + Sync),
    );
}

/// Fewest datagrams in a batch worth sharing out: below it one thread does them.
pub const SPREAD_PIECES_MIN: usize = 4;

/// Why a datagram or frame was dropped (counted in [`SleeveStats`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Did not parse.
    Malformed(WireError),
    /// From a peer we have no session with.
    UnknownPeer,
    /// Did not open (wrong key, tampered, replayed).
    Crypto,
    /// A plain datagram whose counter was accepted already or is too old.
    Replayed,
    /// Plain datagram while a password is set, or sealed without keys.
    EncryptionMismatch,
    /// Not addressed to us.
    NotForUs,
    /// No route to the destination.
    NoRoute,
    /// Frame too big for a datagram.
    TooBig,
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SleeveStats {
    /// Frames taken from the bridge.
    pub frames_from_bridge: u64,
    /// Frames written to the bridge.
    pub frames_to_bridge: u64,
    /// Datagrams sent.
    pub datagrams_sent: u64,
    /// Datagrams received.
    pub datagrams_received: u64,
    /// Frames relayed for other peers.
    pub frames_relayed: u64,
    /// Frames from the bridge left to the kernel's fast path (copies the bridge also
    /// handed to the VXLAN port).
    pub frames_left_to_kernel: u64,
    /// Drops: malformed input.
    pub drops_malformed: u64,
    /// Drops: unknown sender.
    pub drops_unknown_peer: u64,
    /// Drops: failed to open (sealed datagrams replayed count here too).
    pub drops_crypto: u64,
    /// Drops: plain datagrams replayed or far out of date.
    pub drops_replayed: u64,
    /// Drops: sealed/plain mismatch.
    pub drops_encryption_mismatch: u64,
    /// Drops: addressed elsewhere.
    pub drops_not_for_us: u64,
    /// Drops: no route.
    pub drops_no_route: u64,
    /// Drops: too big.
    pub drops_too_big: u64,
    /// Times a peer's datagrams came from a new address (a NAT's mapping seen or
    /// changed), which its datagrams then went to.
    pub peer_addr_changes: u64,
}

impl SleeveStats {
    /// Adds `other`'s counts to these (the engines of a multi-queue sleeve, summed).
    pub fn merge(&mut self, other: &Self) {
        self.frames_from_bridge += other.frames_from_bridge;
        self.frames_to_bridge += other.frames_to_bridge;
        self.datagrams_sent += other.datagrams_sent;
        self.datagrams_received += other.datagrams_received;
        self.frames_relayed += other.frames_relayed;
        self.frames_left_to_kernel += other.frames_left_to_kernel;
        self.drops_malformed += other.drops_malformed;
        self.drops_unknown_peer += other.drops_unknown_peer;
        self.drops_crypto += other.drops_crypto;
        self.drops_replayed += other.drops_replayed;
        self.drops_encryption_mismatch += other.drops_encryption_mismatch;
        self.drops_not_for_us += other.drops_not_for_us;
        self.drops_no_route += other.drops_no_route;
        self.drops_too_big += other.drops_too_big;
        self.peer_addr_changes += other.peer_addr_changes;
    }

    fn count(&mut self, d: DropReason) {
        match d {
            DropReason::Malformed(_) => self.drops_malformed += 1,
            DropReason::UnknownPeer => self.drops_unknown_peer += 1,
            DropReason::Crypto => self.drops_crypto += 1,
            DropReason::Replayed => self.drops_replayed += 1,
            DropReason::EncryptionMismatch => self.drops_encryption_mismatch += 1,
            DropReason::NotForUs => self.drops_not_for_us += 1,
            DropReason::NoRoute => self.drops_no_route += 1,
            DropReason::TooBig => self.drops_too_big += 1,
        }
    }
}

/// A peer the engine can send to directly.
#[derive(Debug)]
struct Peer {
    /// Where its datagrams go: first the connection's address, then wherever its
    /// authenticated datagrams come from (its NAT's mapping, when behind one).
    addr: SocketAddr,
    /// Since when `addr` is what it is.
    addr_since: Instant,
    /// `addr` was seen on an authenticated datagram (not only configured).
    addr_learned: bool,
    sealer: Option<DatagramSealer>,
    opener: Option<DatagramOpener>,
    /// Which plain counters from this peer were accepted (sealed ones: the opener's).
    plain_window: ReplayWindow,
    last_heard: Option<Instant>,
    next_heartbeat: Instant,
    pmtu_bytes: Option<u16>,
    /// IP MTU of the underlay route to the peer, when the host knows it: segments are cut
    /// so that each datagram fits it whole.
    link_mtu: Option<u16>,
}

/// One peer's sleeve path as status shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerPath {
    /// The peer.
    pub name: PeerName,
    /// Where its datagrams go.
    pub addr: SocketAddr,
    /// `addr` is where its datagrams were seen coming from (its NAT's mapping, when it
    /// is behind one), not only the address of its connection.
    pub addr_learned: bool,
    /// Since when `addr` is what it is.
    pub addr_since: Instant,
    /// Heard from within the heartbeat timeout.
    pub up: bool,
    /// Largest datagram known to reach it.
    pub pmtu_bytes: Option<u16>,
    /// IP MTU of the underlay route to it, which segments are cut to fit.
    pub link_mtu_bytes: Option<u16>,
    /// Longest Ethernet frame that fits one datagram on that link (after IP, UDP, the
    /// sleeve's framing and, when sealing, the tag).
    pub frame_room_bytes: Option<u16>,
}

/// The sleeve engine of one router.
#[derive(Debug)]
pub struct Sleeve {
    me: PeerName,
    encrypt: bool,
    peers: BTreeMap<PeerName, Peer>,
    next_hop: BTreeMap<PeerName, PeerName>,
    children: BTreeMap<PeerName, Vec<PeerName>>,
    macs: MacTable,
    /// Direct peers the kernel's fast path carries; see [`Sleeve::set_fast_peers`].
    fast: BTreeSet<PeerName>,
    scratch: Vec<u8>,
    heartbeat_interval: Duration,
    heartbeat_timeout: Duration,
    stats: SleeveStats,
    /// Shares sealing and opening of a batch among threads (host-provided).
    spread: Option<Box<dyn Spread>>,
    /// See [`Sleeve::set_plain_epoch`].
    plain_epoch: u64,
    /// The last counter used in a plain datagram, to any peer: shared with the engines
    /// of the other queues ([`Sleeve::new_queue`]), so no two plain datagrams to a peer
    /// carry one counter.
    plain_counter: Arc<AtomicU64>,
}

impl Sleeve {
    /// An engine for router `me`; `encrypt` when a password is set (then every datagram
    /// is sealed and plain ones are refused).
    pub fn new(me: PeerName, encrypt: bool) -> Self {
        Self {
            me,
            encrypt,
            peers: BTreeMap::new(),
            next_hop: BTreeMap::new(),
            children: BTreeMap::new(),
            macs: MacTable::new(me),
            fast: BTreeSet::new(),
            scratch: vec![0u8; DATAGRAM_LEN_MAX],
            heartbeat_interval: Duration::from_millis(HEARTBEAT_INTERVAL_MS),
            heartbeat_timeout: Duration::from_millis(HEARTBEAT_TIMEOUT_MS),
            stats: SleeveStats::default(),
            spread: None,
            plain_epoch: 0,
            plain_counter: Arc::new(AtomicU64::new(0)),
        }
    }

    /// An engine for another queue of the same router (a multi-queue sleeve: one engine
    /// per queue thread, each fed the frames and datagrams its queue reads). It shares
    /// this engine's plain counter; give it the same peers, with clones of the same keys
    /// (which share their counters and replay windows), routes and fast-path peers. MAC
    /// learning, heartbeats, probes and counters are its own.
    pub fn new_queue(&self) -> Self {
        let mut q = Self::new(self.me, self.encrypt);
        q.plain_epoch = self.plain_epoch;
        q.plain_counter = Arc::clone(&self.plain_counter);
        q.heartbeat_interval = self.heartbeat_interval;
        q.heartbeat_timeout = self.heartbeat_timeout;
        q
    }

    /// Where plain datagram counters start, as `unix_micros << PLAIN_COUNTER_SHIFT` at
    /// start-up (the host's clock; 0 in the simulator): a restarted router's counters then
    /// begin above those of its previous run, which peers' replay windows still hold.
    pub fn set_plain_epoch(&mut self, epoch: u64) {
        self.plain_epoch = epoch;
        self.plain_counter.fetch_max(epoch, Ordering::Relaxed);
    }

    /// Lets `spread` share out the sealing of each GSO batch sent and the opening of each
    /// GRO batch received ([`Sleeve::handle_datagrams`]), e.g. to helper threads, so that
    /// encryption does not hold the whole datapath to one core.
    pub fn set_spread(&mut self, spread: Box<dyn Spread>) {
        self.spread = Some(spread);
    }

    /// Call when a connection to `name` is established: its UDP address and, for an
    /// encrypted session, the datagram keys from [`crate::router::Router::take_datagram_keys`].
    pub fn set_peer(
        &mut self,
        now: Instant,
        name: PeerName,
        addr: SocketAddr,
        keys: Option<(DatagramSealer, DatagramOpener)>,
    ) {
        if !self.peers.contains_key(&name) && self.peers.len() >= SLEEVE_PEERS_MAX {
            return;
        }
        let (sealer, opener) = match keys {
            Some((s, o)) => (Some(s), Some(o)),
            None => (None, None),
        };
        // Plain counters must only grow, also over a reconnection or a restart of this
        // router (the peer's window outlives both): they are at least the clock,
        // PLAIN_COUNTER_SHIFT bits up, so a new start is above anything sent before. A
        // peer we knew keeps its window.
        let start = self
            .plain_epoch
            .saturating_add(now.total_micros() << PLAIN_COUNTER_SHIFT);
        self.plain_counter.fetch_max(start, Ordering::Relaxed);
        let plain_window = match self.peers.remove(&name) {
            Some(old) => old.plain_window,
            None => ReplayWindow::new(),
        };
        self.peers.insert(
            name,
            Peer {
                addr,
                addr_since: now,
                addr_learned: false,
                sealer,
                opener,
                plain_window,
                last_heard: None,
                next_heartbeat: now,
                pmtu_bytes: None,
                link_mtu: None,
            },
        );
    }

    /// Tells the engine the IP MTU of the underlay route to `name` (the host asks its
    /// kernel): segments of super-frames for that peer are then cut small enough that each
    /// datagram fits, instead of leaving them to IP fragmentation (or to GSO refusing
    /// them). `None` forgets it. Ignored for an unknown peer or an MTU too small to be
    /// worth cutting for (the kernel fragments then).
    pub fn set_link_mtu(&mut self, name: PeerName, mtu: Option<u16>) {
        if let Some(p) = self.peers.get_mut(&name) {
            p.link_mtu = mtu.filter(|&m| m >= LINK_MTU_MIN);
        }
    }

    /// Another queue's engine of this router saw `name`'s authenticated datagrams come
    /// from `addr` since `since` (see [`PeerPath::addr_learned`]): send there too, unless
    /// this engine learned a later address itself. A multi-queue sleeve receives a peer's
    /// datagrams on whichever queue its CPU steers them to; every queue sends.
    pub fn set_peer_addr_learned(&mut self, name: PeerName, addr: SocketAddr, since: Instant) {
        if let Some(p) = self.peers.get_mut(&name)
            && p.addr != addr
            && (!p.addr_learned || since > p.addr_since)
        {
            p.addr = addr;
            p.addr_since = since;
            p.addr_learned = true;
            p.pmtu_bytes = None;
        }
    }

    /// Call when the connection to `name` is gone.
    pub fn remove_peer(&mut self, name: PeerName) {
        self.peers.remove(&name);
        self.macs.forget_peer(name);
    }

    /// Installs the control plane's routes: next hop per destination and, per broadcast
    /// source, the peers we relay its broadcasts to.
    pub fn set_routes(
        &mut self,
        next_hop: BTreeMap<PeerName, PeerName>,
        children: BTreeMap<PeerName, Vec<PeerName>>,
    ) {
        self.next_hop = next_hop;
        self.children = children;
    }

    /// The direct peers the kernel's fast path (VXLAN) now carries. Frames from the local
    /// bridge to them are left to the kernel (the bridge hands them to the VXLAN port
    /// too); frames they originate are delivered by the kernel, so the sleeve only relays
    /// them. Relaying for others and multi-hop traffic stay on the sleeve.
    pub fn set_fast_peers(&mut self, fast: BTreeSet<PeerName>) {
        for p in fast.difference(&self.fast) {
            self.macs.forget_peer(*p);
        }
        self.fast = fast;
    }

    /// True if `child` relays our broadcasts further (some peer is reached through it).
    fn has_subtree(&self, child: PeerName) -> bool {
        self.next_hop
            .iter()
            .any(|(d, h)| *h == child && *d != child)
    }

    /// Counters.
    pub fn stats(&self) -> SleeveStats {
        self.stats
    }

    /// Each direct peer's sleeve path.
    pub fn paths(&self, now: Instant) -> impl Iterator<Item = PeerPath> + '_ {
        self.peers.iter().map(move |(name, p)| PeerPath {
            name: *name,
            addr: p.addr,
            addr_learned: p.addr_learned,
            addr_since: p.addr_since,
            up: self.is_up(p, now),
            pmtu_bytes: p.pmtu_bytes,
            link_mtu_bytes: p.link_mtu,
            frame_room_bytes: segment_room(p, frame_overhead(self.encrypt))
                .and_then(|r| u16::try_from(r).ok()),
        })
    }
}

#[cfg(test)]
mod tests;
