//! IPAM in the simulator: a router node that persists its IPAM state the way the host
//! must (after every call that changed it, before its next transmit) and restores it on
//! restart, runs a seeded allocate/free workload of its own, and the cross-router checks
//! (no address held twice, rings identical, everything allocatable).
//!
//! The workload lives in the node (driven by its own timer) so operations go out through
//! the world's normal wake-ups; the test steers it through a shared [`Workload`] mode.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;

use weft_core::conn::ConnId as RouterConnId;
use weft_core::ipam::{Cidr, ContainerId, InitMode, IpamError, IpamEvent};
use weft_core::peer::PeerName;
use weft_core::rng::Rng;
use weft_core::router::{Command, Destination, Event, Router, TRANSMIT_LEN_MIN};
use weft_core::time::{Duration, Instant};

use crate::node::{ConnId, Dest, NodeCommand, NodeEvent, NodeSpec, SimNode};
use crate::router_node::RouterProfile;
use crate::world::{Factory, World};

/// Most addresses one node's workload keeps at once (it frees before going higher).
pub const WORKLOAD_CONTAINERS_MAX: usize = 64;

/// What every node's workload does right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Nothing.
    Idle,
    /// Allocates and frees at random (60 % allocate while under the cap).
    Random,
    /// Allocates only, retrying after `RangeFull`, until the range is used up.
    Fill,
}

/// Shared between the test and every node: persisted IPAM files, the workload mode and
/// answer counters.
#[derive(Debug)]
pub struct Shared {
    /// Persisted export per node index (what the host writes to disk).
    pub files: RefCell<BTreeMap<usize, Vec<u8>>>,
    /// The current workload.
    pub mode: Cell<Workload>,
    /// Allocation answers received, and failures by kind.
    pub answers: RefCell<BTreeMap<String, u64>>,
}

/// A router with persisted IPAM and a workload.
pub struct IpamNode {
    router: Router,
    index: usize,
    shared: Rc<Shared>,
    persisted_gen: u64,
    rng: Rng,
    next_op_at: Instant,
    op_interval: Duration,
    next_container: u64,
    incarnation: u64,
    /// Datagrams that arrived anyway (nothing should send any).
    stray_datagrams: u64,
}

/// The settings for an IPAM simulation: the sim router profile with `range` (also the
/// default subnet) and `init`.
pub fn ipam_factory(
    profile: RouterProfile,
    range: Cidr,
    init: InitMode,
    op_interval: Duration,
    shared: Rc<Shared>,
) -> Factory<IpamNode> {
    Box::new(move |spec: &NodeSpec| {
        let mut config = profile.config(spec);
        config.ipam.range = range;
        config.ipam.default_subnet = range;
        config.ipam.init = init;
        let mut router = crate::router_node::new_router(config, spec);
        if let Some(bytes) = shared.files.borrow().get(&spec.index) {
            router
                .ipam_restore(spec.now, bytes)
                .unwrap_or_else(|e| panic!("node {} restores its IPAM file: {e}", spec.index));
        }
        let mut rng = Rng::from_seed(spec.seed ^ 0x1ba3);
        let first = Duration::from_micros(rng.below(op_interval.total_micros().max(1)));
        let mut node = IpamNode {
            persisted_gen: u64::MAX,
            router,
            index: spec.index,
            shared: Rc::clone(&shared),
            rng,
            next_op_at: spec.now + first,
            op_interval,
            next_container: 0,
            incarnation: spec.seed,
            stray_datagrams: 0,
        };
        node.persist();
        node
    })
}

impl Shared {
    /// Empty files, idle workload.
    pub fn new() -> Rc<Self> {
        Rc::new(Self {
            files: RefCell::new(BTreeMap::new()),
            mode: Cell::new(Workload::Idle),
            answers: RefCell::new(BTreeMap::new()),
        })
    }
}

impl IpamNode {
    /// The router, for assertions.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// Datagrams that reached this node, which has no sleeve to take them.
    pub fn stray_datagrams(&self) -> u64 {
        self.stray_datagrams
    }

    /// The router, to send it commands (its transmits leave at its next wake-up).
    pub fn router_mut(&mut self) -> &mut Router {
        &mut self.router
    }

    /// The host's persistence step: write the export when the generation moved.
    fn persist(&mut self) {
        let g = self.router.ipam_generation();
        if g != self.persisted_gen {
            self.persisted_gen = g;
            self.shared
                .files
                .borrow_mut()
                .insert(self.index, self.router.ipam_export());
        }
    }

    fn workload(&mut self, now: Instant) {
        if now < self.next_op_at {
            return;
        }
        let jitter = self.rng.below(self.op_interval.total_micros().max(1));
        self.next_op_at = now + Duration::from_micros(self.op_interval.total_micros() / 2 + jitter);
        let held: Vec<ContainerId> = {
            let mut v: Vec<ContainerId> = self
                .router
                .ipam()
                .allocations()
                .map(|(_, c)| c.clone())
                .collect();
            v.dedup();
            v
        };
        let allocate = match self.shared.mode.get() {
            Workload::Idle => return,
            Workload::Fill => true,
            Workload::Random => {
                held.is_empty() || (held.len() < WORKLOAD_CONTAINERS_MAX && self.rng.below(10) < 6)
            }
        };
        if allocate {
            self.next_container += 1;
            let id = format!(
                "n{}-{:x}-{}",
                self.index,
                self.incarnation & 0xffff_ffff,
                self.next_container
            );
            let id = ContainerId::new(&id).unwrap_or_else(|e| panic!("{e}"));
            if let Err(e) = self.router.ipam_allocate(now, &id, None) {
                self.count(&format!("refused {e:?}"));
            }
        } else {
            let victim = &held[self.rng.below(held.len() as u64) as usize];
            self.router.ipam_free(now, victim, None);
        }
    }

    fn count(&self, what: &str) {
        *self
            .shared
            .answers
            .borrow_mut()
            .entry(what.to_owned())
            .or_default() += 1;
    }
}

impl SimNode for IpamNode {
    const TRANSMIT_LEN_MAX: usize = TRANSMIT_LEN_MIN;

    fn name(&self) -> PeerName {
        self.router.name()
    }

    fn accept_stream(&mut self, now: Instant, remote: SocketAddr) -> ConnId {
        let c = self.router.accept_stream(now, remote).0;
        self.persist();
        c
    }

    fn handle_stream_bytes(&mut self, now: Instant, conn: ConnId, bytes: &[u8]) {
        self.router
            .handle_stream_bytes(now, RouterConnId(conn), bytes);
        self.persist();
    }

    fn handle_datagram(&mut self, _now: Instant, _from: SocketAddr, _bytes: &[u8]) {
        // No sleeve here (IPAM needs none): a datagram meets a closed port.
        self.stray_datagrams += 1;
    }

    fn handle_command(&mut self, now: Instant, cmd: NodeCommand) {
        let cmd = match cmd {
            NodeCommand::Connect(a) => Command::Connect(a),
            NodeCommand::StreamOpened(c) => Command::StreamOpened(RouterConnId(c)),
            NodeCommand::StreamFailed(c) => Command::StreamFailed(RouterConnId(c)),
            NodeCommand::StreamClosed(c) => Command::StreamClosed(RouterConnId(c)),
        };
        self.router.handle_command(now, cmd);
        self.persist();
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.router.handle_timeout(now);
        self.workload(now);
        self.persist();
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<(Dest, usize)> {
        // The contract: nothing leaves before the state it depends on is on "disk".
        self.persist();
        let t = self.router.poll_transmit(now, buf)?;
        Some(match t.destination {
            Destination::Stream(c) => (Dest::Stream(c.0), t.len),
            Destination::Datagram(to) => (Dest::Datagram(to), t.len),
        })
    }

    fn poll_event(&mut self) -> Option<NodeEvent> {
        loop {
            match self.router.poll_event()? {
                Event::OpenStream { conn, addr } => {
                    return Some(NodeEvent::OpenStream { conn: conn.0, addr });
                }
                Event::CloseStream { conn } => {
                    return Some(NodeEvent::CloseStream { conn: conn.0 });
                }
                Event::Ipam(IpamEvent::Allocated { .. }) => self.count("allocated"),
                Event::Ipam(IpamEvent::Failed { error, .. }) => {
                    self.count(&format!("failed {error:?}"))
                }
                Event::Ipam(IpamEvent::Lost { .. }) => self.count("lost"),
                Event::Ipam(IpamEvent::TakeoverRefused { .. }) => self.count("takeover refused"),
                _ => return Some(NodeEvent::Other),
            }
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let t = self.router.poll_timeout();
        match self.shared.mode.get() {
            Workload::Idle => t,
            _ => Some(t.map_or(self.next_op_at, |t| t.min(self.next_op_at))),
        }
    }

    fn topology_len(&self) -> usize {
        self.router.topology().len()
    }

    fn topology_digest(&self) -> u64 {
        self.router.topology().digest()
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
}

/// No address is held by two containers across the live routers, every router's ring
/// passes its invariant check, every address a router gave out lies in a span its
/// own ring says it owns, and no router refused a ring entry as a takeover of its space
/// (nobody in the simulator forges entries or removes a live peer, so a refusal means
/// an honest update, a donation say, was wrongly refused).
pub fn check_no_double_allocation(w: &World<IpamNode>) -> Result<(), String> {
    let mut holder: BTreeMap<Ipv4Addr, (usize, String)> = BTreeMap::new();
    for i in (0..w.len()).filter(|i| w.is_alive(*i)) {
        let Some(node) = w.node(i) else { continue };
        let ipam = node.router().ipam();
        ipam.ring()
            .check()
            .map_err(|e| format!("node {i}: ring invariant: {e}"))?;
        let refused = ipam.stats().takeovers_refused;
        if refused > 0 {
            return Err(format!(
                "node {i} refused {refused} honest ring entries as takeovers"
            ));
        }
        for (addr, c) in ipam.allocations() {
            if ipam.ring().owner_of(addr.addr.to_bits()) != Some(ipam.name()) {
                return Err(format!("node {i} holds {addr} outside its own spans"));
            }
            if let Some((j, other)) = holder.insert(addr.addr, (i, c.to_string())) {
                return Err(format!(
                    "{} held by {other} on node {j} and by {c} on node {i}",
                    addr.addr
                ));
            }
        }
    }
    Ok(())
}

/// The ring digests of the live routers, `Err` naming the first that differs.
pub fn rings_identical(w: &World<IpamNode>) -> Result<u64, String> {
    let mut first: Option<(usize, u64)> = None;
    for i in (0..w.len()).filter(|i| w.is_alive(*i)) {
        let Some(node) = w.node(i) else { continue };
        let d = node.router().ipam().ring().digest();
        match first {
            None => first = Some((i, d)),
            Some((j, fd)) if fd != d => return Err(format!("rings of nodes {j} and {i} differ")),
            Some(_) => {}
        }
    }
    first
        .map(|(_, d)| d)
        .ok_or_else(|| "no live node".to_owned())
}

/// Addresses given out across the live routers.
pub fn allocated_total(w: &World<IpamNode>) -> usize {
    (0..w.len())
        .filter_map(|i| w.node(i))
        .map(|n| n.router().ipam().allocations().count())
        .sum()
}

/// Failures of kind `error` counted so far.
pub fn failures(shared: &Shared, error: IpamError) -> u64 {
    shared
        .answers
        .borrow()
        .get(&format!("failed {error:?}"))
        .copied()
        .unwrap_or(0)
}
