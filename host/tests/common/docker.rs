//! The Docker Engine for the end-to-end tests: whether an engine answers, a busybox test
//! image built without a registry, and guards that remove every container, network and
//! image a test made, also when the test panics.
//!
//! Everything is driven through the `docker` CLI (an independent check of what a plugin
//! told the engine). Objects are removed by the id recorded when they were made, never by
//! a name pattern; names are `wefttest-<pid>-<n>`, unique per process, and every object
//! carries the label `wefttest.pid=<pid>` so leftovers of a killed test can be found.
//! Every `docker` call has a time limit: a wedged engine fails the test, never hangs it.
//! The rootfs the image is imported from is built in [`rootfs`].
//!
//! ```ignore
//! if require_docker().is_some() { return; } // prints why, or panics in CI
//! let image = TestImage::build().unwrap();
//! let (net, _cidr) = Network::create_on_free_subnet(&["--internal"]).unwrap();
//! let a = Container::run(&image, &["--network", &net.name], &["sleep", "600"]).unwrap();
//! // dropped: containers, then the network, then the image
//! ```

use serde_json::Value;
use std::io::{self, Read, Write};
use std::net::Ipv4Addr;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};
use weft_kernel_dp::testnet::SkipReason;

mod rootfs;

/// Set this variable (to anything) to make [`require_docker`] panic instead of skipping:
/// for CI, where the engine runs and the Docker tests must run.
pub const REQUIRED_ENV: &str = "WEFT_DOCKER_REQUIRED";

/// Time limit of one `docker` call (an image import or a container start takes ~1 s).
pub const DOCKER_CALL_LIMIT: Duration = Duration::from_secs(60);
/// Time limit of the engine probe: `docker version` answers at once or not at all.
const PROBE_LIMIT: Duration = Duration::from_secs(20);

/// The repository the test images are imported as; each gets a unique tag.
pub const IMAGE_REPOSITORY: &str = "weft-test-busybox";

/// Whether `docker` is installed and its engine answers; the reason when not.
pub fn docker_available() -> Result<(), String> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    PROBE.get_or_init(|| probe(None)).clone()
}

/// [`docker_available`] against the engine at `host` (`DOCKER_HOST`) instead of the
/// default one.
pub fn probe(host: Option<&str>) -> Result<(), String> {
    let mut cmd = Command::new("docker");
    cmd.args(["version", "--format", "{{.Server.APIVersion}}"]);
    if let Some(h) = host {
        cmd.env("DOCKER_HOST", h);
    }
    let out = match run_limited(&mut cmd, PROBE_LIMIT) {
        Err(RunError::Spawn(e)) if e.kind() == io::ErrorKind::NotFound => {
            return Err("the `docker` command is not installed".into());
        }
        Err(e) => return Err(format!("`docker version`: {e}")),
        Ok(out) => out,
    };
    let api = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || api.is_empty() {
        return Err(format!(
            "the Docker Engine does not answer: {}",
            one_line(&out.stderr)
        ));
    }
    Ok(())
}

/// Checks that the Docker tests can run here. Returns `None` when they can; else prints
/// `SKIPPED <test>: <reason>` to stderr and returns the reason, and the test should
/// return early. With [`REQUIRED_ENV`] set it panics instead (as `require_root` does).
pub fn require_docker() -> Option<SkipReason> {
    let reason = SkipReason(docker_available().err()?);
    let test = thread::current()
        .name()
        .unwrap_or("<unnamed test>")
        .to_owned();
    if std::env::var_os(REQUIRED_ENV).is_some() {
        panic!("{test}: cannot run Docker test ({reason}) but {REQUIRED_ENV} is set");
    }
    // Straight to fd 2: libtest captures `eprintln!` of passing tests, and a skip must
    // be seen.
    let _ = writeln!(io::stderr(), "SKIPPED {test}: {reason}");
    Some(reason)
}

/// A name no other object of this process has: `wefttest-<pid>-<n>`.
pub fn unique_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("wefttest-{}-{n}", std::process::id())
}

fn pid_label() -> String {
    format!("wefttest.pid={}", std::process::id())
}

/// Runs `docker ARGS` (within [`DOCKER_CALL_LIMIT`]); its trimmed stdout, or an error
/// naming the call and what docker said.
pub fn docker(args: &[&str]) -> Result<String, String> {
    let out = run_limited(Command::new("docker").args(args), DOCKER_CALL_LIMIT)
        .map_err(|e| format!("docker {}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "docker {}: {} ({})",
            args.join(" "),
            one_line(&out.stderr),
            out.status
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Why [`run_limited`] has no output to give.
#[derive(Debug)]
enum RunError {
    Spawn(io::Error),
    Wait(io::Error),
    /// Killed after this long.
    Timeout(Duration),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Spawn(e) => write!(f, "cannot start: {e}"),
            Self::Wait(e) => write!(f, "cannot wait: {e}"),
            Self::Timeout(limit) => write!(f, "no answer within {limit:?} (killed)"),
        }
    }
}

/// Runs `cmd` with its output captured, killing it after `limit`.
fn run_limited(cmd: &mut Command, limit: Duration) -> Result<Output, RunError> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(RunError::Spawn)?;
    // Read both pipes while waiting, so a chatty child never blocks on a full pipe.
    let drain = |r: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(child.stdout.take().map(|s| Box::new(s) as _));
    let stderr = drain(child.stderr.take().map(|s| Box::new(s) as _));
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() < limit => thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(RunError::Timeout(limit));
            }
            Err(e) => return Err(RunError::Wait(e)),
        }
    };
    Ok(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

fn one_line(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Waits until `ok` holds, polling every 100 ms; an error naming `what` after `limit`.
pub fn wait_for(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) -> Result<(), String> {
    let start = Instant::now();
    while !ok() {
        if start.elapsed() > limit {
            return Err(format!("timed out after {limit:?} waiting for: {what}"));
        }
        thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// The kinds of object the guards make, for [`exists`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Container,
    Network,
    Image,
}

/// Whether the engine lists an object of `kind` with the full id `id`. An error (not
/// `false`) when the listing itself fails, so "gone" is never a failed `docker` call.
pub fn exists(kind: Kind, id: &str) -> Result<bool, String> {
    let list = match kind {
        Kind::Container => docker(&["container", "ls", "--all", "--quiet", "--no-trunc"])?,
        Kind::Network => docker(&["network", "ls", "--quiet", "--no-trunc"])?,
        Kind::Image => docker(&["image", "ls", "--all", "--quiet", "--no-trunc"])?,
    };
    Ok(list.lines().any(|l| l.trim() == id))
}

/// Removes an object in a guard's `drop`: says so on stderr when it cannot (a drop must
/// not panic, least of all while a failed test unwinds).
fn remove(what: &str, args: &[&str]) {
    if let Err(e) = docker(args) {
        let _ = writeln!(io::stderr(), "wefttest: could not remove {what}: {e}");
    }
}

/// A busybox image imported from a rootfs tarball (no registry), under a tag of its own;
/// untagged (and so deleted) on drop.
pub struct TestImage {
    /// `sha256:...`, as `docker image ls --no-trunc` lists it.
    pub id: String,
    /// `weft-test-busybox:<unique>`: what `docker run` is given.
    pub reference: String,
}

impl TestImage {
    /// Imports the busybox rootfs (built once, then reused from the cache under
    /// `target/tmp`) as a new uniquely tagged image. Call once per test.
    pub fn build() -> Result<Self, String> {
        let tarball = rootfs::tarball()?;
        let reference = format!("{IMAGE_REPOSITORY}:{}", unique_name());
        let path = tarball.display().to_string();
        let label = format!("LABEL {}", pid_label());
        let id = docker(&["import", "--change", &label, &path, &reference])?;
        if !id.starts_with("sha256:") {
            // Imported but unexpected output: untag what we can before failing.
            remove(&reference, &["image", "rm", &reference]);
            return Err(format!("docker import printed {id:?}, not an image id"));
        }
        Ok(Self { id, reference })
    }
}

impl Drop for TestImage {
    fn drop(&mut self) {
        // By the unique tag: deletes the image once no other tag names it, and never
        // touches another test's tag on a shared layer.
        remove(&self.reference, &["image", "rm", &self.reference]);
    }
}

/// A container (`docker create` + `docker start`), removed with its volumes on drop.
pub struct Container {
    /// The full id `docker create` printed.
    pub id: String,
    pub name: String,
}

impl Container {
    /// Creates `wefttest-...` from `image` with `docker create ARGS IMAGE CMD` and starts
    /// it. Created first and started second (not `docker run -d`), so that the id is
    /// recorded, and the container removed, even when starting it fails.
    pub fn run(image: &TestImage, args: &[&str], cmd: &[&str]) -> Result<Self, String> {
        let name = unique_name();
        let label = pid_label();
        // `--pull never`: there is no registry; a missing image is an error at once.
        let mut full = vec![
            "create", "--pull", "never", "--name", &name, "--label", &label,
        ];
        full.extend(args);
        full.push(&image.reference);
        full.extend(cmd);
        let id = docker(&full)?;
        let c = Self { id, name };
        docker(&["start", &c.id]).map_err(|e| format!("{e}; logs: {}", c.logs()))?;
        Ok(c)
    }

    /// Runs `docker exec <id> ARGS`; panics only when `docker` cannot be run or does not
    /// return within [`DOCKER_CALL_LIMIT`].
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("docker");
        cmd.arg("exec").arg(&self.id).args(args);
        run_limited(&mut cmd, DOCKER_CALL_LIMIT)
            .unwrap_or_else(|e| panic!("docker exec {} {args:?}: {e}", self.name))
    }

    /// `docker inspect`'s object for this container.
    pub fn inspect(&self) -> Result<Value, String> {
        let text = docker(&["container", "inspect", &self.id])?;
        let v: Value = serde_json::from_str(&text).map_err(|e| format!("inspect: {e}"))?;
        Ok(v[0].clone())
    }

    /// The container's IPv4 address on `network`, as the engine reports it.
    pub fn ip_of(&self, network: &Network) -> Result<Ipv4Addr, String> {
        let v = self.inspect()?;
        let nets = v["NetworkSettings"]["Networks"]
            .as_object()
            .ok_or_else(|| format!("{}: no networks in inspect", self.name))?;
        let endpoint = nets
            .values()
            .find(|e| e["NetworkID"] == network.id.as_str())
            .ok_or_else(|| format!("{} is not on network {}", self.name, network.name))?;
        let ip = endpoint["IPAddress"].as_str().unwrap_or_default();
        ip.parse().map_err(|_| {
            format!(
                "{} has no IPv4 address on {} ({ip:?})",
                self.name, network.name
            )
        })
    }

    /// Whether the engine says the container is running.
    pub fn running(&self) -> bool {
        self.inspect()
            .is_ok_and(|v| v["State"]["Running"].as_bool() == Some(true))
    }

    /// What the container printed (stdout and stderr), for failure messages.
    pub fn logs(&self) -> String {
        let mut cmd = Command::new("docker");
        cmd.args(["logs", &self.id]);
        match run_limited(&mut cmd, DOCKER_CALL_LIMIT) {
            Ok(out) => format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => format!("(docker logs: {e})"),
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        remove(
            &self.name,
            &["container", "rm", "--force", "--volumes", &self.id],
        );
    }
}

/// A Docker network (`docker network create`), removed on drop. Drop the containers on
/// it first (declare them after it: locals drop in reverse order).
pub struct Network {
    /// The full id `docker network create` printed.
    pub id: String,
    pub name: String,
}

impl Network {
    /// `docker network create ARGS wefttest-...`.
    pub fn create(args: &[&str]) -> Result<Self, String> {
        let name = unique_name();
        let label = pid_label();
        let mut full = vec!["network", "create", "--label", &label];
        full.extend(args);
        full.push(&name);
        let id = docker(&full)?;
        Ok(Self { id, name })
    }

    /// A bridge network on a free `172.31.X.0/24` (X picked from the pid, then the next
    /// ones while the engine refuses the subnet, e.g. another test run's), with `args`
    /// besides `--driver bridge --subnet`. Returns the network and its subnet.
    pub fn create_on_free_subnet(args: &[&str]) -> Result<(Self, String), String> {
        const TRIES: u32 = 16;
        let first = 16 + std::process::id() % 224;
        let mut last = String::new();
        for i in 0..TRIES {
            let cidr = format!("172.31.{}.0/24", 16 + (first - 16 + i) % 224);
            let mut full = vec!["--driver", "bridge", "--subnet", &cidr];
            full.extend(args);
            match Self::create(&full) {
                Ok(n) => return Ok((n, cidr)),
                Err(e) => last = e,
            }
        }
        Err(format!(
            "no free 172.31.X.0/24 in {TRIES} tries; last: {last}"
        ))
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        remove(&self.name, &["network", "rm", &self.id]);
    }
}
