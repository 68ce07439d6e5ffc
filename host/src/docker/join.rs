//! `Join` and `Leave`: the endpoint's interface.
//!
//! `Join` makes a veth with the bridge's MTU: one end (`vwd…`) on the bridge in the
//! router's namespace, the other (`vwc…`, the `SrcName`) in the namespace Docker runs
//! in, where Docker finds it, moves it into the container and names it `ethwe<N>`. The
//! router may run in a namespace of its own: Docker finds the plugin by its socket path
//! and the interface by its name in its own namespace. `Leave` removes the pair (Docker
//! would otherwise hand the container's end back to its namespace under `SrcName`) and
//! the container's names ([`super::names`]); `DeleteEndpoint` removes whatever is left
//! of it there.

use super::backend::Backend;
use super::network::unknown_endpoint;
use super::state::PluginState;
use super::types::{
    DST_PREFIX, Empty, EndpointRequest, InterfaceName, JoinReply, JoinRequest, check_id,
};
use super::{Ctx, Plugin, PluginError, bad};

impl<B: Backend> Plugin<B> {
    pub(super) async fn join(&self, r: JoinRequest, ctx: &Ctx) -> Result<JoinReply, PluginError> {
        check_id("NetworkID", &r.network_id).map_err(bad)?;
        check_id("EndpointID", &r.endpoint_id).map_err(bad)?;
        let mut store = self.store.lock().await;
        let ep = store
            .get()
            .endpoints
            .get(&r.endpoint_id)
            .cloned()
            .ok_or_else(|| unknown_endpoint(&r.endpoint_id))?;
        let net = store
            .get()
            .networks
            .get(&ep.network_id)
            .cloned()
            .ok_or_else(|| {
                PluginError::NotFound(format!(
                    "the network of endpoint {} is gone from this router",
                    super::types::truncate(&r.endpoint_id, 12)
                ))
            })?;
        self.backend
            .veth_add(&ep.host_ifname, &ep.src_ifname, &ctx.docker_netns)
            .await?;
        let mut next = store.get().clone();
        if let Some(e) = next.endpoints.get_mut(&r.endpoint_id) {
            e.joined = true;
        }
        if let Err(e) = self.commit(&mut store, next) {
            let _ = self
                .backend
                .veth_remove(&ep.host_ifname, &ep.src_ifname, &ctx.docker_netns)
                .await;
            return Err(e);
        }
        Ok(JoinReply {
            interface_name: InterfaceName {
                src_name: ep.src_ifname,
                dst_prefix: DST_PREFIX.to_owned(),
            },
            gateway: net.gateway.map(|g| g.addr.to_string()).unwrap_or_default(),
            // No gateway (internal): no docker_gwbridge either.
            disable_gateway_service: net.gateway.is_none(),
        })
    }

    pub(super) async fn leave(&self, r: EndpointRequest, ctx: &Ctx) -> Result<Empty, PluginError> {
        self.unplug(&r.endpoint_id, ctx, |next, id| {
            if let Some(e) = next.endpoints.get_mut(id) {
                e.joined = false;
            }
        })
        .await
    }

    /// What Leave and DeleteEndpoint share: an endpoint Docker already deleted is done
    /// (Docker retries), an unknown one is a 404; else its names and veth go, `finish`
    /// edits the state, and the state is on disk before Docker hears back.
    pub(super) async fn unplug(
        &self,
        id: &str,
        ctx: &Ctx,
        finish: impl FnOnce(&mut PluginState, &str),
    ) -> Result<Empty, PluginError> {
        check_id("EndpointID", id).map_err(bad)?;
        let mut store = self.store.lock().await;
        let Some(ep) = store.get().endpoints.get(id).cloned() else {
            if store.get().was_deleted(id) {
                return Ok(Empty {});
            }
            return Err(unknown_endpoint(id));
        };
        let mut next = store.get().clone();
        self.unname(id, &mut next).await?;
        self.backend
            .veth_remove(&ep.host_ifname, &ep.src_ifname, &ctx.docker_netns)
            .await?;
        finish(&mut next, id);
        self.commit(&mut store, next)?;
        Ok(Empty {})
    }
}
