//! Routers wired back to back in memory for the router's own tests (topology, sync):
//! router `i` listens on `addr(i)`, streams are paired as the driver would pair them, and
//! time moves in 10 ms steps.

use super::*;
use alloc::collections::BTreeMap;
use alloc::vec;

/// Unix time in ms the routers' `Instant::ZERO` stands for (a real host's clock).
pub(super) const ORIGIN_MS: u64 = 1_764_000_000_000;

pub(super) fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i as u8 + 1], 6783))
}

fn addr_from(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i as u8 + 1], 40000))
}

fn index_of(a: SocketAddr) -> usize {
    match a.ip() {
        IpAddr::V4(v4) => usize::from(v4.octets()[3]) - 1,
        IpAddr::V6(_) => usize::MAX,
    }
}

/// Router `i` (discovery off, so a line stays a line); `seed` makes its incarnation.
pub(super) fn router(i: usize, seed: u64, now: Instant) -> Router {
    let mut c = Config::new(PeerName::from_u64(0x10 + i as u64), 6783);
    c.wall_clock_origin_ms = ORIGIN_MS;
    c.discovery = false;
    let keys = alloc::boxed::Box::new(crate::crypto::ChaChaKeyRng::for_simulation(seed));
    Router::new(c, seed, keys, now)
}

/// Routers and their paired streams.
pub(super) struct Net {
    pub(super) routers: Vec<Router>,
    pub(super) links: BTreeMap<(usize, ConnId), (usize, ConnId)>,
    pub(super) now: Instant,
}

impl Net {
    pub(super) fn new(n: usize) -> Self {
        Self {
            routers: (0..n).map(|i| router(i, i as u64, Instant::ZERO)).collect(),
            links: BTreeMap::new(),
            now: Instant::ZERO,
        }
    }

    pub(super) fn pump(&mut self) -> bool {
        let mut moved = false;
        let mut buf = vec![0u8; TRANSMIT_LEN_MIN];
        for i in 0..self.routers.len() {
            while let Some(ev) = self.routers[i].poll_event() {
                moved = true;
                if let Event::OpenStream { conn, addr } = ev {
                    let j = index_of(addr);
                    let theirs = self.routers[j].accept_stream(self.now, addr_from(i));
                    self.links.insert((i, conn), (j, theirs));
                    self.links.insert((j, theirs), (i, conn));
                    self.routers[i].handle_command(self.now, Command::StreamOpened(conn));
                }
            }
            while let Some(t) = self.routers[i].poll_transmit(self.now, &mut buf) {
                moved = true;
                // Punching is off in these nets: only streams.
                let Destination::Stream(conn) = t.destination else {
                    continue;
                };
                if let Some(&(j, theirs)) = self.links.get(&(i, conn)) {
                    let bytes = buf[..t.len].to_vec();
                    self.routers[j].handle_stream_bytes(self.now, theirs, &bytes);
                }
            }
        }
        moved
    }

    pub(super) fn run(&mut self, d: Duration) {
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

    /// Router `i`'s connection to router `j`.
    pub(super) fn conn(&self, i: usize, j: usize) -> ConnId {
        let peer = self.routers[j].name();
        self.routers[i].by_peer[&peer]
    }
}
