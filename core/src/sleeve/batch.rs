//! Batches: a super-frame cut into segments, framed in the caller's send buffer and
//! sealed as one GSO batch; a GRO batch checked, opened together and then recorded in
//! arrival order. A [`Spread`] shares out the sealing and the opening.

use super::framing::{frame_datagram, frame_overhead, mss_to_fit, routing_prefix, take_counters};
use super::{
    Build, DropReason, GSO_BATCH_LEN_MAX, GSO_BATCH_SEGMENTS_MAX, Output, ROUTING_PREFIX_LEN,
    SPREAD_PIECES_MIN, Sleeve, Spread,
};
use crate::crypto::{OPENED_SLOTS_MAX, Opened, OpenedSlots, TAG_LEN_BYTES};
use crate::peer::PeerName;
use crate::segment::{Gso, Offload, Segmenter};
use crate::time::Instant;
use crate::wire::WireError;
use crate::wire::datagram::{DATAGRAM_HEADER_LEN, DatagramHeader, DatagramKind};
use alloc::boxed::Box;
use core::net::SocketAddr;
use core::sync::atomic::{AtomicBool, Ordering};

/// Runs `work` over `buf`'s pieces: through `spread` when there is one and the batch is
/// big enough, else in turn.
fn spread_pieces(
    spread: &mut Option<Box<dyn Spread>>,
    buf: &mut [u8],
    piece_len: usize,
    work: &(dyn Fn(usize, &mut [u8]) + Sync),
) {
    match spread {
        Some(s) if buf.len() >= SPREAD_PIECES_MIN * piece_len => s.spread(buf, piece_len, work),
        _ => {
            for (i, piece) in buf.chunks_mut(piece_len).enumerate() {
                work(i, piece);
            }
        }
    }
}

impl Sleeve {
    /// Handles a GRO batch: the datagrams of `buf`, each `segment_len` bytes but the last,
    /// all from `from`. Same outcome as [`Sleeve::handle_datagram`] on each in turn, but
    /// sealed ones are opened together, shared out by the [`Spread`] when there is one.
    pub fn handle_datagrams(
        &mut self,
        now: Instant,
        from: SocketAddr,
        buf: &mut [u8],
        segment_len: usize,
        out: &mut impl FnMut(Output<'_>),
    ) {
        let segment_len = segment_len.max(1);
        let n = buf.len().div_ceil(segment_len);
        if !self.encrypt
            || self.spread.is_none()
            || !(SPREAD_PIECES_MIN..=OPENED_SLOTS_MAX).contains(&n)
        {
            for d in buf.chunks_mut(segment_len) {
                self.handle_datagram(now, from, d, out);
            }
            return;
        }
        // 1. Which datagrams a sender's opener may open: the sender of the first that
        //    passes the header and replay checks (a GRO batch has one source).
        //    Their checked counters wait in slots, by index.
        let mut sender = None;
        let mut slots = OpenedSlots::new();
        for (i, d) in buf.chunks(segment_len).enumerate() {
            let Ok(header) = self.check_header(from, d) else {
                continue;
            };
            if sender.is_some_and(|s| s != header.sender) {
                continue;
            }
            let fresh = self
                .peers
                .get(&header.sender)
                .and_then(|p| p.opener.as_ref())
                .and_then(|o| o.check(header.counter).ok());
            if let Some(fresh) = fresh {
                // i < n <= OPENED_SLOTS_MAX, so there is a slot.
                if slots.insert(i, fresh).is_ok() {
                    sender = Some(header.sender);
                }
            }
        }
        // 2. Open them together, each in its slot.
        if let Some(opener) = sender
            .and_then(|s| self.peers.get(&s))
            .and_then(|p| p.opener.as_ref())
        {
            spread_pieces(&mut self.spread, buf, segment_len, &|i, d| {
                if let Some((aad, body)) = d.split_at_mut_checked(DATAGRAM_HEADER_LEN) {
                    opener.open_in_slot(&slots, i, aad, body);
                }
            });
        }
        // 3. In arrival order: record each counter, then act on the plaintext.
        for (i, d) in buf.chunks_mut(segment_len).enumerate() {
            let Some(opened) = slots.take(i) else {
                self.handle_datagram(now, from, d, out);
                continue;
            };
            self.stats.datagrams_received += 1;
            let r = match opened {
                Err(_) => Err(DropReason::Crypto),
                Ok(opened) => self.accept_opened(now, from, d, opened, out),
            };
            if let Err(e) = r {
                self.stats.count(e);
            }
        }
    }

    /// A datagram opened by [`Sleeve::handle_datagrams`]: records its counter (refusing a
    /// replay) and acts on its plaintext.
    fn accept_opened(
        &mut self,
        now: Instant,
        from: SocketAddr,
        dgram: &mut [u8],
        opened: Opened,
        out: &mut impl FnMut(Output<'_>),
    ) -> Result<(), DropReason> {
        let (header, _) = DatagramHeader::parse(dgram).map_err(DropReason::Malformed)?;
        let opener = self
            .peers
            .get(&header.sender)
            .and_then(|p| p.opener.as_ref())
            .ok_or(DropReason::UnknownPeer)?;
        let len = opener.record(opened).map_err(|_| DropReason::Crypto)?;
        let body = &dgram[DATAGRAM_HEADER_LEN..DATAGRAM_HEADER_LEN + len];
        self.accept(now, from, header, body, out)
    }

    /// Cuts `frame` into segments, one sealed datagram each, and emits them to `hop` in
    /// GSO batches: every datagram of a batch is `stride` bytes but the super-frame's last.
    pub(super) fn send_segments(
        &mut self,
        hop: PeerName,
        origin: PeerName,
        dest: PeerName,
        frame: &[u8],
        off: &Offload,
        out: &mut impl FnMut(Output<'_>),
    ) {
        let tag = if self.encrypt { TAG_LEN_BYTES } else { 0 };
        let lead = DATAGRAM_HEADER_LEN + ROUTING_PREFIX_LEN + 2;
        let mss_max = self
            .peers
            .get(&hop)
            .and_then(|p| mss_to_fit(p, frame, frame_overhead(self.encrypt)))
            .unwrap_or(usize::from(u16::MAX));
        // A TCP frame the kernel did not ask to cut but too big for the link is cut all the
        // same (TSO-style: real segments), rather than left to IP fragmentation.
        let cut_anyway;
        let off = match off.gso {
            Gso::None => match self.tcp_cut_for_link(hop, frame) {
                Some(o) => {
                    cut_anyway = Offload {
                        csum: off.csum,
                        ..o
                    };
                    &cut_anyway
                }
                None => off,
            },
            _ => off,
        };
        let mut seg = match Segmenter::new(frame, off, mss_max) {
            Ok(s) => s.leave_csum_partial(),
            Err(_) => {
                self.stats
                    .count(DropReason::Malformed(WireError::Inconsistent));
                return;
            }
        };
        let seg_max = seg.segment_len_max();
        let stride = lead + seg_max + tag;
        if stride > GSO_BATCH_LEN_MAX || seg_max > usize::from(u16::MAX) {
            self.stats.count(DropReason::TooBig);
            return;
        }
        let per_batch = (GSO_BATCH_LEN_MAX / stride).clamp(1, GSO_BATCH_SEGMENTS_MAX);
        let kind = match seg.leaves_csum_partial() {
            true => DatagramKind::FramesCsumPartial,
            false => DatagramKind::Frames,
        };
        let (me, encrypt) = (self.me, self.encrypt);
        let Some(peer) = self.peers.get(&hop) else {
            self.stats.count(DropReason::NoRoute);
            return;
        };
        let plain = &*self.plain_counter;
        let spread = &mut self.spread;
        let prefix = routing_prefix(origin, dest);
        let to = peer.addr;
        let mut done = false;
        while !done {
            let mut sent = 0usize;
            let mut failed = None;
            // Segments are cut and framed directly in the caller's send buffer, then the
            // batch is sealed (shared out among threads when the host provides them).
            let mut build = |buf: &mut [u8]| -> usize {
                let mut used = 0usize;
                // The batch's counters are taken at once (other queues take from the same
                // sealer): datagram i carries first + i; what the batch leaves unused is
                // skipped.
                let mut first_counter = None;
                while sent < per_batch && used + stride <= buf.len() {
                    let d = &mut buf[used..used + stride];
                    let Some(len) = seg.next_into(&mut d[lead..lead + seg_max]) else {
                        done = true;
                        break;
                    };
                    let h = DATAGRAM_HEADER_LEN;
                    d[h..h + ROUTING_PREFIX_LEN].copy_from_slice(&prefix);
                    // len <= seg_max <= u16::MAX, checked above.
                    d[h + ROUTING_PREFIX_LEN..lead].copy_from_slice(&(len as u16).to_be_bytes());
                    let first = match first_counter {
                        Some(f) => Ok(f),
                        None => take_counters(peer, plain, encrypt, per_batch as u64),
                    };
                    let framed = first.and_then(|f| {
                        first_counter = Some(f);
                        let counter = f + sent as u64;
                        frame_datagram(me, encrypt, hop, kind, counter, d, lead - h + len)
                    });
                    match framed {
                        Ok(total) => {
                            used += total;
                            sent += 1;
                            if total < stride {
                                done = true;
                                break;
                            }
                        }
                        Err(e) => {
                            failed = Some(e);
                            done = true;
                            break;
                        }
                    }
                }
                if let (true, Some(first), Some(sealer)) =
                    (encrypt, first_counter, peer.sealer.as_ref())
                {
                    // Datagram i of the batch carries counter first + i (taken above).
                    let bad = AtomicBool::new(false);
                    spread_pieces(spread, &mut buf[..used], stride, &|i, d| {
                        let (aad, body) = d.split_at_mut(DATAGRAM_HEADER_LEN);
                        let len = body.len().saturating_sub(TAG_LEN_BYTES);
                        if sealer.seal_at(first + i as u64, aad, body, len).is_err() {
                            bad.store(true, Ordering::Relaxed);
                        }
                    });
                    if bad.load(Ordering::Relaxed) {
                        // Unreachable with the lengths above; never send unsealed bytes.
                        failed = Some(DropReason::Crypto);
                        sent = 0;
                        return 0;
                    }
                }
                used
            };
            out(Output::DatagramsInPlace {
                to,
                len_max: per_batch * stride,
                // stride <= GSO_BATCH_LEN_MAX < u16::MAX.
                segment_size: stride as u16,
                build: Build(&mut build),
            });
            self.stats.datagrams_sent += sent as u64;
            if let Some(e) = failed {
                self.stats.count(e);
                return;
            }
            if sent == 0 {
                // Nothing left, or no room to build in: the rest of the frame is dropped.
                break;
            }
        }
    }
}
