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
/// The anti-spoofing table of strict subnet isolation (family `bridge`).
pub(crate) const ISOLATE_TABLE: &str = "weft-isolate";

/// Strict subnet isolation (`--isolate-subnets`): this host's container ports with their
/// own addresses (a frame from a port with any other IPv4 or ARP source is dropped on the
/// bridge), and the subnets they are on (a connection between two different subnets is
/// dropped, whichever end opens it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Isolation {
    /// Bridge port → the addresses its container may send from.
    pub(crate) ports: BTreeMap<String, Vec<Ipv4Addr>>,
    /// The subnets of this host's containers.
    pub(crate) subnets: Vec<weft_core::policy::Cidr>,
}

fn isolation_batch(out: &mut String, iso: Option<&Isolation>) {
    let t = ISOLATE_TABLE;
    let _ = writeln!(out, "table bridge {t} {{}}\ndelete table bridge {t}");
    let Some(iso) = iso else { return };
    let _ = writeln!(out, "table bridge {t} {{\n\tset ports {{\n\t\ttype ifname");
    let names: Vec<String> = iso.ports.keys().map(|p| format!("\"{p}\"")).collect();
    elements(out, &names);
    out.push_str("\t}\n\tset own {\n\t\ttype ifname . ipv4_addr\n");
    let own: Vec<String> = iso
        .ports
        .iter()
        .flat_map(|(p, addrs)| addrs.iter().map(move |a| format!("\"{p}\" . {a}")))
        .collect();
    elements(out, &own);
    out.push_str(
        "\t}\n\tchain prerouting {\n\t\ttype filter hook prerouting priority filter; policy accept;\n\t\tiifname @ports ether type ip iifname . ip saddr != @own counter drop\n\t\tiifname @ports ether type arp iifname . arp saddr ip != @own counter drop\n\t}\n}\n",
    );
}

/// The forward rules of strict isolation: between two different subnets, nothing new.
fn separation(out: &mut String, iso: Option<&Isolation>) -> String {
    let Some(iso) = iso.filter(|i| !i.subnets.is_empty()) else {
        return String::new();
    };
    let mut subnets = iso.subnets.clone();
    subnets.sort();
    subnets.dedup();
    let all: Vec<String> = subnets.iter().map(ToString::to_string).collect();
    let _ = writeln!(
        out,
        "\tset subnets {{\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\tauto-merge"
    );
    elements(out, &all);
    out.push_str("\t}\n");
    let mut rules = String::new();
    for s in &subnets {
        let _ = writeln!(
            rules,
            "\t\tip saddr {s} ip daddr != {s} ip daddr @subnets counter drop"
        );
        let _ = writeln!(
            rules,
            "\t\tip daddr {s} ip saddr != {s} ip saddr @subnets counter drop"
        );
    }
    rules
}

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
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}-{hi}")
    }
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
        .map(|e| {
            format!(
                "{} : goto {}",
                range(e.addrs.0, e.addrs.1),
                rule_chain(&e.by)
            )
        })
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

/// Renders `rules` (and strict isolation, when on) as the whole table.
pub(crate) fn render(rules: &RuleSet, iso: Option<&Isolation>) -> Rendered {
    let mut r = Rendered::default();
    let mut out = String::new();
    isolation_batch(&mut out, iso);
    let _ = writeln!(
        out,
        "table inet {TABLE} {{}}\ndelete table inet {TABLE}\ntable inet {TABLE} {{"
    );
    // Every rule chain any element points at.
    let mut refs: BTreeMap<String, Counted> = BTreeMap::new();
    for c in &rules.chains {
        for by in c
            .any
            .iter()
            .map(|e| &e.by)
            .chain(c.ports.iter().map(|e| &e.by))
        {
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
    let separate = separation(&mut out, iso);
    let _ = write!(
        out,
        "\tchain forward {{\n\t\ttype filter hook forward priority filter; policy accept;\n\t\tct state established,related accept\n{separate}\t\tip saddr vmap @egress\n\t\tip daddr vmap @ingress\n\t}}\n}}\n"
    );
    r.batch = out;
    r
}

/// The batch that removes the tables (at `weft reset`).
pub(crate) fn delete_batch() -> String {
    format!(
        "table inet {TABLE} {{}}\ndelete table inet {TABLE}\ntable bridge {ISOLATE_TABLE} {{}}\ndelete table bridge {ISOLATE_TABLE}\n"
    )
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
        let Some(rule) = item.get("rule") else {
            continue;
        };
        let Some(chain) = rule.get("chain").and_then(|c| c.as_str()) else {
            continue;
        };
        let Some(expr) = rule.get("expr").and_then(|e| e.as_array()) else {
            continue;
        };
        for e in expr {
            if let Some(p) = e
                .get("counter")
                .and_then(|c| c.get("packets"))
                .and_then(|p| p.as_u64())
            {
                *out.entry(chain.to_owned()).or_insert(0) += p;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
