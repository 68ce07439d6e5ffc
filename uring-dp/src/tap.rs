//! `Tap`: a TAP device from `/dev/net/tun` (`IFF_TAP | IFF_NO_PI`, optionally
//! `IFF_VNET_HDR` and TSO/USO offloads), non-blocking, one frame per read/write.
//!
//! It does not configure the link (up, MTU, addresses, bridge port): that is netlink's job
//! in the host crate. The device lives in the network namespace of the thread that opens it.

use std::ffi::CStr;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use crate::Error;
use crate::sys::{cvt, cvt_size, set_nonblocking};
use crate::vnet::{VirtioNetHdr, VnetHdrError, VnetHdrLen};

// The tun ioctls, from <linux/if_tun.h> (stable ABI; not all are in every libc release).
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const IFF_MULTI_QUEUE: libc::c_short = 0x0100;
const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;
const TUN_F_TSO6: libc::c_uint = 0x04;
const TUN_F_USO4: libc::c_uint = 0x20;
const TUN_F_USO6: libc::c_uint = 0x40;

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
pub const IFNAME_LEN_MAX: usize = 15;
/// The largest frame a TAP with TSO/USO offloads hands out: a 64 KiB IP packet plus its
/// Ethernet header and the longest virtio_net_hdr.
pub const TAP_FRAME_LEN_MAX: usize = 65_535 + 14 + 12;

/// How to open a TAP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TapOptions {
    /// `Some(len)`: open with `IFF_VNET_HDR`, every frame carries a header of that length.
    pub vnet_hdr: Option<VnetHdrLen>,
    /// Ask for TUN_F_CSUM|TSO4|TSO6|USO4|USO6 (needs `vnet_hdr`). USO is dropped, and
    /// [`Tap::offloads`] says so, on kernels older than 6.2 that refuse it.
    pub offload: bool,
    /// Open with `IFF_MULTI_QUEUE`: each open of the same name attaches one more queue
    /// (one fd each; the kernel spreads the device's transmit flows over them by flow
    /// hash and keeps a flow on the queue that last wrote it). See [`Tap::open_queues`].
    pub multi_queue: bool,
}

/// Offloads the kernel accepted with `TUNSETOFFLOAD`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TapOffloads {
    /// Partial checksums (`TUN_F_CSUM`).
    pub csum: bool,
    /// TCP segmentation for v4 and v6.
    pub tso: bool,
    /// UDP segmentation for v4 and v6.
    pub uso: bool,
}

/// An open TAP device. Dropping it closes the fd, which deletes the (non-persistent) device.
#[derive(Debug)]
pub struct Tap {
    fd: OwnedFd,
    name: String,
    vnet_hdr: Option<VnetHdrLen>,
    offloads: TapOffloads,
}

#[repr(C)]
struct IfReqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

impl Tap {
    /// Creates (or attaches to) the TAP `name` in the calling thread's network namespace.
    /// An empty `name` lets the kernel pick `tapN`; [`Tap::name`] tells which.
    pub fn open(name: &str, opts: &TapOptions) -> Result<Self, Error> {
        if name.len() > IFNAME_LEN_MAX || name.bytes().any(|b| b == 0 || b == b'/') {
            return Err(Error::BadTapName(name.to_owned()));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open("/dev/net/tun")
            .map_err(|e| Error::sys("open /dev/net/tun", name, e))?;
        let fd: OwnedFd = file.into();

        let mut req = IfReqFlags {
            name: [0; libc::IFNAMSIZ],
            flags: IFF_TAP | IFF_NO_PI,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        if opts.vnet_hdr.is_some() {
            req.flags |= IFF_VNET_HDR;
        }
        if opts.multi_queue {
            req.flags |= IFF_MULTI_QUEUE;
        }
        // SAFETY: TUNSETIFF reads and writes an ifreq; IfReqFlags has ifreq's layout
        // (16-byte name, then the flags of the union, padded to 40 bytes) and outlives the call.
        cvt(unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &raw mut req) })
            .map_err(|e| Error::sys("TUNSETIFF", name, e))?;
        let actual = CStr::from_bytes_until_nul(&req.name)
            .ok()
            .and_then(|c| c.to_str().ok())
            .unwrap_or(name)
            .to_owned();

        if let Some(len) = opts.vnet_hdr {
            let size = len.bytes() as libc::c_int;
            // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, a live local.
            cvt(unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETVNETHDRSZ, &raw const size) })
                .map_err(|e| Error::sys("TUNSETVNETHDRSZ", &actual, e))?;
        }

        let mut tap = Self {
            fd,
            name: actual,
            vnet_hdr: opts.vnet_hdr,
            offloads: TapOffloads::default(),
        };
        if opts.offload {
            if opts.vnet_hdr.is_none() {
                return Err(Error::OffloadWithoutVnetHdr(tap.name));
            }
            tap.set_offloads()?;
        }
        Ok(tap)
    }

    /// Creates the TAP `name` with `queues` queues (`IFF_MULTI_QUEUE`, one [`Tap`] per
    /// queue, each to be pumped by its own thread); with `queues` 1 a plain single-queue
    /// TAP as [`Tap::open`] makes. The device goes away when the last queue is closed.
    pub fn open_queues(name: &str, opts: &TapOptions, queues: usize) -> Result<Vec<Self>, Error> {
        let opts = TapOptions {
            multi_queue: queues > 1,
            ..*opts
        };
        let first = Self::open(name, &opts)?;
        let actual = first.name.clone();
        let mut taps = vec![first];
        for _ in 1..queues {
            taps.push(Self::open(&actual, &opts)?);
        }
        Ok(taps)
    }

    fn set_offloads(&mut self) -> Result<(), Error> {
        let full = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_USO4 | TUN_F_USO6;
        let no_uso = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
        for (flags, uso) in [(full, true), (no_uso, false)] {
            // SAFETY: TUNSETOFFLOAD takes the flags as the ioctl's integer argument.
            let ret = unsafe { libc::ioctl(self.fd.as_raw_fd(), TUNSETOFFLOAD, flags) };
            match cvt(ret) {
                Ok(_) => {
                    self.offloads = TapOffloads {
                        csum: true,
                        tso: true,
                        uso,
                    };
                    return Ok(());
                }
                Err(e) if uso && e.raw_os_error() == Some(libc::EINVAL) => continue,
                Err(e) => return Err(Error::sys("TUNSETOFFLOAD", &self.name, e)),
            }
        }
        unreachable!("the loop returns on its last iteration")
    }

    /// The interface name the kernel gave.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The virtio_net_hdr length in front of every frame (None without `IFF_VNET_HDR`).
    pub fn vnet_hdr(&self) -> Option<VnetHdrLen> {
        self.vnet_hdr
    }

    /// Offloads the kernel accepted.
    pub fn offloads(&self) -> TapOffloads {
        self.offloads
    }

    /// Sets or clears `O_NONBLOCK` (the TAP opens non-blocking).
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        set_nonblocking(self.fd.as_raw_fd(), on)
    }

    /// Reads one frame (with its virtio_net_hdr when on) into `buf`; returns its length.
    /// `WouldBlock` when there is none. `buf` should be [`TAP_FRAME_LEN_MAX`] long when
    /// offloads are on, else MTU + 14 + header; a longer frame is truncated by the kernel.
    pub fn read_frame(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: reads at most buf.len() bytes into buf, which we borrow mutably.
        cvt_size(unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) })
    }

    /// Writes one frame (with its virtio_net_hdr when on). A TAP takes whole frames or none.
    pub fn write_frame(&self, frame: &[u8]) -> io::Result<usize> {
        // SAFETY: writes frame.len() bytes from frame, which we borrow.
        cvt_size(unsafe { libc::write(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len()) })
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for Tap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// True when an interface named `name` exists in the calling thread's network namespace.
pub fn interface_exists(name: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: if_nametoindex reads the NUL-terminated name, which outlives the call.
    unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
}

/// One frame read from a TAP, split into its virtio_net_hdr (when the TAP has one) and the
/// Ethernet frame.
#[derive(Debug, Clone, Copy)]
pub struct TapFrame<'a> {
    /// The header, when the TAP was opened with `IFF_VNET_HDR`.
    pub vnet: Option<VirtioNetHdr>,
    /// The Ethernet frame (a GSO super-frame when `vnet` says so).
    pub eth: &'a [u8],
}

impl<'a> TapFrame<'a> {
    /// Splits a buffer as read from a TAP with header length `vnet_hdr`.
    pub fn split(raw: &'a [u8], vnet_hdr: Option<VnetHdrLen>) -> Result<Self, VnetHdrError> {
        match vnet_hdr {
            None => Ok(Self {
                vnet: None,
                eth: raw,
            }),
            Some(len) => {
                let vnet = VirtioNetHdr::parse(raw, len)?;
                Ok(Self {
                    vnet: Some(vnet),
                    eth: &raw[len.bytes()..],
                })
            }
        }
    }
}
