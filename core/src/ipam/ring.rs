//! The ring: the address range as a partition into spans, each owned by one peer, merged
//! by gossip as a CRDT.
//!
//! An entry `token -> (owner, version, free)` owns the addresses from `token` up to the
//! next token (or the end of the range). Tokens are never removed, so the ring is always a
//! partition of the range with exactly one owner per address ([`Ring::check`]). Only an
//! entry's owner changes it (its free count, or giving it away), bumping its version;
//! [`Ring::merge`] keeps, per token, the entry with the greater `(version, owner, free)`,
//! which is commutative, associative and idempotent. `rmpeer` and reclaim are the two
//! places a non-owner changes an entry; see [`Ring::transfer_all`].
//!
//! Our own spans are ours to change (as Weave refuses too): merge never takes a newer
//! version of an entry we own, nor a new token inside a span we own; only we split or
//! give away our space ([`Ring::transfer`]). Among the other peers the CRDT laws hold
//! unchanged. A peer that is `rmpeer`ed or reclaimed elsewhere while it is alive keeps
//! its space in its own view and counts the refusals (the operator's error shows).
//!
//! What it does not do: know about containers (see [`super::alloc`]) or encode itself
//! (see [`super::wire`]).

use super::space::{Cidr, overlap};
use crate::peer::PeerName;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;

/// Most entries (spans) a ring holds; a donation that would pass it is refused.
pub const RING_ENTRIES_MAX: usize = 4096;

/// Which seeding a ring comes from: two rings with different ids never merge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RingId {
    /// The peer that seeded it.
    pub seeder: PeerName,
    /// A random number the seeder drew, so a re-seed after `weft reset` differs.
    pub nonce: u64,
}

/// One span's owner and bookkeeping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Entry {
    /// Who hands out the span's addresses.
    pub owner: PeerName,
    /// Bumped on every change; the greater wins in [`Ring::merge`].
    pub version: u64,
    /// Addresses of the span the owner has not handed out (a hint for donation requests).
    pub free: u32,
}

impl Entry {
    /// The order merge keeps the greater of.
    fn rank(&self) -> (u64, PeerName, u32) {
        (self.version, self.owner, self.free)
    }
}

/// What [`Ring::merge`] did with one batch of entries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Merged {
    /// Tokens whose entry changed (the news to pass on), in arrival order.
    pub changed: Vec<u32>,
    /// Entries refused because they would take space the merging peer owns.
    pub refused: usize,
}

/// One span as [`Ring::spans`] yields it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// First address.
    pub start: u32,
    /// One past the last address.
    pub end: u64,
    /// The entry at `start`.
    pub entry: Entry,
}

/// Why a ring operation or check failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingError {
    /// No ring yet (before consensus).
    NoRing,
    /// Entries from a ring seeded separately (a split start); not merged.
    Conflict,
    /// A token outside the range, or a ring without an entry at the range's start.
    OutOfRange,
    /// The ring would pass [`RING_ENTRIES_MAX`].
    Full,
    /// The span asked for is not wholly inside one span owned by the caller.
    NotOwner,
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NoRing => "no address ring yet (waiting for the initial peers to agree)",
            Self::Conflict => "entries from a different address ring (peers seeded separately)",
            Self::OutOfRange => "ring entry outside the address range",
            Self::Full => "the address ring has too many spans",
            Self::NotOwner => "span not owned by this peer",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for RingError {}

/// The ring of one router.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ring {
    range: Cidr,
    id: Option<RingId>,
    entries: BTreeMap<u32, Entry>,
}

impl Ring {
    /// An empty ring (no id, no entries) over `range`.
    pub fn new(range: Cidr) -> Self {
        Self {
            range: range.network(),
            id: None,
            entries: BTreeMap::new(),
        }
    }

    /// A ring seeded by `id.seeder`: the range split evenly among `members` (sorted, at
    /// least one, at most as many as addresses), each entry at version 1 and all free.
    pub fn seeded(range: Cidr, id: RingId, members: &[PeerName]) -> Self {
        let mut ring = Self::new(range);
        ring.id = Some(id);
        let n = (members.len() as u64).clamp(1, ring.range.size());
        let size = ring.range.size();
        for (i, m) in members.iter().take(n as usize).enumerate() {
            let start = u64::from(ring.range.start()) + size * i as u64 / n;
            let end = u64::from(ring.range.start()) + size * (i as u64 + 1) / n;
            let entry = Entry {
                owner: *m,
                version: 1,
                free: (end - start).min(u64::from(u32::MAX)) as u32,
            };
            ring.entries.insert(start as u32, entry);
        }
        ring
    }

    /// The range this ring partitions.
    pub fn range(&self) -> Cidr {
        self.range
    }

    /// The ring's id, once it exists.
    pub fn id(&self) -> Option<RingId> {
        self.id
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True before the ring exists.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry at `token`.
    pub fn get(&self, token: u32) -> Option<Entry> {
        self.entries.get(&token).copied()
    }

    /// All entries in token order.
    pub fn entries(&self) -> impl Iterator<Item = (u32, Entry)> + '_ {
        self.entries.iter().map(|(t, e)| (*t, *e))
    }

    /// One past the last address of the span starting at `token`.
    fn span_end(&self, token: u32) -> u64 {
        self.entries
            .range(token.saturating_add(1)..)
            .next()
            .filter(|(t, _)| **t > token)
            .map_or(self.range.end(), |(t, _)| u64::from(*t))
    }

    /// All spans in address order.
    pub fn spans(&self) -> impl Iterator<Item = Span> + '_ {
        let mut it = self.entries.iter().peekable();
        core::iter::from_fn(move || {
            let (t, e) = it.next()?;
            let end = it.peek().map_or(self.range.end(), |(n, _)| u64::from(**n));
            Some(Span {
                start: *t,
                end,
                entry: *e,
            })
        })
    }

    /// The span holding `addr`, if the ring exists and the address is in the range.
    pub fn span_of(&self, addr: u32) -> Option<Span> {
        if !self.range.contains(addr) {
            return None;
        }
        let (t, e) = self.entries.range(..=addr).next_back()?;
        Some(Span {
            start: *t,
            end: self.span_end(*t),
            entry: *e,
        })
    }

    /// Who owns `addr`.
    pub fn owner_of(&self, addr: u32) -> Option<PeerName> {
        self.span_of(addr).map(|s| s.entry.owner)
    }

    /// Spans owned by `peer` that overlap `[lo, hi)`, clipped to it.
    pub fn owned_within(
        &self,
        peer: PeerName,
        lo: u64,
        hi: u64,
    ) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.spans()
            .filter(move |s| s.entry.owner == peer)
            .filter_map(move |s| overlap(u64::from(s.start), s.end, lo, hi))
    }

    /// Adopts `id` and `entries` wholesale (a peer with no ring yet receiving a full one,
    /// or a restore). The caller checks the result with [`Ring::check`].
    pub fn adopt(&mut self, id: RingId, entries: &[(u32, Entry)]) -> Result<(), RingError> {
        if entries.len() > RING_ENTRIES_MAX {
            return Err(RingError::Full);
        }
        let mut candidate = Self::new(self.range);
        candidate.id = Some(id);
        candidate.entries = entries.iter().copied().collect();
        candidate.check()?;
        *self = candidate;
        Ok(())
    }

    /// Merges gossiped entries of ring `id` into the ring of peer `me`; returns the tokens
    /// that changed (the news to pass on) and how many entries were refused. Without a
    /// ring of our own nothing is merged ([`RingError::NoRing`]: the caller adopts a full
    /// ring instead); entries of another ring are refused whole. Entries outside the range
    /// are skipped; new tokens past [`RING_ENTRIES_MAX`] too.
    ///
    /// Refused (counted in [`Merged::refused`]): a newer entry at a token whose entry is
    /// ours (another peer claiming our span, or a version of our entry we never wrote),
    /// and a new token inside a span that is ours (another peer splitting our space, or a
    /// piece of ours we never made). Both are judged against the ring as it was before
    /// this batch, so a donation to us (our piece and the donor's remainder together)
    /// is taken whatever the order of its entries.
    pub fn merge(
        &mut self,
        me: PeerName,
        id: RingId,
        entries: &[(u32, Entry)],
    ) -> Result<Merged, RingError> {
        match self.id {
            None => return Err(RingError::NoRing),
            Some(ours) if ours != id => return Err(RingError::Conflict),
            Some(_) => {}
        }
        let mut out = Merged::default();
        let mut taken = Vec::with_capacity(entries.len());
        for &(token, incoming) in entries {
            if !self.range.contains(token) {
                continue;
            }
            let ours = match self.entries.get(&token) {
                Some(e) if incoming.rank() > e.rank() => e.owner == me,
                Some(_) => continue,
                None => self.owner_of(token) == Some(me),
            };
            if ours {
                out.refused += 1;
            } else {
                taken.push((token, incoming));
            }
        }
        for (token, incoming) in taken {
            let room = self.entries.len() < RING_ENTRIES_MAX;
            match self.entries.get_mut(&token) {
                Some(e) if incoming.rank() > e.rank() => {
                    *e = incoming;
                    out.changed.push(token);
                }
                Some(_) => {}
                None if room => {
                    self.entries.insert(token, incoming);
                    out.changed.push(token);
                }
                None => {}
            }
        }
        Ok(out)
    }

    /// Gives `[start, end)` — wholly inside one span owned by `me` — to `to`, splitting the
    /// span as needed; the pieces get the containing entry's version + 1. `free(lo, hi)`
    /// gives the free count of each resulting piece (the caller knows the allocations).
    /// Returns the changed tokens.
    pub fn transfer(
        &mut self,
        me: PeerName,
        start: u32,
        end: u64,
        to: PeerName,
        free: impl Fn(u64, u64) -> u32,
    ) -> Result<Vec<u32>, RingError> {
        let span = self.span_of(start).ok_or(RingError::NotOwner)?;
        if span.entry.owner != me || end > span.end || u64::from(start) >= end {
            return Err(RingError::NotOwner);
        }
        let new_tokens =
            usize::from(u64::from(span.start) != u64::from(start)) + usize::from(end != span.end);
        if self.entries.len() + new_tokens > RING_ENTRIES_MAX {
            return Err(RingError::Full);
        }
        let version = span.entry.version + 1;
        let mut changed = Vec::new();
        if span.start != start {
            let kept = Entry {
                owner: me,
                version,
                free: free(u64::from(span.start), u64::from(start)),
            };
            self.entries.insert(span.start, kept);
            changed.push(span.start);
        }
        let given = Entry {
            owner: to,
            version,
            free: free(u64::from(start), end),
        };
        self.entries.insert(start, given);
        changed.push(start);
        if end != span.end {
            // end < span.end <= 2^32, so it fits a u32.
            let kept = Entry {
                owner: me,
                version,
                free: free(end, span.end),
            };
            self.entries.insert(end as u32, kept);
            changed.push(end as u32);
        }
        Ok(changed)
    }

    /// Makes `to` the owner of every span `from` owns (rmpeer, reclaim), bumping each
    /// entry's version; `free` computes each span's new free count. Returns the changed
    /// tokens and how many addresses moved.
    pub fn transfer_all(
        &mut self,
        from: PeerName,
        to: PeerName,
        free: impl Fn(u64, u64) -> u32,
    ) -> (Vec<u32>, u64) {
        let spans: Vec<Span> = self.spans().filter(|s| s.entry.owner == from).collect();
        let mut moved = 0;
        let mut changed = Vec::new();
        for s in spans {
            moved += s.end - u64::from(s.start);
            let e = Entry {
                owner: to,
                version: s.entry.version + 1,
                free: free(u64::from(s.start), s.end),
            };
            self.entries.insert(s.start, e);
            changed.push(s.start);
        }
        (changed, moved)
    }

    /// Sets the free count of our entry at `token`, bumping its version if it changed.
    pub fn set_free(&mut self, me: PeerName, token: u32, free: u32) -> bool {
        match self.entries.get_mut(&token) {
            Some(e) if e.owner == me && e.free != free => {
                e.free = free;
                e.version += 1;
                true
            }
            _ => false,
        }
    }

    /// Checks the invariants: with an id, at least one entry, one at the range's start,
    /// every token inside the range, at most [`RING_ENTRIES_MAX`] entries. Free counts are
    /// hints from their owners (a peer may send any) and are not checked. Without an id, no entries. (Exactly one owner per address
    /// follows: each address belongs to the span of the greatest token at or below it.)
    pub fn check(&self) -> Result<(), RingError> {
        if self.id.is_none() {
            return if self.entries.is_empty() {
                Ok(())
            } else {
                Err(RingError::NoRing)
            };
        }
        if self.entries.len() > RING_ENTRIES_MAX {
            return Err(RingError::Full);
        }
        match self.entries.keys().next() {
            Some(first) if *first == self.range.start() => {}
            _ => return Err(RingError::OutOfRange),
        }
        for s in self.spans() {
            if !self.range.contains(s.start) {
                return Err(RingError::OutOfRange);
            }
        }
        Ok(())
    }

    /// Addresses owned and free per peer, in name order.
    pub fn shares(&self) -> BTreeMap<PeerName, (u64, u64)> {
        let mut out: BTreeMap<PeerName, (u64, u64)> = BTreeMap::new();
        for s in self.spans() {
            let e = out.entry(s.entry.owner).or_default();
            e.0 += s.end - u64::from(s.start);
            e.1 += u64::from(s.entry.free);
        }
        out
    }

    /// A hash of id and entries: equal rings give equal digests (for the simulator).
    pub fn digest(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |v: u64| {
            for b in v.to_be_bytes() {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        };
        if let Some(id) = self.id {
            eat(id.seeder.as_u64());
            eat(id.nonce);
        }
        for (t, e) in &self.entries {
            eat(u64::from(*t));
            eat(e.owner.as_u64());
            eat(e.version);
            eat(u64::from(e.free));
        }
        h
    }
}
