//! Keeps the policy table applied: every new snapshot of the replicated state (from the
//! router task) is compiled for this host's pods, rendered and applied in one nftables
//! transaction; the shared part of the state is saved so that a restarted router starts
//! from it. Also answers `weft status policy`, `weft policy ls` and `explain` from the last
//! snapshot, writes the policy metrics, and logs blocked packets (rate-limited: one line
//! per pod and direction per [`BLOCKED_LOG_INTERVAL_MS`]).
//!
//! A router that starts while a table from its previous run is in place leaves that table
//! alone until the router task says the state has settled (heard from its peers, or a
//! timeout), so a restart opens no window without rules and none with rules built from a
//! partial view.

use super::nft::{self, Counted, Rendered};
use super::types::{PolicyLine, PolicyRuleCount, PolicyStatus};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use weft_core::policy::compile::{RuleSet, compile};
use weft_core::policy::eval::Direction;
use weft_core::policy::eval::evaluate;
use weft_core::policy::{Pod, World};

/// How often drop counters are read for the log.
pub(crate) const BLOCKED_LOG_INTERVAL_MS: u64 = 5_000;

/// What the router task hands over whenever the replicated state may have changed.
#[derive(Clone, Debug, Default)]
pub(crate) struct Snapshot {
    /// Policies, namespaces, pods (reachable owners only).
    pub(crate) world: World,
    /// This host's pods: attachment id → pod.
    pub(crate) local: BTreeMap<String, Pod>,
    /// The shared (multi-writer) part of the state, to save.
    pub(crate) shared: Vec<u8>,
    /// Whether the state has settled (see the module's doc).
    pub(crate) settled: bool,
}

#[derive(Default)]
struct Applied {
    snapshot: Arc<Snapshot>,
    rules: RuleSet,
    rendered: Rendered,
    at_unix_s: u64,
    compile_ms: u64,
    last_error: Option<String>,
    applies: u64,
    errors: u64,
    /// Drop counts already logged, by chain name.
    logged_drops: BTreeMap<String, u64>,
    /// [`digest`] of the snapshot's world.
    digest: String,
}

/// A hash of `w`, the same on every router that holds the same state.
fn digest(w: &World) -> String {
    use sha2::Digest as _;
    let mut pods: Vec<String> = w.pods.iter().map(|p| format!("{p:?}")).collect();
    pods.sort();
    let mut policies: Vec<String> = w.policies.iter().map(|p| format!("{p:?}")).collect();
    policies.sort();
    let text = format!("{policies:?}{:?}{pods:?}", w.namespaces);
    let h = sha2::Sha256::digest(text.as_bytes());
    h.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The enforcer; one per router.
pub(crate) struct Enforcer {
    state_path: PathBuf,
    applied: Mutex<Applied>,
    /// Set once the nfnetlink_log reader runs: then it logs blocked packets, one by one,
    /// and the counters are not read for the log.
    nflog: std::sync::atomic::AtomicBool,
    /// Strict subnet isolation: `None` when off, else this host's ports and subnets.
    isolation: Mutex<Option<nft::Isolation>>,
}

fn unix_now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whether a table from an earlier run is in place.
fn table_exists() -> bool {
    std::process::Command::new("nft")
        .args(["list", "table", "inet", nft::TABLE])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn list_table_json() -> Option<String> {
    let out = std::process::Command::new("nft")
        .args(["-j", "list", "table", "inet", nft::TABLE])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Enforcer {
    /// An enforcer saving the shared state at `state_path`; `isolate`: strict subnet
    /// isolation (`--isolate-subnets`).
    pub(crate) fn new(state_path: PathBuf, isolate: bool) -> Arc<Self> {
        Arc::new(Self {
            state_path,
            applied: Mutex::new(Applied::default()),
            nflog: std::sync::atomic::AtomicBool::new(false),
            isolation: Mutex::new(isolate.then(nft::Isolation::default)),
        })
    }

    /// This host's ports, for strict isolation (nothing when it is off); applied with the
    /// next snapshot.
    pub(crate) fn set_ports(&self, ports: &BTreeMap<String, super::pods::LocalPort>) {
        let Ok(mut iso) = self.isolation.lock() else {
            return;
        };
        let Some(iso) = iso.as_mut() else { return };
        iso.ports = ports
            .values()
            .map(|p| (p.ifname.clone(), p.cidrs.iter().map(|c| c.0).collect()))
            .collect();
        iso.subnets = ports
            .values()
            .flat_map(|p| p.cidrs.iter())
            .filter_map(|&(a, len)| weft_core::policy::Cidr::new(a, len).ok())
            .collect();
    }

    /// The shared state saved by the previous run, if any (handed to the router at start).
    pub(crate) fn load_shared(&self) -> Option<Vec<u8>> {
        crate::state::read_bounded(&self.state_path, crate::state::STATE_FILE_LEN_MAX)
            .ok()
            .flatten()
    }

    /// Applies every snapshot `rx` carries, the latest first, until the sender is gone.
    pub(crate) async fn run(self: Arc<Self>, mut rx: watch::Receiver<Option<Arc<Snapshot>>>) {
        let kept = tokio::task::spawn_blocking(table_exists)
            .await
            .unwrap_or(false);
        if kept {
            tracing::info!(
                "policy: the table from the previous run stays until this router has heard its peers"
            );
        }
        let mut waiting = kept;
        let mut tick = tokio::time::interval(Duration::from_millis(BLOCKED_LOG_INTERVAL_MS));
        loop {
            tokio::select! {
                r = rx.changed() => {
                    if r.is_err() {
                        return;
                    }
                    let snap = rx.borrow_and_update().clone();
                    let Some(snap) = snap else { continue };
                    if waiting && !snap.settled {
                        continue;
                    }
                    waiting = false;
                    let me = Arc::clone(&self);
                    let _ = tokio::task::spawn_blocking(move || me.apply(snap)).await;
                }
                _ = tick.tick() => {
                    let me = Arc::clone(&self);
                    let _ = tokio::task::spawn_blocking(move || me.log_blocked()).await;
                }
            }
        }
    }

    /// Compiles, renders and applies `snap`; on failure the table in place stays.
    fn apply(&self, snap: Arc<Snapshot>) {
        let started = std::time::Instant::now();
        let local: BTreeSet<Ipv4Addr> = snap
            .local
            .values()
            .flat_map(|p| p.addrs.iter().copied())
            .collect();
        let rules = compile(&snap.world, &|p: &Pod| {
            p.addrs.iter().any(|a| local.contains(a))
        });
        let iso = self.isolation.lock().ok().and_then(|i| i.clone());
        let rendered = nft::render(&rules, iso.as_ref());
        let compile_ms = started.elapsed().as_millis() as u64;
        let result = crate::firewall::run_nft(&rendered.batch);
        if let Err(e) = crate::state::write_atomic(&self.state_path, &snap.shared) {
            tracing::warn!(
                "policy state not saved ({}): {e}",
                self.state_path.display()
            );
        }
        let Ok(mut a) = self.applied.lock() else {
            return;
        };
        a.applies += 1;
        match result {
            Ok(()) => {
                if a.rendered.batch != rendered.batch {
                    tracing::info!(
                        "policy: {} policies, {} local pods isolated (in {}, out {}), table applied in {} ms",
                        snap.world.policies.len(),
                        rules.ingress.len().max(rules.egress.len()),
                        rules.ingress.len(),
                        rules.egress.len(),
                        started.elapsed().as_millis()
                    );
                    a.logged_drops.clear();
                }
                a.digest = digest(&snap.world);
                a.rules = rules;
                a.rendered = rendered;
                a.snapshot = snap;
                a.at_unix_s = unix_now_s();
                a.compile_ms = compile_ms;
                a.last_error = None;
            }
            Err(e) => {
                a.errors += 1;
                tracing::warn!("policy table not applied, the previous one stays: {e}");
                a.last_error = Some(e);
            }
        }
    }

    fn counters(&self) -> BTreeMap<String, u64> {
        list_table_json()
            .map(|j| nft::read_counters(&j))
            .unwrap_or_default()
    }

    /// Which local pod (id) has address `a`.
    fn pod_name(snap: &Snapshot, a: Ipv4Addr) -> String {
        snap.local
            .iter()
            .find(|(_, p)| p.addrs.contains(&a))
            .map_or_else(|| a.to_string(), |(id, p)| format!("{}/{id}", p.namespace))
    }

    /// Starts the thread that logs blocked packets from nfnetlink_log.
    pub(crate) fn start_nflog(self: &Arc<Self>) {
        let me = Arc::clone(self);
        let log: Arc<dyn Fn(super::nflog::Dropped) + Send + Sync> = Arc::new(move |d| {
            me.nflog.store(true, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!("{}", me.describe(&d));
        });
        let _ = std::thread::Builder::new()
            .name("weft-nflog".into())
            .spawn(move || super::nflog::run(log));
    }

    /// One line for a blocked packet: what, the pod it hit, the policies isolating it.
    pub(crate) fn describe(&self, d: &super::nflog::Dropped) -> String {
        let proto = weft_core::policy::Proto::from_number(d.proto)
            .map_or_else(|| format!("proto {}", d.proto), |p| p.as_str().to_owned());
        let what = if d.port != 0 {
            format!("{proto} {} -> {}:{}", d.src, d.dst, d.port)
        } else {
            format!("{proto} {} -> {}", d.src, d.dst)
        };
        let Ok(a) = self.applied.lock() else {
            return format!("policy: blocked {what}");
        };
        let Some(Counted::Dropped(i, dir)) = a.rendered.counters.get(&d.prefix).cloned() else {
            return format!("policy: blocked {what}");
        };
        let (side, pod) = match dir {
            Direction::Ingress => ("ingress of", d.dst),
            Direction::Egress => ("egress of", d.src),
        };
        let by: Vec<String> = a.rules.chains.get(i).map_or_else(Vec::new, |c| {
            c.isolated_by
                .iter()
                .filter_map(|&p| a.rules.policies.get(p).map(ToString::to_string))
                .collect()
        });
        format!(
            "policy: blocked {what}: {side} {} isolated by {}, no rule allows it",
            Self::pod_name(&a.snapshot, pod),
            by.join(", ")
        )
    }

    fn log_blocked(&self) {
        if self.nflog.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let has_pods = self
            .applied
            .lock()
            .is_ok_and(|a| !a.rules.ingress.is_empty() || !a.rules.egress.is_empty());
        if !has_pods {
            return;
        }
        let counts = self.counters();
        let Ok(mut a) = self.applied.lock() else {
            return;
        };
        let a = &mut *a;
        for (chain, what) in &a.rendered.counters {
            let Counted::Dropped(i, dir) = *what else {
                continue;
            };
            let n = counts.get(chain).copied().unwrap_or(0);
            let before = a.logged_drops.insert(chain.clone(), n).unwrap_or(0);
            if n <= before {
                continue;
            }
            let map = match dir {
                Direction::Ingress => &a.rules.ingress,
                Direction::Egress => &a.rules.egress,
            };
            let pods: Vec<String> = map
                .iter()
                .filter(|&(_, &c)| c == i)
                .map(|(addr, _)| Self::pod_name(&a.snapshot, *addr))
                .collect();
            let by: Vec<String> = a.rules.chains[i]
                .isolated_by
                .iter()
                .filter_map(|&p| a.rules.policies.get(p).map(ToString::to_string))
                .collect();
            tracing::warn!(
                "policy: blocked {} packets {} {} (isolated by {}; `weft policy explain SRC DST PORT/PROTO` says why)",
                n - before,
                match dir {
                    Direction::Ingress => "to",
                    Direction::Egress => "from",
                },
                pods.join(", "),
                by.join(", ")
            );
        }
    }

    /// `weft status policy`.
    pub(crate) fn status(&self) -> PolicyStatus {
        let counts = self.counters();
        let Ok(a) = self.applied.lock() else {
            return PolicyStatus::default();
        };
        let mut blocked: BTreeMap<String, u64> = BTreeMap::new();
        let mut rules = Vec::new();
        for (chain, what) in &a.rendered.counters {
            let n = counts.get(chain).copied().unwrap_or(0);
            match *what {
                Counted::Rule(p, dir, rule) => rules.push(PolicyRuleCount {
                    policy: a
                        .rules
                        .policies
                        .get(p)
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                    direction: dir_name(dir).to_owned(),
                    rule: rule as u64,
                    packets: n,
                }),
                Counted::Dropped(i, _) => {
                    for &p in &a.rules.chains[i].isolated_by {
                        if let Some(k) = a.rules.policies.get(p) {
                            *blocked.entry(k.to_string()).or_insert(0) += n;
                        }
                    }
                }
            }
        }
        let w = &a.snapshot.world;
        let policies = w
            .policies
            .iter()
            .map(|p| PolicyLine {
                policy: p.key.to_string(),
                ingress: p.ingress_isolates,
                egress: p.egress_isolates,
                ingress_rules: p.ingress.len() as u64,
                egress_rules: p.egress.len() as u64,
                local_pods: a
                    .snapshot
                    .local
                    .values()
                    .filter(|pod| {
                        pod.namespace == p.key.namespace && p.pod_selector.matches(&pod.labels)
                    })
                    .count() as u64,
                blocked_packets: blocked.get(&p.key.to_string()).copied().unwrap_or(0),
            })
            .collect();
        PolicyStatus {
            table: format!("inet {}", nft::TABLE),
            applied_at_unix_s: a.at_unix_s,
            compile_ms: a.compile_ms,
            applies: a.applies,
            errors: a.errors,
            last_error: a.last_error.clone(),
            pods: w.pods.len() as u64,
            local_pods: a.snapshot.local.len() as u64,
            namespaces: w.namespaces.keys().cloned().collect(),
            isolated_ingress: a.rules.ingress.len() as u64,
            isolated_egress: a.rules.egress.len() as u64,
            chains: a.rules.chains.len() as u64,
            elements: a
                .rules
                .chains
                .iter()
                .map(|c| (c.any.len() + c.ports.len()) as u64)
                .sum(),
            policies,
            rules,
            digest: a.digest.clone(),
        }
    }

    /// `weft policy explain`: the decision on the last snapshot, and why in one line.
    pub(crate) fn explain(
        &self,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        proto: u8,
        port: u16,
    ) -> (bool, String) {
        let Ok(a) = self.applied.lock() else {
            return (false, String::new());
        };
        let d = evaluate(&a.snapshot.world, src, dst, proto, port);
        (d.allowed(), d.to_string())
    }

    /// The policy part of `/metrics`.
    pub(crate) fn metrics(&self, m: &mut crate::metrics::Metrics) {
        let st = self.status();
        use crate::metrics::Kind;
        m.labelled(
            "weft_policy_blocked_packets_total",
            "Packets to or from this host's pods dropped because no rule of the policies isolating them allowed them, per policy.",
            Kind::Counter,
            "policy",
            st.policies.iter().map(|p| (p.policy.clone(), p.blocked_packets)),
        );
        m.family(
            "weft_policy_rule_packets_total",
            "Packets (first of each connection) a policy rule allowed here.",
            Kind::Counter,
            ["policy", "direction", "rule"],
            st.rules.iter().map(|r| {
                (
                    [r.policy.clone(), r.direction.clone(), r.rule.to_string()],
                    r.packets,
                )
            }),
        );
        m.gauge(
            "weft_policy_policies",
            "NetworkPolicies in the replicated state.",
            st.policies.len() as u64,
        );
        m.gauge(
            "weft_policy_table_elements",
            "Elements in this host's policy table.",
            st.elements,
        );
        m.counter(
            "weft_policy_apply_errors_total",
            "Policy tables nftables refused (the previous table stayed).",
            st.errors,
        );
    }

    /// Deletes the table (`weft reset`).
    pub(crate) fn remove(&self) {
        let _ = crate::firewall::run_nft(&nft::delete_batch());
    }
}

fn dir_name(d: Direction) -> &'static str {
    match d {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    }
}
