//! A toy link-state node, small enough to trust, used to test the virtual network and the
//! invariant checker before (and independently of) the real router.
//!
//! Protocol: each stream carries `[len u32][tag u8][body]` frames: a hello (our name), a
//! heartbeat, or a gossip of whole topology entries `(name, version, neighbours)`. A node
//! owns its entry, bumps its version when its neighbour set changes, floods its whole
//! topology on change and every [`TOY_GOSSIP_INTERVAL_US`], drops peers it cannot reach,
//! redials its targets, and closes a stream silent for [`TOY_HEARTBEAT_TIMEOUT_US`].
//! [`ToyBug`] plants known bugs so tests prove the checker catches them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;

use weft_core::peer::PeerName;
use weft_core::time::Instant;

use crate::net::mix;
use crate::node::{ConnId, Dest, GossipStats, NodeCommand, NodeEvent, NodeSpec, SimNode};

/// Heartbeat period.
pub const TOY_HEARTBEAT_INTERVAL_US: u64 = 200_000;
/// A stream silent this long is closed.
pub const TOY_HEARTBEAT_TIMEOUT_US: u64 = 1_500_000;
/// Periodic full gossip.
pub const TOY_GOSSIP_INTERVAL_US: u64 = 1_000_000;
/// Redial delay after a failed or closed connection.
pub const TOY_RETRY_US: u64 = 500_000;
/// Largest frame the toy accepts.
pub const TOY_FRAME_LEN_MAX: usize = 1 << 20;

const TAG_HELLO: u8 = 0;
const TAG_HEARTBEAT: u8 = 1;
const TAG_GOSSIP: u8 = 2;

/// Deliberate bugs, to show the invariant checker fails on them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ToyBug {
    /// No bug.
    #[default]
    None,
    /// `next_hop` answers with the lowest-named neighbour, whatever the destination.
    RouteLoop,
    /// `broadcast_children` relays to every neighbour.
    BroadcastFlood,
    /// Unreachable peers are never dropped from the topology.
    NoForget,
    /// Never moves its heartbeat timer on, so it asks to be woken at the same instant
    /// forever (a timer livelock).
    StuckTimer,
}

#[derive(Clone, Debug)]
struct Entry {
    version: u64,
    neighbours: BTreeSet<PeerName>,
}

#[derive(Debug)]
struct Conn {
    peer: Option<PeerName>,
    target: Option<SocketAddr>,
    rx: Vec<u8>,
    last_rx_us: u64,
}

/// The toy node. See the module docs.
#[derive(Debug)]
pub struct ToyNode {
    name: PeerName,
    bug: ToyBug,
    now_us: u64,
    next_conn: ConnId,
    conns: BTreeMap<ConnId, Conn>,
    /// Targets and the conn currently dialled for each (None: waiting to retry).
    targets: BTreeMap<SocketAddr, Option<ConnId>>,
    retry_at_us: BTreeMap<SocketAddr, u64>,
    topo: BTreeMap<PeerName, Entry>,
    out: VecDeque<(Dest, Vec<u8>)>,
    events: VecDeque<NodeEvent>,
    next_heartbeat_us: u64,
    next_gossip_us: u64,
    routes: Option<BTreeMap<PeerName, PeerName>>,
    trees: BTreeMap<PeerName, Vec<PeerName>>,
    stats: GossipStats,
    /// Datagrams received (the toy pings each neighbour once per gossip round).
    pub pings_received: u64,
}

impl ToyNode {
    /// A toy node for `spec`, with an optional planted bug.
    pub fn new(spec: &NodeSpec, bug: ToyBug) -> Self {
        let now_us = spec.now.total_micros();
        let mut topo = BTreeMap::new();
        topo.insert(
            spec.name,
            Entry {
                version: 1,
                neighbours: BTreeSet::new(),
            },
        );
        // Spread timers by seed so nodes do not tick in lockstep.
        let offset = mix(spec.seed) % TOY_HEARTBEAT_INTERVAL_US;
        Self {
            name: spec.name,
            bug,
            now_us,
            next_conn: 1,
            conns: BTreeMap::new(),
            targets: BTreeMap::new(),
            retry_at_us: BTreeMap::new(),
            topo,
            out: VecDeque::new(),
            events: VecDeque::new(),
            next_heartbeat_us: now_us + offset,
            next_gossip_us: now_us + offset + TOY_GOSSIP_INTERVAL_US,
            routes: None,
            trees: BTreeMap::new(),
            stats: GossipStats::default(),
            pings_received: 0,
        }
    }

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut f = Vec::with_capacity(5 + body.len());
        f.extend_from_slice(&(1 + body.len() as u32).to_be_bytes());
        f.push(tag);
        f.extend_from_slice(body);
        f
    }

    fn new_conn(&mut self, target: Option<SocketAddr>) -> ConnId {
        let id = self.next_conn;
        self.next_conn += 1;
        let conn = Conn {
            peer: None,
            target,
            rx: Vec::new(),
            last_rx_us: self.now_us,
        };
        self.conns.insert(id, conn);
        let hello = Self::frame(TAG_HELLO, &self.name.as_u64().to_be_bytes());
        self.out.push_back((Dest::Stream(id), hello));
        id
    }

    fn dial(&mut self, addr: SocketAddr) {
        let id = self.new_conn(Some(addr));
        self.targets.insert(addr, Some(id));
        self.events
            .push_back(NodeEvent::OpenStream { conn: id, addr });
    }

    /// Forgets a stream (closed by us when `close`, or by the network).
    fn drop_conn(&mut self, id: ConnId, close: bool) {
        let Some(c) = self.conns.remove(&id) else {
            return;
        };
        if close {
            self.events.push_back(NodeEvent::CloseStream { conn: id });
        }
        if let Some(t) = c.target
            && self.targets.get(&t) == Some(&Some(id))
        {
            self.targets.insert(t, None);
            self.retry_at_us.insert(t, self.now_us + TOY_RETRY_US);
        }
        if c.peer.is_some() {
            self.refresh_self();
        }
    }

    fn refresh_self(&mut self) {
        let neighbours: BTreeSet<PeerName> = self.conns.values().filter_map(|c| c.peer).collect();
        let before = self.topology_digest();
        let me = self.topo.get_mut(&self.name).expect("own entry");
        if me.neighbours != neighbours {
            me.neighbours = neighbours;
            me.version += 1;
            self.changed(before);
        }
    }

    /// After a local change or a merge: drop unreachable peers, and gossip only if the
    /// topology really differs from `before` (else two nodes could ping-pong forever).
    fn changed(&mut self, before: u64) {
        self.routes = None;
        self.trees.clear();
        if self.bug != ToyBug::NoForget {
            let reach: BTreeSet<PeerName> = self.bfs(self.name).keys().copied().collect();
            self.topo.retain(|n, _| reach.contains(n));
        }
        if self.topology_digest() != before {
            self.gossip_all();
        }
    }

    fn gossip_all(&mut self) {
        let mut body = Vec::new();
        body.extend_from_slice(&(self.topo.len() as u32).to_be_bytes());
        for (name, e) in &self.topo {
            body.extend_from_slice(&name.as_u64().to_be_bytes());
            body.extend_from_slice(&e.version.to_be_bytes());
            body.extend_from_slice(&(e.neighbours.len() as u32).to_be_bytes());
            for n in &e.neighbours {
                body.extend_from_slice(&n.as_u64().to_be_bytes());
            }
        }
        let f = Self::frame(TAG_GOSSIP, &body);
        let ids: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|c| c.1.peer.is_some())
            .map(|c| *c.0)
            .collect();
        for id in ids {
            self.stats.msgs += 1;
            self.stats.bytes += f.len() as u64;
            self.out.push_back((Dest::Stream(id), f.clone()));
        }
    }

    fn merge(&mut self, body: &[u8]) -> Option<()> {
        let mut r = body;
        let mut take = |k: usize| -> Option<u64> {
            let (h, t) = r.split_at_checked(k)?;
            r = t;
            Some(h.iter().fold(0u64, |a, b| (a << 8) | u64::from(*b)))
        };
        let count = take(4)?;
        let before = self.topology_digest();
        let mut changed = false;
        for _ in 0..count.min(1 << 16) {
            let name = PeerName::from_u64(take(8)?);
            let version = take(8)?;
            let nn = take(4)?.min(1 << 16);
            let mut neighbours = BTreeSet::new();
            for _ in 0..nn {
                neighbours.insert(PeerName::from_u64(take(8)?));
            }
            if name == self.name {
                let me = self.topo.get_mut(&self.name).expect("own entry");
                // An echo of our own entry is fine; a newer or different one is an
                // older incarnation's: outbid it.
                if version > me.version || (version == me.version && neighbours != me.neighbours) {
                    me.version = version + 1;
                    changed = true;
                }
                continue;
            }
            let newer = self.topo.get(&name).is_none_or(|e| version > e.version);
            if newer {
                self.topo.insert(
                    name,
                    Entry {
                        version,
                        neighbours,
                    },
                );
                changed = true;
            }
        }
        if changed {
            self.changed(before);
        }
        Some(())
    }

    fn on_frame(&mut self, id: ConnId, tag: u8, body: &[u8]) {
        match tag {
            TAG_HELLO => {
                let Some(b) = body.get(..8) else {
                    return self.drop_conn(id, true);
                };
                let peer = PeerName::from_u64(u64::from_be_bytes(b.try_into().unwrap_or_default()));
                if peer == self.name {
                    return self.drop_conn(id, true);
                }
                if let Some(c) = self.conns.get_mut(&id) {
                    c.peer = Some(peer);
                }
                self.refresh_self();
                // The new neighbour may have heard nothing from us yet.
                self.gossip_all();
            }
            TAG_HEARTBEAT => {}
            TAG_GOSSIP => {
                if self.merge(body).is_none() {
                    self.drop_conn(id, true);
                }
            }
            _ => self.drop_conn(id, true),
        }
    }

    /// BFS over edges both ends announce, neighbours in name order: `node -> parent`.
    fn bfs(&self, root: PeerName) -> BTreeMap<PeerName, PeerName> {
        let mut parent = BTreeMap::new();
        parent.insert(root, root);
        let mut q = VecDeque::from([root]);
        while let Some(x) = q.pop_front() {
            let Some(e) = self.topo.get(&x) else { continue };
            for &y in &e.neighbours {
                let mutual = self.topo.get(&y).is_some_and(|f| f.neighbours.contains(&x));
                if mutual && !parent.contains_key(&y) {
                    parent.insert(y, x);
                    q.push_back(y);
                }
            }
        }
        parent
    }
}

impl SimNode for ToyNode {
    const TRANSMIT_LEN_MAX: usize = TOY_FRAME_LEN_MAX + 5;

    fn name(&self) -> PeerName {
        self.name
    }

    fn accept_stream(&mut self, now: Instant, _remote: SocketAddr) -> ConnId {
        self.now_us = now.total_micros();
        self.new_conn(None)
    }

    fn handle_stream_bytes(&mut self, now: Instant, conn: ConnId, bytes: &[u8]) {
        self.now_us = now.total_micros();
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.last_rx_us = self.now_us;
        c.rx.extend_from_slice(bytes);
        loop {
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            let Some(h) = c.rx.get(..4) else { return };
            let len = u32::from_be_bytes(h.try_into().unwrap_or_default()) as usize;
            if len == 0 || len > TOY_FRAME_LEN_MAX {
                return self.drop_conn(conn, true);
            }
            if c.rx.len() < 4 + len {
                return;
            }
            let frame: Vec<u8> = c.rx.drain(..4 + len).skip(4).collect();
            self.on_frame(conn, frame[0], &frame[1..]);
        }
    }

    fn handle_datagram(&mut self, now: Instant, _from: SocketAddr, _bytes: &[u8]) {
        self.now_us = now.total_micros();
        self.pings_received += 1;
    }

    fn handle_command(&mut self, now: Instant, cmd: NodeCommand) {
        self.now_us = now.total_micros();
        match cmd {
            NodeCommand::Connect(addr) => {
                if !self.targets.contains_key(&addr) {
                    self.dial(addr);
                }
            }
            NodeCommand::StreamOpened(_) => {}
            NodeCommand::StreamFailed(id) | NodeCommand::StreamClosed(id) => {
                self.drop_conn(id, false)
            }
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.now_us = now.total_micros();
        let due: Vec<SocketAddr> = self
            .retry_at_us
            .iter()
            .filter(|(_, t)| **t <= self.now_us)
            .map(|(a, _)| *a)
            .collect();
        for a in due {
            self.retry_at_us.remove(&a);
            if self.targets.get(&a) == Some(&None) {
                self.dial(a);
            }
        }
        if self.bug == ToyBug::StuckTimer {
            return;
        }
        if self.now_us >= self.next_heartbeat_us {
            self.next_heartbeat_us = self.now_us + TOY_HEARTBEAT_INTERVAL_US;
            let dead: Vec<ConnId> = self
                .conns
                .iter()
                .filter(|(_, c)| c.last_rx_us + TOY_HEARTBEAT_TIMEOUT_US <= self.now_us)
                .map(|(id, _)| *id)
                .collect();
            for id in dead {
                self.drop_conn(id, true);
            }
            let hb = Self::frame(TAG_HEARTBEAT, &[]);
            for id in self.conns.keys() {
                self.out.push_back((Dest::Stream(*id), hb.clone()));
            }
        }
        if self.now_us >= self.next_gossip_us {
            self.next_gossip_us = self.now_us + TOY_GOSSIP_INTERVAL_US;
            self.gossip_all();
            let peers: Vec<PeerName> = self.conns.values().filter_map(|c| c.peer).collect();
            for p in peers {
                if let Some(i) = crate::node::index_of_name(p, crate::node::NODES_MAX) {
                    self.out
                        .push_back((Dest::Datagram(crate::node::addr_of(i)), b"ping".to_vec()));
                }
            }
        }
    }

    fn poll_transmit(&mut self, _now: Instant, buf: &mut [u8]) -> Option<(Dest, usize)> {
        let (dest, bytes) = self.out.pop_front()?;
        let len = bytes.len().min(buf.len());
        buf[..len].copy_from_slice(&bytes[..len]);
        Some((dest, len))
    }

    fn poll_event(&mut self) -> Option<NodeEvent> {
        self.events.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.next_heartbeat_us.min(self.next_gossip_us);
        if let Some(r) = self.retry_at_us.values().min() {
            t = t.min(*r);
        }
        Some(Instant::from_micros(t))
    }

    fn topology_len(&self) -> usize {
        self.topo.len()
    }

    fn topology_digest(&self) -> u64 {
        let mut h = 0u64;
        for (name, e) in &self.topo {
            h = mix(h ^ name.as_u64());
            h = mix(h ^ e.version);
        }
        h
    }

    fn topology_peers(&self) -> Vec<PeerName> {
        self.topo.keys().copied().collect()
    }

    fn next_hop(&mut self, dest: PeerName) -> Option<PeerName> {
        if self.bug == ToyBug::RouteLoop {
            return self.topo.get(&self.name)?.neighbours.first().copied();
        }
        if self.routes.is_none() {
            let parent = self.bfs(self.name);
            let mut hops = BTreeMap::new();
            for &n in parent.keys() {
                let mut x = n;
                while parent[&x] != self.name && x != self.name {
                    x = parent[&x];
                }
                if n != self.name {
                    hops.insert(n, x);
                }
            }
            self.routes = Some(hops);
        }
        self.routes.as_ref()?.get(&dest).copied()
    }

    fn broadcast_children(&mut self, source: PeerName) -> Vec<PeerName> {
        if self.bug == ToyBug::BroadcastFlood {
            return self.topo[&self.name].neighbours.iter().copied().collect();
        }
        if let Some(c) = self.trees.get(&source) {
            return c.clone();
        }
        let parent = self.bfs(source);
        let kids: Vec<PeerName> = parent
            .iter()
            .filter(|(n, p)| **p == self.name && **n != source)
            .map(|(n, _)| *n)
            .collect();
        self.trees.insert(source, kids.clone());
        kids
    }

    fn gossip_stats(&self) -> Option<GossipStats> {
        Some(self.stats)
    }
}

/// A factory building correct toy nodes.
pub fn toy_factory(bug: ToyBug) -> crate::world::Factory<ToyNode> {
    Box::new(move |spec| ToyNode::new(spec, bug))
}
