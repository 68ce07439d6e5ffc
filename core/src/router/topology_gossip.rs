//! The router's topology gossip: merging what neighbours tell (within the topology's
//! limits), announcing our own connections, batching news before it is flooded, the
//! periodic full-state gossip to a few random neighbours, and sending on any channel.

use super::*;

impl Router {
    pub(super) fn on_topology_gossip(&mut self, now: Instant, from: ConnId, payload: &[u8]) {
        let entries = match parse_entries(payload) {
            Ok(e) => e,
            Err(e) => {
                self.drop_malformed_gossip(now, from, e);
                return;
            }
        };
        let sender = self.remote_name(from);
        if self.config.discovery {
            for entry in &entries {
                for c in &entry.conns {
                    if let Some(addr) = c.addr
                        && c.peer != self.config.name
                        && !self.by_peer.contains_key(&c.peer)
                        && !self.maker.add(addr, TargetKind::Discovered, now)
                    {
                        self.stats.drops_discovered_targets_full += 1;
                    }
                }
            }
        }
        self.topology.set_clock_ms(self.config.wall_clock_ms(now));
        let news = self.topology.merge(entries);
        if news.is_empty() {
            return;
        }
        self.routes_dirty = true;
        // Our own name in the news means the sender holds an entry about us that ours
        // must override (an older incarnation, a forgery): it hears ours back too.
        let me = self.config.name;
        let about_us = news.binary_search(&me).is_ok();
        for n in self.by_peer.keys() {
            if Some(*n) != sender {
                self.news.entry(*n).or_default().add(news.iter().copied());
            } else if about_us {
                self.news.entry(*n).or_default().add([me]);
            }
        }
        self.schedule_flush(now);
    }

    pub(super) fn update_our_conns(&mut self) {
        let conns: Vec<ConnInfo> = self
            .by_peer
            .iter()
            .filter_map(|(peer, id)| {
                let s = self.conns.get(id)?;
                let r = s.conn.remote()?;
                // A punched link's address is a NAT mapping, not something to dial.
                let addr = if s.punch.is_some() {
                    None
                } else if s.conn.outbound() {
                    Some(s.conn.remote_addr())
                } else {
                    Some(SocketAddr::new(s.conn.remote_addr().ip(), r.listen_port))
                };
                Some(ConnInfo {
                    peer: *peer,
                    addr,
                    established: s.conn.state() == ConnState::Established,
                    outbound: s.conn.outbound(),
                })
            })
            .collect();
        if self.topology.set_our_conns(conns) {
            self.routes_dirty = true;
            let me = self.config.name;
            for n in self.by_peer.keys() {
                self.news.entry(*n).or_default().add([me]);
            }
        }
    }

    pub(super) fn schedule_flush(&mut self, now: Instant) {
        if self.flush_at.is_none() {
            self.flush_at = Some(now + self.config.gossip_flush_delay);
        }
    }

    pub(super) fn maybe_flush(&mut self, now: Instant) {
        self.ipam_pump(now);
        self.dns_pump(now);
        self.policy_pump(now);
        match self.flush_at {
            Some(t) if t <= now => {}
            _ => return,
        }
        self.flush_at = None;
        let news = core::mem::take(&mut self.news);
        for (peer, mut queue) in news {
            let Some(&id) = self.by_peer.get(&peer) else {
                continue;
            };
            let entries: Vec<&PeerEntry> = match queue.take() {
                News::Nothing => continue,
                News::Names(names) => names.iter().filter_map(|n| self.topology.get(*n)).collect(),
                News::Everything => self.topology.iter().collect(),
            };
            let mut msgs = Vec::new();
            gossip::encode_messages(&entries, |m| msgs.push(m.to_vec()));
            self.send_messages(now, id, msgs);
        }
    }

    pub(super) fn periodic_gossip(&mut self) {
        let neighbours: Vec<PeerName> = self.by_peer.keys().copied().collect();
        if neighbours.is_empty() {
            return;
        }
        let n = gossip::gossip_fanout(self.topology.len());
        let chosen = gossip::choose_targets(&mut self.rng, &neighbours, n);
        for peer in chosen {
            self.news.entry(peer).or_default().add_everything();
        }
        // Sent at once: anti-entropy does not need batching.
        self.flush_at = Some(Instant::ZERO);
    }

    pub(super) fn send_messages(&mut self, now: Instant, id: ConnId, msgs: Vec<Vec<u8>>) {
        for m in msgs {
            if !self.send_gossip(now, id, CHANNEL_TOPOLOGY, &m) {
                return;
            }
        }
    }

    /// Queues one gossip message on `channel` to connection `id`, counting it (or the drop
    /// when the connection's queue is full). False if the connection is gone or failed.
    pub(super) fn send_gossip(&mut self, now: Instant, id: ConnId, channel: u8, m: &[u8]) -> bool {
        let Some(slot) = self.conns.get_mut(&id) else {
            return false;
        };
        match slot.conn.send_gossip(channel, m) {
            Ok(()) => {
                self.stats.gossip_msgs_sent += 1;
                self.stats.gossip_bytes_sent += m.len() as u64;
                true
            }
            Err(ConnError::QueueFull) => {
                self.stats.drops_queue_full += 1;
                true
            }
            Err(e) => {
                self.drop_conn(now, id, e, true);
                false
            }
        }
    }

    /// Gossip on `channel` to every neighbour but `except`.
    pub(super) fn gossip_neighbours(
        &mut self,
        now: Instant,
        channel: u8,
        except: Option<PeerName>,
        m: &[u8],
    ) {
        let ids: Vec<ConnId> = self
            .by_peer
            .iter()
            .filter(|(p, _)| Some(**p) != except)
            .map(|(_, id)| *id)
            .collect();
        for id in ids {
            self.send_gossip(now, id, channel, m);
        }
    }

    /// Gossip on `channel` to about 2·log2(N) random neighbours (anti-entropy).
    pub(super) fn gossip_random(&mut self, now: Instant, channel: u8, m: &[u8]) {
        let neighbours: Vec<PeerName> = self.by_peer.keys().copied().collect();
        let n = gossip::gossip_fanout(self.topology.len());
        for p in gossip::choose_targets(&mut self.rng, &neighbours, n) {
            self.gossip_one(now, channel, p, m);
        }
    }

    /// Gossip on `channel` to neighbour `peer`, if connected.
    pub(super) fn gossip_one(&mut self, now: Instant, channel: u8, peer: PeerName, m: &[u8]) {
        if let Some(&id) = self.by_peer.get(&peer) {
            self.send_gossip(now, id, channel, m);
        }
    }
}
