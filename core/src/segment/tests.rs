use super::*;
use alloc::vec;
use alloc::vec::Vec;
use proptest::prelude::{ProptestConfig, any, prop_assert, prop_assert_eq, proptest};
use smoltcp::wire::{IpAddress, Ipv4Address, Ipv6Address};

pub(crate) const FLAG_ACK: u8 = 0x10;
const FLAG_PSH: u8 = 0x08;
const SRC4: [u8; 4] = [10, 32, 0, 1];
const DST4: [u8; 4] = [10, 32, 0, 2];
const SRC6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const DST6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

/// An Ethernet + IP + TCP (12 bytes of timestamp-like options) or UDP frame with a full,
/// valid L4 checksum.
pub(crate) fn build(v6: bool, tcp: bool, payload: &[u8], seq: u32, flags: u8) -> Vec<u8> {
    let l3 = ETH_HEADER_LEN;
    let ip_len = if v6 { 40 } else { 20 };
    let l4_hdr = if tcp { 32 } else { 8 };
    let l4 = l3 + ip_len;
    let total = l4 + l4_hdr + payload.len();
    let mut f = vec![0u8; total];
    f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    let proto = if tcp { 6 } else { 17 };
    if v6 {
        f[12..14].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
        f[l3] = 0x60;
        f[l3 + 4..l3 + 6].copy_from_slice(&((l4_hdr + payload.len()) as u16).to_be_bytes());
        f[l3 + 6] = proto;
        f[l3 + 7] = 64;
        f[l3 + 8..l3 + 24].copy_from_slice(&SRC6);
        f[l3 + 24..l3 + 40].copy_from_slice(&DST6);
    } else {
        f[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        f[l3] = 0x45;
        f[l3 + 2..l3 + 4].copy_from_slice(&((total - l3) as u16).to_be_bytes());
        f[l3 + 4..l3 + 6].copy_from_slice(&0x1234u16.to_be_bytes());
        f[l3 + 6] = 0x40; // DF
        f[l3 + 8] = 64;
        f[l3 + 9] = proto;
        f[l3 + 12..l3 + 16].copy_from_slice(&SRC4);
        f[l3 + 16..l3 + 20].copy_from_slice(&DST4);
        Ipv4Packet::new_unchecked(&mut f[l3..]).fill_checksum();
    }
    if tcp {
        f[l4..l4 + 2].copy_from_slice(&40000u16.to_be_bytes());
        f[l4 + 2..l4 + 4].copy_from_slice(&5201u16.to_be_bytes());
        f[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
        f[l4 + 8..l4 + 12].copy_from_slice(&77u32.to_be_bytes());
        f[l4 + 12] = 8 << 4;
        f[l4 + 13] = flags;
        f[l4 + 14..l4 + 16].copy_from_slice(&512u16.to_be_bytes());
        f[l4 + 20..l4 + 32].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 7]);
    } else {
        f[l4..l4 + 2].copy_from_slice(&40000u16.to_be_bytes());
        f[l4 + 2..l4 + 4].copy_from_slice(&5201u16.to_be_bytes());
        f[l4 + 4..l4 + 6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    }
    f[l4 + l4_hdr..].copy_from_slice(payload);
    Layout::parse(&f).unwrap().fill_l4_csum(&mut f);
    f
}

/// The same frame as a TAP with offloads gives it: pseudo-header sum in the L4 field.
pub(crate) fn partial(f: &mut [u8]) -> PartialCsum {
    let at = Layout::parse(f).unwrap();
    let c = at.l4 + at.csum_offset();
    let pseudo = csum_fold(at.pseudo(f, at.ip_end - at.l4));
    f[c..c + 2].copy_from_slice(&pseudo.to_be_bytes());
    PartialCsum {
        start: at.l4 as u16,
        offset: at.csum_offset() as u16,
    }
}

fn addrs(v6: bool) -> (IpAddress, IpAddress) {
    if v6 {
        (
            IpAddress::Ipv6(Ipv6Address::from(SRC6)),
            IpAddress::Ipv6(Ipv6Address::from(DST6)),
        )
    } else {
        (
            IpAddress::Ipv4(Ipv4Address::from(SRC4)),
            IpAddress::Ipv4(Ipv4Address::from(DST4)),
        )
    }
}

fn gso_of(v6: bool, tcp: bool) -> Gso {
    match (v6, tcp) {
        (false, true) => Gso::TcpV4,
        (true, true) => Gso::TcpV6,
        _ => Gso::Udp,
    }
}

fn cut(frame: &[u8], off: &Offload) -> Vec<Vec<u8>> {
    let mut segs = Vec::new();
    let mut scratch = vec![0u8; SUPER_FRAME_LEN_MAX];
    segment(frame, off, usize::MAX, &mut scratch, |s| {
        segs.push(s.to_vec())
    })
    .unwrap();
    segs
}

/// Checks every segment is a self-standing packet and returns the payloads joined.
fn check_segments(segs: &[Vec<u8>], v6: bool, tcp: bool, seq0: u32, mss: usize) -> Vec<u8> {
    let (src, dst) = addrs(v6);
    let mut joined = Vec::new();
    for (i, s) in segs.iter().enumerate() {
        let at = Layout::parse(s).expect("segment parses");
        assert_eq!(at.ip_end, s.len());
        assert!(at.l4_csum_ok(s), "L4 checksum of segment {i}");
        if !v6 {
            let ip = Ipv4Packet::new_checked(&s[at.l3..]).unwrap();
            assert!(ip.verify_checksum());
            assert_eq!(ip.ident(), 0x1234u16.wrapping_add(i as u16));
        }
        let payload = &s[at.hdr_end..];
        if i + 1 < segs.len() {
            assert_eq!(payload.len(), mss);
        }
        if tcp {
            let t = TcpPacket::new_checked(&s[at.l4..]).unwrap();
            assert!(t.verify_checksum(&src, &dst));
            assert_eq!(t.seq_number().0 as u32, seq0.wrapping_add((i * mss) as u32));
            assert_eq!(t.psh(), i + 1 == segs.len(), "PSH only on the last");
        } else {
            let u = UdpPacket::new_checked(&s[at.l4..]).unwrap();
            assert!(u.verify_checksum(&src, &dst));
            assert_eq!(usize::from(u.len()), 8 + payload.len());
        }
        joined.extend_from_slice(payload);
    }
    joined
}

pub(crate) fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn checksum_matches_rfc1071_example() {
    // RFC 1071 section 3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
    let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
    assert_eq!(csum_fold(csum_partial(&d)), 0xddf2);
    assert_eq!(csum_fold(csum_partial(&d[..7])), 0xddf2 - 0xf7);
}

#[test]
fn tso_super_frames_become_real_segments_and_coalesce_back() {
    for v6 in [false, true] {
        let data = payload(60_000, 3);
        let seq0 = 0xffff_f000; // wraps
        let mut f = build(v6, true, &data, seq0, FLAG_ACK | FLAG_PSH);
        let original = f.clone();
        let off = Offload {
            gso: gso_of(v6, true),
            gso_size: 1324,
            csum: Some(partial(&mut f)),
            ..Offload::default()
        };
        let segs = cut(&f, &off);
        assert_eq!(segs.len(), 60_000usize.div_ceil(1324));
        assert_eq!(check_segments(&segs, v6, true, seq0, 1324), data);

        // The receiver's coalescer turns them back into the one super-frame.
        let mut c = Coalescer::new();
        let mut got = coalesce(&mut c, &segs, false);
        assert_eq!(got.len(), 1, "one super-frame");
        let (o, mut sf) = got.pop().unwrap();
        assert_eq!(o.gso, gso_of(v6, true));
        assert_eq!(o.gso_size, 1324);
        assert_eq!(usize::from(o.hdr_len), Layout::parse(&sf).unwrap().hdr_end);
        complete_csum(&mut sf, o.csum.unwrap());
        assert_eq!(sf, original);
        assert_eq!(c.merged(), segs.len() as u64 - 1);
    }
}

#[test]
fn uso_and_plain_partial_checksums_are_completed() {
    for v6 in [false, true] {
        let data = payload(9_000, 5);
        let mut f = build(v6, false, &data, 0, 0);
        let off = Offload {
            gso: Gso::Udp,
            gso_size: 1200,
            csum: Some(partial(&mut f)),
            ..Offload::default()
        };
        let original = build(v6, false, &data, 0, 0);
        let segs = cut(&f, &off);
        assert_eq!(segs.len(), 8);
        assert_eq!(check_segments(&segs, v6, false, 0, 1200), data);

        // The receiver merges the datagrams back into one USO super-frame: the kernel
        // cuts it into the same eight datagrams for the container.
        let mut c = Coalescer::new();
        let mut got: Vec<(Offload, Vec<u8>)> = Vec::new();
        for s in &segs {
            c.push(s, &mut |o, b| got.push((*o, b.to_vec())));
        }
        assert_eq!(got.len(), 1, "the short last datagram ends the run");
        c.flush(&mut |o, b| got.push((*o, b.to_vec())));
        let (o, mut sf) = got.pop().unwrap();
        assert_eq!((o.gso, o.gso_size), (Gso::Udp, 1200));
        assert_eq!(usize::from(o.hdr_len), Layout::parse(&sf).unwrap().hdr_end);
        complete_csum(&mut sf, o.csum.unwrap());
        assert_eq!(sf, original);
        assert_eq!(c.merged(), 7);

        // No GSO, NEEDS_CSUM: one frame, checksum completed.
        for tcp in [false, true] {
            let mut small = build(v6, tcp, &payload(700, 1), 1, FLAG_ACK);
            let good = small.clone();
            let c = partial(&mut small);
            assert_ne!(small, good);
            let off = Offload {
                csum: Some(c),
                ..Offload::default()
            };
            assert_eq!(cut(&small, &off), vec![good]);
        }
    }
}

/// Cuts `frame` leaving checksums partial; returns the segments and whether it did.
fn cut_partial(frame: &[u8], off: &Offload) -> (Vec<Vec<u8>>, bool) {
    let mut seg = Segmenter::new(frame, off, usize::MAX)
        .unwrap()
        .leave_csum_partial();
    let mut buf = vec![0u8; seg.segment_len_max()];
    let mut segs = Vec::new();
    while let Some(n) = seg.next_into(&mut buf) {
        segs.push(buf[..n].to_vec());
    }
    (segs, seg.leaves_csum_partial())
}

#[test]
fn segments_left_partial_are_the_full_ones_once_the_kernel_completes_them() {
    for (v6, tcp) in [(false, true), (true, true), (false, false), (true, false)] {
        let mut f = build(v6, tcp, &payload(9_000, 4), 77, FLAG_ACK | FLAG_PSH);
        let c = partial(&mut f);
        let off = Offload {
            gso: gso_of(v6, tcp),
            gso_size: 1300,
            csum: Some(c),
            ..Offload::default()
        };
        let full = cut(&f, &off);
        let (mut left, did) = cut_partial(&f, &off);
        assert!(did, "v6={v6} tcp={tcp}");
        assert_eq!(left.len(), full.len());
        for (i, (l, g)) in left.iter_mut().zip(&full).enumerate() {
            let at = Layout::parse(l).unwrap();
            assert!(!at.l4_csum_ok(l), "segment {i} not summed");
            assert_eq!(l4_csum_at(l), Some(at.csum_at()));
            assert!(complete_l4_csum(l));
            assert_eq!(&*l, g, "v6={v6} tcp={tcp} segment {i}");
        }
        // No GSO, NEEDS_CSUM where the headers say: passed on partial, as it came.
        let mut small = build(v6, tcp, &payload(300, 2), 5, FLAG_ACK);
        let good = small.clone();
        let c = partial(&mut small);
        let off = Offload {
            csum: Some(c),
            ..Offload::default()
        };
        let (mut left, did) = cut_partial(&small, &off);
        assert!(did);
        assert_eq!(left, vec![small.clone()]);
        assert!(complete_l4_csum(&mut left[0]));
        assert_eq!(left[0], good);
    }
}

#[test]
fn checksums_the_receiver_could_not_find_are_completed_by_the_sender() {
    let mut f = build(false, true, &payload(4_000, 4), 77, FLAG_ACK);
    let c = partial(&mut f);
    // No partial checksum, or one not where the headers say: full checksums.
    for csum in [
        None,
        Some(PartialCsum {
            start: c.start,
            offset: UDP_CSUM_OFFSET,
        }),
    ] {
        let mut g = f.clone();
        if csum.is_none() {
            Layout::parse(&g).unwrap().fill_l4_csum(&mut g);
        }
        let off = Offload {
            gso: Gso::TcpV4,
            gso_size: 1000,
            csum,
            ..Offload::default()
        };
        let (segs, did) = cut_partial(&g, &off);
        assert!(!did, "{csum:?}");
        if csum.is_none() {
            for s in &segs {
                assert!(Layout::parse(s).unwrap().l4_csum_ok(s));
            }
        }
    }
    // A non-IP frame with a partial checksum (say, at an odd place): completed.
    let mut odd = vec![0u8; 60];
    odd[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    let off = Offload {
        csum: Some(PartialCsum {
            start: 14,
            offset: 4,
        }),
        ..Offload::default()
    };
    assert!(!cut_partial(&odd, &off).1);
    assert!(!complete_l4_csum(&mut odd), "not TCP/UDP: left alone");
}

#[test]
fn partial_segments_merge_unverified_and_pass_alone_with_a_hint() {
    let mut f = build(false, true, &payload(5_000, 6), 1000, FLAG_ACK);
    let c = partial(&mut f);
    let off = Offload {
        gso: Gso::TcpV4,
        gso_size: 1000,
        csum: Some(c),
        ..Offload::default()
    };
    let (segs, _) = cut_partial(&f, &off);
    assert_eq!(segs.len(), 5);
    let mut c = Coalescer::new();
    let mut got = coalesce(&mut c, &segs, true);
    assert_eq!(got.len(), 1, "merged although no checksum verifies");
    let (o, mut sf) = got.pop().unwrap();
    complete_csum(&mut sf, o.csum.unwrap());
    let mut whole = f.clone();
    complete_csum(&mut whole, o.csum.unwrap());
    assert_eq!(sf, whole);
    // Alone (a pure ACK, a UDP frame): written with the hint, not vouched for.
    let mut ack = build(false, true, &[], 9, FLAG_ACK);
    partial(&mut ack);
    let mut udp = build(true, false, &payload(100, 1), 0, 0);
    partial(&mut udp);
    let mut arp = vec![0xffu8; 42];
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    for (frame, hint) in [(&ack, true), (&udp, true), (&arp, false)] {
        let mut got: Vec<Offload> = Vec::new();
        c.push_csum_partial(frame, &mut |o, _| got.push(*o));
        c.flush(&mut |o, _| got.push(*o));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].csum.is_some(), hint);
        assert!(!got[0].data_valid);
        if hint {
            assert_eq!(got[0].csum, l4_csum_at(frame));
        }
    }
    // A lone full-length partial segment, then the flush: the hint too.
    let mut got: Vec<Offload> = Vec::new();
    c.push_csum_partial(&segs[0], &mut |o, _| got.push(*o));
    c.flush(&mut |o, _| got.push(*o));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].csum, l4_csum_at(&segs[0]));
}

#[test]
fn coalescer_keeps_order_and_refuses_what_it_must_not_merge() {
    let a = |seq, len, flags| build(false, true, &payload(len, 1), seq, flags);
    let mut arp = vec![0xffu8; 42];
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    let mut corrupt = a(3000, 1000, FLAG_ACK);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x55;
    let inputs = [
        a(1000, 1000, FLAG_ACK),
        a(2000, 1000, FLAG_ACK),
        arp.clone(),                    // not TCP: flushes, passes through
        corrupt.clone(),                // bad checksum: passed through as is
        a(5000, 1000, FLAG_ACK),        // gap in sequence: new run
        a(7000, 1000, FLAG_ACK),        // gap again
        a(8000, 600, FLAG_ACK),         // short: closes the run
        a(8600, 1000, FLAG_ACK),        // starts a new one
        a(9600, 0, FLAG_ACK),           // pure ACK: flushes, passes
        a(9600, 1000, 0x02 | FLAG_ACK), // SYN never merged
    ];
    let got = coalesce_lengths(&inputs);
    let hdr = 14 + 20 + 32;
    let gsos: Vec<(Gso, usize)> = got.iter().map(|(o, l)| (o.gso, *l)).collect();
    assert_eq!(
        gsos,
        vec![
            (Gso::TcpV4, hdr + 2000),
            (Gso::None, 42),
            (Gso::None, corrupt.len()),
            (Gso::None, hdr + 1000),
            (Gso::TcpV4, hdr + 1600),
            (Gso::None, hdr + 1000),
            (Gso::None, hdr),
            (Gso::None, hdr + 1000),
        ]
    );
    // The corrupt one is not vouched for; verified singles are.
    assert!(!got[2].0.data_valid);
    assert!(got[3].0.data_valid);
}

/// Pushes `segs` through `c` (as checksum-partial frames if `csum_partial`) and flushes
/// it; returns what came out: each output's offload and bytes.
fn coalesce(c: &mut Coalescer, segs: &[Vec<u8>], csum_partial: bool) -> Vec<(Offload, Vec<u8>)> {
    let mut got = Vec::new();
    let mut emit = |o: &Offload, b: &[u8]| got.push((*o, b.to_vec()));
    for s in segs {
        if csum_partial {
            c.push_csum_partial(s, &mut emit);
        } else {
            c.push(s, &mut emit);
        }
    }
    c.flush(&mut emit);
    got
}

/// Pushes `inputs` through a fresh coalescer, flushes it, and returns what came out: each
/// output's offload and length.
fn coalesce_lengths(inputs: &[Vec<u8>]) -> Vec<(Offload, usize)> {
    let mut c = Coalescer::new();
    let mut got = Vec::new();
    for f in inputs {
        c.push(f, &mut |o, b| got.push((*o, b.len())));
    }
    c.flush(&mut |o, b| got.push((*o, b.len())));
    got
}

#[test]
fn udp_datagrams_merge_only_within_one_flow_and_size() {
    let d = |len: usize, sport: u16| {
        let mut f = build(false, false, &payload(len, 2), 0, 0);
        let at = Layout::parse(&f).unwrap();
        f[at.l4..at.l4 + 2].copy_from_slice(&sport.to_be_bytes());
        at.fill_l4_csum(&mut f);
        f
    };
    let mut no_csum = d(1000, 40000);
    let l4 = 14 + 20;
    no_csum[l4 + 6..l4 + 8].fill(0); // IPv4 UDP without a checksum
    let inputs = [
        d(1000, 40000),
        d(1000, 40000),
        d(1000, 40001),                                     // another flow: new run
        d(1000, 40001),                                     //
        d(1200, 40001),                                     // bigger than the run's size: new run
        d(700, 40001),                                      // shorter: ends that run
        d(0, 40001),                                        // empty: passes alone
        no_csum.clone(),                                    // no checksum: passes alone, as it came
        d(1000, 40001),                                     //
        build(false, true, &payload(1000, 2), 1, FLAG_ACK), // TCP: never joins UDP
    ];
    let got = coalesce_lengths(&inputs);
    let hdr = 14 + 20 + 8;
    let gsos: Vec<(Gso, u16, usize)> = got.iter().map(|(o, l)| (o.gso, o.gso_size, *l)).collect();
    assert_eq!(
        gsos,
        vec![
            (Gso::Udp, 1000, hdr + 2000),
            (Gso::Udp, 1000, hdr + 2000),
            (Gso::Udp, 1200, hdr + 1900),
            (Gso::None, 0, hdr),
            (Gso::None, 0, hdr + 1000),
            (Gso::None, 0, hdr + 1000),
            (Gso::None, 0, 14 + 20 + 32 + 1000),
        ]
    );
    // Verified singles are vouched for, the one without a checksum is not.
    assert!(got[3].0.data_valid && got[5].0.data_valid);
    assert!(!got[4].0.data_valid);
    // For a TAP without USO every datagram passes alone, vouched for.
    let mut c = Coalescer::new().without_udp();
    let mut got: Vec<Offload> = Vec::new();
    for f in &inputs[..2] {
        c.push(f, &mut |o, _| got.push(*o));
    }
    c.flush(&mut |o, _| got.push(*o));
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|o| o.gso == Gso::None && o.data_valid));
}

#[test]
fn authenticated_frames_merge_without_reverifying_checksums() {
    let a = |seq, len| build(false, true, &payload(len, 1), seq, FLAG_ACK);
    let mut odd = a(3000, 1000);
    let last = odd.len() - 1;
    odd[last] ^= 0x55;
    let inputs = [a(1000, 1000), a(2000, 1000), odd];
    let run = |mut c: Coalescer| {
        let mut got: Vec<(Gso, usize)> = Vec::new();
        for f in &inputs {
            c.push(f, &mut |o, b| got.push((o.gso, b.len())));
        }
        c.flush(&mut |o, b| got.push((o.gso, b.len())));
        got
    };
    let hdr = 14 + 20 + 32;
    // Verifying: the third segment's checksum fails and it stays apart.
    assert_eq!(
        run(Coalescer::new()),
        vec![(Gso::TcpV4, hdr + 2000), (Gso::None, hdr + 1000)]
    );
    // Authenticated on the way (its bytes are what the sender checksummed): one run.
    assert_eq!(
        run(Coalescer::for_authenticated_frames()),
        vec![(Gso::TcpV4, hdr + 3000)]
    );
}

#[test]
fn bad_offload_requests_are_refused_not_panicked_on() {
    let f = build(false, true, &payload(3000, 2), 1, FLAG_ACK);
    let mut scratch = vec![0u8; 4096];
    let mut ask = |off: Offload, frame: &[u8]| segment(frame, &off, 1500, &mut scratch, |_| {});
    let tcp4 = Offload {
        gso: Gso::TcpV4,
        gso_size: 1000,
        ..Offload::default()
    };
    assert_eq!(
        ask(
            Offload {
                gso: Gso::TcpV6,
                ..tcp4
            },
            &f
        ),
        Err(SegmentError::Malformed)
    );
    assert_eq!(
        ask(
            Offload {
                gso_size: 0,
                ..tcp4
            },
            &f
        ),
        Err(SegmentError::TooManySegments)
    );
    assert_eq!(
        ask(
            Offload {
                gso_size: 10,
                ..tcp4
            },
            &f
        ),
        Err(SegmentError::TooManySegments)
    );
    assert_eq!(ask(tcp4, &f[..40]), Err(SegmentError::Unsupported));
    let far = Offload {
        csum: Some(PartialCsum {
            start: 4000,
            offset: 16,
        }),
        ..Offload::default()
    };
    assert_eq!(ask(far, &f), Err(SegmentError::Malformed));
    assert_eq!(ask(tcp4, &f), Ok(3));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any TSO/USO super-frame: segments verify, carry the payload in order, and coalesce
    /// back to the original.
    #[test]
    fn segments_reassemble_to_the_original_stream(
        v6 in any::<bool>(),
        tcp in any::<bool>(),
        len in 0usize..20_000,
        mss in 200u16..2000,
        seq in any::<u32>(),
        seed in any::<u8>(),
    ) {
        let data = payload(len, seed);
        let mut f = build(v6, tcp, &data, seq, FLAG_ACK | FLAG_PSH);
        let original = f.clone();
        let off = Offload {
            gso: gso_of(v6, tcp),
            gso_size: mss,
            csum: Some(partial(&mut f)),
            ..Offload::default()
        };
        let segs = cut(&f, &off);
        prop_assert_eq!(segs.len(), len.div_ceil(usize::from(mss)).max(1));
        let (src, dst) = addrs(v6);
        let mut joined = Vec::new();
        for s in &segs {
            let at = Layout::parse(s).unwrap();
            prop_assert!(at.l4_csum_ok(s));
            if tcp {
                prop_assert!(TcpPacket::new_checked(&s[at.l4..]).unwrap().verify_checksum(&src, &dst));
            }
            joined.extend_from_slice(&s[at.hdr_end..]);
        }
        prop_assert_eq!(&joined, &data);
        if len > 0 {
            let mut got = coalesce(&mut Coalescer::new(), &segs, false);
            prop_assert_eq!(got.len(), 1);
            let (o, mut sf) = got.pop().unwrap();
            if let Some(p) = o.csum {
                complete_csum(&mut sf, p);
            }
            prop_assert_eq!(sf, original);
        }
    }

    /// Garbage with any offload request never panics, and whatever comes out of the
    /// coalescer is no longer than what went in.
    #[test]
    fn garbage_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        gso in 0u8..4,
        gso_size in any::<u16>(),
        start in any::<u16>(),
        offset in any::<u16>(),
    ) {
        let off = Offload {
            gso: [Gso::None, Gso::TcpV4, Gso::TcpV6, Gso::Udp][usize::from(gso)],
            gso_size,
            csum: (start % 3 != 0).then_some(PartialCsum { start: start % 400, offset: offset % 64 }),
            ..Offload::default()
        };
        let mut scratch = vec![0u8; 1024];
        let _ = segment(&bytes, &off, 1500, &mut scratch, |_| {});
        let mut c = Coalescer::new();
        c.push(&bytes, &mut |_, b| assert!(b.len() <= 300));
        c.flush(&mut |_, b| assert!(b.len() <= 300));
    }
}
