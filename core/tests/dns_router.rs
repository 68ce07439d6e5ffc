//! weftDNS through the Router: routers wired back to back (streams are byte pipes, time
//! advanced by hand). Records reach neighbours at once, flood over two hops, reach a late
//! joiner in full, and go when removed or when their owner dies.

mod common;

use common::Net;
use std::net::Ipv4Addr;
use weft_core::dns::{Container, DnsName, Filter};
use weft_core::peer::PeerName;
use weft_core::router::{Config, Event};
use weft_core::time::Duration;

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
        Self::from_configs((0..n).map(config), 7)
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

    /// `PeerRemoved` events, with the router that gave them.
    fn removed(&self) -> Vec<(usize, PeerName)> {
        self.events
            .iter()
            .filter_map(|(i, e)| match e {
                Event::PeerRemoved(p) => Some((*i, *p)),
                _ => None,
            })
            .collect()
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
    let removed = net.removed();
    assert!(removed.contains(&(0, dead)), "{removed:?}");
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
