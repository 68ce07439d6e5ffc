//! The few calls the router makes to the Docker Engine API (`--docker-socket`): at
//! start, the network named after the driver, made if Docker has none of that name (as
//! `weave launch` made `weave`), so that `docker run --network weft` works at once.
//!
//! Also the stream of Docker's network events: a container that connects to one of the
//! plugin's networks is looked up (name, hostname, aliases) and named in weftDNS.
//!
//! One request per connection with `Connection: close`, a time limit on each call (not on
//! the event stream), bodies with a length or chunked (which the control API's
//! `crate::http` does not read), every line and reply bounded.

use crate::http;
use serde::Deserialize;
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

/// Most bytes of one event line, of a reply head, and of a chunk-size line.
const LINE_LEN_MAX: usize = 64 * 1024;

/// A reply from the engine, read as it comes: the head, then a body with a length or in
/// chunks (Docker streams events, and sends larger replies, chunked).
struct Reply {
    stream: UnixStream,
    buf: Vec<u8>,
    /// Bytes of the body read so far (bounded by [`REPLY_LEN_MAX`]).
    body_read: usize,
    status: u16,
    chunked: bool,
    content_length: Option<usize>,
}

impl Reply {
    /// Sends one request on a new connection and reads the reply's head.
    async fn start(
        socket: &Path,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Self, String> {
        let mut stream = UnixStream::connect(socket)
            .await
            .map_err(|e| format!("Docker does not answer on {} ({e})", socket.display()))?;
        stream
            .write_all(&http::write_request(method, path, body))
            .await
            .map_err(|e| format!("write to {}: {e}", socket.display()))?;
        let mut r = Self {
            stream,
            buf: Vec::new(),
            body_read: 0,
            status: 0,
            chunked: false,
            content_length: None,
        };
        let head = loop {
            if let Some(end) = r.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = r.buf.drain(..end + 4).collect();
                break head;
            }
            if r.buf.len() > LINE_LEN_MAX || !r.fill().await? {
                return Err(format!("{} sent no HTTP reply head", socket.display()));
            }
        };
        r.status = status_of(&head).ok_or_else(|| {
            format!(
                "{} answered {path} with something that is not HTTP",
                socket.display()
            )
        })?;
        let text = String::from_utf8_lossy(&head);
        for line in text.split("\r\n").skip(1) {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let v = v.trim();
            if k.eq_ignore_ascii_case("transfer-encoding") {
                r.chunked = v.eq_ignore_ascii_case("chunked");
            } else if k.eq_ignore_ascii_case("content-length") {
                r.content_length = v.parse().ok();
            }
        }
        Ok(r)
    }

    /// Reads more; false at the end of the stream.
    async fn fill(&mut self) -> Result<bool, String> {
        let mut chunk = [0u8; 8192];
        let n = self
            .stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read from Docker: {e}"))?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    /// The next piece of the body; `None` at its end.
    async fn next(&mut self) -> Result<Option<Vec<u8>>, String> {
        if !self.chunked {
            let want = self.content_length.unwrap_or(usize::MAX);
            if self.body_read >= want {
                return Ok(None);
            }
            if self.buf.is_empty() && !self.fill().await? {
                return Ok(None);
            }
            let n = self.buf.len().min(want - self.body_read);
            self.body_read += n;
            return Ok(Some(self.buf.drain(..n).collect()));
        }
        // A chunk: its size in hex (extensions after ';'), CRLF, the bytes, CRLF.
        let line = loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..end + 2).collect();
                break line;
            }
            if self.buf.len() > LINE_LEN_MAX || !self.fill().await? {
                return Err("Docker's chunked reply was cut off".into());
            }
        };
        let text = String::from_utf8_lossy(&line[..line.len() - 2]);
        let hex = text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(hex, 16).map_err(|_| {
            format!(
                "bad chunk size {:?} from Docker",
                super::types::truncate(hex, 20)
            )
        })?;
        if size == 0 {
            return Ok(None);
        }
        if size > REPLY_LEN_MAX {
            return Err(format!("a {size}-byte chunk from Docker"));
        }
        while self.buf.len() < size + 2 {
            if !self.fill().await? {
                return Err("Docker's chunked reply was cut off".into());
            }
        }
        let data: Vec<u8> = self.buf.drain(..size).collect();
        self.buf.drain(..2);
        Ok(Some(data))
    }

    /// The whole body (at most [`REPLY_LEN_MAX`] bytes).
    async fn body(&mut self) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        while let Some(piece) = self.next().await? {
            out.extend_from_slice(&piece);
            if out.len() > REPLY_LEN_MAX {
                return Err(format!("a reply over {REPLY_LEN_MAX} bytes from Docker"));
            }
        }
        Ok(out)
    }
}

/// One call: the status and the body.
pub(crate) async fn call(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<(u16, Vec<u8>), String> {
    let run = async {
        let mut r = Reply::start(socket, method, path, body).await?;
        let body = r.body().await?;
        Ok::<_, String>((r.status, body))
    };
    tokio::time::timeout(Duration::from_millis(CALL_TIMEOUT_MS), run)
        .await
        .map_err(|_| {
            format!(
                "Docker on {} did not answer within {} s",
                socket.display(),
                CALL_TIMEOUT_MS / 1000
            )
        })?
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

/// Makes the network `name` with driver and IPAM driver `name` on `subnet` (IPAM's
/// default subnet, the same on every host, so the network spans them), unless Docker has
/// a network of that name.
pub(crate) async fn ensure_network(
    socket: &Path,
    name: &str,
    subnet: weft_core::ipam::Cidr,
) -> Result<Ensured, String> {
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
        "IPAM": {"Driver": name, "Config": [{"Subnet": subnet.to_string()}]},
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

/// A container's names on one network, for weftDNS.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Names {
    /// Its endpoint there.
    pub(crate) endpoint_id: String,
    /// Its name, hostname and aliases there, each once.
    pub(crate) names: Vec<String>,
    /// Its labels (`docker run --label`), for network policy.
    pub(crate) labels: std::collections::BTreeMap<String, String>,
}

/// What `GET /containers/ID/json` says, as far as names go.
#[derive(Debug, Default, Deserialize)]
struct Inspect {
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "Config", default)]
    config: Option<InspectConfig>,
    #[serde(rename = "NetworkSettings", default)]
    network_settings: Option<InspectNetworks>,
}

#[derive(Debug, Default, Deserialize)]
struct InspectConfig {
    #[serde(rename = "Hostname", default)]
    hostname: String,
    #[serde(rename = "Labels", default)]
    labels: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
struct InspectNetworks {
    #[serde(rename = "Networks", default)]
    networks: Option<std::collections::BTreeMap<String, InspectEndpoint>>,
}

#[derive(Debug, Default, Deserialize)]
struct InspectEndpoint {
    #[serde(rename = "NetworkID", default)]
    network_id: String,
    #[serde(rename = "EndpointID", default)]
    endpoint_id: String,
    #[serde(rename = "Aliases", default)]
    aliases: Option<Vec<String>>,
}

/// The names of a container (`docker inspect`'s JSON) on network `network_id`; `None`
/// while Docker has not recorded its endpoint there.
fn names_on(inspect: &[u8], network_id: &str) -> Result<Option<Names>, String> {
    let i: Inspect = serde_json::from_slice(inspect)
        .map_err(|e| format!("Docker's container inspect is not what weft reads: {e}"))?;
    let Some(ep) = i
        .network_settings
        .and_then(|n| n.networks)
        .and_then(|n| n.into_values().find(|e| e.network_id == network_id))
        .filter(|e| !e.endpoint_id.is_empty())
    else {
        return Ok(None);
    };
    let mut names: Vec<String> = Vec::new();
    let name = i.name.trim_start_matches('/').to_owned();
    let config = i.config.unwrap_or_default();
    let (hostname, labels) = (config.hostname, config.labels.unwrap_or_default());
    for n in [name, hostname]
        .into_iter()
        .chain(ep.aliases.unwrap_or_default())
    {
        if !n.is_empty() && !names.contains(&n) && names.len() < NAMES_PER_CONTAINER_MAX {
            names.push(n);
        }
    }
    Ok(Some(Names {
        endpoint_id: ep.endpoint_id,
        names,
        labels,
    }))
}

/// Most names registered for one container on one network.
pub(crate) const NAMES_PER_CONTAINER_MAX: usize = 16;

/// The names of container `container` on network `network_id` (see [`names_on`]).
pub(crate) async fn container_names(
    socket: &Path,
    container: &str,
    network_id: &str,
) -> Result<Option<Names>, String> {
    let (status, body) = call(
        socket,
        "GET",
        &format!("/containers/{container}/json"),
        None,
    )
    .await?;
    if status != 200 {
        return Err(format!(
            "docker inspect {container}: {}",
            message(status, &body)
        ));
    }
    names_on(&body, network_id)
}

/// What `GET /networks/ID` says, as far as endpoints go.
#[derive(Debug, Default, Deserialize)]
struct NetworkInspect {
    #[serde(rename = "Containers", default)]
    containers: Option<std::collections::BTreeMap<String, NetworkContainer>>,
}

#[derive(Debug, Default, Deserialize)]
struct NetworkContainer {
    #[serde(rename = "EndpointID", default)]
    endpoint_id: String,
}

/// The endpoints on network `network_id` (`docker network inspect`'s JSON).
fn endpoints_in(inspect: &[u8]) -> Result<Vec<String>, String> {
    let n: NetworkInspect = serde_json::from_slice(inspect)
        .map_err(|e| format!("Docker's network inspect is not what weft reads: {e}"))?;
    Ok(n.containers
        .unwrap_or_default()
        .into_values()
        .map(|c| c.endpoint_id)
        .filter(|id| !id.is_empty())
        .collect())
}

/// The endpoints Docker has on network `network_id`: `None` when Docker has no such
/// network; `Err` when Docker does not answer, or not as expected.
pub(crate) async fn network_endpoints(
    socket: &Path,
    network_id: &str,
) -> Result<Option<Vec<String>>, String> {
    let (status, body) = call(socket, "GET", &format!("/networks/{network_id}"), None).await?;
    match status {
        200 => endpoints_in(&body).map(Some),
        404 => Ok(None),
        s => Err(format!(
            "docker network inspect {network_id}: {}",
            message(s, &body)
        )),
    }
}

/// A line of Docker's event stream, as far as network connects go.
#[derive(Debug, Default, Deserialize)]
struct Event {
    #[serde(rename = "Type", default)]
    kind: String,
    #[serde(rename = "Action", default)]
    action: String,
    #[serde(rename = "Actor", default)]
    actor: Actor,
}

#[derive(Debug, Default, Deserialize)]
struct Actor {
    #[serde(rename = "ID", default)]
    id: String,
    #[serde(rename = "Attributes", default)]
    attributes: std::collections::BTreeMap<String, String>,
}

/// `(network, container)` of a network `connect` event line.
fn connect_of(line: &[u8]) -> Option<(String, String)> {
    let e: Event = serde_json::from_slice(line).ok()?;
    if e.kind != "network" || e.action != "connect" {
        return None;
    }
    let container = e.actor.attributes.get("container")?.clone();
    Some((e.actor.id, container))
}

/// `GET /events` for network connects (`{"type":["network"],"event":["connect"]}`).
const CONNECT_EVENTS: &str =
    "/events?filters=%7B%22type%22%3A%5B%22network%22%5D%2C%22event%22%3A%5B%22connect%22%5D%7D";
/// The longest wait before following the events again after the stream ended.
const EVENTS_RETRY_MAX_MS: u64 = 30_000;

/// Follows Docker's network connect events for as long as the router runs, and awaits
/// `on_connect(network, container)` for each; when the stream ends (Docker restarted, or
/// never answered) it is followed again after a wait that grows to
/// [`EVENTS_RETRY_MAX_MS`].
pub(crate) async fn follow_connects<F, Fut>(socket: std::path::PathBuf, on_connect: F)
where
    F: Fn(String, String) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut wait_ms = 500;
    loop {
        match follow_once(&socket, &on_connect).await {
            Ok(()) => {
                tracing::info!(
                    "Docker's event stream on {} ended; following it again",
                    socket.display()
                );
                wait_ms = 500;
            }
            Err(e) => tracing::debug!("Docker events: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        wait_ms = (wait_ms * 2).min(EVENTS_RETRY_MAX_MS);
    }
}

/// Follows the event stream at `path` (`/events?filters=...`) for as long as the router
/// runs, and awaits `on_line(line)` for each event; followed again after a wait that
/// grows to [`EVENTS_RETRY_MAX_MS`] when it ends.
pub(crate) async fn follow_lines<F, Fut>(socket: std::path::PathBuf, path: &str, on_line: F)
where
    F: Fn(Vec<u8>) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut wait_ms = 500;
    loop {
        match follow_lines_once(&socket, path, &on_line).await {
            Ok(()) => wait_ms = 500,
            Err(e) => tracing::debug!("Docker events: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        wait_ms = (wait_ms * 2).min(EVENTS_RETRY_MAX_MS);
    }
}

async fn follow_lines_once<F, Fut>(socket: &Path, path: &str, on_line: &F) -> Result<(), String>
where
    F: Fn(Vec<u8>) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut r = Reply::start(socket, "GET", path, None).await?;
    if r.status != 200 {
        let body = r.body().await.unwrap_or_default();
        return Err(format!("docker events: {}", message(r.status, &body)));
    }
    let mut line = Vec::new();
    while let Some(piece) = r.next().await? {
        for b in piece {
            if b != b'\n' {
                if line.len() < LINE_LEN_MAX {
                    line.push(b);
                }
                continue;
            }
            on_line(std::mem::take(&mut line)).await;
        }
    }
    Ok(())
}

async fn follow_once<F, Fut>(socket: &Path, on_connect: &F) -> Result<(), String>
where
    F: Fn(String, String) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut r = Reply::start(socket, "GET", CONNECT_EVENTS, None).await?;
    if r.status != 200 {
        let body = r.body().await.unwrap_or_default();
        return Err(format!("docker events: {}", message(r.status, &body)));
    }
    tracing::debug!("following Docker's network events on {}", socket.display());
    let mut line = Vec::new();
    while let Some(piece) = r.next().await? {
        for b in piece {
            if b != b'\n' {
                if line.len() < LINE_LEN_MAX {
                    line.push(b);
                }
                continue;
            }
            if let Some((network, container)) = connect_of(&line) {
                on_connect(network, container).await;
            }
            line.clear();
        }
    }
    Ok(())
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

    /// A fake engine on a socket pair: answers one request with `reply`.
    async fn engine_replying(reply: Vec<u8>) -> (std::path::PathBuf, tokio::task::JoinHandle<()>) {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("weft-engine-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("docker.sock");
        let l = tokio::net::UnixListener::bind(&path).unwrap();
        let task = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut b = [0u8; 4096];
            let _ = s.read(&mut b).await;
            // In small writes, so that the reader meets every boundary.
            // The reader may hang up once it has what it wants (the last chunk).
            for piece in reply.chunks(7) {
                if s.write_all(piece).await.is_err() {
                    return;
                }
                tokio::task::yield_now().await;
            }
        });
        (path, task)
    }

    #[tokio::test]
    async fn chunked_and_sized_replies_are_read_whole() {
        let body = br#"{"Name":"/web","Config":{"Hostname":"h1"},"NetworkSettings":{"Networks":{"n":{"NetworkID":"N1","EndpointID":"E1","Aliases":["web","a1"]}}}}"#;
        let (a, b) = body.split_at(40);
        let mut chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for part in [a, b] {
            chunked.extend_from_slice(format!("{:x};ext=1\r\n", part.len()).as_bytes());
            chunked.extend_from_slice(part);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        let (path, task) = engine_replying(chunked).await;
        let got = container_names(&path, "c1", "N1").await.unwrap().unwrap();
        assert_eq!(
            got,
            Names {
                endpoint_id: "E1".into(),
                names: vec!["web".into(), "h1".into(), "a1".into()],
                labels: Default::default(),
            }
        );
        task.await.unwrap();
        let mut sized =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        sized.extend_from_slice(body);
        let (path, task) = engine_replying(sized).await;
        assert_eq!(
            container_names(&path, "c1", "N2").await.unwrap(),
            None,
            "not on N2"
        );
        task.await.unwrap();
        let cut = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nff\r\nabc".to_vec();
        let (path, task) = engine_replying(cut).await;
        let e = container_names(&path, "c1", "N1").await.unwrap_err();
        assert!(e.contains("cut off"), "{e}");
        task.await.unwrap();
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[tokio::test]
    async fn connect_events_are_picked_from_the_stream() {
        let events = [
            &br#"{"Type":"network","Action":"create","Actor":{"ID":"N1"}}"#[..],
            br#"{"Type":"network","Action":"connect","Actor":{"ID":"N1","Attributes":{"container":"C1","name":"n","type":"weft"}}}"#,
            b"not json",
            br#"{"Type":"network","Action":"connect","Actor":{"ID":"N2","Attributes":{"container":"C2"}}}"#,
        ];
        let mut data = Vec::new();
        for e in events {
            data.extend_from_slice(e);
            data.push(b'\n');
        }
        let mut reply = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        // Chunks that cut lines in the middle.
        for part in data.chunks(50) {
            reply.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
            reply.extend_from_slice(part);
            reply.extend_from_slice(b"\r\n");
        }
        reply.extend_from_slice(b"0\r\n\r\n");
        let (path, task) = engine_replying(reply).await;
        let seen = std::sync::Mutex::new(Vec::new());
        let r = follow_once(&path, &|n, c| {
            seen.lock().unwrap().push((n, c));
            async {}
        })
        .await;
        assert_eq!(r, Ok(()));
        task.await.unwrap();
        assert_eq!(
            *seen.lock().unwrap(),
            vec![("N1".into(), "C1".into()), ("N2".into(), "C2".into())]
        );
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_networks_endpoints_are_read_from_its_inspect() {
        let body = br#"{"Name":"w","Id":"n1","Containers":{
            "c1":{"Name":"a","EndpointID":"e1","IPv4Address":"10.32.0.2/12"},
            "c2":{"Name":"b","EndpointID":"e2"},
            "c3":{"Name":"c","EndpointID":""}}}"#;
        assert_eq!(endpoints_in(body).unwrap(), ["e1", "e2"]);
        assert!(
            endpoints_in(br#"{"Name":"w","Containers":{}}"#)
                .unwrap()
                .is_empty()
        );
        assert!(
            endpoints_in(br#"{"Name":"w","Containers":null}"#)
                .unwrap()
                .is_empty()
        );
        assert!(
            endpoints_in(b"not json")
                .unwrap_err()
                .contains("network inspect")
        );
    }

    #[tokio::test]
    async fn nobody_on_the_socket_is_one_line() {
        let e = ensure_network(
            Path::new("/nonexistent/docker.sock"),
            "weft",
            "10.32.0.0/12".parse().unwrap(),
        )
        .await
        .unwrap_err();
        assert!(
            e.starts_with("Docker does not answer on /nonexistent/docker.sock"),
            "{e}"
        );
    }
}
