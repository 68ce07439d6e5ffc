//! Replays the host targets' files of the committed fuzz corpus (`fuzz/corpus/<target>/*`)
//! through the same checks the fuzz targets run (`weft::fuzzing`, the `fuzzing` feature,
//! which the dev-dependency on weft itself turns on for tests), and checks that every
//! corpus directory and every fuzz target is replayed here or by core's replay test.
//!
//! Naming as in core (`weft_core::fuzz_checks::replay`). Regenerate these seeds with
//! `WEFT_WRITE_CORPUS=1 cargo test -p weft --test fuzz_corpus -- --ignored`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use weft::fuzzing as checks;

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of `fuzz/corpus/<target>/`, by name.
fn corpus(target: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
    let dir = fuzz_dir().join("corpus").join(target);
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
        weft_core::fuzz_checks::replay(target, *check, &corpus(target)?)?;
    }
    Ok(())
}

#[test]
fn every_fuzz_target_and_corpus_is_replayed() -> Result<(), String> {
    let replayed: BTreeSet<&str> = weft_core::fuzz_checks::TARGETS
        .iter()
        .chain(checks::TARGETS)
        .map(|(name, _)| *name)
        .collect();
    let dir = fuzz_dir().join("corpus");
    let mut corpora = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let entry = entry.map_err(|e| e.to_string())?;
        corpora.insert(entry.file_name().to_string_lossy().into_owned());
    }
    let manifest = fuzz_dir().join("Cargo.toml");
    let manifest =
        std::fs::read_to_string(&manifest).map_err(|e| format!("{}: {e}", manifest.display()))?;
    // Each [[bin]] is one target; its `name = "..."` is the line after the header.
    let mut bins = BTreeSet::new();
    let mut lines = manifest.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "[[bin]]" {
            let name = lines.next().unwrap_or_default();
            let name = name.trim().strip_prefix("name = ").unwrap_or(name);
            bins.insert(name.trim_matches('"').to_owned());
        }
    }
    let replayed: BTreeSet<String> = replayed.into_iter().map(str::to_owned).collect();
    if corpora != replayed || bins != replayed {
        return Err(format!(
            "replayed {replayed:?}; corpus directories {corpora:?}; fuzz targets {bins:?}"
        ));
    }
    Ok(())
}

/// Writes the host targets' seed corpus. Ignored: run by hand after a format change.
#[test]
#[ignore]
fn write_seed_corpus() -> Result<(), String> {
    if std::env::var_os("WEFT_WRITE_CORPUS").is_none() {
        return Err("set WEFT_WRITE_CORPUS=1 to overwrite fuzz/corpus".into());
    }
    for (target, seeds) in seeds::all() {
        let dir = fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        for (name, bytes) in seeds {
            std::fs::write(dir.join(name), bytes).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

mod seeds {
    use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
    use hickory_proto::rr::{Name, RecordType};

    type Seeds = Vec<(&'static str, Vec<u8>)>;

    pub(super) fn all() -> Vec<(&'static str, Seeds)> {
        vec![
            ("http", http()),
            ("dns_answer", dns_answer()),
            ("vnet_hdr", vnet_hdr()),
            ("cni_conf", cni_conf()),
            ("docker_plugin", docker_plugin()),
            ("docker_proxy", docker_proxy()),
            ("state_file", state_file()),
            ("policy_yaml", policy_yaml()),
        ]
    }

    /// Call sequences as `docker network create` / `run` / `rm` make them.
    fn docker_plugin() -> Seeds {
        use weft::fuzzing::{DOCKER_METHODS, docker_plugin_ops};
        let m = |name: &str| DOCKER_METHODS.iter().position(|x| *x == name).unwrap();
        let restart = DOCKER_METHODS.len();
        let gw = r#"{"PoolID":"10.40.0.0/24","Address":"","Options":{"RequestAddressType":"com.docker.network.gateway"}}"#;
        let net = r#"{"NetworkID":"n1","Options":{"com.docker.network.generic":{}},"IPv4Data":[{"AddressSpace":"weft-local","Pool":"10.40.0.0/24","Gateway":"10.40.0.1/24","AuxAddresses":null}],"IPv6Data":[]}"#;
        let addr = r#"{"PoolID":"10.40.0.0/24","Address":"","Options":null}"#;
        let ep = r#"{"NetworkID":"n1","EndpointID":"e1","Interface":{"Address":"10.40.0.2/24","AddressIPv6":"","MacAddress":""},"Options":{}}"#;
        let join = r#"{"NetworkID":"n1","EndpointID":"e1","SandboxKey":"/var/run/docker/netns/x","Options":{}}"#;
        let ne = r#"{"NetworkID":"n1","EndpointID":"e1"}"#;
        let lifecycle: Vec<(usize, &[u8])> = vec![
            (m("IpamDriver.RequestPool"), br#"{"AddressSpace":"weft-local","Pool":"10.40.0.0/24","SubPool":"","Options":null,"V6":false}"#),
            (m("IpamDriver.RequestAddress"), gw.as_bytes()),
            (m("NetworkDriver.CreateNetwork"), net.as_bytes()),
            (m("IpamDriver.RequestAddress"), addr.as_bytes()),
            (m("NetworkDriver.CreateEndpoint"), ep.as_bytes()),
            (m("NetworkDriver.Join"), join.as_bytes()),
            (restart, b""),
            (m("NetworkDriver.EndpointOperInfo"), ne.as_bytes()),
            (m("NetworkDriver.Leave"), ne.as_bytes()),
            (m("NetworkDriver.DeleteEndpoint"), ne.as_bytes()),
            (m("IpamDriver.ReleaseAddress"), br#"{"PoolID":"10.40.0.0/24","Address":"10.40.0.2"}"#),
            (m("NetworkDriver.DeleteNetwork"), br#"{"NetworkID":"n1"}"#),
            (m("IpamDriver.ReleaseAddress"), br#"{"PoolID":"10.40.0.0/24","Address":"10.40.0.1"}"#),
            (m("IpamDriver.ReleasePool"), br#"{"PoolID":"10.40.0.0/24"}"#),
        ];
        vec![
            ("valid-network-lifecycle", docker_plugin_ops(&lifecycle)),
            (
                "valid-auto-pool",
                docker_plugin_ops(&[
                    (m("IpamDriver.RequestPool"), br#"{"AddressSpace":"weft-local","Pool":"","SubPool":"","Options":null,"V6":false}"#),
                    (restart, b""),
                    (m("IpamDriver.RequestPool"), br#"{"AddressSpace":"weft-local","Pool":"","SubPool":"","Options":null,"V6":false}"#),
                ]),
            ),
            ("garbage-empty", Vec::new()),
            (
                "garbage-bad-json",
                docker_plugin_ops(&[
                    (m("IpamDriver.RequestPool"), b"{\"Pool\":"),
                    (m("NetworkDriver.Join"), b"[]"),
                ]),
            ),
            (
                "garbage-outside-the-range",
                docker_plugin_ops(&[(m("IpamDriver.RequestPool"), br#"{"Pool":"192.168.0.0/16"}"#)]),
            ),
        ]
    }

    fn docker_proxy() -> Seeds {
        let b = |s: &str| s.as_bytes().to_vec();
        vec![
            (
                "valid-plain",
                b(
                    r#"{"Image":"busybox","Cmd":["sleep","60"],"HostConfig":{"NetworkMode":"default"}}"#,
                ),
            ),
            (
                "valid-image-command",
                b(
                    r#"{"Image":"busybox","Env":["WEFT_CIDR=10.32.1.0/24"],"HostConfig":{"Binds":["/a:/b"],"Dns":[]}}"#,
                ),
            ),
            (
                "garbage-host-network",
                b(r#"{"Image":"busybox","HostConfig":{"NetworkMode":"host"}}"#),
            ),
            (
                "garbage-cidr-none",
                b(r#"{"Image":"busybox","Env":["WEFT_CIDR=none"]}"#),
            ),
            ("garbage-not-json", b("{\"Image\"")),
        ]
    }

    fn state_file() -> Seeds {
        let f = |which: u8, s: &str| {
            let mut v = vec![which];
            v.extend_from_slice(s.as_bytes());
            v
        };
        vec![
            (
                "valid-state-json",
                f(
                    0,
                    r#"{"version":1,"attachments":[{"id":"ns-4026532281","netns":"/var/run/netns/a","netns_inode":4026532281,"host_ifname":"vethwepl1","ifname":"ethwe","mac":"aa:bb:cc:dd:ee:01","addresses":["10.32.0.2/12"],"dns_name":"a.weave.local.","pod":{"namespace":"prod","labels":{"app":"web"},"ports":["http=80/tcp"]}}],"exposed":["10.32.0.1/12"],"exposed_names":[{"address":"10.32.0.1/12","fqdn":"host.weave.local."}]}"#,
                ),
            ),
            (
                "valid-plugin-state",
                f(
                    1,
                    r#"{"version":1,"pools":{"10.40.0.0/24":{"pool":"10.40.0.0/24","refs":1,"auto":false}},"addresses":{"10.40.0.1":{"pool_id":"10.40.0.0/24","prefix_len":24,"owner":"dk-g-0123456789abcdef","gateway":true}},"networks":{},"endpoints":{},"deleted_endpoints":["e0"]}"#,
                ),
            ),
            (
                "valid-proxy-state",
                f(
                    2,
                    r#"{"version":1,"containers":{"c0ffee":{"addresses":["10.32.0.9/12"],"attachment":"ns-1","pid":42}}}"#,
                ),
            ),
            (
                "valid-services",
                f(
                    3,
                    r#"{"version":1,"next_id":2,"services":[{"id":"s1","kind":"export","proto":"tcp","port":8080,"on":{"addr":"127.0.0.1"},"target":"10.32.0.2","target_port":80,"resolved":"10.32.0.2"}]}"#,
                ),
            ),
            ("garbage-empty", Vec::new()),
            ("garbage-truncated", f(0, r#"{"version":1,"attachments":["#)),
            ("garbage-wrong-type", f(3, r#"{"version":"one"}"#)),
        ]
    }

    fn policy_yaml() -> Seeds {
        let b = |s: &str| s.as_bytes().to_vec();
        vec![
            (
                "valid-deny-all",
                b(
                    "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: deny\n  namespace: prod\nspec:\n  podSelector: {}\n  policyTypes: [Ingress, Egress]\n",
                ),
            ),
            (
                "valid-allow-from-frontend",
                b(
                    "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: web\nspec:\n  podSelector:\n    matchLabels: {app: web}\n  ingress:\n  - from:\n    - podSelector:\n        matchExpressions:\n        - {key: role, operator: In, values: [frontend]}\n    - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}\n    ports:\n    - {protocol: TCP, port: 80, endPort: 90}\n    - {port: http}\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: prod\n  labels: {team: a}\n",
                ),
            ),
            (
                "valid-json-list",
                b(
                    r#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"e"},"spec":{"podSelector":{},"egress":[{"to":[{"namespaceSelector":{}}]}]}}]}"#,
                ),
            ),
            (
                "garbage-unknown-field",
                b(
                    "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: x}\nspec: {podSelector: {}, bogus: 1}\n",
                ),
            ),
            ("garbage-not-yaml", b("kind: [\n")),
            ("garbage-not-utf8", vec![0xff, 0xfe]),
        ]
    }

    fn cni_conf() -> Seeds {
        let b = |s: &str| s.as_bytes().to_vec();
        vec![
            (
                "valid-add-1.0.0",
                b(
                    r#"{"cniVersion":"1.0.0","name":"weft","type":"weft","socket":"/run/weft/weft.sock"}"#,
                ),
            ),
            (
                "valid-check-with-prev-result",
                b(
                    r#"{"cniVersion":"0.4.0","name":"weft","type":"weft","prevResult":{"cniVersion":"0.4.0","interfaces":[{"name":"eth0","mac":"aa:bb:cc:dd:ee:ff","sandbox":"/var/run/netns/x"}],"ips":[{"version":"4","address":"10.32.0.2/12","gateway":"10.32.0.1","interface":0}],"routes":[{"dst":"0.0.0.0/0","gw":"10.32.0.1"}]}}"#,
                ),
            ),
            (
                "valid-gc-1.1.0",
                b(
                    r#"{"cniVersion":"1.1.0","name":"weft","type":"weft","cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}]}"#,
                ),
            ),
            (
                "valid-ipam-of-bridge",
                b(
                    r#"{"cniVersion":"1.0.0","name":"br","type":"bridge","isGateway":true,"ipam":{"type":"weft","subnet":"10.44.0.0/16"}}"#,
                ),
            ),
            (
                "valid-delegated-host-local",
                b(
                    r#"{"cniVersion":"1.0.0","name":"weft","type":"weft","ipam":{"type":"host-local","ranges":[[{"subnet":"10.50.0.0/24"}]]}}"#,
                ),
            ),
            ("garbage-not-json", b("{\"cniVersion\": ")),
            ("garbage-array", b("[1,2,3]")),
            (
                "garbage-unknown-version",
                b(r#"{"cniVersion":"0.2.0","name":"weft","type":"weft"}"#),
            ),
            (
                "garbage-name-not-a-string",
                b(r#"{"cniVersion":"1.0.0","name":7,"type":"weft"}"#),
            ),
            (
                "garbage-ipam-field-weft-lacks",
                b(r#"{"cniVersion":"1.0.0","name":"weft","type":"weft","ipam":{"ranges":[]}}"#),
            ),
            ("garbage-not-utf8", vec![0xff, 0xfe, b'{', b'}']),
            ("garbage-empty", Vec::new()),
        ]
    }

    fn http() -> Seeds {
        let b = |s: &str| s.as_bytes().to_vec();
        let mut big = b("GET /status HTTP/1.1\r\nX: ");
        big.resize(8 * 1024 + 10, b'a');
        vec![
            (
                "valid-curl-get",
                b(
                    "GET /status/peers?x=1 HTTP/1.1\r\nHost: localhost\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n",
                ),
            ),
            (
                "valid-post-json",
                b(
                    "POST /connect HTTP/1.1\r\nHost: weft\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 24\r\n\r\n{\"peers\":[\"10.0.0.2\"]}\n\n",
                ),
            ),
            ("valid-http10-bare", b("DELETE /x HTTP/1.0\r\n\r\n")),
            (
                "valid-response",
                b(
                    "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 14\r\nConnection: close\r\n\r\n{\"error\":\"x\"}\n",
                ),
            ),
            (
                "valid-response-no-type",
                b("HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok"),
            ),
            (
                "garbage-lowercase-method",
                b("get /status HTTP/1.1\r\n\r\n"),
            ),
            (
                "garbage-absolute-target",
                b("GET http://x/status HTTP/1.1\r\n\r\n"),
            ),
            (
                "garbage-chunked",
                b("POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            ),
            (
                "garbage-content-length-twice",
                b("POST /a HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"),
            ),
            (
                "garbage-trailing-request",
                b("GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n"),
            ),
            (
                "garbage-truncated-body",
                b("POST /a HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc"),
            ),
            (
                "garbage-folded-header",
                b("GET /a HTTP/1.1\r\n folded: x\r\n\r\n"),
            ),
            ("garbage-status-2000", b("HTTP/1.1 2000 OK\r\n\r\n")),
            ("garbage-head-too-large", big),
        ]
    }

    fn query(name: &str, ty: RecordType, edns: Option<u16>) -> Vec<u8> {
        let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).expect("seed name"), ty));
        if let Some(size) = edns {
            let mut e = Edns::new();
            e.set_max_payload(size);
            m.set_edns(e);
        }
        m.to_vec().expect("seed query encodes")
    }

    fn dns_answer() -> Seeds {
        let web = query("web.weave.local.", RecordType::A, None);
        let mut response = web.clone();
        response[2] |= 0x80;
        let mut truncated = web.clone();
        truncated.truncate(web.len() - 2);
        let mut notify = web.clone();
        notify[2] = (notify[2] & 0x87) | (4 << 3);
        let mut two = Message::new(7, MessageType::Query, OpCode::Query);
        for n in ["web.weave.local.", "db.weave.local."] {
            two.add_query(Query::query(
                Name::from_ascii(n).expect("seed name"),
                RecordType::A,
            ));
        }
        vec![
            ("valid-a", web.clone()),
            (
                "valid-a-mixed-case",
                query("Web.Weave.LOCAL.", RecordType::A, None),
            ),
            ("valid-any", query("db.weave.local.", RecordType::ANY, None)),
            (
                "valid-aaaa-nodata",
                query("db.weave.local.", RecordType::AAAA, None),
            ),
            (
                "valid-nxdomain",
                query("nope.weave.local.", RecordType::A, None),
            ),
            (
                "valid-a-cut-classic",
                query("big.weave.local.", RecordType::A, None),
            ),
            (
                "valid-a-cut-edns",
                query("big.weave.local.", RecordType::A, Some(4096)),
            ),
            (
                "valid-ptr",
                query("1.0.32.10.in-addr.arpa.", RecordType::PTR, None),
            ),
            (
                "valid-ptr-forward",
                query("8.0.32.10.in-addr.arpa.", RecordType::PTR, None),
            ),
            (
                "valid-forward",
                query("example.test.", RecordType::A, Some(1232)),
            ),
            ("garbage-response", response),
            ("garbage-short", web[..11].to_vec()),
            ("garbage-truncated-question", truncated),
            ("garbage-notify", notify),
            (
                "garbage-two-questions",
                two.to_vec().expect("seed query encodes"),
            ),
        ]
    }

    /// One byte choosing the header length (bit 0: 12 bytes), a virtio_net_hdr, then an
    /// Ethernet + IPv4 + TCP (or UDP) frame with `payload` bytes (see `checks::vnet_hdr`).
    fn vnet_seed(mrg: bool, flags: u8, gso_type: u8, tcp: bool, payload: usize) -> Vec<u8> {
        let l4_hdr: u16 = if tcp { 20 } else { 8 };
        let ip_len = 20 + l4_hdr + payload as u16;
        let mut f = vec![0u8; 14 + usize::from(ip_len)];
        f[..12].copy_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&ip_len.to_be_bytes());
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
            f[38..40].copy_from_slice(&(8 + payload as u16).to_be_bytes());
        }
        for (i, b) in f[34 + usize::from(l4_hdr)..].iter_mut().enumerate() {
            *b = i as u8;
        }
        let hdr_len = 34 + l4_hdr;
        let csum_offset: u16 = if tcp { 16 } else { 6 };
        let mut seed = vec![u8::from(mrg), flags, gso_type];
        for v in [hdr_len, 1400, 34, csum_offset] {
            seed.extend_from_slice(&v.to_le_bytes());
        }
        if mrg {
            seed.extend_from_slice(&1u16.to_le_bytes());
        }
        seed.extend_from_slice(&f);
        seed
    }

    fn vnet_hdr() -> Seeds {
        // flags: 1 NEEDS_CSUM, 2 DATA_VALID; gso: 0 none, 1 TCPv4, 3 UFO, 5 USO, 0x80 ECN.
        vec![
            ("valid-tso-v4", vnet_seed(false, 1, 1, true, 3000)),
            ("valid-tso-v4-ecn-mrg", vnet_seed(true, 1, 0x81, true, 3000)),
            ("valid-uso-v4", vnet_seed(false, 1, 5, false, 2000)),
            ("valid-plain-data-valid", vnet_seed(false, 2, 0, true, 100)),
            (
                "valid-plain-csum-partial",
                vnet_seed(true, 1, 0, false, 100),
            ),
            ("garbage-legacy-ufo", vnet_seed(false, 1, 3, false, 2000)),
            ("garbage-unknown-gso", vnet_seed(false, 1, 7, true, 100)),
            (
                "garbage-short-header",
                vnet_seed(true, 1, 1, true, 0)[..12].to_vec(),
            ),
            ("garbage-empty", Vec::new()),
        ]
    }
}
