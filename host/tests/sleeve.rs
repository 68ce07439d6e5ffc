//! End to end through the sleeve datapath: real routers in test-host namespaces, real
//! "containers" (namespaces) attached to them, real packets. Needs root; skips with a
//! printed reason otherwise. Each test builds and tears down its own namespaces.

mod common;

use common::{
    Opts, Router, eventually, ip, link, mac_of, multicast_reaches, test_net,
    two_hosts_with_containers, underlay_hosts, wait_reachable,
};
use std::time::{Duration, Instant};
use weft_kernel_dp::testnet::{Ns, TestNet};

const SETTLE: Duration = Duration::from_secs(20);

/// Host a, host b, their routers and their containers.
type Pair = (Ns, Ns, Router, Router, Ns, Ns);

/// Two hosts on one underlay in a new test network, a container on each, both routers
/// started sleeve only, once a's container reaches b's; `None` where root tests cannot run.
fn sleeve_pair() -> Option<(TestNet, Pair)> {
    let mut net = test_net()?;
    let pair = two_hosts_with_containers(&mut net, &Opts::sleeve(), &Opts::sleeve());
    let (_, _, a, _, ca, _) = &pair;
    assert!(
        ca.ping_until(ip("10.32.2.1"), SETTLE),
        "a's container never reached b's; a:\n{}",
        a.log_text()
    );
    Some((net, pair))
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn two_hosts_containers_ping_and_move_50_mb_intact() {
    // The default backend: io_uring wherever the kernel allows it (this machine does).
    for queues in ["1", "2"] {
        let opts = Opts {
            extra: vec!["--no-fastdp", "--queues", queues],
            ..Opts::sleeve()
        };
        move_50_mb(&opts, "io_uring", |a, b| {
            for r in [a, b] {
                let q = r.datapath()["queues"].as_array().map_or(0, Vec::len);
                assert_eq!(q.to_string(), queues, "{}", r.datapath());
            }
        });
    }
}

/// Every `--cipher`, and the cipher its links use (both ends given the same).
fn ciphers() -> [(&'static str, &'static str); 3] {
    let cpu_aes = std::arch::is_x86_feature_detected!("aes")
        && std::arch::is_x86_feature_detected!("pclmulqdq");
    let auto = if cpu_aes {
        "aes-256-gcm"
    } else {
        "chacha20-poly1305"
    };
    [
        ("auto", auto),
        ("chacha20-poly1305", "chacha20-poly1305"),
        ("aes-256-gcm", "aes-256-gcm"),
    ]
}

/// Router `r`'s established connection seals with `cipher`, in `status connections`
/// both as JSON and as text.
#[track_caller]
fn link_uses(r: &Router, cipher: &str) {
    let conns = r.json(&["status", "connections"]);
    let established: Vec<_> = conns
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["state"] == "established")
        .collect();
    assert!(
        !established.is_empty() && established.iter().all(|c| c["cipher"] == cipher),
        "want {cipher}: {conns}"
    );
    let text = r.weft(&["status", "connections"]).unwrap();
    assert!(text.contains(&format!(" {cipher} ")), "{text}");
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn the_plain_syscall_backend_moves_50_mb_intact_too_encrypted() {
    for queues in ["1", "2"] {
        for (choice, cipher) in ciphers() {
            if choice == "aes-256-gcm" && cipher != "aes-256-gcm" {
                continue; // pinning AES where the CPU lacks it is refused at start
            }
            let opts = Opts {
                password: Some("plain backend secret"),
                env: vec!["WEFT_DATAPATH_BACKEND=plain"],
                extra: vec!["--no-fastdp", "--cipher", choice, "--queues", queues],
                ..Opts::sleeve()
            };
            move_50_mb(&opts, "plain", |a, b| {
                link_uses(a, cipher);
                link_uses(b, cipher);
            });
        }
    }
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn the_io_uring_backend_with_two_queues_moves_50_mb_intact_with_every_cipher() {
    for (choice, cipher) in ciphers() {
        if choice == "aes-256-gcm" && cipher != "aes-256-gcm" {
            continue; // pinning AES where the CPU lacks it is refused at start
        }
        let opts = Opts {
            password: Some("two queues secret"),
            extra: vec!["--no-fastdp", "--cipher", choice, "--queues", "2"],
            ..Opts::sleeve()
        };
        move_50_mb(&opts, "io_uring", |a, b| {
            link_uses(a, cipher);
            link_uses(b, cipher);
            let sa = a.json(&["status"]);
            // Each queue's thread seals what it carries.
            assert_eq!(sa["datapath"]["crypto_threads"], 2, "{sa}");
            let drops = &b.datapath()["drops"];
            assert_eq!(drops["crypto"], 0, "b refused sealed datagrams: {drops}");
        });
    }
}

/// Each queue's counter `key` in `r`'s status, in queue order.
fn per_queue(r: &Router, key: &str) -> Vec<u64> {
    r.datapath()["queues"]
        .as_array()
        .map(|q| q.iter().map(|x| x[key].as_u64().unwrap_or(0)).collect())
        .unwrap_or_default()
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn every_queue_carries_traffic_and_each_flow_arrives_in_order() {
    for (password, env, backend) in [
        (Some("queue secret"), vec![], "io_uring"),
        (None, vec!["WEFT_DATAPATH_BACKEND=plain"], "plain"),
    ] {
        let Some(mut net) = test_net() else {
            return;
        };
        let opts = Opts {
            password,
            env,
            extra: vec!["--no-fastdp", "--queues", "2"],
            ..Opts::sleeve()
        };
        let (_ha, _hb, a, b, ca, cb) = two_hosts_with_containers(&mut net, &opts, &opts);
        assert_eq!(a.datapath()["backend"], backend);
        assert!(
            ca.ping_until(ip("10.32.2.1"), SETTLE),
            "a's container never reached b's; a:\n{}",
            a.log_text()
        );
        let before = (per_queue(&a, "tap_reads"), per_queue(&b, "tap_writes"));
        assert_eq!((before.0.len(), before.1.len()), (2, 2), "{}", a.datapath());
        // FLOWS UDP flows (one source port each) side by side: the TAP spreads them over
        // its queues by flow hash, so with 16 both queues get some (all on one: 1 in 2^15).
        const FLOWS: u32 = 16;
        const PER_FLOW: u32 = 150;
        let recv = std::thread::spawn({
            let cb = cb.clone();
            move || {
                in_netns(&cb, || {
                    let sock = std::net::UdpSocket::bind("10.32.2.1:5301").unwrap();
                    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                    let mut got = Vec::new();
                    let mut buf = vec![0u8; 65_536];
                    while let Ok((n, from)) = sock.recv_from(&mut buf) {
                        got.push((from.port(), buf[..n].to_vec()));
                    }
                    got
                })
            }
        });
        std::thread::sleep(Duration::from_millis(300));
        in_netns(&ca, || {
            let socks: Vec<_> = (0..FLOWS)
                .map(|_| {
                    let s = std::net::UdpSocket::bind("10.32.1.1:0").unwrap();
                    s.connect("10.32.2.1:5301").unwrap();
                    s
                })
                .collect();
            for i in 0..PER_FLOW {
                for s in &socks {
                    let _ = s.send(&datagram(i));
                }
                // Paced (32 datagrams per 2 ms): UDP has no flow control, and on a
                // loaded 2-core machine a burst of 160 overran the receiving socket.
                if i % 2 == 1 {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        });
        let got = recv.join().unwrap();
        let sent = FLOWS * PER_FLOW;
        assert!(
            got.len() as u32 * 10 >= sent * 9,
            "{} of {sent} datagrams arrived",
            got.len()
        );
        // Within each flow, in the order sent and whole.
        let mut last: std::collections::BTreeMap<u16, u32> = Default::default();
        for (port, d) in &got {
            let n = u32::from_be_bytes(d[..4].try_into().unwrap());
            assert_eq!(
                d,
                &datagram(n),
                "datagram {n} of flow {port} changed or cut"
            );
            if let Some(prev) = last.insert(*port, n) {
                assert!(prev < n, "flow {port}: datagram {n} after {prev}");
            }
        }
        assert_eq!(last.len() as u32, FLOWS, "some flow never arrived");
        // Every queue of a read frames of these flows from its TAP queue, and every queue
        // of b wrote some to its own (a's queues send from their own CPUs; b's sockets
        // take datagrams by the CPU that received them).
        let after = (per_queue(&a, "tap_reads"), per_queue(&b, "tap_writes"));
        for q in 0..2 {
            assert!(
                after.0[q] > before.0[q] + 10,
                "a's queue {q} read {} frames: {}",
                after.0[q] - before.0[q],
                a.datapath()
            );
            assert!(
                after.1[q] > before.1[q] + 10,
                "b's queue {q} wrote {} frames: {}",
                after.1[q] - before.1[q],
                b.datapath()
            );
        }
        let text = a.weft(&["status"]).unwrap();
        assert!(text.contains("2 queues"), "{text}");
        let m = common::metrics(&b);
        assert!(
            m.contains("weft_datapath_queue_tap_writes_total{queue=\"1\"}"),
            "{m}"
        );
    }
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn routers_pinned_to_different_ciphers_do_not_connect_and_say_why() {
    if !std::arch::is_x86_feature_detected!("aes") {
        eprintln!(
            "skipped: this CPU has no AES-NI, so a router pinned to aes-256-gcm does not start"
        );
        return;
    }
    let Some(mut net) = test_net() else {
        return;
    };
    let opts = |cipher| Opts {
        password: Some("pinned"),
        extra: vec!["--no-fastdp", "--cipher", cipher],
        ..Opts::sleeve()
    };
    let ([ha, hb], [ip_a, _]) = underlay_hosts(&mut net, ["a", "b"]);
    let a = Router::start(&mut net, &ha, &opts("aes-256-gcm"));
    let mut b_opts = opts("chacha20-poly1305");
    b_opts.peers.push(ip_a.to_string());
    let b = Router::start(&mut net, &hb, &b_opts);
    b.wait_until(SETTLE, "a failed dial that names the cipher", |b| {
        b.json(&["status", "connections"])
            .as_array()
            .unwrap()
            .iter()
            .any(|c| {
                c["state"] == "failed"
                    && c["error"]
                        .as_str()
                        .is_some_and(|e| e.contains("no cipher in common"))
            })
    });
    assert_eq!(b.reachable_peers(), 0);
    assert_eq!(a.reachable_peers(), 0);
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn encrypted_batches_are_shared_with_helper_threads_and_50_mb_arrive_intact() {
    for (choice, cipher) in ciphers() {
        if choice == "aes-256-gcm" && cipher != "aes-256-gcm" {
            continue; // pinning AES where the CPU lacks it is refused at start
        }
        helper_threads_with(choice, cipher);
    }
}

fn helper_threads_with(choice: &str, cipher: &str) {
    let opts = Opts {
        password: Some("helper threads secret"),
        // Helpers share one queue's batches; several queues spread the work without them.
        extra: vec![
            "--no-fastdp",
            "--crypto-threads",
            "3",
            "--cipher",
            choice,
            "--queues",
            "1",
        ],
        ..Opts::sleeve()
    };
    move_50_mb(&opts, "io_uring", |a, b| {
        link_uses(a, cipher);
        link_uses(b, cipher);
        let (sa, sb) = (a.json(&["status"]), b.json(&["status"]));
        assert_eq!(sa["datapath"]["crypto_threads"], 3, "{sa}");
        let helped = |s: &serde_json::Value| s["datapath"]["datagrams_crypted_by_helpers"].as_u64();
        // ~36,000 sealed datagrams went one way and as many were opened: the helpers, woken
        // for every batch, took part even on a busy machine.
        assert!(
            helped(&sa).unwrap() + helped(&sb).unwrap() > 0,
            "helpers never sealed or opened anything:\n{sa}\n{sb}"
        );
        let text = a.weft(&["status"]).unwrap();
        assert!(text.contains("sealing on 3 threads"), "{text}");
        let m = common::metrics(a);
        assert!(m.contains("weft_datapath_crypto_threads 3"), "{m}");
    });
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn udp_datagrams_merged_on_the_way_arrive_whole_and_in_order() {
    let Some((_net, (_ha, _hb, _a, b, ca, cb))) = sleeve_pair() else {
        return;
    };
    let before = (b.counter("frames_to_bridge"), b.counter("tap_writes"));
    // Bursts of datagrams back to back, so that a reads several per batch, sends them as
    // one GSO send, and b merges them into USO super-frames for its TAP, which the kernel
    // cuts back into the same datagrams for the container.
    const BURSTS: u32 = 60;
    const PER_BURST: u32 = 40;
    let recv = std::thread::spawn({
        let cb = cb.clone();
        move || {
            in_netns(&cb, || {
                let sock = std::net::UdpSocket::bind("10.32.2.1:5300").unwrap();
                sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                let mut got = Vec::new();
                let mut buf = vec![0u8; 65_536];
                while let Ok(n) = sock.recv(&mut buf) {
                    got.push(buf[..n].to_vec());
                }
                got
            })
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    in_netns(&ca, || {
        let sock = std::net::UdpSocket::bind("10.32.1.1:0").unwrap();
        sock.connect("10.32.2.1:5300").unwrap();
        for burst in 0..BURSTS {
            for i in 0..PER_BURST {
                let _ = sock.send(&datagram(burst * PER_BURST + i));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let got = recv.join().unwrap();
    // Every datagram that arrived is one that was sent, whole (its length and bytes), and
    // they arrived in the order sent; a lossy moment of a busy machine may drop a few.
    let sent = BURSTS * PER_BURST;
    assert!(
        got.len() as u32 * 10 >= sent * 9,
        "{} of {sent} datagrams arrived",
        got.len()
    );
    let mut last = None;
    for d in &got {
        let n = u32::from_be_bytes(d[..4].try_into().unwrap());
        assert_eq!(d, &datagram(n), "datagram {n} arrived changed or cut");
        assert!(last < Some(n), "datagram {n} after {last:?}");
        last = Some(n);
    }
    // b merged: far fewer TAP writes than frames it delivered (one each without merging;
    // ~12 frames a write here).
    let (frames, writes) = (
        b.counter("frames_to_bridge") - before.0,
        b.counter("tap_writes") - before.1,
    );
    assert!(
        writes * 2 < frames,
        "b wrote {writes} times for {frames} frames: nothing merged"
    );
}

/// Datagram `n` of the UDP test: its number, then bytes derived from it; lengths vary
/// (runs of equal ones, as a burst of one application's datagrams has, and odd ones).
fn datagram(n: u32) -> Vec<u8> {
    let len = match n % 40 {
        39 => 333,
        17 => 1200 - (n as usize % 97),
        _ => 1200,
    };
    let mut d: Vec<u8> = (0..len)
        .map(|i| (i as u32 ^ n.wrapping_mul(2_654_435_761)) as u8)
        .collect();
    d[..4].copy_from_slice(&n.to_be_bytes());
    d
}

/// Runs `f` on a thread that entered `ns`'s network namespace: sockets it opens live there.
fn in_netns<T: Send>(ns: &Ns, f: impl FnOnce() -> T + Send) -> T {
    weft_kernel_dp::run_in_netns(ns.path(), f).unwrap()
}

/// Two hosts with `opts`, a container on each: ping both ways, then 50 MB over TCP
/// checksummed at both ends; router a's datapath must report `backend`. Then `check`
/// looks at routers a and b.
fn move_50_mb(opts: &Opts<'_>, backend: &str, check: impl FnOnce(&Router, &Router)) {
    let Some(mut net) = test_net() else {
        return;
    };
    let (ha, _hb, a, b, ca, cb) = two_hosts_with_containers(&mut net, opts, opts);
    let shown = a.json(&["status"])["datapath"]["backend"].clone();
    assert_eq!(shown, backend, "router a's datapath backend");
    assert!(
        ca.ping_until(ip("10.32.2.1"), SETTLE),
        "container on a cannot reach b; a:\n{}\nb:\n{}",
        a.log_text(),
        b.log_text()
    );
    assert!(cb.ping(ip("10.32.1.1"), 3));
    tcp_arrives_intact(&ha, &ca, &cb, "10.32.2.1", 50_000_000);
    // b put the segments back together: far fewer TAP writes than datagrams received.
    let dp = &b.json(&["status"])["datapath"];
    let (writes, dgrams) = (dp["tap_writes"].as_u64(), dp["datagrams_in"].as_u64());
    assert!(
        writes.zip(dgrams).is_some_and(|(w, d)| w > 0 && w * 4 < d),
        "b: {dp}"
    );
    // A 1500-byte underlay carries full-size frames: no warning.
    let text = a.weft(&["status"]).unwrap();
    assert!(
        text.contains("Sleeve:") && !text.contains("Underlay"),
        "{text}"
    );
    // The datapath carried it and says so.
    let st = a.json(&["status"]);
    assert!(
        st["datapath"]["datagrams_out"].as_u64().unwrap() > 30_000,
        "{st}"
    );
    assert!(eventually(Duration::from_secs(5), || {
        a.json(&["status", "connections"])
            .as_array()
            .unwrap()
            .iter()
            .any(|c| {
                c["mode"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("sleeve") && !m.contains("heartbeat"))
            })
    }));
    check(&a, &b);
}

/// Sends `bytes` random bytes over TCP from container `from` to `to_ip` (container `to`)
/// and checks they arrive unchanged (sha256 at both ends; files named after `host`, whose
/// namespace runs the shell: tests of this process run side by side).
fn tcp_arrives_intact(host: &Ns, from: &Ns, to: &Ns, to_ip: &str, bytes: usize) {
    let src = format!("/tmp/weft-e2e-tcp.{}", host.name());
    host.run(&["sh", "-c", &format!("head -c {bytes} /dev/urandom > {src}")])
        .unwrap();
    let dst = format!("{src}.out");
    let recv = std::thread::spawn({
        let to = to.clone();
        let dst = dst.clone();
        move || {
            to.run(&[
                "sh",
                "-c",
                &format!("timeout 60 socat -u TCP-LISTEN:5001,reuseaddr OPEN:{dst},creat,trunc"),
            ])
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let sent = from.run(&[
        "sh",
        "-c",
        &format!("timeout 60 socat -u OPEN:{src} TCP:{to_ip}:5001,retry=10"),
    ]);
    assert!(sent.is_ok(), "send: {sent:?}");
    recv.join().unwrap().unwrap();
    let sum = |f: &str| {
        host.run(&["sha256sum", f])
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    };
    assert_eq!(sum(&src), sum(&dst), "{bytes} bytes arrived changed");
    let _ = std::fs::remove_file(&src);
    let _ = std::fs::remove_file(&dst);
}

/// Three hosts on the shared underlay of a new test network, all sleeve only: `a`
/// listens, `b` and `c` dial it. Returns the routers once each reaches the other two;
/// `None` where root tests cannot run.
fn star() -> Option<(TestNet, [Router; 3])> {
    let mut net = test_net()?;
    let ([ha, hb, hc], [ip_a, ..]) = underlay_hosts(&mut net, ["a", "b", "c"]);
    let a = Router::start(&mut net, &ha, &Opts::sleeve());
    let b = Router::start(&mut net, &hb, &Opts::sleeve_to(&[ip_a]));
    let c = Router::start(&mut net, &hc, &Opts::sleeve_to(&[ip_a]));
    wait_reachable(&[&a, &b, &c], 2, SETTLE);
    Some((net, [a, b, c]))
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn line_a_b_c_ends_talk_through_b_which_relays() {
    let Some(mut net) = test_net() else {
        return;
    };
    let ha = net.add_host("a").unwrap();
    let hb = net.add_host("b").unwrap();
    let hc = net.add_host("c").unwrap();
    // Two separate underlay links; b does not forward IP (ip_forward=0 in every host).
    link(&net, &ha, &hb, "198.18.1.1", "198.18.1.2", "eth0", "eab");
    link(&net, &hb, &hc, "198.18.2.2", "198.18.2.3", "ebc", "eth0");
    assert!(
        !ha.ping(ip("198.18.2.3"), 1),
        "a reaches c on the underlay: the test is broken"
    );
    let b = Router::start(&mut net, &hb, &Opts::sleeve());
    let a = Router::start(&mut net, &ha, &Opts::sleeve_to(&["198.18.1.2"]));
    let c = Router::start(&mut net, &hc, &Opts::sleeve_to(&["198.18.2.2"]));
    let (name_b, name_c) = (b.name(), c.name());
    a.wait_until(SETTLE, "a routes to c via b", |a| {
        a.next_hop_to(&name_c).as_deref() == Some(name_b.as_str())
    });
    let (ca, cc) = (net.add_ns("ca").unwrap(), net.add_ns("cc").unwrap());
    a.attach(&ca, "10.32.1.1/12");
    c.attach(&cc, "10.32.3.1/12");
    assert!(
        ca.ping_until(ip("10.32.3.1"), SETTLE),
        "a's container cannot reach c's; a:\n{}\nb:\n{}\nc:\n{}",
        a.log_text(),
        b.log_text(),
        c.log_text()
    );
    assert!(cc.ping(ip("10.32.1.1"), 3));
    // Full-size frames too (1376-byte overlay MTU: 1348 bytes of ICMP payload).
    let big = ca.exec(&[
        "ping",
        "-n",
        "-q",
        "-c",
        "3",
        "-i",
        "0.2",
        "-W",
        "2",
        "-M",
        "do",
        "-s",
        "1348",
        "10.32.3.1",
    ]);
    assert!(big.as_ref().is_ok_and(|o| o.status.success()), "{big:?}");
    // b carried them: its sleeve relayed frames it was neither origin nor destination of.
    let relayed = b.counter("frames_relayed");
    assert!(relayed >= 6, "b relayed {relayed} frames: {}", b.datapath());
    // TCP through the relay: segments cut from super-frames keep their partial checksums
    // across b (relayed as they came) and are finished by c's kernel, data intact.
    tcp_arrives_intact(&ha, &ca, &cc, "10.32.3.1", 5_000_000);
    // (Counters are published on the datapath's next tick.)
    assert!(
        eventually(Duration::from_secs(5), || b.counter("frames_relayed")
            > relayed + 3000),
        "{}",
        b.datapath()
    );
    // And a and c have no direct connection (there is no path for one).
    assert!(
        a.connections_to(&name_c)
            .iter()
            .all(|c| c["state"] != "established")
    );
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn tcp_crosses_an_underlay_with_a_small_mtu_cut_to_fit_not_fragmented() {
    let Some(mut net) = test_net() else {
        return;
    };
    let ha = net.add_host("a").unwrap();
    let hb = net.add_host("b").unwrap();
    // 1400-byte underlay (a tunnel, a cloud VPC): full overlay frames (1376 bytes) do not
    // fit a datagram to the peer.
    link(&net, &ha, &hb, "198.18.1.1", "198.18.1.2", "eth0", "eth0");
    for h in [&ha, &hb] {
        h.run(&["ip", "link", "set", "eth0", "mtu", "1400"])
            .unwrap();
    }
    let b = Router::start(&mut net, &hb, &Opts::sleeve());
    let a = Router::start(&mut net, &ha, &Opts::sleeve_to(&["198.18.1.2"]));
    let (ca, cb) = (net.add_ns("ca").unwrap(), net.add_ns("cb").unwrap());
    a.attach(&ca, "10.32.1.1/12");
    b.attach(&cb, "10.32.2.1/12");
    assert!(
        ca.ping_until(ip("10.32.2.1"), SETTLE),
        "a's container cannot reach b's; a:\n{}\nb:\n{}",
        a.log_text(),
        b.log_text()
    );
    let path = &a.json(&["status"])["datapath"]["paths"][0];
    assert_eq!(path["link_mtu_bytes"], 1400, "{path}");
    // And status says so, with the overlay MTU that would fit: 1400 - 28 (IP, UDP)
    // - 51 (Ethernet, sleeve header, routing prefix, length).
    let text = a.weft(&["status"]).unwrap();
    assert!(
        text.contains("Underlay: too small") && text.contains("--mtu 1321 or less"),
        "{text}"
    );
    tcp_arrives_intact(&ha, &ca, &cb, "10.32.2.1", 5_000_000);
    // The segments were cut to fit: no IP fragments on the underlay, no GSO send refused.
    let frags = ha
        .run(&[
            "sh",
            "-c",
            "nstat -asz IpFragCreates | awk '/IpFragCreates/ {print $2}'",
        ])
        .unwrap();
    let dp = &a.json(&["status"])["datapath"];
    assert!(dp["datagrams_out"].as_u64().unwrap() > 3_000, "{dp}");
    assert!(
        frags.trim().parse::<u64>().unwrap() < 100,
        "a fragmented {frags} packets; {dp}"
    );
    assert_eq!(dp["gso_sends_cut"], 0, "{dp}");
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn broadcast_and_multicast_reach_containers_on_every_other_host() {
    let Some((mut net, [a, b, c])) = star() else {
        return;
    };
    let cs: Vec<Ns> = ["ca", "cb", "cc"]
        .iter()
        .map(|n| net.add_ns(n).unwrap())
        .collect();
    a.attach(&cs[0], "10.32.1.1/12");
    b.attach(&cs[1], "10.32.2.1/12");
    c.attach(&cs[2], "10.32.3.1/12");
    for c in &cs {
        c.set_sysctl("net/ipv4/icmp_echo_ignore_broadcasts", "0")
            .unwrap();
        c.run(&["ip", "route", "add", "224.0.0.0/4", "dev", "ethwe"])
            .unwrap();
    }
    // Before the broadcast: the overlay works at all (and every bridge port is up).
    for to in ["10.32.2.1", "10.32.3.1"] {
        assert!(cs[0].ping_until(ip(to), SETTLE), "ca cannot reach {to}");
    }
    // Broadcast: one echo request to 10.47.255.255, answered from both other hosts.
    let out = cs[0]
        .exec(&["ping", "-n", "-b", "-w", "3", "-i", "0.5", "10.47.255.255"])
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for from in ["10.32.2.1", "10.32.3.1"] {
        assert!(
            text.contains(&format!("from {from}:")),
            "no broadcast reply from {from}:\n{text}"
        );
    }
    // Multicast: a UDP datagram to a group the containers on b and c joined.
    let got = multicast_reaches(
        &mut net,
        &cs[0],
        "10.32.1.1",
        &[(&cs[1], "10.32.2.1"), (&cs[2], "10.32.3.1")],
    );
    assert!(
        got.is_ok(),
        "multicast did not reach both groups' members: {got:?}"
    );
    // The sleeve on a flooded them (broadcast and multicast go down a's tree).
    assert!(a.counter("frames_from_bridge") > 0);
    assert!(b.counter("frames_to_bridge") > 0 && c.counter("frames_to_bridge") > 0);
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn restarted_router_keeps_its_containers_and_traffic_resumes() {
    let Some((mut net, (ha, _hb, a, b, ca, cb))) = sleeve_pair() else {
        return;
    };
    assert!(cb.ping_until(ip("10.32.1.1"), SETTLE));
    let name = a.name();
    let iface = |c: &Ns| {
        (
            mac_of(c, "ethwe"),
            c.run(&["cat", "/sys/class/net/ethwe/ifindex"]).unwrap(),
            c.run(&["ip", "-o", "-4", "addr", "show", "ethwe"]).unwrap(),
        )
    };
    let before = iface(&ca);
    assert!(before.2.contains("10.32.1.1/12"), "{before:?}");
    // kill -9: nothing is cleaned up by the router itself.
    assert!(net.kill(a.pid));
    assert!(!a.alive());
    assert_eq!(
        iface(&ca),
        before,
        "the container's interface changed while a was down"
    );
    let a2 = Router::restart(&mut net, &ha, &Opts::sleeve());
    assert_eq!(a2.name(), name, "the peer name is kept in the state dir");
    let ps = a2.json(&["ps"]);
    assert_eq!(ps.as_array().map(Vec::len), Some(1), "{ps}");
    assert_eq!(ps[0]["addresses"][0], "10.32.1.1/12", "{ps}");
    assert_eq!(ps[0]["mac"].as_str(), Some(before.0.as_str()), "{ps}");
    assert!(
        cb.ping_until(ip("10.32.1.1"), Duration::from_secs(30)),
        "traffic did not resume after the restart; a:\n{}\nb:\n{}",
        a2.log_text(),
        b.log_text()
    );
    assert!(ca.ping(ip("10.32.2.1"), 3));
    assert_eq!(
        iface(&ca),
        before,
        "the restart recreated the container's interface"
    );
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn an_address_moved_to_another_host_is_reached_there() {
    let Some((mut net, [a, b, c])) = star() else {
        return;
    };
    let (ca, cc) = (net.add_ns("ca").unwrap(), net.add_ns("cc").unwrap());
    let moved = net.add_ns("cm").unwrap();
    a.attach(&ca, "10.32.1.1/12");
    c.attach(&cc, "10.32.3.1/12");
    assert!(cc.ping_until(ip("10.32.1.1"), SETTLE));
    let old_mac = mac_of(&ca, "ethwe");
    // The address leaves a's container and comes up in a container on b.
    a.detach(&ca, "10.32.1.1/12");
    assert!(
        !cc.ping(ip("10.32.1.1"), 1),
        "the address is still answered on a"
    );
    b.attach(&moved, "10.32.1.1/12");
    let new_mac = mac_of(&moved, "ethwe");
    assert_ne!(old_mac, new_mac);
    // The pinging container still maps the address to the old MAC; weft sets its ARP
    // timers so it re-resolves in seconds (the kernel's defaults take 23-53 s).
    let t = Instant::now();
    assert!(
        cc.ping_until(ip("10.32.1.1"), Duration::from_secs(20)),
        "the moved address is not reached on b; neigh: {:?}",
        cc.run(&["ip", "neigh"])
    );
    eprintln!("moved address reached after {:?}", t.elapsed());
    let neigh = cc.run(&["ip", "neigh", "show", "10.32.1.1"]).unwrap();
    assert!(neigh.contains(&new_mac), "{neigh} (new MAC {new_mac})");
    assert!(moved.ping(ip("10.32.3.1"), 3));
    // Now the MAC itself moves (a container restored elsewhere with its interface's
    // address): back to a, same IP, same MAC. c's ARP entry stays right; only the
    // sleeves' MAC tables, which place that MAC behind b, must learn it behind a.
    b.detach(&moved, "");
    let back = net.add_ns("cback").unwrap();
    a.attach(&back, "10.32.1.1/12");
    for args in [
        &["ip", "link", "set", "ethwe", "down"][..],
        &["ip", "link", "set", "ethwe", "address", &new_mac],
        &["ip", "link", "set", "ethwe", "up"],
    ] {
        back.run(args).unwrap();
    }
    assert!(
        back.ping_until(ip("10.32.3.1"), SETTLE),
        "the MAC that moved from b to a is not reached there"
    );
    assert!(cc.ping(ip("10.32.1.1"), 3));
    let neigh = cc.run(&["ip", "neigh", "show", "10.32.1.1"]).unwrap();
    assert!(neigh.contains(&new_mac), "{neigh}");
}

/// How long a router's containers are cut off by its SIGKILL and immediate restart,
/// against how long the restart itself takes (kill to the new router answering): traffic
/// between its container and a remote one must be back within the restart time and a
/// little more (the reconnect), not after a peer's re-dial backoff. Both the router that
/// was dialled and the one that dialled, sleeve and fast datapath.
#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn a_killed_and_restarted_router_cuts_traffic_off_no_longer_than_its_restart() {
    for opts in [Opts::sleeve(), Opts::default()] {
        let Some(mut net) = test_net() else {
            return;
        };
        let (ha, hb, a, b, ca, cb) = two_hosts_with_containers(&mut net, &opts, &opts);
        let ip_a = ha.run(&["ip", "-o", "-4", "addr", "show", "eth0"]).unwrap();
        let ip_a = ip_a
            .split_whitespace()
            .nth(3)
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_owned();
        let b_opts = Opts {
            peers: vec![ip_a],
            ..opts.clone()
        };
        let mut routers = [(ha, a, opts.clone(), cb), (hb, b, b_opts, ca)];
        let mut worst = (Duration::ZERO, Duration::ZERO, String::new());
        for round in 0..4 {
            let (h, r, o, remote) = &mut routers[round % 2];
            let to = if round % 2 == 0 {
                "10.32.1.1"
            } else {
                "10.32.2.1"
            };
            assert!(
                remote.ping_until(ip(to), SETTLE),
                "round {round}: no traffic before"
            );
            let t0 = Instant::now();
            assert!(net.kill(r.pid));
            let r2 = Router::restart(&mut net, h, o);
            let restart = t0.elapsed();
            let back = remote.ping_until(ip(to), Duration::from_secs(40));
            let outage = t0.elapsed();
            assert!(
                back,
                "round {round}: traffic never came back; log:\n{}",
                r2.log_text()
            );
            let what = format!("{:?} round {round}", o.extra);
            println!("{what}: restart {restart:?}, outage {outage:?}");
            if outage.saturating_sub(restart) > worst.1.saturating_sub(worst.0) {
                worst = (restart, outage, what);
            }
            std::mem::forget(std::mem::replace(r, r2));
        }
        let (restart, outage, what) = worst;
        // The reconnect after the restart: a dial (the first re-dial waits about a
        // second), a handshake, a heartbeat round; generous for a loaded machine, and far
        // below a backoff of many seconds.
        let slack = Duration::from_secs(5);
        assert!(
            outage <= restart + slack,
            "{what}: the outage {outage:?} is longer than the restart {restart:?} + {slack:?}; logs:\n{}\n{}",
            routers[0].1.log_text(),
            routers[1].1.log_text()
        );
    }
}
