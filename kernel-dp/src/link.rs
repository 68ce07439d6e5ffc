//! Link operations: bridges, veth pairs, moving a link into another namespace,
//! MTU, up/down, enslaving, lookup and deletion.

use std::path::Path;

use futures::TryStreamExt;
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::{LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth};

use crate::{
    Error, Link, MacAddr, Netlink, Result, error::Op, netlink::check_ifname, netns::NetnsFile,
};

impl Netlink {
    /// Looks a link up by name; `Ok(None)` when there is none.
    pub async fn link(&self, name: &str) -> Result<Option<Link>> {
        const OP: Op = "look up link";
        check_ifname(OP, name)?;
        let mut replies = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match replies.try_next().await {
            Ok(Some(msg)) => Ok(Some(link_from_message(&msg))),
            Ok(None) => Ok(None),
            Err(err) => {
                let err = Error::from_rtnl(OP, name, err);
                if err.is_not_found() {
                    Ok(None)
                } else {
                    Err(err)
                }
            }
        }
    }

    /// All links in this handle's namespace.
    pub async fn links(&self) -> Result<Vec<Link>> {
        const OP: Op = "list links";
        self.handle
            .link()
            .get()
            .execute()
            .map_ok(|msg| link_from_message(&msg))
            .try_collect()
            .await
            .map_err(|e| Error::from_rtnl(OP, "all", e))
    }

    /// The index of link `name`, or [`Error::LinkNotFound`] naming `op`.
    pub(crate) async fn index_of(&self, op: Op, name: &str) -> Result<u32> {
        check_ifname(op, name)?;
        match self.link(name).await? {
            Some(link) => Ok(link.index),
            None => Err(Error::LinkNotFound {
                op,
                name: name.to_string(),
            }),
        }
    }

    /// Creates a bridge (left down; call [`Netlink::set_up`]). Returns its index.
    /// Fails with `EEXIST` ([`Error::is_exists`]) if the name is taken.
    pub async fn create_bridge(&self, name: &str, mtu_bytes: u32) -> Result<u32> {
        const OP: Op = "create bridge";
        check_ifname(OP, name)?;
        let msg = LinkMessageBuilder::<LinkBridge>::new(name)
            .mtu(mtu_bytes)
            .build();
        self.add_link(OP, name, msg).await?;
        self.index_of(OP, name).await
    }

    /// Creates a veth pair `name` <-> `peer`, both in this namespace and down.
    /// Returns the index of `name`. Move `peer` on with [`Netlink::move_to_netns`].
    pub async fn create_veth(&self, name: &str, peer: &str, mtu_bytes: u32) -> Result<u32> {
        const OP: Op = "create veth";
        check_ifname(OP, name)?;
        check_ifname(OP, peer)?;
        let peer_msg = LinkUnspec::new_with_name(peer).mtu(mtu_bytes).build();
        let msg = LinkMessageBuilder::<LinkVeth>::new(name, peer)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
            .mtu(mtu_bytes)
            .build();
        self.add_link(OP, name, msg).await?;
        self.index_of(OP, name).await
    }

    /// Moves link `name` into the network namespace at `netns`
    /// (`/var/run/netns/NAME` or `/proc/PID/ns/net`), renaming it to `new_name`
    /// there (e.g. `ethwe`) in the same atomic kernel operation. The link keeps
    /// its MTU and MAC but arrives down and without addresses; configure it with
    /// a handle from [`Netlink::in_netns`].
    pub async fn move_to_netns(
        &self,
        name: &str,
        netns: impl AsRef<Path>,
        new_name: Option<&str>,
    ) -> Result<()> {
        const OP: Op = "move link to netns";
        if let Some(new_name) = new_name {
            check_ifname(OP, new_name)?;
        }
        let index = self.index_of(OP, name).await?;
        // The file stays open until the kernel has answered.
        let ns = NetnsFile::open(netns)?;
        let mut builder = LinkUnspec::new_with_index(index).setns_by_fd(ns.fd());
        if let Some(new_name) = new_name {
            builder = builder.name(new_name);
        }
        let target = format!("{name} -> {}", ns.path().display());
        self.set_link(OP, &target, builder.build()).await
    }

    /// Sets the MTU of link `name`.
    pub async fn set_mtu(&self, name: &str, mtu_bytes: u32) -> Result<()> {
        self.change_link("set mtu", name, |l| l.mtu(mtu_bytes))
            .await
    }

    /// Brings link `name` administratively up.
    pub async fn set_up(&self, name: &str) -> Result<()> {
        self.change_link("set link up", name, LinkMessageBuilder::up)
            .await
    }

    /// Brings link `name` administratively down.
    pub async fn set_down(&self, name: &str) -> Result<()> {
        self.change_link("set link down", name, LinkMessageBuilder::down)
            .await
    }

    /// Sets the hardware address of link `name` (weft gives its bridge a stable MAC).
    pub async fn set_mac(&self, name: &str, mac: MacAddr) -> Result<()> {
        self.change_link("set mac", name, |l| l.address(mac.0.to_vec()))
            .await
    }

    /// Enslaves link `name` to bridge `bridge` (`ip link set NAME master BRIDGE`).
    pub async fn set_master(&self, name: &str, bridge: &str) -> Result<()> {
        const OP: Op = "enslave link";
        let index = self.index_of(OP, name).await?;
        let master = self.index_of(OP, bridge).await?;
        let target = format!("{name} to {bridge}");
        self.set_link(
            OP,
            &target,
            LinkUnspec::new_with_index(index).controller(master).build(),
        )
        .await
    }

    /// Releases link `name` from its bridge (`ip link set NAME nomaster`).
    pub async fn set_nomaster(&self, name: &str) -> Result<()> {
        self.change_link("release link", name, LinkMessageBuilder::nocontroller)
            .await
    }

    /// Deletes link `name` (for a veth, both ends go). Errors with
    /// [`Error::is_not_found`] if it does not exist.
    pub async fn delete_link(&self, name: &str) -> Result<()> {
        const OP: Op = "delete link";
        let index = self.index_of(OP, name).await?;
        acked(OP, name, self.handle.link().del(index).execute()).await
    }

    pub(crate) async fn add_link(&self, op: Op, name: &str, msg: LinkMessage) -> Result<()> {
        acked(op, name, self.handle.link().add(msg).execute()).await
    }

    /// Marks bridge port `name` isolated (or not): isolated ports exchange frames only
    /// with non-isolated ones (`ip link set NAME type bridge_slave isolated on`).
    pub async fn set_port_isolated(&self, name: &str, isolated: bool) -> Result<()> {
        self.set_bridge_port("set bridge port isolation", name, |p| {
            p.append_info_data(InfoBridgePort::Isolated(isolated))
        })
        .await
    }

    /// Sets hairpin mode on bridge port `name`: frames may leave by the port they came
    /// in (`ip link set NAME type bridge_slave hairpin on`), so a container reaches itself
    /// through a host NAT (a chained portmap).
    pub async fn set_port_hairpin(&self, name: &str, on: bool) -> Result<()> {
        self.set_bridge_port("set bridge port hairpin", name, |p| {
            p.append_info_data(InfoBridgePort::HairpinMode(on))
        })
        .await
    }

    /// Forgets the MAC addresses the bridge learned on port `name`
    /// (`ip link set NAME type bridge_slave fdb_flush`).
    pub async fn flush_port_fdb(&self, name: &str) -> Result<()> {
        self.set_bridge_port("flush bridge port fdb", name, |p| p.fdb_flush())
            .await
    }

    /// Sends one bridge-port setting for link `name`, built by `build`.
    async fn set_bridge_port(
        &self,
        op: Op,
        name: &str,
        build: impl FnOnce(LinkMessageBuilder<LinkBridgePort>) -> LinkMessageBuilder<LinkBridgePort>,
    ) -> Result<()> {
        let index = self.index_of(op, name).await?;
        let msg = build(LinkBridgePort::new(index)).build();
        acked(op, name, self.handle.link().set_port(msg).execute()).await
    }

    /// Looks link `name` up and applies `change` to it; errors say `op`.
    async fn change_link(
        &self,
        op: Op,
        name: &str,
        change: impl FnOnce(Unspec) -> Unspec,
    ) -> Result<()> {
        let index = self.index_of(op, name).await?;
        let msg = change(LinkUnspec::new_with_index(index)).build();
        self.set_link(op, name, msg).await
    }

    async fn set_link(&self, op: Op, target: &str, msg: LinkMessage) -> Result<()> {
        acked(op, target, self.handle.link().set(msg).execute()).await
    }
}

/// A change to an existing link, by index.
type Unspec = LinkMessageBuilder<LinkUnspec>;

/// Waits for the kernel's answer to one request; an error names `op` and `target`.
async fn acked(
    op: Op,
    target: &str,
    request: impl Future<Output = std::result::Result<(), rtnetlink::Error>>,
) -> Result<()> {
    request.await.map_err(|e| Error::from_rtnl(op, target, e))
}

fn link_from_message(msg: &LinkMessage) -> Link {
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        mtu_bytes: 0,
        mac: None,
        up: msg.header.flags.contains(LinkFlags::Up),
        master_index: None,
        kind: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(name) => link.name.clone_from(name),
            LinkAttribute::Mtu(mtu) => link.mtu_bytes = *mtu,
            LinkAttribute::Address(bytes) => link.mac = MacAddr::from_slice(bytes),
            LinkAttribute::Controller(index) if *index != 0 => link.master_index = Some(*index),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(kind) = info {
                        link.kind = Some(kind.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    link
}
