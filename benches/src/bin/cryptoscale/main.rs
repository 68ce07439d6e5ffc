//! Crypto benchmark: which AEAD implementation is fastest per core, and does encryption
//! spread over the cores a router is given?
//!
//! ```text
//! cargo run -p weft-benches --release --bin cryptoscale -- [--secs S] [--rounds N] [--threads T] [--cipher NAME] [--aead-only]
//! ```
//!
//! First ([`aead`]): seal and open of 64, 1400 and 9000 bytes by the `chacha20poly1305`
//! crate (RustCrypto), ring's ChaCha20-Poly1305 and ring's AES-256-GCM, one core, Gbit/s
//! of plaintext. `--aead-only` stops there.
//!
//! Then, in one process, without kernel I/O: router A's sleeve engine cuts 64 KB TCP
//! super-frames (as a TAP with TSO hands them over) into sealed GSO batches, and router
//! B's engine opens each batch as one GRO receive, both with the keys a v3 connection
//! that chose `--cipher` (default chacha20-poly1305; or aes-256-gcm) gets, as the daemon
//! builds them. Once with `--crypto-threads 1` (the datapath thread alone),
//! once with T (default 2) — the same `Crew` of helper threads the daemon lends its
//! engine — alternating per round. Prints Gbit/s of TCP payload for each and the
//! median ratio, with the cores each setting kept busy (process CPU time per second)
//! and the machine's steal time, which on a VM says how free the second core really was.
//! It shows what a second core buys when it is free; the end-to-end
//! `throughput` bench (row `sleeve-enc-2t`) shows it when the containers and the other
//! router compete for it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant as StdInstant};

use weft_core::crypto::{ChaChaKeyRng, CipherSuite, DatagramBinding, Handshake};
use weft_core::peer::PeerName;
use weft_core::segment::{Gso, Offload, PartialCsum, csum_fold, csum_partial};
use weft_core::sleeve::{Output, Sleeve};
use weft_core::time::Instant;
use weft_uring_dp::Crew;

mod aead;

const USAGE: &str = "usage: cryptoscale [--secs S] [--rounds N] [--threads T] [--cipher chacha20-poly1305|aes-256-gcm] [--aead-only]";
const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0xa];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0xb];
/// TCP payload per super-frame, and per segment (MSS for weft's default MTU 1376).
const SUPER_PAYLOAD: usize = 64_000;
const MSS: u16 = 1336;

struct Args {
    secs: f64,
    rounds: usize,
    threads: usize,
    cipher: CipherSuite,
    aead_only: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        secs: 2.0,
        rounds: 5,
        threads: 2,
        cipher: CipherSuite::ChaCha20Poly1305,
        aead_only: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut num = |name: &str, lo: f64, hi: f64| -> Result<f64, String> {
            let v: f64 = it
                .next()
                .and_then(|v| v.parse().ok())
                .ok_or(format!("{name} needs a number"))?;
            if (lo..=hi).contains(&v) {
                Ok(v)
            } else {
                Err(format!("{name} takes {lo} to {hi}"))
            }
        };
        match arg.as_str() {
            "--secs" => a.secs = num("--secs", 0.2, 60.0)?,
            "--rounds" => a.rounds = num("--rounds", 1.0, 50.0)? as usize,
            "--threads" => a.threads = num("--threads", 2.0, 16.0)? as usize,
            "--aead-only" => a.aead_only = true,
            "--cipher" => {
                a.cipher = it
                    .next()
                    .ok_or("--cipher needs a name")?
                    .parse()
                    .map_err(|e| format!("--cipher: {e}"))?;
            }
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    print_aead_table(args.secs);
    if args.aead_only {
        return ExitCode::SUCCESS;
    }
    println!(
        "weft crypto scaling: sealed GSO batches A -> B in one process, {}, {} round(s) x {} s per setting, {cpus} CPU(s)",
        args.cipher, args.rounds, args.secs
    );
    let (mut one, mut many, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let mut cores = Vec::new();
    for round in 1..=args.rounds {
        let r1 = match run(1, args.secs, args.cipher) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("cryptoscale: {e}");
                return ExitCode::FAILURE;
            }
        };
        let rn = match run(args.threads, args.secs, args.cipher) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("cryptoscale: {e}");
                return ExitCode::FAILURE;
            }
        };
        println!(
            "  round {round}: 1 thread {:.2} Gbit/s on {:.2} cores; {} threads {:.2} Gbit/s on {:.2} cores, {:.0} % of datagrams by helpers: {:.2}x (steal {:.0} % / {:.0} %)",
            r1.gbps,
            r1.cores,
            args.threads,
            rn.gbps,
            rn.cores,
            rn.helper_share * 100.0,
            rn.gbps / r1.gbps,
            r1.steal_pct,
            rn.steal_pct
        );
        cores.push(rn.cores);
        ratios.push(rn.gbps / r1.gbps);
        one.push(r1.gbps);
        many.push(rn.gbps);
    }
    println!(
        "median: 1 thread {:.2} Gbit/s, {} threads {:.2} Gbit/s on {:.2} cores; {} threads / 1: {:.2}x [{:.2} - {:.2}]",
        median(&mut one),
        args.threads,
        median(&mut many),
        median(&mut cores),
        args.threads,
        median(&mut ratios),
        ratios.iter().copied().fold(f64::INFINITY, f64::min),
        ratios.iter().copied().fold(0.0, f64::max)
    );
    ExitCode::SUCCESS
}

/// The per-implementation table: seal and open Gbit/s on one core at each size.
fn print_aead_table(secs: f64) {
    println!("AEAD seal / open on one core, Gbit/s of plaintext ({secs} s per size):");
    let mut head = format!("  {:<38}", "implementation");
    for size in aead::SIZES_BYTES {
        head.push_str(&format!(" {:>17}", format!("{size} B seal/open")));
    }
    println!("{head}");
    for (name, rates) in aead::run(secs) {
        let mut line = format!("  {name:<38}");
        for r in rates {
            line.push_str(&format!(
                " {:>17}",
                format!("{:.2} / {:.2}", r.seal_gbps, r.open_gbps)
            ));
        }
        println!("{line}");
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct Result1 {
    gbps: f64,
    /// Of the datagrams sealed and opened, the share the helpers did.
    helper_share: f64,
    /// CPU time of the whole process per wall second: how many cores it kept busy.
    cores: f64,
    /// The machine's steal time over the run, % of all CPUs' time (a VM's host took it).
    steal_pct: f64,
}

/// This process's user + system CPU seconds (all threads), from /proc/self/stat.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command's closing parenthesis; utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    // Clock ticks are 100 per second on Linux (USER_HZ).
    f.iter().sum::<f64>() / 100.0
}

/// (steal, total) jiffies of all CPUs, from /proc/stat.
fn steal_and_total() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    (v.get(7).copied().unwrap_or(0.0), v.iter().take(8).sum())
}

fn name(i: u64) -> PeerName {
    PeerName::from_u64(0x10 + i)
}

fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([198, 18, 0, i], 6783))
}

/// Routers A (0) and B (1), peered and keyed for `cipher`; with `threads` > 1 each gets
/// a crew.
fn pair(
    threads: usize,
    cipher: CipherSuite,
) -> Result<(Sleeve, Sleeve, Vec<Arc<AtomicU64>>), String> {
    let mut rng = ChaChaKeyRng::for_simulation(7);
    let (ka, kb) = (
        Handshake::start(&mut rng, None),
        Handshake::start(&mut rng, None),
    );
    let (pa, pb) = (ka.public_bytes(), kb.public_bytes());
    let binding = DatagramBinding {
        suite: cipher,
        transcript: [0; 32],
    };
    let sa = ka
        .finish_bound(pb, true, &binding)
        .map_err(|e| format!("keys: {e}"))?;
    let sb = kb
        .finish_bound(pa, false, &binding)
        .map_err(|e| format!("keys: {e}"))?;
    let (mut a, mut b) = (Sleeve::new(name(0), true), Sleeve::new(name(1), true));
    let now = Instant::ZERO;
    a.set_peer(
        now,
        name(1),
        addr(2),
        Some((sa.datagram_sealer, sa.datagram_opener)),
    );
    b.set_peer(
        now,
        name(0),
        addr(1),
        Some((sb.datagram_sealer, sb.datagram_opener)),
    );
    a.set_routes(
        BTreeMap::from([(name(1), name(1))]),
        BTreeMap::from([(name(0), vec![name(1)])]),
    );
    b.set_routes(
        BTreeMap::from([(name(0), name(0))]),
        BTreeMap::from([(name(1), vec![name(0)])]),
    );
    let mut helped = Vec::new();
    if threads > 1 {
        for s in [&mut a, &mut b] {
            let crew = Crew::new(threads - 1, "weft-seal").map_err(|e| format!("crew: {e}"))?;
            helped.push(crew.helped_counter());
            s.set_spread(Box::new(crew));
        }
    }
    // A learns that MAC_B is behind B from a broadcast B floods to it.
    let mut hello = vec![0xff; 6];
    hello.extend_from_slice(&MAC_B);
    hello.extend_from_slice(&[0x08, 0x06]);
    hello.resize(60, 0);
    let mut wire = Vec::new();
    b.handle_bridge_frame(now, &hello, &mut |o| {
        if let Output::Datagram { bytes, .. } = o {
            wire.push(bytes.to_vec());
        }
    });
    for mut d in wire {
        a.handle_datagram(now, addr(2), &mut d, &mut |_| {});
    }
    Ok((a, b, helped))
}

/// One TCP/IPv4 super-frame A -> B as a TAP with TSO hands it over: L4 checksum partial.
fn super_frame() -> (Vec<u8>, Offload) {
    let (ip_src, ip_dst) = ([10, 32, 1, 1], [10, 32, 2, 1]);
    let mut f = Vec::with_capacity(54 + SUPER_PAYLOAD);
    f.extend_from_slice(&MAC_B);
    f.extend_from_slice(&MAC_A);
    f.extend_from_slice(&[0x08, 0x00]);
    let tot = (20 + 20 + SUPER_PAYLOAD) as u16;
    f.extend_from_slice(&[0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 6, 0, 0]);
    f[16..18].copy_from_slice(&tot.to_be_bytes());
    f.extend_from_slice(&ip_src);
    f.extend_from_slice(&ip_dst);
    let ip_csum = !csum_fold(csum_partial(&f[14..34]));
    f[24..26].copy_from_slice(&ip_csum.to_be_bytes());
    // TCP: ports, seq, ack, data offset 5, ACK|PSH, window, checksum (partial), urgent.
    f.extend_from_slice(&[0x13, 0x89, 0xc3, 0x50, 0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x18]);
    f.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
    f.extend((0..SUPER_PAYLOAD).map(|i| (i * 7 % 251) as u8));
    let l4_len = (f.len() - 34) as u32;
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&ip_src);
    pseudo.extend_from_slice(&ip_dst);
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&l4_len.to_be_bytes());
    let partial = csum_fold(csum_partial(&pseudo));
    f[50..52].copy_from_slice(&partial.to_be_bytes());
    let off = Offload {
        gso: Gso::TcpV4,
        gso_size: MSS,
        hdr_len: 54,
        csum: Some(PartialCsum {
            start: 34,
            offset: 16,
        }),
        ..Offload::default()
    };
    (f, off)
}

fn run(threads: usize, secs: f64, cipher: CipherSuite) -> Result<Result1, String> {
    let (mut a, mut b, helped) = pair(threads, cipher)?;
    let (frame, off) = super_frame();
    let mut buf = vec![0u8; 1 << 17];
    let (mut frames_out, mut batches) = (0u64, 0u64);
    let now = Instant::ZERO;
    let (cpu0, (steal0, total0)) = (cpu_secs(), steal_and_total());
    let start = StdInstant::now();
    let limit = Duration::from_secs_f64(secs);
    while start.elapsed() < limit {
        for _ in 0..16 {
            a.handle_bridge_offload_frame(now, &frame, &off, &mut |o| {
                if let Output::DatagramsInPlace {
                    len_max,
                    segment_size,
                    mut build,
                    ..
                } = o
                {
                    let used = build.fill(&mut buf[..len_max]);
                    batches += 1;
                    b.handle_datagrams(
                        now,
                        addr(1),
                        &mut buf[..used],
                        usize::from(segment_size),
                        &mut |o| {
                            if let Output::Frame(_) | Output::FrameCsumPartial(_) = o {
                                frames_out += 1;
                            }
                        },
                    );
                }
            });
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cores = (cpu_secs() - cpu0) / elapsed;
    let (steal1, total1) = steal_and_total();
    let steal_pct = 100.0 * (steal1 - steal0) / (total1 - total0).max(1.0);
    let segments = SUPER_PAYLOAD.div_ceil(usize::from(MSS)) as u64;
    let sent = b.stats().frames_to_bridge;
    if sent == 0 || frames_out != sent || batches == 0 {
        return Err(format!(
            "B delivered {frames_out} frames ({sent} counted) from {batches} batches: the pair does not work"
        ));
    }
    if b.stats().drops_crypto != 0 {
        return Err(format!("B dropped {} datagrams", b.stats().drops_crypto));
    }
    let payload_bits = (sent / segments) as f64 * SUPER_PAYLOAD as f64 * 8.0;
    let helped: u64 = helped.iter().map(|h| h.load(Ordering::Relaxed)).sum();
    Ok(Result1 {
        gbps: payload_bits / elapsed / 1e9,
        helper_share: helped as f64 / (2 * sent) as f64,
        cores,
        steal_pct,
    })
}
