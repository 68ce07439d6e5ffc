//! HTTP/1.1 between the Docker client and the engine, relayed message by message.
//!
//! The proxy must see where each request starts (a client reuses its connection for
//! `create`, then `start`), so both directions are framed: a head (bounded by
//! [`HEAD_LEN_MAX`]), then a body with a `Content-Length`, in chunks, or none. Bodies are
//! copied as they come, piece by piece (`logs -f` and `events` stream for as long as
//! they like), never held whole, but for the few the proxy reads ([`Conn::read_body`]).
//! A `101 Switching Protocols` (`attach`, `exec` start, `run -it`) or a reply with no
//! length (the older hijack) turns the connection into a plain two-way pipe.

use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Most bytes of a message head (request or status line and headers).
pub(crate) const HEAD_LEN_MAX: usize = 64 * 1024;
/// Most bytes of a chunk-size line.
const CHUNK_LINE_MAX: usize = 1024;
/// Largest piece read at once.
const PIECE: usize = 64 * 1024;

/// A message head: its first line and headers, and the bytes as they came.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Head {
    /// The head as received, through the blank line.
    pub(crate) raw: Vec<u8>,
    /// The request line or status line.
    pub(crate) first: String,
    /// Name and value of each header, in order.
    pub(crate) headers: Vec<(String, String)>,
}

/// How a message's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the connection closes (a reply with neither).
    UntilClose,
}

impl Head {
    /// Parses a head (`raw` ends with the blank line); `None` if it is not HTTP/1.x.
    pub(crate) fn parse(raw: Vec<u8>) -> Option<Self> {
        let text = std::str::from_utf8(&raw).ok()?;
        let mut lines = text.split("\r\n");
        let first = lines.next()?.to_owned();
        if first.is_empty() {
            return None;
        }
        let mut headers = Vec::new();
        for line in lines.filter(|l| !l.is_empty()) {
            let (k, v) = line.split_once(':')?;
            if k.is_empty() || k.contains(' ') {
                return None;
            }
            headers.push((k.to_owned(), v.trim().to_owned()));
        }
        Some(Self {
            raw,
            first,
            headers,
        })
    }

    /// The first value of header `name` (case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether header `name` lists `token` (comma-separated, case-insensitive).
    pub(crate) fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// A request's method and target (`POST`, `/v1.41/containers/create?name=web`).
    pub(crate) fn request_line(&self) -> Option<(&str, &str)> {
        let mut p = self.first.split(' ');
        let (method, target, version) = (p.next()?, p.next()?, p.next()?);
        (version.starts_with("HTTP/1.") && p.next().is_none()).then_some((method, target))
    }

    /// A reply's status code.
    pub(crate) fn status(&self) -> Option<u16> {
        let mut p = self.first.splitn(3, ' ');
        let (version, code) = (p.next()?, p.next()?);
        if !version.starts_with("HTTP/1.") || code.len() != 3 {
            return None;
        }
        code.parse().ok()
    }

    /// How the body of this message is delimited: `request` for a request; for a reply,
    /// `head_request` says whether it answers a `HEAD`.
    pub(crate) fn framing(&self, request: bool, head_request: bool) -> Result<Framing, String> {
        if !request {
            let status = self.status().unwrap_or(0);
            if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
                return Ok(Framing::Empty);
            }
        }
        if self.has_token("Transfer-Encoding", "chunked") {
            return Ok(Framing::Chunked);
        }
        match self.header("Content-Length") {
            Some(v) => v.parse().map(Framing::Length).map_err(|_| {
                format!(
                    "bad Content-Length {:?}",
                    super::super::types::truncate(v, 20)
                )
            }),
            None if request => Ok(Framing::Empty),
            None => Ok(Framing::UntilClose),
        }
    }

    /// The head with the body's framing replaced by `Content-Length: len`.
    pub(crate) fn with_length(&self, len: usize) -> Vec<u8> {
        let mut out = String::with_capacity(self.raw.len() + 24);
        out.push_str(&self.first);
        out.push_str("\r\n");
        for (k, v) in &self.headers {
            if k.eq_ignore_ascii_case("Content-Length")
                || k.eq_ignore_ascii_case("Transfer-Encoding")
            {
                continue;
            }
            out.push_str(k);
            out.push_str(": ");
            out.push_str(v);
            out.push_str("\r\n");
        }
        out.push_str(&format!("Content-Length: {len}\r\n\r\n"));
        out.into_bytes()
    }
}

/// One side of a relayed connection: the stream and what was read from it ahead.
pub(crate) struct Conn<S> {
    pub(crate) stream: S,
    /// Bytes read but not yet used.
    pub(crate) buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    pub(crate) fn new(stream: S) -> Self {
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    /// Reads more; false at the end of the stream.
    async fn fill(&mut self) -> io::Result<bool> {
        let mut piece = vec![0u8; PIECE];
        let n = self.stream.read(&mut piece).await?;
        self.buf.extend_from_slice(&piece[..n]);
        Ok(n > 0)
    }

    /// The next head; `None` when the stream ends before a byte of it.
    pub(crate) async fn read_head(&mut self) -> io::Result<Option<Head>> {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let raw: Vec<u8> = self.buf.drain(..end + 4).collect();
                return Head::parse(raw)
                    .map(Some)
                    .ok_or_else(|| bad("a message head that is not HTTP/1.x"));
            }
            if self.buf.len() > HEAD_LEN_MAX {
                return Err(bad(&format!("a message head over {HEAD_LEN_MAX} bytes")));
            }
            if !self.fill().await? {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(bad("the connection closed inside a message head"))
                };
            }
        }
    }

    /// A line ending in CRLF (with it), for chunk sizes and trailers.
    async fn read_line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                return Ok(self.buf.drain(..end + 2).collect());
            }
            if self.buf.len() > CHUNK_LINE_MAX || !self.fill().await? {
                return Err(bad("a chunked body cut off or with an overlong size line"));
            }
        }
    }

    /// Copies exactly `n` bytes to `out`, as they come.
    async fn copy_n<W: AsyncWrite + Unpin>(&mut self, mut n: u64, out: &mut W) -> io::Result<()> {
        while n > 0 {
            if self.buf.is_empty() && !self.fill().await? {
                return Err(bad("the connection closed inside a body"));
            }
            let take = self.buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
            out.write_all(&self.buf[..take]).await?;
            self.buf.drain(..take);
            n -= take as u64;
        }
        out.flush().await
    }

    /// Copies a body framed by `framing` to `out` as it is (chunks stay chunks, each
    /// sent on as soon as it is here). Not for [`Framing::UntilClose`].
    pub(crate) async fn relay_body<W: AsyncWrite + Unpin>(
        &mut self,
        framing: Framing,
        out: &mut W,
    ) -> io::Result<()> {
        match framing {
            Framing::Empty => Ok(()),
            Framing::Length(n) => self.copy_n(n, out).await,
            Framing::Chunked => loop {
                let line = self.read_line().await?;
                let size = chunk_size(&line)?;
                out.write_all(&line).await?;
                if size == 0 {
                    // Trailers, up to the blank line.
                    loop {
                        let t = self.read_line().await?;
                        out.write_all(&t).await?;
                        if t == b"\r\n" {
                            return out.flush().await;
                        }
                    }
                }
                self.copy_n(size + 2, out).await?;
            },
            Framing::UntilClose => Err(bad("a body until close cannot be relayed as a message")),
        }
    }

    /// Reads a whole body framed by `framing`, decoded; `Ok(None)` as soon as it would
    /// pass `max` bytes (what was read stays read: the caller closes the connection).
    pub(crate) async fn read_body(
        &mut self,
        framing: Framing,
        max: usize,
    ) -> io::Result<Option<Vec<u8>>> {
        let mut body = Vec::new();
        match framing {
            Framing::Empty => {}
            Framing::Length(n) => {
                if n > max as u64 {
                    return Ok(None);
                }
                self.copy_n(n, &mut body).await?;
            }
            Framing::Chunked => loop {
                let line = self.read_line().await?;
                let size = chunk_size(&line)?;
                if size == 0 {
                    while self.read_line().await? != b"\r\n" {}
                    break;
                }
                if body.len() as u64 + size > max as u64 {
                    return Ok(None);
                }
                self.copy_n(size, &mut body).await?;
                if self.read_line().await? != b"\r\n" {
                    return Err(bad("a chunk not followed by CRLF"));
                }
            },
            Framing::UntilClose => loop {
                if body.len() + self.buf.len() > max {
                    return Ok(None);
                }
                body.append(&mut self.buf);
                if !self.fill().await? {
                    break;
                }
            },
        }
        Ok(Some(body))
    }
}

/// The size in a chunk-size line (hex, extensions after `;`).
fn chunk_size(line: &[u8]) -> io::Result<u64> {
    let text = std::str::from_utf8(line).map_err(|_| bad("a chunk size that is not text"))?;
    let hex = text.trim_end().split(';').next().unwrap_or("").trim();
    u64::from_str_radix(hex, 16).map_err(|_| bad("a chunk size that is not hex"))
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// After a hijack: what each side sent ahead is delivered, then bytes flow both ways
/// until both are done.
pub(crate) async fn pipe<A, B>(a: &mut Conn<A>, b: &mut Conn<B>) -> io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    if !a.buf.is_empty() {
        b.stream.write_all(&std::mem::take(&mut a.buf)).await?;
    }
    if !b.buf.is_empty() {
        a.stream.write_all(&std::mem::take(&mut b.buf)).await?;
    }
    tokio::io::copy_bidirectional(&mut a.stream, &mut b.stream)
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_parsed_and_framed() {
        let h = Head::parse(
            b"POST /v1.41/containers/create?name=web HTTP/1.1\r\nHost: docker\r\nContent-Length: 12\r\n\r\n".to_vec(),
        )
        .unwrap();
        assert_eq!(
            h.request_line(),
            Some(("POST", "/v1.41/containers/create?name=web"))
        );
        assert_eq!(h.framing(true, false), Ok(Framing::Length(12)));
        let w = String::from_utf8(h.with_length(40)).unwrap();
        assert!(
            w.ends_with("Host: docker\r\nContent-Length: 40\r\n\r\n"),
            "{w}"
        );
        let r =
            Head::parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec()).unwrap();
        assert_eq!(r.status(), Some(200));
        assert_eq!(r.framing(false, false), Ok(Framing::Chunked));
        assert_eq!(r.framing(false, true), Ok(Framing::Empty));
        let up = Head::parse(
            b"HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n".to_vec(),
        )
        .unwrap();
        assert_eq!(up.framing(false, false), Ok(Framing::Empty));
        assert!(up.has_token("connection", "upgrade"));
        let raw = Head::parse(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\n\r\n".to_vec(),
        )
        .unwrap();
        assert_eq!(raw.framing(false, false), Ok(Framing::UntilClose));
        let get = Head::parse(b"GET /_ping HTTP/1.1\r\n\r\n".to_vec()).unwrap();
        assert_eq!(get.framing(true, false), Ok(Framing::Empty));
        for bad in [
            &b"\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
            b"\xff\r\n\r\n",
        ] {
            assert_eq!(Head::parse(bad.to_vec()), None, "{bad:?}");
        }
        let h = Head::parse(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n".to_vec()).unwrap();
        assert!(h.framing(true, false).is_err());
    }

    #[tokio::test]
    async fn chunked_bodies_are_relayed_as_they_are_and_read_decoded() {
        let body = b"5\r\nhello\r\n3;x=y\r\n abc\r\n0\r\nT: 1\r\n\r\nNEXT";
        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(body).await.unwrap();
        let mut c = Conn::new(&mut b);
        let mut out = Vec::new();
        c.relay_body(Framing::Chunked, &mut out).await.unwrap();
        assert_eq!(out, &body[..body.len() - 4]);
        assert_eq!(c.buf, b"NEXT", "the next message stays");

        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(b"5\r\nhello\r\n3\r\n ab\r\n0\r\n\r\n")
            .await
            .unwrap();
        let mut c = Conn::new(&mut b);
        let got = c.read_body(Framing::Chunked, 100).await.unwrap();
        assert_eq!(got.as_deref(), Some(&b"hello ab"[..]));
        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(b"5\r\nhello\r\n0\r\n\r\n").await.unwrap();
        let mut c = Conn::new(&mut b);
        assert_eq!(c.read_body(Framing::Chunked, 4).await.unwrap(), None);
        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(b"zz\r\n").await.unwrap();
        let mut c = Conn::new(&mut b);
        assert!(c.read_body(Framing::Chunked, 4).await.is_err());
    }
}
