//! Upstream servers: where they come from (`--dns-upstream`, else the host's
//! `/etc/resolv.conf`) and forwarding one query to them over UDP or TCP.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// How long one upstream gets to answer before the next one is asked.
pub(crate) const UPSTREAM_TIMEOUT_MS: u64 = 2_000;
/// Most upstream servers used (resolv.conf's own limit is 3).
pub(crate) const UPSTREAMS_MAX: usize = 8;
/// Largest DNS message (TCP length prefix).
pub(crate) const MESSAGE_LEN_MAX: usize = 65_535;

/// Nameservers of a resolv.conf text, port 53, in order (at most [`UPSTREAMS_MAX`]).
pub(crate) fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next()? == "nameserver").then_some(())?;
            // Scoped IPv6 (`fe80::1%eth0`) is not usable from here: skipped.
            let ip: IpAddr = w.next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .take(UPSTREAMS_MAX)
        .collect()
}

/// `IP` or `IP:PORT` / `[IPv6]:PORT` (port 53 by default).
pub(crate) fn parse_upstream(s: &str) -> Result<SocketAddr, String> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    s.parse::<SocketAddr>()
        .map_err(|_| format!("bad DNS upstream {s:?}: expected IP or IP:PORT, e.g. 192.0.2.53:53"))
}

fn ok_reply(query: &[u8], reply: &[u8]) -> bool {
    reply.len() >= 12 && reply[..2] == query[..2] && reply[2] & 0x80 != 0
}

/// Sends `query` to each upstream in turn over UDP; the first matching answer wins.
pub(crate) async fn forward_udp(query: &[u8], upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    for up in upstreams {
        let bind: SocketAddr = if up.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let Ok(sock) = UdpSocket::bind(bind).await else {
            continue;
        };
        if sock.connect(up).await.is_err() || sock.send(query).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; MESSAGE_LEN_MAX];
        let deadline = tokio::time::Instant::now() + Duration::from_millis(UPSTREAM_TIMEOUT_MS);
        // A stray datagram with another id does not end the wait.
        while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
            if ok_reply(query, &buf[..n]) {
                buf.truncate(n);
                return Some(buf);
            }
        }
        tracing::debug!("DNS upstream {up} did not answer in time");
    }
    None
}

/// Sends `query` to each upstream in turn over TCP; the first matching answer wins.
pub(crate) async fn forward_tcp(query: &[u8], upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    let len = u16::try_from(query.len()).ok()?;
    for up in upstreams {
        let attempt = async {
            let mut s = TcpStream::connect(up).await.ok()?;
            let mut msg = len.to_be_bytes().to_vec();
            msg.extend_from_slice(query);
            s.write_all(&msg).await.ok()?;
            let n = usize::from(s.read_u16().await.ok()?);
            let mut buf = vec![0u8; n];
            s.read_exact(&mut buf).await.ok()?;
            ok_reply(query, &buf).then_some(buf)
        };
        let t = Duration::from_millis(UPSTREAM_TIMEOUT_MS);
        if let Ok(Some(r)) = tokio::time::timeout(t, attempt).await {
            return Some(r);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers_in_order() {
        let text = "# comment\nsearch x\nnameserver 192.0.2.1\nnameserver  2001:db8::1 \n\
                    nameserver fe80::1%eth0\nnameserver bogus\noptions ndots:2\n";
        assert_eq!(
            parse_resolv_conf(text),
            vec![
                "192.0.2.1:53".parse::<SocketAddr>().unwrap(),
                "[2001:db8::1]:53".parse().unwrap()
            ]
        );
    }

    #[test]
    fn upstream_flag_values() {
        assert_eq!(parse_upstream("192.0.2.1").unwrap().port(), 53);
        assert_eq!(parse_upstream("192.0.2.1:5353").unwrap().port(), 5353);
        assert_eq!(parse_upstream("[2001:db8::1]:54").unwrap().port(), 54);
        assert!(parse_upstream("example.com").is_err());
    }
}
