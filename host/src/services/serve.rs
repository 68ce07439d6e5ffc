//! The router's half of `weft service`: the control API handlers (`/service/export`,
//! `/service/import`, `/service/rm`, `GET /service`), the table of services kept in the
//! state dir and applied to nftables, and the task that resolves weftDNS targets again.
//! The client half (`cmd`) sends the parsed specs and prints the answers.

use super::{
    AddrPortProto, HostPort, Kind, On, Persisted, PortProto, Proto, RESOLVE_INTERVAL_MS,
    SERVICES_MAX, STATE_FILE, STATE_VERSION, Service, batch, table_name,
};
use crate::api::Api;
use crate::client::Client;
use crate::driver::{DnsRequest, Input, ask};
use crate::error::{Error, Result};
use crate::messages::ApiError;
use crate::state::StateDir;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// Largest `services.json` read, in bytes.
const STATE_FILE_LEN_MAX: u64 = 4 * 1024 * 1024;

/// `POST /service/export`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExportRequest {
    pub(crate) port: u16,
    #[serde(default)]
    pub(crate) proto: Proto,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) on: Option<On>,
    pub(crate) target: String,
    pub(crate) target_port: u16,
}

/// `POST /service/import`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ImportRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) addr: Option<Ipv4Addr>,
    pub(crate) port: u16,
    #[serde(default)]
    pub(crate) proto: Proto,
    pub(crate) target: String,
    pub(crate) target_port: u16,
}

/// `POST /service/rm`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RmRequest {
    pub(crate) id: String,
}

/// The services of one router, and where they are kept.
pub(crate) struct Services {
    path: PathBuf,
    table: String,
    bridge: String,
    state: Mutex<Persisted>,
}

impl Services {
    /// Reads the services of `dir` (none on a first start).
    pub(crate) fn load(dir: &StateDir, bridge: &str) -> Result<Self> {
        let path = dir.file(STATE_FILE);
        let state = match crate::state::read_bounded(&path, STATE_FILE_LEN_MAX)? {
            None => Persisted {
                version: STATE_VERSION,
                ..Persisted::default()
            },
            Some(bytes) => {
                let s: Persisted = serde_json::from_slice(&bytes).map_err(|e| {
                    Error::Other(format!(
                        "{}: not a weft services file ({e}); move it away to start with no services",
                        path.display()
                    ))
                })?;
                if s.version != STATE_VERSION {
                    return Err(Error::Other(format!(
                        "{}: version {} (this weft reads {STATE_VERSION}); move it away to start with no services",
                        path.display(),
                        s.version
                    )));
                }
                s
            }
        };
        Ok(Self {
            path,
            table: table_name(bridge),
            bridge: bridge.to_owned(),
            state: Mutex::new(state),
        })
    }

    /// Applies the services at start (a failure is logged: the router runs without them).
    pub(crate) async fn start(&self) {
        let s = self.state.lock().await;
        if s.services.is_empty() {
            // A table a killed router left goes.
            let _ = self.apply(&s).await;
            return;
        }
        match self.apply(&s).await {
            Ok(()) => tracing::info!(
                "{} services applied (nftables table ip {})",
                s.services.len(),
                self.table
            ),
            Err(e) => tracing::warn!("services not applied: {e}"),
        }
    }

    /// Deletes the table (at stop and reset; the file stays for the next start).
    pub(crate) fn remove(&self) {
        remove_table(&self.bridge);
    }

    /// The imports this router carries, one line each (`weft status`).
    pub(crate) async fn imports(&self) -> Vec<String> {
        let s = self.state.lock().await;
        s.services
            .iter()
            .filter(|s| s.kind == Kind::Import)
            .map(Service::line)
            .collect()
    }

    async fn apply(&self, s: &Persisted) -> std::result::Result<(), String> {
        let text = batch(&self.table, &self.bridge, &s.services);
        let forward = !s.services.is_empty();
        let bridge = self.bridge.clone();
        tokio::task::spawn_blocking(move || {
            crate::firewall::run_nft(&text)?;
            if forward {
                crate::firewall::allow_services(&bridge);
                // NAT'd service paths are forwarded by the kernel.
                let fwd = "/proc/sys/net/ipv4/ip_forward";
                if std::fs::read_to_string(fwd).unwrap_or_default().trim() != "1" {
                    std::fs::write(fwd, "1")
                        .map_err(|e| format!("turn on IPv4 forwarding ({fwd}): {e}"))?;
                    tracing::info!("IPv4 forwarding on, for the services");
                }
            } else {
                crate::firewall::disallow_services(&bridge);
            }
            Ok(())
        })
        .await
        .map_err(|e| format!("nft task: {e}"))?
    }

    /// Makes `next` the services: applied, then saved; on failure nothing changes.
    async fn commit(
        &self,
        cur: &mut Persisted,
        next: Persisted,
    ) -> std::result::Result<(), ApiError> {
        self.apply(&next)
            .await
            .map_err(|e| ApiError::Host(Error::Other(format!("services not applied: {e}"))))?;
        let bytes = serde_json::to_vec_pretty(&next).unwrap_or_default();
        if let Err(e) = crate::state::write_atomic(&self.path, &bytes) {
            let _ = self.apply(cur).await;
            return Err(e.into());
        }
        let stale = stale_udp(cur, &next);
        *cur = next;
        if !stale.is_empty() {
            let _ = tokio::task::spawn_blocking(move || forget_flows(&stale)).await;
        }
        Ok(())
    }

    /// Adds `svc` (replacing one that takes the same connections, which keeps its id).
    async fn put(&self, mut svc: Service) -> std::result::Result<Service, ApiError> {
        let mut cur = self.state.lock().await;
        let mut next = cur.clone();
        match next.services.iter_mut().find(|s| s.same_entry(&svc)) {
            Some(old) => {
                svc.id.clone_from(&old.id);
                *old = svc.clone();
            }
            None => {
                if next.services.len() >= SERVICES_MAX {
                    return Err(ApiError::Conflict(format!(
                        "at most {SERVICES_MAX} services per router: `weft service rm` one first"
                    )));
                }
                next.next_id += 1;
                let prefix = match svc.kind {
                    Kind::Export => "exp",
                    Kind::Import => "imp",
                };
                svc.id = format!("{prefix}-{}", next.next_id);
                next.services.push(svc.clone());
            }
        }
        self.commit(&mut cur, next).await?;
        Ok(svc)
    }

    async fn rm(&self, id: &str) -> std::result::Result<Service, ApiError> {
        let mut cur = self.state.lock().await;
        let mut next = cur.clone();
        let Some(i) = next.services.iter().position(|s| s.id == id) else {
            return Err(ApiError::BadRequest(format!(
                "no service {id:?}: `weft service ls` lists them"
            )));
        };
        let gone = next.services.remove(i);
        self.commit(&mut cur, next).await?;
        Ok(gone)
    }

    /// The services, in the order they were made.
    pub(crate) async fn list(&self) -> Vec<Service> {
        self.state.lock().await.services.clone()
    }
}

/// The UDP destinations (`address`, port) that `cur` sent to and `next` no longer does
/// for the same service: a re-pointed, moved or removed one. UDP has no end, so the
/// kernel would keep sending a client's datagrams where its conntrack entry says.
fn stale_udp(cur: &Persisted, next: &Persisted) -> Vec<(Ipv4Addr, u16)> {
    cur.services
        .iter()
        .filter(|s| s.proto == Proto::Udp)
        .filter_map(|old| {
            let ip = old.resolved?;
            let now = next.services.iter().find(|n| n.id == old.id);
            let same =
                now.is_some_and(|n| n.resolved == old.resolved && n.target_port == old.target_port);
            (!same).then_some((ip, old.target_port))
        })
        .collect()
}

/// Deletes the conntrack entries of UDP flows answered from `stale` (best effort: where
/// the `conntrack` tool is missing, such flows move once they idle out).
fn forget_flows(stale: &[(Ipv4Addr, u16)]) {
    for (ip, port) in stale {
        let (ip, port) = (ip.to_string(), port.to_string());
        let done = std::process::Command::new("conntrack")
            .args([
                "-D",
                "-p",
                "udp",
                "--reply-src",
                &ip,
                "--reply-port-src",
                &port,
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        if let Err(e) = done {
            tracing::debug!("conntrack: {e}; UDP flows to {ip}:{port} move once they idle out");
        }
    }
}

/// Deletes the services' table of the router on `bridge` (also where no router runs:
/// `weft reset`).
pub(crate) fn remove_table(bridge: &str) {
    let table = table_name(bridge);
    if let Err(e) =
        crate::firewall::run_nft(&format!("add table ip {table}\ndelete table ip {table}\n"))
    {
        tracing::debug!("could not remove nftables table ip {table}: {e}");
    }
    crate::firewall::disallow_services(bridge);
}

/// What `name` resolves to in weftDNS (the lowest address, so every router picks the
/// same); `None` when it has no records.
async fn dns_resolve(api: &Api, name: &str) -> std::result::Result<Option<Ipv4Addr>, ApiError> {
    let name = name.to_owned();
    let got = ask(&api.inbox, |answer| {
        Input::Dns(DnsRequest::Lookup { name, answer })
    })
    .await??;
    Ok(got.addresses.into_iter().min())
}

fn v4_exposed(api_exposed: &[crate::cli::Cidr]) -> Vec<(Ipv4Addr, u8)> {
    api_exposed
        .iter()
        .filter_map(|c| match c.addr {
            IpAddr::V4(a) => Some((a, c.prefix_len)),
            IpAddr::V6(_) => None,
        })
        .collect()
}

fn in_subnet(ip: Ipv4Addr, (net, len): (Ipv4Addr, u8)) -> bool {
    let mask = if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    };
    ip.to_bits() & mask == net.to_bits() & mask
}

/// Whether `a` is an address of this host (in the router's namespace).
fn owned(a: Ipv4Addr) -> bool {
    std::net::UdpSocket::bind((a, 0)).is_ok()
}

/// Whether interface `name` exists (in the namespace whose sysfs is mounted: the
/// router's, as `ip netns exec` mounts it).
fn iface_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

fn check_port(port: u16, what: &str) -> std::result::Result<(), ApiError> {
    if port == 0 {
        return Err(ApiError::BadRequest(format!(
            "bad {what} 0: a port is 1 to 65535"
        )));
    }
    Ok(())
}

/// `POST /service/export`.
pub(crate) async fn export(api: &Api, b: ExportRequest) -> std::result::Result<Service, ApiError> {
    check_port(b.port, "port")?;
    check_port(b.target_port, "target port")?;
    let to: HostPort = format!("{}:{}", b.target, b.target_port)
        .parse()
        .map_err(ApiError::BadRequest)?;
    let router_ports = [
        (Proto::Tcp, api.port),
        (Proto::Udp, api.port),
        (Proto::Udp, api.port.wrapping_add(1)),
    ];
    if router_ports.contains(&(b.proto, b.port)) {
        return Err(ApiError::BadRequest(format!(
            "port {}/{} is the router's own: export another",
            b.port, b.proto
        )));
    }
    match &b.on {
        Some(On::Addr(a)) if !owned(*a) => {
            return Err(ApiError::BadRequest(format!(
                "--on {a}: not an address of this host"
            )));
        }
        Some(On::Iface(i)) if !iface_exists(i) => {
            return Err(ApiError::BadRequest(format!(
                "--on {i}: no such interface on this host"
            )));
        }
        _ => {}
    }
    let resolved = match to.host.parse::<Ipv4Addr>() {
        Ok(ip) => ip,
        Err(_) => dns_resolve(api, &to.host).await?.ok_or_else(|| {
            ApiError::BadRequest(format!(
                "target {} does not resolve in weftDNS (`weft dns-lookup {}`)",
                to.host, to.host
            ))
        })?,
    };
    let exposed = v4_exposed(api.plumbing.lock().await.exposed());
    if !exposed.iter().any(|n| in_subnet(resolved, *n)) {
        return Err(ApiError::BadRequest(format!(
            "target {resolved}: this host has no address on its overlay subnet; `weft expose` one first"
        )));
    }
    api.services
        .put(Service {
            id: String::new(),
            kind: Kind::Export,
            proto: b.proto,
            port: b.port,
            on: b.on,
            addr: None,
            target: to.host,
            target_port: to.port,
            resolved: Some(resolved),
        })
        .await
}

/// `POST /service/import`.
pub(crate) async fn import(api: &Api, b: ImportRequest) -> std::result::Result<Service, ApiError> {
    check_port(b.port, "port")?;
    check_port(b.target_port, "target port")?;
    let to: HostPort = format!("{}:{}", b.target, b.target_port)
        .parse()
        .map_err(ApiError::BadRequest)?;
    let exposed = v4_exposed(api.plumbing.lock().await.exposed());
    let addr = match b.addr {
        Some(a) if exposed.iter().any(|(e, _)| *e == a) => a,
        Some(a) => {
            return Err(ApiError::BadRequest(format!(
                "{a} is not an exposed address of this host (`weft status` lists them; `weft expose` gives one)"
            )));
        }
        None => match exposed.first() {
            Some((a, _)) => *a,
            None => match crate::api::expose_allocated(api).await?.addr {
                IpAddr::V4(a) => a,
                IpAddr::V6(_) => {
                    return Err(ApiError::BadRequest("no IPv4 address to import on".into()));
                }
            },
        },
    };
    let resolved = match to.host.parse::<Ipv4Addr>() {
        Ok(ip) => ip,
        Err(_) => {
            let found = tokio::net::lookup_host((to.host.as_str(), to.port))
                .await
                .ok()
                .and_then(|mut it| {
                    it.find_map(|s| match s.ip() {
                        IpAddr::V4(a) => Some(a),
                        IpAddr::V6(_) => None,
                    })
                });
            found.ok_or_else(|| {
                ApiError::BadRequest(format!("target {} does not resolve", to.host))
            })?
        }
    };
    api.services
        .put(Service {
            id: String::new(),
            kind: Kind::Import,
            proto: b.proto,
            port: b.port,
            on: None,
            addr: Some(addr),
            target: to.host,
            target_port: to.port,
            resolved: Some(resolved),
        })
        .await
}

/// `POST /service/rm`.
pub(crate) async fn rm(api: &Api, b: RmRequest) -> std::result::Result<Service, ApiError> {
    api.services.rm(&b.id).await
}

/// Resolves the exports' weftDNS targets every [`RESOLVE_INTERVAL_MS`] and applies the
/// table again when one points elsewhere (a container moved or was replaced).
pub(crate) async fn follow_names(api: Arc<Api>) {
    loop {
        tokio::time::sleep(Duration::from_millis(RESOLVE_INTERVAL_MS)).await;
        let svcs = &api.services;
        let named: Vec<(String, String)> = svcs
            .list()
            .await
            .into_iter()
            .filter(|s| s.kind == Kind::Export && s.target.parse::<Ipv4Addr>().is_err())
            .map(|s| (s.id, s.target))
            .collect();
        if named.is_empty() {
            continue;
        }
        let mut now = Vec::new();
        for (id, name) in named {
            match dns_resolve(&api, &name).await {
                Ok(r) => now.push((id, r)),
                Err(ApiError::Stopping) => return,
                Err(_) => {}
            }
        }
        let mut cur = svcs.state.lock().await;
        let mut next = cur.clone();
        let mut changed = false;
        for (id, r) in now {
            if let Some(s) = next.services.iter_mut().find(|s| s.id == id) {
                if s.resolved != r {
                    tracing::info!("service {id}: {} now resolves to {r:?}", s.target);
                    s.resolved = r;
                    changed = true;
                }
            }
        }
        if changed {
            if let Err(e) = svcs.commit(&mut cur, next).await {
                tracing::warn!("services not applied again: {}", e.line());
            }
        }
    }
}

/// `weft service ...` on the client side.
pub(crate) fn cmd(client: &Client, c: crate::cli::ServiceCommand) -> Result<()> {
    use crate::cli::ServiceCommand as S;
    match c {
        S::Export { spec, to, on } => {
            let PortProto { port, proto } = spec;
            let body = ExportRequest {
                port,
                proto,
                on,
                target: to.host,
                target_port: to.port,
            };
            let s: Service = client.post("/service/export", &body)?;
            println!("{}", s.id);
        }
        S::Import { spec, to } => {
            let AddrPortProto { addr, port, proto } = spec;
            let body = ImportRequest {
                addr,
                port,
                proto,
                target: to.host,
                target_port: to.port,
            };
            let s: Service = client.post("/service/import", &body)?;
            let at = s.addr.map(|a| a.to_string()).unwrap_or_default();
            println!("{} {at}:{}", s.id, s.port);
        }
        S::Ls { json } => {
            let list: Vec<Service> = client.get("/service")?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&list).unwrap_or_default()
                );
            } else {
                for s in &list {
                    let kind = match s.kind {
                        Kind::Export => "export",
                        Kind::Import => "import",
                    };
                    println!("{:<8} {kind:<6} {}", s.id, s.line());
                }
            }
        }
        S::Rm { id } => {
            let s: Service = client.post("/service/rm", &RmRequest { id })?;
            println!("{}", s.id);
        }
    }
    Ok(())
}
