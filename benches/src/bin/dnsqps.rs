//! DNS queries per second: weftDNS against dnsmasq serving the same static names, in one
//! run, on this machine, with the same client.
//!
//! ```text
//! cargo build --release -p weft
//! cargo run -p weft-benches --release --bin dnsqps -- [--seconds S] [--inflight N] [--rounds R] [--weft PATH]
//! ```
//!
//! Setup (root; namespaces made by `TestNet`, removed on exit): namespace `srv` runs
//! `weft router --dns-listen-address 127.0.0.1:53`, namespace `dm` runs `dnsmasq` on
//! 127.0.0.1:53; both hold [`NAMES`] names of [`ADDRS_PER_NAME`] addresses each. The client
//! is one thread of this process with a UDP socket made inside the server's namespace
//! (traffic stays on that namespace's loopback), keeping `--inflight` queries (default
//! 32) outstanding, A queries round-robin over the names; only answers with NOERROR and
//! all the addresses count. Rounds alternate the servers; the median round is reported,
//! and the ratio weft / dnsmasq (target: >= 1).
//!
//! The `weft` binary: `--weft PATH`, else `$WEFT_BIN`, else beside this binary, else
//! `<workspace>/target/release/weft`.

use std::net::UdpSocket;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use weft_kernel_dp::run_in_netns;
use weft_kernel_dp::testnet::{Ns, TestNet, require_root};

/// Names served.
const NAMES: usize = 100;
/// Addresses per name.
const ADDRS_PER_NAME: usize = 3;
/// Queries a lost answer waits for before the window is refilled.
const RECV_TIMEOUT_MS: u64 = 100;

struct Args {
    seconds: u64,
    inflight: usize,
    rounds: usize,
    weft: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        seconds: 5,
        inflight: 32,
        rounds: 3,
        weft: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = |n: &str| it.next().ok_or(format!("{n} needs a value"));
        let num = |s: String, n: &str| s.parse::<u64>().map_err(|_| format!("bad {n} {s:?}"));
        match arg.as_str() {
            "--seconds" => a.seconds = num(val("--seconds")?, "--seconds")?.clamp(1, 60),
            "--inflight" => {
                a.inflight = num(val("--inflight")?, "--inflight")?.clamp(1, 1024) as usize
            }
            "--rounds" => a.rounds = num(val("--rounds")?, "--rounds")?.clamp(1, 9) as usize,
            "--weft" => a.weft = Some(val("--weft")?.into()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(a)
}

fn addr_of(name: usize, k: usize) -> String {
    format!("10.40.{}.{}", name, k + 1)
}

/// A query for `svc<i>.weave.local` A, id `id`.
fn query(id: u16, i: usize) -> Vec<u8> {
    let mut q = Vec::with_capacity(40);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    let label = format!("svc{i}");
    for l in [label.as_str(), "weave", "local"] {
        q.push(l.len() as u8);
        q.extend_from_slice(l.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// Runs the load for `secs` against 127.0.0.1:53 in namespace `ns`; good answers/s.
fn load(ns: &Ns, secs: u64, inflight: usize) -> Result<f64, String> {
    let sock = run_in_netns(ns.path(), || UdpSocket::bind("127.0.0.1:0"))
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    sock.connect("127.0.0.1:53").map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_millis(RECV_TIMEOUT_MS)))
        .map_err(|e| e.to_string())?;
    let queries: Vec<Vec<u8>> = (0..NAMES).map(|i| query(0, i)).collect();
    let mut next = 0usize;
    let send = |sock: &UdpSocket, next: &mut usize| {
        let i = *next % NAMES;
        let mut q = queries[i].clone();
        q[..2].copy_from_slice(&((*next & 0xffff) as u16).to_be_bytes());
        *next += 1;
        let _ = sock.send(&q);
    };
    let mut buf = [0u8; 1500];
    let (mut good, mut bad) = (0u64, 0u64);
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    for _ in 0..inflight {
        send(&sock, &mut next);
    }
    while Instant::now() < end {
        match sock.recv(&mut buf) {
            Ok(n) => {
                let ok = n >= 12
                    && buf[3] & 0x0f == 0
                    && usize::from(u16::from_be_bytes([buf[6], buf[7]])) == ADDRS_PER_NAME;
                if ok {
                    good += 1
                } else {
                    bad += 1
                }
                send(&sock, &mut next);
            }
            Err(_) => {
                // Answers were lost: refill the window.
                for _ in 0..inflight {
                    send(&sock, &mut next);
                }
            }
        }
    }
    if bad > good / 100 {
        return Err(format!("{bad} wrong answers (vs {good} good)"));
    }
    Ok(good as f64 / start.elapsed().as_secs_f64())
}

fn run(a: &Args) -> Result<(), String> {
    let weft = weft_benches::locate_weft(a.weft.clone())?;
    let mut net = TestNet::new().map_err(|e| e.to_string())?;
    let srv = net.add_host("srv").map_err(|e| e.to_string())?;
    let dm = net.add_ns("dm").map_err(|e| e.to_string())?;
    let dir = std::env::temp_dir().join(format!("weft-dnsqps-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let _cleanup = weft_benches::RemoveOnDrop(dir.clone());
    // dnsmasq: the names from a hosts file.
    let hosts = dir.join("hosts");
    let mut text = String::new();
    for i in 0..NAMES {
        for k in 0..ADDRS_PER_NAME {
            text.push_str(&format!("{} svc{i}.weave.local\n", addr_of(i, k)));
        }
    }
    std::fs::write(&hosts, text).map_err(|e| e.to_string())?;
    let hosts_arg = format!("--addn-hosts={}", hosts.display());
    net.spawn(
        &dm,
        &[
            "dnsmasq",
            "--no-daemon",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--user=root",
            "--pid-file",
            "--log-facility=-",
            &hosts_arg,
        ],
    )
    .map_err(|e| e.to_string())?;
    // weft: a router alone, DNS on loopback, the same names added through the CLI.
    let sock = dir.join("weft.sock").display().to_string();
    let state = dir.join("state").display().to_string();
    let w = weft.display().to_string();
    net.spawn(
        &srv,
        &[
            &w,
            "router",
            "--no-fastdp",
            "--socket",
            &sock,
            "--state-dir",
            &state,
            "--dns-listen-address",
            "127.0.0.1:53",
            "--dns-upstream",
            "127.0.0.1:1",
        ],
    )
    .map_err(|e| e.to_string())?;
    let ready = Instant::now();
    while srv.run(&[&w, "status", "--socket", &sock]).is_err() {
        if ready.elapsed() > Duration::from_secs(15) {
            return Err("weft router did not start".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for i in 0..NAMES {
        let mut args: Vec<String> = vec![w.clone(), "dns-add".into()];
        args.extend((0..ADDRS_PER_NAME).map(|k| addr_of(i, k)));
        args.extend([format!("svc{i}"), "--socket".into(), sock.clone()]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        srv.run(&refs).map_err(|e| e.to_string())?;
    }
    // Warm both up (and check they answer right) before measuring.
    load(&dm, 1, a.inflight).map_err(|e| format!("dnsmasq: {e}"))?;
    load(&srv, 1, a.inflight).map_err(|e| format!("weft: {e}"))?;
    let (mut wq, mut dq) = (Vec::new(), Vec::new());
    for r in 0..a.rounds {
        let order: [&Ns; 2] = if r % 2 == 0 { [&srv, &dm] } else { [&dm, &srv] };
        for ns in order {
            let q = load(ns, a.seconds, a.inflight)?;
            eprintln!(
                "round {}: {} {q:.0} q/s",
                r + 1,
                if *ns == srv { "weft" } else { "dnsmasq" }
            );
            if *ns == srv { wq.push(q) } else { dq.push(q) }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (w, d) = (median(&mut wq), median(&mut dq));
    println!(
        "dnsqps: {NAMES} names x {ADDRS_PER_NAME} addresses, {} in flight, {} s x {} rounds (median)",
        a.inflight, a.seconds, a.rounds
    );
    println!("{:<10} {:>12}", "server", "queries/s");
    println!("{:<10} {:>12.0}", "weftDNS", w);
    println!("{:<10} {:>12.0}", "dnsmasq", d);
    println!("ratio weftDNS/dnsmasq: {:.2}", w / d);
    Ok(())
}

fn main() {
    if let Some(reason) = require_root() {
        eprintln!("dnsqps: cannot run: {reason}");
        std::process::exit(2);
    }
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!(
                "dnsqps: {e}\nusage: dnsqps [--seconds S] [--inflight N] [--rounds R] [--weft PATH]"
            );
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&a) {
        eprintln!("dnsqps: {e}");
        std::process::exit(1);
    }
}
