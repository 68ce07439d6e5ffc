//! Cipher negotiation: who offers what, what the pair uses, and offers changed in flight.

use super::tests::{NAME_A, NAME_B, Pair, settings};
use super::*;
use crate::crypto::ChaChaKeyRng;

const CHACHA: CipherSuites = CipherSuites::CHACHA20_POLY1305;

/// Settings for A and B with a password (so the sleeve would be sealed) and these offers.
fn offering(a: CipherSuites, b: CipherSuites) -> Pair {
    let mut sa = settings(NAME_A, Some(b"pw"));
    let mut sb = settings(NAME_B, Some(b"pw"));
    sa.ciphers = a;
    sb.ciphers = b;
    Pair::with(sa, sb)
}

/// A datagram each way opens, and both ends' keys are for `suite`.
#[track_caller]
fn datagrams_cross(p: &mut Pair, suite: CipherSuite) {
    let (mut a_seal, mut a_open) = p.a.take_datagram_keys().unwrap();
    let (mut b_seal, mut b_open) = p.b.take_datagram_keys().unwrap();
    for k in [
        a_seal.suite(),
        a_open.suite(),
        b_seal.suite(),
        b_open.suite(),
    ] {
        assert_eq!(k, suite);
    }
    for (seal, open) in [(&mut a_seal, &mut b_open), (&mut b_seal, &mut a_open)] {
        let mut buf = [0u8; 5 + TAG_LEN_BYTES];
        buf[..5].copy_from_slice(b"frame");
        let (c, n) = seal.seal_in_place(b"hdr", &mut buf, 5).unwrap();
        assert_ne!(&buf[..5], b"frame");
        let len = open.open_in_place(c, b"hdr", &mut buf[..n]).unwrap();
        assert_eq!(&buf[..len], b"frame");
    }
}

#[test]
fn chacha_only_meets_both_and_they_use_chacha() {
    // Either side the ChaCha-only one, and with or without AES in this build.
    for (a, b) in [
        (CHACHA, CipherSuites::supported()),
        (CipherSuites::supported(), CHACHA),
    ] {
        let mut p = offering(a, b);
        let (ra, rb) = p.established();
        assert_eq!(
            (ra.version, rb.version),
            (PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MAX)
        );
        assert_eq!(ra.cipher, CipherSuite::ChaCha20Poly1305);
        assert_eq!(rb.cipher, CipherSuite::ChaCha20Poly1305);
        datagrams_cross(&mut p, CipherSuite::ChaCha20Poly1305);
    }
}

#[test]
fn the_default_offer_is_chacha_and_the_stream_is_chacha_whatever_the_offer() {
    let mut p = Pair::new(None, None);
    let (ra, _) = p.established();
    assert_eq!(ra.cipher, CipherSuite::ChaCha20Poly1305);
    assert_eq!(
        ConnSettings::new(PeerName::from_u64(1), PeerUid(1)).ciphers,
        CHACHA
    );
}

#[cfg(feature = "fast-aead")]
#[test]
fn both_offering_aes_use_aes() {
    let both = CipherSuites::supported();
    assert!(both.contains(CipherSuite::Aes256Gcm));
    let aes = CipherSuites::only(CipherSuite::Aes256Gcm);
    for (a, b) in [(both, both), (aes, both), (aes, aes)] {
        let mut p = offering(a, b);
        let (ra, rb) = p.established();
        assert_eq!(
            (ra.cipher, rb.cipher),
            (CipherSuite::Aes256Gcm, CipherSuite::Aes256Gcm)
        );
        datagrams_cross(&mut p, CipherSuite::Aes256Gcm);
    }
    // Without a password too (the sleeve is then plain, but the choice is the same).
    let mut sa = settings(NAME_A, None);
    let mut sb = settings(NAME_B, None);
    sa.ciphers = both;
    sb.ciphers = both;
    let (ra, _) = Pair::with(sa, sb).established();
    assert_eq!(ra.cipher, CipherSuite::Aes256Gcm);
}

/// The offer byte is the last of a v3 hello.
#[cfg(feature = "fast-aead")]
fn set_offer(hello: &mut [u8], offer: CipherSuites) {
    let last = hello.len() - 1;
    hello[last] = offer.bits();
}

#[cfg(feature = "fast-aead")]
#[test]
fn an_offer_changed_in_flight_is_a_downgrade() {
    let both = CipherSuites::supported();
    for pw in [Some(&b"pw"[..]), None] {
        for from_b in [false, true] {
            // Stripping AES from one side's hello: that side would pick AES and the other
            // ChaCha; the confirms (sealed with the ChaCha stream keys, which do not
            // depend on the offers) open, and their transcripts differ.
            let mut sa = settings(NAME_A, pw);
            let mut sb = settings(NAME_B, pw);
            sa.ciphers = both;
            sb.ciphers = both;
            let mut p = Pair::with(sa, sb);
            p.deliver_edited_hello(from_b, |h| set_offer(h, CHACHA));
            p.run();
            p.assert_both_failed(ConnError::Crypto(CryptoError::Downgrade));
            assert!(
                p.a.take_datagram_keys().is_some(),
                "derived, but never confirmed"
            );
        }
    }
    // Adding AES to a ChaCha-only offer fails the same way.
    let mut p = offering(CHACHA, both);
    p.deliver_edited_hello(false, |h| set_offer(h, both));
    p.run();
    p.assert_both_failed(ConnError::Crypto(CryptoError::Downgrade));
}

#[cfg(feature = "fast-aead")]
#[test]
fn pinned_aes_against_chacha_only_has_no_common_cipher() {
    let aes = CipherSuites::only(CipherSuite::Aes256Gcm);
    let mut p = offering(aes, CHACHA);
    p.run();
    p.assert_both_failed(ConnError::Crypto(CryptoError::NoCommonCipher));
    let msg = alloc::format!("{}", ConnError::Crypto(CryptoError::NoCommonCipher));
    assert!(msg.contains("--cipher"), "{msg}");
}

#[test]
fn an_offer_this_build_cannot_run_fails_at_once() {
    let mut s = settings(NAME_A, None);
    s.ciphers = CipherSuites::EMPTY;
    let mut rng = ChaChaKeyRng::for_simulation(1);
    let addr: SocketAddr = "10.0.0.2:6783".parse().unwrap();
    let c = Connection::new(ConnId(1), true, addr, &s, &mut rng, Instant::ZERO);
    assert_eq!(c.state(), ConnState::Closed);
    assert_eq!(
        c.error(),
        Some(ConnError::Crypto(CryptoError::NoCommonCipher))
    );
    if !cfg!(feature = "fast-aead") {
        // AES alone, where AES is not built in: nothing left to offer.
        s.ciphers = CipherSuites::only(CipherSuite::Aes256Gcm);
        let c = Connection::new(ConnId(1), true, addr, &s, &mut rng, Instant::ZERO);
        assert_eq!(
            c.error(),
            Some(ConnError::Crypto(CryptoError::NoCommonCipher))
        );
    }
}

/// A pair where B speaks only v2 (an older router: no offer in its hello).
fn with_v2_peer(a: CipherSuites) -> Pair {
    let mut sa = settings(NAME_A, Some(b"pw"));
    sa.ciphers = a;
    let sb = settings(NAME_B, Some(b"pw"));
    let mut rng = ChaChaKeyRng::for_simulation(3);
    let now = Instant::from_micros(1_000_000);
    let addr_b: SocketAddr = "10.0.0.2:6783".parse().unwrap();
    let addr_a: SocketAddr = "10.0.0.1:40000".parse().unwrap();
    Pair {
        a: Connection::new(ConnId(1), true, addr_b, &sa, &mut rng, now),
        b: Connection::speaking(ConnId(2), false, addr_a, &sb, &mut rng, now, (2, 2)),
        now,
        a_err: None,
        b_err: None,
    }
}

#[test]
fn a_v2_peer_connects_at_v2_with_chacha() {
    let mut p = with_v2_peer(CipherSuites::supported());
    let (ra, rb) = p.established();
    assert_eq!((ra.version, rb.version), (2, 2));
    assert_eq!((ra.cipher, rb.cipher), (CHACHA_SUITE, CHACHA_SUITE));
    datagrams_cross(&mut p, CHACHA_SUITE);
    // A v2 peer's keys are v2's schedule: a v3 pair's (bound) keys are different, so
    // the version cannot be mixed up without the datagrams failing.
    let mut v3 = offering(CHACHA, CHACHA);
    v3.established();
    let (s3, _) = v3.a.take_datagram_keys().unwrap();
    let mut q = with_v2_peer(CipherSuites::supported());
    q.established();
    let (_, o2) = q.b.take_datagram_keys().unwrap();
    let mut buf = [0u8; 1 + TAG_LEN_BYTES];
    let (c, n) = s3.seal_in_place(b"", &mut buf, 1).unwrap();
    assert!(o2.open_in_place(c, b"", &mut buf[..n]).is_err());
}

#[cfg(feature = "fast-aead")]
#[test]
fn pinned_aes_against_a_v2_peer_has_no_common_cipher() {
    let mut p = with_v2_peer(CipherSuites::only(CipherSuite::Aes256Gcm));
    p.run();
    assert_eq!(
        p.a_err,
        Some(ConnError::Crypto(CryptoError::NoCommonCipher))
    );
}

const CHACHA_SUITE: CipherSuite = CipherSuite::ChaCha20Poly1305;
