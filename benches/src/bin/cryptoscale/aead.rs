//! The AEAD implementations side by side: seal and open of one buffer, per core, for the
//! sizes the sleeve sees (64: a small packet; 1400: a full segment at weft's MTU; 9000: a
//! jumbo segment). Each implementation is the one a build would use, with its own runtime
//! CPU dispatch (ring's assembly for AES-NI/PCLMULQDQ/AVX2/AVX-512, RustCrypto's
//! cpufeatures-detected AVX2 backends).
//!
//! Sealing is timed alone; a seal-then-open loop is timed too, and opening is the
//! difference, so no copy of a template sits in the opened path.

use std::hint::black_box;
use std::time::{Duration, Instant};

use chacha20poly1305::aead::generic_array::GenericArray;
use chacha20poly1305::{AeadInPlace, ChaCha20Poly1305, KeyInit};
use ring::aead::{AES_256_GCM, Aad, Algorithm, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

/// The buffer sizes measured, in bytes.
pub(crate) const SIZES_BYTES: [usize; 3] = [64, 1400, 9000];
const AAD_LEN_BYTES: usize = 16;

/// One implementation: seals `buf` in place and returns the tag, opens it back.
trait Aead {
    fn seal(&self, nonce: u64, aad: &[u8], buf: &mut [u8]) -> [u8; 16];
    fn open(&self, nonce: u64, aad: &[u8], buf: &mut [u8], tag: &[u8; 16]) -> bool;
}

fn nonce_bytes(counter: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    n
}

struct RustCrypto(ChaCha20Poly1305);

impl Aead for RustCrypto {
    fn seal(&self, nonce: u64, aad: &[u8], buf: &mut [u8]) -> [u8; 16] {
        let n = nonce_bytes(nonce);
        let tag = self
            .0
            .encrypt_in_place_detached(GenericArray::from_slice(&n), aad, buf)
            .expect("buffer within the AEAD's limit");
        tag.into()
    }

    fn open(&self, nonce: u64, aad: &[u8], buf: &mut [u8], tag: &[u8; 16]) -> bool {
        let n = nonce_bytes(nonce);
        self.0
            .decrypt_in_place_detached(
                GenericArray::from_slice(&n),
                aad,
                buf,
                GenericArray::from_slice(tag),
            )
            .is_ok()
    }
}

struct Ring(LessSafeKey);

impl Ring {
    fn new(alg: &'static Algorithm, key: &[u8; 32]) -> Self {
        Self(LessSafeKey::new(
            UnboundKey::new(alg, key).expect("a 32-byte key"),
        ))
    }
}

impl Aead for Ring {
    fn seal(&self, nonce: u64, aad: &[u8], buf: &mut [u8]) -> [u8; 16] {
        let n = Nonce::assume_unique_for_key(nonce_bytes(nonce));
        let tag = self
            .0
            .seal_in_place_separate_tag(n, Aad::from(aad), buf)
            .expect("buffer within the AEAD's limit");
        let mut out = [0u8; 16];
        out.copy_from_slice(tag.as_ref());
        out
    }

    fn open(&self, nonce: u64, aad: &[u8], buf: &mut [u8], tag: &[u8; 16]) -> bool {
        let n = Nonce::assume_unique_for_key(nonce_bytes(nonce));
        self.0
            .open_in_place_separate_tag(n, Aad::from(aad), ring::aead::Tag::from(*tag), buf, 0..)
            .is_ok()
    }
}

/// Seal and open rates of one implementation at one size, Gbit/s of plaintext.
pub(crate) struct Rates {
    pub(crate) seal_gbps: f64,
    pub(crate) open_gbps: f64,
}

/// Runs `f` in batches until `secs` passed; returns calls per second.
fn rate(secs: f64, mut f: impl FnMut()) -> f64 {
    const BATCH: usize = 256;
    let limit = Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut calls = 0usize;
    while start.elapsed() < limit {
        for _ in 0..BATCH {
            f();
        }
        calls += BATCH;
    }
    calls as f64 / start.elapsed().as_secs_f64()
}

fn measure(aead: &dyn Aead, size: usize, secs: f64) -> Rates {
    let aad = [0x5a; AAD_LEN_BYTES];
    let mut buf = vec![0xa5u8; size];
    let mut counter = 0u64;
    let seals = rate(secs / 2.0, || {
        counter += 1;
        black_box(aead.seal(counter, &aad, black_box(&mut buf)));
    });
    let mut ok = true;
    let round_trips = rate(secs / 2.0, || {
        counter += 1;
        let tag = aead.seal(counter, &aad, black_box(&mut buf));
        ok &= aead.open(counter, &aad, black_box(&mut buf), &tag);
    });
    assert!(ok, "an opened buffer failed to authenticate");
    // Per call: seal takes 1/seals, seal + open 1/round_trips, so open the difference.
    let open_secs = (1.0 / round_trips - 1.0 / seals).max(f64::MIN_POSITIVE);
    let bits = (size * 8) as f64;
    Rates {
        seal_gbps: seals * bits / 1e9,
        open_gbps: bits / open_secs / 1e9,
    }
}

/// Every implementation (its name) measured at every size, `secs` per size.
pub(crate) fn run(secs: f64) -> Vec<(&'static str, Vec<Rates>)> {
    let key = [0x42u8; 32];
    let impls: [(&str, Box<dyn Aead>); 3] = [
        (
            "chacha20poly1305 crate (RustCrypto)",
            Box::new(RustCrypto(ChaCha20Poly1305::new(GenericArray::from_slice(
                &key,
            )))),
        ),
        (
            "ring ChaCha20-Poly1305",
            Box::new(Ring::new(&CHACHA20_POLY1305, &key)),
        ),
        ("ring AES-256-GCM", Box::new(Ring::new(&AES_256_GCM, &key))),
    ];
    impls
        .into_iter()
        .map(|(name, a)| {
            let rates = SIZES_BYTES
                .iter()
                .map(|&size| measure(a.as_ref(), size, secs))
                .collect();
            (name, rates)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The three agree with each other where they implement the same cipher, and each
    /// opens what it sealed (so the timed loops measure working code).
    #[test]
    fn implementations_interoperate_and_round_trip() {
        let key = [7u8; 32];
        let rc = RustCrypto(ChaCha20Poly1305::new(GenericArray::from_slice(&key)));
        let rch = Ring::new(&CHACHA20_POLY1305, &key);
        let aes = Ring::new(&AES_256_GCM, &key);
        let mut a = vec![1u8; 1400];
        let mut b = a.clone();
        let (ta, tb) = (rc.seal(3, b"x", &mut a), rch.seal(3, b"x", &mut b));
        assert_eq!((&a, ta), (&b, tb));
        assert!(rch.open(3, b"x", &mut a, &ta));
        assert_eq!(a, vec![1u8; 1400]);
        let mut c = vec![1u8; 64];
        let tc = aes.seal(9, b"", &mut c);
        assert_ne!(c, vec![1u8; 64]);
        assert!(!aes.open(8, b"", &mut c.clone(), &tc), "wrong nonce");
        assert!(aes.open(9, b"", &mut c, &tc));
        assert_eq!(c, vec![1u8; 64]);
    }
}
