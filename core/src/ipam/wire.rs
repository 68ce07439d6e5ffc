//! The IPAM gossip codec (channel [`crate::wire::frame::CHANNEL_IPAM`]).
//!
//! Layout (big-endian): `version u8 | kind u8 | body`.
//!
//! | kind | body |
//! |---|---|
//! | 1 ring | `seeder name | nonce u64 | range u32 | prefix u8 | flags u8 | count u16 | entries` |
//! | 2 proposal | `quorum u16 | count u16 | names (strictly increasing)` |
//! | 3 donate request | `route | ask u64 | subnet u32 | prefix u8 | has_addr u8 | [addr u32]` |
//! | 4 donate reply | `route | ask u64 | outcome u8 | seeder | nonce u64 | count u16 | entries` |
//! | 5 ring pull | (empty) |
//!
//! `route` is `src name | dst name | ttl u8`; an entry is `token u32 | owner name |
//! version u64 | free u32` with tokens strictly increasing. Encodings are canonical: a
//! parsed message re-emits to exactly its input bytes (the fuzz target checks this).

use super::ring::{Entry, RING_ENTRIES_MAX, RingId};
use super::space::{Cidr, PREFIX_LEN_MAX, PREFIX_LEN_MIN};
use crate::peer::PeerName;
use crate::wire::WireError;
use crate::wire::buf::{Reader, Writer};
use alloc::vec::Vec;
use core::net::Ipv4Addr;

/// The IPAM codec version this build speaks.
pub const IPAM_WIRE_VERSION: u8 = 1;
/// Most entries in one ring or reply message.
pub const IPAM_ENTRIES_PER_MSG_MAX: usize = RING_ENTRIES_MAX;
/// Most names in one consensus proposal (and the largest quorum).
pub const PROPOSAL_NAMES_MAX: usize = 256;
/// Bytes of one encoded entry.
pub const ENTRY_LEN_BYTES: usize = 4 + PeerName::WIRE_LEN + 8 + 4;
/// Longest IPAM message (a full ring), well under a gossip payload.
pub const IPAM_MSG_LEN_MAX: usize = 64 + IPAM_ENTRIES_PER_MSG_MAX * ENTRY_LEN_BYTES;
/// Hops a unicast IPAM message may travel.
pub const IPAM_TTL_MAX: u8 = 32;

const KIND_RING: u8 = 1;
const KIND_PROPOSAL: u8 = 2;
const KIND_DONATE_REQUEST: u8 = 3;
const KIND_DONATE_REPLY: u8 = 4;
const KIND_RING_PULL: u8 = 5;
const FLAG_FULL: u8 = 1;

/// Source, destination and remaining hops of a unicast message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// Who sent it.
    pub src: PeerName,
    /// Who it is for.
    pub dst: PeerName,
    /// Hops left; a relay drops it at zero.
    pub ttl: u8,
}

/// How a donor answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Space was given; the reply carries the changed entries.
    Donated = 0,
    /// The donor has no free space in that subnet.
    Empty = 1,
    /// The asked-for address is in use at the donor.
    InUse = 2,
    /// The donor does not own that address (any more).
    NotOwner = 3,
    /// The donor has no ring, or its ring is full.
    Unable = 4,
}

impl Outcome {
    fn from_u8(v: u8) -> Result<Self, WireError> {
        Ok(match v {
            0 => Self::Donated,
            1 => Self::Empty,
            2 => Self::InUse,
            3 => Self::NotOwner,
            4 => Self::Unable,
            _ => return Err(WireError::UnknownType),
        })
    }
}

/// One IPAM message, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IpamMsg {
    /// Ring entries (all of them when `full`).
    Ring {
        /// Which ring.
        id: RingId,
        /// The range it partitions (peers with another range ignore it).
        range: Cidr,
        /// True if these are all of the sender's entries.
        full: bool,
        /// Entries in token order.
        entries: Vec<(u32, Entry)>,
    },
    /// A consensus proposal: the initial peers the sender has heard of.
    Proposal {
        /// The sender's quorum.
        quorum: u16,
        /// Names in increasing order.
        names: Vec<PeerName>,
    },
    /// Asks `route.dst` for space in `subnet` (or for the one address `addr`).
    DonateRequest {
        /// Addressing.
        route: Route,
        /// The asker's id for the request.
        ask: u64,
        /// The subnet (network address and prefix).
        subnet: Cidr,
        /// A specific address (a claim), if any.
        addr: Option<u32>,
    },
    /// The answer to a [`IpamMsg::DonateRequest`].
    DonateReply {
        /// Addressing.
        route: Route,
        /// The asker's id, echoed.
        ask: u64,
        /// What the donor did.
        outcome: Outcome,
        /// The donor's ring.
        id: RingId,
        /// The entries the donation changed (empty unless donated).
        entries: Vec<(u32, Entry)>,
    },
    /// Asks the neighbour for its full ring (sent by a peer without one).
    RingPull,
}

fn read_entries(r: &mut Reader<'_>) -> Result<Vec<(u32, Entry)>, WireError> {
    let count = r.count(IPAM_ENTRIES_PER_MSG_MAX, ENTRY_LEN_BYTES)?;
    let mut out: Vec<(u32, Entry)> = Vec::with_capacity(count);
    for _ in 0..count {
        let token = r.u32()?;
        let owner = r.peer_name()?;
        let version = r.u64()?;
        let free = r.u32()?;
        if out.last().is_some_and(|(t, _)| *t >= token) {
            return Err(WireError::Inconsistent);
        }
        out.push((
            token,
            Entry {
                owner,
                version,
                free,
            },
        ));
    }
    Ok(out)
}

fn write_entries(w: &mut Writer<'_>, entries: &[(u32, Entry)]) -> Result<(), WireError> {
    if entries.len() > IPAM_ENTRIES_PER_MSG_MAX {
        return Err(WireError::Oversized);
    }
    if entries.windows(2).any(|p| p[0].0 >= p[1].0) {
        return Err(WireError::Inconsistent);
    }
    w.u16(entries.len() as u16)?;
    for (t, e) in entries {
        w.u32(*t)?;
        w.peer_name(e.owner)?;
        w.u64(e.version)?;
        w.u32(e.free)?;
    }
    Ok(())
}

fn read_cidr(r: &mut Reader<'_>) -> Result<Cidr, WireError> {
    let addr = Ipv4Addr::from_bits(r.u32()?);
    let prefix = r.u8()?;
    if !(PREFIX_LEN_MIN..=PREFIX_LEN_MAX).contains(&prefix) {
        return Err(WireError::Inconsistent);
    }
    let c = Cidr {
        addr,
        prefix_len: prefix,
    };
    // Canonical: a block is sent as its network address.
    if c.network() != c {
        return Err(WireError::Inconsistent);
    }
    Ok(c)
}

fn read_ring_id(r: &mut Reader<'_>) -> Result<RingId, WireError> {
    Ok(RingId {
        seeder: r.peer_name()?,
        nonce: r.u64()?,
    })
}

fn write_ring_id(w: &mut Writer<'_>, id: &RingId) -> Result<(), WireError> {
    w.peer_name(id.seeder)?;
    w.u64(id.nonce)
}

fn read_route(r: &mut Reader<'_>) -> Result<Route, WireError> {
    let src = r.peer_name()?;
    let dst = r.peer_name()?;
    let ttl = r.u8()?;
    if ttl > IPAM_TTL_MAX {
        return Err(WireError::Inconsistent);
    }
    Ok(Route { src, dst, ttl })
}

impl IpamMsg {
    /// Parses one message; rejects unknown versions and kinds, counts over their limits,
    /// non-canonical encodings and trailing bytes.
    pub fn parse(buf: &[u8]) -> Result<Self, WireError> {
        if buf.len() > IPAM_MSG_LEN_MAX {
            return Err(WireError::Oversized);
        }
        let mut r = Reader::new(buf);
        if r.u8()? != IPAM_WIRE_VERSION {
            return Err(WireError::UnsupportedVersion);
        }
        let msg = match r.u8()? {
            KIND_RING => {
                let id = read_ring_id(&mut r)?;
                let range = read_cidr(&mut r)?;
                let flags = r.u8()?;
                if flags & !FLAG_FULL != 0 {
                    return Err(WireError::Inconsistent);
                }
                let entries = read_entries(&mut r)?;
                Self::Ring {
                    id,
                    range,
                    full: flags & FLAG_FULL != 0,
                    entries,
                }
            }
            KIND_PROPOSAL => {
                let quorum = r.u16()?;
                let count = usize::from(r.u16()?);
                if count > PROPOSAL_NAMES_MAX || usize::from(quorum) > PROPOSAL_NAMES_MAX {
                    return Err(WireError::Oversized);
                }
                if quorum == 0 {
                    return Err(WireError::Inconsistent);
                }
                let mut names: Vec<PeerName> = Vec::with_capacity(count.min(r.remaining() / 6));
                for _ in 0..count {
                    let n = r.peer_name()?;
                    if names.last().is_some_and(|l| *l >= n) {
                        return Err(WireError::Inconsistent);
                    }
                    names.push(n);
                }
                Self::Proposal { quorum, names }
            }
            // Fields are evaluated in the order written: the wire order.
            KIND_DONATE_REQUEST => Self::DonateRequest {
                route: read_route(&mut r)?,
                ask: r.u64()?,
                subnet: read_cidr(&mut r)?,
                addr: match r.u8()? {
                    0 => None,
                    1 => Some(r.u32()?),
                    _ => return Err(WireError::Inconsistent),
                },
            },
            KIND_DONATE_REPLY => Self::DonateReply {
                route: read_route(&mut r)?,
                ask: r.u64()?,
                outcome: Outcome::from_u8(r.u8()?)?,
                id: read_ring_id(&mut r)?,
                entries: read_entries(&mut r)?,
            },
            KIND_RING_PULL => Self::RingPull,
            _ => return Err(WireError::UnknownType),
        };
        r.finish()?;
        Ok(msg)
    }

    /// Where a unicast message (a donation request or reply) goes; `None` for the others,
    /// which go to neighbours only.
    pub fn route(&self) -> Option<Route> {
        match self {
            Self::DonateRequest { route, .. } | Self::DonateReply { route, .. } => Some(*route),
            Self::Ring { .. } | Self::Proposal { .. } | Self::RingPull => None,
        }
    }

    /// Bytes [`IpamMsg::emit`] needs.
    pub fn buffer_len(&self) -> usize {
        2 + match self {
            Self::Ring { entries, .. } => 6 + 8 + 5 + 1 + 2 + entries.len() * ENTRY_LEN_BYTES,
            Self::Proposal { names, .. } => 4 + names.len() * PeerName::WIRE_LEN,
            Self::DonateRequest { addr, .. } => 13 + 8 + 5 + 1 + if addr.is_some() { 4 } else { 0 },
            Self::DonateReply { entries, .. } => {
                13 + 8 + 1 + 14 + 2 + entries.len() * ENTRY_LEN_BYTES
            }
            Self::RingPull => 0,
        }
    }

    /// Writes the message into `buf`; returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let mut w = Writer::new(buf);
        w.u8(IPAM_WIRE_VERSION)?;
        // A unicast message's kind, route and ask id.
        let write_unicast = |w: &mut Writer<'_>, kind, r: &Route, ask| -> Result<(), WireError> {
            w.u8(kind)?;
            w.peer_name(r.src)?;
            w.peer_name(r.dst)?;
            w.u8(r.ttl.min(IPAM_TTL_MAX))?;
            w.u64(ask)
        };
        let write_cidr = |w: &mut Writer<'_>, c: &Cidr| -> Result<(), WireError> {
            let n = c.network();
            w.u32(n.addr.to_bits())?;
            w.u8(n.prefix_len)
        };
        match self {
            Self::Ring {
                id,
                range,
                full,
                entries,
            } => {
                w.u8(KIND_RING)?;
                write_ring_id(&mut w, id)?;
                write_cidr(&mut w, range)?;
                w.u8(if *full { FLAG_FULL } else { 0 })?;
                write_entries(&mut w, entries)?;
            }
            Self::Proposal { quorum, names } => {
                if names.len() > PROPOSAL_NAMES_MAX || usize::from(*quorum) > PROPOSAL_NAMES_MAX {
                    return Err(WireError::Oversized);
                }
                if *quorum == 0 || names.windows(2).any(|p| p[0] >= p[1]) {
                    return Err(WireError::Inconsistent);
                }
                w.u8(KIND_PROPOSAL)?;
                w.u16(*quorum)?;
                w.u16(names.len() as u16)?;
                for n in names {
                    w.peer_name(*n)?;
                }
            }
            Self::DonateRequest {
                route,
                ask,
                subnet,
                addr,
            } => {
                write_unicast(&mut w, KIND_DONATE_REQUEST, route, *ask)?;
                write_cidr(&mut w, subnet)?;
                match addr {
                    None => w.u8(0)?,
                    Some(a) => {
                        w.u8(1)?;
                        w.u32(*a)?;
                    }
                }
            }
            Self::DonateReply {
                route,
                ask,
                outcome,
                id,
                entries,
            } => {
                write_unicast(&mut w, KIND_DONATE_REPLY, route, *ask)?;
                w.u8(*outcome as u8)?;
                write_ring_id(&mut w, id)?;
                write_entries(&mut w, entries)?;
            }
            Self::RingPull => w.u8(KIND_RING_PULL)?,
        }
        Ok(w.len())
    }

    /// The message encoded into a new vector.
    pub fn to_vec(&self) -> Result<Vec<u8>, WireError> {
        let mut buf = alloc::vec![0u8; self.buffer_len()];
        let n = self.emit(&mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }
}
