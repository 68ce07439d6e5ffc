//! Ephemeral key exchanges, session key derivation and the sealers/openers built from them.
//!
//! Two exchanges, chosen by whether a password is set:
//! - none: X25519 between ephemeral keys. Confidential against a passive listener, with
//!   forward secrecy, but unauthenticated: anyone may answer.
//! - password: symmetric SPAKE2 over Ed25519 (both hellos cross at once, so neither side
//!   is "A" or "B"). Each side's hello carries `x*G + pw*S`; a run tells an active attacker
//!   whether one guessed password was right (online, one guess per connection) and a
//!   recorded run tells a passive one nothing, so the password cannot be tested offline.
//!
//! Either way the 32-byte result goes through HKDF-SHA256, one expand per direction and
//! channel. The stream keys (always ChaCha20-Poly1305) do not depend on the hellos' other
//! fields (names, versions, nickname, cipher offers): each side's sealed confirm carries
//! the transcript hash of both hellos and is checked against its own ([`crate::conn`]), so
//! an altered hello is told apart from a wrong password. From protocol v3 the datagram
//! keys are also bound to the hellos ([`DatagramBinding`]: the chosen cipher and the
//! transcript hash go into their HKDF info), so sleeve keys from a run whose hellos were
//! altered never match, whatever the confirm said.

use super::aead::Cipher;
use super::keyrng::KeyRng;
use super::{
    COUNTER_MAX, CipherSuite, CryptoError, DatagramOpener, HASH_LEN_BYTES, KEY_LEN_BYTES, Psk,
    TAG_LEN_BYTES, nonce_bytes,
};
use core::fmt;
use core::marker::PhantomData;
use hkdf::Hkdf;
use sha2::Sha256;
use spake2::{Ed25519Group, Identity, Password, Spake2};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroize;

/// HKDF salt of the passwordless (X25519) exchange.
const NO_PASSWORD_SALT: &[u8] = b"weft v2 x25519";
/// HKDF salt of the password (SPAKE2) exchange.
const PAKE_SALT: &[u8] = b"weft v2 spake2";
/// SPAKE2's symmetric identity: the same on every weft router.
const PAKE_IDENTITY: &[u8] = b"weft v2 symmetric";
/// SPAKE2 messages start with a side byte, 'S' in symmetric mode; the hello carries only
/// the 32-byte element after it.
const PAKE_SIDE_SYMMETRIC: u8 = b'S';
const INFO_STREAM_I2R: &[u8] = b"weft v2 stream initiator->responder";
const INFO_STREAM_R2I: &[u8] = b"weft v2 stream responder->initiator";
const INFO_DGRAM_I2R: &[u8] = b"weft v2 datagram initiator->responder";
const INFO_DGRAM_R2I: &[u8] = b"weft v2 datagram responder->initiator";
/// Protocol v3's datagram labels; the info is the label, the cipher's bit, the transcript.
const INFO_DGRAM_V3_I2R: &[u8] = b"weft v3 datagram initiator->responder";
const INFO_DGRAM_V3_R2I: &[u8] = b"weft v3 datagram responder->initiator";

/// What protocol v3 binds a connection's datagram keys to: the cipher both ends chose
/// ([`super::CipherSuites::choose`]) and the transcript hash of both hellos, which carry
/// both cipher offers. Both ends compute the same from the same hellos.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DatagramBinding {
    /// The AEAD the sleeve datagrams are sealed with.
    pub suite: CipherSuite,
    /// [`super::transcript_hash`] of the initiator's hello then the responder's.
    pub transcript: [u8; HASH_LEN_BYTES],
}

/// One side's ephemeral X25519 key pair, fresh for every connection.
pub struct KeyPair {
    secret: StaticSecret,
    public: [u8; KEY_LEN_BYTES],
}

impl KeyPair {
    /// A fresh key pair from 32 bytes of `rng`. Call once per connection attempt.
    pub fn generate(rng: &mut dyn KeyRng) -> Self {
        let mut bytes = [0u8; KEY_LEN_BYTES];
        rng.fill_bytes(&mut bytes);
        let secret = StaticSecret::from(bytes);
        bytes.zeroize();
        let public = PublicKey::from(&secret).to_bytes();
        Self { secret, public }
    }

    /// The public half, as sent in the hello.
    pub fn public_bytes(&self) -> [u8; KEY_LEN_BYTES] {
        self.public
    }
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// Our secret half of one connection's key exchange, made when the connection is and
/// used up by [`finish`](Self::finish) when the peer's hello arrives.
pub struct Handshake {
    kind: HandshakeKind,
    public: [u8; KEY_LEN_BYTES],
}

enum HandshakeKind {
    Dh(KeyPair),
    Pake(Spake2<Ed25519Group>),
}

impl Handshake {
    /// Starts an exchange: SPAKE2 under `psk` when a password is set, X25519 otherwise.
    /// All secret randomness comes from `rng`.
    pub fn start(rng: &mut dyn KeyRng, psk: Option<&Psk>) -> Self {
        match psk {
            None => {
                let pair = KeyPair::generate(rng);
                Self {
                    public: pair.public_bytes(),
                    kind: HandshakeKind::Dh(pair),
                }
            }
            Some(psk) => {
                let (state, msg) = Spake2::<Ed25519Group>::start_symmetric_with_rng(
                    &Password::new(psk.bytes()),
                    &Identity::new(PAKE_IDENTITY),
                    rng,
                );
                let mut public = [0u8; KEY_LEN_BYTES];
                // Always 1 + 32 bytes for Ed25519; anything else leaves an all-zero
                // element, which the peer refuses.
                if let Some(element) = msg.get(1..).filter(|e| e.len() == KEY_LEN_BYTES) {
                    public.copy_from_slice(element);
                }
                Self {
                    public,
                    kind: HandshakeKind::Pake(state),
                }
            }
        }
    }

    /// What our hello carries: the X25519 public key or the SPAKE2 element.
    pub fn public_bytes(&self) -> [u8; KEY_LEN_BYTES] {
        self.public
    }

    /// Whether this is the password exchange.
    pub fn with_password(&self) -> bool {
        matches!(self.kind, HandshakeKind::Pake(_))
    }

    /// Derives the session from the peer's hello value. A wrong password is not noticed here (both
    /// sides get keys, different ones): the first sealed record will not open.
    /// [`CryptoError::BadPublicKey`] for a low-order X25519 key or a SPAKE2 element that is
    /// not a curve point.
    /// This is protocol v2's schedule: ChaCha20-Poly1305 everywhere, datagram keys not
    /// bound to the hellos.
    pub fn finish(
        self,
        their_public: [u8; KEY_LEN_BYTES],
        we_initiated: bool,
    ) -> Result<SessionKeys, CryptoError> {
        self.finish_with(their_public, we_initiated, None)
    }

    /// As [`finish`](Self::finish) with protocol v3's datagram keys: sealed with
    /// `binding.suite` and derived with the suite and the transcript in their HKDF info.
    /// The stream keys are the same as `finish`'s.
    pub fn finish_bound(
        self,
        their_public: [u8; KEY_LEN_BYTES],
        we_initiated: bool,
        binding: &DatagramBinding,
    ) -> Result<SessionKeys, CryptoError> {
        self.finish_with(their_public, we_initiated, Some(binding))
    }

    fn finish_with(
        self,
        their_public: [u8; KEY_LEN_BYTES],
        we_initiated: bool,
        binding: Option<&DatagramBinding>,
    ) -> Result<SessionKeys, CryptoError> {
        match self.kind {
            HandshakeKind::Dh(pair) => {
                SessionKeys::derive_with(&pair, their_public, we_initiated, binding)
            }
            HandshakeKind::Pake(state) => {
                let mut msg = [0u8; 1 + KEY_LEN_BYTES];
                msg[0] = PAKE_SIDE_SYMMETRIC;
                msg[1..].copy_from_slice(&their_public);
                let mut key = state.finish(&msg).map_err(|_| CryptoError::BadPublicKey)?;
                let keys = SessionKeys::from_secret(PAKE_SALT, &key, we_initiated, binding);
                key.zeroize();
                keys
            }
        }
    }
}

impl fmt::Debug for Handshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handshake")
            .field("password", &self.with_password())
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// The four directional keys of one connection, ready to use.
#[derive(Debug)]
pub struct SessionKeys {
    /// Seals our stream frames.
    pub stream_sealer: Sealer,
    /// Opens the peer's stream frames, strictly in order.
    pub stream_opener: Opener,
    /// Seals our sleeve datagrams to this peer.
    pub datagram_sealer: DatagramSealer,
    /// Opens this peer's sleeve datagrams, with a replay window.
    pub datagram_opener: DatagramOpener,
}

impl SessionKeys {
    /// The passwordless schedule: X25519 between `ours` and `their_public`, then
    /// `from_secret`. `we_initiated` is true on the side that opened
    /// the TCP connection. Fails with [`CryptoError::BadPublicKey`] if the peer's key is a
    /// low-order point.
    pub fn derive(
        ours: &KeyPair,
        their_public: [u8; KEY_LEN_BYTES],
        we_initiated: bool,
    ) -> Result<Self, CryptoError> {
        Self::derive_with(ours, their_public, we_initiated, None)
    }

    fn derive_with(
        ours: &KeyPair,
        their_public: [u8; KEY_LEN_BYTES],
        we_initiated: bool,
        binding: Option<&DatagramBinding>,
    ) -> Result<Self, CryptoError> {
        let shared = ours.secret.diffie_hellman(&PublicKey::from(their_public));
        if !shared.was_contributory() {
            return Err(CryptoError::BadPublicKey);
        }
        Self::from_secret(NO_PASSWORD_SALT, shared.as_bytes(), we_initiated, binding)
    }

    /// The key schedule: HKDF-SHA256 extract with `salt` over `secret`, then one expand per
    /// direction and channel with its label as info; with a `binding` (protocol v3) the
    /// datagram keys take v3 labels followed by the suite's bit and the transcript, and
    /// are keys for that suite.
    fn from_secret(
        salt: &[u8],
        secret: &[u8],
        we_initiated: bool,
        binding: Option<&DatagramBinding>,
    ) -> Result<Self, CryptoError> {
        let hk = Hkdf::<Sha256>::new(Some(salt), secret);
        let key_for = |suite: CipherSuite, info: &[&[u8]]| -> Result<Cipher, CryptoError> {
            let mut okm = [0u8; KEY_LEN_BYTES];
            hk.expand_multi_info(info, &mut okm)
                // 32 bytes is far below HKDF's 255*32 limit; map rather than unwrap anyway.
                .map_err(|_| CryptoError::BufferTooSmall)?;
            let cipher = Cipher::with_suite(suite, &okm);
            okm.zeroize();
            cipher
        };
        let key = |label: &[u8]| key_for(CipherSuite::ChaCha20Poly1305, &[label]);
        let datagram_key = |v2_label: &[u8], v3_label: &[u8]| match binding {
            None => key(v2_label),
            Some(b) => key_for(b.suite, &[v3_label, &[b.suite.bit()], &b.transcript]),
        };
        let (s_out, s_in, d_out, d_in) = if we_initiated {
            (
                INFO_STREAM_I2R,
                INFO_STREAM_R2I,
                INFO_DGRAM_I2R,
                INFO_DGRAM_R2I,
            )
        } else {
            (
                INFO_STREAM_R2I,
                INFO_STREAM_I2R,
                INFO_DGRAM_R2I,
                INFO_DGRAM_I2R,
            )
        };
        let (d_out_v3, d_in_v3) = if we_initiated {
            (INFO_DGRAM_V3_I2R, INFO_DGRAM_V3_R2I)
        } else {
            (INFO_DGRAM_V3_R2I, INFO_DGRAM_V3_I2R)
        };
        Ok(Self {
            stream_sealer: Sealer::new(key(s_out)?),
            stream_opener: Opener::new(key(s_in)?),
            datagram_sealer: Sealer::new(datagram_key(d_out, d_out_v3)?),
            datagram_opener: DatagramOpener::new(datagram_key(d_in, d_in_v3)?),
        })
    }
}

fn seal(
    cipher: &Cipher,
    counter: u64,
    aad: &[u8],
    buf: &mut [u8],
    plaintext_len: usize,
) -> Result<usize, CryptoError> {
    let sealed_len = plaintext_len
        .checked_add(TAG_LEN_BYTES)
        .ok_or(CryptoError::BufferTooSmall)?;
    if buf.len() < sealed_len {
        return Err(CryptoError::BufferTooSmall);
    }
    let (text, rest) = buf.split_at_mut(plaintext_len);
    let nonce = nonce_bytes(counter);
    let tag = cipher.seal_detached(&nonce, aad, text)?;
    rest[..TAG_LEN_BYTES].copy_from_slice(&tag);
    Ok(sealed_len)
}

/// Decrypts `sealed` (ciphertext then tag) in place; returns the plaintext length.
pub(super) fn open(
    cipher: &Cipher,
    counter: u64,
    aad: &[u8],
    sealed: &mut [u8],
) -> Result<usize, CryptoError> {
    let text_len = sealed
        .len()
        .checked_sub(TAG_LEN_BYTES)
        .ok_or(CryptoError::Tampered)?;
    let (text, tag) = sealed.split_at_mut(text_len);
    let nonce = nonce_bytes(counter);
    let mut tag_bytes = [0u8; TAG_LEN_BYTES];
    tag_bytes.copy_from_slice(tag);
    cipher.open_detached(&nonce, aad, text, &tag_bytes)?;
    Ok(text_len)
}

/// Seals one direction's records with a counter nonce (0, 1, 2, ...): `Sealer` (that is,
/// `Sealer<StreamRecords>`) a stream's records, [`DatagramSealer`] sleeve datagrams.
pub struct Sealer<C = StreamRecords> {
    cipher: Cipher,
    counter: u64,
    channel: PhantomData<C>,
}

/// What a [`Sealer`] seals: stream records, which the peer opens strictly in order.
#[derive(Debug)]
pub struct StreamRecords;

/// What a [`DatagramSealer`] seals: sleeve datagrams, which the peer opens in any order,
/// each counter once (so counters can be taken ahead, for a batch).
#[derive(Debug)]
pub struct Datagrams;

/// Seals sleeve datagrams to one peer; the counter rules of every [`Sealer`], and
/// [`reserve`](Self::reserve) and [`seal_at`](Self::seal_at) for batches.
pub type DatagramSealer = Sealer<Datagrams>;

impl<C> Sealer<C> {
    fn new(cipher: Cipher) -> Self {
        Self {
            cipher,
            counter: 0,
            channel: PhantomData,
        }
    }

    /// The AEAD this sealer uses.
    pub fn suite(&self) -> CipherSuite {
        self.cipher.suite()
    }

    /// The counter the next [`seal_in_place`](Self::seal_in_place) will use; write it
    /// into the record header (which is usually the AAD) before sealing.
    pub fn next_counter(&self) -> u64 {
        self.counter
    }

    /// Encrypts `buf[..plaintext_len]` in place and writes the tag right after it.
    /// Returns the counter used and the sealed length (`plaintext_len + TAG_LEN_BYTES`).
    /// Fails without using a counter if `buf` is too short or the counter is exhausted.
    pub fn seal_in_place(
        &mut self,
        aad: &[u8],
        buf: &mut [u8],
        plaintext_len: usize,
    ) -> Result<(u64, usize), CryptoError> {
        let counter = self.counter;
        if counter > COUNTER_MAX {
            return Err(CryptoError::CounterExhausted);
        }
        let sealed_len = seal(&self.cipher, counter, aad, buf, plaintext_len)?;
        self.counter += 1;
        Ok((counter, sealed_len))
    }
}

impl<C> fmt::Debug for Sealer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("counter", &self.counter)
            .finish_non_exhaustive()
    }
}

/// Opens one direction's stream records, which must arrive exactly in order.
#[derive(Debug)]
pub struct Opener {
    cipher: Cipher,
    expected: u64,
}

impl Opener {
    fn new(cipher: Cipher) -> Self {
        Self {
            cipher,
            expected: 0,
        }
    }

    /// The counter the next record must carry.
    pub fn expected_counter(&self) -> u64 {
        self.expected
    }

    /// Decrypts `sealed` (ciphertext then tag) in place and returns the plaintext length;
    /// the plaintext is `sealed[..len]`. A counter below the expected one is
    /// [`CryptoError::Replayed`]; above it, or a bad tag, is [`CryptoError::Tampered`].
    /// On failure the expected counter does not move.
    pub fn open_in_place(
        &mut self,
        counter: u64,
        aad: &[u8],
        sealed: &mut [u8],
    ) -> Result<usize, CryptoError> {
        if counter < self.expected {
            return Err(CryptoError::Replayed);
        }
        if counter > self.expected {
            return Err(CryptoError::Tampered);
        }
        let len = open(&self.cipher, counter, aad, sealed)?;
        self.expected = self.expected.saturating_add(1);
        Ok(len)
    }
}

impl Sealer<Datagrams> {
    /// Takes the next `n` counters at once (returns the first) for datagrams sealed with
    /// [`seal_at`](Self::seal_at), so that one batch can be sealed on several threads.
    /// Fails, taking none, if they would run past the last counter.
    pub fn reserve(&mut self, n: u64) -> Result<u64, CryptoError> {
        let first = self.counter;
        // The last counter taken is end - 1, at most COUNTER_MAX (= u64::MAX - 1) exactly
        // when the sum does not overflow.
        let end = first.checked_add(n).ok_or(CryptoError::CounterExhausted)?;
        self.counter = end;
        Ok(first)
    }

    /// Seals like [`seal_in_place`](Self::seal_in_place) with a counter taken by
    /// [`reserve`](Self::reserve) (each used once); returns the sealed length. Takes
    /// `&self`: the datagrams of one batch may be sealed in parallel.
    pub fn seal_at(
        &self,
        counter: u64,
        aad: &[u8],
        buf: &mut [u8],
        plaintext_len: usize,
    ) -> Result<usize, CryptoError> {
        if counter >= self.counter {
            // Not reserved: sealing it could reuse a nonce later.
            return Err(CryptoError::CounterExhausted);
        }
        seal(&self.cipher, counter, aad, buf, plaintext_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::ChaChaKeyRng;

    fn psk(pw: &[u8]) -> Option<Psk> {
        Some(Psk::from_password(pw))
    }

    /// Both ends of one exchange.
    fn pair(psk_a: Option<Psk>, psk_b: Option<Psk>) -> (SessionKeys, SessionKeys) {
        let mut rng = ChaChaKeyRng::from_seed([42; 32]);
        let a = Handshake::start(&mut rng, psk_a.as_ref());
        let b = Handshake::start(&mut rng, psk_b.as_ref());
        let (pa, pb) = (a.public_bytes(), b.public_bytes());
        (a.finish(pb, true).unwrap(), b.finish(pa, false).unwrap())
    }

    /// A sealed record: its counter, the buffer, the sealed length.
    type Record = (u64, [u8; 64], usize);

    /// `msg` sealed by `s` with AAD "hdr".
    fn seal_msg<C>(s: &mut Sealer<C>, msg: &[u8]) -> Record {
        let mut buf = [0u8; 64];
        buf[..msg.len()].copy_from_slice(msg);
        let (c, n) = s.seal_in_place(b"hdr", &mut buf, msg.len()).unwrap();
        (c, buf, n)
    }

    /// Opens a copy of `record` with `o` (AAD "hdr"): the plaintext.
    fn open_copy(o: &mut Opener, record: Record) -> Result<alloc::vec::Vec<u8>, CryptoError> {
        let (c, mut buf, n) = record;
        let len = o.open_in_place(c, b"hdr", &mut buf[..n])?;
        Ok(buf[..len].to_vec())
    }

    #[test]
    fn reserved_counters_seal_out_of_order_and_open_each_once() {
        let (mut a, mut b) = pair(None, None);
        let s = &mut a.datagram_sealer;
        assert_eq!(s.reserve(3), Ok(0));
        assert_eq!(s.next_counter(), 3);
        let mut bufs = [[0u8; 32]; 3];
        // Sealed in any order (as helper threads do), each with its own counter.
        for i in [2usize, 0, 1] {
            bufs[i][..4].copy_from_slice(b"data");
            assert_eq!(
                s.seal_at(i as u64, b"hdr", &mut bufs[i], 4),
                Ok(4 + TAG_LEN_BYTES)
            );
        }
        let mut spare = [0u8; 32];
        assert_eq!(
            s.seal_at(3, b"hdr", &mut spare, 4),
            Err(CryptoError::CounterExhausted),
            "a counter not reserved must not be used"
        );
        let o = &mut b.datagram_opener;
        for i in [1usize, 2, 0] {
            let mut copy = bufs[i];
            let fresh = o.check(i as u64).unwrap();
            let opened = o
                .open(fresh, b"hdr", &mut copy[..4 + TAG_LEN_BYTES])
                .unwrap();
            assert_eq!(o.record(opened), Ok(4));
            assert_eq!(&copy[..4], b"data");
            assert_eq!(o.check(i as u64), Err(CryptoError::Replayed));
        }
        let mut c = bufs[0];
        assert_eq!(
            o.open_in_place(0, b"hdr", &mut c[..4 + TAG_LEN_BYTES]),
            Err(CryptoError::Replayed)
        );
        // Reserving past the last counter takes nothing.
        let mut near_end = DatagramSealer {
            counter: COUNTER_MAX - 1,
            ..Sealer::new(key_for_test())
        };
        assert_eq!(near_end.reserve(3), Err(CryptoError::CounterExhausted));
        assert_eq!(near_end.reserve(2), Ok(COUNTER_MAX - 1));
        assert_eq!(near_end.reserve(1), Err(CryptoError::CounterExhausted));
    }

    fn key_for_test() -> Cipher {
        Cipher::new(&[9u8; KEY_LEN_BYTES])
    }

    #[test]
    fn both_directions_roundtrip_with_equal_password() {
        let (mut a, mut b) = pair(psk(b"pw"), psk(b"pw"));
        let hello = seal_msg(&mut a.stream_sealer, b"hello");
        assert_eq!((hello.0, hello.2), (0, 5 + TAG_LEN_BYTES));
        assert_ne!(&hello.1[..5], b"hello", "sealing must encrypt");
        assert_eq!(open_copy(&mut b.stream_opener, hello).unwrap(), b"hello");
        let back = seal_msg(&mut b.stream_sealer, b"back");
        assert_eq!(open_copy(&mut a.stream_opener, back).unwrap(), b"back");
    }

    #[test]
    fn directions_and_channels_use_different_keys() {
        let (mut a, mut b) = pair(None, None);
        // A record sealed by A for B must not open as B's own direction or as a datagram.
        let record = seal_msg(&mut a.stream_sealer, b"x");
        assert_eq!(
            open_copy(&mut a.stream_opener, record),
            Err(CryptoError::Tampered)
        );
        let (c, mut copy, n) = record;
        let as_datagram = b.datagram_opener.open_in_place(c, b"hdr", &mut copy[..n]);
        assert_eq!(as_datagram, Err(CryptoError::Tampered));
        assert!(open_copy(&mut b.stream_opener, record).is_ok());
    }

    #[test]
    fn different_passwords_do_not_open() {
        let (mut a, mut b) = pair(psk(b"one"), psk(b"two"));
        let record = seal_msg(&mut a.stream_sealer, b"hi");
        assert_eq!(
            open_copy(&mut b.stream_opener, record),
            Err(CryptoError::Tampered)
        );
        assert_eq!(b.stream_opener.expected_counter(), 0);
    }

    #[test]
    fn stream_opener_is_strictly_in_order() {
        let (mut a, mut b) = pair(None, None);
        let zero = seal_msg(&mut a.stream_sealer, b"zero");
        let one = seal_msg(&mut a.stream_sealer, b"one");
        let o = &mut b.stream_opener;
        assert_eq!(open_copy(o, one), Err(CryptoError::Tampered));
        assert_eq!(open_copy(o, zero).unwrap(), b"zero");
        assert_eq!(open_copy(o, zero), Err(CryptoError::Replayed));
        // Wrong AAD fails; then the right one still opens (state untouched by failure).
        let (c, mut x, n) = one;
        assert_eq!(
            o.open_in_place(c, b"HDR", &mut x[..n]),
            Err(CryptoError::Tampered)
        );
        assert_eq!(open_copy(o, one).unwrap(), b"one");
    }

    #[test]
    fn datagrams_open_out_of_order_once() {
        let (mut a, mut b) = pair(None, None);
        let mut sealed = alloc::vec::Vec::new();
        for i in 0..3u8 {
            let mut buf = [i; 1 + TAG_LEN_BYTES];
            let (c, n) = a.datagram_sealer.seal_in_place(b"h", &mut buf, 1).unwrap();
            sealed.push((c, buf, n));
        }
        for &i in &[2usize, 0, 1] {
            let (c, mut buf, n) = sealed[i];
            let len = b
                .datagram_opener
                .open_in_place(c, b"h", &mut buf[..n])
                .unwrap();
            assert_eq!(buf[..len], [i as u8]);
        }
        let (c, mut buf, n) = sealed[1];
        assert_eq!(
            b.datagram_opener.open_in_place(c, b"h", &mut buf[..n]),
            Err(CryptoError::Replayed)
        );
        // A forged record with a fresh counter fails and does not burn the counter.
        let mut forged = [0u8; 1 + TAG_LEN_BYTES];
        assert_eq!(
            b.datagram_opener.open_in_place(7, b"h", &mut forged),
            Err(CryptoError::Tampered)
        );
        assert!(b.datagram_opener.check(7).is_ok());
    }

    #[test]
    fn low_order_public_key_is_refused() {
        let mut rng = ChaChaKeyRng::from_seed([1; 32]);
        let a = KeyPair::generate(&mut rng);
        assert_eq!(
            SessionKeys::derive(&a, [0u8; 32], true).err(),
            Some(CryptoError::BadPublicKey)
        );
    }

    #[test]
    fn spake2_element_off_the_curve_is_refused() {
        let mut rng = ChaChaKeyRng::from_seed([1; 32]);
        let a = Handshake::start(&mut rng, psk(b"pw").as_ref());
        assert!(a.with_password());
        // y = 2 with the sign bit set has no x on edwards25519: not a point.
        let mut not_a_point = [0u8; 32];
        not_a_point[0] = 2;
        not_a_point[31] = 0x80;
        assert_eq!(
            a.finish(not_a_point, true).err(),
            Some(CryptoError::BadPublicKey)
        );
    }

    /// The key schedule against vectors computed outside weft (Python: HKDF-SHA256 by
    /// hand with hmac, ChaCha20-Poly1305 from `cryptography`): salt "weft v2 x25519",
    /// secret 0x11 x 32, "weft" sealed with AAD "hdr" at counter 0.
    #[test]
    fn key_schedule_known_answers() {
        let mut i = SessionKeys::from_secret(NO_PASSWORD_SALT, &[0x11; 32], true, None).unwrap();
        let mut r = SessionKeys::from_secret(NO_PASSWORD_SALT, &[0x11; 32], false, None).unwrap();
        let hex = |b: &[u8]| {
            b.iter()
                .map(|x| alloc::format!("{x:02x}"))
                .collect::<alloc::string::String>()
        };
        // The initiator's stream and datagram records, then the responder's.
        let sealed = [
            seal_msg(&mut i.stream_sealer, b"weft"),
            seal_msg(&mut i.datagram_sealer, b"weft"),
            seal_msg(&mut r.stream_sealer, b"weft"),
            seal_msg(&mut r.datagram_sealer, b"weft"),
        ];
        let want = [
            "2609cfeb06085fcc484edc75d1ff3b68394fc5b5",
            "cac069fd74dc8a4fb8f09c4ef7b913d65b0f40c4",
            "623661644f397811f4b0d3dfc5e8b119072fcedc",
            "9c716eb1f3d356f43532db2e57cc4d93f509ca46",
        ];
        for (k, ((_, buf, n), want)) in sealed.iter().zip(want).enumerate() {
            assert_eq!(hex(&buf[..*n]), want, "record {k}");
        }
    }

    fn hex(b: &[u8]) -> alloc::string::String {
        b.iter().map(|x| alloc::format!("{x:02x}")).collect()
    }

    /// Protocol v3's datagram keys against vectors computed outside weft (Python, as
    /// above; info = v3 label, the suite's bit, the transcript 0x22 x 32): "weft" sealed
    /// with AAD "hdr" at counter 0, initiator then responder. The stream keys stay v2's.
    #[test]
    fn bound_datagram_keys_known_answers() {
        let mut cases = alloc::vec![(
            CipherSuite::ChaCha20Poly1305,
            [
                "4c2f6a6253b4919b955548d96c7203da8fdf6a10",
                "33a57dd9a735748fa7b0090ccfcaca2934c5182f",
            ],
        )];
        if cfg!(feature = "fast-aead") {
            cases.push((
                CipherSuite::Aes256Gcm,
                [
                    "7eefaa7ff204746bcee4e68236d63299d2f8f920",
                    "2d2af680e83ceaabec6bb7434403bce0ca508135",
                ],
            ));
        }
        for (suite, want) in cases {
            let binding = DatagramBinding {
                suite,
                transcript: [0x22; 32],
            };
            let keys = |init| {
                SessionKeys::from_secret(NO_PASSWORD_SALT, &[0x11; 32], init, Some(&binding))
                    .unwrap()
            };
            let (mut i, mut r) = (keys(true), keys(false));
            assert_eq!(i.datagram_sealer.suite(), suite);
            assert_eq!(i.stream_sealer.suite(), CipherSuite::ChaCha20Poly1305);
            let (_, buf, n) = seal_msg(&mut i.datagram_sealer, b"weft");
            assert_eq!(hex(&buf[..n]), want[0], "{suite} initiator");
            let (_, buf, n) = seal_msg(&mut r.datagram_sealer, b"weft");
            assert_eq!(hex(&buf[..n]), want[1], "{suite} responder");
            let (_, buf, n) = seal_msg(&mut i.stream_sealer, b"weft");
            assert_eq!(hex(&buf[..n]), "2609cfeb06085fcc484edc75d1ff3b68394fc5b5");
        }
    }

    /// Both ends of a bound exchange with `binding_a` and `binding_b` (equal, unless a
    /// hello was altered).
    fn bound_pair(
        psk: Option<Psk>,
        binding_a: DatagramBinding,
        binding_b: DatagramBinding,
    ) -> (SessionKeys, SessionKeys) {
        let mut rng = ChaChaKeyRng::from_seed([5; 32]);
        let a = Handshake::start(&mut rng, psk.as_ref());
        let b = Handshake::start(&mut rng, psk.as_ref());
        let (pa, pb) = (a.public_bytes(), b.public_bytes());
        (
            a.finish_bound(pb, true, &binding_a).unwrap(),
            b.finish_bound(pa, false, &binding_b).unwrap(),
        )
    }

    /// A datagram from `a` to `b` opens.
    fn datagram_opens(a: &mut SessionKeys, b: &mut SessionKeys) -> bool {
        let mut buf = [0u8; 64];
        buf[..5].copy_from_slice(b"hello");
        let (c, n) = a.datagram_sealer.seal_in_place(b"h", &mut buf, 5).unwrap();
        b.datagram_opener
            .open_in_place(c, b"h", &mut buf[..n])
            .is_ok_and(|len| &buf[..len] == b"hello")
    }

    #[test]
    fn bound_datagram_keys_match_only_for_the_same_hellos() {
        let suites = if cfg!(feature = "fast-aead") {
            &[CipherSuite::ChaCha20Poly1305, CipherSuite::Aes256Gcm][..]
        } else {
            &[CipherSuite::ChaCha20Poly1305][..]
        };
        for &suite in suites {
            for pw in [None, psk(b"pw")] {
                let binding = DatagramBinding {
                    suite,
                    transcript: [7; 32],
                };
                let (mut a, mut b) = bound_pair(pw.clone(), binding, binding);
                assert!(datagram_opens(&mut a, &mut b), "{suite}");
                assert!(datagram_opens(&mut b, &mut a), "{suite}");
                assert_eq!(b.datagram_opener.suite(), suite);
                // One side saw other hellos: the stream keys still agree (so the confirm
                // opens and reports the downgrade), the datagram keys do not.
                let mut other = binding;
                other.transcript[0] ^= 1;
                let (mut a, mut b) = bound_pair(pw.clone(), binding, other);
                assert!(!datagram_opens(&mut a, &mut b), "{suite}");
                let record = seal_msg(&mut a.stream_sealer, b"confirm");
                assert!(open_copy(&mut b.stream_opener, record).is_ok());
            }
        }
        if cfg!(feature = "fast-aead") {
            // The same transcript under another suite: different keys and algorithm.
            let aes = DatagramBinding {
                suite: CipherSuite::Aes256Gcm,
                transcript: [7; 32],
            };
            let chacha = DatagramBinding {
                suite: CipherSuite::ChaCha20Poly1305,
                ..aes
            };
            let (mut a, mut b) = bound_pair(None, aes, chacha);
            assert!(!datagram_opens(&mut a, &mut b));
        }
    }

    #[test]
    fn spake2_pair_agrees_only_with_its_own_run() {
        let (mut a, mut b) = pair(psk(b"pw"), psk(b"pw"));
        let record = seal_msg(&mut a.stream_sealer, b"hi");
        assert_eq!(open_copy(&mut b.stream_opener, record).unwrap(), b"hi");
        // Same password, but y finishes with an element from another run (z's): a replayed
        // or spliced element gives different keys.
        let mut rng = ChaChaKeyRng::from_seed([3; 32]);
        let x = Handshake::start(&mut rng, psk(b"pw").as_ref());
        let y = Handshake::start(&mut rng, psk(b"pw").as_ref());
        let z = Handshake::start(&mut rng, psk(b"pw").as_ref());
        let (py, pz) = (y.public_bytes(), z.public_bytes());
        let mut kx = x.finish(py, true).unwrap();
        let mut ky = y.finish(pz, false).unwrap();
        let spliced = seal_msg(&mut kx.stream_sealer, b"hi");
        assert_eq!(
            open_copy(&mut ky.stream_opener, spliced),
            Err(CryptoError::Tampered)
        );
    }

    #[test]
    fn short_buffers_and_short_records_are_errors() {
        let (mut a, mut b) = pair(None, None);
        let mut buf = [0u8; 10];
        assert_eq!(
            a.stream_sealer.seal_in_place(b"", &mut buf, 5),
            Err(CryptoError::BufferTooSmall)
        );
        assert_eq!(a.stream_sealer.next_counter(), 0);
        let mut short = [0u8; TAG_LEN_BYTES - 1];
        assert_eq!(
            b.stream_opener.open_in_place(0, b"", &mut short),
            Err(CryptoError::Tampered)
        );
    }
}
