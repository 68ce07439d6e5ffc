//! The driver's part of `GET /metrics`: connections by state and by datapath mode, peers,
//! targets, streams, gossip and stream counters and the router's drops, then the sleeve
//! datapath's counters, then weftDNS's and IPAM's (from the same typed status that
//! `weft status dns` and `weft status ipam` show).
//!
//! The counters are read into [`DriverCounters`] first, so the text depends on nothing
//! but those numbers (and the tests can pin it).

use super::Driver;
use crate::messages::{DnsStatus, IpamStatus};
use crate::metrics::{Kind, Metrics};
use std::collections::BTreeMap;
use weft_core::conn::ConnState;
use weft_core::maker::TargetState;
use weft_core::router::RouterStats;
use weft_core::topology::TopologyStats;

/// The driver's counters and gauges at one moment.
#[derive(Debug)]
struct DriverCounters {
    /// Connections by state name, every state present.
    conns_by_state: BTreeMap<&'static str, u64>,
    /// Targets waiting for their next attempt after a failure.
    conns_failed: u64,
    /// Established connections by datapath mode label.
    conns_by_mode: BTreeMap<&'static str, u64>,
    peers: u64,
    peers_reachable: u64,
    targets: u64,
    streams: u64,
    router: RouterStats,
    topology: TopologyStats,
    connections_accepted: u64,
    drops_write_queue_full: u64,
    drops_no_stream: u64,
    /// Punch datagrams the pump's queue had no room for.
    drops_punch_out: u64,
}

impl Driver {
    /// Prometheus text for `GET /metrics`: the driver's counters, then the datapath's.
    pub(super) fn metrics(&mut self) -> String {
        let mut m = Metrics::new();
        self.counters().render(&mut m);
        self.datapath.metrics(&mut m);
        dns_metrics(&self.dns_status(), &mut m);
        ipam_metrics(&self.ipam_status(), &mut m);
        m.finish()
    }

    fn counters(&mut self) -> DriverCounters {
        let conns_failed = self
            .router
            .targets()
            .filter(|(_, t)| {
                matches!(t.state, TargetState::Waiting { .. }) && t.last_error.is_some()
            })
            .count() as u64;
        // Established connections by datapath mode (the reason after "sleeve:" dropped).
        let mut conns_by_mode: BTreeMap<&'static str, u64> = BTreeMap::new();
        for c in self
            .router
            .connections()
            .filter(|c| c.state == ConnState::Established)
        {
            *conns_by_mode
                .entry(self.mode(c.state, c.peer).label())
                .or_default() += 1;
        }
        DriverCounters {
            conns_by_state: self.conn_counts(),
            conns_failed,
            conns_by_mode,
            peers: self.router.topology().len() as u64,
            peers_reachable: self.router.routes().reachable().count() as u64,
            targets: self.router.targets().count() as u64,
            streams: self.streams.len() as u64,
            router: self.router.stats(),
            topology: self.router.topology().stats(),
            connections_accepted: self.connections_accepted,
            drops_write_queue_full: self.drops_write_queue_full,
            drops_no_stream: self.drops_no_stream,
            drops_punch_out: self.drops_punch_out,
        }
    }
}

impl DriverCounters {
    fn render(&self, m: &mut Metrics) {
        let failed = ("failed", self.conns_failed);
        m.labelled(
            "weft_connections",
            "Connections by state.",
            Kind::Gauge,
            "state",
            self.conns_by_state
                .iter()
                .map(|(state, n)| (*state, *n))
                .chain([failed]),
        );
        m.labelled(
            "weft_connections_by_mode",
            "Established connections by datapath mode.",
            Kind::Gauge,
            "mode",
            ["fastdp", "sleeve"]
                .map(|mode| (mode, self.conns_by_mode.get(mode).copied().unwrap_or(0))),
        );
        m.gauge(
            "weft_peers",
            "Peers in the topology (including ourself).",
            self.peers,
        );
        m.gauge(
            "weft_peers_reachable",
            "Peers with a route from here.",
            self.peers_reachable,
        );
        m.gauge(
            "weft_targets",
            "Addresses the router keeps connecting to.",
            self.targets,
        );
        m.gauge("weft_streams", "Open TCP streams.", self.streams);
        let s = self.router;
        let t = self.topology;
        m.counter(
            "weft_gossip_messages_sent_total",
            "Gossip messages queued to neighbours.",
            s.gossip_msgs_sent,
        );
        m.counter(
            "weft_gossip_bytes_sent_total",
            "Gossip payload bytes queued to neighbours.",
            s.gossip_bytes_sent,
        );
        m.counter(
            "weft_gossip_messages_received_total",
            "Gossip messages received.",
            s.gossip_msgs_received,
        );
        m.counter(
            "weft_stream_bytes_sent_total",
            "Bytes written to peer streams.",
            s.stream_bytes_sent,
        );
        m.counter(
            "weft_stream_bytes_received_total",
            "Bytes read from peer streams.",
            s.stream_bytes_received,
        );
        m.counter(
            "weft_connections_accepted_total",
            "Inbound TCP connections accepted.",
            self.connections_accepted,
        );
        m.labelled(
            "weft_drops_total",
            "Things dropped, by reason.",
            Kind::Counter,
            "reason",
            [
                ("gossip_malformed", s.gossip_malformed),
                ("send_queue_full", s.drops_queue_full),
                ("events", s.drops_events),
                ("conn_limit", s.drops_conn_limit),
                ("pending_inbound_full", s.drops_pending_inbound_full),
                ("pending_inbound_per_addr", s.drops_pending_inbound_per_addr),
                ("locked_out", s.drops_locked_out),
                ("pre_hello_timeout", s.pre_hello_timeouts),
                ("explicit_targets_full", s.drops_explicit_targets_full),
                ("discovered_targets_full", s.drops_discovered_targets_full),
                ("discovered_targets_expired", s.discovered_targets_expired),
                ("discovered_dials_preempted", s.discovered_dials_preempted),
                ("topology_sync_ignored", s.sync_ignored),
                ("topology_limits", t.rejected_limits),
                ("topology_full", t.dropped_full),
                ("topology_new_peers_per_msg", t.dropped_per_msg),
                ("topology_version_ahead", t.refused_version_ahead),
                ("write_queue_full", self.drops_write_queue_full),
                ("no_stream", self.drops_no_stream),
                ("punch_out_full", self.drops_punch_out),
            ],
        );
    }
}

/// weftDNS: the server's queries and drops (when it runs), the records and their gossip.
fn dns_metrics(d: &DnsStatus, m: &mut Metrics) {
    if let Some(s) = &d.server {
        m.labelled(
            "weft_dns_queries_total",
            "DNS queries received, by transport.",
            Kind::Counter,
            "transport",
            [("udp", s.queries_udp), ("tcp", s.queries_tcp)],
        );
        m.labelled(
            "weft_dns_replies_total",
            "DNS queries answered, by who answered.",
            Kind::Counter,
            "by",
            [
                ("weft", s.answered),
                ("upstream", s.forwarded),
                ("upstream_failed", s.forward_failed),
            ],
        );
        m.labelled(
            "weft_dns_drops_total",
            "DNS queries dropped, by reason.",
            Kind::Counter,
            "reason",
            [
                ("malformed", s.malformed),
                ("dropped", s.dropped),
                ("busy", s.drops_busy),
            ],
        );
    }
    m.gauge(
        "weft_dns_records",
        "DNS records this router knows (every peer's).",
        d.records.len() as u64,
    );
    let g = &d.gossip;
    m.labelled(
        "weft_dns_gossip_total",
        "DNS record gossip, by event.",
        Kind::Counter,
        "event",
        [
            ("malformed", g.malformed),
            ("records_merged", g.records_merged),
            ("records_of_removed_peers", g.records_of_removed_peers),
            ("own_records_refreshed", g.own_records_refreshed),
            ("tombstones_expired", g.tombstones_expired),
            (
                "records_of_dead_peers_dropped",
                g.records_of_dead_peers_dropped,
            ),
            ("drops_full", g.drops_full),
            ("drops_queue_full", g.drops_queue_full),
        ],
    );
}

/// IPAM: whether the ring is there, this router's allocations and the ring's events.
fn ipam_metrics(i: &IpamStatus, m: &mut Metrics) {
    m.gauge(
        "weft_ipam_ring_ready",
        "1 once the address ring exists (addresses can be allocated), else 0.",
        u64::from(i.ring.is_some()),
    );
    m.gauge(
        "weft_ipam_allocations",
        "Addresses allocated by this router.",
        i.allocations,
    );
    m.gauge(
        "weft_ipam_pending_requests",
        "Address requests waiting for an answer.",
        i.pending,
    );
    let s = &i.stats;
    m.labelled(
        "weft_ipam_events_total",
        "IPAM ring events, by kind.",
        Kind::Counter,
        "event",
        [
            ("malformed", s.malformed),
            ("ring_conflicts", s.ring_conflicts),
            ("range_mismatches", s.range_mismatches),
            ("donations_given", s.donations_given),
            ("donations_received", s.donations_received),
            ("addresses_reclaimed", s.addresses_reclaimed),
            ("allocations_lost", s.allocations_lost),
            ("takeovers_refused", s.takeovers_refused),
            ("drops_queue_full", s.drops_queue_full),
            ("drops_unrouted", s.drops_unrouted),
        ],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_and_ipam_counters_reach_the_metrics_under_their_own_labels() {
        let mut d = DnsStatus::default();
        let mut m = Metrics::new();
        dns_metrics(&d, &mut m);
        let without_server = m.finish();
        assert!(
            !without_server.contains("weft_dns_queries_total"),
            "{without_server}"
        );
        d.server = Some(crate::messages::DnsServerStatus {
            queries_udp: 31,
            queries_tcp: 32,
            forward_failed: 33,
            drops_busy: 34,
            ..Default::default()
        });
        d.gossip.records_merged = 35;
        let mut m = Metrics::new();
        dns_metrics(&d, &mut m);
        let text = m.finish();
        for line in [
            "weft_dns_queries_total{transport=\"udp\"} 31",
            "weft_dns_queries_total{transport=\"tcp\"} 32",
            "weft_dns_replies_total{by=\"upstream_failed\"} 33",
            "weft_dns_drops_total{reason=\"busy\"} 34",
            "weft_dns_gossip_total{event=\"records_merged\"} 35",
            "weft_dns_records 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        let mut i = IpamStatus {
            allocations: 41,
            pending: 42,
            ..Default::default()
        };
        i.stats.takeovers_refused = 43;
        let mut m = Metrics::new();
        ipam_metrics(&i, &mut m);
        let text = m.finish();
        for line in [
            "weft_ipam_ring_ready 0",
            "weft_ipam_allocations 41",
            "weft_ipam_pending_requests 42",
            "weft_ipam_events_total{event=\"takeovers_refused\"} 43",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }

    /// Every counter a different number, so a value under the wrong name shows.
    fn counters() -> DriverCounters {
        DriverCounters {
            conns_by_state: [
                ("handshaking", 1),
                ("confirming", 2),
                ("established", 3),
                ("closed", 4),
            ]
            .into(),
            conns_failed: 5,
            conns_by_mode: [("fastdp", 6), ("sleeve", 7), ("none", 8)].into(),
            peers: 9,
            peers_reachable: 10,
            targets: 11,
            streams: 12,
            router: RouterStats {
                gossip_msgs_sent: 101,
                gossip_bytes_sent: 102,
                gossip_msgs_received: 103,
                stream_bytes_sent: 104,
                stream_bytes_received: 105,
                gossip_malformed: 106,
                drops_queue_full: 107,
                drops_events: 108,
                drops_conn_limit: 109,
                drops_pending_inbound_full: 110,
                drops_pending_inbound_per_addr: 111,
                drops_locked_out: 112,
                password_lockouts: 113,
                pre_hello_timeouts: 114,
                drops_explicit_targets_full: 115,
                drops_discovered_targets_full: 116,
                discovered_targets_expired: 117,
                discovered_dials_preempted: 118,
                sync_ignored: 119,
            },
            topology: TopologyStats {
                rejected_limits: 201,
                dropped_full: 202,
                dropped_per_msg: 203,
                refused_version_ahead: 204,
            },
            connections_accepted: 301,
            drops_write_queue_full: 302,
            drops_no_stream: 303,
            drops_punch_out: 304,
        }
    }

    #[test]
    fn the_driver_metrics_text_is_pinned() {
        let mut m = Metrics::new();
        counters().render(&mut m);
        let out = m.finish();
        assert_eq!(out, EXPECTED, "{out}");
    }

    #[test]
    fn a_mode_without_connections_shows_zero() {
        let c = DriverCounters {
            conns_by_mode: [("sleeve", 7)].into(),
            ..counters()
        };
        let mut m = Metrics::new();
        c.render(&mut m);
        let out = m.finish();
        assert!(
            out.contains("\nweft_connections_by_mode{mode=\"fastdp\"} 0\n"),
            "{out}"
        );
        assert!(
            out.contains("\nweft_connections_by_mode{mode=\"sleeve\"} 7\n"),
            "{out}"
        );
    }

    /// The text for [`counters`]: names, labels, order and values as scrapers know them.
    const EXPECTED: &str = r#"# HELP weft_connections Connections by state.
# TYPE weft_connections gauge
weft_connections{state="closed"} 4
weft_connections{state="confirming"} 2
weft_connections{state="established"} 3
weft_connections{state="handshaking"} 1
weft_connections{state="failed"} 5
# HELP weft_connections_by_mode Established connections by datapath mode.
# TYPE weft_connections_by_mode gauge
weft_connections_by_mode{mode="fastdp"} 6
weft_connections_by_mode{mode="sleeve"} 7
# HELP weft_peers Peers in the topology (including ourself).
# TYPE weft_peers gauge
weft_peers 9
# HELP weft_peers_reachable Peers with a route from here.
# TYPE weft_peers_reachable gauge
weft_peers_reachable 10
# HELP weft_targets Addresses the router keeps connecting to.
# TYPE weft_targets gauge
weft_targets 11
# HELP weft_streams Open TCP streams.
# TYPE weft_streams gauge
weft_streams 12
# HELP weft_gossip_messages_sent_total Gossip messages queued to neighbours.
# TYPE weft_gossip_messages_sent_total counter
weft_gossip_messages_sent_total 101
# HELP weft_gossip_bytes_sent_total Gossip payload bytes queued to neighbours.
# TYPE weft_gossip_bytes_sent_total counter
weft_gossip_bytes_sent_total 102
# HELP weft_gossip_messages_received_total Gossip messages received.
# TYPE weft_gossip_messages_received_total counter
weft_gossip_messages_received_total 103
# HELP weft_stream_bytes_sent_total Bytes written to peer streams.
# TYPE weft_stream_bytes_sent_total counter
weft_stream_bytes_sent_total 104
# HELP weft_stream_bytes_received_total Bytes read from peer streams.
# TYPE weft_stream_bytes_received_total counter
weft_stream_bytes_received_total 105
# HELP weft_connections_accepted_total Inbound TCP connections accepted.
# TYPE weft_connections_accepted_total counter
weft_connections_accepted_total 301
# HELP weft_drops_total Things dropped, by reason.
# TYPE weft_drops_total counter
weft_drops_total{reason="gossip_malformed"} 106
weft_drops_total{reason="send_queue_full"} 107
weft_drops_total{reason="events"} 108
weft_drops_total{reason="conn_limit"} 109
weft_drops_total{reason="pending_inbound_full"} 110
weft_drops_total{reason="pending_inbound_per_addr"} 111
weft_drops_total{reason="locked_out"} 112
weft_drops_total{reason="pre_hello_timeout"} 114
weft_drops_total{reason="explicit_targets_full"} 115
weft_drops_total{reason="discovered_targets_full"} 116
weft_drops_total{reason="discovered_targets_expired"} 117
weft_drops_total{reason="discovered_dials_preempted"} 118
weft_drops_total{reason="topology_sync_ignored"} 119
weft_drops_total{reason="topology_limits"} 201
weft_drops_total{reason="topology_full"} 202
weft_drops_total{reason="topology_new_peers_per_msg"} 203
weft_drops_total{reason="topology_version_ahead"} 204
weft_drops_total{reason="write_queue_full"} 302
weft_drops_total{reason="no_stream"} 303
weft_drops_total{reason="punch_out_full"} 304
"#;
}
