//! The allocator: [`Ipam`]'s state, and what it does with space it owns (allocate, claim,
//! free, free counts, listings, status).
//!
//! Every address handed out is recorded here at its span's owner — ourselves, since we
//! only allocate from our own spans — so "owner records it" and "allocator records it" are
//! the same record. Pending requests and donations are in [`super::requests`], seeding and
//! ring adoption in [`super::consensus`].

use super::consensus::Consensus;
use super::requests::Pending;
use super::ring::Ring;
use super::space::{Cidr, overlap};
use super::wire::IpamMsg;
use super::{
    ADDRS_PER_CONTAINER_MAX, ALLOCATIONS_MAX, ContainerId, IPAM_QUEUE_LEN_MAX, IPAM_TICK_MS,
    IpamConfig, IpamError, IpamEvent, IpamStats, IpamStatus, Output, PeerShare, PeerView,
    RequestId,
};
use crate::peer::PeerName;
use crate::rng::Rng;
use crate::time::{Duration, Instant};
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::vec::Vec;
use core::net::Ipv4Addr;

/// One address given out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Alloc {
    pub(super) container: ContainerId,
    pub(super) prefix_len: u8,
}

/// One router's IPAM: its ring, the addresses it gave out, pending requests.
#[derive(Clone, Debug)]
pub struct Ipam {
    pub(super) config: IpamConfig,
    pub(super) me: PeerName,
    pub(super) ring: Ring,
    pub(super) allocs: BTreeMap<u32, Alloc>,
    pub(super) consensus: Consensus,
    pub(super) pending: BTreeMap<RequestId, Pending>,
    pub(super) next_request: u64,
    pub(super) next_ask: u64,
    /// Tokens changed since the last send.
    pub(super) news: BTreeSet<u32>,
    pub(super) outputs: VecDeque<Output>,
    pub(super) events: VecDeque<IpamEvent>,
    pub(super) generation: u64,
    pub(super) unreachable_since: BTreeMap<PeerName, Instant>,
    pub(super) stats: IpamStats,
    pub(super) rng: Rng,
    pub(super) gossip_interval: Duration,
    pub(super) next_gossip_at: Instant,
    pub(super) next_tick_at: Instant,
    /// A ring pull was sent since the last tick.
    pub(super) pulled: bool,
}

/// Free addresses of `[lo, hi)` given `allocs`, not counting the range's own network and
/// broadcast addresses (never handed out).
pub(super) fn free_count(allocs: &BTreeMap<u32, Alloc>, range: Cidr, lo: u64, hi: u64) -> u32 {
    let (ulo, uhi) = range.usable();
    let Some((lo, hi)) = overlap(lo, hi, u64::from(ulo), uhi) else {
        return 0;
    };
    // lo < hi <= 2^32 here, so lo fits a u32.
    let used = allocs
        .range(lo as u32..)
        .take_while(|(a, _)| u64::from(**a) < hi)
        .count() as u64;
    (hi - lo - used).min(u64::from(u32::MAX)) as u32
}

impl Ipam {
    /// A fresh IPAM for peer `me`. `seed` feeds its RNG (the ring nonce, nothing else);
    /// `gossip_interval` paces the periodic full-ring gossip. With `consensus=1` the ring is
    /// seeded at once.
    pub fn new(
        config: IpamConfig,
        me: PeerName,
        seed: u64,
        gossip_interval: Duration,
        now: Instant,
    ) -> Self {
        let mut ipam = Self {
            ring: Ring::new(config.range),
            consensus: Consensus::new(me, config.init),
            config,
            me,
            allocs: BTreeMap::new(),
            pending: BTreeMap::new(),
            next_request: 1,
            next_ask: 1,
            news: BTreeSet::new(),
            outputs: VecDeque::new(),
            events: VecDeque::new(),
            generation: 0,
            unreachable_since: BTreeMap::new(),
            stats: IpamStats::default(),
            rng: Rng::from_seed(seed),
            gossip_interval,
            next_gossip_at: now + gossip_interval,
            next_tick_at: now + Duration::from_millis(IPAM_TICK_MS),
            pulled: false,
        };
        ipam.try_seed(now);
        ipam
    }

    /// The settings.
    pub fn config(&self) -> &IpamConfig {
        &self.config
    }

    /// Our peer name.
    pub fn name(&self) -> PeerName {
        self.me
    }

    /// The ring as this router sees it.
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// Counters.
    pub fn stats(&self) -> IpamStats {
        self.stats
    }

    /// Changes whenever the exported state does; see the persistence contract in
    /// [`crate::ipam`].
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Every address we gave out, in address order, with its container (`weft ps`).
    pub fn allocations(&self) -> impl Iterator<Item = (Cidr, &ContainerId)> + '_ {
        self.allocs.iter().map(|(a, al)| {
            (
                Cidr {
                    addr: Ipv4Addr::from_bits(*a),
                    prefix_len: al.prefix_len,
                },
                &al.container,
            )
        })
    }

    /// The addresses `container` holds here, in address order.
    pub fn addresses_of(&self, container: &ContainerId) -> Vec<Cidr> {
        self.allocations()
            .filter(|(_, c)| *c == container)
            .map(|(a, _)| a)
            .collect()
    }

    /// Releases `container`'s address `addr`, or all its addresses when `addr` is `None`
    /// (`weft detach`). Returns how many were released; the change is gossiped at once.
    pub fn free(&mut self, container: &ContainerId, addr: Option<Ipv4Addr>) -> usize {
        let gone: Vec<u32> = self
            .allocs
            .iter()
            .filter(|(a, al)| al.container == *container && addr.is_none_or(|x| x.to_bits() == **a))
            .map(|(a, _)| *a)
            .collect();
        for a in &gone {
            self.allocs.remove(a);
            self.refresh_free_at(*a);
        }
        if !gone.is_empty() {
            self.generation += 1;
            self.flush_news();
        }
        gone.len()
    }

    /// The status view; `view` says which peers are reachable.
    pub fn status(&self, view: &PeerView) -> IpamStatus {
        let peers = self
            .ring
            .shares()
            .into_iter()
            .map(|(peer, (addresses, free))| PeerShare {
                peer,
                addresses,
                free,
                reachable: peer == self.me || view.reachable.contains(&peer),
            })
            .collect();
        IpamStatus {
            range: self.config.range,
            default_subnet: self.config.default_subnet,
            init: self.config.init,
            ring: self.ring.id(),
            consensus_heard: self.consensus.heard.len(),
            peers,
            allocations: self.allocs.len(),
            pending: self.pending.len(),
            stats: self.stats,
        }
    }

    /// The next message to send.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The next answer or notice.
    pub fn poll_event(&mut self) -> Option<IpamEvent> {
        self.events.pop_front()
    }

    /// When [`Ipam::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Instant {
        self.next_tick_at.min(self.next_gossip_at)
    }

    /// Counts a unicast message the router could not route (no path to its destination).
    pub(crate) fn count_unrouted(&mut self) {
        self.stats.drops_unrouted += 1;
    }

    // ---- helpers shared by the other files ----

    pub(super) fn push_output(&mut self, o: Output) {
        if self.outputs.len() >= IPAM_QUEUE_LEN_MAX {
            self.stats.drops_queue_full += 1;
        } else {
            self.outputs.push_back(o);
        }
    }

    pub(super) fn push_event(&mut self, e: IpamEvent) {
        if self.events.len() >= IPAM_QUEUE_LEN_MAX {
            self.stats.drops_queue_full += 1;
        } else {
            self.events.push_back(e);
        }
    }

    /// Recomputes the free count of the span holding `addr` if it is ours.
    pub(super) fn refresh_free_at(&mut self, addr: u32) {
        let Some(span) = self.ring.span_of(addr) else {
            return;
        };
        let free = free_count(
            &self.allocs,
            self.config.range,
            u64::from(span.start),
            span.end,
        );
        if self.ring.set_free(self.me, span.start, free) {
            self.news.insert(span.start);
        }
    }

    /// Refreshes the free counts of all our spans (after adopting or restoring a ring).
    pub(super) fn refresh_all_free(&mut self) {
        let starts: Vec<u32> = self
            .ring
            .spans()
            .filter(|s| s.entry.owner == self.me)
            .map(|s| s.start)
            .collect();
        for s in starts {
            self.refresh_free_at(s);
        }
    }

    /// Sends the changed entries to every neighbour.
    pub(super) fn flush_news(&mut self) {
        if self.news.is_empty() {
            return;
        }
        let Some(id) = self.ring.id() else {
            self.news.clear();
            return;
        };
        let news = core::mem::take(&mut self.news);
        let entries: Vec<_> = news
            .iter()
            .filter_map(|t| Some((*t, self.ring.get(*t)?)))
            .collect();
        let msg = IpamMsg::Ring {
            id,
            range: self.ring.range(),
            full: entries.len() == self.ring.len(),
            entries,
        };
        if let Ok(bytes) = msg.to_vec() {
            self.push_output(Output::Neighbours(bytes));
        }
    }

    /// Our whole ring as one message, if we have one.
    pub(super) fn full_ring_msg(&self) -> Option<Vec<u8>> {
        let id = self.ring.id()?;
        IpamMsg::Ring {
            id,
            range: self.ring.range(),
            full: true,
            entries: self.ring.entries().collect(),
        }
        .to_vec()
        .ok()
    }

    /// Drops allocation records in spans of `changed` tokens we no longer own.
    pub(super) fn drop_lost(&mut self, changed: &[u32]) {
        for t in changed {
            let Some(span) = self.ring.span_of(*t) else {
                continue;
            };
            if span.entry.owner == self.me {
                continue;
            }
            let lost: Vec<u32> = self
                .allocs
                .range(span.start..)
                .take_while(|(a, _)| u64::from(**a) < span.end)
                .map(|(a, _)| *a)
                .collect();
            for a in lost {
                self.allocs.remove(&a);
                self.stats.allocations_lost += 1;
                self.push_event(IpamEvent::Lost {
                    addr: Ipv4Addr::from_bits(a),
                });
            }
        }
    }

    /// The range's usable addresses intersected with `subnet`'s.
    pub(super) fn usable_in(&self, subnet: Cidr) -> (u64, u64) {
        let (slo, shi) = subnet.usable();
        let (rlo, rhi) = self.config.range.usable();
        overlap(u64::from(slo), shi, u64::from(rlo), rhi).unwrap_or((0, 0))
    }

    /// The lowest free address we own in `subnet`.
    pub(super) fn first_free(&self, subnet: Cidr) -> Option<u32> {
        let (lo, hi) = self.usable_in(subnet);
        self.free_runs(lo, hi).next().map(|(s, _)| s as u32)
    }

    /// The longest run of free addresses we own in `[lo, hi)` (the lowest of equals).
    pub(super) fn largest_free_run(&self, lo: u64, hi: u64) -> Option<(u64, u64)> {
        self.free_runs(lo, hi)
            .reduce(|best, r| if r.1 - r.0 > best.1 - best.0 { r } else { best })
    }

    /// The runs `[s, e)` of free addresses we own in `[lo, hi)`, lowest first, none empty.
    fn free_runs(&self, lo: u64, hi: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ring
            .owned_within(self.me, lo, hi)
            .flat_map(move |(s, e)| {
                let taken = self
                    .allocs
                    .range(s as u32..)
                    .map(|(a, _)| u64::from(*a))
                    .take_while(move |a| *a < e);
                // Each address taken ends the run before it; the owned range's end, the last.
                let mut cursor = s;
                taken.chain(core::iter::once(e)).filter_map(move |a| {
                    let run = (cursor, a);
                    cursor = a + 1;
                    (a > run.0).then_some(run)
                })
            })
    }

    /// Records `addr` for `container`.
    pub(super) fn record(
        &mut self,
        addr: u32,
        container: &ContainerId,
        prefix_len: u8,
    ) -> Result<Cidr, IpamError> {
        let held = self
            .allocs
            .values()
            .filter(|a| a.container == *container)
            .count();
        if held >= ADDRS_PER_CONTAINER_MAX {
            return Err(IpamError::TooManyAddresses);
        }
        if self.allocs.len() >= ALLOCATIONS_MAX {
            return Err(IpamError::Busy);
        }
        self.allocs.insert(
            addr,
            Alloc {
                container: container.clone(),
                prefix_len,
            },
        );
        self.refresh_free_at(addr);
        self.generation += 1;
        Ok(Cidr {
            addr: Ipv4Addr::from_bits(addr),
            prefix_len,
        })
    }

    /// Allocates from our own space: the container's existing address in `subnet` if it
    /// has one, else the lowest free one. `Ok(None)`: we own nothing free there.
    pub(super) fn allocate_local(
        &mut self,
        container: &ContainerId,
        subnet: Cidr,
    ) -> Result<Option<Cidr>, IpamError> {
        if let Some((a, _)) = self.allocations().find(|(a, c)| {
            *c == container
                && a.prefix_len == subnet.prefix_len
                && subnet.contains(a.addr.to_bits())
        }) {
            return Ok(Some(a));
        }
        match self.first_free(subnet) {
            Some(addr) => self.record(addr, container, subnet.prefix_len).map(Some),
            None => Ok(None),
        }
    }

    /// Claims `addr` in a span we own.
    pub(super) fn claim_local(
        &mut self,
        container: &ContainerId,
        addr: Cidr,
    ) -> Result<Cidr, IpamError> {
        let a = addr.addr.to_bits();
        match self.allocs.get(&a) {
            Some(al) if al.container == *container => Ok(Cidr {
                addr: addr.addr,
                prefix_len: al.prefix_len,
            }),
            Some(_) => Err(IpamError::InUse),
            None => self.record(a, container, addr.prefix_len),
        }
    }
}
