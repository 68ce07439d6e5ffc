//! What the CNI spec puts on the plugin's stdin and environment, as types: the network
//! configuration (parsed field by field, so a refusal names the field), the commands, the
//! versions, and the error object with the spec's codes.
//!
//! What it does not do: the results (`super::result`), or talk to the router
//! (`super::plugin`).

use serde::Deserialize;
use serde::de::DeserializeOwned;
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
    /// `args.cni.labels` (the CNI conventions' `[{"key": K, "value": V}]`): the pod's
    /// labels, for network policy. Entries that are not valid Kubernetes labels are left
    /// out (a runtime's metadata is not the user's input).
    pub(crate) labels: Vec<(String, String)>,
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

/// `args.cni.labels`, as far as they are well formed.
fn cni_labels(obj: &Map<String, Value>) -> Vec<(String, String)> {
    let list = obj
        .get("args")
        .and_then(|a| a.get("cni"))
        .and_then(|c| c.get("labels"))
        .and_then(Value::as_array);
    let mut out = Vec::new();
    for l in list
        .into_iter()
        .flatten()
        .take(weft_core::policy::LABELS_MAX)
    {
        if let (Some(k), Some(v)) = (
            l.get("key").and_then(Value::as_str),
            l.get("value").and_then(Value::as_str),
        ) {
            let mut check = weft_core::policy::Labels::new();
            if check.insert(k, v).is_ok() {
                out.push((k.to_owned(), v.to_owned()));
            }
        }
    }
    out
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
        conf.labels = cni_labels(&obj);
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
}
