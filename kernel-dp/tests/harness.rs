//! Root tests of the `testnet` harness itself: it must build what it says,
//! and tear everything down, also when the test panics.

use std::{net::IpAddr, path::Path, process::Command, time::Duration};

use weft_kernel_dp::testnet::{TestNet, UNDERLAY_IF, require_root};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn netns_names() -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn hosts_underlay_and_processes_then_teardown() -> TestResult {
    if require_root().is_some() {
        return Ok(());
    }
    let mut net = TestNet::new()?;
    let prefix = net.prefix().to_string();
    assert!(
        prefix.starts_with(&format!("wt{}", std::process::id())),
        "{prefix}"
    );
    let a = net.add_host("a")?;
    let b = net.add_host("b")?;
    let ua = net.underlay_attach(&a)?;
    let ub = net.underlay_attach(&b)?;
    assert_ne!(ua, ub);

    let names = netns_names();
    for ns in [&a, &b, net.underlay_ns().expect("underlay made")] {
        assert!(
            names.contains(&ns.name().to_string()),
            "{} not in {names:?}",
            ns.name()
        );
    }
    // Test hosts do not forward, whatever the machine's default is.
    assert_eq!(
        a.run(&["cat", "/proc/sys/net/ipv4/ip_forward"])?.trim(),
        "0"
    );
    assert_eq!(b.sysctl("net.ipv4.ip_forward")?, "0");
    // The underlay bridge is in its own namespace, not in the hosts or root.
    let ul = net.underlay_ns().expect("underlay").clone();
    assert!(
        ul.run(&["ip", "-d", "link", "show", "br0"])?
            .contains("bridge")
    );
    assert!(a.exec(&["ip", "link", "show", "br0"])?.status.code() != Some(0));
    assert!(
        a.run(&["ip", "-o", "addr", "show", UNDERLAY_IF])?
            .contains(&ua.to_string())
    );
    assert!(
        a.ping_until(IpAddr::from(ub), Duration::from_secs(5)),
        "a -> b over the underlay"
    );

    let sleeper = net.spawn(&a, &["sleep", "600"])?;
    assert!(Path::new(&format!("/proc/{}", sleeper.pid)).exists());
    assert_eq!(net.pids(), vec![sleeper.pid]);
    // It really runs inside `a`.
    let in_a = a.run(&["ip", "netns", "identify", &sleeper.pid.to_string()])?;
    assert_eq!(in_a.trim(), a.name());

    drop(net);
    let names = netns_names();
    assert!(
        !names.iter().any(|n| n.starts_with(&format!("{prefix}-"))),
        "left behind: {names:?}"
    );
    assert!(
        !Path::new(&format!("/proc/{}", sleeper.pid)).exists(),
        "process survived teardown"
    );
    Ok(())
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn teardown_also_runs_on_panic() -> TestResult {
    if require_root().is_some() {
        return Ok(());
    }
    let prefix = std::sync::Mutex::new(String::new());
    let result = std::panic::catch_unwind(|| {
        let mut net = TestNet::new().expect("testnet");
        *prefix.lock().unwrap() = net.prefix().to_string();
        let h = net.add_host("h").expect("host");
        net.spawn(&h, &["sh", "-c", "echo started; sleep 600"])
            .expect("spawn");
        panic!("deliberate failure inside a test network");
    });
    assert!(result.is_err());
    let prefix = prefix.into_inner()?;
    let names = netns_names();
    assert!(
        !names.iter().any(|n| n.starts_with(&format!("{prefix}-"))),
        "left behind: {names:?}"
    );
    Ok(())
}

#[test]
#[ignore = "needs root and network namespaces: run as root with --include-ignored, as .ci/run does"]
fn separate_testnets_do_not_collide() -> TestResult {
    if require_root().is_some() {
        return Ok(());
    }
    let mut one = TestNet::new()?;
    let mut two = TestNet::new()?;
    assert_ne!(one.prefix(), two.prefix());
    let a = one.add_host("x")?;
    let b = two.add_host("x")?;
    assert_ne!(a.name(), b.name());
    one.kill(12345678); // not ours: must be a no-op
    Ok(())
}
