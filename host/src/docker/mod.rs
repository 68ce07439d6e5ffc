//! The Docker network and IPAM driver: libnetwork's remote API on a unix socket
//! (`--plugin-socket`, `/run/docker/plugins/weft.sock` by default; the driver's name is
//! the file's name without `.sock`), scope `local`, no cluster store.
//!
//! What it does: translate Docker's calls onto what the router already does. Pools and
//! addresses come from weft IPAM through the router task (`crate::ipam`); a network's
//! gateway is the host's overlay address on its subnet (put on the bridge as `weft
//! expose` does, unless `--internal`); `Join` makes a veth whose one end is on the bridge
//! and whose other end waits in Docker's namespace for Docker to move it into the
//! container (`crate::plumbing`). Everything handed out is in `docker-plugin.json`
//! ([`state`]) before Docker hears of it.
//! What it does not do: HTTP beyond the control API's strict subset (`crate::http`), the
//! address ring (`weft_core::ipam`), or links (`weft_kernel_dp`).
//!
//! Files: [`types`] (the wire types), [`server`] (the socket), [`state`] (the file),
//! [`network`] (networks and endpoints), [`join`] (Join, Leave), [`ipam`] (the IPAM
//! driver), [`names`] (containers' names in weftDNS), [`backend`] (the seam to the
//! router: IPAM, weftDNS, plumbing, exposing), [`engine`] (the Docker Engine API: the
//! default network, network events, container names), [`gone`] (endpoints Docker deleted
//! while the router was down).
//!
//! Owners in weft IPAM: `RequestAddress` comes before Docker names the endpoint, so an
//! address is first held by a reservation (`dk-r-<random>`, `dk-c-<addr>` for an asked-for
//! address, `dk-g-<random>` for a gateway); `CreateEndpoint` hands it to the endpoint
//! (`dk-e-<id>`) in one step of the router task. A `dk-` owner the file does not know is
//! a leftover of a crash and is freed at start.

pub(crate) mod backend;
pub(crate) mod engine;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod fake;
mod gone;
mod ipam;
mod join;
mod names;
mod network;
pub(crate) mod proxy;
pub(crate) mod server;
pub(crate) mod state;
pub(crate) mod types;

use crate::messages::PluginStatus;
use sha2::Digest;
use state::{PluginState, Store};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use types::{
    ActivateReply, AddressSpacesReply, CapabilitiesReply, IMPLEMENTS, IpamCapabilitiesReply,
};
use weft_core::ipam::Cidr as V4Cidr;

/// `--plugin-socket` unless given.
pub(crate) const SOCKET_DEFAULT: &str = "/run/docker/plugins/weft.sock";
/// `--docker-socket` unless given.
pub(crate) const DOCKER_SOCKET_DEFAULT: &str = "/var/run/docker.sock";
/// The content type of every reply.
pub(crate) const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";
/// Largest request body, in bytes (Docker's requests are a few hundred bytes; labels and
/// options can add some).
pub(crate) const BODY_LEN_MAX: usize = 256 * 1024;
/// Prefix of every IPAM owner the plugin makes.
pub(crate) const OWNER_PREFIX: &str = "dk-";

/// Why the plugin refused a call; one line each, sent as `{"Err": ...}`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PluginError {
    /// The request is not what the call takes (bad JSON, a missing or bad field).
    #[error("{0}")]
    BadRequest(String),
    /// An unknown method, or an endpoint or network the plugin does not know.
    #[error("{0}")]
    NotFound(String),
    /// The body is over [`BODY_LEN_MAX`].
    #[error("request body larger than {BODY_LEN_MAX} bytes")]
    TooLarge,
    /// The router has not finished starting.
    #[error("the weft router is starting; try again in a moment")]
    Starting,
    /// The caller may not use the socket.
    #[error("{0}")]
    Forbidden(String),
    /// The call is understood but could not be done (IPAM, netlink, the state file).
    #[error("{0}")]
    Failed(String),
    /// The address asked for is held by another container (kept apart from
    /// [`Self::Failed`] so that carving a pool can try the next block).
    #[error("{0}")]
    InUse(String),
}

impl PluginError {
    /// The HTTP status it is sent with. Docker treats 404 as "not implemented": for
    /// `Leave` and `DeleteEndpoint` of an endpoint the plugin lost, it goes on.
    pub(crate) fn status(&self) -> u16 {
        match self {
            Self::BadRequest(_) => 400,
            Self::NotFound(_) => 404,
            Self::TooLarge => 413,
            Self::Starting => 503,
            Self::Forbidden(_) => 403,
            Self::Failed(_) | Self::InUse(_) => 500,
        }
    }

    /// The line sent (newlines folded).
    pub(crate) fn line(&self) -> String {
        self.to_string().replace('\n', " ")
    }
}

impl From<crate::error::Error> for PluginError {
    fn from(e: crate::error::Error) -> Self {
        Self::Failed(e.to_string())
    }
}

/// What a call knows about its caller.
#[derive(Clone, Debug)]
pub(crate) struct Ctx {
    /// The network namespace Docker runs in (the calling process's), where `Join` puts
    /// the interface for Docker to move.
    pub(crate) docker_netns: PathBuf,
}

/// What IPAM is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Want {
    /// Any free address in this block.
    Any(V4Cidr),
    /// This address (with the pool's prefix length).
    Addr(V4Cidr),
}

/// The plugin: its state and the router behind it.
pub(crate) struct Plugin<B> {
    backend: B,
    pub(crate) store: tokio::sync::Mutex<Store>,
    /// weft's allocation range; pools must lie inside.
    range: V4Cidr,
    /// The pool of a network created without `--subnet`.
    default_subnet: V4Cidr,
    /// What `weft status` shows.
    status: Arc<std::sync::Mutex<PluginStatus>>,
}

impl<B: backend::Backend> Plugin<B> {
    /// A plugin over `store` (loaded and reconciled) and `backend`.
    pub(crate) fn new(
        backend: B,
        store: Store,
        range: V4Cidr,
        default_subnet: V4Cidr,
        status: Arc<std::sync::Mutex<PluginStatus>>,
    ) -> Self {
        let p = Self {
            backend,
            store: tokio::sync::Mutex::new(store),
            range,
            default_subnet,
            status,
        };
        if let Ok(s) = p.store.try_lock() {
            p.publish(s.get());
        }
        p
    }

    /// Whether this router serves the plugin socket.
    pub(crate) fn serving(&self) -> bool {
        self.status.lock().is_ok_and(|s| s.serving)
    }

    /// Answers one call: `method` is the path without its `/` (`NetworkDriver.Join`).
    pub(crate) async fn call(
        &self,
        method: &str,
        body: &[u8],
        ctx: &Ctx,
    ) -> Result<Vec<u8>, PluginError> {
        if let Some(reply) = static_reply(method) {
            return Ok(reply);
        }
        match method {
            "NetworkDriver.CreateNetwork" => {
                to_json(&self.create_network(parse(method, body)?).await?)
            }
            "NetworkDriver.DeleteNetwork" => {
                to_json(&self.delete_network(parse(method, body)?).await?)
            }
            "NetworkDriver.CreateEndpoint" => {
                to_json(&self.create_endpoint(parse(method, body)?).await?)
            }
            "NetworkDriver.DeleteEndpoint" => {
                to_json(&self.delete_endpoint(parse(method, body)?, ctx).await?)
            }
            "NetworkDriver.EndpointOperInfo" => {
                to_json(&self.oper_info(parse(method, body)?).await?)
            }
            "NetworkDriver.Join" => to_json(&self.join(parse(method, body)?, ctx).await?),
            "NetworkDriver.Leave" => to_json(&self.leave(parse(method, body)?, ctx).await?),
            "NetworkDriver.ProgramExternalConnectivity"
            | "NetworkDriver.RevokeExternalConnectivity" => {
                to_json(&self.external_connectivity(parse(method, body)?).await?)
            }
            "NetworkDriver.DiscoverNew" | "NetworkDriver.DiscoverDelete" => {
                let _: types::DiscoveryRequest = parse(method, body)?;
                to_json(&types::Empty {})
            }
            "IpamDriver.RequestPool" => to_json(&self.request_pool(parse(method, body)?).await?),
            "IpamDriver.ReleasePool" => to_json(&self.release_pool(parse(method, body)?).await?),
            "IpamDriver.RequestAddress" => {
                to_json(&self.request_address(parse(method, body)?).await?)
            }
            "IpamDriver.ReleaseAddress" => {
                to_json(&self.release_address(parse(method, body)?).await?)
            }
            _ => Err(no_such_method(method)),
        }
    }

    /// Writes `next` and shows it in `weft status`.
    fn commit(&self, store: &mut Store, next: PluginState) -> Result<(), PluginError> {
        store.commit(next)?;
        self.publish(store.get());
        Ok(())
    }

    fn publish(&self, s: &PluginState) {
        if let Ok(mut st) = self.status.lock() {
            st.networks = s.networks.len() as u64;
            st.endpoints = s.endpoints.len() as u64;
        }
        let pods = s
            .endpoints
            .iter()
            .filter(|(_, e)| e.joined)
            .filter_map(|(id, e)| {
                let a = e.address?;
                let owner = endpoint_owner(id);
                let port = crate::policy::pods::LocalPort {
                    pod: crate::policy::pods::pod_from(&owner, vec![a.addr], &e.pod),
                    ifname: e.host_ifname.clone(),
                    cidrs: vec![(a.addr, a.prefix_len)],
                };
                Some((owner, port))
            })
            .collect();
        self.backend.policy_pods(pods);
    }
}

/// The calls answered from constants, also while the router is starting.
pub(crate) fn static_reply(method: &str) -> Option<Vec<u8>> {
    let v = match method {
        "Plugin.Activate" => to_json(&ActivateReply {
            implements: IMPLEMENTS.iter().map(|s| (*s).to_owned()).collect(),
        }),
        "NetworkDriver.GetCapabilities" => to_json(&CapabilitiesReply {
            scope: types::SCOPE.to_owned(),
            connectivity_scope: types::SCOPE.to_owned(),
        }),
        "IpamDriver.GetCapabilities" => to_json(&IpamCapabilitiesReply {
            requires_mac_address: false,
            requires_request_replay: false,
        }),
        "IpamDriver.GetDefaultAddressSpaces" => to_json(&AddressSpacesReply {
            local: types::LOCAL_ADDRESS_SPACE.to_owned(),
            global: types::GLOBAL_ADDRESS_SPACE.to_owned(),
        }),
        _ => return None,
    };
    v.ok()
}

/// The refusal for a method the plugin does not serve (Docker probes optional ones).
pub(crate) fn no_such_method(method: &str) -> PluginError {
    PluginError::NotFound(format!(
        "weft's Docker plugin does not serve {}",
        types::truncate(method, 80)
    ))
}

fn parse<T: serde::de::DeserializeOwned>(method: &str, body: &[u8]) -> Result<T, PluginError> {
    serde_json::from_slice(body)
        .map_err(|e| PluginError::BadRequest(format!("bad {method} request: {e}")))
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, PluginError> {
    serde_json::to_vec(v).map_err(|e| PluginError::Failed(format!("encode the reply: {e}")))
}

fn bad(e: String) -> PluginError {
    PluginError::BadRequest(e)
}

/// 16 random hex digits, for reservation owners.
fn random_hex() -> Result<String, PluginError> {
    let b = crate::daemon::os_random::<8>()?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// The IPAM owner of endpoint `id`'s addresses.
pub(crate) fn endpoint_owner(id: &str) -> String {
    let room = weft_core::ipam::CONTAINER_ID_LEN_MAX - "dk-e-".len();
    format!("dk-e-{}", types::truncate(id, room))
}

/// The veth names of endpoint `id`: (on the bridge, the one Docker moves). A digest of the
/// id, so any id gives valid, distinct interface names.
pub(crate) fn ifnames(id: &str) -> (String, String) {
    let d = sha2::Sha256::digest(id.as_bytes());
    let h: String = d.iter().take(6).map(|x| format!("{x:02x}")).collect();
    (format!("vwd{h}"), format!("vwc{h}"))
}

/// The network namespace of process `pid` (`None`: PID 1's, the root namespace).
pub(crate) fn netns_of(pid: Option<i32>) -> PathBuf {
    match pid {
        Some(p) if p > 0 => PathBuf::from(format!("/proc/{p}/ns/net")),
        _ => PathBuf::from("/proc/1/ns/net"),
    }
}

/// The driver name for socket `path`: its file name without `.sock`.
pub(crate) fn driver_name(path: &Path) -> Result<String, String> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let stem = name.strip_suffix(".sock").unwrap_or("");
    if stem.is_empty()
        || stem.len() > 64
        || !stem
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(format!(
            "bad --plugin-socket {}: expected DIR/NAME.sock with a NAME of letters, digits, '-', '_' or '.' (Docker finds plugins as /run/docker/plugins/NAME.sock)",
            path.display()
        ));
    }
    Ok(stem.to_owned())
}

/// Checks the plugin's state against IPAM at start: drops addresses whose owner no longer
/// holds them (a crash between the two writes), and returns the owners IPAM must keep.
pub(crate) fn reconcile(state: &mut PluginState, held: &[(Ipv4Addr, String)]) -> Vec<String> {
    let before = state.addresses.len();
    state
        .addresses
        .retain(|a, rec| held.iter().any(|(h, o)| h == a && *o == rec.owner));
    let dropped = before - state.addresses.len();
    if dropped > 0 {
        tracing::warn!(
            "Docker plugin: {dropped} addresses in the plugin's state were no longer held in IPAM (a crash during a call); forgotten"
        );
    }
    state.owners()
}

#[cfg(test)]
mod tests;
