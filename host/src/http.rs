//! A small, strict HTTP/1.1 codec for the control socket and the Docker plugin socket:
//! one request per connection, `Content-Length` bodies only, bounded head and body.
//!
//! What it does: parse a request or a response from the bytes read so far (telling
//! "need more" apart from "malformed"), read one from a unix stream, and write one.
//! What it does not do: keep-alive, chunked transfer, pipelining, absolute-form targets,
//! header folding. Anything outside that subset is an error, never a panic, so that the
//! server can answer 400 and move on.

use std::fmt;

/// Longest request/status line plus headers, in bytes (including the blank line).
pub(crate) const HEAD_LEN_MAX: usize = 8 * 1024;
/// Largest body accepted, in bytes. Control requests are tiny; status replies can be
/// larger on big networks, hence the generous bound.
pub(crate) const BODY_LEN_MAX: usize = 4 * 1024 * 1024;
/// Most header lines in one message.
pub(crate) const HEADERS_LEN_MAX: usize = 64;

/// Why a message could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HttpError {
    /// The connection closed before the message was complete.
    Truncated,
    /// The head is longer than [`HEAD_LEN_MAX`] or has too many headers.
    HeadTooLarge,
    /// The body is longer than [`BODY_LEN_MAX`].
    BodyTooLarge,
    /// The request or status line is not `METHOD /path HTTP/1.x` / `HTTP/1.x CODE reason`.
    BadStartLine,
    /// A header line is not `name: value` with a token name and visible ASCII value.
    BadHeader,
    /// `Content-Length` is not a decimal number, or appears twice with different values.
    BadContentLength,
    /// `Transfer-Encoding` was used; only `Content-Length` bodies are supported.
    TransferEncoding,
    /// Bytes followed the body (a second request on the same connection).
    TrailingBytes,
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Truncated => "message truncated: connection closed early",
            Self::HeadTooLarge => "request head too large",
            Self::BodyTooLarge => "body too large",
            Self::BadStartLine => "malformed request line",
            Self::BadHeader => "malformed header line",
            Self::BadContentLength => "malformed Content-Length",
            Self::TransferEncoding => {
                "Transfer-Encoding is not supported; send a Content-Length body"
            }
            Self::TrailingBytes => "one request per connection",
        })
    }
}

impl std::error::Error for HttpError {}

impl HttpError {
    /// The status a server answers with.
    pub(crate) fn status(self) -> u16 {
        match self {
            Self::HeadTooLarge => 431,
            Self::BodyTooLarge => 413,
            Self::TransferEncoding => 501,
            _ => 400,
        }
    }
}

/// A parsed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Request {
    /// `GET`, `POST`, ...
    pub(crate) method: String,
    /// The path without the query string, e.g. `/status/peers`.
    pub(crate) path: String,
    /// The body (empty without `Content-Length`).
    pub(crate) body: Vec<u8>,
}

/// A parsed response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Response {
    /// The status code.
    pub(crate) status: u16,
    /// The `Content-Type`, if given.
    pub(crate) content_type: Option<String>,
    /// The body.
    pub(crate) body: Vec<u8>,
}

enum Start {
    Request { method: String, path: String },
    Response { status: u16 },
}

struct Head {
    start: Start,
    content_length: usize,
    content_type: Option<String>,
    /// Bytes of the head including the blank line.
    len: usize,
}

/// Parses a request from `buf`; `Ok(None)` means "valid so far, read more".
/// `eof` says the peer has closed its side: an incomplete message is then `Truncated`.
pub(crate) fn parse_request(buf: &[u8], eof: bool) -> Result<Option<Request>, HttpError> {
    let Some((head, body)) = parse_message(buf, eof, true)? else {
        return Ok(None);
    };
    match head.start {
        Start::Request { method, path } => Ok(Some(Request { method, path, body })),
        Start::Response { .. } => Err(HttpError::BadStartLine),
    }
}

/// Parses a response from `buf`; `Ok(None)` means "valid so far, read more".
pub(crate) fn parse_response(buf: &[u8], eof: bool) -> Result<Option<Response>, HttpError> {
    let Some((head, body)) = parse_message(buf, eof, false)? else {
        return Ok(None);
    };
    match head.start {
        Start::Response { status } => Ok(Some(Response {
            status,
            content_type: head.content_type,
            body,
        })),
        Start::Request { .. } => Err(HttpError::BadStartLine),
    }
}

fn parse_message(
    buf: &[u8],
    eof: bool,
    request: bool,
) -> Result<Option<(Head, Vec<u8>)>, HttpError> {
    let Some(head) = parse_head(buf, request)? else {
        return if eof {
            Err(HttpError::Truncated)
        } else {
            Ok(None)
        };
    };
    let have = buf.len() - head.len;
    if have < head.content_length {
        return if eof {
            Err(HttpError::Truncated)
        } else {
            Ok(None)
        };
    }
    if have > head.content_length {
        return Err(HttpError::TrailingBytes);
    }
    let body = buf[head.len..].to_vec();
    Ok(Some((head, body)))
}

fn parse_head(buf: &[u8], request: bool) -> Result<Option<Head>, HttpError> {
    let window = &buf[..buf.len().min(HEAD_LEN_MAX)];
    let Some(end) = find(window, b"\r\n\r\n") else {
        return if buf.len() >= HEAD_LEN_MAX {
            Err(HttpError::HeadTooLarge)
        } else {
            Ok(None)
        };
    };
    let head_len = end + 4;
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| HttpError::BadHeader)?;
    let mut lines = text.split("\r\n");
    let start_line = lines.next().ok_or(HttpError::BadStartLine)?;
    let start = if request {
        parse_request_line(start_line)?
    } else {
        parse_status_line(start_line)?
    };
    let mut content_length: Option<usize> = None;
    let mut content_type = None;
    for (i, line) in lines.enumerate() {
        if i >= HEADERS_LEN_MAX {
            return Err(HttpError::HeadTooLarge);
        }
        let (name, value) = line.split_once(':').ok_or(HttpError::BadHeader)?;
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(HttpError::BadHeader);
        }
        let value = value.trim_matches(|c| c == ' ' || c == '\t');
        if !value
            .bytes()
            .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
        {
            return Err(HttpError::BadHeader);
        }
        if name.eq_ignore_ascii_case("content-length") {
            if value.is_empty() || value.len() > 12 || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Err(HttpError::BadContentLength);
            }
            let n: usize = value.parse().map_err(|_| HttpError::BadContentLength)?;
            if content_length.is_some_and(|old| old != n) {
                return Err(HttpError::BadContentLength);
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HttpError::TransferEncoding);
        } else if name.eq_ignore_ascii_case("content-type") {
            content_type = Some(value.to_owned());
        }
    }
    let content_length = content_length.unwrap_or(0);
    if content_length > BODY_LEN_MAX {
        return Err(HttpError::BodyTooLarge);
    }
    Ok(Some(Head {
        start,
        content_length,
        content_type,
        len: head_len,
    }))
}

fn parse_request_line(line: &str) -> Result<Start, HttpError> {
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::BadStartLine);
    };
    if method.is_empty() || method.len() > 16 || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(HttpError::BadStartLine);
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(HttpError::BadStartLine);
    }
    if !target.starts_with('/') || !target.bytes().all(|b| (b'!'..=b'~').contains(&b)) {
        return Err(HttpError::BadStartLine);
    }
    let path = target.split(['?', '#']).next().unwrap_or(target);
    Ok(Start::Request {
        method: method.to_owned(),
        path: path.to_owned(),
    })
}

fn parse_status_line(line: &str) -> Result<Start, HttpError> {
    let mut parts = line.splitn(3, ' ');
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        return Err(HttpError::BadStartLine);
    };
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(HttpError::BadStartLine);
    }
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HttpError::BadStartLine);
    }
    let status = code.parse().map_err(|_| HttpError::BadStartLine)?;
    Ok(Start::Response { status })
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The reason phrase for the statuses this server uses.
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// A complete response, ready to write; the connection closes after it.
pub(crate) fn write_response(
    status: u16,
    content_type: &str,
    body: &[u8],
    allow: Option<&str>,
) -> Vec<u8> {
    // The status always in three digits (`044` too), as the parser reads it back.
    let mut out = format!(
        "HTTP/1.1 {status:03} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        reason(status),
        body.len()
    );
    if let Some(allow) = allow {
        out.push_str("Allow: ");
        out.push_str(allow);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// Reads one request from `stream`: at most [`HEAD_LEN_MAX`] of head and `body_len_max`
/// of body ([`HttpError::BodyTooLarge`] beyond). The control API and the Docker plugin
/// read with it.
pub(crate) async fn read_request(
    stream: &mut tokio::net::UnixStream,
    body_len_max: usize,
) -> Result<Request, HttpError> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 8192];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|_| HttpError::Truncated)?;
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > HEAD_LEN_MAX + body_len_max {
            return Err(HttpError::BodyTooLarge);
        }
        if let Some(req) = parse_request(&buf, n == 0)? {
            if req.body.len() > body_len_max {
                return Err(HttpError::BodyTooLarge);
            }
            return Ok(req);
        }
    }
}

/// A complete request, ready to write (`Host: weft`, JSON body if any).
pub(crate) fn write_request(method: &str, path: &str, body: Option<&[u8]>) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: weft\r\nConnection: close\r\n");
    if let Some(body) = body {
        out.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    if let Some(body) = body {
        out.extend_from_slice(body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_curl_style_get() {
        let raw =
            b"GET /status?x=1 HTTP/1.1\r\nHost: x\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n";
        let req = parse_request(raw, false).unwrap().unwrap();
        assert_eq!(req.method, "GET");
        assert_eq!(req.path, "/status");
        assert!(req.body.is_empty());
    }

    #[test]
    fn waits_for_the_whole_body_then_parses() {
        let raw = b"POST /connect HTTP/1.1\r\nContent-Length: 6\r\n\r\n{\"a\":";
        // Every strict prefix is "need more", never an error.
        for cut in 0..raw.len() {
            assert_eq!(parse_request(&raw[..cut], false), Ok(None), "cut at {cut}");
        }
        let mut full = raw.to_vec();
        full.extend_from_slice(b"1");
        let req = parse_request(&full, false).unwrap().unwrap();
        assert_eq!(req.body, b"{\"a\":1");
    }

    #[test]
    fn truncated_at_eof_is_an_error() {
        let raw = b"POST /connect HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc";
        assert_eq!(parse_request(raw, true), Err(HttpError::Truncated));
        assert_eq!(
            parse_request(b"GET /status HTTP/1.1\r\n", true),
            Err(HttpError::Truncated)
        );
        assert_eq!(parse_request(b"", true), Err(HttpError::Truncated));
    }

    #[test]
    fn garbage_is_rejected_not_panicked_on() {
        let cases: &[&[u8]] = &[
            b"\r\n\r\n",
            b"GET\r\n\r\n",
            b"get /status HTTP/1.1\r\n\r\n",
            b"GET status HTTP/1.1\r\n\r\n",
            b"GET http://x/status HTTP/1.1\r\n\r\n",
            b"GET /status HTTP/2\r\n\r\n",
            b"GET /status HTTP/1.1 extra\r\n\r\n",
            b"GET  /status HTTP/1.1\r\n\r\n",
            b"GET /status HTTP/1.1\r\nno colon\r\n\r\n",
            b"GET /status HTTP/1.1\r\n folded: x\r\n\r\n",
            b"GET /status HTTP/1.1\r\nBad Name: x\r\n\r\n",
            b"GET /status HTTP/1.1\r\nX: \x01\r\n\r\n",
            b"GET /st\xffatus HTTP/1.1\r\n\r\n",
            b"\x00\x01\x02\x03\r\n\r\n",
        ];
        for raw in cases {
            let got = parse_request(raw, false);
            assert!(
                got.is_err(),
                "{:?} -> {got:?}",
                String::from_utf8_lossy(raw)
            );
            assert_eq!(got.unwrap_err().status(), 400);
        }
    }

    #[test]
    fn content_length_is_strict() {
        for bad in ["-1", "1x", "", "+5", "99999999999999999999"] {
            let raw = format!("POST /a HTTP/1.1\r\nContent-Length: {bad}\r\n\r\n");
            assert_eq!(
                parse_request(raw.as_bytes(), false),
                Err(HttpError::BadContentLength),
                "{bad}"
            );
        }
        let dup = b"POST /a HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab";
        assert_eq!(parse_request(dup, false), Err(HttpError::BadContentLength));
        let chunked = b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(
            parse_request(chunked, false),
            Err(HttpError::TransferEncoding)
        );
        let extra = b"POST /a HTTP/1.1\r\nContent-Length: 1\r\n\r\nab";
        assert_eq!(parse_request(extra, false), Err(HttpError::TrailingBytes));
    }

    #[test]
    fn oversize_head_and_body_are_refused() {
        let mut raw = b"GET /status HTTP/1.1\r\nX: ".to_vec();
        raw.resize(HEAD_LEN_MAX + 10, b'a');
        assert_eq!(parse_request(&raw, false), Err(HttpError::HeadTooLarge));
        let big = format!(
            "POST /a HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            BODY_LEN_MAX + 1
        );
        assert_eq!(
            parse_request(big.as_bytes(), false),
            Err(HttpError::BodyTooLarge)
        );
        let mut many = b"GET /a HTTP/1.1\r\n".to_vec();
        for i in 0..=HEADERS_LEN_MAX {
            many.extend_from_slice(format!("X{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse_request(&many, false), Err(HttpError::HeadTooLarge));
    }

    #[test]
    fn response_round_trips() {
        let raw = write_response(404, "application/json", b"{\"error\":\"x\"}\n", None);
        let resp = parse_response(&raw, true).unwrap().unwrap();
        assert_eq!(resp.status, 404);
        assert_eq!(resp.content_type.as_deref(), Some("application/json"));
        assert_eq!(resp.body, b"{\"error\":\"x\"}\n");
        let req = write_request("POST", "/connect", Some(b"{}"));
        let parsed = parse_request(&req, true).unwrap().unwrap();
        assert_eq!(
            (parsed.method.as_str(), parsed.path.as_str()),
            ("POST", "/connect")
        );
        assert_eq!(parsed.body, b"{}");
        assert!(parse_response(b"HTTP/1.1 2000 OK\r\n\r\n", true).is_err());
        assert!(parse_response(b"garbage\r\n\r\n", true).is_err());
    }
}
