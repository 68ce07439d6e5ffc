//! Versioned binary codecs. Every message has a `parse` that rejects bad input with a
//! [`WireError`] and an `emit` that writes into a caller's buffer and returns the length.
//!
//! Layout: [`buf`] holds the bounds-checked cursor every codec uses; one file per message
//! family. Multi-byte integers are big-endian.

pub mod buf;
pub mod datagram;
pub mod frame;
pub mod handshake;
pub mod topology;
pub mod topology_sync;

use core::fmt;

/// The protocol versions this build speaks, inclusive.
/// Version 2 brought the SPAKE2 password handshake and transcript-bound keys; version 1
/// peers are refused with "upgrade it".
pub const PROTOCOL_VERSION_MIN: u8 = 2;
/// The highest protocol version this build speaks. Version 3 added the cipher offer to
/// the hello (AES-256-GCM sleeve datagrams where both ends offer it) and binds the datagram
/// keys to the hellos; a v2 peer still connects, at v2, with ChaCha20-Poly1305.
pub const PROTOCOL_VERSION_MAX: u8 = 3;
/// The version byte sleeve datagrams carry: their format is v2's (v3 changed only the
/// hello and the key schedule), so v2 peers keep reading them.
pub const DATAGRAM_VERSION: u8 = 2;

/// Largest UDP payload (65,535 minus the 8-byte UDP header); over IPv4, 20 bytes less
/// ([`UDP_V4_PAYLOAD_LEN_MAX`]). The one definition the sleeve engine and the datapaths use.
pub const UDP_PAYLOAD_LEN_MAX: usize = 65_535 - 8;
/// Largest UDP payload over IPv4 (also the most bytes one GSO send may carry there).
pub const UDP_V4_PAYLOAD_LEN_MAX: usize = 65_535 - 20 - 8;
/// Most segments in one UDP GSO send or GRO receive (the kernel's `UDP_MAX_SEGMENTS`).
pub const GSO_SEGMENTS_MAX: usize = 64;

/// Why a decoder refused its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireError {
    /// Input ended before the message did.
    Truncated,
    /// A length or count field exceeds its limit.
    Oversized,
    /// The magic bytes are wrong: this is not a weft message.
    BadMagic,
    /// A version this build does not speak.
    UnsupportedVersion,
    /// An unknown message or field type.
    UnknownType,
    /// Fields that contradict each other (length mismatch, trailing bytes, bad flag).
    Inconsistent,
    /// The output buffer is too small for the message.
    BufferTooSmall,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Truncated => "message truncated",
            Self::Oversized => "length or count over its limit",
            Self::BadMagic => "not a weft message (bad magic)",
            Self::UnsupportedVersion => "unsupported protocol version",
            Self::UnknownType => "unknown message type",
            Self::Inconsistent => "inconsistent message fields",
            Self::BufferTooSmall => "output buffer too small",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for WireError {}

/// `bytes` with the byte at `at` set to `value`: a message one field off, for decoder tests.
#[cfg(test)]
pub(crate) fn with_byte(bytes: &[u8], at: usize, value: u8) -> alloc::vec::Vec<u8> {
    let mut v = bytes.to_vec();
    v[at] = value;
    v
}
