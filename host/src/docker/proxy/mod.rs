//! The Docker API proxy: `eval $(weft env)` points the Docker CLI at `--proxy-socket`
//! (default [`SOCKET_DEFAULT`]), in front of `--docker-socket`, and every `docker run`
//! lands on weft with its network up before its first process runs.
//!
//! Everything is relayed as it comes ([`relay`]: any API version, with or without the
//! `/vX.Y` prefix; chunked streams; hijacked `attach`/`exec` connections) but three calls:
//! - `POST /containers/create` of a container on Docker's default network: its entrypoint
//!   gets the static wait program in front, and its hostname, domain and resolver are set
//!   ([`create`]);
//! - `POST /containers/ID/start` and `/restart`: once Docker has started it, the
//!   container is plugged in (`ethwe` in its namespace; addresses from `WEFT_CIDR`, one
//!   from IPAM by default, owned by the container id) and named in weftDNS, and only then
//!   is the client answered. If that fails the container is stopped and the client gets
//!   the reason: no container runs without its network.
//!
//! Docker's events do the same for starts the proxy does not see (restart policies, the
//! plain socket) and take a container off on `die` (addresses freed, names dropped, the
//! addresses remembered so that its next start claims them again) and forget it on
//! `destroy`. At the router's start, every running container the proxy made (its
//! entrypoint is the wait program) is plugged in again with the same addresses.
//! What the proxy holds is in `docker-proxy.json` in the state dir.

pub(crate) mod create;
mod relay;

use crate::api::Api;
use crate::cli::Cidr;
use crate::driver::{DnsRequest, Input, ask};
use crate::ipam::NetSpec;
use crate::messages::{NetnsRequest, ProxyStatus};
use relay::{Conn, Framing, Head};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};

pub(crate) use create::{CIDR_ENV, WAIT_PATH};

/// Where the proxy listens by default.
pub(crate) const SOCKET_DEFAULT: &str = "/run/weft/docker.sock";
/// The proxy's file in the state dir.
pub(crate) const STATE_FILE: &str = "docker-proxy.json";
/// The wait program, in the state dir (bind-mounted into the containers).
pub(crate) const WAIT_FILE: &str = "weft-wait";
/// IPAM owners of the proxy's containers: this, then the container id.
pub(crate) const OWNER_PREFIX: &str = "dp-";
/// The wait program, built static by `host/build.rs` (empty where it could not be).
const WAIT_PROGRAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/weft-wait"));
/// Largest create body read (larger ones are passed on untouched).
const CREATE_BODY_MAX: usize = 4 * 1024 * 1024;
/// Largest reply to `start` read (Docker sends none, or an error message).
const START_REPLY_MAX: usize = 256 * 1024;
/// Format version of [`STATE_FILE`].
const STATE_VERSION: u32 = 1;
/// Most containers held.
const CONTAINERS_MAX: usize = 4096;

/// What the proxy holds of one container.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Held {
    /// Its addresses (kept after it dies, claimed again when it starts).
    pub(crate) addresses: Vec<Cidr>,
    /// Its attachment while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) attachment: Option<String>,
    /// The pid it was plugged in with.
    #[serde(default)]
    pub(crate) pid: u32,
}

/// Everything in [`STATE_FILE`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ProxyState {
    pub(crate) version: u32,
    /// By full container id.
    #[serde(default)]
    pub(crate) containers: BTreeMap<String, Held>,
}

impl ProxyState {
    /// Reads `path` (none there: empty); a bad file is refused with the way out.
    pub(crate) fn load(path: &Path) -> crate::error::Result<Self> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self {
                    version: STATE_VERSION,
                    ..Self::default()
                });
            }
            Err(e) => return Err(crate::error::Error::io("read", path)(e)),
        };
        let s: Self = serde_json::from_slice(&bytes).map_err(|e| {
            crate::error::Error::Other(format!(
                "{}: {e}; move it away to start with no proxied containers",
                path.display()
            ))
        })?;
        if s.version != STATE_VERSION {
            return Err(crate::error::Error::Other(format!(
                "{}: version {} (this weft reads {STATE_VERSION})",
                path.display(),
                s.version
            )));
        }
        Ok(s)
    }

    /// The IPAM owners of its containers.
    pub(crate) fn owners(&self) -> Vec<String> {
        self.containers.keys().map(|id| owner_of(id)).collect()
    }
}

/// The IPAM owner of container `id`'s addresses.
pub(crate) fn owner_of(id: &str) -> String {
    let max = weft_core::ipam::CONTAINER_ID_LEN_MAX - OWNER_PREFIX.len();
    format!("{OWNER_PREFIX}{}", &id[..id.len().min(max)])
}

/// The call a request is, as far as the proxy cares.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Create { name: Option<String> },
    Start { id: String },
    Exec { id: String },
    Other,
}

/// Which call `method target` is (`target` with or without `/vX.Y`, with its query).
fn route(method: &str, target: &str) -> Route {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let path = strip_version(path);
    if method != "POST" {
        return Route::Other;
    }
    if path == "/containers/create" {
        let name = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("name="))
            .map(percent_decode)
            .filter(|n| !n.is_empty());
        return Route::Create { name };
    }
    let parts: Vec<&str> = path.split('/').collect();
    match parts.as_slice() {
        ["", "containers", id, "start" | "restart"] if !id.is_empty() => Route::Start {
            id: percent_decode(id),
        },
        ["", "containers", id, "exec"] if !id.is_empty() => Route::Exec {
            id: percent_decode(id),
        },
        _ => Route::Other,
    }
}

/// `path` without a leading `/vX.Y`.
fn strip_version(path: &str) -> &str {
    if let Some(rest) = path.strip_prefix("/v") {
        if let Some(i) = rest.find('/') {
            let v = &rest[..i];
            if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
                return &rest[i..];
            }
        }
    }
    path
}

/// `%XX` decoded (Docker's names and ids need little more).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Some(x) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(x);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A container's `WEFT_CIDR`: explicit addresses and subnets to allocate in.
fn weft_cidr(env: &[String]) -> Result<(Vec<Cidr>, Vec<NetSpec>), String> {
    let prefix = format!("{CIDR_ENV}=");
    let Some(value) = env.iter().rev().find_map(|e| e.strip_prefix(&prefix)) else {
        return Ok((Vec::new(), Vec::new()));
    };
    let (mut explicit, mut nets) = (Vec::new(), Vec::new());
    for word in value.split_whitespace() {
        if word.starts_with("net:") {
            nets.push(
                word.parse::<NetSpec>()
                    .map_err(|e| format!("{CIDR_ENV}: {e}"))?,
            );
        } else {
            explicit.push(word.parse::<Cidr>().map_err(|e| {
                format!("{CIDR_ENV}: {word:?}: {e} (give ADDR/PREFIX, net:CIDR or net:default)")
            })?);
        }
    }
    Ok((explicit, nets))
}

/// What `GET /containers/ID/json` says, as far as the proxy goes.
#[derive(Debug, Default)]
struct Inspect {
    id: String,
    pid: u32,
    running: bool,
    ours: bool,
    env: Vec<String>,
    hostname: String,
    domain: String,
    labels: BTreeMap<String, String>,
}

impl Inspect {
    fn of(v: &Value) -> Self {
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        Self {
            id: v["Id"].as_str().unwrap_or_default().to_owned(),
            pid: v["State"]["Pid"]
                .as_u64()
                .and_then(|p| u32::try_from(p).ok())
                .unwrap_or(0),
            running: v["State"]["Running"].as_bool().unwrap_or(false),
            ours: strings(&v["Config"]["Entrypoint"])
                .first()
                .map(String::as_str)
                == Some(WAIT_PATH),
            env: strings(&v["Config"]["Env"]),
            hostname: v["Config"]["Hostname"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            domain: v["Config"]["Domainname"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            labels: v["Config"]["Labels"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// The proxy.
pub(crate) struct Proxy {
    api: Arc<Api>,
    docker: PathBuf,
    /// The wait program's path on the host (`None`: it could not be built or written).
    wait_host_path: Option<String>,
    state_path: PathBuf,
    state: tokio::sync::Mutex<ProxyState>,
    status: Arc<std::sync::Mutex<ProxyStatus>>,
}

impl Proxy {
    /// The proxy over `state` (from `state_path`), writing the wait program to
    /// `wait_path`.
    pub(crate) fn new(
        api: Arc<Api>,
        docker: PathBuf,
        wait_path: &Path,
        state_path: PathBuf,
        state: ProxyState,
        status: Arc<std::sync::Mutex<ProxyStatus>>,
    ) -> Self {
        let wait_host_path = write_wait_program(wait_path);
        Self {
            api,
            docker,
            wait_host_path,
            state_path,
            state: tokio::sync::Mutex::new(state),
            status,
        }
    }

    fn save(&self, s: &ProxyState) -> Result<(), String> {
        let bytes = serde_json::to_vec_pretty(s).map_err(|e| e.to_string())?;
        crate::state::write_atomic(&self.state_path, &bytes).map_err(|e| e.to_string())?;
        if let Ok(mut st) = self.status.lock() {
            st.containers = s
                .containers
                .values()
                .filter(|h| h.attachment.is_some())
                .count() as u64;
        }
        Ok(())
    }

    /// Serves the proxy socket for as long as the router runs.
    pub(crate) async fn serve(self: Arc<Self>, listener: UnixListener) {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("Docker proxy: accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let p = Arc::clone(&self);
            tokio::spawn(async move {
                if let Err(e) = p.connection(stream).await {
                    tracing::debug!("Docker proxy: a connection ended: {e}");
                }
            });
        }
    }

    /// One client connection, request after request.
    async fn connection(&self, client: UnixStream) -> std::io::Result<()> {
        let mut c = Conn::new(client);
        let mut up: Option<Conn<UnixStream>> = None;
        loop {
            let Some(head) = (match c.read_head().await {
                Ok(h) => h,
                Err(e) => {
                    let _ = answer(&mut c, 400, &format!("weft proxy: {e}")).await;
                    return Ok(());
                }
            }) else {
                return Ok(());
            };
            let Some((method, target)) = head.request_line() else {
                answer(&mut c, 400, "weft proxy: not an HTTP/1.x request").await?;
                return Ok(());
            };
            let (method, target) = (method.to_owned(), target.to_owned());
            let framing = match head.framing(true, false) {
                Ok(f) => f,
                Err(e) => {
                    answer(&mut c, 400, &format!("weft proxy: {e}")).await?;
                    return Ok(());
                }
            };
            if up.is_none() {
                match UnixStream::connect(&self.docker).await {
                    Ok(s) => up = Some(Conn::new(s)),
                    Err(e) => {
                        let line = format!(
                            "weft proxy: Docker does not answer on {} ({e})",
                            self.docker.display()
                        );
                        answer(&mut c, 502, &line).await?;
                        return Ok(());
                    }
                }
            }
            let Some(u) = up.as_mut() else {
                return Ok(());
            };
            let keep = match route(&method, &target) {
                Route::Create { name } if self.wait_host_path.is_some() => {
                    self.create(&mut c, u, &head, framing, name.as_deref())
                        .await?
                }
                Route::Start { id } => self.start(&mut c, u, &head, framing, &id).await?,
                Route::Exec { id } if self.wait_host_path.is_some() => {
                    self.exec(&mut c, u, &head, framing, &id).await?
                }
                _ => {
                    u.stream.write_all(&head.raw).await?;
                    c.relay_body(framing, &mut u.stream).await?;
                    relay_reply(&mut c, u, method == "HEAD", &head).await?
                }
            };
            if !keep {
                return Ok(());
            }
        }
    }

    /// `POST /containers/create`: changed for a container weft takes, else as it is.
    async fn create(
        &self,
        c: &mut Conn<UnixStream>,
        u: &mut Conn<UnixStream>,
        head: &Head,
        framing: Framing,
        name: Option<&str>,
    ) -> std::io::Result<bool> {
        if matches!(framing, Framing::Length(n) if n > CREATE_BODY_MAX as u64) {
            u.stream.write_all(&head.raw).await?;
            c.relay_body(framing, &mut u.stream).await?;
            return relay_reply(c, u, false, head).await;
        }
        let Some(body) = read_request_body(c, framing, "create").await? else {
            return Ok(false);
        };
        let out = match self.rewrite(&body, name).await {
            Ok(v) => v,
            Err(why) => {
                tracing::debug!(
                    "Docker proxy: create {} passed on as it is: {why}",
                    name.unwrap_or("(no name)")
                );
                u.stream.write_all(&head.with_length(body.len())).await?;
                u.stream.write_all(&body).await?;
                return relay_reply(c, u, false, head).await;
            }
        };
        u.stream.write_all(&head.with_length(out.len())).await?;
        u.stream.write_all(&out).await?;
        // Docker's answer names the container: from now on it is this proxy's.
        let Some((reply, rf, rbody)) = read_reply(c, u).await? else {
            return Ok(false);
        };
        if reply.status() == Some(201) {
            let id = serde_json::from_slice::<Value>(&rbody)
                .ok()
                .and_then(|v| v["Id"].as_str().map(str::to_owned));
            if let Some(id) = id {
                let mut st = self.state.lock().await;
                if st.containers.len() < CONTAINERS_MAX {
                    let mut next = st.clone();
                    next.containers.entry(id).or_default();
                    if let Err(e) = self.save(&next) {
                        tracing::warn!("Docker proxy: {e}");
                    } else {
                        *st = next;
                    }
                }
            }
        }
        send_reply(c, head, &reply, rf, &rbody).await
    }

    /// `POST /containers/ID/exec` on one of the proxy's containers: the process waits for
    /// the network too (at once when it is up), as the container's first one did.
    async fn exec(
        &self,
        c: &mut Conn<UnixStream>,
        u: &mut Conn<UnixStream>,
        head: &Head,
        framing: Framing,
        id: &str,
    ) -> std::io::Result<bool> {
        let Some(body) = read_request_body(c, framing, "exec").await? else {
            return Ok(false);
        };
        let mine = {
            let st = self.state.lock().await;
            st.containers
                .keys()
                .any(|k| k == id || (id.len() >= 12 && k.starts_with(id)))
                || self
                    .inspect(id)
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|i| st.containers.contains_key(&i.id))
        };
        let out = match serde_json::from_slice::<Value>(&body) {
            Ok(mut v) if mine => match create::strings_of(&v["Cmd"]) {
                Some(cmd)
                    if cmd.first().map(String::as_str) != Some(WAIT_PATH) && !cmd.is_empty() =>
                {
                    let mut with = vec![WAIT_PATH.to_owned()];
                    with.extend(cmd);
                    v["Cmd"] = serde_json::json!(with);
                    serde_json::to_vec(&v).unwrap_or(body)
                }
                _ => body,
            },
            _ => body,
        };
        u.stream.write_all(&head.with_length(out.len())).await?;
        u.stream.write_all(&out).await?;
        relay_reply(c, u, false, head).await
    }

    /// The create body as weft changes it, or why it stays as it is.
    async fn rewrite(&self, body: &[u8], name: Option<&str>) -> Result<Vec<u8>, String> {
        let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON ({e})"))?;
        let need_image = create::taken(&v)?;
        let image = match need_image {
            None => None,
            Some(image) => {
                let path = format!("/images/{}/json", url_path_escape(&image));
                let (status, reply) = super::engine::call(&self.docker, "GET", &path, None).await?;
                if status != 200 {
                    return Err(format!("image {image}: HTTP {status}"));
                }
                let v: Value = serde_json::from_slice(&reply).map_err(|e| e.to_string())?;
                Some(create::ImageConfig::of_inspect(&v))
            }
        };
        let dns = crate::api::dns_args(&self.api);
        let ctx = create::Context {
            wait_host_path: self.wait_host_path.clone().unwrap_or_default(),
            dns_server: dns.server,
            domain: dns
                .domain
                .unwrap_or_default()
                .trim_end_matches('.')
                .to_owned(),
        };
        let v = create::rewrite(v, name, image.as_ref(), &ctx)?;
        serde_json::to_vec(&v).map_err(|e| e.to_string())
    }

    /// `POST /containers/ID/start` (or `/restart`): Docker starts it, weft plugs it in,
    /// then the client hears Docker's answer; or the reason, with the container stopped.
    async fn start(
        &self,
        c: &mut Conn<UnixStream>,
        u: &mut Conn<UnixStream>,
        head: &Head,
        framing: Framing,
        id: &str,
    ) -> std::io::Result<bool> {
        u.stream.write_all(&head.raw).await?;
        c.relay_body(framing, &mut u.stream).await?;
        let Some((reply, rf, body)) = read_reply(c, u).await? else {
            return Ok(false);
        };
        let status = reply.status().unwrap_or(0);
        if (200..300).contains(&status) || status == 304 {
            if let Err(e) = self.plug_in(id).await {
                let line = format!("weft: container {} stopped: {e}", short(id));
                tracing::warn!("Docker proxy: {line}");
                self.stop_container(id).await;
                answer(c, 500, &line).await?;
                return Ok(true);
            }
        }
        send_reply(c, head, &reply, rf, &body).await
    }

    async fn stop_container(&self, id: &str) {
        let path = format!("/containers/{}/kill", url_path_escape(id));
        if let Err(e) = super::engine::call(&self.docker, "POST", &path, None).await {
            tracing::warn!("Docker proxy: could not stop container {}: {e}", short(id));
        }
    }

    async fn inspect(&self, id: &str) -> Result<Option<Inspect>, String> {
        let path = format!("/containers/{}/json", url_path_escape(id));
        let (status, body) = super::engine::call(&self.docker, "GET", &path, None).await?;
        match status {
            200 => {}
            404 => return Ok(None),
            s => return Err(format!("docker inspect {}: HTTP {s}", short(id))),
        }
        let v: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        Ok(Some(Inspect::of(&v)))
    }

    /// Plugs container `id` in if it is one of the proxy's and runs: `Ok(false)` if it is
    /// not the proxy's, or no longer runs (a short-lived one may be done already: it
    /// could not have run before it was plugged in).
    pub(crate) async fn plug_in(&self, id: &str) -> Result<bool, String> {
        let Some(info) = self.inspect(id).await? else {
            return Ok(false); // Removed meanwhile (`docker run --rm` of a short one).
        };
        // Only what this proxy made (its state says so): another router's proxy on the
        // same engine plugs in its own.
        let mine = self.state.lock().await.containers.contains_key(&info.id);
        if !mine || !info.ours || !info.running || info.pid == 0 {
            return Ok(false);
        }
        let plugged = |st: &ProxyState| {
            st.containers
                .get(&info.id)
                .is_some_and(|h| h.attachment.is_some() && h.pid == info.pid)
        };
        if plugged(&*self.state.lock().await) {
            return Ok(true); // Its start event and its start reply both ask.
        }
        let (explicit, nets) = weft_cidr(&info.env)?;
        let owner = owner_of(&info.id);
        let dns = crate::api::dns_args(&self.api);
        let domain = dns.domain.unwrap_or_default();
        let name = (!info.hostname.is_empty()
            && format!("{}.", info.domain.trim_end_matches('.')) == domain)
            .then(|| info.hostname.clone());
        let netns = PathBuf::from(format!("/proc/{}/ns/net", info.pid));
        let (pod_namespace, pod_labels, pod_ports) =
            crate::policy::pods::from_container_labels(&info.labels);
        let mut st = self.state.lock().await;
        if plugged(&st) {
            return Ok(true);
        }
        if !st.containers.contains_key(&info.id) && st.containers.len() >= CONTAINERS_MAX {
            return Err(format!("{CONTAINERS_MAX} containers held already"));
        }
        let remembered = st
            .containers
            .get(&info.id)
            .map(|h| h.addresses.clone())
            .unwrap_or_default();
        let request = |addresses: Vec<Cidr>, allocate: Vec<NetSpec>| NetnsRequest {
            netns: netns.clone(),
            addresses,
            name: name.clone(),
            allocate,
            namespace: pod_namespace.clone(),
            labels: pod_labels.clone(),
            ports: pod_ports.clone(),
        };
        let attach = |r: NetnsRequest| crate::api::attach_as(&self.api, &owner, r);
        let made = if remembered.is_empty() {
            attach(request(explicit, nets)).await
        } else {
            match attach(request(remembered.clone(), Vec::new())).await {
                Ok(r) => Ok(r),
                Err(e) => {
                    tracing::warn!(
                        "Docker proxy: container {} cannot have {remembered:?} again ({}); asking anew",
                        short(&info.id),
                        e.line()
                    );
                    attach(request(explicit, nets)).await
                }
            }
        };
        let made = match made {
            Ok(m) => m,
            Err(e) => {
                // Done meanwhile (its namespace went with it): nothing to plug in.
                drop(st);
                if let Ok(Some(now)) = self.inspect(id).await {
                    if !now.running || now.pid != info.pid {
                        return Ok(false);
                    }
                }
                return Err(e.line());
            }
        };
        let addresses = made.attachment.addresses.clone();
        tracing::info!(
            "Docker proxy: container {} plugged in with {addresses:?}{}",
            short(&info.id),
            name.as_ref()
                .map(|n| format!(" as {n}.{domain}"))
                .unwrap_or_default()
        );
        let mut next = st.clone();
        next.containers.insert(
            info.id.clone(),
            Held {
                addresses,
                attachment: Some(made.attachment.id.clone()),
                pid: info.pid,
            },
        );
        self.save(&next)?;
        *st = next;
        Ok(true)
    }

    /// Container `id` died: off the network, its addresses freed (and remembered), its
    /// names dropped. A stale event (it runs again, plugged in) changes nothing.
    pub(crate) async fn unplug(&self, id: &str, forget: bool) -> Result<(), String> {
        let mut st = self.state.lock().await;
        let Some(held) = st.containers.get(id).cloned() else {
            return Ok(());
        };
        if !forget && held.attachment.is_some() {
            if let Ok(Some(now)) = self.inspect(id).await {
                if now.running && now.pid == held.pid {
                    return Ok(()); // Started again and plugged in already.
                }
            }
        }
        if let Some(att) = &held.attachment {
            if let Err(e) = self.api.plumbing.lock().await.detach_id(att).await {
                tracing::warn!("Docker proxy: container {}: {e}", short(id));
            }
            let container = Some(att.clone());
            let _ = ask(&self.api.inbox, |answer| {
                Input::Dns(DnsRequest::Remove {
                    name: None,
                    addrs: Vec::new(),
                    container,
                    answer,
                })
            })
            .await;
        }
        crate::ipam::free(&self.api, &owner_of(id), None)
            .await
            .map_err(|e| e.line())?;
        let mut next = st.clone();
        if forget {
            next.containers.remove(id);
        } else if let Some(h) = next.containers.get_mut(id) {
            h.attachment = None;
            h.pid = 0;
        }
        self.save(&next)?;
        *st = next;
        tracing::info!(
            "Docker proxy: container {} {}; its addresses freed",
            short(id),
            if forget { "removed" } else { "stopped" }
        );
        Ok(())
    }

    /// At start: the proxy's containers as Docker has them now: running ones plugged in
    /// again, stopped ones off, removed ones forgotten.
    pub(crate) async fn readopt(&self) {
        let (status, body) = match super::engine::call(
            &self.docker,
            "GET",
            "/containers/json?all=1",
            None,
        )
        .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(
                    "Docker proxy: cannot list containers ({e}); proxied containers are plugged in again when they start"
                );
                return;
            }
        };
        let list: Vec<Value> = if status == 200 {
            serde_json::from_slice(&body).unwrap_or_default()
        } else {
            Vec::new()
        };
        let known: Vec<String> = self.state.lock().await.containers.keys().cloned().collect();
        let ids: Vec<String> = list
            .iter()
            .filter_map(|c| c["Id"].as_str().map(str::to_owned))
            .collect();
        for id in known.iter().filter(|id| !ids.contains(id)) {
            if let Err(e) = self.unplug(id, true).await {
                tracing::warn!("Docker proxy: container {}: {e}", short(id));
            }
        }
        let mut again = 0;
        for c in &list {
            let (Some(id), running) = (c["Id"].as_str(), c["State"].as_str() == Some("running"))
            else {
                continue;
            };
            if !known.iter().any(|k| k == id) {
                continue;
            }
            if running {
                match self.plug_in(id).await {
                    Ok(true) => again += 1,
                    Ok(false) => {}
                    Err(e) => tracing::warn!(
                        "Docker proxy: container {} not plugged in again: {e}",
                        short(id)
                    ),
                }
            } else {
                if let Err(e) = self.unplug(id, false).await {
                    tracing::warn!("Docker proxy: container {}: {e}", short(id));
                }
            }
        }
        if again > 0 {
            tracing::info!("Docker proxy: {again} running containers plugged in again");
        }
    }

    /// Docker's container events, for as long as the router runs.
    pub(crate) async fn follow_events(self: Arc<Self>) {
        const EVENTS: &str = "/events?filters=%7B%22type%22%3A%5B%22container%22%5D%2C%22event%22%3A%5B%22start%22%2C%22die%22%2C%22destroy%22%5D%7D";
        let docker = self.docker.clone();
        super::engine::follow_lines(docker, EVENTS, move |line| {
            let p = Arc::clone(&self);
            async move {
                let Ok(v) = serde_json::from_slice::<Value>(&line) else {
                    return;
                };
                let id = v["Actor"]["ID"]
                    .as_str()
                    .or(v["id"].as_str())
                    .unwrap_or_default()
                    .to_owned();
                if id.is_empty() {
                    return;
                }
                let r = match v["Action"].as_str().or(v["status"].as_str()) {
                    Some("start") => p.plug_in(&id).await.map(drop),
                    Some("die") => p.unplug(&id, false).await,
                    Some("destroy") => p.unplug(&id, true).await,
                    _ => Ok(()),
                };
                if let Err(e) = r {
                    tracing::warn!("Docker proxy: container {}: {e}", short(&id));
                    if v["Action"].as_str() == Some("start") {
                        p.stop_container(&id).await;
                    }
                }
            }
        })
        .await;
    }
}

/// Writes the wait program to `path` (mode 0755); its path, or `None` (logged).
fn write_wait_program(path: &Path) -> Option<String> {
    if WAIT_PROGRAM.is_empty() {
        tracing::warn!(
            "Docker proxy: this weft was built without the static wait program; containers are passed through to Docker untouched"
        );
        return None;
    }
    let same = std::fs::read(path).is_ok_and(|b| b == WAIT_PROGRAM);
    let written = same
        || crate::state::write_atomic(path, WAIT_PROGRAM).is_ok() && {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).is_ok()
        };
    if !written {
        tracing::warn!(
            "Docker proxy: cannot write {}; containers are passed through to Docker untouched",
            path.display()
        );
        return None;
    }
    Some(path.display().to_string())
}

/// Relays the reply to a request relayed as it was: `Ok(true)` if the connection goes on.
async fn relay_reply(
    c: &mut Conn<UnixStream>,
    u: &mut Conn<UnixStream>,
    head_request: bool,
    request: &Head,
) -> std::io::Result<bool> {
    loop {
        let Some(reply) = u.read_head().await? else {
            return Ok(false);
        };
        let status = reply.status().unwrap_or(0);
        c.stream.write_all(&reply.raw).await?;
        if status == 101 {
            relay::pipe(c, u).await?;
            return Ok(false);
        }
        if (100..200).contains(&status) {
            continue; // 100 Continue: the real reply follows.
        }
        let framing = reply
            .framing(false, head_request)
            .map_err(std::io::Error::other)?;
        if framing == Framing::UntilClose {
            // No length: the body (or a hijacked stream) lasts until Docker closes.
            relay::pipe(c, u).await?;
            return Ok(false);
        }
        u.relay_body(framing, &mut c.stream).await?;
        return Ok(!closing(request) && !closing(&reply));
    }
}

/// A request body the proxy reads whole (`what` names the call); `None` (and a 413 to
/// the client) when it is over [`CREATE_BODY_MAX`] bytes.
async fn read_request_body(
    c: &mut Conn<UnixStream>,
    framing: Framing,
    what: &str,
) -> std::io::Result<Option<Vec<u8>>> {
    let body = c.read_body(framing, CREATE_BODY_MAX).await?;
    if body.is_none() {
        let line = format!("weft proxy: a {what} body over {CREATE_BODY_MAX} bytes");
        answer(c, 413, &line).await?;
    }
    Ok(body)
}

/// Docker's reply read whole (it is small: an id, or an error), to act on before the
/// client sees it; `None` when Docker closed, or sent more than [`START_REPLY_MAX`]
/// bytes (the head is passed on then, and the connection ends).
async fn read_reply(
    c: &mut Conn<UnixStream>,
    u: &mut Conn<UnixStream>,
) -> std::io::Result<Option<(Head, Framing, Vec<u8>)>> {
    let Some(reply) = u.read_head().await? else {
        return Ok(None);
    };
    let rf = reply.framing(false, false).map_err(std::io::Error::other)?;
    let Some(body) = u.read_body(rf, START_REPLY_MAX).await? else {
        c.stream.write_all(&reply.raw).await?;
        return Ok(None);
    };
    Ok(Some((reply, rf, body)))
}

/// Sends a reply [`read_reply`] read to the client: `Ok(true)` if the connection goes on.
async fn send_reply(
    c: &mut Conn<UnixStream>,
    request: &Head,
    reply: &Head,
    rf: Framing,
    body: &[u8],
) -> std::io::Result<bool> {
    let head = match rf {
        Framing::Empty => reply.raw.clone(),
        _ => reply.with_length(body.len()),
    };
    c.stream.write_all(&head).await?;
    c.stream.write_all(body).await?;
    Ok(!closing(request) && !closing(reply) && rf != Framing::UntilClose)
}

/// Whether a message says `Connection: close` (or is HTTP/1.0 without keep-alive).
fn closing(h: &Head) -> bool {
    h.has_token("Connection", "close")
        || (h.first.contains("HTTP/1.0") && !h.has_token("Connection", "keep-alive"))
}

/// Answers `status` with Docker's error shape, `{"message": line}`.
async fn answer(c: &mut Conn<UnixStream>, status: u16, line: &str) -> std::io::Result<()> {
    let body = serde_json::json!({ "message": line }).to_string();
    let reason = match status {
        400 => "Bad Request",
        413 => "Payload Too Large",
        502 => "Bad Gateway",
        _ => "Internal Server Error",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    c.stream.write_all(head.as_bytes()).await?;
    c.stream.write_all(body.as_bytes()).await?;
    c.stream.flush().await
}

/// A name or id as a path segment.
fn url_path_escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._:".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The first 12 characters of an id, as Docker shows it.
fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_found_with_and_without_a_version() {
        assert_eq!(
            route("POST", "/v1.41/containers/create?name=web"),
            Route::Create {
                name: Some("web".into())
            }
        );
        assert_eq!(
            route("POST", "/containers/create"),
            Route::Create { name: None }
        );
        assert_eq!(
            route("POST", "/v1.25/containers/abc/start"),
            Route::Start { id: "abc".into() }
        );
        assert_eq!(
            route("POST", "/containers/my%2Dweb/restart?t=1"),
            Route::Start {
                id: "my-web".into()
            }
        );
        assert_eq!(
            route("POST", "/v1.41/containers/abc/exec"),
            Route::Exec { id: "abc".into() }
        );
        for (m, t) in [
            ("GET", "/containers/create"),
            ("POST", "/containers/abc/stop"),
            ("POST", "/containers//start"),
            ("POST", "/vx/containers/create"),
            ("GET", "/_ping"),
        ] {
            assert_eq!(route(m, t), Route::Other, "{m} {t}");
        }
    }

    #[test]
    fn weft_cidr_is_read_and_refused_with_the_reason() {
        let env = |v: &str| vec!["A=1".to_owned(), format!("WEFT_CIDR={v}")];
        assert_eq!(weft_cidr(&["A=1".into()]), Ok((vec![], vec![])));
        let (e, n) = weft_cidr(&env("net:10.32.8.0/24 10.2.1.6/24")).unwrap();
        assert_eq!(e, vec!["10.2.1.6/24".parse().unwrap()]);
        assert_eq!(n, vec![NetSpec(Some("10.32.8.0/24".parse().unwrap()))]);
        assert_eq!(
            weft_cidr(&env("net:default")).unwrap().1,
            vec![NetSpec(None)]
        );
        let bad = weft_cidr(&env("10.2.1.300/24")).unwrap_err();
        assert!(
            bad.contains("WEFT_CIDR") && bad.contains("10.2.1.300"),
            "{bad}"
        );
        assert!(weft_cidr(&env("net:nonsense")).is_err());
    }

    #[test]
    fn owners_fit_ipam_and_names_decode() {
        let id = "f".repeat(64);
        let o = owner_of(&id);
        assert!(o.len() <= weft_core::ipam::CONTAINER_ID_LEN_MAX && o.starts_with(OWNER_PREFIX));
        assert_eq!(percent_decode("a%2Fb%zz%4"), "a/b%zz%4");
        assert_eq!(url_path_escape("web/1 x"), "web%2F1%20x");
        assert_eq!(strip_version("/v1.41/info"), "/info");
        assert_eq!(strip_version("/version"), "/version");
    }
}
