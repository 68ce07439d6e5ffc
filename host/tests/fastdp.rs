//! End to end through the kernel fast datapath (VXLAN): real routers in test-host
//! namespaces, containers attached, real packets. Needs root; skips with a printed reason
//! otherwise. Each test builds and tears down its own namespaces.

mod common;

use common::{
    Opts, Router, eventually, ip, ipv4_of, mac_of, metrics, test_net, two_hosts_with_containers,
    underlay_hosts,
};
use serde_json::Value;
use std::net::Ipv4Addr;
use std::time::Duration;
use weft_kernel_dp::testnet::{Ns, TestNet};

const SETTLE: Duration = Duration::from_secs(20);

fn modes(r: &Router) -> Vec<String> {
    r.try_json(&["status", "connections"])
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter(|c| c["state"] == "established")
        .filter_map(|c| c["mode"].as_str().map(str::to_owned))
        .collect()
}

fn all_fast(r: &Router, n: usize) -> bool {
    let m = modes(r);
    m.len() == n && m.iter().all(|x| x == "fastdp")
}

fn datapath(r: &Router) -> Value {
    r.json(&["status"])["datapath"].clone()
}

/// Host a, host b, their routers and their containers.
type Pair = (Ns, Ns, Router, Router, Ns, Ns);

/// Two hosts on one underlay in a new test network, a container on each, both routers
/// started and on the fast path; `None` where root tests cannot run.
fn fast_pair() -> Option<(TestNet, Pair)> {
    let mut net = test_net()?;
    let p = two_hosts_with_containers(&mut net, &Opts::default(), &Opts::default());
    let (a, b) = (&p.2, &p.3);
    assert!(
        eventually(SETTLE, || all_fast(a, 1) && all_fast(b, 1)),
        "never fast: modes a={:?} b={:?}\n{}",
        modes(a),
        modes(b),
        a.log_text()
    );
    Some((net, p))
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn fast_path_carries_traffic_without_userspace() {
    let Some((_net, (ha, hb, a, b, ca, cb))) = fast_pair() else {
        return;
    };
    assert!(
        ca.ping_until(ip("10.32.2.1"), SETTLE),
        "no ping over the fast path"
    );
    let m = metrics(&a);
    assert!(
        m.contains("weft_connections_by_mode{mode=\"fastdp\"} 1"),
        "{m}"
    );
    assert!(
        ha.run(&["ip", "-d", "link", "show", "weft-vxlan"])
            .unwrap()
            .contains("dstport 6784")
    );
    // b's container MAC, announced in b's heartbeats, has its own FDB entry on a's VXLAN
    // device pointing at b (not only the flood entry).
    let mac = mac_of(&cb, "ethwe");
    let b_ip = ipv4_of(&hb, "eth0");
    assert!(
        eventually(Duration::from_secs(10), || {
            ha.run(&["bridge", "fdb", "show", "dev", "weft-vxlan"])
                .unwrap()
                .lines()
                .any(|l| l.starts_with(&mac) && l.contains(&format!("dst {b_ip}")))
        }),
        "no FDB entry {mac} -> {b_ip}:\n{}",
        ha.run(&["bridge", "fdb", "show", "dev", "weft-vxlan"])
            .unwrap()
    );
    // A 5 s iperf3 between the containers: the routers' datapath counters and CPU must
    // show they carried none of it.
    let before = (
        datapath(&a),
        datapath(&b),
        cpu_ticks(a.pid),
        cpu_ticks(b.pid),
    );
    let server = cb
        .exec(&["iperf3", "-s", "-D", "-1", "-p", "5201"])
        .expect("iperf3 installed (apt-get install iperf3)");
    assert!(server.status.success(), "iperf3 server: {server:?}");
    std::thread::sleep(Duration::from_millis(300));
    let out = ca
        .run(&["iperf3", "-c", "10.32.2.1", "-p", "5201", "-t", "5", "-J"])
        .unwrap();
    let report: Value = serde_json::from_str(&out).unwrap();
    let bytes = report["end"]["sum_received"]["bytes"].as_u64().unwrap();
    assert!(bytes > 50_000_000, "iperf3 moved only {bytes} bytes");
    let after = (
        datapath(&a),
        datapath(&b),
        cpu_ticks(a.pid),
        cpu_ticks(b.pid),
    );
    for (x, y) in [(&before.0, &after.0), (&before.1, &after.1)] {
        for k in ["frames_from_bridge", "frames_to_bridge"] {
            let moved = y[k].as_u64().unwrap() - x[k].as_u64().unwrap();
            // Thousands of frames crossed; the sleeve may see a stray ARP or two.
            assert!(
                moved < 20,
                "the sleeve carried {moved} frames ({k}) of {bytes} bytes: {y}"
            );
        }
    }
    // Both daemons together: well under half a second of CPU in those 5 s (clock ticks
    // are 10 ms); a userspace datapath moving this much would use seconds.
    let ticks = (after.2 - before.2) + (after.3 - before.3);
    assert!(
        ticks < 50,
        "routers used {ticks} CPU ticks during the transfer"
    );
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn blocked_fast_path_falls_back_to_sleeve_and_returns() {
    let Some((_net, (_ha, hb, a, b, ca, _cb))) = fast_pair() else {
        return;
    };
    // Drop VXLAN (UDP 6784) leaving b.
    hb.run(&["nft", "add table inet wtest"]).unwrap();
    hb.run(&[
        "nft",
        "add chain inet wtest out { type filter hook output priority 0 ; }",
    ])
    .unwrap();
    hb.run(&["nft", "add rule inet wtest out udp dport 6784 drop"])
        .unwrap();
    let sleeve = |r: &Router| {
        let m = modes(r);
        m.len() == 1 && m[0].starts_with("sleeve")
    };
    assert!(
        eventually(Duration::from_secs(30), || sleeve(&a) && sleeve(&b)),
        "no fallback: a={:?} b={:?}",
        modes(&a),
        modes(&b)
    );
    assert!(
        ca.ping_until(ip("10.32.2.1"), Duration::from_secs(10)),
        "no traffic on the sleeve"
    );
    hb.run(&["nft", "delete table inet wtest"]).unwrap();
    assert!(
        eventually(Duration::from_secs(30), || all_fast(&a, 1)
            && all_fast(&b, 1)),
        "not back: a={:?} b={:?}",
        modes(&a),
        modes(&b)
    );
    assert!(ca.ping_until(ip("10.32.2.1"), Duration::from_secs(10)));
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn mixed_mesh_with_a_no_fastdp_router_reaches_everyone_and_broadcasts_work() {
    let Some(mut net) = test_net() else {
        return;
    };
    let (hosts, ips) = underlay_hosts(&mut net, ["a", "b", "c"]);
    let ips = ips.map(|ip| ip.to_string());
    let cs: Vec<Ns> = ["ca", "cb", "cc"]
        .iter()
        .map(|n| net.add_ns(n).unwrap())
        .collect();
    let a = Router::start(&mut net, &hosts[0], &Opts::default());
    let b = Router::start(
        &mut net,
        &hosts[1],
        &Opts {
            peers: vec![ips[0].clone()],
            ..Opts::default()
        },
    );
    let c = Router::start(
        &mut net,
        &hosts[2],
        &Opts {
            peers: vec![ips[0].clone(), ips[1].clone()],
            extra: vec!["--no-fastdp"],
            ..Opts::default()
        },
    );
    let rs = [&a, &b, &c];
    for (i, r) in rs.iter().enumerate() {
        r.attach(&cs[i], &format!("10.32.0.{}/12", i + 10));
        cs[i]
            .set_sysctl("net.ipv4.icmp_echo_ignore_broadcasts", "0")
            .unwrap();
    }
    assert!(eventually(SETTLE, || a.established().len() == 2
        && c.established().len() == 2));
    // a-b fast, anything with c on the sleeve, saying why.
    assert!(
        eventually(SETTLE, || modes(&a)
            .iter()
            .filter(|m| *m == "fastdp")
            .count()
            == 1),
        "{:?}",
        modes(&a)
    );
    assert!(
        modes(&c).iter().all(|m| m.contains("--no-fastdp")),
        "{:?}",
        modes(&c)
    );
    for (i, from) in cs.iter().enumerate() {
        for j in 0..3 {
            if i != j {
                let to = format!("10.32.0.{}", j + 10);
                assert!(from.ping_until(ip(&to), SETTLE), "{i} cannot reach {to}");
            }
        }
    }
    // A broadcast ping from a's container is answered by both others (fast + sleeve).
    let text = cs[0]
        .ping_broadcast(Ipv4Addr::new(10, 47, 255, 255), 3)
        .unwrap();
    for other in ["10.32.0.11", "10.32.0.12"] {
        assert!(
            text.contains(other),
            "no broadcast reply from {other}:\n{text}"
        );
    }
    // Multicast too: b's container over the fast path, c's over the sleeve.
    let got = common::multicast_reaches(
        &mut net,
        &cs[0],
        "10.32.0.10",
        &[(&cs[1], "10.32.0.11"), (&cs[2], "10.32.0.12")],
    );
    assert!(got.is_ok(), "multicast did not reach both members: {got:?}");
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn restarting_with_a_password_removes_the_fast_path_and_traffic_stays_encrypted() {
    let Some((mut net, (ha, hb, a, b, ca, _cb))) = fast_pair() else {
        return;
    };
    let ip_a = ipv4_of(&ha, "eth0");
    // Restart both with a password: the kernel path (which cannot encrypt) must go.
    assert!(net.kill(a.pid) && net.kill(b.pid));
    let pw = Opts {
        password: Some("s3cret"),
        ..Opts::default()
    };
    let a = Router::restart(&mut net, &ha, &pw);
    let b = Router::restart(
        &mut net,
        &hb,
        &Opts {
            peers: vec![ip_a],
            ..pw.clone()
        },
    );
    for h in [&ha, &hb] {
        assert!(
            h.run(&["ip", "link", "show", "weft-vxlan"]).is_err(),
            "a VXLAN device from the unencrypted run is still there"
        );
    }
    assert!(
        eventually(SETTLE, || {
            let m = modes(&a);
            m.len() == 1 && m[0].starts_with("sleeve: encrypted")
        }),
        "{:?}",
        modes(&a)
    );
    assert!(
        ca.ping_until(ip("10.32.2.1"), SETTLE),
        "no traffic after the restart:\n{}",
        b.log_text()
    );
}
