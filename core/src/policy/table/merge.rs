//! Gossip into a [`PolicyTable`]: merging messages, a dead peer's pods, timers and
//! outputs (the rules are in [`super`]).

use super::{
    Changes, LWW_TOMBSTONE_TTL_MS, Lww, NAMESPACES_MAX, Output, POD_TOMBSTONE_TTL_MS, PODS_MAX,
    POLICIES_MAX, POLICY_TICK_MS, PodSlot, PolicyStats, PolicyTable, REMOVED_PEER_TTL_MS,
    REMOVED_PEERS_MAX, Stamp, make_room, pod_rank,
};
use crate::peer::PeerName;
use crate::policy::wire::{self, Msg, PodEntry};
use crate::time::{Duration, Instant};
use crate::wire::WireError;
use alloc::collections::BTreeMap;

impl PolicyTable {
    /// Merges a CHANNEL_POLICY message from neighbour `from`. `in_topology` tells whether
    /// a peer is in the router's topology (pods of removed peers are ignored unless it is
    /// back). What changed is flooded on. Garbage is an error (the router drops the
    /// connection). Returns how many entries changed here.
    pub fn handle_message(
        &mut self,
        now: Instant,
        from: PeerName,
        payload: &[u8],
        in_topology: impl Fn(PeerName) -> bool,
    ) -> Result<usize, WireError> {
        let msg = wire::parse(payload).inspect_err(|_| self.stats.malformed += 1)?;
        let mut merged = Changes::default();
        let mut refreshed = Changes::default();
        self.merge(now, msg, &in_topology, &mut merged, &mut refreshed);
        let n = merged.len() + refreshed.len();
        self.changed(Some(from), &merged);
        self.changed(None, &refreshed);
        Ok(n)
    }

    /// Merges one parsed message; what changed goes to `merged`, our own pods answered
    /// with a newer version to `refreshed`.
    pub(super) fn merge(
        &mut self,
        now: Instant,
        msg: Msg,
        in_topology: &dyn Fn(PeerName) -> bool,
        merged: &mut Changes,
        refreshed: &mut Changes,
    ) {
        // Whether this message found its map full with no tombstone to evict.
        let mut no_tombs = false;
        match msg {
            Msg::Policies(entries) => {
                for e in entries {
                    self.lamport = self.lamport.max(e.stamp.lamport);
                    let (map, stats) = (&mut self.policies, &mut self.stats);
                    let entry = (&e.key, e.stamp, e.policy);
                    if merge_lww(map, POLICIES_MAX, entry, now, stats, &mut no_tombs) {
                        merged.policies.push(e.key);
                    }
                }
            }
            Msg::Namespaces(entries) => {
                for e in entries {
                    self.lamport = self.lamport.max(e.stamp.lamport);
                    let (map, stats) = (&mut self.namespaces, &mut self.stats);
                    let entry = (&e.name, e.stamp, e.labels);
                    if merge_lww(map, NAMESPACES_MAX, entry, now, stats, &mut no_tombs) {
                        merged.namespaces.push(e.name);
                    }
                }
            }
            Msg::Pods(entries) => {
                for e in entries {
                    self.merge_pod(now, e, in_topology, (merged, refreshed), &mut no_tombs);
                }
            }
        }
    }

    fn merge_pod(
        &mut self,
        now: Instant,
        e: PodEntry,
        in_topology: &dyn Fn(PeerName) -> bool,
        (merged, refreshed): (&mut Changes, &mut Changes),
        no_tombs: &mut bool,
    ) {
        let owner = e.key.owner;
        let local = self.pods.get(&e.key);
        let known = local.is_some();
        let stale = local.is_some_and(|s| s.rank() >= pod_rank(&e));
        let held = local.and_then(|s| s.pod.clone());
        if owner == self.me {
            self.pod_clock = self.pod_clock.max(e.version);
            if stale {
                return;
            }
            // A peer knows a newer version of our own pod than we do: we restarted, or
            // forgot a tombstone. We decide: what we hold live stays live, anything else
            // is detached, with a version above theirs.
            if !known
                && !make_room(
                    &mut self.pods,
                    PODS_MAX,
                    &mut self.stats.tombstones_evicted,
                    no_tombs,
                )
            {
                self.stats.drops_full += 1;
                return;
            }
            self.pod_clock = self.pod_clock.saturating_add(1);
            let slot = PodSlot {
                version: self.pod_clock,
                pod: held,
                since: now,
            };
            self.pods.insert(e.key.clone(), slot);
            self.stats.own_pods_refreshed += 1;
            refreshed.pods.push(e.key);
            return;
        }
        if in_topology(owner) {
            self.removed.remove(&owner);
        } else if self.removed.contains_key(&owner) {
            self.stats.pods_of_removed_peers += 1;
            return;
        }
        if stale {
            return;
        }
        if !known
            && (e.pod.is_none() && self.pods.len() >= PODS_MAX
                || !make_room(
                    &mut self.pods,
                    PODS_MAX,
                    &mut self.stats.tombstones_evicted,
                    no_tombs,
                ))
        {
            self.stats.drops_full += 1;
            return;
        }
        let slot = PodSlot {
            version: e.version,
            pod: e.pod,
            since: now,
        };
        self.pods.insert(e.key.clone(), slot);
        self.stats.entries_merged += 1;
        merged.pods.push(e.key);
    }

    /// Call when `peer` left the topology: drops its pods here, and ignores gossip about
    /// them for [`REMOVED_PEER_TTL_MS`] unless it comes back. Its policies and namespace
    /// labels stay. Returns how many pods went.
    pub fn peer_removed(&mut self, now: Instant, peer: PeerName) -> usize {
        if peer == self.me {
            return 0;
        }
        let before = self.pods.len();
        self.pods.retain(|k, _| k.owner != peer);
        let n = before - self.pods.len();
        if n > 0 {
            self.generation += 1;
            self.stats.pods_of_dead_peers_dropped += n as u64;
        }
        if self.removed.len() >= REMOVED_PEERS_MAX
            && let Some(oldest) = self
                .removed
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(p, _)| *p)
        {
            self.removed.remove(&oldest);
        }
        self.removed.insert(peer, now);
        n
    }

    /// Call when a connection to `peer` is established: it gets our full state.
    pub fn on_neighbour(&mut self, peer: PeerName) {
        for m in self.encode_state() {
            self.push_output(Output::Neighbour(peer, m));
        }
    }

    /// When [`PolicyTable::handle_timeout`] wants to run.
    pub fn poll_timeout(&self) -> Instant {
        self.next_tick_at.min(self.next_gossip_at)
    }

    /// Expires tombstones and removed-peer marks; sends the periodic full state.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.next_tick_at {
            self.next_tick_at = now + Duration::from_millis(POLICY_TICK_MS);
            let lww_ttl = Duration::from_millis(LWW_TOMBSTONE_TTL_MS);
            let pod_ttl = Duration::from_millis(POD_TOMBSTONE_TTL_MS);
            let mut expired = expire(&mut self.policies, now, lww_ttl);
            expired += expire(&mut self.namespaces, now, lww_ttl);
            let before = self.pods.len();
            self.pods
                .retain(|_, s| s.pod.is_some() || now.saturating_since(s.since) < pod_ttl);
            expired += before - self.pods.len();
            self.stats.tombstones_expired += expired as u64;
            let ttl = Duration::from_millis(REMOVED_PEER_TTL_MS);
            self.removed.retain(|_, t| now.saturating_since(*t) < ttl);
        }
        if now >= self.next_gossip_at {
            self.next_gossip_at = now + self.gossip_interval;
            if !(self.policies.is_empty() && self.namespaces.is_empty() && self.pods.is_empty()) {
                for m in self.encode_state() {
                    self.push_output(Output::Random(m));
                }
            }
        }
    }

    /// The next message to send.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }
}

/// Takes `(stamp, value)` into `map` if it is greater than what `map` holds for `key`
/// (room permitting); whether it did.
fn merge_lww<K: Ord + Clone, V: Ord>(
    map: &mut BTreeMap<K, Lww<V>>,
    max: usize,
    (key, stamp, value): (&K, Stamp, Option<V>),
    now: Instant,
    stats: &mut PolicyStats,
    no_tombs: &mut bool,
) -> bool {
    if let Some(s) = map.get(key) {
        if (s.stamp, s.value.as_ref()) >= (stamp, value.as_ref()) {
            return false;
        }
    } else if value.is_none() && map.len() >= max
        || !make_room(map, max, &mut stats.tombstones_evicted, no_tombs)
    {
        // A deletion of a key we never had takes no tombstone's place; a live one may.
        stats.drops_full += 1;
        return false;
    }
    let slot = Lww {
        stamp,
        value,
        since: now,
    };
    map.insert(key.clone(), slot);
    stats.entries_merged += 1;
    true
}

/// Forgets the tombstones of `map` older than `ttl`; how many.
fn expire<K: Ord, V>(map: &mut BTreeMap<K, Lww<V>>, now: Instant, ttl: Duration) -> usize {
    let before = map.len();
    map.retain(|_, s| s.value.is_some() || now.saturating_since(s.since) < ttl);
    before - map.len()
}
