//! weftDNS through the Router: routers wired back to back (streams are byte pipes, time
//! advanced by hand). Records reach neighbours at once, flood over two hops, reach a late
//! joiner in full, and go when removed or when their owner dies.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use weft_core::conn::ConnId;
use weft_core::dns::{Container, DnsName, Filter};
use weft_core::peer::PeerName;
use weft_core::router::{Command, Config, Destination, Event, Router, TRANSMIT_LEN_MIN};
use weft_core::time::{Duration, Instant};

struct Net {
    routers: Vec<Router>,
    links: BTreeMap<(usize, ConnId), (usize, ConnId)>,
    inflight: VecDeque<(usize, ConnId, Vec<u8>)>,
    dead: BTreeSet<usize>,
    removed: Vec<(usize, PeerName)>,
    now: Instant,
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i as u8 + 1], 6783))
}

fn name(s: &str) -> DnsName {
    DnsName::new(s).unwrap()
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn config(i: usize) -> Config {
    let mut c = Config::new(PeerName::from_u64(0x100 + i as u64), 6783);
    c.gossip_interval = Duration::from_secs(30);
    c.discovery = false;
    c
}

impl Net {
    fn new(n: usize) -> Self {
        let routers = (0..n)
            .map(|i| Router::new(config(i), 7 + i as u64, Instant::ZERO))
            .collect();
        Self {
            routers,
            links: BTreeMap::new(),
            inflight: VecDeque::new(),
            dead: BTreeSet::new(),
            removed: Vec::new(),
            now: Instant::ZERO,
        }
    }

    fn pump(&mut self) -> bool {
        let mut moved = false;
        let mut buf = vec![0u8; TRANSMIT_LEN_MIN];
        for i in 0..self.routers.len() {
            if self.dead.contains(&i) {
                continue;
            }
            while let Some(ev) = self.routers[i].poll_event() {
                moved = true;
                match ev {
                    Event::OpenStream { conn, addr: a } => {
                        let j = usize::from(match a.ip() {
                            std::net::IpAddr::V4(v4) => v4.octets()[3],
                            std::net::IpAddr::V6(_) => unreachable!(),
                        }) - 1;
                        if self.dead.contains(&j) {
                            self.routers[i].handle_command(self.now, Command::StreamFailed(conn));
                            continue;
                        }
                        let from = SocketAddr::from(([10, 0, 0, i as u8 + 1], 40000));
                        let theirs = self.routers[j].accept_stream(self.now, from);
                        self.links.insert((i, conn), (j, theirs));
                        self.links.insert((j, theirs), (i, conn));
                        self.routers[i].handle_command(self.now, Command::StreamOpened(conn));
                    }
                    Event::CloseStream { conn } => {
                        if let Some((j, theirs)) = self.links.remove(&(i, conn)) {
                            self.links.remove(&(j, theirs));
                            self.routers[j].handle_command(self.now, Command::StreamClosed(theirs));
                        }
                    }
                    Event::PeerRemoved(p) => self.removed.push((i, p)),
                    _ => {}
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
        while let Some((j, conn, bytes)) = self.inflight.pop_front() {
            if self.dead.contains(&j) {
                continue;
            }
            moved = true;
            self.routers[j].handle_stream_bytes(self.now, conn, &bytes);
        }
        moved
    }

    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            while self.pump() {}
            self.now += Duration::from_millis(10);
            for (i, r) in self.routers.iter_mut().enumerate() {
                if !self.dead.contains(&i) && r.poll_timeout().is_some_and(|t| t <= self.now) {
                    r.handle_timeout(self.now);
                }
            }
        }
        while self.pump() {}
    }

    fn connect(&mut self, i: usize, j: usize) {
        self.routers[i].handle_command(self.now, Command::Connect(addr(j)));
    }

    fn add(&mut self, i: usize, n: &str, a: &str, container: &str) {
        let c = Container::new(container).unwrap();
        assert_eq!(
            self.routers[i].dns_add(self.now, &name(n), ip(a), &c),
            Ok(true)
        );
    }

    fn lookup(&mut self, i: usize, n: &str) -> Vec<Ipv4Addr> {
        self.routers[i].dns_lookup(&name(n))
    }

    /// The process dies: its streams close (the kernel resets them) and it says nothing more.
    fn kill(&mut self, k: usize) {
        self.dead.insert(k);
        let ends: Vec<(usize, ConnId)> = self
            .links
            .iter()
            .filter(|((i, _), _)| *i == k)
            .map(|(_, theirs)| *theirs)
            .collect();
        for (j, conn) in ends {
            self.links.remove(&(j, conn));
            self.routers[j].handle_command(self.now, Command::StreamClosed(conn));
        }
        self.links.retain(|(i, _), _| *i != k);
    }
}

#[test]
fn pair_sees_adds_and_removals_at_once() {
    let mut net = Net::new(2);
    net.connect(1, 0);
    net.run(Duration::from_secs(1));
    net.add(0, "web.weave.local", "10.32.0.2", "ns-a");
    net.add(1, "web.weave.local", "10.32.0.3", "ns-b");
    // Well under the 30 s anti-entropy period: news goes out at once.
    net.run(Duration::from_millis(100));
    for i in 0..2 {
        assert_eq!(
            net.lookup(i, "web.weave.local"),
            vec![ip("10.32.0.2"), ip("10.32.0.3")]
        );
    }
    assert_eq!(
        net.routers[1].dns_reverse(ip("10.32.0.2")),
        vec![name("web.weave.local")]
    );
    let filter = Filter {
        container: Some(Container::new("ns-a").unwrap()),
        ..Filter::default()
    };
    assert_eq!(net.routers[0].dns_remove(net.now, &filter), 1);
    net.run(Duration::from_millis(100));
    assert_eq!(net.lookup(1, "web.weave.local"), vec![ip("10.32.0.3")]);
    // Hot swap: a new container under the same name shows at once on the other side.
    net.add(0, "web.weave.local", "10.32.0.4", "ns-c");
    net.run(Duration::from_millis(100));
    assert_eq!(
        net.lookup(1, "web.weave.local"),
        vec![ip("10.32.0.3"), ip("10.32.0.4")]
    );
}

#[test]
fn line_floods_over_two_hops_and_late_joiner_gets_everything() {
    let mut net = Net::new(3);
    net.connect(1, 0);
    net.run(Duration::from_secs(1));
    net.add(0, "a.weave.local", "10.32.0.1", "ns-1");
    net.add(1, "b.weave.local", "10.32.0.2", "ns-2");
    net.run(Duration::from_millis(200));
    // 2 joins later, through 1 only: the full state reaches it on connect.
    net.connect(2, 1);
    net.run(Duration::from_secs(1));
    assert_eq!(net.lookup(2, "a.weave.local"), vec![ip("10.32.0.1")]);
    assert_eq!(net.lookup(2, "b.weave.local"), vec![ip("10.32.0.2")]);
    // And news from 2 crosses 1 to 0.
    net.add(2, "c.weave.local", "10.32.0.3", "ns-3");
    net.run(Duration::from_millis(200));
    assert_eq!(net.lookup(0, "c.weave.local"), vec![ip("10.32.0.3")]);
}

#[test]
fn dead_peer_unanswered_at_once_and_dropped_after_gc() {
    let mut net = Net::new(3);
    net.connect(1, 0);
    net.connect(2, 0);
    net.connect(2, 1);
    net.run(Duration::from_secs(2));
    for (i, ip) in ["10.32.0.1", "10.32.0.2", "10.32.0.3"].iter().enumerate() {
        net.add(i, "svc.weave.local", ip, "ns");
    }
    net.run(Duration::from_millis(200));
    assert_eq!(net.lookup(0, "svc.weave.local").len(), 3);
    net.kill(2);
    net.run(Duration::from_millis(100));
    assert_eq!(
        net.lookup(0, "svc.weave.local"),
        vec![ip("10.32.0.1"), ip("10.32.0.2")],
        "an unreachable owner's records are not answered"
    );
    assert_eq!(
        net.routers[0]
            .dns()
            .lookup(&name("svc.weave.local"))
            .count(),
        3
    );
    // Default peer GC grace: 60 s after it became unreachable, the records are gone.
    net.run(Duration::from_secs(62));
    let dead = PeerName::from_u64(0x102);
    assert!(net.removed.contains(&(0, dead)), "{:?}", net.removed);
    for i in 0..2 {
        assert_eq!(
            net.routers[i]
                .dns()
                .lookup(&name("svc.weave.local"))
                .count(),
            2
        );
        assert_eq!(
            net.routers[i].dns().stats().records_of_dead_peers_dropped,
            1
        );
    }
}
