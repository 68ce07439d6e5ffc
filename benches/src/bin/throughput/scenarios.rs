//! The rows: each builds its own testbed, measures, and tears everything down when the
//! testbed drops (also when it fails half way).

use std::fs;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::Duration;

use serde_json::Value;
use weft_kernel_dp::testnet::{Ns, TestNet};

use crate::measure::{
    HOST_A, HOST_B, Iperf, OVERLAY_MTU, Plan, Res, Testbed, Traffic, alive, e, eventually,
    iperf_series, iperf_server, log_tail, ping_median_ms, rss_kib,
};
use crate::report::Measured;

/// Why a row has no (complete) numbers.
#[derive(Debug)]
pub(crate) enum Stop {
    Failed(String),
    /// Measured nothing by design, e.g. fastdp not negotiated.
    Unavailable(String),
    Skipped(String),
}

impl From<String> for Stop {
    fn from(s: String) -> Self {
        Self::Failed(s)
    }
}

pub(crate) type Outcome = Result<(), Stop>;

/// What every scenario gets.
pub(crate) struct Ctx {
    pub(crate) plan: Plan,
    /// The `weft` binary, or why there is none.
    pub(crate) weft: Result<PathBuf, String>,
}

/// RTT, then iperf3 TCP with 1 and 2 streams and a UDP flood from `client` to `server_ip`
/// (served in `server`).
fn measure(
    net: &mut TestNet,
    client: &Ns,
    server: &Ns,
    server_ip: Ipv4Addr,
    plan: Plan,
    daemons: &[u32],
    m: &mut Measured,
) -> Res<()> {
    eprintln!("    ping x{} ...", plan.pings);
    m.rtt_ms = Some(ping_median_ms(client, server_ip, plan.pings)?);
    iperf_server(net, server)?;
    let iperf = Iperf {
        client,
        server_ip,
        plan,
        daemons,
    };
    let series = |what| iperf_series(iperf, what).map(Some);
    m.one = series((1, Traffic::Tcp))?;
    m.two = series((2, Traffic::Tcp))?;
    m.udp = series((1, Traffic::UdpFlood))?;
    if let Some(dead) = daemons.iter().find(|&&p| !alive(p)) {
        return Err(format!("daemon pid {dead} died during the run"));
    }
    Ok(())
}

/// Row 1, host to host over the underlay veth: the reference.
pub(crate) fn veth(ctx: &Ctx, m: &mut Measured) -> Outcome {
    let mut tb = Testbed::new("veth")?;
    m.notes
        .push("host ns to host ns on the underlay veth, MTU 1500".into());
    measure(&mut tb.net, &tb.ha, &tb.hb, HOST_B, ctx.plan, &[], m)?;
    Ok(())
}

const BRIDGE: &str = "br-vx";
const VX_DEV: &str = "vx0";
const VX_IPS: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 40, 0, 1), Ipv4Addr::new(10, 40, 0, 2)];
const VX_MACS: [&str; 2] = ["02:00:0a:28:00:01", "02:00:0a:28:00:02"];

/// Checks that container a reaches container b (`b_ip`) over the row's `path`, notes the
/// path, and measures from a to b.
fn container_to_container(
    ctx: &Ctx,
    tb: &mut Testbed,
    b_ip: Ipv4Addr,
    path: &str,
    daemons: &[u32],
    m: &mut Measured,
) -> Outcome {
    if !tb.ca.ping_until(b_ip, Duration::from_secs(5)) {
        return Err(Stop::Failed(format!(
            "container a cannot ping container b over {path}"
        )));
    }
    m.notes
        .push(format!("container ns to container ns: {path}"));
    let (ca, cb) = (tb.ca.clone(), tb.cb.clone());
    measure(&mut tb.net, &ca, &cb, b_ip, ctx.plan, daemons, m)?;
    Ok(())
}

/// In host `h`: a bridge [`BRIDGE`], up, with container `c`'s `eth0` (MTU
/// [`OVERLAY_MTU`], address `ip`/24) on it through the veth `vc0`.
fn bridged_container(net: &TestNet, h: &Ns, c: &Ns, ip: Ipv4Addr) -> Res<()> {
    let mtu = OVERLAY_MTU.to_string();
    let run = |ns: &Ns, args: &[&str]| ns.run(args).map(drop).map_err(e);
    run(h, &["ip", "link", "add", BRIDGE, "type", "bridge"])?;
    run(h, &["ip", "link", "set", BRIDGE, "up"])?;
    net.veth(c, "eth0", h, "vc0").map_err(e)?;
    run(c, &["ip", "link", "set", "eth0", "mtu", &mtu])?;
    run(
        h,
        &["ip", "link", "set", "vc0", "mtu", &mtu, "master", BRIDGE],
    )?;
    net.addr(c, "eth0", ip.into(), 24).map_err(e)
}

/// Row 2, the hand-built kernel path: per host a bridge, the container's veth on it, and a
/// VXLAN port with static FDB entries (flood + the remote container's MAC) to the other
/// host. What the fast datapath is meant to match.
pub(crate) fn vxlan(ctx: &Ctx, m: &mut Measured) -> Outcome {
    let mut tb = Testbed::new("vxlan")?;
    let sides = [
        (tb.ha.clone(), tb.ca.clone(), HOST_A, HOST_B, 0usize),
        (tb.hb.clone(), tb.cb.clone(), HOST_B, HOST_A, 1usize),
    ];
    for (h, c, local, remote, i) in &sides {
        let (local, remote) = (local.to_string(), remote.to_string());
        let run = |ns: &Ns, args: &[&str]| ns.run(args).map(drop).map_err(e);
        bridged_container(&tb.net, h, c, VX_IPS[*i])?;
        run(c, &["ip", "link", "set", "eth0", "address", VX_MACS[*i]])?;
        run(
            h,
            &[
                "ip",
                "link",
                "add",
                VX_DEV,
                "type",
                "vxlan",
                "id",
                "42",
                "local",
                &local,
                "dev",
                "eth0",
                "dstport",
                "4789",
                "nolearning",
            ],
        )?;
        run(h, &["ip", "link", "set", VX_DEV, "master", BRIDGE])?;
        run(h, &["ip", "link", "set", VX_DEV, "up"])?;
        run(
            h,
            &[
                "bridge",
                "fdb",
                "append",
                "00:00:00:00:00:00",
                "dev",
                VX_DEV,
                "dst",
                &remote,
            ],
        )?;
        run(
            h,
            &[
                "bridge",
                "fdb",
                "add",
                VX_MACS[1 - *i],
                "dev",
                VX_DEV,
                "dst",
                &remote,
                "self",
                "permanent",
            ],
        )?;
    }
    let path = format!("veth -> bridge -> vxlan (UDP 4789, static FDB), MTU {OVERLAY_MTU}");
    container_to_container(ctx, &mut tb, VX_IPS[1], &path, &[], m)
}

/// Which weft row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WeftMode {
    /// The sleeve as users get it (default backend and crypto threads).
    Sleeve,
    SleeveEncrypted,
    Fastdp,
    /// The sleeve rows on the plain-syscall backend (`WEFT_DATAPATH_BACKEND=plain`).
    SleevePlainBackend,
    SleeveEncryptedPlainBackend,
    /// Encrypted with `--crypto-threads 2`: one helper thread.
    SleeveEncryptedTwoThreads,
    /// Encrypted with the cipher forced (`--cipher`): ChaCha20-Poly1305, AES-256-GCM.
    SleeveEncryptedChaCha,
    SleeveEncryptedAes,
    /// The sleeve with `--queues 1` and `--queues 2`, plain and encrypted (auto cipher).
    SleeveQueues1,
    SleeveQueues2,
    SleeveEncryptedQueues1,
    SleeveEncryptedQueues2,
}

impl WeftMode {
    fn encrypted(self) -> bool {
        matches!(
            self,
            Self::SleeveEncrypted
                | Self::SleeveEncryptedPlainBackend
                | Self::SleeveEncryptedTwoThreads
                | Self::SleeveEncryptedChaCha
                | Self::SleeveEncryptedAes
                | Self::SleeveEncryptedQueues1
                | Self::SleeveEncryptedQueues2
        )
    }

    /// The cipher the row forces, which its links must then use.
    fn forced_cipher(self) -> Option<&'static str> {
        match self {
            Self::SleeveEncryptedChaCha => Some("chacha20-poly1305"),
            Self::SleeveEncryptedAes => Some("aes-256-gcm"),
            _ => None,
        }
    }

    /// Environment and flags for both routers beyond the password and `--no-fastdp`.
    fn extra(self) -> &'static [&'static str] {
        match self {
            Self::SleevePlainBackend | Self::SleeveEncryptedPlainBackend => {
                &["WEFT_DATAPATH_BACKEND=plain"]
            }
            // Helper threads share one queue's batches (several queues have none).
            Self::SleeveEncryptedTwoThreads => &["--crypto-threads", "2", "--queues", "1"],
            Self::SleeveQueues1 | Self::SleeveEncryptedQueues1 => &["--queues", "1"],
            Self::SleeveQueues2 | Self::SleeveEncryptedQueues2 => &["--queues", "2"],
            Self::SleeveEncryptedChaCha => &["--cipher", "chacha20-poly1305"],
            Self::SleeveEncryptedAes => &["--cipher", "aes-256-gcm"],
            Self::Sleeve | Self::SleeveEncrypted | Self::Fastdp => &[],
        }
    }
}

struct Router {
    pid: u32,
    socket: PathBuf,
    log: PathBuf,
}

const WEFT_PASSWORD: &str = "weft-bench-password";
const WEFT_C: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 32, 1, 1), Ipv4Addr::new(10, 32, 2, 1)];

fn start_router(
    tb: &mut Testbed,
    weft: &Path,
    ns: &Ns,
    tag: &str,
    opts: &[&str],
    peer: Option<Ipv4Addr>,
) -> Res<Router> {
    let dir = tb.dir.join(format!("weft-{tag}"));
    fs::create_dir_all(&dir).map_err(e)?;
    let socket = dir.join("weft.sock");
    let state = dir.join("state");
    let (s, st) = (socket.display().to_string(), state.display().to_string());
    let w = weft.display().to_string();
    let peer = peer.map(|p| p.to_string());
    let mut args = vec!["env"];
    // `KEY=value` entries at the front of `opts` are environment for the router.
    let (env, opts): (Vec<&str>, Vec<&str>) = opts.iter().partition(|o| o.contains('='));
    args.extend(env);
    args.extend([w.as_str(), "router", "--socket", &s, "--state-dir", &st]);
    args.extend(opts);
    args.extend(peer.as_deref());
    let sp = tb.net.spawn(ns, &args).map_err(e)?;
    let r = Router {
        pid: sp.pid,
        socket,
        log: sp.log,
    };
    if !eventually(Duration::from_secs(15), || {
        weft_json(weft, &r.socket, &["status"]).is_some() || !alive(r.pid)
    }) || !alive(r.pid)
    {
        return Err(format!(
            "weft router {tag} did not come up; log:\n{}",
            log_tail(&r.log, 20)
        ));
    }
    Ok(r)
}

fn weft_json(weft: &Path, socket: &Path, args: &[&str]) -> Option<Value> {
    let out = Command::new(weft)
        .args(args)
        .args(["--json", "--socket"])
        .arg(socket)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())?
}

fn connections(weft: &Path, r: &Router) -> Vec<Value> {
    weft_json(weft, &r.socket, &["status", "connections"])
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

/// The modes of `r`'s established connections, e.g. "sleeve".
fn modes(weft: &Path, r: &Router) -> Vec<String> {
    connections(weft, r)
        .iter()
        .filter(|c| c["state"] == "established")
        .map(|c| c["mode"].as_str().unwrap_or("?").to_owned())
        .collect()
}

fn attach(weft: &Path, r: &Router, ns: &Ns, c: &Ns, cidr: &str) -> Res<()> {
    let (w, s, p) = (
        weft.display().to_string(),
        r.socket.display().to_string(),
        c.path().display().to_string(),
    );
    ns.run(&[&w, "attach", cidr, "--netns", &p, "--socket", &s])
        .map(drop)
        .map_err(|err| format!("weft attach {cidr}: {err}"))
}

/// Rows 3-5, weft: routers in both hosts (a accepts, b dials a), containers attached with
/// `weft attach`. Two further routers in spoke namespaces dial a, so that a has 3 peers
/// when its idle RSS is read.
pub(crate) fn weft(ctx: &Ctx, m: &mut Measured, mode: WeftMode) -> Outcome {
    let weft = ctx.weft.clone().map_err(Stop::Failed)?;
    let tag = match mode {
        WeftMode::Sleeve => "sleeve",
        WeftMode::SleeveEncrypted => "sleeve-enc",
        WeftMode::Fastdp => "fastdp",
        WeftMode::SleevePlainBackend => "sleeve-plain",
        WeftMode::SleeveEncryptedPlainBackend => "sleeve-enc-plain",
        WeftMode::SleeveEncryptedTwoThreads => "sleeve-enc-2t",
        WeftMode::SleeveEncryptedChaCha => "sleeve-enc-chacha",
        WeftMode::SleeveEncryptedAes => "sleeve-enc-aes",
        WeftMode::SleeveQueues1 => "sleeve-q1",
        WeftMode::SleeveQueues2 => "sleeve-q2",
        WeftMode::SleeveEncryptedQueues1 => "sleeve-enc-q1",
        WeftMode::SleeveEncryptedQueues2 => "sleeve-enc-q2",
    };
    let mut tb = Testbed::new(tag)?;
    let mut opts: Vec<&str> = mode.extra().to_vec();
    if mode.encrypted() {
        opts.extend(["--password", WEFT_PASSWORD]);
    }
    if mode != WeftMode::Fastdp {
        opts.push("--no-fastdp");
    }
    let (ha, hb, ca, cb) = (tb.ha.clone(), tb.hb.clone(), tb.ca.clone(), tb.cb.clone());
    let a = start_router(&mut tb, &weft, &ha, "a", &opts, None)?;
    let b = start_router(&mut tb, &weft, &hb, "b", &opts, Some(HOST_A))?;
    let logs = |why: String| {
        format!(
            "{why}; a connections: {:?}; a log:\n{}\nb log:\n{}",
            modes(&weft, &a),
            log_tail(&a.log, 8),
            log_tail(&b.log, 8)
        )
    };
    attach(&weft, &a, &ha, &ca, &format!("{}/12", WEFT_C[0]))?;
    attach(&weft, &b, &hb, &cb, &format!("{}/12", WEFT_C[1]))?;
    if !ca.ping_until(WEFT_C[1], Duration::from_secs(20)) {
        return Err(Stop::Failed(logs(
            "container on a cannot ping container on b after 20 s".into(),
        )));
    }
    if mode == WeftMode::Fastdp {
        let mut seen = Vec::new();
        let up = eventually(Duration::from_secs(20), || {
            seen = modes(&weft, &a);
            seen.iter().any(|m| m == "fastdp")
        });
        if !up {
            let shown = if seen.is_empty() {
                "no established connection".to_owned()
            } else {
                seen.join(", ")
            };
            return Err(Stop::Unavailable(format!("fastdp not available: {shown}")));
        }
    }
    let st = weft_json(&weft, &a.socket, &["status"]).unwrap_or_default();
    let mtu = ca
        .run(&["cat", "/sys/class/net/ethwe/mtu"])
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".into());
    let ciphers: Vec<String> = connections(&weft, &a)
        .iter()
        .filter(|c| c["state"] == "established")
        .map(|c| c["cipher"].as_str().unwrap_or("none").to_owned())
        .collect();
    m.notes.push(format!(
        "container ns to container ns via weft attach (ethwe MTU {mtu}); a's connection modes {:?}, encrypted={}, ciphers {ciphers:?}, fastdp={}, backend {}, crypto threads {}, queues {} (received by CPU: {})",
        modes(&weft, &a),
        st["encrypted"],
        st["fastdp"],
        st["datapath"]["backend"],
        st["datapath"]["crypto_threads"],
        st["datapath"]["queues"].as_array().map_or(0, Vec::len),
        st["datapath"]["steered_by_cpu"]
    ));
    if let Some(want) = mode.forced_cipher()
        && !(ciphers.iter().any(|c| c == want) && ciphers.iter().all(|c| c == want))
    {
        return Err(Stop::Failed(format!(
            "router a's links use {ciphers:?}, not the forced {want}"
        )));
    }
    let backend = st["datapath"]["backend"].as_str().unwrap_or("?").to_owned();
    if mode.extra().contains(&"WEFT_DATAPATH_BACKEND=plain") && !backend.starts_with("plain") {
        return Err(Stop::Failed(format!(
            "router a runs the {backend} backend, not plain"
        )));
    }
    let threads = st["datapath"]["crypto_threads"].as_u64();
    if mode == WeftMode::SleeveEncryptedTwoThreads && threads != Some(2) {
        return Err(Stop::Failed(format!(
            "router a seals on {threads:?} threads, not 2"
        )));
    }
    let queues = st["datapath"]["queues"].as_array().map_or(0, Vec::len);
    let want_queues = match mode {
        WeftMode::SleeveQueues1 | WeftMode::SleeveEncryptedQueues1 => Some(1),
        WeftMode::SleeveQueues2 | WeftMode::SleeveEncryptedQueues2 => Some(2),
        _ => None,
    };
    if want_queues.is_some_and(|q| q != queues) {
        return Err(Stop::Failed(format!(
            "router a runs {queues} sleeve queue(s), not {want_queues:?}"
        )));
    }
    if mode.encrypted() && st["encrypted"] != true {
        return Err(Stop::Failed(format!(
            "router a does not report encrypted=true: {st}"
        )));
    }
    // Two more peers for the idle RSS reading; not fatal when they fail.
    let mut extra = Vec::new();
    for n in 1..=2u8 {
        let spoke = tb.spoke(n).and_then(|(h, a_ip)| {
            start_router(&mut tb, &weft, &h, &format!("s{n}"), &opts, Some(a_ip))
        });
        match spoke {
            Ok(r) => extra.push(r),
            Err(err) => m.notes.push(format!("spoke router {n}: {err}")),
        }
    }
    let mut peers = 0;
    eventually(Duration::from_secs(15), || {
        peers = modes(&weft, &a).len();
        peers >= 3
    });
    thread::sleep(Duration::from_secs(2));
    m.rss_idle_kib = rss_kib(a.pid);
    m.rss_idle_peers = Some(peers);
    let (ca, cb) = (tb.ca.clone(), tb.cb.clone());
    measure(
        &mut tb.net,
        &ca,
        &cb,
        WEFT_C[1],
        ctx.plan,
        &[a.pid, b.pid],
        m,
    )
    .map_err(logs)?;
    let st = weft_json(&weft, &a.socket, &["status"]).unwrap_or_default();
    if let Some(dp) = st.get("datapath") {
        m.notes.push(format!("a datapath after the run: {dp}"));
    }
    Ok(())
}

const NEBULA_IPS: [Ipv4Addr; 2] = [
    Ipv4Addr::new(192, 168, 100, 1),
    Ipv4Addr::new(192, 168, 100, 2),
];
const NEBULA_PORT: u16 = 4242;

fn cmd(args: &[&str]) -> Res<()> {
    let out = Command::new(args[0]).args(&args[1..]).output().map_err(e)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Row 6, Nebula (Debian package), lighthouse-less with a static host map, default cipher,
/// tun MTU set to weft's overlay MTU, one nebula per host namespace (its tun there).
pub(crate) fn nebula(ctx: &Ctx, m: &mut Measured) -> Outcome {
    let mut tb = Testbed::new("nebula")?;
    let d = tb.dir.join("nebula");
    fs::create_dir_all(&d).map_err(e)?;
    let p = |f: &str| d.join(f).display().to_string();
    cmd(&[
        "nebula-cert",
        "ca",
        "-name",
        "weft-bench",
        "-out-crt",
        &p("ca.crt"),
        "-out-key",
        &p("ca.key"),
    ])?;
    let mut pids = Vec::new();
    let mut logs = Vec::new();
    let hosts = [
        (tb.ha.clone(), "a", HOST_B, 0usize),
        (tb.hb.clone(), "b", HOST_A, 1usize),
    ];
    for (ns, name, remote_ul, i) in &hosts {
        cmd(&[
            "nebula-cert",
            "sign",
            "-name",
            name,
            "-ip",
            &format!("{}/24", NEBULA_IPS[*i]),
            "-ca-crt",
            &p("ca.crt"),
            "-ca-key",
            &p("ca.key"),
            "-out-crt",
            &p(&format!("{name}.crt")),
            "-out-key",
            &p(&format!("{name}.key")),
        ])?;
        let config = format!(
            "pki:\n  ca: {ca}\n  cert: {crt}\n  key: {key}\n\
             static_host_map:\n  \"{peer}\": [\"{remote_ul}:{NEBULA_PORT}\"]\n\
             lighthouse:\n  am_lighthouse: false\n  interval: 60\n  hosts: []\n\
             listen:\n  host: 0.0.0.0\n  port: {NEBULA_PORT}\n\
             punchy:\n  punch: false\n\
             tun:\n  disabled: false\n  dev: nebula1\n  mtu: {OVERLAY_MTU}\n\
             logging:\n  level: info\n  format: text\n\
             firewall:\n  outbound:\n    - port: any\n      proto: any\n      host: any\n\
             \x20 inbound:\n    - port: any\n      proto: any\n      host: any\n",
            ca = p("ca.crt"),
            crt = p(&format!("{name}.crt")),
            key = p(&format!("{name}.key")),
            peer = NEBULA_IPS[1 - *i],
        );
        let cfg = p(&format!("{name}.yml"));
        fs::write(&cfg, config).map_err(e)?;
        let sp = tb.net.spawn(ns, &["nebula", "-config", &cfg]).map_err(e)?;
        pids.push(sp.pid);
        logs.push(sp.log);
    }
    let tails = || {
        logs.iter()
            .map(|l| log_tail(l, 8))
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    if !tb.ha.ping_until(NEBULA_IPS[1], Duration::from_secs(20)) {
        return Err(Stop::Failed(format!(
            "nebula a cannot ping nebula b after 20 s; logs:\n{}",
            tails()
        )));
    }
    m.notes.push(format!(
        "host ns to host ns over nebula tun (MTU {OVERLAY_MTU}), UDP {NEBULA_PORT}, default cipher"
    ));
    let (ha, hb) = (tb.ha.clone(), tb.hb.clone());
    measure(&mut tb.net, &ha, &hb, NEBULA_IPS[1], ctx.plan, &pids, m)
        .map_err(|err| format!("{err}; logs:\n{}", tails()))?;
    Ok(())
}

const WG_IPS: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 50, 0, 1), Ipv4Addr::new(10, 50, 0, 2)];
const WG_PORT: u16 = 51820;

/// Removes boringtun's UAPI sockets (global paths) on drop.
struct SockGuard(Vec<PathBuf>);

impl Drop for SockGuard {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = fs::remove_file(p);
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn keypair() -> Res<([u8; 32], [u8; 32])> {
    let mut sk = [0u8; 32];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut sk))
        .map_err(e)?;
    let secret = x25519_dalek::StaticSecret::from(sk);
    let public = x25519_dalek::PublicKey::from(&secret);
    Ok((secret.to_bytes(), public.to_bytes()))
}

fn uapi_set(sock: &Path, body: &str) -> Res<()> {
    let mut s = UnixStream::connect(sock).map_err(|err| format!("{}: {err}", sock.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(e)?;
    s.write_all(format!("set=1\n{body}\n").as_bytes())
        .map_err(e)?;
    let mut reply = String::new();
    let mut buf = [0u8; 256];
    while !reply.contains("\n\n") {
        let n = s.read(&mut buf).map_err(e)?;
        if n == 0 {
            break;
        }
        reply.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    if reply.contains("errno=0") {
        Ok(())
    } else {
        Err(format!("boringtun UAPI set: {}", reply.trim()))
    }
}

/// Row 7, boringtun: userspace WireGuard, only when `BORINGTUN_BIN` names `boringtun-cli`.
pub(crate) fn boringtun(ctx: &Ctx, m: &mut Measured) -> Outcome {
    let Some(bin) = std::env::var_os("BORINGTUN_BIN") else {
        return Err(Stop::Skipped("skipped: BORINGTUN_BIN not set".into()));
    };
    let bin = bin.to_string_lossy().into_owned();
    let argv = move |ifname: &str| {
        vec![
            bin.clone(),
            "--foreground".into(),
            "--disable-drop-privileges".into(),
            ifname.to_owned(),
        ]
    };
    userspace_wireguard(ctx, m, "boringtun", "wgb", OVERLAY_MTU, &argv)
}

/// Row 14, wireguard-go (Debian's `wireguard-go`, which this kernel without a WireGuard
/// module leaves as the WireGuard a user gets): MTU 1420, WireGuard's default.
pub(crate) fn wireguard_go(ctx: &Ctx, m: &mut Measured) -> Outcome {
    let bin = "wireguard-go";
    if Command::new(bin).arg("--version").output().is_err() {
        return Err(Stop::Skipped(
            "skipped: no wireguard-go (apt-get install --no-install-recommends wireguard-go)"
                .into(),
        ));
    }
    let argv = |ifname: &str| vec![bin.to_owned(), "-f".into(), ifname.to_owned()];
    userspace_wireguard(ctx, m, "wireguard-go", "wgg", WG_GO_MTU, &argv)
}

/// WireGuard's default tunnel MTU (1500 minus its 80 bytes of IPv6 + UDP + headers).
const WG_GO_MTU: u32 = 1420;

/// A userspace WireGuard per host namespace, run by `argv(ifname)` and configured over
/// its UAPI socket (keys, peer, endpoint; no `wg` tool needed), tun MTU `mtu`; measured
/// host to host.
fn userspace_wireguard(
    ctx: &Ctx,
    m: &mut Measured,
    name: &str,
    if_prefix: &str,
    mtu: u32,
    argv: &dyn Fn(&str) -> Vec<String>,
) -> Outcome {
    let mut tb = Testbed::new(name)?;
    let keys = [keypair()?, keypair()?];
    // UAPI sockets live in /var/run/wireguard/<if>.sock for every namespace: unique names.
    let ifs = [0, 1].map(|i| format!("{if_prefix}{}{}", std::process::id() % 100_000, i));
    let socks: Vec<PathBuf> = ifs
        .iter()
        .map(|n| Path::new("/var/run/wireguard").join(format!("{n}.sock")))
        .collect();
    let _guard = SockGuard(socks.clone());
    let hosts = [(tb.ha.clone(), HOST_B), (tb.hb.clone(), HOST_A)];
    let mut pids = Vec::new();
    let mut logs = Vec::new();
    for (i, (ns, remote)) in hosts.iter().enumerate() {
        let args = argv(&ifs[i]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let sp = tb.net.spawn(ns, &args).map_err(e)?;
        pids.push(sp.pid);
        logs.push(sp.log.clone());
        if !eventually(Duration::from_secs(5), || socks[i].exists()) {
            return Err(Stop::Failed(format!(
                "{name} {} made no UAPI socket; log:\n{}",
                ifs[i],
                log_tail(&sp.log, 10)
            )));
        }
        uapi_set(
            &socks[i],
            &format!(
                "private_key={}\nlisten_port={WG_PORT}\nreplace_peers=true\npublic_key={}\nendpoint={remote}:{WG_PORT}\nallowed_ip={}/32\n",
                hex(&keys[i].0),
                hex(&keys[1 - i].1),
                WG_IPS[1 - i]
            ),
        )?;
        let run = |args: &[&str]| ns.run(args).map(drop).map_err(e);
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", WG_IPS[i]),
            "dev",
            &ifs[i],
        ])?;
        run(&["ip", "link", "set", &ifs[i], "mtu", &mtu.to_string(), "up"])?;
    }
    if !tb.ha.ping_until(WG_IPS[1], Duration::from_secs(15)) {
        return Err(Stop::Failed(format!(
            "{name} a cannot ping b; log a:\n{}",
            log_tail(&logs[0], 10)
        )));
    }
    let shown = argv("IF").join(" ");
    m.notes.push(format!(
        "host ns to host ns over {name} ({shown}), MTU {mtu}"
    ));
    let (ha, hb) = (tb.ha.clone(), tb.hb.clone());
    measure(&mut tb.net, &ha, &hb, WG_IPS[1], ctx.plan, &pids, m)?;
    Ok(())
}

const FWD_TAP: &str = "wf0";
const FWD_PORT: u16 = 6790;
const FWD_IPS: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 41, 0, 1), Ipv4Addr::new(10, 41, 0, 2)];

/// Row 11, the ceiling of the sleeve's design: per host a bridge with the container's veth
/// and a TAP served by `tapfwd`, the least a TAP-plus-UDP forwarder can do (no headers, no
/// checks; see its source). Whatever it reaches, no userspace overlay built on a TAP and a
/// UDP socket reaches more on this machine.
pub(crate) fn tapfwd(ctx: &Ctx, m: &mut Measured) -> Outcome {
    let bin = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("tapfwd")))
        .filter(|p| p.exists())
        .ok_or_else(|| {
            Stop::Skipped(
                "skipped: no tapfwd next to this binary (cargo build -p weft-benches)".into(),
            )
        })?;
    let bin = bin.display().to_string();
    let mut tb = Testbed::new("tapfwd")?;
    let sides = [
        (tb.ha.clone(), tb.ca.clone(), HOST_A, HOST_B, 0usize),
        (tb.hb.clone(), tb.cb.clone(), HOST_B, HOST_A, 1usize),
    ];
    let mut pids = Vec::new();
    for (h, c, local, remote, i) in &sides {
        let run = |ns: &Ns, args: &[&str]| ns.run(args).map(drop).map_err(e);
        let (local, remote) = (
            format!("{local}:{FWD_PORT}"),
            format!("{remote}:{FWD_PORT}"),
        );
        let sp = tb
            .net
            .spawn(h, &[&bin, FWD_TAP, &local, &remote])
            .map_err(e)?;
        pids.push(sp.pid);
        if !eventually(Duration::from_secs(5), || {
            h.run(&["ip", "link", "show", FWD_TAP]).is_ok()
        }) {
            return Err(Stop::Failed(format!(
                "tapfwd made no TAP; log:\n{}",
                log_tail(&sp.log, 8)
            )));
        }
        bridged_container(&tb.net, h, c, FWD_IPS[*i])?;
        run(h, &["ip", "link", "set", FWD_TAP, "master", BRIDGE, "up"])?;
    }
    let path = format!(
        "veth -> bridge -> TAP -> tapfwd -> UDP (whole super-frames as one GSO send, UDP_GRO) -> tapfwd -> TAP; MTU {OVERLAY_MTU}; a ceiling, not a product path"
    );
    container_to_container(ctx, &mut tb, FWD_IPS[1], &path, &pids, m)
}
