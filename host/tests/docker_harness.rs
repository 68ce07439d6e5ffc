//! The Docker test harness (`common::docker`) on the real engine: the busybox image built
//! without a registry runs, two containers on an internal bridge network reach each other
//! by address, and every container, network and image the guards made is gone after they
//! drop, also when the test panics. Needs the Docker Engine; ignored with the reason
//! printed where none answers, and failing instead where `WEFT_DOCKER_REQUIRED` is set.
//! Traffic stays on the test's own `--internal` network.

mod common;

use common::docker::{Container, Kind, Network, TestImage, exists, probe, require_docker};
use std::net::Ipv4Addr;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

const SLEEP: [&str; 2] = ["sleep", "600"];

/// `ping -c COUNT -w DEADLINE_S` from `from` to `to`: whether any reply came (busybox
/// exits 0 then), and what it printed. `-W 1`: busybox otherwise waits 10 s for a reply
/// after the last echo.
fn pings(from: &Container, to: Ipv4Addr, count: &str, deadline_s: &str) -> (bool, String) {
    let to = to.to_string();
    let out = from.exec(&["ping", "-c", count, "-w", deadline_s, "-W", "1", &to]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn assert_gone(kind: Kind, id: &str) {
    let listed = exists(kind, id).unwrap();
    assert!(
        !listed,
        "{kind:?} {id} is still there after its guard dropped"
    );
}

#[test]
#[ignore = "needs the Docker Engine: run with --include-ignored, as .ci/run does"]
fn two_containers_on_an_internal_bridge_ping_and_nothing_is_left() {
    if require_docker().is_some() {
        return;
    }
    let image = TestImage::build().unwrap();
    let (net, cidr) = Network::create_on_free_subnet(&["--internal"]).unwrap();
    let on_net = ["--network", net.name.as_str()];
    let a = Container::run(&image, &on_net, &SLEEP).unwrap();
    let b = Container::run(&image, &on_net, &SLEEP).unwrap();
    assert!(a.running() && b.running(), "{}\n{}", a.logs(), b.logs());

    let (ip_a, ip_b) = (a.ip_of(&net).unwrap(), b.ip_of(&net).unwrap());
    let prefix = cidr.trim_end_matches("0/24");
    for ip in [ip_a, ip_b] {
        assert!(ip.to_string().starts_with(prefix), "{ip} is not in {cidr}");
    }
    assert_ne!(ip_a, ip_b);
    let (ok, text) = pings(&a, ip_b, "3", "10");
    assert!(ok, "{} could not ping {} ({ip_b}):\n{text}", a.name, b.name);
    assert!(text.contains("3 packets received"), "{text}");
    let (ok, text) = pings(&b, ip_a, "1", "5");
    assert!(ok, "{} could not ping {} ({ip_a}):\n{text}", b.name, a.name);
    // The check can fail: nobody holds .250 on the test's subnet.
    let nobody: Ipv4Addr = format!("{prefix}250").parse().unwrap();
    let (ok, text) = pings(&a, nobody, "1", "2");
    assert!(!ok, "{nobody} answered though no container has it:\n{text}");

    // Containers first, then the network they were on, then the image they ran.
    let ids = [
        (Kind::Container, a.id.clone()),
        (Kind::Container, b.id.clone()),
        (Kind::Network, net.id.clone()),
        (Kind::Image, image.id.clone()),
    ];
    for (kind, id) in &ids {
        assert!(exists(*kind, id).unwrap(), "{kind:?} {id} not listed");
    }
    drop((a, b));
    drop(net);
    drop(image);
    for (kind, id) in &ids {
        assert_gone(*kind, id);
    }
}

#[test]
#[ignore = "needs the Docker Engine: run with --include-ignored, as .ci/run does"]
fn a_panicking_test_leaves_no_container_network_or_image() {
    if require_docker().is_some() {
        return;
    }
    let mut ids = Vec::new();
    let unwound = catch_unwind(AssertUnwindSafe(|| {
        let image = TestImage::build().unwrap();
        ids.push((Kind::Image, image.id.clone()));
        let (net, _) = Network::create_on_free_subnet(&["--internal"]).unwrap();
        ids.push((Kind::Network, net.id.clone()));
        let c = Container::run(&image, &["--network", &net.name], &SLEEP).unwrap();
        ids.push((Kind::Container, c.id.clone()));
        // Unwinds as a failed assertion would, without the panic hook's message.
        resume_unwind(Box::new("deliberate: the guards must remove what was made"));
    }));
    assert!(unwound.is_err());
    assert_eq!(ids.len(), 3, "not everything was made: {ids:?}");
    for (kind, id) in &ids {
        assert_gone(*kind, id);
    }
}

/// Without an engine the probe gives a reason (so a test is skipped or fails with it),
/// never a pass.
#[test]
fn an_engine_that_does_not_answer_is_reported_with_the_reason() {
    let dir = std::env::temp_dir().join(format!("wefttest-noengine-{}", std::process::id()));
    let host = format!("unix://{}/docker.sock", dir.display());
    let reason = probe(Some(&host)).unwrap_err();
    assert!(
        reason.contains("not installed") || reason.contains("does not answer"),
        "{reason}"
    );
}
