//! The virtual network and the invariant checker, tested with the toy link-state node.

use weft_core::rng::Rng;
use weft_core::time::{Duration, Instant};
use weft_sim::check::{check_all, expected_components, topologies_agree};
use weft_sim::net::NetConfig;
use weft_sim::node::{SimNode, name_of};
use weft_sim::scenario::{Timing, explore_one, random_mesh, run_to_convergence};
use weft_sim::toy::{TOY_HEARTBEAT_TIMEOUT_US, TOY_RETRY_US, ToyBug, ToyNode, toy_factory};
use weft_sim::world::World;

const TIMING: Timing = Timing {
    check_interval: Duration::from_millis(100),
    settle: Duration::from_millis(2_000),
    deadline: Duration::from_secs(60),
};

fn mesh(seed: u64, n: usize, degree: usize, net: NetConfig, bug: ToyBug) -> World<ToyNode> {
    let mut w = World::new(seed, n, net, toy_factory(bug));
    let mut rng = Rng::from_seed(seed);
    random_mesh(&mut w, degree, &mut rng);
    w
}

#[test]
fn toy_mesh_converges_on_a_lossy_wan() {
    let net = NetConfig::random(&mut Rng::from_seed(11));
    let mut w = mesh(1, 60, 3, net, ToyBug::None);
    let c = run_to_convergence(&mut w, TIMING).unwrap_or_else(|f| panic!("{f}"));
    assert!(c.at > Instant::ZERO);
    assert_eq!(expected_components(&w).len(), 1);
    assert!(c.totals.gossip.msgs > 0 && c.totals.net.stream_bytes > 0);
}

#[test]
fn partition_black_holes_streams_and_heal_reconverges() {
    let n = 20;
    let mut w = mesh(2, n, 3, NetConfig::lan(), ToyBug::None);
    run_to_convergence(&mut w, TIMING).unwrap_or_else(|f| panic!("{f}"));
    let groups: Vec<u32> = (0..n).map(|i| u32::from(i >= n / 2)).collect();
    w.partition(&groups);
    let comps = expected_components(&w);
    assert!(comps.len() >= 2, "halves must split the target graph");
    run_to_convergence(&mut w, TIMING).unwrap_or_else(|f| panic!("{f}"));
    for i in 0..n {
        // Each side knows only its own side.
        let mine = w.node(i).unwrap().topology_len();
        assert!(
            mine <= n / 2,
            "node {i} still knows {mine} peers across the partition"
        );
    }
    w.heal_partition();
    run_to_convergence(&mut w, TIMING).unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(w.node(0).unwrap().topology_len(), n);
}

#[test]
fn crash_restart_in_a_line_with_bypass() {
    let n = 8;
    let mut w = World::new(3, n, NetConfig::lan(), toy_factory(ToyBug::None));
    for i in 1..n {
        w.connect(i, i - 1);
    }
    w.connect(5, 3); // bypass around 4
    run_to_convergence(&mut w, TIMING).unwrap_or_else(|f| panic!("{f}"));
    w.crash(4, false); // silent: peers find out by heartbeat timeout
    run_to_convergence(&mut w, TIMING).unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(w.node(0).unwrap().topology_len(), n - 1);
    assert_eq!(
        w.node_mut(0).unwrap().next_hop(name_of(7)),
        Some(name_of(1))
    );
    w.restart(4);
    run_to_convergence(&mut w, TIMING).unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(w.node(7).unwrap().topology_len(), n);
}

#[test]
fn dial_into_partition_fails_after_connect_timeout() {
    let mut net = NetConfig::lan();
    net.connect_timeout_us = TOY_HEARTBEAT_TIMEOUT_US / 2;
    let mut w = World::new(4, 2, net, toy_factory(ToyBug::None));
    w.partition(&[0, 1]);
    w.connect(0, 1);
    let timeout = w.net().connect_timeout_us;
    w.run_until(Instant::from_micros(timeout - 1)).unwrap();
    assert_eq!(
        (w.open_streams(0), w.stats(0).dials),
        (1, 1),
        "dial still hanging"
    );
    w.run_until(Instant::from_micros(timeout + TOY_RETRY_US / 2))
        .unwrap();
    assert_eq!(
        (w.open_streams(0), w.stats(0).dials),
        (0, 1),
        "dial failed, retry pending"
    );
    w.run_until(Instant::from_micros(timeout + TOY_RETRY_US + 1_000))
        .unwrap();
    assert_eq!(w.stats(0).dials, 2, "retried");
    w.heal_partition();
    run_to_convergence(&mut w, TIMING).unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(w.node(1).unwrap().topology_len(), 2);
}

#[test]
fn datagrams_are_lost_and_duplicated_as_configured() {
    let run = |loss: u64, dup: u64| {
        let mut net = NetConfig::lan();
        net.datagram_loss_ppm = loss;
        net.datagram_dup_ppm = dup;
        let mut w = World::new(5, 2, net, toy_factory(ToyBug::None));
        w.connect(0, 1);
        w.run_until(Instant::from_millis(200_500)).unwrap();
        w.node(1).unwrap().pings_received + w.node(0).unwrap().pings_received
    };
    let clean = run(0, 0);
    assert!(
        (390..=402).contains(&clean),
        "one ping per second each way, got {clean}"
    );
    let lossy = run(500_000, 0);
    assert!((120..280).contains(&lossy), "half lost, got {lossy}");
    let dupy = run(0, 500_000);
    assert!((520..680).contains(&dupy), "half duplicated, got {dupy}");
}

#[test]
fn same_seed_same_trace_other_seed_differs() {
    let trace = |seed| {
        let net = NetConfig::random(&mut Rng::from_seed(seed));
        let mut w = mesh(seed, 15, 2, net, ToyBug::None);
        w.run_until(Instant::from_millis(3_000)).unwrap();
        w.crash(3, true);
        w.run_until(Instant::from_millis(6_000)).unwrap();
        w.restart(3);
        w.run_until(Instant::from_millis(9_000)).unwrap();
        (w.trace_hash(), w.deliveries())
    };
    let a = trace(77);
    assert!(a.1 > 100);
    assert_eq!(a, trace(77));
    assert_ne!(a.0, trace(78).0);
}

/// Runs a bugged toy mesh and returns what the checker said.
fn checker_verdict(bug: ToyBug, partition: bool) -> Result<(), String> {
    let n = 12;
    let mut w = mesh(6, n, 3, NetConfig::lan(), bug);
    w.run_until(Instant::from_millis(5_000))
        .map_err(|v| v.to_string())?;
    if partition {
        let groups: Vec<u32> = (0..n).map(|i| u32::from(i % 2 == 0)).collect();
        w.partition(&groups);
        w.run_until(Instant::from_millis(15_000))
            .map_err(|v| v.to_string())?;
    }
    let comps = expected_components(&w);
    check_all(&mut w, &comps, &mut Rng::from_seed(1))
}

#[test]
fn checker_passes_a_correct_node_and_catches_each_planted_bug() {
    checker_verdict(ToyBug::None, false).unwrap();
    checker_verdict(ToyBug::None, true).unwrap();
    let e = checker_verdict(ToyBug::RouteLoop, false).unwrap_err();
    assert!(e.contains("unicast"), "{e}");
    let e = checker_verdict(ToyBug::BroadcastFlood, false).unwrap_err();
    assert!(e.contains("twice"), "{e}");
    let e = checker_verdict(ToyBug::NoForget, true).unwrap_err();
    assert!(e.contains("peers") || e.contains("peer set"), "{e}");
    let e = checker_verdict(ToyBug::StuckTimer, false).unwrap_err();
    assert!(e.contains("livelock"), "{e}");
}

#[test]
fn convergence_wait_fails_with_the_seed_when_nodes_never_agree() {
    let n = 12;
    let mut w = mesh(7, n, 3, NetConfig::lan(), ToyBug::NoForget);
    run_to_convergence(&mut w, TIMING).unwrap_or_else(|f| panic!("{f}"));
    let groups: Vec<u32> = (0..n).map(|i| u32::from(i % 2 == 0)).collect();
    w.partition(&groups);
    let short = Timing {
        deadline: Duration::from_secs(10),
        ..TIMING
    };
    let f = run_to_convergence(&mut w, short).unwrap_err();
    assert_eq!(f.seed, 7);
    assert!(f.what.contains("no convergence"), "{f}");
    let comps = expected_components(&w);
    assert!(topologies_agree(&w, &comps).is_err());
}

#[test]
fn toy_explore_passes_many_seeds() {
    for seed in 0..40 {
        explore_one(seed, toy_factory(ToyBug::None), TIMING).unwrap_or_else(|f| panic!("{f}"));
    }
}
