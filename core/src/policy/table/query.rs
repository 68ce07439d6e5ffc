//! What a [`PolicyTable`] answers: the world policy decisions depend on, status, the
//! entries gossip carries, and the state file of the shared part.

use super::{Changes, PolicyStats, PolicyStatus, PolicyTable};
use crate::peer::PeerName;
use crate::policy::World;
use crate::policy::wire::{self, NamespaceEntry, PodEntry, PolicyEntry};
use crate::time::Instant;
use crate::wire::WireError;
use alloc::vec::Vec;

impl PolicyTable {
    /// What policy decisions depend on: live policies in key order, namespace labels, and
    /// the live pods of us and of the owners `reachable` says yes to, in key order.
    pub fn world(&self, reachable: impl Fn(PeerName) -> bool) -> World {
        World {
            policies: self
                .policies
                .values()
                .filter_map(|s| s.value.clone())
                .collect(),
            namespaces: self
                .namespaces
                .iter()
                .filter_map(|(n, s)| Some((n.clone(), s.value.clone()?)))
                .collect(),
            pods: self
                .pods
                .iter()
                .filter(|(k, _)| k.owner == self.me || reachable(k.owner))
                .filter_map(|(_, s)| s.pod.clone())
                .collect(),
        }
    }

    /// Changes whenever the live state changes (reachability is the caller's).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Counters.
    pub fn stats(&self) -> PolicyStats {
        self.stats
    }

    /// Counts and policies for `weft status policy`.
    pub fn status(&self) -> PolicyStatus {
        let live_p = self.policies.iter().filter(|(_, s)| s.value.is_some());
        let live_n = self
            .namespaces
            .values()
            .filter(|s| s.value.is_some())
            .count();
        let live_pods = self.pods.iter().filter(|(_, s)| s.pod.is_some());
        PolicyStatus {
            policies: live_p.map(|(k, s)| (k.clone(), s.stamp)).collect(),
            policy_tombstones: self.policies.values().filter(|s| s.value.is_none()).count(),
            namespaces: live_n,
            namespace_tombstones: self.namespaces.len() - live_n,
            pods: live_pods.clone().count(),
            own_pods: live_pods.filter(|(k, _)| k.owner == self.me).count(),
            pod_tombstones: self.pods.values().filter(|s| s.pod.is_none()).count(),
            removed_peers: self.removed.len(),
            lamport: self.lamport,
            stats: self.stats,
        }
    }

    /// Every policy entry (tombstones too), in key order: what gossip carries.
    pub fn policy_entries(&self) -> impl Iterator<Item = PolicyEntry> + '_ {
        self.policies.iter().map(|(k, s)| PolicyEntry {
            key: k.clone(),
            stamp: s.stamp,
            policy: s.value.clone(),
        })
    }

    /// Every namespace entry (tombstones too), in key order.
    pub fn namespace_entries(&self) -> impl Iterator<Item = NamespaceEntry> + '_ {
        self.namespaces.iter().map(|(k, s)| NamespaceEntry {
            name: k.clone(),
            stamp: s.stamp,
            labels: s.value.clone(),
        })
    }

    /// Every pod entry (tombstones too), in key order.
    pub fn pod_entries(&self) -> impl Iterator<Item = PodEntry> + '_ {
        self.pods.iter().map(|(k, s)| PodEntry {
            key: k.clone(),
            version: s.version,
            pod: s.pod.clone(),
        })
    }

    /// The shared part (policies, namespaces, tombstones, our clocks) as a state file for
    /// the host to save (after [`PolicyTable::generation`] changed) and load at start.
    /// Tombstone ages are not saved: loaded ones live their full time again.
    pub fn export_shared(&self) -> Vec<u8> {
        let mut msgs = wire::encode_all(&self.policy_entries().collect::<Vec<_>>());
        msgs.extend(wire::encode_all(
            &self.namespace_entries().collect::<Vec<_>>(),
        ));
        wire::emit_export(self.lamport, self.pod_clock, &msgs)
    }

    /// Merges a state file from [`PolicyTable::export_shared`] (ours from before a
    /// restart, or another's) as gossip is merged; all or nothing. Returns how many
    /// entries changed.
    pub fn import_shared(&mut self, now: Instant, bytes: &[u8]) -> Result<usize, WireError> {
        let export = wire::parse_export(bytes)?;
        self.lamport = self.lamport.max(export.lamport);
        self.pod_clock = self.pod_clock.max(export.pod_version);
        let mut changes = Changes::default();
        for msg in export.msgs {
            self.merge(now, msg, &|_| true, &mut changes, &mut Changes::default());
        }
        self.changed(None, &changes);
        Ok(changes.len())
    }
}
