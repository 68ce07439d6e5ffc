//! Tests of the policy codec: every field round-trips, a parsed message re-emits to its
//! input, garbage and invalid values are refused; plus the fixtures the CRDT tests share.

use super::table::{POD_ADDRS_MAX, PodKey, Stamp};
use super::wire::{
    self, ENTRIES_PER_MSG_MAX, Msg, NamespaceEntry, POLICY_MSG_LEN_MAX, PodEntry, PolicyEntry,
};
use super::*;
use crate::peer::PeerName;
use crate::wire::{WireError, with_byte};
use alloc::string::ToString;
use alloc::vec;
use alloc::vec::Vec;
use proptest::prelude::*;

pub(super) fn labels(pairs: &[(&str, &str)]) -> Labels {
    let mut l = Labels::new();
    for (k, v) in pairs {
        l.insert(k, v).unwrap();
    }
    l
}

fn key(ns: &str, name: &str) -> PolicyKey {
    PolicyKey {
        namespace: ns.to_string(),
        name: name.to_string(),
    }
}

fn cidr(s: &str, prefix: u8) -> Cidr {
    Cidr::new(s.parse().unwrap(), prefix).unwrap()
}

/// A policy that uses every field and variant of the model.
pub(super) fn rich_policy(ns: &str, name: &str) -> Policy {
    let sel = Selector {
        match_labels: labels(&[("app", "web"), ("example.com/tier", "front")]),
        match_expressions: vec![
            Requirement {
                key: "env".to_string(),
                op: Operator::In,
                values: vec!["prod".to_string(), "stage".to_string()],
            },
            Requirement {
                key: "debug".to_string(),
                op: Operator::DoesNotExist,
                values: Vec::new(),
            },
        ],
    };
    let ingress = Rule {
        peers: vec![
            Peer::Pods {
                pods: Some(sel.clone()),
                namespaces: None,
            },
            Peer::Pods {
                pods: None,
                namespaces: Some(Selector::all()),
            },
            Peer::Pods {
                pods: Some(Selector::all()),
                namespaces: Some(sel.clone()),
            },
            Peer::Block(IpBlock {
                cidr: cidr("10.32.0.0", 12),
                except: vec![cidr("10.32.1.0", 24), cidr("10.40.0.0", 16)],
            }),
        ],
        ports: vec![
            Port {
                proto: Proto::Tcp,
                port: PortMatch::Range { port: 80, end: 80 },
            },
            Port {
                proto: Proto::Udp,
                port: PortMatch::Range {
                    port: 5000,
                    end: 6000,
                },
            },
            Port {
                proto: Proto::Sctp,
                port: PortMatch::Any,
            },
            Port {
                proto: Proto::Tcp,
                port: PortMatch::Named("http".to_string()),
            },
        ],
    };
    Policy {
        key: key(ns, name),
        pod_selector: sel,
        ingress_isolates: true,
        egress_isolates: true,
        ingress: vec![ingress, Rule::default()],
        egress: vec![Rule {
            peers: vec![Peer::Block(IpBlock {
                cidr: cidr("0.0.0.0", 0),
                except: Vec::new(),
            })],
            ports: Vec::new(),
        }],
    }
}

/// A small policy selecting `app=<app>`, ingress isolated, no rules (deny all ingress).
pub(super) fn deny(ns: &str, name: &str, app: &str) -> Policy {
    Policy {
        key: key(ns, name),
        pod_selector: Selector {
            match_labels: labels(&[("app", app)]),
            match_expressions: Vec::new(),
        },
        ingress_isolates: true,
        egress_isolates: false,
        ingress: Vec::new(),
        egress: Vec::new(),
    }
}

pub(super) fn pod(last: u8, ns: &str, app: &str) -> Pod {
    Pod {
        addrs: vec![Ipv4Addr::new(10, 32, 0, last)],
        namespace: ns.to_string(),
        labels: labels(&[("app", app)]),
        ports: vec![NamedPort {
            name: "http".to_string(),
            proto: Proto::Tcp,
            port: 8080,
        }],
    }
}

fn stamp(lamport: u64, writer: u64) -> Stamp {
    Stamp {
        lamport,
        writer: PeerName::from_u64(writer),
    }
}

fn policies_msg() -> Msg {
    Msg::Policies(vec![
        PolicyEntry {
            key: key("default", "a"),
            stamp: stamp(3, 1),
            policy: Some(rich_policy("default", "a")),
        },
        PolicyEntry {
            key: key("default", "b"),
            stamp: stamp(u64::MAX, 2),
            policy: None,
        },
        PolicyEntry {
            key: key("prod", "a"),
            stamp: stamp(1, 1),
            policy: Some(deny("prod", "a", "db")),
        },
    ])
}

fn pods_msg() -> Msg {
    Msg::Pods(vec![
        PodEntry {
            key: PodKey {
                owner: PeerName::from_u64(1),
                id: "4f1c0e2a".to_string(),
            },
            version: 9,
            pod: Some(Pod {
                addrs: vec![Ipv4Addr::new(10, 32, 0, 2), Ipv4Addr::new(10, 40, 0, 2)],
                ..pod(2, "prod", "web")
            }),
        },
        PodEntry {
            key: PodKey {
                owner: PeerName::from_u64(1),
                id: "weft:extern".to_string(),
            },
            version: 2,
            pod: None,
        },
        PodEntry {
            key: PodKey {
                owner: PeerName::from_u64(2),
                id: "a".to_string(),
            },
            version: 1,
            pod: Some(Pod {
                addrs: Vec::new(),
                namespace: DEFAULT_NAMESPACE.to_string(),
                labels: Labels::new(),
                ports: Vec::new(),
            }),
        },
    ])
}

fn namespaces_msg() -> Msg {
    Msg::Namespaces(vec![
        NamespaceEntry {
            name: "default".to_string(),
            stamp: stamp(4, 3),
            labels: None,
        },
        NamespaceEntry {
            name: "prod".to_string(),
            stamp: stamp(5, 3),
            labels: Some(labels(&[("team", "db"), ("x.io/y", "")])),
        },
    ])
}

/// Valid messages of every kind (the fuzz seeds are made the same way).
pub(super) fn sample_msgs() -> Vec<Msg> {
    vec![policies_msg(), namespaces_msg(), pods_msg()]
}

#[test]
fn every_kind_roundtrips_and_reemits_exactly() {
    for msg in sample_msgs() {
        let bytes = msg.to_vec().unwrap();
        let back = wire::parse(&bytes).unwrap();
        assert_eq!(back, msg);
        assert_eq!(back.to_vec().unwrap(), bytes);
        // Every truncation is refused, and so is a trailing byte.
        for cut in 0..bytes.len() {
            assert!(wire::parse(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(wire::parse(&long), Err(WireError::Inconsistent));
        assert_eq!(
            wire::parse(&with_byte(&bytes, 0, 9)),
            Err(WireError::UnsupportedVersion)
        );
        assert_eq!(
            wire::parse(&with_byte(&bytes, 1, 9)),
            Err(WireError::UnknownType)
        );
    }
}

/// The bytes of one policy entry message for `p` (any value, checked or not).
fn one_policy(p: Policy) -> Vec<u8> {
    let e = PolicyEntry {
        key: p.key.clone(),
        stamp: stamp(1, 1),
        policy: Some(p),
    };
    wire::to_vec(&[&e]).unwrap()
}

fn one_pod(p: Pod) -> Vec<u8> {
    let e = PodEntry {
        key: PodKey {
            owner: PeerName::from_u64(1),
            id: "c".to_string(),
        },
        version: 1,
        pod: Some(p),
    };
    wire::to_vec(&[&e]).unwrap()
}

#[test]
fn invalid_values_are_refused() {
    let good = rich_policy("default", "a");
    assert!(wire::parse(&one_policy(good.clone())).is_ok());
    let mut bad_range = good.clone();
    bad_range.ingress[0].ports[1].port = PortMatch::Range { port: 9, end: 8 };
    let mut bad_expr = good.clone();
    bad_expr.pod_selector.match_expressions[0].values.clear();
    let mut bad_except = good.clone();
    bad_except.egress[0].peers = vec![Peer::Block(IpBlock {
        cidr: cidr("10.32.0.0", 16),
        except: vec![cidr("10.33.0.0", 24)],
    })];
    let mut host_bits = good.clone();
    host_bits.egress[0].peers = vec![Peer::Block(IpBlock {
        cidr: Cidr {
            addr: Ipv4Addr::new(10, 32, 0, 1),
            prefix: 16,
        },
        except: Vec::new(),
    })];
    let mut no_selector = good.clone();
    no_selector.ingress[0].peers = vec![Peer::Pods {
        pods: None,
        namespaces: None,
    }];
    let mut upper_name = good.clone();
    upper_name.ingress[0].ports[3].port = PortMatch::Named("HTTP".to_string());
    let mut bad_label = good.clone();
    bad_label.pod_selector.match_labels =
        Labels([("-x".to_string(), "v".to_string())].into_iter().collect());
    for (what, p) in [
        ("end below port", bad_range),
        ("In without values", bad_expr),
        ("except outside", bad_except),
        ("host bits", host_bits),
        ("peer without selector", no_selector),
        ("named port", upper_name),
        ("label key", bad_label),
    ] {
        assert_eq!(
            wire::parse(&one_policy(p)),
            Err(WireError::Inconsistent),
            "{what}"
        );
    }
    let mut bad_key = good.clone();
    bad_key.key.namespace = "Default".to_string();
    assert!(wire::parse(&one_policy(bad_key)).is_err(), "namespace");
    let mut most = pod(1, "default", "x");
    most.addrs = vec![Ipv4Addr::new(10, 0, 0, 1); POD_ADDRS_MAX];
    let mut many = one_pod(most);
    // The address count: after header, owner, id "c", version, flags.
    let at = 4 + 6 + 2 + 8 + 1;
    assert_eq!(many[at..at + 2], (POD_ADDRS_MAX as u16).to_be_bytes());
    many[at..at + 2].copy_from_slice(&(POD_ADDRS_MAX as u16 + 1).to_be_bytes());
    many.splice(at + 2..at + 2, [10, 0, 0, 1]);
    assert_eq!(wire::parse(&many), Err(WireError::Oversized));
    let mut bad_ns = pod(1, "default", "x");
    bad_ns.namespace = "a_b".to_string();
    assert_eq!(wire::parse(&one_pod(bad_ns)), Err(WireError::Inconsistent));
    // A key mismatch between entry and policy cannot be encoded.
    let e = PolicyEntry {
        key: key("default", "other"),
        stamp: stamp(1, 1),
        policy: Some(good),
    };
    assert_eq!(wire::to_vec(&[&e]), Err(WireError::Inconsistent));
}

#[test]
fn bytes_that_break_order_or_flags_are_refused() {
    let Msg::Policies(es) = policies_msg() else {
        unreachable!()
    };
    assert_eq!(
        wire::to_vec(&[&es[1], &es[0]]),
        Err(WireError::Inconsistent),
        "order"
    );
    // Two copies of one entry in a message: a duplicate key.
    let one = wire::to_vec(&[&es[1]]).unwrap();
    let mut dup = one.clone();
    dup.extend_from_slice(&one[4..]);
    dup[3] = 2;
    assert_eq!(wire::parse(&dup), Err(WireError::Inconsistent));
    // The flags byte of that tombstone: after header, two names, stamp.
    let at = 4 + 1 + "default".len() + 1 + 1 + 8 + 6;
    assert_eq!(one[at], 0);
    assert_eq!(
        wire::parse(&with_byte(&one, at, 2)),
        Err(WireError::Inconsistent)
    );
    // Unsorted labels: swap the two label entries of a namespace message.
    let ns = NamespaceEntry {
        name: "n".to_string(),
        stamp: stamp(1, 1),
        labels: Some(labels(&[("a", "1"), ("b", "2")])),
    };
    let bytes = wire::to_vec(&[&ns]).unwrap();
    let l = bytes.len();
    let (a, b) = (bytes[l - 10..l - 5].to_vec(), bytes[l - 5..].to_vec());
    assert_eq!(a[..3], [0, 1, b'a']);
    let mut swapped = bytes[..l - 10].to_vec();
    swapped.extend_from_slice(&b);
    swapped.extend_from_slice(&a);
    assert_eq!(wire::parse(&swapped), Err(WireError::Inconsistent));
    // A count that lies about what follows.
    assert_eq!(wire::parse(&[1, 1, 0xff, 0xff]), Err(WireError::Oversized));
    assert_eq!(wire::parse(&[1, 1, 0, 9]), Err(WireError::Truncated));
}

#[test]
fn encode_all_splits_within_limits_and_skips_what_cannot_go() {
    let many: Vec<PolicyEntry> = (0..2500u32)
        .map(|i| {
            let name = alloc::format!("p{i:05}");
            PolicyEntry {
                key: key("default", &name),
                stamp: stamp(1, 1),
                policy: Some(rich_policy("default", &name)),
            }
        })
        .collect();
    let msgs = wire::encode_all(&many);
    assert!(msgs.len() >= 3);
    let mut back = Vec::new();
    for m in &msgs {
        assert!(m.len() <= POLICY_MSG_LEN_MAX);
        let Msg::Policies(es) = wire::parse(m).unwrap() else {
            panic!("kind")
        };
        assert!(es.len() <= ENTRIES_PER_MSG_MAX);
        back.extend(es);
    }
    assert_eq!(back, many);
    // A policy too big for one message is refused by apply and never sent.
    let mut huge = deny("default", "huge", "x");
    huge.ingress = vec![rich_policy("default", "huge").ingress[0].clone(); LIST_MAX];
    huge.egress = huge.ingress.clone();
    assert!(!wire::policy_fits(&huge));
    assert!(wire::policy_fits(&rich_policy("default", "ok")));
    let e = PolicyEntry {
        key: huge.key.clone(),
        stamp: stamp(1, 1),
        policy: Some(huge),
    };
    assert!(wire::encode_all([&e]).is_empty());
}

#[test]
fn a_maximal_pod_fits_one_message() {
    let mut p = pod(1, "default", "x");
    p.addrs = vec![Ipv4Addr::new(10, 0, 0, 1); POD_ADDRS_MAX];
    p.labels = Labels::new();
    let prefix = [
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(61),
    ]
    .join(".");
    for i in 0..LABELS_MAX {
        let k = alloc::format!("{prefix}/{}{i:03}", "k".repeat(60));
        p.labels
            .insert(&k, &"v".repeat(LABEL_VALUE_LEN_MAX))
            .unwrap();
    }
    p.ports = (0..NAMED_PORTS_MAX)
        .map(|i| NamedPort {
            name: alloc::format!("{}{i:03}", "p".repeat(60)),
            proto: Proto::Udp,
            port: i as u16,
        })
        .collect();
    let bytes = one_pod(p.clone());
    assert!(bytes.len() <= POLICY_MSG_LEN_MAX);
    let Msg::Pods(back) = wire::parse(&bytes).unwrap() else {
        panic!("kind")
    };
    assert_eq!(back[0].pod.as_ref(), Some(&p));
}

#[test]
fn export_roundtrips_and_refuses_pods_and_garbage() {
    let msgs: Vec<Vec<u8>> = [policies_msg(), namespaces_msg()]
        .iter()
        .map(|m| m.to_vec().unwrap())
        .collect();
    let file = wire::emit_export(7, 9, &msgs);
    let back = wire::parse_export(&file).unwrap();
    assert_eq!((back.lamport, back.pod_version), (7, 9));
    assert_eq!(back.msgs, vec![policies_msg(), namespaces_msg()]);
    for cut in 0..file.len() {
        assert!(wire::parse_export(&file[..cut]).is_err(), "cut at {cut}");
    }
    let with_pods = wire::emit_export(1, 1, &[pods_msg().to_vec().unwrap()]);
    assert_eq!(wire::parse_export(&with_pods), Err(WireError::Inconsistent));
    // A gossip message is not a state file.
    assert_eq!(wire::parse_export(&msgs[0]), Err(WireError::UnknownType));
}

proptest! {
    #[test]
    fn parse_never_panics_and_valid_reemits(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        which in 0usize..3,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
    ) {
        for input in [bytes.clone(), {
            // Mutations of a valid message reach deeper than random bytes.
            let mut m = sample_msgs()[which].to_vec().unwrap();
            for (at, v) in &flips {
                let i = at % m.len();
                m[i] = *v;
            }
            m
        }] {
            if let Ok(msg) = wire::parse(&input) {
                prop_assert_eq!(&msg.to_vec().unwrap(), &input);
            }
            let _ = wire::parse_export(&input);
        }
    }
}
