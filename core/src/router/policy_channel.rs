//! The router's policy channel: the CRDTs stay in `crate::policy::table`; this child of
//! `router` reaches the router's connections. It routes CHANNEL_POLICY gossip to the
//! [`PolicyTable`], sends what the table asks (news flooded to the neighbours, full state
//! to a new neighbour and periodically to a few), drops a removed peer's pods, and
//! exposes the commands the host uses.
//!
//! Host contract, in short:
//! - `weft policy apply`: [`Router::policy_apply`] (a batch, all or nothing); `weft policy
//!   delete`: [`Router::policy_delete`]; namespace labels: in the batch, removed with
//!   [`Router::policy_delete_namespace`].
//! - attach / relabel / detach: [`Router::policy_set_pod`] with the attachment id.
//! - Rendering: [`Router::policy_world`] whenever [`Router::policy_generation`] changed
//!   (it covers reachability: pods of unreachable owners leave the world at once, and are
//!   dropped for good once the peer GC removes the owner).
//! - Persistence: save [`Router::policy_export_shared`] to the state dir when the
//!   generation changed; at start, before connecting, [`Router::policy_import_shared`].
//!   Our pods are not saved: re-set them from the attachments at start.
//! - `weft status policy`: [`Router::policy_status`].

use super::Router;
use crate::conn::ConnId;
use crate::peer::PeerName;
use crate::policy::table::{ApplyStats, Output, PolicyStatus};
use crate::policy::{Labels, Pod, Policy, PolicyError, PolicyKey, PolicyTable, World};
use crate::time::Instant;
use crate::wire::WireError;
use crate::wire::frame::CHANNEL_POLICY;
use alloc::collections::BTreeSet;
use alloc::string::String;
use alloc::vec::Vec;

impl Router {
    /// The replicated policy state (entries, tombstones, counters).
    pub fn policy(&self) -> &PolicyTable {
        &self.policy
    }

    /// Applies policies and namespace labels as one batch, checked first, nothing applied
    /// if one is refused; gossiped at once. See [`PolicyTable::apply`].
    pub fn policy_apply(
        &mut self,
        now: Instant,
        policies: Vec<Policy>,
        namespaces: Vec<(String, Labels)>,
    ) -> Result<ApplyStats, PolicyError> {
        let r = self.policy.apply(now, policies, namespaces);
        self.policy_pump(now);
        r
    }

    /// Deletes a policy; gossiped at once. `Ok(false)` if none was in force.
    pub fn policy_delete(&mut self, now: Instant, key: &PolicyKey) -> Result<bool, PolicyError> {
        let r = self.policy.delete(now, key);
        self.policy_pump(now);
        r
    }

    /// Removes a namespace's labels; gossiped at once. `Ok(false)` if it had none.
    pub fn policy_delete_namespace(
        &mut self,
        now: Instant,
        name: &str,
    ) -> Result<bool, PolicyError> {
        let r = self.policy.delete_namespace(now, name);
        self.policy_pump(now);
        r
    }

    /// Sets (`Some`) or removes (`None`) our attachment `id` as policy sees it; gossiped
    /// at once. `Ok(false)` if it already was so.
    pub fn policy_set_pod(
        &mut self,
        now: Instant,
        id: &str,
        pod: Option<Pod>,
    ) -> Result<bool, PolicyError> {
        let r = self.policy.set_pod(now, id, pod);
        self.policy_pump(now);
        r
    }

    /// Policies, namespace labels, and the pods of us and of every reachable router.
    pub fn policy_world(&mut self) -> World {
        let mut ok: BTreeSet<PeerName> = self.routes().reachable().collect();
        ok.insert(self.config.name);
        self.policy.world(|p| ok.contains(&p))
    }

    /// Changes whenever [`Router::policy_world`] may: the table's generation plus the
    /// topology's (both only grow, so their sum changes whenever either does).
    pub fn policy_generation(&self) -> u64 {
        self.policy
            .generation()
            .wrapping_add(self.topology.generation())
    }

    /// `weft status policy`: counts, policies with their stamps, counters.
    pub fn policy_status(&self) -> PolicyStatus {
        self.policy.status()
    }

    /// The shared part (policies, namespace labels, tombstones, clocks) as a state file.
    pub fn policy_export_shared(&self) -> Vec<u8> {
        self.policy.export_shared()
    }

    /// Merges a state file from [`Router::policy_export_shared`]; all or nothing. Returns
    /// how many entries changed (gossiped at once).
    pub fn policy_import_shared(&mut self, now: Instant, bytes: &[u8]) -> Result<usize, WireError> {
        let r = self.policy.import_shared(now, bytes);
        self.policy_pump(now);
        r
    }

    /// A CHANNEL_POLICY payload arrived on `conn`; garbage costs the connection.
    pub(super) fn on_policy_gossip(&mut self, now: Instant, conn: ConnId, payload: &[u8]) {
        let Some(from) = self.remote_name(conn) else {
            return;
        };
        // A neighbour is alive even before its topology entry reaches us.
        let (topology, by_peer) = (&self.topology, &self.by_peer);
        let r = self.policy.handle_message(now, from, payload, |p| {
            by_peer.contains_key(&p) || topology.get(p).is_some()
        });
        if let Err(e) = r {
            self.drop_malformed_gossip(now, conn, e);
        }
    }

    /// Runs the policy timer when due.
    pub(super) fn policy_timeout(&mut self, now: Instant) {
        if now >= self.policy.poll_timeout() {
            self.policy.handle_timeout(now);
        }
    }

    /// Sends what the policy table asked to send.
    pub(super) fn policy_pump(&mut self, now: Instant) {
        while let Some(out) = self.policy.poll_output() {
            match out {
                Output::Neighbours { except, msg } => {
                    self.gossip_neighbours(now, CHANNEL_POLICY, except, &msg);
                }
                Output::Random(msg) => self.gossip_random(now, CHANNEL_POLICY, &msg),
                Output::Neighbour(p, msg) => self.gossip_one(now, CHANNEL_POLICY, p, &msg),
            }
        }
    }
}
