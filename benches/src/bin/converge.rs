//! Convergence benchmark: how long a fresh random mesh of weft routers takes to agree on
//! one topology (virtual time in the simulator), and what it costs in gossip per peer.
//!
//! ```text
//! cargo run -p weft-benches --release --bin converge -- [--huge] [--seed S] [--degree D] [--wan] [--peers N]...
//! ```
//!
//! Sizes 10, 100 and 1000 by default; `--huge` adds 10,000. Memory grows as N²
//! (every router holds the whole topology): measured 1.5 GiB RSS at 1000 peers and
//! 5.7 GiB at 2000, so 10,000 needs roughly 140 GiB and does not fit a 24 GiB machine. Each row is checked by the simulator's invariants
//! (same topology everywhere, loop-free unicast, exactly-once broadcast) before it counts.
//! Virtual times are exact for the seed; wall times are this machine's.

use std::process::ExitCode;
use std::time::Instant as WallInstant;

use weft_core::rng::Rng;
use weft_core::time::Duration;
use weft_sim::net::NetConfig;
use weft_sim::router_node::RouterProfile;
use weft_sim::scenario::converge_mesh;

const USAGE: &str = "usage: converge [--huge] [--seed S] [--degree D] [--wan] [--peers N]...";

fn parse() -> Result<(Vec<usize>, u64, usize, bool), String> {
    let mut sizes = Vec::new();
    let mut huge = false;
    let (mut seed, mut degree, mut wan) = (1u64, 3usize, false);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut num = |name: &str| -> Result<u64, String> {
            let v = it.next().ok_or(format!("{name} needs a number"))?;
            v.parse()
                .map_err(|_| format!("{name} wants a number, got {v:?}"))
        };
        match a.as_str() {
            "--huge" => huge = true,
            "--wan" => wan = true,
            "--seed" => seed = num("--seed")?,
            "--degree" => degree = num("--degree")? as usize,
            "--peers" => sizes.push(num("--peers")? as usize),
            "--bench" => {} // cargo bench passes this
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    if sizes.is_empty() {
        sizes = vec![10, 100, 1000];
    }
    if huge {
        sizes.push(10_000);
    }
    Ok((sizes, seed, degree, wan))
}

fn main() -> ExitCode {
    let (sizes, seed, degree, wan) = weft_benches::args_or_exit(parse(), "converge: ", USAGE);
    let net = if wan {
        NetConfig::random(&mut Rng::from_seed(seed))
    } else {
        NetConfig::lan()
    };
    println!(
        "weft convergence: random mesh, {degree} connect targets per peer, seed {seed}, {} network",
        if wan { "lossy WAN" } else { "LAN" }
    );
    println!(
        "{:>7} {:>14} {:>14} {:>16} {:>15} {:>16} {:>12} {:>9}",
        "peers",
        "converge (s)",
        "gossip msg/pr",
        "gossip KiB/peer",
        "stream wr/peer",
        "stream KiB/peer",
        "deliveries",
        "wall (s)"
    );
    for &n in &sizes {
        let profile = RouterProfile::sim();
        let timing = profile.timing(Duration::from_secs(1_200));
        let wall = WallInstant::now();
        let r = converge_mesh(seed, n, degree, net, profile.factory(), timing);
        let wall_s = wall.elapsed().as_secs_f64();
        match r {
            Ok(m) => {
                let p = n as f64;
                let t = m.totals;
                println!(
                    "{:>7} {:>14.3} {:>14.1} {:>16.1} {:>15.1} {:>16.1} {:>12} {:>9.2}",
                    n,
                    m.converged_at.total_micros() as f64 / 1e6,
                    t.gossip.msgs as f64 / p,
                    t.gossip.bytes as f64 / p / 1024.0,
                    t.net.stream_writes as f64 / p,
                    t.net.stream_bytes as f64 / p / 1024.0,
                    m.deliveries,
                    wall_s
                );
            }
            Err(f) => {
                eprintln!("{n} peers FAILED: {f}");
                eprintln!(
                    "replay: cargo run -p weft-sim --release -- converge --peers {n} --seed {seed} --degree {degree}{}",
                    if wan { " --wan" } else { "" }
                );
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
