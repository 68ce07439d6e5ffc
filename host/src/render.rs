//! Human-readable output of `weft status` and `weft ps`, from the control API's JSON.
//! Missing fields print as `-`: a newer or older router never makes the CLI fail.

use crate::cli::StatusWhat;
use serde_json::Value;
use std::fmt::Write;

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `weft status [what]`.
pub(crate) fn status(what: Option<StatusWhat>, v: &Value) -> String {
    match what {
        None => summary(v),
        Some(StatusWhat::Peers) => peers(v),
        Some(StatusWhat::Connections) => connections(v),
        Some(StatusWhat::Targets) => targets(v),
        Some(StatusWhat::Dns) => crate::dns::cmd::render_status(v),
        Some(StatusWhat::Ipam) => crate::ipam::render_status(v),
    }
}

/// The router's refusals (idle or hostile clients, full target tables), only the
/// counters that are not zero; `None` when nothing was refused.
fn refused_line(r: &Value) -> Option<String> {
    let parts: Vec<String> = [
        ("conn_limit", "at the connection limit"),
        ("pending_inbound_full", "handshake budget full"),
        (
            "pending_inbound_per_addr",
            "too many handshakes from one address",
        ),
        ("pre_hello_timeouts", "no hello in time"),
        ("locked_out", "address locked out"),
        ("password_lockouts", "lockouts after failed passwords"),
        ("explicit_targets_full", "connect targets (table full)"),
        ("discovered_targets_full", "discovered targets (table full)"),
        ("discovered_targets_expired", "discovered targets expired"),
        (
            "discovered_dials_preempted",
            "discovered dials stopped for connect",
        ),
    ]
    .iter()
    .filter_map(|(k, label)| {
        let n = r[*k].as_u64().filter(|n| *n > 0)?;
        Some(format!("{n} {label}"))
    })
    .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

fn summary(v: &Value) -> String {
    let mut o = String::new();
    let c = &v["connections"];
    let row = |o: &mut String, k: &str, val: String| {
        let _ = writeln!(o, "{k:>16}: {val}");
    };
    row(&mut o, "Version", s(&v["version"]));
    row(
        &mut o,
        "Name",
        format!("{} ({})", s(&v["name"]), s(&v["nickname"])),
    );
    row(
        &mut o,
        "Encryption",
        if v["encrypted"].as_bool() == Some(true) {
            "enabled (SPAKE2 with the shared password or key; all traffic sealed)"
        } else {
            "disabled: peers are not authenticated (anyone who reaches the port can join) \
             and container traffic is not encrypted"
        }
        .into(),
    );
    row(&mut o, "Port", s(&v["port"]));
    if let Some(f) = v["peer_filter"].as_str() {
        let dropped = match v["peer_filter_dropped"].as_u64() {
            Some(n) => format!("; {n} datagrams from strangers dropped"),
            None => String::new(),
        };
        row(&mut o, "Peer filter", format!("{f}{dropped}"));
    }
    row(
        &mut o,
        "Peers",
        format!(
            "{} ({} reachable from here)",
            s(&v["peers"]),
            s(&v["reachable_peers"])
        ),
    );
    row(
        &mut o,
        "Connections",
        format!(
            "{} established, {} handshaking, {} confirming",
            s(&c["established"]),
            s(&c["handshaking"]),
            s(&c["confirming"])
        ),
    );
    row(&mut o, "Targets", s(&v["targets"]));
    row(
        &mut o,
        "Bridge",
        format!("{} ({} attachments)", s(&v["bridge"]), s(&v["attachments"])),
    );
    row(&mut o, "Datapath", s(&v["datapath"]["mode"]));
    if let Some(b) = v["datapath"]["backend"].as_str() {
        let sealing = match v["datapath"]["crypto_threads"].as_u64().unwrap_or(0) {
            0 => "not encrypted".to_owned(),
            1 => "sealing on 1 thread".to_owned(),
            n => format!("sealing on {n} threads"),
        };
        row(&mut o, "Sleeve", format!("{b} backend, {sealing}"));
    }
    if let Some(paths) = v["datapath"]["paths"].as_array() {
        let short: Vec<&Value> = paths
            .iter()
            .filter(|p| p["link_fits_full_frames"] == false)
            .collect();
        let fit = short
            .iter()
            .filter_map(|p| p["overlay_mtu_fitting_link"].as_u64())
            .min();
        if let Some(fit) = fit {
            row(
                &mut o,
                "Underlay",
                format!(
                    "too small for full-size frames on the way to {} of {} peers: TCP is cut to fit, other large packets are fragmented (--mtu {fit} or less avoids that)",
                    short.len(),
                    paths.len()
                ),
            );
        }
    }
    if let Some(r) = refused_line(&v["refused"]) {
        row(&mut o, "Refused", r);
    }
    if let Some(f) = v["recent_failures"].as_array().and_then(|a| a.first()) {
        row(
            &mut o,
            "Last failure",
            format!(
                "{} {}: {}",
                if f["outbound"].as_bool() == Some(true) {
                    "->"
                } else {
                    "<-"
                },
                s(&f["address"]),
                s(&f["error"])
            ),
        );
    }
    o
}

fn peers(v: &Value) -> String {
    let mut o = String::new();
    for p in v.as_array().into_iter().flatten() {
        let tag = if p["ourself"].as_bool() == Some(true) {
            "(this router)".to_owned()
        } else if p["reachable"].as_bool() == Some(true) {
            format!("via {}", s(&p["next_hop"]))
        } else {
            "unreachable".to_owned()
        };
        let _ = writeln!(o, "{}({}) {tag}", s(&p["name"]), s(&p["nickname"]));
        for c in p["connections"].as_array().into_iter().flatten() {
            let dir = if c["outbound"].as_bool() == Some(true) {
                "->"
            } else {
                "<-"
            };
            let est = if c["established"].as_bool() == Some(true) {
                "established"
            } else {
                "pending"
            };
            let _ = writeln!(o, "   {dir} {} {} {est}", s(&c["peer"]), s(&c["address"]));
        }
    }
    o
}

fn connections(v: &Value) -> String {
    let mut o = String::new();
    for c in v.as_array().into_iter().flatten() {
        let dir = if c["outbound"].as_bool() == Some(true) {
            "->"
        } else {
            "<-"
        };
        let enc = if c["encrypted"].as_bool() == Some(true) {
            "encrypted"
        } else {
            "unencrypted"
        };
        let mut line = format!(
            "{dir} {:<24} {:<12} {:<11} {}",
            s(&c["address"]),
            s(&c["state"]),
            enc,
            s(&c["mode"])
        );
        if !c["peer"].is_null() {
            let _ = write!(line, " {}({})", s(&c["peer"]), s(&c["nickname"]));
        }
        if !c["error"].is_null() {
            let _ = write!(line, " {}", s(&c["error"]));
        }
        let _ = writeln!(o, "{line}");
    }
    o
}

fn targets(v: &Value) -> String {
    let mut o = String::new();
    for t in v.as_array().into_iter().flatten() {
        let mut line = format!(
            "{:<24} {:<10} {:<10}",
            s(&t["address"]),
            s(&t["kind"]),
            s(&t["state"])
        );
        if let Some(ms) = t["next_attempt_in_ms"].as_u64() {
            let _ = write!(line, " retry in {:.1}s", ms as f64 / 1000.0);
        }
        if t["failures"].as_u64().is_some_and(|n| n > 0) {
            let _ = write!(line, " failures={}", s(&t["failures"]));
        }
        if !t["last_error"].is_null() {
            let _ = write!(line, " last error: {}", s(&t["last_error"]));
        }
        let _ = writeln!(o, "{line}");
    }
    o
}

/// `weft ps`: one line per attachment: id, MAC, addresses.
pub(crate) fn ps(v: &Value) -> String {
    let mut o = String::new();
    for a in v.as_array().into_iter().flatten() {
        let addrs: Vec<String> = a["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .map(s)
            .collect();
        let _ = writeln!(o, "{} {} {}", s(&a["id"]), s(&a["mac"]), addrs.join(" "));
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_failed_target_with_reason() {
        let v = json!([{ "address": "10.0.0.2:6783", "kind": "explicit", "state": "waiting",
            "next_attempt_in_ms": 1500, "failures": 2, "last_error": "wrong password" }]);
        let out = status(Some(StatusWhat::Targets), &v);
        assert!(out.contains("10.0.0.2:6783"), "{out}");
        assert!(out.contains("retry in 1.5s"), "{out}");
        assert!(out.contains("last error: wrong password"), "{out}");
    }

    #[test]
    fn summary_shows_only_the_refusals_that_happened() {
        let quiet = status(None, &json!({ "refused": { "locked_out": 0 } }));
        assert!(!quiet.contains("Refused"), "{quiet}");
        let v = json!({ "refused": { "pending_inbound_per_addr": 460, "locked_out": 3,
            "password_lockouts": 1, "discovered_targets_expired": 0 } });
        let out = status(None, &v);
        let line = out.lines().find(|l| l.contains("Refused")).expect(&out);
        assert!(
            line.contains("460 too many handshakes from one address"),
            "{line}"
        );
        assert!(line.contains("3 address locked out"), "{line}");
        assert!(line.contains("1 lockouts after failed passwords"), "{line}");
        assert!(!line.contains("expired"), "{line}");
    }

    #[test]
    fn tolerates_missing_fields() {
        let out = status(None, &json!({}));
        assert!(out.contains("Name: - (-)"), "{out}");
        assert_eq!(ps(&json!("not an array")), "");
    }
}
