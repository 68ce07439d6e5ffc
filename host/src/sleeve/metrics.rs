//! The sleeve datapath's part of `GET /metrics`: frames, datagrams, bytes and TAP I/O by
//! direction, GSO fallbacks, batches, drops by reason and the crypto crew.

use super::{Datapath, drops};
use crate::metrics::{Kind, Metrics};
use std::sync::atomic::Ordering;
use weft_core::sleeve::SleeveStats;
use weft_uring_dp::CounterSnapshot;

/// The datapath's counters at one moment.
#[derive(Debug)]
struct SleeveCounters {
    /// The pump's I/O counters.
    io: CounterSnapshot,
    /// The sleeve engine's counters.
    engine: SleeveStats,
    /// Threads that seal and open.
    crypto_threads: u64,
    /// Datagrams sealed or opened by the helper threads.
    helper_crypted: u64,
    /// Each queue's I/O counters, in queue order.
    queues: Vec<CounterSnapshot>,
}

impl Datapath {
    /// Writes the datapath's metrics to `m`.
    pub(crate) fn metrics(&self, m: &mut Metrics) {
        let (io, p) = self.snapshot();
        SleeveCounters {
            io,
            engine: p.stats,
            crypto_threads: self.crypto_threads as u64,
            helper_crypted: self
                .crypto_helped
                .as_ref()
                .map_or(0, |h| h.load(Ordering::Relaxed)),
            queues: self.per_queue().into_iter().map(|(c, _)| c).collect(),
        }
        .render(m);
    }
}

impl SleeveCounters {
    fn render(&self, m: &mut Metrics) {
        let c = self.io;
        let s = self.engine;
        m.labelled(
            "weft_datapath_frames_total",
            "Ethernet frames moved by the sleeve.",
            Kind::Counter,
            "direction",
            [
                ("from_bridge", s.frames_from_bridge),
                ("to_bridge", s.frames_to_bridge),
                ("relayed", s.frames_relayed),
            ],
        );
        m.labelled(
            "weft_datapath_datagrams_total",
            "UDP datagrams on the sleeve port.",
            Kind::Counter,
            "direction",
            [("in", c.udp_datagrams_in), ("out", c.udp_datagrams_out)],
        );
        m.labelled(
            "weft_datapath_bytes_total",
            "UDP payload bytes on the sleeve port.",
            Kind::Counter,
            "direction",
            [("in", c.udp_bytes_in), ("out", c.udp_bytes_out)],
        );
        m.labelled(
            "weft_datapath_tap_io_total",
            "Reads and writes on the TAP (a TSO or coalesced super-frame is one).",
            Kind::Counter,
            "op",
            [("read", c.tap_frames_in), ("write", c.tap_frames_out)],
        );
        m.counter(
            "weft_datapath_gso_sends_cut_total",
            "GSO sends the kernel refused (datagrams over the underlay's path MTU: lower --mtu) and that went one datagram at a time.",
            c.udp_gso_cut,
        );
        m.counter(
            "weft_datapath_batches_total",
            "Wake-ups of the datapath thread that found work (frames and datagrams are handled in batches).",
            c.batches,
        );
        m.labelled(
            "weft_datapath_drops_total",
            "Frames or datagrams the datapath dropped, by reason.",
            Kind::Counter,
            "reason",
            drops(&c, &s),
        );
        m.gauge(
            "weft_datapath_crypto_threads",
            "Threads that seal and open sleeve datagrams (0: no password).",
            self.crypto_threads,
        );
        m.counter(
            "weft_datapath_helper_crypted_total",
            "Datagrams sealed or opened by the helper threads rather than the datapath thread.",
            self.helper_crypted,
        );
        let per_queue = |f: fn(&CounterSnapshot) -> u64| {
            self.queues
                .iter()
                .enumerate()
                .map(move |(i, c)| ([i.to_string()], f(c)))
        };
        m.family(
            "weft_datapath_queue_datagrams_in_total",
            "UDP datagrams received, by sleeve queue.",
            Kind::Counter,
            ["queue"],
            per_queue(|c| c.udp_datagrams_in),
        );
        m.family(
            "weft_datapath_queue_datagrams_out_total",
            "UDP datagrams sent, by sleeve queue.",
            Kind::Counter,
            ["queue"],
            per_queue(|c| c.udp_datagrams_out),
        );
        m.family(
            "weft_datapath_queue_tap_reads_total",
            "Reads from the TAP, by sleeve queue.",
            Kind::Counter,
            ["queue"],
            per_queue(|c| c.tap_frames_in),
        );
        m.family(
            "weft_datapath_queue_tap_writes_total",
            "Writes to the TAP, by sleeve queue.",
            Kind::Counter,
            ["queue"],
            per_queue(|c| c.tap_frames_out),
        );
        m.counter(
            "weft_datapath_peer_address_changes_total",
            "Times a peer's sleeve datagrams came from a new address (a NAT's mapping seen or changed), which the sleeve then answered.",
            s.peer_addr_changes,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every counter a different number, so a value under the wrong name shows.
    fn counters() -> SleeveCounters {
        SleeveCounters {
            io: CounterSnapshot {
                tap_frames_in: 1001,
                tap_bytes_in: 1002,
                tap_frames_out: 1003,
                tap_bytes_out: 1004,
                udp_datagrams_in: 1005,
                udp_bytes_in: 1006,
                udp_datagrams_out: 1007,
                udp_bytes_out: 1008,
                batches: 1009,
                drop_outbox_full: 1010,
                drop_tap_malformed: 1011,
                drop_tap_write: 1012,
                drop_udp_truncated: 1013,
                drop_udp_send: 1014,
                udp_gso_cut: 1015,
                io_errors: 1016,
            },
            engine: SleeveStats {
                frames_from_bridge: 2001,
                frames_to_bridge: 2002,
                datagrams_sent: 2003,
                datagrams_received: 2004,
                frames_relayed: 2005,
                frames_left_to_kernel: 2006,
                drops_malformed: 2007,
                drops_unknown_peer: 2008,
                drops_crypto: 2009,
                drops_replayed: 2010,
                drops_encryption_mismatch: 2011,
                drops_not_for_us: 2012,
                drops_no_route: 2013,
                drops_too_big: 2014,
                peer_addr_changes: 2015,
            },
            crypto_threads: 3,
            helper_crypted: 3001,
            queues: vec![
                CounterSnapshot {
                    udp_datagrams_in: 4001,
                    udp_datagrams_out: 4002,
                    tap_frames_in: 4003,
                    tap_frames_out: 4004,
                    ..CounterSnapshot::default()
                },
                CounterSnapshot {
                    udp_datagrams_in: 4011,
                    udp_datagrams_out: 4012,
                    tap_frames_in: 4013,
                    tap_frames_out: 4014,
                    ..CounterSnapshot::default()
                },
            ],
        }
    }

    #[test]
    fn the_datapath_metrics_text_is_pinned() {
        let mut m = Metrics::new();
        counters().render(&mut m);
        let out = m.finish();
        assert_eq!(out, EXPECTED, "{out}");
    }

    /// The text for [`counters`]: names, labels, order and values as scrapers know them.
    const EXPECTED: &str = r#"# HELP weft_datapath_frames_total Ethernet frames moved by the sleeve.
# TYPE weft_datapath_frames_total counter
weft_datapath_frames_total{direction="from_bridge"} 2001
weft_datapath_frames_total{direction="to_bridge"} 2002
weft_datapath_frames_total{direction="relayed"} 2005
# HELP weft_datapath_datagrams_total UDP datagrams on the sleeve port.
# TYPE weft_datapath_datagrams_total counter
weft_datapath_datagrams_total{direction="in"} 1005
weft_datapath_datagrams_total{direction="out"} 1007
# HELP weft_datapath_bytes_total UDP payload bytes on the sleeve port.
# TYPE weft_datapath_bytes_total counter
weft_datapath_bytes_total{direction="in"} 1006
weft_datapath_bytes_total{direction="out"} 1008
# HELP weft_datapath_tap_io_total Reads and writes on the TAP (a TSO or coalesced super-frame is one).
# TYPE weft_datapath_tap_io_total counter
weft_datapath_tap_io_total{op="read"} 1001
weft_datapath_tap_io_total{op="write"} 1003
# HELP weft_datapath_gso_sends_cut_total GSO sends the kernel refused (datagrams over the underlay's path MTU: lower --mtu) and that went one datagram at a time.
# TYPE weft_datapath_gso_sends_cut_total counter
weft_datapath_gso_sends_cut_total 1015
# HELP weft_datapath_batches_total Wake-ups of the datapath thread that found work (frames and datagrams are handled in batches).
# TYPE weft_datapath_batches_total counter
weft_datapath_batches_total 1009
# HELP weft_datapath_drops_total Frames or datagrams the datapath dropped, by reason.
# TYPE weft_datapath_drops_total counter
weft_datapath_drops_total{reason="malformed"} 2007
weft_datapath_drops_total{reason="unknown_peer"} 2008
weft_datapath_drops_total{reason="crypto"} 2009
weft_datapath_drops_total{reason="replayed"} 2010
weft_datapath_drops_total{reason="encryption_mismatch"} 2011
weft_datapath_drops_total{reason="not_for_us"} 2012
weft_datapath_drops_total{reason="no_route"} 2013
weft_datapath_drops_total{reason="too_big"} 2014
weft_datapath_drops_total{reason="outbox_full"} 1010
weft_datapath_drops_total{reason="tap_write"} 1012
weft_datapath_drops_total{reason="udp_send"} 1014
weft_datapath_drops_total{reason="udp_truncated"} 1013
# HELP weft_datapath_crypto_threads Threads that seal and open sleeve datagrams (0: no password).
# TYPE weft_datapath_crypto_threads gauge
weft_datapath_crypto_threads 3
# HELP weft_datapath_helper_crypted_total Datagrams sealed or opened by the helper threads rather than the datapath thread.
# TYPE weft_datapath_helper_crypted_total counter
weft_datapath_helper_crypted_total 3001
# HELP weft_datapath_queue_datagrams_in_total UDP datagrams received, by sleeve queue.
# TYPE weft_datapath_queue_datagrams_in_total counter
weft_datapath_queue_datagrams_in_total{queue="0"} 4001
weft_datapath_queue_datagrams_in_total{queue="1"} 4011
# HELP weft_datapath_queue_datagrams_out_total UDP datagrams sent, by sleeve queue.
# TYPE weft_datapath_queue_datagrams_out_total counter
weft_datapath_queue_datagrams_out_total{queue="0"} 4002
weft_datapath_queue_datagrams_out_total{queue="1"} 4012
# HELP weft_datapath_queue_tap_reads_total Reads from the TAP, by sleeve queue.
# TYPE weft_datapath_queue_tap_reads_total counter
weft_datapath_queue_tap_reads_total{queue="0"} 4003
weft_datapath_queue_tap_reads_total{queue="1"} 4013
# HELP weft_datapath_queue_tap_writes_total Writes to the TAP, by sleeve queue.
# TYPE weft_datapath_queue_tap_writes_total counter
weft_datapath_queue_tap_writes_total{queue="0"} 4004
weft_datapath_queue_tap_writes_total{queue="1"} 4014
# HELP weft_datapath_peer_address_changes_total Times a peer's sleeve datagrams came from a new address (a NAT's mapping seen or changed), which the sleeve then answered.
# TYPE weft_datapath_peer_address_changes_total counter
weft_datapath_peer_address_changes_total 2015
"#;
}
