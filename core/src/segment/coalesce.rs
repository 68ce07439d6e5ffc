//! The receiver's GRO: consecutive in-order segments of one TCP flow, or consecutive
//! datagrams of one UDP flow (equal sizes but the last), merged into one super-frame for
//! the TAP (partial checksum + GSO size: TSO or USO, which the kernel cuts back into the
//! same segments or datagrams), everything else passed through in order.

use alloc::vec;
use alloc::vec::Vec;

use smoltcp::wire::{Ipv4Packet, Ipv6Packet, TcpPacket};

use super::{Gso, Layout, Offload, PartialCsum, SEGMENTS_MAX, SUPER_FRAME_LEN_MAX};
use super::{csum_fold, fill_ipv4_header_csum};

/// TCP flags byte (offset 13): FIN, SYN, RST, PSH, ACK, URG, ECE, CWR.
const TCP_FLAGS_AT: usize = 13;
const FLAG_PSH: u8 = 0x08;
const FLAG_ACK: u8 = 0x10;
/// Largest IP packet (v4 total length, v6 payload length are u16).
const IP_LEN_MAX: usize = 65_535;

/// The flow being built.
#[derive(Clone, Copy, Debug)]
struct Pending {
    at: Layout,
    /// Payload bytes of the first segment: every other one but the last must match.
    gso_size: usize,
    next_seq: u32,
    segs: usize,
    /// The first segment's L4 checksum is partial (pseudo-header sum only).
    partial: bool,
}

/// Merges TCP segments and UDP datagrams into super-frames. Feed it frames in arrival order with
/// [`Coalescer::push`]; call [`Coalescer::flush`] at the end of each receive batch. The
/// buffer is allocated once ([`SUPER_FRAME_LEN_MAX`]).
#[derive(Debug)]
pub struct Coalescer {
    buf: Vec<u8>,
    len: usize,
    pending: Option<Pending>,
    merged: u64,
    /// Verify each segment's L4 checksum before merging; off when every frame fed in was
    /// authenticated end to end (sealed datagrams), which the checksum cannot add to.
    verify: bool,
    /// Merge UDP datagrams too (USO); TCP segments always.
    udp: bool,
}

impl Default for Coalescer {
    fn default() -> Self {
        Self::new()
    }
}

impl Coalescer {
    /// An empty coalescer.
    pub fn new() -> Self {
        Self {
            buf: vec![0; SUPER_FRAME_LEN_MAX],
            len: 0,
            pending: None,
            merged: 0,
            verify: true,
            udp: true,
        }
    }

    /// A coalescer for frames that were authenticated on the way (opened from sealed
    /// datagrams): it merges without re-verifying each segment's checksum, which the
    /// sender computed over the very bytes the AEAD tag covers.
    pub fn for_authenticated_frames() -> Self {
        Self {
            verify: false,
            ..Self::new()
        }
    }

    /// Leaves UDP datagrams apart: for a TAP that takes no USO super-frames (kernels
    /// before 6.2 refuse `TUN_F_USO4/6`). TCP segments still merge.
    pub fn without_udp(self) -> Self {
        Self { udp: false, ..self }
    }

    /// Segments merged into an earlier one so far (for counters).
    pub fn merged(&self) -> u64 {
        self.merged
    }

    /// Takes one received frame. `emit` gets every frame that is complete: the pending
    /// super-frame when `frame` does not extend it, and `frame` itself when it cannot
    /// start one. Order between frames is kept.
    pub fn push(&mut self, frame: &[u8], emit: &mut impl FnMut(&Offload, &[u8])) {
        self.push_frame(frame, false, emit);
    }

    /// [`Coalescer::push`] for a frame whose TCP/UDP checksum field holds only the
    /// pseudo-header sum (from a datagram whose integrity was checked on the way): it is
    /// merged without verifying, and passed on alone with a partial-checksum hint.
    pub fn push_csum_partial(&mut self, frame: &[u8], emit: &mut impl FnMut(&Offload, &[u8])) {
        self.push_frame(frame, true, emit);
    }

    fn push_frame(&mut self, frame: &[u8], partial: bool, emit: &mut impl FnMut(&Offload, &[u8])) {
        let Some(at) = Layout::parse(frame) else {
            self.flush(emit);
            let off = match partial {
                true => super::l4_csum_at(frame).map_or_else(Offload::default, csum_hint),
                false => Offload::default(),
            };
            emit(&off, frame);
            return;
        };
        // Only frames whose checksum verifies are merged: the super-frame's is recomputed,
        // which must not turn a corrupt one into a good one. (An IPv4 UDP datagram without
        // a checksum fails here too and passes alone, as it came.)
        if !partial && self.verify && !at.l4_csum_ok(frame) {
            self.flush(emit);
            emit(&Offload::default(), frame);
            return;
        }
        let payload = at.ip_end - at.hdr_end;
        // TCP: only plain data segments (ACK, maybe PSH, nothing else) merge; a push ends
        // the run. UDP: any datagram with a payload.
        let (mergeable, push) = if at.tcp {
            let flags = frame[at.l4 + TCP_FLAGS_AT];
            let plain = flags & !(FLAG_PSH | FLAG_ACK) == 0 && flags & FLAG_ACK != 0;
            (plain && payload > 0, flags & FLAG_PSH != 0)
        } else {
            (self.udp && payload > 0, false)
        };
        if let Some(p) = self.pending
            && mergeable
            && self.extends(&p, &at, frame, payload)
        {
            let f = &frame[at.hdr_end..at.ip_end];
            self.buf[self.len..self.len + payload].copy_from_slice(f);
            self.len += payload;
            if push {
                self.buf[p.at.l4 + TCP_FLAGS_AT] |= FLAG_PSH;
            }
            self.merged += 1;
            let p = Pending {
                next_seq: p.next_seq.wrapping_add(payload as u32),
                segs: p.segs + 1,
                ..p
            };
            self.pending = Some(p);
            // A short segment or datagram, or a push, ends the run.
            if payload < p.gso_size || push || p.segs == SEGMENTS_MAX {
                self.flush(emit);
            }
            return;
        }
        self.flush(emit);
        if !mergeable || push {
            let off = match partial {
                true => csum_hint(at.csum_at()),
                false => valid(),
            };
            emit(&off, &frame[..at.ip_end]);
            return;
        }
        let seq = match at.tcp {
            true => TcpPacket::new_unchecked(&frame[at.l4..]).seq_number().0 as u32,
            false => 0,
        };
        self.buf[..at.ip_end].copy_from_slice(&frame[..at.ip_end]);
        self.len = at.ip_end;
        self.pending = Some(Pending {
            at,
            gso_size: payload,
            next_seq: seq.wrapping_add(payload as u32),
            segs: 1,
            partial,
        });
    }

    fn extends(&self, p: &Pending, at: &Layout, frame: &[u8], payload: usize) -> bool {
        let held = &self.buf[..self.len];
        if at.tcp != p.at.tcp
            || at.v6 != p.at.v6
            || at.l3 != p.at.l3
            || at.l4 != p.at.l4
            || at.hdr_end != p.at.hdr_end
        {
            return false;
        }
        if payload > p.gso_size || self.len + payload - p.at.l3 > IP_LEN_MAX {
            return false;
        }
        let (l3, l4, end) = (at.l3, at.l4, at.hdr_end);
        // Ethernet header equal; IP header equal but for lengths, ID and checksum.
        if frame[..l3] != held[..l3] {
            return false;
        }
        let ip_same = if at.v6 {
            frame[l3..l3 + 4] == held[l3..l3 + 4] && frame[l3 + 6..l4] == held[l3 + 6..l4]
        } else {
            frame[l3..l3 + 2] == held[l3..l3 + 2]
                && frame[l3 + 6..l3 + 10] == held[l3 + 6..l3 + 10]
                && frame[l3 + 12..l4] == held[l3 + 12..l4]
        };
        if !at.tcp {
            // UDP: the same ports (length and checksum are per datagram).
            return ip_same && frame[l4..l4 + 4] == held[l4..l4 + 4];
        }
        // TCP: ports, ack, offset, window, urgent and options equal; seq continues.
        let tcp_same = frame[l4..l4 + 4] == held[l4..l4 + 4]
            && frame[l4 + 8..l4 + 13] == held[l4 + 8..l4 + 13]
            && frame[l4 + 14..l4 + 16] == held[l4 + 14..l4 + 16]
            && frame[l4 + 18..end] == held[l4 + 18..end];
        let seq = TcpPacket::new_unchecked(&frame[l4..]).seq_number().0 as u32;
        ip_same && tcp_same && seq == p.next_seq
    }

    /// Emits the pending super-frame, if any. Call at the end of every receive batch.
    pub fn flush(&mut self, emit: &mut impl FnMut(&Offload, &[u8])) {
        let Some(p) = self.pending.take() else {
            return;
        };
        let at = Layout {
            ip_end: self.len,
            ..p.at
        };
        let frame = &mut self.buf[..self.len];
        if p.segs == 1 {
            let off = match p.partial {
                true => csum_hint(at.csum_at()),
                false => valid(),
            };
            emit(&off, frame);
            return;
        }
        let l4_len = at.ip_end - at.l4;
        if at.v6 {
            Ipv6Packet::new_unchecked(&mut frame[at.l3..]).set_payload_len(l4_len as u16);
        } else {
            let mut ip = Ipv4Packet::new_unchecked(&mut frame[at.l3..]);
            ip.set_total_len((at.ip_end - at.l3) as u16);
            fill_ipv4_header_csum(&mut frame[at.l3..], at.l4 - at.l3);
        }
        if !at.tcp {
            // The UDP length covers the whole super-frame, as the kernel's own USO sends
            // and UDP GRO have it; segmentation gives each datagram its own again.
            frame[at.l4 + 4..at.l4 + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
        }
        // Partial checksum: the field holds the pseudo-header sum, the kernel (or nobody,
        // for local delivery) finishes it.
        let pseudo = csum_fold(at.pseudo(frame, l4_len));
        let csum = at.csum_at();
        let c = at.l4 + usize::from(csum.offset);
        frame[c..c + 2].copy_from_slice(&pseudo.to_be_bytes());
        let off = Offload {
            gso: match (at.tcp, at.v6) {
                (true, false) => Gso::TcpV4,
                (true, true) => Gso::TcpV6,
                (false, _) => Gso::Udp,
            },
            gso_size: p.gso_size as u16,
            hdr_len: at.hdr_end as u16,
            csum: Some(csum),
            data_valid: false,
            ecn: false,
        };
        emit(&off, frame);
    }
}

/// A frame whose L4 checksum field holds the pseudo-header sum: the kernel completes it.
fn csum_hint(c: PartialCsum) -> Offload {
    Offload {
        csum: Some(c),
        ..Offload::default()
    }
}

fn valid() -> Offload {
    Offload {
        data_valid: true,
        ..Offload::default()
    }
}
