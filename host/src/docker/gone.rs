//! Endpoints Docker deleted while the router was down: Docker's `DeleteEndpoint` and
//! `ReleaseAddress` found no plugin then, and it replays nothing. At start the router
//! asks Docker (`--docker-socket`) which endpoints its networks still have, and drops
//! the others from the state, their veths, names and addresses with them. When Docker
//! does not answer, everything is kept and the log says so.

use super::backend::Backend;
use super::{Plugin, PluginError, engine, netns_of};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::Path;

impl<B: Backend> Plugin<B> {
    /// The endpoints in the state now, by network (taken before Docker can call, so
    /// that an endpoint made after it is never taken for a gone one).
    pub(crate) async fn endpoints_by_network(&self) -> BTreeMap<String, Vec<String>> {
        let store = self.store.lock().await;
        let mut by_net: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (id, e) in &store.get().endpoints {
            by_net
                .entry(e.network_id.clone())
                .or_default()
                .push(id.clone());
        }
        by_net
    }

    /// Asks Docker on `docker` which of `known`'s endpoints it still has and forgets the
    /// others; returns how many were forgotten.
    pub(crate) async fn forget_endpoints_docker_deleted(
        &self,
        docker: &Path,
        known: BTreeMap<String, Vec<String>>,
    ) -> usize {
        if known.is_empty() {
            return 0;
        }
        let mut live = BTreeSet::new();
        for network in known.keys() {
            match engine::network_endpoints(docker, network).await {
                Ok(eps) => live.extend(eps),
                Err(e) => return self.forget_gone(known, Err(e)).await,
            }
        }
        self.forget_gone(known, Ok(live)).await
    }

    /// Forgets the endpoints of `known` not in `live` (what Docker has); with `Err`
    /// (Docker did not answer) keeps them all and says so.
    pub(super) async fn forget_gone(
        &self,
        known: BTreeMap<String, Vec<String>>,
        live: Result<BTreeSet<String>, String>,
    ) -> usize {
        let count: usize = known.values().map(Vec::len).sum();
        let live = match live {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(
                    "Docker plugin: cannot ask Docker which endpoints it still has ({e}); all {count} kept, those Docker deleted while the router was down keep their addresses"
                );
                return 0;
            }
        };
        let mut forgotten = 0;
        for id in known
            .into_values()
            .flatten()
            .filter(|id| !live.contains(id))
        {
            match self.forget_endpoint(&id).await {
                Ok(()) => forgotten += 1,
                Err(e) => tracing::warn!("Docker plugin: endpoint {id}: {}", e.line()),
            }
        }
        if forgotten > 0 {
            tracing::info!(
                "Docker plugin: {forgotten} endpoints Docker deleted while the router was down forgotten, their addresses freed"
            );
        }
        forgotten
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
