//! The sleeve datapath under the simulator: real routers with the real sleeve engine
//! beside them, frames between containers, datagrams over the lossy virtual network.
//! A seed sweep of whole scenarios, a few pinned topologies, and for each invariant a run
//! that breaks it on purpose to show the check catches it.

use std::rc::Rc;

use weft_core::rng::Rng;
use weft_core::time::Duration;
use weft_sim::net::{NetConfig, PPM};
use weft_sim::node::name_of;
use weft_sim::router_node::{RouterNode, RouterProfile};
use weft_sim::scenario::run_to_convergence;
use weft_sim::sleeve_check::{
    Expect, check_deliveries, check_no_relay_loop, check_no_replay, check_paths, check_pmtu,
};
use weft_sim::sleeve_node::{Faults, SleeveShared};
use weft_sim::sleeve_scenario::{
    Round, SleeveReport, frame_round, paths, paths_settled, send_frame, sleeve_one,
    sleeve_replay_command, sleeve_world,
};
use weft_sim::world::World;

fn sweep(seeds: std::ops::Range<u64>) -> Vec<SleeveReport> {
    seeds
        .map(|seed| match sleeve_one(seed) {
            Ok(r) => r,
            Err(f) => panic!("{f}\nreplay: {}", sleeve_replay_command(seed)),
        })
        .collect()
}

/// What a sweep must have covered for its passing to mean something.
fn covered(reports: &[SleeveReport]) {
    let sum = |f: fn(&SleeveReport) -> u64| reports.iter().map(f).sum::<u64>();
    assert!(reports.iter().any(|r| r.encrypt) && reports.iter().any(|r| !r.encrypt));
    assert!(sum(|r| r.relayed) > 0, "no frame was relayed");
    assert!(
        sum(|r| r.multi_hop_unicasts) > 0,
        "no unicast took two hops"
    );
    assert!(
        sum(|r| r.over_mtu) > 0,
        "no link was too small for the probe"
    );
    assert!(sum(|r| r.accepted as u64) > 10_000);
}

#[test]
fn sleeve_seeds_0_to_48() {
    covered(&sweep(0..48));
}

#[test]
fn sleeve_seeds_48_to_96() {
    covered(&sweep(48..96));
}

#[test]
fn a_sleeve_seed_replays_bit_for_bit() {
    let a = sleeve_one(7).unwrap();
    assert_eq!(sleeve_one(7).unwrap(), a);
    assert_ne!(sleeve_one(8).unwrap().trace, a.trace);
}

/// Hosts 0 - 1 - ... - (n-1) in a line (each dials the one before), converged, every path
/// up. Datagrams are duplicated (`dup_ppm`) and reordered.
fn line(
    n: usize,
    encrypt: bool,
    dup_ppm: u64,
    faults: Faults,
) -> (World<RouterNode>, Rc<SleeveShared>) {
    let net = NetConfig {
        datagram_dup_ppm: dup_ppm,
        datagram_reorder_ppm: 200_000,
        reorder_us: 3_000,
        ..NetConfig::lan()
    };
    let shared = SleeveShared::new();
    shared.faults.set(faults);
    let mut w = sleeve_world(3, n, net, encrypt, &shared);
    for i in 1..n {
        w.connect(i, i - 1);
    }
    let timing = RouterProfile::sim().timing(Duration::from_secs(60));
    run_to_convergence(&mut w, timing).unwrap();
    paths_settled(&mut w).unwrap();
    (w, shared)
}

fn wait(w: &mut World<RouterNode>, ms: u64) {
    let until = w.now() + Duration::from_millis(ms);
    w.run_until(until).unwrap();
}

#[test]
fn a_line_relays_unicasts_hop_by_hop_and_broadcasts_reach_everyone_once() {
    for encrypt in [false, true] {
        let (mut w, shared) = line(4, encrypt, 300_000, Faults::default());
        let mut rng = Rng::from_seed(1);
        // Everyone broadcasts (MACs are learnt), then unicasts, half to far hosts.
        let ids = frame_round(&mut w, &shared, &mut rng, Round::Exact).unwrap();
        // 0 and 3 have no direct link: 1 and 2 relay.
        let first = shared.trace.borrow().next_id();
        send_frame(&mut w, &shared, 0, Some(3), 500);
        send_frame(&mut w, &shared, 1, None, 200);
        wait(&mut w, 500);
        let t = shared.trace.borrow();
        check_deliveries(&t, first..first + 2, |_| Expect::Exactly(vec![0, 1, 2, 3])).unwrap();
        check_no_relay_loop(&t, ids.start..first + 2).unwrap();
        check_no_replay(&t).unwrap();
        if encrypt {
            // Sealed: nothing to read on the wire.
            assert!(t.hops(first).is_empty());
        } else {
            assert_eq!(t.hops(first), [(0, 1), (1, 2), (2, 3)]);
            let mut bc = t.hops(first + 1).to_vec();
            bc.sort_unstable();
            assert_eq!(bc, [(1, 0), (1, 2), (2, 3)]);
        }
        for relay in [1, 2] {
            let s = w.node(relay).unwrap().sleeve().unwrap().stats();
            assert!(s.frames_relayed > 0, "host {relay} relayed nothing");
        }
    }
}

#[test]
fn a_duplicating_network_is_caught_once_the_replay_window_is_forgotten() {
    // Every datagram arrives twice.
    for forget in [false, true] {
        let faults = Faults {
            forget_replay_windows: forget,
            ..Faults::default()
        };
        let (mut w, shared) = line(2, false, PPM, faults);
        let first = shared.trace.borrow().next_id();
        send_frame(&mut w, &shared, 0, None, 100);
        wait(&mut w, 500);
        let t = shared.trace.borrow();
        let replay = check_no_replay(&t);
        let once = check_deliveries(&t, first..first + 1, |_| Expect::AtMostOnce);
        if forget {
            let e = replay.unwrap_err();
            assert!(e.contains("2 times"), "{e}");
            assert!(once.unwrap_err().contains("reached host 1 2 times"));
        } else {
            replay.unwrap();
            once.unwrap();
            let s = w.node(1).unwrap().sleeve().unwrap().stats();
            assert!(s.drops_replayed > 0, "the duplicates were refused");
        }
    }
}

#[test]
fn a_broadcast_tree_with_a_cycle_is_caught() {
    // Host 2 also relays broadcasts back towards their source: 1 and 2 bounce them.
    let faults = Faults {
        relay_back: Some(2),
        ..Faults::default()
    };
    let (mut w, shared) = line(3, false, 0, faults);
    let first = shared.trace.borrow().next_id();
    send_frame(&mut w, &shared, 0, None, 100);
    wait(&mut w, 100);
    let t = shared.trace.borrow();
    let e = check_no_relay_loop(&t, first..first + 1).unwrap_err();
    assert!(e.contains("had it already"), "{e}");
    let e = check_deliveries(&t, first..first + 1, |_| Expect::AtMostOnce).unwrap_err();
    assert!(e.contains("times"), "{e}");
}

#[test]
fn pmtu_is_learnt_where_the_probe_fits_and_never_above_the_link() {
    for encrypt in [false, true] {
        let net = NetConfig::lan();
        let shared = SleeveShared::new();
        let mut w = sleeve_world(4, 3, net, encrypt, &shared);
        w.set_link_mtu(1, 2, 1400);
        w.connect(1, 0);
        w.connect(2, 1);
        let timing = RouterProfile::sim().timing(Duration::from_secs(60));
        run_to_convergence(&mut w, timing).unwrap();
        paths_settled(&mut w).unwrap();
        let p = paths(&w);
        let pmtu = |a, b| {
            p.iter()
                .find(|x| (x.host, x.peer) == (a, b))
                .unwrap()
                .pmtu_bytes
        };
        // The one probe is sized for a 1500-byte underlay: it crosses 0 - 1 only.
        let full = if encrypt { 1472 } else { 1456 };
        assert_eq!((pmtu(0, 1), pmtu(1, 0)), (Some(full), Some(full)));
        assert_eq!((pmtu(1, 2), pmtu(2, 1)), (None, None));
        assert!(w.stats(1).datagrams_over_mtu > 0 && w.stats(2).datagrams_over_mtu > 0);
        check_pmtu(&p, |a, b| w.link_mtu(a, b), true).unwrap();
        // Told the link 0 - 1 were smaller than it is, the check finds the PMTU above it.
        let e = check_pmtu(&p, |_, _| 1400, false).unwrap_err();
        assert!(e.contains("over a link of MTU 1400"), "{e}");
        // Frames that fit the small link still cross it.
        let mut rng = Rng::from_seed(2);
        frame_round(&mut w, &shared, &mut rng, Round::Exact).unwrap();
    }
}

#[test]
fn heartbeats_take_a_path_down_after_the_timeout_and_back_up_after_the_heal() {
    let (mut w, _) = line(2, true, 0, Faults::default());
    let both = [(0, 1), (1, 0)];
    w.cut_datagrams(0, 1);
    wait(&mut w, 1_000);
    // Heard within the timeout: still up, so a check for "down" fails here.
    assert!(check_paths(&paths(&w), &both, false).is_err());
    check_paths(&paths(&w), &both, true).unwrap();
    wait(&mut w, 5_000);
    check_paths(&paths(&w), &both, false).unwrap();
    assert!(
        w.node(0)
            .unwrap()
            .router()
            .connection_to(name_of(1))
            .is_some()
    );
    w.restore_links();
    wait(&mut w, 2_500);
    check_paths(&paths(&w), &both, true).unwrap();
    // A partition takes the connection (and so the path) away; the heal brings both back.
    w.partition(&[0, 1]);
    wait(&mut w, 8_000);
    assert!(paths(&w).is_empty());
    w.heal_partition();
    let timing = RouterProfile::sim().timing(Duration::from_secs(60));
    run_to_convergence(&mut w, timing).unwrap();
    paths_settled(&mut w).unwrap();
    check_paths(&paths(&w), &both, true).unwrap();
}
