//! The router's DNS channel: the DNS logic stays in `crate::dns`; this child of `router`
//! reaches the router's connections. It routes CHANNEL_DNS gossip to [`Dns`], sends what [`Dns`] asks (news flooded to the
//! neighbours, full state to a new neighbour and periodically to a few), drops a removed
//! peer's records, and exposes the commands the host uses.
//!
//! Host contract, in short:
//! - `weft attach --name`, `weft dns-add`, `weft expose -h`: [`Router::dns_add`];
//!   `weft detach`, `weft dns-remove`: [`Router::dns_remove`].
//! - Answers: [`Router::dns_lookup`] / [`Router::dns_reverse`], or, for a server that
//!   keeps its own snapshot, [`Router::dns_answerable`] whenever [`Router::dns_generation`]
//!   or the topology generation changed. Records of unreachable owners are not answered
//!   (their containers cannot be reached either); they are dropped once the router's
//!   peer GC removes the owner.
//! - `weft status dns`: [`Router::dns_status`].

use super::Router;
use crate::conn::ConnId;
use crate::dns::{Container, Dns, DnsError, DnsName, DnsStatus, Filter, Output, RecordKey};
use crate::peer::PeerName;
use crate::time::Instant;
use crate::wire::frame::CHANNEL_DNS;
use alloc::collections::BTreeSet;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

impl Router {
    /// The record set (all records, tombstones, counters).
    pub fn dns(&self) -> &Dns {
        &self.dns
    }

    /// Registers `name -> addr` for `container` as ours; gossiped at once. `Ok(false)` if
    /// it was there already.
    pub fn dns_add(
        &mut self,
        now: Instant,
        name: &DnsName,
        addr: Ipv4Addr,
        container: &Container,
    ) -> Result<bool, DnsError> {
        let r = self.dns.add(now, name, addr, container);
        self.dns_pump(now);
        r
    }

    /// Removes our records matching `filter`; gossiped at once. Returns how many.
    pub fn dns_remove(&mut self, now: Instant, filter: &Filter) -> usize {
        let n = self.dns.remove(now, filter);
        self.dns_pump(now);
        n
    }

    /// Addresses of `name` whose owner is us or reachable, sorted, without duplicates.
    pub fn dns_lookup(&mut self, name: &DnsName) -> Vec<Ipv4Addr> {
        let ok = self.dns_owners_answerable();
        let mut out: Vec<Ipv4Addr> = self
            .dns
            .lookup(name)
            .filter(|k| ok.contains(&k.owner))
            .map(|k| k.addr)
            .collect();
        out.dedup();
        out
    }

    /// Names of `addr` whose owner is us or reachable, sorted, without duplicates.
    pub fn dns_reverse(&mut self, addr: Ipv4Addr) -> Vec<DnsName> {
        let ok = self.dns_owners_answerable();
        let mut out: Vec<DnsName> = self
            .dns
            .reverse(addr)
            .filter(|k| ok.contains(&k.owner))
            .map(|k| k.name.clone())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Every live record whose owner is us or reachable (a DNS server's snapshot).
    pub fn dns_answerable(&mut self) -> Vec<RecordKey> {
        let ok = self.dns_owners_answerable();
        self.dns
            .live()
            .filter(|k| ok.contains(&k.owner))
            .cloned()
            .collect()
    }

    /// Changes whenever the live records change (the topology generation covers
    /// reachability).
    pub fn dns_generation(&self) -> u64 {
        self.dns.generation()
    }

    /// `weft status dns`: live records, counts, counters.
    pub fn dns_status(&self) -> DnsStatus {
        self.dns.status()
    }

    fn dns_owners_answerable(&mut self) -> BTreeSet<PeerName> {
        let mut ok: BTreeSet<PeerName> = self.routes().reachable().collect();
        ok.insert(self.config.name);
        ok
    }

    /// A CHANNEL_DNS payload arrived on `conn`; garbage costs the connection.
    pub(super) fn on_dns_gossip(&mut self, now: Instant, conn: ConnId, payload: &[u8]) {
        let Some(from) = self.remote_name(conn) else {
            return;
        };
        // A neighbour is alive even before its topology entry reaches us.
        let (topology, by_peer) = (&self.topology, &self.by_peer);
        let r = self.dns.handle_message(now, from, payload, |p| {
            by_peer.contains_key(&p) || topology.get(p).is_some()
        });
        if let Err(e) = r {
            self.drop_malformed_gossip(now, conn, e);
        }
    }

    /// A new neighbour gets our full record set.
    pub(super) fn dns_on_neighbour(&mut self, peer: PeerName) {
        self.dns.on_neighbour(peer);
    }

    /// The peer GC removed `peer` from the topology: its records go.
    pub(super) fn dns_peer_removed(&mut self, now: Instant, peer: PeerName) {
        self.dns.peer_removed(now, peer);
    }

    /// Runs the DNS timer when due.
    pub(super) fn dns_timeout(&mut self, now: Instant) {
        if now >= self.dns.poll_timeout() {
            self.dns.handle_timeout(now);
        }
    }

    /// Sends what DNS asked to send.
    pub(super) fn dns_pump(&mut self, now: Instant) {
        while let Some(out) = self.dns.poll_output() {
            match out {
                Output::Neighbours { except, msg } => {
                    self.gossip_neighbours(now, CHANNEL_DNS, except, &msg);
                }
                Output::Random(msg) => self.gossip_random(now, CHANNEL_DNS, &msg),
                Output::Neighbour(p, msg) => self.gossip_one(now, CHANNEL_DNS, p, &msg),
            }
        }
    }
}
