//! Fast-datapath path checks: which direct peers the kernel's VXLAN path reaches, proven
//! by heartbeat frames that travel that very path (bridge -> VXLAN -> peer's bridge).
//!
//! What it does: encodes and parses heartbeat frames, tracks per peer when we last heard
//! one and whether the peer says it hears ours, and derives the set of peers that are on
//! the fast path ([`FastPaths::fast_set`]) with a reason for each that is not. A peer is
//! fast only when heartbeats work in both directions, so both ends agree (but for a
//! moment during a change). What it does not do: program the kernel (the host does, from
//! the set), or send frames (the caller writes them to its heartbeat port).
//!
//! It also carries each router's local container MACs, so that peers program one FDB
//! entry per remote container MAC (unicast goes to the one peer behind it, not to all).
//!
//! Frame: Ethernet to the peer's heartbeat MAC ([`heartbeat_mac`]), ethertype
//! [`HEARTBEAT_ETHERTYPE`], payload `magic (8) | sender (6) | receiver (6) | flags (1) |
//! seq (8) | mac count (2) | MACs (6 each)`, padded to the Ethernet minimum.

use crate::peer::PeerName;
use crate::switch::Mac;
use crate::time::{Duration, Instant};
use crate::wire::WireError;
use crate::wire::buf::{Reader, Writer};
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use core::fmt;

/// Ethertype of heartbeat frames (IEEE 802 local experimental). The sleeve never carries it.
pub const HEARTBEAT_ETHERTYPE: u16 = 0x88b5;
/// Magic at the start of the payload.
pub const HEARTBEAT_MAGIC: [u8; 8] = *b"weftfdp1";
/// Shortest heartbeat frame (the Ethernet minimum; shorter payloads are padded).
pub const HEARTBEAT_FRAME_LEN: usize = 60;
/// Most local MACs one heartbeat announces (keeps the frame under 1400 bytes).
pub const HEARTBEAT_MACS_MAX: usize = 220;
/// Longest heartbeat frame.
pub const HEARTBEAT_FRAME_LEN_MAX: usize = 14 + PAYLOAD_LEN + 2 + 6 * HEARTBEAT_MACS_MAX;
/// Heartbeat period per peer.
pub const FASTDP_HEARTBEAT_INTERVAL_MS: u64 = 1000;
/// A peer not heard on the fast path for this long falls back to the sleeve.
pub const FASTDP_HEARTBEAT_TIMEOUT_MS: u64 = 6000;
/// Most peers tracked.
pub const FASTDP_PEERS_MAX: usize = 4096;
const FLAG_HEARS_YOU: u8 = 1;
const PAYLOAD_LEN: usize = 8 + 6 + 6 + 1 + 8;

/// The MAC of a router's heartbeat port: its name with the locally-administered bit set.
pub fn heartbeat_mac(name: PeerName) -> Mac {
    let mut m = name.to_bytes();
    m[0] = (m[0] & 0xfc) | 0x02;
    m
}

/// A parsed heartbeat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    /// Who sent it.
    pub sender: PeerName,
    /// For whom.
    pub receiver: PeerName,
    /// The sender hears our heartbeats.
    pub hears_you: bool,
    /// Sender's sequence number.
    pub seq: u64,
    /// The sender's local container MACs (at most [`HEARTBEAT_MACS_MAX`]).
    pub macs: Vec<Mac>,
}

impl Heartbeat {
    /// Writes the whole Ethernet frame into `buf`; returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        if self.macs.len() > HEARTBEAT_MACS_MAX {
            return Err(WireError::Oversized);
        }
        if buf.len() < HEARTBEAT_FRAME_LEN {
            return Err(WireError::BufferTooSmall);
        }
        let mut w = Writer::new(buf);
        w.bytes(&heartbeat_mac(self.receiver))?;
        w.bytes(&heartbeat_mac(self.sender))?;
        w.u16(HEARTBEAT_ETHERTYPE)?;
        w.bytes(&HEARTBEAT_MAGIC)?;
        w.peer_name(self.sender)?;
        w.peer_name(self.receiver)?;
        w.u8(if self.hears_you { FLAG_HEARS_YOU } else { 0 })?;
        w.u64(self.seq)?;
        w.u16(self.macs.len() as u16)?;
        for m in &self.macs {
            w.bytes(m)?;
        }
        let len = w.len();
        if len < HEARTBEAT_FRAME_LEN {
            buf[len..HEARTBEAT_FRAME_LEN].fill(0);
        }
        Ok(len.max(HEARTBEAT_FRAME_LEN))
    }

    /// Parses an Ethernet frame; `Err(UnknownType)` for frames that are not heartbeats.
    pub fn parse(frame: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(frame);
        let _dst = r.bytes(6)?;
        let _src = r.bytes(6)?;
        if r.u16()? != HEARTBEAT_ETHERTYPE {
            return Err(WireError::UnknownType);
        }
        if r.array::<8>()? != HEARTBEAT_MAGIC {
            return Err(WireError::BadMagic);
        }
        let sender = r.peer_name()?;
        let receiver = r.peer_name()?;
        let flags = r.u8()?;
        if flags & !FLAG_HEARS_YOU != 0 {
            return Err(WireError::Inconsistent);
        }
        let seq = r.u64()?;
        let count = usize::from(r.u16()?);
        if count > HEARTBEAT_MACS_MAX {
            return Err(WireError::Oversized);
        }
        let mut macs = Vec::with_capacity(count);
        for _ in 0..count {
            let m: Mac = r.array()?;
            if m[0] & 1 != 0 {
                // A group address is never a container's.
                return Err(WireError::Inconsistent);
            }
            macs.push(m);
        }
        // Ethernet padding may follow; it is ignored.
        Ok(Self {
            sender,
            receiver,
            hears_you: flags & FLAG_HEARS_YOU != 0,
            seq,
            macs,
        })
    }
}

/// Why a peer is not on the fast path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SleeveReason {
    /// No heartbeat from the peer over the VXLAN path within the timeout.
    NoHeartbeat,
    /// We hear the peer, but it does not hear us.
    OneWay,
}

impl fmt::Display for SleeveReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NoHeartbeat => "no heartbeat on the fast path",
            Self::OneWay => "fast path works one way only",
        })
    }
}

#[derive(Clone, Debug)]
struct PeerState {
    last_heard: Option<Instant>,
    hears_us: bool,
    next_send: Instant,
    macs: BTreeSet<Mac>,
}

/// Heartbeat bookkeeping for every direct peer.
#[derive(Debug)]
pub struct FastPaths {
    me: PeerName,
    interval: Duration,
    timeout: Duration,
    seq: u64,
    peers: BTreeMap<PeerName, PeerState>,
    local_macs: Vec<Mac>,
}

impl FastPaths {
    /// Bookkeeping for router `me` with the default timers.
    pub fn new(me: PeerName) -> Self {
        Self::with_timers(
            me,
            Duration::from_millis(FASTDP_HEARTBEAT_INTERVAL_MS),
            Duration::from_millis(FASTDP_HEARTBEAT_TIMEOUT_MS),
        )
    }

    /// Bookkeeping with explicit timers.
    pub fn with_timers(me: PeerName, interval: Duration, timeout: Duration) -> Self {
        Self {
            me,
            interval,
            timeout,
            seq: 0,
            peers: BTreeMap::new(),
            local_macs: Vec::new(),
        }
    }

    /// The direct peers to check, replacing the previous set.
    pub fn set_peers(&mut self, now: Instant, peers: impl IntoIterator<Item = PeerName>) {
        let want: BTreeSet<PeerName> = peers.into_iter().take(FASTDP_PEERS_MAX).collect();
        self.peers.retain(|p, _| want.contains(p));
        for p in want {
            self.peers.entry(p).or_insert(PeerState {
                last_heard: None,
                hears_us: false,
                next_send: now,
                macs: BTreeSet::new(),
            });
        }
    }

    /// Call with every frame read from the heartbeat port; true if it was a heartbeat for us.
    pub fn handle_frame(&mut self, now: Instant, frame: &[u8]) -> bool {
        let Ok(hb) = Heartbeat::parse(frame) else {
            return false;
        };
        if hb.receiver != self.me {
            return false;
        }
        let Some(st) = self.peers.get_mut(&hb.sender) else {
            return false;
        };
        st.last_heard = Some(now);
        st.hears_us = hb.hears_you;
        st.macs = hb.macs.into_iter().collect();
        true
    }

    /// Our local container MACs, announced in every heartbeat (the first
    /// [`HEARTBEAT_MACS_MAX`]; the rest reach peers by flooding).
    pub fn set_local_macs(&mut self, macs: impl IntoIterator<Item = Mac>) {
        self.local_macs = macs
            .into_iter()
            .filter(|m| m[0] & 1 == 0)
            .take(HEARTBEAT_MACS_MAX)
            .collect();
    }

    /// The container MACs `peer` announced in its last heartbeat.
    pub fn peer_macs(&self, peer: PeerName) -> impl Iterator<Item = Mac> + '_ {
        self.peers
            .get(&peer)
            .into_iter()
            .flat_map(|s| s.macs.iter().copied())
    }

    fn hears(&self, st: &PeerState, now: Instant) -> bool {
        st.last_heard
            .is_some_and(|t| now.saturating_since(t) < self.timeout)
    }

    /// Writes the heartbeats that are due, one frame per `emit` call.
    pub fn poll_heartbeats(&mut self, now: Instant, mut emit: impl FnMut(PeerName, &[u8])) {
        let mut buf = [0u8; HEARTBEAT_FRAME_LEN_MAX];
        let names: Vec<PeerName> = self.peers.keys().copied().collect();
        for p in names {
            let Some(st) = self.peers.get(&p) else {
                continue;
            };
            if st.next_send > now {
                continue;
            }
            let hears_you = self.hears(st, now);
            self.seq += 1;
            let hb = Heartbeat {
                sender: self.me,
                receiver: p,
                hears_you,
                seq: self.seq,
                macs: self.local_macs.clone(),
            };
            if let Ok(n) = hb.emit(&mut buf) {
                emit(p, &buf[..n]);
            }
            if let Some(st) = self.peers.get_mut(&p) {
                st.next_send = now + self.interval;
            }
        }
    }

    /// When the next heartbeat is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.peers.values().map(|s| s.next_send).min()
    }

    /// `Ok(())` if `peer` is on the fast path, else why not.
    pub fn mode(&self, peer: PeerName, now: Instant) -> Result<(), SleeveReason> {
        let st = self.peers.get(&peer).ok_or(SleeveReason::NoHeartbeat)?;
        match (self.hears(st, now), st.hears_us) {
            (true, true) => Ok(()),
            (true, false) => Err(SleeveReason::OneWay),
            (false, _) => Err(SleeveReason::NoHeartbeat),
        }
    }

    /// Peers whose fast path works both ways.
    pub fn fast_set(&self, now: Instant) -> BTreeSet<PeerName> {
        self.peers
            .keys()
            .copied()
            .filter(|p| self.mode(*p, now).is_ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(i: u64) -> PeerName {
        PeerName::from_u64(0xaa00 + i)
    }

    #[test]
    fn heartbeat_roundtrip_and_rejects() {
        let hb = Heartbeat {
            sender: n(1),
            receiver: n(2),
            hears_you: true,
            seq: 9,
            macs: Vec::new(),
        };
        let mut buf = [0u8; 64];
        let len = hb.emit(&mut buf).unwrap();
        assert_eq!(Heartbeat::parse(&buf[..len]), Ok(hb.clone()));
        // With MACs: round trip, and a group MAC or an oversized count is refused.
        let mut big = [0u8; HEARTBEAT_FRAME_LEN_MAX];
        let with = Heartbeat {
            macs: alloc::vec![[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]],
            ..hb.clone()
        };
        let n_with = with.emit(&mut big).unwrap();
        assert_eq!(Heartbeat::parse(&big[..n_with]), Ok(with));
        let mut group = big;
        group[14 + 29 + 2] = 0x01;
        assert_eq!(
            Heartbeat::parse(&group[..n_with]),
            Err(WireError::Inconsistent)
        );
        let mut count = big;
        count[14 + 29] = 0xff;
        assert_eq!(
            Heartbeat::parse(&count[..n_with]),
            Err(WireError::Oversized)
        );
        let too_many = Heartbeat {
            macs: alloc::vec![[2, 0, 0, 0, 0, 1]; HEARTBEAT_MACS_MAX + 1],
            ..hb.clone()
        };
        assert_eq!(too_many.emit(&mut big), Err(WireError::Oversized));
        assert_eq!(&buf[..6], &heartbeat_mac(n(2)));
        assert_eq!(
            heartbeat_mac(n(2))[0] & 0x03,
            0x02,
            "unicast, locally administered"
        );
        for cut in 0..45 {
            assert!(Heartbeat::parse(&buf[..cut]).is_err(), "{cut}");
        }
        let mut other = buf;
        other[12] = 0x08;
        assert_eq!(Heartbeat::parse(&other), Err(WireError::UnknownType));
        let mut bad = buf;
        bad[14] ^= 1;
        assert_eq!(Heartbeat::parse(&bad), Err(WireError::BadMagic));
        let mut flags = buf;
        flags[14 + 20] = 0x80;
        assert_eq!(Heartbeat::parse(&flags), Err(WireError::Inconsistent));
    }

    /// Two routers whose fast path can be cut one way or the other.
    fn exchange(a: &mut FastPaths, b: &mut FastPaths, now: Instant, a_to_b: bool, b_to_a: bool) {
        let mut ab = Vec::new();
        let mut ba = Vec::new();
        a.poll_heartbeats(now, |_, f| ab.push(f.to_vec()));
        b.poll_heartbeats(now, |_, f| ba.push(f.to_vec()));
        if a_to_b {
            for f in &ab {
                assert!(b.handle_frame(now, f));
            }
        }
        if b_to_a {
            for f in &ba {
                assert!(a.handle_frame(now, f));
            }
        }
    }

    #[test]
    fn fast_only_both_ways_falls_back_and_returns() {
        let (mut a, mut b) = (FastPaths::new(n(1)), FastPaths::new(n(2)));
        let t0 = Instant::ZERO;
        a.set_peers(t0, [n(2)]);
        b.set_peers(t0, [n(1)]);
        let mut t = t0;
        for _ in 0..3 {
            exchange(&mut a, &mut b, t, true, true);
            t += Duration::from_millis(FASTDP_HEARTBEAT_INTERVAL_MS);
        }
        assert!(a.fast_set(t).contains(&n(2)));
        assert!(b.fast_set(t).contains(&n(1)));
        // Local MACs travel with the heartbeats.
        b.set_local_macs([[2, 0, 0, 0, 0, 0xb], [1, 0, 0, 0, 0, 0xc]]);
        exchange(&mut a, &mut b, t, true, true);
        t += Duration::from_millis(FASTDP_HEARTBEAT_INTERVAL_MS);
        let macs: Vec<Mac> = a.peer_macs(n(2)).collect();
        assert_eq!(
            macs,
            alloc::vec![[2, 0, 0, 0, 0, 0xb]],
            "group MACs are never announced"
        );
        // Cut a -> b: b stops hearing a, then a learns b no longer hears it.
        for _ in 0..8 {
            exchange(&mut a, &mut b, t, false, true);
            t += Duration::from_millis(FASTDP_HEARTBEAT_INTERVAL_MS);
        }
        assert_eq!(b.mode(n(1), t), Err(SleeveReason::NoHeartbeat));
        assert_eq!(a.mode(n(2), t), Err(SleeveReason::OneWay));
        // Heal: both fast again within a few heartbeats.
        for _ in 0..3 {
            exchange(&mut a, &mut b, t, true, true);
            t += Duration::from_millis(FASTDP_HEARTBEAT_INTERVAL_MS);
        }
        assert!(a.fast_set(t).contains(&n(2)) && b.fast_set(t).contains(&n(1)));
        // A heartbeat for someone else, or from a stranger, changes nothing.
        let mut buf = [0u8; 64];
        let stray = Heartbeat {
            sender: n(7),
            receiver: n(1),
            hears_you: true,
            seq: 1,
            macs: Vec::new(),
        };
        let len = stray.emit(&mut buf).unwrap();
        assert!(!a.handle_frame(t, &buf[..len]));
        assert_eq!(a.fast_set(t).len(), 1);
    }
}
