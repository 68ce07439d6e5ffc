//! Best-effort firewall opening for the bridge.
//!
//! On a host whose FORWARD policy is DROP while `bridge-nf-call-iptables` is 1 (Docker
//! does this), frames between ports of the `weft` bridge would be dropped by iptables.
//! Then one rule accepting bridge-to-bridge forwarding is added (once). Anywhere else
//! (a fresh network namespace, a host without iptables) this does nothing.

use std::process::{Command, Stdio};

/// Adds `FORWARD -i BRIDGE -o BRIDGE -j ACCEPT` when the namespace needs it.
pub(crate) fn allow_bridge(bridge: &str) {
    let nf =
        std::fs::read_to_string("/proc/sys/net/bridge/bridge-nf-call-iptables").unwrap_or_default();
    if nf.trim() != "1" {
        return;
    }
    let Ok(out) = Command::new("iptables")
        .args(["-w", "-S", "FORWARD"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    else {
        return; // No iptables: nothing can drop bridged frames through it.
    };
    let rules = String::from_utf8_lossy(&out.stdout);
    if !rules.lines().any(|l| l.trim() == "-P FORWARD DROP") {
        return;
    }
    let rule = ["FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT"];
    let present = Command::new("iptables")
        .args(["-w", "-C"])
        .args(rule)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if present {
        return;
    }
    match Command::new("iptables")
        .args(["-w", "-I"])
        .args(rule)
        .stdin(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => tracing::info!(
            "iptables: accepting forwarding within bridge {bridge} (FORWARD policy is DROP)"
        ),
        Ok(s) => tracing::warn!(
            "iptables could not add the FORWARD rule for bridge {bridge} ({s}); traffic between containers may be dropped"
        ),
        Err(e) => tracing::warn!("iptables: {e}; traffic between containers may be dropped"),
    }
}
