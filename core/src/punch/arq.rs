//! A small ARQ that carries a connection's byte stream over datagrams: numbered segments,
//! cumulative acks, retransmission after a timeout, in-order delivery. It is what lets a
//! punched link run the very same [`crate::conn::Connection`] (hello, PAKE, confirm,
//! sealed frames, heartbeats) as a TCP stream does.
//!
//! What it does: cuts the bytes the connection wants sent into segments of at most
//! [`SEGMENT_PAYLOAD_LEN_MAX`], keeps at most [`SEND_WINDOW_SEGMENTS`] unacknowledged,
//! resends the oldest after `rto` (a fixed probe interval until a first round trip was
//! measured, then twice the smoothed round trip), reorders up to [`RECV_WINDOW_SEGMENTS`]
//! ahead and acknowledges every segment that carried bytes. What it does not do: congestion
//! control (it carries control traffic only; the sleeve carries the frames) or any I/O —
//! the router owns one per punched connection and moves its datagrams.

use super::wire::SEGMENT_PAYLOAD_LEN_MAX;
use crate::time::{Duration, Instant};
use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;
use core::fmt;

/// Most segments sent and not yet acknowledged.
pub const SEND_WINDOW_SEGMENTS: usize = 64;
/// Most segments ahead of the next expected one that are kept for reordering.
pub const RECV_WINDOW_SEGMENTS: u32 = 64;
/// Most times one segment is sent before the stream counts as broken.
pub const SEGMENT_TRIES_MAX: u32 = 48;
/// Longest retransmission timeout, however slow the measured path.
pub const RTO_MAX_MS: u64 = 4_000;

/// Why the stream broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArqError {
    /// A segment was sent [`SEGMENT_TRIES_MAX`] times without an ack.
    TooManyTries,
    /// The sequence space ran out (after 2^32 segments).
    SequenceExhausted,
    /// An ack for segments never sent.
    BadAck,
}

impl fmt::Display for ArqError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TooManyTries => "punched path: a segment went unacknowledged too often",
            Self::SequenceExhausted => "punched path: sequence numbers ran out",
            Self::BadAck => "punched path: the peer acknowledged segments never sent",
        })
    }
}

#[derive(Debug)]
struct Sent {
    seq: u32,
    bytes: Vec<u8>,
    sent_at: Option<Instant>,
    tries: u32,
}

/// A segment to send: write it with [`super::wire::PunchBody::Segment`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment<'a> {
    /// Its number.
    pub seq: u32,
    /// Our cumulative ack.
    pub ack: u32,
    /// Its bytes (empty: a pure ack).
    pub payload: &'a [u8],
}

/// One direction pair of a punched stream.
#[derive(Debug)]
pub struct Arq {
    next_seq: u32,
    unacked: VecDeque<Sent>,
    expected: u32,
    reorder: BTreeMap<u32, Vec<u8>>,
    ack_due: bool,
    probe_interval: Duration,
    srtt_us: Option<u64>,
    /// Segments sent again after their timeout (counted for status and tests).
    retransmits: u64,
}

impl Arq {
    /// A fresh stream; until a round trip is measured, segments are resent every
    /// `probe_interval` (so the first ones, the hello, are the punch probes).
    pub fn new(probe_interval: Duration) -> Self {
        Self {
            next_seq: 0,
            unacked: VecDeque::new(),
            expected: 0,
            reorder: BTreeMap::new(),
            ack_due: false,
            probe_interval,
            srtt_us: None,
            retransmits: 0,
        }
    }

    /// The current retransmission timeout.
    pub fn rto(&self) -> Duration {
        match self.srtt_us {
            None => self.probe_interval,
            Some(s) => Duration::from_micros(
                (2 * s)
                    .max(self.probe_interval.total_micros() / 4)
                    .min(RTO_MAX_MS * 1000),
            ),
        }
    }

    /// True while the send window has room for another segment.
    pub fn has_room(&self) -> bool {
        self.unacked.len() < SEND_WINDOW_SEGMENTS
    }

    /// Queues `bytes` (at most [`SEGMENT_PAYLOAD_LEN_MAX`]) as the next segment. Call only
    /// while [`Arq::has_room`].
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), ArqError> {
        debug_assert!(bytes.len() <= SEGMENT_PAYLOAD_LEN_MAX && !bytes.is_empty());
        debug_assert!(self.has_room());
        let seq = self.next_seq;
        self.next_seq = seq.checked_add(1).ok_or(ArqError::SequenceExhausted)?;
        self.unacked.push_back(Sent {
            seq,
            bytes: bytes.to_vec(),
            sent_at: None,
            tries: 0,
        });
        Ok(())
    }

    /// Takes a received segment: applies its ack and hands the bytes that are now in
    /// order, oldest first, to `deliver`. Returns `deliver`'s first error, if any.
    pub fn handle_segment<E>(
        &mut self,
        now: Instant,
        seg: Segment<'_>,
        deliver: &mut dyn FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), Result<E, ArqError>> {
        self.handle_ack(now, seg.ack).map_err(Err)?;
        if seg.payload.is_empty() {
            return Ok(());
        }
        self.ack_due = true;
        if seg.seq == self.expected {
            deliver(seg.payload).map_err(Ok)?;
            self.expected = self.expected.wrapping_add(1);
            while let Some(b) = self.reorder.remove(&self.expected) {
                deliver(&b).map_err(Ok)?;
                self.expected = self.expected.wrapping_add(1);
            }
        } else if seg.seq > self.expected && seg.seq - self.expected < RECV_WINDOW_SEGMENTS {
            self.reorder
                .entry(seg.seq)
                .or_insert_with(|| seg.payload.to_vec());
        }
        // Older ones are duplicates: the ack we owe tells the peer.
        Ok(())
    }

    fn handle_ack(&mut self, now: Instant, ack: u32) -> Result<(), ArqError> {
        if ack > self.next_seq {
            return Err(ArqError::BadAck);
        }
        while let Some(s) = self.unacked.front() {
            if s.seq >= ack {
                break;
            }
            // Karn: only segments sent once measure the round trip.
            if s.tries == 1
                && let Some(at) = s.sent_at
            {
                let sample = now.saturating_since(at).total_micros().max(1);
                self.srtt_us = Some(match self.srtt_us {
                    None => sample,
                    Some(s) => (7 * s + sample) / 8,
                });
            }
            self.unacked.pop_front();
        }
        Ok(())
    }

    /// The next segment to send now, if any: a segment never sent, else the oldest whose
    /// timeout passed, else a pure ack we owe. Call until `None`.
    pub fn poll_segment(&mut self, now: Instant) -> Result<Option<Segment<'_>>, ArqError> {
        let rto = self.rto();
        let ack = self.expected;
        let pick = self
            .unacked
            .iter()
            .position(|s| s.sent_at.is_none())
            .or_else(|| {
                self.unacked
                    .iter()
                    .position(|s| s.sent_at.is_some_and(|t| now >= t + rto))
            });
        if let Some(i) = pick {
            let s = &mut self.unacked[i];
            if s.tries >= SEGMENT_TRIES_MAX {
                return Err(ArqError::TooManyTries);
            }
            if s.sent_at.is_some() {
                self.retransmits += 1;
            }
            s.tries += 1;
            s.sent_at = Some(now);
            self.ack_due = false;
            return Ok(Some(Segment {
                seq: s.seq,
                ack,
                payload: &s.bytes,
            }));
        }
        if self.ack_due {
            self.ack_due = false;
            return Ok(Some(Segment {
                seq: self.next_seq,
                ack,
                payload: &[],
            }));
        }
        Ok(None)
    }

    /// When [`Arq::poll_segment`] next has something to resend.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let rto = self.rto();
        self.unacked
            .iter()
            .filter_map(|s| s.sent_at)
            .min()
            .map(|t| t + rto)
    }

    /// Segments resent after their timeout so far.
    pub fn retransmits(&self) -> u64 {
        self.retransmits
    }

    /// Segments sent and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.unacked.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn at(ms: u64) -> Instant {
        Instant::from_micros(ms * 1000)
    }

    /// Runs two ARQs over a lossy, reordering "network" and checks every byte arrives
    /// once and in order.
    fn run_pair(seed: u64, loss_pct: u64) -> (Vec<u8>, Vec<u8>, u64) {
        let mut rng = Rng::from_seed(seed);
        let mut ends = [
            Arq::new(Duration::from_millis(100)),
            Arq::new(Duration::from_millis(100)),
        ];
        let data: Vec<u8> = (0..40_000u32)
            .map(|i| (i * 7 + seed as u32) as u8)
            .collect();
        let mut cursor = 0usize;
        let mut got = Vec::new();
        // (arrival ms, to, seq, ack, payload)
        let mut wire: Vec<(u64, usize, u32, u32, Vec<u8>)> = Vec::new();
        for ms in 0..60_000u64 {
            let now = at(ms);
            while ends[0].has_room() && cursor < data.len() {
                let n = (data.len() - cursor).min(SEGMENT_PAYLOAD_LEN_MAX);
                ends[0].push(&data[cursor..cursor + n]).unwrap();
                cursor += n;
            }
            for (from, end) in ends.iter_mut().enumerate() {
                while let Some(s) = end.poll_segment(now).unwrap() {
                    if rng.below(100) < loss_pct {
                        continue;
                    }
                    let delay = 10 + rng.below(30);
                    wire.push((ms + delay, 1 - from, s.seq, s.ack, s.payload.to_vec()));
                }
            }
            let (due, rest): (Vec<_>, Vec<_>) = wire.drain(..).partition(|w| w.0 <= ms);
            wire = rest;
            for (_, to, seq, ack, payload) in due {
                let seg = Segment {
                    seq,
                    ack,
                    payload: &payload,
                };
                let sink = &mut got;
                let r: Result<(), Result<(), ArqError>> =
                    ends[to].handle_segment(now, seg, &mut |b| {
                        if to == 1 {
                            sink.extend_from_slice(b);
                        }
                        Ok(())
                    });
                r.unwrap();
            }
            if got.len() == data.len() && ends[0].in_flight() == 0 {
                break;
            }
        }
        let rt = ends[0].retransmits();
        (data, got, rt)
    }

    #[test]
    fn delivers_every_byte_once_in_order_without_loss() {
        let (data, got, rt) = run_pair(1, 0);
        assert_eq!(got, data);
        assert_eq!(rt, 0, "no loss, yet segments were resent");
    }

    #[test]
    fn delivers_every_byte_once_in_order_under_loss_and_reordering() {
        for seed in 0..8 {
            let (data, got, rt) = run_pair(seed, 20);
            assert_eq!(got.len(), data.len(), "seed {seed}");
            assert_eq!(got, data, "seed {seed}");
            assert!(rt > 0, "seed {seed}: 20% loss needs retransmissions");
        }
    }

    #[test]
    fn resends_at_the_probe_interval_then_gives_up() {
        let mut a = Arq::new(Duration::from_millis(250));
        a.push(b"hello").unwrap();
        let first = a.poll_segment(at(0)).unwrap().unwrap();
        assert_eq!((first.seq, first.payload), (0, &b"hello"[..]));
        assert_eq!(a.poll_segment(at(100)).unwrap(), None);
        assert_eq!(a.poll_timeout(), Some(at(250)));
        let mut tries = 1;
        let mut t = 250;
        loop {
            match a.poll_segment(at(t)) {
                Ok(Some(s)) => {
                    assert_eq!(s.seq, 0);
                    tries += 1;
                }
                Ok(None) => panic!("nothing due at {t} ms"),
                Err(e) => {
                    assert_eq!(e, ArqError::TooManyTries);
                    break;
                }
            }
            t += 250;
        }
        assert_eq!(tries, SEGMENT_TRIES_MAX);
    }

    #[test]
    fn refuses_acks_for_segments_never_sent_and_acks_duplicates() {
        let mut a = Arq::new(Duration::from_millis(100));
        let seg = Segment {
            seq: 0,
            ack: 5,
            payload: &[],
        };
        let r: Result<(), Result<(), ArqError>> = a.handle_segment(at(0), seg, &mut |_| Ok(()));
        assert_eq!(r, Err(Err(ArqError::BadAck)));
        let mut n = 0;
        for _ in 0..2 {
            let seg = Segment {
                seq: 0,
                ack: 0,
                payload: b"x",
            };
            let r: Result<(), Result<(), ArqError>> = a.handle_segment(at(1), seg, &mut |_| {
                n += 1;
                Ok(())
            });
            r.unwrap();
        }
        assert_eq!(n, 1, "a duplicate segment was delivered twice");
        let ack = a.poll_segment(at(2)).unwrap().unwrap();
        assert_eq!((ack.ack, ack.payload.len()), (1, 0));
        assert_eq!(a.poll_segment(at(2)).unwrap(), None);
    }
}
