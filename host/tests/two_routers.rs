//! End to end: real `weft` routers in network namespaces joined by an underlay bridge.
//! Needs root and `ip`; skipped with a printed reason otherwise.

use std::net::Ipv4Addr;
use std::time::Duration;
use weft_kernel_dp::testnet::{Ns, TestNet};

mod common;

use common::{Capture, Opts, Router, WEFT, test_net, underlay_hosts};

fn start(net: &mut TestNet, ns: &Ns, password: &str, peers: &[String]) -> Router {
    Router::start(
        net,
        ns,
        &Opts {
            password: Some(password),
            peers: peers.to_vec(),
            ..Opts::default()
        },
    )
}

/// Whether `r`'s target `target` last failed with an error containing `needle`.
fn target_failed_with(r: &Router, target: &str, needle: &str) -> bool {
    r.json(&["status", "targets"])
        .as_array()
        .unwrap()
        .iter()
        .any(|t| {
            t["address"] == target && t["last_error"].as_str().is_some_and(|e| e.contains(needle))
        })
}

/// Whether any of `r`'s connections, as `weft status connections` lists them, is `what`.
fn any_connection(r: &Router, what: impl Fn(&serde_json::Value) -> bool) -> bool {
    let conns = r.json(&["status", "connections"]);
    conns.as_array().unwrap().iter().any(what)
}

fn established_to(r: &Router, peer: &str) -> bool {
    any_connection(r, |c| {
        c["state"] == "established" && c["peer"] == peer && c["encrypted"] == true
    })
}

/// Hosts a and b on one underlay in a new test network, a's router (`pw_a`) and b's
/// (`pw_b`) dialling a; `None` where root tests cannot run.
fn two_routers(pw_a: &str, pw_b: &str) -> Option<(TestNet, [Ns; 2], Ipv4Addr, Router, Router)> {
    let mut net = test_net()?;
    let ([ha, hb], [ip_a, _]) = underlay_hosts(&mut net, ["a", "b"]);
    let a = start(&mut net, &ha, pw_a, &[]);
    let b = start(&mut net, &hb, pw_b, &[ip_a.to_string()]);
    Some((net, [ha, hb], ip_a, a, b))
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn two_routers_connect_and_show_each_other() {
    let Some((_net, [ha, _hb], _, a, b)) = two_routers("secret", "secret") else {
        return;
    };
    let (name_a, name_b) = (a.name(), b.name());
    assert_ne!(name_a, name_b);
    b.wait_until(Duration::from_secs(15), "b established to a", |b| {
        established_to(b, &name_a)
    });
    a.wait_until(Duration::from_secs(15), "a established to b", |a| {
        established_to(a, &name_b)
    });
    // Both know both peers.
    let peers = a.json(&["status", "peers"]);
    let names: Vec<&str> = peers
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(names.contains(&name_b.as_str()), "{peers}");
    // The bridge exists in each router's namespace.
    assert!(ha.run(&["ip", "link", "show", "weft"]).is_ok());
    // The name is kept in the state dir.
    let kept = std::fs::read_to_string(a.state.join("peer-name")).unwrap();
    assert_eq!(kept.trim(), name_a);
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn wrong_password_shows_no_connection_and_the_reason() {
    let Some((_net, _, ip_a, a, b)) = two_routers("right", "wrong") else {
        return;
    };
    let target = format!("{ip_a}:6783");
    b.wait_until(
        Duration::from_secs(15),
        "a failed attempt on b's target",
        |b| target_failed_with(b, &target, "password"),
    );
    for r in [&a, &b] {
        assert!(
            !any_connection(r, |c| c["state"] == "established"),
            "{}",
            r.json(&["status", "connections"])
        );
    }
    // The accepting side says why too.
    a.wait_until(Duration::from_secs(10), "a recorded the failure", |a| {
        a.json(&["status"])["recent_failures"]
            .as_array()
            .is_some_and(|f| {
                f.iter()
                    .any(|x| x["error"].as_str().is_some_and(|e| e.contains("password")))
            })
    });
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn attach_survives_router_restart_and_detach_removes_it() {
    let Some(mut net) = test_net() else {
        return;
    };
    let ha = net.add_host("a").unwrap();
    let ca = net.add_ns("c").unwrap();
    let a = start(&mut net, &ha, "pw", &[]);
    let weft = |args: &[&str]| {
        let mut full: Vec<&str> = vec![WEFT];
        full.extend(args);
        let s = a.socket.display().to_string();
        full.extend(["--socket", &s]);
        ha.run(&full)
    };
    let ns_path = ca.path().display().to_string();
    let out = weft(&["attach", "10.32.0.5/12", "--netns", &ns_path]).unwrap();
    assert_eq!(out.trim(), "10.32.0.5/12");
    let addrs = ca.run(&["ip", "-o", "addr", "show", "ethwe"]).unwrap();
    assert!(addrs.contains("10.32.0.5/12"), "{addrs}");
    weft(&["expose", "10.32.0.1/12"]).unwrap();
    assert!(ha.ping_until(
        "10.32.0.5".parse::<std::net::IpAddr>().unwrap(),
        Duration::from_secs(5)
    ));
    // The container's veth (not the sleeve's TAP, which lives and dies with the router).
    let veths = || {
        ha.run(&["ip", "-o", "link", "show", "master", "weft"])
            .unwrap()
            .lines()
            .filter(|l| !l.contains("weft-sleeve"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let before = veths();
    // Restart: the attachment is adopted, not recreated.
    let pid = net.pids()[0];
    assert!(net.kill(pid));
    let a = Router::restart(
        &mut net,
        &ha,
        &Opts {
            password: Some("pw"),
            ..Opts::default()
        },
    );
    let ps = a.json(&["ps"]);
    assert_eq!(ps.as_array().unwrap().len(), 1, "{ps}");
    assert_eq!(ps[0]["addresses"][0], "10.32.0.5/12");
    let after = veths();
    assert_eq!(before, after);
    let s = a.socket.display().to_string();
    ha.run(&[WEFT, "detach", "--netns", &ns_path, "--socket", &s])
        .unwrap();
    assert!(
        ca.run(&["ip", "link", "show", "ethwe"]).is_err(),
        "ethwe still there"
    );
    assert_eq!(a.json(&["ps"]).as_array().unwrap().len(), 0);
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn connect_and_forget_at_run_time_change_connections_and_targets() {
    let Some(mut net) = test_net() else {
        return;
    };
    // c runs no router: dialling it is refused.
    let ([ha, hb, _hc], [_, ip_b, ip_c]) = underlay_hosts(&mut net, ["a", "b", "c"]);
    let a = Router::start(&mut net, &ha, &Opts::sleeve());
    let b = Router::start(&mut net, &hb, &Opts::sleeve());
    let (name_a, name_b) = (a.name(), b.name());
    assert!(a.established().is_empty() && a.targets().is_empty());
    // connect: a target, then a connection both sides show.
    a.weft(&["connect", &ip_b.to_string()]).unwrap();
    let target_b = format!("{ip_b}:6783");
    assert_eq!(a.targets(), vec![target_b.clone()]);
    a.wait_until(Duration::from_secs(15), "a established to b", |a| {
        a.established() == vec![name_b.clone()]
    });
    b.wait_until(Duration::from_secs(15), "b established to a", |b| {
        b.established() == vec![name_a.clone()]
    });
    let text = a.weft(&["status", "connections"]).unwrap();
    assert!(
        text.contains(&target_b) && text.contains("established"),
        "{text}"
    );
    // A peer that refuses shows as a failed connection with the reason.
    let target_c = format!("{ip_c}:6783");
    a.weft(&["connect", &ip_c.to_string()]).unwrap();
    a.wait_until(Duration::from_secs(15), "the refused target shows", |a| {
        any_connection(a, |c| {
            c["address"] == target_c.as_str()
                && c["state"] == "failed"
                && c["error"].as_str().is_some_and(|e| e.contains("refused"))
        })
    });
    assert_eq!(a.targets().len(), 2);
    // forget: the target goes, the connection goes, on both sides, and stays gone.
    a.weft(&["forget", &ip_b.to_string(), &ip_c.to_string()])
        .unwrap();
    assert!(a.targets().is_empty(), "{:?}", a.targets());
    for r in [&a, &b] {
        r.wait_until(Duration::from_secs(10), "the connection is dropped", |r| {
            r.established().is_empty()
        });
    }
    std::thread::sleep(Duration::from_secs(3));
    for r in [&a, &b] {
        assert!(
            r.established().is_empty(),
            "{} reconnected after forget: {}",
            r.ns.name(),
            r.json(&["status", "connections"])
        );
    }
    assert!(
        !any_connection(&a, |c| c["address"] == target_c.as_str()),
        "forgotten target still listed: {}",
        a.json(&["status", "connections"])
    );
    // And connect brings it back.
    a.weft(&["connect", &ip_b.to_string()]).unwrap();
    b.wait_until(Duration::from_secs(15), "b established to a again", |b| {
        b.established() == vec![name_a.clone()]
    });
}

/// Two hosts with `password` (or none); a container on each; 200 kB of a marker string
/// sent over TCP between the containers while the underlay bridge is captured.
/// Returns whether the marker appears anywhere in the capture; `None` where root tests
/// cannot run.
fn marker_on_underlay(password: Option<&str>) -> Option<bool> {
    let mut net = test_net()?;
    let ([ha, hb], [ip_a, _]) = underlay_hosts(&mut net, ["a", "b"]);
    let (ca, cb) = (net.add_ns("ca").unwrap(), net.add_ns("cb").unwrap());
    // Whatever datapath the routers pick by default: the user's configuration.
    let a = Router::start(
        &mut net,
        &ha,
        &Opts {
            password,
            ..Opts::default()
        },
    );
    let b = Router::start(
        &mut net,
        &hb,
        &Opts {
            password,
            peers: vec![ip_a.to_string()],
            ..Opts::default()
        },
    );
    a.attach(&ca, "10.32.1.1/12");
    b.attach(&cb, "10.32.2.1/12");
    assert!(
        ca.ping_until(
            "10.32.2.1".parse::<std::net::IpAddr>().unwrap(),
            Duration::from_secs(20)
        ),
        "no overlay path; a:\n{}\nb:\n{}",
        a.log_text(),
        b.log_text()
    );
    let encrypted = any_connection(&b, |c| {
        c["state"] == "established" && c["encrypted"] == true
    });
    assert_eq!(encrypted, password.is_some());
    let ul = net.underlay_ns().unwrap().clone();
    let cap = Capture::start(&mut net, &ul, "br0", "");
    let marker = format!("weft-plaintext-marker-{}", std::process::id());
    let got = std::env::temp_dir().join(format!("weft-e2e-{}.marker", cb.name()));
    let g = got.display().to_string();
    let listen = net
        .spawn(
            &cb,
            &[
                "socat",
                "-u",
                "TCP-LISTEN:5002,reuseaddr",
                &format!("OPEN:{g},creat,trunc"),
            ],
        )
        .unwrap();
    let sent = ca.run(&[
        "sh",
        "-c",
        &format!(
            "yes {marker} | head -c 200000 | timeout 30 socat -u - TCP:10.32.2.1:5002,retry=20"
        ),
    ]);
    assert!(sent.is_ok(), "{sent:?}");
    assert!(
        common::eventually(Duration::from_secs(10), || {
            std::fs::metadata(&got).is_ok_and(|m| m.len() == 200_000)
        }),
        "the marker did not arrive over the overlay"
    );
    net.kill(listen.pid);
    let _ = std::fs::remove_file(&got);
    let tcpdump_log = cap.log.clone();
    let pcap = cap.stop(&mut net);
    assert!(
        pcap.len() > 200_000,
        "the capture missed the transfer ({} bytes); tcpdump: {}",
        pcap.len(),
        std::fs::read_to_string(&tcpdump_log).unwrap_or_default()
    );
    Some(common::contains(&pcap, marker.as_bytes()))
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn with_a_password_container_bytes_never_appear_on_the_underlay() {
    let Some(seen) = marker_on_underlay(Some("s3cret")) else {
        return;
    };
    assert!(
        !seen,
        "plaintext container bytes on the underlay with a password set"
    );
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn without_a_password_container_bytes_do_appear_on_the_underlay() {
    // The control for the test above: the capture does see plaintext when there is some.
    let Some(seen) = marker_on_underlay(None) else {
        return;
    };
    assert!(seen, "the capture cannot see plaintext at all");
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn routers_with_one_key_file_connect_and_another_key_is_refused() {
    let Some(mut net) = test_net() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("weft-e2e-keys-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (key, other) = (dir.join("net.key"), dir.join("other.key"));
    for k in [&key, &other] {
        let out = std::process::Command::new(WEFT)
            .args(["keygen", &k.display().to_string()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    // keygen never overwrites.
    let again = std::process::Command::new(WEFT)
        .args(["keygen", &key.display().to_string()])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("never overwrites"));
    let ([ha, hb, hc], [ip_a, _, _]) = underlay_hosts(&mut net, ["a", "b", "c"]);
    let (key, other) = (key.display().to_string(), other.display().to_string());
    let with_key = |net: &mut TestNet, ns: &Ns, k: &str, peers: Vec<String>| {
        Router::start(
            net,
            ns,
            &Opts {
                peers,
                extra: vec!["--key-file", k],
                ..Opts::default()
            },
        )
    };
    let a = with_key(&mut net, &ha, &key, vec![]);
    let b = with_key(&mut net, &hb, &key, vec![ip_a.to_string()]);
    let c = with_key(&mut net, &hc, &other, vec![ip_a.to_string()]);
    let name_a = a.name();
    b.wait_until(Duration::from_secs(15), "b established to a", |b| {
        established_to(b, &name_a)
    });
    let target = format!("{ip_a}:6783");
    c.wait_until(Duration::from_secs(15), "c refused for its key", |c| {
        target_failed_with(c, &target, "wrong password")
    });
    assert!(!established_to(&c, &name_a));
    drop((a, b, c));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn an_attach_announces_its_addresses_with_a_gratuitous_arp() {
    let Some(mut net) = test_net() else {
        return;
    };
    let h = net.add_host("a").unwrap();
    let r = start(&mut net, &h, "pw", &[]);
    // A namespace that knew 10.32.0.7 at another MAC keeps it unless told otherwise.
    // On every interface of the host: the ports of the bridge see it.
    let cap = Capture::start(&mut net, &h, "any", "arp");
    for (name, addr) in [("c1", "10.32.0.7/12"), ("c2", "10.32.0.8/12")] {
        let c = net.add_ns(name).unwrap();
        r.attach(&c, addr);
    }
    let bytes = cap.stop(&mut net);
    // A gratuitous request: sender and target address the same, target MAC zero.
    for ip in [[10u8, 32, 0, 7], [10, 32, 0, 8]] {
        let mut needle = ip.to_vec();
        needle.extend([0u8; 6]);
        needle.extend(ip);
        assert!(
            common::contains(&bytes, &needle),
            "no gratuitous ARP for {ip:?} on the host ({} bytes captured)",
            bytes.len()
        );
    }
}
