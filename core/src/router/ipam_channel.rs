//! The router's IPAM channel: the IPAM logic stays in `crate::ipam`; this child of
//! `router` reaches the router's connections. It routes CHANNEL_IPAM gossip to [`Ipam`], sends what [`Ipam`] asks
//! (news to all neighbours, periodic gossip to a few, unicast through the next hop), turns
//! [`IpamEvent`]s into [`Event::Ipam`], and exposes the commands the host uses.
//!
//! Host contract, in short (details in [`crate::ipam`]):
//! - `weft attach` without address: [`Router::ipam_allocate`]; with `ADDR/CIDR`:
//!   [`Router::ipam_claim`]; the answer is an [`Event::Ipam`] carrying
//!   [`IpamEvent::Allocated`] or [`IpamEvent::Failed`] with the returned [`RequestId`].
//! - `weft detach`: [`Router::ipam_free`]. `weft ps`: [`Ipam::allocations`] through
//!   [`Router::ipam`]. `weft status ipam`: [`Router::ipam_status`]. `weft rmpeer`:
//!   [`Router::ipam_rmpeer`].
//! - Persistence: after every call into the router, if [`Router::ipam_generation`]
//!   changed, write [`Router::ipam_export`] atomically and fsync it before the next
//!   `poll_transmit` and before replying to a client; at start, [`Router::ipam_restore`].

use super::{Event, Router};
use crate::conn::ConnId;
use crate::ipam::persist::PersistError;
use crate::ipam::{Cidr, ContainerId, Ipam, IpamError, IpamStatus, Output, PeerView, RequestId};
use crate::peer::PeerName;
use crate::time::Instant;
use crate::wire::frame::CHANNEL_IPAM;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

/// Mixed into the router's uid to seed IPAM's RNG (so the router's own RNG is untouched).
pub(super) const IPAM_SEED_SALT: u64 = 0x1ba3_5eed_0000_0002;

impl Router {
    /// The IPAM state (allocations for `weft ps`, the ring, counters).
    pub fn ipam(&self) -> &Ipam {
        &self.ipam
    }

    /// Asks for an address for `container` in `subnet` (default subnet if `None`); the
    /// answer is an [`Event::Ipam`] with the returned id, possibly already queued.
    pub fn ipam_allocate(
        &mut self,
        now: Instant,
        container: &ContainerId,
        subnet: Option<Cidr>,
    ) -> Result<RequestId, IpamError> {
        let r = self.ipam.allocate(now, container, subnet);
        self.ipam_pump(now);
        r
    }

    /// Asks for exactly `addr` for `container`; answered like [`Router::ipam_allocate`].
    pub fn ipam_claim(
        &mut self,
        now: Instant,
        container: &ContainerId,
        addr: Cidr,
    ) -> Result<RequestId, IpamError> {
        let r = self.ipam.claim(now, container, addr);
        self.ipam_pump(now);
        r
    }

    /// Releases `container`'s address `addr`, or all of them; returns how many.
    pub fn ipam_free(
        &mut self,
        now: Instant,
        container: &ContainerId,
        addr: Option<Ipv4Addr>,
    ) -> usize {
        let n = self.ipam.free(container, addr);
        self.ipam_pump(now);
        n
    }

    /// Drops a pending request (its client went away).
    pub fn ipam_cancel(&mut self, now: Instant, request: RequestId) -> bool {
        let r = self.ipam.cancel(request);
        self.ipam_pump(now);
        r
    }

    /// `weft rmpeer PEER`: takes over the dead peer's space; returns the address count.
    pub fn ipam_rmpeer(&mut self, now: Instant, peer: PeerName) -> Result<u64, IpamError> {
        let r = self.ipam.rmpeer(now, peer);
        self.ipam_pump(now);
        r
    }

    /// `weft status ipam`: each owner's share, reachability, counters.
    pub fn ipam_status(&mut self) -> IpamStatus {
        let view = self.ipam_view();
        self.ipam.status(&view)
    }

    /// Changes whenever [`Router::ipam_export`] would return something new.
    pub fn ipam_generation(&self) -> u64 {
        self.ipam.generation()
    }

    /// The bytes to persist (see [`crate::ipam`] for when).
    pub fn ipam_export(&self) -> Vec<u8> {
        self.ipam.export()
    }

    /// Replaces the IPAM state by a persisted one; call right after [`Router::new`],
    /// before any connection.
    pub fn ipam_restore(&mut self, now: Instant, bytes: &[u8]) -> Result<(), PersistError> {
        let seed = self.ipam_seed();
        self.ipam = Ipam::import(
            self.config.ipam,
            self.config.name,
            seed,
            self.config.gossip_interval,
            now,
            bytes,
        )?;
        Ok(())
    }

    fn ipam_seed(&self) -> u64 {
        self.settings.uid.0 ^ IPAM_SEED_SALT
    }

    /// Reachable peers, and peers still known to us or to a reachable peer.
    pub(super) fn ipam_view(&mut self) -> PeerView {
        let reachable: alloc::collections::BTreeSet<PeerName> = self.routes().reachable().collect();
        let mut seen: alloc::collections::BTreeSet<PeerName> =
            self.topology.iter().map(|e| e.name).collect();
        for e in self.topology.iter().filter(|e| reachable.contains(&e.name)) {
            seen.extend(e.conns.iter().filter(|c| c.established).map(|c| c.peer));
        }
        PeerView { reachable, seen }
    }

    /// A CHANNEL_IPAM payload arrived on `conn`; garbage costs the connection.
    pub(super) fn on_ipam_gossip(&mut self, now: Instant, conn: ConnId, payload: &[u8]) {
        let Some(from) = self.remote_name(conn) else {
            return;
        };
        if let Err(e) = self.ipam.handle_message(now, from, payload) {
            self.drop_malformed_gossip(now, conn, e);
        }
    }

    /// Runs the IPAM timer when due.
    pub(super) fn ipam_timeout(&mut self, now: Instant) {
        if now >= self.ipam.poll_timeout() {
            let view = self.ipam_view();
            self.ipam.handle_timeout(now, &view);
        }
    }

    /// Sends what IPAM asked to send and passes its events on.
    pub(super) fn ipam_pump(&mut self, now: Instant) {
        while let Some(e) = self.ipam.poll_event() {
            self.push_event(Event::Ipam(e));
        }
        while let Some(out) = self.ipam.poll_output() {
            match out {
                Output::Neighbours(m) => self.gossip_neighbours(now, CHANNEL_IPAM, None, &m),
                Output::Random(m) => self.gossip_random(now, CHANNEL_IPAM, &m),
                Output::Neighbour(p, m) => self.gossip_one(now, CHANNEL_IPAM, p, &m),
                Output::Unicast(p, m) => {
                    let hop = if self.by_peer.contains_key(&p) {
                        Some(p)
                    } else {
                        self.next_hop(p)
                    };
                    match hop.and_then(|h| self.by_peer.get(&h).copied()) {
                        Some(id) => {
                            self.send_gossip(now, id, CHANNEL_IPAM, &m);
                        }
                        None => self.ipam.count_unrouted(),
                    }
                }
            }
        }
    }
}
