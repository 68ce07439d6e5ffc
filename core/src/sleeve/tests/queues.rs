//! Engines of one router's queues ([`Sleeve::new_queue`]): two queues of router A send to
//! router B, whose two queues receive, with the same (cloned) keys on every queue.

use super::*;
use crate::wire::datagram::DatagramHeader;
use alloc::collections::BTreeSet;

const BCAST: Mac = [0xff; 6];

/// Router `a`'s and `b`'s engines, `n` queues each, linked (A's queue i and B's queue i
/// hold clones of one connection's keys).
fn two_routers(encrypt: bool, n: usize) -> (Vec<Sleeve>, Vec<Sleeve>) {
    let mut rng = ChaChaKeyRng::for_simulation(11);
    let (ka, kb) = keys(&mut rng, CipherSuite::ChaCha20Poly1305);
    let first_a = Sleeve::new(name(0), encrypt);
    let first_b = Sleeve::new(name(1), encrypt);
    let mut a: Vec<Sleeve> = (1..n).map(|_| first_a.new_queue()).collect();
    let mut b: Vec<Sleeve> = (1..n).map(|_| first_b.new_queue()).collect();
    a.insert(0, first_a);
    b.insert(0, first_b);
    for q in &mut a {
        let keys = encrypt.then(|| ka.clone());
        q.set_peer(Instant::ZERO, name(1), addr(1), keys);
        q.set_routes(
            [(name(1), name(1))].into(),
            [(name(0), alloc::vec![name(1)])].into(),
        );
    }
    for q in &mut b {
        let keys = encrypt.then(|| kb.clone());
        q.set_peer(Instant::ZERO, name(0), addr(0), keys);
        q.set_routes([(name(0), name(0))].into(), BTreeMap::new());
    }
    (a, b)
}

/// Frames `count` broadcast frames into A's queues in turn; the datagrams sent.
fn send_from_queues(a: &mut [Sleeve], count: u8) -> Vec<Vec<u8>> {
    let mut wire = Vec::new();
    for m in 0..count {
        let q = usize::from(m) % a.len();
        let f = frame(BCAST, [2, 0, 0, 0, 0, q as u8 + 1], m);
        a[q].handle_bridge_frame(Instant::ZERO, &f, &mut |o| {
            if let Output::Datagram { bytes, .. } = o {
                wire.push(bytes.to_vec());
            }
        });
    }
    wire
}

fn receive(b: &mut Sleeve, d: &[u8]) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut d = d.to_vec();
    b.handle_datagram(Instant::ZERO, addr(0), &mut d, &mut |o| {
        got.extend(frame_of(o));
    });
    got
}

#[test]
fn queues_never_reuse_a_counter_and_a_replay_on_another_queue_is_refused() {
    for encrypt in [true, false] {
        let (mut a, mut b) = two_routers(encrypt, 2);
        let wire = send_from_queues(&mut a, 40);
        assert_eq!(wire.len(), 40);
        let counters: BTreeSet<u64> = wire
            .iter()
            .map(|d| DatagramHeader::parse(d).unwrap().0.counter)
            .collect();
        assert_eq!(
            counters.len(),
            wire.len(),
            "a counter used twice ({encrypt})"
        );
        // B's queues take them in any split (here: reversed, alternating queues), each
        // frame delivered once.
        let mut delivered = Vec::new();
        for (i, d) in wire.iter().enumerate().rev() {
            delivered.extend(receive(&mut b[i % 2], d));
        }
        assert_eq!(delivered.len(), 40, "every datagram accepted ({encrypt})");
        if encrypt {
            // The same datagrams again, each on the queue that did not see it: refused
            // (the window is shared), and counted as crypto drops there.
            for (i, d) in wire.iter().enumerate() {
                assert!(
                    receive(&mut b[(i + 1) % 2], d).is_empty(),
                    "replay {i} accepted"
                );
            }
            let drops: u64 = b.iter().map(|q| q.stats().drops_crypto).sum();
            assert_eq!(drops, 40);
        }
    }
}

#[test]
fn queue_engines_share_the_plain_counter_from_the_epoch_on() {
    let mut first = Sleeve::new(name(0), false);
    first.set_plain_epoch(1 << 30);
    let mut second = first.new_queue();
    for q in [&mut first, &mut second] {
        q.set_peer(Instant::ZERO, name(1), addr(1), None);
        q.set_routes(
            [(name(1), name(1))].into(),
            [(name(0), alloc::vec![name(1)])].into(),
        );
    }
    let wire = send_from_queues(&mut [first, second], 4);
    let counters: Vec<u64> = wire
        .iter()
        .map(|d| DatagramHeader::parse(d).unwrap().0.counter)
        .collect();
    assert_eq!(
        counters,
        [(1 << 30) + 1, (1 << 30) + 2, (1 << 30) + 3, (1 << 30) + 4]
    );
}

#[test]
fn an_address_one_queue_learned_is_taken_by_another_unless_it_knows_a_later_one() {
    let (_, mut b) = two_routers(true, 2);
    let nat = SocketAddr::from(([192, 0, 2, 7], 40_000));
    let later = Instant::ZERO + Duration::from_secs(2);
    b[1].set_peer_addr_learned(name(0), nat, later);
    let p = b[1].paths(later).next().unwrap();
    assert_eq!((p.addr, p.addr_learned, p.addr_since), (nat, true, later));
    // An older word does not move it back; an unknown peer is ignored.
    b[1].set_peer_addr_learned(name(0), addr(0), Instant::ZERO + Duration::from_secs(1));
    assert_eq!(b[1].paths(later).next().unwrap().addr, nat);
    b[1].set_peer_addr_learned(name(5), nat, later);
    assert_eq!(b[1].paths(later).count(), 1);
}
