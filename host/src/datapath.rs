//! The seam for the sleeve datapath: the UDP port the router shares with the per-packet
//! engine, and (later) the TAP port on the bridge pumped by `weft-uring-dp`.
//!
//! What it does now: own the UDP socket on the router's port, hand received datagrams
//! to the router (`Router::handle_datagram`) and send the datagrams the router asks for
//! (`Destination::Datagram`), counting what it drops. It checks `/dev/net/tun` at start,
//! because the sleeve needs it.
//!
//! What it does not do yet: move Ethernet frames. The per-packet engine lives in
//! `weft-core` (written by the lead) and is wired in here: a `weft_uring_dp::Pump` thread
//! owns the TAP (`weft_uring_dp::Tap`, enslaved to the bridge) and the UDP socket
//! (`weft_uring_dp::UdpSock` bound to the same port, replacing the tokio socket below);
//! its `Handler` calls the core engine for each frame/datagram and forwards control
//! datagrams to the router through the same channel `spawn_receiver` uses. `status()` and
//! `metrics()` are where the pump's `CounterSnapshot` shows up.

use crate::error::{Error, Result};
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// Largest datagram read from the underlay, in bytes.
pub(crate) const DATAGRAM_LEN_MAX: usize = 65_535;

/// Counters of the control part of the datapath.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Datagrams received and handed to the router.
    pub(crate) datagrams_in: AtomicU64,
    /// Datagrams sent for the router.
    pub(crate) datagrams_out: AtomicU64,
    /// Datagrams not sent: the socket buffer was full.
    pub(crate) drops_send_full: AtomicU64,
    /// Datagrams not sent: another send error (unreachable, ...).
    pub(crate) drops_send_error: AtomicU64,
    /// Datagrams received but dropped because the router was busy.
    pub(crate) drops_recv_busy: AtomicU64,
}

/// The datapath of one router.
#[derive(Debug)]
pub(crate) struct Datapath {
    udp: Arc<UdpSocket>,
    counters: Arc<Counters>,
    mode: &'static str,
}

impl Datapath {
    /// Binds UDP `port` (IPv6 any, which also takes IPv4) and checks that the sleeve can
    /// run. Call from inside the tokio runtime.
    pub(crate) fn open(port: u16, tun_path: &Path) -> Result<Self> {
        if !tun_path.exists() {
            return Err(Error::NoTun);
        }
        let std_sock = bind_dual_stack(port)?;
        let udp = UdpSocket::from_std(std_sock)
            .map_err(|e| Error::Other(format!("register UDP socket: {e}")))?;
        Ok(Self {
            udp: Arc::new(udp),
            counters: Arc::new(Counters::default()),
            mode: "sleeve",
        })
    }

    /// Sends one datagram for the router; never waits: a full buffer drops and counts.
    pub(crate) fn send_datagram(&self, to: SocketAddr, bytes: &[u8]) {
        let to = match (to, self.udp.local_addr()) {
            (SocketAddr::V4(v4), Ok(SocketAddr::V6(_))) => {
                SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
            }
            _ => to,
        };
        match self.udp.try_send_to(bytes, to) {
            Ok(_) => {
                self.counters.datagrams_out.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                self.counters
                    .drops_send_full
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.counters
                    .drops_send_error
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Starts the task that reads datagrams and passes them on with `wrap`; a full
    /// channel drops the datagram (UDP may be lost anyway) and counts it.
    pub(crate) fn spawn_receiver<T: Send + 'static>(
        &self,
        tx: mpsc::Sender<T>,
        wrap: impl Fn(SocketAddr, Vec<u8>) -> T + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let udp = Arc::clone(&self.udp);
        let counters = Arc::clone(&self.counters);
        tokio::spawn(async move {
            let mut buf = vec![0u8; DATAGRAM_LEN_MAX];
            loop {
                let (n, from) = match udp.recv_from(&mut buf).await {
                    Ok(x) => x,
                    // ICMP errors surface here on Linux; they are not fatal.
                    Err(_) => continue,
                };
                let from = canonical(from);
                match tx.try_send(wrap(from, buf[..n].to_vec())) {
                    Ok(()) => {
                        counters.datagrams_in.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        counters.drops_recv_busy.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
        })
    }

    /// What `weft status` shows about the datapath.
    pub(crate) fn status(&self) -> serde_json::Value {
        let c = &self.counters;
        serde_json::json!({
            "mode": self.mode,
            "forwarding": false,
            "note": "the per-packet sleeve engine is not wired in yet; only control datagrams flow",
            "udp_port": self.udp.local_addr().map(|a| a.port()).unwrap_or(0),
            "datagrams_in": c.datagrams_in.load(Ordering::Relaxed),
            "datagrams_out": c.datagrams_out.load(Ordering::Relaxed),
            "drops": {
                "send_buffer_full": c.drops_send_full.load(Ordering::Relaxed),
                "send_error": c.drops_send_error.load(Ordering::Relaxed),
                "recv_router_busy": c.drops_recv_busy.load(Ordering::Relaxed),
            },
        })
    }

    /// Prometheus lines for the datapath counters.
    pub(crate) fn metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let c = &self.counters;
        let _ = writeln!(
            out,
            "# HELP weft_datapath_datagrams_total UDP datagrams on the router's port."
        );
        let _ = writeln!(out, "# TYPE weft_datapath_datagrams_total counter");
        let _ = writeln!(
            out,
            "weft_datapath_datagrams_total{{direction=\"in\"}} {}",
            c.datagrams_in.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "weft_datapath_datagrams_total{{direction=\"out\"}} {}",
            c.datagrams_out.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP weft_datapath_drops_total Datagrams the datapath dropped, by reason."
        );
        let _ = writeln!(out, "# TYPE weft_datapath_drops_total counter");
        for (reason, v) in [
            ("send_buffer_full", &c.drops_send_full),
            ("send_error", &c.drops_send_error),
            ("recv_router_busy", &c.drops_recv_busy),
        ] {
            let _ = writeln!(
                out,
                "weft_datapath_drops_total{{reason=\"{reason}\"}} {}",
                v.load(Ordering::Relaxed)
            );
        }
    }
}

/// IPv4-mapped IPv6 sources (from the dual-stack socket) shown as plain IPv4.
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

fn bind_dual_stack(port: u16) -> Result<std::net::UdpSocket> {
    let any6 = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0));
    let sock = match std::net::UdpSocket::bind(any6) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            return Err(Error::PortInUse { port, proto: "udp" });
        }
        // No IPv6 in this namespace: IPv4 only.
        Err(_) => {
            std::net::UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], port))).map_err(|e| {
                if e.kind() == std::io::ErrorKind::AddrInUse {
                    Error::PortInUse { port, proto: "udp" }
                } else {
                    Error::Other(format!("bind UDP port {port}: {e}"))
                }
            })?
        }
    };
    sock.set_nonblocking(true)
        .map_err(|e| Error::Other(format!("UDP port {port}: {e}")))?;
    Ok(sock)
}
