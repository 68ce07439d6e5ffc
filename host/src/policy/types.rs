//! The policy part of the control API's vocabulary (as `crate::messages` for the rest):
//! request and reply bodies of `/policy/*` and `/label`, and `weft status policy`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// One input file of `weft policy apply`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyDocument {
    /// Where it came from (a path, or `-`), for errors.
    pub(crate) source: String,
    /// Its text: YAML documents or JSON.
    pub(crate) text: String,
}

/// `POST /policy/apply`: every object of every document, applied all or nothing.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyApplyRequest {
    /// The documents.
    pub(crate) documents: Vec<PolicyDocument>,
}

/// The answer to `/policy/apply`: one line per object (`networkpolicy ns/name configured`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct PolicyApplyReply {
    /// What happened to each object.
    pub(crate) applied: Vec<String>,
}

/// `POST /policy/delete`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyDeleteRequest {
    /// The policy's namespace.
    pub(crate) namespace: String,
    /// Its name.
    pub(crate) name: String,
}

/// The answer to `/policy/delete`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct PolicyDeleteReply {
    /// `ns/name` of the policy deleted.
    pub(crate) deleted: String,
}

/// `POST /policy/explain`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyExplainRequest {
    /// Source address.
    pub(crate) src: std::net::Ipv4Addr,
    /// Destination address.
    pub(crate) dst: std::net::Ipv4Addr,
    /// Destination port (0 for protocols without ports).
    pub(crate) port: u16,
    /// `tcp`, `udp`, `sctp`, `icmp` or an IP protocol number.
    pub(crate) proto: String,
}

/// The answer to `/policy/explain`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct PolicyExplainReply {
    /// Whether a new connection would be allowed.
    pub(crate) allowed: bool,
    /// Why, one line.
    pub(crate) reason: String,
}

/// `POST /label`: change an attachment's labels and namespace.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LabelRequest {
    /// The attachment's namespace path.
    pub(crate) netns: PathBuf,
    /// `KEY -> Some(VALUE)` sets, `KEY -> None` removes.
    #[serde(default)]
    pub(crate) labels: BTreeMap<String, Option<String>>,
    /// A new policy namespace, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) namespace: Option<String>,
}

/// One policy in `weft status policy` / `weft policy ls`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct PolicyLine {
    /// `ns/name`.
    pub(crate) policy: String,
    /// Isolates the pods it selects for ingress.
    pub(crate) ingress: bool,
    /// Isolates them for egress.
    pub(crate) egress: bool,
    /// Ingress rules.
    pub(crate) ingress_rules: u64,
    /// Egress rules.
    pub(crate) egress_rules: u64,
    /// This host's pods it selects.
    pub(crate) local_pods: u64,
    /// Packets dropped here at pods it isolates.
    pub(crate) blocked_packets: u64,
}

/// How many packets one rule allowed here.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct PolicyRuleCount {
    /// `ns/name`.
    pub(crate) policy: String,
    /// `ingress` or `egress`.
    pub(crate) direction: String,
    /// The rule's index in the policy.
    pub(crate) rule: u64,
    /// Packets (the first of each connection; the rest are accepted as established).
    pub(crate) packets: u64,
}

/// `GET /status/policy`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct PolicyStatus {
    /// The nftables table (`inet weft-policy`).
    pub(crate) table: String,
    /// When the table was last replaced (unix seconds; 0: not yet).
    pub(crate) applied_at_unix_s: u64,
    /// How long compiling and rendering took.
    pub(crate) compile_ms: u64,
    /// Tables built.
    pub(crate) applies: u64,
    /// Tables nftables refused (the previous one stayed).
    pub(crate) errors: u64,
    /// Why the last one was refused.
    pub(crate) last_error: Option<String>,
    /// Pods known (all hosts).
    pub(crate) pods: u64,
    /// Pods on this host.
    pub(crate) local_pods: u64,
    /// Namespaces with labels.
    pub(crate) namespaces: Vec<String>,
    /// Local pod addresses isolated for ingress.
    pub(crate) isolated_ingress: u64,
    /// Local pod addresses isolated for egress.
    pub(crate) isolated_egress: u64,
    /// Pod chains in the table (pods with the same allowances share one).
    pub(crate) chains: u64,
    /// Set elements in the table.
    pub(crate) elements: u64,
    /// Every policy.
    pub(crate) policies: Vec<PolicyLine>,
    /// Every rule's packet count.
    pub(crate) rules: Vec<PolicyRuleCount>,
    /// A hash of the replicated state the table was built from: routers that show the
    /// same digest enforce the same policies over the same pods.
    pub(crate) digest: String,
}
