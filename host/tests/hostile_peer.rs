//! End to end: a member gone rogue. Routers A and B share a password and carry a ping
//! between their containers; a third host X keeps 500 idle TCP connections open against
//! A and, at the same time, runs a bare `weft_core::conn::Connection` that knows the
//! password, completes the handshake with A and then lies: B's and A's own topology
//! entries at version `u64::MAX` (and B's just inside the version bound), thousands of
//! unreachable discovered targets, and an IPAM ring update claiming A's span. A must stay
//! up, keep B (with B's real entry), keep carrying the ping, keep its span and its
//! container's address, count every refusal, and still connect to a `weft connect`
//! target. Needs root and python3; skips with a printed reason otherwise.

mod common;

use common::{Opts, Router, eventually, ip, underlay_hosts};
use serde_json::Value;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use weft_core::conn::{ConnId, ConnOutput, ConnSettings, ConnState, Connection};
use weft_core::crypto::{ChaChaKeyRng, Psk};
use weft_core::gossip;
use weft_core::ipam::Entry;
use weft_core::ipam::wire::IpamMsg;
use weft_core::maker::{DISCOVERED_TARGETS_LEN_MAX, TARGETS_LEN_MAX};
use weft_core::peer::{PeerName, PeerUid};
use weft_core::topology::{ConnInfo, PEER_CONNS_MAX, PeerEntry};
use weft_core::wire::frame::{CHANNEL_IPAM, CHANNEL_TOPOLOGY};
use weft_kernel_dp::testnet::{Ns, TestNet, UNDERLAY_IF, UNDERLAY_PREFIX_LEN};

const PASSWORD: &str = "members-only";
const FLOOD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/idle_flood.py");
const IDLE_STREAMS: usize = 500;
/// Seconds the idle flood keeps its connections open (reopening those A closes).
const IDLE_HOLD_S: &str = "20";
const FLOOD_SOURCES: [&str; 4] = [
    "198.18.0.191",
    "198.18.0.192",
    "198.18.0.193",
    "198.18.0.194",
];
/// Fake peers whose entries announce the discovered-target flood: more targets than the
/// whole table holds ([`TARGETS_LEN_MAX`]), so a table shared by both kinds would have no
/// room left for `weft connect`.
const FAKE_ENTRIES: usize = 10;
/// C's second underlay address, the one A is told to `weft connect`: it sorts after every
/// flooded target, so A dials it at once only if explicit targets go first.
const C_CONNECT_ADDR: &str = "198.18.0.250";
const ROGUE_NAME: u64 = 0x0bad_0bad_0bad;
const ROGUE_NICKNAME: &str = "rogue";

/// The i-th flooded target: 198.18.0.200..=249 (never assigned in the test's underlay
/// 198.18.0.0/24), on ports from 7000, so thousands of distinct addresses nobody answers.
fn flood_target(i: usize) -> SocketAddr {
    SocketAddr::from(([198, 18, 0, 200 + (i % 50) as u8], 7000 + (i / 50) as u16))
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The hand-driven peer: a TCP stream (opened inside X) and a `Connection` on it.
struct Rogue {
    stream: TcpStream,
    conn: Connection,
    started: Instant,
    /// IPAM messages A sent us, parsed.
    ipam: Vec<IpamMsg>,
}

impl Rogue {
    fn connect(hx: &Ns, a: SocketAddr) -> Self {
        let stream = weft_kernel_dp::run_in_netns(hx.path(), move || {
            TcpStream::connect_timeout(&a, Duration::from_secs(5))
        })
        .expect("enter x")
        .expect("connect to a from x");
        stream
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let mut settings =
            ConnSettings::new(PeerName::from_u64(ROGUE_NAME), PeerUid(ROGUE_NAME ^ 0x55));
        settings.nickname = ROGUE_NICKNAME.to_owned();
        settings.psk = Some(Psk::from_password(PASSWORD.as_bytes()));
        let mut keys = ChaChaKeyRng::for_simulation(0x0bad);
        let now = weft_core::time::Instant::ZERO;
        let conn = Connection::new(ConnId(1), true, a, &settings, &mut keys, now);
        Self {
            stream,
            conn,
            started: Instant::now(),
            ipam: Vec::new(),
        }
    }

    fn now(&self) -> weft_core::time::Instant {
        let ms = self.started.elapsed().as_millis() as u64;
        weft_core::time::Instant::ZERO + weft_core::time::Duration::from_millis(ms)
    }

    /// Moves bytes both ways for `limit` (or until `done`); keeps the heartbeats going.
    fn pump_until(&mut self, limit: Duration, mut done: impl FnMut(&Self) -> bool) -> bool {
        let start = Instant::now();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let now = self.now();
            let _ = self.conn.handle_timeout(now);
            while let Some(n) = self.conn.poll_transmit(&mut buf) {
                if self.stream.write_all(&buf[..n]).is_err() {
                    return false;
                }
            }
            match self.stream.read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => {
                    let _ = self.conn.handle_bytes(now, &buf[..n]);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return false,
            }
            while let Some(out) = self.conn.poll_output() {
                if let ConnOutput::Gossip { channel, payload } = out
                    && channel == CHANNEL_IPAM
                    && let Ok(m) = IpamMsg::parse(&payload)
                {
                    self.ipam.push(m);
                }
            }
            if done(self) {
                return true;
            }
            if self.conn.state() == ConnState::Closed || start.elapsed() > limit {
                return done(self);
            }
        }
    }

    /// Sends one gossip message; waits for room in the send queue if need be.
    fn send(&mut self, channel: u8, payload: &[u8]) {
        for _ in 0..100 {
            match self.conn.send_gossip(channel, payload) {
                Ok(()) => {
                    self.pump_until(Duration::ZERO, |_| false);
                    return;
                }
                Err(weft_core::conn::ConnError::QueueFull) => {
                    self.pump_until(Duration::from_millis(50), |_| false);
                }
                Err(e) => panic!("rogue send on channel {channel}: {e}"),
            }
        }
        panic!("rogue send queue stayed full");
    }

    fn send_entries(&mut self, entries: &[PeerEntry]) -> usize {
        let refs: Vec<&PeerEntry> = entries.iter().collect();
        let mut msgs = Vec::new();
        gossip::encode_messages(&refs, |m| msgs.push(m.to_vec()));
        for m in &msgs {
            self.send(CHANNEL_TOPOLOGY, m);
        }
        msgs.len()
    }
}

/// Entries of fake peers announcing `FAKE_ENTRIES * PEER_CONNS_MAX` unreachable targets.
fn target_flood() -> Vec<PeerEntry> {
    (0..FAKE_ENTRIES)
        .map(|e| PeerEntry {
            name: PeerName::from_u64(0x0bad_0000_9000 + e as u64),
            uid: PeerUid(e as u64 + 1),
            version: unix_ms(),
            nickname: format!("fake{e}"),
            conns: (0..PEER_CONNS_MAX)
                .map(|c| {
                    let i = e * PEER_CONNS_MAX + c;
                    ConnInfo {
                        peer: PeerName::from_u64(0x0bad_0010_0000 + i as u64),
                        addr: Some(flood_target(i)),
                        established: true,
                        outbound: true,
                    }
                })
                .collect(),
        })
        .collect()
}

/// A's ring as the rogue heard it, with A's own entries and span rewritten as the
/// rogue's: newer versions of A's entries, and new tokens inside A's spans.
fn takeover(ring: &IpamMsg, a: PeerName, rogue: PeerName) -> (IpamMsg, usize) {
    let IpamMsg::Ring {
        id, range, entries, ..
    } = ring
    else {
        unreachable!()
    };
    let mut forged: Vec<(u32, Entry)> = Vec::new();
    for (i, (token, e)) in entries.iter().enumerate() {
        if e.owner != a {
            continue;
        }
        let stolen = Entry {
            owner: rogue,
            version: e.version + 1,
            free: 0,
        };
        forged.push((*token, stolen));
        // A new token in the middle of A's span (it ends at the next entry's token, the
        // last one at the end of the range).
        let end = entries
            .get(i + 1)
            .map_or(range.end(), |(t, _)| u64::from(*t));
        let mid = u32::try_from((u64::from(*token) + end) / 2).unwrap();
        if mid > *token {
            forged.push((
                mid,
                Entry {
                    version: 1,
                    ..stolen
                },
            ));
        }
    }
    forged.sort_by_key(|(t, _)| *t);
    let n = forged.len();
    (
        IpamMsg::Ring {
            id: *id,
            range: *range,
            full: false,
            entries: forged,
        },
        n,
    )
}

/// `status peers`' entry for `name`.
fn peer_entry(r: &Router, name: &str) -> Value {
    r.json(&["status", "peers"])
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

/// B's entry as A holds it is B's real one: its nickname, listing A as established.
fn real_b(a: &Router, name_a: &str, name_b: &str, nick_b: &str) -> bool {
    let e = peer_entry(a, name_b);
    e["nickname"] == nick_b
        && e["connections"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["peer"] == name_a && c["established"] == true)
        })
}

/// `status ipam`'s `peers` entry for `name`: (addresses, free).
fn ipam_share(st: &Value, name: &str) -> Option<(u64, u64)> {
    let p = st["peers"].as_array()?.iter().find(|p| p["peer"] == name)?;
    Some((p["addresses"].as_u64()?, p["free"].as_u64()?))
}

/// `weft attach --netns C` with an address from IPAM: the address (without prefix).
fn attach_ipam(r: &Router, c: &Ns) -> String {
    let p = c.path().display().to_string();
    let out = r.weft(&["attach", "--netns", &p]).unwrap_or_else(|e| {
        panic!("attach: {e}; log:\n{}", r.log_text());
    });
    let cidr = out.split_whitespace().next().unwrap_or_default();
    cidr.split('/').next().unwrap().to_owned()
}

fn start(net: &mut TestNet, ns: &Ns, peers: &[String]) -> Router {
    Router::start(
        net,
        ns,
        &Opts {
            password: Some(PASSWORD),
            peers: peers.to_vec(),
            extra: vec!["--no-fastdp", "--ipalloc-init", "consensus=2"],
            ..Opts::default()
        },
    )
}

fn received(ping_stdout: &[u8]) -> u32 {
    String::from_utf8_lossy(ping_stdout)
        .split(',')
        .find_map(|p| p.trim().strip_suffix(" received"))
        .and_then(|n| n.trim().parse::<u32>().ok())
        .unwrap_or(0)
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn a_rogue_member_cannot_take_over_topology_targets_or_addresses() {
    const { assert!(FAKE_ENTRIES * PEER_CONNS_MAX > TARGETS_LEN_MAX) };
    let Some(mut net) = common::test_net_with_python("a_rogue_member_cannot_take_over") else {
        return;
    };
    let ([ha, hb, hc, hx], [ip_a, ..]) = underlay_hosts(&mut net, ["a", "b", "c", "x"]);
    for src in FLOOD_SOURCES {
        net.addr(&hx, UNDERLAY_IF, ip(src), UNDERLAY_PREFIX_LEN)
            .unwrap();
    }
    net.addr(&hc, UNDERLAY_IF, ip(C_CONNECT_ADDR), UNDERLAY_PREFIX_LEN)
        .unwrap();
    let (ca, cb) = (net.add_ns("ca").unwrap(), net.add_ns("cb").unwrap());
    let a = start(&mut net, &ha, &[]);
    let b = start(&mut net, &hb, &[ip_a.to_string()]);
    let c = start(&mut net, &hc, &[]);
    let (name_a, name_b, name_c) = (a.name(), b.name(), c.name());
    let nick_b = b.json(&["status"])["nickname"].as_str().unwrap().to_owned();
    a.wait_until(Duration::from_secs(20), "b established", |a| {
        a.established().contains(&name_b)
    });
    let addr_a = attach_ipam(&a, &ca);
    let addr_b = attach_ipam(&b, &cb);
    eprintln!("a={name_a} b={name_b} ({nick_b}) c={name_c}; ca={addr_a} cb={addr_b}");
    assert!(ca.ping_until(ip(&addr_b), Duration::from_secs(20)));
    assert!(cb.ping_until(ip(&addr_a), Duration::from_secs(20)));
    let ipam_before = a.json(&["status", "ipam"]);
    let share_before = ipam_share(&ipam_before, &name_a).expect("a's share");
    eprintln!("a's ipam share before: {share_before:?}");
    let b_uid = peer_entry(&a, &name_b)["uid"].as_str().unwrap().to_owned();
    let b_uid = PeerUid(u64::from_str_radix(&b_uid, 16).unwrap());
    let a_uid = a.json(&["status"])["uid"].as_str().unwrap().to_owned();
    let a_uid = PeerUid(u64::from_str_radix(&a_uid, 16).unwrap());

    // 1. The idle flood: 500 connections from X that never say a word.
    let target = ip_a.to_string();
    let count = IDLE_STREAMS.to_string();
    let mut args = vec!["python3", FLOOD, &target, &count, IDLE_HOLD_S];
    args.extend(FLOOD_SOURCES);
    let flood = net.spawn(&hx, &args).unwrap();
    let flood_log = || std::fs::read_to_string(&flood.log).unwrap_or_default();
    assert!(
        eventually(Duration::from_secs(20), || flood_log().contains("opened")),
        "the idle flood never opened its connections: {}",
        flood_log()
    );
    eprintln!("1. idle flood: {}", flood_log().trim());

    // A ping from B's container through everything that follows.
    let during = std::thread::spawn({
        let cb = cb.clone();
        let to = addr_a.clone();
        move || cb.exec(&["ping", "-n", "-q", "-c", "50", "-i", "0.2", "-W", "1", &to])
    });

    // 2. The rogue member, in its own thread so it keeps its heartbeats going until told
    // to stop. It reports each step on `steps`.
    let stop = Arc::new(AtomicBool::new(false));
    let (steps, step_rx) = mpsc::channel::<String>();
    let (go_tx, go) = mpsc::channel::<()>();
    let rogue = std::thread::spawn({
        let (hx, stop) = (hx.clone(), stop.clone());
        let (a_name, b_name): (PeerName, PeerName) =
            (name_a.parse().unwrap(), name_b.parse().unwrap());
        let a_addr = SocketAddr::from((ip_a, 6783));
        move || {
            let say = |s: String| {
                eprintln!("{s}");
                let _ = steps.send(s);
            };
            let mut r = Rogue::connect(&hx, a_addr);
            let up = r.pump_until(Duration::from_secs(8), |r| {
                r.conn.state() == ConnState::Established
            });
            assert!(
                up,
                "rogue handshake: {:?} {:?}",
                r.conn.state(),
                r.conn.error()
            );
            say("2. rogue established with a (it knows the password)".into());
            // Forged topology at u64::MAX: B with no connections and another nickname, and
            // A itself.
            let forged_b = PeerEntry {
                name: b_name,
                uid: b_uid,
                version: u64::MAX,
                nickname: "forged-b".into(),
                conns: Vec::new(),
            };
            let forged_a = PeerEntry {
                name: a_name,
                uid: a_uid,
                version: u64::MAX,
                nickname: "forged-a".into(),
                conns: Vec::new(),
            };
            r.send_entries(&[forged_b.clone(), forged_a]);
            say("2a. sent b's and a's entries at version u64::MAX".into());
            // Until the test has looked at A.
            while go.try_recv().is_err() {
                r.pump_until(Duration::from_millis(50), |_| false);
            }
            // B again, just inside the version bound: taken for now, B must out-bid it.
            let near = PeerEntry {
                version: unix_ms() + 60 * 60 * 1000,
                ..forged_b
            };
            r.send_entries(&[near]);
            say("2b. sent b's entry one hour ahead, no connections".into());
            // The target flood.
            let flood = target_flood();
            let msgs = r.send_entries(&flood);
            say(format!(
                "2c. sent {} fake peers announcing {} unreachable targets in {msgs} messages",
                flood.len(),
                flood.len() * PEER_CONNS_MAX
            ));
            // The IPAM takeover: get A's full ring, claim A's span.
            r.send(CHANNEL_IPAM, &IpamMsg::RingPull.to_vec().unwrap());
            let got = r.pump_until(Duration::from_secs(10), |r| {
                r.ipam
                    .iter()
                    .any(|m| matches!(m, IpamMsg::Ring { full: true, .. }))
            });
            assert!(got, "a never sent its ring: {:?}", r.ipam);
            let ring = r
                .ipam
                .iter()
                .rev()
                .find(|m| matches!(m, IpamMsg::Ring { full: true, .. }))
                .unwrap()
                .clone();
            let (msg, n) = takeover(&ring, a_name, PeerName::from_u64(ROGUE_NAME));
            assert!(n > 0, "a owns nothing in its ring: {ring:?}");
            r.send(CHANNEL_IPAM, &msg.to_vec().unwrap());
            say(format!(
                "2d. sent an ipam ring update claiming a's span ({n} entries)"
            ));
            say("done".into());
            while !stop.load(Ordering::Relaxed) {
                if !r.pump_until(Duration::from_millis(200), |_| false)
                    && r.conn.state() == ConnState::Closed
                {
                    eprintln!("rogue: a closed the connection: {:?}", r.conn.error());
                    break;
                }
            }
            r.conn.state()
        }
    });
    let mut log = Vec::new();
    loop {
        match step_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(s) if s == "done" => break,
            Ok(s) if s.starts_with("2a.") => {
                // Refused at once, not merely out-bid later: B's entry at A is B's own
                // and A's own entry is not at u64::MAX.
                std::thread::sleep(Duration::from_millis(500));
                let e = peer_entry(&a, &name_b);
                eprintln!("2a. b's entry at a: {e}");
                let me = peer_entry(&a, &name_a);
                let real = real_b(&a, &name_a, &name_b, &nick_b);
                let ok = real && me["version"].as_u64().is_some_and(|v| v < u64::MAX);
                let _ = go_tx.send(());
                assert!(ok, "a took a u64::MAX forgery: b {e}, a {me}");
                log.push(s);
            }
            Ok(s) => log.push(s),
            Err(_) => {
                stop.store(true, Ordering::Relaxed);
                let outcome = rogue.join();
                panic!(
                    "the rogue stopped after {log:?}: {outcome:?}; a's log:\n{}",
                    a.log_text()
                );
            }
        }
    }

    // 3. A is the same process and answers.
    assert!(a.alive(), "a died; log:\n{}", a.log_text());
    assert!(net.pids().contains(&a.pid));
    let st = a.json(&["status"]);
    assert_eq!(st["name"], name_a.as_str());
    eprintln!(
        "3. a: peers {} targets {} connections {} topology_refused {} refused {}",
        st["peers"], st["targets"], st["connections"], st["topology_refused"], st["refused"]
    );
    // The u64::MAX forgeries were refused and counted.
    assert!(
        st["topology_refused"]["version_too_far_ahead"]
            .as_u64()
            .unwrap_or(0)
            >= 2,
        "{}",
        st["topology_refused"]
    );
    let me = peer_entry(&a, &name_a);
    assert_ne!(me["nickname"], "forged-a", "{me}");
    assert!(
        me["version"].as_u64().unwrap_or(u64::MAX) < u64::MAX,
        "{me}"
    );
    // B is still established, and its entry at A is B's own again (B out-bid the
    // in-bound forgery).
    assert!(a.established().contains(&name_b), "{:?}", a.established());
    a.wait_until(Duration::from_secs(15), "b's real entry back at a", |a| {
        real_b(a, &name_a, &name_b, &nick_b)
    });
    eprintln!("3a. b's entry at a: {}", peer_entry(&a, &name_b));
    // The discovered-target flood filled its share of the table only, and was counted.
    let discovered_full = st["refused"]["discovered_targets_full"]
        .as_u64()
        .unwrap_or(0);
    assert!(discovered_full > 0, "{}", st["refused"]);
    assert!(
        st["targets"].as_u64().unwrap_or(0) <= DISCOVERED_TARGETS_LEN_MAX as u64 + 1,
        "{}",
        st["targets"]
    );
    // IPAM: A still owns its span and its container's address; the claim was refused.
    let ipam = a.json(&["status", "ipam"]);
    let share = ipam_share(&ipam, &name_a).expect("a's share");
    eprintln!(
        "3b. a's ipam share {share:?} (before {share_before:?}), stats {}",
        ipam["stats"]
    );
    assert_eq!(share.0, share_before.0, "a's span size changed: {ipam}");
    let rogue_name = PeerName::from_u64(ROGUE_NAME).to_string();
    assert!(
        ipam_share(&ipam, &rogue_name).is_none_or(|(n, _)| n == 0),
        "the rogue owns addresses at a: {ipam}"
    );
    assert!(
        ipam["stats"]["takeovers_refused"].as_u64().unwrap_or(0) > 0,
        "{}",
        ipam["stats"]
    );
    assert_eq!(ipam["allocations"], ipam_before["allocations"], "{ipam}");
    let ps = a.json(&["ps"]).to_string();
    assert!(
        ps.contains(&format!("\"{addr_a}/")),
        "a lost its container's address {addr_a}: {ps}"
    );
    // The containers still talk, both ways; the ping during the attack mostly got through.
    let ping = during.join().unwrap().unwrap();
    let got = received(&ping.stdout);
    eprintln!(
        "3c. ping during the attack: {}",
        String::from_utf8_lossy(&ping.stdout).trim()
    );
    assert!(got >= 25, "the ping during the attack mostly failed");
    assert!(ca.ping_until(ip(&addr_b), Duration::from_secs(10)));
    assert!(cb.ping_until(ip(&addr_a), Duration::from_secs(10)));
    // `weft connect C` gets its explicit slot and an established connection.
    a.weft(&["connect", C_CONNECT_ADDR]).unwrap();
    a.wait_until(Duration::from_secs(10), "c established", |a| {
        a.established().contains(&name_c)
    });
    let st = a.json(&["status"]);
    assert_eq!(
        st["refused"]["explicit_targets_full"], 0,
        "{}",
        st["refused"]
    );
    eprintln!(
        "3d. connect {C_CONNECT_ADDR}: c established; targets {}, discovered dials stopped for it {}",
        st["targets"], st["refused"]["discovered_dials_preempted"]
    );
    assert!(a.established().contains(&name_b));
    // Tear down: the rogue closes its socket (dropped with the thread); the TestNet kills
    // the flood and the routers and removes the namespaces.
    stop.store(true, Ordering::Relaxed);
    let end = rogue.join().unwrap();
    eprintln!("rogue ended {end:?}; flood: {}", flood_log().trim());
    assert!(a.alive(), "a died; log:\n{}", a.log_text());
}
