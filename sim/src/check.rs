//! The invariants, checked against every live node's own view.
//!
//! * Topology: per expected component (nodes joined by connect targets over links that
//!   work), every member's topology holds exactly the component's live members, and all
//!   digests are equal.
//! * Unicast: following each node's own `next_hop` from every source reaches every
//!   destination in the component within N hops, each hop over a working link.
//! * Broadcast: relaying a frame from a source along each node's own
//!   `broadcast_children(source)` delivers it to every other member exactly once.
//!
//! What it does not do: decide when to check. [`crate::scenario`] checks cheaply at sample
//! points and fully once the digests have held still for a settle time.

use std::collections::VecDeque;

use weft_core::peer::PeerName;
use weft_core::rng::Rng;

use crate::node::{SimNode, index_of_name, name_of};
use crate::world::World;

/// Components up to this size have every source's broadcast tree checked.
pub const BROADCAST_ALL_SOURCES_MAX: usize = 128;
/// Sources sampled per component above that size.
pub const BROADCAST_SAMPLED_SOURCES: usize = 16;
/// Components up to this size have every unicast pair walked.
pub const UNICAST_ALL_SOURCES_MAX: usize = 2_000;
/// Sources sampled per component above that size.
pub const UNICAST_SAMPLED_SOURCES: usize = 64;

/// The groups of live nodes that should agree on one topology: connected components of
/// the connect-target graph restricted to links that currently work. Sorted.
pub fn expected_components<N: SimNode>(w: &World<N>) -> Vec<Vec<usize>> {
    let n = w.len();
    let mut parent: Vec<usize> = (0..n).collect();
    fn find(p: &mut [usize], mut x: usize) -> usize {
        while p[x] != x {
            p[x] = p[p[x]];
            x = p[x];
        }
        x
    }
    for i in 0..n {
        for &j in w.targets(i) {
            if i != j && w.reachable(i, j) {
                let (a, b) = (find(&mut parent, i), find(&mut parent, j));
                parent[a.max(b)] = a.min(b);
            }
        }
    }
    let mut comps: Vec<Vec<usize>> = vec![Vec::new(); n];
    for i in 0..n {
        if w.is_alive(i) {
            let r = find(&mut parent, i);
            comps[r].push(i);
        }
    }
    comps.retain(|c| !c.is_empty());
    comps
}

/// Cheap check, O(nodes): every member's topology has the component's size and the same
/// digest as the first member's.
pub fn topologies_agree<N: SimNode>(w: &World<N>, comps: &[Vec<usize>]) -> Result<(), String> {
    for c in comps {
        let first = w.node(c[0]).ok_or("dead node in component")?;
        let digest = first.topology_digest();
        for &i in c {
            let node = w.node(i).ok_or("dead node in component")?;
            if node.topology_len() != c.len() {
                return Err(format!(
                    "node {i} knows {} peers, its component has {} live members",
                    node.topology_len(),
                    c.len()
                ));
            }
            if node.topology_digest() != digest {
                return Err(format!(
                    "node {i} topology digest differs from node {}",
                    c[0]
                ));
            }
        }
    }
    Ok(())
}

/// Full check of all three invariants. `rng` picks sampled sources in big components.
pub fn check_all<N: SimNode>(
    w: &mut World<N>,
    comps: &[Vec<usize>],
    rng: &mut Rng,
) -> Result<(), String> {
    topologies_agree(w, comps)?;
    for c in comps {
        check_peer_sets(w, c)?;
        let uni = sample(c, UNICAST_ALL_SOURCES_MAX, UNICAST_SAMPLED_SOURCES, rng);
        for &src in &uni {
            check_unicast_from(w, c, src)?;
        }
        let bc = sample(c, BROADCAST_ALL_SOURCES_MAX, BROADCAST_SAMPLED_SOURCES, rng);
        for &src in &bc {
            check_broadcast_from(w, c, src)?;
        }
    }
    Ok(())
}

fn sample(c: &[usize], all_max: usize, k: usize, rng: &mut Rng) -> Vec<usize> {
    if c.len() <= all_max {
        return c.to_vec();
    }
    let mut v = c.to_vec();
    rng.shuffle(&mut v);
    v.truncate(k);
    v.sort_unstable();
    v
}

fn check_peer_sets<N: SimNode>(w: &World<N>, c: &[usize]) -> Result<(), String> {
    let want: Vec<PeerName> = c.iter().map(|&i| name_of(i)).collect();
    for &i in c {
        let have = w.node(i).ok_or("dead node in component")?.topology_peers();
        if have != want {
            let extra: Vec<String> = have
                .iter()
                .filter(|p| !want.contains(p))
                .map(|p| p.to_string())
                .collect();
            let missing: Vec<String> = want
                .iter()
                .filter(|p| !have.contains(p))
                .map(|p| p.to_string())
                .collect();
            return Err(format!(
                "node {i} topology peer set wrong: extra [{}] missing [{}]",
                extra.join(" "),
                missing.join(" ")
            ));
        }
    }
    Ok(())
}

/// Walks `next_hop` from `src` to every other member.
pub fn check_unicast_from<N: SimNode>(
    w: &mut World<N>,
    c: &[usize],
    src: usize,
) -> Result<(), String> {
    let n = w.len();
    for &dst in c {
        if dst == src {
            continue;
        }
        let dname = name_of(dst);
        let mut cur = src;
        let mut hops = 0usize;
        while cur != dst {
            let node = w.node_mut(cur).ok_or("route through a dead node")?;
            let Some(nh) = node.next_hop(dname) else {
                return Err(format!(
                    "unicast {src}->{dst}: node {cur} has no route to {dst}"
                ));
            };
            let Some(j) = index_of_name(nh, n) else {
                return Err(format!(
                    "unicast {src}->{dst}: node {cur} routes via unknown peer {nh}"
                ));
            };
            if j == cur || !w.reachable(cur, j) || c.binary_search(&j).is_err() {
                return Err(format!(
                    "unicast {src}->{dst}: node {cur} forwards to {j}, not a working link in the component"
                ));
            }
            hops += 1;
            if hops > c.len() {
                return Err(format!(
                    "unicast {src}->{dst}: loop (more than {} hops)",
                    c.len()
                ));
            }
            cur = j;
        }
    }
    Ok(())
}

/// Relays one broadcast from `src` along every node's own tree; each member exactly once.
pub fn check_broadcast_from<N: SimNode>(
    w: &mut World<N>,
    c: &[usize],
    src: usize,
) -> Result<(), String> {
    let n = w.len();
    let sname = name_of(src);
    let mut got = vec![0u32; n];
    got[src] = 1;
    let mut q = VecDeque::from([src]);
    let mut relays = 0usize;
    while let Some(x) = q.pop_front() {
        relays += 1;
        if relays > c.len() {
            return Err(format!("broadcast from {src}: more relays than members"));
        }
        let kids = w
            .node_mut(x)
            .ok_or("broadcast through a dead node")?
            .broadcast_children(sname);
        for k in kids {
            let Some(j) = index_of_name(k, n) else {
                return Err(format!(
                    "broadcast from {src}: node {x} relays to unknown peer {k}"
                ));
            };
            if !w.reachable(x, j) || c.binary_search(&j).is_err() {
                return Err(format!(
                    "broadcast from {src}: node {x} relays to {j}, not a working link in the component"
                ));
            }
            got[j] += 1;
            if got[j] > 1 {
                return Err(format!(
                    "broadcast from {src}: node {j} receives the frame twice (second from {x})"
                ));
            }
            q.push_back(j);
        }
    }
    if let Some(&m) = c.iter().find(|&&i| got[i] == 0) {
        return Err(format!(
            "broadcast from {src}: node {m} never receives the frame"
        ));
    }
    Ok(())
}
