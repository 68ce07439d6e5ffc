//! Unit tests of the engine, on a line of three engines (0 - 1 - 2) that pass datagrams
//! to each other; one file per concern.

mod batch;
mod forwarding;
mod probes;
mod queues;
mod receive;
mod roaming;

use super::*;
use crate::crypto::{ChaChaKeyRng, CipherSuite, DatagramBinding, Handshake};
use crate::switch::Mac;
use alloc::collections::VecDeque;

fn name(i: u64) -> PeerName {
    PeerName::from_u64(0x10 + i)
}

fn addr(i: u64) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i as u8 + 1], 6783))
}

/// Every cipher this build can seal with.
fn suites() -> Vec<CipherSuite> {
    CipherSuite::ALL
        .into_iter()
        .filter(|c| crate::crypto::CipherSuites::supported().contains(*c))
        .collect()
}

/// Both ends' datagram keys of one (v3) connection that chose `suite`.
fn keys(
    rng: &mut ChaChaKeyRng,
    suite: CipherSuite,
) -> (
    (DatagramSealer, DatagramOpener),
    (DatagramSealer, DatagramOpener),
) {
    let (a, b) = (Handshake::start(rng, None), Handshake::start(rng, None));
    let (pa, pb) = (a.public_bytes(), b.public_bytes());
    let binding = DatagramBinding {
        suite,
        transcript: [1; 32],
    };
    let ka = a.finish_bound(pb, true, &binding).unwrap();
    let kb = b.finish_bound(pa, false, &binding).unwrap();
    (
        (ka.datagram_sealer, ka.datagram_opener),
        (kb.datagram_sealer, kb.datagram_opener),
    )
}

fn frame(dst: Mac, src: Mac, marker: u8) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&[marker; 50]);
    f
}

/// A line 0 - 1 - 2: 0 and 2 have no direct path.
struct Line {
    s: Vec<Sleeve>,
    /// Frames each engine wrote to its bridge (partial checksums completed, as the
    /// kernel would).
    delivered: Vec<Vec<Vec<u8>>>,
    /// How many of those came with a partial checksum.
    partial: Vec<usize>,
    /// Datagrams on the wire: (to index, bytes).
    wire: VecDeque<(usize, Vec<u8>, usize)>,
    /// Every datagram ever sent, for inspection.
    seen: Vec<Vec<u8>>,
}

impl Line {
    fn new(encrypt: bool) -> Self {
        Self::with_cipher(encrypt, CipherSuite::ChaCha20Poly1305)
    }

    /// A line whose two links chose `suite` (used when `encrypt`).
    fn with_cipher(encrypt: bool, suite: CipherSuite) -> Self {
        let mut rng = ChaChaKeyRng::for_simulation(5);
        let mut s: Vec<Sleeve> = (0..3).map(|i| Sleeve::new(name(i), encrypt)).collect();
        let now = Instant::ZERO;
        for (a, b) in [(0u64, 1u64), (1, 2)] {
            let (ka, kb) = keys(&mut rng, suite);
            let (ka, kb) = if encrypt {
                (Some(ka), Some(kb))
            } else {
                (None, None)
            };
            s[a as usize].set_peer(now, name(b), addr(b), ka);
            s[b as usize].set_peer(now, name(a), addr(a), kb);
        }
        let hop = |pairs: &[(u64, u64)]| pairs.iter().map(|&(d, h)| (name(d), name(h))).collect();
        s[0].set_routes(
            hop(&[(1, 1), (2, 1)]),
            [(name(0), alloc::vec![name(1)])].into(),
        );
        s[1].set_routes(
            hop(&[(0, 0), (2, 2)]),
            [
                (name(0), alloc::vec![name(2)]),
                (name(2), alloc::vec![name(0)]),
                (name(1), alloc::vec![name(0), name(2)]),
            ]
            .into(),
        );
        s[2].set_routes(
            hop(&[(1, 1), (0, 1)]),
            [(name(2), alloc::vec![name(1)])].into(),
        );
        Self {
            s,
            delivered: alloc::vec![Vec::new(); 3],
            partial: alloc::vec![0; 3],
            wire: VecDeque::new(),
            seen: Vec::new(),
        }
    }

    fn collect(&mut self, i: usize, o: Output<'_>) {
        match o {
            Output::Frame(_) | Output::FrameCsumPartial(_) => {
                self.partial[i] += usize::from(matches!(o, Output::FrameCsumPartial(_)));
                self.delivered[i].extend(frame_of(o));
            }
            Output::DatagramsInPlace { .. } => unreachable!("tests collect owned outputs"),
            Output::Datagram {
                to,
                bytes,
                segment_size,
            } => {
                let j = usize::from(match to.ip() {
                    core::net::IpAddr::V4(v) => v.octets()[3],
                    core::net::IpAddr::V6(_) => 0,
                }) - 1;
                let step = segment_size.map_or(bytes.len(), usize::from);
                for d in bytes.chunks(step.max(1)) {
                    self.seen.push(d.to_vec());
                    self.wire.push_back((j, d.to_vec(), i));
                }
            }
        }
    }

    fn bridge_in(&mut self, i: usize, f: &[u8]) {
        let mut outs = Vec::new();
        self.s[i].handle_bridge_frame(Instant::ZERO, f, &mut |o| outs.push(own(o)));
        for o in outs {
            self.collect(i, o.as_output());
        }
        self.settle();
    }

    fn settle(&mut self) {
        while let Some((j, mut d, from)) = self.wire.pop_front() {
            let mut outs = Vec::new();
            self.s[j].handle_datagram(Instant::ZERO, addr(from as u64), &mut d, &mut |o| {
                outs.push(own(o))
            });
            for o in outs {
                self.collect(j, o.as_output());
            }
        }
    }
}

/// The frame an output writes to the bridge, its partial checksum completed (what the
/// kernel does with the hint); `None` for datagrams.
fn frame_of(o: Output<'_>) -> Option<Vec<u8>> {
    match o {
        Output::Frame(f) => Some(f.to_vec()),
        Output::FrameCsumPartial(f) => {
            let mut f = f.to_vec();
            crate::segment::complete_l4_csum(&mut f);
            Some(f)
        }
        _ => None,
    }
}

#[derive(Debug)]
enum Owned {
    Frame(Vec<u8>),
    FrameCsumPartial(Vec<u8>),
    Datagram(SocketAddr, Vec<u8>, Option<u16>),
}

impl Owned {
    fn as_output(&self) -> Output<'_> {
        match self {
            Self::Frame(f) => Output::Frame(f),
            Self::FrameCsumPartial(f) => Output::FrameCsumPartial(f),
            Self::Datagram(to, b, n) => Output::Datagram {
                to: *to,
                bytes: b,
                segment_size: *n,
            },
        }
    }
}

fn own(o: Output<'_>) -> Owned {
    match o {
        Output::Frame(f) => Owned::Frame(f.to_vec()),
        Output::FrameCsumPartial(f) => Owned::FrameCsumPartial(f.to_vec()),
        Output::Datagram {
            to,
            bytes,
            segment_size,
        } => Owned::Datagram(to, bytes.to_vec(), segment_size),
        Output::DatagramsInPlace {
            to,
            len_max,
            segment_size,
            mut build,
        } => {
            let mut b = alloc::vec![0u8; len_max];
            let used = build.fill(&mut b);
            b.truncate(used);
            Owned::Datagram(to, b, Some(segment_size))
        }
    }
}

const MAC_A: Mac = [0x02, 0, 0, 0, 0, 0xa];
const MAC_C: Mac = [0x02, 0, 0, 0, 0, 0xc];
