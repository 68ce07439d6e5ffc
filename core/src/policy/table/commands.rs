//! What the host asks of a [`PolicyTable`]: apply a batch, delete a policy or a
//! namespace's labels, set or remove one of our own pods. Each checks everything before it
//! changes anything, and gossips what changed at once.

use super::{
    APPLY_BATCH_MAX, ApplyStats, Changes, Lww, NAMESPACES_MAX, PODS_MAX, POLICIES_MAX, PodKey,
    PodSlot, PolicyTable, Stamp, check_labels, check_pod, check_pod_id, has_room, make_room,
};
use crate::policy::{Labels, Pod, Policy, PolicyError, PolicyKey, check_name, wire};
use crate::time::Instant;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

impl PolicyTable {
    /// Applies policies and namespace labels as one batch (`weft policy apply -f`): all
    /// are checked first and nothing is applied if one is refused; within the batch a
    /// later object of the same key wins. Objects identical to the ones in force keep
    /// their stamp. What changed is gossiped at once.
    pub fn apply(
        &mut self,
        now: Instant,
        policies: Vec<Policy>,
        namespaces: Vec<(String, Labels)>,
    ) -> Result<ApplyStats, PolicyError> {
        if policies.len() + namespaces.len() > APPLY_BATCH_MAX {
            return Err(PolicyError::TooMany);
        }
        for p in &policies {
            p.check()?;
            if !wire::policy_fits(p) {
                return Err(PolicyError::TooMany);
            }
        }
        for (name, labels) in &namespaces {
            check_name(name)?;
            check_labels(labels)?;
        }
        let policies: BTreeMap<PolicyKey, Policy> =
            policies.into_iter().map(|p| (p.key.clone(), p)).collect();
        let namespaces: BTreeMap<String, Labels> = namespaces.into_iter().collect();
        let new_p = policies.keys().filter(|k| !self.policies.contains_key(*k));
        let new_n = namespaces
            .keys()
            .filter(|k| !self.namespaces.contains_key(*k));
        if !has_room(&self.policies, new_p.count(), POLICIES_MAX)
            || !has_room(&self.namespaces, new_n.count(), NAMESPACES_MAX)
        {
            return Err(PolicyError::TooMany);
        }
        let mut st = ApplyStats::default();
        let mut changes = Changes::default();
        for (key, p) in policies {
            if self.policies.get(&key).and_then(|s| s.value.as_ref()) == Some(&p) {
                st.policies_unchanged += 1;
                continue;
            }
            let stamp = self.next_stamp(now);
            let evicted = &mut self.stats.tombstones_evicted;
            put(
                &mut self.policies,
                POLICIES_MAX,
                evicted,
                key.clone(),
                p,
                stamp,
                now,
            );
            changes.policies.push(key);
            st.policies_changed += 1;
        }
        for (name, labels) in namespaces {
            if self.namespaces.get(&name).and_then(|s| s.value.as_ref()) == Some(&labels) {
                st.namespaces_unchanged += 1;
                continue;
            }
            let stamp = self.next_stamp(now);
            let evicted = &mut self.stats.tombstones_evicted;
            put(
                &mut self.namespaces,
                NAMESPACES_MAX,
                evicted,
                name.clone(),
                labels,
                stamp,
                now,
            );
            changes.namespaces.push(name);
            st.namespaces_changed += 1;
        }
        self.changed(None, &changes);
        Ok(st)
    }

    /// Deletes a policy (`weft policy delete`): `Ok(false)` if none is in force.
    pub fn delete(&mut self, now: Instant, key: &PolicyKey) -> Result<bool, PolicyError> {
        check_name(&key.namespace)?;
        check_name(&key.name)?;
        if self.policies.get(key).is_none_or(|s| s.value.is_none()) {
            return Ok(false);
        }
        let stamp = self.next_stamp(now);
        let slot = Lww {
            stamp,
            value: None,
            since: now,
        };
        self.policies.insert(key.clone(), slot);
        let changes = Changes {
            policies: alloc::vec![key.clone()],
            ..Changes::default()
        };
        self.changed(None, &changes);
        Ok(true)
    }

    /// Removes the labels of namespace `name` (it keeps its implied name label):
    /// `Ok(false)` if it had none.
    pub fn delete_namespace(&mut self, now: Instant, name: &str) -> Result<bool, PolicyError> {
        check_name(name)?;
        if self.namespaces.get(name).is_none_or(|s| s.value.is_none()) {
            return Ok(false);
        }
        let stamp = self.next_stamp(now);
        let slot = Lww {
            stamp,
            value: None,
            since: now,
        };
        self.namespaces.insert(String::from(name), slot);
        let changes = Changes {
            namespaces: alloc::vec![String::from(name)],
            ..Changes::default()
        };
        self.changed(None, &changes);
        Ok(true)
    }

    /// Sets (on attach or relabel) or, with `None`, removes (on detach) one of our own
    /// pods. `Ok(false)` if it already was so. Gossiped at once.
    pub fn set_pod(
        &mut self,
        now: Instant,
        id: &str,
        pod: Option<Pod>,
    ) -> Result<bool, PolicyError> {
        check_pod_id(id)?;
        if let Some(p) = &pod {
            check_pod(p)?;
        }
        let key = PodKey {
            owner: self.me,
            id: String::from(id),
        };
        let old = self.pods.get(&key);
        if old.map_or(pod.is_none(), |s| s.pod == pod) {
            return Ok(false);
        }
        let old_version = old.map_or(0, |s| s.version);
        if old.is_none()
            && !make_room(
                &mut self.pods,
                PODS_MAX,
                &mut self.stats.tombstones_evicted,
                &mut false,
            )
        {
            return Err(PolicyError::TooMany);
        }
        self.pod_clock = self.pod_clock.max(old_version).saturating_add(1);
        let slot = PodSlot {
            version: self.pod_clock,
            pod,
            since: now,
        };
        self.pods.insert(key.clone(), slot);
        let changes = Changes {
            pods: alloc::vec![key],
            ..Changes::default()
        };
        self.changed(None, &changes);
        Ok(true)
    }

    /// A stamp above every one seen, and not below the wall clock at `now`.
    fn next_stamp(&mut self, now: Instant) -> Stamp {
        let wall_ms = self.wall_clock_origin_ms.saturating_add(now.total_millis());
        self.lamport = self.lamport.saturating_add(1).max(wall_ms);
        Stamp {
            lamport: self.lamport,
            writer: self.me,
        }
    }
}

/// Writes `value` under `key` with `stamp`, evicting tombstones first when `key` is new
/// (the caller checked with `has_room` that eviction cannot fail).
fn put<K: Ord + Clone, V>(
    map: &mut BTreeMap<K, Lww<V>>,
    max: usize,
    evicted: &mut u64,
    key: K,
    value: V,
    stamp: Stamp,
    now: Instant,
) {
    if !map.contains_key(&key) {
        make_room(map, max, evicted, &mut false);
    }
    let slot = Lww {
        stamp,
        value: Some(value),
        since: now,
    };
    map.insert(key, slot);
}
