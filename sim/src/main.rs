//! `weft-sim`: run the simulator from the command line.
//!
//! ```text
//! weft-sim converge --peers N --seed S [--degree D] [--wan] [--discovery] [--toy]
//! weft-sim explore --seeds K [--start S] [--toy] [--verbose]
//! weft-sim sleeve --seeds K [--start S] [--verbose]
//! weft-sim nat --seeds K [--start S]
//! ```

use std::process::ExitCode;
use std::time::Instant as WallInstant;

use weft_core::rng::Rng;
use weft_core::time::Duration;
use weft_sim::net::NetConfig;
use weft_sim::router_node::{RouterProfile, explore_router};
use weft_sim::scenario::{MeshReport, Timing, converge_mesh, explore_one, replay_command};
use weft_sim::sleeve_scenario::{sleeve_one, sleeve_replay_command};
use weft_sim::toy::{ToyBug, toy_factory};

const USAGE: &str = "usage:
  weft-sim converge --peers N --seed S [--degree D] [--wan] [--discovery] [--toy]
  weft-sim explore --seeds K [--start S] [--toy] [--verbose]
  weft-sim sleeve --seeds K [--start S] [--verbose]
  weft-sim nat --seeds K [--start S]";

/// Toy-node timing (its heartbeat timeout is 1.5 s).
const TOY_TIMING: Timing = Timing {
    check_interval: Duration::from_millis(100),
    settle: Duration::from_millis(2_000),
    deadline: Duration::from_secs(120),
};

struct Args {
    words: Vec<String>,
}

impl Args {
    fn flag(&mut self, name: &str) -> bool {
        match self.words.iter().position(|w| w == name) {
            Some(i) => {
                self.words.remove(i);
                true
            }
            None => false,
        }
    }

    fn value(&mut self, name: &str) -> Result<Option<u64>, String> {
        let Some(i) = self.words.iter().position(|w| w == name) else {
            return Ok(None);
        };
        if i + 1 >= self.words.len() {
            return Err(format!("{name} needs a number"));
        }
        let v = self.words.remove(i + 1);
        self.words.remove(i);
        v.parse()
            .map(Some)
            .map_err(|_| format!("{name} wants a number, got {v:?}"))
    }

    fn done(&self) -> Result<(), String> {
        match self.words.first() {
            Some(w) => Err(format!("unexpected argument {w:?}")),
            None => Ok(()),
        }
    }
}

fn main() -> ExitCode {
    let mut words: Vec<String> = std::env::args().skip(1).collect();
    if words.is_empty() || words.iter().any(|w| w == "-h" || w == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let cmd = words.remove(0);
    let mut args = Args { words };
    let r = match cmd.as_str() {
        "converge" => converge(&mut args),
        "explore" => explore(&mut args),
        "sleeve" => sleeve(&mut args),
        "nat" => nat(&mut args),
        other => Err(format!("unknown command {other:?}")),
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("weft-sim: {e}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn converge(args: &mut Args) -> Result<ExitCode, String> {
    let peers = args.value("--peers")?.ok_or("converge needs --peers N")? as usize;
    let seed = args.value("--seed")?.unwrap_or(1);
    let degree = args.value("--degree")?.unwrap_or(3) as usize;
    let wan = args.flag("--wan");
    let discovery = args.flag("--discovery");
    let toy = args.flag("--toy");
    args.done()?;
    if !(2..=weft_sim::node::NODES_MAX).contains(&peers) || degree == 0 {
        return Err("need 2 <= peers <= 65536 and degree >= 1".into());
    }
    let net = if wan {
        NetConfig::random(&mut Rng::from_seed(seed))
    } else {
        NetConfig::lan()
    };
    let wall = WallInstant::now();
    let r = if toy {
        converge_mesh(
            seed,
            peers,
            degree,
            net,
            toy_factory(ToyBug::None),
            TOY_TIMING,
        )
    } else {
        let mut p = RouterProfile::sim();
        p.discovery = discovery;
        let timing = p.timing(Duration::from_secs(1_200));
        converge_mesh(seed, peers, degree, net, p.factory(), timing)
    };
    let wall = wall.elapsed();
    match r {
        Ok(m) => {
            print_report(&m, seed, wall.as_secs_f64());
            Ok(ExitCode::SUCCESS)
        }
        Err(f) => {
            eprintln!("FAILED: {f}");
            eprintln!(
                "replay: cargo run -p weft-sim --release -- converge --peers {peers} --seed {seed} --degree {degree}{}{}{}",
                if wan { " --wan" } else { "" },
                if discovery { " --discovery" } else { "" },
                if toy { " --toy" } else { "" }
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

fn print_report(m: &MeshReport, seed: u64, wall_s: f64) {
    let n = m.peers as f64;
    let t = m.totals;
    println!("peers {} degree {} seed {seed}", m.peers, m.degree);
    println!("converged at {} (virtual)", m.converged_at);
    println!(
        "per peer: {:.1} gossip msgs, {:.0} gossip bytes, {:.1} stream writes, {:.0} stream bytes",
        t.gossip.msgs as f64 / n,
        t.gossip.bytes as f64 / n,
        t.net.stream_writes as f64 / n,
        t.net.stream_bytes as f64 / n
    );
    println!("wall {wall_s:.2} s, {} deliveries simulated", m.deliveries);
    match peak_kib() {
        Some(k) => println!("peak memory {:.0} MiB (VmHWM)", k as f64 / 1024.0),
        None => println!("peak memory unknown (no /proc/self/status)"),
    }
}

/// Peak resident memory of this process in KiB (VmHWM in /proc/self/status).
fn peak_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn explore(args: &mut Args) -> Result<ExitCode, String> {
    let seeds = args.value("--seeds")?.ok_or("explore needs --seeds K")?;
    let start = args.value("--start")?.unwrap_or(0);
    let toy = args.flag("--toy");
    let verbose = args.flag("--verbose");
    args.done()?;
    let wall = WallInstant::now();
    for seed in start..start.saturating_add(seeds) {
        let r = if toy {
            explore_one(seed, toy_factory(ToyBug::None), TOY_TIMING)
        } else {
            explore_router(seed)
        };
        match r {
            Ok(rep) if verbose => println!(
                "seed {seed}: {} peers, faults [{}], converged {} after heal, trace {:016x}",
                rep.peers,
                rep.faults.join(" "),
                rep.heal_to_converged,
                rep.trace
            ),
            Ok(_) => {}
            Err(f) => {
                eprintln!("FAILED: {f}");
                eprintln!("world seed: {seed}");
                eprintln!(
                    "replay: {}{}",
                    replay_command(seed),
                    if toy { " --toy" } else { "" }
                );
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    println!(
        "explore: {seeds} seeds from {start} passed in {:.1} s",
        wall.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

fn sleeve(args: &mut Args) -> Result<ExitCode, String> {
    let seeds = args.value("--seeds")?.ok_or("sleeve needs --seeds K")?;
    let start = args.value("--start")?.unwrap_or(0);
    let verbose = args.flag("--verbose");
    args.done()?;
    let wall = WallInstant::now();
    for seed in start..start.saturating_add(seeds) {
        match sleeve_one(seed) {
            Ok(r) if verbose => println!(
                "seed {seed}: {} peers{}, {} frames, {} relayed, {} multi-hop unicasts, {} datagrams accepted, {} over MTU, {} churn duplicates, trace {:016x}",
                r.peers,
                if r.encrypt { " sealed" } else { "" },
                r.frames,
                r.relayed,
                r.multi_hop_unicasts,
                r.accepted,
                r.over_mtu,
                r.churn_duplicates,
                r.trace
            ),
            Ok(_) => {}
            Err(f) => {
                eprintln!("FAILED: {f}");
                eprintln!("replay: {}", sleeve_replay_command(seed));
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    println!(
        "sleeve: {seeds} seeds from {start} passed in {:.1} s",
        wall.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// Hole punching through every pair of NAT types: the share of seeds that end punched
/// and relayed, and that X and Y reached each other at every check. Fails (exit 1) when a
/// pair ends other than its NAT types allow or the two lost each other.
fn nat(args: &mut Args) -> Result<ExitCode, String> {
    let seeds = args.value("--seeds")?.ok_or("nat needs --seeds K")?;
    let start = args.value("--start")?.unwrap_or(0);
    args.done()?;
    if seeds == 0 {
        return Err("--seeds must be at least 1".into());
    }
    let wall = WallInstant::now();
    let rows = weft_sim::nat_scenario::nat_table(start, seeds)?;
    print!("{}", weft_sim::nat_scenario::render_table(&rows));
    println!(
        "nat: {} pairs x {seeds} seeds from {start} (odd seeds with a password) in {:.1} s",
        rows.len(),
        wall.elapsed().as_secs_f64()
    );
    let wrong = rows.iter().any(|(a, b, c)| {
        let want = weft_sim::nat::NatType::punchable(*a, *b);
        c.gaps > 0 || (if want { c.relayed } else { c.punched }) > 0
    });
    Ok(if wrong {
        eprintln!("FAILED: a pair ended other than its NAT types allow, or lost its path");
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
