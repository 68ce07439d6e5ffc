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
use alloc::sync::Arc;
use core::fmt;
use core::marker::PhantomData;
use core::sync::atomic::{AtomicU64, Ordering};
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
            datagram_sealer: DatagramSealer::new(datagram_key(d_out, d_out_v3)?),
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
/// `Sealer<StreamRecords>`) a stream's records; sleeve datagrams have [`DatagramSealer`].
pub struct Sealer<C = StreamRecords> {
    cipher: Cipher,
    counter: u64,
    channel: PhantomData<C>,
}

/// What a [`Sealer`] seals: stream records, which the peer opens strictly in order.
#[derive(Debug)]
pub struct StreamRecords;

/// Seals sleeve datagrams to one peer, which opens them in any order, each counter once
/// (so counters can be taken ahead, for a batch: [`reserve`](Self::reserve) and
/// [`seal_at`](Self::seal_at)).
///
/// Clones share the key and the counter: the queues of a multi-queue sleeve each hold one,
/// and every counter (so every nonce under the key) is handed out once over all of them.
#[derive(Clone)]
pub struct DatagramSealer(Arc<DatagramSealerShared>);

struct DatagramSealerShared {
    cipher: Cipher,
    /// The next counter not yet handed out.
    next: AtomicU64,
}

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

impl DatagramSealer {
    pub(super) fn new(cipher: Cipher) -> Self {
        Self::starting_at(cipher, 0)
    }

    fn starting_at(cipher: Cipher, next: u64) -> Self {
        Self(Arc::new(DatagramSealerShared {
            cipher,
            next: AtomicU64::new(next),
        }))
    }

    /// The AEAD this sealer uses.
    pub fn suite(&self) -> CipherSuite {
        self.0.cipher.suite()
    }

    /// The counter the next [`reserve`](Self::reserve) would hand out (any clone's).
    pub fn next_counter(&self) -> u64 {
        self.0.next.load(Ordering::Relaxed)
    }

    /// Takes the next `n` counters at once (returns the first) for datagrams sealed with
    /// [`seal_at`](Self::seal_at), so that one batch can be sealed on several threads.
    /// Fails, taking none, if they would run past the last counter. Clones take disjoint
    /// ranges.
    pub fn reserve(&self, n: u64) -> Result<u64, CryptoError> {
        // The last counter taken is end - 1, at most COUNTER_MAX (= u64::MAX - 1) exactly
        // when the sum does not overflow.
        self.0
            .next
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| c.checked_add(n))
            .map_err(|_| CryptoError::CounterExhausted)
    }

    /// Seals like [`Sealer::seal_in_place`] with a counter taken by
    /// [`reserve`](Self::reserve) (each used once); returns the sealed length. Takes
    /// `&self`: the datagrams of one batch may be sealed in parallel.
    pub fn seal_at(
        &self,
        counter: u64,
        aad: &[u8],
        buf: &mut [u8],
        plaintext_len: usize,
    ) -> Result<usize, CryptoError> {
        if counter >= self.next_counter() {
            // Not reserved: sealing it could reuse a nonce later.
            return Err(CryptoError::CounterExhausted);
        }
        seal(&self.0.cipher, counter, aad, buf, plaintext_len)
    }

    /// Takes one counter and seals `buf[..plaintext_len]` in place with it, the tag right
    /// after; returns the counter and the sealed length. Fails without using a counter if
    /// `buf` is too short or the counter is exhausted.
    pub fn seal_in_place(
        &self,
        aad: &[u8],
        buf: &mut [u8],
        plaintext_len: usize,
    ) -> Result<(u64, usize), CryptoError> {
        if plaintext_len.saturating_add(TAG_LEN_BYTES) > buf.len() {
            return Err(CryptoError::BufferTooSmall);
        }
        let counter = self.reserve(1)?;
        let sealed_len = seal(&self.0.cipher, counter, aad, buf, plaintext_len)?;
        Ok((counter, sealed_len))
    }

    #[cfg(test)]
    pub(super) fn near_end_for_test(cipher: Cipher, next: u64) -> Self {
        Self::starting_at(cipher, next)
    }
}

impl fmt::Debug for DatagramSealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatagramSealer")
            .field("counter", &self.next_counter())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
