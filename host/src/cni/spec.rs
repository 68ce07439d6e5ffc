//! What the CNI spec puts on the plugin's stdin, environment and stdout, as types: the
//! network configuration (parsed field by field, so a refusal names the field), the
//! commands, the versions, the error object with the spec's codes, and the ADD result in
//! each version's shape.
//!
//! What it does not do: talk to the router (`super::plugin`).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;
use std::path::PathBuf;

/// The spec versions this plugin speaks, oldest first.
pub(crate) const VERSIONS: [&str; 4] = ["0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/// The newest: what errors and VERSION answer in when the caller named no version.
pub(crate) const VERSION_NEWEST: &str = "1.1.0";
/// Largest configuration read from stdin, in bytes.
pub(crate) const CONF_LEN_MAX: u64 = 1024 * 1024;
/// The fields of `ipam` weft's own IPAM takes.
pub(crate) const IPAM_FIELDS: [&str; 4] = ["type", "subnet", "socket", "gateway"];
/// Longest plugin name (`ipam.type`) taken, in bytes.
pub(crate) const PLUGIN_NAME_LEN_MAX: usize = 64;
/// Most entries in `cni.dev/valid-attachments` taken.
pub(crate) const VALID_ATTACHMENTS_MAX: usize = 65_536;

/// The spec's well-known error codes (and weft's own, from 100).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Code {
    /// 1: the configuration's `cniVersion` is not one this plugin speaks.
    IncompatibleVersion = 1,
    /// 2: a field of the configuration this plugin does not support.
    UnsupportedField = 2,
    /// 3: the container (its network namespace) does not exist.
    UnknownContainer = 3,
    /// 4: a needed environment variable is missing or wrong.
    InvalidEnv = 4,
    /// 5: reading stdin or writing a file failed.
    Io = 5,
    /// 6: stdin (or `CNI_ARGS`) could not be decoded.
    Decode = 6,
    /// 7: the configuration is well formed but invalid.
    InvalidConf = 7,
    /// 11: try again later (the router does not answer).
    TryAgain = 11,
    /// 50: STATUS: the plugin cannot serve ADDs now.
    NotAvailable = 50,
    /// 100: the router refused the request (e.g. ADD twice, no address free).
    RouterRefused = 100,
    /// 101: the router failed carrying the request out.
    RouterFailed = 101,
    /// 102: the delegated IPAM plugin failed (its own error in `details`).
    DelegateFailed = 102,
}

/// A failure, as the spec's error object: `{"cniVersion", "code", "msg", "details"}`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct CniError {
    pub(crate) code: Code,
    pub(crate) msg: String,
    pub(crate) details: String,
}

impl CniError {
    pub(crate) fn new(code: Code, msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// The error object in `version`'s shape (every version has the same three fields).
    pub(crate) fn to_json(&self, version: &str) -> Value {
        serde_json::json!({
            "cniVersion": version,
            "code": self.code as u32,
            "msg": self.msg,
            "details": self.details,
        })
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (code {}): {}",
            self.msg, self.code as u32, self.details
        )
    }
}

/// `CNI_COMMAND`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Command {
    pub(crate) fn parse(s: &str) -> Result<Self, CniError> {
        Ok(match s {
            "ADD" => Self::Add,
            "DEL" => Self::Del,
            "CHECK" => Self::Check,
            "STATUS" => Self::Status,
            "GC" => Self::Gc,
            "VERSION" => Self::Version,
            _ => {
                return Err(CniError::new(
                    Code::InvalidEnv,
                    "unknown CNI_COMMAND",
                    format!(
                        "CNI_COMMAND {:?}: expected ADD, DEL, CHECK, STATUS, GC or VERSION",
                        super::truncate(s, 40)
                    ),
                ));
            }
        })
    }

    /// The oldest spec version that has this command.
    fn since(self) -> &'static str {
        match self {
            Self::Add | Self::Del | Self::Version => "0.3.1",
            Self::Check => "0.4.0",
            Self::Status | Self::Gc => "1.1.0",
        }
    }
}

/// Orders spec versions (`"0.4.0" < "1.0.0"`); `None` for one not in [`VERSIONS`].
pub(crate) fn version_rank(v: &str) -> Option<usize> {
    VERSIONS.iter().position(|x| *x == v)
}

/// `ipam` in the configuration: weft's own IPAM, in its default subnet or `subnet`.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct IpamConf {
    /// `"type"`: absent, or `weft`.
    pub(crate) kind: Option<String>,
    /// `"subnet": "10.40.0.0/16"` (inside the router's `--ipalloc-range`).
    pub(crate) subnet: Option<weft_core::ipam::Cidr>,
    /// `"socket"`: the router's control socket (weft as another plugin's IPAM).
    pub(crate) socket: Option<PathBuf>,
    /// `"gateway": true`: give the subnet's gateway address too.
    pub(crate) gateway: bool,
}

/// One entry of `cni.dev/valid-attachments` (GC).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub(crate) struct ValidAttachment {
    #[serde(rename = "containerID")]
    pub(crate) container_id: String,
    pub(crate) ifname: String,
}

/// The network configuration on stdin: the fields weft reads. Fields it does not know are
/// left alone (runtimes add their own: `runtimeConfig`, `capabilities`, ...).
#[derive(Debug, Default)]
pub(crate) struct NetConf {
    /// `cniVersion`.
    pub(crate) version: String,
    /// `name`: the network's name.
    pub(crate) name: String,
    /// `type`: `weft`.
    pub(crate) kind: String,
    /// `socket`: the router's control socket.
    pub(crate) socket: Option<PathBuf>,
    /// `ipam`.
    pub(crate) ipam: IpamConf,
    /// `prevResult`: the result of the ADD before (CHECK, DEL, and chained plugins).
    pub(crate) prev_result: Option<Value>,
    /// `cni.dev/valid-attachments` (GC).
    pub(crate) valid_attachments: Vec<ValidAttachment>,
    /// `isGateway` of the plugin weft is the IPAM of (`bridge`'s).
    pub(crate) is_gateway: bool,
}

impl NetConf {
    /// Whether weft runs as another plugin's IPAM (`type` is that plugin's, `ipam.type`
    /// is `weft`).
    pub(crate) fn ipam_only(&self) -> bool {
        self.kind != "weft"
    }

    /// The IPAM plugin weft delegates to (`ipam.type` other than `weft` in a `weft` conf).
    pub(crate) fn delegated_ipam(&self) -> Option<&str> {
        let kind = self.ipam.kind.as_deref()?;
        (!self.ipam_only() && kind != "weft").then_some(kind)
    }

    /// The router's control socket: `ipam.socket` (as another plugin's IPAM), `socket`.
    pub(crate) fn socket(&self) -> Option<&std::path::Path> {
        let ipam = self.ipam.socket.as_deref().filter(|_| self.ipam_only());
        ipam.or(self.socket.as_deref())
    }
}

fn decode(details: String) -> CniError {
    CniError::new(
        Code::Decode,
        "cannot decode the network configuration",
        details,
    )
}

fn field<T: DeserializeOwned>(obj: &Map<String, Value>, name: &str) -> Result<Option<T>, CniError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => T::deserialize(v).map(Some).map_err(|e| {
            CniError::new(
                Code::InvalidConf,
                "invalid network configuration",
                format!("field {name}: {e}"),
            )
        }),
    }
}

fn required<T: DeserializeOwned>(obj: &Map<String, Value>, name: &str) -> Result<T, CniError> {
    field(obj, name)?.ok_or_else(|| {
        CniError::new(
            Code::InvalidConf,
            "invalid network configuration",
            format!("field {name} is missing"),
        )
    })
}

impl NetConf {
    /// Parses the configuration `bytes` for `cmd`. VERSION takes an empty stdin, or any
    /// object; the others need `cniVersion`, and all but STATUS `name` and `type`.
    pub(crate) fn parse(bytes: &[u8], cmd: Command) -> Result<Self, CniError> {
        let text = std::str::from_utf8(bytes).map_err(|e| decode(format!("not UTF-8: {e}")))?;
        if cmd == Command::Version && text.trim().is_empty() {
            return Ok(Self::default());
        }
        let v: Value = serde_json::from_str(text).map_err(|e| decode(e.to_string()))?;
        let Value::Object(obj) = v else {
            return Err(decode("expected a JSON object".into()));
        };
        let version: Option<String> = field(&obj, "cniVersion")?;
        if cmd == Command::Version {
            return Ok(Self {
                version: version.unwrap_or_default(),
                ..Self::default()
            });
        }
        let version = version.ok_or_else(|| {
            CniError::new(
                Code::InvalidConf,
                "invalid network configuration",
                "field cniVersion is missing",
            )
        })?;
        let Some(rank) = version_rank(&version) else {
            return Err(CniError::new(
                Code::IncompatibleVersion,
                "incompatible CNI version",
                format!(
                    "cniVersion {:?}: weft speaks {}",
                    super::truncate(&version, 40),
                    VERSIONS.join(", ")
                ),
            ));
        };
        if rank < version_rank(cmd.since()).unwrap_or(0) {
            return Err(CniError::new(
                Code::IncompatibleVersion,
                "incompatible CNI version",
                format!(
                    "{cmd:?} is not in spec {version}: it needs cniVersion {} or later",
                    cmd.since()
                ),
            ));
        }
        let mut conf = Self {
            version,
            ..Self::default()
        };
        if cmd != Command::Status {
            conf.name = required(&obj, "name")?;
            conf.kind = required(&obj, "type")?;
        }
        conf.socket = field(&obj, "socket")?;
        conf.prev_result = field(&obj, "prevResult")?;
        if let Some(ipam) = field::<Map<String, Value>>(&obj, "ipam")? {
            conf.ipam = parse_ipam(&ipam)?;
        }
        if cmd != Command::Status && conf.ipam_only() && conf.ipam.kind.as_deref() != Some("weft") {
            return Err(CniError::new(
                Code::InvalidConf,
                "invalid network configuration",
                format!(
                    "field type {:?}: weft is the plugin `weft`, or the IPAM of another (ipam.type \"weft\")",
                    super::truncate(&conf.kind, 40)
                ),
            ));
        }
        conf.is_gateway = field(&obj, "isGateway")?.unwrap_or(false);
        if cmd == Command::Gc {
            let valid: Vec<ValidAttachment> =
                field(&obj, "cni.dev/valid-attachments")?.unwrap_or_default();
            if valid.len() > VALID_ATTACHMENTS_MAX {
                return Err(CniError::new(
                    Code::InvalidConf,
                    "invalid network configuration",
                    format!("field cni.dev/valid-attachments: more than {VALID_ATTACHMENTS_MAX}"),
                ));
            }
            conf.valid_attachments = valid;
        }
        Ok(conf)
    }
}

fn parse_ipam(ipam: &Map<String, Value>) -> Result<IpamConf, CniError> {
    let kind = field::<String>(ipam, "type")?;
    if let Some(kind) = &kind {
        // A plugin's name: the file it is run from, in a CNI_PATH directory.
        let plain = !kind.is_empty()
            && kind.len() <= PLUGIN_NAME_LEN_MAX
            && kind
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !kind.starts_with('.');
        if !plain {
            return Err(CniError::new(
                Code::InvalidConf,
                "invalid network configuration",
                format!(
                    "field ipam.type {:?}: not a plugin name",
                    super::truncate(kind, 40)
                ),
            ));
        }
    }
    if kind.as_deref().is_none_or(|k| k == "weft") {
        // weft's own IPAM: a field it does not know would be silently ignored otherwise.
        if let Some(k) = ipam.keys().find(|k| !IPAM_FIELDS.contains(&k.as_str())) {
            return Err(CniError::new(
                Code::UnsupportedField,
                "unsupported field in the network configuration",
                format!(
                    "field ipam.{}: weft's IPAM takes {}",
                    super::truncate(k, 40),
                    IPAM_FIELDS.join(", ")
                ),
            ));
        }
    }
    let subnet = match field::<String>(ipam, "subnet")? {
        None => None,
        Some(s) => Some(crate::ipam::parse_block(&s).map_err(|e| {
            CniError::new(
                Code::InvalidConf,
                "invalid network configuration",
                format!("field ipam.subnet: {e}"),
            )
        })?),
    };
    Ok(IpamConf {
        kind,
        subnet,
        socket: field(ipam, "socket")?,
        gateway: field(ipam, "gateway")?.unwrap_or(false),
    })
}

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

    fn conf(cmd: Command, json: &str) -> Result<NetConf, CniError> {
        NetConf::parse(json.as_bytes(), cmd)
    }

    #[test]
    fn refusals_name_the_field_and_carry_the_spec_code() {
        let e = conf(Command::Add, "{not json").unwrap_err();
        assert_eq!(e.code, Code::Decode);
        let e = conf(Command::Add, r#"{"cniVersion":"1.0.0","type":"weft"}"#).unwrap_err();
        assert_eq!(e.code, Code::InvalidConf);
        assert!(e.details.contains("field name"), "{e}");
        let e = conf(
            Command::Add,
            r#"{"cniVersion":"1.0.0","name":7,"type":"weft"}"#,
        )
        .unwrap_err();
        assert!(e.details.contains("field name"), "{e}");
        let e = conf(
            Command::Add,
            r#"{"cniVersion":"9.9.9","name":"n","type":"weft"}"#,
        )
        .unwrap_err();
        assert_eq!(e.code, Code::IncompatibleVersion);
        let e = conf(
            Command::Add,
            r#"{"cniVersion":"1.0.0","name":"n","type":"weft","ipam":{"subnet":"10.40.0.1/16"}}"#,
        )
        .unwrap_err();
        assert!(e.details.contains("field ipam.subnet"), "{e}");
        let c = conf(
            Command::Add,
            r#"{"cniVersion":"1.0.0","name":"n","type":"weft","ipam":{"type":"host-local"}}"#,
        )
        .unwrap();
        assert_eq!(c.delegated_ipam(), Some("host-local"));
        let e = conf(
            Command::Add,
            r#"{"cniVersion":"1.0.0","name":"n","type":"weft","ipam":{"type":"../../bin/sh"}}"#,
        )
        .unwrap_err();
        assert!(e.details.contains("field ipam.type"), "{e}");
        let e = conf(
            Command::Add,
            r#"{"cniVersion":"1.0.0","name":"n","type":"weft","ipam":{"ranges":[]}}"#,
        )
        .unwrap_err();
        assert_eq!(e.code, Code::UnsupportedField);
        assert!(e.details.contains("field ipam.ranges"), "{e}");
        // Commands newer than the version asked for.
        let e = conf(Command::Status, r#"{"cniVersion":"1.0.0"}"#).unwrap_err();
        assert_eq!(e.code, Code::IncompatibleVersion);
        let e = conf(
            Command::Check,
            r#"{"cniVersion":"0.3.1","name":"n","type":"weft"}"#,
        )
        .unwrap_err();
        assert_eq!(e.code, Code::IncompatibleVersion);
        assert_eq!(Command::parse("ADDD").unwrap_err().code, Code::InvalidEnv);
    }

    #[test]
    fn a_full_conf_is_read_and_unknown_fields_are_left_alone() {
        let c = conf(
            Command::Gc,
            r#"{"cniVersion":"1.1.0","name":"weft","type":"weft","socket":"/tmp/w.sock",
                "ipam":{"subnet":"10.40.0.0/16"},"runtimeConfig":{"x":1},
                "cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}]}"#,
        )
        .unwrap();
        assert_eq!(
            c.socket.as_deref(),
            Some(std::path::Path::new("/tmp/w.sock"))
        );
        assert_eq!(c.ipam.subnet.unwrap().to_string(), "10.40.0.0/16");
        assert_eq!(c.valid_attachments[0].container_id, "c1");
        // Under another plugin: its type, ipam.type weft, the socket from ipam.
        let c = conf(
            Command::Add,
            r#"{"cniVersion":"1.0.0","name":"b","type":"bridge","isGateway":true,
                "ipam":{"type":"weft","socket":"/tmp/i.sock"}}"#,
        )
        .unwrap();
        assert!(c.ipam_only() && c.is_gateway);
        assert_eq!(c.socket(), Some(std::path::Path::new("/tmp/i.sock")));
        let e = conf(
            Command::Add,
            r#"{"cniVersion":"1.0.0","name":"b","type":"bridge"}"#,
        )
        .unwrap_err();
        assert!(e.details.contains("field type"), "{e}");
        // VERSION takes an empty stdin.
        assert_eq!(conf(Command::Version, "").unwrap().version, "");
    }

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
