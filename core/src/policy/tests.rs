//! Unit tests of the evaluator and the compiler, one semantic point each; every check asks
//! both and wants them to agree (and the compiled chains to keep their invariants).

mod chains;
mod prop;

use super::compile::compile;
use super::eval::{Decision, Side, evaluate};
use super::*;
use alloc::string::ToString;
use alloc::vec;
use alloc::vec::Vec;

const TCP: u8 = 6;
const UDP: u8 = 17;
const SCTP: u8 = 132;
const ICMP: u8 = 1;

fn a(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn labels(kv: &[(&str, &str)]) -> Labels {
    let mut l = Labels::new();
    for (k, v) in kv {
        l.insert(k, v).unwrap();
    }
    l
}

fn pod(ns: &str, addr: &str, kv: &[(&str, &str)]) -> Pod {
    Pod {
        addrs: vec![a(addr)],
        namespace: ns.to_string(),
        labels: labels(kv),
        ports: Vec::new(),
    }
}

fn named(mut p: Pod, name: &str, proto: Proto, port: u16) -> Pod {
    p.ports.push(NamedPort {
        name: name.to_string(),
        proto,
        port,
    });
    p
}

fn sel(kv: &[(&str, &str)]) -> Selector {
    Selector {
        match_labels: labels(kv),
        match_expressions: Vec::new(),
    }
}

fn req(key: &str, op: Operator, values: &[&str]) -> Requirement {
    Requirement {
        key: key.to_string(),
        op,
        values: values.iter().map(|v| v.to_string()).collect(),
    }
}

/// A policy of `ns` selecting `pods`, isolating ingress only, without rules.
fn policy(ns: &str, name: &str, pods: Selector) -> Policy {
    Policy {
        key: PolicyKey {
            namespace: ns.to_string(),
            name: name.to_string(),
        },
        pod_selector: pods,
        ingress_isolates: true,
        egress_isolates: false,
        ingress: Vec::new(),
        egress: Vec::new(),
    }
}

fn from(peers: Vec<Peer>, ports: Vec<Port>) -> Rule {
    Rule { peers, ports }
}

fn pods_peer(pods: Option<Selector>, namespaces: Option<Selector>) -> Peer {
    Peer::Pods { pods, namespaces }
}

fn block(cidr: &str, except: &[&str]) -> Peer {
    let c = |s: &str| {
        let (addr, len) = s.split_once('/').unwrap();
        Cidr::new(a(addr), len.parse().unwrap()).unwrap()
    };
    Peer::Block(IpBlock {
        cidr: c(cidr),
        except: except.iter().map(|e| c(e)).collect(),
    })
}

fn port(proto: Proto, port: u16) -> Port {
    Port {
        proto,
        port: PortMatch::Range { port, end: port },
    }
}

fn world(policies: Vec<Policy>, pods: Vec<Pod>) -> World {
    for p in &policies {
        p.check().unwrap();
    }
    World {
        policies,
        namespaces: BTreeMap::new(),
        pods,
    }
}

/// Evaluates, compiles (every pod local) and checks that both agree; the decision.
fn decide(w: &World, src: &str, dst: &str, proto: u8, port: u16) -> Decision {
    let d = evaluate(w, a(src), a(dst), proto, port);
    let rs = compile(w, &|_| true);
    chains::check(&rs).unwrap();
    assert_eq!(
        rs.allows(a(src), a(dst), proto, port),
        d.allowed(),
        "{src} -> {dst} {proto}/{port}: {d}"
    );
    d
}

fn ok(w: &World, src: &str, dst: &str, proto: u8, port: u16) -> bool {
    decide(w, src, dst, proto, port).allowed()
}

fn key(ns: &str, name: &str) -> PolicyKey {
    PolicyKey {
        namespace: ns.to_string(),
        name: name.to_string(),
    }
}

fn two_web_one_db() -> Vec<Pod> {
    vec![
        pod("ns", "10.32.0.1", &[("app", "web")]),
        pod("ns", "10.32.0.2", &[("app", "web")]),
        pod("ns", "10.32.0.3", &[("app", "db")]),
        pod("other", "10.32.0.4", &[("app", "web")]),
    ]
}

#[test]
fn no_policy_allows_everything() {
    let w = world(Vec::new(), two_web_one_db());
    let d = decide(&w, "10.32.0.1", "10.32.0.3", TCP, 5432);
    assert_eq!(
        (d.egress, d.ingress),
        (Side::NotIsolated, Side::NotIsolated)
    );
    assert!(ok(&w, "10.32.0.1", "10.9.9.9", ICMP, 0));
    assert!(compile(&w, &|_| true).chains.is_empty());
}

#[test]
fn selected_pod_is_denied_by_default() {
    let w = world(
        vec![policy("ns", "deny", sel(&[("app", "db")]))],
        two_web_one_db(),
    );
    let d = decide(&w, "10.32.0.1", "10.32.0.3", TCP, 5432);
    assert_eq!(
        d.ingress,
        Side::Denied {
            policies: vec![key("ns", "deny")]
        }
    );
    assert_eq!(d.egress, Side::NotIsolated);
    for proto in [TCP, UDP, SCTP, ICMP] {
        assert!(!ok(&w, "10.32.0.4", "10.32.0.3", proto, 1));
        assert!(!ok(&w, "10.1.2.3", "10.32.0.3", proto, 1));
    }
    // Out of it (ingress isolation only), and between the others: open.
    assert!(ok(&w, "10.32.0.3", "10.32.0.1", TCP, 80));
    assert!(ok(&w, "10.32.0.2", "10.32.0.1", TCP, 80));
}

#[test]
fn empty_pod_selector_selects_the_whole_namespace_only() {
    let w = world(vec![policy("ns", "all", Selector::all())], two_web_one_db());
    for dst in ["10.32.0.1", "10.32.0.2", "10.32.0.3"] {
        assert!(!ok(&w, "10.32.0.4", dst, TCP, 80));
    }
    assert!(
        ok(&w, "10.32.0.1", "10.32.0.4", TCP, 80),
        "other namespace not selected"
    );
}

#[test]
fn pod_selector_peer_is_of_the_policy_namespace() {
    let mut p = policy("ns", "p", sel(&[("app", "db")]));
    p.ingress.push(from(
        vec![pods_peer(Some(sel(&[("app", "web")])), None)],
        Vec::new(),
    ));
    let w = world(vec![p], two_web_one_db());
    let d = decide(&w, "10.32.0.1", "10.32.0.3", UDP, 53);
    assert_eq!(
        d.ingress,
        Side::Allowed {
            policy: key("ns", "p"),
            rule: 0
        }
    );
    assert!(ok(&w, "10.32.0.2", "10.32.0.3", ICMP, 0));
    assert!(
        !ok(&w, "10.32.0.4", "10.32.0.3", TCP, 80),
        "app=web of another namespace"
    );
    assert!(
        !ok(&w, "10.32.0.3", "10.32.0.3", TCP, 80),
        "itself is no web"
    );
}

#[test]
fn namespace_selector_alone_and_with_pod_selector() {
    let mut pods = two_web_one_db();
    pods.push(pod("third", "10.32.0.5", &[("app", "db")]));
    pods.push(pod("third", "10.32.0.6", &[("app", "web")]));
    let mut only_ns = policy("ns", "a", sel(&[("app", "db")]));
    only_ns.ingress.push(from(
        vec![pods_peer(None, Some(sel(&[("team", "t")])))],
        Vec::new(),
    ));
    let mut w = world(vec![only_ns], pods);
    w.namespaces
        .insert("third".to_string(), labels(&[("team", "t")]));
    assert!(ok(&w, "10.32.0.5", "10.32.0.3", TCP, 80));
    assert!(ok(&w, "10.32.0.6", "10.32.0.3", TCP, 80));
    assert!(!ok(&w, "10.32.0.4", "10.32.0.3", TCP, 80));
    assert!(
        !ok(&w, "10.32.0.1", "10.32.0.3", TCP, 80),
        "own namespace not team=t"
    );

    // Both: web pods of team=t namespaces only.
    let both = pods_peer(Some(sel(&[("app", "web")])), Some(sel(&[("team", "t")])));
    w.policies[0].ingress[0].peers = vec![both];
    assert!(ok(&w, "10.32.0.6", "10.32.0.3", TCP, 80));
    assert!(!ok(&w, "10.32.0.5", "10.32.0.3", TCP, 80), "db of team=t");
    assert!(!ok(&w, "10.32.0.4", "10.32.0.3", TCP, 80), "web elsewhere");

    // The implied name label.
    let by_name = sel(&[(NAMESPACE_NAME_LABEL, "other")]);
    w.policies[0].ingress[0].peers = vec![pods_peer(None, Some(by_name))];
    assert!(ok(&w, "10.32.0.4", "10.32.0.3", TCP, 80));
    assert!(!ok(&w, "10.32.0.6", "10.32.0.3", TCP, 80));
}

#[test]
fn match_expressions_all_four_operators() {
    let l = labels(&[("app", "web"), ("tier", "front")]);
    assert!(req("app", Operator::In, &["db", "web"]).matches(&l));
    assert!(!req("app", Operator::In, &["db"]).matches(&l));
    assert!(!req("x", Operator::In, &["db"]).matches(&l));
    assert!(req("app", Operator::NotIn, &["db"]).matches(&l));
    assert!(!req("app", Operator::NotIn, &["web"]).matches(&l));
    assert!(
        req("x", Operator::NotIn, &["web"]).matches(&l),
        "absent key is not in"
    );
    assert!(req("tier", Operator::Exists, &[]).matches(&l));
    assert!(!req("x", Operator::Exists, &[]).matches(&l));
    assert!(req("x", Operator::DoesNotExist, &[]).matches(&l));
    assert!(!req("tier", Operator::DoesNotExist, &[]).matches(&l));

    // In a policy: selects pods with tier (any value) and app not db.
    let pods = vec![
        pod("ns", "10.32.0.1", &[("app", "web"), ("tier", "a")]),
        pod("ns", "10.32.0.2", &[("app", "db"), ("tier", "a")]),
        pod("ns", "10.32.0.3", &[("app", "web")]),
        pod("ns", "10.32.0.4", &[("tier", "")]),
    ];
    let s = Selector {
        match_labels: Labels::new(),
        match_expressions: vec![
            req("tier", Operator::Exists, &[]),
            req("app", Operator::NotIn, &["db"]),
        ],
    };
    let w = world(vec![policy("ns", "e", s)], pods);
    let isolated: Vec<bool> = (1..=4)
        .map(|i| !ok(&w, "10.9.9.9", &alloc::format!("10.32.0.{i}"), TCP, 1))
        .collect();
    assert_eq!(isolated, [true, false, false, true]);
}

#[test]
fn ip_block_with_except() {
    let mut p = policy("ns", "b", sel(&[("app", "db")]));
    p.ingress.push(from(
        vec![block("10.32.0.0/28", &["10.32.0.4/30", "10.32.0.9/32"])],
        Vec::new(),
    ));
    let w = world(vec![p], two_web_one_db());
    assert!(
        ok(&w, "10.32.0.1", "10.32.0.3", TCP, 80),
        "pod in the block"
    );
    assert!(
        !ok(&w, "10.32.0.4", "10.32.0.3", TCP, 80),
        "pod in the hole"
    );
    assert!(!ok(&w, "10.32.0.7", "10.32.0.3", TCP, 80));
    assert!(
        ok(&w, "10.32.0.8", "10.32.0.3", TCP, 80),
        "not a pod, in the block"
    );
    assert!(!ok(&w, "10.32.0.9", "10.32.0.3", TCP, 80));
    assert!(ok(&w, "10.32.0.15", "10.32.0.3", TCP, 80));
    assert!(!ok(&w, "10.32.0.16", "10.32.0.3", TCP, 80));
    let rs = compile(&w, &|_| true);
    let c = &rs.chains[rs.ingress[&a("10.32.0.3")]];
    let spans: Vec<(u32, u32)> = c.any.iter().map(|e| e.addrs).collect();
    let n = |s| u32::from(a(s));
    assert_eq!(
        spans,
        [
            (n("10.32.0.0"), n("10.32.0.3")),
            (n("10.32.0.8"), n("10.32.0.8")),
            (n("10.32.0.10"), n("10.32.0.15"))
        ]
    );
}

#[test]
fn named_ports_resolve_on_the_destination() {
    let pods = vec![
        named(
            pod("ns", "10.32.0.1", &[("app", "web")]),
            "http",
            Proto::Tcp,
            8080,
        ),
        named(
            pod("ns", "10.32.0.2", &[("app", "web")]),
            "http",
            Proto::Tcp,
            80,
        ),
        pod("ns", "10.32.0.3", &[("app", "web")]),
        named(
            pod("ns", "10.32.0.4", &[("app", "client")]),
            "http",
            Proto::Udp,
            80,
        ),
    ];
    let http = Port {
        proto: Proto::Tcp,
        port: PortMatch::Named("http".to_string()),
    };
    // Ingress: the selected pod's own number.
    let mut p = policy("ns", "in", sel(&[("app", "web")]));
    p.ingress.push(from(Vec::new(), vec![http.clone()]));
    let w = world(vec![p], pods.clone());
    assert!(ok(&w, "10.32.0.4", "10.32.0.1", TCP, 8080));
    assert!(!ok(&w, "10.32.0.4", "10.32.0.1", TCP, 80));
    assert!(ok(&w, "10.32.0.4", "10.32.0.2", TCP, 80));
    assert!(
        !ok(&w, "10.32.0.4", "10.32.0.2", UDP, 80),
        "protocol is part of the name"
    );
    assert!(
        !ok(&w, "10.32.0.4", "10.32.0.3", TCP, 80),
        "no such name: nothing"
    );
    assert_ne!(
        compile(&w, &|_| true).ingress[&a("10.32.0.1")],
        compile(&w, &|_| true).ingress[&a("10.32.0.2")]
    );

    // Egress: the destination pod's number; a non-pod destination has no names.
    let mut p = policy("ns", "out", sel(&[("app", "client")]));
    (p.ingress_isolates, p.egress_isolates) = (false, true);
    p.egress
        .push(from(vec![block("10.32.0.0/24", &[])], vec![http]));
    let w = world(vec![p], pods);
    assert!(ok(&w, "10.32.0.4", "10.32.0.1", TCP, 8080));
    assert!(!ok(&w, "10.32.0.4", "10.32.0.1", TCP, 80));
    assert!(ok(&w, "10.32.0.4", "10.32.0.2", TCP, 80));
    assert!(!ok(&w, "10.32.0.4", "10.32.0.3", TCP, 80));
    assert!(!ok(&w, "10.32.0.4", "10.32.0.9", TCP, 80), "not a pod");
}

#[test]
fn end_port_ranges_are_inclusive_and_any_is_every_port() {
    let mut p = policy("ns", "r", sel(&[("app", "db")]));
    let range = Port {
        proto: Proto::Tcp,
        port: PortMatch::Range {
            port: 8000,
            end: 8010,
        },
    };
    let every_udp = Port {
        proto: Proto::Udp,
        port: PortMatch::Any,
    };
    p.ingress.push(from(
        Vec::new(),
        vec![range, every_udp, port(Proto::Sctp, 9)],
    ));
    let w = world(vec![p], two_web_one_db());
    let d = "10.32.0.3";
    let tcp: Vec<bool> = [7999, 8000, 8005, 8010, 8011]
        .iter()
        .map(|&n| ok(&w, "10.32.0.1", d, TCP, n))
        .collect();
    assert_eq!(tcp, [false, true, true, true, false]);
    assert!(ok(&w, "10.32.0.1", d, UDP, 0) && ok(&w, "10.32.0.1", d, UDP, 65535));
    assert!(ok(&w, "10.32.0.1", d, SCTP, 9) && !ok(&w, "10.32.0.1", d, SCTP, 8000));
    assert!(
        !ok(&w, "10.32.0.1", d, ICMP, 8000),
        "a rule with ports allows no portless protocol"
    );
    let d = decide(&w, "10.32.0.1", d, TCP, 7999);
    assert_eq!(
        d.to_string(),
        "denied: ingress of 10.32.0.3 (namespace ns) isolated by ns/r; no rule allows tcp/7999"
    );
}

#[test]
fn egress_only_policy_leaves_ingress_open() {
    let mut p = policy("ns", "e", sel(&[("app", "web")]));
    (p.ingress_isolates, p.egress_isolates) = (false, true);
    p.egress.push(from(
        vec![pods_peer(Some(sel(&[("app", "db")])), None)],
        vec![port(Proto::Tcp, 5432)],
    ));
    let w = world(vec![p], two_web_one_db());
    assert!(ok(&w, "10.32.0.1", "10.32.0.3", TCP, 5432));
    assert!(!ok(&w, "10.32.0.1", "10.32.0.3", TCP, 5433));
    assert!(!ok(&w, "10.32.0.1", "10.32.0.2", TCP, 5432));
    assert!(
        !ok(&w, "10.32.0.1", "10.9.9.9", UDP, 53),
        "egress to a non-pod"
    );
    assert!(
        ok(&w, "10.32.0.3", "10.32.0.1", TCP, 80),
        "ingress of web open"
    );
    assert!(ok(&w, "10.9.9.9", "10.32.0.1", TCP, 80));
    let d = decide(&w, "10.32.0.1", "10.32.0.3", TCP, 5432);
    assert_eq!(
        d.to_string(),
        "allowed: egress allowed by ns/e rule 0; ingress not isolated"
    );
}

#[test]
fn stacked_policies_add_up_and_the_first_allowing_is_named() {
    let mut a1 = policy("ns", "a1", sel(&[("app", "db")]));
    a1.ingress
        .push(from(Vec::new(), vec![port(Proto::Tcp, 80)]));
    let mut b1 = policy("ns", "b1", Selector::all());
    b1.ingress
        .push(from(vec![block("10.32.0.2/32", &[])], Vec::new()));
    b1.ingress.push(from(
        Vec::new(),
        vec![port(Proto::Tcp, 80), port(Proto::Tcp, 443)],
    ));
    // Given out of key order: the evaluator and the compiler both go by key.
    let w = world(vec![b1, a1], two_web_one_db());
    assert_eq!(
        decide(&w, "10.32.0.1", "10.32.0.3", TCP, 80).ingress,
        Side::Allowed {
            policy: key("ns", "a1"),
            rule: 0
        }
    );
    assert_eq!(
        decide(&w, "10.32.0.1", "10.32.0.3", TCP, 443).ingress,
        Side::Allowed {
            policy: key("ns", "b1"),
            rule: 1
        }
    );
    assert!(ok(&w, "10.32.0.2", "10.32.0.3", UDP, 9), "b1 rule 0");
    let d = decide(&w, "10.32.0.1", "10.32.0.3", UDP, 9);
    assert_eq!(
        d.ingress,
        Side::Denied {
            policies: vec![key("ns", "a1"), key("ns", "b1")]
        }
    );
    assert_eq!(
        d.to_string(),
        "denied: ingress of 10.32.0.3 (namespace ns) isolated by ns/a1, ns/b1; no rule allows udp/9"
    );
    let rs = compile(&w, &|_| true);
    assert_eq!(rs.policies, [key("ns", "a1"), key("ns", "b1")]);
    assert_eq!(rs.chains[rs.ingress[&a("10.32.0.3")]].isolated_by, [0, 1]);
    assert_eq!(rs.chains[rs.ingress[&a("10.32.0.1")]].isolated_by, [1]);
}

#[test]
fn policies_select_only_pods_of_their_namespace() {
    let w = world(
        vec![policy("other", "deny", Selector::all())],
        two_web_one_db(),
    );
    assert!(ok(&w, "10.32.0.4", "10.32.0.1", TCP, 80));
    assert!(!ok(&w, "10.32.0.1", "10.32.0.4", TCP, 80));
    let rs = compile(&w, &|_| true);
    assert_eq!(
        rs.ingress.keys().copied().collect::<Vec<_>>(),
        [a("10.32.0.4")]
    );
}

#[test]
fn non_pod_addresses() {
    let mut p = policy("ns", "both", sel(&[("app", "web")]));
    p.egress_isolates = true;
    let w = world(vec![p], two_web_one_db());
    let d = decide(&w, "192.0.2.1", "192.0.2.2", TCP, 80);
    assert_eq!((&d.egress, &d.ingress), (&Side::NotAPod, &Side::NotAPod));
    assert!(d.allowed());
    assert_eq!(
        d.to_string(),
        "allowed: egress: 192.0.2.1 is no pod; ingress: 192.0.2.2 is no pod"
    );
    assert!(!ok(&w, "192.0.2.1", "10.32.0.1", TCP, 80));
    assert!(!ok(&w, "10.32.0.1", "192.0.2.1", TCP, 80));
    assert!(ok(&w, "10.32.0.3", "192.0.2.1", TCP, 80));
    let d = decide(&w, "10.32.0.1", "10.32.0.2", ICMP, 0);
    assert_eq!(
        d.to_string(),
        "denied: egress of 10.32.0.1 (namespace ns) isolated by ns/both; no rule allows icmp; \
         ingress of 10.32.0.2 (namespace ns) isolated by ns/both; no rule allows icmp"
    );
}
