//! Unicast, broadcast and relaying; peers the kernel's fast path carries.

use super::*;
use crate::fastdp::HEARTBEAT_ETHERTYPE;

#[test]
fn broadcast_reaches_everyone_once_and_unicast_is_relayed() {
    let mut runs = alloc::vec![(false, CipherSuite::ChaCha20Poly1305)];
    runs.extend(suites().into_iter().map(|c| (true, c)));
    assert_eq!(runs.len(), 1 + 1 + usize::from(cfg!(feature = "fast-aead")));
    for (encrypt, suite) in runs {
        let mut l = Line::with_cipher(encrypt, suite);
        // A broadcasts (ARP-like): B and C get it once each, A never gets its own back.
        let bc = frame([0xff; 6], MAC_A, 1);
        l.bridge_in(0, &bc);
        assert_eq!(l.delivered[1], alloc::vec![bc.clone()]);
        assert_eq!(l.delivered[2], alloc::vec![bc.clone()]);
        assert!(l.delivered[0].is_empty());
        // C answers A by unicast: it learned MAC_A behind A, B relays it.
        let reply = frame(MAC_A, MAC_C, 2);
        l.bridge_in(2, &reply);
        assert_eq!(l.delivered[0], alloc::vec![reply.clone()]);
        assert_eq!(l.delivered[1].len(), 1, "B only relays a unicast for A");
        assert_eq!(l.s[1].stats().frames_relayed, 2);
        // And A now knows MAC_C is behind C: a unicast goes only to C.
        let again = frame(MAC_C, MAC_A, 3);
        l.bridge_in(0, &again);
        assert_eq!(l.delivered[2].last(), Some(&again));
        assert_eq!(l.delivered[1].len(), 1);
        // With a password, the marker bytes never appear on the wire.
        let leaked = l
            .seen
            .iter()
            .any(|d| d.windows(20).any(|w| w.iter().all(|b| *b == 3)));
        assert_eq!(leaked, !encrypt, "encrypt={encrypt}");
        assert_eq!(l.s[1].stats().drops_crypto, 0, "{suite}");
    }
}

#[test]
fn a_datagram_sealed_with_one_cipher_does_not_open_under_the_other() {
    if suites().len() < 2 {
        return; // One cipher in this build: nothing to mix up.
    }
    // Same key material, same everything, but A-B chose AES and the receiver's keys are
    // ChaCha's (as if the two ends had disagreed): B drops it as a crypto failure.
    let mut aes = Line::with_cipher(true, CipherSuite::Aes256Gcm);
    let mut chacha = Line::with_cipher(true, CipherSuite::ChaCha20Poly1305);
    let mut d = receive::datagram_to_b(&mut aes, Instant::ZERO, 9);
    let mut sink = |_: Output<'_>| {};
    chacha.s[1].handle_datagram(Instant::ZERO, addr(0), &mut d, &mut sink);
    assert_eq!(chacha.s[1].stats().frames_to_bridge, 0);
    assert_eq!(chacha.s[1].stats().drops_crypto, 1);
}

#[test]
fn fast_peers_are_left_to_the_kernel_but_still_relay() {
    let mut l = Line::new(false);
    l.s[0].set_fast_peers([name(1)].into());
    l.s[1].set_fast_peers([name(0)].into());
    // A broadcast from 0: 1 is fast but relays to 2, so it gets a sleeve copy it does
    // not deliver (the kernel did), and 2 gets it once.
    let bc = frame([0xff; 6], MAC_A, 1);
    l.bridge_in(0, &bc);
    assert!(
        l.delivered[1].is_empty(),
        "the kernel delivers 0's frames at 1"
    );
    assert_eq!(l.delivered[2], alloc::vec![bc.clone()]);
    // A unicast from 0 to a MAC behind 1 is left to the kernel.
    const MAC_B: Mac = [0x02, 0, 0, 0, 0, 0xb];
    l.s[0].macs.learn(MAC_B, name(1), Instant::ZERO);
    let before = l.seen.len();
    l.bridge_in(0, &frame(MAC_B, MAC_A, 2));
    assert_eq!(l.seen.len(), before, "nothing on the sleeve");
    assert_eq!(l.s[0].stats().frames_left_to_kernel, 1);
    // Fast-path heartbeats are never carried by the sleeve.
    let mut hb = frame([0xff; 6], MAC_A, 3);
    hb[12..14].copy_from_slice(&HEARTBEAT_ETHERTYPE.to_be_bytes());
    l.bridge_in(2, &hb);
    assert_eq!(l.seen.len(), before);
}
