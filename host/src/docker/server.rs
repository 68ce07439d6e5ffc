//! The plugin socket: claimed at the router's start (never taken from a live process),
//! served with the control API's strict HTTP subset (`crate::http`), removed at stop.
//!
//! Until the router is up (the plugin is set in its [`Slot`]), every call but the
//! constant ones (`Plugin.Activate`, the capabilities, the address spaces) gets a quick
//! `503 {"Err": "... starting ..."}`. The socket is served on a thread of its own
//! ([`serve_on_thread`]): the router's start blocks its runtime at times (opening the
//! bridge, the datapath, the state files), and Docker must be answered meanwhile; the
//! calls themselves run on the router's runtime. Only root and the router's uid may call
//! (Docker is root); the caller's pid tells which namespace Docker runs in.

use super::backend::Backend;
use super::types::ErrReply;
use super::{BODY_LEN_MAX, CONTENT_TYPE, Ctx, Plugin, PluginError, netns_of, static_reply};
use crate::http::{self, HttpError};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::runtime::Handle;

/// How long Docker may take to send a request.
pub(crate) const REQUEST_READ_TIMEOUT_MS: u64 = 10_000;
/// Most plugin connections served at once (Docker calls one at a time per container;
/// many containers start at once); more wait in the listen backlog.
pub(crate) const CONNS_MAX: usize = 64;

/// Where the plugin appears once the router is up.
pub(crate) type Slot<B> = OnceLock<Arc<Plugin<B>>>;

/// The socket file, removed when dropped (at stop, also after SIGTERM or a failed start).
#[derive(Debug)]
pub(crate) struct SocketFile {
    path: PathBuf,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Claims and binds the plugin socket at `path`. `Err` is the one line saying why the
/// router runs without the plugin (another process serves the path, or it is no socket).
pub(crate) fn bind(path: &Path) -> Result<(UnixListener, SocketFile), String> {
    bind_as(path, "--plugin-socket", "the Docker plugin")
}

/// [`bind`] for the socket of `flag`, serving `what`.
pub(crate) fn bind_as(
    path: &Path,
    flag: &str,
    what: &str,
) -> Result<(UnixListener, SocketFile), String> {
    match crate::control::claim(path, flag) {
        Ok(()) => {}
        Err(crate::error::Error::AlreadyRunning(_)) => {
            return Err(format!(
                "another process serves {} (another weft router?); this router runs without {what}",
                path.display()
            ));
        }
        Err(e) => return Err(format!("{e}; this router runs without {what}")),
    }
    let listener = crate::control::bind(path).map_err(|e| e.to_string())?;
    Ok((
        listener,
        SocketFile {
            path: path.to_path_buf(),
        },
    ))
}

/// Serves the socket on a thread of its own until the process ends; the plugin's calls
/// run on the runtime this is called on.
pub(crate) fn serve_on_thread<B: Backend>(
    listener: UnixListener,
    slot: Arc<Slot<B>>,
    own_uid: u32,
) -> std::io::Result<()> {
    let main = Handle::current();
    let listener = listener.into_std()?;
    std::thread::Builder::new()
        .name("docker-plugin".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::warn!("Docker plugin: no runtime for the socket: {e}");
                    return;
                }
            };
            rt.block_on(async move {
                match UnixListener::from_std(listener) {
                    Ok(l) => serve(l, slot, own_uid, main).await,
                    Err(e) => tracing::warn!("Docker plugin socket: {e}"),
                }
            });
        })
        .map(drop)
}

/// Serves the socket until the process ends; the plugin's calls run on `main`.
pub(crate) async fn serve<B: Backend>(
    listener: UnixListener,
    slot: Arc<Slot<B>>,
    own_uid: u32,
    main: Handle,
) {
    let conns = Arc::new(tokio::sync::Semaphore::new(CONNS_MAX));
    loop {
        let Ok(permit) = Arc::clone(&conns).acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, _)) => {
                let (slot, main) = (Arc::clone(&slot), main.clone());
                tokio::spawn(async move {
                    handle_conn(stream, &slot, own_uid, &main).await;
                    drop(permit);
                });
            }
            Err(e) => {
                tracing::warn!("Docker plugin socket accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handle_conn<B: Backend>(
    mut stream: UnixStream,
    slot: &Slot<B>,
    own_uid: u32,
    main: &Handle,
) {
    let allowed = crate::control::caller_allowed(&stream, own_uid);
    let pid = stream.peer_cred().ok().and_then(|c| c.pid());
    let req = tokio::time::timeout(
        Duration::from_millis(REQUEST_READ_TIMEOUT_MS),
        http::read_request(&mut stream, BODY_LEN_MAX),
    )
    .await;
    let result = match req {
        Err(_) => Err(PluginError::BadRequest(
            "request not received in time".into(),
        )),
        Ok(Err(HttpError::Truncated)) => return, // Nobody left to answer.
        Ok(Err(HttpError::BodyTooLarge)) => Err(PluginError::TooLarge),
        Ok(Err(e)) => Err(PluginError::BadRequest(e.to_string())),
        Ok(Ok(req)) => match allowed {
            Err(refusal) => Err(PluginError::Forbidden(refusal)),
            Ok(()) => {
                let ctx = Ctx {
                    docker_netns: netns_of(pid),
                };
                answer(slot, &req, &ctx, main).await
            }
        },
    };
    let (status, body) = match result {
        Ok(body) => (200, body),
        Err(e) => {
            if e.status() >= 500 {
                tracing::warn!("Docker plugin: {}", e.line());
            } else {
                tracing::debug!("Docker plugin: {}", e.line());
            }
            let body = serde_json::to_vec(&ErrReply { err: e.line() }).unwrap_or_default();
            (e.status(), body)
        }
    };
    let bytes = http::write_response(status, CONTENT_TYPE, &body, None);
    let _ = stream.write_all(&bytes).await;
    let _ = stream.shutdown().await;
}

/// The reply body for `req`, or why not; the plugin's call runs on `main`.
pub(crate) async fn answer<B: Backend>(
    slot: &Slot<B>,
    req: &http::Request,
    ctx: &Ctx,
    main: &Handle,
) -> Result<Vec<u8>, PluginError> {
    if req.method != "POST" {
        return Err(PluginError::BadRequest(format!(
            "the plugin takes POST, not {}",
            req.method
        )));
    }
    let Some(method) = req.path.strip_prefix('/') else {
        return Err(super::no_such_method(&req.path));
    };
    if let Some(reply) = static_reply(method) {
        tracing::debug!("Docker plugin: {method}");
        return Ok(reply);
    }
    let Some(plugin) = slot.get() else {
        return Err(PluginError::Starting);
    };
    tracing::debug!(
        "Docker plugin: {method} {}",
        String::from_utf8_lossy(&req.body[..req.body.len().min(512)])
    );
    let (plugin, method, body, ctx) = (
        Arc::clone(plugin),
        method.to_owned(),
        req.body.clone(),
        ctx.clone(),
    );
    // Spawned, not awaited in place: a call Docker gave up on still finishes (each is
    // idempotent, and Docker repeats it).
    main.spawn(async move { plugin.call(&method, &body, &ctx).await })
        .await
        .map_err(|_| PluginError::Failed("the weft router is stopping".into()))?
}
