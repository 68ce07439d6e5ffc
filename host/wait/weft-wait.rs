//! weft-wait: the first process of a container that weft's Docker API proxy created.
//!
//! The proxy puts this program (bind-mounted read-only at `/.weft/wait`) in front of the
//! container's own entrypoint. It waits until the router has plugged the container in
//! (the interface `ethwe` carries an IPv4 route, so an address, or a global IPv6 address)
//! and then becomes the container's own first process (exec: same pid, same
//! environment), so that the application never runs without its network.
//!
//! It gives up after `WEFT_WAIT_TIMEOUT` seconds (default 60) with one line on stderr
//! and exit status 125: a container is never left running without its network.
//!
//! Built by `host/build.rs` with the standard library only, statically linked
//! (`+crt-static`), so it runs in images that have no C library.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

const IFNAME: &str = "ethwe";
const TIMEOUT_S_DEFAULT: u64 = 60;

/// Whether `ethwe` has an IPv4 route (the kernel adds one for each address on an up link).
fn has_v4(route: &str) -> bool {
    route
        .lines()
        .skip(1)
        .any(|l| l.split_whitespace().next() == Some(IFNAME))
}

/// Whether `ethwe` has a global IPv6 address (`/proc/net/if_inet6`: scope `00`).
fn has_v6(if_inet6: &str) -> bool {
    if_inet6.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() >= 6 && f[5] == IFNAME && f[3] == "00"
    })
}

fn plugged_in() -> bool {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    has_v4(&read("/proc/net/route")) || has_v6(&read("/proc/net/if_inet6"))
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let Some((program, rest)) = args.split_first() else {
        eprintln!("weft-wait: no command to run after the network is up (the image has no entrypoint or command)");
        return ExitCode::from(125);
    };
    let timeout_s = std::env::var("WEFT_WAIT_TIMEOUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(TIMEOUT_S_DEFAULT);
    let start = Instant::now();
    while !plugged_in() {
        if start.elapsed() >= Duration::from_secs(timeout_s) {
            eprintln!(
                "weft-wait: no address on {IFNAME} after {timeout_s} s: the weft router did not plug this container in (is it running? see its log); not starting {}",
                program.to_string_lossy()
            );
            return ExitCode::from(125);
        }
        let ms = if start.elapsed() < Duration::from_secs(1) { 10 } else { 100 };
        std::thread::sleep(Duration::from_millis(ms));
    }
    let e = Command::new(program).args(rest).exec();
    eprintln!("weft-wait: cannot run {}: {e}", program.to_string_lossy());
    ExitCode::from(127)
}
