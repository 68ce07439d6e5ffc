//! Network policy on the host: Kubernetes objects parsed into weft-core's model
//! ([`k8s`]), the compiled rule set rendered into weft's own nftables table ([`nft`]) and
//! kept applied as the replicated state changes ([`enforce`]), the control API's side
//! ([`types`], [`serve`]) and the CLI's ([`cmd`]).

pub(crate) mod cmd;
pub(crate) mod enforce;
pub(crate) mod k8s;
pub(crate) mod nflog;
pub(crate) mod nft;
pub(crate) mod pods;
pub(crate) mod serve;
pub(crate) mod types;

/// The file in the state directory holding the replicated policy state (policies and
/// namespace labels with their versions), loaded at start.
pub(crate) const STATE_FILE: &str = "policy.state";
