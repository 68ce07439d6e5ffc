//! What the plugin handed out to Docker, kept in `docker-plugin.json` in the state dir:
//! pools, addresses (and who owns each in weft IPAM), networks and endpoints.
//!
//! Docker neither replays calls after the plugin restarts nor calls `Plugin.Activate`
//! again, so this file is the plugin's whole memory. Every handler changes a copy,
//! writes it ([`Store::commit`], atomic) and only then answers; a failed write leaves
//! the state as it was and Docker gets an error.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use weft_core::ipam::Cidr as V4Cidr;

/// The file in the state dir.
pub(crate) const STATE_FILE: &str = "docker-plugin.json";
/// Format version of the file; another version is refused, not guessed at.
pub(crate) const STATE_VERSION: u32 = 1;
/// Largest file read, in bytes.
pub(crate) const STATE_FILE_LEN_MAX: u64 = 16 * 1024 * 1024;
/// Most networks, endpoints, pools and addresses each (Docker's calls beyond are refused).
pub(crate) const OBJECTS_MAX: usize = 8192;
/// Endpoint ids remembered after `DeleteEndpoint`, so that a repeat is answered `{}`.
pub(crate) const DELETED_REMEMBERED_MAX: usize = 256;

/// A pool Docker asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Pool {
    /// The network's subnet.
    #[serde(with = "cidr_text")]
    pub(crate) pool: V4Cidr,
    /// Where addresses are allocated (`--ip-range`); the pool when absent.
    #[serde(
        default,
        with = "opt_cidr_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) sub_pool: Option<V4Cidr>,
    /// `RequestPool` calls not yet released (networks with the same `--subnet` share one).
    pub(crate) refs: u32,
    /// Carved from weft's range for a network without `--subnet`; its first address is
    /// reserved (as the gateway) from the start.
    #[serde(default)]
    pub(crate) carved: bool,
}

impl Pool {
    /// The block addresses of this pool are allocated in.
    pub(crate) fn alloc_block(&self) -> V4Cidr {
        self.sub_pool.unwrap_or(self.pool)
    }
}

/// An address given out by `RequestAddress`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Address {
    pub(crate) pool_id: String,
    /// The prefix length Docker was told (the pool's).
    pub(crate) prefix_len: u8,
    /// Its owner in weft IPAM: a reservation (`dk-r-…`, `dk-c-…`, `dk-g-…`) until
    /// `CreateEndpoint` hands it to the endpoint (`dk-e-…`).
    pub(crate) owner: String,
    /// Asked for as a network's gateway.
    #[serde(default)]
    pub(crate) gateway: bool,
    /// The endpoint it belongs to, once `CreateEndpoint` named it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) endpoint: Option<String>,
}

/// A network Docker created with this driver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Network {
    /// Its subnet.
    #[serde(with = "cidr_text")]
    pub(crate) subnet: V4Cidr,
    /// The host's address on the subnet, containers' default gateway (`None` on an
    /// `--internal` network).
    #[serde(
        default,
        with = "opt_cidr_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) gateway: Option<V4Cidr>,
    /// `docker network create --internal`.
    #[serde(default)]
    pub(crate) internal: bool,
    /// The gateway address IPAM gave Docker for it (also on an `--internal` network,
    /// which does not use it), by which its pool is found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ipam_gateway: Option<Ipv4Addr>,
}

/// An endpoint: one container's interface on one network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Endpoint {
    pub(crate) network_id: String,
    /// Its IPv4 address (from IPAM).
    #[serde(
        default,
        with = "opt_cidr_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) address: Option<V4Cidr>,
    /// The veth end on the bridge, in the router's namespace.
    pub(crate) host_ifname: String,
    /// The end Docker moves into the container, made in Docker's namespace.
    pub(crate) src_ifname: String,
    /// Between `Join` and `Leave`.
    #[serde(default)]
    pub(crate) joined: bool,
    /// The container's names in weftDNS while joined (its name, hostname, aliases).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) dns_names: Vec<String>,
    /// What network policy sees of the container: its labels, `weft.namespace`, named ports.
    #[serde(default, skip_serializing_if = "crate::state::PodMeta::is_empty")]
    pub(crate) pod: crate::state::PodMeta,
}

/// Everything in the file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PluginState {
    pub(crate) version: u32,
    /// By `PoolID`.
    #[serde(default)]
    pub(crate) pools: BTreeMap<String, Pool>,
    /// By address (weft IPAM owns each address once in its whole range).
    #[serde(default)]
    pub(crate) addresses: BTreeMap<Ipv4Addr, Address>,
    /// By `NetworkID`.
    #[serde(default)]
    pub(crate) networks: BTreeMap<String, Network>,
    /// By `EndpointID`.
    #[serde(default)]
    pub(crate) endpoints: BTreeMap<String, Endpoint>,
    /// Endpoints deleted lately, oldest first.
    #[serde(default)]
    pub(crate) deleted_endpoints: VecDeque<String>,
}

impl PluginState {
    /// The IPAM owners this state accounts for (every other `dk-` owner is a leftover).
    pub(crate) fn owners(&self) -> Vec<String> {
        self.addresses.values().map(|a| a.owner.clone()).collect()
    }

    /// Remembers that `id` was deleted (bounded).
    pub(crate) fn remember_deleted(&mut self, id: &str) {
        if self.deleted_endpoints.iter().any(|d| d == id) {
            return;
        }
        if self.deleted_endpoints.len() >= DELETED_REMEMBERED_MAX {
            self.deleted_endpoints.pop_front();
        }
        self.deleted_endpoints.push_back(id.to_owned());
    }

    /// Whether `id` was deleted lately.
    pub(crate) fn was_deleted(&self, id: &str) -> bool {
        self.deleted_endpoints.iter().any(|d| d == id)
    }
}

/// The state and where it is written.
#[derive(Debug)]
pub(crate) struct Store {
    path: PathBuf,
    state: PluginState,
}

impl Store {
    /// Loads the file at `path`; a missing file is an empty state.
    pub(crate) fn load(path: &Path) -> Result<Self> {
        let state = match crate::state::read_bounded(path, STATE_FILE_LEN_MAX)? {
            None => PluginState {
                version: STATE_VERSION,
                ..PluginState::default()
            },
            Some(bytes) => {
                let s: PluginState = serde_json::from_slice(&bytes).map_err(|e| {
                    Error::Other(format!(
                        "{}: not a weft Docker plugin state file ({e}); move it away to start with no Docker networks (Docker's networks on this driver must then be removed and made again)",
                        path.display()
                    ))
                })?;
                if s.version != STATE_VERSION {
                    return Err(Error::Other(format!(
                        "{}: version {} is not {STATE_VERSION}; move it away to start with no Docker networks",
                        path.display(),
                        s.version
                    )));
                }
                s
            }
        };
        Ok(Self {
            path: path.to_path_buf(),
            state,
        })
    }

    /// The state as it is on disk.
    pub(crate) fn get(&self) -> &PluginState {
        &self.state
    }

    /// Writes `next` atomically and makes it the state; on failure nothing changes.
    pub(crate) fn commit(&mut self, next: PluginState) -> Result<()> {
        if next == self.state {
            return Ok(());
        }
        let mut bytes = serde_json::to_vec_pretty(&next)
            .map_err(|e| Error::Other(format!("encode the Docker plugin state: {e}")))?;
        bytes.push(b'\n');
        crate::state::write_atomic(&self.path, &bytes)?;
        self.state = next;
        Ok(())
    }
}

/// A [`V4Cidr`] as `a.b.c.d/n` text.
mod cidr_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use weft_core::ipam::Cidr;

    pub(super) fn serialize<S: Serializer>(c: &Cidr, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(c)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(|e| serde::de::Error::custom(format!("bad CIDR: {e}")))
    }
}

/// An optional [`V4Cidr`] as `a.b.c.d/n` text.
mod opt_cidr_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use weft_core::ipam::Cidr;

    pub(super) fn serialize<S: Serializer>(c: &Option<Cidr>, s: S) -> Result<S::Ok, S::Error> {
        match c {
            Some(c) => s.collect_str(c),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Cidr>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| {
                t.parse()
                    .map_err(|e| serde::de::Error::custom(format!("bad CIDR: {e}")))
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("weft-docker-state-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn state_round_trips_and_a_bad_file_is_refused_with_advice() {
        let dir = tmp("rt");
        let path = dir.join(STATE_FILE);
        let mut store = Store::load(&path).unwrap();
        assert!(store.get().networks.is_empty());
        let mut next = store.get().clone();
        next.pools.insert(
            "weft-10.40.0.0/16".into(),
            Pool {
                pool: "10.40.0.0/16".parse().unwrap(),
                sub_pool: Some("10.40.1.0/24".parse().unwrap()),
                refs: 1,
                carved: false,
            },
        );
        next.addresses.insert(
            Ipv4Addr::new(10, 40, 1, 1),
            Address {
                pool_id: "weft-10.40.0.0/16".into(),
                prefix_len: 16,
                owner: "dk-g-0011".into(),
                gateway: true,
                endpoint: None,
            },
        );
        next.remember_deleted("e1");
        store.commit(next.clone()).unwrap();
        assert_eq!(Store::load(&path).unwrap().get(), &next);
        assert_eq!(next.owners(), vec!["dk-g-0011".to_owned()]);
        std::fs::write(&path, b"{\"version\":1,\"pools\":").unwrap();
        let e = Store::load(&path).unwrap_err().to_string();
        assert!(e.contains("move it away"), "{e}");
        std::fs::write(&path, b"{\"version\":7}").unwrap();
        assert!(
            Store::load(&path)
                .unwrap_err()
                .to_string()
                .contains("version 7")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn deleted_endpoints_are_remembered_within_a_bound() {
        let mut s = PluginState::default();
        for i in 0..DELETED_REMEMBERED_MAX + 10 {
            s.remember_deleted(&format!("e{i}"));
        }
        assert_eq!(s.deleted_endpoints.len(), DELETED_REMEMBERED_MAX);
        assert!(!s.was_deleted("e0"));
        assert!(s.was_deleted(&format!("e{}", DELETED_REMEMBERED_MAX + 9)));
    }
}
