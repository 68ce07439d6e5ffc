//! Topology gossip codec: a message carries whole peer entries.
//!
//! ```text
//! [count u16]
//! count x { name [6] | uid u64 | version u64 | nickname (u8 len + UTF-8) | nconns u16 |
//!           nconns x { peer [6] | flags u8 | addr (family u8, ip, port u16) if HAS_ADDR } }
//! ```
//! Flags: bit 0 established, bit 1 outbound, bit 2 address present; other bits are
//! rejected. The decoder checks every count before allocating and never panics.

use super::WireError;
use super::buf::{Reader, Writer};
use crate::peer::PeerUid;
use crate::topology::{ConnInfo, NICKNAME_LEN_MAX, PEER_CONNS_MAX, PeerEntry};
use alloc::string::String;
use alloc::vec::Vec;
use core::net::SocketAddr;

/// Largest topology gossip message, in bytes.
pub const TOPOLOGY_MSG_LEN_MAX: usize = 16 * 1024;
/// Most entries one message may carry.
pub const ENTRIES_PER_MSG_MAX: usize = 1024;

/// Connection flag: the connection is established.
pub const CONN_FLAG_ESTABLISHED: u8 = 1 << 0;
/// Connection flag: the entry's owner dialled it.
pub const CONN_FLAG_OUTBOUND: u8 = 1 << 1;
/// Connection flag: an address follows.
pub const CONN_FLAG_HAS_ADDR: u8 = 1 << 2;
const CONN_FLAGS_KNOWN: u8 = CONN_FLAG_ESTABLISHED | CONN_FLAG_OUTBOUND | CONN_FLAG_HAS_ADDR;

/// Bytes of the message header (the entry count).
pub const MSG_HEADER_LEN: usize = 2;
/// Smallest encoded entry: name, uid, version, empty nickname, zero connections.
pub const ENTRY_LEN_MIN: usize = 6 + 8 + 8 + 1 + 2;
/// Smallest encoded connection: peer and flags, no address.
pub const CONN_LEN_MIN: usize = 6 + 1;
/// Largest encoded connection: peer, flags, IPv6 address and port.
pub const CONN_LEN_MAX: usize = 6 + 1 + 1 + 16 + 2;
/// Largest encoded entry within the limits of [`crate::topology`].
pub const ENTRY_LEN_MAX: usize = ENTRY_LEN_MIN + NICKNAME_LEN_MAX + PEER_CONNS_MAX * CONN_LEN_MAX;

// Any entry within the limits fits in a message on its own.
const _: () = assert!(MSG_HEADER_LEN + ENTRY_LEN_MAX <= TOPOLOGY_MSG_LEN_MAX);

fn addr_len(addr: Option<SocketAddr>) -> usize {
    match addr {
        None => 0,
        Some(SocketAddr::V4(_)) => 1 + 4 + 2,
        Some(SocketAddr::V6(_)) => 1 + 16 + 2,
    }
}

/// Encoded length of one entry.
pub fn entry_len(entry: &PeerEntry) -> usize {
    ENTRY_LEN_MIN
        + entry.nickname.len()
        + entry
            .conns
            .iter()
            .map(|c| CONN_LEN_MIN + addr_len(c.addr))
            .sum::<usize>()
}

/// Appends one entry; fails with [`WireError::Oversized`] if it breaks a limit.
pub fn emit_entry(entry: &PeerEntry, w: &mut Writer<'_>) -> Result<(), WireError> {
    if entry.conns.len() > PEER_CONNS_MAX {
        return Err(WireError::Oversized);
    }
    w.peer_name(entry.name)?;
    w.u64(entry.uid.0)?;
    w.u64(entry.version)?;
    w.short_bytes(entry.nickname.as_bytes(), NICKNAME_LEN_MAX)?;
    w.u16(entry.conns.len() as u16)?;
    for c in &entry.conns {
        w.peer_name(c.peer)?;
        let mut flags = 0;
        if c.established {
            flags |= CONN_FLAG_ESTABLISHED;
        }
        if c.outbound {
            flags |= CONN_FLAG_OUTBOUND;
        }
        if c.addr.is_some() {
            flags |= CONN_FLAG_HAS_ADDR;
        }
        w.u8(flags)?;
        if let Some(a) = c.addr {
            w.socket_addr(a)?;
        }
    }
    Ok(())
}

/// Writes a whole message carrying `entries` into `out`; returns its length.
/// Fails with [`WireError::Oversized`] past [`ENTRIES_PER_MSG_MAX`] entries or
/// [`TOPOLOGY_MSG_LEN_MAX`] bytes, [`WireError::BufferTooSmall`] if `out` is short.
pub fn emit_entries<'e>(
    entries: impl IntoIterator<Item = &'e PeerEntry>,
    out: &mut [u8],
) -> Result<usize, WireError> {
    let cap = out.len().min(TOPOLOGY_MSG_LEN_MAX);
    let limited_by_msg = cap < out.len();
    let mut w = Writer::new(&mut out[..cap]);
    w.u16(0)?;
    let mut count: usize = 0;
    for e in entries {
        if count == ENTRIES_PER_MSG_MAX {
            return Err(WireError::Oversized);
        }
        match emit_entry(e, &mut w) {
            Err(WireError::BufferTooSmall) if limited_by_msg => return Err(WireError::Oversized),
            r => r?,
        }
        count += 1;
    }
    let len = w.len();
    w.written_mut()[..2].copy_from_slice(&(count as u16).to_be_bytes());
    Ok(len)
}

fn parse_entry(r: &mut Reader<'_>) -> Result<PeerEntry, WireError> {
    let name = r.peer_name()?;
    let uid = PeerUid(r.u64()?);
    let version = r.u64()?;
    let nick = r.short_bytes(NICKNAME_LEN_MAX)?;
    let nickname = core::str::from_utf8(nick).map_err(|_| WireError::Inconsistent)?;
    let nconns = r.count(PEER_CONNS_MAX, CONN_LEN_MIN)?;
    let mut conns = Vec::with_capacity(nconns);
    for _ in 0..nconns {
        let peer = r.peer_name()?;
        let flags = r.u8()?;
        if flags & !CONN_FLAGS_KNOWN != 0 {
            return Err(WireError::Inconsistent);
        }
        let addr = if flags & CONN_FLAG_HAS_ADDR != 0 {
            Some(r.socket_addr()?)
        } else {
            None
        };
        conns.push(ConnInfo {
            peer,
            addr,
            established: flags & CONN_FLAG_ESTABLISHED != 0,
            outbound: flags & CONN_FLAG_OUTBOUND != 0,
        });
    }
    Ok(PeerEntry {
        name,
        uid,
        version,
        nickname: String::from(nickname),
        conns,
    })
}

/// Decodes a whole message. Rejects inputs over [`TOPOLOGY_MSG_LEN_MAX`], counts over
/// [`ENTRIES_PER_MSG_MAX`] / [`PEER_CONNS_MAX`], bad UTF-8, unknown flags and trailing bytes.
pub fn parse_entries(input: &[u8]) -> Result<Vec<PeerEntry>, WireError> {
    if input.len() > TOPOLOGY_MSG_LEN_MAX {
        return Err(WireError::Oversized);
    }
    let mut r = Reader::new(input);
    let count = r.count(ENTRIES_PER_MSG_MAX, ENTRY_LEN_MIN)?;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        out.push(parse_entry(&mut r)?);
    }
    r.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::PeerName;
    use crate::rng::Rng;
    use alloc::string::ToString;
    use alloc::vec;

    fn sample() -> Vec<PeerEntry> {
        vec![
            PeerEntry {
                name: PeerName::from_u64(0x0a0b_0c0d_0e0f),
                uid: PeerUid(77),
                version: 9,
                nickname: "host-α".to_string(),
                conns: vec![
                    ConnInfo {
                        peer: PeerName::from_u64(2),
                        addr: Some("10.0.0.2:6783".parse().unwrap()),
                        established: true,
                        outbound: true,
                    },
                    ConnInfo {
                        peer: PeerName::from_u64(3),
                        addr: Some("[fd00::3]:6783".parse().unwrap()),
                        established: false,
                        outbound: false,
                    },
                    ConnInfo {
                        peer: PeerName::from_u64(4),
                        addr: None,
                        established: true,
                        outbound: false,
                    },
                ],
            },
            PeerEntry::new(PeerName::from_u64(2), PeerUid(1), String::new()),
        ]
    }

    #[test]
    fn roundtrip_and_length() {
        let entries = sample();
        let mut buf = vec![0u8; TOPOLOGY_MSG_LEN_MAX];
        let n = emit_entries(&entries, &mut buf).unwrap();
        assert_eq!(
            n,
            MSG_HEADER_LEN + entries.iter().map(entry_len).sum::<usize>()
        );
        assert_eq!(parse_entries(&buf[..n]).unwrap(), entries);
        // Every strict prefix is refused, never accepted as something else.
        for cut in 0..n {
            assert!(parse_entries(&buf[..cut]).is_err(), "prefix {cut} accepted");
        }
        // Trailing garbage is refused.
        buf[n] = 0;
        assert_eq!(parse_entries(&buf[..n + 1]), Err(WireError::Inconsistent));
        let mut small = [0u8; 10];
        assert_eq!(
            emit_entries(&entries, &mut small),
            Err(WireError::BufferTooSmall)
        );
    }

    #[test]
    fn rejects_bad_fields() {
        let entries = sample();
        let mut buf = vec![0u8; 1024];
        let n = emit_entries(&entries, &mut buf).unwrap();
        let good = buf[..n].to_vec();
        // Count above the limit.
        let mut bad = good.clone();
        bad[..2].copy_from_slice(&(ENTRIES_PER_MSG_MAX as u16 + 1).to_be_bytes());
        assert_eq!(parse_entries(&bad), Err(WireError::Oversized));
        // Count larger than the bytes could hold: refused before allocating.
        let mut bad = good.clone();
        bad[..2].copy_from_slice(&1000u16.to_be_bytes());
        assert_eq!(parse_entries(&bad), Err(WireError::Truncated));
        // Unknown flag bit on the first connection.
        let nick_len = "host-α".len();
        let flags_at = 2 + 6 + 8 + 8 + 1 + nick_len + 2 + 6;
        let mut bad = good.clone();
        bad[flags_at] |= 0x80;
        assert_eq!(parse_entries(&bad), Err(WireError::Inconsistent));
        // Invalid UTF-8 nickname.
        let mut bad = good.clone();
        bad[2 + 6 + 8 + 8 + 1] = 0xff;
        assert_eq!(parse_entries(&bad), Err(WireError::Inconsistent));
        // Too many connections.
        let mut bad = good;
        let nconns_at = 2 + 6 + 8 + 8 + 1 + nick_len;
        bad[nconns_at..nconns_at + 2].copy_from_slice(&(PEER_CONNS_MAX as u16 + 1).to_be_bytes());
        assert_eq!(parse_entries(&bad), Err(WireError::Oversized));
        assert_eq!(
            parse_entries(&vec![0u8; TOPOLOGY_MSG_LEN_MAX + 1]),
            Err(WireError::Oversized)
        );
    }

    #[test]
    fn largest_entry_fits_one_message() {
        let mut e = PeerEntry::new(PeerName::from_u64(1), PeerUid(1), "x".repeat(32));
        e.conns = (0..PEER_CONNS_MAX as u64)
            .map(|p| ConnInfo {
                peer: PeerName::from_u64(p),
                addr: Some("[fd00::1]:6783".parse().unwrap()),
                established: true,
                outbound: true,
            })
            .collect();
        assert_eq!(entry_len(&e), ENTRY_LEN_MAX);
        let mut buf = vec![0u8; TOPOLOGY_MSG_LEN_MAX];
        let n = emit_entries([&e], &mut buf).unwrap();
        assert_eq!(parse_entries(&buf[..n]).unwrap(), vec![e.clone()]);
        e.conns.push(e.conns[0]);
        assert_eq!(emit_entries([&e], &mut buf), Err(WireError::Oversized));
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = Rng::from_seed(3);
        let mut buf = vec![0u8; 512];
        let n = emit_entries(&sample(), &mut buf).unwrap();
        for _ in 0..5000 {
            let mut g = buf[..n].to_vec();
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(n as u64) as usize;
                g[i] = rng.next_u64() as u8;
            }
            let _ = parse_entries(&g);
            let len = rng.below(64) as usize;
            let mut junk = vec![0u8; len];
            rng.fill_bytes(&mut junk);
            let _ = parse_entries(&junk);
        }
    }
}
