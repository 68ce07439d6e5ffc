//! The AEAD primitives behind the sealers and openers: ChaCha20-Poly1305 (RFC 8439) and,
//! with the `fast-aead` feature, AES-256-GCM (NIST SP 800-38D).
//!
//! ChaCha20-Poly1305 has two implementations of the same algorithm: the pure-Rust
//! `chacha20poly1305` crate by default (no_std, no C toolchain), and with `fast-aead`
//! `ring`'s assembly, which seals about 3.5 times as many bytes per core on AVX2/AVX-512
//! machines. Both give identical bytes for the same key, nonce and input, so routers built
//! either way talk to each other (tested below by sealing with one and opening with the
//! other). AES-256-GCM is ring's alone (its AES-NI/PCLMULQDQ or ARMv8 code, chosen at run
//! time); a build without `fast-aead` never offers it ([`CipherSuites::supported`]).

use super::{CipherSuite, CryptoError, KEY_LEN_BYTES, TAG_LEN_BYTES};
use core::fmt;

/// A 96-bit nonce as the AEAD takes it.
pub(super) type NonceBytes = [u8; 12];

/// One direction's key, ready to seal or open.
pub(super) struct Cipher(imp::Key);

/// Shows the algorithm, never the key.
impl fmt::Debug for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cipher({})", self.suite())
    }
}

impl Cipher {
    /// A ChaCha20-Poly1305 key (every build has it).
    pub(super) fn new(key: &[u8; KEY_LEN_BYTES]) -> Self {
        Self(imp::Key::chacha(key))
    }

    /// A key for `suite`; [`CryptoError::NoCommonCipher`] for a suite this build cannot
    /// run (AES-256-GCM without `fast-aead`, which such a build never offers).
    pub(super) fn with_suite(
        suite: CipherSuite,
        key: &[u8; KEY_LEN_BYTES],
    ) -> Result<Self, CryptoError> {
        match suite {
            CipherSuite::ChaCha20Poly1305 => Ok(Self::new(key)),
            CipherSuite::Aes256Gcm => imp::Key::aes(key)
                .map(Self)
                .ok_or(CryptoError::NoCommonCipher),
        }
    }

    /// The algorithm this key is for.
    pub(super) fn suite(&self) -> CipherSuite {
        self.0.suite()
    }

    /// Encrypts `text` in place and returns the tag.
    pub(super) fn seal_detached(
        &self,
        nonce: &NonceBytes,
        aad: &[u8],
        text: &mut [u8],
    ) -> Result<[u8; TAG_LEN_BYTES], CryptoError> {
        self.0.seal(nonce, aad, text)
    }

    /// Checks `tag` and decrypts `text` in place; [`CryptoError::Tampered`] if it does not
    /// authenticate (then `text` is garbage and must not be used).
    pub(super) fn open_detached(
        &self,
        nonce: &NonceBytes,
        aad: &[u8],
        text: &mut [u8],
        tag: &[u8; TAG_LEN_BYTES],
    ) -> Result<(), CryptoError> {
        self.0.open(nonce, aad, text, tag)
    }
}

/// Without `fast-aead`: ChaCha20-Poly1305 from the pure-Rust crate, and no AES-GCM.
#[cfg(not(feature = "fast-aead"))]
mod imp {
    use super::{CipherSuite, KEY_LEN_BYTES};

    pub(super) struct Key(super::rustcrypto::Key);

    impl Key {
        pub(super) fn chacha(key: &[u8; KEY_LEN_BYTES]) -> Self {
            Self(super::rustcrypto::Key::new(key))
        }

        pub(super) fn aes(_key: &[u8; KEY_LEN_BYTES]) -> Option<Self> {
            None
        }

        pub(super) fn suite(&self) -> CipherSuite {
            CipherSuite::ChaCha20Poly1305
        }
    }

    impl core::ops::Deref for Key {
        type Target = super::rustcrypto::Key;

        fn deref(&self) -> &Self::Target {
            &self.0
        }
    }
}

#[cfg(feature = "fast-aead")]
use fast as imp;

#[cfg_attr(feature = "fast-aead", allow(dead_code))]
mod rustcrypto {
    use super::{CryptoError, KEY_LEN_BYTES, NonceBytes, TAG_LEN_BYTES};
    use chacha20poly1305::aead::generic_array::GenericArray;
    use chacha20poly1305::{AeadInPlace, ChaCha20Poly1305, KeyInit};

    pub(crate) struct Key(ChaCha20Poly1305);

    impl Key {
        pub(crate) fn new(key: &[u8; KEY_LEN_BYTES]) -> Self {
            Self(ChaCha20Poly1305::new(GenericArray::from_slice(key)))
        }

        pub(crate) fn seal(
            &self,
            nonce: &NonceBytes,
            aad: &[u8],
            text: &mut [u8],
        ) -> Result<[u8; TAG_LEN_BYTES], CryptoError> {
            let tag = self
                .0
                .encrypt_in_place_detached(GenericArray::from_slice(nonce), aad, text)
                .map_err(|_| CryptoError::BufferTooSmall)?;
            Ok(tag.into())
        }

        pub(crate) fn open(
            &self,
            nonce: &NonceBytes,
            aad: &[u8],
            text: &mut [u8],
            tag: &[u8; TAG_LEN_BYTES],
        ) -> Result<(), CryptoError> {
            self.0
                .decrypt_in_place_detached(
                    GenericArray::from_slice(nonce),
                    aad,
                    text,
                    GenericArray::from_slice(tag),
                )
                .map_err(|_| CryptoError::Tampered)
        }
    }
}

#[cfg(feature = "fast-aead")]
mod fast {
    use super::{CipherSuite, CryptoError, KEY_LEN_BYTES, NonceBytes, TAG_LEN_BYTES};
    use ring::aead::{
        AES_256_GCM, Aad, Algorithm, CHACHA20_POLY1305, LessSafeKey, Nonce, Tag, UnboundKey,
    };

    pub(crate) struct Key(LessSafeKey, CipherSuite);

    impl Key {
        fn with(alg: &'static Algorithm, suite: CipherSuite, key: &[u8; KEY_LEN_BYTES]) -> Self {
            // ring refuses only keys of the wrong length (and CPU self-test failures, which
            // do not happen on a working CPU); both algorithms take our 32 bytes.
            match UnboundKey::new(alg, key) {
                Ok(k) => Self(LessSafeKey::new(k), suite),
                Err(_) => {
                    unreachable!("a 32-byte key is accepted by ChaCha20-Poly1305 and AES-256")
                }
            }
        }

        pub(crate) fn chacha(key: &[u8; KEY_LEN_BYTES]) -> Self {
            Self::with(&CHACHA20_POLY1305, CipherSuite::ChaCha20Poly1305, key)
        }

        pub(crate) fn aes(key: &[u8; KEY_LEN_BYTES]) -> Option<Self> {
            Some(Self::with(&AES_256_GCM, CipherSuite::Aes256Gcm, key))
        }

        pub(crate) fn suite(&self) -> CipherSuite {
            self.1
        }

        pub(crate) fn seal(
            &self,
            nonce: &NonceBytes,
            aad: &[u8],
            text: &mut [u8],
        ) -> Result<[u8; TAG_LEN_BYTES], CryptoError> {
            let tag = self
                .0
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(*nonce),
                    Aad::from(aad),
                    text,
                )
                .map_err(|_| CryptoError::BufferTooSmall)?;
            let mut out = [0u8; TAG_LEN_BYTES];
            out.copy_from_slice(tag.as_ref());
            Ok(out)
        }

        pub(crate) fn open(
            &self,
            nonce: &NonceBytes,
            aad: &[u8],
            text: &mut [u8],
            tag: &[u8; TAG_LEN_BYTES],
        ) -> Result<(), CryptoError> {
            self.0
                .open_in_place_separate_tag(
                    Nonce::assume_unique_for_key(*nonce),
                    Aad::from(aad),
                    Tag::from(*tag),
                    text,
                    0..,
                )
                .map(|_| ())
                .map_err(|_| CryptoError::Tampered)
        }
    }
}

#[cfg(all(test, feature = "fast-aead"))]
mod tests {
    use super::known_answer::{AAD, KEY, NONCE, PLAIN, TAG};
    use super::{fast, rustcrypto};

    /// RFC 8439 section 2.8.2's test vector, sealed by both implementations.
    #[test]
    fn both_implementations_give_the_rfc_8439_vector_and_open_each_other() {
        let (key, nonce, aad, plain, expected_tag) = (KEY, NONCE, AAD, *PLAIN, TAG);
        let (r, f) = (rustcrypto::Key::new(&key), fast::Key::chacha(&key));
        let mut a = plain;
        let mut b = plain;
        let tag_a = r.seal(&nonce, &aad, &mut a).unwrap();
        let tag_b = f.seal(&nonce, &aad, &mut b).unwrap();
        assert_eq!(tag_a, expected_tag);
        assert_eq!(tag_b, expected_tag);
        assert_eq!(a, b);
        assert_eq!(&a[..4], &[0xd3, 0x1a, 0x8d, 0x34]);
        // Each opens what the other sealed; a flipped bit fails in both.
        f.open(&nonce, &aad, &mut a, &tag_a).unwrap();
        r.open(&nonce, &aad, &mut b, &tag_b).unwrap();
        assert_eq!(a, plain);
        assert_eq!(b, plain);
        let mut bad = plain;
        let tag = f.seal(&nonce, &aad, &mut bad).unwrap();
        bad[7] ^= 1;
        let mut bad2 = bad;
        assert!(r.open(&nonce, &aad, &mut bad, &tag).is_err());
        assert!(f.open(&nonce, &aad, &mut bad2, &tag).is_err());
    }
}

/// The RFC 8439 vector through whichever implementation this build uses: part of the
/// default test set (`cargo test -p weft-core`, no features).
#[cfg(test)]
mod known_answer {
    use super::Cipher;

    /// RFC 8439 section 2.8.2: key, nonce, AAD, plaintext and the tag they seal to.
    pub(super) const KEY: [u8; 32] = {
        let mut k = [0u8; 32];
        let mut i = 0;
        while i < 32 {
            k[i] = 0x80 + i as u8;
            i += 1;
        }
        k
    };
    pub(super) const NONCE: [u8; 12] = [
        0x07, 0, 0, 0, 0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47,
    ];
    pub(super) const AAD: [u8; 12] = [
        0x50, 0x51, 0x52, 0x53, 0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7,
    ];
    pub(super) const PLAIN: &[u8; 114] = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
    pub(super) const TAG: [u8; 16] = [
        0x1a, 0xe1, 0x0b, 0x59, 0x4f, 0x09, 0xe2, 0x6a, 0x7e, 0x90, 0x2e, 0xcb, 0xd0, 0x60, 0x06,
        0x91,
    ];

    #[test]
    fn aes_gcm_exists_exactly_with_fast_aead() {
        use super::CipherSuite;
        let aes = Cipher::with_suite(CipherSuite::Aes256Gcm, &KEY);
        assert_eq!(aes.is_ok(), cfg!(feature = "fast-aead"));
        if let Err(e) = aes {
            assert_eq!(e, crate::crypto::CryptoError::NoCommonCipher);
        }
        let chacha = Cipher::with_suite(CipherSuite::ChaCha20Poly1305, &KEY).unwrap();
        assert_eq!(chacha.suite(), CipherSuite::ChaCha20Poly1305);
    }

    #[test]
    fn the_cipher_in_use_gives_the_rfc_8439_vector() {
        let c = Cipher::new(&KEY);
        let mut text = *PLAIN;
        let tag = c.seal_detached(&NONCE, &AAD, &mut text).unwrap();
        assert_eq!(tag, TAG);
        assert_eq!(
            &text[..8],
            &[0xd3, 0x1a, 0x8d, 0x34, 0x64, 0x8e, 0x60, 0xdb]
        );
        assert_eq!(&text[text.len() - 2..], &[0x61, 0x16]);
        c.open_detached(&NONCE, &AAD, &mut text, &tag).unwrap();
        assert_eq!(text, *PLAIN);
    }
}

/// AES-256-GCM known answers from the GCM specification (McGrew and Viega, "The Galois/
/// Counter Mode of Operation", test cases 13, 14 and 16; checked against OpenSSL through
/// Python's `cryptography`), through the wrapper the sealers use.
#[cfg(all(test, feature = "fast-aead"))]
mod aes_known_answer {
    use super::{Cipher, CipherSuite};
    use crate::crypto::CryptoError;

    fn unhex(s: &str) -> alloc::vec::Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Seals `plain` and checks ciphertext and tag, opens it back, and checks that one
    /// flipped bit of ciphertext, tag or AAD does not open.
    fn check(key: &str, nonce: &str, aad: &str, plain: &str, sealed: &str) {
        let key: [u8; 32] = unhex(key).try_into().unwrap();
        let nonce: [u8; 12] = unhex(nonce).try_into().unwrap();
        let (aad, plain, sealed) = (unhex(aad), unhex(plain), unhex(sealed));
        let c = Cipher::with_suite(CipherSuite::Aes256Gcm, &key).unwrap();
        assert_eq!(c.suite(), CipherSuite::Aes256Gcm);
        let mut text = plain.clone();
        let tag = c.seal_detached(&nonce, &aad, &mut text).unwrap();
        assert_eq!(text, sealed[..plain.len()], "ciphertext");
        assert_eq!(tag[..], sealed[plain.len()..], "tag");
        let mut opened = text.clone();
        c.open_detached(&nonce, &aad, &mut opened, &tag).unwrap();
        assert_eq!(opened, plain);
        let mut bad_tag = tag;
        bad_tag[15] ^= 1;
        let mut copy = text.clone();
        assert_eq!(
            c.open_detached(&nonce, &aad, &mut copy, &bad_tag),
            Err(CryptoError::Tampered)
        );
        if let Some(first) = text.first_mut() {
            *first ^= 0x80;
            assert!(c.open_detached(&nonce, &aad, &mut text, &tag).is_err());
        }
        let mut aad2 = aad.clone();
        aad2.push(0);
        let mut copy = sealed[..plain.len()].to_vec();
        assert!(c.open_detached(&nonce, &aad2, &mut copy, &tag).is_err());
        // ChaCha20-Poly1305 under the same key is a different cipher: it does not open.
        let chacha = Cipher::new(&key);
        let mut copy = sealed[..plain.len()].to_vec();
        assert!(chacha.open_detached(&nonce, &aad, &mut copy, &tag).is_err());
    }

    #[test]
    fn gcm_spec_test_cases_13_14_16() {
        let zero_key = "0000000000000000000000000000000000000000000000000000000000000000";
        let zero_nonce = "000000000000000000000000";
        check(
            zero_key,
            zero_nonce,
            "",
            "",
            "530f8afbc74536b9a963b4f1c4cb738b",
        );
        check(
            zero_key,
            zero_nonce,
            "",
            "00000000000000000000000000000000",
            "cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5d48ab919",
        );
        check(
            "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
            "cafebabefacedbaddecaf888",
            "feedfacedeadbeeffeedfacedeadbeefabaddad2",
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
             1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
            "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa\
             8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662\
             76fc6ece0f4e1768cddf8853bb2d551b",
        );
    }
}
