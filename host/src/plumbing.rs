//! Network plumbing on this host, through `weft-kernel-dp`: the `weft` bridge, the veth
//! pairs of attached namespaces, and the addresses `expose` puts on the bridge.
//!
//! Every change is recorded in the state dir before the call returns, so a restarted
//! router adopts what the last one made (and touches none of it). What this module does
//! not do: addressing policy (IPAM), DNS, or the datapath.

use crate::cli::Cidr;
use crate::error::{Error, Result};
use crate::state::{Attachment, Persisted, StateDir};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use weft_kernel_dp::{IpCidr, Netlink};

/// Name of the interface inside an attached namespace.
pub(crate) const CONTAINER_IFNAME: &str = "ethwe";
/// First characters of a CNI attachment's id (`cni-<hash of container id and ifname>`).
pub(crate) const CNI_ID_PREFIX: &str = "cni-";
/// Most attachments one router keeps.
pub(crate) const ATTACHMENTS_LEN_MAX: usize = 4096;
/// Most addresses on one attachment.
pub(crate) const ADDRESSES_PER_ATTACHMENT_MAX: usize = 64;

/// What `detach` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Detached {
    /// The whole attachment (veth pair) was removed.
    All(Attachment),
    /// These addresses were removed; the attachment stays.
    Addresses(Attachment),
}

/// The names and settings of one veth pair to make.
struct Plug<'a> {
    /// The attachment id (and IPAM owner).
    id: String,
    /// The interface inside the namespace.
    ifname: &'a str,
    /// The host end, on the bridge.
    host_ifname: String,
    /// The other end's name until it is moved into the namespace.
    peer_tmp: String,
    /// A default route via this address, when given.
    gateway: Option<std::net::IpAddr>,
    /// Hairpin mode on the bridge port (a container reaching itself through a NAT).
    hairpin: bool,
}

/// The bridge, attachments and exposed addresses of one router.
#[derive(Debug)]
pub(crate) struct Plumbing {
    nl: Netlink,
    bridge: String,
    mtu_bytes: u32,
    state_dir: StateDir,
    state: Persisted,
    changed: tokio::sync::watch::Sender<u64>,
}

fn nl_err(e: weft_kernel_dp::Error) -> Error {
    Error::Netlink(e.to_string())
}

fn to_ipcidr(c: Cidr) -> IpCidr {
    IpCidr {
        addr: c.addr,
        prefix_len: c.prefix_len,
    }
}

impl Plumbing {
    /// Opens netlink in the router's namespace and loads the recorded state.
    /// Call from inside the tokio runtime.
    pub(crate) fn open(bridge: &str, mtu_bytes: u32, state_dir: StateDir) -> Result<Self> {
        let state = state_dir.load()?;
        let nl = Netlink::new().map_err(nl_err)?;
        Ok(Self {
            nl,
            bridge: bridge.to_owned(),
            mtu_bytes,
            state_dir,
            state,
            changed: tokio::sync::watch::Sender::new(0),
        })
    }

    /// The bridge name.
    pub(crate) fn bridge(&self) -> &str {
        &self.bridge
    }

    /// The recorded attachments.
    pub(crate) fn attachments(&self) -> &[Attachment] {
        &self.state.attachments
    }

    /// The exposed addresses.
    pub(crate) fn exposed(&self) -> &[Cidr] {
        &self.state.exposed
    }

    /// The names `expose -h` gave exposed addresses.
    pub(crate) fn exposed_names(&self) -> &[crate::state::ExposedName] {
        &self.state.exposed_names
    }

    /// Records `fqdn` as the name of the exposed `addresses` (so a restarted router
    /// registers it again).
    pub(crate) fn set_exposed_name(&mut self, addresses: &[Cidr], fqdn: &str) -> Result<()> {
        for a in addresses {
            let n = crate::state::ExposedName {
                address: *a,
                fqdn: fqdn.to_owned(),
            };
            if !self.state.exposed_names.contains(&n) {
                self.state.exposed_names.push(n);
            }
        }
        self.save()
    }

    /// Records the DNS name of attachment `id` (so a restarted router registers it again).
    pub(crate) fn set_dns_name(&mut self, id: &str, name: Option<String>) -> Result<()> {
        if let Some(a) = self.state.attachments.iter_mut().find(|a| a.id == id) {
            a.dns_name = name;
            self.save()?;
        }
        Ok(())
    }

    /// Sets attachment `id`'s policy metadata (namespace, labels, named ports); `false`
    /// when there is no such attachment.
    pub(crate) fn set_pod_meta(&mut self, id: &str, pod: crate::state::PodMeta) -> Result<bool> {
        let Some(a) = self.state.attachments.iter_mut().find(|a| a.id == id) else {
            return Ok(false);
        };
        if a.pod != pod {
            a.pod = pod;
            self.save()?;
        }
        Ok(true)
    }

    /// Changes whenever the recorded attachments change (policy follows it).
    pub(crate) fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn save(&self) -> Result<()> {
        let r = self.state_dir.save(&self.state);
        self.changed.send_modify(|n| *n += 1);
        r
    }

    /// Creates the bridge if missing (with the configured MTU) and sets it up. An existing
    /// bridge is kept as it is, with whatever is plugged into it.
    pub(crate) async fn ensure_bridge(&self) -> Result<()> {
        match self.nl.link(&self.bridge).await.map_err(nl_err)? {
            Some(link) if link.kind.as_deref() != Some("bridge") => {
                return Err(Error::Other(format!(
                    "interface {} exists and is a {}, not a bridge; remove it or pick another name with --bridge",
                    self.bridge,
                    link.kind.as_deref().unwrap_or("non-bridge link")
                )));
            }
            Some(_) => {}
            None => match self.nl.create_bridge(&self.bridge, self.mtu_bytes).await {
                Ok(_) => {}
                Err(e) if e.is_exists() => {}
                Err(e) => return Err(nl_err(e)),
            },
        }
        self.nl.set_up(&self.bridge).await.map_err(nl_err)
    }

    /// Puts the existing link `name` (the sleeve's TAP) on the bridge with the overlay MTU,
    /// and sets it up.
    pub(crate) async fn add_port(&self, name: &str) -> Result<()> {
        self.nl
            .set_mtu(name, self.mtu_bytes)
            .await
            .map_err(nl_err)?;
        self.nl
            .set_master(name, &self.bridge)
            .await
            .map_err(nl_err)?;
        self.nl.set_up(name).await.map_err(nl_err)
    }

    /// Drops records of attachments whose veth is gone (the namespace died while we were
    /// down); keeps the others untouched. Returns how many were adopted.
    pub(crate) async fn adopt(&mut self) -> Result<usize> {
        let mut kept = Vec::new();
        for a in std::mem::take(&mut self.state.attachments) {
            match self.nl.link(&a.host_ifname).await {
                Ok(Some(_)) => kept.push(a),
                Ok(None) => tracing::info!(
                    "attachment {} ({}) is gone; forgetting it",
                    a.id,
                    a.netns.display()
                ),
                Err(e) => {
                    tracing::warn!("cannot check attachment {}: {e}; keeping it", a.id);
                    kept.push(a);
                }
            }
        }
        let changed = kept.len() != self.state.attachments.len();
        self.state.attachments = kept;
        let n = self.state.attachments.len();
        if changed || n > 0 {
            self.save()?;
        }
        Ok(n)
    }

    /// Plugs the namespace at `netns` into the bridge with `addresses` (adding to an
    /// existing attachment of the same namespace).
    pub(crate) async fn attach(&mut self, netns: &Path, addresses: &[Cidr]) -> Result<Attachment> {
        let inode = netns_inode(netns)?;
        if let Some(i) = self.find(inode) {
            let host_ok = self
                .nl
                .link(&self.state.attachments[i].host_ifname)
                .await
                .map_err(nl_err)?
                .is_some();
            if host_ok {
                return self.add_addresses(i, netns, addresses).await;
            }
            self.state.attachments.remove(i);
        }
        let plug = Plug {
            id: format!("ns-{inode}"),
            ifname: CONTAINER_IFNAME,
            host_ifname: format!("vwe{inode:x}"),
            peer_tmp: format!("vwp{inode:x}"),
            gateway: None,
            hairpin: false,
        };
        self.plug(netns, inode, &plug, addresses).await
    }

    /// Plugs the namespace at `netns` in as the CNI attachment `id` (its interface
    /// `ifname`, host end `vwc<tag>`), with `addresses` and a default route via `gateway`,
    /// hairpin on. Refuses an attachment `id` whose veth is still there (a second ADD).
    pub(crate) async fn attach_cni(
        &mut self,
        netns: &Path,
        id: &str,
        ifname: &str,
        addresses: &[Cidr],
        gateway: Option<std::net::IpAddr>,
    ) -> Result<Attachment> {
        let inode = netns_inode(netns)?;
        if let Some(i) = self.state.attachments.iter().position(|a| a.id == id) {
            let host = &self.state.attachments[i].host_ifname;
            if self.nl.link(host).await.map_err(nl_err)?.is_some() {
                return Err(Error::Other(format!(
                    "{id} is attached already (interface {ifname}); DEL it first"
                )));
            }
            self.state.attachments.remove(i);
        }
        let tag = id.strip_prefix(CNI_ID_PREFIX).unwrap_or(id);
        let tag = &tag[..tag.len().min(12)];
        let plug = Plug {
            id: id.to_owned(),
            ifname,
            host_ifname: format!("vwc{tag}"),
            peer_tmp: format!("vwq{tag}"),
            gateway,
            hairpin: true,
        };
        self.plug(netns, inode, &plug, addresses).await
    }

    /// Makes the veth pair `plug` names: host end on the bridge, the other moved into
    /// `netns` as `plug.ifname`, up, with `addresses`; recorded before it returns.
    async fn plug(
        &mut self,
        netns: &Path,
        inode: u64,
        plug: &Plug<'_>,
        addresses: &[Cidr],
    ) -> Result<Attachment> {
        let (host_ifname, peer_tmp, ifname) = (&plug.host_ifname, &plug.peer_tmp, plug.ifname);
        if self.state.attachments.len() >= ATTACHMENTS_LEN_MAX {
            return Err(Error::Other(format!(
                "{ATTACHMENTS_LEN_MAX} attachments already; detach some first"
            )));
        }
        // A leftover pair from a crash before the state was saved: remove it.
        for name in [host_ifname, peer_tmp] {
            if self.nl.link(name).await.map_err(nl_err)?.is_some() {
                let _ = self.nl.delete_link(name).await;
            }
        }
        let inner = Netlink::in_netns(netns).map_err(|e| unknown_netns(netns, e))?;
        if inner.link(ifname).await.map_err(nl_err)?.is_some() {
            return Err(Error::Other(format!(
                "namespace {} already has an interface {ifname} that this router did not make; remove it first",
                netns.display()
            )));
        }
        self.nl
            .create_veth(host_ifname, peer_tmp, self.mtu_bytes)
            .await
            .map_err(nl_err)?;
        let made = async {
            self.nl.set_master(host_ifname, &self.bridge).await?;
            if plug.hairpin {
                self.nl.set_port_hairpin(host_ifname, true).await?;
            }
            self.nl.set_up(host_ifname).await?;
            self.nl.move_to_netns(peer_tmp, netns, Some(ifname)).await?;
            configure_arp_cache(netns, ifname);
            if inner.link("lo").await?.is_some_and(|l| !l.up) {
                inner.set_up("lo").await?;
            }
            // Addresses first, then up: with arp_notify the kernel announces each IPv4
            // address when the link comes up (a gratuitous ARP), so peers that knew the
            // address at another MAC (a restarted or moved container) learn the new one.
            for a in addresses {
                match inner.add_address(ifname, to_ipcidr(*a)).await {
                    Ok(()) => {}
                    Err(e) if e.is_exists() => {}
                    Err(e) => return Err(e),
                }
            }
            inner.set_up(ifname).await?;
            if let Some(gw) = plug.gateway {
                let default = IpCidr {
                    addr: match gw {
                        std::net::IpAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
                        std::net::IpAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
                    },
                    prefix_len: 0,
                };
                inner.add_route(default, Some(gw), Some(ifname)).await?;
            }
            inner.link(ifname).await
        }
        .await;
        let link = match made {
            Ok(link) => link,
            Err(e) => {
                // Deleting one end removes the pair, wherever the other end is.
                let _ = self.nl.delete_link(host_ifname).await;
                return Err(nl_err(e));
            }
        };
        let mut addrs: Vec<Cidr> = Vec::new();
        for a in addresses {
            if !addrs.contains(a) {
                addrs.push(*a);
            }
        }
        let attachment = Attachment {
            id: plug.id.clone(),
            netns: netns.to_path_buf(),
            netns_inode: inode,
            host_ifname: host_ifname.clone(),
            ifname: ifname.to_owned(),
            mac: link.and_then(|l| l.mac).map(|m| m.to_string()),
            addresses: addrs,
            dns_name: None,
            pod: crate::state::PodMeta::default(),
        };
        self.state.attachments.push(attachment.clone());
        self.save()?;
        Ok(attachment)
    }

    async fn add_addresses(
        &mut self,
        i: usize,
        netns: &Path,
        addresses: &[Cidr],
    ) -> Result<Attachment> {
        let have = self.state.attachments[i].addresses.len();
        let new: Vec<Cidr> = addresses
            .iter()
            .filter(|a| !self.state.attachments[i].addresses.contains(a))
            .copied()
            .collect();
        if have + new.len() > ADDRESSES_PER_ATTACHMENT_MAX {
            return Err(Error::Other(format!(
                "at most {ADDRESSES_PER_ATTACHMENT_MAX} addresses per attachment"
            )));
        }
        let inner = Netlink::in_netns(netns).map_err(|e| unknown_netns(netns, e))?;
        for a in &new {
            match inner.add_address(CONTAINER_IFNAME, to_ipcidr(*a)).await {
                Ok(()) => {}
                Err(e) if e.is_exists() => {}
                Err(e) => return Err(nl_err(e)),
            }
            self.state.attachments[i].addresses.push(*a);
        }
        self.save()?;
        Ok(self.state.attachments[i].clone())
    }

    /// Removes `addresses` from the namespace's attachment, or the whole attachment when
    /// `addresses` is empty.
    pub(crate) async fn detach(&mut self, netns: &Path, addresses: &[Cidr]) -> Result<Detached> {
        let inode = netns_inode(netns)?;
        let Some(i) = self.find(inode) else {
            return Err(Error::Other(format!(
                "namespace {} is not attached (see `weft ps`)",
                netns.display()
            )));
        };
        if addresses.is_empty() {
            return self.remove_at(i).await.map(Detached::All);
        }
        for a in addresses {
            if !self.state.attachments[i].addresses.contains(a) {
                return Err(Error::Other(format!(
                    "{a} is not an address of attachment {} (see `weft ps`)",
                    self.state.attachments[i].id
                )));
            }
        }
        let inner = Netlink::in_netns(netns).map_err(|e| unknown_netns(netns, e))?;
        for a in addresses {
            match inner.del_address(CONTAINER_IFNAME, to_ipcidr(*a)).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() || e.errno() == Some(libc::EADDRNOTAVAIL) => {}
                Err(e) => return Err(nl_err(e)),
            }
            self.state.attachments[i].addresses.retain(|x| x != a);
        }
        self.save()?;
        Ok(Detached::Addresses(self.state.attachments[i].clone()))
    }

    /// Whether attachment `id` is recorded and its host end is there.
    pub(crate) async fn has_live(&self, id: &str) -> Result<bool> {
        let Some(a) = self.state.attachments.iter().find(|a| a.id == id) else {
            return Ok(false);
        };
        Ok(self
            .nl
            .link(&a.host_ifname)
            .await
            .map_err(nl_err)?
            .is_some())
    }

    /// Removes attachment `id` whole (its veth, wherever the namespace is, or gone with
    /// it); `None` when there is no such attachment.
    pub(crate) async fn detach_id(&mut self, id: &str) -> Result<Option<Attachment>> {
        match self.state.attachments.iter().position(|a| a.id == id) {
            Some(i) => self.remove_at(i).await.map(Some),
            None => Ok(None),
        }
    }

    async fn remove_at(&mut self, i: usize) -> Result<Attachment> {
        let a = self.state.attachments.remove(i);
        match self.nl.delete_link(&a.host_ifname).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                self.state.attachments.insert(i, a);
                return Err(nl_err(e));
            }
        }
        self.save()?;
        Ok(a)
    }

    /// What differs between attachment `id` as recorded and expected (`addresses`, `mac`)
    /// and what is in `netns` now: one line per difference (none: all as expected).
    pub(crate) async fn check(
        &self,
        id: &str,
        netns: &Path,
        addresses: &[Cidr],
        mac: Option<&str>,
        default_via: Option<std::net::IpAddr>,
    ) -> Result<Vec<String>> {
        let Some(a) = self.state.attachments.iter().find(|a| a.id == id) else {
            return Ok(vec![format!(
                "no attachment {id} here (never added, or deleted)"
            )]);
        };
        let mut problems = Vec::new();
        if self
            .nl
            .link(&a.host_ifname)
            .await
            .map_err(nl_err)?
            .is_none()
        {
            problems.push(format!("the host end {} is gone", a.host_ifname));
        }
        if netns_inode(netns)? != a.netns_inode {
            problems.push(format!(
                "{} is not the namespace the attachment was made in",
                netns.display()
            ));
            return Ok(problems);
        }
        let inner = Netlink::in_netns(netns).map_err(|e| unknown_netns(netns, e))?;
        let Some(link) = inner.link(&a.ifname).await.map_err(nl_err)? else {
            problems.push(format!("no interface {} in {}", a.ifname, netns.display()));
            return Ok(problems);
        };
        if !link.up {
            problems.push(format!("interface {} is down", a.ifname));
        }
        let have_mac = link.mac.map(|m| m.to_string());
        if let (Some(want), Some(have)) = (mac, &have_mac) {
            if !want.eq_ignore_ascii_case(have) {
                problems.push(format!("{} has MAC {have}, not {want}", a.ifname));
            }
        }
        let have = inner.addresses(&a.ifname).await.map_err(nl_err)?;
        for want in addresses {
            if !have.contains(&to_ipcidr(*want)) {
                problems.push(format!("{} lacks address {want}", a.ifname));
            }
        }
        if let Some(gw @ std::net::IpAddr::V4(_)) = default_via {
            let routes = inner.routes_v4(&a.ifname).await.map_err(nl_err)?;
            let there = routes
                .iter()
                .any(|(dest, via)| dest.prefix_len == 0 && *via == Some(gw));
            if !there {
                problems.push(format!("no default route via {gw} on {}", a.ifname));
            }
        }
        Ok(problems)
    }

    /// Puts `address` on the bridge.
    pub(crate) async fn expose(&mut self, address: Cidr) -> Result<()> {
        match self.nl.add_address(&self.bridge, to_ipcidr(address)).await {
            Ok(()) => {}
            Err(e) if e.is_exists() => {}
            Err(e) => return Err(nl_err(e)),
        }
        if !self.state.exposed.contains(&address) {
            self.state.exposed.push(address);
            self.save()?;
        }
        Ok(())
    }

    /// Takes one exposed `address` off the bridge (gone already is no error).
    pub(crate) async fn unexpose(&mut self, address: Cidr) -> Result<()> {
        match self.nl.del_address(&self.bridge, to_ipcidr(address)).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() || e.errno() == Some(libc::EADDRNOTAVAIL) => {}
            Err(e) => return Err(nl_err(e)),
        }
        if self.state.exposed.contains(&address) {
            self.state.exposed.retain(|a| *a != address);
            self.state.exposed_names.retain(|n| n.address != address);
            self.save()?;
        }
        Ok(())
    }

    /// Makes the veth of a Docker endpoint: `host` on the bridge (up, the bridge's MTU)
    /// and `src` in the namespace at `docker_netns`, down, for Docker to move into the
    /// container. Leftovers with these names (a `Join` repeated, a crash) are removed
    /// first; the names are the plugin's own.
    pub(crate) async fn docker_veth_add(
        &self,
        host: &str,
        src: &str,
        docker_netns: &Path,
    ) -> Result<()> {
        self.docker_veth_remove(host, src, docker_netns).await?;
        let elsewhere = !same_netns(docker_netns)?;
        self.nl
            .create_veth(host, src, self.mtu_bytes)
            .await
            .map_err(nl_err)?;
        let made = async {
            self.nl.set_master(host, &self.bridge).await?;
            self.nl.set_up(host).await?;
            if elsewhere {
                self.nl.move_to_netns(src, docker_netns, None).await?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = made {
            let _ = self.nl.delete_link(host).await;
            return Err(nl_err(e));
        }
        Ok(())
    }

    /// Removes a Docker endpoint's veth: deleting `host` removes the pair wherever the
    /// other end is; `src` is also looked for in `docker_netns`, where Docker hands it
    /// back after `Leave`. What is gone already is no error.
    pub(crate) async fn docker_veth_remove(
        &self,
        host: &str,
        src: &str,
        docker_netns: &Path,
    ) -> Result<()> {
        for name in [host, src] {
            match self.nl.delete_link(name).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(nl_err(e)),
            }
        }
        if same_netns(docker_netns)? {
            return Ok(());
        }
        let there = Netlink::in_netns(docker_netns).map_err(|e| unknown_netns(docker_netns, e))?;
        match there.delete_link(src).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(nl_err(e)),
        }
    }

    /// Removes the exposed addresses from the bridge; returns them.
    pub(crate) async fn hide(&mut self) -> Result<Vec<Cidr>> {
        let mut removed = Vec::new();
        while let Some(a) = self.state.exposed.first().copied() {
            match self.nl.del_address(&self.bridge, to_ipcidr(a)).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() || e.errno() == Some(libc::EADDRNOTAVAIL) => {}
                Err(e) => {
                    self.save()?;
                    return Err(nl_err(e));
                }
            }
            self.state.exposed.remove(0);
            removed.push(a);
        }
        self.state.exposed_names.clear();
        self.save()?;
        Ok(removed)
    }

    /// Removes every attachment and the bridge, and wipes the state dir (`weft reset`).
    pub(crate) async fn reset(&mut self) -> Result<()> {
        for a in std::mem::take(&mut self.state.attachments) {
            if let Err(e) = self.nl.delete_link(&a.host_ifname).await {
                if !e.is_not_found() {
                    tracing::warn!("reset: {e}");
                }
            }
        }
        self.state.exposed.clear();
        self.state.exposed_names.clear();
        match self.nl.delete_link(&self.bridge).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(nl_err(e)),
        }
        self.state_dir.wipe()
    }

    fn find(&self, inode: u64) -> Option<usize> {
        self.state
            .attachments
            .iter()
            .position(|a| a.netns_inode == inode && !a.id.starts_with(CNI_ID_PREFIX))
    }
}

/// ARP cache timers of the container's interface, as Weave sets them: an address that
/// moved to another host (`detach` here, `attach` there) is re-resolved within seconds
/// instead of after the kernel's default 15-45 s reachable time plus probes.
/// Best effort: a namespace that refuses still works, just slower after a move.
const ARP_CACHE_SYSCTLS: [(&str, &str); 3] = [
    ("base_reachable_time_ms", "5000"),
    ("delay_first_probe_time", "2"),
    ("ucast_solicit", "1"),
];

fn configure_arp_cache(netns: &Path, ifname: &str) {
    let done = weft_kernel_dp::run_in_netns(netns, || {
        for (key, value) in ARP_CACHE_SYSCTLS {
            let path = format!("/proc/sys/net/ipv4/neigh/{ifname}/{key}");
            std::fs::write(path, value)?;
        }
        // A gratuitous ARP for every address when the link comes up (DESIGN: every attach
        // announces its addresses).
        std::fs::write(format!("/proc/sys/net/ipv4/conf/{ifname}/arp_notify"), "1")?;
        Ok::<(), std::io::Error>(())
    });
    if !matches!(done, Ok(Ok(()))) {
        tracing::debug!(
            "ARP cache timers on {ifname} in {}: {done:?}",
            netns.display()
        );
    }
}

fn unknown_netns(path: &Path, e: weft_kernel_dp::Error) -> Error {
    match e {
        weft_kernel_dp::Error::Netns { source, .. } => Error::UnknownNetns {
            path: path.to_path_buf(),
            reason: source.to_string(),
        },
        other => nl_err(other),
    }
}

/// Whether the namespace at `path` is the router's own.
fn same_netns(path: &Path) -> Result<bool> {
    let ours = std::fs::metadata("/proc/self/ns/net")
        .map_err(Error::io("stat", PathBuf::from("/proc/self/ns/net")))?;
    Ok(netns_inode(path)? == ours.ino())
}

/// The inode of the network namespace file at `path`; refuses paths that are not
/// network namespace files (same filesystem as our own `/proc/self/ns/net`).
pub(crate) fn netns_inode(path: &Path) -> Result<u64> {
    let meta = std::fs::metadata(path).map_err(|e| Error::UnknownNetns {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let ours = std::fs::metadata("/proc/self/ns/net")
        .map_err(Error::io("stat", PathBuf::from("/proc/self/ns/net")))?;
    if meta.dev() != ours.dev() || meta.is_dir() {
        return Err(Error::UnknownNetns {
            path: path.to_path_buf(),
            reason: "not a network namespace file".into(),
        });
    }
    Ok(meta.ino())
}
