//! Topology: every peer's own entry (name, incarnation, nickname, connections, version)
//! and the version merge that makes all routers converge on the same map.
//!
//! What it does: keeps one [`PeerEntry`] per known peer in a `BTreeMap` (deterministic
//! iteration, no hashing), merges gossiped entries (higher rank wins, see [`Topology::merge`]),
//! defends our own entry against older incarnations, and hashes the whole map into a
//! [`Topology::digest`] the simulator compares across routers.
//!
//! What it does not do: decide routes ([`crate::routes`]), encode entries
//! ([`crate::wire::topology`]) or choose whom to gossip to ([`crate::gossip`]).
//!
//! Memory: one entry is about 80 bytes plus 48 bytes per connection plus the nickname,
//! so 1000 routers each holding 1000 peers with 8 connections stay around half a gigabyte.
//! One table is bounded by [`TOPOLOGY_PEERS_MAX`] entries and [`TOPOLOGY_CONNS_MAX`]
//! connections in all: at most about 2 MiB of entries plus 48 MiB of connections, whatever
//! peers send.
//!
//! Versions are hybrid clocks: a router starts its own entry at its wall clock in
//! milliseconds ([`Topology::starting_at`]) and bumps it by one per change, so a
//! restarted router out-ranks its previous incarnation at once, and no honest entry is
//! ever far ahead of the wall clock. An entry more than [`TOPOLOGY_VERSION_AHEAD_MAX_MS`]
//! ahead of our clock is refused, whoever relays it and whichever peer it names: a
//! forged entry at `u64::MAX` cannot pin a peer forever, and a forgery just inside the
//! bound is out-bid by the real peer (it hears of it and jumps one past it), which others
//! take as soon as their clock has moved one millisecond. The bound is absolute (our
//! clock, not the entry we hold), so merge stays order-independent. Why not a bound on
//! the jump over the version we hold: a router that was partitioned away for a while
//! legitimately sees large jumps, and a restart must not depend on them. If a router's
//! clock went back before a restart, the old rule still applies: it hears its older
//! incarnation's higher version and jumps past it (if within its own bound). A router
//! whose clock is more than a day ahead of its peers' has its entries refused by them
//! (counted as `refused_version_ahead`, shown by `weft status`).

use crate::peer::{PeerName, PeerUid};
use crate::time::{Duration, Instant};
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::cmp::Ordering;
use core::net::SocketAddr;

/// Most connections one peer's entry may list (a few hundred per peer are normal on big
/// meshes; the wire encoding of a full entry still fits one gossip message).
pub const PEER_CONNS_MAX: usize = 512;
/// Longest nickname, in bytes of UTF-8.
pub const NICKNAME_LEN_MAX: usize = 32;
/// Most peers one topology holds; entries about further new peers are dropped and counted.
/// The scale targets are thousands of routers (the simulator's largest run is 10,000).
pub const TOPOLOGY_PEERS_MAX: usize = 16_384;
/// Most connections all other peers' entries list together (48 MiB at 48 bytes each): a
/// full mesh of 1000 peers, or 16,384 peers with 64 each. An entry that would pass it is
/// dropped and counted.
pub const TOPOLOGY_CONNS_MAX: usize = 1 << 20;
/// Most peers one gossip message ([`Topology::merge`] call) may introduce; entries about
/// further new peers in it are dropped and counted (they come again with the next gossip).
/// Honest senders put at most this many entries in one message
/// ([`crate::gossip::GOSSIP_ENTRIES_PER_MSG_MAX`]), so only a hostile one hits it.
pub const TOPOLOGY_NEW_PEERS_PER_MSG_MAX: usize = 256;
/// How far ahead of our wall clock (in ms, see [`Topology::set_clock_ms`]) an entry's
/// version may be. Versions start at the owner's wall clock and grow by one per change,
/// so only clock skew and more than one change per millisecond put an honest entry
/// ahead; a day covers a badly set clock. Anything further ahead is forged (or its owner's
/// clock is wrong by more than a day) and is refused and counted.
pub const TOPOLOGY_VERSION_AHEAD_MAX_MS: u64 = 24 * 60 * 60 * 1000;

/// One connection as its owner announces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnInfo {
    /// The peer at the other end.
    pub peer: PeerName,
    /// The remote address, when the owner knows one worth dialling.
    pub addr: Option<SocketAddr>,
    /// True once the connection finished its handshake (routes use only these).
    pub established: bool,
    /// True if the owner dialled it.
    pub outbound: bool,
}

/// Everything a peer says about itself; only that peer changes it (bumping `version`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PeerEntry {
    /// The peer's name.
    pub name: PeerName,
    /// Its incarnation: a restart gets a new uid.
    pub uid: PeerUid,
    /// Bumped by the owner on every change; higher wins in [`Topology::merge`].
    pub version: u64,
    /// Human-friendly name, at most [`NICKNAME_LEN_MAX`] bytes.
    pub nickname: String,
    /// Its connections, at most [`PEER_CONNS_MAX`].
    pub conns: Vec<ConnInfo>,
}

impl PeerEntry {
    /// A fresh entry at version 1 with no connections (what a router starts with).
    pub fn new(name: PeerName, uid: PeerUid, nickname: String) -> Self {
        Self {
            name,
            uid,
            version: 1,
            nickname,
            conns: Vec::new(),
        }
    }

    /// True if the entry respects [`NICKNAME_LEN_MAX`] and [`PEER_CONNS_MAX`].
    pub fn is_within_limits(&self) -> bool {
        self.nickname.len() <= NICKNAME_LEN_MAX && self.conns.len() <= PEER_CONNS_MAX
    }

    /// The total order merge uses: version, then uid, then content. Any two different
    /// entries compare unequal, so "keep the greater" converges whatever the arrival order.
    pub fn rank_cmp(&self, other: &Self) -> Ordering {
        self.version
            .cmp(&other.version)
            .then(self.uid.cmp(&other.uid))
            .then_with(|| self.nickname.cmp(&other.nickname))
            .then_with(|| self.conns.cmp(&other.conns))
    }

    /// True if this entry lists `peer` as an established connection.
    pub fn established_to(&self, peer: PeerName) -> bool {
        self.conns.iter().any(|c| c.peer == peer && c.established)
    }
}

/// What [`Topology::merge`] refused, for status and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TopologyStats {
    /// Entries over [`NICKNAME_LEN_MAX`] or [`PEER_CONNS_MAX`].
    pub rejected_limits: u64,
    /// Entries about new peers dropped because the table held [`TOPOLOGY_PEERS_MAX`]
    /// peers, or entries that would have passed [`TOPOLOGY_CONNS_MAX`].
    pub dropped_full: u64,
    /// Entries about new peers beyond [`TOPOLOGY_NEW_PEERS_PER_MSG_MAX`] in one message.
    pub dropped_per_msg: u64,
    /// Entries more than [`TOPOLOGY_VERSION_AHEAD_MAX_MS`] ahead of our clock.
    pub refused_version_ahead: u64,
}

/// A 64-bit fingerprint of everything in an entry (name, uid, version, nickname,
/// connections): equal entries have equal fingerprints, and a change anywhere changes it
/// but for a 2^-64 chance. Anti-entropy compares these instead of whole entries
/// ([`crate::wire::topology_sync`]). Not a cryptographic hash: a peer that forges
/// entries can do worse than collide (it can out-rank), see the module doc.
pub fn fingerprint(e: &PeerEntry) -> u64 {
    // One multiply-xorshift round per 64-bit word (the splitmix64 finaliser), chained.
    fn mix(h: u64, word: u64) -> u64 {
        let mut z = (h ^ word).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let mut h = mix(0, e.name.as_u64());
    h = mix(h, e.uid.0);
    h = mix(h, e.version);
    let nick = e.nickname.as_bytes();
    h = mix(h, nick.len() as u64);
    for chunk in nick.chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        h = mix(h, u64::from_le_bytes(w));
    }
    h = mix(h, e.conns.len() as u64);
    for c in &e.conns {
        let flags = u64::from(c.established) | u64::from(c.outbound) << 1;
        h = mix(h, c.peer.as_u64() | flags << 56);
        match c.addr {
            None => h = mix(h, 0),
            Some(SocketAddr::V4(a)) => {
                h = mix(
                    h,
                    4 << 56 | u64::from(a.port()) << 32 | u64::from(a.ip().to_bits()),
                );
            }
            Some(SocketAddr::V6(a)) => {
                let ip = a.ip().to_bits();
                h = mix(h, 6 << 56 | u64::from(a.port()));
                h = mix(h, (ip >> 64) as u64);
                h = mix(h, ip as u64);
            }
        }
    }
    h
}

/// One entry as a topology stores it: shared (equal entries can be one allocation across
/// topologies, see [`Topology::set_interner`]) and with its [`fingerprint`].
#[derive(Clone, Debug)]
struct Stored {
    entry: Arc<PeerEntry>,
    fingerprint: u64,
}

impl Stored {
    fn new(entry: PeerEntry, interner: Option<&Arc<dyn EntryInterner>>) -> Self {
        let fingerprint = fingerprint(&entry);
        let entry = match interner {
            Some(i) => i.intern(entry, fingerprint),
            None => Arc::new(entry),
        };
        Self { entry, fingerprint }
    }
}

/// Hands out one shared allocation for equal entries. The simulator runs thousands of
/// routers in one process, each holding an entry of every peer: with one interner for
/// all of them, one version of one peer's entry is stored once. Must return an entry
/// equal to the one given (what the topology computes does not change).
pub trait EntryInterner: Send + Sync {
    /// A shared entry equal to `entry`, whose [`fingerprint`] is `fingerprint`.
    fn intern(&self, entry: PeerEntry, fingerprint: u64) -> Arc<PeerEntry>;
}

/// The set of peer entries one router knows; its own entry is always present.
#[derive(Clone)]
pub struct Topology {
    ourself: PeerName,
    entries: BTreeMap<PeerName, Stored>,
    /// Wrapping sum of every entry's fingerprint (the sync digest, kept as entries change).
    fingerprint_sum: u64,
    interner: Option<Arc<dyn EntryInterner>>,
    generation: u64,
    /// Connections listed by every entry but ours (bounded by [`TOPOLOGY_CONNS_MAX`]).
    conns_total: usize,
    /// Our wall clock in ms, as last told by [`Topology::set_clock_ms`].
    clock_ms: u64,
    stats: TopologyStats,
}

impl core::fmt::Debug for Topology {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Topology")
            .field("ourself", &self.ourself)
            .field("entries", &self.entries)
            .field("generation", &self.generation)
            .field("interned", &self.interner.is_some())
            .finish_non_exhaustive()
    }
}

/// Puts connections in canonical order and enforces [`PEER_CONNS_MAX`].
fn canonical_conns(mut conns: Vec<ConnInfo>) -> Vec<ConnInfo> {
    conns.sort_unstable();
    conns.dedup();
    conns.truncate(PEER_CONNS_MAX);
    conns.shrink_to_fit();
    conns
}

/// Cuts a nickname to at most [`NICKNAME_LEN_MAX`] bytes on a character boundary.
fn clamp_nickname(nickname: &mut String) {
    if nickname.len() > NICKNAME_LEN_MAX {
        let mut end = NICKNAME_LEN_MAX;
        while !nickname.is_char_boundary(end) {
            end -= 1;
        }
        nickname.truncate(end);
    }
}

/// The dead-peer clock of the once-a-second cleanup: `since` holds when each peer was
/// first seen unreachable, `unreachable` the peers unreachable now (any order). Forgets
/// peers that are reachable again, starts the clock for newly unreachable ones, and
/// returns (sorted) and forgets those unreachable for `grace` or longer, for the caller
/// to remove. O(N log N) in the number of peers: one sort, then a binary search per
/// remembered peer and a map lookup per unreachable one.
pub(crate) fn age_unreachable(
    since: &mut BTreeMap<PeerName, Instant>,
    mut unreachable: Vec<PeerName>,
    now: Instant,
    grace: Duration,
) -> Vec<PeerName> {
    unreachable.sort_unstable();
    unreachable.dedup();
    since.retain(|p, _| unreachable.binary_search(p).is_ok());
    let mut expired = Vec::new();
    for p in unreachable {
        let first = *since.entry(p).or_insert(now);
        if now.saturating_since(first) >= grace {
            expired.push(p);
        }
    }
    for p in &expired {
        since.remove(p);
    }
    expired
}

impl Topology {
    /// A topology holding only our own entry (connections sorted, limits enforced).
    pub fn new(mut ourself: PeerEntry) -> Self {
        ourself.conns = canonical_conns(core::mem::take(&mut ourself.conns));
        clamp_nickname(&mut ourself.nickname);
        let name = ourself.name;
        let mut entries = BTreeMap::new();
        let stored = Stored::new(ourself, None);
        let fingerprint_sum = stored.fingerprint;
        entries.insert(name, stored);
        Self {
            ourself: name,
            entries,
            fingerprint_sum,
            interner: None,
            generation: 0,
            conns_total: 0,
            clock_ms: 0,
            stats: TopologyStats::default(),
        }
    }

    /// A topology for a router starting now, `clock_ms` being its wall clock (Unix time in
    /// ms, or the simulator's virtual time): our version starts there, so it out-ranks every
    /// earlier incarnation of ours whose versions the network still holds (they started
    /// earlier and changed less than once per millisecond).
    pub fn starting_at(mut ourself: PeerEntry, clock_ms: u64) -> Self {
        ourself.version = ourself.version.max(clock_ms);
        let mut t = Self::new(ourself);
        t.set_clock_ms(clock_ms);
        t
    }

    /// Tells the topology our wall clock in ms (the same clock as [`Topology::starting_at`]);
    /// call before every [`Topology::merge`]. Versions above it plus
    /// [`TOPOLOGY_VERSION_AHEAD_MAX_MS`] are refused. A clock that goes back is ignored
    /// (the bound never shrinks).
    pub fn set_clock_ms(&mut self, clock_ms: u64) {
        self.clock_ms = self.clock_ms.max(clock_ms);
    }

    /// The highest version merge accepts now.
    pub fn version_max(&self) -> u64 {
        self.clock_ms.saturating_add(TOPOLOGY_VERSION_AHEAD_MAX_MS)
    }

    /// Shares entries through `interner` from now on (the simulator's one interner for
    /// all its routers). Changes nothing the topology computes.
    pub fn set_interner(&mut self, interner: Arc<dyn EntryInterner>) {
        self.interner = Some(interner);
    }

    /// Our own entry.
    pub fn ourself(&self) -> &PeerEntry {
        match self.entries.get(&self.ourself) {
            Some(e) => &e.entry,
            // `new` inserts it and nothing removes it.
            None => unreachable!("own entry missing"),
        }
    }

    /// Our own name.
    pub fn our_name(&self) -> PeerName {
        self.ourself
    }

    /// Changes our own entry with `f` (our entry is never shared: it changes in place),
    /// keeping its fingerprint and the sum current. Returns what `f` returns.
    fn edit_ours<R>(&mut self, f: impl FnOnce(&mut PeerEntry) -> R) -> R {
        let Some(slot) = self.entries.get_mut(&self.ourself) else {
            unreachable!("own entry missing")
        };
        let r = f(Arc::make_mut(&mut slot.entry));
        let fp = fingerprint(&slot.entry);
        self.fingerprint_sum = self
            .fingerprint_sum
            .wrapping_sub(slot.fingerprint)
            .wrapping_add(fp);
        slot.fingerprint = fp;
        r
    }

    /// Replaces our connection list; call whenever a connection comes up, is established
    /// or goes away. Returns true (and bumps our version) if the list changed.
    pub fn set_our_conns(&mut self, conns: Vec<ConnInfo>) -> bool {
        self.set_ours(|me| &mut me.conns, canonical_conns(conns))
    }

    /// Changes our nickname (clamped to [`NICKNAME_LEN_MAX`]); true and a version bump if
    /// it changed.
    pub fn set_our_nickname(&mut self, mut nickname: String) -> bool {
        clamp_nickname(&mut nickname);
        self.set_ours(|me| &mut me.nickname, nickname)
    }

    /// Sets one field of our entry to `value`; if that changed it, bumps our version and
    /// the generation and returns true.
    fn set_ours<T: PartialEq>(&mut self, field: fn(&mut PeerEntry) -> &mut T, value: T) -> bool {
        let changed = self.edit_ours(|me| {
            let slot = field(me);
            if *slot == value {
                return false;
            }
            *slot = value;
            me.version = me.version.saturating_add(1);
            true
        });
        if changed {
            self.generation += 1;
        }
        changed
    }

    /// Merges gossiped entries; call with every decoded gossip message (one call per
    /// message: [`TOPOLOGY_NEW_PEERS_PER_MSG_MAX`] counts per call). Returns the names
    /// whose entry was new or replaced (sorted, no duplicates): the news to pass on.
    ///
    /// Rules: for another peer, the entry with the greater [`PeerEntry::rank_cmp`] wins
    /// (higher version, then higher uid, then content), so every arrival order ends in the
    /// same map. For our own name the content is never taken: an entry that differs from
    /// ours (an older incarnation, or a restart that kept its uid) with a version at or
    /// above ours makes us jump to its version + 1, an exact echo of our content ahead of
    /// us makes us adopt its version; either way our name is reported as news so our
    /// current entry overrides what others hold. Echoes at or below our version are no-ops.
    ///
    /// Refused and counted in [`Topology::stats`]: entries over the limits; entries (ours
    /// included) whose version is above [`Topology::version_max`], so a forged version
    /// can neither win for good nor push anyone's version to where it cannot grow; new
    /// peers beyond [`TOPOLOGY_NEW_PEERS_PER_MSG_MAX`] in this call, or beyond
    /// [`TOPOLOGY_PEERS_MAX`]; and entries that would take the table past
    /// [`TOPOLOGY_CONNS_MAX`] connections (the known peer keeps its older entry).
    pub fn merge(&mut self, entries: Vec<PeerEntry>) -> Vec<PeerName> {
        let mut news = Vec::new();
        let version_max = self.version_max();
        let mut new_peers = 0usize;
        for entry in entries {
            if !entry.is_within_limits() {
                self.stats.rejected_limits += 1;
                continue;
            }
            if entry.version > version_max {
                self.stats.refused_version_ahead += 1;
                continue;
            }
            if entry.name == self.ourself {
                // Each entry about us raises our version to a floor: its own version for
                // an exact copy of our content (an echo, maybe ahead of a restarted us
                // that kept its uid), one past it for anything else. Taking a maximum
                // is order-independent, unlike "skip echoes, bump on the rest".
                let me = self.ourself();
                let echo =
                    entry.uid == me.uid && entry.nickname == me.nickname && entry.conns == me.conns;
                let floor = if echo {
                    entry.version
                } else {
                    entry.version.saturating_add(1)
                };
                if floor > me.version {
                    self.edit_ours(|me| me.version = floor);
                    news.push(entry.name);
                }
                continue;
            }
            let full = self.entries.len() >= TOPOLOGY_PEERS_MAX;
            match self.entries.entry(entry.name) {
                alloc::collections::btree_map::Entry::Occupied(mut slot) => {
                    let held = &slot.get().entry;
                    if entry.rank_cmp(held) == Ordering::Greater {
                        let total = self.conns_total - held.conns.len() + entry.conns.len();
                        if total > TOPOLOGY_CONNS_MAX {
                            self.stats.dropped_full += 1;
                            continue;
                        }
                        self.conns_total = total;
                        news.push(entry.name);
                        let stored = Stored::new(entry, self.interner.as_ref());
                        self.fingerprint_sum = self
                            .fingerprint_sum
                            .wrapping_sub(slot.get().fingerprint)
                            .wrapping_add(stored.fingerprint);
                        slot.insert(stored);
                    }
                }
                alloc::collections::btree_map::Entry::Vacant(slot) => {
                    if new_peers >= TOPOLOGY_NEW_PEERS_PER_MSG_MAX {
                        self.stats.dropped_per_msg += 1;
                    } else if full || self.conns_total + entry.conns.len() > TOPOLOGY_CONNS_MAX {
                        self.stats.dropped_full += 1;
                    } else {
                        new_peers += 1;
                        self.conns_total += entry.conns.len();
                        news.push(entry.name);
                        let stored = Stored::new(entry, self.interner.as_ref());
                        self.fingerprint_sum =
                            self.fingerprint_sum.wrapping_add(stored.fingerprint);
                        slot.insert(stored);
                    }
                }
            }
        }
        if !news.is_empty() {
            news.sort_unstable();
            news.dedup();
            self.generation += 1;
        }
        news
    }

    /// The entry for `name`, if known.
    pub fn get(&self, name: PeerName) -> Option<&PeerEntry> {
        self.entries.get(&name).map(|s| &*s.entry)
    }

    /// The [`fingerprint`] of `name`'s entry, if known.
    pub fn fingerprint(&self, name: PeerName) -> Option<u64> {
        self.entries.get(&name).map(|s| s.fingerprint)
    }

    /// True if `name` has an entry.
    pub fn contains(&self, name: PeerName) -> bool {
        self.entries.contains_key(&name)
    }

    /// Number of entries, ourselves included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Never true: our own entry is always there (present for clippy's `len` rule).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// All entries in name order, ourselves included.
    pub fn iter(&self) -> impl Iterator<Item = &PeerEntry> {
        self.entries.values().map(|s| &*s.entry)
    }

    /// Entries with a name in `range`, in name order, each with its [`fingerprint`].
    pub fn range(
        &self,
        range: core::ops::RangeInclusive<PeerName>,
    ) -> impl Iterator<Item = (&PeerEntry, u64)> {
        self.entries
            .range(range)
            .map(|(_, s)| (&*s.entry, s.fingerprint))
    }

    /// All entries in name order with their [`fingerprint`]s.
    pub fn iter_fingerprinted(&self) -> impl Iterator<Item = (&PeerEntry, u64)> {
        self.entries.values().map(|s| (&*s.entry, s.fingerprint))
    }

    /// The anti-entropy digest: (entry count, wrapping sum of all [`fingerprint`]s). Equal
    /// topologies have equal digests; O(1), kept up to date by every change.
    pub fn sync_digest(&self) -> (usize, u64) {
        (self.entries.len(), self.fingerprint_sum)
    }

    /// All names in order, ourselves included.
    pub fn names(&self) -> impl Iterator<Item = PeerName> + '_ {
        self.entries.keys().copied()
    }

    /// Forgets a peer's entry (a dead peer aged out, `weft rmpeer`); our own is kept.
    pub fn remove(&mut self, name: PeerName) {
        if name == self.ourself {
            return;
        }
        if let Some(e) = self.entries.remove(&name) {
            self.conns_total -= e.entry.conns.len();
            self.fingerprint_sum = self.fingerprint_sum.wrapping_sub(e.fingerprint);
            self.generation += 1;
        }
    }

    /// Counts every change; [`crate::routes::Routes`] uses it to notice it is stale.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// What merge refused so far.
    pub fn stats(&self) -> TopologyStats {
        self.stats
    }

    /// Connections listed by all entries but ours (at most [`TOPOLOGY_CONNS_MAX`]).
    pub fn conns_total(&self) -> usize {
        self.conns_total
    }

    /// A 64-bit hash of every entry's (name, uid, version) in name order: routers whose
    /// topologies agree have equal digests, whatever order they learnt things in. O(N).
    pub fn digest(&self) -> u64 {
        const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
        let mut h = FNV_OFFSET;
        for e in self.iter() {
            for word in [e.name.as_u64(), e.uid.0, e.version] {
                for b in word.to_le_bytes() {
                    h ^= u64::from(b);
                    h = h.wrapping_mul(FNV_PRIME);
                }
            }
        }
        h
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;
    use proptest::prelude::*;

    pub(crate) fn name(n: u64) -> PeerName {
        PeerName::from_u64(n)
    }

    pub(crate) fn conn(peer: u64, established: bool) -> ConnInfo {
        ConnInfo {
            peer: name(peer),
            addr: None,
            established,
            outbound: false,
        }
    }

    fn entry(n: u64, uid: u64, version: u64, conns: &[u64]) -> PeerEntry {
        PeerEntry {
            name: name(n),
            uid: PeerUid(uid),
            version,
            nickname: "n".to_string(),
            conns: conns.iter().map(|&p| conn(p, true)).collect(),
        }
    }

    #[test]
    fn higher_version_wins_lower_is_ignored() {
        let mut t = Topology::new(entry(1, 1, 1, &[]));
        assert_eq!(t.merge(vec![entry(2, 7, 3, &[1])]), vec![name(2)]);
        assert_eq!(t.merge(vec![entry(2, 7, 2, &[])]), vec![]);
        assert_eq!(t.get(name(2)).map(|e| e.version), Some(3));
        assert_eq!(t.get(name(2)).map(|e| e.conns.len()), Some(1));
        assert_eq!(t.merge(vec![entry(2, 7, 4, &[])]), vec![name(2)]);
        assert_eq!(t.get(name(2)).map(|e| e.conns.len()), Some(0));
        // Re-merging the same entry is not news.
        assert_eq!(t.merge(vec![entry(2, 7, 4, &[])]), vec![]);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn equal_version_ties_break_by_uid_then_content() {
        let mut a = Topology::new(entry(1, 1, 1, &[]));
        let mut b = Topology::new(entry(1, 1, 1, &[]));
        let x = entry(2, 5, 3, &[1]);
        let y = entry(2, 9, 3, &[]);
        a.merge(vec![x.clone()]);
        a.merge(vec![y.clone()]);
        b.merge(vec![y.clone()]);
        b.merge(vec![x]);
        assert_eq!(a.get(name(2)), Some(&y));
        assert_eq!(b.get(name(2)), Some(&y));
    }

    #[test]
    fn older_incarnation_of_ourselves_bumps_our_version() {
        let mut t = Topology::new(entry(1, 100, 1, &[]));
        // Our own echo (same uid) is never news, even at our version.
        assert_eq!(t.merge(vec![entry(1, 100, 1, &[])]), vec![]);
        assert_eq!(t.ourself().version, 1);
        // A previous incarnation gossiped version 41 before we restarted.
        assert_eq!(t.merge(vec![entry(1, 99, 41, &[2])]), vec![name(1)]);
        assert_eq!(t.ourself().version, 42);
        assert_eq!(t.ourself().uid, PeerUid(100));
        assert!(t.ourself().conns.is_empty());
        // Older than us now: ignored.
        assert_eq!(t.merge(vec![entry(1, 99, 41, &[2])]), vec![]);
        assert_eq!(t.ourself().version, 42);
        // A restart that kept its uid: others still hold v50 with other content.
        assert_eq!(t.merge(vec![entry(1, 100, 50, &[3])]), vec![name(1)]);
        assert_eq!(t.ourself().version, 51);
        // An exact copy of our content ahead of us: adopt its version.
        assert_eq!(t.merge(vec![entry(1, 100, 60, &[])]), vec![name(1)]);
        assert_eq!(t.ourself().version, 60);
        assert!(t.ourself().conns.is_empty());
    }

    #[test]
    fn set_our_conns_bumps_only_on_change_and_is_order_insensitive() {
        let mut t = Topology::new(entry(1, 1, 1, &[]));
        let g0 = t.generation();
        assert!(t.set_our_conns(vec![conn(3, true), conn(2, false)]));
        assert_eq!(t.ourself().version, 2);
        assert!(!t.set_our_conns(vec![conn(2, false), conn(3, true)]));
        assert_eq!(t.ourself().version, 2);
        assert!(t.generation() > g0);
        let too_many: Vec<ConnInfo> = (0..PEER_CONNS_MAX as u64 + 10)
            .map(|p| conn(p + 10, true))
            .collect();
        assert!(t.set_our_conns(too_many));
        assert_eq!(t.ourself().conns.len(), PEER_CONNS_MAX);
    }

    #[test]
    fn remove_keeps_ourselves_and_limits_are_enforced() {
        let mut t = Topology::new(entry(1, 1, 1, &[]));
        t.merge(vec![entry(2, 1, 1, &[])]);
        t.remove(name(1));
        t.remove(name(2));
        assert_eq!(t.len(), 1);
        assert_eq!(t.ourself().name, name(1));
        let mut big = entry(3, 1, 1, &[]);
        big.nickname = "x".repeat(NICKNAME_LEN_MAX + 1);
        assert_eq!(t.merge(vec![big]), vec![]);
        assert_eq!(t.stats().rejected_limits, 1);
        let mut nick = "é".repeat(NICKNAME_LEN_MAX);
        clamp_nickname(&mut nick);
        assert!(nick.len() <= NICKNAME_LEN_MAX && nick.chars().all(|c| c == 'é'));
    }

    #[test]
    fn digest_tracks_versions() {
        let mut a = Topology::new(entry(1, 1, 1, &[]));
        let b = a.clone();
        assert_eq!(a.digest(), b.digest());
        a.merge(vec![entry(2, 1, 1, &[])]);
        assert_ne!(a.digest(), b.digest());
        let d = a.digest();
        a.merge(vec![entry(2, 1, 2, &[])]);
        assert_ne!(a.digest(), d);
    }

    #[test]
    fn forged_max_version_does_not_replace_the_real_peer() {
        // We (1) are connected to the real peer 2, which announces us at version 5.
        let mut t = Topology::new(entry(1, 10, 1, &[]));
        t.set_our_conns(vec![conn(2, true)]);
        assert_eq!(t.merge(vec![entry(2, 20, 5, &[1])]), vec![name(2)]);
        // A third peer relays a forgery: peer 2 at the highest version, highest uid, no
        // connections. It must not win, now or later.
        let forged = entry(2, u64::MAX, u64::MAX, &[]);
        assert_eq!(t.merge(vec![forged]), vec![]);
        assert_eq!(
            t.get(name(2)).map(|e| (e.uid, e.version)),
            Some((PeerUid(20), 5))
        );
        let routes = crate::routes::Routes::compute(&t);
        assert_eq!(routes.next_hop(name(2)), Some(name(2)));
        // The real peer keeps changing its entry and we keep taking it.
        assert_eq!(t.merge(vec![entry(2, 20, 6, &[1, 3])]), vec![name(2)]);
        assert_eq!(t.get(name(2)).map(|e| e.version), Some(6));
        // A forgery about ourselves cannot push our version to where it cannot grow.
        assert_eq!(t.merge(vec![entry(1, 11, u64::MAX, &[])]), vec![]);
        let v = t.ourself().version;
        assert!(t.set_our_conns(vec![conn(2, true), conn(3, true)]));
        assert_eq!(t.ourself().version, v + 1);
    }

    #[test]
    fn a_forgery_within_the_bound_is_outbid_by_the_real_peer() {
        let clock_ms = 5_000_000;
        let mut us = Topology::starting_at(entry(1, 10, 1, &[2]), clock_ms);
        let mut real = Topology::starting_at(entry(2, 20, 1, &[1]), clock_ms);
        assert_eq!(us.merge(vec![real.ourself().clone()]), vec![name(2)]);
        // The forger picks the highest version we still take, and the highest uid.
        let forged = entry(2, u64::MAX, us.version_max(), &[]);
        assert_eq!(us.merge(vec![forged.clone()]), vec![name(2)]);
        // We gossip it on; the real peer answers with a version one above.
        assert_eq!(real.merge(vec![forged]), vec![name(2)]);
        assert_eq!(real.ourself().version, us.version_max() + 1);
        // One more millisecond and we take the real entry back.
        assert_eq!(us.merge(vec![real.ourself().clone()]), vec![]);
        us.set_clock_ms(clock_ms + 1);
        assert_eq!(us.merge(vec![real.ourself().clone()]), vec![name(2)]);
        assert_eq!(us.get(name(2)).map(|e| e.uid), Some(PeerUid(20)));
        assert_eq!(us.stats().refused_version_ahead, 1);
        let routes = crate::routes::Routes::compute(&us);
        assert_eq!(routes.next_hop(name(2)), Some(name(2)));
    }

    #[test]
    fn a_restart_outranks_the_previous_incarnation_without_a_jump() {
        // The first incarnation started at 1000 ms and changed 500 times.
        let mut old = Topology::starting_at(entry(2, 20, 1, &[]), 1000);
        for p in 0..500 {
            old.set_our_conns(vec![conn(100 + p, true)]);
        }
        let mut us = Topology::starting_at(entry(1, 10, 1, &[]), 1000);
        us.merge(vec![old.ourself().clone()]);
        // It restarts a minute later with a new uid: its first entry already wins.
        let new = Topology::starting_at(entry(2, 21, 1, &[1]), 61_000);
        assert!(new.ourself().version > old.ourself().version);
        us.set_clock_ms(61_000);
        assert_eq!(us.merge(vec![new.ourself().clone()]), vec![name(2)]);
        assert_eq!(us.get(name(2)).map(|e| e.uid), Some(PeerUid(21)));
        // Our own start version is our clock; a clock that goes back moves nothing.
        assert_eq!(us.ourself().version, 1000);
        us.set_clock_ms(10);
        assert_eq!(us.version_max(), 61_000 + TOPOLOGY_VERSION_AHEAD_MAX_MS);
    }

    #[test]
    fn one_message_introduces_a_bounded_number_of_new_peers() {
        let mut t = Topology::new(entry(1, 1, 1, &[]));
        let n = TOPOLOGY_NEW_PEERS_PER_MSG_MAX as u64 + 44;
        let msg: Vec<PeerEntry> = (0..n).map(|p| entry(10 + p, 1, 1, &[])).collect();
        assert_eq!(t.merge(msg.clone()).len(), TOPOLOGY_NEW_PEERS_PER_MSG_MAX);
        assert_eq!(t.stats().dropped_per_msg, 44);
        // Updates of known peers are not new peers: the same message again takes the rest.
        let mut again = msg;
        for e in &mut again {
            e.version = 2;
        }
        assert_eq!(t.merge(again).len() as u64, n);
        assert_eq!(t.len() as u64, n + 1);
        assert_eq!(t.stats().dropped_per_msg, 44);
    }

    #[test]
    fn a_full_table_refuses_new_peers_and_counts_but_keeps_updating_known_ones() {
        let mut t = Topology::new(entry(1, 1, 1, &[]));
        let mut next = 10u64;
        while t.len() < TOPOLOGY_PEERS_MAX {
            let room = (TOPOLOGY_PEERS_MAX - t.len()).min(TOPOLOGY_NEW_PEERS_PER_MSG_MAX);
            let msg: Vec<PeerEntry> = (0..room as u64)
                .map(|p| entry(next + p, 1, 1, &[]))
                .collect();
            next += room as u64;
            assert_eq!(t.merge(msg).len(), room);
        }
        assert_eq!(t.merge(vec![entry(next, 1, 1, &[])]), vec![]);
        assert_eq!(t.stats().dropped_full, 1);
        assert!(!t.contains(name(next)));
        assert_eq!(t.merge(vec![entry(10, 1, 2, &[1])]), vec![name(10)]);
        // Room again once a peer is gone.
        t.remove(name(11));
        assert_eq!(t.merge(vec![entry(next, 1, 1, &[])]), vec![name(next)]);
        assert_eq!(t.len(), TOPOLOGY_PEERS_MAX);
    }

    #[test]
    fn the_table_holds_a_bounded_number_of_connections() {
        let mut t = Topology::new(entry(1, 1, 1, &[]));
        let per_entry = PEER_CONNS_MAX as u64;
        let fit = TOPOLOGY_CONNS_MAX as u64 / per_entry;
        let full = |n: u64, version: u64, conns: u64| PeerEntry {
            name: name(n),
            uid: PeerUid(1),
            version,
            nickname: String::new(),
            conns: (0..conns).map(|p| conn(1_000_000 + p, true)).collect(),
        };
        for n in 0..fit {
            assert_eq!(
                t.merge(vec![full(10 + n, 1, per_entry)]),
                vec![name(10 + n)]
            );
        }
        assert_eq!(t.conns_total(), TOPOLOGY_CONNS_MAX);
        // A new peer with one connection does not fit, nor a known one growing.
        assert_eq!(t.merge(vec![full(10 + fit, 1, 1)]), vec![]);
        assert_eq!(t.merge(vec![entry(10, 1, 2, &[])]), vec![name(10)]);
        assert_eq!(t.conns_total(), TOPOLOGY_CONNS_MAX - PEER_CONNS_MAX);
        assert_eq!(t.merge(vec![full(11, 2, per_entry + 1)]), vec![]);
        assert_eq!(t.stats().rejected_limits, 1);
        // A peer with no connections still fits, and the freed room is usable.
        assert_eq!(t.merge(vec![full(10 + fit, 1, 0)]), vec![name(10 + fit)]);
        assert_eq!(
            t.merge(vec![full(10 + fit + 1, 1, 3)]),
            vec![name(10 + fit + 1)]
        );
        assert_eq!(t.merge(vec![full(10 + fit + 2, 1, per_entry)]), vec![]);
        assert_eq!(t.stats().dropped_full, 2);
        t.remove(name(12));
        assert_eq!(t.conns_total(), TOPOLOGY_CONNS_MAX - 2 * PEER_CONNS_MAX + 3);
    }

    #[test]
    fn many_dead_peers_age_out_after_the_grace_and_recovered_ones_are_forgotten() {
        const N: u64 = 20_000;
        let grace = Duration::from_secs(60);
        let t0 = Instant::from_millis(1_000);
        let mut since = BTreeMap::new();
        // All N peers go unreachable at t0 (reverse order: the input need not be sorted).
        let all: Vec<PeerName> = (0..N).rev().map(name).collect();
        assert_eq!(age_unreachable(&mut since, all, t0, grace), vec![]);
        assert_eq!(since.len() as u64, N);
        // 30 s later the even ones are back.
        let odd: Vec<PeerName> = (0..N).filter(|p| p % 2 == 1).map(name).collect();
        let t1 = t0 + Duration::from_secs(30);
        assert_eq!(age_unreachable(&mut since, odd.clone(), t1, grace), vec![]);
        assert_eq!(since.len() as u64, N / 2);
        assert!(since.keys().all(|p| p.as_u64() % 2 == 1));
        // At t0 + 60 s the odd ones expire; the evens gone again (and a new peer) wait
        // their own grace from now.
        let again: Vec<PeerName> = (0..=N).filter(|p| p % 4 == 0).map(name).collect();
        let mut now_dead = odd.clone();
        now_dead.extend(again.iter().copied());
        let t2 = t0 + grace;
        assert_eq!(age_unreachable(&mut since, now_dead, t2, grace), odd);
        assert_eq!(since.keys().copied().collect::<Vec<_>>(), again);
        assert!(since.values().all(|&t| t == t2));
        assert_eq!(
            age_unreachable(&mut since, again.clone(), t2 + grace, grace),
            again
        );
        assert!(since.is_empty());
    }

    fn arb_entry() -> impl Strategy<Value = PeerEntry> {
        (
            0u64..6,
            0u64..3,
            0u64..4,
            proptest::collection::vec((0u64..6, any::<bool>()), 0..4),
        )
            .prop_map(|(n, uid, version, conns)| PeerEntry {
                name: name(n),
                uid: PeerUid(uid),
                version,
                nickname: "p".to_string(),
                conns: conns.into_iter().map(|(p, e)| conn(p, e)).collect(),
            })
    }

    proptest! {
        #[test]
        fn merge_order_does_not_matter(
            entries in proptest::collection::vec(arb_entry(), 0..24),
            seed in any::<u64>(),
            split in 0usize..24,
        ) {
            // Name 0 is ourselves, uid 1, version 1, nickname "p", no conns: generated
            // entries about us include exact echoes and other incarnations.
            let mut me = entry(0, 1, 1, &[]);
            me.nickname = "p".to_string();
            let mut a = Topology::new(me.clone());
            a.merge(entries.clone());
            let mut shuffled = entries.clone();
            crate::rng::Rng::from_seed(seed).shuffle(&mut shuffled);
            let mut b = Topology::new(me);
            let cut = split.min(shuffled.len());
            let rest = shuffled.split_off(cut);
            b.merge(shuffled);
            for e in rest {
                b.merge(vec![e]);
            }
            prop_assert_eq!(a.digest(), b.digest());
            prop_assert!(a.iter().eq(b.iter()));
        }
    }
}
