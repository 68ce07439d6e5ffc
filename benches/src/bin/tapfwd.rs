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
use std::sync::{Arc, mpsc};
use std::thread;

use weft_uring_dp::{
    TAP_FRAME_LEN_MAX, Tap, TapOptions, Transmit, UdpOptions, UdpSock, VnetHdrLen,
};

/// Bytes per UDP piece (fits a 1500-byte underlay).
const PIECE: u16 = 1400;

/// Forwards until a direction fails; returns why.
fn run(args: &[String]) -> Result<std::convert::Infallible, String> {
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
            multi_queue: false,
        },
    )
    .map_err(|e| format!("tap {tap}: {e}"))?;
    let sock = UdpSock::bind(local, &UdpOptions::default()).map_err(|e| format!("{e}"))?;
    tap.set_nonblocking(false)
        .map_err(|e| format!("tap: {e}"))?;
    sock.set_nonblocking(false)
        .map_err(|e| format!("udp: {e}"))?;
    println!("tapfwd: {} <-> {peer}", tap.name());
    // Each direction on its own thread; the first to fail ends the process (the other
    // may be blocked in a read that never returns).
    let (tap, sock) = (Arc::new(tap), Arc::new(sock));
    let (done, failed) = mpsc::channel::<String>();
    let (t, u, d) = (Arc::clone(&tap), Arc::clone(&sock), done.clone());
    thread::spawn(move || {
        let mut buf = vec![0u8; TAP_FRAME_LEN_MAX];
        let err = loop {
            let n = match t.read_frame(&mut buf) {
                Ok(n) => n,
                Err(e) => break e,
            };
            let segment_size = (n > usize::from(PIECE)).then_some(PIECE);
            let _ = u.send(&Transmit {
                to: peer,
                data: &buf[..n],
                segment_size,
            });
        };
        let _ = d.send(format!("tap read: {err}"));
    });
    thread::spawn(move || {
        let mut buf = vec![0u8; TAP_FRAME_LEN_MAX + 1024];
        let err = loop {
            match sock.recv(&mut buf) {
                Ok(meta) if !meta.truncated => {
                    let _ = tap.write_frame(&buf[..meta.len]);
                }
                Ok(_) => {}
                Err(e) => break e,
            }
        };
        let _ = done.send(format!("udp receive: {err}"));
    });
    Err(failed
        .recv()
        .unwrap_or_else(|_| "both threads ended".into()))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(never) => match never {},
        Err(e) => {
            eprintln!("tapfwd: {e}");
            ExitCode::FAILURE
        }
    }
}
