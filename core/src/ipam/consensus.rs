//! Seeding the ring, and adopting or merging the rings peers gossip.
//!
//! Before the ring exists every peer in `consensus=N` mode gossips a proposal: the set of
//! consensus peers it has heard of (itself included), so the sets spread transitively.
//! When a peer's set reaches N and it is the lowest name in it, it seeds the ring, split
//! evenly among the N lowest names, and gossips it; everyone adopts the first full ring
//! they see, and from then on only merges entries of that ring. Observers relay proposals
//! but never add themselves and never seed. A peer alone with `consensus=3` never seeds:
//! its requests wait.
//!
//! Safety: with N equal to the number of initial peers (or more than half of them), two
//! seeders would each need N peers that never heard of the other's lower name — impossible
//! while they are connected. Rings seeded separately anyway (a partition at first start,
//! mismatched N) never merge: their entries are refused and counted
//! ([`super::IpamStats::ring_conflicts`]) as Weave refuses them.

use super::alloc::Ipam;
use super::ring::{Entry, Ring, RingError, RingId};
use super::space::Cidr;
use super::wire::{IpamMsg, PROPOSAL_NAMES_MAX};
use super::{InitMode, IpamEvent, Output};
use crate::peer::PeerName;
use crate::time::Instant;
use alloc::collections::BTreeSet;
use alloc::vec::Vec;

/// What a peer knows before the ring exists.
#[derive(Clone, Debug)]
pub(super) struct Consensus {
    /// Consensus peers heard of (at most [`PROPOSAL_NAMES_MAX`], the lowest kept).
    pub(super) heard: BTreeSet<PeerName>,
    /// N, or `None` for an observer.
    pub(super) quorum: Option<u16>,
}

impl Consensus {
    pub(super) fn new(me: PeerName, init: InitMode) -> Self {
        let mut heard = BTreeSet::new();
        let quorum = match init {
            InitMode::Consensus { quorum } => {
                heard.insert(me);
                Some(quorum.clamp(1, PROPOSAL_NAMES_MAX as u16))
            }
            InitMode::Observer => None,
        };
        Self { heard, quorum }
    }

    /// Adds names; true if the set grew.
    fn hear(&mut self, names: &[PeerName]) -> bool {
        let before = self.heard.clone();
        self.heard.extend(names.iter().copied());
        while self.heard.len() > PROPOSAL_NAMES_MAX {
            self.heard.pop_last();
        }
        self.heard != before
    }

    fn proposal(&self) -> Option<Vec<u8>> {
        if self.heard.is_empty() {
            return None;
        }
        IpamMsg::Proposal {
            quorum: self.quorum.unwrap_or(1),
            names: self.heard.iter().copied().collect(),
        }
        .to_vec()
        .ok()
    }
}

impl Ipam {
    /// Seeds the ring if we are a consensus peer, have heard of a quorum and are the
    /// lowest name among them.
    pub(super) fn try_seed(&mut self, now: Instant) {
        if !self.ring.is_empty() {
            return;
        }
        let Some(quorum) = self.consensus.quorum else {
            return;
        };
        let quorum = usize::from(quorum);
        if self.consensus.heard.len() < quorum || self.consensus.heard.first() != Some(&self.me) {
            return;
        }
        let members: Vec<PeerName> = self.consensus.heard.iter().take(quorum).copied().collect();
        let id = RingId {
            seeder: self.me,
            nonce: self.rng.next_u64(),
        };
        self.ring = Ring::seeded(self.config.range, id, &members);
        self.ring_ready(now);
    }

    /// The ring just came to exist here: tell the driver, pass it on, serve waiting requests.
    fn ring_ready(&mut self, now: Instant) {
        self.push_event(IpamEvent::RingReady);
        self.generation += 1;
        self.refresh_all_free();
        self.news.extend(self.ring.entries().map(|(t, _)| t));
        self.process(now);
        self.flush_news();
    }

    /// Handles a consensus proposal from neighbour `from`.
    pub(super) fn on_proposal(&mut self, now: Instant, from: PeerName, names: &[PeerName]) {
        if !self.ring.is_empty() {
            // The sender has no ring yet: give it ours.
            if let Some(full) = self.full_ring_msg() {
                self.push_output(Output::Neighbour(from, full));
            }
            return;
        }
        if self.consensus.hear(names) {
            if let Some(p) = self.consensus.proposal() {
                self.push_output(Output::Neighbours(p));
            }
            self.try_seed(now);
        }
    }

    /// Our proposal, while there is no ring (sent to new neighbours and periodically).
    pub(super) fn proposal_msg(&self) -> Option<Vec<u8>> {
        if self.ring.is_empty() {
            self.consensus.proposal()
        } else {
            None
        }
    }

    /// Handles ring entries from neighbour `from`.
    pub(super) fn on_ring(
        &mut self,
        now: Instant,
        from: PeerName,
        id: RingId,
        range: Cidr,
        full: bool,
        entries: &[(u32, Entry)],
    ) {
        if range != self.config.range.network() {
            self.stats.range_mismatches += 1;
            return;
        }
        if self.ring.is_empty() {
            if !full {
                if !self.pulled {
                    self.pulled = true;
                    if let Ok(m) = IpamMsg::RingPull.to_vec() {
                        self.push_output(Output::Neighbour(from, m));
                    }
                }
                return;
            }
            match self.ring.adopt(id, entries) {
                Ok(()) => self.ring_ready(now),
                Err(_) => self.stats.malformed += 1,
            }
            return;
        }
        match self.ring.merge(self.me, id, entries) {
            Ok(merged) => {
                if merged.refused > 0 {
                    self.stats.takeovers_refused += merged.refused as u64;
                    self.push_event(IpamEvent::TakeoverRefused {
                        from,
                        entries: merged.refused,
                    });
                }
                if !merged.changed.is_empty() {
                    self.generation += 1;
                    self.drop_lost(&merged.changed);
                    self.news.extend(merged.changed.iter().copied());
                    self.process(now);
                    self.flush_news();
                }
            }
            Err(RingError::Conflict) => self.stats.ring_conflicts += 1,
            Err(_) => self.stats.malformed += 1,
        }
    }
}
