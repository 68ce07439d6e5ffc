//! The seam between the virtual network and the state machine it drives.
//!
//! [`SimNode`] mirrors the sans-IO Router API (`handle_*` in, `poll_*` out) plus the
//! read-only views the invariant checker needs. The network ([`crate::world::World`]) is
//! written against this trait only, so it is tested with [`crate::toy::ToyNode`] and runs
//! the real router through [`crate::router_node`] unchanged.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use weft_core::peer::PeerName;
use weft_core::time::Instant;

/// A node-local stream (connection) id, as the node's `ConnId` numbers it.
pub type ConnId = u64;

/// The TCP-ish port every simulated router listens on.
pub const LISTEN_PORT: u16 = 6783;

/// First ephemeral port handed to an accepting node as the dialler's source port.
pub const EPHEMERAL_PORT_MIN: u16 = 32768;

/// Most nodes one world can address (`10.hi.lo.1`).
pub const NODES_MAX: usize = 1 << 16;

/// Base of the simulated peer names (a locally administered MAC prefix).
const NAME_BASE: u64 = 0x0200_0000_0000;

/// What the network tells a node (mirrors the router's `Command`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeCommand {
    /// The operator asks the node to keep a connection to this address.
    Connect(SocketAddr),
    /// A stream the node opened is connected.
    StreamOpened(ConnId),
    /// A stream the node opened could not be connected.
    StreamFailed(ConnId),
    /// The other end closed (or reset) the stream.
    StreamClosed(ConnId),
}

/// What a node asks of the network (the router events the network acts on).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeEvent {
    /// Dial `addr`; the node already numbered the stream `conn`.
    OpenStream {
        /// The node's id for the new stream.
        conn: ConnId,
        /// Where to dial.
        addr: SocketAddr,
    },
    /// Close the stream.
    CloseStream {
        /// The stream to close.
        conn: ConnId,
    },
    /// Anything the network does not act on (peer up/down, topology changed, ...).
    Other,
}

/// Where a transmit goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dest {
    /// Bytes on an open stream.
    Stream(ConnId),
    /// One UDP datagram.
    Datagram(SocketAddr),
}

/// Everything a node is built from; a restart builds a new node from a new spec with the
/// same index, name and address and a fresh seed.
#[derive(Clone, Copy, Debug)]
pub struct NodeSpec {
    /// Index in the world.
    pub index: usize,
    /// The node's peer name (stable across restarts).
    pub name: PeerName,
    /// The address peers dial.
    pub addr: SocketAddr,
    /// Seed for the node's own RNG (new on every incarnation).
    pub seed: u64,
    /// Virtual time of creation.
    pub now: Instant,
}

/// Message and byte counts a node keeps about its own gossip.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GossipStats {
    /// Gossip messages sent.
    pub msgs: u64,
    /// Gossip payload bytes sent.
    pub bytes: u64,
}

/// A sans-IO state machine the virtual network can drive.
pub trait SimNode {
    /// Size of the buffer handed to [`SimNode::poll_transmit`].
    const TRANSMIT_LEN_MAX: usize;

    /// The node's peer name.
    fn name(&self) -> PeerName;
    /// A peer dialled us; returns the id the node gives the stream.
    fn accept_stream(&mut self, now: Instant, remote: SocketAddr) -> ConnId;
    /// In-order bytes arrived on a stream (any chunking).
    fn handle_stream_bytes(&mut self, now: Instant, conn: ConnId, bytes: &[u8]);
    /// A datagram arrived.
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]);
    /// A command from the operator or the network.
    fn handle_command(&mut self, now: Instant, cmd: NodeCommand);
    /// The time the node asked for through [`SimNode::poll_timeout`] has come.
    fn handle_timeout(&mut self, now: Instant);
    /// Next bytes to send, written into `buf`.
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<(Dest, usize)>;
    /// Next event for the network.
    fn poll_event(&mut self) -> Option<NodeEvent>;
    /// When the node next wants [`SimNode::handle_timeout`].
    fn poll_timeout(&self) -> Option<Instant>;

    /// Number of peers in the node's topology (itself included).
    fn topology_len(&self) -> usize;
    /// Digest of the node's topology; equal topologies give equal digests.
    fn topology_digest(&self) -> u64;
    /// The peers in the node's topology, sorted.
    fn topology_peers(&self) -> Vec<PeerName>;
    /// The neighbour the node forwards unicast traffic for `dest` to.
    fn next_hop(&mut self, dest: PeerName) -> Option<PeerName>;
    /// The peers this node relays a broadcast from `source` to.
    fn broadcast_children(&mut self, source: PeerName) -> Vec<PeerName>;
    /// The node's own gossip counters, when it keeps them.
    fn gossip_stats(&self) -> Option<GossipStats> {
        None
    }
}

/// The peer name of node `index`.
pub fn name_of(index: usize) -> PeerName {
    PeerName::from_u64(NAME_BASE + index as u64)
}

/// The node index a peer name belongs to, if it is one of ours.
pub fn index_of_name(name: PeerName, n: usize) -> Option<usize> {
    let v = name.as_u64().checked_sub(NAME_BASE)?;
    usize::try_from(v).ok().filter(|i| *i < n)
}

/// The listen address of node `index`: `10.(i>>8).(i&255).1:6783`.
pub fn addr_of(index: usize) -> SocketAddr {
    debug_assert!(index < NODES_MAX);
    let ip = Ipv4Addr::new(10, (index >> 8) as u8, (index & 255) as u8, 1);
    SocketAddr::V4(SocketAddrV4::new(ip, LISTEN_PORT))
}

/// The node index owning the IP of `addr` (any port), if it is one of ours.
pub fn index_of_addr(addr: SocketAddr, n: usize) -> Option<usize> {
    let SocketAddr::V4(v4) = addr else {
        return None;
    };
    let o = v4.ip().octets();
    if o[0] != 10 || o[3] != 1 {
        return None;
    }
    let i = (usize::from(o[1]) << 8) | usize::from(o[2]);
    (i < n).then_some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_names_round_trip() {
        for i in [0usize, 1, 255, 256, 999, 65535] {
            assert_eq!(index_of_addr(addr_of(i), NODES_MAX), Some(i));
            assert_eq!(index_of_name(name_of(i), NODES_MAX), Some(i));
        }
        assert_eq!(addr_of(258).to_string(), "10.1.2.1:6783");
        assert_eq!(index_of_addr(addr_of(10), 10), None);
        assert_eq!(index_of_addr("10.0.1.2:6783".parse().unwrap(), 10), None);
        assert_ne!(name_of(1), name_of(2));
    }
}
