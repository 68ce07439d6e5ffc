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
use weft_core::peer::PeerName;
use weft_core::router::{Command, Destination, Event, Router, TRANSMIT_LEN_MIN};
use weft_core::time::Instant;

// The driver's DNS and IPAM parts (the API's requests, answered from the router) and its
// part of `/metrics`.
mod dns;
mod ipam;
mod metrics;
mod policy;
mod status;
mod streams;
mod sync;
pub(crate) use dns::DnsRequest;
pub(crate) use ipam::IpamRequest;
pub(crate) use policy::PolicyRequest;
pub(crate) use streams::accept_loop;

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
    /// A policy command (`weft policy apply`, `delete`).
    Policy(PolicyRequest),
    /// This host's pods, as the recorded attachments have them now.
    PolicyPods(BTreeMap<String, weft_core::policy::Pod>),
    /// A punch datagram the sleeve's port received ([`weft_core::punch`]).
    PunchDatagram { from: SocketAddr, bytes: Vec<u8> },
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
    /// The owners of the addresses IPAM holds here, each once (CNI's GC).
    IpamOwners(oneshot::Sender<Vec<String>>),
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
    /// Reachable peers without a connection of ours: the next hop their traffic is
    /// relayed through, and since when (unix seconds), for status.
    relayed: BTreeMap<PeerName, (PeerName, u64)>,
    fastdp: Arc<FastDp>,
    peer_filter: Arc<PeerFilter>,
    drops_write_queue_full: u64,
    /// Punch datagrams dropped: the queue to the datapath was full.
    drops_punch_out: u64,
    drops_no_stream: u64,
    connections_accepted: u64,
    started: SystemTime,
    dns: dns::DnsState,
    ipam: ipam::IpamState,
    policy: policy::PolicyState,
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
        // The pump's punch datagrams come in through the inbox; a full inbox drops them
        // (the router's probes and reflects are resent).
        let tx = inbox_tx.clone();
        datapath.set_punch_sink(Box::new(move |from, bytes| {
            let _ = tx.try_send(Input::PunchDatagram {
                from,
                bytes: bytes.to_vec(),
            });
        }));
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
            relayed: BTreeMap::new(),
            fastdp: Arc::new(FastDp::Off("fast path not set up".to_owned())),
            peer_filter: Arc::new(PeerFilter::off("not set up")),
            drops_write_queue_full: 0,
            drops_punch_out: 0,
            drops_no_stream: 0,
            connections_accepted: 0,
            started: SystemTime::now(),
            dns: dns::DnsState::default(),
            ipam: ipam::IpamState::default(),
            policy: policy::PolicyState::default(),
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
            Input::PunchDatagram { from, bytes } => self.router.handle_datagram(now, from, &bytes),
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
            Input::Policy(req) => self.policy_request(req),
            Input::PolicyPods(pods) => self.policy_pods(pods),
            Input::Wake | Input::Stop => {}
        }
    }

    /// Moves everything the router wants done: transmits, then events.
    fn drive(&mut self) {
        self.drive_router();
        self.sync_datapath();
        self.sync_dns();
        self.sync_policy();
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
                match t.destination {
                    Destination::Stream(conn) => self.write_stream(conn, &buf[..t.len]),
                    // From the sleeve's port: the mapping the peers' NATs were shown.
                    Destination::Datagram(to) => {
                        if !self.datapath.send_datagram(to, &buf[..t.len]) {
                            self.drops_punch_out += 1;
                        }
                    }
                }
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
                let addr = match self.streams.get(&conn) {
                    Some(s) => s.addr.to_string(),
                    // No stream: a punched connection, over UDP to the peer's mapping.
                    None => self
                        .router
                        .peer_udp_addr(peer)
                        .map(|a| format!("{a} (punched through NAT)"))
                        .unwrap_or_default(),
                };
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
}
