//! Stream frames after the hello, and the messages sealed inside them.
//!
//! Frame layout (big-endian): `sealed_len u32 | counter u64 | sealed (ciphertext + tag)`.
//! The 12-byte header is the AEAD's associated data, the counter its nonce. A reader
//! learns the frame's length from the first four bytes ([`FrameHeader::parse`]) and refuses
//! an oversized one before buffering it.
//!
//! Message layout (the plaintext): `type u8 | fields`; see [`Message`].

use super::WireError;
use super::buf::{Reader, Writer};
use crate::crypto::{HASH_LEN_BYTES, TAG_LEN_BYTES};

/// Bytes of `sealed_len` plus `counter`.
pub const FRAME_HEADER_LEN: usize = 12;
/// Longest frame on the wire, header and tag included (256 KiB).
pub const FRAME_LEN_MAX: usize = 256 * 1024;
/// Longest sealed part (ciphertext + tag).
pub const FRAME_SEALED_LEN_MAX: usize = FRAME_LEN_MAX - FRAME_HEADER_LEN;
/// Longest plaintext message a frame can carry.
pub const MESSAGE_LEN_MAX: usize = FRAME_SEALED_LEN_MAX - TAG_LEN_BYTES;
/// Longest gossip payload (message minus type and channel bytes).
pub const GOSSIP_PAYLOAD_LEN_MAX: usize = MESSAGE_LEN_MAX - 2;

/// Gossip channel: topology entries (see [`crate::wire::topology`]).
pub const CHANNEL_TOPOLOGY: u8 = 1;
/// Gossip channel: IP address allocation.
pub const CHANNEL_IPAM: u8 = 2;
/// Gossip channel: DNS names.
pub const CHANNEL_DNS: u8 = 3;
/// Gossip channel: network policies, namespace labels and pods (see [`crate::policy`]).
pub const CHANNEL_POLICY: u8 = 4;
/// Gossip channel: topology anti-entropy, digests and summaries (see
/// [`crate::wire::topology_sync`]). Peers built before it ignore it (unknown channel).
/// (Channel 5 is hole punching's, [`crate::punch::wire::CHANNEL_PUNCH`].)
pub const CHANNEL_TOPOLOGY_SYNC: u8 = 6;

/// Close reason: an orderly close (forget, shutdown).
pub const CLOSE_REASON_NORMAL: u8 = 0;
/// Close reason: the sender saw a protocol or crypto error on this connection.
pub const CLOSE_REASON_PROTOCOL_ERROR: u8 = 1;
/// Close reason: the sender heard nothing from us for its heartbeat timeout.
pub const CLOSE_REASON_TIMEOUT: u8 = 2;
/// Close reason: the sender already has a connection to us and keeps that one.
pub const CLOSE_REASON_DUPLICATE: u8 = 3;

const TYPE_CONFIRM: u8 = 1;
const TYPE_HEARTBEAT: u8 = 2;
const TYPE_GOSSIP: u8 = 3;
const TYPE_CLOSE: u8 = 4;

/// The header of one stream frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Length of ciphertext plus tag.
    pub sealed_len: usize,
    /// The sender's counter, also the AEAD nonce.
    pub counter: u64,
}

impl FrameHeader {
    /// Parses the header at the start of `buf`.
    ///
    /// [`WireError::Oversized`] as soon as the four length bytes exceed
    /// [`FRAME_SEALED_LEN_MAX`]; [`WireError::Inconsistent`] for a length shorter than a
    /// tag; [`WireError::Truncated`] while fewer than [`FRAME_HEADER_LEN`] bytes are here.
    pub fn parse(buf: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(buf);
        let sealed_len = usize::try_from(r.u32()?).map_err(|_| WireError::Oversized)?;
        if sealed_len > FRAME_SEALED_LEN_MAX {
            return Err(WireError::Oversized);
        }
        if sealed_len < TAG_LEN_BYTES {
            return Err(WireError::Inconsistent);
        }
        let counter = r.u64()?;
        Ok(Self {
            sealed_len,
            counter,
        })
    }

    /// The whole frame's length: header plus sealed part.
    pub fn frame_len(&self) -> usize {
        FRAME_HEADER_LEN + self.sealed_len
    }

    /// Writes the header into `buf[..FRAME_HEADER_LEN]`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        if self.sealed_len > FRAME_SEALED_LEN_MAX {
            return Err(WireError::Oversized);
        }
        if self.sealed_len < TAG_LEN_BYTES {
            return Err(WireError::Inconsistent);
        }
        let mut w = Writer::new(buf);
        // sealed_len <= FRAME_SEALED_LEN_MAX < u32::MAX.
        w.u32(self.sealed_len as u32)?;
        w.u64(self.counter)?;
        Ok(w.len())
    }
}

/// A complete frame borrowed from a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The parsed header.
    pub header: FrameHeader,
    /// The header bytes as received (the AEAD associated data).
    pub header_bytes: &'a [u8],
    /// Ciphertext followed by the tag.
    pub sealed: &'a [u8],
}

impl<'a> Frame<'a> {
    /// Parses the frame at the start of `buf`; returns it and its length.
    /// [`WireError::Truncated`] means "wait for more bytes"; other errors are final.
    pub fn parse(buf: &'a [u8]) -> Result<(Self, usize), WireError> {
        let header = FrameHeader::parse(buf)?;
        let len = header.frame_len();
        let whole = buf.get(..len).ok_or(WireError::Truncated)?;
        let (header_bytes, sealed) = whole.split_at(FRAME_HEADER_LEN);
        Ok((
            Self {
                header,
                header_bytes,
                sealed,
            },
            len,
        ))
    }
}

/// What a frame carries once opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// First sealed message each way: proves the key (and password) and the transcript.
    Confirm {
        /// SHA-256 of initiator hello bytes || responder hello bytes.
        transcript_hash: [u8; HASH_LEN_BYTES],
    },
    /// Keeps the connection alive; the sequence number is for diagnostics.
    Heartbeat {
        /// Sender's heartbeat count.
        seq: u64,
    },
    /// An opaque gossip payload for one channel (`CHANNEL_*`).
    Gossip {
        /// Which gossip channel this is for; unknown channels are the router's call.
        channel: u8,
        /// Channel-specific bytes, at most [`GOSSIP_PAYLOAD_LEN_MAX`].
        payload: &'a [u8],
    },
    /// The sender is closing the connection (`CLOSE_REASON_*`).
    Close {
        /// Why (one of the `CLOSE_REASON_*` codes, or unknown from a newer peer).
        reason: u8,
    },
}

impl<'a> Message<'a> {
    /// Parses a whole plaintext message; trailing bytes are [`WireError::Inconsistent`].
    pub fn parse(buf: &'a [u8]) -> Result<Self, WireError> {
        if buf.len() > MESSAGE_LEN_MAX {
            return Err(WireError::Oversized);
        }
        let mut r = Reader::new(buf);
        let msg = match r.u8()? {
            TYPE_CONFIRM => Self::Confirm {
                transcript_hash: r.array()?,
            },
            TYPE_HEARTBEAT => Self::Heartbeat { seq: r.u64()? },
            TYPE_GOSSIP => Self::Gossip {
                channel: r.u8()?,
                payload: r.rest(),
            },
            TYPE_CLOSE => Self::Close { reason: r.u8()? },
            _ => return Err(WireError::UnknownType),
        };
        r.finish()?;
        Ok(msg)
    }

    /// Bytes [`emit`](Self::emit) will write.
    pub fn buffer_len(&self) -> usize {
        1 + match self {
            Self::Confirm { .. } => HASH_LEN_BYTES,
            Self::Heartbeat { .. } => 8,
            Self::Gossip { payload, .. } => 1 + payload.len(),
            Self::Close { .. } => 1,
        }
    }

    /// Writes the plaintext into `buf` and returns its length; a gossip payload over
    /// [`GOSSIP_PAYLOAD_LEN_MAX`] is [`WireError::Oversized`].
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        if self.buffer_len() > MESSAGE_LEN_MAX {
            return Err(WireError::Oversized);
        }
        let mut w = Writer::new(buf);
        match self {
            Self::Confirm { transcript_hash } => {
                w.u8(TYPE_CONFIRM)?;
                w.bytes(transcript_hash)?;
            }
            Self::Heartbeat { seq } => {
                w.u8(TYPE_HEARTBEAT)?;
                w.u64(*seq)?;
            }
            Self::Gossip { channel, payload } => {
                w.u8(TYPE_GOSSIP)?;
                w.u8(*channel)?;
                w.bytes(payload)?;
            }
            Self::Close { reason } => {
                w.u8(TYPE_CLOSE)?;
                w.u8(*reason)?;
            }
        }
        Ok(w.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn header_roundtrip_and_limits() {
        let h = FrameHeader {
            sealed_len: 100,
            counter: 7,
        };
        let mut buf = [0u8; FRAME_HEADER_LEN];
        assert_eq!(h.emit(&mut buf), Ok(FRAME_HEADER_LEN));
        assert_eq!(FrameHeader::parse(&buf), Ok(h));
        for cut in 0..FRAME_HEADER_LEN {
            assert_eq!(FrameHeader::parse(&buf[..cut]), Err(WireError::Truncated));
        }
        let over = ((FRAME_SEALED_LEN_MAX + 1) as u32).to_be_bytes();
        assert_eq!(
            FrameHeader::parse(&over),
            Err(WireError::Oversized),
            "known from 4 bytes"
        );
        assert_eq!(FrameHeader::parse(&[0xff; 4]), Err(WireError::Oversized));
        let under = ((TAG_LEN_BYTES - 1) as u32).to_be_bytes();
        assert_eq!(FrameHeader::parse(&under), Err(WireError::Inconsistent));
        let too_big = FrameHeader {
            sealed_len: FRAME_SEALED_LEN_MAX + 1,
            counter: 0,
        };
        assert_eq!(too_big.emit(&mut buf), Err(WireError::Oversized));
    }

    #[test]
    fn frame_waits_for_its_whole_body() {
        let mut buf = vec![0u8; FRAME_HEADER_LEN + 20 + 3];
        FrameHeader {
            sealed_len: 20,
            counter: 1,
        }
        .emit(&mut buf)
        .unwrap();
        for cut in 0..FRAME_HEADER_LEN + 20 {
            assert_eq!(Frame::parse(&buf[..cut]).err(), Some(WireError::Truncated));
        }
        let (f, n) = Frame::parse(&buf).unwrap();
        assert_eq!(n, FRAME_HEADER_LEN + 20);
        assert_eq!(f.sealed.len(), 20);
        assert_eq!(f.header_bytes.len(), FRAME_HEADER_LEN);
    }

    #[test]
    fn messages_roundtrip() {
        let msgs = [
            Message::Confirm {
                transcript_hash: [3; 32],
            },
            Message::Heartbeat { seq: u64::MAX },
            Message::Gossip {
                channel: CHANNEL_TOPOLOGY,
                payload: b"entries",
            },
            Message::Gossip {
                channel: CHANNEL_DNS,
                payload: b"",
            },
            Message::Close {
                reason: CLOSE_REASON_TIMEOUT,
            },
        ];
        for m in msgs {
            let mut buf = [0u8; 64];
            let n = m.emit(&mut buf).unwrap();
            assert_eq!(n, m.buffer_len());
            assert_eq!(Message::parse(&buf[..n]), Ok(m));
            for cut in 0..n {
                // Gossip with a cut payload is still a (shorter) valid gossip.
                if matches!(m, Message::Gossip { .. }) && cut >= 2 {
                    continue;
                }
                assert_eq!(
                    Message::parse(&buf[..cut]),
                    Err(WireError::Truncated),
                    "{m:?} cut {cut}"
                );
            }
            let mut long = buf;
            if !matches!(m, Message::Gossip { .. }) {
                assert_eq!(Message::parse(&long[..n + 1]), Err(WireError::Inconsistent));
            }
            long[0] = 99;
            assert_eq!(Message::parse(&long[..n]), Err(WireError::UnknownType));
        }
    }

    #[test]
    fn oversized_gossip_is_refused_both_ways() {
        let payload = vec![0u8; GOSSIP_PAYLOAD_LEN_MAX + 1];
        let m = Message::Gossip {
            channel: 1,
            payload: &payload,
        };
        let mut buf = vec![0u8; MESSAGE_LEN_MAX + 16];
        assert_eq!(m.emit(&mut buf), Err(WireError::Oversized));
        let fits = Message::Gossip {
            channel: 1,
            payload: &payload[1..],
        };
        assert_eq!(fits.emit(&mut buf), Ok(MESSAGE_LEN_MAX));
        buf[0] = TYPE_GOSSIP;
        assert_eq!(
            Message::parse(&buf[..MESSAGE_LEN_MAX + 1]),
            Err(WireError::Oversized)
        );
    }
}
