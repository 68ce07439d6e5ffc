//! weftDNS end to end: real routers in test-host namespaces, "containers" (namespaces)
//! attached by name, queries sent from inside the containers to their router's DNS server
//! (on the host's exposed address), a dnsmasq in a test namespace as the only upstream.
//! Needs root; skips with a printed reason otherwise. No query leaves the namespaces the
//! tests made.

mod common;

use common::{Opts, Router, eventually, test_net, underlay_hosts};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;
use weft_kernel_dp::run_in_netns;
use weft_kernel_dp::testnet::Ns;

const SETTLE: Duration = Duration::from_secs(20);

/// Sends one query from inside `ns` to `server`:53 over UDP; the parsed answer, if any
/// came within 1 s (3 tries).
fn query(ns: &Ns, server: &str, name: &str, ty: RecordType) -> Option<Message> {
    let sock = run_in_netns(ns.path(), || UdpSocket::bind("0.0.0.0:0"))
        .ok()?
        .ok()?;
    sock.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    let to: SocketAddr = format!("{server}:53").parse().ok()?;
    let mut m = Message::new(rand_id(), MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).ok()?, ty));
    let bytes = m.to_vec().ok()?;
    let mut buf = [0u8; 4096];
    for _ in 0..3 {
        sock.send_to(&bytes, to).ok()?;
        if let Ok(n) = sock.recv(&mut buf) {
            let r = Message::from_vec(&buf[..n]).ok()?;
            if r.metadata.id == m.metadata.id {
                return Some(r);
            }
        }
    }
    None
}

fn rand_id() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0x4000);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A addresses of `name` as answered (in answer order).
fn a_records(ns: &Ns, server: &str, name: &str) -> Option<Vec<Ipv4Addr>> {
    let r = query(ns, server, name, RecordType::A)?;
    Some(
        r.answers
            .iter()
            .filter_map(|rec| match &rec.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect(),
    )
}

fn set(v: &[Ipv4Addr]) -> BTreeSet<Ipv4Addr> {
    v.iter().copied().collect()
}

fn ips(v: &[&str]) -> BTreeSet<Ipv4Addr> {
    v.iter().map(|s| s.parse().unwrap()).collect()
}

/// Whether `ns`, asking `server`, gets exactly `want` as the A records of
/// `web.weave.local.` within `limit`.
fn answers_become(ns: &Ns, server: &str, want: &[&str], limit: Duration) -> bool {
    eventually(limit, || {
        a_records(ns, server, "web.weave.local.").is_some_and(|v| set(&v) == ips(want))
    })
}

fn attach_named(r: &Router, c: &Ns, cidr: &str, name: &str) {
    let p = c.path().display().to_string();
    let out = r.weft(&["attach", cidr, "--netns", &p, "--name", name]);
    assert!(out.is_ok(), "attach {cidr} --name {name}: {out:?}");
}

/// Removes the `/etc/netns/<ns>` directories `attach --dns` may leave, even on failure.
struct EtcNetnsGuard(Vec<String>);

impl Drop for EtcNetnsGuard {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = std::fs::remove_dir_all(format!("/etc/netns/{n}"));
        }
    }
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn three_hosts_one_name_balanced_detach_hot_swap_and_dead_router() {
    let Some(mut net) = test_net() else {
        return;
    };
    let (hosts, [ip_a, ..]) = underlay_hosts(&mut net, ["a", "b", "c"]);
    // No upstream is ever reached in this test: point it at a namespace-local blackhole.
    let opts = |peers: Vec<String>| Opts {
        peers,
        extra: vec!["--no-fastdp", "--dns-upstream", "127.0.0.1:1"],
        ..Opts::default()
    };
    let a = Router::start(&mut net, &hosts[0], &opts(vec![]));
    let b = Router::start(&mut net, &hosts[1], &opts(vec![ip_a.to_string()]));
    let c = Router::start(&mut net, &hosts[2], &opts(vec![ip_a.to_string()]));
    let routers = [&a, &b, &c];
    let servers = ["10.32.0.101", "10.32.0.102", "10.32.0.103"];
    for (r, s) in routers.iter().zip(servers) {
        r.weft(&["expose", &format!("{s}/12")]).unwrap();
        r.wait_until(SETTLE, "all peers reachable", |r| {
            r.json(&["status"])["reachable_peers"].as_u64() >= Some(2)
        });
    }
    let cs: Vec<Ns> = ["ca", "cb", "cc"]
        .iter()
        .map(|n| net.add_ns(n).unwrap())
        .collect();
    let addrs = ["10.32.1.1", "10.32.1.2", "10.32.1.3"];
    for i in 0..3 {
        attach_named(routers[i], &cs[i], &format!("{}/12", addrs[i]), "web");
    }
    // Any container, asking its own router, gets all three.
    for i in 0..3 {
        assert!(
            answers_become(&cs[i], servers[i], &addrs, SETTLE),
            "container {i} never saw all three; got {:?}; status dns:\n{}",
            a_records(&cs[i], servers[i], "web.weave.local."),
            routers[i].json(&["status", "dns"])
        );
    }
    // What a's container hears for the name, and whether that becomes `want` in time.
    let a_heard = || a_records(&cs[0], servers[0], "web.weave.local.");
    let a_hears = |want: &[&str], limit| answers_become(&cs[0], servers[0], want, limit);
    // In varying order over repeated queries, with TTL 1 s, authoritative.
    let mut orders = BTreeSet::new();
    for _ in 0..20 {
        let r = query(&cs[0], servers[0], "WEB.weave.local.", RecordType::A).unwrap();
        assert!(r.metadata.authoritative);
        assert!(r.answers.iter().all(|a| a.ttl == 1), "{r:?}");
        orders.insert(format!("{:?}", a_heard()));
    }
    assert!(orders.len() > 1, "always the same order: {orders:?}");
    // A name that does not exist: NXDOMAIN; PTR of a container: its name.
    let r = query(&cs[0], servers[0], "nope.weave.local.", RecordType::A).unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    let r = query(
        &cs[0],
        servers[0],
        "2.1.32.10.in-addr.arpa.",
        RecordType::PTR,
    )
    .unwrap();
    assert_eq!(
        r.answers.first().map(|a| a.data.to_string()),
        Some("web.weave.local.".to_owned()),
        "{r:?}"
    );
    // Detach b's container: gone from a's answers at once.
    let p = cs[1].path().display().to_string();
    b.weft(&["detach", "--netns", &p]).unwrap();
    assert!(
        a_hears(&[addrs[0], addrs[2]], Duration::from_secs(2)),
        "detached container still answered: {:?}",
        a_heard()
    );
    // Hot swap: a new container under the same name on b is answered at once.
    let cd = net.add_ns("cd").unwrap();
    attach_named(&b, &cd, "10.32.1.4/12", "web");
    assert!(
        a_hears(&[addrs[0], addrs[2], "10.32.1.4"], Duration::from_secs(2)),
        "replacement not answered at once: {:?}",
        a_heard()
    );
    // kill -9 c's router: its container disappears from the others' answers within 60 s.
    assert!(net.kill(c.pid));
    assert!(
        a_hears(&[addrs[0], "10.32.1.4"], Duration::from_secs(60)),
        "dead router's record still answered: {:?}; status dns:\n{}",
        a_heard(),
        a.json(&["status", "dns"])
    );
    // Restart c's router on the same state dir: it registers its container's name again.
    let c = Router::restart(&mut net, &hosts[2], &opts(vec![ip_a.to_string()]));
    assert!(
        a_hears(&[addrs[0], addrs[2], "10.32.1.4"], Duration::from_secs(30)),
        "restarted router's container not answered again: {:?}; c:\n{}",
        a_heard(),
        c.log_text()
    );
    let st = a.json(&["status", "dns"]);
    assert_eq!(st["domain"], "weave.local.");
    assert!(st["answered"].as_u64() > Some(20), "{st}");
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn upstream_forwarding_resolv_conf_cli_tcp_and_garbage() {
    let Some(mut net) = test_net() else {
        return;
    };
    let host = net.add_host("a").unwrap();
    let up = net.add_ns("up").unwrap();
    net.underlay_attach(&host).unwrap();
    let up_ip = net.underlay_attach(&up).unwrap();
    let up_s = up_ip.to_string();
    let dnsmasq = net
        .spawn(
            &up,
            &[
                "dnsmasq",
                "--no-daemon",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--listen-address",
                &up_s,
                "--address=/example.test/192.0.2.77",
                "--user=root",
                "--pid-file",
            ],
        )
        .unwrap();
    let upstream = format!("{up_s}:53");
    let r = Router::start(
        &mut net,
        &host,
        &Opts {
            extra: vec!["--no-fastdp", "--dns-upstream", &upstream],
            ..Opts::default()
        },
    );
    r.weft(&["expose", "10.32.0.101/12", "-h", "gw.weave.local"])
        .unwrap();
    let c = net.add_ns("c").unwrap();
    let _guard = EtcNetnsGuard(vec![c.name().to_owned()]);
    let p = c.path().display().to_string();
    r.weft(&[
        "attach",
        "10.32.1.1/12",
        "--netns",
        &p,
        "--name",
        "x",
        "--dns",
    ])
    .unwrap();
    // Outside the domain: answered by dnsmasq through weftDNS.
    assert!(
        eventually(SETTLE, || a_records(&c, "10.32.0.101", "www.example.test.")
            == Some(vec!["192.0.2.77".parse().unwrap()])),
        "upstream answer missing: {:?}; dnsmasq log: {}; router log:\n{}",
        query(&c, "10.32.0.101", "www.example.test.", RecordType::A),
        std::fs::read_to_string(&dnsmasq.log).unwrap_or_default(),
        r.log_text()
    );
    // `attach --dns` pointed the container's resolver at weftDNS: plain libc lookups work.
    let out = c.run(&["getent", "hosts", "x"]).unwrap_or_default();
    assert!(out.contains("10.32.1.1"), "getent hosts x: {out:?}");
    let out = c
        .run(&["getent", "hosts", "gw.weave.local"])
        .unwrap_or_default();
    assert!(out.contains("10.32.0.101"), "expose -h: {out:?}");
    // CLI naming.
    r.weft(&["dns-add", "10.32.9.9", "10.32.9.8", "manual"])
        .unwrap();
    let out = r.weft(&["dns-lookup", "manual"]).unwrap();
    assert_eq!(out.lines().collect::<Vec<_>>(), ["10.32.9.8", "10.32.9.9"]);
    assert_eq!(
        a_records(&c, "10.32.0.101", "manual.weave.local.").map(|v| set(&v)),
        Some(ips(&["10.32.9.8", "10.32.9.9"]))
    );
    r.weft(&["dns-remove", "10.32.9.9", "manual"]).unwrap();
    assert_eq!(
        a_records(&c, "10.32.0.101", "manual.weave.local."),
        Some(vec!["10.32.9.8".parse().unwrap()])
    );
    assert!(r.weft(&["dns-lookup", "nobody"]).is_err());
    let args = r.weft(&["dns-args"]).unwrap();
    assert_eq!(args.trim(), "--dns=10.32.0.101 --dns-search=weave.local.");
    // TCP.
    let mut s = run_in_netns(c.path(), || TcpStream::connect("10.32.0.101:53"))
        .unwrap()
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut m = Message::new(7, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(
        Name::from_ascii("x.weave.local.").unwrap(),
        RecordType::A,
    ));
    let q = m.to_vec().unwrap();
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    s.write_all(&framed).unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut body).unwrap();
    let reply = Message::from_vec(&body).unwrap();
    assert_eq!(reply.answers.len(), 1, "{reply:?}");
    // Garbage to port 53: no crash, FORMERR for a broken body, still answering after.
    let g = run_in_netns(c.path(), || UdpSocket::bind("0.0.0.0:0"))
        .unwrap()
        .unwrap();
    g.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for i in 0..500usize {
        let mut b = vec![0u8; i % 700];
        for x in &mut b {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *x = seed as u8;
        }
        if b.len() > 2 {
            b[2] &= 0x7f; // Mostly "queries", so that they are parsed.
        }
        let _ = g.send_to(&b, "10.32.0.101:53");
    }
    let mut broken = q.clone();
    broken.truncate(q.len() - 3);
    // Drain what the garbage provoked, then ask with a broken body.
    let mut buf = [0u8; 4096];
    while g.recv(&mut buf).is_ok() {}
    g.send_to(&broken, "10.32.0.101:53").unwrap();
    let n = g.recv(&mut buf).expect("an answer to a broken query");
    let formerr = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(formerr.metadata.response_code, ResponseCode::FormErr);
    assert!(r.alive(), "router died on garbage; log:\n{}", r.log_text());
    assert_eq!(
        a_records(&c, "10.32.0.101", "x.weave.local."),
        Some(vec!["10.32.1.1".parse().unwrap()])
    );
    assert!(r.json(&["status", "dns"])["malformed"].as_u64() >= Some(1));
    // Detach removes the name and the resolv.conf weft wrote.
    r.weft(&["detach", "--netns", &p]).unwrap();
    let r2 = query(&c, "10.32.0.101", "x.weave.local.", RecordType::A);
    // The container's interface is gone with the detach: no answer at all is right too.
    assert!(r2.is_none_or(|m| m.metadata.response_code == ResponseCode::NXDomain));
    assert!(r.weft(&["dns-lookup", "x"]).is_err());
    assert!(!std::path::Path::new(&format!("/etc/netns/{}/resolv.conf", c.name())).exists());
}
