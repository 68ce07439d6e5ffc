//! `weft`: the CLI and the router daemon in one binary (`src/main.rs` only calls
//! [`main_entry`]; the library exists so that fuzz targets reach the decoders).
//!
//! What it does: parse the command line (`cli`), run the router in the foreground
//! (`daemon`: driver, datapath seam, control API, plumbing) or talk to a running one over
//! its unix socket (`client`), and print what comes back for humans or as JSON.
//! What it does not do: the protocol itself (`weft-core`), netlink details
//! (`weft-kernel-dp`) or packet I/O (`weft-uring-dp`).

mod api;
mod cipher;
mod cli;
mod client;
mod clock;
mod cni;
mod control;
mod daemon;
mod dns;
mod docker;
mod driver;
mod error;
mod fastdp;
mod firewall;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
/// For `benches/` only (not an API): pieces of the host a benchmark measures alone.
#[doc(hidden)]
pub mod bench {
    /// The `nft -f` batch of the policy table for `rules`, as the router applies it.
    pub fn policy_table(rules: &weft_core::policy::compile::RuleSet) -> String {
        crate::policy::nft::render(rules, None).batch
    }
}
mod http;
mod ipam;
mod messages;
mod metrics;
mod plumbing;
mod policy;
mod render;
mod secret;
mod services;
mod sleeve;
mod state;

use clap::{CommandFactory, Parser};
use cli::{Cli, Command, GlobalArgs, RouterArgs};
use client::Client;
use error::{Error, Result};
use messages::{
    AttachReply, DetachReply, ExposeReply, ExposeRequest, HideReply, HideRequest, NetnsRequest,
    PeersReply, PeersRequest, RmpeerReply, RmpeerRequest, StopReply, StopRequest, Summary,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::io::BufRead;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// How long `weft launch` waits for the router to answer.
const LAUNCH_TIMEOUT_MS: u64 = 15_000;
/// How long `weft stop` waits for the router to go away.
const STOP_TIMEOUT_MS: u64 = 10_000;

/// The whole program: parse the command line, run it, and say how it went.
pub fn main_entry() -> ExitCode {
    // A runtime runs the plugin with CNI_* set and no arguments (see `cni`).
    if std::env::args_os().len() == 1 && cni::plugin::called_as_plugin() {
        return cni::plugin::main();
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
                || matches!(
                    e.kind(),
                    ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
                )
            {
                let _ = e.print();
                return if e.use_stderr() {
                    ExitCode::from(2)
                } else {
                    ExitCode::SUCCESS
                };
            }
            // One line: clap's first line, plus where to look.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("error: bad arguments");
            eprintln!("{first} (see `weft --help`)");
            return ExitCode::from(2);
        }
    };
    init_logging(
        cli.global.verbose,
        matches!(cli.command, Command::Router(_)),
    );
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(verbose: bool, daemon: bool) {
    use tracing_subscriber::EnvFilter;
    let default = match (verbose, daemon) {
        (true, _) => "debug",
        (false, true) => "info",
        (false, false) => "warn",
    };
    let filter = EnvFilter::try_from_env("WEFT_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .try_init();
}

fn run(cli: Cli) -> Result<()> {
    let g = &cli.global;
    let client = Client::new(&g.socket);
    match cli.command {
        Command::Router(args) => daemon::run(args, g),
        Command::Launch(args) => launch(&args, g),
        Command::Stop => stop(&client, false),
        Command::Reset => reset(&client, g),
        Command::Connect { peers } => {
            let peers = peers.iter().map(ToString::to_string).collect();
            client.post::<_, PeersReply>("/connect", &PeersRequest { peers })?;
            Ok(())
        }
        Command::Forget { peers } => {
            let peers = peers.iter().map(ToString::to_string).collect();
            client.post::<_, PeersReply>("/forget", &PeersRequest { peers })?;
            Ok(())
        }
        Command::Status { what, json } => {
            use cli::StatusWhat;
            let out = match what {
                None => show(&client, "/status", json, render::summary)?,
                Some(w @ StatusWhat::Peers) => {
                    show(&client, w.path(), json, |v: &Vec<_>| render::peers(v))?
                }
                Some(w @ StatusWhat::Connections) => {
                    show(&client, w.path(), json, |v: &Vec<_>| render::connections(v))?
                }
                Some(w @ StatusWhat::Targets) => {
                    show(&client, w.path(), json, |v: &Vec<_>| render::targets(v))?
                }
                Some(w @ StatusWhat::Dns) => {
                    show(&client, w.path(), json, dns::cmd::render_status)?
                }
                Some(w @ StatusWhat::Ipam) => show(&client, w.path(), json, ipam::render_status)?,
                Some(w @ StatusWhat::Policy) => {
                    show(&client, w.path(), json, policy::cmd::render_status)?
                }
            };
            print!("{out}");
            Ok(())
        }
        Command::Ps { json } => {
            print!(
                "{}",
                show(&client, "/ps", json, |v: &Vec<_>| render::ps(v))?
            );
            Ok(())
        }
        Command::Attach {
            addresses,
            target,
            name,
            dns,
            namespace,
            labels,
            ports,
        } => {
            let netns = target.path();
            plumbing::netns_inode(&netns)?;
            policy::pods::meta(namespace.clone(), &labels, &ports).map_err(Error::Other)?;
            let (addresses, allocate) = ipam::split(&addresses);
            let body = NetnsRequest {
                netns: netns.clone(),
                addresses,
                name,
                allocate,
                namespace,
                labels,
                ports,
            };
            let reply: AttachReply = client.post("/attach", &body)?;
            if dns {
                dns::cmd::write_resolv_conf(&netns, &reply.dns)?;
            }
            // The addresses this call gave (all of the attachment's from an older router).
            let given = reply.given.unwrap_or(reply.attachment.addresses);
            let addrs: Vec<String> = given.iter().map(ToString::to_string).collect();
            println!("{}", addrs.join(" "));
            Ok(())
        }
        Command::Detach { addresses, target } => {
            let body = NetnsRequest {
                netns: target.path(),
                addresses: addresses.clone(),
                name: None,
                allocate: Vec::new(),
                namespace: None,
                labels: Vec::new(),
                ports: Vec::new(),
            };
            client.post::<_, DetachReply>("/detach", &body)?;
            if addresses.is_empty() {
                dns::cmd::remove_resolv_conf(&target.path());
            }
            Ok(())
        }
        Command::Expose {
            addresses, fqdn, ..
        } => {
            let (addresses, allocate) = ipam::split(&addresses);
            let body = ExposeRequest {
                address: None,
                addresses,
                allocate,
                fqdn,
            };
            let reply: ExposeReply = client.post("/expose", &body)?;
            // An older router replies no `given`: then what it has exposed.
            let given = if reply.given.is_empty() {
                reply.exposed
            } else {
                reply.given
            };
            let addrs: Vec<String> = given.iter().map(ToString::to_string).collect();
            println!("{}", addrs.join(" "));
            Ok(())
        }
        Command::Hide => {
            let reply: HideReply = client.post("/hide", &HideRequest {})?;
            for a in reply.removed {
                println!("{a}");
            }
            Ok(())
        }
        Command::DnsAdd { args, container } => dns::cmd::add(&client, &args, container),
        Command::DnsRemove { args, container } => dns::cmd::remove(&client, &args, container),
        Command::DnsLookup { name } => dns::cmd::lookup(&client, &name),
        Command::Env { restore } => {
            println!("{}", env_line(&client.get("/status")?, restore)?);
            Ok(())
        }
        Command::DnsArgs => {
            println!("{}", dns::cmd::args_line(&client.get("/dns/args")?)?);
            Ok(())
        }
        Command::Rmpeer { peer } => {
            let body = RmpeerRequest { peer: peer.clone() };
            let reply: RmpeerReply = client.post("/ipam/rmpeer", &body)?;
            let from = if reply.peer.is_empty() {
                &peer
            } else {
                &reply.peer
            };
            println!("{} addresses taken over from {from}", reply.addresses);
            Ok(())
        }
        Command::Keygen { path } => {
            secret::keygen(&path)?;
            eprintln!(
                "wrote a new network key to {}; copy it (mode 0600) to every host and start each router with --key-file {}",
                path.display(),
                path.display()
            );
            Ok(())
        }
        Command::Cni(cli::CniCommand::Install { bin_dir, conf_dir }) => {
            let (bin, conf) = cni::install::install(&bin_dir, &conf_dir, &g.socket)?;
            println!("{}\n{}", bin.display(), conf.display());
            Ok(())
        }
        Command::Service(c) => services::serve::cmd(&client, c),
        Command::Policy(c) => policy::cmd::cmd(&client, c),
        Command::Label {
            target,
            changes,
            namespace,
        } => policy::cmd::label(&client, &target.path(), &changes, namespace),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "weft", &mut std::io::stdout());
            Ok(())
        }
    }
}

/// GETs `path` as `T` and gives it rendered for humans, or as pretty JSON with `--json`.
fn show<T: DeserializeOwned + Serialize>(
    client: &Client,
    path: &str,
    json: bool,
    render: impl FnOnce(&T) -> String,
) -> Result<String> {
    let v: T = client.get(path)?;
    if !json {
        return Ok(render(&v));
    }
    let mut text = serde_json::to_string_pretty(&v)
        .map_err(|e| Error::Other(format!("encode {path} as JSON: {e}")))?;
    text.push('\n');
    Ok(text)
}

/// The arguments that make `weft router` run like this `weft launch` asked.
fn router_argv(args: &RouterArgs, g: &GlobalArgs) -> Vec<String> {
    let mut v: Vec<String> = vec!["router".into()];
    v.extend(args.peers.iter().map(ToString::to_string));
    v.extend(["--port".into(), args.port.to_string()]);
    if let Some(n) = args.name {
        v.extend(["--name".into(), n.to_string()]);
    }
    if let Some(n) = &args.nickname {
        v.extend(["--nickname".into(), n.clone()]);
    }
    if args.no_fastdp {
        v.push("--no-fastdp".into());
    }
    if args.isolate_subnets {
        v.push("--isolate-subnets".into());
    }
    v.extend(["--cipher".into(), args.cipher.arg().into()]);
    if let Some(n) = args.crypto_threads {
        v.extend(["--crypto-threads".into(), n.to_string()]);
    }
    if let Some(n) = args.queues {
        v.extend(["--queues".into(), n.to_string()]);
    }
    if let Some(k) = &args.key_file {
        // A path is not a secret; it goes on argv so `ps` shows which key a router uses.
        v.extend(["--key-file".into(), k.display().to_string()]);
    }
    v.extend(["--mtu".into(), args.mtu.to_string()]);
    v.extend(["--bridge".into(), args.bridge.clone()]);
    if args.no_dns {
        v.push("--no-dns".into());
    }
    v.extend(["--dns-domain".into(), args.dns_domain.clone()]);
    for u in &args.dns_upstream {
        v.extend(["--dns-upstream".into(), u.to_string()]);
    }
    for l in &args.dns_listen_address {
        v.extend(["--dns-listen-address".into(), l.to_string()]);
    }
    if let Some(r) = args.ipalloc_range {
        v.extend(["--ipalloc-range".into(), r.to_string()]);
    }
    if let Some(i) = args.ipalloc_init {
        v.extend(["--ipalloc-init".into(), ipam::init_text(i)]);
    }
    if let Some(d) = args.ipalloc_default_subnet {
        v.extend(["--ipalloc-default-subnet".into(), d.to_string()]);
    }
    if let Some(d) = args.ipalloc_reclaim_after {
        v.extend([
            "--ipalloc-reclaim-after".into(),
            format!("{}ms", d.as_millis()),
        ]);
    }
    v.extend([
        "--ipalloc-timeout".into(),
        format!("{}ms", args.ipalloc_timeout.as_millis()),
    ]);
    if args.no_plugin {
        v.push("--no-plugin".into());
    } else {
        v.extend([
            "--plugin-socket".into(),
            args.plugin_socket.display().to_string(),
        ]);
    }
    v.extend([
        "--docker-socket".into(),
        args.docker_socket.display().to_string(),
    ]);
    v.extend(["--socket".into(), g.socket.display().to_string()]);
    v.extend(["--state-dir".into(), g.state_dir.display().to_string()]);
    if g.verbose {
        v.push("--verbose".into());
    }
    v
}

fn last_line(path: &std::path::Path) -> String {
    std::fs::File::open(path)
        .ok()
        .and_then(|f| {
            std::io::BufReader::new(f)
                .lines()
                .map_while(std::result::Result::ok)
                .filter(|l| !l.trim().is_empty())
                .last()
        })
        .unwrap_or_else(|| "(no log output)".into())
}

fn launch(args: &RouterArgs, g: &GlobalArgs) -> Result<()> {
    use std::os::unix::process::CommandExt;
    if !daemon::is_root() {
        return Err(Error::NotRoot);
    }
    let client = Client::new(&g.socket);
    if client.get_raw("/status").is_ok() {
        return Err(Error::AlreadyRunning(g.socket.clone()));
    }
    let state = state::StateDir::new(&g.state_dir);
    state.ensure()?;
    let log_path = state.log_path();
    let log = std::fs::File::create(&log_path).map_err(Error::io("create", &log_path))?;
    let log2 = log.try_clone().map_err(Error::io("open", &log_path))?;
    let exe =
        std::env::current_exe().map_err(Error::io("find own executable", "/proc/self/exe"))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(router_argv(args, g))
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log2)
        .env(
            "WEFT_LOG",
            std::env::var("WEFT_LOG").unwrap_or_else(|_| "info".into()),
        )
        // Its own process group: a Ctrl-C meant for this terminal does not reach it.
        .process_group(0);
    // The password goes through the environment, not argv (which `ps` shows).
    match &args.password {
        Some(p) => cmd.env("WEFT_PASSWORD", p),
        None => cmd.env_remove("WEFT_PASSWORD"),
    };
    let mut child = cmd.spawn().map_err(Error::io("start", "weft router"))?;
    let started = Instant::now();
    loop {
        if let Some(status) = child
            .try_wait()
            .map_err(Error::io("wait for", "weft router"))?
        {
            return Err(Error::LaunchFailed {
                status: status.to_string(),
                last_line: last_line(&log_path),
                log: log_path,
            });
        }
        if let Ok(body) = client.get_raw("/status") {
            let v: Summary = serde_json::from_slice(&body).unwrap_or_default();
            println!("{}", v.router.name.unwrap_or_default());
            return Ok(());
        }
        if started.elapsed() > Duration::from_millis(LAUNCH_TIMEOUT_MS) {
            return Err(Error::Other(format!(
                "the router did not answer on {} within {} s (pid {}; last log line: {}); see {}",
                g.socket.display(),
                LAUNCH_TIMEOUT_MS / 1000,
                child.id(),
                last_line(&log_path),
                log_path.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stop(client: &Client, reset: bool) -> Result<()> {
    client.post::<_, StopReply>("/stop", &StopRequest { reset })?;
    let started = Instant::now();
    while client.socket().exists() {
        if started.elapsed() > Duration::from_millis(STOP_TIMEOUT_MS) {
            return Err(Error::Other(format!(
                "the router did not stop within {} s; its socket {} is still there",
                STOP_TIMEOUT_MS / 1000,
                client.socket().display()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn reset(client: &Client, g: &GlobalArgs) -> Result<()> {
    match stop(client, true) {
        Ok(()) => return Ok(()),
        Err(Error::NotRunning(_) | Error::Refused(_)) => {}
        Err(e) => return Err(e),
    }
    // Not running: clean up what a previous router left.
    if !daemon::is_root() {
        return Err(Error::NotRoot);
    }
    let state = state::StateDir::new(&g.state_dir);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Other(format!("start the tokio runtime: {e}")))?;
    services::serve::remove_table("weft");
    rt.block_on(async {
        let mut p = plumbing::Plumbing::open("weft", cli::MTU_DEFAULT, state)?;
        p.reset().await
    })
}

/// `weft env`: the shell line pointing the Docker CLI at the router's proxy (keeping
/// DOCKER_HOST as it was in ORIG_DOCKER_HOST), or with `restore` the line that undoes it.
fn env_line(status: &Summary, restore: bool) -> Result<String> {
    let quote = |v: &str| {
        if !v.is_empty()
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/:._-=".contains(&b))
        {
            v.to_owned()
        } else {
            format!("'{}'", v.replace('\'', "'\\''"))
        }
    };
    if restore {
        return Ok(match std::env::var("ORIG_DOCKER_HOST") {
            Ok(orig) if !orig.is_empty() => format!(
                "export DOCKER_HOST={}; unset ORIG_DOCKER_HOST",
                quote(&orig)
            ),
            _ => "unset DOCKER_HOST ORIG_DOCKER_HOST".to_owned(),
        });
    }
    let p = &status.proxy;
    let (true, Some(socket)) = (p.serving, p.socket.as_deref()) else {
        return Err(Error::Other(format!(
            "the router serves no Docker API proxy: {}",
            p.off_reason.as_deref().unwrap_or("not started")
        )));
    };
    let host = format!("unix://{socket}");
    let orig = std::env::var("DOCKER_HOST").unwrap_or_default();
    // Already pointed at the proxy: keep what it was pointed away from.
    let orig = if orig == host {
        std::env::var("ORIG_DOCKER_HOST").unwrap_or_default()
    } else {
        orig
    };
    Ok(format!(
        "export DOCKER_HOST={} ORIG_DOCKER_HOST={}",
        quote(&host),
        if orig.is_empty() {
            "''".to_owned()
        } else {
            quote(&orig)
        }
    ))
}
