//! Unit tests: ring merge laws (proptest), consensus, subnet allocation, claims, donation,
//! exhaustion, rmpeer, reclaim, persistence, codec rejections. Peers are wired directly
//! (every peer a neighbour of every other) by [`Cluster`].

use super::ring::{Entry, Merged, Ring, RingError, RingId};
use super::wire::{IpamMsg, Outcome, Route};
use super::*;
use crate::peer::PeerName;
use crate::time::{Duration, Instant};
use crate::wire::{WireError, with_byte};
use ::alloc::collections::BTreeMap;
use ::alloc::format;
use ::alloc::vec;
use ::alloc::vec::Vec;
use proptest::prelude::*;

fn cidr(s: &str) -> Cidr {
    s.parse().unwrap()
}

fn name(i: u64) -> PeerName {
    PeerName::from_u64(0x100 + i)
}

fn cid(s: &str) -> ContainerId {
    ContainerId::new(s).unwrap()
}

fn config(range: &str, init: InitMode) -> IpamConfig {
    IpamConfig {
        range: cidr(range),
        default_subnet: cidr(range),
        init,
        reclaim_after: None,
        request_timeout: Duration::from_secs(60),
    }
}

struct Cluster {
    peers: Vec<Ipam>,
    /// Peers cut off from everyone.
    down: Vec<bool>,
    events: Vec<(usize, IpamEvent)>,
    now: Instant,
}

impl Cluster {
    fn new(n: usize, range: &str, init: InitMode) -> Self {
        let peers = (0..n)
            .map(|i| {
                Ipam::new(
                    config(range, init),
                    name(i as u64),
                    i as u64,
                    Duration::from_secs(5),
                    Instant::ZERO,
                )
            })
            .collect();
        let mut c = Self {
            peers,
            down: vec![false; n],
            events: Vec::new(),
            now: Instant::ZERO,
        };
        for i in 0..n {
            for j in 0..n {
                if i != j {
                    c.peers[i].on_neighbour(name(j as u64));
                }
            }
        }
        c.settle();
        c
    }

    fn index(&self, p: PeerName) -> usize {
        (p.as_u64() - 0x100) as usize
    }

    /// Delivers every output until quiet.
    fn settle(&mut self) {
        for _round in 0..10_000 {
            let mut moved = false;
            for i in 0..self.peers.len() {
                while let Some(e) = self.peers[i].poll_event() {
                    self.events.push((i, e));
                }
                while let Some(o) = self.peers[i].poll_output() {
                    moved = true;
                    let from = name(i as u64);
                    let (targets, msg): (Vec<usize>, Vec<u8>) = match o {
                        Output::Neighbours(m) | Output::Random(m) => {
                            ((0..self.peers.len()).filter(|j| *j != i).collect(), m)
                        }
                        Output::Neighbour(p, m) | Output::Unicast(p, m) => (vec![self.index(p)], m),
                    };
                    for j in targets {
                        if self.down[i] || self.down[j] {
                            continue;
                        }
                        let now = self.now;
                        self.peers[j]
                            .handle_message(now, from, &msg)
                            .expect("peers send valid messages");
                    }
                }
            }
            if !moved {
                return;
            }
        }
        panic!("cluster did not settle");
    }

    fn tick(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now += Duration::from_millis(500);
            let reachable: Vec<PeerName> = (0..self.peers.len())
                .filter(|j| !self.down[*j])
                .map(|j| name(j as u64))
                .collect();
            for i in 0..self.peers.len() {
                let view = if self.down[i] {
                    PeerView::default()
                } else {
                    PeerView {
                        reachable: reachable
                            .iter()
                            .copied()
                            .filter(|p| *p != name(i as u64))
                            .collect(),
                        seen: reachable.iter().copied().collect(),
                    }
                };
                let now = self.now;
                self.peers[i].handle_timeout(now, &view);
            }
            self.settle();
        }
    }

    fn alloc(&mut self, i: usize, c: &str, subnet: Option<&str>) -> Result<Cidr, IpamError> {
        let now = self.now;
        let req = self.peers[i].allocate(now, &cid(c), subnet.map(cidr))?;
        self.answer(i, req)
    }

    fn claim(&mut self, i: usize, c: &str, addr: &str) -> Result<Cidr, IpamError> {
        let now = self.now;
        let req = self.peers[i].claim(now, &cid(c), cidr(addr))?;
        self.answer(i, req)
    }

    fn answer(&mut self, i: usize, req: RequestId) -> Result<Cidr, IpamError> {
        self.settle();
        let found = self.events.iter().find_map(|(p, e)| match *e {
            IpamEvent::Allocated { request, addr } if *p == i && request == req => Some(Ok(addr)),
            IpamEvent::Failed { request, error } if *p == i && request == req => Some(Err(error)),
            _ => None,
        });
        found.unwrap_or(Err(IpamError::Timeout))
    }

    /// No address recorded by two peers; every record inside a span its holder owns.
    fn check_unique(&self) {
        let mut holder: BTreeMap<Ipv4Addr, usize> = BTreeMap::new();
        for (i, p) in self.peers.iter().enumerate() {
            p.ring().check().unwrap();
            for (a, _) in p.allocations() {
                assert_eq!(p.ring().owner_of(a.addr.to_bits()), Some(p.name()));
                if let Some(j) = holder.insert(a.addr, i) {
                    panic!("{} held by peers {j} and {i}", a.addr);
                }
            }
        }
    }
}

use core::net::Ipv4Addr;

#[test]
fn consensus_seeds_once_split_evenly() {
    let c = Cluster::new(3, "10.32.0.0/12", InitMode::Consensus { quorum: 3 });
    let ring = c.peers[0].ring().clone();
    assert_eq!(ring.id().map(|id| id.seeder), Some(name(0)));
    for p in &c.peers {
        assert_eq!(p.ring(), &ring);
    }
    let shares = ring.shares();
    assert_eq!(shares.len(), 3);
    for (addresses, _) in shares.values() {
        assert!((349_525..=349_526).contains(addresses), "{addresses}");
    }
    let seeded = c
        .events
        .iter()
        .filter(|(_, e)| *e == IpamEvent::RingReady)
        .count();
    assert_eq!(seeded, 3);
}

#[test]
fn alone_below_quorum_waits_then_answers_when_ring_arrives() {
    let mut a = Ipam::new(
        config("10.32.0.0/22", InitMode::Consensus { quorum: 2 }),
        name(0),
        1,
        Duration::from_secs(5),
        Instant::ZERO,
    );
    let req = a.allocate(Instant::ZERO, &cid("c1"), None).unwrap();
    a.handle_timeout(Instant::from_millis(120_000), &PeerView::default());
    assert!(a.ring().is_empty());
    assert!(
        !core::iter::from_fn(|| a.poll_event())
            .any(|e| matches!(e, IpamEvent::Allocated { .. } | IpamEvent::Failed { .. }))
    );
    // A second consensus peer shows up: the two agree, then the request is answered.
    let mut b = Ipam::new(
        config("10.32.0.0/22", InitMode::Consensus { quorum: 2 }),
        name(1),
        2,
        Duration::from_secs(5),
        Instant::ZERO,
    );
    b.on_neighbour(name(0));
    let mut got = None;
    for _ in 0..10 {
        while let Some(Output::Neighbour(_, m) | Output::Neighbours(m)) = b.poll_output() {
            a.handle_message(Instant::ZERO, name(1), &m).unwrap();
        }
        while let Some(o) = a.poll_output() {
            if let Output::Neighbour(_, m) | Output::Neighbours(m) = o {
                b.handle_message(Instant::ZERO, name(0), &m).unwrap();
            }
        }
        while let Some(e) = a.poll_event() {
            if let IpamEvent::Allocated { request, addr } = e {
                assert_eq!(request, req);
                got = Some(addr);
            }
        }
    }
    assert_eq!(got, Some(cidr("10.32.0.1/22")));
    assert_eq!(a.ring(), b.ring());
}

#[test]
fn observer_never_seeds() {
    let c = Cluster::new(2, "10.32.0.0/22", InitMode::Observer);
    assert!(c.peers.iter().all(|p| p.ring().is_empty()));
}

#[test]
fn subnet_allocation_is_inside_and_skips_network_and_broadcast() {
    let mut c = Cluster::new(1, "10.32.0.0/12", InitMode::Consensus { quorum: 1 });
    let a = c.alloc(0, "c1", Some("10.40.0.0/24")).unwrap();
    assert_eq!(a, cidr("10.40.0.1/24"));
    assert_eq!(
        c.alloc(0, "c1", Some("10.40.0.0/24")),
        Ok(a),
        "same container, same subnet: same address"
    );
    let b = c.alloc(0, "c1", None).unwrap();
    assert_eq!(b, cidr("10.32.0.1/12"));
    assert_eq!(c.peers[0].addresses_of(&cid("c1")), vec![b, a]);
    assert_eq!(
        c.peers[0].allocate(Instant::ZERO, &cid("c2"), Some(cidr("10.48.0.0/24"))),
        Err(IpamError::OutsideRange)
    );
    let mut all = Vec::new();
    for i in 0..253 {
        all.push(c.alloc(0, &format!("x{i}"), Some("10.40.0.0/24")).unwrap());
    }
    assert!(
        all.iter()
            .all(|a| a.addr.octets()[3] != 0 && a.addr.octets()[3] != 255)
    );
    assert_eq!(
        c.alloc(0, "y", Some("10.40.0.0/24")),
        Err(IpamError::RangeFull)
    );
    assert_eq!(c.peers[0].free(&cid("x7"), None), 1);
    assert_eq!(c.alloc(0, "y", Some("10.40.0.0/24")), Ok(all[7]));
}

#[test]
fn donation_moves_space_and_exhaustion_fails() {
    // /28: 16 addresses, 14 usable, split 8/8 between two peers.
    let mut c = Cluster::new(2, "10.32.0.0/28", InitMode::Consensus { quorum: 2 });
    let mut got = Vec::new();
    for i in 0..14 {
        got.push(c.alloc(0, &format!("c{i}"), None).unwrap());
        c.check_unique();
    }
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 14);
    assert!(c.peers[0].stats().donations_received > 0);
    assert!(c.peers[1].stats().donations_given > 0);
    assert_eq!(c.alloc(0, "one-too-many", None), Err(IpamError::RangeFull));
    assert_eq!(c.alloc(1, "one-too-many", None), Err(IpamError::RangeFull));
    assert_eq!(c.peers[0].ring(), c.peers[1].ring());
    // Freed space is usable again, and by the other peer after a donation back.
    assert_eq!(c.peers[0].free(&cid("c3"), None), 1);
    c.settle();
    assert!(c.alloc(1, "again", None).is_ok());
    c.check_unique();
}

#[test]
fn claims_local_remote_in_use_and_reserved() {
    let mut c = Cluster::new(2, "10.32.0.0/24", InitMode::Consensus { quorum: 2 });
    // 10.32.0.200 lies in peer 1's half.
    assert_eq!(
        c.peers[0]
            .ring()
            .owner_of(cidr("10.32.0.200/32").addr.to_bits()),
        Some(name(1))
    );
    assert_eq!(
        c.claim(0, "c1", "10.32.0.200/24"),
        Ok(cidr("10.32.0.200/24"))
    );
    assert_eq!(
        c.peers[1]
            .ring()
            .owner_of(cidr("10.32.0.200/32").addr.to_bits()),
        Some(name(0))
    );
    assert_eq!(c.claim(1, "c2", "10.32.0.200/24"), Err(IpamError::InUse));
    assert_eq!(
        c.claim(0, "c1", "10.32.0.200/24"),
        Ok(cidr("10.32.0.200/24"))
    );
    assert_eq!(c.claim(0, "c3", "10.32.0.5/24"), Ok(cidr("10.32.0.5/24")));
    assert_eq!(c.claim(1, "c4", "10.32.0.5/24"), Err(IpamError::InUse));
    assert_eq!(
        c.peers[0].claim(Instant::ZERO, &cid("c"), cidr("10.32.0.255/24")),
        Err(IpamError::Reserved)
    );
    assert_eq!(
        c.peers[0].claim(Instant::ZERO, &cid("c"), cidr("10.33.0.1/24")),
        Err(IpamError::OutsideRange)
    );
    // Automatic allocation skips claimed addresses.
    assert_eq!(c.alloc(0, "c5", None), Ok(cidr("10.32.0.1/24")));
    c.check_unique();
    assert!(ContainerId::new(&"x".repeat(65)).is_err());
    assert!(ContainerId::new("").is_err());
}

#[test]
fn rmpeer_hands_a_dead_peers_spans_to_the_caller() {
    let mut c = Cluster::new(3, "10.32.0.0/22", InitMode::Consensus { quorum: 3 });
    let before = c.peers[0]
        .ring()
        .get(
            c.peers[0]
                .ring()
                .entries()
                .find(|(_, e)| e.owner == name(2))
                .unwrap()
                .0,
        )
        .unwrap();
    c.down[2] = true;
    let now = c.now;
    assert_eq!(c.peers[0].rmpeer(now, name(0)), Err(IpamError::IsSelf));
    let moved = c.peers[0].rmpeer(now, name(2)).unwrap();
    assert!((341..=342).contains(&moved), "{moved}");
    c.settle();
    for p in &c.peers[..2] {
        assert!(p.ring().entries().all(|(_, e)| e.owner != name(2)));
        assert_eq!(p.ring(), c.peers[0].ring());
    }
    let after = c.peers[1]
        .ring()
        .entries()
        .find(|(_, e)| e.version > before.version && e.owner == name(0));
    assert!(after.is_some());
    assert_eq!(c.peers[0].rmpeer(now, name(2)), Ok(0));
}

#[test]
fn reclaim_only_by_lowest_reachable_after_the_delay() {
    let mut c = Cluster::new(3, "10.32.0.0/22", InitMode::Consensus { quorum: 3 });
    for p in &mut c.peers {
        p.config.reclaim_after = Some(Duration::from_secs(30));
    }
    // Peer 0 (the lowest) dies: peer 1 is now the lowest reachable and reclaims.
    c.down[0] = true;
    c.tick(Duration::from_secs(20));
    assert!(
        c.peers[1].ring().entries().any(|(_, e)| e.owner == name(0)),
        "too early"
    );
    c.tick(Duration::from_secs(15));
    assert!(c.peers[1].ring().entries().all(|(_, e)| e.owner != name(0)));
    assert!(c.peers[1].stats().addresses_reclaimed > 0);
    assert_eq!(c.peers[2].stats().addresses_reclaimed, 0);
    assert_eq!(c.peers[1].ring(), c.peers[2].ring());
}

#[test]
fn export_import_roundtrip_and_rejections() {
    let mut c = Cluster::new(2, "10.32.0.0/24", InitMode::Consensus { quorum: 2 });
    c.alloc(0, "c1", None).unwrap();
    c.alloc(0, "c2", Some("10.32.0.0/26")).unwrap();
    let g = c.peers[0].generation();
    let bytes = c.peers[0].export();
    let cfg = *c.peers[0].config();
    let back = Ipam::import(
        cfg,
        name(0),
        9,
        Duration::from_secs(5),
        Instant::ZERO,
        &bytes,
    )
    .unwrap();
    assert_eq!(back.ring(), c.peers[0].ring());
    assert_eq!(
        back.allocations().collect::<Vec<_>>(),
        c.peers[0].allocations().collect::<Vec<_>>()
    );
    assert_eq!(back.export(), bytes);
    c.alloc(0, "c3", None).unwrap();
    assert_ne!(
        c.peers[0].generation(),
        g,
        "an allocation changes the generation"
    );
    use persist::PersistError;
    let import =
        |b: &[u8]| Ipam::import(cfg, name(0), 9, Duration::from_secs(5), Instant::ZERO, b).err();
    assert_eq!(
        Ipam::import(
            cfg,
            name(1),
            9,
            Duration::from_secs(5),
            Instant::ZERO,
            &bytes
        )
        .err(),
        Some(PersistError::NameMismatch)
    );
    let other = config("10.40.0.0/24", InitMode::Observer);
    assert_eq!(
        Ipam::import(
            other,
            name(0),
            9,
            Duration::from_secs(5),
            Instant::ZERO,
            &bytes
        )
        .err(),
        Some(PersistError::RangeMismatch)
    );
    assert_eq!(
        import(&bytes[..bytes.len() - 1]),
        Some(PersistError::Malformed(WireError::Truncated))
    );
    assert_eq!(
        import(b"nope"),
        Some(PersistError::Malformed(WireError::BadMagic))
    );
    let mut newer = bytes.clone();
    newer[4] = 9;
    assert_eq!(import(&newer), Some(PersistError::UnsupportedVersion));
    // An allocation in a span owned by someone else is refused.
    c.alloc(1, "d1", None).unwrap();
    let theirs = c.peers[1].export();
    let mut forged = theirs.clone();
    forged[5..11].copy_from_slice(&name(0).to_bytes());
    assert_eq!(import(&forged), Some(PersistError::Inconsistent));
}

#[test]
fn codec_roundtrips_and_rejects_garbage() {
    let ring = IpamMsg::Ring {
        id: RingId {
            seeder: name(0),
            nonce: 7,
        },
        range: cidr("10.32.0.0/12"),
        full: true,
        entries: vec![
            (
                cidr("10.32.0.0/32").addr.to_bits(),
                Entry {
                    owner: name(0),
                    version: 1,
                    free: 5,
                },
            ),
            (
                cidr("10.40.0.0/32").addr.to_bits(),
                Entry {
                    owner: name(1),
                    version: 2,
                    free: 0,
                },
            ),
        ],
    };
    let req = IpamMsg::DonateRequest {
        route: Route {
            src: name(0),
            dst: name(1),
            ttl: 3,
        },
        ask: 9,
        subnet: cidr("10.40.0.0/24"),
        addr: Some(1),
    };
    let reply = IpamMsg::DonateReply {
        route: Route {
            src: name(1),
            dst: name(0),
            ttl: 3,
        },
        ask: 9,
        outcome: Outcome::Empty,
        id: RingId {
            seeder: name(0),
            nonce: 7,
        },
        entries: vec![],
    };
    let prop = IpamMsg::Proposal {
        quorum: 3,
        names: vec![name(0), name(2)],
    };
    for m in [ring.clone(), req, reply, prop, IpamMsg::RingPull] {
        let b = m.to_vec().unwrap();
        assert_eq!(b.len(), m.buffer_len());
        assert_eq!(IpamMsg::parse(&b), Ok(m.clone()));
        assert!(IpamMsg::parse(&b[..b.len() - 1]).is_err());
        let mut long = b.clone();
        long.push(0);
        assert_eq!(IpamMsg::parse(&long), Err(WireError::Inconsistent));
    }
    let b = ring.to_vec().unwrap();
    let bad = |at, value| IpamMsg::parse(&with_byte(&b, at, value));
    assert_eq!(bad(0, 2), Err(WireError::UnsupportedVersion));
    assert_eq!(bad(1, 99), Err(WireError::UnknownType));
    // Tokens out of order, a non-network range, a count over the limit.
    let unordered = IpamMsg::Ring {
        id: RingId {
            seeder: name(0),
            nonce: 7,
        },
        range: cidr("10.32.0.0/12"),
        full: false,
        entries: vec![
            (
                2,
                Entry {
                    owner: name(0),
                    version: 1,
                    free: 0,
                },
            ),
            (
                1,
                Entry {
                    owner: name(0),
                    version: 1,
                    free: 0,
                },
            ),
        ],
    };
    assert_eq!(unordered.to_vec(), Err(WireError::Inconsistent));
    let mut swapped = b.clone();
    let e0 = 24;
    let (a, rest) = swapped[e0..].split_at_mut(wire::ENTRY_LEN_BYTES);
    a.swap_with_slice(&mut rest[..wire::ENTRY_LEN_BYTES]);
    assert_eq!(IpamMsg::parse(&swapped), Err(WireError::Inconsistent));
    assert_eq!(bad(2 + 14 + 3, 1), Err(WireError::Inconsistent));
    let mut many = b.clone();
    many[22..24].copy_from_slice(&u16::MAX.to_be_bytes());
    assert_eq!(IpamMsg::parse(&many), Err(WireError::Oversized));
}

#[test]
fn merge_refuses_a_foreign_ring_and_needs_a_ring() {
    let range = cidr("10.32.0.0/22");
    let a = Ring::seeded(
        range,
        RingId {
            seeder: name(0),
            nonce: 1,
        },
        &[name(0), name(1)],
    );
    let mut b = Ring::seeded(
        range,
        RingId {
            seeder: name(1),
            nonce: 2,
        },
        &[name(1)],
    );
    let entries: Vec<_> = a.entries().collect();
    assert_eq!(
        b.merge(name(9), a.id().unwrap(), &entries),
        Err(RingError::Conflict)
    );
    let mut empty = Ring::new(range);
    assert_eq!(
        empty.merge(name(9), a.id().unwrap(), &entries),
        Err(RingError::NoRing)
    );
    assert_eq!(
        empty.adopt(a.id().unwrap(), &entries[1..]),
        Err(RingError::OutOfRange)
    );
    assert_eq!(empty.adopt(a.id().unwrap(), &entries), Ok(()));
    assert_eq!(empty, a);
}

#[test]
fn merge_refuses_entries_that_take_our_space_but_takes_a_donation_to_us() {
    // name(0) owns 10.32.0.0/23, name(1) 10.32.2.0/23.
    let mut ours = base_ring();
    let id = ours.id().unwrap();
    let base = ours.range().start();
    let mine = ours.get(base).unwrap();
    assert_eq!(mine.owner, name(0));
    let e = |owner: u64, version: u64| Entry {
        owner: name(owner),
        version,
        free: 7,
    };
    let attack = [
        // Another owner at our token, a version of our own entry we never wrote, and
        // new tokens inside our span (for someone else, and "for us").
        (base, e(2, mine.version + 5)),
        (base + 64, e(2, 1)),
        (base + 65, e(0, 1)),
    ];
    let unchanged = ours.clone();
    assert_eq!(
        ours.merge(name(0), id, &attack),
        Ok(Merged {
            changed: vec![],
            refused: 3
        })
    );
    assert_eq!(ours, unchanged);
    assert_eq!(
        ours.merge(name(0), id, &[(base, e(0, u64::MAX))])
            .map(|m| m.refused),
        Ok(1)
    );
    assert_eq!(ours, unchanged);
    // A third peer has no say over name(0)'s spans: the CRDT takes the same entries.
    let mut third = base_ring();
    assert_eq!(third.merge(name(1), id, &attack).map(|m| m.refused), Ok(0));
    assert_eq!(third.owner_of(base + 64), Some(name(2)));
    // name(1) donates 10.32.2.188-10.32.3.31 to us: its remainders and our piece in one batch,
    // in any order, are taken.
    let mut donor = base_ring();
    let mut batch = hand_over(&mut donor, name(1), base + 700, base + 800, name(0));
    let mut forward = ours.clone();
    assert_eq!(forward.merge(name(0), id, &batch).map(|m| m.refused), Ok(0));
    assert_eq!(forward, donor);
    batch.reverse();
    let merged = ours.merge(name(0), id, &batch).unwrap();
    assert_eq!(merged.refused, 0);
    assert_eq!(merged.changed.len(), batch.len());
    assert_eq!(ours, donor);
    assert_eq!(ours.owner_of(base + 750), Some(name(0)));
    assert_eq!(ours.owner_of(base + 800), Some(name(1)));
    assert_eq!(ours.owner_of(base + 699), Some(name(1)));
    // Our own transfer, echoed back by the peer that took it, changes nothing more.
    let echo = hand_over(&mut ours, name(0), base + 128, base + 256, name(1));
    let mut theirs = donor.clone();
    assert_eq!(theirs.merge(name(1), id, &echo).map(|m| m.refused), Ok(0));
    assert_eq!(theirs, ours);
    let back: Vec<(u32, Entry)> = theirs.entries().collect();
    assert_eq!(
        ours.merge(name(0), id, &back),
        Ok(Merged {
            changed: vec![],
            refused: 0
        })
    );
}

#[test]
fn a_crafted_ring_update_does_not_take_our_allocations() {
    let mut c = Cluster::new(2, "10.32.0.0/28", InitMode::Consensus { quorum: 2 });
    let held = c.alloc(0, "c0", None).unwrap();
    let ring = c.peers[0].ring().clone();
    let span = ring.span_of(held.addr.to_bits()).unwrap();
    assert_eq!(span.entry.owner, name(0));
    // name(2), not in the ring, claims peer 0's span and a piece inside it.
    let forged = IpamMsg::Ring {
        id: ring.id().unwrap(),
        range: ring.range(),
        full: false,
        entries: vec![
            (
                span.start,
                Entry {
                    owner: name(2),
                    version: u64::MAX,
                    free: 8,
                },
            ),
            (
                span.start + 4,
                Entry {
                    owner: name(2),
                    version: 1,
                    free: 4,
                },
            ),
        ],
    }
    .to_vec()
    .unwrap();
    let now = c.now;
    c.peers[0].handle_message(now, name(2), &forged).unwrap();
    c.settle();
    assert_eq!(c.peers[0].ring(), &ring);
    assert!(c.peers[0].allocations().any(|(a, _)| a == held));
    assert_eq!(c.peers[0].stats().takeovers_refused, 2);
    assert_eq!(c.peers[0].stats().allocations_lost, 0);
    assert!(c.events.iter().any(|(i, e)| *i == 0
        && *e
            == IpamEvent::TakeoverRefused {
                from: name(2),
                entries: 2
            }));
    assert!(
        !c.events
            .iter()
            .any(|(_, e)| matches!(e, IpamEvent::Lost { .. }))
    );
    // Donations both ways still work and are not refused: peer 0 fills the range (it
    // needs peer 1's space), frees one, and peer 1 gets it back by a donation from 0.
    for i in 1..14 {
        c.alloc(0, &format!("c{i}"), None).unwrap();
        c.check_unique();
    }
    assert_eq!(c.alloc(0, "one-too-many", None), Err(IpamError::RangeFull));
    assert_eq!(c.peers[0].free(&cid("c3"), None), 1);
    c.settle();
    assert!(c.alloc(1, "again", None).is_ok());
    c.check_unique();
    assert!(c.peers[0].stats().donations_received > 0);
    assert!(c.peers[0].stats().donations_given > 0);
    assert_eq!(c.peers[0].stats().takeovers_refused, 2);
    assert_eq!(c.peers[1].stats().takeovers_refused, 0);
    assert_eq!(c.peers[0].ring(), c.peers[1].ring());
}

fn arb_entries() -> impl Strategy<Value = Vec<(u32, Entry)>> {
    let base = u32::from(Ipv4Addr::new(10, 32, 0, 0));
    proptest::collection::vec((0u32..64, 0u64..4, 1u64..6, 0u32..8), 0..12).prop_map(move |v| {
        v.into_iter()
            .map(|(t, o, ver, free)| {
                (
                    base + t * 16,
                    Entry {
                        owner: name(o),
                        version: ver,
                        free,
                    },
                )
            })
            .collect()
    })
}

/// `from` hands `[start, end)` to `to` in `ring` (every address counted free); returns
/// the entries that changed, as gossip carries them.
fn hand_over(
    ring: &mut Ring,
    from: PeerName,
    start: u32,
    end: u32,
    to: PeerName,
) -> Vec<(u32, Entry)> {
    let changed = ring
        .transfer(from, start, u64::from(end), to, |lo, hi| (hi - lo) as u32)
        .unwrap();
    changed
        .iter()
        .map(|t| (*t, ring.get(*t).unwrap()))
        .collect()
}

fn base_ring() -> Ring {
    Ring::seeded(
        cidr("10.32.0.0/22"),
        RingId {
            seeder: name(0),
            nonce: 1,
        },
        &[name(0), name(1)],
    )
}

fn merged(parts: &[&[(u32, Entry)]]) -> Ring {
    let mut r = base_ring();
    let id = r.id().unwrap();
    for p in parts {
        r.merge(name(9), id, p).unwrap();
    }
    r
}

fn join(mut a: Ring, b: &Ring) -> Ring {
    let id = a.id().unwrap();
    let entries: Vec<_> = b.entries().collect();
    a.merge(name(9), id, &entries).unwrap();
    a
}

proptest! {
    #[test]
    fn merge_is_commutative_idempotent_associative(a in arb_entries(), b in arb_entries(), c in arb_entries()) {
        prop_assert_eq!(merged(&[&a, &b]), merged(&[&b, &a]));
        prop_assert_eq!(merged(&[&a, &a]), merged(&[&a]));
        let (sa, sb, sc) = (merged(&[&a]), merged(&[&b]), merged(&[&c]));
        prop_assert_eq!(join(join(sa.clone(), &sb), &sc), join(sa.clone(), &join(sb.clone(), &sc)));
        prop_assert_eq!(join(sa.clone(), &sa), sa.clone());
        let j = join(sa, &sb);
        prop_assert!(j.check().is_ok());
    }

    #[test]
    fn merge_never_takes_an_address_we_own(a in arb_entries(), b in arb_entries()) {
        let mut r = base_ring();
        let id = r.id().unwrap();
        let (lo, hi) = (r.range().start(), r.range().end());
        let ours_before: Vec<u32> = (lo..(hi as u32)).filter(|x| r.owner_of(*x) == Some(name(0))).collect();
        r.merge(name(0), id, &a).unwrap();
        r.merge(name(0), id, &b).unwrap();
        for x in ours_before {
            prop_assert_eq!(r.owner_of(x), Some(name(0)));
        }
        prop_assert!(r.check().is_ok());
    }

    #[test]
    fn transfers_keep_a_partition(cuts in proptest::collection::vec((0u32..1024, 1u64..64), 1..20)) {
        let mut r = base_ring();
        let base = r.range().start();
        for (off, len) in cuts {
            let start = base + off;
            let Some(span) = r.span_of(start) else { continue };
            let end = (u64::from(start) + len).min(span.end);
            let owner = span.entry.owner;
            let to = if owner == name(0) { name(1) } else { name(0) };
            let before: u64 = r.shares().values().map(|s| s.0).sum();
            match r.transfer(owner, start, end, to, |lo, hi| (hi - lo) as u32) {
                Ok(_) => {
                    prop_assert_eq!(r.owner_of(start), Some(to));
                    prop_assert_eq!(r.shares().values().map(|s| s.0).sum::<u64>(), before);
                }
                Err(e) => prop_assert_eq!(e, RingError::Full),
            }
            prop_assert!(r.check().is_ok());
        }
    }
}
