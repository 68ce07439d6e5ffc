//! Replays every file of the committed fuzz corpus (`fuzz/corpus/<target>/*`) through the
//! same checks the fuzz targets run (`weft_core::fuzz_checks`, the `fuzzing` feature, which
//! the dev-dependency on weft-core itself turns on for tests).
//!
//! Naming (`checks::replay`): `valid-*` seeds must decode, `garbage-*` seeds must be
//! rejected, anything else (files a fuzzing run added) must simply not panic. Regenerate the seeds with
//! `WEFT_WRITE_CORPUS=1 cargo test -p weft-core --test fuzz_corpus -- --ignored`.

use std::path::PathBuf;
use weft_core::fuzz_checks as checks;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus")
}

/// The files of `fuzz/corpus/<target>/`, by name.
fn corpus(target: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
    let dir = corpus_dir().join(target);
    let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        files.push((name.to_owned(), bytes));
    }
    Ok(files)
}

#[test]
fn corpus_replays_without_panic_and_seeds_decode_as_named() -> Result<(), String> {
    for (target, check) in checks::TARGETS {
        checks::replay(target, *check, &corpus(target)?)?;
    }
    Ok(())
}

/// Writes the seed corpus. Ignored: run by hand after a wire format change.
#[test]
#[ignore]
fn write_seed_corpus() -> Result<(), String> {
    if std::env::var_os("WEFT_WRITE_CORPUS").is_none() {
        return Err("set WEFT_WRITE_CORPUS=1 to overwrite fuzz/corpus".into());
    }
    for (target, seeds) in seeds::all() {
        let dir = corpus_dir().join(target);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        for (name, bytes) in seeds {
            std::fs::write(dir.join(name), bytes).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

mod seeds {
    use weft_core::conn::{ConnId, ConnSettings, Connection};
    use weft_core::crypto::ChaChaKeyRng;
    use weft_core::peer::{PeerName, PeerUid};
    use weft_core::time::Instant;
    use weft_core::topology::{ConnInfo, PeerEntry};
    use weft_core::wire::datagram::{DatagramHeader, DatagramKind, EthFramesWriter, Payload};
    use weft_core::wire::frame::{CHANNEL_TOPOLOGY, CLOSE_REASON_NORMAL, Message};
    use weft_core::wire::handshake::Hello;
    use weft_core::wire::topology::emit_entries;

    type Seeds = Vec<(&'static str, Vec<u8>)>;

    pub(super) fn all() -> Vec<(&'static str, Seeds)> {
        vec![
            ("hello", hello()),
            ("frame", frame()),
            ("message", message()),
            ("datagram", datagram()),
            ("topology", topology()),
            ("topology_sync", topology_sync()),
            ("conn_stream", conn_stream()),
            ("conn_pair", conn_pair()),
            ("ipam", ipam()),
            ("dns", dns()),
            ("policy", policy()),
            ("segment", segment()),
            ("heartbeat", heartbeat()),
            ("punch_msg", punch_msg()),
            ("punch_datagram", punch_datagram()),
        ]
    }

    fn a_hello(nickname: &str, encrypted: bool, version_max: u8) -> Vec<u8> {
        let h = Hello {
            version_min: 1,
            version_max,
            name: PeerName::from_u64(0x0a0b0c0d0e0f),
            uid: PeerUid(42),
            nickname,
            listen_port: 6783,
            encrypted,
            public_key: [7; 32],
            ciphers: weft_core::crypto::CipherSuites::from_bits_known(0xff),
        };
        let mut buf = [0u8; 512];
        let n = h.emit(&mut buf).expect("seed hello emits");
        buf[..n].to_vec()
    }

    fn hello() -> Seeds {
        let mut ext = a_hello("newer", false, 9);
        ext.extend_from_slice(b"ext");
        let body_len = (ext.len() - 6) as u16;
        ext[4..6].copy_from_slice(&body_len.to_be_bytes());
        let mut bad_utf8 = a_hello("ab", false, 1);
        let last = bad_utf8.len() - 1;
        bad_utf8[last] = 0xff;
        let mut oversized = a_hello("", false, 1);
        oversized[4..6].copy_from_slice(&u16::MAX.to_be_bytes());
        let full = a_hello("host-1", true, 1);
        vec![
            ("valid-plain", a_hello("", false, 1)),
            ("valid-encrypted-nickname", full.clone()),
            ("valid-newer-version-extension", ext),
            ("valid-v3-cipher-offer", a_hello("v3", true, 3)),
            (
                "garbage-http",
                b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            ),
            ("garbage-truncated", full[..full.len() - 3].to_vec()),
            ("garbage-oversized-body", oversized),
            ("garbage-bad-utf8", bad_utf8),
        ]
    }

    /// Real sealed frames from an established pair (A's side of the stream).
    fn pair_stream() -> (Vec<u8>, Vec<u8>) {
        let mut rng = ChaChaKeyRng::for_simulation(5);
        let sa = ConnSettings::new(PeerName::from_u64(0x11), PeerUid(1));
        let sb = ConnSettings::new(PeerName::from_u64(0x12), PeerUid(2));
        let addr = std::net::SocketAddr::from(([10, 0, 0, 1], 6783));
        let mut a = Connection::new(ConnId(1), true, addr, &sa, &mut rng, Instant::ZERO);
        let mut b = Connection::new(ConnId(2), false, addr, &sb, &mut rng, Instant::ZERO);
        let pull = |c: &mut Connection| {
            let mut out = Vec::new();
            let mut buf = [0u8; 4096];
            while let Some(n) = c.poll_transmit(&mut buf) {
                out.extend_from_slice(&buf[..n]);
            }
            out
        };
        let a_hello = pull(&mut a);
        let b_hello = pull(&mut b);
        b.handle_bytes(Instant::ZERO, &a_hello)
            .expect("b takes a's hello");
        a.handle_bytes(Instant::ZERO, &b_hello)
            .expect("a takes b's hello");
        let a_confirm = pull(&mut a);
        let b_confirm = pull(&mut b);
        b.handle_bytes(Instant::ZERO, &a_confirm)
            .expect("b takes a's confirm");
        a.handle_bytes(Instant::ZERO, &b_confirm)
            .expect("a takes b's confirm");
        a.send_gossip(CHANNEL_TOPOLOGY, b"seed gossip")
            .expect("gossip queues");
        let a_gossip = pull(&mut a);
        let mut stream = a_hello;
        stream.extend_from_slice(&a_confirm);
        (stream, a_gossip)
    }

    fn frame() -> Seeds {
        let (_, gossip) = pair_stream();
        let mut min = vec![0, 0, 0, 16];
        min.extend_from_slice(&[0; 8 + 16]);
        vec![
            ("valid-sealed-gossip", gossip.clone()),
            ("valid-minimal", min),
            ("garbage-truncated", gossip[..gossip.len() - 1].to_vec()),
            (
                "garbage-oversized",
                vec![0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0],
            ),
            (
                "garbage-shorter-than-tag",
                vec![0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3],
            ),
        ]
    }

    fn msg(m: Message<'_>) -> Vec<u8> {
        let mut buf = vec![0u8; m.buffer_len()];
        let n = m.emit(&mut buf).expect("seed message emits");
        buf.truncate(n);
        buf
    }

    fn message() -> Seeds {
        let mut trailing = msg(Message::Heartbeat { seq: 1 });
        trailing.push(0);
        vec![
            (
                "valid-confirm",
                msg(Message::Confirm {
                    transcript_hash: [1; 32],
                }),
            ),
            ("valid-heartbeat", msg(Message::Heartbeat { seq: 99 })),
            (
                "valid-gossip",
                msg(Message::Gossip {
                    channel: CHANNEL_TOPOLOGY,
                    payload: b"entries",
                }),
            ),
            (
                "valid-close",
                msg(Message::Close {
                    reason: CLOSE_REASON_NORMAL,
                }),
            ),
            ("garbage-unknown-type", vec![0x42, 0, 0]),
            ("garbage-trailing", trailing),
            ("garbage-empty", Vec::new()),
        ]
    }

    fn dgram(kind: DatagramKind, sealed: bool, payload: &[u8]) -> Vec<u8> {
        let h = DatagramHeader {
            version: weft_core::wire::DATAGRAM_VERSION,
            kind,
            sealed,
            sender: PeerName::from_u64(1),
            receiver: PeerName::from_u64(2),
            counter: 3,
        };
        let mut buf = vec![0u8; 64];
        let n = h.emit(&mut buf).expect("seed header emits");
        buf.truncate(n);
        buf.extend_from_slice(payload);
        buf
    }

    fn payload(p: Payload<'_>) -> Vec<u8> {
        let mut buf = vec![0u8; 2048];
        let n = p.emit(&mut buf).expect("seed payload emits");
        buf.truncate(n);
        buf
    }

    fn datagram() -> Seeds {
        let mut frames = vec![0u8; 512];
        let mut w = EthFramesWriter::new(&mut frames);
        w.push(&[0xff; 14]).expect("frame fits");
        w.push(&[0x11; 60]).expect("frame fits");
        let n = w.len();
        frames.truncate(n);
        let probe = payload(Payload::PmtuProbe {
            id: 1,
            padding_len: 64,
        });
        let reply = payload(Payload::PmtuReply { id: 1, size: 1400 });
        vec![
            ("valid-frames", dgram(DatagramKind::Frames, false, &frames)),
            (
                "valid-frames-csum-partial",
                dgram(DatagramKind::FramesCsumPartial, false, &frames),
            ),
            (
                "valid-heartbeat",
                dgram(DatagramKind::Heartbeat, false, &[]),
            ),
            (
                "valid-pmtu-probe",
                dgram(DatagramKind::PmtuProbe, false, &probe),
            ),
            (
                "valid-pmtu-reply",
                dgram(DatagramKind::PmtuReply, false, &reply),
            ),
            (
                "valid-sealed",
                dgram(DatagramKind::Frames, true, &[0x5a; 40]),
            ),
            ("garbage-bad-magic", b"\x00\x01\x01hello".to_vec()),
            ("garbage-kind-unknown", {
                let mut d = dgram(DatagramKind::Frames, false, &frames);
                d[2] = 6;
                d
            }),
            (
                "garbage-frame-past-end",
                dgram(DatagramKind::Frames, false, &[0, 99, 1, 2]),
            ),
            (
                "garbage-runt-frame",
                dgram(DatagramKind::Frames, false, &[0, 2, 1, 2]),
            ),
            (
                "garbage-reply-trailing",
                dgram(DatagramKind::PmtuReply, false, &[0; 7]),
            ),
        ]
    }

    fn topology() -> Seeds {
        let entries = vec![
            PeerEntry {
                name: PeerName::from_u64(1),
                uid: PeerUid(10),
                version: 3,
                nickname: "one".into(),
                conns: vec![
                    ConnInfo {
                        peer: PeerName::from_u64(2),
                        addr: Some(std::net::SocketAddr::from(([10, 0, 0, 2], 6783))),
                        established: true,
                        outbound: true,
                    },
                    ConnInfo {
                        peer: PeerName::from_u64(3),
                        addr: None,
                        established: false,
                        outbound: false,
                    },
                ],
            },
            PeerEntry {
                name: PeerName::from_u64(2),
                uid: PeerUid(20),
                version: 1,
                nickname: String::new(),
                conns: Vec::new(),
            },
        ];
        let mut buf = vec![0u8; 4096];
        let n = emit_entries(&entries, &mut buf).expect("seed entries emit");
        buf.truncate(n);
        vec![
            ("valid-two-entries", buf.clone()),
            ("garbage-truncated", buf[..buf.len() - 1].to_vec()),
            ("garbage-count-lies", vec![0xff, 0xff, 0, 0]),
        ]
    }

    /// `conn_pair` inputs: a config byte (bit 0: A has the password, bit 1: B has one,
    /// bit 2: B's differs, bits 3 and 4: AES offered) and ops (`fuzz_checks::conn_pair`).
    fn conn_pair() -> Seeds {
        // Each end flushes to the other, whole, a few times over: the handshake.
        let handshake: Vec<u8> = [0x00, 0x01, 0x00, 0x80, 0x81, 0x00].repeat(4);
        let with = |cfg: u8, tail: &[u8]| {
            let mut v = vec![cfg];
            v.extend_from_slice(&handshake);
            v.extend_from_slice(tail);
            v
        };
        // A sends "abc" on channel 1, B sends "" on channel 3; both flushed and delivered.
        let gossip = [
            0x03, 1, 3, b'a', b'b', b'c', 0x83, 3, 0, 0x00, 0x01, 0x00, 0x80, 0x81, 0x00,
        ];
        vec![
            ("valid-plain", with(0x00, &gossip)),
            ("valid-password", with(0x03, &gossip)),
            ("valid-password-aes", with(0x1b, &gossip)),
            (
                "valid-heartbeats",
                with(0x03, &[0x02, 8, 0x00, 0x01, 0x00, 0x80, 0x81, 0x00]),
            ),
            ("garbage-wrong-password", with(0x07, &gossip)),
            ("garbage-one-side-password", with(0x01, &gossip)),
            (
                "garbage-nothing-delivered",
                vec![0x00, 0x00, 0x80, 0x02, 200],
            ),
            ("garbage-empty", Vec::new()),
        ]
    }

    fn topology_sync() -> Seeds {
        use weft_core::wire::topology_sync::{Digest, Summary, SummaryEntry, SyncMsg};
        let digest = SyncMsg::Digest(Digest {
            announce: false,
            count: 50,
            sum: 0x0123_4567_89ab_cdef,
        });
        let summary = SyncMsg::Summary(Summary {
            lo: PeerName::from_u64(0),
            hi: PeerName::from_u64(PeerName::MASK),
            entries: (1..4)
                .map(|n| SummaryEntry {
                    name: PeerName::from_u64(n),
                    version: n * 1000,
                    fingerprint: n ^ 0x5555,
                })
                .collect(),
        });
        let request = SyncMsg::Request(vec![PeerName::from_u64(1), PeerName::from_u64(9)]);
        let enc = |m: &SyncMsg| m.to_vec().expect("seed sync message emits");
        let s = enc(&summary);
        vec![
            ("valid-digest", enc(&digest)),
            ("valid-summary", s.clone()),
            ("valid-request", enc(&request)),
            ("garbage-truncated", s[..s.len() - 1].to_vec()),
            // A request whose names go down.
            (
                "garbage-unordered",
                vec![3, 0, 2, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 1],
            ),
        ]
    }

    fn conn_stream() -> Seeds {
        let (stream, _) = pair_stream();
        let hello_len = 6 + usize::from(u16::from_be_bytes([stream[4], stream[5]]));
        vec![
            ("valid-hello", stream[..hello_len].to_vec()),
            // The confirm does not open: this connection has other keys.
            ("garbage-hello-and-foreign-confirm", stream),
            ("garbage-http", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        ]
    }

    fn ipam() -> Seeds {
        use weft_core::ipam::wire::{IpamMsg, Outcome, Route};
        use weft_core::ipam::{Entry, RingId};
        let id = RingId {
            seeder: PeerName::from_u64(1),
            nonce: 7,
        };
        let base = u32::from(std::net::Ipv4Addr::new(10, 32, 0, 0));
        let entries = vec![
            (
                base,
                Entry {
                    owner: PeerName::from_u64(1),
                    version: 2,
                    free: 500,
                },
            ),
            (
                base + 512,
                Entry {
                    owner: PeerName::from_u64(2),
                    version: 1,
                    free: 511,
                },
            ),
        ];
        let enc = |m: IpamMsg| m.to_vec().expect("seed message emits");
        let ring = enc(IpamMsg::Ring {
            id,
            range: "10.32.0.0/22".parse().expect("range"),
            full: true,
            entries: entries.clone(),
        });
        let route = Route {
            src: PeerName::from_u64(2),
            dst: PeerName::from_u64(1),
            ttl: 5,
        };
        let mut unordered = ring.clone();
        let (a, b) = unordered[24..].split_at_mut(22);
        a.swap_with_slice(&mut b[..22]);
        let mut host_bits = ring.clone();
        host_bits[19] = 1;
        let mut bad_version = ring.clone();
        bad_version[0] = 9;
        vec![
            ("valid-full-ring", ring.clone()),
            (
                "valid-proposal",
                enc(IpamMsg::Proposal {
                    quorum: 3,
                    names: vec![PeerName::from_u64(1), PeerName::from_u64(2)],
                }),
            ),
            (
                "valid-donate-request",
                enc(IpamMsg::DonateRequest {
                    route,
                    ask: 1,
                    subnet: "10.32.2.0/24".parse().expect("subnet"),
                    addr: Some(base + 600),
                }),
            ),
            (
                "valid-donate-reply",
                enc(IpamMsg::DonateReply {
                    route,
                    ask: 1,
                    outcome: Outcome::Donated,
                    id,
                    entries,
                }),
            ),
            ("valid-ring-pull", enc(IpamMsg::RingPull)),
            ("garbage-truncated", ring[..ring.len() - 1].to_vec()),
            ("garbage-unordered-tokens", unordered),
            ("garbage-range-host-bits", host_bits),
            ("garbage-bad-version", bad_version),
            ("garbage-unknown-kind", vec![1, 0x42]),
        ]
    }
    fn dns() -> Seeds {
        use weft_core::dns::wire;
        use weft_core::dns::{Container, DnsName, Record, RecordKey};
        let rec = |name: &str, last: u8, owner: u64, tombstone: bool| Record {
            key: RecordKey {
                name: DnsName::new(name).expect("seed name"),
                addr: std::net::Ipv4Addr::new(10, 32, 0, last),
                owner: PeerName::from_u64(owner),
                container: Container::new("ns-4026532281").expect("seed container"),
            },
            version: 3,
            tombstone,
        };
        let a = rec("web.weave.local", 2, 1, false);
        let b = rec("web.weave.local", 3, 2, false);
        let t = rec("db.weave.local", 9, 1, true);
        let enc = |r: &[&Record]| wire::to_vec(r).expect("seed message emits");
        let two = enc(&[&a, &b]);
        let mut unordered = enc(&[&a]);
        unordered.extend_from_slice(&enc(&[&a])[4..]);
        unordered[3] = 2;
        let mut bad_flags = enc(&[&a]);
        bad_flags[4 + 14] = 0x80;
        let mut upper = enc(&[&a]);
        let last = upper.len() - 1;
        upper[last] = b'L';
        let mut bad_version = two.clone();
        bad_version[0] = 9;
        vec![
            ("valid-two-records", two.clone()),
            ("valid-tombstone", enc(&[&t])),
            ("valid-empty", enc(&[])),
            ("garbage-truncated", two[..two.len() - 3].to_vec()),
            ("garbage-duplicate-key", unordered),
            ("garbage-unknown-flag", bad_flags),
            ("garbage-uppercase-name", upper),
            ("garbage-bad-version", bad_version),
        ]
    }

    fn policy() -> Seeds {
        use std::net::Ipv4Addr;
        use weft_core::policy::table::{PodKey, Stamp};
        use weft_core::policy::wire::{self, Msg, NamespaceEntry, PodEntry, PolicyEntry};
        use weft_core::policy::{
            Cidr, IpBlock, Labels, NamedPort, Operator, Peer, Pod, Policy, PolicyKey, Port,
            PortMatch, Proto, Requirement, Rule, Selector,
        };
        let labels = |pairs: &[(&str, &str)]| {
            let mut l = Labels::new();
            for (k, v) in pairs {
                l.insert(k, v).expect("seed label");
            }
            l
        };
        let stamp = |lamport, writer| Stamp {
            lamport,
            writer: PeerName::from_u64(writer),
        };
        let key = PolicyKey {
            namespace: "default".into(),
            name: "web".into(),
        };
        let sel = Selector {
            match_labels: labels(&[("app", "web")]),
            match_expressions: vec![Requirement {
                key: "example.com/env".into(),
                op: Operator::NotIn,
                values: vec!["dev".into()],
            }],
        };
        let block = IpBlock {
            cidr: Cidr::new(Ipv4Addr::new(10, 32, 0, 0), 12).expect("seed cidr"),
            except: vec![Cidr::new(Ipv4Addr::new(10, 32, 9, 0), 24).expect("seed cidr")],
        };
        let policy = Policy {
            key: key.clone(),
            pod_selector: sel.clone(),
            ingress_isolates: true,
            egress_isolates: true,
            ingress: vec![Rule {
                peers: vec![
                    Peer::Pods {
                        pods: Some(sel),
                        namespaces: Some(Selector::all()),
                    },
                    Peer::Block(block),
                ],
                ports: vec![
                    Port {
                        proto: Proto::Tcp,
                        port: PortMatch::Range { port: 80, end: 90 },
                    },
                    Port {
                        proto: Proto::Udp,
                        port: PortMatch::Named("dns".into()),
                    },
                    Port {
                        proto: Proto::Sctp,
                        port: PortMatch::Any,
                    },
                ],
            }],
            egress: vec![Rule::default()],
        };
        let policies = Msg::Policies(vec![
            PolicyEntry {
                key: key.clone(),
                stamp: stamp(4, 1),
                policy: Some(policy),
            },
            PolicyEntry {
                key: PolicyKey {
                    namespace: "prod".into(),
                    name: "gone".into(),
                },
                stamp: stamp(7, 2),
                policy: None,
            },
        ]);
        let namespaces = Msg::Namespaces(vec![NamespaceEntry {
            name: "prod".into(),
            stamp: stamp(2, 3),
            labels: Some(labels(&[("team", "db")])),
        }]);
        let pod_entry = |owner, id: &str, version, live: bool| PodEntry {
            key: PodKey {
                owner: PeerName::from_u64(owner),
                id: id.into(),
            },
            version,
            pod: live.then(|| Pod {
                addrs: vec![Ipv4Addr::new(10, 32, 0, 2)],
                namespace: "default".into(),
                labels: labels(&[("app", "web")]),
                ports: vec![NamedPort {
                    name: "http".into(),
                    proto: Proto::Tcp,
                    port: 8080,
                }],
            }),
        };
        let pods = Msg::Pods(vec![
            pod_entry(1, "4f1c0e2a", 3, true),
            pod_entry(1, "5a", 4, false),
            // Our own (the check's router is 0x0a0b0c0d0e0f): answered, not taken.
            pod_entry(0x0a0b0c0d0e0f, "mine", 9, true),
        ]);
        let enc = |m: &Msg| m.to_vec().expect("seed message emits");
        let p = enc(&policies);
        let one_ns = enc(&namespaces);
        let mut dup = one_ns.clone();
        dup.extend_from_slice(&one_ns[4..]);
        dup[3] = 2;
        // The namespace name "prod" sits after header and its length byte.
        let mut upper = one_ns.clone();
        upper[5] = b'P';
        let mut bad_version = p.clone();
        bad_version[0] = 9;
        let mut bad_kind = p.clone();
        bad_kind[1] = 9;
        let export = wire::emit_export(7, 9, &[p.clone(), one_ns.clone()]);
        vec![
            ("valid-policies", p.clone()),
            ("valid-namespaces", one_ns),
            ("valid-pods", enc(&pods)),
            ("valid-empty", enc(&Msg::Pods(Vec::new()))),
            ("garbage-truncated", p[..p.len() - 1].to_vec()),
            ("garbage-duplicate-key", dup),
            ("garbage-uppercase-namespace", upper),
            ("garbage-bad-version", bad_version),
            ("garbage-unknown-kind", bad_kind),
            // A state file is not a gossip message (the check also imports it).
            ("garbage-state-file", export),
        ]
    }

    /// An Ethernet + IPv4 + TCP (or UDP) frame with `payload` bytes, behind an 8-byte
    /// offload request (see `checks::segment`).
    fn offload_seed(gso: u8, tcp: bool, payload: usize, gso_size: u16) -> Vec<u8> {
        let l4_hdr = if tcp { 20 } else { 8 };
        let ip_len = 20 + l4_hdr + payload;
        let mut f = vec![0u8; 14 + ip_len];
        f[..12].copy_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&(ip_len as u16).to_be_bytes());
        f[22] = 64;
        f[23] = if tcp { 6 } else { 17 };
        f[26..30].copy_from_slice(&[10, 32, 0, 1]);
        f[30..34].copy_from_slice(&[10, 32, 0, 2]);
        f[34..36].copy_from_slice(&40000u16.to_be_bytes());
        f[36..38].copy_from_slice(&5201u16.to_be_bytes());
        if tcp {
            f[38..42].copy_from_slice(&1u32.to_be_bytes());
            f[46] = 5 << 4;
            f[47] = 0x18;
        } else {
            f[38..40].copy_from_slice(&((8 + payload) as u16).to_be_bytes());
        }
        for (i, b) in f[34 + l4_hdr..].iter_mut().enumerate() {
            *b = i as u8;
        }
        let csum_offset: u16 = if tcp { 16 } else { 6 };
        let mut seed = vec![gso, 1];
        seed.extend_from_slice(&gso_size.to_be_bytes());
        seed.extend_from_slice(&34u16.to_be_bytes());
        seed.extend_from_slice(&csum_offset.to_be_bytes());
        seed.extend_from_slice(&f);
        seed
    }

    fn segment() -> Seeds {
        let tso = offload_seed(1, true, 5000, 1400);
        let mut v6_claimed = tso.clone();
        v6_claimed[0] = 2;
        vec![
            ("valid-tso-v4", tso.clone()),
            ("valid-uso-v4", offload_seed(3, false, 3000, 1000)),
            ("valid-tso-one-segment", offload_seed(1, true, 100, 1400)),
            ("garbage-no-gso", offload_seed(0, true, 100, 0)),
            ("garbage-v6-claimed-for-v4", v6_claimed),
            ("garbage-truncated", tso[..60].to_vec()),
            ("garbage-zero-mss", offload_seed(1, true, 5000, 0)),
            ("garbage-short", vec![1, 0, 5]),
        ]
    }

    fn heartbeat() -> Seeds {
        use weft_core::fastdp::{HEARTBEAT_MACS_MAX, Heartbeat};
        let hb = |hears_you: bool, macs: Vec<[u8; 6]>| {
            let h = Heartbeat {
                sender: PeerName::from_u64(0x0a0b0c0d0e0f),
                receiver: PeerName::from_u64(0x010203040506),
                hears_you,
                seq: 7,
                macs,
            };
            let mut buf = vec![0u8; 2048];
            let n = h.emit(&mut buf).expect("seed heartbeat emits");
            buf.truncate(n);
            buf
        };
        let two = hb(true, vec![[2, 0, 0, 0, 0, 1], [0x0a, 0x58, 10, 32, 0, 2]]);
        let full = hb(
            false,
            (0..HEARTBEAT_MACS_MAX as u8)
                .map(|i| [2, 0, 0, 0, 1, i])
                .collect(),
        );
        // The MAC count sits after MAC header (14), magic (8), names (12), flags, seq (8).
        let count_at = 14 + 8 + 12 + 1 + 8;
        let mut ethertype = two.clone();
        ethertype[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        let mut magic = two.clone();
        magic[14] ^= 0x20;
        let mut flag = two.clone();
        flag[count_at - 9] = 0x03;
        let mut group = two.clone();
        group[count_at + 2] = 0x01;
        let mut over = full.clone();
        over[count_at..count_at + 2]
            .copy_from_slice(&(HEARTBEAT_MACS_MAX as u16 + 1).to_be_bytes());
        let mut truncated = full.clone();
        truncated.truncate(truncated.len() - 1);
        let mut padded = hb(false, Vec::new());
        padded.extend_from_slice(&[0x5a; 20]);
        vec![
            ("valid-two-macs", two),
            ("valid-no-macs", hb(false, Vec::new())),
            ("valid-most-macs", full),
            ("valid-extra-padding", padded),
            ("garbage-arp-ethertype", ethertype),
            ("garbage-bad-magic", magic),
            ("garbage-unknown-flag", flag),
            ("garbage-group-mac", group),
            ("garbage-too-many-macs", over),
            ("garbage-truncated", truncated),
            ("garbage-runt", vec![0xff; 13]),
        ]
    }

    fn punch_msg() -> Seeds {
        use weft_core::punch::wire::{PunchMsg, RefuseReason};
        let m = |m: PunchMsg| {
            let mut buf = vec![0u8; 64];
            let n = m.emit(&mut buf).expect("seed punch message emits");
            buf.truncate(n);
            buf
        };
        let intro = m(PunchMsg::Intro {
            peer: PeerName::from_u64(0x0a0b0c0d0e0f),
            addr: "198.18.0.3:40123".parse().unwrap(),
            session: 0x1122_3344_5566_7788,
        });
        let mut trailing = intro.clone();
        trailing.push(0);
        let mut family = intro.clone();
        family[7] = 5;
        vec![
            ("valid-reflect-token", m(PunchMsg::ReflectToken(99))),
            (
                "valid-observed-v6",
                m(PunchMsg::Observed("[2001:db8::1]:6783".parse().unwrap())),
            ),
            (
                "valid-intro-request",
                m(PunchMsg::IntroRequest(PeerName::from_u64(7))),
            ),
            ("valid-intro", intro.clone()),
            (
                "valid-intro-refused",
                m(PunchMsg::IntroRefused {
                    target: PeerName::from_u64(7),
                    reason: RefuseReason::NoAddress,
                }),
            ),
            ("garbage-trailing", trailing),
            ("garbage-bad-family", family),
            ("garbage-truncated", intro[..intro.len() - 1].to_vec()),
            ("garbage-unknown-kind", vec![0x42, 0, 0]),
            ("garbage-empty", Vec::new()),
        ]
    }

    fn punch_datagram() -> Seeds {
        use weft_core::punch::wire::{PunchBody, PunchDatagram, SEGMENT_PAYLOAD_LEN_MAX};
        let d = |body: PunchBody<'_>| {
            let mut buf = vec![0u8; 2048];
            let n = PunchDatagram {
                sender: PeerName::from_u64(0x0a0b0c0d0e0f),
                receiver: PeerName::from_u64(0x010203040506),
                tag: 0xfeed,
                body,
            }
            .emit(&mut buf)
            .expect("seed punch datagram emits");
            buf.truncate(n);
            buf
        };
        let full = [0x5au8; SEGMENT_PAYLOAD_LEN_MAX];
        let seg = d(PunchBody::Segment {
            seq: 1,
            ack: 2,
            payload: b"hello",
        });
        let mut sleeve_magic = seg.clone();
        sleeve_magic[0] = 0x77;
        let mut version = seg.clone();
        version[1] = 9;
        let mut reflect_tail = d(PunchBody::Reflect);
        reflect_tail.push(1);
        let mut over = d(PunchBody::Segment {
            seq: 0,
            ack: 0,
            payload: &full,
        });
        over.push(0);
        vec![
            ("valid-reflect", d(PunchBody::Reflect)),
            ("valid-segment", seg.clone()),
            (
                "valid-pure-ack",
                d(PunchBody::Segment {
                    seq: 3,
                    ack: 3,
                    payload: &[],
                }),
            ),
            (
                "valid-full-segment",
                d(PunchBody::Segment {
                    seq: 0,
                    ack: 0,
                    payload: &full,
                }),
            ),
            ("garbage-sleeve-magic", sleeve_magic),
            ("garbage-version", version),
            ("garbage-reflect-tail", reflect_tail),
            ("garbage-oversized", over),
            ("garbage-truncated", seg[..20].to_vec()),
        ]
    }
}
