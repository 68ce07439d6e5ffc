//! Root-only end-to-end test harness (feature `testnet`): network namespaces
//! as test hosts and containers, veth links between them, an underlay bridge
//! in its own namespace, processes run or spawned inside namespaces, and
//! teardown in `Drop` (also on panic).
//!
//! Nothing here touches the root namespace's links, addresses or firewall:
//! every link is created directly inside a namespace this harness made
//! (`ip link add ... netns A type veth peer ... netns B`), and the underlay
//! bridge lives in a namespace of its own. The harness shells out to `ip`
//! (the library never does), which also makes it an independent check of
//! what the library programmed.
//!
//! ```no_run
//! use weft_kernel_dp::testnet::{TestNet, require_root};
//! if require_root().is_some() { return; } // prints why
//! let mut net = TestNet::new().unwrap();
//! let a = net.add_host("a").unwrap();
//! let b = net.add_host("b").unwrap();
//! let _ua = net.underlay_attach(&a).unwrap();
//! let ub = net.underlay_attach(&b).unwrap();
//! assert!(a.ping(ub, 3));
//! // dropped: processes killed, namespaces deleted
//! ```
//!
//! Names: every namespace is `wt<pid><letters>-<name>` (`wt4242a-h1`), unique
//! per `TestNet` and process, so parallel tests never collide. A `TestNet`
//! also removes namespaces left behind by earlier test processes that died
//! without running `Drop` (their pid no longer exists).

use std::{
    fmt,
    fs::{self, File},
    io::{self, Write},
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use crate::run_in_netns;

/// Set this variable (to anything) to make [`require_root`] panic instead of
/// skipping: for CI, where root tests must run.
pub const REQUIRED_ENV: &str = "WEFT_TESTNET_REQUIRED";

/// Underlay interface name inside each attached host.
pub const UNDERLAY_IF: &str = "eth0";
/// Underlay bridge name inside the underlay namespace.
pub const UNDERLAY_BRIDGE: &str = "br0";
/// Underlay prefix length; hosts get 198.18.0.1, .2, ... (RFC 2544 benchmark
/// range: never routed, never someone else's).
pub const UNDERLAY_PREFIX_LEN: u8 = 24;
const UNDERLAY_HOSTS_MAX: usize = 250;
/// Lines of each spawned process's log printed when a test panics.
const LOG_TAIL_LINES: usize = 40;

/// Why a root test cannot run here; printed by [`require_root`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkipReason(pub String);

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks that this process can build test networks: root, an `ip` binary,
/// and working named network namespaces. Returns `None` when it can; else
/// prints `SKIPPED <test>: <reason>` to stderr and returns the reason, and the
/// test should return early. With [`REQUIRED_ENV`] set it panics instead.
pub fn require_root() -> Option<SkipReason> {
    static PROBE: OnceLock<Option<SkipReason>> = OnceLock::new();
    let reason = PROBE.get_or_init(probe).clone()?;
    let test = thread::current()
        .name()
        .unwrap_or("<unnamed test>")
        .to_string();
    if std::env::var_os(REQUIRED_ENV).is_some() {
        panic!("{test}: cannot run root network test ({reason}) but {REQUIRED_ENV} is set");
    }
    // Straight to fd 2: libtest captures `eprintln!` of passing tests, and a
    // skip must be seen.
    let _ = writeln!(io::stderr(), "SKIPPED {test}: {reason}");
    Some(reason)
}

fn probe() -> Option<SkipReason> {
    let skip = |s: String| Some(SkipReason(s));
    match effective_uid() {
        Some(0) => {}
        Some(uid) => return skip(format!("needs root (running as uid {uid})")),
        None => return skip("cannot read effective uid from /proc/self/status".into()),
    }
    if !Path::new("/proc/self/ns/net").exists() {
        return skip("kernel has no network namespaces (/proc/self/ns/net missing)".into());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(out) if out.status.success() => {}
        _ => return skip("the `ip` command (iproute2) is not installed".into()),
    }
    let name = format!("wt{}probe", std::process::id());
    let added = Command::new("ip").args(["netns", "add", &name]).output();
    let _ = Command::new("ip").args(["netns", "del", &name]).output();
    match added {
        Ok(out) if out.status.success() => None,
        Ok(out) => skip(format!(
            "cannot create network namespaces: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => skip(format!("cannot run `ip netns add`: {e}")),
    }
}

fn effective_uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// One network namespace made by a [`TestNet`]. Cheap to clone; it does not
/// own the namespace (the `TestNet` does).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ns {
    name: String,
}

impl Ns {
    /// The full namespace name (`wt4242a-h1`), as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/var/run/netns/<name>`: what [`crate::Netlink::in_netns`] and
    /// [`crate::Netlink::move_to_netns`] take.
    pub fn path(&self) -> PathBuf {
        Path::new("/var/run/netns").join(&self.name)
    }

    /// Runs `args` inside this namespace (`ip netns exec`) and returns its output.
    pub fn exec(&self, args: &[&str]) -> io::Result<Output> {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .stdin(Stdio::null())
            .output()
    }

    /// Runs `args` inside this namespace; its stdout on success, else an error
    /// carrying the command, exit status and stderr.
    pub fn run(&self, args: &[&str]) -> io::Result<String> {
        let out = self.exec(args)?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(io::Error::other(format!(
                "in netns {}: `{}` failed ({}): {}",
                self.name,
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }

    /// Sends `count` pings (0.2 s apart, 1 s deadline each) to `ip`; true if any answered.
    pub fn ping(&self, ip: impl Into<IpAddr>, count: u32) -> bool {
        let ip = ip.into().to_string();
        let count = count.max(1).to_string();
        self.exec(&[
            "ping", "-n", "-q", "-c", &count, "-i", "0.2", "-W", "1", &ip,
        ])
        .is_ok_and(|o| o.status.success())
    }

    /// Pings the broadcast address `broadcast` `count` times; what ping printed, to see
    /// who answered (`from ADDR`).
    pub fn ping_broadcast(&self, broadcast: Ipv4Addr, count: u32) -> io::Result<String> {
        let (ip, count) = (broadcast.to_string(), count.max(1).to_string());
        let out = self.exec(&[
            "ping", "-n", "-b", "-c", &count, "-i", "0.3", "-W", "2", &ip,
        ])?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Pings `ip` until it answers or `timeout` passes; true if it answered.
    /// For paths that take a moment to come up (bridge ports, ARP).
    pub fn ping_until(&self, ip: impl Into<IpAddr>, timeout: Duration) -> bool {
        let ip = ip.into();
        let deadline = Instant::now() + timeout;
        loop {
            if self.ping(ip, 1) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
        }
    }

    /// Reads a sysctl file (path under `/proc/sys/`) as seen inside this namespace.
    pub fn sysctl(&self, key: &str) -> io::Result<String> {
        let path = sysctl_path(key);
        run_in_netns(self.path(), move || fs::read_to_string(path))
            .map_err(io::Error::other)?
            .map(|s| s.trim().to_string())
    }

    /// Writes a sysctl inside this namespace (from a thread that joined it, so
    /// `/proc/sys/net` is this namespace's).
    pub fn set_sysctl(&self, key: &str, value: &str) -> io::Result<()> {
        let path = sysctl_path(key);
        let value = value.to_string();
        run_in_netns(self.path(), move || fs::write(path, value)).map_err(io::Error::other)?
    }
}

fn sysctl_path(key: &str) -> PathBuf {
    Path::new("/proc/sys").join(key.replace('.', "/"))
}

/// A process started with [`TestNet::spawn`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spawned {
    /// Its pid (the command itself: `ip netns exec` execs into it).
    pub pid: u32,
    /// File receiving its stdout and stderr.
    pub log: PathBuf,
}

/// A set of network namespaces and processes for one test, all removed on drop.
#[derive(Debug)]
pub struct TestNet {
    prefix: String,
    /// In creation order; deleted in reverse.
    namespaces: Vec<Ns>,
    children: Vec<(Child, PathBuf)>,
    underlay: Option<Ns>,
    underlay_hosts: usize,
    log_dir: PathBuf,
}

impl TestNet {
    /// The directory holding the logs of the processes [`TestNet::spawn`] started.
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// Starts an empty test network with a fresh name prefix. Call
    /// [`require_root`] first. Also sweeps namespaces that dead test
    /// processes left behind.
    pub fn new() -> io::Result<Self> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        sweep_stale();
        let prefix = format!(
            "wt{}{}",
            std::process::id(),
            letters(NEXT.fetch_add(1, Ordering::Relaxed))
        );
        let log_dir = std::env::temp_dir().join(format!("weft-testnet-{prefix}"));
        fs::create_dir_all(&log_dir)?;
        Ok(Self {
            prefix,
            namespaces: Vec::new(),
            children: Vec::new(),
            underlay: None,
            underlay_hosts: 0,
            log_dir,
        })
    }

    /// This network's name prefix (`wt4242a`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Creates namespace `<prefix>-<name>` with loopback up. Use for
    /// "containers" and anything that is not a test host.
    pub fn add_ns(&mut self, name: &str) -> io::Result<Ns> {
        let ns = Ns {
            name: format!("{}-{name}", self.prefix),
        };
        ip(&["netns", "add", &ns.name])?;
        self.namespaces.push(ns.clone());
        ns.run(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Creates a test host: a namespace as [`TestNet::add_ns`], with
    /// `net.ipv4.ip_forward=0` (new namespaces inherit 1 on some machines, and a
    /// host that forwards would hide routing bugs).
    pub fn add_host(&mut self, name: &str) -> io::Result<Ns> {
        let ns = self.add_ns(name)?;
        ns.set_sysctl("net/ipv4/ip_forward", "0")?;
        Ok(ns)
    }

    /// Creates a veth pair: `a_if` in `a`, `b_if` in `b`, both up. Created
    /// directly in the two namespaces, never in the root one.
    pub fn veth(&self, a: &Ns, a_if: &str, b: &Ns, b_if: &str) -> io::Result<()> {
        ip(&[
            "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns",
            &b.name,
        ])?;
        a.run(&["ip", "link", "set", a_if, "up"])?;
        b.run(&["ip", "link", "set", b_if, "up"])?;
        Ok(())
    }

    /// Adds `addr/prefix_len` to `dev` in `ns`.
    pub fn addr(&self, ns: &Ns, dev: &str, addr: IpAddr, prefix_len: u8) -> io::Result<()> {
        ns.run(&[
            "ip",
            "addr",
            "add",
            &format!("{addr}/{prefix_len}"),
            "dev",
            dev,
        ])?;
        Ok(())
    }

    /// Plugs `host` into the shared underlay: a bridge in a dedicated
    /// namespace (made on first use), a veth [`UNDERLAY_IF`] in `host` with
    /// the next address of 198.18.0.0/24, which it returns.
    pub fn underlay_attach(&mut self, host: &Ns) -> io::Result<Ipv4Addr> {
        if self.underlay_hosts >= UNDERLAY_HOSTS_MAX {
            return Err(io::Error::other("underlay is full"));
        }
        let ul = match &self.underlay {
            Some(ul) => ul.clone(),
            None => {
                let ul = self.add_ns("ul")?;
                ul.run(&["ip", "link", "add", UNDERLAY_BRIDGE, "type", "bridge"])?;
                ul.run(&["ip", "link", "set", UNDERLAY_BRIDGE, "up"])?;
                self.underlay = Some(ul.clone());
                ul
            }
        };
        self.underlay_hosts += 1;
        let n = self.underlay_hosts;
        let port = format!("p{n}");
        self.veth(host, UNDERLAY_IF, &ul, &port)?;
        ul.run(&["ip", "link", "set", &port, "master", UNDERLAY_BRIDGE])?;
        let addr = Ipv4Addr::new(198, 18, 0, n as u8);
        self.addr(host, UNDERLAY_IF, addr.into(), UNDERLAY_PREFIX_LEN)?;
        Ok(addr)
    }

    /// The underlay namespace, once [`TestNet::underlay_attach`] made it.
    pub fn underlay_ns(&self) -> Option<&Ns> {
        self.underlay.as_ref()
    }

    /// Starts `args` inside `ns` in the background, stdout and stderr to a log
    /// file; the process is killed when the `TestNet` drops (or by [`TestNet::kill`]).
    pub fn spawn(&mut self, ns: &Ns, args: &[&str]) -> io::Result<Spawned> {
        let n = self.children.len();
        let log = self.log_dir.join(format!("{}-{n}.log", ns.name));
        let out = File::create(&log)?;
        let err = out.try_clone()?;
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()?;
        let spawned = Spawned {
            pid: child.id(),
            log: log.clone(),
        };
        self.children.push((child, log));
        Ok(spawned)
    }

    /// The pids of processes spawned and not yet reaped.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(|(c, _)| c.id()).collect()
    }

    /// Kills (SIGKILL) and reaps spawned process `pid`; false if it is not ours.
    pub fn kill(&mut self, pid: u32) -> bool {
        let Some(i) = self.children.iter().position(|(c, _)| c.id() == pid) else {
            return false;
        };
        let (mut child, _log) = self.children.remove(i);
        let _ = child.kill();
        let _ = child.wait();
        true
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        let panicking = thread::panicking();
        for (child, log) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
            if panicking {
                print_log_tail(log);
            }
        }
        self.children.clear();
        for ns in self.namespaces.iter().rev() {
            delete_netns(&ns.name);
        }
        let _ = fs::remove_dir_all(&self.log_dir);
    }
}

fn print_log_tail(log: &Path) {
    let Ok(text) = fs::read_to_string(log) else {
        return;
    };
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(LOG_TAIL_LINES);
    eprintln!(
        "---- last {} lines of {} ----",
        lines.len() - start,
        log.display()
    );
    for line in &lines[start..] {
        eprintln!("{line}");
    }
}

/// Kills whatever still runs in namespace `name` (grandchildren, daemons)
/// and deletes it; its links go with it.
fn delete_netns(name: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if pid.parse::<u32>().is_ok() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
    }
    let _ = Command::new("ip").args(["netns", "del", name]).output();
}

/// Deletes `wt<pid>...` namespaces whose creating process is gone.
fn sweep_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    let me = std::process::id();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix("wt") else {
            continue;
        };
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let Ok(pid) = digits.parse::<u32>() else {
            continue;
        };
        if pid != me && !Path::new(&format!("/proc/{pid}")).exists() {
            delete_netns(name);
        }
    }
}

/// 0 -> "a", 25 -> "z", 26 -> "aa", ...
fn letters(mut n: usize) -> String {
    let mut out = Vec::new();
    loop {
        out.push(b'a' + (n % 26) as u8);
        if n < 26 {
            break;
        }
        n = n / 26 - 1;
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_are_unique_and_short() {
        assert_eq!(letters(0), "a");
        assert_eq!(letters(25), "z");
        assert_eq!(letters(26), "aa");
        assert_eq!(letters(27), "ab");
        assert_eq!(letters(26 + 26 * 26), "aaa");
        let all: std::collections::HashSet<String> = (0..2000).map(letters).collect();
        assert_eq!(all.len(), 2000);
    }

    #[test]
    fn sysctl_keys_map_to_proc_paths() {
        assert_eq!(
            sysctl_path("net.ipv4.ip_forward"),
            Path::new("/proc/sys/net/ipv4/ip_forward")
        );
        assert_eq!(
            sysctl_path("net/ipv4/ip_forward"),
            Path::new("/proc/sys/net/ipv4/ip_forward")
        );
    }
}
