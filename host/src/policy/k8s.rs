//! Kubernetes objects in, weft's policy model out: `NetworkPolicy` (networking.k8s.io/v1)
//! and `Namespace` (v1) from YAML (one or more documents) or JSON, also inside a `List`.
//!
//! Parsing is strict, as `kubectl --validate=strict` is: a field this version of the API
//! does not have, a wrong type or a value Kubernetes would refuse is an error naming the
//! field (`spec.ingress[0].ports[1].endPort: ...`), and one bad object refuses the whole
//! input, so nothing is half-applied. `metadata` fields other than name, namespace and
//! labels, and `status`, are read past.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::{Map, Value};
use weft_core::policy::{
    Cidr, DEFAULT_NAMESPACE, IpBlock, Labels, Operator, Peer, Policy, PolicyKey, Port, PortMatch,
    Proto, Requirement, Rule, Selector,
};

/// Most objects in one input.
pub(crate) const OBJECTS_MAX: usize = 4096;
/// Longest named port (Kubernetes' IANA_SVC_NAME).
pub(crate) const PORT_NAME_LEN_MAX: usize = 15;

/// One object of the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Object {
    /// A NetworkPolicy.
    Policy(Policy),
    /// A Namespace and its labels (without the implied name label).
    Namespace(String, Labels),
}

/// What was wrong: where and why, one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Refused(pub(crate) String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn at(path: &str, why: impl std::fmt::Display) -> Refused {
    Refused(format!("{path}: {why}"))
}

/// Parses `text` (YAML documents or JSON) into objects; `source` names it in errors.
pub(crate) fn parse(source: &str, text: &str) -> Result<Vec<Object>, Refused> {
    let docs = documents(text).map_err(|e| Refused(format!("{source}: {e}")))?;
    let mut out = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        if doc.is_null() {
            continue; // An empty document (a trailing `---`).
        }
        let what = format!("{source}: document {}", i + 1);
        objects(&what, doc, &mut out, 0)?;
        if out.len() > OBJECTS_MAX {
            return Err(Refused(format!(
                "{source}: more than {OBJECTS_MAX} objects"
            )));
        }
    }
    Ok(out)
}

fn documents(text: &str) -> Result<Vec<Value>, String> {
    let t = text.trim_start();
    if t.starts_with('{') || t.starts_with('[') {
        return serde_json::from_str(t)
            .map(|v| vec![v])
            .map_err(|e| format!("not JSON: {e}"));
    }
    let mut docs = Vec::new();
    for d in yaml_serde::Deserializer::from_str(text) {
        let v =
            <Value as serde::Deserialize>::deserialize(d).map_err(|e| format!("not YAML: {e}"))?;
        docs.push(v);
    }
    Ok(docs)
}

fn objects(what: &str, v: &Value, out: &mut Vec<Object>, depth: u32) -> Result<(), Refused> {
    if let Value::Array(items) = v {
        for (i, item) in items.iter().enumerate() {
            objects(&format!("{what}[{i}]"), item, out, depth + 1)?;
        }
        return Ok(());
    }
    let m = v
        .as_object()
        .ok_or_else(|| Refused(format!("{what}: not an object")))?;
    let kind = m.get("kind").and_then(Value::as_str).unwrap_or("");
    let api = m.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    match kind {
        "List" | "NetworkPolicyList" | "NamespaceList" if depth == 0 => {
            let items = m
                .get("items")
                .and_then(Value::as_array)
                .ok_or_else(|| Refused(format!("{what}: a {kind} needs items")))?;
            for (i, item) in items.iter().enumerate() {
                objects(&format!("{what}: items[{i}]"), item, out, depth + 1)?;
            }
            Ok(())
        }
        "NetworkPolicy" => {
            if api != "networking.k8s.io/v1" {
                return Err(Refused(format!(
                    "{what}: apiVersion {api:?}: only networking.k8s.io/v1 NetworkPolicy is known"
                )));
            }
            let p = policy(m).map_err(|e| {
                let name = m
                    .get("metadata")
                    .and_then(|md| md.get("name"))
                    .and_then(Value::as_str)
                    .unwrap_or("?");
                Refused(format!("{what} (NetworkPolicy {name}): {e}"))
            })?;
            out.push(Object::Policy(p));
            Ok(())
        }
        "Namespace" => {
            if api != "v1" {
                return Err(Refused(format!(
                    "{what}: apiVersion {api:?}: a Namespace is v1"
                )));
            }
            let (name, _, labels) =
                only("", m, &["apiVersion", "kind", "metadata", "spec", "status"])
                    .and_then(|()| metadata(m, false))
                    .map_err(|e| Refused(format!("{what} (Namespace): {e}")))?;
            out.push(Object::Namespace(name, labels));
            Ok(())
        }
        "" => Err(Refused(format!(
            "{what}: no kind (NetworkPolicy or Namespace)"
        ))),
        k => Err(Refused(format!(
            "{what}: kind {k}: only NetworkPolicy and Namespace are taken"
        ))),
    }
}

fn only(path: &str, m: &Map<String, Value>, known: &[&str]) -> Result<(), Refused> {
    match m.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(at(
            &join(path, k),
            format!("unknown field (known: {})", known.join(", ")),
        )),
        None => Ok(()),
    }
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

fn obj<'a>(path: &str, v: &'a Value) -> Result<&'a Map<String, Value>, Refused> {
    v.as_object().ok_or_else(|| at(path, "must be an object"))
}

fn list<'a>(path: &str, v: &'a Value) -> Result<&'a [Value], Refused> {
    match v {
        Value::Null => Ok(&[]),
        Value::Array(a) if a.len() <= weft_core::policy::LIST_MAX => Ok(a),
        Value::Array(_) => Err(at(
            path,
            format!("more than {} entries", weft_core::policy::LIST_MAX),
        )),
        _ => Err(at(path, "must be a list")),
    }
}

fn string<'a>(path: &str, v: &'a Value) -> Result<&'a str, Refused> {
    v.as_str().ok_or_else(|| at(path, "must be a string"))
}

/// `metadata`: name, namespace (policies: default `default`), labels.
fn metadata(
    top: &Map<String, Value>,
    namespaced: bool,
) -> Result<(String, String, Labels), Refused> {
    let m = obj("metadata", top.get("metadata").unwrap_or(&Value::Null))?;
    let name = string("metadata.name", m.get("name").unwrap_or(&Value::Null))?;
    weft_core::policy::check_name(name).map_err(|e| at("metadata.name", e))?;
    let ns = match m.get("namespace") {
        Some(v) if namespaced => string("metadata.namespace", v)?,
        Some(_) => return Err(at("metadata.namespace", "a Namespace has none")),
        None => DEFAULT_NAMESPACE,
    };
    weft_core::policy::check_name(ns).map_err(|e| at("metadata.namespace", e))?;
    let labels = match m.get("labels") {
        Some(v) => labels("metadata.labels", v)?,
        None => Labels::new(),
    };
    Ok((name.to_owned(), ns.to_owned(), labels))
}

fn labels(path: &str, v: &Value) -> Result<Labels, Refused> {
    let mut out = Labels::new();
    if v.is_null() {
        return Ok(out);
    }
    for (k, v) in obj(path, v)? {
        let p = format!("{path}.{k}");
        let v = match v {
            Value::String(s) => s.clone(),
            // YAML's `tier: 1` or `on: true` are strings to Kubernetes only when quoted;
            // say so rather than guess.
            _ => return Err(at(&p, "must be a string (quote it)")),
        };
        out.insert(k, &v).map_err(|e| at(&p, e))?;
    }
    Ok(out)
}

fn selector(path: &str, v: &Value) -> Result<Selector, Refused> {
    let mut s = Selector::all();
    if v.is_null() {
        return Ok(s);
    }
    let m = obj(path, v)?;
    only(path, m, &["matchLabels", "matchExpressions"])?;
    if let Some(l) = m.get("matchLabels") {
        s.match_labels = labels(&join(path, "matchLabels"), l)?;
    }
    if let Some(e) = m.get("matchExpressions") {
        let p = join(path, "matchExpressions");
        for (i, e) in list(&p, e)?.iter().enumerate() {
            let p = format!("{p}[{i}]");
            let em = obj(&p, e)?;
            only(&p, em, &["key", "operator", "values"])?;
            let key = string(&join(&p, "key"), em.get("key").unwrap_or(&Value::Null))?;
            let op = match string(
                &join(&p, "operator"),
                em.get("operator").unwrap_or(&Value::Null),
            )? {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                o => {
                    return Err(at(
                        &join(&p, "operator"),
                        format!("{o:?}: one of In, NotIn, Exists, DoesNotExist"),
                    ));
                }
            };
            let mut values = Vec::new();
            if let Some(vs) = em.get("values") {
                for (j, v) in list(&join(&p, "values"), vs)?.iter().enumerate() {
                    values.push(string(&format!("{p}.values[{j}]"), v)?.to_owned());
                }
            }
            values.sort();
            values.dedup();
            let r = Requirement {
                key: key.to_owned(),
                op,
                values,
            };
            r.check().map_err(|e| at(&p, e))?;
            s.match_expressions.push(r);
        }
    }
    s.check().map_err(|e| at(path, e))?;
    Ok(s)
}

fn cidr(path: &str, v: &Value) -> Result<Option<Cidr>, Refused> {
    let s = string(path, v)?;
    let bad = || at(path, format!("{s:?} is not a CIDR (a.b.c.d/n)"));
    let (a, n) = s.split_once('/').ok_or_else(bad)?;
    let n: u8 = n.parse().map_err(|_| bad())?;
    match a.parse::<IpAddr>().map_err(|_| bad())? {
        IpAddr::V4(a) => Cidr::new(a, n).map(Some).map_err(|_| bad()),
        IpAddr::V6(_) if n <= 128 => Ok(None),
        IpAddr::V6(_) => Err(bad()),
    }
}

/// A peer; `None` for an IPv6 `ipBlock` (weft's pods are IPv4: it can match none of them).
fn peer(path: &str, v: &Value) -> Result<Option<Peer>, Refused> {
    let m = obj(path, v)?;
    only(path, m, &["podSelector", "namespaceSelector", "ipBlock"])?;
    if let Some(b) = m.get("ipBlock") {
        if m.len() > 1 {
            return Err(at(
                path,
                "ipBlock cannot be combined with podSelector or namespaceSelector",
            ));
        }
        let p = join(path, "ipBlock");
        let bm = obj(&p, b)?;
        only(&p, bm, &["cidr", "except"])?;
        let Some(c) = cidr(&join(&p, "cidr"), bm.get("cidr").unwrap_or(&Value::Null))? else {
            return Ok(None);
        };
        let mut except = Vec::new();
        if let Some(e) = bm.get("except") {
            for (i, e) in list(&join(&p, "except"), e)?.iter().enumerate() {
                let ep = format!("{p}.except[{i}]");
                match cidr(&ep, e)? {
                    Some(e) if c.covers(&e) => except.push(e),
                    _ => return Err(at(&ep, format!("must be an IPv4 CIDR inside {c}"))),
                }
            }
        }
        return Ok(Some(Peer::Block(IpBlock { cidr: c, except })));
    }
    let pods = m
        .get("podSelector")
        .map(|v| selector(&join(path, "podSelector"), v))
        .transpose()?;
    let namespaces = m
        .get("namespaceSelector")
        .map(|v| selector(&join(path, "namespaceSelector"), v))
        .transpose()?;
    if pods.is_none() && namespaces.is_none() {
        return Err(at(path, "needs podSelector, namespaceSelector or ipBlock"));
    }
    Ok(Some(Peer::Pods { pods, namespaces }))
}

fn port(path: &str, v: &Value) -> Result<Port, Refused> {
    let m = obj(path, v)?;
    only(path, m, &["protocol", "port", "endPort"])?;
    let proto = match m.get("protocol") {
        None | Some(Value::Null) => Proto::Tcp,
        Some(p) => match string(&join(path, "protocol"), p)? {
            "TCP" => Proto::Tcp,
            "UDP" => Proto::Udp,
            "SCTP" => Proto::Sctp,
            o => {
                return Err(at(
                    &join(path, "protocol"),
                    format!("{o:?}: one of TCP, UDP, SCTP"),
                ));
            }
        },
    };
    let number = |p: &str, v: &Value| -> Result<u16, Refused> {
        v.as_u64()
            .filter(|n| (1..=65535).contains(n))
            .map(|n| n as u16)
            .ok_or_else(|| at(p, "must be a port number 1-65535"))
    };
    let end = m.get("endPort").filter(|v| !v.is_null());
    let port = match m.get("port") {
        None | Some(Value::Null) => {
            if end.is_some() {
                return Err(at(&join(path, "endPort"), "needs a numeric port"));
            }
            PortMatch::Any
        }
        Some(Value::String(name)) => {
            if end.is_some() {
                return Err(at(&join(path, "endPort"), "cannot go with a named port"));
            }
            let ok = name.len() <= PORT_NAME_LEN_MAX
                && weft_core::policy::check_name(name).is_ok()
                && name.bytes().any(|c| c.is_ascii_lowercase());
            if !ok {
                return Err(at(
                    &join(path, "port"),
                    format!(
                        "{name:?}: a port name is 1-15 lowercase letters, digits or '-', with a letter"
                    ),
                ));
            }
            PortMatch::Named(name.clone())
        }
        Some(v) => {
            let port = number(&join(path, "port"), v)?;
            let end = match end {
                Some(e) => number(&join(path, "endPort"), e)?,
                None => port,
            };
            if end < port {
                return Err(at(
                    &join(path, "endPort"),
                    format!("{end} is below port {port}"),
                ));
            }
            PortMatch::Range { port, end }
        }
    };
    Ok(Port { proto, port })
}

fn rules(path: &str, v: &Value, peers_field: &str) -> Result<Vec<Rule>, Refused> {
    let mut out = Vec::new();
    for (i, r) in list(path, v)?.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let m = if r.is_null() {
            &Map::new()
        } else {
            obj(&p, r)?
        };
        only(&p, m, &[peers_field, "ports"])?;
        let mut rule = Rule::default();
        let mut v6_only = false;
        if let Some(ps) = m.get(peers_field) {
            let pp = join(&p, peers_field);
            let given = list(&pp, ps)?;
            for (j, x) in given.iter().enumerate() {
                if let Some(x) = peer(&format!("{pp}[{j}]"), x)? {
                    rule.peers.push(x);
                }
            }
            // Only IPv6 blocks: the rule allows no IPv4 peer at all (not every peer).
            v6_only = !given.is_empty() && rule.peers.is_empty();
        }
        if let Some(ps) = m.get("ports") {
            let pp = join(&p, "ports");
            for (j, x) in list(&pp, ps)?.iter().enumerate() {
                rule.ports.push(port(&format!("{pp}[{j}]"), x)?);
            }
        }
        if !v6_only {
            out.push(rule);
        }
    }
    Ok(out)
}

fn policy(top: &Map<String, Value>) -> Result<Policy, Refused> {
    only(
        "",
        top,
        &["apiVersion", "kind", "metadata", "spec", "status"],
    )?;
    let (name, namespace, _) = metadata(top, true)?;
    let spec = obj("spec", top.get("spec").unwrap_or(&Value::Null))?;
    only(
        "spec",
        spec,
        &["podSelector", "policyTypes", "ingress", "egress"],
    )?;
    let pod_selector = match spec.get("podSelector") {
        Some(v) => selector("spec.podSelector", v)?,
        None => {
            return Err(at(
                "spec.podSelector",
                "required ({} selects every pod of the namespace)",
            ));
        }
    };
    let ingress = match spec.get("ingress") {
        Some(v) => rules("spec.ingress", v, "from")?,
        None => Vec::new(),
    };
    let egress = match spec.get("egress") {
        Some(v) => rules("spec.egress", v, "to")?,
        None => Vec::new(),
    };
    let (ingress_isolates, egress_isolates) = match spec.get("policyTypes") {
        None | Some(Value::Null) => (true, spec.get("egress").is_some_and(|v| !v.is_null())),
        Some(v) => {
            let (mut i, mut e) = (false, false);
            for (j, t) in list("spec.policyTypes", v)?.iter().enumerate() {
                match string(&format!("spec.policyTypes[{j}]"), t)? {
                    "Ingress" => i = true,
                    "Egress" => e = true,
                    o => {
                        return Err(at(
                            &format!("spec.policyTypes[{j}]"),
                            format!("{o:?}: Ingress or Egress"),
                        ));
                    }
                }
            }
            if !i && !e {
                return Err(at("spec.policyTypes", "empty (Ingress, Egress or both)"));
            }
            (i, e)
        }
    };
    let p = Policy {
        key: PolicyKey { namespace, name },
        pod_selector,
        ingress_isolates,
        egress_isolates,
        ingress,
        egress,
    };
    p.check().map_err(|e| at("spec", e))?;
    Ok(p)
}

/// Parses `KEY=VALUE` (set) and `KEY-` (remove) arguments of `weft label`.
pub(crate) fn label_changes(args: &[String]) -> Result<BTreeMap<String, Option<String>>, Refused> {
    let mut out = BTreeMap::new();
    for a in args {
        let (k, v) = match a.split_once('=') {
            Some((k, v)) => (k, Some(v.to_owned())),
            None => match a.strip_suffix('-') {
                Some(k) => (k, None),
                None => {
                    return Err(Refused(format!(
                        "{a:?}: give KEY=VALUE to set or KEY- to remove"
                    )));
                }
            },
        };
        weft_core::policy::check_label_key(k).map_err(|e| Refused(format!("{a:?}: {e}")))?;
        if let Some(v) = &v {
            weft_core::policy::check_label_value(v).map_err(|e| Refused(format!("{a:?}: {e}")))?;
        }
        out.insert(k.to_owned(), v);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
