//! The IPAM driver's calls: pools and addresses from weft IPAM.
//!
//! A pool is `--subnet` when given (inside weft's range), else the IPAM default subnet:
//! every host picks the same without talking to the others, and Docker does not tell an
//! IPAM driver the network's name, so there is nothing else to derive a subnet from.
//! Networks without `--subnet` therefore share the default subnet (and reach each
//! other); give each its own `--subnet` to keep them apart. `PoolID` is the pool's text
//! (and the `--ip-range`'s), so the same request gives the same pool on every host.

use super::backend::Backend;
use super::state::{Address, Pool};
use super::types::{
    ADDRESS_TYPE_GATEWAY, Empty, OPT_ADDRESS_TYPE, ReleaseAddressRequest, ReleasePoolRequest,
    RequestAddressReply, RequestAddressRequest, RequestPoolReply, RequestPoolRequest, check_id,
    parse_v4, parse_v4_block,
};
use super::{Plugin, PluginError, Want, bad, random_hex, state};
use std::collections::BTreeMap;
use weft_core::ipam::Cidr as V4Cidr;

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
        let pool = if r.pool.is_empty() {
            self.default_subnet
        } else {
            parse_v4_block("Pool", &r.pool).map_err(bad)?
        };
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
            return Err(PluginError::Failed(format!(
                "{} pools already; remove some networks",
                state::OBJECTS_MAX
            )));
        }
        let p = next.pools.entry(pool_id.clone()).or_insert(Pool {
            pool,
            sub_pool,
            refs: 0,
        });
        p.refs = p.refs.saturating_add(1);
        if p.refs > 1 && r.pool.is_empty() {
            tracing::info!(
                "Docker plugin: another network without --subnet shares the default subnet {pool}; give --subnet to keep networks apart"
            );
        }
        self.commit(&mut store, next)?;
        Ok(RequestPoolReply {
            pool_id,
            pool: pool.to_string(),
            data: BTreeMap::new(),
        })
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
