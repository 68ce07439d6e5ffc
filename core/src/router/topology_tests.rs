//! Router-level topology (and policy) tests that need to inject gossip a real peer would
//! never send: routers wired back to back in memory (as core/tests/common does), with
//! forged gossip handed to [`Router::on_topology_gossip`] (or `on_policy_gossip`) as if a
//! neighbour had relayed it.

use super::test_net::{Net, ORIGIN_MS, addr, router};
use super::*;
use crate::peer::PeerUid;
use crate::topology::{TOPOLOGY_VERSION_AHEAD_MAX_MS, TopologyStats};
use alloc::vec;

#[test]
fn a_relayed_forgery_at_u64_max_does_not_replace_the_real_peer() {
    // 3 - 0 - 1 - 2 in a line: router 0 reaches 2 through 1; the forgery comes from 3.
    let mut net = Net::new(4);
    net.routers[0].handle_command(net.now, Command::Connect(addr(1)));
    net.routers[1].handle_command(net.now, Command::Connect(addr(2)));
    net.routers[3].handle_command(net.now, Command::Connect(addr(0)));
    net.run(Duration::from_secs(2));
    let real = net.routers[2].name();
    assert_eq!(net.routers[0].next_hop(real), Some(net.routers[1].name()));
    let genuine = net.routers[0].topology().get(real).cloned().unwrap();
    // Versions start at the wall clock.
    assert!(genuine.version >= ORIGIN_MS);
    let forged = PeerEntry {
        name: real,
        uid: PeerUid(u64::MAX),
        version: u64::MAX,
        nickname: String::new(),
        conns: Vec::new(),
    };
    let via = net.conn(0, 3);
    let now = net.now;
    for m in gossip::encode_entries([&forged]) {
        net.routers[0].on_topology_gossip(now, via, &m);
    }
    net.run(Duration::from_secs(1));
    assert_eq!(net.routers[0].topology().get(real), Some(&genuine));
    assert_eq!(net.routers[0].next_hop(real), Some(net.routers[1].name()));
    assert_eq!(
        net.routers[0].topology().stats(),
        TopologyStats {
            refused_version_ahead: 1,
            ..TopologyStats::default()
        }
    );
    // Just inside the bound, the forgery wins for a moment; router 0 passes it on, the
    // real peer hears of it and out-bids it, and a second later everyone holds the real
    // entry again with its routes.
    let edge = PeerEntry {
        version: ORIGIN_MS + net.now.total_millis() + TOPOLOGY_VERSION_AHEAD_MAX_MS,
        ..forged
    };
    let now = net.now;
    for m in gossip::encode_entries([&edge]) {
        net.routers[0].on_topology_gossip(now, via, &m);
    }
    net.run(Duration::from_secs(1));
    for i in 0..4 {
        let held = net.routers[i].topology().get(real).cloned().unwrap();
        assert_eq!(held.uid, genuine.uid, "router {i}");
        assert!(held.version > edge.version, "router {i}");
    }
    assert_eq!(net.routers[0].next_hop(real), Some(net.routers[1].name()));
}

#[test]
fn a_restarted_router_outranks_its_previous_incarnation_at_once() {
    let mut net = Net::new(2);
    net.routers[0].handle_command(net.now, Command::Connect(addr(1)));
    net.run(Duration::from_secs(2));
    let name1 = net.routers[1].name();
    let old = net.routers[0].topology().get(name1).cloned().unwrap();
    // Router 1 dies (router 0's stream is reset) and restarts a few seconds later with
    // a new uid; router 0 dials it again on its own.
    let theirs = net.conn(0, 1);
    net.links.clear();
    net.routers[0].handle_command(net.now, Command::StreamClosed(theirs));
    net.now += Duration::from_secs(3);
    net.routers[1] = router(1, 99, net.now);
    let fresh = net.routers[1].topology().ourself().clone();
    assert_ne!(fresh.uid, old.uid);
    // Its very first entry already out-ranks the old one: no jump to learn first.
    assert!(fresh.version > old.version);
    net.run(Duration::from_secs(10));
    let held = net.routers[0].topology().get(name1).cloned().unwrap();
    assert_eq!(held.uid, fresh.uid);
    assert!(held.established_to(net.routers[0].name()));
    assert_eq!(net.routers[0].next_hop(name1), Some(name1));
    assert_eq!(net.routers[0].topology().stats(), TopologyStats::default());
}

#[test]
fn policy_gossip_is_merged_and_malformed_policy_gossip_costs_the_connection() {
    use crate::policy::table::Output;
    use crate::policy::{PolicyKey, PolicyTable, Selector};
    let mut net = Net::new(2);
    net.routers[0].handle_command(net.now, Command::Connect(addr(1)));
    net.run(Duration::from_secs(2));
    let name1 = net.routers[1].name();
    let via = net.conn(0, 1);
    // What router 1 would send: a policy applied there.
    let mut t = PolicyTable::new(name1, Duration::from_secs(30), net.now);
    let p = crate::policy::Policy {
        key: PolicyKey {
            namespace: "default".into(),
            name: "deny".into(),
        },
        pod_selector: Selector::all(),
        ingress_isolates: true,
        egress_isolates: false,
        ingress: Vec::new(),
        egress: Vec::new(),
    };
    t.apply(net.now, vec![p.clone()], Vec::new()).unwrap();
    let now = net.now;
    while let Some(Output::Neighbours { msg, .. }) = t.poll_output() {
        net.routers[0].on_policy_gossip(now, via, &msg);
    }
    assert_eq!(net.routers[0].policy_world().policies, vec![p]);
    assert_eq!(net.routers[0].connection_to(name1), Some(via));
    net.routers[0].on_policy_gossip(now, via, &[1, 1, 0, 1, 0xff]);
    assert_eq!(net.routers[0].stats().gossip_malformed, 1);
    assert_eq!(net.routers[0].policy().stats().malformed, 1);
    assert_eq!(net.routers[0].connection_to(name1), None);
}
