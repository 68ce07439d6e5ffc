//! The sleeve's invariants, checked against what the simulated hosts did: the frames
//! containers sent and bridges got, the frames on the wire, the datagrams each engine
//! accepted, and each engine's paths.
//!
//! * Delivery: a frame reaches a bridge unaltered and never its origin's; once routes have
//!   settled, at most once per host and, where the network lost nothing, a broadcast
//!   reaches every other member of the origin's component and a unicast only its
//!   destination's host.
//! * No relay loop: once routes have settled, no hop sends a frame to a host that was sent
//!   it already, or back to its origin (read off plain datagrams on the wire; sealed ones
//!   hide their frames).
//! * No replay: a host's engine entry for a sender (one run of the host, one connection's
//!   keys or, plain, one stretch of connections) accepts a datagram counter once, however
//!   often the network delivers it.
//! * Paths: a path's PMTU never exceeds what its link carries and is known on links that
//!   carry the probe; paths across a cut are down after the heartbeat timeout, and up
//!   again after the heal.
//!
//! Recording is [`crate::sleeve_node`]'s; the checks are pure functions over a
//! [`SleeveTrace`] or [`PathView`]s, so each is shown to fail on a bad trace below.
//!
//! While routes move (a partition, a heal, a restart) each host relays by its own view of
//! the broadcast trees and next hops, and a datagram carries no hop count or broadcast id:
//! a broadcast can then reach a host twice, and a frame can bounce between two hosts until
//! their routes agree. The engine promises no more, so neither do these checks
//! ([`Expect::Intact`]).
//!
//! What it does not do: decide when to check or what a phase may expect
//! ([`crate::sleeve_scenario`]).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use weft_core::peer::PeerName;
use weft_core::switch::Mac;
use weft_core::time::Instant;

use crate::net::{IPV4_UDP_HEADER_BYTES, content_hash};

/// EtherType of the test frames (IEEE local experimental 2; experimental 1 is the fast
/// path's heartbeat, which the sleeve never carries).
pub const FRAME_ETHERTYPE: u16 = 0x88b6;
/// Where a test frame carries its id: right after the Ethernet header.
const FRAME_ID_AT: usize = 14;
/// Shortest test frame (Ethernet's minimum without the FCS).
pub const FRAME_LEN_MIN: usize = 60;
/// Most frames one trace records.
pub const TRACE_FRAMES_MAX: usize = 1 << 16;
/// Most hops recorded per frame (a loop is caught long before).
pub const TRACE_HOPS_PER_FRAME_MAX: usize = 1 << 10;
/// Most accepted datagrams one trace records.
pub const TRACE_ACCEPTED_MAX: usize = 1 << 20;
/// The underlay MTU the engine sizes its one PMTU probe for (a full frame datagram on
/// Ethernet: see `handle_timeout` in `weft_core::sleeve`). Links at least this big carry it.
pub const PMTU_PROBE_UNDERLAY_BYTES: u16 = 1500;

/// The MAC of the one container on host `host`.
pub fn container_mac(host: usize) -> Mac {
    let h = (host as u32).to_be_bytes();
    [0x02, 0xc0, h[0], h[1], h[2], h[3]]
}

/// A test frame from the container on `origin` to the one on `to` (`None`: broadcast),
/// `len` bytes long (at least [`FRAME_LEN_MIN`]), carrying `id` and padding made from it.
pub fn test_frame(id: u64, origin: usize, to: Option<usize>, len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(len.max(FRAME_LEN_MIN));
    f.extend_from_slice(&to.map_or([0xff; 6], container_mac));
    f.extend_from_slice(&container_mac(origin));
    f.extend_from_slice(&FRAME_ETHERTYPE.to_be_bytes());
    f.extend_from_slice(&id.to_be_bytes());
    let mut x = crate::net::mix(id);
    while f.len() < len.max(FRAME_LEN_MIN) {
        f.push(x as u8);
        x = x.rotate_right(8) ^ 0x5a;
    }
    f
}

/// The id of a test frame; `None` for anything else.
pub fn frame_id(frame: &[u8]) -> Option<u64> {
    if frame.get(12..14)? != FRAME_ETHERTYPE.to_be_bytes() {
        return None;
    }
    let b = frame.get(FRAME_ID_AT..FRAME_ID_AT + 8)?;
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

/// A frame a container sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SentFrame {
    /// The host of the sending container.
    pub origin: usize,
    /// The host of the container it is for; `None` for a broadcast.
    pub to: Option<usize>,
    /// Hash of its bytes.
    pub hash: u64,
    /// When it was sent.
    pub at: Instant,
}

/// What a host's bridge got of one frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delivered {
    /// How many times.
    pub count: u32,
    /// How many of those differed from what was sent.
    pub corrupt: u32,
}

/// One datagram as its receiver's replay window knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct AcceptKey {
    /// The receiving host.
    pub host: usize,
    /// Which run of that host (a restart forgets its windows, as on a real host).
    pub incarnation: u32,
    /// The hop that sent it.
    pub sender: PeerName,
    /// Which of the receiver's engine entries for the sender took it: a new entry (the
    /// peer was removed when its connection went, or came with new keys) starts a new
    /// replay window.
    pub entry: u64,
    /// The datagram's counter.
    pub counter: u64,
}

/// Everything the sleeve checks look at, recorded as the run goes.
#[derive(Debug, Default)]
pub struct SleeveTrace {
    frames: BTreeMap<u64, SentFrame>,
    next_id: u64,
    deliveries: BTreeMap<(u64, usize), Delivered>,
    /// Frames on a bridge that were no test frame (or never sent).
    strays: u64,
    hops: BTreeMap<u64, Vec<(usize, usize)>>,
    accepted: BTreeMap<AcceptKey, u32>,
    /// What filled up, if something did (the checks then fail: the run was too long).
    overflow: Option<&'static str>,
}

impl SleeveTrace {
    /// The id the next sent frame gets: frames sent from now on are `next_id()..`.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Records a frame the container on `origin` sends at `at` and returns its bytes.
    pub fn send(&mut self, origin: usize, to: Option<usize>, len: usize, at: Instant) -> Vec<u8> {
        let id = self.next_id;
        self.next_id += 1;
        let f = test_frame(id, origin, to, len);
        if self.frames.len() >= TRACE_FRAMES_MAX {
            self.overflow = Some("frames");
            return f;
        }
        let hash = content_hash(&f);
        self.frames.insert(
            id,
            SentFrame {
                origin,
                to,
                hash,
                at,
            },
        );
        f
    }

    /// Records that `host`'s bridge got `frame`.
    pub fn delivered(&mut self, host: usize, frame: &[u8]) {
        let Some((id, sent)) = frame_id(frame).and_then(|id| Some((id, self.frames.get(&id)?)))
        else {
            self.strays += 1;
            return;
        };
        let corrupt = sent.hash != content_hash(frame);
        let d = self.deliveries.entry((id, host)).or_default();
        d.count += 1;
        d.corrupt += u32::from(corrupt);
    }

    /// Records that `from` sent frame `id` to the next hop `to`.
    pub fn hop(&mut self, id: u64, from: usize, to: usize) {
        let hops = self.hops.entry(id).or_default();
        if hops.len() >= TRACE_HOPS_PER_FRAME_MAX {
            self.overflow = Some("hops of one frame");
            return;
        }
        hops.push((from, to));
    }

    /// Records that a host's engine accepted the datagram `key`.
    pub fn accepted(&mut self, key: AcceptKey) {
        if self.accepted.len() >= TRACE_ACCEPTED_MAX && !self.accepted.contains_key(&key) {
            self.overflow = Some("accepted datagrams");
            return;
        }
        *self.accepted.entry(key).or_default() += 1;
    }

    /// The frame `id`, if it was sent.
    pub fn frame(&self, id: u64) -> Option<&SentFrame> {
        self.frames.get(&id)
    }

    /// What each host's bridge got of frame `id`.
    pub fn deliveries(&self, id: u64) -> impl Iterator<Item = (usize, Delivered)> + '_ {
        self.deliveries
            .range((id, 0)..=(id, usize::MAX))
            .map(|((_, h), d)| (*h, *d))
    }

    /// The hops frame `id` took on the wire, in order (plain datagrams only).
    pub fn hops(&self, id: u64) -> &[(usize, usize)] {
        self.hops.get(&id).map_or(&[], Vec::as_slice)
    }

    /// Copies beyond the first that reached a bridge, of frames `ids`.
    pub fn duplicates(&self, ids: Range<u64>) -> u64 {
        self.deliveries
            .range((ids.start, 0)..(ids.end, 0))
            .map(|(_, d)| u64::from(d.count.saturating_sub(1)))
            .sum()
    }

    /// Frames bridges got that no container sent.
    pub fn strays(&self) -> u64 {
        self.strays
    }

    /// Datagrams accepted so far (counting each once).
    pub fn accepted_len(&self) -> usize {
        self.accepted.len()
    }

    fn not_full(&self) -> Result<(), String> {
        match self.overflow {
            Some(what) => Err(format!("the trace ran out of room for {what}")),
            None => Ok(()),
        }
    }
}

/// What a phase of a run may expect of a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Routes moving: unaltered, never at the origin.
    Intact,
    /// Lossy network, routes still: at most once per host, never at the origin.
    AtMostOnce,
    /// Nothing lost, routes still: exactly the hosts it is for, within this component
    /// (sorted host indices, the origin among them).
    Exactly(Vec<usize>),
}

/// Checks the deliveries of frames `ids` against what `expect` says of each.
pub fn check_deliveries(
    t: &SleeveTrace,
    ids: Range<u64>,
    expect: impl Fn(&SentFrame) -> Expect,
) -> Result<(), String> {
    t.not_full()?;
    if t.strays > 0 {
        return Err(format!(
            "{} frames reached a bridge that nobody sent",
            t.strays
        ));
    }
    for id in ids {
        let Some(f) = t.frame(id) else { continue };
        let expect = expect(f);
        let mut got = BTreeSet::new();
        for (host, d) in t.deliveries(id) {
            if host == f.origin {
                return Err(format!("frame {id} from {} came back to it", f.origin));
            }
            if d.count > 1 && expect != Expect::Intact {
                return Err(format!(
                    "frame {id} from {} reached host {host} {} times",
                    f.origin, d.count
                ));
            }
            if d.corrupt > 0 {
                return Err(format!("frame {id} reached host {host} altered"));
            }
            got.insert(host);
        }
        if let Expect::Exactly(members) = expect {
            let want: BTreeSet<usize> = match f.to {
                None => members.iter().copied().filter(|&h| h != f.origin).collect(),
                Some(to) => [to].into(),
            };
            if got != want {
                let what = if f.to.is_some() {
                    "unicast"
                } else {
                    "broadcast"
                };
                return Err(format!(
                    "{what} frame {id} from {}: reached {got:?}, should have reached {want:?}",
                    f.origin
                ));
            }
        }
    }
    Ok(())
}

/// Checks that none of frames `ids` was sent to a host twice or back to its origin, over
/// all hops.
pub fn check_no_relay_loop(t: &SleeveTrace, ids: Range<u64>) -> Result<(), String> {
    t.not_full()?;
    for (id, hops) in t.hops.range(ids) {
        let origin = t.frame(*id).map(|f| f.origin);
        let mut seen = BTreeSet::new();
        for &(from, to) in hops {
            if Some(to) == origin {
                return Err(format!(
                    "frame {id}: {from} sent it back to its origin {to}"
                ));
            }
            if !seen.insert(to) {
                return Err(format!(
                    "frame {id}: {from} sent it to {to}, which had it already (hops {hops:?})"
                ));
            }
        }
    }
    Ok(())
}

/// Checks that no datagram was accepted twice.
pub fn check_no_replay(t: &SleeveTrace) -> Result<(), String> {
    t.not_full()?;
    match t.accepted.iter().find(|(_, n)| **n > 1) {
        Some((k, n)) => Err(format!(
            "host {} (run {}) accepted datagram {} from {} {n} times",
            k.host, k.incarnation, k.counter, k.sender
        )),
        None => Ok(()),
    }
}

/// One sleeve path as a host's engine shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathView {
    /// The host.
    pub host: usize,
    /// The peer at the other end.
    pub peer: usize,
    /// Heard from within the heartbeat timeout.
    pub up: bool,
    /// Largest datagram known to reach the peer.
    pub pmtu_bytes: Option<u16>,
}

/// Checks each path's PMTU against its link's MTU (`link_mtu`): never more than the link
/// carries and, once `settled` (a few heartbeats after the path came up with nothing
/// lost), known on every link that carries the engine's probe.
pub fn check_pmtu(
    paths: &[PathView],
    link_mtu: impl Fn(usize, usize) -> u16,
    settled: bool,
) -> Result<(), String> {
    for p in paths {
        let mtu = link_mtu(p.host, p.peer);
        match p.pmtu_bytes {
            Some(b) if usize::from(b) + IPV4_UDP_HEADER_BYTES > usize::from(mtu) => {
                return Err(format!(
                    "host {} path to {}: PMTU {b} bytes over a link of MTU {mtu}",
                    p.host, p.peer
                ));
            }
            None if settled && mtu >= PMTU_PROBE_UNDERLAY_BYTES => {
                return Err(format!(
                    "host {} path to {}: PMTU still unknown on a link of MTU {mtu}",
                    p.host, p.peer
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks that every pair `(host, peer)` in `pairs` has its path up (`want_up`), or that
/// none of them has (absent paths count as down).
pub fn check_paths(
    paths: &[PathView],
    pairs: &[(usize, usize)],
    want_up: bool,
) -> Result<(), String> {
    for &(host, peer) in pairs {
        let up = paths
            .iter()
            .any(|p| p.host == host && p.peer == peer && p.up);
        if up != want_up {
            return Err(format!(
                "host {host} path to {peer} is {} (should be {})",
                if up { "up" } else { "down or absent" },
                if want_up { "up" } else { "down" }
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Instant = Instant::ZERO;

    /// Host 0 broadcasts frame 0 and sends frame 1 to host 2, in a component {0, 1, 2}:
    /// delivered as they should be.
    fn good() -> (SleeveTrace, Vec<u8>, Vec<u8>) {
        let mut t = SleeveTrace::default();
        let bc = t.send(0, None, 80, T);
        let uc = t.send(0, Some(2), 80, T);
        t.delivered(1, &bc);
        t.delivered(2, &bc);
        t.delivered(2, &uc);
        t.hop(0, 0, 1);
        t.hop(0, 1, 2);
        t.hop(1, 0, 1);
        t.hop(1, 1, 2);
        (t, bc, uc)
    }

    fn exact(_: &SentFrame) -> Expect {
        Expect::Exactly(vec![0, 1, 2])
    }

    #[test]
    fn frames_carry_their_id_and_others_have_none() {
        let f = test_frame(77, 3, Some(4), 100);
        assert_eq!(f.len(), 100);
        assert_eq!(frame_id(&f), Some(77));
        assert_eq!(&f[..6], &container_mac(4));
        assert_eq!(test_frame(1, 0, None, 0).len(), FRAME_LEN_MIN);
        let mut other = f.clone();
        other[12] = 0x08;
        assert_eq!(frame_id(&other), None);
        assert_ne!(test_frame(1, 0, None, 80), test_frame(2, 0, None, 80));
    }

    #[test]
    fn a_good_trace_passes() {
        let (t, _, _) = good();
        check_deliveries(&t, 0..t.next_id(), exact).unwrap();
        check_no_relay_loop(&t, 0..t.next_id()).unwrap();
        check_no_replay(&t).unwrap();
        assert_eq!(t.duplicates(0..t.next_id()), 0);
    }

    #[test]
    fn duplicates_echoes_corruption_and_misses_fail() {
        let (mut t, bc, _) = good();
        t.delivered(1, &bc);
        let e = check_deliveries(&t, 0..2, exact).unwrap_err();
        assert!(e.contains("2 times"), "{e}");
        assert!(check_deliveries(&t, 0..2, |_| Expect::AtMostOnce).is_err());
        // While routes move a second copy is no error, but counted.
        check_deliveries(&t, 0..2, |_| Expect::Intact).unwrap();
        assert_eq!(t.duplicates(0..2), 1);
        assert_eq!(t.duplicates(1..2), 0);

        let (mut t, bc, _) = good();
        t.delivered(0, &bc);
        let e = check_deliveries(&t, 0..2, |_| Expect::Intact).unwrap_err();
        assert!(e.contains("came back"), "{e}");

        let (mut t, _, uc) = good();
        let mut bad = uc.clone();
        bad[40] ^= 1;
        t.delivered(1, &bad);
        let e = check_deliveries(&t, 0..2, |_| Expect::Intact).unwrap_err();
        assert!(e.contains("altered"), "{e}");

        // A unicast that also reached host 1, and a broadcast that missed host 2.
        let (mut t, _, uc) = good();
        t.delivered(1, &uc);
        let e = check_deliveries(&t, 1..2, exact).unwrap_err();
        assert!(e.contains("unicast frame 1"), "{e}");
        assert!(check_deliveries(&t, 1..2, |_| Expect::AtMostOnce).is_ok());
        let mut t = SleeveTrace::default();
        let bc = t.send(0, None, 80, T);
        t.delivered(1, &bc);
        let e = check_deliveries(&t, 0..1, exact).unwrap_err();
        assert!(e.contains("should have reached {1, 2}"), "{e}");

        // A frame nobody sent.
        let mut t = SleeveTrace::default();
        t.delivered(1, &test_frame(5, 0, None, 80));
        assert!(check_deliveries(&t, 0..0, exact).is_err());
    }

    #[test]
    fn relay_loops_and_echoes_fail() {
        let (mut t, _, _) = good();
        t.hop(1, 2, 1);
        let e = check_no_relay_loop(&t, 0..2).unwrap_err();
        assert!(e.contains("had it already"), "{e}");
        // Only the frames asked about.
        check_no_relay_loop(&t, 0..1).unwrap();
        let (mut t, _, _) = good();
        t.hop(0, 2, 0);
        let e = check_no_relay_loop(&t, 0..2).unwrap_err();
        assert!(e.contains("back to its origin"), "{e}");
    }

    #[test]
    fn a_datagram_accepted_twice_fails_unless_the_entry_changed() {
        let key = AcceptKey {
            host: 1,
            incarnation: 0,
            sender: PeerName::from_u64(9),
            entry: 1,
            counter: 42,
        };
        let mut t = SleeveTrace::default();
        t.accepted(key);
        t.accepted(AcceptKey { entry: 2, ..key });
        t.accepted(AcceptKey {
            incarnation: 1,
            ..key
        });
        check_no_replay(&t).unwrap();
        t.accepted(key);
        let e = check_no_replay(&t).unwrap_err();
        assert!(e.contains("datagram 42"), "{e}");
    }

    #[test]
    fn pmtu_over_the_link_or_unknown_when_settled_fails() {
        let p = |pmtu| PathView {
            host: 0,
            peer: 1,
            up: true,
            pmtu_bytes: pmtu,
        };
        let mtu = |m: u16| move |_: usize, _: usize| m;
        check_pmtu(&[p(Some(1472))], mtu(1500), true).unwrap();
        check_pmtu(&[p(None)], mtu(1400), true).unwrap();
        check_pmtu(&[p(None)], mtu(1500), false).unwrap();
        assert!(check_pmtu(&[p(Some(1472))], mtu(1499), false).is_err());
        assert!(check_pmtu(&[p(None)], mtu(9000), true).is_err());
    }

    #[test]
    fn paths_up_across_a_cut_or_down_after_a_heal_fail() {
        let paths = [
            PathView {
                host: 0,
                peer: 1,
                up: true,
                pmtu_bytes: None,
            },
            PathView {
                host: 1,
                peer: 0,
                up: false,
                pmtu_bytes: None,
            },
        ];
        check_paths(&paths, &[(0, 1)], true).unwrap();
        check_paths(&paths, &[(1, 0), (2, 0)], false).unwrap();
        assert!(check_paths(&paths, &[(0, 1)], false).is_err());
        assert!(check_paths(&paths, &[(1, 0)], true).is_err());
        assert!(check_paths(&paths, &[(2, 0)], true).is_err());
    }
}
