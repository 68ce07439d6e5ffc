//! Discovered targets: a peer that gossips thousands of addresses nobody answers on must
//! not fill the target table (so `weft connect` still works), and those targets go away
//! once they have failed long enough. The gossiping peer is a bare `Connection` driven by
//! hand; every dial router 0 makes fails.

mod common;

use std::net::SocketAddr;
use weft_core::conn::{ConnId, ConnSettings, ConnState, Connection};
use weft_core::crypto::ChaChaKeyRng;
use weft_core::gossip;
use weft_core::maker::{DISCOVERED_TARGET_TTL_MS, DISCOVERED_TARGETS_LEN_MAX, TargetKind};
use weft_core::peer::{PeerName, PeerUid};
use weft_core::router::{Command, Config, Destination, Event, Router, TRANSMIT_LEN_MIN};
use weft_core::time::{Duration, Instant};
use weft_core::topology::{ConnInfo, PEER_CONNS_MAX, PeerEntry};
use weft_core::wire::frame::CHANNEL_TOPOLOGY;

const FAKE_ENTRIES: usize = 10;

fn flood_addr(i: usize) -> SocketAddr {
    SocketAddr::from(([172, 16, (i >> 8) as u8, i as u8], 6783))
}

/// Entries for peers nobody can reach, announcing `FAKE_ENTRIES * PEER_CONNS_MAX` addresses.
fn fake_entries() -> Vec<PeerEntry> {
    (0..FAKE_ENTRIES)
        .map(|e| PeerEntry {
            name: PeerName::from_u64(0x9000 + e as u64),
            uid: PeerUid(e as u64 + 1),
            version: 1,
            nickname: String::new(),
            conns: (0..PEER_CONNS_MAX)
                .map(|c| {
                    let i = e * PEER_CONNS_MAX + c;
                    ConnInfo {
                        peer: PeerName::from_u64(0x10_0000 + i as u64),
                        addr: Some(flood_addr(i)),
                        established: true,
                        outbound: true,
                    }
                })
                .collect(),
        })
        .collect()
}

/// What happens to the dials router 0 starts while being pumped.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dials {
    /// Answered at once with a failure.
    Fail,
    /// Left hanging (an address that never answers): each keeps its connection slot until
    /// it times out.
    Hang,
}

/// Moves bytes between router `r` (its stream `id`) and the hand-driven `fake` until
/// neither has anything to say; returns the addresses `r` dialed on the way.
fn pump_with(
    r: &mut Router,
    id: ConnId,
    fake: &mut Connection,
    now: Instant,
    dials: Dials,
) -> Vec<SocketAddr> {
    let mut dialed = Vec::new();
    let mut buf = vec![0u8; TRANSMIT_LEN_MIN];
    loop {
        let mut moved = false;
        while let Some(n) = fake.poll_transmit(&mut buf) {
            moved = true;
            r.handle_stream_bytes(now, id, &buf[..n]);
        }
        while let Some(t) = r.poll_transmit(now, &mut buf) {
            moved = true;
            if t.destination == Destination::Stream(id) {
                let _ = fake.handle_bytes(now, &buf[..t.len]);
            }
        }
        while fake.poll_output().is_some() {}
        while let Some(ev) = r.poll_event() {
            if let Event::OpenStream { conn, addr } = ev {
                moved = true;
                dialed.push(addr);
                if dials == Dials::Fail {
                    r.handle_command(now, Command::StreamFailed(conn));
                }
            }
        }
        if !moved {
            return dialed;
        }
    }
}

/// [`pump_with`], every dial failing at once.
fn pump(r: &mut Router, id: ConnId, fake: &mut Connection, now: Instant) -> Vec<SocketAddr> {
    pump_with(r, id, fake, now, Dials::Fail)
}

/// [`pump_with`], every dial left hanging.
fn pump_hanging(
    r: &mut Router,
    id: ConnId,
    fake: &mut Connection,
    now: Instant,
) -> Vec<SocketAddr> {
    pump_with(r, id, fake, now, Dials::Hang)
}

/// A router built from `config` with the hand-driven fake peer connected to it (at time
/// zero, the dials on the way going as `dials` says).
fn with_fake_peer(config: Config, dials: Dials) -> (Router, Connection, ConnId) {
    let now = Instant::ZERO;
    // Built by the shared harness, so there is one place that knows `Router::new`.
    let mut r = common::Net::from_configs([config], 3).routers.remove(0);
    let fake_settings = ConnSettings::new(PeerName::from_u64(0x2), PeerUid(2));
    let mut rng = ChaChaKeyRng::for_simulation(9);
    let router_addr = SocketAddr::from(([10, 0, 0, 1], 6783));
    let mut fake = Connection::new(ConnId(1), true, router_addr, &fake_settings, &mut rng, now);
    let id = r.accept_stream(now, SocketAddr::from(([10, 0, 0, 2], 40000)));
    pump_with(&mut r, id, &mut fake, now, dials);
    assert_eq!(fake.state(), ConnState::Established);
    (r, fake, id)
}

/// The topology gossip messages that announce [`fake_entries`].
fn flood_msgs() -> Vec<Vec<u8>> {
    let entries = fake_entries();
    let refs: Vec<&PeerEntry> = entries.iter().collect();
    let mut msgs = Vec::new();
    gossip::encode_messages(&refs, |m| msgs.push(m.to_vec()));
    msgs
}

#[test]
fn a_flood_of_discovered_targets_leaves_room_for_connect_and_expires() {
    let now = Instant::ZERO;
    let config = Config::new(PeerName::from_u64(0x1), 6783);
    let (mut r, mut fake, id) = with_fake_peer(config, Dials::Fail);
    for m in &flood_msgs() {
        fake.send_gossip(CHANNEL_TOPOLOGY, m).unwrap();
        pump(&mut r, id, &mut fake, now);
    }
    let announced = FAKE_ENTRIES * PEER_CONNS_MAX;
    assert!(announced > DISCOVERED_TARGETS_LEN_MAX + 1000);
    let discovered = r
        .targets()
        .filter(|(_, t)| t.kind == TargetKind::Discovered)
        .count();
    assert_eq!(discovered, DISCOVERED_TARGETS_LEN_MAX);
    assert!(r.stats().drops_discovered_targets_full > 0);
    // `weft connect` still gets its target, and it is dialed.
    let explicit = SocketAddr::from(([10, 0, 0, 3], 6783));
    r.handle_command(now, Command::Connect(explicit));
    let dialed = pump(&mut r, id, &mut fake, now);
    assert!(dialed.contains(&explicit), "explicit target not dialed");
    assert!(
        r.targets()
            .any(|(a, t)| *a == explicit && t.kind == TargetKind::Explicit)
    );
    assert_eq!(r.stats().drops_explicit_targets_full, 0);
    // Time passes; every dial fails. The discovered targets stay until the TTL...
    let ttl = Duration::from_millis(DISCOVERED_TARGET_TTL_MS);
    let mut now = now;
    let step = Duration::from_secs(1);
    while now + step < Instant::ZERO + ttl {
        now += step;
        r.handle_timeout(now);
        pump(&mut r, id, &mut fake, now);
    }
    assert_eq!(r.targets().count(), DISCOVERED_TARGETS_LEN_MAX + 1);
    // ...and are gone after it; the explicit one is kept.
    now += Duration::from_secs(2);
    r.handle_timeout(now);
    pump(&mut r, id, &mut fake, now);
    assert_eq!(r.targets().count(), 1, "only the explicit target is left");
    assert!(r.targets().all(|(a, _)| *a == explicit));
    assert_eq!(
        r.stats().discovered_targets_expired,
        DISCOVERED_TARGETS_LEN_MAX as u64
    );
}

#[test]
fn connect_is_dialed_at_once_while_discovered_dials_fill_the_connection_limit() {
    let now = Instant::ZERO;
    let config = Config::new(PeerName::from_u64(0x1), 6783);
    let conn_limit = config.conn_limit;
    let (mut r, mut fake, id) = with_fake_peer(config, Dials::Hang);
    let mut dialed = Vec::new();
    for m in &flood_msgs() {
        fake.send_gossip(CHANNEL_TOPOLOGY, m).unwrap();
        dialed.extend(pump_hanging(&mut r, id, &mut fake, now));
    }
    // Ticks: the discovered targets' dials fill the room the fake peer's connection
    // leaves, and stay there.
    for _ in 0..4 {
        r.handle_timeout(now);
        dialed.extend(pump_hanging(&mut r, id, &mut fake, now));
    }
    assert_eq!(dialed.len(), conn_limit - 1);
    // An explicit target whose address sorts after every discovered one is dialed at
    // once all the same, in the room of one discovered dial.
    let explicit = SocketAddr::from(([172, 16, 200, 1], 6783));
    assert!(dialed.iter().all(|a| *a < explicit));
    r.handle_command(now, Command::Connect(explicit));
    let dialed = pump_hanging(&mut r, id, &mut fake, now);
    assert_eq!(dialed, vec![explicit], "explicit target not dialed at once");
    assert_eq!(r.stats().discovered_dials_preempted, 1);
    assert_eq!(r.stats().drops_conn_limit, 0);
    assert_eq!(fake.state(), ConnState::Established, "the real peer stays");
}
