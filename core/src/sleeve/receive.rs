//! A datagram from a peer: the header checks, opening (or the plain replay check), then
//! delivery to the bridge and relaying onward.

use super::framing::{mac_at, name_at};
use super::{BROADCAST, DropReason, Output, ROUTING_PREFIX_LEN, Sleeve};
use crate::time::Instant;
use crate::wire::WireError;
use crate::wire::datagram::{DATAGRAM_HEADER_LEN, DatagramHeader, DatagramKind, EthFrames};
use alloc::vec::Vec;
use core::net::SocketAddr;

impl Sleeve {
    /// Call with a datagram received on the sleeve port. The buffer is opened in place.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        dgram: &mut [u8],
        out: &mut impl FnMut(Output<'_>),
    ) {
        self.stats.datagrams_received += 1;
        if let Err(d) = self.receive(now, from, dgram, out) {
            self.stats.count(d);
        }
    }

    /// The checks on a datagram's header before opening it: parses, for us, sealed as we
    /// seal, from a peer we know (for a plain one: from that peer's address).
    pub(super) fn check_header(
        &self,
        from: SocketAddr,
        dgram: &[u8],
    ) -> Result<DatagramHeader, DropReason> {
        let (header, _) = DatagramHeader::parse(dgram).map_err(DropReason::Malformed)?;
        if header.receiver != self.me {
            return Err(DropReason::NotForUs);
        }
        if header.sealed != self.encrypt {
            return Err(DropReason::EncryptionMismatch);
        }
        let peer = self
            .peers
            .get(&header.sender)
            .ok_or(DropReason::UnknownPeer)?;
        // Without a seal, the only proof of the sender is where it came from.
        if !header.sealed && from.ip() != peer.addr.ip() {
            return Err(DropReason::UnknownPeer);
        }
        Ok(header)
    }

    fn receive(
        &mut self,
        now: Instant,
        from: SocketAddr,
        dgram: &mut [u8],
        out: &mut impl FnMut(Output<'_>),
    ) -> Result<(), DropReason> {
        let header = self.check_header(from, dgram)?;
        let peer = self
            .peers
            .get_mut(&header.sender)
            .ok_or(DropReason::UnknownPeer)?;
        let (aad, body) = dgram.split_at_mut(DATAGRAM_HEADER_LEN);
        let plain_len = if header.sealed {
            let opener = peer.opener.as_ref().ok_or(DropReason::EncryptionMismatch)?;
            opener
                .open_in_place(header.counter, aad, body)
                .map_err(|_| DropReason::Crypto)?
        } else {
            // Unsealed, the counter is no proof of anything, but it stops the network (or
            // a careless middlebox) from delivering a datagram twice.
            peer.plain_window
                .update(header.counter)
                .map_err(|_| DropReason::Replayed)?;
            body.len()
        };
        self.accept(now, from, header, &body[..plain_len], out)
    }

    /// Acts on an authenticated datagram's plaintext `body`, which came from `from`.
    ///
    /// The sender's address follows where its authenticated datagrams come from (as
    /// WireGuard's roaming does): a peer behind NAT is answered at the address and port
    /// its NAT mapped, which only the datagrams show, not the connection's TCP address
    /// nor gossip. A sealed datagram proves its sender; a plain one was already checked
    /// to come from the peer's IP address, so only its port can move. Replays were
    /// refused before this, so an old datagram cannot move the address back.
    pub(super) fn accept(
        &mut self,
        now: Instant,
        from: SocketAddr,
        header: DatagramHeader,
        body: &[u8],
        out: &mut impl FnMut(Output<'_>),
    ) -> Result<(), DropReason> {
        if let Some(peer) = self.peers.get_mut(&header.sender) {
            peer.last_heard = Some(now);
            if peer.addr != from {
                peer.addr = from;
                peer.addr_since = now;
                peer.addr_learned = true;
                // A new path: what was probed on the old one may not hold.
                peer.pmtu_bytes = None;
                self.stats.peer_addr_changes += 1;
            } else if !peer.addr_learned {
                peer.addr_learned = true;
                peer.addr_since = now;
            }
        }
        match header.kind {
            DatagramKind::Heartbeat => Ok(()),
            DatagramKind::PmtuProbe => self.answer_pmtu_probe(header, body, out),
            DatagramKind::PmtuReply => self.take_pmtu_reply(header, body),
            DatagramKind::Frames | DatagramKind::FramesCsumPartial => {
                let partial = header.kind == DatagramKind::FramesCsumPartial;
                if body.len() < ROUTING_PREFIX_LEN {
                    return Err(DropReason::Malformed(WireError::Truncated));
                }
                let origin = name_at(body, 0);
                let dest = name_at(body, 6);
                let frames =
                    EthFrames::parse(&body[ROUTING_PREFIX_LEN..]).map_err(DropReason::Malformed)?;
                if origin == self.me {
                    return Err(DropReason::NotForUs);
                }
                // What a fast-path peer originates, the kernel delivers; we only relay it.
                let deliver =
                    (dest == self.me || dest == BROADCAST) && !self.fast.contains(&origin);
                for f in frames.iter() {
                    if let Some(src) = mac_at(f, 6) {
                        self.macs.learn(src, origin, now);
                    }
                    if deliver {
                        self.stats.frames_to_bridge += 1;
                        out(match partial {
                            true => Output::FrameCsumPartial(f),
                            false => Output::Frame(f),
                        });
                    }
                }
                // Copy the plaintext out: relaying re-seals it per hop.
                if dest == BROADCAST {
                    let kids = self.children.get(&origin).cloned().unwrap_or_default();
                    if !kids.is_empty() {
                        let plain: Vec<u8> = body.to_vec();
                        for hop in kids {
                            self.stats.frames_relayed += frames.len() as u64;
                            self.send_payload(hop, header.kind, &plain, out);
                        }
                    }
                } else if dest != self.me {
                    let hop = self
                        .next_hop
                        .get(&dest)
                        .copied()
                        .ok_or(DropReason::NoRoute)?;
                    let plain: Vec<u8> = body.to_vec();
                    self.stats.frames_relayed += frames.len() as u64;
                    self.send_payload(hop, header.kind, &plain, out);
                }
                Ok(())
            }
        }
    }
}
