//! Small value types the API speaks: MAC addresses, address/prefix pairs, and
//! what a link lookup returns.

use std::{fmt, net::IpAddr, str::FromStr};

/// An Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// 00:00:00:00:00:00, the VXLAN "default destination" used for flood entries.
    pub const ZERO: Self = Self([0; 6]);
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: Self = Self([0xff; 6]);

    /// True for 00:00:00:00:00:00.
    pub fn is_zero(&self) -> bool {
        *self == Self::ZERO
    }

    /// Reads a MAC from a netlink attribute; `None` unless it is exactly 6 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 6]>::try_from(bytes).ok().map(Self)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Error from parsing a [`MacAddr`] or [`IpCidr`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseError(&'static str);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for ParseError {}

impl FromStr for MacAddr {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const BAD: ParseError =
            ParseError("MAC address must be six hex octets like 02:42:ac:11:00:02");
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let part = parts.next().ok_or(BAD)?;
            if part.is_empty() || part.len() > 2 {
                return Err(BAD);
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| BAD)?;
        }
        if parts.next().is_some() {
            return Err(BAD);
        }
        Ok(Self(out))
    }
}

/// An IP address with a prefix length, as on an interface (`10.32.0.1/12`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct IpCidr {
    /// The address.
    pub addr: IpAddr,
    /// The prefix length in bits (at most 32 for IPv4, 128 for IPv6).
    pub prefix_len: u8,
}

impl IpCidr {
    /// Builds one; `None` when the prefix is longer than the address.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Option<Self> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix_len <= max).then_some(Self { addr, prefix_len })
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for IpCidr {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const BAD: ParseError = ParseError("expected ADDRESS/PREFIX like 10.32.0.1/12");
        let (addr, len) = s.split_once('/').ok_or(BAD)?;
        let addr: IpAddr = addr.parse().map_err(|_| BAD)?;
        let len: u8 = len.parse().map_err(|_| BAD)?;
        Self::new(addr, len).ok_or(BAD)
    }
}

/// What [`crate::Netlink::link`] returns about one interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// Kernel interface index (in the handle's namespace).
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// MTU in bytes.
    pub mtu_bytes: u32,
    /// Hardware address, for Ethernet-like links.
    pub mac: Option<MacAddr>,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Index of the bridge (or other master) it is enslaved to.
    pub master_index: Option<u32>,
    /// Link kind as `ip -d link` prints it: "bridge", "veth", "vxlan", ...
    pub kind: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trips_and_rejects_garbage() {
        let mac: MacAddr = "02:42:AC:11:0:2".parse().unwrap();
        assert_eq!(mac.0, [0x02, 0x42, 0xac, 0x11, 0x00, 0x02]);
        assert_eq!(mac.to_string(), "02:42:ac:11:00:02");
        for bad in [
            "",
            "02:42:ac:11:00",
            "02:42:ac:11:00:02:03",
            "0g:00:00:00:00:00",
            "002:0:0:0:0:0",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
        assert!(MacAddr::ZERO.is_zero());
        assert_eq!(MacAddr::from_slice(&[1, 2, 3]), None);
    }

    #[test]
    fn cidr_checks_prefix_against_family() {
        let c: IpCidr = "10.32.0.1/12".parse().unwrap();
        assert_eq!(c.prefix_len, 12);
        assert_eq!(c.to_string(), "10.32.0.1/12");
        assert!("10.0.0.1/33".parse::<IpCidr>().is_err());
        assert!("fd00::1/128".parse::<IpCidr>().is_ok());
        assert!("fd00::1/129".parse::<IpCidr>().is_err());
        assert!("10.0.0.1".parse::<IpCidr>().is_err());
    }
}
