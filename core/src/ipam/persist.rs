//! Export and import of one peer's IPAM state (its ring and the addresses it gave out),
//! for the host to keep across restarts.
//!
//! Layout (big-endian): `magic "WIPM" | version u8 | name | range u32 | prefix u8 |
//! has_ring u8 | [seeder name | nonce u64 | count u32 | entries] | count u32 |
//! allocations`, where an entry is as on the wire and an allocation is
//! `addr u32 | prefix u8 | container id (u8 length + bytes)`. Pending requests are not
//! kept: their clients are gone after a restart.

use super::alloc::{Alloc, Ipam};
use super::ring::{Entry, RING_ENTRIES_MAX, RingId};
use super::space::{Cidr, PREFIX_LEN_MAX};
use super::{ALLOCATIONS_MAX, CONTAINER_ID_LEN_MAX, ContainerId, IpamConfig};
use crate::peer::PeerName;
use crate::time::{Duration, Instant};
use crate::wire::WireError;
use crate::wire::buf::{Reader, Writer};
use alloc::vec::Vec;
use core::fmt;
use core::net::Ipv4Addr;

/// First bytes of an export.
pub const PERSIST_MAGIC: [u8; 4] = *b"WIPM";
/// The export format this build writes and reads.
pub const PERSIST_VERSION: u8 = 1;

/// Why [`Ipam::import`] refused its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PersistError {
    /// Not an export, truncated or otherwise malformed.
    Malformed(WireError),
    /// Written by a format version this build does not read.
    UnsupportedVersion,
    /// Written by another peer name.
    NameMismatch,
    /// Written for another `--ipalloc-range`.
    RangeMismatch,
    /// The ring in it breaks an invariant, or an allocation lies outside our spans.
    Inconsistent,
}

impl fmt::Display for PersistError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(e) => write!(f, "IPAM state file is damaged: {e}"),
            Self::UnsupportedVersion => f.write_str("IPAM state file written by a newer weft"),
            Self::NameMismatch => f.write_str("IPAM state file belongs to another peer name"),
            Self::RangeMismatch => {
                f.write_str("IPAM state file was written for another --ipalloc-range (weft reset to start over)")
            }
            Self::Inconsistent => f.write_str("IPAM state file is inconsistent"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for PersistError {}

impl From<WireError> for PersistError {
    fn from(e: WireError) -> Self {
        Self::Malformed(e)
    }
}

impl Ipam {
    /// Our state as bytes, to be written atomically and fsynced by the host whenever
    /// [`Ipam::generation`] changed (see [`crate::ipam`]).
    pub fn export(&self) -> Vec<u8> {
        let entries_len = self.ring.len() * super::wire::ENTRY_LEN_BYTES;
        let allocs_len: usize = self
            .allocs
            .values()
            .map(|a| 6 + a.container.as_str().len())
            .sum();
        let mut buf = alloc::vec![0u8; 64 + entries_len + allocs_len];
        let mut w = Writer::new(&mut buf);
        // Cannot fail: the buffer is sized above, and every count is within its limit.
        let _ = self.write_to(&mut w);
        let n = w.len();
        buf.truncate(n);
        buf
    }

    fn write_to(&self, w: &mut Writer<'_>) -> Result<(), WireError> {
        w.bytes(&PERSIST_MAGIC)?;
        w.u8(PERSIST_VERSION)?;
        w.peer_name(self.me)?;
        w.u32(self.config.range.start())?;
        w.u8(self.config.range.prefix_len)?;
        match self.ring.id() {
            None => w.u8(0)?,
            Some(id) => {
                w.u8(1)?;
                w.peer_name(id.seeder)?;
                w.u64(id.nonce)?;
                w.u32(self.ring.len() as u32)?;
                for (t, e) in self.ring.entries() {
                    w.u32(t)?;
                    w.peer_name(e.owner)?;
                    w.u64(e.version)?;
                    w.u32(e.free)?;
                }
            }
        }
        w.u32(self.allocs.len() as u32)?;
        for (a, al) in &self.allocs {
            w.u32(*a)?;
            w.u8(al.prefix_len)?;
            w.short_bytes(al.container.as_str().as_bytes(), CONTAINER_ID_LEN_MAX)?;
        }
        Ok(())
    }

    /// Rebuilds a peer's IPAM from [`Ipam::export`] bytes (at start, before any
    /// connection). `config`, `me`, `seed`, `gossip_interval` and `now` as for
    /// [`Ipam::new`]; the export must be for the same name and range.
    pub fn import(
        config: IpamConfig,
        me: PeerName,
        seed: u64,
        gossip_interval: Duration,
        now: Instant,
        bytes: &[u8],
    ) -> Result<Self, PersistError> {
        let mut r = Reader::new(bytes);
        if r.array::<4>()? != PERSIST_MAGIC {
            return Err(PersistError::Malformed(WireError::BadMagic));
        }
        if r.u8()? != PERSIST_VERSION {
            return Err(PersistError::UnsupportedVersion);
        }
        if r.peer_name()? != me {
            return Err(PersistError::NameMismatch);
        }
        let range_start = r.u32()?;
        let prefix = r.u8()?;
        if prefix > PREFIX_LEN_MAX || Cidr::block_of(range_start, prefix) != config.range.network()
        {
            return Err(PersistError::RangeMismatch);
        }
        let mut ipam = Self::new(config, me, seed, gossip_interval, now);
        // Whatever `new` seeded is replaced by what we had.
        ipam.ring = super::ring::Ring::new(config.range);
        ipam.news.clear();
        ipam.events.clear();
        ipam.outputs.clear();
        match r.u8()? {
            0 => {}
            1 => {
                let id = RingId {
                    seeder: r.peer_name()?,
                    nonce: r.u64()?,
                };
                let count = r.u32()? as usize;
                if count > RING_ENTRIES_MAX {
                    return Err(WireError::Oversized.into());
                }
                let mut entries = Vec::with_capacity(count);
                for _ in 0..count {
                    let t = r.u32()?;
                    let e = Entry {
                        owner: r.peer_name()?,
                        version: r.u64()?,
                        free: r.u32()?,
                    };
                    if entries.last().is_some_and(|(l, _): &(u32, Entry)| *l >= t) {
                        return Err(PersistError::Inconsistent);
                    }
                    entries.push((t, e));
                }
                ipam.ring
                    .adopt(id, &entries)
                    .map_err(|_| PersistError::Inconsistent)?;
            }
            _ => return Err(WireError::Inconsistent.into()),
        }
        let count = r.u32()? as usize;
        if count > ALLOCATIONS_MAX {
            return Err(WireError::Oversized.into());
        }
        for _ in 0..count {
            let a = r.u32()?;
            let prefix_len = r.u8()?;
            let id = r.short_bytes(CONTAINER_ID_LEN_MAX)?;
            let id = core::str::from_utf8(id).map_err(|_| PersistError::Inconsistent)?;
            let container = ContainerId::new(id).map_err(|_| PersistError::Inconsistent)?;
            let cidr =
                Cidr::new(Ipv4Addr::from_bits(a), prefix_len).ok_or(PersistError::Inconsistent)?;
            if ipam.ring.owner_of(a) != Some(me) || !config.range.contains_block(&cidr.network()) {
                return Err(PersistError::Inconsistent);
            }
            if ipam
                .allocs
                .insert(
                    a,
                    Alloc {
                        container,
                        prefix_len,
                    },
                )
                .is_some()
            {
                return Err(PersistError::Inconsistent);
            }
        }
        r.finish()?;
        ipam.generation = 0;
        // No ring was saved (it did not exist yet): seed now if we are the one to.
        ipam.try_seed(now);
        Ok(ipam)
    }
}
