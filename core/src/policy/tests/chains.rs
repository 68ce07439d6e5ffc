//! The shape of compiled rule sets: the invariants nftables needs, shared chains, local
//! pods only in the maps, address ownership, and how overlapping rules are cut.

use super::*;
use crate::policy::compile::{Chain, RuleSet};

/// The invariants nftables needs, for every chain of `rs`.
pub(super) fn check(rs: &RuleSet) -> Result<(), &'static str> {
    let overlap = |x: (u32, u32), y: (u32, u32)| x.0 <= y.1 && y.0 <= x.1;
    for c in &rs.chains {
        for w in c.any.windows(2) {
            if w[0].addrs.1 >= w[1].addrs.0 {
                return Err("any: not sorted and disjoint");
            }
        }
        if c.any.iter().any(|e| e.addrs.0 > e.addrs.1)
            || c.ports.iter().any(|e| e.ports.0 > e.ports.1)
        {
            return Err("an empty interval");
        }
        for (i, x) in c.ports.iter().enumerate() {
            for y in &c.ports[i + 1..] {
                let ports = (u32::from(x.ports.0), u32::from(x.ports.1));
                let ports_y = (u32::from(y.ports.0), u32::from(y.ports.1));
                if x.proto == y.proto && overlap(x.addrs, y.addrs) && overlap(ports, ports_y) {
                    return Err("ports: two boxes overlap");
                }
            }
            if c.any.iter().any(|e| overlap(e.addrs, x.addrs)) {
                return Err("ports: a box inside any");
            }
        }
        if c.ports
            .windows(2)
            .any(|w| (w[0].proto, w[0].ports, w[0].addrs) >= (w[1].proto, w[1].ports, w[1].addrs))
        {
            return Err("ports: not sorted");
        }
        if c.isolated_by.is_empty() || c.isolated_by.windows(2).any(|w| w[0] >= w[1]) {
            return Err("isolated_by: empty or not ascending");
        }
    }
    let mut seen: Vec<&Chain> = rs.chains.iter().collect();
    seen.sort();
    if seen.windows(2).any(|w| w[0] == w[1]) {
        return Err("two equal chains");
    }
    if rs
        .ingress
        .values()
        .chain(rs.egress.values())
        .any(|&i| i >= rs.chains.len())
    {
        return Err("a map points past the chains");
    }
    Ok(())
}

#[test]
fn an_address_belongs_to_the_first_pod_that_has_it() {
    let mut pods = two_web_one_db();
    // A second pod claims 10.32.0.1 too (a stale record): the first one decides.
    pods.push(pod("ns", "10.32.0.1", &[("app", "db")]));
    let mut p = policy("ns", "p", sel(&[("app", "db")]));
    p.ingress.push(from(
        vec![pods_peer(Some(sel(&[("app", "db")])), None)],
        Vec::new(),
    ));
    let w = world(vec![p], pods);
    assert!(
        ok(&w, "10.32.0.1", "10.32.0.2", TCP, 1),
        "10.32.0.1 is web: not isolated"
    );
    assert!(
        !ok(&w, "10.32.0.1", "10.32.0.3", TCP, 1),
        "10.32.0.1 is no db"
    );
}

#[test]
fn chains_are_shared_and_only_local_pods_are_mapped() {
    let mut p = policy("ns", "web", sel(&[("app", "web")]));
    p.ingress.push(from(
        vec![pods_peer(Some(sel(&[("app", "db")])), None)],
        vec![port(Proto::Tcp, 80)],
    ));
    let w = world(vec![p], two_web_one_db());
    let all = compile(&w, &|_| true);
    assert_eq!(all.chains.len(), 1);
    assert_eq!(all.ingress.len(), 2);
    assert_eq!(all.ingress[&a("10.32.0.1")], all.ingress[&a("10.32.0.2")]);
    let db = u32::from(a("10.32.0.3"));
    assert_eq!(all.chains[0].ports.len(), 1);
    assert_eq!(
        (all.chains[0].ports[0].addrs, all.chains[0].ports[0].ports),
        ((db, db), (80, 80))
    );
    let one = compile(&w, &|p: &Pod| p.addrs[0] == a("10.32.0.2"));
    assert_eq!(
        one.ingress.keys().copied().collect::<Vec<_>>(),
        [a("10.32.0.2")]
    );
    // Not local: its own ingress is the other router's business.
    assert!(one.allows(a("10.32.0.4"), a("10.32.0.1"), TCP, 80));
    assert!(!one.allows(a("10.32.0.4"), a("10.32.0.2"), TCP, 80));
}

#[test]
fn overlapping_rules_become_disjoint_elements() {
    let mut p = policy("ns", "o", sel(&[("app", "db")]));
    let r = |port, end| Port {
        proto: Proto::Tcp,
        port: PortMatch::Range { port, end },
    };
    p.ingress
        .push(from(vec![block("10.32.0.0/28", &[])], vec![r(10, 20)]));
    p.ingress
        .push(from(vec![block("10.32.0.8/29", &[])], vec![r(15, 30)]));
    p.ingress
        .push(from(vec![block("10.32.0.12/30", &[])], Vec::new()));
    p.ingress
        .push(from(vec![block("10.32.0.0/24", &[])], vec![r(0, 65535)]));
    let w = world(vec![p], two_web_one_db());
    let rs = compile(&w, &|_| true);
    check(&rs).unwrap();
    for src in 0..20u8 {
        for port in [0, 9, 10, 14, 15, 20, 21, 30, 31, 65535] {
            ok(&w, &alloc::format!("10.32.0.{src}"), "10.32.0.3", TCP, port);
        }
    }
    // The /30 is in `any` only. Address-major is the smaller cut here: 10.32.0.0-7 rule 0
    // on 10-20 and rule 3 around it (3), 10.32.0.8-11 the same plus rule 1 on 21-30 (4), the
    // rest of the /24 rule 3 on every port (1); port-major would take 9.
    assert_eq!(rs.chains[0].any.len(), 1);
    assert_eq!(rs.chains[0].ports.len(), 3 + 4 + 1);
}
