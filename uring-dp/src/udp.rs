//! `UdpSock`: the sleeve's underlay socket. Non-blocking, big buffers (`SO_*BUFFORCE`
//! with a fallback), optional GSO on send (`UDP_SEGMENT` cmsg) and GRO on receive
//! (`UDP_GRO`, segment size from the cmsg), single and batched (`sendmmsg`/`recvmmsg`) I/O.
//!
//! It does no framing, crypto or peer bookkeeping; it moves datagrams.

use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use crate::Error;
use crate::cmsg::{self, CmsgBuf, SOL_UDP, UDP_GRO, UDP_SEGMENT};
use crate::counters::CounterSnapshot;
use crate::gso::wire_datagrams;
use crate::sys::{
    cvt, cvt_size, getsockopt_int, setsockopt_int, sockaddr_from, sockaddr_to, write_sockaddr,
};

/// Largest UDP payload (and so the receive buffer each slot needs with GRO on), and most
/// segments one GSO send may carry: defined once, in `weft_core::wire`.
pub use weft_core::wire::{GSO_SEGMENTS_MAX, UDP_PAYLOAD_LEN_MAX};

/// How to set up the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpOptions {
    /// Receive buffer to ask for, in bytes.
    pub rcvbuf_bytes: usize,
    /// Send buffer to ask for, in bytes.
    pub sndbuf_bytes: usize,
    /// Use `UDP_SEGMENT` when the kernel supports it.
    pub gso: bool,
    /// Turn on `UDP_GRO` when the kernel supports it.
    pub gro: bool,
    /// Set `SO_REUSEPORT` before binding, so that the sockets of a multi-queue sleeve
    /// share one port (see [`UdpSock::steer_by_cpu`]).
    pub reuse_port: bool,
}

impl Default for UdpOptions {
    fn default() -> Self {
        Self {
            rcvbuf_bytes: 8 << 20,
            sndbuf_bytes: 8 << 20,
            gso: true,
            gro: true,
            reuse_port: false,
        }
    }
}

/// What a socket buffer request turned into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockBufSize {
    /// Bytes asked for.
    pub requested_bytes: usize,
    /// Bytes the kernel reports (`getsockopt`; the kernel doubles what it sets, to cover
    /// its bookkeeping, so a granted request reads back as twice the bytes asked for).
    pub got_bytes: usize,
    /// True when `SO_*BUFFORCE` worked (so the sysctl maximum did not apply).
    pub forced: bool,
}

/// One datagram to send.
#[derive(Debug, Clone, Copy)]
pub struct Transmit<'a> {
    /// Destination.
    pub to: SocketAddr,
    /// Payload; with `segment_size`, several segments back to back (the last may be short).
    pub data: &'a [u8],
    /// `Some(n)`: send as GSO, the kernel cuts `data` into `n`-byte datagrams.
    pub segment_size: Option<u16>,
}

/// Where a received datagram came from and how to cut it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvMeta {
    /// Sender.
    pub from: SocketAddr,
    /// Bytes received.
    pub len: usize,
    /// With GRO: the size of each coalesced segment (the last may be short).
    pub segment_size: Option<u16>,
    /// The datagram did not fit the buffer and was cut.
    pub truncated: bool,
}

impl RecvMeta {
    /// Iterates over the datagrams of a (possibly GRO-coalesced) receive buffer.
    pub fn segments_mut<'a>(
        &self,
        buf: &'a mut [u8],
    ) -> impl Iterator<Item = &'a mut [u8]> + use<'a> {
        let len = self.len.min(buf.len());
        let step = match self.segment_size {
            Some(n) if n > 0 => usize::from(n),
            _ => len.max(1),
        };
        buf[..len].chunks_mut(step)
    }

    /// Iterates over the datagrams of a (possibly GRO-coalesced) receive buffer.
    pub fn segments<'a>(&self, buf: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + use<'a> {
        let data = &buf[..self.len.min(buf.len())];
        let step = match self.segment_size {
            Some(n) if n > 0 => usize::from(n),
            _ => data.len().max(1),
        };
        data.chunks(step)
    }
}

/// A bound UDP socket.
#[derive(Debug)]
pub struct UdpSock {
    fd: OwnedFd,
    local: SocketAddr,
    rcvbuf: SockBufSize,
    sndbuf: SockBufSize,
    gso: bool,
    gro: bool,
}

fn set_buf(fd: RawFd, force: libc::c_int, plain: libc::c_int, bytes: usize) -> SockBufSize {
    let want = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    let forced = setsockopt_int(fd, libc::SOL_SOCKET, force, want).is_ok();
    if !forced {
        // Without CAP_NET_ADMIN the kernel caps this at net.core.{r,w}mem_max; not an error.
        let _ = setsockopt_int(fd, libc::SOL_SOCKET, plain, want);
    }
    let got = getsockopt_int(fd, libc::SOL_SOCKET, plain).unwrap_or(0);
    SockBufSize {
        requested_bytes: bytes,
        got_bytes: usize::try_from(got).unwrap_or(0),
        forced,
    }
}

impl UdpSock {
    /// Binds a non-blocking UDP socket on `addr` (v4 or v6; v6 sockets are v6-only) in the
    /// calling thread's network namespace.
    pub fn bind(addr: SocketAddr, opts: &UdpOptions) -> Result<Self, Error> {
        let what = addr.to_string();
        let family = if addr.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        // SAFETY: socket takes plain ints and returns a new fd or -1.
        let raw = cvt(unsafe {
            libc::socket(
                family,
                libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::IPPROTO_UDP,
            )
        })
        .map_err(|e| Error::sys("socket", &what, e))?;
        // SAFETY: `raw` was just returned by socket and belongs to nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        if addr.is_ipv6() {
            setsockopt_int(raw, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)
                .map_err(|e| Error::sys("IPV6_V6ONLY", &what, e))?;
        }
        let rcvbuf = set_buf(
            raw,
            libc::SO_RCVBUFFORCE,
            libc::SO_RCVBUF,
            opts.rcvbuf_bytes,
        );
        let sndbuf = set_buf(
            raw,
            libc::SO_SNDBUFFORCE,
            libc::SO_SNDBUF,
            opts.sndbuf_bytes,
        );

        if opts.reuse_port {
            setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)
                .map_err(|e| Error::sys("SO_REUSEPORT", &what, e))?;
        }
        let (storage, len) = sockaddr_from(&addr);
        // SAFETY: storage/len come from sockaddr_from and describe a valid sockaddr.
        cvt(unsafe { libc::bind(raw, (&raw const storage).cast(), len) })
            .map_err(|e| Error::sys("bind", &what, e))?;

        // GSO: the socket option is the probe (as quinn-udp does); a 0 segment size leaves
        // sends unsegmented unless a cmsg asks.
        let gso = opts.gso && setsockopt_int(raw, SOL_UDP, UDP_SEGMENT, 0).is_ok();
        let gro = opts.gro && setsockopt_int(raw, SOL_UDP, UDP_GRO, 1).is_ok();

        let mut local_storage = storage;
        let mut local_len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: the pointers describe a live sockaddr_storage and its length.
        cvt(unsafe { libc::getsockname(raw, (&raw mut local_storage).cast(), &raw mut local_len) })
            .map_err(|e| Error::sys("getsockname", &what, e))?;
        let local = sockaddr_to(&local_storage).unwrap_or(addr);
        Ok(Self {
            fd,
            local,
            rcvbuf,
            sndbuf,
            gso,
            gro,
        })
    }

    /// For the `queues` sockets of one `SO_REUSEPORT` group, bound in order (this one among
    /// them): each datagram goes to socket `cpu % queues`, `cpu` the one its receive ran
    /// on, instead of the 4-tuple hash (which puts everything from one peer on one
    /// socket, since all of a peer's queues send from one port). A classic BPF program
    /// (`SO_ATTACH_REUSEPORT_CBPF`, the kernel's own example: load the CPU, modulo, return).
    pub fn steer_by_cpu(&self, queues: usize) -> Result<(), Error> {
        const SKF_AD_OFF: u32 = (-0x1000i32) as u32;
        const SKF_AD_CPU: u32 = 36;
        // BPF_LD | BPF_W | BPF_ABS, BPF_ALU | BPF_MOD | BPF_K, BPF_RET | BPF_A.
        const BPF_LD_W_ABS: u16 = 0x20;
        const BPF_ALU_MOD_K: u16 = 0x94;
        const BPF_RET_A: u16 = 0x16;
        let n = u32::try_from(queues.max(1)).unwrap_or(u32::MAX);
        let mut code = [
            libc::sock_filter {
                code: BPF_LD_W_ABS,
                jt: 0,
                jf: 0,
                k: SKF_AD_OFF.wrapping_add(SKF_AD_CPU),
            },
            libc::sock_filter {
                code: BPF_ALU_MOD_K,
                jt: 0,
                jf: 0,
                k: n,
            },
            libc::sock_filter {
                code: BPF_RET_A,
                jt: 0,
                jf: 0,
                k: 0,
            },
        ];
        let prog = libc::sock_fprog {
            len: code.len() as u16,
            filter: code.as_mut_ptr(),
        };
        // SAFETY: the pointer and length describe `prog`, which points at `code`; both
        // live on our stack for the call (the kernel copies the program).
        cvt(unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_REUSEPORT_CBPF,
                (&raw const prog).cast(),
                size_of::<libc::sock_fprog>() as libc::socklen_t,
            )
        })
        .map(|_| ())
        .map_err(|e| Error::sys("SO_ATTACH_REUSEPORT_CBPF", &self.local.to_string(), e))
    }

    /// The bound address (with the port the kernel chose when asked for 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// What the receive buffer request turned into.
    pub fn rcvbuf(&self) -> SockBufSize {
        self.rcvbuf
    }

    /// What the send buffer request turned into.
    pub fn sndbuf(&self) -> SockBufSize {
        self.sndbuf
    }

    /// True when sends may carry `segment_size` (UDP GSO).
    pub fn gso_enabled(&self) -> bool {
        self.gso
    }

    /// True when receives may be coalesced (UDP GRO): size receive buffers for
    /// [`UDP_PAYLOAD_LEN_MAX`] and cut them with [`RecvMeta::segments`].
    pub fn gro_enabled(&self) -> bool {
        self.gro
    }

    /// Sets or clears `O_NONBLOCK` (the socket opens non-blocking).
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        crate::sys::set_nonblocking(self.fd.as_raw_fd(), on)
    }

    /// Sends one datagram (or one GSO batch). Without GSO support, a `segment_size` is
    /// honoured by sending the segments one by one. Returns the payload bytes sent.
    pub fn send(&self, t: &Transmit<'_>) -> io::Result<usize> {
        match t.segment_size {
            Some(_) if !self.gso => self.send_each(t),
            _ => {
                let mut hdr = MsgSlot::default();
                let msg = hdr.prepare_send(t);
                // SAFETY: msg points into `hdr` and `t.data`, both live for the call.
                cvt_size(unsafe { libc::sendmsg(self.fd.as_raw_fd(), &msg, 0) })
            }
        }
    }

    /// Sends the datagrams of `t` one by one (its `segment_size` cut here, not by GSO):
    /// for kernels without GSO, and for a GSO send the kernel refused (see
    /// with segments over the path MTU), whose datagrams the kernel may still fragment.
    /// Stops at the first error. Returns the payload bytes sent.
    pub fn send_each(&self, t: &Transmit<'_>) -> io::Result<usize> {
        let step = usize::from(t.segment_size.unwrap_or(u16::MAX).max(1));
        let mut sent = 0;
        for chunk in t.data.chunks(step) {
            sent += self.send(&Transmit {
                to: t.to,
                data: chunk,
                segment_size: None,
            })?;
        }
        Ok(sent)
    }

    /// Receives one datagram (or one GRO-coalesced run) into `buf`. `WouldBlock` when none.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<RecvMeta> {
        let mut slot = MsgSlot::default();
        let mut msg = slot.prepare_recv(buf);
        // SAFETY: msg points into `slot` and `buf`, both live and exclusively ours.
        let n = cvt_size(unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, 0) })?;
        Ok(slot.finish_recv(&msg, n))
    }

    /// Sends a batch with `sendmmsg`, `batch.capacity()` at a time. A datagram the kernel
    /// refuses (e.g. unreachable destination, full buffer) is skipped and counted; the rest
    /// go on. Never blocks.
    pub fn send_batch<'a>(
        &self,
        batch: &mut SendBatch,
        msgs: impl IntoIterator<Item = Transmit<'a>>,
    ) -> SendReport {
        let mut report = SendReport::default();
        let mut iter = msgs.into_iter();
        // The transmits of the chunk in flight, to send a refused GSO batch again one by one.
        let mut chunk: Vec<Transmit<'a>> = Vec::with_capacity(batch.slots.len());
        loop {
            chunk.clear();
            // Fill up to capacity; the msghdrs point at payloads that live for 'a.
            let (mut n, mut taken) = (0, 0);
            for t in iter.by_ref().take(batch.slots.len()) {
                taken += 1;
                if self.send_if_no_gso(&t, &mut report) {
                    continue;
                }
                let msg = batch.slots[n].prepare_send(&t);
                batch.hdrs[n] = libc::mmsghdr {
                    msg_hdr: msg,
                    msg_len: 0,
                };
                batch.sizes[n] = (wire_datagrams(&t), t.data.len());
                chunk.push(t);
                n += 1;
            }
            if taken == 0 {
                return report;
            }
            let mut start = 0;
            while start < n {
                // SAFETY: hdrs[start..n] were filled above with pointers into batch.slots
                // and into payloads borrowed for 'a, all live for the call.
                let ret = unsafe {
                    libc::sendmmsg(
                        self.fd.as_raw_fd(),
                        batch.hdrs[start..].as_mut_ptr(),
                        (n - start) as libc::c_uint,
                        libc::MSG_DONTWAIT,
                    )
                };
                if ret < 0 {
                    let err = io::Error::last_os_error();
                    if err.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    // The first message was refused: a GSO batch the kernel would not cut
                    // goes again datagram by datagram; else skip it, go on with the rest.
                    self.send_refused(&chunk[start], err.raw_os_error(), &mut report);
                    start += 1;
                    continue;
                }
                for &(datagrams, bytes) in &batch.sizes[start..start + ret as usize] {
                    report.sent += datagrams;
                    report.bytes += bytes;
                }
                start += ret as usize;
            }
        }
    }

    /// Receives up to `batch.capacity()` datagrams with one `recvmmsg`. `WouldBlock` when
    /// none is waiting. Read them with [`RecvBatch::get`].
    pub fn recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        let n = batch.slots.len();
        for i in 0..n {
            let (slot, buf) = (&mut batch.slots[i], &mut batch.bufs[i][..]);
            batch.hdrs[i] = libc::mmsghdr {
                msg_hdr: slot.prepare_recv(buf),
                msg_len: 0,
            };
        }
        // SAFETY: hdrs[..n] point into batch.slots and batch.bufs, heap memory owned by
        // `batch`, which we borrow mutably for the call.
        let ret = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                batch.hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        let got = cvt(ret)? as usize;
        for i in 0..got {
            let h = batch.hdrs[i];
            batch.metas[i] = batch.slots[i].finish_recv(&h.msg_hdr, h.msg_len as usize);
        }
        batch.len = got;
        Ok(got)
    }
}

impl AsRawFd for UdpSock {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for UdpSock {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The per-message pieces a `msghdr` points at: address, iovec, control buffer.
/// Also used by the io_uring backend, whose in-flight `SendMsg`/`RecvMsg` point into one.
pub(crate) struct MsgSlot {
    pub(crate) addr: libc::sockaddr_storage,
    pub(crate) iov: libc::iovec,
    pub(crate) control: CmsgBuf,
}

impl Default for MsgSlot {
    fn default() -> Self {
        Self {
            // SAFETY: sockaddr_storage is plain old data; all-zero is valid.
            addr: unsafe { mem::zeroed() },
            iov: libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            },
            control: CmsgBuf::default(),
        }
    }
}

// SAFETY: the raw pointer in `iov` is only ever set to memory owned alongside the slot (a
// batch's buffers or an outbox arena) right before a syscall or SQE; it is never
// dereferenced by Rust code, so moving the slot to another thread is harmless.
unsafe impl Send for MsgSlot {}

pub(crate) fn zeroed_msghdr() -> libc::msghdr {
    // SAFETY: msghdr is plain old data (pointers and ints); all-zero is valid.
    unsafe { mem::zeroed() }
}

/// `n` empty message slots and the `mmsghdr`s a batch points into them before each call.
fn empty_msgs(n: usize) -> (Box<[MsgSlot]>, Box<[libc::mmsghdr]>) {
    let slots = (0..n).map(|_| MsgSlot::default()).collect();
    let hdrs = (0..n)
        .map(|_| libc::mmsghdr {
            msg_hdr: zeroed_msghdr(),
            msg_len: 0,
        })
        .collect();
    (slots, hdrs)
}

impl MsgSlot {
    /// Fills the slot for sending `t` and returns a msghdr pointing into it and `t.data`.
    pub(crate) fn prepare_send(&mut self, t: &Transmit<'_>) -> libc::msghdr {
        let addr_len = write_sockaddr(&t.to, &mut self.addr);
        self.iov = libc::iovec {
            iov_base: t.data.as_ptr().cast_mut().cast(),
            iov_len: t.data.len(),
        };
        let mut msg = zeroed_msghdr();
        msg.msg_name = (&raw mut self.addr).cast();
        msg.msg_namelen = addr_len;
        msg.msg_iov = &raw mut self.iov;
        msg.msg_iovlen = 1;
        if let Some(seg) = t.segment_size
            && let Some(used) = cmsg::encode_gso(&mut self.control.0, seg)
        {
            msg.msg_control = self.control.0.as_mut_ptr().cast();
            msg.msg_controllen = used as _;
        }
        msg
    }

    /// Fills the slot for receiving into `buf` and returns a msghdr pointing into both.
    pub(crate) fn prepare_recv(&mut self, buf: &mut [u8]) -> libc::msghdr {
        self.iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut msg = zeroed_msghdr();
        msg.msg_name = (&raw mut self.addr).cast();
        msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &raw mut self.iov;
        msg.msg_iovlen = 1;
        msg.msg_control = self.control.0.as_mut_ptr().cast();
        msg.msg_controllen = self.control.0.len() as _;
        msg
    }

    /// Reads the result of a receive through a msghdr from [`MsgSlot::prepare_recv`].
    pub(crate) fn finish_recv(&self, msg: &libc::msghdr, len: usize) -> RecvMeta {
        // msg_controllen is size_t on glibc, socklen_t on musl.
        #[allow(clippy::unnecessary_cast)]
        let control_len = (msg.msg_controllen as usize).min(self.control.0.len());
        RecvMeta {
            from: sockaddr_to(&self.addr).unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
            len,
            segment_size: cmsg::decode_gro(&self.control.0[..control_len]),
            truncated: msg.msg_flags & libc::MSG_TRUNC != 0,
        }
    }
}

/// Reusable state for [`UdpSock::send_batch`]: `capacity` messages per `sendmmsg`.
pub struct SendBatch {
    slots: Box<[MsgSlot]>,
    hdrs: Box<[libc::mmsghdr]>,
    /// (datagrams on the wire, payload bytes) of each filled message.
    sizes: Box<[(usize, usize)]>,
}

// SAFETY: `hdrs` holds raw pointers only into `slots` and caller buffers, set right before
// each sendmmsg and never dereferenced by Rust code.
unsafe impl Send for SendBatch {}

impl SendBatch {
    /// Room for `capacity` (at least 1) messages per `sendmmsg`.
    pub fn new(capacity: usize) -> Self {
        let n = capacity.max(1);
        let (slots, hdrs) = empty_msgs(n);
        Self {
            slots,
            hdrs,
            sizes: vec![(0, 0); n].into_boxed_slice(),
        }
    }

    /// Messages per `sendmmsg`.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }
}

/// What [`UdpSock::send_batch`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendReport {
    /// Datagrams on the wire (GSO segments counted one by one).
    pub sent: usize,
    /// Payload bytes handed to the kernel.
    pub bytes: usize,
    /// Transmits refused by the kernel and skipped.
    pub failed: usize,
    /// errno of the last refusal.
    pub last_error: Option<i32>,
    /// GSO batches the kernel refused and that were sent again one datagram at a time.
    pub gso_cut: usize,
}

impl SendReport {
    /// Adds what was sent to a pump's batch tallies (both backends count sends this way).
    pub(crate) fn count_into(&self, d: &mut CounterSnapshot) {
        d.udp_datagrams_out += self.sent as u64;
        d.udp_bytes_out += self.bytes as u64;
        d.drop_udp_send += self.failed as u64;
        d.udp_gso_cut += self.gso_cut as u64;
    }
}

/// The IP MTU of the route this host would use to reach `to` (the egress link's MTU, or a
/// smaller path MTU the kernel has learnt): what one datagram to `to` may fill, headers
/// included, without fragmenting. Asks the kernel with a throwaway connected socket.
pub fn route_mtu(to: SocketAddr) -> io::Result<u32> {
    let any: SocketAddr = match to {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = std::net::UdpSocket::bind(any)?;
    sock.connect(to)?;
    let (level, name) = match to {
        SocketAddr::V4(_) => (libc::IPPROTO_IP, libc::IP_MTU),
        SocketAddr::V6(_) => (libc::IPPROTO_IPV6, libc::IPV6_MTU),
    };
    let mtu = getsockopt_int(sock.as_raw_fd(), level, name)?;
    u32::try_from(mtu).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
}

/// Reusable buffers for [`UdpSock::recv_batch`].
pub struct RecvBatch {
    slots: Box<[MsgSlot]>,
    hdrs: Box<[libc::mmsghdr]>,
    bufs: Box<[Box<[u8]>]>,
    metas: Box<[RecvMeta]>,
    len: usize,
}

// SAFETY: as for SendBatch: pointers only into the batch's own heap memory.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    /// `capacity` (at least 1) buffers of `buf_len` bytes each.
    pub fn new(capacity: usize, buf_len: usize) -> Self {
        let n = capacity.max(1);
        let unspec = RecvMeta {
            from: SocketAddr::from(([0, 0, 0, 0], 0)),
            len: 0,
            segment_size: None,
            truncated: false,
        };
        let (slots, hdrs) = empty_msgs(n);
        Self {
            slots,
            hdrs,
            bufs: (0..n)
                .map(|_| vec![0u8; buf_len].into_boxed_slice())
                .collect(),
            metas: vec![unspec; n].into_boxed_slice(),
            len: 0,
        }
    }

    /// Messages per `recvmmsg`.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Messages received by the last [`UdpSock::recv_batch`].
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the last receive got nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `i`th message of the last receive: its metadata and buffer (cut it with
    /// [`RecvMeta::segments`]).
    pub fn get_mut(&mut self, i: usize) -> Option<(RecvMeta, &mut [u8])> {
        (i < self.len).then(|| {
            let meta = self.metas[i];
            let len = meta.len.min(self.bufs[i].len());
            (meta, &mut self.bufs[i][..len])
        })
    }

    /// The `i`th message of the last receive: its metadata and buffer (cut it with
    /// [`RecvMeta::segments`]).
    pub fn get(&self, i: usize) -> Option<(RecvMeta, &[u8])> {
        (i < self.len).then(|| {
            let meta = self.metas[i];
            (meta, &self.bufs[i][..meta.len.min(self.bufs[i].len())])
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn pair() -> (UdpSock, UdpSock) {
        let opts = UdpOptions {
            rcvbuf_bytes: 1 << 20,
            sndbuf_bytes: 1 << 20,
            gso: true,
            gro: false,
            reuse_port: false,
        };
        let a = UdpSock::bind("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
        let b = UdpSock::bind("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
        (a, b)
    }

    pub(crate) fn wait_readable(s: &UdpSock) {
        let mut pfd = libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one live pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, 2000) };
        assert_eq!(n, 1, "socket never became readable");
    }

    #[test]
    fn a_blocking_socket_waits_for_the_datagram_a_non_blocking_one_refuses() {
        let (a, b) = pair();
        let mut buf = [0u8; 64];
        let err = b.recv(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        b.set_nonblocking(false).unwrap();
        let to = b.local_addr();
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(std::time::Duration::from_millis(50));
                let t = Transmit {
                    to,
                    data: b"late",
                    segment_size: None,
                };
                a.send(&t).unwrap();
            });
            let meta = b.recv(&mut buf).unwrap();
            assert_eq!(&buf[..meta.len], b"late");
        });
        b.set_nonblocking(true).unwrap();
        let err = b.recv(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn buffers_report_what_the_kernel_gave() {
        let (a, _) = pair();
        let r = a.rcvbuf();
        assert_eq!(r.requested_bytes, 1 << 20);
        assert!(r.got_bytes > 0);
        if r.forced {
            assert_eq!(r.got_bytes, 2 << 20, "forced size reads back doubled");
        }
    }

    #[test]
    fn batch_send_and_receive_over_loopback() {
        let (a, b) = pair();
        let payloads: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 100 + usize::from(i)]).collect();
        let mut sb = SendBatch::new(2);
        let report = a.send_batch(
            &mut sb,
            payloads.iter().map(|p| Transmit {
                to: b.local_addr(),
                data: p,
                segment_size: None,
            }),
        );
        assert_eq!(report.sent, 5);
        assert_eq!(report.failed, 0);
        wait_readable(&b);
        let mut rb = RecvBatch::new(8, 2048);
        let mut got = Vec::new();
        while got.len() < 5 {
            match b.recv_batch(&mut rb) {
                Ok(_) => {
                    for i in 0..rb.len() {
                        let (meta, data) = rb.get(i).unwrap();
                        assert_eq!(meta.from, a.local_addr());
                        got.push(data.to_vec());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_readable(&b),
                Err(e) => panic!("recv_batch: {e}"),
            }
        }
        assert_eq!(got, payloads);
    }

    #[test]
    fn a_gso_send_the_kernel_refuses_goes_out_datagram_by_datagram() {
        let (a, b) = pair();
        if !a.gso_enabled() {
            eprintln!("skipped: no UDP GSO on this kernel");
            return;
        }
        // 200 segments: over what the kernel cuts per GSO send (64, 128 since 6.x), so it
        // refuses the send (EINVAL), as it does segments over the path MTU.
        let data: Vec<u8> = (0..2000u32).map(|i| (i / 10) as u8).collect();
        let t = Transmit {
            to: b.local_addr(),
            data: &data,
            segment_size: Some(10),
        };
        assert!(crate::gso::gso_refused(
            a.send(&t).err().and_then(|e| e.raw_os_error())
        ));
        let mut sb = SendBatch::new(4);
        let small = [7u8; 30];
        let report = a.send_batch(
            &mut sb,
            [
                t,
                Transmit {
                    to: b.local_addr(),
                    data: &small,
                    segment_size: None,
                },
            ],
        );
        assert_eq!((report.sent, report.failed, report.gso_cut), (201, 0, 1));
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while got.len() < 201 {
            match b.recv(&mut buf) {
                Ok(meta) => got.push(buf[..meta.len].to_vec()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_readable(&b),
                Err(e) => panic!("recv: {e}"),
            }
        }
        let want: Vec<Vec<u8>> = data
            .chunks(10)
            .map(<[u8]>::to_vec)
            .chain([small.to_vec()])
            .collect();
        assert_eq!(got, want, "every datagram, in order");
    }

    #[test]
    fn gso_send_arrives_as_segments() {
        let (a, b) = pair();
        let data: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
        let sent = a
            .send(&Transmit {
                to: b.local_addr(),
                data: &data,
                segment_size: Some(1000),
            })
            .unwrap();
        assert_eq!(sent, 2500);
        let mut buf = vec![0u8; UDP_PAYLOAD_LEN_MAX];
        let mut lens = Vec::new();
        let mut joined = Vec::new();
        while lens.len() < 3 {
            wait_readable(&b);
            let meta = b.recv(&mut buf).unwrap();
            for seg in meta.segments(&buf) {
                lens.push(seg.len());
                joined.extend_from_slice(seg);
            }
        }
        assert_eq!(lens, [1000, 1000, 500]);
        assert_eq!(joined, data);
    }

    #[test]
    fn gso_send_is_coalesced_by_gro_on_loopback() {
        let (a, _) = pair();
        let opts = UdpOptions {
            gro: true,
            ..UdpOptions::default()
        };
        let b = UdpSock::bind("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
        assert!(
            a.gso_enabled() && b.gro_enabled(),
            "kernel without UDP GSO/GRO"
        );
        let data = vec![7u8; 3000];
        a.send(&Transmit {
            to: b.local_addr(),
            data: &data,
            segment_size: Some(1200),
        })
        .unwrap();
        wait_readable(&b);
        let mut buf = vec![0u8; UDP_PAYLOAD_LEN_MAX];
        let meta = b.recv(&mut buf).unwrap();
        // Loopback hands a GSO skb to a GRO socket whole, with the segment size in a cmsg.
        assert_eq!(meta.len, 3000);
        assert_eq!(meta.segment_size, Some(1200));
        let lens: Vec<usize> = meta.segments(&buf).map(<[u8]>::len).collect();
        assert_eq!(lens, [1200, 1200, 600]);
    }

    #[test]
    fn gro_meta_cuts_segments() {
        let meta = RecvMeta {
            from: "127.0.0.1:1".parse().unwrap(),
            len: 7,
            segment_size: Some(3),
            truncated: false,
        };
        let buf = [1, 2, 3, 4, 5, 6, 7, 8, 9];
        let segs: Vec<&[u8]> = meta.segments(&buf).collect();
        assert_eq!(segs, [&[1, 2, 3][..], &[4, 5, 6], &[7]]);
        let plain = RecvMeta {
            segment_size: None,
            ..meta
        };
        assert_eq!(plain.segments(&buf).count(), 1);
    }

    #[test]
    fn reuse_port_sockets_steered_by_cpu_each_get_what_their_cpu_sent() {
        let cpus = crate::sys::allowed_cpus().unwrap();
        if cpus.len() < 2 {
            eprintln!("skipped: needs two CPUs to send from, this process may use {cpus:?}");
            return;
        }
        let opts = UdpOptions {
            reuse_port: true,
            ..UdpOptions::default()
        };
        let first = UdpSock::bind("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
        let to = first.local_addr();
        let second = UdpSock::bind(to, &opts).unwrap();
        first.steer_by_cpu(2).unwrap();
        // Without the reuse-port option the port is taken.
        assert!(UdpSock::bind(to, &UdpOptions::default()).is_err());
        for &cpu in &cpus[..2] {
            std::thread::spawn(move || {
                crate::sys::pin_to_cpu(cpu).unwrap();
                let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                // Loopback receives on the sending CPU.
                for _ in 0..5 {
                    s.send_to(&[cpu as u8], to).unwrap();
                }
            })
            .join()
            .unwrap();
        }
        for (i, sock) in [&first, &second].into_iter().enumerate() {
            let want: Vec<Vec<u8>> = cpus[..2]
                .iter()
                .filter(|&&c| c % 2 == i)
                .flat_map(|&c| std::iter::repeat_n(vec![c as u8], 5))
                .collect();
            if !want.is_empty() {
                wait_readable(sock);
            }
            let mut buf = [0u8; 16];
            let mut got = Vec::new();
            while let Ok(m) = sock.recv(&mut buf) {
                got.push(buf[..m.len].to_vec());
            }
            assert_eq!(got, want, "socket {i}");
        }
    }
}
