//! One check per host decoder, for the fuzz targets (`fuzz/fuzz_targets/*.rs`) and the
//! corpus replay (`host/tests/fuzz_corpus.rs`), so both run exactly the same code. Only
//! with the `fuzzing` feature; not part of the API.
//!
//! Each check takes arbitrary bytes, must never panic on them, returns whether they
//! decoded, and asserts what must hold for anything that does (re-encoding gives the same
//! value; answers stay within their bounds).

use crate::dns::answer::{self, Action, Shuffler, Table};
use crate::http::{self, HttpError};
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::{DNSClass, RData, RecordType};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::OnceLock;
use weft_core::segment::{Gso, SUPER_FRAME_LEN_MAX};
use weft_uring_dp::{VNET_HDR_MRG_LEN, VirtioNetHdr, VnetHdrLen};

/// A check: arbitrary bytes in, whether they decoded out.
pub type Check = fn(&[u8]) -> bool;

/// Every host fuzz target (the directory under `fuzz/corpus/`) and its check.
pub const TARGETS: &[(&str, Check)] = &[
    ("http", http),
    ("dns_answer", dns_answer),
    ("vnet_hdr", vnet_hdr),
    ("cni_conf", cni_conf),
    ("docker_plugin", docker_plugin),
    ("docker_proxy", docker_proxy),
    ("state_file", state_file),
    ("policy_yaml", policy_yaml),
];

/// The control API's HTTP parser, as a request and as a response. At EOF the verdict is
/// final; before EOF it is the same but "truncated" is "read more". A parsed message's
/// strict prefixes are "read more", and it writes back out to a message that parses to
/// the same value. "Decodes" means it is a whole request or response.
pub fn http(data: &[u8]) -> bool {
    let req = http::parse_request(data, true);
    let resp = http::parse_response(data, true);
    assert!(!matches!(req, Ok(None)) && !matches!(resp, Ok(None)));
    for e in [req.as_ref().err(), resp.as_ref().err()]
        .into_iter()
        .flatten()
    {
        assert!(matches!(e.status(), 400 | 413 | 431 | 501), "{e:?}");
    }
    assert_eq!(http::parse_request(data, false), before_eof(&req));
    assert_eq!(http::parse_response(data, false), before_eof(&resp));
    let head_len = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(0, |p| p + 4);
    let prefixes = [
        0,
        data.len() / 2,
        head_len.saturating_sub(1),
        data.len().saturating_sub(1),
    ];
    match (req, resp) {
        (Ok(Some(_)), Ok(Some(_))) => panic!("a request and a response at once"),
        (Ok(Some(r)), _) => {
            assert!(r.path.starts_with('/') && !r.path.contains(['?', '#']));
            assert!(r.body.len() <= http::BODY_LEN_MAX && head_len <= http::HEAD_LEN_MAX);
            assert_eq!(data.len(), head_len + r.body.len());
            for cut in prefixes {
                assert_eq!(http::parse_request(&data[..cut], false), Ok(None), "{cut}");
            }
            let out = http::write_request(&r.method, &r.path, Some(&r.body));
            assert_eq!(http::parse_request(&out, true), Ok(Some(r)));
            true
        }
        (_, Ok(Some(r))) => {
            assert!(r.body.len() <= http::BODY_LEN_MAX && head_len <= http::HEAD_LEN_MAX);
            assert_eq!(data.len(), head_len + r.body.len());
            for cut in prefixes {
                assert_eq!(http::parse_response(&data[..cut], false), Ok(None), "{cut}");
            }
            let content_type = r.content_type.as_deref().unwrap_or("text/plain");
            let out = http::write_response(r.status, content_type, &r.body, None);
            let back = http::parse_response(&out, true).expect("a written response parses");
            let back = back.expect("a written response is whole");
            assert_eq!((back.status, &back.body), (r.status, &r.body));
            assert_eq!(back.content_type.as_deref(), Some(content_type));
            true
        }
        _ => false,
    }
}

/// The verdict on bytes before EOF, given the one at EOF: "truncated" is "read more".
fn before_eof<T: Clone>(at_eof: &Result<Option<T>, HttpError>) -> Result<Option<T>, HttpError> {
    match at_eof {
        Err(HttpError::Truncated) => Ok(None),
        other => other.clone(),
    }
}

/// The domain [`dns_answer`] serves.
const DNS_DOMAIN: &str = "weave.local";

/// The records [`dns_answer`] answers from: a few names, one with too many addresses for
/// a classic UDP answer. Built once.
fn dns_table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = Table::default();
        for i in 1..=3 {
            t.insert("web.weave.local", Ipv4Addr::new(10, 32, 0, i));
        }
        t.insert("db.weave.local", Ipv4Addr::new(10, 32, 0, 9));
        t.insert("db.weave.local", Ipv4Addr::new(10, 32, 0, 1));
        for i in 0..100 {
            t.insert("big.weave.local", Ipv4Addr::new(10, 32, 1, i));
        }
        t
    })
}

/// The DNS answerer, over UDP and TCP: drops exactly what is not a query; otherwise both
/// agree on forwarding, and an answer parses as a DNS response with the query's id, opcode
/// and RD bit, fits the client's UDP size, and holds only records of the table for the
/// name asked (all of them over TCP; over UDP a prefix, with TC set when cut). "Decodes"
/// means answered from the table or forwarded, not refused with a bare error.
pub fn dns_answer(data: &[u8]) -> bool {
    let table = dns_table();
    let udp = answer::answer(data, table, DNS_DOMAIN, true, &mut Shuffler::new(1));
    let tcp = answer::answer(data, table, DNS_DOMAIN, false, &mut Shuffler::new(1));
    let not_a_query = data.len() < answer::HEADER_LEN_BYTES || data[2] & 0x80 != 0;
    assert_eq!(udp == Action::Drop, not_a_query);
    assert_eq!(tcp == Action::Drop, not_a_query);
    assert_eq!(udp == Action::Forward, tcp == Action::Forward);
    let (Action::Reply(u), Action::Reply(t)) = (&udp, &tcp) else {
        return udp == Action::Forward;
    };
    let query = Message::from_vec(data).ok();
    let udp_len_max =
        query
            .as_ref()
            .and_then(|q| q.edns.as_ref())
            .map_or(answer::UDP_LEN_CLASSIC, |e| {
                let max = e.max_payload();
                usize::from(max.clamp(answer::UDP_LEN_CLASSIC as u16, answer::UDP_LEN_EDNS_MAX))
            });
    assert!(u.len() <= udp_len_max, "{} > {udp_len_max}", u.len());
    let mut replies = Vec::new();
    for bytes in [u, t] {
        assert_eq!(bytes[..2], data[..2], "id echoed");
        // QR set; opcode and RD copied (AA and TC are the answer's own).
        assert_eq!(bytes[2] & 0xf9, 0x80 | (data[2] & 0x79));
        let reply = Message::from_vec(bytes).expect("an answer parses as DNS");
        assert_eq!(reply.metadata.message_type, MessageType::Response);
        replies.push(reply);
    }
    let (ur, tr) = (&replies[0], &replies[1]);
    let code = tr.metadata.response_code;
    assert_eq!(ur.metadata.response_code, code);
    if matches!(
        code,
        ResponseCode::FormErr | ResponseCode::NotImp | ResponseCode::ServFail
    ) {
        assert_eq!((u.len(), u), (answer::HEADER_LEN_BYTES, t), "a bare header");
        return false;
    }
    let query = query.expect("a query answered in full parses");
    let [q] = query.queries.as_slice() else {
        panic!("answered a query without exactly one question");
    };
    assert_eq!(tr.queries, query.queries);
    assert_eq!(ur.queries, query.queries);
    assert!(!tr.metadata.truncation, "TCP answers are whole");
    let qname = answer::canonical(q.name());
    let class_ok = matches!(q.query_class(), DNSClass::IN | DNSClass::ANY);
    let held: Option<BTreeSet<_>> = table
        .forward
        .get(&qname)
        .map(|a| a.iter().copied().collect());
    let mut all = BTreeSet::new();
    for r in &tr.answers {
        assert_eq!((&r.name, r.ttl), (q.name(), answer::TTL_S));
        let fresh = match &r.data {
            RData::A(a) => {
                assert!(held.as_ref().is_some_and(|h| h.contains(&a.0)));
                all.insert(a.0.to_string())
            }
            RData::PTR(p) => {
                let name = answer::canonical(&p.0);
                assert!(table.forward.contains_key(&name), "{name}");
                all.insert(name)
            }
            other => panic!("answered with {other:?}"),
        };
        assert!(fresh, "an answer repeated");
    }
    if let Some(h) = &held {
        if class_ok && matches!(q.query_type(), RecordType::A | RecordType::ANY) {
            assert_eq!(all.len(), h.len(), "every address over TCP");
        }
    }
    if code == ResponseCode::NXDomain {
        assert!(held.is_none() && tr.answers.is_empty());
    }
    let cut = ur.answers.len() < tr.answers.len();
    assert!(ur.answers.len() <= tr.answers.len());
    assert_eq!(ur.metadata.truncation, cut);
    for (a, b) in ur.answers.iter().zip(&tr.answers) {
        assert_eq!(a.name, b.name);
    }
    true
}

/// `VirtioNetHdr` parse and emit, and the sleeve's reading of it as the core's offload,
/// then the frame behind it cut as the sleeve would. Input: one byte (bit 0: the 12-byte
/// header), the header, the frame. A parsed header re-emits to its bytes; an offload
/// turned back into a header reads as the same offload; segmenting never panics and
/// never makes a segment longer than the frame. "Decodes" means the sleeve takes the
/// frame (a header it reads).
pub fn vnet_hdr(data: &[u8]) -> bool {
    use crate::sleeve::{offload_of, vnet_of};
    let Some((&which, rest)) = data.split_first() else {
        return false;
    };
    let len = if which & 1 == 0 {
        VnetHdrLen::Basic
    } else {
        VnetHdrLen::MrgRxbuf
    };
    let Ok(h) = VirtioNetHdr::parse(rest, len) else {
        assert!(rest.len() < len.bytes());
        return false;
    };
    let mut buf = [0u8; VNET_HDR_MRG_LEN];
    let n = h.emit(&mut buf, len).expect("a parsed header re-emits");
    assert_eq!(n, len.bytes());
    assert_eq!(buf[..n], rest[..n]);
    assert!(len == VnetHdrLen::MrgRxbuf || h.num_buffers == 0);
    let Some(off) = offload_of(&h) else {
        return false;
    };
    assert_eq!(off.gso == Gso::None, !h.is_gso());
    assert_eq!(off.csum.is_some(), h.needs_csum());
    let back = vnet_of(&off);
    let again = offload_of(&back).expect("a header from an offload reads");
    assert_eq!(
        (again.gso, again.gso_size, again.hdr_len, again.csum),
        (off.gso, off.gso_size, off.hdr_len, off.csum)
    );
    assert_eq!(again.data_valid, off.data_valid && off.csum.is_none());
    let frame = &rest[n..];
    let mut scratch = vec![0u8; SUPER_FRAME_LEN_MAX];
    let mut longest = 0;
    let res = weft_core::segment::segment(frame, &off, 1500, &mut scratch, |s| {
        longest = longest.max(s.len());
    });
    if res.is_ok() {
        assert!(
            longest <= frame.len(),
            "a segment is never longer than its frame"
        );
    }
    true
}

/// The CNI plugin's stdin (`cni::spec::NetConf`) for every command, and what is read out
/// of it: a conf that parses has a version weft speaks (VERSION aside), and its
/// `prevResult` is read by CHECK without a panic. "Decodes" means it parses for ADD.
pub fn cni_conf(data: &[u8]) -> bool {
    use crate::cni::spec::{Command, NetConf, VERSIONS, version_rank};
    let cmds = [
        Command::Add,
        Command::Del,
        Command::Check,
        Command::Status,
        Command::Gc,
        Command::Version,
    ];
    let mut add = false;
    for cmd in cmds {
        let Ok(conf) = NetConf::parse(data, cmd) else {
            continue;
        };
        if cmd != Command::Version {
            assert!(version_rank(&conf.version).is_some(), "{:?}", conf.version);
        }
        let _ = crate::cni::result::version_reply(&conf.version);
        if let Some(prev) = &conf.prev_result {
            let _ = crate::cni::result::prev_result_of(prev, "eth0");
        }
        assert!(conf.valid_attachments.len() <= crate::cni::spec::VALID_ATTACHMENTS_MAX);
        add |= cmd == Command::Add;
    }
    assert!(VERSIONS.len() == 4);
    add
}

/// The Docker plugin's methods the `docker_plugin` target calls, by op byte (mod one more
/// than their number: the last value restarts the plugin from its state file).
pub const DOCKER_METHODS: &[&str] = &[
    "NetworkDriver.CreateNetwork",
    "NetworkDriver.DeleteNetwork",
    "NetworkDriver.CreateEndpoint",
    "NetworkDriver.DeleteEndpoint",
    "NetworkDriver.EndpointOperInfo",
    "NetworkDriver.Join",
    "NetworkDriver.Leave",
    "NetworkDriver.ProgramExternalConnectivity",
    "NetworkDriver.RevokeExternalConnectivity",
    "NetworkDriver.DiscoverNew",
    "NetworkDriver.DiscoverDelete",
    "IpamDriver.RequestPool",
    "IpamDriver.ReleasePool",
    "IpamDriver.RequestAddress",
    "IpamDriver.ReleaseAddress",
    "Plugin.Activate",
];

/// The `docker_plugin` target's input for calls (`DOCKER_METHODS` index, or its length for
/// a restart; JSON body): per call the op byte, the body's length (u16, big-endian), the body.
pub fn docker_plugin_ops(calls: &[(usize, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (m, body) in calls {
        out.push(u8::try_from(*m).unwrap_or(u8::MAX));
        let n = u16::try_from(body.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&n.to_be_bytes());
        out.extend_from_slice(&body[..usize::from(n)]);
    }
    out
}

/// The Docker plugin (libnetwork's remote network and IPAM driver API) driven by a
/// sequence of calls with arbitrary JSON bodies, against an in-memory router, with
/// restarts from its state file in between. Never a panic; every answer is JSON; what
/// the plugin answers is on disk first; a restart reads back exactly the state it wrote;
/// every address the plugin holds is held in the router's IPAM by the same owner, once.
/// "Decodes" means some call that is not a constant answer succeeded.
pub fn docker_plugin(data: &[u8]) -> bool {
    use crate::docker::fake::Fake;
    use crate::docker::state::{STATE_FILE, Store};
    use crate::docker::{Ctx, Plugin};
    use std::sync::{Arc, Mutex};

    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let rt = RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
    });
    // One state directory per process, emptied for each input; on tmpfs where there is one
    // (the store fsyncs every change).
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let base = std::path::Path::new("/dev/shm");
        let base = if base.is_dir() {
            base.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let d = base.join(format!("weft-fuzz-docker-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("a state directory");
        d
    });
    let path = dir.join(STATE_FILE);
    let _ = std::fs::remove_file(&path);
    let range: weft_core::ipam::Cidr = "10.32.0.0/12".parse().expect("a range");
    let fake = Arc::new(Fake::default());
    let open = || {
        let store = Store::load(&path).expect("the plugin reads the state file it wrote");
        Plugin::new(
            Arc::clone(&fake),
            store,
            range,
            range,
            Arc::new(Mutex::new(crate::messages::PluginStatus::default())),
        )
    };
    let mut plugin = open();
    let ctx = Ctx {
        docker_netns: "/proc/self/ns/net".into(),
    };
    let mut rest = data;
    let mut answered = false;
    for _ in 0..64 {
        let Some((&op, r)) = rest.split_first() else {
            break;
        };
        let Some((len, r)) = r.split_first_chunk::<2>() else {
            break;
        };
        let n = usize::from(u16::from_be_bytes(*len)).min(r.len());
        let (body, r) = r.split_at(n);
        rest = r;
        let m = usize::from(op) % (DOCKER_METHODS.len() + 1);
        let Some(method) = DOCKER_METHODS.get(m) else {
            let before = rt.block_on(plugin.store.lock()).get().clone();
            plugin = open();
            assert_eq!(rt.block_on(plugin.store.lock()).get(), &before);
            continue;
        };
        if let Ok(reply) = rt.block_on(plugin.call(method, body, &ctx)) {
            assert!(
                serde_json::from_slice::<serde_json::Value>(&reply).is_ok(),
                "{method}: the reply is JSON"
            );
            answered |= !method.starts_with("Plugin.");
        }
        let held = rt.block_on(plugin.store.lock()).get().clone();
        let on_disk = Store::load(&path).expect("the state file reads back");
        assert_eq!(
            on_disk.get(),
            &held,
            "{method}: answered before it was on disk"
        );
        let ipam = fake.ipam.lock().expect("the fake's lock");
        for (addr, a) in &held.addresses {
            assert_eq!(
                ipam.get(addr),
                Some(&a.owner),
                "{method}: {addr} held by the plugin and the router alike"
            );
        }
    }
    answered
}

/// Every state file weft writes (`state.json`, the Docker plugin's, the proxy's, the
/// services'), by the first byte: what decodes encodes back to bytes that decode to the
/// same state, so a state survives any number of restarts. "Decodes" means it parsed.
pub fn state_file(data: &[u8]) -> bool {
    fn again<T>(data: &[u8]) -> bool
    where
        T: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug,
    {
        let Ok(s) = serde_json::from_slice::<T>(data) else {
            return false;
        };
        let bytes = serde_json::to_vec_pretty(&s).expect("a state encodes");
        let back: T = serde_json::from_slice(&bytes).expect("an encoded state decodes");
        assert_eq!(back, s, "a state reads back as written");
        true
    }
    let Some((&which, rest)) = data.split_first() else {
        return false;
    };
    match which % 4 {
        0 => again::<crate::state::Persisted>(rest),
        1 => again::<crate::docker::state::PluginState>(rest),
        2 => again::<crate::docker::proxy::ProxyState>(rest),
        _ => again::<crate::services::Persisted>(rest),
    }
}

/// The Kubernetes objects `weft policy apply` reads (YAML or JSON): what parses writes to
/// the policy wire format and reads back as the same policy, and compiles (with a pod in
/// each namespace it names) without a panic. "Decodes" means it parsed to some object.
pub fn policy_yaml(data: &[u8]) -> bool {
    use crate::policy::k8s::{self, Object};
    use weft_core::policy::table::Stamp;
    use weft_core::policy::wire::{self, Msg, PolicyEntry};
    use weft_core::policy::{Labels, Pod, World, compile};
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let Ok(objects) = k8s::parse("fuzz", text) else {
        return false;
    };
    let mut world = World::default();
    for o in &objects {
        match o {
            Object::Policy(p) => {
                let e = PolicyEntry {
                    key: p.key.clone(),
                    stamp: Stamp {
                        lamport: 1,
                        writer: weft_core::peer::PeerName::from_u64(1),
                    },
                    policy: Some(p.clone()),
                };
                for m in wire::encode_all([&e]) {
                    match wire::parse(&m).expect("an encoded policy parses") {
                        Msg::Policies(es) => {
                            assert_eq!(es, std::slice::from_ref(&e), "the policy reads back")
                        }
                        other => panic!("policies read back as {other:?}"),
                    }
                }
                world.pods.push(Pod {
                    addrs: vec![Ipv4Addr::new(10, 32, 0, 1)],
                    namespace: p.key.namespace.clone(),
                    labels: Labels::default(),
                    ports: Vec::new(),
                });
                world.policies.push(p.clone());
            }
            Object::Namespace(name, labels) => {
                world.namespaces.insert(name.clone(), labels.clone());
            }
        }
    }
    let _ = compile::compile(&world, &|_| true);
    !objects.is_empty()
}

/// The API proxy's view of `POST /containers/create` bodies: a body weft takes is
/// rewritten to start the wait program first, and a rewritten body is never taken again
/// (so a retried create does not wrap twice). "Decodes" means it was JSON weft takes.
pub fn docker_proxy(data: &[u8]) -> bool {
    use crate::docker::proxy::create::{Context, ImageConfig, rewrite, taken};
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(data) else {
        return false;
    };
    let Ok(image) = taken(&body) else {
        return false;
    };
    let ctx = Context {
        wait_host_path: "/usr/lib/weft/weft-wait".into(),
        dns_server: Some("172.17.0.1".into()),
        domain: "weave.local".into(),
    };
    let config = image.map(|_| ImageConfig {
        entrypoint: vec!["/bin/sh".into()],
        cmd: vec!["-c".into(), "true".into()],
    });
    if let Ok(out) = rewrite(body, Some("/fuzzed"), config.as_ref(), &ctx) {
        assert!(taken(&out).is_err(), "a rewritten body is not taken again");
    }
    true
}
