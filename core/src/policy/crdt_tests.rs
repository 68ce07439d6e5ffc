//! Tests of the policy CRDT: batch apply, last-writer-wins policies and namespaces, owned
//! pods, dead peers, restarts, persistence, limits, and a property test that replicas
//! converge whatever the order of delivery.

use super::table::{
    LWW_TOMBSTONE_TTL_MS, Output, POD_TOMBSTONE_TTL_MS, POLICIES_MAX, POLICY_TICK_MS, PolicyTable,
};
use super::wire_tests::{deny, labels, pod, rich_policy};
use super::*;
use crate::peer::PeerName;
use crate::time::{Duration, Instant};
use alloc::string::ToString;
use alloc::vec;
use alloc::vec::Vec;
use proptest::prelude::*;

fn peer(i: u64) -> PeerName {
    PeerName::from_u64(i)
}

fn table(i: u64) -> PolicyTable {
    PolicyTable::new(peer(i), Duration::from_secs(30), Instant::ZERO)
}

const T0: Instant = Instant::ZERO;

/// Every message `t` wants to send, in order.
fn drain(t: &mut PolicyTable) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(o) = t.poll_output() {
        out.push(match o {
            Output::Neighbours { msg, .. } | Output::Random(msg) | Output::Neighbour(_, msg) => msg,
        });
    }
    out
}

fn deliver(to: &mut PolicyTable, from: PeerName, msgs: &[Vec<u8>]) {
    for m in msgs {
        to.handle_message(T0, from, m, |_| true).unwrap();
    }
}

fn pkey(ns: &str, name: &str) -> PolicyKey {
    PolicyKey {
        namespace: ns.to_string(),
        name: name.to_string(),
    }
}

fn names(t: &PolicyTable) -> Vec<PolicyKey> {
    t.world(|_| true)
        .policies
        .into_iter()
        .map(|p| p.key)
        .collect()
}

#[test]
fn apply_checks_everything_first_and_leaves_unchanged_objects_alone() {
    let mut t = table(1);
    let mut bad = deny("default", "b", "x");
    bad.key.name = "Not-A-Name".to_string();
    let ns = vec![("prod".to_string(), labels(&[("team", "db")]))];
    let r = t.apply(T0, vec![deny("default", "a", "x"), bad], ns.clone());
    assert_eq!(r, Err(PolicyError::BadName));
    assert_eq!(t.generation(), 0, "nothing half-applied");
    assert!(drain(&mut t).is_empty());
    assert_eq!(t.world(|_| true), World::default());
    let batch = vec![rich_policy("default", "a"), deny("prod", "db", "db")];
    let st = t.apply(T0, batch.clone(), ns.clone()).unwrap();
    assert_eq!((st.policies_changed, st.namespaces_changed), (2, 1));
    let w = t.world(|_| true);
    assert_eq!(w.policies, batch, "sorted by key");
    assert_eq!(w.namespaces.get("prod"), Some(&labels(&[("team", "db")])));
    assert!(!drain(&mut t).is_empty(), "gossiped at once");
    // The same batch again: no new stamps, no news, same generation.
    let (g, before) = (t.generation(), t.status().policies);
    let st = t.apply(T0, batch, ns).unwrap();
    assert_eq!((st.policies_unchanged, st.namespaces_unchanged), (2, 1));
    assert_eq!((t.generation(), t.status().policies), (g, before));
    assert!(drain(&mut t).is_empty());
    // A later object of the same key in one batch wins.
    let v2 = deny("default", "a", "y");
    t.apply(T0, vec![deny("default", "a", "z"), v2.clone()], Vec::new())
        .unwrap();
    assert!(t.world(|_| true).policies.contains(&v2));
    assert_eq!(t.delete(T0, &pkey("default", "a")), Ok(true));
    assert_eq!(t.delete(T0, &pkey("default", "a")), Ok(false));
    assert_eq!(t.delete_namespace(T0, "prod"), Ok(true));
    assert_eq!(names(&t), vec![pkey("prod", "db")]);
    assert!(t.world(|_| true).namespaces.is_empty());
    assert_eq!(t.status().policy_tombstones, 1);
}

#[test]
fn delete_beats_the_older_apply_everywhere() {
    let (mut a, mut b, mut c) = (table(1), table(2), table(3));
    a.apply(T0, vec![deny("default", "p", "x")], Vec::new())
        .unwrap();
    let applied = drain(&mut a);
    deliver(&mut b, peer(1), &applied);
    assert_eq!(names(&b), vec![pkey("default", "p")]);
    // b deletes what a applied; its stamp is above a's.
    assert_eq!(b.delete(T0, &pkey("default", "p")), Ok(true));
    let deleted = drain(&mut b);
    deliver(&mut a, peer(2), &deleted);
    assert!(names(&a).is_empty());
    // c hears the delete first, then the (older) apply: stays deleted.
    deliver(&mut c, peer(2), &deleted);
    deliver(&mut c, peer(1), &applied);
    assert!(names(&c).is_empty());
    // Old news changes nothing and is not flooded on.
    drain(&mut c);
    deliver(&mut c, peer(1), &applied);
    assert!(c.poll_output().is_none());
}

#[test]
fn concurrent_applies_resolve_to_the_higher_stamp_on_every_replica() {
    let (mut a, mut b) = (table(1), table(2));
    let pa = deny("default", "p", "from-a");
    let pb = deny("default", "p", "from-b");
    a.apply(T0, vec![pa], Vec::new()).unwrap();
    b.apply(T0, vec![pb.clone()], Vec::new()).unwrap();
    let (ma, mb) = (drain(&mut a), drain(&mut b));
    deliver(&mut a, peer(2), &mb);
    deliver(&mut b, peer(1), &ma);
    // Same Lamport counter (1): the greater writer, b, wins on both.
    assert_eq!(a.world(|_| true).policies, vec![pb.clone()]);
    assert_eq!(b.world(|_| true).policies, vec![pb]);
    // a has now seen counter 1, so its next write (2) beats b's.
    let pa2 = deny("default", "p", "a-again");
    a.apply(T0, vec![pa2.clone()], Vec::new()).unwrap();
    assert_eq!(a.status().policies[0].1.lamport, 2);
    deliver(&mut b, peer(1), &drain(&mut a));
    assert_eq!(b.world(|_| true).policies, vec![pa2]);
}

#[test]
fn pods_are_owned_and_a_dead_peers_pods_leave_the_world() {
    let (mut a, mut b) = (table(1), table(2));
    a.apply(T0, vec![deny("default", "p", "web")], Vec::new())
        .unwrap();
    assert_eq!(
        a.set_pod(T0, "c1", Some(pod(2, "default", "web"))),
        Ok(true)
    );
    assert_eq!(
        a.set_pod(T0, "c1", Some(pod(2, "default", "web"))),
        Ok(false)
    );
    assert_eq!(a.set_pod(T0, "", None), Err(PolicyError::BadPodId));
    assert_eq!(a.set_pod(T0, "gone", None), Ok(false));
    let mut bad = pod(3, "default", "web");
    bad.namespace = "Bad".to_string();
    assert_eq!(a.set_pod(T0, "c2", Some(bad)), Err(PolicyError::BadName));
    let msgs = drain(&mut a);
    deliver(&mut b, peer(1), &msgs);
    assert_eq!(b.world(|_| true).pods, vec![pod(2, "default", "web")]);
    // Unreachable: out of the world at once, still held.
    assert!(b.world(|p| p != peer(1)).pods.is_empty());
    assert_eq!(b.status().pods, 1);
    // Removed by the peer GC: dropped; a third peer's old copy is ignored meanwhile.
    let g = b.generation();
    assert_eq!(b.peer_removed(T0, peer(1)), 1);
    assert!(b.generation() > g);
    for m in &msgs {
        b.handle_message(T0, peer(3), m, |p| p != peer(1)).unwrap();
    }
    assert!(b.world(|_| true).pods.is_empty());
    assert_eq!(b.stats().pods_of_removed_peers, 1);
    // Its policy outlives it.
    assert_eq!(names(&b), vec![pkey("default", "p")]);
    // Back in the topology: taken again.
    deliver(&mut b, peer(3), &msgs);
    assert_eq!(b.world(|_| true).pods.len(), 1);
    // Detached: a tombstone that reaches b too.
    assert_eq!(a.set_pod(T0, "c1", None), Ok(true));
    deliver(&mut b, peer(1), &drain(&mut a));
    assert!(b.world(|_| true).pods.is_empty());
}

#[test]
fn restarted_owner_takes_its_pods_back_above_stale_copies() {
    let mut old = table(1);
    let mut b = table(2);
    for i in 0..5 {
        old.set_pod(T0, "c1", Some(pod(i + 1, "default", "web")))
            .unwrap();
    }
    old.set_pod(T0, "c2", Some(pod(9, "default", "db")))
        .unwrap();
    deliver(&mut b, peer(1), &drain(&mut old));
    // Restart without a state file: counters back at zero; only c1 is re-attached.
    let mut new = table(1);
    new.set_pod(T0, "c1", Some(pod(7, "default", "web")))
        .unwrap();
    deliver(&mut b, peer(1), &drain(&mut new));
    assert!(
        b.world(|_| true).pods.contains(&pod(5, "default", "web")),
        "b's copy is newer"
    );
    // b's full state reaches the owner, which re-announces c1 and detaches c2 above it.
    drain(&mut b);
    b.on_neighbour(peer(1));
    deliver(&mut new, peer(2), &drain(&mut b));
    assert_eq!(new.stats().own_pods_refreshed, 2);
    deliver(&mut b, peer(1), &drain(&mut new));
    assert_eq!(b.world(|_| true).pods, vec![pod(7, "default", "web")]);
    assert_eq!(b.world(|_| true), new.world(|_| true));
}

#[test]
fn export_import_restores_policies_tombstones_and_clocks() {
    let mut a = table(1);
    a.apply(
        T0,
        vec![rich_policy("default", "a"), deny("default", "b", "x")],
        vec![("prod".to_string(), labels(&[("team", "db")]))],
    )
    .unwrap();
    a.delete(T0, &pkey("default", "b")).unwrap();
    for i in 0..3 {
        a.set_pod(T0, "c1", Some(pod(i + 1, "default", "web")))
            .unwrap();
    }
    let file = a.export_shared();
    let mut back = table(1);
    assert!(back.import_shared(T0, &file[..file.len() - 1]).is_err());
    assert_eq!(back.generation(), 0, "all or nothing");
    // Two policies (one a tombstone) and a namespace.
    assert_eq!(back.import_shared(T0, &file), Ok(3));
    assert_eq!(
        back.policy_entries().collect::<Vec<_>>(),
        a.policy_entries().collect::<Vec<_>>()
    );
    assert_eq!(
        back.world(|_| true).namespaces,
        a.world(|_| true).namespaces
    );
    assert!(back.world(|_| true).pods.is_empty(), "pods are not saved");
    assert_eq!(back.import_shared(T0, &file), Ok(0), "idempotent");
    // Clocks carry on: a new write stamps above the old ones, a pod above version 3.
    back.apply(T0, vec![deny("default", "c", "y")], Vec::new())
        .unwrap();
    assert_eq!(back.status().lamport, a.status().lamport + 1);
    back.set_pod(T0, "c1", Some(pod(9, "default", "web")))
        .unwrap();
    assert_eq!(back.pod_entries().next().unwrap().version, 4);
}

#[test]
fn tombstones_expire_and_full_maps_refuse_or_make_room() {
    let mut t = table(1);
    t.apply(T0, vec![deny("default", "a", "x")], Vec::new())
        .unwrap();
    t.delete(T0, &pkey("default", "a")).unwrap();
    t.set_pod(T0, "c1", Some(pod(1, "default", "x"))).unwrap();
    t.set_pod(T0, "c1", None).unwrap();
    let pod_late = T0 + Duration::from_millis(POD_TOMBSTONE_TTL_MS + POLICY_TICK_MS);
    t.handle_timeout(pod_late);
    assert_eq!(
        (t.status().pod_tombstones, t.status().policy_tombstones),
        (0, 1)
    );
    t.handle_timeout(T0 + Duration::from_millis(LWW_TOMBSTONE_TTL_MS + POLICY_TICK_MS));
    assert_eq!(t.status().policy_tombstones, 0);
    assert_eq!(t.stats().tombstones_expired, 2);
    // Fill the policy map.
    let all: Vec<Policy> = (0..POLICIES_MAX)
        .map(|i| deny("default", &alloc::format!("p{i}"), "x"))
        .collect();
    t.apply(T0, all, Vec::new()).unwrap();
    let one_more = vec![deny("default", "extra", "x")];
    assert_eq!(
        t.apply(T0, one_more.clone(), Vec::new()),
        Err(PolicyError::TooMany)
    );
    // A deletion leaves a tombstone that the next apply may take the place of.
    t.delete(T0, &pkey("default", "p0")).unwrap();
    assert!(t.apply(T0, one_more, Vec::new()).is_ok());
    assert_eq!(t.stats().tombstones_evicted, 1);
    // Gossip of a new policy into a full map is dropped and counted.
    let mut other = table(2);
    other
        .apply(T0, vec![deny("default", "zzz", "x")], Vec::new())
        .unwrap();
    deliver(&mut t, peer(2), &drain(&mut other));
    assert_eq!(t.stats().drops_full, 1);
    assert_eq!(t.status().policies.len(), POLICIES_MAX);
}

#[test]
fn periodic_full_state_and_garbage() {
    let mut t = table(1);
    t.handle_timeout(T0 + Duration::from_secs(30));
    assert!(t.poll_output().is_none(), "nothing to gossip");
    t.apply(T0, vec![deny("default", "a", "x")], Vec::new())
        .unwrap();
    drain(&mut t);
    let t1 = T0 + Duration::from_secs(60);
    t.handle_timeout(t1);
    assert!(matches!(t.poll_output(), Some(Output::Random(_))));
    assert!(t.poll_timeout() > t1);
    assert!(t.handle_message(T0, peer(2), &[1, 9], |_| true).is_err());
    assert_eq!(t.stats().malformed, 1);
}

/// One step of the property test.
#[derive(Clone, Debug)]
enum Op {
    /// Replica applies policy `key` with variant `v` (and namespace `key` labels `v`).
    Apply { r: usize, key: u8, v: u8 },
    /// Replica deletes policy `key`.
    Delete { r: usize, key: u8 },
    /// Replica sets (`Some`) or removes its pod `id`.
    Pod { r: usize, id: u8, v: Option<u8> },
    /// Message number `m` (modulo those sent so far) reaches replica `to`.
    Deliver { m: usize, to: usize },
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0usize..3, 0u8..4, 0u8..3).prop_map(|(r, key, v)| Op::Apply { r, key, v }),
        (0usize..3, 0u8..4).prop_map(|(r, key)| Op::Delete { r, key }),
        (0usize..3, 0u8..3, proptest::option::of(0u8..3)).prop_map(|(r, id, v)| Op::Pod {
            r,
            id,
            v
        }),
        (any::<usize>(), 0usize..3).prop_map(|(m, to)| Op::Deliver { m, to }),
        (any::<usize>(), 0usize..3).prop_map(|(m, to)| Op::Deliver { m, to }),
    ]
}

fn run(ops: &[Op]) -> Vec<PolicyTable> {
    let mut reps: Vec<PolicyTable> = (0..3).map(|i| table(i + 1)).collect();
    let mut sent: Vec<(usize, Vec<u8>)> = Vec::new();
    for op in ops {
        match *op {
            Op::Apply { r, key, v } => {
                let name = alloc::format!("p{key}");
                let ns = vec![(alloc::format!("n{key}"), labels(&[("v", &v.to_string())]))];
                let p = deny("default", &name, &alloc::format!("a{v}"));
                reps[r].apply(T0, vec![p], ns).unwrap();
            }
            Op::Delete { r, key } => {
                reps[r]
                    .delete(T0, &pkey("default", &alloc::format!("p{key}")))
                    .unwrap();
            }
            Op::Pod { r, id, v } => {
                let p = v.map(|v| pod(v + 1, "default", &alloc::format!("a{v}")));
                reps[r].set_pod(T0, &alloc::format!("c{id}"), p).unwrap();
            }
            Op::Deliver { m, to } if !sent.is_empty() => {
                let (from, msg) = &sent[m % sent.len()];
                if *from != to {
                    let from = peer(*from as u64 + 1);
                    reps[to].handle_message(T0, from, msg, |_| true).unwrap();
                }
            }
            Op::Deliver { .. } => {}
        }
        for (i, r) in reps.iter_mut().enumerate() {
            sent.extend(drain(r).into_iter().map(|m| (i, m)));
        }
    }
    // Anti-entropy: everyone's full state reaches everyone, twice.
    for _ in 0..2 {
        for i in 0..3 {
            reps[i].on_neighbour(peer(0));
            let state = drain(&mut reps[i]);
            for (j, r) in reps.iter_mut().enumerate() {
                if j != i {
                    deliver(r, peer(i as u64 + 1), &state);
                    drain(r);
                }
            }
        }
    }
    reps
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    #[test]
    fn replicas_converge_whatever_the_delivery_order(
        ops in proptest::collection::vec(arb_op(), 0..40),
    ) {
        let reps = run(&ops);
        let state = |t: &PolicyTable| {
            (
                t.policy_entries().collect::<Vec<_>>(),
                t.namespace_entries().collect::<Vec<_>>(),
                t.pod_entries().collect::<Vec<_>>(),
            )
        };
        for r in &reps[1..] {
            prop_assert_eq!(state(r), state(&reps[0]));
            prop_assert_eq!(r.world(|_| true), reps[0].world(|_| true));
        }
        // Merging is idempotent: a converged replica's full state changes nothing.
        let mut reps = reps;
        reps[0].on_neighbour(peer(0));
        for m in &drain(&mut reps[0]) {
            prop_assert_eq!(reps[1].handle_message(T0, peer(1), m, |_| true), Ok(0));
        }
    }
}

#[test]
fn a_full_map_evicts_its_oldest_tombstones_in_batches() {
    let mut t = table(1);
    let all: Vec<Policy> = (0..POLICIES_MAX)
        .map(|i| deny("default", &alloc::format!("p{i:04}"), "x"))
        .collect();
    t.apply(T0, all, Vec::new()).unwrap();
    // 40 deletions, the first 20 a minute before the others.
    for i in 0..40 {
        let at = T0 + Duration::from_secs(if i < 20 { 0 } else { 60 });
        t.delete(at, &pkey("default", &alloc::format!("p{i:04}")))
            .unwrap();
    }
    let now = T0 + Duration::from_secs(120);
    t.apply(now, vec![deny("default", "new0", "x")], Vec::new())
        .unwrap();
    // One batch of POLICIES_MAX / 64 = 16, all from the older deletions.
    assert_eq!(t.stats().tombstones_evicted, 16);
    let kept: Vec<PolicyKey> = t
        .policy_entries()
        .filter(|e| e.policy.is_none())
        .map(|e| e.key)
        .collect();
    assert_eq!(kept.len(), 24);
    assert!(kept.iter().filter(|k| k.name.as_str() < "p0020").count() == 4);
    // The next 15 new policies take the room already made.
    let more: Vec<Policy> = (1..16)
        .map(|i| deny("default", &alloc::format!("new{i}"), "x"))
        .collect();
    t.apply(now, more, Vec::new()).unwrap();
    assert_eq!(t.stats().tombstones_evicted, 16);
    assert_eq!(t.status().policy_tombstones, 24);
}

#[test]
fn a_writer_restarted_without_its_state_file_still_wins_with_a_later_write() {
    const ORIGIN_MS: u64 = 1_764_000_000_000;
    let clocked = |i| table(i).with_wall_clock_origin_ms(ORIGIN_MS);
    let (mut a, mut b) = (clocked(1), clocked(2));
    a.apply(T0, vec![deny("default", "p", "v1")], Vec::new())
        .unwrap();
    // Many causally later writes push the counter past the wall clock a little.
    for i in 0..5 {
        let p = deny("default", "p", &alloc::format!("v1-{i}"));
        a.apply(T0, vec![p], Vec::new()).unwrap();
    }
    assert_eq!(a.status().lamport, ORIGIN_MS + 5);
    deliver(&mut b, peer(1), &drain(&mut a));
    // a restarts a minute later with nothing: its first write is stamped by the clock.
    let later = T0 + Duration::from_secs(60);
    let mut a2 = clocked(1);
    let v2 = deny("default", "p", "v2");
    a2.apply(later, vec![v2.clone()], Vec::new()).unwrap();
    deliver(&mut b, peer(1), &drain(&mut a2));
    assert_eq!(b.world(|_| true).policies, vec![v2.clone()]);
    // And b's full state does not take it back from a2.
    drain(&mut b);
    b.on_neighbour(peer(1));
    deliver(&mut a2, peer(2), &drain(&mut b));
    assert_eq!(a2.world(|_| true).policies, vec![v2]);
}
