//! The connection maker: which addresses the router dials, when, and how often it retries.
//!
//! Targets come from the user (`weft launch PEER...`, `weft connect`) or, with discovery
//! on, from addresses other peers announce in gossip. A failed or lost target is retried
//! with capped exponential backoff plus jitter. The maker decides; the router acts.

use crate::conn::{ConnError, ConnId};
use crate::peer::PeerName;
use crate::rng::Rng;
use crate::time::{Duration, Instant};
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;
use core::net::SocketAddr;

/// Most targets the maker tracks: explicit and discovered ones together.
pub const TARGETS_LEN_MAX: usize = EXPLICIT_TARGETS_LEN_MAX + DISCOVERED_TARGETS_LEN_MAX;
/// Most explicit targets (`weft launch PEER...`, `weft connect`); room discovered ones never
/// take.
pub const EXPLICIT_TARGETS_LEN_MAX: usize = 1024;
/// Most discovered targets (learned from gossip); further discovered addresses are ignored.
pub const DISCOVERED_TARGETS_LEN_MAX: usize = 3072;
/// A discovered target not connected for this long (since it was learned or last
/// connected) is dropped; gossip brings it back if its peer is still announced.
pub const DISCOVERED_TARGET_TTL_MS: u64 = 5 * 60 * 1000;
/// Backoff exponent cap: the delay stops doubling after this many failures.
pub const BACKOFF_DOUBLINGS_MAX: u32 = 16;

/// Where a target came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetKind {
    /// Given by the user: kept until forgotten.
    Explicit,
    /// Learned from gossip: dropped when its peer leaves the topology.
    Discovered,
}

/// What the maker is doing about a target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetState {
    /// Waiting until the instant to try (again).
    Waiting {
        /// When the next attempt is due.
        next_attempt: Instant,
    },
    /// A connection attempt is under way.
    Connecting(ConnId),
    /// Connected: through our own connection or one the peer made to us.
    Connected(ConnId),
}

/// One address the router wants to be connected to.
#[derive(Clone, Debug)]
pub struct Target {
    /// Explicit or discovered.
    pub kind: TargetKind,
    /// What happens next.
    pub state: TargetState,
    /// Consecutive failed attempts (reset on success).
    pub failures: u32,
    /// The peer last found at this address.
    pub peer: Option<PeerName>,
    /// Why the last attempt failed, if it did.
    pub last_error: Option<ConnError>,
    /// When it was added or last stopped being connected (discovered targets expire
    /// [`DISCOVERED_TARGET_TTL_MS`] after this unless connected).
    pub idle_since: Instant,
}

impl fmt::Display for TargetState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Waiting { next_attempt } => write!(f, "waiting until {next_attempt}"),
            Self::Connecting(c) => write!(f, "connecting ({c})"),
            Self::Connected(c) => write!(f, "connected ({c})"),
        }
    }
}

/// Backoff settings.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    /// Delay after the first failure.
    pub base: Duration,
    /// Longest delay between attempts.
    pub max: Duration,
}

impl Backoff {
    /// Delay after `failures` consecutive failures, with up to 25% random jitter.
    pub fn delay(&self, failures: u32, rng: &mut Rng) -> Duration {
        let doublings = failures.saturating_sub(1).min(BACKOFF_DOUBLINGS_MAX);
        let raw = self.base.saturating_mul(1u64 << doublings).min(self.max);
        let jitter = rng.below(raw.total_micros() / 4 + 1);
        Duration::from_micros(raw.total_micros() + jitter)
    }
}

/// The set of targets and their retry state.
#[derive(Debug)]
pub struct Maker {
    targets: BTreeMap<SocketAddr, Target>,
    /// How many of `targets` are explicit.
    explicit_len: usize,
    backoff: Backoff,
}

impl Maker {
    /// An empty maker.
    pub fn new(backoff: Backoff) -> Self {
        Self {
            targets: BTreeMap::new(),
            explicit_len: 0,
            backoff,
        }
    }

    /// Adds (or promotes to explicit) a target to dial as soon as possible.
    /// Returns false if the table for its kind is full ([`EXPLICIT_TARGETS_LEN_MAX`],
    /// [`DISCOVERED_TARGETS_LEN_MAX`]): discovered targets never take an explicit one's room.
    pub fn add(&mut self, addr: SocketAddr, kind: TargetKind, now: Instant) -> bool {
        let explicit_full = self.explicit_len >= EXPLICIT_TARGETS_LEN_MAX;
        if let Some(t) = self.targets.get_mut(&addr) {
            if kind == TargetKind::Explicit {
                if t.kind == TargetKind::Discovered {
                    if explicit_full {
                        return false;
                    }
                    self.explicit_len += 1;
                }
                t.kind = TargetKind::Explicit;
                if let TargetState::Waiting { .. } = t.state {
                    t.state = TargetState::Waiting { next_attempt: now };
                    t.failures = 0;
                }
            }
            return true;
        }
        let full = match kind {
            TargetKind::Explicit => explicit_full,
            TargetKind::Discovered => {
                self.targets.len() - self.explicit_len >= DISCOVERED_TARGETS_LEN_MAX
            }
        };
        if full {
            return false;
        }
        if kind == TargetKind::Explicit {
            self.explicit_len += 1;
        }
        self.targets.insert(
            addr,
            Target {
                kind,
                state: TargetState::Waiting { next_attempt: now },
                failures: 0,
                peer: None,
                last_error: None,
                idle_since: now,
            },
        );
        true
    }

    /// Removes a target; returns the connection it had under way or up, if any.
    pub fn forget(&mut self, addr: SocketAddr) -> Option<ConnId> {
        let t = self.targets.remove(&addr)?;
        if t.kind == TargetKind::Explicit {
            self.explicit_len -= 1;
        }
        match t.state {
            TargetState::Connecting(c) | TargetState::Connected(c) => Some(c),
            TargetState::Waiting { .. } => None,
        }
    }

    /// Targets that are due now, at most `budget`, marked as connecting with ids from
    /// `next_id`: explicit ones first, so discovered targets (which any peer can announce
    /// by the thousand) never keep a `weft connect` target waiting for the budget.
    /// `connected` says whether a peer is already connected (then the target waits quietly).
    pub fn due(
        &mut self,
        now: Instant,
        budget: usize,
        mut next_id: impl FnMut() -> ConnId,
        connected: impl Fn(PeerName) -> Option<ConnId>,
    ) -> Vec<(ConnId, SocketAddr)> {
        let mut out = Vec::new();
        for kind in [TargetKind::Explicit, TargetKind::Discovered] {
            for (addr, t) in &mut self.targets {
                if out.len() >= budget {
                    return out;
                }
                if t.kind != kind {
                    continue;
                }
                let TargetState::Waiting { next_attempt } = t.state else {
                    continue;
                };
                if next_attempt > now {
                    continue;
                }
                if let Some(c) = t.peer.and_then(&connected) {
                    t.state = TargetState::Connected(c);
                    continue;
                }
                let id = next_id();
                t.state = TargetState::Connecting(id);
                out.push((id, *addr));
            }
        }
        out
    }

    /// Explicit targets due now (waiting, their attempt time passed): how many dials a
    /// `weft connect` target needs room for.
    pub fn explicit_due(&self, now: Instant) -> usize {
        self.targets
            .values()
            .filter(|t| {
                t.kind == TargetKind::Explicit
                    && matches!(t.state, TargetState::Waiting { next_attempt } if next_attempt <= now)
            })
            .count()
    }

    /// Up to `n` connections under way (dialing or handshaking) for discovered targets:
    /// the ones to stop when an explicit target needs their room.
    pub fn discovered_attempts(&self, n: usize) -> Vec<ConnId> {
        self.targets
            .values()
            .filter(|t| t.kind == TargetKind::Discovered)
            .filter_map(|t| match t.state {
                TargetState::Connecting(c) => Some(c),
                _ => None,
            })
            .take(n)
            .collect()
    }

    /// An attempt or connection for `conn` ended; schedule a retry with backoff.
    pub fn failed(&mut self, conn: ConnId, error: Option<ConnError>, now: Instant, rng: &mut Rng) {
        let backoff = self.backoff;
        for t in self.targets.values_mut() {
            let mine = matches!(t.state, TargetState::Connecting(c) | TargetState::Connected(c) if c == conn);
            if mine {
                if matches!(t.state, TargetState::Connected(_)) {
                    t.idle_since = now;
                }
                t.failures = t.failures.saturating_add(1);
                t.last_error = error.or(t.last_error);
                let delay = backoff.delay(t.failures, rng);
                t.state = TargetState::Waiting {
                    next_attempt: now + delay,
                };
            }
        }
    }

    /// `conn` reached `peer`. If it was dialed for a target, that target is now connected.
    /// Targets known to lead to `peer` are marked connected too, so they are not dialed twice.
    pub fn established(&mut self, conn: ConnId, peer: PeerName) {
        for t in self.targets.values_mut() {
            let mine = matches!(t.state, TargetState::Connecting(c) if c == conn);
            if mine {
                t.peer = Some(peer);
            }
            if mine || (t.peer == Some(peer) && matches!(t.state, TargetState::Waiting { .. })) {
                t.state = TargetState::Connected(conn);
                t.failures = 0;
                t.last_error = None;
            }
        }
    }

    /// The connection `conn` to a peer went away (or was a losing duplicate): targets that
    /// pointed at it wait for `delay` and then try again.
    pub fn disconnected(&mut self, conn: ConnId, now: Instant, delay: Duration) {
        for t in self.targets.values_mut() {
            if matches!(t.state, TargetState::Connecting(c) | TargetState::Connected(c) if c == conn)
            {
                if matches!(t.state, TargetState::Connected(_)) {
                    t.idle_since = now;
                }
                t.state = TargetState::Waiting {
                    next_attempt: now + delay,
                };
            }
        }
    }

    /// Drops discovered targets whose peer left the topology.
    pub fn drop_discovered_for(&mut self, peer: PeerName) {
        self.targets.retain(|_, t| {
            !(t.kind == TargetKind::Discovered
                && t.peer == Some(peer)
                && matches!(t.state, TargetState::Waiting { .. }))
        });
    }

    /// Drops discovered targets that have waited (failing, or never dialed) for
    /// [`DISCOVERED_TARGET_TTL_MS`] since they were learned or last connected; returns how
    /// many. Call now and then (the router does, once a second).
    pub fn expire_discovered(&mut self, now: Instant) -> usize {
        let ttl = Duration::from_millis(DISCOVERED_TARGET_TTL_MS);
        let before = self.targets.len();
        self.targets.retain(|_, t| {
            !(t.kind == TargetKind::Discovered
                && matches!(t.state, TargetState::Waiting { .. })
                && now.saturating_since(t.idle_since) >= ttl)
        });
        before - self.targets.len()
    }

    /// Number of explicit targets.
    pub fn explicit_len(&self) -> usize {
        self.explicit_len
    }

    /// The earliest due attempt.
    pub fn next_due(&self) -> Option<Instant> {
        self.targets
            .values()
            .filter_map(|t| match t.state {
                TargetState::Waiting { next_attempt } => Some(next_attempt),
                _ => None,
            })
            .min()
    }

    /// Whether `addr` is a target.
    pub fn contains(&self, addr: SocketAddr) -> bool {
        self.targets.contains_key(&addr)
    }

    /// All targets, in address order.
    pub fn iter(&self) -> impl Iterator<Item = (&SocketAddr, &Target)> {
        self.targets.iter()
    }

    /// Number of targets.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// True if there are no targets.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, i], 6783))
    }

    /// A maker whose retries back off from 1 s up to `max_secs`.
    fn maker(max_secs: u64) -> Maker {
        Maker::new(Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(max_secs),
        })
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(30),
        };
        let mut rng = Rng::from_seed(3);
        let d1 = b.delay(1, &mut rng).total_millis();
        let d3 = b.delay(3, &mut rng).total_millis();
        let d20 = b.delay(20, &mut rng).total_millis();
        assert!((1000..=1250).contains(&d1), "{d1}");
        assert!((4000..=5000).contains(&d3), "{d3}");
        assert!((30_000..=37_500).contains(&d20), "{d20}");
    }

    #[test]
    fn due_dials_explicit_targets_before_discovered_ones() {
        let mut m = maker(60);
        let t0 = Instant::from_millis(0);
        for i in 1..=5 {
            assert!(m.add(addr(i), TargetKind::Discovered, t0));
        }
        // Sorts after every discovered target.
        assert!(m.add(addr(200), TargetKind::Explicit, t0));
        assert_eq!(m.explicit_due(t0), 1);
        let mut next = 0;
        let mut ids = || {
            next += 1;
            ConnId(next)
        };
        let first = m.due(t0, 2, &mut ids, |_| None);
        assert_eq!(
            first,
            alloc::vec![(ConnId(1), addr(200)), (ConnId(2), addr(1))]
        );
        assert_eq!(m.explicit_due(t0), 0);
        // The attempts under way for discovered targets (the ones an explicit target may
        // stop), never the explicit one's.
        assert_eq!(m.discovered_attempts(5), alloc::vec![ConnId(2)]);
        let rest = m.due(t0, usize::MAX, &mut ids, |_| None);
        assert_eq!(rest.len(), 4);
        assert_eq!(m.discovered_attempts(2).len(), 2);
    }

    #[test]
    fn discovered_flood_leaves_room_for_explicit_and_expires() {
        let mut m = maker(60);
        let mut rng = Rng::from_seed(5);
        let t0 = Instant::from_millis(0);
        let flood = |i: usize| SocketAddr::from(([172, 16, (i >> 8) as u8, i as u8], 6783));
        let extra = 100;
        let refused = (0..DISCOVERED_TARGETS_LEN_MAX + extra)
            .filter(|&i| !m.add(flood(i), TargetKind::Discovered, t0))
            .count();
        assert_eq!(refused, extra);
        // An explicit target still fits, and a discovered one can be made explicit.
        assert!(m.add(addr(1), TargetKind::Explicit, t0));
        assert!(m.add(flood(0), TargetKind::Explicit, t0));
        assert_eq!(m.explicit_len(), 2);
        // One discovered target connects; the rest fail every time they are dialed.
        let mut next = 0;
        let mut ids = || {
            next += 1;
            ConnId(next)
        };
        let ttl = Duration::from_millis(DISCOVERED_TARGET_TTL_MS);
        let mut now = t0;
        let mut lucky = None;
        while now < t0 + ttl {
            for (id, a) in m.due(now, usize::MAX, &mut ids, |_| None) {
                if a == flood(1) && lucky.is_none() {
                    m.established(id, PeerName::from_u64(7));
                    lucky = Some(id);
                } else {
                    m.failed(id, Some(ConnError::ConnectFailed), now, &mut rng);
                }
            }
            assert_eq!(m.expire_discovered(now), 0, "at {now}");
            now += Duration::from_secs(1);
        }
        let expired = m.expire_discovered(now);
        // Everything discovered but the connected one and the promoted one goes.
        assert_eq!(expired, DISCOVERED_TARGETS_LEN_MAX - 2);
        let left: Vec<SocketAddr> = m.iter().map(|(a, _)| *a).collect();
        assert_eq!(left, alloc::vec![addr(1), flood(0), flood(1)]);
        // Room again for discovered ones; the connected one expires a TTL after it is lost.
        assert!(m.add(flood(2), TargetKind::Discovered, now));
        m.disconnected(lucky.unwrap(), now, Duration::from_secs(1));
        assert_eq!(m.expire_discovered(now + ttl - Duration::from_millis(1)), 0);
        assert_eq!(m.expire_discovered(now + ttl), 2);
        // Explicit targets never expire, and forgetting one frees its room.
        assert_eq!(m.len(), 2);
        assert!(m.forget(flood(0)).is_none());
        assert_eq!(m.explicit_len(), 1);
    }

    #[test]
    fn explicit_targets_have_their_own_cap() {
        let mut m = maker(60);
        let t0 = Instant::from_millis(0);
        let a = |i: usize| SocketAddr::from(([172, 17, (i >> 8) as u8, i as u8], 6783));
        for i in 0..EXPLICIT_TARGETS_LEN_MAX {
            assert!(m.add(a(i), TargetKind::Explicit, t0));
        }
        assert!(!m.add(addr(1), TargetKind::Explicit, t0));
        // Discovered room is untouched by explicit ones, but promotion needs explicit room.
        assert!(m.add(addr(2), TargetKind::Discovered, t0));
        assert!(!m.add(addr(2), TargetKind::Explicit, t0));
        assert_eq!(m.explicit_len(), EXPLICIT_TARGETS_LEN_MAX);
    }

    #[test]
    fn due_failed_established_cycle() {
        let mut m = maker(8);
        let mut rng = Rng::from_seed(1);
        let t0 = Instant::from_millis(0);
        assert!(m.add(addr(1), TargetKind::Explicit, t0));
        let mut next = 0;
        let mut ids = || {
            next += 1;
            ConnId(next)
        };
        let due = m.due(t0, 10, &mut ids, |_| None);
        assert_eq!(due, alloc::vec![(ConnId(1), addr(1))]);
        // Nothing else due while connecting.
        assert!(m.due(t0, 10, &mut ids, |_| None).is_empty());
        m.failed(ConnId(1), None, t0, &mut rng);
        let wait = m.next_due().unwrap();
        assert!(wait > t0);
        assert!(m.due(t0, 10, &mut ids, |_| None).is_empty());
        let due = m.due(wait, 10, &mut ids, |_| None);
        assert_eq!(due.len(), 1);
        m.established(due[0].0, PeerName::from_u64(9));
        assert!(matches!(
            m.iter().next().unwrap().1.state,
            TargetState::Connected(_)
        ));
        assert_eq!(m.forget(addr(1)), Some(due[0].0));
        assert!(m.is_empty());
    }
}
