//! `weft cni install`: the plugin binary (a copy of this `weft`) into the CNI bin dir and
//! `10-weft.conflist` (network `weft`: plugin `weft`, then `portmap`) into the conf dir.

use crate::error::{Error, Result};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// `--bin-dir` unless given.
pub(crate) const BIN_DIR_DEFAULT: &str = "/opt/cni/bin";
/// `--conf-dir` unless given.
pub(crate) const CONF_DIR_DEFAULT: &str = "/etc/cni/net.d";
/// The conflist's file name.
pub(crate) const CONFLIST_NAME: &str = "10-weft.conflist";
/// The `cniVersion` of the conflist: podman 4.3's libcni takes 1.0.0 and not 1.1.0;
/// `cniVersions` lets a newer runtime pick 1.1.0.
pub(crate) const CONFLIST_VERSION: &str = "1.0.0";

/// The conflist for the router at `socket`.
pub(crate) fn conflist(socket: &Path) -> serde_json::Value {
    serde_json::json!({
        "cniVersion": CONFLIST_VERSION,
        "cniVersions": ["1.0.0", "1.1.0"],
        "name": "weft",
        "plugins": [
            {"type": "weft", "socket": socket},
            {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}
        ]
    })
}

/// Copies this executable to `bin_dir/weft` (mode 0755, replaced in one rename, so a
/// plugin running meanwhile is not cut) and writes `conf_dir/10-weft.conflist` (0644).
/// Returns the two paths.
pub(crate) fn install(
    bin_dir: &Path,
    conf_dir: &Path,
    socket: &Path,
) -> Result<(PathBuf, PathBuf)> {
    let exe =
        std::env::current_exe().map_err(Error::io("find own executable", "/proc/self/exe"))?;
    for d in [bin_dir, conf_dir] {
        std::fs::create_dir_all(d).map_err(Error::io("create", d))?;
    }
    let bin = bin_dir.join("weft");
    let tmp = bin_dir.join(format!(".weft.install.{}", std::process::id()));
    let copied = (|| {
        std::fs::copy(&exe, &tmp).map_err(Error::io("copy the weft executable to", &tmp))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
            .map_err(Error::io("chmod", &tmp))?;
        std::fs::rename(&tmp, &bin).map_err(Error::io("rename into place", &bin))
    })();
    if copied.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    copied?;
    let conf = conf_dir.join(CONFLIST_NAME);
    let mut text = serde_json::to_string_pretty(&conflist(socket))
        .map_err(|e| Error::Other(format!("encode {CONFLIST_NAME}: {e}")))?;
    text.push('\n');
    crate::state::write_atomic(&conf, text.as_bytes())?;
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644))
        .map_err(Error::io("chmod", &conf))?;
    Ok((bin, conf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_writes_an_executable_copy_and_the_conflist() {
        let dir = std::env::temp_dir().join(format!("weft-cni-install-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (bin, conf) =
            install(&dir.join("bin"), &dir.join("net.d"), Path::new("/s.sock")).unwrap();
        let mode = std::fs::metadata(&bin).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        let exe = std::env::current_exe().unwrap();
        assert_eq!(
            std::fs::metadata(&bin).unwrap().len(),
            std::fs::metadata(exe).unwrap().len()
        );
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&conf).unwrap()).unwrap();
        assert_eq!(v["name"], "weft");
        assert_eq!(v["plugins"][0]["type"], "weft");
        assert_eq!(v["plugins"][0]["socket"], "/s.sock");
        assert_eq!(v["plugins"][1]["type"], "portmap");
        // Again: replaced, not refused.
        install(&dir.join("bin"), &dir.join("net.d"), Path::new("/s.sock")).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
