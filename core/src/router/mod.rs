//! The router: the one type a host or the simulator drives.
//!
//! It owns the connections, the connection maker, the topology and its gossip, and the
//! routes. Inputs arrive through `handle_*`, actions leave through `poll_*`; it never
//! blocks, never reads a clock and never touches a socket. Streams (TCP to peers) are
//! opened by the driver when asked with [`Event::OpenStream`]; the router then speaks its
//! handshake and framed protocol over the bytes the driver moves.

use crate::admission::{self, Admit, Lockouts, Pending, Refusal};
use crate::anti_entropy;
use crate::conn::{ConnError, ConnId, ConnOutput, ConnSettings, ConnState, Connection};
use crate::crypto::{BoxedKeyRng, CipherSuite, CipherSuites, DatagramOpener, DatagramSealer, Psk};
use crate::dns::Dns;
use crate::gossip::{self, News, NewsQueue};
use crate::ipam::{Ipam, IpamConfig, IpamEvent};
use crate::maker::{Backoff, Maker, Target, TargetKind};
use crate::peer::{PeerName, PeerUid};
use crate::policy::PolicyTable;
use crate::punch::PunchConfig;
use crate::punch::wire::CHANNEL_PUNCH;
use crate::rng::Rng;
use crate::routes::Routes;
use crate::time::{Duration, Instant};
use crate::topology::{ConnInfo, EntryInterner, PeerEntry, Topology};
use crate::wire::WireError;
use crate::wire::frame::{
    CHANNEL_DNS, CHANNEL_IPAM, CHANNEL_POLICY, CHANNEL_TOPOLOGY, CHANNEL_TOPOLOGY_SYNC,
};
use crate::wire::topology::parse_entries;
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;
use core::net::{IpAddr, SocketAddr};
use punching::{PunchLink, PunchSide};

// Where things are: the inputs, outputs and queries here; connections (admission, dials,
// their output, drops), topology gossip, peer GC, and the IPAM, DNS and policy gossip
// channels (the router's side of `crate::ipam`, `crate::dns` and `crate::policy`) in the
// files named so.
mod connections;
mod dns_channel;
mod ipam_channel;
mod peer_gc;
mod policy_channel;
mod punching;
mod topology_gossip;
// Topology (and policy) tests that inject forged gossip (need the private handlers).
#[cfg(test)]
mod test_net;
#[cfg(test)]
mod topology_tests;
// Topology anti-entropy at the router (digests, repair, old peers).
#[cfg(test)]
mod sync_tests;

/// Most events queued for the driver; further events are dropped and counted (never a
/// `CloseStream`, see `push_event`).
pub const EVENT_QUEUE_LEN_MAX: usize = 4096;
/// Most connections (established, or dialed by us) a router keeps at once; inbound ones
/// still in their handshake have their own budget ([`admission::PENDING_INBOUND_MAX`]).
pub const CONNS_LEN_MAX: usize = 1024;
/// Smallest buffer a driver may hand to [`Router::poll_transmit`].
pub const TRANSMIT_LEN_MIN: usize = 64 * 1024;
/// Outbound attempts started per timeout at most (bounds work per call).
pub const DIALS_PER_TICK_MAX: usize = 64;
/// Most bytes still flushed to a connection being closed (its queue tail and Close frame).
pub const CLOSING_BYTES_MAX: usize = 256 * 1024;

/// How a router is set up. [`Config::new`] gives defaults fit for a real deployment.
#[derive(Clone, Debug)]
pub struct Config {
    /// Our peer name.
    pub name: PeerName,
    /// A human name shown by status (host name by default).
    pub nickname: String,
    /// TCP port peers should dial to reach us (6783 by default).
    pub listen_port: u16,
    /// Shared secret (from a password or a key file); peers must have the same one (or none
    /// on both sides). With it every connection runs SPAKE2 and is sealed.
    pub psk: Option<Psk>,
    /// The ciphers offered for sleeve datagrams ([`ConnSettings::ciphers`]); the host
    /// adds AES-256-GCM where the CPU runs it fast. Default: ChaCha20-Poly1305 alone.
    pub ciphers: CipherSuites,
    /// Full-state gossip to a few random neighbours this often.
    pub gossip_interval: Duration,
    /// News is held this long to batch it before it is sent to neighbours.
    pub gossip_flush_delay: Duration,
    /// Heartbeat on each connection this often.
    pub heartbeat_interval: Duration,
    /// A connection with no traffic for this long is dead.
    pub heartbeat_timeout: Duration,
    /// A handshake not finished in this long fails.
    pub handshake_timeout: Duration,
    /// First retry delay after a failed attempt.
    pub reconnect_base: Duration,
    /// Longest retry delay.
    pub reconnect_max: Duration,
    /// A peer unreachable for this long is removed from the topology.
    pub peer_gc_grace: Duration,
    /// Most connections we dial or accept.
    pub conn_limit: usize,
    /// Whether to dial peers learned from gossip (Weave's discovery).
    pub discovery: bool,
    /// Address management: range, default subnet, `--ipalloc-init`, reclaim.
    pub ipam: IpamConfig,
    /// Wall clock (Unix time in ms) at [`Instant::ZERO`]: hosts set it, the simulator
    /// leaves 0 so its virtual clock stands for it. Our topology version starts at the
    /// wall clock and entries too far ahead of it are refused (see [`crate::topology`]).
    pub wall_clock_origin_ms: u64,
    /// An inbound stream that sends no hello in this long is closed.
    pub pre_hello_timeout: Duration,
    /// UDP hole punching between peers that share a neighbour ([`crate::punch`]); off
    /// by default.
    pub punch: PunchConfig,
}

impl Config {
    /// Defaults: 30 s gossip, 5 s heartbeats (dead after 20 s), backoff 1 s doubling to
    /// 60 s, dead peers removed after 60 s, 100 connections, discovery on.
    pub fn new(name: PeerName, listen_port: u16) -> Self {
        Self {
            name,
            nickname: String::new(),
            listen_port,
            psk: None,
            ciphers: CipherSuites::CHACHA20_POLY1305,
            gossip_interval: Duration::from_secs(30),
            gossip_flush_delay: Duration::from_millis(20),
            heartbeat_interval: Duration::from_secs(5),
            heartbeat_timeout: Duration::from_secs(20),
            handshake_timeout: Duration::from_secs(10),
            reconnect_base: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(60),
            peer_gc_grace: Duration::from_secs(60),
            conn_limit: 100,
            discovery: true,
            ipam: IpamConfig::default(),
            wall_clock_origin_ms: 0,
            pre_hello_timeout: Duration::from_millis(crate::conn::DEFAULT_PRE_HELLO_TIMEOUT_MS),
            punch: PunchConfig::off(),
        }
    }

    /// Our wall clock in ms at `now` (what topology versions are compared against).
    pub fn wall_clock_ms(&self, now: Instant) -> u64 {
        self.wall_clock_origin_ms.saturating_add(now.total_millis())
    }
}

/// Something the driver tells the router.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Add a target peer address (`weft connect`).
    Connect(SocketAddr),
    /// Remove a target and drop its connection (`weft forget`).
    Forget(SocketAddr),
    /// The stream asked for by [`Event::OpenStream`] is connected.
    StreamOpened(ConnId),
    /// The stream asked for could not be connected.
    StreamFailed(ConnId),
    /// The stream was closed or reset by the other side or the OS.
    StreamClosed(ConnId),
}

/// Where a [`Transmit`] goes. The router speaks over streams, and over punch datagrams
/// ([`crate::punch`]) when punching is on, sent from the sleeve's UDP port; sleeve datagrams are
/// the datapath's ([`crate::sleeve::Sleeve`]), which the host or simulator drives beside
/// the router.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// Append to this stream.
    Stream(ConnId),
    /// Send as one UDP datagram to this address, from the sleeve's port (a punch datagram).
    Datagram(SocketAddr),
}

/// Bytes the router wants sent: the first `len` bytes of the buffer given to `poll_transmit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub destination: Destination,
    /// How many bytes of the buffer.
    pub len: usize,
}

/// Something the router tells the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Open a stream (TCP) to `addr` and report back with `StreamOpened`/`StreamFailed`.
    OpenStream {
        /// The id to report back with.
        conn: ConnId,
        /// Whom to dial.
        addr: SocketAddr,
    },
    /// Close this stream once its queued bytes are written; no further reports needed.
    CloseStream {
        /// Which stream.
        conn: ConnId,
    },
    /// A connection finished its handshake.
    ConnectionUp {
        /// Which connection.
        conn: ConnId,
        /// The peer at the other end.
        peer: PeerName,
    },
    /// A connection failed or was closed by the router.
    ConnectionDown {
        /// Which connection.
        conn: ConnId,
        /// Its remote address.
        addr: SocketAddr,
        /// Why.
        error: ConnError,
    },
    /// A peer left the topology (unreachable for longer than the grace period).
    PeerRemoved(PeerName),
    /// An answer to an IPAM request, or an IPAM notice (see [`crate::ipam`]).
    Ipam(IpamEvent),
    /// An address failed the password check [`admission::PASSWORD_FAILURES_MAX`] times
    /// within the window: its new inbound connections are refused until `until`. Given
    /// once per lockout.
    LockedOut {
        /// The address (an IPv6 source stands for its /64: [`admission::addr_key`]).
        ip: IpAddr,
        /// When it is let in again.
        until: Instant,
    },
}

/// Counters for status and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouterStats {
    /// Gossip messages queued to neighbours.
    pub gossip_msgs_sent: u64,
    /// Gossip payload bytes queued to neighbours.
    pub gossip_bytes_sent: u64,
    /// Gossip messages received.
    pub gossip_msgs_received: u64,
    /// Stream bytes handed out by `poll_transmit`.
    pub stream_bytes_sent: u64,
    /// Stream bytes received.
    pub stream_bytes_received: u64,
    /// Gossip messages that did not parse (the connection was closed).
    pub gossip_malformed: u64,
    /// Gossip not sent because a connection's send queue was full.
    pub drops_queue_full: u64,
    /// Events dropped because the driver did not drain them.
    pub drops_events: u64,
    /// Connections refused because the limit was reached.
    pub drops_conn_limit: u64,
    /// Inbound connections without a hello closed (or, when all pending ones had sent
    /// theirs, refused) because the pending budget was full.
    pub drops_pending_inbound_full: u64,
    /// Inbound connections refused: their address had its share of pending ones.
    pub drops_pending_inbound_per_addr: u64,
    /// Inbound connections refused: their address is locked out.
    pub drops_locked_out: u64,
    /// Lockouts started (an address failed the password check too often).
    pub password_lockouts: u64,
    /// Inbound connections closed because no hello came within the pre-hello timeout.
    pub pre_hello_timeouts: u64,
    /// Explicit targets (`weft connect`) refused because their table was full.
    pub drops_explicit_targets_full: u64,
    /// Discovered targets ignored because their share of the table was full.
    pub drops_discovered_targets_full: u64,
    /// Discovered targets dropped after failing for too long.
    pub discovered_targets_expired: u64,
    /// Topology sync messages not acted on: summaries nobody asked for, digests that
    /// came again within half a gossip interval on one connection.
    pub sync_ignored: u64,
    /// Connections under way to discovered targets stopped to make room for a due
    /// explicit target (`weft connect`) when the connection limit was reached.
    pub discovered_dials_preempted: u64,
}

/// Routes as the datapath needs them; see [`Router::forwarding_table`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ForwardingTable {
    /// Next hop for each reachable peer.
    pub next_hop: BTreeMap<PeerName, PeerName>,
    /// For each broadcast source, the peers we relay its broadcasts to.
    pub children: BTreeMap<PeerName, Vec<PeerName>>,
}

/// One connection as status shows it.
#[derive(Clone, Debug)]
pub struct ConnStatus {
    /// Its id.
    pub id: ConnId,
    /// Remote address of the stream.
    pub addr: SocketAddr,
    /// Whether we dialed it.
    pub outbound: bool,
    /// Handshake progress.
    pub state: ConnState,
    /// The peer, once known.
    pub peer: Option<PeerName>,
    /// The peer's nickname, once known.
    pub nickname: Option<String>,
    /// Whether a password protects it.
    pub encrypted: bool,
    /// The AEAD chosen for its sleeve datagrams, once the peer's hello was accepted (used
    /// only when `encrypted`: without a password the sleeve is not sealed).
    pub cipher: Option<CipherSuite>,
    /// For a punched connection ([`crate::punch`]): the peer's mapped UDP address it runs to.
    pub punched: Option<SocketAddr>,
}

struct Slot {
    conn: Connection,
    /// The driver has connected the stream (always true for inbound and punched ones).
    opened: bool,
    /// Set for a punched connection: its bytes run over datagrams, not a stream.
    punch: Option<PunchLink>,
    /// Topology anti-entropy with the peer on this connection.
    sync: SyncState,
}

impl Slot {
    fn new(conn: Connection, opened: bool) -> Self {
        Self {
            conn,
            opened,
            punch: None,
            sync: SyncState::default(),
        }
    }
}

/// Per connection: whether the peer speaks the topology sync channel (it sent us a sync
/// message; peers built before it never do, and get the full periodic gossip instead),
/// until when its summaries are welcome (after we sent it a digest), and when we last
/// answered one of its digests with our summaries (at most once per half interval).
#[derive(Clone, Copy, Debug, Default)]
struct SyncState {
    speaks: bool,
    summaries_until: Option<Instant>,
    answered_at: Option<Instant>,
}

/// The weft router: connections, topology, gossip, routes.
pub struct Router {
    config: Config,
    settings: ConnSettings,
    /// Public randomness only: uid, jitter, gossip targets.
    rng: Rng,
    /// Secret randomness only: handshake scalars. Never feeds anything that goes out in
    /// the clear.
    keys: BoxedKeyRng,
    conns: BTreeMap<ConnId, Slot>,
    by_peer: BTreeMap<PeerName, ConnId>,
    next_conn_id: u64,
    maker: Maker,
    topology: Topology,
    routes: Routes,
    routes_dirty: bool,
    /// Per neighbour: names whose entries it should hear about.
    news: BTreeMap<PeerName, NewsQueue>,
    flush_at: Option<Instant>,
    next_gossip_at: Instant,
    next_gc_at: Instant,
    unreachable_since: BTreeMap<PeerName, Instant>,
    events: VecDeque<Event>,
    /// Last bytes (a Close frame) of connections being closed, sent before `CloseStream`.
    closing: VecDeque<(ConnId, Vec<u8>)>,
    transmit_cursor: u64,
    stats: RouterStats,
    lockouts: Lockouts,
    ipam: Ipam,
    dns: Dns,
    policy: PolicyTable,
    punch: PunchSide,
}

impl Router {
    /// A router with nobody connected yet. Two sources of randomness, never mixed: `seed`
    /// drives everything public (the peer uid, jitter, gossip targets), and `keys` — a
    /// cryptographically secure generator — supplies every secret (ephemeral X25519 and
    /// SPAKE2 scalars). Hosts pass the OS generator as `keys`; the simulator passes a
    /// seeded [`ChaChaKeyRng`](crate::crypto::ChaChaKeyRng) so its runs replay.
    pub fn new(config: Config, seed: u64, keys: BoxedKeyRng, now: Instant) -> Self {
        let mut rng = Rng::from_seed(seed);
        let uid = PeerUid(rng.next_u64());
        let settings = ConnSettings {
            name: config.name,
            uid,
            nickname: config.nickname.clone(),
            listen_port: config.listen_port,
            psk: config.psk.clone(),
            ciphers: config.ciphers,
            heartbeat_interval: config.heartbeat_interval,
            heartbeat_timeout: config.heartbeat_timeout,
            handshake_timeout: config.handshake_timeout,
            pre_hello_timeout: config.pre_hello_timeout,
        };
        let ourself = PeerEntry {
            name: config.name,
            uid,
            version: 1,
            nickname: config.nickname.clone(),
            conns: Vec::new(),
        };
        let topology = Topology::starting_at(ourself, config.wall_clock_ms(now));
        let routes = Routes::compute(&topology);
        let maker = Maker::new(Backoff {
            base: config.reconnect_base,
            max: config.reconnect_max,
        });
        let first_gossip = config.gossip_interval.total_micros();
        let next_gossip_at =
            now + Duration::from_micros(first_gossip / 2 + rng.below(first_gossip / 2 + 1));
        let ipam = Ipam::new(
            config.ipam,
            config.name,
            uid.0 ^ ipam_channel::IPAM_SEED_SALT,
            config.gossip_interval,
            now,
        );
        Self {
            ipam,
            dns: Dns::new(config.name, config.gossip_interval, now),
            policy: PolicyTable::new(config.name, config.gossip_interval, now)
                .with_wall_clock_origin_ms(config.wall_clock_origin_ms),
            settings,
            rng,
            keys,
            conns: BTreeMap::new(),
            by_peer: BTreeMap::new(),
            next_conn_id: 1,
            maker,
            topology,
            routes,
            routes_dirty: false,
            news: BTreeMap::new(),
            flush_at: None,
            next_gossip_at,
            next_gc_at: now + Duration::from_secs(1),
            unreachable_since: BTreeMap::new(),
            events: VecDeque::new(),
            closing: VecDeque::new(),
            transmit_cursor: 0,
            stats: RouterStats::default(),
            lockouts: Lockouts::new(),
            punch: PunchSide::new(now),
            config,
        }
    }

    /// Our peer name.
    pub fn name(&self) -> PeerName {
        self.config.name
    }

    /// This incarnation's uid.
    pub fn uid(&self) -> PeerUid {
        self.settings.uid
    }

    /// The configuration the router runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Call when the driver accepted a stream from `remote`; returns the id to use for it.
    pub fn accept_stream(&mut self, now: Instant, remote: SocketAddr) -> ConnId {
        let id = self.alloc_conn_id();
        if !self.admit_inbound(now, remote) {
            self.push_event(Event::CloseStream { conn: id });
            return id;
        }
        let conn = Connection::new(id, false, remote, &self.settings, &mut *self.keys, now);
        self.conns.insert(id, Slot::new(conn, true));
        id
    }

    /// Call with bytes read from stream `conn`, in order, in any chunking.
    pub fn handle_stream_bytes(&mut self, now: Instant, conn: ConnId, bytes: &[u8]) {
        self.stats.stream_bytes_received += bytes.len() as u64;
        let Some(slot) = self.conns.get_mut(&conn) else {
            return;
        };
        if let Err(e) = slot.conn.handle_bytes(now, bytes) {
            self.drop_conn(now, conn, e, true);
            return;
        }
        self.drain_conn_output(now, conn);
        self.maybe_flush(now);
    }

    /// Call with a command from the user or a stream report from the driver.
    pub fn handle_command(&mut self, now: Instant, cmd: Command) {
        match cmd {
            Command::Connect(addr) => {
                if !self.maker.add(addr, TargetKind::Explicit, now) {
                    self.stats.drops_explicit_targets_full += 1;
                }
                self.dial_due(now);
            }
            Command::Forget(addr) => {
                if let Some(c) = self.maker.forget(addr) {
                    let outbound = self.conns.get(&c).is_some_and(|s| s.conn.outbound());
                    if outbound {
                        self.drop_conn(now, c, ConnError::Forgotten, true);
                    }
                }
            }
            Command::StreamOpened(c) => {
                if let Some(slot) = self.conns.get_mut(&c) {
                    slot.opened = true;
                }
            }
            Command::StreamFailed(c) | Command::StreamClosed(c) => {
                if self.conns.contains_key(&c) {
                    let err = if matches!(cmd, Command::StreamFailed(_)) {
                        ConnError::ConnectFailed
                    } else {
                        ConnError::StreamClosed
                    };
                    self.drop_conn(now, c, err, false);
                }
            }
        }
        self.maybe_flush(now);
    }

    /// Call when the instant from [`Router::poll_timeout`] has passed (early calls are harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            let Some(slot) = self.conns.get_mut(&id) else {
                continue;
            };
            // Dials still under way count too: a dial that outlives the handshake
            // timeout fails here (and the driver is told to drop it).
            if let Err(e) = slot.conn.handle_timeout(now) {
                self.drop_conn(now, id, e, true);
            }
        }
        if now >= self.next_gossip_at {
            self.periodic_gossip(now);
            let iv = self.config.gossip_interval.total_micros();
            self.next_gossip_at =
                now + Duration::from_micros(iv - iv / 8 + self.rng.below(iv / 4 + 1));
        }
        if now >= self.next_gc_at {
            self.gc(now);
            self.next_gc_at = now + Duration::from_secs(1);
        }
        self.ipam_timeout(now);
        self.dns_timeout(now);
        self.policy_timeout(now);
        self.punch_timeout(now);
        self.dial_due(now);
        self.maybe_flush(now);
    }

    /// The next bytes to send, written into `buf` (at least [`TRANSMIT_LEN_MIN`] long).
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        self.maybe_flush(now);
        if let Some((id, mut bytes)) = self.closing.pop_front() {
            let len = bytes.len().min(buf.len());
            buf[..len].copy_from_slice(&bytes[..len]);
            bytes.drain(..len);
            if bytes.is_empty() {
                self.push_event(Event::CloseStream { conn: id });
            } else {
                self.closing.push_front((id, bytes));
            }
            self.stats.stream_bytes_sent += len as u64;
            return Some(Transmit {
                destination: Destination::Stream(id),
                len,
            });
        }
        // Round-robin over connections starting after the last one served.
        let start = self.transmit_cursor;
        let order = self
            .conns
            .range(ConnId(start + 1)..)
            .chain(self.conns.range(..=ConnId(start)))
            .filter(|(_, s)| s.opened && s.punch.is_none())
            .map(|(id, _)| *id)
            .collect::<Vec<_>>();
        for id in order {
            let slot = self.conns.get_mut(&id)?;
            if let Some(len) = slot.conn.poll_transmit(buf) {
                self.transmit_cursor = id.0;
                self.stats.stream_bytes_sent += len as u64;
                return Some(Transmit {
                    destination: Destination::Stream(id),
                    len,
                });
            }
        }
        self.poll_punch_transmit(now, buf)
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When the router next needs [`Router::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.next_gossip_at.min(self.next_gc_at);
        for slot in self.conns.values() {
            if let Some(c) = slot.conn.poll_timeout() {
                t = t.min(c);
            }
        }
        if let Some(f) = self.flush_at {
            t = t.min(f);
        }
        // Overdue targets only matter while there is room to dial them.
        if self.settled_conns() < self.config.conn_limit
            && let Some(d) = self.maker.next_due()
        {
            t = t.min(d);
        }
        t = t.min(self.ipam.poll_timeout());
        t = t.min(self.dns.poll_timeout());
        t = t.min(self.policy.poll_timeout());
        if let Some(p) = self.punch_poll_timeout() {
            t = t.min(p);
        }
        Some(t)
    }

    /// Shares topology entries through `interner` from now on (the simulator gives all
    /// its routers one, so one version of one peer's entry is stored once). Changes
    /// nothing the router computes; hosts have no use for it.
    pub fn set_entry_interner(&mut self, interner: alloc::sync::Arc<dyn EntryInterner>) {
        self.topology.set_interner(interner);
    }

    /// What we know of the network.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Routes over the current topology (recomputed here if the topology changed).
    pub fn routes(&mut self) -> &mut Routes {
        if self.routes_dirty {
            self.routes = Routes::compute(&self.topology);
            self.routes_dirty = false;
        }
        &mut self.routes
    }

    /// Next hop towards `dest`, if reachable.
    pub fn next_hop(&mut self, dest: PeerName) -> Option<PeerName> {
        self.routes().next_hop(dest)
    }

    /// Peers we relay a broadcast from `source` to.
    pub fn broadcast_children(&mut self, source: PeerName) -> Vec<PeerName> {
        self.routes();
        self.routes.broadcast_children(&self.topology, source)
    }

    /// Connections, in id order.
    pub fn connections(&self) -> impl Iterator<Item = ConnStatus> + '_ {
        self.conns.values().map(|s| ConnStatus {
            id: s.conn.id(),
            addr: s.conn.remote_addr(),
            outbound: s.conn.outbound(),
            state: s.conn.state(),
            peer: s.conn.remote().map(|r| r.name),
            nickname: s.conn.remote().map(|r| r.nickname.clone()),
            encrypted: s.conn.encrypted(),
            cipher: s.conn.remote().map(|r| r.cipher),
            punched: s.punch.as_ref().map(|l| l.remote),
        })
    }

    /// Targets and what the maker is doing about them.
    pub fn targets(&self) -> impl Iterator<Item = (&SocketAddr, &Target)> {
        self.maker.iter()
    }

    /// Counters.
    pub fn stats(&self) -> RouterStats {
        self.stats
    }

    /// The established connection to `peer`, if any.
    pub fn connection_to(&self, peer: PeerName) -> Option<ConnId> {
        self.by_peer.get(&peer).copied()
    }

    /// Takes the sleeve datagram keys of the current connection to `peer`, for the
    /// datapath (once per connection; call on [`Event::ConnectionUp`]).
    pub fn take_datagram_keys(
        &mut self,
        peer: PeerName,
    ) -> Option<(DatagramSealer, DatagramOpener)> {
        let id = self.by_peer.get(&peer)?;
        self.conns.get_mut(id)?.conn.take_datagram_keys()
    }

    /// Where `peer`'s sleeve datagrams go: the address of its connection with the port
    /// it listens on.
    pub fn peer_udp_addr(&self, peer: PeerName) -> Option<SocketAddr> {
        let slot = self.conns.get(self.by_peer.get(&peer)?)?;
        if let Some(link) = &slot.punch {
            // A punched link's address is the peer's mapped UDP address itself.
            return Some(link.remote);
        }
        let port = slot.conn.remote()?.listen_port;
        Some(SocketAddr::new(slot.conn.remote_addr().ip(), port))
    }

    /// Peers with an established connection, in name order.
    pub fn neighbours(&self) -> impl Iterator<Item = PeerName> + '_ {
        self.by_peer.keys().copied()
    }

    /// The datapath's view of the routes: next hop per reachable peer, and per broadcast
    /// source (every reachable peer and ourself) the peers we relay its broadcasts to.
    pub fn forwarding_table(&mut self) -> ForwardingTable {
        let me = self.config.name;
        self.routes();
        let reachable: Vec<PeerName> = self.routes.reachable().collect();
        let mut next_hop = BTreeMap::new();
        let mut children = BTreeMap::new();
        for p in reachable.iter().copied().chain(core::iter::once(me)) {
            if p != me
                && let Some(h) = self.routes.next_hop(p)
            {
                next_hop.insert(p, h);
            }
            let kids = self.routes.broadcast_children(&self.topology, p);
            if !kids.is_empty() {
                children.insert(p, kids);
            }
        }
        ForwardingTable { next_hop, children }
    }

    /// Changes whenever the topology does (to know when to refresh the forwarding table).
    pub fn topology_generation(&self) -> u64 {
        self.topology.generation()
    }

    // ---- internals ----

    /// Queues `e` for the driver; past [`EVENT_QUEUE_LEN_MAX`] it is dropped and counted,
    /// except a `CloseStream`: dropping one would leave the driver holding that stream (a
    /// socket) forever. Those stay bounded without the cap: each is pushed once, for a
    /// stream the driver opened and still holds.
    fn push_event(&mut self, e: Event) {
        if self.events.len() >= EVENT_QUEUE_LEN_MAX && !matches!(e, Event::CloseStream { .. }) {
            self.stats.drops_events += 1;
            return;
        }
        self.events.push_back(e);
    }
}
