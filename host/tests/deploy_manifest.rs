//! The Kubernetes manifest (`deploy/kubernetes/weft.yaml`) cannot be applied here (no
//! kubelet can be installed on these machines); this checks what can be: the commands it
//! runs parse with this `weft`, and its init container's install writes the plugin and
//! the conflist.

use std::path::Path;
use std::process::Command;

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

fn manifest() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/weft.yaml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The JSON flow sequence after `command: ` on the line that starts with `prefix`.
fn command_line(text: &str, prefix: &str) -> Vec<String> {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(&format!("command: {prefix}")))
        .unwrap_or_else(|| panic!("no command {prefix}"));
    serde_json::from_str(line.trim_start_matches("command: ")).unwrap()
}

#[test]
fn the_init_containers_install_runs_and_writes_the_plugin_and_the_conflist() {
    let text = manifest();
    let cmd = command_line(&text, r#"["weft", "cni", "install""#);
    let dir = std::env::temp_dir().join(format!("weft-k8s-install-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // The node's /opt/cni/bin and /etc/cni/net.d are mounted under /host.
    let args: Vec<String> = cmd[1..]
        .iter()
        .map(|a| match a.strip_prefix("/host/") {
            Some(rest) => dir.join(rest).display().to_string(),
            None => a.clone(),
        })
        .collect();
    let out = Command::new(WEFT).args(&args).output().unwrap();
    assert!(out.status.success(), "weft {args:?}: {out:?}");
    assert!(dir.join("opt/cni/bin/weft").is_file());
    let conf = std::fs::read(dir.join("etc/cni/net.d/10-weft.conflist")).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&conf).unwrap();
    assert_eq!(v["plugins"][0]["socket"], "/run/weft/weft.sock");
    assert_eq!(v["plugins"][1]["type"], "portmap");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_routers_and_the_probes_command_lines_parse() {
    let text = manifest();
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("- exec weft router "))
        .expect("the router's command");
    // As the kubelet fills the ConfigMap in: no peers, no extra flags, the default range.
    let filled = line
        .trim_start_matches("- exec weft ")
        .replace("$(PEERS)", "")
        .replace("$(EXTRA)", "")
        .replace("\"$(IPALLOC_RANGE)\"", "10.32.0.0/12");
    let mut args: Vec<&str> = filled.split_whitespace().collect();
    // --help last: clap refuses any unknown flag before it, and prints help for the rest.
    args.push("--help");
    let out = Command::new(WEFT).args(&args).output().unwrap();
    assert!(out.status.success(), "weft {args:?}: {out:?}");
    let probe = command_line(&text, r#"["weft", "status""#);
    let mut args: Vec<&str> = probe[1..].iter().map(String::as_str).collect();
    args.push("--help");
    let out = Command::new(WEFT).args(&args).output().unwrap();
    assert!(out.status.success(), "weft {args:?}: {out:?}");
}
