//! weftDNS, the server: answers `A`/`PTR` for the weft domain (`weave.local` unless
//! `--dns-domain`) from the router's replicated records and forwards everything else to
//! the upstream servers (`--dns-upstream`, else the host's `/etc/resolv.conf`).
//!
//! Where it listens: on every IPv4 address `weft expose` put on the bridge (containers on
//! the overlay reach it there, as they reach the host), port 53, UDP and TCP, plus any
//! `--dns-listen-address IP[:PORT]`. `weft dns-args` prints the `--dns`/`--dns-search`
//! options for a container engine; `weft attach --dns` writes the namespace's resolv.conf.
//!
//! How: each UDP listener is one OS thread with a blocking socket (a query is answered
//! without touching the async runtime: parse, look up the snapshot, encode, send); TCP
//! listeners and forwarding run on the tokio runtime. The records are a snapshot
//! ([`answer::Table`]) rebuilt by the router task whenever the records or the topology
//! change, and swapped in behind an `RwLock<Arc<_>>`. What it does not do: cache
//! upstream answers, recurse itself, DNSSEC, IPv6 records.

pub(crate) mod answer;
pub(crate) mod cmd;
pub(crate) mod upstream;

use crate::messages::DnsServerStatus;
use answer::{Action, Shuffler, Table};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// The DNS port.
pub(crate) const DNS_PORT: u16 = 53;
/// Default domain.
pub(crate) const DOMAIN_DEFAULT: &str = "weave.local.";
/// Upstream queries in flight at once; further ones are dropped (clients retry).
pub(crate) const FORWARDS_IN_FLIGHT_MAX: usize = 256;
/// TCP clients served at once per server.
pub(crate) const TCP_CONNS_MAX: usize = 64;
/// A TCP client idle this long is disconnected.
pub(crate) const TCP_IDLE_TIMEOUT_MS: u64 = 10_000;
/// How often a UDP listener thread checks whether it should stop.
pub(crate) const UDP_STOP_POLL_MS: u64 = 200;
/// Most listen addresses.
pub(crate) const LISTENERS_MAX: usize = 64;

/// Counters shown by `weft status dns` and as metrics.
#[derive(Debug, Default)]
struct Stats {
    queries_udp: AtomicU64,
    queries_tcp: AtomicU64,
    answered: AtomicU64,
    forwarded: AtomicU64,
    forward_failed: AtomicU64,
    malformed: AtomicU64,
    dropped: AtomicU64,
    drops_busy: AtomicU64,
}

struct Shared {
    table: RwLock<Arc<Table>>,
    domain: String,
    upstreams: Vec<SocketAddr>,
    stats: Stats,
    forwards: Arc<Semaphore>,
    tcp_conns: Arc<Semaphore>,
    rt: tokio::runtime::Handle,
}

impl Shared {
    fn snapshot(&self) -> Arc<Table> {
        match self.table.read() {
            Ok(t) => Arc::clone(&t),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    fn count_reply(&self, bytes: &[u8]) {
        // FORMERR replies count as malformed queries.
        if bytes.len() > 3 && bytes[3] & 0x0f == 1 {
            self.stats.malformed.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stats.answered.fetch_add(1, Ordering::Relaxed);
        }
    }
}

struct Listener {
    stop: Arc<AtomicBool>,
    tcp: JoinHandle<()>,
}

/// The DNS server of one router.
pub(crate) struct DnsServer {
    shared: Arc<Shared>,
    listeners: Mutex<HashMap<SocketAddr, Listener>>,
}

/// Canonical form of a domain given on the command line (`weave.local.` -> `weave.local`).
pub(crate) fn canonical_domain(d: &str) -> Result<String, String> {
    weft_core::dns::DnsName::new(d)
        .map(|n| n.as_str().to_owned())
        .map_err(|e| format!("bad --dns-domain {d:?}: {e}"))
}

impl DnsServer {
    /// A server for `domain` (canonical) forwarding to `upstreams`; listens nowhere yet.
    /// Call inside the tokio runtime.
    pub(crate) fn new(domain: String, upstreams: Vec<SocketAddr>) -> Arc<Self> {
        Arc::new(Self {
            shared: Arc::new(Shared {
                table: RwLock::new(Arc::new(Table::default())),
                domain,
                upstreams,
                stats: Stats::default(),
                forwards: Arc::new(Semaphore::new(FORWARDS_IN_FLIGHT_MAX)),
                tcp_conns: Arc::new(Semaphore::new(TCP_CONNS_MAX)),
                rt: tokio::runtime::Handle::current(),
            }),
            listeners: Mutex::new(HashMap::new()),
        })
    }

    /// The domain answered for (canonical, no trailing dot).
    pub(crate) fn domain(&self) -> &str {
        &self.shared.domain
    }

    /// Swaps in a new record snapshot.
    pub(crate) fn set_table(&self, t: Table) {
        let t = Arc::new(t);
        match self.shared.table.write() {
            Ok(mut g) => *g = t,
            Err(poisoned) => *poisoned.into_inner() = t,
        }
    }

    /// Addresses listened on.
    pub(crate) fn listening(&self) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = self.lock().keys().copied().collect();
        v.sort();
        v
    }

    /// The first address listened on at port 53 (what containers should use).
    pub(crate) fn server_ip(&self) -> Option<IpAddr> {
        let l = self.listening();
        l.iter()
            .find(|a| a.port() == DNS_PORT)
            .or(l.first())
            .map(SocketAddr::ip)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Listener>> {
        self.listeners.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts answering on `addr` (UDP and TCP); nothing if already there.
    pub(crate) async fn listen(&self, addr: SocketAddr) -> Result<(), String> {
        if self.lock().contains_key(&addr) {
            return Ok(());
        }
        if self.lock().len() >= LISTENERS_MAX {
            return Err(format!("DNS: {LISTENERS_MAX} listen addresses already"));
        }
        // A listener just stopped on the same address may hold it for one poll period.
        let mut tries = 0;
        let udp = loop {
            match UdpSocket::bind(addr) {
                Ok(s) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 10 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(UDP_STOP_POLL_MS / 2)).await;
                }
                Err(e) => return Err(format!("DNS: listen on UDP {addr}: {e}")),
            }
        };
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("DNS: listen on TCP {addr}: {e}"))?;
        udp.set_read_timeout(Some(Duration::from_millis(UDP_STOP_POLL_MS)))
            .map_err(|e| format!("DNS: UDP {addr}: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::clone(&self.shared);
        let udp = Arc::new(udp);
        let flag = Arc::clone(&stop);
        std::thread::Builder::new()
            .name(format!("weft-dns-{addr}"))
            .spawn(move || serve_udp(&shared, &udp, &flag))
            .map_err(|e| format!("DNS: start UDP thread: {e}"))?;
        let tcp = tokio::spawn(serve_tcp(Arc::clone(&self.shared), tcp));
        self.lock().insert(addr, Listener { stop, tcp });
        tracing::info!("DNS: answering for {} on {addr}", self.shared.domain);
        Ok(())
    }

    /// Stops answering on every address with IP `ip`.
    pub(crate) fn unlisten(&self, ip: IpAddr) {
        self.lock().retain(|a, l| {
            if a.ip() != ip {
                return true;
            }
            l.stop.store(true, Ordering::Relaxed);
            l.tcp.abort();
            tracing::info!("DNS: no longer listening on {a}");
            false
        });
    }

    /// Stops every listener.
    pub(crate) fn stop(&self) {
        for (_, l) in self.lock().drain() {
            l.stop.store(true, Ordering::Relaxed);
            l.tcp.abort();
        }
    }

    /// The server part of `weft status dns`.
    pub(crate) fn status(&self) -> DnsServerStatus {
        let s = &self.shared.stats;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DnsServerStatus {
            listen: self.listening().iter().map(ToString::to_string).collect(),
            upstreams: self
                .shared
                .upstreams
                .iter()
                .map(ToString::to_string)
                .collect(),
            ttl_s: u64::from(answer::TTL_S),
            queries_udp: get(&s.queries_udp),
            queries_tcp: get(&s.queries_tcp),
            answered: get(&s.answered),
            forwarded: get(&s.forwarded),
            forward_failed: get(&s.forward_failed),
            malformed: get(&s.malformed),
            dropped: get(&s.dropped),
            drops_busy: get(&s.drops_busy),
        }
    }
}

fn serve_udp(shared: &Arc<Shared>, sock: &Arc<UdpSocket>, stop: &AtomicBool) {
    let mut buf = vec![0u8; upstream::MESSAGE_LEN_MAX];
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let mut rng = Shuffler::new(seed);
    while !stop.load(Ordering::Relaxed) {
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => {
                tracing::debug!("DNS: UDP receive: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        shared.stats.queries_udp.fetch_add(1, Ordering::Relaxed);
        let query = &buf[..n];
        let table = shared.snapshot();
        match answer::answer(query, &table, &shared.domain, true, &mut rng) {
            Action::Reply(bytes) => {
                shared.count_reply(&bytes);
                let _ = sock.send_to(&bytes, from);
            }
            Action::Drop => {
                shared.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Action::Forward => {
                let Ok(permit) = Arc::clone(&shared.forwards).try_acquire_owned() else {
                    shared.stats.drops_busy.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                shared.stats.forwarded.fetch_add(1, Ordering::Relaxed);
                let (shared2, sock, query) = (Arc::clone(shared), Arc::clone(sock), query.to_vec());
                shared.rt.spawn(async move {
                    let reply = match upstream::forward_udp(&query, &shared2.upstreams).await {
                        Some(r) => Some(r),
                        None => {
                            shared2.stats.forward_failed.fetch_add(1, Ordering::Relaxed);
                            answer::servfail(&query)
                        }
                    };
                    if let Some(r) = reply {
                        let _ = sock.send_to(&r, from);
                    }
                    drop(permit);
                });
            }
        }
    }
}

async fn serve_tcp(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let Ok(permit) = Arc::clone(&shared.tcp_conns).acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, _)) => {
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    serve_tcp_conn(&shared, stream).await;
                    drop(permit);
                });
            }
            Err(e) => {
                tracing::debug!("DNS: TCP accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve_tcp_conn(shared: &Shared, mut stream: TcpStream) {
    let seed = u64::from(std::process::id()) ^ shared.stats.queries_tcp.load(Ordering::Relaxed);
    let mut rng = Shuffler::new(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let idle = Duration::from_millis(TCP_IDLE_TIMEOUT_MS);
    loop {
        let read = async {
            let n = usize::from(stream.read_u16().await.ok()?);
            let mut q = vec![0u8; n];
            stream.read_exact(&mut q).await.ok()?;
            Some(q)
        };
        let Ok(Some(query)) = tokio::time::timeout(idle, read).await else {
            return;
        };
        shared.stats.queries_tcp.fetch_add(1, Ordering::Relaxed);
        let table = shared.snapshot();
        let reply = match answer::answer(&query, &table, &shared.domain, false, &mut rng) {
            Action::Reply(b) => {
                shared.count_reply(&b);
                b
            }
            Action::Drop => {
                shared.stats.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Action::Forward => {
                shared.stats.forwarded.fetch_add(1, Ordering::Relaxed);
                match upstream::forward_tcp(&query, &shared.upstreams).await {
                    Some(r) => r,
                    None => {
                        shared.stats.forward_failed.fetch_add(1, Ordering::Relaxed);
                        let Some(r) = answer::servfail(&query) else {
                            return;
                        };
                        r
                    }
                }
            }
        };
        let Ok(len) = u16::try_from(reply.len()) else {
            return;
        };
        let mut out = len.to_be_bytes().to_vec();
        out.extend_from_slice(&reply);
        if stream.write_all(&out).await.is_err() {
            return;
        }
    }
}
