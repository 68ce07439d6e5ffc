//! The Docker API proxy on the real engine, driven with the real `docker` CLI through
//! `DOCKER_HOST` from `weft env`: a container has `ethwe` in its very first command,
//! `WEFT_CIDR` picks its addresses, `none`/`host` are left alone, names resolve across
//! hosts, streams and hijacked connections pass, and restarts (the container's, by its
//! restart policy, the router's after kill -9) keep its addresses.
//!
//! The routers run in namespaces of the test's own; the proxy socket is in a directory
//! of the test's. Every container is made with a unique name and removed (through
//! Docker's own socket) by the guard, also on failure; the image likewise.

mod common;

use common::docker::{TestImage, require_docker, unique_name};
use common::{Opts, Router, eventually, test_net};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use weft_kernel_dp::testnet::{Ns, TestNet};

/// `timeout 90 docker ARGS` with `DOCKER_HOST=host` (and `env`), stdin from `input`.
fn dk(host: &str, env: &[(&str, &str)], args: &[&str], input: Option<&[u8]>) -> Output {
    let mut cmd = Command::new("timeout");
    cmd.arg("90")
        .arg("docker")
        .args(args)
        .env("DOCKER_HOST", host);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run docker");
    if let Some(bytes) = input {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(bytes).unwrap();
    }
    child.wait_with_output().expect("docker output")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Removes the containers named here (through Docker's own socket), also on failure.
#[derive(Default)]
struct Names(std::cell::RefCell<Vec<String>>);

impl Names {
    fn new_name(&self) -> String {
        let n = unique_name();
        self.0.borrow_mut().push(n.clone());
        n
    }
}

impl Drop for Names {
    fn drop(&mut self) {
        for n in self.0.borrow().iter() {
            let _ = Command::new("timeout")
                .args(["60", "docker", "rm", "--force", "--volumes", n])
                .env_remove("DOCKER_HOST")
                .output();
        }
    }
}

/// The directory the proxy socket lives in, removed on drop.
struct SocketDir(PathBuf);

impl SocketDir {
    fn new(tag: &str) -> Self {
        let d = std::env::temp_dir().join(format!("weft-proxy-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Self(d)
    }
    fn socket(&self) -> String {
        self.0.join("docker.sock").display().to_string()
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn setup() -> Option<TestNet> {
    let net = test_net()?;
    if require_docker().is_some() {
        return None;
    }
    Some(net)
}

/// The IPv4 address on `ethwe` in what `ip -o -4 addr show ethwe` printed.
fn ethwe_addr(printed: &str) -> Option<String> {
    printed
        .lines()
        .find(|l| l.contains("ethwe"))
        .and_then(|l| l.split_whitespace().skip_while(|w| *w != "inet").nth(1))
        .map(str::to_owned)
}

/// Sends `request` on a new connection to `sock` and reads until the proxy closes it.
fn raw_call(sock: &str, request: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn start_router(net: &mut TestNet, h: &Ns, flags: &[&str], peers: Vec<String>) -> Router {
    Router::start(
        net,
        h,
        &Opts {
            extra: flags.to_vec(),
            peers,
            ..Opts::default()
        },
    )
}

#[test]
#[ignore = "needs root, network namespaces and the Docker Engine: run with --include-ignored, as .ci/run does"]
fn docker_run_through_the_proxy_lands_on_weft_before_its_first_command() {
    let Some(mut net) = setup() else {
        return;
    };
    let ([ha, hb], [ip_a, _]) = common::underlay_hosts(&mut net, ["a", "b"]);
    let dir = SocketDir::new("run");
    let sock = dir.socket();
    let flags = ["--no-fastdp", "--proxy-socket", sock.as_str()];
    let a = start_router(&mut net, &ha, &flags, vec![]);
    let b = start_router(&mut net, &hb, &["--no-fastdp"], vec![ip_a.to_string()]);
    common::wait_reachable(&[&a, &b], 1, Duration::from_secs(20));
    a.weft(&["expose", "10.47.255.254/12"]).unwrap();
    let st = a.json(&["status"]);
    assert_eq!(st["proxy"]["serving"], true, "{st}");
    assert_eq!(b.json(&["status"])["proxy"]["off_reason"], "--no-proxy");
    // A second router asked for the same path leaves it to the first, and says so.
    let hc = net.add_host("c").unwrap();
    let c = start_router(&mut net, &hc, &flags, vec![]);
    let why = c.json(&["status"])["proxy"]["off_reason"].clone();
    assert!(
        why.as_str()
            .is_some_and(|w| w.contains("another process serves")),
        "{why}"
    );
    drop(c);

    // weft env: the line to eval, and the one that undoes it.
    let env = a.weft(&["env"]).unwrap();
    let host = format!("unix://{sock}");
    assert_eq!(
        env.trim(),
        format!("export DOCKER_HOST={host} ORIG_DOCKER_HOST=''")
    );
    let restore = a.weft(&["env", "--restore"]).unwrap();
    assert_eq!(restore.trim(), "unset DOCKER_HOST ORIG_DOCKER_HOST");
    let off = b.weft(&["env"]).unwrap_err().to_string();
    assert!(off.contains("no Docker API proxy: --no-proxy"), "{off}");

    // A client that never finishes its request does not hold up the others, and a
    // create body that is not JSON goes to Docker untouched: Docker answers it.
    let mut slow = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    {
        use std::io::Write;
        slow.write_all(b"GET /_ping HTTP/1.1\r\nHost: d").unwrap();
    }
    let o = dk(
        &host,
        &[],
        &["version", "--format", "{{.Server.APIVersion}}"],
        None,
    );
    assert!(o.status.success(), "{}", text(&o));
    let raw = raw_call(&sock, b"POST /containers/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: 1\r\nConnection: close\r\n\r\n{");
    // (Engine 20.10 says 500 to a body cut short.)
    assert!(
        raw.contains("Api-Version:") && !raw.starts_with("HTTP/1.1 2") && !raw.contains("weft"),
        "not Docker's own refusal: {raw}"
    );
    let raw = raw_call(&sock, b"NOT HTTP\r\n\r\n");
    assert!(
        raw.starts_with("HTTP/1.1 400") && raw.contains("weft proxy"),
        "{raw}"
    );
    drop(slow);

    let image = TestImage::build().unwrap();
    let img = image.reference.as_str();
    let names = Names::default();
    let run = |args: &[&str]| -> Output {
        let mut full = vec!["run", "--rm", "--pull", "never"];
        full.extend(args);
        dk(&host, &[], &full, None)
    };
    // The very first command sees ethwe with an address from IPAM.
    let o = run(&[img, "ip", "-o", "-4", "addr", "show", "ethwe"]);
    assert!(o.status.success(), "{}; log:\n{}", text(&o), a.log_text());
    let first = ethwe_addr(&text(&o)).unwrap_or_default();
    assert!(
        first.starts_with("10.") && first.ends_with("/12"),
        "{}",
        text(&o)
    );
    // WEFT_CIDR: an address of its own, a subnet and an address, none.
    let o = run(&[
        "-e",
        "WEFT_CIDR=10.2.1.5/24",
        img,
        "ip",
        "-o",
        "-4",
        "addr",
        "show",
        "ethwe",
    ]);
    assert_eq!(
        ethwe_addr(&text(&o)).as_deref(),
        Some("10.2.1.5/24"),
        "{}",
        text(&o)
    );
    let o = run(&[
        "-e",
        "WEFT_CIDR=net:10.32.8.0/24 10.2.1.6/24",
        img,
        "ip",
        "-o",
        "-4",
        "addr",
        "show",
        "ethwe",
    ]);
    let t = text(&o);
    assert!(
        t.contains("inet 10.2.1.6/24") && t.contains("inet 10.32.8."),
        "{t}"
    );
    let o = run(&["-e", "WEFT_CIDR=10.2.1.300/24", img, "true"]);
    assert!(
        !o.status.success() && text(&o).contains("WEFT_CIDR"),
        "{}",
        text(&o)
    );
    for args in [
        &["-e", "WEFT_CIDR=none", img, "ip", "-o", "link"][..],
        &["--network", "none", img, "ip", "-o", "link"],
        &["--network", "host", img, "ip", "-o", "link"],
    ] {
        let o = run(args);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        assert!(
            !text(&o).contains("ethwe"),
            "{args:?} was plugged in: {}",
            text(&o)
        );
    }
    // stdin in, exit code out, a tty, an old API version.
    let o = dk(
        &host,
        &[],
        &["run", "--rm", "-i", img, "cat"],
        Some(b"through weft\n"),
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "through weft\n",
        "{}",
        text(&o)
    );
    let o = run(&[img, "sh", "-c", "exit 3"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let o = run(&["-t", img, "tty"]);
    assert!(text(&o).contains("/dev/pts/"), "{}", text(&o));
    let o = dk(
        &host,
        &[("DOCKER_API_VERSION", "1.25")],
        &[
            "run", "--rm", img, "ip", "-o", "-4", "addr", "show", "ethwe",
        ],
        None,
    );
    assert!(ethwe_addr(&text(&o)).is_some(), "API 1.25: {}", text(&o));

    // A named container: its hostname and domain, its name in weftDNS on both hosts.
    let web = names.new_name();
    let o = dk(
        &host,
        &[],
        &[
            "run",
            "-d",
            "--name",
            &web,
            "--label",
            "app=web",
            "--label",
            "weft.namespace=prod",
            img,
            "sleep",
            "600",
        ],
        None,
    );
    assert!(o.status.success(), "{}", text(&o));
    // Its labels and `weft.namespace` are what network policy sees of it.
    let ps = a.json(&["ps"]);
    assert!(
        ps.as_array()
            .unwrap()
            .iter()
            .any(|at| { at["pod"]["namespace"] == "prod" && at["pod"]["labels"]["app"] == "web" }),
        "{ps}"
    );
    let o = dk(
        &host,
        &[],
        &["exec", &web, "ip", "-o", "-4", "addr", "show", "ethwe"],
        None,
    );
    let web_addr = ethwe_addr(&text(&o)).unwrap_or_else(|| panic!("{}", text(&o)));
    let web_ip = web_addr.split('/').next().unwrap().to_owned();
    let o = dk(
        &host,
        &[],
        &[
            "inspect",
            "-f",
            "{{.Config.Hostname}}.{{.Config.Domainname}}",
            &web,
        ],
        None,
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        format!("{web}.weave.local")
    );
    assert!(
        eventually(Duration::from_secs(15), || b
            .weft(&["dns-lookup", &web])
            .is_ok_and(|s| s.trim() == web_ip)),
        "{web} not known on host b: {:?}",
        b.weft(&["dns-lookup", &web])
    );
    let o = run(&[img, "nslookup", &format!("{web}.weave.local")]);
    assert!(text(&o).contains(&web_ip), "{}", text(&o));
    // A namespace on host b reaches it over the overlay.
    let cb = net.add_ns("cb").unwrap();
    b.attach(&cb, "10.47.200.1/12");
    assert!(
        common::ping_until(&cb, &web_ip, Duration::from_secs(20)),
        "b cannot reach {web} at {web_ip}"
    );
    // exec, logs -f, ps and inspect through the proxy.
    let o = dk(&host, &[], &["exec", &web, "hostname"], None);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), web);
    let lg = names.new_name();
    let o = dk(
        &host,
        &[],
        &[
            "run",
            "-d",
            "--name",
            &lg,
            img,
            "sh",
            "-c",
            "echo one; sleep 1; echo two",
        ],
        None,
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = dk(&host, &[], &["logs", "-f", &lg], None);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "one\ntwo\n",
        "{}",
        text(&o)
    );
    let o = dk(&host, &[], &["ps", "--format", "{{.Names}}"], None);
    assert!(
        String::from_utf8_lossy(&o.stdout).lines().any(|l| l == web),
        "{}",
        text(&o)
    );

    // docker restart keeps the address.
    let addr_of = |name: &str| {
        let o = dk(
            &host,
            &[],
            &["exec", name, "ip", "-o", "-4", "addr", "show", "ethwe"],
            None,
        );
        ethwe_addr(&text(&o))
    };
    let o = dk(&host, &[], &["restart", "-t", "1", &web], None);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        addr_of(&web).as_deref(),
        Some(web_addr.as_str()),
        "after docker restart"
    );
    // A --restart=always container whose process is killed comes back with its address.
    let rs = names.new_name();
    let o = dk(
        &host,
        &[],
        &[
            "run",
            "-d",
            "--restart=always",
            "--name",
            &rs,
            img,
            "sleep",
            "600",
        ],
        None,
    );
    assert!(o.status.success(), "{}", text(&o));
    let rs_addr = addr_of(&rs).expect("rs plugged in");
    let pid_of = |name: &str| {
        let o = dk(&host, &[], &["inspect", "-f", "{{.State.Pid}}", name], None);
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    };
    let pid = pid_of(&rs);
    assert!(
        Command::new("kill")
            .args(["-9", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert!(
        eventually(Duration::from_secs(30), || {
            let p = pid_of(&rs);
            p != pid && p != "0" && addr_of(&rs).as_deref() == Some(rs_addr.as_str())
        }),
        "rs did not come back with {rs_addr}: {:?}; log:\n{}",
        addr_of(&rs),
        a.log_text()
    );

    // kill -9 of the router; web restarted meanwhile (through Docker's own socket) waits
    // for its network, and gets it back, with its address, from the restarted router.
    let mut a = a;
    net.kill(a.pid);
    let o = Command::new("timeout")
        .args(["60", "docker", "restart", "-t", "1", &web])
        .env_remove("DOCKER_HOST")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let restarted = Router::restart(
        &mut net,
        &ha,
        &Opts {
            extra: flags.to_vec(),
            ..Opts::default()
        },
    );
    // The old guard would remove the state dir the new router uses.
    std::mem::forget(std::mem::replace(&mut a, restarted));
    assert!(
        eventually(Duration::from_secs(20), || addr_of(&web).as_deref()
            == Some(web_addr.as_str())),
        "web not plugged in again with {web_addr}: {:?}; log:\n{}",
        addr_of(&web),
        a.log_text()
    );
    assert!(
        a.log_text().contains("plugged in again"),
        "{}",
        a.log_text()
    );

    // Removed containers free their addresses: nothing is left in IPAM on a.
    drop(names);
    assert!(
        eventually(
            Duration::from_secs(20),
            || a.json(&["status", "ipam"])["allocations"] == 0
        ),
        "{}",
        a.json(&["status", "ipam"])
    );
}
