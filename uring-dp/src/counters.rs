//! Datapath counters: written by the pump thread, read by anyone (status, metrics, tests).
//!
//! Relaxed atomics: each counter is monotonic and read on its own; there is no invariant
//! between two counters that a reader could see broken.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// Live counters of one pump, shared through an `Arc`.
        #[derive(Debug, Default)]
        pub struct Counters {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        /// A copy of [`Counters`] at one moment.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct CounterSnapshot {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl Counters {
            /// Reads every counter.
            pub fn snapshot(&self) -> CounterSnapshot {
                CounterSnapshot {
                    $($name: self.$name.load(Ordering::Relaxed),)*
                }
            }

            /// Adds a batch's local tallies (one atomic add per non-zero counter).
            pub(crate) fn add(&self, d: &CounterSnapshot) {
                $(if d.$name != 0 {
                    self.$name.fetch_add(d.$name, Ordering::Relaxed);
                })*
            }
        }

        impl CounterSnapshot {
            /// Adds `other`'s counts to these (the pumps of a multi-queue sleeve, summed).
            pub fn merge(&mut self, other: &Self) {
                $(self.$name += other.$name;)*
            }
        }
    };
}

counters! {
    /// Frames read from the TAP.
    tap_frames_in,
    /// Bytes read from the TAP (Ethernet frames, without virtio_net_hdr).
    tap_bytes_in,
    /// Frames written to the TAP.
    tap_frames_out,
    /// Bytes written to the TAP (without virtio_net_hdr).
    tap_bytes_out,
    /// Datagrams received (GRO runs counted per segment).
    udp_datagrams_in,
    /// Payload bytes received.
    udp_bytes_in,
    /// Datagrams sent (GSO sends counted per segment).
    udp_datagrams_out,
    /// Payload bytes sent.
    udp_bytes_out,
    /// Batches (wake-ups that did work) the pump ran.
    batches,
    /// Drops: the handler's outbox was full.
    drop_outbox_full,
    /// Drops: a TAP frame shorter than its virtio_net_hdr.
    drop_tap_malformed,
    /// Drops: the TAP refused a write.
    drop_tap_write,
    /// Drops: a datagram larger than the receive buffer.
    drop_udp_truncated,
    /// Drops: the kernel refused a send.
    drop_udp_send,
    /// GSO sends the kernel refused (segments over the path MTU) and that went again one
    /// datagram at a time.
    udp_gso_cut,
    /// Read/receive errors other than "nothing there".
    io_errors,
}
