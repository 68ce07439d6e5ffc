//! `weft router`: checks the machine, sets up the bridge, and runs the router driver,
//! the datapath and the control API on one tokio runtime until stopped.

use crate::api::{self, Api};
use crate::cli::{GlobalArgs, RouterArgs};
use crate::clock::HostClock;
use crate::docker::backend::ApiBackend;
use crate::driver::{self, Driver, Info, Input};
use crate::error::{Error, Result};
use crate::messages::PluginStatus;
use crate::plumbing::Plumbing;
use crate::sleeve::Datapath;
use crate::state::StateDir;
use std::io::Read;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Mutex, Notify, mpsc};
use weft_core::crypto::Psk;
use weft_core::router::{Config, Router};
use weft_core::time::Instant;

/// Longest nickname the protocol carries, in bytes.
pub(crate) const NICKNAME_LEN_MAX: usize = 32;
/// Time given to the control connection that asked for `/stop` to get its reply.
const STOP_REPLY_GRACE_MS: u64 = 200;

/// Reads `n` bytes from the OS RNG.
pub(crate) fn os_random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(Error::io("read", "/dev/urandom"))?;
    Ok(b)
}

/// The host name, cut to what the protocol carries.
pub(crate) fn default_nickname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    truncate_nickname(raw.trim())
}

fn truncate_nickname(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if out.len() + c.len_utf8() > NICKNAME_LEN_MAX {
            break;
        }
        out.push(c);
    }
    if out.is_empty() { "weft".into() } else { out }
}

/// True when running as root (effective uid 0, read from `/proc/self/status`).
pub(crate) fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .is_some_and(|euid| euid == "0")
}

/// Runs the router in the foreground until `weft stop`, SIGINT or SIGTERM.
pub(crate) fn run(mut args: RouterArgs, global: &GlobalArgs) -> Result<()> {
    // Before anything else: a bad key file is the user's first error to see, and the raw
    // password is wiped once it is a key.
    let psk = crate::secret::psk(args.password.take(), args.key_file.as_deref())?;
    let ciphers = crate::cipher::offer(args.cipher, crate::cipher::cpu_has_fast_aes())?;
    if !is_root() {
        return Err(Error::NotRoot);
    }
    let state_dir = StateDir::new(&global.state_dir);
    state_dir.ensure()?;
    let name = state_dir.peer_name(args.name, os_random::<6>)?;
    crate::control::claim(&global.socket, "--socket")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Other(format!("start the tokio runtime: {e}")))?;
    let result = rt.block_on(run_async(&args, psk, ciphers, global, state_dir, name));
    let _ = std::fs::remove_file(&global.socket);
    // Dial and reader tasks may still be parked in the kernel; do not wait for them.
    rt.shutdown_timeout(Duration::from_millis(100));
    result
}

async fn run_async(
    args: &RouterArgs,
    psk: Option<Psk>,
    ciphers: weft_core::crypto::CipherSuites,
    global: &GlobalArgs,
    state_dir: StateDir,
    name: weft_core::peer::PeerName,
) -> Result<()> {
    let own_uid = crate::control::effective_uid()?;
    // First: Docker may call while the rest starts, and is told so at once.
    let (plugin_status, plugin_slot, plugin_socket) = start_plugin(args, own_uid);
    let proxy_status = Arc::new(std::sync::Mutex::new(crate::messages::ProxyStatus {
        socket: Some(args.proxy_socket.display().to_string()),
        ..Default::default()
    }));
    let listener = bind_tcp(args.port).await?;
    let mut plumbing = Plumbing::open(&args.bridge, args.mtu, state_dir.clone())?;
    plumbing.ensure_bridge().await?;
    // One clock for the router, the driver, the sleeve and the fast path.
    let clock = HostClock::start();
    let datapath = Arc::new(Datapath::open(
        clock,
        args.port,
        Path::new("/dev/net/tun"),
        name,
        psk.is_some(),
        args.crypto_threads
            .map_or_else(crate::cli::crypto_threads_default, usize::from),
        args.queues
            .map_or_else(crate::sleeve::queues_default, usize::from),
        args.mtu,
    )?);
    plumbing.add_port(crate::sleeve::TAP_NAME).await?;
    datapath.spawn_ticker();
    let adopted = plumbing.adopt().await?;
    crate::firewall::allow_bridge(&args.bridge);
    let peer_filter = Arc::new(crate::firewall::PeerFilter::start(args.port));

    let mut config = Config::new(name, args.port);
    config.wall_clock_origin_ms = clock.unix_origin_ms();
    config.nickname = args
        .nickname
        .as_deref()
        .map(truncate_nickname)
        .unwrap_or_else(default_nickname);
    let encrypted = psk.is_some();
    config.psk = psk;
    config.ciphers = ciphers;
    // Hole punching between peers behind NAT that share a neighbour (issue 24); its
    // datagrams go from the sleeve's port.
    config.punch = weft_core::punch::PunchConfig {
        enabled: true,
        ..weft_core::punch::PunchConfig::off()
    };
    config.ipam = crate::ipam::config(
        args.ipalloc_range,
        args.ipalloc_default_subnet,
        args.ipalloc_init,
        args.ipalloc_reclaim_after,
        args.ipalloc_timeout,
        args.peers.len(),
    )?;
    let (ipam_range, ipam_default_subnet) = (config.ipam.range, config.ipam.default_subnet);
    let seed = u64::from_le_bytes(os_random::<8>()?);
    // Two sources: `seed` for what is public (uid, jitter), the OS-seeded key stream for
    // every handshake secret.
    let keys = Box::new(crate::secret::key_rng()?);
    let mut router = Router::new(config, seed, keys, Instant::ZERO);
    let ipam_restored = crate::ipam::restore(&mut router, &state_dir)?;

    let mut targets = Vec::new();
    for p in &args.peers {
        targets.push(
            api::resolve(&p.to_string(), args.port)
                .await
                .map_err(Error::Other)?,
        );
    }

    let (inbox_tx, inbox_rx) = mpsc::channel(driver::INBOX_LEN_MAX);
    let info = Info {
        port: args.port,
        encrypted,
        fastdp: false,
    };
    let driver = Driver::new(router, clock, inbox_tx.clone(), Arc::clone(&datapath), info);
    let disabled = if args.no_fastdp {
        Some("fast path off (--no-fastdp)")
    } else if encrypted {
        Some("encrypted (the kernel path cannot encrypt here)")
    } else {
        None
    };
    let fastdp = crate::fastdp::start(
        name,
        args.port,
        &args.bridge,
        disabled,
        Arc::clone(&datapath),
        state_dir.clone(),
    )
    .await;
    let mut driver = driver;
    driver.set_fastdp(Arc::new(fastdp));
    driver.set_peer_filter(Arc::clone(&peer_filter));
    driver.set_ipam_persist(crate::ipam::state_path(&state_dir), ipam_restored);
    let live: Vec<String> = plumbing
        .attachments()
        .iter()
        .map(|a| a.id.clone())
        .collect();
    driver.ipam_forget_gone("ns-", &live);
    driver.ipam_forget_gone(crate::plumbing::CNI_ID_PREFIX, &live);
    let mut plugin_store =
        crate::docker::state::Store::load(&state_dir.file(crate::docker::state::STATE_FILE))?;
    let mut plugin_state = plugin_store.get().clone();
    let plugin_owners = crate::docker::reconcile(&mut plugin_state, &driver.ipam_allocations());
    plugin_store.commit(plugin_state)?;
    driver.ipam_forget_gone(crate::docker::OWNER_PREFIX, &plugin_owners);
    let proxy_state_path = state_dir.file(crate::docker::proxy::STATE_FILE);
    let proxy_state = crate::docker::proxy::ProxyState::load(&proxy_state_path)?;
    driver.ipam_forget_gone(crate::docker::proxy::OWNER_PREFIX, &proxy_state.owners());
    let services = crate::services::serve::Services::load(&state_dir, &args.bridge)?;
    let dns = start_dns(args, plumbing.exposed()).await?;
    if let Some(server) = &dns {
        driver.set_dns(Arc::clone(server));
    }
    let policy = crate::policy::enforce::Enforcer::new(
        state_dir.file(crate::policy::STATE_FILE),
        args.isolate_subnets,
    );
    let (policy_tx, policy_rx) = tokio::sync::watch::channel(None);
    driver.set_policy(policy_tx, policy.load_shared());
    policy.start_nflog();
    tokio::spawn(Arc::clone(&policy).run(policy_rx));
    let driver_task = tokio::spawn(driver.run(inbox_rx));
    if !targets.is_empty() {
        let _ = inbox_tx.send(Input::Connect(targets)).await;
    }
    tokio::spawn(driver::accept_loop(listener, inbox_tx.clone()));

    let unix = crate::control::bind(&global.socket)?;
    let api = Arc::new(Api {
        inbox: inbox_tx.clone(),
        plumbing: Mutex::new(plumbing),
        datapath,
        port: args.port,
        stop: Notify::new(),
        reset: AtomicBool::new(false),
        dns,
        peer_filter: Arc::clone(&peer_filter),
        plugin: Arc::clone(&plugin_status),
        proxy: Arc::clone(&proxy_status),
        services,
        policy,
        docker_pods: tokio::sync::watch::Sender::new(Default::default()),
    });
    tokio::spawn(api::serve(unix, Arc::clone(&api), own_uid));
    api::restore_names(&api).await;
    api.services.start().await;
    tokio::spawn(crate::services::serve::follow_names(Arc::clone(&api)));
    tokio::spawn(crate::policy::pods::follow(Arc::clone(&api)));
    tokio::spawn(crate::cni::server::drain_spool(
        Arc::clone(&api),
        crate::cni::spool_dir(&global.socket),
    ));
    let plugin = crate::docker::Plugin::new(
        ApiBackend::new(Arc::clone(&api)),
        plugin_store,
        ipam_range,
        ipam_default_subnet,
        plugin_status,
    );
    let serving = plugin.serving();
    let plugin = Arc::new(plugin);
    // Before Docker can call: what may have been deleted while the router was down.
    let known = plugin.endpoints_by_network().await;
    // Only fails if already set, which nothing else does.
    let _ = plugin_slot.set(Arc::clone(&plugin));
    if serving {
        plugin.apply_outbound_now().await;
        plugin.restore_names().await;
        let (gone, docker) = (Arc::clone(&plugin), args.docker_socket.clone());
        tokio::spawn(async move { gone.forget_what_docker_deleted(&docker, known).await });
        let docker = args.docker_socket.clone();
        tokio::spawn(crate::docker::engine::follow_connects(
            docker.clone(),
            move |network, container| {
                let (plugin, docker) = (Arc::clone(&plugin), docker.clone());
                async move { plugin.on_connect(&docker, &network, &container).await }
            },
        ));
    }
    if let (true, Ok(name)) = (serving, crate::docker::driver_name(&args.plugin_socket)) {
        // Docker calls the plugin back while it makes the network: not awaited here.
        let docker = args.docker_socket.clone();
        tokio::spawn(async move {
            use crate::docker::engine::{Ensured, ensure_network};
            match ensure_network(&docker, &name, ipam_default_subnet).await {
                Ok(Ensured::Created) => {
                    tracing::info!(
                        "Docker network {name} created on {ipam_default_subnet}: docker run --network {name} ..."
                    )
                }
                Ok(Ensured::Exists) => tracing::info!("Docker network {name} is there"),
                Err(e) => tracing::info!("no Docker network {name} made: {e}"),
            }
        });
    }
    let proxy_socket = start_proxy(
        args,
        &api,
        state_dir.file(crate::docker::proxy::WAIT_FILE),
        proxy_state_path,
        proxy_state,
        Arc::clone(&proxy_status),
    )
    .await;
    tracing::info!(
        "weft router {name} listening on port {} (socket {}, bridge {}, {adopted} attachments adopted{})",
        args.port,
        global.socket.display(),
        args.bridge,
        if args.no_fastdp { ", fastdp off" } else { "" }
    );
    if encrypted {
        tracing::info!(
            "encryption on: peers must prove the same password or key (SPAKE2, never sent; \
             a recorded handshake cannot be used to guess it); control and sleeve traffic sealed; \
             sleeve ciphers offered: {ciphers}"
        );
    } else {
        tracing::warn!("{}", crate::secret::UNENCRYPTED_WARNING);
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::Other(format!("install SIGTERM handler: {e}")))?;
    tokio::select! {
        () = api.stop.notified() => {
            tracing::info!("stop requested");
            tokio::time::sleep(Duration::from_millis(STOP_REPLY_GRACE_MS)).await;
        }
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted"),
        _ = term.recv() => tracing::info!("terminated"),
    }
    drop(proxy_socket);
    // Docker finds no plugin from here on (the file goes with its guard).
    if plugin_socket.is_some() {
        drop(plugin_socket);
        // The networks' outside access goes with the router.
        let bridge = args.bridge.clone();
        let _ = tokio::task::spawn_blocking(move || {
            crate::firewall::remove_docker_outbound(&bridge);
        })
        .await;
    }
    let _ = inbox_tx.send(Input::Stop).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), driver_task).await;
    api.datapath.stop();
    peer_filter.remove();
    let _ = tokio::task::spawn_blocking({
        let api = Arc::clone(&api);
        move || api.services.remove()
    })
    .await;
    if let Some(server) = &api.dns {
        server.stop();
    }
    let _ = std::fs::remove_file(&global.socket);
    if api.reset.load(Ordering::Relaxed) {
        // The policy table outlives a stop (the pods stay, and stay isolated), not a reset.
        api.policy.remove();
        api.plumbing.lock().await.reset().await?;
        tracing::info!("reset: attachments, bridge and state removed");
    }
    Ok(())
}

/// Claims the Docker plugin socket (unless `--no-plugin`) and serves it; the plugin
/// itself is put in the slot once the router is up. Where another process serves the
/// path, or it is no socket, the router says so and runs without the plugin.
fn start_plugin(
    args: &RouterArgs,
    own_uid: u32,
) -> (
    Arc<std::sync::Mutex<PluginStatus>>,
    Arc<crate::docker::server::Slot<ApiBackend>>,
    Option<crate::docker::server::SocketFile>,
) {
    let slot = Arc::new(std::sync::OnceLock::new());
    let socket = args.plugin_socket.display().to_string();
    let mut status = PluginStatus {
        socket: Some(socket.clone()),
        driver: crate::docker::driver_name(&args.plugin_socket).ok(),
        ..PluginStatus::default()
    };
    let file = if args.no_plugin {
        status.off_reason = Some("--no-plugin".to_owned());
        None
    } else {
        match crate::docker::server::bind(&args.plugin_socket) {
            Ok((listener, file)) => {
                match crate::docker::server::serve_on_thread(listener, Arc::clone(&slot), own_uid) {
                    Ok(()) => {
                        tracing::info!(
                            "Docker plugin: network and IPAM driver {} on {socket}",
                            status.driver.as_deref().unwrap_or("-")
                        );
                        status.serving = true;
                        Some(file)
                    }
                    Err(e) => {
                        let reason = format!(
                            "cannot serve {socket} ({e}); this router runs without the Docker plugin"
                        );
                        tracing::warn!("Docker plugin: {reason}");
                        status.off_reason = Some(reason);
                        None
                    }
                }
            }
            Err(reason) => {
                tracing::warn!("Docker plugin: {reason}");
                status.off_reason = Some(reason);
                None
            }
        }
    };
    (Arc::new(std::sync::Mutex::new(status)), slot, file)
}

/// Serves the Docker API proxy on `--proxy-socket` unless `--no-proxy`, Docker does not
/// answer on `--docker-socket`, or another process serves the path (then `weft status`
/// says why); plugs the proxy's running containers in again and follows Docker's events.
async fn start_proxy(
    args: &RouterArgs,
    api: &Arc<Api>,
    wait_path: std::path::PathBuf,
    state_path: std::path::PathBuf,
    state: crate::docker::proxy::ProxyState,
    status: Arc<std::sync::Mutex<crate::messages::ProxyStatus>>,
) -> Option<crate::docker::server::SocketFile> {
    let off = |reason: String| {
        if let Ok(mut s) = status.lock() {
            s.off_reason = Some(reason);
        }
        None
    };
    if args.no_proxy {
        return off("--no-proxy".to_owned());
    }
    let socket = &args.proxy_socket;
    if let Err(e) = crate::docker::engine::call(&args.docker_socket, "GET", "/_ping", None).await {
        tracing::info!("Docker proxy off: {e}");
        return off(e);
    }
    let (listener, file) =
        match crate::docker::server::bind_as(socket, "--proxy-socket", "the Docker API proxy") {
            Ok(l) => l,
            Err(reason) => {
                tracing::warn!("Docker proxy: {reason}");
                return off(reason);
            }
        };
    if let Ok(mut s) = status.lock() {
        s.serving = true;
    }
    let proxy = Arc::new(crate::docker::proxy::Proxy::new(
        Arc::clone(api),
        args.docker_socket.clone(),
        &wait_path,
        state_path,
        state,
        status,
    ));
    tracing::info!(
        "Docker proxy on {} in front of {}: eval $(weft env) points the Docker CLI at it",
        socket.display(),
        args.docker_socket.display()
    );
    tokio::spawn(Arc::clone(&proxy).serve(listener));
    let p = Arc::clone(&proxy);
    tokio::spawn(async move {
        p.readopt().await;
        p.follow_events().await;
    });
    Some(file)
}

/// Starts weftDNS (unless `--no-dns`) on the exposed IPv4 addresses and
/// `--dns-listen-address`es, forwarding to `--dns-upstream` or resolv.conf's servers.
async fn start_dns(
    args: &RouterArgs,
    exposed: &[crate::cli::Cidr],
) -> Result<Option<Arc<crate::dns::DnsServer>>> {
    use crate::dns::{DNS_PORT, DnsServer, canonical_domain, upstream};
    if args.no_dns {
        return Ok(None);
    }
    let domain = canonical_domain(&args.dns_domain).map_err(Error::Other)?;
    let upstreams = if args.dns_upstream.is_empty() {
        let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        upstream::parse_resolv_conf(&text)
    } else {
        args.dns_upstream.clone()
    };
    if upstreams.is_empty() {
        tracing::warn!(
            "DNS: no upstream servers (none in /etc/resolv.conf, no --dns-upstream): names outside {domain} get SERVFAIL"
        );
    }
    let server = DnsServer::new(domain, upstreams);
    for a in exposed {
        if a.addr.is_ipv4() {
            server
                .listen(SocketAddr::new(a.addr, DNS_PORT))
                .await
                .map_err(Error::Other)?;
        }
    }
    for a in &args.dns_listen_address {
        server.listen(*a).await.map_err(Error::Other)?;
    }
    Ok(Some(server))
}

/// How long a router waits for its port to come free: one that starts right after a
/// killed one may find the dead one's sockets not closed yet (its processes still exit).
pub(crate) const PORT_WAIT_MS: u64 = 3_000;

async fn bind_tcp(port: u16) -> Result<TcpListener> {
    let started = std::time::Instant::now();
    loop {
        match bind_tcp_once(port).await {
            Err(Error::PortInUse { .. })
                if started.elapsed() < Duration::from_millis(PORT_WAIT_MS) =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            r => return r,
        }
    }
}

async fn bind_tcp_once(port: u16) -> Result<TcpListener> {
    let in_use = |e: &std::io::Error| e.kind() == std::io::ErrorKind::AddrInUse;
    match TcpListener::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))).await {
        Ok(l) => Ok(l),
        Err(e) if in_use(&e) => Err(Error::PortInUse { port, proto: "tcp" }),
        Err(_) => TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port)))
            .await
            .map_err(|e| {
                if in_use(&e) {
                    Error::PortInUse { port, proto: "tcp" }
                } else {
                    Error::Other(format!("listen on TCP port {port}: {e}"))
                }
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nicknames_are_cut_on_char_boundaries() {
        assert_eq!(truncate_nickname(""), "weft");
        assert_eq!(truncate_nickname("host-a"), "host-a");
        let long = "é".repeat(40);
        let cut = truncate_nickname(&long);
        assert!(cut.len() <= NICKNAME_LEN_MAX);
        assert_eq!(cut.chars().count(), 16);
    }
}
