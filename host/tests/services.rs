//! Services end to end (issue 22): `weft expose` from IPAM, and the seed's service
//! recipes. Real routers in test-host namespaces; an "outside" namespace plays the world.
//! Needs root; skipped with a printed reason otherwise. Test traffic stays between the
//! namespaces the tests made; every process is killed by its recorded pid when the
//! `TestNet` drops, also on failure.

mod common;

use common::{Opts, Router, eventually, test_net, underlay_hosts};
use std::time::Duration;
use weft_kernel_dp::testnet::{Ns, TestNet};

/// The addresses on the router's bridge, as `ip -4 addr` in its namespace lists them.
fn bridge_addrs(r: &Router) -> Vec<String> {
    let out =
        r.ns.run(&["ip", "-4", "-o", "addr", "show", "dev", "weft"])
            .unwrap_or_default();
    out.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            w.position(|x| x == "inet")?;
            w.next().map(str::to_owned)
        })
        .collect()
}

fn allocations(r: &Router) -> u64 {
    r.json(&["status", "ipam"])["allocations"].as_u64().unwrap()
}

fn lookup(r: &Router, name: &str) -> Vec<String> {
    let mut v: Vec<String> = r
        .weft(&["dns-lookup", name])
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    v.sort();
    v
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn expose_without_an_address_allocates_names_survive_a_restart_and_hide_frees() {
    let Some(mut net) = test_net() else { return };
    let ([h], _) = underlay_hosts(&mut net, ["h"]);
    let opts = Opts {
        extra: vec!["--no-fastdp"],
        ..Opts::default()
    };
    let r = Router::start(&mut net, &h, &opts);
    assert_eq!(allocations(&r), 0);

    // Bad input: one line, non-zero, nothing exposed, nothing allocated.
    let err = r.weft(&["expose", "net:10.99.0.0/16"]).unwrap_err();
    assert_eq!(err.to_string().trim().lines().count(), 1, "{err}");
    let err = r
        .weft(&["expose", "-h", "bad name!.weave.local"])
        .unwrap_err();
    assert_eq!(err.to_string().trim().lines().count(), 1, "{err}");
    assert!(bridge_addrs(&r).is_empty(), "{:?}", bridge_addrs(&r));
    assert_eq!(allocations(&r), 0, "a refused expose keeps no address");

    // Several at once, one of the default subnet and one of another, with a name.
    let out = r
        .weft(&["expose", "net:default", "net:10.44.0.0/16", "-h", "gw"])
        .unwrap();
    let given: Vec<String> = out.split_whitespace().map(str::to_owned).collect();
    assert_eq!(given.len(), 2, "{out:?}");
    assert!(given[0].ends_with("/12"), "{given:?}");
    assert!(given[1].starts_with("10.44.") && given[1].ends_with("/16"));
    let mut on_bridge = bridge_addrs(&r);
    on_bridge.sort();
    let mut want = given.clone();
    want.sort();
    assert_eq!(on_bridge, want);
    assert_eq!(allocations(&r), 2);
    let ips: Vec<String> = {
        let mut v: Vec<String> = given
            .iter()
            .map(|c| c.split('/').next().unwrap().to_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(lookup(&r, "gw"), ips);
    // Again: the same address (the host owns it already), nothing new allocated.
    let again = r.weft(&["expose"]).unwrap();
    assert_eq!(again.trim(), given[0]);
    assert_eq!(allocations(&r), 2);
    // A container gets another address.
    let c = net.add_ns("c").unwrap();
    let p = c.path().display().to_string();
    let got = r.weft(&["attach", "--netns", &p]).unwrap();
    assert!(!given.contains(&got.trim().to_owned()), "{got} given twice");

    // kill -9 and start on the same state dir: addresses and the name are back.
    assert!(net.kill(r.pid));
    // The old handle's Drop removes the state dir: kept until the end.
    let _old = r;
    let r = Router::restart(&mut net, &h, &opts);
    let mut on_bridge = bridge_addrs(&r);
    on_bridge.sort();
    assert_eq!(on_bridge, want, "after a restart");
    assert_eq!(allocations(&r), 3, "2 exposed + 1 attached");
    r.wait_until(Duration::from_secs(10), "gw registered again", |r| {
        lookup(r, "gw") == ips
    });

    // hide: off the bridge, out of DNS, back to IPAM.
    let out = r.weft(&["hide"]).unwrap();
    assert_eq!(out.lines().count(), 2, "{out:?}");
    assert!(bridge_addrs(&r).is_empty());
    assert!(lookup(&r, "gw").is_empty());
    assert_eq!(allocations(&r), 1, "only the container's address is left");
}

// ---- The seed's scenarios: first with hand-written nft rules, then with `weft service`.
//
// Shape: hosts h1 and h2 on the underlay, each router on its own; container c1 on h1
// (10.32.1.1/12), c2 on h2 (10.32.2.1/12). "out" is the world of h2 (192.0.2.2, h2 is
// 192.0.2.1 there); "far" is a service only h1 reaches, on an outside network with the
// same range (192.0.2.9, h1 is 192.0.2.1 there): overlapping outside ranges. "far2" is
// another outside host of h1 (198.51.100.2). The hosts forward only where a NAT'd
// service path needs it: the router turns on ip_forward when it carries a service, the
// hand-written recipe turns it on by hand (both say so).

/// What an exchange with a socat server at `to` (`TCP:a:p` / `UDP4:a:p`) from `ns` gave:
/// the reply's first line, or empty.
fn fetch(ns: &Ns, to: &str) -> String {
    let cmd = format!("echo ping | timeout 5 socat -T 2 - {to}");
    ns.exec(&["sh", "-c", &cmd])
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// Waits (up to `limit`) until `fetch(ns, to)` is `want`; the last reply otherwise.
fn fetch_until(ns: &Ns, to: &str, want: &str, limit: Duration) -> Result<(), String> {
    let mut last = String::new();
    if eventually(limit, || {
        last = fetch(ns, to);
        last == want
    }) {
        Ok(())
    } else {
        Err(format!(
            "{to} from {}: got {last:?}, want {want:?}",
            ns.name()
        ))
    }
}

/// Starts socat servers in `ns` (recorded pids, killed with the `TestNet`) answering
/// `reply` on TCP `tcp_port` and UDP `udp_port`.
fn serve(net: &mut TestNet, ns: &Ns, tcp_port: u16, udp_port: u16, reply: &str) {
    let sys = format!("SYSTEM:echo {reply}");
    let tcp = format!("TCP4-LISTEN:{tcp_port},reuseaddr,fork");
    let udp = format!("UDP4-RECVFROM:{udp_port},fork");
    net.spawn(ns, &["socat", &tcp, &sys]).unwrap();
    net.spawn(ns, &["socat", &udp, &sys]).unwrap();
}

struct World {
    net: TestNet,
    h1: Ns,
    h2: Ns,
    r1: Router,
    r2: Router,
    c1: Ns,
    c2: Ns,
    out: Ns,
}

const SETTLE: Duration = Duration::from_secs(30);

fn world() -> Option<World> {
    let mut net = test_net()?;
    let ([h1, h2], [ip1, _]) = underlay_hosts(&mut net, ["h1", "h2"]);
    let (out, far, far2) = (
        net.add_ns("out").unwrap(),
        net.add_ns("far").unwrap(),
        net.add_ns("far2").unwrap(),
    );
    common::link(&net, &h2, &out, "192.0.2.1", "192.0.2.2", "eth1", "eth0");
    common::link(&net, &h1, &far, "192.0.2.1", "192.0.2.9", "eth1", "eth0");
    common::link(
        &net,
        &h1,
        &far2,
        "198.51.100.1",
        "198.51.100.2",
        "eth2",
        "eth0",
    );
    let r1 = Router::start(&mut net, &h1, &opts(&[]));
    let r2 = Router::start(&mut net, &h2, &opts(&[ip1.to_string()]));
    // Connected first: r2's claims wait for the ring r1 made (the machine may be busy).
    r2.wait_until(SETTLE, "connected to h1", |r| !r.established().is_empty());
    let (c1, c2) = (net.add_ns("c1").unwrap(), net.add_ns("c2").unwrap());
    r1.attach(&c1, "10.32.1.1/12");
    r2.attach(&c2, "10.32.2.1/12");
    assert!(
        common::ping_until(&c2, "10.32.1.1", SETTLE),
        "overlay up; log:\n{}",
        r2.log_text()
    );
    serve(&mut net, &c1, 8080, 9000, "from-c1");
    serve(&mut net, &far, 7000, 7000, "from-far");
    serve(&mut net, &far2, 7000, 7000, "from-far2");
    Some(World {
        net,
        h1,
        h2,
        r1,
        r2,
        c1,
        c2,
        out,
    })
}

fn opts(peers: &[String]) -> Opts<'static> {
    Opts {
        peers: peers.to_vec(),
        extra: vec!["--no-fastdp"],
        ..Opts::default()
    }
}

/// The host's first exposed address (without its prefix).
fn exposed_ip(r: &Router) -> String {
    let st = r.json(&["status"]);
    let c = st["exposed"][0].as_str().expect("an exposed address");
    c.split('/').next().unwrap().to_owned()
}

fn nft(ns: &Ns, batch: &str) {
    let cmd = format!("nft -f - <<'EOF'\n{batch}\nEOF\n");
    ns.run(&["sh", "-c", &cmd]).unwrap();
}

fn service(r: &Router, args: &[&str]) -> String {
    let mut a = vec!["service"];
    a.extend(args);
    r.weft(&a)
        .unwrap_or_else(|e| panic!("weft service {args:?}: {e}; log:\n{}", r.log_text()))
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn export_tcp_and_udp_from_outside_by_hand_then_with_weft_service() {
    let Some(w) = world() else { return };
    let (out, h2, r2) = (&w.out, &w.h2, &w.r2);
    r2.weft(&["expose"]).unwrap();
    // Without a rule the world does not reach the container.
    assert_eq!(fetch(out, "TCP:192.0.2.1:80"), "");

    // The seed's recipe, by hand: DNAT from the outside interface to the container,
    // masquerade into the overlay; the kernel forwards (turned on for this path only).
    h2.set_sysctl("net/ipv4/ip_forward", "1").unwrap();
    nft(
        h2,
        "table ip recipe {\n\
           chain pre { type nat hook prerouting priority dstnat; \
             iifname \"eth1\" tcp dport 81 dnat to 10.32.1.1:8080; \
             iifname \"eth1\" udp dport 81 dnat to 10.32.1.1:9000; }\n\
           chain post { type nat hook postrouting priority srcnat; \
             oifname \"weft\" ip daddr 10.32.1.1 masquerade; }\n\
         }",
    );
    fetch_until(out, "TCP:192.0.2.1:81", "from-c1", SETTLE).unwrap();
    fetch_until(out, "UDP4:192.0.2.1:81", "from-c1", SETTLE).unwrap();
    nft(h2, "delete table ip recipe");
    assert_eq!(fetch(out, "TCP:192.0.2.1:81"), "");
    // The same with `iptables -t nat` (the test host's own tables, flushed after).
    let ipt = |args: &str| {
        let mut a = vec!["iptables", "-w", "-t", "nat"];
        a.extend(args.split(' '));
        h2.run(&a).unwrap();
    };
    ipt("-A PREROUTING -i eth1 -p tcp --dport 82 -j DNAT --to-destination 10.32.1.1:8080");
    ipt("-A POSTROUTING -o weft -d 10.32.1.1 -j MASQUERADE");
    fetch_until(out, "TCP:192.0.2.1:82", "from-c1", SETTLE).unwrap();
    ipt("-F PREROUTING");
    ipt("-F POSTROUTING");
    h2.set_sysctl("net/ipv4/ip_forward", "0").unwrap();
    assert_eq!(fetch(out, "TCP:192.0.2.1:82"), "");

    // Bad input: one line each, nothing applied.
    for bad in [
        &["export", "70000", "--to", "10.32.1.1:80"][..],
        &["export", "80/sctp", "--to", "10.32.1.1:80"],
        &["export", "80", "--to", "nosuch:80"],
        &["export", "80", "--to", "10.32.1.1:80", "--on", "192.0.2.77"],
        &["export", "6783", "--to", "10.32.1.1:80"],
        &["export", "80", "--to", "172.16.0.1:80"],
        &["import", "10.32.9.9:80", "--to", "192.0.2.9:7000"],
    ] {
        let mut a = vec!["service"];
        a.extend(bad);
        let err = r2.weft(&a).expect_err(&format!("{bad:?} accepted"));
        let text = err.to_string();
        let stderr = text.rsplit("): ").next().unwrap_or_default();
        assert_eq!(stderr.trim().lines().count(), 1, "{bad:?}: {text}");
    }
    assert_eq!(service(r2, &["ls"]), "", "nothing applied");
    assert!(
        h2.run(&["nft", "list", "table", "ip", "weft_services_weft"])
            .is_err(),
        "no table without services"
    );

    // weft service: TCP and UDP, from the outside interface; on a host whose FORWARD
    // policy is DROP (as Docker sets it), which the router then opens for its services.
    h2.run(&["iptables", "-w", "-P", "FORWARD", "DROP"])
        .unwrap();
    let id_tcp = service(r2, &["export", "80", "--to", "10.32.1.1:8080"]);
    let id_udp = service(
        r2,
        &["export", "53/udp", "--to", "10.32.1.1:9000", "--on", "eth1"],
    );
    fetch_until(out, "TCP:192.0.2.1:80", "from-c1", SETTLE).unwrap();
    fetch_until(out, "UDP4:192.0.2.1:53", "from-c1", SETTLE).unwrap();
    // From the exporting host itself, on its own address (the output hook).
    fetch_until(h2, "TCP:192.0.2.1:80", "from-c1", SETTLE).unwrap();
    let ls = service(r2, &["ls", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&ls).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2, "{ls}");
    assert!(ls.contains("10.32.1.1"), "{ls}");
    // rm: that path is gone, the other stays.
    service(r2, &["rm", id_tcp.trim()]);
    assert!(
        eventually(Duration::from_secs(5), || fetch(out, "TCP:192.0.2.1:80")
            .is_empty()),
        "removed export still answers"
    );
    fetch_until(out, "UDP4:192.0.2.1:53", "from-c1", SETTLE).unwrap();
    assert!(service(r2, &["ls"]).contains(id_udp.trim()));
    assert!(r2.weft(&["service", "rm", "exp-99"]).is_err());
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn import_binding_and_routing_with_overlapping_outside_ranges() {
    let Some(w) = world() else { return };
    let (h1, r1, r2, c2, out) = (&w.h1, &w.r1, &w.r2, &w.c2, &w.out);
    // far is not on weft and only h1 reaches it.
    assert_eq!(fetch(c2, "TCP:192.0.2.9:7000"), "");

    // The seed's recipe, by hand: DNAT from h1's overlay address to far, masquerade out.
    r1.weft(&["expose", "10.32.0.11/12"]).unwrap();
    h1.set_sysctl("net/ipv4/ip_forward", "1").unwrap();
    nft(
        h1,
        "table ip recipe {\n\
           chain pre { type nat hook prerouting priority dstnat; \
             iifname \"weft\" ip daddr 10.32.0.11 tcp dport 7000 dnat to 192.0.2.9:7000; }\n\
           chain post { type nat hook postrouting priority srcnat; \
             oifname \"eth1\" ip daddr 192.0.2.9 masquerade; }\n\
         }",
    );
    fetch_until(c2, "TCP:10.32.0.11:7000", "from-far", SETTLE).unwrap();
    nft(h1, "delete table ip recipe");
    h1.set_sysctl("net/ipv4/ip_forward", "0").unwrap();
    r1.weft(&["hide"]).unwrap();
    assert_eq!(fetch(c2, "TCP:10.32.0.11:7000"), "");

    // weft service import, the address allocated (h1 has none now).
    let got = service(r1, &["import", "7000", "--to", "192.0.2.9:7000"]);
    let (id, at) = got.trim().split_once(' ').unwrap();
    let addr = at.split(':').next().unwrap().to_owned();
    assert_eq!(exposed_ip(r1), addr, "{got}");
    fetch_until(c2, &format!("TCP:{at}"), "from-far", SETTLE).unwrap();
    let udp = service(
        r1,
        &[
            "import",
            &format!("{addr}:7000/udp"),
            "--to",
            "192.0.2.9:7000",
        ],
    );
    fetch_until(c2, &format!("UDP4:{at}"), "from-far", SETTLE).unwrap();
    // weft status says which imports this router carries.
    let st = r1.weft(&["status"]).unwrap();
    assert!(
        st.contains("Imports") && st.contains(&format!("{addr}:7000/tcp -> 192.0.2.9:7000")),
        "{st}"
    );
    assert!(!r2.weft(&["status"]).unwrap().contains("Imports"));

    // Binding: re-pointed at far2, the client untouched, the id kept.
    let again = service(r1, &["import", at, "--to", "198.51.100.2:7000"]);
    assert_eq!(again.trim().split(' ').next(), Some(id), "{again}");
    fetch_until(c2, &format!("TCP:{at}"), "from-far2", SETTLE).unwrap();
    service(r1, &["import", at, "--to", "192.0.2.9:7000"]);
    fetch_until(c2, &format!("TCP:{at}"), "from-far", SETTLE).unwrap();
    // UDP from one source port (one conntrack flow) follows a re-point too.
    let flow = format!("UDP4:{at},sourceport=40000,reuseaddr");
    fetch_until(c2, &flow, "from-far", SETTLE).unwrap();
    service(
        r1,
        &["import", &format!("{at}/udp"), "--to", "198.51.100.2:7000"],
    );
    fetch_until(c2, &flow, "from-far2", Duration::from_secs(5)).unwrap();

    // Routing: h2 exports what h1 imports; out (192.0.2.2) reaches far (192.0.2.9), two
    // outside networks with the same range.
    r2.weft(&["expose"]).unwrap();
    service(r2, &["export", "7001", "--to", at]);
    fetch_until(out, "TCP:192.0.2.1:7001", "from-far", SETTLE).unwrap();
    let _ = udp;
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn moving_a_named_container_keeps_the_export_and_services_survive_restart_until_reset() {
    let Some(mut w) = world() else { return };
    let out = w.out.clone();
    w.r2.weft(&["expose"]).unwrap();
    // c1 by name.
    let p = w.c1.path().display().to_string();
    w.r1.weft(&["detach", "--netns", &p]).unwrap();
    w.r1.weft(&["attach", "10.32.1.1/12", "--netns", &p, "--name", "web"])
        .unwrap();
    w.r2.wait_until(SETTLE, "web known on h2", |r| {
        lookup(r, "web") == ["10.32.1.1"]
    });
    service(&w.r2, &["export", "80", "--to", "web:8080"]);
    fetch_until(&out, "TCP:192.0.2.1:80", "from-c1", SETTLE).unwrap();

    // Moving: web detached on h1 and started on h2 (another address), same name.
    w.r1.weft(&["detach", "--netns", &p]).unwrap();
    let c3 = w.net.add_ns("c3").unwrap();
    serve(&mut w.net, &c3, 8080, 9000, "from-c3");
    let p3 = c3.path().display().to_string();
    w.r2.weft(&["attach", "10.32.3.1/12", "--netns", &p3, "--name", "web"])
        .unwrap();
    fetch_until(&out, "TCP:192.0.2.1:80", "from-c3", Duration::from_secs(10)).unwrap();
    assert!(service(&w.r2, &["ls"]).contains("web:8080 (10.32.3.1)"));

    // Restart: killed, its table gone as after a reboot, started again: back.
    assert!(w.net.kill(w.r2.pid));
    w.h2.run(&["nft", "delete", "table", "ip", "weft_services_weft"])
        .unwrap();
    assert_eq!(fetch(&out, "TCP:192.0.2.1:80"), "");
    let _old = std::mem::replace(&mut w.r2, Router::restart(&mut w.net, &w.h2, &opts(&[])));
    std::mem::forget(_old);
    fetch_until(&out, "TCP:192.0.2.1:80", "from-c3", SETTLE).unwrap();

    // reset removes every rule.
    w.r2.weft(&["reset"]).unwrap();
    assert!(eventually(Duration::from_secs(10), || w
        .h2
        .run(&["nft", "list", "table", "ip", "weft_services_weft"])
        .is_err()));
    assert_eq!(fetch(&out, "TCP:192.0.2.1:80"), "");
}
