//! Services end to end (issue 22): `weft expose` from IPAM, and the seed's service
//! recipes. Real routers in test-host namespaces; an "outside" namespace plays the world.
//! Needs root; skipped with a printed reason otherwise. Test traffic stays between the
//! namespaces the tests made; every process is killed by its recorded pid when the
//! `TestNet` drops, also on failure.

mod common;

use common::{Opts, Router, test_net, underlay_hosts};
use std::time::Duration;

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
