//! The kernel fast datapath: a VXLAN device (UDP port + 1, 6784 by default) on the `weft`
//! bridge, programmed over rtnetlink, so packets between containers on fast-path peers
//! never enter userspace.
//!
//! How it fits with the sleeve: the VXLAN port and the sleeve's TAP are *isolated* bridge
//! ports (they never exchange frames with each other, only with containers), so a frame
//! enters the overlay once, by one of them. Each direct peer is checked by heartbeat frames
//! written to a third port (`weft-fdp`, not isolated) and addressed to the peer's heartbeat
//! MAC: they cross the real kernel path (bridge -> VXLAN -> peer's bridge) and nothing
//! else carries them. A peer whose heartbeats work both ways is on the fast path: it gets
//! an all-zero (flood) FDB entry, and the sleeve leaves its traffic to the kernel; when
//! heartbeats stop, the entry goes and the sleeve carries it again.
//!
//! Not used when a password is set (this kernel has no ESP crypto) or with `--no-fastdp`.

use crate::sleeve::{self, Datapath};
use crate::state::StateDir;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};
use weft_core::fastdp::{FastPaths, SleeveReason, heartbeat_mac};
use weft_core::peer::PeerName;
use weft_kernel_dp::{MacAddr, Netlink, VxlanConfig};
use weft_uring_dp::{Tap, TapOptions};

/// The VXLAN device on the bridge.
pub(crate) const VXLAN_NAME: &str = "weft-vxlan";
/// The heartbeat port on the bridge.
pub(crate) const HEARTBEAT_TAP_NAME: &str = "weft-fdp";
/// VXLAN network identifier weft uses.
pub(crate) const VNI: u32 = 0x7765;
/// How often heartbeats are sent and the kernel state reconciled, in ms.
pub(crate) const TICK_INTERVAL_MS: u64 = 200;
/// Our container MACs are re-read from the state dir every this many ticks.
pub(crate) const LOCAL_MACS_EVERY_TICKS: u64 = 5;
/// Heartbeat frames queued from the reader thread at most.
pub(crate) const FRAMES_QUEUE_LEN_MAX: usize = 1024;

/// Each direct peer's mode, as status shows it.
pub(crate) type Modes = Arc<Mutex<BTreeMap<PeerName, Result<(), SleeveReason>>>>;

/// Whether the fast path runs, and if not, why.
pub(crate) enum FastDp {
    /// Not used on this router; the reason is shown for every connection.
    Off(String),
    /// Running.
    On {
        /// Direct peers and their underlay addresses, from the router task.
        peers: watch::Sender<BTreeMap<PeerName, IpAddr>>,
        /// Modes published by the fast-path task.
        modes: Modes,
    },
}

/// What carries a connection's container traffic, as status and metrics show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum LinkMode {
    /// Not established: nothing yet.
    Down,
    /// The kernel's VXLAN path.
    FastDp,
    /// The userspace sleeve, and why not the fast path.
    Sleeve(String),
}

impl LinkMode {
    /// The metrics label: `fastdp` or `sleeve` (`none` when down).
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Self::Down => "none",
            Self::FastDp => "fastdp",
            Self::Sleeve(_) => "sleeve",
        }
    }
}

impl std::fmt::Display for LinkMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sleeve(why) => write!(f, "sleeve: {why}"),
            other => f.write_str(other.label()),
        }
    }
}

impl FastDp {
    /// Which datapath carries an established connection to `peer`.
    pub(crate) fn mode(&self, peer: PeerName) -> LinkMode {
        match self {
            Self::Off(why) => LinkMode::Sleeve(why.to_string()),
            Self::On { modes, .. } => match modes.lock().ok().and_then(|m| m.get(&peer).copied()) {
                Some(Ok(())) => LinkMode::FastDp,
                Some(Err(why)) => LinkMode::Sleeve(why.to_string()),
                None => LinkMode::Sleeve("fast path not checked yet".to_owned()),
            },
        }
    }

    /// Tells the fast-path task the current direct peers and their addresses.
    pub(crate) fn set_peers(&self, peers: BTreeMap<PeerName, IpAddr>) {
        if let Self::On { peers: tx, .. } = self {
            tx.send_if_modified(|cur| {
                let changed = *cur != peers;
                *cur = peers;
                changed
            });
        }
    }

    /// True when the fast path runs.
    pub(crate) fn is_on(&self) -> bool {
        matches!(self, Self::On { .. })
    }
}

/// Sets up the fast path on `bridge` (or says why not) and starts its task.
pub(crate) async fn start(
    me: PeerName,
    port: u16,
    bridge: &str,
    disabled: Option<&str>,
    datapath: Arc<Datapath>,
    state_dir: StateDir,
) -> FastDp {
    if let Some(why) = disabled {
        // A VXLAN device left by an earlier run with the fast path would still carry
        // (unencrypted) traffic around the sleeve: remove it.
        if let Ok(nl) = Netlink::new()
            && let Ok(Some(_)) = nl.link(VXLAN_NAME).await
        {
            match nl.delete_link(VXLAN_NAME).await {
                Ok(()) => tracing::info!("removed {VXLAN_NAME} left by an earlier run ({why})"),
                Err(e) => {
                    tracing::warn!("could not remove {VXLAN_NAME} left by an earlier run: {e}")
                }
            }
        }
        return FastDp::Off(why.to_owned());
    }
    if !weft_kernel_dp::ovs_datapath_available() {
        tracing::info!(
            "the openvswitch datapath is not in this kernel; the fast path uses a VXLAN device"
        );
    }
    match setup(port, bridge).await {
        Ok((nl, tap)) => {
            let (tx, rx) = watch::channel(BTreeMap::new());
            let modes: Modes = Arc::default();
            tokio::spawn(run(
                me,
                nl,
                tap,
                rx,
                Arc::clone(&modes),
                datapath,
                state_dir,
            ));
            tracing::info!(
                "fast datapath: {VXLAN_NAME} on UDP {}",
                port.wrapping_add(1)
            );
            FastDp::On { peers: tx, modes }
        }
        Err(e) => {
            tracing::warn!("fast datapath unavailable, using the sleeve only: {e}");
            FastDp::Off(format!("fast path unavailable ({e})"))
        }
    }
}

async fn setup(port: u16, bridge: &str) -> Result<(Netlink, Arc<Tap>), String> {
    let nl = Netlink::new().map_err(|e| e.to_string())?;
    // A device left by an earlier run carries stale FDB entries: start afresh.
    if nl
        .link(VXLAN_NAME)
        .await
        .map_err(|e| e.to_string())?
        .is_some()
    {
        nl.delete_link(VXLAN_NAME)
            .await
            .map_err(|e| e.to_string())?;
    }
    let mut cfg = VxlanConfig::new(VXLAN_NAME, VNI);
    cfg.dst_port = port.wrapping_add(1);
    nl.create_vxlan(&cfg).await.map_err(|e| e.to_string())?;
    nl.set_master(VXLAN_NAME, bridge)
        .await
        .map_err(|e| e.to_string())?;
    nl.set_port_isolated(VXLAN_NAME, true)
        .await
        .map_err(|e| e.to_string())?;
    nl.set_port_isolated(sleeve::TAP_NAME, true)
        .await
        .map_err(|e| e.to_string())?;
    nl.set_up(VXLAN_NAME).await.map_err(|e| e.to_string())?;
    let tap = Tap::open(HEARTBEAT_TAP_NAME, &TapOptions::default()).map_err(|e| e.to_string())?;
    // The port keeps its own MAC: a bridge keeps frames for its ports' own MACs for the
    // host. Heartbeats use the router's heartbeat MAC as source, which the bridge learns
    // on this port when we send, so the peers' replies come back here.
    nl.set_master(HEARTBEAT_TAP_NAME, bridge)
        .await
        .map_err(|e| e.to_string())?;
    nl.set_up(HEARTBEAT_TAP_NAME)
        .await
        .map_err(|e| e.to_string())?;
    Ok((nl, Arc::new(tap)))
}

/// Reads the heartbeat port on a plain thread (blocking reads) and passes frames on.
fn spawn_reader(tap: Arc<Tap>, tx: mpsc::Sender<Vec<u8>>) {
    std::thread::spawn(move || {
        let _ = tap.set_nonblocking(false);
        let mut buf = vec![0u8; 2048];
        loop {
            match tap.read_frame(&mut buf) {
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    });
}

async fn run(
    me: PeerName,
    nl: Netlink,
    tap: Arc<Tap>,
    mut peers_rx: watch::Receiver<BTreeMap<PeerName, IpAddr>>,
    modes: Modes,
    datapath: Arc<Datapath>,
    state_dir: StateDir,
) {
    // The sleeve's clock, which is the driver's: one time base on the host.
    let clock = datapath.clock();
    let now = || clock.now();
    let (ftx, mut frx) = mpsc::channel(FRAMES_QUEUE_LEN_MAX);
    spawn_reader(Arc::clone(&tap), ftx);
    let mut paths = FastPaths::new(me);
    // What the kernel has now.
    let mut unicast: BTreeMap<PeerName, IpAddr> = BTreeMap::new();
    let mut flood: BTreeMap<PeerName, IpAddr> = BTreeMap::new();
    let mut container_macs: BTreeMap<[u8; 6], IpAddr> = BTreeMap::new();
    let mut ticks: u64 = 0;
    let mut iv = tokio::time::interval(std::time::Duration::from_millis(TICK_INTERVAL_MS));
    loop {
        iv.tick().await;
        let t = now();
        ticks += 1;
        if ticks % LOCAL_MACS_EVERY_TICKS == 1 {
            // Our containers' MACs, from the attachments the state dir records.
            if let Ok(state) = state_dir.load() {
                let macs = state
                    .attachments
                    .iter()
                    .filter_map(|a| a.mac.as_deref()?.parse::<MacAddr>().ok())
                    .map(|m| m.0);
                paths.set_local_macs(macs);
            }
        }
        while let Ok(f) = frx.try_recv() {
            paths.handle_frame(t, &f);
        }
        let peers = peers_rx.borrow_and_update().clone();
        paths.set_peers(t, peers.keys().copied());
        // Heartbeat MAC entries: one per direct peer, so heartbeats find their way.
        for (p, ip) in &peers {
            if unicast.get(p) != Some(ip) {
                match nl
                    .fdb_add(VXLAN_NAME, MacAddr(heartbeat_mac(*p)), *ip)
                    .await
                {
                    Ok(()) => {
                        unicast.insert(*p, *ip);
                    }
                    Err(e) => tracing::warn!("fast path: program heartbeat entry for {p}: {e}"),
                }
            }
        }
        let gone: Vec<PeerName> = unicast
            .keys()
            .filter(|p| !peers.contains_key(p))
            .copied()
            .collect();
        for p in gone {
            let _ = nl
                .fdb_del(VXLAN_NAME, MacAddr(heartbeat_mac(p)), None)
                .await;
            unicast.remove(&p);
        }
        paths.poll_heartbeats(t, |_, frame| {
            let _ = tap.write_frame(frame);
        });
        // Flood entries follow the fast set.
        let fast: BTreeSet<PeerName> = paths.fast_set(t);
        let mut changed = false;
        let stale: Vec<(PeerName, IpAddr)> = flood
            .iter()
            .filter(|(p, ip)| !fast.contains(p) || peers.get(p) != Some(ip))
            .map(|(p, ip)| (*p, *ip))
            .collect();
        for (p, ip) in stale {
            let _ = nl.fdb_del(VXLAN_NAME, MacAddr::ZERO, Some(ip)).await;
            flood.remove(&p);
            changed = true;
            tracing::info!(
                "peer {p}: sleeve ({})",
                paths
                    .mode(p, t)
                    .err()
                    .map_or("left".to_owned(), |r| r.to_string())
            );
        }
        for p in &fast {
            if flood.contains_key(p) {
                continue;
            }
            let Some(ip) = peers.get(p) else { continue };
            match nl.fdb_append_flood(VXLAN_NAME, *ip).await {
                Ok(()) => {
                    flood.insert(*p, *ip);
                    changed = true;
                    tracing::info!("peer {p}: fastdp");
                }
                Err(e) => tracing::warn!("fast path: program flood entry for {p}: {e}"),
            }
        }
        // One entry per container MAC behind a fast peer, so unicast goes to that peer only.
        let mut want: BTreeMap<[u8; 6], IpAddr> = BTreeMap::new();
        for (p, ip) in &flood {
            for m in paths.peer_macs(*p) {
                want.insert(m, *ip);
            }
        }
        let stale: Vec<[u8; 6]> = container_macs
            .keys()
            .filter(|m| !want.contains_key(*m))
            .copied()
            .collect();
        for m in stale {
            let _ = nl.fdb_del(VXLAN_NAME, MacAddr(m), None).await;
            container_macs.remove(&m);
        }
        for (m, ip) in want {
            if container_macs.get(&m) != Some(&ip) {
                match nl.fdb_add(VXLAN_NAME, MacAddr(m), ip).await {
                    Ok(()) => {
                        container_macs.insert(m, ip);
                    }
                    Err(e) => tracing::warn!("fast path: program container MAC entry: {e}"),
                }
            }
        }
        if changed {
            // The bridge may have learned MACs of now-fast peers on the sleeve's port.
            let _ = nl.flush_port_fdb(sleeve::TAP_NAME).await;
            datapath.set_fast_peers(flood.keys().copied().collect());
        }
        if let Ok(mut m) = modes.lock() {
            m.clear();
            for p in peers.keys() {
                let mode = if flood.contains_key(p) {
                    Ok(())
                } else {
                    paths.mode(*p, t).and(Err(SleeveReason::NoHeartbeat))
                };
                m.insert(*p, mode);
            }
        }
    }
}
