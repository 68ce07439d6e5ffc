//! `--cipher`: which AEADs this router offers its peers for sleeve datagrams, from what
//! the user pinned and what this CPU runs fast.
//!
//! The core cannot look at the CPU (it is sans-IO and no_std), so the host does:
//! AES-256-GCM is offered only where the CPU has AES and carry-less multiply instructions
//! (x86-64 AES-NI and PCLMULQDQ, aarch64 AES and PMULL), without which ring's AES-GCM is
//! several times slower than its ChaCha20-Poly1305. Each connection then uses AES-256-GCM
//! when both ends offer it ([`weft_core::crypto::CipherSuites::choose`]).

use crate::error::{Error, Result};
use clap::ValueEnum;
use weft_core::crypto::{CipherSuite, CipherSuites};

/// What `--cipher` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub(crate) enum CipherChoice {
    /// AES-256-GCM with peers that offer it too, where this CPU has AES instructions;
    /// ChaCha20-Poly1305 otherwise.
    #[default]
    Auto,
    /// ChaCha20-Poly1305 only.
    #[value(name = "chacha20-poly1305")]
    ChaCha20Poly1305,
    /// AES-256-GCM only: peers that do not offer it cannot connect.
    #[value(name = "aes-256-gcm")]
    Aes256Gcm,
}

impl CipherChoice {
    /// The name on the command line.
    pub(crate) fn arg(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::ChaCha20Poly1305 => CipherSuite::ChaCha20Poly1305.name(),
            Self::Aes256Gcm => CipherSuite::Aes256Gcm.name(),
        }
    }
}

/// Whether this CPU has the instructions AES-GCM needs to be fast.
pub(crate) fn cpu_has_fast_aes() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
            && std::arch::is_aarch64_feature_detected!("pmull")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// The offer for `choice` on a CPU that has fast AES or not (`cpu_aes`); pinning
/// AES-256-GCM without it is [`Error::CipherUnavailable`], at start.
pub(crate) fn offer(choice: CipherChoice, cpu_aes: bool) -> Result<CipherSuites> {
    match choice {
        CipherChoice::Auto => Ok(CipherSuites::auto(cpu_aes)),
        CipherChoice::ChaCha20Poly1305 => Ok(CipherSuites::CHACHA20_POLY1305),
        CipherChoice::Aes256Gcm if cpu_aes => Ok(CipherSuites::only(CipherSuite::Aes256Gcm)),
        CipherChoice::Aes256Gcm => Err(Error::CipherUnavailable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_follow_the_choice_and_the_cpu() {
        let both = CipherSuites::supported();
        assert!(
            both.contains(CipherSuite::Aes256Gcm),
            "the host builds with fast-aead"
        );
        assert_eq!(offer(CipherChoice::Auto, true).unwrap(), both);
        assert_eq!(
            offer(CipherChoice::Auto, false).unwrap(),
            CipherSuites::CHACHA20_POLY1305
        );
        for cpu in [true, false] {
            assert_eq!(
                offer(CipherChoice::ChaCha20Poly1305, cpu).unwrap(),
                CipherSuites::CHACHA20_POLY1305
            );
        }
        assert_eq!(
            offer(CipherChoice::Aes256Gcm, true).unwrap(),
            CipherSuites::only(CipherSuite::Aes256Gcm)
        );
        let err = offer(CipherChoice::Aes256Gcm, false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--cipher aes-256-gcm") && !err.contains('\n'),
            "{err}"
        );
    }

    #[test]
    fn names_are_the_cores() {
        for c in [CipherChoice::ChaCha20Poly1305, CipherChoice::Aes256Gcm] {
            let parsed = CipherChoice::from_str(c.arg(), false).unwrap();
            assert_eq!(parsed, c);
            assert!(c.arg().parse::<CipherSuite>().is_ok());
        }
        assert_eq!(
            CipherChoice::from_str("auto", false),
            Ok(CipherChoice::Auto)
        );
    }
}
