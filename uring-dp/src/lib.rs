//! weft's userspace "sleeve" datapath I/O: a TAP device and a UDP socket pumped by one
//! thread, through io_uring where the kernel and sandbox allow it and through plain
//! epoll + `read`/`write`/`recvmmsg`/`sendmmsg` where not.
//!
//! What it does: open the TAP ([`Tap`], optionally with virtio_net_hdr and TSO/USO
//! offloads) and the underlay socket ([`UdpSock`], big buffers, GSO/GRO); run a [`Pump`]
//! that calls a [`Handler`] for every frame read from the TAP and every datagram received,
//! and then sends/writes what the handler queued in its [`Outbox`], batch by batch.
//! What it does not: framing, crypto, peer or MAC bookkeeping (that is `weft-core` and the
//! host), link configuration (netlink, in the host), tokio (the datapath threads block in
//! the kernel on their own).
//!
//! Batching: the pump gathers what one wake-up delivers (up to `PumpConfig::batch_max`
//! reads per source), calls the handler for each, calls [`Handler::on_batch_end`], then
//! flushes the outbox with one `sendmmsg` (plain) or one `io_uring_enter` (io_uring).

#![allow(unsafe_code)]

mod bufring;
mod cmsg;
mod counters;
mod crew;
mod gso;
mod outbox;
mod plain;
mod pump;
mod sync;
mod sys;
mod tap;
mod udp;
mod uring;
mod vnet;

use std::io;

pub use cmsg::{
    CmsgBuf, GSO_CMSG_SPACE, RECV_CMSG_SPACE, SOL_UDP, UDP_GRO, UDP_SEGMENT, decode_gro, encode_gso,
};
pub use counters::{CounterSnapshot, Counters};
pub use crew::{CREW_HELPERS_MAX, Crew};
pub use outbox::{
    OUTBOX_BYTES_MAX, OUTBOX_DATAGRAMS_MAX, OUTBOX_INPUT_ROOM_BYTES, OUTBOX_TAP_FRAMES_MAX, Outbox,
    OutboxError,
};
pub use pump::{
    BACKEND_ENV, BackendChoice, BackendKind, Handler, Pump, PumpConfig, PumpThread, StopHandle,
    WakeHandle,
};
pub use sys::allowed_cpus;
pub use tap::{
    IFNAME_LEN_MAX, TAP_FRAME_LEN_MAX, Tap, TapFrame, TapOffloads, TapOptions, interface_exists,
};
pub use udp::{
    GSO_SEGMENTS_MAX, RecvBatch, RecvMeta, SendBatch, SendReport, SockBufSize, Transmit,
    UDP_PAYLOAD_LEN_MAX, UdpOptions, UdpSock, route_mtu,
};
pub use vnet::{
    VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN,
    VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6,
    VIRTIO_NET_HDR_GSO_UDP, VIRTIO_NET_HDR_GSO_UDP_L4, VNET_HDR_LEN, VNET_HDR_MRG_LEN,
    VirtioNetHdr, VnetHdrError, VnetHdrLen,
};

/// Errors setting up or running the datapath; each names the syscall and the object.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A syscall failed.
    #[error("{op} ({what}): {source}")]
    Sys {
        /// the syscall or ioctl
        op: &'static str,
        /// the interface, address or object it was about
        what: String,
        /// the OS error
        source: io::Error,
    },
    /// The TAP name is empty of meaning to the kernel (too long, NUL or '/').
    #[error("invalid TAP name {0:?}: at most {IFNAME_LEN_MAX} bytes, no NUL or '/'")]
    BadTapName(String),
    /// Offloads need virtio_net_hdr.
    #[error("TAP {0}: offloads need the virtio_net_hdr (vnet_hdr) to be on")]
    OffloadWithoutVnetHdr(String),
    /// io_uring was required (config or `WEFT_DATAPATH_BACKEND=uring`) but is refused.
    #[error("io_uring backend required but unavailable: {0}; unset {BACKEND_ENV} or use plain")]
    UringUnavailable(String),
    /// `WEFT_DATAPATH_BACKEND` has a value other than `plain`, `uring` or empty.
    #[error("{BACKEND_ENV}={0:?} is not understood; use plain or uring")]
    BadBackendEnv(String),
}

impl Error {
    /// The OS error number behind a failed syscall, for callers that act on it (EBUSY,
    /// EADDRINUSE) rather than on the message text.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Sys { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    pub(crate) fn sys(op: &'static str, what: &str, source: io::Error) -> Self {
        Self::Sys {
            op,
            what: what.to_owned(),
            source,
        }
    }
}
