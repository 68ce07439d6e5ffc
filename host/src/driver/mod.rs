//! The router driver: one tokio task owns the `weft_core::router::Router` and moves bytes
//! between it and the world — TCP streams to peers, the clock and the control API — and
//! keeps the datapath's peers, keys and routes in step with it.
//!
//! Everything reaches the router through one bounded channel of [`Input`]s; the router's
//! outputs leave through per-stream writer queues (bounded: a peer that does not read is
//! disconnected, never buffered without limit), dial tasks and the datapath. The task
//! never awaits anything but its inbox and its timer, so a slow peer cannot stall it.

use crate::clock::HostClock;
use crate::fastdp::{FastDp, LinkMode};
use crate::firewall::PeerFilter;
use crate::messages::{
    ApiError, ConnectionStatus, DnsStatus, GossipCounters, PeerConnection, PeerStatus,
    RecentFailure, Refused, RouterSummary, TargetStatus, TopologyRefused,
};
use crate::sleeve::{self, Datapath};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration as StdDuration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use weft_core::admission;
use weft_core::conn::{ConnError, ConnId, ConnState};
use weft_core::maker::{TargetKind, TargetState};
use weft_core::router::{Command, Destination, Event, Router, TRANSMIT_LEN_MIN};
use weft_core::time::Instant;

// The driver's DNS and IPAM parts (the API's requests, answered from the router) and its
// part of `/metrics`.
mod dns;
mod ipam;
mod metrics;
pub(crate) use dns::DnsRequest;
pub(crate) use ipam::IpamRequest;

/// Capacity of the driver's inbox (stream bytes, accepts, API queries).
pub(crate) const INBOX_LEN_MAX: usize = 1024;
/// Chunks queued to one stream's writer; a peer that lets more pile up is disconnected.
pub(crate) const WRITE_QUEUE_CHUNKS_MAX: usize = 256;
/// Bytes read from a stream at once.
pub(crate) const READ_CHUNK_LEN: usize = 64 * 1024;
/// How long a dial may take.
pub(crate) const CONNECT_TIMEOUT_MS: u64 = 5_000;
/// Transmits handled per wake-up before the driver looks at its inbox again.
pub(crate) const TRANSMITS_PER_TURN_MAX: usize = 4096;
/// Failed connections remembered for status.
pub(crate) const RECENT_FAILURES_LEN_MAX: usize = 32;
/// Dial errors remembered for status (per address).
pub(crate) const DIAL_ERRORS_LEN_MAX: usize = 1024;

/// Something for the router task.
pub(crate) enum Input {
    /// The listener accepted a stream.
    Accepted(TcpStream, SocketAddr),
    /// A dial finished.
    Dialed {
        conn: ConnId,
        addr: SocketAddr,
        result: std::io::Result<TcpStream>,
    },
    /// Bytes read from a stream.
    Bytes { conn: ConnId, bytes: Vec<u8> },
    /// A stream ended (EOF or error).
    Closed { conn: ConnId, error: Option<String> },
    /// Add targets.
    Connect(Vec<SocketAddr>),
    /// Remove targets.
    Forget(Vec<SocketAddr>),
    /// A status query from the control API.
    Query(Query),
    /// A naming command (`dns-add`, `dns-remove`, `dns-lookup`, attach/detach names).
    Dns(DnsRequest),
    /// An address command (attach/detach addresses, rmpeer, status ipam).
    Ipam(IpamRequest),
    /// Nothing: wakes the task so it finishes work it left for later.
    Wake,
    /// Stop the router.
    Stop,
}

/// Where the router task sends the typed answer to a command that can fail.
pub(crate) type Answer<T> = oneshot::Sender<Result<T, ApiError>>;

/// What the control API can ask the router task; each carries where its answer goes.
pub(crate) enum Query {
    /// The router's part of `GET /status`.
    Summary(oneshot::Sender<RouterSummary>),
    /// `GET /status/peers`.
    Peers(oneshot::Sender<Vec<PeerStatus>>),
    /// `GET /status/connections`.
    Connections(oneshot::Sender<Vec<ConnectionStatus>>),
    /// `GET /status/targets`.
    Targets(oneshot::Sender<Vec<TargetStatus>>),
    /// The router's part of `GET /metrics` (Prometheus text).
    Metrics(oneshot::Sender<String>),
    /// `GET /status/dns`.
    Dns(oneshot::Sender<DnsStatus>),
}

/// Sends the router task the input `make` builds around a fresh answer channel, and
/// waits for the answer. [`ApiError::Stopping`] when the task is gone.
pub(crate) async fn ask<T>(
    inbox: &mpsc::Sender<Input>,
    make: impl FnOnce(oneshot::Sender<T>) -> Input,
) -> Result<T, ApiError> {
    let (tx, rx) = oneshot::channel();
    inbox.send(make(tx)).await.map_err(|_| ApiError::Stopping)?;
    rx.await.map_err(|_| ApiError::Stopping)
}

struct Stream {
    writer: mpsc::Sender<Vec<u8>>,
    reader: JoinHandle<()>,
    addr: SocketAddr,
}

struct Failure {
    addr: SocketAddr,
    outbound: bool,
    error: String,
    at_unix_s: u64,
}

/// Static facts the driver reports in status.
#[derive(Clone, Debug)]
pub(crate) struct Info {
    pub(crate) port: u16,
    pub(crate) encrypted: bool,
    pub(crate) fastdp: bool,
}

/// The router task's state.
pub(crate) struct Driver {
    router: Router,
    clock: HostClock,
    inbox_tx: mpsc::Sender<Input>,
    streams: HashMap<ConnId, Stream>,
    pending_dials: HashSet<ConnId>,
    dial_errors: HashMap<SocketAddr, String>,
    recent_failures: VecDeque<Failure>,
    datapath: Arc<Datapath>,
    info: Info,
    routes_generation: Option<u64>,
    fastdp: Arc<FastDp>,
    peer_filter: Arc<PeerFilter>,
    drops_write_queue_full: u64,
    drops_no_stream: u64,
    connections_accepted: u64,
    started: SystemTime,
    dns: dns::DnsState,
    ipam: ipam::IpamState,
}

fn unix_now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Driver {
    /// A driver for `router`, on the host's clock (the router's `Instant::ZERO` is its start).
    pub(crate) fn new(
        router: Router,
        clock: HostClock,
        inbox_tx: mpsc::Sender<Input>,
        datapath: Arc<Datapath>,
        info: Info,
    ) -> Self {
        Self {
            router,
            clock,
            inbox_tx,
            streams: HashMap::new(),
            pending_dials: HashSet::new(),
            dial_errors: HashMap::new(),
            recent_failures: VecDeque::new(),
            datapath,
            info,
            routes_generation: None,
            fastdp: Arc::new(FastDp::Off("fast path not set up".to_owned())),
            peer_filter: Arc::new(PeerFilter::off("not set up")),
            drops_write_queue_full: 0,
            drops_no_stream: 0,
            connections_accepted: 0,
            started: SystemTime::now(),
            dns: dns::DnsState::default(),
            ipam: ipam::IpamState::default(),
        }
    }

    fn now(&self) -> Instant {
        self.clock.now()
    }

    fn deadline(&self) -> Option<tokio::time::Instant> {
        let t = self.router.poll_timeout()?;
        let at = self.clock.to_std(t);
        Some(tokio::time::Instant::from_std(at))
    }

    /// Runs until `Input::Stop` (or every sender is gone).
    pub(crate) async fn run(mut self, mut inbox: mpsc::Receiver<Input>) {
        self.drive();
        loop {
            let deadline = self.deadline();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                input = inbox.recv() => {
                    let Some(input) = input else { break };
                    if matches!(input, Input::Stop) {
                        break;
                    }
                    self.handle(input);
                }
                () = sleep => {
                    let now = self.now();
                    self.router.handle_timeout(now);
                }
            }
            self.drive();
        }
        tracing::info!("router stopping");
        for (_, s) in self.streams.drain() {
            s.reader.abort();
        }
    }

    fn handle(&mut self, input: Input) {
        let now = self.now();
        match input {
            Input::Accepted(stream, addr) => {
                let addr = sleeve::canonical(addr);
                self.connections_accepted += 1;
                let conn = self.router.accept_stream(now, addr);
                self.start_stream(conn, addr, stream);
            }
            Input::Dialed { conn, addr, result } => {
                if !self.pending_dials.remove(&conn) {
                    return; // The router gave up on it meanwhile; dropping closes it.
                }
                match result {
                    Ok(stream) => {
                        self.dial_errors.remove(&addr);
                        self.start_stream(conn, addr, stream);
                        self.router.handle_command(now, Command::StreamOpened(conn));
                    }
                    Err(e) => {
                        if self.dial_errors.len() >= DIAL_ERRORS_LEN_MAX {
                            self.dial_errors.clear();
                        }
                        self.dial_errors.insert(addr, e.to_string());
                        self.router.handle_command(now, Command::StreamFailed(conn));
                    }
                }
            }
            Input::Bytes { conn, bytes } => self.router.handle_stream_bytes(now, conn, &bytes),
            Input::Closed { conn, error } => {
                if self.streams.remove(&conn).is_some() {
                    if let Some(e) = error {
                        tracing::debug!("{conn}: stream error: {e}");
                    }
                    self.router.handle_command(now, Command::StreamClosed(conn));
                }
            }
            Input::Connect(addrs) => {
                for a in addrs {
                    self.router.handle_command(now, Command::Connect(a));
                }
            }
            Input::Forget(addrs) => {
                for a in addrs {
                    self.router.handle_command(now, Command::Forget(a));
                }
            }
            Input::Query(q) => self.query(q),
            Input::Dns(req) => self.dns_request(req),
            Input::Ipam(req) => {
                self.ipam_request(req);
                self.ipam_persist();
            }
            Input::Wake | Input::Stop => {}
        }
    }

    /// A connection's datapath mode for status and metrics.
    fn mode(&self, state: ConnState, peer: Option<weft_core::peer::PeerName>) -> LinkMode {
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

    /// Keeps the datapath's peers and routes in step with the router.
    fn sync_datapath(&mut self) {
        let live: Vec<_> = self.router.neighbours().collect();
        let addrs: BTreeMap<_, _> = live
            .iter()
            .filter_map(|p| Some((*p, sleeve::canonical(self.router.peer_udp_addr(*p)?).ip())))
            .collect();
        self.peer_filter
            .set_peers(addrs.values().copied().collect());
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
        }
    }

    /// Moves everything the router wants done: transmits, then events.
    fn drive(&mut self) {
        self.drive_router();
        self.sync_datapath();
        self.sync_dns();
    }

    fn drive_router(&mut self) {
        let mut buf = vec![0u8; TRANSMIT_LEN_MIN];
        for _ in 0..TRANSMITS_PER_TURN_MAX {
            let now = self.now();
            let mut progressed = false;
            // IPAM state others may learn of is on disk before anything leaves.
            self.ipam_persist();
            if let Some(t) = self.router.poll_transmit(now, &mut buf) {
                progressed = true;
                let Destination::Stream(conn) = t.destination;
                self.write_stream(conn, &buf[..t.len]);
            }
            while let Some(ev) = self.router.poll_event() {
                progressed = true;
                self.on_event(ev);
            }
            if !progressed {
                return;
            }
        }
        // More work is left: come back to it after the inbox had a turn.
        let tx = self.inbox_tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(Input::Wake).await;
        });
    }

    fn write_stream(&mut self, conn: ConnId, bytes: &[u8]) {
        let Some(s) = self.streams.get(&conn) else {
            self.drops_no_stream += 1;
            return;
        };
        match s.writer.try_send(bytes.to_vec()) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                // A stream cannot lose bytes: a peer this far behind is disconnected.
                self.drops_write_queue_full += 1;
                tracing::warn!(
                    "{conn} to {}: peer is not reading (write queue full); disconnecting",
                    s.addr
                );
                if let Some(s) = self.streams.remove(&conn) {
                    s.reader.abort();
                }
                let now = self.now();
                self.router.handle_command(now, Command::StreamClosed(conn));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.streams.remove(&conn);
                let now = self.now();
                self.router.handle_command(now, Command::StreamClosed(conn));
            }
        }
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::OpenStream { conn, addr } => {
                self.pending_dials.insert(conn);
                let tx = self.inbox_tx.clone();
                tokio::spawn(async move {
                    let result = match tokio::time::timeout(
                        StdDuration::from_millis(CONNECT_TIMEOUT_MS),
                        TcpStream::connect(addr),
                    )
                    .await
                    {
                        Ok(r) => r,
                        Err(_) => Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("no answer within {} s", CONNECT_TIMEOUT_MS / 1000),
                        )),
                    };
                    let _ = tx.send(Input::Dialed { conn, addr, result }).await;
                });
            }
            Event::CloseStream { conn } => {
                self.pending_dials.remove(&conn);
                if let Some(s) = self.streams.remove(&conn) {
                    // Dropping the writer's sender lets it flush what is queued, then shut down.
                    s.reader.abort();
                }
            }
            Event::ConnectionUp { conn, peer } => {
                let addr = self
                    .streams
                    .get(&conn)
                    .map(|s| s.addr.to_string())
                    .unwrap_or_default();
                tracing::info!("connection to {peer} at {addr} established ({conn})");
            }
            Event::ConnectionDown { conn, addr, error } => {
                let mut reason = error.to_string();
                if let Some(e) = self.dial_errors.get(&addr) {
                    reason = format!("{reason}: {e}");
                }
                let target = self.router.targets().find(|(a, _)| **a == addr);
                let discovered = target.is_some_and(|(_, t)| t.kind == TargetKind::Discovered);
                let outbound = self.pending_dials.contains(&conn) || target.is_some();
                let dir = if outbound { "to" } else { "from" };
                if discovered
                    || matches!(
                        error,
                        ConnError::HelloTimeout | ConnError::Evicted | ConnError::Preempted
                    )
                {
                    // Streams that never said hello (scanners, floods), dials to discovered
                    // addresses (a peer may announce thousands nobody answers on) and dials
                    // stopped for a `weft connect` target: counted in the router's stats
                    // and shown in `weft status targets`; one line each would flood the log.
                    tracing::debug!("connection {dir} {addr} down: {reason}");
                    return;
                }
                tracing::warn!("connection {dir} {addr} down: {reason}");
                if self.recent_failures.len() >= RECENT_FAILURES_LEN_MAX {
                    self.recent_failures.pop_front();
                }
                self.recent_failures.push_back(Failure {
                    addr,
                    outbound,
                    error: reason,
                    at_unix_s: unix_now_s(),
                });
            }
            Event::Ipam(e) => self.ipam_on_event(e),
            Event::PeerRemoved(p) => {
                tracing::info!("peer {p} left the network (unreachable too long)")
            }
            Event::LockedOut { ip, until } => {
                let secs = until
                    .saturating_since(self.now())
                    .total_millis()
                    .div_ceil(1000);
                tracing::warn!(
                    "{ip}: {} failed password checks within {} s; refusing its connections for {secs} s",
                    admission::PASSWORD_FAILURES_MAX,
                    admission::PASSWORD_FAILURE_WINDOW_MS / 1000,
                );
            }
        }
    }

    fn start_stream(&mut self, conn: ConnId, addr: SocketAddr, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let (mut rd, mut wr) = stream.into_split();
        let (wtx, mut wrx) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE_CHUNKS_MAX);
        let inbox = self.inbox_tx.clone();
        tokio::spawn(async move {
            while let Some(chunk) = wrx.recv().await {
                if wr.write_all(&chunk).await.is_err() {
                    return; // The reader sees the reset and reports it.
                }
            }
            let _ = wr.shutdown().await;
        });
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; READ_CHUNK_LEN];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) => {
                        let _ = inbox.send(Input::Closed { conn, error: None }).await;
                        return;
                    }
                    Ok(n) => {
                        let bytes = buf[..n].to_vec();
                        if inbox.send(Input::Bytes { conn, bytes }).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let error = Some(e.to_string());
                        let _ = inbox.send(Input::Closed { conn, error }).await;
                        return;
                    }
                }
            }
        });
        self.streams.insert(
            conn,
            Stream {
                writer: wtx,
                reader,
                addr,
            },
        );
    }

    fn query(&mut self, q: Query) {
        // A caller that stopped waiting is no error.
        let _ = match q {
            Query::Summary(tx) => tx.send(self.summary()).map_err(drop),
            Query::Peers(tx) => tx.send(self.peers()).map_err(drop),
            Query::Connections(tx) => tx.send(self.connections()).map_err(drop),
            Query::Targets(tx) => tx.send(self.targets()).map_err(drop),
            Query::Metrics(tx) => tx.send(self.metrics()).map_err(drop),
            Query::Dns(tx) => tx.send(self.dns_status()).map_err(drop),
        };
    }

    fn conn_counts(&self) -> BTreeMap<&'static str, u64> {
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

    fn summary(&mut self) -> RouterSummary {
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

    fn peers(&mut self) -> Vec<PeerStatus> {
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

    fn connections(&self) -> Vec<ConnectionStatus> {
        let mut out: Vec<ConnectionStatus> = self
            .router
            .connections()
            .map(|c| ConnectionStatus {
                id: Some(c.id.to_string()),
                peer: c.peer.map(|p| p.to_string()),
                nickname: c.nickname.clone(),
                address: Some(c.addr.to_string()),
                outbound: c.outbound,
                state: Some(state_name(c.state).to_owned()),
                encrypted: c.encrypted,
                mode: Some(self.mode(c.state, c.peer).to_string()),
                error: None,
            })
            .collect();
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
            });
        }
        out
    }

    fn targets(&self) -> Vec<TargetStatus> {
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

fn state_name(s: ConnState) -> &'static str {
    match s {
        ConnState::Handshaking => "handshaking",
        ConnState::Confirming => "confirming",
        ConnState::Established => "established",
        ConnState::Closed => "closed",
    }
}

/// Accepts streams on `listener` forever, handing them to the driver.
pub(crate) async fn accept_loop(listener: TcpListener, inbox: mpsc::Sender<Input>) {
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => {
                if inbox.send(Input::Accepted(stream, addr)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!("accept: {e}");
                tokio::time::sleep(StdDuration::from_millis(100)).await;
            }
        }
    }
}
