//! The sleeve datapath of one router: a TAP port on the bridge and the UDP port, pumped by
//! a `weft_uring_dp::Pump` thread whose handler runs the core's sans-IO
//! [`weft_core::sleeve::Sleeve`] engine.
//!
//! What it does: moves Ethernet frames between the local bridge and peers (unicast by
//! learned MAC, broadcast down the per-source trees, relayed for peers without a direct
//! path, sealed per hop when a password is set), heartbeats each peer's UDP path, and
//! reports counters and path state. The control plane (the router task) tells it about
//! peers and routes through [`ctrl`] (latest word per peer, never dropped) and wakes the
//! pump; the per-packet path never takes a lock or waits for the control plane.
//!
//! What it does not do: decide routes (the router does), or carry the control protocol
//! (TCP). The sleeve uses IPv4 on the underlay.

use crate::clock::HostClock;
use crate::error::{Error, Result};
use crate::messages::{DatapathStatus, PathStatus, QueueStatus};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use weft_core::conn::ConnId;
use weft_core::crypto::{DatagramOpener, DatagramSealer};
use weft_core::peer::PeerName;
use weft_core::punch::wire::PunchDatagram;
use weft_core::router::ForwardingTable;
use weft_core::segment::{Coalescer, ETH_HEADER_LEN, Gso, Offload, PartialCsum, complete_l4_csum};
use weft_core::sleeve::{Output, PeerPath, Sleeve, SleeveStats};
use weft_core::time::{Duration, Instant};
use weft_uring_dp::{
    BackendChoice, CREW_HELPERS_MAX, CounterSnapshot, Counters, Crew, Handler, Outbox, Pump,
    PumpConfig, PumpThread, Tap, TapFrame, TapOptions, UdpOptions, UdpSock,
    VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN,
    VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6,
    VIRTIO_NET_HDR_GSO_UDP_L4, VirtioNetHdr, VnetHdrLen, WakeHandle,
};

/// Name of the sleeve's TAP port on the bridge.
pub(crate) const TAP_NAME: &str = "weft-sleeve";
/// Attempts to open the TAP or bind the UDP port while a router killed a moment ago
/// still holds them (100 ms apart).
pub(crate) const TAP_BUSY_RETRIES: u32 = 30;
/// How often the pump runs its timers (heartbeats) and publishes status, in ms.
pub(crate) const TICK_INTERVAL_MS: u64 = 250;

mod ctrl;
mod metrics;
use ctrl::{Control, PeerUpdate, Pending};

/// What the pump thread publishes for status.
#[derive(Debug, Default, Clone)]
struct Published {
    stats: SleeveStats,
    paths: Vec<PeerPath>,
}

/// Where the pump hands punch datagrams (the router's, [`weft_core::punch`]): set by the
/// driver once its inbox exists; until then they are dropped.
pub(crate) type PunchSink = Box<dyn Fn(SocketAddr, &[u8]) + Send>;

struct SleeveHandler {
    sleeve: Sleeve,
    punch_sink: Arc<Mutex<Option<PunchSink>>>,
    /// Updates from the control plane, taken at each wake-up.
    pending: Arc<Mutex<Pending>>,
    clock: HostClock,
    published: Arc<Mutex<Published>>,
    /// Merges received TCP segments into super-frames (TAP with virtio_net_hdr only).
    coalescer: Option<Coalescer>,
    /// When the link MTUs to the peers are next asked again (they may change under us).
    next_mtu_check: Instant,
    /// The latest address each peer's datagrams were learned from, by any queue's engine
    /// (shared by the queues; see [`SleeveHandler::share_roaming`]).
    roamed: Arc<Mutex<BTreeMap<PeerName, (SocketAddr, Instant)>>>,
}

/// How often the datapath asks the kernel again for the route MTU to each peer.
const LINK_MTU_RECHECK: Duration = Duration::from_secs(10);

impl SleeveHandler {
    fn now(&self) -> Instant {
        self.clock.now()
    }

    /// Hands a punch datagram to the router (through the driver's sink).
    fn to_router(&self, from: SocketAddr, data: &[u8]) {
        if let Ok(sink) = self.punch_sink.lock()
            && let Some(f) = sink.as_ref()
        {
            f(from, data);
        }
    }

    /// Applies the control plane's updates: peers (a new connection's entry replaces the
    /// old one's, keys and all), then routes, then the fast-path peers.
    fn apply(&mut self, now: Instant, p: Pending) {
        for (name, u) in p.peers {
            match u {
                PeerUpdate::Set { conn, addr, keys } => {
                    tracing::debug!("datapath: {name} at {addr} over {conn}");
                    self.sleeve.set_peer(now, name, addr, keys.map(|k| *k));
                    self.learn_link_mtu(name, addr);
                }
                PeerUpdate::Remove => self.sleeve.remove_peer(name),
            }
        }
        if let Some(t) = p.routes {
            self.sleeve.set_routes(t.next_hop, t.children);
        }
        if let Some(f) = p.fast {
            self.sleeve.set_fast_peers(f);
        }
    }

    /// Puts the addresses this queue's engine learned (a peer's NAT mapping, seen on its
    /// authenticated datagrams) where the other queues see them, and takes theirs: every
    /// queue sends to a peer, but only the queues its datagrams are steered to learn where
    /// from. At each wake-up (the tick: every [`TICK_INTERVAL_MS`]).
    fn share_roaming(&mut self, now: Instant) {
        let Ok(mut roamed) = self.roamed.lock() else {
            return;
        };
        for p in self.sleeve.paths(now).filter(|p| p.addr_learned) {
            let newer = roamed
                .get(&p.name)
                .is_none_or(|&(a, since)| a != p.addr && p.addr_since > since);
            if newer {
                roamed.insert(p.name, (p.addr, p.addr_since));
            }
        }
        let live: BTreeSet<PeerName> = self.sleeve.paths(now).map(|p| p.name).collect();
        roamed.retain(|n, _| live.contains(n));
        for (name, (addr, since)) in roamed.iter() {
            self.sleeve.set_peer_addr_learned(*name, *addr, *since);
        }
    }

    /// Tells the sleeve the IP MTU of the underlay route to `name` at `addr`, as the
    /// kernel knows it: segments for that peer are cut to fit.
    fn learn_link_mtu(&mut self, name: PeerName, addr: SocketAddr) {
        let mtu = weft_uring_dp::route_mtu(addr).ok();
        let mtu = mtu.map(|m| u16::try_from(m).unwrap_or(u16::MAX));
        self.sleeve.set_link_mtu(name, mtu);
    }
}

/// What a TAP's virtio_net_hdr asks of a frame, in the core's terms. `None`: a GSO type
/// the sleeve does not cut (legacy UFO), which is dropped.
pub(crate) fn offload_of(h: &VirtioNetHdr) -> Option<Offload> {
    let gso = match h.gso_type & !VIRTIO_NET_HDR_GSO_ECN {
        VIRTIO_NET_HDR_GSO_NONE => Gso::None,
        VIRTIO_NET_HDR_GSO_TCPV4 => Gso::TcpV4,
        VIRTIO_NET_HDR_GSO_TCPV6 => Gso::TcpV6,
        VIRTIO_NET_HDR_GSO_UDP_L4 => Gso::Udp,
        _ => return None,
    };
    Some(Offload {
        gso,
        gso_size: h.gso_size,
        hdr_len: h.hdr_len,
        csum: (h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0).then_some(PartialCsum {
            start: h.csum_start,
            offset: h.csum_offset,
        }),
        data_valid: h.flags & VIRTIO_NET_HDR_F_DATA_VALID != 0,
        ecn: h.gso_type & VIRTIO_NET_HDR_GSO_ECN != 0,
    })
}

/// The virtio_net_hdr that tells the kernel what `o` says about a frame we write.
pub(crate) fn vnet_of(o: &Offload) -> VirtioNetHdr {
    let gso_type = match o.gso {
        Gso::None => VIRTIO_NET_HDR_GSO_NONE,
        Gso::TcpV4 => VIRTIO_NET_HDR_GSO_TCPV4,
        Gso::TcpV6 => VIRTIO_NET_HDR_GSO_TCPV6,
        Gso::Udp => VIRTIO_NET_HDR_GSO_UDP_L4,
    };
    let (flags, csum_start, csum_offset) = match o.csum {
        Some(c) => (VIRTIO_NET_HDR_F_NEEDS_CSUM, c.start, c.offset),
        None if o.data_valid => (VIRTIO_NET_HDR_F_DATA_VALID, 0, 0),
        None => (0, 0, 0),
    };
    VirtioNetHdr {
        flags,
        gso_type,
        hdr_len: o.hdr_len,
        gso_size: o.gso_size,
        csum_start,
        csum_offset,
        num_buffers: 0,
    }
}

/// Writes what the coalescer still holds (the run being merged) to the TAP: at the end of
/// every batch.
fn flush(out: &mut Outbox, coalescer: &mut Option<Coalescer>) {
    if let Some(c) = coalescer {
        c.flush(&mut |o, frame| {
            let _ = out.write_tap(Some(&vnet_of(o)), frame);
        });
    }
}

fn emit(out: &mut Outbox, coalescer: &mut Option<Coalescer>, o: Output<'_>) {
    // A full outbox drops (counted by the pump); the sleeve is best effort like Ethernet.
    let _ = match o {
        Output::Datagram {
            to,
            bytes,
            segment_size,
        } => out.send_to_with(to, bytes.len(), segment_size, |b| {
            b.copy_from_slice(bytes);
            bytes.len()
        }),
        Output::DatagramsInPlace {
            to,
            len_max,
            segment_size,
            mut build,
        } => out.send_to_with(to, len_max, Some(segment_size), |b| build.fill(b)),
        Output::Frame(f) => match coalescer {
            Some(c) => {
                c.push(f, &mut |o, frame| {
                    let _ = out.write_tap(Some(&vnet_of(o)), frame);
                });
                Ok(())
            }
            None => out.write_tap(None, f),
        },
        Output::FrameCsumPartial(f) => match coalescer {
            Some(c) => {
                c.push_csum_partial(f, &mut |o, frame| {
                    let _ = out.write_tap(Some(&vnet_of(o)), frame);
                });
                Ok(())
            }
            // A TAP without offload hints gets the checksum finished here.
            None => out.write_tap_with(None, f.len(), |b| {
                b.copy_from_slice(f);
                complete_l4_csum(b);
            }),
        },
    };
}

impl Handler for SleeveHandler {
    fn on_tap_frame(&mut self, frame: TapFrame<'_>, out: &mut Outbox) {
        let now = self.now();
        let off = match frame.vnet.as_ref().map(offload_of) {
            None => Offload::default(),
            Some(Some(o)) => o,
            Some(None) => return,
        };
        let coalescer = &mut self.coalescer;
        self.sleeve
            .handle_bridge_offload_frame(now, frame.eth, &off, &mut |o| emit(out, coalescer, o));
    }

    fn on_datagram(&mut self, from: SocketAddr, data: &mut [u8], out: &mut Outbox) {
        let now = self.now();
        let from = canonical(from);
        if PunchDatagram::is_punch(data) {
            self.to_router(from, data);
            return;
        }
        let coalescer = &mut self.coalescer;
        self.sleeve
            .handle_datagram(now, from, data, &mut |o| emit(out, coalescer, o));
    }

    fn on_datagrams(
        &mut self,
        from: SocketAddr,
        data: &mut [u8],
        segment_len: usize,
        out: &mut Outbox,
    ) {
        let now = self.now();
        let from = canonical(from);
        if segment_len > 0 && data.chunks(segment_len).any(PunchDatagram::is_punch) {
            // A batch with punch datagrams in it (rare: they are small and few): one by one.
            for d in data.chunks_mut(segment_len) {
                self.on_datagram(from, d, out);
            }
            return;
        }
        let coalescer = &mut self.coalescer;
        self.sleeve
            .handle_datagrams(now, from, data, segment_len, &mut |o| {
                emit(out, coalescer, o)
            });
    }

    fn on_batch_end(&mut self, out: &mut Outbox) {
        flush(out, &mut self.coalescer);
    }

    fn on_wake(&mut self, out: &mut Outbox) {
        let now = self.now();
        let mut p = Pending::take(&self.pending);
        let datagrams = std::mem::take(&mut p.datagrams);
        self.apply(now, p);
        for (to, bytes) in datagrams {
            // A full outbox drops (counted by the pump); the router resends what matters.
            let _ = out.send_to(to, &bytes);
        }
        if now >= self.next_mtu_check {
            self.next_mtu_check = now + LINK_MTU_RECHECK;
            let peers: Vec<(PeerName, SocketAddr)> =
                self.sleeve.paths(now).map(|p| (p.name, p.addr)).collect();
            for (name, addr) in peers {
                self.learn_link_mtu(name, addr);
            }
        }
        let coalescer = &mut self.coalescer;
        self.sleeve
            .handle_timeout(now, &mut |o| emit(out, coalescer, o));
        self.share_roaming(now);
        if let Ok(mut p) = self.published.lock() {
            p.stats = self.sleeve.stats();
            p.paths = self.sleeve.paths(now).collect();
        }
    }
}

/// Most queues a sleeve opens (`--queues`, and the default).
pub(crate) const QUEUES_MAX: usize = 8;

/// Queues when `--queues` is not given: one per CPU this process may run on
/// (`sched_getaffinity`), at most [`QUEUES_MAX`].
pub(crate) fn queues_default() -> usize {
    weft_uring_dp::allowed_cpus()
        .map_or(1, |c| c.len())
        .clamp(1, QUEUES_MAX)
}

/// The datapath of one router: one pump thread per queue, each with its TAP queue, its
/// `SO_REUSEPORT` socket on the one UDP port and its own engine; the engines share the
/// peers' keys (counters and replay windows) and the plain counter, nothing per packet.
pub(crate) struct Datapath {
    /// The host's one clock (the sleeve engine's time base, shared with the driver).
    clock: HostClock,
    pumps: Mutex<Vec<PumpThread<SleeveHandler>>>,
    /// Where received punch datagrams go (the router, through the driver); every queue's.
    punch_sink: Arc<Mutex<Option<PunchSink>>>,
    control: Control,
    /// One per queue.
    wakes: Vec<WakeHandle>,
    /// One per queue.
    counters: Vec<Arc<Counters>>,
    /// One per queue.
    published: Vec<Arc<Mutex<Published>>>,
    backend: String,
    /// Datagrams go to the socket of the CPU that received them (else: by 4-tuple, so
    /// one peer's all to one queue).
    steered_by_cpu: bool,
    /// The overlay MTU (the bridge's and every attachment's).
    mtu: usize,
    /// Threads that seal and open (0 without a password).
    crypto_threads: usize,
    /// Datagrams sealed or opened by the helper threads, when there are any.
    crypto_helped: Option<Arc<AtomicU64>>,
    port: u16,
}

impl std::fmt::Debug for Datapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datapath")
            .field("backend", &self.backend)
            .field("queues", &self.wakes.len())
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// Opens the sleeve TAP with `queues` queues, retrying while a router killed a moment ago
/// still holds it. Refuses while the TAP exists at all: a multi-queue open would join a
/// live router's TAP instead of failing.
fn open_taps(queues: usize) -> Result<Vec<Tap>> {
    let busy = || {
        Error::Other(format!(
            "open TAP {TAP_NAME}: it exists already (is another weft router running in this network namespace?)"
        ))
    };
    let mut tries = 0;
    loop {
        if tap_exists() {
            if tries >= TAP_BUSY_RETRIES {
                return Err(busy());
            }
        } else {
            match open_tap(queues) {
                Ok(t) => return Ok(t),
                Err(e) if e.errno() == Some(libc::EBUSY) && tries >= TAP_BUSY_RETRIES => {
                    return Err(busy());
                }
                Err(e) if e.errno() == Some(libc::EBUSY) => {}
                Err(e) => {
                    return Err(Error::Other(format!(
                        "open TAP {TAP_NAME}: {e} (is another weft router running in this network namespace?)"
                    )));
                }
            }
        }
        tries += 1;
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// True when an interface named [`TAP_NAME`] exists in this network namespace.
fn tap_exists() -> bool {
    weft_uring_dp::interface_exists(TAP_NAME)
}

/// Binds `queues` sockets to UDP `port` (`SO_REUSEPORT` when more than one), retrying
/// while a router killed a moment ago still holds the port. A plain bind first: it fails
/// while anyone holds the port, which a reuse-port bind would join instead.
fn bind_udps(port: u16, queues: usize) -> Result<Vec<UdpSock>> {
    let at = SocketAddr::from(([0, 0, 0, 0], port));
    let mut tries = 0;
    // Likewise the port: a killed router's io_uring is torn down after it exits, and holds
    // the socket until then.
    let first = loop {
        match UdpSock::bind(at, &UdpOptions::default()) {
            Ok(u) => break u,
            Err(e) if tries < TAP_BUSY_RETRIES && e.errno() == Some(libc::EADDRINUSE) => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) if e.errno() == Some(libc::EADDRINUSE) => {
                return Err(Error::PortInUse { port, proto: "udp" });
            }
            Err(e) => return Err(Error::Other(format!("bind UDP port {port}: {e}"))),
        }
    };
    if queues <= 1 {
        return Ok(vec![first]);
    }
    drop(first);
    let opts = UdpOptions {
        reuse_port: true,
        ..UdpOptions::default()
    };
    (0..queues)
        .map(|_| {
            UdpSock::bind(at, &opts)
                .map_err(|e| Error::Other(format!("bind UDP port {port} (SO_REUSEPORT): {e}")))
        })
        .collect()
}

impl Datapath {
    /// The clock the datapath runs on (the host's one clock).
    pub(crate) fn clock(&self) -> HostClock {
        self.clock
    }

    /// Opens the TAP with `queues` queues and binds that many sockets to UDP `port`, then
    /// starts one pump thread per queue. The TAP still has to be put on the bridge
    /// ([`TAP_NAME`], see `Plumbing::add_port`).
    ///
    /// With `encrypt`, each queue's thread seals and opens what it carries; with one queue,
    /// `crypto_threads` threads do: the pump thread and `crypto_threads - 1` helpers that
    /// share each batch with it (several queues spread the work without helpers).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn open(
        clock: HostClock,
        port: u16,
        tun_path: &Path,
        me: PeerName,
        encrypt: bool,
        crypto_threads: usize,
        queues: usize,
        mtu: u32,
    ) -> Result<Self> {
        if !tun_path.exists() {
            return Err(Error::NoTun);
        }
        let queues = queues.clamp(1, QUEUES_MAX);
        let taps = open_taps(queues)?;
        let udps = bind_udps(port, queues)?;
        let steered_by_cpu = queues > 1
            && match udps[0].steer_by_cpu(queues) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!("sleeve: {e}; datagrams from one peer all go to one queue");
                    false
                }
            };
        let cpus = weft_uring_dp::allowed_cpus().unwrap_or_default();
        let mut pumps = Vec::with_capacity(queues);
        for (i, (tap, udp)) in taps.into_iter().zip(udps).enumerate() {
            let pin_cpu = match queues {
                1 => None,
                _ => cpus.get(i % cpus.len().max(1)).copied(),
            };
            let pump = Pump::new(
                tap,
                udp,
                PumpConfig {
                    // io_uring (one issuer, deferred task work, multishot receive over
                    // provided buffers) where the kernel allows it, else plain; compared by
                    // `benches --bin throughput` (rows sleeve vs sleeve-uring).
                    // WEFT_DATAPATH_BACKEND=plain|uring overrides.
                    backend: BackendChoice::Auto,
                    queue: i,
                    pin_cpu,
                    ..PumpConfig::default()
                },
            )
            .map_err(|e| Error::Other(format!("start the sleeve datapath: {e}")))?;
            pumps.push(pump);
        }
        let tap_vnet = pumps[0].tap().vnet_hdr().is_some();
        // USO super-frames only for a TAP that took USO (6.2+).
        let tap_uso = pumps[0].tap().offloads().uso;
        let backend = pumps[0].backend_name();
        let wakes: Vec<WakeHandle> = pumps.iter().map(Pump::wake_handle).collect();
        let counters: Vec<Arc<Counters>> = pumps.iter().map(Pump::counters).collect();
        let (control, pending) = Control::new(queues);
        let published: Vec<_> = (0..queues)
            .map(|_| Arc::new(Mutex::new(Published::default())))
            .collect();
        let mut first = Sleeve::new(me, encrypt);
        // Plain counters continue above the previous run's, which peers' windows remember.
        first.set_plain_epoch(clock.unix_origin_micros() << weft_core::sleeve::PLAIN_COUNTER_SHIFT);
        let helpers = match (encrypt, queues) {
            (true, 1) => crypto_threads.saturating_sub(1).min(CREW_HELPERS_MAX),
            _ => 0,
        };
        let crew = match helpers {
            0 => None,
            n => Some(
                Crew::new(n, "weft-seal")
                    .map_err(|e| Error::Other(format!("start the sealing helper threads: {e}")))?,
            ),
        };
        let crypto_helped = crew.as_ref().map(|c| c.helped_counter());
        let mut engines: Vec<Sleeve> = (1..queues).map(|_| first.new_queue()).collect();
        if let Some(c) = crew {
            first.set_spread(Box::new(c));
        }
        engines.insert(0, first);
        let roamed = Arc::new(Mutex::new(BTreeMap::new()));
        let punch_sink = Arc::new(Mutex::new(None));
        let mut threads = Vec::with_capacity(queues);
        for (((pump, sleeve), pending), published) in
            pumps.into_iter().zip(engines).zip(pending).zip(&published)
        {
            let handler = SleeveHandler {
                sleeve,
                punch_sink: Arc::clone(&punch_sink),
                pending,
                clock,
                published: Arc::clone(published),
                // With a password every delivered frame was opened from a sealed datagram.
                coalescer: tap_vnet.then(|| {
                    let c = match encrypt {
                        true => Coalescer::for_authenticated_frames(),
                        false => Coalescer::new(),
                    };
                    match tap_uso {
                        true => c,
                        false => c.without_udp(),
                    }
                }),
                next_mtu_check: Instant::ZERO,
                roamed: Arc::clone(&roamed),
            };
            threads.push(
                pump.spawn(handler)
                    .map_err(|e| Error::Other(format!("start the sleeve datapath thread: {e}")))?,
            );
        }
        let crypto_threads = match (encrypt, queues) {
            (false, _) => 0,
            (true, 1) => 1 + helpers,
            (true, q) => q,
        };
        let steer = match (queues, steered_by_cpu) {
            (1, _) => "",
            (_, true) => ", received by CPU",
            (_, false) => ", received by 4-tuple hash",
        };
        match crypto_threads {
            0 => tracing::info!(
                "sleeve datapath on UDP {port} with the {backend} backend, {queues} queue(s){steer}"
            ),
            n => tracing::info!(
                "sleeve datapath on UDP {port} with the {backend} backend, {queues} queue(s){steer}, sealing on {n} thread(s)"
            ),
        }
        Ok(Self {
            clock,
            pumps: Mutex::new(threads),
            punch_sink,
            control,
            wakes,
            counters,
            published,
            backend,
            steered_by_cpu,
            crypto_threads,
            crypto_helped,
            port,
            mtu: usize::try_from(mtu).unwrap_or(usize::MAX),
        })
    }

    /// Wakes every queue's pump.
    fn wake(&self) {
        for w in &self.wakes {
            w.wake();
        }
    }

    /// Starts the timer that runs the pump's heartbeats and status. Call inside tokio.
    pub(crate) fn spawn_ticker(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let wakes = self.wakes.clone();
        tokio::spawn(async move {
            let mut iv = tokio::time::interval(std::time::Duration::from_millis(TICK_INTERVAL_MS));
            loop {
                iv.tick().await;
                for w in &wakes {
                    w.wake();
                }
            }
        })
    }

    /// Connection `conn` to `name` is the one to use: its datagrams go to `addr`, sealed
    /// with `keys`. Replaces what the pump had for `name` (another connection's keys).
    pub(crate) fn set_peer(
        &self,
        name: PeerName,
        conn: ConnId,
        addr: SocketAddr,
        keys: Option<(DatagramSealer, DatagramOpener)>,
    ) {
        self.control.set_peer(name, conn, addr, keys.map(Box::new));
        self.wake();
    }

    /// Received punch datagrams go to `sink` from now on (the driver's inbox).
    pub(crate) fn set_punch_sink(&self, sink: PunchSink) {
        if let Ok(mut s) = self.punch_sink.lock() {
            *s = Some(sink);
        }
    }

    /// Sends a punch datagram from the sleeve's UDP port (the mapping its NAT shows peers);
    /// false if it was dropped (the queue to the pump is full).
    pub(crate) fn send_datagram(&self, to: SocketAddr, bytes: &[u8]) -> bool {
        let queued = self.control.queue_datagram(to, bytes);
        if let Some(w) = self.wakes.first() {
            w.wake();
        }
        queued
    }

    /// Keeps only the peers in `live` (connections that went away are removed).
    pub(crate) fn retain_peers(&self, live: &[PeerName]) {
        if self.control.retain(live) {
            self.wake();
        }
    }

    /// The connection whose keys the pump was given for `name`: when the router's
    /// connection to `name` is another one, call [`Datapath::set_peer`] again.
    pub(crate) fn peer_conn(&self, name: PeerName) -> Option<ConnId> {
        self.control.conn_of(name)
    }

    /// New routes from the control plane.
    pub(crate) fn set_routes(&self, table: ForwardingTable) {
        self.control.set_routes(table);
        self.wake();
    }

    /// The direct peers the kernel fast path carries now.
    pub(crate) fn set_fast_peers(&self, fast: BTreeSet<PeerName>) {
        self.control.set_fast(fast);
        self.wake();
    }

    /// The sleeve path to `name` as last published by the pumps: `Some(up)` if known.
    pub(crate) fn path_up(&self, name: PeerName) -> Option<bool> {
        self.path_of(name).map(|p| p.up)
    }

    /// The sleeve path to `name` as last published by the pumps (merged over the queues:
    /// up if any queue hears it; see [`merge_paths`]).
    pub(crate) fn path_of(&self, name: PeerName) -> Option<PeerPath> {
        self.snapshot().1.paths.into_iter().find(|x| x.name == name)
    }

    /// Stops the pump threads.
    pub(crate) fn stop(&self) {
        let threads = match self.pumps.lock() {
            Ok(mut p) => std::mem::take(&mut *p),
            Err(_) => return,
        };
        for t in threads {
            let _ = t.stop();
        }
    }

    /// Each queue's counters and published state.
    fn per_queue(&self) -> Vec<(CounterSnapshot, Published)> {
        self.counters
            .iter()
            .zip(&self.published)
            .map(|(c, p)| {
                let p = p.lock().map(|p| p.clone()).unwrap_or_default();
                (c.snapshot(), p)
            })
            .collect()
    }

    /// The queues' counters and engines' state, summed and merged.
    fn snapshot(&self) -> (CounterSnapshot, Published) {
        let mut c = CounterSnapshot::default();
        let mut all = Published::default();
        for (qc, qp) in self.per_queue() {
            c.merge(&qc);
            all.stats.merge(&qp.stats);
            merge_paths(&mut all.paths, &qp.paths);
        }
        (c, all)
    }

    /// The largest overlay MTU whose full-size frames fit one datagram on the link to
    /// the peer of `p` (when its link MTU is known).
    fn overlay_mtu_fitting(p: &PeerPath) -> Option<usize> {
        usize::from(p.frame_room_bytes?).checked_sub(ETH_HEADER_LEN)
    }

    /// What `weft status` shows about the datapath.
    pub(crate) fn status(&self) -> DatapathStatus {
        let (c, p) = self.snapshot();
        let s = p.stats;
        DatapathStatus {
            mode: Some("sleeve".to_owned()),
            forwarding: true,
            backend: Some(self.backend.to_owned()),
            crypto_threads: self.crypto_threads as u64,
            datagrams_crypted_by_helpers: self
                .crypto_helped
                .as_ref()
                .map_or(0, |h| h.load(Ordering::Relaxed)),
            udp_port: Some(self.port),
            mtu: Some(self.mtu as u64),
            frames_from_bridge: s.frames_from_bridge,
            frames_to_bridge: s.frames_to_bridge,
            frames_relayed: s.frames_relayed,
            frames_left_to_kernel: s.frames_left_to_kernel,
            datagrams_in: c.udp_datagrams_in,
            datagrams_out: c.udp_datagrams_out,
            bytes_in: c.udp_bytes_in,
            bytes_out: c.udp_bytes_out,
            tap_reads: c.tap_frames_in,
            tap_writes: c.tap_frames_out,
            batches: c.batches,
            gso_sends_cut: c.udp_gso_cut,
            paths: p
                .paths
                .iter()
                .map(|x| PathStatus {
                    peer: Some(x.name.to_string()),
                    address: Some(x.addr.to_string()),
                    up: x.up,
                    pmtu_bytes: x.pmtu_bytes.map(u64::from),
                    link_mtu_bytes: x.link_mtu_bytes.map(u64::from),
                    link_fits_full_frames: Self::overlay_mtu_fitting(x).map(|m| m >= self.mtu),
                    overlay_mtu_fitting_link: Self::overlay_mtu_fitting(x).map(|m| m as u64),
                })
                .collect(),
            drops: drops(&c, &s)
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            queues: self
                .per_queue()
                .iter()
                .map(|(c, p)| QueueStatus {
                    tap_reads: c.tap_frames_in,
                    tap_writes: c.tap_frames_out,
                    datagrams_in: c.udp_datagrams_in,
                    datagrams_out: c.udp_datagrams_out,
                    frames_from_bridge: p.stats.frames_from_bridge,
                    frames_to_bridge: p.stats.frames_to_bridge,
                })
                .collect(),
            steered_by_cpu: self.steered_by_cpu,
        }
    }
}

/// Adds one queue's view of the peers' paths to `into`: a peer is up when any queue hears
/// it (a peer's datagrams arrive on whichever queue its sending CPU steers them to); the
/// first queue's address and probe results stand unless it has none.
fn merge_paths(into: &mut Vec<PeerPath>, queue: &[PeerPath]) {
    for p in queue {
        match into.iter_mut().find(|x| x.name == p.name) {
            None => into.push(*p),
            Some(x) => {
                x.up |= p.up;
                x.pmtu_bytes = x.pmtu_bytes.max(p.pmtu_bytes);
                x.link_mtu_bytes = x.link_mtu_bytes.or(p.link_mtu_bytes);
                x.frame_room_bytes = x.frame_room_bytes.or(p.frame_room_bytes);
                if !x.addr_learned && p.addr_learned {
                    (x.addr, x.addr_learned, x.addr_since) = (p.addr, true, p.addr_since);
                }
            }
        }
    }
}

impl Drop for Datapath {
    fn drop(&mut self) {
        self.stop();
    }
}

fn drops(c: &CounterSnapshot, s: &SleeveStats) -> Vec<(&'static str, u64)> {
    vec![
        ("malformed", s.drops_malformed),
        ("unknown_peer", s.drops_unknown_peer),
        ("crypto", s.drops_crypto),
        ("replayed", s.drops_replayed),
        ("encryption_mismatch", s.drops_encryption_mismatch),
        ("not_for_us", s.drops_not_for_us),
        ("no_route", s.drops_no_route),
        ("too_big", s.drops_too_big),
        ("outbox_full", c.drop_outbox_full),
        ("tap_write", c.drop_tap_write),
        ("udp_send", c.drop_udp_send),
        ("udp_truncated", c.drop_udp_truncated),
    ]
}

/// Opens the sleeve TAP with virtio_net_hdr and TSO/USO offloads (one read is then up to
/// a 64 KiB super-frame), or without them where the kernel refuses (one MTU frame a read).
/// With more than one queue, `IFF_MULTI_QUEUE`: one TAP fd per queue.
fn open_tap(queues: usize) -> std::result::Result<Vec<Tap>, weft_uring_dp::Error> {
    let with = TapOptions {
        vnet_hdr: Some(VnetHdrLen::Basic),
        offload: true,
        multi_queue: false,
    };
    match Tap::open_queues(TAP_NAME, &with, queues) {
        Ok(t) => Ok(t),
        Err(e) if e.errno() == Some(libc::EBUSY) => Err(e),
        Err(e) => {
            tracing::warn!("sleeve TAP without offloads ({e}): one frame per read");
            Tap::open_queues(TAP_NAME, &TapOptions::default(), queues)
        }
    }
}

/// IPv4-mapped IPv6 addresses shown as plain IPv4.
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_core::segment::{csum_fold, csum_partial};
    use weft_uring_dp::VnetHdrLen;

    /// An Ethernet + IPv4 + UDP frame whose UDP checksum field holds the pseudo-header
    /// sum (what a `FramesCsumPartial` datagram carries).
    fn partial_udp_frame() -> Vec<u8> {
        let payload = b"partial checksums are finished by someone";
        let udp_len = 8 + payload.len();
        let mut f = vec![0u8; 14 + 20];
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip = &mut f[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((20 + udp_len) as u16).to_be_bytes());
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&[10, 32, 0, 1]);
        ip[16..20].copy_from_slice(&[10, 32, 0, 2]);
        let c = !csum_fold(csum_partial(ip));
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&5000u16.to_be_bytes());
        f.extend_from_slice(&6000u16.to_be_bytes());
        f.extend_from_slice(&(udp_len as u16).to_be_bytes());
        let len32 = (udp_len as u32).to_be_bytes();
        let pseudo = csum_partial(&f[26..34]) + csum_partial(&[0, 17]) + csum_partial(&len32);
        f.extend_from_slice(&csum_fold(pseudo).to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// True when the UDP checksum of `f` (IPv4, no options) verifies.
    fn udp_csum_ok(f: &[u8]) -> bool {
        let udp = &f[34..];
        let len32 = (udp.len() as u32).to_be_bytes();
        let sum = csum_partial(&f[26..34])
            + csum_partial(&[0, 17])
            + csum_partial(&len32)
            + csum_partial(udp);
        csum_fold(sum) == 0xffff
    }

    #[test]
    fn partial_frames_reach_the_tap_finished_or_with_the_hint() {
        let f = partial_udp_frame();
        assert!(!udp_csum_ok(&f));
        // A TAP without offload hints: the checksum is finished on the way.
        let mut out = Outbox::new(1 << 16, 4, 4, None);
        emit(&mut out, &mut None, Output::FrameCsumPartial(&f));
        let written: Vec<&[u8]> = out.tap_frames().collect();
        assert_eq!(written.len(), 1);
        assert!(udp_csum_ok(written[0]));
        assert_eq!(written[0][..40], f[..40]);
        // With hints: written as it came, NEEDS_CSUM at the UDP checksum.
        let mut out = Outbox::new(1 << 16, 4, 4, Some(VnetHdrLen::Basic));
        let mut c = Some(Coalescer::new());
        emit(&mut out, &mut c, Output::FrameCsumPartial(&f));
        // A UDP datagram may start a run that later ones join: it is written at the
        // batch's end, alone here.
        flush(&mut out, &mut c);
        let written: Vec<&[u8]> = out.tap_frames().collect();
        assert_eq!(written.len(), 1);
        let h = VirtioNetHdr::parse(written[0], VnetHdrLen::Basic).unwrap();
        assert_eq!(h.flags, VIRTIO_NET_HDR_F_NEEDS_CSUM);
        assert_eq!((h.csum_start, h.csum_offset), (34, 6));
        assert_eq!(&written[0][VnetHdrLen::Basic.bytes()..], &f[..]);
        // The same frame said to be complete is passed on without a hint (and not
        // vouched for: its checksum does not verify).
        let mut out = Outbox::new(1 << 16, 4, 4, Some(VnetHdrLen::Basic));
        emit(&mut out, &mut c, Output::Frame(&f));
        flush(&mut out, &mut c);
        let h = VirtioNetHdr::parse(out.tap_frames().next().unwrap(), VnetHdrLen::Basic);
        assert_eq!(h.unwrap().flags, 0);
    }
}
