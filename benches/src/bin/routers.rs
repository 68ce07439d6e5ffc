//! Many real routers on one machine: N `weft router` processes, each in a network
//! namespace of its own on one underlay segment, started together.
//!
//! ```text
//! cargo build --release -p weft
//! sudo cargo run -p weft-benches --release --bin routers -- [--routers 50] [--kill 10] [--rest-seconds 60] [--weft PATH]
//! ```
//!
//! Every router but the first is given the first one as its only peer; the rest is found
//! by discovery. Reported:
//! - the time from the start until every router sees all N peers, each reachable
//!   (agreement on the topology);
//! - at rest (after agreement, for `--rest-seconds`): topology gossip bytes and messages
//!   each router sent per minute (median and largest), from each router's counters;
//! - RSS per router (median and largest, from /proc) at rest;
//! - then `--kill` routers are killed (SIGKILL), and the time until every survivor sees
//!   exactly the survivors reachable.
//!
//! Targets (issue 27): agreement within 30 s, RSS under 20 MiB, under 1 KiB/s of gossip
//! at rest. No figure here is a pass/fail test: the machine is shared and noisy.
//! Namespaces, links and processes are `TestNet`'s, removed on exit (also on Ctrl-C).

use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use weft_kernel_dp::testnet::{Ns, TestNet, require_root};

struct Args {
    routers: usize,
    kill: usize,
    rest_s: u64,
    weft: Option<PathBuf>,
}

const USAGE: &str = "routers [--routers N (2-200, default 50)] [--kill K (default 10)] [--rest-seconds S (default 60)] [--weft PATH]";

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        routers: 50,
        kill: 10,
        rest_s: 60,
        weft: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = |n: &str| it.next().ok_or(format!("{n} needs a value"));
        let num = |s: String, n: &str| s.parse::<u64>().map_err(|_| format!("bad {n} {s:?}"));
        match arg.as_str() {
            "--routers" => a.routers = num(val("--routers")?, "--routers")?.clamp(2, 200) as usize,
            "--kill" => a.kill = num(val("--kill")?, "--kill")? as usize,
            "--rest-seconds" => {
                a.rest_s = num(val("--rest-seconds")?, "--rest-seconds")?.clamp(5, 600)
            }
            "--weft" => a.weft = Some(val("--weft")?.into()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if a.kill >= a.routers {
        return Err(format!(
            "--kill {} leaves no router of {}",
            a.kill, a.routers
        ));
    }
    Ok(a)
}

/// One router under test.
struct R {
    ns: Ns,
    socket: String,
    pid: u32,
}

impl R {
    fn status(&self, weft: &str) -> Option<Value> {
        let out = self
            .ns
            .exec(&[weft, "status", "--json", "--socket", &self.socket])
            .ok()?;
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }
}

/// `(peers, reachable)` as a summary gives them (peers with this router, reachable
/// without it).
fn peer_counts(v: &Value) -> (u64, u64) {
    let find = |k: &str| {
        v.get(k)
            .or_else(|| v.get("router").and_then(|r| r.get(k)))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    (find("peers"), find("reachable_peers"))
}

fn gossip(v: &Value) -> (u64, u64) {
    let g = v
        .get("gossip")
        .or_else(|| v.get("router").and_then(|r| r.get("gossip")))
        .cloned()
        .unwrap_or_default();
    (
        g["bytes_sent"].as_u64().unwrap_or(0),
        g["msgs_sent"].as_u64().unwrap_or(0),
    )
}

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Waits until every router in `rs` satisfies `ok(peers, reachable)`; the time it took.
fn until_all(
    rs: &[R],
    weft: &str,
    limit: Duration,
    ok: impl Fn(u64, u64) -> bool,
) -> Result<Duration, String> {
    let start = Instant::now();
    loop {
        let mut behind = 0;
        let mut worst = (0, 0);
        for r in rs {
            let c = r.status(weft).map(|v| peer_counts(&v)).unwrap_or((0, 0));
            if !ok(c.0, c.1) {
                behind += 1;
                worst = c;
            }
        }
        if behind == 0 {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            return Err(format!(
                "{behind} routers still behind after {limit:?} (one sees {} peers, {} reachable)",
                worst.0, worst.1
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn run(a: &Args) -> Result<(), String> {
    let weft = weft_benches::locate_weft(a.weft.clone())?;
    let w = weft.display().to_string();
    let mut net = TestNet::new().map_err(|e| e.to_string())?;
    let dir = std::env::temp_dir().join(format!("weft-routers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let _cleanup = weft_benches::RemoveOnDrop(dir.clone());
    let n = a.routers;
    let mut hosts: Vec<Ns> = Vec::new();
    let mut ips = Vec::new();
    for i in 0..n {
        let h = net.add_host(&format!("r{i}")).map_err(|e| e.to_string())?;
        ips.push(net.underlay_attach(&h).map_err(|e| e.to_string())?);
        hosts.push(h);
    }
    pin_neighbours(&hosts, &ips)?;
    let first = ips[0].to_string();
    let start = Instant::now();
    let mut rs = Vec::new();
    for (i, h) in hosts.into_iter().enumerate() {
        let socket = dir.join(format!("r{i}.sock")).display().to_string();
        let state = dir.join(format!("r{i}")).display().to_string();
        let mut args = vec![
            w.as_str(),
            "router",
            "--no-fastdp",
            "--no-plugin",
            "--no-proxy",
            "--no-dns",
            "--socket",
            &socket,
            "--state-dir",
            &state,
        ];
        if i > 0 {
            args.push(&first);
        }
        let s = net.spawn(&h, &args).map_err(|e| e.to_string())?;
        rs.push(R {
            ns: h,
            socket,
            pid: s.pid,
        });
    }
    let nn = n as u64;
    until_all(&rs, &w, Duration::from_secs(180), |p, r| {
        p == nn && r == nn - 1
    })?;
    println!(
        "{n} routers started together: all see {n} peers, all reachable, {:.1} s after the first started",
        start.elapsed().as_secs_f64()
    );

    // At rest.
    let before: Vec<(u64, u64)> = rs
        .iter()
        .map(|r| r.status(&w).map(|v| gossip(&v)).unwrap_or_default())
        .collect();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(a.rest_s));
    let after: Vec<(u64, u64)> = rs
        .iter()
        .map(|r| r.status(&w).map(|v| gossip(&v)).unwrap_or_default())
        .collect();
    let mins = t0.elapsed().as_secs_f64() / 60.0;
    let bytes: Vec<f64> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| a.0.saturating_sub(b.0) as f64 / mins)
        .collect();
    let msgs: Vec<f64> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| a.1.saturating_sub(b.1) as f64 / mins)
        .collect();
    let rss: Vec<f64> = rs
        .iter()
        .filter_map(|r| rss_kib(r.pid))
        .map(|k| k as f64 / 1024.0)
        .collect();
    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    println!(
        "at rest over {:.0} s: topology gossip sent per router per minute: median {:.0} B ({:.1} B/s), largest {:.0} B; messages median {:.1}, largest {:.1}",
        mins * 60.0,
        median(bytes.clone()),
        median(bytes.clone()) / 60.0,
        max(&bytes),
        median(msgs.clone()),
        max(&msgs)
    );
    println!(
        "RSS per router: median {:.1} MiB, largest {:.1} MiB ({} routers read)",
        median(rss.clone()),
        max(&rss),
        rss.len()
    );

    // Kill some; the rest must agree on who is left.
    let survivors = n - a.kill;
    let killed: Vec<R> = rs.split_off(survivors);
    for r in &killed {
        net.kill(r.pid);
    }
    let left = survivors as u64;
    let healed = until_all(&rs, &w, Duration::from_secs(300), |_, r| r == left - 1)?;
    println!(
        "killed {} routers (SIGKILL): each of the {survivors} left sees exactly the others reachable after {:.1} s",
        a.kill,
        healed.as_secs_f64()
    );
    Ok(())
}

/// Gives every host a permanent neighbour entry for every other one. The kernel's
/// neighbour table is one for all namespaces (`gc_thresh3`, 1024 by default): N routers in
/// a full mesh need about N² entries, and past the limit every namespace on the machine
/// sees `No buffer space available` and unanswered connects. Permanent entries are
/// exempt; ARP is not what this measures.
fn pin_neighbours(hosts: &[Ns], ips: &[std::net::Ipv4Addr]) -> Result<(), String> {
    use std::io::Write;
    let mut macs = Vec::new();
    for h in hosts {
        let link = h
            .run(&["ip", "-o", "link", "show", "eth0"])
            .map_err(|e| e.to_string())?;
        let mac = link
            .split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .ok_or_else(|| format!("no MAC on {}'s eth0", h.name()))?
            .to_owned();
        macs.push(mac);
    }
    for (i, h) in hosts.iter().enumerate() {
        let mut batch = String::new();
        for (j, (ip, mac)) in ips.iter().zip(&macs).enumerate() {
            if i != j {
                batch.push_str(&format!(
                    "neigh replace {ip} lladdr {mac} dev eth0 nud permanent\n"
                ));
            }
        }
        let mut child = std::process::Command::new("ip")
            .args(["-n", h.name(), "-batch", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(batch.as_bytes())
                .map_err(|e| e.to_string())?;
        }
        let st = child.wait().map_err(|e| e.to_string())?;
        if !st.success() {
            return Err(format!(
                "ip -batch (neighbours) in {} failed: {st}",
                h.name()
            ));
        }
    }
    Ok(())
}

fn main() {
    if let Some(why) = require_root() {
        eprintln!("routers: {}", why.0);
        std::process::exit(2);
    }
    let a = weft_benches::args_or_exit(parse_args(), "routers: ", USAGE);
    if let Err(e) = run(&a) {
        eprintln!("routers: {e}");
        std::process::exit(1);
    }
}
