//! NAT scenarios: a public peer P and two peers X and Y, each behind its own NAT box
//! ([`crate::nat`]), launched with only P as their peer. The real routers run with hole
//! punching on; a seed draws the network's faults (latency, jitter, datagram loss,
//! duplication, reordering), when Y joins (up to 3 s after X) and a stall of one of the
//! three (up to 2 s, under the heartbeat timeout) some time into the run.
//!
//! [`nat_one`] runs one seed for one pair of NAT types and reports how it ended (punched
//! or relayed) and whether X and Y could always reach each other once both had joined;
//! [`nat_table`] runs many seeds for every pair and counts; `weft-sim nat` prints it.

use std::fmt::Write as _;

use weft_core::punch::{PunchConfig, PunchPhase};
use weft_core::rng::Rng;
use weft_core::time::{Duration, Instant};

use crate::nat::{NAT_TIMEOUT_DEFAULT_US, NatType};
use crate::net::{NetConfig, mix};
use crate::node::name_of;
use crate::router_node::{RouterNode, RouterProfile};
use crate::world::World;

/// Node indices.
pub const P: usize = 0;
/// The peer behind the first NAT.
pub const X: usize = 1;
/// The peer behind the second NAT.
pub const Y: usize = 2;

/// How long a run lasts in virtual time.
pub const RUN_SECS: u64 = 60;
/// From this long after both joined, X and Y must reach each other at every check.
pub const JOIN_GRACE_SECS: u64 = 8;

/// Punch timers for the simulator (fast, like [`RouterProfile::sim`]).
pub fn sim_punch() -> PunchConfig {
    PunchConfig {
        enabled: true,
        reflect_interval: Duration::from_secs(2),
        probe_interval: Duration::from_millis(200),
        check_interval: Duration::from_millis(500),
        retry_base: Duration::from_secs(2),
        retry_max: Duration::from_secs(20),
    }
}

/// The router profile of NAT runs: the sim profile with punching on.
pub fn nat_profile(psk: bool) -> RouterProfile {
    let mut p = RouterProfile::sim();
    p.punch = sim_punch();
    if psk {
        p.psk = Some(weft_core::crypto::Psk::from_password(b"nat-secret"));
    }
    p
}

/// A seed's network: a LAN or, for two seeds in three, a lossy WAN (up to 5 % datagram
/// loss, duplication, reordering, 40 ms latency, jitter).
pub fn nat_net(seed: u64) -> NetConfig {
    let mut rng = Rng::from_seed(mix(seed ^ 0x006e_6174));
    let mut n = NetConfig::lan();
    if rng.below(3) > 0 {
        n.latency_min_us = 200 + rng.below(10_000);
        n.latency_max_us = n.latency_min_us + rng.below(30_000);
        n.jitter_us = rng.below(10_000);
        n.datagram_loss_ppm = rng.below(50_000);
        n.datagram_dup_ppm = rng.below(20_000);
        n.datagram_reorder_ppm = rng.below(50_000);
        n.reorder_us = rng.below(30_000);
        n.stream_loss_ppm = rng.below(20_000);
    }
    n
}

/// How one run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatOutcome {
    /// X and Y ended with a punched connection (both ends).
    pub punched: bool,
    /// X and Y each had a route to the other at every check from [`JOIN_GRACE_SECS`]
    /// after both joined.
    pub always_talked: bool,
    /// The first check where they did not, if any.
    pub gap: Option<Instant>,
    /// X's last word on its punch towards Y (for reports).
    pub x_phase: Option<PunchPhase>,
}

/// The seed's timing faults: when Y joins, and which node stalls when for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatTiming {
    /// Y connects to P this long after X.
    pub y_join: Duration,
    /// The node that stalls.
    pub stall_node: usize,
    /// When.
    pub stall_at: Duration,
    /// For how long (under the 4 s heartbeat timeout).
    pub stall: Duration,
}

/// The timing faults of `seed`.
pub fn nat_timing(seed: u64) -> NatTiming {
    let mut rng = Rng::from_seed(mix(seed ^ 0x7469_6d65));
    NatTiming {
        y_join: Duration::from_millis(rng.below(3_000)),
        stall_node: rng.below(3) as usize,
        stall_at: Duration::from_millis(10_000 + rng.below(30_000)),
        stall: Duration::from_millis(rng.below(2_000)),
    }
}

/// Builds the world for `seed` with X behind `a` and Y behind `b`, both told to connect
/// to P, and runs it until Y has (see [`nat_timing`]).
pub fn nat_world(
    seed: u64,
    a: NatType,
    b: NatType,
    psk: bool,
    timeout_us: u64,
) -> World<RouterNode> {
    let mut w = World::new(seed, 3, nat_net(seed), nat_profile(psk).factory());
    w.set_nat(X, a, timeout_us);
    w.set_nat(Y, b, timeout_us);
    w.connect(X, P);
    let t = nat_timing(seed);
    // A world invariant broken this early shows again in the caller's next run.
    let _ = w.run_until(Instant::ZERO + t.y_join);
    w.connect(Y, P);
    w
}

/// True if `i` has a route to `j`'s name.
pub fn routes_to(w: &mut World<RouterNode>, i: usize, j: usize) -> bool {
    w.node_mut(i)
        .is_some_and(|n| n.router_mut().next_hop(name_of(j)).is_some())
}

/// True if X and Y hold a punched connection to each other, both ends.
pub fn punched(w: &World<RouterNode>) -> bool {
    let end = |i: usize, j: usize| w.node(i).is_some_and(|n| n.router().is_punched(name_of(j)));
    end(X, Y) && end(Y, X)
}

/// Runs `w` to `until`, checking every 100 ms from `from` that X and Y reach each other;
/// returns the first time they did not.
pub fn run_checking(
    w: &mut World<RouterNode>,
    from: Instant,
    until: Instant,
) -> Result<Option<Instant>, String> {
    let step = Duration::from_millis(100);
    let mut gap = None;
    while w.now() < until {
        let next = w.now() + step;
        w.run_until(next).map_err(|v| v.to_string())?;
        if w.now() >= from && gap.is_none() && !(routes_to(w, X, Y) && routes_to(w, Y, X)) {
            gap = Some(w.now());
        }
    }
    Ok(gap)
}

/// One seed, X behind `a`, Y behind `b`.
pub fn nat_one(seed: u64, a: NatType, b: NatType, psk: bool) -> Result<NatOutcome, String> {
    let mut w = nat_world(seed, a, b, psk, NAT_TIMEOUT_DEFAULT_US);
    let t = nat_timing(seed);
    let from = Instant::ZERO + t.y_join + Duration::from_secs(JOIN_GRACE_SECS);
    let stall_at = Instant::ZERO + t.stall_at;
    let mut gap = run_checking(&mut w, from, stall_at)?;
    w.stall(t.stall_node, t.stall.total_micros());
    let end = Instant::ZERO + Duration::from_secs(RUN_SECS);
    gap = gap.or(run_checking(&mut w, from, end)?);
    let x_phase = w
        .node(X)
        .and_then(|n| n.router().punch_attempt(name_of(Y)).map(|a| a.phase));
    Ok(NatOutcome {
        punched: punched(&w),
        always_talked: gap.is_none(),
        gap,
        x_phase,
    })
}

/// Counts for one pair of NAT types.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PairCounts {
    /// Seeds run.
    pub seeds: u64,
    /// Seeds that ended punched.
    pub punched: u64,
    /// Seeds that ended relayed.
    pub relayed: u64,
    /// Seeds where X and Y lost each other at some check.
    pub gaps: u64,
}

/// Every unordered pair of NAT types, in table order.
pub fn nat_pairs() -> Vec<(NatType, NatType)> {
    let mut v = Vec::new();
    for (i, a) in NatType::ALL.iter().enumerate() {
        for b in &NatType::ALL[i..] {
            v.push((*a, *b));
        }
    }
    v
}

/// Runs seeds `start..start + seeds` for every pair (without a password for even seeds,
/// with one for odd); a run that breaks a world invariant is an error naming the seed.
pub fn nat_table(start: u64, seeds: u64) -> Result<Vec<(NatType, NatType, PairCounts)>, String> {
    let mut out = Vec::new();
    for (a, b) in nat_pairs() {
        let mut c = PairCounts::default();
        for s in start..start + seeds {
            let o = nat_one(s, a, b, s % 2 == 1).map_err(|e| {
                format!("{a} x {b} seed {s}: {e} (replay: weft-sim nat --seeds 1 --start {s})")
            })?;
            c.seeds += 1;
            if o.punched {
                c.punched += 1;
            } else {
                c.relayed += 1;
            }
            if !o.always_talked {
                c.gaps += 1;
            }
        }
        out.push((a, b, c));
    }
    Ok(out)
}

/// The table as text: one line per pair, shares of seeds punched and relayed.
pub fn render_table(rows: &[(NatType, NatType, PairCounts)]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<10} {:<10} {:>6} {:>9} {:>9} {:>12} {:>10}",
        "X nat", "Y nat", "seeds", "punched", "relayed", "always-talk", "expected"
    );
    for (a, b, c) in rows {
        let pct = |n: u64| 100.0 * n as f64 / c.seeds.max(1) as f64;
        let _ = writeln!(
            s,
            "{:<10} {:<10} {:>6} {:>8.1}% {:>8.1}% {:>11.1}% {:>10}",
            a.short(),
            b.short(),
            c.seeds,
            pct(c.punched),
            pct(c.relayed),
            pct(c.seeds - c.gaps),
            if NatType::punchable(*a, *b) {
                "punched"
            } else {
                "relayed"
            }
        );
    }
    s
}
