//! Where key material comes from: a cryptographically secure generator the caller hands in.
//!
//! Ephemeral X25519 secrets and SPAKE2 scalars are drawn from a [`KeyRng`] and from nothing
//! else; the cheap [`crate::rng::Rng`] (peer uid, jitter, gossip targets) never touches a
//! key. The host passes the OS generator; the simulator and tests pass a [`ChaChaKeyRng`]
//! seeded from their world seed, so runs stay reproducible without the two streams ever
//! being one.

use alloc::boxed::Box;
use chacha20::ChaCha20;
use chacha20::cipher::{KeyIvInit, StreamCipher};
use core::fmt;
pub use rand_core::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

/// A cryptographically secure generator for key material (`RngCore + CryptoRng + Send`).
pub trait KeyRng: RngCore + CryptoRng + Send {}

impl<T: RngCore + CryptoRng + Send> KeyRng for T {}

/// The key generator a [`crate::router::Router`] owns.
pub type BoxedKeyRng = Box<dyn KeyRng>;

/// Most bytes produced per keystream pass in [`ChaChaKeyRng::fill_bytes`].
const CHUNK_LEN_BYTES: usize = 256;

/// ChaCha20 keystream under a 256-bit seed, with fast key erasure: every draw first takes
/// a fresh key from the keystream and forgets the old one, so the state held after a draw
/// cannot give back what was drawn before it. For the simulator and tests (seeded) and for
/// hosts that prefer one OS read at start over one per connection.
pub struct ChaChaKeyRng {
    key: [u8; 32],
}

impl ChaChaKeyRng {
    /// A generator whose whole output is determined by the 256-bit `seed`. The seed must
    /// be secret and unpredictable wherever the keys protect anything real.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self { key: seed }
    }

    /// A generator for deterministic runs (simulator, tests), derived from a 64-bit world
    /// seed through SHA-256 with its own label, so it shares nothing with the
    /// [`crate::rng::Rng`] made from the same number. Not for real keys: 64 bits of seed.
    pub fn for_simulation(seed: u64) -> Self {
        let mut h = Sha256::new();
        h.update(b"weft simulation key stream v1");
        h.update(seed.to_le_bytes());
        Self::from_seed(h.finalize().into())
    }

    fn draw(&mut self, out: &mut [u8]) {
        let mut block = [0u8; 32 + CHUNK_LEN_BYTES];
        let want = out.len().min(CHUNK_LEN_BYTES);
        let stream = &mut block[..32 + want];
        ChaCha20::new(&self.key.into(), &[0u8; 12].into()).apply_keystream(stream);
        self.key.copy_from_slice(&stream[..32]);
        out[..want].copy_from_slice(&stream[32..]);
        block.zeroize();
    }
}

impl RngCore for ChaChaKeyRng {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.draw(&mut b);
        u32::from_le_bytes(b)
    }

    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.draw(&mut b);
        u64::from_le_bytes(b)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(CHUNK_LEN_BYTES) {
            self.draw(chunk);
        }
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for ChaChaKeyRng {}

impl Drop for ChaChaKeyRng {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl fmt::Debug for ChaChaKeyRng {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChaChaKeyRng(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_other_seed_differs() {
        let draw = |seed: [u8; 32]| {
            let mut r = ChaChaKeyRng::from_seed(seed);
            let mut out = [0u8; 600];
            r.fill_bytes(&mut out);
            (out, r.next_u64())
        };
        assert_eq!(draw([1; 32]), draw([1; 32]));
        assert_ne!(draw([1; 32]).0, draw([2; 32]).0);
    }

    #[test]
    fn output_is_the_chacha20_keystream_after_the_next_key() {
        // First draw of 16 bytes: keystream bytes 32..48 under the seed (RFC 8439 block
        // function, nonce 0, counter 0), so the generator is ChaCha20 and nothing weaker.
        let seed = [7u8; 32];
        let mut expect = [0u8; 48];
        ChaCha20::new(&seed.into(), &[0u8; 12].into()).apply_keystream(&mut expect);
        let mut r = ChaChaKeyRng::from_seed(seed);
        let mut got = [0u8; 16];
        r.fill_bytes(&mut got);
        assert_eq!(got, expect[32..]);
        // ... and the state moved on to the first 32 keystream bytes: the seed is gone.
        assert_eq!(r.key, expect[..32]);
    }

    #[test]
    fn simulation_stream_is_not_the_cheap_rng_stream() {
        let mut k = ChaChaKeyRng::for_simulation(5);
        let mut c = crate::rng::Rng::from_seed(5);
        let kv: [u64; 4] = core::array::from_fn(|_| k.next_u64());
        let cv: [u64; 4] = core::array::from_fn(|_| c.next_u64());
        assert_ne!(kv, cv);
        assert_ne!(kv, {
            let mut k6 = ChaChaKeyRng::for_simulation(6);
            core::array::from_fn::<u64, 4, _>(|_| k6.next_u64())
        });
    }
}
