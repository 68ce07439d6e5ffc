//! The control API's vocabulary: every request body, reply body and error that crosses
//! the control socket, as types. The API server (`api`) decodes requests into them and
//! encodes replies from them; the router task (`driver`) answers with them; the CLI
//! (`main`, `client`) sends and decodes them; the status renderer (`render`) reads them.
//! The JSON on the socket is generated from these types, so curl sees what the CLI sees.
//!
//! Requests refuse unknown fields. Replies take defaults for missing fields (a number
//! reads 0, a name `-`), so a CLI talking to an older or newer router never fails to
//! print a status.

use crate::cli::Cidr;
use crate::ipam::NetSpec;
use crate::state::Attachment;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

// ---------------------------------------------------------------------------------------
// Errors

/// Why the router refused or failed a request. Each variant is one line for the user and
/// maps to one HTTP status; the body on the socket is `{"error": "<the line>"}`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// A path the API does not serve.
    #[error("no such endpoint {0}")]
    NoSuchEndpoint(String),
    /// A known path with the wrong method.
    #[error("{path} takes {allowed}, not {got}")]
    WrongMethod {
        /// The path asked for.
        path: &'static str,
        /// The one method it takes.
        allowed: &'static str,
        /// The method the caller used.
        got: String,
    },
    /// The request was not HTTP the API can read.
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
    /// The request did not arrive whole in time.
    #[error("request not received in time")]
    RequestTimeout,
    /// The body is not JSON of the request's type.
    #[error("bad request body: {0}")]
    BadBody(String),
    /// A request that is well formed but asks for something impossible (too many peers, a
    /// bad name, a missing argument).
    #[error("{0}")]
    BadRequest(String),
    /// IPAM could not give or take what was asked (range full, no ring yet, unknown peer).
    #[error("{0}")]
    Ipam(String),
    /// The address asked for is held by another container (anywhere in the network).
    #[error("{0}")]
    AddressInUse(String),
    /// IPAM did not answer (the router stops, or the request could not be sent).
    #[error("{0}")]
    IpamUnavailable(String),
    /// The caller may not use the socket.
    #[error("{0}")]
    Forbidden(String),
    /// The router task is gone or going.
    #[error("the router is stopping")]
    Stopping,
    /// A host operation (netlink, namespaces, files) failed.
    #[error(transparent)]
    Host(#[from] crate::error::Error),
    /// The DNS server could not start listening where asked.
    #[error("{0}")]
    DnsListen(String),
    /// The request conflicts with what is there (a second CNI ADD of one attachment).
    #[error("{0}")]
    Conflict(String),
    /// What the request names is not there (a policy to delete).
    #[error("{0}")]
    NotFound(String),
}

impl ApiError {
    /// The HTTP status the error is sent with.
    pub(crate) fn status(&self) -> u16 {
        match self {
            Self::NoSuchEndpoint(_) => 404,
            Self::WrongMethod { .. } => 405,
            Self::Http(e) => e.status(),
            Self::RequestTimeout | Self::BadBody(_) | Self::BadRequest(_) => 400,
            Self::Ipam(_) | Self::AddressInUse(_) => 409,
            Self::IpamUnavailable(_) | Self::Stopping => 503,
            Self::Forbidden(_) => 403,
            Self::Host(e) => match e {
                crate::error::Error::UnknownNetns { .. } | crate::error::Error::Other(_) => 400,
                _ => 500,
            },
            Self::DnsListen(_) => 500,
            Self::Conflict(_) => 409,
            Self::NotFound(_) => 404,
        }
    }

    /// The one line sent to the caller (causes with newlines are folded).
    pub(crate) fn line(&self) -> String {
        self.to_string().replace('\n', " ")
    }
}

/// The body of every error reply.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct ErrorBody {
    /// One line for the user.
    pub(crate) error: String,
}

// ---------------------------------------------------------------------------------------
// Requests

/// `POST /connect`, `POST /forget`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PeersRequest {
    /// `host[:port]` each.
    pub(crate) peers: Vec<String>,
}

/// `POST /attach` and `POST /detach`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NetnsRequest {
    /// The namespace's path (`/var/run/netns/a`, `/proc/PID/ns/net`).
    pub(crate) netns: PathBuf,
    /// Addresses to put on (attach) or take off (detach; empty: the whole attachment).
    #[serde(default)]
    pub(crate) addresses: Vec<Cidr>,
    /// `attach --name`: register the attachment's IPv4 addresses under this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) name: Option<String>,
    /// `attach net:default | net:CIDR`: subnets to allocate an address in (attach only;
    /// with no `addresses` either, one address of the default subnet).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) allocate: Vec<NetSpec>,
    /// `attach --namespace`: the policy namespace (attach only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) namespace: Option<String>,
    /// `attach --label KEY=VALUE`: policy labels (attach only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) labels: Vec<String>,
    /// `attach --port NAME=PORT/PROTO`: named ports (attach only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) ports: Vec<String>,
}

/// `POST /expose`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExposeRequest {
    /// One address for the bridge (as older clients send it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) address: Option<Cidr>,
    /// Addresses for the bridge, used as given (not claimed in IPAM).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) addresses: Vec<Cidr>,
    /// `expose net:default | net:CIDR`: subnets to allocate an address in (with no
    /// addresses either, one of the default subnet).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) allocate: Vec<NetSpec>,
    /// `expose -h FQDN`: the host's DNS name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) fqdn: Option<String>,
}

/// `POST /hide` (no fields).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HideRequest {}

/// `POST /stop`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StopRequest {
    /// Also forget the persisted state (`weft reset`).
    #[serde(default)]
    pub(crate) reset: bool,
}

/// `POST /dns/add`, `/dns/remove`, `/dns/lookup`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DnsNamingRequest {
    /// The name (bare names get the domain).
    #[serde(default)]
    pub(crate) name: Option<String>,
    /// IPv4 addresses.
    #[serde(default)]
    pub(crate) addresses: Vec<Ipv4Addr>,
    /// The owning container's id.
    #[serde(default)]
    pub(crate) container: Option<String>,
}

/// `POST /ipam/rmpeer`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RmpeerRequest {
    /// Peer name (`aa:bb:..`) or a unique nickname.
    pub(crate) peer: String,
}

// ---------------------------------------------------------------------------------------
// Replies: the router summary and its parts

/// `GET /status`: the router's part (from the router task) and the host's.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Summary {
    /// What the router task knows.
    #[serde(flatten)]
    pub(crate) router: RouterSummary,
    /// The bridge's name.
    pub(crate) bridge: Option<String>,
    /// Namespaces attached.
    pub(crate) attachments: Option<u64>,
    /// Host addresses on the bridge.
    pub(crate) exposed: Vec<Cidr>,
    /// The sleeve datapath.
    pub(crate) datapath: DatapathStatus,
    /// Datagrams from strangers the peer filter dropped (`None`: not known).
    pub(crate) peer_filter_dropped: Option<u64>,
    /// The Docker network and IPAM plugin.
    pub(crate) plugin: PluginStatus,
    /// The Docker API proxy.
    #[serde(default)]
    pub(crate) proxy: ProxyStatus,
    /// The imports this router carries (`weft service import`), one line each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) imports: Vec<String>,
}

/// The Docker API proxy in `GET /status`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct ProxyStatus {
    /// Whether this router serves the proxy socket.
    pub(crate) serving: bool,
    /// The socket's path (`DOCKER_HOST=unix://PATH`).
    pub(crate) socket: Option<String>,
    /// Why it is not served (`--no-proxy`, Docker does not answer, another process
    /// serves the path, ...).
    pub(crate) off_reason: Option<String>,
    /// Containers the proxy has plugged in now.
    pub(crate) containers: u64,
}

/// The Docker plugin in `GET /status`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct PluginStatus {
    /// Whether this router serves the plugin socket.
    pub(crate) serving: bool,
    /// The socket's path.
    pub(crate) socket: Option<String>,
    /// The driver's name (`docker network create -d NAME`).
    pub(crate) driver: Option<String>,
    /// Why it is not served (`--no-plugin`, another process serves the path, ...).
    pub(crate) off_reason: Option<String>,
    /// Docker networks on this driver.
    pub(crate) networks: u64,
    /// Their endpoints (containers' interfaces).
    pub(crate) endpoints: u64,
}

/// The router task's part of `GET /status`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct RouterSummary {
    /// Peer name (`aa:bb:cc:dd:ee:ff`).
    pub(crate) name: Option<String>,
    /// Nickname (the host name by default).
    pub(crate) nickname: Option<String>,
    /// The incarnation's uid, 16 hex digits.
    pub(crate) uid: Option<String>,
    /// weft's version.
    pub(crate) version: Option<String>,
    /// The TCP/UDP port.
    pub(crate) port: Option<u16>,
    /// Whether a password or key seals everything.
    pub(crate) encrypted: bool,
    /// Whether the fast datapath was asked for.
    pub(crate) fastdp: bool,
    /// The nftables peer filter, in words.
    pub(crate) peer_filter: Option<String>,
    /// When the router started (seconds since the epoch).
    pub(crate) started_unix_s: u64,
    /// Peers in the topology (this router included).
    pub(crate) peers: Option<u64>,
    /// Peers with a route from here.
    pub(crate) reachable_peers: Option<u64>,
    /// Connections by state: handshaking, confirming, established, closed.
    pub(crate) connections: BTreeMap<String, u64>,
    /// Connect targets.
    pub(crate) targets: Option<u64>,
    /// Gossip counters.
    pub(crate) gossip: GossipCounters,
    /// Topology updates refused.
    pub(crate) topology_refused: TopologyRefused,
    /// Connections and targets refused.
    pub(crate) refused: Refused,
    /// The latest failed connections, newest first.
    pub(crate) recent_failures: Vec<RecentFailure>,
}

/// Gossip counters in the summary.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct GossipCounters {
    pub(crate) msgs_sent: u64,
    pub(crate) bytes_sent: u64,
    pub(crate) msgs_received: u64,
    pub(crate) malformed: u64,
}

/// Topology updates the router refused, by reason.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct TopologyRefused {
    pub(crate) over_limits: u64,
    pub(crate) table_full: u64,
    pub(crate) too_many_new_peers_in_msg: u64,
    pub(crate) version_too_far_ahead: u64,
}

/// Connections and targets the router refused, by reason.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Refused {
    pub(crate) conn_limit: u64,
    pub(crate) pending_inbound_full: u64,
    pub(crate) pending_inbound_per_addr: u64,
    pub(crate) locked_out: u64,
    pub(crate) password_lockouts: u64,
    pub(crate) pre_hello_timeouts: u64,
    pub(crate) explicit_targets_full: u64,
    pub(crate) discovered_targets_full: u64,
    pub(crate) discovered_targets_expired: u64,
    pub(crate) discovered_dials_preempted: u64,
}

/// A connection that failed lately.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct RecentFailure {
    pub(crate) address: Option<String>,
    pub(crate) outbound: bool,
    pub(crate) error: Option<String>,
    pub(crate) at_unix_s: u64,
}

/// The sleeve datapath in `GET /status`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct DatapathStatus {
    /// `sleeve`.
    pub(crate) mode: Option<String>,
    pub(crate) forwarding: bool,
    /// `io_uring` or `plain`.
    pub(crate) backend: Option<String>,
    /// Threads sealing and opening datagrams (0: not encrypted).
    pub(crate) crypto_threads: u64,
    pub(crate) datagrams_crypted_by_helpers: u64,
    pub(crate) udp_port: Option<u16>,
    /// The overlay MTU.
    pub(crate) mtu: Option<u64>,
    pub(crate) frames_from_bridge: u64,
    pub(crate) frames_to_bridge: u64,
    pub(crate) frames_relayed: u64,
    pub(crate) frames_left_to_kernel: u64,
    pub(crate) datagrams_in: u64,
    pub(crate) datagrams_out: u64,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    pub(crate) tap_reads: u64,
    pub(crate) tap_writes: u64,
    pub(crate) batches: u64,
    pub(crate) gso_sends_cut: u64,
    /// One per peer the sleeve has a path to.
    pub(crate) paths: Vec<PathStatus>,
    /// Drops by reason.
    pub(crate) drops: BTreeMap<String, u64>,
    /// Each queue's share of the traffic (one entry per queue, in order).
    pub(crate) queues: Vec<QueueStatus>,
    /// With several queues: datagrams go to the queue of the CPU that received them
    /// (false: by 4-tuple hash, all of one peer's to one queue).
    pub(crate) steered_by_cpu: bool,
}

/// One queue of the sleeve (its TAP queue, socket and thread).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct QueueStatus {
    pub(crate) tap_reads: u64,
    pub(crate) tap_writes: u64,
    pub(crate) datagrams_in: u64,
    pub(crate) datagrams_out: u64,
    pub(crate) frames_from_bridge: u64,
    pub(crate) frames_to_bridge: u64,
}

/// The sleeve's path to one peer.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct PathStatus {
    pub(crate) peer: Option<String>,
    pub(crate) address: Option<String>,
    pub(crate) up: bool,
    pub(crate) pmtu_bytes: Option<u64>,
    pub(crate) link_mtu_bytes: Option<u64>,
    /// Whether full-size overlay frames fit one datagram on the link (`None`: unknown).
    pub(crate) link_fits_full_frames: Option<bool>,
    /// The largest overlay MTU that would fit the link.
    pub(crate) overlay_mtu_fitting_link: Option<u64>,
}

/// `GET /status/peers`: one per peer in the topology.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct PeerStatus {
    pub(crate) name: Option<String>,
    pub(crate) nickname: Option<String>,
    pub(crate) uid: Option<String>,
    pub(crate) version: u64,
    pub(crate) ourself: bool,
    pub(crate) reachable: bool,
    pub(crate) next_hop: Option<String>,
    pub(crate) connections: Vec<PeerConnection>,
}

/// A connection a peer announces.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct PeerConnection {
    pub(crate) peer: Option<String>,
    pub(crate) address: Option<String>,
    pub(crate) established: bool,
    pub(crate) outbound: bool,
}

/// `GET /status/connections`: a live connection, a target whose last attempt failed, or
/// a reachable peer we have no connection to (`relayed`, through `via`).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct ConnectionStatus {
    /// `None` for a failed target.
    pub(crate) id: Option<String>,
    pub(crate) peer: Option<String>,
    pub(crate) nickname: Option<String>,
    pub(crate) address: Option<String>,
    pub(crate) outbound: bool,
    /// handshaking, confirming, established, closed, or failed.
    pub(crate) state: Option<String>,
    pub(crate) encrypted: bool,
    /// The AEAD sealing this link's sleeve datagrams (`aes-256-gcm` or
    /// `chacha20-poly1305`), once the hellos are exchanged; `None` without a password
    /// (the sleeve is then not sealed).
    pub(crate) cipher: Option<String>,
    /// sleeve, fastdp, pending, failed, or `relayed via PEER(NICK)`.
    pub(crate) mode: Option<String>,
    pub(crate) error: Option<String>,
    /// How the peer's traffic goes: `direct` (over this connection), `punched` (over
    /// this connection, a UDP path punched through NAT) or `relayed` (no connection of
    /// ours: through `via`).
    pub(crate) path: Option<String>,
    /// The next hop of a relayed peer.
    pub(crate) via: Option<String>,
    /// A relayed peer's hole punching: `requested via PEER`, `probing ADDR`, `failed:
    /// REASON` (e.g. `failed: no answer` when the NATs do not let probes cross).
    pub(crate) punch: Option<String>,
    /// Where the peer's sleeve datagrams are seen coming from, and answered: its NAT's
    /// mapping when it is behind one (unlike `address`, the connection's TCP address).
    pub(crate) mapped_address: Option<String>,
    /// Since when (unix seconds) the path is what it is: for a direct one since its
    /// mapped address was first seen or last changed, for a relayed one since its next
    /// hop was last chosen.
    pub(crate) since_unix_s: Option<u64>,
}

/// `GET /status/targets`: one per connect target.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct TargetStatus {
    pub(crate) address: Option<String>,
    /// explicit or discovered.
    pub(crate) kind: Option<String>,
    /// waiting, connecting or connected.
    pub(crate) state: Option<String>,
    pub(crate) connection: Option<String>,
    pub(crate) next_attempt_in_ms: Option<u64>,
    pub(crate) failures: u64,
    pub(crate) peer: Option<String>,
    pub(crate) last_error: Option<String>,
}

// ---------------------------------------------------------------------------------------
// Replies: commands

/// `POST /connect`, `/forget`: the resolved addresses.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct PeersReply {
    pub(crate) peers: Vec<String>,
}

/// `POST /attach`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct AttachReply {
    /// The attachment as it now is.
    #[serde(flatten)]
    pub(crate) attachment: Attachment,
    /// Where its queries should go.
    #[serde(default)]
    pub(crate) dns: DnsArgs,
    /// The addresses this call put on the interface (absent from older routers).
    #[serde(default)]
    pub(crate) given: Option<Vec<Cidr>>,
}

/// `POST /detach`: `removed` is `all` or `addresses`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct DetachReply {
    pub(crate) removed: Removed,
    pub(crate) attachment: Attachment,
}

/// What a detach took away.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Removed {
    /// The whole attachment.
    All,
    /// Only the addresses given.
    Addresses,
}

/// `POST /expose`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct ExposeReply {
    /// Every exposed address.
    pub(crate) exposed: Vec<Cidr>,
    /// The addresses this call exposed (given and allocated).
    pub(crate) given: Vec<Cidr>,
}

/// `POST /hide`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct HideReply {
    pub(crate) removed: Vec<Cidr>,
}

/// `POST /stop`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct StopReply {
    pub(crate) stopping: bool,
    pub(crate) reset: bool,
}

/// `GET /dns/args`, and part of `/attach`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct DnsArgs {
    /// The address containers should query (`None`: weftDNS listens nowhere yet).
    pub(crate) server: Option<String>,
    /// The search domain, with its trailing dot.
    pub(crate) domain: Option<String>,
}

/// `POST /dns/add`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct DnsAdded {
    /// The qualified name, with its trailing dot.
    pub(crate) name: String,
    /// Records that are new.
    pub(crate) added: u64,
}

/// `POST /dns/remove`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct DnsRemoved {
    pub(crate) removed: u64,
}

/// `POST /dns/lookup`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct DnsLookup {
    pub(crate) name: String,
    pub(crate) addresses: Vec<Ipv4Addr>,
}

/// `GET /status/dns`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct DnsStatus {
    /// The domain, with its trailing dot.
    pub(crate) domain: Option<String>,
    /// False with `--no-dns`.
    pub(crate) enabled: bool,
    /// The server's side (absent with `--no-dns`).
    #[serde(flatten)]
    pub(crate) server: Option<DnsServerStatus>,
    pub(crate) records: Vec<DnsRecord>,
    pub(crate) tombstones: u64,
    pub(crate) removed_peers: u64,
    pub(crate) gossip: DnsGossipCounters,
}

/// The DNS server's addresses and counters.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct DnsServerStatus {
    pub(crate) listen: Vec<String>,
    pub(crate) upstreams: Vec<String>,
    pub(crate) ttl_s: u64,
    pub(crate) queries_udp: u64,
    pub(crate) queries_tcp: u64,
    pub(crate) answered: u64,
    pub(crate) forwarded: u64,
    pub(crate) forward_failed: u64,
    pub(crate) malformed: u64,
    pub(crate) dropped: u64,
    pub(crate) drops_busy: u64,
}

/// One DNS record.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct DnsRecord {
    pub(crate) name: Option<String>,
    pub(crate) address: Option<String>,
    pub(crate) owner: Option<String>,
    pub(crate) ourself: bool,
    pub(crate) container: Option<String>,
    pub(crate) version: u64,
    /// Whether the server answers with it (its owner is reachable).
    pub(crate) answered: bool,
}

/// DNS gossip counters.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct DnsGossipCounters {
    pub(crate) malformed: u64,
    pub(crate) records_merged: u64,
    pub(crate) records_of_removed_peers: u64,
    pub(crate) own_records_refreshed: u64,
    pub(crate) tombstones_expired: u64,
    pub(crate) records_of_dead_peers_dropped: u64,
    pub(crate) drops_full: u64,
    pub(crate) drops_queue_full: u64,
}

/// `GET /status/ipam`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct IpamStatus {
    pub(crate) range: Option<String>,
    pub(crate) default_subnet: Option<String>,
    pub(crate) init: Option<String>,
    pub(crate) quorum: Option<u64>,
    /// `seeder/nonce` of the ring (`None`: no ring yet).
    pub(crate) ring: Option<String>,
    pub(crate) consensus_heard: u64,
    /// What the ring waits for, in words (`None` once it is there).
    pub(crate) waiting_for: Option<String>,
    pub(crate) reclaim_after_ms: Option<u64>,
    pub(crate) peers: Vec<IpamPeer>,
    pub(crate) unreachable: Vec<String>,
    pub(crate) allocations: u64,
    pub(crate) pending: u64,
    pub(crate) stats: IpamCounters,
}

/// One peer's share of the range.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct IpamPeer {
    pub(crate) peer: Option<String>,
    pub(crate) nickname: Option<String>,
    pub(crate) ourself: bool,
    pub(crate) addresses: u64,
    pub(crate) free: u64,
    pub(crate) reachable: bool,
}

/// IPAM counters.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct IpamCounters {
    pub(crate) malformed: u64,
    pub(crate) ring_conflicts: u64,
    pub(crate) range_mismatches: u64,
    pub(crate) donations_given: u64,
    pub(crate) donations_received: u64,
    pub(crate) addresses_reclaimed: u64,
    pub(crate) allocations_lost: u64,
    pub(crate) takeovers_refused: u64,
    pub(crate) drops_queue_full: u64,
    pub(crate) drops_unrouted: u64,
}

/// `POST /ipam/rmpeer`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct RmpeerReply {
    /// The peer's name.
    pub(crate) peer: String,
    /// Addresses taken over.
    pub(crate) addresses: u64,
}

// ---------------------------------------------------------------------------------------
// The CNI plugin's requests and replies (`/cni/*`; the plugin is `crate::cni`)

/// `POST /cni/add`: plug `netns` in as the attachment of (`container_id`, `ifname`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CniAddRequest {
    /// `CNI_CONTAINERID`.
    pub(crate) container_id: String,
    /// `CNI_IFNAME`: the interface made inside.
    pub(crate) ifname: String,
    /// `CNI_NETNS`.
    pub(crate) netns: PathBuf,
    /// The subnet to allocate in (`None`: IPAM's default subnet).
    #[serde(default)]
    pub(crate) subnet: Option<NetSpec>,
    /// A DNS name to register for the address (`NAME.NAMESPACE` of a pod).
    #[serde(default)]
    pub(crate) name: Option<String>,
    /// Addresses a delegated IPAM plugin gave (then nothing is allocated; those inside the
    /// range are claimed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) addresses: Vec<Cidr>,
    /// The gateway that plugin gave (put on the bridge if not there yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) gateway: Option<Cidr>,
    /// The pod's namespace (`K8S_POD_NAMESPACE`), for network policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) namespace: Option<String>,
    /// The pod's labels (`args.cni.labels`), `KEY=VALUE`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) labels: Vec<String>,
}

/// `POST /cni/add`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct CniAddReply {
    /// The attachment as made.
    pub(crate) attachment: Attachment,
    /// The host's address on the subnet: the default route's gateway.
    #[serde(default)]
    pub(crate) gateway: Option<Cidr>,
    /// The interface's MTU.
    #[serde(default)]
    pub(crate) mtu_bytes: u32,
    /// Where its queries should go.
    #[serde(default)]
    pub(crate) dns: DnsArgs,
}

/// `POST /cni/del`: unplug (`container_id`, `ifname`) and free its addresses.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CniDelRequest {
    /// `CNI_CONTAINERID`.
    pub(crate) container_id: String,
    /// `CNI_IFNAME`.
    pub(crate) ifname: String,
}

/// `POST /cni/del`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct CniDelReply {
    /// Whether there was an attachment to remove (false: a repeated DEL).
    pub(crate) removed: bool,
    /// Addresses given back to IPAM.
    pub(crate) freed: u64,
}

/// `POST /cni/check`: does the namespace still hold what ADD gave?
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CniCheckRequest {
    /// `CNI_CONTAINERID`.
    pub(crate) container_id: String,
    /// `CNI_IFNAME`.
    pub(crate) ifname: String,
    /// `CNI_NETNS`.
    pub(crate) netns: PathBuf,
    /// The addresses `prevResult` lists for the interface.
    #[serde(default)]
    pub(crate) addresses: Vec<Cidr>,
    /// The MAC `prevResult` lists for it.
    #[serde(default)]
    pub(crate) mac: Option<String>,
    /// The gateway of the default route `prevResult` lists (the route ADD made).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) default_via: Option<std::net::IpAddr>,
}

/// `POST /cni/check`: every difference found, in words (empty: all as expected).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct CniCheckReply {
    pub(crate) problems: Vec<String>,
}

/// One (container, interface) pair of `cni.dev/valid-attachments`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CniAttachmentKey {
    /// The container id.
    pub(crate) container_id: String,
    /// The interface name.
    pub(crate) ifname: String,
}

/// `POST /cni/gc`: remove every CNI attachment not in `valid`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CniGcRequest {
    pub(crate) valid: Vec<CniAttachmentKey>,
}

/// `POST /cni/gc`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct CniGcReply {
    /// The attachment ids removed.
    pub(crate) removed: Vec<String>,
    /// Addresses given back to IPAM.
    pub(crate) freed: u64,
}

/// `POST /cni/ipam/add` and `/cni/ipam/del`: weft as the IPAM plugin of another plugin
/// (addresses only, owned by (`container_id`, `ifname`); no plumbing).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CniIpamRequest {
    /// `CNI_CONTAINERID`.
    pub(crate) container_id: String,
    /// `CNI_IFNAME`.
    pub(crate) ifname: String,
    /// The subnet to allocate in (`None`: IPAM's default subnet; add only).
    #[serde(default)]
    pub(crate) subnet: Option<NetSpec>,
    /// Also give the subnet's gateway address (for a plugin with `isGateway`; add only).
    #[serde(default)]
    pub(crate) gateway: bool,
}

/// `POST /cni/ipam/add` (`/cni/ipam/del` answers a [`CniDelReply`]).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct CniIpamReply {
    /// The addresses given.
    pub(crate) addresses: Vec<Cidr>,
    /// The gateway, when asked for.
    pub(crate) gateway: Option<Cidr>,
    /// weftDNS, for the result's `dns`.
    pub(crate) dns: DnsArgs,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_refuse_unknown_fields_and_replies_take_defaults() {
        let e = serde_json::from_str::<PeersRequest>(r#"{"peers":[],"extra":1}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
        let s: Summary = serde_json::from_str("{}").unwrap();
        assert_eq!(s.router.name, None);
        assert!(s.datapath.paths.is_empty());
        // The router's and the host's fields sit side by side in one object.
        let s: Summary =
            serde_json::from_str(r#"{"name":"aa:bb:cc:dd:ee:ff","bridge":"weft"}"#).unwrap();
        assert_eq!(s.router.name.as_deref(), Some("aa:bb:cc:dd:ee:ff"));
        assert_eq!(s.bridge.as_deref(), Some("weft"));
    }

    #[test]
    fn optional_fields_are_sent_as_null_and_dns_server_fields_only_when_serving() {
        let t = serde_json::to_value(TargetStatus::default()).unwrap();
        assert!(t["last_error"].is_null() && t.get("last_error").is_some());
        let off = serde_json::to_value(DnsStatus::default()).unwrap();
        assert!(off.get("listen").is_none(), "{off}");
        let on = DnsStatus {
            server: Some(DnsServerStatus::default()),
            ..DnsStatus::default()
        };
        let on = serde_json::to_value(on).unwrap();
        assert!(on["listen"].is_array(), "{on}");
        let back: DnsStatus = serde_json::from_value(on).unwrap();
        assert!(back.server.is_some());
    }

    #[test]
    fn every_error_is_one_line_with_its_status() {
        let cases = [
            (ApiError::NoSuchEndpoint("/x".into()), 404),
            (
                ApiError::WrongMethod {
                    path: "/status",
                    allowed: "GET",
                    got: "POST".into(),
                },
                405,
            ),
            (ApiError::BadBody("expected value\nat line 1".into()), 400),
            (ApiError::Ipam("no free address left".into()), 409),
            (ApiError::Stopping, 503),
            (ApiError::Forbidden("uid 1000 may not".into()), 403),
        ];
        for (e, status) in cases {
            assert_eq!(e.status(), status, "{e}");
            assert!(!e.line().contains('\n'), "{e}");
        }
    }
}
