//! Super-frames as GSO batches of segments, cut to the link MTU; GRO batches opened
//! through a spread.

use super::*;
use crate::segment::Offload;
use core::sync::atomic::{AtomicUsize, Ordering};

/// A TCP super-frame from MAC_A to MAC_C with `payload_len` bytes, as a TAP with
/// offloads gives it (partial checksum, TSO at 1300), and the same frame complete.
fn super_frame_for_c(payload_len: usize) -> (Vec<u8>, Offload, Vec<u8>) {
    use crate::segment::Gso;
    use crate::segment::tests::{FLAG_ACK, build, partial, payload};
    let mut f = build(false, true, &payload(payload_len, 9), 7, FLAG_ACK);
    f[..6].copy_from_slice(&MAC_C);
    f[6..12].copy_from_slice(&MAC_A);
    let original = f.clone();
    let off = Offload {
        gso: Gso::TcpV4,
        gso_size: 1300,
        csum: Some(partial(&mut f)),
        ..Offload::default()
    };
    (f, off, original)
}

/// `segments` merged back by a receiver's coalescer: exactly one super-frame, its
/// checksum completed.
fn merged_back(segments: &[Vec<u8>]) -> Vec<u8> {
    let mut c = crate::segment::Coalescer::new();
    let mut merged = Vec::new();
    for s in segments {
        c.push(s, &mut |o, b| merged.push((*o, b.to_vec())));
    }
    c.flush(&mut |o, b| merged.push((*o, b.to_vec())));
    assert_eq!(merged.len(), 1);
    let (o, mut sf) = merged.pop().unwrap();
    crate::segment::complete_csum(&mut sf, o.csum.unwrap());
    sf
}

#[test]
fn tso_super_frames_cross_as_gso_batches_of_sealed_segments() {
    for encrypt in [false, true] {
        let mut l = Line::new(encrypt);
        // Teach 0 that MAC_C is behind 2 (two hops: 1 relays).
        l.bridge_in(2, &frame([0xff; 6], MAC_C, 1));
        let (f, off, original) = super_frame_for_c(40_000);
        l.seen.clear();
        let mut outs = Vec::new();
        l.s[0].handle_bridge_offload_frame(Instant::ZERO, &f, &off, &mut |o| outs.push(own(o)));
        // 31 segments of ~1400 bytes: one GSO batch of equal datagrams.
        let sizes: Vec<Option<u16>> = outs
            .iter()
            .map(|o| match o {
                Owned::Datagram(_, _, n) => *n,
                _ => panic!("no local delivery"),
            })
            .collect();
        assert_eq!(sizes.len(), 1, "{sizes:?}");
        let seg = usize::from(sizes[0].unwrap());
        let Owned::Datagram(_, b, _) = &outs[0] else {
            panic!()
        };
        assert_eq!(b.len().div_ceil(seg), 40_000usize.div_ceil(1300));
        for o in outs {
            l.collect(0, o.as_output());
        }
        l.settle();
        let got = &l.delivered[2][..];
        assert_eq!(got.len(), 31);
        assert_eq!(merged_back(got), original, "encrypt={encrypt}");
        // The checksum was left to offload: segments went partial, in datagrams that
        // say so over both hops, and 2 was told to have them finished.
        assert_eq!(l.partial[2], 31, "encrypt={encrypt}");
        let kinds: BTreeSet<u8> = l.seen.iter().map(|d| d[2] & 0x7f).collect();
        assert!(kinds.contains(&5), "{kinds:?}");
        assert!(!kinds.contains(&1), "{kinds:?}");
    }
}

#[test]
fn segments_are_cut_to_fit_the_link_mtu_to_the_next_hop() {
    use crate::segment::tests::{FLAG_ACK, build, payload};
    for encrypt in [false, true] {
        let mut l = Line::new(encrypt);
        l.bridge_in(2, &frame([0xff; 6], MAC_C, 1));
        // 0's underlay to 1 carries 1280-byte IP packets; 2 is no direct peer of 0.
        l.s[0].set_link_mtu(name(1), Some(1280));
        l.s[0].set_link_mtu(name(2), Some(1300));
        let (f, off, original) = super_frame_for_c(20_000);
        let mut outs = Vec::new();
        l.s[0].handle_bridge_offload_frame(Instant::ZERO, &f, &off, &mut |o| outs.push(own(o)));
        assert_eq!(outs.len(), 1);
        let Some(Owned::Datagram(_, b, Some(seg))) = outs.first() else {
            panic!("{outs:?}")
        };
        let seg = usize::from(*seg);
        assert!(seg + 28 <= 1280, "stride {seg}");
        assert!(seg + 28 > 1280 - 16, "as big as fits: {seg}");
        assert!(b.len().div_ceil(seg) > 20_000usize.div_ceil(1300));
        let path = l.s[0].paths(Instant::ZERO).find(|p| p.name == name(1));
        assert_eq!(path.unwrap().link_mtu_bytes, Some(1280));
        // IP + UDP 28, header 23, prefix 12, length 2, tag 16 when sealing.
        let room = 1280 - 28 - 37 - if encrypt { 16 } else { 0 };
        assert_eq!(path.unwrap().frame_room_bytes, Some(room));
        assert!(l.s[0].paths(Instant::ZERO).all(|p| p.name != name(2)));
        for o in outs {
            l.collect(0, o.as_output());
        }
        l.settle();
        assert_eq!(merged_back(&l.delivered[2]), original, "encrypt={encrypt}");
    }
    // Whole frames: TCP too big for the link is cut all the same; UDP is left whole.
    for tcp in [true, false] {
        let mut l = Line::new(false);
        l.bridge_in(1, &frame([0xff; 6], MAC_C, 1));
        l.s[0].set_link_mtu(name(1), Some(1280));
        let mut f = build(false, tcp, &payload(1300, 8), 7, FLAG_ACK);
        f[..6].copy_from_slice(&MAC_C);
        f[6..12].copy_from_slice(&MAC_A);
        let mut outs = Vec::new();
        l.s[0].handle_bridge_frame(Instant::ZERO, &f, &mut |o| outs.push(own(o)));
        let sizes: Vec<usize> = outs
            .iter()
            .map(|o| match o {
                Owned::Datagram(_, b, n) => b.len().div_ceil(n.map_or(b.len(), usize::from)),
                _ => panic!("no local delivery"),
            })
            .collect();
        assert_eq!(sizes, vec![if tcp { 2 } else { 1 }], "tcp={tcp}");
        for o in outs {
            l.collect(0, o.as_output());
        }
        l.settle();
        let got = &l.delivered[1];
        let lens: Vec<usize> = got.iter().map(Vec::len).collect();
        if tcp {
            assert_eq!(lens.len(), 2, "{lens:?}");
            let joined: Vec<u8> = got.iter().flat_map(|g| g[66..].to_vec()).collect();
            assert_eq!(joined, f[66..].to_vec());
        } else {
            assert_eq!(got, &vec![f.clone()]);
        }
        for g in got {
            assert_eq!(crate::segment::l4_csum_verifies(g), Some(true));
        }
    }
    // Too small to cut for: forgotten, the kernel fragments.
    let mut l = Line::new(false);
    l.s[0].set_link_mtu(name(1), Some(576));
    let path = l.s[0].paths(Instant::ZERO).find(|p| p.name == name(1));
    assert_eq!(path.unwrap().link_mtu_bytes, None);
}

const MAC_B: Mac = [0x02, 0, 0, 0, 0, 0xb];

impl Line {
    /// Teaches 0 that MAC_B is behind 1, then has 0 cut a TCP super-frame with
    /// `payload_len` bytes for MAC_B into 1000-byte segments; returns the one GSO batch
    /// it sends to 1 and its segment size.
    fn batch_for_b(&mut self, payload_len: usize) -> (Vec<u8>, usize) {
        use crate::segment::Gso;
        use crate::segment::tests::{FLAG_ACK, build, partial, payload};
        self.bridge_in(1, &frame([0xff; 6], MAC_B, 1));
        let mut f = build(false, true, &payload(payload_len, 3), 7, FLAG_ACK);
        f[..6].copy_from_slice(&MAC_B);
        f[6..12].copy_from_slice(&MAC_A);
        let off = Offload {
            gso: Gso::TcpV4,
            gso_size: 1000,
            csum: Some(partial(&mut f)),
            ..Offload::default()
        };
        let mut outs = Vec::new();
        self.s[0].handle_bridge_offload_frame(Instant::ZERO, &f, &off, &mut |o| outs.push(own(o)));
        let [Owned::Datagram(_, batch, Some(seg))] = <[Owned; 1]>::try_from(outs).unwrap() else {
            panic!("one GSO batch")
        };
        (batch, usize::from(seg))
    }
}

/// A [`Spread`] that does the pieces last to first and counts them.
#[derive(Debug)]
struct Backwards(Arc<AtomicUsize>);

impl Spread for Backwards {
    fn spread(
        &mut self,
        buf: &mut [u8],
        piece_len: usize,
        work: &(dyn Fn(usize, &mut [u8]) + Sync),
    ) {
        let pieces: Vec<&mut [u8]> = buf.chunks_mut(piece_len).collect();
        for (i, p) in pieces.into_iter().enumerate().rev() {
            work(i, p);
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[test]
fn batches_sealed_and_opened_through_a_spread_match_one_at_a_time() {
    // (frames delivered by 1, its stats, pieces the spreads ran) per setting.
    let run = |spread: bool, encrypt: bool, suite: CipherSuite| {
        let mut l = Line::with_cipher(encrypt, suite);
        let pieces = Arc::new(AtomicUsize::new(0));
        if spread {
            for s in &mut l.s {
                s.set_spread(Box::new(Backwards(pieces.clone())));
            }
        }
        let (mut batch, seg) = l.batch_for_b(20_000);
        assert_eq!(batch.len().div_ceil(seg), 20, "20 segments of 1000 bytes");
        // The wire mangles it: segment 3 is tampered with, segment 5 comes twice
        // (replacing 6, so the batch keeps its shape).
        batch[3 * seg + DATAGRAM_HEADER_LEN + 40] ^= 1;
        let five = batch[5 * seg..6 * seg].to_vec();
        batch[6 * seg..7 * seg].copy_from_slice(&five);
        let mut got = Vec::new();
        l.s[1].handle_datagrams(Instant::ZERO, addr(0), &mut batch, seg, &mut |o| {
            got.extend(frame_of(o));
        });
        (got, l.s[1].stats(), pieces.load(Ordering::Relaxed))
    };
    let (plain_one, plain_stats, _) = run(false, false, CipherSuite::ChaCha20Poly1305);
    assert_eq!(
        plain_one.len(),
        19,
        "plain: no seal to find the tampering, but the counter refuses the replay"
    );
    assert_eq!(plain_stats.drops_crypto, 0);
    assert_eq!(plain_stats.drops_replayed, 1);
    // Each cipher the build has: the sleeve seals and opens batches with the one the
    // connection chose.
    for suite in suites() {
        let (one, one_stats, none) = run(false, true, suite);
        let (spread, spread_stats, pieces) = run(true, true, suite);
        assert_eq!(none, 0);
        assert_eq!(pieces, 20 + 20, "sealed and opened through the spread");
        assert_eq!(
            one.len(),
            18,
            "{suite}: the tampered segment and the replay are dropped"
        );
        assert_eq!(one[..3], plain_one[..3], "{suite}: the frames themselves");
        assert_eq!(spread, one, "same frames, same order");
        assert_eq!(spread_stats, one_stats);
        assert_eq!(spread_stats.drops_crypto, 2);
        assert_eq!(spread_stats.datagrams_received, 20);
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]
    /// Whatever the wire did to a GRO batch (bytes flipped, datagrams repeated or cut
    /// short, a wrong segment size), taking it as one batch through a spread gives the
    /// same frames, in the same order, and the same counters as one at a time.
    #[test]
    fn a_mangled_batch_acts_as_its_datagrams_one_at_a_time(
        encrypt in proptest::bool::ANY,
        payload_len in 1usize..30_000,
        flips in proptest::collection::vec((0usize..64, 0usize..1500, 1u8..=255), 0..4),
        repeats in proptest::collection::vec((0usize..64, 0usize..64), 0..4),
        cut in 0usize..2000,
        seg_skew in proptest::prop_oneof![3 => proptest::strategy::Just(0i32), 1 => -3i32..=3],
    ) {
        let mut lines = [Line::new(encrypt), Line::new(encrypt)];
        lines[1].s[1].set_spread(Box::new(Backwards(Arc::new(AtomicUsize::new(0)))));
        let (mut batch, seg) = lines[0].batch_for_b(payload_len);
        lines[1].bridge_in(1, &frame([0xff; 6], MAC_B, 1));
        let n = batch.len().div_ceil(seg);
        for (i, at, x) in flips {
            let k = (i % n) * seg + at;
            if k < batch.len() {
                batch[k] ^= x;
            }
        }
        for (dst, src) in repeats {
            let (d, s) = (dst % n, src % n);
            if d + 1 < n && s + 1 < n {
                let copy = batch[s * seg..(s + 1) * seg].to_vec();
                batch[d * seg..(d + 1) * seg].copy_from_slice(&copy);
            }
        }
        batch.truncate(batch.len().saturating_sub(cut).max(1));
        let step = usize::try_from(seg as i32 + seg_skew).unwrap_or(1).max(1);
        let mut got: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
        let [one, spread] = &mut lines;
        let mut b1 = batch.clone();
        for d in b1.chunks_mut(step) {
            one.s[1].handle_datagram(Instant::ZERO, addr(0), d, &mut |o| {
                got[0].extend(frame_of(o));
            });
        }
        let mut b2 = batch;
        spread.s[1].handle_datagrams(Instant::ZERO, addr(0), &mut b2, step, &mut |o| {
            got[1].extend(frame_of(o));
        });
        proptest::prop_assert_eq!(&got[0], &got[1]);
        proptest::prop_assert_eq!(one.s[1].stats(), spread.s[1].stats());
    }
}
