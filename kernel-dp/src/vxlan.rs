//! The fast datapath without openvswitch: a VXLAN device enslaved to the weft
//! bridge, steered by static FDB entries (MAC -> remote peer IP) and all-zero
//! flood entries (one per peer, appended), all over rtnetlink.
//!
//! Learning is off: weft's control plane knows every MAC and peer, so the
//! kernel never has to guess from received packets, and a stale learned entry
//! cannot outlive a peer.

use std::net::IpAddr;

use futures::TryStreamExt;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkMessage,
};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    neighbour::{
        NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
    },
};
use rtnetlink::{LinkMessageBuilder, LinkVxlan};

use crate::{Error, MacAddr, Netlink, Result, error::Op, netlink::check_ifname};

/// weft's fast-datapath UDP port (`WEFT_PORT` + 1 in general).
pub const FASTDP_PORT_DEFAULT: u16 = 6784;

/// How to create a VXLAN device; see [`Netlink::create_vxlan`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VxlanConfig {
    /// Device name, e.g. `vxlan-6784`.
    pub name: String,
    /// VXLAN network identifier (24 bits).
    pub vni: u32,
    /// UDP destination port, and the port the device listens on.
    pub dst_port: u16,
    /// Source address of the outer packets; `None` lets routing choose.
    pub local: Option<IpAddr>,
    /// Underlay device to bind to (`dev`); `None` for any.
    pub underlay_dev: Option<String>,
    /// MTU; `None` leaves the kernel's default (underlay MTU - 50, or 1450).
    pub mtu_bytes: Option<u32>,
}

impl VxlanConfig {
    /// A config with weft's defaults: port [`FASTDP_PORT_DEFAULT`], no local
    /// address, no underlay device, default MTU.
    pub fn new(name: impl Into<String>, vni: u32) -> Self {
        Self {
            name: name.into(),
            vni,
            dst_port: FASTDP_PORT_DEFAULT,
            local: None,
            underlay_dev: None,
            mtu_bytes: None,
        }
    }
}

/// One forwarding entry as `bridge fdb show` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FdbEntry {
    /// The MAC; [`MacAddr::ZERO`] for flood entries.
    pub mac: MacAddr,
    /// The remote (outer) destination, for VXLAN entries.
    pub dst: Option<IpAddr>,
    /// Static entry (`NUD_PERMANENT`), as all of weft's are.
    pub permanent: bool,
    /// The device's own table (`NTF_SELF`), as opposed to the bridge's (`master`).
    pub is_self: bool,
    /// VNI, when the entry carries one.
    pub vni: Option<u32>,
}

/// VNIs are 24 bits.
pub const VNI_MAX: u32 = (1 << 24) - 1;

impl Netlink {
    /// Creates a VXLAN device (down, learning off, no multicast group). Returns
    /// its index. Enslave it with [`Netlink::set_master`] and bring it up.
    pub async fn create_vxlan(&self, config: &VxlanConfig) -> Result<u32> {
        const OP: Op = "create vxlan";
        check_ifname(OP, &config.name)?;
        if config.vni > VNI_MAX {
            return Err(Error::InvalidArgument {
                op: OP,
                what: "VNI (24 bits)",
                value: config.vni.to_string(),
            });
        }
        let mut builder = LinkMessageBuilder::<LinkVxlan>::new(&config.name)
            .id(config.vni)
            .port(config.dst_port)
            .learning(false);
        match config.local {
            Some(IpAddr::V4(v4)) => builder = builder.local(v4),
            Some(IpAddr::V6(v6)) => builder = builder.local6(v6),
            None => {}
        }
        if let Some(dev) = &config.underlay_dev {
            builder = builder.dev(self.index_of(OP, dev).await?);
        }
        if let Some(mtu) = config.mtu_bytes {
            builder = builder.mtu(mtu);
        }
        self.add_link(OP, &config.name, builder.build()).await?;
        self.index_of(OP, &config.name).await
    }

    /// Points unicast `mac` at remote peer `dst` on VXLAN device `dev`
    /// (`bridge fdb replace MAC dev DEV dst DST self permanent`). Replaces an
    /// existing entry for `mac`, so a MAC that moved to another peer just moves.
    pub async fn fdb_add(&self, dev: &str, mac: MacAddr, dst: IpAddr) -> Result<()> {
        const OP: Op = "add fdb entry";
        let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
        self.fdb_new(OP, dev, mac, dst, flags).await
    }

    /// Adds peer `dst` to the all-zero flood entry of VXLAN device `dev`
    /// (`bridge fdb append 00:00:00:00:00:00 dev DEV dst DST self permanent`):
    /// broadcast, multicast and unknown unicast go to every peer so added.
    /// Idempotent: appending a peer already there succeeds and changes nothing.
    pub async fn fdb_append_flood(&self, dev: &str, dst: IpAddr) -> Result<()> {
        const OP: Op = "append flood entry";
        let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND;
        self.fdb_new(OP, dev, MacAddr::ZERO, dst, flags).await
    }

    /// Removes `mac`'s entry on `dev`: only the remote `dst` when given (for the
    /// flood entry: one peer, leaving the others), else the whole entry.
    /// `ENOENT` if there is no such entry.
    pub async fn fdb_del(&self, dev: &str, mac: MacAddr, dst: Option<IpAddr>) -> Result<()> {
        const OP: Op = "delete fdb entry";
        let index = self.index_of(OP, dev).await?;
        let mut msg = fdb_message(index, mac);
        if let Some(dst) = dst {
            msg.attributes
                .push(NeighbourAttribute::Destination(neighbour_address(dst)));
        }
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::DelNeighbour(msg));
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK;
        let target = fdb_target(dev, mac, dst);
        self.request_ack(OP, &target, req).await
    }

    /// Every FDB entry of device `dev`: its own (`self`, with `dst` for VXLAN)
    /// and, when it is a bridge port, the bridge's entries for it (`master`).
    pub async fn fdb_entries(&self, dev: &str) -> Result<Vec<FdbEntry>> {
        const OP: Op = "list fdb entries";
        let index = self.index_of(OP, dev).await?;
        let messages: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge)
            .execute()
            .try_collect()
            .await
            .map_err(|e| Error::from_rtnl(OP, dev, e))?;
        Ok(messages
            .iter()
            .filter(|m| m.header.ifindex == index)
            .filter_map(fdb_entry)
            .collect())
    }

    async fn fdb_new(
        &self,
        op: Op,
        dev: &str,
        mac: MacAddr,
        dst: IpAddr,
        nlm_flags: u16,
    ) -> Result<()> {
        let index = self.index_of(op, dev).await?;
        let mut msg = fdb_message(index, mac);
        msg.attributes
            .push(NeighbourAttribute::Destination(neighbour_address(dst)));
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewNeighbour(msg));
        req.header.flags = nlm_flags;
        let target = fdb_target(dev, mac, Some(dst));
        self.request_ack(op, &target, req).await
    }
}

/// The header every weft FDB request carries. `NTF_SELF` is essential: without
/// it the kernel sends the request for a bridge port (our VXLAN device is one)
/// to the *bridge's* FDB, which has no notion of a remote `dst`.
fn fdb_message(index: u32, mac: MacAddr) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Bridge;
    msg.header.ifindex = index;
    msg.header.state = NeighbourState::Permanent;
    msg.header.flags = NeighbourFlags::Own;
    msg.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
    msg
}

fn neighbour_address(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
        IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
    }
}

fn fdb_target(dev: &str, mac: MacAddr, dst: Option<IpAddr>) -> String {
    match dst {
        Some(dst) => format!("{mac} dst {dst} on {dev}"),
        None => format!("{mac} on {dev}"),
    }
}

/// The remote address of an FDB entry. The parser decodes `NDA_DST` by the
/// message's family, and for `AF_BRIDGE` that is neither v4 nor v6: the
/// address arrives as raw bytes, 4 or 16 of them.
fn ip_of(addr: &NeighbourAddress) -> Option<IpAddr> {
    match addr {
        NeighbourAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        NeighbourAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        NeighbourAddress::Other(bytes) => match bytes.len() {
            4 => <[u8; 4]>::try_from(bytes.as_slice()).ok().map(IpAddr::from),
            16 => <[u8; 16]>::try_from(bytes.as_slice())
                .ok()
                .map(IpAddr::from),
            _ => None,
        },
        _ => None,
    }
}

fn fdb_entry(msg: &NeighbourMessage) -> Option<FdbEntry> {
    let mut mac = None;
    let mut dst = None;
    let mut vni = None;
    for attr in &msg.attributes {
        match attr {
            NeighbourAttribute::LinkLayerAddress(bytes) => mac = MacAddr::from_slice(bytes),
            NeighbourAttribute::Destination(addr) => dst = ip_of(addr),
            NeighbourAttribute::Vni(v) => vni = Some(*v),
            _ => {}
        }
    }
    Some(FdbEntry {
        mac: mac?,
        dst,
        permanent: msg.header.state == NeighbourState::Permanent,
        is_self: msg.header.flags.contains(NeighbourFlags::Own),
        vni,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdb_requests_target_the_device_not_the_bridge() {
        let msg = fdb_message(7, MacAddr::ZERO);
        assert_eq!(msg.header.family, AddressFamily::Bridge);
        assert!(msg.header.flags.contains(NeighbourFlags::Own));
        assert!(!msg.header.flags.contains(NeighbourFlags::Controller));
        assert_eq!(msg.header.state, NeighbourState::Permanent);
        assert_eq!(msg.header.ifindex, 7);
    }

    #[test]
    fn fdb_entry_parses_back_what_we_send() {
        let mut msg = fdb_message(3, "02:00:00:00:00:01".parse().unwrap());
        msg.attributes
            .push(NeighbourAttribute::Destination(neighbour_address(
                "192.0.2.9".parse().unwrap(),
            )));
        let entry = fdb_entry(&msg).unwrap();
        assert_eq!(entry.mac.to_string(), "02:00:00:00:00:01");
        assert_eq!(entry.dst, Some("192.0.2.9".parse().unwrap()));
        assert!(entry.permanent && entry.is_self);
    }

    #[test]
    fn bridge_family_destinations_arrive_as_raw_bytes() {
        let v4 = NeighbourAddress::Other(vec![198, 18, 0, 2]);
        assert_eq!(ip_of(&v4), Some("198.18.0.2".parse().unwrap()));
        let mut v6 = vec![0u8; 16];
        v6[0] = 0xfd;
        v6[15] = 1;
        assert_eq!(
            ip_of(&NeighbourAddress::Other(v6)),
            Some("fd00::1".parse().unwrap())
        );
        assert_eq!(ip_of(&NeighbourAddress::Other(vec![1, 2, 3])), None);
    }

    #[test]
    fn config_defaults_to_weft_port() {
        let c = VxlanConfig::new("vx", 42);
        assert_eq!(c.dst_port, 6784);
        assert_eq!(c.local, None);
    }
}
