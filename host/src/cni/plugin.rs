//! The CNI plugin process: reads `CNI_*` and the configuration on stdin, asks the router
//! over its control socket (`/cni/*`, `/status/ipam`), and writes the spec's result or
//! error object on stdout (exit 0, or 1 with the error).
//!
//! A DEL the router cannot be asked (not running, socket refused) is written to the spool
//! beside the socket and answered with success: the router carries it out when it is back,
//! so nothing leaks and the runtime does not loop on an error.

use super::result;
use super::spec::{self, CniError, Code, Command, NetConf};
use crate::cli::{Cidr, SOCKET_DEFAULT};
use crate::client::Client;
use crate::error::Error;
use crate::ipam::NetSpec;
use crate::messages::{
    CniAddReply, CniAddRequest, CniAttachmentKey, CniCheckReply, CniCheckRequest, CniDelReply,
    CniDelRequest, CniGcReply, CniGcRequest, CniIpamReply, CniIpamRequest, IpamStatus,
};
use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Longest `CNI_ARGS` read, in bytes.
pub(crate) const CNI_ARGS_LEN_MAX: usize = 64 * 1024;

/// The variables that make `weft` without arguments the plugin: any of them set (so a
/// runtime that forgot `CNI_COMMAND` still gets the spec's error object, code 4).
pub(crate) const PLUGIN_ENV: [&str; 5] = [
    "CNI_COMMAND",
    "CNI_CONTAINERID",
    "CNI_NETNS",
    "CNI_IFNAME",
    "CNI_PATH",
];

/// Whether this process was started as the CNI plugin (see [`PLUGIN_ENV`]).
pub(crate) fn called_as_plugin() -> bool {
    PLUGIN_ENV.iter().any(|v| std::env::var_os(v).is_some())
}

/// Runs the plugin for the `CNI_COMMAND` in the environment.
pub(crate) fn main() -> ExitCode {
    let mut version = spec::VERSION_NEWEST.to_owned();
    let out = run(&mut version);
    let (json, code) = match out {
        Ok(Some(v)) => (Some(v), ExitCode::SUCCESS),
        Ok(None) => (None, ExitCode::SUCCESS),
        Err(e) => (Some(e.to_json(&version)), ExitCode::FAILURE),
    };
    if let Some(v) = json {
        let mut stdout = std::io::stdout().lock();
        let _ = serde_json::to_writer(&mut stdout, &v);
        let _ = stdout.write_all(b"\n");
        let _ = stdout.flush();
    }
    code
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

pub(super) fn need_env(name: &str) -> Result<String, CniError> {
    env(name).ok_or_else(|| {
        CniError::new(
            Code::InvalidEnv,
            "missing environment variable",
            format!("{name} is not set"),
        )
    })
}

fn bad_env(details: String) -> CniError {
    CniError::new(Code::InvalidEnv, "invalid environment variable", details)
}

fn read_stdin() -> Result<Vec<u8>, CniError> {
    let mut buf = Vec::new();
    std::io::stdin()
        .lock()
        .take(spec::CONF_LEN_MAX + 1)
        .read_to_end(&mut buf)
        .map_err(|e| CniError::new(Code::Io, "cannot read stdin", e.to_string()))?;
    if buf.len() as u64 > spec::CONF_LEN_MAX {
        return Err(CniError::new(
            Code::Decode,
            "cannot decode the network configuration",
            format!("more than {} bytes on stdin", spec::CONF_LEN_MAX),
        ));
    }
    Ok(buf)
}

/// The attachment's key from `CNI_CONTAINERID` and `CNI_IFNAME`.
fn key() -> Result<(String, String), CniError> {
    let id = need_env("CNI_CONTAINERID")?;
    super::check_container_id(&id).map_err(bad_env)?;
    let ifname = need_env("CNI_IFNAME")?;
    super::check_ifname(&ifname).map_err(bad_env)?;
    Ok((id, ifname))
}

/// `CNI_NETNS`, which must name an existing file.
fn netns() -> Result<PathBuf, CniError> {
    let p = PathBuf::from(need_env("CNI_NETNS")?);
    if !p.exists() {
        return Err(CniError::new(
            Code::UnknownContainer,
            "container unknown",
            format!("CNI_NETNS {}: no such network namespace", p.display()),
        ));
    }
    Ok(p)
}

fn run(version: &mut String) -> Result<Option<Value>, CniError> {
    let cmd = Command::parse(&need_env("CNI_COMMAND")?)?;
    let stdin = read_stdin()?;
    let conf = NetConf::parse(&stdin, cmd)?;
    if !conf.version.is_empty() {
        version.clone_from(&conf.version);
    }
    let socket = conf
        .socket()
        .map_or_else(|| PathBuf::from(SOCKET_DEFAULT), Path::to_path_buf);
    let client = Client::new(&socket);
    if conf.ipam_only() {
        return match cmd {
            Command::Add => ipam_add(&client, &conf).map(Some),
            Command::Del => ipam_del(&client).map(|()| None),
            // The reservation is the router's: CHECK asks that it answers and can allocate.
            Command::Check => key().and_then(|_| status(&client)).map(|()| None),
            Command::Version => Ok(Some(result::version_reply(&conf.version))),
            Command::Status => status(&client).map(|()| None),
            Command::Gc => gc(&client, &conf).map(|()| None),
        };
    }
    match cmd {
        Command::Version => Ok(Some(result::version_reply(&conf.version))),
        Command::Add => add(&client, &conf, &stdin).map(Some),
        Command::Del => {
            // The delegated plugin's DEL first: it needs no router, so a router that is
            // down still gets its spooled DEL and the address in that plugin is free.
            if let Some(kind) = conf.delegated_ipam() {
                super::delegate::run(kind, "DEL", &stdin)?;
            }
            del(&client).map(|()| None)
        }
        Command::Check => check(&client, &conf).map(|()| None),
        Command::Status => status(&client).map(|()| None),
        Command::Gc => gc(&client, &conf).map(|()| None),
    }
}

/// How a request to the router went wrong, as the spec's codes.
fn router_error(socket: &Path, what: &str, e: &Error) -> CniError {
    match e {
        Error::NotRunning(_) | Error::Refused(_) => CniError::new(
            Code::TryAgain,
            "the weft router does not answer",
            format!("{what}: {e}"),
        ),
        _ => CniError::new(
            Code::RouterFailed,
            "the weft router could not be asked",
            format!("{what} on {}: {e}", socket.display()),
        ),
    }
}

fn refused(what: &str, status: u16, line: &str) -> CniError {
    let code = match status {
        409 => Code::RouterRefused,
        503 => Code::TryAgain,
        400 => Code::InvalidConf,
        _ => Code::RouterFailed,
    };
    CniError::new(code, format!("the weft router refused {what}"), line)
}

fn post<B: serde::Serialize, T: serde::de::DeserializeOwned>(
    client: &Client,
    what: &str,
    path: &str,
    body: &B,
) -> Result<T, CniError> {
    match client.post_status(path, body) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err((status, line))) => Err(refused(what, status, &line)),
        Err(e) => Err(router_error(client.socket(), what, &e)),
    }
}

/// The DNS name `CNI_ARGS` (`K=V;K=V`) gives: `K8S_POD_NAME.K8S_POD_NAMESPACE`, or
/// `K8S_POD_NAME` alone without a namespace (podman passes the container's name so).
fn pod_name(args: &str) -> Result<Option<String>, CniError> {
    if args.len() > CNI_ARGS_LEN_MAX {
        return Err(CniError::new(
            Code::Decode,
            "cannot decode CNI_ARGS",
            format!("more than {CNI_ARGS_LEN_MAX} bytes"),
        ));
    }
    let (mut name, mut namespace) = (None, None);
    for pair in args.split(';').filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(CniError::new(
                Code::Decode,
                "cannot decode CNI_ARGS",
                format!("{:?} is not KEY=VALUE", super::truncate(pair, 40)),
            ));
        };
        match k {
            "K8S_POD_NAME" => name = Some(v),
            "K8S_POD_NAMESPACE" => namespace = Some(v),
            _ => {}
        }
    }
    Ok(match (name.filter(|n| !n.is_empty()), namespace) {
        (Some(n), Some(ns)) if !ns.is_empty() => Some(format!("{n}.{ns}")),
        (Some(n), _) => Some(n.to_owned()),
        (None, _) => None,
    })
}

fn add(client: &Client, conf: &NetConf, stdin: &[u8]) -> Result<Value, CniError> {
    let (container_id, ifname) = key()?;
    let netns = netns()?;
    let cni_args = env("CNI_ARGS").unwrap_or_default();
    let name = pod_name(&cni_args)?;
    let namespace = cni_args
        .split(';')
        .find_map(|p| p.strip_prefix("K8S_POD_NAMESPACE="))
        .filter(|ns| weft_core::policy::check_name(ns).is_ok())
        .map(str::to_owned);
    let (addresses, gateway) = match conf.delegated_ipam() {
        Some(kind) => super::delegate::addresses(&super::delegate::run(kind, "ADD", stdin)?)?,
        None => (Vec::new(), None),
    };
    let body = CniAddRequest {
        container_id,
        ifname,
        netns: netns.clone(),
        subnet: conf.ipam.subnet.map(|s| NetSpec(Some(s))),
        name,
        addresses,
        gateway,
        namespace,
        labels: conf
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
    };
    let r: CniAddReply = match post(client, "ADD", "/cni/add", &body) {
        Ok(r) => r,
        Err(e) => {
            // Nothing half-made: the delegated plugin's address goes back.
            if let Some(kind) = conf.delegated_ipam() {
                let _ = super::delegate::run(kind, "DEL", stdin);
            }
            return Err(e);
        }
    };
    let added = result::Added {
        ifname: r.attachment.ifname,
        mac: r.attachment.mac,
        sandbox: netns.display().to_string(),
        mtu_bytes: r.mtu_bytes,
        addresses: r
            .attachment
            .addresses
            .iter()
            .map(ToString::to_string)
            .collect(),
        gateway: r.gateway.map(|g| g.addr.to_string()),
        nameservers: r.dns.server.into_iter().collect(),
        domain: r.dns.domain.map(|d| d.trim_end_matches('.').to_owned()),
    };
    Ok(result::add_result(&added, &conf.version))
}

fn ipam_add(client: &Client, conf: &NetConf) -> Result<Value, CniError> {
    let (container_id, ifname) = key()?;
    let body = CniIpamRequest {
        container_id,
        ifname,
        subnet: conf.ipam.subnet.map(|s| NetSpec(Some(s))),
        gateway: conf.is_gateway || conf.ipam.gateway,
    };
    let r: CniIpamReply = post(client, "IPAM ADD", "/cni/ipam/add", &body)?;
    let a = result::Allocated {
        addresses: r.addresses.iter().map(ToString::to_string).collect(),
        gateway: r.gateway.map(|g| g.addr.to_string()),
        nameservers: r.dns.server.into_iter().collect(),
        domain: r.dns.domain.map(|d| d.trim_end_matches('.').to_owned()),
    };
    Ok(result::ipam_result(&a, &conf.version))
}

fn ipam_del(client: &Client) -> Result<(), CniError> {
    let (container_id, ifname) = key()?;
    let body = CniIpamRequest {
        container_id,
        ifname,
        subnet: None,
        gateway: false,
    };
    match client.post_status::<_, CniDelReply>("/cni/ipam/del", &body) {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((status, line))) => Err(refused("IPAM DEL", status, &line)),
        Err(Error::NotRunning(_) | Error::Refused(_)) => {
            let id = super::ipam_owner_id(&body.container_id, &body.ifname);
            let del = CniDelRequest {
                container_id: body.container_id,
                ifname: body.ifname,
            };
            spool(client.socket(), &id, &del)
        }
        Err(e) => Err(router_error(client.socket(), "IPAM DEL", &e)),
    }
}

fn del(client: &Client) -> Result<(), CniError> {
    let (container_id, ifname) = key()?;
    let body = CniDelRequest {
        container_id,
        ifname,
    };
    match client.post_status::<_, CniDelReply>("/cni/del", &body) {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((status, line))) => Err(refused("DEL", status, &line)),
        Err(Error::NotRunning(_) | Error::Refused(_)) => {
            let id = super::owner_id(&body.container_id, &body.ifname);
            spool(client.socket(), &id, &body)
        }
        Err(e) => Err(router_error(client.socket(), "DEL", &e)),
    }
}

/// Records `del` of owner `id` for the router at `socket` to carry out when it is back
/// (the file's name, `<id>.json`, says whether it is an attachment or an IPAM owner).
fn spool(socket: &Path, id: &str, del: &CniDelRequest) -> Result<(), CniError> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = super::spool_dir(socket);
    let io = |e: String| CniError::new(Code::Io, "cannot record the DEL for later", e);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| io(format!("create {}: {e}", dir.display())))?;
    let path = dir.join(format!("{id}.json"));
    let bytes = serde_json::to_vec(del).map_err(|e| io(e.to_string()))?;
    crate::state::write_atomic(&path, &bytes).map_err(|e| io(e.to_string()))
}

fn check(client: &Client, conf: &NetConf) -> Result<(), CniError> {
    let (container_id, ifname) = key()?;
    let netns = netns()?;
    let Some(prev) = &conf.prev_result else {
        return Err(CniError::new(
            Code::InvalidConf,
            "invalid network configuration",
            "field prevResult is missing (CHECK needs the ADD's result)",
        ));
    };
    let want = result::prev_result_of(prev, &ifname)?;
    let mut addresses = Vec::with_capacity(want.addresses.len());
    for a in &want.addresses {
        addresses.push(a.parse::<Cidr>().map_err(|e| {
            CniError::new(
                Code::InvalidConf,
                "invalid network configuration",
                format!("field prevResult.ips: {e}"),
            )
        })?);
    }
    let default_via = match &want.default_via {
        None => None,
        Some(g) => Some(g.parse().map_err(|e| {
            CniError::new(
                Code::InvalidConf,
                "invalid network configuration",
                format!("field prevResult.routes: gw {g:?}: {e}"),
            )
        })?),
    };
    let body = CniCheckRequest {
        container_id,
        ifname,
        netns,
        addresses,
        mac: want.mac,
        default_via,
    };
    let r: CniCheckReply = post(client, "CHECK", "/cni/check", &body)?;
    if r.problems.is_empty() {
        return Ok(());
    }
    Err(CniError::new(
        Code::RouterRefused,
        "the container's network is not as ADD made it",
        r.problems.join("; "),
    ))
}

fn status(client: &Client) -> Result<(), CniError> {
    let not_available =
        |d: String| CniError::new(Code::NotAvailable, "weft cannot add containers now", d);
    let st: IpamStatus = client
        .get("/status/ipam")
        .map_err(|e| not_available(e.to_string()))?;
    if st.ring.is_none() {
        return Err(not_available(format!(
            "IPAM has no address ring yet ({})",
            st.waiting_for.unwrap_or_else(|| "waiting".into())
        )));
    }
    Ok(())
}

fn gc(client: &Client, conf: &NetConf) -> Result<(), CniError> {
    let valid = conf
        .valid_attachments
        .iter()
        .map(|v| CniAttachmentKey {
            container_id: v.container_id.clone(),
            ifname: v.ifname.clone(),
        })
        .collect();
    let _: CniGcReply = post(client, "GC", "/cni/gc", &CniGcRequest { valid })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_names_come_from_cni_args() {
        let args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc";
        assert_eq!(pod_name(args).unwrap().as_deref(), Some("web-0.prod"));
        assert_eq!(
            pod_name("IgnoreUnknown=1;K8S_POD_NAME=srv")
                .unwrap()
                .as_deref(),
            Some("srv")
        );
        assert_eq!(pod_name("K8S_POD_NAMESPACE=prod").unwrap(), None);
        assert_eq!(pod_name("").unwrap(), None);
        assert_eq!(pod_name("garbage").unwrap_err().code, Code::Decode);
    }

    #[test]
    fn router_statuses_map_to_the_spec_codes() {
        assert_eq!(refused("ADD", 409, "twice").code, Code::RouterRefused);
        assert_eq!(refused("ADD", 503, "stopping").code, Code::TryAgain);
        assert_eq!(refused("ADD", 400, "bad").code, Code::InvalidConf);
        let e = router_error(
            Path::new("/x"),
            "ADD",
            &Error::NotRunning(PathBuf::from("/x")),
        );
        assert_eq!(e.code, Code::TryAgain);
    }
}
