//! Routers wired back to back (quinn's `Pair` style), shared by the router-level tests:
//! streams are byte pipes between `Router`s, time is virtual and advanced by hand in 10 ms
//! steps. Pairs of routers can be kept apart (`blocked`) and routers killed (`kill`).
#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use weft_core::conn::ConnId;
use weft_core::crypto::ChaChaKeyRng;
use weft_core::router::{Command, Config, Destination, Event, Router, TRANSMIT_LEN_MIN};
use weft_core::time::{Duration, Instant};

/// Router `i`'s listening address.
pub fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i as u8 + 1], 6783))
}

/// The address router `i`'s outgoing streams come from.
pub fn addr_from(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i as u8 + 1], 40000))
}

fn index_of(a: SocketAddr) -> usize {
    usize::from(match a.ip() {
        IpAddr::V4(v4) => v4.octets()[3],
        IpAddr::V6(_) => unreachable!(),
    }) - 1
}

pub struct Net {
    pub routers: Vec<Router>,
    /// (router, conn) -> (other router, other conn)
    pub links: BTreeMap<(usize, ConnId), (usize, ConnId)>,
    /// Pending bytes per destination.
    pub inflight: VecDeque<(usize, ConnId, Vec<u8>)>,
    /// Every event but stream opens and closes, with the router that gave it.
    pub events: Vec<(usize, Event)>,
    pub now: Instant,
    /// Pairs of routers that cannot reach each other.
    pub blocked: Vec<(usize, usize)>,
    /// Killed routers: they get and give nothing more.
    pub dead: BTreeSet<usize>,
}

impl Net {
    /// One router per config, router `i` seeded with `seed + i` (its public stream and its
    /// simulation key stream alike), all at time zero.
    pub fn from_configs(configs: impl IntoIterator<Item = Config>, seed: u64) -> Self {
        let routers = configs
            .into_iter()
            .enumerate()
            .map(|(i, c)| router(c, seed + i as u64, Instant::ZERO))
            .collect();
        Self {
            routers,
            links: BTreeMap::new(),
            inflight: VecDeque::new(),
            events: Vec::new(),
            now: Instant::ZERO,
            blocked: Vec::new(),
            dead: BTreeSet::new(),
        }
    }

    fn unreachable(&self, i: usize, j: usize) -> bool {
        self.dead.contains(&j)
            || self
                .blocked
                .iter()
                .any(|&(a, b)| (a, b) == (i, j) || (b, a) == (i, j))
    }

    /// Moves everything that can move right now; returns whether anything did.
    pub fn pump(&mut self) -> bool {
        let mut moved = false;
        let mut buf = vec![0u8; TRANSMIT_LEN_MIN];
        for i in 0..self.routers.len() {
            if self.dead.contains(&i) {
                continue;
            }
            while let Some(ev) = self.routers[i].poll_event() {
                moved = true;
                match ev {
                    Event::OpenStream { conn, addr } => {
                        let j = index_of(addr);
                        if self.unreachable(i, j) {
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
                // Punching is off in these nets: only streams.
                let Destination::Stream(conn) = t.destination else {
                    continue;
                };
                if let Some(&(j, theirs)) = self.links.get(&(i, conn)) {
                    self.inflight.push_back((j, theirs, buf[..t.len].to_vec()));
                }
            }
        }
        moved |= self.deliver_all();
        moved
    }

    /// Hands every pending byte to its (live) destination; returns whether any moved.
    pub fn deliver_all(&mut self) -> bool {
        let mut moved = false;
        while let Some((j, conn, bytes)) = self.inflight.pop_front() {
            if self.dead.contains(&j) {
                continue;
            }
            moved = true;
            self.routers[j].handle_stream_bytes(self.now, conn, &bytes);
        }
        moved
    }

    /// Runs for `d` of virtual time in 10 ms steps.
    pub fn run(&mut self, d: Duration) {
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

    /// Router `i` dials router `j`.
    pub fn connect(&mut self, i: usize, j: usize) {
        self.routers[i].handle_command(self.now, Command::Connect(addr(j)));
    }

    /// The process dies: its streams close (the kernel resets them) and it says nothing more.
    pub fn kill(&mut self, k: usize) {
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

/// A router whose key stream is the deterministic simulation one for `seed`.
pub fn router(config: Config, seed: u64, now: Instant) -> Router {
    let keys = Box::new(ChaChaKeyRng::for_simulation(seed));
    Router::new(config, seed, keys, now)
}
