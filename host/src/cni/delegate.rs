//! A delegated IPAM plugin (`"ipam": {"type": PLUGIN}` in a `weft` conf): run it from
//! `CNI_PATH` with the runtime's environment and stdin, and read its addresses.

use super::spec::{CniError, Code};
use crate::cli::Cidr;
use serde_json::Value;
use std::io::{Read, Write};
use std::path::Path;

/// Longest output read from a delegated plugin, in bytes.
pub(crate) const DELEGATE_OUTPUT_LEN_MAX: u64 = 1024 * 1024;

/// Runs the IPAM plugin `kind` (found on `CNI_PATH`) for `cmd` with this process's
/// environment and `stdin`; its result on success.
pub(super) fn run(kind: &str, cmd: &str, stdin: &[u8]) -> Result<Value, CniError> {
    use std::process::{Command as Process, Stdio};
    let paths = super::plugin::need_env("CNI_PATH")?;
    let Some(bin) = paths
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(kind))
        .find(|p| p.is_file())
    else {
        return Err(CniError::new(
            Code::InvalidConf,
            "invalid network configuration",
            format!("field ipam.type {kind:?}: no such plugin in CNI_PATH {paths}"),
        ));
    };
    let failed = |d: String| {
        CniError::new(
            Code::DelegateFailed,
            format!("IPAM plugin {kind} failed"),
            d,
        )
    };
    let mut child = Process::new(&bin)
        .env("CNI_COMMAND", cmd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| failed(format!("start {}: {e}", bin.display())))?;
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(stdin);
    }
    let mut out = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        let _ = stdout.take(DELEGATE_OUTPUT_LEN_MAX).read_to_end(&mut out);
    }
    let status = child
        .wait()
        .map_err(|e| failed(format!("wait for {}: {e}", bin.display())))?;
    let v: Value = if out.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&out).map_err(|e| failed(format!("its output is not JSON: {e}")))?
    };
    if !status.success() {
        let msg = v.get("msg").and_then(Value::as_str).unwrap_or("no message");
        let details = v.get("details").and_then(Value::as_str).unwrap_or("");
        let code = v.get("code").and_then(Value::as_u64).unwrap_or(0);
        return Err(failed(format!("{msg} (its code {code}) {details}")));
    }
    Ok(v)
}

/// The addresses and gateway in a delegated IPAM plugin's result.
pub(super) fn addresses(res: &Value) -> Result<(Vec<Cidr>, Option<Cidr>), CniError> {
    let bad = |d: String| {
        CniError::new(
            Code::DelegateFailed,
            "the IPAM plugin's result is unusable",
            d,
        )
    };
    let mut addrs = Vec::new();
    let mut gateway = None;
    for ip in res
        .get("ips")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let text = ip
            .get("address")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let c: Cidr = text.parse().map_err(|e| bad(format!("ips: {e}")))?;
        if let Some(g) = ip.get("gateway").and_then(Value::as_str) {
            let g: std::net::IpAddr = g.parse().map_err(|e| bad(format!("ips.gateway: {e}")))?;
            gateway.get_or_insert(Cidr {
                addr: g,
                prefix_len: c.prefix_len,
            });
        }
        addrs.push(c);
    }
    if addrs.is_empty() {
        return Err(bad("it gave no address".into()));
    }
    Ok((addrs, gateway))
}
