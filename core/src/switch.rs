//! MAC learning for the virtual switch that spans all peers.
//!
//! What it does: remembers which peer each source MAC was last seen behind, forgets
//! entries after [`MAC_AGE_MS`] of silence, evicts the stalest entry when
//! [`MAC_TABLE_LEN_MAX`] is reached (and counts it), and decides per destination MAC
//! whether a frame stays local, goes to one peer or floods.
//!
//! What it does not do: move frames or program the kernel FDB; the router turns
//! decisions into transmits and events.

use crate::peer::PeerName;
use crate::time::{Duration, Instant};
use alloc::collections::{BTreeMap, BTreeSet};

/// Most MACs the table holds; learning one more evicts the least recently seen.
pub const MAC_TABLE_LEN_MAX: usize = 8192;
/// A MAC not seen for this long is forgotten (frames to it flood again), in milliseconds.
pub const MAC_AGE_MS: u64 = 300_000;

/// A 48-bit Ethernet address.
pub type Mac = [u8; 6];

/// True for broadcast and multicast addresses (the I/G bit of the first octet).
pub fn is_group(mac: &Mac) -> bool {
    mac[0] & 1 != 0
}

/// Where a frame goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forward {
    /// The destination lives on this host.
    Local,
    /// The destination was last seen behind this peer.
    Unicast(PeerName),
    /// Broadcast, multicast or unknown: send down the broadcast tree.
    Flood,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    peer: PeerName,
    last_seen: Instant,
    /// The time this MAC is filed under in `by_age` (<= `last_seen`): refreshing an entry
    /// only moves `last_seen`, so that learning, which runs for every frame, touches one
    /// map; the age index catches up when its entry comes first (expiry, eviction).
    indexed: Instant,
}

/// The bounded, aging MAC table.
#[derive(Clone, Debug)]
pub struct MacTable {
    ourself: PeerName,
    len_max: usize,
    age: Duration,
    by_mac: BTreeMap<Mac, Slot>,
    /// (indexed, mac) for every entry; the first is the stalest once caught up.
    by_age: BTreeSet<(Instant, Mac)>,
    evictions: u64,
    moves: u64,
}

impl MacTable {
    /// A table for the router named `ourself` (MACs learnt with that peer are [`Forward::Local`]),
    /// with the default limits.
    pub fn new(ourself: PeerName) -> Self {
        Self::with_limits(
            ourself,
            MAC_TABLE_LEN_MAX,
            Duration::from_millis(MAC_AGE_MS),
        )
    }

    /// A table with its own capacity (at least 1) and age limit (tests, small hosts).
    pub fn with_limits(ourself: PeerName, len_max: usize, age: Duration) -> Self {
        Self {
            ourself,
            len_max: len_max.max(1),
            age,
            by_mac: BTreeMap::new(),
            by_age: BTreeSet::new(),
            evictions: 0,
            moves: 0,
        }
    }

    fn fresh(&self, slot: &Slot, now: Instant) -> bool {
        now.saturating_since(slot.last_seen) <= self.age
    }

    /// Records that frames from `mac` come from `peer`; call for every frame's source
    /// (local frames with our own name). Group-bit sources are invalid and ignored.
    pub fn learn(&mut self, mac: Mac, peer: PeerName, now: Instant) {
        if is_group(&mac) {
            return;
        }
        if let Some(slot) = self.by_mac.get_mut(&mac) {
            if slot.peer != peer {
                self.moves += 1;
                slot.peer = peer;
            }
            // Time is monotonic; never move an entry backwards.
            slot.last_seen = slot.last_seen.max(now);
            return;
        }
        if self.by_mac.len() >= self.len_max {
            self.expire(now);
        }
        if self.by_mac.len() >= self.len_max
            && let Some(old) = self.pop_stalest()
        {
            self.by_mac.remove(&old);
            self.evictions += 1;
        }
        self.by_mac.insert(
            mac,
            Slot {
                peer,
                last_seen: now,
                indexed: now,
            },
        );
        self.by_age.insert((now, mac));
    }

    /// Takes the first entry of the age index, re-filing entries refreshed since they
    /// were indexed until the first one is exact; returns that MAC (still in `by_mac`).
    fn pop_stalest(&mut self) -> Option<Mac> {
        while let Some((at, mac)) = self.by_age.pop_first() {
            match self.by_mac.get_mut(&mac) {
                Some(slot) if slot.indexed == at && slot.last_seen != at => {
                    slot.indexed = slot.last_seen;
                    self.by_age.insert((slot.last_seen, mac));
                }
                Some(slot) if slot.indexed == at => return Some(mac),
                // Not the entry's current filing (cannot happen; drop the stray).
                _ => {}
            }
        }
        None
    }

    /// The peer `mac` was last seen behind, unless it aged out.
    pub fn lookup(&self, mac: Mac, now: Instant) -> Option<PeerName> {
        self.by_mac
            .get(&mac)
            .filter(|s| self.fresh(s, now))
            .map(|s| s.peer)
    }

    /// Where to send a frame for `dst`: group addresses always flood, fresh known
    /// addresses go to their peer (or stay local), everything else floods.
    pub fn decide(&self, dst: Mac, now: Instant) -> Forward {
        if is_group(&dst) {
            return Forward::Flood;
        }
        match self.lookup(dst, now) {
            Some(p) if p == self.ourself => Forward::Local,
            Some(p) => Forward::Unicast(p),
            None => Forward::Flood,
        }
    }

    /// Drops every MAC learnt behind `peer` (it went away); returns how many.
    pub fn forget_peer(&mut self, peer: PeerName) -> usize {
        let before = self.by_mac.len();
        let by_age = &mut self.by_age;
        self.by_mac.retain(|mac, s| {
            let keep = s.peer != peer;
            if !keep {
                by_age.remove(&(s.indexed, *mac));
            }
            keep
        });
        before - self.by_mac.len()
    }

    /// Drops entries older than the age limit; call from the router's timer. Returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut n = 0;
        while let Some(&(seen, _)) = self.by_age.first() {
            if now.saturating_since(seen) <= self.age {
                break;
            }
            // The first filing is stale; the entry itself may have been refreshed since.
            let Some(mac) = self.pop_stalest() else {
                break;
            };
            let last_seen = self.by_mac.get(&mac).map_or(seen, |s| s.last_seen);
            if now.saturating_since(last_seen) <= self.age {
                // Refreshed after all (pop_stalest only returns exact filings): keep it.
                self.by_age.insert((last_seen, mac));
                break;
            }
            self.by_mac.remove(&mac);
            n += 1;
        }
        n
    }

    /// When the stalest entry may age out, for the router's timer (possibly early: an
    /// entry refreshed since it was indexed; the timer then only catches the index up).
    pub fn next_expiry(&self) -> Option<Instant> {
        self.by_age
            .first()
            .map(|&(seen, _)| seen + self.age + Duration::from_micros(1))
    }

    /// MACs currently held (aged ones included until [`MacTable::expire`] runs).
    pub fn len(&self) -> usize {
        self.by_mac.len()
    }

    /// True if no MAC is held.
    pub fn is_empty(&self) -> bool {
        self.by_mac.is_empty()
    }

    /// Entries evicted because the table was full.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Times a MAC was seen behind a different peer than before.
    pub fn moves(&self) -> u64 {
        self.moves
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: PeerName = PeerName::from_u64(1);
    const P2: PeerName = PeerName::from_u64(2);
    const P3: PeerName = PeerName::from_u64(3);

    fn mac(n: u8) -> Mac {
        [0x02, 0, 0, 0, 0, n]
    }

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    #[test]
    fn learn_lookup_decide() {
        let mut m = MacTable::new(ME);
        m.learn(mac(1), ME, t(0));
        m.learn(mac(2), P2, t(0));
        assert_eq!(m.decide(mac(1), t(1)), Forward::Local);
        assert_eq!(m.decide(mac(2), t(1)), Forward::Unicast(P2));
        assert_eq!(m.decide(mac(3), t(1)), Forward::Flood);
        // Broadcast and multicast flood even if someone claimed them as a source.
        m.learn([0xff; 6], P2, t(1));
        m.learn([0x01, 0, 0x5e, 0, 0, 1], P2, t(1));
        assert_eq!(m.decide([0xff; 6], t(1)), Forward::Flood);
        assert_eq!(m.decide([0x01, 0, 0x5e, 0, 0, 1], t(1)), Forward::Flood);
        assert_eq!(m.len(), 2);
        // A MAC moving to another peer follows it.
        m.learn(mac(2), P3, t(2));
        assert_eq!(m.lookup(mac(2), t(2)), Some(P3));
        assert_eq!(m.moves(), 1);
    }

    #[test]
    fn entries_age_out_unless_refreshed() {
        let age = Duration::from_millis(100);
        let mut m = MacTable::with_limits(ME, 16, age);
        m.learn(mac(1), P2, t(0));
        m.learn(mac(2), P2, t(0));
        m.learn(mac(2), P2, t(80));
        assert_eq!(m.lookup(mac(1), t(100)), Some(P2));
        assert_eq!(m.lookup(mac(1), t(101)), None);
        assert_eq!(m.decide(mac(1), t(101)), Forward::Flood);
        assert_eq!(m.lookup(mac(2), t(150)), Some(P2));
        assert_eq!(m.next_expiry(), Some(t(100) + Duration::from_micros(1)));
        assert_eq!(m.expire(t(150)), 1);
        assert_eq!(m.len(), 1);
        assert_eq!(m.expire(t(181)), 1);
        assert!(m.is_empty());
        assert_eq!(m.next_expiry(), None);
    }

    #[test]
    fn full_table_evicts_stalest_and_counts() {
        let mut m = MacTable::with_limits(ME, 3, Duration::from_secs(60));
        m.learn(mac(1), P2, t(0));
        m.learn(mac(2), P2, t(1));
        m.learn(mac(3), P2, t(2));
        m.learn(mac(1), P2, t(3)); // refresh: mac 2 is now the stalest
        m.learn(mac(4), P3, t(4));
        assert_eq!(m.len(), 3);
        assert_eq!(m.evictions(), 1);
        assert_eq!(m.lookup(mac(2), t(4)), None);
        assert_eq!(m.lookup(mac(1), t(4)), Some(P2));
        assert_eq!(m.lookup(mac(4), t(4)), Some(P3));
        // Aged entries are dropped before anything fresh is evicted.
        let mut m = MacTable::with_limits(ME, 2, Duration::from_millis(10));
        m.learn(mac(1), P2, t(0));
        m.learn(mac(2), P2, t(15));
        m.learn(mac(3), P2, t(16));
        assert_eq!(m.evictions(), 0);
        assert_eq!(m.lookup(mac(2), t(16)), Some(P2));
    }

    proptest::proptest! {
        /// The lazily re-indexed table behaves exactly like a naive one: same lookups,
        /// same size, same evictions, whatever the order of learning, expiry and loss.
        #[test]
        fn matches_a_naive_table(ops in proptest::collection::vec((0u8..4, 0u8..8, 0u64..40, 0u8..3), 1..200)) {
            let (cap, age) = (4usize, Duration::from_millis(50));
            let mut m = MacTable::with_limits(ME, cap, age);
            let mut naive: BTreeMap<Mac, (PeerName, u64)> = Default::default();
            let mut now = 0u64;
            let peers = [P2, P3];
            for (op, n, dt, p) in ops {
                now += dt;
                let peer = peers[usize::from(p % 2)];
                match op {
                    0 | 1 => {
                        m.learn(mac(n), peer, t(now));
                        if let Some(e) = naive.get_mut(&mac(n)) {
                            *e = (peer, now);
                        } else {
                            if naive.len() >= cap {
                                naive.retain(|_, e| now - e.1 <= 50);
                            }
                            if naive.len() >= cap {
                                let stalest = *naive.iter().min_by_key(|(k, e)| (e.1, **k)).unwrap().0;
                                naive.remove(&stalest);
                            }
                            naive.insert(mac(n), (peer, now));
                        }
                    }
                    2 => {
                        m.expire(t(now));
                        naive.retain(|_, e| now - e.1 <= 50);
                    }
                    _ => {
                        m.forget_peer(peer);
                        naive.retain(|_, e| e.0 != peer);
                    }
                }
                proptest::prop_assert_eq!(m.len(), naive.len());
                for k in 0..8 {
                    let want = naive.get(&mac(k)).filter(|e| now - e.1 <= 50).map(|e| e.0);
                    proptest::prop_assert_eq!(m.lookup(mac(k), t(now)), want);
                }
            }
        }
    }

    #[test]
    fn forget_peer_removes_only_its_macs() {
        let mut m = MacTable::new(ME);
        m.learn(mac(1), P2, t(0));
        m.learn(mac(2), P3, t(0));
        m.learn(mac(3), P2, t(1));
        assert_eq!(m.forget_peer(P2), 2);
        assert_eq!(m.lookup(mac(1), t(1)), None);
        assert_eq!(m.lookup(mac(2), t(1)), Some(P3));
        // The age index was cleaned too: expiring later removes exactly the one left.
        assert_eq!(m.expire(t(MAC_AGE_MS + 10)), 1);
        assert!(m.is_empty());
    }
}
