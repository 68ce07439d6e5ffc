//! Convergence benchmark: how long a fresh random mesh of weft routers takes to agree on
//! one topology (virtual time in the simulator), and what it costs in gossip per peer.
//!
//! ```text
//! cargo run -p weft-benches --release --bin converge -- [--huge] [--fit] [--seed S] [--degree D] [--wan] [--peers N]...
//! ```
//!
//! Sizes 10, 100 and 1000 by default; `--huge` adds 10,000; `--fit` runs 100, 300, 1000,
//! 3000 and 10,000 and fits gossip bytes per peer against N on a log-log scale (least
//! squares): the exponent is what "grows no faster than c·N·log N" is judged by (N·log N
//! over 100..10,000 fits an exponent of about 1.2). Each row also shows bytes per peer
//! divided by N·log2 N (flat or falling: within c·N·log N) and the row's peak memory
//! (VmHWM, reset before each row through /proc/self/clear_refs). The simulated routers
//! share one copy of each peer entry (`weft_sim::intern`), so memory grows with the
//! routers' tables of pointers, not N² whole entries. Each row is checked by the
//! simulator's invariants (same topology everywhere, loop-free unicast, exactly-once
//! broadcast) before it counts. Virtual times are exact for the seed; wall times are this
//! machine's.

use std::process::ExitCode;
use std::time::Instant as WallInstant;

use weft_core::rng::Rng;
use weft_core::time::Duration;
use weft_sim::net::NetConfig;
use weft_sim::router_node::RouterProfile;
use weft_sim::scenario::converge_mesh;

const USAGE: &str =
    "usage: converge [--huge] [--fit] [--seed S] [--degree D] [--wan] [--peers N]...";

/// Sizes `--fit` runs.
const FIT_SIZES: [usize; 5] = [100, 300, 1000, 3000, 10_000];

/// Peak resident memory of this process in KiB (VmHWM), if /proc says.
fn peak_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Resets VmHWM to the current RSS (Linux: "5" to clear_refs); false if refused.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn parse() -> Result<(Vec<usize>, u64, usize, bool), String> {
    let mut sizes = Vec::new();
    let mut huge = false;
    let mut fit = false;
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
            "--fit" => fit = true,
            "--wan" => wan = true,
            "--seed" => seed = num("--seed")?,
            "--degree" => degree = num("--degree")? as usize,
            "--peers" => sizes.push(num("--peers")? as usize),
            "--bench" => {} // cargo bench passes this
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    if fit {
        sizes.extend(FIT_SIZES);
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
        "{:>7} {:>14} {:>14} {:>16} {:>12} {:>15} {:>16} {:>12} {:>9} {:>9}",
        "peers",
        "converge (s)",
        "gossip msg/pr",
        "gossip KiB/peer",
        "B/(N lg N)",
        "stream wr/peer",
        "stream KiB/peer",
        "deliveries",
        "wall (s)",
        "peak MiB"
    );
    let mut points = Vec::new();
    for &n in &sizes {
        let reset = reset_peak();
        let profile = RouterProfile::sim();
        let timing = profile.timing(Duration::from_secs(1_200));
        let wall = WallInstant::now();
        let r = converge_mesh(seed, n, degree, net, profile.factory(), timing);
        let wall_s = wall.elapsed().as_secs_f64();
        match r {
            Ok(m) => {
                let p = n as f64;
                let t = m.totals;
                let bytes_per_peer = t.gossip.bytes as f64 / p;
                points.push((p, bytes_per_peer));
                let peak = match (reset, peak_kib()) {
                    (true, Some(k)) => format!("{:.0}", k as f64 / 1024.0),
                    (false, Some(k)) => format!("<={:.0}", k as f64 / 1024.0),
                    _ => "?".to_owned(),
                };
                println!(
                    "{:>7} {:>14.3} {:>14.1} {:>16.1} {:>12.2} {:>15.1} {:>16.1} {:>12} {:>9.2} {:>9}",
                    n,
                    m.converged_at.total_micros() as f64 / 1e6,
                    t.gossip.msgs as f64 / p,
                    bytes_per_peer / 1024.0,
                    bytes_per_peer / (p * p.log2().max(1.0)),
                    t.net.stream_writes as f64 / p,
                    t.net.stream_bytes as f64 / p / 1024.0,
                    m.deliveries,
                    wall_s,
                    peak
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
    if let Some(b) = weft_benches::loglog_slope(&points) {
        let (lo, hi) = (points[0].0, points[points.len() - 1].0);
        // The exponent N·log N itself fits over the same sizes, for comparison.
        let nlogn: Vec<(f64, f64)> = points.iter().map(|&(x, _)| (x, x * x.ln())).collect();
        println!(
            "fitted exponent: gossip bytes per peer ~ N^{b:.2} over {lo}..{hi} peers (N·log N alone fits N^{:.2})",
            weft_benches::loglog_slope(&nlogn).unwrap_or(f64::NAN)
        );
    }
    ExitCode::SUCCESS
}
