//! Two or three routers wired back to back (quinn's `Pair` style): streams are byte pipes,
//! time is advanced by hand. Exercises the router as a whole: maker, handshake, gossip,
//! routes, duplicate-connection tie-break, forget, password checks.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use weft_core::conn::{ConnError, ConnId};
use weft_core::crypto::CryptoError;
use weft_core::peer::PeerName;
use weft_core::router::{Command, Config, Destination, Event, Router, TRANSMIT_LEN_MIN};
use weft_core::time::{Duration, Instant};

struct Net {
    routers: Vec<Router>,
    /// (router, conn) -> (other router, other conn)
    links: BTreeMap<(usize, ConnId), (usize, ConnId)>,
    /// Pending bytes per destination.
    inflight: VecDeque<(usize, ConnId, Vec<u8>)>,
    events: Vec<(usize, Event)>,
    now: Instant,
    /// Pairs of routers that cannot reach each other.
    blocked: Vec<(usize, usize)>,
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i as u8 + 1], 6783))
}

impl Net {
    fn new(passwords: &[Option<&str>]) -> Self {
        let routers = passwords
            .iter()
            .enumerate()
            .map(|(i, pw)| {
                let mut c = Config::new(PeerName::from_u64(0x100 + i as u64), 6783);
                c.nickname = format!("r{i}");
                c.password = pw.map(|p| p.as_bytes().to_vec());
                c.gossip_interval = Duration::from_secs(5);
                Router::new(c, 42 + i as u64, Instant::ZERO)
            })
            .collect();
        Self {
            routers,
            links: BTreeMap::new(),
            inflight: VecDeque::new(),
            events: Vec::new(),
            now: Instant::ZERO,
            blocked: Vec::new(),
        }
    }

    fn index_of(&self, a: SocketAddr) -> usize {
        usize::from(match a.ip() {
            std::net::IpAddr::V4(v4) => v4.octets()[3],
            std::net::IpAddr::V6(_) => unreachable!(),
        }) - 1
    }

    /// Moves everything that can move right now; returns whether anything did.
    fn pump(&mut self) -> bool {
        let mut moved = false;
        let mut buf = vec![0u8; TRANSMIT_LEN_MIN];
        for i in 0..self.routers.len() {
            while let Some(ev) = self.routers[i].poll_event() {
                moved = true;
                match ev {
                    Event::OpenStream { conn, addr } => {
                        let j = self.index_of(addr);
                        let blocked = self
                            .blocked
                            .iter()
                            .any(|&(a, b)| (a, b) == (i, j) || (b, a) == (i, j));
                        if blocked {
                            self.routers[i].handle_command(self.now, Command::StreamFailed(conn));
                        } else {
                            let theirs = self.routers[j].accept_stream(self.now, addr_from(i));
                            self.links.insert((i, conn), (j, theirs));
                            self.links.insert((j, theirs), (i, conn));
                            self.routers[i].handle_command(self.now, Command::StreamOpened(conn));
                        }
                    }
                    Event::CloseStream { conn } => {
                        if let Some((j, theirs)) = self.links.remove(&(i, conn)) {
                            self.links.remove(&(j, theirs));
                            // Deliver what is in flight first, then the close.
                            self.deliver_all();
                            self.routers[j].handle_command(self.now, Command::StreamClosed(theirs));
                        }
                    }
                    other => self.events.push((i, other)),
                }
            }
            while let Some(t) = self.routers[i].poll_transmit(self.now, &mut buf) {
                moved = true;
                let Destination::Stream(conn) = t.destination else {
                    panic!("no datagrams expected");
                };
                if let Some(&(j, theirs)) = self.links.get(&(i, conn)) {
                    self.inflight.push_back((j, theirs, buf[..t.len].to_vec()));
                }
            }
        }
        moved |= self.deliver_all();
        moved
    }

    fn deliver_all(&mut self) -> bool {
        let mut moved = false;
        while let Some((j, conn, bytes)) = self.inflight.pop_front() {
            moved = true;
            self.routers[j].handle_stream_bytes(self.now, conn, &bytes);
        }
        moved
    }

    /// Runs for `d` of virtual time in 10 ms steps.
    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            while self.pump() {}
            self.now += Duration::from_millis(10);
            for r in &mut self.routers {
                if r.poll_timeout().is_some_and(|t| t <= self.now) {
                    r.handle_timeout(self.now);
                }
            }
        }
        while self.pump() {}
    }

    fn established_peers(&self, i: usize) -> Vec<PeerName> {
        self.routers[i]
            .connections()
            .filter(|c| c.state == weft_core::conn::ConnState::Established)
            .filter_map(|c| c.peer)
            .collect()
    }
}

fn addr_from(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i as u8 + 1], 40000))
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
