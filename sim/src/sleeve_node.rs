//! The sleeve datapath of a simulated host: a `weft_core::sleeve::Sleeve` engine beside
//! the router in [`crate::router_node::RouterNode`], fed the way the host feeds it
//! (`host/src/driver` and `host/src/sleeve`): after every router input the connected peers
//! with their UDP address and datagram keys, the forwarding table when the topology moved;
//! datagrams from the virtual network, frames from the scenario's containers, timers from
//! the virtual clock. Its datagrams go out on the virtual network with its loss,
//! duplication, reordering, partitions and link MTUs.
//!
//! What the engine does is recorded in a [`SleeveTrace`] shared by every host (it outlives
//! restarts): frames reaching each bridge, frames on the wire (plain datagrams), and each
//! datagram the engine accepted. [`Faults`] are test-only ways to break the datapath on
//! purpose, to show that the checks in [`crate::sleeve_check`] catch it.
//!
//! What it does not do: the host's threads, batching (GSO batches are cut into datagrams,
//! GRO is not modelled), the kernel fast path, or the link MTU the host learns from its
//! kernel (the engine is told none, as for a bottleneck beyond the first hop).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;

use weft_core::conn::ConnId as RouterConnId;
use weft_core::peer::PeerName;
use weft_core::router::Router;
use weft_core::segment::complete_l4_csum;
use weft_core::sleeve::{Output, PeerPath, ROUTING_PREFIX_LEN, Sleeve, SleeveStats};
use weft_core::time::Instant;
use weft_core::wire::datagram::{DatagramHeader, EthFrames};

use crate::node::{Dest, NODES_MAX, NodeSpec, index_of_name};
use crate::router_node::{RouterNode, RouterProfile};
use crate::sleeve_check::{AcceptKey, SleeveTrace, frame_id};
use crate::world::Factory;

/// Most datagrams waiting for the network (the host's outbox); more are dropped and
/// counted.
pub const OUTBOX_DATAGRAMS_MAX: usize = 4096;

/// Ways to break the datapath on purpose (tests of the checks only).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Every host forgets a sender's replay window before each frames datagram from it
    /// (plain datagrams only): an engine without the replay check. (Not before the others:
    /// a fresh entry heartbeats at once, which would answer every heartbeat.)
    pub forget_replay_windows: bool,
    /// This host also relays every broadcast back to its next hop towards the source: a
    /// broadcast tree with a cycle.
    pub relay_back: Option<usize>,
}

/// What every simulated host shares: the trace and the faults.
#[derive(Debug, Default)]
pub struct SleeveShared {
    /// What the datapaths did.
    pub trace: RefCell<SleeveTrace>,
    /// Faults on; set before the world is built (routes are only rebuilt on change).
    pub faults: Cell<Faults>,
    /// Runs so far of each host.
    incarnations: RefCell<BTreeMap<usize, u32>>,
}

impl SleeveShared {
    /// An empty trace, no faults.
    pub fn new() -> Rc<Self> {
        Rc::new(Self::default())
    }
}

/// A factory for routers with `profile` and a sleeve each, recording into `shared`.
pub fn sleeve_factory(profile: RouterProfile, shared: Rc<SleeveShared>) -> Factory<RouterNode> {
    Box::new(move |spec| {
        let side = SleeveSide::new(spec, profile.psk.is_some(), Rc::clone(&shared));
        RouterNode::with_sleeve(&profile, spec, side)
    })
}

/// The engine and what the host keeps beside it.
pub struct SleeveSide {
    host: usize,
    incarnation: u32,
    me: PeerName,
    encrypt: bool,
    engine: Sleeve,
    /// Per peer, the connection (and address) whose keys the engine has.
    told: BTreeMap<PeerName, (RouterConnId, SocketAddr)>,
    /// Per peer, which of the engine's entries for it this is (numbered as made): each
    /// has its own replay window.
    entries: BTreeMap<PeerName, u64>,
    entries_made: u64,
    routes_generation: Option<u64>,
    out: Outbox,
    scratch: Vec<u8>,
}

impl SleeveSide {
    /// A fresh engine for host `spec.index` (sealing when `encrypt`).
    pub fn new(spec: &NodeSpec, encrypt: bool, shared: Rc<SleeveShared>) -> Self {
        let incarnation = {
            let mut runs = shared.incarnations.borrow_mut();
            let n = runs.entry(spec.index).or_default();
            *n += 1;
            *n
        };
        Self {
            host: spec.index,
            incarnation,
            me: spec.name,
            encrypt,
            // The simulator's clock starts at zero for every run, like the engine's plain
            // epoch there: counters still grow across restarts (virtual time goes on).
            engine: Sleeve::new(spec.name, encrypt),
            told: BTreeMap::new(),
            entries: BTreeMap::new(),
            entries_made: 0,
            routes_generation: None,
            out: Outbox {
                host: spec.index,
                queue: VecDeque::new(),
                drops_full: 0,
                shared,
            },
            scratch: Vec::new(),
        }
    }

    /// The engine, for assertions.
    pub fn engine(&self) -> &Sleeve {
        &self.engine
    }

    /// The engine's counters.
    pub fn stats(&self) -> SleeveStats {
        self.engine.stats()
    }

    /// The engine's paths at `now`.
    pub fn paths(&self, now: Instant) -> Vec<PeerPath> {
        self.engine.paths(now).collect()
    }

    /// Datagrams dropped because the outbox was full.
    pub fn drops_outbox_full(&self) -> u64 {
        self.out.drops_full
    }

    /// Brings the engine in step with `router`, as the host's driver does after each
    /// input: peers whose connection went are removed, a new connection's address and
    /// keys replace the old one's, the forwarding table follows the topology.
    pub fn sync(&mut self, now: Instant, router: &mut Router) {
        let live: Vec<PeerName> = router.neighbours().collect();
        let gone: Vec<PeerName> = self
            .told
            .keys()
            .filter(|p| !live.contains(p))
            .copied()
            .collect();
        for p in gone {
            self.told.remove(&p);
            self.entries.remove(&p);
            self.engine.remove_peer(p);
        }
        for p in live {
            if let Some(conn) = router.connection_to(p)
                && self.told.get(&p).map(|t| t.0) != Some(conn)
                && let Some(addr) = router.peer_udp_addr(p)
            {
                let keys = router.take_datagram_keys(p);
                let keys = if self.encrypt { keys } else { None };
                // A new entry, or new keys: a new window (a plain one survives otherwise).
                if keys.is_some() || !self.entries.contains_key(&p) {
                    self.entries_made += 1;
                    self.entries.insert(p, self.entries_made);
                }
                self.engine.set_peer(now, p, addr, keys);
                self.told.insert(p, (conn, addr));
                self.routes_generation = None;
            }
        }
        let generation = router.topology_generation();
        if self.routes_generation != Some(generation) {
            self.routes_generation = Some(generation);
            let mut table = router.forwarding_table();
            if self.out.shared.faults.get().relay_back == Some(self.host) {
                for (source, hop) in &table.next_hop {
                    let kids = table.children.entry(*source).or_default();
                    if !kids.contains(hop) {
                        kids.push(*hop);
                    }
                }
            }
            self.engine.set_routes(table.next_hop, table.children);
        }
    }

    /// The container on this host sends `frame` to the bridge.
    pub fn bridge_frame(&mut self, now: Instant, frame: &[u8]) {
        self.engine
            .handle_bridge_frame(now, frame, &mut |o| self.out.emit(o));
    }

    /// A datagram from the network.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        let header = DatagramHeader::parse(bytes).ok().map(|(h, _)| h);
        if self.out.shared.faults.get().forget_replay_windows
            && !self.encrypt
            && let Some(h) = header.filter(|h| h.kind.carries_frames())
            && let Some((_, addr)) = self.told.get(&h.sender)
        {
            // The entry stays the same as far as the trace knows: that is the bug.
            self.engine.remove_peer(h.sender);
            self.engine.set_peer(now, h.sender, *addr, None);
        }
        let before = self.engine.stats();
        let mut d = std::mem::take(&mut self.scratch);
        d.clear();
        d.extend_from_slice(bytes);
        self.engine
            .handle_datagram(now, from, &mut d, &mut |o| self.out.emit(o));
        self.scratch = d;
        let after = self.engine.stats();
        if let Some(h) = header
            && h.receiver == self.me
            && !refused(&before, &after)
        {
            self.out.shared.trace.borrow_mut().accepted(AcceptKey {
                host: self.host,
                incarnation: self.incarnation,
                sender: h.sender,
                entry: self.entries.get(&h.sender).copied().unwrap_or(0),
                counter: h.counter,
            });
        }
    }

    /// Heartbeats and probes, when due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.engine.poll_timeout().is_some_and(|t| t <= now) {
            self.engine.handle_timeout(now, &mut |o| self.out.emit(o));
        }
    }

    /// When the engine next wants [`SleeveSide::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.engine.poll_timeout()
    }

    /// The next datagram to send, written into `buf`.
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<(Dest, usize)> {
        let (to, d) = self.out.queue.pop_front()?;
        let len = d.len().min(buf.len());
        buf[..len].copy_from_slice(&d[..len]);
        Some((Dest::Datagram(to), len))
    }
}

/// True if the datagram was refused before its counter was recorded: what the engine
/// counts for those reasons went up. (Its other drops come after: a relay without a
/// route, a frame that does not parse.) The header checks the engine also counts under
/// other reasons (malformed, not for us) are made by the caller.
fn refused(before: &SleeveStats, after: &SleeveStats) -> bool {
    after.drops_unknown_peer > before.drops_unknown_peer
        || after.drops_crypto > before.drops_crypto
        || after.drops_replayed > before.drops_replayed
        || after.drops_encryption_mismatch > before.drops_encryption_mismatch
}

/// Where the engine's outputs go: datagrams to the queue for the network (GSO batches
/// cut, as the kernel does), frames for the bridge to the trace.
struct Outbox {
    host: usize,
    queue: VecDeque<(SocketAddr, Vec<u8>)>,
    drops_full: u64,
    shared: Rc<SleeveShared>,
}

impl Outbox {
    fn emit(&mut self, o: Output<'_>) {
        match o {
            Output::Frame(f) => self.shared.trace.borrow_mut().delivered(self.host, f),
            Output::FrameCsumPartial(f) => {
                // What the kernel does with the partial-checksum hint.
                let mut f = f.to_vec();
                complete_l4_csum(&mut f);
                self.shared.trace.borrow_mut().delivered(self.host, &f);
            }
            Output::Datagram {
                to,
                bytes,
                segment_size,
            } => {
                let step = segment_size.map_or(bytes.len(), usize::from).max(1);
                for d in bytes.chunks(step) {
                    self.send(to, d);
                }
            }
            Output::DatagramsInPlace {
                to,
                len_max,
                segment_size,
                mut build,
            } => {
                let mut b = vec![0u8; len_max];
                let used = build.fill(&mut b);
                for d in b[..used].chunks(usize::from(segment_size).max(1)) {
                    self.send(to, d);
                }
            }
        }
    }

    fn send(&mut self, to: SocketAddr, d: &[u8]) {
        if let Some((receiver, ids)) = frames_on_wire(d)
            && let Some(to_host) = index_of_name(receiver, NODES_MAX)
        {
            let mut t = self.shared.trace.borrow_mut();
            for id in ids {
                t.hop(id, self.host, to_host);
            }
        }
        if self.queue.len() >= OUTBOX_DATAGRAMS_MAX {
            self.drops_full += 1;
            return;
        }
        self.queue.push_back((to, d.to_vec()));
    }
}

/// The hop a plain frames datagram is for and the ids of the test frames it carries.
fn frames_on_wire(d: &[u8]) -> Option<(PeerName, Vec<u64>)> {
    let (h, body) = DatagramHeader::parse(d).ok()?;
    if h.sealed || !h.kind.carries_frames() {
        return None;
    }
    let frames = EthFrames::parse(body.get(ROUTING_PREFIX_LEN..)?).ok()?;
    Some((h.receiver, frames.iter().filter_map(frame_id).collect()))
}
