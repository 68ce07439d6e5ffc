//! The router's side of the CNI plugin: `/cni/add`, `/cni/del`, `/cni/check`, `/cni/gc`
//! on the control socket, and the DELs the plugin spooled while the router was down.
//!
//! What it does: the plumbing (`Plumbing::attach_cni`), the addresses (weft IPAM, owned by
//! the attachment id, a hash of (container id, ifname)), the gateway (the host's address
//! on the subnet, allocated and exposed when there is none) and the pod's DNS name.
//! What it does not do: read CNI's stdin or environment (the plugin, `super::plugin`).

use super::{
    SPOOL_FILE_LEN_MAX, SPOOL_FILES_MAX, check_container_id, check_ifname, ipam_owner_id, owner_id,
};
use crate::api::Api;
use crate::cli::Cidr;
use crate::driver::{DnsRequest, Input, ask};
use crate::ipam::NetSpec;
use crate::messages::{
    ApiError, CniAddReply, CniAddRequest, CniCheckReply, CniCheckRequest, CniDelReply,
    CniDelRequest, CniGcReply, CniGcRequest, CniIpamReply, CniIpamRequest,
};
use crate::plumbing::CNI_ID_PREFIX;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use weft_core::ipam::Cidr as V4Cidr;

/// How often the spool of DELs is looked at while the router runs.
pub(crate) const SPOOL_POLL_MS: u64 = 5_000;
/// First characters of a CNI gateway's IPAM owner (`cnigw-<subnet>`); not `cni-`, so the
/// start-up sweep of attachments that are gone leaves it.
pub(crate) const GATEWAY_OWNER_PREFIX: &str = "cnigw-";

/// First characters of the gateway's IPAM owner when weft is another plugin's IPAM
/// (`cnibr-<subnet>`): that plugin puts it on its own bridge, so it is not weft's.
pub(crate) const IPAM_GATEWAY_OWNER_PREFIX: &str = "cnibr-";

/// One gateway is chosen at a time: two first ADDs on a subnet share one.
static GATEWAY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn bad(e: String) -> ApiError {
    ApiError::BadRequest(e)
}

/// `POST /cni/add`.
pub(crate) async fn add(api: &Api, r: CniAddRequest) -> Result<CniAddReply, ApiError> {
    check_container_id(&r.container_id).map_err(bad)?;
    check_ifname(&r.ifname).map_err(bad)?;
    let id = owner_id(&r.container_id, &r.ifname);
    // A DEL spooled while the router was down comes before this ADD.
    if let Some(spooled) = spooled_del(api, &id) {
        del(api, spooled).await?;
    }
    if api.plumbing.lock().await.has_live(&id).await? {
        return Err(ApiError::Conflict(format!(
            "container {} already has interface {} on this network (ADD without DEL); DEL it first",
            r.container_id, r.ifname
        )));
    }
    let (gateway, given) = if r.addresses.is_empty() {
        let subnet = r.subnet.unwrap_or(NetSpec(None));
        let gateway = gateway(api, subnet).await?;
        (
            Some(gateway),
            crate::ipam::resolve(api, &id, &[], &[subnet]).await?,
        )
    } else {
        // A delegated IPAM plugin's addresses and gateway.
        if let Some(g) = r.gateway {
            let _one = GATEWAY.lock().await;
            let there = api.plumbing.lock().await.exposed().contains(&g);
            if !there {
                crate::api::expose_address(api, g, None).await?;
            }
        }
        (
            r.gateway,
            crate::ipam::resolve(api, &id, &r.addresses, &[]).await?,
        )
    };
    let made = api
        .plumbing
        .lock()
        .await
        .attach_cni(
            &r.netns,
            &id,
            &r.ifname,
            &given.addrs,
            gateway.map(|g| g.addr),
        )
        .await;
    let mut a = match made {
        Ok(a) => a,
        Err(e) => {
            let _ = crate::ipam::free(api, &id, None).await;
            return Err(e.into());
        }
    };
    tracing::info!(
        "CNI: attached container {} ({}) as {} with {:?}",
        r.container_id,
        r.ifname,
        a.id,
        a.addresses
    );
    if let Some(name) = r.name {
        if let Err(e) = crate::api::name_attachment(api, &mut a, name).await {
            // A bad name costs the name, not the container's network.
            tracing::warn!("CNI: {} keeps no DNS name: {e}", a.id);
        }
    }
    if r.namespace.is_some() || !r.labels.is_empty() {
        match crate::policy::pods::meta(r.namespace, &r.labels, &[]) {
            Ok(meta) => {
                api.plumbing
                    .lock()
                    .await
                    .set_pod_meta(&a.id, meta.clone())?;
                a.pod = meta;
            }
            Err(e) => tracing::warn!("CNI: {} keeps no policy labels: {e}", a.id),
        }
    }
    let mtu_bytes = api.datapath.status().mtu.unwrap_or(0);
    Ok(CniAddReply {
        attachment: a,
        gateway,
        mtu_bytes: u32::try_from(mtu_bytes).unwrap_or(0),
        dns: crate::api::dns_args(api),
    })
}

/// The block `subnet` names (the default subnet's, asked of IPAM).
async fn block_of(api: &Api, subnet: NetSpec) -> Result<V4Cidr, ApiError> {
    match subnet.0 {
        Some(b) => Ok(b),
        None => {
            let st = crate::ipam::status(api).await?;
            let text = st.default_subnet.unwrap_or_default();
            crate::ipam::parse_block(&text).map_err(ApiError::Ipam)
        }
    }
}

/// The host's address on `subnet`: one already on the bridge, else one allocated (owner
/// `cnigw-<subnet>`) and exposed.
async fn gateway(api: &Api, subnet: NetSpec) -> Result<Cidr, ApiError> {
    let _one = GATEWAY.lock().await;
    let block = block_of(api, subnet).await?;
    // An address on the bridge for this very block (not one of a smaller network inside
    // it, e.g. a Docker network's /24, which goes when that network does).
    let inside = |c: &Cidr| match c.addr {
        IpAddr::V4(a) => c.prefix_len == block.prefix_len && block.contains(a.to_bits()),
        IpAddr::V6(_) => false,
    };
    if let Some(c) = api
        .plumbing
        .lock()
        .await
        .exposed()
        .iter()
        .find(|c| inside(c))
    {
        return Ok(*c);
    }
    let owner = format!("{GATEWAY_OWNER_PREFIX}{}", block_tag(block));
    let given = crate::ipam::resolve(api, &owner, &[], &[NetSpec(Some(block))]).await?;
    let Some(addr) = given.addrs.first().copied() else {
        return Err(ApiError::Ipam(format!("no gateway address in {block}")));
    };
    crate::api::expose_address(api, addr, None).await?;
    tracing::info!("CNI: the host's address {addr} on {block} is the containers' gateway");
    Ok(addr)
}

/// `10.32.0.0/12` as `10.32.0.0-12` (an owner name without a slash).
fn block_tag(b: V4Cidr) -> String {
    format!("{}-{}", b.addr, b.prefix_len)
}

/// `POST /cni/del`: idempotent; a namespace already gone is no error.
pub(crate) async fn del(api: &Api, r: CniDelRequest) -> Result<CniDelReply, ApiError> {
    check_container_id(&r.container_id).map_err(bad)?;
    check_ifname(&r.ifname).map_err(bad)?;
    let id = owner_id(&r.container_id, &r.ifname);
    let removed = del_id(api, &id).await?;
    forget_spooled(api, &id);
    Ok(removed)
}

async fn del_id(api: &Api, id: &str) -> Result<CniDelReply, ApiError> {
    let removed = api.plumbing.lock().await.detach_id(id).await?;
    let freed = crate::ipam::free(api, id, None)
        .await
        .map_err(|e| ApiError::IpamUnavailable(e.line()))?;
    let container = Some(id.to_owned());
    ask(&api.inbox, |answer| {
        Input::Dns(DnsRequest::Remove {
            name: None,
            addrs: Vec::new(),
            container,
            answer,
        })
    })
    .await??;
    if removed.is_some() || freed > 0 {
        tracing::info!("CNI: removed {id} ({freed} addresses freed)");
    }
    Ok(CniDelReply {
        removed: removed.is_some(),
        freed,
    })
}

/// `POST /cni/ipam/add`: addresses (and the gateway) for another plugin's interface. A
/// second ADD of one (container, ifname) without DEL is refused, its address kept.
pub(crate) async fn ipam_add(api: &Api, r: CniIpamRequest) -> Result<CniIpamReply, ApiError> {
    check_container_id(&r.container_id).map_err(bad)?;
    check_ifname(&r.ifname).map_err(bad)?;
    let id = ipam_owner_id(&r.container_id, &r.ifname);
    // A DEL spooled while the router was down comes before this ADD.
    if spooled_del(api, &id).is_some() {
        let key = CniIpamRequest {
            container_id: r.container_id.clone(),
            ifname: r.ifname.clone(),
            subnet: None,
            gateway: false,
        };
        ipam_del(api, key).await?;
        forget_spooled(api, &id);
    }
    let subnet = r.subnet.unwrap_or(NetSpec(None));
    let gateway = if r.gateway {
        let _one = GATEWAY.lock().await;
        let block = block_of(api, subnet).await?;
        let owner = format!("{IPAM_GATEWAY_OWNER_PREFIX}{}", block_tag(block));
        let g = crate::ipam::resolve(api, &owner, &[], &[NetSpec(Some(block))]).await?;
        g.addrs.first().copied()
    } else {
        None
    };
    let given = crate::ipam::resolve(api, &id, &[], &[subnet]).await?;
    if given.fresh.is_empty() {
        return Err(ApiError::Conflict(format!(
            "container {} already has addresses for interface {} ({}) (ADD without DEL); DEL it first",
            r.container_id,
            r.ifname,
            given
                .addrs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    tracing::info!(
        "CNI IPAM: {:?} for container {} ({})",
        given.addrs,
        r.container_id,
        r.ifname
    );
    Ok(CniIpamReply {
        addresses: given.addrs,
        gateway,
        dns: crate::api::dns_args(api),
    })
}

/// `POST /cni/ipam/del`: idempotent.
pub(crate) async fn ipam_del(api: &Api, r: CniIpamRequest) -> Result<CniDelReply, ApiError> {
    check_container_id(&r.container_id).map_err(bad)?;
    check_ifname(&r.ifname).map_err(bad)?;
    let id = ipam_owner_id(&r.container_id, &r.ifname);
    let freed = crate::ipam::free(api, &id, None)
        .await
        .map_err(|e| ApiError::IpamUnavailable(e.line()))?;
    Ok(CniDelReply {
        removed: freed > 0,
        freed,
    })
}

/// `POST /cni/check`.
pub(crate) async fn check(api: &Api, r: CniCheckRequest) -> Result<CniCheckReply, ApiError> {
    check_container_id(&r.container_id).map_err(bad)?;
    check_ifname(&r.ifname).map_err(bad)?;
    let id = owner_id(&r.container_id, &r.ifname);
    let problems = api
        .plumbing
        .lock()
        .await
        .check(&id, &r.netns, &r.addresses, r.mac.as_deref(), r.default_via)
        .await?;
    Ok(CniCheckReply { problems })
}

/// `POST /cni/gc`: every CNI attachment not in `valid` goes, with its addresses, and so
/// do the addresses of CNI owners not in `valid` that have no attachment (an ADD cut
/// short, weft as another plugin's IPAM).
pub(crate) async fn gc(api: &Api, r: CniGcRequest) -> Result<CniGcReply, ApiError> {
    let mut valid = Vec::with_capacity(2 * r.valid.len());
    for k in &r.valid {
        check_container_id(&k.container_id).map_err(bad)?;
        check_ifname(&k.ifname).map_err(bad)?;
        valid.push(owner_id(&k.container_id, &k.ifname));
        valid.push(ipam_owner_id(&k.container_id, &k.ifname));
    }
    valid.sort();
    let stale: Vec<String> = api
        .plumbing
        .lock()
        .await
        .attachments()
        .iter()
        .filter(|a| a.id.starts_with(CNI_ID_PREFIX) && valid.binary_search(&a.id).is_err())
        .map(|a| a.id.clone())
        .collect();
    let mut reply = CniGcReply::default();
    for id in stale {
        reply.freed += del_id(api, &id).await?.freed;
        reply.removed.push(id);
    }
    let owners = ask(&api.inbox, |tx| {
        Input::Query(crate::driver::Query::IpamOwners(tx))
    })
    .await?;
    for owner in owners {
        let ours = owner.starts_with(CNI_ID_PREFIX) || owner.starts_with(super::IPAM_OWNER_PREFIX);
        if ours && valid.binary_search(&owner).is_err() {
            let freed = crate::ipam::free(api, &owner, None)
                .await
                .map_err(|e| ApiError::IpamUnavailable(e.line()))?;
            tracing::info!("CNI GC: freed {freed} addresses of {owner}");
            reply.freed += freed;
        }
    }
    Ok(reply)
}

// ---------------------------------------------------------------------------------------
// The spool: DELs the plugin recorded while the router did not answer

/// The spool directory this router drains (set once, by [`drain_spool`]).
static SPOOL: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

fn spool(_api: &Api) -> Option<&'static Path> {
    SPOOL.get().map(PathBuf::as_path)
}

/// The spooled DEL of attachment `id`, if any.
fn spooled_del(api: &Api, id: &str) -> Option<CniDelRequest> {
    let path = spool(api)?.join(format!("{id}.json"));
    read_spooled(&path)
}

fn read_spooled(path: &Path) -> Option<CniDelRequest> {
    let bytes = crate::state::read_bounded(path, SPOOL_FILE_LEN_MAX).ok()??;
    match serde_json::from_slice(&bytes) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!("CNI: {} is no spooled DEL ({e}); removed", path.display());
            let _ = std::fs::remove_file(path);
            None
        }
    }
}

fn forget_spooled(api: &Api, id: &str) {
    if let Some(dir) = spool(api) {
        let _ = std::fs::remove_file(dir.join(format!("{id}.json")));
    }
}

/// Carries out the DELs spooled in `dir` (at most [`SPOOL_FILES_MAX`] a pass), now and every
/// [`SPOOL_POLL_MS`]; each file goes once its DEL is done. Runs until the router stops.
pub(crate) async fn drain_spool(api: Arc<Api>, dir: PathBuf) {
    let _ = SPOOL.set(dir.clone());
    loop {
        drain_once(&api, &dir).await;
        tokio::time::sleep(Duration::from_millis(SPOOL_POLL_MS)).await;
    }
}

async fn drain_once(api: &Api, dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .take(SPOOL_FILES_MAX)
        .collect();
    for path in files {
        let Some(r) = read_spooled(&path) else {
            continue;
        };
        let what = format!("{} ({})", r.container_id, r.ifname);
        let ipam_only = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(super::IPAM_OWNER_PREFIX));
        let done = if ipam_only {
            let id = ipam_owner_id(&r.container_id, &r.ifname);
            let del = CniIpamRequest {
                container_id: r.container_id,
                ifname: r.ifname,
                subnet: None,
                gateway: false,
            };
            let done = ipam_del(api, del).await;
            if done.is_ok() {
                forget_spooled(api, &id);
            }
            done
        } else {
            del(api, r).await
        };
        match done {
            Ok(d) => tracing::info!(
                "CNI: DEL of {what} recorded while the router was down done ({} addresses freed)",
                d.freed
            ),
            Err(e @ (ApiError::BadRequest(_) | ApiError::BadBody(_))) => {
                tracing::warn!("CNI: spooled DEL of {what} refused: {e}; dropped");
                let _ = std::fs::remove_file(&path);
            }
            // Kept for the next pass (IPAM not answering yet).
            Err(e) => tracing::info!("CNI: spooled DEL of {what} not done yet: {e}"),
        }
    }
}
