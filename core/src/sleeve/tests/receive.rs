//! What a receiver refuses: wrong source, replays (also across reconnects and restarts),
//! tampering and garbage.

use super::*;

#[test]
fn plain_datagrams_from_elsewhere_than_the_peer_are_dropped() {
    let mut l = Line::new(false);
    let good = datagram_to_b(&mut l, Instant::ZERO, 4);
    let mut sink = |_: Output<'_>| {};
    // The same bytes from an address that is not peer 0's: refused.
    l.s[1].handle_datagram(Instant::ZERO, addr(7), &mut good.clone(), &mut sink);
    assert_eq!(l.s[1].stats().drops_unknown_peer, 1);
    assert_eq!(l.s[1].stats().frames_to_bridge, 0);
    l.s[1].handle_datagram(Instant::ZERO, addr(0), &mut good.clone(), &mut sink);
    assert_eq!(l.s[1].stats().frames_to_bridge, 1);
}

/// The datagram A sends B carrying a broadcast frame, at `now`.
pub(super) fn datagram_to_b(l: &mut Line, now: Instant, marker: u8) -> Vec<u8> {
    let f = frame([0xff; 6], MAC_A, marker);
    let mut outs = Vec::new();
    l.s[0].handle_bridge_frame(now, &f, &mut |o| outs.push(own(o)));
    outs.into_iter()
        .find_map(|o| match o {
            Owned::Datagram(to, d, _) if to == addr(1) => Some(d),
            _ => None,
        })
        .expect("a datagram to B")
}

#[test]
fn plain_datagrams_are_replay_checked_across_reconnects_and_restarts() {
    let mut l = Line::new(false);
    let mut sink = |_: Output<'_>| {};
    let t0 = Instant::from_millis(1000);
    let good = datagram_to_b(&mut l, t0, 1);
    for _ in 0..3 {
        l.s[1].handle_datagram(t0, addr(0), &mut good.clone(), &mut sink);
    }
    assert_eq!(l.s[1].stats().frames_to_bridge, 1, "delivered once");
    assert_eq!(l.s[1].stats().drops_replayed, 2);
    // A's connection to B flaps: its counters go on from the clock, not from zero, so
    // B (whose window still holds the old ones) takes the new datagrams.
    l.s[0].remove_peer(name(1));
    let t1 = Instant::from_millis(2000);
    l.s[0].set_peer(t1, name(1), addr(1), None);
    let mut d = datagram_to_b(&mut l, t1, 2);
    l.s[1].handle_datagram(t1, addr(0), &mut d, &mut sink);
    assert_eq!(l.s[1].stats().frames_to_bridge, 2, "after a reconnect");
    // A restarts: a new engine whose clock starts at zero again, with the epoch the host
    // gives from the wall clock.
    let mut a = Sleeve::new(name(0), false);
    a.set_plain_epoch(10_000_000 << PLAIN_COUNTER_SHIFT);
    a.set_peer(Instant::ZERO, name(1), addr(1), None);
    a.set_routes(
        [(name(1), name(1)), (name(2), name(1))]
            .into_iter()
            .collect(),
        [(name(0), alloc::vec![name(1)])].into(),
    );
    l.s[0] = a;
    let mut d = datagram_to_b(&mut l, Instant::ZERO, 3);
    l.s[1].handle_datagram(t1, addr(0), &mut d, &mut sink);
    assert_eq!(l.s[1].stats().frames_to_bridge, 3, "after a restart");
    assert_eq!(l.s[1].stats().drops_replayed, 2);
}

#[test]
fn tampered_replayed_and_garbage_datagrams_are_dropped() {
    let mut l = Line::new(true);
    let good = datagram_to_b(&mut l, Instant::ZERO, 9);
    let mut sink = |_: Output<'_>| {};
    // Tampered.
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    l.s[1].handle_datagram(Instant::ZERO, addr(0), &mut bad, &mut sink);
    assert_eq!(l.s[1].stats().drops_crypto, 1);
    // Good once, then replayed.
    let mut once = good.clone();
    l.s[1].handle_datagram(Instant::ZERO, addr(0), &mut once, &mut sink);
    let mut twice = good.clone();
    l.s[1].handle_datagram(Instant::ZERO, addr(0), &mut twice, &mut sink);
    assert_eq!(l.s[1].stats().drops_crypto, 2);
    assert_eq!(l.s[1].stats().frames_to_bridge, 1);
    // Garbage and truncated.
    for len in [0usize, 1, 5, 22, 23, 40] {
        let mut g = alloc::vec![0x77u8; len];
        l.s[1].handle_datagram(Instant::ZERO, addr(0), &mut g, &mut sink);
    }
    let mut rng = crate::rng::Rng::from_seed(3);
    for _ in 0..500 {
        let mut g = good.clone();
        let i = rng.below(g.len() as u64) as usize;
        g[i] = rng.next_u64() as u8;
        let cut = rng.below(g.len() as u64 + 1) as usize;
        l.s[1].handle_datagram(Instant::ZERO, addr(0), &mut g[..cut], &mut sink);
    }
    assert_eq!(l.s[1].stats().frames_to_bridge, 1);
    // A plain datagram to an encrypted router is refused.
    let mut plain = datagram_to_b(&mut Line::new(false), Instant::ZERO, 9);
    l.s[1].handle_datagram(Instant::ZERO, addr(0), &mut plain, &mut sink);
    assert_eq!(l.s[1].stats().drops_encryption_mismatch, 1);
}
