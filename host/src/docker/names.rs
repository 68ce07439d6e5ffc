//! Containers' names in weftDNS: a container on one of the plugin's networks is known
//! as its name, its hostname and its aliases there (`NAME.weave.local.`), from when it
//! joins until it leaves or stops.
//!
//! Docker tells a network driver no names, so they come from the Engine API: each
//! network `connect` event ([`super::engine::follow_connects`]) is looked up with
//! `docker inspect`. The records belong to the endpoint's IPAM owner (`dk-e-…`), are
//! kept with the endpoint in the state file, registered again when the router restarts,
//! and removed by `Leave` and `DeleteEndpoint`.

use super::backend::Backend;
use super::state::PluginState;
use super::{Plugin, PluginError, endpoint_owner, engine};
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

/// How often a container is looked up before Docker has recorded its endpoint.
const LOOKUP_TRIES: u32 = 10;
/// The wait between those lookups.
const LOOKUP_RETRY_MS: u64 = 200;

impl<B: Backend> Plugin<B> {
    /// Docker says `container` connected to network `network_id`: if the network is the
    /// plugin's, registers the container's names there.
    pub(crate) async fn on_connect(&self, docker: &Path, network_id: &str, container: &str) {
        if !self
            .store
            .lock()
            .await
            .get()
            .networks
            .contains_key(network_id)
        {
            return;
        }
        for _ in 0..LOOKUP_TRIES {
            match engine::container_names(docker, container, network_id).await {
                Ok(Some(n)) => {
                    let meta = crate::policy::pods::meta_of_container(&n.labels);
                    if let Err(e) = self.label_endpoint(&n.endpoint_id, meta).await {
                        tracing::warn!("policy labels of container {container}: {e}");
                    }
                    if let Err(e) = self.name_endpoint(&n.endpoint_id, n.names).await {
                        tracing::warn!("weftDNS names of container {container}: {e}");
                    }
                    return;
                }
                Ok(None) => tokio::time::sleep(Duration::from_millis(LOOKUP_RETRY_MS)).await,
                Err(e) => {
                    tracing::warn!("weftDNS names of container {container}: {e}");
                    return;
                }
            }
        }
        tracing::warn!(
            "weftDNS: Docker did not show container {container} on network {network_id}; it has no names"
        );
    }

    /// Gives joined endpoint `id` the weftDNS names `names`, in place of what it had.
    /// Names weftDNS refuses are left out (and logged).
    pub(crate) async fn name_endpoint(
        &self,
        id: &str,
        names: Vec<String>,
    ) -> Result<(), PluginError> {
        let mut store = self.store.lock().await;
        let Some(ep) = store.get().endpoints.get(id).cloned() else {
            return Ok(()); // Gone meanwhile.
        };
        let (Some(addr), true) = (ep.address, ep.joined) else {
            return Ok(());
        };
        if ep.dns_names == names {
            return Ok(());
        }
        let tag = endpoint_owner(id);
        self.backend.dns_remove(&tag).await?;
        let mut named = Vec::new();
        for n in names {
            match self.backend.dns_add(&tag, &n, addr.addr).await {
                Ok(()) => named.push(n),
                Err(e) => tracing::info!("weftDNS: {n} not registered: {e}"),
            }
        }
        let mut next = store.get().clone();
        if let Some(e) = next.endpoints.get_mut(id) {
            e.dns_names.clone_from(&named);
        }
        self.commit(&mut store, next)?;
        tracing::info!("weftDNS: {} is {}", named.join(", "), addr.addr);
        Ok(())
    }

    /// Records joined endpoint `id`'s policy metadata (from its container's labels); the
    /// plugin's pods are published with the state.
    pub(crate) async fn label_endpoint(
        &self,
        id: &str,
        meta: crate::state::PodMeta,
    ) -> Result<(), PluginError> {
        let mut store = self.store.lock().await;
        if store.get().endpoints.get(id).is_none_or(|e| e.pod == meta) {
            return Ok(());
        }
        let mut next = store.get().clone();
        if let Some(e) = next.endpoints.get_mut(id) {
            e.pod = meta;
        }
        self.commit(&mut store, next)
    }

    /// Registers the names of joined endpoints again: after a router restart its records
    /// are gone, and only their owner can bring them back.
    pub(crate) async fn restore_names(&self) {
        let named: Vec<(String, Vec<String>, Ipv4Addr)> = {
            let store = self.store.lock().await;
            store
                .get()
                .endpoints
                .iter()
                .filter(|(_, e)| e.joined && !e.dns_names.is_empty())
                .filter_map(|(id, e)| Some((id.clone(), e.dns_names.clone(), e.address?.addr)))
                .collect()
        };
        for (id, names, addr) in named {
            let tag = endpoint_owner(&id);
            for n in names {
                if let Err(e) = self.backend.dns_add(&tag, &n, addr).await {
                    tracing::warn!("weftDNS: could not register {n} again: {e}");
                }
            }
        }
    }

    /// Takes endpoint `id`'s names out of weftDNS and out of `next` (`Leave`,
    /// `DeleteEndpoint`; nothing to take is no error).
    pub(super) async fn unname(&self, id: &str, next: &mut PluginState) -> Result<(), PluginError> {
        self.backend.dns_remove(&endpoint_owner(id)).await?;
        if let Some(e) = next.endpoints.get_mut(id) {
            e.dns_names.clear();
        }
        Ok(())
    }
}
