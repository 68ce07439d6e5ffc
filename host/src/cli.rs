//! The command line: every command and flag of `weft`, parsed with clap.
//!
//! What it does: define the arguments (with the help text users read) and the small
//! value types they parse into (peer addresses, address/prefix pairs, peer names).
//! What it does not do: act on them; see `main.rs` (dispatch), `client.rs` (talks to the
//! daemon) and `daemon.rs` (runs the router).

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use weft_core::peer::PeerName;

/// The TCP (control) and UDP (sleeve) port, unless moved with `--port` / `WEFT_PORT`.
pub(crate) const PORT_DEFAULT: u16 = 6783;
/// Where the control socket lives unless moved with `--socket` / `WEFT_SOCKET`.
pub(crate) const SOCKET_DEFAULT: &str = "/run/weft/weft.sock";
/// Where the router keeps its peer name and attachments unless moved with `--state-dir`.
pub(crate) const STATE_DIR_DEFAULT: &str = "/var/lib/weft";
/// MTU of the bridge and the veths plugged into it: room for the sleeve's UDP and crypto
/// overhead inside a 1500-byte underlay.
pub(crate) const MTU_DEFAULT: u32 = 1376;

/// weft: a container overlay network. Every host runs one router; routers find each
/// other, gossip, and together form one virtual Ethernet switch.
#[derive(Debug, Parser)]
#[command(name = "weft", version, propagate_version = true, max_term_width = 100)]
pub(crate) struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub(crate) global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Options shared by all commands.
#[derive(Debug, Args)]
pub(crate) struct GlobalArgs {
    /// The router's control socket (one per router; tests run several routers on one machine).
    #[arg(long, global = true, env = "WEFT_SOCKET", default_value = SOCKET_DEFAULT, value_name = "PATH")]
    pub(crate) socket: PathBuf,
    /// Directory for the router's peer name, attachments and log.
    #[arg(long, global = true, default_value = STATE_DIR_DEFAULT, value_name = "DIR")]
    pub(crate) state_dir: PathBuf,
    /// Log more (debug level); also prints error causes in full.
    #[arg(long, short, global = true)]
    pub(crate) verbose: bool,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Start the router in the background, wait until it answers, print its peer name.
    Launch(RouterArgs),
    /// Run the router in the foreground (for systemd and tests); same options as `launch`.
    Router(RouterArgs),
    /// Stop the router.
    Stop,
    /// Add peers to connect to (host or host:port; the router's port by default).
    Connect {
        /// Peers as HOST or HOST:PORT.
        #[arg(required = true, value_name = "PEER")]
        peers: Vec<PeerAddr>,
    },
    /// Stop connecting to peers added with `launch` or `connect`, and drop their connections.
    Forget {
        /// Peers as HOST or HOST:PORT, as they were added.
        #[arg(required = true, value_name = "PEER")]
        peers: Vec<PeerAddr>,
    },
    /// Show what the router knows.
    Status {
        /// Which part: peers, connections or targets (a summary when omitted).
        #[arg(value_enum)]
        what: Option<StatusWhat>,
        /// Print JSON exactly as the control API returns it.
        #[arg(long)]
        json: bool,
    },
    /// Plug a network namespace into the overlay: a veth `ethwe` inside with these
    /// addresses; prints the addresses given.
    Attach {
        /// Addresses with prefix (10.32.0.5/12; claimed when inside --ipalloc-range),
        /// `net:default` or `net:CIDR` (allocate one there). None: one from the default subnet.
        #[arg(value_name = "ADDR/CIDR | net:default | net:CIDR")]
        addresses: Vec<crate::ipam::AttachAddr>,
        /// Which namespace.
        #[command(flatten)]
        target: NetnsTarget,
        /// Register the IPv4 addresses in weftDNS under this name (`web` means
        /// `web.weave.local.`); removed again on detach.
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// Point the namespace's resolver at weftDNS: writes /etc/netns/NAME/resolv.conf
        /// (for `--netns /var/run/netns/NAME`) or /proc/PID/root/etc/resolv.conf (`--pid`).
        #[arg(long)]
        dns: bool,
        /// Network policy: the attachment's namespace (default `default`).
        #[arg(long, value_name = "NS")]
        namespace: Option<String>,
        /// Network policy: a label of the attachment (repeatable).
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// Network policy: a named port (repeatable), e.g. http=80/tcp.
        #[arg(long = "port", value_name = "NAME=PORT/PROTO")]
        ports: Vec<String>,
    },
    /// Change an attachment's network policy labels: KEY=VALUE sets, KEY- removes.
    Label {
        /// Which namespace.
        #[command(flatten)]
        target: NetnsTarget,
        /// Changes, e.g. app=web tier-.
        #[arg(required_unless_present = "namespace", value_name = "KEY=VALUE | KEY-")]
        changes: Vec<String>,
        /// Also move it to this policy namespace.
        #[arg(long, value_name = "NS")]
        namespace: Option<String>,
    },
    /// Network policy: Kubernetes NetworkPolicy (networking.k8s.io/v1) objects, held by
    /// every router and enforced by each for its own attachments (nftables table
    /// `inet weft-policy`).
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Remove addresses from an attachment, or the whole attachment when none are given.
    Detach {
        /// Addresses to remove (all of the attachment when omitted).
        #[arg(value_name = "ADDR/CIDR")]
        addresses: Vec<Cidr>,
        /// Which namespace.
        #[command(flatten)]
        target: NetnsTarget,
    },
    /// List attachments: id, interface, MAC, addresses.
    Ps {
        /// Print JSON exactly as the control API returns it.
        #[arg(long)]
        json: bool,
    },
    /// Give this host addresses on the overlay (on the `weft` bridge) and prints them;
    /// weftDNS listens on them (port 53). Without an address, one of the default subnet
    /// from IPAM; `weft hide` gives it back.
    #[command(disable_help_flag = true)]
    Expose {
        /// Addresses with prefix (10.32.0.1/12, used as given), `net:default` or
        /// `net:CIDR` (allocate one there). None: one from the default subnet.
        #[arg(value_name = "ADDR/CIDR | net:default | net:CIDR")]
        addresses: Vec<crate::ipam::AttachAddr>,
        /// Register the host in weftDNS under this name.
        #[arg(short = 'h', long = "fqdn", value_name = "FQDN")]
        fqdn: Option<String>,
        /// Print help.
        #[arg(long, action = clap::ArgAction::Help)]
        help: Option<bool>,
    },
    /// Add weftDNS records: `IP... NAME` (a bare NAME gets the domain appended).
    DnsAdd {
        /// One or more IPv4 addresses, then the name.
        #[arg(required = true, num_args = 2.., value_name = "IP... NAME")]
        args: Vec<String>,
        /// The container the records belong to (default: none, `weft:extern`).
        #[arg(long, value_name = "ID")]
        container: Option<String>,
    },
    /// Remove weftDNS records this router added: `[IP...] [NAME]` (at least one).
    DnsRemove {
        /// Addresses and/or the name.
        #[arg(required = true, value_name = "[IP...] [NAME]")]
        args: Vec<String>,
        /// Only records of this container.
        #[arg(long, value_name = "ID")]
        container: Option<String>,
    },
    /// Print the addresses weftDNS answers for NAME, one per line.
    DnsLookup {
        /// The name (a bare NAME gets the domain appended).
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Print `--dns=IP --dns-search=DOMAIN` for a container engine's run command.
    DnsArgs,
    /// Print the line that points the Docker CLI at the router's Docker API proxy:
    /// `eval $(weft env)`, then every `docker run` lands on weft.
    Env {
        /// Print the line that undoes it (DOCKER_HOST as it was before).
        #[arg(long)]
        restore: bool,
    },
    /// Remove the addresses `expose` gave this host.
    Hide,
    /// Take over the address space of a peer that is gone for good (run on one peer only).
    Rmpeer {
        /// Its peer name (aa:bb:cc:dd:ee:ff, see `weft status ipam`) or nickname.
        #[arg(value_name = "PEER")]
        peer: String,
    },
    /// Stop the router and wipe its state: attachments, bridge, peer name.
    Reset,
    /// Write a new random 256-bit network key (64 hex digits, mode 0600) for `--key-file`.
    /// Copy the same file to every host. Never overwrites an existing file.
    Keygen {
        /// Where to write it, e.g. /etc/weft/network.key.
        #[arg(value_name = "PATH")]
        path: PathBuf,
    },
    /// The CNI plugin `weft` (a runtime runs `/opt/cni/bin/weft` with no arguments and
    /// `CNI_*` set: then this binary is the plugin).
    #[command(subcommand)]
    Cni(CniCommand),
    /// Services: export a container's port to the outside world, import an outside
    /// service into the overlay (nftables NAT rules in weft's own table, kept across
    /// restarts, removed by `weft reset`).
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Print a shell completion script to stdout.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// `weft policy ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum PolicyCommand {
    /// Apply NetworkPolicy and Namespace objects (YAML or JSON; several documents, a
    /// `List`, or every *.yaml/*.yml/*.json file of a directory): all or nothing.
    Apply {
        /// A file, a directory or `-` (stdin); repeatable.
        #[arg(
            short = 'f',
            long = "filename",
            required = true,
            value_name = "FILE|DIR|-"
        )]
        files: Vec<PathBuf>,
    },
    /// Delete a NetworkPolicy.
    Delete {
        /// Its name.
        #[arg(value_name = "NAME")]
        name: String,
        /// Its namespace.
        #[arg(short = 'n', long, default_value = "default", value_name = "NS")]
        namespace: String,
    },
    /// List the policies: what they isolate, their rules, this host's pods they select
    /// and the packets they blocked here.
    Ls {
        /// Print JSON exactly as the control API returns it.
        #[arg(long)]
        json: bool,
    },
    /// Say whether a new connection from SRC to DST on PORT/PROTO is allowed, and by
    /// which policy and rule (or which policies isolate it).
    Explain {
        /// Source address.
        #[arg(value_name = "SRC")]
        src: std::net::Ipv4Addr,
        /// Destination address.
        #[arg(value_name = "DST")]
        dst: std::net::Ipv4Addr,
        /// Port and protocol: 80/tcp, 53/udp, 80 (tcp), icmp.
        #[arg(value_name = "PORT/PROTO")]
        port: String,
    },
}

/// `weft service ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum ServiceCommand {
    /// Connections from outside to this host's PORT reach TARGET:PORT, a container address
    /// or a weftDNS name (resolved again when its records change). Prints the id. The
    /// host needs an exposed address on TARGET's subnet. From this host itself it is
    /// reached on its own addresses (not on 127.0.0.1, nor with `--on IFACE`).
    Export {
        /// The host's port, e.g. 80 or 53/udp.
        #[arg(value_name = "PORT[/PROTO]")]
        spec: crate::services::PortProto,
        /// Where connections go.
        #[arg(long, value_name = "TARGET:PORT")]
        to: crate::services::HostPort,
        /// Only connections to this address of the host, or arriving on this interface.
        #[arg(long, value_name = "ADDR|IFACE")]
        on: Option<crate::services::On>,
    },
    /// Connections from any container to the overlay address ADDR:PORT (an exposed
    /// address of this host; omitted: the first one, allocated if there is none) reach
    /// HOST:PORT outside, which this host can reach. Prints the id and ADDR:PORT. Again
    /// with the same ADDR:PORT re-points it.
    Import {
        /// The overlay address and port, e.g. 10.32.0.1:80 or 5432 or 10.32.0.1:53/udp.
        #[arg(value_name = "[ADDR:]PORT[/PROTO]")]
        spec: crate::services::AddrPortProto,
        /// The outside host and port.
        #[arg(long, value_name = "HOST:PORT")]
        to: crate::services::HostPort,
    },
    /// List the services: id, kind, what goes where.
    Ls {
        /// Print JSON exactly as the control API returns it.
        #[arg(long)]
        json: bool,
    },
    /// Remove a service.
    Rm {
        /// Its id (`weft service ls`).
        #[arg(value_name = "ID")]
        id: String,
    },
}

/// `weft cni ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum CniCommand {
    /// Copy this weft to the CNI bin dir as the plugin `weft` and write `10-weft.conflist`
    /// (network `weft`: plugin `weft` asking the router on --socket, then `portmap`).
    Install {
        /// Where runtimes look for plugins.
        #[arg(long, default_value = crate::cni::install::BIN_DIR_DEFAULT, value_name = "DIR")]
        bin_dir: PathBuf,
        /// Where runtimes look for network configurations.
        #[arg(long, default_value = crate::cni::install::CONF_DIR_DEFAULT, value_name = "DIR")]
        conf_dir: PathBuf,
    },
}

/// Options of `launch` and `router`.
#[derive(Debug, Args, Clone)]
pub(crate) struct RouterArgs {
    /// Peers to connect to, as HOST or HOST:PORT.
    #[arg(value_name = "PEER")]
    pub(crate) peers: Vec<PeerAddr>,
    /// Password shared by all peers; every connection runs a SPAKE2 handshake with it
    /// (a recorded handshake cannot be used to guess it) and all control and sleeve
    /// traffic is sealed. Without a password or key file nothing is authenticated or
    /// encrypted: anyone who reaches the port can join. The command line wins over
    /// WEFT_PASSWORD.
    #[arg(
        long,
        env = "WEFT_PASSWORD",
        hide_env_values = true,
        value_name = "PASSWORD",
        conflicts_with = "key_file"
    )]
    pub(crate) password: Option<String>,
    /// A 256-bit key file made by `weft keygen`, the same on every peer, instead of a
    /// password. Must not be readable by group or others.
    #[arg(long, env = "WEFT_KEY_FILE", value_name = "PATH")]
    pub(crate) key_file: Option<PathBuf>,
    /// TCP (control) and UDP (sleeve) port to listen on and to dial peers at.
    #[arg(long, env = "WEFT_PORT", default_value_t = PORT_DEFAULT)]
    pub(crate) port: u16,
    /// This router's peer name (like a MAC address). Default: random, kept in the state dir.
    #[arg(long, value_name = "aa:bb:cc:dd:ee:ff", value_parser = parse_peer_name)]
    pub(crate) name: Option<PeerName>,
    /// A human name shown in status. Default: the host name.
    #[arg(long, value_name = "NICKNAME")]
    pub(crate) nickname: Option<String>,
    /// AEAD for sealed sleeve datagrams: `auto` offers AES-256-GCM where this CPU has
    /// AES-NI and PCLMULQDQ (used with peers that offer it too) and ChaCha20-Poly1305
    /// always; the others pin one (peers must offer it). `weft status connections` shows
    /// each link's.
    #[arg(long, env = "WEFT_CIPHER", value_enum, default_value_t = crate::cipher::CipherChoice::Auto)]
    pub(crate) cipher: crate::cipher::CipherChoice,
    /// Threads that seal and open sleeve datagrams when a password is set: the datapath
    /// thread plus helpers that share each batch with it (1: no helpers).
    /// Default: half the CPUs this process may run on, at least 1, at most 4.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=16))]
    pub(crate) crypto_threads: Option<u16>,
    /// Sleeve queues: a multi-queue TAP and one SO_REUSEPORT UDP socket per queue, each
    /// pumped by its own thread in both directions (flows spread over the queues, each
    /// packet stays on one core). Default: one per CPU this process may run on, at most 8.
    #[arg(long, env = "WEFT_QUEUES", value_name = "N", value_parser = clap::value_parser!(u16).range(1..=8))]
    pub(crate) queues: Option<u16>,
    /// Do not use the kernel fast datapath; carry all traffic over the sleeve.
    #[arg(long)]
    pub(crate) no_fastdp: bool,
    /// Strict subnet isolation: a container may send only from its own addresses (IPv4
    /// and ARP, checked on the bridge), and no connection opens between two different
    /// subnets of this host's containers, whichever end starts it.
    #[arg(long, env = "WEFT_ISOLATE_SUBNETS")]
    pub(crate) isolate_subnets: bool,
    /// MTU of the `weft` bridge and of attached veths.
    #[arg(long, default_value_t = MTU_DEFAULT, value_parser = clap::value_parser!(u32).range(576..=65535))]
    pub(crate) mtu: u32,
    /// Name of the bridge containers are plugged into.
    #[arg(long, default_value = "weft", value_name = "IFNAME")]
    pub(crate) bridge: String,
    /// Do not run weftDNS (records are still replicated for the other peers).
    #[arg(long)]
    pub(crate) no_dns: bool,
    /// The domain weftDNS answers for.
    #[arg(long, default_value = crate::dns::DOMAIN_DEFAULT, value_name = "DOMAIN")]
    pub(crate) dns_domain: String,
    /// Where weftDNS forwards other names (repeatable); default: the nameservers of the
    /// host's /etc/resolv.conf.
    #[arg(long, value_name = "IP[:PORT]", value_parser = crate::dns::upstream::parse_upstream)]
    pub(crate) dns_upstream: Vec<std::net::SocketAddr>,
    /// Also answer DNS on this address (repeatable; port 53 by default). weftDNS always
    /// listens on the addresses `weft expose` gives the host.
    #[arg(long, value_name = "IP[:PORT]", value_parser = crate::dns::upstream::parse_upstream)]
    pub(crate) dns_listen_address: Vec<std::net::SocketAddr>,
    /// The range container addresses are allocated from.
    #[arg(long, value_name = "CIDR", value_parser = crate::ipam::parse_block)]
    pub(crate) ipalloc_range: Option<weft_core::ipam::Cidr>,
    /// How the range is first split: `consensus=N` (N = number of initial peers; default:
    /// the peers given here plus one) or `observer` (never seeds, takes space from others).
    #[arg(long, value_name = "consensus=N | observer", value_parser = crate::ipam::parse_init)]
    pub(crate) ipalloc_init: Option<weft_core::ipam::InitMode>,
    /// Where `attach` without an address allocates (default: the whole range).
    #[arg(long, value_name = "CIDR", value_parser = crate::ipam::parse_block)]
    pub(crate) ipalloc_default_subnet: Option<weft_core::ipam::Cidr>,
    /// Take over the space of a peer unreachable this long (e.g. 10m; off by default).
    #[arg(long, value_name = "DURATION", value_parser = crate::ipam::parse_duration)]
    pub(crate) ipalloc_reclaim_after: Option<std::time::Duration>,
    /// Serve the Docker network and IPAM driver on this socket; the driver's name is the
    /// file's name without `.sock` (`docker network create -d weft --ipam-driver weft`).
    /// A path another live process serves is left to it (the router runs without).
    #[arg(long, value_name = "PATH", default_value = crate::docker::SOCKET_DEFAULT, value_parser = parse_plugin_socket)]
    pub(crate) plugin_socket: PathBuf,
    /// Do not serve the Docker plugin.
    #[arg(long)]
    pub(crate) no_plugin: bool,
    /// Serve the Docker API proxy on this socket, in front of --docker-socket: with
    /// `eval $(weft env)`, `docker run` plugs every container into weft before its first
    /// process runs (its addresses from `-e WEFT_CIDR=...`, one from IPAM by default).
    /// On when Docker answers at start; a path another live process serves is left to it.
    #[arg(long, value_name = "PATH", default_value = crate::docker::proxy::SOCKET_DEFAULT)]
    pub(crate) proxy_socket: PathBuf,
    /// Do not serve the Docker API proxy.
    #[arg(long)]
    pub(crate) no_proxy: bool,
    /// The Docker Engine's API socket. When Docker answers there at start, the router makes
    /// the network named after the driver if Docker has none of that name.
    #[arg(long, value_name = "PATH", default_value = crate::docker::DOCKER_SOCKET_DEFAULT)]
    pub(crate) docker_socket: PathBuf,
    /// How long `attach` waits for an address before it fails (at most 80s).
    #[arg(long, value_name = "DURATION", default_value = crate::ipam::REQUEST_TIMEOUT_DEFAULT, value_parser = crate::ipam::parse_timeout)]
    pub(crate) ipalloc_timeout: std::time::Duration,
}

/// `--netns PATH | --pid PID`: exactly one.
#[derive(Debug, Args, Clone)]
#[group(required = true, multiple = false)]
pub(crate) struct NetnsTarget {
    /// The namespace file, e.g. /var/run/netns/NAME.
    #[arg(long, value_name = "PATH")]
    pub(crate) netns: Option<PathBuf>,
    /// A process in the namespace (its /proc/PID/ns/net is used).
    #[arg(long, value_name = "PID")]
    pub(crate) pid: Option<u32>,
}

impl NetnsTarget {
    /// The namespace file this target names.
    pub(crate) fn path(&self) -> PathBuf {
        match (&self.netns, self.pid) {
            (Some(p), _) => p.clone(),
            (None, Some(pid)) => PathBuf::from(format!("/proc/{pid}/ns/net")),
            // clap's group makes one of the two required.
            (None, None) => PathBuf::from("/proc/self/ns/net"),
        }
    }
}

/// Parts of `weft status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum StatusWhat {
    /// Every peer in the topology and its connections.
    Peers,
    /// This router's connections: peer, address, direction, state, encryption.
    Connections,
    /// Addresses the router tries to stay connected to, and why the last attempt failed.
    Targets,
    /// weftDNS: domain, listen addresses, upstreams, records, counters.
    Dns,
    /// Address management: each peer's share of the range, free space, unreachable owners.
    Ipam,
    /// Network policy: what is loaded, the table, packets each rule allowed and blocked.
    Policy,
}

impl StatusWhat {
    /// The control API path for this part.
    pub(crate) fn path(self) -> &'static str {
        match self {
            Self::Peers => "/status/peers",
            Self::Connections => "/status/connections",
            Self::Targets => "/status/targets",
            Self::Dns => "/status/dns",
            Self::Ipam => "/status/ipam",
            Self::Policy => "/status/policy",
        }
    }
}

fn parse_plugin_socket(s: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(s);
    crate::docker::driver_name(&p)?;
    Ok(p)
}

fn parse_peer_name(s: &str) -> Result<PeerName, String> {
    s.parse::<PeerName>().map_err(|e| e.to_string())
}

/// A peer as the user writes it: `host`, `host:port`, `1.2.3.4`, `[fd00::1]:6783`, `fd00::1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PeerAddr {
    /// Host name or address (without brackets).
    pub(crate) host: String,
    /// The port, when given.
    pub(crate) port: Option<u16>,
}

impl PeerAddr {
    /// `host:port` for resolving, with `default_port` when none was given.
    pub(crate) fn with_default_port(&self, default_port: u16) -> String {
        let port = self.port.unwrap_or(default_port);
        if self.host.contains(':') {
            format!("[{}]:{port}", self.host)
        } else {
            format!("{}:{port}", self.host)
        }
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.port, self.host.contains(':')) {
            (Some(p), true) => write!(f, "[{}]:{p}", self.host),
            (Some(p), false) => write!(f, "{}:{p}", self.host),
            (None, _) => f.write_str(&self.host),
        }
    }
}

impl FromStr for PeerAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!("bad peer {s:?}: expected HOST or HOST:PORT, e.g. 192.168.1.2 or node-b:6783")
        };
        if s.is_empty() || s.len() > 255 {
            return Err(bad());
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Self {
                host: ip.to_string(),
                port: None,
            });
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(bad)?;
            host.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(bad)?),
            };
            (host, port)
        } else {
            match s.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            }
        };
        let port = match port {
            Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad)?),
            None => None,
        };
        let host_ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b))
            && !host.starts_with('-');
        if !host_ok {
            return Err(bad());
        }
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

/// An address with a prefix length, as put on an interface: `10.32.0.5/12`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Cidr {
    /// The address.
    pub(crate) addr: IpAddr,
    /// Prefix length in bits.
    pub(crate) prefix_len: u8,
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("bad address {s:?}: expected ADDRESS/PREFIX like 10.32.0.5/12");
        let (addr, len) = s.split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let prefix_len: u8 = len.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix_len > max {
            return Err(format!(
                "bad address {s:?}: prefix /{prefix_len} is longer than {max} bits"
            ));
        }
        if addr.is_unspecified() || addr.is_multicast() {
            return Err(format!("bad address {s:?}: not a unicast host address"));
        }
        Ok(Self { addr, prefix_len })
    }
}

impl serde::Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Crypto threads when `--crypto-threads` is not given: half the CPUs this process may
/// run on, at least 1 and at most 4. The rest is left to the containers that make the
/// traffic and the kernel that carries it: on a 2-core host busy with both, a helper
/// thread cost ~10 % (`benches --bin throughput`, row sleeve-enc-2t).
pub(crate) fn crypto_threads_default() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).clamp(1, 4))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("weft").chain(args.iter().copied()))
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn queues_are_taken_from_1_to_8_and_default_to_none() {
        let queues = |args: &[&str]| match parse(args).map(|c| c.command) {
            Ok(Command::Launch(r) | Command::Router(r)) => Ok(r.queues),
            Ok(_) => panic!("not launch or router"),
            Err(e) => Err(e.kind()),
        };
        assert_eq!(queues(&["launch", "--queues", "3"]), Ok(Some(3)));
        assert_eq!(queues(&["router", "--queues", "8"]), Ok(Some(8)));
        assert_eq!(
            queues(&["router"]).map(|q| q.is_none() || std::env::var_os("WEFT_QUEUES").is_some()),
            Ok(true)
        );
        for bad in ["0", "9", "two"] {
            assert!(
                queues(&["launch", "--queues", bad]).is_err(),
                "--queues {bad}"
            );
        }
    }

    #[test]
    fn launch_takes_peers_and_options() {
        let cli = parse(&[
            "launch",
            "10.0.0.2",
            "node-b:7000",
            "--port",
            "7001",
            "--name",
            "0a:1b:2c:3d:4e:5f",
            "--password",
            "pw",
            "--no-fastdp",
            "--socket",
            "/tmp/w.sock",
        ])
        .unwrap();
        assert_eq!(cli.global.socket, PathBuf::from("/tmp/w.sock"));
        let Command::Launch(r) = cli.command else {
            panic!("not launch");
        };
        assert_eq!(r.port, 7001);
        assert_eq!(r.password.as_deref(), Some("pw"));
        assert!(r.no_fastdp);
        assert_eq!(r.name.unwrap().to_string(), "0a:1b:2c:3d:4e:5f");
        assert_eq!(r.peers[0].with_default_port(r.port), "10.0.0.2:7001");
        assert_eq!(r.peers[1].with_default_port(r.port), "node-b:7000");
        assert_eq!(r.mtu, MTU_DEFAULT);
        assert_eq!(r.cipher, crate::cipher::CipherChoice::Auto);
    }

    #[test]
    fn cipher_takes_its_three_names_only() {
        for (arg, want) in [
            ("auto", crate::cipher::CipherChoice::Auto),
            (
                "chacha20-poly1305",
                crate::cipher::CipherChoice::ChaCha20Poly1305,
            ),
            ("aes-256-gcm", crate::cipher::CipherChoice::Aes256Gcm),
        ] {
            let cli = parse(&["router", "--cipher", arg]).unwrap();
            let Command::Router(r) = cli.command else {
                panic!("not router");
            };
            assert_eq!(r.cipher, want);
        }
        assert!(parse(&["router", "--cipher", "aes-128-gcm"]).is_err());
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(parse(&["router", "--name", "nope"]).is_err());
        assert!(parse(&["router", "--port", "70000"]).is_err());
        assert!(parse(&["router", "host:0"]).is_err());
        assert!(parse(&["router", "-bad"]).is_err());
        assert!(parse(&["connect"]).is_err(), "connect needs a peer");
        assert!(
            parse(&["attach", "10.0.0.1", "--pid", "1"]).is_err(),
            "prefix missing"
        );
        assert!(parse(&["attach", "10.0.0.1/33", "--pid", "1"]).is_err());
        assert!(
            parse(&["attach", "10.0.0.1/24"]).is_err(),
            "needs --netns or --pid"
        );
        assert!(
            parse(&["attach", "10.0.0.1/24", "--pid", "1", "--netns", "/x"]).is_err(),
            "not both"
        );
        assert!(parse(&["status", "bogus"]).is_err());
    }

    #[test]
    fn attach_and_detach_resolve_the_namespace() {
        let cli = parse(&["attach", "10.32.0.5/12", "fd00::5/64", "--pid", "42"]).unwrap();
        let Command::Attach {
            addresses, target, ..
        } = cli.command
        else {
            panic!("not attach");
        };
        assert_eq!(addresses.len(), 2);
        assert_eq!(addresses[1].to_string(), "fd00::5/64");
        assert_eq!(target.path(), PathBuf::from("/proc/42/ns/net"));
        let cli = parse(&["detach", "--netns", "/var/run/netns/a"]).unwrap();
        let Command::Detach { addresses, target } = cli.command else {
            panic!("not detach");
        };
        assert!(addresses.is_empty());
        assert_eq!(target.path(), PathBuf::from("/var/run/netns/a"));
    }

    #[test]
    fn status_parts_and_json() {
        let cli = parse(&["status", "connections", "--json"]).unwrap();
        match cli.command {
            Command::Status { what, json } => {
                assert_eq!(what, Some(StatusWhat::Connections));
                assert!(json);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn peer_addresses() {
        let p: PeerAddr = "[fd00::1]:7000".parse().unwrap();
        assert_eq!((p.host.as_str(), p.port), ("fd00::1", Some(7000)));
        assert_eq!(p.with_default_port(1), "[fd00::1]:7000");
        let p: PeerAddr = "fd00::1".parse().unwrap();
        assert_eq!(p.with_default_port(6783), "[fd00::1]:6783");
        for bad in [
            "", ":80", "a:b", "a:99999", "[fd00::1", "[x]:1", "a b", "-x",
        ] {
            assert!(bad.parse::<PeerAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn cidr_parse() {
        let c: Cidr = "10.32.0.5/12".parse().unwrap();
        assert_eq!(c.prefix_len, 12);
        for bad in [
            "10.32.0.5",
            "10.32.0.5/",
            "10.32.0.5/x",
            "0.0.0.0/0",
            "224.0.0.1/4",
            "1.2.3.4/+1",
            "::1/129",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, "\"10.32.0.5/12\"");
        assert_eq!(serde_json::from_str::<Cidr>(&json).unwrap(), c);
    }
}
