//! Topology anti-entropy codec (gossip channel
//! [`CHANNEL_TOPOLOGY_SYNC`](super::frame::CHANNEL_TOPOLOGY_SYNC)): what two routers
//! exchange to find out whether their topologies differ, and where.
//!
//! ```text
//! kind u8, then
//!   1 digest:  flags u8 | count u32 | sum u64
//!   2 summary: lo [6] | hi [6] | count u16 | count x { name [6] | version u64 | fingerprint u64 }
//!   3 request: count u16 | count x name [6]
//! ```
//! A digest stands for a whole topology (its entry count and the wrapping sum of the
//! entries' fingerprints, see [`crate::topology::fingerprint`]); flag bit 0 marks an
//! announcement that wants no answer (sent once per connection to say "I speak this
//! channel"); other bits are rejected. A summary lists every entry its sender holds with
//! a name in `lo..=hi`, names strictly ascending inside that range. A request names
//! entries (strictly ascending) the receiver should send whole on the topology channel.
//! The decoder checks every count before allocating and never panics.

use super::WireError;
use super::buf::{Reader, Writer};
use crate::peer::PeerName;
use alloc::vec::Vec;

/// Largest sync message, in bytes.
pub const SYNC_MSG_LEN_MAX: usize = 16 * 1024;
/// Most entries one summary lists (512 x 22 bytes: 11 KiB).
pub const SUMMARY_ENTRIES_PER_MSG_MAX: usize = 512;
/// Most names one request carries.
pub const REQUEST_NAMES_PER_MSG_MAX: usize = 1024;
/// Digest flag: an announcement; the receiver notes that we speak sync and answers nothing.
pub const DIGEST_FLAG_ANNOUNCE: u8 = 1 << 0;

const KIND_DIGEST: u8 = 1;
const KIND_SUMMARY: u8 = 2;
const KIND_REQUEST: u8 = 3;
/// Encoded length of one summary entry.
pub const SUMMARY_ENTRY_LEN: usize = 6 + 8 + 8;
/// Encoded length of a digest message.
pub const DIGEST_LEN: usize = 1 + 1 + 4 + 8;

// A full summary and a full request fit one message.
const _: () =
    assert!(1 + 6 + 6 + 2 + SUMMARY_ENTRIES_PER_MSG_MAX * SUMMARY_ENTRY_LEN <= SYNC_MSG_LEN_MAX);
const _: () = assert!(1 + 2 + REQUEST_NAMES_PER_MSG_MAX * PeerName::WIRE_LEN <= SYNC_MSG_LEN_MAX);

/// A whole topology in 12 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Digest {
    /// An announcement (wants no answer).
    pub announce: bool,
    /// Entries in the topology.
    pub count: u32,
    /// Wrapping sum of their fingerprints.
    pub sum: u64,
}

/// One entry as a summary lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SummaryEntry {
    /// Whose entry.
    pub name: PeerName,
    /// Its version.
    pub version: u64,
    /// Its [`crate::topology::fingerprint`].
    pub fingerprint: u64,
}

/// Every entry the sender holds with a name in `lo..=hi`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// First name of the range.
    pub lo: PeerName,
    /// Last name of the range (inclusive).
    pub hi: PeerName,
    /// The entries, names strictly ascending, at most [`SUMMARY_ENTRIES_PER_MSG_MAX`].
    pub entries: Vec<SummaryEntry>,
}

/// One message of the sync channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncMsg {
    /// "This is what I hold."
    Digest(Digest),
    /// "These are my entries in this range."
    Summary(Summary),
    /// "Send me these entries whole" (strictly ascending, at most
    /// [`REQUEST_NAMES_PER_MSG_MAX`]).
    Request(Vec<PeerName>),
}

fn strictly_ascending(names: impl Iterator<Item = PeerName>) -> bool {
    let mut last: Option<PeerName> = None;
    for n in names {
        if last.is_some_and(|l| l >= n) {
            return false;
        }
        last = Some(n);
    }
    true
}

impl SyncMsg {
    /// Decodes one message. Rejects inputs over [`SYNC_MSG_LEN_MAX`], unknown kinds and
    /// flags, counts over their limits, names out of order or out of range, and trailing
    /// bytes.
    pub fn parse(input: &[u8]) -> Result<Self, WireError> {
        if input.len() > SYNC_MSG_LEN_MAX {
            return Err(WireError::Oversized);
        }
        let mut r = Reader::new(input);
        let msg = match r.u8()? {
            KIND_DIGEST => {
                let flags = r.u8()?;
                if flags & !DIGEST_FLAG_ANNOUNCE != 0 {
                    return Err(WireError::Inconsistent);
                }
                Self::Digest(Digest {
                    announce: flags & DIGEST_FLAG_ANNOUNCE != 0,
                    count: r.u32()?,
                    sum: r.u64()?,
                })
            }
            KIND_SUMMARY => {
                let lo = r.peer_name()?;
                let hi = r.peer_name()?;
                if lo > hi {
                    return Err(WireError::Inconsistent);
                }
                let n = r.count(SUMMARY_ENTRIES_PER_MSG_MAX, SUMMARY_ENTRY_LEN)?;
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    entries.push(SummaryEntry {
                        name: r.peer_name()?,
                        version: r.u64()?,
                        fingerprint: r.u64()?,
                    });
                }
                let in_range = entries.iter().all(|e| lo <= e.name && e.name <= hi);
                if !in_range || !strictly_ascending(entries.iter().map(|e| e.name)) {
                    return Err(WireError::Inconsistent);
                }
                Self::Summary(Summary { lo, hi, entries })
            }
            KIND_REQUEST => {
                let n = r.count(REQUEST_NAMES_PER_MSG_MAX, PeerName::WIRE_LEN)?;
                let mut names = Vec::with_capacity(n);
                for _ in 0..n {
                    names.push(r.peer_name()?);
                }
                if !strictly_ascending(names.iter().copied()) {
                    return Err(WireError::Inconsistent);
                }
                Self::Request(names)
            }
            _ => return Err(WireError::Inconsistent),
        };
        r.finish()?;
        Ok(msg)
    }

    /// Writes the message into `out`; returns its length. [`WireError::Oversized`] past a
    /// count limit, [`WireError::Inconsistent`] for names out of order or range (what
    /// [`SyncMsg::parse`] would refuse), [`WireError::BufferTooSmall`] if `out` is short.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, WireError> {
        let mut w = Writer::new(out);
        match self {
            Self::Digest(d) => {
                w.u8(KIND_DIGEST)?;
                w.u8(if d.announce { DIGEST_FLAG_ANNOUNCE } else { 0 })?;
                w.u32(d.count)?;
                w.u64(d.sum)?;
            }
            Self::Summary(s) => {
                if s.entries.len() > SUMMARY_ENTRIES_PER_MSG_MAX {
                    return Err(WireError::Oversized);
                }
                let in_range = s.entries.iter().all(|e| s.lo <= e.name && e.name <= s.hi);
                if s.lo > s.hi || !in_range || !strictly_ascending(s.entries.iter().map(|e| e.name))
                {
                    return Err(WireError::Inconsistent);
                }
                w.u8(KIND_SUMMARY)?;
                w.peer_name(s.lo)?;
                w.peer_name(s.hi)?;
                w.u16(s.entries.len() as u16)?;
                for e in &s.entries {
                    w.peer_name(e.name)?;
                    w.u64(e.version)?;
                    w.u64(e.fingerprint)?;
                }
            }
            Self::Request(names) => {
                if names.len() > REQUEST_NAMES_PER_MSG_MAX {
                    return Err(WireError::Oversized);
                }
                if !strictly_ascending(names.iter().copied()) {
                    return Err(WireError::Inconsistent);
                }
                w.u8(KIND_REQUEST)?;
                w.u16(names.len() as u16)?;
                for n in names {
                    w.peer_name(*n)?;
                }
            }
        }
        Ok(w.len())
    }

    /// The message encoded into a fresh buffer (at most [`SYNC_MSG_LEN_MAX`] bytes).
    pub fn to_vec(&self) -> Result<Vec<u8>, WireError> {
        let mut buf = alloc::vec![0u8; SYNC_MSG_LEN_MAX];
        let n = self.emit(&mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use alloc::vec;

    fn name(n: u64) -> PeerName {
        PeerName::from_u64(n)
    }

    fn samples() -> Vec<SyncMsg> {
        vec![
            SyncMsg::Digest(Digest {
                announce: false,
                count: 50,
                sum: 0xdead_beef_0123_4567,
            }),
            SyncMsg::Digest(Digest {
                announce: true,
                count: 1,
                sum: 0,
            }),
            SyncMsg::Summary(Summary {
                lo: name(0),
                hi: name(PeerName::MASK),
                entries: (1..=SUMMARY_ENTRIES_PER_MSG_MAX as u64)
                    .map(|i| SummaryEntry {
                        name: name(i * 3),
                        version: i << 20,
                        fingerprint: i.wrapping_mul(0x9e37_79b9_7f4a_7c15),
                    })
                    .collect(),
            }),
            SyncMsg::Summary(Summary {
                lo: name(7),
                hi: name(7),
                entries: vec![],
            }),
            SyncMsg::Request((0..REQUEST_NAMES_PER_MSG_MAX as u64).map(name).collect()),
        ]
    }

    #[test]
    fn roundtrip_and_every_prefix_refused() {
        for m in samples() {
            let bytes = m.to_vec().unwrap();
            assert!(bytes.len() <= SYNC_MSG_LEN_MAX);
            assert_eq!(SyncMsg::parse(&bytes), Ok(m.clone()));
            for cut in 0..bytes.len() {
                assert!(
                    SyncMsg::parse(&bytes[..cut]).is_err(),
                    "prefix {cut} of {m:?}"
                );
            }
            let mut long = bytes.clone();
            long.push(0);
            assert_eq!(SyncMsg::parse(&long), Err(WireError::Inconsistent));
        }
        let d = SyncMsg::Digest(Digest {
            announce: false,
            count: 3,
            sum: 4,
        });
        assert_eq!(d.to_vec().unwrap().len(), DIGEST_LEN);
    }

    #[test]
    fn rejects_bad_fields_on_both_sides() {
        // Unknown kind and unknown digest flag.
        assert_eq!(SyncMsg::parse(&[9]), Err(WireError::Inconsistent));
        let mut d = samples()[0].to_vec().unwrap();
        d[1] |= 0x80;
        assert_eq!(SyncMsg::parse(&d), Err(WireError::Inconsistent));
        // Names out of order, out of range, duplicated; range inverted.
        let e = |n| SummaryEntry {
            name: name(n),
            version: 1,
            fingerprint: 2,
        };
        for (lo, hi, names) in [
            (0, 10, vec![3, 2]),
            (0, 10, vec![3, 3]),
            (4, 10, vec![3]),
            (0, 2, vec![3]),
            (5, 4, vec![]),
        ] {
            let s = Summary {
                lo: name(lo),
                hi: name(hi),
                entries: names.into_iter().map(e).collect(),
            };
            assert_eq!(
                SyncMsg::Summary(s.clone()).emit(&mut [0u8; 1024]),
                Err(WireError::Inconsistent)
            );
            // Hand-written bytes of the same: refused by the parser too.
            let mut b = vec![KIND_SUMMARY];
            b.extend(s.lo.to_bytes());
            b.extend(s.hi.to_bytes());
            b.extend((s.entries.len() as u16).to_be_bytes());
            for x in &s.entries {
                b.extend(x.name.to_bytes());
                b.extend(x.version.to_be_bytes());
                b.extend(x.fingerprint.to_be_bytes());
            }
            assert_eq!(SyncMsg::parse(&b), Err(WireError::Inconsistent));
        }
        let req = SyncMsg::Request(vec![name(2), name(1)]);
        assert_eq!(req.emit(&mut [0u8; 64]), Err(WireError::Inconsistent));
        assert_eq!(
            SyncMsg::parse(&[KIND_REQUEST, 0, 2, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 1]),
            Err(WireError::Inconsistent)
        );
        // Counts over the limits.
        let big = SyncMsg::Request(
            (0..REQUEST_NAMES_PER_MSG_MAX as u64 + 1)
                .map(name)
                .collect(),
        );
        assert_eq!(big.to_vec(), Err(WireError::Oversized));
        let mut b = vec![KIND_REQUEST];
        b.extend((REQUEST_NAMES_PER_MSG_MAX as u16 + 1).to_be_bytes());
        assert_eq!(SyncMsg::parse(&b), Err(WireError::Oversized));
        // A count larger than the bytes: refused before allocating.
        assert_eq!(
            SyncMsg::parse(&[KIND_REQUEST, 0, 100, 1, 2, 3]),
            Err(WireError::Truncated)
        );
        assert_eq!(
            SyncMsg::parse(&vec![KIND_REQUEST; SYNC_MSG_LEN_MAX + 1]),
            Err(WireError::Oversized)
        );
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = Rng::from_seed(27);
        let msgs: Vec<Vec<u8>> = samples().iter().map(|m| m.to_vec().unwrap()).collect();
        for i in 0..5000 {
            let mut g = msgs[i % msgs.len()].clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(g.len() as u64) as usize;
                g[at] = rng.next_u64() as u8;
            }
            if let Ok(m) = SyncMsg::parse(&g) {
                assert_eq!(SyncMsg::parse(&m.to_vec().unwrap()), Ok(m));
            }
            let mut junk = vec![0u8; rng.below(64) as usize];
            rng.fill_bytes(&mut junk);
            let _ = SyncMsg::parse(&junk);
        }
    }
}
