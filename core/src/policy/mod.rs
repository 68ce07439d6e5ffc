//! Network policy: Kubernetes NetworkPolicy v1 semantics over weft's attachments.
//!
//! What it does: holds the typed model of policies ([`Policy`]), namespaces and their
//! labels, and attachments as policy sees them ([`Pod`]: addresses, namespace, labels,
//! named ports); [`eval`] decides one (source, destination, protocol, port) directly from
//! the Kubernetes rules (the reference, and `weft policy explain`); [`compile`] turns the
//! same inputs into a [`compile::RuleSet`] of disjoint address/port intervals per local
//! pod that a host renders into nftables (one lookup per packet, whatever the number of
//! pods or rules); [`table`] replicates policies, namespace labels and pod metadata to
//! every router as CRDTs on [`crate::wire::frame::CHANNEL_POLICY`], with [`wire`] the codec.
//!
//! What it does not do: parse YAML or JSON (the host does, into these types, naming the
//! field that is wrong), touch nftables, or see packets. Addresses are IPv4 (weft's IPAM
//! hands out IPv4); an IPv6 `ipBlock` is kept by the host and never matches here.
//!
//! Semantics, as Kubernetes defines them: a pod is isolated for ingress (egress) when a
//! policy of its namespace selects it and lists `Ingress` (`Egress`) in its policy types;
//! then a connection is allowed only if some rule of such a policy allows it, and the
//! policies add up (union). A connection needs the source's egress and the destination's
//! ingress allowed; replies of an allowed connection are allowed (the host's conntrack).

// The compiler's interval bookkeeping uses tuples of spans and rule references; naming
// each one would not make it clearer.
#[allow(clippy::type_complexity)]
pub mod compile;
pub mod eval;
pub mod table;
pub mod wire;

#[cfg(test)]
mod crdt_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod wire_tests;

pub use self::table::PolicyTable;

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::net::Ipv4Addr;

/// Longest namespace or policy name (a DNS label, RFC 1123).
pub const NAME_LEN_MAX: usize = 63;
/// Longest label key (optional DNS-subdomain prefix of 253 bytes, `/`, name of 63).
pub const LABEL_KEY_LEN_MAX: usize = 317;
/// Longest label value.
pub const LABEL_VALUE_LEN_MAX: usize = 63;
/// Most labels on one pod or namespace.
pub const LABELS_MAX: usize = 64;
/// Most rules in one direction of one policy, peers in one rule, ports in one rule,
/// expressions in one selector, values in one expression, `except` blocks in one ipBlock.
pub const LIST_MAX: usize = 256;
/// Most named ports on one pod.
pub const NAMED_PORTS_MAX: usize = 64;
/// The label every namespace has: its own name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// The namespace of an attachment that names none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Why a policy object, label or name was refused; [`fmt::Display`] says what is allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyError {
    /// A namespace, policy or port name that is not a DNS label.
    BadName,
    /// A label key that is not `[prefix/]name` as Kubernetes allows.
    BadLabelKey,
    /// A label value longer than 63 bytes or with other bytes than alphanumerics, `-_.`
    /// (not at the ends).
    BadLabelValue,
    /// More than a limit of this module allows.
    TooMany,
    /// `endPort` below `port`, or `endPort` with a named port or without a port.
    BadPortRange,
    /// A prefix longer than 32 or an `except` not inside its `cidr`.
    BadCidr,
    /// An `In`/`NotIn` expression without values or an `Exists`/`DoesNotExist` with some.
    BadExpression,
    /// An attachment id that is empty, longer than [`table::POD_ID_LEN_MAX`] bytes or not
    /// printable ASCII.
    BadPodId,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BadName => "must be 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit",
            Self::BadLabelKey => "label keys are [prefix/]name: name 1-63 alphanumerics, '-', '_' or '.', prefix a DNS subdomain",
            Self::BadLabelValue => "label values are at most 63 alphanumerics, '-', '_' or '.', beginning and ending with an alphanumeric",
            Self::TooMany => "too many entries",
            Self::BadPortRange => "endPort must be a number not below port, and only with a numeric port",
            Self::BadCidr => "not an IPv4 CIDR, or an except block outside its cidr",
            Self::BadExpression => "operators In and NotIn need values; Exists and DoesNotExist take none",
            Self::BadPodId => "attachment id must be 1 to 64 printable ASCII bytes",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for PolicyError {}

/// Checks a namespace, policy or port name (RFC 1123 label, lowercase).
pub fn check_name(s: &str) -> Result<(), PolicyError> {
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= NAME_LEN_MAX
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-';
    if ok {
        Ok(())
    } else {
        Err(PolicyError::BadName)
    }
}

fn label_name_ok(b: &[u8]) -> bool {
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// Checks a label key: `name` or `prefix/name`.
pub fn check_label_key(s: &str) -> Result<(), PolicyError> {
    let b = s.as_bytes();
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p.as_bytes()), n.as_bytes()),
        None => (None, b),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split(|c| *c == b'.').all(|l| {
                !l.is_empty()
                    && l.iter()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            })
    });
    if prefix_ok && label_name_ok(name) {
        Ok(())
    } else {
        Err(PolicyError::BadLabelKey)
    }
}

/// Checks a label value (may be empty).
pub fn check_label_value(s: &str) -> Result<(), PolicyError> {
    if s.is_empty() || label_name_ok(s.as_bytes()) {
        Ok(())
    } else {
        Err(PolicyError::BadLabelValue)
    }
}

/// A set of labels (`key -> value`), checked.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Labels(BTreeMap<String, String>);

impl Labels {
    /// No labels.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value`, checking both and [`LABELS_MAX`].
    pub fn insert(&mut self, key: &str, value: &str) -> Result<(), PolicyError> {
        check_label_key(key)?;
        check_label_value(value)?;
        if !self.0.contains_key(key) && self.0.len() >= LABELS_MAX {
            return Err(PolicyError::TooMany);
        }
        self.0.insert(String::from(key), String::from(value));
        Ok(())
    }

    /// Removes `key`; whether it was there.
    pub fn remove(&mut self, key: &str) -> bool {
        self.0.remove(key).is_some()
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Every label, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// How many labels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// No labels at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A label selector's operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operator {
    /// The key is present and its value is one of the values.
    In,
    /// The key is absent, or its value is none of the values.
    NotIn,
    /// The key is present.
    Exists,
    /// The key is absent.
    DoesNotExist,
}

/// One `matchExpressions` entry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// The operator.
    pub op: Operator,
    /// The values (`In`, `NotIn` only; sorted, without duplicates).
    pub values: Vec<String>,
}

impl Requirement {
    /// Whether `labels` meet this requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        let v = labels.get(&self.key);
        match self.op {
            Operator::In => v.is_some_and(|v| self.values.iter().any(|x| x == v)),
            Operator::NotIn => v.is_none_or(|v| !self.values.iter().any(|x| x == v)),
            Operator::Exists => v.is_some(),
            Operator::DoesNotExist => v.is_none(),
        }
    }

    /// Checks key, values and operator/values agreement.
    pub fn check(&self) -> Result<(), PolicyError> {
        check_label_key(&self.key)?;
        if self.values.len() > LIST_MAX {
            return Err(PolicyError::TooMany);
        }
        for v in &self.values {
            check_label_value(v)?;
        }
        let wants_values = matches!(self.op, Operator::In | Operator::NotIn);
        if wants_values == self.values.is_empty() {
            return Err(PolicyError::BadExpression);
        }
        Ok(())
    }
}

/// A label selector: every `matchLabels` pair and every expression must hold. The empty
/// selector selects everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Selector {
    /// `matchLabels`.
    pub match_labels: Labels,
    /// `matchExpressions`.
    pub match_expressions: Vec<Requirement>,
}

impl Selector {
    /// The selector that selects everything (`{}`).
    pub fn all() -> Self {
        Self::default()
    }

    /// Whether `labels` are selected.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }

    /// Checks the expressions and [`LIST_MAX`].
    pub fn check(&self) -> Result<(), PolicyError> {
        if self.match_expressions.len() > LIST_MAX {
            return Err(PolicyError::TooMany);
        }
        self.match_expressions
            .iter()
            .try_for_each(Requirement::check)
    }
}

/// An IPv4 prefix, address bits beyond the prefix zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    /// The network address.
    pub addr: Ipv4Addr,
    /// The prefix length, 0 to 32.
    pub prefix: u8,
}

impl Cidr {
    /// The prefix of `addr`/`prefix` (host bits cleared, as Kubernetes accepts them).
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Self, PolicyError> {
        if prefix > 32 {
            return Err(PolicyError::BadCidr);
        }
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        Ok(Self {
            addr: Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
        })
    }

    /// First and last address, inclusive.
    pub fn range(&self) -> (u32, u32) {
        let first = u32::from(self.addr);
        let size_m1 = if self.prefix == 0 {
            u32::MAX
        } else {
            (1u32 << (32 - self.prefix)) - 1
        };
        (first, first | size_m1)
    }

    /// Whether `a` is inside.
    pub fn contains(&self, a: Ipv4Addr) -> bool {
        let (lo, hi) = self.range();
        (lo..=hi).contains(&u32::from(a))
    }

    /// Whether `other` lies inside this prefix.
    pub fn covers(&self, other: &Self) -> bool {
        other.prefix >= self.prefix && self.contains(other.addr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// `ipBlock`: addresses in `cidr` but in none of `except`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpBlock {
    /// The block.
    pub cidr: Cidr,
    /// Holes in it; each inside `cidr`.
    pub except: Vec<Cidr>,
}

impl IpBlock {
    /// Whether `a` is in the block and outside every hole.
    pub fn contains(&self, a: Ipv4Addr) -> bool {
        self.cidr.contains(a) && !self.except.iter().any(|e| e.contains(a))
    }

    /// Checks that every hole is inside the block, and [`LIST_MAX`].
    pub fn check(&self) -> Result<(), PolicyError> {
        if self.except.len() > LIST_MAX {
            return Err(PolicyError::TooMany);
        }
        if self.except.iter().all(|e| self.cidr.covers(e)) {
            Ok(())
        } else {
            Err(PolicyError::BadCidr)
        }
    }
}

/// One `from` / `to` entry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Peer {
    /// Pods: `pods` alone selects in the policy's namespace; `namespaces` alone selects
    /// every pod of the matching namespaces; both select matching pods in matching
    /// namespaces. At least one is `Some`.
    Pods {
        /// `podSelector`.
        pods: Option<Selector>,
        /// `namespaceSelector`.
        namespaces: Option<Selector>,
    },
    /// `ipBlock`.
    Block(IpBlock),
}

/// A transport protocol a policy port names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    /// TCP (the default when a port names none).
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Proto {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Self::Tcp => 6,
            Self::Udp => 17,
            Self::Sctp => 132,
        }
    }

    /// The protocol of IP protocol number `n`, if it is one of these.
    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            6 => Some(Self::Tcp),
            17 => Some(Self::Udp),
            132 => Some(Self::Sctp),
            _ => None,
        }
    }

    /// Lowercase name, as nftables and the CLI write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which ports of a protocol a policy port allows.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PortMatch {
    /// Every port (a `ports` entry with a protocol and no port).
    Any,
    /// `port` to `end` inclusive (`end == port` without `endPort`).
    Range {
        /// First port.
        port: u16,
        /// Last port.
        end: u16,
    },
    /// A named port of the destination pod (checked with [`check_name`]).
    Named(String),
}

/// One `ports` entry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Port {
    /// The protocol.
    pub proto: Proto,
    /// The ports.
    pub port: PortMatch,
}

/// One ingress or egress rule: traffic to or from any of `peers` (all, if empty) on any of
/// `ports` (all traffic, any protocol, if empty).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    /// `from` (ingress) or `to` (egress).
    pub peers: Vec<Peer>,
    /// `ports`.
    pub ports: Vec<Port>,
}

/// Identifies a policy: namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyKey {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

impl fmt::Display for PolicyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A NetworkPolicy, checked.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Policy {
    /// Namespace and name.
    pub key: PolicyKey,
    /// `spec.podSelector`: which pods of the namespace it selects.
    pub pod_selector: Selector,
    /// `Ingress` in `spec.policyTypes` (explicit, or implied: always unless only
    /// `Egress` was listed).
    pub ingress_isolates: bool,
    /// `Egress` in `spec.policyTypes` (explicit, or implied by egress rules).
    pub egress_isolates: bool,
    /// `spec.ingress`.
    pub ingress: Vec<Rule>,
    /// `spec.egress`.
    pub egress: Vec<Rule>,
}

impl Policy {
    /// Checks names, selectors, blocks, ports and every limit.
    pub fn check(&self) -> Result<(), PolicyError> {
        check_name(&self.key.namespace)?;
        check_name(&self.key.name)?;
        self.pod_selector.check()?;
        if self.ingress.len() > LIST_MAX || self.egress.len() > LIST_MAX {
            return Err(PolicyError::TooMany);
        }
        for r in self.ingress.iter().chain(&self.egress) {
            if r.peers.len() > LIST_MAX || r.ports.len() > LIST_MAX {
                return Err(PolicyError::TooMany);
            }
            for p in &r.peers {
                match p {
                    Peer::Pods { pods, namespaces } => {
                        if pods.is_none() && namespaces.is_none() {
                            return Err(PolicyError::BadExpression);
                        }
                        pods.iter()
                            .chain(namespaces)
                            .try_for_each(Selector::check)?;
                    }
                    Peer::Block(b) => b.check()?,
                }
            }
            for p in &r.ports {
                match &p.port {
                    PortMatch::Any => {}
                    PortMatch::Range { port, end } if end < port => {
                        return Err(PolicyError::BadPortRange);
                    }
                    PortMatch::Range { .. } => {}
                    PortMatch::Named(n) => check_name(n)?,
                }
            }
        }
        Ok(())
    }
}

/// A pod's named port (`--port NAME=PORT/PROTO`, Docker's exposed ports).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NamedPort {
    /// The name (checked with [`check_name`]).
    pub name: String,
    /// The protocol.
    pub proto: Proto,
    /// The port number.
    pub port: u16,
}

/// An attachment as policy sees it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pod {
    /// Its overlay addresses.
    pub addrs: Vec<Ipv4Addr>,
    /// Its namespace ([`DEFAULT_NAMESPACE`] unless given).
    pub namespace: String,
    /// Its labels.
    pub labels: Labels,
    /// Its named ports.
    pub ports: Vec<NamedPort>,
}

impl Pod {
    /// The port number `name` has for `proto` on this pod.
    pub fn named_port(&self, name: &str, proto: Proto) -> Option<u16> {
        self.ports
            .iter()
            .find(|p| p.name == name && p.proto == proto)
            .map(|p| p.port)
    }
}

/// Everything a decision depends on: the policies, the namespaces' labels and the pods.
/// A namespace with no entry in `namespaces` has only [`NAMESPACE_NAME_LABEL`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct World {
    /// Every policy.
    pub policies: Vec<Policy>,
    /// Labels of the namespaces that have some (besides the implied name label).
    pub namespaces: BTreeMap<String, Labels>,
    /// Every pod (local and remote).
    pub pods: Vec<Pod>,
}

impl World {
    /// The labels of namespace `ns`, with [`NAMESPACE_NAME_LABEL`] set to its name.
    pub fn namespace_labels(&self, ns: &str) -> Labels {
        let mut l = self.namespaces.get(ns).cloned().unwrap_or_default();
        // A namespace name that is not a label value cannot come from a checked pod or
        // policy; leave such a label out rather than fail.
        let _ = l.insert(NAMESPACE_NAME_LABEL, ns);
        l
    }

    /// The pod that has address `a`, if any.
    pub fn pod_of(&self, a: Ipv4Addr) -> Option<&Pod> {
        self.pods.iter().find(|p| p.addrs.contains(&a))
    }

    /// Whether `peer`, written in a policy of namespace `policy_ns`, matches `pod`.
    pub fn peer_matches_pod(&self, policy_ns: &str, peer: &Peer, pod: &Pod) -> bool {
        match peer {
            Peer::Pods { pods, namespaces } => {
                let ns_ok = match namespaces {
                    None => pod.namespace == policy_ns,
                    Some(sel) => sel.matches(&self.namespace_labels(&pod.namespace)),
                };
                ns_ok && pods.as_ref().is_none_or(|s| s.matches(&pod.labels))
            }
            Peer::Block(_) => false,
        }
    }
}
