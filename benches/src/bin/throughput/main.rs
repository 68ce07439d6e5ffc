//! Throughput benchmark: weft against the overlays a user would pick instead, in one run
//! on one machine, as ratios.
//!
//! ```text
//! cargo build --release -p weft
//! cargo run -p weft-benches --release --bin throughput -- [--quick] [--rounds N] [--cc NAME] [--only NAME,...] [--weft PATH] [--json PATH]
//! ```
//!
//! Needs root. Every row builds a fresh testbed: two "host" network namespaces joined by
//! one veth (198.18.0.1 and .2, MTU 1500, ip_forward off) and one "container" namespace per
//! host, and tears it down (processes killed by recorded pid, namespaces deleted) before
//! the next row, also when the row fails. Traffic stays between these namespaces.
//!
//! Rows (`--only` names):
//! - `veth`: host to host on the underlay veth, the reference.
//! - `vxlan`: hand-built kernel path, container veth -> bridge -> VXLAN (static FDB and
//!   flood entries) -> other host; the comparator of the sleeve and of fastdp.
//! - `sleeve`, `sleeve-enc`: `weft router --no-fastdp` on both hosts, without and with
//!   `--password`, as users get it (io_uring backend where the kernel has it, crypto
//!   threads = CPUs up to 4); containers attached with `weft attach`.
//! - `sleeve-plain`, `sleeve-enc-plain`: the same two on the plain-syscall backend
//!   (`WEFT_DATAPATH_BACKEND=plain`), compared with them.
//! - `sleeve-enc-2t`: `sleeve-enc` with `--crypto-threads 2` (one helper thread shares
//!   each batch's sealing and opening with the datapath thread; the default is half the
//!   CPUs, so 1 on a 2-core box), compared with it.
//! - `sleeve-enc-chacha`, `sleeve-enc-aes`: `sleeve-enc` with `--cipher chacha20-poly1305`
//!   and `--cipher aes-256-gcm` on both routers (the row fails unless router a's links
//!   show that cipher), compared with the plain sleeve. `sleeve-enc` itself runs `auto`:
//!   AES-256-GCM where the CPU has AES-NI and PCLMULQDQ.
//! - `sleeve-q1`, `sleeve-q2`, `sleeve-enc-q1`, `sleeve-enc-q2`: the sleeve rows with
//!   `--queues 1` and `--queues 2` (the default is one queue per CPU, at most 8), plain and
//!   encrypted (auto cipher): what the multi-queue sleeve gains over one datapath thread.
//!   `sleeve-enc-2t` runs `--queues 1` (helper threads only share one queue's batches).
//! - `fastdp`: `weft router` (fast datapath allowed); reported as "fastdp not available:
//!   <mode>" when `weft status connections --json` shows no fastdp connection after 20 s.
//! - `nebula`: the Debian package, lighthouse-less static host map, default cipher, one
//!   nebula per host namespace (tun there), tun MTU = weft's overlay MTU.
//! - `boringtun`: userspace WireGuard, only when `BORINGTUN_BIN` names the `boringtun-cli`
//!   binary (keys and peers are set over its UAPI socket; no `wg` tool needed).
//! - `wireguard-go`: Debian's userspace WireGuard (`apt-get install --no-install-recommends
//!   wireguard-go`; skipped when missing), one per host namespace, configured over its UAPI
//!   socket as boringtun is, MTU 1420 (WireGuard's default), host to host.
//! - `tapfwd`: the ceiling of the sleeve's design, not a product path. Per host a bridge
//!   with the container's veth and a TAP served by the `tapfwd` binary (built beside this
//!   one), which only moves whole TAP super-frames into single UDP GSO sends and writes
//!   what UDP_GRO hands back to its TAP, on two blocking threads: no header, no check, no
//!   userspace work (it relies on a veth underlay delivering each GSO send in one piece).
//!   An overlay built on a TAP and a UDP socket does at least this work per super-frame
//!   (a TAP read, a send, a receive, a TAP write, and the wakeups between), so
//!   `tapfwd / vxlan` bounds what `sleeve / vxlan` can reach on the same machine, and
//!   `sleeve / tapfwd` says how close the sleeve comes.
//!
//! Overlay rows use MTU 1376 (weft's default) so each moves the same payload per packet.
//! Per row: iperf3 TCP with 1 and 2 streams (median of 3 runs x 5 s; `--quick`: 1 x 2 s;
//! congestion control cubic, Linux's default, unless `--cc NAME`; `--cc default` takes
//! the namespace's default), then a UDP flood (1300-byte datagrams, `-b 0`, 1 stream;
//! what arrives counts: it shows per-packet costs, where TCP's GSO hides them),
//! ping RTT (median of 20; `--quick`: 10), daemon CPU from /proc/PID/stat utime+stime
//! deltas (weft routers / nebulas / boringtuns of both hosts, summed, % of one core), path
//! CPU = daemons + iperf3's own client and server CPU figures, Gbit/s per busy core (Gbit
//! moved per CPU-second), and weft's VmRSS: router a idle with 3 peers (two more routers
//! in spoke namespaces dial it) and the highest of routers a and b during the runs.
//! Softirq work the kernel does outside these processes' time is not counted.
//!
//! The `weft` binary: `--weft PATH`, else `$WEFT_BIN`, else the `weft` beside this binary
//! (same target dir, so `cargo build --release -p weft` first), else
//! `<workspace>/target/release/weft`. The table goes to stdout, progress to stderr, and
//! the JSON to `<workspace>/target/bench-throughput.json` (or `--json PATH`).
//! Absolute numbers on a shared machine are noise; ratios within one run are the result.
//! `--rounds N` repeats the whole pass N times and ends with each comparison's median
//! per-round ratio and range: on a shared 2-core box one pass moves by +-20 %.

mod measure;
mod report;
mod scenarios;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Instant;

use measure::Plan;
use report::{Measured, Row};
use scenarios::{Ctx, Outcome, Stop, WeftMode};

const USAGE: &str = "usage: throughput [--quick] [--rounds N] [--cc NAME] [--only NAME,...] [--weft PATH] [--json PATH]\n\
     names: veth, vxlan, sleeve, sleeve-enc, fastdp, nebula, boringtun, sleeve-plain, sleeve-enc-plain, sleeve-enc-2t, tapfwd, sleeve-enc-chacha, sleeve-enc-aes, wireguard-go, sleeve-q1, sleeve-q2, sleeve-enc-q1, sleeve-enc-q2";

type Scenario = fn(&Ctx, &mut Measured) -> Outcome;

/// (name, label, comparator, function), in run order.
const ROWS: [(&str, &str, Option<&str>, Scenario); 18] = [
    ("veth", "1 veth (reference)", None, scenarios::veth),
    (
        "vxlan",
        "2 kernel VXLAN (bridge+VXLAN)",
        None,
        scenarios::vxlan,
    ),
    ("sleeve", "3 weft sleeve plain", Some("vxlan"), |c, m| {
        scenarios::weft(c, m, WeftMode::Sleeve)
    }),
    (
        "sleeve-enc",
        "4 weft sleeve encrypted",
        Some("nebula"),
        |c, m| scenarios::weft(c, m, WeftMode::SleeveEncrypted),
    ),
    ("fastdp", "5 weft fastdp", Some("vxlan"), |c, m| {
        scenarios::weft(c, m, WeftMode::Fastdp)
    }),
    ("nebula", "6 Nebula", None, scenarios::nebula),
    (
        "boringtun",
        "7 boringtun",
        Some("nebula"),
        scenarios::boringtun,
    ),
    (
        "sleeve-plain",
        "8 weft sleeve plain, plain backend",
        Some("sleeve"),
        |c, m| scenarios::weft(c, m, WeftMode::SleevePlainBackend),
    ),
    (
        "sleeve-enc-plain",
        "9 weft sleeve encrypted, plain backend",
        Some("sleeve-enc"),
        |c, m| scenarios::weft(c, m, WeftMode::SleeveEncryptedPlainBackend),
    ),
    (
        "sleeve-enc-2t",
        "10 weft sleeve encrypted, 2 crypto threads",
        Some("sleeve-enc"),
        |c, m| scenarios::weft(c, m, WeftMode::SleeveEncryptedTwoThreads),
    ),
    (
        "tapfwd",
        "11 ceiling: bare TAP<->UDP forwarder",
        Some("vxlan"),
        scenarios::tapfwd,
    ),
    (
        "sleeve-enc-chacha",
        "12 weft sleeve encrypted, ChaCha20-Poly1305 forced",
        Some("sleeve"),
        |c, m| scenarios::weft(c, m, WeftMode::SleeveEncryptedChaCha),
    ),
    (
        "sleeve-enc-aes",
        "13 weft sleeve encrypted, AES-256-GCM forced",
        Some("sleeve"),
        |c, m| scenarios::weft(c, m, WeftMode::SleeveEncryptedAes),
    ),
    (
        "wireguard-go",
        "14 wireguard-go (userspace WireGuard)",
        None,
        scenarios::wireguard_go,
    ),
    (
        "sleeve-q1",
        "15 weft sleeve plain, 1 queue",
        None,
        |c, m| scenarios::weft(c, m, WeftMode::SleeveQueues1),
    ),
    (
        "sleeve-q2",
        "16 weft sleeve plain, 2 queues",
        Some("sleeve-q1"),
        |c, m| scenarios::weft(c, m, WeftMode::SleeveQueues2),
    ),
    (
        "sleeve-enc-q1",
        "17 weft sleeve encrypted, 1 queue",
        Some("sleeve-q1"),
        |c, m| scenarios::weft(c, m, WeftMode::SleeveEncryptedQueues1),
    ),
    (
        "sleeve-enc-q2",
        "18 weft sleeve encrypted, 2 queues",
        Some("sleeve-enc-q1"),
        |c, m| scenarios::weft(c, m, WeftMode::SleeveEncryptedQueues2),
    ),
];

/// The congestion control every TCP row uses unless `--cc` says otherwise: Linux's own
/// default, which most hosts run. It matters for the ratios: some images (this VM's among
/// them) default to bbr, whose per-packet pacing costs the kernel paths about half their
/// throughput here (kernel VXLAN ~14-22 Gbit/s under bbr, ~33 under cubic) while the
/// sleeve moves about the same under both, so bbr flatters every userspace row. `--cc bbr`
/// or `--cc default` (the namespace's default) measures that case.
const DEFAULT_CC: &str = "cubic";

/// `--cc NAME` as the iperf3 clients' `-C` (`None` for `default`), checked against what
/// this kernel offers.
fn congestion_control(name: &str) -> Result<Option<&'static str>, String> {
    if name == "default" {
        return Ok(None);
    }
    let path = "/proc/sys/net/ipv4/tcp_available_congestion_control";
    let avail = std::fs::read_to_string(path).map_err(|err| format!("{path}: {err}"))?;
    if !avail.split_whitespace().any(|a| a == name) {
        return Err(format!(
            "TCP congestion control {name:?} is not available here (available: {}; or --cc default)",
            avail.trim()
        ));
    }
    Ok(Some(String::leak(name.to_owned())))
}

struct Args {
    quick: bool,
    rounds: usize,
    cc: String,
    only: Option<Vec<String>>,
    weft: Option<PathBuf>,
    json: Option<PathBuf>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        quick: false,
        rounds: 1,
        cc: DEFAULT_CC.to_owned(),
        only: None,
        weft: None,
        json: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--quick" => a.quick = true,
            "--rounds" => {
                a.rounds = match val("--rounds")?.parse() {
                    Ok(n) if (1..=20).contains(&n) => n,
                    _ => return Err("--rounds takes a number from 1 to 20".into()),
                };
            }
            "--cc" => a.cc = val("--cc")?,
            "--only" => {
                let names: Vec<String> = val("--only")?
                    .split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect();
                if let Some(bad) = names.iter().find(|n| !ROWS.iter().any(|r| r.0 == *n)) {
                    return Err(format!("unknown row {bad:?}"));
                }
                a.only = Some(names);
            }
            "--weft" => a.weft = Some(val("--weft")?.into()),
            "--json" => a.json = Some(val("--json")?.into()),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(a)
}

/// On SIGINT or SIGTERM, `Drop` does not run: a watcher thread then does what it would,
/// for this process's namespaces only (`wt<pid>...`, made by `TestNet`): kills the
/// processes inside them (all started by this run), deletes them and the scratch dirs,
/// and exits.
fn on_signal_tear_down() {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!(
                "no signal watcher ({err}): an interrupted run leaves namespaces to the next run's sweep"
            );
            return;
        }
    };
    std::thread::spawn(move || {
        rt.block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut int), Ok(mut term)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                return;
            };
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        });
        eprintln!("interrupted: tearing down");
        let mine = format!("wt{}", std::process::id());
        let ours = |n: &str| {
            n.strip_prefix(&mine)
                .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_lowercase()))
        };
        let list = Command::new("ip").args(["netns", "list"]).output();
        let names: Vec<String> = list
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| ours(n))
            .map(str::to_owned)
            .collect();
        for ns in names.iter().rev() {
            if let Ok(o) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    if pid.parse::<u32>().is_ok() {
                        let _ = Command::new("kill").args(["-9", pid]).status();
                    }
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        if let Ok(dir) = std::fs::read_dir(std::env::temp_dir()) {
            for d in dir.flatten() {
                let n = d.file_name().to_string_lossy().into_owned();
                let n = n.strip_prefix("weft-testnet-").unwrap_or(&n);
                if ours(n) {
                    let _ = std::fs::remove_dir_all(d.path());
                }
            }
        }
        std::process::exit(130);
    });
}

/// One pass over the selected rows, in table order.
fn run_rows(ctx: &Ctx, only: Option<&[String]>) -> Vec<Row> {
    let mut rows = Vec::new();
    for (name, label, comparator, run) in ROWS {
        if only.is_some_and(|o| !o.iter().any(|n| n == name)) {
            continue;
        }
        eprintln!("== {label} ==");
        let start = Instant::now();
        let mut m = Measured::default();
        let stop = match catch_unwind(AssertUnwindSafe(|| run(ctx, &mut m))) {
            Ok(Ok(())) => None,
            Ok(Err(s)) => Some(s),
            Err(p) => Some(Stop::Failed(format!(
                "panicked: {}",
                p.downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| p.downcast_ref::<&str>().copied())
                    .unwrap_or("?")
            ))),
        };
        if let Some(s) = &stop {
            eprintln!("    {s:?}");
        }
        rows.push(Row {
            name,
            label,
            comparator,
            m,
            stop,
            wall_s: start.elapsed().as_secs_f64(),
        });
    }
    rows
}

fn main() -> ExitCode {
    let args = weft_benches::args_or_exit(parse(), "", USAGE);
    if let Some(why) = weft_kernel_dp::testnet::require_root() {
        eprintln!("throughput: cannot build test networks: {why}");
        return ExitCode::FAILURE;
    }
    let cc = match congestion_control(&args.cc) {
        Ok(cc) => cc,
        Err(why) => {
            eprintln!("throughput: {why}");
            return ExitCode::from(2);
        }
    };
    let plan = if args.quick {
        Plan {
            runs: 1,
            secs: 2,
            pings: 10,
            cc,
        }
    } else {
        Plan {
            runs: 3,
            secs: 5,
            pings: 20,
            cc,
        }
    };
    on_signal_tear_down();
    let weft = weft_benches::locate_weft(args.weft);
    let weft_desc = match &weft {
        Ok(p) => {
            let age = std::fs::metadata(p)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .map_or_else(String::new, |d| format!(" (built {} s ago)", d.as_secs()));
            format!("{}{age}", p.display())
        }
        Err(err) => err.clone(),
    };
    eprintln!("weft binary: {weft_desc}");
    let ctx = Ctx { plan, weft };
    let mut rounds: Vec<Vec<Row>> = Vec::new();
    for round in 1..=args.rounds {
        if args.rounds > 1 {
            eprintln!("#### round {round} of {}", args.rounds);
        }
        rounds.push(run_rows(&ctx, args.only.as_deref()));
        if round < args.rounds
            && let Some(last) = rounds.last()
        {
            report::print_table(last, plan);
        }
    }
    let rows = rounds.pop().unwrap_or_default();
    report::print_table(&rows, plan);
    rounds.push(rows);
    let across = (args.rounds > 1).then(|| report::print_rounds(&rounds));
    let rows = rounds.pop().unwrap_or_default();
    let path = args
        .json
        .unwrap_or_else(|| weft_benches::workspace().join("target/bench-throughput.json"));
    let mut json = report::to_json(&rows, plan, &weft_desc);
    if let Some(a) = across {
        json["rounds"] = serde_json::json!(args.rounds);
        json["comparisons_over_rounds"] = a;
    }
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| {
            std::fs::write(
                &path,
                serde_json::to_string_pretty(&json).unwrap_or_default(),
            )
        });
    match written {
        Ok(()) => println!("JSON: {}", path.display()),
        Err(err) => eprintln!("cannot write {}: {err}", path.display()),
    }
    ExitCode::SUCCESS
}
