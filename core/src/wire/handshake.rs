//! The hello each side sends first on a TCP connection: version range, identity,
//! encryption flag, ephemeral X25519 public key and (from v3) the ciphers offered.
//!
//! Layout (big-endian):
//!
//! ```text
//! magic "weft" (4) | body_len u16 | version_min u8 | version_max u8 | flags u8
//! | name (6) | uid u64 | listen_port u16 | public_key (32) | nickname_len u8 | nickname
//! | ciphers u8   (only when version_max >= 3)
//! ```
//!
//! `body_len` counts the bytes after itself, so a stream reader knows from the first six
//! bytes how much to wait for ([`hello_len`]). A peer that speaks a newer version than
//! ours may append extension bytes after the ones we know; they are ignored but still
//! hashed into the handshake transcript. A peer that claims no newer version may not.
//! This is how v3 added `ciphers`: a v2 router reads a v3 hello as a v2 one with an
//! extension byte it skips.

use super::buf::{Reader, Writer};
use super::{PROTOCOL_VERSION_MAX, WireError};
use crate::crypto::CipherSuites;
use crate::peer::{PeerName, PeerUid};

/// The four bytes every hello starts with.
pub const HELLO_MAGIC: [u8; 4] = *b"weft";
/// Magic plus the body length field.
pub const HELLO_HEADER_LEN: usize = 6;
/// Longest nickname, in bytes of UTF-8.
pub const NICKNAME_LEN_MAX: usize = 32;
/// Body bytes before the nickname text (versions, flags, name, uid, port, key, nick length).
const HELLO_FIXED_BODY_LEN: usize = 1 + 1 + 1 + 6 + 8 + 2 + 32 + 1;
/// The first protocol version whose hello carries the `ciphers` byte.
pub const HELLO_CIPHERS_VERSION_MIN: u8 = 3;
/// Longest body we accept, extensions included.
pub const HELLO_BODY_LEN_MAX: usize = 256;
/// Longest hello on the wire.
pub const HELLO_LEN_MAX: usize = HELLO_HEADER_LEN + HELLO_BODY_LEN_MAX;
/// Flag bit: the sender has a password set and will only talk encrypted-with-password.
pub const HELLO_FLAG_ENCRYPTED: u8 = 0x01;
const HELLO_FLAGS_KNOWN: u8 = HELLO_FLAG_ENCRYPTED;

/// A parsed hello, borrowing its nickname from the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello<'a> {
    /// Lowest protocol version the sender speaks.
    pub version_min: u8,
    /// Highest protocol version the sender speaks.
    pub version_max: u8,
    /// The sender's peer name.
    pub name: PeerName,
    /// The sender's incarnation.
    pub uid: PeerUid,
    /// Human-friendly name (hostname); at most [`NICKNAME_LEN_MAX`] bytes of UTF-8.
    pub nickname: &'a str,
    /// The TCP port the sender listens on (to be dialled back by others).
    pub listen_port: u16,
    /// Whether the sender has a password set.
    pub encrypted: bool,
    /// The sender's ephemeral X25519 public key for this connection.
    pub public_key: [u8; 32],
    /// The ciphers the sender offers for sleeve datagrams. On the wire only when
    /// `version_max` is at least [`HELLO_CIPHERS_VERSION_MIN`]; an older hello parses as
    /// [`CipherSuites::CHACHA20_POLY1305`] (all v2 speaks). Bits of ciphers we do not know
    /// are dropped (a newer sender may offer more).
    pub ciphers: CipherSuites,
}

/// Total length of the hello at the start of `prefix` once its header is there.
///
/// [`WireError::Truncated`] while fewer than [`HELLO_HEADER_LEN`] bytes are available;
/// [`WireError::BadMagic`] as soon as the bytes present contradict the magic (so garbage
/// fails after one byte); [`WireError::Oversized`] / [`WireError::Inconsistent`] for a body
/// length over [`HELLO_BODY_LEN_MAX`] or below the fixed fields.
pub fn hello_len(prefix: &[u8]) -> Result<usize, WireError> {
    let magic_seen = prefix.len().min(HELLO_MAGIC.len());
    if prefix[..magic_seen] != HELLO_MAGIC[..magic_seen] {
        return Err(WireError::BadMagic);
    }
    let mut r = Reader::new(prefix);
    r.bytes(HELLO_MAGIC.len())?;
    let body_len = usize::from(r.u16()?);
    if body_len > HELLO_BODY_LEN_MAX {
        return Err(WireError::Oversized);
    }
    if body_len < HELLO_FIXED_BODY_LEN {
        return Err(WireError::Inconsistent);
    }
    Ok(HELLO_HEADER_LEN + body_len)
}

impl<'a> Hello<'a> {
    /// Parses the hello at the start of `buf` and returns it with the bytes it took.
    ///
    /// [`WireError::Truncated`] means "not all here yet" (read more and retry); every other
    /// error is final. Bytes after the hello are left alone (they are the first frames).
    pub fn parse(buf: &'a [u8]) -> Result<(Self, usize), WireError> {
        let total = hello_len(buf)?;
        let whole = buf.get(..total).ok_or(WireError::Truncated)?;
        let body = &whole[HELLO_HEADER_LEN..];
        // Inside a complete body, running short is a contradiction with body_len.
        let hello = Self::parse_body(body).map_err(|e| match e {
            WireError::Truncated => WireError::Inconsistent,
            e => e,
        })?;
        Ok((hello, total))
    }

    fn parse_body(body: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body);
        let version_min = r.u8()?;
        let version_max = r.u8()?;
        if version_min == 0 || version_min > version_max {
            return Err(WireError::Inconsistent);
        }
        let flags = r.u8()?;
        if flags & !HELLO_FLAGS_KNOWN != 0 {
            return Err(WireError::Inconsistent);
        }
        let name = r.peer_name()?;
        let uid = PeerUid(r.u64()?);
        let listen_port = r.u16()?;
        let public_key = r.array::<32>()?;
        let nick = r.short_bytes(NICKNAME_LEN_MAX)?;
        let nickname = core::str::from_utf8(nick).map_err(|_| WireError::Inconsistent)?;
        let ciphers = if version_max >= HELLO_CIPHERS_VERSION_MIN {
            let bits = r.u8()?;
            let known = CipherSuites::from_bits_known(bits);
            // From a sender no newer than us every bit must mean something, and an
            // empty offer is no offer; a newer one may offer only ciphers we lack (then
            // the connection fails for want of a common one, not as malformed).
            if version_max <= PROTOCOL_VERSION_MAX && (known.bits() != bits || known.is_empty()) {
                return Err(WireError::Inconsistent);
            }
            known
        } else {
            CipherSuites::CHACHA20_POLY1305
        };
        if version_max <= PROTOCOL_VERSION_MAX {
            r.finish()?;
        }
        Ok(Self {
            version_min,
            version_max,
            name,
            uid,
            nickname,
            listen_port,
            encrypted: flags & HELLO_FLAG_ENCRYPTED != 0,
            public_key,
            ciphers,
        })
    }

    /// Whether this hello carries the `ciphers` byte.
    fn has_ciphers(&self) -> bool {
        self.version_max >= HELLO_CIPHERS_VERSION_MIN
    }

    /// Bytes [`emit`](Self::emit) will write.
    pub fn buffer_len(&self) -> usize {
        HELLO_HEADER_LEN
            + HELLO_FIXED_BODY_LEN
            + self.nickname.len()
            + usize::from(self.has_ciphers())
    }

    /// Writes the hello into `buf` and returns its length. [`WireError::Oversized`] for a
    /// nickname over [`NICKNAME_LEN_MAX`], [`WireError::Inconsistent`] for an empty or
    /// inverted version range, [`WireError::BufferTooSmall`] if `buf` is short. An empty
    /// cipher offer is written as it is (a peer of our version refuses it).
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        if self.nickname.len() > NICKNAME_LEN_MAX {
            return Err(WireError::Oversized);
        }
        if self.version_min == 0 || self.version_min > self.version_max {
            return Err(WireError::Inconsistent);
        }
        let body_len = self.buffer_len() - HELLO_HEADER_LEN;
        let mut w = Writer::new(buf);
        w.bytes(&HELLO_MAGIC)?;
        // body_len <= 56 + 32 + 1, fits a u16.
        w.u16(body_len as u16)?;
        w.u8(self.version_min)?;
        w.u8(self.version_max)?;
        w.u8(if self.encrypted {
            HELLO_FLAG_ENCRYPTED
        } else {
            0
        })?;
        w.peer_name(self.name)?;
        w.u64(self.uid.0)?;
        w.u16(self.listen_port)?;
        w.bytes(&self.public_key)?;
        w.short_bytes(self.nickname.as_bytes(), NICKNAME_LEN_MAX)?;
        if self.has_ciphers() {
            w.u8(self.ciphers.bits())?;
        }
        Ok(w.len())
    }
}

/// The version both sides will speak: the highest in both ranges, or `None`.
pub fn negotiate_version(ours: (u8, u8), theirs: (u8, u8)) -> Option<u8> {
    let top = ours.1.min(theirs.1);
    let bottom = ours.0.max(theirs.0);
    (top >= bottom).then_some(top)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn sample() -> Hello<'static> {
        Hello {
            version_min: 1,
            version_max: 1,
            name: PeerName::from_u64(0x0a0b_0c0d_0e0f),
            uid: PeerUid(77),
            nickname: "host-ä",
            listen_port: 6783,
            encrypted: true,
            public_key: [9; 32],
            ciphers: CipherSuites::CHACHA20_POLY1305,
        }
    }

    fn emitted(h: &Hello<'_>) -> Vec<u8> {
        let mut buf = [0u8; HELLO_LEN_MAX];
        let n = h.emit(&mut buf).unwrap();
        assert_eq!(n, h.buffer_len());
        buf[..n].to_vec()
    }

    #[test]
    fn roundtrip_leaves_following_bytes() {
        let h = sample();
        let mut bytes = emitted(&h);
        let n = bytes.len();
        bytes.extend_from_slice(b"next frame");
        assert_eq!(Hello::parse(&bytes), Ok((h, n)));
        assert_eq!(hello_len(&bytes[..HELLO_HEADER_LEN]), Ok(n));
    }

    #[test]
    fn every_prefix_is_truncated_not_garbage() {
        let bytes = emitted(&sample());
        for cut in 0..bytes.len() {
            assert_eq!(
                Hello::parse(&bytes[..cut]).err(),
                Some(WireError::Truncated),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn garbage_fails_on_first_wrong_byte() {
        assert_eq!(Hello::parse(b"x").err(), Some(WireError::BadMagic));
        assert_eq!(Hello::parse(b"wefT").err(), Some(WireError::BadMagic));
        assert_eq!(
            Hello::parse(b"GET / HTTP/1.1\r\n").err(),
            Some(WireError::BadMagic)
        );
    }

    #[test]
    fn oversized_and_undersized_body_lengths() {
        let mut b = emitted(&sample());
        b[4..6].copy_from_slice(&((HELLO_BODY_LEN_MAX + 1) as u16).to_be_bytes());
        assert_eq!(Hello::parse(&b[..6]).err(), Some(WireError::Oversized));
        b[4..6].copy_from_slice(&3u16.to_be_bytes());
        assert_eq!(Hello::parse(&b).err(), Some(WireError::Inconsistent));
    }

    #[test]
    fn inconsistent_fields_are_rejected() {
        let base = emitted(&sample());
        let cases: [(usize, u8); 4] = [
            (6, 0),                   // version_min 0
            (6, 2),                   // min > max
            (8, 0x80),                // unknown flag
            (6 + 9 + 8 + 2 + 32, 33), // nickname length over the max
        ];
        for (at, v) in cases {
            let mut b = base.clone();
            b[at] = v;
            assert!(Hello::parse(&b).is_err(), "byte {at} = {v}");
        }
        // Nickname length running past body_len.
        let mut b = base.clone();
        let nick_at = HELLO_HEADER_LEN + HELLO_FIXED_BODY_LEN - 1;
        b[nick_at] = 20;
        assert_eq!(Hello::parse(&b).err(), Some(WireError::Inconsistent));
        // Invalid UTF-8 nickname.
        let mut b = base.clone();
        b[nick_at + 1] = 0xff;
        assert_eq!(Hello::parse(&b).err(), Some(WireError::Inconsistent));
    }

    #[test]
    fn trailing_bytes_only_from_newer_versions() {
        let mut h = sample();
        let mut b = emitted(&h);
        b.push(0xee);
        let body_len = (b.len() - HELLO_HEADER_LEN) as u16;
        b[4..6].copy_from_slice(&body_len.to_be_bytes());
        assert_eq!(Hello::parse(&b).err(), Some(WireError::Inconsistent));
        h.version_max = PROTOCOL_VERSION_MAX + 1;
        let mut b = emitted(&h);
        b.push(0xee);
        let body_len = (b.len() - HELLO_HEADER_LEN) as u16;
        b[4..6].copy_from_slice(&body_len.to_be_bytes());
        let (parsed, n) = Hello::parse(&b).unwrap();
        assert_eq!((parsed, n), (h, b.len()));
    }

    #[test]
    fn emit_refuses_bad_input_and_small_buffers() {
        let mut h = sample();
        let mut buf = [0u8; HELLO_LEN_MAX];
        assert_eq!(h.emit(&mut buf[..10]), Err(WireError::BufferTooSmall));
        h.nickname = "123456789012345678901234567890123";
        assert_eq!(h.emit(&mut buf), Err(WireError::Oversized));
        h.nickname = "";
        h.version_min = 3;
        assert_eq!(h.emit(&mut buf), Err(WireError::Inconsistent));
    }

    #[test]
    fn v3_hellos_carry_the_cipher_offer_and_v2_ones_mean_chacha() {
        use crate::crypto::CipherSuite;
        let both = CipherSuites::from_bits_known(0xff);
        let mut h = sample();
        h.version_min = 2;
        h.version_max = HELLO_CIPHERS_VERSION_MIN;
        h.ciphers = both;
        let b = emitted(&h);
        assert_eq!(b.len(), sample().buffer_len() + 1);
        assert_eq!(*b.last().unwrap(), 0x03);
        assert_eq!(Hello::parse(&b), Ok((h, b.len())));
        // Dropping the byte (and fixing body_len) is malformed for a v3 sender.
        let mut short = b[..b.len() - 1].to_vec();
        let body_len = (short.len() - HELLO_HEADER_LEN) as u16;
        short[4..6].copy_from_slice(&body_len.to_be_bytes());
        assert_eq!(Hello::parse(&short).err(), Some(WireError::Inconsistent));
        // An empty offer or an unknown bit from a sender no newer than us: malformed.
        for bad in [0x00, 0x04, 0x81] {
            let mut x = b.clone();
            *x.last_mut().unwrap() = bad;
            assert_eq!(
                Hello::parse(&x).err(),
                Some(WireError::Inconsistent),
                "{bad:#x}"
            );
        }
        // A newer sender may offer ciphers we do not know: they are dropped.
        h.version_max = PROTOCOL_VERSION_MAX + 1;
        let mut x = emitted(&h);
        *x.last_mut().unwrap() = 0x80 | CipherSuite::Aes256Gcm.bit();
        let (parsed, _) = Hello::parse(&x).unwrap();
        assert_eq!(parsed.ciphers, CipherSuites::only(CipherSuite::Aes256Gcm));
        // A v2 hello has no byte, and its offer is ChaCha20-Poly1305.
        h.version_max = 2;
        let v2 = emitted(&h);
        assert_eq!(v2.len(), sample().buffer_len());
        let (parsed, _) = Hello::parse(&v2).unwrap();
        assert_eq!(parsed.ciphers, CipherSuites::CHACHA20_POLY1305);
    }

    #[test]
    fn version_negotiation_picks_highest_common() {
        assert_eq!(negotiate_version((1, 3), (2, 5)), Some(3));
        assert_eq!(negotiate_version((1, 1), (1, 1)), Some(1));
        assert_eq!(negotiate_version((1, 2), (3, 4)), None);
    }
}
