//! The router's firewall pieces: a best-effort opening for the bridge, the peer filter
//! on the sleeve and fast-path ports ([`PeerFilter`]), and the Docker networks' outside
//! access and separation ([`set_docker_outbound`]).
//!
//! On a host whose FORWARD policy is DROP while `bridge-nf-call-iptables` is 1 (Docker
//! does this), frames between ports of the `weft` bridge would be dropped by iptables.
//! Then one rule accepting bridge-to-bridge forwarding is added (once). Anywhere else
//! (a fresh network namespace, a host without iptables) this does nothing.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::watch;

/// Adds `FORWARD -i BRIDGE -o BRIDGE -j ACCEPT` when the namespace needs it.
pub(crate) fn allow_bridge(bridge: &str) {
    let nf =
        std::fs::read_to_string("/proc/sys/net/bridge/bridge-nf-call-iptables").unwrap_or_default();
    if nf.trim() != "1" || !forward_policy_is_drop() {
        return;
    }
    match insert_unless_present(&["FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT"]) {
        None => {}
        Some(Ok(s)) if s.success() => tracing::info!(
            "iptables: accepting forwarding within bridge {bridge} (FORWARD policy is DROP)"
        ),
        Some(Ok(s)) => tracing::warn!(
            "iptables could not add the FORWARD rule for bridge {bridge} ({s}); traffic between containers may be dropped"
        ),
        Some(Err(e)) => {
            tracing::warn!("iptables: {e}; traffic between containers may be dropped")
        }
    }
}

/// Whether iptables' FORWARD policy is DROP (not where there is no iptables: then nothing
/// can drop forwarded packets through it).
fn forward_policy_is_drop() -> bool {
    let Ok(out) = Command::new("iptables")
        .args(["-w", "-S", "FORWARD"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    else {
        return false;
    };
    let rules = String::from_utf8_lossy(&out.stdout);
    rules.lines().any(|l| l.trim() == "-P FORWARD DROP")
}

/// Inserts iptables rule `rule` (chain, then match and target) unless it is there:
/// `None` if it was, else how `iptables -I` ended.
fn insert_unless_present(rule: &[&str]) -> Option<std::io::Result<std::process::ExitStatus>> {
    let present = Command::new("iptables")
        .args(["-w", "-C"])
        .args(rule)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if present {
        return None;
    }
    let inserted = Command::new("iptables")
        .args(["-w", "-I"])
        .args(rule)
        .stdin(Stdio::null())
        .status();
    Some(inserted)
}

/// Drops UDP to the sleeve and fast-path ports from every address that is not a connected
/// peer, in an nftables table of weft's own (`weft_peers_PORT`, family inet, in the
/// router's network namespace). The table is made in one atomic `nft -f` batch at start
/// (replacing one a killed router left), its two sets of peer addresses are replaced in
/// one batch whenever the connected peers change, and it is deleted at stop. Nothing
/// else is touched: no other table, chain or set is flushed. Where `nft` is missing or
/// refused the ports stay open to anyone and the start-up log and `weft status` say so.
pub(crate) struct PeerFilter {
    /// The table's name, when it is installed.
    table: Option<String>,
    /// Why there is no filter, for status.
    off_reason: String,
    ports: [u16; 2],
    peers: Option<watch::Sender<BTreeSet<IpAddr>>>,
    removed: AtomicBool,
}

/// The table of the router on `port`.
pub(crate) fn peer_table_name(port: u16) -> String {
    format!("weft_peers_{port}")
}

/// Name of the table's counter of dropped stranger datagrams.
pub(crate) const STRANGERS_COUNTER: &str = "strangers";

/// The batch that (re)creates the table for `ports`, with empty peer sets.
fn table_batch(table: &str, ports: [u16; 2]) -> String {
    let [sleeve, fast] = ports;
    format!(
        "add table inet {table}\n\
         delete table inet {table}\n\
         table inet {table} {{\n\
         \x20 counter {STRANGERS_COUNTER} {{ }}\n\
         \x20 set peers4 {{ type ipv4_addr; }}\n\
         \x20 set peers6 {{ type ipv6_addr; }}\n\
         \x20 chain input {{\n\
         \x20   type filter hook input priority filter; policy accept;\n\
         \x20   iifname \"lo\" accept\n\
         \x20   udp dport {{ {sleeve}, {fast} }} ip saddr @peers4 accept\n\
         \x20   udp dport {{ {sleeve}, {fast} }} ip6 saddr @peers6 accept\n\
         \x20   udp dport {{ {sleeve}, {fast} }} counter name \"{STRANGERS_COUNTER}\" drop\n\
         \x20 }}\n\
         }}\n"
    )
}

/// The batch that makes the table's peer sets exactly `peers`. It creates nothing, so
/// after the table is deleted it fails rather than bringing it back.
fn peers_batch(table: &str, peers: &BTreeSet<IpAddr>) -> String {
    use std::fmt::Write as _;
    let mut out = format!("flush set inet {table} peers4\nflush set inet {table} peers6\n");
    for (set, v4) in [("peers4", true), ("peers6", false)] {
        let addrs: Vec<String> = peers
            .iter()
            .filter(|a| a.is_ipv4() == v4)
            .map(ToString::to_string)
            .collect();
        if !addrs.is_empty() {
            let _ = writeln!(
                out,
                "add element inet {table} {set} {{ {} }}",
                addrs.join(", ")
            );
        }
    }
    out
}

/// Runs `nft -f -` on `batch`; `Err` is nft's first line of complaint.
pub(crate) fn run_nft(batch: &str) -> Result<(), String> {
    use std::io::Write as _;
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("run nft: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(batch.as_bytes())
            .map_err(|e| format!("write to nft: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("wait for nft: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    Err(format!(
        "nft {}: {}",
        out.status,
        err.lines().next().unwrap_or("(no output)").trim()
    ))
}

impl PeerFilter {
    /// Installs the table for the sleeve port `port` and the fast-path port `port + 1`
    /// (no peers yet) and starts the task that keeps its peer sets current. Call inside
    /// tokio, before any connection.
    pub(crate) fn start(port: u16) -> Self {
        let ports = [port, port.wrapping_add(1)];
        let table = peer_table_name(port);
        if let Err(e) = run_nft(&table_batch(&table, ports)) {
            tracing::warn!(
                "no peer filter ({e}): UDP {} and {} take datagrams from any address",
                ports[0],
                ports[1]
            );
            return Self {
                table: None,
                off_reason: e,
                ports,
                peers: None,
                removed: AtomicBool::new(false),
            };
        }
        tracing::info!(
            "nftables table inet {table}: UDP {} and {} only from connected peers",
            ports[0],
            ports[1]
        );
        let (tx, mut rx) = watch::channel(BTreeSet::new());
        let name = table.clone();
        // One update at a time, always the latest set: none is lost, none overtakes.
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let batch = peers_batch(&name, &rx.borrow_and_update());
                match tokio::task::spawn_blocking(move || run_nft(&batch)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!("nftables peer set not updated: {e}"),
                    Err(e) => tracing::warn!("nftables peer set not updated: {e}"),
                }
            }
        });
        Self {
            table: Some(table),
            off_reason: String::new(),
            ports,
            peers: Some(tx),
            removed: AtomicBool::new(false),
        }
    }

    /// No filter, for `reason` (e.g. before it is set up).
    pub(crate) fn off(reason: &str) -> Self {
        Self {
            table: None,
            off_reason: reason.to_owned(),
            ports: [0, 0],
            peers: None,
            removed: AtomicBool::new(false),
        }
    }

    /// The addresses of the connected peers now (replaces the previous ones).
    pub(crate) fn set_peers(&self, peers: BTreeSet<IpAddr>) {
        if let Some(tx) = &self.peers {
            tx.send_if_modified(|cur| {
                let changed = *cur != peers;
                *cur = peers;
                changed
            });
        }
    }

    /// For `weft status`.
    pub(crate) fn status(&self) -> String {
        match &self.table {
            Some(t) if !self.removed.load(Ordering::Relaxed) => format!(
                "on: UDP {} and {} only from connected peers (nftables table inet {t})",
                self.ports[0], self.ports[1]
            ),
            Some(_) => "off: removed at stop".to_owned(),
            None => format!("off: {}", self.off_reason),
        }
    }

    /// Datagrams from strangers dropped so far (the table's counter); `None` without a
    /// filter or when nft cannot be asked. Runs `nft`: call off the async runtime.
    pub(crate) fn strangers_dropped(&self) -> Option<u64> {
        let t = self.table.as_ref()?;
        if self.removed.load(Ordering::Relaxed) {
            return None;
        }
        let out = Command::new("nft")
            .args(["list", "counter", "inet", t, STRANGERS_COUNTER])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        counter_packets(&String::from_utf8_lossy(&out.stdout))
    }

    /// Deletes the table (at stop). Only the first call does anything.
    pub(crate) fn remove(&self) {
        let Some(t) = &self.table else {
            return;
        };
        if self.removed.swap(true, Ordering::Relaxed) {
            return;
        }
        match run_nft(&format!("delete table inet {t}\n")) {
            Ok(()) => tracing::info!("nftables table inet {t} removed"),
            Err(e) => tracing::warn!("could not remove nftables table inet {t}: {e}"),
        }
    }
}

/// The packet count in `nft list counter` output (`... packets N bytes M ...`).
fn counter_packets(text: &str) -> Option<u64> {
    let mut words = text.split_whitespace();
    words.find(|w| *w == "packets")?;
    words.next()?.parse().ok()
}

impl Drop for PeerFilter {
    fn drop(&mut self) {
        self.remove();
    }
}

/// One Docker network's part in [`set_docker_outbound`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DockerNet {
    /// Its subnet (`a.b.c.d/n`, aligned).
    pub(crate) subnet: weft_core::ipam::Cidr,
    /// Whether its containers reach outside through the host (not `--internal`).
    pub(crate) outbound: bool,
}

/// The table of the Docker networks on `bridge`.
pub(crate) fn docker_table_name(bridge: &str) -> String {
    let b: String = bridge
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("weft_docker_{b}")
}

/// The batch that makes the table exactly what `nets` need: containers of a network
/// that is not `--internal` reach outside the bridge masqueraded as the host, and no
/// network's containers are routed into another's subnet (weft keeps subnets apart).
/// With no networks the table goes.
fn docker_batch(table: &str, bridge: &str, nets: &[DockerNet]) -> String {
    use std::fmt::Write as _;
    let mut out = format!("add table ip {table}\ndelete table ip {table}\n");
    if nets.is_empty() {
        return out;
    }
    let all: Vec<String> = nets.iter().map(|n| n.subnet.to_string()).collect();
    let _ = writeln!(out, "table ip {table} {{");
    let _ = writeln!(
        out,
        "  set subnets {{ type ipv4_addr; flags interval; auto-merge; elements = {{ {} }} }}",
        all.join(", ")
    );
    let _ = writeln!(out, "  chain forward {{");
    let _ = writeln!(
        out,
        "    type filter hook forward priority filter; policy accept;"
    );
    for n in nets {
        let _ = writeln!(
            out,
            "    iifname \"{bridge}\" ip saddr {s} ip daddr != {s} ip daddr @subnets drop",
            s = n.subnet
        );
    }
    let _ = writeln!(out, "  }}");
    let _ = writeln!(out, "  chain postrouting {{");
    let _ = writeln!(
        out,
        "    type nat hook postrouting priority srcnat; policy accept;"
    );
    for n in nets.iter().filter(|n| n.outbound) {
        let _ = writeln!(
            out,
            "    oifname != \"{bridge}\" ip saddr {} masquerade",
            n.subnet
        );
    }
    let _ = writeln!(out, "  }}");
    let _ = writeln!(out, "}}");
    out
}

/// Makes weft's table for the Docker networks on `bridge` what `nets` need (one atomic
/// `nft -f` batch), and turns on IPv4 forwarding in the router's namespace when one of
/// them reaches outside (a host running Docker forwards already). On a host whose
/// FORWARD policy is DROP (Docker's), the bridge's routed traffic is accepted as well,
/// out and back. Runs processes: call off the async runtime.
pub(crate) fn set_docker_outbound(bridge: &str, nets: &[DockerNet]) -> Result<(), String> {
    run_nft(&docker_batch(&docker_table_name(bridge), bridge, nets))?;
    if !nets.iter().any(|n| n.outbound) {
        return Ok(());
    }
    let fwd = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(fwd).unwrap_or_default().trim() != "1" {
        std::fs::write(fwd, "1").map_err(|e| format!("turn on IPv4 forwarding ({fwd}): {e}"))?;
        tracing::info!("IPv4 forwarding on, for the Docker networks' outside access");
    }
    allow_routed(bridge);
    Ok(())
}

/// Deletes the Docker networks' table (at stop).
pub(crate) fn remove_docker_outbound(bridge: &str) {
    let table = docker_table_name(bridge);
    if let Err(e) = run_nft(&format!("add table ip {table}\ndelete table ip {table}\n")) {
        tracing::warn!("could not remove nftables table ip {table}: {e}");
    }
}

/// With iptables' FORWARD policy DROP: accepts what containers on `bridge` send out
/// and what comes back (once each).
fn allow_routed(bridge: &str) {
    if !forward_policy_is_drop() {
        return;
    }
    let rules: [&[&str]; 2] = [
        &["FORWARD", "-i", bridge, "!", "-o", bridge, "-j", "ACCEPT"],
        &[
            "FORWARD",
            "-o",
            bridge,
            "-m",
            "conntrack",
            "--ctstate",
            "RELATED,ESTABLISHED",
            "-j",
            "ACCEPT",
        ],
    ];
    for rule in rules {
        let added = insert_unless_present(rule);
        if added.is_some_and(|r| !r.is_ok_and(|s| s.success())) {
            tracing::warn!(
                "iptables could not accept routed traffic of bridge {bridge}; Docker containers may not reach outside"
            );
        }
    }
}

/// With iptables' FORWARD policy DROP (Docker's): accepts the connections `weft service`
/// DNATs through `bridge`, in both directions (`--ctstate DNAT` holds for every packet of
/// such a connection), once each. Runs processes: call off the async runtime.
pub(crate) fn allow_services(bridge: &str) {
    if !forward_policy_is_drop() {
        return;
    }
    for dir in ["-i", "-o"] {
        let rule = services_rule(dir, bridge);
        let added = insert_unless_present(&rule);
        if added.is_some_and(|r| !r.is_ok_and(|s| s.success())) {
            tracing::warn!(
                "iptables could not accept the services' forwarded traffic on bridge {bridge}; exports and imports may not work"
            );
        }
    }
}

fn services_rule<'a>(dir: &'a str, bridge: &'a str) -> [&'a str; 9] {
    [
        "FORWARD",
        dir,
        bridge,
        "-m",
        "conntrack",
        "--ctstate",
        "DNAT",
        "-j",
        "ACCEPT",
    ]
}

/// Deletes what [`allow_services`] added (at stop and reset; gone already is no error).
pub(crate) fn disallow_services(bridge: &str) {
    for dir in ["-i", "-o"] {
        let rule = services_rule(dir, bridge);
        let _ = Command::new("iptables")
            .args(["-w", "-D"])
            .args(rule)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_docker_batch_masquerades_outbound_nets_and_keeps_subnets_apart() {
        let t = docker_table_name("weft");
        let nets = [
            DockerNet {
                subnet: "10.40.1.0/24".parse().unwrap(),
                outbound: true,
            },
            DockerNet {
                subnet: "10.40.2.0/24".parse().unwrap(),
                outbound: false,
            },
        ];
        let b = docker_batch(&t, "weft", &nets);
        assert!(b.starts_with("add table ip weft_docker_weft\ndelete table ip weft_docker_weft\n"));
        assert!(
            b.contains("elements = { 10.40.1.0/24, 10.40.2.0/24 }"),
            "{b}"
        );
        assert!(
            b.contains("oifname != \"weft\" ip saddr 10.40.1.0/24 masquerade"),
            "{b}"
        );
        assert!(
            !b.contains("ip saddr 10.40.2.0/24 masquerade"),
            "internal: {b}"
        );
        assert!(
            b.contains("iifname \"weft\" ip saddr 10.40.2.0/24 ip daddr != 10.40.2.0/24 ip daddr @subnets drop"),
            "{b}"
        );
        let none = docker_batch(&t, "weft", &[]);
        assert_eq!(none.lines().count(), 2, "only gone: {none}");
        assert_eq!(docker_table_name("br-x.1"), "weft_docker_br_x_1");
    }

    #[test]
    fn counter_output_is_read() {
        let out = "table inet weft_peers_6783 {\n\tcounter strangers {\n\t\tpackets 50 bytes 3200\n\t}\n}\n";
        assert_eq!(counter_packets(out), Some(50));
        assert_eq!(counter_packets("no counter here"), None);
    }

    #[test]
    fn batches_touch_only_weft_s_own_table() {
        let t = peer_table_name(6783);
        let table = table_batch(&t, [6783, 6784]);
        assert!(table.contains("udp dport { 6783, 6784 } counter name \"strangers\" drop"));
        let peers: BTreeSet<IpAddr> = ["198.18.0.2", "fd00::2", "198.18.0.3"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let update = peers_batch(&t, &peers);
        assert!(
            update.contains("add element inet weft_peers_6783 peers4 { 198.18.0.2, 198.18.0.3 }")
        );
        assert!(update.contains("add element inet weft_peers_6783 peers6 { fd00::2 }"));
        for batch in [table, update, peers_batch(&t, &BTreeSet::new())] {
            for line in batch.lines() {
                let l = line.trim();
                let own = l.starts_with("add table inet weft_peers_6783")
                    || l.starts_with("delete table inet weft_peers_6783")
                    || l.starts_with("table inet weft_peers_6783 ")
                    || l.starts_with("flush set inet weft_peers_6783 ")
                    || l.starts_with("add element inet weft_peers_6783 ")
                    || !l.contains("table") && !l.starts_with("flush");
                assert!(own, "touches something else: {l}");
            }
        }
    }
}
