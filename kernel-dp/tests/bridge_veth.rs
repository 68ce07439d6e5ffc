//! Root tests: a weft host's local setup (bridge, veth moved into container
//! namespaces as `ethwe`, addresses, routes) built with the library, checked
//! with `ip` and with real pings.

mod common;

use std::time::Duration;

use common::{BRIDGE, MTU_BYTES, TestResult, cidr, ip, plug, root_net, weft_bridge};
use weft_kernel_dp::{
    Error, MacAddr, Netlink,
    testnet::{Ns, TestNet},
};

/// A host with the bridge and containers c1 (10.32.0.1/24) and c2 (10.32.0.2/24) plugged
/// into it.
struct TwoPlugged {
    host: Ns,
    c1: Ns,
    c2: Ns,
    nl: Netlink,
    macs: [MacAddr; 2],
}

/// [`TwoPlugged`] in a new test network (which tears it all down when dropped), or
/// `None` where root tests cannot run.
async fn two_plugged() -> Result<Option<(TestNet, TwoPlugged)>, Box<dyn std::error::Error>> {
    let Some(mut net) = root_net()? else {
        return Ok(None);
    };
    let host = net.add_host("h")?;
    let c1 = net.add_ns("c1")?;
    let c2 = net.add_ns("c2")?;
    let nl = weft_bridge(&host).await?;
    let mac1 = plug(&nl, &c1, "1", cidr("10.32.0.1/24")).await?;
    let mac2 = plug(&nl, &c2, "2", cidr("10.32.0.2/24")).await?;
    let plugged = TwoPlugged {
        host,
        c1,
        c2,
        nl,
        macs: [mac1, mac2],
    };
    Ok(Some((net, plugged)))
}

#[tokio::test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
async fn bridge_and_veth_into_netns_carry_a_ping() -> TestResult {
    let Some((_net, p)) = two_plugged().await? else {
        return Ok(());
    };
    let TwoPlugged {
        host,
        c1,
        c2,
        nl,
        macs: [mac1, mac2],
    } = p;
    assert_ne!(mac1, mac2);

    // What the kernel now has, seen by an independent tool.
    let ethwe = c1.run(&["ip", "-d", "link", "show", "ethwe"])?;
    assert!(ethwe.contains(&format!("mtu {MTU_BYTES}")), "{ethwe}");
    assert!(ethwe.contains("veth"), "{ethwe}");
    assert!(ethwe.contains(&mac1.to_string()), "{ethwe}");
    let port = host.run(&["ip", "-d", "link", "show", "vethwl1"])?;
    assert!(port.contains(&format!("master {BRIDGE}")), "{port}");
    let br = host.run(&["ip", "-d", "link", "show", BRIDGE])?;
    assert!(br.contains("bridge"), "{br}");
    // The moved end left the host; the temporary name exists nowhere.
    assert!(nl.link("vethwg1").await?.is_none());
    let addrs = c1.run(&["ip", "-o", "addr", "show", "dev", "ethwe"])?;
    assert!(addrs.contains("10.32.0.1/24"), "{addrs}");

    // The library's own view agrees.
    let bridge = nl.link(BRIDGE).await?.expect("bridge");
    let port = nl.link("vethwl1").await?.expect("host end");
    assert_eq!(port.master_index, Some(bridge.index));
    assert!(port.up && bridge.up);
    assert_eq!(bridge.kind.as_deref(), Some("bridge"));
    assert_eq!(port.kind.as_deref(), Some("veth"));

    assert!(
        c1.ping_until(ip("10.32.0.2"), Duration::from_secs(5)),
        "c1 -> c2 over the bridge"
    );
    assert!(c2.ping(ip("10.32.0.1"), 2), "c2 -> c1");

    // Nothing leaked into the root namespace.
    let root = Netlink::new()?;
    for name in [BRIDGE, "vethwl1", "vethwg1", "ethwe"] {
        assert!(
            root.link(name).await?.is_none(),
            "{name} appeared in the root namespace"
        );
    }
    Ok(())
}

#[tokio::test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
async fn link_ops_report_errors_with_context() -> TestResult {
    let Some(mut net) = root_net()? else {
        return Ok(());
    };
    let host = net.add_host("h")?;
    let nl = weft_bridge(&host).await?;

    let again = nl.create_bridge(BRIDGE, MTU_BYTES).await.unwrap_err();
    assert!(again.is_exists(), "{again}");
    assert_eq!(
        again.to_string(),
        "create bridge weft: File exists (errno 17)"
    );

    assert!(nl.link("nope0").await?.is_none());
    let missing = nl.set_mtu("nope0", 1300).await.unwrap_err();
    assert!(
        matches!(missing, Error::LinkNotFound { .. }) && missing.is_not_found(),
        "{missing}"
    );
    assert_eq!(missing.to_string(), "set mtu: no link named nope0");

    let bad = nl
        .create_bridge("name-too-long-for-linux", 1500)
        .await
        .unwrap_err();
    assert!(matches!(bad, Error::InvalidArgument { .. }), "{bad}");

    let no_ns = nl
        .move_to_netns(BRIDGE, "/var/run/netns/weft-none", None)
        .await
        .unwrap_err();
    assert!(
        matches!(no_ns, Error::Netns { .. }) && no_ns.is_not_found(),
        "{no_ns}"
    );

    // MTU, down/up and delete do what they say.
    nl.set_mtu(BRIDGE, 1300).await?;
    nl.set_down(BRIDGE).await?;
    let link = nl.link(BRIDGE).await?.expect("bridge");
    assert_eq!((link.mtu_bytes, link.up), (1300, false));
    let shown = host.run(&["ip", "link", "show", BRIDGE])?;
    assert!(
        shown.contains("mtu 1300") && !shown.contains(",UP"),
        "{shown}"
    );
    nl.set_up(BRIDGE).await?;
    nl.set_mac(BRIDGE, "02:00:5e:ed:00:01".parse()?).await?;
    assert!(
        host.run(&["ip", "link", "show", BRIDGE])?
            .contains("02:00:5e:ed:00:01")
    );

    nl.delete_link(BRIDGE).await?;
    assert!(nl.link(BRIDGE).await?.is_none());
    assert!(nl.delete_link(BRIDGE).await.unwrap_err().is_not_found());
    Ok(())
}

#[tokio::test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
async fn addresses_and_routes() -> TestResult {
    let Some((_net, TwoPlugged { c1, c2, .. })) = two_plugged().await? else {
        return Ok(());
    };
    let n1 = Netlink::in_netns(c1.path())?;
    let n2 = Netlink::in_netns(c2.path())?;

    // IPv6 (added nodad, so usable at once) and a second IPv4 address.
    n1.add_address("ethwe", cidr("fd00:5eed::1/64")).await?;
    n2.add_address("ethwe", cidr("fd00:5eed::2/64")).await?;
    n2.add_address("ethwe", cidr("10.33.0.2/24")).await?;
    let listed = n2.addresses("ethwe").await?;
    for want in ["10.32.0.2/24", "10.33.0.2/24", "fd00:5eed::2/64"] {
        assert!(
            listed.contains(&cidr(want)),
            "{want} missing from {listed:?}"
        );
    }
    assert!(
        n2.add_address("ethwe", cidr("10.33.0.2/24"))
            .await
            .unwrap_err()
            .is_exists()
    );
    assert!(
        c1.ping_until(ip("fd00:5eed::2"), Duration::from_secs(5)),
        "IPv6 over the bridge"
    );

    // 10.33.0.0/24 is not on c1's link: unreachable until a route says how.
    assert!(!c1.ping(ip("10.33.0.2"), 1));
    n1.add_route(cidr("10.33.0.0/24"), Some(ip("10.32.0.2")), None)
        .await?;
    let routes = c1.run(&["ip", "route", "show"])?;
    assert!(
        routes.contains("10.33.0.0/24 via 10.32.0.2 dev ethwe"),
        "{routes}"
    );
    assert!(c1.ping(ip("10.33.0.2"), 2), "routed via 10.32.0.2");
    // A device route (scope link) as weft adds for the overlay range.
    n1.add_route(cidr("10.40.0.0/16"), None, Some("ethwe"))
        .await?;
    let routes = c1.run(&["ip", "route", "show"])?;
    let line = routes
        .lines()
        .find(|l| l.starts_with("10.40.0.0/16 dev ethwe"));
    assert!(line.is_some_and(|l| l.contains("scope link")), "{routes}");
    let mixed = n1
        .add_route(cidr("10.41.0.0/16"), Some(ip("fd00::1")), None)
        .await
        .unwrap_err();
    assert!(matches!(mixed, Error::InvalidArgument { .. }), "{mixed}");

    // Removing the address stops traffic to it.
    n2.del_address("ethwe", cidr("10.33.0.2/24")).await?;
    assert!(!n2.addresses("ethwe").await?.contains(&cidr("10.33.0.2/24")));
    assert!(!c1.ping(ip("10.33.0.2"), 2), "address removed");
    let gone = n2
        .del_address("ethwe", cidr("10.33.0.2/24"))
        .await
        .unwrap_err();
    assert_eq!(gone.errno(), Some(EADDRNOTAVAIL), "{gone}");
    Ok(())
}

/// Linux's errno for "address not on this interface".
const EADDRNOTAVAIL: i32 = 99;
