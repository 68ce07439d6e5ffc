//! Router-level tests of topology anti-entropy ([`crate::anti_entropy`]): at rest the
//! periodic round is one digest per chosen neighbour, a neighbour that drifted apart is
//! repaired by the digest exchange alone, a peer that never spoke sync still gets the
//! full state, and bad or unasked-for sync messages are refused.

use super::test_net::{Net, addr};
use super::*;
use crate::peer::PeerUid;
use crate::wire::topology_sync::{DIGEST_LEN, Summary, SyncMsg};
use alloc::vec;

impl Net {
    /// `n` routers in a line, each dialling the one before, settled for 3 s.
    fn line(n: usize) -> Self {
        let mut net = Self::new(n);
        for i in 1..n {
            net.routers[i].handle_command(Instant::ZERO, Command::Connect(addr(i - 1)));
        }
        net.run(Duration::from_secs(3));
        net
    }

    fn agree(&self) -> bool {
        let d = self.routers[0].topology().sync_digest();
        self.routers.iter().all(|r| r.topology().sync_digest() == d)
    }
}

/// An entry about a peer nobody is connected to (it stays until peer GC, 60 s).
fn stranger(n: u64, version: u64) -> PeerEntry {
    PeerEntry {
        name: PeerName::from_u64(0x1000 + n),
        uid: PeerUid(n),
        version,
        nickname: String::from("stranger"),
        conns: Vec::new(),
    }
}

#[test]
fn at_rest_a_periodic_round_is_one_digest_per_neighbour_and_full_state_for_old_peers() {
    let mut net = Net::line(3);
    assert!(net.agree());
    assert!(net.routers[1].topology().len() == 3);
    let now = net.now;
    let before = net.routers[1].stats();
    let ends_before: Vec<RouterStats> = [0, 2].iter().map(|&i| net.routers[i].stats()).collect();
    net.routers[1].periodic_gossip(now);
    let after = net.routers[1].stats();
    // Two neighbours, both chosen (fanout of 3 peers is 2): one digest each.
    assert_eq!(after.gossip_msgs_sent - before.gossip_msgs_sent, 2);
    assert_eq!(
        after.gossip_bytes_sent - before.gossip_bytes_sent,
        2 * DIGEST_LEN as u64
    );
    while net.pump() {}
    // Each end got its digest, it matched, and nobody answered.
    for (k, &i) in [0, 2].iter().enumerate() {
        let s = net.routers[i].stats();
        assert_eq!(
            s.gossip_msgs_received,
            ends_before[k].gossip_msgs_received + 1
        );
        assert_eq!(s.gossip_msgs_sent, ends_before[k].gossip_msgs_sent);
    }
    assert_eq!(
        net.routers[1].stats().gossip_msgs_received,
        after.gossip_msgs_received
    );
    // A neighbour that never spoke sync (a peer built before it) gets the whole topology.
    let c = net.conn(1, 0);
    net.routers[1].conns.get_mut(&c).unwrap().sync.speaks = false;
    let c2 = net.conn(1, 2);
    net.routers[1].conns.get_mut(&c2).unwrap().sync.speaks = false;
    let whole: usize = gossip::encode_all(net.routers[1].topology())
        .iter()
        .map(Vec::len)
        .sum();
    net.routers[1].periodic_gossip(now);
    net.routers[1].maybe_flush(now);
    let full = net.routers[1].stats();
    assert_eq!(
        full.gossip_bytes_sent - after.gossip_bytes_sent,
        2 * whole as u64
    );
    assert!(whole > 4 * DIGEST_LEN);
}

#[test]
fn neighbours_that_drifted_apart_are_repaired_by_the_digest_exchange() {
    let mut net = Net::line(3);
    // Router 0 holds a stranger nobody else knows, router 2 a newer version of another
    // one than router 0 holds; put straight into their tables, so no news is flooded:
    // only anti-entropy can spread them.
    net.routers[0]
        .topology
        .merge(vec![stranger(1, 5), stranger(2, 5)]);
    net.routers[2].topology.merge(vec![stranger(2, 9)]);
    assert!(!net.agree());
    let t0 = net.now;
    // First rounds are within one gossip interval of the start, then every ~30 s: two
    // intervals always hold a round of each router.
    while !net.agree() && net.now < t0 + Duration::from_secs(55) {
        net.run(Duration::from_secs(1));
    }
    assert!(net.agree(), "not repaired by {}", net.now);
    for r in &net.routers {
        assert_eq!(r.topology().get(stranger(1, 5).name), Some(&stranger(1, 5)));
        assert_eq!(r.topology().get(stranger(2, 9).name), Some(&stranger(2, 9)));
    }
}

#[test]
fn bad_sync_costs_the_connection_and_unasked_summaries_are_ignored() {
    let mut net = Net::line(2);
    let via = net.conn(0, 1);
    let now = net.now;
    // A summary nobody asked for (router 0 sent no digest on this connection yet, or
    // its window closed): ignored, nothing sent back.
    net.routers[0]
        .conns
        .get_mut(&via)
        .unwrap()
        .sync
        .summaries_until = None;
    let s = SyncMsg::Summary(Summary {
        lo: PeerName::from_u64(0),
        hi: PeerName::from_u64(PeerName::MASK),
        entries: Vec::new(),
    });
    let before = net.routers[0].stats();
    net.routers[0].on_topology_sync(now, via, &s.to_vec().unwrap());
    let after = net.routers[0].stats();
    assert_eq!(after.sync_ignored, before.sync_ignored + 1);
    assert_eq!(after.gossip_msgs_sent, before.gossip_msgs_sent);
    // The same summary inside the window: router 0 sends everything (router 1 "lacks" it).
    net.routers[0]
        .conns
        .get_mut(&via)
        .unwrap()
        .sync
        .summaries_until = Some(now + Duration::from_secs(1));
    net.routers[0].on_topology_sync(now, via, &s.to_vec().unwrap());
    assert!(net.routers[0].stats().gossip_msgs_sent > after.gossip_msgs_sent);
    // Garbage on the channel costs the connection.
    net.routers[0].on_topology_sync(now, via, &[2, 0xff]);
    assert_eq!(net.routers[0].stats().gossip_malformed, 1);
    assert_eq!(net.routers[0].connection_to(net.routers[1].name()), None);
}
