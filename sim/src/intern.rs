//! One shared copy of each peer entry for all the simulated routers of a world.
//!
//! Every router holds an entry of every peer: N routers of N peers are N² entries when
//! each keeps its own copy (the reason 10,000 routers did not fit). An [`Interner`]
//! given to every router's topology (`Topology::set_interner`) hands out one
//! reference-counted allocation per distinct entry (one version of one peer), so a
//! router's table holds pointers, and the entries themselves are stored about once.
//! The topology computes exactly what it would with private copies: a hit is returned
//! only for an entry equal to the one given.
//!
//! What it does not do: share anything mutable (a router's own entry is never interned;
//! it changes in place), or cross worlds (one interner per router factory).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use weft_core::topology::{EntryInterner, PeerEntry};

/// The interner's table starts pruning past this many entries; after each prune the
/// threshold is twice what stayed.
const PRUNE_AT_LEN_MIN: usize = 1 << 16;

#[derive(Debug)]
struct Table {
    by_fingerprint: HashMap<u64, Arc<PeerEntry>>,
    prune_at_len: usize,
}

/// Shares equal entries between the routers of one world (see the module doc).
#[derive(Debug)]
pub struct Interner {
    table: Mutex<Table>,
}

impl Default for Interner {
    fn default() -> Self {
        Self::new()
    }
}

impl Interner {
    /// An empty interner.
    pub fn new() -> Self {
        Self {
            table: Mutex::new(Table {
                by_fingerprint: HashMap::new(),
                prune_at_len: PRUNE_AT_LEN_MIN,
            }),
        }
    }

    /// Distinct entries held now (some may be held by no router until the next prune).
    pub fn len(&self) -> usize {
        self.table.lock().map_or(0, |t| t.by_fingerprint.len())
    }

    /// True if nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl EntryInterner for Interner {
    fn intern(&self, entry: PeerEntry, fingerprint: u64) -> Arc<PeerEntry> {
        // A poisoned lock (a panic elsewhere mid-insert) still holds a usable table.
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(held) = t.by_fingerprint.get(&fingerprint)
            && **held == entry
        {
            return Arc::clone(held);
        }
        if t.by_fingerprint.len() >= t.prune_at_len {
            // Entries only the table holds are versions every router has replaced.
            t.by_fingerprint.retain(|_, a| Arc::strong_count(a) > 1);
            t.prune_at_len = (2 * t.by_fingerprint.len()).max(PRUNE_AT_LEN_MIN);
        }
        let shared = Arc::new(entry);
        // On a fingerprint collision (different content) the newer entry takes the slot;
        // the older stays shared by those holding it.
        t.by_fingerprint.insert(fingerprint, Arc::clone(&shared));
        shared
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_core::peer::{PeerName, PeerUid};
    use weft_core::topology::{Topology, fingerprint};

    fn entry(n: u64, version: u64) -> PeerEntry {
        PeerEntry {
            name: PeerName::from_u64(n),
            uid: PeerUid(n),
            version,
            nickname: format!("p{n}"),
            conns: Vec::new(),
        }
    }

    #[test]
    fn equal_entries_share_one_allocation_and_unequal_ones_never_do() {
        let i = Interner::new();
        let a = i.intern(entry(1, 1), fingerprint(&entry(1, 1)));
        let b = i.intern(entry(1, 1), fingerprint(&entry(1, 1)));
        assert!(Arc::ptr_eq(&a, &b));
        let c = i.intern(entry(1, 2), fingerprint(&entry(1, 2)));
        assert_eq!(*c, entry(1, 2));
        // A lying fingerprint (a collision) still gets an equal entry back, not the held one.
        let d = i.intern(entry(2, 1), fingerprint(&entry(1, 1)));
        assert_eq!(*d, entry(2, 1));
        assert!(!Arc::ptr_eq(&a, &d));
    }

    #[test]
    fn topologies_through_one_interner_hold_the_same_and_share_it() {
        let shared: Arc<Interner> = Arc::new(Interner::new());
        let entries: Vec<PeerEntry> = (10..200).map(|n| entry(n, 3)).collect();
        let mut plain = Topology::new(entry(1, 1));
        let mut tops: Vec<Topology> = (2..5).map(|me| Topology::new(entry(me, 1))).collect();
        for t in &mut tops {
            t.set_interner(shared.clone());
            t.merge(entries.clone());
        }
        plain.merge(entries.clone());
        for t in &tops {
            assert!(t.iter().skip(1).eq(plain.iter().skip(1)));
        }
        // One allocation per entry, whatever the number of topologies.
        assert_eq!(shared.len(), entries.len());
        // A newer version replaces it in each; the old one is gone once nobody holds it.
        for t in &mut tops {
            t.merge(vec![entry(10, 4)]);
        }
        assert_eq!(tops[0].get(PeerName::from_u64(10)), Some(&entry(10, 4)));
        assert_eq!(shared.len(), entries.len() + 1);
    }
}
