//! The replicated policy state of one router: three CRDTs merged by gossip on
//! [`crate::wire::frame::CHANNEL_POLICY`].
//!
//! - Policies (`PolicyKey -> Option<Policy>`) and namespace labels (`name ->
//!   Option<Labels>`) are multi-writer last-writer-wins maps: any router applies or
//!   deletes, each write carries a [`Stamp`] (counter, writer) whose counter is above
//!   every stamp the writer has seen and not below its wall clock in ms (a hybrid logical
//!   clock: causally later writes win, and so do writes later in real time, even from a
//!   router that restarted without its state file), and a merge keeps per key the greatest
//!   `(stamp, value)` — a max, so commutative, associative and idempotent (the value
//!   breaks a tie a restarted writer could cause). A deletion is a tombstone kept [`LWW_TOMBSTONE_TTL_MS`]; a partition
//!   longer than that may bring a deleted policy back. They survive their writer: a policy
//!   applied on a host that dies stays in force. Hosts persist this part
//!   ([`PolicyTable::export_shared`]) and load it at start, merged like gossip.
//! - Pods (`(owner, attachment id) -> Option<Pod>`) are owned records as in
//!   [`crate::dns`]: only the owner changes its own (higher version wins, a tombstone beats
//!   a live pod of the same version); the owner answers a stale copy of its own pods
//!   with a newer version (live if it holds the pod, a tombstone if not), which is how a
//!   restarted router takes its attachments back; the export also carries our highest pod
//!   version so a restart starts above it. A peer removed from the topology loses its pods
//!   everywhere and gossip about them is ignored for [`REMOVED_PEER_TTL_MS`].
//!
//! Each map is bounded ([`POLICIES_MAX`], [`NAMESPACES_MAX`], [`PODS_MAX`], tombstones
//! included): when full the oldest tombstone makes room, else a command is refused
//! ([`PolicyError::TooMany`]) and gossip is dropped and counted.

mod commands;
mod merge;
mod query;

use super::wire::{self, Entry, NamespaceEntry, PodEntry, PolicyEntry};
use super::{LABELS_MAX, Labels, NAMED_PORTS_MAX, Pod, Policy, PolicyError, PolicyKey, check_name};
use crate::peer::PeerName;
use crate::time::{Duration, Instant};
use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;

/// Most policies kept (live and deleted).
pub const POLICIES_MAX: usize = 1024;
/// Most namespaces with labels kept (live and removed).
pub const NAMESPACES_MAX: usize = 4096;
/// Most pods kept (every router's, live and detached).
pub const PODS_MAX: usize = 65_536;
/// Most objects in one [`PolicyTable::apply`].
pub const APPLY_BATCH_MAX: usize = 1024;
/// Longest attachment id, in bytes.
pub const POD_ID_LEN_MAX: usize = 64;
/// Most addresses of one pod.
pub const POD_ADDRS_MAX: usize = 16;
/// How long a deleted policy or namespace is remembered after it was deleted or learned.
pub const LWW_TOMBSTONE_TTL_MS: u64 = 24 * 3600 * 1000;
/// How long a detached pod is remembered (its owner re-tombstones stale copies later on).
pub const POD_TOMBSTONE_TTL_MS: u64 = 600_000;
/// How long gossip about the pods of a peer removed from the topology is ignored.
pub const REMOVED_PEER_TTL_MS: u64 = 600_000;
/// Most peers remembered as removed.
pub const REMOVED_PEERS_MAX: usize = 4096;
/// How often [`PolicyTable::handle_timeout`] wants to run (expiry).
pub const POLICY_TICK_MS: u64 = 1_000;
/// Most [`Output`]s queued; further ones are dropped and counted.
pub const POLICY_QUEUE_LEN_MAX: usize = 1024;

/// When and by whom a policy or namespace was last written; greater wins.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp {
    /// Hybrid logical clock: above every stamp the writer had seen, and not below its
    /// wall clock in ms when it wrote.
    pub lamport: u64,
    /// The router that wrote it.
    pub writer: PeerName,
}

/// Identifies a pod: the router it is attached to (its only writer) and its attachment id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodKey {
    /// The owning router.
    pub owner: PeerName,
    /// The attachment id (1 to [`POD_ID_LEN_MAX`] printable ASCII bytes).
    pub id: String,
}

/// Checks an attachment id.
pub fn check_pod_id(id: &str) -> Result<(), PolicyError> {
    let b = id.as_bytes();
    if b.is_empty() || b.len() > POD_ID_LEN_MAX || !b.iter().all(u8::is_ascii_graphic) {
        return Err(PolicyError::BadPodId);
    }
    Ok(())
}

/// Checks a pod: namespace, named ports and the limits.
pub fn check_pod(pod: &Pod) -> Result<(), PolicyError> {
    if pod.addrs.len() > POD_ADDRS_MAX || pod.ports.len() > NAMED_PORTS_MAX {
        return Err(PolicyError::TooMany);
    }
    check_name(&pod.namespace)?;
    check_labels(&pod.labels)?;
    pod.ports.iter().try_for_each(|p| check_name(&p.name))
}

/// Checks labels (those made by [`Labels::insert`] always pass).
pub fn check_labels(labels: &Labels) -> Result<(), PolicyError> {
    if labels.len() > LABELS_MAX {
        return Err(PolicyError::TooMany);
    }
    labels.iter().try_for_each(|(k, v)| {
        super::check_label_key(k)?;
        super::check_label_value(v)
    })
}

/// A message for the router to send on [`crate::wire::frame::CHANNEL_POLICY`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// To every neighbour but `except` (news, flooded on).
    Neighbours {
        /// The neighbour it came from, if any.
        except: Option<PeerName>,
        /// The encoded message.
        msg: Vec<u8>,
    },
    /// To a few random neighbours (periodic anti-entropy).
    Random(Vec<u8>),
    /// To this neighbour only (full state for a new neighbour).
    Neighbour(PeerName, Vec<u8>),
}

/// What one [`PolicyTable::apply`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Policies new or changed (given a new stamp).
    pub policies_changed: usize,
    /// Policies identical to the ones in force (left alone).
    pub policies_unchanged: usize,
    /// Namespaces whose labels were new or changed.
    pub namespaces_changed: usize,
    /// Namespaces whose labels were already these.
    pub namespaces_unchanged: usize,
}

/// Counters, shown by `weft status policy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyStats {
    /// Messages that did not parse.
    pub malformed: u64,
    /// Entries received (or imported) that changed our state.
    pub entries_merged: u64,
    /// Pods received of peers removed from the topology (ignored).
    pub pods_of_removed_peers: u64,
    /// Stale copies of our own pods a peer had, answered with a newer version.
    pub own_pods_refreshed: u64,
    /// Tombstones forgotten after their time to live.
    pub tombstones_expired: u64,
    /// Tombstones forgotten early to make room in a full map.
    pub tombstones_evicted: u64,
    /// Pods dropped because their owner left the topology.
    pub pods_of_dead_peers_dropped: u64,
    /// Entries received not taken because their map was full.
    pub drops_full: u64,
    /// Outputs dropped on a full queue.
    pub drops_queue_full: u64,
}

/// `weft status policy` (the core part).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyStatus {
    /// Live policies in key order, with their stamp.
    pub policies: Vec<(PolicyKey, Stamp)>,
    /// Deleted policies remembered.
    pub policy_tombstones: usize,
    /// Namespaces with labels.
    pub namespaces: usize,
    /// Removed namespaces remembered.
    pub namespace_tombstones: usize,
    /// Live pods (every owner's, reachable or not).
    pub pods: usize,
    /// Of which ours.
    pub own_pods: usize,
    /// Detached pods remembered.
    pub pod_tombstones: usize,
    /// Peers whose pod gossip is ignored because they left the topology.
    pub removed_peers: usize,
    /// Our Lamport clock.
    pub lamport: u64,
    /// Counters.
    pub stats: PolicyStats,
}

/// A last-writer-wins slot.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Lww<V> {
    stamp: Stamp,
    value: Option<V>,
    /// When this state was made or learned here (tombstone expiry).
    since: Instant,
}

/// An owned pod slot.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PodSlot {
    version: u64,
    pod: Option<Pod>,
    since: Instant,
}

impl PodSlot {
    /// Merge order: version, then a tombstone above a live pod, then the pod itself.
    fn rank(&self) -> (u64, bool, Option<&Pod>) {
        (self.version, self.pod.is_none(), self.pod.as_ref())
    }
}

/// Pod entries rank as their slots do.
pub fn pod_rank(e: &PodEntry) -> (u64, bool, Option<&Pod>) {
    (e.version, e.pod.is_none(), e.pod.as_ref())
}

/// A slot that may be a tombstone (for expiry and eviction).
trait Tomb {
    fn tomb_since(&self) -> Option<Instant>;
}

impl<V> Tomb for Lww<V> {
    fn tomb_since(&self) -> Option<Instant> {
        self.value.is_none().then_some(self.since)
    }
}

impl Tomb for PodSlot {
    fn tomb_since(&self) -> Option<Instant> {
        self.pod.is_none().then_some(self.since)
    }
}

/// Room for `new` more keys in `map` (bounded by `max`) if tombstones go.
fn has_room<K, S: Tomb>(map: &BTreeMap<K, S>, new: usize, max: usize) -> bool {
    let tombs = map.values().filter(|s| s.tomb_since().is_some()).count();
    map.len() - tombs + new <= max
}

/// Tombstones evicted at once when a map is full: a share of its limit, so that a run
/// of inserts into a full map scans it once per batch, not once per insert.
const EVICT_SHARE: usize = 64;

/// Makes room for one more key: if `map` is full, evicts its oldest tombstones (up to
/// `max / EVICT_SHARE`). Whether there is room now. `no_tombs` remembers, for a run of
/// calls, that there was none to evict (so a full map is not scanned again).
fn make_room<K: Ord + Clone, S: Tomb>(
    map: &mut BTreeMap<K, S>,
    max: usize,
    evicted: &mut u64,
    no_tombs: &mut bool,
) -> bool {
    if map.len() < max {
        return true;
    }
    if *no_tombs {
        return false;
    }
    let mut tombs: Vec<(Instant, K)> = map
        .iter()
        .filter_map(|(k, s)| s.tomb_since().map(|t| (t, k.clone())))
        .collect();
    if tombs.is_empty() {
        *no_tombs = true;
        return false;
    }
    let n = (max / EVICT_SHARE).clamp(1, tombs.len());
    if n < tombs.len() {
        tombs.select_nth_unstable_by_key(n - 1, |(t, _)| *t);
    }
    for (_, k) in &tombs[..n] {
        map.remove(k);
    }
    *evicted += n as u64;
    true
}

/// Keys that changed, per part (to gossip).
#[derive(Debug, Default)]
struct Changes {
    policies: Vec<PolicyKey>,
    namespaces: Vec<String>,
    pods: Vec<PodKey>,
}

impl Changes {
    fn len(&self) -> usize {
        self.policies.len() + self.namespaces.len() + self.pods.len()
    }
}

/// The replicated policies, namespace labels and pods of one router.
#[derive(Debug)]
pub struct PolicyTable {
    me: PeerName,
    policies: BTreeMap<PolicyKey, Lww<Policy>>,
    namespaces: BTreeMap<String, Lww<Labels>>,
    pods: BTreeMap<PodKey, PodSlot>,
    /// The greatest stamp counter seen or made.
    lamport: u64,
    /// Our pod version counter: above every version of our own pods seen.
    pod_clock: u64,
    /// Peers removed from the topology, and when.
    removed: BTreeMap<PeerName, Instant>,
    outputs: VecDeque<Output>,
    generation: u64,
    gossip_interval: Duration,
    /// Unix time in ms at [`Instant::ZERO`] (stamps are not below the wall clock).
    wall_clock_origin_ms: u64,
    next_gossip_at: Instant,
    next_tick_at: Instant,
    stats: PolicyStats,
}

impl PolicyTable {
    /// An empty table for router `me`, gossiping its full state every `gossip_interval`.
    pub fn new(me: PeerName, gossip_interval: Duration, now: Instant) -> Self {
        let half = Duration::from_micros(gossip_interval.total_micros() / 2);
        Self {
            me,
            policies: BTreeMap::new(),
            namespaces: BTreeMap::new(),
            pods: BTreeMap::new(),
            lamport: 0,
            pod_clock: 0,
            removed: BTreeMap::new(),
            outputs: VecDeque::new(),
            generation: 0,
            gossip_interval,
            wall_clock_origin_ms: 0,
            next_gossip_at: now + half,
            next_tick_at: now + Duration::from_millis(POLICY_TICK_MS),
            stats: PolicyStats::default(),
        }
    }

    /// Sets the wall clock (Unix time in ms) at [`Instant::ZERO`], as the router's
    /// [`crate::router::Config::wall_clock_origin_ms`]; stamps are then not below it.
    pub fn with_wall_clock_origin_ms(mut self, origin_ms: u64) -> Self {
        self.wall_clock_origin_ms = origin_ms;
        self
    }

    /// Bumps the generation and gossips `changes` (to all but `except`) if any.
    fn changed(&mut self, except: Option<PeerName>, changes: &Changes) {
        if changes.len() == 0 {
            return;
        }
        self.generation += 1;
        let mut p: Vec<PolicyEntry> = changes
            .policies
            .iter()
            .filter_map(|k| {
                let s = self.policies.get(k)?;
                Some(PolicyEntry {
                    key: k.clone(),
                    stamp: s.stamp,
                    policy: s.value.clone(),
                })
            })
            .collect();
        let mut n: Vec<NamespaceEntry> = changes
            .namespaces
            .iter()
            .filter_map(|k| {
                let s = self.namespaces.get(k)?;
                Some(NamespaceEntry {
                    name: k.clone(),
                    stamp: s.stamp,
                    labels: s.value.clone(),
                })
            })
            .collect();
        let mut d: Vec<PodEntry> = changes
            .pods
            .iter()
            .filter_map(|k| {
                let s = self.pods.get(k)?;
                Some(PodEntry {
                    key: k.clone(),
                    version: s.version,
                    pod: s.pod.clone(),
                })
            })
            .collect();
        let msgs = sorted_msgs(&mut p)
            .into_iter()
            .chain(sorted_msgs(&mut n))
            .chain(sorted_msgs(&mut d))
            .collect::<Vec<_>>();
        for msg in msgs {
            self.push_output(Output::Neighbours { except, msg });
        }
    }

    fn push_output(&mut self, o: Output) {
        if self.outputs.len() >= POLICY_QUEUE_LEN_MAX {
            self.stats.drops_queue_full += 1;
            return;
        }
        self.outputs.push_back(o);
    }

    /// Our whole state as messages.
    fn encode_state(&self) -> Vec<Vec<u8>> {
        let mut msgs = wire::encode_all(&self.policy_entries().collect::<Vec<_>>());
        msgs.extend(wire::encode_all(
            &self.namespace_entries().collect::<Vec<_>>(),
        ));
        msgs.extend(wire::encode_all(&self.pod_entries().collect::<Vec<_>>()));
        msgs
    }
}

/// `entries` sorted by key, without duplicate keys, encoded.
fn sorted_msgs<E: Entry>(entries: &mut Vec<E>) -> Vec<Vec<u8>> {
    entries.sort_by(|a, b| a.key().cmp(b.key()));
    entries.dedup_by(|a, b| a.key() == b.key());
    wire::encode_all(entries.iter())
}
