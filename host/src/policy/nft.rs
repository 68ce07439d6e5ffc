//! The compiled rule set as one nftables table (`inet weft-policy`), replaced atomically.
//!
//! Layout, so that a packet costs the same whatever the number of pods and rules: the
//! base chain accepts established and related packets first, then looks the source up in
//! the map `egress` and the destination in `ingress` (local pods isolated in that
//! direction → `jump` to their chain). A pod chain looks the other end up in two interval
//! verdict maps — by address alone (rules without ports) and by (address, protocol,
//! destination port) — whose elements `goto` one small chain per policy rule that only
//! counts (and so returns to the base chain: allowed); a packet found in neither is
//! counted and dropped. Pods with the same allowances share one chain.
//!
//! Bridged frames reach the `inet` forward hook through br_netfilter (`nf_call_iptables`
//! on the bridge), with conntrack; the bridge family has no conntrack on this kernel.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use weft_core::policy::compile::{Chain, RuleRef, RuleSet};
use weft_core::policy::eval::Direction;

/// The table's name (family `inet`), one per network namespace.
pub(crate) const TABLE: &str = "weft-policy";

/// What a counter in the table stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Counted {
    /// Packets a rule allowed: (policy index, direction, rule index).
    Rule(usize, Direction, usize),
    /// Packets dropped by a pod chain: (chain index, direction).
    Dropped(usize, Direction),
}

/// A rendered table: the `nft -f` text and what each named chain counts.
#[derive(Clone, Debug, Default)]
pub(crate) struct Rendered {
    /// The batch: creates (or empties) the table, deletes it and writes it anew, in one
    /// transaction.
    pub(crate) batch: String,
    /// Chain name → what its counter counts.
    pub(crate) counters: BTreeMap<String, Counted>,
}

fn dir_tag(d: Direction) -> &'static str {
    match d {
        Direction::Ingress => "in",
        Direction::Egress => "out",
    }
}

fn rule_chain(r: &RuleRef) -> String {
    format!("r{}_{}{}", r.policy, dir_tag(r.dir), r.rule)
}

fn range(lo: u32, hi: u32) -> String {
    if lo == hi {
        Ipv4Addr::from(lo).to_string()
    } else {
        format!("{}-{}", Ipv4Addr::from(lo), Ipv4Addr::from(hi))
    }
}

fn ports(lo: u16, hi: u16) -> String {
    if lo == hi { lo.to_string() } else { format!("{lo}-{hi}") }
}

fn elements(out: &mut String, items: &[String]) {
    if items.is_empty() {
        return;
    }
    out.push_str("\t\telements = {\n");
    for chunk in items.chunks(8) {
        let _ = writeln!(out, "\t\t\t{},", chunk.join(", "));
    }
    out.push_str("\t\t}\n");
}

fn pod_chain(out: &mut String, rendered: &mut Rendered, i: usize, c: &Chain, d: Direction) {
    let name = format!("c{i}_{}", dir_tag(d));
    let other = match d {
        Direction::Ingress => "ip saddr",
        Direction::Egress => "ip daddr",
    };
    let any: Vec<String> = c
        .any
        .iter()
        .map(|e| format!("{} : goto {}", range(e.addrs.0, e.addrs.1), rule_chain(&e.by)))
        .collect();
    let by_port: Vec<String> = c
        .ports
        .iter()
        .map(|e| {
            format!(
                "{} . {} . {} : goto {}",
                range(e.addrs.0, e.addrs.1),
                e.proto.as_str(),
                ports(e.ports.0, e.ports.1),
                rule_chain(&e.by)
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "\tmap {name}_any {{\n\t\ttype ipv4_addr : verdict\n\t\tflags interval"
    );
    elements(out, &any);
    out.push_str("\t}\n");
    let _ = writeln!(
        out,
        "\tmap {name}_ports {{\n\t\ttype ipv4_addr . inet_proto . inet_service : verdict\n\t\tflags interval"
    );
    elements(out, &by_port);
    out.push_str("\t}\n");
    let _ = writeln!(
        out,
        "\tchain {name} {{\n\t\t{other} vmap @{name}_any\n\t\t{other} . meta l4proto . th dport vmap @{name}_ports\n\t\tlimit rate {rate}/second burst {burst} packets log prefix \"{name}\" group {group}\n\t\tcounter drop\n\t}}",
        rate = super::nflog::LOG_RATE_PER_S,
        burst = 2 * super::nflog::LOG_RATE_PER_S,
        group = super::nflog::GROUP,
    );
    rendered.counters.insert(name, Counted::Dropped(i, d));
}

/// Renders `rules` as the whole table.
pub(crate) fn render(rules: &RuleSet) -> Rendered {
    let mut r = Rendered::default();
    let mut out = String::new();
    let _ = writeln!(out, "table inet {TABLE} {{}}\ndelete table inet {TABLE}\ntable inet {TABLE} {{");
    // Every rule chain any element points at.
    let mut refs: BTreeMap<String, Counted> = BTreeMap::new();
    for c in &rules.chains {
        for by in c.any.iter().map(|e| &e.by).chain(c.ports.iter().map(|e| &e.by)) {
            refs.insert(rule_chain(by), Counted::Rule(by.policy, by.dir, by.rule));
        }
    }
    for name in refs.keys() {
        let _ = writeln!(out, "\tchain {name} {{\n\t\tcounter\n\t}}");
    }
    r.counters.extend(refs);
    // Pod chains, once per (chain, direction) in use.
    let mut used: Vec<(usize, Direction)> = rules
        .ingress
        .values()
        .map(|&i| (i, Direction::Ingress))
        .chain(rules.egress.values().map(|&i| (i, Direction::Egress)))
        .collect();
    used.sort_by_key(|&(i, d)| (i, d == Direction::Egress));
    used.dedup();
    for &(i, d) in &used {
        pod_chain(&mut out, &mut r, i, &rules.chains[i], d);
    }
    for (map, pods, d) in [
        ("ingress", &rules.ingress, Direction::Ingress),
        ("egress", &rules.egress, Direction::Egress),
    ] {
        let _ = writeln!(out, "\tmap {map} {{\n\t\ttype ipv4_addr : verdict");
        let items: Vec<String> = pods
            .iter()
            .map(|(a, &i)| format!("{a} : jump c{i}_{}", dir_tag(d)))
            .collect();
        elements(&mut out, &items);
        out.push_str("\t}\n");
    }
    out.push_str(
        "\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n\t\tct state established,related accept\n\t\tip saddr vmap @egress\n\t\tip daddr vmap @ingress\n\t}\n}\n",
    );
    r.batch = out;
    r
}

/// The batch that removes the table (at `weft reset`); fails if there is none.
pub(crate) fn delete_batch() -> String {
    format!("delete table inet {TABLE}\n")
}

/// Packet counts of the table's chains, by chain name, from `nft -j list table`.
pub(crate) fn read_counters(json: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
        return out;
    };
    let Some(items) = v.get("nftables").and_then(|n| n.as_array()) else {
        return out;
    };
    for item in items {
        let Some(rule) = item.get("rule") else { continue };
        let Some(chain) = rule.get("chain").and_then(|c| c.as_str()) else { continue };
        let Some(expr) = rule.get("expr").and_then(|e| e.as_array()) else { continue };
        for e in expr {
            if let Some(p) = e.get("counter").and_then(|c| c.get("packets")).and_then(|p| p.as_u64()) {
                *out.entry(chain.to_owned()).or_insert(0) += p;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
