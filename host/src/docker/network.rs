//! The network driver's calls on networks and endpoints (their interfaces are
//! [`super::join`]'s).
//!
//! A network's gateway (the address Docker asked IPAM for it) is the host's address on
//! the subnet: `CreateNetwork` puts it on the bridge, as `weft expose` does, so that
//! containers reach the host and weftDNS listens there, and containers reach outside
//! through it, masqueraded as the host (`crate::firewall::set_docker_outbound`); an
//! `--internal` network has neither. `CreateEndpoint` hands the endpoint's address from its reservation to the
//! endpoint in weft IPAM.

use super::backend::Backend;
use super::state::{self, Endpoint, Network, PluginState};
use super::types::{
    CreateEndpointReply, CreateEndpointRequest, CreateNetworkRequest, Empty, EndpointRequest,
    NetworkRequest, OPT_INTERNAL, OperInfoReply, check_id, parse_v4_block, parse_v4_in, truncate,
};
use super::{Ctx, Plugin, PluginError, bad, endpoint_owner, ifnames};
use crate::firewall::DockerNet;
use std::collections::BTreeMap;

/// The refusal for an endpoint the plugin does not know.
pub(super) fn unknown_endpoint(id: &str) -> PluginError {
    PluginError::NotFound(format!(
        "EndpointID {}: no such endpoint on this weft router",
        truncate(id, 80)
    ))
}

impl<B: Backend> Plugin<B> {
    pub(super) async fn create_network(
        &self,
        r: CreateNetworkRequest,
    ) -> Result<Empty, PluginError> {
        check_id("NetworkID", &r.network_id).map_err(bad)?;
        if !r.ipv6_data.is_empty() {
            return Err(bad(
                "IPv6Data: weft networks are IPv4 only; create the network without --ipv6".into(),
            ));
        }
        let [data] = r.ipv4_data.as_slice() else {
            return Err(bad(format!(
                "IPv4Data: a weft network has exactly one IPv4 subnet, got {}",
                r.ipv4_data.len()
            )));
        };
        let subnet = parse_v4_block("IPv4Data.Pool", &data.pool).map_err(bad)?;
        let gateway = match data.gateway.as_str() {
            "" => None,
            g => Some(parse_v4_in("IPv4Data.Gateway", g, subnet).map_err(bad)?),
        };
        let internal = match r.options.get(OPT_INTERNAL) {
            None => false,
            Some(v) => v
                .as_bool()
                .ok_or_else(|| bad(format!("Options.{OPT_INTERNAL}: expected true or false")))?,
        };
        let mut store = self.store.lock().await;
        if store.get().networks.contains_key(&r.network_id) {
            return Ok(Empty {}); // Created before (Docker repeats).
        }
        if store.get().networks.len() >= state::OBJECTS_MAX {
            return Err(PluginError::Failed(format!(
                "{} networks already; remove some",
                state::OBJECTS_MAX
            )));
        }
        let ipam_gateway = gateway.map(|g| g.addr);
        let gateway = gateway.filter(|_| !internal);
        if let Some(g) = gateway {
            self.backend.expose(g).await?;
        }
        let mut next = store.get().clone();
        next.networks.insert(
            r.network_id.clone(),
            Network {
                subnet,
                gateway,
                internal,
                ipam_gateway,
            },
        );
        if let Err(e) = self.commit(&mut store, next) {
            if let Some(g) = gateway {
                let _ = self.backend.unexpose(g).await;
            }
            return Err(e);
        }
        self.apply_outbound(store.get()).await;
        tracing::info!(
            "Docker network {} created: subnet {subnet}, {}",
            truncate(&r.network_id, 12),
            match gateway {
                Some(g) => format!("gateway {g} (on the bridge)"),
                None => "no gateway (internal)".to_owned(),
            }
        );
        Ok(Empty {})
    }

    /// Makes the firewall match `s`'s networks: outside access for those with a gateway,
    /// none routed into another's subnet. A firewall that refuses costs outside access,
    /// not the network (it works on the bridge): logged, not refused.
    pub(crate) async fn apply_outbound(&self, s: &PluginState) {
        let nets = s
            .networks
            .values()
            .map(|n| DockerNet {
                subnet: n.subnet,
                outbound: n.gateway.is_some(),
            })
            .collect();
        if let Err(e) = self.backend.set_outbound(nets).await {
            tracing::warn!("Docker networks' outside access not set up: {}", e.line());
        }
    }

    /// [`Self::apply_outbound`] for the state as it is (at start).
    pub(crate) async fn apply_outbound_now(&self) {
        let s = self.store.lock().await.get().clone();
        self.apply_outbound(&s).await;
    }

    pub(super) async fn delete_network(&self, r: NetworkRequest) -> Result<Empty, PluginError> {
        check_id("NetworkID", &r.network_id).map_err(bad)?;
        let mut store = self.store.lock().await;
        let Some(net) = store.get().networks.get(&r.network_id).cloned() else {
            return Ok(Empty {}); // Deleted before (Docker repeats).
        };
        let mut next = store.get().clone();
        next.networks.remove(&r.network_id);
        if let Some(g) = net.gateway {
            // Another network of the same --subnet and --gateway keeps it.
            if !next.networks.values().any(|n| n.gateway == Some(g)) {
                self.backend.unexpose(g).await?;
            }
        }
        self.commit(&mut store, next)?;
        self.apply_outbound(store.get()).await;
        tracing::info!("Docker network {} deleted", truncate(&r.network_id, 12));
        Ok(Empty {})
    }

    pub(super) async fn create_endpoint(
        &self,
        r: CreateEndpointRequest,
    ) -> Result<CreateEndpointReply, PluginError> {
        check_id("NetworkID", &r.network_id).map_err(bad)?;
        check_id("EndpointID", &r.endpoint_id).map_err(bad)?;
        let mut store = self.store.lock().await;
        if store.get().endpoints.contains_key(&r.endpoint_id) {
            return Ok(CreateEndpointReply::default()); // Created before.
        }
        let net = store.get().networks.get(&r.network_id).cloned().ok_or_else(|| {
            PluginError::NotFound(format!(
                "NetworkID {}: no such weft network on this router; remove the network and create it again",
                truncate(&r.network_id, 80)
            ))
        })?;
        if store.get().endpoints.len() >= state::OBJECTS_MAX {
            return Err(PluginError::Failed(format!(
                "{} endpoints already",
                state::OBJECTS_MAX
            )));
        }
        let iface = r.interface.unwrap_or_default();
        if iface.address.is_empty() {
            return Err(bad(
                "Interface.Address: Docker gave no IPv4 address; create the network with this plugin as IPAM driver too (--ipam-driver)".into(),
            ));
        }
        let address = parse_v4_in("Interface.Address", &iface.address, net.subnet).map_err(bad)?;
        let owner = endpoint_owner(&r.endpoint_id);
        let mut next = store.get().clone();
        let mut moved_from = None;
        if let Some(held) = next.addresses.get_mut(&address.addr) {
            if held.endpoint.as_ref().is_some_and(|e| *e != r.endpoint_id) {
                return Err(PluginError::Failed(format!(
                    "Interface.Address: {address} belongs to another endpoint"
                )));
            }
            if held.owner != owner {
                self.backend
                    .ipam_transfer(&held.owner, &owner, address.addr)
                    .await?;
                moved_from = Some(std::mem::replace(&mut held.owner, owner.clone()));
            }
            held.endpoint = Some(r.endpoint_id.clone());
        }
        let (host_ifname, src_ifname) = ifnames(&r.endpoint_id);
        next.endpoints.insert(
            r.endpoint_id.clone(),
            Endpoint {
                network_id: r.network_id.clone(),
                address: Some(address),
                host_ifname,
                src_ifname,
                joined: false,
                dns_names: Vec::new(),
                pod: crate::state::PodMeta::default(),
            },
        );
        if let Err(e) = self.commit(&mut store, next) {
            if let Some(from) = moved_from {
                let _ = self
                    .backend
                    .ipam_transfer(&owner, &from, address.addr)
                    .await;
            }
            return Err(e);
        }
        Ok(CreateEndpointReply::default())
    }

    pub(super) async fn delete_endpoint(
        &self,
        r: EndpointRequest,
        ctx: &Ctx,
    ) -> Result<Empty, PluginError> {
        // Its address stays until Docker's ReleaseAddress, which comes next.
        self.unplug(&r.endpoint_id, ctx, |next, id| {
            next.endpoints.remove(id);
            next.remember_deleted(id);
        })
        .await
    }

    pub(super) async fn oper_info(&self, r: EndpointRequest) -> Result<OperInfoReply, PluginError> {
        check_id("EndpointID", &r.endpoint_id).map_err(bad)?;
        let store = self.store.lock().await;
        let ep = store
            .get()
            .endpoints
            .get(&r.endpoint_id)
            .ok_or_else(|| unknown_endpoint(&r.endpoint_id))?;
        let mut value = BTreeMap::new();
        if let Some(a) = ep.address {
            value.insert("address".to_owned(), a.to_string());
        }
        value.insert("bridge_ifname".to_owned(), ep.host_ifname.clone());
        value.insert("joined".to_owned(), ep.joined.to_string());
        Ok(OperInfoReply { value })
    }

    /// `ProgramExternalConnectivity`, `RevokeExternalConnectivity`: outside access is the
    /// gateway's, set up with the network, so there is nothing to do per endpoint.
    pub(super) async fn external_connectivity(
        &self,
        r: EndpointRequest,
    ) -> Result<Empty, PluginError> {
        check_id("EndpointID", &r.endpoint_id).map_err(bad)?;
        let store = self.store.lock().await;
        if !store.get().endpoints.contains_key(&r.endpoint_id) {
            return Err(unknown_endpoint(&r.endpoint_id));
        }
        Ok(Empty {})
    }
}
