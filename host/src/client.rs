//! The CLI's side of the control socket: one blocking request, one reply.

use crate::error::{Error, Result};
use crate::http::{self, BODY_LEN_MAX, HEAD_LEN_MAX};
use crate::messages::ErrorBody;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a request may take before the CLI gives up (attach waits for an address up
/// to --ipalloc-timeout, at most 80 s; status is instant).
pub(crate) const REQUEST_TIMEOUT_MS: u64 = 90_000;

/// A client for one router's control socket.
#[derive(Clone, Debug)]
pub(crate) struct Client {
    socket: PathBuf,
}

impl Client {
    /// A client for the socket at `socket`.
    pub(crate) fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
        }
    }

    /// The socket path.
    pub(crate) fn socket(&self) -> &Path {
        &self.socket
    }

    /// GET `path`, returning the body on 200 and the daemon's error line otherwise.
    pub(crate) fn get_raw(&self, path: &str) -> Result<Vec<u8>> {
        self.request("GET", path, None)
    }

    /// GET `path` and decode the reply as `T`.
    pub(crate) fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let body = self.get_raw(path)?;
        self.decode(path, &body)
    }

    /// POST `body` as JSON to `path` and decode the reply as `T`.
    pub(crate) fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        let body =
            serde_json::to_vec(body).map_err(|e| Error::Other(format!("encode request: {e}")))?;
        let reply = self.request("POST", path, Some(&body))?;
        self.decode(path, &reply)
    }

    /// POST `body` as JSON to `path`: `Ok(Ok(reply))` on 200, `Ok(Err((status, line)))`
    /// when the router answered with an error (for callers that map statuses, as the CNI
    /// plugin does to the spec's codes), `Err` when it could not be asked.
    pub(crate) fn post_status<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<std::result::Result<T, (u16, String)>> {
        let body =
            serde_json::to_vec(body).map_err(|e| Error::Other(format!("encode request: {e}")))?;
        let (status, reply) = self.exchange("POST", path, Some(&body))?;
        if status == 200 {
            return self.decode(path, &reply).map(Ok);
        }
        Ok(Err((status, error_line(status, &reply))))
    }

    fn decode<T: DeserializeOwned>(&self, path: &str, body: &[u8]) -> Result<T> {
        serde_json::from_slice(body).map_err(|e| {
            self.protocol(format!(
                "the reply to {path} is not what this weft expects: {e}"
            ))
        })
    }

    fn protocol(&self, detail: String) -> Error {
        Error::Protocol {
            path: self.socket.clone(),
            detail,
        }
    }

    fn request(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Vec<u8>> {
        let (status, body) = self.exchange(method, path, body)?;
        if status == 200 {
            return Ok(body);
        }
        Err(Error::Api(error_line(status, &body)))
    }

    /// One request and its reply's status and body.
    fn exchange(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<(u16, Vec<u8>)> {
        let mut stream = UnixStream::connect(&self.socket).map_err(|e| match e.kind() {
            ErrorKind::NotFound => Error::NotRunning(self.socket.clone()),
            ErrorKind::ConnectionRefused => Error::Refused(self.socket.clone()),
            ErrorKind::PermissionDenied => Error::SocketDenied(self.socket.clone()),
            _ => Error::io("connect to", &self.socket)(e),
        })?;
        let timeout = Some(Duration::from_millis(REQUEST_TIMEOUT_MS));
        stream
            .set_read_timeout(timeout)
            .map_err(Error::io("set timeout on", &self.socket))?;
        stream
            .set_write_timeout(timeout)
            .map_err(Error::io("set timeout on", &self.socket))?;
        match stream.write_all(&http::write_request(method, path, body)) {
            Ok(()) => {}
            // The router may answer (a refusal) and hang up before reading it all: read why.
            Err(e) if e.kind() == ErrorKind::BrokenPipe => {}
            Err(e) => return Err(Error::io("write to", &self.socket)(e)),
        }
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        let response = loop {
            let n = match stream.read(&mut chunk) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                    return Err(
                        self.protocol(format!("no reply within {} s", REQUEST_TIMEOUT_MS / 1000))
                    );
                }
                Err(e) => return Err(Error::io("read from", &self.socket)(e)),
            };
            buf.extend_from_slice(&chunk[..n]);
            if buf.len() > HEAD_LEN_MAX + BODY_LEN_MAX {
                return Err(self.protocol("reply too large".into()));
            }
            match http::parse_response(&buf, n == 0) {
                Ok(Some(r)) => break r,
                Ok(None) => {}
                Err(e) => return Err(self.protocol(e.to_string())),
            }
        };
        Ok((response.status, response.body))
    }
}

/// The router's one-line error in an error reply's `body`.
fn error_line(status: u16, body: &[u8]) -> String {
    serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .map(|b| b.error)
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| format!("HTTP {status} from the router"))
}
