//! Unit tests of the key exchanges, the key schedule and the sealers/openers.

use super::*;
use crate::crypto::ChaChaKeyRng;

fn psk(pw: &[u8]) -> Option<Psk> {
    Some(Psk::from_password(pw))
}

/// Both ends of one exchange.
fn pair(psk_a: Option<Psk>, psk_b: Option<Psk>) -> (SessionKeys, SessionKeys) {
    let mut rng = ChaChaKeyRng::from_seed([42; 32]);
    let a = Handshake::start(&mut rng, psk_a.as_ref());
    let b = Handshake::start(&mut rng, psk_b.as_ref());
    let (pa, pb) = (a.public_bytes(), b.public_bytes());
    (a.finish(pb, true).unwrap(), b.finish(pa, false).unwrap())
}

/// A sealed record: its counter, the buffer, the sealed length.
type Record = (u64, [u8; 64], usize);

/// `msg` sealed by `s` with AAD "hdr".
fn seal_msg<C>(s: &mut Sealer<C>, msg: &[u8]) -> Record {
    let mut buf = [0u8; 64];
    buf[..msg.len()].copy_from_slice(msg);
    let (c, n) = s.seal_in_place(b"hdr", &mut buf, msg.len()).unwrap();
    (c, buf, n)
}

/// `msg` sealed by the datagram sealer `s` with AAD "hdr".
fn seal_dgram(s: &DatagramSealer, msg: &[u8]) -> Record {
    let mut buf = [0u8; 64];
    buf[..msg.len()].copy_from_slice(msg);
    let (c, n) = s.seal_in_place(b"hdr", &mut buf, msg.len()).unwrap();
    (c, buf, n)
}

/// Opens a copy of `record` with `o` (AAD "hdr"): the plaintext.
fn open_copy(o: &mut Opener, record: Record) -> Result<alloc::vec::Vec<u8>, CryptoError> {
    let (c, mut buf, n) = record;
    let len = o.open_in_place(c, b"hdr", &mut buf[..n])?;
    Ok(buf[..len].to_vec())
}

#[test]
fn reserved_counters_seal_out_of_order_and_open_each_once() {
    let (mut a, mut b) = pair(None, None);
    let s = &mut a.datagram_sealer;
    assert_eq!(s.reserve(3), Ok(0));
    assert_eq!(s.next_counter(), 3);
    let mut bufs = [[0u8; 32]; 3];
    // Sealed in any order (as helper threads do), each with its own counter.
    for i in [2usize, 0, 1] {
        bufs[i][..4].copy_from_slice(b"data");
        assert_eq!(
            s.seal_at(i as u64, b"hdr", &mut bufs[i], 4),
            Ok(4 + TAG_LEN_BYTES)
        );
    }
    let mut spare = [0u8; 32];
    assert_eq!(
        s.seal_at(3, b"hdr", &mut spare, 4),
        Err(CryptoError::CounterExhausted),
        "a counter not reserved must not be used"
    );
    let o = &mut b.datagram_opener;
    for i in [1usize, 2, 0] {
        let mut copy = bufs[i];
        let fresh = o.check(i as u64).unwrap();
        let opened = o
            .open(fresh, b"hdr", &mut copy[..4 + TAG_LEN_BYTES])
            .unwrap();
        assert_eq!(o.record(opened), Ok(4));
        assert_eq!(&copy[..4], b"data");
        assert_eq!(o.check(i as u64), Err(CryptoError::Replayed));
    }
    let mut c = bufs[0];
    assert_eq!(
        o.open_in_place(0, b"hdr", &mut c[..4 + TAG_LEN_BYTES]),
        Err(CryptoError::Replayed)
    );
    // Reserving past the last counter takes nothing.
    let near_end = DatagramSealer::near_end_for_test(key_for_test(), COUNTER_MAX - 1);
    assert_eq!(near_end.reserve(3), Err(CryptoError::CounterExhausted));
    assert_eq!(near_end.reserve(2), Ok(COUNTER_MAX - 1));
    assert_eq!(near_end.reserve(1), Err(CryptoError::CounterExhausted));
}

fn key_for_test() -> Cipher {
    Cipher::new(&[9u8; KEY_LEN_BYTES])
}

#[test]
fn both_directions_roundtrip_with_equal_password() {
    let (mut a, mut b) = pair(psk(b"pw"), psk(b"pw"));
    let hello = seal_msg(&mut a.stream_sealer, b"hello");
    assert_eq!((hello.0, hello.2), (0, 5 + TAG_LEN_BYTES));
    assert_ne!(&hello.1[..5], b"hello", "sealing must encrypt");
    assert_eq!(open_copy(&mut b.stream_opener, hello).unwrap(), b"hello");
    let back = seal_msg(&mut b.stream_sealer, b"back");
    assert_eq!(open_copy(&mut a.stream_opener, back).unwrap(), b"back");
}

#[test]
fn directions_and_channels_use_different_keys() {
    let (mut a, mut b) = pair(None, None);
    // A record sealed by A for B must not open as B's own direction or as a datagram.
    let record = seal_msg(&mut a.stream_sealer, b"x");
    assert_eq!(
        open_copy(&mut a.stream_opener, record),
        Err(CryptoError::Tampered)
    );
    let (c, mut copy, n) = record;
    let as_datagram = b.datagram_opener.open_in_place(c, b"hdr", &mut copy[..n]);
    assert_eq!(as_datagram, Err(CryptoError::Tampered));
    assert!(open_copy(&mut b.stream_opener, record).is_ok());
}

#[test]
fn different_passwords_do_not_open() {
    let (mut a, mut b) = pair(psk(b"one"), psk(b"two"));
    let record = seal_msg(&mut a.stream_sealer, b"hi");
    assert_eq!(
        open_copy(&mut b.stream_opener, record),
        Err(CryptoError::Tampered)
    );
    assert_eq!(b.stream_opener.expected_counter(), 0);
}

#[test]
fn stream_opener_is_strictly_in_order() {
    let (mut a, mut b) = pair(None, None);
    let zero = seal_msg(&mut a.stream_sealer, b"zero");
    let one = seal_msg(&mut a.stream_sealer, b"one");
    let o = &mut b.stream_opener;
    assert_eq!(open_copy(o, one), Err(CryptoError::Tampered));
    assert_eq!(open_copy(o, zero).unwrap(), b"zero");
    assert_eq!(open_copy(o, zero), Err(CryptoError::Replayed));
    // Wrong AAD fails; then the right one still opens (state untouched by failure).
    let (c, mut x, n) = one;
    assert_eq!(
        o.open_in_place(c, b"HDR", &mut x[..n]),
        Err(CryptoError::Tampered)
    );
    assert_eq!(open_copy(o, one).unwrap(), b"one");
}

#[test]
fn datagrams_open_out_of_order_once() {
    let (a, b) = pair(None, None);
    let mut sealed = alloc::vec::Vec::new();
    for i in 0..3u8 {
        let mut buf = [i; 1 + TAG_LEN_BYTES];
        let (c, n) = a.datagram_sealer.seal_in_place(b"h", &mut buf, 1).unwrap();
        sealed.push((c, buf, n));
    }
    for &i in &[2usize, 0, 1] {
        let (c, mut buf, n) = sealed[i];
        let len = b
            .datagram_opener
            .open_in_place(c, b"h", &mut buf[..n])
            .unwrap();
        assert_eq!(buf[..len], [i as u8]);
    }
    let (c, mut buf, n) = sealed[1];
    assert_eq!(
        b.datagram_opener.open_in_place(c, b"h", &mut buf[..n]),
        Err(CryptoError::Replayed)
    );
    // A forged record with a fresh counter fails and does not burn the counter.
    let mut forged = [0u8; 1 + TAG_LEN_BYTES];
    assert_eq!(
        b.datagram_opener.open_in_place(7, b"h", &mut forged),
        Err(CryptoError::Tampered)
    );
    assert!(b.datagram_opener.check(7).is_ok());
}

#[test]
fn low_order_public_key_is_refused() {
    let mut rng = ChaChaKeyRng::from_seed([1; 32]);
    let a = KeyPair::generate(&mut rng);
    assert_eq!(
        SessionKeys::derive(&a, [0u8; 32], true).err(),
        Some(CryptoError::BadPublicKey)
    );
}

#[test]
fn spake2_element_off_the_curve_is_refused() {
    let mut rng = ChaChaKeyRng::from_seed([1; 32]);
    let a = Handshake::start(&mut rng, psk(b"pw").as_ref());
    assert!(a.with_password());
    // y = 2 with the sign bit set has no x on edwards25519: not a point.
    let mut not_a_point = [0u8; 32];
    not_a_point[0] = 2;
    not_a_point[31] = 0x80;
    assert_eq!(
        a.finish(not_a_point, true).err(),
        Some(CryptoError::BadPublicKey)
    );
}

/// The key schedule against vectors computed outside weft (Python: HKDF-SHA256 by
/// hand with hmac, ChaCha20-Poly1305 from `cryptography`): salt "weft v2 x25519",
/// secret 0x11 x 32, "weft" sealed with AAD "hdr" at counter 0.
#[test]
fn key_schedule_known_answers() {
    let mut i = SessionKeys::from_secret(NO_PASSWORD_SALT, &[0x11; 32], true, None).unwrap();
    let mut r = SessionKeys::from_secret(NO_PASSWORD_SALT, &[0x11; 32], false, None).unwrap();
    let hex = |b: &[u8]| {
        b.iter()
            .map(|x| alloc::format!("{x:02x}"))
            .collect::<alloc::string::String>()
    };
    // The initiator's stream and datagram records, then the responder's.
    let sealed = [
        seal_msg(&mut i.stream_sealer, b"weft"),
        seal_dgram(&i.datagram_sealer, b"weft"),
        seal_msg(&mut r.stream_sealer, b"weft"),
        seal_dgram(&r.datagram_sealer, b"weft"),
    ];
    let want = [
        "2609cfeb06085fcc484edc75d1ff3b68394fc5b5",
        "cac069fd74dc8a4fb8f09c4ef7b913d65b0f40c4",
        "623661644f397811f4b0d3dfc5e8b119072fcedc",
        "9c716eb1f3d356f43532db2e57cc4d93f509ca46",
    ];
    for (k, ((_, buf, n), want)) in sealed.iter().zip(want).enumerate() {
        assert_eq!(hex(&buf[..*n]), want, "record {k}");
    }
}

fn hex(b: &[u8]) -> alloc::string::String {
    b.iter().map(|x| alloc::format!("{x:02x}")).collect()
}

/// Protocol v3's datagram keys against vectors computed outside weft (Python, as
/// above; info = v3 label, the suite's bit, the transcript 0x22 x 32): "weft" sealed
/// with AAD "hdr" at counter 0, initiator then responder. The stream keys stay v2's.
#[test]
fn bound_datagram_keys_known_answers() {
    let mut cases = alloc::vec![(
        CipherSuite::ChaCha20Poly1305,
        [
            "4c2f6a6253b4919b955548d96c7203da8fdf6a10",
            "33a57dd9a735748fa7b0090ccfcaca2934c5182f",
        ],
    )];
    if cfg!(feature = "fast-aead") {
        cases.push((
            CipherSuite::Aes256Gcm,
            [
                "7eefaa7ff204746bcee4e68236d63299d2f8f920",
                "2d2af680e83ceaabec6bb7434403bce0ca508135",
            ],
        ));
    }
    for (suite, want) in cases {
        let binding = DatagramBinding {
            suite,
            transcript: [0x22; 32],
        };
        let keys = |init| {
            SessionKeys::from_secret(NO_PASSWORD_SALT, &[0x11; 32], init, Some(&binding)).unwrap()
        };
        let (mut i, r) = (keys(true), keys(false));
        assert_eq!(i.datagram_sealer.suite(), suite);
        assert_eq!(i.stream_sealer.suite(), CipherSuite::ChaCha20Poly1305);
        let (_, buf, n) = seal_dgram(&i.datagram_sealer, b"weft");
        assert_eq!(hex(&buf[..n]), want[0], "{suite} initiator");
        let (_, buf, n) = seal_dgram(&r.datagram_sealer, b"weft");
        assert_eq!(hex(&buf[..n]), want[1], "{suite} responder");
        let (_, buf, n) = seal_msg(&mut i.stream_sealer, b"weft");
        assert_eq!(hex(&buf[..n]), "2609cfeb06085fcc484edc75d1ff3b68394fc5b5");
    }
}

/// Both ends of a bound exchange with `binding_a` and `binding_b` (equal, unless a
/// hello was altered).
fn bound_pair(
    psk: Option<Psk>,
    binding_a: DatagramBinding,
    binding_b: DatagramBinding,
) -> (SessionKeys, SessionKeys) {
    let mut rng = ChaChaKeyRng::from_seed([5; 32]);
    let a = Handshake::start(&mut rng, psk.as_ref());
    let b = Handshake::start(&mut rng, psk.as_ref());
    let (pa, pb) = (a.public_bytes(), b.public_bytes());
    (
        a.finish_bound(pb, true, &binding_a).unwrap(),
        b.finish_bound(pa, false, &binding_b).unwrap(),
    )
}

/// A datagram from `a` to `b` opens.
fn datagram_opens(a: &mut SessionKeys, b: &mut SessionKeys) -> bool {
    let mut buf = [0u8; 64];
    buf[..5].copy_from_slice(b"hello");
    let (c, n) = a.datagram_sealer.seal_in_place(b"h", &mut buf, 5).unwrap();
    b.datagram_opener
        .open_in_place(c, b"h", &mut buf[..n])
        .is_ok_and(|len| &buf[..len] == b"hello")
}

#[test]
fn bound_datagram_keys_match_only_for_the_same_hellos() {
    let suites = if cfg!(feature = "fast-aead") {
        &[CipherSuite::ChaCha20Poly1305, CipherSuite::Aes256Gcm][..]
    } else {
        &[CipherSuite::ChaCha20Poly1305][..]
    };
    for &suite in suites {
        for pw in [None, psk(b"pw")] {
            let binding = DatagramBinding {
                suite,
                transcript: [7; 32],
            };
            let (mut a, mut b) = bound_pair(pw.clone(), binding, binding);
            assert!(datagram_opens(&mut a, &mut b), "{suite}");
            assert!(datagram_opens(&mut b, &mut a), "{suite}");
            assert_eq!(b.datagram_opener.suite(), suite);
            // One side saw other hellos: the stream keys still agree (so the confirm
            // opens and reports the downgrade), the datagram keys do not.
            let mut other = binding;
            other.transcript[0] ^= 1;
            let (mut a, mut b) = bound_pair(pw.clone(), binding, other);
            assert!(!datagram_opens(&mut a, &mut b), "{suite}");
            let record = seal_msg(&mut a.stream_sealer, b"confirm");
            assert!(open_copy(&mut b.stream_opener, record).is_ok());
        }
    }
    if cfg!(feature = "fast-aead") {
        // The same transcript under another suite: different keys and algorithm.
        let aes = DatagramBinding {
            suite: CipherSuite::Aes256Gcm,
            transcript: [7; 32],
        };
        let chacha = DatagramBinding {
            suite: CipherSuite::ChaCha20Poly1305,
            ..aes
        };
        let (mut a, mut b) = bound_pair(None, aes, chacha);
        assert!(!datagram_opens(&mut a, &mut b));
    }
}

#[test]
fn spake2_pair_agrees_only_with_its_own_run() {
    let (mut a, mut b) = pair(psk(b"pw"), psk(b"pw"));
    let record = seal_msg(&mut a.stream_sealer, b"hi");
    assert_eq!(open_copy(&mut b.stream_opener, record).unwrap(), b"hi");
    // Same password, but y finishes with an element from another run (z's): a replayed
    // or spliced element gives different keys.
    let mut rng = ChaChaKeyRng::from_seed([3; 32]);
    let x = Handshake::start(&mut rng, psk(b"pw").as_ref());
    let y = Handshake::start(&mut rng, psk(b"pw").as_ref());
    let z = Handshake::start(&mut rng, psk(b"pw").as_ref());
    let (py, pz) = (y.public_bytes(), z.public_bytes());
    let mut kx = x.finish(py, true).unwrap();
    let mut ky = y.finish(pz, false).unwrap();
    let spliced = seal_msg(&mut kx.stream_sealer, b"hi");
    assert_eq!(
        open_copy(&mut ky.stream_opener, spliced),
        Err(CryptoError::Tampered)
    );
}

#[test]
fn short_buffers_and_short_records_are_errors() {
    let (mut a, mut b) = pair(None, None);
    let mut buf = [0u8; 10];
    assert_eq!(
        a.stream_sealer.seal_in_place(b"", &mut buf, 5),
        Err(CryptoError::BufferTooSmall)
    );
    assert_eq!(a.stream_sealer.next_counter(), 0);
    let mut short = [0u8; TAG_LEN_BYTES - 1];
    assert_eq!(
        b.stream_opener.open_in_place(0, b"", &mut short),
        Err(CryptoError::Tampered)
    );
}
