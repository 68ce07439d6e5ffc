//! The router's connections: admitting inbound streams (the handshake budget, lockouts),
//! dialling due targets, moving each connection's output (frames, events, closes),
//! marking a connection established, and dropping one with its reason.

use super::*;

impl Router {
    pub(super) fn alloc_conn_id(&mut self) -> ConnId {
        let id = ConnId(self.next_conn_id);
        self.next_conn_id += 1;
        id
    }

    /// Decides about a new inbound stream from `remote` ([`admission::admit`]), closing an
    /// older one without a hello if that makes room. False (and counted) if refused.
    pub(super) fn admit_inbound(&mut self, now: Instant, remote: SocketAddr) -> bool {
        let locked = self.lockouts.locked_until(remote.ip(), now).is_some();
        let settled_max = CONNS_LEN_MAX.min(self.config.conn_limit.saturating_mul(2).max(1));
        let settled = self.settled_conns();
        match admission::admit(
            self.pending_inbound(),
            remote.ip(),
            locked,
            settled,
            settled_max,
        ) {
            Admit::Accept => true,
            Admit::Evict(old) => {
                self.stats.drops_pending_inbound_full += 1;
                self.drop_conn(now, old, ConnError::Evicted, true);
                true
            }
            Admit::Refuse(r) => {
                let counter = match r {
                    Refusal::ConnLimit => &mut self.stats.drops_conn_limit,
                    Refusal::PendingFull => &mut self.stats.drops_pending_inbound_full,
                    Refusal::PendingPerAddr => &mut self.stats.drops_pending_inbound_per_addr,
                    Refusal::LockedOut => &mut self.stats.drops_locked_out,
                };
                *counter += 1;
                false
            }
        }
    }

    /// Inbound connections still in their handshake (they have their own budget).
    pub(super) fn pending_inbound(&self) -> impl Iterator<Item = Pending> + '_ {
        self.conns
            .iter()
            .filter(|(_, s)| {
                !s.conn.outbound() && s.conn.state() != ConnState::Established && s.punch.is_none()
            })
            .map(|(id, s)| Pending {
                id: *id,
                key: admission::addr_key(s.conn.remote_addr().ip()),
                hello_seen: s.conn.remote().is_some(),
            })
    }

    /// Connections that count against `conn_limit`: all but the pending inbound ones.
    pub(super) fn settled_conns(&self) -> usize {
        self.conns.len() - self.pending_inbound().count()
    }

    pub(super) fn dial_due(&mut self, now: Instant) {
        // Inbound connections still in their handshake never take a dial's room.
        let mut room = self.config.conn_limit.saturating_sub(self.settled_conns());
        // Nor do discovered targets' attempts take an explicit target's: any peer can
        // announce thousands of addresses nobody answers, whose dials would fill the room
        // for as long as each takes to fail. Each explicit target due stops one of them.
        let wanted = self.maker.explicit_due(now).min(DIALS_PER_TICK_MAX);
        if room < wanted {
            for victim in self.maker.discovered_attempts(wanted - room) {
                if self.conns.contains_key(&victim) {
                    self.stats.discovered_dials_preempted += 1;
                    self.drop_conn(now, victim, ConnError::Preempted, true);
                    room += 1;
                }
            }
        }
        let budget = room.min(DIALS_PER_TICK_MAX);
        if budget == 0 {
            return;
        }
        let mut next = self.next_conn_id;
        let by_peer = &self.by_peer;
        let due = self.maker.due(
            now,
            budget,
            || {
                let id = ConnId(next);
                next += 1;
                id
            },
            |p| by_peer.get(&p).copied(),
        );
        self.next_conn_id = next;
        for (id, addr) in due {
            let conn = Connection::new(id, true, addr, &self.settings, &mut *self.keys, now);
            self.conns.insert(id, Slot::new(conn, false));
            self.push_event(Event::OpenStream { conn: id, addr });
        }
    }

    pub(super) fn drain_conn_output(&mut self, now: Instant, id: ConnId) {
        loop {
            let Some(slot) = self.conns.get_mut(&id) else {
                return;
            };
            let Some(out) = slot.conn.poll_output() else {
                return;
            };
            match out {
                ConnOutput::Established(hello) => self.on_established(now, id, hello.name),
                ConnOutput::Gossip { channel, payload } => {
                    self.stats.gossip_msgs_received += 1;
                    if channel == CHANNEL_TOPOLOGY {
                        self.on_topology_gossip(now, id, &payload);
                    } else if channel == CHANNEL_IPAM {
                        self.on_ipam_gossip(now, id, &payload);
                    } else if channel == CHANNEL_DNS {
                        self.on_dns_gossip(now, id, &payload);
                    } else if channel == CHANNEL_POLICY {
                        self.on_policy_gossip(now, id, &payload);
                    } else if channel == CHANNEL_PUNCH {
                        self.on_punch_gossip(now, id, &payload);
                    } else if channel == CHANNEL_TOPOLOGY_SYNC {
                        self.on_topology_sync(now, id, &payload);
                    }
                    // Unknown channels (a newer peer's) are ignored.
                }
            }
        }
    }

    pub(super) fn on_established(&mut self, now: Instant, id: ConnId, peer: PeerName) {
        if let Some(&other) = self.by_peer.get(&peer) {
            // Two connections to one peer: both ends keep a stream over a punched one (a
            // peer we can dial needs no NAT mapping kept open), else the one dialed by the
            // greater name.
            let punched = |c: ConnId| self.conns.get(&c).is_some_and(|s| s.punch.is_some());
            let keep_new = if punched(id) != punched(other) {
                !punched(id)
            } else {
                self.dialer(id) > self.dialer(other)
                    || (self.dialer(id) == self.dialer(other) && id < other)
            };
            let loser = if keep_new { other } else { id };
            // Whatever target dialed the loser now knows its peer (and that it is connected).
            self.maker.established(loser, peer);
            self.drop_conn(now, loser, ConnError::Duplicate, true);
            if !keep_new {
                self.maker.established(other, peer);
                return;
            }
        }
        self.by_peer.insert(peer, id);
        self.maker.established(id, peer);
        self.push_event(Event::ConnectionUp { conn: id, peer });
        self.ipam.on_neighbour(peer);
        self.dns_on_neighbour(peer);
        self.policy.on_neighbour(peer);
        self.punch_on_established(now, id, peer);
        self.update_our_conns();
        // A new neighbour hears everything we know, and that we speak topology sync.
        self.news.entry(peer).or_default().add_everything();
        self.schedule_flush(now);
        let announce = anti_entropy::digest(&self.topology, true);
        self.send_sync(now, id, &[announce]);
    }

    /// The peer at the far end of `conn`, once its hello has arrived.
    pub(super) fn remote_name(&self, conn: ConnId) -> Option<PeerName> {
        self.conns.get(&conn)?.conn.remote().map(|r| r.name)
    }

    /// A gossip payload from `conn` did not parse: counted, and it costs the connection.
    pub(super) fn drop_malformed_gossip(&mut self, now: Instant, conn: ConnId, e: WireError) {
        self.stats.gossip_malformed += 1;
        self.drop_conn(now, conn, ConnError::Wire(e), true);
    }

    pub(super) fn dialer(&self, id: ConnId) -> PeerName {
        match self.conns.get(&id) {
            Some(s) if s.conn.outbound() => self.config.name,
            Some(s) => s.conn.remote().map_or(PeerName::default(), |r| r.name),
            None => PeerName::default(),
        }
    }

    /// Removes a connection, tells the driver to close the stream (if `close_stream`) and
    /// updates the maker, the topology and the neighbours.
    pub(super) fn drop_conn(
        &mut self,
        now: Instant,
        id: ConnId,
        error: ConnError,
        close_stream: bool,
    ) {
        let Some(mut slot) = self.conns.remove(&id) else {
            return;
        };
        // Before `close` below: a client that left while we waited for its confirm.
        let confirming = slot.conn.state() == ConnState::Confirming;
        if slot.punch.is_some() {
            // No stream to close: the last words go out once, unacknowledged.
            self.punch_last_words(now, &mut slot, error);
        } else if close_stream {
            if slot.opened && self.closing.len() < CONNS_LEN_MAX {
                // Tell the peer why, then close: the last bytes go out before CloseStream.
                slot.conn.close(error.close_reason());
                let mut last = Vec::new();
                let mut chunk = alloc::vec![0u8; TRANSMIT_LEN_MIN];
                while let Some(n) = slot.conn.poll_transmit(&mut chunk) {
                    if last.len() + n > CLOSING_BYTES_MAX {
                        break;
                    }
                    last.extend_from_slice(&chunk[..n]);
                }
                self.closing.push_back((id, last));
            } else {
                self.push_event(Event::CloseStream { conn: id });
            }
        }
        let addr = slot.conn.remote_addr();
        let peer = slot.conn.remote().map(|r| r.name);
        if error == ConnError::HelloTimeout {
            self.stats.pre_hello_timeouts += 1;
        }
        if !slot.conn.outbound()
            && slot.punch.is_none()
            && slot.conn.encrypted()
            && admission::is_password_failure(error, peer.is_some(), confirming)
            && let Some(until) = self.lockouts.record_failure(addr.ip(), now)
        {
            self.stats.password_lockouts += 1;
            let ip = admission::addr_key(addr.ip());
            self.push_event(Event::LockedOut { ip, until });
        }
        let was_current = peer.is_some_and(|p| self.by_peer.get(&p) == Some(&id));
        let duplicate = matches!(
            error,
            ConnError::Duplicate
                | ConnError::ClosedByPeer(crate::wire::frame::CLOSE_REASON_DUPLICATE)
        );
        if duplicate {
            // Not a failure: the peer is (or is about to be) connected another way.
            self.maker.disconnected(id, now, self.config.reconnect_max);
            if let Some(p) = peer
                && let Some(&other) = self.by_peer.get(&p)
                && other != id
            {
                self.maker.established(other, p);
            }
        } else {
            self.maker.failed(id, Some(error), now, &mut self.rng);
        }
        self.push_event(Event::ConnectionDown {
            conn: id,
            addr,
            error,
        });
        self.punch_on_dropped(now, &slot, peer, error, was_current);
        if let (true, Some(p)) = (was_current, peer) {
            self.by_peer.remove(&p);
            self.news.remove(&p);
            // Targets that reached this peer through the dropped connection try again soon.
            self.maker.disconnected(id, now, self.config.reconnect_base);
            self.update_our_conns();
            self.schedule_flush(now);
        }
    }
}
