//! The io_uring backend. The TAP is read by one multishot `ReadMulti` (6.7+) and UDP is
//! received by one multishot `RecvMsg` (6.0+), each over its own ring of provided buffers
//! ([`BufRing`]): the kernel fills a free buffer per frame, datagram or GRO run, and the
//! SQE stays armed as long as buffers come back, which they do at the end of every batch.
//! One armed read per source also means one wake-up per frame, not a herd of armed reads
//! retried for it. Older kernels get `tap_reads_in_flight` one-shot reads and
//! `udp_recvs_in_flight` one-shot `RecvMsg`s instead. Completions are drained in batches,
//! handed to the handler, and what it queued goes out as `SendMsg`/`Write` SQEs in the same
//! `io_uring_enter` that re-arms what needs it.
//!
//! Two outboxes alternate: the handler fills one while the other's sends are in flight
//! (their buffers must stay put until the kernel is done).

use std::io;
use std::os::fd::AsRawFd;

use io_uring::{IoUring, cqueue, opcode, squeue, types};

use crate::Error;
use crate::bufring::{self, BufRing};
use crate::counters::CounterSnapshot;
use crate::gso::wire_datagrams;
use crate::outbox::Outbox;
use crate::plain::{deliver_datagrams, deliver_tap_frame};
use crate::pump::{Handler, Pump, PumpConfig};
use crate::sys::errno_name;
use crate::tap::TAP_FRAME_LEN_MAX;
use crate::udp::{MsgSlot, SendReport, UDP_PAYLOAD_LEN_MAX, zeroed_msghdr};

const TAG_TAP_READ: u64 = 1;
const TAG_UDP_RECV: u64 = 2;
const TAG_STOP: u64 = 3;
const TAG_TAP_WRITE: u64 = 4;
const TAG_UDP_SEND: u64 = 5;
const TAG_CANCEL: u64 = 6;
const TAG_WAKE: u64 = 7;
const TAG_UDP_MULTI: u64 = 8;
const TAG_TAP_MULTI: u64 = 9;
/// Provided buffers for the multishot receive (each holds one GRO run of up to 64 KiB).
const MULTI_BUFS: u16 = 32;
/// Provided buffers for the multishot TAP read (each holds one super-frame).
const TAP_MULTI_BUFS: u16 = 16;
/// Outboxes alternating between "being filled" and "in flight".
const OUTBOXES: usize = 2;
/// Most completion waits while cancelling at stop before giving up on stragglers.
const CANCEL_WAITS_MAX: usize = 1000;

fn ud(tag: u64, outbox: usize, idx: usize) -> u64 {
    (tag << 56) | ((outbox as u64) << 32) | idx as u64
}

fn ud_split(ud: u64) -> (u64, usize, usize) {
    (
        ud >> 56,
        ((ud >> 32) & 0xff_ffff) as usize,
        (ud & 0xffff_ffff) as usize,
    )
}

fn sq_entries(cfg: &PumpConfig) -> u32 {
    let n = cfg.tap_reads_in_flight
        + cfg.udp_recvs_in_flight
        + 2
        + OUTBOXES * (cfg.outbox_datagrams_max + cfg.outbox_tap_frames_max);
    (n.next_power_of_two() as u32).clamp(8, 4096)
}

/// Sets up a ring sized for `cfg` and checks the opcodes the loop uses. The error is a
/// short reason for status lines (`EPERM`, `opcode SENDMSG unsupported`).
///
/// The ring is set up for one issuer with deferred task work (completions are run only
/// when the pump thread enters the kernel to wait, not by interrupting it), created
/// disabled so that the pump thread, not the thread that probed, becomes its issuer (see
/// [`enable_on_this_thread`]). Kernels before 6.1 refuse those flags; then a plain ring.
pub(crate) fn probe(cfg: &PumpConfig) -> Result<(IoUring, bool), String> {
    let sq = sq_entries(cfg);
    let (ring, disabled) = match IoUring::builder()
        .setup_cqsize(sq * 2)
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_r_disabled()
        .build(sq)
    {
        Ok(ring) => (ring, true),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            let ring = IoUring::builder()
                .setup_cqsize(sq * 2)
                .build(sq)
                .map_err(|e| errno_name(&e))?;
            (ring, false)
        }
        Err(e) => return Err(errno_name(&e)),
    };
    let mut probe = io_uring::Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| format!("IORING_REGISTER_PROBE: {}", errno_name(&e)))?;
    for (code, name) in [
        (opcode::Read::CODE, "READ"),
        (opcode::Write::CODE, "WRITE"),
        (opcode::SendMsg::CODE, "SENDMSG"),
        (opcode::RecvMsg::CODE, "RECVMSG"),
        (opcode::AsyncCancel2::CODE, "ASYNC_CANCEL"),
    ] {
        if !probe.is_supported(code) {
            return Err(format!("opcode {name} unsupported"));
        }
    }
    Ok((ring, disabled))
}

/// Makes the calling thread the issuer of a ring that [`probe`] created disabled.
pub(crate) fn enable_on_this_thread(ring: &IoUring) -> io::Result<()> {
    ring.submitter().register_enable_rings()
}

/// A UDP receive slot: the msghdr the kernel holds a pointer to, and what it points at.
/// Lives in a boxed slice that is never resized, so its address is stable.
struct RecvSlot {
    msg: MsgSlot,
    hdr: libc::msghdr,
    buf: Box<[u8]>,
}

struct SendSlot {
    msg: MsgSlot,
    hdr: libc::msghdr,
}

struct OutState {
    out: Outbox,
    sends: Box<[SendSlot]>,
    inflight: usize,
}

struct Loop<'p> {
    pump: &'p Pump,
    tap_bufs: Box<[Box<[u8]>]>,
    recvs: Box<[RecvSlot]>,
    /// The multishot receive's buffers, when the kernel took them.
    multi: Option<BufRing>,
    /// The multishot TAP read's buffers, when the kernel took them (6.7+); else
    /// `tap_bufs` with one-shot reads.
    tap_multi: Option<BufRing>,
    outs: Box<[OutState]>,
    stop_buf: Box<u64>,
    wake_buf: Box<u64>,
    /// SQEs submitted whose CQE has not been seen.
    inflight: usize,
}

/// Queues an SQE, submitting first if the queue is full.
fn push(ring: &mut IoUring, entry: &squeue::Entry) -> io::Result<()> {
    loop {
        // SAFETY: every entry we build points into memory owned by `Loop` (boxed slots and
        // outbox arenas) that stays alive and unmoved until its CQE is reaped: slots are
        // never freed while `inflight` > 0 (see `run`'s cancel-and-drain on exit).
        if unsafe { ring.submission().push(entry) }.is_ok() {
            return Ok(());
        }
        ring.submit()?;
    }
}

impl Loop<'_> {
    /// Queues one SQE whose completion the loop will reap.
    fn submit(&mut self, ring: &mut IoUring, e: &squeue::Entry) -> io::Result<()> {
        push(ring, e)?;
        self.inflight += 1;
        Ok(())
    }

    fn arm_tap_read(&mut self, ring: &mut IoUring, i: usize) -> io::Result<()> {
        let buf = &mut self.tap_bufs[i];
        let e = opcode::Read::new(
            types::Fd(self.pump.tap.as_raw_fd()),
            buf.as_mut_ptr(),
            buf.len() as u32,
        )
        .build()
        .user_data(ud(TAG_TAP_READ, 0, i));
        self.submit(ring, &e)
    }

    fn arm_udp_recv(&mut self, ring: &mut IoUring, i: usize) -> io::Result<()> {
        let slot = &mut self.recvs[i];
        slot.hdr = slot.msg.prepare_recv(&mut slot.buf);
        let e = opcode::RecvMsg::new(types::Fd(self.pump.udp.as_raw_fd()), &raw mut slot.hdr)
            .build()
            .user_data(ud(TAG_UDP_RECV, 0, i));
        self.submit(ring, &e)
    }

    fn arm_udp_multi(&mut self, ring: &mut IoUring) -> io::Result<()> {
        let Some(br) = self.multi.as_ref() else {
            return Ok(());
        };
        let e = opcode::RecvMsgMulti::new(
            types::Fd(self.pump.udp.as_raw_fd()),
            &raw const *br.hdr,
            br.group(),
        )
        .build()
        .user_data(ud(TAG_UDP_MULTI, 0, 0));
        self.submit(ring, &e)
    }

    fn arm_tap_multi(&mut self, ring: &mut IoUring) -> io::Result<()> {
        let Some(br) = self.tap_multi.as_ref() else {
            return Ok(());
        };
        let e = opcode::ReadMulti::new(types::Fd(self.pump.tap.as_raw_fd()), 0, br.group())
            .build()
            .user_data(ud(TAG_TAP_MULTI, 0, 0));
        self.submit(ring, &e)
    }

    /// The kernel refused the multishot TAP read: switch to one-shot reads for good.
    fn fall_back_to_tap_reads(&mut self, ring: &mut IoUring) -> io::Result<()> {
        if let Some(mut br) = self.tap_multi.take() {
            br.unregister(ring);
        }
        self.tap_bufs = tap_read_bufs(&self.pump.config);
        for i in 0..self.tap_bufs.len() {
            self.arm_tap_read(ring, i)?;
        }
        Ok(())
    }

    /// The kernel refused multishot receive: switch to one-shot slots for good.
    fn fall_back_to_slots(&mut self, ring: &mut IoUring) -> io::Result<()> {
        if let Some(mut br) = self.multi.take() {
            br.unregister(ring);
        }
        self.recvs = recv_slots(&self.pump.config);
        for i in 0..self.recvs.len() {
            self.arm_udp_recv(ring, i)?;
        }
        Ok(())
    }

    fn arm_stop(&mut self, ring: &mut IoUring) -> io::Result<()> {
        let e = opcode::Read::new(
            types::Fd(self.pump.stop.raw()),
            (&raw mut *self.stop_buf).cast(),
            8,
        )
        .build()
        .user_data(ud(TAG_STOP, 0, 0));
        self.submit(ring, &e)
    }

    fn arm_wake(&mut self, ring: &mut IoUring) -> io::Result<()> {
        let e = opcode::Read::new(
            types::Fd(self.pump.wake.raw()),
            (&raw mut *self.wake_buf).cast(),
            8,
        )
        .build()
        .user_data(ud(TAG_WAKE, 0, 0));
        self.submit(ring, &e)
    }

    /// Turns outbox `o`'s queue into SQEs.
    fn flush(&mut self, ring: &mut IoUring, o: usize, d: &mut CounterSnapshot) -> io::Result<()> {
        let udp_fd = types::Fd(self.pump.udp.as_raw_fd());
        let tap_fd = types::Fd(self.pump.tap.as_raw_fd());
        let st = &mut self.outs[o];
        d.drop_outbox_full += st.out.refused_full;
        st.out.refused_full = 0;
        for (k, dg) in st.out.datagrams.iter().enumerate() {
            let t = st.out.transmit(dg);
            // No kernel GSO: cut it here, synchronously (rare: old kernels only).
            let mut report = SendReport::default();
            if self.pump.udp.send_if_no_gso(&t, &mut report) {
                report.count_into(d);
                continue;
            }
            let slot = &mut st.sends[k];
            slot.hdr = slot.msg.prepare_send(&t);
            let e = opcode::SendMsg::new(udp_fd, &raw const slot.hdr)
                .build()
                .user_data(ud(TAG_UDP_SEND, o, k));
            push(ring, &e)?;
            st.inflight += 1;
            self.inflight += 1;
        }
        for (k, f) in st.out.frames.iter().enumerate() {
            let frame = st.out.frame(f);
            let e = opcode::Write::new(tap_fd, frame.as_ptr(), frame.len() as u32)
                .build()
                .user_data(ud(TAG_TAP_WRITE, o, k));
            push(ring, &e)?;
            st.inflight += 1;
            self.inflight += 1;
        }
        Ok(())
    }

    /// Accounts for a finished send or write.
    fn complete_out(&mut self, tag: u64, o: usize, k: usize, res: i32, d: &mut CounterSnapshot) {
        let Some(st) = self.outs.get_mut(o) else {
            return;
        };
        st.inflight = st.inflight.saturating_sub(1);
        if tag == TAG_UDP_SEND {
            match st.out.datagrams.get(k) {
                Some(dg) if res >= 0 => {
                    d.udp_datagrams_out += wire_datagrams(&st.out.transmit(dg)) as u64;
                    d.udp_bytes_out += res as u64;
                }
                // A GSO send the kernel would not cut (segments over the path MTU): again,
                // one datagram at a time (the outbox is kept until its sends are done);
                // any other error drops it.
                Some(dg) => {
                    let mut report = SendReport::default();
                    let t = st.out.transmit(dg);
                    self.pump.udp.send_refused(&t, Some(-res), &mut report);
                    report.count_into(d);
                }
                None => d.drop_udp_send += 1,
            }
        } else {
            let hdr = st.out.vnet_hdr_bytes();
            match st.out.frames.get(k) {
                Some(f) if res >= 0 => {
                    d.tap_frames_out += 1;
                    d.tap_bytes_out += (f.len - hdr) as u64;
                }
                _ => d.drop_tap_write += 1,
            }
        }
    }
}

impl RecvSlot {
    fn new() -> Self {
        Self {
            msg: MsgSlot::default(),
            hdr: zeroed_msghdr(),
            buf: vec![0u8; UDP_PAYLOAD_LEN_MAX].into_boxed_slice(),
        }
    }
}

/// Buffers for the one-shot TAP reads (kernels without multishot read).
fn tap_read_bufs(cfg: &PumpConfig) -> Box<[Box<[u8]>]> {
    (0..cfg.tap_reads_in_flight.max(1))
        .map(|_| vec![0u8; TAP_FRAME_LEN_MAX].into_boxed_slice())
        .collect()
}

/// Slots for the one-shot UDP receives (kernels without multishot recvmsg).
fn recv_slots(cfg: &PumpConfig) -> Box<[RecvSlot]> {
    (0..cfg.udp_recvs_in_flight.max(1))
        .map(|_| RecvSlot::new())
        .collect()
}

/// True when a completion ends its SQE (a multishot receive's do not, unless the last).
fn retires(user_data: u64, flags: u32) -> bool {
    let tag = ud_split(user_data).0;
    (tag != TAG_UDP_MULTI && tag != TAG_TAP_MULTI) || !cqueue::more(flags)
}

pub(crate) fn run<H: Handler>(
    pump: &Pump,
    ring: &mut IoUring,
    handler: &mut H,
) -> Result<(), Error> {
    let name = pump.tap.name().to_owned();
    let cfg = pump.config;
    let mut lp = Loop {
        pump,
        tap_bufs: Box::new([]),
        recvs: Box::new([]),
        multi: None,
        tap_multi: None,
        outs: (0..OUTBOXES)
            .map(|_| OutState {
                out: pump.new_outbox(),
                sends: (0..cfg.outbox_datagrams_max)
                    .map(|_| SendSlot {
                        msg: MsgSlot::default(),
                        hdr: zeroed_msghdr(),
                    })
                    .collect(),
                inflight: 0,
            })
            .collect(),
        stop_buf: Box::new(0),
        wake_buf: Box::new(0),
        inflight: 0,
    };
    let tap_ring = match cfg.uring_multishot {
        true => BufRing::register(ring, TAP_MULTI_BUFS, bufring::GROUP_TAP, TAP_FRAME_LEN_MAX),
        false => Err(io::Error::from(io::ErrorKind::Unsupported)),
    };
    match tap_ring {
        Ok(br) if tap_read_multishot_supported(ring) => lp.tap_multi = Some(br),
        other => {
            if let Ok(mut br) = other {
                br.unregister(ring);
            }
            lp.tap_bufs = tap_read_bufs(&cfg);
        }
    }
    let udp_ring = match cfg.uring_multishot {
        true => BufRing::register(
            ring,
            MULTI_BUFS,
            bufring::GROUP_UDP,
            bufring::RECVMSG_BUF_LEN,
        ),
        false => Err(io::Error::from(io::ErrorKind::Unsupported)),
    };
    match udp_ring {
        Ok(br) => lp.multi = Some(br),
        Err(_) => {
            lp.recvs = recv_slots(&cfg);
        }
    }
    let res = run_loop(&mut lp, ring, handler).map_err(|e| Error::sys("io_uring_enter", &name, e));
    cancel_and_drain(&mut lp, ring);
    res
}

/// Whether the kernel knows `IORING_OP_READ_MULTISHOT` (6.7+).
fn tap_read_multishot_supported(ring: &IoUring) -> bool {
    let mut probe = io_uring::Probe::new();
    ring.submitter().register_probe(&mut probe).is_ok()
        && probe.is_supported(opcode::ReadMulti::CODE)
}

fn run_loop<H: Handler>(lp: &mut Loop<'_>, ring: &mut IoUring, handler: &mut H) -> io::Result<()> {
    // A blocking TAP fd: with O_NONBLOCK, kernels without FMODE_NOWAIT on tun complete
    // the read with -EAGAIN instead of arming a poll. io_uring never blocks us either way.
    lp.pump.tap.set_nonblocking(false)?;
    for i in 0..lp.tap_bufs.len() {
        lp.arm_tap_read(ring, i)?;
    }
    for i in 0..lp.recvs.len() {
        lp.arm_udp_recv(ring, i)?;
    }
    lp.arm_udp_multi(ring)?;
    lp.arm_tap_multi(ring)?;
    lp.arm_stop(ring)?;
    lp.arm_wake(ring)?;

    let cq_cap = ring.params().cq_entries() as usize;
    let mut cqes: Vec<(u64, i32, u32)> = Vec::with_capacity(cq_cap);
    let mut inputs: Vec<(u64, i32, u32)> = Vec::with_capacity(cq_cap);
    let vnet = lp.pump.tap.vnet_hdr();
    loop {
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => return Err(e),
        }
        cqes.clear();
        cqes.extend(
            ring.completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        let retired = cqes.iter().filter(|c| retires(c.0, c.2)).count();
        lp.inflight -= retired.min(lp.inflight);

        let mut d = CounterSnapshot::default();
        let mut stopping = false;
        for &(u, res, flags) in &cqes {
            let (tag, o, k) = ud_split(u);
            match tag {
                TAG_TAP_WRITE | TAG_UDP_SEND => lp.complete_out(tag, o, k, res, &mut d),
                TAG_STOP => {
                    if res == 8 || lp.pump.stop.consume() {
                        stopping = true;
                    } else {
                        lp.arm_stop(ring)?;
                    }
                }
                TAG_TAP_READ | TAG_UDP_RECV | TAG_WAKE | TAG_UDP_MULTI | TAG_TAP_MULTI => {
                    inputs.push((u, res, flags))
                }
                _ => {}
            }
        }
        if stopping {
            lp.pump.counters.add(&d);
            return Ok(());
        }
        // An outbox whose previous sends are all done; if none, keep the inputs (their
        // reads stay un-armed) and wait for send completions first.
        let free = lp.outs.iter().position(|s| s.inflight == 0);
        if let (Some(o), false) = (free, inputs.is_empty()) {
            lp.outs[o].out.clear();
            let mut rearm_multi = false;
            let mut rearm_tap = false;
            for &(u, res, flags) in &inputs {
                let (tag, _, i) = ud_split(u);
                if tag == TAG_UDP_MULTI {
                    rearm_multi |= !cqueue::more(flags);
                    let bid = cqueue::buffer_select(flags);
                    match (res, bid, lp.multi.as_mut()) {
                        (r, Some(bid), Some(br)) if r >= 0 => {
                            match br.completed(bid, r as usize) {
                                Some((meta, buf)) => deliver_datagrams(
                                    handler,
                                    &meta,
                                    buf,
                                    &mut lp.outs[o].out,
                                    &mut d,
                                ),
                                None => d.io_errors += 1,
                            }
                            br.give_back(bid);
                        }
                        // Out of buffers: they are given back below and the receive re-armed.
                        (r, _, _) if r == -libc::ENOBUFS => {}
                        (r, _, Some(_)) if r == -libc::EINVAL => {
                            rearm_multi = false;
                            lp.fall_back_to_slots(ring)?;
                        }
                        (r, _, _) if r < 0 && r != -libc::EAGAIN && r != -libc::EINTR => {
                            d.io_errors += 1
                        }
                        _ => {}
                    }
                } else if tag == TAG_TAP_MULTI {
                    rearm_tap |= !cqueue::more(flags);
                    let bid = cqueue::buffer_select(flags);
                    match (res, bid, lp.tap_multi.as_mut()) {
                        (r, Some(bid), Some(br)) if r > 0 => {
                            match br.filled(bid, r as usize) {
                                Some(raw) => deliver_tap_frame(
                                    handler,
                                    raw,
                                    vnet,
                                    &mut lp.outs[o].out,
                                    &mut d,
                                ),
                                None => d.io_errors += 1,
                            }
                            br.give_back(bid);
                        }
                        (_, Some(bid), Some(br)) => br.give_back(bid),
                        (r, _, _) if r == -libc::ENOBUFS => {}
                        (r, _, Some(_))
                            if r == -libc::EINVAL
                                || r == -libc::EBADFD
                                || r == -libc::EOPNOTSUPP =>
                        {
                            rearm_tap = false;
                            lp.fall_back_to_tap_reads(ring)?;
                        }
                        (r, _, _) if r < 0 && r != -libc::EAGAIN && r != -libc::EINTR => {
                            d.io_errors += 1
                        }
                        _ => {}
                    }
                } else if tag == TAG_WAKE {
                    handler.on_wake(&mut lp.outs[o].out);
                    lp.arm_wake(ring)?;
                } else if tag == TAG_TAP_READ {
                    if res > 0 {
                        let raw = &lp.tap_bufs[i][..res as usize];
                        deliver_tap_frame(handler, raw, vnet, &mut lp.outs[o].out, &mut d);
                    } else if res != -libc::EAGAIN && res != -libc::EINTR {
                        d.io_errors += 1;
                    }
                    lp.arm_tap_read(ring, i)?;
                } else {
                    if res >= 0 {
                        let slot = &mut lp.recvs[i];
                        let meta = slot.msg.finish_recv(&slot.hdr, res as usize);
                        let buf = &mut slot.buf[..];
                        deliver_datagrams(handler, &meta, buf, &mut lp.outs[o].out, &mut d);
                    } else if res != -libc::EAGAIN && res != -libc::EINTR {
                        d.io_errors += 1;
                    }
                    lp.arm_udp_recv(ring, i)?;
                }
            }
            inputs.clear();
            if let Some(br) = lp.multi.as_mut() {
                br.publish();
            }
            if let Some(br) = lp.tap_multi.as_mut() {
                br.publish();
            }
            if rearm_multi {
                lp.arm_udp_multi(ring)?;
            }
            if rearm_tap {
                lp.arm_tap_multi(ring)?;
            }
            handler.on_batch_end(&mut lp.outs[o].out);
            lp.flush(ring, o, &mut d)?;
            d.batches = 1;
        }
        lp.pump.counters.add(&d);
    }
}

/// Cancels everything in flight and reaps the completions, so that no SQE still points
/// into the slots when they are freed.
fn cancel_and_drain(lp: &mut Loop<'_>, ring: &mut IoUring) {
    let e = opcode::AsyncCancel2::new(types::CancelBuilder::any())
        .build()
        .user_data(ud(TAG_CANCEL, 0, 0));
    if push(ring, &e).is_ok() {
        lp.inflight += 1;
    }
    for _ in 0..CANCEL_WAITS_MAX {
        if lp.inflight == 0 {
            break;
        }
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
        let n = ring
            .completion()
            .filter(|c| retires(c.user_data(), c.flags()))
            .count();
        lp.inflight -= n.min(lp.inflight);
    }
    if lp.inflight == 0 {
        for br in [lp.multi.as_mut(), lp.tap_multi.as_mut()]
            .into_iter()
            .flatten()
        {
            br.unregister(ring);
        }
    }
    let _ = lp.pump.tap.set_nonblocking(true);
    if lp.inflight > 0 {
        // Leak the buffers rather than free memory the kernel may still write to.
        std::mem::forget(std::mem::take(&mut lp.tap_bufs));
        std::mem::forget(std::mem::take(&mut lp.recvs));
        std::mem::forget(lp.multi.take());
        std::mem::forget(lp.tap_multi.take());
        std::mem::forget(std::mem::take(&mut lp.outs));
    }
}
