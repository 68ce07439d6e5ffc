//! The compiler: policies and pods to the rule model a host renders into nftables.
//!
//! What it does: for every local pod a policy isolates, in each direction, one [`Chain`]
//! of what that direction allows, as disjoint address intervals (any traffic) and
//! disjoint (address, protocol, port) boxes, each element naming the policy rule it comes
//! from (for counters). Pods with the same allowances share one chain. Pod selectors become
//! the /32s of the matching pods (local and remote), `ipBlock`s their intervals with the
//! `except` holes cut out, named ports the number each destination pod gives them.
//!
//! What it does not do: write nftables syntax, or look at the conntrack state (replies of
//! an allowed connection are the host's business). [`RuleSet::allows`] reads the result
//! exactly as the nft table will, so tests check it against [`super::eval::evaluate`].
//!
//! Cost: pods are grouped by (namespace, labels, named ports) and every rule's peer set
//! is computed once, whichever pods it applies to; a chain is built once per distinct
//! (direction, isolating policies, own named ports where they matter).

mod boxes;
mod interval;

use super::eval::Direction;
use super::{Labels, NamedPort, Peer, Pod, Policy, PolicyKey, PortMatch, Proto, Rule, World};
use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;
use core::net::Ipv4Addr;
use interval::{Span, contains, first_cover, normalize, subtract};

/// Which rule an element comes from. Orders as the evaluator tries rules: by policy (in key
/// order), then rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleRef {
    /// Index into [`RuleSet::policies`].
    pub policy: usize,
    /// Index of the rule in the policy's rules of `dir`.
    pub rule: usize,
    /// Which rules of the policy.
    pub dir: Direction,
}

/// Any traffic to (egress) or from (ingress) the addresses `addrs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AnyElem {
    /// First and last address, inclusive.
    pub addrs: (u32, u32),
    /// The first rule that allows it.
    pub by: RuleRef,
}

/// Traffic to (egress) or from (ingress) `addrs` with protocol `proto` and destination port
/// in `ports`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortElem {
    /// First and last address, inclusive.
    pub addrs: (u32, u32),
    /// The protocol.
    pub proto: Proto,
    /// First and last destination port, inclusive.
    pub ports: (u16, u16),
    /// The first rule that allows it.
    pub by: RuleRef,
}

/// What one isolated pod direction allows. Ingress: matched on the source address (`any`)
/// and (source address, proto, destination port) (`ports`); egress: on the destination
/// address and (destination address, proto, destination port). Everything else is
/// dropped. `any` is sorted and pairwise disjoint; the `ports` boxes are sorted (by proto,
/// ports, addresses), pairwise disjoint, and outside `any`. Where several rules allow the
/// same traffic the element names the first; traffic that both an address rule and a port
/// rule allow is in `any` only.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Chain {
    /// Addresses allowed whatever the protocol and port.
    pub any: Vec<AnyElem>,
    /// (address, protocol, port) boxes allowed.
    pub ports: Vec<PortElem>,
    /// The policies (indices into [`RuleSet::policies`]) that isolate the pods of this
    /// chain, ascending.
    pub isolated_by: Vec<usize>,
}

impl Chain {
    /// The element that allows the far end `addr` with `proto_port` (`None` for a portless
    /// protocol), as nftables looks it up: `any` first, then `ports`.
    pub fn matching(&self, addr: Ipv4Addr, proto_port: Option<(Proto, u16)>) -> Option<RuleRef> {
        let a = u32::from(addr);
        let i = self.any.partition_point(|e| e.addrs.1 < a);
        if let Some(e) = self.any.get(i).filter(|e| e.addrs.0 <= a) {
            return Some(e.by);
        }
        let (proto, port) = proto_port?;
        self.ports
            .iter()
            .find(|e| {
                e.proto == proto
                    && (e.ports.0..=e.ports.1).contains(&port)
                    && (e.addrs.0..=e.addrs.1).contains(&a)
            })
            .map(|e| e.by)
    }
}

/// The compiled policy of one router's local pods.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleSet {
    /// Every policy of the world, in key order; [`RuleRef::policy`] indexes it.
    pub policies: Vec<PolicyKey>,
    /// The chains, deduplicated: pods with the same allowances share one.
    pub chains: Vec<Chain>,
    /// Local pod address isolated for ingress -> index into `chains`.
    pub ingress: BTreeMap<Ipv4Addr, usize>,
    /// Local pod address isolated for egress -> index into `chains`.
    pub egress: BTreeMap<Ipv4Addr, usize>,
}

impl RuleSet {
    /// Whether a new connection from `src` to `dst` with IP protocol `proto` to destination
    /// port `port` passes, read as the nft table reads it: a source in `egress` needs its
    /// chain to match the destination, a destination in `ingress` its chain to match the
    /// source; ports count only for TCP, UDP and SCTP.
    pub fn allows(&self, src: Ipv4Addr, dst: Ipv4Addr, proto: u8, port: u16) -> bool {
        let pp = Proto::from_number(proto).map(|p| (p, port));
        let ok = |chain: usize, far: Ipv4Addr| self.chains[chain].matching(far, pp).is_some();
        self.egress.get(&src).is_none_or(|&c| ok(c, dst))
            && self.ingress.get(&dst).is_none_or(|&c| ok(c, src))
    }
}

/// Pods that policy cannot tell apart, but for their addresses.
struct Group<'w> {
    /// One of them (namespace, labels, named ports are the group's).
    pod: &'w Pod,
    /// Their addresses (each address belongs to the first pod of the world having it, as
    /// [`World::pod_of`] finds it), ascending.
    addrs: Vec<u32>,
    /// The addresses of the local ones.
    local: Vec<Ipv4Addr>,
}

/// A rule's far ends, computed once.
#[derive(Default)]
struct RulePeers {
    /// The peer addresses (everything if the rule has no peers), normal.
    addrs: Vec<Span>,
    /// Egress only, per named port entry: (index in the rule's ports, resolved port, the
    /// peer pod addresses that resolve it to that port).
    named: Vec<(usize, u16, Vec<Span>)>,
}

/// What a chain depends on: direction (0 ingress, 1 egress), the isolating policies, and
/// the pod's own named ports where its ingress rules name some.
type ChainKey<'a> = (usize, &'a [usize], Option<&'a [NamedPort]>);

/// The shared inputs of a compilation.
struct Ctx<'w> {
    /// The policies in key order.
    pols: Vec<&'w Policy>,
    groups: Vec<Group<'w>>,
    /// Namespace -> its groups.
    ns_groups: BTreeMap<&'w str, Vec<usize>>,
    /// Namespace -> its labels (with the name label).
    ns_labels: BTreeMap<&'w str, Labels>,
}

/// Compiles `world` for the pods for which `local` holds. Call it on every change of the
/// replicated policy state; the host renders the result and swaps its table atomically.
pub fn compile(world: &World, local: &dyn Fn(&Pod) -> bool) -> RuleSet {
    let ctx = Ctx::new(world, local);
    let dirs = [Direction::Ingress, Direction::Egress];
    let mut by_ns: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (k, p) in ctx.pols.iter().enumerate() {
        by_ns.entry(p.key.namespace.as_str()).or_default().push(k);
    }
    // Which policies isolate each group with local pods, per direction; which policies'
    // rules are needed.
    let mut needed = [vec![false; ctx.pols.len()], vec![false; ctx.pols.len()]];
    let mut isolating: Vec<[Vec<usize>; 2]> = Vec::with_capacity(ctx.groups.len());
    for g in &ctx.groups {
        let mut sets = [Vec::new(), Vec::new()];
        if g.local.is_empty() {
            isolating.push(sets);
            continue;
        }
        let cands = by_ns
            .get(g.pod.namespace.as_str())
            .map_or(&[][..], Vec::as_slice);
        for &k in cands {
            let p = ctx.pols[k];
            if !p.pod_selector.matches(&g.pod.labels) {
                continue;
            }
            for (d, dir) in dirs.iter().enumerate() {
                if dir.isolated_by(p) {
                    sets[d].push(k);
                    needed[d][k] = true;
                }
            }
        }
        isolating.push(sets);
    }
    let mut peers: [Vec<Vec<RulePeers>>; 2] = [Vec::new(), Vec::new()];
    for (d, dir) in dirs.iter().enumerate() {
        peers[d] = (0..ctx.pols.len())
            .map(|k| {
                let rules = if needed[d][k] {
                    dir.rules(ctx.pols[k])
                } else {
                    &[]
                };
                rules.iter().map(|r| ctx.rule_peers(k, *dir, r)).collect()
            })
            .collect();
    }
    let mut out = RuleSet {
        policies: ctx.pols.iter().map(|p| p.key.clone()).collect(),
        ..RuleSet::default()
    };
    // (direction, isolating policies, own named ports if they matter) -> chain index.
    let mut by_key: BTreeMap<ChainKey<'_>, usize> = BTreeMap::new();
    let mut by_content: BTreeMap<Chain, usize> = BTreeMap::new();
    for (g, sets) in ctx.groups.iter().zip(&isolating) {
        for (d, dir) in dirs.iter().enumerate() {
            let set = sets[d].as_slice();
            if set.is_empty() {
                continue;
            }
            let named_matter = *dir == Direction::Ingress
                && set.iter().any(|&k| {
                    ctx.pols[k]
                        .ingress
                        .iter()
                        .flat_map(|r| &r.ports)
                        .any(|p| matches!(p.port, PortMatch::Named(_)))
                });
            let key = (d, set, named_matter.then_some(g.pod.ports.as_slice()));
            let idx = *by_key.entry(key).or_insert_with(|| {
                let chain = ctx.chain(*dir, set, g.pod, &peers[d]);
                let next = by_content.len();
                *by_content.entry(chain).or_insert(next)
            });
            let map = match dir {
                Direction::Ingress => &mut out.ingress,
                Direction::Egress => &mut out.egress,
            };
            map.extend(g.local.iter().map(|a| (*a, idx)));
        }
    }
    let mut chains: Vec<(usize, Chain)> = by_content.into_iter().map(|(c, i)| (i, c)).collect();
    chains.sort_unstable_by_key(|c| c.0);
    out.chains = chains.into_iter().map(|c| c.1).collect();
    out
}

impl<'w> Ctx<'w> {
    fn new(world: &'w World, local: &dyn Fn(&Pod) -> bool) -> Self {
        let mut pols: Vec<&Policy> = world.policies.iter().collect();
        pols.sort_by(|a, b| a.key.cmp(&b.key));
        let mut owner: BTreeMap<Ipv4Addr, usize> = BTreeMap::new();
        for (i, p) in world.pods.iter().enumerate() {
            for a in &p.addrs {
                owner.entry(*a).or_insert(i);
            }
        }
        let mut index: BTreeMap<(&str, &Labels, &[NamedPort]), usize> = BTreeMap::new();
        let mut groups: Vec<Group<'w>> = Vec::new();
        let mut ns_groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        let mut ns_labels = BTreeMap::new();
        for (i, p) in world.pods.iter().enumerate() {
            let key = (p.namespace.as_str(), &p.labels, p.ports.as_slice());
            let g = *index.entry(key).or_insert_with(|| {
                groups.push(Group {
                    pod: p,
                    addrs: Vec::new(),
                    local: Vec::new(),
                });
                ns_groups
                    .entry(p.namespace.as_str())
                    .or_default()
                    .push(groups.len() - 1);
                ns_labels
                    .entry(p.namespace.as_str())
                    .or_insert_with(|| world.namespace_labels(&p.namespace));
                groups.len() - 1
            });
            let is_local = local(p);
            for a in p.addrs.iter().filter(|a| owner.get(a) == Some(&i)) {
                groups[g].addrs.push(u32::from(*a));
                if is_local {
                    groups[g].local.push(*a);
                }
            }
        }
        for g in &mut groups {
            g.addrs.sort_unstable();
            g.addrs.dedup();
        }
        Self {
            pols,
            groups,
            ns_groups,
            ns_labels,
        }
    }

    /// The far ends rule `r` of policy `k` names (as [`World::peer_matches_pod`] and
    /// [`super::IpBlock::contains`] decide them), and for egress its named ports resolved on
    /// them.
    fn rule_peers(&self, k: usize, dir: Direction, r: &Rule) -> RulePeers {
        let ns = self.pols[k].key.namespace.as_str();
        let mut addrs: Vec<Span> = Vec::new();
        if r.peers.is_empty() {
            addrs.push((0, u32::MAX));
        }
        for peer in &r.peers {
            match peer {
                Peer::Block(b) => {
                    let mut holes: Vec<Span> = b.except.iter().map(|e| e.range()).collect();
                    normalize(&mut holes);
                    let (lo, hi) = b.cidr.range();
                    addrs.extend(subtract(lo, hi, &holes));
                }
                Peer::Pods { pods, namespaces } => {
                    let ns_ok = |n: &str| match namespaces {
                        None => n == ns,
                        Some(sel) => self.ns_labels.get(n).is_some_and(|l| sel.matches(l)),
                    };
                    for (_, gs) in self.ns_groups.iter().filter(|(n, _)| ns_ok(n)) {
                        for &g in gs {
                            let g = &self.groups[g];
                            if pods.as_ref().is_none_or(|s| s.matches(&g.pod.labels)) {
                                addrs.extend(g.addrs.iter().map(|a| (*a, *a)));
                            }
                        }
                    }
                }
            }
        }
        normalize(&mut addrs);
        let mut named = Vec::new();
        if dir == Direction::Egress {
            for (j, p) in r.ports.iter().enumerate() {
                let PortMatch::Named(n) = &p.port else {
                    continue;
                };
                let mut by_port: BTreeMap<u16, Vec<Span>> = BTreeMap::new();
                for g in &self.groups {
                    let Some(q) = g.pod.named_port(n, p.proto) else {
                        continue;
                    };
                    let hit = g.addrs.iter().filter(|a| contains(&addrs, **a));
                    by_port.entry(q).or_default().extend(hit.map(|a| (*a, *a)));
                }
                for (q, mut v) in by_port {
                    normalize(&mut v);
                    named.push((j, q, v));
                }
            }
        }
        RulePeers { addrs, named }
    }

    /// The chain of a pod `me` isolated in `dir` by the policies `set` (key order).
    fn chain(&self, dir: Direction, set: &[usize], me: &Pod, peers: &[Vec<RulePeers>]) -> Chain {
        let mut any: Vec<(RuleRef, &[Span])> = Vec::new();
        // Per protocol: (first port, last port, addresses, rule).
        let mut boxes: [Vec<boxes::PortBox<'_>>; 3] = [Vec::new(), Vec::new(), Vec::new()];
        for &k in set {
            for (ri, r) in dir.rules(self.pols[k]).iter().enumerate() {
                let rp = &peers[k][ri];
                let by = RuleRef {
                    policy: k,
                    rule: ri,
                    dir,
                };
                if r.ports.is_empty() {
                    any.push((by, &rp.addrs));
                }
                for (j, p) in r.ports.iter().enumerate() {
                    let b = &mut boxes[proto_index(p.proto)];
                    match (&p.port, dir) {
                        (PortMatch::Any, _) => b.push((0, u16::MAX, &rp.addrs, by)),
                        (PortMatch::Range { port, end }, _) => b.push((*port, *end, &rp.addrs, by)),
                        (PortMatch::Named(n), Direction::Ingress) => {
                            if let Some(q) = me.named_port(n, p.proto) {
                                b.push((q, q, &rp.addrs, by));
                            }
                        }
                        (PortMatch::Named(_), Direction::Egress) => {
                            let hits = rp.named.iter().filter(|x| x.0 == j);
                            b.extend(hits.map(|(_, q, v)| (*q, *q, v.as_slice(), by)));
                        }
                    }
                }
            }
        }
        let any = first_cover(&mut any);
        let mut plain: Vec<Span> = any.iter().map(|e| (e.0, e.1)).collect();
        normalize(&mut plain);
        let mut ports = Vec::new();
        for (proto, b) in [Proto::Tcp, Proto::Udp, Proto::Sctp].into_iter().zip(boxes) {
            ports.extend(boxes::disjoint(proto, b, &plain));
        }
        Chain {
            any: any
                .into_iter()
                .map(|(lo, hi, by)| AnyElem {
                    addrs: (lo, hi),
                    by,
                })
                .collect(),
            ports,
            isolated_by: set.to_vec(),
        }
    }
}

fn proto_index(p: Proto) -> usize {
    match p {
        Proto::Tcp => 0,
        Proto::Udp => 1,
        Proto::Sctp => 2,
    }
}
