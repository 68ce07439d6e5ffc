//! The router's topology gossip: merging what neighbours tell (within the topology's
//! limits), announcing our own connections, batching news before it is flooded, the
//! periodic anti-entropy with a few random neighbours (a digest to those that speak
//! topology sync, see [`crate::anti_entropy`]; the full state to older peers), and
//! sending on any channel.

use super::*;
use crate::wire::topology_sync::SyncMsg;

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

    pub(super) fn periodic_gossip(&mut self, now: Instant) {
        let neighbours: Vec<PeerName> = self.by_peer.keys().copied().collect();
        if neighbours.is_empty() {
            return;
        }
        let n = gossip::gossip_fanout(self.topology.len());
        let chosen = gossip::choose_targets(&mut self.rng, &neighbours, n);
        let digest = anti_entropy::digest(&self.topology, false);
        let window = self.config.gossip_interval;
        let mut full = false;
        for peer in chosen {
            let Some(&id) = self.by_peer.get(&peer) else {
                continue;
            };
            let Some(slot) = self.conns.get_mut(&id) else {
                continue;
            };
            if slot.sync.speaks {
                // Its summaries (if our digests differ) are welcome for one interval.
                slot.sync.summaries_until = Some(now + window);
                self.send_sync(now, id, core::slice::from_ref(&digest));
            } else {
                self.news.entry(peer).or_default().add_everything();
                full = true;
            }
        }
        if full {
            // Sent at once: anti-entropy does not need batching.
            self.flush_at = Some(Instant::ZERO);
        }
    }

    /// A CHANNEL_TOPOLOGY_SYNC payload arrived on `from` (see [`crate::anti_entropy`]);
    /// garbage costs the connection.
    pub(super) fn on_topology_sync(&mut self, now: Instant, from: ConnId, payload: &[u8]) {
        let msg = match anti_entropy::decode(payload) {
            Ok(m) => m,
            Err(e) => {
                self.drop_malformed_gossip(now, from, e);
                return;
            }
        };
        let half = Duration::from_micros(self.config.gossip_interval.total_micros() / 2);
        let Some(slot) = self.conns.get_mut(&from) else {
            return;
        };
        slot.sync.speaks = true;
        match msg {
            SyncMsg::Digest(d) => {
                if d.announce || anti_entropy::digest_matches(&self.topology, &d) {
                    return;
                }
                // One answer per half interval: a digest costs the sender 14 bytes and
                // us a summary of everything.
                if slot
                    .sync
                    .answered_at
                    .is_some_and(|t| now.saturating_since(t) < half)
                {
                    self.stats.sync_ignored += 1;
                    return;
                }
                slot.sync.answered_at = Some(now);
                let msgs: Vec<SyncMsg> = anti_entropy::summaries(&self.topology)
                    .into_iter()
                    .map(SyncMsg::Summary)
                    .collect();
                self.send_sync(now, from, &msgs);
            }
            SyncMsg::Summary(s) => {
                if slot.sync.summaries_until.is_none_or(|t| now > t) {
                    self.stats.sync_ignored += 1;
                    return;
                }
                let diff = anti_entropy::compare(&self.topology, &s);
                let entries: Vec<&PeerEntry> = diff
                    .send
                    .iter()
                    .filter_map(|n| self.topology.get(*n))
                    .collect();
                let mut msgs = Vec::new();
                gossip::encode_messages(&entries, |m| msgs.push(m.to_vec()));
                self.send_messages(now, from, msgs);
                self.send_sync(now, from, &anti_entropy::requests(&diff.want));
            }
            SyncMsg::Request(names) => {
                let msgs = gossip::encode_names(&self.topology, &names);
                self.send_messages(now, from, msgs);
            }
        }
    }

    /// Sends sync messages to connection `id`.
    pub(super) fn send_sync(&mut self, now: Instant, id: ConnId, msgs: &[SyncMsg]) {
        for m in anti_entropy::encode(msgs) {
            if !self.send_gossip(now, id, CHANNEL_TOPOLOGY_SYNC, &m) {
                return;
            }
        }
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
