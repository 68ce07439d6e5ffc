//! Requests: what waits for the ring or for space, and how it moves on; plus the message
//! dispatch and the timer (donations themselves are in [`super::donate`]).
//!
//! A request first tries our own space. If we own nothing free in its subnet it asks the
//! peer that (by the gossiped free counts) has the most free space there; that peer gives
//! half of its longest free run there (a transfer in the ring, gossiped) or says why not,
//! and the request tries again — another peer after a refusal or [`super::DONATION_TIMEOUT_MS`].
//! A claim of an address owned by another peer asks that peer for exactly that address.
//! Requests fail with [`IpamError::RangeFull`] once nobody is left to ask, and with
//! [`IpamError::Timeout`] after `request_timeout` (counted from when the ring exists).

use super::alloc::{Ipam, free_count};
use super::space::Cidr;
use super::wire::IpamMsg;
use super::{
    ContainerId, DONATION_ASKS_MAX, IPAM_TICK_MS, IpamError, IpamEvent, Output,
    PENDING_REQUESTS_MAX, PeerView, RequestId,
};
use crate::peer::PeerName;
use crate::time::{Duration, Instant};
use crate::wire::WireError;
use alloc::vec::Vec;

/// What a request wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Want {
    /// Any free address in this subnet.
    Any(Cidr),
    /// This address (with its prefix length).
    Addr(Cidr),
}

/// A donation request in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Ask {
    pub(super) peer: PeerName,
    pub(super) ask: u64,
    pub(super) until: Instant,
}

/// A request not answered yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Pending {
    pub(super) container: ContainerId,
    pub(super) want: Want,
    pub(super) asked: Vec<PeerName>,
    pub(super) waiting: Option<Ask>,
    pub(super) deadline: Option<Instant>,
}

impl Ipam {
    /// Asks for an address for `container` in `subnet` (the default subnet if `None`).
    /// The answer comes as [`IpamEvent::Allocated`] or [`IpamEvent::Failed`] with the
    /// returned id — at once if we own free space, later if the ring does not exist yet
    /// or a peer must donate. A container that already has an address in that subnet gets
    /// it again.
    pub fn allocate(
        &mut self,
        now: Instant,
        container: &ContainerId,
        subnet: Option<Cidr>,
    ) -> Result<RequestId, IpamError> {
        let subnet = subnet.unwrap_or(self.config.default_subnet).network();
        if !self.config.range.contains_block(&subnet) {
            return Err(IpamError::OutsideRange);
        }
        self.enqueue(now, container, Want::Any(subnet))
    }

    /// Asks for exactly `addr` (its prefix length names its subnet) for `container`
    /// (`weft attach ADDR/CIDR`). If another peer owns the space we ask it for the address.
    pub fn claim(
        &mut self,
        now: Instant,
        container: &ContainerId,
        addr: Cidr,
    ) -> Result<RequestId, IpamError> {
        let a = addr.addr.to_bits();
        if !self.config.range.contains(a) || !self.config.range.contains_block(&addr.network()) {
            return Err(IpamError::OutsideRange);
        }
        if !addr.is_usable(a) || !self.config.range.is_usable(a) {
            return Err(IpamError::Reserved);
        }
        self.enqueue(now, container, Want::Addr(addr))
    }

    /// Drops a pending request (the client went away); true if it was pending. Its
    /// [`IpamEvent::Failed`] with [`IpamError::Cancelled`] is queued.
    pub fn cancel(&mut self, request: RequestId) -> bool {
        if self.pending.remove(&request).is_some() {
            self.push_event(IpamEvent::Failed {
                request,
                error: IpamError::Cancelled,
            });
            true
        } else {
            false
        }
    }

    /// Takes over every span `peer` owns (`weft rmpeer`): run it on one peer only, for a
    /// peer that is gone for good. Returns how many addresses moved to us.
    pub fn rmpeer(&mut self, now: Instant, peer: PeerName) -> Result<u64, IpamError> {
        if peer == self.me {
            return Err(IpamError::IsSelf);
        }
        if self.ring.is_empty() {
            return Err(IpamError::NoRing);
        }
        let allocs = &self.allocs;
        let range = self.config.range;
        let (changed, moved) = self
            .ring
            .transfer_all(peer, self.me, |lo, hi| free_count(allocs, range, lo, hi));
        if !changed.is_empty() {
            self.stats.addresses_reclaimed += moved;
            self.generation += 1;
            self.news.extend(changed);
            self.process(now);
            self.flush_news();
        }
        Ok(moved)
    }

    /// Call with every CHANNEL_IPAM payload from neighbour `from`. An error means the
    /// neighbour sent garbage (the router closes that connection).
    pub fn handle_message(
        &mut self,
        now: Instant,
        from: PeerName,
        payload: &[u8],
    ) -> Result<(), WireError> {
        let msg = match IpamMsg::parse(payload) {
            Ok(m) => m,
            Err(e) => {
                self.stats.malformed += 1;
                return Err(e);
            }
        };
        // A unicast message for another peer is passed on as it came.
        if let Some(route) = msg.route().filter(|r| r.dst != self.me) {
            self.forward(route, payload);
            return Ok(());
        }
        match msg {
            IpamMsg::Ring {
                id,
                range,
                full,
                entries,
            } => self.on_ring(now, from, id, range, full, &entries),
            IpamMsg::Proposal { names, .. } => self.on_proposal(now, from, &names),
            IpamMsg::RingPull => {
                if let Some(full) = self.full_ring_msg() {
                    self.push_output(Output::Neighbour(from, full));
                }
            }
            IpamMsg::DonateRequest {
                route,
                ask,
                subnet,
                addr,
            } => self.on_donate_request(route.src, ask, subnet, addr),
            IpamMsg::DonateReply {
                route,
                ask,
                outcome,
                id,
                entries,
            } => self.on_donate_reply(now, route.src, ask, outcome, id, &entries),
        }
        Ok(())
    }

    /// Call when a connection to neighbour `peer` is established: it gets our ring, or our
    /// proposal while there is none.
    pub fn on_neighbour(&mut self, peer: PeerName) {
        if let Some(m) = self.full_ring_msg().or_else(|| self.proposal_msg()) {
            self.push_output(Output::Neighbour(peer, m));
        }
    }

    /// Call when [`Ipam::poll_timeout`] has passed: donation and request timeouts, periodic
    /// gossip, and reclaim (when configured) using `view`.
    pub fn handle_timeout(&mut self, now: Instant, view: &PeerView) {
        if now >= self.next_gossip_at {
            self.next_gossip_at = now + self.gossip_interval;
            if let Some(m) = self.full_ring_msg().or_else(|| self.proposal_msg()) {
                self.push_output(Output::Random(m));
            }
        }
        if now < self.next_tick_at {
            return;
        }
        self.next_tick_at = now + Duration::from_millis(IPAM_TICK_MS);
        self.pulled = false;
        for p in self.pending.values_mut() {
            if let Some(w) = p.waiting.filter(|w| w.until <= now) {
                p.waiting = None;
                p.asked.push(w.peer);
            }
        }
        self.reclaim(now, view);
        self.process(now);
        self.flush_news();
    }

    fn reclaim(&mut self, now: Instant, view: &PeerView) {
        let Some(after) = self.config.reclaim_after else {
            return;
        };
        if self.ring.is_empty() {
            return;
        }
        let me = self.me;
        let owners: Vec<PeerName> = self
            .ring
            .shares()
            .into_keys()
            .filter(|p| *p != me)
            .collect();
        self.unreachable_since
            .retain(|p, _| owners.contains(p) && !view.reachable.contains(p));
        let mut due = Vec::new();
        for o in owners.iter().filter(|o| !view.reachable.contains(o)) {
            let since = *self.unreachable_since.entry(*o).or_insert(now);
            if now.saturating_since(since) >= after && !view.seen.contains(o) {
                due.push(*o);
            }
        }
        // One reclaimer: the lowest name among the peers we reach (and ourselves).
        if view.reachable.iter().next().is_some_and(|r| *r < me) {
            return;
        }
        for o in due {
            let _ = self.rmpeer(now, o);
            self.unreachable_since.remove(&o);
        }
    }

    fn enqueue(
        &mut self,
        now: Instant,
        container: &ContainerId,
        want: Want,
    ) -> Result<RequestId, IpamError> {
        if self.pending.len() >= PENDING_REQUESTS_MAX {
            return Err(IpamError::Busy);
        }
        let id = RequestId(self.next_request);
        self.next_request += 1;
        let p = Pending {
            container: container.clone(),
            want,
            asked: Vec::new(),
            waiting: None,
            deadline: None,
        };
        self.pending.insert(id, p);
        self.process(now);
        self.flush_news();
        Ok(id)
    }

    /// Moves every pending request as far as it goes now (no-op before the ring exists).
    pub(super) fn process(&mut self, now: Instant) {
        if self.ring.is_empty() {
            return;
        }
        let ids: Vec<RequestId> = self.pending.keys().copied().collect();
        for id in ids {
            if let Some(result) = self.step(now, id) {
                self.pending.remove(&id);
                self.push_event(match result {
                    Ok(addr) => IpamEvent::Allocated { request: id, addr },
                    Err(error) => IpamEvent::Failed { request: id, error },
                });
            }
        }
    }

    /// One request's next move; `Some` when it is answered.
    fn step(&mut self, now: Instant, id: RequestId) -> Option<Result<Cidr, IpamError>> {
        let timeout = self.config.request_timeout;
        let p = self.pending.get_mut(&id)?;
        let deadline = *p.deadline.get_or_insert(now + timeout);
        let (container, want) = (p.container.clone(), p.want);
        let waiting = p.waiting.is_some();
        let target = match want {
            Want::Any(subnet) => match self.allocate_local(&container, subnet) {
                Ok(Some(a)) => return Some(Ok(a)),
                Err(e) => return Some(Err(e)),
                Ok(None) if waiting => None,
                Ok(None) => match self.candidate(id, subnet) {
                    Some(peer) => Some(peer),
                    None => return Some(Err(IpamError::RangeFull)),
                },
            },
            Want::Addr(addr) => match self.ring.owner_of(addr.addr.to_bits()) {
                None => return Some(Err(IpamError::OutsideRange)),
                Some(o) if o == self.me => return Some(self.claim_local(&container, addr)),
                Some(_) if waiting => None,
                Some(o) => {
                    let p = self.pending.get(&id)?;
                    (!p.asked.contains(&o) && p.asked.len() < DONATION_ASKS_MAX).then_some(o)
                }
            },
        };
        if now >= deadline {
            return Some(Err(IpamError::Timeout));
        }
        if let Some(peer) = target {
            self.send_ask(now, id, peer);
        }
        None
    }
}
