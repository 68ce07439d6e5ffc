//! The router task's DNS part, a child of `driver` so it reaches the router. It runs the naming commands of the control API
//! against the core record set, rebuilds the server's snapshot when records or topology
//! change, and renders `weft status dns`.

use super::{Answer, Driver};
use crate::dns::DnsServer;
use crate::dns::answer::Table;
use crate::messages::{
    ApiError, DnsAdded, DnsGossipCounters, DnsLookup, DnsRecord, DnsRemoved, DnsStatus,
};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use weft_core::dns::{CONTAINER_EXTERN, Container, DnsName, Filter};

/// A naming command for the router task, with where its answer goes.
pub(crate) enum DnsRequest {
    /// Register `name` for each address (container: [`CONTAINER_EXTERN`] when `None`).
    Add {
        name: String,
        addrs: Vec<Ipv4Addr>,
        container: Option<String>,
        answer: Answer<DnsAdded>,
    },
    /// Remove our records matching all given fields (at least one must be given).
    Remove {
        name: Option<String>,
        addrs: Vec<Ipv4Addr>,
        container: Option<String>,
        answer: Answer<DnsRemoved>,
    },
    /// Addresses of `name` (owners reachable).
    Lookup {
        name: String,
        answer: Answer<DnsLookup>,
    },
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
pub(crate) fn qualify(name: &str, domain: &str) -> Result<DnsName, ApiError> {
    let full = if name.contains('.') {
        name.to_owned()
    } else {
        format!("{name}.{domain}")
    };
    DnsName::new(&full).map_err(|e| ApiError::BadRequest(format!("bad name {name:?}: {e}")))
}

fn bad_container(e: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest(e.to_string())
}

impl Driver {
    /// Serves DNS from `server` (and qualifies bare names with its domain).
    pub(crate) fn set_dns(&mut self, server: Arc<DnsServer>) {
        self.dns.domain = server.domain().to_owned();
        self.dns.server = Some(server);
        self.dns.synced = None;
    }

    /// Runs one naming command and sends its answer (a caller that stopped waiting is no
    /// error).
    pub(super) fn dns_request(&mut self, req: DnsRequest) {
        let _ = match req {
            DnsRequest::Add {
                name,
                addrs,
                container,
                answer,
            } => answer
                .send(self.dns_add(&name, &addrs, container.as_deref()))
                .map_err(drop),
            DnsRequest::Remove {
                name,
                addrs,
                container,
                answer,
            } => answer
                .send(self.dns_remove(name, addrs, container))
                .map_err(drop),
            DnsRequest::Lookup { name, answer } => {
                answer.send(self.dns_lookup(&name)).map_err(drop)
            }
        };
    }

    fn dns_add(
        &mut self,
        name: &str,
        addrs: &[Ipv4Addr],
        container: Option<&str>,
    ) -> Result<DnsAdded, ApiError> {
        let now = self.now();
        let name = qualify(name, &self.dns.domain)?;
        let c = Container::new(container.unwrap_or(CONTAINER_EXTERN)).map_err(bad_container)?;
        let mut added = 0;
        for a in addrs {
            if self
                .router
                .dns_add(now, &name, *a, &c)
                .map_err(|e| ApiError::BadRequest(format!("{name} {a}: {e}")))?
            {
                added += 1;
            }
        }
        Ok(DnsAdded {
            name: format!("{name}."),
            added,
        })
    }

    fn dns_remove(
        &mut self,
        name: Option<String>,
        addrs: Vec<Ipv4Addr>,
        container: Option<String>,
    ) -> Result<DnsRemoved, ApiError> {
        let now = self.now();
        let name = name.map(|n| qualify(&n, &self.dns.domain)).transpose()?;
        let container = container
            .map(|c| Container::new(&c).map_err(bad_container))
            .transpose()?;
        if name.is_none() && addrs.is_empty() && container.is_none() {
            return Err(ApiError::BadRequest(
                "dns-remove needs a name, an address or a container".into(),
            ));
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
        Ok(DnsRemoved {
            removed: removed as u64,
        })
    }

    fn dns_lookup(&mut self, name: &str) -> Result<DnsLookup, ApiError> {
        let name = qualify(name, &self.dns.domain)?;
        Ok(DnsLookup {
            addresses: self.router.dns_lookup(&name),
            name: format!("{name}."),
        })
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
    pub(super) fn dns_status(&mut self) -> DnsStatus {
        let me = self.router.name();
        let reachable: BTreeSet<_> = self.router.routes().reachable().collect();
        let st = self.router.dns_status();
        let records = st
            .records
            .iter()
            .map(|(k, version)| DnsRecord {
                name: Some(format!("{}.", k.name)),
                address: Some(k.addr.to_string()),
                owner: Some(k.owner.to_string()),
                ourself: k.owner == me,
                container: Some(k.container.as_str().to_owned()),
                version: *version,
                answered: k.owner == me || reachable.contains(&k.owner),
            })
            .collect();
        let s = st.stats;
        let (domain, server) = match &self.dns.server {
            Some(server) => (server.domain().to_owned(), Some(server.status())),
            None => (self.dns.domain.clone(), None),
        };
        DnsStatus {
            domain: Some(format!("{domain}.")),
            enabled: server.is_some(),
            server,
            records,
            tombstones: st.tombstones as u64,
            removed_peers: st.removed_peers as u64,
            gossip: DnsGossipCounters {
                malformed: s.malformed,
                records_merged: s.records_merged,
                records_of_removed_peers: s.records_of_removed_peers,
                own_records_refreshed: s.own_records_refreshed,
                tombstones_expired: s.tombstones_expired,
                records_of_dead_peers_dropped: s.records_of_dead_peers_dropped,
                drops_full: s.drops_full,
                drops_queue_full: s.drops_queue_full,
            },
        }
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
