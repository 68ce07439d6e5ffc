use super::*;
use weft_core::policy::compile::{AnyElem, Chain, PortElem};
use weft_core::policy::{PolicyKey, Proto};

fn ip(s: &str) -> u32 {
    u32::from(s.parse::<Ipv4Addr>().unwrap())
}

fn sample() -> RuleSet {
    let by = |policy, rule, dir| RuleRef { policy, rule, dir };
    let chain = Chain {
        any: vec![AnyElem {
            addrs: (ip("10.32.0.1"), ip("10.32.0.1")),
            by: by(0, 0, Direction::Ingress),
        }],
        ports: vec![
            PortElem {
                addrs: (ip("10.0.0.0"), ip("10.31.255.255")),
                proto: Proto::Tcp,
                ports: (80, 90),
                by: by(1, 2, Direction::Ingress),
            },
            PortElem {
                addrs: (ip("10.32.0.9"), ip("10.32.0.9")),
                proto: Proto::Udp,
                ports: (53, 53),
                by: by(1, 2, Direction::Ingress),
            },
        ],
        isolated_by: vec![0, 1],
    };
    let deny = Chain {
        any: Vec::new(),
        ports: Vec::new(),
        isolated_by: vec![1],
    };
    let mut rs = RuleSet {
        policies: vec![
            PolicyKey {
                namespace: "default".into(),
                name: "a".into(),
            },
            PolicyKey {
                namespace: "default".into(),
                name: "b".into(),
            },
        ],
        chains: vec![chain, deny],
        ..RuleSet::default()
    };
    rs.ingress.insert("10.32.0.2".parse().unwrap(), 0);
    rs.ingress.insert("10.32.0.3".parse().unwrap(), 0);
    rs.egress.insert("10.32.0.3".parse().unwrap(), 1);
    rs
}

#[test]
fn the_table_has_one_lookup_per_side_and_a_counting_chain_per_rule() {
    let r = render(&sample(), None);
    let t = &r.batch;
    assert!(
        t.contains(
            "table inet weft-policy {}\ndelete table inet weft-policy\ntable inet weft-policy {"
        ),
        "{t}"
    );
    assert!(
        t.starts_with("table bridge weft-isolate {}\ndelete table bridge weft-isolate\n"),
        "{t}"
    );
    assert!(
        !t.contains("table bridge weft-isolate {\n"),
        "isolation is off: {t}"
    );
    assert!(
        t.contains("10.32.0.2 : jump c0_in, 10.32.0.3 : jump c0_in"),
        "{t}"
    );
    assert!(t.contains("10.32.0.3 : jump c1_out"), "{t}");
    assert!(t.contains("10.32.0.1 : goto r0_in0"), "{t}");
    assert!(
        t.contains("10.0.0.0-10.31.255.255 . tcp . 80-90 : goto r1_in2"),
        "{t}"
    );
    assert!(t.contains("10.32.0.9 . udp . 53 : goto r1_in2"), "{t}");
    assert!(
        t.contains("ip daddr . meta l4proto . th dport vmap @c1_out_ports"),
        "{t}"
    );
    assert!(t.contains("ct state established,related accept\n\t\tip saddr vmap @egress\n\t\tip daddr vmap @ingress"), "{t}");
    // One counting chain per rule, however many elements point at it.
    assert_eq!(t.matches("chain r1_in2 {").count(), 1);
    assert_eq!(
        r.counters["r1_in2"],
        Counted::Rule(1, Direction::Ingress, 2)
    );
    assert_eq!(r.counters["c0_in"], Counted::Dropped(0, Direction::Ingress));
    assert!(
        !r.counters.contains_key("c0_out"),
        "unused pod chains are not rendered"
    );
}

#[test]
fn counters_are_read_from_nft_json() {
    let json = r#"{"nftables":[{"metainfo":{}},{"rule":{"family":"inet","table":"weft-policy","chain":"r1_in2","handle":4,"expr":[{"counter":{"packets":7,"bytes":420}}]}},
        {"rule":{"chain":"c0_in","expr":[{"vmap":{}},{"counter":{"packets":3,"bytes":1}},{"drop":null}]}}]}"#;
    let c = read_counters(json);
    assert_eq!(c["r1_in2"], 7);
    assert_eq!(c["c0_in"], 3);
    assert!(read_counters("garbage").is_empty());
}

/// nftables itself checks the rendered table (`nft -c`, nothing is changed) in a network
/// namespace of the test's own.
#[test]
#[ignore = "needs root and nft: run with --include-ignored"]
fn nft_accepts_the_rendered_table() {
    let have_nft = std::process::Command::new("nft")
        .arg("--version")
        .output()
        .is_ok();
    if !have_nft || !crate::daemon::is_root() {
        let why = "needs root and nft";
        assert!(std::env::var_os("WEFT_TESTNET_REQUIRED").is_none(), "{why}");
        eprintln!("skipped: {why}");
        return;
    }
    let ns = format!("weft-nftcheck-{}", std::process::id());
    let ok = std::process::Command::new("ip")
        .args(["netns", "add", &ns])
        .status()
        .unwrap();
    assert!(ok.success());
    let iso = Isolation {
        ports: [("vwe1".to_owned(), vec!["10.32.0.2".parse().unwrap()])].into(),
        subnets: vec![
            weft_core::policy::Cidr::new("10.32.0.0".parse().unwrap(), 12).unwrap(),
            weft_core::policy::Cidr::new("10.47.255.0".parse().unwrap(), 24).unwrap(),
        ],
    };
    let batch = render(&sample(), Some(&iso)).batch;
    assert!(batch.contains("\"vwe1\" . 10.32.0.2"), "{batch}");
    assert!(
        batch.contains(
            "ip saddr 10.47.255.0/24 ip daddr != 10.47.255.0/24 ip daddr @subnets counter drop"
        ),
        "{batch}"
    );
    let run = |args: &[&str], input: &str| {
        use std::io::Write as _;
        let mut c = std::process::Command::new("ip")
            .args(["netns", "exec", &ns, "nft"])
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        c.wait_with_output().unwrap()
    };
    let applied = run(&["-f", "-"], &batch);
    let again = run(&["-f", "-"], &batch);
    let _ = std::process::Command::new("ip")
        .args(["netns", "del", &ns])
        .status();
    assert!(
        applied.status.success(),
        "{}\n{batch}",
        String::from_utf8_lossy(&applied.stderr)
    );
    assert!(
        again.status.success(),
        "replacing the table: {}",
        String::from_utf8_lossy(&again.stderr)
    );
}
