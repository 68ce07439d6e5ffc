//! Address and route operations on links named in the handle's namespace.

use std::net::IpAddr;

use futures::TryStreamExt;
use netlink_packet_route::{
    address::{AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage},
    route::{RouteAddress, RouteAttribute, RouteScope, RouteType},
};
use rtnetlink::RouteMessageBuilder;

use crate::{Error, IpCidr, Netlink, Result, error::Op};

impl Netlink {
    /// Adds `addr` (with its prefix route) to link `link`. IPv6 addresses are
    /// added with `nodad`: weft's IPAM already guarantees uniqueness, and DAD
    /// would hold the address unusable ("tentative") for a second or more.
    /// Fails with `EEXIST` if the address is already there.
    pub async fn add_address(&self, link: &str, addr: IpCidr) -> Result<()> {
        const OP: Op = "add address";
        let index = self.index_of(OP, link).await?;
        let mut req = self.handle.address().add(index, addr.addr, addr.prefix_len);
        if addr.addr.is_ipv6() {
            let msg = req.message_mut();
            msg.header.flags |= AddressHeaderFlags::Nodad;
            msg.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        req.execute()
            .await
            .map_err(|e| Error::from_rtnl(OP, format!("{addr} on {link}"), e))
    }

    /// Removes `addr` from link `link`; `EADDRNOTAVAIL` if it is not there.
    pub async fn del_address(&self, link: &str, addr: IpCidr) -> Result<()> {
        const OP: Op = "delete address";
        let index = self.index_of(OP, link).await?;
        let target = format!("{addr} on {link}");
        let found: Vec<AddressMessage> = self
            .address_messages(OP, index, &target)
            .await?
            .into_iter()
            .filter(|m| m.header.prefix_len == addr.prefix_len && address_of(m) == Some(addr.addr))
            .collect();
        if found.is_empty() {
            return Err(Error::Kernel {
                op: OP,
                target,
                errno: libc::EADDRNOTAVAIL,
            });
        }
        for msg in found {
            self.handle
                .address()
                .del(msg)
                .execute()
                .await
                .map_err(|e| Error::from_rtnl(OP, target.clone(), e))?;
        }
        Ok(())
    }

    /// The addresses on link `link` (IPv4 and IPv6, link-local included).
    pub async fn addresses(&self, link: &str) -> Result<Vec<IpCidr>> {
        const OP: Op = "list addresses";
        let index = self.index_of(OP, link).await?;
        Ok(self
            .address_messages(OP, index, link)
            .await?
            .iter()
            .filter_map(|m| {
                address_of(m).map(|addr| IpCidr {
                    addr,
                    prefix_len: m.header.prefix_len,
                })
            })
            .collect())
    }

    async fn address_messages(
        &self,
        op: Op,
        index: u32,
        target: &str,
    ) -> Result<Vec<AddressMessage>> {
        self.handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(|e| Error::from_rtnl(op, target, e))
    }

    /// The IPv4 routes of the main table out of link `dev`: destination and gateway
    /// (`None`: on link).
    pub async fn routes_v4(&self, dev: &str) -> Result<Vec<(IpCidr, Option<IpAddr>)>> {
        const OP: Op = "list routes";
        let index = self.index_of(OP, dev).await?;
        let msgs: Vec<_> = self
            .handle
            .route()
            .get(RouteMessageBuilder::<std::net::Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(|e| Error::from_rtnl(OP, dev.to_owned(), e))?;
        let inet = |a: &RouteAddress| match a {
            RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
            _ => None,
        };
        Ok(msgs
            .iter()
            .filter(|m| m.header.table == libc::RT_TABLE_MAIN)
            .filter(|m| {
                m.attributes
                    .iter()
                    .any(|a| matches!(a, RouteAttribute::Oif(i) if *i == index))
            })
            .map(|m| {
                let mut dest = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
                let mut gw = None;
                for a in &m.attributes {
                    match a {
                        RouteAttribute::Destination(d) => dest = inet(d).unwrap_or(dest),
                        RouteAttribute::Gateway(g) => gw = inet(g),
                        _ => {}
                    }
                }
                let cidr = IpCidr {
                    addr: dest,
                    prefix_len: m.header.destination_prefix_length,
                };
                (cidr, gw)
            })
            .collect())
    }

    /// Adds a route to `dest` in the main table: via gateway `via`, out of link
    /// `dev`, or both. A route with no gateway gets scope link, as `ip route` does.
    pub async fn add_route(
        &self,
        dest: IpCidr,
        via: Option<IpAddr>,
        dev: Option<&str>,
    ) -> Result<()> {
        const OP: Op = "add route";
        let target = route_target(dest, via, dev);
        let invalid = |what: &'static str| Error::InvalidArgument {
            op: OP,
            what,
            value: target.clone(),
        };
        if via.is_none() && dev.is_none() {
            return Err(invalid("route (needs a gateway or a device)"));
        }
        if via.is_some_and(|v| v.is_ipv4() != dest.addr.is_ipv4()) {
            return Err(invalid("route (gateway and destination differ in family)"));
        }
        let mut builder = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(dest.addr, dest.prefix_len)
            .map_err(|_| invalid("destination"))?
            .kind(RouteType::Unicast);
        if let Some(via) = via {
            builder = builder.gateway(via).map_err(|_| invalid("gateway"))?;
        } else {
            builder = builder.scope(RouteScope::Link);
        }
        if let Some(dev) = dev {
            builder = builder.output_interface(self.index_of(OP, dev).await?);
        }
        self.handle
            .route()
            .add(builder.build())
            .execute()
            .await
            .map_err(|e| Error::from_rtnl(OP, target, e))
    }
}

fn route_target(dest: IpCidr, via: Option<IpAddr>, dev: Option<&str>) -> String {
    let mut s = dest.to_string();
    if let Some(via) = via {
        s.push_str(&format!(" via {via}"));
    }
    if let Some(dev) = dev {
        s.push_str(&format!(" dev {dev}"));
    }
    s
}

/// The interface's own address: IFA_LOCAL for IPv4 (IFA_ADDRESS is the peer on
/// point-to-point links), IFA_ADDRESS for IPv6.
fn address_of(msg: &AddressMessage) -> Option<IpAddr> {
    let mut address = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(ip) => return Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            _ => {}
        }
    }
    address
}
