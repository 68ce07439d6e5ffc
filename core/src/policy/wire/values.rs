//! The value codecs of [`super`]: policies, rules, peers, ports, selectors, labels, pods,
//! stamps and names, each read and checked with the model's checks, or written.

use super::FLAG_LIVE;
use crate::policy::table::{POD_ADDRS_MAX, Stamp, check_pod};
use crate::policy::{
    Cidr, IpBlock, LABEL_KEY_LEN_MAX, LABEL_VALUE_LEN_MAX, LABELS_MAX, LIST_MAX, Labels,
    NAME_LEN_MAX, NAMED_PORTS_MAX, NamedPort, Operator, Peer, Pod, Policy, PolicyKey, Port,
    PortMatch, Proto, Requirement, Rule, Selector, check_name,
};
use crate::wire::WireError;
use crate::wire::buf::{Reader, Writer};
use alloc::string::String;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

fn bad<T>(_: T) -> WireError {
    WireError::Inconsistent
}

pub(super) fn s8<'a>(r: &mut Reader<'a>, len_max: usize) -> Result<&'a str, WireError> {
    core::str::from_utf8(r.short_bytes(len_max)?).map_err(bad)
}

fn s16<'a>(r: &mut Reader<'a>, len_max: usize) -> Result<&'a str, WireError> {
    let n = usize::from(r.u16()?);
    if n > len_max {
        return Err(WireError::Oversized);
    }
    core::str::from_utf8(r.bytes(n)?).map_err(bad)
}

pub(super) fn put_s8(w: &mut Writer<'_>, s: &str, len_max: usize) -> Result<(), WireError> {
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

pub(super) fn name(r: &mut Reader<'_>) -> Result<String, WireError> {
    let s = s8(r, NAME_LEN_MAX)?;
    check_name(s).map_err(bad)?;
    Ok(String::from(s))
}

pub(super) fn stamp(r: &mut Reader<'_>) -> Result<Stamp, WireError> {
    Ok(Stamp {
        lamport: r.u64()?,
        writer: r.peer_name()?,
    })
}

pub(super) fn put_stamp(w: &mut Writer<'_>, s: Stamp) -> Result<(), WireError> {
    w.u64(s.lamport)?;
    w.peer_name(s.writer)
}

pub(super) fn live(r: &mut Reader<'_>) -> Result<bool, WireError> {
    match r.u8()? {
        0 => Ok(false),
        FLAG_LIVE => Ok(true),
        _ => Err(WireError::Inconsistent),
    }
}

pub(super) fn emit_policy_entry(
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

pub(super) fn policy_body(r: &mut Reader<'_>, key: PolicyKey) -> Result<Policy, WireError> {
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

pub(super) fn put_labels(w: &mut Writer<'_>, l: &Labels) -> Result<(), WireError> {
    put_count(w, l.len(), LABELS_MAX)?;
    for (k, v) in l.iter() {
        put_s16(w, k, LABEL_KEY_LEN_MAX)?;
        put_s8(w, v, LABEL_VALUE_LEN_MAX)?;
    }
    Ok(())
}

pub(super) fn labels(r: &mut Reader<'_>) -> Result<Labels, WireError> {
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

pub(super) fn put_pod(w: &mut Writer<'_>, p: &Pod) -> Result<(), WireError> {
    put_count(w, p.addrs.len(), POD_ADDRS_MAX)?;
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

pub(super) fn pod(r: &mut Reader<'_>) -> Result<Pod, WireError> {
    let n = r.count(POD_ADDRS_MAX, 4)?;
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
