//! Scenarios: build a mesh, converge it, or run a random fault schedule from one seed.
//!
//! Everything — mesh, link model, fault schedule, node seeds — derives from the one seed,
//! so a failure is replayed by re-running that seed.

use std::fmt;

use weft_core::rng::Rng;
use weft_core::time::{Duration, Instant};

use crate::check::{check_all, expected_components, topologies_agree};
use crate::net::{NetConfig, mix};
use crate::node::{GossipStats, SimNode};
use crate::world::{Factory, NodeStats, World};

/// Explore scenarios have at least this many peers.
pub const EXPLORE_PEERS_MIN: usize = 10;
/// ... and at most this many.
pub const EXPLORE_PEERS_MAX: usize = 30;
/// Most faults in one explore scenario.
pub const EXPLORE_FAULTS_MAX: u64 = 4;

/// How long to wait and how to decide a world has converged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Cheap checks run this often (virtual time).
    pub check_interval: Duration,
    /// Digests must hold still this long before the full check (covers a heartbeat
    /// timeout, so links that died silently have been noticed).
    pub settle: Duration,
    /// Give up this long after the start of the wait.
    pub deadline: Duration,
}

/// A broken invariant, with what is needed to replay it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The world seed.
    pub seed: u64,
    /// Virtual time of the failure.
    pub time: Instant,
    /// What broke.
    pub what: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {} failed at {}: {}",
            self.seed, self.time, self.what
        )
    }
}

/// Traffic totals over all peers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Network counters summed.
    pub net: NodeStats,
    /// Node gossip counters summed (when the node keeps them).
    pub gossip: GossipStats,
}

/// Result of waiting for convergence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Converged {
    /// First instant of the stable stretch that passed the full check.
    pub at: Instant,
    /// Traffic totals at that instant.
    pub totals: Totals,
}

/// Sums the traffic counters of all nodes.
pub fn totals<N: SimNode>(w: &World<N>) -> Totals {
    let mut t = Totals::default();
    for i in 0..w.len() {
        let s = w.stats(i);
        t.net.stream_writes += s.stream_writes;
        t.net.stream_bytes += s.stream_bytes;
        t.net.datagrams += s.datagrams;
        t.net.datagram_bytes += s.datagram_bytes;
        t.net.dials += s.dials;
        if let Some(g) = w.node(i).and_then(|n| n.gossip_stats()) {
            t.gossip.msgs += g.msgs;
            t.gossip.bytes += g.bytes;
        }
    }
    t
}

/// Gives every node `degree` connect targets: one lower-numbered node (so the target graph
/// is connected) and `degree - 1` other random ones.
pub fn random_mesh<N: SimNode>(w: &mut World<N>, degree: usize, rng: &mut Rng) {
    let n = w.len();
    for i in 0..n {
        let mut picked: Vec<usize> = Vec::with_capacity(degree);
        if i > 0 {
            picked.push(rng.below(i as u64) as usize);
        }
        let want = degree.min(n - 1);
        let mut tries = 0;
        while picked.len() < want && tries < 16 * want {
            tries += 1;
            let j = rng.below(n as u64) as usize;
            if j != i && !picked.contains(&j) {
                picked.push(j);
            }
        }
        for j in picked {
            w.connect(i, j);
        }
    }
}

/// Runs until every expected component agrees and passes the full check, or the deadline.
pub fn run_to_convergence<N: SimNode>(
    w: &mut World<N>,
    timing: Timing,
) -> Result<Converged, Failure> {
    let seed = w.seed();
    let fail = |w: &World<N>, what: String| Failure {
        seed,
        time: w.now(),
        what,
    };
    let deadline = w.now() + timing.deadline;
    let mut check_rng = Rng::from_seed(mix(seed ^ w.now().total_micros()));
    let mut stable: Option<(Instant, Vec<u64>, Totals)> = None;
    let mut last = String::from("never checked");
    let mut last_check = w.now();
    loop {
        let next = w.now() + timing.check_interval;
        if next > deadline {
            return Err(fail(
                w,
                format!("no convergence within {}: {last}", timing.deadline),
            ));
        }
        w.run_until(next).map_err(|v| Failure {
            seed,
            time: v.time,
            what: v.what,
        })?;
        if let Some((since, _, _)) = &stable {
            // While digests hold still, re-check only a few times per settle window: a fine
            // check interval times O(N) digests of O(N) entries adds up in big meshes.
            let step = Duration::from_micros(timing.settle.total_micros() / 8);
            let held = w.now().saturating_since(*since);
            if held < timing.settle && w.now().saturating_since(last_check) < step {
                continue;
            }
        }
        last_check = w.now();
        let comps = expected_components(w);
        match topologies_agree(w, &comps) {
            Err(e) => {
                last = e;
                stable = None;
            }
            Ok(()) => {
                let digests: Vec<u64> = (0..w.len())
                    .map(|i| w.node(i).map_or(0, |n| n.topology_digest()))
                    .collect();
                match &stable {
                    Some((_, d, _)) if *d == digests => {}
                    _ => stable = Some((w.now(), digests, totals(w))),
                }
                let (since, _, t) = stable.as_ref().expect("set above");
                if w.now().saturating_since(*since) >= timing.settle {
                    let (since, t) = (*since, *t);
                    match check_all(w, &comps, &mut check_rng) {
                        Ok(()) => {
                            return Ok(Converged {
                                at: since,
                                totals: t,
                            });
                        }
                        Err(e) => {
                            last = e;
                            stable = None;
                        }
                    }
                }
            }
        }
    }
}

/// What one explore scenario did (for logs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExploreReport {
    /// Peers in the scenario.
    pub peers: usize,
    /// Faults injected, in order, one word each.
    pub faults: Vec<&'static str>,
    /// Virtual time from heal to convergence.
    pub heal_to_converged: Duration,
    /// Trace hash of the whole run.
    pub trace: u64,
}

/// Runs one random fault scenario derived from `seed` and checks that everything
/// converges after the faults heal.
pub fn explore_one<N: SimNode>(
    seed: u64,
    factory: Factory<N>,
    timing: Timing,
) -> Result<ExploreReport, Failure> {
    let mut rng = Rng::from_seed(mix(seed ^ 0x0065_7870_6c6f_7265));
    let peers =
        EXPLORE_PEERS_MIN + rng.below((EXPLORE_PEERS_MAX - EXPLORE_PEERS_MIN + 1) as u64) as usize;
    let degree = 2 + rng.below(3) as usize;
    let net = if rng.chance(1, 4) {
        NetConfig::lan()
    } else {
        NetConfig::random(&mut rng)
    };
    let mut w = World::new(seed, peers, net, factory);
    random_mesh(&mut w, degree, &mut rng);
    let wrap = |v: crate::world::Violation| Failure {
        seed,
        time: v.time,
        what: v.what,
    };

    let warmup = Duration::from_millis(rng.below(6_000));
    w.run_until(w.now() + warmup).map_err(wrap)?;
    let mut faults = Vec::new();
    let mut crashed: Vec<usize> = Vec::new();
    for _ in 0..1 + rng.below(EXPLORE_FAULTS_MAX) {
        crashed.retain(|&i| {
            let restart = rng.chance(1, 2);
            if restart {
                w.restart(i);
            }
            !restart
        });
        match rng.below(6) {
            0 => {
                let groups: Vec<u32> = (0..peers).map(|_| rng.below(2) as u32).collect();
                w.partition(&groups);
                faults.push("partition2");
            }
            1 => {
                let k = 2 + rng.below(2) as u32;
                let groups: Vec<u32> = (0..peers).map(|_| rng.below(u64::from(k)) as u32).collect();
                w.partition(&groups);
                faults.push("partitionk");
            }
            2 => {
                for _ in 0..1 + rng.below(3) {
                    let i = rng.below(peers as u64) as usize;
                    if let Some(&j) = w.targets(i).first() {
                        w.cut(i, j);
                    }
                }
                faults.push("cut");
            }
            3 => {
                let i = rng.below(peers as u64) as usize;
                w.crash(i, rng.chance(1, 2));
                if !crashed.contains(&i) {
                    crashed.push(i);
                }
                faults.push("crash");
            }
            4 => {
                let i = rng.below(peers as u64) as usize;
                let us = 100_000 + rng.below(3_000_000);
                w.stall(i, us);
                faults.push("stall");
            }
            _ => {
                w.heal_partition();
                w.restore_links();
                faults.push("heal");
            }
        }
        let span = Duration::from_millis(500 + rng.below(8_000));
        w.run_until(w.now() + span).map_err(wrap)?;
        // Safety at a sample point: nobody invents peers.
        for i in 0..peers {
            if let Some(n) = w.node(i)
                && n.topology_len() > peers
            {
                return Err(Failure {
                    seed,
                    time: w.now(),
                    what: format!(
                        "node {i} knows {} peers, only {peers} exist",
                        n.topology_len()
                    ),
                });
            }
        }
    }
    w.heal_partition();
    w.restore_links();
    w.unstall_all();
    for i in crashed {
        w.restart(i);
    }
    let healed = w.now();
    let c = run_to_convergence(&mut w, timing)?;
    Ok(ExploreReport {
        peers,
        faults,
        heal_to_converged: c.at.saturating_since(healed),
        trace: w.trace_hash(),
    })
}

/// The one-line command that replays explore seed `seed`.
pub fn replay_command(seed: u64) -> String {
    format!("cargo run -p weft-sim --release -- explore --seeds 1 --start {seed}")
}

/// What converging a fresh random mesh measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MeshReport {
    /// Peers in the mesh.
    pub peers: usize,
    /// Connect targets per peer.
    pub degree: usize,
    /// Virtual time from start to convergence.
    pub converged_at: Instant,
    /// Traffic up to convergence.
    pub totals: Totals,
    /// Deliveries simulated (whole run, including the settle window).
    pub deliveries: u64,
}

/// Builds a random mesh of `peers` with `degree` targets each, everything dialled at time
/// zero, and runs it to convergence.
pub fn converge_mesh<N: SimNode>(
    seed: u64,
    peers: usize,
    degree: usize,
    net: NetConfig,
    factory: Factory<N>,
    timing: Timing,
) -> Result<MeshReport, Failure> {
    let mut w = World::new(seed, peers, net, factory);
    let mut rng = Rng::from_seed(mix(seed ^ 0x6d65_7368));
    random_mesh(&mut w, degree, &mut rng);
    let c = run_to_convergence(&mut w, timing)?;
    Ok(MeshReport {
        peers,
        degree,
        converged_at: c.at,
        totals: c.totals,
        deliveries: w.deliveries(),
    })
}
