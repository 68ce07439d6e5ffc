//! The core's own costs per router at large N: what one router spends on the topology
//! of an N-peer network, for N = 100 ... 10,000, and how each cost grows.
//!
//! ```text
//! cargo run -p weft-benches --release --bin corecost -- [--peers N]... [--degree D] [--seed S]
//! ```
//!
//! The network is a random mesh like the simulator's (`--degree` connect targets per
//! peer, default 3, so about 2·D connections each, every one established on both ends).
//! For each N, one router's view of it is built and timed (median of repeated runs):
//! - `merge all`: every entry arriving in honest gossip messages into a fresh table (a new
//!   router's first full exchange);
//! - `merge one`: one newer version of one entry into the full table (a change flooded);
//! - `routes`: unicast routes over the whole table (`Routes::compute`, redone lazily after
//!   a change);
//! - `bcast tree`: one source's broadcast tree on fresh routes (one flood relayed);
//! - `encode all`: the whole table as gossip messages (to a new neighbour; it was also the
//!   periodic anti-entropy, to 2·log2 N neighbours a round, before digests);
//! - `encode one`: one changed entry as a message (news);
//! - `digest`: the periodic anti-entropy digest (`Topology::sync_digest`, kept up to date
//!   by every change) beside the (name, uid, version) hash the simulator used to compare
//!   (`Topology::digest`, O(N));
//! - `summary`: the summaries sent when two digests differ.
//!
//! Printed: microseconds per operation, and per cost the exponent b of a least-squares
//! fit cost ~ N^b over the sizes run (1 is linear, 2 quadratic; N·log N fits about 1.1
//! over 100..10,000). Absolute times are this machine's; the exponents are the result.

use std::hint::black_box;
use std::process::ExitCode;
use std::time::Instant as WallInstant;

use weft_core::anti_entropy;
use weft_core::gossip::{self, GOSSIP_ENTRIES_PER_MSG_MAX};
use weft_core::peer::{PeerName, PeerUid};
use weft_core::rng::Rng;
use weft_core::routes::Routes;
use weft_core::topology::{ConnInfo, PeerEntry, Topology};

const USAGE: &str = "usage: corecost [--peers N]... [--degree D] [--seed S]";
const SIZES: [usize; 5] = [100, 300, 1000, 3000, 10_000];
/// Each cost is timed over at least this long (repeats), median of the repeats.
const MEASURE_MS: u128 = 200;

fn parse() -> Result<(Vec<usize>, usize, u64), String> {
    let (mut sizes, mut degree, mut seed) = (Vec::new(), 3usize, 1u64);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut num = |name: &str| -> Result<u64, String> {
            let v = it.next().ok_or(format!("{name} needs a number"))?;
            v.parse()
                .map_err(|_| format!("{name} wants a number, got {v:?}"))
        };
        match a.as_str() {
            "--peers" => {
                let n = num("--peers")?;
                if !(10..=16_000).contains(&n) {
                    return Err(format!("--peers {n}: want 10..=16000"));
                }
                sizes.push(n as usize);
            }
            "--degree" => degree = num("--degree")?.clamp(1, 64) as usize,
            "--seed" => seed = num("--seed")?,
            "--bench" => {}
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    if sizes.is_empty() {
        sizes = SIZES.to_vec();
    }
    sizes.sort_unstable();
    sizes.dedup();
    Ok((sizes, degree, seed))
}

fn name(i: usize) -> PeerName {
    PeerName::from_u64(0x0200_0000_0000 + i as u64)
}

/// Every peer's entry of a random mesh of `n` peers, `degree` targets each (one lower
/// numbered, so it is connected), both ends announcing each connection as established.
fn mesh(n: usize, degree: usize, seed: u64) -> Vec<PeerEntry> {
    let mut rng = Rng::from_seed(seed);
    let mut adj: Vec<Vec<usize>> = vec![Vec::new(); n];
    for i in 1..n {
        let mut picked = vec![rng.below(i as u64) as usize];
        while picked.len() < degree.min(n - 1) {
            let j = rng.below(n as u64) as usize;
            if j != i && !picked.contains(&j) {
                picked.push(j);
            }
        }
        for j in picked {
            if !adj[i].contains(&j) {
                adj[i].push(j);
                adj[j].push(i);
            }
        }
    }
    (0..n)
        .map(|i| PeerEntry {
            name: name(i),
            uid: PeerUid(i as u64 + 1),
            version: 1_000,
            nickname: format!("host-{i}"),
            conns: adj[i]
                .iter()
                .map(|&j| ConnInfo {
                    peer: name(j),
                    addr: Some(std::net::SocketAddr::from((
                        [10, (j >> 16) as u8, (j >> 8) as u8, j as u8],
                        6783,
                    ))),
                    established: true,
                    outbound: i > j,
                })
                .collect(),
        })
        .collect()
}

/// Router 0's full view of `entries`.
fn full_view(entries: &[PeerEntry]) -> Topology {
    let mut t = Topology::new(entries[0].clone());
    for c in entries[1..].chunks(GOSSIP_ENTRIES_PER_MSG_MAX) {
        t.merge(c.to_vec());
    }
    assert_eq!(t.len(), entries.len(), "every entry taken");
    t
}

/// Median microseconds of `f`, repeated for at least [`MEASURE_MS`] (and 3 times).
/// `setup` builds each run's input outside the timing, and what `f` returns is dropped
/// outside it too (freeing a 10,000-entry table is not the cost measured).
fn time_us<S, R>(mut setup: impl FnMut() -> S, mut f: impl FnMut(S) -> R) -> f64 {
    let mut samples = Vec::new();
    let start = WallInstant::now();
    while samples.len() < 3 || (start.elapsed().as_millis() < MEASURE_MS && samples.len() < 10_000)
    {
        let s = setup();
        let t = WallInstant::now();
        let out = black_box(f(s));
        samples.push(t.elapsed().as_secs_f64() * 1e6);
        drop(out);
    }
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

const COSTS: [&str; 10] = [
    "merge all",
    "merge one",
    "routes",
    "bcast tree",
    "encode all",
    "encode one",
    "digest",
    "old digest",
    "summary",
    "msgs all",
];

fn measure(n: usize, degree: usize, seed: u64) -> [f64; 10] {
    let entries = mesh(n, degree, seed);
    let full = full_view(&entries);
    let mut changed = entries[n / 2].clone();
    changed.version += 1;
    let msgs: Vec<Vec<PeerEntry>> = entries[1..]
        .chunks(GOSSIP_ENTRIES_PER_MSG_MAX)
        .map(<[PeerEntry]>::to_vec)
        .collect();
    let source = name(n - 1);
    let merge_all = time_us(
        || (Topology::new(entries[0].clone()), msgs.clone()),
        |(mut t, ms)| {
            for m in ms {
                black_box(t.merge(m));
            }
            t
        },
    );
    let merge_one = time_us(
        || (full.clone(), vec![changed.clone()]),
        |(mut t, m)| {
            black_box(t.merge(m));
            t
        },
    );
    let routes = time_us(|| (), |()| Routes::compute(&full));
    let tree = time_us(
        || Routes::compute(&full),
        |mut r| {
            black_box(r.broadcast_children(&full, source));
            r
        },
    );
    let encode_all = time_us(|| (), |()| gossip::encode_all(&full));
    let encode_one = time_us(|| (), |()| gossip::encode_names(&full, &[changed.name]));
    let digest = time_us(|| (), |()| anti_entropy::digest(&full, false));
    let old_digest = time_us(|| (), |()| full.digest());
    let summary = time_us(|| (), |()| anti_entropy::encode(&summaries(&full)));
    let msgs_all = gossip::encode_all(&full).len() as f64;
    [
        merge_all, merge_one, routes, tree, encode_all, encode_one, digest, old_digest, summary,
        msgs_all,
    ]
}

fn summaries(t: &Topology) -> Vec<weft_core::wire::topology_sync::SyncMsg> {
    anti_entropy::summaries(t)
        .into_iter()
        .map(weft_core::wire::topology_sync::SyncMsg::Summary)
        .collect()
}

fn main() -> ExitCode {
    let (sizes, degree, seed) = weft_benches::args_or_exit(parse(), "corecost: ", USAGE);
    println!(
        "weft core costs per router: random mesh, {degree} connect targets per peer, seed {seed}; microseconds per operation (median)"
    );
    print!("{:>7}", "peers");
    for c in COSTS {
        print!(" {c:>11}");
    }
    println!();
    let mut rows = Vec::new();
    for &n in &sizes {
        let r = measure(n, degree, seed);
        print!("{n:>7}");
        for (i, v) in r.iter().enumerate() {
            if i == COSTS.len() - 1 {
                print!(" {v:>11.0}");
            } else {
                print!(" {v:>11.2}");
            }
        }
        println!();
        rows.push((n as f64, r));
    }
    if rows.len() >= 2 {
        print!("{:>7}", "N^b: b");
        for i in 0..COSTS.len() {
            let pts: Vec<(f64, f64)> = rows.iter().map(|(n, r)| (*n, r[i])).collect();
            match weft_benches::loglog_slope(&pts) {
                Some(b) => print!(" {b:>11.2}"),
                None => print!(" {:>11}", "-"),
            }
        }
        println!();
        println!(
            "(`msgs all` is a count: gossip messages for the whole table. Periodic anti-entropy per round was `encode all` x 2·log2 N neighbours; it is now `digest` x that.)"
        );
    }
    ExitCode::SUCCESS
}
