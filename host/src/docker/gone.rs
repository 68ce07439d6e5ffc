//! Endpoints and networks Docker deleted while the router was down: Docker's
//! `DeleteEndpoint`, `DeleteNetwork`, `ReleaseAddress` and `ReleasePool` found no plugin
//! then, and it replays nothing. At start the router asks Docker (`--docker-socket`)
//! which of its networks Docker still has and which endpoints they have, and drops the
//! others from the state: an endpoint's veth, names and address; a network's gateway on
//! the bridge, its gateway address and its pool. When Docker does not answer,
//! everything is kept and the log says so.

use super::backend::Backend;
use super::types::{NetworkRequest, ReleaseAddressRequest, ReleasePoolRequest};
use super::{Plugin, PluginError, engine, netns_of};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::Path;

/// What Docker still has of what the state knew.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Live {
    /// Endpoints on networks Docker has.
    pub(crate) endpoints: BTreeSet<String>,
    /// Networks Docker has no more.
    pub(crate) networks_gone: BTreeSet<String>,
}

/// How many of each were forgotten.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Forgotten {
    pub(crate) endpoints: usize,
    pub(crate) networks: usize,
}

impl<B: Backend> Plugin<B> {
    /// The networks in the state now, each with its endpoints (taken before Docker can
    /// call, so that nothing made after it is ever taken for a gone one).
    pub(crate) async fn endpoints_by_network(&self) -> BTreeMap<String, Vec<String>> {
        let store = self.store.lock().await;
        let mut by_net: BTreeMap<String, Vec<String>> = store
            .get()
            .networks
            .keys()
            .map(|n| (n.clone(), Vec::new()))
            .collect();
        for (id, e) in &store.get().endpoints {
            by_net
                .entry(e.network_id.clone())
                .or_default()
                .push(id.clone());
        }
        by_net
    }

    /// Asks Docker on `docker` which of `known`'s networks and endpoints it still has
    /// and forgets the others.
    pub(crate) async fn forget_what_docker_deleted(
        &self,
        docker: &Path,
        known: BTreeMap<String, Vec<String>>,
    ) -> Forgotten {
        if known.is_empty() {
            return Forgotten::default();
        }
        let mut live = Live::default();
        for network in known.keys() {
            match engine::network_endpoints(docker, network).await {
                Ok(Some(eps)) => live.endpoints.extend(eps),
                Ok(None) => {
                    live.networks_gone.insert(network.clone());
                }
                Err(e) => return self.forget_gone(known, Err(e)).await,
            }
        }
        self.forget_gone(known, Ok(live)).await
    }

    /// Forgets the endpoints of `known` not in `live`, then the networks `live` says are
    /// gone; with `Err` (Docker did not answer) keeps them all and says so.
    pub(super) async fn forget_gone(
        &self,
        known: BTreeMap<String, Vec<String>>,
        live: Result<Live, String>,
    ) -> Forgotten {
        let count: usize = known.values().map(Vec::len).sum();
        let live = match live {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(
                    "Docker plugin: cannot ask Docker which networks and endpoints it still has ({e}); all {} networks and {count} endpoints kept, those Docker deleted while the router was down keep their addresses",
                    known.len()
                );
                return Forgotten::default();
            }
        };
        let mut forgotten = Forgotten::default();
        let networks: Vec<String> = known.keys().cloned().collect();
        for id in known
            .into_values()
            .flatten()
            .filter(|id| !live.endpoints.contains(id))
        {
            match self.forget_endpoint(&id).await {
                Ok(()) => forgotten.endpoints += 1,
                Err(e) => tracing::warn!("Docker plugin: endpoint {id}: {}", e.line()),
            }
        }
        for id in networks
            .iter()
            .filter(|id| live.networks_gone.contains(*id))
        {
            match self.forget_network(id).await {
                Ok(()) => forgotten.networks += 1,
                Err(e) => tracing::warn!("Docker plugin: network {id}: {}", e.line()),
            }
        }
        if forgotten != Forgotten::default() {
            tracing::info!(
                "Docker plugin: {} endpoints and {} networks Docker deleted while the router was down forgotten, their addresses freed",
                forgotten.endpoints,
                forgotten.networks
            );
        }
        forgotten
    }

    /// Does for network `id` what `DeleteNetwork`, then `ReleaseAddress` of its gateway
    /// and `ReleasePool` would have done (its endpoints are forgotten before).
    async fn forget_network(&self, id: &str) -> Result<(), PluginError> {
        let (net, s) = {
            let store = self.store.lock().await;
            let s = store.get().clone();
            let Some(net) = s.networks.get(id).cloned() else {
                return Ok(()); // Docker deleted it meanwhile.
            };
            (net, s)
        };
        self.delete_network(NetworkRequest {
            network_id: id.to_owned(),
        })
        .await?;
        // Its pool: the one its gateway address came from, else the only one of its subnet.
        let gateway = net.ipam_gateway.or(net.gateway.map(|g| g.addr));
        let held = gateway.and_then(|g| s.addresses.get(&g).map(|a| (g, a)));
        let pool_id = match held {
            Some((g, a)) if a.gateway && a.endpoint.is_none() => {
                self.release_address(ReleaseAddressRequest {
                    pool_id: a.pool_id.clone(),
                    address: g.to_string(),
                })
                .await?;
                Some(a.pool_id.clone())
            }
            _ => {
                let mut of_subnet = s.pools.iter().filter(|(_, p)| p.pool == net.subnet);
                match (of_subnet.next(), of_subnet.next()) {
                    (Some((pool_id, _)), None) => Some(pool_id.clone()),
                    _ => None,
                }
            }
        };
        match pool_id {
            Some(pool_id) => {
                self.release_pool(ReleasePoolRequest { pool_id }).await?;
            }
            None => tracing::warn!(
                "Docker plugin: network {id}'s pool ({}) not found; kept",
                net.subnet
            ),
        }
        Ok(())
    }

    /// Does for endpoint `id` what `Leave`, `DeleteEndpoint` and `ReleaseAddress` would
    /// have done.
    async fn forget_endpoint(&self, id: &str) -> Result<(), PluginError> {
        let mut store = self.store.lock().await;
        let Some(ep) = store.get().endpoints.get(id).cloned() else {
            return Ok(()); // Docker deleted it meanwhile.
        };
        let mut next = store.get().clone();
        self.unname(id, &mut next).await?;
        // Its container is gone, and the veth with its namespace; what is left of it is
        // removed where it can be (Docker's namespace may be out of reach from here).
        if let Err(e) = self
            .backend
            .veth_remove(&ep.host_ifname, &ep.src_ifname, &netns_of(None))
            .await
        {
            tracing::debug!("Docker plugin: endpoint {id}'s veth: {}", e.line());
        }
        next.endpoints.remove(id);
        next.remember_deleted(id);
        let held: Vec<(Ipv4Addr, String)> = next
            .addresses
            .iter()
            .filter(|(_, a)| a.endpoint.as_deref() == Some(id))
            .map(|(ip, a)| (*ip, a.owner.clone()))
            .collect();
        for (ip, owner) in held {
            self.backend.ipam_free(&owner, ip).await?;
            next.addresses.remove(&ip);
        }
        self.commit(&mut store, next)
    }
}
