//! Routes: unicast next hops and per-source broadcast trees over the topology.
//!
//! What it does: turns a [`Topology`] into an index (names in order, adjacency in CSR
//! form) holding only the edges *both* ends announce as established, runs one BFS from
//! ourselves for unicast next hops, and on demand one BFS per broadcast source whose
//! result (our children in that source's tree) is cached.
//!
//! Broadcast trees: every router runs the same BFS from the source (neighbours in name
//! order, first discovery wins), so with identical topologies all routers agree on every
//! peer's parent; a frame relayed by each peer to its children reaches every peer
//! reachable from the source exactly once.
//!
//! What it does not do: hold connections or forward frames; the router does that.
//!
//! Cost: [`Routes::compute`] is O(N + E log d); one broadcast tree is O(N + E) and stops as
//! soon as our own children are known.

use crate::peer::PeerName;
use crate::topology::Topology;
use alloc::collections::VecDeque;
use alloc::vec::Vec;

/// Marks "no index" (unreachable, or no parent) in the dense tables.
const NONE: u32 = u32::MAX;

/// Unicast and broadcast routing state computed from one topology.
#[derive(Clone, Debug)]
pub struct Routes {
    /// Index of ourselves in `names`.
    ourself: u32,
    /// Every peer in the topology, in name order; a peer's index is its position.
    names: Vec<PeerName>,
    /// CSR adjacency over symmetric established edges: neighbours of `i` are
    /// `adj[offsets[i]..offsets[i + 1]]`, sorted (that is, in name order). Built by
    /// [`Routes::compute`] for its BFS and then dropped (most of a router's routing
    /// memory at large N); rebuilt from the topology by the first broadcast tree asked
    /// for, and kept from then on.
    offsets: Vec<u32>,
    adj: Vec<u32>,
    /// Our own neighbours (indices, name order), kept when the CSR is dropped.
    our_neighbours: Vec<u32>,
    /// For each peer, the neighbour of ours on the shortest path to it, or [`NONE`].
    first_hop: Vec<u32>,
    /// The [`Topology::generation`] this was computed from.
    generation: u64,
    /// Per source index: where its cached children sit in `tree_arena` as
    /// (start, len), or `(NONE, 0)` if not computed yet. Empty until the first broadcast.
    /// An arena of `u32` rather than a map of `Vec`s keeps 1000 routers x 1000 sources lean.
    tree_slots: Vec<(u32, u32)>,
    /// Children (as indices) of every cached tree, back to back.
    tree_arena: Vec<u32>,
}

impl Routes {
    /// Computes routes from `topology`; call after the topology changed (the router does
    /// it lazily). Only edges that both ends announce as established are used; the BFS
    /// visits neighbours in name order, so equal topologies give equal routes.
    pub fn compute(topology: &Topology) -> Self {
        let names: Vec<PeerName> = topology.names().collect();
        let ourself = names
            .binary_search(&topology.our_name())
            .map_or(0, |i| i as u32);
        let (offsets, adj) = Self::csr(topology, &names);
        let mut routes = Self {
            ourself,
            names,
            offsets,
            adj,
            our_neighbours: Vec::new(),
            first_hop: Vec::new(),
            generation: topology.generation(),
            tree_slots: Vec::new(),
            tree_arena: Vec::new(),
        };
        routes.first_hop = routes.unicast_first_hops();
        if !routes.names.is_empty() {
            routes.our_neighbours = routes.neighbours(routes.ourself).to_vec();
        }
        routes.offsets = Vec::new();
        routes.adj = Vec::new();
        routes
    }

    /// The CSR adjacency (offsets, neighbours) of `topology` over `names` (its names in
    /// order): only edges both ends announce as established. O(N + E log N).
    fn csr(topology: &Topology, names: &[PeerName]) -> (Vec<u32>, Vec<u32>) {
        let index = |p: PeerName| names.binary_search(&p).ok().map(|i| i as u32);

        // Directed edges each owner announces, sorted and deduplicated per node.
        let mut dir_offsets = Vec::with_capacity(names.len() + 1);
        let mut dir = Vec::new();
        dir_offsets.push(0u32);
        for (i, entry) in topology.iter().enumerate() {
            let start = dir.len();
            for c in &entry.conns {
                if !c.established {
                    continue;
                }
                if let Some(j) = index(c.peer)
                    && j as usize != i
                {
                    dir.push(j);
                }
            }
            dir[start..].sort_unstable();
            let mut kept = start;
            for k in start..dir.len() {
                if kept == start || dir[kept - 1] != dir[k] {
                    dir[kept] = dir[k];
                    kept += 1;
                }
            }
            dir.truncate(kept);
            dir_offsets.push(dir.len() as u32);
        }
        let dir_of =
            |i: u32| &dir[dir_offsets[i as usize] as usize..dir_offsets[i as usize + 1] as usize];

        // Keep i -> j only if j announces i too.
        let mut offsets = Vec::with_capacity(names.len() + 1);
        let mut adj = Vec::with_capacity(dir.len());
        offsets.push(0u32);
        for i in 0..names.len() as u32 {
            for &j in dir_of(i) {
                if dir_of(j).binary_search(&i).is_ok() {
                    adj.push(j);
                }
            }
            offsets.push(adj.len() as u32);
        }
        (offsets, adj)
    }

    fn neighbours(&self, i: u32) -> &[u32] {
        let lo = self.offsets[i as usize] as usize;
        let hi = self.offsets[i as usize + 1] as usize;
        &self.adj[lo..hi]
    }

    fn index(&self, p: PeerName) -> Option<u32> {
        self.names.binary_search(&p).ok().map(|i| i as u32)
    }

    /// BFS from ourselves recording, for every reached peer, which neighbour of ours leads there.
    fn unicast_first_hops(&self) -> Vec<u32> {
        let mut first = alloc::vec![NONE; self.names.len()];
        if self.names.is_empty() {
            return first;
        }
        let mut queue = VecDeque::new();
        for &n in self.neighbours(self.ourself) {
            first[n as usize] = n;
            queue.push_back(n);
        }
        while let Some(u) = queue.pop_front() {
            let hop = first[u as usize];
            for &v in self.neighbours(u) {
                if v != self.ourself && first[v as usize] == NONE {
                    first[v as usize] = hop;
                    queue.push_back(v);
                }
            }
        }
        first
    }

    /// The neighbour to send to for `dest`; `None` for ourselves and unreachable peers.
    pub fn next_hop(&self, dest: PeerName) -> Option<PeerName> {
        let i = self.index(dest)?;
        match self.first_hop[i as usize] {
            NONE => None,
            h => Some(self.names[h as usize]),
        }
    }

    /// Every other peer we have a route to, in name order (ourselves excluded).
    pub fn reachable(&self) -> impl Iterator<Item = PeerName> + '_ {
        self.names
            .iter()
            .zip(&self.first_hop)
            .filter(|&(_, &h)| h != NONE)
            .map(|(&n, _)| n)
    }

    /// True if we have a route to `p` (false for ourselves, as in [`Routes::reachable`]).
    pub fn is_reachable(&self, p: PeerName) -> bool {
        self.next_hop(p).is_some()
    }

    /// Our neighbours over edges both ends announce, in name order.
    pub fn neighbour_names(&self) -> impl Iterator<Item = PeerName> + '_ {
        self.our_neighbours.iter().map(|&n| self.names[n as usize])
    }

    /// The [`Topology::generation`] these routes were computed from.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Our children in `source`'s broadcast tree: the peers to relay a broadcast from
    /// `source` to (for our own broadcasts, `source` is ourselves). Empty if `source` is
    /// unknown or cannot reach us. Cached per source; if `topology` changed since these
    /// routes were computed they are recomputed first (fresh cache).
    pub fn broadcast_children(&mut self, topology: &Topology, source: PeerName) -> Vec<PeerName> {
        if topology.generation() != self.generation || self.names.len() != topology.len() {
            *self = Self::compute(topology);
        }
        let Some(s) = self.index(source) else {
            return Vec::new();
        };
        if self.tree_slots.len() != self.names.len() {
            self.tree_slots = alloc::vec![(NONE, 0); self.names.len()];
        }
        if self.offsets.is_empty() {
            (self.offsets, self.adj) = Self::csr(topology, &self.names);
        }
        let (mut start, mut len) = self.tree_slots[s as usize];
        if start == NONE {
            start = self.tree_arena.len() as u32;
            self.tree_children(s);
            len = self.tree_arena.len() as u32 - start;
            self.tree_slots[s as usize] = (start, len);
        }
        self.tree_arena[start as usize..(start + len) as usize]
            .iter()
            .map(|&c| self.names[c as usize])
            .collect()
    }

    /// The deterministic BFS from `s`, appending our children to `tree_arena`; stops once
    /// we are expanded, since only then are all our children (the neighbours we discover
    /// first) known.
    fn tree_children(&mut self, s: u32) {
        let mut seen = alloc::vec![false; self.names.len()];
        let mut queue = VecDeque::new();
        seen[s as usize] = true;
        queue.push_back(s);
        while let Some(u) = queue.pop_front() {
            let mine = u == self.ourself;
            let lo = self.offsets[u as usize] as usize;
            let hi = self.offsets[u as usize + 1] as usize;
            for &v in &self.adj[lo..hi] {
                if !seen[v as usize] {
                    seen[v as usize] = true;
                    queue.push_back(v);
                    if mine {
                        self.tree_arena.push(v);
                    }
                }
            }
            if mine {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::PeerUid;
    use crate::rng::Rng;
    use crate::topology::tests::{conn, name};
    use crate::topology::{ConnInfo, PeerEntry};
    use alloc::collections::BTreeSet;
    use alloc::string::String;
    use alloc::vec;

    /// A topology seen by `me`, built from (owner, peer, established) announcements.
    fn topo(me: u64, n: u64, announced: &[(u64, u64, bool)]) -> Topology {
        let entries: Vec<PeerEntry> = (0..n)
            .map(|i| PeerEntry {
                name: name(i),
                uid: PeerUid(i),
                version: 1,
                nickname: String::new(),
                conns: announced
                    .iter()
                    .filter(|a| a.0 == i)
                    .map(|a| conn(a.1, a.2))
                    .collect(),
            })
            .collect();
        let mine = entries[me as usize].clone();
        let mut t = Topology::new(mine);
        t.merge(entries);
        t
    }

    fn both(a: u64, b: u64) -> [(u64, u64, bool); 2] {
        [(a, b, true), (b, a, true)]
    }

    #[test]
    fn only_edges_both_ends_announce_are_used() {
        // 0-1 symmetric; 1 -> 2 only one side; 1-3 symmetric but 3 says not established.
        let mut a = vec![];
        a.extend(both(0, 1));
        a.push((1, 2, true));
        a.push((1, 3, true));
        a.push((3, 1, false));
        let r = Routes::compute(&topo(0, 4, &a));
        assert_eq!(r.next_hop(name(1)), Some(name(1)));
        assert_eq!(r.next_hop(name(2)), None);
        assert_eq!(r.next_hop(name(3)), None);
        assert_eq!(r.next_hop(name(0)), None);
        assert_eq!(r.reachable().collect::<Vec<_>>(), vec![name(1)]);
        // Now 2 announces back: reachable through 1.
        a.push((2, 1, true));
        let r = Routes::compute(&topo(0, 4, &a));
        assert_eq!(r.next_hop(name(2)), Some(name(1)));
        assert!(r.is_reachable(name(2)));
        assert!(!r.is_reachable(name(3)));
        // Connections to peers without an entry are ignored.
        let r = Routes::compute(&topo(0, 2, &[(0, 1, true), (1, 0, true), (0, 9, true)]));
        assert_eq!(r.reachable().count(), 1);
    }

    #[test]
    fn next_hop_is_shortest_and_name_ordered() {
        // Square 0-1-3, 0-2-3, plus long tail 3-4.
        let mut a = vec![];
        for (x, y) in [(0, 1), (0, 2), (1, 3), (2, 3), (3, 4)] {
            a.extend(both(x, y));
        }
        let r = Routes::compute(&topo(0, 5, &a));
        assert_eq!(r.next_hop(name(3)), Some(name(1)));
        assert_eq!(r.next_hop(name(4)), Some(name(1)));
        assert_eq!(r.next_hop(name(2)), Some(name(2)));
        let r4 = Routes::compute(&topo(4, 5, &a));
        assert!(r4.reachable().all(|p| r4.next_hop(p) == Some(name(3))));
        assert_eq!(r4.neighbour_names().collect::<Vec<_>>(), vec![name(3)]);
    }

    #[test]
    fn broadcast_cache_is_refreshed_when_topology_changes() {
        let mut a = vec![];
        a.extend(both(0, 1));
        let mut t = topo(0, 3, &a);
        let mut r = Routes::compute(&t);
        assert_eq!(r.broadcast_children(&t, name(0)), vec![name(1)]);
        let mut mine = t.ourself().conns.clone();
        mine.push(conn(2, true));
        t.set_our_conns(mine);
        let two = PeerEntry {
            version: 2,
            conns: vec![ConnInfo {
                peer: name(0),
                addr: None,
                established: true,
                outbound: true,
            }],
            ..t.get(name(2)).unwrap().clone()
        };
        t.merge(vec![two]);
        assert_eq!(r.broadcast_children(&t, name(0)), vec![name(1), name(2)]);
        // Served from the cache, same answer; another source gets its own tree.
        assert_eq!(r.broadcast_children(&t, name(0)), vec![name(1), name(2)]);
        assert_eq!(r.broadcast_children(&t, name(1)), vec![name(2)]);
        assert_eq!(r.broadcast_children(&t, name(0)), vec![name(1), name(2)]);
        assert_eq!(r.next_hop(name(2)), Some(name(2)));
        assert_eq!(r.broadcast_children(&t, name(7)), vec![]);
    }

    /// Random graph: symmetric edges, plus one-sided and non-established noise.
    fn random_announcements(rng: &mut Rng, n: u64) -> Vec<(u64, u64, bool)> {
        let mut a = vec![];
        for x in 0..n {
            for y in x + 1..n {
                match rng.below(100) {
                    0..8 => a.extend(both(x, y)),
                    8..11 => a.push((x, y, true)),
                    11..13 => {
                        a.push((x, y, true));
                        a.push((y, x, false));
                    }
                    _ => {}
                }
            }
        }
        a
    }

    /// Reference reachability from `s` over symmetric established edges, by fixpoint.
    /// Announcements among `2 + rng.below(n_below)` peers, each one's view of the topology
    /// and the routes it computes from that view.
    fn random_world(rng: &mut Rng, n_below: u64) -> World {
        let n = 2 + rng.below(n_below);
        let a = random_announcements(rng, n);
        let views: Vec<Topology> = (0..n).map(|me| topo(me, n, &a)).collect();
        let routes = views.iter().map(Routes::compute).collect();
        (n, a, views, routes)
    }

    type World = (u64, Vec<(u64, u64, bool)>, Vec<Topology>, Vec<Routes>);

    fn reference_reach(n: u64, a: &[(u64, u64, bool)], s: u64) -> BTreeSet<u64> {
        let edges: BTreeSet<(u64, u64)> = a.iter().filter(|e| e.2).map(|e| (e.0, e.1)).collect();
        let mut reach = BTreeSet::from([s]);
        loop {
            let before = reach.len();
            for x in 0..n {
                for y in 0..n {
                    if reach.contains(&x) && edges.contains(&(x, y)) && edges.contains(&(y, x)) {
                        reach.insert(y);
                    }
                }
            }
            if reach.len() == before {
                return reach;
            }
        }
    }

    #[test]
    fn broadcast_reaches_every_reachable_peer_exactly_once() {
        let mut rng = Rng::from_seed(0x5eed);
        for round in 0..12 {
            let (n, a, views, mut routes) = random_world(&mut rng, 40);
            for s in 0..n {
                let mut received = vec![0u32; n as usize];
                let mut queue: VecDeque<u64> = VecDeque::from([s]);
                let mut sends = 0;
                while let Some(at) = queue.pop_front() {
                    let ch = routes[at as usize].broadcast_children(&views[at as usize], name(s));
                    for c in ch {
                        let c = c.as_u64();
                        // Relay only over a real link.
                        assert!(a.contains(&(at, c, true)) && a.contains(&(c, at, true)));
                        received[c as usize] += 1;
                        sends += 1;
                        assert!(sends <= n * n, "relay loop");
                        queue.push_back(c);
                    }
                }
                let reach = reference_reach(n, &a, s);
                for p in 0..n {
                    let want = u32::from(p != s && reach.contains(&p));
                    assert_eq!(received[p as usize], want, "round {round} src {s} peer {p}");
                }
                // Unicast agrees with reachability, from the source's view.
                let rs = &routes[s as usize];
                let got: BTreeSet<u64> = rs.reachable().map(|p| p.as_u64()).collect();
                let mut want = reach.clone();
                want.remove(&s);
                assert_eq!(got, want);
            }
        }
    }

    #[test]
    fn unicast_paths_are_loop_free_and_shortest() {
        let mut rng = Rng::from_seed(99);
        for _ in 0..8 {
            let (n, _, _, routes) = random_world(&mut rng, 30);
            for s in 0..n {
                for d in routes[s as usize].reachable() {
                    let mut at = s;
                    let mut hops = 0;
                    while at != d.as_u64() {
                        at = routes[at as usize]
                            .next_hop(d)
                            .expect("route breaks midway")
                            .as_u64();
                        hops += 1;
                        assert!(hops <= n, "loop");
                    }
                }
            }
        }
    }
}
