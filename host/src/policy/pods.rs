//! Attachments as network policy sees them: each recorded attachment's IPv4 addresses,
//! namespace, labels and named ports become a `weft_core::policy::Pod`, and every change
//! of the recorded attachments (whichever front end made it: `weft attach`, Docker's
//! plugin or proxy, CNI) is handed to the router task, which replicates this host's pods.

use crate::api::Api;
use crate::driver::Input;
use crate::state::{Attachment, PodMeta};
use std::collections::BTreeMap;
use std::sync::Arc;
use weft_core::policy::{DEFAULT_NAMESPACE, Labels, NamedPort, Pod, Proto, check_name};

/// One of this host's pods with what strict subnet isolation needs: its bridge port and
/// its addresses with their prefixes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LocalPort {
    /// The pod as policy sees it.
    pub(crate) pod: Pod,
    /// The veth end on the bridge.
    pub(crate) ifname: String,
    /// Its IPv4 addresses with their prefix lengths.
    pub(crate) cidrs: Vec<(std::net::Ipv4Addr, u8)>,
}

/// Parses a named port, `NAME=PORT[/PROTO]` (PROTO tcp, udp or sctp; tcp when omitted).
pub(crate) fn parse_port(s: &str) -> Result<NamedPort, String> {
    let bad = |why: &str| format!("port {s:?}: {why} (NAME=PORT/PROTO, e.g. http=80/tcp)");
    let (name, rest) = s.split_once('=').ok_or_else(|| bad("no '='"))?;
    let ok = name.len() <= super::k8s::PORT_NAME_LEN_MAX
        && check_name(name).is_ok()
        && name.bytes().any(|c| c.is_ascii_lowercase());
    if !ok {
        return Err(bad(
            "a name is 1-15 lowercase letters, digits or '-', with a letter",
        ));
    }
    let (port, proto) = rest.split_once('/').unwrap_or((rest, "tcp"));
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| bad("the port is a number 1-65535"))?;
    let proto = match proto.to_ascii_lowercase().as_str() {
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        "sctp" => Proto::Sctp,
        _ => return Err(bad("the protocol is tcp, udp or sctp")),
    };
    Ok(NamedPort {
        name: name.to_owned(),
        proto,
        port,
    })
}

/// Checks `attach --namespace --label --port` into the metadata to record.
pub(crate) fn meta(
    namespace: Option<String>,
    labels: &[String],
    ports: &[String],
) -> Result<PodMeta, String> {
    if let Some(ns) = &namespace {
        check_name(ns).map_err(|e| format!("namespace {ns:?}: {e}"))?;
    }
    let mut out = PodMeta {
        namespace,
        ..PodMeta::default()
    };
    let mut checked = Labels::new();
    for l in labels {
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| format!("label {l:?}: give KEY=VALUE"))?;
        checked
            .insert(k, v)
            .map_err(|e| format!("label {l:?}: {e}"))?;
        out.labels.insert(k.to_owned(), v.to_owned());
    }
    for p in ports {
        let np = parse_port(p)?;
        out.ports
            .push(format!("{}={}/{}", np.name, np.port, np.proto));
    }
    Ok(out)
}

/// The label naming a Docker container's policy namespace.
pub(crate) const DOCKER_NAMESPACE_LABEL: &str = "weft.namespace";
/// Labels `weft.port.NAME=PORT/PROTO` give a Docker container named ports.
pub(crate) const DOCKER_PORT_LABEL_PREFIX: &str = "weft.port.";

/// A Docker container's policy metadata from its labels, as `attach` arguments: the
/// namespace from [`DOCKER_NAMESPACE_LABEL`], named ports from
/// [`DOCKER_PORT_LABEL_PREFIX`]`NAME`, and every other label that is a valid Kubernetes
/// label (others, e.g. values with spaces, are left out: selectors could not name them).
pub(crate) fn from_container_labels(
    labels: &BTreeMap<String, String>,
) -> (Option<String>, Vec<String>, Vec<String>) {
    let mut ns = None;
    let (mut out, mut ports) = (Vec::new(), Vec::new());
    for (k, v) in labels {
        if k == DOCKER_NAMESPACE_LABEL {
            ns = check_name(v).is_ok().then(|| v.clone());
        } else if let Some(name) = k.strip_prefix(DOCKER_PORT_LABEL_PREFIX) {
            let p = format!("{name}={v}");
            if parse_port(&p).is_ok() {
                ports.push(p);
            }
        } else if Labels::new().insert(k, v).is_ok() && out.len() < weft_core::policy::LABELS_MAX {
            out.push(format!("{k}={v}"));
        }
    }
    (ns, out, ports)
}

/// Applies `weft label` changes (and a new namespace) to `meta`.
pub(crate) fn relabel(
    mut meta: PodMeta,
    changes: &BTreeMap<String, Option<String>>,
    namespace: Option<String>,
) -> Result<PodMeta, String> {
    if let Some(ns) = namespace {
        check_name(&ns).map_err(|e| format!("namespace {ns:?}: {e}"))?;
        meta.namespace = Some(ns);
    }
    let mut checked = Labels::new();
    for (k, v) in changes {
        match v {
            Some(v) => {
                checked
                    .insert(k, v)
                    .map_err(|e| format!("label {k}={v}: {e}"))?;
                meta.labels.insert(k.clone(), v.clone());
            }
            None => {
                meta.labels.remove(k);
            }
        }
    }
    if meta.labels.len() > weft_core::policy::LABELS_MAX {
        return Err(format!(
            "more than {} labels",
            weft_core::policy::LABELS_MAX
        ));
    }
    Ok(meta)
}

/// The pod of attachment `a` (labels or ports a hand-edited state file broke are left
/// out, with a warning).
pub(crate) fn pod_of(a: &Attachment) -> Pod {
    let addrs = a
        .addresses
        .iter()
        .filter_map(|c| match c.addr {
            std::net::IpAddr::V4(v4) => Some(v4),
            std::net::IpAddr::V6(_) => None,
        })
        .collect();
    pod_from(&a.id, addrs, &a.pod)
}

/// The pod with `addrs` and `meta`; `what` names it in warnings.
pub(crate) fn pod_from(what: &str, addrs: Vec<std::net::Ipv4Addr>, meta: &PodMeta) -> Pod {
    let mut labels = Labels::new();
    for (k, v) in &meta.labels {
        if let Err(e) = labels.insert(k, v) {
            tracing::warn!("{what}: label {k}={v} left out: {e}");
        }
    }
    let ports = meta
        .ports
        .iter()
        .filter_map(|p| match parse_port(p) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!("{what}: {e}; left out");
                None
            }
        })
        .take(weft_core::policy::NAMED_PORTS_MAX)
        .collect();
    let namespace = meta
        .namespace
        .clone()
        .filter(|n| check_name(n).is_ok())
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
    Pod {
        addrs,
        namespace,
        labels,
        ports,
    }
}

/// Hands the router task this host's pods now and after every change of the recorded
/// attachments or of the Docker plugin's containers, until the router stops.
pub(crate) async fn follow(api: Arc<Api>) {
    let mut rx = api.plumbing.lock().await.subscribe();
    let mut docker = api.docker_pods.subscribe();
    loop {
        let mut ports: BTreeMap<String, LocalPort> = api
            .plumbing
            .lock()
            .await
            .attachments()
            .iter()
            .map(|a| {
                let cidrs = a
                    .addresses
                    .iter()
                    .filter_map(|c| match c.addr {
                        std::net::IpAddr::V4(v4) => Some((v4, c.prefix_len)),
                        std::net::IpAddr::V6(_) => None,
                    })
                    .collect();
                let port = LocalPort {
                    pod: pod_of(a),
                    ifname: a.host_ifname.clone(),
                    cidrs,
                };
                (a.id.clone(), port)
            })
            .collect();
        ports.extend(docker.borrow_and_update().clone());
        // The enforcer learns the ports before the router task hands it the snapshot.
        api.policy.set_ports(&ports);
        let pods = ports.into_iter().map(|(id, p)| (id, p.pod)).collect();
        if api.inbox.send(Input::PolicyPods(pods)).await.is_err() {
            return;
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            r = docker.changed() => if r.is_err() { return },
        }
    }
}

/// A Docker container's policy metadata from its labels (the plugin's containers).
pub(crate) fn meta_of_container(labels: &BTreeMap<String, String>) -> PodMeta {
    let (namespace, labels, ports) = from_container_labels(labels);
    PodMeta {
        namespace,
        labels: labels
            .iter()
            .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect(),
        ports,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_ports_parse_and_refuse_with_the_reason() {
        let p = parse_port("http=8080/tcp").unwrap();
        assert_eq!(
            (p.name.as_str(), p.port, p.proto),
            ("http", 8080, Proto::Tcp)
        );
        assert_eq!(parse_port("dns=53/UDP").unwrap().proto, Proto::Udp);
        assert_eq!(parse_port("web=80").unwrap().proto, Proto::Tcp);
        for (bad, why) in [
            ("http", "no '='"),
            ("HTTP=80", "lowercase"),
            ("80=80", "with a letter"),
            ("http=0", "1-65535"),
            ("http=80/icmp", "tcp, udp or sctp"),
        ] {
            let e = parse_port(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn labels_change_and_bad_ones_are_refused() {
        let m = meta(
            Some("prod".into()),
            &["app=web".into()],
            &["http=80/tcp".into()],
        )
        .unwrap();
        assert_eq!(m.labels["app"], "web");
        assert!(meta(Some("Prod".into()), &[], &[]).is_err());
        assert!(meta(None, &["app".into()], &[]).is_err());
        let mut ch = BTreeMap::new();
        ch.insert("app".to_owned(), None);
        ch.insert("tier".to_owned(), Some("db".to_owned()));
        let m = relabel(m, &ch, Some("dev".into())).unwrap();
        assert_eq!(m.namespace.as_deref(), Some("dev"));
        assert!(!m.labels.contains_key("app"));
        assert_eq!(m.labels["tier"], "db");
        ch.insert("x".to_owned(), Some("bad value".to_owned()));
        assert!(relabel(m, &ch, None).is_err());
    }
}
