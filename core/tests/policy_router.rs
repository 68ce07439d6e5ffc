//! Policy replication through the Router: routers wired back to back (streams are byte
//! pipes, time advanced by hand). A policy applied on one router is in force on a router
//! two hops away, a late joiner gets everything, an unreachable router's pods leave the
//! world, and a partition heals with both sides' changes merged.

mod common;

use common::Net;
use std::net::Ipv4Addr;
use weft_core::conn::ConnId;
use weft_core::peer::PeerName;
use weft_core::policy::{Labels, NamedPort, Pod, Policy, PolicyKey, Proto, Rule, Selector, World};
use weft_core::router::{Command, Config};
use weft_core::time::Duration;

fn config(i: usize) -> Config {
    let mut c = Config::new(PeerName::from_u64(0x100 + i as u64), 6783);
    c.gossip_interval = Duration::from_secs(30);
    c.discovery = false;
    c
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    let mut l = Labels::new();
    for (k, v) in pairs {
        l.insert(k, v).unwrap();
    }
    l
}

fn key(name: &str) -> PolicyKey {
    PolicyKey {
        namespace: "default".into(),
        name: name.into(),
    }
}

/// Isolates `app=<app>` for ingress and lets in what `from` selects.
fn policy(name: &str, app: &str, from: &str) -> Policy {
    Policy {
        key: key(name),
        pod_selector: Selector {
            match_labels: labels(&[("app", app)]),
            match_expressions: Vec::new(),
        },
        ingress_isolates: true,
        egress_isolates: false,
        ingress: vec![Rule {
            peers: vec![weft_core::policy::Peer::Pods {
                pods: Some(Selector {
                    match_labels: labels(&[("app", from)]),
                    match_expressions: Vec::new(),
                }),
                namespaces: None,
            }],
            ports: Vec::new(),
        }],
        egress: Vec::new(),
    }
}

fn pod(last: u8, app: &str) -> Pod {
    Pod {
        addrs: vec![Ipv4Addr::new(10, 32, 0, last)],
        namespace: "default".into(),
        labels: labels(&[("app", app)]),
        ports: vec![NamedPort {
            name: "http".into(),
            proto: Proto::Tcp,
            port: 80,
        }],
    }
}

fn policy_names(w: &World) -> Vec<String> {
    w.policies.iter().map(|p| p.key.name.clone()).collect()
}

fn pod_addrs(w: &World) -> Vec<u8> {
    let mut v: Vec<u8> = w.pods.iter().map(|p| p.addrs[0].octets()[3]).collect();
    v.sort();
    v
}

impl Net {
    fn new(n: usize) -> Self {
        Self::from_configs((0..n).map(config), 11)
    }

    fn apply(&mut self, i: usize, p: Vec<Policy>) {
        self.routers[i]
            .policy_apply(self.now, p, Vec::new())
            .unwrap();
    }

    fn attach(&mut self, i: usize, id: &str, p: Pod) {
        let now = self.now;
        assert_eq!(self.routers[i].policy_set_pod(now, id, Some(p)), Ok(true));
    }

    fn world(&mut self, i: usize) -> World {
        self.routers[i].policy_world()
    }

    /// Keeps `i` and `j` apart: no new streams, and the ones they have are reset.
    fn cut(&mut self, i: usize, j: usize) {
        self.blocked.push((i, j));
        let ends: Vec<((usize, ConnId), (usize, ConnId))> = self
            .links
            .iter()
            .filter(|((a, _), (b, _))| (*a, *b) == (i, j) || (*a, *b) == (j, i))
            .map(|(x, y)| (*x, *y))
            .collect();
        for ((a, ca), _) in ends {
            self.links.remove(&(a, ca));
            self.routers[a].handle_command(self.now, Command::StreamClosed(ca));
        }
    }
}

#[test]
fn applied_on_one_router_in_force_two_hops_away_and_on_a_late_joiner() {
    let mut net = Net::new(3);
    net.connect(1, 0);
    net.connect(2, 1);
    net.run(Duration::from_secs(1));
    let g2 = net.routers[2].policy_generation();
    net.apply(0, vec![policy("web", "web", "client")]);
    net.attach(0, "c-web", pod(2, "web"));
    net.attach(2, "c-client", pod(3, "client"));
    // Well under the 30 s anti-entropy period: news goes out at once and floods on.
    net.run(Duration::from_millis(200));
    assert!(net.routers[2].policy_generation() != g2);
    for i in 0..3 {
        let w = net.world(i);
        assert_eq!(policy_names(&w), vec!["web"], "router {i}");
        assert_eq!(pod_addrs(&w), vec![2, 3], "router {i}");
    }
    // A delete anywhere holds everywhere.
    assert_eq!(net.routers[2].policy_delete(net.now, &key("web")), Ok(true));
    net.run(Duration::from_millis(200));
    assert!(net.world(0).policies.is_empty());
    // A late joiner, through router 2 only, gets the full state on connect.
    net.apply(1, vec![policy("db", "db", "web")]);
    net.run(Duration::from_millis(200));
    let mut net4 = net;
    net4.routers.push(common::router(config(3), 99, net4.now));
    net4.connect(3, 2);
    net4.run(Duration::from_secs(1));
    let w = net4.world(3);
    assert_eq!(policy_names(&w), vec!["db"]);
    assert_eq!(pod_addrs(&w), vec![2, 3]);
    assert_eq!(w, net4.world(0));
    assert_eq!(net4.routers[3].policy_status().policy_tombstones, 1);
}

#[test]
fn partition_heals_with_both_sides_changes_merged() {
    let mut net = Net::new(3);
    net.connect(1, 0);
    net.connect(2, 0);
    net.connect(2, 1);
    net.run(Duration::from_secs(2));
    net.apply(0, vec![policy("old", "web", "client")]);
    for i in 0..3 {
        net.attach(i, "c", pod(i as u8 + 1, "web"));
    }
    net.run(Duration::from_millis(200));
    assert_eq!(pod_addrs(&net.world(0)), vec![1, 2, 3]);
    // Router 2 on its own for longer than the peer GC grace (60 s).
    net.cut(0, 2);
    net.cut(1, 2);
    net.run(Duration::from_secs(1));
    assert_eq!(
        pod_addrs(&net.world(0)),
        vec![1, 2],
        "an unreachable router's pods leave the world at once"
    );
    net.apply(0, vec![policy("left", "web", "a")]);
    net.routers[0]
        .policy_apply(
            net.now,
            Vec::new(),
            vec![("default".into(), labels(&[("side", "left")]))],
        )
        .unwrap();
    net.run(Duration::from_secs(1));
    net.apply(2, vec![policy("right", "db", "b")]);
    assert_eq!(net.routers[2].policy_delete(net.now, &key("old")), Ok(true));
    net.run(Duration::from_secs(70));
    assert_eq!(
        net.routers[0]
            .policy_status()
            .stats
            .pods_of_dead_peers_dropped,
        1,
        "the peer GC removed router 2 and its pod"
    );
    assert_eq!(policy_names(&net.world(0)), vec!["left", "old"]);
    assert_eq!(policy_names(&net.world(2)), vec!["right"]);
    // Heal.
    net.blocked.clear();
    net.connect(2, 0);
    net.connect(2, 1);
    net.run(Duration::from_secs(5));
    let w = net.world(0);
    assert_eq!(policy_names(&w), vec!["left", "right"], "the delete held");
    assert_eq!(pod_addrs(&w), vec![1, 2, 3], "router 2's pod is back");
    assert_eq!(
        w.namespace_labels("default").get("side"),
        Some("left"),
        "namespace labels crossed too"
    );
    for i in 1..3 {
        assert_eq!(net.world(i), w, "router {i}");
    }
}

#[test]
fn state_file_survives_a_restart_and_is_merged_like_gossip() {
    let mut net = Net::new(2);
    net.connect(1, 0);
    net.run(Duration::from_secs(1));
    net.apply(0, vec![policy("a", "web", "x"), policy("b", "db", "y")]);
    net.run(Duration::from_millis(200));
    assert_eq!(net.routers[1].policy_delete(net.now, &key("b")), Ok(true));
    net.run(Duration::from_millis(200));
    let file = net.routers[0].policy_export_shared();
    // Router 0 restarts alone and loads its file: the policy in force is back, and so
    // is the deletion it had learned.
    let mut fresh = common::router(config(0), 5, net.now);
    assert_eq!(fresh.policy_import_shared(net.now, &file), Ok(2));
    assert_eq!(policy_names(&fresh.policy_world()), vec!["a"]);
    assert!(fresh.policy_import_shared(net.now, b"garbage").is_err());
}
