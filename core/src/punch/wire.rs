//! The two codecs of hole punching: control messages between neighbours (gossip channel
//! [`CHANNEL_PUNCH`], inside the sealed stream) and punch datagrams (UDP, on the sleeve
//! port, told apart from sleeve datagrams by their first byte).
//!
//! Control message (big-endian): `kind u8 | fields`:
//!
//! ```text
//! 1 reflect-token  token u64                 "my reflect datagrams to you carry this"
//! 2 observed       addr                      "your reflect datagrams come from addr"
//! 3 intro-request  target (6)                "introduce me to target"
//! 4 intro          peer (6) | addr | session u64   "peer is at addr; punch with session"
//! 5 intro-refused  target (6) | reason u8    "cannot introduce you to target"
//! ```
//!
//! Datagram: `magic 0x78 | version u8 | kind u8 | sender (6) | receiver (6) | tag u64 |
//! body`. Kind 1 (reflect): no body, `tag` is the sender's reflect token. Kind 2
//! (segment): `tag` is the punch session, body `seq u32 | ack u32 | payload` — one piece of
//! a connection's byte stream ([`super::arq`]); an empty payload is a pure ack.

use crate::peer::PeerName;
use crate::wire::WireError;
use crate::wire::buf::{Reader, Writer};
use core::net::SocketAddr;

/// Gossip channel of punch control messages. Peers that predate it ignore the channel.
pub const CHANNEL_PUNCH: u8 = 5;
/// First byte of every punch datagram (sleeve datagrams start with 0x77).
pub const PUNCH_MAGIC: u8 = 0x78;
/// The punch datagram format's version.
pub const PUNCH_VERSION: u8 = 1;
/// Bytes before a datagram's body.
pub const PUNCH_HEADER_LEN: usize = 3 + 6 + 6 + 8;
/// Bytes of a segment's own header (seq, ack).
pub const SEGMENT_HEADER_LEN: usize = 8;
/// Most stream bytes one segment carries: with all headers it fits the IPv6 minimum MTU.
pub const SEGMENT_PAYLOAD_LEN_MAX: usize = 1200;
/// Longest punch datagram.
pub const PUNCH_DATAGRAM_LEN_MAX: usize =
    PUNCH_HEADER_LEN + SEGMENT_HEADER_LEN + SEGMENT_PAYLOAD_LEN_MAX;
/// Longest control message (an intro with an IPv6 address).
pub const PUNCH_MSG_LEN_MAX: usize = 1 + 6 + 19 + 8;

const MSG_REFLECT_TOKEN: u8 = 1;
const MSG_OBSERVED: u8 = 2;
const MSG_INTRO_REQUEST: u8 = 3;
const MSG_INTRO: u8 = 4;
const MSG_INTRO_REFUSED: u8 = 5;
const KIND_REFLECT: u8 = 1;
const KIND_SEGMENT: u8 = 2;

/// Why an introducer could not introduce two peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefuseReason {
    /// The target is not (or no longer) connected to the introducer.
    NotConnected,
    /// The introducer has not seen a reflect datagram from one of the two.
    NoAddress,
}

impl RefuseReason {
    fn to_u8(self) -> u8 {
        match self {
            Self::NotConnected => 1,
            Self::NoAddress => 2,
        }
    }

    fn from_u8(v: u8) -> Result<Self, WireError> {
        match v {
            1 => Ok(Self::NotConnected),
            2 => Ok(Self::NoAddress),
            _ => Err(WireError::UnknownType),
        }
    }
}

/// A punch control message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PunchMsg {
    /// The token our reflect datagrams to the receiver carry.
    ReflectToken(u64),
    /// The address the receiver's reflect datagrams arrive from (its mapped address).
    Observed(SocketAddr),
    /// Asks the receiver to introduce us to `target`.
    IntroRequest(PeerName),
    /// The receiver should punch to `peer` at `addr`, with `session`.
    Intro {
        /// Whom to punch to.
        peer: PeerName,
        /// Where the introducer sees that peer's datagrams come from.
        addr: SocketAddr,
        /// The session both ends' segments carry.
        session: u64,
    },
    /// An intro request for `target` could not be served.
    IntroRefused {
        /// The peer asked for.
        target: PeerName,
        /// Why.
        reason: RefuseReason,
    },
}

impl PunchMsg {
    /// Decodes one message; trailing bytes are refused.
    pub fn parse(bytes: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(bytes);
        let m = match r.u8()? {
            MSG_REFLECT_TOKEN => Self::ReflectToken(r.u64()?),
            MSG_OBSERVED => Self::Observed(r.socket_addr()?),
            MSG_INTRO_REQUEST => Self::IntroRequest(r.peer_name()?),
            MSG_INTRO => Self::Intro {
                peer: r.peer_name()?,
                addr: r.socket_addr()?,
                session: r.u64()?,
            },
            MSG_INTRO_REFUSED => Self::IntroRefused {
                target: r.peer_name()?,
                reason: RefuseReason::from_u8(r.u8()?)?,
            },
            _ => return Err(WireError::UnknownType),
        };
        r.finish()?;
        Ok(m)
    }

    /// Encodes into `buf` (at least [`PUNCH_MSG_LEN_MAX`] is always enough); returns the length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let mut w = Writer::new(buf);
        match *self {
            Self::ReflectToken(t) => {
                w.u8(MSG_REFLECT_TOKEN)?;
                w.u64(t)?;
            }
            Self::Observed(a) => {
                w.u8(MSG_OBSERVED)?;
                w.socket_addr(a)?;
            }
            Self::IntroRequest(t) => {
                w.u8(MSG_INTRO_REQUEST)?;
                w.peer_name(t)?;
            }
            Self::Intro {
                peer,
                addr,
                session,
            } => {
                w.u8(MSG_INTRO)?;
                w.peer_name(peer)?;
                w.socket_addr(addr)?;
                w.u64(session)?;
            }
            Self::IntroRefused { target, reason } => {
                w.u8(MSG_INTRO_REFUSED)?;
                w.peer_name(target)?;
                w.u8(reason.to_u8())?;
            }
        }
        Ok(w.len())
    }
}

/// What a punch datagram carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PunchBody<'a> {
    /// A reflect datagram: tells the receiver where we are seen from.
    Reflect,
    /// A piece of a punched connection's byte stream.
    Segment {
        /// The segment's number (of the sender's stream); ignored when `payload` is empty.
        seq: u32,
        /// Every segment of the receiver's stream below this arrived.
        ack: u32,
        /// Stream bytes; empty for a pure ack.
        payload: &'a [u8],
    },
}

/// A parsed punch datagram; borrows the payload from the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PunchDatagram<'a> {
    /// Who sent it.
    pub sender: PeerName,
    /// For whom.
    pub receiver: PeerName,
    /// The reflect token or the punch session.
    pub tag: u64,
    /// What it carries.
    pub body: PunchBody<'a>,
}

impl<'a> PunchDatagram<'a> {
    /// True if `bytes` look like a punch datagram (its magic), for a driver that shares one
    /// UDP socket between the sleeve and the router.
    pub fn is_punch(bytes: &[u8]) -> bool {
        bytes.first() == Some(&PUNCH_MAGIC)
    }

    /// Decodes one datagram.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, WireError> {
        if bytes.len() > PUNCH_DATAGRAM_LEN_MAX {
            return Err(WireError::Oversized);
        }
        let mut r = Reader::new(bytes);
        if r.u8()? != PUNCH_MAGIC {
            return Err(WireError::BadMagic);
        }
        if r.u8()? != PUNCH_VERSION {
            return Err(WireError::UnsupportedVersion);
        }
        let kind = r.u8()?;
        let sender = r.peer_name()?;
        let receiver = r.peer_name()?;
        let tag = r.u64()?;
        let body = match kind {
            KIND_REFLECT => {
                r.finish()?;
                PunchBody::Reflect
            }
            KIND_SEGMENT => PunchBody::Segment {
                seq: r.u32()?,
                ack: r.u32()?,
                payload: r.rest(),
            },
            _ => return Err(WireError::UnknownType),
        };
        Ok(Self {
            sender,
            receiver,
            tag,
            body,
        })
    }

    /// Encodes into `buf`; returns the length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let mut w = Writer::new(buf);
        w.u8(PUNCH_MAGIC)?;
        w.u8(PUNCH_VERSION)?;
        w.u8(match self.body {
            PunchBody::Reflect => KIND_REFLECT,
            PunchBody::Segment { .. } => KIND_SEGMENT,
        })?;
        w.peer_name(self.sender)?;
        w.peer_name(self.receiver)?;
        w.u64(self.tag)?;
        if let PunchBody::Segment { seq, ack, payload } = self.body {
            if payload.len() > SEGMENT_PAYLOAD_LEN_MAX {
                return Err(WireError::Oversized);
            }
            w.u32(seq)?;
            w.u32(ack)?;
            w.bytes(payload)?;
        }
        Ok(w.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs() -> [PunchMsg; 6] {
        let a: SocketAddr = "192.0.2.7:40001".parse().unwrap();
        let b: SocketAddr = "[2001:db8::9]:6783".parse().unwrap();
        [
            PunchMsg::ReflectToken(0xdead_beef_0102_0304),
            PunchMsg::Observed(a),
            PunchMsg::IntroRequest(PeerName::from_u64(0x0a0b_0c0d_0e0f)),
            PunchMsg::Intro {
                peer: PeerName::from_u64(7),
                addr: b,
                session: u64::MAX,
            },
            PunchMsg::Intro {
                peer: PeerName::from_u64(8),
                addr: a,
                session: 1,
            },
            PunchMsg::IntroRefused {
                target: PeerName::from_u64(9),
                reason: RefuseReason::NoAddress,
            },
        ]
    }

    #[test]
    fn messages_round_trip_and_refuse_truncation_and_trailing_bytes() {
        for m in msgs() {
            let mut buf = [0u8; PUNCH_MSG_LEN_MAX];
            let n = m.emit(&mut buf).unwrap();
            assert_eq!(PunchMsg::parse(&buf[..n]), Ok(m));
            for cut in 0..n {
                assert!(PunchMsg::parse(&buf[..cut]).is_err(), "{m:?} cut at {cut}");
            }
            let mut long = buf[..n].to_vec();
            long.push(0);
            assert_eq!(PunchMsg::parse(&long), Err(WireError::Inconsistent));
        }
        assert_eq!(PunchMsg::parse(&[9]), Err(WireError::UnknownType));
        assert_eq!(
            PunchMsg::parse(&[5, 0, 0, 0, 0, 0, 9, 3]),
            Err(WireError::UnknownType)
        );
    }

    #[test]
    fn datagrams_round_trip_and_refuse_garbage() {
        let payload = [0x5au8; SEGMENT_PAYLOAD_LEN_MAX];
        let cases = [
            PunchBody::Reflect,
            PunchBody::Segment {
                seq: 3,
                ack: 9,
                payload: &payload,
            },
            PunchBody::Segment {
                seq: 0,
                ack: 0,
                payload: &[],
            },
        ];
        for body in cases {
            let d = PunchDatagram {
                sender: PeerName::from_u64(1),
                receiver: PeerName::from_u64(2),
                tag: 42,
                body,
            };
            let mut buf = [0u8; PUNCH_DATAGRAM_LEN_MAX];
            let n = d.emit(&mut buf).unwrap();
            assert!(PunchDatagram::is_punch(&buf[..n]));
            assert_eq!(PunchDatagram::parse(&buf[..n]), Ok(d));
            for cut in 0..PUNCH_HEADER_LEN.min(n) {
                assert!(PunchDatagram::parse(&buf[..cut]).is_err());
            }
        }
        let mut too_long = [0u8; SEGMENT_PAYLOAD_LEN_MAX + 1];
        let d = PunchDatagram {
            sender: PeerName::from_u64(1),
            receiver: PeerName::from_u64(2),
            tag: 1,
            body: PunchBody::Segment {
                seq: 0,
                ack: 0,
                payload: &too_long,
            },
        };
        let mut buf = [0u8; 2 * PUNCH_DATAGRAM_LEN_MAX];
        assert_eq!(d.emit(&mut buf), Err(WireError::Oversized));
        too_long[0] = 0x77;
        assert_eq!(PunchDatagram::parse(&too_long), Err(WireError::BadMagic));
        assert!(!PunchDatagram::is_punch(&too_long));
        let mut reflect = [0u8; PUNCH_HEADER_LEN + 1];
        let n = PunchDatagram {
            sender: PeerName::from_u64(1),
            receiver: PeerName::from_u64(2),
            tag: 1,
            body: PunchBody::Reflect,
        }
        .emit(&mut reflect)
        .unwrap();
        assert_eq!(n, PUNCH_HEADER_LEN);
        assert_eq!(PunchDatagram::parse(&reflect), Err(WireError::Inconsistent));
        reflect[1] = 9;
        assert_eq!(
            PunchDatagram::parse(&reflect[..n]),
            Err(WireError::UnsupportedVersion)
        );
        reflect[1] = PUNCH_VERSION;
        reflect[2] = 7;
        assert_eq!(
            PunchDatagram::parse(&reflect[..n]),
            Err(WireError::UnknownType)
        );
    }
}
