//! Network policy at scale: 1,000 pods and 500 policies.
//!
//! ```text
//! sudo cargo run -p weft-benches --release --bin policy -- [--pods 1000] [--policies 500] [--local 100] [--seconds 5]
//! ```
//!
//! Reported, all from one run:
//! - compile time of the rule set for this host's pods (`--local` of them, and for all),
//!   the table's size (pod chains, elements, bytes of the `nft -f` batch) and how long
//!   nftables takes to load it;
//! - across a bridge in a namespace of the bench's own, between two pods both isolated
//!   by the policies (so every new connection runs through the vmaps): TCP request/
//!   response on one connection (RR), connect-request-response-close (CRR) and bulk
//!   throughput (one TCP stream), each with the table loaded and without, alternated,
//!   median of 3, printed as the ratio loaded/without.
//!
//! No figure here is a pass/fail test. Namespaces are `TestNet`'s, removed on exit.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::time::{Duration, Instant};
use weft_core::policy::compile::compile;
use weft_core::policy::{
    Cidr, IpBlock, Labels, NamedPort, Operator, Peer, Pod, Policy, PolicyKey, Port, PortMatch,
    Proto, Requirement, Rule, Selector, World,
};
use weft_kernel_dp::testnet::{TestNet, require_root};

const USAGE: &str = "policy [--pods N (default 1000)] [--policies N (default 500)] [--local N (default 100)] [--seconds S (default 5)]";

struct Args {
    pods: usize,
    policies: usize,
    local: usize,
    seconds: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        pods: 1000,
        policies: 500,
        local: 100,
        seconds: 5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let v = it.next().ok_or(format!("{arg} needs a value"))?;
        let n: u64 = v.parse().map_err(|_| format!("bad {arg} {v:?}"))?;
        match arg.as_str() {
            "--pods" => a.pods = n.clamp(4, 20_000) as usize,
            "--policies" => a.policies = n.clamp(1, 10_000) as usize,
            "--local" => a.local = n as usize,
            "--seconds" => a.seconds = n.clamp(1, 60),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    a.local = a.local.clamp(2, a.pods);
    Ok(a)
}

const NAMESPACES: usize = 10;
const APPS: usize = 50;

fn labels(pairs: &[(&str, String)]) -> Labels {
    let mut l = Labels::new();
    for (k, v) in pairs {
        l.insert(k, v).unwrap();
    }
    l
}

fn addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 32, 0, 0)) + 1 + i as u32)
}

/// Pods `i` in namespace `ns{i % 10}`, `app{i % 50}`, a tier; pods 0 and 1 are the two the
/// traffic runs between (`app0` in `ns0`, each selected and allowed by the policies).
fn world(a: &Args) -> World {
    let tiers = ["web", "db", "cache"];
    let pods = (0..a.pods)
        .map(|i| Pod {
            addrs: vec![addr(i)],
            namespace: format!("ns{}", if i < 2 { 0 } else { i % NAMESPACES }),
            labels: labels(&[
                ("app", format!("app{}", if i < 2 { 0 } else { i % APPS })),
                ("tier", tiers[i % 3].to_owned()),
            ]),
            ports: vec![NamedPort {
                name: "http".into(),
                proto: Proto::Tcp,
                port: 5201,
            }],
        })
        .collect();
    let sel = |k: &str, v: String| Selector {
        match_labels: labels(&[(k, v)]),
        match_expressions: Vec::new(),
    };
    let policies = (0..a.policies)
        .map(|j| {
            let app = j % APPS;
            let ns = if app == 0 { 0 } else { j % NAMESPACES };
            let peers = vec![
                Peer::Pods {
                    pods: Some(sel("app", format!("app{}", (j * 7) % APPS))),
                    namespaces: None,
                },
                Peer::Pods {
                    pods: Some(Selector {
                        match_labels: Labels::new(),
                        match_expressions: vec![Requirement {
                            key: "tier".into(),
                            op: Operator::In,
                            values: vec!["db".into(), "web".into()],
                        }],
                    }),
                    namespaces: Some(sel(
                        "kubernetes.io/metadata.name",
                        format!("ns{}", (j + 3) % NAMESPACES),
                    )),
                },
                Peer::Block(IpBlock {
                    cidr: Cidr::new(Ipv4Addr::new(192, 168, (j % 250) as u8, 0), 24).unwrap(),
                    except: vec![
                        Cidr::new(Ipv4Addr::new(192, 168, (j % 250) as u8, 128), 25).unwrap(),
                    ],
                }),
            ];
            let ports = vec![
                Port {
                    proto: Proto::Tcp,
                    port: PortMatch::Named("http".into()),
                },
                Port {
                    proto: Proto::Tcp,
                    port: PortMatch::Range {
                        port: 8000 + (j % 100) as u16,
                        end: 8100 + (j % 100) as u16,
                    },
                },
                Port {
                    proto: Proto::Udp,
                    port: PortMatch::Range { port: 53, end: 53 },
                },
            ];
            Policy {
                key: PolicyKey {
                    namespace: format!("ns{ns}"),
                    name: format!("p{j}"),
                },
                pod_selector: sel("app", format!("app{app}")),
                ingress_isolates: true,
                egress_isolates: j % 5 == 0,
                ingress: vec![Rule { peers, ports }],
                egress: if j % 5 == 0 {
                    vec![Rule {
                        peers: vec![Peer::Pods {
                            pods: None,
                            namespaces: Some(Selector::all()),
                        }],
                        ports: Vec::new(),
                    }]
                } else {
                    Vec::new()
                },
            }
        })
        .collect();
    World {
        policies,
        namespaces: BTreeMap::new(),
        pods,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs as `policy serve PORT` inside the server namespace: RR/CRR echo and a sink.
fn serve(port: u16) -> ! {
    let l = TcpListener::bind(("0.0.0.0", port)).expect("bind");
    for s in l.incoming().flatten() {
        std::thread::spawn(move || {
            let mut s = s;
            let _ = s.set_nodelay(true);
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(1) => {
                        if s.write_all(&buf[..1]).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {} // Bulk: sink.
                }
            }
        });
    }
    std::process::exit(0)
}

/// Runs as `policy client MODE ADDR PORT SECONDS` inside the client namespace; prints
/// one number: transactions per second (rr, crr) or Gbit/s (bulk).
fn client(mode: &str, addr: &str, port: u16, seconds: u64) -> ! {
    let target = (addr, port);
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut n = 0u64;
    let started = Instant::now();
    match mode {
        "rr" => {
            let mut s = TcpStream::connect(target).expect("connect");
            s.set_nodelay(true).unwrap();
            let mut b = [0u8; 1];
            while Instant::now() < end {
                s.write_all(b"x").unwrap();
                s.read_exact(&mut b).unwrap();
                n += 1;
            }
        }
        "crr" => {
            let mut b = [0u8; 1];
            while Instant::now() < end {
                let mut s = TcpStream::connect(target).expect("connect");
                s.set_nodelay(true).unwrap();
                s.write_all(b"x").unwrap();
                s.read_exact(&mut b).unwrap();
                n += 1;
            }
        }
        _ => {
            let mut s = TcpStream::connect(target).expect("connect");
            let buf = vec![7u8; 128 * 1024];
            while Instant::now() < end {
                s.write_all(&buf).unwrap();
                n += buf.len() as u64;
            }
            let secs = started.elapsed().as_secs_f64();
            println!("{}", n as f64 * 8.0 / secs / 1e9);
            std::process::exit(0)
        }
    }
    println!("{}", n as f64 / started.elapsed().as_secs_f64());
    std::process::exit(0)
}

fn nft(ns: &weft_kernel_dp::testnet::Ns, batch: &str) -> Result<Duration, String> {
    let t = Instant::now();
    let mut c = std::process::Command::new("ip")
        .args(["netns", "exec", ns.name(), "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    c.stdin
        .take()
        .unwrap()
        .write_all(batch.as_bytes())
        .map_err(|e| e.to_string())?;
    let o = c.wait_with_output().map_err(|e| e.to_string())?;
    if !o.status.success() {
        return Err(String::from_utf8_lossy(&o.stderr)
            .lines()
            .next()
            .unwrap_or("")
            .to_owned());
    }
    Ok(t.elapsed())
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    match argv.get(1).map(String::as_str) {
        Some("serve") => serve(argv[2].parse().unwrap()),
        Some("client") => client(
            &argv[2],
            &argv[3],
            argv[4].parse().unwrap(),
            argv[5].parse().unwrap(),
        ),
        _ => {}
    }
    let a = weft_benches::args_or_exit(parse_args(), "policy", USAGE);
    let w = world(&a);
    let local: Vec<Ipv4Addr> = (0..a.local).map(addr).collect();
    let mut times = Vec::new();
    let mut rules = None;
    for _ in 0..5 {
        let t = Instant::now();
        let r = compile(&w, &|p: &Pod| p.addrs.iter().any(|x| local.contains(x)));
        times.push(t.elapsed().as_secs_f64() * 1e3);
        rules = Some(r);
    }
    let rules = rules.unwrap();
    let t = Instant::now();
    let all = compile(&w, &|_| true);
    let all_ms = t.elapsed().as_secs_f64() * 1e3;
    let batch = weft::bench::policy_table(&rules);
    let elements: usize = rules
        .chains
        .iter()
        .map(|c| c.any.len() + c.ports.len())
        .sum();
    println!(
        "world: {} pods in {NAMESPACES} namespaces, {} policies; {} pods on this host",
        a.pods, a.policies, a.local
    );
    println!(
        "compile (release): {:.1} ms median for this host's pods, {all_ms:.1} ms for all {} pods ({} pod chains)",
        median(times),
        a.pods,
        all.chains.len()
    );
    println!(
        "table: {} isolated ingress, {} egress, {} pod chains, {elements} elements, {} KiB of nft batch",
        rules.ingress.len(),
        rules.egress.len(),
        rules.chains.len(),
        batch.len() / 1024
    );
    if let Some(why) = require_root() {
        println!("no traffic figures: {why}");
        return;
    }
    let mut net = TestNet::new().expect("test net");
    let br = net.add_ns("br").unwrap();
    let (ca, cb) = (net.add_ns("pa").unwrap(), net.add_ns("pb").unwrap());
    br.run(&["ip", "link", "add", "weft", "type", "bridge"])
        .unwrap();
    br.run(&["ip", "link", "set", "weft", "up"]).unwrap();
    br.run(&["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"])
        .unwrap();
    for (i, c) in [&ca, &cb].into_iter().enumerate() {
        net.veth(&br, &format!("v{i}"), c, "eth0").unwrap();
        br.run(&[
            "ip",
            "link",
            "set",
            &format!("v{i}"),
            "master",
            "weft",
            "up",
        ])
        .unwrap();
        net.addr(c, "eth0", addr(i).into(), 12).unwrap();
    }
    match nft(&br, &batch) {
        Ok(d) => println!("nft load: {:.0} ms", d.as_secs_f64() * 1e3),
        Err(e) => {
            println!("nft refused the table: {e}");
            std::process::exit(1);
        }
    }
    let exe = std::env::current_exe().unwrap().display().to_string();
    net.spawn(&cb, &[&exe, "serve", "5201"]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let secs = a.seconds.to_string();
    let b_ip = addr(1).to_string();
    let run = |mode: &str| -> f64 {
        let out = ca
            .run(&[&exe, "client", mode, &b_ip, "5201", &secs])
            .unwrap_or_default();
        out.trim().parse().unwrap_or(0.0)
    };
    let del = "delete table inet weft-policy\n";
    println!(
        "\n{:<22} {:>14} {:>14} {:>8}",
        "across the bridge", "without table", "with table", "ratio"
    );
    for (mode, unit) in [("rr", "trans/s"), ("crr", "trans/s"), ("bulk", "Gbit/s")] {
        let (mut with, mut without) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            let _ = nft(&br, del);
            without.push(run(mode));
            nft(&br, &batch).unwrap();
            with.push(run(mode));
        }
        let (w, wo) = (median(with), median(without));
        println!(
            "{:<22} {wo:>14.2} {w:>14.2} {:>8.3}",
            format!("{mode} ({unit})"),
            if wo > 0.0 { w / wo } else { 0.0 }
        );
    }
    let counters = br
        .run(&["nft", "list", "table", "inet", "weft-policy"])
        .unwrap_or_default();
    let allowed = counters
        .lines()
        .filter(|l| l.contains("counter packets") && !l.contains("drop"))
        .count();
    println!(
        "\n(the traffic ran through the table: {allowed} counting rules present; pods 0 and 1 are isolated by the policies of app0)"
    );
}
