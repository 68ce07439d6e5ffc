//! End to end: a router drops UDP to its sleeve (6783) and fast-path (6784) ports from
//! addresses that are not connected peers, in its own nftables table, while its peer's
//! datagrams keep arriving (sleeve heartbeats: the path stays up) and the containers
//! behind the two routers talk; the table goes when the router stops. Needs root, `nft` and
//! python3; skips with a printed reason otherwise.

mod common;

use common::{Opts, Router, ip, underlay_hosts};
use std::io::Write as _;
use std::time::Duration;
use weft_kernel_dp::testnet::Ns;

const TABLE: &str = "weft_peers_6783";

/// Datagrams the stranger sends to each port.
const SENT_PER_PORT: u64 = 25;

/// Packets counted by the table's `strangers` counter in `ns`.
fn strangers_dropped(ns: &Ns) -> Option<u64> {
    let out = ns
        .run(&["nft", "list", "counter", "inet", TABLE, "strangers"])
        .ok()?;
    let words: Vec<&str> = out.split_whitespace().collect();
    let i = words.iter().position(|w| *w == "packets")?;
    words.get(i + 1)?.parse().ok()
}

/// `status`'s datapath says the one sleeve path is up.
fn path_up(dp: &serde_json::Value) -> bool {
    dp["paths"]
        .as_array()
        .is_some_and(|p| p.len() == 1 && p[0]["up"] == true)
}

fn set_has(ns: &Ns, addr: &str) -> bool {
    ns.run(&["nft", "list", "set", "inet", TABLE, "peers4"])
        .is_ok_and(|s| s.contains(addr))
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn strangers_datagrams_to_6783_and_6784_are_dropped_while_peers_carry_traffic() {
    let Some(mut net) =
        common::test_net_with_python("strangers_datagrams_to_6783_and_6784_are_dropped")
    else {
        return;
    };
    if std::process::Command::new("nft")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os(weft_kernel_dp::testnet::REQUIRED_ENV).is_none(),
            "peer_filter: nft is not installed"
        );
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED peer_filter: nft is not installed"
        );
        return;
    }
    let ([ha, hb, hx], [ip_a, ip_b, _]) = underlay_hosts(&mut net, ["a", "b", "x"]);
    let (ca, cb) = (net.add_ns("ca").unwrap(), net.add_ns("cb").unwrap());
    // Sleeve only: the fast path does not carry pings in every VM (the filter on 6784
    // is the same either way: it drops before any socket or VXLAN device).
    let a = Router::start(&mut net, &ha, &Opts::sleeve());
    let b = Router::start(&mut net, &hb, &Opts::sleeve_to(&[ip_a]));
    a.attach(&ca, "10.32.1.1/12");
    b.attach(&cb, "10.32.2.1/12");
    // b's sleeve heartbeats pass a's filter: the path is up.
    a.wait_until(Duration::from_secs(20), "sleeve path to b up", |r| {
        path_up(&r.datapath())
    });
    assert!(
        common::eventually(Duration::from_secs(10), || set_has(&ha, &ip_b.to_string())),
        "b's address never got into a's peer set: {:?}",
        ha.run(&["nft", "list", "table", "inet", TABLE])
    );
    let dropped_before = strangers_dropped(&ha).expect("no strangers counter");
    let dp = a.datapath();
    let seen_before = dp["drops"]["malformed"].as_u64().unwrap_or(0)
        + dp["drops"]["unknown_peer"].as_u64().unwrap_or(0);

    // The stranger: sleeve-looking and VXLAN-looking junk to both ports.
    let script = format!(
        "import socket\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         for port in (6783, 6784):\n\
         \x20   for i in range({SENT_PER_PORT}):\n\
         \x20       s.sendto(bytes([8, 0, 0, 0]) + bytes(60), ('{ip_a}', port))\n"
    );
    let out = hx.exec(&["python3", "-c", &script]).unwrap();
    assert!(out.status.success(), "{out:?}");
    std::thread::sleep(Duration::from_millis(500));

    let dropped = strangers_dropped(&ha).unwrap() - dropped_before;
    assert!(
        dropped >= 2 * SENT_PER_PORT,
        "only {dropped} of the stranger's datagrams were dropped"
    );
    let dp = a.datapath();
    let seen = dp["drops"]["malformed"].as_u64().unwrap_or(0)
        + dp["drops"]["unknown_peer"].as_u64().unwrap_or(0);
    assert_eq!(
        seen, seen_before,
        "stranger datagrams reached the datapath: {dp}"
    );
    // `weft status` shows the filter and what it dropped.
    let st = a.json(&["status"]);
    assert!(
        st["peer_filter"]
            .as_str()
            .is_some_and(|s| s.starts_with("on:")),
        "{st}"
    );
    assert!(
        st["peer_filter_dropped"].as_u64() >= Some(dropped_before + dropped),
        "{st}"
    );
    // The peer still gets through: its datagrams keep arriving and the path stays up.
    let datagrams_in = dp["datagrams_in"].as_u64().unwrap_or(0);
    a.wait_until(Duration::from_secs(10), "more datagrams from b", |r| {
        let dp = r.datapath();
        dp["datagrams_in"].as_u64().unwrap_or(0) > datagrams_in && path_up(&dp)
    });
    // And the containers behind the two talk, both ways.
    assert!(
        ca.ping_until(ip("10.32.2.1"), Duration::from_secs(20)),
        "a -> b: no ping; a:\n{}",
        a.log_text()
    );
    assert!(cb.ping(ip("10.32.1.1"), 3), "b -> a: no ping");
    assert_eq!(
        strangers_dropped(&ha).unwrap() - dropped_before,
        dropped,
        "the peer's own datagrams were dropped"
    );

    // Stopped, the router takes its table with it.
    a.weft(&["stop"]).unwrap();
    assert!(
        common::eventually(Duration::from_secs(10), || !a.alive()),
        "a did not stop"
    );
    assert!(
        ha.run(&["nft", "list", "table", "inet", TABLE]).is_err(),
        "the table outlived the router"
    );
}
