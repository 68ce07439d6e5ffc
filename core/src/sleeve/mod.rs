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

use crate::crypto::{DatagramOpener, DatagramSealer, ReplayWindow, TAG_LEN_BYTES};
use crate::fastdp::HEARTBEAT_ETHERTYPE;
use crate::peer::PeerName;
use crate::segment::{Offload, Segmenter};
use crate::switch::{Forward, Mac, MacTable};
use crate::time::{Duration, Instant};
use crate::wire::datagram::{
    DATAGRAM_HEADER_LEN, DATAGRAM_LEN_MAX, DatagramHeader, DatagramKind, EthFrames,
    EthFramesWriter, Payload,
};
use crate::wire::{PROTOCOL_VERSION_MAX, WireError};
use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec;
use alloc::vec::Vec;
use core::net::SocketAddr;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

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

/// Runs `work` over `buf`'s pieces: through `spread` when there is one and the batch is
/// big enough, else in turn.
fn spread_pieces(
    spread: &mut Option<Box<dyn Spread>>,
    buf: &mut [u8],
    piece_len: usize,
    work: &(dyn Fn(usize, &mut [u8]) + Sync),
) {
    match spread {
        Some(s) if buf.len() >= SPREAD_PIECES_MIN * piece_len => s.spread(buf, piece_len, work),
        _ => {
            for (i, piece) in buf.chunks_mut(piece_len).enumerate() {
                work(i, piece);
            }
        }
    }
}

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
}

impl SleeveStats {
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
    addr: SocketAddr,
    sealer: Option<DatagramSealer>,
    opener: Option<DatagramOpener>,
    /// The last counter we sent this peer in a plain datagram.
    plain_counter: u64,
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
        }
    }

    /// Where plain datagram counters start, as `unix_micros << PLAIN_COUNTER_SHIFT` at
    /// start-up (the host's clock; 0 in the simulator): a restarted router's counters then
    /// begin above those of its previous run, which peers' replay windows still hold.
    pub fn set_plain_epoch(&mut self, epoch: u64) {
        self.plain_epoch = epoch;
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
        // router (the peer's window outlives both): start from the clock, PLAIN_COUNTER_SHIFT
        // bits up, so a new start is above anything sent before. A peer we knew keeps its
        // counter and window.
        let (plain_counter, plain_window) = match self.peers.remove(&name) {
            Some(old) => (old.plain_counter, old.plain_window),
            None => (
                self.plain_epoch
                    .saturating_add(now.total_micros() << PLAIN_COUNTER_SHIFT),
                ReplayWindow::new(),
            ),
        };
        self.peers.insert(
            name,
            Peer {
                addr,
                sealer,
                opener,
                plain_counter,
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
            up: self.is_up(p, now),
            pmtu_bytes: p.pmtu_bytes,
            link_mtu_bytes: p.link_mtu,
            frame_room_bytes: segment_room(p, frame_overhead(self.encrypt))
                .and_then(|r| u16::try_from(r).ok()),
        })
    }

    fn is_up(&self, p: &Peer, now: Instant) -> bool {
        p.last_heard
            .is_some_and(|t| now.saturating_since(t) < self.heartbeat_timeout)
    }

    /// Call with a frame read from the local bridge port (fully checksummed, no GSO).
    pub fn handle_bridge_frame(
        &mut self,
        now: Instant,
        frame: &[u8],
        out: &mut impl FnMut(Output<'_>),
    ) {
        self.handle_bridge_offload_frame(now, frame, &Offload::default(), out);
    }

    /// Call with a frame read from a bridge port with offloads: `off` says whether it is
    /// a TSO/USO super-frame or has a partial checksum. Such frames are cut into real
    /// segments ([`crate::segment`]), one datagram each, sent to a peer as GSO batches.
    pub fn handle_bridge_offload_frame(
        &mut self,
        now: Instant,
        frame: &[u8],
        off: &Offload,
        out: &mut impl FnMut(Output<'_>),
    ) {
        self.stats.frames_from_bridge += 1;
        let (Some(dst), Some(src)) = (mac_at(frame, 0), mac_at(frame, 6)) else {
            self.stats
                .count(DropReason::Malformed(WireError::Truncated));
            return;
        };
        if frame.get(12..14) == Some(&HEARTBEAT_ETHERTYPE.to_be_bytes()[..]) {
            // Fast-path heartbeats prove the kernel path; carrying them would lie.
            return;
        }
        self.macs.learn(src, self.me, now);
        match self.macs.decide(dst, now) {
            Forward::Local => {}
            Forward::Unicast(dest) if self.fast.contains(&dest) => {
                self.stats.frames_left_to_kernel += 1;
            }
            Forward::Unicast(dest) => {
                let Some(hop) = self.next_hop.get(&dest).copied() else {
                    self.stats.count(DropReason::NoRoute);
                    return;
                };
                self.send_frames(hop, self.me, dest, frame, off, out);
            }
            Forward::Flood => {
                let kids = self.children.get(&self.me).cloned().unwrap_or_default();
                for hop in kids {
                    if self.fast.contains(&hop) && !self.has_subtree(hop) {
                        self.stats.frames_left_to_kernel += 1;
                        continue;
                    }
                    self.send_frames(hop, self.me, BROADCAST, frame, off, out);
                }
            }
        }
    }

    /// Call with a datagram received on the sleeve port. The buffer is opened in place.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        dgram: &mut [u8],
        out: &mut impl FnMut(Output<'_>),
    ) {
        self.stats.datagrams_received += 1;
        if let Err(d) = self.receive(now, from, dgram, out) {
            self.stats.count(d);
        }
    }

    /// Handles a GRO batch: the datagrams of `buf`, each `segment_len` bytes but the last,
    /// all from `from`. Same outcome as [`Sleeve::handle_datagram`] on each in turn, but
    /// sealed ones are opened together, shared out by the [`Spread`] when there is one.
    pub fn handle_datagrams(
        &mut self,
        now: Instant,
        from: SocketAddr,
        buf: &mut [u8],
        segment_len: usize,
        out: &mut impl FnMut(Output<'_>),
    ) {
        let segment_len = segment_len.max(1);
        let n = buf.len().div_ceil(segment_len);
        if !self.encrypt || self.spread.is_none() || !(SPREAD_PIECES_MIN..=64).contains(&n) {
            for d in buf.chunks_mut(segment_len) {
                self.handle_datagram(now, from, d, out);
            }
            return;
        }
        // 1. Which datagrams a sender's opener may open: the sender of the first that
        //    passes the header and replay checks (a GRO batch has one source).
        let mut sender = None;
        let mut todo = 0u64;
        for (i, d) in buf.chunks(segment_len).enumerate() {
            let Ok(header) = self.check_header(from, d) else {
                continue;
            };
            if sender.is_some_and(|s| s != header.sender) {
                continue;
            }
            let ok = self
                .peers
                .get(&header.sender)
                .and_then(|p| p.opener.as_ref())
                .is_some_and(|o| o.check(header.counter).is_ok());
            if ok {
                sender = Some(header.sender);
                todo |= 1 << i;
            }
        }
        // 2. Open them together; lens[i] is the plaintext length, or FAILED.
        const FAILED: usize = usize::MAX;
        let lens: [AtomicUsize; 64] = core::array::from_fn(|_| AtomicUsize::new(FAILED));
        if let Some(opener) = sender
            .and_then(|s| self.peers.get(&s))
            .and_then(|p| p.opener.as_ref())
        {
            spread_pieces(&mut self.spread, buf, segment_len, &|i, d| {
                if todo & (1 << i) == 0 {
                    return;
                }
                let Ok((header, _)) = DatagramHeader::parse(d) else {
                    return;
                };
                let (aad, body) = d.split_at_mut(DATAGRAM_HEADER_LEN);
                if let Ok(len) = opener.open_unrecorded(header.counter, aad, body) {
                    lens[i].store(len, Ordering::Relaxed);
                }
            });
        }
        // 3. In arrival order: record each counter, then act on the plaintext.
        for (i, d) in buf.chunks_mut(segment_len).enumerate() {
            if todo & (1 << i) == 0 {
                self.handle_datagram(now, from, d, out);
                continue;
            }
            self.stats.datagrams_received += 1;
            let r = match lens[i].load(Ordering::Relaxed) {
                FAILED => Err(DropReason::Crypto),
                len => self.accept_opened(now, d, len, out),
            };
            if let Err(e) = r {
                self.stats.count(e);
            }
        }
    }

    /// The checks on a datagram's header before opening it: parses, for us, sealed as we
    /// seal, from a peer we know (for a plain one: from that peer's address).
    fn check_header(&self, from: SocketAddr, dgram: &[u8]) -> Result<DatagramHeader, DropReason> {
        let (header, _) = DatagramHeader::parse(dgram).map_err(DropReason::Malformed)?;
        if header.receiver != self.me {
            return Err(DropReason::NotForUs);
        }
        if header.sealed != self.encrypt {
            return Err(DropReason::EncryptionMismatch);
        }
        let peer = self
            .peers
            .get(&header.sender)
            .ok_or(DropReason::UnknownPeer)?;
        // Without a seal, the only proof of the sender is where it came from.
        if !header.sealed && from.ip() != peer.addr.ip() {
            return Err(DropReason::UnknownPeer);
        }
        Ok(header)
    }

    /// A datagram opened by [`Sleeve::handle_datagrams`] (plaintext `len` bytes after its
    /// header): records its counter (refusing a replay) and acts on it.
    fn accept_opened(
        &mut self,
        now: Instant,
        dgram: &mut [u8],
        len: usize,
        out: &mut impl FnMut(Output<'_>),
    ) -> Result<(), DropReason> {
        let (header, _) = DatagramHeader::parse(dgram).map_err(DropReason::Malformed)?;
        let opener = self
            .peers
            .get_mut(&header.sender)
            .and_then(|p| p.opener.as_mut())
            .ok_or(DropReason::UnknownPeer)?;
        opener
            .record(header.counter)
            .map_err(|_| DropReason::Crypto)?;
        let body = &dgram[DATAGRAM_HEADER_LEN..DATAGRAM_HEADER_LEN + len];
        self.accept(now, header, body, out)
    }

    fn receive(
        &mut self,
        now: Instant,
        from: SocketAddr,
        dgram: &mut [u8],
        out: &mut impl FnMut(Output<'_>),
    ) -> Result<(), DropReason> {
        let header = self.check_header(from, dgram)?;
        let peer = self
            .peers
            .get_mut(&header.sender)
            .ok_or(DropReason::UnknownPeer)?;
        let (aad, body) = dgram.split_at_mut(DATAGRAM_HEADER_LEN);
        let plain_len = if header.sealed {
            let opener = peer.opener.as_mut().ok_or(DropReason::EncryptionMismatch)?;
            opener
                .open_in_place(header.counter, aad, body)
                .map_err(|_| DropReason::Crypto)?
        } else {
            // Unsealed, the counter is no proof of anything, but it stops the network (or
            // a careless middlebox) from delivering a datagram twice.
            peer.plain_window
                .update(header.counter)
                .map_err(|_| DropReason::Replayed)?;
            body.len()
        };
        self.accept(now, header, &body[..plain_len], out)
    }

    /// Acts on an authenticated datagram's plaintext `body`.
    fn accept(
        &mut self,
        now: Instant,
        header: DatagramHeader,
        body: &[u8],
        out: &mut impl FnMut(Output<'_>),
    ) -> Result<(), DropReason> {
        if let Some(peer) = self.peers.get_mut(&header.sender) {
            peer.last_heard = Some(now);
        }
        match header.kind {
            DatagramKind::Heartbeat => Ok(()),
            DatagramKind::PmtuProbe => {
                let Payload::PmtuProbe { id, .. } =
                    Payload::parse(header.kind, body).map_err(DropReason::Malformed)?
                else {
                    return Err(DropReason::Malformed(WireError::Inconsistent));
                };
                let size = u16::try_from(
                    DATAGRAM_HEADER_LEN
                        + body.len()
                        + if header.sealed { TAG_LEN_BYTES } else { 0 },
                )
                .unwrap_or(u16::MAX);
                self.send_control(header.sender, Payload::PmtuReply { id, size }, out);
                Ok(())
            }
            DatagramKind::PmtuReply => {
                if let Payload::PmtuReply { size, .. } =
                    Payload::parse(header.kind, body).map_err(DropReason::Malformed)?
                {
                    let p = self
                        .peers
                        .get_mut(&header.sender)
                        .ok_or(DropReason::UnknownPeer)?;
                    p.pmtu_bytes = Some(p.pmtu_bytes.map_or(size, |m| m.max(size)));
                }
                Ok(())
            }
            DatagramKind::Frames | DatagramKind::FramesCsumPartial => {
                let partial = header.kind == DatagramKind::FramesCsumPartial;
                if body.len() < ROUTING_PREFIX_LEN {
                    return Err(DropReason::Malformed(WireError::Truncated));
                }
                let origin = name_at(body, 0);
                let dest = name_at(body, 6);
                let frames =
                    EthFrames::parse(&body[ROUTING_PREFIX_LEN..]).map_err(DropReason::Malformed)?;
                if origin == self.me {
                    return Err(DropReason::NotForUs);
                }
                // What a fast-path peer originates, the kernel delivers; we only relay it.
                let deliver =
                    (dest == self.me || dest == BROADCAST) && !self.fast.contains(&origin);
                for f in frames.iter() {
                    if let Some(src) = mac_at(f, 6) {
                        self.macs.learn(src, origin, now);
                    }
                    if deliver {
                        self.stats.frames_to_bridge += 1;
                        out(match partial {
                            true => Output::FrameCsumPartial(f),
                            false => Output::Frame(f),
                        });
                    }
                }
                // Copy the plaintext out: relaying re-seals it per hop.
                if dest == BROADCAST {
                    let kids = self.children.get(&origin).cloned().unwrap_or_default();
                    if !kids.is_empty() {
                        let plain: Vec<u8> = body.to_vec();
                        for hop in kids {
                            self.stats.frames_relayed += frames.len() as u64;
                            self.send_payload(hop, header.kind, &plain, out);
                        }
                    }
                } else if dest != self.me {
                    let hop = self
                        .next_hop
                        .get(&dest)
                        .copied()
                        .ok_or(DropReason::NoRoute)?;
                    let plain: Vec<u8> = body.to_vec();
                    self.stats.frames_relayed += frames.len() as u64;
                    self.send_payload(hop, header.kind, &plain, out);
                }
                Ok(())
            }
        }
    }

    /// Call periodically (at [`Sleeve::poll_timeout`]): heartbeats and MTU probes.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut impl FnMut(Output<'_>)) {
        let due: Vec<PeerName> = self
            .peers
            .iter()
            .filter(|(_, p)| p.next_heartbeat <= now)
            .map(|(n, _)| *n)
            .collect();
        for name in due {
            if let Some(p) = self.peers.get_mut(&name) {
                p.next_heartbeat = now + self.heartbeat_interval;
                let probe = p.pmtu_bytes.is_none();
                self.send_control(name, Payload::Heartbeat, out);
                if probe {
                    // One probe the size of a full-MTU frame datagram on a 1500-byte underlay.
                    let padding_len = 1500 - 20 - 8 - DATAGRAM_HEADER_LEN - 4 - TAG_LEN_BYTES;
                    self.send_control(name, Payload::PmtuProbe { id: 1, padding_len }, out);
                }
            }
        }
    }

    /// When [`Sleeve::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.peers.values().map(|p| p.next_heartbeat).min()
    }

    /// For a TCP frame whose datagram would not fit the link MTU to `hop`: the TSO request
    /// that cuts it into segments that do.
    fn tcp_cut_for_link(&self, hop: PeerName, frame: &[u8]) -> Option<Offload> {
        let room = segment_room(self.peers.get(&hop)?, frame_overhead(self.encrypt))?;
        if frame.len() <= room {
            // Fits as it is (the common case: no parsing).
            return None;
        }
        let at = crate::segment::Layout::parse(frame)?;
        let mss = room.checked_sub(at.hdr_end).filter(|&m| m > 0)?;
        (at.tcp && at.ip_end - at.hdr_end > mss).then(|| Offload {
            gso: if at.v6 {
                crate::segment::Gso::TcpV6
            } else {
                crate::segment::Gso::TcpV4
            },
            gso_size: u16::try_from(mss).unwrap_or(u16::MAX),
            hdr_len: at.hdr_end as u16,
            ..Offload::default()
        })
    }

    fn send_frames(
        &mut self,
        hop: PeerName,
        origin: PeerName,
        dest: PeerName,
        frame: &[u8],
        off: &Offload,
        out: &mut impl FnMut(Output<'_>),
    ) {
        if off.gso != crate::segment::Gso::None
            || off.csum.is_some()
            || self.tcp_cut_for_link(hop, frame).is_some()
        {
            self.send_segments(hop, origin, dest, frame, off, out);
            return;
        }
        let mut body = [0u8; ROUTING_PREFIX_LEN];
        body[..6].copy_from_slice(&origin.to_bytes());
        body[6..].copy_from_slice(&dest.to_bytes());
        let payload_len = ROUTING_PREFIX_LEN + 2 + frame.len();
        if DATAGRAM_HEADER_LEN + payload_len + TAG_LEN_BYTES > self.scratch.len() {
            self.stats.count(DropReason::TooBig);
            return;
        }
        let start = DATAGRAM_HEADER_LEN;
        self.scratch[start..start + ROUTING_PREFIX_LEN].copy_from_slice(&body);
        let mut w = EthFramesWriter::new(&mut self.scratch[start + ROUTING_PREFIX_LEN..]);
        if let Err(e) = w.push(frame) {
            self.stats.count(DropReason::Malformed(e));
            return;
        }
        self.finish(hop, DatagramKind::Frames, payload_len, out);
    }

    /// Cuts `frame` into segments, one sealed datagram each, and emits them to `hop` in
    /// GSO batches: every datagram of a batch is `stride` bytes but the super-frame's last.
    fn send_segments(
        &mut self,
        hop: PeerName,
        origin: PeerName,
        dest: PeerName,
        frame: &[u8],
        off: &Offload,
        out: &mut impl FnMut(Output<'_>),
    ) {
        let tag = if self.encrypt { TAG_LEN_BYTES } else { 0 };
        let lead = DATAGRAM_HEADER_LEN + ROUTING_PREFIX_LEN + 2;
        let mss_max = self
            .peers
            .get(&hop)
            .and_then(|p| mss_to_fit(p, frame, frame_overhead(self.encrypt)))
            .unwrap_or(usize::from(u16::MAX));
        // A TCP frame the kernel did not ask to cut but too big for the link is cut all the
        // same (TSO-style: real segments), rather than left to IP fragmentation.
        let cut_anyway;
        let off = match off.gso {
            crate::segment::Gso::None => match self.tcp_cut_for_link(hop, frame) {
                Some(o) => {
                    cut_anyway = Offload {
                        csum: off.csum,
                        ..o
                    };
                    &cut_anyway
                }
                None => off,
            },
            _ => off,
        };
        let mut seg = match Segmenter::new(frame, off, mss_max) {
            Ok(s) => s.leave_csum_partial(),
            Err(_) => {
                self.stats
                    .count(DropReason::Malformed(WireError::Inconsistent));
                return;
            }
        };
        let seg_max = seg.segment_len_max();
        let stride = lead + seg_max + tag;
        if stride > GSO_BATCH_LEN_MAX || seg_max > usize::from(u16::MAX) {
            self.stats.count(DropReason::TooBig);
            return;
        }
        let per_batch = (GSO_BATCH_LEN_MAX / stride).clamp(1, GSO_BATCH_SEGMENTS_MAX);
        let kind = match seg.leaves_csum_partial() {
            true => DatagramKind::FramesCsumPartial,
            false => DatagramKind::Frames,
        };
        let (me, encrypt) = (self.me, self.encrypt);
        let Some(peer) = self.peers.get_mut(&hop) else {
            self.stats.count(DropReason::NoRoute);
            return;
        };
        let spread = &mut self.spread;
        let mut prefix = [0u8; ROUTING_PREFIX_LEN];
        prefix[..6].copy_from_slice(&origin.to_bytes());
        prefix[6..].copy_from_slice(&dest.to_bytes());
        let to = peer.addr;
        let mut done = false;
        while !done {
            let mut sent = 0usize;
            let mut failed = None;
            // Segments are cut and framed directly in the caller's send buffer, then the
            // batch is sealed (shared out among threads when the host provides them).
            let mut build = |buf: &mut [u8]| -> usize {
                let mut used = 0usize;
                let mut first_counter = None;
                while sent < per_batch && used + stride <= buf.len() {
                    let d = &mut buf[used..used + stride];
                    let Some(len) = seg.next_into(&mut d[lead..lead + seg_max]) else {
                        done = true;
                        break;
                    };
                    let h = DATAGRAM_HEADER_LEN;
                    d[h..h + ROUTING_PREFIX_LEN].copy_from_slice(&prefix);
                    // len <= seg_max <= u16::MAX, checked above.
                    d[h + ROUTING_PREFIX_LEN..lead].copy_from_slice(&(len as u16).to_be_bytes());
                    match frame_datagram(peer, me, encrypt, hop, kind, d, lead - h + len) {
                        Ok((counter, total)) => {
                            first_counter.get_or_insert(counter);
                            used += total;
                            sent += 1;
                            if total < stride {
                                done = true;
                                break;
                            }
                        }
                        Err(e) => {
                            failed = Some(e);
                            done = true;
                            break;
                        }
                    }
                }
                if let (true, Some(first), Some(sealer)) =
                    (encrypt, first_counter, peer.sealer.as_ref())
                {
                    // Datagram i of the batch carries counter first + i (taken in turn above).
                    let bad = AtomicBool::new(false);
                    spread_pieces(spread, &mut buf[..used], stride, &|i, d| {
                        let (aad, body) = d.split_at_mut(DATAGRAM_HEADER_LEN);
                        let len = body.len().saturating_sub(TAG_LEN_BYTES);
                        if sealer.seal_at(first + i as u64, aad, body, len).is_err() {
                            bad.store(true, Ordering::Relaxed);
                        }
                    });
                    if bad.load(Ordering::Relaxed) {
                        // Unreachable with the lengths above; never send unsealed bytes.
                        failed = Some(DropReason::Crypto);
                        sent = 0;
                        return 0;
                    }
                }
                used
            };
            out(Output::DatagramsInPlace {
                to,
                len_max: per_batch * stride,
                // stride <= GSO_BATCH_LEN_MAX < u16::MAX.
                segment_size: stride as u16,
                build: Build(&mut build),
            });
            self.stats.datagrams_sent += sent as u64;
            if let Some(e) = failed {
                self.stats.count(e);
                return;
            }
            if sent == 0 {
                // Nothing left, or no room to build in: the rest of the frame is dropped.
                break;
            }
        }
    }

    fn send_control(
        &mut self,
        to: PeerName,
        payload: Payload<'_>,
        out: &mut impl FnMut(Output<'_>),
    ) {
        let start = DATAGRAM_HEADER_LEN;
        let end = self.scratch.len() - TAG_LEN_BYTES;
        match payload.emit(&mut self.scratch[start..end]) {
            Ok(len) => self.finish(to, payload.kind(), len, out),
            Err(e) => self.stats.count(DropReason::Malformed(e)),
        }
    }

    fn send_payload(
        &mut self,
        hop: PeerName,
        kind: DatagramKind,
        plain: &[u8],
        out: &mut impl FnMut(Output<'_>),
    ) {
        let start = DATAGRAM_HEADER_LEN;
        if start + plain.len() + TAG_LEN_BYTES > self.scratch.len() {
            self.stats.count(DropReason::TooBig);
            return;
        }
        self.scratch[start..start + plain.len()].copy_from_slice(plain);
        self.finish(hop, kind, plain.len(), out);
    }

    /// Seals (or not) the payload already in `scratch[HEADER..HEADER+len]`, writes the
    /// header and emits the datagram to `hop`.
    fn finish(
        &mut self,
        hop: PeerName,
        kind: DatagramKind,
        len: usize,
        out: &mut impl FnMut(Output<'_>),
    ) {
        let Some(peer) = self.peers.get_mut(&hop) else {
            self.stats.count(DropReason::NoRoute);
            return;
        };
        match seal_datagram(
            peer,
            self.me,
            self.encrypt,
            hop,
            kind,
            &mut self.scratch,
            len,
        ) {
            Ok(total) => {
                self.stats.datagrams_sent += 1;
                out(Output::Datagram {
                    to: peer.addr,
                    bytes: &self.scratch[..total],
                    segment_size: None,
                });
            }
            Err(e) => self.stats.count(e),
        }
    }
}

/// Writes the header into `buf[..DATAGRAM_HEADER_LEN]` and seals (or not) the `len`
/// payload bytes after it; returns the datagram's length.
fn seal_datagram(
    peer: &mut Peer,
    me: PeerName,
    encrypt: bool,
    hop: PeerName,
    kind: DatagramKind,
    buf: &mut [u8],
    len: usize,
) -> Result<usize, DropReason> {
    let (counter, total) = frame_datagram(peer, me, encrypt, hop, kind, buf, len)?;
    if let (true, Some(s)) = (encrypt, peer.sealer.as_ref()) {
        let (aad, body) = buf.split_at_mut(DATAGRAM_HEADER_LEN);
        s.seal_at(counter, aad, body, len)
            .map_err(|_| DropReason::Crypto)?;
    }
    Ok(total)
}

/// Writes the header (taking the datagram's counter) into `buf[..DATAGRAM_HEADER_LEN]`
/// for `len` payload bytes after it, leaving them to be sealed with that counter when
/// `encrypt`. Returns the counter and the datagram's length once sealed.
fn frame_datagram(
    peer: &mut Peer,
    me: PeerName,
    encrypt: bool,
    hop: PeerName,
    kind: DatagramKind,
    buf: &mut [u8],
    len: usize,
) -> Result<(u64, usize), DropReason> {
    let tag = if encrypt { TAG_LEN_BYTES } else { 0 };
    let total = DATAGRAM_HEADER_LEN + len + tag;
    if buf.len() < total {
        return Err(DropReason::TooBig);
    }
    let counter = match (&mut peer.sealer, encrypt) {
        (Some(s), true) => s.reserve(1).map_err(|_| DropReason::Crypto)?,
        (None, true) => return Err(DropReason::EncryptionMismatch),
        (_, false) => {
            peer.plain_counter += 1;
            peer.plain_counter
        }
    };
    let header = DatagramHeader {
        version: PROTOCOL_VERSION_MAX,
        kind,
        sealed: encrypt,
        sender: me,
        receiver: hop,
        counter,
    };
    header
        .emit(&mut buf[..DATAGRAM_HEADER_LEN])
        .map_err(DropReason::Malformed)?;
    Ok((counter, total))
}

/// The L4 payload per segment that makes each datagram of `frame`'s segments fit the
/// link MTU to `p` (`overhead`: datagram bytes besides the segment), or `None` when there
/// is no MTU to fit or the frame is not TCP/UDP over IP.
fn mss_to_fit(p: &Peer, frame: &[u8], overhead: usize) -> Option<usize> {
    let room = segment_room(p, overhead)?;
    let headers = crate::segment::Layout::parse(frame)?.hdr_end;
    room.checked_sub(headers).filter(|&mss| mss > 0)
}

/// Datagram bytes a frame costs besides itself: header, routing prefix, length and, when
/// sealing, the tag.
fn frame_overhead(encrypt: bool) -> usize {
    DATAGRAM_HEADER_LEN + ROUTING_PREFIX_LEN + 2 + if encrypt { TAG_LEN_BYTES } else { 0 }
}

/// The bytes one segment (a whole Ethernet frame) may take in a datagram that fits the
/// link MTU to `p`; `None` when it is not known.
fn segment_room(p: &Peer, overhead: usize) -> Option<usize> {
    let ip_udp = if p.addr.is_ipv4() { 20 + 8 } else { 40 + 8 };
    usize::from(p.link_mtu?).checked_sub(ip_udp + overhead)
}

fn mac_at(frame: &[u8], at: usize) -> Option<Mac> {
    frame.get(at..at + 6)?.try_into().ok()
}

fn name_at(buf: &[u8], at: usize) -> PeerName {
    let mut b = [0u8; 6];
    b.copy_from_slice(&buf[at..at + 6]);
    PeerName::from_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{ChaChaKeyRng, KeyPair, SessionKeys};
    use alloc::collections::VecDeque;

    fn name(i: u64) -> PeerName {
        PeerName::from_u64(0x10 + i)
    }

    fn addr(i: u64) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, i as u8 + 1], 6783))
    }

    fn keys(
        rng: &mut ChaChaKeyRng,
    ) -> (
        (DatagramSealer, DatagramOpener),
        (DatagramSealer, DatagramOpener),
    ) {
        let (a, b) = (KeyPair::generate(rng), KeyPair::generate(rng));
        let ka = SessionKeys::derive(&a, b.public_bytes(), true).unwrap();
        let kb = SessionKeys::derive(&b, a.public_bytes(), false).unwrap();
        (
            (ka.datagram_sealer, ka.datagram_opener),
            (kb.datagram_sealer, kb.datagram_opener),
        )
    }

    fn frame(dst: Mac, src: Mac, marker: u8) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&[marker; 50]);
        f
    }

    /// A line 0 - 1 - 2: 0 and 2 have no direct path.
    struct Line {
        s: Vec<Sleeve>,
        /// Frames each engine wrote to its bridge (partial checksums completed, as the
        /// kernel would).
        delivered: Vec<Vec<Vec<u8>>>,
        /// How many of those came with a partial checksum.
        partial: Vec<usize>,
        /// Datagrams on the wire: (to index, bytes).
        wire: VecDeque<(usize, Vec<u8>, usize)>,
        /// Every datagram ever sent, for inspection.
        seen: Vec<Vec<u8>>,
    }

    impl Line {
        fn new(encrypt: bool) -> Self {
            let mut rng = ChaChaKeyRng::for_simulation(5);
            let mut s: Vec<Sleeve> = (0..3).map(|i| Sleeve::new(name(i), encrypt)).collect();
            let now = Instant::ZERO;
            for (a, b) in [(0u64, 1u64), (1, 2)] {
                let (ka, kb) = keys(&mut rng);
                let (ka, kb) = if encrypt {
                    (Some(ka), Some(kb))
                } else {
                    (None, None)
                };
                s[a as usize].set_peer(now, name(b), addr(b), ka);
                s[b as usize].set_peer(now, name(a), addr(a), kb);
            }
            let hop =
                |pairs: &[(u64, u64)]| pairs.iter().map(|&(d, h)| (name(d), name(h))).collect();
            s[0].set_routes(
                hop(&[(1, 1), (2, 1)]),
                [(name(0), alloc::vec![name(1)])].into(),
            );
            s[1].set_routes(
                hop(&[(0, 0), (2, 2)]),
                [
                    (name(0), alloc::vec![name(2)]),
                    (name(2), alloc::vec![name(0)]),
                    (name(1), alloc::vec![name(0), name(2)]),
                ]
                .into(),
            );
            s[2].set_routes(
                hop(&[(1, 1), (0, 1)]),
                [(name(2), alloc::vec![name(1)])].into(),
            );
            Self {
                s,
                delivered: alloc::vec![Vec::new(); 3],
                partial: alloc::vec![0; 3],
                wire: VecDeque::new(),
                seen: Vec::new(),
            }
        }

        fn collect(&mut self, i: usize, o: Output<'_>) {
            match o {
                Output::Frame(_) | Output::FrameCsumPartial(_) => {
                    self.partial[i] += usize::from(matches!(o, Output::FrameCsumPartial(_)));
                    self.delivered[i].extend(frame_of(o));
                }
                Output::DatagramsInPlace { .. } => unreachable!("tests collect owned outputs"),
                Output::Datagram {
                    to,
                    bytes,
                    segment_size,
                } => {
                    let j = usize::from(match to.ip() {
                        core::net::IpAddr::V4(v) => v.octets()[3],
                        core::net::IpAddr::V6(_) => 0,
                    }) - 1;
                    let step = segment_size.map_or(bytes.len(), usize::from);
                    for d in bytes.chunks(step.max(1)) {
                        self.seen.push(d.to_vec());
                        self.wire.push_back((j, d.to_vec(), i));
                    }
                }
            }
        }

        fn bridge_in(&mut self, i: usize, f: &[u8]) {
            let mut outs = Vec::new();
            self.s[i].handle_bridge_frame(Instant::ZERO, f, &mut |o| outs.push(own(o)));
            for o in outs {
                self.collect(i, o.as_output());
            }
            self.settle();
        }

        fn settle(&mut self) {
            while let Some((j, mut d, from)) = self.wire.pop_front() {
                let mut outs = Vec::new();
                self.s[j].handle_datagram(Instant::ZERO, addr(from as u64), &mut d, &mut |o| {
                    outs.push(own(o))
                });
                for o in outs {
                    self.collect(j, o.as_output());
                }
            }
        }
    }

    /// The frame an output writes to the bridge, its partial checksum completed (what the
    /// kernel does with the hint); `None` for datagrams.
    fn frame_of(o: Output<'_>) -> Option<Vec<u8>> {
        match o {
            Output::Frame(f) => Some(f.to_vec()),
            Output::FrameCsumPartial(f) => {
                let mut f = f.to_vec();
                crate::segment::complete_l4_csum(&mut f);
                Some(f)
            }
            _ => None,
        }
    }

    #[derive(Debug)]
    enum Owned {
        Frame(Vec<u8>),
        FrameCsumPartial(Vec<u8>),
        Datagram(SocketAddr, Vec<u8>, Option<u16>),
    }

    impl Owned {
        fn as_output(&self) -> Output<'_> {
            match self {
                Self::Frame(f) => Output::Frame(f),
                Self::FrameCsumPartial(f) => Output::FrameCsumPartial(f),
                Self::Datagram(to, b, n) => Output::Datagram {
                    to: *to,
                    bytes: b,
                    segment_size: *n,
                },
            }
        }
    }

    fn own(o: Output<'_>) -> Owned {
        match o {
            Output::Frame(f) => Owned::Frame(f.to_vec()),
            Output::FrameCsumPartial(f) => Owned::FrameCsumPartial(f.to_vec()),
            Output::Datagram {
                to,
                bytes,
                segment_size,
            } => Owned::Datagram(to, bytes.to_vec(), segment_size),
            Output::DatagramsInPlace {
                to,
                len_max,
                segment_size,
                mut build,
            } => {
                let mut b = alloc::vec![0u8; len_max];
                let used = build.fill(&mut b);
                b.truncate(used);
                Owned::Datagram(to, b, Some(segment_size))
            }
        }
    }

    const MAC_A: Mac = [0x02, 0, 0, 0, 0, 0xa];
    const MAC_C: Mac = [0x02, 0, 0, 0, 0, 0xc];

    #[test]
    fn broadcast_reaches_everyone_once_and_unicast_is_relayed() {
        for encrypt in [false, true] {
            let mut l = Line::new(encrypt);
            // A broadcasts (ARP-like): B and C get it once each, A never gets its own back.
            let bc = frame([0xff; 6], MAC_A, 1);
            l.bridge_in(0, &bc);
            assert_eq!(l.delivered[1], alloc::vec![bc.clone()]);
            assert_eq!(l.delivered[2], alloc::vec![bc.clone()]);
            assert!(l.delivered[0].is_empty());
            // C answers A by unicast: it learned MAC_A behind A, B relays it.
            let reply = frame(MAC_A, MAC_C, 2);
            l.bridge_in(2, &reply);
            assert_eq!(l.delivered[0], alloc::vec![reply.clone()]);
            assert_eq!(l.delivered[1].len(), 1, "B only relays a unicast for A");
            assert_eq!(l.s[1].stats().frames_relayed, 2);
            // And A now knows MAC_C is behind C: a unicast goes only to C.
            let again = frame(MAC_C, MAC_A, 3);
            l.bridge_in(0, &again);
            assert_eq!(l.delivered[2].last(), Some(&again));
            assert_eq!(l.delivered[1].len(), 1);
            // With a password, the marker bytes never appear on the wire.
            let leaked = l
                .seen
                .iter()
                .any(|d| d.windows(20).any(|w| w.iter().all(|b| *b == 3)));
            assert_eq!(leaked, !encrypt, "encrypt={encrypt}");
        }
    }

    /// A TCP super-frame from MAC_A to MAC_C with `payload_len` bytes, as a TAP with
    /// offloads gives it (partial checksum, TSO at 1300), and the same frame complete.
    fn super_frame_for_c(payload_len: usize) -> (Vec<u8>, Offload, Vec<u8>) {
        use crate::segment::Gso;
        use crate::segment::tests::{FLAG_ACK, build, partial, payload};
        let mut f = build(false, true, &payload(payload_len, 9), 7, FLAG_ACK);
        f[..6].copy_from_slice(&MAC_C);
        f[6..12].copy_from_slice(&MAC_A);
        let original = f.clone();
        let off = Offload {
            gso: Gso::TcpV4,
            gso_size: 1300,
            csum: Some(partial(&mut f)),
            ..Offload::default()
        };
        (f, off, original)
    }

    /// `segments` merged back by a receiver's coalescer: exactly one super-frame, its
    /// checksum completed.
    fn merged_back(segments: &[Vec<u8>]) -> Vec<u8> {
        let mut c = crate::segment::Coalescer::new();
        let mut merged = Vec::new();
        for s in segments {
            c.push(s, &mut |o, b| merged.push((*o, b.to_vec())));
        }
        c.flush(&mut |o, b| merged.push((*o, b.to_vec())));
        assert_eq!(merged.len(), 1);
        let (o, mut sf) = merged.pop().unwrap();
        crate::segment::complete_csum(&mut sf, o.csum.unwrap());
        sf
    }

    #[test]
    fn tso_super_frames_cross_as_gso_batches_of_sealed_segments() {
        for encrypt in [false, true] {
            let mut l = Line::new(encrypt);
            // Teach 0 that MAC_C is behind 2 (two hops: 1 relays).
            l.bridge_in(2, &frame([0xff; 6], MAC_C, 1));
            let (f, off, original) = super_frame_for_c(40_000);
            l.seen.clear();
            let mut outs = Vec::new();
            l.s[0].handle_bridge_offload_frame(Instant::ZERO, &f, &off, &mut |o| outs.push(own(o)));
            // 31 segments of ~1400 bytes: one GSO batch of equal datagrams.
            let sizes: Vec<Option<u16>> = outs
                .iter()
                .map(|o| match o {
                    Owned::Datagram(_, _, n) => *n,
                    _ => panic!("no local delivery"),
                })
                .collect();
            assert_eq!(sizes.len(), 1, "{sizes:?}");
            let seg = usize::from(sizes[0].unwrap());
            let Owned::Datagram(_, b, _) = &outs[0] else {
                panic!()
            };
            assert_eq!(b.len().div_ceil(seg), 40_000usize.div_ceil(1300));
            for o in outs {
                l.collect(0, o.as_output());
            }
            l.settle();
            let got = &l.delivered[2][..];
            assert_eq!(got.len(), 31);
            assert_eq!(merged_back(got), original, "encrypt={encrypt}");
            // The checksum was left to offload: segments went partial, in datagrams that
            // say so over both hops, and 2 was told to have them finished.
            assert_eq!(l.partial[2], 31, "encrypt={encrypt}");
            let kinds: BTreeSet<u8> = l.seen.iter().map(|d| d[2] & 0x7f).collect();
            assert!(kinds.contains(&5), "{kinds:?}");
            assert!(!kinds.contains(&1), "{kinds:?}");
        }
    }

    #[test]
    fn segments_are_cut_to_fit_the_link_mtu_to_the_next_hop() {
        use crate::segment::tests::{FLAG_ACK, build, payload};
        for encrypt in [false, true] {
            let mut l = Line::new(encrypt);
            l.bridge_in(2, &frame([0xff; 6], MAC_C, 1));
            // 0's underlay to 1 carries 1280-byte IP packets; 2 is no direct peer of 0.
            l.s[0].set_link_mtu(name(1), Some(1280));
            l.s[0].set_link_mtu(name(2), Some(1300));
            let (f, off, original) = super_frame_for_c(20_000);
            let mut outs = Vec::new();
            l.s[0].handle_bridge_offload_frame(Instant::ZERO, &f, &off, &mut |o| outs.push(own(o)));
            assert_eq!(outs.len(), 1);
            let Some(Owned::Datagram(_, b, Some(seg))) = outs.first() else {
                panic!("{outs:?}")
            };
            let seg = usize::from(*seg);
            assert!(seg + 28 <= 1280, "stride {seg}");
            assert!(seg + 28 > 1280 - 16, "as big as fits: {seg}");
            assert!(b.len().div_ceil(seg) > 20_000usize.div_ceil(1300));
            let path = l.s[0].paths(Instant::ZERO).find(|p| p.name == name(1));
            assert_eq!(path.unwrap().link_mtu_bytes, Some(1280));
            // IP + UDP 28, header 23, prefix 12, length 2, tag 16 when sealing.
            let room = 1280 - 28 - 37 - if encrypt { 16 } else { 0 };
            assert_eq!(path.unwrap().frame_room_bytes, Some(room));
            assert!(l.s[0].paths(Instant::ZERO).all(|p| p.name != name(2)));
            for o in outs {
                l.collect(0, o.as_output());
            }
            l.settle();
            assert_eq!(merged_back(&l.delivered[2]), original, "encrypt={encrypt}");
        }
        // Whole frames: TCP too big for the link is cut all the same; UDP is left whole.
        for tcp in [true, false] {
            let mut l = Line::new(false);
            l.bridge_in(1, &frame([0xff; 6], MAC_C, 1));
            l.s[0].set_link_mtu(name(1), Some(1280));
            let mut f = build(false, tcp, &payload(1300, 8), 7, FLAG_ACK);
            f[..6].copy_from_slice(&MAC_C);
            f[6..12].copy_from_slice(&MAC_A);
            let mut outs = Vec::new();
            l.s[0].handle_bridge_frame(Instant::ZERO, &f, &mut |o| outs.push(own(o)));
            let sizes: Vec<usize> = outs
                .iter()
                .map(|o| match o {
                    Owned::Datagram(_, b, n) => b.len().div_ceil(n.map_or(b.len(), usize::from)),
                    _ => panic!("no local delivery"),
                })
                .collect();
            assert_eq!(sizes, vec![if tcp { 2 } else { 1 }], "tcp={tcp}");
            for o in outs {
                l.collect(0, o.as_output());
            }
            l.settle();
            let got = &l.delivered[1];
            let lens: Vec<usize> = got.iter().map(Vec::len).collect();
            if tcp {
                assert_eq!(lens.len(), 2, "{lens:?}");
                let joined: Vec<u8> = got.iter().flat_map(|g| g[66..].to_vec()).collect();
                assert_eq!(joined, f[66..].to_vec());
            } else {
                assert_eq!(got, &vec![f.clone()]);
            }
            for g in got {
                assert_eq!(crate::segment::l4_csum_verifies(g), Some(true));
            }
        }
        // Too small to cut for: forgotten, the kernel fragments.
        let mut l = Line::new(false);
        l.s[0].set_link_mtu(name(1), Some(576));
        let path = l.s[0].paths(Instant::ZERO).find(|p| p.name == name(1));
        assert_eq!(path.unwrap().link_mtu_bytes, None);
    }

    const MAC_B: Mac = [0x02, 0, 0, 0, 0, 0xb];

    impl Line {
        /// Teaches 0 that MAC_B is behind 1, then has 0 cut a TCP super-frame with
        /// `payload_len` bytes for MAC_B into 1000-byte segments; returns the one GSO batch
        /// it sends to 1 and its segment size.
        fn batch_for_b(&mut self, payload_len: usize) -> (Vec<u8>, usize) {
            use crate::segment::Gso;
            use crate::segment::tests::{FLAG_ACK, build, partial, payload};
            self.bridge_in(1, &frame([0xff; 6], MAC_B, 1));
            let mut f = build(false, true, &payload(payload_len, 3), 7, FLAG_ACK);
            f[..6].copy_from_slice(&MAC_B);
            f[6..12].copy_from_slice(&MAC_A);
            let off = Offload {
                gso: Gso::TcpV4,
                gso_size: 1000,
                csum: Some(partial(&mut f)),
                ..Offload::default()
            };
            let mut outs = Vec::new();
            self.s[0]
                .handle_bridge_offload_frame(Instant::ZERO, &f, &off, &mut |o| outs.push(own(o)));
            let [Owned::Datagram(_, batch, Some(seg))] = <[Owned; 1]>::try_from(outs).unwrap()
            else {
                panic!("one GSO batch")
            };
            (batch, usize::from(seg))
        }
    }

    /// A [`Spread`] that does the pieces last to first and counts them.
    #[derive(Debug)]
    struct Backwards(alloc::sync::Arc<AtomicUsize>);

    impl Spread for Backwards {
        fn spread(
            &mut self,
            buf: &mut [u8],
            piece_len: usize,
            work: &(dyn Fn(usize, &mut [u8]) + Sync),
        ) {
            let pieces: Vec<&mut [u8]> = buf.chunks_mut(piece_len).collect();
            for (i, p) in pieces.into_iter().enumerate().rev() {
                work(i, p);
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    #[test]
    fn batches_sealed_and_opened_through_a_spread_match_one_at_a_time() {
        // (frames delivered by 1, its stats, pieces the spreads ran) per setting.
        let run = |spread: bool, encrypt: bool| {
            let mut l = Line::new(encrypt);
            let pieces = alloc::sync::Arc::new(AtomicUsize::new(0));
            if spread {
                for s in &mut l.s {
                    s.set_spread(Box::new(Backwards(pieces.clone())));
                }
            }
            let (mut batch, seg) = l.batch_for_b(20_000);
            assert_eq!(batch.len().div_ceil(seg), 20, "20 segments of 1000 bytes");
            // The wire mangles it: segment 3 is tampered with, segment 5 comes twice
            // (replacing 6, so the batch keeps its shape).
            batch[3 * seg + DATAGRAM_HEADER_LEN + 40] ^= 1;
            let five = batch[5 * seg..6 * seg].to_vec();
            batch[6 * seg..7 * seg].copy_from_slice(&five);
            let mut got = Vec::new();
            l.s[1].handle_datagrams(Instant::ZERO, addr(0), &mut batch, seg, &mut |o| {
                got.extend(frame_of(o));
            });
            (got, l.s[1].stats(), pieces.load(Ordering::Relaxed))
        };
        let (plain_one, plain_stats, _) = run(false, false);
        assert_eq!(
            plain_one.len(),
            19,
            "plain: no seal to find the tampering, but the counter refuses the replay"
        );
        assert_eq!(plain_stats.drops_crypto, 0);
        assert_eq!(plain_stats.drops_replayed, 1);
        let (one, one_stats, none) = run(false, true);
        let (spread, spread_stats, pieces) = run(true, true);
        assert_eq!(none, 0);
        assert_eq!(pieces, 20 + 20, "sealed and opened through the spread");
        assert_eq!(
            one.len(),
            18,
            "the tampered segment and the replay are dropped"
        );
        assert_eq!(spread, one, "same frames, same order");
        assert_eq!(spread_stats, one_stats);
        assert_eq!(spread_stats.drops_crypto, 2);
        assert_eq!(spread_stats.datagrams_received, 20);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]
        /// Whatever the wire did to a GRO batch (bytes flipped, datagrams repeated or cut
        /// short, a wrong segment size), taking it as one batch through a spread gives the
        /// same frames, in the same order, and the same counters as one at a time.
        #[test]
        fn a_mangled_batch_acts_as_its_datagrams_one_at_a_time(
            encrypt in proptest::bool::ANY,
            payload_len in 1usize..30_000,
            flips in proptest::collection::vec((0usize..64, 0usize..1500, 1u8..=255), 0..4),
            repeats in proptest::collection::vec((0usize..64, 0usize..64), 0..4),
            cut in 0usize..2000,
            seg_skew in proptest::prop_oneof![3 => proptest::strategy::Just(0i32), 1 => -3i32..=3],
        ) {
            let mut lines = [Line::new(encrypt), Line::new(encrypt)];
            lines[1].s[1].set_spread(Box::new(Backwards(alloc::sync::Arc::new(AtomicUsize::new(0)))));
            let (mut batch, seg) = lines[0].batch_for_b(payload_len);
            lines[1].bridge_in(1, &frame([0xff; 6], MAC_B, 1));
            let n = batch.len().div_ceil(seg);
            for (i, at, x) in flips {
                let k = (i % n) * seg + at;
                if k < batch.len() {
                    batch[k] ^= x;
                }
            }
            for (dst, src) in repeats {
                let (d, s) = (dst % n, src % n);
                if d + 1 < n && s + 1 < n {
                    let copy = batch[s * seg..(s + 1) * seg].to_vec();
                    batch[d * seg..(d + 1) * seg].copy_from_slice(&copy);
                }
            }
            batch.truncate(batch.len().saturating_sub(cut).max(1));
            let step = usize::try_from(seg as i32 + seg_skew).unwrap_or(1).max(1);
            let mut got: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
            let [one, spread] = &mut lines;
            let mut b1 = batch.clone();
            for d in b1.chunks_mut(step) {
                one.s[1].handle_datagram(Instant::ZERO, addr(0), d, &mut |o| {
                    got[0].extend(frame_of(o));
                });
            }
            let mut b2 = batch;
            spread.s[1].handle_datagrams(Instant::ZERO, addr(0), &mut b2, step, &mut |o| {
                got[1].extend(frame_of(o));
            });
            proptest::prop_assert_eq!(&got[0], &got[1]);
            proptest::prop_assert_eq!(one.s[1].stats(), spread.s[1].stats());
        }
    }

    #[test]
    fn plain_datagrams_from_elsewhere_than_the_peer_are_dropped() {
        let mut l = Line::new(false);
        let f = frame([0xff; 6], MAC_A, 4);
        let mut outs = Vec::new();
        l.s[0].handle_bridge_frame(Instant::ZERO, &f, &mut |o| outs.push(own(o)));
        let Owned::Datagram(_, good, _) = &outs[0] else {
            panic!()
        };
        let mut sink = |_: Output<'_>| {};
        // The same bytes from an address that is not peer 0's: refused.
        l.s[1].handle_datagram(Instant::ZERO, addr(7), &mut good.clone(), &mut sink);
        assert_eq!(l.s[1].stats().drops_unknown_peer, 1);
        assert_eq!(l.s[1].stats().frames_to_bridge, 0);
        l.s[1].handle_datagram(Instant::ZERO, addr(0), &mut good.clone(), &mut sink);
        assert_eq!(l.s[1].stats().frames_to_bridge, 1);
    }

    #[test]
    fn fast_peers_are_left_to_the_kernel_but_still_relay() {
        let mut l = Line::new(false);
        l.s[0].set_fast_peers([name(1)].into());
        l.s[1].set_fast_peers([name(0)].into());
        // A broadcast from 0: 1 is fast but relays to 2, so it gets a sleeve copy it does
        // not deliver (the kernel did), and 2 gets it once.
        let bc = frame([0xff; 6], MAC_A, 1);
        l.bridge_in(0, &bc);
        assert!(
            l.delivered[1].is_empty(),
            "the kernel delivers 0's frames at 1"
        );
        assert_eq!(l.delivered[2], alloc::vec![bc.clone()]);
        // A unicast from 0 to a MAC behind 1 is left to the kernel.
        const MAC_B: Mac = [0x02, 0, 0, 0, 0, 0xb];
        l.s[0].macs.learn(MAC_B, name(1), Instant::ZERO);
        let before = l.seen.len();
        l.bridge_in(0, &frame(MAC_B, MAC_A, 2));
        assert_eq!(l.seen.len(), before, "nothing on the sleeve");
        assert_eq!(l.s[0].stats().frames_left_to_kernel, 1);
        // Fast-path heartbeats are never carried by the sleeve.
        let mut hb = frame([0xff; 6], MAC_A, 3);
        hb[12..14].copy_from_slice(&HEARTBEAT_ETHERTYPE.to_be_bytes());
        l.bridge_in(2, &hb);
        assert_eq!(l.seen.len(), before);
    }

    /// A plain datagram A sends B carrying a broadcast frame, at `now`.
    fn plain_datagram(l: &mut Line, now: Instant, marker: u8) -> Vec<u8> {
        let f = frame([0xff; 6], MAC_A, marker);
        let mut outs = Vec::new();
        l.s[0].handle_bridge_frame(now, &f, &mut |o| outs.push(own(o)));
        outs.into_iter()
            .find_map(|o| match o {
                Owned::Datagram(to, d, _) if to == addr(1) => Some(d),
                _ => None,
            })
            .expect("a datagram to B")
    }

    #[test]
    fn plain_datagrams_are_replay_checked_across_reconnects_and_restarts() {
        let mut l = Line::new(false);
        let mut sink = |_: Output<'_>| {};
        let t0 = Instant::from_millis(1000);
        let good = plain_datagram(&mut l, t0, 1);
        for _ in 0..3 {
            l.s[1].handle_datagram(t0, addr(0), &mut good.clone(), &mut sink);
        }
        assert_eq!(l.s[1].stats().frames_to_bridge, 1, "delivered once");
        assert_eq!(l.s[1].stats().drops_replayed, 2);
        // A's connection to B flaps: its counters go on from the clock, not from zero, so
        // B (whose window still holds the old ones) takes the new datagrams.
        l.s[0].remove_peer(name(1));
        let t1 = Instant::from_millis(2000);
        l.s[0].set_peer(t1, name(1), addr(1), None);
        let mut d = plain_datagram(&mut l, t1, 2);
        l.s[1].handle_datagram(t1, addr(0), &mut d, &mut sink);
        assert_eq!(l.s[1].stats().frames_to_bridge, 2, "after a reconnect");
        // A restarts: a new engine whose clock starts at zero again, with the epoch the host
        // gives from the wall clock.
        let mut a = Sleeve::new(name(0), false);
        a.set_plain_epoch(10_000_000 << PLAIN_COUNTER_SHIFT);
        a.set_peer(Instant::ZERO, name(1), addr(1), None);
        a.set_routes(
            [(name(1), name(1)), (name(2), name(1))]
                .into_iter()
                .collect(),
            [(name(0), alloc::vec![name(1)])].into(),
        );
        l.s[0] = a;
        let mut d = plain_datagram(&mut l, Instant::ZERO, 3);
        l.s[1].handle_datagram(t1, addr(0), &mut d, &mut sink);
        assert_eq!(l.s[1].stats().frames_to_bridge, 3, "after a restart");
        assert_eq!(l.s[1].stats().drops_replayed, 2);
    }

    #[test]
    fn tampered_replayed_and_garbage_datagrams_are_dropped() {
        let mut l = Line::new(true);
        let f = frame([0xff; 6], MAC_A, 9);
        let mut outs = Vec::new();
        l.s[0].handle_bridge_frame(Instant::ZERO, &f, &mut |o| outs.push(own(o)));
        let Owned::Datagram(_, good, _) = &outs[0] else {
            panic!()
        };
        let mut sink = |_: Output<'_>| {};
        // Tampered.
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        l.s[1].handle_datagram(Instant::ZERO, addr(0), &mut bad, &mut sink);
        assert_eq!(l.s[1].stats().drops_crypto, 1);
        // Good once, then replayed.
        let mut once = good.clone();
        l.s[1].handle_datagram(Instant::ZERO, addr(0), &mut once, &mut sink);
        let mut twice = good.clone();
        l.s[1].handle_datagram(Instant::ZERO, addr(0), &mut twice, &mut sink);
        assert_eq!(l.s[1].stats().drops_crypto, 2);
        assert_eq!(l.s[1].stats().frames_to_bridge, 1);
        // Garbage and truncated.
        for len in [0usize, 1, 5, 22, 23, 40] {
            let mut g = alloc::vec![0x77u8; len];
            l.s[1].handle_datagram(Instant::ZERO, addr(0), &mut g, &mut sink);
        }
        let mut rng = crate::rng::Rng::from_seed(3);
        for _ in 0..500 {
            let mut g = good.clone();
            let i = rng.below(g.len() as u64) as usize;
            g[i] = rng.next_u64() as u8;
            let cut = rng.below(g.len() as u64 + 1) as usize;
            l.s[1].handle_datagram(Instant::ZERO, addr(0), &mut g[..cut], &mut sink);
        }
        assert_eq!(l.s[1].stats().frames_to_bridge, 1);
        // A plain datagram to an encrypted router is refused.
        let mut plain = Line::new(false);
        let mut outs = Vec::new();
        plain.s[0].handle_bridge_frame(Instant::ZERO, &f, &mut |o| outs.push(own(o)));
        let Owned::Datagram(_, p, _) = &outs[0] else {
            panic!()
        };
        l.s[1].handle_datagram(Instant::ZERO, addr(0), &mut p.clone(), &mut sink);
        assert_eq!(l.s[1].stats().drops_encryption_mismatch, 1);
    }

    #[test]
    fn heartbeats_bring_paths_up_and_silence_takes_them_down() {
        let mut l = Line::new(true);
        let now = Instant::ZERO;
        for i in 0..3 {
            let mut outs = Vec::new();
            l.s[i].handle_timeout(now, &mut |o| outs.push(own(o)));
            for o in outs {
                l.collect(i, o.as_output());
            }
        }
        l.settle();
        assert!(l.s[0].paths(now).all(|p| p.up));
        assert!(l.s[1].paths(now).all(|p| p.up && p.pmtu_bytes.is_some()));
        let later = now + Duration::from_millis(HEARTBEAT_TIMEOUT_MS + 1);
        assert!(l.s[1].paths(later).all(|p| !p.up));
    }
}
