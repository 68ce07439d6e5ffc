//! The plain backend: level-triggered epoll over the TAP, the socket and the stop eventfd;
//! `read` for frames, `recvmmsg` for datagrams, then `sendmmsg` and `write` to flush.
//! Used where io_uring is refused (seccomp, `io_uring_disabled`) or when forced.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::counters::CounterSnapshot;
use crate::outbox::Outbox;
use crate::pump::{Handler, Pump};
use crate::sys::cvt;
use crate::tap::{TAP_FRAME_LEN_MAX, TapFrame};
use crate::udp::{RecvBatch, SendBatch, UDP_PAYLOAD_LEN_MAX};
use crate::{Error, udp};

const TOKEN_TAP: u64 = 0;
const TOKEN_UDP: u64 = 1;
const TOKEN_STOP: u64 = 2;
const TOKEN_WAKE: u64 = 3;
const EVENTS_MAX: usize = 4;

fn epoll_add(ep: RawFd, fd: RawFd, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: token,
    };
    // SAFETY: `ev` is a live epoll_event; ep and fd are open descriptors we own or borrow.
    cvt(unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &raw mut ev) })?;
    Ok(())
}

pub(crate) fn run<H: Handler>(pump: &mut Pump, handler: &mut H) -> Result<(), Error> {
    let name = pump.tap.name().to_owned();
    // SAFETY: epoll_create1 takes a flag and returns a new fd or -1.
    let ep = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })
        .map_err(|e| Error::sys("epoll_create1", &name, e))?;
    // SAFETY: `ep` was just created and is owned by nobody else.
    let ep = unsafe { OwnedFd::from_raw_fd(ep) };
    for (fd, token) in [
        (pump.tap.as_raw_fd(), TOKEN_TAP),
        (pump.udp.as_raw_fd(), TOKEN_UDP),
        (pump.stop.raw(), TOKEN_STOP),
        (pump.wake.raw(), TOKEN_WAKE),
    ] {
        epoll_add(ep.as_raw_fd(), fd, token).map_err(|e| Error::sys("epoll_ctl", &name, e))?;
    }
    pump.tap
        .set_nonblocking(true)
        .map_err(|e| Error::sys("fcntl O_NONBLOCK", &name, e))?;

    let batch_max = pump.config.batch_max.max(1);
    let mut tap_buf = vec![0u8; TAP_FRAME_LEN_MAX].into_boxed_slice();
    let mut recv = RecvBatch::new(batch_max, UDP_PAYLOAD_LEN_MAX);
    let mut send = SendBatch::new(pump.config.outbox_datagrams_max);
    let mut out = pump.new_outbox();
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; EVENTS_MAX];

    loop {
        // SAFETY: `events` is a live array of EVENTS_MAX entries.
        let n =
            unsafe { libc::epoll_wait(ep.as_raw_fd(), events.as_mut_ptr(), EVENTS_MAX as i32, -1) };
        let n = match cvt(n) {
            Ok(n) => n as usize,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::sys("epoll_wait", &name, e)),
        };
        let mut d = CounterSnapshot::default();
        for ev in &events[..n] {
            match ev.u64 {
                TOKEN_STOP if pump.stop.consume() => return Ok(()),
                TOKEN_TAP => read_tap(pump, handler, &mut tap_buf, &mut out, &mut d),
                TOKEN_UDP => recv_udp(pump, handler, &mut recv, &mut out, &mut d),
                TOKEN_WAKE if pump.wake.consume() => handler.on_wake(&mut out),
                _ => {}
            }
        }
        handler.on_batch_end(&mut out);
        flush(pump, &mut send, &mut out, &mut d);
        d.batches = 1;
        pump.counters.add(&d);
    }
}

fn read_tap<H: Handler>(
    pump: &Pump,
    handler: &mut H,
    buf: &mut [u8],
    out: &mut Outbox,
    d: &mut CounterSnapshot,
) {
    let vnet = pump.tap.vnet_hdr();
    for _ in 0..pump.config.batch_max.max(1) {
        if !out.has_room_for_input() {
            break;
        }
        match pump.tap.read_frame(buf) {
            Ok(len) => deliver_tap_frame(handler, &buf[..len], vnet, out, d),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                d.io_errors += 1;
                break;
            }
        }
    }
}

/// Splits a raw TAP read and hands it to the handler (shared with the io_uring backend).
pub(crate) fn deliver_tap_frame<H: Handler>(
    handler: &mut H,
    raw: &[u8],
    vnet: Option<crate::VnetHdrLen>,
    out: &mut Outbox,
    d: &mut CounterSnapshot,
) {
    match TapFrame::split(raw, vnet) {
        Ok(frame) => {
            d.tap_frames_in += 1;
            d.tap_bytes_in += frame.eth.len() as u64;
            handler.on_tap_frame(frame, out);
        }
        Err(_) => d.drop_tap_malformed += 1,
    }
}

/// Cuts a (possibly GRO) receive into datagrams for the handler (shared with io_uring).
pub(crate) fn deliver_datagrams<H: Handler>(
    handler: &mut H,
    meta: &udp::RecvMeta,
    buf: &mut [u8],
    out: &mut Outbox,
    d: &mut CounterSnapshot,
) {
    if meta.truncated {
        d.drop_udp_truncated += 1;
        return;
    }
    let len = meta.len.min(buf.len());
    let data = &mut buf[..len];
    let segment_len = match meta.segment_size {
        Some(n) if n > 0 => usize::from(n),
        _ => len.max(1),
    };
    d.udp_datagrams_in += data.len().div_ceil(segment_len) as u64;
    d.udp_bytes_in += data.len() as u64;
    handler.on_datagrams(meta.from, data, segment_len, out);
}

fn recv_udp<H: Handler>(
    pump: &Pump,
    handler: &mut H,
    recv: &mut RecvBatch,
    out: &mut Outbox,
    d: &mut CounterSnapshot,
) {
    // One recvmmsg of up to batch_max, and a second only if the first came back full.
    for _ in 0..2 {
        if !out.has_room_for_input() {
            break;
        }
        match pump.udp.recv_batch(recv) {
            Ok(got) => {
                for i in 0..got {
                    if let Some((meta, buf)) = recv.get_mut(i) {
                        deliver_datagrams(handler, &meta, buf, out, d);
                    }
                }
                if got < recv.capacity() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                d.io_errors += 1;
                break;
            }
        }
    }
}

fn flush(pump: &Pump, send: &mut SendBatch, out: &mut Outbox, d: &mut CounterSnapshot) {
    if !out.datagrams.is_empty() {
        let report = pump
            .udp
            .send_batch(send, out.datagrams.iter().map(|dg| out.transmit(dg)));
        report.count_into(d);
    }
    let hdr = out.vnet_hdr_bytes();
    for f in &out.frames {
        match pump.tap.write_frame(out.frame(f)) {
            Ok(_) => {
                d.tap_frames_out += 1;
                d.tap_bytes_out += (f.len - hdr) as u64;
            }
            Err(_) => d.drop_tap_write += 1,
        }
    }
    d.drop_outbox_full += out.refused_full;
    out.refused_full = 0;
    out.clear();
}
