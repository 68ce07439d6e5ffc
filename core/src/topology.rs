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

use crate::peer::{PeerName, PeerUid};
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::cmp::Ordering;
use core::net::SocketAddr;

/// Most connections one peer's entry may list (a few hundred per peer are normal on big
/// meshes; the wire encoding of a full entry still fits one gossip message).
pub const PEER_CONNS_MAX: usize = 512;
/// Longest nickname, in bytes of UTF-8.
pub const NICKNAME_LEN_MAX: usize = 32;
/// Most peers one topology holds; entries about further new peers are dropped and counted.
pub const TOPOLOGY_PEERS_MAX: usize = 65_536;

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

/// The set of peer entries one router knows; its own entry is always present.
#[derive(Clone, Debug)]
pub struct Topology {
    ourself: PeerName,
    entries: BTreeMap<PeerName, PeerEntry>,
    generation: u64,
    dropped_full: u64,
    rejected: u64,
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

impl Topology {
    /// A topology holding only our own entry (connections sorted, limits enforced).
    pub fn new(mut ourself: PeerEntry) -> Self {
        ourself.conns = canonical_conns(core::mem::take(&mut ourself.conns));
        clamp_nickname(&mut ourself.nickname);
        let name = ourself.name;
        let mut entries = BTreeMap::new();
        entries.insert(name, ourself);
        Self {
            ourself: name,
            entries,
            generation: 0,
            dropped_full: 0,
            rejected: 0,
        }
    }

    /// Our own entry.
    pub fn ourself(&self) -> &PeerEntry {
        match self.entries.get(&self.ourself) {
            Some(e) => e,
            // `new` inserts it and nothing removes it.
            None => unreachable!("own entry missing"),
        }
    }

    /// Our own name.
    pub fn our_name(&self) -> PeerName {
        self.ourself
    }

    fn ourself_mut(&mut self) -> &mut PeerEntry {
        match self.entries.get_mut(&self.ourself) {
            Some(e) => e,
            None => unreachable!("own entry missing"),
        }
    }

    /// Replaces our connection list; call whenever a connection comes up, is established
    /// or goes away. Returns true (and bumps our version) if the list changed.
    pub fn set_our_conns(&mut self, conns: Vec<ConnInfo>) -> bool {
        let conns = canonical_conns(conns);
        let me = self.ourself_mut();
        if me.conns == conns {
            return false;
        }
        me.conns = conns;
        me.version = me.version.saturating_add(1);
        self.generation += 1;
        true
    }

    /// Changes our nickname (clamped to [`NICKNAME_LEN_MAX`]); true and a version bump if
    /// it changed.
    pub fn set_our_nickname(&mut self, mut nickname: String) -> bool {
        clamp_nickname(&mut nickname);
        let me = self.ourself_mut();
        if me.nickname == nickname {
            return false;
        }
        me.nickname = nickname;
        me.version = me.version.saturating_add(1);
        self.generation += 1;
        true
    }

    /// Merges gossiped entries; call with every decoded gossip message. Returns the names
    /// whose entry was new or replaced (sorted, no duplicates): the news to pass on.
    ///
    /// Rules: for another peer, the entry with the greater [`PeerEntry::rank_cmp`] wins
    /// (higher version, then higher uid, then content), so every arrival order ends in the
    /// same map. For our own name the content is never taken: an entry that differs from
    /// ours (an older incarnation, or a restart that kept its uid) with a version at or
    /// above ours makes us jump to its version + 1, an exact echo of our content ahead of
    /// us makes us adopt its version; either way our name is reported as news so our
    /// current entry overrides what others hold. Echoes at or below our version are no-ops.
    /// Entries over the limits are dropped; new peers beyond [`TOPOLOGY_PEERS_MAX`] too.
    pub fn merge(&mut self, entries: Vec<PeerEntry>) -> Vec<PeerName> {
        let mut news = Vec::new();
        for entry in entries {
            if !entry.is_within_limits() {
                self.rejected += 1;
                continue;
            }
            if entry.name == self.ourself {
                // Each entry about us raises our version to a floor: its own version for
                // an exact copy of our content (an echo, maybe ahead of a restarted us
                // that kept its uid), one past it for anything else. Taking a maximum
                // is order-independent, unlike "skip echoes, bump on the rest".
                let me = self.ourself_mut();
                let echo =
                    entry.uid == me.uid && entry.nickname == me.nickname && entry.conns == me.conns;
                let floor = if echo {
                    entry.version
                } else {
                    entry.version.saturating_add(1)
                };
                if floor > me.version {
                    me.version = floor;
                    news.push(entry.name);
                }
                continue;
            }
            let full = self.entries.len() >= TOPOLOGY_PEERS_MAX;
            match self.entries.entry(entry.name) {
                alloc::collections::btree_map::Entry::Occupied(mut slot) => {
                    if entry.rank_cmp(slot.get()) == Ordering::Greater {
                        news.push(entry.name);
                        slot.insert(entry);
                    }
                }
                alloc::collections::btree_map::Entry::Vacant(slot) => {
                    if full {
                        self.dropped_full += 1;
                    } else {
                        news.push(entry.name);
                        slot.insert(entry);
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
        self.entries.get(&name)
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
        self.entries.values()
    }

    /// All names in order, ourselves included.
    pub fn names(&self) -> impl Iterator<Item = PeerName> + '_ {
        self.entries.keys().copied()
    }

    /// Forgets a peer's entry (a dead peer aged out, `weft rmpeer`); our own is kept.
    pub fn remove(&mut self, name: PeerName) {
        if name != self.ourself && self.entries.remove(&name).is_some() {
            self.generation += 1;
        }
    }

    /// Counts every change; [`crate::routes::Routes`] uses it to notice it is stale.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Entries about new peers dropped because the map held [`TOPOLOGY_PEERS_MAX`].
    pub fn dropped_full(&self) -> u64 {
        self.dropped_full
    }

    /// Entries dropped by [`Topology::merge`] for exceeding a limit.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// A 64-bit hash of every entry's (name, uid, version) in name order: routers whose
    /// topologies agree have equal digests, whatever order they learnt things in. O(N).
    pub fn digest(&self) -> u64 {
        const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
        let mut h = FNV_OFFSET;
        for e in self.entries.values() {
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
        assert_eq!(t.rejected(), 1);
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
