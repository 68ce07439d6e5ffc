//! End to end: real `weft` routers in network namespaces joined by an underlay bridge.
//! Needs root and `ip`; skipped with a printed reason otherwise.

use std::time::Duration;
use weft_kernel_dp::testnet::{Ns, TestNet, require_root};

mod common;

use common::{Opts, Router, WEFT};

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

fn established_to(r: &Router, peer: &str) -> bool {
    r.json(&["status", "connections"])
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["state"] == "established" && c["peer"] == peer && c["encrypted"] == true)
}

#[test]
fn two_routers_connect_and_show_each_other() {
    if require_root().is_some() {
        return;
    }
    let mut net = TestNet::new().unwrap();
    let ha = net.add_host("a").unwrap();
    let hb = net.add_host("b").unwrap();
    let ip_a = net.underlay_attach(&ha).unwrap();
    net.underlay_attach(&hb).unwrap();
    let a = start(&mut net, &ha, "secret", &[]);
    let b = start(&mut net, &hb, "secret", &[ip_a.to_string()]);
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
fn wrong_password_shows_no_connection_and_the_reason() {
    if require_root().is_some() {
        return;
    }
    let mut net = TestNet::new().unwrap();
    let ha = net.add_host("a").unwrap();
    let hb = net.add_host("b").unwrap();
    let ip_a = net.underlay_attach(&ha).unwrap();
    net.underlay_attach(&hb).unwrap();
    let a = start(&mut net, &ha, "right", &[]);
    let b = start(&mut net, &hb, "wrong", &[ip_a.to_string()]);
    let target = format!("{ip_a}:6783");
    b.wait_until(
        Duration::from_secs(15),
        "a failed attempt on b's target",
        |b| {
            b.json(&["status", "targets"])
                .as_array()
                .unwrap()
                .iter()
                .any(|t| {
                    t["address"] == target.as_str()
                        && t["last_error"]
                            .as_str()
                            .is_some_and(|e| e.contains("password"))
                })
        },
    );
    for r in [&a, &b] {
        let conns = r.json(&["status", "connections"]);
        assert!(
            !conns
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["state"] == "established"),
            "{conns}"
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
fn attach_survives_router_restart_and_detach_removes_it() {
    if require_root().is_some() {
        return;
    }
    let mut net = TestNet::new().unwrap();
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
