//! `virtio_net_hdr`: the header a TAP opened with `IFF_VNET_HDR` puts before every frame.
//!
//! It tells the reader which offloads the frame still needs (checksum, segmentation), and
//! tells the kernel the same about frames we write. Pure parse/emit over byte slices, in the
//! smoltcp style: a `Repr` with `parse`, `emit` and a fixed length. Fields are little endian:
//! tun uses the virtio 1.0 (little-endian) layout on little-endian hosts, and on any host
//! where `TUNSETVNETLE` is set; weft only supports little-endian hosts for the sleeve.

/// Length of the basic header (`struct virtio_net_hdr`).
pub const VNET_HDR_LEN: usize = 10;
/// Length of the header with `num_buffers` (`struct virtio_net_hdr_mrg_rxbuf`).
pub const VNET_HDR_MRG_LEN: usize = 12;

/// `flags`: the frame's L4 checksum is partial; complete it over `csum_start..` and store
/// it at `csum_start + csum_offset`.
pub const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
/// `flags`: the checksum has been validated.
pub const VIRTIO_NET_HDR_F_DATA_VALID: u8 = 2;

/// `gso_type`: not a GSO frame.
pub const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;
/// `gso_type`: TCP over IPv4 (TSO).
pub const VIRTIO_NET_HDR_GSO_TCPV4: u8 = 1;
/// `gso_type`: UDP fragmentation offload (legacy UFO).
pub const VIRTIO_NET_HDR_GSO_UDP: u8 = 3;
/// `gso_type`: TCP over IPv6 (TSO).
pub const VIRTIO_NET_HDR_GSO_TCPV6: u8 = 4;
/// `gso_type`: UDP segmentation (USO), v4 or v6.
pub const VIRTIO_NET_HDR_GSO_UDP_L4: u8 = 5;
/// `gso_type` bit: TCP with ECN (CWR must be kept on the first segment only).
pub const VIRTIO_NET_HDR_GSO_ECN: u8 = 0x80;

/// Which of the two header sizes a TAP uses (set with `TUNSETVNETHDRSZ`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VnetHdrLen {
    /// 10 bytes, `struct virtio_net_hdr` (the tun default).
    Basic,
    /// 12 bytes, `struct virtio_net_hdr_mrg_rxbuf` (adds `num_buffers`).
    MrgRxbuf,
}

impl VnetHdrLen {
    /// Header length in bytes.
    pub const fn bytes(self) -> usize {
        match self {
            Self::Basic => VNET_HDR_LEN,
            Self::MrgRxbuf => VNET_HDR_MRG_LEN,
        }
    }
}

/// Why a buffer is not a `virtio_net_hdr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VnetHdrError {
    /// Fewer bytes than the header length.
    #[error("buffer of {len} bytes is shorter than a {need}-byte virtio_net_hdr")]
    Truncated {
        /// bytes given
        len: usize,
        /// bytes needed
        need: usize,
    },
    /// A header length other than 10 or 12 was asked for.
    #[error("virtio_net_hdr length {0} is neither 10 nor 12")]
    BadLen(usize),
}

/// A parsed `virtio_net_hdr` (the 12-byte form's `num_buffers` included; 0 for 10-byte).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VirtioNetHdr {
    /// `VIRTIO_NET_HDR_F_*`
    pub flags: u8,
    /// `VIRTIO_NET_HDR_GSO_*`, possibly with `VIRTIO_NET_HDR_GSO_ECN`
    pub gso_type: u8,
    /// Length of the headers (Ethernet + IP + L4) to replicate on every segment.
    pub hdr_len: u16,
    /// Payload bytes per segment (MSS for TCP).
    pub gso_size: u16,
    /// Offset where checksumming starts (the L4 header).
    pub csum_start: u16,
    /// Offset of the checksum field from `csum_start`.
    pub csum_offset: u16,
    /// Only in the 12-byte form; ignored by tun on write.
    pub num_buffers: u16,
}

impl VirtioNetHdr {
    /// True when the frame is a GSO super-frame that must be segmented before it hits a wire.
    pub const fn is_gso(&self) -> bool {
        self.gso_type & !VIRTIO_NET_HDR_GSO_ECN != VIRTIO_NET_HDR_GSO_NONE
    }

    /// True when the frame's L4 checksum is still to be computed.
    pub const fn needs_csum(&self) -> bool {
        self.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0
    }

    /// Parses a header of `len` bytes (10 or 12) from the front of `buf`.
    pub fn parse(buf: &[u8], len: VnetHdrLen) -> Result<Self, VnetHdrError> {
        let need = len.bytes();
        if buf.len() < need {
            return Err(VnetHdrError::Truncated {
                len: buf.len(),
                need,
            });
        }
        let u16_at = |at: usize| u16::from_le_bytes([buf[at], buf[at + 1]]);
        Ok(Self {
            flags: buf[0],
            gso_type: buf[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
            num_buffers: if need == VNET_HDR_MRG_LEN {
                u16_at(10)
            } else {
                0
            },
        })
    }

    /// Writes the header (10 or 12 bytes) to the front of `buf`; returns the bytes written.
    pub fn emit(&self, buf: &mut [u8], len: VnetHdrLen) -> Result<usize, VnetHdrError> {
        let need = len.bytes();
        if buf.len() < need {
            return Err(VnetHdrError::Truncated {
                len: buf.len(),
                need,
            });
        }
        buf[0] = self.flags;
        buf[1] = self.gso_type;
        buf[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        buf[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        buf[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        buf[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        if need == VNET_HDR_MRG_LEN {
            buf[10..12].copy_from_slice(&self.num_buffers.to_le_bytes());
        }
        Ok(need)
    }
}

impl TryFrom<usize> for VnetHdrLen {
    type Error = VnetHdrError;

    fn try_from(len: usize) -> Result<Self, VnetHdrError> {
        match len {
            VNET_HDR_LEN => Ok(Self::Basic),
            VNET_HDR_MRG_LEN => Ok(Self::MrgRxbuf),
            other => Err(VnetHdrError::BadLen(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_known_tso_header() {
        // A TSO4 super-frame as tun hands it out: NEEDS_CSUM, TCPV4, 66-byte headers,
        // MSS 1448, checksum at 34 + 16.
        let bytes = [1, 1, 66, 0, 0xa8, 0x05, 34, 0, 16, 0];
        let hdr = VirtioNetHdr::parse(&bytes, VnetHdrLen::Basic).unwrap();
        assert_eq!(
            hdr,
            VirtioNetHdr {
                flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
                gso_type: VIRTIO_NET_HDR_GSO_TCPV4,
                hdr_len: 66,
                gso_size: 1448,
                csum_start: 34,
                csum_offset: 16,
                num_buffers: 0,
            }
        );
        assert!(hdr.is_gso());
        assert!(hdr.needs_csum());
    }

    #[test]
    fn emit_then_parse_round_trips_both_lengths() {
        let hdr = VirtioNetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: VIRTIO_NET_HDR_GSO_UDP_L4,
            hdr_len: 0x1234,
            gso_size: 0xbeef,
            csum_start: 0x0102,
            csum_offset: 6,
            num_buffers: 7,
        };
        let mut buf = [0xffu8; 16];
        assert_eq!(hdr.emit(&mut buf, VnetHdrLen::MrgRxbuf), Ok(12));
        assert_eq!(
            &buf[..12],
            &[1, 5, 0x34, 0x12, 0xef, 0xbe, 2, 1, 6, 0, 7, 0]
        );
        assert_eq!(buf[12], 0xff, "emit must not write past the header");
        assert_eq!(VirtioNetHdr::parse(&buf, VnetHdrLen::MrgRxbuf), Ok(hdr));

        let mut buf = [0u8; 10];
        assert_eq!(hdr.emit(&mut buf, VnetHdrLen::Basic), Ok(10));
        let back = VirtioNetHdr::parse(&buf, VnetHdrLen::Basic).unwrap();
        assert_eq!(
            back,
            VirtioNetHdr {
                num_buffers: 0,
                ..hdr
            }
        );
    }

    #[test]
    fn short_buffers_are_refused() {
        let hdr = VirtioNetHdr::default();
        assert!(!hdr.is_gso());
        assert_eq!(
            VirtioNetHdr::parse(&[0; 9], VnetHdrLen::Basic),
            Err(VnetHdrError::Truncated { len: 9, need: 10 })
        );
        assert_eq!(
            hdr.emit(&mut [0; 11], VnetHdrLen::MrgRxbuf),
            Err(VnetHdrError::Truncated { len: 11, need: 12 })
        );
        assert_eq!(VnetHdrLen::try_from(11), Err(VnetHdrError::BadLen(11)));
        assert_eq!(VnetHdrLen::try_from(12), Ok(VnetHdrLen::MrgRxbuf));
    }

    #[test]
    fn ecn_bit_alone_is_not_gso() {
        let hdr = VirtioNetHdr {
            gso_type: VIRTIO_NET_HDR_GSO_ECN,
            ..Default::default()
        };
        assert!(!hdr.is_gso());
        let hdr = VirtioNetHdr {
            gso_type: VIRTIO_NET_HDR_GSO_ECN | VIRTIO_NET_HDR_GSO_TCPV6,
            ..Default::default()
        };
        assert!(hdr.is_gso());
    }
}
