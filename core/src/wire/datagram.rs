//! Sleeve datagrams (UDP 6783): Ethernet frames, heartbeats and path-MTU probes between
//! two peers, sealed when the session is encrypted.
//!
//! Layout (big-endian):
//!
//! ```text
//! magic u8 | version u8 | type u8 (bit 7: sealed) | sender (6) | receiver (6) | counter u64
//! | payload (plain) or ciphertext + tag (sealed)
//! ```
//!
//! When sealed, the 23 header bytes are the AEAD's associated data and `counter` its
//! nonce ([`crate::crypto::DatagramSealer`]); the receiver checks the counter against its
//! replay window. Payloads, once opened: see [`Payload`]. This module only encodes; which
//! peer, which keys and when to probe belong to the sleeve datapath.

use super::buf::{Reader, Writer};
use super::{PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN, WireError};
use crate::peer::PeerName;

/// First byte of every sleeve datagram.
pub const DATAGRAM_MAGIC: u8 = 0x77;
/// Header length: magic, version, type, two names, counter.
pub const DATAGRAM_HEADER_LEN: usize = 3 + 6 + 6 + 8;
/// Longest datagram (the UDP payload limit).
pub const DATAGRAM_LEN_MAX: usize = 65_535;
/// Most Ethernet frames batched into one datagram.
pub const DATAGRAM_FRAMES_MAX: usize = 64;
/// Shortest Ethernet frame carried (destination, source, ethertype).
pub const ETHERNET_FRAME_LEN_MIN: usize = 14;
/// Longest Ethernet frame carried (a TSO/GSO super-frame still fits a u16 length).
pub const ETHERNET_FRAME_LEN_MAX: usize = 65_535;
/// Type-byte bit: the payload is sealed.
pub const DATAGRAM_FLAG_SEALED: u8 = 0x80;

const KIND_FRAMES: u8 = 1;
const KIND_HEARTBEAT: u8 = 2;
const KIND_PMTU_PROBE: u8 = 3;
const KIND_PMTU_REPLY: u8 = 4;
const KIND_FRAMES_CSUM_PARTIAL: u8 = 5;
const PMTU_PROBE_FIXED_LEN: usize = 4;

/// What a datagram carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatagramKind {
    /// One or more Ethernet frames.
    Frames,
    /// Ethernet frames as in [`DatagramKind::Frames`], whose TCP and UDP frames carry a
    /// partial L4 checksum: the field holds only the pseudo-header sum, as for checksum
    /// offload (segments cut from a super-frame whose checksum the sending kernel left to
    /// "hardware"). The datagram's own UDP checksum, or its AEAD tag when sealed, covers
    /// the bytes on the way; the receiver hands such frames to its kernel as needing a
    /// checksum (which local delivery skips) or completes it. Receivers that predate it
    /// refuse the kind rather than deliver frames with unfinished checksums.
    FramesCsumPartial,
    /// Liveness of the UDP path; empty payload.
    Heartbeat,
    /// A padded probe of the path MTU.
    PmtuProbe,
    /// The answer to a probe: which probe, how big it arrived.
    PmtuReply,
}

impl DatagramKind {
    /// True for the kinds whose payload is [`Payload::Frames`].
    pub fn carries_frames(self) -> bool {
        matches!(self, Self::Frames | Self::FramesCsumPartial)
    }

    fn to_u8(self) -> u8 {
        match self {
            Self::Frames => KIND_FRAMES,
            Self::FramesCsumPartial => KIND_FRAMES_CSUM_PARTIAL,
            Self::Heartbeat => KIND_HEARTBEAT,
            Self::PmtuProbe => KIND_PMTU_PROBE,
            Self::PmtuReply => KIND_PMTU_REPLY,
        }
    }

    fn from_u8(v: u8) -> Result<Self, WireError> {
        Ok(match v {
            KIND_FRAMES => Self::Frames,
            KIND_FRAMES_CSUM_PARTIAL => Self::FramesCsumPartial,
            KIND_HEARTBEAT => Self::Heartbeat,
            KIND_PMTU_PROBE => Self::PmtuProbe,
            KIND_PMTU_REPLY => Self::PmtuReply,
            _ => return Err(WireError::UnknownType),
        })
    }
}

/// The fixed header of a sleeve datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DatagramHeader {
    /// Protocol version of this datagram.
    pub version: u8,
    /// What the payload is.
    pub kind: DatagramKind,
    /// True if the payload is ciphertext + tag.
    pub sealed: bool,
    /// The peer that sealed it (the first hop, not necessarily the origin of the frames).
    pub sender: PeerName,
    /// The peer it is for.
    pub receiver: PeerName,
    /// The sender's counter (nonce when sealed; replay-checked either way by the datapath).
    pub counter: u64,
}

impl DatagramHeader {
    /// Splits `buf` into its header and the bytes after it (payload or ciphertext + tag).
    ///
    /// Errors: [`WireError::Truncated`] (shorter than a header), [`WireError::Oversized`]
    /// (over [`DATAGRAM_LEN_MAX`]), [`WireError::BadMagic`],
    /// [`WireError::UnsupportedVersion`], [`WireError::UnknownType`].
    pub fn parse(buf: &[u8]) -> Result<(Self, &[u8]), WireError> {
        if buf.len() > DATAGRAM_LEN_MAX {
            return Err(WireError::Oversized);
        }
        let mut r = Reader::new(buf);
        if r.u8()? != DATAGRAM_MAGIC {
            return Err(WireError::BadMagic);
        }
        let version = r.u8()?;
        if !(PROTOCOL_VERSION_MIN..=PROTOCOL_VERSION_MAX).contains(&version) {
            return Err(WireError::UnsupportedVersion);
        }
        let ty = r.u8()?;
        let kind = DatagramKind::from_u8(ty & !DATAGRAM_FLAG_SEALED)?;
        let header = Self {
            version,
            kind,
            sealed: ty & DATAGRAM_FLAG_SEALED != 0,
            sender: r.peer_name()?,
            receiver: r.peer_name()?,
            counter: r.u64()?,
        };
        Ok((header, r.rest()))
    }

    /// Writes the header into `buf[..DATAGRAM_HEADER_LEN]`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let mut w = Writer::new(buf);
        w.u8(DATAGRAM_MAGIC)?;
        w.u8(self.version)?;
        let flag = if self.sealed { DATAGRAM_FLAG_SEALED } else { 0 };
        w.u8(self.kind.to_u8() | flag)?;
        w.peer_name(self.sender)?;
        w.peer_name(self.receiver)?;
        w.u64(self.counter)?;
        Ok(w.len())
    }
}

/// A datagram payload once opened (or as received, when not sealed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload<'a> {
    /// Ethernet frames, validated; iterate with [`EthFrames::iter`].
    Frames(EthFrames<'a>),
    /// Path liveness.
    Heartbeat,
    /// MTU probe: the receiver answers with [`Payload::PmtuReply`].
    PmtuProbe {
        /// Probe identifier chosen by the sender.
        id: u32,
        /// Bytes of padding that followed the id (their content is ignored).
        padding_len: usize,
    },
    /// MTU probe answer.
    PmtuReply {
        /// The probe's identifier.
        id: u32,
        /// The probe's whole datagram length as received.
        size: u16,
    },
}

impl<'a> Payload<'a> {
    /// Parses the plaintext payload of a datagram of `kind`; trailing or missing bytes,
    /// too many frames or a frame of impossible length are errors. Both frame kinds give
    /// [`Payload::Frames`].
    pub fn parse(kind: DatagramKind, buf: &'a [u8]) -> Result<Self, WireError> {
        if buf.len() > DATAGRAM_LEN_MAX {
            return Err(WireError::Oversized);
        }
        let mut r = Reader::new(buf);
        let payload = match kind {
            DatagramKind::Frames | DatagramKind::FramesCsumPartial => {
                Self::Frames(EthFrames::parse(buf)?)
            }
            DatagramKind::Heartbeat => Self::Heartbeat,
            DatagramKind::PmtuProbe => {
                let id = r.u32()?;
                Self::PmtuProbe {
                    id,
                    padding_len: r.rest().len(),
                }
            }
            DatagramKind::PmtuReply => Self::PmtuReply {
                id: r.u32()?,
                size: r.u16()?,
            },
        };
        if !matches!(payload, Self::Frames(_)) {
            r.finish()?;
        }
        Ok(payload)
    }

    /// The kind a header must carry for this payload (frames: with full checksums).
    pub fn kind(&self) -> DatagramKind {
        match self {
            Self::Frames(_) => DatagramKind::Frames,
            Self::Heartbeat => DatagramKind::Heartbeat,
            Self::PmtuProbe { .. } => DatagramKind::PmtuProbe,
            Self::PmtuReply { .. } => DatagramKind::PmtuReply,
        }
    }

    /// Writes the payload into `buf` (probe padding as zeros) and returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let mut w = Writer::new(buf);
        match self {
            Self::Frames(frames) => w.bytes(frames.bytes)?,
            Self::Heartbeat => {}
            Self::PmtuProbe { id, padding_len } => {
                if PMTU_PROBE_FIXED_LEN + padding_len > DATAGRAM_LEN_MAX {
                    return Err(WireError::Oversized);
                }
                w.u32(*id)?;
                if w.remaining() < *padding_len {
                    return Err(WireError::BufferTooSmall);
                }
                for _ in 0..*padding_len {
                    w.u8(0)?;
                }
            }
            Self::PmtuReply { id, size } => {
                w.u32(*id)?;
                w.u16(*size)?;
            }
        }
        Ok(w.len())
    }
}

/// A validated run of `[len u16][frame]` records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EthFrames<'a> {
    bytes: &'a [u8],
    count: usize,
}

impl<'a> EthFrames<'a> {
    /// Validates the records in `buf`: at least one, at most [`DATAGRAM_FRAMES_MAX`], each
    /// at least [`ETHERNET_FRAME_LEN_MIN`] long, exactly filling `buf`.
    pub fn parse(buf: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(buf);
        let mut count = 0usize;
        while r.remaining() > 0 {
            if count == DATAGRAM_FRAMES_MAX {
                return Err(WireError::Oversized);
            }
            let len = usize::from(r.u16()?);
            if len < ETHERNET_FRAME_LEN_MIN {
                return Err(WireError::Inconsistent);
            }
            r.bytes(len)?;
            count += 1;
        }
        if count == 0 {
            return Err(WireError::Truncated);
        }
        Ok(Self { bytes: buf, count })
    }

    /// How many frames.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Never true for a parsed value (parse refuses zero frames); here for clippy's sake.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The frames in order. Stops (rather than panicking) at anything malformed, which a
    /// value from [`parse`](Self::parse) never contains.
    pub fn iter(&self) -> EthFrameIter<'a> {
        EthFrameIter {
            rest: self.bytes,
            left: self.count,
        }
    }
}

/// Iterator over the frames of an [`EthFrames`].
#[derive(Clone, Debug)]
pub struct EthFrameIter<'a> {
    rest: &'a [u8],
    left: usize,
}

impl<'a> Iterator for EthFrameIter<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.left == 0 {
            return None;
        }
        let mut r = Reader::new(self.rest);
        let len = usize::from(r.u16().ok()?);
        let frame = r.bytes(len).ok()?;
        self.rest = r.rest();
        self.left -= 1;
        Some(frame)
    }
}

/// Appends Ethernet frames to a datagram payload being built in a caller's buffer.
#[derive(Debug)]
pub struct EthFramesWriter<'a> {
    w: Writer<'a>,
    count: usize,
}

impl<'a> EthFramesWriter<'a> {
    /// Starts an empty batch in `buf` (usually the bytes after the datagram header).
    pub fn new(buf: &'a mut [u8]) -> Self {
        Self {
            w: Writer::new(buf),
            count: 0,
        }
    }

    /// Adds one frame. [`WireError::Oversized`] when the batch already holds
    /// [`DATAGRAM_FRAMES_MAX`] frames or the frame is over [`ETHERNET_FRAME_LEN_MAX`];
    /// [`WireError::Inconsistent`] under [`ETHERNET_FRAME_LEN_MIN`];
    /// [`WireError::BufferTooSmall`] when it does not fit (send the batch, start another).
    /// On error nothing is written.
    pub fn push(&mut self, frame: &[u8]) -> Result<(), WireError> {
        if self.count == DATAGRAM_FRAMES_MAX || frame.len() > ETHERNET_FRAME_LEN_MAX {
            return Err(WireError::Oversized);
        }
        if frame.len() < ETHERNET_FRAME_LEN_MIN {
            return Err(WireError::Inconsistent);
        }
        if self.w.remaining() < 2 + frame.len() {
            return Err(WireError::BufferTooSmall);
        }
        // frame.len() <= u16::MAX checked above.
        self.w.u16(frame.len() as u16)?;
        self.w.bytes(frame)?;
        self.count += 1;
        Ok(())
    }

    /// Frames added so far.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Payload bytes written so far.
    pub fn len(&self) -> usize {
        self.w.len()
    }

    /// True before the first frame.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{ChaChaKeyRng, KeyPair, SessionKeys, TAG_LEN_BYTES};
    use alloc::vec::Vec;

    fn header(kind: DatagramKind, sealed: bool) -> DatagramHeader {
        DatagramHeader {
            version: PROTOCOL_VERSION_MAX,
            kind,
            sealed,
            sender: PeerName::from_u64(1),
            receiver: PeerName::from_u64(2),
            counter: 9,
        }
    }

    fn frames_datagram(frames: &[&[u8]]) -> Vec<u8> {
        let mut buf = [0u8; 2048];
        let h = DATAGRAM_HEADER_LEN;
        header(DatagramKind::Frames, false).emit(&mut buf).unwrap();
        let mut fw = EthFramesWriter::new(&mut buf[h..]);
        for f in frames {
            fw.push(f).unwrap();
        }
        let n = h + fw.len();
        buf[..n].to_vec()
    }

    #[test]
    fn frames_roundtrip_in_order() {
        let a = [1u8; 14];
        let b = [2u8; 60];
        let d = frames_datagram(&[&a, &b]);
        let (hdr, rest) = DatagramHeader::parse(&d).unwrap();
        assert_eq!(hdr, header(DatagramKind::Frames, false));
        let Payload::Frames(frames) = Payload::parse(hdr.kind, rest).unwrap() else {
            panic!("not frames");
        };
        assert_eq!(frames.len(), 2);
        let got: Vec<&[u8]> = frames.iter().collect();
        assert_eq!(got, [&a[..], &b[..]]);
    }

    #[test]
    fn partial_checksum_frames_are_their_own_kind_with_the_same_payload() {
        let a = [3u8; 60];
        let mut d = frames_datagram(&[&a]);
        d[2] = 5;
        for sealed in [false, true] {
            let mut buf = d.clone();
            header(DatagramKind::FramesCsumPartial, sealed)
                .emit(&mut buf)
                .unwrap();
            assert_eq!(buf[2] & 0x7f, 5);
            let (hdr, rest) = DatagramHeader::parse(&buf).unwrap();
            assert_eq!(hdr, header(DatagramKind::FramesCsumPartial, sealed));
            let Payload::Frames(frames) = Payload::parse(hdr.kind, rest).unwrap() else {
                panic!("not frames");
            };
            assert_eq!(frames.iter().collect::<Vec<_>>(), [&a[..]]);
        }
        // The next kind up is still unknown.
        d[2] = 6;
        assert_eq!(
            DatagramHeader::parse(&d).err(),
            Some(WireError::UnknownType)
        );
    }

    #[test]
    fn header_rejects_garbage() {
        let d = frames_datagram(&[&[0u8; 14]]);
        for cut in 0..DATAGRAM_HEADER_LEN {
            assert_eq!(
                DatagramHeader::parse(&d[..cut]).err(),
                Some(WireError::Truncated)
            );
        }
        let mut b = d.clone();
        b[0] = 0;
        assert_eq!(DatagramHeader::parse(&b).err(), Some(WireError::BadMagic));
        let mut b = d.clone();
        b[1] = PROTOCOL_VERSION_MAX + 1;
        assert_eq!(
            DatagramHeader::parse(&b).err(),
            Some(WireError::UnsupportedVersion)
        );
        let mut b = d.clone();
        b[2] = 0x7f;
        assert_eq!(
            DatagramHeader::parse(&b).err(),
            Some(WireError::UnknownType)
        );
        let big = vec_of(DATAGRAM_LEN_MAX + 1);
        assert_eq!(
            DatagramHeader::parse(&big).err(),
            Some(WireError::Oversized)
        );
    }

    fn vec_of(n: usize) -> Vec<u8> {
        let mut v = alloc::vec![0u8; n];
        v[0] = DATAGRAM_MAGIC;
        v
    }

    #[test]
    fn frame_records_are_checked() {
        // Frame length running past the end.
        assert_eq!(
            EthFrames::parse(&[0, 20, 1, 2]).err(),
            Some(WireError::Truncated)
        );
        // Frame shorter than an Ethernet header.
        assert_eq!(
            EthFrames::parse(&[0, 2, 1, 2]).err(),
            Some(WireError::Inconsistent)
        );
        // No frames at all.
        assert_eq!(EthFrames::parse(&[]).err(), Some(WireError::Truncated));
        // A dangling length byte.
        let mut one = frames_datagram(&[&[0u8; 14]])[DATAGRAM_HEADER_LEN..].to_vec();
        one.push(0);
        assert_eq!(EthFrames::parse(&one).err(), Some(WireError::Truncated));
        // Too many frames.
        let mut many = Vec::new();
        for _ in 0..=DATAGRAM_FRAMES_MAX {
            many.extend_from_slice(&[0, 14]);
            many.extend_from_slice(&[0u8; 14]);
        }
        assert_eq!(EthFrames::parse(&many).err(), Some(WireError::Oversized));
    }

    #[test]
    fn writer_enforces_limits_without_partial_writes() {
        let mut buf = [0u8; 40];
        let mut fw = EthFramesWriter::new(&mut buf);
        assert_eq!(fw.push(&[0u8; 13]), Err(WireError::Inconsistent));
        fw.push(&[0u8; 20]).unwrap();
        assert_eq!(fw.push(&[0u8; 20]), Err(WireError::BufferTooSmall));
        assert_eq!((fw.count(), fw.len()), (1, 22));
        let mut big = alloc::vec![0u8; 64 * 20];
        let mut fw = EthFramesWriter::new(&mut big);
        for _ in 0..DATAGRAM_FRAMES_MAX {
            fw.push(&[0u8; 14]).unwrap();
        }
        assert_eq!(fw.push(&[0u8; 14]), Err(WireError::Oversized));
    }

    #[test]
    fn control_payloads_roundtrip_and_reject_trailing_bytes() {
        for p in [
            Payload::Heartbeat,
            Payload::PmtuProbe {
                id: 5,
                padding_len: 100,
            },
            Payload::PmtuReply { id: 5, size: 1400 },
        ] {
            let mut buf = [0u8; 200];
            let n = p.emit(&mut buf).unwrap();
            assert_eq!(Payload::parse(p.kind(), &buf[..n]), Ok(p));
            if !matches!(p, Payload::PmtuProbe { .. }) {
                assert_eq!(
                    Payload::parse(p.kind(), &buf[..n + 1]),
                    Err(WireError::Inconsistent)
                );
            }
            if n > 0 {
                assert_eq!(
                    Payload::parse(
                        p.kind(),
                        &buf[..n - if matches!(p, Payload::PmtuProbe { .. }) {
                            101
                        } else {
                            1
                        }]
                    ),
                    Err(WireError::Truncated)
                );
            }
        }
    }

    #[test]
    fn sealed_datagram_opens_once_and_header_is_authenticated() {
        let mut rng = ChaChaKeyRng::for_simulation(3);
        let (ka, kb) = (KeyPair::generate(&mut rng), KeyPair::generate(&mut rng));
        let a = SessionKeys::derive(&ka, kb.public_bytes(), true).unwrap();
        let b = SessionKeys::derive(&kb, ka.public_bytes(), false).unwrap();
        let mut buf = [0u8; 256];
        let mut h = header(DatagramKind::PmtuReply, true);
        h.counter = a.datagram_sealer.next_counter();
        let hl = h.emit(&mut buf).unwrap();
        let (hdr_bytes, body) = buf.split_at_mut(hl);
        let pl = Payload::PmtuReply { id: 1, size: 1500 }.emit(body).unwrap();
        let (_, sealed) = a
            .datagram_sealer
            .seal_in_place(hdr_bytes, body, pl)
            .unwrap();
        let d = buf[..hl + sealed].to_vec();
        assert_eq!(sealed, pl + TAG_LEN_BYTES);

        let mut tampered = d.clone();
        tampered[3] ^= 1; // sender name
        let (th, _) = DatagramHeader::parse(&tampered).unwrap();
        let (hb, body) = tampered.split_at_mut(DATAGRAM_HEADER_LEN);
        assert!(
            b.datagram_opener
                .open_in_place(th.counter, hb, body)
                .is_err()
        );

        let mut good = d.clone();
        let (gh, _) = DatagramHeader::parse(&good).unwrap();
        let (hb, body) = good.split_at_mut(DATAGRAM_HEADER_LEN);
        let n = b
            .datagram_opener
            .open_in_place(gh.counter, hb, body)
            .unwrap();
        assert_eq!(
            Payload::parse(gh.kind, &body[..n]),
            Ok(Payload::PmtuReply { id: 1, size: 1500 })
        );
        let mut again = d;
        let (hb, body) = again.split_at_mut(DATAGRAM_HEADER_LEN);
        assert!(
            b.datagram_opener
                .open_in_place(gh.counter, hb, body)
                .is_err()
        );
    }
}
