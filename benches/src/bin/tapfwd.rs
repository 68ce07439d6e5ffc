//! `tapfwd TAP LOCAL PEER`: the least a TAP-plus-UDP userspace overlay can do, as a
//! ceiling for the throughput benchmark (row `tapfwd`). Not a product path.
//!
//! One thread reads TAP super-frames (virtio_net_hdr, TSO/USO) and sends each whole, as
//! one UDP GSO send cut into 1400-byte pieces. Another receives with UDP_GRO and writes what
//! arrives to the TAP as it is. There is no header, no peer check, no segment that stands
//! on its own and no integrity: it works only because a veth underlay hands a GSO send to
//! the other socket in one piece. What it keeps are the syscalls, copies and wakeups that
//! any such overlay pays, so its Gbit/s bound what the sleeve can reach on this machine.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::thread;

use weft_uring_dp::{
    TAP_FRAME_LEN_MAX, Tap, TapOptions, Transmit, UdpOptions, UdpSock, VnetHdrLen,
};

/// Bytes per UDP piece (fits a 1500-byte underlay).
const PIECE: u16 = 1400;

fn run(args: &[String]) -> Result<(), String> {
    let [tap, local, peer] = args else {
        return Err("usage: tapfwd TAP LOCAL_ADDR:PORT PEER_ADDR:PORT".into());
    };
    let local: SocketAddr = local.parse().map_err(|e| format!("{local}: {e}"))?;
    let peer: SocketAddr = peer.parse().map_err(|e| format!("{peer}: {e}"))?;
    let hdr = VnetHdrLen::MrgRxbuf;
    let tap = Tap::open(
        tap,
        &TapOptions {
            vnet_hdr: Some(hdr),
            offload: true,
        },
    )
    .map_err(|e| format!("tap {tap}: {e}"))?;
    let sock = UdpSock::bind(local, &UdpOptions::default()).map_err(|e| format!("{e}"))?;
    tap.set_nonblocking(false)
        .map_err(|e| format!("tap: {e}"))?;
    sock.set_nonblocking(false)
        .map_err(|e| format!("udp: {e}"))?;
    println!("tapfwd: {} <-> {peer}", tap.name());
    thread::scope(|s| {
        let out = s.spawn(|| -> std::io::Result<()> {
            let mut buf = vec![0u8; TAP_FRAME_LEN_MAX];
            loop {
                let n = tap.read_frame(&mut buf)?;
                let data = &buf[..n];
                let segment_size = (n > usize::from(PIECE)).then_some(PIECE);
                let _ = sock.send(&Transmit {
                    to: peer,
                    data,
                    segment_size,
                });
            }
        });
        let inn = s.spawn(|| -> std::io::Result<()> {
            let mut buf = vec![0u8; TAP_FRAME_LEN_MAX + 1024];
            loop {
                let meta = sock.recv(&mut buf)?;
                if !meta.truncated {
                    let _ = tap.write_frame(&buf[..meta.len]);
                }
            }
        });
        let r = out.join();
        let _ = inn.join();
        match r {
            Ok(Err(e)) => Err(format!("tap read: {e}")),
            _ => Ok(()),
        }
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tapfwd: {e}");
            ExitCode::FAILURE
        }
    }
}
