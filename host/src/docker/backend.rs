//! The plugin's seam to the router: the few things it asks of IPAM, weftDNS, the
//! plumbing, the exposed addresses and the firewall, as a trait, so that the handlers run unchanged
//! against the router ([`ApiBackend`], the same functions the control API calls) and
//! against an in-memory fake in the unit tests.

use super::{PluginError, Want};
use crate::api::Api;
use crate::cli::Cidr;
use crate::driver::{DnsRequest, Input, ask};
use crate::firewall::DockerNet;
use crate::ipam::NetSpec;
use crate::messages::ApiError;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use weft_core::ipam::Cidr as V4Cidr;

/// What the plugin needs from the router. Each call is idempotent where Docker may
/// repeat it: taking an address `owner` already holds gives it again, freeing or
/// removing what is gone is no error.
pub(crate) trait Backend: Send + Sync + 'static {
    /// An address for `owner` from weft IPAM (waits for the answer).
    fn ipam_take(
        &self,
        owner: &str,
        want: Want,
    ) -> impl Future<Output = Result<V4Cidr, PluginError>> + Send;

    /// Frees `owner`'s `addr`.
    fn ipam_free(
        &self,
        owner: &str,
        addr: Ipv4Addr,
    ) -> impl Future<Output = Result<(), PluginError>> + Send;

    /// Hands `addr` from owner `from` to owner `to` in one step.
    fn ipam_transfer(
        &self,
        from: &str,
        to: &str,
        addr: Ipv4Addr,
    ) -> impl Future<Output = Result<(), PluginError>> + Send;

    /// Gives the host `address` on the bridge (a network's gateway), as `weft expose`.
    fn expose(&self, address: V4Cidr) -> impl Future<Output = Result<(), PluginError>> + Send;

    /// Takes `address` off the bridge again.
    fn unexpose(&self, address: V4Cidr) -> impl Future<Output = Result<(), PluginError>> + Send;

    /// Makes the networks' outside access and separation what `nets` say (all of them).
    fn set_outbound(
        &self,
        nets: Vec<DockerNet>,
    ) -> impl Future<Output = Result<(), PluginError>> + Send;

    /// Registers `name` (bare: in weftDNS's domain) for `addr`, owned by `tag`.
    fn dns_add(
        &self,
        tag: &str,
        name: &str,
        addr: Ipv4Addr,
    ) -> impl Future<Output = Result<(), PluginError>> + Send;

    /// Removes every name owned by `tag`.
    fn dns_remove(&self, tag: &str) -> impl Future<Output = Result<(), PluginError>> + Send;

    /// The plugin's joined containers as network policy sees them (all of them, by IPAM
    /// owner), replacing what it said before.
    fn policy_pods(&self, pods: std::collections::BTreeMap<String, crate::policy::pods::LocalPort>);

    /// Makes the veth of an endpoint: `host` on the bridge, `src` in `docker_netns`.
    fn veth_add(
        &self,
        host: &str,
        src: &str,
        docker_netns: &Path,
    ) -> impl Future<Output = Result<(), PluginError>> + Send;

    /// Removes that veth, wherever its ends are (`src` back in `docker_netns` after
    /// Docker's `Leave`, or gone with its pair).
    fn veth_remove(
        &self,
        host: &str,
        src: &str,
        docker_netns: &Path,
    ) -> impl Future<Output = Result<(), PluginError>> + Send;
}

/// The router behind the control API.
pub(crate) struct ApiBackend {
    api: Arc<Api>,
}

impl ApiBackend {
    /// A backend on `api`.
    pub(crate) fn new(api: Arc<Api>) -> Self {
        Self { api }
    }
}

fn failed(e: ApiError) -> PluginError {
    match e {
        ApiError::AddressInUse(_) => PluginError::InUse(e.line()),
        e => PluginError::Failed(e.line()),
    }
}

fn cidr(c: V4Cidr) -> Cidr {
    Cidr {
        addr: IpAddr::V4(c.addr),
        prefix_len: c.prefix_len,
    }
}

impl Backend for ApiBackend {
    async fn ipam_take(&self, owner: &str, want: Want) -> Result<V4Cidr, PluginError> {
        let (explicit, nets) = match want {
            Want::Any(block) => (Vec::new(), vec![NetSpec(Some(block))]),
            Want::Addr(c) => (vec![cidr(c)], Vec::new()),
        };
        let given = crate::ipam::resolve(&self.api, owner, &explicit, &nets)
            .await
            .map_err(failed)?;
        given
            .addrs
            .iter()
            .find_map(|c| match c.addr {
                IpAddr::V4(a) => Some(V4Cidr {
                    addr: a,
                    prefix_len: c.prefix_len,
                }),
                IpAddr::V6(_) => None,
            })
            .ok_or_else(|| PluginError::Failed("IPAM gave no IPv4 address".into()))
    }

    async fn ipam_free(&self, owner: &str, addr: Ipv4Addr) -> Result<(), PluginError> {
        crate::ipam::free(&self.api, owner, Some(vec![addr]))
            .await
            .map(drop)
            .map_err(failed)
    }

    async fn ipam_transfer(&self, from: &str, to: &str, addr: Ipv4Addr) -> Result<(), PluginError> {
        crate::ipam::transfer(&self.api, from, to, addr)
            .await
            .map_err(failed)
    }

    async fn expose(&self, address: V4Cidr) -> Result<(), PluginError> {
        crate::api::expose_address(&self.api, cidr(address), None)
            .await
            .map(drop)
            .map_err(failed)
    }

    async fn unexpose(&self, address: V4Cidr) -> Result<(), PluginError> {
        crate::api::unexpose_address(&self.api, cidr(address))
            .await
            .map_err(failed)
    }

    async fn set_outbound(&self, nets: Vec<DockerNet>) -> Result<(), PluginError> {
        let bridge = self.api.plumbing.lock().await.bridge().to_owned();
        tokio::task::spawn_blocking(move || crate::firewall::set_docker_outbound(&bridge, &nets))
            .await
            .map_err(|e| PluginError::Failed(e.to_string()))?
            .map_err(PluginError::Failed)
    }

    async fn dns_add(&self, tag: &str, name: &str, addr: Ipv4Addr) -> Result<(), PluginError> {
        let (name, container) = (name.to_owned(), Some(tag.to_owned()));
        ask(&self.api.inbox, |answer| {
            Input::Dns(DnsRequest::Add {
                name,
                addrs: vec![addr],
                container,
                answer,
            })
        })
        .await
        .and_then(|r| r)
        .map(drop)
        .map_err(failed)
    }

    async fn dns_remove(&self, tag: &str) -> Result<(), PluginError> {
        let container = Some(tag.to_owned());
        ask(&self.api.inbox, |answer| {
            Input::Dns(DnsRequest::Remove {
                name: None,
                addrs: Vec::new(),
                container,
                answer,
            })
        })
        .await
        .and_then(|r| r)
        .map(drop)
        .map_err(failed)
    }

    fn policy_pods(
        &self,
        pods: std::collections::BTreeMap<String, crate::policy::pods::LocalPort>,
    ) {
        self.api.docker_pods.send_replace(pods);
    }

    async fn veth_add(
        &self,
        host: &str,
        src: &str,
        docker_netns: &Path,
    ) -> Result<(), PluginError> {
        let p = self.api.plumbing.lock().await;
        p.docker_veth_add(host, src, docker_netns)
            .await
            .map_err(PluginError::from)
    }

    async fn veth_remove(
        &self,
        host: &str,
        src: &str,
        docker_netns: &Path,
    ) -> Result<(), PluginError> {
        let p = self.api.plumbing.lock().await;
        p.docker_veth_remove(host, src, docker_netns)
            .await
            .map_err(PluginError::from)
    }
}
