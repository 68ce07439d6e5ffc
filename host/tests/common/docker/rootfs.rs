//! The busybox rootfs tarball the test image is imported from: Debian's `busybox-static`
//! binary, a link for each of its applets, and the few files a container expects. Built
//! once and cached under `target/tmp` for later tests and runs.

use super::{one_line, run_limited, unique_name};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

/// The cached rootfs tarball; bump the version when the rootfs layout changes.
const ROOTFS_TARBALL: &str = "weft-test-busybox-rootfs-v1.tar";
const BUSYBOX_PACKAGE: &str = "busybox-static";
const APT_ARCHIVES: &str = "/var/cache/apt/archives";
/// Time limit of `tar`, `dpkg -x` and `busybox --list` while building the rootfs.
const LOCAL_LIMIT: Duration = Duration::from_secs(60);
/// Time limit of `apt-get update` or `apt-get download` (the network may be slow).
const APT_LIMIT: Duration = Duration::from_secs(300);

/// A directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The busybox rootfs tarball, built on first use and cached under `target/tmp`.
pub(super) fn tarball() -> Result<PathBuf, String> {
    static BUILDING: Mutex<()> = Mutex::new(());
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join(ROOTFS_TARBALL);
    let cached = || fs::metadata(&cache).is_ok_and(|m| m.is_file() && m.len() > 0);
    if cached() {
        return Ok(cache);
    }
    let _one_at_a_time = BUILDING.lock().unwrap_or_else(|p| p.into_inner());
    if cached() {
        return Ok(cache);
    }
    let work = TempDir(Path::new(env!("CARGO_TARGET_TMPDIR")).join(unique_name()));
    fs::create_dir_all(&work.0).map_err(|e| format!("{}: {e}", work.0.display()))?;
    let (busybox, source) = busybox_binary(&work.0)?;
    let rootfs = work.0.join("rootfs");
    make_rootfs(&rootfs, &busybox)?;
    let tar = work.0.join("rootfs.tar");
    let (from, to) = (rootfs.display().to_string(), tar.display().to_string());
    run_ok(
        Command::new("tar").args([
            "-C",
            &from,
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "-cf",
            &to,
            ".",
        ]),
        LOCAL_LIMIT,
    )?;
    // Renamed into place whole: another test process never sees half a tarball.
    fs::rename(&tar, &cache).map_err(|e| format!("{}: {e}", cache.display()))?;
    let _ = writeln!(
        io::stderr(),
        "wefttest: built {} from {source}",
        cache.display()
    );
    Ok(cache)
}

/// `bin/busybox` (static) from Debian's `busybox-static`: the installed package's file
/// (`.ci/run` installs it), else a cached `.deb`, else one `apt-get download`ed into
/// `work` (after `apt-get update` when apt has no lists). Also says where it came from.
fn busybox_binary(work: &Path) -> Result<(PathBuf, String), String> {
    if let Some(bin) = installed_busybox() {
        return Ok((bin, format!("the installed {BUSYBOX_PACKAGE}")));
    }
    let deb = match cached_deb() {
        Some(deb) => deb,
        None => download_deb(work)?,
    };
    let into = work.join("deb");
    let (d, i) = (deb.display().to_string(), into.display().to_string());
    run_ok(Command::new("dpkg").args(["-x", &d, &i]), LOCAL_LIMIT)?;
    let bin = into.join("bin/busybox");
    if !bin.is_file() {
        return Err(format!("{d} holds no bin/busybox"));
    }
    Ok((bin, d))
}

fn installed_busybox() -> Option<PathBuf> {
    let status = Command::new("dpkg-query")
        .args(["-W", "-f", "${Status}", BUSYBOX_PACKAGE])
        .output()
        .ok()?;
    if !String::from_utf8_lossy(&status.stdout).ends_with("installed") {
        return None;
    }
    let files = Command::new("dpkg-query")
        .args(["-L", BUSYBOX_PACKAGE])
        .output()
        .ok()?;
    String::from_utf8_lossy(&files.stdout)
        .lines()
        .map(PathBuf::from)
        .find(|p| p.ends_with("bin/busybox") && p.is_file())
}

fn cached_deb() -> Option<PathBuf> {
    let prefix = format!("{BUSYBOX_PACKAGE}_");
    fs::read_dir(APT_ARCHIVES)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        })
}

fn download_deb(work: &Path) -> Result<PathBuf, String> {
    let download = || {
        let mut cmd = Command::new("apt-get");
        cmd.current_dir(work).args(["download", BUSYBOX_PACKAGE]);
        run_ok(&mut cmd, APT_LIMIT)
    };
    if let Err(first) = download() {
        // No lists yet (a fresh machine): fetch them once and try again.
        run_ok(Command::new("apt-get").args(["update", "-qq"]), APT_LIMIT)
            .map_err(|e| format!("{first}; then {e}"))?;
        download()?;
    }
    fs::read_dir(work)
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| format!("apt-get download {BUSYBOX_PACKAGE} left no .deb"))
}

/// A rootfs at `root`: `/bin/busybox`, a link in `/bin` for each of its applets, and the
/// few files and mount points a container expects (Docker mounts its own `/etc/hosts`,
/// `/etc/resolv.conf` and `/etc/hostname` over the placeholders).
fn make_rootfs(root: &Path, busybox: &Path) -> Result<(), String> {
    let err = |p: &Path, e: io::Error| format!("{}: {e}", p.display());
    for dir in ["bin", "etc", "proc", "sys", "dev", "root", "tmp"] {
        let p = root.join(dir);
        fs::create_dir_all(&p).map_err(|e| err(&p, e))?;
    }
    let tmp = root.join("tmp");
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o1777)).map_err(|e| err(&tmp, e))?;
    let bin = root.join("bin/busybox");
    fs::copy(busybox, &bin).map_err(|e| err(&bin, e))?;
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).map_err(|e| err(&bin, e))?;
    // The applets from the binary itself: `busybox --install` would need a chroot.
    let list = run_ok(Command::new(&bin).arg("--list"), LOCAL_LIMIT)?;
    let applets: Vec<&str> = list.lines().map(str::trim).collect();
    for needed in [
        "sh", "ping", "ip", "sleep", "nc", "nslookup", "hostname", "cat",
    ] {
        if !applets.contains(&needed) {
            return Err(format!("{} has no applet {needed}", busybox.display()));
        }
    }
    for a in applets {
        if a.is_empty() || a == "busybox" || a.contains('/') {
            continue;
        }
        let link = root.join("bin").join(a);
        symlink("busybox", &link).map_err(|e| err(&link, e))?;
    }
    let files = [
        ("etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost\n"),
        ("etc/resolv.conf", "# replaced by Docker\n"),
        ("etc/hostname", "wefttest\n"),
        ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
        ("etc/group", "root:x:0:\n"),
    ];
    for (path, text) in files {
        let p = root.join(path);
        fs::write(&p, text).map_err(|e| err(&p, e))?;
    }
    Ok(())
}

/// Runs `cmd` (within `limit`); its stdout, or an error with what it said.
fn run_ok(cmd: &mut Command, limit: Duration) -> Result<String, String> {
    let what = format!("{cmd:?}");
    let out = run_limited(cmd, limit).map_err(|e| format!("{what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what}: {} ({})",
            one_line(&out.stderr),
            out.status
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
