//! A peer's address follows its authenticated datagrams (a NAT's mapping), and nothing
//! unauthenticated moves it.

use super::receive::datagram_to_b;
use super::*;

/// Where B's datagrams to A go: the destination of B's copy of a broadcast for A.
fn b_sends_a_to(l: &mut Line) -> SocketAddr {
    let f = frame([0xff; 6], [0x02, 0, 0, 0, 0, 0xb], 1);
    let mut outs = Vec::new();
    l.s[1].handle_bridge_frame(Instant::ZERO, &f, &mut |o| outs.push(own(o)));
    outs.into_iter()
        .find_map(|o| match o {
            Owned::Datagram(to, _, _) if to != addr(2) => Some(to),
            _ => None,
        })
        .expect("a datagram to A")
}

/// A's path as B shows it.
fn path_to_a(l: &Line, now: Instant) -> PeerPath {
    l.s[1].paths(now).find(|p| p.name == name(0)).unwrap()
}

#[test]
fn sealed_datagrams_from_a_new_address_move_the_peer_there() {
    let mut l = Line::new(true);
    let mut sink = |_: Output<'_>| {};
    assert_eq!(b_sends_a_to(&mut l), addr(0));
    assert!(!path_to_a(&l, Instant::ZERO).addr_learned);
    // A behind a NAT: its datagram arrives from the NAT's address and a mapped port.
    let mapped = SocketAddr::from(([198, 18, 0, 2], 40_123));
    let t1 = Instant::from_millis(1500);
    let mut d = datagram_to_b(&mut l, t1, 4);
    l.s[1].handle_datagram(t1, mapped, &mut d, &mut sink);
    assert_eq!(l.s[1].stats().frames_to_bridge, 1);
    assert_eq!(b_sends_a_to(&mut l), mapped, "B answers at the mapping");
    let p = path_to_a(&l, t1);
    assert!(
        p.addr_learned && p.addr == mapped && p.addr_since == t1,
        "{p:?}"
    );
    assert_eq!(l.s[1].stats().peer_addr_changes, 1);
    // The NAT maps anew (restarted, conntrack flushed): the path follows again.
    let remapped = SocketAddr::from(([198, 18, 0, 2], 51_000));
    let t2 = Instant::from_millis(2500);
    let mut d = datagram_to_b(&mut l, t2, 5);
    l.s[1].handle_datagram(t2, remapped, &mut d, &mut sink);
    assert_eq!(b_sends_a_to(&mut l), remapped);
    assert_eq!(path_to_a(&l, t2).addr_since, t2);
    assert_eq!(l.s[1].stats().peer_addr_changes, 2);
    // A replay of the first datagram, from the old mapping: refused, the path stays.
    let mut old = datagram_to_b(&mut l, t2, 6);
    l.s[1].handle_datagram(t2, remapped, &mut old.clone(), &mut sink);
    l.s[1].handle_datagram(t2, mapped, &mut old, &mut sink);
    assert_eq!(b_sends_a_to(&mut l), remapped, "a replay moved the path");
}

#[test]
fn forged_or_tampered_datagrams_do_not_move_the_peer() {
    let mut l = Line::new(true);
    let mut sink = |_: Output<'_>| {};
    let good = datagram_to_b(&mut l, Instant::ZERO, 9);
    let elsewhere = SocketAddr::from(([203, 0, 113, 9], 9999));
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    l.s[1].handle_datagram(Instant::ZERO, elsewhere, &mut bad, &mut sink);
    // Garbage claiming to be from A.
    let mut g = good.clone();
    for b in &mut g[DATAGRAM_HEADER_LEN..] {
        *b = 0x55;
    }
    l.s[1].handle_datagram(Instant::ZERO, elsewhere, &mut g, &mut sink);
    assert_eq!(b_sends_a_to(&mut l), addr(0));
    assert_eq!(l.s[1].stats().peer_addr_changes, 0);
    assert_eq!(l.s[1].stats().frames_to_bridge, 0);
}

#[test]
fn plain_datagrams_move_the_port_only() {
    let mut l = Line::new(false);
    let mut sink = |_: Output<'_>| {};
    // Same IP as A's connection, another port (a NAT's port mapping): followed.
    let mapped = SocketAddr::new(addr(0).ip(), 40_000);
    let mut d = datagram_to_b(&mut l, Instant::ZERO, 1);
    l.s[1].handle_datagram(Instant::ZERO, mapped, &mut d, &mut sink);
    assert_eq!(b_sends_a_to(&mut l), mapped);
    // Another IP: unproven without a seal, refused.
    let mut d = datagram_to_b(&mut l, Instant::ZERO, 2);
    l.s[1].handle_datagram(Instant::ZERO, addr(7), &mut d, &mut sink);
    assert_eq!(b_sends_a_to(&mut l), mapped);
    assert_eq!(l.s[1].stats().drops_unknown_peer, 1);
}
