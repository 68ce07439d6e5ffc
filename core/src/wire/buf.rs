//! Bounds-checked cursors over byte slices. Nothing here can panic: every read checks the
//! remaining length and returns [`WireError::Truncated`]; every write returns
//! [`WireError::BufferTooSmall`].

use super::WireError;
use crate::peer::PeerName;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Reads big-endian fields from a borrowed slice.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Fails with [`WireError::Inconsistent`] unless everything was read.
    pub fn finish(&self) -> Result<(), WireError> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(WireError::Inconsistent)
        }
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.remaining() < n {
            return Err(WireError::Truncated);
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// Everything not yet read.
    pub fn rest(&mut self) -> &'a [u8] {
        let out = &self.buf[self.pos..];
        self.pos = self.buf.len();
        out
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }

    /// A big-endian u16.
    pub fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    /// A big-endian u32.
    pub fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// A big-endian u64.
    pub fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// A 6-byte peer name.
    pub fn peer_name(&mut self) -> Result<PeerName, WireError> {
        Ok(PeerName::from_bytes(self.array()?))
    }

    /// A u8-length-prefixed byte string of at most `len_max` bytes.
    pub fn short_bytes(&mut self, len_max: usize) -> Result<&'a [u8], WireError> {
        let n = usize::from(self.u8()?);
        if n > len_max {
            return Err(WireError::Oversized);
        }
        self.bytes(n)
    }

    /// A u16 count of the items that follow: [`WireError::Oversized`] above `count_max`,
    /// [`WireError::Truncated`] if that many items of at least `item_len_min` bytes cannot
    /// fit in what is left (so a count can size an allocation).
    pub fn count(&mut self, count_max: usize, item_len_min: usize) -> Result<usize, WireError> {
        let count = usize::from(self.u16()?);
        if count > count_max {
            return Err(WireError::Oversized);
        }
        if count * item_len_min > self.remaining() {
            return Err(WireError::Truncated);
        }
        Ok(count)
    }

    /// A socket address: family byte (4 or 6), address, port.
    pub fn socket_addr(&mut self) -> Result<SocketAddr, WireError> {
        let ip = match self.u8()? {
            4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>()?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>()?)),
            _ => return Err(WireError::Inconsistent),
        };
        Ok(SocketAddr::new(ip, self.u16()?))
    }
}

/// Writes big-endian fields into a caller's buffer.
#[derive(Debug)]
pub struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    /// A writer at the start of `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.pos
    }

    /// True if nothing was written.
    pub fn is_empty(&self) -> bool {
        self.pos == 0
    }

    /// Room left.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The written bytes, mutably (to patch a length field, or seal in place).
    pub fn written_mut(&mut self) -> &mut [u8] {
        &mut self.buf[..self.pos]
    }

    /// Appends raw bytes.
    pub fn bytes(&mut self, b: &[u8]) -> Result<(), WireError> {
        if self.remaining() < b.len() {
            return Err(WireError::BufferTooSmall);
        }
        self.buf[self.pos..self.pos + b.len()].copy_from_slice(b);
        self.pos += b.len();
        Ok(())
    }

    /// Appends one byte.
    pub fn u8(&mut self, v: u8) -> Result<(), WireError> {
        self.bytes(&[v])
    }

    /// Appends a big-endian u16.
    pub fn u16(&mut self, v: u16) -> Result<(), WireError> {
        self.bytes(&v.to_be_bytes())
    }

    /// Appends a big-endian u32.
    pub fn u32(&mut self, v: u32) -> Result<(), WireError> {
        self.bytes(&v.to_be_bytes())
    }

    /// Appends a big-endian u64.
    pub fn u64(&mut self, v: u64) -> Result<(), WireError> {
        self.bytes(&v.to_be_bytes())
    }

    /// Appends a 6-byte peer name.
    pub fn peer_name(&mut self, n: PeerName) -> Result<(), WireError> {
        self.bytes(&n.to_bytes())
    }

    /// Appends a u8-length-prefixed byte string (at most `len_max`, itself at most 255).
    pub fn short_bytes(&mut self, b: &[u8], len_max: usize) -> Result<(), WireError> {
        if b.len() > len_max || b.len() > usize::from(u8::MAX) {
            return Err(WireError::Oversized);
        }
        self.u8(b.len() as u8)?;
        self.bytes(b)
    }

    /// Appends a socket address as [`Reader::socket_addr`] reads it.
    pub fn socket_addr(&mut self, a: SocketAddr) -> Result<(), WireError> {
        match a.ip() {
            IpAddr::V4(v4) => {
                self.u8(4)?;
                self.bytes(&v4.octets())?;
            }
            IpAddr::V6(v6) => {
                self.u8(6)?;
                self.bytes(&v6.octets())?;
            }
        }
        self.u16(a.port())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_truncation() {
        let mut out = [0u8; 64];
        let mut w = Writer::new(&mut out);
        w.u8(1).unwrap();
        w.u16(0x0203).unwrap();
        w.u64(42).unwrap();
        w.short_bytes(b"hi", 8).unwrap();
        w.socket_addr("10.0.0.1:6783".parse().unwrap()).unwrap();
        w.socket_addr("[::1]:6783".parse().unwrap()).unwrap();
        let n = w.len();
        let mut r = Reader::new(&out[..n]);
        assert_eq!(r.u8(), Ok(1));
        assert_eq!(r.u16(), Ok(0x0203));
        assert_eq!(r.u64(), Ok(42));
        assert_eq!(r.short_bytes(8), Ok(&b"hi"[..]));
        assert_eq!(r.socket_addr(), Ok("10.0.0.1:6783".parse().unwrap()));
        assert_eq!(r.socket_addr(), Ok("[::1]:6783".parse().unwrap()));
        assert_eq!(r.finish(), Ok(()));
        let mut short = Reader::new(&out[..2]);
        assert_eq!(short.u64(), Err(WireError::Truncated));
        let mut small = [0u8; 3];
        assert_eq!(
            Writer::new(&mut small).u64(1),
            Err(WireError::BufferTooSmall)
        );
        let mut long = Reader::new(&[9, 1, 2]);
        assert_eq!(long.short_bytes(8), Err(WireError::Oversized));
    }

    #[test]
    fn counts_are_bounded_by_their_limit_and_by_the_bytes_left() {
        // Count 3, then 6 bytes: room for three 2-byte items, not three 3-byte ones.
        let buf = [0, 3, 1, 2, 3, 4, 5, 6];
        assert_eq!(Reader::new(&buf).count(3, 2), Ok(3));
        assert_eq!(Reader::new(&buf).count(2, 2), Err(WireError::Oversized));
        assert_eq!(Reader::new(&buf).count(3, 3), Err(WireError::Truncated));
        assert_eq!(
            Reader::new(&buf[..1]).count(3, 0),
            Err(WireError::Truncated)
        );
    }
}
