//! The control API on the unix socket: JSON over the strict HTTP/1.1 subset of
//! [`crate::http`], one request per connection.
//!
//! Routes (every error is `{"error": "one line"}` with 400/403/404/405/409/500/503;
//! the bodies are the types of [`crate::messages`]):
//!
//! | method | path | body | reply |
//! |---|---|---|---|
//! | GET | `/status` | | summary object |
//! | GET | `/status/peers` | | array of peers |
//! | GET | `/status/connections` | | array of connections (live, failed targets, and peers relayed through others) |
//! | GET | `/status/targets` | | array of targets |
//! | GET | `/ps` | | array of attachments |
//! | GET | `/metrics` | | Prometheus text |
//! | POST | `/connect`, `/forget` | `{"peers": ["host[:port]", ...]}` | `{"peers": ["ip:port", ...]}` |
//! | POST | `/attach` | `{"netns": PATH, "addresses": ["a/n", ...]}` | attachment |
//! | POST | `/detach` | `{"netns": PATH, "addresses": [...]}` (empty: all) | `{"removed": "all" \| "addresses", "attachment": {...}}` |
//! | POST | `/expose` | `{"addresses": ["a/n", ...], "allocate": ["net:default" \| "net:CIDR", ...], "fqdn": N?}` | `{"exposed": [...], "given": [...]}` |
//! | POST | `/hide` | `{}` | `{"removed": [...]}` |
//! | POST | `/stop` | `{"reset": bool}` (optional) | `{"stopping": true}` |
//! | GET | `/status/dns` | | domain, listen addresses, upstreams, records, counters |
//! | POST | `/dns/add` | `{"name": N, "addresses": ["ip", ...], "container": ID?}` | `{"name", "added"}` |
//! | POST | `/dns/remove` | `{"name": N?, "addresses": [...], "container": ID?}` | `{"removed": n}` |
//! | POST | `/dns/lookup` | `{"name": N}` | `{"name", "addresses": [...]}` |
//! | GET | `/dns/args` | | `{"server": ip \| null, "domain": "weave.local."}` |
//! | GET | `/status/ipam` | | range, init, ring, each peer's share and free space, counters |
//! | POST | `/ipam/rmpeer` | `{"peer": NAME-OR-NICKNAME}` | `{"peer", "addresses": n}` |
//! | GET | `/service` | | array of services |
//! | POST | `/service/export` | `{"port", "proto", "on"?, "target", "target_port"}` | the service |
//! | POST | `/service/import` | `{"addr"?, "port", "proto", "target", "target_port"}` | the service |
//! | POST | `/service/rm` | `{"id"}` | the service removed |
//! | POST | `/cni/add`, `/cni/del`, `/cni/check`, `/cni/gc`, `/cni/ipam/add`, `/cni/ipam/del` | the `Cni*Request`s | the `Cni*Reply`s (the CNI plugin's; `crate::cni`) |
//!
//! `/attach` takes `"allocate": ["net:default" \| "net:CIDR", ...]` besides explicit
//! `"addresses"` (claimed in IPAM when inside the range); with neither it allocates one
//! address of the default subnet, waiting up to `--ipalloc-timeout` (409 with one line on
//! failure), and replies `"given"`: the addresses this call put on the interface.
//!
//! `/attach` also takes `"name"` (registered for the attachment's IPv4 addresses and
//! removed on detach) and `/expose` `"fqdn"` (the host's name; the DNS server also
//! listens on every exposed IPv4 address).

use crate::cli::{Cidr, PeerAddr};
use crate::dns::DnsServer;
use crate::driver::{DnsRequest, Input, Query, ask};
use crate::http::{self, BODY_LEN_MAX, HttpError};
use crate::messages::{
    ApiError, AttachReply, DetachReply, DnsArgs, DnsNamingRequest, ErrorBody, ExposeReply,
    ExposeRequest, HideReply, NetnsRequest, PeersReply, PeersRequest, PluginStatus, ProxyStatus,
    Removed, RmpeerRequest, StopReply, StopRequest, Summary,
};
use crate::plumbing::{Detached, Plumbing};
use crate::sleeve::Datapath;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Mutex, Notify, mpsc};

/// How long a client may take to send its request.
pub(crate) const REQUEST_READ_TIMEOUT_MS: u64 = 10_000;
/// How long a refused caller's request is waited for before the refusal is written.
pub(crate) const REFUSAL_READ_TIMEOUT_MS: u64 = 1_000;
/// Most control connections served at once; more wait in the listen backlog.
pub(crate) const API_CONNS_MAX: usize = 64;
/// Most peers in one connect/forget request.
pub(crate) const PEERS_PER_REQUEST_MAX: usize = 256;

/// What the API handlers share.
pub(crate) struct Api {
    pub(crate) inbox: mpsc::Sender<Input>,
    pub(crate) plumbing: Mutex<Plumbing>,
    pub(crate) datapath: Arc<Datapath>,
    pub(crate) port: u16,
    /// Notified when `/stop` was answered.
    pub(crate) stop: Notify,
    /// Set by `/stop {"reset": true}`.
    pub(crate) reset: AtomicBool,
    /// The DNS server (`None` with `--no-dns`).
    pub(crate) dns: Option<Arc<DnsServer>>,
    /// The nftables filter on the sleeve and fast-path ports.
    pub(crate) peer_filter: Arc<crate::firewall::PeerFilter>,
    /// The Docker plugin, as `weft status` shows it.
    pub(crate) plugin: Arc<std::sync::Mutex<PluginStatus>>,
    /// The Docker API proxy, as `weft status` shows it.
    pub(crate) proxy: Arc<std::sync::Mutex<ProxyStatus>>,
    /// `weft service` exports and imports.
    pub(crate) services: crate::services::serve::Services,
    /// Network policy: the table for this host's pods.
    pub(crate) policy: Arc<crate::policy::enforce::Enforcer>,
    /// The Docker plugin's joined containers as network policy sees them, by IPAM owner.
    pub(crate) docker_pods: tokio::sync::watch::Sender<
        std::collections::BTreeMap<String, crate::policy::pods::LocalPort>,
    >,
}

/// A reply: status, content type, body.
struct Reply {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    allow: Option<&'static str>,
}

impl Reply {
    fn json<T: Serialize>(v: &T) -> Self {
        let mut body = serde_json::to_vec(v).unwrap_or_default();
        body.push(b'\n');
        Self {
            status: 200,
            content_type: "application/json",
            body,
            allow: None,
        }
    }

    fn error(e: &ApiError) -> Self {
        let mut r = Self::json(&ErrorBody { error: e.line() });
        r.status = e.status();
        if let ApiError::WrongMethod { allowed, .. } = e {
            r.allow = Some(allowed);
        }
        r
    }
}

/// What a handler gives: a reply to send, or the error to send instead.
type Handled = Result<Reply, ApiError>;

/// Serves the control socket until the process ends. Only root and `own_uid` (the
/// router's user) are served; anyone else gets a 403 with one line and is hung up on.
pub(crate) async fn serve(listener: UnixListener, api: Arc<Api>, own_uid: u32) {
    let slots = Arc::new(tokio::sync::Semaphore::new(API_CONNS_MAX));
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, _)) => {
                let api = Arc::clone(&api);
                tokio::spawn(async move {
                    match crate::control::caller_allowed(&stream, own_uid) {
                        Ok(()) => handle_conn(stream, &api).await,
                        Err(refusal) => refuse(stream, ApiError::Forbidden(refusal)).await,
                    }
                    drop(permit);
                });
            }
            Err(e) => {
                tracing::warn!("control socket accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn read_request(stream: &mut UnixStream) -> Result<http::Request, HttpError> {
    http::read_request(stream, BODY_LEN_MAX).await
}

/// Answers a caller that may not use the API with `refusal` (403) and closes. Its request
/// is read first (bounded, for at most [`REFUSAL_READ_TIMEOUT_MS`]) but not looked at, so
/// that its write does not fail before it can read why.
async fn refuse(mut stream: UnixStream, refusal: ApiError) {
    tracing::warn!("control socket: {refusal}");
    let _ = tokio::time::timeout(
        Duration::from_millis(REFUSAL_READ_TIMEOUT_MS),
        read_request(&mut stream),
    )
    .await;
    let reply = Reply::error(&refusal);
    let bytes = http::write_response(reply.status, reply.content_type, &reply.body, None);
    let write = async {
        let _ = stream.write_all(&bytes).await;
        let _ = stream.shutdown().await;
    };
    let _ = tokio::time::timeout(Duration::from_millis(REQUEST_READ_TIMEOUT_MS), write).await;
}

async fn handle_conn(mut stream: UnixStream, api: &Api) {
    let req = tokio::time::timeout(
        Duration::from_millis(REQUEST_READ_TIMEOUT_MS),
        read_request(&mut stream),
    )
    .await;
    let reply = match req {
        Err(_) => Reply::error(&ApiError::RequestTimeout),
        Ok(Err(HttpError::Truncated)) => return, // Nobody left to answer.
        Ok(Err(e)) => Reply::error(&ApiError::Http(e)),
        Ok(Ok(req)) => route(api, &req).await.unwrap_or_else(|e| Reply::error(&e)),
    };
    let bytes = http::write_response(reply.status, reply.content_type, &reply.body, reply.allow);
    let _ = stream.write_all(&bytes).await;
    let _ = stream.shutdown().await;
}

const ROUTES: &[(&str, &str)] = &[
    ("/status", "GET"),
    ("/status/peers", "GET"),
    ("/status/connections", "GET"),
    ("/status/targets", "GET"),
    ("/ps", "GET"),
    ("/metrics", "GET"),
    ("/connect", "POST"),
    ("/forget", "POST"),
    ("/attach", "POST"),
    ("/detach", "POST"),
    ("/expose", "POST"),
    ("/hide", "POST"),
    ("/stop", "POST"),
    ("/status/dns", "GET"),
    ("/dns/add", "POST"),
    ("/dns/remove", "POST"),
    ("/dns/lookup", "POST"),
    ("/dns/args", "GET"),
    ("/status/ipam", "GET"),
    ("/ipam/rmpeer", "POST"),
    ("/cni/add", "POST"),
    ("/cni/del", "POST"),
    ("/cni/check", "POST"),
    ("/cni/gc", "POST"),
    ("/cni/ipam/add", "POST"),
    ("/cni/ipam/del", "POST"),
    ("/service", "GET"),
    ("/service/export", "POST"),
    ("/service/import", "POST"),
    ("/service/rm", "POST"),
    ("/policy", "GET"),
    ("/policy/apply", "POST"),
    ("/policy/delete", "POST"),
    ("/policy/explain", "POST"),
    ("/status/policy", "GET"),
    ("/label", "POST"),
];

async fn route(api: &Api, req: &http::Request) -> Handled {
    let Some(&(path, method)) = ROUTES.iter().find(|(p, _)| *p == req.path) else {
        return Err(ApiError::NoSuchEndpoint(req.path.clone()));
    };
    if req.method != method {
        return Err(ApiError::WrongMethod {
            path,
            allowed: method,
            got: req.method.clone(),
        });
    }
    let inbox = &api.inbox;
    match path {
        "/status" => status(api).await,
        "/status/peers" => json(ask(inbox, |tx| Input::Query(Query::Peers(tx))).await?),
        "/status/connections" => json(ask(inbox, |tx| Input::Query(Query::Connections(tx))).await?),
        "/status/targets" => json(ask(inbox, |tx| Input::Query(Query::Targets(tx))).await?),
        "/ps" => Ok(Reply::json(&api.plumbing.lock().await.attachments())),
        "/metrics" => metrics(api).await,
        "/connect" | "/forget" => peers(api, path, &req.body).await,
        "/attach" => attach(api, body(&req.body)?).await,
        "/detach" => detach(api, body(&req.body)?).await,
        "/expose" => expose(api, body(&req.body)?).await,
        "/hide" => hide(api).await,
        "/stop" => stop(api, body(&req.body)?),
        "/status/dns" => json(ask(inbox, |tx| Input::Query(Query::Dns(tx))).await?),
        "/dns/add" | "/dns/remove" | "/dns/lookup" => dns(api, path, body(&req.body)?).await,
        "/dns/args" => json(dns_args(api)),
        "/status/ipam" => json(crate::ipam::status(api).await?),
        "/ipam/rmpeer" => {
            let b: RmpeerRequest = body(&req.body)?;
            json(crate::ipam::rmpeer(api, &b.peer).await?)
        }
        "/cni/add" => json(crate::cni::server::add(api, body(&req.body)?).await?),
        "/cni/del" => json(crate::cni::server::del(api, body(&req.body)?).await?),
        "/cni/check" => json(crate::cni::server::check(api, body(&req.body)?).await?),
        "/cni/gc" => json(crate::cni::server::gc(api, body(&req.body)?).await?),
        "/cni/ipam/add" => json(crate::cni::server::ipam_add(api, body(&req.body)?).await?),
        "/cni/ipam/del" => json(crate::cni::server::ipam_del(api, body(&req.body)?).await?),
        "/service" => json(api.services.list().await),
        "/service/export" => json(crate::services::serve::export(api, body(&req.body)?).await?),
        "/service/import" => json(crate::services::serve::import(api, body(&req.body)?).await?),
        "/service/rm" => json(crate::services::serve::rm(api, body(&req.body)?).await?),
        "/policy" => json(crate::policy::serve::list(api)),
        "/policy/apply" => json(crate::policy::serve::apply(api, body(&req.body)?).await?),
        "/policy/delete" => json(crate::policy::serve::delete(api, body(&req.body)?).await?),
        "/policy/explain" => json(crate::policy::serve::explain(api, &body(&req.body)?)?),
        "/status/policy" => json(api.policy.status()),
        "/label" => json(crate::policy::serve::label(api, body(&req.body)?).await?),
        _ => Err(ApiError::NoSuchEndpoint(req.path.clone())),
    }
}

fn json<T: Serialize>(v: T) -> Handled {
    Ok(Reply::json(&v))
}

/// The request body as `T` (an empty body reads as `{}`).
fn body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes = if bytes.is_empty() {
        b"{}".as_slice()
    } else {
        bytes
    };
    serde_json::from_slice(bytes).map_err(|e| ApiError::BadBody(e.to_string()))
}

async fn status(api: &Api) -> Handled {
    let router = ask(&api.inbox, |tx| Input::Query(Query::Summary(tx))).await?;
    let p = api.plumbing.lock().await;
    let mut summary = Summary {
        router,
        bridge: Some(p.bridge().to_owned()),
        attachments: Some(p.attachments().len() as u64),
        exposed: p.exposed().to_vec(),
        datapath: api.datapath.status(),
        peer_filter_dropped: None,
        plugin: api.plugin.lock().map(|p| p.clone()).unwrap_or_default(),
        proxy: api.proxy.lock().map(|p| p.clone()).unwrap_or_default(),
        imports: Vec::new(),
    };
    drop(p);
    summary.imports = api.services.imports().await;
    // Read from nft (a process): off the runtime's thread.
    let filter = Arc::clone(&api.peer_filter);
    summary.peer_filter_dropped = tokio::task::spawn_blocking(move || filter.strangers_dropped())
        .await
        .ok()
        .flatten();
    json(summary)
}

async fn metrics(api: &Api) -> Handled {
    let mut text = ask(&api.inbox, |tx| Input::Query(Query::Metrics(tx))).await?;
    let n = api.plumbing.lock().await.attachments().len();
    let mut m = crate::metrics::Metrics::new();
    m.gauge(
        "weft_attachments",
        "Namespaces attached to the bridge.",
        n as u64,
    );
    api.policy.metrics(&mut m);
    text.push_str(&m.finish());
    Ok(Reply {
        status: 200,
        content_type: crate::metrics::CONTENT_TYPE,
        body: text.into_bytes(),
        allow: None,
    })
}

/// Resolves `host[:port]` (default: the router's port).
pub(crate) async fn resolve(peer: &str, default_port: u16) -> Result<SocketAddr, String> {
    let p: PeerAddr = peer.parse()?;
    let target = p.with_default_port(default_port);
    let mut addrs = tokio::net::lookup_host(&target)
        .await
        .map_err(|e| format!("cannot resolve peer {peer}: {e}"))?
        .collect::<Vec<_>>();
    // Prefer IPv4 like most underlays; any is correct.
    addrs.sort_by_key(|a| !a.is_ipv4());
    addrs
        .into_iter()
        .next()
        .ok_or_else(|| format!("cannot resolve peer {peer}: no addresses"))
}

async fn peers(api: &Api, path: &str, bytes: &[u8]) -> Handled {
    let b: PeersRequest = body(bytes)?;
    if b.peers.is_empty() || b.peers.len() > PEERS_PER_REQUEST_MAX {
        return Err(ApiError::BadRequest(format!(
            "give 1 to {PEERS_PER_REQUEST_MAX} peers"
        )));
    }
    let mut addrs = Vec::new();
    for p in &b.peers {
        addrs.push(resolve(p, api.port).await.map_err(ApiError::BadRequest)?);
    }
    let peers = addrs.iter().map(ToString::to_string).collect();
    let input = if path == "/connect" {
        Input::Connect(addrs)
    } else {
        Input::Forget(addrs)
    };
    api.inbox
        .send(input)
        .await
        .map_err(|_| ApiError::Stopping)?;
    json(PeersReply { peers })
}

async fn attach(api: &Api, b: NetnsRequest) -> Handled {
    let container = crate::ipam::container_id(&b.netns)?;
    json(attach_as(api, &container, b).await?)
}

/// `weft attach`, with `container` as the addresses' owner in IPAM (the namespace's for
/// `weft attach`, the container's for the Docker API proxy).
pub(crate) async fn attach_as(
    api: &Api,
    container: &str,
    b: NetnsRequest,
) -> Result<AttachReply, ApiError> {
    // IPAM first (claims, allocations; waits for the answers), then the veth.
    let given = crate::ipam::resolve(api, container, &b.addresses, &b.allocate).await?;
    let made = api
        .plumbing
        .lock()
        .await
        .attach(&b.netns, &given.addrs)
        .await;
    let mut a = match made {
        Ok(a) => a,
        Err(e) => {
            if !given.fresh.is_empty() {
                let _ = crate::ipam::free(api, container, Some(given.fresh)).await;
            }
            return Err(e.into());
        }
    };
    tracing::info!(
        "attached {} ({}) with {:?}",
        a.id,
        a.netns.display(),
        a.addresses
    );
    if let Some(name) = b.name {
        name_attachment(api, &mut a, name).await?;
    }
    if b.namespace.is_some() || !b.labels.is_empty() || !b.ports.is_empty() {
        let meta = crate::policy::pods::meta(b.namespace, &b.labels, &b.ports)
            .map_err(ApiError::BadRequest)?;
        api.plumbing
            .lock()
            .await
            .set_pod_meta(&a.id, meta.clone())?;
        a.pod = meta;
    }
    Ok(AttachReply {
        attachment: a,
        dns: dns_args(api),
        given: Some(given.addrs),
    })
}

/// Registers `name` for attachment `a`'s IPv4 addresses and records it (so a restarted
/// router registers it again): `attach --name`, and a pod's name through CNI.
pub(crate) async fn name_attachment(
    api: &Api,
    a: &mut crate::state::Attachment,
    name: String,
) -> Result<(), ApiError> {
    let addrs = ipv4s(&a.addresses);
    let container = Some(a.id.clone());
    let added = ask(&api.inbox, |answer| {
        Input::Dns(DnsRequest::Add {
            name,
            addrs,
            container,
            answer,
        })
    })
    .await??;
    api.plumbing
        .lock()
        .await
        .set_dns_name(&a.id, Some(added.name.clone()))?;
    a.dns_name = Some(added.name);
    Ok(())
}

async fn detach(api: &Api, b: NetnsRequest) -> Handled {
    let d = api
        .plumbing
        .lock()
        .await
        .detach(&b.netns, &b.addresses)
        .await?;
    let (container, addrs) = match &d {
        Detached::All(a) => (a.id.clone(), Vec::new()),
        Detached::Addresses(a) => (a.id.clone(), ipv4s(&b.addresses)),
    };
    // The addresses go back to IPAM once they are off the interface.
    let to_free = match &d {
        Detached::All(_) => None,
        Detached::Addresses(_) => Some(crate::ipam::ipv4s(&b.addresses)),
    };
    crate::ipam::free(api, &container, to_free)
        .await
        .map_err(|e| ApiError::IpamUnavailable(e.line()))?;
    // Only v4 addresses carry records; a v6-only detach removes none.
    if matches!(d, Detached::All(_)) || !addrs.is_empty() {
        let container = Some(container);
        ask(&api.inbox, |answer| {
            Input::Dns(DnsRequest::Remove {
                name: None,
                addrs,
                container,
                answer,
            })
        })
        .await??;
    }
    json(match d {
        Detached::All(attachment) => DetachReply {
            removed: Removed::All,
            attachment,
        },
        Detached::Addresses(attachment) => DetachReply {
            removed: Removed::Addresses,
            attachment,
        },
    })
}

/// The IPAM owner of the addresses `weft expose` allocates (freed by `weft hide`).
pub(crate) const EXPOSE_OWNER: &str = weft_core::dns::CONTAINER_HOST;

/// `weft expose`: the addresses given (as given), one allocated in each subnet of
/// `allocate` (one of the default subnet when neither is given), the name `fqdn` for
/// all of them (recorded, so a restarted router registers it again). On failure what
/// this call did is undone.
async fn expose(api: &Api, b: ExposeRequest) -> Handled {
    let mut explicit = b.addresses;
    explicit.extend(b.address);
    if explicit.len() + b.allocate.len() > crate::ipam::ADDRESSES_PER_ATTACH_MAX {
        return Err(ApiError::BadRequest(format!(
            "at most {} addresses per expose",
            crate::ipam::ADDRESSES_PER_ATTACH_MAX
        )));
    }
    let mut given = explicit.clone();
    let mut fresh = Vec::new();
    if explicit.is_empty() || !b.allocate.is_empty() {
        let g = crate::ipam::resolve(api, EXPOSE_OWNER, &[], &b.allocate).await?;
        fresh = g.fresh;
        for a in g.addrs {
            if !given.contains(&a) {
                given.push(a);
            }
        }
    }
    let before = api.plumbing.lock().await.exposed().to_vec();
    let done = expose_all(api, &given, b.fqdn).await;
    let Err(e) = done else {
        return json(ExposeReply {
            exposed: api.plumbing.lock().await.exposed().to_vec(),
            given,
        });
    };
    for a in given.iter().filter(|a| !before.contains(a)) {
        let _ = unexpose_address(api, *a).await;
    }
    if !fresh.is_empty() {
        let _ = crate::ipam::free(api, EXPOSE_OWNER, Some(fresh)).await;
    }
    Err(e)
}

/// Exposes one address of the default subnet, allocated in IPAM as `weft expose` does
/// (`weft service import` without an address on a host with none).
pub(crate) async fn expose_allocated(api: &Api) -> Result<Cidr, ApiError> {
    let g = crate::ipam::resolve(api, EXPOSE_OWNER, &[], &[]).await?;
    let Some(a) = g.addrs.first().copied() else {
        return Err(ApiError::Ipam("IPAM gave no address".into()));
    };
    if let Err(e) = expose_address(api, a, None).await {
        if !g.fresh.is_empty() {
            let _ = crate::ipam::free(api, EXPOSE_OWNER, Some(g.fresh)).await;
        }
        return Err(e);
    }
    Ok(a)
}

/// Exposes each of `given`, then names them `fqdn`.
async fn expose_all(api: &Api, given: &[Cidr], fqdn: Option<String>) -> Result<(), ApiError> {
    for a in given {
        expose_address(api, *a, None).await?;
    }
    let Some(name) = fqdn else {
        return Ok(());
    };
    let addrs = ipv4s(given);
    if addrs.is_empty() {
        return Err(ApiError::BadRequest(
            "-h FQDN names IPv4 addresses: give one (or none, to allocate one)".into(),
        ));
    }
    let added = name_host(api, name, addrs).await?;
    api.plumbing.lock().await.set_exposed_name(given, &added)?;
    Ok(())
}

/// Registers `name` for the host's `addrs` in weftDNS; the name as registered.
async fn name_host(
    api: &Api,
    name: String,
    addrs: Vec<std::net::Ipv4Addr>,
) -> Result<String, ApiError> {
    let added = ask(&api.inbox, |answer| {
        Input::Dns(DnsRequest::Add {
            name,
            addrs,
            container: Some(weft_core::dns::CONTAINER_HOST.to_owned()),
            answer,
        })
    })
    .await??;
    Ok(added.name)
}

/// Puts `address` on the bridge, has weftDNS listen there (IPv4) and registers `fqdn`
/// for it: `weft expose`, and the gateway of a Docker network.
pub(crate) async fn expose_address(
    api: &Api,
    address: Cidr,
    fqdn: Option<String>,
) -> Result<ExposeReply, ApiError> {
    let mut p = api.plumbing.lock().await;
    p.expose(address).await?;
    let exposed = ExposeReply {
        exposed: p.exposed().to_vec(),
        given: vec![address],
    };
    drop(p);
    if let (Some(server), std::net::IpAddr::V4(_)) = (&api.dns, address.addr) {
        let at = SocketAddr::new(address.addr, crate::dns::DNS_PORT);
        server.listen(at).await.map_err(ApiError::DnsListen)?;
    }
    if let Some(name) = fqdn {
        name_host(api, name, ipv4s(&[address])).await?;
    }
    Ok(exposed)
}

/// Takes one exposed `address` off the bridge, and weftDNS off it (a Docker network's
/// gateway when the network goes). Its name, if any, stays: `weft hide` removes names.
pub(crate) async fn unexpose_address(api: &Api, address: Cidr) -> Result<(), ApiError> {
    api.plumbing.lock().await.unexpose(address).await?;
    if let Some(server) = &api.dns {
        server.unlisten(address.addr);
    }
    Ok(())
}

async fn hide(api: &Api) -> Handled {
    let removed = api.plumbing.lock().await.hide().await?;
    // What `expose` allocated goes back to IPAM once it is off the bridge.
    crate::ipam::free(api, EXPOSE_OWNER, None).await?;
    if let Some(server) = &api.dns {
        for a in &removed {
            server.unlisten(a.addr);
        }
    }
    ask(&api.inbox, |answer| {
        Input::Dns(DnsRequest::Remove {
            name: None,
            addrs: Vec::new(),
            container: Some(weft_core::dns::CONTAINER_HOST.to_owned()),
            answer,
        })
    })
    .await??;
    json(HideReply { removed })
}

fn stop(api: &Api, b: StopRequest) -> Handled {
    api.reset.store(b.reset, Ordering::Relaxed);
    // notify_one stores a permit: the daemon stops even if it is not waiting yet.
    api.stop.notify_one();
    json(StopReply {
        stopping: true,
        reset: b.reset,
    })
}

fn ipv4s(addrs: &[Cidr]) -> Vec<std::net::Ipv4Addr> {
    addrs
        .iter()
        .filter_map(|c| match c.addr {
            std::net::IpAddr::V4(v4) => Some(v4),
            std::net::IpAddr::V6(_) => None,
        })
        .collect()
}

/// Registers again the names of adopted attachments (after a router restart the records
/// of the previous run are gone: only the owner can bring them back).
pub(crate) async fn restore_names(api: &Api) {
    let named: Vec<(String, String, Vec<Cidr>)> = api
        .plumbing
        .lock()
        .await
        .attachments()
        .iter()
        .filter_map(|a| Some((a.id.clone(), a.dns_name.clone()?, a.addresses.clone())))
        .collect();
    for (id, name, addrs) in named {
        let addrs = ipv4s(&addrs);
        let n = name.clone();
        let r = ask(&api.inbox, |answer| {
            Input::Dns(DnsRequest::Add {
                name: n,
                addrs,
                container: Some(id),
                answer,
            })
        })
        .await;
        if let Err(e) | Ok(Err(e)) = r.map(|r| r.map(drop)) {
            tracing::warn!("could not register {name} again: {e}");
        }
    }
    // The host's names (`expose -h`), one request per name.
    let mut hosts: Vec<(String, Vec<Cidr>)> = Vec::new();
    for n in api.plumbing.lock().await.exposed_names() {
        match hosts.iter_mut().find(|(f, _)| *f == n.fqdn) {
            Some((_, addrs)) => addrs.push(n.address),
            None => hosts.push((n.fqdn.clone(), vec![n.address])),
        }
    }
    for (name, addrs) in hosts {
        let addrs = ipv4s(&addrs);
        let n = name.clone();
        let r = ask(&api.inbox, |answer| {
            Input::Dns(DnsRequest::Add {
                name: n,
                addrs,
                container: Some(weft_core::dns::CONTAINER_HOST.to_owned()),
                answer,
            })
        })
        .await;
        if let Err(e) | Ok(Err(e)) = r.map(|r| r.map(drop)) {
            tracing::warn!("could not register {name} again: {e}");
        }
    }
}

/// Where containers should send their queries: `weft dns-args`, and part of `/attach`.
pub(crate) fn dns_args(api: &Api) -> DnsArgs {
    match &api.dns {
        Some(s) => DnsArgs {
            server: s.server_ip().map(|ip| ip.to_string()),
            domain: Some(format!("{}.", s.domain())),
        },
        None => DnsArgs::default(),
    }
}

/// Most addresses in one naming request.
pub(crate) const DNS_ADDRESSES_PER_REQUEST_MAX: usize = 256;

async fn dns(api: &Api, path: &str, b: DnsNamingRequest) -> Handled {
    if b.addresses.len() > DNS_ADDRESSES_PER_REQUEST_MAX {
        return Err(ApiError::BadRequest(format!(
            "at most {DNS_ADDRESSES_PER_REQUEST_MAX} addresses per request"
        )));
    }
    let need_name = || ApiError::BadRequest("give a NAME".into());
    let inbox = &api.inbox;
    match path {
        "/dns/add" => {
            if b.addresses.is_empty() {
                return Err(ApiError::BadRequest(
                    "dns-add needs at least one IPv4 address".into(),
                ));
            }
            let name = b.name.ok_or_else(need_name)?;
            json(
                ask(inbox, |answer| {
                    Input::Dns(DnsRequest::Add {
                        name,
                        addrs: b.addresses,
                        container: b.container,
                        answer,
                    })
                })
                .await??,
            )
        }
        "/dns/remove" => json(
            ask(inbox, |answer| {
                Input::Dns(DnsRequest::Remove {
                    name: b.name,
                    addrs: b.addresses,
                    container: b.container,
                    answer,
                })
            })
            .await??,
        ),
        _ => {
            let name = b.name.ok_or_else(need_name)?;
            json(
                ask(inbox, |answer| {
                    Input::Dns(DnsRequest::Lookup { name, answer })
                })
                .await??,
            )
        }
    }
}
