//! The few calls the router makes to the Docker Engine API (`--docker-socket`): at
//! start, the network named after the driver, made if Docker has none of that name (as
//! `weave launch` made `weave`), so that `docker run --network weft` works at once.
//!
//! One request per connection with `Connection: close`, a time limit on each; only the
//! status line is relied on (Docker may send chunked bodies, which `crate::http` does
//! not read), plus the body when it has a length, for Docker's error message.

use crate::http;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Time limit of one call to the engine (creating a network calls back into the plugin).
pub(crate) const CALL_TIMEOUT_MS: u64 = 30_000;
/// Most reply bytes read.
const REPLY_LEN_MAX: usize = 1024 * 1024;

/// What [`ensure_network`] found or did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ensured {
    /// A network of that name was there.
    Exists,
    /// It was made.
    Created,
}

/// One call: the status and the body (empty when Docker sent it chunked).
async fn call(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<(u16, Vec<u8>), String> {
    let run = async {
        let mut s = UnixStream::connect(socket)
            .await
            .map_err(|e| format!("Docker does not answer on {} ({e})", socket.display()))?;
        s.write_all(&http::write_request(method, path, body))
            .await
            .map_err(|e| format!("write to {}: {e}", socket.display()))?;
        let mut buf = Vec::new();
        (&mut s)
            .take(REPLY_LEN_MAX as u64)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| format!("read from {}: {e}", socket.display()))?;
        Ok::<_, String>(buf)
    };
    let buf = tokio::time::timeout(Duration::from_millis(CALL_TIMEOUT_MS), run)
        .await
        .map_err(|_| {
            format!(
                "Docker on {} did not answer within {} s",
                socket.display(),
                CALL_TIMEOUT_MS / 1000
            )
        })??;
    let status = status_of(&buf).ok_or_else(|| {
        format!(
            "{} answered {path} with something that is not HTTP",
            socket.display()
        )
    })?;
    let body = match http::parse_response(&buf, true) {
        Ok(Some(r)) => r.body,
        _ => Vec::new(),
    };
    Ok((status, body))
}

/// The status code of an HTTP/1.x reply's first line.
fn status_of(buf: &[u8]) -> Option<u16> {
    let line = buf.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end();
    let mut parts = line.splitn(3, ' ');
    let (version, code) = (parts.next()?, parts.next()?);
    if !version.starts_with("HTTP/1.") || code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

/// Docker's error message in `body` (`{"message": ...}`), or the status.
fn message(status: u16, body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("HTTP {status}"))
}

/// Makes the network `name` with driver and IPAM driver `name`, unless Docker has a
/// network of that name.
pub(crate) async fn ensure_network(socket: &Path, name: &str) -> Result<Ensured, String> {
    let (status, body) = call(socket, "GET", &format!("/networks/{name}"), None).await?;
    match status {
        200 => return Ok(Ensured::Exists),
        404 => {}
        s => {
            return Err(format!(
                "docker network inspect {name}: {}",
                message(s, &body)
            ));
        }
    }
    let create = serde_json::json!({
        "Name": name,
        "Driver": name,
        "IPAM": {"Driver": name},
        "CheckDuplicate": true,
    });
    let bytes = serde_json::to_vec(&create).map_err(|e| e.to_string())?;
    let (status, body) = call(socket, "POST", "/networks/create", Some(&bytes)).await?;
    match status {
        201 | 200 => Ok(Ensured::Created),
        // Made meanwhile by someone else (another router of the same driver name).
        409 => Ok(Ensured::Exists),
        s => Err(format!(
            "docker network create {name}: {}",
            message(s, &body)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_are_read_and_garbage_is_not() {
        assert_eq!(
            status_of(b"HTTP/1.1 404 Not Found\r\nX: y\r\n\r\n"),
            Some(404)
        );
        assert_eq!(status_of(b"HTTP/1.0 201 Created\r\n"), Some(201));
        for bad in [
            &b""[..],
            b"SSH-2.0\r\n",
            b"HTTP/1.1 2000 x\r\n",
            b"HTTP/2 200\r\n",
        ] {
            assert_eq!(status_of(bad), None, "{bad:?}");
        }
        assert_eq!(
            message(500, br#"{"message":"no such driver"}"#),
            "no such driver"
        );
        assert_eq!(message(500, b"chunked"), "HTTP 500");
    }

    #[tokio::test]
    async fn nobody_on_the_socket_is_one_line() {
        let e = ensure_network(Path::new("/nonexistent/docker.sock"), "weft")
            .await
            .unwrap_err();
        assert!(
            e.starts_with("Docker does not answer on /nonexistent/docker.sock"),
            "{e}"
        );
    }
}
