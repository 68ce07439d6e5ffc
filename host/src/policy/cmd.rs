//! The CLI's side of network policy: `weft policy apply/delete/ls/explain`, `weft label`
//! and the rendering of `weft status policy`.

use super::types::{
    LabelRequest, PolicyApplyReply, PolicyApplyRequest, PolicyDeleteReply, PolicyDeleteRequest,
    PolicyDocument, PolicyExplainReply, PolicyExplainRequest, PolicyLine, PolicyStatus,
};
use crate::cli::PolicyCommand;
use crate::client::Client;
use crate::error::{Error, Result};
use crate::state::Attachment;
use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};

/// Largest input file read.
pub(crate) const FILE_LEN_MAX: u64 = 4 * 1024 * 1024;

fn read_one(path: &Path, out: &mut Vec<PolicyDocument>) -> Result<()> {
    let source = path.display().to_string();
    let text = if path == Path::new("-") {
        let mut s = String::new();
        std::io::stdin()
            .take(FILE_LEN_MAX)
            .read_to_string(&mut s)
            .map_err(Error::io("read", "stdin"))?;
        s
    } else {
        let bytes = crate::state::read_bounded(path, FILE_LEN_MAX)?
            .ok_or_else(|| Error::Other(format!("{source}: no such file")))?;
        String::from_utf8(bytes).map_err(|_| Error::Other(format!("{source}: not UTF-8 text")))?
    };
    out.push(PolicyDocument { source, text });
    Ok(())
}

/// The documents of `files`: files as given, directories' *.yaml, *.yml, *.json in name order.
fn documents(files: &[PathBuf]) -> Result<Vec<PolicyDocument>> {
    let mut out = Vec::new();
    for f in files {
        if f.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(f)
                .map_err(Error::io("read directory", f))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && p.extension()
                            .and_then(|x| x.to_str())
                            .is_some_and(|x| matches!(x, "yaml" | "yml" | "json"))
                })
                .collect();
            entries.sort();
            if entries.is_empty() {
                return Err(Error::Other(format!(
                    "{}: no .yaml, .yml or .json files",
                    f.display()
                )));
            }
            for e in entries {
                read_one(&e, &mut out)?;
            }
        } else {
            read_one(f, &mut out)?;
        }
    }
    Ok(out)
}

/// `weft policy ...`.
pub(crate) fn cmd(client: &Client, c: PolicyCommand) -> Result<()> {
    match c {
        PolicyCommand::Apply { files } => {
            let body = PolicyApplyRequest {
                documents: documents(&files)?,
            };
            let r: PolicyApplyReply = client.post("/policy/apply", &body)?;
            for l in r.applied {
                println!("{l}");
            }
        }
        PolicyCommand::Delete { name, namespace } => {
            let body = PolicyDeleteRequest { namespace, name };
            let r: PolicyDeleteReply = client.post("/policy/delete", &body)?;
            println!("networkpolicy {} deleted", r.deleted);
        }
        PolicyCommand::Ls { json } => {
            let list: Vec<PolicyLine> = client.get("/policy")?;
            if json {
                let text = serde_json::to_string_pretty(&list)
                    .map_err(|e| Error::Other(format!("encode as JSON: {e}")))?;
                println!("{text}");
            } else {
                print!("{}", render_list(&list));
            }
        }
        PolicyCommand::Explain { src, dst, port } => {
            let (port, proto) = match port.split_once('/') {
                Some((p, proto)) => (p.to_owned(), proto.to_owned()),
                None if port.chars().all(|c| c.is_ascii_digit()) => (port, "tcp".to_owned()),
                None => ("0".to_owned(), port),
            };
            let port: u16 = port
                .parse()
                .map_err(|_| Error::Other(format!("port {port:?}: a number 0-65535")))?;
            let body = PolicyExplainRequest {
                src,
                dst,
                port,
                proto,
            };
            let r: PolicyExplainReply = client.post("/policy/explain", &body)?;
            println!("{}", r.reason);
            if !r.allowed {
                // Scripts can test it: exit 1 when denied.
                std::process::exit(1);
            }
        }
    }
    Ok(())
}

/// `weft label TARGET KEY=VALUE KEY-`.
pub(crate) fn label(
    client: &Client,
    netns: &Path,
    changes: &[String],
    namespace: Option<String>,
) -> Result<()> {
    let labels = super::k8s::label_changes(changes).map_err(|e| Error::Other(e.0))?;
    let body = LabelRequest {
        netns: netns.to_path_buf(),
        labels,
        namespace,
    };
    let a: Attachment = client.post("/label", &body)?;
    let labels: Vec<String> = a
        .pod
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    println!(
        "{} namespace={} {}",
        a.id,
        a.pod
            .namespace
            .as_deref()
            .unwrap_or(weft_core::policy::DEFAULT_NAMESPACE),
        labels.join(" ")
    );
    Ok(())
}

fn render_list(list: &[PolicyLine]) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:<40} {:<14} {:>5} {:>5} {:>5} {:>9}",
        "POLICY", "ISOLATES", "IN", "OUT", "PODS", "BLOCKED"
    );
    for p in list {
        let iso = match (p.ingress, p.egress) {
            (true, true) => "ingress,egress",
            (true, false) => "ingress",
            (false, true) => "egress",
            (false, false) => "-",
        };
        let _ = writeln!(
            o,
            "{:<40} {:<14} {:>5} {:>5} {:>5} {:>9}",
            p.policy, iso, p.ingress_rules, p.egress_rules, p.local_pods, p.blocked_packets
        );
    }
    o
}

/// `weft status policy`.
pub(crate) fn render_status(s: &PolicyStatus) -> String {
    let mut o = String::new();
    let row = |o: &mut String, k: &str, v: String| {
        let _ = writeln!(o, "{k:>18}: {v}");
    };
    row(&mut o, "table", s.table.clone());
    row(
        &mut o,
        "applied",
        if s.applied_at_unix_s == 0 {
            "not yet".to_owned()
        } else {
            format!(
                "{} tables, last at unix {} ({} ms)",
                s.applies, s.applied_at_unix_s, s.compile_ms
            )
        },
    );
    if let Some(e) = &s.last_error {
        row(
            &mut o,
            "last error",
            format!("{e} ({} in all; the previous table stays)", s.errors),
        );
    }
    row(
        &mut o,
        "pods",
        format!("{} known, {} here", s.pods, s.local_pods),
    );
    row(
        &mut o,
        "isolated here",
        format!(
            "{} ingress, {} egress",
            s.isolated_ingress, s.isolated_egress
        ),
    );
    row(
        &mut o,
        "table size",
        format!("{} pod chains, {} elements", s.chains, s.elements),
    );
    if !s.namespaces.is_empty() {
        row(&mut o, "labelled namespaces", s.namespaces.join(", "));
    }
    o.push('\n');
    o.push_str(&render_list(&s.policies));
    if !s.rules.is_empty() {
        let _ = writeln!(
            o,
            "\n{:<40} {:<8} {:>5} {:>9}",
            "RULE OF", "DIR", "RULE", "PACKETS"
        );
        for r in &s.rules {
            let _ = writeln!(
                o,
                "{:<40} {:<8} {:>5} {:>9}",
                r.policy, r.direction, r.rule, r.packets
            );
        }
    }
    o
}
