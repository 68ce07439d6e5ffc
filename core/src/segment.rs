//! TSO/USO super-frames cut into real segments (sender side) and TCP segments merged back
//! into super-frames (receiver side, [`Coalescer`]). Pure functions over Ethernet frames.
//!
//! A TAP with offloads hands the sleeve Ethernet frames of up to 64 KiB with a
//! `virtio_net_hdr` that says "segment me at `gso_size`" and/or "my L4 checksum is
//! partial". [`Segmenter`] turns such a frame into the frames a NIC would have put on the
//! wire: each a complete TCP (or UDP) segment with its own IP total length, IP ID, IP
//! header checksum, TCP sequence number, flags and L4 checksum, so the receiver can
//! deliver any of them alone. [`Coalescer`] is the receiver's GRO: consecutive segments of
//! one TCP flow become one super-frame again, written to the TAP with a partial checksum
//! and a GSO size, so that the kernel moves one skb instead of forty.
//!
//! What it does not do: parse `virtio_net_hdr` bytes (that is the I/O crate's; [`Offload`]
//! is its meaning), IP options beyond copying them, IPv6 extension headers (such frames
//! are refused for segmentation, and carried whole when they need no segmenting), or
//! ECN-marked coalescing (segments with CWR/ECE are passed on one by one).
//!
//! Header views are `smoltcp::wire`'s; the checksum is our own because the per-byte-pair
//! loop of smoltcp's is several times slower than summing 32-bit words, and it runs over
//! every payload byte.

mod coalesce;
#[cfg(test)]
pub(crate) mod tests;

pub use coalesce::Coalescer;

use smoltcp::wire::{IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket, TcpSeqNumber, UdpPacket};

/// Most segments one super-frame may be cut into (a 64 KiB frame at a 1 KiB MSS is 64;
/// smaller MSS values are allowed down to this bound).
pub const SEGMENTS_MAX: usize = 128;
/// Longest frame the coalescer builds: Ethernet + VLAN tag + a 64 KiB IP packet.
pub const SUPER_FRAME_LEN_MAX: usize = ETH_HEADER_LEN + 4 + 65_535;
/// Ethernet header without VLAN tag.
pub const ETH_HEADER_LEN: usize = 14;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const IPV4_HEADER_LEN: usize = 20;
const IPV6_HEADER_LEN: usize = 40;
const UDP_HEADER_LEN: usize = 8;
/// Offset of the checksum field in a TCP header.
pub const TCP_CSUM_OFFSET: u16 = 16;
/// Offset of the checksum field in a UDP header.
pub const UDP_CSUM_OFFSET: u16 = 6;

/// Which segmentation a frame asks for (the `gso_type` of its `virtio_net_hdr`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Gso {
    /// A frame to send as it is.
    #[default]
    None,
    /// TCP over IPv4.
    TcpV4,
    /// TCP over IPv6.
    TcpV6,
    /// UDP (USO), either IP version.
    Udp,
}

/// A partial L4 checksum: sum from `start` to the end of the frame and store the result
/// at `start + offset` (the `NEEDS_CSUM` of a `virtio_net_hdr`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartialCsum {
    /// Where the checksummed bytes start (the L4 header).
    pub start: u16,
    /// Where in the L4 header the checksum goes.
    pub offset: u16,
}

/// What a frame still needs (from the TAP) or what the kernel is told about it (to the
/// TAP): the meaning of a `virtio_net_hdr`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offload {
    /// Segmentation asked for.
    pub gso: Gso,
    /// L4 payload bytes per segment.
    pub gso_size: u16,
    /// Bytes of headers (Ethernet + IP + L4) in front of the payload.
    pub hdr_len: u16,
    /// The L4 checksum is partial.
    pub csum: Option<PartialCsum>,
    /// The L4 checksum is known to be good (`DATA_VALID`).
    pub data_valid: bool,
    /// The TCP frame carries ECN (CWR kept on the first segment only).
    pub ecn: bool,
}

/// Why a frame cannot be segmented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentError {
    /// Headers do not parse or contradict the offload request.
    Malformed,
    /// Not an IPv4/IPv6 TCP/UDP frame without extension headers or fragments.
    Unsupported,
    /// More than [`SEGMENTS_MAX`] segments, or a zero segment size.
    TooManySegments,
    /// The output buffer is shorter than [`Segmenter::segment_len_max`].
    BufferTooSmall,
}

impl core::fmt::Display for SegmentError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Malformed => "super-frame headers malformed",
            Self::Unsupported => "super-frame protocol not supported for segmentation",
            Self::TooManySegments => "super-frame needs too many segments",
            Self::BufferTooSmall => "segment buffer too small",
        })
    }
}

/// One's-complement sum of `data` as 16-bit words in memory order, unfolded. Pieces
/// summed separately and added must each start at an even offset of the checksummed
/// range; only the last may have an odd length.
pub fn csum_partial(data: &[u8]) -> u64 {
    // 32-bit words into a 64-bit accumulator: no carries to handle until 2^32 words, and
    // the compiler vectorises the loop. Folding mod 0xffff later is the RFC 1071 sum.
    let mut acc = 0u64;
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_ne_bytes([w[0], w[1], w[2], w[3]]));
    }
    let rest = words.remainder();
    let mut last = [0u8; 4];
    last[..rest.len()].copy_from_slice(rest);
    acc + u64::from(u32::from_ne_bytes(last))
}

/// Folds a [`csum_partial`] sum to 16 bits and returns it as a network-order number
/// (not complemented: the form a partial checksum field holds).
pub fn csum_fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    u16::from_be_bytes((acc as u16).to_ne_bytes())
}

/// The pseudo-header sum for an L4 packet of `l4_len` bytes between `src` and `dst`
/// (4 or 16 bytes each).
fn pseudo_sum(src: &[u8], dst: &[u8], proto: u8, l4_len: usize) -> u64 {
    let len = u32::try_from(l4_len).unwrap_or(u32::MAX).to_be_bytes();
    csum_partial(src) + csum_partial(dst) + csum_partial(&[0, proto]) + csum_partial(&len)
}

/// Where the L3 header starts and which ethertype it is (one VLAN tag skipped).
pub(crate) fn l3_of(frame: &[u8]) -> Option<(usize, u16)> {
    let et = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    if et == ETHERTYPE_VLAN {
        let inner = u16::from_be_bytes([*frame.get(16)?, *frame.get(17)?]);
        return Some((ETH_HEADER_LEN + 4, inner));
    }
    Some((ETH_HEADER_LEN, et))
}

/// The L3/L4 layout of an IPv4/IPv6 TCP or UDP frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    pub(crate) v6: bool,
    pub(crate) tcp: bool,
    pub(crate) l3: usize,
    pub(crate) l4: usize,
    /// End of the L4 header: where the payload starts.
    pub(crate) hdr_end: usize,
    /// End of the IP packet (Ethernet padding after it is not part of it).
    pub(crate) ip_end: usize,
}

impl Layout {
    /// Parses the headers; `None` for anything but unfragmented IPv4/IPv6 (no extension
    /// headers) carrying TCP or UDP with consistent lengths.
    pub(crate) fn parse(frame: &[u8]) -> Option<Self> {
        let (l3, et) = l3_of(frame)?;
        let ip = frame.get(l3..)?;
        let (v6, proto, l4, ip_end) = match et {
            ETHERTYPE_IPV4 => {
                let p = Ipv4Packet::new_checked(ip).ok()?;
                if p.more_frags() || p.frag_offset() != 0 {
                    return None;
                }
                let ihl = usize::from(p.header_len());
                // smoltcp's length check takes an IHL under 5 (a header shorter than its
                // own fixed fields); cutting such a frame indexed past its end.
                if ihl < IPV4_HEADER_LEN {
                    return None;
                }
                (
                    false,
                    p.next_header(),
                    l3 + ihl,
                    l3 + usize::from(p.total_len()),
                )
            }
            ETHERTYPE_IPV6 => {
                let p = Ipv6Packet::new_checked(ip).ok()?;
                let end = l3 + IPV6_HEADER_LEN + usize::from(p.payload_len());
                (true, p.next_header(), l3 + IPV6_HEADER_LEN, end)
            }
            _ => return None,
        };
        let l4_bytes = frame.get(l4..ip_end)?;
        let (tcp, hdr_end) = match proto {
            IpProtocol::Tcp => {
                let t = TcpPacket::new_checked(l4_bytes).ok()?;
                (true, l4 + usize::from(t.header_len()))
            }
            IpProtocol::Udp => {
                UdpPacket::new_checked(l4_bytes).ok()?;
                (false, l4 + UDP_HEADER_LEN)
            }
            _ => return None,
        };
        Some(Self {
            v6,
            tcp,
            l3,
            l4,
            hdr_end,
            ip_end,
        })
    }

    /// The pseudo-header sum for an L4 length of `l4_len`, addresses from `frame`.
    pub(crate) fn pseudo(&self, frame: &[u8], l4_len: usize) -> u64 {
        let proto = if self.tcp { 6 } else { 17 };
        if self.v6 {
            let a = &frame[self.l3 + 8..self.l3 + 24];
            let b = &frame[self.l3 + 24..self.l3 + 40];
            pseudo_sum(a, b, proto, l4_len)
        } else {
            let a = &frame[self.l3 + 12..self.l3 + 16];
            let b = &frame[self.l3 + 16..self.l3 + 20];
            pseudo_sum(a, b, proto, l4_len)
        }
    }

    fn csum_offset(&self) -> usize {
        usize::from(self.csum_at().offset)
    }

    /// Where this frame's L4 checksum is summed from and stored.
    pub(crate) fn csum_at(&self) -> PartialCsum {
        PartialCsum {
            start: self.l4 as u16,
            offset: if self.tcp {
                TCP_CSUM_OFFSET
            } else {
                UDP_CSUM_OFFSET
            },
        }
    }

    /// Stores the pseudo-header sum (for the L4 length up to `ip_end`) in the L4 checksum
    /// field: the partial checksum that offload hardware, or the receiving kernel,
    /// completes.
    pub(crate) fn fill_l4_pseudo(&self, frame: &mut [u8]) {
        let at = self.l4 + self.csum_offset();
        let pseudo = csum_fold(self.pseudo(frame, self.ip_end - self.l4));
        frame[at..at + 2].copy_from_slice(&pseudo.to_be_bytes());
    }

    /// Completes a partial L4 checksum in place: the field holds the pseudo-header sum.
    /// Only the IP packet is summed, not Ethernet padding after it.
    pub(crate) fn complete_l4_csum(&self, frame: &mut [u8]) {
        let at = self.l4 + self.csum_offset();
        let mut c = !csum_fold(csum_partial(&frame[self.l4..self.ip_end]));
        if c == 0 && !self.tcp {
            c = 0xffff;
        }
        frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }

    /// Computes and stores the full L4 checksum of `frame` (which ends at `ip_end`).
    pub(crate) fn fill_l4_csum(&self, frame: &mut [u8]) {
        let at = self.l4 + self.csum_offset();
        frame[at..at + 2].fill(0);
        let l4_len = self.ip_end - self.l4;
        let sum = self.pseudo(frame, l4_len) + csum_partial(&frame[self.l4..self.ip_end]);
        let mut c = !csum_fold(sum);
        if c == 0 && !self.tcp {
            c = 0xffff;
        }
        frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }

    /// True when the L4 checksum of `frame` verifies.
    pub(crate) fn l4_csum_ok(&self, frame: &[u8]) -> bool {
        let l4_len = self.ip_end - self.l4;
        let sum = self.pseudo(frame, l4_len) + csum_partial(&frame[self.l4..self.ip_end]);
        csum_fold(sum) == 0xffff
    }
}

/// Writes the IPv4 header checksum of the header at `ip` (`ihl` bytes).
pub(crate) fn fill_ipv4_header_csum(ip: &mut [u8], ihl: usize) {
    ip[10..12].fill(0);
    let c = !csum_fold(csum_partial(&ip[..ihl]));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
}

/// Completes the partial L4 checksum of an IPv4/IPv6 TCP/UDP frame whose checksum field
/// holds the pseudo-header sum (as frames from a `FramesCsumPartial` datagram do), for a
/// port that takes no offload hints. False (frame untouched) if the frame is not one.
pub fn complete_l4_csum(frame: &mut [u8]) -> bool {
    match Layout::parse(frame) {
        Some(at) => {
            at.complete_l4_csum(frame);
            true
        }
        None => false,
    }
}

/// Where the partial L4 checksum of an IPv4/IPv6 TCP/UDP frame is (`None` for other
/// frames): the offload hint a frame from a `FramesCsumPartial` datagram is written with.
pub fn l4_csum_at(frame: &[u8]) -> Option<PartialCsum> {
    Layout::parse(frame).map(|at| at.csum_at())
}

#[derive(Clone, Copy, Debug)]
enum Plan {
    /// Copy the frame, completing its partial checksum if it has one.
    Whole(Option<PartialCsum>),
    /// Cut the payload into `mss`-byte segments.
    Split {
        at: Layout,
        mss: usize,
        ecn: bool,
        ident: u16,
        seq: u32,
    },
}

/// Cuts one frame from a TAP with offloads into wire-ready frames; see the module docs.
/// Call [`Segmenter::next_into`] until it returns `None`.
#[derive(Clone, Debug)]
pub struct Segmenter<'a> {
    frame: &'a [u8],
    plan: Plan,
    count: usize,
    next: usize,
    /// The frame's partial checksum is where parsing its headers finds it, so segments
    /// may leave it partial for the receiver ([`Segmenter::leave_csum_partial`]).
    partial_ok: bool,
    /// Segments keep a partial L4 checksum instead of a full one.
    partial: bool,
}

impl<'a> Segmenter<'a> {
    /// Plans the cut of `frame` as `off` asks, with segments of at most
    /// `min(off.gso_size, mss_max)` payload bytes. A frame without GSO is one segment.
    pub fn new(frame: &'a [u8], off: &Offload, mss_max: usize) -> Result<Self, SegmentError> {
        if off.gso == Gso::None {
            if let Some(c) = off.csum {
                let at = usize::from(c.start) + usize::from(c.offset);
                if at + 2 > frame.len() {
                    return Err(SegmentError::Malformed);
                }
            }
            let partial_ok =
                off.csum.is_some() && Layout::parse(frame).map(|at| at.csum_at()) == off.csum;
            return Ok(Self {
                frame,
                plan: Plan::Whole(off.csum),
                count: 1,
                next: 0,
                partial_ok,
                partial: false,
            });
        }
        let at = Layout::parse(frame).ok_or(SegmentError::Unsupported)?;
        let fits = match off.gso {
            Gso::TcpV4 => at.tcp && !at.v6,
            Gso::TcpV6 => at.tcp && at.v6,
            Gso::Udp => !at.tcp,
            Gso::None => false,
        };
        if !fits {
            return Err(SegmentError::Malformed);
        }
        let mss = usize::from(off.gso_size).min(mss_max);
        if mss == 0 {
            return Err(SegmentError::TooManySegments);
        }
        let payload = at.ip_end - at.hdr_end;
        let count = payload.div_ceil(mss).max(1);
        if count > SEGMENTS_MAX {
            return Err(SegmentError::TooManySegments);
        }
        let (ident, seq) = {
            let ident = if at.v6 {
                0
            } else {
                Ipv4Packet::new_unchecked(&frame[at.l3..]).ident()
            };
            let seq = if at.tcp {
                let s = TcpPacket::new_unchecked(&frame[at.l4..]).seq_number();
                s.0 as u32
            } else {
                0
            };
            (ident, seq)
        };
        Ok(Self {
            frame,
            partial_ok: off.csum == Some(at.csum_at()),
            partial: false,
            plan: Plan::Split {
                at,
                mss,
                ecn: off.ecn,
                ident,
                seq,
            },
            count,
            next: 0,
        })
    }

    /// Leaves the L4 checksum of every segment partial (the field holds the pseudo-header
    /// sum for the segment's length) when the frame's own is partial and where its headers
    /// say; else segments keep full checksums. Saves summing every payload byte when the
    /// receiver hands segments to a kernel that completes or skips the sum anyway. See
    /// [`Segmenter::leaves_csum_partial`].
    pub fn leave_csum_partial(mut self) -> Self {
        self.partial = self.partial_ok;
        self
    }

    /// Whether the segments carry partial L4 checksums (only after
    /// [`Segmenter::leave_csum_partial`], and only for frames that allow it).
    pub fn leaves_csum_partial(&self) -> bool {
        self.partial
    }

    /// How many segments the frame becomes.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The longest segment (every one but the last is this long when split).
    pub fn segment_len_max(&self) -> usize {
        match self.plan {
            Plan::Whole(_) => self.frame.len(),
            Plan::Split { at, mss, .. } => at.hdr_end + mss.min(at.ip_end - at.hdr_end),
        }
    }

    /// Writes the next segment into `buf` and returns its length; `None` when done.
    /// `buf` must hold [`Segmenter::segment_len_max`] bytes (else `None` and the
    /// segmenter stops).
    pub fn next_into(&mut self, buf: &mut [u8]) -> Option<usize> {
        if self.next >= self.count || buf.len() < self.segment_len_max() {
            return None;
        }
        let i = self.next;
        self.next += 1;
        match self.plan {
            Plan::Whole(csum) => {
                let f = self.frame;
                buf[..f.len()].copy_from_slice(f);
                if let (Some(c), false) = (csum, self.partial) {
                    complete_csum(&mut buf[..f.len()], c);
                }
                Some(f.len())
            }
            Plan::Split {
                at,
                mss,
                ecn,
                ident,
                seq,
            } => Some(write_segment(
                self.frame,
                buf,
                at,
                Cut {
                    mss,
                    ecn,
                    ident,
                    seq,
                    partial: self.partial,
                },
                i,
                self.count,
            )),
        }
    }
}

/// Whether the L4 checksum of an IPv4/IPv6 TCP/UDP frame verifies; `None` for anything
/// else (not IP, fragments, extension headers, inconsistent lengths).
pub fn l4_csum_verifies(frame: &[u8]) -> Option<bool> {
    Layout::parse(frame).map(|at| at.l4_csum_ok(frame))
}

/// Completes a partial checksum in place (what the NIC would do for `NEEDS_CSUM`).
pub fn complete_csum(frame: &mut [u8], c: PartialCsum) {
    let start = usize::from(c.start);
    let at = start + usize::from(c.offset);
    if at + 2 > frame.len() {
        return;
    }
    // The field holds the pseudo-header sum; summing over it includes that.
    let mut v = !csum_fold(csum_partial(&frame[start..]));
    if v == 0 && c.offset == UDP_CSUM_OFFSET {
        v = 0xffff;
    }
    frame[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// How a super-frame is cut (fixed for all its segments).
#[derive(Clone, Copy)]
struct Cut {
    mss: usize,
    ecn: bool,
    ident: u16,
    seq: u32,
    partial: bool,
}

fn write_segment(
    frame: &[u8],
    buf: &mut [u8],
    at: Layout,
    cut: Cut,
    i: usize,
    count: usize,
) -> usize {
    let Cut {
        mss,
        ecn,
        ident,
        seq,
        partial,
    } = cut;
    let start = at.hdr_end + i * mss;
    let plen = mss.min(at.ip_end - start);
    let len = at.hdr_end + plen;
    buf[..at.hdr_end].copy_from_slice(&frame[..at.hdr_end]);
    buf[at.hdr_end..len].copy_from_slice(&frame[start..start + plen]);
    let seg = &mut buf[..len];
    let l4_len = len - at.l4;
    if at.v6 {
        let mut ip = Ipv6Packet::new_unchecked(&mut seg[at.l3..]);
        ip.set_payload_len(l4_len as u16);
    } else {
        let mut ip = Ipv4Packet::new_unchecked(&mut seg[at.l3..]);
        ip.set_total_len((len - at.l3) as u16);
        ip.set_ident(ident.wrapping_add(i as u16));
        fill_ipv4_header_csum(&mut seg[at.l3..], at.l4 - at.l3);
    }
    let last = i + 1 == count;
    if at.tcp {
        let mut t = TcpPacket::new_unchecked(&mut seg[at.l4..]);
        t.set_seq_number(TcpSeqNumber(seq.wrapping_add((i * mss) as u32) as i32));
        if !last {
            t.set_fin(false);
            t.set_psh(false);
        }
        if i > 0 && ecn {
            t.set_cwr(false);
        }
    } else {
        let mut u = UdpPacket::new_unchecked(&mut seg[at.l4..]);
        u.set_len(l4_len as u16);
    }
    let seg_at = Layout { ip_end: len, ..at };
    if partial {
        seg_at.fill_l4_pseudo(seg);
    } else {
        seg_at.fill_l4_csum(seg);
    }
    len
}

/// Cuts `frame` as `off` asks (see [`Segmenter`]) and calls `emit` with each segment,
/// built in `scratch`. Returns how many segments were emitted.
pub fn segment(
    frame: &[u8],
    off: &Offload,
    mss_max: usize,
    scratch: &mut [u8],
    mut emit: impl FnMut(&[u8]),
) -> Result<usize, SegmentError> {
    let mut s = Segmenter::new(frame, off, mss_max)?;
    if scratch.len() < s.segment_len_max() {
        return Err(SegmentError::BufferTooSmall);
    }
    let mut n = 0;
    while let Some(len) = s.next_into(scratch) {
        emit(&scratch[..len]);
        n += 1;
    }
    Ok(n)
}
