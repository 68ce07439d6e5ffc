//! The policy gossip codec (channel [`crate::wire::frame::CHANNEL_POLICY`]) and the
//! state file of the shared part ([`emit_export`] / [`parse_export`]).
//!
//! A message (big-endian) is `version u8 | kind u8 | count u16 | entries`, all entries of
//! one part, in strictly increasing key order (one state per key, one encoding per
//! message: a parsed message re-emits to exactly its input, which the fuzz target checks).
//! Kinds and entries (`flags` bit 0: live; other bits zero; the value only when live):
//! - 1 policies: `namespace s8 | name s8 | lamport u64 | writer (6) | flags | policy`
//! - 2 namespaces: `name s8 | lamport u64 | writer (6) | flags | labels`
//! - 3 pods: `owner (6) | id s8 | version u64 | flags | pod`
//!
//! `s8`/`s16` are u8/u16-length-prefixed UTF-8 strings, lists a u16 count then the items.
//! A policy is `selector | flags u8 (bit 0 ingress, bit 1 egress isolates) | ingress
//! rules | egress rules`; a rule `peers | ports`; a peer `1 | which u8 (bit 0 pods, bit 1
//! namespaces; not 0) | selectors` or `2 | cidr | except cidrs`; a cidr `addr [4] |
//! prefix u8` (host bits zero); a port `proto u8 (IP number) | 0` (any), `| 1 | port u16
//! | end u16` or `| 2 | name s8`; a selector `labels | expressions`, an expression `key s16
//! | op u8 (0 In, 1 NotIn, 2 Exists, 3 DoesNotExist) | values (s8 each)`; labels `count
//! | (key s16 | value s8)*` in strictly increasing key order; a pod `addrs ([4] each) |
//! namespace s8 | labels | named ports (name s8 | proto u8 | port u16)`. Every decoded
//! value passes the model's checks ([`Policy::check`], [`crate::policy::table::check_pod`], ...).

mod values;

use self::values::{
    emit_policy_entry, labels, live, name, pod, policy_body, put_labels, put_pod, put_s8,
    put_stamp, s8, stamp,
};
use super::table::{POD_ID_LEN_MAX, PodKey, Stamp, check_pod_id};
use super::{Labels, NAME_LEN_MAX, Pod, Policy, PolicyKey};
use crate::wire::WireError;
use crate::wire::buf::{Reader, Writer};
use alloc::string::String;
use alloc::vec::Vec;

/// The policy codec version this build speaks.
pub const POLICY_WIRE_VERSION: u8 = 1;
/// Longest message (well under a gossip payload); the encoder starts a new message
/// before an entry would cross it.
pub const POLICY_MSG_LEN_MAX: usize = 64 * 1024;
/// Bytes of a message header.
pub const POLICY_HEADER_LEN_BYTES: usize = 4;
/// Longest encoded entry: one entry must fit one message.
pub const ENTRY_LEN_MAX: usize = POLICY_MSG_LEN_MAX - POLICY_HEADER_LEN_BYTES;
/// Most entries in one message.
pub const ENTRIES_PER_MSG_MAX: usize = 1024;
/// Most messages in a state file.
pub const EXPORT_MSGS_MAX: usize = 8192;
/// Shortest encoded entry (a pod tombstone with a one-byte id).
const ENTRY_LEN_MIN: usize = 6 + 2 + 8 + 1;

const KIND_POLICIES: u8 = 1;
const KIND_NAMESPACES: u8 = 2;
const KIND_PODS: u8 = 3;
const KIND_EXPORT: u8 = 4;
const FLAG_LIVE: u8 = 1;

/// One policy's replicated state: its stamp, and the policy or `None` once deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyEntry {
    /// Which policy.
    pub key: PolicyKey,
    /// Who wrote it last, when (Lamport).
    pub stamp: Stamp,
    /// The policy (its key equals `key`), or `None`: deleted.
    pub policy: Option<Policy>,
}

/// One namespace's replicated labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceEntry {
    /// The namespace.
    pub name: String,
    /// Who wrote it last, when (Lamport).
    pub stamp: Stamp,
    /// Its labels, or `None`: removed.
    pub labels: Option<Labels>,
}

/// One attachment's replicated state, owned by `key.owner`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodEntry {
    /// Owner and attachment id.
    pub key: PodKey,
    /// The owner's version; higher wins.
    pub version: u64,
    /// The pod, or `None`: detached.
    pub pod: Option<Pod>,
}

/// One parsed message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Msg {
    /// Policy entries.
    Policies(Vec<PolicyEntry>),
    /// Namespace entries.
    Namespaces(Vec<NamespaceEntry>),
    /// Pod entries.
    Pods(Vec<PodEntry>),
}

impl Msg {
    /// The message's bytes (exactly what [`parse`] read, for a parsed one).
    pub fn to_vec(&self) -> Result<Vec<u8>, WireError> {
        match self {
            Self::Policies(v) => to_vec(&v.iter().collect::<Vec<_>>()),
            Self::Namespaces(v) => to_vec(&v.iter().collect::<Vec<_>>()),
            Self::Pods(v) => to_vec(&v.iter().collect::<Vec<_>>()),
        }
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        match self {
            Self::Policies(v) => v.len(),
            Self::Namespaces(v) => v.len(),
            Self::Pods(v) => v.len(),
        }
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An entry type of a message kind: how it is keyed, written and read.
pub trait Entry: Sized {
    /// What orders entries in a message.
    type Key: Ord;
    /// The message kind byte.
    const KIND: u8;
    /// The entry's key.
    fn key(&self) -> &Self::Key;
    /// Writes the entry.
    fn emit(&self, w: &mut Writer<'_>) -> Result<(), WireError>;
    /// Reads and checks one entry.
    fn parse(r: &mut Reader<'_>) -> Result<Self, WireError>;
    /// The message of these entries.
    fn wrap(v: Vec<Self>) -> Msg;
}

impl Entry for PolicyEntry {
    type Key = PolicyKey;
    const KIND: u8 = KIND_POLICIES;
    fn key(&self) -> &PolicyKey {
        &self.key
    }
    fn emit(&self, w: &mut Writer<'_>) -> Result<(), WireError> {
        emit_policy_entry(w, &self.key, self.stamp, self.policy.as_ref())
    }
    fn parse(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let key = PolicyKey {
            namespace: name(r)?,
            name: name(r)?,
        };
        let stamp = stamp(r)?;
        let policy = if live(r)? {
            Some(policy_body(r, key.clone())?)
        } else {
            None
        };
        Ok(Self { key, stamp, policy })
    }
    fn wrap(v: Vec<Self>) -> Msg {
        Msg::Policies(v)
    }
}

impl Entry for NamespaceEntry {
    type Key = String;
    const KIND: u8 = KIND_NAMESPACES;
    fn key(&self) -> &String {
        &self.name
    }
    fn emit(&self, w: &mut Writer<'_>) -> Result<(), WireError> {
        put_s8(w, &self.name, NAME_LEN_MAX)?;
        put_stamp(w, self.stamp)?;
        w.u8(if self.labels.is_some() { FLAG_LIVE } else { 0 })?;
        self.labels.as_ref().map_or(Ok(()), |l| put_labels(w, l))
    }
    fn parse(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let name = name(r)?;
        let stamp = stamp(r)?;
        let labels = if live(r)? { Some(labels(r)?) } else { None };
        Ok(Self {
            name,
            stamp,
            labels,
        })
    }
    fn wrap(v: Vec<Self>) -> Msg {
        Msg::Namespaces(v)
    }
}

impl Entry for PodEntry {
    type Key = PodKey;
    const KIND: u8 = KIND_PODS;
    fn key(&self) -> &PodKey {
        &self.key
    }
    fn emit(&self, w: &mut Writer<'_>) -> Result<(), WireError> {
        w.peer_name(self.key.owner)?;
        put_s8(w, &self.key.id, POD_ID_LEN_MAX)?;
        w.u64(self.version)?;
        w.u8(if self.pod.is_some() { FLAG_LIVE } else { 0 })?;
        self.pod.as_ref().map_or(Ok(()), |p| put_pod(w, p))
    }
    fn parse(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let owner = r.peer_name()?;
        let id = String::from(s8(r, POD_ID_LEN_MAX)?);
        check_pod_id(&id).map_err(|_| WireError::Inconsistent)?;
        let version = r.u64()?;
        let pod = if live(r)? { Some(pod(r)?) } else { None };
        Ok(Self {
            key: PodKey { owner, id },
            version,
            pod,
        })
    }
    fn wrap(v: Vec<Self>) -> Msg {
        Msg::Pods(v)
    }
}

/// Parses one message.
pub fn parse(buf: &[u8]) -> Result<Msg, WireError> {
    if buf.len() > POLICY_MSG_LEN_MAX {
        return Err(WireError::Oversized);
    }
    let mut r = Reader::new(buf);
    if r.u8()? != POLICY_WIRE_VERSION {
        return Err(WireError::UnsupportedVersion);
    }
    let msg = match r.u8()? {
        KIND_POLICIES => parse_entries::<PolicyEntry>(&mut r)?,
        KIND_NAMESPACES => parse_entries::<NamespaceEntry>(&mut r)?,
        KIND_PODS => parse_entries::<PodEntry>(&mut r)?,
        _ => return Err(WireError::UnknownType),
    };
    r.finish()?;
    Ok(msg)
}

fn parse_entries<E: Entry>(r: &mut Reader<'_>) -> Result<Msg, WireError> {
    let count = r.count(ENTRIES_PER_MSG_MAX, ENTRY_LEN_MIN)?;
    let mut out: Vec<E> = Vec::with_capacity(count);
    for _ in 0..count {
        let e = E::parse(r)?;
        if out.last().is_some_and(|prev| prev.key() >= e.key()) {
            return Err(WireError::Inconsistent);
        }
        out.push(e);
    }
    Ok(E::wrap(out))
}

/// One message of `entries` (strictly increasing keys, at most [`ENTRIES_PER_MSG_MAX`],
/// within [`POLICY_MSG_LEN_MAX`]).
pub fn to_vec<E: Entry>(entries: &[&E]) -> Result<Vec<u8>, WireError> {
    if entries.len() > ENTRIES_PER_MSG_MAX {
        return Err(WireError::Oversized);
    }
    if entries.windows(2).any(|w| w[0].key() >= w[1].key()) {
        return Err(WireError::Inconsistent);
    }
    let mut buf = alloc::vec![0u8; POLICY_MSG_LEN_MAX];
    let mut w = Writer::new(&mut buf);
    w.u8(POLICY_WIRE_VERSION)?;
    w.u8(E::KIND)?;
    // entries.len() <= ENTRIES_PER_MSG_MAX < u16::MAX.
    w.u16(entries.len() as u16)?;
    for e in entries {
        e.emit(&mut w)?;
    }
    let n = w.len();
    buf.truncate(n);
    Ok(buf)
}

/// Encodes `entries` (in key order) as few messages as the limits allow. An entry out of
/// order, or too big for a message on its own, is skipped, never sent.
pub fn encode_all<'e, E: Entry + 'e>(entries: impl IntoIterator<Item = &'e E>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = alloc::vec![0u8; POLICY_MSG_LEN_MAX];
    let (mut len, mut count) = (POLICY_HEADER_LEN_BYTES, 0usize);
    let mut last: Option<&E::Key> = None;
    let flush = |buf: &mut [u8], len: usize, count: usize, out: &mut Vec<Vec<u8>>| {
        if count > 0 {
            buf[0] = POLICY_WIRE_VERSION;
            buf[1] = E::KIND;
            buf[2..4].copy_from_slice(&(count as u16).to_be_bytes());
            out.push(buf[..len].to_vec());
        }
    };
    for e in entries {
        if last.is_some_and(|k| k >= e.key()) {
            continue;
        }
        if count == ENTRIES_PER_MSG_MAX {
            flush(&mut buf, len, count, &mut out);
            (len, count) = (POLICY_HEADER_LEN_BYTES, 0);
        }
        let mut w = Writer::new(&mut buf[len..]);
        let n = match e.emit(&mut w).map(|()| w.len()) {
            Ok(n) => n,
            Err(_) if count > 0 => {
                flush(&mut buf, len, count, &mut out);
                (len, count) = (POLICY_HEADER_LEN_BYTES, 0);
                let mut w = Writer::new(&mut buf[len..]);
                match e.emit(&mut w).map(|()| w.len()) {
                    Ok(n) => n,
                    Err(_) => continue,
                }
            }
            Err(_) => continue,
        };
        len += n;
        count += 1;
        last = Some(e.key());
    }
    flush(&mut buf, len, count, &mut out);
    out
}

/// Whether `policy` fits one message (an apply refuses one that does not).
pub fn policy_fits(policy: &Policy) -> bool {
    let mut buf = alloc::vec![0u8; ENTRY_LEN_MAX];
    let stamp = Stamp::default();
    emit_policy_entry(&mut Writer::new(&mut buf), &policy.key, stamp, Some(policy)).is_ok()
}

/// The shared part of a table as a state file: clocks and messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Export {
    /// The Lamport clock of the policy and namespace stamps.
    pub lamport: u64,
    /// The highest version of the writer's own pods.
    pub pod_version: u64,
    /// Policy and namespace messages (never pods).
    pub msgs: Vec<Msg>,
}

/// A state file: `version u8 | 4 | lamport u64 | pod version u64 | count u32 | (len u32 |
/// message)*`, the messages encoded as gossip.
pub fn emit_export(lamport: u64, pod_version: u64, msgs: &[Vec<u8>]) -> Vec<u8> {
    let mut out = alloc::vec![POLICY_WIRE_VERSION, KIND_EXPORT];
    out.extend_from_slice(&lamport.to_be_bytes());
    out.extend_from_slice(&pod_version.to_be_bytes());
    let msgs = &msgs[..msgs.len().min(EXPORT_MSGS_MAX)];
    out.extend_from_slice(&(msgs.len() as u32).to_be_bytes());
    for m in msgs {
        out.extend_from_slice(&(m.len() as u32).to_be_bytes());
        out.extend_from_slice(m);
    }
    out
}

/// Parses a state file written by [`emit_export`]; all or nothing.
pub fn parse_export(buf: &[u8]) -> Result<Export, WireError> {
    let mut r = Reader::new(buf);
    if r.u8()? != POLICY_WIRE_VERSION {
        return Err(WireError::UnsupportedVersion);
    }
    if r.u8()? != KIND_EXPORT {
        return Err(WireError::UnknownType);
    }
    let lamport = r.u64()?;
    let pod_version = r.u64()?;
    let count = r.u32()? as usize;
    if count > EXPORT_MSGS_MAX {
        return Err(WireError::Oversized);
    }
    let mut msgs = Vec::new();
    for _ in 0..count {
        let len = r.u32()? as usize;
        let msg = parse(r.bytes(len)?)?;
        if matches!(msg, Msg::Pods(_)) {
            return Err(WireError::Inconsistent);
        }
        msgs.push(msg);
    }
    r.finish()?;
    Ok(Export {
        lamport,
        pod_version,
        msgs,
    })
}
