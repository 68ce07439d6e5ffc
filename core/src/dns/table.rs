//! The record set: a CRDT of [`Record`]s keyed by [`RecordKey`], merged per key by
//! [`Record::rank`], with the owner's authority over its own records and the removal of
//! a dead peer's records (see [`crate::dns`] for the rules).

use super::wire;
use super::{
    Container, DNS_QUEUE_LEN_MAX, DNS_TICK_MS, DnsError, DnsName, DnsStats, DnsStatus, Filter,
    Output, RECORDS_MAX, REMOVED_PEER_TTL_MS, REMOVED_PEERS_MAX, Record, RecordKey,
    TOMBSTONE_TTL_MS,
};
use crate::peer::PeerName;
use crate::time::{Duration, Instant};
use crate::wire::WireError;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;
use core::net::Ipv4Addr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    version: u64,
    tombstone: bool,
    /// When this state was made or learned here (tombstone expiry).
    since: Instant,
}

impl Slot {
    fn rank(&self) -> (u64, bool) {
        (self.version, self.tombstone)
    }
}

/// The replicated record set of one router.
#[derive(Debug)]
pub struct Dns {
    me: PeerName,
    records: BTreeMap<RecordKey, Slot>,
    /// Our version counter: above every version of our own records we have seen.
    clock: u64,
    /// Peers removed from the topology, and when.
    removed: BTreeMap<PeerName, Instant>,
    outputs: VecDeque<Output>,
    generation: u64,
    gossip_interval: Duration,
    next_gossip_at: Instant,
    next_tick_at: Instant,
    stats: DnsStats,
}

impl Dns {
    /// An empty set for peer `me`, gossiping its full state every `gossip_interval`.
    pub fn new(me: PeerName, gossip_interval: Duration, now: Instant) -> Self {
        let half = Duration::from_micros(gossip_interval.total_micros() / 2);
        Self {
            me,
            records: BTreeMap::new(),
            clock: 0,
            removed: BTreeMap::new(),
            outputs: VecDeque::new(),
            generation: 0,
            gossip_interval,
            next_gossip_at: now + half,
            next_tick_at: now + Duration::from_millis(DNS_TICK_MS),
            stats: DnsStats::default(),
        }
    }

    /// Registers `name -> addr` for `container`, owned by us. `Ok(false)` if it is
    /// already there. Gossiped at once.
    pub fn add(
        &mut self,
        now: Instant,
        name: &DnsName,
        addr: Ipv4Addr,
        container: &Container,
    ) -> Result<bool, DnsError> {
        if addr.is_unspecified() || addr.is_broadcast() || addr.is_multicast() {
            return Err(DnsError::BadAddress);
        }
        let key = RecordKey {
            name: name.clone(),
            addr,
            owner: self.me,
            container: container.clone(),
        };
        let old = self.records.get(&key).copied();
        if old.is_some_and(|s| !s.tombstone) {
            return Ok(false);
        }
        if old.is_none() && self.records.len() >= RECORDS_MAX {
            return Err(DnsError::Full);
        }
        self.clock = self.clock.max(old.map_or(0, |s| s.version)) + 1;
        let slot = Slot {
            version: self.clock,
            tombstone: false,
            since: now,
        };
        self.records.insert(key.clone(), slot);
        self.generation += 1;
        self.send_news(None, &[key]);
        Ok(true)
    }

    /// Removes our own live records matching `filter` (tombstones, gossiped at once);
    /// returns how many.
    pub fn remove(&mut self, now: Instant, filter: &Filter) -> usize {
        let me = self.me;
        let keys: Vec<RecordKey> = self
            .records
            .iter()
            .filter(|(k, s)| k.owner == me && !s.tombstone && filter.matches(k))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &keys {
            self.clock += 1;
            let slot = Slot {
                version: self.clock,
                tombstone: true,
                since: now,
            };
            self.records.insert(k.clone(), slot);
        }
        if !keys.is_empty() {
            self.generation += 1;
            self.send_news(None, &keys);
        }
        keys.len()
    }

    /// Merges a CHANNEL_DNS message from neighbour `from`. `in_topology` tells whether a
    /// peer is in the router's topology (records of removed peers are ignored unless it
    /// is back). What changed is flooded on. Garbage is an error (the router drops the
    /// connection).
    pub fn handle_message(
        &mut self,
        now: Instant,
        from: PeerName,
        payload: &[u8],
        in_topology: impl Fn(PeerName) -> bool,
    ) -> Result<usize, WireError> {
        let recs = wire::parse(payload).inspect_err(|_| self.stats.malformed += 1)?;
        let mut merged = Vec::new();
        let mut refreshed = Vec::new();
        for rec in recs {
            let owner = rec.key.owner;
            let local = self.records.get(&rec.key).copied();
            if owner == self.me {
                if local.is_some_and(|s| s.rank() >= rec.rank()) {
                    continue;
                }
                // A peer knows a newer version of our own record than we do: we restarted,
                // or forgot a tombstone. We decide: what we hold live stays live, anything
                // else is removed, with a version above theirs.
                self.clock = self.clock.max(rec.version) + 1;
                let live = local.is_some_and(|s| !s.tombstone);
                if local.is_none() && self.records.len() >= RECORDS_MAX {
                    self.stats.drops_full += 1;
                    continue;
                }
                let slot = Slot {
                    version: self.clock,
                    tombstone: !live,
                    since: now,
                };
                self.records.insert(rec.key.clone(), slot);
                self.stats.own_records_refreshed += 1;
                refreshed.push(rec.key);
                continue;
            }
            if in_topology(owner) {
                self.removed.remove(&owner);
            } else if self.removed.contains_key(&owner) {
                self.stats.records_of_removed_peers += 1;
                continue;
            }
            if local.is_some_and(|s| s.rank() >= rec.rank()) {
                continue;
            }
            if local.is_none() && self.records.len() >= RECORDS_MAX {
                self.stats.drops_full += 1;
                continue;
            }
            let slot = Slot {
                version: rec.version,
                tombstone: rec.tombstone,
                since: now,
            };
            self.records.insert(rec.key.clone(), slot);
            self.stats.records_merged += 1;
            merged.push(rec.key);
        }
        let n = merged.len() + refreshed.len();
        if n > 0 {
            self.generation += 1;
        }
        if !merged.is_empty() {
            self.send_news(Some(from), &merged);
        }
        if !refreshed.is_empty() {
            self.send_news(None, &refreshed);
        }
        Ok(n)
    }

    /// Call when `peer` left the topology: drops its records here, and ignores gossip
    /// about them for [`REMOVED_PEER_TTL_MS`] unless it comes back. Returns how many.
    pub fn peer_removed(&mut self, now: Instant, peer: PeerName) -> usize {
        if peer == self.me {
            return 0;
        }
        let before = self.records.len();
        self.records.retain(|k, _| k.owner != peer);
        let n = before - self.records.len();
        if n > 0 {
            self.generation += 1;
            self.stats.records_of_dead_peers_dropped += n as u64;
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

    /// When [`Dns::handle_timeout`] wants to run.
    pub fn poll_timeout(&self) -> Instant {
        if self.next_tick_at < self.next_gossip_at {
            self.next_tick_at
        } else {
            self.next_gossip_at
        }
    }

    /// Expires tombstones and removed-peer marks; sends the periodic full state.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.next_tick_at {
            self.next_tick_at = now + Duration::from_millis(DNS_TICK_MS);
            let ttl = Duration::from_millis(TOMBSTONE_TTL_MS);
            let before = self.records.len();
            self.records
                .retain(|_, s| !s.tombstone || now.saturating_since(s.since) < ttl);
            self.stats.tombstones_expired += (before - self.records.len()) as u64;
            let ttl = Duration::from_millis(REMOVED_PEER_TTL_MS);
            self.removed.retain(|_, t| now.saturating_since(*t) < ttl);
        }
        if now >= self.next_gossip_at {
            self.next_gossip_at = now + self.gossip_interval;
            if !self.records.is_empty() {
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

    /// Live records of `name`, in key order.
    pub fn lookup<'a>(&'a self, name: &DnsName) -> impl Iterator<Item = &'a RecordKey> + 'a {
        let name = name.clone();
        self.records
            .range(RecordKey::first_of(&name)..)
            .take_while(move |(k, _)| k.name == name)
            .filter(|(_, s)| !s.tombstone)
            .map(|(k, _)| k)
    }

    /// Live records with address `addr` (a scan: for reverse lookups by hand).
    pub fn reverse(&self, addr: Ipv4Addr) -> impl Iterator<Item = &RecordKey> + '_ {
        self.live().filter(move |k| k.addr == addr)
    }

    /// Every live record, in key order.
    pub fn live(&self) -> impl Iterator<Item = &RecordKey> + '_ {
        self.records
            .iter()
            .filter(|(_, s)| !s.tombstone)
            .map(|(k, _)| k)
    }

    /// Every record with its version and liveness (what gossip carries), in key order.
    pub fn records(&self) -> impl Iterator<Item = Record> + '_ {
        self.records.iter().map(|(k, s)| Record {
            key: k.clone(),
            version: s.version,
            tombstone: s.tombstone,
        })
    }

    /// Changes whenever the live records change.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Counters.
    pub fn stats(&self) -> DnsStats {
        self.stats
    }

    /// Live records and counts for `weft status dns`.
    pub fn status(&self) -> DnsStatus {
        DnsStatus {
            records: self
                .records
                .iter()
                .filter(|(_, s)| !s.tombstone)
                .map(|(k, s)| (k.clone(), s.version))
                .collect(),
            tombstones: self.records.values().filter(|s| s.tombstone).count(),
            removed_peers: self.removed.len(),
            stats: self.stats,
        }
    }

    fn encode_state(&self) -> Vec<Vec<u8>> {
        let all: Vec<Record> = self.records().collect();
        wire::encode_all(&all)
    }

    fn send_news(&mut self, except: Option<PeerName>, keys: &[RecordKey]) {
        let mut recs: Vec<Record> = keys
            .iter()
            .filter_map(|k| {
                let s = self.records.get(k)?;
                Some(Record {
                    key: k.clone(),
                    version: s.version,
                    tombstone: s.tombstone,
                })
            })
            .collect();
        recs.sort_by(|a, b| a.key.cmp(&b.key));
        recs.dedup_by(|a, b| a.key == b.key);
        for msg in wire::encode_all(&recs) {
            self.push_output(Output::Neighbours { except, msg });
        }
    }

    fn push_output(&mut self, o: Output) {
        if self.outputs.len() >= DNS_QUEUE_LEN_MAX {
            self.stats.drops_queue_full += 1;
            return;
        }
        self.outputs.push_back(o);
    }
}
