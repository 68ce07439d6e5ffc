//! IPAM through the Router: a pair and a line of three routers wired back to back (streams
//! are byte pipes, time advanced by hand). Consensus seeding over real connections,
//! allocation answers as events, a donation routed over two hops, rmpeer, persistence.

mod common;

use common::{Net, addr};
use weft_core::ipam::{Cidr, ContainerId, InitMode, IpamError, IpamEvent, RequestId};
use weft_core::peer::PeerName;
use weft_core::router::{Command, Config, Event};
use weft_core::time::{Duration, Instant};

fn config(i: usize, range: &str, quorum: u16) -> Config {
    let mut c = Config::new(PeerName::from_u64(0x100 + i as u64), 6783);
    c.gossip_interval = Duration::from_secs(5);
    c.discovery = false;
    c.ipam.range = range.parse().unwrap();
    c.ipam.default_subnet = c.ipam.range;
    c.ipam.init = InitMode::Consensus { quorum };
    c
}

impl Net {
    fn new(n: usize, range: &str, quorum: u16) -> Self {
        Self::from_configs((0..n).map(|i| config(i, range, quorum)), 42)
    }

    fn answer(&self, i: usize, req: RequestId) -> Option<Result<Cidr, IpamError>> {
        self.events.iter().find_map(|(p, e)| match *e {
            Event::Ipam(IpamEvent::Allocated { request, addr }) if *p == i && request == req => {
                Some(Ok(addr))
            }
            Event::Ipam(IpamEvent::Failed { request, error }) if *p == i && request == req => {
                Some(Err(error))
            }
            _ => None,
        })
    }

    fn alloc(&mut self, i: usize, c: &str) -> Result<Cidr, IpamError> {
        let id = ContainerId::new(c).unwrap();
        let req = self.routers[i].ipam_allocate(self.now, &id, None)?;
        self.run(Duration::from_secs(2));
        self.answer(i, req).expect("answered within 2 s")
    }
}

#[test]
fn pair_seeds_one_ring_and_allocates_distinct_addresses() {
    let mut net = Net::new(2, "10.32.0.0/24", 2);
    let early = net.routers[0]
        .ipam_allocate(Instant::ZERO, &ContainerId::new("early").unwrap(), None)
        .unwrap();
    net.run(Duration::from_millis(500));
    assert!(
        net.answer(0, early).is_none(),
        "no quorum yet: the request waits"
    );
    assert!(net.routers[0].ipam().ring().is_empty());
    net.routers[0].handle_command(net.now, Command::Connect(addr(1)));
    net.run(Duration::from_secs(2));
    assert_eq!(
        net.answer(0, early),
        Some(Ok("10.32.0.1/24".parse().unwrap()))
    );
    assert_eq!(net.routers[0].ipam().ring(), net.routers[1].ipam().ring());
    let b = net.alloc(1, "b1").unwrap();
    assert_eq!(b, "10.32.0.128/24".parse().unwrap());
    let status = net.routers[0].ipam_status();
    assert_eq!(status.peers.len(), 2);
    assert!(
        status
            .peers
            .iter()
            .all(|p| p.addresses == 128 && p.reachable)
    );
    assert_eq!(
        status.peers[0].free, 126,
        "range network address and one allocation"
    );
    assert_eq!(status.allocations, 1);
    // Freed on detach: the same address comes back.
    let gen_before = net.routers[1].ipam_generation();
    assert_eq!(
        net.routers[1].ipam_free(net.now, &ContainerId::new("b1").unwrap(), None),
        1
    );
    assert_ne!(net.routers[1].ipam_generation(), gen_before);
    assert_eq!(net.alloc(1, "b2"), Ok(b));
}

#[test]
fn trio_in_a_line_donates_over_two_hops() {
    // 0 - 1 - 2, no direct link between 0 and 2. /28 split 5/5/6.
    let mut net = Net::new(3, "10.32.0.0/28", 3);
    net.routers[0].handle_command(Instant::ZERO, Command::Connect(addr(1)));
    net.routers[1].handle_command(Instant::ZERO, Command::Connect(addr(2)));
    net.run(Duration::from_secs(3));
    let ring = net.routers[0].ipam().ring().clone();
    assert!(ring.id().is_some());
    assert!(net.routers.iter().all(|r| r.ipam().ring() == &ring));
    assert!(
        net.routers[0]
            .connection_to(net.routers[2].name())
            .is_none()
    );
    for k in 0..5 {
        net.alloc(1, &format!("b{k}")).unwrap();
    }
    let mut got = Vec::new();
    for k in 0..10 {
        match net.alloc(2, &format!("c{k}")) {
            Ok(a) => got.push(a),
            Err(e) => {
                assert_eq!(e, IpamError::RangeFull);
                break;
            }
        }
    }
    // Router 2 had 5 usable addresses (the range's broadcast is its last) and got peer 0's 4.
    assert_eq!(got.len(), 9, "{got:?}");
    assert!(net.routers[0].ipam().stats().donations_given > 0);
    let mut all: Vec<Cidr> = net
        .routers
        .iter()
        .flat_map(|r| r.ipam().allocations().map(|(a, _)| a).collect::<Vec<_>>())
        .collect();
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n, "an address given twice");
    assert_eq!(n, 14);
    net.run(Duration::from_secs(1));
    assert!(
        net.routers
            .iter()
            .all(|r| r.ipam().ring() == net.routers[0].ipam().ring())
    );
}

#[test]
fn rmpeer_and_restore_through_the_router() {
    let mut net = Net::new(2, "10.32.0.0/24", 2);
    net.routers[0].handle_command(Instant::ZERO, Command::Connect(addr(1)));
    net.run(Duration::from_secs(2));
    let a = net.alloc(0, "a1").unwrap();
    let saved = net.routers[0].ipam_export();
    let gone = net.routers[1].name();
    let me = net.routers[0].name();
    assert_eq!(
        net.routers[0].ipam_rmpeer(net.now, me),
        Err(IpamError::IsSelf)
    );
    assert_eq!(net.routers[0].ipam_rmpeer(net.now, gone), Ok(128));
    let status = net.routers[0].ipam_status();
    assert_eq!(status.peers.len(), 1);
    assert_eq!(status.peers[0].addresses, 256);
    // A restart from the saved state keeps the allocation and the ring.
    let mut fresh = common::router(config(0, "10.32.0.0/24", 2), 7, net.now);
    fresh.ipam_restore(net.now, &saved).unwrap();
    let allocs: Vec<_> = fresh
        .ipam()
        .allocations()
        .map(|(c, id)| (c, id.as_str().to_owned()))
        .collect();
    assert_eq!(allocs, vec![(a, "a1".to_owned())]);
    assert!(fresh.ipam().ring().id().is_some());
    let mut other = common::router(config(1, "10.32.0.0/24", 2), 7, net.now);
    assert!(
        other.ipam_restore(net.now, &saved).is_err(),
        "another peer's file is refused"
    );
}
