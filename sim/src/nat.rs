//! NAT boxes for the virtual network: a node put behind one reaches out through it, and
//! nobody reaches in except through a mapping the node's own traffic opened.
//!
//! The two properties RFC 4787 names, each either endpoint-independent or
//! address-and-port-dependent: **mapping** (does the node keep one public port for all
//! destinations, or get a new, random one per destination — nftables `masquerade
//! fully-random` on a symmetric NAT) and **filtering** (may anyone send to a mapping, or
//! only the address and port it was opened towards). Mappings time out when idle (both
//! directions refresh them, as Linux conntrack does), can be flushed at once (`conntrack
//! -F`), and are bounded. Ports are drawn from the box's own seeded RNG, so a world seed
//! replays the same mappings.
//!
//! What it does not do: streams (a NATed node's dials go out with the box's address, dials
//! to it fail; see [`crate::world::World::set_nat`]), hairpinning, or port preservation.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use weft_core::rng::Rng;

/// Most mappings one box holds; past it the least recently used one goes.
pub const NAT_MAPPINGS_MAX: usize = 4096;
/// Most remote endpoints one mapping remembers for address-and-port-dependent filtering.
pub const NAT_ALLOWED_MAX: usize = 256;
/// Lowest public port a box hands out.
pub const NAT_PORT_MIN: u16 = 1024;
/// Idle time after which a UDP mapping is gone, unless a scenario sets another
/// (Linux's `nf_conntrack_udp_timeout_stream` is 120 s, the unreplied one 30 s).
pub const NAT_TIMEOUT_DEFAULT_US: u64 = 30_000_000;

/// How a box picks the public port for a node's datagrams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mapping {
    /// One public port per internal port, whatever the destination.
    EndpointIndependent,
    /// A new random public port per destination address and port.
    AddressPortDependent,
}

/// Whom a box lets send to a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Filtering {
    /// Anyone.
    EndpointIndependent,
    /// Only address-and-port pairs the node sent to through this mapping.
    AddressPortDependent,
}

/// A NAT's behaviour: its mapping and its filtering.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct NatType {
    /// How public ports are picked.
    pub mapping: Mapping,
    /// Who may send in.
    pub filtering: Filtering,
}

impl NatType {
    /// Endpoint-independent mapping and filtering ("full cone").
    pub const FULL_CONE: Self = Self {
        mapping: Mapping::EndpointIndependent,
        filtering: Filtering::EndpointIndependent,
    };
    /// Endpoint-independent mapping, address-and-port-dependent filtering ("port
    /// restricted cone"; what Linux masquerade does).
    pub const PORT_RESTRICTED: Self = Self {
        mapping: Mapping::EndpointIndependent,
        filtering: Filtering::AddressPortDependent,
    };
    /// Address-and-port-dependent mapping, endpoint-independent filtering.
    pub const SYMMETRIC_OPEN: Self = Self {
        mapping: Mapping::AddressPortDependent,
        filtering: Filtering::EndpointIndependent,
    };
    /// Address-and-port-dependent mapping and filtering ("symmetric").
    pub const SYMMETRIC: Self = Self {
        mapping: Mapping::AddressPortDependent,
        filtering: Filtering::AddressPortDependent,
    };
    /// Every type, in the order tables print them.
    pub const ALL: [Self; 4] = [
        Self::FULL_CONE,
        Self::PORT_RESTRICTED,
        Self::SYMMETRIC_OPEN,
        Self::SYMMETRIC,
    ];

    /// A short name (`eim-eif`, ... ; "a" for address-and-port-dependent).
    pub fn short(self) -> &'static str {
        match (self.mapping, self.filtering) {
            (Mapping::EndpointIndependent, Filtering::EndpointIndependent) => "eim-eif",
            (Mapping::EndpointIndependent, Filtering::AddressPortDependent) => "eim-apdf",
            (Mapping::AddressPortDependent, Filtering::EndpointIndependent) => "apdm-eif",
            (Mapping::AddressPortDependent, Filtering::AddressPortDependent) => "apdm-apdf",
        }
    }

    /// Whether two peers behind these NATs can punch: a side whose mapping depends on
    /// the destination shows the other a port nobody announced, so the other side's
    /// filtering must let in anyone. (Two destination-dependent mappings meet too when
    /// both filters are open: each end answers the port it first heard from and keeps it.)
    pub fn punchable(a: Self, b: Self) -> bool {
        let ok = |m: Self, other: Self| {
            m.mapping == Mapping::EndpointIndependent
                || other.filtering == Filtering::EndpointIndependent
        };
        ok(a, b) && ok(b, a)
    }
}

impl fmt::Display for NatType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short())
    }
}

#[derive(Clone, Debug)]
struct Entry {
    key: (u16, Option<SocketAddr>),
    last_used_us: u64,
    allowed: BTreeSet<SocketAddr>,
}

/// One NAT box with one public address, in front of one node.
#[derive(Clone, Debug)]
pub struct NatBox {
    ty: NatType,
    timeout_us: u64,
    public_ip: Ipv4Addr,
    rng: Rng,
    by_key: BTreeMap<(u16, Option<SocketAddr>), u16>,
    by_port: BTreeMap<u16, Entry>,
    /// Datagrams from outside that no mapping let in.
    pub refused: u64,
    /// Mappings dropped for being idle past the timeout.
    pub expired: u64,
}

impl NatBox {
    /// A box of type `ty` with public address `public_ip`; idle mappings last
    /// `timeout_us`; ports drawn from `seed`.
    pub fn new(ty: NatType, public_ip: Ipv4Addr, timeout_us: u64, seed: u64) -> Self {
        Self {
            ty,
            timeout_us,
            public_ip,
            rng: Rng::from_seed(seed),
            by_key: BTreeMap::new(),
            by_port: BTreeMap::new(),
            refused: 0,
            expired: 0,
        }
    }

    /// The box's type.
    pub fn nat_type(&self) -> NatType {
        self.ty
    }

    /// The public address.
    pub fn public_ip(&self) -> Ipv4Addr {
        self.public_ip
    }

    /// Live mappings (some may have expired and not been noticed yet).
    pub fn mappings(&self) -> usize {
        self.by_port.len()
    }

    /// Forgets every mapping (`conntrack -F`).
    pub fn flush(&mut self) {
        self.by_key.clear();
        self.by_port.clear();
    }

    fn expire(&mut self, port: u16, now_us: u64) -> bool {
        let Some(e) = self.by_port.get(&port) else {
            return true;
        };
        if now_us.saturating_sub(e.last_used_us) <= self.timeout_us {
            return false;
        }
        let key = e.key;
        self.by_port.remove(&port);
        self.by_key.remove(&key);
        self.expired += 1;
        true
    }

    /// A datagram from the node's `internal_port` to `dst` leaves: the public address it
    /// goes out with (a mapping is made or refreshed).
    pub fn outbound(&mut self, now_us: u64, internal_port: u16, dst: SocketAddr) -> SocketAddr {
        let key = (
            internal_port,
            match self.ty.mapping {
                Mapping::EndpointIndependent => None,
                Mapping::AddressPortDependent => Some(dst),
            },
        );
        let existing = self.by_key.get(&key).copied();
        let port = match existing {
            Some(p) if !self.expire(p, now_us) => p,
            _ => self.allocate(now_us, key),
        };
        if let Some(e) = self.by_port.get_mut(&port) {
            e.last_used_us = now_us;
            if e.allowed.len() >= NAT_ALLOWED_MAX && !e.allowed.contains(&dst) {
                e.allowed.clear();
            }
            e.allowed.insert(dst);
        }
        SocketAddr::V4(SocketAddrV4::new(self.public_ip, port))
    }

    fn allocate(&mut self, now_us: u64, key: (u16, Option<SocketAddr>)) -> u16 {
        if self.by_port.len() >= NAT_MAPPINGS_MAX
            && let Some((&p, _)) = self.by_port.iter().min_by_key(|(_, e)| e.last_used_us)
        {
            let k = self.by_port[&p].key;
            self.by_port.remove(&p);
            self.by_key.remove(&k);
        }
        let span = u64::from(u16::MAX - NAT_PORT_MIN) + 1;
        let port = loop {
            let p = NAT_PORT_MIN + self.rng.below(span) as u16;
            if !self.by_port.contains_key(&p) {
                break p;
            }
        };
        self.by_key.insert(key, port);
        self.by_port.insert(
            port,
            Entry {
                key,
                last_used_us: now_us,
                allowed: BTreeSet::new(),
            },
        );
        port
    }

    /// A datagram from `src` arrives at public port `port`: the node's internal port if a
    /// live mapping lets it in (and it refreshes the mapping), else `None` (counted).
    pub fn inbound(&mut self, now_us: u64, port: u16, src: SocketAddr) -> Option<u16> {
        if self.expire(port, now_us) {
            self.refused += 1;
            return None;
        }
        let filtering = self.ty.filtering;
        let e = self.by_port.get_mut(&port)?;
        let ok = match filtering {
            Filtering::EndpointIndependent => true,
            Filtering::AddressPortDependent => e.allowed.contains(&src),
        };
        if !ok {
            self.refused += 1;
            return None;
        }
        e.last_used_us = now_us;
        Some(e.key.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn mapping_and_filtering_behave_as_named() {
        let (p, q) = (sa("10.0.0.1:6783"), sa("10.0.1.1:6783"));
        for ty in NatType::ALL {
            let mut b = NatBox::new(ty, Ipv4Addr::new(11, 0, 0, 1), 1_000_000, 7);
            let to_p = b.outbound(0, 6783, p);
            let to_q = b.outbound(0, 6783, q);
            assert_eq!(
                to_p == to_q,
                ty.mapping == Mapping::EndpointIndependent,
                "{ty}"
            );
            assert_eq!(b.outbound(1, 6783, p), to_p, "{ty}: a mapping is kept");
            assert_eq!(b.inbound(2, to_p.port(), p), Some(6783), "{ty}");
            // q never got anything from the p mapping's port.
            let stranger = b.inbound(2, to_p.port(), sa("10.0.2.1:6783"));
            assert_eq!(
                stranger.is_some(),
                ty.filtering == Filtering::EndpointIndependent,
                "{ty}"
            );
            assert_eq!(b.inbound(2, 1, p), None, "{ty}: no mapping on that port");
            // Idle past the timeout: gone, and a new port next time.
            assert_eq!(b.inbound(3_000_000, to_p.port(), p), None, "{ty}");
            b.flush();
            assert_eq!(b.mappings(), 0);
        }
    }

    #[test]
    fn traffic_either_way_keeps_a_mapping() {
        let p = sa("10.0.0.1:6783");
        let mut b = NatBox::new(
            NatType::PORT_RESTRICTED,
            Ipv4Addr::new(11, 0, 0, 1),
            1_000,
            1,
        );
        let m = b.outbound(0, 6783, p);
        for t in 1..10 {
            assert_eq!(b.inbound(t * 900, m.port(), p), Some(6783));
        }
        assert_eq!(b.outbound(9_000, 6783, p), m);
        assert_eq!(b.inbound(20_000, m.port(), p), None);
        assert_eq!(b.expired, 1);
    }

    #[test]
    fn punchable_needs_open_filtering_opposite_a_dependent_mapping() {
        use NatType as T;
        assert!(T::punchable(T::FULL_CONE, T::SYMMETRIC));
        assert!(T::punchable(T::PORT_RESTRICTED, T::PORT_RESTRICTED));
        assert!(T::punchable(T::SYMMETRIC_OPEN, T::FULL_CONE));
        assert!(!T::punchable(T::PORT_RESTRICTED, T::SYMMETRIC));
        assert!(!T::punchable(T::SYMMETRIC, T::SYMMETRIC));
        assert!(T::punchable(T::SYMMETRIC_OPEN, T::SYMMETRIC_OPEN));
        assert!(!T::punchable(T::PORT_RESTRICTED, T::SYMMETRIC_OPEN));
    }
}
