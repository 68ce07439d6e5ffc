//! Which AEAD seals a connection's sleeve datagrams: the ciphers a router offers, the one
//! two routers agree on, and the names users and status see.
//!
//! Each hello (protocol v3 on) carries the sender's offer as a [`CipherSuites`] bitset.
//! The connection uses AES-256-GCM when both offers have it and ChaCha20-Poly1305
//! otherwise ([`CipherSuites::choose`]). What a router offers is the host's call: AES-GCM
//! is fast only where the CPU has AES and carry-less multiply instructions, which the core
//! cannot see (it reads no CPU flags). What a build can run at all is
//! [`CipherSuites::supported`]: AES-256-GCM needs the `fast-aead` feature (ring).
//!
//! The offers are part of both hellos, so of the transcript each side's confirm carries:
//! an offer changed in flight fails the handshake with [`super::CryptoError::Downgrade`].

use core::fmt;
use core::str::FromStr;

/// One AEAD a connection can seal its sleeve datagrams with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CipherSuite {
    /// ChaCha20-Poly1305 (RFC 8439): every build, fast on any CPU.
    ChaCha20Poly1305,
    /// AES-256-GCM (NIST SP 800-38D): builds with `fast-aead`, fast with AES-NI and
    /// PCLMULQDQ (or ARMv8 AES and PMULL).
    Aes256Gcm,
}

impl CipherSuite {
    /// Every suite, most preferred first.
    pub const ALL: [Self; 2] = [Self::Aes256Gcm, Self::ChaCha20Poly1305];

    /// Its bit in a [`CipherSuites`] on the wire.
    pub const fn bit(self) -> u8 {
        match self {
            Self::ChaCha20Poly1305 => 0x01,
            Self::Aes256Gcm => 0x02,
        }
    }

    /// Its name as `--cipher` and `weft status` spell it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::ChaCha20Poly1305 => "chacha20-poly1305",
            Self::Aes256Gcm => "aes-256-gcm",
        }
    }
}

impl fmt::Display for CipherSuite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not a cipher weft knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownCipher;

impl fmt::Display for UnknownCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unknown cipher: use chacha20-poly1305 or aes-256-gcm")
    }
}

#[cfg(feature = "std")]
impl std::error::Error for UnknownCipher {}

impl FromStr for CipherSuite {
    type Err = UnknownCipher;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or(UnknownCipher)
    }
}

/// A set of [`CipherSuite`]s: what one router offers, one bit each on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CipherSuites(u8);

/// Every bit this build gives a meaning to; a peer of the same or an older version that
/// sets another is malformed, a newer one may offer suites we skip.
pub(crate) const CIPHER_BITS_KNOWN: u8 = 0x03;

impl CipherSuites {
    /// No suite (not a valid offer).
    pub const EMPTY: Self = Self(0);
    /// ChaCha20-Poly1305 alone: what every weft (and every v2 peer) speaks.
    pub const CHACHA20_POLY1305: Self = Self(CipherSuite::ChaCha20Poly1305.bit());

    /// Just `suite`.
    pub const fn only(suite: CipherSuite) -> Self {
        Self(suite.bit())
    }

    /// The suites this build can seal with: ChaCha20-Poly1305, and AES-256-GCM with
    /// the `fast-aead` feature. Whether the CPU runs AES-GCM fast is not known here.
    pub const fn supported() -> Self {
        if cfg!(feature = "fast-aead") {
            Self(CIPHER_BITS_KNOWN)
        } else {
            Self::CHACHA20_POLY1305
        }
    }

    /// The host's default offer: ChaCha20-Poly1305, plus AES-256-GCM when `cpu_has_aes`
    /// (the CPU has AES and carry-less multiply, as the host detected) and the build
    /// supports it.
    pub const fn auto(cpu_has_aes: bool) -> Self {
        if cpu_has_aes {
            Self::supported()
        } else {
            Self::CHACHA20_POLY1305
        }
    }

    /// The set from its wire byte; bits this build does not know are dropped.
    pub const fn from_bits_known(bits: u8) -> Self {
        Self(bits & CIPHER_BITS_KNOWN)
    }

    /// The wire byte.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Whether `suite` is in the set.
    pub const fn contains(self, suite: CipherSuite) -> bool {
        self.0 & suite.bit() != 0
    }

    /// Whether the set has no suite.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The suites in both.
    pub const fn intersect(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }

    /// The suite a connection between offers `self` and `other` uses: the most preferred
    /// one in both (AES-256-GCM, then ChaCha20-Poly1305), or `None` when they share none.
    /// Symmetric, so both ends pick the same without a further message.
    pub fn choose(self, other: Self) -> Option<CipherSuite> {
        let both = self.intersect(other);
        CipherSuite::ALL.into_iter().find(|c| both.contains(*c))
    }
}

impl fmt::Display for CipherSuites {
    /// The names, most preferred first, joined by `,`; `none` when empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let mut first = true;
        for c in CipherSuite::ALL.into_iter().filter(|c| self.contains(*c)) {
            if !first {
                f.write_str(",")?;
            }
            f.write_str(c.name())?;
            first = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    const BOTH: CipherSuites = CipherSuites(CIPHER_BITS_KNOWN);
    const AES: CipherSuites = CipherSuites::only(CipherSuite::Aes256Gcm);
    const CHACHA: CipherSuites = CipherSuites::CHACHA20_POLY1305;

    #[test]
    fn choice_prefers_aes_only_when_both_offer_it() {
        assert_eq!(BOTH.choose(BOTH), Some(CipherSuite::Aes256Gcm));
        assert_eq!(BOTH.choose(CHACHA), Some(CipherSuite::ChaCha20Poly1305));
        assert_eq!(CHACHA.choose(BOTH), Some(CipherSuite::ChaCha20Poly1305));
        assert_eq!(AES.choose(BOTH), Some(CipherSuite::Aes256Gcm));
        assert_eq!(AES.choose(CHACHA), None);
        assert_eq!(CipherSuites::EMPTY.choose(BOTH), None);
    }

    #[test]
    fn names_parse_back_and_unknown_bits_are_dropped() {
        for c in CipherSuite::ALL {
            assert_eq!(c.name().parse::<CipherSuite>(), Ok(c));
        }
        assert_eq!("aes-128-gcm".parse::<CipherSuite>(), Err(UnknownCipher));
        assert_eq!(CipherSuites::from_bits_known(0xff), BOTH);
        assert_eq!(BOTH.to_string(), "aes-256-gcm,chacha20-poly1305");
        assert_eq!(CipherSuites::EMPTY.to_string(), "none");
    }

    #[test]
    fn auto_offers_aes_only_with_the_cpu_and_the_build() {
        assert_eq!(CipherSuites::auto(false), CHACHA);
        assert_eq!(
            CipherSuites::auto(true).contains(CipherSuite::Aes256Gcm),
            cfg!(feature = "fast-aead")
        );
        assert!(CipherSuites::auto(true).contains(CipherSuite::ChaCha20Poly1305));
    }
}
