//! Unit and property tests of the record set and its codec.

use super::wire::{self, DNS_MSG_LEN_MAX, DNS_RECORDS_PER_MSG_MAX};
use super::*;
use crate::time::{Duration, Instant};
use crate::wire::{WireError, with_byte};
use alloc::string::ToString;
use alloc::vec;
use alloc::vec::Vec;
use proptest::prelude::*;

fn peer(i: u64) -> PeerName {
    PeerName::from_u64(i)
}

fn n(s: &str) -> DnsName {
    DnsName::new(s).unwrap()
}

fn c(s: &str) -> Container {
    Container::new(s).unwrap()
}

fn a(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn gossip_iv() -> Duration {
    Duration::from_secs(30)
}

/// Every message `d` wants to send, in order.
fn drain(d: &mut Dns) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(o) = d.poll_output() {
        out.push(match o {
            Output::Neighbours { msg, .. } | Output::Random(msg) | Output::Neighbour(_, msg) => msg,
        });
    }
    out
}

fn deliver(to: &mut Dns, from: PeerName, msgs: &[Vec<u8>], now: Instant) {
    for m in msgs {
        to.handle_message(now, from, m, |_| true).unwrap();
    }
}

/// Adds `name` -> `addr` for `container` at time zero.
fn add(d: &mut Dns, name: &str, addr: &str, container: &str) -> Result<bool, DnsError> {
    d.add(Instant::ZERO, &n(name), a(addr), &c(container))
}

fn addrs(d: &Dns, name: &str) -> Vec<Ipv4Addr> {
    d.lookup(&n(name)).map(|k| k.addr).collect()
}

#[test]
fn names_are_checked_and_canonical() {
    assert_eq!(n("Web.Weave.Local.").as_str(), "web.weave.local");
    for bad in ["", ".", "a..b", "a b", "é.local", "a.local..", "x/y"] {
        assert_eq!(DnsName::new(bad), Err(DnsError::BadName), "{bad:?}");
    }
    assert!(DnsName::new(&"a".repeat(LABEL_LEN_MAX)).is_ok());
    assert!(DnsName::new(&"a".repeat(LABEL_LEN_MAX + 1)).is_err());
    let long = ["abcdefg"; 32].join(".");
    assert!(long.len() > NAME_LEN_MAX);
    assert!(DnsName::new(&long).is_err());
    assert!(DnsName::from_canonical(b"Web.local").is_err());
    assert!(n("web.weave.local").is_in(&n("weave.local")));
    assert!(n("weave.local").is_in(&n("weave.local")));
    assert!(!n("xweave.local").is_in(&n("weave.local")));
    assert!(!n("local").is_in(&n("weave.local")));
    assert!(Container::new("").is_err());
    assert!(Container::new("a b").is_err());
    assert!(Container::new(&"x".repeat(65)).is_err());
}

#[test]
fn add_lookup_remove_and_generation() {
    let mut d = Dns::new(peer(1), gossip_iv(), Instant::ZERO);
    let g0 = d.generation();
    assert_eq!(
        add(&mut d, "web.weave.local", "10.32.0.2", "ns-1"),
        Ok(true)
    );
    assert_eq!(
        add(&mut d, "WEB.weave.local.", "10.32.0.2", "ns-1"),
        Ok(false)
    );
    assert_eq!(
        add(&mut d, "web.weave.local", "10.32.0.3", "ns-2"),
        Ok(true)
    );
    assert_eq!(
        add(&mut d, "web.weave.local", "0.0.0.0", "ns-2"),
        Err(DnsError::BadAddress)
    );
    assert!(d.generation() > g0);
    assert_eq!(
        addrs(&d, "web.weave.local"),
        vec![a("10.32.0.2"), a("10.32.0.3")]
    );
    assert_eq!(d.reverse(a("10.32.0.3")).count(), 1);
    assert_eq!(drain(&mut d).len(), 2, "each change is news at once");
    let filter = Filter {
        container: Some(c("ns-1")),
        ..Filter::default()
    };
    assert_eq!(d.remove(Instant::ZERO, &filter), 1);
    assert_eq!(d.remove(Instant::ZERO, &filter), 0, "already gone");
    assert_eq!(addrs(&d, "web.weave.local"), vec![a("10.32.0.3")]);
    assert_eq!(d.status().tombstones, 1);
    // Re-adding after a removal wins over the tombstone.
    assert_eq!(
        add(&mut d, "web.weave.local", "10.32.0.2", "ns-1"),
        Ok(true)
    );
    assert_eq!(addrs(&d, "web.weave.local").len(), 2);
}

#[test]
fn gossip_replicates_adds_and_tombstones_and_floods_on() {
    let (mut x, mut y) = (
        Dns::new(peer(1), gossip_iv(), Instant::ZERO),
        Dns::new(peer(2), gossip_iv(), Instant::ZERO),
    );
    x.add(
        Instant::ZERO,
        &n("db.weave.local"),
        a("10.32.0.9"),
        &c("ns-9"),
    )
    .unwrap();
    let msgs = drain(&mut x);
    deliver(&mut y, peer(1), &msgs, Instant::ZERO);
    assert_eq!(addrs(&y, "db.weave.local"), vec![a("10.32.0.9")]);
    // y floods what was new to it, but not back to x.
    match y.poll_output() {
        Some(Output::Neighbours { except, .. }) => assert_eq!(except, Some(peer(1))),
        other => panic!("{other:?}"),
    }
    // Old news again changes nothing and is not flooded.
    deliver(&mut y, peer(1), &msgs, Instant::ZERO);
    assert!(y.poll_output().is_none());
    x.remove(Instant::ZERO, &Filter::default());
    deliver(&mut y, peer(1), &drain(&mut x), Instant::ZERO);
    assert!(addrs(&y, "db.weave.local").is_empty());
    // A stale live copy arriving after the tombstone does not resurrect it.
    deliver(&mut y, peer(3), &msgs, Instant::ZERO);
    assert!(addrs(&y, "db.weave.local").is_empty());
}

#[test]
fn tombstones_expire_and_owner_retombstones_stale_copies() {
    let t0 = Instant::ZERO;
    let mut x = Dns::new(peer(1), gossip_iv(), t0);
    x.add(t0, &n("a.weave.local"), a("10.32.0.1"), &c("ns-1"))
        .unwrap();
    let live = drain(&mut x);
    x.remove(t0, &Filter::default());
    drain(&mut x);
    let later = t0 + Duration::from_millis(TOMBSTONE_TTL_MS + DNS_TICK_MS);
    x.handle_timeout(later);
    assert_eq!(x.status().tombstones, 0, "expired");
    assert_eq!(x.stats().tombstones_expired, 1);
    // A peer that slept through the removal gossips the live record back: the owner
    // answers with a newer tombstone instead of taking it.
    deliver(&mut x, peer(2), &live, later);
    assert!(addrs(&x, "a.weave.local").is_empty());
    assert_eq!(x.stats().own_records_refreshed, 1);
    let answer = drain(&mut x);
    let recs = wire::parse(&answer[0]).unwrap();
    assert!(recs[0].tombstone && recs[0].version > 1);
}

#[test]
fn restarted_owner_readds_above_its_old_versions() {
    let t0 = Instant::ZERO;
    let mut old = Dns::new(peer(1), gossip_iv(), t0);
    let mut y = Dns::new(peer(2), gossip_iv(), t0);
    for _ in 0..5 {
        old.add(t0, &n("w.weave.local"), a("10.32.0.1"), &c("ns-1"))
            .unwrap();
        old.remove(t0, &Filter::default());
    }
    deliver(&mut y, peer(1), &drain(&mut old), t0);
    // Restart: version counter back to zero; the container is re-registered.
    let mut new = Dns::new(peer(1), gossip_iv(), t0);
    new.add(t0, &n("w.weave.local"), a("10.32.0.1"), &c("ns-1"))
        .unwrap();
    deliver(&mut y, peer(1), &drain(&mut new), t0);
    assert!(
        addrs(&y, "w.weave.local").is_empty(),
        "y's tombstone is newer"
    );
    // y's full state reaches the owner, which re-announces its record above it.
    y.on_neighbour(peer(1));
    deliver(&mut new, peer(2), &drain(&mut y), t0);
    deliver(&mut y, peer(1), &drain(&mut new), t0);
    assert_eq!(addrs(&y, "w.weave.local"), vec![a("10.32.0.1")]);
}

#[test]
fn removed_peer_records_go_and_stay_gone_until_it_returns() {
    let t0 = Instant::ZERO;
    let mut x = Dns::new(peer(1), gossip_iv(), t0);
    let mut y = Dns::new(peer(2), gossip_iv(), t0);
    x.add(t0, &n("a.weave.local"), a("10.32.0.1"), &c("ns-1"))
        .unwrap();
    let msgs = drain(&mut x);
    deliver(&mut y, peer(1), &msgs, t0);
    let g = y.generation();
    assert_eq!(y.peer_removed(t0, peer(1)), 1);
    assert!(y.generation() > g);
    assert!(addrs(&y, "a.weave.local").is_empty());
    // A third peer still gossips the old record: ignored while peer 1 is gone.
    for m in &msgs {
        y.handle_message(t0, peer(3), m, |p| p != peer(1)).unwrap();
    }
    assert!(addrs(&y, "a.weave.local").is_empty());
    assert_eq!(y.stats().records_of_removed_peers, 1);
    // Back in the topology: taken again.
    for m in &msgs {
        y.handle_message(t0, peer(3), m, |_| true).unwrap();
    }
    assert_eq!(addrs(&y, "a.weave.local"), vec![a("10.32.0.1")]);
}

#[test]
fn periodic_full_state_and_timeouts() {
    let t0 = Instant::ZERO;
    let mut x = Dns::new(peer(1), gossip_iv(), t0);
    assert!(x.poll_timeout() <= t0 + gossip_iv());
    x.handle_timeout(t0 + gossip_iv());
    assert!(x.poll_output().is_none(), "nothing to gossip");
    x.add(t0, &n("a.weave.local"), a("10.32.0.1"), &c("ns-1"))
        .unwrap();
    drain(&mut x);
    let t1 = t0 + gossip_iv() + gossip_iv();
    x.handle_timeout(t1);
    assert!(matches!(x.poll_output(), Some(Output::Random(_))));
    assert!(x.poll_timeout() > t1);
}

#[test]
fn codec_roundtrips_splits_and_rejects_garbage() {
    let rec = |name: &str, ip: &str, tomb: bool| Record {
        key: RecordKey {
            name: n(name),
            addr: a(ip),
            owner: peer(7),
            container: c("ns-1"),
        },
        version: 3,
        tombstone: tomb,
    };
    let r1 = rec("a.weave.local", "10.32.0.1", false);
    let r2 = rec("b.weave.local", "10.32.0.2", true);
    let bytes = wire::to_vec(&[&r1, &r2]).unwrap();
    assert_eq!(wire::parse(&bytes).unwrap(), vec![r1.clone(), r2.clone()]);
    assert_eq!(
        wire::to_vec(&[&r2, &r1]),
        Err(WireError::Inconsistent),
        "order"
    );
    assert_eq!(
        wire::to_vec(&[&r1, &r1]),
        Err(WireError::Inconsistent),
        "dup"
    );
    // Every truncation is refused, and so is a trailing byte.
    for cut in 0..bytes.len() {
        assert!(wire::parse(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    let mut long = bytes.clone();
    long.push(0);
    assert_eq!(wire::parse(&long), Err(WireError::Inconsistent));
    let bad = |at, value| wire::parse(&with_byte(&bytes, at, value));
    assert_eq!(bad(0, 9), Err(WireError::UnsupportedVersion));
    assert_eq!(bad(1, 2), Err(WireError::UnknownType));
    // The flags of the first record.
    assert_eq!(bad(4 + 14, 2), Err(WireError::Inconsistent));
    let at = bytes.len() - "b.weave.local".len();
    assert_eq!(bad(at, b'B'), Err(WireError::Inconsistent), "uppercase");
    // Many records split into messages within the limits.
    let many: Vec<Record> = (0..3000u32)
        .map(|i| rec(&alloc::format!("n{i:05}.weave.local"), "10.32.0.1", false))
        .collect();
    let msgs = wire::encode_all(&many);
    assert!(msgs.len() >= 3);
    let mut back = Vec::new();
    for m in &msgs {
        assert!(m.len() <= DNS_MSG_LEN_MAX);
        let recs = wire::parse(m).unwrap();
        assert!(recs.len() <= DNS_RECORDS_PER_MSG_MAX);
        back.extend(recs);
    }
    assert_eq!(back, many);
}

#[test]
fn errors_display_one_line() {
    for e in [
        DnsError::BadName,
        DnsError::BadContainer,
        DnsError::Full,
        DnsError::BadAddress,
    ] {
        let s = e.to_string();
        assert!(!s.is_empty() && !s.contains('\n'));
    }
}

fn arb_record() -> impl Strategy<Value = Record> {
    (0u8..4, 0u8..3, 1u64..4, 0u8..2, 0u64..6, any::<bool>()).prop_map(
        |(name, ip, owner, cont, version, tombstone)| Record {
            key: RecordKey {
                name: n(&alloc::format!("n{name}.weave.local")),
                addr: Ipv4Addr::new(10, 32, 0, ip + 1),
                owner: peer(owner),
                container: c(&alloc::format!("ns-{cont}")),
            },
            version,
            tombstone,
        },
    )
}

/// A replica owned by nobody in the records (peer 99), fed `parts` in order.
fn merged(parts: &[&[Record]]) -> Vec<Record> {
    let mut d = Dns::new(peer(99), gossip_iv(), Instant::ZERO);
    for part in parts {
        let mut recs: Vec<Record> = part.to_vec();
        // One message carries one state per key; send each record on its own.
        for r in recs.drain(..) {
            let m = wire::to_vec(&[&r]).unwrap();
            d.handle_message(Instant::ZERO, peer(50), &m, |_| true)
                .unwrap();
        }
    }
    d.records().collect()
}

proptest! {
    #[test]
    fn merge_is_commutative_idempotent_associative(
        x in proptest::collection::vec(arb_record(), 0..12),
        y in proptest::collection::vec(arb_record(), 0..12),
        z in proptest::collection::vec(arb_record(), 0..12),
    ) {
        let xy = merged(&[&x, &y]);
        prop_assert_eq!(&xy, &merged(&[&y, &x]));
        prop_assert_eq!(&merged(&[&x, &x]), &merged(&[&x]));
        prop_assert_eq!(merged(&[&xy, &z]), merged(&[&x, &merged(&[&y, &z])]));
    }

    #[test]
    fn parse_never_panics_and_valid_reemits(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(recs) = wire::parse(&bytes) {
            let refs: Vec<&Record> = recs.iter().collect();
            prop_assert_eq!(wire::to_vec(&refs).unwrap(), bytes);
        }
    }
}
