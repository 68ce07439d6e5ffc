//! Topology anti-entropy by digest: instead of resending the whole topology to a few
//! neighbours every gossip interval, a router sends each of them a 14-byte digest
//! (entry count and the sum of the entries' fingerprints, see
//! [`Topology::sync_digest`]). Only where digests differ does more follow:
//!
//! ```text
//! A -> B  digest                        (periodic, to a few random neighbours)
//! B -> A  summary of every B entry      (only if B's digest differs; ~22 bytes an entry)
//! A -> B  the entries A holds newer or B lacks, whole (topology channel)
//! A -> B  request for the entries B holds newer or A lacks
//! B -> A  those entries, whole (topology channel)
//! ```
//! Both sides end with the union of what they held, merged with the same rules as any
//! gossip ([`Topology::merge`]), so convergence and partition healing are what the full
//! periodic gossip gave, at a cost at rest of one digest per neighbour per round.
//!
//! What it does: builds digests and summaries, and compares a summary with our topology.
//! What it does not do: send, rate-limit, or decide whom to tell (the router does).

use crate::peer::PeerName;
use crate::topology::Topology;
use crate::wire::WireError;
use crate::wire::topology_sync::{
    Digest, REQUEST_NAMES_PER_MSG_MAX, SUMMARY_ENTRIES_PER_MSG_MAX, Summary, SummaryEntry, SyncMsg,
};
use alloc::vec::Vec;
use core::cmp::Ordering;

/// Our digest as a message; `announce` for the one sent when a connection comes up.
pub fn digest(topology: &Topology, announce: bool) -> SyncMsg {
    let (count, sum) = topology.sync_digest();
    SyncMsg::Digest(Digest {
        announce,
        count: u32::try_from(count).unwrap_or(u32::MAX),
        sum,
    })
}

/// True if `d` describes a topology equal to ours (but for a 2^-64 chance).
pub fn digest_matches(topology: &Topology, d: &Digest) -> bool {
    let (count, sum) = topology.sync_digest();
    u32::try_from(count).is_ok_and(|c| c == d.count) && sum == d.sum
}

/// Our whole topology as summaries: consecutive name ranges that together cover every
/// name, each listing at most [`SUMMARY_ENTRIES_PER_MSG_MAX`] entries. O(N).
pub fn summaries(topology: &Topology) -> Vec<Summary> {
    let mut out = Vec::new();
    let mut lo = PeerName::from_u64(0);
    let mut entries = Vec::with_capacity(SUMMARY_ENTRIES_PER_MSG_MAX.min(topology.len()));
    for (e, fingerprint) in topology.iter_fingerprinted() {
        if entries.len() == SUMMARY_ENTRIES_PER_MSG_MAX {
            let hi = entries.last().map_or(lo, |x: &SummaryEntry| x.name);
            out.push(Summary {
                lo,
                hi,
                entries: core::mem::take(&mut entries),
            });
            lo = PeerName::from_u64(hi.as_u64() + 1);
        }
        entries.push(SummaryEntry {
            name: e.name,
            version: e.version,
            fingerprint,
        });
    }
    out.push(Summary {
        lo,
        hi: PeerName::from_u64(PeerName::MASK),
        entries,
    });
    out
}

/// What a summary tells us to do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diff {
    /// Entries we should send whole: ours are newer, or the other side lacks them.
    pub send: Vec<PeerName>,
    /// Entries we should ask for: theirs are newer, or we lack them.
    pub want: Vec<PeerName>,
}

/// Compares the other side's summary with our entries in the same range. Equal
/// fingerprints: nothing. Different versions: the newer side sends. Equal versions with
/// different content (a forgery, or a restart that kept its uid): both send, and each
/// side's merge keeps the higher rank. O(entries in the summary + ours in its range).
pub fn compare(topology: &Topology, summary: &Summary) -> Diff {
    let mut diff = Diff::default();
    let mut theirs = summary.entries.iter().peekable();
    let mut ours = topology.range(summary.lo..=summary.hi).peekable();
    loop {
        let order = match (ours.peek(), theirs.peek()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((o, _)), Some(t)) => o.name.cmp(&t.name),
        };
        match order {
            Ordering::Less => {
                if let Some((o, _)) = ours.next() {
                    diff.send.push(o.name);
                }
            }
            Ordering::Greater => {
                if let Some(t) = theirs.next() {
                    diff.want.push(t.name);
                }
            }
            Ordering::Equal => {
                let (Some((o, fp)), Some(t)) = (ours.next(), theirs.next()) else {
                    break;
                };
                if fp == t.fingerprint {
                    continue;
                }
                match o.version.cmp(&t.version) {
                    Ordering::Greater => diff.send.push(o.name),
                    Ordering::Less => diff.want.push(o.name),
                    Ordering::Equal => {
                        diff.send.push(o.name);
                        diff.want.push(o.name);
                    }
                }
            }
        }
    }
    diff
}

/// `names` (sorted, no duplicates) as request messages of at most
/// [`REQUEST_NAMES_PER_MSG_MAX`] names each.
pub fn requests(names: &[PeerName]) -> Vec<SyncMsg> {
    names
        .chunks(REQUEST_NAMES_PER_MSG_MAX)
        .map(|c| SyncMsg::Request(c.to_vec()))
        .collect()
}

/// Encodes `msgs`, for sending; a message that does not encode (cannot happen for what
/// this module builds) is left out.
pub fn encode(msgs: &[SyncMsg]) -> Vec<Vec<u8>> {
    msgs.iter()
        .filter_map(|m| m.to_vec().ok())
        .collect::<Vec<_>>()
}

/// Decodes one sync payload (see [`SyncMsg::parse`]).
pub fn decode(payload: &[u8]) -> Result<SyncMsg, WireError> {
    SyncMsg::parse(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::PeerUid;
    use crate::topology::{ConnInfo, PeerEntry};
    use alloc::string::String;
    use alloc::vec;

    fn entry(n: u64, version: u64, conns: &[u64]) -> PeerEntry {
        PeerEntry {
            name: PeerName::from_u64(n),
            uid: PeerUid(n),
            version,
            nickname: String::from("x"),
            conns: conns
                .iter()
                .map(|&p| ConnInfo {
                    peer: PeerName::from_u64(p),
                    addr: None,
                    established: true,
                    outbound: false,
                })
                .collect(),
        }
    }

    fn topo(me: u64, others: &[PeerEntry]) -> Topology {
        let mut t = Topology::new(entry(me, 1, &[]));
        for c in others.chunks(200) {
            t.merge(c.to_vec());
        }
        t
    }

    /// Runs the whole exchange from A's digest to B, moving entries the way the router
    /// does (whole entries through `merge`); returns the messages each way.
    fn sync(a: &mut Topology, b: &mut Topology) -> (usize, usize) {
        let SyncMsg::Digest(d) = digest(a, false) else {
            unreachable!()
        };
        if digest_matches(b, &d) {
            return (1, 0);
        }
        let sums = summaries(b);
        let (mut a_to_b, b_to_a) = (1, sums.len());
        let mut want = Vec::new();
        for s in &sums {
            // Through the codec, as on the wire.
            let SyncMsg::Summary(s) =
                decode(&SyncMsg::Summary(s.clone()).to_vec().unwrap()).unwrap()
            else {
                unreachable!()
            };
            let diff = compare(a, &s);
            let send: Vec<PeerEntry> = diff
                .send
                .iter()
                .map(|n| a.get(*n).unwrap().clone())
                .collect();
            a_to_b += 1;
            // In messages of at most what one message carries, as the router sends them.
            for c in send.chunks(crate::gossip::GOSSIP_ENTRIES_PER_MSG_MAX) {
                b.merge(c.to_vec());
            }
            want.extend(diff.want);
        }
        for r in requests(&want) {
            let SyncMsg::Request(names) = r else {
                unreachable!()
            };
            a_to_b += 1;
            let entries: Vec<PeerEntry> = names.iter().filter_map(|n| b.get(*n).cloned()).collect();
            for c in entries.chunks(crate::gossip::GOSSIP_ENTRIES_PER_MSG_MAX) {
                a.merge(c.to_vec());
            }
        }
        (a_to_b, b_to_a)
    }

    #[test]
    fn equal_topologies_cost_one_digest() {
        let others: Vec<PeerEntry> = (2..300).map(|n| entry(n, 5, &[1, n + 1])).collect();
        let mut a = topo(1, &others);
        let mut b = topo(1, &others);
        assert_eq!(a.sync_digest(), b.sync_digest());
        assert_eq!(sync(&mut a, &mut b), (1, 0));
    }

    #[test]
    fn differing_topologies_end_equal_both_ways() {
        // 1500 peers: summaries span three messages. A holds some newer, B others, each
        // lacks some, and one entry differs at an equal version.
        let mut a_entries = Vec::new();
        let mut b_entries = Vec::new();
        for n in 10..1510u64 {
            match n % 5 {
                0 => a_entries.push(entry(n, 7, &[1])),
                1 => b_entries.push(entry(n, 7, &[1])),
                2 => {
                    a_entries.push(entry(n, 9, &[1, 2]));
                    b_entries.push(entry(n, 8, &[1]));
                }
                3 => {
                    a_entries.push(entry(n, 8, &[1]));
                    b_entries.push(entry(n, 9, &[3]));
                }
                _ => {
                    a_entries.push(entry(n, 4, &[1]));
                    b_entries.push(entry(n, 4, &[1]));
                }
            }
        }
        a_entries.push(entry(5, 3, &[1]));
        b_entries.push(entry(5, 3, &[2]));
        let mut a = topo(1, &a_entries);
        let mut b = topo(2, &b_entries);
        assert_ne!(a.sync_digest(), b.sync_digest());
        let (_, summaries_sent) = sync(&mut a, &mut b);
        assert_eq!(summaries_sent, 3);
        // Both ourselves included: each now holds the other's own entry too.
        assert_eq!(a.sync_digest(), b.sync_digest());
        assert!(a.iter().eq(b.iter()));
        assert_eq!(a.get(PeerName::from_u64(12)).unwrap().version, 9);
        assert_eq!(
            a.get(PeerName::from_u64(13)).unwrap().conns[0]
                .peer
                .as_u64(),
            3
        );
        // The equal-version tie went to the higher rank (conns [2] > [1]) on both.
        assert_eq!(
            b.get(PeerName::from_u64(5)).unwrap().conns[0].peer.as_u64(),
            2
        );
        assert_eq!(sync(&mut a, &mut b), (1, 0));
    }

    #[test]
    fn summaries_cover_every_name_once_and_the_digest_follows_changes() {
        let others: Vec<PeerEntry> = (2..1100).map(|n| entry(n * 7, 2, &[1])).collect();
        let mut t = topo(1, &others);
        let sums = summaries(&t);
        assert_eq!(sums.len(), 3);
        assert_eq!(sums[0].lo.as_u64(), 0);
        assert_eq!(sums[2].hi.as_u64(), PeerName::MASK);
        for w in sums.windows(2) {
            assert_eq!(w[0].hi.as_u64() + 1, w[1].lo.as_u64());
        }
        let listed: usize = sums.iter().map(|s| s.entries.len()).sum();
        assert_eq!(listed, t.len());
        // The O(1) digest equals a recount from scratch after merges, our own changes
        // and removals.
        let recount = |t: &Topology| {
            t.iter()
                .map(crate::topology::fingerprint)
                .fold(0u64, u64::wrapping_add)
        };
        t.merge(vec![entry(14, 3, &[1, 2])]);
        t.set_our_conns(vec![ConnInfo {
            peer: PeerName::from_u64(14),
            addr: Some("10.0.0.1:6783".parse().unwrap()),
            established: true,
            outbound: true,
        }]);
        t.remove(PeerName::from_u64(21));
        t.merge(vec![entry(1, 40, &[])]);
        assert_eq!(t.sync_digest(), (t.len(), recount(&t)));
        // A change anywhere in an entry changes its fingerprint.
        let base = entry(3, 1, &[4]);
        let mut nick = base.clone();
        nick.nickname.push('y');
        let mut flag = base.clone();
        flag.conns[0].outbound = true;
        let mut addr = base.clone();
        addr.conns[0].addr = Some("[fd00::1]:1".parse().unwrap());
        let fps: Vec<u64> = [&base, &nick, &flag, &addr]
            .iter()
            .map(|e| crate::topology::fingerprint(e))
            .collect();
        for i in 0..fps.len() {
            for j in i + 1..fps.len() {
                assert_ne!(fps[i], fps[j]);
            }
        }
    }
}
