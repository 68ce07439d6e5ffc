//! The router as the Docker plugin sees it, in memory: IPAM, exposed addresses, veths,
//! DNS names and the firewall's networks, recording every call. For the plugin's unit
//! tests and its fuzz target (`weft::fuzzing::docker_plugin`).

use super::backend::Backend;
use super::{PluginError, Want};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use weft_core::ipam::Cidr as V4Cidr;

/// The router as the plugin sees it, in memory.
#[derive(Default)]
pub(crate) struct Fake {
    /// Address -> owner.
    pub(crate) ipam: Mutex<BTreeMap<Ipv4Addr, String>>,
    pub(crate) exposed: Mutex<BTreeSet<String>>,
    /// Host ifname -> (src ifname, Docker's namespace).
    pub(crate) veths: Mutex<BTreeMap<String, (String, PathBuf)>>,
    /// The firewall's networks, as last set.
    pub(crate) outbound: Mutex<Vec<crate::firewall::DockerNet>>,
    /// weftDNS: (tag, name) -> address.
    pub(crate) dns: Mutex<BTreeMap<(String, String), Ipv4Addr>>,
    /// The next call of this name fails.
    pub(crate) fail: Mutex<Option<&'static str>>,
    /// Every call, in order.
    pub(crate) log: Mutex<Vec<String>>,
    /// The pods network policy was last given.
    pub(crate) pods: Mutex<BTreeMap<String, crate::policy::pods::LocalPort>>,
}

impl Fake {
    fn enter(&self, call: &'static str, what: String) -> Result<(), PluginError> {
        self.log.lock().unwrap().push(format!("{call} {what}"));
        let mut f = self.fail.lock().unwrap();
        if *f == Some(call) {
            *f = None;
            return Err(PluginError::Failed(format!("{call} failed (injected)")));
        }
        Ok(())
    }

    /// The subnets the firewall was last given.
    #[cfg(test)]
    pub(crate) fn outbound_subnets(&self) -> Vec<String> {
        let nets = self.outbound.lock().unwrap();
        nets.iter().map(|n| n.subnet.to_string()).collect()
    }

    #[cfg(test)]
    pub(crate) fn owner(&self, a: &str) -> Option<String> {
        self.ipam.lock().unwrap().get(&a.parse().unwrap()).cloned()
    }
}

impl Backend for Arc<Fake> {
    fn policy_pods(&self, pods: BTreeMap<String, crate::policy::pods::LocalPort>) {
        *self.pods.lock().unwrap() = pods;
    }

    async fn ipam_take(&self, owner: &str, want: Want) -> Result<V4Cidr, PluginError> {
        self.enter("ipam_take", format!("{owner} {want:?}"))?;
        let mut ipam = self.ipam.lock().unwrap();
        match want {
            Want::Addr(c) => match ipam.get(&c.addr) {
                Some(o) if o != owner => Err(PluginError::InUse(format!("{} in use", c.addr))),
                _ => {
                    ipam.insert(c.addr, owner.to_owned());
                    Ok(c)
                }
            },
            Want::Any(block) => {
                // The owner's address in the block again, else the lowest free one.
                if let Some((a, _)) = ipam
                    .iter()
                    .find(|(a, o)| *o == owner && block.contains(a.to_bits()))
                {
                    return Ok(V4Cidr {
                        addr: *a,
                        prefix_len: block.prefix_len,
                    });
                }
                let base = block.network().addr.to_bits();
                let a = (1..1024u32)
                    .map(|i| Ipv4Addr::from_bits(base + i))
                    .find(|a| !ipam.contains_key(a))
                    .ok_or_else(|| PluginError::Failed("range full".into()))?;
                ipam.insert(a, owner.to_owned());
                Ok(V4Cidr {
                    addr: a,
                    prefix_len: block.prefix_len,
                })
            }
        }
    }

    async fn ipam_free(&self, owner: &str, addr: Ipv4Addr) -> Result<(), PluginError> {
        self.enter("ipam_free", format!("{owner} {addr}"))?;
        let mut ipam = self.ipam.lock().unwrap();
        if ipam.get(&addr).is_some_and(|o| o == owner) {
            ipam.remove(&addr);
        }
        Ok(())
    }

    async fn ipam_transfer(&self, from: &str, to: &str, addr: Ipv4Addr) -> Result<(), PluginError> {
        self.enter("ipam_transfer", format!("{from} {to} {addr}"))?;
        let mut ipam = self.ipam.lock().unwrap();
        match ipam.get(&addr) {
            Some(o) if o == to => Ok(()),
            Some(o) if o == from => {
                ipam.insert(addr, to.to_owned());
                Ok(())
            }
            _ => Err(PluginError::Failed(format!("{addr} not held by {from}"))),
        }
    }

    async fn expose(&self, address: V4Cidr) -> Result<(), PluginError> {
        self.enter("expose", address.to_string())?;
        self.exposed.lock().unwrap().insert(address.to_string());
        Ok(())
    }

    async fn unexpose(&self, address: V4Cidr) -> Result<(), PluginError> {
        self.enter("unexpose", address.to_string())?;
        self.exposed.lock().unwrap().remove(&address.to_string());
        Ok(())
    }

    async fn set_outbound(&self, nets: Vec<crate::firewall::DockerNet>) -> Result<(), PluginError> {
        self.enter("set_outbound", format!("{nets:?}"))?;
        *self.outbound.lock().unwrap() = nets;
        Ok(())
    }

    async fn dns_add(&self, tag: &str, name: &str, addr: Ipv4Addr) -> Result<(), PluginError> {
        self.enter("dns_add", format!("{tag} {name} {addr}"))?;
        if name.contains(' ') {
            return Err(PluginError::BadRequest(format!("bad name {name:?}")));
        }
        self.dns
            .lock()
            .unwrap()
            .insert((tag.to_owned(), name.to_owned()), addr);
        Ok(())
    }

    async fn dns_remove(&self, tag: &str) -> Result<(), PluginError> {
        self.enter("dns_remove", tag.to_owned())?;
        self.dns.lock().unwrap().retain(|(t, _), _| t != tag);
        Ok(())
    }

    async fn veth_add(
        &self,
        host: &str,
        src: &str,
        docker_netns: &Path,
    ) -> Result<(), PluginError> {
        self.enter("veth_add", format!("{host} {src}"))?;
        self.veths.lock().unwrap().insert(
            host.to_owned(),
            (src.to_owned(), docker_netns.to_path_buf()),
        );
        Ok(())
    }

    async fn veth_remove(&self, host: &str, src: &str, _: &Path) -> Result<(), PluginError> {
        self.enter("veth_remove", format!("{host} {src}"))?;
        self.veths.lock().unwrap().remove(host);
        Ok(())
    }
}
