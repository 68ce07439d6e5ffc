//! Shared setup for the root tests: a weft-like host (bridge `weft` plus,
//! optionally, a VXLAN port) and containers plugged into it, all built with the
//! library under test; observed with `ip`/`bridge` run inside the namespaces.
#![allow(dead_code, unreachable_pub)]

use std::net::{IpAddr, Ipv4Addr};

use weft_kernel_dp::{
    IpCidr, MacAddr, Netlink, VxlanConfig,
    testnet::{Ns, TestNet, require_root},
};

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A fresh test network, or `None` (the reason printed) where root tests cannot run.
pub fn root_net() -> std::io::Result<Option<TestNet>> {
    if require_root().is_some() {
        return Ok(None);
    }
    TestNet::new().map(Some)
}

pub const BRIDGE: &str = "weft";
pub const VXLAN: &str = "vxlan-6784";
pub const VNI: u32 = 0x5eed;
pub const MTU_BYTES: u32 = 1400;

/// Builds the bridge in `host` and brings it up; returns a handle in `host`.
pub async fn weft_bridge(host: &Ns) -> Result<Netlink, weft_kernel_dp::Error> {
    let nl = Netlink::in_netns(host.path())?;
    nl.create_bridge(BRIDGE, MTU_BYTES).await?;
    nl.set_up(BRIDGE).await?;
    Ok(nl)
}

/// Adds the VXLAN fast-path port (local = the host's underlay address) to the bridge.
pub async fn vxlan_port(nl: &Netlink, local: Ipv4Addr) -> Result<u32, weft_kernel_dp::Error> {
    let mut cfg = VxlanConfig::new(VXLAN, VNI);
    cfg.local = Some(local.into());
    cfg.mtu_bytes = Some(MTU_BYTES);
    let index = nl.create_vxlan(&cfg).await?;
    nl.set_master(VXLAN, BRIDGE).await?;
    nl.set_up(VXLAN).await?;
    Ok(index)
}

/// Plugs `container` into the bridge of `host` the way weft attaches a
/// container: veth made in the host, one end moved into the container and
/// renamed `ethwe`, the other enslaved; address on `ethwe`. Returns ethwe's MAC.
pub async fn plug(
    host_nl: &Netlink,
    container: &Ns,
    tag: &str,
    addr: IpCidr,
) -> Result<MacAddr, weft_kernel_dp::Error> {
    let host_end = format!("vethwl{tag}");
    let temp_end = format!("vethwg{tag}");
    host_nl.create_veth(&host_end, &temp_end, MTU_BYTES).await?;
    host_nl
        .move_to_netns(&temp_end, container.path(), Some("ethwe"))
        .await?;
    host_nl.set_master(&host_end, BRIDGE).await?;
    host_nl.set_up(&host_end).await?;

    let cnl = Netlink::in_netns(container.path())?;
    cnl.set_up("ethwe").await?;
    cnl.add_address("ethwe", addr).await?;
    let link = cnl
        .link("ethwe")
        .await?
        .expect("ethwe exists after the move");
    Ok(link.mac.expect("veth has a MAC"))
}

pub fn cidr(s: &str) -> IpCidr {
    s.parse().expect("test CIDR")
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("test IP")
}
