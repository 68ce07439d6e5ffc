//! The GSO fallback, written once for both backends: a transmit with a `segment_size` that
//! cannot go out as one GSO send (the socket has no GSO, or the kernel refused the send)
//! goes out datagram by datagram, and is counted in a [`SendReport`].
//!
//! The plain backend calls it from `sendmmsg`'s error path, the io_uring backend from a
//! failed `SendMsg` completion (synchronously: rare, and the outbox is still alive then).

use std::io;

use crate::udp::{SendReport, Transmit, UdpSock};

/// True for the errors with which the kernel refuses a GSO send it cannot cut as asked
/// (segments over the path MTU, more segments than it takes): worth sending again
/// datagram by datagram, which the kernel may fragment instead.
pub(crate) fn gso_refused(errno: Option<i32>) -> bool {
    matches!(errno, Some(libc::EINVAL | libc::EMSGSIZE | libc::EIO))
}

/// Datagrams that reach the wire for one transmit.
pub(crate) fn wire_datagrams(t: &Transmit<'_>) -> usize {
    match t.segment_size {
        Some(seg) if seg > 0 => t.data.len().div_ceil(usize::from(seg)).max(1),
        _ => 1,
    }
}

impl UdpSock {
    /// Before queueing `t` for a batched send: when it asks for GSO that this socket lacks
    /// (old kernels), sends it now datagram by datagram, counts it in `report` and returns
    /// true; else returns false and the caller sends it.
    pub(crate) fn send_if_no_gso(&self, t: &Transmit<'_>, report: &mut SendReport) -> bool {
        if t.segment_size.is_none() || self.gso_enabled() {
            return false;
        }
        if let Err(e) = self.send_cut(t, report) {
            report.last_error = e.raw_os_error();
        }
        true
    }

    /// After the kernel refused a send of `t` with `errno`: a GSO send it would not cut
    /// ([`gso_refused`]) goes again datagram by datagram and counts as `gso_cut`; any
    /// other (or a fallback that fails too) counts as failed, with `errno` as its error.
    pub(crate) fn send_refused(
        &self,
        t: &Transmit<'_>,
        errno: Option<i32>,
        report: &mut SendReport,
    ) {
        if t.segment_size.is_some() && gso_refused(errno) {
            report.gso_cut += 1;
            if self.send_cut(t, report).is_ok() {
                return;
            }
        } else {
            report.failed += 1;
        }
        report.last_error = errno;
    }

    /// Sends `t` cut into its datagrams; counts them, or one failure (the datagrams sent
    /// before it are not counted).
    fn send_cut(&self, t: &Transmit<'_>, report: &mut SendReport) -> io::Result<()> {
        match self.send_each(t) {
            Ok(bytes) => {
                report.sent += wire_datagrams(t);
                report.bytes += bytes;
                Ok(())
            }
            Err(e) => {
                report.failed += 1;
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;
    use crate::udp::tests::wait_readable;
    use crate::udp::{SendBatch, UdpOptions};

    fn bind(gso: bool) -> UdpSock {
        let opts = UdpOptions {
            gso,
            gro: false,
            ..UdpOptions::default()
        };
        UdpSock::bind("127.0.0.1:0".parse().unwrap(), &opts).unwrap()
    }

    fn recv_lens(s: &UdpSock, n: usize) -> Vec<usize> {
        let mut buf = [0u8; 256];
        let mut lens = Vec::new();
        while lens.len() < n {
            match s.recv(&mut buf) {
                Ok(meta) => lens.push(meta.len),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_readable(s),
                Err(e) => panic!("recv: {e}"),
            }
        }
        lens
    }

    #[test]
    fn without_gso_a_segmented_transmit_goes_out_datagram_by_datagram() {
        let (a, b) = (bind(false), bind(false));
        assert!(!a.gso_enabled());
        let data = [1u8; 25];
        let small = [2u8; 7];
        let to = b.local_addr();
        let report = a.send_batch(
            &mut SendBatch::new(4),
            [
                Transmit {
                    to,
                    data: &data,
                    segment_size: Some(10),
                },
                Transmit {
                    to,
                    data: &small,
                    segment_size: None,
                },
            ],
        );
        let want = SendReport {
            sent: 4,
            bytes: 32,
            ..SendReport::default()
        };
        assert_eq!(report, want);
        assert_eq!(recv_lens(&b, 4), [10, 10, 5, 7]);
    }

    #[test]
    fn a_refused_send_is_cut_only_for_gso_and_only_for_the_gso_errors() {
        let (a, b) = (bind(false), bind(false));
        let data = [3u8; 30];
        let gso = Transmit {
            to: b.local_addr(),
            data: &data,
            segment_size: Some(10),
        };
        let mut report = SendReport::default();
        a.send_refused(&gso, Some(libc::EMSGSIZE), &mut report);
        let cut = SendReport {
            sent: 3,
            bytes: 30,
            gso_cut: 1,
            ..SendReport::default()
        };
        assert_eq!(report, cut);
        assert_eq!(recv_lens(&b, 3), [10, 10, 10]);

        // Not a GSO refusal, or not a GSO transmit: counted failed, nothing sent again.
        let mut report = SendReport::default();
        a.send_refused(&gso, Some(libc::ENOBUFS), &mut report);
        let plain = Transmit {
            segment_size: None,
            ..gso
        };
        a.send_refused(&plain, Some(libc::EINVAL), &mut report);
        let failed = SendReport {
            failed: 2,
            last_error: Some(libc::EINVAL),
            ..SendReport::default()
        };
        assert_eq!(report, failed);
        let mut buf = [0u8; 64];
        let e = b.recv(&mut buf).unwrap_err();
        assert_eq!(
            e.kind(),
            io::ErrorKind::WouldBlock,
            "nothing was sent again"
        );
    }
}
