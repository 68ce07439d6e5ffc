//! Connection crypto: the key exchanges (X25519, or SPAKE2 with a password), HKDF-SHA256
//! session keys, AEAD sealing into the caller's buffer (ChaCha20-Poly1305, or AES-256-GCM
//! for sleeve datagrams where both ends offer it, see [`CipherSuites`]), and the sliding
//! replay window for sleeve datagrams.
//!
//! What it does: turns a [`Handshake`] (started from a [`KeyRng`] and an optional [`Psk`])
//! and the peer's hello into four directional keys (stream and datagram, each way), and
//! seals/opens records with a counter nonce. What it does not do: framing (see
//! [`crate::wire::frame`] and [`crate::wire::datagram`]), deciding when a connection is up
//! (see [`crate::conn`]), or reading the OS RNG: key material comes from the [`KeyRng`] the
//! caller passes in, never from [`crate::rng::Rng`].
//!
//! Without a password the control stream is sealed with keys from an unauthenticated
//! X25519 exchange: a passive listener cannot read it, an active man in the middle can, and
//! anyone may connect. With a password the exchange is SPAKE2: only a peer that knows the
//! password gets the keys, a recorded handshake gives no way to test guesses offline, and an
//! active attacker learns whether one guess was right per connection it makes.

mod aead;
mod keyrng;
mod opener;
mod replay;
mod session;
mod shared_window;
mod suite;

pub use keyrng::{BoxedKeyRng, ChaChaKeyRng, CryptoRng, KeyRng, RngCore};
pub use opener::{DatagramOpener, Fresh, OPENED_SLOTS_MAX, Opened, OpenedSlots};
pub use replay::{REPLAY_WINDOW_LEN_COUNTERS, ReplayWindow};
pub use session::{
    DatagramBinding, DatagramSealer, Handshake, KeyPair, Opener, Sealer, SessionKeys, StreamRecords,
};
pub use shared_window::SharedReplayWindow;
pub use suite::{CipherSuite, CipherSuites, UnknownCipher};

use core::fmt;
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Length of a symmetric key, an X25519 key and a pre-shared key.
pub const KEY_LEN_BYTES: usize = 32;
/// Length of the tag (Poly1305 or GHASH) appended to every sealed record.
pub const TAG_LEN_BYTES: usize = 16;
/// Length of a SHA-256 transcript hash.
pub const HASH_LEN_BYTES: usize = 32;
/// The highest counter a sealer will use; one more and the session must be rekeyed
/// (reconnected). Far beyond any real connection's lifetime.
pub const COUNTER_MAX: u64 = u64::MAX - 1;

/// Salt for [`password_key`]: fixed, so the same password gives the same key everywhere.
const PASSWORD_SALT: &[u8] = b"weft password v1";

/// Why a crypto operation or check failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CryptoError {
    /// The peer's confirm record did not open: the two sides hold different passwords.
    WrongPassword,
    /// One side has a password and the other has none (seen from the hello flag).
    EncryptionMismatch,
    /// A sealed record failed authentication after the session was confirmed, or arrived
    /// with a counter ahead of the expected one.
    Tampered,
    /// A record with a counter already seen (or too old for the replay window).
    Replayed,
    /// The peer's transcript hash differs from ours: someone altered a hello in flight.
    Downgrade,
    /// The two version ranges do not overlap.
    VersionMismatch,
    /// The peer's public key is a low-order point (the shared secret would be all zero).
    BadPublicKey,
    /// The sending counter is used up; the connection must be re-established.
    CounterExhausted,
    /// The caller's buffer cannot hold the plaintext plus the tag.
    BufferTooSmall,
    /// The two hellos offer no cipher in common (one side pins one the other lacks).
    NoCommonCipher,
}

impl fmt::Display for CryptoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::WrongPassword => {
                "wrong password: the peer proved a different secret; give both peers the same --password (or --key-file)"
            }
            Self::EncryptionMismatch => {
                "encryption mismatch: one peer has a password and the other none; set the same --password on both"
            }
            Self::Tampered => "a sealed message failed authentication (tampered or corrupted)",
            Self::Replayed => "a sealed message was replayed (counter already seen)",
            Self::Downgrade => {
                "handshake transcript mismatch: a hello was altered in flight (downgrade attempt?)"
            }
            Self::VersionMismatch => "no common protocol version with the peer; upgrade one side",
            Self::BadPublicKey => "the peer sent an invalid (low-order) public key",
            Self::CounterExhausted => "message counter exhausted; reconnect to rekey",
            Self::BufferTooSmall => "buffer too small for the sealed message",
            Self::NoCommonCipher => {
                "no cipher in common with the peer: one side pins --cipher to one the other does not offer; use --cipher auto"
            }
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for CryptoError {}

/// A 32-byte pre-shared key from a user's password: HKDF-SHA256 extract with a fixed
/// weft salt. Call once at startup and keep the result, not the password.
pub fn password_key(password: &[u8]) -> [u8; KEY_LEN_BYTES] {
    let (prk, _) = Hkdf::<Sha256>::extract(Some(PASSWORD_SALT), password);
    prk.into()
}

/// The network's shared secret, from a password or a key file: 32 bytes that are zeroed
/// when dropped and never printed. SPAKE2 runs on it; the password itself is not kept.
#[derive(Clone, PartialEq, Eq)]
pub struct Psk(Zeroizing<[u8; KEY_LEN_BYTES]>);

impl Psk {
    /// From a password ([`password_key`]); the caller should wipe its copy of `password`.
    pub fn from_password(password: &[u8]) -> Self {
        Self(Zeroizing::new(password_key(password)))
    }

    /// From the 32 random bytes of a key file (`weft keygen`), through the same KDF.
    pub fn from_key(key: &[u8; KEY_LEN_BYTES]) -> Self {
        Self::from_password(key)
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0[..]
    }
}

impl fmt::Debug for Psk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Psk(..)")
    }
}

/// The transcript hash both sides put in their confirm: SHA-256 over the initiator's
/// hello bytes followed by the responder's, exactly as sent on the wire.
pub fn transcript_hash(initiator_hello: &[u8], responder_hello: &[u8]) -> [u8; HASH_LEN_BYTES] {
    let mut h = Sha256::new();
    h.update(initiator_hello);
    h.update(responder_hello);
    h.finalize().into()
}

/// The 96-bit AEAD nonce for `counter`: 4 zero bytes then the counter
/// big-endian. Keys are per direction, so a nonce never repeats under one key.
fn nonce_bytes(counter: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_key_is_deterministic_and_distinguishes_passwords() {
        let a = password_key(b"secret");
        assert_eq!(a, password_key(b"secret"));
        assert_ne!(a, password_key(b"secreT"));
        assert_ne!(a, password_key(b""));
        assert_ne!(a, [0u8; 32]);
    }

    #[test]
    fn transcript_hash_is_order_sensitive() {
        assert_ne!(transcript_hash(b"a", b"b"), transcript_hash(b"b", b"a"));
        assert_eq!(transcript_hash(b"a", b"b"), transcript_hash(b"a", b"b"));
    }

    #[test]
    fn nonce_puts_counter_in_last_eight_bytes() {
        assert_eq!(nonce_bytes(1), [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(nonce_bytes(u64::MAX)[..4], [0u8; 4]);
    }
}
