//! Topology gossip: packing entries into bounded messages, choosing whom to tell, and
//! coalescing news between sends.
//!
//! What it does: splits any set of [`PeerEntry`]s into messages of at most
//! [`GOSSIP_MSG_LEN_MAX`] bytes ([`encode_entries`]), decodes them ([`decode`]), sizes the
//! periodic fan-out ([`gossip_fanout`]) and picks random targets ([`choose_targets`]) from
//! the router's seeded RNG. [`NewsQueue`] collects names learnt since the last send.
//!
//! What it does not do: send anything, keep timers, or merge (see [`crate::topology`]).

use crate::peer::PeerName;
use crate::rng::Rng;
use crate::topology::{PeerEntry, TOPOLOGY_NEW_PEERS_PER_MSG_MAX, Topology};
use crate::wire::WireError;
use crate::wire::buf::Writer;
use crate::wire::topology::{
    ENTRIES_PER_MSG_MAX, MSG_HEADER_LEN, TOPOLOGY_MSG_LEN_MAX, emit_entry, entry_len, parse_entries,
};
use alloc::collections::BTreeSet;
use alloc::vec::Vec;

/// Largest gossip message payload, in bytes (the topology codec's limit).
pub const GOSSIP_MSG_LEN_MAX: usize = TOPOLOGY_MSG_LEN_MAX;
/// Most names a [`NewsQueue`] holds; past it the queue asks for a full-topology send.
/// As many as a topology holds ([`crate::topology::TOPOLOGY_PEERS_MAX`]), so news about
/// an honest table is always sent name by name: with 4096, every router of a network of
/// more peers fell back to resending its whole table (1 MiB at 10,000 peers) to each
/// neighbour whenever more than 4096 entries changed between two flushes, which set off
/// the same in its neighbours (the simulator's 10,000-peer run never settled). At most
/// 16,384 names of 8 bytes per neighbour.
pub const PENDING_NEWS_MAX: usize = crate::topology::TOPOLOGY_PEERS_MAX;
/// Upper bound on [`gossip_fanout`], whatever the peer count.
pub const GOSSIP_FANOUT_MAX: usize = 32;

/// Entries one message carries at most: what a receiver takes as new peers from one
/// message ([`TOPOLOGY_NEW_PEERS_PER_MSG_MAX`]), so honest gossip never hits that cap.
pub const GOSSIP_ENTRIES_PER_MSG_MAX: usize =
    if TOPOLOGY_NEW_PEERS_PER_MSG_MAX < ENTRIES_PER_MSG_MAX {
        TOPOLOGY_NEW_PEERS_PER_MSG_MAX
    } else {
        ENTRIES_PER_MSG_MAX
    };

/// Encodes `entries` into as few messages as fit, each at most [`GOSSIP_MSG_LEN_MAX`]
/// bytes and [`GOSSIP_ENTRIES_PER_MSG_MAX`] entries, in the given order, handing each finished
/// message to `emit` (one buffer is reused; copy out what you keep). Entries that break a
/// limit of [`crate::topology`] are skipped (they could not be decoded anyway); returns
/// how many were skipped.
pub fn encode_messages(entries: &[&PeerEntry], mut emit: impl FnMut(&[u8])) -> usize {
    let mut skipped = 0;
    let mut buf = alloc::vec![0u8; GOSSIP_MSG_LEN_MAX];
    let mut batch_start = 0;
    let mut batch_count: usize = 0;
    let mut batch_len = MSG_HEADER_LEN;
    // Emits entries[batch_start..end] (minus the skipped ones, already excluded from the count).
    let mut flush = |from: usize, to: usize, count: usize, buf: &mut [u8]| {
        let mut w = Writer::new(buf);
        if w.u16(count as u16).is_err() {
            return;
        }
        for e in entries[from..to].iter().filter(|e| e.is_within_limits()) {
            // Cannot fail: lengths were summed with `entry_len` against the buffer size.
            if emit_entry(e, &mut w).is_err() {
                return;
            }
        }
        let n = w.len();
        emit(&buf[..n]);
    };
    for (i, e) in entries.iter().enumerate() {
        if !e.is_within_limits() {
            skipped += 1;
            continue;
        }
        let len = entry_len(e);
        if batch_count == GOSSIP_ENTRIES_PER_MSG_MAX || batch_len + len > GOSSIP_MSG_LEN_MAX {
            flush(batch_start, i, batch_count, &mut buf);
            batch_start = i;
            batch_count = 0;
            batch_len = MSG_HEADER_LEN;
        }
        batch_count += 1;
        batch_len += len;
    }
    if batch_count > 0 {
        flush(batch_start, entries.len(), batch_count, &mut buf);
    }
    skipped
}

/// Like [`encode_messages`], collecting the messages.
pub fn encode_entries<'e>(entries: impl IntoIterator<Item = &'e PeerEntry>) -> Vec<Vec<u8>> {
    let refs: Vec<&PeerEntry> = entries.into_iter().collect();
    let mut out = Vec::new();
    encode_messages(&refs, |m| out.push(m.to_vec()));
    out
}

/// Every entry of `topology`, for the periodic full gossip and for a new neighbour.
pub fn encode_all(topology: &Topology) -> Vec<Vec<u8>> {
    encode_entries(topology.iter())
}

/// The entries named in `names` (unknown names skipped), for passing news on.
pub fn encode_names(topology: &Topology, names: &[PeerName]) -> Vec<Vec<u8>> {
    encode_entries(names.iter().filter_map(|&n| topology.get(n)))
}

/// Decodes one gossip message payload into entries for [`Topology::merge`].
pub fn decode(payload: &[u8]) -> Result<Vec<PeerEntry>, WireError> {
    parse_entries(payload)
}

/// How many neighbours to gossip to per round in a network of `n_peers`:
/// about 2·log2(N), at least 1, at most [`GOSSIP_FANOUT_MAX`].
pub fn gossip_fanout(n_peers: usize) -> usize {
    let log = if n_peers <= 1 {
        0
    } else {
        n_peers.ilog2() as usize
    };
    (2 * log).clamp(1, GOSSIP_FANOUT_MAX)
}

/// `n` distinct neighbours picked uniformly with `rng` (all of them if `n` is larger),
/// in pick order. Same RNG state, same answer.
pub fn choose_targets(rng: &mut Rng, neighbours: &[PeerName], n: usize) -> Vec<PeerName> {
    let mut pool: Vec<PeerName> = neighbours.to_vec();
    pool.sort_unstable();
    pool.dedup();
    let n = n.min(pool.len());
    // Partial Fisher–Yates: the first n slots end up a uniform sample.
    for i in 0..n {
        let j = i + rng.below((pool.len() - i) as u64) as usize;
        pool.swap(i, j);
    }
    pool.truncate(n);
    pool
}

/// What a [`NewsQueue`] says to send next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum News {
    /// Nothing new since the last take.
    Nothing,
    /// These entries changed (sorted, no duplicates).
    Names(Vec<PeerName>),
    /// Too much changed to track name by name: send the whole topology.
    Everything,
}

/// Names learnt or changed since the last gossip send, bounded by [`PENDING_NEWS_MAX`].
/// The router adds what [`Topology::merge`] reports and takes it when it next gossips.
#[derive(Clone, Debug, Default)]
pub struct NewsQueue {
    names: BTreeSet<PeerName>,
    overflowed: bool,
}

impl NewsQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records news; past [`PENDING_NEWS_MAX`] names the queue switches to
    /// [`News::Everything`] and stops tracking names.
    pub fn add(&mut self, names: impl IntoIterator<Item = PeerName>) {
        if self.overflowed {
            return;
        }
        for n in names {
            self.names.insert(n);
            if self.names.len() > PENDING_NEWS_MAX {
                self.names.clear();
                self.overflowed = true;
                return;
            }
        }
    }

    /// Asks for the whole topology at the next take (a new neighbour, anti-entropy).
    pub fn add_everything(&mut self) {
        self.names.clear();
        self.overflowed = true;
    }

    /// True if nothing is pending.
    pub fn is_empty(&self) -> bool {
        !self.overflowed && self.names.is_empty()
    }

    /// Takes what is pending and empties the queue.
    pub fn take(&mut self) -> News {
        if core::mem::take(&mut self.overflowed) {
            News::Everything
        } else if self.names.is_empty() {
            News::Nothing
        } else {
            News::Names(core::mem::take(&mut self.names).into_iter().collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::PeerUid;
    use crate::topology::ConnInfo;
    use alloc::string::String;
    use alloc::vec;

    fn big_topology(n: u64, conns: u64) -> Topology {
        let mut t = Topology::new(PeerEntry::new(
            PeerName::from_u64(0),
            PeerUid(1),
            String::from("zero"),
        ));
        let entries = (1..n)
            .map(|i| PeerEntry {
                name: PeerName::from_u64(i),
                uid: PeerUid(i),
                version: i,
                nickname: String::from("some-host-name"),
                conns: (0..conns)
                    .map(|c| ConnInfo {
                        peer: PeerName::from_u64((i + c + 1) % n),
                        addr: Some("[fd00::1]:6783".parse().unwrap()),
                        established: c % 2 == 0,
                        outbound: true,
                    })
                    .collect(),
            })
            .collect::<Vec<_>>();
        for chunk in entries.chunks(TOPOLOGY_NEW_PEERS_PER_MSG_MAX) {
            t.merge(chunk.to_vec());
        }
        assert_eq!(t.len() as u64, n.max(1));
        t
    }

    #[test]
    fn honest_messages_never_hit_the_receivers_new_peer_cap() {
        // Small entries (one connection, short nickname): 16 KiB would hold ~400.
        let mut t = Topology::new(PeerEntry::new(
            PeerName::from_u64(0),
            PeerUid(1),
            String::new(),
        ));
        let entries: Vec<PeerEntry> = (1..2000u64)
            .map(|i| PeerEntry {
                name: PeerName::from_u64(i),
                uid: PeerUid(i),
                version: 1,
                nickname: String::new(),
                conns: vec![ConnInfo {
                    peer: PeerName::from_u64(0),
                    addr: None,
                    established: true,
                    outbound: false,
                }],
            })
            .collect();
        for chunk in entries.chunks(TOPOLOGY_NEW_PEERS_PER_MSG_MAX) {
            t.merge(chunk.to_vec());
        }
        let msgs = encode_all(&t);
        assert!(
            msgs.iter()
                .all(|m| decode(m).unwrap().len() <= GOSSIP_ENTRIES_PER_MSG_MAX)
        );
        let mut fresh = Topology::new(PeerEntry::new(
            PeerName::from_u64(0),
            PeerUid(1),
            String::new(),
        ));
        for m in &msgs {
            fresh.merge(decode(m).unwrap());
        }
        assert_eq!(fresh.stats().dropped_per_msg, 0);
        assert_eq!(fresh.len(), t.len());
    }

    #[test]
    fn full_topology_splits_into_bounded_messages_and_roundtrips() {
        let t = big_topology(1000, 8);
        let msgs = encode_all(&t);
        assert!(msgs.len() > 1, "1000 entries must not fit one message");
        assert!(msgs.iter().all(|m| m.len() <= GOSSIP_MSG_LEN_MAX));
        // Greedy packing: each message but the last is nearly full.
        let one = entry_len(t.get(PeerName::from_u64(5)).unwrap());
        assert!(
            msgs[..msgs.len() - 1]
                .iter()
                .all(|m| m.len() + one > GOSSIP_MSG_LEN_MAX)
        );
        let mut other = Topology::new(PeerEntry::new(
            PeerName::from_u64(0),
            PeerUid(1),
            String::from("zero"),
        ));
        for m in &msgs {
            other.merge(decode(m).unwrap());
        }
        assert_eq!(other.digest(), t.digest());
        assert!(other.iter().eq(t.iter()));
    }

    #[test]
    fn encode_messages_skips_entries_over_limits() {
        let t = big_topology(4, 1);
        let mut bad = t.get(PeerName::from_u64(1)).unwrap().clone();
        bad.nickname = "x".repeat(crate::topology::NICKNAME_LEN_MAX + 1);
        let good: Vec<&PeerEntry> = t.iter().collect();
        let mut refs = vec![&bad];
        refs.extend(good.iter().copied());
        refs.push(&bad);
        let mut msgs = vec![];
        assert_eq!(encode_messages(&refs, |m| msgs.push(m.to_vec())), 2);
        assert_eq!(msgs.len(), 1);
        let got = decode(&msgs[0]).unwrap();
        assert_eq!(got.iter().collect::<Vec<_>>(), good);
    }

    #[test]
    fn encode_names_skips_unknown_and_empty_gives_nothing() {
        let t = big_topology(10, 2);
        let names = [PeerName::from_u64(3), PeerName::from_u64(99)];
        let msgs = encode_names(&t, &names);
        assert_eq!(msgs.len(), 1);
        let got = decode(&msgs[0]).unwrap();
        assert_eq!(got, vec![t.get(PeerName::from_u64(3)).unwrap().clone()]);
        assert!(encode_names(&t, &[]).is_empty());
    }

    #[test]
    fn fanout_grows_logarithmically() {
        assert_eq!(gossip_fanout(0), 1);
        assert_eq!(gossip_fanout(1), 1);
        assert_eq!(gossip_fanout(2), 2);
        assert_eq!(gossip_fanout(1000), 18);
        assert_eq!(gossip_fanout(usize::MAX), GOSSIP_FANOUT_MAX);
    }

    #[test]
    fn targets_are_distinct_deterministic_and_cover_all() {
        let ns: Vec<PeerName> = (0..20).map(PeerName::from_u64).collect();
        let a = choose_targets(&mut Rng::from_seed(1), &ns, 5);
        let b = choose_targets(&mut Rng::from_seed(1), &ns, 5);
        assert_eq!(a, b);
        assert_eq!(a.len(), 5);
        let set: BTreeSet<_> = a.iter().collect();
        assert_eq!(set.len(), 5);
        assert_eq!(
            choose_targets(&mut Rng::from_seed(1), &ns[..3], 10).len(),
            3
        );
        let mut rng = Rng::from_seed(2);
        let mut seen = BTreeSet::new();
        for _ in 0..200 {
            seen.extend(choose_targets(&mut rng, &ns, 1));
        }
        assert_eq!(
            seen.len(),
            ns.len(),
            "every neighbour gets picked sometimes"
        );
    }

    #[test]
    fn news_queue_coalesces_and_overflows_to_everything() {
        let mut q = NewsQueue::new();
        assert_eq!(q.take(), News::Nothing);
        q.add([PeerName::from_u64(2), PeerName::from_u64(1)]);
        q.add([PeerName::from_u64(2)]);
        assert!(!q.is_empty());
        assert_eq!(
            q.take(),
            News::Names(vec![PeerName::from_u64(1), PeerName::from_u64(2)])
        );
        assert!(q.is_empty());
        q.add((0..PENDING_NEWS_MAX as u64 + 1).map(PeerName::from_u64));
        assert_eq!(q.take(), News::Everything);
        assert_eq!(q.take(), News::Nothing);
    }
}
