//! Who may hold a connection slot: idle inbound streams that never say hello, wrong
//! passwords from one address. Routers wired back to back (`common::Net`); the attacker's
//! streams are accepted by hand and never sent a byte.

mod common;

use common::{Net, addr, addr_from};
use std::net::{IpAddr, SocketAddr};
use weft_core::conn::{ConnError, ConnState};
use weft_core::crypto::CryptoError;
use weft_core::peer::PeerName;
use weft_core::router::{Config, Event};
use weft_core::time::Duration;

fn config(i: usize, password: Option<&str>) -> Config {
    let mut c = Config::new(PeerName::from_u64(0x200 + i as u64), 6783);
    c.nickname = format!("r{i}");
    c.psk = password.map(|p| weft_core::crypto::Psk::from_password(p.as_bytes()));
    c
}

fn established(net: &Net, i: usize) -> Vec<PeerName> {
    net.routers[i]
        .connections()
        .filter(|c| c.state == ConnState::Established)
        .filter_map(|c| c.peer)
        .collect()
}

/// Opens `count` idle inbound streams on router `i`, spread over `addresses` source IPs
/// outside the routers' own 10.0.0.0/24 (none of them ever sends a byte).
fn idle_flood(net: &mut Net, i: usize, count: usize, addresses: usize) {
    for k in 0..count {
        let a = k % addresses;
        let ip = IpAddr::from([192, 0, (a / 250) as u8 + 2, (a % 250) as u8 + 1]);
        let port = 1024 + (k / addresses) as u16;
        net.routers[i].accept_stream(net.now, SocketAddr::new(ip, port));
    }
}

/// Router 0 is flooded with `count` idle inbound streams from `addresses` IPs, then dials
/// router 1 and is dialed by router 2: both must come up, and the idle streams must be gone
/// once the pre-hello timeout has passed.
fn flood_then_connect(count: usize, addresses: usize) -> Net {
    let mut net = Net::from_configs((0..3).map(|i| config(i, None)), 7);
    idle_flood(&mut net, 0, count, addresses);
    net.connect(0, 1);
    net.connect(2, 0);
    net.run(Duration::from_secs(2));
    let (r1, r2) = (net.routers[1].name(), net.routers[2].name());
    let mut up = established(&net, 0);
    up.sort();
    assert_eq!(
        up,
        vec![r1, r2],
        "router 0 keeps its real peers under the flood"
    );
    // Pending inbound streams are bounded, and every refusal is counted.
    let pending = net.routers[0]
        .connections()
        .filter(|c| !c.outbound && c.state != ConnState::Established)
        .count();
    assert!(
        pending <= weft_core::admission::PENDING_INBOUND_MAX,
        "{pending} pending"
    );
    let s = net.routers[0].stats();
    let refused = s.drops_pending_inbound_full + s.drops_pending_inbound_per_addr;
    assert_eq!(refused as usize + pending, count, "{s:?}");
    // After the pre-hello timeout only the real peers are left.
    net.run(Duration::from_secs(5));
    let left: Vec<SocketAddr> = net.routers[0].connections().map(|c| c.addr).collect();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(
        left.contains(&addr(1)) && left.contains(&addr_from(2)),
        "{left:?}"
    );
    assert_eq!(net.routers[0].stats().pre_hello_timeouts, pending as u64);
    assert!(net.events.iter().any(|(i, e)| *i == 0
        && matches!(
            e,
            Event::ConnectionDown {
                error: ConnError::HelloTimeout,
                ..
            }
        )));
    let mut up = established(&net, 0);
    up.sort();
    assert_eq!(up, vec![r1, r2]);
    net
}

#[test]
fn idle_inbound_streams_from_a_few_addresses_leave_room_for_real_peers() {
    let net = flood_then_connect(500, 5);
    let s = net.routers[0].stats();
    // Five addresses fill only their own per-address share.
    assert_eq!(
        s.drops_pending_inbound_per_addr as usize,
        500 - 5 * weft_core::admission::PENDING_INBOUND_PER_ADDR_MAX
    );
    assert_eq!(s.drops_pending_inbound_full, 0);
}

#[test]
fn idle_inbound_streams_from_many_addresses_stop_at_the_pending_budget() {
    let net = flood_then_connect(500, 500);
    let s = net.routers[0].stats();
    // Every stream past the budget closed the oldest silent one, and so did the real
    // peer's: that is how it got in while the budget was full.
    assert_eq!(
        s.drops_pending_inbound_full as usize,
        500 - weft_core::admission::PENDING_INBOUND_MAX + 1
    );
    assert_eq!(s.drops_pending_inbound_per_addr, 0);
    let evicted = net
        .events
        .iter()
        .filter(|(i, e)| {
            *i == 0
                && matches!(
                    e,
                    Event::ConnectionDown {
                        error: ConnError::Evicted,
                        ..
                    }
                )
        })
        .count();
    assert_eq!(evicted as u64, s.drops_pending_inbound_full);
}

/// Inbound connections router 0 let reach the handshake from router 1's address (each
/// one ends in a `ConnectionDown` there; a refused stream gives none).
fn handshakes_from(net: &Net, i: usize, from: SocketAddr) -> usize {
    net.events
        .iter()
        .filter(|(r, e)| {
            *r == i && matches!(e, Event::ConnectionDown { addr, .. } if *addr == from)
        })
        .count()
}

#[test]
fn five_wrong_passwords_lock_the_address_out_until_the_lockout_ends() {
    use weft_core::admission::PASSWORD_FAILURES_MAX;
    let mut net = Net::from_configs(
        [
            config(0, Some("right")),
            config(1, Some("wrong")),
            config(2, Some("right")),
        ],
        11,
    );
    let attacker = addr_from(1);
    for k in 0..PASSWORD_FAILURES_MAX as usize {
        net.connect(1, 0);
        net.run(Duration::from_millis(500));
        assert_eq!(handshakes_from(&net, 0, attacker), k + 1, "attempt {k}");
    }
    assert!(net.events.iter().any(|(i, e)| *i == 0
        && matches!(
            e,
            Event::ConnectionDown {
                error: ConnError::Crypto(CryptoError::WrongPassword),
                ..
            }
        )));
    let lockouts: Vec<&Event> = net
        .events
        .iter()
        .filter(|(i, e)| *i == 0 && matches!(e, Event::LockedOut { .. }))
        .map(|(_, e)| e)
        .collect();
    assert_eq!(lockouts.len(), 1, "one lockout event");
    let Event::LockedOut { ip, until } = *lockouts[0] else {
        unreachable!()
    };
    assert_eq!(ip, attacker.ip());
    assert_eq!(net.routers[0].stats().password_lockouts, 1);
    // The sixth attempt is refused at accept: it never reaches the handshake.
    net.connect(1, 0);
    net.run(Duration::from_millis(500));
    assert_eq!(
        handshakes_from(&net, 0, attacker),
        PASSWORD_FAILURES_MAX as usize
    );
    assert_eq!(net.routers[0].stats().drops_locked_out, 1);
    assert!(net.events.iter().any(|(i, e)| *i == 1
        && matches!(
            e,
            Event::ConnectionDown {
                error: ConnError::StreamClosed,
                ..
            }
        )));
    // Another address is let in (and, knowing the password, connects).
    net.connect(2, 0);
    net.run(Duration::from_millis(500));
    assert_eq!(established(&net, 0), vec![net.routers[2].name()]);
    // Router 1 keeps retrying on its own; all refused until the lockout ends.
    let left = until.saturating_since(net.now);
    net.run(Duration::from_micros(left.total_micros() - 20_000));
    assert_eq!(
        handshakes_from(&net, 0, attacker),
        PASSWORD_FAILURES_MAX as usize
    );
    assert!(net.routers[0].stats().drops_locked_out >= 2);
    // Afterwards it reaches the handshake again (and fails it: still the wrong password).
    net.run(Duration::from_millis(40));
    net.connect(1, 0);
    net.run(Duration::from_millis(500));
    assert!(handshakes_from(&net, 0, attacker) > PASSWORD_FAILURES_MAX as usize);
    assert_eq!(net.routers[0].stats().password_lockouts, 1);
    assert_eq!(established(&net, 0), vec![net.routers[2].name()]);
}
