//! End to end: the control socket is 0600 in a 0700 directory the router made, root is
//! served, and any other user is refused: by the file modes, and where those are opened
//! up, by the router's `SO_PEERCRED` check, each time with one clear line. Needs root and
//! `setpriv`; skips with a printed reason otherwise.

mod common;

use common::{Opts, Router, WEFT, underlay_hosts};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

/// The uid and gid the refused caller runs as (`nobody`).
const STRANGER_ID: &str = "65534";

fn as_stranger(args: &[&str]) -> std::io::Result<Output> {
    Command::new("setpriv")
        .args([
            "--reuid",
            STRANGER_ID,
            "--regid",
            STRANGER_ID,
            "--clear-groups",
        ])
        .arg(WEFT)
        .args(args)
        .output()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn control_socket_is_private_and_other_users_are_refused() {
    let Some(mut net) = common::test_net() else {
        return;
    };
    match as_stranger(&["--version"]) {
        Ok(o) if o.status.success() => {}
        other => {
            eprintln!(
                "SKIPPED control_socket: cannot run {WEFT} as uid {STRANGER_ID} with setpriv ({other:?})"
            );
            return;
        }
    }
    let ([ha], _) = underlay_hosts(&mut net, ["a"]);
    let r = Router::start(&mut net, &ha, &Opts::sleeve());
    let dir = r.socket.parent().unwrap().to_path_buf();
    assert_eq!(mode(&r.socket), 0o600, "socket mode");
    assert_eq!(mode(&dir), 0o700, "socket directory mode");
    assert!(r.try_json(&["status"]).is_some(), "root is served");
    let sock = r.socket.display().to_string();

    // As the files are: the stranger cannot reach the socket at all.
    let out = as_stranger(&["status", "--socket", &sock]).unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "stranger got an answer: {out:?}");
    assert!(
        err.contains("permission denied") && err.trim().lines().count() == 1,
        "{err}"
    );

    // Modes opened up (a mistake, or a group): the router itself refuses the caller.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&r.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = as_stranger(&["status", "--socket", &sock]).unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "stranger got an answer: {out:?}");
    assert!(
        err.contains("serves only root") && err.contains("uid 65534"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let out = as_stranger(&["stop", "--socket", &sock]).unwrap();
    assert!(
        !out.status.success(),
        "stranger stopped the router: {out:?}"
    );
    assert!(r.alive(), "the router is still up");
    assert!(r.try_json(&["status"]).is_some(), "root is still served");
    assert!(
        r.log_text().contains("uid 65534"),
        "the refusal is logged:\n{}",
        r.log_text()
    );
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn a_regular_file_at_the_socket_path_stops_start_up_and_is_kept() {
    let Some(mut net) = common::test_net() else {
        return;
    };
    let ([ha], _) = underlay_hosts(&mut net, ["f"]);
    let dir = std::env::temp_dir().join(format!("weft-e2e-sockfile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("weft.sock");
    std::fs::write(&file, b"not a socket").unwrap();
    let (f, st) = (
        file.display().to_string(),
        dir.join("state").display().to_string(),
    );
    let out = ha
        .exec(&[
            WEFT,
            "router",
            "--no-fastdp",
            "--socket",
            &f,
            "--state-dir",
            &st,
        ])
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let kept = std::fs::read(&file).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success(), "the router started: {out:?}");
    assert!(err.contains("is a regular file, not a socket"), "{err}");
    assert_eq!(kept, b"not a socket", "the file was touched");
}
