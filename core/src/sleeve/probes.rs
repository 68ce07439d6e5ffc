//! Heartbeats, which tell whether a peer's UDP path works, and path-MTU probes, which
//! tell the largest datagram that reaches it.

use super::{DropReason, Output, Peer, Sleeve};
use crate::crypto::TAG_LEN_BYTES;
use crate::peer::PeerName;
use crate::time::Instant;
use crate::wire::WireError;
use crate::wire::datagram::{DATAGRAM_HEADER_LEN, DatagramHeader, Payload};
use alloc::vec::Vec;

impl Sleeve {
    /// Call periodically (at [`Sleeve::poll_timeout`]): heartbeats and MTU probes.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut impl FnMut(Output<'_>)) {
        let due: Vec<PeerName> = self
            .peers
            .iter()
            .filter(|(_, p)| p.next_heartbeat <= now)
            .map(|(n, _)| *n)
            .collect();
        for name in due {
            if let Some(p) = self.peers.get_mut(&name) {
                p.next_heartbeat = now + self.heartbeat_interval;
                let probe = p.pmtu_bytes.is_none();
                self.send_control(name, Payload::Heartbeat, out);
                if probe {
                    // One probe the size of a full-MTU frame datagram on a 1500-byte underlay.
                    let padding_len = 1500 - 20 - 8 - DATAGRAM_HEADER_LEN - 4 - TAG_LEN_BYTES;
                    self.send_control(name, Payload::PmtuProbe { id: 1, padding_len }, out);
                }
            }
        }
    }

    /// When [`Sleeve::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.peers.values().map(|p| p.next_heartbeat).min()
    }

    /// Whether `p` was heard within the heartbeat timeout.
    pub(super) fn is_up(&self, p: &Peer, now: Instant) -> bool {
        p.last_heard
            .is_some_and(|t| now.saturating_since(t) < self.heartbeat_timeout)
    }

    fn send_control(
        &mut self,
        to: PeerName,
        payload: Payload<'_>,
        out: &mut impl FnMut(Output<'_>),
    ) {
        let start = DATAGRAM_HEADER_LEN;
        let end = self.scratch.len() - TAG_LEN_BYTES;
        match payload.emit(&mut self.scratch[start..end]) {
            Ok(len) => self.finish(to, payload.kind(), len, out),
            Err(e) => self.stats.count(DropReason::Malformed(e)),
        }
    }

    /// A peer's PMTU probe (plaintext `body`): answer with the size it arrived at.
    pub(super) fn answer_pmtu_probe(
        &mut self,
        header: DatagramHeader,
        body: &[u8],
        out: &mut impl FnMut(Output<'_>),
    ) -> Result<(), DropReason> {
        let Payload::PmtuProbe { id, .. } =
            Payload::parse(header.kind, body).map_err(DropReason::Malformed)?
        else {
            return Err(DropReason::Malformed(WireError::Inconsistent));
        };
        let size = u16::try_from(
            DATAGRAM_HEADER_LEN + body.len() + if header.sealed { TAG_LEN_BYTES } else { 0 },
        )
        .unwrap_or(u16::MAX);
        self.send_control(header.sender, Payload::PmtuReply { id, size }, out);
        Ok(())
    }

    /// A peer's reply to our PMTU probe: the largest size known to reach it grows.
    pub(super) fn take_pmtu_reply(
        &mut self,
        header: DatagramHeader,
        body: &[u8],
    ) -> Result<(), DropReason> {
        if let Payload::PmtuReply { size, .. } =
            Payload::parse(header.kind, body).map_err(DropReason::Malformed)?
        {
            let p = self
                .peers
                .get_mut(&header.sender)
                .ok_or(DropReason::UnknownPeer)?;
            p.pmtu_bytes = Some(p.pmtu_bytes.map_or(size, |m| m.max(size)));
        }
        Ok(())
    }
}
