//! The CNI plugin end to end: a runtime-side driver of our own (the spec's environment
//! variables, the configuration piped to `weft` on stdin, the result parsed) against a
//! router in a test-host namespace, with test namespaces as the containers. Needs root;
//! skips with a printed reason otherwise. Each test builds and tears down its own
//! namespaces; the routers are killed by their recorded pids (the `TestNet` does it also
//! when a test fails).

mod common;

use common::{Opts, Router, WEFT, eventually, test_net};
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use weft_kernel_dp::testnet::{Ns, TestNet};

const VERSIONS: [&str; 4] = ["0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/// Debian's `containernetworking-plugins` (version 1.1: spec 1.0.0 at most).
const PLUGINS_DIR: &str = "/usr/lib/cni";

/// The bundled plugin `name`, or `None` (after saying why) where it is not installed; CI
/// (`WEFT_TESTNET_REQUIRED`) fails instead.
fn bundled(test: &str, name: &str) -> Option<PathBuf> {
    let p = Path::new(PLUGINS_DIR).join(name);
    if p.exists() {
        return Some(p);
    }
    assert!(
        std::env::var_os(weft_kernel_dp::testnet::REQUIRED_ENV).is_none(),
        "{test}: {} is not installed (Debian's containernetworking-plugins)",
        p.display()
    );
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: {} is not installed (apt-get install containernetworking-plugins)",
        p.display()
    );
    None
}

/// What one plugin run gave.
#[derive(Debug)]
struct Out {
    ok: bool,
    stdout: String,
    /// stdout as JSON (`Null` when empty or not JSON).
    json: Value,
}

impl Out {
    /// The spec's error code, when the run failed with an error object.
    fn code(&self) -> Option<u64> {
        self.json["code"].as_u64()
    }
}

/// The runtime's side: how a runtime runs the plugin `weft` on a host.
struct Runtime<'a> {
    host: &'a Ns,
    socket: PathBuf,
}

impl Runtime<'_> {
    fn conf(&self, version: &str) -> Value {
        json!({"cniVersion": version, "name": "weft", "type": "weft", "socket": self.socket})
    }

    /// Runs `weft` in the host's namespace with exactly `env` (and PATH) and `stdin`.
    fn run_raw(&self, env: &[(&str, &str)], stdin: &[u8]) -> Out {
        self.run_plugin(Path::new(WEFT), env, stdin)
    }

    /// Runs the plugin `bin` as [`Runtime::run_raw`] runs `weft`.
    fn run_plugin(&self, bin: &Path, env: &[(&str, &str)], stdin: &[u8]) -> Out {
        let mut child = Command::new("ip")
            .args(["netns", "exec", self.host.name()])
            .arg(bin)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The plugin may refuse before reading it all.
        let _ = child.stdin.take().unwrap().write_all(stdin);
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
        Out {
            ok: out.status.success(),
            stdout,
            json,
        }
    }

    /// `cmd` for (`id`, `ifname`) in `netns` (`None`: no CNI_NETNS) with `conf`.
    fn run(&self, cmd: &str, id: &str, netns: Option<&Path>, conf: &Value) -> Out {
        self.run_with(Path::new(WEFT), cmd, id, netns, conf)
    }

    /// [`Runtime::run`] for the plugin `bin`.
    fn run_with(&self, bin: &Path, cmd: &str, id: &str, netns: Option<&Path>, conf: &Value) -> Out {
        let ns = netns.map(|p| p.display().to_string());
        let mut env = vec![
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", id),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/usr/lib/cni"),
        ];
        if let Some(ns) = &ns {
            env.push(("CNI_NETNS", ns));
        }
        self.run_plugin(bin, &env, conf.to_string().as_bytes())
    }

    fn add(&self, version: &str, id: &str, c: &Ns) -> Value {
        let out = self.run("ADD", id, Some(&c.path()), &self.conf(version));
        assert!(out.ok, "ADD {id} ({version}): {out:?}");
        out.json
    }

    fn del(&self, version: &str, id: &str, netns: Option<&Path>) {
        let out = self.run("DEL", id, netns, &self.conf(version));
        assert!(out.ok, "DEL {id} ({version}): {out:?}");
        assert!(out.stdout.trim().is_empty(), "DEL prints nothing: {out:?}");
    }

    fn check(&self, version: &str, id: &str, c: &Ns, prev: &Value) -> Out {
        let mut conf = self.conf(version);
        conf["prevResult"] = prev.clone();
        self.run("CHECK", id, Some(&c.path()), &conf)
    }
}

fn start(net: &mut TestNet) -> (Ns, Router) {
    let host = net.add_host("h").unwrap();
    let r = Router::start(net, &host, &Opts::default());
    (host, r)
}

/// CNI attachments the router lists (`weft ps`).
fn cni_attachments(r: &Router) -> Vec<Value> {
    r.json(&["ps"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["id"].as_str().is_some_and(|i| i.starts_with("cni-")))
        .cloned()
        .collect()
}

/// Addresses IPAM holds on this router.
fn allocations(r: &Router) -> u64 {
    r.json(&["status", "ipam"])["allocations"].as_u64().unwrap()
}

fn links_in(c: &Ns) -> String {
    c.run(&["ip", "-o", "link", "show"]).unwrap_or_default()
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn add_check_del_and_version_in_every_spec_version() {
    let Some(mut net) = test_net() else {
        return;
    };
    let (host, r) = start(&mut net);
    let rt = Runtime {
        host: &host,
        socket: r.socket.clone(),
    };
    for (i, v) in VERSIONS.iter().enumerate() {
        let c = net.add_ns(&format!("c{i}")).unwrap();
        let id = format!("ctr{i}");
        // VERSION: every supported version, in the version asked for.
        let out = rt.run_raw(
            &[("CNI_COMMAND", "VERSION")],
            json!({"cniVersion": v}).to_string().as_bytes(),
        );
        assert!(out.ok, "{out:?}");
        assert_eq!(out.json["cniVersion"], *v);
        let supported: Vec<&str> = out.json["supportedVersions"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(supported, VERSIONS);

        let res = rt.add(v, &id, &c);
        assert_eq!(res["cniVersion"], *v, "{res}");
        let iface = &res["interfaces"][0];
        assert_eq!(iface["name"], "eth0", "{res}");
        assert_eq!(iface["sandbox"], c.path().display().to_string(), "{res}");
        let mac = iface["mac"].as_str().unwrap();
        assert_eq!(common::mac_of(&c, "eth0"), mac);
        let ip = &res["ips"][0];
        assert_eq!(ip["interface"], 0, "{res}");
        // `version` per address only before 1.0.0; the interface's MTU from 1.1.0.
        assert_eq!(ip.get("version").is_some(), v.starts_with('0'), "{res}");
        assert_eq!(iface.get("mtu").is_some(), *v == "1.1.0", "{res}");
        let addr = ip["address"].as_str().unwrap();
        assert!(addr.starts_with("10.3") && addr.ends_with("/12"), "{res}");
        let gw = ip["gateway"].as_str().unwrap();
        assert_eq!(res["routes"][0]["dst"], "0.0.0.0/0", "{res}");
        assert_eq!(res["routes"][0]["gw"], gw, "{res}");
        assert_eq!(res["dns"]["search"][0], "weave.local", "{res}");
        // What the result says is in the namespace: the address, the default route, and
        // the gateway (the host's address on the bridge) answers.
        let inside = c.run(&["ip", "-o", "-4", "addr", "show", "eth0"]).unwrap();
        assert!(inside.contains(addr), "{inside} lacks {addr}");
        let routes = c.run(&["ip", "-4", "route", "show", "default"]).unwrap();
        assert!(routes.contains(&format!("via {gw} dev eth0")), "{routes}");
        assert!(c.ping_until(
            gw.parse::<std::net::IpAddr>().unwrap(),
            Duration::from_secs(5)
        ));

        let check = rt.check(v, &id, &c, &res);
        if *v == "0.3.1" {
            // CHECK came with 0.4.0.
            assert!(!check.ok && check.code() == Some(1), "{check:?}");
        } else {
            assert!(check.ok && check.stdout.trim().is_empty(), "{check:?}");
        }
        if *v == "0.4.0" {
            // CHECK sees a route ADD made gone.
            c.run(&["ip", "route", "del", "default"]).unwrap();
            let check = rt.check(v, &id, &c, &res);
            assert!(!check.ok, "{check:?}");
            let details = check.json["details"].as_str().unwrap();
            assert!(details.contains("default route"), "{check:?}");
        }
        if *v == "1.0.0" {
            // CHECK sees what changed behind the plugin's back, and says what.
            c.run(&["ip", "addr", "del", addr, "dev", "eth0"]).unwrap();
            let check = rt.check(v, &id, &c, &res);
            assert!(!check.ok, "{check:?}");
            let details = check.json["details"].as_str().unwrap();
            assert!(details.contains(addr), "{check:?}");
        }
        rt.del(v, &id, Some(&c.path()));
        assert!(!links_in(&c).contains("eth0"), "{}", links_in(&c));
    }
    assert!(cni_attachments(&r).is_empty());
    // Only the gateway (the host's address on the subnet) is left allocated.
    assert_eq!(allocations(&r), 1, "{}", r.json(&["status", "ipam"]));
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn bad_input_gets_the_spec_error_codes_and_leaves_nothing_half_made() {
    let Some(mut net) = test_net() else {
        return;
    };
    let (host, r) = start(&mut net);
    let rt = Runtime {
        host: &host,
        socket: r.socket.clone(),
    };
    let c = net.add_ns("c").unwrap();
    let ns = c.path().display().to_string();
    let conf = rt.conf("1.0.0").to_string();
    let add_env = |id: &'static str| {
        vec![
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", id),
            ("CNI_IFNAME", "eth0"),
        ]
    };
    let mut with_ns = add_env("a1");
    with_ns.push(("CNI_NETNS", &ns));
    // (what, environment, stdin, the code expected)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<u8>, u64);
    let cases: Vec<Case<'_>> = vec![
        (
            "garbage on stdin",
            with_ns.clone(),
            b"{\x01not json".to_vec(),
            6,
        ),
        ("stdin not an object", with_ns.clone(), b"[1,2]".to_vec(), 6),
        (
            "no CNI_COMMAND",
            vec![("CNI_CONTAINERID", "a1")],
            conf.clone().into_bytes(),
            4,
        ),
        (
            "unknown command",
            vec![("CNI_COMMAND", "PLUG"), ("CNI_NETNS", &ns)],
            conf.clone().into_bytes(),
            4,
        ),
        ("no CNI_NETNS", add_env("a1"), conf.clone().into_bytes(), 4),
        (
            "no CNI_CONTAINERID",
            vec![
                ("CNI_COMMAND", "ADD"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_NETNS", &ns),
            ],
            conf.clone().into_bytes(),
            4,
        ),
        (
            "bad CNI_IFNAME",
            vec![
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "a1"),
                ("CNI_IFNAME", "eth/0"),
                ("CNI_NETNS", &ns),
            ],
            conf.clone().into_bytes(),
            4,
        ),
        (
            "a version weft does not speak",
            with_ns.clone(),
            rt.conf("0.2.0").to_string().into_bytes(),
            1,
        ),
        (
            "no name",
            with_ns.clone(),
            json!({"cniVersion": "1.0.0", "type": "weft", "socket": rt.socket})
                .to_string()
                .into_bytes(),
            7,
        ),
        (
            "a namespace that does not exist",
            vec![
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "a1"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_NETNS", "/var/run/netns/weft-no-such-ns"),
            ],
            conf.clone().into_bytes(),
            3,
        ),
    ];
    for (what, env, stdin, code) in cases {
        let out = rt.run_raw(&env, &stdin);
        assert!(!out.ok, "{what}: exit 0: {out:?}");
        assert_eq!(out.code(), Some(code), "{what}: {out:?}");
        assert!(out.json["msg"].is_string(), "{what}: {out:?}");
        assert!(out.json["cniVersion"].is_string(), "{what}: {out:?}");
    }
    // The field named in a refusal.
    let mut bad = rt.conf("1.0.0");
    bad["ipam"] = json!({"subnet": "not-a-cidr"});
    let out = rt.run("ADD", "a1", Some(&c.path()), &bad);
    assert_eq!(out.code(), Some(7), "{out:?}");
    assert!(
        out.json["details"]
            .as_str()
            .unwrap()
            .contains("ipam.subnet")
    );
    // Nothing was made by any of them.
    assert!(cni_attachments(&r).is_empty());
    assert!(!links_in(&c).contains("eth0"));
    assert_eq!(allocations(&r), 0, "{}", r.json(&["status", "ipam"]));
    // A second ADD of one (container, ifname) without DEL is refused and changes nothing.
    let first = rt.add("1.0.0", "a1", &c);
    let again = rt.run("ADD", "a1", Some(&c.path()), &rt.conf("1.0.0"));
    assert!(!again.ok && again.code() == Some(100), "{again:?}");
    assert_eq!(cni_attachments(&r).len(), 1);
    let inside = c.run(&["ip", "-o", "-4", "addr", "show", "eth0"]).unwrap();
    assert!(inside.contains(first["ips"][0]["address"].as_str().unwrap()));
    rt.del("1.0.0", "a1", Some(&c.path()));
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn fifty_add_del_cycles_leave_no_address_and_del_is_idempotent_even_without_the_netns() {
    let Some(mut net) = test_net() else {
        return;
    };
    let (host, r) = start(&mut net);
    let rt = Runtime {
        host: &host,
        socket: r.socket.clone(),
    };
    let c = net.add_ns("c").unwrap();
    for i in 0..50 {
        let id = format!("cycle{i}");
        let res = rt.add("1.1.0", &id, &c);
        assert!(res["ips"][0]["address"].is_string(), "{res}");
        rt.del("1.1.0", &id, Some(&c.path()));
    }
    assert!(cni_attachments(&r).is_empty());
    assert!(!links_in(&c).contains("eth0"));
    assert_eq!(
        allocations(&r),
        1,
        "only the gateway: {}",
        r.json(&["status", "ipam"])
    );
    // DEL twice: both succeed.
    rt.add("1.0.0", "twice", &c);
    rt.del("1.0.0", "twice", Some(&c.path()));
    rt.del("1.0.0", "twice", Some(&c.path()));
    // DEL without CNI_NETNS, and of something never added: success.
    rt.del("1.0.0", "never-added", None);
    // DEL after the namespace is gone (its veth went with it).
    let gone = net.add_ns("gone").unwrap();
    rt.add("1.0.0", "gone", &gone);
    assert_eq!(allocations(&r), 2);
    let out = Command::new("ip")
        .args(["netns", "del", gone.name()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    rt.del("1.0.0", "gone", Some(&gone.path()));
    assert!(cni_attachments(&r).is_empty());
    assert_eq!(allocations(&r), 1, "{}", r.json(&["status", "ipam"]));
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn del_while_the_router_is_down_is_done_when_it_is_back_and_status_says_50() {
    let Some(mut net) = test_net() else {
        return;
    };
    let (host, r) = start(&mut net);
    let rt = Runtime {
        host: &host,
        socket: r.socket.clone(),
    };
    let status = |rt: &Runtime<'_>| {
        rt.run_raw(
            &[("CNI_COMMAND", "STATUS")],
            rt.conf("1.1.0").to_string().as_bytes(),
        )
    };
    let up = status(&rt);
    assert!(up.ok && up.stdout.trim().is_empty(), "{up:?}");
    let c = net.add_ns("c").unwrap();
    rt.add("1.1.0", "down", &c);
    assert_eq!(allocations(&r), 2);
    assert!(net.kill(r.pid));
    let down = status(&rt);
    assert!(!down.ok && down.code() == Some(50), "{down:?}");
    // ADD now: try again later.
    let c2 = net.add_ns("c2").unwrap();
    let add = rt.run("ADD", "later", Some(&c2.path()), &rt.conf("1.1.0"));
    assert!(!add.ok && add.code() == Some(11), "{add:?}");
    // DEL succeeds at once and is kept on disk beside the socket.
    rt.del("1.1.0", "down", Some(&c.path()));
    let spool = r.socket.parent().unwrap().join("cni-del");
    let spooled = || std::fs::read_dir(&spool).map_or(0, Iterator::count);
    assert_eq!(spooled(), 1);
    // The router comes back (same state dir) and carries it out: the address is free.
    let r2 = Router::restart(&mut net, &host, &Opts::default());
    let _old = r;
    assert!(
        eventually(Duration::from_secs(15), || spooled() == 0),
        "spooled DEL not done; log:\n{}",
        r2.log_text()
    );
    assert!(cni_attachments(&r2).is_empty());
    assert!(!links_in(&c).contains("eth0"), "{}", links_in(&c));
    assert_eq!(allocations(&r2), 1, "{}", r2.json(&["status", "ipam"]));
    assert!(status(&rt).ok);
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn gc_frees_what_is_not_valid_and_a_simulated_reboot_frees_the_stale() {
    let Some(mut net) = test_net() else {
        return;
    };
    let (host, r) = start(&mut net);
    let rt = Runtime {
        host: &host,
        socket: r.socket.clone(),
    };
    let cs: Vec<Ns> = (0..3)
        .map(|i| net.add_ns(&format!("c{i}")).unwrap())
        .collect();
    for (i, c) in cs.iter().enumerate() {
        rt.add("1.1.0", &format!("g{i}"), c);
    }
    assert_eq!(allocations(&r), 4);
    let mut gc = rt.conf("1.1.0");
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "g0", "ifname": "eth0"}]);
    let out = rt.run_raw(&[("CNI_COMMAND", "GC")], gc.to_string().as_bytes());
    assert!(out.ok, "{out:?}");
    assert_eq!(cni_attachments(&r).len(), 1);
    assert!(links_in(&cs[0]).contains("eth0"));
    assert!(!links_in(&cs[1]).contains("eth0") && !links_in(&cs[2]).contains("eth0"));
    assert_eq!(allocations(&r), 2);
    // GC in a version before 1.1.0: refused with code 1.
    let mut old = gc.clone();
    old["cniVersion"] = json!("1.0.0");
    let out = rt.run_raw(&[("CNI_COMMAND", "GC")], old.to_string().as_bytes());
    assert!(!out.ok && out.code() == Some(1), "{out:?}");
    // A simulated reboot: the router dies, the containers' namespaces go, the router
    // starts again on its state dir. Their addresses are freed, the gateway kept.
    assert!(net.kill(r.pid));
    let out = Command::new("ip")
        .args(["netns", "del", cs[0].name()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let r2 = Router::restart(&mut net, &host, &Opts::default());
    let _old = r;
    assert!(cni_attachments(&r2).is_empty());
    assert_eq!(allocations(&r2), 1, "{}", r2.json(&["status", "ipam"]));
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn a_pod_gets_its_name_a_subnet_of_its_own_the_bridges_mtu_and_hairpin() {
    let Some(mut net) = test_net() else {
        return;
    };
    let (host, r) = start(&mut net);
    let rt = Runtime {
        host: &host,
        socket: r.socket.clone(),
    };
    let c = net.add_ns("pod").unwrap();
    let mut conf = rt.conf("1.1.0");
    conf["ipam"] = json!({"subnet": "10.40.0.0/16"});
    let ns = c.path().display().to_string();
    let env = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "pod1"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_NETNS", ns.as_str()),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web-0",
        ),
    ];
    let out = rt.run_raw(&env, conf.to_string().as_bytes());
    assert!(out.ok, "{out:?}");
    let res = out.json;
    let addr = res["ips"][0]["address"].as_str().unwrap();
    let gw = res["ips"][0]["gateway"].as_str().unwrap();
    assert!(addr.starts_with("10.40.") && addr.ends_with("/16"), "{res}");
    assert!(gw.starts_with("10.40."), "{res}");
    // weftDNS answers on the gateway, and knows the pod as NAME.NAMESPACE.
    assert_eq!(res["dns"]["nameservers"][0], gw, "{res}");
    let ip = addr.split('/').next().unwrap();
    let found = r.weft(&["dns-lookup", "web-0.prod"]).unwrap();
    assert!(found.contains(ip), "{found}");
    // Network policy sees it in its Kubernetes namespace.
    let ps = r.json(&["ps"]);
    assert!(
        ps.as_array()
            .unwrap()
            .iter()
            .any(|a| a["pod"]["namespace"] == "prod"),
        "{ps}"
    );
    // The interface has the bridge's MTU, and its bridge port hairpin on.
    let mtu = res["interfaces"][0]["mtu"].as_u64().unwrap();
    let bridge_mtu = host.run(&["cat", "/sys/class/net/weft/mtu"]).unwrap();
    assert_eq!(mtu.to_string(), bridge_mtu.trim());
    let inner_mtu = c.run(&["cat", "/sys/class/net/eth0/mtu"]).unwrap();
    assert_eq!(inner_mtu.trim(), bridge_mtu.trim());
    let ports = host.run(&["ls", "/sys/class/net/weft/brif"]).unwrap();
    let port = ports
        .split_whitespace()
        .find(|p| p.starts_with("vwc"))
        .unwrap_or_else(|| panic!("no CNI port on the bridge: {ports}"));
    let hairpin = host
        .run(&["cat", &format!("/sys/class/net/{port}/brport/hairpin_mode")])
        .unwrap();
    assert_eq!(hairpin.trim(), "1");
    // DEL takes the name away too.
    rt.del("1.1.0", "pod1", Some(&c.path()));
    assert!(r.weft(&["dns-lookup", "web-0.prod"]).is_err());
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn a_chained_portmap_reads_wefts_result_and_publishes_the_port() {
    let Some(mut net) = test_net() else {
        return;
    };
    let Some(portmap) = bundled("a_chained_portmap", "portmap") else {
        return;
    };
    let (host, r) = start(&mut net);
    // The host's own address the port is published on (on the underlay, in a namespace
    // of the test's own).
    let host_ip = net.underlay_attach(&host).unwrap();
    let rt = Runtime {
        host: &host,
        socket: r.socket.clone(),
    };
    let c = net.add_ns("web").unwrap();
    let v = "1.0.0";
    let res = rt.add(v, "web1", &c);
    let addr = res["ips"][0]["address"].as_str().unwrap();
    let ip = addr.split('/').next().unwrap().to_owned();
    // The container serves a line on port 80.
    let marker = format!("weft-cni-portmap-{}", std::process::id());
    let reply = format!("SYSTEM:echo {marker}");
    net.spawn(&c, &["socat", "TCP-LISTEN:80,fork,reuseaddr", &reply])
        .unwrap();
    // portmap, chained after weft: weft's result is its prevResult.
    let mut pm = json!({
        "cniVersion": v, "name": "weft", "type": "portmap",
        "capabilities": {"portMappings": true}, "snat": true,
        "runtimeConfig": {"portMappings": [
            {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}
        ]},
    });
    pm["prevResult"] = res.clone();
    let out = rt.run_with(&portmap, "ADD", "web1", Some(&c.path()), &pm);
    assert!(out.ok, "portmap ADD: {out:?}");
    // It passes weft's result on: the address, the interface with its sandbox.
    assert_eq!(out.json["ips"][0]["address"], addr, "{out:?}");
    assert_eq!(
        out.json["interfaces"][0]["sandbox"],
        res["interfaces"][0]["sandbox"]
    );
    let rules = host.run(&["iptables", "-t", "nat", "-S"]).unwrap();
    assert!(rules.contains(&ip), "no DNAT to {ip}: {rules}");
    // The published port answers with the container's line (from the host: its test
    // host does not forward, so nothing from outside it is routed in).
    let fetch = format!("socat -T 3 - TCP:{host_ip}:8080,connect-timeout=3 </dev/null");
    let got = eventually(Duration::from_secs(10), || {
        host.run(&["sh", "-c", &fetch])
            .is_ok_and(|o| o.contains(&marker))
    });
    assert!(
        got,
        "{host_ip}:8080 did not reach the container; rules:\n{rules}"
    );
    // (No portmap CHECK: Debian's 1.1.1 fails it on an IPv4-only container, looking for
    // an IPv6 chain it never made.)
    // DEL in reverse order: portmap, then weft; the rules and the address go.
    let out = rt.run_with(&portmap, "DEL", "web1", Some(&c.path()), &pm);
    assert!(out.ok, "portmap DEL: {out:?}");
    let mut del = rt.conf(v);
    del["prevResult"] = res;
    let out = rt.run("DEL", "web1", Some(&c.path()), &del);
    assert!(out.ok, "{out:?}");
    let rules = host.run(&["iptables", "-t", "nat", "-S"]).unwrap();
    assert!(!rules.contains(&ip), "DNAT to {ip} left: {rules}");
    assert!(cni_attachments(&r).is_empty());
    assert_eq!(allocations(&r), 1);
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn weft_is_the_ipam_of_the_bundled_bridge_plugin() {
    let Some(mut net) = test_net() else {
        return;
    };
    let Some(bridge) = bundled("weft_is_the_ipam_of_the_bundled_bridge_plugin", "bridge") else {
        return;
    };
    let (host, r) = start(&mut net);
    let rt = Runtime {
        host: &host,
        socket: r.socket.clone(),
    };
    // `bridge` finds its IPAM plugin `weft` on CNI_PATH: the directory of the test's weft.
    let weft_dir = Path::new(WEFT).parent().unwrap().display().to_string();
    let cni_path = format!("{PLUGINS_DIR}:{weft_dir}");
    let conf = json!({
        "cniVersion": "1.0.0", "name": "br", "type": "bridge", "bridge": "cni0",
        "isGateway": true, "ipMasq": false,
        "ipam": {"type": "weft", "socket": r.socket, "subnet": "10.44.0.0/16"},
    });
    let cs: Vec<Ns> = (0..2)
        .map(|i| net.add_ns(&format!("b{i}")).unwrap())
        .collect();
    let mut results = Vec::new();
    for (i, c) in cs.iter().enumerate() {
        let ns = c.path().display().to_string();
        let id = format!("br{i}");
        let env = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", id.as_str()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", ns.as_str()),
            ("CNI_PATH", cni_path.as_str()),
        ];
        let out = rt.run_plugin(&bridge, &env, conf.to_string().as_bytes());
        assert!(out.ok, "bridge ADD: {out:?}");
        results.push(out.json);
    }
    // Addresses from weft's IPAM in the subnet asked for, and the gateway on cni0.
    let addr = |res: &Value| res["ips"][0]["address"].as_str().unwrap().to_owned();
    let (a0, a1) = (addr(&results[0]), addr(&results[1]));
    assert!(
        a0.starts_with("10.44.") && a1.starts_with("10.44."),
        "{results:?}"
    );
    assert_ne!(a0, a1);
    let gw = results[0]["ips"][0]["gateway"].as_str().unwrap().to_owned();
    let on_bridge = host
        .run(&["ip", "-o", "-4", "addr", "show", "cni0"])
        .unwrap();
    assert!(on_bridge.contains(&gw), "{on_bridge} lacks {gw}");
    // weft holds them: two containers' addresses and the gateway; nothing is weft's
    // attachment (the plumbing is bridge's).
    assert_eq!(allocations(&r), 3, "{}", r.json(&["status", "ipam"]));
    assert!(cni_attachments(&r).is_empty());
    // The containers talk over bridge's cni0.
    let ip1: std::net::IpAddr = a1.split('/').next().unwrap().parse().unwrap();
    assert!(cs[0].ping_until(ip1, Duration::from_secs(5)));
    // A second interface of one container is a second owner: another address.
    let ns0 = cs[0].path().display().to_string();
    let mut env = vec![
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "br0"),
        ("CNI_IFNAME", "eth1"),
        ("CNI_NETNS", ns0.as_str()),
        ("CNI_PATH", cni_path.as_str()),
    ];
    let out = rt.run_plugin(&bridge, &env, conf.to_string().as_bytes());
    assert!(out.ok, "a second interface is a second owner: {out:?}");
    assert_eq!(allocations(&r), 4);
    env[0] = ("CNI_COMMAND", "DEL");
    let out = rt.run_plugin(&bridge, &env, conf.to_string().as_bytes());
    assert!(out.ok, "{out:?}");
    // DEL through bridge gives the addresses back; twice is fine.
    for (i, c) in cs.iter().enumerate() {
        let ns = c.path().display().to_string();
        let id = format!("br{i}");
        for _ in 0..2 {
            let env = [
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", id.as_str()),
                ("CNI_IFNAME", "eth0"),
                ("CNI_NETNS", ns.as_str()),
                ("CNI_PATH", cni_path.as_str()),
            ];
            let out = rt.run_plugin(&bridge, &env, conf.to_string().as_bytes());
            assert!(out.ok, "bridge DEL: {out:?}");
        }
    }
    assert_eq!(
        allocations(&r),
        1,
        "only the gateway: {}",
        r.json(&["status", "ipam"])
    );
    // weft's IPAM refuses a second ADD of one (container, ifname), as the spec says.
    let ipam_conf = json!({
        "cniVersion": "1.0.0", "name": "br", "type": "bridge",
        "ipam": {"type": "weft", "socket": r.socket},
    });
    let once = rt.run("ADD", "direct", Some(&cs[0].path()), &ipam_conf);
    assert!(once.ok && once.json.get("interfaces").is_none(), "{once:?}");
    let twice = rt.run("ADD", "direct", Some(&cs[0].path()), &ipam_conf);
    assert!(!twice.ok && twice.code() == Some(100), "{twice:?}");
    let del = rt.run("DEL", "direct", Some(&cs[0].path()), &ipam_conf);
    assert!(del.ok, "{del:?}");
    // GC frees the addresses of IPAM-only owners not listed, keeps those listed.
    for id in ["kept", "stale"] {
        let out = rt.run("ADD", id, Some(&cs[0].path()), &ipam_conf);
        assert!(out.ok, "{out:?}");
    }
    assert_eq!(allocations(&r), 3);
    let mut gc = rt.conf("1.1.0");
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "kept", "ifname": "eth0"}]);
    let out = rt.run_raw(&[("CNI_COMMAND", "GC")], gc.to_string().as_bytes());
    assert!(out.ok, "{out:?}");
    assert_eq!(allocations(&r), 2, "{}", r.json(&["status", "ipam"]));
    // DEL while the router is down: spooled, done when it is back.
    assert!(net.kill(r.pid));
    let del = rt.run("DEL", "kept", Some(&cs[0].path()), &ipam_conf);
    assert!(del.ok, "{del:?}");
    let spool = r.socket.parent().unwrap().join("cni-del");
    let spooled = || std::fs::read_dir(&spool).map_or(0, Iterator::count);
    assert_eq!(spooled(), 1);
    let r2 = Router::restart(&mut net, &host, &Opts::default());
    let _old = r;
    assert!(
        eventually(Duration::from_secs(15), || spooled() == 0),
        "spooled IPAM DEL not done; log:\n{}",
        r2.log_text()
    );
    assert_eq!(allocations(&r2), 1, "{}", r2.json(&["status", "ipam"]));
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn weft_delegates_to_the_ipam_plugin_its_conf_names() {
    let Some(mut net) = test_net() else {
        return;
    };
    if bundled(
        "weft_delegates_to_the_ipam_plugin_its_conf_names",
        "host-local",
    )
    .is_none()
    {
        return;
    }
    let (host, r) = start(&mut net);
    let rt = Runtime {
        host: &host,
        socket: r.socket.clone(),
    };
    // host-local keeps its leases in a directory of the test's own.
    let data = std::env::temp_dir().join(format!("weft-cni-hostlocal-{}", host.name()));
    let _ = std::fs::remove_dir_all(&data);
    let mut conf = rt.conf("1.0.0");
    conf["ipam"] = json!({
        "type": "host-local", "dataDir": data,
        "ranges": [[{"subnet": "10.50.0.0/24", "gateway": "10.50.0.1"}]],
    });
    let c = net.add_ns("c").unwrap();
    let ns = c.path().display().to_string();
    let env = |cmd: &'static str| {
        [
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", "hl1"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", ns.as_str()),
            ("CNI_PATH", PLUGINS_DIR),
        ]
    };
    let out = rt.run_raw(&env("ADD"), conf.to_string().as_bytes());
    assert!(out.ok, "{out:?}");
    let addr = out.json["ips"][0]["address"].as_str().unwrap().to_owned();
    assert!(
        addr.starts_with("10.50.0.") && addr.ends_with("/24"),
        "{out:?}"
    );
    assert_eq!(out.json["ips"][0]["gateway"], "10.50.0.1", "{out:?}");
    assert_eq!(out.json["interfaces"][0]["name"], "eth0", "{out:?}");
    // weft plumbed it: its veth, the gateway on its bridge, the route via it.
    assert_eq!(cni_attachments(&r).len(), 1);
    let bridge = host
        .run(&["ip", "-o", "-4", "addr", "show", "weft"])
        .unwrap();
    assert!(bridge.contains("10.50.0.1/24"), "{bridge}");
    assert!(c.ping_until(
        "10.50.0.1".parse::<std::net::IpAddr>().unwrap(),
        Duration::from_secs(5)
    ));
    // host-local holds the lease; weft's IPAM holds nothing for it (outside its range).
    let ip = addr.split('/').next().unwrap();
    let lease = data.join("weft").join(ip);
    assert!(lease.exists(), "no lease {}", lease.display());
    assert_eq!(allocations(&r), 0);
    // DEL: both let go.
    let out = rt.run_raw(&env("DEL"), conf.to_string().as_bytes());
    assert!(out.ok, "{out:?}");
    assert!(!lease.exists(), "lease {} kept", lease.display());
    assert!(cni_attachments(&r).is_empty());
    // A plugin that is not on CNI_PATH: the field named, nothing made.
    conf["ipam"]["type"] = json!("no-such-ipam");
    let out = rt.run_raw(&env("ADD"), conf.to_string().as_bytes());
    assert!(!out.ok && out.code() == Some(7), "{out:?}");
    assert!(out.json["details"].as_str().unwrap().contains("ipam.type"));
    assert!(cni_attachments(&r).is_empty());
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn parallel_adds_get_distinct_addresses_one_gateway_and_survive_a_router_restart() {
    let Some(mut net) = test_net() else {
        return;
    };
    let (host, r) = start(&mut net);
    let rt = Runtime {
        host: &host,
        socket: r.socket.clone(),
    };
    const N: usize = 10;
    let cs: Vec<Ns> = (0..N)
        .map(|i| net.add_ns(&format!("p{i}")).unwrap())
        .collect();
    // The runtime may run different containers at once: all first ADDs on a fresh host.
    let results: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = cs
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let rt = &rt;
                s.spawn(move || rt.add("1.1.0", &format!("par{i}"), c))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let addrs: std::collections::BTreeSet<&str> = results
        .iter()
        .map(|r| r["ips"][0]["address"].as_str().unwrap())
        .collect();
    assert_eq!(addrs.len(), N, "{results:?}");
    let gateways: std::collections::BTreeSet<&str> = results
        .iter()
        .map(|r| r["ips"][0]["gateway"].as_str().unwrap())
        .collect();
    assert_eq!(
        gateways.len(),
        1,
        "one gateway for the subnet: {gateways:?}"
    );
    assert_eq!(allocations(&r), N as u64 + 1);
    // The router dies and comes back: it adopts the attachments, CHECK still passes, and
    // DEL still frees.
    assert!(net.kill(r.pid));
    let r2 = Router::restart(&mut net, &host, &Opts::default());
    let _old = r;
    assert_eq!(cni_attachments(&r2).len(), N);
    assert_eq!(allocations(&r2), N as u64 + 1);
    for (i, (c, res)) in cs.iter().zip(&results).enumerate() {
        let check = rt.check("1.1.0", &format!("par{i}"), c, res);
        assert!(check.ok, "{check:?}");
        rt.del("1.1.0", &format!("par{i}"), Some(&c.path()));
    }
    assert!(cni_attachments(&r2).is_empty());
    assert_eq!(allocations(&r2), 1);
}
