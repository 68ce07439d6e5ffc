//! The virtual world: N nodes, one virtual clock, one event queue, one network.
//!
//! Everything random is drawn from one [`Rng`] seeded by the world seed, the queue is a
//! binary heap keyed by `(time, seq)`, and every map is a `BTreeMap`, so a seed replays
//! bit for bit. Streams are TCP-like: reliable and in order; loss shows up as extra delay.
//! A stream that loses bytes to a partition, a cut link or a stalled-dead peer is
//! black-holed for good (the nodes find out by heartbeat timeout), dials into a partition
//! fail after the connect timeout. Datagrams are lost, duplicated and reordered, dropped
//! when bigger than the link MTU, and can be cut on a link whose streams still work (a
//! firewall that blocks only UDP). A node can sit behind a NAT box ([`crate::nat`]): its
//! dials go out from the box's address, nobody can dial it, and datagrams pass the box's
//! mappings and filters both ways.
//!
//! What it does not do: check protocol invariants (see [`crate::check`]) or pick faults
//! (see [`crate::scenario`]).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use weft_core::rng::Rng;
use weft_core::time::Instant;

use crate::nat::{NatBox, NatType};
use crate::net::{NetConfig, PPM, content_hash, datagram_fits, mix};
use crate::node::{
    ConnId, Dest, EPHEMERAL_PORT_MIN, NodeCommand, NodeEvent, NodeSpec, SimNode, addr_of,
    index_of_addr, name_of,
};

/// Most bytes written to one stream direction and not yet delivered.
pub const STREAM_INFLIGHT_BYTES_MAX: usize = 16 << 20;
/// Most streams one node may hold open at once.
pub const NODE_STREAMS_MAX: usize = 1024;
/// Most transmits one node may emit in one wake-up.
pub const NODE_TRANSMITS_PER_WAKE_MAX: usize = 1 << 16;
/// Most events one node may emit in one wake-up.
pub const NODE_EVENTS_PER_WAKE_MAX: usize = 1 << 14;
/// Most timer wake-ups of one node at one instant (more is a timer livelock).
pub const NODE_WAKES_PER_INSTANT_MAX: u32 = 1_000;
/// Most pending events in the world's queue, per node.
pub const QUEUE_EVENTS_PER_NODE_MAX: usize = 1 << 15;

/// An invariant the network itself checks was broken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Virtual time it was seen.
    pub time: Instant,
    /// What went wrong, one line.
    pub what: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at {}: {}", self.time, self.what)
    }
}

/// Per-node traffic counters (kept across restarts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Stream writes.
    pub stream_writes: u64,
    /// Stream bytes written.
    pub stream_bytes: u64,
    /// Datagrams sent.
    pub datagrams: u64,
    /// Datagram bytes sent.
    pub datagram_bytes: u64,
    /// Streams opened by this node.
    pub dials: u64,
    /// Datagrams dropped because they did not fit the link MTU.
    pub datagrams_over_mtu: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct End {
    node: usize,
    inc: u32,
    conn: Option<ConnId>,
    open: bool,
}

#[derive(Clone, Debug)]
struct Stream {
    /// `ends[0]` dialled, `ends[1]` accepted.
    ends: [End; 2],
    broken: bool,
    /// Time of the last delivery scheduled in each direction (`dir` = sending end).
    last_delivery_us: [u64; 2],
    inflight_bytes: [usize; 2],
}

#[derive(Clone, Debug)]
enum Ev {
    Timer {
        node: usize,
        inc: u32,
        at_us: u64,
    },
    Accept {
        stream: u64,
    },
    Opened {
        stream: u64,
    },
    DialFailed {
        node: usize,
        inc: u32,
        conn: ConnId,
    },
    Data {
        stream: u64,
        dir: usize,
        bytes: Vec<u8>,
    },
    Closed {
        stream: u64,
        to: usize,
    },
    Datagram {
        node: usize,
        from: usize,
        /// The source address as the receiver sees it (a NAT's mapping for a NATed sender).
        src: SocketAddr,
        /// Set when sent to the public port of `node`'s NAT box, which decides at arrival.
        nat_port: Option<u16>,
        bytes: Vec<u8>,
    },
}

struct Scheduled {
    at_us: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        (self.at_us, self.seq) == (o.at_us, o.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at_us, self.seq).cmp(&(o.at_us, o.seq))
    }
}

struct Slot<N> {
    node: Option<N>,
    inc: u32,
    /// The node's open streams: its conn id -> world stream key.
    conns: BTreeMap<ConnId, u64>,
    timer_at_us: Option<u64>,
    wakes: (u64, u32),
    /// Addresses this node was told to connect to (re-issued on restart).
    targets: Vec<usize>,
    /// Deliveries to this node wait until then (a stall: GC pause, VM steal, clock hiccup).
    stalled_until_us: u64,
    next_port: u16,
    stats: NodeStats,
}

/// Builds a node from its spec (a fresh router on every restart).
pub type Factory<N> = Box<dyn FnMut(&NodeSpec) -> N>;

/// N nodes on one virtual network, driven by one virtual clock.
pub struct World<N: SimNode> {
    seed: u64,
    rng: Rng,
    link_seed: u64,
    now_us: u64,
    seq: u64,
    net: NetConfig,
    factory: Factory<N>,
    slots: Vec<Slot<N>>,
    queue: BinaryHeap<Reverse<Scheduled>>,
    streams: BTreeMap<u64, Stream>,
    next_stream: u64,
    /// Partition component of each node; nodes talk only within a component.
    component: Vec<u32>,
    /// Cut links, as `(low, high)` index pairs.
    cuts: BTreeSet<(usize, usize)>,
    /// Links that carry streams but no datagrams, as `(low, high)` index pairs.
    datagram_cuts: BTreeSet<(usize, usize)>,
    /// Links whose MTU is not `net.link_mtu_bytes`, as `(low, high)` index pairs.
    link_mtu: BTreeMap<(usize, usize), u16>,
    /// NAT boxes, by the node behind each.
    nats: BTreeMap<usize, NatBox>,
    trace: u64,
    deliveries: u64,
    violation: Option<Violation>,
    buf: Vec<u8>,
}

impl<N: SimNode> World<N> {
    /// A world of `n` nodes built by `factory`, all at time zero, with no connections yet.
    pub fn new(seed: u64, n: usize, net: NetConfig, mut factory: Factory<N>) -> Self {
        assert!(
            n <= crate::node::NODES_MAX,
            "at most {} nodes",
            crate::node::NODES_MAX
        );
        let mut rng = Rng::from_seed(seed);
        let link_seed = rng.next_u64();
        let slots = (0..n)
            .map(|index| {
                let spec = NodeSpec {
                    index,
                    name: name_of(index),
                    addr: addr_of(index),
                    seed: rng.next_u64(),
                    now: Instant::ZERO,
                };
                Slot {
                    node: Some(factory(&spec)),
                    inc: 0,
                    conns: BTreeMap::new(),
                    timer_at_us: None,
                    wakes: (0, 0),
                    targets: Vec::new(),
                    stalled_until_us: 0,
                    next_port: EPHEMERAL_PORT_MIN,
                    stats: NodeStats::default(),
                }
            })
            .collect();
        let mut world = Self {
            seed,
            rng,
            link_seed,
            now_us: 0,
            seq: 0,
            net,
            factory,
            slots,
            queue: BinaryHeap::new(),
            streams: BTreeMap::new(),
            next_stream: 0,
            component: vec![0; n],
            cuts: BTreeSet::new(),
            datagram_cuts: BTreeSet::new(),
            link_mtu: BTreeMap::new(),
            nats: BTreeMap::new(),
            trace: mix(seed),
            deliveries: 0,
            violation: None,
            buf: vec![0; N::TRANSMIT_LEN_MAX],
        };
        for i in 0..n {
            world.drain(i);
        }
        world
    }

    /// The world seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Number of node slots (live or crashed).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True for a world without nodes.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Current virtual time.
    pub fn now(&self) -> Instant {
        Instant::from_micros(self.now_us)
    }

    /// The network model.
    pub fn net(&self) -> &NetConfig {
        &self.net
    }

    /// Changes the network model from now on (what is in flight keeps its schedule).
    pub fn set_net(&mut self, net: NetConfig) {
        self.net = net;
    }

    /// Hash over every delivery so far: `(time, src, dst, len, hash(bytes))`.
    pub fn trace_hash(&self) -> u64 {
        self.trace
    }

    /// Number of deliveries (stream segments and datagrams) so far.
    pub fn deliveries(&self) -> u64 {
        self.deliveries
    }

    /// Pending events in the queue.
    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    /// Streams the world still tracks.
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Node `i`, unless it is crashed.
    pub fn node(&self, i: usize) -> Option<&N> {
        self.slots[i].node.as_ref()
    }

    /// Node `i` mutably, unless it is crashed (views such as routes are computed lazily).
    pub fn node_mut(&mut self, i: usize) -> Option<&mut N> {
        self.slots[i].node.as_mut()
    }

    /// True when node `i` is running.
    pub fn is_alive(&self, i: usize) -> bool {
        self.slots[i].node.is_some()
    }

    /// Traffic counters of node `i`.
    pub fn stats(&self, i: usize) -> NodeStats {
        self.slots[i].stats
    }

    /// The nodes `i` was told to connect to.
    pub fn targets(&self, i: usize) -> &[usize] {
        &self.slots[i].targets
    }

    /// Number of open streams node `i` holds.
    pub fn open_streams(&self, i: usize) -> usize {
        self.slots[i].conns.len()
    }

    /// True when `a` and `b` are both alive, in one partition component, and their link is
    /// not cut.
    pub fn reachable(&self, a: usize, b: usize) -> bool {
        self.is_alive(a) && self.is_alive(b) && self.linked(a, b)
    }

    /// True when packets between `a` and `b` would get through (ignoring liveness).
    pub fn linked(&self, a: usize, b: usize) -> bool {
        a == b
            || (self.component[a] == self.component[b]
                && !self.cuts.contains(&(a.min(b), a.max(b))))
    }

    /// True when datagrams between `a` and `b` would get through (ignoring liveness and
    /// size): linked, and datagrams not cut.
    pub fn datagrams_linked(&self, a: usize, b: usize) -> bool {
        self.linked(a, b) && !self.datagram_cuts.contains(&(a.min(b), a.max(b)))
    }

    /// The IP MTU of the link between `a` and `b`.
    pub fn link_mtu(&self, a: usize, b: usize) -> u16 {
        let key = (a.min(b), a.max(b));
        self.link_mtu
            .get(&key)
            .copied()
            .unwrap_or(self.net.link_mtu_bytes)
    }

    /// The first invariant the network saw broken, if any.
    pub fn violation(&self) -> Option<&Violation> {
        self.violation.as_ref()
    }

    /// Draws from the world RNG (for scenarios, so one seed drives everything).
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    // ---- operator and fault injection ---------------------------------------------------

    /// Tells node `i` to keep a connection to node `j` (`Command::Connect`); remembered
    /// and re-issued when `i` restarts.
    pub fn connect(&mut self, i: usize, j: usize) {
        self.slots[i].targets.push(j);
        if self.slots[i].node.is_some() {
            let now = self.now();
            if let Some(node) = self.slots[i].node.as_mut() {
                node.handle_command(now, NodeCommand::Connect(addr_of(j)));
            }
            self.drain(i);
        }
    }

    /// Splits the network: node `i` only reaches nodes with the same `groups[i]`.
    pub fn partition(&mut self, groups: &[u32]) {
        assert_eq!(groups.len(), self.slots.len());
        self.component.copy_from_slice(groups);
    }

    /// Ends every partition.
    pub fn heal_partition(&mut self) {
        self.component.fill(0);
    }

    /// Cuts the link between `a` and `b`.
    pub fn cut(&mut self, a: usize, b: usize) {
        self.cuts.insert((a.min(b), a.max(b)));
    }

    /// Restores every cut link (and every link cut for datagrams only).
    pub fn restore_links(&mut self) {
        self.cuts.clear();
        self.datagram_cuts.clear();
    }

    /// Stops datagrams between `a` and `b`; their streams still work.
    pub fn cut_datagrams(&mut self, a: usize, b: usize) {
        self.datagram_cuts.insert((a.min(b), a.max(b)));
    }

    /// Sets the IP MTU of the link between `a` and `b`.
    pub fn set_link_mtu(&mut self, a: usize, b: usize, mtu_bytes: u16) {
        self.link_mtu.insert((a.min(b), a.max(b)), mtu_bytes);
    }

    /// Puts node `i` behind its own NAT box of type `ty` (public address
    /// [`nat_public_ip`]) whose idle mappings last `timeout_us`. From then on its dials go
    /// out from the box's address, nobody can dial it, and its datagrams leave through the
    /// box's mappings; datagrams reach it only through a mapping that lets them in.
    pub fn set_nat(&mut self, i: usize, ty: NatType, timeout_us: u64) {
        let seed = self.rng.next_u64();
        self.nats
            .insert(i, NatBox::new(ty, nat_public_ip(i), timeout_us, seed));
    }

    /// Node `i`'s NAT box, if it has one.
    pub fn nat(&self, i: usize) -> Option<&NatBox> {
        self.nats.get(&i)
    }

    /// Flushes node `i`'s NAT box: every mapping is forgotten (`conntrack -F`).
    pub fn nat_flush(&mut self, i: usize) {
        if let Some(b) = self.nats.get_mut(&i) {
            b.flush();
        }
    }

    /// Partition component of node `i`.
    pub fn component_of(&self, i: usize) -> u32 {
        self.component[i]
    }

    /// Crashes node `i`, losing all its state. With `graceful_kernel` the OS resets its
    /// streams (peers in reach see `StreamClosed`); otherwise the machine vanished and
    /// peers find out by timeout.
    pub fn crash(&mut self, i: usize, graceful_kernel: bool) {
        if self.slots[i].node.take().is_none() {
            return;
        }
        let slot = &mut self.slots[i];
        slot.inc += 1;
        slot.timer_at_us = None;
        slot.stalled_until_us = 0;
        let keys: Vec<u64> = std::mem::take(&mut slot.conns).into_values().collect();
        for key in keys {
            let Some(s) = self.streams.get_mut(&key) else {
                continue;
            };
            for e in &mut s.ends {
                if e.node == i {
                    e.open = false;
                }
            }
            let other = if s.ends[0].node == i { 1 } else { 0 };
            let o = s.ends[other];
            let broken = s.broken;
            if !o.open || o.node == i {
                self.streams.remove(&key);
            } else if graceful_kernel && o.conn.is_some() && !broken && self.linked(i, o.node) {
                let at = self.now_us + self.latency(i, o.node);
                self.schedule(
                    at,
                    Ev::Closed {
                        stream: key,
                        to: other,
                    },
                );
            }
        }
    }

    /// Starts a brand-new node in slot `i` (same name and address, new seed) and re-issues
    /// its connect targets.
    pub fn restart(&mut self, i: usize) {
        if self.slots[i].node.is_some() {
            return;
        }
        let spec = NodeSpec {
            index: i,
            name: name_of(i),
            addr: addr_of(i),
            seed: self.rng.next_u64(),
            now: self.now(),
        };
        let node = (self.factory)(&spec);
        self.slots[i].node = Some(node);
        let targets = self.slots[i].targets.clone();
        let now = self.now();
        for j in targets {
            if let Some(node) = self.slots[i].node.as_mut() {
                node.handle_command(now, NodeCommand::Connect(addr_of(j)));
            }
        }
        self.drain(i);
    }

    /// Freezes node `i` for `micros`: deliveries and timers wait (a GC pause, a descheduled
    /// VM, a clock that jumped).
    pub fn stall(&mut self, i: usize, micros: u64) {
        self.slots[i].stalled_until_us = self.now_us + micros;
    }

    /// Ends every stall now.
    pub fn unstall_all(&mut self) {
        for s in &mut self.slots {
            s.stalled_until_us = 0;
        }
    }

    /// Runs `f` on node `i` (unless it is crashed) at the current time, then sends what it
    /// wants sent, as after any other input: how a scenario hands a node input the network
    /// does not carry (a frame from a container on its bridge).
    pub fn poke(&mut self, i: usize, f: impl FnOnce(&mut N, Instant)) {
        let now = self.now();
        if let Some(n) = self.slots[i].node.as_mut() {
            f(n, now);
            self.drain(i);
        }
    }

    // ---- the clock ----------------------------------------------------------------------

    /// Runs every event up to and including `until`; then the clock reads `until`.
    pub fn run_until(&mut self, until: Instant) -> Result<(), Violation> {
        let until_us = until.total_micros();
        loop {
            if let Some(v) = &self.violation {
                return Err(v.clone());
            }
            let limit = QUEUE_EVENTS_PER_NODE_MAX * self.slots.len().max(1);
            if self.queue.len() > limit {
                self.violate(format!(
                    "event queue holds {} > {limit} events",
                    self.queue.len()
                ));
                continue;
            }
            match self.queue.peek() {
                Some(Reverse(s)) if s.at_us <= until_us => {}
                _ => break,
            }
            let Some(Reverse(s)) = self.queue.pop() else {
                break;
            };
            self.now_us = self.now_us.max(s.at_us);
            self.dispatch(s.ev);
        }
        self.now_us = self.now_us.max(until_us);
        match &self.violation {
            Some(v) => Err(v.clone()),
            None => Ok(()),
        }
    }

    fn violate(&mut self, what: String) {
        if self.violation.is_none() {
            self.violation = Some(Violation {
                time: self.now(),
                what,
            });
        }
    }

    fn schedule(&mut self, at_us: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            at_us,
            seq: self.seq,
            ev,
        }));
    }

    fn latency(&self, a: usize, b: usize) -> u64 {
        self.net.latency_us(self.link_seed, a, b)
    }

    fn jitter(&mut self) -> u64 {
        match self.net.jitter_us {
            0 => 0,
            j => self.rng.below(j + 1),
        }
    }

    fn target_of(&self, ev: &Ev) -> Option<usize> {
        match ev {
            Ev::Timer { node, .. } | Ev::DialFailed { node, .. } | Ev::Datagram { node, .. } => {
                Some(*node)
            }
            Ev::Accept { stream } => self.streams.get(stream).map(|s| s.ends[1].node),
            Ev::Opened { stream } => self.streams.get(stream).map(|s| s.ends[0].node),
            Ev::Data { stream, dir, .. } => self.streams.get(stream).map(|s| s.ends[1 - dir].node),
            Ev::Closed { stream, to } => self.streams.get(stream).map(|s| s.ends[*to].node),
        }
    }

    fn trace_delivery(&mut self, src: usize, dst: usize, bytes: &[u8]) {
        self.deliveries += 1;
        let fields = [
            self.now_us,
            src as u64,
            dst as u64,
            bytes.len() as u64,
            content_hash(bytes),
        ];
        for f in fields {
            self.trace = mix(self.trace ^ f);
        }
    }

    fn end_alive(&self, e: &End) -> bool {
        e.open && self.slots[e.node].inc == e.inc && self.slots[e.node].node.is_some()
    }

    fn dispatch(&mut self, ev: Ev) {
        // A stalled node receives nothing until its stall ends; requeueing in pop order
        // keeps each stream in order.
        if let Some(t) = self.target_of(&ev) {
            let until = self.slots[t].stalled_until_us;
            if until > self.now_us {
                self.schedule(until, ev);
                return;
            }
        }
        let now = self.now();
        match ev {
            Ev::Timer { node, inc, at_us } => {
                let slot = &mut self.slots[node];
                if slot.inc != inc || slot.timer_at_us != Some(at_us) {
                    return;
                }
                slot.timer_at_us = None;
                if slot.wakes.0 == self.now_us {
                    slot.wakes.1 += 1;
                } else {
                    slot.wakes = (self.now_us, 1);
                }
                if slot.wakes.1 > NODE_WAKES_PER_INSTANT_MAX {
                    self.violate(format!(
                        "node {node}: timer livelock (asks to wake at {now} over and over)"
                    ));
                    return;
                }
                let Some(n) = slot.node.as_mut() else { return };
                n.handle_timeout(now);
                self.drain(node);
            }
            Ev::Accept { stream } => self.on_accept(stream),
            Ev::Opened { stream } => {
                let Some(s) = self.streams.get(&stream) else {
                    return;
                };
                let e = s.ends[0];
                if !self.end_alive(&e) {
                    return;
                }
                let Some(conn) = e.conn else { return };
                if let Some(n) = self.slots[e.node].node.as_mut() {
                    n.handle_command(now, NodeCommand::StreamOpened(conn));
                }
                self.drain(e.node);
            }
            Ev::DialFailed { node, inc, conn } => {
                let slot = &mut self.slots[node];
                if slot.inc != inc {
                    return;
                }
                // Only if the node still thinks the dial is open.
                let Some(key) = slot.conns.remove(&conn) else {
                    return;
                };
                self.streams.remove(&key);
                if let Some(n) = self.slots[node].node.as_mut() {
                    n.handle_command(now, NodeCommand::StreamFailed(conn));
                }
                self.drain(node);
            }
            Ev::Data { stream, dir, bytes } => self.on_data(stream, dir, bytes),
            Ev::Closed { stream, to } => {
                let Some(s) = self.streams.get_mut(&stream) else {
                    return;
                };
                let e = s.ends[to];
                s.ends[to].open = false;
                let other_open = s.ends[1 - to].open;
                if !other_open {
                    self.streams.remove(&stream);
                }
                if self.slots[e.node].inc != e.inc || !e.open {
                    return;
                }
                let Some(conn) = e.conn else { return };
                self.slots[e.node].conns.remove(&conn);
                if let Some(n) = self.slots[e.node].node.as_mut() {
                    n.handle_command(now, NodeCommand::StreamClosed(conn));
                }
                self.drain(e.node);
            }
            Ev::Datagram {
                node,
                from,
                src,
                nat_port,
                bytes,
            } => {
                if !self.reachable(from, node) || !self.datagrams_linked(from, node) {
                    return;
                }
                if let Some(port) = nat_port {
                    let now_us = self.now_us;
                    let Some(b) = self.nats.get_mut(&node) else {
                        return;
                    };
                    if b.inbound(now_us, port, src).is_none() {
                        return;
                    }
                }
                self.trace_delivery(from, node, &bytes);
                if let Some(n) = self.slots[node].node.as_mut() {
                    n.handle_datagram(now, src, &bytes);
                }
                self.drain(node);
            }
        }
    }

    fn on_accept(&mut self, key: u64) {
        let now = self.now();
        let Some(s) = self.streams.get(&key) else {
            return;
        };
        let (dialer, acceptor) = (s.ends[0], s.ends[1]);
        if !self.end_alive(&dialer) {
            // The dialler gave up or died before the SYN landed: nothing to accept.
            self.streams.remove(&key);
            return;
        }
        let Some(dconn) = dialer.conn else { return };
        let reach = self.linked(dialer.node, acceptor.node);
        if !reach || !self.is_alive(acceptor.node) {
            // Refused (no listener: fast reset) or lost (partition: slow timeout).
            let back = if reach {
                self.now_us + self.latency(dialer.node, acceptor.node)
            } else {
                self.now_us + self.net.connect_timeout_us
            };
            let inc = dialer.inc;
            self.schedule(
                back,
                Ev::DialFailed {
                    node: dialer.node,
                    inc,
                    conn: dconn,
                },
            );
            return;
        }
        let slot = &mut self.slots[acceptor.node];
        if slot.conns.len() >= NODE_STREAMS_MAX {
            let what = format!(
                "node {}: more than {NODE_STREAMS_MAX} open streams",
                acceptor.node
            );
            self.violate(what);
            return;
        }
        let port = slot.next_port;
        slot.next_port = if port == u16::MAX {
            EPHEMERAL_PORT_MIN
        } else {
            port + 1
        };
        let ip = match self.nats.get(&dialer.node) {
            Some(b) => b.public_ip(),
            None => {
                let SocketAddr::V4(a) = addr_of(dialer.node) else {
                    unreachable!()
                };
                *a.ip()
            }
        };
        let remote = SocketAddr::V4(SocketAddrV4::new(ip, port));
        let inc = slot.inc;
        let Some(n) = slot.node.as_mut() else { return };
        let conn = n.accept_stream(now, remote);
        if slot.conns.insert(conn, key).is_some() {
            let what = format!(
                "node {}: accept_stream reused open conn id {conn}",
                acceptor.node
            );
            self.violate(what);
            return;
        }
        if let Some(s) = self.streams.get_mut(&key) {
            s.ends[1] = End {
                node: acceptor.node,
                inc,
                conn: Some(conn),
                open: true,
            };
        }
        let at = self.now_us + self.latency(dialer.node, acceptor.node);
        self.schedule(at, Ev::Opened { stream: key });
        self.drain(acceptor.node);
    }

    fn on_data(&mut self, key: u64, dir: usize, bytes: Vec<u8>) {
        let now = self.now();
        let Some(s) = self.streams.get_mut(&key) else {
            return;
        };
        s.inflight_bytes[dir] = s.inflight_bytes[dir].saturating_sub(bytes.len());
        let (src, dst) = (s.ends[dir], s.ends[1 - dir]);
        if s.broken {
            return;
        }
        if !(self.linked(src.node, dst.node)) {
            if let Some(s) = self.streams.get_mut(&key) {
                s.broken = true;
            }
            return;
        }
        if !self.end_alive(&dst) {
            return;
        }
        let Some(conn) = dst.conn else { return };
        self.trace_delivery(src.node, dst.node, &bytes);
        if let Some(n) = self.slots[dst.node].node.as_mut() {
            n.handle_stream_bytes(now, conn, &bytes);
        }
        self.drain(dst.node);
    }

    // ---- what a node asks for -----------------------------------------------------------

    /// Collects everything node `i` wants to do after an input, then re-arms its timer.
    /// Events first: a node may write to a stream in the same breath as it asks to open it.
    fn drain(&mut self, i: usize) {
        let mut buf = std::mem::take(&mut self.buf);
        let mut transmits = 0usize;
        let mut events = 0usize;
        loop {
            let mut progress = false;
            let now = self.now();
            while let Some(ev) = self.slots[i].node.as_mut().and_then(|n| n.poll_event()) {
                progress = true;
                events += 1;
                if events > NODE_EVENTS_PER_WAKE_MAX {
                    self.violate(format!(
                        "node {i}: more than {NODE_EVENTS_PER_WAKE_MAX} events in one wake-up"
                    ));
                    self.buf = buf;
                    return;
                }
                self.on_node_event(i, ev);
            }
            while let Some((dest, len)) = self.slots[i]
                .node
                .as_mut()
                .and_then(|n| n.poll_transmit(now, &mut buf))
            {
                progress = true;
                transmits += 1;
                if transmits > NODE_TRANSMITS_PER_WAKE_MAX {
                    self.violate(format!(
                        "node {i}: more than {NODE_TRANSMITS_PER_WAKE_MAX} transmits in one wake-up"
                    ));
                    self.buf = buf;
                    return;
                }
                if len > buf.len() {
                    self.violate(format!(
                        "node {i}: transmit length {len} > buffer {}",
                        buf.len()
                    ));
                    self.buf = buf;
                    return;
                }
                self.send(i, dest, &buf[..len]);
            }
            if !progress {
                break;
            }
        }
        self.buf = buf;
        let Some(node) = self.slots[i].node.as_ref() else {
            return;
        };
        if let Some(t) = node.poll_timeout() {
            let at = t.total_micros().max(self.now_us);
            if self.slots[i].timer_at_us != Some(at) {
                self.slots[i].timer_at_us = Some(at);
                let inc = self.slots[i].inc;
                self.schedule(
                    at,
                    Ev::Timer {
                        node: i,
                        inc,
                        at_us: at,
                    },
                );
            }
        } else {
            self.slots[i].timer_at_us = None;
        }
    }

    fn on_node_event(&mut self, i: usize, ev: NodeEvent) {
        match ev {
            NodeEvent::OpenStream { conn, addr } => {
                let n = self.slots.len();
                let inc = self.slots[i].inc;
                if self.slots[i].conns.len() >= NODE_STREAMS_MAX {
                    self.violate(format!(
                        "node {i}: more than {NODE_STREAMS_MAX} open streams"
                    ));
                    return;
                }
                let key = self.next_stream;
                self.next_stream += 1;
                if self.slots[i].conns.insert(conn, key).is_some() {
                    self.violate(format!("node {i}: OpenStream reused open conn id {conn}"));
                    return;
                }
                self.slots[i].stats.dials += 1;
                let Some(j) = index_of_addr(addr, n)
                    .filter(|_| addr.port() == crate::node::LISTEN_PORT)
                    .filter(|j| !self.nats.contains_key(j))
                else {
                    // (A node behind NAT has no address others can dial.)
                    // Nobody lives there: the dial hangs until the connect timeout.
                    let at = self.now_us + self.net.connect_timeout_us;
                    self.schedule(at, Ev::DialFailed { node: i, inc, conn });
                    return;
                };
                let at = self.now_us + self.latency(i, j) + self.jitter();
                let stream = Stream {
                    ends: [
                        End {
                            node: i,
                            inc,
                            conn: Some(conn),
                            open: true,
                        },
                        End {
                            node: j,
                            inc: 0,
                            conn: None,
                            open: true,
                        },
                    ],
                    broken: false,
                    last_delivery_us: [at, 0],
                    inflight_bytes: [0, 0],
                };
                self.streams.insert(key, stream);
                if self.linked(i, j) {
                    self.schedule(at, Ev::Accept { stream: key });
                } else {
                    if let Some(s) = self.streams.get_mut(&key) {
                        s.broken = true;
                    }
                    let at = self.now_us + self.net.connect_timeout_us;
                    self.schedule(at, Ev::DialFailed { node: i, inc, conn });
                }
            }
            NodeEvent::CloseStream { conn } => {
                let Some(key) = self.slots[i].conns.remove(&conn) else {
                    return;
                };
                let Some(s) = self.streams.get_mut(&key) else {
                    return;
                };
                let me = usize::from(s.ends[1].node == i && s.ends[1].conn == Some(conn));
                s.ends[me].open = false;
                let other = s.ends[1 - me];
                let last = s.last_delivery_us[me];
                let broken = s.broken;
                if !other.open {
                    self.streams.remove(&key);
                } else if !broken && other.conn.is_some() && self.linked(i, other.node) {
                    // FIN after the data already in flight.
                    let at = (self.now_us + self.latency(i, other.node)).max(last);
                    self.schedule(
                        at,
                        Ev::Closed {
                            stream: key,
                            to: 1 - me,
                        },
                    );
                } else if other.conn.is_none() && broken {
                    // Dialled into a partition and gave up: no accept will come.
                    self.streams.remove(&key);
                }
            }
            NodeEvent::Other => {}
        }
    }

    fn send(&mut self, i: usize, dest: Dest, bytes: &[u8]) {
        match dest {
            Dest::Stream(conn) => {
                let slot = &mut self.slots[i];
                slot.stats.stream_writes += 1;
                slot.stats.stream_bytes += bytes.len() as u64;
                let Some(&key) = slot.conns.get(&conn) else {
                    return; // closed under the node's feet; the write is lost like on a reset socket
                };
                let Some(s) = self.streams.get(&key) else {
                    return;
                };
                let me = usize::from(s.ends[1].node == i && s.ends[1].conn == Some(conn));
                let other = s.ends[1 - me].node;
                if s.broken {
                    return;
                }
                if !self.linked(i, other) {
                    if let Some(s) = self.streams.get_mut(&key) {
                        s.broken = true;
                    }
                    return;
                }
                let lat = self.latency(i, other);
                let mut at = self.now_us + lat + self.jitter();
                if self.net.stream_loss_ppm > 0 && self.rng.chance(self.net.stream_loss_ppm, PPM) {
                    at += self.net.retransmit_us + 2 * lat;
                }
                let split = bytes.len() > 1
                    && self.net.split_ppm > 0
                    && self.rng.chance(self.net.split_ppm, PPM);
                let cut = if split {
                    1 + self.rng.below(bytes.len() as u64 - 1) as usize
                } else {
                    bytes.len()
                };
                let Some(s) = self.streams.get_mut(&key) else {
                    return;
                };
                let at = at.max(s.last_delivery_us[me]);
                s.last_delivery_us[me] = at;
                s.inflight_bytes[me] += bytes.len();
                let inflight = s.inflight_bytes[me];
                if inflight > STREAM_INFLIGHT_BYTES_MAX {
                    self.violate(format!("node {i} -> {other}: {inflight} bytes in flight on one stream > {STREAM_INFLIGHT_BYTES_MAX}"));
                    return;
                }
                self.schedule(
                    at,
                    Ev::Data {
                        stream: key,
                        dir: me,
                        bytes: bytes[..cut].to_vec(),
                    },
                );
                if cut < bytes.len() {
                    self.schedule(
                        at,
                        Ev::Data {
                            stream: key,
                            dir: me,
                            bytes: bytes[cut..].to_vec(),
                        },
                    );
                }
            }
            Dest::Datagram(addr) => {
                let slot = &mut self.slots[i];
                slot.stats.datagrams += 1;
                slot.stats.datagram_bytes += bytes.len() as u64;
                // Through the sender's NAT (if any) to a public node or a NAT's public port.
                let (j, nat_port) = match index_of_addr(addr, self.slots.len()) {
                    Some(j) if !self.nats.contains_key(&j) => (j, None),
                    Some(_) => return,
                    None => match index_of_nat_ip(addr, self.slots.len()) {
                        Some(j) if self.nats.contains_key(&j) => (j, Some(addr.port())),
                        _ => return,
                    },
                };
                let now_us = self.now_us;
                let src = match self.nats.get_mut(&i) {
                    Some(b) => b.outbound(now_us, crate::node::LISTEN_PORT, addr),
                    None => addr_of(i),
                };
                if !self.datagrams_linked(i, j) {
                    return;
                }
                if !datagram_fits(bytes.len(), self.link_mtu(i, j)) {
                    self.slots[i].stats.datagrams_over_mtu += 1;
                    return;
                }
                let net = self.net;
                if net.datagram_loss_ppm > 0 && self.rng.chance(net.datagram_loss_ppm, PPM) {
                    return;
                }
                let mut at = self.now_us + self.latency(i, j) + self.jitter();
                if net.datagram_reorder_ppm > 0 && self.rng.chance(net.datagram_reorder_ppm, PPM) {
                    at += self.rng.below(net.reorder_us + 1);
                }
                self.schedule(
                    at,
                    Ev::Datagram {
                        node: j,
                        from: i,
                        src,
                        nat_port,
                        bytes: bytes.to_vec(),
                    },
                );
                if net.datagram_dup_ppm > 0 && self.rng.chance(net.datagram_dup_ppm, PPM) {
                    let again = at + self.jitter();
                    self.schedule(
                        again,
                        Ev::Datagram {
                            node: j,
                            from: i,
                            src,
                            nat_port,
                            bytes: bytes.to_vec(),
                        },
                    );
                }
            }
        }
    }
}

/// The public address of node `i`'s NAT box: `11.(i>>8).(i&255).1`.
pub fn nat_public_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(11, (i >> 8) as u8, (i & 255) as u8, 1)
}

/// The node whose NAT box has the IP of `addr` (any port), if it is one of ours.
pub fn index_of_nat_ip(addr: SocketAddr, n: usize) -> Option<usize> {
    let SocketAddr::V4(v4) = addr else {
        return None;
    };
    let o = v4.ip().octets();
    if o[0] != 11 || o[3] != 1 {
        return None;
    }
    let i = (usize::from(o[1]) << 8) | usize::from(o[2]);
    (i < n).then_some(i)
}
