//! Sleeve scenarios: hosts with one container each, on a sparse random mesh (so many pairs
//! have no direct link and their frames are relayed), sending broadcast and unicast
//! frames through the phases of one run derived from one seed:
//!
//! 1. converge with datagrams duplicated and reordered but none lost, links of mixed MTU:
//!    every neighbour path up, PMTU known where the probe fits, frames exactly once;
//! 2. datagrams cut on one link whose stream stays up: its paths go down after the
//!    heartbeat timeout (the others stay up) and come back after the heal;
//! 3. a partition: once it has converged, no path across it is up, frames exactly once
//!    within each side; heal: paths up again, frames exactly once everywhere;
//! 4. datagram loss and a host restart: frames at most once once routes have settled;
//! 5. churn (partitions, heals and restarts with frames in flight): frames unaltered and
//!    never back at their origin (duplicates are counted, see [`crate::sleeve_check`]).
//!
//! Throughout, no datagram accepted twice, no PMTU above its link's MTU, and no relay loop
//! among the frames sent while routes held still. A failure names the seed;
//! [`sleeve_replay_command`] replays it.

use std::collections::BTreeMap;
use std::ops::Range;
use std::rc::Rc;

use weft_core::crypto::Psk;
use weft_core::rng::Rng;
use weft_core::sleeve::{HEARTBEAT_INTERVAL_MS, HEARTBEAT_TIMEOUT_MS};
use weft_core::time::Duration;

use crate::check::expected_components;
use crate::net::{NetConfig, mix};
use crate::node::{NODES_MAX, index_of_name, name_of};
use crate::router_node::{RouterNode, RouterProfile};
use crate::scenario::{Failure, random_mesh, run_to_convergence};
use crate::sleeve_check::{
    Expect, PathView, check_deliveries, check_no_relay_loop, check_no_replay, check_paths,
    check_pmtu,
};
use crate::sleeve_node::{SleeveShared, sleeve_factory};
use crate::world::World;

/// Fewest hosts in a sleeve scenario.
pub const SLEEVE_PEERS_MIN: usize = 4;
/// Most hosts in a sleeve scenario.
pub const SLEEVE_PEERS_MAX: usize = 8;
/// Longest test frame sent (fits one datagram on the smallest link MTU drawn).
pub const SLEEVE_FRAME_LEN_MAX: usize = 1100;
/// Unicast frames each host sends per round.
pub const UNICASTS_PER_HOST: usize = 2;
/// Time a round of frames is given to arrive (latency, jitter and reordering, all hops).
const DELIVERY_WAIT: Duration = Duration::from_secs(2);
/// Time every connect target is given to connect after convergence (reconnection
/// backoff is at most 5 s in the sim profile).
const CONNECT_WAIT: Duration = Duration::from_secs(20);

/// What one sleeve scenario did (for logs and the seed sweep).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SleeveReport {
    /// Hosts.
    pub peers: usize,
    /// Whether datagrams were sealed.
    pub encrypt: bool,
    /// Frames the containers sent.
    pub frames: u64,
    /// Frames the engines relayed for others (their own counters, summed).
    pub relayed: u64,
    /// Unicast frames seen on the wire taking more than one hop (plain runs only).
    pub multi_hop_unicasts: u64,
    /// Datagrams the engines accepted.
    pub accepted: usize,
    /// Datagrams the network dropped as too big for their link.
    pub over_mtu: u64,
    /// Second copies of frames sent during churn (none are allowed otherwise).
    pub churn_duplicates: u64,
    /// Trace hash of the whole run.
    pub trace: u64,
}

/// The one-line command that replays sleeve seed `seed`.
pub fn sleeve_replay_command(seed: u64) -> String {
    format!("cargo run -p weft-sim --release -- sleeve --seeds 1 --start {seed}")
}

/// A world of `peers` routers with sleeves (sealing when `encrypt`) recording into
/// `shared`; no connections yet.
pub fn sleeve_world(
    seed: u64,
    peers: usize,
    net: NetConfig,
    encrypt: bool,
    shared: &Rc<SleeveShared>,
) -> World<RouterNode> {
    World::new(
        seed,
        peers,
        net,
        sleeve_factory(profile(encrypt), Rc::clone(shared)),
    )
}

fn profile(encrypt: bool) -> RouterProfile {
    let mut p = RouterProfile::sim();
    if encrypt {
        p.psk = Some(Psk::from_password(b"sim-sleeve"));
    }
    p
}

/// Every live host's sleeve paths.
pub fn paths(w: &World<RouterNode>) -> Vec<PathView> {
    let now = w.now();
    let mut v = Vec::new();
    for i in 0..w.len() {
        let Some(s) = w.node(i).and_then(RouterNode::sleeve) else {
            continue;
        };
        for p in s.paths(now) {
            if let Some(peer) = index_of_name(p.name, NODES_MAX) {
                v.push(PathView {
                    host: i,
                    peer,
                    up: p.up,
                    pmtu_bytes: p.pmtu_bytes,
                });
            }
        }
    }
    v
}

/// Every (host, neighbour) pair with an established connection.
pub fn neighbour_pairs(w: &World<RouterNode>) -> Vec<(usize, usize)> {
    let mut v = Vec::new();
    for i in 0..w.len() {
        if let Some(n) = w.node(i) {
            v.extend(
                n.router()
                    .neighbours()
                    .filter_map(|p| index_of_name(p, NODES_MAX))
                    .map(|j| (i, j)),
            );
        }
    }
    v
}

/// The container on `from` sends a frame (`to`: `None` broadcasts) of `len` bytes now.
pub fn send_frame(
    w: &mut World<RouterNode>,
    shared: &SleeveShared,
    from: usize,
    to: Option<usize>,
    len: usize,
) {
    let f = shared.trace.borrow_mut().send(from, to, len, w.now());
    w.poke(from, |n, now| n.bridge_frame(now, &f));
}

/// What a round of frames must achieve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Round {
    /// Nothing lost, routes still: exactly the hosts each frame is for.
    Exact,
    /// Datagrams lost, routes still: at most once per host.
    AtMostOnce,
    /// Routes moving: unaltered, never back at the origin.
    Intact,
}

/// One round of frames: every live host broadcasts, then sends [`UNICASTS_PER_HOST`]
/// unicasts within its component (half of them, where it can, to hosts it has no direct
/// link to); checked as `round` says. Returns the frames' ids.
pub fn frame_round(
    w: &mut World<RouterNode>,
    shared: &SleeveShared,
    rng: &mut Rng,
    round: Round,
) -> Result<Range<u64>, String> {
    let comps = expected_components(w);
    let comp_of: BTreeMap<usize, Vec<usize>> = comps
        .iter()
        .flat_map(|c| c.iter().map(move |&h| (h, c.clone())))
        .collect();
    let start = shared.trace.borrow().next_id();
    let hosts: Vec<usize> = comp_of.keys().copied().collect();
    for &h in &hosts {
        let len = frame_len(rng);
        send_frame(w, shared, h, None, len);
    }
    run(w, DELIVERY_WAIT)?;
    for &h in &hosts {
        let others: Vec<usize> = comp_of[&h].iter().copied().filter(|&o| o != h).collect();
        if others.is_empty() {
            continue;
        }
        let far: Vec<usize> = match w.node(h) {
            Some(n) => {
                let near: Vec<usize> = n
                    .router()
                    .neighbours()
                    .filter_map(|p| index_of_name(p, NODES_MAX))
                    .collect();
                others
                    .iter()
                    .copied()
                    .filter(|o| !near.contains(o))
                    .collect()
            }
            None => Vec::new(),
        };
        for k in 0..UNICASTS_PER_HOST {
            let pool = if k % 2 == 0 && !far.is_empty() {
                &far
            } else {
                &others
            };
            let to = pool[rng.below(pool.len() as u64) as usize];
            let len = frame_len(rng);
            send_frame(w, shared, h, Some(to), len);
        }
    }
    run(w, DELIVERY_WAIT)?;
    let ids = start..shared.trace.borrow().next_id();
    let t = shared.trace.borrow();
    check_deliveries(&t, ids.clone(), |f| match round {
        Round::Exact => Expect::Exactly(comp_of.get(&f.origin).cloned().unwrap_or_default()),
        Round::AtMostOnce => Expect::AtMostOnce,
        Round::Intact => Expect::Intact,
    })?;
    Ok(ids)
}

fn frame_len(rng: &mut Rng) -> usize {
    60 + rng.below((SLEEVE_FRAME_LEN_MAX - 60) as u64 + 1) as usize
}

fn run(w: &mut World<RouterNode>, d: Duration) -> Result<(), String> {
    let until = w.now() + d;
    w.run_until(until).map_err(|v| v.to_string())
}

/// The checks that hold at any time: no datagram accepted twice, PMTU within each link,
/// and no relay loop among the frames of `still` (sent while routes held still).
fn always(
    w: &World<RouterNode>,
    shared: &SleeveShared,
    still: &[Range<u64>],
) -> Result<(), String> {
    let t = shared.trace.borrow();
    for ids in still {
        check_no_relay_loop(&t, ids.clone())?;
    }
    check_no_replay(&t)?;
    check_pmtu(&paths(w), |a, b| w.link_mtu(a, b), false)
}

/// After convergence: once every connect target is connected (convergence needs only
/// enough of them) and two heartbeats later, every neighbour path is up and its PMTU
/// known where the probe fits.
pub fn paths_settled(w: &mut World<RouterNode>) -> Result<(), String> {
    let deadline = w.now() + CONNECT_WAIT;
    while let Some((i, j)) = unconnected_target(w) {
        if w.now() >= deadline {
            return Err(format!("{i} has no connection to its target {j}"));
        }
        run(w, Duration::from_millis(100))?;
    }
    // Each side has heard the other and had its probe answered.
    run(w, Duration::from_millis(2 * HEARTBEAT_INTERVAL_MS + 500))?;
    let p = paths(w);
    check_paths(&p, &neighbour_pairs(w), true)?;
    check_pmtu(&p, |a, b| w.link_mtu(a, b), true)
}

/// A connect target, both ends alive and linked, without a connection.
fn unconnected_target(w: &World<RouterNode>) -> Option<(usize, usize)> {
    (0..w.len())
        .flat_map(|i| w.targets(i).iter().map(move |&j| (i, j)))
        .find(|&(i, j)| {
            w.reachable(i, j)
                && w.node(i)
                    .is_some_and(|n| n.router().connection_to(name_of(j)).is_none())
        })
}

/// Runs sleeve seed `seed` (see the module doc) and checks every phase.
pub fn sleeve_one(seed: u64) -> Result<SleeveReport, Failure> {
    let mut rng = Rng::from_seed(mix(seed ^ 0x0073_6c65_6576_6500));
    let peers =
        SLEEVE_PEERS_MIN + rng.below((SLEEVE_PEERS_MAX - SLEEVE_PEERS_MIN + 1) as u64) as usize;
    let encrypt = rng.chance(1, 2);
    let mut net = if rng.chance(1, 4) {
        NetConfig::lan()
    } else {
        NetConfig::random(&mut rng)
    };
    net.datagram_loss_ppm = 0;
    net.datagram_dup_ppm = 20_000 + rng.below(200_000);
    net.datagram_reorder_ppm = rng.below(100_000);
    net.reorder_us = 1_000 + rng.below(30_000);
    let lossy = NetConfig {
        datagram_loss_ppm: 10_000 + rng.below(90_000),
        ..net
    };
    let shared = SleeveShared::new();
    let mut w = sleeve_world(seed, peers, net, encrypt, &shared);
    let fail = |w: &World<RouterNode>, phase: &str, what: String| Failure {
        seed,
        time: w.now(),
        what: format!("{phase}: {what}"),
    };
    random_mesh(&mut w, 2, &mut rng);
    for a in 0..peers {
        for b in a + 1..peers {
            match rng.below(8) {
                // Below the probe: the PMTU stays unknown, frames still fit.
                0 | 1 => w.set_link_mtu(a, b, 1300 + rng.below(181) as u16),
                2 => w.set_link_mtu(a, b, 9000),
                _ => {}
            }
        }
    }
    let timing = profile(encrypt).timing(Duration::from_secs(120));

    // 1. Converged, nothing lost.
    let mut still = Vec::new();
    run_to_convergence(&mut w, timing)?;
    paths_settled(&mut w).map_err(|e| fail(&w, "converged", e))?;
    still.push(
        frame_round(&mut w, &shared, &mut rng, Round::Exact)
            .map_err(|e| fail(&w, "converged", e))?,
    );
    always(&w, &shared, &still).map_err(|e| fail(&w, "converged", e))?;

    // 2. One link loses its datagrams but keeps its stream.
    let pairs = neighbour_pairs(&w);
    if let Some(&(a, b)) = pairs.get(rng.below(pairs.len().max(1) as u64) as usize) {
        w.cut_datagrams(a, b);
        let silent = Duration::from_millis(HEARTBEAT_TIMEOUT_MS + HEARTBEAT_INTERVAL_MS);
        run(&mut w, silent).map_err(|e| fail(&w, "udp cut", e))?;
        let p = paths(&w);
        let others: Vec<(usize, usize)> = neighbour_pairs(&w)
            .into_iter()
            .filter(|&(x, y)| (x.min(y), x.max(y)) != (a.min(b), a.max(b)))
            .collect();
        let connected = w
            .node(a)
            .is_some_and(|n| n.router().connection_to(name_of(b)).is_some());
        if !connected {
            return Err(fail(&w, "udp cut", format!("{a} lost its stream to {b}")));
        }
        check_paths(&p, &[(a, b), (b, a)], false).map_err(|e| fail(&w, "udp cut", e))?;
        check_paths(&p, &others, true).map_err(|e| fail(&w, "udp cut", e))?;
        w.restore_links();
        run(
            &mut w,
            Duration::from_millis(2 * HEARTBEAT_INTERVAL_MS + 500),
        )
        .map_err(|e| fail(&w, "udp heal", e))?;
        check_paths(&paths(&w), &[(a, b), (b, a)], true).map_err(|e| fail(&w, "udp heal", e))?;
    }

    // 3. A partition, then its heal.
    let groups: Vec<u32> = (0..peers).map(|_| rng.below(2) as u32).collect();
    w.partition(&groups);
    run_to_convergence(&mut w, timing)?;
    let across: Vec<(usize, usize)> = (0..peers)
        .flat_map(|a| (0..peers).map(move |b| (a, b)))
        .filter(|&(a, b)| groups[a] != groups[b])
        .collect();
    check_paths(&paths(&w), &across, false).map_err(|e| fail(&w, "partition", e))?;
    still.push(
        frame_round(&mut w, &shared, &mut rng, Round::Exact)
            .map_err(|e| fail(&w, "partition", e))?,
    );
    w.heal_partition();
    run_to_convergence(&mut w, timing)?;
    paths_settled(&mut w).map_err(|e| fail(&w, "healed", e))?;
    still.push(
        frame_round(&mut w, &shared, &mut rng, Round::Exact).map_err(|e| fail(&w, "healed", e))?,
    );
    always(&w, &shared, &still).map_err(|e| fail(&w, "healed", e))?;

    // 4. Loss, and a host that restarts.
    w.set_net(lossy);
    let victim = rng.below(peers as u64) as usize;
    w.crash(victim, rng.chance(1, 2));
    run(&mut w, Duration::from_millis(500 + rng.below(3_000))).map_err(|e| fail(&w, "crash", e))?;
    w.restart(victim);
    run_to_convergence(&mut w, timing)?;
    for _ in 0..2 {
        still.push(
            frame_round(&mut w, &shared, &mut rng, Round::AtMostOnce)
                .map_err(|e| fail(&w, "lossy", e))?,
        );
    }
    always(&w, &shared, &still).map_err(|e| fail(&w, "lossy", e))?;

    // 5. Churn: frames while routes move.
    let mut churn = Vec::new();
    for _ in 0..3 {
        match rng.below(3) {
            0 => {
                let groups: Vec<u32> = (0..peers).map(|_| rng.below(2) as u32).collect();
                w.partition(&groups);
            }
            1 => w.heal_partition(),
            _ => {
                let v = rng.below(peers as u64) as usize;
                w.crash(v, rng.chance(1, 2));
                w.restart(v);
            }
        }
        run(&mut w, Duration::from_millis(rng.below(2_000))).map_err(|e| fail(&w, "churn", e))?;
        churn.push(
            frame_round(&mut w, &shared, &mut rng, Round::Intact)
                .map_err(|e| fail(&w, "churn", e))?,
        );
    }
    w.heal_partition();
    run_to_convergence(&mut w, timing)?;
    still.push(
        frame_round(&mut w, &shared, &mut rng, Round::AtMostOnce)
            .map_err(|e| fail(&w, "after churn", e))?,
    );
    always(&w, &shared, &still).map_err(|e| fail(&w, "after churn", e))?;

    let t = shared.trace.borrow();
    let frames = t.next_id();
    let multi_hop_unicasts = (0..frames)
        .filter(|&id| t.frame(id).is_some_and(|f| f.to.is_some()) && t.hops(id).len() > 1)
        .count() as u64;
    let mut relayed = 0;
    let mut over_mtu = 0;
    for i in 0..peers {
        relayed += w
            .node(i)
            .and_then(RouterNode::sleeve)
            .map_or(0, |s| s.stats().frames_relayed);
        over_mtu += w.stats(i).datagrams_over_mtu;
    }
    let churn_duplicates = churn.into_iter().map(|ids| t.duplicates(ids)).sum();
    Ok(SleeveReport {
        peers,
        encrypt,
        frames,
        churn_duplicates,
        relayed,
        multi_hop_unicasts,
        accepted: t.accepted_len(),
        over_mtu,
        trace: w.trace_hash(),
    })
}
