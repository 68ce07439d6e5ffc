//! Address arithmetic for IPAM: IPv4 CIDR blocks as half-open `u32` ranges.
//!
//! Addresses are plain `u32`s inside the core; ends of ranges are `u64` so a block that
//! ends at 255.255.255.255 needs no special case.

use core::fmt;
use core::net::Ipv4Addr;
use core::str::FromStr;

/// Longest IPv4 prefix.
pub const PREFIX_LEN_MAX: u8 = 32;
/// Shortest prefix a range or subnet may have (a /8 is 16 M addresses).
pub const PREFIX_LEN_MIN: u8 = 8;

/// An IPv4 address with a prefix length, e.g. `10.32.0.0/12` or `10.32.0.5/12`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    /// The address (for a block, its first address).
    pub addr: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub prefix_len: u8,
}

/// A string that is not `a.b.c.d/n` with `n` in [`PREFIX_LEN_MIN`]..=32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadCidr;

impl fmt::Display for BadCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("expected an IPv4 CIDR like 10.32.0.0/12 (prefix /8 to /32)")
    }
}

#[cfg(feature = "std")]
impl std::error::Error for BadCidr {}

impl Cidr {
    /// `addr/prefix_len`; `None` if the prefix is outside [`PREFIX_LEN_MIN`]..=32.
    pub const fn new(addr: Ipv4Addr, prefix_len: u8) -> Option<Self> {
        if prefix_len < PREFIX_LEN_MIN || prefix_len > PREFIX_LEN_MAX {
            return None;
        }
        Some(Self { addr, prefix_len })
    }

    /// The block `network/prefix_len` holding `addr`.
    pub const fn block_of(addr: u32, prefix_len: u8) -> Self {
        let c = Self {
            addr: Ipv4Addr::from_bits(addr),
            prefix_len,
        };
        c.network()
    }

    /// The mask of the prefix as a `u32`.
    pub const fn mask(&self) -> u32 {
        if self.prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix_len as u32)
        }
    }

    /// The block's first address.
    pub const fn start(&self) -> u32 {
        self.addr.to_bits() & self.mask()
    }

    /// One past the block's last address.
    pub const fn end(&self) -> u64 {
        self.start() as u64 + self.size()
    }

    /// Number of addresses in the block.
    pub const fn size(&self) -> u64 {
        1u64 << (32 - self.prefix_len as u32)
    }

    /// The block itself (host bits cleared).
    pub const fn network(&self) -> Self {
        Self {
            addr: Ipv4Addr::from_bits(self.start()),
            prefix_len: self.prefix_len,
        }
    }

    /// True if `addr` is inside the block.
    pub const fn contains(&self, addr: u32) -> bool {
        addr >= self.start() && (addr as u64) < self.end()
    }

    /// True if `other` lies wholly inside this block.
    pub const fn contains_block(&self, other: &Self) -> bool {
        other.start() >= self.start() && other.end() <= self.end()
    }

    /// The addresses a container may get in this block: all but the network and broadcast
    /// addresses (kept for blocks of /30 and wider, as on a LAN).
    pub const fn usable(&self) -> (u32, u64) {
        if self.prefix_len <= 30 {
            (self.start() + 1, self.end() - 1)
        } else {
            (self.start(), self.end())
        }
    }

    /// True if `addr` is one of [`Cidr::usable`].
    pub const fn is_usable(&self, addr: u32) -> bool {
        let (lo, hi) = self.usable();
        addr >= lo && (addr as u64) < hi
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for Cidr {
    type Err = BadCidr;
    fn from_str(s: &str) -> Result<Self, BadCidr> {
        let (a, p) = s.split_once('/').ok_or(BadCidr)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| BadCidr)?;
        if p.is_empty() || p.len() > 2 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BadCidr);
        }
        let prefix_len: u8 = p.parse().map_err(|_| BadCidr)?;
        Self::new(addr, prefix_len).ok_or(BadCidr)
    }
}

/// The overlap of `[a_lo, a_hi)` and `[b_lo, b_hi)`, if not empty.
pub const fn overlap(a_lo: u64, a_hi: u64, b_lo: u64, b_hi: u64) -> Option<(u64, u64)> {
    let lo = if a_lo > b_lo { a_lo } else { b_lo };
    let hi = if a_hi < b_hi { a_hi } else { b_hi };
    if lo < hi { Some((lo, hi)) } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn parse_display_and_arithmetic() {
        let c: Cidr = "10.32.0.0/12".parse().unwrap();
        assert_eq!(c.start(), u32::from(Ipv4Addr::new(10, 32, 0, 0)));
        assert_eq!(c.size(), 1 << 20);
        assert_eq!(c.end(), u64::from(u32::from(Ipv4Addr::new(10, 48, 0, 0))));
        assert_eq!(c.to_string(), "10.32.0.0/12");
        let host: Cidr = "10.32.0.5/12".parse().unwrap();
        assert_eq!(host.network(), c);
        assert!(c.contains_block(&"10.40.0.0/24".parse().unwrap()));
        assert!(!c.contains_block(&"10.48.0.0/24".parse().unwrap()));
        let (lo, hi) = "10.40.0.0/30".parse::<Cidr>().unwrap().usable();
        assert_eq!(hi - u64::from(lo), 2);
        let (lo, hi) = "10.40.0.7/32".parse::<Cidr>().unwrap().usable();
        assert_eq!((u64::from(lo), hi), (u64::from(lo), u64::from(lo) + 1));
        let top: Cidr = "255.0.0.0/8".parse().unwrap();
        assert_eq!(top.end(), 1 << 32);
        for bad in [
            "10.0.0.0",
            "10.0.0.0/33",
            "10.0.0.0/7",
            "10.0.0/8",
            "10.0.0.0/+8",
            "x/8",
        ] {
            assert_eq!(bad.parse::<Cidr>(), Err(BadCidr), "{bad}");
        }
        assert_eq!(overlap(0, 10, 5, 20), Some((5, 10)));
        assert_eq!(overlap(0, 5, 5, 20), None);
    }
}
