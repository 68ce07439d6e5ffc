//! The direct evaluator: one (source, destination, protocol, port) decided straight from
//! the Kubernetes NetworkPolicy v1 rules, policy by policy.
//!
//! What it does: the reference the compiler ([`super::compile`]) is checked against, and
//! the answer of `weft policy explain` (which policy and rule allowed, or which policies
//! isolated a pod and that none allowed). What it does not do: anything fast. It walks
//! every policy and every pod for each question; the per-packet path is the compiled
//! [`super::compile::RuleSet`] in nftables.

use super::{Peer, Pod, Policy, PolicyKey, Port, PortMatch, Proto, Rule, World};
use alloc::vec::Vec;
use core::fmt;
use core::net::Ipv4Addr;

/// Which way a policy rule looks at traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// Traffic into the selected pod: `spec.ingress`, rules name the source.
    Ingress,
    /// Traffic out of the selected pod: `spec.egress`, rules name the destination.
    Egress,
}

impl Direction {
    /// Lowercase name, as `weft policy explain` writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ingress => "ingress",
            Self::Egress => "egress",
        }
    }

    /// Whether `policy` isolates the pods it selects in this direction.
    pub fn isolated_by(self, policy: &Policy) -> bool {
        match self {
            Self::Ingress => policy.ingress_isolates,
            Self::Egress => policy.egress_isolates,
        }
    }

    /// The rules of `policy` for this direction.
    pub fn rules(self, policy: &Policy) -> &[Rule] {
        match self {
            Self::Ingress => &policy.ingress,
            Self::Egress => &policy.egress,
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one side (the source's egress, the destination's ingress) decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Side {
    /// The address is no pod of the world: nothing to check.
    NotAPod,
    /// A pod no policy isolates in this direction.
    NotIsolated,
    /// The first policy (in key order) and the index of its first rule that allows.
    Allowed {
        /// The policy.
        policy: PolicyKey,
        /// The index of the rule in the policy's rules of this direction.
        rule: usize,
    },
    /// Isolated by these policies (in key order), none of which allows.
    Denied {
        /// The isolating policies.
        policies: Vec<PolicyKey>,
    },
}

/// The decision on one connection: both sides, and what was asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The source's egress.
    pub egress: Side,
    /// The destination's ingress.
    pub ingress: Side,
    /// The source address asked about.
    pub src: Ipv4Addr,
    /// The destination address asked about.
    pub dst: Ipv4Addr,
    /// The IP protocol number asked about.
    pub proto: u8,
    /// The destination port asked about (meaningless unless TCP, UDP or SCTP).
    pub port: u16,
}

impl Decision {
    /// Whether the connection is allowed: neither side denies it.
    pub fn allowed(&self) -> bool {
        !matches!(self.egress, Side::Denied { .. }) && !matches!(self.ingress, Side::Denied { .. })
    }
}

/// Decides a connection from `src` to `dst` with IP protocol `proto` (6 TCP, 17 UDP, 132
/// SCTP, anything else portless) to destination port `port`. Call it for `weft policy
/// explain`, and in tests as the reference for the compiled rules.
pub fn evaluate(world: &World, src: Ipv4Addr, dst: Ipv4Addr, proto: u8, port: u16) -> Decision {
    let src_pod = world.pod_of(src);
    let dst_pod = world.pod_of(dst);
    let mut order: Vec<&Policy> = world.policies.iter().collect();
    order.sort_by(|a, b| a.key.cmp(&b.key));
    let proto_port = Proto::from_number(proto).map(|p| (p, port));
    let egress = match src_pod {
        None => Side::NotAPod,
        Some(pod) => side(
            world,
            &order,
            Direction::Egress,
            pod,
            (dst, dst_pod),
            proto_port,
        ),
    };
    let ingress = match dst_pod {
        None => Side::NotAPod,
        Some(pod) => side(
            world,
            &order,
            Direction::Ingress,
            pod,
            (src, src_pod),
            proto_port,
        ),
    };
    Decision {
        egress,
        ingress,
        src,
        dst,
        proto,
        port,
    }
}

/// One side: `pod` is the selected pod, `other` the far end (address, and pod if any).
fn side(
    world: &World,
    order: &[&Policy],
    dir: Direction,
    pod: &Pod,
    other: (Ipv4Addr, Option<&Pod>),
    proto_port: Option<(Proto, u16)>,
) -> Side {
    // Named ports resolve on the destination: the selected pod for ingress, the far end
    // for egress.
    let dst_pod = match dir {
        Direction::Ingress => Some(pod),
        Direction::Egress => other.1,
    };
    let mut isolating = Vec::new();
    for p in order {
        if p.key.namespace != pod.namespace
            || !dir.isolated_by(p)
            || !p.pod_selector.matches(&pod.labels)
        {
            continue;
        }
        for (i, r) in dir.rules(p).iter().enumerate() {
            let peer_ok = r.peers.is_empty()
                || r.peers
                    .iter()
                    .any(|peer| peer_matches(world, &p.key.namespace, peer, other));
            let port_ok = r.ports.is_empty()
                || proto_port
                    .is_some_and(|pp| r.ports.iter().any(|x| port_matches(x, pp, dst_pod)));
            if peer_ok && port_ok {
                return Side::Allowed {
                    policy: p.key.clone(),
                    rule: i,
                };
            }
        }
        isolating.push(p.key.clone());
    }
    if isolating.is_empty() {
        Side::NotIsolated
    } else {
        Side::Denied {
            policies: isolating,
        }
    }
}

fn peer_matches(world: &World, ns: &str, peer: &Peer, other: (Ipv4Addr, Option<&Pod>)) -> bool {
    match peer {
        Peer::Block(b) => b.contains(other.0),
        Peer::Pods { .. } => other
            .1
            .is_some_and(|pod| world.peer_matches_pod(ns, peer, pod)),
    }
}

fn port_matches(p: &Port, (proto, port): (Proto, u16), dst_pod: Option<&Pod>) -> bool {
    p.proto == proto
        && match &p.port {
            PortMatch::Any => true,
            PortMatch::Range { port: lo, end } => (*lo..=*end).contains(&port),
            PortMatch::Named(n) => dst_pod.and_then(|d| d.named_port(n, proto)) == Some(port),
        }
}

/// What was asked: `tcp/80`, `icmp`, `proto 47`.
struct Asked(u8, u16);

impl fmt::Display for Asked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (Proto::from_number(self.0), self.0) {
            (Some(p), _) => write!(f, "{p}/{}", self.1),
            (None, 1) => f.write_str("icmp"),
            (None, n) => write!(f, "proto {n}"),
        }
    }
}

impl Decision {
    fn write_side(&self, f: &mut fmt::Formatter<'_>, dir: Direction) -> fmt::Result {
        let (side, addr) = match dir {
            Direction::Egress => (&self.egress, self.src),
            Direction::Ingress => (&self.ingress, self.dst),
        };
        match side {
            Side::NotAPod => write!(f, "{dir}: {addr} is no pod"),
            Side::NotIsolated => write!(f, "{dir} not isolated"),
            Side::Allowed { policy, rule } => write!(f, "{dir} allowed by {policy} rule {rule}"),
            Side::Denied { policies } => {
                // Isolating policies are all of the pod's own namespace.
                let ns = policies.first().map_or("", |k| k.namespace.as_str());
                write!(f, "{dir} of {addr} (namespace {ns}) isolated by ")?;
                for (i, k) in policies.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}")?;
                }
                write!(f, "; no rule allows {}", Asked(self.proto, self.port))
            }
        }
    }
}

/// One line: `allowed: egress not isolated; ingress allowed by ns/web rule 0`, or
/// `denied: ingress of 10.32.0.2 (namespace ns) isolated by ns/a, ns/b; no rule allows
/// tcp/80` (only the denying sides).
impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let denied = |s: &Side| matches!(s, Side::Denied { .. });
        if self.allowed() {
            f.write_str("allowed: ")?;
            self.write_side(f, Direction::Egress)?;
            f.write_str("; ")?;
            self.write_side(f, Direction::Ingress)
        } else {
            f.write_str("denied: ")?;
            if denied(&self.egress) {
                self.write_side(f, Direction::Egress)?;
                if denied(&self.ingress) {
                    f.write_str("; ")?;
                }
            }
            if denied(&self.ingress) {
                self.write_side(f, Direction::Ingress)?;
            }
            Ok(())
        }
    }
}
