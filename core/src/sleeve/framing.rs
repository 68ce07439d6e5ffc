//! Framing: the datagram header (with its counter) before the payload, the routing
//! prefix inside it, and how many bytes a frame may take on a link.

use super::{DropReason, Peer, ROUTING_PREFIX_LEN};
use crate::crypto::TAG_LEN_BYTES;
use crate::peer::PeerName;
use crate::switch::Mac;
use crate::wire::DATAGRAM_VERSION;
use crate::wire::datagram::{DATAGRAM_HEADER_LEN, DatagramHeader, DatagramKind};
use core::sync::atomic::{AtomicU64, Ordering};

/// Writes the header into `buf[..DATAGRAM_HEADER_LEN]` and seals (or not) the `len`
/// payload bytes after it; returns the datagram's length.
#[allow(clippy::too_many_arguments)]
pub(super) fn seal_datagram(
    peer: &Peer,
    plain: &AtomicU64,
    me: PeerName,
    encrypt: bool,
    hop: PeerName,
    kind: DatagramKind,
    buf: &mut [u8],
    len: usize,
) -> Result<usize, DropReason> {
    let counter = take_counters(peer, plain, encrypt, 1)?;
    let total = frame_datagram(me, encrypt, hop, kind, counter, buf, len)?;
    if let (true, Some(s)) = (encrypt, peer.sealer.as_ref()) {
        let (aad, body) = buf.split_at_mut(DATAGRAM_HEADER_LEN);
        s.seal_at(counter, aad, body, len)
            .map_err(|_| DropReason::Crypto)?;
    }
    Ok(total)
}

/// Takes `n` consecutive counters for datagrams to `peer` and returns the first: from its
/// sealer when `encrypt` (shared by every queue's engine, so no nonce repeats), else from
/// `plain`, the plain counter all queues and peers share (it only grows, so a peer's
/// window sees each counter once). Unused ones are simply skipped: windows take gaps.
pub(super) fn take_counters(
    peer: &Peer,
    plain: &AtomicU64,
    encrypt: bool,
    n: u64,
) -> Result<u64, DropReason> {
    match (&peer.sealer, encrypt) {
        (Some(s), true) => s.reserve(n).map_err(|_| DropReason::Crypto),
        (None, true) => Err(DropReason::EncryptionMismatch),
        // `plain` holds the last counter used.
        (_, false) => Ok(plain.fetch_add(n, Ordering::Relaxed).wrapping_add(1)),
    }
}

/// Writes the header with `counter` into `buf[..DATAGRAM_HEADER_LEN]` for `len` payload
/// bytes after it, leaving them to be sealed with that counter when `encrypt`. Returns the
/// datagram's length once sealed.
pub(super) fn frame_datagram(
    me: PeerName,
    encrypt: bool,
    hop: PeerName,
    kind: DatagramKind,
    counter: u64,
    buf: &mut [u8],
    len: usize,
) -> Result<usize, DropReason> {
    let tag = if encrypt { TAG_LEN_BYTES } else { 0 };
    let total = DATAGRAM_HEADER_LEN + len + tag;
    if buf.len() < total {
        return Err(DropReason::TooBig);
    }
    let header = DatagramHeader {
        version: DATAGRAM_VERSION,
        kind,
        sealed: encrypt,
        sender: me,
        receiver: hop,
        counter,
    };
    header
        .emit(&mut buf[..DATAGRAM_HEADER_LEN])
        .map_err(DropReason::Malformed)?;
    Ok(total)
}

/// The L4 payload per segment that makes each datagram of `frame`'s segments fit the
/// link MTU to `p` (`overhead`: datagram bytes besides the segment), or `None` when there
/// is no MTU to fit or the frame is not TCP/UDP over IP.
pub(super) fn mss_to_fit(p: &Peer, frame: &[u8], overhead: usize) -> Option<usize> {
    let room = segment_room(p, overhead)?;
    let headers = crate::segment::Layout::parse(frame)?.hdr_end;
    room.checked_sub(headers).filter(|&mss| mss > 0)
}

/// Datagram bytes a frame costs besides itself: header, routing prefix, length and, when
/// sealing, the tag.
pub(super) fn frame_overhead(encrypt: bool) -> usize {
    DATAGRAM_HEADER_LEN + ROUTING_PREFIX_LEN + 2 + if encrypt { TAG_LEN_BYTES } else { 0 }
}

/// The bytes one segment (a whole Ethernet frame) may take in a datagram that fits the
/// link MTU to `p`; `None` when it is not known.
pub(super) fn segment_room(p: &Peer, overhead: usize) -> Option<usize> {
    let ip_udp = if p.addr.is_ipv4() { 20 + 8 } else { 40 + 8 };
    usize::from(p.link_mtu?).checked_sub(ip_udp + overhead)
}

/// The routing prefix of a frames payload: `origin` then `dest`.
pub(super) fn routing_prefix(origin: PeerName, dest: PeerName) -> [u8; ROUTING_PREFIX_LEN] {
    let mut prefix = [0u8; ROUTING_PREFIX_LEN];
    prefix[..6].copy_from_slice(&origin.to_bytes());
    prefix[6..].copy_from_slice(&dest.to_bytes());
    prefix
}

/// The MAC address at `frame[at..at + 6]`, if the frame is that long.
pub(super) fn mac_at(frame: &[u8], at: usize) -> Option<Mac> {
    frame.get(at..at + 6)?.try_into().ok()
}

/// The peer name at `buf[at..at + 6]`; `buf` must be that long.
pub(super) fn name_at(buf: &[u8], at: usize) -> PeerName {
    let mut b = [0u8; 6];
    b.copy_from_slice(&buf[at..at + 6]);
    PeerName::from_bytes(b)
}
