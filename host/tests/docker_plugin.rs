//! The Docker network and IPAM plugin on the real engine: a router in a network namespace
//! of its own serves `/run/docker/plugins/wefttest-<pid>-<n>.sock`, and Docker creates
//! networks (`-d wefttest-... --ipam-driver wefttest-...`) and runs busybox containers on
//! them. Needs root, network namespaces and the Docker Engine; ignored with the reason in
//! a plain `cargo test`, run by `.ci/run`. Traffic stays between the test's containers
//! and the router's namespace; every container, network, image and socket is removed,
//! also on failure (guards, dropped in reverse order of declaration).

mod common;

use common::docker::{Container, Network, TestImage, require_docker, unique_name};
use common::{Opts, Router, eventually, test_net};
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use weft_kernel_dp::testnet::{Ns, TestNet};

const SLEEP: [&str; 2] = ["sleep", "600"];
/// A `--docker-socket` nobody serves.
const NO_DOCKER: &str = "/nonexistent/docker.sock";

/// A router serving the plugin under a driver name of its own.
struct PluginRouter {
    router: Router,
    driver: String,
    socket: PathBuf,
    /// `--plugin-socket PATH` and the rest of the router's flags.
    flags: Vec<String>,
}

impl PluginRouter {
    /// A sleeve-only router whose `--docker-socket` nobody serves: it makes no network
    /// of its own and names no containers.
    fn start(net: &mut TestNet, host: &Ns) -> Self {
        Self::start_with(net, host, NO_DOCKER, &["--no-fastdp"])
    }

    fn start_with(net: &mut TestNet, host: &Ns, docker_socket: &str, extra: &[&str]) -> Self {
        Self::start_as(unique_name(), net, host, docker_socket, extra)
    }

    /// [`Self::start_with`] under the driver name `driver`.
    fn start_as(
        driver: String,
        net: &mut TestNet,
        host: &Ns,
        docker_socket: &str,
        extra: &[&str],
    ) -> Self {
        let socket = PathBuf::from(format!("/run/docker/plugins/{driver}.sock"));
        let mut flags: Vec<String> = extra.iter().map(|f| (*f).to_owned()).collect();
        flags.extend([
            "--plugin-socket".to_owned(),
            socket.display().to_string(),
            "--docker-socket".to_owned(),
            docker_socket.to_owned(),
        ]);
        let router = Router::start(net, host, &opts(&flags));
        let p = Self {
            router,
            driver,
            socket,
            flags,
        };
        let st = p.status();
        assert_eq!(st["plugin"]["serving"], true, "{st}");
        assert_eq!(st["plugin"]["driver"], p.driver.as_str(), "{st}");
        p
    }

    /// `docker network create -d DRIVER --ipam-driver DRIVER ARGS`.
    fn network(&self, args: &[&str]) -> Network {
        let mut full = vec!["-d", &self.driver, "--ipam-driver", &self.driver];
        full.extend(args);
        Network::create(&full)
            .unwrap_or_else(|e| panic!("{e}; router log:\n{}", self.router.log_text()))
    }

    fn status(&self) -> Value {
        self.router.json(&["status"])
    }

    /// The links in the router's namespace.
    fn links(&self) -> String {
        self.router.ns.run(&["ip", "-o", "link"]).unwrap()
    }
}

impl Drop for PluginRouter {
    fn drop(&mut self) {
        // The router is killed with its TestNet; its socket file must not stay behind.
        let _ = std::fs::remove_file(&self.socket);
    }
}

fn opts(flags: &[String]) -> Opts<'_> {
    Opts {
        extra: flags.iter().map(String::as_str).collect(),
        ..Opts::default()
    }
}

/// Root, namespaces and the engine, or `None` (skipped with the reason printed).
fn setup() -> Option<TestNet> {
    let net = test_net()?;
    if require_docker().is_some() {
        return None;
    }
    Some(net)
}

/// `ping` from `from` to `to`: whether a reply came, and what it printed.
fn pings(from: &Container, to: Ipv4Addr, count: &str, deadline_s: &str) -> (bool, String) {
    let to = to.to_string();
    let out = from.exec(&["ping", "-c", count, "-w", deadline_s, "-W", "1", &to]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn assert_pings(from: &Container, to: Ipv4Addr, r: &PluginRouter) {
    let (ok, text) = pings(from, to, "2", "10");
    assert!(
        ok,
        "{} cannot ping {to}:\n{text}\nrouter log:\n{}",
        from.name,
        r.router.log_text()
    );
}

fn assert_no_ping(from: &Container, to: Ipv4Addr) {
    let (ok, text) = pings(from, to, "2", "3");
    assert!(
        !ok,
        "{} reaches {to}, which it must not:\n{text}",
        from.name
    );
}

fn in_subnet(ip: Ipv4Addr, cidr: &str) -> bool {
    let (net, len) = cidr.split_once('/').unwrap();
    let (net, len): (Ipv4Addr, u32) = (net.parse().unwrap(), len.parse().unwrap());
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    ip.to_bits() & mask == net.to_bits() & mask
}

/// The IPAM subnet and gateway Docker recorded for `n`.
fn ipam_config(n: &Network) -> (String, String) {
    let text = common::docker::docker(&["network", "inspect", &n.id]).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let c = &v[0]["IPAM"]["Config"][0];
    (
        c["Subnet"].as_str().unwrap_or_default().to_owned(),
        c["Gateway"].as_str().unwrap_or_default().to_owned(),
    )
}

fn allocations(r: &PluginRouter) -> u64 {
    r.router.json(&["status", "ipam"])["allocations"]
        .as_u64()
        .unwrap()
}

#[test]
#[ignore = "needs root, network namespaces and the Docker Engine: run with --include-ignored, as .ci/run does"]
fn containers_ping_within_a_network_not_across_and_nothing_is_left() {
    let Some(mut net) = setup() else {
        return;
    };
    let host = net.add_host("h").unwrap();
    let p = PluginRouter::start(&mut net, &host);
    // A second router on the same socket path leaves it to the first and says why.
    let other_host = net.add_host("o").unwrap();
    let other = Router::start(&mut net, &other_host, &opts(&p.flags));
    let st = other.json(&["status"]);
    assert_eq!(st["plugin"]["serving"], false, "{st}");
    let why = st["plugin"]["off_reason"].as_str().unwrap_or_default();
    assert!(why.contains("another process serves"), "{why}");
    assert!(other.log_text().contains("another process serves"));
    let human = other.weft(&["status"]).unwrap();
    assert!(
        human.contains("Docker plugin: off: another process serves"),
        "{human}"
    );

    let image = TestImage::build().unwrap();
    let n = p.network(&[]);
    // No --subnet: a /24 carved from the top of weft's range, the host's address on it
    // as gateway; a second network gets the next block down.
    assert_eq!(
        ipam_config(&n),
        ("10.47.255.0/24".into(), "10.47.255.1".into())
    );
    let n2 = p.network(&[]);
    assert_eq!(
        ipam_config(&n2),
        ("10.47.254.0/24".into(), "10.47.254.1".into())
    );
    let on_net = ["--network", n.name.as_str()];
    let a = Container::run(&image, &on_net, &SLEEP).unwrap();
    let b = Container::run(&image, &on_net, &SLEEP).unwrap();
    let c = Container::run(&image, &["--network", n2.name.as_str()], &SLEEP).unwrap();
    let (ip_a, ip_b, ip_c) = (
        a.ip_of(&n).unwrap(),
        b.ip_of(&n).unwrap(),
        c.ip_of(&n2).unwrap(),
    );
    assert_ne!(ip_a, ip_b);
    assert!(in_subnet(ip_a, "10.47.255.0/24") && in_subnet(ip_b, "10.47.255.0/24"));
    assert!(in_subnet(ip_c, "10.47.254.0/24"), "{ip_c}");
    assert_pings(&a, ip_b, &p);
    assert_pings(&b, ip_a, &p);
    assert_pings(&a, "10.47.255.1".parse().unwrap(), &p);
    assert_pings(&c, "10.47.254.1".parse().unwrap(), &p);
    assert_no_ping(&a, "10.47.255.250".parse().unwrap());
    // Across the two networks: nothing, either way (through the gateway neither).
    assert_no_ping(&a, ip_c);
    assert_no_ping(&c, ip_b);
    // The interface is ethwe0 with the bridge's MTU, the default route via the gateway.
    let link = a.exec(&["ip", "link", "show", "ethwe0"]);
    let link = String::from_utf8_lossy(&link.stdout);
    assert!(link.contains("mtu 1376"), "{link}");
    let route = a.exec(&["ip", "route"]);
    let route = String::from_utf8_lossy(&route.stdout);
    assert!(
        route.contains("default via 10.47.255.1 dev ethwe0"),
        "{route}"
    );
    let st = p.status();
    assert_eq!(
        (&st["plugin"]["networks"], &st["plugin"]["endpoints"]),
        (&Value::from(2), &Value::from(3)),
        "{st}"
    );
    assert!(
        st["exposed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "10.47.255.1/24"),
        "{st}"
    );
    assert_eq!(allocations(&p), 5, "two gateways and three containers");

    drop((a, b, c));
    assert!(!p.links().contains("vwd"), "veths left:\n{}", p.links());
    assert_eq!(allocations(&p), 2, "only the gateways are left");
    drop((n, n2));
    assert_eq!(allocations(&p), 0);
    let st = p.status();
    assert_eq!(st["plugin"]["networks"], 0, "{st}");
    assert!(st["exposed"].as_array().unwrap().is_empty(), "{st}");
}

#[test]
#[ignore = "needs root, network namespaces and the Docker Engine: run with --include-ignored, as .ci/run does"]
fn networks_with_their_own_subnets_are_isolated_and_connect_disconnect_work() {
    let Some(mut net) = setup() else {
        return;
    };
    let host = net.add_host("h").unwrap();
    let p = PluginRouter::start(&mut net, &host);
    let image = TestImage::build().unwrap();
    let n1 = p.network(&["--subnet", "10.40.1.0/24"]);
    let n2 = p.network(&["--subnet", "10.40.2.0/24"]);
    // Docker records only what was given (no --gateway here).
    assert_eq!(ipam_config(&n2), ("10.40.2.0/24".into(), String::new()));
    let a1 = Container::run(
        &image,
        &["--network", &n1.name, "--ip", "10.40.1.77"],
        &SLEEP,
    )
    .unwrap();
    let a2 = Container::run(&image, &["--network", &n1.name], &SLEEP).unwrap();
    let b1 = Container::run(&image, &["--network", &n2.name], &SLEEP).unwrap();
    let ip_a1 = a1.ip_of(&n1).unwrap();
    assert_eq!(ip_a1, Ipv4Addr::new(10, 40, 1, 77));
    let (ip_a2, ip_b1) = (a2.ip_of(&n1).unwrap(), b1.ip_of(&n2).unwrap());
    assert!(in_subnet(ip_a2, "10.40.1.0/24") && in_subnet(ip_b1, "10.40.2.0/24"));
    let route = b1.exec(&["ip", "route"]);
    let route = String::from_utf8_lossy(&route.stdout);
    assert!(
        route.contains("default via 10.40.2.1 dev ethwe0"),
        "{route}"
    );
    let route = b1.exec(&["ip", "route"]);
    let route = String::from_utf8_lossy(&route.stdout);
    assert!(
        route.contains("default via 10.40.2.1 dev ethwe0"),
        "{route}"
    );
    assert_pings(&a2, ip_a1, &p);
    assert_no_ping(&a1, ip_b1);
    assert_no_ping(&b1, ip_a2);
    // The same --ip twice is refused.
    let e = Container::run(
        &image,
        &["--network", &n1.name, "--ip", "10.40.1.77"],
        &SLEEP,
    )
    .err()
    .expect("a second container got 10.40.1.77");
    assert!(e.contains("10.40.1.77"), "{e}");

    // connect: a second interface on the running container; disconnect takes it away.
    common::docker::docker(&["network", "connect", &n2.id, &a1.id]).unwrap();
    let ip_a1_n2 = a1.ip_of(&n2).unwrap();
    assert!(in_subnet(ip_a1_n2, "10.40.2.0/24"));
    let links = a1.exec(&["ip", "-o", "link"]);
    let links = String::from_utf8_lossy(&links.stdout).into_owned();
    assert!(
        links.contains("ethwe0") && links.contains("ethwe1"),
        "{links}"
    );
    assert_pings(&a1, ip_b1, &p);
    assert_pings(&b1, ip_a1_n2, &p);
    common::docker::docker(&["network", "disconnect", &n2.id, &a1.id]).unwrap();
    assert_no_ping(&b1, ip_a1_n2);
    let links = a1.exec(&["ip", "-o", "link"]);
    let links = String::from_utf8_lossy(&links.stdout).into_owned();
    assert!(!links.contains("ethwe1"), "{links}");
    assert_pings(&a2, ip_a1, &p);
    assert_eq!(p.status()["plugin"]["endpoints"], 3);
}

#[test]
#[ignore = "needs root, network namespaces and the Docker Engine: run with --include-ignored, as .ci/run does"]
fn twenty_containers_started_at_once_get_twenty_addresses() {
    const N: usize = 20;
    let Some(mut net) = setup() else {
        return;
    };
    let host = net.add_host("h").unwrap();
    let p = PluginRouter::start(&mut net, &host);
    let image = TestImage::build().unwrap();
    let n = p.network(&["--subnet", "10.40.3.0/24"]);
    let started: Vec<Result<Container, String>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..N)
            .map(|_| s.spawn(|| Container::run(&image, &["--network", &n.name], &SLEEP)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let containers: Vec<Container> = started
        .into_iter()
        .map(|c| c.unwrap_or_else(|e| panic!("{e}; router log:\n{}", p.router.log_text())))
        .collect();
    let ips: BTreeSet<Ipv4Addr> = containers.iter().map(|c| c.ip_of(&n).unwrap()).collect();
    assert_eq!(ips.len(), N, "{ips:?}");
    assert!(
        ips.iter().all(|ip| in_subnet(*ip, "10.40.3.0/24")),
        "{ips:?}"
    );
    assert!(!ips.contains(&Ipv4Addr::new(10, 40, 3, 1)), "the gateway's");
    let last = *ips.iter().next_back().unwrap();
    assert_pings(&containers[0], last, &p);
    assert_eq!(allocations(&p), N as u64 + 1);
}

#[test]
#[ignore = "needs root, network namespaces and the Docker Engine: run with --include-ignored, as .ci/run does"]
fn a_router_restarted_with_containers_running_loses_nothing() {
    let Some(mut net) = setup() else {
        return;
    };
    let host = net.add_host("h").unwrap();
    let mut p = PluginRouter::start(&mut net, &host);
    let image = TestImage::build().unwrap();
    let n = p.network(&["--subnet", "10.40.4.0/24"]);
    let on_net = ["--network", n.name.as_str()];
    let a = Container::run(&image, &on_net, &SLEEP).unwrap();
    let b = Container::run(&image, &on_net, &SLEEP).unwrap();
    let (ip_a, ip_b) = (a.ip_of(&n).unwrap(), b.ip_of(&n).unwrap());
    assert_pings(&a, ip_b, &p);

    // SIGTERM: the socket goes; Docker's calls fail meanwhile, traffic on the bridge goes on.
    let pid = p.router.pid.to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert!(
        eventually(Duration::from_secs(10), || !p.socket.exists()),
        "plugin socket still there after SIGTERM"
    );
    assert_pings(&a, ip_b, &p);
    let restarted = Router::restart(&mut net, &host, &opts(&p.flags));
    std::mem::forget(std::mem::replace(&mut p.router, restarted));
    assert_eq!(p.status()["plugin"]["endpoints"], 2);
    assert_pings(&b, ip_a, &p);
    // Nothing handed out twice: a new container gets a new address.
    let c = Container::run(&image, &on_net, &SLEEP).unwrap();
    let ip_c = c.ip_of(&n).unwrap();
    assert!(![ip_a, ip_b, "10.40.4.1".parse().unwrap()].contains(&ip_c));
    assert_pings(&c, ip_a, &p);

    // kill -9: a stale socket, claimed again by the next router.
    assert!(net.kill(p.router.pid));
    assert!(p.socket.exists(), "kill -9 leaves the socket file");
    let restarted = Router::restart(&mut net, &host, &opts(&p.flags));
    std::mem::forget(std::mem::replace(&mut p.router, restarted));
    assert_eq!(p.status()["plugin"]["serving"], true);
    assert_pings(&c, ip_b, &p);
    // docker restart: the container comes back on the network.
    common::docker::docker(&["restart", "-t", "1", &a.id]).unwrap();
    let ip_a2 = a.ip_of(&n).unwrap();
    assert!(in_subnet(ip_a2, "10.40.4.0/24"));
    assert_pings(&a, ip_c, &p);
    drop((a, b, c));
    assert!(!p.links().contains("vwd"), "veths left:\n{}", p.links());
    assert_eq!(allocations(&p), 1, "only the gateway is left");
}

/// What `weft dns-lookup NAME` prints on `r`'s router (empty when it fails).
fn dns_lookup(r: &PluginRouter, name: &str) -> String {
    r.router
        .weft(&["dns-lookup", name])
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// The network the router made named after its driver (waits for it), under a guard that
/// removes it before the router goes.
fn driver_network(p: &PluginRouter) -> Network {
    let found = || {
        common::docker::docker(&[
            "network",
            "inspect",
            "--format",
            "{{.Id}} {{.Driver}} {{.IPAM.Driver}}",
            &p.driver,
        ])
        .ok()
    };
    assert!(
        eventually(Duration::from_secs(20), || found().is_some()),
        "no network {}; router log:\n{}",
        p.driver,
        p.router.log_text()
    );
    let text = found().unwrap();
    let mut parts = text.split_whitespace();
    let id = parts.next().unwrap().to_owned();
    let n = Network {
        id,
        name: p.driver.clone(),
    };
    assert_eq!(
        (parts.next(), parts.next()),
        (Some(p.driver.as_str()), Some(p.driver.as_str()))
    );
    n
}

#[test]
#[ignore = "needs root, network namespaces and the Docker Engine: run with --include-ignored, as .ci/run does"]
fn the_router_makes_the_network_named_after_its_driver_and_names_its_containers() {
    let Some(mut net) = setup() else {
        return;
    };
    let host = net.add_host("h").unwrap();
    let p = PluginRouter::start_with(&mut net, &host, "/var/run/docker.sock", &["--no-fastdp"]);
    let n = driver_network(&p);
    assert!(
        p.router
            .log_text()
            .contains(&format!("Docker network {} created", p.driver))
    );
    // On IPAM's default subnet, the same on every host: the network spans them.
    assert_eq!(ipam_config(&n), ("10.32.0.0/12".into(), String::new()));
    let image = TestImage::build().unwrap();
    let a = Container::run(
        &image,
        &[
            "--network",
            &n.name,
            "--network-alias",
            "api",
            "--hostname",
            "ahost",
        ],
        &SLEEP,
    )
    .unwrap();
    // b asks weftDNS (on the host's address, the gateway) for what is not Docker's.
    let b = Container::run(
        &image,
        &[
            "--network",
            &n.name,
            "--dns",
            "10.32.0.1",
            "--dns-search",
            "weave.local",
        ],
        &SLEEP,
    )
    .unwrap();
    let ip_a = a.ip_of(&n).unwrap();
    assert_pings(&a, b.ip_of(&n).unwrap(), &p);
    // Its name, hostname and alias, in weftDNS.
    for name in [a.name.as_str(), "ahost", "api"] {
        assert!(
            eventually(Duration::from_secs(10), || dns_lookup(&p, name)
                == ip_a.to_string()),
            "weft dns-lookup {name}: {:?}, not {ip_a}; router log:\n{}",
            dns_lookup(&p, name),
            p.router.log_text()
        );
    }
    let fqdn = format!("{}.weave.local", a.name);
    let out = b.exec(&["nslookup", &fqdn, "10.32.0.1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&ip_a.to_string()), "nslookup {fqdn}:\n{text}");
    let out = b.exec(&["ping", "-c", "1", "-w", "5", "ahost.weave.local"]);
    assert!(
        out.status.success(),
        "ping ahost.weave.local: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        dns_lookup(&p, "nobody-here"),
        "",
        "a name nobody has resolves"
    );
    // Gone when it leaves the network.
    common::docker::docker(&["network", "disconnect", &n.id, &a.id]).unwrap();
    assert_eq!(
        dns_lookup(&p, "api"),
        "",
        "api still named after disconnect"
    );
    assert_eq!(dns_lookup(&p, &a.name), "");
}

#[test]
#[ignore = "needs root, network namespaces and the Docker Engine: run with --include-ignored, as .ci/run does"]
fn containers_reach_outside_masqueraded_unless_the_network_is_internal() {
    let Some(mut net) = setup() else {
        return;
    };
    // `o` is outside: on the host's underlay, with no route to any container subnet, so
    // only replies to the host's own address come back.
    let ([h, _o], [_, ip_o]) = common::underlay_hosts(&mut net, ["h", "o"]);
    let p = PluginRouter::start(&mut net, &h);
    let image = TestImage::build().unwrap();
    let open = p.network(&["--subnet", "10.40.5.0/24"]);
    let internal = p.network(&["--subnet", "10.40.6.0/24", "--internal"]);
    let a = Container::run(&image, &["--network", &open.name], &SLEEP).unwrap();
    let b = Container::run(&image, &["--network", &internal.name], &SLEEP).unwrap();
    assert_pings(&a, ip_o, &p);
    assert_no_ping(&b, ip_o);
    let route = b.exec(&["ip", "route"]);
    let route = String::from_utf8_lossy(&route.stdout);
    assert!(!route.contains("default"), "internal: no way out: {route}");
    // The networks stay apart though the host now forwards.
    assert_eq!(
        p.router.ns.sysctl("net/ipv4/ip_forward").unwrap().trim(),
        "1"
    );
    common::docker::docker(&["network", "connect", &internal.id, &a.id]).unwrap();
    let ip_a_internal = a.ip_of(&internal).unwrap();
    common::docker::docker(&["network", "disconnect", &internal.id, &a.id]).unwrap();
    let c = Container::run(&image, &["--network", &open.name], &SLEEP).unwrap();
    assert_no_ping(&c, b.ip_of(&internal).unwrap());
    assert_no_ping(&c, ip_a_internal);
    drop((a, b, c));
    drop((open, internal));
    let tables = p.router.ns.run(&["nft", "list", "tables"]).unwrap();
    assert!(!tables.contains("weft_docker"), "table left: {tables}");
}

#[test]
#[ignore = "needs root, network namespaces and the Docker Engine: run with --include-ignored, as .ci/run does"]
fn on_a_host_whose_forward_policy_is_drop_weft_accepts_its_own_traffic() {
    let Some(mut net) = setup() else {
        return;
    };
    let ([h, _o], [_, ip_o]) = common::underlay_hosts(&mut net, ["h", "o"]);
    // As Docker leaves the root namespace: FORWARD policy DROP, bridged frames through
    // iptables (bridge-nf-call-iptables is 1 in every namespace here).
    h.run(&["iptables", "-w", "-P", "FORWARD", "DROP"]).unwrap();
    let nf = h
        .run(&["cat", "/proc/sys/net/bridge/bridge-nf-call-iptables"])
        .unwrap();
    assert_eq!(nf.trim(), "1", "bridged frames would not meet iptables");
    let p = PluginRouter::start(&mut net, &h);
    assert!(
        p.router
            .log_text()
            .contains("accepting forwarding within bridge weft"),
        "{}",
        p.router.log_text()
    );
    let image = TestImage::build().unwrap();
    let n = p.network(&["--subnet", "10.40.10.0/24"]);
    let a = Container::run(&image, &["--network", &n.name], &SLEEP).unwrap();
    let b = Container::run(&image, &["--network", &n.name], &SLEEP).unwrap();
    let ip_b = b.ip_of(&n).unwrap();
    // Bridged (container to container) and routed (out, masqueraded) both pass.
    assert_pings(&a, ip_b, &p);
    assert_pings(&a, ip_o, &p);
    // Without weft's accept rule the policy drops them: the rule is what lets them by.
    let rule = ["FORWARD", "-i", "weft", "-o", "weft", "-j", "ACCEPT"];
    let mut delete = vec!["iptables", "-w", "-D"];
    delete.extend(rule);
    h.run(&delete).unwrap();
    assert_no_ping(&a, ip_b);
    let mut insert = vec!["iptables", "-w", "-I"];
    insert.extend(rule);
    h.run(&insert).unwrap();
    assert_pings(&a, ip_b, &p);
}

/// A Docker container on host `a` (its router in a namespace, the plugin socket on the
/// filesystem) and a namespace attached on host `b` reach each other over the overlay.
fn across_hosts(a_flags: &[&str], b_flags: &[&str], mode: &str) {
    let Some(mut net) = setup() else {
        return;
    };
    let ([ha, hb], [ip_a, _]) = common::underlay_hosts(&mut net, ["a", "b"]);
    let p = PluginRouter::start_with(&mut net, &ha, NO_DOCKER, a_flags);
    let b = Router::start(
        &mut net,
        &hb,
        &Opts {
            peers: vec![ip_a.to_string()],
            extra: b_flags.to_vec(),
            ..Opts::default()
        },
    );
    common::wait_reachable(&[&p.router, &b], 1, Duration::from_secs(20));
    // The link settles in its mode first (the fast path proves itself both ways).
    let conn = || -> Value {
        let conns = p.router.json(&["status", "connections"]);
        conns
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["state"] == "established").cloned())
            .unwrap_or_default()
    };
    let settled = eventually(Duration::from_secs(30), || {
        conn()["mode"].as_str().is_some_and(|m| m.starts_with(mode))
    });
    assert!(settled, "the link is not {mode}: {}", conn());
    assert_eq!(conn()["encrypted"], mode == "sleeve", "{}", conn());
    let cb = net.add_ns("cb").unwrap();
    b.attach(&cb, "10.40.9.200/24");
    let image = TestImage::build().unwrap();
    let n = p.network(&["--subnet", "10.40.9.0/24"]);
    let c = Container::run(&image, &["--network", &n.name], &SLEEP).unwrap();
    let ip_c = c.ip_of(&n).unwrap();
    assert!(
        common::ping_until(&cb, &ip_c.to_string(), Duration::from_secs(20)),
        "the namespace on b cannot ping the container on a ({ip_c}); a's log:\n{}\nb's log:\n{}",
        p.router.log_text(),
        b.log_text()
    );
    // Over the overlay the first echo may meet a path still settling: any reply in 10 s.
    let cb_ip: Ipv4Addr = "10.40.9.200".parse().unwrap();
    assert!(
        eventually(Duration::from_secs(10), || pings(&c, cb_ip, "1", "2").0),
        "the container on a cannot ping the namespace on b: {}",
        pings(&c, cb_ip, "1", "2").1
    );
    let got = conn();
    assert!(
        got["mode"].as_str().is_some_and(|m| m.starts_with(mode)),
        "{got}"
    );
}

#[test]
#[ignore = "needs root, network namespaces and the Docker Engine: run with --include-ignored, as .ci/run does"]
fn a_container_reaches_a_namespace_on_another_host_over_the_fast_datapath() {
    across_hosts(&[], &[], "fastdp");
}

#[test]
#[ignore = "needs root, network namespaces and the Docker Engine: run with --include-ignored, as .ci/run does"]
fn a_container_reaches_a_namespace_on_another_host_over_the_encrypted_sleeve() {
    let pw = ["--password", "docker-plugin-test"];
    across_hosts(&pw, &pw, "sleeve");
}

/// A container started with `--dns` on the gateway and weftDNS's domain to search.
fn asking_weftdns(image: &TestImage, n: &Network) -> Container {
    Container::run(
        image,
        &[
            "--network",
            &n.name,
            "--dns",
            "10.32.0.1",
            "--dns-search",
            "weave.local",
        ],
        &SLEEP,
    )
    .unwrap()
}

#[test]
#[ignore = "needs root, network namespaces and the Docker Engine: run with --include-ignored, as .ci/run does"]
fn docker_restart_keeps_a_container_reachable_by_address_and_by_name() {
    let Some(mut net) = setup() else {
        return;
    };
    let host = net.add_host("h").unwrap();
    let p = PluginRouter::start_with(&mut net, &host, "/var/run/docker.sock", &["--no-fastdp"]);
    let n = driver_network(&p);
    let image = TestImage::build().unwrap();
    let a = Container::run(&image, &["--network", &n.name], &SLEEP).unwrap();
    let b = asking_weftdns(&image, &n);
    let ip_b = b.ip_of(&n).unwrap();
    let named = |ip: Ipv4Addr| {
        eventually(Duration::from_secs(10), || {
            dns_lookup(&p, &a.name) == ip.to_string()
        })
    };
    assert!(named(a.ip_of(&n).unwrap()), "{}", p.router.log_text());

    common::docker::docker(&["restart", "-t", "1", &a.id]).unwrap();
    assert!(a.running(), "{}", a.logs());
    let ip_a = a.ip_of(&n).unwrap();
    assert!(in_subnet(ip_a, "10.32.0.0/12"));
    // Within seconds: its new (or same) address in weftDNS, and pings both ways.
    let back = std::time::Instant::now();
    assert!(
        named(ip_a),
        "weft dns-lookup {}: {:?}, not {ip_a}; router log:\n{}",
        a.name,
        dns_lookup(&p, &a.name),
        p.router.log_text()
    );
    assert!(
        eventually(Duration::from_secs(10), || pings(&b, ip_a, "1", "2").0),
        "b cannot ping a at {ip_a} after docker restart: {}\nrouter log:\n{}",
        pings(&b, ip_a, "1", "2").1,
        p.router.log_text()
    );
    assert_pings(&a, ip_b, &p);
    let fqdn = format!("{}.weave.local", a.name);
    let by_name = || b.exec(&["ping", "-c", "1", "-w", "2", &fqdn]);
    assert!(
        eventually(Duration::from_secs(10), || by_name().status.success()),
        "ping {fqdn}: {}",
        String::from_utf8_lossy(&by_name().stdout)
    );
    assert!(
        back.elapsed() < Duration::from_secs(20),
        "{:?}",
        back.elapsed()
    );
    // The restart left nothing behind: the gateway, a and b; one veth each.
    assert_eq!(allocations(&p), 3, "{}", p.router.json(&["status", "ipam"]));
    assert_eq!(p.status()["plugin"]["endpoints"], 2);
    assert_eq!(p.links().matches("vwd").count(), 2, "{}", p.links());
}

#[test]
#[ignore = "needs root, network namespaces and the Docker Engine: run with --include-ignored, as .ci/run does"]
fn a_container_removed_while_the_router_is_down_frees_its_address() {
    let Some(mut net) = setup() else {
        return;
    };
    let host = net.add_host("h").unwrap();
    let mut p = PluginRouter::start_with(&mut net, &host, "/var/run/docker.sock", &["--no-fastdp"]);
    let _made = driver_network(&p);
    let image = TestImage::build().unwrap();
    let n = p.network(&["--subnet", "10.40.7.0/24"]);
    let asked = ["--network", n.name.as_str(), "--ip", "10.40.7.50"];
    let a = Container::run(&image, &asked, &SLEEP).unwrap();
    let b = Container::run(&image, &["--network", &n.name], &SLEEP).unwrap();
    // And a network (its block carved) that Docker deletes while the router is down.
    let g = p.network(&[]);
    assert_eq!(ipam_config(&g).0, "10.47.255.0/24");
    assert_eq!(allocations(&p), 5, "three networks' gateways, a and b");

    let pid = p.router.pid.to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert!(
        eventually(Duration::from_secs(10), || !p.socket.exists()),
        "plugin socket still there after SIGTERM"
    );
    // Docker's Leave, DeleteEndpoint and ReleaseAddress find no plugin now: Docker
    // retries each for a while, longer than the harness's limit on one call.
    let out = Command::new("timeout")
        .args(["300", "docker", "rm", "--force", &a.id])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::mem::forget(a);
    let out = Command::new("timeout")
        .args(["300", "docker", "network", "rm", &g.id])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::mem::forget(g);
    let restarted = Router::restart(&mut net, &host, &opts(&p.flags));
    std::mem::forget(std::mem::replace(&mut p.router, restarted));
    assert!(
        eventually(Duration::from_secs(10), || allocations(&p) == 3),
        "a's address or g's gateway still held: {}; router log:\n{}",
        p.router.json(&["status", "ipam"]),
        p.router.log_text()
    );
    assert_eq!(p.status()["plugin"]["endpoints"], 1);
    assert_eq!(p.status()["plugin"]["networks"], 2);
    assert!(
        p.router.log_text().contains(
            "1 endpoints and 1 networks Docker deleted while the router was down forgotten"
        ),
        "{}",
        p.router.log_text()
    );
    // g's block is free again: the next network without --subnet gets it.
    let g2 = p.network(&[]);
    assert_eq!(ipam_config(&g2).0, "10.47.255.0/24");
    drop(g2);
    assert_eq!(p.links().matches("vwd").count(), 1, "{}", p.links());
    // a's address is free again: a new container gets it, and b reaches it there.
    let c = Container::run(&image, &asked, &SLEEP)
        .unwrap_or_else(|e| panic!("{e}; router log:\n{}", p.router.log_text()));
    assert_eq!(c.ip_of(&n).unwrap(), Ipv4Addr::new(10, 40, 7, 50));
    assert_pings(&b, Ipv4Addr::new(10, 40, 7, 50), &p);
    drop((b, c));
    assert_eq!(allocations(&p), 2, "only the gateways are left");
}

/// One raw call on the plugin socket, as Docker makes it: the time the reply took, its
/// status and body; `None` while nothing listens there yet.
fn raw_call(socket: &std::path::Path, method: &str, body: &str) -> Option<(Duration, u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).ok()?;
    let started = std::time::Instant::now();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let req = format!(
        "POST /{method} HTTP/1.1\r\nHost: plugin\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let read = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    assert!(read.is_ok(), "no reply within 5 s ({read:?}), got {text:?}");
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not HTTP: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Some((started.elapsed(), status, body))
}

/// Sets its flag when dropped.
struct Stop<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for Stop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
#[ignore = "needs root, network namespaces and the Docker Engine: run with --include-ignored, as .ci/run does"]
fn docker_calling_while_the_router_starts_gets_a_quick_err_never_a_hang() {
    let Some(mut net) = setup() else {
        return;
    };
    let host = net.add_host("h").unwrap();
    let driver = unique_name();
    let socket = PathBuf::from(format!("/run/docker/plugins/{driver}.sock"));
    let done = std::sync::atomic::AtomicBool::new(false);
    let replies = std::thread::scope(|s| {
        // Calls from before the socket exists until after the router answers.
        let caller = s.spawn(|| {
            let mut replies = Vec::new();
            let ep = r#"{"NetworkID":"n","EndpointID":"e"}"#;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(r) = raw_call(&socket, "NetworkDriver.EndpointOperInfo", ep) {
                    replies.push(r);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            replies
        });
        // The caller stops also when starting the router panics.
        let stop = Stop(&done);
        let p =
            PluginRouter::start_as(driver.clone(), &mut net, &host, NO_DOCKER, &["--no-fastdp"]);
        std::thread::sleep(Duration::from_millis(500));
        drop(stop);
        let replies = caller.join().unwrap();
        drop(p);
        replies
    });
    assert!(!replies.is_empty(), "no call was answered");
    let starting = replies.iter().filter(|r| r.1 == 503).count();
    for (took, status, body) in &replies {
        assert!(
            *took < Duration::from_secs(2),
            "answered after {took:?}: {body}"
        );
        let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
        let err = v["Err"].as_str().unwrap_or_default();
        assert!(!err.is_empty() && !err.contains('\n'), "{body}");
        match status {
            503 => assert!(err.contains("starting"), "{err}"),
            404 => assert!(err.contains("no such endpoint"), "{err}"),
            s => panic!("status {s}: {body}"),
        }
    }
    let _ = writeln!(
        std::io::stderr(),
        "{} calls answered while starting or up, {starting} of them \"starting\"",
        replies.len()
    );
}

/// A container on the plugin's network is a pod to network policy: its labels and the
/// namespace of its `weft.namespace` label come from Docker, and a policy selecting it
/// isolates it (others cannot ping it; it still reaches them and gets their replies).
#[test]
#[ignore = "needs root, network namespaces and the Docker Engine: run with --include-ignored, as .ci/run does"]
fn a_plugin_container_is_isolated_by_a_policy_on_its_labels() {
    let Some(mut net) = setup() else {
        return;
    };
    let host = net.add_host("h").unwrap();
    // With the engine's socket: the plugin reads the containers' labels from Docker.
    let p = PluginRouter::start_with(&mut net, &host, "/var/run/docker.sock", &["--no-fastdp"]);
    let n = driver_network(&p);
    let image = TestImage::build().unwrap();
    let web = Container::run(
        &image,
        &[
            "--network",
            n.name.as_str(),
            "--label",
            "app=web",
            "--label",
            "weft.namespace=prod",
        ],
        &SLEEP,
    )
    .unwrap();
    let other = Container::run(&image, &["--network", n.name.as_str()], &SLEEP).unwrap();
    let (ip_web, ip_other) = (web.ip_of(&n).unwrap(), other.ip_of(&n).unwrap());
    assert_pings(&other, ip_web, &p);
    p.router
        .wait_until(Duration::from_secs(10), "both containers are pods", |r| {
            r.json(&["status", "policy"])["local_pods"].as_u64() == Some(2)
        });
    let f = std::env::temp_dir().join(format!("weft-plugin-policy-{}.yaml", std::process::id()));
    std::fs::write(
        &f,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: web, namespace: prod}\nspec:\n  podSelector: {matchLabels: {app: web}}\n",
    )
    .unwrap();
    let applied = p
        .router
        .weft(&["policy", "apply", "-f", &f.display().to_string()]);
    let _ = std::fs::remove_file(&f);
    assert!(applied.is_ok(), "{applied:?}");
    p.router.wait_until(
        Duration::from_secs(10),
        "the policy selects the web container",
        |r| r.json(&["status", "policy"])["isolated_ingress"].as_u64() == Some(1),
    );
    assert_no_ping(&other, ip_web);
    assert_pings(&web, ip_other, &p);
    p.router
        .weft(&["policy", "delete", "web", "-n", "prod"])
        .unwrap();
    assert_pings(&other, ip_web, &p);
}
