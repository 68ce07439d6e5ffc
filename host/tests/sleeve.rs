//! End to end through the sleeve datapath: real routers in test-host namespaces, real
//! "containers" (namespaces) attached to them, real packets. Needs root; skips with a
//! printed reason otherwise. Each test builds and tears down its own namespaces.

mod common;

use common::{Opts, Router, eventually, ip};
use std::time::Duration;
use weft_kernel_dp::testnet::{TestNet, require_root};

const SETTLE: Duration = Duration::from_secs(20);

#[test]
fn two_hosts_containers_ping_and_move_50_mb_intact() {
    if require_root().is_some() {
        return;
    }
    let mut net = TestNet::new().unwrap();
    let (ha, hb) = (net.add_host("a").unwrap(), net.add_host("b").unwrap());
    let ip_a = net.underlay_attach(&ha).unwrap();
    net.underlay_attach(&hb).unwrap();
    let (ca, cb) = (net.add_ns("ca").unwrap(), net.add_ns("cb").unwrap());
    let a = Router::start(&mut net, &ha, &Opts::default());
    let b = Router::start(
        &mut net,
        &hb,
        &Opts {
            peers: vec![ip_a.to_string()],
            ..Opts::default()
        },
    );
    a.attach(&ca, "10.32.1.1/12");
    b.attach(&cb, "10.32.2.1/12");
    assert!(
        ca.ping_until(ip("10.32.2.1"), SETTLE),
        "container on a cannot reach b; a:\n{}\nb:\n{}",
        a.log_text(),
        b.log_text()
    );
    assert!(cb.ping(ip("10.32.1.1"), 3));
    // 50 MB over TCP, checksummed at both ends.
    let data = "/tmp/weft-e2e-50mb";
    ha.run(&[
        "sh",
        "-c",
        &format!(
            "head -c 50000000 /dev/urandom > {data}.{}",
            std::process::id()
        ),
    ])
    .unwrap();
    let src = format!("{data}.{}", std::process::id());
    let dst = format!("{src}.out");
    let recv = std::thread::spawn({
        let cb = cb.clone();
        let dst = dst.clone();
        move || {
            cb.run(&[
                "sh",
                "-c",
                &format!("timeout 60 socat -u TCP-LISTEN:5001,reuseaddr OPEN:{dst},creat,trunc"),
            ])
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let sent = ca.run(&[
        "sh",
        "-c",
        &format!("timeout 60 socat -u OPEN:{src} TCP:10.32.2.1:5001,retry=10"),
    ]);
    assert!(sent.is_ok(), "send: {sent:?}");
    recv.join().unwrap().unwrap();
    let sum = |f: &str| {
        ha.run(&["sha256sum", f])
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    };
    assert_eq!(sum(&src), sum(&dst), "50 MB arrived changed");
    let _ = std::fs::remove_file(&src);
    let _ = std::fs::remove_file(&dst);
    // The datapath carried it and says so.
    let st = a.json(&["status"]);
    assert!(
        st["datapath"]["datagrams_out"].as_u64().unwrap() > 30_000,
        "{st}"
    );
    assert!(eventually(Duration::from_secs(5), || {
        a.json(&["status", "connections"])
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["mode"] == "sleeve")
    }));
}
