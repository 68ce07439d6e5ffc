//! `weft service`: exports (a port of this host, reached from outside, forwarded to a
//! container address or a weftDNS name) and imports (an exposed overlay address:port of
//! this host, reached from containers, forwarded to an outside host:port), as NAT rules
//! in an nftables table of weft's own (`ip weft_services_BRIDGE`).
//!
//! What it does: parse the specs, keep the services in `services.json` in the state dir,
//! make the table exactly what they need in one atomic `nft -f` batch (at start, on every
//! change, and whenever a weftDNS target resolves to another address), and delete it at
//! stop (`weft reset` wipes the file too). Return traffic is masqueraded where the path
//! needs it: an exported connection enters the bridge with the host's overlay address as
//! its source, an imported one leaves with the host's outside address, so neither the
//! container nor the outside host needs a route back.
//! The exporting host's own connections to an export are DNATed in the output hook
//! (not those to loopback, nor with `--on IFACE`: they arrive on no interface).
//! What it does not do: touch any other table.

pub(crate) mod serve;

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// The file in the state dir holding the services.
pub(crate) const STATE_FILE: &str = "services.json";
/// Format version of `services.json`.
pub(crate) const STATE_VERSION: u32 = 1;
/// Most services one router carries.
pub(crate) const SERVICES_MAX: usize = 256;
/// How often weftDNS targets are resolved again, in milliseconds.
pub(crate) const RESOLVE_INTERVAL_MS: u64 = 1_000;
/// Longest `--on` interface name (IFNAMSIZ - 1).
const IFNAME_LEN_MAX: usize = 15;

/// TCP or UDP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Proto {
    /// TCP (the default).
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        })
    }
}

fn parse_port(s: &str, what: &str) -> Result<u16, String> {
    match s.parse::<u32>() {
        Ok(p @ 1..=65535) => Ok(p as u16),
        _ => Err(format!("bad {what} {s:?}: a port is 1 to 65535")),
    }
}

fn split_proto(s: &str) -> Result<(&str, Proto), String> {
    match s.rsplit_once('/') {
        None => Ok((s, Proto::Tcp)),
        Some((rest, "tcp")) => Ok((rest, Proto::Tcp)),
        Some((rest, "udp")) => Ok((rest, Proto::Udp)),
        Some((_, p)) => Err(format!("bad protocol {p:?} in {s:?}: tcp or udp")),
    }
}

/// `PORT[/PROTO]` of `service export`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PortProto {
    pub(crate) port: u16,
    pub(crate) proto: Proto,
}

impl FromStr for PortProto {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (port, proto) = split_proto(s)?;
        Ok(Self {
            port: parse_port(port, "port")?,
            proto,
        })
    }
}

/// `[ADDR:]PORT[/PROTO]` of `service import`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AddrPortProto {
    pub(crate) addr: Option<Ipv4Addr>,
    pub(crate) port: u16,
    pub(crate) proto: Proto,
}

impl FromStr for AddrPortProto {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (rest, proto) = split_proto(s)?;
        let (addr, port) = match rest.rsplit_once(':') {
            None => (None, rest),
            Some(("", p)) => (None, p),
            Some((a, p)) => (
                Some(
                    a.parse::<Ipv4Addr>()
                        .map_err(|_| format!("bad address {a:?} in {s:?}: an IPv4 address"))?,
                ),
                p,
            ),
        };
        Ok(Self {
            addr,
            port: parse_port(port, "port")?,
            proto,
        })
    }
}

/// `HOST:PORT` of `--to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HostPort {
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl FromStr for HostPort {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("bad target {s:?}: expected HOST:PORT"))?;
        if host.is_empty()
            || host.len() > 253
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        {
            return Err(format!(
                "bad target {s:?}: HOST is an IPv4 address or a name"
            ));
        }
        Ok(Self {
            host: host.to_owned(),
            port: parse_port(port, "target port")?,
        })
    }
}

/// `--on ADDR|IFACE` of `service export`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum On {
    /// Connections to this address of the host.
    Addr(Ipv4Addr),
    /// Connections arriving on this interface.
    Iface(String),
}

impl FromStr for On {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(a) = s.parse::<Ipv4Addr>() {
            return Ok(Self::Addr(a));
        }
        if s.is_empty()
            || s.len() > IFNAME_LEN_MAX
            || !s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._@".contains(&b))
        {
            return Err(format!(
                "bad --on {s:?}: an IPv4 address of this host or an interface name"
            ));
        }
        Ok(Self::Iface(s.to_owned()))
    }
}

impl fmt::Display for On {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Addr(a) => a.fmt(f),
            Self::Iface(i) => i.fmt(f),
        }
    }
}

/// Export or import.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    /// Outside to a container.
    Export,
    /// A container to outside.
    Import,
}

/// One service, as persisted and listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Service {
    /// Its id (`weft service rm ID`).
    pub(crate) id: String,
    pub(crate) kind: Kind,
    pub(crate) proto: Proto,
    /// Export: the host's port. Import: the port on the overlay address.
    pub(crate) port: u16,
    /// Export: where connections are taken (`None`: any address of the host, from
    /// anywhere but the bridge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) on: Option<On>,
    /// Import: the host's exposed overlay address containers connect to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) addr: Option<Ipv4Addr>,
    /// Where connections go, as given: a container address or weftDNS name (export), an
    /// outside host (import).
    pub(crate) target: String,
    pub(crate) target_port: u16,
    /// What `target` resolves to now (`None`: a weftDNS name with no record yet).
    pub(crate) resolved: Option<Ipv4Addr>,
}

impl Service {
    /// Whether `other` takes the same connections (then it replaces this one).
    pub(crate) fn same_entry(&self, other: &Self) -> bool {
        self.kind == other.kind
            && self.proto == other.proto
            && self.port == other.port
            && self.on == other.on
            && self.addr == other.addr
    }

    /// `10.32.0.1:80/tcp -> 192.0.2.3:8080` (one line of `ls` and `status`).
    pub(crate) fn line(&self) -> String {
        let from = match (self.kind, &self.on, self.addr) {
            (Kind::Import, _, Some(a)) => format!("{a}:{}/{}", self.port, self.proto),
            (_, Some(on), _) => format!("{on}:{}/{}", self.port, self.proto),
            _ => format!("*:{}/{}", self.port, self.proto),
        };
        let at = match self.resolved {
            Some(ip) if ip.to_string() != self.target => format!(" ({ip})"),
            Some(_) => String::new(),
            None => " (unresolved)".into(),
        };
        format!("{from} -> {}:{}{at}", self.target, self.target_port)
    }
}

/// Everything in `services.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Persisted {
    pub(crate) version: u32,
    /// The number in the next id.
    pub(crate) next_id: u64,
    pub(crate) services: Vec<Service>,
}

/// The table of the services of the router on `bridge`.
pub(crate) fn table_name(bridge: &str) -> String {
    let b: String = bridge
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("weft_services_{b}")
}

/// The batch that makes `table` exactly what `services` need (and deletes it when there
/// are none): DNAT in prerouting, masquerade of what was DNATed in postrouting.
pub(crate) fn batch(table: &str, bridge: &str, services: &[Service]) -> String {
    use std::fmt::Write as _;
    let mut out = format!("add table ip {table}\ndelete table ip {table}\n");
    let live: Vec<&Service> = services.iter().filter(|s| s.resolved.is_some()).collect();
    if services.is_empty() {
        return out;
    }
    let _ = writeln!(out, "table ip {table} {{");
    let _ = writeln!(out, "  chain prerouting {{");
    let _ = writeln!(
        out,
        "    type nat hook prerouting priority dstnat; policy accept;"
    );
    for s in &live {
        let Some(to) = s.resolved else { continue };
        let (p, port, tport) = (s.proto, s.port, s.target_port);
        let matched = match (s.kind, &s.on, s.addr) {
            (Kind::Import, _, Some(a)) => format!("iifname \"{bridge}\" ip daddr {a}"),
            (Kind::Import, _, None) => continue,
            (Kind::Export, Some(On::Addr(a)), _) => {
                format!("iifname != \"{bridge}\" ip daddr {a}")
            }
            (Kind::Export, Some(On::Iface(i)), _) => {
                format!("iifname \"{i}\" fib daddr type local")
            }
            (Kind::Export, None, _) => format!("iifname != \"{bridge}\" fib daddr type local"),
        };
        let _ = writeln!(
            out,
            "    {matched} {p} dport {port} dnat to {to}:{tport} comment \"{}\"",
            s.id
        );
    }
    let _ = writeln!(out, "  }}");
    // The host's own connections to an export (they do not pass prerouting); not to
    // loopback, which the kernel does not route to another host.
    let _ = writeln!(out, "  chain output {{");
    let _ = writeln!(
        out,
        "    type nat hook output priority -100; policy accept;"
    );
    for s in live.iter().filter(|s| s.kind == Kind::Export) {
        let Some(to) = s.resolved else { continue };
        let matched = match &s.on {
            Some(On::Addr(a)) => format!("ip daddr {a}"),
            Some(On::Iface(_)) => continue,
            None => "ip daddr != 127.0.0.0/8 fib daddr type local".to_owned(),
        };
        let _ = writeln!(
            out,
            "    {matched} {} dport {} dnat to {to}:{} comment \"{}\"",
            s.proto, s.port, s.target_port, s.id
        );
    }
    let _ = writeln!(out, "  }}");
    let _ = writeln!(out, "  chain postrouting {{");
    let _ = writeln!(
        out,
        "    type nat hook postrouting priority srcnat; policy accept;"
    );
    for s in &live {
        let Some(to) = s.resolved else { continue };
        let out_if = match s.kind {
            Kind::Export => format!("oifname \"{bridge}\""),
            Kind::Import => format!("oifname != \"{bridge}\""),
        };
        let _ = writeln!(
            out,
            "    {out_if} ct status dnat ip daddr {to} {} dport {} masquerade comment \"{}\"",
            s.proto, s.target_port, s.id
        );
    }
    let _ = writeln!(out, "  }}");
    let _ = writeln!(out, "}}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_bad_ones_are_refused_in_one_line() {
        assert_eq!(
            "80".parse::<PortProto>().unwrap(),
            PortProto {
                port: 80,
                proto: Proto::Tcp
            }
        );
        assert_eq!("53/udp".parse::<PortProto>().unwrap().proto, Proto::Udp);
        for bad in ["0", "65536", "80/sctp", "x", ""] {
            let e = bad.parse::<PortProto>().unwrap_err();
            assert!(!e.contains('\n'), "{e}");
        }
        let a: AddrPortProto = "10.32.0.1:8080/udp".parse().unwrap();
        assert_eq!(a.addr, Some(Ipv4Addr::new(10, 32, 0, 1)));
        assert_eq!((a.port, a.proto), (8080, Proto::Udp));
        assert_eq!("80".parse::<AddrPortProto>().unwrap().addr, None);
        assert!("10.32.0:80".parse::<AddrPortProto>().is_err());
        assert!("10.32.0.1:0".parse::<AddrPortProto>().is_err());
        let h: HostPort = "web:80".parse().unwrap();
        assert_eq!((h.host.as_str(), h.port), ("web", 80));
        assert!("web".parse::<HostPort>().is_err());
        assert!("we b:80".parse::<HostPort>().is_err());
        assert!("web:99999".parse::<HostPort>().is_err());
        assert_eq!("eth0".parse::<On>().unwrap(), On::Iface("eth0".into()));
        assert!("a;b".parse::<On>().is_err());
    }

    fn export(id: &str, target: &str, resolved: Option<Ipv4Addr>) -> Service {
        Service {
            id: id.into(),
            kind: Kind::Export,
            proto: Proto::Tcp,
            port: 80,
            on: Some(On::Iface("eth0".into())),
            addr: None,
            target: target.into(),
            target_port: 8080,
            resolved,
        }
    }

    #[test]
    fn the_batch_touches_only_its_table_and_skips_unresolved_names() {
        let ip = Ipv4Addr::new(10, 32, 1, 1);
        let mut imp = export("i2", "192.0.2.9", Some(Ipv4Addr::new(192, 0, 2, 9)));
        imp.kind = Kind::Import;
        imp.on = None;
        imp.addr = Some(Ipv4Addr::new(10, 32, 0, 1));
        imp.proto = Proto::Udp;
        let b = batch(
            "weft_services_weft",
            "weft",
            &[
                export("e1", "10.32.1.1", Some(ip)),
                export("e3", "web", None),
                imp,
            ],
        );
        for line in b.lines().filter(|l| l.starts_with(char::is_alphabetic)) {
            assert!(line.contains("weft_services_weft"), "{line}");
        }
        assert!(
            b.contains("iifname \"eth0\" fib daddr type local tcp dport 80 dnat to 10.32.1.1:8080")
        );
        assert!(
            b.contains("iifname \"weft\" ip daddr 10.32.0.1 udp dport 80 dnat to 192.0.2.9:8080")
        );
        assert!(b.contains(
            "oifname \"weft\" ct status dnat ip daddr 10.32.1.1 tcp dport 8080 masquerade"
        ));
        assert!(b.contains(
            "oifname != \"weft\" ct status dnat ip daddr 192.0.2.9 udp dport 8080 masquerade"
        ));
        assert!(!b.contains("\"e3\""), "{b}");
        // The host's own connections: only exports, not by interface.
        let output = b.split("chain output").nth(1).unwrap();
        let output = output.split("chain postrouting").next().unwrap();
        assert!(!output.contains("dnat"), "{output}");
        let mut any = export("e4", "10.32.1.1", Some(ip));
        any.on = None;
        let b = batch("t", "weft", &[any]);
        assert!(b.contains(
            "ip daddr != 127.0.0.0/8 fib daddr type local tcp dport 80 dnat to 10.32.1.1:8080"
        ));
        assert!(b.contains("iifname != \"weft\" fib daddr type local tcp dport 80 dnat"));
        assert_eq!(
            batch("t", "weft", &[]),
            "add table ip t\ndelete table ip t\n"
        );
    }
}
