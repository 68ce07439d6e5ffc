//! Frames from the local bridge: MAC learning, then one datagram to the next hop or one
//! per child down our broadcast tree; the datagram sent from the engine's scratch buffer.

use super::framing::{frame_overhead, mac_at, routing_prefix, seal_datagram, segment_room};
use super::{BROADCAST, DropReason, Output, ROUTING_PREFIX_LEN, Sleeve};
use crate::crypto::TAG_LEN_BYTES;
use crate::fastdp::HEARTBEAT_ETHERTYPE;
use crate::peer::PeerName;
use crate::segment::Offload;
use crate::switch::Forward;
use crate::time::Instant;
use crate::wire::WireError;
use crate::wire::datagram::{DATAGRAM_HEADER_LEN, DatagramKind, EthFramesWriter};

impl Sleeve {
    /// Call with a frame read from the local bridge port (fully checksummed, no GSO).
    pub fn handle_bridge_frame(
        &mut self,
        now: Instant,
        frame: &[u8],
        out: &mut impl FnMut(Output<'_>),
    ) {
        self.handle_bridge_offload_frame(now, frame, &Offload::default(), out);
    }

    /// Call with a frame read from a bridge port with offloads: `off` says whether it is
    /// a TSO/USO super-frame or has a partial checksum. Such frames are cut into real
    /// segments ([`crate::segment`]), one datagram each, sent to a peer as GSO batches.
    pub fn handle_bridge_offload_frame(
        &mut self,
        now: Instant,
        frame: &[u8],
        off: &Offload,
        out: &mut impl FnMut(Output<'_>),
    ) {
        self.stats.frames_from_bridge += 1;
        let (Some(dst), Some(src)) = (mac_at(frame, 0), mac_at(frame, 6)) else {
            self.stats
                .count(DropReason::Malformed(WireError::Truncated));
            return;
        };
        if frame.get(12..14) == Some(&HEARTBEAT_ETHERTYPE.to_be_bytes()[..]) {
            // Fast-path heartbeats prove the kernel path; carrying them would lie.
            return;
        }
        self.macs.learn(src, self.me, now);
        match self.macs.decide(dst, now) {
            Forward::Local => {}
            Forward::Unicast(dest) if self.fast.contains(&dest) => {
                self.stats.frames_left_to_kernel += 1;
            }
            Forward::Unicast(dest) => {
                let Some(hop) = self.next_hop.get(&dest).copied() else {
                    self.stats.count(DropReason::NoRoute);
                    return;
                };
                self.send_frames(hop, self.me, dest, frame, off, out);
            }
            Forward::Flood => {
                let kids = self.children.get(&self.me).cloned().unwrap_or_default();
                for hop in kids {
                    if self.fast.contains(&hop) && !self.has_subtree(hop) {
                        self.stats.frames_left_to_kernel += 1;
                        continue;
                    }
                    self.send_frames(hop, self.me, BROADCAST, frame, off, out);
                }
            }
        }
    }

    /// For a TCP frame whose datagram would not fit the link MTU to `hop`: the TSO request
    /// that cuts it into segments that do.
    pub(super) fn tcp_cut_for_link(&self, hop: PeerName, frame: &[u8]) -> Option<Offload> {
        let room = segment_room(self.peers.get(&hop)?, frame_overhead(self.encrypt))?;
        if frame.len() <= room {
            // Fits as it is (the common case: no parsing).
            return None;
        }
        let at = crate::segment::Layout::parse(frame)?;
        let mss = room.checked_sub(at.hdr_end).filter(|&m| m > 0)?;
        (at.tcp && at.ip_end - at.hdr_end > mss).then(|| Offload {
            gso: if at.v6 {
                crate::segment::Gso::TcpV6
            } else {
                crate::segment::Gso::TcpV4
            },
            gso_size: u16::try_from(mss).unwrap_or(u16::MAX),
            hdr_len: at.hdr_end as u16,
            ..Offload::default()
        })
    }

    fn send_frames(
        &mut self,
        hop: PeerName,
        origin: PeerName,
        dest: PeerName,
        frame: &[u8],
        off: &Offload,
        out: &mut impl FnMut(Output<'_>),
    ) {
        if off.gso != crate::segment::Gso::None
            || off.csum.is_some()
            || self.tcp_cut_for_link(hop, frame).is_some()
        {
            self.send_segments(hop, origin, dest, frame, off, out);
            return;
        }
        let body = routing_prefix(origin, dest);
        let payload_len = ROUTING_PREFIX_LEN + 2 + frame.len();
        if DATAGRAM_HEADER_LEN + payload_len + TAG_LEN_BYTES > self.scratch.len() {
            self.stats.count(DropReason::TooBig);
            return;
        }
        let start = DATAGRAM_HEADER_LEN;
        self.scratch[start..start + ROUTING_PREFIX_LEN].copy_from_slice(&body);
        let mut w = EthFramesWriter::new(&mut self.scratch[start + ROUTING_PREFIX_LEN..]);
        if let Err(e) = w.push(frame) {
            self.stats.count(DropReason::Malformed(e));
            return;
        }
        self.finish(hop, DatagramKind::Frames, payload_len, out);
    }

    pub(super) fn send_payload(
        &mut self,
        hop: PeerName,
        kind: DatagramKind,
        plain: &[u8],
        out: &mut impl FnMut(Output<'_>),
    ) {
        let start = DATAGRAM_HEADER_LEN;
        if start + plain.len() + TAG_LEN_BYTES > self.scratch.len() {
            self.stats.count(DropReason::TooBig);
            return;
        }
        self.scratch[start..start + plain.len()].copy_from_slice(plain);
        self.finish(hop, kind, plain.len(), out);
    }

    /// Seals (or not) the payload already in `scratch[HEADER..HEADER+len]`, writes the
    /// header and emits the datagram to `hop`.
    pub(super) fn finish(
        &mut self,
        hop: PeerName,
        kind: DatagramKind,
        len: usize,
        out: &mut impl FnMut(Output<'_>),
    ) {
        let Some(peer) = self.peers.get(&hop) else {
            self.stats.count(DropReason::NoRoute);
            return;
        };
        match seal_datagram(
            peer,
            &self.plain_counter,
            self.me,
            self.encrypt,
            hop,
            kind,
            &mut self.scratch,
            len,
        ) {
            Ok(total) => {
                self.stats.datagrams_sent += 1;
                out(Output::Datagram {
                    to: peer.addr,
                    bytes: &self.scratch[..total],
                    segment_size: None,
                });
            }
            Err(e) => self.stats.count(e),
        }
    }
}
