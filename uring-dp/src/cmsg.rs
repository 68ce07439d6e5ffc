//! Control messages for UDP GSO (`UDP_SEGMENT`, on send) and GRO (`UDP_GRO`, on receive).
//!
//! Pure byte-level encode/decode of `struct cmsghdr` records, so they can be unit-tested
//! against libc's `CMSG_*` macros and used both by `sendmsg`/`recvmmsg` and by io_uring's
//! `SendMsg`/`RecvMsg`. The buffers handed to the kernel must be aligned for `cmsghdr`:
//! use [`CmsgBuf`].

/// `SOL_UDP` (= IPPROTO_UDP).
pub const SOL_UDP: libc::c_int = 17;
/// `UDP_SEGMENT`: on a socket, the default GSO segment size; as a cmsg, this send's size.
pub const UDP_SEGMENT: libc::c_int = 103;
/// `UDP_GRO`: on a socket, enable receive coalescing; as a cmsg, the segment size received.
pub const UDP_GRO: libc::c_int = 104;

const HDR_LEN: usize = size_of::<libc::cmsghdr>();

/// `CMSG_ALIGN`: rounds up to the alignment of `size_t`.
pub(crate) const fn cmsg_align(len: usize) -> usize {
    let a = size_of::<usize>();
    (len + a - 1) & !(a - 1)
}

/// `CMSG_LEN`: header plus `data_len` bytes, the value of `cmsg_len`.
pub(crate) const fn cmsg_len(data_len: usize) -> usize {
    cmsg_align(HDR_LEN) + data_len
}

/// `CMSG_SPACE`: the bytes a record with `data_len` bytes of data takes in the buffer.
pub(crate) const fn cmsg_space(data_len: usize) -> usize {
    cmsg_align(HDR_LEN) + cmsg_align(data_len)
}

/// Bytes of control buffer one GSO send needs.
pub const GSO_CMSG_SPACE: usize = cmsg_space(size_of::<u16>());
/// Bytes of control buffer one receive needs for the GRO record (with room to spare for one
/// more small record the kernel might add).
pub const RECV_CMSG_SPACE: usize = 2 * cmsg_space(size_of::<libc::c_int>());

/// A control-message buffer aligned for `cmsghdr`.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(8))]
pub struct CmsgBuf(pub [u8; RECV_CMSG_SPACE]);

impl Default for CmsgBuf {
    fn default() -> Self {
        Self([0; RECV_CMSG_SPACE])
    }
}

fn write_record(buf: &mut [u8], level: libc::c_int, ty: libc::c_int, data: &[u8]) -> Option<usize> {
    let space = cmsg_space(data.len());
    if buf.len() < space {
        return None;
    }
    buf[..space].fill(0);
    let len = cmsg_len(data.len());
    let (len_bytes, rest) = buf.split_at_mut(size_of::<usize>());
    len_bytes.copy_from_slice(&len.to_ne_bytes());
    rest[..4].copy_from_slice(&level.to_ne_bytes());
    rest[4..8].copy_from_slice(&ty.to_ne_bytes());
    let data_at = cmsg_align(HDR_LEN);
    buf[data_at..data_at + data.len()].copy_from_slice(data);
    Some(space)
}

/// Writes a `SOL_UDP/UDP_SEGMENT` record asking the kernel to cut the datagram into
/// `segment_size`-byte segments; returns the bytes used (`msg_controllen`), or `None` when
/// `buf` is too short.
pub fn encode_gso(buf: &mut [u8], segment_size: u16) -> Option<usize> {
    write_record(buf, SOL_UDP, UDP_SEGMENT, &segment_size.to_ne_bytes())
}

/// Finds the `SOL_UDP/UDP_GRO` record in a received control buffer (the first
/// `msg_controllen` bytes) and returns the segment size it carries.
pub fn decode_gro(control: &[u8]) -> Option<u16> {
    let mut at = 0;
    let us = size_of::<usize>();
    while at + HDR_LEN <= control.len() {
        let rec = &control[at..];
        let len = usize::from_ne_bytes(rec[..us].try_into().ok()?);
        let level = libc::c_int::from_ne_bytes(rec[us..us + 4].try_into().ok()?);
        let ty = libc::c_int::from_ne_bytes(rec[us + 4..us + 8].try_into().ok()?);
        if len < HDR_LEN || at + len > control.len() {
            return None;
        }
        let data = &rec[cmsg_align(HDR_LEN)..len];
        if level == SOL_UDP && ty == UDP_GRO {
            return match data.len() {
                4 => {
                    let v = libc::c_int::from_ne_bytes(data.try_into().ok()?);
                    u16::try_from(v).ok()
                }
                2 => Some(u16::from_ne_bytes(data.try_into().ok()?)),
                _ => None,
            };
        }
        at += cmsg_align(len);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem;

    #[test]
    fn sizes_match_libc_macros() {
        // SAFETY: CMSG_SPACE/CMSG_LEN are pure arithmetic.
        let (space, len) = unsafe { (libc::CMSG_SPACE(2), libc::CMSG_LEN(2)) };
        assert_eq!(cmsg_space(2), space as usize);
        assert_eq!(cmsg_len(2), len as usize);
        assert_eq!(GSO_CMSG_SPACE, space as usize);
    }

    #[test]
    fn gso_record_reads_back_through_libc_macros() {
        let mut buf = CmsgBuf::default();
        let used = encode_gso(&mut buf.0, 1200).unwrap();
        assert_eq!(used, GSO_CMSG_SPACE);

        // Walk it the way the kernel's and libc's macros do.
        // SAFETY: all-zero msghdr is valid; control points at our aligned live buffer.
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_control = buf.0.as_mut_ptr().cast();
        msg.msg_controllen = used as _;
        // SAFETY: msg describes a valid control buffer of `used` bytes.
        let cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
        assert!(!cmsg.is_null());
        // SAFETY: CMSG_FIRSTHDR returned a pointer inside our buffer.
        let (hdr, data) = unsafe { (&*cmsg, libc::CMSG_DATA(cmsg).cast::<u16>().read_unaligned()) };
        assert_eq!(hdr.cmsg_level, SOL_UDP);
        assert_eq!(hdr.cmsg_type, UDP_SEGMENT);
        #[allow(clippy::unnecessary_cast)] // size_t on glibc, socklen_t on musl
        let len = hdr.cmsg_len as usize;
        assert_eq!(len, cmsg_len(2));
        assert_eq!(data, 1200);
        // SAFETY: same buffer, asking for the record after the only one.
        assert!(unsafe { libc::CMSG_NXTHDR(&msg, cmsg) }.is_null());
    }

    #[test]
    fn gso_refuses_short_buffers() {
        let mut small = [0u8; GSO_CMSG_SPACE - 1];
        assert_eq!(encode_gso(&mut small, 1400), None);
    }

    #[test]
    fn gro_found_after_another_record() {
        let mut buf = CmsgBuf::default();
        // An unrelated 4-byte record first (IP_TOS-like), then UDP_GRO with an int.
        let first =
            write_record(&mut buf.0, libc::IPPROTO_IP, libc::IP_TOS, &[1, 0, 0, 0]).unwrap();
        let second = write_record(
            &mut buf.0[first..],
            SOL_UDP,
            UDP_GRO,
            &1448i32.to_ne_bytes(),
        )
        .unwrap();
        assert_eq!(decode_gro(&buf.0[..first + second]), Some(1448));
        assert_eq!(decode_gro(&buf.0[..first]), None);
        // A corrupt length must not be followed out of the buffer.
        let mut bad = buf;
        bad.0[..8].copy_from_slice(&999usize.to_ne_bytes());
        assert_eq!(decode_gro(&bad.0[..first + second]), None);
        assert_eq!(decode_gro(&[]), None);
    }
}
