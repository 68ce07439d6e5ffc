//! The property: on random worlds the compiled rules allow exactly what the evaluator
//! allows, for every pair of addresses, protocol and port around every boundary, and the
//! chains keep the invariants nftables needs.

use super::super::compile::{RuleSet, compile};
use super::super::eval::{Direction, Side, evaluate};
use super::super::*;
use super::chains::check as check_chains;
use alloc::string::ToString;
use alloc::vec::Vec;
use proptest::collection::vec as pvec;
use proptest::prelude::*;

const NAMESPACES: [&str; 3] = ["a", "b", "c"];
const KEYS: [&str; 2] = ["app", "tier"];
const VALUES: [&str; 3] = ["x", "y", ""];
/// Pods name only the first two; the third names nothing.
const PORT_NAMES: [&str; 3] = ["http", "dns", "none"];
/// Where policy port ranges start; they are 0 to 2 long.
const RANGE_STARTS: [u16; 3] = [53, 80, 8080];
/// The numbers pods give their named ports.
const NAMED_NUMBERS: [u16; 5] = [53, 80, 81, 8080, 8082];
/// Every port probed: both sides of every range end and named number, and the extremes.
const PROBED_PORTS: [u16; 16] = [
    0, 52, 53, 54, 55, 79, 80, 81, 82, 83, 8079, 8080, 8081, 8082, 8083, 65535,
];
/// Two addresses no pod has: one inside the blocks' space, one outside.
const NON_PODS: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 32, 0, 20), Ipv4Addr::new(10, 32, 1, 7)];

fn arb_labels(max: usize) -> impl Strategy<Value = Labels> {
    pvec((0..KEYS.len(), 0..VALUES.len()), 0..=max).prop_map(|kv| {
        let mut l = Labels::new();
        for (k, v) in kv {
            l.insert(KEYS[k], VALUES[v]).unwrap();
        }
        l
    })
}

fn arb_proto() -> impl Strategy<Value = Proto> {
    prop_oneof![Just(Proto::Tcp), Just(Proto::Udp), Just(Proto::Sctp)]
}

fn arb_requirement() -> impl Strategy<Value = Requirement> {
    (0..KEYS.len(), 0..4usize, pvec(0..VALUES.len(), 1..3)).prop_map(|(k, op, vals)| {
        let op = [
            Operator::In,
            Operator::NotIn,
            Operator::Exists,
            Operator::DoesNotExist,
        ][op];
        let mut values: Vec<_> = match op {
            Operator::In | Operator::NotIn => vals.iter().map(|&v| VALUES[v].to_string()).collect(),
            _ => Vec::new(),
        };
        values.sort();
        values.dedup();
        Requirement {
            key: KEYS[k].to_string(),
            op,
            values,
        }
    })
}

/// A selector: a third of them `{}`, the others with a label and up to two expressions.
fn arb_selector() -> impl Strategy<Value = Selector> {
    let some = (arb_labels(1), pvec(arb_requirement(), 0..3)).prop_map(
        |(match_labels, match_expressions)| Selector {
            match_labels,
            match_expressions,
        },
    );
    prop_oneof![1 => Just(Selector::all()), 2 => some]
}

fn arb_block() -> impl Strategy<Value = IpBlock> {
    let prefix = prop_oneof![1 => Just(0u8), 8 => 26u8..=32];
    (0u8..32, prefix, pvec((0u32..64, 0u8..=6), 0..3)).prop_map(|(host, prefix, holes)| {
        let cidr = Cidr::new(Ipv4Addr::new(10, 32, 0, host), prefix).unwrap();
        let (lo, hi) = cidr.range();
        let except = holes
            .into_iter()
            .map(|(off, extra)| {
                let at = (u64::from(lo) + u64::from(off) % (u64::from(hi - lo) + 1)) as u32;
                Cidr::new(Ipv4Addr::from(at), (prefix + extra).min(32)).unwrap()
            })
            .collect();
        IpBlock { cidr, except }
    })
}

fn arb_peer() -> impl Strategy<Value = Peer> {
    let pods = (
        proptest::option::of(arb_selector()),
        proptest::option::of(arb_selector()),
    )
        .prop_map(|(pods, namespaces)| match (pods, namespaces) {
            (None, None) => Peer::Pods {
                pods: Some(Selector::all()),
                namespaces: None,
            },
            (pods, namespaces) => Peer::Pods { pods, namespaces },
        });
    prop_oneof![2 => pods, 1 => arb_block().prop_map(Peer::Block)]
}

fn arb_port() -> impl Strategy<Value = Port> {
    (
        arb_proto(),
        0..4usize,
        0..RANGE_STARTS.len(),
        0u16..3,
        0..PORT_NAMES.len(),
    )
        .prop_map(|(proto, kind, start, len, name)| Port {
            proto,
            port: match kind {
                0 => PortMatch::Any,
                1 => PortMatch::Named(PORT_NAMES[name].to_string()),
                _ => PortMatch::Range {
                    port: RANGE_STARTS[start],
                    end: RANGE_STARTS[start] + len,
                },
            },
        })
}

fn arb_rule() -> impl Strategy<Value = Rule> {
    (pvec(arb_peer(), 0..3), pvec(arb_port(), 0..3))
        .prop_map(|(peers, ports)| Rule { peers, ports })
}

/// (namespace index, policy without its key).
fn arb_policy() -> impl Strategy<Value = (usize, Policy)> {
    let rules = || pvec(arb_rule(), 0..3);
    // Kubernetes never leaves policyTypes empty; the model can, so now and then.
    let types = prop_oneof![
        3 => Just((true, false)),
        3 => Just((false, true)),
        3 => Just((true, true)),
        1 => Just((false, false)),
    ];
    (0..NAMESPACES.len(), arb_selector(), types, rules(), rules()).prop_map(
        |(ns, pod_selector, (ingress_isolates, egress_isolates), ingress, egress)| {
            let key = PolicyKey {
                namespace: String::new(),
                name: String::new(),
            };
            let p = Policy {
                key,
                pod_selector,
                ingress_isolates,
                egress_isolates,
                ingress,
                egress,
            };
            (ns, p)
        },
    )
}

fn arb_pod() -> impl Strategy<Value = (usize, Pod)> {
    let named =
        (0..2usize, arb_proto(), 0..NAMED_NUMBERS.len()).prop_map(|(n, proto, num)| NamedPort {
            name: PORT_NAMES[n].to_string(),
            proto,
            port: NAMED_NUMBERS[num],
        });
    (
        0..NAMESPACES.len(),
        pvec(0u8..16, 1..=2),
        arb_labels(2),
        pvec(named, 0..3),
    )
        .prop_map(|(ns, hosts, labels, ports)| {
            let addrs = hosts
                .into_iter()
                .map(|h| Ipv4Addr::new(10, 32, 0, h))
                .collect();
            let pod = Pod {
                addrs,
                namespace: String::new(),
                labels,
                ports,
            };
            (ns, pod)
        })
}

/// A world and which of its pods are local (a bit per pod).
fn arb_world() -> impl Strategy<Value = (World, u16)> {
    (
        2..=NAMESPACES.len(),
        pvec(arb_labels(2), NAMESPACES.len()),
        pvec(arb_pod(), 3..=9),
        pvec(arb_policy(), 1..=5),
        any::<u16>(),
    )
        .prop_map(|(n_ns, ns_labels, pods, policies, local)| {
            let pods = pods
                .into_iter()
                .map(|(ns, mut p)| {
                    p.namespace = NAMESPACES[ns % n_ns].to_string();
                    p
                })
                .collect();
            let policies = policies
                .into_iter()
                .enumerate()
                .map(|(i, (ns, mut p))| {
                    p.key.namespace = NAMESPACES[ns % n_ns].to_string();
                    p.key.name = alloc::format!("p{i}");
                    p.check().unwrap();
                    p
                })
                .collect();
            let namespaces = NAMESPACES[..n_ns]
                .iter()
                .zip(ns_labels)
                .map(|(ns, l)| (ns.to_string(), l))
                .collect();
            (
                World {
                    policies,
                    namespaces,
                    pods,
                },
                local,
            )
        })
}

/// Whether the side is enforced by `rs` and, if it lets the packet through, that the element
/// that does names a rule of an isolating policy, in the right direction.
fn attribution_ok(
    rs: &RuleSet,
    dir: Direction,
    me: Ipv4Addr,
    far: Ipv4Addr,
    proto: u8,
    port: u16,
) -> bool {
    let map = match dir {
        Direction::Ingress => &rs.ingress,
        Direction::Egress => &rs.egress,
    };
    let Some(&c) = map.get(&me) else { return true };
    let chain = &rs.chains[c];
    chain
        .matching(far, Proto::from_number(proto).map(|p| (p, port)))
        .is_none_or(|r| r.dir == dir && chain.isolated_by.contains(&r.policy))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn compiled_rules_allow_what_the_evaluator_allows((w, local_bits) in arb_world()) {
        let all = compile(&w, &|_| true);
        prop_assert_eq!(check_chains(&all), Ok(()));
        let is_local = |p: &Pod| {
            let i = w.pods.iter().position(|q| core::ptr::eq(q, p)).unwrap();
            local_bits & (1 << i) != 0
        };
        let some = compile(&w, &is_local);
        prop_assert_eq!(check_chains(&some), Ok(()));
        let mut addrs: Vec<Ipv4Addr> = w.pods.iter().flat_map(|p| p.addrs.iter().copied()).collect();
        addrs.extend(NON_PODS);
        addrs.sort();
        addrs.dedup();
        let enforced = |a: Ipv4Addr| w.pod_of(a).is_some_and(is_local);
        let probes = [6u8, 17, 132].into_iter().flat_map(|p| PROBED_PORTS.map(|n| (p, n))).chain([(1, 0)]);
        for (proto, port) in probes {
            for &src in &addrs {
                for &dst in &addrs {
                    let d = evaluate(&w, src, dst, proto, port);
                    prop_assert_eq!(all.allows(src, dst, proto, port), d.allowed(), "{}", d);
                    let denied = |s: &Side| matches!(s, Side::Denied { .. });
                    let want = (!denied(&d.egress) || !enforced(src)) && (!denied(&d.ingress) || !enforced(dst));
                    prop_assert_eq!(some.allows(src, dst, proto, port), want, "local only: {}", d);
                    prop_assert!(attribution_ok(&all, Direction::Egress, src, dst, proto, port));
                    prop_assert!(attribution_ok(&all, Direction::Ingress, dst, src, proto, port));
                }
            }
        }
    }
}
