//! Router timer regressions found by the simulator.
//!
//! A router whose dial hangs (SYN into a partition) longer than its handshake
//! timeout must not ask to be woken at the same instant forever. The world flags a node
//! woken more than NODE_WAKES_PER_INSTANT_MAX times at one instant as a timer livelock.

use weft_core::time::{Duration, Instant};
use weft_sim::net::NetConfig;
use weft_sim::router_node::RouterProfile;
use weft_sim::world::World;

#[test]
fn hanging_dial_past_the_handshake_timeout_does_not_livelock_the_timer() {
    let mut net = NetConfig::lan();
    let mut profile = RouterProfile::sim();
    profile.handshake_timeout = Duration::from_secs(3);
    net.connect_timeout_us = 10_000_000; // the dial outlives the handshake deadline
    let mut w = World::new(4, 2, net, profile.factory());
    w.partition(&[0, 1]);
    w.connect(0, 1);
    if let Err(v) = w.run_until(Instant::from_millis(20_000)) {
        panic!("{v}");
    }
    assert!(w.stats(0).dials >= 2, "the failed dial is retried");
}

/// Regression: more due targets than the connection limit leaves room for must not make
/// the router ask to be woken at a past instant forever (`dial_due` returns at once when
/// there is no room, yet `poll_timeout` still reports the maker's overdue target).
#[test]
fn targets_beyond_the_connection_limit_do_not_livelock_the_timer() {
    let mut profile = RouterProfile::sim();
    profile.conn_limit = 1;
    let mut w = World::new(5, 3, NetConfig::lan(), profile.factory());
    w.connect(0, 1);
    w.connect(0, 2);
    if let Err(v) = w.run_until(Instant::from_millis(20_000)) {
        panic!("{v}");
    }
    assert_eq!(w.open_streams(0), 1, "one connection, as limited");
}
