//! `weft`: the CLI and the router daemon in one binary.
//!
//! What it does: parse the command line (`cli`), run the router in the foreground
//! (`daemon`: driver, datapath seam, control API, plumbing) or talk to a running one over
//! its unix socket (`client`), and print what comes back for humans or as JSON.
//! What it does not do: the protocol itself (`weft-core`), netlink details
//! (`weft-kernel-dp`) or packet I/O (`weft-uring-dp`).

mod api;
mod cli;
mod client;
mod clock;
mod control;
mod daemon;
mod dns;
mod driver;
mod error;
mod fastdp;
mod firewall;
mod http;
mod ipam;
mod metrics;
mod plumbing;
mod render;
mod secret;
mod sleeve;
mod state;

use clap::{CommandFactory, Parser};
use cli::{Cli, Command, GlobalArgs, RouterArgs};
use client::Client;
use error::{Error, Result};
use serde_json::{Value, json};
use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// How long `weft launch` waits for the router to answer.
const LAUNCH_TIMEOUT_MS: u64 = 15_000;
/// How long `weft stop` waits for the router to go away.
const STOP_TIMEOUT_MS: u64 = 10_000;

fn main() -> ExitCode {
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
            let peers: Vec<String> = peers.iter().map(ToString::to_string).collect();
            client.post("/connect", &json!({ "peers": peers }))?;
            Ok(())
        }
        Command::Forget { peers } => {
            let peers: Vec<String> = peers.iter().map(ToString::to_string).collect();
            client.post("/forget", &json!({ "peers": peers }))?;
            Ok(())
        }
        Command::Status { what, json } => {
            let path = what.map_or("/status", cli::StatusWhat::path);
            let v = client.get_json(path)?;
            if json {
                print_json(&v);
            } else {
                print!("{}", render::status(what, &v));
            }
            Ok(())
        }
        Command::Ps { json } => {
            let v = client.get_json("/ps")?;
            if json {
                print_json(&v);
            } else {
                print!("{}", render::ps(&v));
            }
            Ok(())
        }
        Command::Attach {
            addresses,
            target,
            name,
            dns,
        } => {
            let netns = target.path();
            plumbing::netns_inode(&netns)?;
            let (addresses, allocate) = ipam::split(&addresses);
            let body = json!({
                "netns": netns,
                "addresses": addresses,
                "allocate": allocate,
                "name": name,
            });
            let reply = client.post("/attach", &body)?;
            let v: Value = serde_json::from_slice(&reply).unwrap_or(Value::Null);
            if dns {
                dns::cmd::write_resolv_conf(&netns, &v["dns"])?;
            }
            // The addresses this call gave (all of the attachment's from an older router).
            let given = if v["given"].is_array() {
                &v["given"]
            } else {
                &v["addresses"]
            };
            let addrs: Vec<&str> = given
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            println!("{}", addrs.join(" "));
            Ok(())
        }
        Command::Detach { addresses, target } => {
            let body = json!({ "netns": target.path(), "addresses": addresses });
            client.post("/detach", &body)?;
            if addresses.is_empty() {
                dns::cmd::remove_resolv_conf(&target.path());
            }
            Ok(())
        }
        Command::Expose { address, fqdn, .. } => {
            client.post("/expose", &json!({ "address": address, "fqdn": fqdn }))?;
            println!("{address}");
            Ok(())
        }
        Command::Hide => {
            let reply = client.post("/hide", &json!({}))?;
            let v: Value = serde_json::from_slice(&reply).unwrap_or(Value::Null);
            for a in v["removed"].as_array().into_iter().flatten() {
                println!("{}", a.as_str().unwrap_or_default());
            }
            Ok(())
        }
        Command::DnsAdd { args, container } => dns::cmd::add(&client, &args, container),
        Command::DnsRemove { args, container } => dns::cmd::remove(&client, &args, container),
        Command::DnsLookup { name } => dns::cmd::lookup(&client, &name),
        Command::DnsArgs => {
            println!("{}", dns::cmd::args_line(&client.get_json("/dns/args")?)?);
            Ok(())
        }
        Command::Rmpeer { peer } => {
            let reply = client.post("/ipam/rmpeer", &json!({ "peer": peer }))?;
            let v: Value = serde_json::from_slice(&reply).unwrap_or(Value::Null);
            println!(
                "{} addresses taken over from {}",
                v["addresses"].as_u64().unwrap_or(0),
                v["peer"].as_str().unwrap_or(&peer)
            );
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
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "weft", &mut std::io::stdout());
            Ok(())
        }
    }
}

fn print_json(v: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer_pretty(&mut out, v);
    let _ = writeln!(out);
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
    if client.get("/status").is_ok() {
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
        if let Ok(body) = client.get("/status") {
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            println!("{}", v["name"].as_str().unwrap_or_default());
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
    client.post("/stop", &json!({ "reset": reset }))?;
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
    rt.block_on(async {
        let mut p = plumbing::Plumbing::open("weft", cli::MTU_DEFAULT, state)?;
        p.reset().await
    })
}
