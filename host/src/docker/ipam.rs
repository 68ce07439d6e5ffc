//! The IPAM driver's calls: pools and addresses from weft IPAM.
//!
//! A pool is `--subnet` when given (inside weft's range): `PoolID` is then the pool's text
//! (and the `--ip-range`'s), so the same request gives the same pool on every host and
//! networks created with the same `--subnet` on several hosts are one network.
//!
//! Without `--subnet` a /24 is carved from weft's range ([`CARVE_PREFIX_LEN`]), from its
//! top down, outside the IPAM default subnet where the range leaves room: the block is
//! taken by claiming its first address in weft IPAM as the network's gateway, so two
//! hosts (or two networks on one host) never carve the same block, with no store beyond
//! the IPAM ring. Such a network is this host's alone: a network that spans hosts needs
//! the same `--subnet` on each (the `weft` network the router creates does that with the
//! default subnet). Carved blocks keep clear of every other pool but the default
//! subnet's, which is IPAM's own and, by default, the whole range: IPAM never gives an
//! address twice, and the firewall drops what a carved network's containers send into
//! another subnet, so replies from them to the default subnet's containers never arrive.

use super::backend::Backend;
use super::state::{Address, Pool};
use super::types::{
    ADDRESS_TYPE_GATEWAY, Empty, OPT_ADDRESS_TYPE, ReleaseAddressRequest, ReleasePoolRequest,
    RequestAddressReply, RequestAddressRequest, RequestPoolReply, RequestPoolRequest, check_id,
    parse_v4, parse_v4_block,
};
use super::{Plugin, PluginError, Want, bad, random_hex, state};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use weft_core::ipam::Cidr as V4Cidr;

/// The size of a pool carved for a network created without `--subnet`.
pub(crate) const CARVE_PREFIX_LEN: u8 = 24;
/// Blocks tried before carving gives up (each try is one IPAM claim).
const CARVE_TRIES_MAX: usize = 64;

/// Whether blocks `a` and `b` share an address.
fn overlap(a: &V4Cidr, b: &V4Cidr) -> bool {
    a.contains_block(b) || b.contains_block(a)
}

/// The blocks a network without `--subnet` may be carved from, best first: /24s of
/// `range` from its top down, those outside `default_subnet` first (unless it is the
/// whole range), none overlapping `taken`. A range of /24 or smaller is one block.
pub(crate) fn carve_candidates(
    range: V4Cidr,
    default_subnet: V4Cidr,
    taken: &[V4Cidr],
) -> Vec<V4Cidr> {
    let len = CARVE_PREFIX_LEN.max(range.prefix_len);
    let step = 1u64 << (32 - u32::from(len));
    let count = range.size() / step;
    let free = |b: &V4Cidr| !taken.iter().any(|t| overlap(t, b));
    let mut outside = Vec::new();
    let mut inside = Vec::new();
    for i in (0..count).rev() {
        let Ok(start) = u32::try_from(u64::from(range.start()) + i * step) else {
            continue;
        };
        let b = V4Cidr {
            addr: Ipv4Addr::from_bits(start),
            prefix_len: len,
        };
        if !free(&b) {
            continue;
        }
        if default_subnet != range && overlap(&default_subnet, &b) {
            inside.push(b);
        } else {
            outside.push(b);
        }
        if outside.len() >= CARVE_TRIES_MAX {
            break;
        }
    }
    outside.extend(inside);
    outside.truncate(CARVE_TRIES_MAX);
    outside
}

impl<B: Backend> Plugin<B> {
    pub(super) async fn request_pool(
        &self,
        r: RequestPoolRequest,
    ) -> Result<RequestPoolReply, PluginError> {
        if r.v6 || r.pool.contains(':') {
            return Err(bad(
                "V6: weft's IPAM gives IPv4 pools only; create the network without --ipv6".into(),
            ));
        }
        if r.pool.is_empty() && !r.sub_pool.is_empty() {
            return Err(bad("SubPool: --ip-range needs --subnet".into()));
        }
        if r.pool.is_empty() {
            return self.carve_pool().await;
        }
        let pool = parse_v4_block("Pool", &r.pool).map_err(bad)?;
        if !self.range.contains_block(&pool) {
            return Err(bad(format!(
                "Pool: {pool} is not inside weft's allocation range {} (see --ipalloc-range); pick a --subnet inside it",
                self.range
            )));
        }
        let sub_pool = if r.sub_pool.is_empty() {
            None
        } else {
            let s = parse_v4_block("SubPool", &r.sub_pool).map_err(bad)?;
            if !pool.contains_block(&s) {
                return Err(bad(format!("SubPool: {s} is not inside the pool {pool}")));
            }
            Some(s)
        };
        let pool_id = match sub_pool {
            None => format!("weft-{pool}"),
            Some(s) => format!("weft-{pool}-{s}"),
        };
        let mut store = self.store.lock().await;
        let mut next = store.get().clone();
        if !next.pools.contains_key(&pool_id) && next.pools.len() >= state::OBJECTS_MAX {
            return Err(too_many_pools());
        }
        // The default subnet is IPAM's own (blocks are carved inside it when it is the
        // whole range): it may overlap carved blocks, which IPAM never gives twice.
        let carved_over = next
            .pools
            .values()
            .find(|p| p.carved && pool != self.default_subnet && overlap(&p.pool, &pool));
        if let Some(c) = carved_over {
            return Err(bad(format!(
                "Pool: {pool} overlaps {}, carved for a network created without --subnet; pick another --subnet",
                c.pool
            )));
        }
        let p = next.pools.entry(pool_id.clone()).or_insert(Pool {
            pool,
            sub_pool,
            refs: 0,
            carved: false,
        });
        p.refs = p.refs.saturating_add(1);
        self.commit(&mut store, next)?;
        Ok(RequestPoolReply {
            pool_id,
            pool: pool.to_string(),
            data: BTreeMap::new(),
        })
    }

    /// `RequestPool` without `--subnet`: the first of [`carve_candidates`] whose gateway
    /// IPAM lets this host claim.
    async fn carve_pool(&self) -> Result<RequestPoolReply, PluginError> {
        let mut store = self.store.lock().await;
        if store.get().pools.len() >= state::OBJECTS_MAX {
            return Err(too_many_pools());
        }
        let taken: Vec<V4Cidr> = store
            .get()
            .pools
            .values()
            .map(|p| p.pool)
            .filter(|p| *p != self.default_subnet)
            .collect();
        let candidates = carve_candidates(self.range, self.default_subnet, &taken);
        let tried = candidates.len();
        for block in candidates {
            let (lo, _) = block.usable();
            let gateway = V4Cidr {
                addr: Ipv4Addr::from_bits(lo),
                prefix_len: block.prefix_len,
            };
            let owner = format!("dk-g-{}", random_hex()?);
            match self.backend.ipam_take(&owner, Want::Addr(gateway)).await {
                Ok(_) => {}
                Err(PluginError::InUse(_)) => continue, // Another host's, or a container's.
                Err(e) => return Err(e),
            }
            let pool_id = format!("weft-auto-{block}");
            let mut next = store.get().clone();
            next.pools.insert(
                pool_id.clone(),
                Pool {
                    pool: block,
                    sub_pool: None,
                    refs: 1,
                    carved: true,
                },
            );
            next.addresses.insert(
                gateway.addr,
                Address {
                    pool_id: pool_id.clone(),
                    prefix_len: block.prefix_len,
                    owner: owner.clone(),
                    gateway: true,
                    endpoint: None,
                },
            );
            if let Err(e) = self.commit(&mut store, next) {
                let _ = self.backend.ipam_free(&owner, gateway.addr).await;
                return Err(e);
            }
            tracing::info!(
                "Docker plugin: carved {block} from weft's range for a network created without --subnet"
            );
            return Ok(RequestPoolReply {
                pool_id,
                pool: block.to_string(),
                data: BTreeMap::new(),
            });
        }
        Err(PluginError::Failed(format!(
            "no free /{CARVE_PREFIX_LEN} left in weft's range {} for a network without --subnet ({tried} tried); remove networks or give --subnet",
            self.range
        )))
    }

    pub(super) async fn release_pool(&self, r: ReleasePoolRequest) -> Result<Empty, PluginError> {
        check_id("PoolID", &r.pool_id).map_err(bad)?;
        let mut store = self.store.lock().await;
        let Some(p) = store.get().pools.get(&r.pool_id) else {
            return Ok(Empty {}); // Released before (Docker repeats).
        };
        let mut next = store.get().clone();
        if p.refs > 1 {
            if let Some(p) = next.pools.get_mut(&r.pool_id) {
                p.refs -= 1;
            }
            self.commit(&mut store, next)?;
            return Ok(Empty {});
        }
        // Docker releases a pool's addresses first; what is left (a call Docker never
        // saw answered) goes back to IPAM with the pool.
        let left: Vec<_> = next
            .addresses
            .iter()
            .filter(|(_, a)| a.pool_id == r.pool_id)
            .map(|(ip, a)| (*ip, a.owner.clone()))
            .collect();
        for (ip, owner) in left {
            self.backend.ipam_free(&owner, ip).await?;
            next.addresses.remove(&ip);
        }
        next.pools.remove(&r.pool_id);
        self.commit(&mut store, next)?;
        Ok(Empty {})
    }

    pub(super) async fn request_address(
        &self,
        r: RequestAddressRequest,
    ) -> Result<RequestAddressReply, PluginError> {
        check_id("PoolID", &r.pool_id).map_err(bad)?;
        let gateway =
            r.options.get(OPT_ADDRESS_TYPE).map(String::as_str) == Some(ADDRESS_TYPE_GATEWAY);
        let mut store = self.store.lock().await;
        let pool = store.get().pools.get(&r.pool_id).cloned().ok_or_else(|| {
            PluginError::NotFound(format!(
                "PoolID {}: no such pool (not asked of this router, or released)",
                super::types::truncate(&r.pool_id, 80)
            ))
        })?;
        let reply = |a: V4Cidr| RequestAddressReply {
            address: V4Cidr {
                addr: a.addr,
                prefix_len: pool.pool.prefix_len,
            }
            .to_string(),
            data: BTreeMap::new(),
        };
        if gateway && pool.carved {
            // Reserved when the pool was carved: hand that one out (also again).
            let held = store.get().addresses.iter().find(|(ip, a)| {
                a.pool_id == r.pool_id
                    && a.gateway
                    && a.endpoint.is_none()
                    && (r.address.is_empty() || r.address == ip.to_string())
            });
            if let Some((ip, a)) = held {
                return Ok(reply(V4Cidr {
                    addr: *ip,
                    prefix_len: a.prefix_len,
                }));
            }
        }
        let (owner, want) = if r.address.is_empty() {
            let kind = if gateway { "g" } else { "r" };
            (
                format!("dk-{kind}-{}", random_hex()?),
                Want::Any(pool.alloc_block()),
            )
        } else {
            let ip = parse_v4("Address", &r.address).map_err(bad)?;
            if !pool.pool.contains(ip.to_bits()) {
                return Err(bad(format!(
                    "Address: {ip} is not in the pool {}",
                    pool.pool
                )));
            }
            if let Some(held) = store.get().addresses.get(&ip) {
                // The same request again (its answer was lost), or somebody else's.
                if held.pool_id == r.pool_id && held.endpoint.is_none() && held.gateway == gateway {
                    return Ok(reply(V4Cidr {
                        addr: ip,
                        prefix_len: held.prefix_len,
                    }));
                }
                return Err(PluginError::Failed(format!(
                    "Address: {ip} is already in use on this network"
                )));
            }
            let want = V4Cidr {
                addr: ip,
                prefix_len: pool.pool.prefix_len,
            };
            (format!("dk-c-{ip}"), Want::Addr(want))
        };
        if store.get().addresses.len() >= state::OBJECTS_MAX {
            return Err(PluginError::Failed(format!(
                "{} addresses given out already",
                state::OBJECTS_MAX
            )));
        }
        let got = self.backend.ipam_take(&owner, want).await?;
        let mut next = store.get().clone();
        next.addresses.insert(
            got.addr,
            Address {
                pool_id: r.pool_id.clone(),
                prefix_len: pool.pool.prefix_len,
                owner: owner.clone(),
                gateway,
                endpoint: None,
            },
        );
        if let Err(e) = self.commit(&mut store, next) {
            // Docker will not hear of it: give it back.
            let _ = self.backend.ipam_free(&owner, got.addr).await;
            return Err(e);
        }
        Ok(reply(got))
    }

    pub(super) async fn release_address(
        &self,
        r: ReleaseAddressRequest,
    ) -> Result<Empty, PluginError> {
        check_id("PoolID", &r.pool_id).map_err(bad)?;
        let ip = parse_v4("Address", &r.address).map_err(bad)?;
        let mut store = self.store.lock().await;
        let Some(held) = store.get().addresses.get(&ip).cloned() else {
            return Ok(Empty {}); // Released before, or never ours (Docker repeats).
        };
        if held.pool_id != r.pool_id {
            return Ok(Empty {}); // Another network's address of the same number.
        }
        self.backend.ipam_free(&held.owner, ip).await?;
        let mut next = store.get().clone();
        next.addresses.remove(&ip);
        self.commit(&mut store, next)?;
        Ok(Empty {})
    }
}

fn too_many_pools() -> PluginError {
    PluginError::Failed(format!(
        "{} pools already; remove some networks",
        state::OBJECTS_MAX
    ))
}
