//! IPAM on the simulator with real routers: 100 peers allocating and freeing at random
//! through partitions, crashes and restarts (persisted state restored), checked after
//! every delivery batch; rings identical after heal; the whole range allocatable; and the
//! consensus start (one ring from three peers; no allocation below quorum).

use std::rc::Rc;

use weft_core::ipam::{Cidr, ContainerId, InitMode, IpamError, PeerView};
use weft_core::rng::Rng;
use weft_core::time::{Duration, Instant};
use weft_sim::ipam_check::{
    IpamNode, Shared, Workload, allocated_total, check_no_double_allocation, failures,
    ipam_factory, rings_identical,
};
use weft_sim::net::NetConfig;
use weft_sim::node::name_of;
use weft_sim::router_node::RouterProfile;
use weft_sim::scenario::random_mesh;
use weft_sim::world::World;

/// One delivery batch: the world runs this long between checks.
const BATCH: Duration = Duration::from_millis(20);

fn range() -> Cidr {
    "10.32.0.0/22".parse().unwrap()
}

fn world(seed: u64, n: usize, quorum: u16, net: NetConfig, shared: &Rc<Shared>) -> World<IpamNode> {
    let f = ipam_factory(
        RouterProfile::sim(),
        range(),
        InitMode::Consensus { quorum },
        Duration::from_secs(2),
        Rc::clone(shared),
    );
    World::new(seed, n, net, f)
}

/// Runs `d` in batches, checking for double allocation after each; stops early when
/// `done` holds. Returns whether it did.
fn run(
    w: &mut World<IpamNode>,
    d: Duration,
    mut done: impl FnMut(&World<IpamNode>) -> bool,
) -> bool {
    let end = w.now() + d;
    while w.now() < end {
        let next = w.now() + BATCH;
        if let Err(v) = w.run_until(next) {
            panic!("seed {}: network violation {v}", w.seed());
        }
        if let Err(e) = check_no_double_allocation(w) {
            panic!("seed {} at {}: {e}", w.seed(), w.now());
        }
        if done(w) {
            return true;
        }
    }
    false
}

fn rings_ready(w: &World<IpamNode>) -> bool {
    (0..w.len()).all(|i| {
        !w.is_alive(i)
            || w.node(i)
                .is_some_and(|n| n.router().ipam().ring().id().is_some())
    }) && rings_identical(w).is_ok()
}

#[test]
fn hundred_peers_allocate_and_free_through_partitions_and_crashes() {
    let seed = 0x1ba3_0001;
    let n = 100;
    let shared = Shared::new();
    let mut w = world(
        seed,
        n,
        n as u16,
        NetConfig::random(&mut Rng::from_seed(seed)),
        &shared,
    );
    random_mesh(&mut w, 3, &mut Rng::from_seed(seed ^ 0xabc));
    assert!(
        run(&mut w, Duration::from_secs(60), rings_ready),
        "consensus of 100 seeds one ring"
    );
    let seeded = w.node(0).unwrap().router().ipam().ring().id().unwrap();
    assert_eq!(seeded.seeder, name_of(0), "the lowest name seeds");

    let mut rng = Rng::from_seed(seed ^ 0xfa17);
    shared.mode.set(Workload::Random);
    run(&mut w, Duration::from_secs(20), |_| false);
    // Two random halves for 30 s, working on both sides.
    let groups: Vec<u32> = (0..n).map(|_| rng.below(2) as u32).collect();
    w.partition(&groups);
    run(&mut w, Duration::from_secs(30), |_| false);
    w.heal_partition();
    run(&mut w, Duration::from_secs(10), |_| false);
    // Crashes (some vanish, some reset their streams), restarts from the persisted files.
    let crashed: Vec<usize> = (0..6).map(|_| rng.below(n as u64) as usize).collect();
    for (k, &i) in crashed.iter().enumerate() {
        w.crash(i, k % 2 == 0);
    }
    run(&mut w, Duration::from_secs(20), |_| false);
    for &i in &crashed {
        w.restart(i);
    }
    run(&mut w, Duration::from_secs(10), |_| false);
    // A partition and a crash at once, then everything back.
    let groups: Vec<u32> = (0..n).map(|i| u32::from(i % 3 == 0)).collect();
    w.partition(&groups);
    let victim = 1 + rng.below(n as u64 - 1) as usize;
    w.crash(victim, false);
    run(&mut w, Duration::from_secs(20), |_| false);
    w.heal_partition();
    w.restart(victim);
    let allocated = shared
        .answers
        .borrow()
        .get("allocated")
        .copied()
        .unwrap_or(0);
    assert!(
        allocated > 500,
        "the workload ran: {:?}",
        shared.answers.borrow()
    );

    // Heal: the workload stops, all rings become identical.
    shared.mode.set(Workload::Idle);
    assert!(
        run(&mut w, Duration::from_secs(120), |w| rings_identical(w)
            .is_ok()),
        "rings identical after heal: {:?}",
        rings_identical(&w)
    );
    assert_eq!(failures(&shared, IpamError::InUse), 0);

    // Every usable address of the /22 (all but its network and broadcast) is allocatable.
    shared.mode.set(Workload::Fill);
    let usable = (range().size() - 2) as usize;
    assert!(
        run(&mut w, Duration::from_secs(900), |w| allocated_total(w)
            == usable),
        "only {} of {usable} allocated; answers {:?}",
        allocated_total(&w),
        shared.answers.borrow()
    );
    shared.mode.set(Workload::Idle);
    assert!(run(&mut w, Duration::from_secs(60), |w| rings_identical(w)
        .is_ok()));
    let free: u64 = w
        .node(0)
        .unwrap()
        .router()
        .ipam()
        .ring()
        .shares()
        .values()
        .map(|s| s.1)
        .sum();
    assert_eq!(free, 0, "every free count gossiped down to zero");
}

#[test]
fn three_consensus_peers_started_at_once_seed_exactly_one_ring() {
    let shared = Shared::new();
    let mut w = world(11, 3, 3, NetConfig::lan(), &shared);
    w.connect(1, 0);
    w.connect(2, 0);
    w.connect(2, 1);
    assert!(run(&mut w, Duration::from_secs(20), rings_ready));
    let ring = w.node(0).unwrap().router().ipam().ring().clone();
    assert_eq!(ring.id().map(|id| id.seeder), Some(name_of(0)));
    let shares = ring.shares();
    assert_eq!(
        shares.keys().copied().collect::<Vec<_>>(),
        vec![name_of(0), name_of(1), name_of(2)]
    );
    assert!(
        shares.values().all(|s| (341..=342).contains(&s.0)),
        "{shares:?}"
    );
    for i in 1..3 {
        let r = w.node(i).unwrap().router().ipam().ring();
        assert_eq!(r.id(), ring.id(), "node {i} adopted the same ring");
    }
}

#[test]
fn a_peer_below_quorum_does_not_allocate_until_it_has_one() {
    let shared = Shared::new();
    let mut w = world(12, 3, 3, NetConfig::lan(), &shared);
    w.connect(1, 0);
    w.connect(2, 0);
    w.partition(&[0, 0, 1]);
    let id = ContainerId::new("early").unwrap();
    let req = w
        .node_mut(0)
        .unwrap()
        .router_mut()
        .ipam_allocate(Instant::ZERO, &id, None);
    assert!(req.is_ok());
    run(&mut w, Duration::from_secs(30), |_| false);
    assert!(
        (0..3).all(|i| w.node(i).unwrap().router().ipam().ring().is_empty()),
        "two of three: no ring"
    );
    assert_eq!(
        shared.answers.borrow().get("allocated"),
        None,
        "nothing allocated below quorum"
    );
    let status = w
        .node(0)
        .unwrap()
        .router()
        .ipam()
        .status(&PeerView::default());
    assert_eq!(status.pending, 1, "the request waits");
    w.heal_partition();
    assert!(run(&mut w, Duration::from_secs(30), |_| shared
        .answers
        .borrow()
        .contains_key("allocated")));
    let addrs = w.node(0).unwrap().router().ipam().addresses_of(&id);
    assert_eq!(addrs, vec!["10.32.0.1/22".parse().unwrap()]);
    // The answer can reach node 0 before the ring has reached everyone: wait for that too.
    assert!(
        run(&mut w, Duration::from_secs(30), rings_ready),
        "every peer gets the ring after the heal"
    );
}
