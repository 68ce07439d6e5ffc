//! Real routers (`weft_core::router::Router`) on the virtual network: convergence, a
//! partition and its heal, crash/restart, determinism.

use weft_core::rng::Rng;
use weft_core::time::Duration;
use weft_sim::check::expected_components;
use weft_sim::net::NetConfig;
use weft_sim::node::{SimNode, name_of};
use weft_sim::router_node::{RouterNode, RouterProfile, explore_router};
use weft_sim::scenario::{Timing, random_mesh, run_to_convergence};
use weft_sim::world::World;

fn timing() -> Timing {
    RouterProfile::sim().timing(Duration::from_secs(120))
}

fn mesh(seed: u64, n: usize, degree: usize, net: NetConfig) -> World<RouterNode> {
    let mut w = World::new(seed, n, net, RouterProfile::sim().factory());
    random_mesh(&mut w, degree, &mut Rng::from_seed(seed ^ 0xabc));
    w
}

fn converge(w: &mut World<RouterNode>) {
    if let Err(f) = run_to_convergence(w, timing()) {
        panic!("{f}");
    }
}

#[test]
fn hundred_routers_in_a_random_mesh_converge_on_a_lossy_wan() {
    let net = NetConfig::random(&mut Rng::from_seed(100));
    let mut w = mesh(100, 100, 3, net);
    converge(&mut w);
    assert_eq!(expected_components(&w), vec![(0..100).collect::<Vec<_>>()]);
    for i in 0..100 {
        assert_eq!(w.node(i).unwrap().topology_len(), 100, "node {i}");
    }
}

#[test]
fn halves_converge_apart_then_together_after_heal() {
    let n = 40;
    let mut w = mesh(2, n, 3, NetConfig::random(&mut Rng::from_seed(2)));
    converge(&mut w);
    let groups: Vec<u32> = (0..n).map(|i| u32::from(i >= n / 2)).collect();
    w.partition(&groups);
    converge(&mut w);
    // Nobody keeps a peer from the other half.
    for i in 0..n {
        let peers = w.node(i).unwrap().topology_peers();
        let across = peers
            .iter()
            .filter(|p| (p.as_u64() & 0xffff) as usize / (n / 2) != i / (n / 2))
            .count();
        assert_eq!(
            across, 0,
            "node {i} still lists {across} peers across the partition"
        );
    }
    w.heal_partition();
    converge(&mut w);
    for i in 0..n {
        assert_eq!(w.node(i).unwrap().topology_len(), n, "node {i} after heal");
    }
}

/// Follows node `from`'s routes to `to` and returns the path.
fn path(w: &mut World<RouterNode>, from: usize, to: usize) -> Vec<usize> {
    let mut p = vec![from];
    let mut cur = from;
    while cur != to && p.len() <= w.len() {
        let nh = w
            .node_mut(cur)
            .unwrap()
            .next_hop(name_of(to))
            .expect("route");
        cur = (nh.as_u64() & 0xffff) as usize;
        p.push(cur);
    }
    p
}

#[test]
fn crashed_router_in_a_line_is_routed_around_and_rejoins() {
    let n = 10;
    let mut w = World::new(3, n, NetConfig::lan(), RouterProfile::sim().factory());
    for i in 1..n {
        w.connect(i, i - 1);
    }
    w.connect(6, 4); // bypass around 5
    converge(&mut w);
    assert_eq!(
        path(&mut w, 0, 9),
        vec![0, 1, 2, 3, 4, 6, 7, 8, 9],
        "shortest path uses the bypass"
    );
    assert_eq!(path(&mut w, 5, 9), vec![5, 6, 7, 8, 9]);

    w.crash(5, false); // the machine vanishes: neighbours notice by heartbeat timeout
    converge(&mut w);
    for i in (0..n).filter(|i| *i != 5) {
        assert_eq!(
            w.node(i).unwrap().topology_len(),
            n - 1,
            "node {i} forgot 5"
        );
    }
    assert_eq!(path(&mut w, 9, 0), vec![9, 8, 7, 6, 4, 3, 2, 1, 0]);

    w.restart(5); // new incarnation, same name, empty state
    converge(&mut w);
    for i in 0..n {
        assert_eq!(
            w.node(i).unwrap().topology_len(),
            n,
            "node {i} after rejoin"
        );
    }
    assert_eq!(path(&mut w, 5, 0), vec![5, 4, 3, 2, 1, 0]);
}

#[test]
fn same_seed_same_trace_different_seed_different_trace() {
    let a = explore_router(7).unwrap_or_else(|f| panic!("{f}"));
    let b = explore_router(7).unwrap_or_else(|f| panic!("{f}"));
    let c = explore_router(8).unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(a, b, "one seed must replay bit for bit");
    assert_ne!(a.trace, c.trace);
}
