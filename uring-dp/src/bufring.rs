//! A provided-buffer ring for io_uring's multishot `RecvMsg` and `ReadMulti`: the kernel
//! picks a free buffer for every datagram (or GRO run, or TAP frame) it completes, so one
//! armed SQE receives for as long as buffers are handed back, with no per-receive
//! submission and no herd of armed reads woken for one frame.
//!
//! Layout of a `RecvMsg` buffer after a completion (see `io_uring_recvmsg_out`): a 16-byte header,
//! the source address (a fixed `NAME_LEN` field), the control messages (a fixed
//! `RECV_CMSG_SPACE` field) and then the payload.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::IoUring;
use io_uring::types::{BufRingEntry, RecvMsgOut};

use crate::cmsg::{self, RECV_CMSG_SPACE};
use crate::sys::sockaddr_to;
use crate::udp::{RecvMeta, UDP_PAYLOAD_LEN_MAX};

/// The `io_uring_recvmsg_out` header the kernel writes at the start of each buffer.
const OUT_HDR_LEN: usize = 16;
/// Room for the source address: IPv4 and IPv6 both fit a `sockaddr_in6`.
const NAME_LEN: usize = size_of::<libc::sockaddr_in6>();
/// Bytes of one multishot `RecvMsg` buffer: header, name, control, and the largest (GRO)
/// payload.
pub(crate) const RECVMSG_BUF_LEN: usize =
    OUT_HDR_LEN + NAME_LEN + RECV_CMSG_SPACE + UDP_PAYLOAD_LEN_MAX;
const _: () = assert!(NAME_LEN >= size_of::<libc::sockaddr_in>());
/// The buffer group of the UDP receive.
pub(crate) const GROUP_UDP: u16 = 0;
/// The buffer group of the TAP reads.
pub(crate) const GROUP_TAP: u16 = 1;

/// The ring of buffer descriptors shared with the kernel plus the buffers themselves.
pub(crate) struct BufRing {
    /// Page-aligned, mmap'd descriptor array (`entries` x 16 bytes).
    ring: *mut BufRingEntry,
    ring_bytes: usize,
    entries: u16,
    group: u16,
    buf_len: usize,
    /// Our copy of the tail; published to the kernel by [`BufRing::publish`].
    tail: u16,
    bufs: Box<[u8]>,
    /// The msghdr template the SQE points at: only its name and control lengths matter.
    pub(crate) hdr: Box<libc::msghdr>,
    registered: bool,
}

// SAFETY: the raw ring pointer is owned memory (our mmap) only touched by the pump thread
// and the kernel; moving the owner between threads before use is harmless.
unsafe impl Send for BufRing {}

impl BufRing {
    /// Maps and registers a ring of `entries` (a power of two) buffers of `buf_len` bytes
    /// as buffer group `group` on `uring` and hands all buffers to the kernel. Fails on
    /// kernels without provided-buffer rings (< 5.19).
    pub(crate) fn register(
        uring: &IoUring,
        entries: u16,
        group: u16,
        buf_len: usize,
    ) -> io::Result<Self> {
        if !entries.is_power_of_two() {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        let ring_bytes = (usize::from(entries) * size_of::<BufRingEntry>()).max(4096);
        // SAFETY: anonymous private mapping, no fd; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ring_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: msghdr is plain old data; all-zero is valid.
        let mut hdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        hdr.msg_namelen = NAME_LEN as libc::socklen_t;
        hdr.msg_controllen = RECV_CMSG_SPACE as _;
        let mut me = Self {
            ring: p.cast(),
            ring_bytes,
            entries,
            group,
            buf_len,
            tail: 0,
            bufs: vec![0u8; usize::from(entries) * buf_len].into_boxed_slice(),
            hdr,
            registered: false,
        };
        // SAFETY: the descriptor array is page-aligned, `entries` long and lives (mapped)
        // until `unregister` + drop; the kernel only reads descriptors and the tail.
        unsafe {
            uring
                .submitter()
                .register_buf_ring_with_flags(p as u64, entries, group, 0)?
        };
        me.registered = true;
        for bid in 0..entries {
            me.give_back(bid);
        }
        me.publish();
        Ok(me)
    }

    /// Queues buffer `bid` for the kernel again; visible after [`BufRing::publish`].
    pub(crate) fn give_back(&mut self, bid: u16) {
        let Some(i) = (bid < self.entries).then_some(usize::from(bid)) else {
            return;
        };
        let mask = self.entries - 1;
        let addr = self.bufs[i * self.buf_len..].as_mut_ptr() as u64;
        // SAFETY: the slot index is masked into the `entries`-long mapped array.
        let e = unsafe { &mut *self.ring.add(usize::from(self.tail & mask)) };
        e.set_addr(addr);
        e.set_len(self.buf_len as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Publishes the buffers given back since the last call (one release store).
    pub(crate) fn publish(&mut self) {
        // SAFETY: the tail lives inside the first descriptor of our mapping, is 2-byte
        // aligned, and the kernel reads it atomically; we are its only writer.
        let tail = unsafe { &*BufRingEntry::tail(self.ring).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
    }

    /// Where the datagram(s) of a completion with buffer `bid` and result `len` are:
    /// the receive meta and the payload, lent mutably for in-place decryption. `None` when
    /// the buffer id or the layout is impossible (counted as an I/O error by the caller).
    pub(crate) fn completed(&mut self, bid: u16, len: usize) -> Option<(RecvMeta, &mut [u8])> {
        if bid >= self.entries {
            return None;
        }
        let start = usize::from(bid) * self.buf_len;
        let buf = &mut self.bufs[start..start + self.buf_len.min(len)];
        let (name, control, payload_len, truncated) = {
            let out = RecvMsgOut::parse(buf, &self.hdr).ok()?;
            (
                sockaddr_from_bytes(out.name_data()),
                cmsg::decode_gro(out.control_data()),
                out.payload_data().len(),
                out.is_payload_truncated(),
            )
        };
        let at = OUT_HDR_LEN + NAME_LEN + RECV_CMSG_SPACE;
        let payload = buf.get_mut(at..at + payload_len)?;
        let meta = RecvMeta {
            from: name.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
            len: payload_len,
            segment_size: control,
            truncated,
        };
        Some((meta, payload))
    }

    /// The `len` bytes a plain (read) completion put into buffer `bid`.
    pub(crate) fn filled(&mut self, bid: u16, len: usize) -> Option<&mut [u8]> {
        if bid >= self.entries || len > self.buf_len {
            return None;
        }
        let start = usize::from(bid) * self.buf_len;
        self.bufs.get_mut(start..start + len)
    }

    /// The buffer group the kernel knows this ring as.
    pub(crate) fn group(&self) -> u16 {
        self.group
    }

    /// Takes the ring back from the kernel; call once nothing is in flight.
    pub(crate) fn unregister(&mut self, uring: &IoUring) {
        if self.registered && uring.submitter().unregister_buf_ring(self.group).is_ok() {
            self.registered = false;
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if self.registered {
            // The kernel may still write into the buffers: leak them and the mapping.
            std::mem::forget(std::mem::take(&mut self.bufs));
            return;
        }
        // SAFETY: our own mapping of `ring_bytes`, no longer registered with the kernel.
        unsafe { libc::munmap(self.ring.cast(), self.ring_bytes) };
    }
}

fn sockaddr_from_bytes(name: &[u8]) -> Option<SocketAddr> {
    // SAFETY: sockaddr_storage is plain old data; all-zero is valid (AF_UNSPEC).
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let n = name.len().min(size_of::<libc::sockaddr_storage>());
    // SAFETY: copies at most size_of::<sockaddr_storage>() bytes into the storage.
    unsafe {
        std::ptr::copy_nonoverlapping(name.as_ptr(), (&raw mut storage).cast::<u8>(), n);
    }
    sockaddr_to(&storage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn source_address_bytes_round_trip() {
        let addr = SocketAddr::from((Ipv4Addr::new(198, 18, 0, 2), 6783));
        // SAFETY: all-zero sockaddr_storage is valid.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let len = crate::sys::write_sockaddr(&addr, &mut storage) as usize;
        // SAFETY: reading `len` initialised bytes of the storage.
        let bytes = unsafe { std::slice::from_raw_parts((&raw const storage).cast::<u8>(), len) };
        assert_eq!(sockaddr_from_bytes(bytes), Some(addr));
        assert_eq!(sockaddr_from_bytes(&[]), None);
    }

    #[test]
    fn impossible_completions_are_refused_not_read_out_of_bounds() {
        let uring = match IoUring::new(8) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("skipped: io_uring refused here: {e}");
                return;
            }
        };
        let mut br = match BufRing::register(&uring, 2, GROUP_UDP, RECVMSG_BUF_LEN) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("skipped: provided-buffer rings refused here: {e}");
                return;
            }
        };
        assert!(
            BufRing::register(&uring, 3, GROUP_TAP, 64).is_err(),
            "not a power of two"
        );
        assert!(br.filled(0, RECVMSG_BUF_LEN + 1).is_none());
        assert!(br.filled(2, 1).is_none());
        assert_eq!(br.filled(1, 10).map(|b| b.len()), Some(10));
        // A buffer id the ring does not have, and a length shorter than the fixed fields.
        assert!(br.completed(2, 100).is_none());
        assert!(br.completed(0, OUT_HDR_LEN - 1).is_none());
        // A zeroed header with room for the fields: an empty payload, no source address.
        let (meta, payload) = br
            .completed(1, OUT_HDR_LEN + NAME_LEN + RECV_CMSG_SPACE)
            .unwrap();
        assert_eq!((meta.len, payload.len(), meta.truncated), (0, 0, false));
        br.give_back(7); // ignored
        br.give_back(1);
        br.publish();
        br.unregister(&uring);
    }
}
