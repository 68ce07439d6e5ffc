//! The driver's policy part: `weft policy apply/delete` reach the router's replicated
//! policy state here, this host's pods (from the recorded attachments) are set as ours,
//! and every change of the replicated state (or of who is reachable) is handed to the
//! enforcer as a [`Snapshot`].

use super::{Answer, Driver};
use crate::messages::ApiError;
use crate::policy::enforce::Snapshot;
use crate::policy::k8s::Object;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use weft_core::conn::ConnState;
use weft_core::policy::{Labels, Pod, Policy, PolicyKey};

/// A router that finds a table of its previous run keeps it until it has had a
/// connection for this long (its peers' gossip has arrived)...
pub(crate) const POLICY_SETTLE_CONNECTED_MS: u64 = 2_000;
/// ...or until it has run this long.
pub(crate) const POLICY_SETTLE_MAX_MS: u64 = 10_000;

/// A policy command from the control API.
pub(crate) enum PolicyRequest {
    /// Apply these objects, all or none; answers one line per object.
    Apply {
        objects: Vec<Object>,
        answer: Answer<Vec<String>>,
    },
    /// Delete one policy.
    Delete { key: PolicyKey, answer: Answer<()> },
}

/// What the driver keeps for policy.
#[derive(Default)]
pub(crate) struct PolicyState {
    /// Where snapshots go (none until the daemon sets it).
    tx: Option<watch::Sender<Option<Arc<Snapshot>>>>,
    /// Our pods as last set in the router.
    pods: BTreeMap<String, Pod>,
    pods_version: u64,
    /// What the last snapshot was made of.
    synced: Option<(u64, u64, u64, bool)>,
    /// When the first connection was established.
    first_established: Option<std::time::Instant>,
}

impl Driver {
    /// Starts handing snapshots to `tx`; `shared` is the state the previous run saved.
    pub(crate) fn set_policy(
        &mut self,
        tx: watch::Sender<Option<Arc<Snapshot>>>,
        shared: Option<Vec<u8>>,
    ) {
        if let Some(bytes) = shared {
            let now = self.now();
            if let Err(e) = self.router.policy_import_shared(now, &bytes) {
                tracing::warn!("saved policy state not loaded ({e}); peers will send theirs");
            }
        }
        self.policy.tx = Some(tx);
    }

    pub(super) fn policy_request(&mut self, req: PolicyRequest) {
        let now = self.now();
        match req {
            PolicyRequest::Apply { objects, answer } => {
                let _ = answer.send(self.policy_apply(objects));
            }
            PolicyRequest::Delete { key, answer } => {
                let r = match self.router.policy_delete(now, &key) {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(ApiError::NotFound(format!("no network policy {key}"))),
                    Err(e) => Err(ApiError::BadRequest(format!("policy {key}: {e}"))),
                };
                let _ = answer.send(r);
            }
        }
    }

    fn policy_apply(&mut self, objects: Vec<Object>) -> Result<Vec<String>, ApiError> {
        let before = self.router.policy_world();
        let mut lines = Vec::new();
        let mut policies: Vec<Policy> = Vec::new();
        let mut namespaces: Vec<(String, Labels)> = Vec::new();
        for o in objects {
            match o {
                Object::Policy(p) => {
                    let what = match before.policies.iter().find(|q| q.key == p.key) {
                        None => "created",
                        Some(q) if *q == p => "unchanged",
                        Some(_) => "configured",
                    };
                    lines.push(format!("networkpolicy {} {what}", p.key));
                    policies.retain(|q| q.key != p.key);
                    policies.push(p);
                }
                Object::Namespace(n, l) => {
                    let what = match before.namespaces.get(&n) {
                        None => "configured",
                        Some(old) if *old == l => "unchanged",
                        Some(_) => "configured",
                    };
                    lines.push(format!("namespace {n} {what}"));
                    namespaces.retain(|(m, _)| *m != n);
                    namespaces.push((n, l));
                }
            }
        }
        let now = self.now();
        self.router
            .policy_apply(now, policies, namespaces)
            .map_err(|e| ApiError::BadRequest(format!("policy refused: {e}")))?;
        Ok(lines)
    }

    /// This host's pods, as the recorded attachments have them now.
    pub(super) fn policy_pods(&mut self, pods: BTreeMap<String, Pod>) {
        let now = self.now();
        let gone: Vec<String> = self
            .policy
            .pods
            .keys()
            .filter(|id| !pods.contains_key(*id))
            .cloned()
            .collect();
        for id in gone {
            if let Err(e) = self.router.policy_set_pod(now, &id, None) {
                tracing::warn!("policy: attachment {id} not removed from the policy state: {e}");
            }
        }
        for (id, pod) in &pods {
            if self.policy.pods.get(id) != Some(pod) {
                if let Err(e) = self.router.policy_set_pod(now, id, Some(pod.clone())) {
                    tracing::warn!("policy: attachment {id} not in the policy state: {e}");
                }
            }
        }
        if self.policy.pods != pods {
            self.policy.pods = pods;
            self.policy.pods_version += 1;
        }
    }

    fn policy_settled(&mut self) -> bool {
        let connected = self
            .router
            .connections()
            .any(|c| c.state == ConnState::Established);
        if connected && self.policy.first_established.is_none() {
            self.policy.first_established = Some(std::time::Instant::now());
        }
        let up = self.started.elapsed().unwrap_or_default();
        up >= Duration::from_millis(POLICY_SETTLE_MAX_MS)
            || self
                .policy
                .first_established
                .is_some_and(|t| t.elapsed() >= Duration::from_millis(POLICY_SETTLE_CONNECTED_MS))
    }

    /// Hands the enforcer a new snapshot when anything it is made of changed.
    pub(super) fn sync_policy(&mut self) {
        if self.policy.tx.is_none() {
            return;
        }
        let settled = self.policy_settled();
        let key = (
            self.router.policy_generation(),
            0,
            self.policy.pods_version,
            settled,
        );
        if self.policy.synced == Some(key) {
            return;
        }
        self.policy.synced = Some(key);
        let snap = Snapshot {
            world: self.router.policy_world(),
            local: self.policy.pods.clone(),
            shared: self.router.policy_export_shared(),
            settled,
        };
        if let Some(tx) = &self.policy.tx {
            tx.send_replace(Some(Arc::new(snap)));
        }
    }
}
