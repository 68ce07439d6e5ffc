//! The libnetwork remote API as types: every request Docker posts to the plugin socket
//! and every reply the plugin sends, named after the field names on the wire.
//!
//! Requests take what Docker sends: unknown fields are ignored (newer engines add
//! some), Go's `null` for an empty list or map reads as empty, and a missing required
//! id is refused with the field's name. Addresses stay text here; the handlers parse them
//! with [`parse_v4_block`], [`parse_v4_cidr`] and [`parse_v4`], whose errors name the field.

use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use weft_core::ipam::Cidr as V4Cidr;

/// What the plugin implements (`/Plugin.Activate`).
pub(crate) const IMPLEMENTS: [&str; 2] = ["NetworkDriver", "IpamDriver"];
/// The scope of the driver: one host's store, no swarm.
pub(crate) const SCOPE: &str = "local";
/// The prefix Docker names the container's interface with (it appends a number).
pub(crate) const DST_PREFIX: &str = "ethwe";
/// The option key of `RequestAddress` that says what the address is for.
pub(crate) const OPT_ADDRESS_TYPE: &str = "RequestAddressType";
/// Its value for a network's gateway.
pub(crate) const ADDRESS_TYPE_GATEWAY: &str = "com.docker.network.gateway";
/// The `CreateNetwork` option set for `docker network create --internal`.
pub(crate) const OPT_INTERNAL: &str = "com.docker.network.internal";
/// The address spaces the IPAM driver names (weft has one range; the names are labels).
pub(crate) const LOCAL_ADDRESS_SPACE: &str = "weft-local";
/// See [`LOCAL_ADDRESS_SPACE`].
pub(crate) const GLOBAL_ADDRESS_SPACE: &str = "weft-global";

/// Reads Go's `null` (a nil slice or map) as the type's default.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Free-form options (`Options` of the network driver's calls).
pub(crate) type Options = serde_json::Map<String, serde_json::Value>;

// ---------------------------------------------------------------------------------------
// Handshake and capabilities

/// `/Plugin.Activate`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ActivateReply {
    #[serde(rename = "Implements")]
    pub(crate) implements: Vec<String>,
}

/// `/NetworkDriver.GetCapabilities`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct CapabilitiesReply {
    #[serde(rename = "Scope")]
    pub(crate) scope: String,
    #[serde(rename = "ConnectivityScope")]
    pub(crate) connectivity_scope: String,
}

/// `/IpamDriver.GetCapabilities`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct IpamCapabilitiesReply {
    /// Whether `RequestAddress` needs the endpoint's MAC in its options.
    #[serde(rename = "RequiresMACAddress")]
    pub(crate) requires_mac_address: bool,
    /// Whether Docker must replay pools and addresses after its restart (it need not:
    /// the plugin keeps them on disk).
    #[serde(rename = "RequiresRequestReplay")]
    pub(crate) requires_request_replay: bool,
}

/// `/IpamDriver.GetDefaultAddressSpaces`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct AddressSpacesReply {
    #[serde(rename = "LocalDefaultAddressSpace")]
    pub(crate) local: String,
    #[serde(rename = "GlobalDefaultAddressSpace")]
    pub(crate) global: String,
}

// ---------------------------------------------------------------------------------------
// Network driver: networks

/// One pool of a network, as the IPAM driver gave it (`IPv4Data` of `CreateNetwork`).
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct IpamData {
    #[serde(rename = "AddressSpace", default, deserialize_with = "null_as_default")]
    pub(crate) address_space: String,
    /// `a.b.c.d/n`.
    #[serde(rename = "Pool", default, deserialize_with = "null_as_default")]
    pub(crate) pool: String,
    /// `a.b.c.d/n` (or a bare address); empty when there is none.
    #[serde(rename = "Gateway", default, deserialize_with = "null_as_default")]
    pub(crate) gateway: String,
    #[serde(rename = "AuxAddresses", default, deserialize_with = "null_as_default")]
    pub(crate) aux_addresses: BTreeMap<String, String>,
}

/// `/NetworkDriver.CreateNetwork`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct CreateNetworkRequest {
    #[serde(rename = "NetworkID")]
    pub(crate) network_id: String,
    #[serde(rename = "Options", default, deserialize_with = "null_as_default")]
    pub(crate) options: Options,
    #[serde(rename = "IPv4Data", default, deserialize_with = "null_as_default")]
    pub(crate) ipv4_data: Vec<IpamData>,
    #[serde(rename = "IPv6Data", default, deserialize_with = "null_as_default")]
    pub(crate) ipv6_data: Vec<IpamData>,
}

/// `/NetworkDriver.DeleteNetwork`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct NetworkRequest {
    #[serde(rename = "NetworkID")]
    pub(crate) network_id: String,
}

// ---------------------------------------------------------------------------------------
// Network driver: endpoints

/// The endpoint's interface: what Docker already decided (request) or what the driver
/// adds (reply). Empty strings are absent fields.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EndpointInterface {
    /// `a.b.c.d/n`.
    #[serde(
        rename = "Address",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub(crate) address: String,
    #[serde(
        rename = "AddressIPv6",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub(crate) address_ipv6: String,
    #[serde(
        rename = "MacAddress",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub(crate) mac_address: String,
}

/// `/NetworkDriver.CreateEndpoint`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct CreateEndpointRequest {
    #[serde(rename = "NetworkID")]
    pub(crate) network_id: String,
    #[serde(rename = "EndpointID")]
    pub(crate) endpoint_id: String,
    #[serde(rename = "Interface", default)]
    pub(crate) interface: Option<EndpointInterface>,
    #[serde(rename = "Options", default, deserialize_with = "null_as_default")]
    pub(crate) options: Options,
}

/// The reply to `CreateEndpoint`: no `Interface` when Docker gave one (it refuses a
/// driver that changes what it decided).
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct CreateEndpointReply {
    #[serde(rename = "Interface", skip_serializing_if = "Option::is_none")]
    pub(crate) interface: Option<EndpointInterface>,
}

/// `DeleteEndpoint`, `EndpointOperInfo`, `Leave`, `RevokeExternalConnectivity`, and
/// `ProgramExternalConnectivity` (whose `Options` are not needed).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct EndpointRequest {
    #[serde(rename = "NetworkID")]
    pub(crate) network_id: String,
    #[serde(rename = "EndpointID")]
    pub(crate) endpoint_id: String,
}

/// The reply to `EndpointOperInfo`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct OperInfoReply {
    #[serde(rename = "Value")]
    pub(crate) value: BTreeMap<String, String>,
}

/// `/NetworkDriver.Join`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct JoinRequest {
    #[serde(rename = "NetworkID")]
    pub(crate) network_id: String,
    #[serde(rename = "EndpointID")]
    pub(crate) endpoint_id: String,
    /// The container's network namespace (`/var/run/docker/netns/...`).
    #[serde(rename = "SandboxKey", default, deserialize_with = "null_as_default")]
    pub(crate) sandbox_key: String,
    #[serde(rename = "Options", default, deserialize_with = "null_as_default")]
    pub(crate) options: Options,
}

/// The interface Docker moves into the container: `SrcName` in Docker's namespace,
/// named `DstPrefix` plus a number inside.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct InterfaceName {
    #[serde(rename = "SrcName")]
    pub(crate) src_name: String,
    #[serde(rename = "DstPrefix")]
    pub(crate) dst_prefix: String,
}

/// The reply to `Join`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct JoinReply {
    #[serde(rename = "InterfaceName")]
    pub(crate) interface_name: InterfaceName,
    /// The default gateway (a bare IPv4 address); absent on `--internal` networks.
    #[serde(rename = "Gateway", default, skip_serializing_if = "String::is_empty")]
    pub(crate) gateway: String,
    /// Set where there is no gateway, so that Docker adds no `docker_gwbridge`.
    #[serde(rename = "DisableGatewayService", default)]
    pub(crate) disable_gateway_service: bool,
}

/// `DiscoverNew`, `DiscoverDelete` (swarm node events; nothing to do for a local driver).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct DiscoveryRequest {
    #[serde(rename = "DiscoveryType", default)]
    pub(crate) discovery_type: i64,
    #[serde(rename = "DiscoveryData", default)]
    pub(crate) discovery_data: serde_json::Value,
}

// ---------------------------------------------------------------------------------------
// IPAM driver

/// `/IpamDriver.RequestPool`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RequestPoolRequest {
    #[serde(rename = "AddressSpace", default, deserialize_with = "null_as_default")]
    pub(crate) address_space: String,
    /// `--subnet`; empty: the plugin picks.
    #[serde(rename = "Pool", default, deserialize_with = "null_as_default")]
    pub(crate) pool: String,
    /// `--ip-range`: where addresses are allocated inside the pool.
    #[serde(rename = "SubPool", default, deserialize_with = "null_as_default")]
    pub(crate) sub_pool: String,
    #[serde(rename = "Options", default, deserialize_with = "null_as_default")]
    pub(crate) options: BTreeMap<String, String>,
    #[serde(rename = "V6", default)]
    pub(crate) v6: bool,
}

/// The reply to `RequestPool`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RequestPoolReply {
    #[serde(rename = "PoolID")]
    pub(crate) pool_id: String,
    #[serde(rename = "Pool")]
    pub(crate) pool: String,
    #[serde(rename = "Data")]
    pub(crate) data: BTreeMap<String, String>,
}

/// `/IpamDriver.ReleasePool`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ReleasePoolRequest {
    #[serde(rename = "PoolID")]
    pub(crate) pool_id: String,
}

/// `/IpamDriver.RequestAddress`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RequestAddressRequest {
    #[serde(rename = "PoolID")]
    pub(crate) pool_id: String,
    /// The address wanted (`--ip`, `--gateway`), bare; empty: any.
    #[serde(rename = "Address", default, deserialize_with = "null_as_default")]
    pub(crate) address: String,
    #[serde(rename = "Options", default, deserialize_with = "null_as_default")]
    pub(crate) options: BTreeMap<String, String>,
}

/// The reply to `RequestAddress`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RequestAddressReply {
    /// `a.b.c.d/n`, the pool's prefix length.
    #[serde(rename = "Address")]
    pub(crate) address: String,
    #[serde(rename = "Data")]
    pub(crate) data: BTreeMap<String, String>,
}

/// `/IpamDriver.ReleaseAddress`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ReleaseAddressRequest {
    #[serde(rename = "PoolID")]
    pub(crate) pool_id: String,
    #[serde(rename = "Address")]
    pub(crate) address: String,
}

// ---------------------------------------------------------------------------------------
// Replies every call may give

/// `{}`: the success reply of calls that return nothing.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Empty {}

/// `{"Err": "one line"}`: every refusal.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct ErrReply {
    #[serde(rename = "Err")]
    pub(crate) err: String,
}

// ---------------------------------------------------------------------------------------
// Field parsing (each error names the field)

/// An aligned IPv4 block (`Pool`, `SubPool`): `10.32.0.0/12`.
pub(crate) fn parse_v4_block(field: &str, s: &str) -> Result<V4Cidr, String> {
    crate::ipam::parse_block(s).map_err(|e| format!("{field}: {e}"))
}

/// An IPv4 address with its prefix length (`Address` of an interface, `Gateway`), or a
/// bare address, which then gets `default_prefix_len`.
pub(crate) fn parse_v4_cidr(
    field: &str,
    s: &str,
    default_prefix_len: u8,
) -> Result<V4Cidr, String> {
    let bad = || format!("{field}: bad IPv4 address {s:?}: expected a.b.c.d/n");
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => {
            if l.is_empty() || l.len() > 2 || !l.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            (a, l.parse::<u8>().map_err(|_| bad())?)
        }
        None => (s, default_prefix_len),
    };
    let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
    if len > 32 {
        return Err(bad());
    }
    Ok(V4Cidr {
        addr,
        prefix_len: len,
    })
}

/// An address of the network `subnet` (a network's `Gateway`, an endpoint's
/// `Interface.Address`): with the subnet's prefix length, or bare (it then gets it). What
/// is taken is written to the state file and must read back (a /4 would not).
pub(crate) fn parse_v4_in(field: &str, s: &str, subnet: V4Cidr) -> Result<V4Cidr, String> {
    let c = parse_v4_cidr(field, s, subnet.prefix_len)?;
    if c.prefix_len != subnet.prefix_len || !subnet.contains(c.addr.to_bits()) {
        return Err(format!(
            "{field}: {} is not an address of the network's subnet {}",
            truncate(s, 40),
            subnet.network()
        ));
    }
    Ok(c)
}

/// A bare IPv4 address (`Address` of `RequestAddress` and `ReleaseAddress`); a prefix
/// length, if Docker sends one, is dropped.
pub(crate) fn parse_v4(field: &str, s: &str) -> Result<Ipv4Addr, String> {
    parse_v4_cidr(field, s, 32).map(|c| c.addr)
}

/// A Docker object id (`NetworkID`, `EndpointID`, `PoolID`): 1 to [`ID_LEN_MAX`]
/// visible ASCII characters.
pub(crate) fn check_id(field: &str, id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > ID_LEN_MAX || !id.bytes().all(|b| (b'!'..=b'~').contains(&b)) {
        return Err(format!(
            "{field}: expected 1 to {ID_LEN_MAX} visible ASCII characters, got {:?}",
            truncate(id, 80)
        ));
    }
    Ok(())
}

/// Longest id accepted (Docker's are 64 hex digits).
pub(crate) const ID_LEN_MAX: usize = 128;

/// At most `n` bytes of `s`, cut on a character boundary (for error lines).
pub(crate) fn truncate(s: &str, n: usize) -> &str {
    let mut end = s.len().min(n);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_nulls_read_as_empty_and_unknown_fields_are_ignored() {
        let r: CreateNetworkRequest = serde_json::from_str(
            r#"{"NetworkID":"n1","Options":null,"IPv4Data":null,"IPv6Data":null,"New":1}"#,
        )
        .unwrap();
        assert!(r.options.is_empty() && r.ipv4_data.is_empty() && r.ipv6_data.is_empty());
        let r: RequestPoolRequest = serde_json::from_str(
            r#"{"AddressSpace":"weft-local","Pool":"","SubPool":"","Options":null,"V6":false}"#,
        )
        .unwrap();
        assert!(r.options.is_empty() && r.pool.is_empty());
    }

    #[test]
    fn a_missing_id_is_refused_by_name() {
        let e = serde_json::from_str::<JoinRequest>(r#"{"NetworkID":"n1"}"#).unwrap_err();
        assert!(e.to_string().contains("EndpointID"), "{e}");
        let e = serde_json::from_str::<EndpointRequest>("null").unwrap_err();
        assert!(e.to_string().contains("expected struct"), "{e}");
    }

    #[test]
    fn replies_use_the_wire_names() {
        let j = JoinReply {
            interface_name: InterfaceName {
                src_name: "vwc0123".into(),
                dst_prefix: DST_PREFIX.into(),
            },
            gateway: String::new(),
            disable_gateway_service: true,
        };
        assert_eq!(
            serde_json::to_string(&j).unwrap(),
            r#"{"InterfaceName":{"SrcName":"vwc0123","DstPrefix":"ethwe"},"DisableGatewayService":true}"#
        );
        let c = CreateEndpointReply::default();
        assert_eq!(serde_json::to_string(&c).unwrap(), "{}");
        let e = ErrReply { err: "no".into() };
        assert_eq!(serde_json::to_string(&e).unwrap(), r#"{"Err":"no"}"#);
    }

    #[test]
    fn a_network_address_is_in_its_subnet_with_its_prefix() {
        let net: V4Cidr = "10.40.0.0/24".parse().unwrap();
        let ok = |s| parse_v4_in("IPv4Data.Gateway", s, net).map(|c| c.to_string());
        assert_eq!(ok("10.40.0.1/24").unwrap(), "10.40.0.1/24");
        assert_eq!(ok("10.40.0.9").unwrap(), "10.40.0.9/24");
        // Fuzzing found a /4 gateway taken and written to the state file, which then
        // refused to load (a state file reads CIDRs of /8 to /32 only).
        for bad in ["10.40.0.12/4", "10.40.0.1/16", "10.41.0.1/24", "10.41.0.1"] {
            let e = ok(bad).unwrap_err();
            assert_eq!(
                e,
                format!(
                    "IPv4Data.Gateway: {bad} is not an address of the network's subnet 10.40.0.0/24"
                )
            );
        }
    }

    #[test]
    fn field_parsers_name_the_field() {
        assert_eq!(
            parse_v4_cidr("Gateway", "10.32.0.1/12", 32)
                .unwrap()
                .to_string(),
            "10.32.0.1/12"
        );
        assert_eq!(
            parse_v4_cidr("Gateway", "10.32.0.1", 24)
                .unwrap()
                .prefix_len,
            24
        );
        for bad in [
            "",
            "10.32.0.1/",
            "10.32.0.1/33",
            "10.32.0/12",
            "fd00::1/64",
            "x/1",
        ] {
            let e = parse_v4_cidr("Address", bad, 32).unwrap_err();
            assert!(e.starts_with("Address: "), "{e}");
        }
        assert!(
            parse_v4_block("Pool", "10.32.0.1/24")
                .unwrap_err()
                .starts_with("Pool: ")
        );
        assert!(
            check_id("EndpointID", "")
                .unwrap_err()
                .starts_with("EndpointID: ")
        );
        assert!(check_id("EndpointID", "a b").is_err());
        assert!(check_id("EndpointID", &"a".repeat(ID_LEN_MAX + 1)).is_err());
        assert!(check_id("EndpointID", &"f".repeat(64)).is_ok());
    }
}
