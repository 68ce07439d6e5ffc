//! Donations: whom a request asks, how a donor answers, and how the answer is taken in;
//! plus relaying unicast IPAM messages that are for another peer.
//!
//! The asker picks the peer with the most free space in the subnet (by gossiped free
//! counts) that it has not asked yet. The donor gives half (rounded up) of its longest free
//! run in the subnet — or exactly the claimed address — as a ring transfer, gossips it and
//! replies with the changed entries; or replies why not. Each ask is answered, refused, or
//! times out after [`super::DONATION_TIMEOUT_MS`], and the request moves on.

use super::alloc::{Ipam, free_count};
use super::requests::{Ask, Want};
use super::ring::{Entry, RingId};
use super::space::{Cidr, overlap};
use super::wire::{IPAM_TTL_MAX, IpamMsg, Outcome, Route};
use super::{DONATION_ASKS_MAX, DONATION_TIMEOUT_MS, IpamError, IpamEvent, Output, RequestId};
use crate::peer::PeerName;
use crate::time::{Duration, Instant};
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

impl Ipam {
    /// The peer with the most free space in `subnet` that this request has not asked yet.
    pub(super) fn candidate(&self, id: RequestId, subnet: Cidr) -> Option<PeerName> {
        let p = self.pending.get(&id)?;
        if p.asked.len() >= DONATION_ASKS_MAX {
            return None;
        }
        let (lo, hi) = self.usable_in(subnet);
        let mut free: BTreeMap<PeerName, u64> = BTreeMap::new();
        for s in self.ring.spans() {
            let o = s.entry.owner;
            if o == self.me || s.entry.free == 0 || p.asked.contains(&o) {
                continue;
            }
            if overlap(u64::from(s.start), s.end, lo, hi).is_some() {
                *free.entry(o).or_default() += u64::from(s.entry.free);
            }
        }
        // Most free first; ties to the lowest name (BTreeMap order, strict >).
        let mut best: Option<(PeerName, u64)> = None;
        for (o, f) in free {
            if best.is_none_or(|(_, bf)| f > bf) {
                best = Some((o, f));
            }
        }
        best.map(|(o, _)| o)
    }

    pub(super) fn send_ask(&mut self, now: Instant, id: RequestId, peer: PeerName) {
        let ask = self.next_ask;
        self.next_ask += 1;
        let Some(p) = self.pending.get_mut(&id) else {
            return;
        };
        p.waiting = Some(Ask {
            peer,
            ask,
            until: now + Duration::from_millis(DONATION_TIMEOUT_MS),
        });
        let (subnet, addr) = match p.want {
            Want::Any(s) => (s, None),
            Want::Addr(a) => (a.network(), Some(a.addr.to_bits())),
        };
        let msg = IpamMsg::DonateRequest {
            route: Route {
                src: self.me,
                dst: peer,
                ttl: IPAM_TTL_MAX,
            },
            ask,
            subnet,
            addr,
        };
        if let Ok(m) = msg.to_vec() {
            self.push_output(Output::Unicast(peer, m));
        }
    }

    pub(super) fn forward(&mut self, route: Route, payload: &[u8]) {
        // Byte 2 + 12 is the ttl of the route that follows the version and kind bytes.
        const TTL_OFFSET: usize = 2 + 2 * PeerName::WIRE_LEN;
        if route.ttl == 0 || payload.len() <= TTL_OFFSET {
            self.stats.drops_unrouted += 1;
            return;
        }
        let mut m = payload.to_vec();
        m[TTL_OFFSET] = route.ttl - 1;
        self.push_output(Output::Unicast(route.dst, m));
    }

    pub(super) fn on_donate_request(
        &mut self,
        to: PeerName,
        ask: u64,
        subnet: Cidr,
        addr: Option<u32>,
    ) {
        let (outcome, entries) = self.donate(to, subnet, addr);
        if outcome == Outcome::Donated {
            self.stats.donations_given += 1;
            self.generation += 1;
            self.news.extend(entries.iter().map(|(t, _)| *t));
            self.flush_news();
        }
        let Some(id) = self.ring.id() else {
            return;
        };
        let reply = IpamMsg::DonateReply {
            route: Route {
                src: self.me,
                dst: to,
                ttl: IPAM_TTL_MAX,
            },
            ask,
            outcome,
            id,
            entries,
        };
        if let Ok(m) = reply.to_vec() {
            self.push_output(Output::Unicast(to, m));
        }
    }

    /// Gives `to` space in `subnet` (or the address `addr`) from ours.
    fn donate(
        &mut self,
        to: PeerName,
        subnet: Cidr,
        addr: Option<u32>,
    ) -> (Outcome, Vec<(u32, Entry)>) {
        if self.ring.is_empty() || to == self.me || !self.config.range.contains_block(&subnet) {
            return (Outcome::Unable, Vec::new());
        }
        let (start, end) = match addr {
            Some(a) => {
                if self.ring.owner_of(a) != Some(self.me) {
                    return (Outcome::NotOwner, Vec::new());
                }
                if self.allocs.contains_key(&a) {
                    return (Outcome::InUse, Vec::new());
                }
                (u64::from(a), u64::from(a) + 1)
            }
            None => {
                let (lo, hi) = self.usable_in(subnet);
                let Some((s, e)) = self.largest_free_run(lo, hi) else {
                    return (Outcome::Empty, Vec::new());
                };
                let k = (e - s).div_ceil(2);
                (e - k, e)
            }
        };
        let allocs = &self.allocs;
        let range = self.config.range;
        // start < end <= 2^32 and start is an address we own, so it fits a u32.
        match self
            .ring
            .transfer(self.me, start as u32, end, to, |lo, hi| {
                free_count(allocs, range, lo, hi)
            }) {
            Ok(changed) => {
                let entries = changed
                    .iter()
                    .filter_map(|t| Some((*t, self.ring.get(*t)?)))
                    .collect();
                (Outcome::Donated, entries)
            }
            Err(_) => (Outcome::Unable, Vec::new()),
        }
    }

    pub(super) fn on_donate_reply(
        &mut self,
        now: Instant,
        from: PeerName,
        ask: u64,
        outcome: Outcome,
        id: RingId,
        entries: &[(u32, Entry)],
    ) {
        if outcome == Outcome::Donated {
            self.stats.donations_received += 1;
            // The donor gossips these too; merging now saves a round.
            self.on_ring(now, from, id, self.ring.range(), false, entries);
        }
        let Some((&rid, _)) = self
            .pending
            .iter()
            .find(|(_, p)| p.waiting.is_some_and(|w| w.ask == ask && w.peer == from))
        else {
            // Late, unknown, or already served by the donor's gossip.
            return;
        };
        let mut failed = None;
        if let Some(p) = self.pending.get_mut(&rid) {
            p.waiting = None;
            match (outcome, p.want) {
                (Outcome::Donated, _) => {}
                (Outcome::InUse, Want::Addr(_)) => failed = Some(IpamError::InUse),
                _ => p.asked.push(from),
            }
        }
        if let Some(error) = failed {
            self.pending.remove(&rid);
            self.push_event(IpamEvent::Failed {
                request: rid,
                error,
            });
        }
        self.process(now);
        self.flush_news();
    }
}
