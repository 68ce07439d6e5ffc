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
//! value passes the model's checks ([`Policy::check`], [`check_pod`], ...).

use super::table::{POD_ID_LEN_MAX, PodKey, Stamp, check_pod, check_pod_id};
use super::{
    Cidr, IpBlock, LABEL_KEY_LEN_MAX, LABEL_VALUE_LEN_MAX, LABELS_MAX, LIST_MAX, Labels,
    NAME_LEN_MAX, NAMED_PORTS_MAX, NamedPort, Operator, Peer, Pod, Policy, PolicyKey, Port,
    PortMatch, Proto, Requirement, Rule, Selector, check_name,
};
use crate::wire::WireError;
use crate::wire::buf::{Reader, Writer};
use alloc::string::String;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

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

// ---- fields ----

fn bad<T>(_: T) -> WireError {
    WireError::Inconsistent
}

fn s8<'a>(r: &mut Reader<'a>, len_max: usize) -> Result<&'a str, WireError> {
    core::str::from_utf8(r.short_bytes(len_max)?).map_err(bad)
}

fn s16<'a>(r: &mut Reader<'a>, len_max: usize) -> Result<&'a str, WireError> {
    let n = usize::from(r.u16()?);
    if n > len_max {
        return Err(WireError::Oversized);
    }
    core::str::from_utf8(r.bytes(n)?).map_err(bad)
}

fn put_s8(w: &mut Writer<'_>, s: &str, len_max: usize) -> Result<(), WireError> {
    w.short_bytes(s.as_bytes(), len_max)
}

fn put_s16(w: &mut Writer<'_>, s: &str, len_max: usize) -> Result<(), WireError> {
    if s.len() > len_max || s.len() > usize::from(u16::MAX) {
        return Err(WireError::Oversized);
    }
    w.u16(s.len() as u16)?;
    w.bytes(s.as_bytes())
}

/// A list's count; the caller's `len_max` is at most [`LIST_MAX`]-sized, so it fits u16.
fn put_count(w: &mut Writer<'_>, n: usize, len_max: usize) -> Result<(), WireError> {
    if n > len_max || n > usize::from(u16::MAX) {
        return Err(WireError::Oversized);
    }
    w.u16(n as u16)
}

fn name(r: &mut Reader<'_>) -> Result<String, WireError> {
    let s = s8(r, NAME_LEN_MAX)?;
    check_name(s).map_err(bad)?;
    Ok(String::from(s))
}

fn stamp(r: &mut Reader<'_>) -> Result<Stamp, WireError> {
    Ok(Stamp {
        lamport: r.u64()?,
        writer: r.peer_name()?,
    })
}

fn put_stamp(w: &mut Writer<'_>, s: Stamp) -> Result<(), WireError> {
    w.u64(s.lamport)?;
    w.peer_name(s.writer)
}

fn live(r: &mut Reader<'_>) -> Result<bool, WireError> {
    match r.u8()? {
        0 => Ok(false),
        FLAG_LIVE => Ok(true),
        _ => Err(WireError::Inconsistent),
    }
}

fn emit_policy_entry(
    w: &mut Writer<'_>,
    key: &PolicyKey,
    stamp: Stamp,
    policy: Option<&Policy>,
) -> Result<(), WireError> {
    put_s8(w, &key.namespace, NAME_LEN_MAX)?;
    put_s8(w, &key.name, NAME_LEN_MAX)?;
    put_stamp(w, stamp)?;
    let Some(p) = policy else {
        return w.u8(0);
    };
    if p.key != *key {
        return Err(WireError::Inconsistent);
    }
    w.u8(FLAG_LIVE)?;
    put_selector(w, &p.pod_selector)?;
    w.u8(u8::from(p.ingress_isolates) | u8::from(p.egress_isolates) << 1)?;
    for rules in [&p.ingress, &p.egress] {
        put_count(w, rules.len(), LIST_MAX)?;
        for rule in rules {
            put_rule(w, rule)?;
        }
    }
    Ok(())
}

fn policy_body(r: &mut Reader<'_>, key: PolicyKey) -> Result<Policy, WireError> {
    let pod_selector = selector(r)?;
    let flags = r.u8()?;
    if flags & !3 != 0 {
        return Err(WireError::Inconsistent);
    }
    let mut dirs = [Vec::new(), Vec::new()];
    for rules in &mut dirs {
        let n = r.count(LIST_MAX, 4)?;
        rules.reserve_exact(n);
        for _ in 0..n {
            rules.push(rule(r)?);
        }
    }
    let [ingress, egress] = dirs;
    let p = Policy {
        key,
        pod_selector,
        ingress_isolates: flags & 1 != 0,
        egress_isolates: flags & 2 != 0,
        ingress,
        egress,
    };
    p.check().map_err(bad)?;
    Ok(p)
}

fn put_rule(w: &mut Writer<'_>, rule: &Rule) -> Result<(), WireError> {
    put_count(w, rule.peers.len(), LIST_MAX)?;
    for p in &rule.peers {
        match p {
            Peer::Pods { pods, namespaces } => {
                w.u8(1)?;
                w.u8(u8::from(pods.is_some()) | u8::from(namespaces.is_some()) << 1)?;
                for s in pods.iter().chain(namespaces) {
                    put_selector(w, s)?;
                }
            }
            Peer::Block(b) => {
                w.u8(2)?;
                put_cidr(w, b.cidr)?;
                put_count(w, b.except.len(), LIST_MAX)?;
                for c in &b.except {
                    put_cidr(w, *c)?;
                }
            }
        }
    }
    put_count(w, rule.ports.len(), LIST_MAX)?;
    for p in &rule.ports {
        w.u8(p.proto.number())?;
        match &p.port {
            PortMatch::Any => w.u8(0)?,
            PortMatch::Range { port, end } => {
                w.u8(1)?;
                w.u16(*port)?;
                w.u16(*end)?;
            }
            PortMatch::Named(n) => {
                w.u8(2)?;
                put_s8(w, n, NAME_LEN_MAX)?;
            }
        }
    }
    Ok(())
}

fn rule(r: &mut Reader<'_>) -> Result<Rule, WireError> {
    let n = r.count(LIST_MAX, 6)?;
    let mut peers = Vec::with_capacity(n);
    for _ in 0..n {
        peers.push(match r.u8()? {
            1 => {
                let which = r.u8()?;
                if which == 0 || which & !3 != 0 {
                    return Err(WireError::Inconsistent);
                }
                let pods = if which & 1 != 0 {
                    Some(selector(r)?)
                } else {
                    None
                };
                let namespaces = if which & 2 != 0 {
                    Some(selector(r)?)
                } else {
                    None
                };
                Peer::Pods { pods, namespaces }
            }
            2 => {
                let cidr = cidr(r)?;
                let m = r.count(LIST_MAX, 5)?;
                let mut except = Vec::with_capacity(m);
                for _ in 0..m {
                    except.push(self::cidr(r)?);
                }
                Peer::Block(IpBlock { cidr, except })
            }
            _ => return Err(WireError::UnknownType),
        });
    }
    let n = r.count(LIST_MAX, 2)?;
    let mut ports = Vec::with_capacity(n);
    for _ in 0..n {
        let proto = Proto::from_number(r.u8()?).ok_or(WireError::Inconsistent)?;
        let port = match r.u8()? {
            0 => PortMatch::Any,
            1 => PortMatch::Range {
                port: r.u16()?,
                end: r.u16()?,
            },
            2 => PortMatch::Named(name(r)?),
            _ => return Err(WireError::UnknownType),
        };
        ports.push(Port { proto, port });
    }
    Ok(Rule { peers, ports })
}

fn put_cidr(w: &mut Writer<'_>, c: Cidr) -> Result<(), WireError> {
    w.bytes(&c.addr.octets())?;
    w.u8(c.prefix)
}

fn cidr(r: &mut Reader<'_>) -> Result<Cidr, WireError> {
    let addr = Ipv4Addr::from(r.array::<4>()?);
    let c = Cidr::new(addr, r.u8()?).map_err(bad)?;
    // One encoding per prefix: host bits must be zero.
    if c.addr != addr {
        return Err(WireError::Inconsistent);
    }
    Ok(c)
}

fn put_labels(w: &mut Writer<'_>, l: &Labels) -> Result<(), WireError> {
    put_count(w, l.len(), LABELS_MAX)?;
    for (k, v) in l.iter() {
        put_s16(w, k, LABEL_KEY_LEN_MAX)?;
        put_s8(w, v, LABEL_VALUE_LEN_MAX)?;
    }
    Ok(())
}

fn labels(r: &mut Reader<'_>) -> Result<Labels, WireError> {
    let n = r.count(LABELS_MAX, 3)?;
    let mut l = Labels::new();
    let mut last: Option<&str> = None;
    for _ in 0..n {
        let k = s16(r, LABEL_KEY_LEN_MAX)?;
        let v = s8(r, LABEL_VALUE_LEN_MAX)?;
        if last.is_some_and(|p| p >= k) {
            return Err(WireError::Inconsistent);
        }
        l.insert(k, v).map_err(bad)?;
        last = Some(k);
    }
    Ok(l)
}

fn put_selector(w: &mut Writer<'_>, s: &Selector) -> Result<(), WireError> {
    put_labels(w, &s.match_labels)?;
    put_count(w, s.match_expressions.len(), LIST_MAX)?;
    for e in &s.match_expressions {
        put_s16(w, &e.key, LABEL_KEY_LEN_MAX)?;
        w.u8(match e.op {
            Operator::In => 0,
            Operator::NotIn => 1,
            Operator::Exists => 2,
            Operator::DoesNotExist => 3,
        })?;
        put_count(w, e.values.len(), LIST_MAX)?;
        for v in &e.values {
            put_s8(w, v, LABEL_VALUE_LEN_MAX)?;
        }
    }
    Ok(())
}

fn selector(r: &mut Reader<'_>) -> Result<Selector, WireError> {
    let match_labels = labels(r)?;
    let n = r.count(LIST_MAX, 5)?;
    let mut match_expressions = Vec::with_capacity(n);
    for _ in 0..n {
        let key = String::from(s16(r, LABEL_KEY_LEN_MAX)?);
        let op = match r.u8()? {
            0 => Operator::In,
            1 => Operator::NotIn,
            2 => Operator::Exists,
            3 => Operator::DoesNotExist,
            _ => return Err(WireError::Inconsistent),
        };
        let m = r.count(LIST_MAX, 1)?;
        let mut values = Vec::with_capacity(m);
        for _ in 0..m {
            values.push(String::from(s8(r, LABEL_VALUE_LEN_MAX)?));
        }
        let req = Requirement { key, op, values };
        req.check().map_err(bad)?;
        match_expressions.push(req);
    }
    let s = Selector {
        match_labels,
        match_expressions,
    };
    s.check().map_err(bad)?;
    Ok(s)
}

fn put_pod(w: &mut Writer<'_>, p: &Pod) -> Result<(), WireError> {
    put_count(w, p.addrs.len(), super::table::POD_ADDRS_MAX)?;
    for a in &p.addrs {
        w.bytes(&a.octets())?;
    }
    put_s8(w, &p.namespace, NAME_LEN_MAX)?;
    put_labels(w, &p.labels)?;
    put_count(w, p.ports.len(), NAMED_PORTS_MAX)?;
    for np in &p.ports {
        put_s8(w, &np.name, NAME_LEN_MAX)?;
        w.u8(np.proto.number())?;
        w.u16(np.port)?;
    }
    Ok(())
}

fn pod(r: &mut Reader<'_>) -> Result<Pod, WireError> {
    let n = r.count(super::table::POD_ADDRS_MAX, 4)?;
    let mut addrs = Vec::with_capacity(n);
    for _ in 0..n {
        addrs.push(Ipv4Addr::from(r.array::<4>()?));
    }
    let namespace = name(r)?;
    let labels = labels(r)?;
    let n = r.count(NAMED_PORTS_MAX, 5)?;
    let mut ports = Vec::with_capacity(n);
    for _ in 0..n {
        let name = name(r)?;
        let proto = Proto::from_number(r.u8()?).ok_or(WireError::Inconsistent)?;
        ports.push(NamedPort {
            name,
            proto,
            port: r.u16()?,
        });
    }
    let p = Pod {
        addrs,
        namespace,
        labels,
        ports,
    };
    check_pod(&p).map_err(bad)?;
    Ok(p)
}
