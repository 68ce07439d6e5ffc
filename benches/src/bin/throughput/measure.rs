//! The measuring instruments: the two-host testbed, iperf3 runs with daemon CPU and RSS
//! sampled from /proc, ping RTT, and the result records they fill in.

use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use weft_kernel_dp::testnet::{Ns, TestNet};

/// Underlay addresses of the two hosts (RFC 2544 benchmark range: never anyone else's).
pub(crate) const HOST_A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub(crate) const HOST_B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// Underlay interface in each host namespace.
pub(crate) const UL_IF: &str = "eth0";
/// Underlay MTU.
pub(crate) const UL_MTU: u32 = 1500;
/// Overlay MTU every overlay row uses (weft's default; the others are set to match so
/// each row moves the same payload per packet).
pub(crate) const OVERLAY_MTU: u32 = 1376;
const IPERF_PORT: &str = "5201";
/// Datagram size of the UDP flood: fits the overlay MTU with its headers.
pub(crate) const UDP_FLOOD_LEN: u32 = 1300;

pub(crate) type Res<T> = Result<T, String>;

/// io errors to strings, for `?` in scenario code.
pub(crate) fn e<E: std::fmt::Display>(err: E) -> String {
    err.to_string()
}

/// How much to measure.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    pub(crate) runs: usize,
    pub(crate) secs: u32,
    pub(crate) pings: u32,
    /// TCP congestion control of the iperf3 clients (`iperf3 -C`); `None`: the
    /// namespace's default.
    pub(crate) cc: Option<&'static str>,
}

/// Two host namespaces joined by one veth (MTU 1500, ip_forward off), and, when asked,
/// one container namespace per host. Dropping it kills every process it spawned and
/// deletes every namespace.
pub(crate) struct Testbed {
    pub(crate) net: TestNet,
    pub(crate) ha: Ns,
    pub(crate) hb: Ns,
    pub(crate) ca: Ns,
    pub(crate) cb: Ns,
    /// Scratch directory for this scenario, removed on drop.
    pub(crate) dir: PathBuf,
}

impl Testbed {
    pub(crate) fn new(tag: &str) -> Res<Self> {
        let mut net = TestNet::new().map_err(e)?;
        let dir = std::env::temp_dir().join(format!("{}-bench-{tag}", net.prefix()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(e)?;
        let ha = net.add_host("ha").map_err(e)?;
        let hb = net.add_host("hb").map_err(e)?;
        net.veth(&ha, UL_IF, &hb, UL_IF).map_err(e)?;
        for (ns, ip) in [(&ha, HOST_A), (&hb, HOST_B)] {
            ns.run(&["ip", "link", "set", UL_IF, "mtu", &UL_MTU.to_string()])
                .map_err(e)?;
            net.addr(ns, UL_IF, ip.into(), 24).map_err(e)?;
            let fwd = ns.sysctl("net/ipv4/ip_forward").map_err(e)?;
            if fwd != "0" {
                return Err(format!("ip_forward is {fwd} in {}", ns.name()));
            }
        }
        let ca = net.add_ns("ca").map_err(e)?;
        let cb = net.add_ns("cb").map_err(e)?;
        if !ha.ping_until(HOST_B, Duration::from_secs(5)) {
            return Err("underlay veth: host a cannot ping host b".into());
        }
        Ok(Self {
            net,
            ha,
            hb,
            ca,
            cb,
            dir,
        })
    }

    /// A further host namespace linked to host a by its own veth (`eth<n>` in a,
    /// `eth0` in it), on 198.18.<n>.0/24: for extra peers.
    pub(crate) fn spoke(&mut self, n: u8) -> Res<(Ns, Ipv4Addr)> {
        let h = self.net.add_host(&format!("h{}", n + 2)).map_err(e)?;
        let a_if = format!("eth{n}");
        self.net.veth(&self.ha, &a_if, &h, UL_IF).map_err(e)?;
        let a_ip = Ipv4Addr::new(198, 18, n, 1);
        self.net.addr(&self.ha, &a_if, a_ip.into(), 24).map_err(e)?;
        self.net
            .addr(&h, UL_IF, Ipv4Addr::new(198, 18, n, 2).into(), 24)
            .map_err(e)?;
        Ok((h, a_ip))
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// One iperf3 client run.
#[derive(Clone, Debug, Default)]
pub(crate) struct Run {
    pub(crate) gbps: f64,
    /// Seconds iperf3 measured over.
    pub(crate) secs: f64,
    /// Gbit moved (received).
    pub(crate) gbit: f64,
    /// iperf3 client and server CPU, % of one core (iperf3's own getrusage figures).
    pub(crate) iperf_cpu_pct: f64,
    /// Daemons' CPU seconds during the run (utime+stime deltas), summed; None without daemons.
    pub(crate) daemon_cpu_s: Option<f64>,
    /// Highest VmRSS (KiB) any daemon showed during the run.
    pub(crate) daemon_rss_max_kib: Option<u64>,
}

/// What an iperf3 client sends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Traffic {
    /// TCP, as fast as the path takes it.
    #[default]
    Tcp,
    /// UDP datagrams of [`UDP_FLOOD_LEN`] bytes, unthrottled (`-b 0`): what arrives
    /// measures the per-packet cost of the path, not TCP's reaction to it.
    UdpFlood,
}

/// All runs of one stream count.
#[derive(Clone, Debug, Default)]
pub(crate) struct Series {
    pub(crate) streams: u32,
    pub(crate) traffic: Traffic,
    pub(crate) runs: Vec<Run>,
}

impl Series {
    pub(crate) fn median_gbps(&self) -> Option<f64> {
        median(self.runs.iter().map(|r| r.gbps).collect())
    }

    fn total_secs(&self) -> f64 {
        self.runs.iter().map(|r| r.secs).sum()
    }

    /// Daemons' CPU, % of one core, over all runs.
    pub(crate) fn daemon_cpu_pct(&self) -> Option<f64> {
        let cpu: Option<f64> = self.runs.iter().map(|r| r.daemon_cpu_s).sum();
        let secs = self.total_secs();
        cpu.filter(|_| secs > 0.0).map(|c| c / secs * 100.0)
    }

    /// iperf3 client + server + daemons, % of one core, over all runs.
    pub(crate) fn path_cpu_pct(&self) -> Option<f64> {
        let secs = self.total_secs();
        if self.runs.is_empty() || secs <= 0.0 {
            return None;
        }
        let iperf: f64 = self
            .runs
            .iter()
            .map(|r| r.iperf_cpu_pct * r.secs)
            .sum::<f64>()
            / secs;
        Some(iperf + self.daemon_cpu_pct().unwrap_or(0.0))
    }

    fn gbit(&self) -> f64 {
        self.runs.iter().map(|r| r.gbit).sum()
    }

    /// Gbit moved per daemon CPU-second (= Gbit/s per busy daemon core); None when the
    /// daemons were all but idle.
    pub(crate) fn gbps_per_daemon_core(&self) -> Option<f64> {
        let cpu: f64 = self
            .runs
            .iter()
            .map(|r| r.daemon_cpu_s)
            .sum::<Option<f64>>()?;
        // Under 2% of a core the daemons are not in the data path (fastdp): the quotient
        // would only measure clock-tick rounding.
        (self.daemon_cpu_pct()? >= 2.0).then(|| self.gbit() / cpu)
    }

    /// Gbit/s per busy core of the whole path (iperf3 both ends + daemons).
    pub(crate) fn gbps_per_path_core(&self) -> Option<f64> {
        let pct = self.path_cpu_pct()?;
        let gbps = self.gbit() / self.total_secs();
        (pct > 0.0).then(|| gbps / (pct / 100.0))
    }

    pub(crate) fn rss_max_kib(&self) -> Option<u64> {
        self.runs.iter().filter_map(|r| r.daemon_rss_max_kib).max()
    }
}

pub(crate) fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// An iperf3 server spawned in a namespace (killed when its `TestNet` drops).
pub(crate) fn iperf_server(net: &mut TestNet, ns: &Ns) -> Res<u32> {
    let s = net
        .spawn(ns, &["iperf3", "-s", "-p", IPERF_PORT])
        .map_err(e)?;
    thread::sleep(Duration::from_millis(300));
    Ok(s.pid)
}

/// iperf3 clients in `client` against the server at `server_ip` as `plan` says, sampling
/// `daemons`' CPU and RSS.
#[derive(Clone, Copy)]
pub(crate) struct Iperf<'a> {
    pub(crate) client: &'a Ns,
    pub(crate) server_ip: Ipv4Addr,
    pub(crate) plan: Plan,
    pub(crate) daemons: &'a [u32],
}

/// Runs `iperf.plan.runs` iperf3 clients with `streams` streams of `traffic`.
pub(crate) fn iperf_series(iperf: Iperf<'_>, (streams, traffic): (u32, Traffic)) -> Res<Series> {
    let plan = iperf.plan;
    let mut series = Series {
        streams,
        traffic,
        runs: Vec::new(),
    };
    let what = match traffic {
        Traffic::Tcp => format!("-P {streams}"),
        Traffic::UdpFlood => format!("-u -P {streams}"),
    };
    for i in 0..plan.runs {
        let run = iperf_once(iperf, streams, traffic)
            .map_err(|err| format!("iperf3 {what} run {}: {err}", i + 1))?;
        eprintln!(
            "    {what} run {}: {:.3} Gbit/s received{}",
            i + 1,
            run.gbps,
            run.daemon_cpu_s
                .map(|c| format!(", daemons {:.0}% CPU", c / run.secs * 100.0))
                .unwrap_or_default()
        );
        series.runs.push(run);
    }
    Ok(series)
}

fn iperf_once(iperf: Iperf<'_>, streams: u32, traffic: Traffic) -> Res<Run> {
    let Iperf {
        client,
        server_ip,
        plan,
        daemons,
    } = iperf;
    let secs = plan.secs;
    let mut last_err = String::new();
    // A retry covers a server that is not listening yet.
    for _ in 0..3 {
        let before = cpu_secs_sum(daemons);
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let stop = stop.clone();
            let pids = daemons.to_vec();
            thread::spawn(move || {
                let mut max: Option<u64> = None;
                while !stop.load(Ordering::Relaxed) {
                    for &p in &pids {
                        if let Some(r) = rss_kib(p) {
                            max = Some(max.map_or(r, |m| m.max(r)));
                        }
                    }
                    thread::sleep(Duration::from_millis(200));
                }
                max
            })
        };
        let (ip, t, p) = (server_ip.to_string(), secs.to_string(), streams.to_string());
        let mut args = vec![
            "iperf3",
            "-c",
            &ip,
            "-p",
            IPERF_PORT,
            "-t",
            &t,
            "-P",
            &p,
            "-J",
            "--connect-timeout",
            "3000",
        ];
        let len = UDP_FLOOD_LEN.to_string();
        match (traffic, plan.cc) {
            (Traffic::UdpFlood, _) => args.extend(["-u", "-b", "0", "-l", &len]),
            (Traffic::Tcp, Some(cc)) => args.extend(["-C", cc]),
            (Traffic::Tcp, None) => {}
        }
        let out = run_with_deadline(client, &args, Duration::from_secs(u64::from(secs) + 20));
        let after = cpu_secs_sum(daemons);
        stop.store(true, Ordering::Relaxed);
        let rss = sampler.join().unwrap_or(None);
        let out = match out {
            Ok(o) => o,
            Err(err) => {
                last_err = err;
                thread::sleep(Duration::from_millis(500));
                continue;
            }
        };
        let v: Value = match serde_json::from_str(&out) {
            Ok(v) => v,
            Err(err) => {
                last_err = format!("iperf3 JSON: {err}: {}", out.trim());
                continue;
            }
        };
        if let Some(err) = v["error"].as_str() {
            last_err = format!("iperf3: {err}");
            thread::sleep(Duration::from_millis(500));
            continue;
        }
        let recv = &v["end"]["sum_received"];
        let (Some(bps), Some(s), Some(bytes)) = (
            recv["bits_per_second"].as_f64(),
            recv["seconds"].as_f64(),
            recv["bytes"].as_f64(),
        ) else {
            last_err = format!("iperf3 JSON without end.sum_received: {}", out.trim());
            continue;
        };
        let cpu = &v["end"]["cpu_utilization_percent"];
        let iperf_cpu_pct =
            cpu["host_total"].as_f64().unwrap_or(0.0) + cpu["remote_total"].as_f64().unwrap_or(0.0);
        let daemon_cpu_s = match (before, after) {
            (Some(b), Some(a)) if !daemons.is_empty() => Some(a - b),
            _ => None,
        };
        return Ok(Run {
            gbps: bps / 1e9,
            secs: s,
            gbit: bytes * 8.0 / 1e9,
            iperf_cpu_pct,
            daemon_cpu_s,
            daemon_rss_max_kib: rss,
        });
    }
    Err(last_err)
}

/// Runs `args` in `ns`, killing it after `limit`; its stdout, or an error with stderr.
pub(crate) fn run_with_deadline(ns: &Ns, args: &[&str], limit: Duration) -> Res<String> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns.name()])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(e)?;
    // Read the pipes on threads so a chatty child cannot block on a full pipe.
    let mut so = child.stdout.take().ok_or("no stdout")?;
    let mut se = child.stderr.take().ok_or("no stderr")?;
    let to = thread::spawn(move || {
        let mut s = String::new();
        let _ = io::Read::read_to_string(&mut so, &mut s);
        s
    });
    let te = thread::spawn(move || {
        let mut s = String::new();
        let _ = io::Read::read_to_string(&mut se, &mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().map_err(e)? {
            break Some(st);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let (stdout, stderr) = (to.join().unwrap_or_default(), te.join().unwrap_or_default());
    match status {
        None => Err(format!("`{}` timed out after {limit:?}", args.join(" "))),
        // iperf3 -J reports its errors in the JSON on stdout with a failing status.
        Some(st) if st.success() || !stdout.trim().is_empty() => Ok(stdout),
        Some(st) => Err(format!(
            "`{}` failed ({st}): {}",
            args.join(" "),
            stderr.trim()
        )),
    }
}

/// Median RTT in ms of `count` pings from `ns` to `ip` (0.2 s apart).
pub(crate) fn ping_median_ms(ns: &Ns, ip: Ipv4Addr, count: u32) -> Res<f64> {
    let out = run_with_deadline(
        ns,
        &[
            "ping",
            "-n",
            "-c",
            &count.to_string(),
            "-i",
            "0.2",
            "-W",
            "1",
            &ip.to_string(),
        ],
        Duration::from_secs(u64::from(count) + 10),
    )?;
    let times: Vec<f64> = out
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse().ok())
        .collect();
    if times.len() * 2 < count as usize {
        return Err(format!(
            "ping {ip}: only {} of {count} answered",
            times.len()
        ));
    }
    median(times).ok_or_else(|| format!("ping {ip}: no answers"))
}

/// Polls `ok` every 200 ms until it holds or `limit` passes.
pub(crate) fn eventually(limit: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if ok() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        thread::sleep(Duration::from_millis(200));
    }
}

fn clk_tck() -> f64 {
    static TCK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .filter(|&t: &f64| t > 0.0)
            .unwrap_or(100.0)
    })
}

/// utime+stime of process `pid` (all its threads), in seconds.
pub(crate) fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces: state is field 3, utime 14.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / clk_tck())
}

fn cpu_secs_sum(pids: &[u32]) -> Option<f64> {
    pids.iter().map(|&p| cpu_secs(p)).sum()
}

/// VmRSS of process `pid`, KiB.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// True while process `pid` exists and is not a zombie.
pub(crate) fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s[s.rfind(')')? + 1..]
                .split_whitespace()
                .next()
                .map(|st| st != "Z")
        })
        .unwrap_or(false)
}

/// The last `n` lines of a log file, for error reports.
pub(crate) fn log_tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
