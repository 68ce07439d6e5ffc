//! The router's side of hole punching ([`crate::punch`]): reflect tokens and datagrams,
//! observed and mapped addresses, introductions (asked for and made), punched
//! connections over the ARQ, and each attempt's outcome and backoff.

use super::*;
use crate::punch::arq::{Arq, ArqError, SEND_WINDOW_SEGMENTS, Segment};
use crate::punch::wire::{
    PUNCH_MSG_LEN_MAX, PunchBody, PunchDatagram, PunchMsg, RefuseReason, SEGMENT_PAYLOAD_LEN_MAX,
};
use crate::punch::{
    INTRO_REQUESTS_PER_CHECK_MAX, PUNCH_OUT_QUEUE_LEN_MAX, PUNCH_PEERS_MAX, PUNCHES_IN_FLIGHT_MAX,
    PunchAttempt, PunchFailure, PunchPhase, PunchStats,
};

/// The datagram side of one punched connection.
#[derive(Debug)]
pub(super) struct PunchLink {
    pub(super) peer: PeerName,
    pub(super) session: u64,
    /// Where its segments (and the sleeve's datagrams) go: the peer's mapped address.
    pub(super) remote: SocketAddr,
    /// A segment of the session arrived (and `remote` moved to its source).
    pub(super) heard: bool,
    pub(super) arq: Arq,
}

/// Our reflects to one neighbour.
#[derive(Clone, Copy, Debug)]
struct Reflects {
    token: u64,
    next_at: Instant,
    /// Until then (or until the neighbour tells us our address) reflect at the probe
    /// interval: the first ones may arrive before the token does.
    fast_until: Instant,
}

/// Punch state of a router; bounded by its neighbours ([`CONNS_LEN_MAX`]) and
/// [`PUNCH_PEERS_MAX`].
pub(super) struct PunchSide {
    reflects: BTreeMap<PeerName, Reflects>,
    /// Tokens our neighbours' reflects carry.
    tokens_in: BTreeMap<PeerName, u64>,
    /// Where each neighbour's reflects come from (its mapped address, as we see it).
    observed: BTreeMap<PeerName, SocketAddr>,
    /// Where each neighbour sees our reflects come from (our mapped address).
    mapped: BTreeMap<PeerName, SocketAddr>,
    attempts: BTreeMap<PeerName, PunchAttempt>,
    /// The punched connection (up or under way) to each peer.
    links: BTreeMap<PeerName, ConnId>,
    out: VecDeque<(SocketAddr, Vec<u8>)>,
    next_check_at: Instant,
    stats: PunchStats,
}

impl PunchSide {
    pub(super) fn new(now: Instant) -> Self {
        Self {
            reflects: BTreeMap::new(),
            tokens_in: BTreeMap::new(),
            observed: BTreeMap::new(),
            mapped: BTreeMap::new(),
            attempts: BTreeMap::new(),
            links: BTreeMap::new(),
            out: VecDeque::new(),
            next_check_at: now,
            stats: PunchStats::default(),
        }
    }
}

impl Router {
    /// Call with a UDP datagram from `from` that arrived on the sleeve's port and is a
    /// punch datagram ([`PunchDatagram::is_punch`]). Anything malformed, not for us or of
    /// an unknown token or session is dropped and counted.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        let d = match PunchDatagram::parse(bytes) {
            Ok(d) if d.receiver == self.config.name && self.config.punch.enabled => d,
            _ => {
                self.punch.stats.datagrams_dropped += 1;
                return;
            }
        };
        match d.body {
            PunchBody::Reflect => {
                let known = self.punch.tokens_in.get(&d.sender) == Some(&d.tag);
                let Some(&id) = self.by_peer.get(&d.sender).filter(|_| known) else {
                    self.punch.stats.datagrams_dropped += 1;
                    return;
                };
                if self.punch.observed.get(&d.sender) != Some(&from) {
                    self.punch.observed.insert(d.sender, from);
                    self.send_punch_msg(now, id, PunchMsg::Observed(from));
                }
            }
            PunchBody::Segment { seq, ack, payload } => {
                let Some(&id) = self.punch.links.get(&d.sender) else {
                    self.punch.stats.datagrams_dropped += 1;
                    return;
                };
                let Some(Slot {
                    conn,
                    punch: Some(link),
                    ..
                }) = self.conns.get_mut(&id)
                else {
                    self.punch.stats.datagrams_dropped += 1;
                    return;
                };
                if link.session != d.tag {
                    self.punch.stats.datagrams_dropped += 1;
                    return;
                }
                // The first segment of the session tells where the peer really sends from
                // (a destination-dependent mapping shows us a port the introducer never
                // saw): answer there from then on. Later sources are taken but not
                // followed, or two such mappings would chase each other's new ports. What
                // a segment carries is the connection's to judge (sealed with a password).
                if !link.heard {
                    link.heard = true;
                    link.remote = from;
                }
                let seg = Segment { seq, ack, payload };
                let r = link
                    .arq
                    .handle_segment(now, seg, &mut |b| conn.handle_bytes(now, b));
                match r {
                    Ok(()) => {}
                    Err(Ok(e)) => {
                        self.drop_conn(now, id, e, true);
                        return;
                    }
                    Err(Err(e)) => {
                        self.drop_conn(now, id, ConnError::PunchedPath(e), true);
                        return;
                    }
                }
                self.drain_conn_output(now, id);
                self.maybe_flush(now);
            }
        }
    }

    /// Punch attempts per peer: where each is, failures, introductions.
    pub fn punch_attempts(&self) -> impl Iterator<Item = (&PeerName, &PunchAttempt)> {
        self.punch.attempts.iter()
    }

    /// The punch attempt towards `peer`, if any.
    pub fn punch_attempt(&self, peer: PeerName) -> Option<&PunchAttempt> {
        self.punch.attempts.get(&peer)
    }

    /// Our mapped address as neighbour `peer` sees it (from its `Observed` message).
    pub fn mapped_addr(&self, peer: PeerName) -> Option<SocketAddr> {
        self.punch.mapped.get(&peer).copied()
    }

    /// Where neighbour `peer`'s reflect datagrams come from (its mapped address).
    pub fn observed_addr(&self, peer: PeerName) -> Option<SocketAddr> {
        self.punch.observed.get(&peer).copied()
    }

    /// Punch counters (the segments resent on live links included).
    pub fn punch_stats(&self) -> PunchStats {
        let mut s = self.punch.stats;
        for id in self.punch.links.values() {
            if let Some(Slot { punch: Some(l), .. }) = self.conns.get(id) {
                s.retransmits += l.arq.retransmits();
            }
        }
        s
    }

    /// True if the current connection to `peer` is a punched one.
    pub fn is_punched(&self, peer: PeerName) -> bool {
        self.by_peer
            .get(&peer)
            .and_then(|id| self.conns.get(id))
            .is_some_and(|s| s.punch.is_some())
    }

    pub(super) fn send_punch_msg(&mut self, now: Instant, id: ConnId, m: PunchMsg) {
        let mut buf = [0u8; PUNCH_MSG_LEN_MAX];
        if let Ok(n) = m.emit(&mut buf) {
            self.send_gossip(now, id, CHANNEL_PUNCH, &buf[..n]);
        }
    }

    fn queue_punch_datagram(&mut self, to: SocketAddr, d: &PunchDatagram<'_>) {
        if self.punch.out.len() >= PUNCH_OUT_QUEUE_LEN_MAX {
            self.punch.stats.out_queue_drops += 1;
            return;
        }
        let mut buf = [0u8; crate::punch::wire::PUNCH_DATAGRAM_LEN_MAX];
        if let Ok(n) = d.emit(&mut buf) {
            self.punch.out.push_back((to, buf[..n].to_vec()));
        }
    }

    /// A message on [`CHANNEL_PUNCH`] from connection `id`.
    pub(super) fn on_punch_gossip(&mut self, now: Instant, id: ConnId, payload: &[u8]) {
        let Some(from) = self.remote_name(id) else {
            return;
        };
        let m = match PunchMsg::parse(payload) {
            Ok(m) => m,
            Err(e) => {
                self.drop_malformed_gossip(now, id, e);
                return;
            }
        };
        if !self.config.punch.enabled || self.by_peer.get(&from) != Some(&id) {
            return;
        }
        match m {
            PunchMsg::ReflectToken(t) => {
                self.punch.tokens_in.insert(from, t);
            }
            PunchMsg::Observed(a) => {
                self.punch.mapped.insert(from, a);
            }
            PunchMsg::IntroRequest(target) => self.introduce(now, id, from, target),
            PunchMsg::Intro {
                peer,
                addr,
                session,
            } => self.on_intro(now, from, peer, addr, session),
            PunchMsg::IntroRefused { target, reason } => {
                let asked = matches!(
                    self.punch.attempts.get(&target).map(|a| a.phase),
                    Some(PunchPhase::Requested { via, .. }) if via == from
                );
                if asked {
                    self.punch_failed(now, target, PunchFailure::Refused(reason));
                }
            }
        }
    }

    /// As the introducer: `from` (on connection `id`) asks to be introduced to `target`.
    fn introduce(&mut self, now: Instant, id: ConnId, from: PeerName, target: PeerName) {
        let target_conn = self
            .by_peer
            .get(&target)
            .copied()
            .filter(|c| target != from && self.conns.get(c).is_some_and(|s| s.punch.is_none()));
        let refuse = |reason| PunchMsg::IntroRefused { target, reason };
        let Some(tc) = target_conn else {
            self.punch.stats.intros_refused += 1;
            self.send_punch_msg(now, id, refuse(RefuseReason::NotConnected));
            return;
        };
        let (Some(a_from), Some(a_target)) = (
            self.punch.observed.get(&from).copied(),
            self.punch.observed.get(&target).copied(),
        ) else {
            self.punch.stats.intros_refused += 1;
            self.send_punch_msg(now, id, refuse(RefuseReason::NoAddress));
            return;
        };
        let session = self.rng.next_u64();
        self.punch.stats.intros_made += 1;
        // Both at once, so both ends start probing within one path delay of each other.
        self.send_punch_msg(
            now,
            tc,
            PunchMsg::Intro {
                peer: from,
                addr: a_from,
                session,
            },
        );
        self.send_punch_msg(
            now,
            id,
            PunchMsg::Intro {
                peer: target,
                addr: a_target,
                session,
            },
        );
    }

    /// Introduced by `via` to `peer` at `addr`: start the punched connection.
    fn on_intro(
        &mut self,
        now: Instant,
        via: PeerName,
        peer: PeerName,
        addr: SocketAddr,
        session: u64,
    ) {
        if peer == self.config.name {
            return;
        }
        if let Some(&old) = self.punch.links.get(&peer) {
            let up = self
                .conns
                .get(&old)
                .is_some_and(|s| s.conn.state() == ConnState::Established);
            if up {
                return;
            }
            self.drop_conn(now, old, ConnError::PunchSuperseded, true);
        }
        if self.by_peer.contains_key(&peer)
            || self.punch.links.len() >= PUNCHES_IN_FLIGHT_MAX
            || self.settled_conns() >= self.config.conn_limit.min(CONNS_LEN_MAX)
            || (self.punch.attempts.len() >= PUNCH_PEERS_MAX
                && !self.punch.attempts.contains_key(&peer))
        {
            return;
        }
        let id = self.alloc_conn_id();
        let outbound = self.config.name > peer;
        let conn =
            Connection::new_punched(id, outbound, addr, &self.settings, &mut *self.keys, now);
        let link = PunchLink {
            peer,
            session,
            remote: addr,
            heard: false,
            arq: Arq::new(self.config.punch.probe_interval),
        };
        self.conns.insert(
            id,
            Slot {
                conn,
                opened: true,
                punch: Some(link),
                sync: SyncState::default(),
            },
        );
        self.punch.links.insert(peer, id);
        let a = self.punch.attempts.entry(peer).or_insert(PunchAttempt {
            phase: PunchPhase::Probing {
                via,
                addr,
                since: now,
            },
            failures: 0,
            introductions: 0,
        });
        a.phase = PunchPhase::Probing {
            via,
            addr,
            since: now,
        };
        a.introductions = a.introductions.saturating_add(1);
    }

    /// A connection came up: a punched one ends its attempt; over any other we start
    /// reflecting to the neighbour.
    pub(super) fn punch_on_established(&mut self, now: Instant, id: ConnId, peer: PeerName) {
        if !self.config.punch.enabled {
            return;
        }
        let Some(slot) = self.conns.get(&id) else {
            return;
        };
        if let Some(link) = &slot.punch {
            let addr = link.remote;
            self.punch.stats.punched_up += 1;
            if let Some(a) = self.punch.attempts.get_mut(&peer) {
                a.phase = PunchPhase::Punched { addr, since: now };
                a.failures = 0;
            }
            return;
        }
        let token = self.rng.next_u64();
        self.punch.reflects.insert(
            peer,
            Reflects {
                token,
                next_at: now,
                fast_until: now + self.config.handshake_timeout,
            },
        );
        self.send_punch_msg(now, id, PunchMsg::ReflectToken(token));
    }

    /// A connection was dropped (after its `ConnectionDown`).
    pub(super) fn punch_on_dropped(
        &mut self,
        now: Instant,
        slot: &Slot,
        peer: Option<PeerName>,
        error: ConnError,
        was_current: bool,
    ) {
        let Some(link) = &slot.punch else {
            if let (true, Some(p)) = (was_current, peer) {
                self.punch.reflects.remove(&p);
                self.punch.tokens_in.remove(&p);
                self.punch.observed.remove(&p);
                self.punch.mapped.remove(&p);
            }
            return;
        };
        if self.punch.links.get(&link.peer) == Some(&slot.conn.id()) {
            self.punch.links.remove(&link.peer);
        }
        self.punch.stats.retransmits += link.arq.retransmits();
        let duplicate = matches!(
            error,
            ConnError::PunchSuperseded
                | ConnError::Duplicate
                | ConnError::ClosedByPeer(crate::wire::frame::CLOSE_REASON_DUPLICATE)
        );
        if duplicate {
            return;
        }
        let reason = if was_current {
            PunchFailure::Lost(error)
        } else {
            PunchFailure::NoAnswer
        };
        self.punch_failed(now, link.peer, reason);
    }

    /// A peer left the topology: its punch record goes (a punched link to it was dropped
    /// like any connection before it became unreachable).
    pub(super) fn punch_peer_removed(&mut self, peer: PeerName) {
        if !self.punch.links.contains_key(&peer) {
            self.punch.attempts.remove(&peer);
        }
    }

    fn punch_failed(&mut self, now: Instant, peer: PeerName, reason: PunchFailure) {
        self.punch.stats.punch_failures += 1;
        if self.punch.attempts.len() >= PUNCH_PEERS_MAX && !self.punch.attempts.contains_key(&peer)
        {
            return;
        }
        let cfg = self.config.punch;
        let a = self.punch.attempts.entry(peer).or_insert(PunchAttempt {
            phase: PunchPhase::Failed {
                reason,
                at: now,
                retry_at: now,
            },
            failures: 0,
            introductions: 0,
        });
        a.failures = a.failures.saturating_add(1);
        // A link that was up retries at once (the NAT may just have moved); no answer
        // backs off.
        let wait = match reason {
            PunchFailure::Lost(_) => cfg.retry_base.min(cfg.check_interval),
            _ => cfg.backoff(a.failures),
        };
        a.phase = PunchPhase::Failed {
            reason,
            at: now,
            retry_at: now + wait,
        };
    }

    /// Sends what a punched connection still has (its close frame) once, unacknowledged.
    pub(super) fn punch_last_words(&mut self, now: Instant, slot: &mut Slot, error: ConnError) {
        let Slot {
            conn,
            punch: Some(link),
            ..
        } = slot
        else {
            return;
        };
        conn.close(error.close_reason());
        let mut chunk = [0u8; SEGMENT_PAYLOAD_LEN_MAX];
        while link.arq.has_room() {
            let Some(n) = conn.poll_transmit(&mut chunk) else {
                break;
            };
            if link.arq.push(&chunk[..n]).is_err() {
                break;
            }
        }
        let me = self.config.name;
        let (to, peer, session) = (link.remote, link.peer, link.session);
        let mut segs = Vec::new();
        for _ in 0..SEND_WINDOW_SEGMENTS {
            match link.arq.poll_segment(now) {
                Ok(Some(s)) => segs.push((s.seq, s.ack, s.payload.to_vec())),
                _ => break,
            }
        }
        for (seq, ack, payload) in segs {
            let d = PunchDatagram {
                sender: me,
                receiver: peer,
                tag: session,
                body: PunchBody::Segment {
                    seq,
                    ack,
                    payload: &payload,
                },
            };
            self.queue_punch_datagram(to, &d);
        }
    }

    /// The next punch datagram to send: queued reflects and last words, then segments of
    /// punched connections.
    pub(super) fn poll_punch_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        if let Some((to, bytes)) = self.punch.out.pop_front() {
            let len = bytes.len().min(buf.len());
            buf[..len].copy_from_slice(&bytes[..len]);
            return Some(Transmit {
                destination: Destination::Datagram(to),
                len,
            });
        }
        let me = self.config.name;
        let mut broken: Option<(ConnId, ArqError)> = None;
        let ids: Vec<ConnId> = self.punch.links.values().copied().collect();
        for id in ids {
            let Some(Slot {
                conn,
                punch: Some(link),
                ..
            }) = self.conns.get_mut(&id)
            else {
                continue;
            };
            let mut chunk = [0u8; SEGMENT_PAYLOAD_LEN_MAX];
            while link.arq.has_room() {
                let Some(n) = conn.poll_transmit(&mut chunk) else {
                    break;
                };
                if let Err(e) = link.arq.push(&chunk[..n]) {
                    broken = Some((id, e));
                    break;
                }
            }
            if broken.is_some() {
                break;
            }
            let (to, peer, session) = (link.remote, link.peer, link.session);
            match link.arq.poll_segment(now) {
                Ok(Some(s)) => {
                    let d = PunchDatagram {
                        sender: me,
                        receiver: peer,
                        tag: session,
                        body: PunchBody::Segment {
                            seq: s.seq,
                            ack: s.ack,
                            payload: s.payload,
                        },
                    };
                    let Ok(len) = d.emit(buf) else {
                        continue;
                    };
                    return Some(Transmit {
                        destination: Destination::Datagram(to),
                        len,
                    });
                }
                Ok(None) => {}
                Err(e) => {
                    broken = Some((id, e));
                    break;
                }
            }
        }
        let (id, e) = broken?;
        self.drop_conn(now, id, ConnError::PunchedPath(e), true);
        // Its last words, if any (bounded: the link is gone).
        self.poll_punch_transmit(now, buf)
    }

    /// When punching next needs [`Router::handle_timeout`].
    pub(super) fn punch_poll_timeout(&self) -> Option<Instant> {
        if !self.config.punch.enabled {
            return None;
        }
        let mut t = self.punch.next_check_at;
        for r in self.punch.reflects.values() {
            t = t.min(r.next_at);
        }
        for id in self.punch.links.values() {
            if let Some(Slot { punch: Some(l), .. }) = self.conns.get(id)
                && let Some(r) = l.arq.poll_timeout()
            {
                t = t.min(r);
            }
        }
        for a in self.punch.attempts.values() {
            if let PunchPhase::Requested { since, .. } = a.phase {
                t = t.min(since + self.config.handshake_timeout);
            }
        }
        Some(t)
    }

    /// Reflects due, introductions that never came, and new attempts.
    pub(super) fn punch_timeout(&mut self, now: Instant) {
        if !self.config.punch.enabled {
            return;
        }
        let cfg = self.config.punch;
        let due: Vec<(PeerName, u64)> = self
            .punch
            .reflects
            .iter()
            .filter(|(_, r)| now >= r.next_at)
            .map(|(p, r)| (*p, r.token))
            .collect();
        let me = self.config.name;
        for (peer, token) in due {
            if let Some(to) = self.peer_udp_addr(peer) {
                self.punch.stats.reflects_sent += 1;
                let d = PunchDatagram {
                    sender: me,
                    receiver: peer,
                    tag: token,
                    body: PunchBody::Reflect,
                };
                self.queue_punch_datagram(to, &d);
            }
            let known = self.punch.mapped.contains_key(&peer);
            if let Some(r) = self.punch.reflects.get_mut(&peer) {
                let fast = !known && now < r.fast_until;
                r.next_at = now
                    + if fast {
                        cfg.probe_interval
                    } else {
                        cfg.reflect_interval
                    };
            }
        }
        let stale: Vec<PeerName> = self
            .punch
            .attempts
            .iter()
            .filter(|(_, a)| {
                matches!(a.phase, PunchPhase::Requested { since, .. }
                    if now >= since + self.config.handshake_timeout)
            })
            .map(|(p, _)| *p)
            .collect();
        for p in stale {
            self.punch_failed(now, p, PunchFailure::NoIntroduction);
        }
        if now >= self.punch.next_check_at {
            self.punch.next_check_at = now + cfg.check_interval;
            self.punch_check(now);
        }
    }

    /// Asks for introductions to peers we reach only through others.
    fn punch_check(&mut self, now: Instant) {
        let me = self.config.name;
        let mut room = PUNCHES_IN_FLIGHT_MAX
            .saturating_sub(self.punch.links.len())
            .min(
                self.config
                    .conn_limit
                    .saturating_sub(self.settled_conns())
                    .min(INTRO_REQUESTS_PER_CHECK_MAX),
            );
        if room == 0 {
            return;
        }
        let reachable: Vec<PeerName> = self.routes().reachable().collect();
        for p in reachable {
            if room == 0 {
                break;
            }
            // The lower name asks; both ends probe once introduced.
            if p <= me || self.by_peer.contains_key(&p) || self.punch.links.contains_key(&p) {
                continue;
            }
            let ready = match self.punch.attempts.get(&p).map(|a| a.phase) {
                None => self.punch.attempts.len() < PUNCH_PEERS_MAX,
                Some(PunchPhase::Failed { retry_at, .. }) => now >= retry_at,
                Some(_) => false,
            };
            if !ready {
                continue;
            }
            // An introducer: a neighbour (not a punched one) that has seen our reflects and
            // that the topology shows connected to `p`.
            let via = self.by_peer.iter().find_map(|(n, id)| {
                let direct = self.conns.get(id).is_some_and(|s| s.punch.is_none());
                let seen = self.punch.mapped.contains_key(n);
                let linked = self.topology.get(*n).is_some_and(|e| e.established_to(p));
                (direct && seen && linked).then_some((*n, *id))
            });
            let Some((via, id)) = via else {
                continue;
            };
            room -= 1;
            self.punch.stats.intro_requests_sent += 1;
            self.send_punch_msg(now, id, PunchMsg::IntroRequest(p));
            let a = self.punch.attempts.entry(p).or_insert(PunchAttempt {
                phase: PunchPhase::Requested { via, since: now },
                failures: 0,
                introductions: 0,
            });
            a.phase = PunchPhase::Requested { via, since: now };
        }
    }
}
