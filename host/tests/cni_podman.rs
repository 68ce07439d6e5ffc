//! podman 4.3 (its CNI backend) on the `weft` network that `weft cni install` writes: two
//! containers on host A talk by address, a container's name is in weftDNS on both hosts,
//! one talks to a namespace attached on host B over the overlay, and `-p 8080:80` (the
//! chained `portmap`) reaches a container from host A and from a namespace outside it.
//!
//! podman runs with the test host's network namespace but the machine's mount namespace
//! (`nsenter --net`, not `ip netns exec`, whose private mounts would hide the container
//! namespaces podman bind-mounts under /run/netns from the router), with its own
//! containers.conf, storage and run dirs under a temp dir, and an image imported from
//! busybox-static (no registry). Needs root, podman and containernetworking-plugins; skips
//! with a printed reason otherwise (fails where `WEFT_TESTNET_REQUIRED` is set).

mod common;

use common::{Opts, Router, eventually, test_net, underlay_hosts, wait_reachable};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use weft_kernel_dp::testnet::Ns;

const IMAGE: &str = "localhost/weft-test-busybox";
const BUSYBOX: &str = "/bin/busybox";

/// One isolated podman: its config, plugin, storage and run dirs, removed (with every
/// container it made) on drop, also when the test fails.
struct Podman {
    dir: PathBuf,
    /// The namespace podman and the plugins it runs live in (the test host's).
    netns: PathBuf,
}

impl Podman {
    fn new(host: &Ns) -> Self {
        let dir = std::env::temp_dir().join(format!("weft-podman-{}", host.name()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let plugin_dir = dir.join("bin");
        // root has no CAP_SYS_RESOURCE here: ulimits podman may set; CNI, not netavark.
        let conf = format!(
            "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=4096:4096\"]\n\
             [network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [{:?}, \"/usr/lib/cni\"]\n\
             network_config_dir = {:?}\n",
            plugin_dir.display().to_string(),
            dir.join("net.d").display().to_string()
        );
        std::fs::write(dir.join("containers.conf"), conf).unwrap();
        Self {
            dir,
            netns: host.path(),
        }
    }

    fn conf_dir(&self) -> PathBuf {
        self.dir.join("net.d")
    }

    /// Where podman looks for plugins (besides Debian's).
    fn plugin_dir(&self) -> PathBuf {
        self.dir.join("bin")
    }

    /// `podman ARGS` in the host's network namespace: (success, stdout + stderr).
    fn run(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", self.netns.display()))
            .arg("podman")
            .arg("--root")
            .arg(self.dir.join("storage"))
            .arg("--runroot")
            .arg(self.dir.join("run"))
            .args(["--storage-driver", "vfs"])
            .args(args)
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .output()
            .unwrap();
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    fn ok(&self, args: &[&str]) -> String {
        let (ok, text) = self.run(args);
        assert!(ok, "podman {args:?}: {text}");
        text
    }

    /// Imports an image made of busybox-static alone.
    fn import_busybox(&self) {
        let root = self.dir.join("rootfs");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
        for tool in ["sh", "nc", "echo", "cat", "ip", "sleep", "ping", "nslookup"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(tool)).unwrap();
        }
        let tar = self.dir.join("rootfs.tar");
        let out = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        self.ok(&["import", &tar.display().to_string(), IMAGE]);
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "--force", "--all", "--time", "0"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Why this machine cannot run the test, if it cannot.
fn missing() -> Option<String> {
    if Command::new("podman").arg("--version").output().is_err() {
        return Some("podman is not installed".into());
    }
    if !Path::new("/usr/lib/cni/portmap").exists() {
        return Some("containernetworking-plugins is not installed".into());
    }
    if !Path::new(BUSYBOX).exists() {
        return Some("busybox-static is not installed".into());
    }
    None
}

fn skip(test: &str) -> bool {
    let Some(why) = missing() else {
        return false;
    };
    assert!(
        std::env::var_os(weft_kernel_dp::testnet::REQUIRED_ENV).is_none(),
        "{test}: {why}"
    );
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
    true
}

#[test]
#[ignore = "needs root, network namespaces and podman: run as root with --include-ignored, as .ci/run does"]
fn podman_containers_on_weft_talk_across_hosts_and_publish_a_port() {
    let test = "podman_containers_on_weft_talk_across_hosts_and_publish_a_port";
    let Some(mut net) = test_net() else {
        return;
    };
    if skip(test) {
        return;
    }
    let ([ha, hb, ho], [ip_a, _, _]) = underlay_hosts(&mut net, ["a", "b", "o"]);
    let a = Router::start(&mut net, &ha, &Opts::default());
    let b_opts = Opts {
        peers: vec![ip_a.to_string()],
        ..Opts::default()
    };
    let b = Router::start(&mut net, &hb, &b_opts);
    wait_reachable(&[&a, &b], 1, Duration::from_secs(20));
    // A namespace on host B, attached the plain way, serving a line.
    let cb = net.add_ns("cb").unwrap();
    let p = cb.path().display().to_string();
    let cb_ip = b.weft(&["attach", "--netns", &p]).unwrap();
    let cb_ip = cb_ip.trim().split('/').next().unwrap().to_owned();
    net.spawn(
        &cb,
        &[
            "socat",
            "TCP-LISTEN:81,fork,reuseaddr",
            "SYSTEM:echo from-b",
        ],
    )
    .unwrap();

    // On host A: the plugin and the conflist, as a user installs them.
    let podman = Podman::new(&ha);
    let bin = podman.plugin_dir().display().to_string();
    let conf = podman.conf_dir().display().to_string();
    let installed = a
        .weft(&["cni", "install", "--bin-dir", &bin, "--conf-dir", &conf])
        .unwrap();
    assert!(installed.contains("10-weft.conflist"), "{installed}");
    podman.import_busybox();
    let networks = podman.ok(&["network", "ls", "--format", "{{.Name}}"]);
    assert!(networks.lines().any(|l| l.trim() == "weft"), "{networks}");

    // A server container with a published port, and a client on the same host.
    podman.ok(&[
        "run",
        "-d",
        "--name",
        "srv",
        "--network",
        "weft",
        "-p",
        "8080:80",
        IMAGE,
        "sh",
        "-c",
        "while true; do echo from-srv | nc -l -p 80; done",
    ]);
    let srv_ip = podman.ok(&[
        "inspect",
        "srv",
        "--format",
        "{{.NetworkSettings.Networks.weft.IPAddress}}",
    ]);
    let srv_ip = srv_ip.trim().to_owned();
    assert!(srv_ip.starts_with("10.3"), "{srv_ip}");
    // Its name (podman passes it as an alias) is in weftDNS, across hosts too.
    let named = |r: &Router| {
        r.weft(&["dns-lookup", "srv"])
            .is_ok_and(|o| o.contains(&srv_ip))
    };
    assert!(named(&a), "srv is not in weftDNS on A");
    assert!(
        eventually(Duration::from_secs(10), || named(&b)),
        "srv is not in weftDNS on B"
    );
    // ... and another container finds it by name through weftDNS, its nameserver.
    let (_, looked_up) = podman.run(&[
        "run",
        "--rm",
        "--network",
        "weft",
        IMAGE,
        "nslookup",
        "srv.weave.local",
    ]);
    assert!(looked_up.contains(&srv_ip), "{looked_up}");
    let by_address = eventually(Duration::from_secs(10), || {
        let (_, out) = podman.run(&[
            "run",
            "--rm",
            "--network",
            "weft",
            IMAGE,
            "sh",
            "-c",
            &format!("nc -w 3 {srv_ip} 80 </dev/null"),
        ]);
        out.contains("from-srv")
    });
    assert!(by_address, "a container did not reach srv at {srv_ip}");
    // Across the overlay: a container on A reaches the namespace on B, and back.
    let across = eventually(Duration::from_secs(15), || {
        let (_, out) = podman.run(&[
            "run",
            "--rm",
            "--network",
            "weft",
            IMAGE,
            "sh",
            "-c",
            &format!("nc -w 3 {cb_ip} 81 </dev/null"),
        ]);
        out.contains("from-b")
    });
    assert!(across, "no container on A reached {cb_ip} on B");
    let fetch = format!("socat -T 3 - TCP:{srv_ip}:80,connect-timeout=3 </dev/null");
    let back = eventually(Duration::from_secs(10), || {
        cb.run(&["sh", "-c", &fetch])
            .is_ok_and(|o| o.contains("from-srv"))
    });
    assert!(back, "B's namespace did not reach srv at {srv_ip}");
    // -p 8080:80, from host A to its own underlay address.
    let fetch = format!("socat -T 3 - TCP:{ip_a}:8080,connect-timeout=3 </dev/null");
    let published = eventually(Duration::from_secs(10), || {
        ha.run(&["sh", "-c", &fetch])
            .is_ok_and(|o| o.contains("from-srv"))
    });
    assert!(published, "{ip_a}:8080 did not reach srv");
    // And from `o`, a namespace on the underlay playing the outside world. A published
    // port is the kernel's DNAT and forwarding on host A (portmap's rules), not weft's
    // relaying: host A forwards for this part only.
    ha.run(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]).unwrap();
    let outside = eventually(Duration::from_secs(10), || {
        ho.run(&["sh", "-c", &fetch])
            .is_ok_and(|o| o.contains("from-srv"))
    });
    assert!(outside, "{ip_a}:8080 did not reach srv from outside host A");
    ha.run(&["sysctl", "-qw", "net.ipv4.ip_forward=0"]).unwrap();
    // Removing the containers gives their addresses back (the gateway stays).
    podman.ok(&["rm", "--force", "--time", "0", "srv"]);
    let ps = a.json(&["ps"]);
    let cni = ps
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["id"].as_str().is_some_and(|i| i.starts_with("cni-")))
        .count();
    assert_eq!(cni, 0, "{ps}");
    assert!(a.weft(&["dns-lookup", "srv"]).is_err(), "srv's name kept");
    let ipam = a.json(&["status", "ipam"]);
    assert_eq!(ipam["allocations"], 1, "{ipam}");
}
