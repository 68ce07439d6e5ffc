//! The DNS gossip codec (channel [`crate::wire::frame::CHANNEL_DNS`]).
//!
//! Layout (big-endian): `version u8 | kind u8 | count u16 | records`, with one kind so
//! far (1, records). A record is `owner name (6) | version u64 | flags u8 | addr [4] |
//! container (u8 len + bytes) | name (u8 len + bytes)`; flag bit 0 marks a tombstone and
//! the other bits must be zero. Records are in strictly increasing key order (name,
//! address, owner, container), names canonical (lowercase, no trailing dot): a parsed
//! message re-emits to exactly its input bytes, which the fuzz target checks.

use super::{CONTAINER_LEN_MAX, Container, DnsName, NAME_LEN_MAX, Record, RecordKey};
use crate::wire::WireError;
use crate::wire::buf::{Reader, Writer};
use alloc::vec::Vec;
use core::net::Ipv4Addr;

/// The DNS codec version this build speaks.
pub const DNS_WIRE_VERSION: u8 = 1;
/// Most records in one message.
pub const DNS_RECORDS_PER_MSG_MAX: usize = 1024;
/// Bytes of a message header.
pub const DNS_HEADER_LEN_BYTES: usize = 4;
/// Bytes of a record before its container and name.
pub const RECORD_FIXED_LEN_BYTES: usize = 6 + 8 + 1 + 4 + 1 + 1;
/// Longest encoded record.
pub const RECORD_LEN_MAX: usize = RECORD_FIXED_LEN_BYTES + CONTAINER_LEN_MAX + NAME_LEN_MAX;
/// Longest DNS message (well under a gossip payload); the encoder starts a new message
/// before a record would cross it.
pub const DNS_MSG_LEN_MAX: usize = 64 * 1024;

const KIND_RECORDS: u8 = 1;
const FLAG_TOMBSTONE: u8 = 1;

/// Parses one message into its records (in key order).
pub fn parse(buf: &[u8]) -> Result<Vec<Record>, WireError> {
    if buf.len() > DNS_MSG_LEN_MAX {
        return Err(WireError::Oversized);
    }
    let mut r = Reader::new(buf);
    if r.u8()? != DNS_WIRE_VERSION {
        return Err(WireError::UnsupportedVersion);
    }
    if r.u8()? != KIND_RECORDS {
        return Err(WireError::UnknownType);
    }
    let count = r.count(DNS_RECORDS_PER_MSG_MAX, RECORD_FIXED_LEN_BYTES)?;
    let mut out: Vec<Record> = Vec::with_capacity(count);
    for _ in 0..count {
        let owner = r.peer_name()?;
        let version = r.u64()?;
        let flags = r.u8()?;
        if flags & !FLAG_TOMBSTONE != 0 {
            return Err(WireError::Inconsistent);
        }
        let addr = Ipv4Addr::from(r.array::<4>()?);
        let container = Container::from_bytes(r.short_bytes(CONTAINER_LEN_MAX)?)
            .map_err(|_| WireError::Inconsistent)?;
        let name = DnsName::from_canonical(r.short_bytes(NAME_LEN_MAX)?)
            .map_err(|_| WireError::Inconsistent)?;
        let key = RecordKey {
            name,
            addr,
            owner,
            container,
        };
        if out.last().is_some_and(|prev| prev.key >= key) {
            return Err(WireError::Inconsistent);
        }
        out.push(Record {
            key,
            version,
            tombstone: flags & FLAG_TOMBSTONE != 0,
        });
    }
    r.finish()?;
    Ok(out)
}

/// Bytes `rec` takes encoded.
pub fn record_len(rec: &Record) -> usize {
    RECORD_FIXED_LEN_BYTES + rec.key.container.as_str().len() + rec.key.name.as_str().len()
}

/// Writes `records` (strictly increasing keys, at most [`DNS_RECORDS_PER_MSG_MAX`]) as one
/// message into `buf`; returns its length.
pub fn emit(records: &[&Record], buf: &mut [u8]) -> Result<usize, WireError> {
    if records.len() > DNS_RECORDS_PER_MSG_MAX {
        return Err(WireError::Oversized);
    }
    if records.windows(2).any(|w| w[0].key >= w[1].key) {
        return Err(WireError::Inconsistent);
    }
    let mut w = Writer::new(buf);
    w.u8(DNS_WIRE_VERSION)?;
    w.u8(KIND_RECORDS)?;
    // records.len() <= DNS_RECORDS_PER_MSG_MAX < u16::MAX.
    w.u16(records.len() as u16)?;
    for rec in records {
        w.peer_name(rec.key.owner)?;
        w.u64(rec.version)?;
        w.u8(if rec.tombstone { FLAG_TOMBSTONE } else { 0 })?;
        w.bytes(&rec.key.addr.octets())?;
        w.short_bytes(rec.key.container.as_str().as_bytes(), CONTAINER_LEN_MAX)?;
        w.short_bytes(rec.key.name.as_str().as_bytes(), NAME_LEN_MAX)?;
    }
    Ok(w.len())
}

/// Encodes `records` (in key order) as few messages as fit [`DNS_RECORDS_PER_MSG_MAX`]
/// and [`DNS_MSG_LEN_MAX`] each. Records out of order or invalid are skipped, never sent.
pub fn encode_all<'r>(records: impl IntoIterator<Item = &'r Record>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut batch: Vec<&Record> = Vec::new();
    let mut len = DNS_HEADER_LEN_BYTES;
    let mut buf = alloc::vec![0u8; DNS_MSG_LEN_MAX];
    let mut flush = |batch: &mut Vec<&Record>, out: &mut Vec<Vec<u8>>| {
        if let Ok(n) = emit(batch, &mut buf) {
            out.push(buf[..n].to_vec());
        }
        batch.clear();
    };
    for rec in records {
        if batch.last().is_some_and(|p| p.key >= rec.key) {
            continue;
        }
        let n = record_len(rec);
        if batch.len() == DNS_RECORDS_PER_MSG_MAX || len + n > DNS_MSG_LEN_MAX {
            flush(&mut batch, &mut out);
            len = DNS_HEADER_LEN_BYTES;
        }
        batch.push(rec);
        len += n;
    }
    if !batch.is_empty() {
        flush(&mut batch, &mut out);
    }
    out
}

/// One message's bytes for `records`, or an error (tests, fuzz seeds).
pub fn to_vec(records: &[&Record]) -> Result<Vec<u8>, WireError> {
    let mut buf = alloc::vec![0u8; DNS_MSG_LEN_MAX];
    let n = emit(records, &mut buf)?;
    buf.truncate(n);
    Ok(buf)
}
