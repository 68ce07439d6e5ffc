//! weft as a CNI plugin (spec 0.3.1, 0.4.0, 1.0.0 and 1.1.0): the plugin process
//! (`plugin`: stdin and environment in, the spec's result or error out), its conf
//! (`spec`) and result (`result`) types, the router's side (`server`: `/cni/*` on the control socket)
//! and `weft cni install` (`install`).
//!
//! The `weft` binary is the plugin when it is started with no arguments and a `CNI_*`
//! variable (`CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME` or `CNI_PATH`) in
//! its environment, which is how runtimes run `/opt/cni/bin/weft` (the file
//! `weft cni install` copies there); `weft CMD ...` with arguments is always the CLI.
//! The plugin only translates: the router makes the veth, takes the address from weft
//! IPAM (owned by (container id, ifname)), sets the gateway and the DNS name.
//! Under another plugin (`"ipam": {"type": "weft"}` in, e.g., a `bridge` conf) it is an
//! IPAM plugin only: addresses from weft IPAM, the plumbing that plugin's.
//! With `"ipam": {"type": PLUGIN}` it runs that IPAM plugin for the addresses and plumbs
//! them (`delegate`).

pub(crate) mod delegate;
pub(crate) mod install;
pub(crate) mod plugin;
pub(crate) mod result;
pub(crate) mod server;
pub(crate) mod spec;

use crate::plumbing::CNI_ID_PREFIX;
use std::path::{Path, PathBuf};

/// The spool directory's name, beside the control socket: DELs recorded while the router
/// did not answer, one `<attachment id>.json` each, carried out when it is back.
pub(crate) const SPOOL_DIR_NAME: &str = "cni-del";
/// Largest spooled DEL read, in bytes.
pub(crate) const SPOOL_FILE_LEN_MAX: u64 = 4096;
/// Most spooled DELs carried out in one pass.
pub(crate) const SPOOL_FILES_MAX: usize = 4096;
/// Longest container id accepted, in bytes (runtimes use 64 hex digits).
pub(crate) const CONTAINER_ID_LEN_MAX: usize = 256;
/// Longest interface name, in bytes (IFNAMSIZ less the NUL).
pub(crate) const IFNAME_LEN_MAX: usize = 15;
/// First characters of an IPAM-only owner (weft as another plugin's IPAM).
pub(crate) const IPAM_OWNER_PREFIX: &str = "cnip-";
/// Hex digits of the (container id, ifname) hash in an attachment id.
pub(crate) const OWNER_HASH_HEX_LEN: usize = 32;

/// Where DELs are spooled for the router whose control socket is `socket`.
pub(crate) fn spool_dir(socket: &Path) -> PathBuf {
    socket
        .parent()
        .unwrap_or_else(|| Path::new("/"))
        .join(SPOOL_DIR_NAME)
}

/// The attachment id and IPAM owner of (`container_id`, `ifname`):
/// `cni-<first 32 hex digits of SHA-256(container_id NUL ifname)>`, short enough for an
/// IPAM owner and for the host end's name (`vwc` and 12 of the digits).
pub(crate) fn owner_id(container_id: &str, ifname: &str) -> String {
    hashed_id(CNI_ID_PREFIX, container_id, ifname)
}

/// The IPAM owner of (`container_id`, `ifname`) when weft is another plugin's IPAM:
/// `cnip-<hash>`, which no attachment has (so the start-up sweep of attachments that are
/// gone leaves it).
pub(crate) fn ipam_owner_id(container_id: &str, ifname: &str) -> String {
    hashed_id(IPAM_OWNER_PREFIX, container_id, ifname)
}

fn hashed_id(prefix: &str, container_id: &str, ifname: &str) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(container_id.as_bytes());
    h.update([0]);
    h.update(ifname.as_bytes());
    let digest = h.finalize();
    let mut id = String::from(prefix);
    for b in digest.iter().take(OWNER_HASH_HEX_LEN / 2) {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

/// A container id as the spec allows: an alphanumeric, then alphanumerics, `_`, `.`, `-`.
pub(crate) fn check_container_id(id: &str) -> Result<(), String> {
    let ok_first = id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    let ok_rest = id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok_first || !ok_rest || id.len() > CONTAINER_ID_LEN_MAX {
        return Err(format!(
            "CNI_CONTAINERID {:?}: expected a letter or digit, then letters, digits, _ . or - (at most {CONTAINER_ID_LEN_MAX})",
            truncate(id, 80)
        ));
    }
    Ok(())
}

/// An interface name as Linux and the spec allow: 1 to 15 bytes, not `.` or `..`, no
/// `/`, `:` or whitespace.
pub(crate) fn check_ifname(name: &str) -> Result<(), String> {
    let bad_char = name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    if name.is_empty() || name.len() > IFNAME_LEN_MAX || name == "." || name == ".." || bad_char {
        return Err(format!(
            "CNI_IFNAME {:?}: expected 1 to {IFNAME_LEN_MAX} bytes, not . or .., without / : or whitespace",
            truncate(name, 80)
        ));
    }
    Ok(())
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_ids_differ_by_container_and_ifname_and_fit_ipam_and_ifnames() {
        let a = owner_id("c1", "eth0");
        assert_ne!(a, owner_id("c1", "eth1"));
        assert_ne!(a, owner_id("c2", "eth0"));
        // No (container, ifname) pair collides by moving the separator.
        assert_ne!(owner_id("ab", "c"), owner_id("a", "bc"));
        assert_eq!(a, owner_id("c1", "eth0"));
        assert!(a.starts_with(CNI_ID_PREFIX));
        // The IPAM-only owner is another, and not swept as an attachment's.
        let p = ipam_owner_id("c1", "eth0");
        assert!(!p.starts_with(CNI_ID_PREFIX) && p.len() <= weft_core::ipam::CONTAINER_ID_LEN_MAX);
        assert!(a.len() <= weft_core::ipam::CONTAINER_ID_LEN_MAX);
        assert!(format!("vwc{}", &a[4..16]).len() <= IFNAME_LEN_MAX);
    }

    #[test]
    fn container_ids_and_ifnames_are_checked_as_the_spec_says() {
        for good in ["a", "0abc", "pod_1.x-y", &"f".repeat(64)] {
            assert!(check_container_id(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "_a", "a/b", "a b", "a;b", &"f".repeat(300)] {
            assert!(check_container_id(bad).is_err(), "{bad}");
        }
        for good in ["eth0", "net1", "a", &"x".repeat(15)] {
            assert!(check_ifname(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "a:b", "a b", &"x".repeat(16)] {
            assert!(check_ifname(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_spool_is_beside_the_socket() {
        assert_eq!(
            spool_dir(Path::new("/run/weft/weft.sock")),
            Path::new("/run/weft/cni-del")
        );
    }
}
