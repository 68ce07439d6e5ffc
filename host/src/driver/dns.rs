//! The router task's DNS part, a child of `driver` so it reaches the router. It runs the naming commands of the control API
//! against the core record set, rebuilds the server's snapshot when records or topology
//! change, and renders `weft status dns`.

use super::Driver;
use crate::dns::DnsServer;
use crate::dns::answer::Table;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use weft_core::dns::{CONTAINER_EXTERN, Container, DnsName, Filter};

/// A naming command for the router task.
#[derive(Debug)]
pub(crate) enum DnsRequest {
    /// Register `name` for each address (container: [`CONTAINER_EXTERN`] when `None`).
    Add {
        name: String,
        addrs: Vec<Ipv4Addr>,
        container: Option<String>,
    },
    /// Remove our records matching all given fields (at least one must be given).
    Remove {
        name: Option<String>,
        addrs: Vec<Ipv4Addr>,
        container: Option<String>,
    },
    /// Addresses of `name` (owners reachable).
    Lookup { name: String },
}

/// What the driver keeps for DNS.
pub(crate) struct DnsState {
    server: Option<Arc<DnsServer>>,
    /// Canonical domain, for qualifying bare names (`web` -> `web.weave.local`).
    domain: String,
    synced: Option<(u64, u64)>,
}

impl Default for DnsState {
    fn default() -> Self {
        Self {
            server: None,
            domain: "weave.local".to_owned(),
            synced: None,
        }
    }
}

/// `web` -> `web.<domain>`; a name with a dot (or a trailing one) is taken as it is.
pub(crate) fn qualify(name: &str, domain: &str) -> Result<DnsName, String> {
    let full = if name.contains('.') {
        name.to_owned()
    } else {
        format!("{name}.{domain}")
    };
    DnsName::new(&full).map_err(|e| format!("bad name {name:?}: {e}"))
}

impl Driver {
    /// Serves DNS from `server` (and qualifies bare names with its domain).
    pub(crate) fn set_dns(&mut self, server: Arc<DnsServer>) {
        self.dns.domain = server.domain().to_owned();
        self.dns.server = Some(server);
        self.dns.synced = None;
    }

    /// Runs one naming command.
    pub(super) fn dns_request(&mut self, req: DnsRequest) -> Result<Value, String> {
        let now = self.now();
        match req {
            DnsRequest::Add {
                name,
                addrs,
                container,
            } => {
                let name = qualify(&name, &self.dns.domain)?;
                let c = container.as_deref().unwrap_or(CONTAINER_EXTERN);
                let c = Container::new(c).map_err(|e| e.to_string())?;
                let mut added = 0;
                for a in &addrs {
                    if self
                        .router
                        .dns_add(now, &name, *a, &c)
                        .map_err(|e| format!("{name} {a}: {e}"))?
                    {
                        added += 1;
                    }
                }
                Ok(json!({ "name": format!("{name}."), "added": added }))
            }
            DnsRequest::Remove {
                name,
                addrs,
                container,
            } => {
                let name = name.map(|n| qualify(&n, &self.dns.domain)).transpose()?;
                let container = container
                    .map(|c| Container::new(&c).map_err(|e| e.to_string()))
                    .transpose()?;
                if name.is_none() && addrs.is_empty() && container.is_none() {
                    return Err("dns-remove needs a name, an address or a container".into());
                }
                let mut removed = 0;
                let addrs: Vec<Option<Ipv4Addr>> = if addrs.is_empty() {
                    vec![None]
                } else {
                    addrs.into_iter().map(Some).collect()
                };
                for addr in addrs {
                    let f = Filter {
                        name: name.clone(),
                        addr,
                        container: container.clone(),
                    };
                    removed += self.router.dns_remove(now, &f);
                }
                Ok(json!({ "removed": removed }))
            }
            DnsRequest::Lookup { name } => {
                let name = qualify(&name, &self.dns.domain)?;
                let addrs = self.router.dns_lookup(&name);
                Ok(json!({
                    "name": format!("{name}."),
                    "addresses": addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
                }))
            }
        }
    }

    /// Rebuilds the server's snapshot if records or topology changed.
    pub(super) fn sync_dns(&mut self) {
        let Some(server) = &self.dns.server else {
            return;
        };
        let generation = (
            self.router.dns_generation(),
            self.router.topology_generation(),
        );
        if self.dns.synced == Some(generation) {
            return;
        }
        let server = Arc::clone(server);
        self.dns.synced = Some(generation);
        let mut t = Table::default();
        for k in self.router.dns_answerable() {
            t.insert(k.name.as_str(), k.addr);
        }
        server.set_table(t);
    }

    /// `weft status dns`.
    pub(super) fn dns_status(&mut self) -> Value {
        let me = self.router.name();
        let reachable: BTreeSet<_> = self.router.routes().reachable().collect();
        let st = self.router.dns_status();
        let records: Vec<Value> = st
            .records
            .iter()
            .map(|(k, version)| {
                json!({
                    "name": format!("{}.", k.name),
                    "address": k.addr.to_string(),
                    "owner": k.owner.to_string(),
                    "ourself": k.owner == me,
                    "container": k.container.as_str(),
                    "version": version,
                    "answered": k.owner == me || reachable.contains(&k.owner),
                })
            })
            .collect();
        let s = st.stats;
        let mut v = match &self.dns.server {
            Some(server) => server.status(),
            None => json!({ "domain": format!("{}.", self.dns.domain), "enabled": false }),
        };
        if let Some(o) = v.as_object_mut() {
            o.entry("enabled").or_insert(json!(true));
            o.insert("records".into(), Value::Array(records));
            o.insert("tombstones".into(), json!(st.tombstones));
            o.insert("removed_peers".into(), json!(st.removed_peers));
            o.insert(
                "gossip".into(),
                json!({
                    "malformed": s.malformed,
                    "records_merged": s.records_merged,
                    "records_of_removed_peers": s.records_of_removed_peers,
                    "own_records_refreshed": s.own_records_refreshed,
                    "tombstones_expired": s.tombstones_expired,
                    "records_of_dead_peers_dropped": s.records_of_dead_peers_dropped,
                    "drops_full": s.drops_full,
                    "drops_queue_full": s.drops_queue_full,
                }),
            );
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_names_get_the_domain() {
        assert_eq!(
            qualify("web", "weave.local").unwrap().as_str(),
            "web.weave.local"
        );
        assert_eq!(
            qualify("Web.Example.", "weave.local").unwrap().as_str(),
            "web.example"
        );
        assert!(qualify("bad name", "weave.local").is_err());
    }
}
