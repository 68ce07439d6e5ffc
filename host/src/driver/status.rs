//! The router task's answers to the control API's status queries: the summary, peers,
//! connections (live, and targets whose last attempt failed) and targets, as the typed
//! replies of [`crate::messages`].

use super::*;

impl Driver {
    pub(super) fn query(&mut self, q: Query) {
        // A caller that stopped waiting is no error.
        let _ = match q {
            Query::Summary(tx) => tx.send(self.summary()).map_err(drop),
            Query::Peers(tx) => tx.send(self.peers()).map_err(drop),
            Query::Connections(tx) => tx.send(self.connections()).map_err(drop),
            Query::Targets(tx) => tx.send(self.targets()).map_err(drop),
            Query::Metrics(tx) => tx.send(self.metrics()).map_err(drop),
            Query::Dns(tx) => tx.send(self.dns_status()).map_err(drop),
            Query::IpamOwners(tx) => {
                let mut owners: Vec<String> = self
                    .ipam_allocations()
                    .into_iter()
                    .map(|(_, o)| o)
                    .collect();
                owners.sort();
                owners.dedup();
                tx.send(owners).map_err(drop)
            }
        };
    }

    pub(super) fn conn_counts(&self) -> BTreeMap<&'static str, u64> {
        let mut by_state: BTreeMap<&'static str, u64> = [
            ("handshaking", 0),
            ("confirming", 0),
            ("established", 0),
            ("closed", 0),
        ]
        .into();
        for c in self.router.connections() {
            *by_state.entry(state_name(c.state)).or_default() += 1;
        }
        by_state
    }

    pub(super) fn summary(&mut self) -> RouterSummary {
        let stats = self.router.stats();
        let topo = self.router.topology().stats();
        RouterSummary {
            name: Some(self.router.name().to_string()),
            nickname: Some(self.router.config().nickname.clone()),
            uid: Some(format!("{:016x}", self.router.uid().0)),
            version: Some(env!("CARGO_PKG_VERSION").to_owned()),
            port: Some(self.info.port),
            encrypted: self.info.encrypted,
            fastdp: self.info.fastdp,
            peer_filter: Some(self.peer_filter.status()),
            started_unix_s: self
                .started
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            peers: Some(self.router.topology().len() as u64),
            reachable_peers: Some(self.router.routes().reachable().count() as u64),
            connections: self
                .conn_counts()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            targets: Some(self.router.targets().count() as u64),
            gossip: GossipCounters {
                msgs_sent: stats.gossip_msgs_sent,
                bytes_sent: stats.gossip_bytes_sent,
                msgs_received: stats.gossip_msgs_received,
                malformed: stats.gossip_malformed,
            },
            topology_refused: TopologyRefused {
                over_limits: topo.rejected_limits,
                table_full: topo.dropped_full,
                too_many_new_peers_in_msg: topo.dropped_per_msg,
                version_too_far_ahead: topo.refused_version_ahead,
            },
            refused: Refused {
                conn_limit: stats.drops_conn_limit,
                pending_inbound_full: stats.drops_pending_inbound_full,
                pending_inbound_per_addr: stats.drops_pending_inbound_per_addr,
                locked_out: stats.drops_locked_out,
                password_lockouts: stats.password_lockouts,
                pre_hello_timeouts: stats.pre_hello_timeouts,
                explicit_targets_full: stats.drops_explicit_targets_full,
                discovered_targets_full: stats.drops_discovered_targets_full,
                discovered_targets_expired: stats.discovered_targets_expired,
                discovered_dials_preempted: stats.discovered_dials_preempted,
            },
            recent_failures: self
                .recent_failures
                .iter()
                .rev()
                .map(|f| RecentFailure {
                    address: Some(f.addr.to_string()),
                    outbound: f.outbound,
                    error: Some(f.error.clone()),
                    at_unix_s: f.at_unix_s,
                })
                .collect(),
        }
    }

    pub(super) fn peers(&mut self) -> Vec<PeerStatus> {
        let me = self.router.name();
        let entries: Vec<_> = self.router.topology().iter().cloned().collect();
        entries
            .into_iter()
            .map(|e| PeerStatus {
                name: Some(e.name.to_string()),
                nickname: Some(e.nickname.clone()),
                uid: Some(format!("{:016x}", e.uid.0)),
                version: e.version,
                ourself: e.name == me,
                reachable: e.name == me || self.router.routes().is_reachable(e.name),
                next_hop: self.router.next_hop(e.name).map(|p| p.to_string()),
                connections: e
                    .conns
                    .iter()
                    .map(|c| PeerConnection {
                        peer: Some(c.peer.to_string()),
                        address: c.addr.map(|a| a.to_string()),
                        established: c.established,
                        outbound: c.outbound,
                    })
                    .collect(),
            })
            .collect()
    }

    pub(super) fn connections(&self) -> Vec<ConnectionStatus> {
        let mut out: Vec<ConnectionStatus> = self
            .router
            .connections()
            .map(|c| {
                let current = c
                    .peer
                    .is_some_and(|p| self.router.connection_to(p) == Some(c.id))
                    && c.state == ConnState::Established;
                let path = current
                    .then(|| c.peer.and_then(|p| self.datapath.path_of(p)))
                    .flatten();
                let unix_s =
                    |t: Instant| (self.clock.unix_origin_micros() + t.total_micros()) / 1_000_000;
                ConnectionStatus {
                    id: Some(c.id.to_string()),
                    peer: c.peer.map(|p| p.to_string()),
                    nickname: c.nickname.clone(),
                    address: Some(c.addr.to_string()),
                    outbound: c.outbound,
                    state: Some(state_name(c.state).to_owned()),
                    encrypted: c.encrypted,
                    cipher: c
                        .cipher
                        .filter(|_| c.encrypted)
                        .map(|suite| suite.name().to_owned()),
                    mode: Some(self.mode(c.state, c.peer).to_string()),
                    error: None,
                    path: current.then(|| {
                        match c.punched {
                            Some(_) => "punched",
                            None => "direct",
                        }
                        .to_owned()
                    }),
                    via: None,
                    punch: None,
                    mapped_address: path.filter(|p| p.addr_learned).map(|p| p.addr.to_string()),
                    since_unix_s: path.map(|p| unix_s(p.addr_since)),
                }
            })
            .collect();
        // Peers we reach only through others.
        for (peer, (hop, since)) in &self.relayed {
            let nick = |p: &PeerName| {
                self.router
                    .topology()
                    .get(*p)
                    .map(|e| e.nickname.clone())
                    .unwrap_or_default()
            };
            let punch = self
                .router
                .punch_attempt(*peer)
                .map(|a| punch_word(&a.phase));
            let mut mode = format!("relayed via {hop}({})", nick(hop));
            if let Some(p) = &punch {
                mode = format!("{mode}, punch {p}");
            }
            out.push(ConnectionStatus {
                id: None,
                peer: Some(peer.to_string()),
                nickname: Some(nick(peer)),
                address: None,
                outbound: false,
                state: Some("relayed".to_owned()),
                encrypted: self.info.encrypted,
                cipher: None,
                punch,
                mode: Some(mode),
                error: None,
                path: Some("relayed".to_owned()),
                via: Some(hop.to_string()),
                mapped_address: None,
                since_unix_s: Some(*since),
            });
        }
        // Targets we are not connected to, with why the last attempt failed.
        for (addr, t) in self.router.targets() {
            let (TargetState::Waiting { .. }, Some(err)) = (t.state, t.last_error) else {
                continue;
            };
            let mut error = err.to_string();
            if let Some(e) = self.dial_errors.get(addr) {
                error = format!("{error}: {e}");
            }
            out.push(ConnectionStatus {
                id: None,
                peer: t.peer.map(|p| p.to_string()),
                nickname: None,
                address: Some(addr.to_string()),
                outbound: true,
                state: Some("failed".to_owned()),
                encrypted: self.info.encrypted,
                mode: Some("failed".to_owned()),
                error: Some(error),
                ..ConnectionStatus::default()
            });
        }
        out
    }

    pub(super) fn targets(&self) -> Vec<TargetStatus> {
        let now = self.now();
        self.router
            .targets()
            .map(|(addr, t)| {
                let (state, next_ms, conn) = match t.state {
                    TargetState::Waiting { next_attempt } => (
                        "waiting",
                        Some(next_attempt.saturating_since(now).total_millis()),
                        None,
                    ),
                    TargetState::Connecting(c) => ("connecting", None, Some(c.to_string())),
                    TargetState::Connected(c) => ("connected", None, Some(c.to_string())),
                };
                let mut last_error = t.last_error.map(|e| e.to_string());
                if let (Some(le), Some(d)) = (last_error.as_mut(), self.dial_errors.get(addr)) {
                    *le = format!("{le}: {d}");
                }
                TargetStatus {
                    address: Some(addr.to_string()),
                    kind: Some(
                        match t.kind {
                            TargetKind::Explicit => "explicit",
                            TargetKind::Discovered => "discovered",
                        }
                        .to_owned(),
                    ),
                    state: Some(state.to_owned()),
                    connection: conn,
                    next_attempt_in_ms: next_ms,
                    failures: u64::from(t.failures),
                    peer: t.peer.map(|p| p.to_string()),
                    last_error,
                }
            })
            .collect()
    }
}

pub(super) fn state_name(s: ConnState) -> &'static str {
    match s {
        ConnState::Handshaking => "handshaking",
        ConnState::Confirming => "confirming",
        ConnState::Established => "established",
        ConnState::Closed => "closed",
    }
}

/// What a relayed peer's punch attempt is doing, for status: `requested via PEER`,
/// `probing ADDR`, `failed: REASON` (or `up` for the moment it was just punched).
fn punch_word(p: &weft_core::punch::PunchPhase) -> String {
    use weft_core::punch::PunchPhase;
    match p {
        PunchPhase::Requested { via, .. } => format!("requested via {via}"),
        PunchPhase::Probing { addr, .. } => format!("probing {addr}"),
        PunchPhase::Punched { addr, .. } => format!("up at {addr}"),
        PunchPhase::Failed { reason, .. } => format!("failed: {reason}"),
    }
}
