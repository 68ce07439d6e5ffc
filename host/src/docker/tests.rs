//! The plugin's calls against an in-memory router (IPAM, bridge addresses, veths) that
//! records what it was asked, and the socket against a raw client.

use super::fake::Fake;
use super::server::{self, Slot};
use super::state::{STATE_FILE, Store};
use super::*;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

struct Setup {
    dir: PathBuf,
    fake: Arc<Fake>,
    plugin: Plugin<Arc<Fake>>,
    ctx: Ctx,
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("weft-docker-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn range() -> V4Cidr {
    "10.32.0.0/12".parse().unwrap()
}

fn plugin_on(dir: &Path, fake: &Arc<Fake>) -> Plugin<Arc<Fake>> {
    let store = Store::load(&dir.join(STATE_FILE)).unwrap();
    Plugin::new(
        Arc::clone(fake),
        store,
        range(),
        range(),
        Arc::new(Mutex::new(PluginStatus::default())),
    )
}

impl Setup {
    fn new(tag: &str) -> Self {
        let dir = tmpdir(tag);
        let fake = Arc::new(Fake::default());
        let plugin = plugin_on(&dir, &fake);
        Self {
            dir,
            fake,
            plugin,
            ctx: Ctx {
                docker_netns: PathBuf::from("/proc/1/ns/net"),
            },
        }
    }

    /// The plugin again on the same state dir and router: a router restart.
    fn restart(&mut self) {
        self.plugin = plugin_on(&self.dir, &self.fake);
    }

    async fn call(&self, method: &str, body: Value) -> Result<Value, PluginError> {
        let bytes = serde_json::to_vec(&body).unwrap();
        self.raw(method, &bytes).await
    }

    async fn raw(&self, method: &str, body: &[u8]) -> Result<Value, PluginError> {
        let reply = self.plugin.call(method, body, &self.ctx).await?;
        // What Docker is told is on disk first.
        let on_disk = Store::load(&self.dir.join(STATE_FILE)).unwrap();
        assert_eq!(
            on_disk.get(),
            self.plugin.store.lock().await.get(),
            "{method}: answered before the state was written"
        );
        Ok(serde_json::from_slice(&reply).unwrap())
    }

    async fn ok(&self, method: &str, body: Value) -> Value {
        match self.call(method, body.clone()).await {
            Ok(v) => v,
            Err(e) => panic!("{method} {body}: {e}"),
        }
    }

    fn state(&self) -> PluginState {
        Store::load(&self.dir.join(STATE_FILE))
            .unwrap()
            .get()
            .clone()
    }

    /// A network as `docker network create` makes it: pool, gateway, network.
    async fn network(&self, net: &str, pool: &str, internal: bool) -> (String, String) {
        let p = self
            .ok("IpamDriver.RequestPool", json!({"AddressSpace": "weft-local", "Pool": pool, "SubPool": "", "Options": null, "V6": false}))
            .await;
        let pool_id = p["PoolID"].as_str().unwrap().to_owned();
        let gw = self
            .ok(
                "IpamDriver.RequestAddress",
                json!({"PoolID": pool_id, "Address": "", "Options": {OPT_GW_KEY: OPT_GW_VALUE}}),
            )
            .await;
        let gateway = gw["Address"].as_str().unwrap().to_owned();
        let mut options = json!({"com.docker.network.generic": {}});
        if internal {
            options["com.docker.network.internal"] = json!(true);
        }
        self.ok(
            "NetworkDriver.CreateNetwork",
            json!({"NetworkID": net, "Options": options, "IPv4Data": [{"AddressSpace": "weft-local", "Pool": p["Pool"], "Gateway": gateway, "AuxAddresses": null}], "IPv6Data": []}),
        )
        .await;
        (pool_id, gateway)
    }

    /// An endpoint as `docker run --network` makes it: address, endpoint, join.
    async fn endpoint(&self, net: &str, pool_id: &str, ep: &str) -> (String, Value) {
        let a = self
            .ok(
                "IpamDriver.RequestAddress",
                json!({"PoolID": pool_id, "Address": "", "Options": null}),
            )
            .await;
        let addr = a["Address"].as_str().unwrap().to_owned();
        let r = self
            .ok(
                "NetworkDriver.CreateEndpoint",
                json!({"NetworkID": net, "EndpointID": ep, "Interface": {"Address": addr, "AddressIPv6": "", "MacAddress": ""}, "Options": {}}),
            )
            .await;
        assert_eq!(r, json!({}), "Docker gave the interface: nothing back");
        let j = self
            .ok(
                "NetworkDriver.Join",
                json!({"NetworkID": net, "EndpointID": ep, "SandboxKey": "/var/run/docker/netns/x", "Options": {}}),
            )
            .await;
        (addr, j)
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const OPT_GW_KEY: &str = types::OPT_ADDRESS_TYPE;
const OPT_GW_VALUE: &str = types::ADDRESS_TYPE_GATEWAY;
const NET: &str = "4f1d2b3c";
const EP: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[test]
fn constant_replies_say_what_the_plugin_is() {
    let v = |m: &str| -> Value { serde_json::from_slice(&static_reply(m).unwrap()).unwrap() };
    assert_eq!(
        v("Plugin.Activate"),
        json!({"Implements": ["NetworkDriver", "IpamDriver"]})
    );
    assert_eq!(
        v("NetworkDriver.GetCapabilities"),
        json!({"Scope": "local", "ConnectivityScope": "local"})
    );
    assert_eq!(
        v("IpamDriver.GetCapabilities"),
        json!({"RequiresMACAddress": false, "RequiresRequestReplay": false})
    );
    assert_eq!(
        v("IpamDriver.GetDefaultAddressSpaces"),
        json!({"LocalDefaultAddressSpace": "weft-local", "GlobalDefaultAddressSpace": "weft-global"})
    );
    assert!(static_reply("NetworkDriver.Join").is_none());
}

#[test]
fn names_fit_the_kernel_and_ipam() {
    let (h, s) = ifnames(EP);
    assert!(h.len() <= 15 && s.len() <= 15, "{h} {s}");
    assert_ne!(h, s);
    assert_ne!(ifnames("other").0, h);
    // Odd ids still give valid names.
    let (h, _) = ifnames("a/b c:d");
    assert!(h.bytes().all(|b| b.is_ascii_alphanumeric()));
    assert!(endpoint_owner(EP).len() <= weft_core::ipam::CONTAINER_ID_LEN_MAX);
    assert!(endpoint_owner(EP).starts_with(OWNER_PREFIX));
    assert_eq!(
        driver_name(Path::new("/run/docker/plugins/weft.sock")).unwrap(),
        "weft"
    );
    assert_eq!(
        driver_name(Path::new("/run/docker/plugins/wefttest-42.sock")).unwrap(),
        "wefttest-42"
    );
    for bad in ["/run/docker/plugins/weft", "/x/.sock", "/x/a b.sock", "/"] {
        let e = driver_name(Path::new(bad)).unwrap_err();
        assert!(e.contains("--plugin-socket") && !e.contains('\n'), "{e}");
    }
    assert_eq!(netns_of(Some(42)), PathBuf::from("/proc/42/ns/net"));
    assert_eq!(netns_of(None), PathBuf::from("/proc/1/ns/net"));
}

#[tokio::test]
async fn networks_without_subnet_get_blocks_of_their_own() {
    let s = Setup::new("carve");
    // Another host (or a container) holds the top block's first address: skipped.
    s.fake
        .ipam
        .lock()
        .unwrap()
        .insert("10.47.255.1".parse().unwrap(), "peer-b".into());
    // The default subnet (here the whole range, as the router's own network has it)
    // does not keep blocks from being carved inside it.
    s.network("w", "10.32.0.0/12", false).await;
    let (p1, g1) = s.network("n1", "", false).await;
    let (p2, g2) = s.network("n2", "", false).await;
    assert_eq!(
        (p1.as_str(), g1.as_str()),
        ("weft-auto-10.47.254.0/24", "10.47.254.1/24")
    );
    assert_eq!(
        (p2.as_str(), g2.as_str()),
        ("weft-auto-10.47.253.0/24", "10.47.253.1/24")
    );
    // The gateway was claimed with the block; asking again gives the same one.
    let owner = s.fake.owner("10.47.254.1").unwrap();
    assert!(owner.starts_with("dk-g-"), "{owner}");
    let again = s
        .ok(
            "IpamDriver.RequestAddress",
            json!({"PoolID": p1, "Address": "", "Options": {OPT_GW_KEY: OPT_GW_VALUE}}),
        )
        .await;
    assert_eq!(again["Address"], "10.47.254.1/24");
    assert_eq!(s.fake.owner("10.47.254.1"), Some(owner));
    // Containers get the next addresses of their own network's block.
    let (a1, _) = s.endpoint("n1", &p1, "e1").await;
    let (a2, _) = s.endpoint("n2", &p2, "e2").await;
    assert_eq!(
        (a1.as_str(), a2.as_str()),
        ("10.47.254.2/24", "10.47.253.2/24")
    );
    // Kept apart: the firewall knows both subnets.
    let subnets = s.fake.outbound_subnets();
    assert!(
        subnets.contains(&"10.47.254.0/24".into()) && subnets.contains(&"10.47.253.0/24".into()),
        "{subnets:?}"
    );
    // A --subnet over a carved block is refused with the reason; one elsewhere is fine.
    let e = s
        .call("IpamDriver.RequestPool", json!({"Pool": "10.47.254.0/23"}))
        .await
        .unwrap_err();
    assert!(
        e.line().contains("carved") && e.status() == 400,
        "{}",
        e.line()
    );
    s.network("w2", "10.32.0.0/12", false).await;
    // Survives a restart; deleting the network frees its block for the next one.
    let mut s = s;
    s.restart();
    s.ok(
        "NetworkDriver.Leave",
        json!({"NetworkID": "n1", "EndpointID": "e1"}),
    )
    .await;
    s.ok(
        "NetworkDriver.DeleteEndpoint",
        json!({"NetworkID": "n1", "EndpointID": "e1"}),
    )
    .await;
    s.ok(
        "IpamDriver.ReleaseAddress",
        json!({"PoolID": p1, "Address": "10.47.254.2"}),
    )
    .await;
    s.ok("NetworkDriver.DeleteNetwork", json!({"NetworkID": "n1"}))
        .await;
    s.ok(
        "IpamDriver.ReleaseAddress",
        json!({"PoolID": p1, "Address": "10.47.254.1"}),
    )
    .await;
    s.ok("IpamDriver.ReleasePool", json!({"PoolID": p1})).await;
    assert_eq!(s.fake.owner("10.47.254.1"), None);
    let (p3, _) = s.network("n3", "", false).await;
    assert_eq!(p3, "weft-auto-10.47.254.0/24");
}

#[test]
fn carving_prefers_blocks_outside_the_default_subnet() {
    let c = |r: &str, d: &str, taken: &[&str]| -> Vec<String> {
        let taken: Vec<V4Cidr> = taken.iter().map(|t| t.parse().unwrap()).collect();
        ipam::carve_candidates(r.parse().unwrap(), d.parse().unwrap(), &taken)
            .iter()
            .map(|b| b.to_string())
            .collect()
    };
    let all = c(
        "10.32.0.0/12",
        "10.32.0.0/12",
        &["10.47.255.0/24", "10.47.192.0/18"],
    );
    assert_eq!(all.len(), 64);
    assert_eq!(all[0], "10.47.191.0/24", "the /18 at the top is taken");
    assert_eq!(
        (all[1].as_str(), all[63].as_str()),
        ("10.47.190.0/24", "10.47.128.0/24")
    );
    // Default subnet at the top of the range: the blocks below it come first.
    let below = c("10.40.0.0/22", "10.40.2.0/23", &[]);
    assert_eq!(
        below,
        [
            "10.40.1.0/24",
            "10.40.0.0/24",
            "10.40.3.0/24",
            "10.40.2.0/24"
        ]
    );
    // A range of a /24 or smaller is one block.
    assert_eq!(c("10.40.0.0/26", "10.40.0.0/26", &[]), ["10.40.0.0/26"]);
    assert!(c("10.40.0.0/24", "10.40.0.0/24", &["10.40.0.0/25"]).is_empty());
}

#[tokio::test]
async fn a_container_on_a_network_from_start_to_end() {
    let s = Setup::new("life");
    let (pool_id, gateway) = s.network(NET, "10.32.0.0/12", false).await;
    // --subnet of the whole range: its first address is the host's, the gateway.
    assert_eq!(pool_id, "weft-10.32.0.0/12");
    assert_eq!(gateway, "10.32.0.1/12");
    assert!(s.fake.exposed.lock().unwrap().contains("10.32.0.1/12"));
    assert_eq!(
        *s.fake.outbound.lock().unwrap(),
        vec![crate::firewall::DockerNet {
            subnet: range(),
            outbound: true
        }]
    );
    assert!(s.fake.owner("10.32.0.1").unwrap().starts_with("dk-g-"));

    let (addr, join) = s.endpoint(NET, &pool_id, EP).await;
    assert_eq!(addr, "10.32.0.2/12");
    let (host, src) = ifnames(EP);
    assert_eq!(
        join,
        json!({"InterfaceName": {"SrcName": src, "DstPrefix": "ethwe"}, "Gateway": "10.32.0.1", "DisableGatewayService": false})
    );
    // The endpoint owns its address in IPAM; the veth waits in Docker's namespace.
    assert_eq!(s.fake.owner("10.32.0.2"), Some(endpoint_owner(EP)));
    assert_eq!(
        s.fake.veths.lock().unwrap().get(&host),
        Some(&(src.clone(), PathBuf::from("/proc/1/ns/net")))
    );
    let st = s.state();
    assert!(st.endpoints[EP].joined);
    assert_eq!(
        st.addresses[&"10.32.0.2".parse().unwrap()]
            .endpoint
            .as_deref(),
        Some(EP)
    );
    let info = s
        .ok(
            "NetworkDriver.EndpointOperInfo",
            json!({"NetworkID": NET, "EndpointID": EP}),
        )
        .await;
    assert_eq!(info["Value"]["address"], "10.32.0.2/12");
    let ep = json!({"NetworkID": NET, "EndpointID": EP});
    assert_eq!(
        s.ok(
            "NetworkDriver.ProgramExternalConnectivity",
            json!({"NetworkID": NET, "EndpointID": EP, "Options": {}})
        )
        .await,
        json!({})
    );

    // docker stop / rm: revoke, leave, delete, release, in Docker's order.
    s.ok("NetworkDriver.RevokeExternalConnectivity", ep.clone())
        .await;
    s.ok("NetworkDriver.Leave", ep.clone()).await;
    assert!(s.fake.veths.lock().unwrap().is_empty());
    assert!(!s.state().endpoints[EP].joined);
    s.ok("NetworkDriver.DeleteEndpoint", ep.clone()).await;
    assert!(s.state().endpoints.is_empty());
    s.ok(
        "IpamDriver.ReleaseAddress",
        json!({"PoolID": pool_id, "Address": "10.32.0.2"}),
    )
    .await;
    assert_eq!(s.fake.owner("10.32.0.2"), None);

    // docker network rm.
    s.ok("NetworkDriver.DeleteNetwork", json!({"NetworkID": NET}))
        .await;
    assert!(s.fake.exposed.lock().unwrap().is_empty());
    assert!(s.fake.outbound.lock().unwrap().is_empty());
    s.ok(
        "IpamDriver.ReleaseAddress",
        json!({"PoolID": pool_id, "Address": "10.32.0.1"}),
    )
    .await;
    s.ok("IpamDriver.ReleasePool", json!({"PoolID": pool_id}))
        .await;
    assert!(s.fake.ipam.lock().unwrap().is_empty());
    let st = s.state();
    assert!(st.pools.is_empty() && st.addresses.is_empty() && st.networks.is_empty());
}

#[tokio::test]
async fn every_call_repeated_gives_the_same_answer_and_changes_nothing() {
    let s = Setup::new("again");
    let (pool_id, _) = s.network(NET, "10.40.0.0/16", false).await;
    let (addr, join) = s.endpoint(NET, &pool_id, EP).await;
    let before = s.state();
    let net = json!({"NetworkID": NET, "Options": {}, "IPv4Data": [{"Pool": "10.40.0.0/16", "Gateway": "10.40.0.1/16"}]});
    s.ok("NetworkDriver.CreateNetwork", net).await;
    let again = s
        .ok(
            "NetworkDriver.CreateEndpoint",
            json!({"NetworkID": NET, "EndpointID": EP, "Interface": {"Address": addr}}),
        )
        .await;
    assert_eq!(again, json!({}));
    let j = s
        .ok(
            "NetworkDriver.Join",
            json!({"NetworkID": NET, "EndpointID": EP, "SandboxKey": "/x"}),
        )
        .await;
    assert_eq!(j, join);
    assert_eq!(s.state(), before);
    assert_eq!(
        s.fake.ipam.lock().unwrap().len(),
        2,
        "no address taken twice"
    );

    let ep = json!({"NetworkID": NET, "EndpointID": EP});
    for m in [
        "NetworkDriver.Leave",
        "NetworkDriver.Leave",
        "NetworkDriver.DeleteEndpoint",
        "NetworkDriver.DeleteEndpoint",
        "NetworkDriver.Leave",
    ] {
        assert_eq!(s.ok(m, ep.clone()).await, json!({}), "{m}");
    }
    let rel = json!({"PoolID": pool_id, "Address": "10.40.0.2"});
    s.ok("IpamDriver.ReleaseAddress", rel.clone()).await;
    s.ok("IpamDriver.ReleaseAddress", rel).await;
    s.ok("NetworkDriver.DeleteNetwork", json!({"NetworkID": NET}))
        .await;
    s.ok("NetworkDriver.DeleteNetwork", json!({"NetworkID": NET}))
        .await;
    s.ok("IpamDriver.ReleasePool", json!({"PoolID": pool_id}))
        .await;
    s.ok("IpamDriver.ReleasePool", json!({"PoolID": pool_id}))
        .await;
    // The pool's gateway Docker never released goes with the pool.
    assert!(s.fake.ipam.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_asked_for_address_is_claimed_once() {
    let s = Setup::new("ip");
    let (pool_id, _) = s.network(NET, "10.40.0.0/16", false).await;
    let want = json!({"PoolID": pool_id, "Address": "10.40.7.7", "Options": {}});
    let a = s.ok("IpamDriver.RequestAddress", want.clone()).await;
    assert_eq!(a["Address"], "10.40.7.7/16");
    // Repeated before any endpoint has it: the same answer.
    assert_eq!(s.ok("IpamDriver.RequestAddress", want.clone()).await, a);
    s.ok(
        "NetworkDriver.CreateEndpoint",
        json!({"NetworkID": NET, "EndpointID": EP, "Interface": {"Address": "10.40.7.7/16"}}),
    )
    .await;
    assert_eq!(s.fake.owner("10.40.7.7"), Some(endpoint_owner(EP)));
    // A second container with the same --ip is refused.
    let e = s.call("IpamDriver.RequestAddress", want).await.unwrap_err();
    assert!(e.line().contains("10.40.7.7") && e.status() == 500, "{e}");
    let e = s
        .call(
            "IpamDriver.RequestAddress",
            json!({"PoolID": pool_id, "Address": "10.41.0.5"}),
        )
        .await
        .unwrap_err();
    assert!(
        e.line().starts_with("Address: ") && e.status() == 400,
        "{e}"
    );
}

#[tokio::test]
async fn sub_pools_and_internal_networks() {
    let s = Setup::new("sub");
    let p = s
        .ok(
            "IpamDriver.RequestPool",
            json!({"Pool": "10.40.0.0/16", "SubPool": "10.40.9.0/24"}),
        )
        .await;
    assert_eq!(p["Pool"], "10.40.0.0/16");
    let pool_id = p["PoolID"].as_str().unwrap();
    let a = s
        .ok(
            "IpamDriver.RequestAddress",
            json!({"PoolID": pool_id, "Address": ""}),
        )
        .await;
    assert_eq!(
        a["Address"], "10.40.9.1/16",
        "from the sub-pool, with the pool's prefix"
    );

    let (pool_id, gateway) = s.network("int", "10.41.0.0/16", true).await;
    assert!(
        s.fake.exposed.lock().unwrap().is_empty(),
        "internal: no host address"
    );
    let out = s.fake.outbound.lock().unwrap().clone();
    assert_eq!(out.len(), 1);
    assert!(!out[0].outbound, "internal: no way out");
    assert_eq!(out[0].subnet.to_string(), "10.41.0.0/16");
    let (_, join) = s.endpoint("int", &pool_id, EP).await;
    assert!(join.get("Gateway").is_none(), "{join}");
    assert_eq!(join["DisableGatewayService"], true);
    assert!(s.state().networks["int"].gateway.is_none());
    // Docker still holds the gateway address it asked for, until it releases it.
    assert!(s.fake.owner(gateway.split('/').next().unwrap()).is_some());
}

#[tokio::test]
async fn bad_requests_get_one_line_naming_the_field() {
    let s = Setup::new("bad");
    let (pool_id, _) = s.network(NET, "10.32.0.0/12", false).await;
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "NetworkDriver.Join",
            json!({"NetworkID": NET}),
            "EndpointID",
        ),
        (
            "NetworkDriver.Join",
            json!({"NetworkID": 5, "EndpointID": EP}),
            "invalid type",
        ),
        (
            "NetworkDriver.CreateEndpoint",
            json!({"NetworkID": NET, "EndpointID": "", "Interface": {}}),
            "EndpointID",
        ),
        (
            "NetworkDriver.CreateEndpoint",
            json!({"NetworkID": NET, "EndpointID": EP, "Interface": {"Address": "10.32.0.300/12"}}),
            "Interface.Address",
        ),
        (
            "NetworkDriver.CreateEndpoint",
            json!({"NetworkID": NET, "EndpointID": EP, "Interface": {}}),
            "Interface.Address",
        ),
        (
            "NetworkDriver.CreateNetwork",
            json!({"NetworkID": "n2", "IPv4Data": []}),
            "IPv4Data",
        ),
        (
            "NetworkDriver.CreateNetwork",
            json!({"NetworkID": "n2", "IPv4Data": [{"Pool": "10.32.0.1/12"}]}),
            "IPv4Data.Pool",
        ),
        (
            "NetworkDriver.CreateNetwork",
            json!({"NetworkID": "n2", "IPv4Data": [{"Pool": "10.40.0.0/16", "Gateway": "x"}]}),
            "IPv4Data.Gateway",
        ),
        (
            "NetworkDriver.CreateNetwork",
            json!({"NetworkID": "n2", "IPv4Data": [{"Pool": "10.40.0.0/16"}], "IPv6Data": [{"Pool": "fd00::/64"}]}),
            "IPv6Data",
        ),
        (
            "NetworkDriver.CreateNetwork",
            json!({"NetworkID": "n2", "Options": {"com.docker.network.internal": "yes"}, "IPv4Data": [{"Pool": "10.40.0.0/16"}]}),
            "com.docker.network.internal",
        ),
        (
            "IpamDriver.RequestPool",
            json!({"Pool": "192.168.0.0/24"}),
            "Pool: 192.168.0.0/24 is not inside weft's allocation range 10.32.0.0/12",
        ),
        (
            "IpamDriver.RequestPool",
            json!({"Pool": "10.40.0.0/16", "SubPool": "10.41.0.0/24"}),
            "SubPool",
        ),
        (
            "IpamDriver.RequestPool",
            json!({"Pool": "", "SubPool": "10.41.0.0/24"}),
            "SubPool",
        ),
        ("IpamDriver.RequestPool", json!({"V6": true}), "V6"),
        (
            "IpamDriver.RequestAddress",
            json!({"PoolID": pool_id, "Address": "10.32.0.x"}),
            "Address",
        ),
        (
            "IpamDriver.ReleaseAddress",
            json!({"PoolID": pool_id}),
            "Address",
        ),
    ];
    let before = s.state();
    for (method, body, needle) in cases {
        let e = s.call(method, body.clone()).await.unwrap_err();
        let line = e.line();
        assert_eq!(e.status(), 400, "{method} {body}: {line}");
        assert!(
            line.contains(needle),
            "{method} {body}: {line:?} lacks {needle:?}"
        );
        assert!(!line.contains('\n'));
    }
    for raw in [&b"{"[..], b"", b"null", b"[1,2]", b"\xff\xfe"] {
        let e = s.raw("NetworkDriver.Leave", raw).await.unwrap_err();
        assert_eq!(e.status(), 400, "{raw:?}: {e}");
        assert!(
            e.line().starts_with("bad NetworkDriver.Leave request: "),
            "{e}"
        );
    }
    assert_eq!(s.state(), before, "nothing half-made");
}

#[tokio::test]
async fn unknown_ids_get_404_and_known_calls_still_work() {
    let s = Setup::new("unknown");
    let ep = json!({"NetworkID": NET, "EndpointID": EP});
    for m in [
        "NetworkDriver.Join",
        "NetworkDriver.Leave",
        "NetworkDriver.DeleteEndpoint",
        "NetworkDriver.EndpointOperInfo",
        "NetworkDriver.RevokeExternalConnectivity",
    ] {
        let e = s.call(m, ep.clone()).await.unwrap_err();
        assert_eq!(e.status(), 404, "{m}: {e}");
        assert!(e.line().contains("EndpointID"), "{e}");
    }
    let e = s
        .call(
            "NetworkDriver.CreateEndpoint",
            json!({"NetworkID": NET, "EndpointID": EP, "Interface": {"Address": "10.32.0.9/12"}}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.status(), 404);
    assert!(e.line().contains("NetworkID"), "{e}");
    let e = s
        .call(
            "IpamDriver.RequestAddress",
            json!({"PoolID": "weft-10.99.0.0/16"}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.status(), 404);
    let e = s
        .call("NetworkDriver.AllocateNetwork", json!({}))
        .await
        .unwrap_err();
    assert_eq!(e.status(), 404);
    // Unknown networks and addresses to remove: already gone, fine.
    s.ok("NetworkDriver.DeleteNetwork", json!({"NetworkID": "gone"}))
        .await;
    s.ok(
        "IpamDriver.ReleaseAddress",
        json!({"PoolID": "p", "Address": "10.32.0.9"}),
    )
    .await;
    s.ok(
        "NetworkDriver.DiscoverNew",
        json!({"DiscoveryType": 1, "DiscoveryData": {"Address": "10.0.0.1", "self": true}}),
    )
    .await;
}

#[tokio::test]
async fn a_restarted_plugin_knows_everything_and_gives_nothing_twice() {
    let mut s = Setup::new("restart");
    let (pool_id, gateway) = s.network(NET, "10.32.0.0/12", false).await;
    let (addr, join) = s.endpoint(NET, &pool_id, EP).await;
    s.restart();
    // Docker replays nothing: the next container gets the next address.
    let ep2 = "ffff".repeat(16);
    let (addr2, _) = s.endpoint(NET, &pool_id, &ep2).await;
    assert_ne!(addr2, addr);
    assert_ne!(addr2, gateway);
    // The first container's endpoint is known: Leave and Join again work.
    let ep = json!({"NetworkID": NET, "EndpointID": EP});
    s.ok("NetworkDriver.Leave", ep.clone()).await;
    let again = s
        .ok(
            "NetworkDriver.Join",
            json!({"NetworkID": NET, "EndpointID": EP, "SandboxKey": "/y"}),
        )
        .await;
    assert_eq!(again, join);
    assert_eq!(s.plugin.status.lock().unwrap().endpoints, 2);
    assert_eq!(s.plugin.status.lock().unwrap().networks, 1);
}

#[tokio::test]
async fn a_failure_half_way_leaves_nothing_behind() {
    let s = Setup::new("fail");
    let (pool_id, _) = s.network(NET, "10.32.0.0/12", false).await;
    let a = s
        .ok(
            "IpamDriver.RequestAddress",
            json!({"PoolID": pool_id, "Address": ""}),
        )
        .await;
    let addr = a["Address"].as_str().unwrap();
    s.ok(
        "NetworkDriver.CreateEndpoint",
        json!({"NetworkID": NET, "EndpointID": EP, "Interface": {"Address": addr}}),
    )
    .await;
    *s.fake.fail.lock().unwrap() = Some("veth_add");
    let join = json!({"NetworkID": NET, "EndpointID": EP, "SandboxKey": "/x"});
    let e = s
        .call("NetworkDriver.Join", join.clone())
        .await
        .unwrap_err();
    assert_eq!(e.status(), 500);
    assert!(!s.state().endpoints[EP].joined);
    s.ok("NetworkDriver.Join", join).await;

    *s.fake.fail.lock().unwrap() = Some("ipam_transfer");
    let e = s
        .call(
            "NetworkDriver.CreateEndpoint",
            json!({"NetworkID": NET, "EndpointID": "e2", "Interface": {"Address": "10.32.0.9/12"}}),
        )
        .await;
    // 10.32.0.9 was never handed out: the endpoint gets it unmanaged (as a foreign IPAM's).
    assert!(e.is_ok());
    let a = s
        .ok(
            "IpamDriver.RequestAddress",
            json!({"PoolID": pool_id, "Address": ""}),
        )
        .await;
    let e = s
        .call(
            "NetworkDriver.CreateEndpoint",
            json!({"NetworkID": NET, "EndpointID": "e3", "Interface": {"Address": a["Address"]}}),
        )
        .await
        .unwrap_err();
    assert!(e.line().contains("injected"), "{e}");
    assert!(!s.state().endpoints.contains_key("e3"));

    // The state cannot be written: Docker is refused and the address goes back.
    let held = s.fake.ipam.lock().unwrap().len();
    let blocker = s.dir.join(STATE_FILE);
    let saved = std::fs::read(&blocker).unwrap();
    std::fs::remove_file(&blocker).unwrap();
    std::fs::create_dir(&blocker).unwrap(); // rename over a directory fails
    let e = s
        .plugin
        .call(
            "IpamDriver.RequestAddress",
            &serde_json::to_vec(&json!({"PoolID": pool_id, "Address": ""})).unwrap(),
            &s.ctx,
        )
        .await
        .unwrap_err();
    assert_eq!(e.status(), 500, "{e}");
    assert_eq!(
        s.fake.ipam.lock().unwrap().len(),
        held,
        "the address went back"
    );
    std::fs::remove_dir(&blocker).unwrap();
    std::fs::write(&blocker, saved).unwrap();
}

#[test]
fn reconcile_forgets_addresses_ipam_no_longer_holds() {
    let mut st = PluginState::default();
    for (a, o) in [
        ("10.32.0.1", "dk-g-1"),
        ("10.32.0.2", "dk-e-x"),
        ("10.32.0.3", "dk-r-2"),
    ] {
        st.addresses.insert(
            a.parse().unwrap(),
            state::Address {
                pool_id: "p".into(),
                prefix_len: 12,
                owner: o.into(),
                gateway: false,
                endpoint: None,
            },
        );
    }
    let held: Vec<(Ipv4Addr, String)> = vec![
        ("10.32.0.1".parse().unwrap(), "dk-g-1".into()),
        // Handed to the endpoint in IPAM, but the plugin crashed before writing it.
        ("10.32.0.3".parse().unwrap(), "dk-e-y".into()),
    ];
    let live = reconcile(&mut st, &held);
    assert_eq!(live, vec!["dk-g-1".to_owned()]);
    assert_eq!(st.addresses.len(), 1);
}

// ---------------------------------------------------------------------------------------
// The socket

async fn post(path: &Path, method: &str, body: &[u8]) -> crate::http::Response {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::UnixStream::connect(path).await.unwrap();
    let mut req = format!(
        "POST /{method} HTTP/1.1\r\nHost: plugin\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    // A body over the limit may be refused before it is all written.
    let _ = s.write_all(&req).await;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    crate::http::parse_response(&buf, true).unwrap().unwrap()
}

fn err_of(r: &crate::http::Response) -> String {
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    let e = v["Err"].as_str().unwrap().to_owned();
    assert!(!e.contains('\n'));
    e
}

#[tokio::test]
async fn the_socket_answers_while_starting_then_serves() {
    let dir = tmpdir("sock");
    let path = dir.join("plugins").join("wefttest.sock");
    let (listener, file) = server::bind(&path).unwrap();
    let slot: Arc<Slot<Arc<Fake>>> = Arc::new(std::sync::OnceLock::new());
    let uid = crate::control::effective_uid().unwrap();
    tokio::spawn(server::serve(
        listener,
        Arc::clone(&slot),
        uid,
        tokio::runtime::Handle::current(),
    ));

    let r = post(&path, "Plugin.Activate", b"null").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type.as_deref(), Some(CONTENT_TYPE));
    let started = std::time::Instant::now();
    let r = post(
        &path,
        "NetworkDriver.Join",
        br#"{"NetworkID":"n","EndpointID":"e"}"#,
    )
    .await;
    assert_eq!(r.status, 503);
    assert!(err_of(&r).contains("starting"));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "quick"
    );

    let fake = Arc::new(Fake::default());
    let _ = slot.set(Arc::new(plugin_on(&dir, &fake)));
    let r = post(
        &path,
        "IpamDriver.RequestPool",
        br#"{"AddressSpace":"weft-local","Pool":""}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = post(
        &path,
        "NetworkDriver.Leave",
        br#"{"NetworkID":"n","EndpointID":"e"}"#,
    )
    .await;
    assert_eq!(r.status, 404);
    assert!(err_of(&r).contains("no such endpoint"));
    let r = post(&path, "NetworkDriver.Leave", b"{\"NetworkID\":").await;
    assert_eq!(r.status, 400);
    let big = vec![b' '; BODY_LEN_MAX + 1];
    let r = post(&path, "NetworkDriver.Leave", &big).await;
    assert_eq!(r.status, 413);
    assert!(err_of(&r).contains("larger than"));
    let r = post(&path, "NoSuch.Method", b"{}").await;
    assert_eq!(r.status, 404);

    // A second router finds the socket served and leaves it alone.
    let e = server::bind(&path).unwrap_err();
    assert!(
        e.contains("another process serves") && e.contains("without the Docker plugin"),
        "{e}"
    );
    assert!(path.exists());
    drop(file);
    assert!(!path.exists(), "removed at stop");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_stale_socket_is_replaced_and_a_file_is_left_alone() {
    let dir = tmpdir("stale");
    let path = dir.join("weft.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let (_l, file) = server::bind(&path).unwrap();
    drop(file);
    std::fs::write(&path, b"keep").unwrap();
    let e = server::bind(&path).unwrap_err();
    assert!(e.contains("--plugin-socket"), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), b"keep");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn names_come_and_go_with_the_join_and_come_back_after_a_restart() {
    let mut s = Setup::new("names");
    let (pool_id, _) = s.network(NET, "10.32.0.0/12", false).await;
    let (addr, _) = s.endpoint(NET, &pool_id, EP).await;
    let ip: Ipv4Addr = addr.split('/').next().unwrap().parse().unwrap();
    let names = |f: &Fake| -> Vec<String> {
        f.dns
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, a)| **a == ip)
            .map(|((_, n), _)| n.clone())
            .collect()
    };
    s.plugin
        .name_endpoint(EP, vec!["web".into(), "bad name".into(), "h1".into()])
        .await
        .unwrap();
    assert_eq!(names(&s.fake), vec!["h1".to_owned(), "web".to_owned()]);
    assert_eq!(
        s.state().endpoints[EP].dns_names,
        vec!["web", "h1"],
        "what weftDNS took"
    );
    // Records of the last run are gone with it: the restarted plugin registers them again.
    s.fake.dns.lock().unwrap().clear();
    s.restart();
    s.plugin.restore_names().await;
    assert_eq!(names(&s.fake), vec!["h1".to_owned(), "web".to_owned()]);
    // New names replace the old ones; an unknown endpoint is nothing to name.
    s.plugin
        .name_endpoint(EP, vec!["api".into()])
        .await
        .unwrap();
    assert_eq!(names(&s.fake), vec!["api".to_owned()]);
    s.plugin
        .name_endpoint("gone", vec!["x".into()])
        .await
        .unwrap();
    let ep = json!({"NetworkID": NET, "EndpointID": EP});
    s.ok("NetworkDriver.Leave", ep.clone()).await;
    assert!(names(&s.fake).is_empty());
    assert!(s.state().endpoints[EP].dns_names.is_empty());
    // Not joined: no names.
    s.plugin
        .name_endpoint(EP, vec!["late".into()])
        .await
        .unwrap();
    assert!(names(&s.fake).is_empty());
}

#[tokio::test]
async fn endpoints_docker_deleted_while_down_are_forgotten_unless_docker_is_silent() {
    let mut s = Setup::new("gone");
    let (pool_id, gateway) = s.network(NET, "10.32.0.0/12", false).await;
    let (addr, _) = s.endpoint(NET, &pool_id, EP).await;
    let ep2 = "ffff".repeat(16);
    let (addr2, _) = s.endpoint(NET, &pool_id, &ep2).await;
    let ip = |a: &str| a.split('/').next().unwrap().to_owned();
    let (ip1, ip2) = (ip(&addr), ip(&addr2));
    s.restart();
    let known = s.plugin.endpoints_by_network().await;
    assert_eq!(
        known,
        BTreeMap::from([(NET.to_owned(), vec![EP.to_owned(), ep2.clone()])])
    );
    // Docker does not answer: everything kept.
    let nobody = Path::new("/nonexistent/docker.sock");
    assert_eq!(
        s.plugin
            .forget_what_docker_deleted(nobody, known.clone())
            .await,
        gone::Forgotten::default()
    );
    assert_eq!(s.state().endpoints.len(), 2);
    assert_eq!(s.fake.owner(&ip1), Some(endpoint_owner(EP)));

    // Docker has only the second: the first goes, its veth, names and address with it.
    let live = gone::Live {
        endpoints: BTreeSet::from([ep2.clone()]),
        networks_gone: BTreeSet::new(),
    };
    let forgotten = s.plugin.forget_gone(known, Ok(live)).await;
    assert_eq!(forgotten.endpoints, 1);
    let st = s.state();
    assert!(!st.endpoints.contains_key(EP) && st.endpoints.contains_key(&ep2));
    assert!(!st.addresses.contains_key(&ip1.parse::<Ipv4Addr>().unwrap()));
    assert_eq!(s.fake.owner(&ip1), None, "freed in IPAM");
    assert_eq!(s.fake.owner(&ip2), Some(endpoint_owner(&ep2)));
    assert!(s.fake.owner(&ip(&gateway)).is_some(), "the gateway stays");
    let veths = s.fake.veths.lock().unwrap().clone();
    assert!(!veths.contains_key(&ifnames(EP).0) && veths.contains_key(&ifnames(&ep2).0));
    assert_eq!(s.plugin.status.lock().unwrap().endpoints, 1);
    // Docker's calls for it, should they come late, change nothing.
    let ep = json!({"NetworkID": NET, "EndpointID": EP});
    assert_eq!(s.ok("NetworkDriver.DeleteEndpoint", ep).await, json!({}));
    s.ok(
        "IpamDriver.ReleaseAddress",
        json!({"PoolID": pool_id, "Address": ip1}),
    )
    .await;
    assert_eq!(s.fake.owner(&ip2), Some(endpoint_owner(&ep2)));
    // The address is free for the next container.
    let (addr3, _) = s.endpoint(NET, &pool_id, &"eeee".repeat(16)).await;
    assert_eq!(addr3, addr);
}

/// [`post`] from a thread of its own, with a time limit on the reply.
fn post_blocking(path: &Path, method: &str, body: &[u8]) -> crate::http::Response {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut req = format!(
        "POST /{method} HTTP/1.1\r\nHost: plugin\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    s.write_all(&req).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("no reply within 5 s");
    crate::http::parse_response(&buf, true).unwrap().unwrap()
}

#[test]
fn docker_is_answered_while_the_routers_start_blocks_its_runtime() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tmpdir("blocked");
    let path = dir.join("wefttest.sock");
    rt.block_on(async {
        let (listener, _file) = server::bind(&path).unwrap();
        let slot: Arc<Slot<Arc<Fake>>> = Arc::new(std::sync::OnceLock::new());
        let uid = crate::control::effective_uid().unwrap();
        server::serve_on_thread(listener, Arc::clone(&slot), uid).unwrap();
        let p = path.clone();
        let client = std::thread::spawn(move || {
            let started = std::time::Instant::now();
            let join = br#"{"NetworkID":"n","EndpointID":"e"}"#;
            let r = post_blocking(&p, "NetworkDriver.Join", join);
            (started.elapsed(), r)
        });
        // The start blocking the router's runtime, as opening the datapath does.
        std::thread::sleep(std::time::Duration::from_secs(2));
        let (took, r) = client.join().unwrap();
        assert_eq!(r.status, 503);
        assert!(err_of(&r).contains("starting"), "{}", err_of(&r));
        assert!(
            took < std::time::Duration::from_secs(1),
            "answered after {took:?}"
        );

        // Once up, the calls run on the router's runtime.
        let fake = Arc::new(Fake::default());
        let _ = slot.set(Arc::new(plugin_on(&dir, &fake)));
        let r = post(
            &path,
            "IpamDriver.RequestPool",
            br#"{"AddressSpace":"weft-local","Pool":""}"#,
        )
        .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let plugin = slot.get().unwrap();
        assert_eq!(plugin.store.lock().await.get().pools.len(), 1);
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn networks_docker_deleted_while_down_give_back_gateway_and_pool() {
    let mut s = Setup::new("gone-net");
    let (p1, g1) = s.network("n1", "", false).await;
    let (addr, _) = s.endpoint("n1", &p1, EP).await;
    let (p2, _) = s.network("n2", "", true).await;
    let (p3, g3) = s.network("n3", "10.40.0.0/16", false).await;
    let (p4, g4) = s.network("n4", "10.40.0.0/16", false).await;
    assert_eq!(p3, p4, "the same --subnet, one pool");
    s.restart();
    let known = s.plugin.endpoints_by_network().await;
    assert_eq!(
        known,
        BTreeMap::from([
            ("n1".to_owned(), vec![EP.to_owned()]),
            ("n2".to_owned(), vec![]),
            ("n3".to_owned(), vec![]),
            ("n4".to_owned(), vec![]),
        ])
    );
    // Docker still has n4 only: n1 (with its container), n2 (internal) and n3 go.
    let live = gone::Live {
        endpoints: BTreeSet::new(),
        networks_gone: BTreeSet::from(["n1".into(), "n2".into(), "n3".into()]),
    };
    let forgotten = s.plugin.forget_gone(known, Ok(live)).await;
    assert_eq!(
        forgotten,
        gone::Forgotten {
            endpoints: 1,
            networks: 3
        }
    );
    let st = s.state();
    assert_eq!(st.networks.keys().collect::<Vec<_>>(), ["n4"]);
    assert!(st.endpoints.is_empty());
    assert!(!st.pools.contains_key(&p1) && !st.pools.contains_key(&p2));
    assert_eq!(st.pools[&p3].refs, 1, "n4 keeps the shared pool");
    let ip = |a: &str| a.split('/').next().unwrap().to_owned();
    for a in [&addr, &g1, &g3] {
        assert_eq!(s.fake.owner(&ip(a)), None, "{a} freed in IPAM");
    }
    assert!(!s.fake.exposed.lock().unwrap().contains(&g1));
    assert!(s.fake.owner(&ip(&g4)).is_some(), "n4's gateway stays");
    let subnets = s.fake.outbound_subnets();
    assert_eq!(subnets, ["10.40.0.0/16"]);
    // The blocks are free again: the next networks get them.
    let (again, _) = s.network("n5", "", false).await;
    assert_eq!(again, p1);
}
