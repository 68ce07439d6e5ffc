//! End to end through real NAT (issue 24): a public segment (the harness's underlay) with
//! host P; site 1 (host X) behind namespace n1 doing plain nftables masquerade, site 2
//! (host Y) behind n2 doing `masquerade fully-random` (mapped ports unpredictable), or
//! plain masquerade too. X and Y are launched with only P as peer. Containers on P, X and Y
//! reach each other (ping and TCP); X<->Y is relayed through P when site 2 is fully random
//! (the punch fails and status says so), and punched (a direct UDP path through both NATs)
//! when both are plain: then it outlives P and a NAT box that forgets its mappings. Needs
//! root; skips with a printed reason otherwise.
//!
//! Only the NAT boxes forward (that is their job); the test hosts do not. Everything lives
//! in namespaces the `TestNet` made and removes on drop, processes killed by their pid.

mod common;

use common::{Opts, Router, ip, mac_of, test_net};
use std::time::Duration;
use weft_kernel_dp::testnet::{Ns, TestNet};

const SETTLE: Duration = Duration::from_secs(30);

/// The hosts, their routers and containers of one NAT world.
struct World {
    /// Owns the namespaces and processes: everything goes when the world drops.
    net: TestNet,
    p: Router,
    x: Router,
    y: Router,
    /// Containers on P, X, Y with their overlay addresses.
    cs: [(Ns, &'static str); 3],
    /// NAT boxes of site 1 (plain) and site 2 (fully random).
    nats: [Ns; 2],
}

/// A NAT box: `name` on the public segment (its `eth0`), a LAN veth `lan` to `host`'s
/// `eth0` on `192.168.SITE.0/24`, masquerading what leaves `eth0` (`fully-random` when
/// asked) and dropping what comes in unasked: forwarded, or UDP for the box itself (as
/// home routers do; an unasked datagram the box took in itself would leave a conntrack
/// entry whose tuple masquerade then avoids, moving the site's next mapping to another
/// port). Unasked TCP to the box is still answered with a reset, so a peer whose
/// connection lost its mapping (conntrack flushed) learns at once.
fn nat_site(net: &mut TestNet, name: &str, host: &Ns, site: u8, random: bool) -> Ns {
    let nat = net.add_ns(name).unwrap();
    net.underlay_attach(&nat).unwrap();
    net.veth(&nat, "lan", host, "eth0").unwrap();
    net.addr(&nat, "lan", ip(&format!("192.168.{site}.1")), 24)
        .unwrap();
    net.addr(host, "eth0", ip(&format!("192.168.{site}.2")), 24)
        .unwrap();
    host.run(&[
        "ip",
        "route",
        "add",
        "default",
        "via",
        &format!("192.168.{site}.1"),
    ])
    .unwrap();
    nat.set_sysctl("net/ipv4/ip_forward", "1").unwrap();
    let how = if random {
        "masquerade fully-random"
    } else {
        "masquerade"
    };
    let rules = format!(
        "table ip weftnat {{
          chain out {{ type nat hook postrouting priority 100; oifname \"eth0\" {how}; }}
          chain site {{ type filter hook forward priority 0; policy drop;
            ct state established,related accept; iifname \"lan\" oifname \"eth0\" accept; }}
          chain box {{ type filter hook input priority 0; policy accept;
            iifname \"eth0\" meta l4proto udp ct state new drop; }}
        }}"
    );
    let file = std::env::temp_dir().join(format!("{}.nft", nat.name()));
    std::fs::write(&file, rules).unwrap();
    let loaded = nat.run(&["nft", "-f", &file.display().to_string()]);
    let _ = std::fs::remove_file(&file);
    loaded.unwrap();
    nat
}

/// Pins the neighbours of one Ethernet segment, each `(namespace, interface, address)`:
/// in every namespace a permanent entry for each other address. The kernel's neighbour
/// table is one for the whole machine (`gc_thresh3` counts every namespace's entries),
/// and a test with many routers running beside this one can fill it, after which ARP
/// here fails with ENOBUFS; permanent entries are exempt. ARP is not what this file tests.
fn pin_neighbours(segment: &[(&Ns, &str, &str)]) {
    for (ns, dev, _) in segment {
        for (other, other_dev, other_ip) in segment {
            if other == ns {
                continue;
            }
            let mac = mac_of(other, other_dev);
            ns.run(&[
                "ip",
                "neigh",
                "replace",
                other_ip,
                "lladdr",
                &mac,
                "dev",
                dev,
                "nud",
                "permanent",
            ])
            .unwrap();
        }
    }
}

/// The NAT world; site 2's box is `fully-random` when `random2`, plain otherwise.
fn world(password: Option<&'static str>, fastdp: bool, random2: bool) -> Option<World> {
    let mut net = test_net()?;
    let hp = net.add_host("p").unwrap();
    let p_ip = net.underlay_attach(&hp).unwrap().to_string();
    let (hx, hy) = (net.add_host("x").unwrap(), net.add_host("y").unwrap());
    let n1 = nat_site(&mut net, "n1", &hx, 1, false);
    let n2 = nat_site(&mut net, "n2", &hy, 2, random2);
    pin_neighbours(&[
        (&hp, "eth0", &p_ip),
        (&n1, "eth0", "198.18.0.2"),
        (&n2, "eth0", "198.18.0.3"),
    ]);
    pin_neighbours(&[(&n1, "lan", "192.168.1.1"), (&hx, "eth0", "192.168.1.2")]);
    pin_neighbours(&[(&n2, "lan", "192.168.2.1"), (&hy, "eth0", "192.168.2.2")]);
    // The shape holds: X reaches P through its NAT, P does not reach X's site.
    assert!(
        hx.ping(ip(&p_ip), 2),
        "x cannot reach p: the test is broken"
    );
    assert!(
        !hp.ping(ip("192.168.1.2"), 1),
        "p reaches x's site: the test is broken"
    );
    let opts = |peers: &[&str]| Opts {
        password,
        peers: peers.iter().map(ToString::to_string).collect(),
        extra: if fastdp { vec![] } else { vec!["--no-fastdp"] },
        ..Opts::default()
    };
    let p = Router::start(&mut net, &hp, &opts(&[]));
    let x = Router::start(&mut net, &hx, &opts(&[&p_ip]));
    let y = Router::start(&mut net, &hy, &opts(&[&p_ip]));
    let cs = [
        (net.add_ns("cp").unwrap(), "10.32.1.1"),
        (net.add_ns("cx").unwrap(), "10.32.2.1"),
        (net.add_ns("cy").unwrap(), "10.32.3.1"),
    ];
    for (r, (c, a)) in [&p, &x, &y].into_iter().zip(&cs) {
        r.attach(c, &format!("{a}/12"));
    }
    let overlay: Vec<(&Ns, &str, &str)> = cs.iter().map(|(c, a)| (c, "ethwe", *a)).collect();
    pin_neighbours(&overlay);
    Some(World {
        net,
        p,
        x,
        y,
        cs,
        nats: [n1, n2],
    })
}

impl World {
    fn logs(&self) -> String {
        format!(
            "p:\n{}\nx:\n{}\ny:\n{}\np connections: {}",
            self.p.log_text(),
            self.x.log_text(),
            self.y.log_text(),
            self.p.weft(&["status", "connections"]).unwrap_or_default()
        )
    }

    /// Every container pings every other one, and moves 1 MB over TCP to it.
    fn all_reach_each_other(&self) {
        for (i, (from, _)) in self.cs.iter().enumerate() {
            for (j, (to, to_ip)) in self.cs.iter().enumerate() {
                if i == j {
                    continue;
                }
                assert!(
                    from.ping_until(ip(to_ip), SETTLE),
                    "{} cannot ping {to_ip}; {}",
                    from.name(),
                    self.logs()
                );
                assert!(
                    tcp_moves(from, to, to_ip, 1_000_000),
                    "{} -> {to_ip}: 1 MB over TCP did not arrive whole; {}",
                    from.name(),
                    self.logs()
                );
            }
        }
    }
}

/// Sends `bytes` over TCP from `from` to `to_ip` (a listener in `to`); true if exactly
/// that many arrived.
fn tcp_moves(from: &Ns, to: &Ns, to_ip: &str, bytes: usize) -> bool {
    let recv = std::thread::spawn({
        let to = to.clone();
        move || {
            to.run(&[
                "sh",
                "-c",
                "timeout 30 socat -u TCP-LISTEN:5001,reuseaddr - | wc -c",
            ])
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let sent = from.run(&[
        "sh",
        "-c",
        &format!("head -c {bytes} /dev/zero | timeout 30 socat -u - TCP:{to_ip}:5001,retry=20"),
    ]);
    let got = recv.join().unwrap();
    sent.is_ok() && got.is_ok_and(|n| n.trim() == bytes.to_string())
}

/// Both NATed hosts join P, every container reaches every other, and X and Y talk through
/// P (they have no direct connection: neither can dial the other).
fn nat_world_works(password: Option<&'static str>, fastdp: bool) {
    let Some(w) = world(password, fastdp, true) else {
        return;
    };
    let (px, py) = (w.x.name(), w.y.name());
    let pp = w.p.name();
    w.p.wait_until(SETTLE, "p has x and y", |p| {
        let e = p.established();
        e.contains(&px) && e.contains(&py)
    });
    for r in [&w.x, &w.y] {
        r.wait_until(SETTLE, "routes to both others", |r| {
            r.reachable_peers() >= 2
        });
    }
    w.all_reach_each_other();
    // Relayed: X's next hop to Y is P, and P relayed frames.
    assert_eq!(w.x.next_hop_to(&py), Some(pp.clone()), "{}", w.logs());
    assert_eq!(w.y.next_hop_to(&px), Some(pp), "{}", w.logs());
    assert!(w.p.counter("frames_relayed") > 0, "{}", w.p.datapath());
    // P answers each at the mapping its datagrams come from: X's plain NAT kept no port
    // of X's (P's first datagrams to X's NAT took the tuple), Y's fully random NAT
    // picks one at random; either way not the listen port the TCP handshake announced.
    for (r, nat_ip) in [(&w.x, "198.18.0.2"), (&w.y, "198.18.0.3")] {
        let name = r.name();
        let c =
            w.p.connections_to(&name)
                .into_iter()
                .find(|c| c["state"] == "established");
        let c = c.unwrap_or_default();
        assert_eq!(c["path"], "direct", "{c}");
        let mapped = c["mapped_address"].as_str().unwrap_or_default().to_owned();
        assert!(mapped.starts_with(&format!("{nat_ip}:")), "{c}");
        assert!(c["since_unix_s"].as_u64().is_some(), "{c}");
        // The fast path (VXLAN to the NAT's address) cannot pass it: the link says so
        // and stays on the sleeve.
        let mode = c["mode"].as_str().unwrap_or_default();
        if fastdp && password.is_none() {
            assert!(
                mode.starts_with("sleeve:") && mode.contains("fast path"),
                "{c}"
            );
        }
        eprintln!(
            "p sees {name} at {mapped} (connection from {})",
            c["address"]
        );
    }
    // X shows Y as relayed via P, and Y shows X so.
    for (r, other) in [(&w.x, &py), (&w.y, &px)] {
        let rows = r.connections_to(other);
        assert!(
            rows.iter().any(|c| c["state"] == "relayed"
                && c["path"] == "relayed"
                && c["via"] == w.p.name().as_str()
                && c["since_unix_s"].as_u64().is_some()),
            "{rows:?}"
        );
        let text = r.weft(&["status", "connections"]).unwrap();
        assert!(
            text.contains(&format!("relayed via {}", w.p.name())),
            "{text}"
        );
    }
    // They tried to punch (the lower name of the two asks P; both probe): Y's fully
    // random NAT shows X a port nobody announced and X's NAT lets in only what X sent to,
    // so the probes never cross, and both say so.
    for (r, other) in [(&w.x, &py), (&w.y, &px)] {
        r.wait_until(SETTLE, "the punch fails with no answer", |r| {
            r.connections_to(other).iter().any(|c| {
                c["path"] == "relayed"
                    && c["punch"]
                        .as_str()
                        .is_some_and(|p| p == "failed: no answer")
            })
        });
        let text = r.weft(&["status", "connections"]).unwrap();
        assert!(text.contains("punch failed: no answer"), "{text}");
    }
    assert_eq!(w.x.next_hop_to(&py), Some(w.p.name()), "{}", w.logs());
    eprintln!(
        "p:\n{}x:\n{}",
        w.p.weft(&["status", "connections"]).unwrap(),
        w.x.weft(&["status", "connections"]).unwrap()
    );
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn hosts_behind_nat_join_and_reach_each_other_sleeve() {
    nat_world_works(None, false);
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn hosts_behind_nat_join_and_reach_each_other_encrypted() {
    nat_world_works(Some("nat secret"), true);
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn hosts_behind_nat_join_and_reach_each_other_fastdp_tried() {
    nat_world_works(None, true);
}

/// The mapped address P shows for `r`'s connection.
fn mapped_at_p(w: &World, r: &Router) -> Option<String> {
    let name = r.name();
    w.p.connections_to(&name)
        .into_iter()
        .find(|c| c["state"] == "established")?["mapped_address"]
        .as_str()
        .map(str::to_owned)
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn idle_nat_mappings_stay_open_and_a_restarted_nat_box_is_followed() {
    let Some(w) = world(Some("nat restart secret"), false, true) else {
        return;
    };
    let [(cp, _), (cx, ip_x), (cy, ip_y)] = &w.cs;
    for (from, to) in [(cx, "10.32.1.1"), (cy, "10.32.1.1"), (cx, *ip_y)] {
        assert!(from.ping_until(ip(to), SETTLE), "{}", w.logs());
    }
    // NAT boxes that forget an idle UDP mapping after 3 s (the usual is 30 s): the
    // routers' heartbeats (every second) keep them, so after 8 s without container
    // traffic P can still start a conversation with X and Y at once.
    for nat in &w.nats {
        for key in [
            "net/netfilter/nf_conntrack_udp_timeout",
            "net/netfilter/nf_conntrack_udp_timeout_stream",
        ] {
            nat.set_sysctl(key, "3").unwrap();
        }
    }
    std::thread::sleep(Duration::from_secs(8));
    for to in [*ip_x, *ip_y] {
        assert!(
            cp.ping_until(ip(to), Duration::from_secs(2)),
            "p lost {to} while idle; {}",
            w.logs()
        );
    }
    // Restart both NAT boxes' state (flush conntrack): every mapping is new, Y's at a
    // fresh random port. Traffic resumes, and P follows Y to its new mapping.
    let before = mapped_at_p(&w, &w.y);
    for nat in &w.nats {
        nat.run(&["conntrack", "-F"]).unwrap();
    }
    for (from, to) in [(cp, *ip_x), (cp, *ip_y), (cx, *ip_y), (cy, *ip_x)] {
        assert!(
            from.ping_until(ip(to), SETTLE),
            "{} -> {to} did not resume after the NAT restart; {}",
            from.name(),
            w.logs()
        );
    }
    assert!(
        tcp_moves(cx, cy, ip_y, 1_000_000),
        "x -> y over TCP after the NAT restart; {}",
        w.logs()
    );
    let after = mapped_at_p(&w, &w.y);
    assert!(
        after.is_some() && after != before,
        "p still answers y at {before:?} (now {after:?})"
    );
}

/// The row of `r`'s status for `other` says `punched`.
fn punched_to(r: &Router, other: &str) -> bool {
    r.connections_to(other)
        .iter()
        .any(|c| c["state"] == "established" && c["path"] == "punched")
}

/// Plain masquerade on both sites: X and Y punch a direct path, their containers talk
/// over it (not through P), and it keeps working after P's router is killed.
fn punched_world_works(password: Option<&'static str>) {
    let Some(mut w) = world(password, false, false) else {
        return;
    };
    let (px, py) = (w.x.name(), w.y.name());
    for (r, other) in [(&w.x, &py), (&w.y, &px)] {
        r.wait_until(SETTLE, "a punched connection", |r| punched_to(r, other));
    }
    w.all_reach_each_other();
    assert_eq!(w.x.next_hop_to(&py), Some(py.clone()), "{}", w.logs());
    assert_eq!(w.y.next_hop_to(&px), Some(px.clone()), "{}", w.logs());
    // The punched link runs to Y's NAT, at the mapping P saw for Y.
    let row =
        w.x.connections_to(&py)
            .into_iter()
            .find(|c| c["path"] == "punched")
            .unwrap_or_default();
    assert!(
        row["address"]
            .as_str()
            .is_some_and(|a| a.starts_with("198.18.0.3:")),
        "{row}"
    );
    assert_eq!(row["encrypted"], password.is_some(), "{row}");
    let relayed_before = w.p.counter("frames_relayed");
    let [_, (cx, _), (cy, ip_y)] = &w.cs;
    assert!(tcp_moves(cx, cy, ip_y, 1_000_000), "{}", w.logs());
    assert_eq!(
        w.p.counter("frames_relayed"),
        relayed_before,
        "x -> y went through p: {}",
        w.p.datapath()
    );
    eprintln!("x:\n{}", w.x.weft(&["status", "connections"]).unwrap());
    // Kill P's router: past the heartbeat timeout (20 s) X and Y have lost it, and still
    // have each other.
    let pp = w.p.name();
    assert!(w.net.kill(w.p.pid), "kill p's router");
    std::thread::sleep(Duration::from_secs(25));
    let (_, ip_x) = &w.cs[1];
    for (from, to) in [(cx, *ip_y), (cy, *ip_x)] {
        assert!(
            from.ping_until(ip(to), Duration::from_secs(5)),
            "{} -> {to} after p died; {}",
            from.name(),
            w.logs()
        );
    }
    assert!(tcp_moves(cx, cy, ip_y, 1_000_000), "{}", w.logs());
    assert!(
        punched_to(&w.x, &py) && punched_to(&w.y, &px),
        "{}",
        w.logs()
    );
    assert_eq!(w.x.next_hop_to(&pp), None, "{}", w.logs());
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn hosts_behind_plain_nats_punch_and_outlive_the_introducer() {
    punched_world_works(None);
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn hosts_behind_plain_nats_punch_and_outlive_the_introducer_encrypted() {
    punched_world_works(Some("punch secret"));
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn a_punched_path_resumes_after_the_nat_boxes_forget_it() {
    let Some(w) = world(None, false, false) else {
        return;
    };
    let (px, py) = (w.x.name(), w.y.name());
    for (r, other) in [(&w.x, &py), (&w.y, &px)] {
        r.wait_until(SETTLE, "a punched connection", |r| punched_to(r, other));
    }
    let [_, (cx, ip_x), (cy, ip_y)] = &w.cs;
    assert!(cx.ping_until(ip(ip_y), SETTLE), "{}", w.logs());
    for nat in &w.nats {
        nat.run(&["conntrack", "-F"]).unwrap();
    }
    // Traffic resumes (over the punched path if the mappings came back the same, else
    // relayed through P until the punch is redone), and the path ends punched again.
    for (from, to) in [(cx, *ip_y), (cy, *ip_x)] {
        assert!(
            from.ping_until(ip(to), SETTLE),
            "{} -> {to} after the flush; {}",
            from.name(),
            w.logs()
        );
    }
    assert!(tcp_moves(cx, cy, ip_y, 1_000_000), "{}", w.logs());
    for (r, other) in [(&w.x, &py), (&w.y, &px)] {
        r.wait_until(SETTLE * 2, "punched again", |r| punched_to(r, other));
    }
}
