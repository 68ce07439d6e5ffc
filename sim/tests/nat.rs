//! Hole punching through simulated NAT boxes, with the real routers: for each pair of
//! NAT types the share of seeds that end punched and relayed (and that X and Y can always
//! reach each other), the introducer's death, a NAT that forgets its mappings, failures
//! that say why and back off, idle mappings held open, and replay.

use weft_core::punch::{PunchFailure, PunchPhase};
use weft_core::time::{Duration, Instant};
use weft_sim::nat::{NAT_TIMEOUT_DEFAULT_US, NatType};
use weft_sim::nat_scenario::{
    P, X, Y, nat_one, nat_pairs, nat_world, punched, render_table, routes_to, run_checking,
};
use weft_sim::node::name_of;
use weft_sim::router_node::RouterNode;
use weft_sim::world::World;

fn secs(s: u64) -> Instant {
    Instant::ZERO + Duration::from_secs(s)
}

fn next_hop(w: &mut World<RouterNode>, i: usize, j: usize) -> Option<usize> {
    let h = w.node_mut(i)?.router_mut().next_hop(name_of(j))?;
    (0..3).find(|k| name_of(*k) == h)
}

/// Seeds per pair in the test (the CLI runs more: `weft-sim nat --seeds 200`).
const SEEDS: u64 = 16;

#[test]
fn every_nat_pair_ends_punched_exactly_where_the_nats_allow_and_always_talks() {
    let mut rows = Vec::new();
    for (a, b) in nat_pairs() {
        let mut c = weft_sim::nat_scenario::PairCounts::default();
        for seed in 0..SEEDS {
            // Odd seeds with a password: the punched link runs the same PAKE.
            let o = nat_one(seed, a, b, seed % 2 == 1)
                .unwrap_or_else(|e| panic!("{a} x {b} seed {seed}: {e}"));
            assert!(
                o.always_talked,
                "{a} x {b} seed {seed}: X and Y lost each other at {:?}",
                o.gap
            );
            let want = NatType::punchable(a, b);
            assert_eq!(
                o.punched, want,
                "{a} x {b} seed {seed}: punched {} (expected {want}); X's attempt: {:?}",
                o.punched, o.x_phase
            );
            if !want {
                assert!(
                    matches!(
                        o.x_phase,
                        Some(PunchPhase::Failed {
                            reason: PunchFailure::NoAnswer,
                            ..
                        })
                    ),
                    "{a} x {b} seed {seed}: a relayed pair should say 'no answer': {:?}",
                    o.x_phase
                );
            }
            c.seeds += 1;
            c.punched += u64::from(o.punched);
            c.relayed += u64::from(!o.punched);
        }
        rows.push((a, b, c));
    }
    println!("{}", render_table(&rows));
}

#[test]
fn killing_the_introducer_keeps_the_punched_link() {
    for seed in 0..4 {
        let mut w = nat_world(
            seed,
            NatType::PORT_RESTRICTED,
            NatType::PORT_RESTRICTED,
            seed % 2 == 1,
            NAT_TIMEOUT_DEFAULT_US,
        );
        w.run_until(secs(10)).unwrap();
        assert!(punched(&w), "seed {seed}: not punched by 10 s");
        w.crash(P, false);
        let gap = run_checking(&mut w, secs(10), secs(40)).unwrap();
        assert_eq!(gap, None, "seed {seed}: X and Y lost each other without P");
        assert!(punched(&w), "seed {seed}: the punched link died with P");
        assert_eq!(next_hop(&mut w, X, Y), Some(Y));
        assert_eq!(
            next_hop(&mut w, X, P),
            None,
            "seed {seed}: P is dead yet routed to"
        );
        // Once P is gone from the topology, nothing of it is left to punch with.
        w.run_until(secs(60)).unwrap();
        for i in [X, Y] {
            let r = w.node(i).unwrap().router();
            assert!(!r.topology().contains(name_of(P)), "seed {seed}");
            assert!(r.mapped_addr(name_of(P)).is_none(), "seed {seed}");
        }
        assert!(punched(&w), "seed {seed}");
    }
}

#[test]
fn a_nat_that_forgets_its_mappings_falls_back_to_the_relay_and_punches_again() {
    for seed in 0..4 {
        let mut w = nat_world(
            seed,
            NatType::PORT_RESTRICTED,
            NatType::FULL_CONE,
            seed % 2 == 1,
            NAT_TIMEOUT_DEFAULT_US,
        );
        w.run_until(secs(10)).unwrap();
        assert!(punched(&w), "seed {seed}: not punched by 10 s");
        let before = w
            .node(Y)
            .unwrap()
            .router()
            .punch_attempt(name_of(X))
            .copied()
            .unwrap();
        let PunchPhase::Punched { addr: old, .. } = before.phase else {
            panic!("seed {seed}: {before:?}");
        };
        w.nat_flush(X);
        // The punched link dies (its heartbeats meet no mapping), the relay takes over.
        let mut relayed = false;
        while w.now() < secs(20) {
            let t = w.now() + Duration::from_millis(100);
            w.run_until(t).unwrap();
            if next_hop(&mut w, X, Y) == Some(P) && next_hop(&mut w, Y, X) == Some(P) {
                relayed = true;
                break;
            }
        }
        assert!(relayed, "seed {seed}: never fell back to the relay via P");
        let from = w.now();
        let gap = run_checking(&mut w, from, secs(50)).unwrap();
        assert_eq!(
            gap, None,
            "seed {seed}: X and Y lost each other after the flush"
        );
        assert!(
            punched(&w),
            "seed {seed}: not punched again after the flush"
        );
        let after = w
            .node(Y)
            .unwrap()
            .router()
            .punch_attempt(name_of(X))
            .copied()
            .unwrap();
        let PunchPhase::Punched { addr: new, .. } = after.phase else {
            panic!("seed {seed}: {after:?}");
        };
        assert_ne!(
            new, old,
            "seed {seed}: X's new mapping should be a new port"
        );
        assert!(after.introductions > before.introductions);
        assert!(
            w.nat(X).unwrap().refused > 0,
            "seed {seed}: the flush refused nothing?"
        );
    }
}

#[test]
fn failed_punches_say_why_stay_relayed_and_back_off() {
    let mut w = nat_world(
        3,
        NatType::PORT_RESTRICTED,
        NatType::SYMMETRIC,
        false,
        NAT_TIMEOUT_DEFAULT_US,
    );
    let gap = run_checking(&mut w, secs(5), secs(120)).unwrap();
    assert_eq!(gap, None);
    assert!(!punched(&w));
    assert_eq!(next_hop(&mut w, X, Y), Some(P));
    let a = *w
        .node(X)
        .unwrap()
        .router()
        .punch_attempt(name_of(Y))
        .unwrap();
    let PunchPhase::Failed {
        reason,
        at,
        retry_at,
    } = a.phase
    else {
        panic!("{a:?}");
    };
    assert_eq!(reason, PunchFailure::NoAnswer);
    assert_eq!(reason.to_string(), "no answer");
    assert!(a.failures >= 3, "{a:?}");
    // Backoff: 2 s doubling, capped at 20 s; by now the wait is past its first step.
    let wait = retry_at.saturating_since(at);
    assert!(
        wait > Duration::from_secs(2) && wait <= Duration::from_secs(20),
        "{wait:?}"
    );
    // Bounded: over 120 s, far fewer attempts than one per check.
    assert!(a.introductions <= 8, "{a:?}");
    let s = w.node(P).unwrap().router().punch_stats();
    assert_eq!(u64::from(a.introductions), s.intros_made);
    // Y leaves for good: once it is gone from X's topology, so is X's record of it.
    w.crash(Y, false);
    w.run_until(secs(150)).unwrap();
    let r = w.node(X).unwrap().router();
    assert!(!r.topology().contains(name_of(Y)));
    assert!(r.punch_attempt(name_of(Y)).is_none());
}

#[test]
fn idle_nat_mappings_stay_open_under_reflects_and_heartbeats() {
    // A 3 s UDP timeout, below every default: the 2 s reflects hold X's and Y's mappings
    // to P, the punched link's 1 s heartbeats hold theirs to each other.
    for seed in 0..4 {
        let mut w = nat_world(
            seed,
            NatType::PORT_RESTRICTED,
            NatType::PORT_RESTRICTED,
            false,
            3_000_000,
        );
        let gap = run_checking(&mut w, secs(8), secs(90)).unwrap();
        assert_eq!(gap, None, "seed {seed}");
        assert!(punched(&w), "seed {seed}");
        let s = w.node(X).unwrap().router().punch_stats();
        assert_eq!(
            s.punched_up, 1,
            "seed {seed}: the punched link was lost and redone: {s:?}"
        );
        let observed = w.node(P).unwrap().router().observed_addr(name_of(X));
        let mapped = w.node(X).unwrap().router().mapped_addr(name_of(P));
        assert!(
            observed.is_some() && observed == mapped,
            "seed {seed}: {observed:?} {mapped:?}"
        );
        assert_eq!(
            w.nat(X).unwrap().expired,
            0,
            "seed {seed}: a mapping timed out"
        );
    }
}

#[test]
fn nat_runs_replay_bit_for_bit() {
    let run = |seed| {
        let mut w = nat_world(
            seed,
            NatType::PORT_RESTRICTED,
            NatType::SYMMETRIC_OPEN,
            true,
            NAT_TIMEOUT_DEFAULT_US,
        );
        w.run_until(secs(30)).unwrap();
        (w.trace_hash(), w.deliveries(), punched(&w))
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5).0, run(6).0);
}

#[test]
fn behind_nat_nobody_dials_in() {
    let mut w = nat_world(
        1,
        NatType::FULL_CONE,
        NatType::FULL_CONE,
        false,
        NAT_TIMEOUT_DEFAULT_US,
    );
    // P told to dial X as well: X's private address is out of reach, X's dial to P is
    // what connects them.
    w.connect(P, X);
    w.run_until(secs(20)).unwrap();
    assert!(routes_to(&mut w, P, X));
    let r = w.node(P).unwrap().router();
    let (_, t) = r
        .targets()
        .find(|(a, _)| **a == weft_sim::node::addr_of(X))
        .expect("P's target X");
    assert!(t.failures >= 1, "P's dial into the NAT should fail: {t:?}");
    assert_eq!(
        t.last_error,
        Some(weft_core::conn::ConnError::ConnectFailed),
        "{t:?}"
    );
}

#[test]
fn a_stream_to_the_same_peer_wins_over_a_punched_link() {
    use weft_sim::nat_scenario::nat_profile;
    use weft_sim::net::NetConfig;
    // No NAT at all: X and Y, told only of P, punch (nothing stops the probes)...
    let mut w = World::new(7, 3, NetConfig::lan(), nat_profile(true).factory());
    w.connect(X, P);
    w.connect(Y, P);
    w.run_until(secs(10)).unwrap();
    assert!(punched(&w));
    // ...then X is told to dial Y: both ends keep the stream, drop the punched link, and
    // do not punch again while the stream holds.
    w.connect(X, Y);
    let gap = run_checking(&mut w, secs(10), secs(40)).unwrap();
    assert_eq!(gap, None);
    for (i, j) in [(X, Y), (Y, X)] {
        let r = w.node(i).unwrap().router();
        assert!(!r.is_punched(name_of(j)), "{i} -> {j} still punched");
        assert!(r.connection_to(name_of(j)).is_some());
    }
    assert_eq!(next_hop(&mut w, X, Y), Some(Y));
    let s = w.node(X).unwrap().router().punch_stats();
    assert_eq!(s.punched_up, 1, "{s:?}");
}
