//! Human-readable output of `weft status` and `weft ps`, from the control API's typed
//! replies ([`crate::messages`]). Fields an older or newer router leaves out take their
//! defaults and print as `-` or 0: the CLI never fails to print a status.

use crate::messages::{ConnectionStatus, PeerStatus, Refused, Summary, TargetStatus};
use crate::state::Attachment;
use std::fmt::Write;

fn s<T: ToString>(v: &Option<T>) -> String {
    v.as_ref()
        .map_or_else(|| "-".to_owned(), ToString::to_string)
}

fn dir(outbound: bool) -> &'static str {
    if outbound { "->" } else { "<-" }
}

/// The router's refusals (idle or hostile clients, full target tables), only the
/// counters that are not zero; `None` when nothing was refused.
fn refused_line(r: &Refused) -> Option<String> {
    let parts: Vec<String> = [
        (r.conn_limit, "at the connection limit"),
        (r.pending_inbound_full, "handshake budget full"),
        (
            r.pending_inbound_per_addr,
            "too many handshakes from one address",
        ),
        (r.pre_hello_timeouts, "no hello in time"),
        (r.locked_out, "address locked out"),
        (r.password_lockouts, "lockouts after failed passwords"),
        (r.explicit_targets_full, "connect targets (table full)"),
        (r.discovered_targets_full, "discovered targets (table full)"),
        (r.discovered_targets_expired, "discovered targets expired"),
        (
            r.discovered_dials_preempted,
            "discovered dials stopped for connect",
        ),
    ]
    .iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, label)| format!("{n} {label}"))
    .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// `weft status`.
pub(crate) fn summary(v: &Summary) -> String {
    let r = &v.router;
    let mut o = String::new();
    let count = |state: &str| s(&r.connections.get(state));
    let row = |o: &mut String, k: &str, val: String| {
        let _ = writeln!(o, "{k:>16}: {val}");
    };
    row(&mut o, "Version", s(&r.version));
    row(
        &mut o,
        "Name",
        format!("{} ({})", s(&r.name), s(&r.nickname)),
    );
    row(
        &mut o,
        "Encryption",
        if r.encrypted {
            "enabled (SPAKE2 with the shared password or key; all traffic sealed)"
        } else {
            "disabled: peers are not authenticated (anyone who reaches the port can join) \
             and container traffic is not encrypted"
        }
        .into(),
    );
    row(&mut o, "Port", s(&r.port));
    if let Some(f) = &r.peer_filter {
        let dropped = match v.peer_filter_dropped {
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
            s(&r.peers),
            s(&r.reachable_peers)
        ),
    );
    row(
        &mut o,
        "Connections",
        format!(
            "{} established, {} handshaking, {} confirming",
            count("established"),
            count("handshaking"),
            count("confirming")
        ),
    );
    row(&mut o, "Targets", s(&r.targets));
    row(
        &mut o,
        "Bridge",
        format!("{} ({} attachments)", s(&v.bridge), s(&v.attachments)),
    );
    let pl = &v.plugin;
    row(
        &mut o,
        "Docker plugin",
        if pl.serving {
            format!(
                "driver {} on {} ({} networks, {} endpoints)",
                s(&pl.driver),
                s(&pl.socket),
                pl.networks,
                pl.endpoints
            )
        } else {
            format!("off: {}", s(&pl.off_reason))
        },
    );
    let px = &v.proxy;
    row(
        &mut o,
        "Docker proxy",
        if px.serving {
            format!(
                "on {} ({} containers; eval $(weft env))",
                s(&px.socket),
                px.containers
            )
        } else {
            format!("off: {}", s(&px.off_reason))
        },
    );
    let dp = &v.datapath;
    for (i, line) in v.imports.iter().enumerate() {
        row(&mut o, if i == 0 { "Imports" } else { "" }, line.clone());
    }
    row(&mut o, "Datapath", s(&dp.mode));
    if let Some(b) = &dp.backend {
        let sealing = match dp.crypto_threads {
            0 => "not encrypted".to_owned(),
            1 => "sealing on 1 thread".to_owned(),
            n => format!("sealing on {n} threads"),
        };
        let queues = match dp.queues.len() {
            0 | 1 => String::new(),
            n if dp.steered_by_cpu => format!("{n} queues (received by CPU), "),
            n => format!("{n} queues, "),
        };
        row(&mut o, "Sleeve", format!("{b} backend, {queues}{sealing}"));
    }
    let short: Vec<_> = dp
        .paths
        .iter()
        .filter(|p| p.link_fits_full_frames == Some(false))
        .collect();
    if let Some(fit) = short
        .iter()
        .filter_map(|p| p.overlay_mtu_fitting_link)
        .min()
    {
        row(
            &mut o,
            "Underlay",
            format!(
                "too small for full-size frames on the way to {} of {} peers: TCP is cut to fit, other large packets are fragmented (--mtu {fit} or less avoids that)",
                short.len(),
                dp.paths.len()
            ),
        );
    }
    if let Some(line) = refused_line(&r.refused) {
        row(&mut o, "Refused", line);
    }
    if let Some(f) = r.recent_failures.first() {
        row(
            &mut o,
            "Last failure",
            format!("{} {}: {}", dir(f.outbound), s(&f.address), s(&f.error)),
        );
    }
    o
}

/// `weft status peers`.
pub(crate) fn peers(v: &[PeerStatus]) -> String {
    let mut o = String::new();
    for p in v {
        let tag = if p.ourself {
            "(this router)".to_owned()
        } else if p.reachable {
            format!("via {}", s(&p.next_hop))
        } else {
            "unreachable".to_owned()
        };
        let _ = writeln!(o, "{}({}) {tag}", s(&p.name), s(&p.nickname));
        for c in &p.connections {
            let est = if c.established {
                "established"
            } else {
                "pending"
            };
            let _ = writeln!(
                o,
                "   {} {} {} {est}",
                dir(c.outbound),
                s(&c.peer),
                s(&c.address)
            );
        }
    }
    o
}

/// `weft status connections`.
pub(crate) fn connections(v: &[ConnectionStatus]) -> String {
    line_each(v, |c| {
        // The cipher once chosen; before the hellos only whether there will be one.
        let enc = match (&c.cipher, c.encrypted) {
            (Some(cipher), true) => cipher.as_str(),
            (None, true) => "encrypted",
            (_, false) => "unencrypted",
        };
        let mut line = format!(
            "{} {:<24} {:<12} {:<17} {}",
            dir(c.outbound),
            s(&c.address),
            s(&c.state),
            enc,
            s(&c.mode)
        );
        if c.path.as_deref() == Some("punched") {
            line.push_str(", punched through NAT");
        }
        if c.peer.is_some() {
            let _ = write!(line, " {}({})", s(&c.peer), s(&c.nickname));
        }
        if let Some(m) = &c.mapped_address {
            let _ = write!(line, " seen at {m}");
        }
        if let Some(t) = c.since_unix_s {
            let _ = write!(line, " for {}", ago(t));
        }
        if let Some(e) = &c.error {
            let _ = write!(line, " {e}");
        }
        line
    })
}

/// How long ago unix second `t` was, as `3s`, `4m5s` or `2h3m`.
fn ago(t: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let d = now.saturating_sub(t);
    match d {
        0..60 => format!("{d}s"),
        60..3600 => format!("{}m{}s", d / 60, d % 60),
        _ => format!("{}h{}m", d / 3600, d % 3600 / 60),
    }
}

/// `weft status targets`.
pub(crate) fn targets(v: &[TargetStatus]) -> String {
    line_each(v, |t| {
        let mut line = format!(
            "{:<24} {:<10} {:<10}",
            s(&t.address),
            s(&t.kind),
            s(&t.state)
        );
        if let Some(ms) = t.next_attempt_in_ms {
            let _ = write!(line, " retry in {:.1}s", ms as f64 / 1000.0);
        }
        if t.failures > 0 {
            let _ = write!(line, " failures={}", t.failures);
        }
        if let Some(e) = &t.last_error {
            let _ = write!(line, " last error: {e}");
        }
        line
    })
}

/// `weft ps`: one line per attachment: id, MAC, addresses.
pub(crate) fn ps(v: &[Attachment]) -> String {
    line_each(v, |a| {
        let addrs: Vec<String> = a.addresses.iter().map(ToString::to_string).collect();
        format!("{} {} {}", a.id, s(&a.mac), addrs.join(" "))
    })
}

/// One line per item of `v`, as `line` writes it.
fn line_each<T>(v: &[T], line: impl Fn(&T) -> String) -> String {
    v.iter().map(|x| line(x) + "\n").collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decode<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).expect("decodes")
    }

    #[test]
    fn renders_failed_target_with_reason() {
        let v = json!([{ "address": "10.0.0.2:6783", "kind": "explicit", "state": "waiting",
            "next_attempt_in_ms": 1500, "failures": 2, "last_error": "wrong password" }]);
        let out = targets(&decode::<Vec<_>>(v));
        assert!(out.contains("10.0.0.2:6783"), "{out}");
        assert!(out.contains("retry in 1.5s"), "{out}");
        assert!(out.contains("last error: wrong password"), "{out}");
    }

    #[test]
    fn summary_shows_only_the_refusals_that_happened() {
        let quiet = summary(&decode(json!({ "refused": { "locked_out": 0 } })));
        assert!(!quiet.contains("Refused"), "{quiet}");
        let v = json!({ "refused": { "pending_inbound_per_addr": 460, "locked_out": 3,
            "password_lockouts": 1, "discovered_targets_expired": 0 } });
        let out = summary(&decode(v));
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
        let out = summary(&decode(json!({})));
        assert!(out.contains("Name: - (-)"), "{out}");
        assert!(out.contains("Connections: - established"), "{out}");
        assert_eq!(ps(&[]), "");
    }

    #[test]
    fn short_underlay_is_reported_with_the_mtu_that_fits() {
        let v = json!({ "datapath": { "mode": "sleeve", "paths": [
            { "link_fits_full_frames": false, "overlay_mtu_fitting_link": 1400 },
            { "link_fits_full_frames": true, "overlay_mtu_fitting_link": 8000 },
        ] } });
        let out = summary(&decode(v));
        assert!(out.contains("on the way to 1 of 2 peers"), "{out}");
        assert!(out.contains("--mtu 1400 or less"), "{out}");
    }

    #[test]
    fn connections_show_each_links_cipher() {
        let v = json!([
            { "peer": "aa:00:00:00:00:01", "state": "established", "encrypted": true,
              "cipher": "aes-256-gcm", "mode": "sleeve" },
            { "peer": "aa:00:00:00:00:02", "state": "established", "encrypted": true,
              "cipher": "chacha20-poly1305", "mode": "sleeve" },
            { "peer": "aa:00:00:00:00:03", "state": "handshaking", "encrypted": true },
            { "peer": "aa:00:00:00:00:04", "state": "established", "mode": "fastdp" },
        ]);
        let out = connections(&decode::<Vec<_>>(v));
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].contains(" aes-256-gcm "), "{out}");
        assert!(lines[1].contains(" chacha20-poly1305 "), "{out}");
        assert!(lines[2].contains(" encrypted "), "{out}");
        assert!(lines[3].contains(" unencrypted "), "{out}");
    }

    #[test]
    fn connections_show_the_mapped_address_and_relayed_peers() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let v = json!([
            { "peer": "aa:00:00:00:00:01", "nickname": "x", "address": "198.18.0.2:39022",
              "state": "established", "mode": "sleeve", "path": "direct",
              "mapped_address": "198.18.0.2:40123", "since_unix_s": now - 75 },
            { "peer": "aa:00:00:00:00:02", "nickname": "y", "state": "relayed",
              "mode": "relayed via aa:00:00:00:00:03(p), punch failed: no answer",
              "path": "relayed", "punch": "failed: no answer",
              "via": "aa:00:00:00:00:03", "since_unix_s": now - 3 },
            { "peer": "aa:00:00:00:00:04", "nickname": "z", "address": "198.18.0.4:6783",
              "state": "established", "mode": "sleeve", "path": "punched" },
        ]);
        let out = connections(&decode::<Vec<_>>(v));
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[0].contains("seen at 198.18.0.2:40123 for 1m1"),
            "{out}"
        );
        assert!(
            lines[1].contains("relayed via aa:00:00:00:00:03(p), punch failed: no answer")
                && lines[1].contains("for 3s"),
            "{out}"
        );
        assert!(!lines[0].contains("punched"), "{out}");
        assert!(
            lines[2].contains("sleeve, punched through NAT aa:00:00:00:00:04(z)"),
            "{out}"
        );
    }
}
