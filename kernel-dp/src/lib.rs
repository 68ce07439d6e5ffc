//! weft's kernel fast datapath, programmed over rtnetlink.
//!
//! What it does: gives the host daemon one async [`Netlink`] handle per network
//! namespace with the operations weft needs: bridges, veth pairs moved (and
//! renamed) into container namespaces, MTU/up/down, enslaving, addresses,
//! routes, and the fast path itself: a VXLAN device on the bridge steered by
//! static FDB entries ([`Netlink::fdb_add`]) and all-zero flood entries
//! ([`Netlink::fdb_append_flood`]). [`ovs_datapath_available`] says whether the
//! openvswitch datapath exists (it does not on the machines we test on).
//!
//! What it does not do: decide anything. Which MAC lives behind which peer,
//! when a peer falls back to sleeve, which addresses a container gets: that is
//! `weft-core`'s job, and the host turns its events into calls here. It never
//! shells out to `ip`; only the optional `testnet` harness does.
//!
//! Namespaces: [`Netlink::in_netns`] opens a socket *inside* another namespace
//! from a dedicated short-lived thread (see [`netns`] for why that is safe).

mod addr;
mod error;
mod link;
mod netlink;
pub mod netns;
mod ovs;
mod types;
mod vxlan;

#[cfg(feature = "testnet")]
pub mod testnet;

pub use error::{Error, Op, Result};
pub use netlink::{IFNAME_LEN_MAX, Netlink};
pub use netns::{NetnsFile, run_in_netns};
pub use ovs::{OVS_DATAPATH_FAMILY, genl_family_exists, ovs_datapath_available};
pub use types::{IpCidr, Link, MacAddr, ParseError};
pub use vxlan::{FASTDP_PORT_DEFAULT, FdbEntry, VNI_MAX, VxlanConfig};
