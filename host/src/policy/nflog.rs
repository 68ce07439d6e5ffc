//! Blocked packets, logged: the policy table's drop rules hand a rate-limited sample of
//! what they drop to nfnetlink_log group [`GROUP`] (`log group`), and a thread here reads
//! it and logs one line per packet with source, destination, protocol and port, the pod
//! it hit and the policies isolating it (the enforcer says which, from the chain name the
//! rule gives as prefix).
//!
//! The protocol: an `NFULNL_MSG_CONFIG` binds the group and asks for the first
//! [`COPY_RANGE_BYTES`] of each packet; then `NFULNL_MSG_PACKET` messages arrive, each
//! with the prefix and the packet's IPv4 header and transport ports as attributes.
//! Where the group cannot be bound (another process has it, no nfnetlink_log), blocked
//! packets are still counted; the log says once why they are not logged.

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};
use std::net::Ipv4Addr;
use std::sync::Arc;

/// The nfnetlink_log group of the policy table's drop rules (one per network namespace).
pub(crate) const GROUP: u16 = 0x7765;
/// Bytes of each dropped packet copied to us: IPv4 header and ports.
pub(crate) const COPY_RANGE_BYTES: u32 = 64;
/// Packets the table hands over per second (per pod chain), at most.
pub(crate) const LOG_RATE_PER_S: u32 = 5;

const NFNL_SUBSYS_ULOG: u16 = 4;
const NFULNL_MSG_PACKET: u16 = 0;
const NFULNL_MSG_CONFIG: u16 = 1;
const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
const NFULNL_CFG_CMD_BIND: u8 = 1;
const NFULNL_COPY_PACKET: u8 = 2;
const NFULA_PAYLOAD: u16 = 9;
const NFULA_PREFIX: u16 = 10;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_ERROR: u16 = 2;

/// One dropped packet as the kernel handed it over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Dropped {
    /// The rule's prefix: the pod chain's name.
    pub(crate) prefix: String,
    /// Source address.
    pub(crate) src: Ipv4Addr,
    /// Destination address.
    pub(crate) dst: Ipv4Addr,
    /// IP protocol number.
    pub(crate) proto: u8,
    /// Destination port (TCP, UDP, SCTP), else 0.
    pub(crate) port: u16,
}

fn attr(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = 4 + value.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

fn config_message(seq: u32, group: u16, attrs: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    let len = 16 + 4 + attrs.len();
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG).to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    // nfgenmsg: family AF_UNSPEC, version 0, res_id = group (big endian).
    m.extend_from_slice(&[0, 0]);
    m.extend_from_slice(&group.to_be_bytes());
    m.extend_from_slice(attrs);
    m
}

/// The messages that bind `group` and ask for packet copies.
fn bind_messages(group: u16) -> [Vec<u8>; 2] {
    let mut cmd = Vec::new();
    attr(&mut cmd, NFULA_CFG_CMD, &[NFULNL_CFG_CMD_BIND]);
    let mut mode = Vec::new();
    let mut v = COPY_RANGE_BYTES.to_be_bytes().to_vec();
    v.extend_from_slice(&[NFULNL_COPY_PACKET, 0]);
    attr(&mut mode, NFULA_CFG_MODE, &v);
    [
        config_message(1, group, &cmd),
        config_message(2, group, &mode),
    ]
}

/// Every attribute of one nfnetlink message body (after the nfgenmsg).
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let kind = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            return None;
        }
        let value = &b[4..len];
        let step = (len + 3) & !3;
        b = &b[step.min(b.len())..];
        Some((kind, value))
    })
}

/// The dropped packets in one datagram from the socket (several messages may share one);
/// anything malformed is skipped.
pub(crate) fn parse(mut d: &[u8]) -> Vec<Dropped> {
    let mut out = Vec::new();
    while d.len() >= 16 {
        let len = u32::from_ne_bytes([d[0], d[1], d[2], d[3]]) as usize;
        let kind = u16::from_ne_bytes([d[4], d[5]]);
        if len < 16 || len > d.len() {
            break;
        }
        let msg = &d[16..len];
        d = &d[((len + 3) & !3).min(d.len())..];
        if kind != (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET || msg.len() < 4 {
            continue;
        }
        let (mut prefix, mut payload) = (None, None);
        for (k, v) in attrs(&msg[4..]) {
            match k {
                NFULA_PREFIX => {
                    let s = v.split(|c| *c == 0).next().unwrap_or_default();
                    prefix = std::str::from_utf8(s).ok().map(str::to_owned);
                }
                NFULA_PAYLOAD => payload = Some(v),
                _ => {}
            }
        }
        let (Some(prefix), Some(p)) = (prefix, payload) else {
            continue;
        };
        if p.len() < 20 || p[0] >> 4 != 4 {
            continue;
        }
        let ihl = usize::from(p[0] & 0x0f) * 4;
        let proto = p[9];
        let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
        let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
        let port = match proto {
            6 | 17 | 132 if p.len() >= ihl + 4 => u16::from_be_bytes([p[ihl + 2], p[ihl + 3]]),
            _ => 0,
        };
        out.push(Dropped {
            prefix,
            src,
            dst,
            proto,
            port,
        });
    }
    out
}

/// Binds the group; `Err` says why not.
fn open() -> Result<Socket, String> {
    let mut s = Socket::new(NETLINK_NETFILTER).map_err(|e| format!("netlink socket: {e}"))?;
    s.bind(&SocketAddr::new(0, 0))
        .map_err(|e| format!("bind: {e}"))?;
    let mut buf = Vec::with_capacity(4096);
    for m in bind_messages(GROUP) {
        s.send(&m, 0).map_err(|e| format!("send: {e}"))?;
        buf.clear();
        s.recv(&mut buf, 0).map_err(|e| format!("recv: {e}"))?;
        // The ack: NLMSG_ERROR with error 0.
        if buf.len() >= 20 && u16::from_ne_bytes([buf[4], buf[5]]) == NLMSG_ERROR {
            let err = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
            if err != 0 {
                return Err(format!(
                    "group {GROUP}: {}",
                    std::io::Error::from_raw_os_error(-err)
                ));
            }
        }
    }
    let _ = s.set_rx_buf_sz(1 << 20);
    Ok(s)
}

/// Reads dropped packets until the process ends, handing each to `log`. Runs on a thread
/// of its own (the socket blocks).
pub(crate) fn run(log: Arc<dyn Fn(Dropped) + Send + Sync>) {
    let s = match open() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(
                "policy: blocked packets are counted but not logged (nfnetlink_log {e})"
            );
            return;
        }
    };
    let mut buf = Vec::with_capacity(64 * 1024);
    loop {
        buf.clear();
        match s.recv(&mut buf, 0) {
            Ok(_) => parse(&buf).into_iter().for_each(|d| log(d)),
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                tracing::debug!("policy: nfnetlink_log overran; some blocked packets not logged")
            }
            Err(e) => {
                tracing::warn!("policy: nfnetlink_log: {e}; blocked packets no longer logged");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet_message(prefix: &str, payload: &[u8]) -> Vec<u8> {
        let mut attrs_ = Vec::new();
        let mut p = prefix.as_bytes().to_vec();
        p.push(0);
        attr(&mut attrs_, NFULA_PREFIX, &p);
        attr(&mut attrs_, NFULA_PAYLOAD, payload);
        let mut m = config_message(0, GROUP, &attrs_);
        m[4..6].copy_from_slice(&((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET).to_ne_bytes());
        m
    }

    #[test]
    fn dropped_packets_are_read_from_nflog_messages() {
        let mut ip = vec![
            0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0, 10, 32, 2, 1, 10, 32, 1, 1,
        ];
        ip.extend_from_slice(&[0x9c, 0x40, 0, 80, 0, 0, 0, 0]);
        let mut d = packet_message("c3_in", &ip);
        let mut udp = ip.clone();
        udp[9] = 17;
        d.extend(packet_message("c4_out", &udp));
        let got = parse(&d);
        assert_eq!(
            got[0],
            Dropped {
                prefix: "c3_in".into(),
                src: "10.32.2.1".parse().unwrap(),
                dst: "10.32.1.1".parse().unwrap(),
                proto: 6,
                port: 80
            }
        );
        assert_eq!(got[1].prefix, "c4_out");
        assert_eq!(got[1].proto, 17);
        // Garbage, truncations and other messages are skipped, never a panic.
        for cut in 0..d.len() {
            let _ = parse(&d[..cut]);
        }
        assert!(parse(&[0xff; 64]).is_empty());
        let mut icmp = ip.clone();
        icmp[9] = 1;
        assert_eq!(parse(&packet_message("c0_in", &icmp))[0].port, 0);
    }
}
