//! Peer identity: a 48-bit name written like a MAC address, and a per-incarnation uid.

use core::fmt;
use core::str::FromStr;

/// A peer's stable name: 48 bits, shown as `aa:bb:cc:dd:ee:ff`.
///
/// Hosts derive it from a MAC address or pick it at random once and keep it in the state
/// dir; the simulator numbers its peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PeerName(u64);

/// Identifies one incarnation of a peer: a restarted router keeps its name, gets a new uid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PeerUid(pub u64);

/// A string that is not six colon-separated hex octets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadPeerName;

impl fmt::Display for BadPeerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("peer name must be six hex octets like 0a:1b:2c:3d:4e:5f")
    }
}

#[cfg(feature = "std")]
impl std::error::Error for BadPeerName {}

impl PeerName {
    /// Number of bytes a name takes on the wire.
    pub const WIRE_LEN: usize = 6;
    /// Mask of the 48 significant bits.
    pub const MASK: u64 = (1 << 48) - 1;

    /// A name from its low 48 bits (higher bits are dropped).
    pub const fn from_u64(v: u64) -> Self {
        Self(v & Self::MASK)
    }

    /// The name as an integer.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// The six bytes of the name, most significant first.
    pub fn to_bytes(self) -> [u8; 6] {
        let b = self.0.to_be_bytes();
        [b[2], b[3], b[4], b[5], b[6], b[7]]
    }

    /// A name from six bytes, most significant first.
    pub fn from_bytes(b: [u8; 6]) -> Self {
        Self(u64::from_be_bytes([
            0, 0, b[0], b[1], b[2], b[3], b[4], b[5],
        ]))
    }
}

impl fmt::Display for PeerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.to_bytes();
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for PeerName {
    type Err = BadPeerName;
    fn from_str(s: &str) -> Result<Self, BadPeerName> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let p = parts.next().ok_or(BadPeerName)?;
            if p.len() != 2 {
                return Err(BadPeerName);
            }
            *byte = u8::from_str_radix(p, 16).map_err(|_| BadPeerName)?;
        }
        if parts.next().is_some() {
            return Err(BadPeerName);
        }
        Ok(Self::from_bytes(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn display_parse_roundtrip_and_rejects() {
        let n = PeerName::from_u64(0x0a1b_2c3d_4e5f);
        assert_eq!(n.to_string(), "0a:1b:2c:3d:4e:5f");
        assert_eq!("0a:1b:2c:3d:4e:5f".parse::<PeerName>(), Ok(n));
        assert!("0a:1b:2c:3d:4e".parse::<PeerName>().is_err());
        assert!("0a:1b:2c:3d:4e:5f:00".parse::<PeerName>().is_err());
        assert!("0a:1b:2c:3d:4e:zz".parse::<PeerName>().is_err());
        assert_eq!(PeerName::from_u64(u64::MAX).as_u64(), PeerName::MASK);
    }
}
