//! Two or three routers wired back to back (quinn's `Pair` style): streams are byte pipes,
//! time is advanced by hand. Exercises the router as a whole: maker, handshake, gossip,
//! routes, duplicate-connection tie-break, forget, password checks.

mod common;

use common::{Net, addr};
use weft_core::conn::ConnError;
use weft_core::crypto::{CryptoError, Psk};
use weft_core::peer::PeerName;
use weft_core::router::{Command, Config, Event};
use weft_core::time::{Duration, Instant};

impl Net {
    fn new(passwords: &[Option<&str>]) -> Self {
        let configs = passwords.iter().enumerate().map(|(i, pw)| {
            let mut c = Config::new(PeerName::from_u64(0x100 + i as u64), 6783);
            c.nickname = format!("r{i}");
            c.psk = pw.map(|p| Psk::from_password(p.as_bytes()));
            c.gossip_interval = Duration::from_secs(5);
            c
        });
        Self::from_configs(configs, 42)
    }

    fn established_peers(&self, i: usize) -> Vec<PeerName> {
        self.routers[i]
            .connections()
            .filter(|c| c.state == weft_core::conn::ConnState::Established)
            .filter_map(|c| c.peer)
            .collect()
    }
}

#[test]
fn equal_passwords_connect_and_share_topology() {
    let mut net = Net::new(&[Some("s3cret"), Some("s3cret")]);
    net.routers[0].handle_command(Instant::ZERO, Command::Connect(addr(1)));
    net.run(Duration::from_secs(2));
    let b = net.routers[1].name();
    let a = net.routers[0].name();
    assert_eq!(net.established_peers(0), vec![b]);
    assert_eq!(net.established_peers(1), vec![a]);
    assert!(net.routers[0].connections().all(|c| c.encrypted));
    assert_eq!(
        net.routers[0].topology().digest(),
        net.routers[1].topology().digest()
    );
    assert_eq!(net.routers[0].next_hop(b), Some(b));
    assert_eq!(net.routers[1].next_hop(a), Some(a));
    assert!(
        net.events
            .iter()
            .any(|(i, e)| *i == 0 && matches!(e, Event::ConnectionUp { peer, .. } if *peer == b))
    );
}

#[test]
fn different_passwords_fail_on_both_sides_with_a_clear_error() {
    let mut net = Net::new(&[Some("one"), Some("two")]);
    net.routers[0].handle_command(Instant::ZERO, Command::Connect(addr(1)));
    net.run(Duration::from_secs(2));
    assert!(net.established_peers(0).is_empty());
    assert!(net.established_peers(1).is_empty());
    for side in 0..2 {
        let err = net
            .events
            .iter()
            .find_map(|(i, e)| match e {
                Event::ConnectionDown { error, .. } if *i == side => Some(*error),
                _ => None,
            })
            .unwrap_or_else(|| panic!("router {side} reported no failure"));
        assert_eq!(
            err,
            ConnError::Crypto(CryptoError::WrongPassword),
            "router {side}"
        );
        assert!(err.to_string().contains("password"), "{err}");
    }
    // The target remembers why, for `weft status targets`.
    let (_, t) = net.routers[0].targets().next().unwrap();
    assert_eq!(
        t.last_error,
        Some(ConnError::Crypto(CryptoError::WrongPassword))
    );
}

#[test]
fn password_on_one_side_only_is_refused() {
    let mut net = Net::new(&[Some("one"), None]);
    net.routers[0].handle_command(Instant::ZERO, Command::Connect(addr(1)));
    net.run(Duration::from_secs(2));
    assert!(net.established_peers(0).is_empty());
    assert!(net.events.iter().any(|(_, e)| matches!(
        e,
        Event::ConnectionDown {
            error: ConnError::Crypto(CryptoError::EncryptionMismatch),
            ..
        }
    )));
}

#[test]
fn simultaneous_dials_leave_exactly_one_connection() {
    let mut net = Net::new(&[None, None]);
    net.routers[0].handle_command(Instant::ZERO, Command::Connect(addr(1)));
    net.routers[1].handle_command(Instant::ZERO, Command::Connect(addr(0)));
    net.run(Duration::from_secs(130));
    assert_eq!(net.established_peers(0).len(), 1);
    assert_eq!(net.established_peers(1).len(), 1);
    assert_eq!(net.routers[0].connections().count(), 1);
    assert_eq!(net.routers[1].connections().count(), 1);
    // Both targets count as connected (one through the other side's dial), with no error.
    for r in &net.routers {
        for (addr, t) in r.targets() {
            assert!(
                matches!(t.state, weft_core::maker::TargetState::Connected(_)),
                "{addr}: {:?}",
                t.state
            );
            assert_eq!(t.last_error, None, "{addr}");
        }
    }
}

#[test]
fn three_in_a_line_route_through_the_middle_and_forget_disconnects() {
    let mut net = Net::new(&[None, None, None]);
    net.blocked.push((0, 2));
    net.routers[0].handle_command(Instant::ZERO, Command::Connect(addr(1)));
    net.routers[2].handle_command(Instant::ZERO, Command::Connect(addr(1)));
    net.run(Duration::from_secs(5));
    let (a, b, c) = (
        net.routers[0].name(),
        net.routers[1].name(),
        net.routers[2].name(),
    );
    assert_eq!(net.routers[0].topology().len(), 3);
    assert_eq!(net.routers[0].next_hop(c), Some(b));
    assert_eq!(net.routers[2].next_hop(a), Some(b));
    // B relays A's broadcasts to C, and A relays nothing of its own further.
    assert_eq!(net.routers[1].broadcast_children(a), vec![c]);
    assert!(net.routers[0].broadcast_children(a).contains(&b));
    // A forgets B: the connection goes, and C's route to A goes with it.
    net.routers[0].handle_command(net.now, Command::Forget(addr(1)));
    net.run(Duration::from_secs(2));
    assert!(net.established_peers(0).is_empty());
    // B is no longer a target (C still is: A discovered it through B's gossip).
    assert!(net.routers[0].targets().all(|(t, _)| *t != addr(1)));
    assert!(net.routers[0].targets().any(|(t, _)| *t == addr(2)));
    assert_eq!(net.routers[2].next_hop(a), None);
    // Dead peers leave the topology after the grace period.
    net.run(Duration::from_secs(70));
    assert_eq!(net.routers[2].topology().len(), 2);
    assert!(
        net.events
            .iter()
            .any(|(i, e)| *i == 2 && *e == Event::PeerRemoved(a))
    );
}

#[test]
fn same_seed_same_bytes() {
    let run = || {
        let mut net = Net::new(&[Some("pw"), Some("pw")]);
        net.routers[0].handle_command(Instant::ZERO, Command::Connect(addr(1)));
        net.run(Duration::from_secs(3));
        (net.routers[0].stats(), net.routers[1].topology().digest())
    };
    assert_eq!(run(), run());
}
