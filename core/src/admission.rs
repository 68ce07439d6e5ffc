//! Admission: which inbound streams may take a connection slot.
//!
//! Two guards against hostile or broken clients on the control port, decided here and
//! enforced by the [`crate::router`]:
//! - a budget for inbound connections still in their handshake ("pending"), overall and
//!   per source address, kept apart from established and outbound connections so that
//!   idle streams can never stop us dialing or keep a real peer out for long;
//! - a lockout for addresses that keep failing the password check, so a password can be
//!   tried online only a few times a minute per address.
//!
//! What it does not do: count established or outbound connections (the router's
//! `conn_limit` does), close streams or read a clock (the router does both).

use crate::conn::{ConnError, ConnId};
use crate::crypto::CryptoError;
use crate::time::{Duration, Instant};
use alloc::collections::BTreeMap;
use core::fmt;
use core::net::{IpAddr, Ipv6Addr};

/// Most inbound connections still in their handshake, from all addresses together.
pub const PENDING_INBOUND_MAX: usize = 64;
/// Most inbound connections still in their handshake from one address (one IPv4 address,
/// or one IPv6 /64: see [`addr_key`]).
pub const PENDING_INBOUND_PER_ADDR_MAX: usize = 8;
/// Failed password checks from one address within [`PASSWORD_FAILURE_WINDOW_MS`] that start
/// a lockout.
pub const PASSWORD_FAILURES_MAX: u32 = 5;
/// The window over which failed password checks are counted.
pub const PASSWORD_FAILURE_WINDOW_MS: u64 = 60_000;
/// How long a locked-out address has its new inbound connections refused.
pub const LOCKOUT_MS: u64 = 60_000;
/// Most addresses the lockout table tracks; past it the least recently failed goes.
pub const LOCKOUT_TABLE_LEN_MAX: usize = 1024;
/// IPv6 sources are grouped by this prefix: one host usually owns a whole /64.
pub const ADDR_KEY_V6_PREFIX_LEN_BITS: u32 = 64;

/// The address an inbound stream is accounted to: an IPv4 address (also when mapped into
/// IPv6), or the /64 an IPv6 address is in.
pub fn addr_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mask = u128::MAX << (128 - ADDR_KEY_V6_PREFIX_LEN_BITS);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
        },
    }
}

/// Why an inbound stream was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Established and outbound connections already fill the connection limit.
    ConnLimit,
    /// Every pending slot is taken by connections that already sent their hello.
    PendingFull,
    /// This address already has [`PENDING_INBOUND_PER_ADDR_MAX`] pending connections.
    PendingPerAddr,
    /// This address failed the password check too often; it is locked out for now.
    LockedOut,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ConnLimit => f.write_str("connection limit reached"),
            Self::PendingFull => write!(
                f,
                "{PENDING_INBOUND_MAX} connections are already in their handshake"
            ),
            Self::PendingPerAddr => write!(
                f,
                "{PENDING_INBOUND_PER_ADDR_MAX} connections from this address are already \
                 in their handshake"
            ),
            Self::LockedOut => f.write_str("address locked out after failed password checks"),
        }
    }
}

/// What to do with a new inbound stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Take it.
    Accept,
    /// Take it after closing this older pending connection (no hello yet) to make room.
    Evict(ConnId),
    /// Close it at once.
    Refuse(Refusal),
}

/// One inbound connection still in its handshake, as [`admit`] needs to see it.
#[derive(Clone, Copy, Debug)]
pub struct Pending {
    /// Its id (ids grow with time, so the smallest is the oldest).
    pub id: ConnId,
    /// [`addr_key`] of its source address.
    pub key: IpAddr,
    /// Whether the peer's hello arrived (then it is never evicted: it is doing its part).
    pub hello_seen: bool,
}

/// Decides about a new inbound stream from `remote`. `pending` are the inbound
/// connections still in their handshake; `settled` the other connections and
/// `settled_max` their limit; `locked` whether `remote` is locked out.
pub fn admit(
    pending: impl Iterator<Item = Pending>,
    remote: IpAddr,
    locked: bool,
    settled: usize,
    settled_max: usize,
) -> Admit {
    if locked {
        return Admit::Refuse(Refusal::LockedOut);
    }
    if settled >= settled_max {
        return Admit::Refuse(Refusal::ConnLimit);
    }
    let key = addr_key(remote);
    let (mut total, mut same) = (0usize, 0usize);
    let mut oldest_silent: Option<ConnId> = None;
    for p in pending {
        total += 1;
        if p.key == key {
            same += 1;
        }
        if !p.hello_seen && oldest_silent.is_none_or(|o| p.id < o) {
            oldest_silent = Some(p.id);
        }
    }
    if same >= PENDING_INBOUND_PER_ADDR_MAX {
        return Admit::Refuse(Refusal::PendingPerAddr);
    }
    if total < PENDING_INBOUND_MAX {
        return Admit::Accept;
    }
    match oldest_silent {
        Some(id) => Admit::Evict(id),
        None => Admit::Refuse(Refusal::PendingFull),
    }
}

/// Whether an inbound connection on a password-protected router that ended with `error`
/// is a failed password check. `hello_seen`: the peer's hello had been accepted;
/// `confirming`: it was still waiting for the peer's confirm when it ended.
///
/// Besides the plain wrong password, a client that took our confirm and then went away
/// (closed the stream, or let the handshake time out) counts too: it may have checked a
/// guess against what we sent without ever sending its own confirm.
pub fn is_password_failure(error: ConnError, hello_seen: bool, confirming: bool) -> bool {
    match error {
        ConnError::Crypto(CryptoError::WrongPassword) => true,
        ConnError::HandshakeTimeout => hello_seen,
        ConnError::StreamClosed => confirming,
        _ => false,
    }
}

#[derive(Clone, Copy, Debug)]
struct Strikes {
    failures: u32,
    window_start: Instant,
    locked_until: Option<Instant>,
    last_failure: Instant,
}

/// Failed password checks per address, and the addresses locked out because of them.
/// Bounded by [`LOCKOUT_TABLE_LEN_MAX`].
#[derive(Debug, Default)]
pub struct Lockouts {
    table: BTreeMap<IpAddr, Strikes>,
    evictions: u64,
}

impl Lockouts {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Until when `ip` is locked out, if it is at `now`.
    pub fn locked_until(&self, ip: IpAddr, now: Instant) -> Option<Instant> {
        let until = self.table.get(&addr_key(ip))?.locked_until?;
        (now < until).then_some(until)
    }

    /// Counts a failed password check from `ip`. Returns the end of the lockout when this
    /// failure starts one (once per lockout: failures while locked out do not extend it).
    pub fn record_failure(&mut self, ip: IpAddr, now: Instant) -> Option<Instant> {
        let key = addr_key(ip);
        if !self.table.contains_key(&key) && self.table.len() >= LOCKOUT_TABLE_LEN_MAX {
            let oldest = self
                .table
                .iter()
                .min_by_key(|(_, s)| s.last_failure)
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                self.table.remove(&k);
                self.evictions += 1;
            }
        }
        let window = Duration::from_millis(PASSWORD_FAILURE_WINDOW_MS);
        let s = self.table.entry(key).or_insert(Strikes {
            failures: 0,
            window_start: now,
            locked_until: None,
            last_failure: now,
        });
        s.last_failure = now;
        if s.locked_until.is_some_and(|u| now < u) {
            return None;
        }
        if s.locked_until.is_some() || now.saturating_since(s.window_start) >= window {
            // A lockout served or an old window: count afresh.
            *s = Strikes {
                failures: 0,
                window_start: now,
                locked_until: None,
                last_failure: now,
            };
        }
        s.failures += 1;
        if s.failures < PASSWORD_FAILURES_MAX {
            return None;
        }
        let until = now + Duration::from_millis(LOCKOUT_MS);
        s.locked_until = Some(until);
        Some(until)
    }

    /// Forgets addresses whose window and lockout have both passed. Call now and then.
    pub fn expire(&mut self, now: Instant) {
        let window = Duration::from_millis(PASSWORD_FAILURE_WINDOW_MS);
        self.table.retain(|_, s| match s.locked_until {
            Some(until) => now < until,
            None => now.saturating_since(s.window_start) < window,
        });
    }

    /// Addresses tracked.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// True if no address is tracked.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Addresses dropped from the full table to make room for another.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn ip(a: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, a])
    }

    fn pending(n: usize, key: IpAddr, hello_seen: bool) -> Vec<Pending> {
        (0..n)
            .map(|i| Pending {
                id: ConnId(100 + i as u64),
                key,
                hello_seen,
            })
            .collect()
    }

    #[test]
    fn ipv6_sources_share_their_slash_64_and_mapped_v4_is_v4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(addr_key(a), addr_key(b));
        assert_ne!(addr_key(a), addr_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(addr_key(mapped), ip(7));
    }

    #[test]
    fn admit_caps_per_address_then_evicts_the_oldest_silent_one() {
        let full_addr = pending(PENDING_INBOUND_PER_ADDR_MAX, ip(1), false);
        assert_eq!(
            admit(full_addr.iter().copied(), ip(1), false, 0, 10),
            Admit::Refuse(Refusal::PendingPerAddr)
        );
        assert_eq!(
            admit(full_addr.into_iter(), ip(2), false, 0, 10),
            Admit::Accept
        );
        // The budget full of distinct addresses: the oldest without a hello makes room.
        let mut all: Vec<Pending> = (0..PENDING_INBOUND_MAX)
            .map(|i| Pending {
                id: ConnId(10 + i as u64),
                key: IpAddr::from([198, 51, (i / 200) as u8, (i % 200) as u8]),
                hello_seen: i < 3,
            })
            .collect();
        assert_eq!(
            admit(all.iter().copied(), ip(9), false, 0, 10),
            Admit::Evict(ConnId(13))
        );
        for p in &mut all {
            p.hello_seen = true;
        }
        assert_eq!(
            admit(all.into_iter(), ip(9), false, 0, 10),
            Admit::Refuse(Refusal::PendingFull)
        );
        assert_eq!(
            admit(core::iter::empty(), ip(9), false, 10, 10),
            Admit::Refuse(Refusal::ConnLimit)
        );
        assert_eq!(
            admit(core::iter::empty(), ip(9), true, 0, 10),
            Admit::Refuse(Refusal::LockedOut)
        );
    }

    #[test]
    fn five_failures_in_the_window_lock_out_once_then_the_lockout_ends() {
        let mut l = Lockouts::new();
        let t0 = Instant::from_millis(1_000);
        for k in 0..PASSWORD_FAILURES_MAX - 1 {
            assert_eq!(
                l.record_failure(ip(1), t0 + Duration::from_secs(k.into())),
                None
            );
        }
        assert_eq!(l.locked_until(ip(1), t0), None);
        let t5 = t0 + Duration::from_secs(10);
        let until = l
            .record_failure(ip(1), t5)
            .expect("the fifth failure locks out");
        assert_eq!(until, t5 + Duration::from_millis(LOCKOUT_MS));
        assert_eq!(l.locked_until(ip(1), t5), Some(until));
        assert_eq!(l.locked_until(ip(2), t5), None);
        // Failures while locked out neither report again nor extend the lockout.
        assert_eq!(l.record_failure(ip(1), t5 + Duration::from_secs(1)), None);
        assert_eq!(l.locked_until(ip(1), until), None);
        // Afterwards one failure does not lock out again.
        assert_eq!(l.record_failure(ip(1), until), None);
        assert_eq!(l.locked_until(ip(1), until), None);
    }

    #[test]
    fn failures_spread_wider_than_the_window_never_lock_out() {
        let mut l = Lockouts::new();
        let step = Duration::from_millis(PASSWORD_FAILURE_WINDOW_MS / 4 + 1);
        let mut t = Instant::from_millis(0);
        for _ in 0..20 {
            assert_eq!(l.record_failure(ip(1), t), None);
            t += step;
        }
    }

    #[test]
    fn the_table_is_bounded_and_expires() {
        let mut l = Lockouts::new();
        let t0 = Instant::from_millis(0);
        for i in 0..LOCKOUT_TABLE_LEN_MAX + 10 {
            let a = IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
            l.record_failure(a, t0 + Duration::from_micros(i as u64));
        }
        assert_eq!(l.len(), LOCKOUT_TABLE_LEN_MAX);
        assert_eq!(l.evictions(), 10);
        l.expire(t0 + Duration::from_millis(PASSWORD_FAILURE_WINDOW_MS - 1));
        assert_eq!(l.len(), LOCKOUT_TABLE_LEN_MAX);
        l.expire(t0 + Duration::from_millis(PASSWORD_FAILURE_WINDOW_MS + 2));
        assert!(l.is_empty());
    }
}
