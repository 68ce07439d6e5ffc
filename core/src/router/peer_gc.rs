//! The router's peer GC: expired lockouts and discovered targets, and peers unreachable
//! for longer than the grace period, removed with their routes, targets, records and pods.

use super::*;

impl Router {
    pub(super) fn gc(&mut self, now: Instant) {
        self.lockouts.expire(now);
        self.stats.discovered_targets_expired += self.maker.expire_discovered(now) as u64;
        let me = self.config.name;
        let routes = self.routes();
        let reachable: BTreeSet<PeerName> = routes.reachable().collect();
        let dead: Vec<PeerName> = self
            .topology
            .names()
            .filter(|p| *p != me && !reachable.contains(p))
            .collect();
        let removed = crate::topology::age_unreachable(
            &mut self.unreachable_since,
            dead,
            now,
            self.config.peer_gc_grace,
        );
        for p in removed {
            self.topology.remove(p);
            self.maker.drop_discovered_for(p);
            self.routes_dirty = true;
            self.push_event(Event::PeerRemoved(p));
            self.dns_peer_removed(now, p);
            self.policy.peer_removed(now, p);
            self.punch_peer_removed(p);
        }
    }
}
