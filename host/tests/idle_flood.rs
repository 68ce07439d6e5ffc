//! End to end: a host on the underlay keeps 500 idle TCP connections open to a router's
//! port 6783 from four addresses, reopening those the router closes. The router must
//! still accept a real peer, still dial a `weft connect` target, hold only a bounded
//! number of handshaking connections and close the idle ones after the pre-hello timeout.
//! Needs root and python3; skips with a printed reason otherwise.

mod common;

use common::{Opts, Router, ip, underlay_hosts};
use std::time::{Duration, Instant};
use weft_kernel_dp::testnet::{UNDERLAY_IF, UNDERLAY_PREFIX_LEN};

/// Opens COUNT connections to TARGET:6783 round-robin from the SOURCE addresses, never
/// sends a byte, and for HOLD seconds reopens (at most 50 per 100 ms) those the router
/// closed. Prints "opened N" once the first round is up, "reopened N" at the end.
const FLOOD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/idle_flood.py");

const IDLE_STREAMS: usize = 500;
const FLOOD_SOURCES: [&str; 4] = [
    "198.18.0.201",
    "198.18.0.202",
    "198.18.0.203",
    "198.18.0.204",
];

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn idle_connections_do_not_keep_real_peers_out() {
    let Some(mut net) = common::test_net_with_python("idle_connections_do_not_keep_real_peers_out")
    else {
        return;
    };
    let ([ha, hb, hc, hx], [ip_a, _, ip_c, _]) = underlay_hosts(&mut net, ["a", "b", "c", "x"]);
    for src in FLOOD_SOURCES {
        net.addr(&hx, UNDERLAY_IF, ip(src), UNDERLAY_PREFIX_LEN)
            .unwrap();
    }
    let a = Router::start(&mut net, &ha, &Opts::sleeve());
    let c = Router::start(&mut net, &hc, &Opts::sleeve());
    let (target, count, hold) = (ip_a.to_string(), IDLE_STREAMS.to_string(), "25");
    let mut args = vec!["python3", FLOOD, &target, &count, hold];
    args.extend(FLOOD_SOURCES);
    let flood = net.spawn(&hx, &args).unwrap();
    let flood_log = || std::fs::read_to_string(&flood.log).unwrap_or_default();
    let started = Instant::now();
    while !flood_log().contains("opened") {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the flood never opened its connections: {}",
            flood_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("flood: {}", flood_log().trim());
    // Under the flood: a real peer dials in, and `weft connect` dials out. Both within
    // 8 s, before the 10 s handshake timeout would have freed any slot on its own.
    let b = Router::start(&mut net, &hb, &Opts::sleeve_to(&[ip_a]));
    a.weft(&["connect", &ip_c.to_string()]).unwrap();
    let (name_b, name_c) = (b.name(), c.name());
    a.wait_until(
        Duration::from_secs(8),
        "b and c connected under the flood",
        |a| {
            let up = a.established();
            up.contains(&name_b) && up.contains(&name_c)
        },
    );
    // Still under the flood, past the pre-hello timeout: bounded, refused and timed out.
    let since_flood = started.elapsed();
    if since_flood < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_secs(5) - since_flood);
    }
    let st = a.json(&["status"]);
    let pending = st["connections"]["handshaking"]
        .as_u64()
        .unwrap_or(u64::MAX)
        + st["connections"]["confirming"].as_u64().unwrap_or(u64::MAX);
    let per_addr_max = weft_core::admission::PENDING_INBOUND_PER_ADDR_MAX as u64;
    assert!(
        pending <= per_addr_max * FLOOD_SOURCES.len() as u64,
        "{pending} handshaking under the flood: {st}"
    );
    let refused = &st["refused"];
    assert!(
        refused["pending_inbound_per_addr"].as_u64().unwrap_or(0) > 0,
        "{refused}"
    );
    assert!(
        refused["pre_hello_timeouts"].as_u64().unwrap_or(0) > 0,
        "{refused}"
    );
    let text = a.weft(&["status"]).unwrap();
    assert!(text.contains("Refused"), "{text}");
    // The flood ends; the router is the same process, its peers are still there and
    // nothing is left handshaking.
    a.wait_until(Duration::from_secs(60), "the flood is over", |_| {
        flood_log().contains("reopened")
    });
    eprintln!("flood: {}", flood_log().trim());
    assert!(a.alive(), "the router died; log:\n{}", a.log_text());
    a.wait_until(
        Duration::from_secs(10),
        "no connection left handshaking",
        |a| {
            let st = a.json(&["status"]);
            st["connections"]["handshaking"] == 0 && st["connections"]["confirming"] == 0
        },
    );
    let up = a.established();
    assert!(up.contains(&name_b) && up.contains(&name_c), "{up:?}");
}
