//! What the plugin writes on success, in each spec version's shape: the ADD result (and
//! the IPAM result when weft is another plugin's IPAM), the VERSION answer, and what
//! CHECK reads back out of a `prevResult`.

use super::spec::{CniError, Code, VERSION_NEWEST, VERSIONS, version_rank};
use serde::Serialize;
use serde_json::Value;

/// What weft as another plugin's IPAM gave, to be written as `version`'s IPAM result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Allocated {
    pub(crate) addresses: Vec<String>,
    pub(crate) gateway: Option<String>,
    pub(crate) nameservers: Vec<String>,
    pub(crate) domain: Option<String>,
}

/// The IPAM result (no `interfaces`, no `interface` index: the calling plugin's).
pub(crate) fn ipam_result(a: &Allocated, version: &str) -> Value {
    let added = Added {
        ifname: String::new(),
        mac: None,
        sandbox: String::new(),
        mtu_bytes: 0,
        addresses: a.addresses.clone(),
        gateway: a.gateway.clone(),
        nameservers: a.nameservers.clone(),
        domain: a.domain.clone(),
    };
    let mut v = add_result(&added, version);
    if let Some(o) = v.as_object_mut() {
        o.remove("interfaces");
    }
    if let Some(ips) = v.get_mut("ips").and_then(Value::as_array_mut) {
        for ip in ips {
            if let Some(o) = ip.as_object_mut() {
                o.remove("interface");
            }
        }
    }
    v
}

/// The VERSION answer.
pub(crate) fn version_reply(asked: &str) -> Value {
    let version = if version_rank(asked).is_some() {
        asked
    } else {
        VERSION_NEWEST
    };
    serde_json::json!({"cniVersion": version, "supportedVersions": VERSIONS})
}

/// What ADD made, to be written as the result of the spec version asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Added {
    pub(crate) ifname: String,
    pub(crate) mac: Option<String>,
    pub(crate) sandbox: String,
    pub(crate) mtu_bytes: u32,
    pub(crate) addresses: Vec<String>,
    pub(crate) gateway: Option<String>,
    pub(crate) nameservers: Vec<String>,
    /// The search domain, without its trailing dot.
    pub(crate) domain: Option<String>,
}

/// An interface in a result.
#[derive(Serialize)]
struct Interface<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    mac: Option<&'a str>,
    sandbox: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    mtu: Option<u32>,
}

/// An address in a result (`version` only before 1.0.0).
#[derive(Serialize)]
struct Ip<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'static str>,
    address: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    gateway: Option<&'a str>,
    interface: usize,
}

#[derive(Serialize)]
struct Route<'a> {
    dst: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    gw: Option<&'a str>,
}

#[derive(Serialize)]
struct Dns<'a> {
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    nameservers: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    domain: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    search: Vec<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AddResult<'a> {
    cni_version: &'a str,
    interfaces: Vec<Interface<'a>>,
    ips: Vec<Ip<'a>>,
    routes: Vec<Route<'a>>,
    dns: Dns<'a>,
}

/// The ADD result in `version`'s shape: 0.3.1 and 0.4.0 give each address its `version`,
/// 1.1.0 gives the interface its `mtu`.
pub(crate) fn add_result(a: &Added, version: &str) -> Value {
    let rank = version_rank(version).unwrap_or(VERSIONS.len() - 1);
    let old = rank < version_rank("1.0.0").unwrap_or(0);
    let with_mtu = rank >= version_rank("1.1.0").unwrap_or(0);
    let gateway = a.gateway.as_deref();
    let r = AddResult {
        cni_version: version,
        interfaces: vec![Interface {
            name: &a.ifname,
            mac: a.mac.as_deref(),
            sandbox: &a.sandbox,
            mtu: with_mtu.then_some(a.mtu_bytes).filter(|m| *m > 0),
        }],
        ips: a
            .addresses
            .iter()
            .map(|addr| Ip {
                version: old.then(|| if addr.contains(':') { "6" } else { "4" }),
                address: addr,
                gateway: gateway.filter(|_| !addr.contains(':')),
                interface: 0,
            })
            .collect(),
        routes: gateway
            .map(|gw| Route {
                dst: "0.0.0.0/0",
                gw: Some(gw),
            })
            .into_iter()
            .collect(),
        dns: Dns {
            nameservers: &a.nameservers,
            domain: a.domain.as_deref(),
            search: a.domain.as_deref().into_iter().collect(),
        },
    };
    serde_json::to_value(r).unwrap_or(Value::Null)
}

/// What CHECK compares: the interface's MAC, its addresses, and the gateway of the
/// default route via its addresses' gateway (the route ADD made), as `prevResult` says.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Expected {
    pub(crate) mac: Option<String>,
    pub(crate) addresses: Vec<String>,
    pub(crate) default_via: Option<String>,
}

/// The interface `ifname`'s part of a `prevResult` (CHECK), as given there.
pub(crate) fn prev_result_of(prev: &Value, ifname: &str) -> Result<Expected, CniError> {
    let bad = |d: String| CniError::new(Code::InvalidConf, "invalid network configuration", d);
    let ifaces = prev.get("interfaces").and_then(Value::as_array);
    let index = ifaces.and_then(|l| {
        l.iter().position(|i| {
            i.get("name").and_then(Value::as_str) == Some(ifname)
                && i.get("sandbox")
                    .and_then(Value::as_str)
                    .is_some_and(|s| !s.is_empty())
        })
    });
    let Some(index) = index else {
        return Err(bad(format!(
            "field prevResult.interfaces: no interface {ifname} with a sandbox"
        )));
    };
    let mac = ifaces
        .and_then(|l| l[index].get("mac"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let mut addrs = Vec::new();
    let mut gateways = Vec::new();
    let ips = prev.get("ips").and_then(Value::as_array);
    for ip in ips.into_iter().flatten() {
        let on = ip.get("interface").and_then(Value::as_u64);
        if on.is_some_and(|i| i as usize != index) {
            continue;
        }
        let Some(a) = ip.get("address").and_then(Value::as_str) else {
            return Err(bad("field prevResult.ips: an entry without address".into()));
        };
        addrs.push(a.to_owned());
        if let Some(g) = ip.get("gateway").and_then(Value::as_str) {
            gateways.push(g.to_owned());
        }
    }
    let routes = prev.get("routes").and_then(Value::as_array);
    let default_via = routes
        .into_iter()
        .flatten()
        .filter(|r| r.get("dst").and_then(Value::as_str) == Some("0.0.0.0/0"))
        .filter_map(|r| r.get("gw").and_then(Value::as_str))
        .find(|gw| gateways.iter().any(|g| g == gw))
        .map(str::to_owned);
    Ok(Expected {
        mac,
        addresses: addrs,
        default_via,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_take_each_versions_shape() {
        let a = Added {
            ifname: "eth0".into(),
            mac: Some("aa:bb:cc:dd:ee:ff".into()),
            sandbox: "/var/run/netns/x".into(),
            mtu_bytes: 1376,
            addresses: vec!["10.32.0.2/12".into()],
            gateway: Some("10.32.0.1".into()),
            nameservers: vec!["10.32.0.1".into()],
            domain: Some("weave.local".into()),
        };
        let old = add_result(&a, "0.4.0");
        assert_eq!(old["ips"][0]["version"], "4");
        assert!(old["interfaces"][0].get("mtu").is_none());
        let new = add_result(&a, "1.1.0");
        assert!(new["ips"][0].get("version").is_none());
        assert_eq!(new["interfaces"][0]["mtu"], 1376);
        assert_eq!(new["ips"][0]["interface"], 0);
        assert_eq!(new["routes"][0]["gw"], "10.32.0.1");
        assert_eq!(new["dns"]["search"][0], "weave.local");
        let ipam = ipam_result(
            &Allocated {
                addresses: a.addresses.clone(),
                gateway: a.gateway.clone(),
                nameservers: vec![],
                domain: None,
            },
            "0.3.1",
        );
        assert!(ipam.get("interfaces").is_none() && ipam["ips"][0].get("interface").is_none());
        assert_eq!(ipam["ips"][0]["version"], "4");
        assert_eq!(ipam["ips"][0]["gateway"], "10.32.0.1");
        let want = prev_result_of(&new, "eth0").unwrap();
        assert_eq!(want.mac.as_deref(), Some("aa:bb:cc:dd:ee:ff"));
        assert_eq!(want.addresses, ["10.32.0.2/12"]);
        assert_eq!(want.default_via.as_deref(), Some("10.32.0.1"));
        assert!(prev_result_of(&new, "eth1").is_err());
    }
}
