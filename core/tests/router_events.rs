//! The router's event queue towards the driver: bounded, but a `CloseStream` is never
//! dropped (a dropped one would leave the driver holding that stream's socket forever).

mod common;

use common::Net;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use weft_core::peer::PeerName;
use weft_core::router::{Config, EVENT_QUEUE_LEN_MAX, Event, TRANSMIT_LEN_MIN};
use weft_core::time::Instant;

#[test]
fn close_stream_is_never_dropped_when_the_event_queue_is_full() {
    let mut c = Config::new(PeerName::from_u64(0x100), 6783);
    c.conn_limit = 1;
    let mut net = Net::from_configs([c], 1);
    let r = &mut net.routers[0];
    // Far more accepted streams than slots, with the driver not draining events: every
    // refused one gets a CloseStream, well past the queue's limit.
    let accepts = EVENT_QUEUE_LEN_MAX + 500;
    let mut ids = Vec::new();
    for i in 0..accepts {
        let from = SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 40000));
        ids.push(r.accept_stream(Instant::ZERO, from));
    }
    let kept: BTreeSet<_> = r.connections().map(|c| c.id).collect();
    let mut closed = BTreeSet::new();
    // Streams evicted to make room get their CloseStream once their last bytes (a Close
    // frame) are out: the driver sends too.
    let mut buf = vec![0u8; TRANSMIT_LEN_MIN];
    loop {
        let mut progress = false;
        while r.poll_transmit(Instant::ZERO, &mut buf).is_some() {
            progress = true;
        }
        while let Some(e) = r.poll_event() {
            progress = true;
            if let Event::CloseStream { conn } = e {
                assert!(closed.insert(conn), "{conn} closed twice");
            }
        }
        if !progress {
            break;
        }
    }
    let refused: BTreeSet<_> = ids
        .iter()
        .copied()
        .filter(|id| !kept.contains(id))
        .collect();
    assert!(refused.len() > EVENT_QUEUE_LEN_MAX, "{}", refused.len());
    let missing: Vec<_> = refused.difference(&closed).collect();
    assert!(
        missing.is_empty(),
        "{} refused streams never got a CloseStream",
        missing.len()
    );
}
