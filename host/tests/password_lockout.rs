//! End to end: a router with the wrong password keeps dialing; after five failed
//! password checks within a minute its address is locked out (one log line on the
//! accepting router), its next connection is refused before any handshake, and a router
//! on another address with the right password still connects. Needs root; skips with a
//! printed reason otherwise.

mod common;

use common::{Opts, Router, test_net, underlay_hosts};
use std::time::{Duration, Instant};
use weft_kernel_dp::testnet::{Ns, TestNet};

fn start(net: &mut TestNet, ns: &Ns, password: &str) -> Router {
    Router::start(
        net,
        ns,
        &Opts {
            password: Some(password),
            ..Opts::sleeve()
        },
    )
}

/// Lines of `r`'s log that contain both `a` and `b`.
fn log_lines_with(r: &Router, a: &str, b: &str) -> usize {
    let log = r.log_text();
    log.lines()
        .filter(|l| l.contains(a) && l.contains(b))
        .count()
}

/// Lines of `r`'s log about connections from `ip` going down.
fn downs_from(r: &Router, ip: &str) -> usize {
    log_lines_with(r, &format!("from {ip}:"), "down:")
}

/// Lines of `r`'s log saying `ip` is locked out.
fn lockout_lines(r: &Router, ip: &str) -> usize {
    log_lines_with(r, &format!("{ip}: "), "failed password checks")
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn repeated_wrong_passwords_lock_the_address_out_and_are_logged_once() {
    let Some(mut net) = test_net() else {
        return;
    };
    let ([ha, hb, hx], [ip_a, _, ip_x]) = underlay_hosts(&mut net, ["a", "b", "x"]);
    let a = start(&mut net, &ha, "right");
    let b = start(&mut net, &hb, "right");
    let x = start(&mut net, &hx, "wrong");
    let (target, x_ip) = (ip_a.to_string(), ip_x.to_string());
    // `weft connect` again and again: each one dials at once (no waiting for backoff).
    let started = Instant::now();
    while lockout_lines(&a, &x_ip) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no lockout after {} failed attempts; a's log:\n{}",
            downs_from(&a, &x_ip),
            a.log_text()
        );
        x.weft(&["connect", &target]).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    let log = a.log_text();
    let line = log.lines().find(|l| l.contains("failed password checks"));
    eprintln!("a: {}", line.unwrap_or_default());
    let failed = downs_from(&a, &x_ip);
    let max = weft_core::admission::PASSWORD_FAILURES_MAX as usize;
    assert_eq!(
        failed,
        max,
        "attempts that reached the handshake; log:\n{}",
        a.log_text()
    );
    // Locked out: the next attempts are refused at accept and counted, not logged again.
    for _ in 0..3 {
        x.weft(&["connect", &target]).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    a.wait_until(Duration::from_secs(5), "x's attempts refused", |a| {
        a.json(&["status"])["refused"]["locked_out"]
            .as_u64()
            .is_some_and(|n| n >= 1)
    });
    assert_eq!(downs_from(&a, &x_ip), max, "log:\n{}", a.log_text());
    assert_eq!(lockout_lines(&a, &x_ip), 1, "log:\n{}", a.log_text());
    assert_eq!(a.json(&["status"])["refused"]["password_lockouts"], 1);
    // Another address with the right password is let in.
    b.weft(&["connect", &target]).unwrap();
    let name_b = b.name();
    a.wait_until(Duration::from_secs(10), "b connected", |a| {
        a.established().contains(&name_b)
    });
}
