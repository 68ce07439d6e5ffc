//! Keeping the datapaths in step with the router: the sleeve's peers, keys and routes,
//! the fast path's peers, the nftables peer filter, and each connection's datapath mode.

use super::*;

impl Driver {
    /// A connection's datapath mode for status and metrics.
    pub(super) fn mode(&self, state: ConnState, peer: Option<PeerName>) -> LinkMode {
        let (ConnState::Established, Some(p)) = (state, peer) else {
            return LinkMode::Down;
        };
        match self.fastdp.mode(p) {
            LinkMode::Sleeve(why) if self.datapath.path_up(p) != Some(true) => LinkMode::Sleeve(
                format!("{why}; no sleeve heartbeat on UDP {} yet", self.info.port),
            ),
            mode => mode,
        }
    }

    /// Keeps `filter`'s peer addresses in step with the connected peers.
    pub(crate) fn set_peer_filter(&mut self, filter: Arc<PeerFilter>) {
        self.peer_filter = filter;
    }

    /// Uses `fastdp` for the fast path (replacing "off").
    pub(crate) fn set_fastdp(&mut self, fastdp: Arc<FastDp>) {
        self.info.fastdp = fastdp.is_on();
        self.fastdp = fastdp;
    }

    /// Which reachable peers we reach only through another (no connection of ours), by
    /// which next hop, and since when: kept from one topology change to the next.
    fn note_relayed(&mut self) {
        let now_s = unix_now_s();
        let reachable: Vec<PeerName> = self.router.routes().reachable().collect();
        let mut relayed = BTreeMap::new();
        for p in reachable {
            if self.router.connection_to(p).is_some() {
                continue;
            }
            let Some(hop) = self.router.next_hop(p) else {
                continue;
            };
            let since = match self.relayed.get(&p) {
                Some(&(h, since)) if h == hop => since,
                _ => now_s,
            };
            relayed.insert(p, (hop, since));
        }
        self.relayed = relayed;
    }

    /// Keeps the datapath's peers and routes in step with the router.
    pub(super) fn sync_datapath(&mut self) {
        let live: Vec<_> = self.router.neighbours().collect();
        let addrs: BTreeMap<_, _> = live
            .iter()
            .filter_map(|p| Some((*p, sleeve::canonical(self.router.peer_udp_addr(*p)?).ip())))
            .collect();
        // Peers we punch to are let in too: their probes come before any connection.
        let probing = self
            .router
            .punch_attempts()
            .filter_map(|(_, a)| match a.phase {
                weft_core::punch::PunchPhase::Probing { addr, .. } => {
                    Some(sleeve::canonical(addr).ip())
                }
                _ => None,
            });
        self.peer_filter
            .set_peers(addrs.values().copied().chain(probing).collect());
        self.fastdp.set_peers(addrs);
        self.datapath.retain_peers(&live);
        for p in &live {
            // Keyed on the connection: after a tie-break or a reconnect the new
            // connection's keys replace the old one's in the datapath.
            if let Some(conn) = self.router.connection_to(*p)
                && self.datapath.peer_conn(*p) != Some(conn)
                && let Some(addr) = self.router.peer_udp_addr(*p)
            {
                let keys = self.router.take_datagram_keys(*p);
                let keys = if self.info.encrypted { keys } else { None };
                self.datapath
                    .set_peer(*p, conn, sleeve::canonical(addr), keys);
                self.routes_generation = None;
            }
        }
        let generation = self.router.topology_generation();
        if self.routes_generation != Some(generation) {
            self.routes_generation = Some(generation);
            self.datapath.set_routes(self.router.forwarding_table());
            self.note_relayed();
        }
    }
}
