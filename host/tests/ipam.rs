//! End to end address management: routers in test-host namespaces hand out container
//! addresses from one ring with no external store. Needs root; skips with a printed
//! reason otherwise. Each test builds and tears down its own namespaces.

mod common;

use common::{Opts, Router, test_net, underlay_hosts, wait_reachable};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;
use weft_kernel_dp::testnet::{Ns, TestNet};

const SETTLE: Duration = Duration::from_secs(20);
const PER_HOST: usize = 15;

fn opts(peers: &[String], extra: &[&'static str]) -> Opts<'static> {
    Opts {
        peers: peers.to_vec(),
        extra: extra.to_vec(),
        ..Opts::default()
    }
}

fn addr_of(cidr: &str) -> Ipv4Addr {
    cidr.split('/').next().unwrap().parse().unwrap()
}

/// `ps --json` as attachment id -> addresses.
fn ps(r: &Router) -> BTreeMap<String, Vec<String>> {
    r.json(&["ps"])
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let addrs = a["addresses"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_owned())
                .collect();
            (a["id"].as_str().unwrap().to_owned(), addrs)
        })
        .collect()
}

/// Three hosts on the underlay, `a` dialled by `b` and `c`, all with `consensus=3`.
fn three(net: &mut TestNet, extra: &[&'static str]) -> ([Ns; 3], Vec<Router>, String) {
    let (hosts, [ip_a, ..]) = underlay_hosts(net, ["a", "b", "c"]);
    let ip_a = ip_a.to_string();
    let mut flags = vec!["--ipalloc-init", "consensus=3"];
    flags.extend_from_slice(extra);
    let a = Router::start(net, &hosts[0], &opts(&[], &flags));
    let b = Router::start(net, &hosts[1], &opts(std::slice::from_ref(&ip_a), &flags));
    let c = Router::start(net, &hosts[2], &opts(std::slice::from_ref(&ip_a), &flags));
    wait_reachable(&[&a, &b, &c], 2, SETTLE);
    (hosts, vec![a, b, c], ip_a)
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn three_hosts_allocate_45_distinct_pingable_addresses_and_a_restart_keeps_them() {
    let Some(mut net) = test_net() else {
        return;
    };
    let (hosts, mut routers, ip_a) = three(&mut net, &[]);
    let containers: Vec<Vec<Ns>> = (0..3)
        .map(|h| {
            (0..PER_HOST)
                .map(|i| net.add_ns(&format!("c{h}x{i}")).unwrap())
                .collect()
        })
        .collect();
    // 15 attaches per host at once, on all three hosts at once, none with an address.
    let given: Vec<Vec<Result<Vec<String>, String>>> = std::thread::scope(|s| {
        let handles: Vec<Vec<_>> = routers
            .iter()
            .zip(&containers)
            .map(|(r, cs)| {
                cs.iter()
                    .map(|c| s.spawn(move || r.try_attach(c, &[])))
                    .collect()
            })
            .collect();
        handles
            .into_iter()
            .map(|hs| hs.into_iter().map(|h| h.join().unwrap()).collect())
            .collect()
    });
    let mut all: BTreeMap<Ipv4Addr, (usize, usize)> = BTreeMap::new();
    for (h, per_host) in given.iter().enumerate() {
        for (i, g) in per_host.iter().enumerate() {
            let g = g.as_ref().unwrap_or_else(|e| {
                panic!(
                    "attach on host {h} failed: {e}; log:\n{}",
                    routers[h].log_text()
                )
            });
            assert_eq!(g.len(), 1, "{g:?}");
            assert!(g[0].ends_with("/12"), "{g:?}");
            let a = addr_of(&g[0]);
            assert!(
                "10.32.0.0".parse::<Ipv4Addr>().unwrap() <= a
                    && a < "10.48.0.0".parse::<Ipv4Addr>().unwrap(),
                "{a} outside the default range"
            );
            // The address is on the container's interface.
            let inside = containers[h][i]
                .run(&["ip", "-o", "-4", "addr", "show", "ethwe"])
                .unwrap();
            assert!(inside.contains(&g[0]), "{inside} lacks {}", g[0]);
            if let Some(prev) = all.insert(a, (h, i)) {
                panic!("{a} given twice: to {prev:?} and {:?}", (h, i));
            }
        }
    }
    assert_eq!(all.len(), 3 * PER_HOST, "45 distinct addresses");
    // ps shows every attachment with its address; status ipam every peer's share.
    for (h, r) in routers.iter().enumerate() {
        let p = ps(r);
        assert_eq!(p.len(), PER_HOST, "{p:?}");
        let listed: BTreeSet<Ipv4Addr> = p.values().flatten().map(|c| addr_of(c)).collect();
        let mine: BTreeSet<Ipv4Addr> = all
            .iter()
            .filter(|(_, (hh, _))| *hh == h)
            .map(|(a, _)| *a)
            .collect();
        assert_eq!(listed, mine);
        let st = r.json(&["status", "ipam"]);
        let peers = st["peers"].as_array().unwrap();
        assert_eq!(peers.len(), 3, "{st}");
        assert!(peers.iter().all(|p| p["reachable"] == true), "{st}");
        let total: u64 = peers.iter().map(|p| p["addresses"].as_u64().unwrap()).sum();
        assert_eq!(total, 1 << 20, "the whole /12 is shared out: {st}");
        assert_eq!(st["allocations"].as_u64(), Some(PER_HOST as u64), "{st}");
        let text = r.weft(&["status", "ipam"]).unwrap();
        assert!(
            text.contains("10.32.0.0/12") && text.contains("reachable"),
            "{text}"
        );
    }
    // Pingable: one container on a reaches every other one (all 44, across hosts).
    let from = &containers[0][0];
    let from_addr = addr_of(&given[0][0].as_ref().unwrap()[0]);
    let mut first = true;
    for (a, (h, i)) in &all {
        if *a == from_addr {
            continue;
        }
        let ok = if first {
            from.ping_until(*a, SETTLE)
        } else {
            from.ping_until(*a, Duration::from_secs(5))
        };
        first = false;
        assert!(ok, "{from_addr} cannot reach {a} (host {h}, container {i})");
    }
    // Attaching again without an address gives the container the same address.
    let again = routers[1].try_attach(&containers[1][3], &[]).unwrap();
    assert_eq!(again, *given[1][3].as_ref().unwrap());
    // kill -9 b's router and start it on the same state dir: same addresses.
    let before = ps(&routers[1]);
    let b_status = routers[1].json(&["status", "ipam"]);
    assert!(net.kill(routers[1].pid));
    assert!(!routers[1].alive());
    let flags = ["--ipalloc-init", "consensus=3"];
    let b2 = Router::restart(&mut net, &hosts[1], &opts(&[ip_a], &flags));
    // The old handle's Drop removes the state dir: keep it until the end.
    let _old_b = std::mem::replace(&mut routers[1], b2);
    let b = &routers[1];
    assert_eq!(ps(b), before, "ps after the restart differs");
    let after_status = b.json(&["status", "ipam"]);
    assert_eq!(after_status["ring"], b_status["ring"], "{after_status}");
    assert_eq!(after_status["allocations"], b_status["allocations"]);
    // A new container there gets an address nobody has.
    let extra = net.add_ns("cnew").unwrap();
    let got = b
        .try_attach(&extra, &[])
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", b.log_text()));
    let a = addr_of(&got[0]);
    assert!(!all.contains_key(&a), "{a} given twice after the restart");
    // And the restarted router reaches the others again.
    b.wait_until(SETTLE, "b reachable again", |r| {
        r.json(&["status"])["reachable_peers"].as_u64() >= Some(2)
    });
    assert!(
        extra.ping_until(from_addr, SETTLE),
        "new container cannot reach a's"
    );
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn rmpeer_hands_a_dead_peers_space_to_this_router() {
    let Some(mut net) = test_net() else {
        return;
    };
    let (_hosts, routers, _) = three(&mut net, &["--ipalloc-timeout", "4s"]);
    let [a, _b, c] = [&routers[0], &routers[1], &routers[2]];
    let name_c = c.name();
    // c's first address is the start of its share; a /24 a little above it is c's space.
    let cc = net.add_ns("cc").unwrap();
    let x = addr_of(&c.try_attach(&cc, &[]).unwrap()[0]);
    let block = Ipv4Addr::from_bits((x.to_bits() + 512) & !0xff);
    let subnet = format!("net:{block}/24");
    let share = |r: &Router, peer: &str| -> Option<u64> {
        r.json(&["status", "ipam"])["peers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["peer"] == peer)
            .map(|p| p["addresses"].as_u64().unwrap())
    };
    let name_a = a.name();
    let (a_before, c_before) = (share(a, &name_a).unwrap(), share(a, &name_c).unwrap());
    assert!(c_before > 256, "c owns {c_before}");
    // c dies; a has no space in that /24 and nobody answers for it.
    assert!(net.kill(c.pid));
    a.wait_until(SETTLE, "c unreachable in status ipam", |a| {
        a.json(&["status", "ipam"])["unreachable"]
            .as_array()
            .is_some_and(|u| u.iter().any(|p| *p == name_c.as_str()))
    });
    let text = a.weft(&["status", "ipam"]).unwrap();
    assert!(text.contains("unreachable"), "{text}");
    let ca = net.add_ns("ca").unwrap();
    let e = a.try_attach(&ca, &[&subnet]).unwrap_err();
    assert!(
        e.lines().count() == 1 && e.contains("weft: "),
        "not one line: {e}"
    );
    // rmpeer: a takes over c's whole share.
    let out = a.weft(&["rmpeer", &name_c]).unwrap();
    assert!(
        out.contains(&format!("{c_before} addresses taken over")),
        "{out}"
    );
    assert_eq!(share(a, &name_c), None, "c still owns space");
    assert_eq!(share(a, &name_a), Some(a_before + c_before));
    // And that space is handed out again, here.
    let got = a
        .try_attach(&ca, &[&subnet])
        .unwrap_or_else(|e| panic!("{e}"));
    let g = addr_of(&got[0]);
    assert_eq!(
        g.to_bits() & !0xff,
        block.to_bits(),
        "{got:?} not in {subnet}"
    );
    assert!(got[0].ends_with("/24"), "{got:?}");
    // The peer that is left learns of it too.
    let b = &routers[1];
    b.wait_until(SETTLE, "b sees c's share gone", |b| {
        share(b, &name_c).is_none() && share(b, &name_a) == Some(a_before + c_before)
    });
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn no_quorum_full_range_and_bad_subnets_are_one_line_errors() {
    let Some(mut net) = test_net() else {
        return;
    };
    let (h1, h2) = (net.add_host("q").unwrap(), net.add_host("f").unwrap());
    // Waits for 2 peers and never hears of a second one.
    let q = Router::start(
        &mut net,
        &h1,
        &opts(
            &[],
            &["--ipalloc-init", "consensus=2", "--ipalloc-timeout", "2s"],
        ),
    );
    let c = net.add_ns("c0").unwrap();
    let e = q.try_attach(&c, &[]).unwrap_err();
    assert!(
        e.contains("waits for 2 peers") && e.contains("heard of 1"),
        "{e}"
    );
    assert!(
        q.json(&["ps"]).as_array().unwrap().is_empty(),
        "attached anyway"
    );
    let st = q.json(&["status", "ipam"]);
    assert!(st["ring"].is_null() && st["pending"] == 0, "{st}");
    // A /29 has 6 usable addresses: the 7th attach finds none.
    let f = Router::start(
        &mut net,
        &h2,
        &opts(
            &[],
            &[
                "--ipalloc-range",
                "10.99.0.0/29",
                "--ipalloc-timeout",
                "3s",
                "--ipalloc-init",
                "consensus=1",
            ],
        ),
    );
    let cs: Vec<Ns> = (0..7)
        .map(|i| net.add_ns(&format!("f{i}")).unwrap())
        .collect();
    let mut seen = BTreeSet::new();
    for c in &cs[..6] {
        let g = f.try_attach(c, &[]).unwrap_or_else(|e| panic!("{e}"));
        assert!(seen.insert(g[0].clone()), "{g:?} twice");
        assert!(
            g[0].starts_with("10.99.0.") && g[0].ends_with("/29"),
            "{g:?}"
        );
    }
    let e = f.try_attach(&cs[6], &[]).unwrap_err();
    assert!(e.contains("no free address left"), "{e}");
    // A subnet outside the range, and an address inside it that is taken.
    let e = f.try_attach(&cs[6], &["net:10.50.0.0/24"]).unwrap_err();
    assert!(
        e.contains("not inside the allocation range 10.99.0.0/29"),
        "{e}"
    );
    let taken = seen.iter().next().unwrap().clone();
    let e = f.try_attach(&cs[6], &[&taken]).unwrap_err();
    assert!(e.contains("in use"), "{e}");
    // Outside the range: allowed, not managed (as in Weave).
    let got = f.try_attach(&cs[6], &["192.168.77.5/24"]).unwrap();
    assert_eq!(got, vec!["192.168.77.5/24".to_owned()]);
    // detach frees: the address is given again.
    let p = cs[0].path().display().to_string();
    f.weft(&["detach", "--netns", &p]).unwrap();
    let again = f.try_attach(&cs[6], &["net:default"]).unwrap();
    assert_eq!(again.len(), 1);
    assert!(seen.contains(&again[0]), "{again:?} is not the freed one");
    let st: Value = f.json(&["status", "ipam"]);
    assert_eq!(st["allocations"], 6, "{st}");
}

/// Starts `weft router` on `r`'s socket and state dir and waits for it to exit on its own:
/// its exit code and log, or `None` if it is still running after 10 s (then killed).
fn start_expecting_exit(net: &mut TestNet, ns: &Ns, r: &Router) -> Option<String> {
    let (s, st) = (
        r.socket.display().to_string(),
        r.state.display().to_string(),
    );
    let spawned = net
        .spawn(
            ns,
            &[
                common::WEFT,
                "router",
                "--no-plugin",
                "--socket",
                &s,
                "--state-dir",
                &st,
            ],
        )
        .unwrap();
    let gone = common::eventually(Duration::from_secs(10), || {
        std::fs::read_to_string(format!("/proc/{}/stat", spawned.pid)).map_or(true, |t| {
            t.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
        })
    });
    if !gone {
        net.kill(spawned.pid);
        return None;
    }
    Some(std::fs::read_to_string(&spawned.log).unwrap_or_default())
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn a_corrupted_ipam_state_stops_start_up_and_an_old_one_gets_a_checksum() {
    let Some(mut net) = test_net() else {
        return;
    };
    let ([ha], _) = underlay_hosts(&mut net, ["a"]);
    let c = net.add_ns("c").unwrap();
    let r = Router::start(&mut net, &ha, &opts(&[], &[]));
    let given = r
        .try_attach(&c, &[])
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", r.log_text()));
    assert!(net.kill(r.pid));
    let file = r.state.join("ipam.state");
    let good = std::fs::read(&file).unwrap();
    // One character of the last container id changed: still a well-formed export.
    let mut bad = good.clone();
    let last = bad.last_mut().unwrap();
    *last = if last.is_ascii_digit() {
        b'0' + (*last - b'0' + 1) % 10
    } else {
        *last ^ 0x20
    };
    std::fs::write(&file, &bad).unwrap();
    let log = start_expecting_exit(&mut net, &ha, &r)
        .expect("a router with a corrupted ipam.state started");
    assert!(log.contains("ipam.state: checksum mismatch"), "{log}");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        bad,
        "the corrupted file was touched"
    );

    // A file from before the checksum (the bare export) loads, keeps the addresses, and
    // is written again with its checksum.
    let tag = b"weft-ipam-sha256\n";
    assert!(good.starts_with(tag));
    std::fs::write(&file, &good[tag.len() + 32..]).unwrap();
    let r2 = Router::restart(&mut net, &ha, &opts(&[], &[]));
    let again = r2.try_attach(&c, &[]).unwrap();
    assert_eq!(again, given, "the address was not kept");
    let now = std::fs::read(&file).unwrap();
    assert!(now.starts_with(tag), "no checksum written");
    assert!(r2.log_text().contains("no checksum"), "{}", r2.log_text());
    std::mem::forget(r); // r2 owns the same dir and removes it.
}
