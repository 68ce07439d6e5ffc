//! The router task's IPAM part, a child of `driver` so it reaches the router. It runs the control API's address
//! requests against the core, collects the answers of one attach (a *group* of requests)
//! and persists the IPAM export whenever it changed: before the router's next transmit
//! and before any answer leaves for a client.

use super::{Answer, Driver};
use crate::messages::{ApiError, IpamCounters, IpamPeer, IpamStatus, RmpeerReply};
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::oneshot;
use weft_core::ipam::{Cidr, ContainerId, InitMode, IpamError, IpamEvent, RequestId};
use weft_core::peer::PeerName;

/// An attach's requests are under way: as `group`, answered within `timeout`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AttachStarted {
    pub(crate) group: u64,
    pub(crate) timeout: Duration,
}

/// The final answer of an attach.
#[derive(Clone, Debug, Default)]
pub(crate) struct Allocated {
    /// Every address IPAM gave (claimed or allocated).
    pub(crate) allocated: Vec<Cidr>,
    /// Those the container did not hold before.
    pub(crate) fresh: Vec<Ipv4Addr>,
}

/// An address command for the router task, with where its answer goes.
pub(crate) enum IpamRequest {
    /// Claim `claims` (inside the range; others are ignored) and allocate one address in
    /// each of `subnets` (`None`: the default subnet) for `container`. `started` hears
    /// at once which group the requests are; the addresses come on `answer`.
    Attach {
        container: String,
        claims: Vec<Cidr>,
        subnets: Vec<Option<Cidr>>,
        started: Answer<AttachStarted>,
        answer: Answer<Allocated>,
    },
    /// The client stopped waiting for `group`: cancel what is pending, free what it got.
    /// The answer is why it got no addresses.
    Abandon {
        group: u64,
        answer: oneshot::Sender<ApiError>,
    },
    /// Free `addrs` of `container`, or all of its addresses; the answer is how many.
    Free {
        container: String,
        addrs: Option<Vec<Ipv4Addr>>,
        answer: oneshot::Sender<u64>,
    },
    /// Hand `addr` from owner `from` to owner `to` in one step (a Docker endpoint takes
    /// over the address reserved for it); done already is no error.
    Transfer {
        from: String,
        to: String,
        addr: Ipv4Addr,
        answer: Answer<()>,
    },
    /// Take over a dead peer's space (name or nickname).
    Rmpeer {
        peer: String,
        answer: Answer<RmpeerReply>,
    },
    /// `weft status ipam`.
    Status { answer: oneshot::Sender<IpamStatus> },
}

/// One attach's requests, until every one is answered.
struct Group {
    container: ContainerId,
    /// Addresses the container held before (not freed if the attach fails).
    prior: Vec<Ipv4Addr>,
    pending: Vec<RequestId>,
    allocated: Vec<Cidr>,
    error: Option<ApiError>,
    answer: Option<Answer<Allocated>>,
}

/// What the driver keeps for IPAM.
#[derive(Default)]
pub(crate) struct IpamState {
    /// Where the export is written (`None`: not persisted, e.g. unit tests).
    path: Option<PathBuf>,
    /// The generation on disk.
    persisted: Option<u64>,
    next_group: u64,
    groups: HashMap<u64, Group>,
    /// Request -> (group, what it asked for, for error messages).
    requests: HashMap<RequestId, (u64, String)>,
}

impl Driver {
    /// Persists the IPAM state at `path` from now on; `on_disk` says whether the current
    /// state came from there (restored), so it need not be written again.
    pub(crate) fn set_ipam_persist(&mut self, path: PathBuf, on_disk: bool) {
        self.ipam.path = Some(path);
        self.ipam.persisted = on_disk.then(|| self.router.ipam_generation());
    }

    /// Every address IPAM holds here, with its owner (for the Docker plugin's check at
    /// start).
    pub(crate) fn ipam_allocations(&self) -> Vec<(Ipv4Addr, String)> {
        self.router
            .ipam()
            .allocations()
            .map(|(a, c)| (a.addr, c.as_str().to_owned()))
            .collect()
    }

    /// Frees the addresses of owners named `prefix…` that are not `live`: attachments
    /// (`ns-`) whose namespace died while the router was down or whose attach never
    /// finished, Docker reservations (`dk-`) of a call that never finished.
    pub(crate) fn ipam_forget_gone(&mut self, prefix: &str, live: &[String]) {
        let now = self.now();
        let gone: Vec<ContainerId> = {
            let mut v: Vec<ContainerId> = self
                .router
                .ipam()
                .allocations()
                .map(|(_, c)| c.clone())
                .filter(|c| c.as_str().starts_with(prefix) && !live.iter().any(|l| l == c.as_str()))
                .collect();
            v.sort();
            v.dedup();
            v
        };
        for c in gone {
            let n = self.router.ipam_free(now, &c, None);
            tracing::info!("freed {n} addresses of {c}: its owner is gone");
        }
        self.ipam_persist();
    }

    /// Writes the IPAM export if it changed since the last write. A router that cannot
    /// persist must not go on (it could hand out an address twice after a restart).
    pub(super) fn ipam_persist(&mut self) {
        let Some(path) = &self.ipam.path else {
            return;
        };
        let generation = self.router.ipam_generation();
        if self.ipam.persisted == Some(generation) {
            return;
        }
        let bytes = crate::ipam::seal_state(&self.router.ipam_export());
        if let Err(e) = crate::state::write_atomic(path, &bytes) {
            tracing::error!("cannot persist the IPAM state: {e}; stopping the router");
            std::process::exit(1);
        }
        self.ipam.persisted = Some(generation);
    }

    /// Runs one address command and sends its answers (a caller that stopped waiting is
    /// no error).
    pub(super) fn ipam_request(&mut self, req: IpamRequest) {
        let _ = match req {
            IpamRequest::Attach {
                container,
                claims,
                subnets,
                started,
                answer,
            } => {
                let r = self.ipam_attach(&container, claims, subnets, answer);
                started.send(r).map_err(drop)
            }
            IpamRequest::Abandon { group, answer } => {
                let error = self.ipam_no_answer_text();
                if self.ipam.groups.contains_key(&group) {
                    self.ipam_fail_group(group, ApiError::Ipam(error.clone()));
                    self.ipam_maybe_finish(group);
                }
                answer.send(ApiError::Ipam(error)).map_err(drop)
            }
            IpamRequest::Free {
                container,
                addrs,
                answer,
            } => answer.send(self.ipam_free(&container, addrs)).map_err(drop),
            IpamRequest::Transfer {
                from,
                to,
                addr,
                answer,
            } => answer
                .send(self.ipam_transfer(&from, &to, addr))
                .map_err(drop),
            IpamRequest::Rmpeer { peer, answer } => {
                answer.send(self.ipam_rmpeer(&peer)).map_err(drop)
            }
            IpamRequest::Status { answer } => answer.send(self.ipam_status()).map_err(drop),
        };
    }

    fn ipam_attach(
        &mut self,
        container: &str,
        claims: Vec<Cidr>,
        subnets: Vec<Option<Cidr>>,
        answer: Answer<Allocated>,
    ) -> Result<AttachStarted, ApiError> {
        let now = self.now();
        let id = ContainerId::new(container).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let prior = self
            .router
            .ipam()
            .addresses_of(&id)
            .iter()
            .map(|c| c.addr)
            .collect();
        let group = self.ipam.next_group;
        self.ipam.next_group += 1;
        self.ipam.groups.insert(
            group,
            Group {
                container: id.clone(),
                prior,
                pending: Vec::new(),
                allocated: Vec::new(),
                error: None,
                answer: Some(answer),
            },
        );
        let range = self.router.config().ipam.range;
        let mut error = None;
        for c in claims {
            if !range.contains(c.addr.to_bits()) {
                continue; // Outside the range: the user's business, as in Weave.
            }
            match self.router.ipam_claim(now, &id, c) {
                Ok(r) => self.ipam_track(group, r, c.to_string()),
                Err(e) => {
                    error = Some(self.ipam_error(&c.to_string(), e));
                    break;
                }
            }
        }
        for s in subnets {
            if error.is_some() {
                break;
            }
            let what = match s {
                Some(c) => format!("net:{c}"),
                None => {
                    format!("net:default ({})", self.router.config().ipam.default_subnet)
                }
            };
            match self.router.ipam_allocate(now, &id, s) {
                Ok(r) => self.ipam_track(group, r, what),
                Err(e) => error = Some(self.ipam_error(&what, e)),
            }
        }
        if let Some(e) = error {
            self.ipam_fail_group(group, e);
        }
        self.ipam_maybe_finish(group);
        let timeout_ms = self.router.config().ipam.request_timeout.total_millis();
        Ok(AttachStarted {
            group,
            timeout: Duration::from_millis(timeout_ms),
        })
    }

    fn ipam_free(&mut self, container: &str, addrs: Option<Vec<Ipv4Addr>>) -> u64 {
        let now = self.now();
        let Ok(id) = ContainerId::new(container) else {
            return 0;
        };
        let freed = match addrs {
            None => self.router.ipam_free(now, &id, None),
            Some(list) => list
                .into_iter()
                .map(|a| self.router.ipam_free(now, &id, Some(a)))
                .sum(),
        };
        freed as u64
    }

    fn ipam_transfer(&mut self, from: &str, to: &str, addr: Ipv4Addr) -> Result<(), ApiError> {
        let now = self.now();
        let bad = |e: IpamError| ApiError::BadRequest(e.to_string());
        let (from, to) = (
            ContainerId::new(from).map_err(bad)?,
            ContainerId::new(to).map_err(bad)?,
        );
        let held = |d: &Self, c: &ContainerId| {
            d.router
                .ipam()
                .addresses_of(c)
                .into_iter()
                .find(|a| a.addr == addr)
        };
        if held(self, &to).is_some() {
            return Ok(());
        }
        let Some(cidr) = held(self, &from) else {
            return Err(ApiError::Ipam(format!("{addr} is not held by {from}")));
        };
        // Freed and claimed in one turn of the task: nothing else can take it between.
        // The claim is in our own space, so it is recorded at once.
        self.router.ipam_free(now, &from, Some(addr));
        let claim = self.router.ipam_claim(now, &to, cidr);
        let moved = held(self, &to).is_some();
        if !moved {
            if let Ok(r) = claim {
                self.router.ipam_cancel(now, r);
            }
            let _ = self.router.ipam_claim(now, &from, cidr);
        }
        self.ipam_persist();
        if moved {
            Ok(())
        } else {
            Err(ApiError::Ipam(format!(
                "{addr}: could not hand it from {from} to {to}"
            )))
        }
    }

    fn ipam_rmpeer(&mut self, peer: &str) -> Result<RmpeerReply, ApiError> {
        let now = self.now();
        let name = self.ipam_peer_by_name(peer).map_err(ApiError::Ipam)?;
        let moved = self
            .router
            .ipam_rmpeer(now, name)
            .map_err(|e| ApiError::Ipam(format!("rmpeer {peer}: {e}")))?;
        tracing::info!("rmpeer {name}: {moved} addresses taken over");
        Ok(RmpeerReply {
            peer: name.to_string(),
            addresses: moved,
        })
    }

    fn ipam_track(&mut self, group: u64, r: RequestId, what: String) {
        self.ipam.requests.insert(r, (group, what));
        if let Some(g) = self.ipam.groups.get_mut(&group) {
            g.pending.push(r);
        }
    }

    /// Marks `group` failed (first error wins) and cancels what it still waits for.
    fn ipam_fail_group(&mut self, group: u64, error: ApiError) {
        let now = self.now();
        let Some(g) = self.ipam.groups.get_mut(&group) else {
            return;
        };
        g.error.get_or_insert(error);
        let pending = g.pending.clone();
        for r in pending {
            self.router.ipam_cancel(now, r);
        }
    }

    /// Answers `group` once nothing of it is pending; a failed group frees what it got.
    fn ipam_maybe_finish(&mut self, group: u64) {
        if self
            .ipam
            .groups
            .get(&group)
            .is_none_or(|g| !g.pending.is_empty())
        {
            return;
        }
        let Some(mut g) = self.ipam.groups.remove(&group) else {
            return;
        };
        let fresh: Vec<Ipv4Addr> = g
            .allocated
            .iter()
            .map(|c| c.addr)
            .filter(|a| !g.prior.contains(a))
            .collect();
        let result = match g.error.take() {
            Some(e) => {
                let now = self.now();
                for a in &fresh {
                    self.router.ipam_free(now, &g.container, Some(*a));
                }
                Err(e)
            }
            None => Ok(Allocated {
                allocated: g.allocated.clone(),
                fresh,
            }),
        };
        // What the client is told must be on disk first.
        self.ipam_persist();
        if let Some(answer) = g.answer.take() {
            let _ = answer.send(result);
        }
    }

    /// An [`IpamEvent`] from the router.
    pub(super) fn ipam_on_event(&mut self, ev: IpamEvent) {
        match ev {
            IpamEvent::Allocated { request, addr } => {
                let Some((group, _)) = self.ipam.requests.remove(&request) else {
                    return;
                };
                if let Some(g) = self.ipam.groups.get_mut(&group) {
                    g.pending.retain(|r| *r != request);
                    g.allocated.push(addr);
                }
                self.ipam_maybe_finish(group);
            }
            IpamEvent::Failed { request, error } => {
                let Some((group, what)) = self.ipam.requests.remove(&request) else {
                    return;
                };
                if let Some(g) = self.ipam.groups.get_mut(&group) {
                    g.pending.retain(|r| *r != request);
                }
                if error != IpamError::Cancelled {
                    let e = self.ipam_error(&what, error);
                    self.ipam_fail_group(group, e);
                }
                self.ipam_maybe_finish(group);
            }
            IpamEvent::Lost { addr } => {
                tracing::warn!(
                    "address {addr} was taken over by another peer (rmpeer or reclaim of this router elsewhere); its container may clash"
                );
            }
            IpamEvent::RingReady => {
                tracing::info!("IPAM ring ready: addresses can be allocated");
            }
            IpamEvent::TakeoverRefused { from, entries } => {
                tracing::warn!(
                    "refused {entries} IPAM ring entries relayed by {from} that claim address space this router owns (a hostile peer, or `weft rmpeer` of this live router elsewhere); our allocations are kept"
                );
            }
        }
    }

    /// The error of a failed request for `what`: [`ApiError::AddressInUse`] when another
    /// container holds the address, else [`ApiError::Ipam`].
    fn ipam_error(&mut self, what: &str, e: IpamError) -> ApiError {
        let text = self.ipam_error_text(what, e);
        if e == IpamError::InUse {
            ApiError::AddressInUse(text)
        } else {
            ApiError::Ipam(text)
        }
    }

    /// One line for a failed request for `what`.
    fn ipam_error_text(&mut self, what: &str, e: IpamError) -> String {
        let range = self.router.config().ipam.range;
        match e {
            IpamError::NoRing => self.ipam_no_answer_text(),
            IpamError::OutsideRange => {
                format!("{what}: not inside the allocation range {range} (see --ipalloc-range)")
            }
            IpamError::RangeFull => format!(
                "{what}: no free address left (range exhausted; detach some containers, or rmpeer dead peers)"
            ),
            other => format!("{what}: {other}"),
        }
    }

    /// Why a request got no answer in time: no ring yet (and what it waits for), or the
    /// core's timeout text.
    fn ipam_no_answer_text(&mut self) -> String {
        let st = self.router.ipam_status();
        if st.ring.is_some() {
            return IpamError::Timeout.to_string();
        }
        match st.init {
            InitMode::Consensus { quorum } => format!(
                "no address ring yet: --ipalloc-init consensus={quorum} waits for {quorum} peers, heard of {} so far; start and connect the other initial peers (see weft status ipam)",
                st.consensus_heard
            ),
            InitMode::Observer => "no address ring yet: this router is an observer (--ipalloc-init observer) and waits for a ring from a connected peer".to_owned(),
        }
    }

    /// A peer by name (`aa:bb:..`) or by nickname (unique among known peers).
    fn ipam_peer_by_name(&self, s: &str) -> Result<PeerName, String> {
        if let Ok(n) = s.parse::<PeerName>() {
            return Ok(n);
        }
        let found: Vec<PeerName> = self
            .router
            .topology()
            .iter()
            .filter(|e| e.nickname == s)
            .map(|e| e.name)
            .collect();
        match found.as_slice() {
            [one] => Ok(*one),
            [] => Err(format!(
                "no peer named {s:?}: give its peer name (aa:bb:cc:dd:ee:ff) as weft status ipam shows it"
            )),
            _ => Err(format!(
                "nickname {s:?} is not unique: give the peer name (aa:bb:cc:dd:ee:ff)"
            )),
        }
    }

    pub(super) fn ipam_status(&mut self) -> IpamStatus {
        let st = self.router.ipam_status();
        let me = self.router.name();
        let waiting_for = match (st.ring, st.init) {
            (Some(_), _) => None,
            (None, InitMode::Consensus { quorum }) => Some(format!(
                "{quorum} peers in consensus, heard of {}",
                st.consensus_heard
            )),
            (None, InitMode::Observer) => Some("a ring from a peer (observer)".to_owned()),
        };
        let quorum = match st.init {
            InitMode::Consensus { quorum } => Some(u64::from(quorum)),
            InitMode::Observer => None,
        };
        let peers = st
            .peers
            .iter()
            .map(|p| IpamPeer {
                peer: Some(p.peer.to_string()),
                nickname: self
                    .router
                    .topology()
                    .get(p.peer)
                    .map(|e| e.nickname.clone()),
                ourself: p.peer == me,
                addresses: p.addresses,
                free: p.free,
                reachable: p.reachable,
            })
            .collect();
        let s = st.stats;
        IpamStatus {
            range: Some(st.range.to_string()),
            default_subnet: Some(st.default_subnet.to_string()),
            init: Some(crate::ipam::init_text(st.init)),
            quorum,
            ring: st.ring.map(|r| format!("{}/{:016x}", r.seeder, r.nonce)),
            consensus_heard: st.consensus_heard as u64,
            waiting_for,
            reclaim_after_ms: self
                .router
                .config()
                .ipam
                .reclaim_after
                .map(|d| d.total_millis()),
            peers,
            unreachable: st
                .peers
                .iter()
                .filter(|p| !p.reachable)
                .map(|p| p.peer.to_string())
                .collect(),
            allocations: st.allocations as u64,
            pending: st.pending as u64,
            stats: IpamCounters {
                malformed: s.malformed,
                ring_conflicts: s.ring_conflicts,
                range_mismatches: s.range_mismatches,
                donations_given: s.donations_given,
                donations_received: s.donations_received,
                addresses_reclaimed: s.addresses_reclaimed,
                allocations_lost: s.allocations_lost,
                takeovers_refused: s.takeovers_refused,
                drops_queue_full: s.drops_queue_full,
                drops_unrouted: s.drops_unrouted,
            },
        }
    }
}
