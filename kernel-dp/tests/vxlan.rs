//! Root tests of the hand-built fast path: two (or three) test hosts on an
//! underlay, each with bridge `weft` + a VXLAN port, containers plugged into
//! the bridges, and only the FDB entries programmed through the library
//! deciding what crosses. Learning is off, so nothing works by accident.

mod common;

use std::{net::Ipv4Addr, time::Duration};

use common::{BRIDGE, TestResult, VNI, VXLAN, cidr, ip, plug, root_net, vxlan_port, weft_bridge};
use weft_kernel_dp::{
    FdbEntry, MacAddr, Netlink,
    testnet::{Ns, TestNet},
};

/// One test host with one container.
struct Site {
    host: Ns,
    container: Ns,
    nl: Netlink,
    underlay: Ipv4Addr,
    mac: MacAddr,
}

async fn site(net: &mut TestNet, n: u8) -> Result<Site, Box<dyn std::error::Error>> {
    let host = net.add_host(&format!("h{n}"))?;
    let container = net.add_ns(&format!("c{n}"))?;
    let underlay = net.underlay_attach(&host)?;
    let nl = weft_bridge(&host).await?;
    vxlan_port(&nl, underlay).await?;
    let mac = plug(
        &nl,
        &container,
        &n.to_string(),
        cidr(&format!("10.40.0.{n}/24")),
    )
    .await?;
    Ok(Site {
        host,
        container,
        nl,
        underlay,
        mac,
    })
}

/// Sites 1 to `N` in a new test network (which tears them down when dropped), or `None`
/// where root tests cannot run.
async fn sites<const N: usize>() -> Result<Option<(TestNet, [Site; N])>, Box<dyn std::error::Error>>
{
    let Some(mut net) = root_net()? else {
        return Ok(None);
    };
    let mut sites = Vec::with_capacity(N);
    for n in 1..=N {
        sites.push(site(&mut net, n as u8).await?);
    }
    let Ok(sites) = sites.try_into() else {
        unreachable!("N sites made")
    };
    Ok(Some((net, sites)))
}

fn overlay(n: u8) -> std::net::IpAddr {
    ip(&format!("10.40.0.{n}"))
}

/// The all-zero (flood) entries of the VXLAN device.
async fn flood_entries(nl: &Netlink) -> Result<Vec<FdbEntry>, weft_kernel_dp::Error> {
    let all = nl.fdb_entries(VXLAN).await?;
    Ok(all.into_iter().filter(|e| e.mac.is_zero()).collect())
}

fn fdb_show(host: &Ns) -> String {
    host.run(&["bridge", "fdb", "show", "dev", VXLAN])
        .expect("bridge fdb show")
}

/// Static ARP entry so a test of unicast forwarding does not depend on flooding.
fn static_neigh(container: &Ns, n: u8, mac: MacAddr) {
    container
        .run(&[
            "ip",
            "neigh",
            "replace",
            &overlay(n).to_string(),
            "lladdr",
            &mac.to_string(),
            "dev",
            "ethwe",
        ])
        .expect("ip neigh replace");
}

#[tokio::test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
async fn unicast_fdb_entries_carry_a_ping_and_removal_stops_it() -> TestResult {
    let Some((_net, [s1, s2])) = sites().await? else {
        return Ok(());
    };

    // The device is what weft asked for.
    let dev = s1.host.run(&["ip", "-d", "link", "show", VXLAN])?;
    for want in [
        format!("vxlan id {VNI}"),
        format!("local {}", s1.underlay),
        "dstport 6784".to_string(),
        "nolearning".to_string(),
        format!("master {BRIDGE}"),
    ] {
        assert!(dev.contains(&want), "missing {want:?} in:\n{dev}");
    }
    assert!(
        !dev.lines()
            .any(|l| l.contains("vxlan id") && l.contains("group")),
        "no multicast group expected:\n{dev}"
    );

    static_neigh(&s1.container, 2, s2.mac);
    static_neigh(&s2.container, 1, s1.mac);
    // No FDB entries yet: a VXLAN device without entries (and with no default
    // destination) drops everything.
    assert!(
        !s1.container.ping(overlay(2), 2),
        "no FDB entries, yet traffic crossed"
    );

    s1.nl.fdb_add(VXLAN, s2.mac, s2.underlay.into()).await?;
    s2.nl.fdb_add(VXLAN, s1.mac, s1.underlay.into()).await?;
    let shown = fdb_show(&s1.host);
    let want = format!("{} dst {} self permanent", s2.mac, s2.underlay);
    assert!(shown.contains(&want), "missing {want:?} in:\n{shown}");
    let entries = s1.nl.fdb_entries(VXLAN).await?;
    assert!(
        entries.contains(&FdbEntry {
            mac: s2.mac,
            dst: Some(s2.underlay.into()),
            permanent: true,
            is_self: true,
            vni: None,
        }),
        "{entries:?}"
    );

    assert!(
        s1.container.ping_until(overlay(2), Duration::from_secs(5)),
        "c1 -> c2 over VXLAN"
    );
    assert!(s2.container.ping(overlay(1), 2), "c2 -> c1 over VXLAN");

    // Replacing is idempotent (weft re-announces MACs).
    s1.nl.fdb_add(VXLAN, s2.mac, s2.underlay.into()).await?;

    // Removing c2's entry on h1 stops c1 -> c2 (no flood entry to fall back to).
    s1.nl.fdb_del(VXLAN, s2.mac, None).await?;
    assert!(!fdb_show(&s1.host).contains(&want));
    assert!(
        !s1.nl
            .fdb_entries(VXLAN)
            .await?
            .iter()
            .any(|e| e.mac == s2.mac && e.is_self)
    );
    assert!(
        !s1.container.ping(overlay(2), 3),
        "FDB entry removed, yet c1 reached c2"
    );
    let again = s1.nl.fdb_del(VXLAN, s2.mac, None).await.unwrap_err();
    assert!(again.is_not_found(), "{again}");

    // And putting it back restores the path: the failure was the FDB.
    s1.nl.fdb_add(VXLAN, s2.mac, s2.underlay.into()).await?;
    assert!(
        s1.container.ping_until(overlay(2), Duration::from_secs(5)),
        "entry restored"
    );
    Ok(())
}

#[tokio::test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
async fn flood_entries_carry_broadcast_to_every_peer() -> TestResult {
    let Some((_net, [s1, s2, s3])) = sites().await? else {
        return Ok(());
    };

    // Unicast entries alone: ARP (broadcast) has nowhere to go.
    s1.nl.fdb_add(VXLAN, s2.mac, s2.underlay.into()).await?;
    s2.nl.fdb_add(VXLAN, s1.mac, s1.underlay.into()).await?;
    assert!(
        !s1.container.ping(overlay(2), 2),
        "ARP crossed without a flood entry"
    );

    // Flood entries: h1 floods to h2 and h3 (appended to one all-zero entry),
    // h2 and h3 flood back to h1.
    for peer in [&s2, &s3] {
        s1.nl.fdb_append_flood(VXLAN, peer.underlay.into()).await?;
        peer.nl.fdb_append_flood(VXLAN, s1.underlay.into()).await?;
    }
    // Appending a peer twice changes nothing.
    s1.nl.fdb_append_flood(VXLAN, s2.underlay.into()).await?;
    let shown = fdb_show(&s1.host);
    for peer in [&s2, &s3] {
        let want = format!("00:00:00:00:00:00 dst {} self permanent", peer.underlay);
        assert_eq!(
            shown.matches(&want).count(),
            1,
            "want one {want:?} in:\n{shown}"
        );
    }
    let floods = flood_entries(&s1.nl).await?;
    assert_eq!(floods.len(), 2, "{floods:?}");

    // ARP now resolves across, so unicast pings work to both remote containers
    // (to c3 by flooding unknown unicast: h1 has no unicast entry for c3).
    assert!(
        s1.container.ping_until(overlay(2), Duration::from_secs(5)),
        "c1 -> c2 after ARP flood"
    );
    assert!(
        s1.container.ping_until(overlay(3), Duration::from_secs(5)),
        "c1 -> c3 via flood only"
    );
    let neigh = s1
        .container
        .run(&["ip", "neigh", "show", &overlay(3).to_string()])?;
    assert!(
        neigh.contains(&s3.mac.to_string()),
        "ARP learnt c3's MAC: {neigh}"
    );

    // A ping to the broadcast address reaches both remote containers.
    for c in [&s2.container, &s3.container] {
        c.set_sysctl("net/ipv4/icmp_echo_ignore_broadcasts", "0")?;
    }
    let text = s1
        .container
        .ping_broadcast(Ipv4Addr::new(10, 40, 0, 255), 3)?;
    for n in [2, 3] {
        assert!(
            text.contains(&format!("from {}", overlay(n))),
            "no broadcast reply from c{n}:\n{text}"
        );
    }

    // Removing one peer from the flood entry keeps the other.
    s1.nl
        .fdb_del(VXLAN, MacAddr::ZERO, Some(s3.underlay.into()))
        .await?;
    let floods = flood_entries(&s1.nl).await?;
    assert_eq!(
        floods.iter().map(|e| e.dst).collect::<Vec<_>>(),
        vec![Some(s2.underlay.into())],
        "{floods:?}\n{}",
        fdb_show(&s1.host)
    );
    // c3 was reachable only by flooding: now it is not, c2 still is.
    assert!(
        !s1.container.ping(overlay(3), 3),
        "c3 still reached after its flood entry went"
    );
    assert!(
        s1.container.ping(overlay(2), 2),
        "c2 lost with c3's flood entry"
    );
    Ok(())
}

#[test]
fn ovs_probe_matches_the_module_state() {
    // The genetlink family exists exactly when the openvswitch module is loaded.
    let loaded = std::path::Path::new("/sys/module/openvswitch").exists();
    let available = weft_kernel_dp::ovs_datapath_available();
    println!("openvswitch module loaded: {loaded}; ovs_datapath family: {available}");
    assert_eq!(available, loaded);
}
