//! What the control plane (the router task) tells the datapath's pump thread: each peer
//! with the connection its datagram keys belong to, the routes, the fast-path peers.
//!
//! Nothing is dropped: updates wait in [`Pending`], where a newer one replaces an older
//! one of the same kind (per peer, routes, fast set), so it holds at most one entry per
//! peer the router has a connection to and never refuses one. The pump takes them all
//! at its next wake-up. A peer's entry is keyed on its connection: a new connection to
//! the same peer (a reconnect, or the other side of a duplicate-connection tie-break)
//! replaces the address and keys the pump has.
//!
//! A multi-queue sleeve has one pump (and one [`Pending`]) per queue: every word goes to
//! each, the keys as clones that share their counter and replay window.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use weft_core::conn::ConnId;
use weft_core::crypto::{DatagramOpener, DatagramSealer};
use weft_core::peer::PeerName;
use weft_core::router::ForwardingTable;

/// One peer's datagram keys (boxed: they are large and move between threads).
pub(super) type Keys = Box<(DatagramSealer, DatagramOpener)>;

/// The latest word on one peer.
pub(super) enum PeerUpdate {
    /// Datagrams go to `addr`, sealed with `keys` (of connection `conn`).
    Set {
        conn: ConnId,
        addr: SocketAddr,
        keys: Option<Keys>,
    },
    /// The peer has no connection any more.
    Remove,
}

/// Updates the pump has not taken yet.
#[derive(Default)]
pub(super) struct Pending {
    pub(super) peers: BTreeMap<PeerName, PeerUpdate>,
    pub(super) routes: Option<ForwardingTable>,
    pub(super) fast: Option<BTreeSet<PeerName>>,
    /// Punch datagrams the router wants sent from the sleeve's port, oldest first (at most
    /// [`PUNCH_OUT_LEN_MAX`]: they are retransmitted or periodic, so a drop only delays).
    pub(super) datagrams: Vec<(SocketAddr, Vec<u8>)>,
}

/// Most punch datagrams waiting for the pump.
pub(super) const PUNCH_OUT_LEN_MAX: usize = 1024;

impl Pending {
    /// Takes everything waiting in `shared` (the pump's side; holds the lock only to swap).
    pub(super) fn take(shared: &Mutex<Self>) -> Self {
        std::mem::take(&mut *shared.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// The control plane's side.
pub(super) struct Control {
    /// Per peer, the connection (and address) whose keys the pump has or is about to get.
    told: Mutex<BTreeMap<PeerName, (ConnId, SocketAddr)>>,
    /// One per queue's pump.
    pending: Vec<Arc<Mutex<Pending>>>,
}

impl Control {
    /// A control side and the shared updates for each of `queues` pumps (at least one).
    pub(super) fn new(queues: usize) -> (Self, Vec<Arc<Mutex<Pending>>>) {
        let pending: Vec<_> = (0..queues.max(1))
            .map(|_| Arc::new(Mutex::new(Pending::default())))
            .collect();
        let control = Self {
            told: Mutex::new(BTreeMap::new()),
            pending: pending.iter().map(Arc::clone).collect(),
        };
        (control, pending)
    }

    /// Applies `f` to each queue's pending updates in turn.
    fn each_pending(&self, mut f: impl FnMut(&mut Pending)) {
        for p in &self.pending {
            f(&mut p.lock().unwrap_or_else(PoisonError::into_inner));
        }
    }

    fn told(&self) -> std::sync::MutexGuard<'_, BTreeMap<PeerName, (ConnId, SocketAddr)>> {
        self.told.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The connection whose keys the pump has (or will have) for `name`.
    pub(super) fn conn_of(&self, name: PeerName) -> Option<ConnId> {
        self.told().get(&name).map(|(c, _)| *c)
    }

    /// `name` is reached over connection `conn`: datagrams to `addr`, sealed with `keys`.
    /// Replaces whatever the pump had for `name`.
    pub(super) fn set_peer(
        &self,
        name: PeerName,
        conn: ConnId,
        addr: SocketAddr,
        keys: Option<Keys>,
    ) {
        self.told().insert(name, (conn, addr));
        self.each_pending(|p| {
            let keys = keys.clone();
            p.peers.insert(name, PeerUpdate::Set { conn, addr, keys });
        });
    }

    /// Removes every peer not in `live`; true if there was one.
    pub(super) fn retain(&self, live: &[PeerName]) -> bool {
        let gone: Vec<PeerName> = {
            let mut told = self.told();
            let gone = told.keys().filter(|n| !live.contains(n)).copied().collect();
            told.retain(|n, _| live.contains(n));
            gone
        };
        self.each_pending(|p| {
            for n in &gone {
                p.peers.insert(*n, PeerUpdate::Remove);
            }
        });
        !gone.is_empty()
    }

    /// New routes (replacing any not taken yet).
    pub(super) fn set_routes(&self, table: ForwardingTable) {
        self.each_pending(|p| p.routes = Some(table.clone()));
    }

    /// Queues a punch datagram for the pump to send; false (dropped) if the queue is full.
    /// Queue 0's pump sends them all: the queues share the port, so the mapping is the same.
    pub(super) fn queue_datagram(&self, to: SocketAddr, bytes: &[u8]) -> bool {
        let Some(first) = self.pending.first() else {
            return false;
        };
        let mut p = first.lock().unwrap_or_else(PoisonError::into_inner);
        if p.datagrams.len() >= PUNCH_OUT_LEN_MAX {
            return false;
        }
        p.datagrams.push((to, bytes.to_vec()));
        true
    }

    /// The fast-path peers now (replacing any set not taken yet).
    pub(super) fn set_fast(&self, fast: BTreeSet<PeerName>) {
        self.each_pending(|p| p.fast = Some(fast.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(i: u64) -> PeerName {
        PeerName::from_u64(0x200 + i)
    }

    fn addr(i: u8) -> SocketAddr {
        SocketAddr::from(([198, 18, 0, i], 6783))
    }

    #[test]
    fn a_second_connection_replaces_the_first_ones_entry() {
        let (control, shared) = Control::new(1);
        let shared = &shared[0];
        let p = peer(1);
        control.set_peer(p, ConnId(1), addr(2), None);
        // The pump took the first connection's entry.
        assert!(matches!(
            Pending::take(shared).peers.get(&p),
            Some(PeerUpdate::Set {
                conn: ConnId(1),
                ..
            })
        ));
        assert_eq!(control.conn_of(p), Some(ConnId(1)));
        // A tie-break or reconnect: the router's connection to p is now #7.
        control.set_peer(p, ConnId(7), addr(3), None);
        assert_eq!(control.conn_of(p), Some(ConnId(7)));
        let taken = Pending::take(shared);
        match taken.peers.get(&p) {
            Some(PeerUpdate::Set { conn, addr: a, .. }) => {
                assert_eq!((*conn, *a), (ConnId(7), addr(3)));
            }
            _ => panic!("no update for the new connection"),
        }
    }

    #[test]
    fn updates_are_never_dropped_however_many_wait() {
        let (control, shared) = Control::new(1);
        let shared = &shared[0];
        let n = 5_000;
        let live: Vec<PeerName> = (0..n).map(peer).collect();
        for (i, p) in live.iter().enumerate() {
            control.set_peer(*p, ConnId(i as u64), addr(2), None);
        }
        // Newer words replace older ones: the last per peer wins.
        control.set_peer(live[0], ConnId(99_999), addr(9), None);
        control.retain(&live[1..]);
        let taken = Pending::take(shared);
        assert_eq!(taken.peers.len(), n as usize);
        assert!(matches!(
            taken.peers.get(&live[0]),
            Some(PeerUpdate::Remove)
        ));
        assert!(matches!(
            taken.peers.get(&live[1]),
            Some(PeerUpdate::Set {
                conn: ConnId(1),
                ..
            })
        ));
        assert!(Pending::take(shared).peers.is_empty());
    }

    #[test]
    fn every_queue_gets_every_word() {
        let (control, shared) = Control::new(3);
        control.set_peer(peer(1), ConnId(4), addr(2), None);
        control.set_peer(peer(2), ConnId(5), addr(3), None);
        control.retain(&[peer(2)]);
        control.set_fast(BTreeSet::from([peer(2)]));
        for q in &shared {
            let taken = Pending::take(q);
            assert!(matches!(
                taken.peers.get(&peer(1)),
                Some(PeerUpdate::Remove)
            ));
            assert!(matches!(
                taken.peers.get(&peer(2)),
                Some(PeerUpdate::Set {
                    conn: ConnId(5),
                    ..
                })
            ));
            assert_eq!(taken.fast, Some(BTreeSet::from([peer(2)])));
        }
    }
}
