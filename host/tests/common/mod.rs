//! Shared pieces of the end-to-end tests: a `weft router` started inside a test host
//! namespace, driven through its CLI, and "containers" (namespaces) attached to it.
//! Everything lives in namespaces made by `TestNet`, which tears them down on drop.
//! The Docker Engine's containers, networks and test image: [`docker`].
#![allow(dead_code, unreachable_pub)]

use serde_json::Value;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use weft_kernel_dp::testnet::{Ns, TestNet};

pub mod docker;

pub const WEFT: &str = env!("CARGO_BIN_EXE_weft");

pub struct Router {
    pub ns: Ns,
    pub socket: PathBuf,
    pub state: PathBuf,
    pub log: PathBuf,
    pub pid: u32,
}

/// Options for starting a router.
#[derive(Clone, Default)]
pub struct Opts<'a> {
    pub password: Option<&'a str>,
    pub peers: Vec<String>,
    pub extra: Vec<&'a str>,
    /// `KEY=value` environment for the router process (e.g. the datapath backend).
    pub env: Vec<&'a str>,
}

impl Router {
    pub fn start(net: &mut TestNet, ns: &Ns, opts: &Opts<'_>) -> Self {
        let dir = std::env::temp_dir().join(format!("weft-e2e-{}", ns.name()));
        let _ = std::fs::remove_dir_all(&dir);
        Self::restart(net, ns, opts)
    }

    /// Starts a router keeping the state dir of an earlier one in the same namespace.
    pub fn restart(net: &mut TestNet, ns: &Ns, opts: &Opts<'_>) -> Self {
        let dir = std::env::temp_dir().join(format!("weft-e2e-{}", ns.name()));
        std::fs::create_dir_all(&dir).unwrap();
        // In a directory of its own the router creates (0700), as /run/weft.
        let socket = dir.join("run").join("weft.sock");
        let state = dir.join("state");
        let (s, st) = (socket.display().to_string(), state.display().to_string());
        let mut args = vec!["env"];
        args.extend(opts.env.iter().copied());
        args.extend([WEFT, "router", "--socket", &s, "--state-dir", &st]);
        if let Some(p) = opts.password {
            args.extend(["--password", p]);
        }
        args.extend(opts.extra.iter().copied());
        // The Docker plugin only where a test asks for its socket: the default path is
        // the machine's.
        if !opts.extra.contains(&"--plugin-socket") {
            args.push("--no-plugin");
        }
        // Likewise the Docker API proxy.
        if !opts.extra.contains(&"--proxy-socket") && !opts.extra.contains(&"--no-proxy") {
            args.push("--no-proxy");
        }
        args.extend(opts.peers.iter().map(String::as_str));
        let spawned = net.spawn(ns, &args).unwrap();
        let r = Self {
            ns: ns.clone(),
            socket,
            state,
            log: spawned.log,
            pid: spawned.pid,
        };
        r.wait_until(Duration::from_secs(10), "router answers", |r| {
            r.try_json(&["status"]).is_some()
        });
        r
    }

    /// Runs `weft ARGS --socket S` inside the router's namespace.
    pub fn weft(&self, args: &[&str]) -> std::io::Result<String> {
        let mut full: Vec<&str> = vec![WEFT];
        full.extend(args);
        let s = self.socket.display().to_string();
        full.extend(["--socket", &s]);
        self.ns.run(&full)
    }

    pub fn try_json(&self, args: &[&str]) -> Option<Value> {
        let out = Command::new(WEFT)
            .args(args)
            .args(["--json", "--socket"])
            .arg(&self.socket)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())?
    }

    pub fn json(&self, args: &[&str]) -> Value {
        self.try_json(args)
            .unwrap_or_else(|| panic!("weft {args:?} failed; log:\n{}", self.log_text()))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn wait_until(&self, limit: Duration, what: &str, mut ok: impl FnMut(&Self) -> bool) {
        let start = Instant::now();
        while !ok(self) {
            assert!(
                start.elapsed() < limit,
                "{} in {}: timed out waiting for: {what}; log:\n{}",
                self.socket.display(),
                self.ns.name(),
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn name(&self) -> String {
        self.json(&["status"])["name"].as_str().unwrap().to_owned()
    }

    /// Established connections' peer names.
    pub fn established(&self) -> Vec<String> {
        self.try_json(&["status", "connections"])
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter(|c| c["state"] == "established")
            .filter_map(|c| c["peer"].as_str().map(str::to_owned))
            .collect()
    }

    /// Attaches namespace `c` with `cidr`.
    pub fn attach(&self, c: &Ns, cidr: &str) {
        let p = c.path().display().to_string();
        let out = self.weft(&["attach", cidr, "--netns", &p]);
        assert!(
            out.is_ok(),
            "attach {cidr}: {out:?}; log:\n{}",
            self.log_text()
        );
    }

    /// `weft attach --netns C ARGS`: the addresses printed, or the one-line error.
    pub fn try_attach(&self, c: &Ns, args: &[&str]) -> Result<Vec<String>, String> {
        let p = c.path().display().to_string();
        let mut full = vec!["attach", "--netns", &p];
        full.extend_from_slice(args);
        self.weft(&full)
            .map(|out| out.split_whitespace().map(str::to_owned).collect())
            .map_err(|e| e.to_string())
    }

    /// Detaches `cidr` from `c`, or the whole attachment when `cidr` is empty.
    pub fn detach(&self, c: &Ns, cidr: &str) {
        let p = c.path().display().to_string();
        let mut args = vec!["detach", "--netns", &p];
        if !cidr.is_empty() {
            args.push(cidr);
        }
        let out = self.weft(&args);
        assert!(out.is_ok(), "detach {cidr}: {out:?}");
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.state.parent().unwrap());
    }
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Waits until `from` can ping `to`.
pub fn ping_until(from: &Ns, to: &str, limit: Duration) -> bool {
    from.ping_until(ip(to), limit)
}

/// Waits until `ok` holds or `limit` passes.
pub fn eventually(limit: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if ok() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A bridge inside its own namespace joining hosts' extra interfaces: to build shapes
/// other than the harness's single underlay (lines, squares).
pub fn link(net: &TestNet, a: &Ns, b: &Ns, a_ip: &str, b_ip: &str, a_if: &str, b_if: &str) {
    net.veth(a, a_if, b, b_if).unwrap();
    net.addr(a, a_if, ip(a_ip), 24).unwrap();
    net.addr(b, b_if, ip(b_ip), 24).unwrap();
}

impl Opts<'static> {
    /// Sleeve only (`--no-fastdp`): for tests about the userspace datapath.
    pub fn sleeve() -> Self {
        Self {
            extra: vec!["--no-fastdp"],
            ..Self::default()
        }
    }

    /// Sleeve only, dialling `peers`.
    pub fn sleeve_to(peers: &[impl ToString]) -> Self {
        Self {
            peers: peers.iter().map(ToString::to_string).collect(),
            ..Self::sleeve()
        }
    }
}

impl Router {
    /// The process is still running (not gone, not a zombie).
    pub fn alive(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .ok()
            .and_then(|s| {
                let after = s.rsplit_once(')')?.1.trim_start().chars().next()?;
                Some(after != 'Z' && after != 'X')
            })
            .unwrap_or(false)
    }

    /// `status`'s `datapath` object.
    pub fn datapath(&self) -> Value {
        self.json(&["status"])["datapath"].clone()
    }

    /// A datapath counter from `status`.
    pub fn counter(&self, key: &str) -> u64 {
        self.datapath()[key].as_u64().unwrap_or(0)
    }

    /// The next hop towards peer `name`, as `status peers` shows it.
    pub fn next_hop_to(&self, name: &str) -> Option<String> {
        self.try_json(&["status", "peers"])?
            .as_array()?
            .iter()
            .find(|p| p["name"] == name)?["next_hop"]
            .as_str()
            .map(str::to_owned)
    }

    /// Target addresses (`status targets`).
    pub fn targets(&self) -> Vec<String> {
        self.try_json(&["status", "targets"])
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|t| t["address"].as_str().map(str::to_owned))
            .collect()
    }

    /// Connections (any state) to peer `name`, as `status connections` shows them.
    pub fn connections_to(&self, name: &str) -> Vec<Value> {
        self.try_json(&["status", "connections"])
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c["peer"] == name)
            .collect()
    }
}

/// A packet capture running in a test namespace (`tcpdump -U -w`, so every packet is on
/// disk as soon as it is seen and a SIGKILL loses nothing).
pub struct Capture {
    pub pid: u32,
    pub file: PathBuf,
    /// tcpdump's own output.
    pub log: PathBuf,
}

impl Capture {
    /// Starts capturing on `iface` in `ns` (only `filter`-matching packets, e.g. "udp").
    pub fn start(net: &mut TestNet, ns: &Ns, iface: &str, filter: &str) -> Self {
        let file = std::env::temp_dir().join(format!("weft-e2e-{}-{iface}.pcap", ns.name()));
        let _ = std::fs::remove_file(&file);
        let f = file.display().to_string();
        // --immediate-mode: the kernel hands over each packet at once (not a ring block
        // later), -U: tcpdump writes it at once; a SIGKILL then loses nothing seen.
        let mut args = vec![
            "tcpdump",
            "-n",
            "--immediate-mode",
            "-U",
            "-s",
            "0",
            "-i",
            iface,
            "-w",
            &f,
        ];
        args.extend(filter.split_whitespace());
        let spawned = net.spawn(ns, &args).unwrap();
        let (pid, log) = (spawned.pid, spawned.log);
        // tcpdump creates the file once it listens.
        assert!(
            eventually(Duration::from_secs(10), || file.exists()),
            "tcpdump did not start in {}",
            ns.name()
        );
        std::thread::sleep(Duration::from_millis(300));
        Self { pid, file, log }
    }

    /// Stops the capture and returns the pcap bytes.
    pub fn stop(self, net: &mut TestNet) -> Vec<u8> {
        // Until the file stops growing: tcpdump has written what it saw.
        let size = || std::fs::metadata(&self.file).map_or(0, |m| m.len());
        let mut last = size();
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(200));
            let now = size();
            if now == last {
                break;
            }
            last = now;
        }
        assert!(net.kill(self.pid));
        let bytes = std::fs::read(&self.file).unwrap_or_default();
        let _ = std::fs::remove_file(&self.file);
        bytes
    }
}

/// `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// The MAC of `ifname` inside `ns`.
pub fn mac_of(ns: &Ns, ifname: &str) -> String {
    let out = ns.run(&["cat", &format!("/sys/class/net/{ifname}/address")]);
    out.unwrap().trim().to_owned()
}

/// The first IPv4 address on `ifname` in `ns` (without the prefix length).
pub fn ipv4_of(ns: &Ns, ifname: &str) -> String {
    let out = ns.run(&["ip", "-4", "-o", "addr", "show", ifname]).unwrap();
    let cidr = out.split_whitespace().nth(3).unwrap_or_default();
    cidr.split('/').next().unwrap_or_default().to_owned()
}

/// `GET /metrics` from a router's control socket (Prometheus text).
pub fn metrics(r: &Router) -> String {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(&r.socket).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: weft\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// A fresh `TestNet`, or `None` (after printing why) where the end-to-end tests cannot run.
/// [`test_net`] for a test that also runs python3 scripts: without python3 it fails where
/// the root tests are required (CI) and prints why it skips elsewhere.
pub fn test_net_with_python(test: &str) -> Option<TestNet> {
    let net = test_net()?;
    if Command::new("python3").arg("-V").output().is_err() {
        assert!(
            std::env::var_os(weft_kernel_dp::testnet::REQUIRED_ENV).is_none(),
            "{test}: python3 is not installed"
        );
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: python3 is not installed"
        );
        return None;
    }
    Some(net)
}

pub fn test_net() -> Option<TestNet> {
    if weft_kernel_dp::testnet::require_root().is_some() {
        return None;
    }
    Some(TestNet::new().unwrap())
}

/// Test hosts named `names`, each attached to the shared underlay in that order, with
/// their underlay addresses.
pub fn underlay_hosts<const N: usize>(
    net: &mut TestNet,
    names: [&str; N],
) -> ([Ns; N], [Ipv4Addr; N]) {
    let hosts = names.map(|n| net.add_host(n).unwrap());
    let ips = hosts.each_ref().map(|h| net.underlay_attach(h).unwrap());
    (hosts, ips)
}

/// Two hosts `a` and `b` on the underlay, containers `ca` and `cb`, a router on each
/// (`b`'s dialling `a` besides its own `peers`), `ca` attached as 10.32.1.1/12 and `cb`
/// as 10.32.2.1/12. Returns `(ha, hb, a, b, ca, cb)`.
pub fn two_hosts_with_containers(
    net: &mut TestNet,
    a_opts: &Opts<'_>,
    b_opts: &Opts<'_>,
) -> (Ns, Ns, Router, Router, Ns, Ns) {
    let ([ha, hb], [ip_a, _]) = underlay_hosts(net, ["a", "b"]);
    let (ca, cb) = (net.add_ns("ca").unwrap(), net.add_ns("cb").unwrap());
    let a = Router::start(net, &ha, a_opts);
    let mut b_opts = b_opts.clone();
    b_opts.peers.push(ip_a.to_string());
    let b = Router::start(net, &hb, &b_opts);
    a.attach(&ca, "10.32.1.1/12");
    b.attach(&cb, "10.32.2.1/12");
    (ha, hb, a, b, ca, cb)
}

impl Router {
    /// `status`'s count of reachable peers.
    pub fn reachable_peers(&self) -> u64 {
        self.json(&["status"])["reachable_peers"]
            .as_u64()
            .unwrap_or(0)
    }
}

/// Waits until each of `routers` reaches `n` other peers.
pub fn wait_reachable(routers: &[&Router], n: u64, limit: Duration) {
    for r in routers {
        r.wait_until(limit, &format!("{n} peers reachable"), |r| {
            r.reachable_peers() >= n
        });
    }
}

/// Sends UDP datagrams to group 239.7.7.7 from `sender` (overlay address `sender_ip`)
/// until every receiver (a namespace and its overlay address, which joins the group) got
/// one, or 15 s pass. Returns what each receiver's sink file holds, for the message.
pub fn multicast_reaches(
    net: &mut TestNet,
    sender: &Ns,
    sender_ip: &str,
    receivers: &[(&Ns, &str)],
) -> Result<(), Vec<Option<u64>>> {
    let files: Vec<PathBuf> = receivers
        .iter()
        .map(|(c, _)| std::env::temp_dir().join(format!("weft-e2e-{}.mcast", c.name())))
        .collect();
    for ((c, own), f) in receivers.iter().zip(&files) {
        let _ = std::fs::remove_file(f);
        let recv = format!("UDP4-RECV:5007,reuseaddr,ip-add-membership=239.7.7.7:{own}");
        let sink = format!("OPEN:{},creat,append", f.display());
        net.spawn(c, &["socat", "-u", &recv, &sink]).unwrap();
    }
    let marker = format!("weft-mcast-{}", std::process::id());
    let got = |f: &PathBuf| std::fs::read_to_string(f).is_ok_and(|s| s.contains(&marker));
    let send = format!(
        "echo {marker} | socat -u - UDP4-DATAGRAM:239.7.7.7:5007,ip-multicast-if={sender_ip}"
    );
    let arrived = eventually(Duration::from_secs(15), || {
        let _ = sender.run(&["sh", "-c", &send]);
        std::thread::sleep(Duration::from_millis(300));
        files.iter().all(got)
    });
    let sizes: Vec<_> = files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).ok())
        .collect();
    for f in &files {
        let _ = std::fs::remove_file(f);
    }
    if arrived { Ok(()) } else { Err(sizes) }
}
