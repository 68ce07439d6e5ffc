//! End to end: a square of hosts A-B, B-D, A-C, C-D (no A-D link, no IP forwarding),
//! containers on A and D. Killing the router that relays their traffic moves it to the
//! other side of the square. Needs root; skips with a printed reason otherwise.

mod common;

use common::{Opts, Router, ip, link, test_net};
use std::time::{Duration, Instant};

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn square_traffic_moves_to_the_other_path_when_the_relay_dies() {
    let Some(mut net) = test_net() else {
        return;
    };
    let [ha, hb, hc, hd] = ["a", "b", "c", "d"].map(|n| net.add_host(n).unwrap());
    link(&net, &ha, &hb, "198.18.1.1", "198.18.1.2", "eab", "eba");
    link(&net, &hb, &hd, "198.18.2.2", "198.18.2.4", "ebd", "edb");
    link(&net, &ha, &hc, "198.18.3.1", "198.18.3.3", "eac", "eca");
    link(&net, &hc, &hd, "198.18.4.3", "198.18.4.4", "ecd", "edc");
    for to in ["198.18.2.4", "198.18.4.4"] {
        assert!(
            !ha.ping(ip(to), 1),
            "a reaches d at {to}: the test is broken"
        );
    }
    let b = Router::start(&mut net, &hb, &Opts::sleeve());
    let c = Router::start(&mut net, &hc, &Opts::sleeve());
    let a = Router::start(
        &mut net,
        &ha,
        &Opts::sleeve_to(&["198.18.1.2", "198.18.3.3"]),
    );
    let d = Router::start(
        &mut net,
        &hd,
        &Opts::sleeve_to(&["198.18.2.2", "198.18.4.3"]),
    );
    let (name_b, name_c, name_d) = (b.name(), c.name(), d.name());
    a.wait_until(Duration::from_secs(20), "a routes to d", |a| {
        a.next_hop_to(&name_d).is_some()
    });
    let (ca, cd) = (net.add_ns("ca").unwrap(), net.add_ns("cd").unwrap());
    a.attach(&ca, "10.32.1.1/12");
    d.attach(&cd, "10.32.4.1/12");
    assert!(
        ca.ping_until(ip("10.32.4.1"), Duration::from_secs(20)),
        "a's container cannot reach d's"
    );
    assert!(ca.ping(ip("10.32.4.1"), 5));
    // The relay on a's path to d carried the pings.
    let hop = a.next_hop_to(&name_d).unwrap();
    let (dead, other) = if hop == name_b {
        (&b, &c)
    } else {
        assert_eq!(hop, name_c);
        (&c, &b)
    };
    assert!(dead.counter("frames_relayed") > 0, "{}", dead.datapath());
    let other_name = other.name();
    // kill -9 the relay.
    assert!(net.kill(dead.pid));
    let t = Instant::now();
    assert!(
        ca.ping_until(ip("10.32.4.1"), Duration::from_secs(30)),
        "traffic did not move to the other path; a:\n{}\nd:\n{}",
        a.log_text(),
        d.log_text()
    );
    eprintln!("traffic back after {:?}", t.elapsed());
    assert!(cd.ping(ip("10.32.1.1"), 3));
    assert_eq!(a.next_hop_to(&name_d), Some(other_name));
    assert!(other.counter("frames_relayed") > 0, "{}", other.datapath());
}
