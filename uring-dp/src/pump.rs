//! `Pump`: one TAP + one UDP socket + one thread + one [`Handler`]. Picks the backend
//! (io_uring or plain) at construction, runs until its [`StopHandle`] fires.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use io_uring::IoUring;

use crate::counters::Counters;
use crate::outbox::{OUTBOX_BYTES_MAX, OUTBOX_DATAGRAMS_MAX, OUTBOX_TAP_FRAMES_MAX, Outbox};
use crate::sys::EventFd;
use crate::tap::{Tap, TapFrame};
use crate::udp::UdpSock;
use crate::{Error, plain, uring};

/// Environment variable that forces a backend when the config says [`BackendChoice::Auto`]:
/// `plain` or `uring` (empty or unset: probe).
pub const BACKEND_ENV: &str = "WEFT_DATAPATH_BACKEND";

/// The caller's side of a pump: what to do with each input. Runs on the pump thread.
pub trait Handler {
    /// A frame was read from the TAP (with its virtio_net_hdr split off when the TAP has
    /// one). Queue what it turns into (usually datagrams to peers) in `out`.
    fn on_tap_frame(&mut self, frame: TapFrame<'_>, out: &mut Outbox);

    /// A datagram arrived from `from` (one segment of a GRO run at a time). Queue what it
    /// turns into (usually a TAP frame) in `out`. The bytes are the pump's receive buffer,
    /// lent mutably so that they can be decrypted in place; they are reused after return.
    fn on_datagram(&mut self, from: SocketAddr, data: &mut [u8], out: &mut Outbox);

    /// A GRO batch arrived from `from`: datagrams of `segment_len` bytes each back to
    /// back in `data` (the last may be shorter). By default each goes to
    /// [`Handler::on_datagram`] in turn; a handler may take them together (e.g. to open
    /// them on several threads).
    fn on_datagrams(
        &mut self,
        from: SocketAddr,
        data: &mut [u8],
        segment_len: usize,
        out: &mut Outbox,
    ) {
        for d in data.chunks_mut(segment_len.max(1)) {
            self.on_datagram(from, d, out);
        }
    }

    /// Called after each batch of inputs, just before `out` is flushed: the place to emit
    /// what was held back for coalescing (e.g. one GSO send for many frames).
    fn on_batch_end(&mut self, out: &mut Outbox) {
        let _ = out;
    }

    /// Called on the pump thread after [`WakeHandle::wake`] (from any thread): the place
    /// to apply queued control updates and to run timers (heartbeats).
    fn on_wake(&mut self, out: &mut Outbox) {
        let _ = out;
    }
}

/// Wakes a pump from any thread so that it calls [`Handler::on_wake`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct WakeHandle(Arc<EventFd>);

impl WakeHandle {
    /// Makes the pump call [`Handler::on_wake`] soon (wakes coalesce).
    pub fn wake(&self) {
        // An eventfd write only fails on counter overflow, which needs 2^64 wakes.
        let _ = self.0.signal();
    }
}

/// Which backend to use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BackendChoice {
    /// io_uring when the probe succeeds, else plain; [`BACKEND_ENV`] overrides.
    #[default]
    Auto,
    /// io_uring or an error ([`Error::UringUnavailable`]). Ignores [`BACKEND_ENV`].
    Uring,
    /// Plain syscalls. Ignores [`BACKEND_ENV`].
    Plain,
    /// Plain syscalls unless [`BACKEND_ENV`] says `uring`: for callers that measured the
    /// plain loop faster for their traffic.
    PreferPlain,
}

/// The backend a pump runs, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendKind {
    /// io_uring.
    Uring,
    /// epoll + read/write/recvmmsg/sendmmsg.
    Plain {
        /// Why io_uring was not used, when it was tried (e.g. `EPERM`).
        uring_refused: Option<String>,
    },
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Uring => f.write_str("io_uring"),
            Self::Plain {
                uring_refused: None,
            } => f.write_str("plain"),
            Self::Plain {
                uring_refused: Some(why),
            } => write!(f, "plain (io_uring refused: {why})"),
        }
    }
}

/// Tuning knobs. The defaults suit a sleeve port; benchmarks change them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PumpConfig {
    /// Backend selection.
    pub backend: BackendChoice,
    /// Most inputs per source handled per batch (plain: reads and `recvmmsg` size).
    pub batch_max: usize,
    /// io_uring: TAP reads kept armed.
    pub tap_reads_in_flight: usize,
    /// io_uring: UDP receives kept armed.
    pub udp_recvs_in_flight: usize,
    /// io_uring: read the TAP and the socket with multishot requests over provided
    /// buffers where the kernel has them (the default); off: the one-shot reads above,
    /// as on older kernels (tests keep that path working).
    pub uring_multishot: bool,
    /// Outbox byte room per batch.
    pub outbox_bytes_max: usize,
    /// Outbox datagrams per batch.
    pub outbox_datagrams_max: usize,
    /// Outbox TAP frames per batch.
    pub outbox_tap_frames_max: usize,
    /// Which queue of a multi-queue TAP this pump serves (0 for a single-queue one): in
    /// the thread's name.
    pub queue: usize,
    /// Pin the pump thread to this CPU (a multi-queue sleeve pins queue i to the i-th CPU
    /// it may use, so a flow's packets, sent from one queue, are received by one socket
    /// of a CPU-steered peer and stay in order).
    pub pin_cpu: Option<usize>,
}

impl Default for PumpConfig {
    fn default() -> Self {
        Self {
            backend: BackendChoice::Auto,
            batch_max: 32,
            tap_reads_in_flight: 16,
            udp_recvs_in_flight: 16,
            uring_multishot: true,
            outbox_bytes_max: OUTBOX_BYTES_MAX,
            outbox_datagrams_max: OUTBOX_DATAGRAMS_MAX,
            outbox_tap_frames_max: OUTBOX_TAP_FRAMES_MAX,
            queue: 0,
            pin_cpu: None,
        }
    }
}

/// Stops a pump from any thread. Cheap to clone.
#[derive(Debug, Clone)]
pub struct StopHandle(Arc<EventFd>);

impl StopHandle {
    /// Asks the pump to return from [`Pump::run`] after its current batch.
    pub fn stop(&self) {
        // An eventfd write only fails on counter overflow, which a stop cannot reach.
        let _ = self.0.signal();
    }
}

/// A TAP and a UDP socket, ready to be pumped by [`Pump::run`] or [`Pump::spawn`].
pub struct Pump {
    pub(crate) tap: Tap,
    pub(crate) udp: UdpSock,
    pub(crate) config: PumpConfig,
    pub(crate) counters: Arc<Counters>,
    pub(crate) stop: Arc<EventFd>,
    pub(crate) wake: Arc<EventFd>,
    ring: Option<IoUring>,
    /// The ring was created disabled and waits for its issuer thread to enable it.
    ring_disabled: bool,
    kind: BackendKind,
}

impl fmt::Debug for Pump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pump")
            .field("tap", &self.tap.name())
            .field("udp", &self.udp.local_addr())
            .field("backend", &self.kind)
            .finish_non_exhaustive()
    }
}

fn env_choice() -> Result<BackendChoice, Error> {
    match std::env::var(BACKEND_ENV) {
        Err(_) => Ok(BackendChoice::Auto),
        Ok(v) => match v.trim() {
            "" => Ok(BackendChoice::Auto),
            "plain" => Ok(BackendChoice::Plain),
            "uring" | "io_uring" => Ok(BackendChoice::Uring),
            _ => Err(Error::BadBackendEnv(v)),
        },
    }
}

impl Pump {
    /// Takes the TAP and the socket and picks the backend: probes io_uring (ring setup and
    /// the opcodes the loop needs) unless told to use plain. Call on any thread; the
    /// probe's result is in [`Pump::backend`].
    pub fn new(tap: Tap, udp: UdpSock, config: PumpConfig) -> Result<Self, Error> {
        let choice = match config.backend {
            BackendChoice::Auto => env_choice()?,
            BackendChoice::PreferPlain => match env_choice()? {
                BackendChoice::Auto => BackendChoice::Plain,
                forced => forced,
            },
            explicit => explicit,
        };
        let (ring, kind) = match choice {
            BackendChoice::Plain => (
                None::<(IoUring, bool)>,
                BackendKind::Plain {
                    uring_refused: None,
                },
            ),
            BackendChoice::Uring => {
                let ring = uring::probe(&config).map_err(Error::UringUnavailable)?;
                (Some(ring), BackendKind::Uring)
            }
            BackendChoice::Auto | BackendChoice::PreferPlain => match uring::probe(&config) {
                Ok(ring) => (Some(ring), BackendKind::Uring),
                Err(why) => (
                    None,
                    BackendKind::Plain {
                        uring_refused: Some(why),
                    },
                ),
            },
        };
        let stop = EventFd::new().map_err(|e| Error::sys("eventfd", tap.name(), e))?;
        let wake = EventFd::new().map_err(|e| Error::sys("eventfd", tap.name(), e))?;
        Ok(Self {
            tap,
            udp,
            config,
            counters: Arc::new(Counters::default()),
            stop: Arc::new(stop),
            wake: Arc::new(wake),
            ring_disabled: ring.as_ref().is_some_and(|r| r.1),
            ring: ring.map(|r| r.0),
            kind,
        })
    }

    /// The backend chosen, and why.
    pub fn backend(&self) -> &BackendKind {
        &self.kind
    }

    /// The backend for a status line: `io_uring`, `plain`, or
    /// `plain (io_uring refused: EPERM)`.
    pub fn backend_name(&self) -> String {
        self.kind.to_string()
    }

    /// The live counters (readable from any thread).
    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.counters)
    }

    /// A handle that stops [`Pump::run`].
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(Arc::clone(&self.stop))
    }

    /// A handle that makes the pump call [`Handler::on_wake`].
    pub fn wake_handle(&self) -> WakeHandle {
        WakeHandle(Arc::clone(&self.wake))
    }

    /// The TAP.
    pub fn tap(&self) -> &Tap {
        &self.tap
    }

    /// The UDP socket.
    pub fn udp(&self) -> &UdpSock {
        &self.udp
    }

    pub(crate) fn new_outbox(&self) -> Outbox {
        Outbox::new(
            self.config.outbox_bytes_max,
            self.config.outbox_datagrams_max,
            self.config.outbox_tap_frames_max,
            self.tap.vnet_hdr(),
        )
    }

    /// Runs the pump on the calling thread until the stop handle fires or an unrecoverable
    /// error (the ring or epoll failing) occurs. Per-packet errors are counted, not returned.
    pub fn run<H: Handler>(&mut self, handler: &mut H) -> Result<(), Error> {
        match self.ring.take() {
            Some(mut ring) => {
                if self.ring_disabled {
                    uring::enable_on_this_thread(&ring).map_err(|e| {
                        Error::sys("IORING_REGISTER_ENABLE_RINGS", self.tap.name(), e)
                    })?;
                    self.ring_disabled = false;
                }
                let res = uring::run(self, &mut ring, handler);
                self.ring = Some(ring);
                res
            }
            None => plain::run(self, handler),
        }
    }

    /// Runs the pump on a new thread named `weft-dp-<tap>` (`weft-dp<queue>-<tap>` for a
    /// queue other than 0), pinned to [`PumpConfig::pin_cpu`] when set (a refused pin
    /// leaves the thread unpinned).
    pub fn spawn<H: Handler + Send + 'static>(self, handler: H) -> Result<PumpThread<H>, Error> {
        let stop = self.stop_handle();
        let counters = self.counters();
        let kind = self.kind.clone();
        let name = match self.config.queue {
            0 => format!("weft-dp-{}", self.tap.name()),
            q => format!("weft-dp{q}-{}", self.tap.name()),
        };
        let pin = self.config.pin_cpu;
        let join = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                if let Some(cpu) = pin {
                    let _ = crate::sys::pin_to_cpu(cpu);
                }
                let (mut pump, mut handler) = (self, handler);
                let res = pump.run(&mut handler);
                (handler, res)
            })
            .map_err(|e| Error::sys("spawn", &name, e))?;
        Ok(PumpThread {
            join: Some(join),
            stop,
            counters,
            kind,
        })
    }
}

/// A pump running on its own thread. Dropping it stops and joins the thread.
#[derive(Debug)]
pub struct PumpThread<H> {
    join: Option<JoinHandle<(H, Result<(), Error>)>>,
    stop: StopHandle,
    counters: Arc<Counters>,
    kind: BackendKind,
}

impl<H> PumpThread<H> {
    /// The live counters.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// The backend the thread runs.
    pub fn backend(&self) -> &BackendKind {
        &self.kind
    }

    /// See [`Pump::backend_name`].
    pub fn backend_name(&self) -> String {
        self.kind.to_string()
    }

    /// A handle that stops the thread.
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// True once the thread has returned (stopped, or failed).
    pub fn is_finished(&self) -> bool {
        self.join.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stops the thread, waits for it, and gives back the handler with the run's result.
    /// A panic in the handler is resumed here.
    pub fn stop(mut self) -> (H, Result<(), Error>) {
        self.stop.stop();
        let join = self.join.take().expect("joined only here or in Drop");
        match join.join() {
            Ok(out) => out,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl<H> Drop for PumpThread<H> {
    fn drop(&mut self) {
        if let Some(join) = self.join.take() {
            self.stop.stop();
            let _ = join.join();
        }
    }
}
