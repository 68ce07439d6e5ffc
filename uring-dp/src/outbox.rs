//! `Outbox`: where a handler queues what the pump should send (datagrams) and write
//! (TAP frames) after the current batch. Fixed capacity, allocated once: a full outbox
//! refuses and the pump counts the drop.

use std::net::SocketAddr;

use crate::udp::{GSO_SEGMENTS_MAX, Transmit, UDP_PAYLOAD_LEN_MAX};
use crate::vnet::{VirtioNetHdr, VnetHdrLen};

/// Default room for queued bytes (payloads + headers): a batch of 64 KiB TAP super-frames
/// (each ~70 KiB once cut and sealed) and of 64 KiB GRO receives fits.
pub const OUTBOX_BYTES_MAX: usize = 4 << 20;
/// Default most datagrams (or GSO batches) per outbox.
pub const OUTBOX_DATAGRAMS_MAX: usize = 256;
/// Default most TAP frames per outbox.
pub const OUTBOX_TAP_FRAMES_MAX: usize = 256;
/// Room a handler may need for one input: a 64 KiB super-frame cut, sealed and framed.
pub const OUTBOX_INPUT_ROOM_BYTES: usize = 96 << 10;
/// Most bytes in one GSO send that the outbox builds by joining datagrams (one UDP
/// payload over IPv4).
const JOINED_GSO_BYTES_MAX: usize = weft_core::wire::UDP_V4_PAYLOAD_LEN_MAX;

/// Why a push was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OutboxError {
    /// No room left (bytes or entries) in this batch; the pump counts it as a drop.
    #[error("outbox full")]
    Full,
    /// Larger than a UDP payload, a GSO batch with a zero or too small segment size, or a
    /// GSO TAP frame for a TAP without virtio_net_hdr.
    #[error("item cannot be sent as given")]
    Invalid,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct OutDatagram {
    pub(crate) to: SocketAddr,
    pub(crate) off: usize,
    pub(crate) len: usize,
    pub(crate) segment_size: Option<u16>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct OutFrame {
    pub(crate) off: usize,
    /// Header + frame.
    pub(crate) len: usize,
}

/// Outbound queue of one batch. See the crate docs for when it is flushed.
#[derive(Debug)]
pub struct Outbox {
    arena: Box<[u8]>,
    used: usize,
    pub(crate) datagrams: Vec<OutDatagram>,
    pub(crate) frames: Vec<OutFrame>,
    datagrams_max: usize,
    frames_max: usize,
    vnet_hdr: Option<VnetHdrLen>,
    pub(crate) refused_full: u64,
}

impl Outbox {
    /// An outbox for a TAP with header length `vnet_hdr`.
    pub fn new(
        bytes_max: usize,
        datagrams_max: usize,
        frames_max: usize,
        vnet_hdr: Option<VnetHdrLen>,
    ) -> Self {
        Self {
            arena: vec![0; bytes_max].into_boxed_slice(),
            used: 0,
            datagrams: Vec::with_capacity(datagrams_max),
            frames: Vec::with_capacity(frames_max),
            datagrams_max,
            frames_max,
            vnet_hdr,
            refused_full: 0,
        }
    }

    fn reserve(&mut self, len: usize) -> Result<usize, OutboxError> {
        if self.arena.len() - self.used < len {
            self.refused_full += 1;
            return Err(OutboxError::Full);
        }
        let off = self.used;
        self.used += len;
        Ok(off)
    }

    /// Queues one datagram to `to`.
    pub fn send_to(&mut self, to: SocketAddr, data: &[u8]) -> Result<(), OutboxError> {
        self.send_to_with(to, data.len(), None, |buf| {
            buf.copy_from_slice(data);
            data.len()
        })
    }

    /// Queues a GSO batch: `data` is cut by the kernel (or by the pump, without GSO) into
    /// `segment_size`-byte datagrams, at most [`GSO_SEGMENTS_MAX`].
    pub fn send_gso_to(
        &mut self,
        to: SocketAddr,
        data: &[u8],
        segment_size: u16,
    ) -> Result<(), OutboxError> {
        self.send_to_with(to, data.len(), Some(segment_size), |buf| {
            buf.copy_from_slice(data);
            data.len()
        })
    }

    /// Queues a datagram encoded in place: `fill` gets `len_max` bytes and returns how many
    /// it used (0 cancels). The zero-copy path for the framing/crypto layer.
    ///
    /// A single datagram (no `segment_size`) to the same address as the one queued just
    /// before it, as long as it and not shorter (a shorter one ends the run), joins it as
    /// one GSO send: the same datagrams in the same order on the wire, one send instead of
    /// one per datagram (and one receive, with GRO, on the other side).
    pub fn send_to_with(
        &mut self,
        to: SocketAddr,
        len_max: usize,
        segment_size: Option<u16>,
        fill: impl FnOnce(&mut [u8]) -> usize,
    ) -> Result<(), OutboxError> {
        if let Some(seg) = segment_size {
            let seg = usize::from(seg);
            if seg == 0 || len_max.div_ceil(seg) > GSO_SEGMENTS_MAX || seg > UDP_PAYLOAD_LEN_MAX {
                return Err(OutboxError::Invalid);
            }
        } else if len_max > UDP_PAYLOAD_LEN_MAX {
            return Err(OutboxError::Invalid);
        }
        if self.datagrams.len() == self.datagrams_max {
            self.refused_full += 1;
            return Err(OutboxError::Full);
        }
        let off = self.reserve(len_max)?;
        let len = fill(&mut self.arena[off..off + len_max]).min(len_max);
        self.used = off + len;
        if len == 0 {
            return Ok(());
        }
        if segment_size.is_none()
            && let Some(last) = self.datagrams.last_mut()
            && let Some(seg) = joined_segment(last, to, off, len)
        {
            last.len += len;
            last.segment_size = Some(seg);
            return Ok(());
        }
        self.datagrams.push(OutDatagram {
            to,
            off,
            len,
            segment_size,
        });
        Ok(())
    }

    /// Queues an Ethernet frame for the TAP. `vnet` is its virtio_net_hdr (None: a plain,
    /// fully checksummed frame); it is ignored by a TAP without headers, unless it asks for
    /// GSO or a checksum, which such a TAP cannot do (`Invalid`).
    pub fn write_tap(
        &mut self,
        vnet: Option<&VirtioNetHdr>,
        frame: &[u8],
    ) -> Result<(), OutboxError> {
        self.write_tap_with(vnet, frame.len(), |b| b.copy_from_slice(frame))
    }

    /// [`Outbox::write_tap`] for a frame of `len` bytes that `fill` writes in place (to
    /// finish it on the way without a copy of its own).
    pub fn write_tap_with(
        &mut self,
        vnet: Option<&VirtioNetHdr>,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<(), OutboxError> {
        let hdr = match (self.vnet_hdr, vnet) {
            (None, Some(h)) if h.is_gso() || h.needs_csum() => return Err(OutboxError::Invalid),
            (None, _) => None,
            (Some(len), h) => Some((len, h.copied().unwrap_or_default())),
        };
        if self.frames.len() == self.frames_max {
            self.refused_full += 1;
            return Err(OutboxError::Full);
        }
        let hdr_len = hdr.map_or(0, |(len, _)| len.bytes());
        let off = self.reserve(hdr_len + len)?;
        if let Some((kind, h)) = hdr {
            // The arena slice is exactly hdr_len + len long, so this cannot fail.
            let _ = h.emit(&mut self.arena[off..off + hdr_len], kind);
        }
        fill(&mut self.arena[off + hdr_len..off + hdr_len + len]);
        self.frames.push(OutFrame {
            off,
            len: hdr_len + len,
        });
        Ok(())
    }

    /// Bytes still free in this batch.
    pub fn room_bytes(&self) -> usize {
        self.arena.len() - self.used
    }

    /// True when another input (up to a 64 KiB super-frame) surely fits: the pumps stop
    /// reading for this batch when it is false, rather than drop what they read.
    pub fn has_room_for_input(&self) -> bool {
        self.room_bytes() >= OUTBOX_INPUT_ROOM_BYTES
            && self.datagrams.len() + 4 <= self.datagrams_max
            && self.frames.len() + 4 <= self.frames_max
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.datagrams.is_empty() && self.frames.is_empty()
    }

    /// Datagrams queued.
    pub fn datagrams_len(&self) -> usize {
        self.datagrams.len()
    }

    /// TAP frames queued.
    pub fn tap_frames_len(&self) -> usize {
        self.frames.len()
    }

    /// The TAP frames queued so far, each with its virtio_net_hdr in front (if the TAP
    /// takes one), in order.
    pub fn tap_frames(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.frames.iter().map(|f| self.frame(f))
    }

    pub(crate) fn vnet_hdr_bytes(&self) -> usize {
        self.vnet_hdr.map_or(0, VnetHdrLen::bytes)
    }

    pub(crate) fn transmit(&self, d: &OutDatagram) -> Transmit<'_> {
        Transmit {
            to: d.to,
            data: &self.arena[d.off..d.off + d.len],
            segment_size: d.segment_size,
        }
    }

    pub(crate) fn frame(&self, f: &OutFrame) -> &[u8] {
        &self.arena[f.off..f.off + f.len]
    }

    /// Empties the outbox for the next batch (the arena is kept).
    pub(crate) fn clear(&mut self) {
        self.used = 0;
        self.datagrams.clear();
        self.frames.clear();
    }
}

/// The segment size `last` has once a single datagram of `len` bytes at `off`, to `to`,
/// joins it as one GSO send; `None` if it cannot: another address, not right behind it in
/// the arena, longer than its segments, after a short last segment, or over the limits.
fn joined_segment(last: &OutDatagram, to: SocketAddr, off: usize, len: usize) -> Option<u16> {
    let seg = match last.segment_size {
        Some(s) => usize::from(s),
        None => last.len,
    };
    let open = seg > 0 && last.len % seg == 0;
    let fits = last.len + len <= JOINED_GSO_BYTES_MAX
        && (last.len + len).div_ceil(seg) <= GSO_SEGMENTS_MAX;
    (last.to == to && last.off + last.len == off && open && len <= seg && fits)
        .then(|| u16::try_from(seg).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "192.0.2.1:6783".parse().unwrap()
    }

    fn other() -> SocketAddr {
        "192.0.2.2:6783".parse().unwrap()
    }

    /// (to, segment size, the datagrams it stands for) per queued send.
    fn sends(out: &Outbox) -> Vec<(SocketAddr, Option<u16>, Vec<Vec<u8>>)> {
        out.datagrams
            .iter()
            .map(|d| {
                let t = out.transmit(d);
                let step = t.segment_size.map_or(t.data.len(), usize::from);
                (
                    d.to,
                    d.segment_size,
                    t.data.chunks(step).map(<[u8]>::to_vec).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn datagrams_to_one_peer_join_into_gso_sends_in_order() {
        let mut out = Outbox::new(1 << 20, 256, 4, None);
        let d = |b: u8, n: usize| vec![b; n];
        out.send_to(addr(), &d(1, 100)).unwrap();
        out.send_to(addr(), &d(2, 100)).unwrap();
        out.send_to(addr(), &d(3, 60)).unwrap(); // shorter: joins, ends the run
        out.send_to(addr(), &d(4, 60)).unwrap(); // after a short one: a new send
        out.send_to(addr(), &d(5, 100)).unwrap(); // longer than the run's: new send
        out.send_to(other(), &d(6, 100)).unwrap(); // another peer
        out.send_to(addr(), &d(7, 100)).unwrap(); // back: a new send, order kept
        out.write_tap(None, &[0; 20]).unwrap();
        out.send_to(addr(), &d(8, 100)).unwrap(); // not contiguous: a new send
        // An in-place GSO batch takes single datagrams its size after it.
        out.send_gso_to(other(), &[9; 300], 100).unwrap();
        out.send_to(other(), &d(10, 100)).unwrap();
        assert_eq!(
            sends(&out),
            vec![
                (addr(), Some(100), vec![d(1, 100), d(2, 100), d(3, 60)]),
                (addr(), None, vec![d(4, 60)]),
                (addr(), None, vec![d(5, 100)]),
                (other(), None, vec![d(6, 100)]),
                (addr(), None, vec![d(7, 100)]),
                (addr(), None, vec![d(8, 100)]),
                (
                    other(),
                    Some(100),
                    vec![d(9, 100), d(9, 100), d(9, 100), d(10, 100)]
                ),
            ]
        );
        // Runs stop at the GSO limits: 64 segments, one IPv4 UDP payload.
        let mut out = Outbox::new(1 << 20, 256, 4, None);
        for i in 0..70u8 {
            out.send_to(addr(), &d(i, 10)).unwrap();
        }
        let runs: Vec<usize> = sends(&out).iter().map(|s| s.2.len()).collect();
        assert_eq!(runs, vec![64, 6]);
        let mut out = Outbox::new(1 << 20, 256, 4, None);
        for i in 0..50u8 {
            out.send_to(addr(), &d(i, 1400)).unwrap();
        }
        let runs: Vec<usize> = sends(&out).iter().map(|s| s.2.len()).collect();
        assert_eq!(runs, vec![46, 4]);
        let flat: Vec<Vec<u8>> = sends(&out).into_iter().flat_map(|s| s.2).collect();
        assert_eq!(flat, (0..50u8).map(|i| d(i, 1400)).collect::<Vec<_>>());
    }

    #[test]
    fn bounded_by_entries_and_bytes() {
        let mut out = Outbox::new(100, 2, 1, None);
        out.send_to(addr(), &[1; 40]).unwrap();
        out.send_to(other(), &[2; 40]).unwrap();
        assert_eq!(out.send_to(addr(), &[3; 1]), Err(OutboxError::Full));
        out.write_tap(None, &[4; 20]).unwrap();
        assert_eq!(out.write_tap(None, &[5; 1]), Err(OutboxError::Full));
        assert_eq!(out.refused_full, 2);
        assert_eq!(out.transmit(&out.datagrams[1]).data, &[2; 40]);
        out.clear();
        assert!(out.is_empty());
        assert_eq!(out.send_to(addr(), &[6; 101]), Err(OutboxError::Full));
    }

    #[test]
    fn tap_frames_get_the_header_the_tap_expects() {
        let mut out = Outbox::new(1000, 4, 4, Some(VnetHdrLen::MrgRxbuf));
        out.write_tap(None, &[9; 3]).unwrap();
        let hdr = VirtioNetHdr {
            flags: 1,
            gso_type: 1,
            hdr_len: 54,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
            num_buffers: 0,
        };
        out.write_tap(Some(&hdr), &[8; 2]).unwrap();
        assert_eq!(
            out.frame(&out.frames[0]),
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 9, 9]
        );
        let f = out.frame(&out.frames[1]);
        assert_eq!(VirtioNetHdr::parse(f, VnetHdrLen::MrgRxbuf), Ok(hdr));
        assert_eq!(&f[12..], &[8, 8]);

        let mut plain = Outbox::new(1000, 4, 4, None);
        assert_eq!(plain.write_tap(Some(&hdr), &[1]), Err(OutboxError::Invalid));
        plain
            .write_tap(Some(&VirtioNetHdr::default()), &[1])
            .unwrap();
        assert_eq!(plain.frame(&plain.frames[0]), &[1]);
    }

    #[test]
    fn in_place_encoding_and_gso_limits() {
        let mut out = Outbox::new(1 << 20, 4, 4, None);
        out.send_to_with(addr(), 10, None, |b| {
            b[..3].copy_from_slice(b"abc");
            3
        })
        .unwrap();
        assert_eq!(out.transmit(&out.datagrams[0]).data, b"abc");
        // A cancelled fill queues nothing and gives the bytes back.
        out.send_to_with(addr(), 10, None, |_| 0).unwrap();
        assert_eq!(out.datagrams_len(), 1);
        assert_eq!(out.used, 3);
        assert_eq!(
            out.send_gso_to(addr(), &[0; 100], 0),
            Err(OutboxError::Invalid)
        );
        assert_eq!(
            out.send_gso_to(addr(), &[0; 65 * 10], 10),
            Err(OutboxError::Invalid)
        );
        out.send_gso_to(addr(), &[0; 64 * 10], 10).unwrap();
        assert_eq!(
            out.send_to(addr(), &vec![0; 70_000]),
            Err(OutboxError::Invalid)
        );
    }
}
