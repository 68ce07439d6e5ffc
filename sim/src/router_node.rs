//! [`SimNode`] for the real `weft_core::router::Router`, plus the router settings the
//! simulator uses (faster timers than a deployment, so runs stay short in virtual time).
//! With [`crate::sleeve_node::sleeve_factory`] each router has the sleeve datapath beside
//! it, as on a host; without, it is the control plane alone (no UDP port).

use std::net::SocketAddr;
use std::sync::Arc;

use weft_core::conn::ConnId as RouterConnId;
use weft_core::crypto::{ChaChaKeyRng, Psk};
use weft_core::peer::PeerName;
use weft_core::punch::PunchConfig;
use weft_core::punch::wire::PunchDatagram;
use weft_core::router::{Command, Config, Destination, Event, Router, TRANSMIT_LEN_MIN};
use weft_core::time::{Duration, Instant};

use crate::intern::Interner;
use crate::node::{
    ConnId, Dest, GossipStats, LISTEN_PORT, NodeCommand, NodeEvent, NodeSpec, SimNode,
};
use crate::scenario::Timing;
use crate::sleeve_node::SleeveSide;
use crate::world::Factory;

/// The router knobs a simulation sets; everything else keeps `Config::new` defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterProfile {
    /// Full-state gossip period.
    pub gossip_interval: Duration,
    /// Heartbeat period.
    pub heartbeat_interval: Duration,
    /// Silence after which a connection is dead.
    pub heartbeat_timeout: Duration,
    /// Handshake deadline.
    pub handshake_timeout: Duration,
    /// First reconnect delay.
    pub reconnect_base: Duration,
    /// Longest reconnect delay.
    pub reconnect_max: Duration,
    /// How long an unreachable peer stays in the topology.
    pub peer_gc_grace: Duration,
    /// Connection limit.
    pub conn_limit: usize,
    /// Whether routers dial peers learned from gossip.
    pub discovery: bool,
    /// Shared secret (SPAKE2 on every connection, everything sealed).
    pub psk: Option<Psk>,
    /// Hole punching (off unless a scenario turns it on).
    pub punch: PunchConfig,
}

impl RouterProfile {
    /// Fast timers for simulation: 1 s heartbeats (dead after 4 s), 5 s gossip, 10 s
    /// handshakes (the default; longer than any simulated connect timeout), reconnect
    /// 0.5 s doubling to 5 s, dead peers gone after 5 s, no discovery (degree stays ~D).
    pub fn sim() -> Self {
        Self {
            gossip_interval: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(4),
            // Longer than any simulated connect timeout: see the router_timers test for
            // what a dial outliving the handshake deadline does to the timer.
            handshake_timeout: Duration::from_secs(10),
            reconnect_base: Duration::from_millis(500),
            reconnect_max: Duration::from_secs(5),
            peer_gc_grace: Duration::from_secs(5),
            conn_limit: 64,
            discovery: false,
            psk: None,
            punch: PunchConfig::off(),
        }
    }

    /// The router config for one node.
    pub fn config(&self, spec: &NodeSpec) -> Config {
        let mut c = Config::new(spec.name, LISTEN_PORT);
        c.nickname = format!("sim{}", spec.index);
        c.gossip_interval = self.gossip_interval;
        c.heartbeat_interval = self.heartbeat_interval;
        c.heartbeat_timeout = self.heartbeat_timeout;
        c.handshake_timeout = self.handshake_timeout;
        c.reconnect_base = self.reconnect_base;
        c.reconnect_max = self.reconnect_max;
        c.peer_gc_grace = self.peer_gc_grace;
        c.conn_limit = self.conn_limit;
        c.discovery = self.discovery;
        c.psk.clone_from(&self.psk);
        c.punch = self.punch;
        c
    }

    /// How to wait for convergence with these timers: digests must hold still past a
    /// heartbeat timeout; give up after `deadline`.
    pub fn timing(&self, deadline: Duration) -> Timing {
        Timing {
            check_interval: Duration::from_millis(10),
            settle: self.heartbeat_timeout + self.heartbeat_interval,
            deadline,
        }
    }

    /// A factory building routers with this profile, all sharing one [`Interner`] (one
    /// copy of each peer entry for the whole world).
    pub fn factory(self) -> Factory<RouterNode> {
        let interner = Arc::new(Interner::new());
        Box::new(move |spec| {
            let mut node = RouterNode::new(&self, spec);
            node.router.set_entry_interner(interner.clone());
            node
        })
    }
}

/// A router for `spec`: its public stream and its key stream both come from the node's
/// seed (the key stream through [`ChaChaKeyRng::for_simulation`], never the same bits), so
/// a seed replays a run exactly, secrets included.
pub fn new_router(config: Config, spec: &NodeSpec) -> Router {
    let keys = Box::new(ChaChaKeyRng::for_simulation(spec.seed));
    Router::new(config, spec.seed, keys, spec.now)
}

/// A router in the simulator, with or without the sleeve datapath.
pub struct RouterNode {
    router: Router,
    sleeve: Option<SleeveSide>,
    /// Datagrams that arrived at a router without a sleeve.
    stray_datagrams: u64,
}

impl RouterNode {
    /// A fresh router for `spec`.
    pub fn new(profile: &RouterProfile, spec: &NodeSpec) -> Self {
        Self {
            router: new_router(profile.config(spec), spec),
            sleeve: None,
            stray_datagrams: 0,
        }
    }

    /// A fresh router for `spec` with the sleeve datapath `sleeve` beside it.
    pub fn with_sleeve(profile: &RouterProfile, spec: &NodeSpec, sleeve: SleeveSide) -> Self {
        Self {
            sleeve: Some(sleeve),
            ..Self::new(profile, spec)
        }
    }

    /// The sleeve datapath, if the node has one.
    pub fn sleeve(&self) -> Option<&SleeveSide> {
        self.sleeve.as_ref()
    }

    /// Hands the sleeve a frame from the local container, as the TAP would (ignored
    /// without a sleeve). Call through [`crate::world::World::poke`].
    pub fn bridge_frame(&mut self, now: Instant, frame: &[u8]) {
        if let Some(s) = self.sleeve.as_mut() {
            s.bridge_frame(now, frame);
        }
    }

    /// Datagrams that reached this node when it had no sleeve to take them.
    pub fn stray_datagrams(&self) -> u64 {
        self.stray_datagrams
    }

    /// Brings the sleeve (if any) in step with the router after an input.
    fn sync(&mut self, now: Instant) {
        if let Some(s) = self.sleeve.as_mut() {
            s.sync(now, &mut self.router);
        }
    }

    /// The router itself, for test assertions.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// The router itself, mutably.
    pub fn router_mut(&mut self) -> &mut Router {
        &mut self.router
    }
}

impl SimNode for RouterNode {
    const TRANSMIT_LEN_MAX: usize = TRANSMIT_LEN_MIN;

    fn name(&self) -> PeerName {
        self.router.name()
    }

    fn accept_stream(&mut self, now: Instant, remote: SocketAddr) -> ConnId {
        let id = self.router.accept_stream(now, remote).0;
        self.sync(now);
        id
    }

    fn handle_stream_bytes(&mut self, now: Instant, conn: ConnId, bytes: &[u8]) {
        self.router
            .handle_stream_bytes(now, RouterConnId(conn), bytes);
        self.sync(now);
    }

    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        // One UDP port, two readers, as on a host: punch datagrams go to the router.
        if PunchDatagram::is_punch(bytes) {
            self.router.handle_datagram(now, from, bytes);
            self.sync(now);
            return;
        }
        match self.sleeve.as_mut() {
            Some(s) => s.handle_datagram(now, from, bytes),
            // The control plane alone has no UDP port: the datagram meets a closed port.
            None => self.stray_datagrams += 1,
        }
    }

    fn handle_command(&mut self, now: Instant, cmd: NodeCommand) {
        let cmd = match cmd {
            NodeCommand::Connect(a) => Command::Connect(a),
            NodeCommand::StreamOpened(c) => Command::StreamOpened(RouterConnId(c)),
            NodeCommand::StreamFailed(c) => Command::StreamFailed(RouterConnId(c)),
            NodeCommand::StreamClosed(c) => Command::StreamClosed(RouterConnId(c)),
        };
        self.router.handle_command(now, cmd);
        self.sync(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        let Some(s) = self.sleeve.as_mut() else {
            self.router.handle_timeout(now);
            return;
        };
        // Each on its own deadline, as the host's router task and datapath thread.
        if self.router.poll_timeout().is_some_and(|t| t <= now) {
            self.router.handle_timeout(now);
            s.sync(now, &mut self.router);
        }
        s.handle_timeout(now);
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<(Dest, usize)> {
        if let Some(t) = self.router.poll_transmit(now, buf) {
            return Some(match t.destination {
                Destination::Stream(c) => (Dest::Stream(c.0), t.len),
                Destination::Datagram(to) => (Dest::Datagram(to), t.len),
            });
        }
        let s = self.sleeve.as_mut()?;
        // Sending may have dropped a connection.
        s.sync(now, &mut self.router);
        s.poll_transmit(buf)
    }

    fn poll_event(&mut self) -> Option<NodeEvent> {
        Some(match self.router.poll_event()? {
            Event::OpenStream { conn, addr } => NodeEvent::OpenStream { conn: conn.0, addr },
            Event::CloseStream { conn } => NodeEvent::CloseStream { conn: conn.0 },
            _ => NodeEvent::Other,
        })
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let r = self.router.poll_timeout();
        match self.sleeve.as_ref().and_then(SleeveSide::poll_timeout) {
            Some(s) => Some(r.map_or(s, |r| r.min(s))),
            None => r,
        }
    }

    fn topology_len(&self) -> usize {
        self.router.topology().len()
    }

    fn topology_digest(&self) -> u64 {
        // O(1) and covers every field of every entry (the (name, uid, version) hash of
        // `Topology::digest` is O(N): N routers checked every 10 ms was O(N²) per check).
        self.router.topology().sync_digest().1
    }

    fn topology_peers(&self) -> Vec<PeerName> {
        self.router.topology().names().collect()
    }

    fn next_hop(&mut self, dest: PeerName) -> Option<PeerName> {
        self.router.next_hop(dest)
    }

    fn broadcast_children(&mut self, source: PeerName) -> Vec<PeerName> {
        self.router.broadcast_children(source)
    }

    fn gossip_stats(&self) -> Option<GossipStats> {
        let s = self.router.stats();
        Some(GossipStats {
            msgs: s.gossip_msgs_sent,
            bytes: s.gossip_bytes_sent,
        })
    }
}

/// The router profile an explore seed runs with: the sim profile, with discovery and a
/// password switched on for some seeds.
pub fn explore_profile(seed: u64) -> RouterProfile {
    let bits = crate::net::mix(seed ^ 0x7072_6f66);
    let mut p = RouterProfile::sim();
    p.discovery = bits & 1 == 1;
    if bits & 2 == 2 {
        p.psk = Some(Psk::from_password(b"sim-secret"));
    }
    p
}

/// Runs explore seed `seed` against real routers.
pub fn explore_router(
    seed: u64,
) -> Result<crate::scenario::ExploreReport, crate::scenario::Failure> {
    let p = explore_profile(seed);
    let timing = p.timing(Duration::from_secs(180));
    crate::scenario::explore_one(seed, p.factory(), timing)
}
