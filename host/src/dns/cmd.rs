//! The CLI side of weftDNS: `dns-add`, `dns-remove`, `dns-lookup`, `dns-args`,
//! `attach --dns` (a resolv.conf for the namespace) and `status dns` rendering.

use crate::client::Client;
use crate::error::{Error, Result};
use crate::messages::{DnsArgs, DnsLookup, DnsNamingRequest, DnsRemoved, DnsStatus};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// First line of every resolv.conf weft writes (so that only those are removed).
pub(crate) const RESOLV_MARKER: &str = "# written by weft attach --dns";

/// Splits `IP... NAME` words into addresses and at most one name.
pub(crate) fn split_args(args: &[String]) -> Result<(Vec<Ipv4Addr>, Option<String>)> {
    let mut addrs = Vec::new();
    let mut name = None;
    for a in args {
        match a.parse::<Ipv4Addr>() {
            Ok(ip) => addrs.push(ip),
            Err(_) if name.is_none() => name = Some(a.clone()),
            Err(_) => {
                return Err(Error::Other(format!(
                    "more than one name ({} and {a}); give IP... NAME",
                    name.unwrap_or_default()
                )));
            }
        }
    }
    Ok((addrs, name))
}

/// `weft dns-add IP... NAME [--container ID]`.
pub(crate) fn add(client: &Client, args: &[String], container: Option<String>) -> Result<()> {
    let (addrs, name) = split_args(args)?;
    let Some(name) = name else {
        return Err(Error::Other(
            "dns-add needs a NAME after the addresses".into(),
        ));
    };
    if addrs.is_empty() {
        return Err(Error::Other(
            "dns-add needs at least one IPv4 address".into(),
        ));
    }
    let body = DnsNamingRequest {
        name: Some(name),
        addresses: addrs,
        container,
    };
    client.post::<_, crate::messages::DnsAdded>("/dns/add", &body)?;
    Ok(())
}

/// `weft dns-remove [IP...] [NAME] [--container ID]`: prints how many were removed.
pub(crate) fn remove(client: &Client, args: &[String], container: Option<String>) -> Result<()> {
    let (addrs, name) = split_args(args)?;
    let body = DnsNamingRequest {
        name,
        addresses: addrs,
        container,
    };
    let r: DnsRemoved = client.post("/dns/remove", &body)?;
    println!("{}", r.removed);
    Ok(())
}

/// `weft dns-lookup NAME`: one address per line; fails when there is none.
pub(crate) fn lookup(client: &Client, name: &str) -> Result<()> {
    let body = DnsNamingRequest {
        name: Some(name.to_owned()),
        ..DnsNamingRequest::default()
    };
    let r: DnsLookup = client.post("/dns/lookup", &body)?;
    if r.addresses.is_empty() {
        let shown = if r.name.is_empty() { name } else { &r.name };
        return Err(Error::Other(format!(
            "no records for {shown} (see `weft status dns`)"
        )));
    }
    for a in r.addresses {
        println!("{a}");
    }
    Ok(())
}

/// `--dns=IP --dns-search=DOMAIN` from a `/dns/args` reply.
pub(crate) fn args_line(v: &DnsArgs) -> Result<String> {
    let Some(server) = &v.server else {
        return Err(Error::Other(
            "weftDNS is not listening anywhere: give the host an address with `weft expose ADDR/CIDR` (or start the router with --dns-listen-address)".into(),
        ));
    };
    let domain = v.domain.as_deref().unwrap_or_default();
    Ok(format!("--dns={server} --dns-search={domain}"))
}

/// Where the resolv.conf of the namespace at `netns` lives, if weft knows how to reach it.
pub(crate) fn resolv_conf_path(netns: &Path) -> Option<PathBuf> {
    if let Ok(rest) = netns
        .strip_prefix("/var/run/netns")
        .or(netns.strip_prefix("/run/netns"))
    {
        // `ip netns exec NAME` bind-mounts /etc/netns/NAME/resolv.conf over /etc/resolv.conf.
        return Some(Path::new("/etc/netns").join(rest).join("resolv.conf"));
    }
    let s = netns.to_str()?;
    let pid = s.strip_prefix("/proc/")?.strip_suffix("/ns/net")?;
    pid.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| PathBuf::from(format!("/proc/{pid}/root/etc/resolv.conf")))
}

/// The resolv.conf text pointing at weftDNS.
pub(crate) fn resolv_conf_text(server: &str, domain: &str) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "{RESOLV_MARKER}");
    let _ = writeln!(t, "nameserver {server}");
    let _ = writeln!(t, "search {}", domain.trim_end_matches('.'));
    let _ = writeln!(t, "options ndots:1");
    t
}

/// `attach --dns`: writes the namespace's resolv.conf from the `/attach` reply's `dns`.
pub(crate) fn write_resolv_conf(netns: &Path, dns: &DnsArgs) -> Result<PathBuf> {
    let Some(server) = &dns.server else {
        return Err(Error::Other(
            "attached, but weftDNS is not listening anywhere for --dns: `weft expose ADDR/CIDR` first".into(),
        ));
    };
    let Some(path) = resolv_conf_path(netns) else {
        return Err(Error::Other(format!(
            "attached, but --dns does not know where the resolv.conf of {} is; use `weft dns-args`",
            netns.display()
        )));
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(Error::io("create", dir))?;
    }
    let text = resolv_conf_text(server, dns.domain.as_deref().unwrap_or_default());
    std::fs::write(&path, text).map_err(Error::io("write", &path))?;
    Ok(path)
}

/// After a whole detach: removes a resolv.conf weft wrote for `netns` (and its
/// `/etc/netns/NAME` directory when that is left empty).
pub(crate) fn remove_resolv_conf(netns: &Path) {
    let Some(path) = resolv_conf_path(netns) else {
        return;
    };
    if !path.starts_with("/etc/netns") {
        return; // A container's own file system: leave its file alone.
    }
    let ours = std::fs::read_to_string(&path).is_ok_and(|t| t.starts_with(RESOLV_MARKER));
    if ours {
        let _ = std::fs::remove_file(&path);
        if let Some(dir) = path.parent() {
            let _ = std::fs::remove_dir(dir); // Only succeeds when empty.
        }
    }
}

/// `weft status dns` for humans.
pub(crate) fn render_status(v: &DnsStatus) -> String {
    let s = |x: &Option<String>| x.clone().unwrap_or_else(|| "-".to_owned());
    let list = |x: &[String]| {
        if x.is_empty() {
            "-".to_owned()
        } else {
            x.join(", ")
        }
    };
    let no_server = Default::default();
    let srv = v.server.as_ref().unwrap_or(&no_server);
    let mut o = String::new();
    let _ = writeln!(o, "{:>12}: {}", "Domain", s(&v.domain));
    let _ = writeln!(o, "{:>12}: {}", "Listen", list(&srv.listen));
    let _ = writeln!(o, "{:>12}: {}", "Upstreams", list(&srv.upstreams));
    let _ = writeln!(
        o,
        "{:>12}: {} udp, {} tcp; {} answered, {} forwarded ({} failed), {} malformed",
        "Queries",
        srv.queries_udp,
        srv.queries_tcp,
        srv.answered,
        srv.forwarded,
        srv.forward_failed,
        srv.malformed,
    );
    let _ = writeln!(
        o,
        "{:>12}: {} ({} tombstones)",
        "Records",
        v.records.len(),
        v.tombstones
    );
    for r in &v.records {
        let _ = writeln!(
            o,
            "  {:<32} {:<15} {:<17} {}{}",
            s(&r.name),
            s(&r.address),
            s(&r.owner),
            s(&r.container),
            if r.answered {
                ""
            } else {
                " (owner unreachable)"
            }
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_split_into_addresses_and_one_name() {
        let w = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let (a, n) = split_args(&w(&["10.0.0.1", "10.0.0.2", "web"])).unwrap();
        assert_eq!((a.len(), n.as_deref()), (2, Some("web")));
        assert!(split_args(&w(&["a", "b"])).is_err());
    }

    #[test]
    fn resolv_conf_locations() {
        assert_eq!(
            resolv_conf_path(Path::new("/var/run/netns/c1")),
            Some(PathBuf::from("/etc/netns/c1/resolv.conf"))
        );
        assert_eq!(
            resolv_conf_path(Path::new("/proc/42/ns/net")),
            Some(PathBuf::from("/proc/42/root/etc/resolv.conf"))
        );
        assert_eq!(resolv_conf_path(Path::new("/tmp/x")), None);
        let t = resolv_conf_text("10.32.0.1", "weave.local.");
        assert!(
            t.starts_with(RESOLV_MARKER)
                && t.contains("nameserver 10.32.0.1\nsearch weave.local\n")
        );
    }
}
