use super::*;

fn one(text: &str) -> Result<Policy, String> {
    match parse("t.yaml", text).map_err(|e| e.0)?.as_slice() {
        [Object::Policy(p)] => Ok(p.clone()),
        other => Err(format!("not one policy: {other:?}")),
    }
}

const FULL: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: test-network-policy
  namespace: default
  labels: {team: web}
  resourceVersion: "12"
spec:
  podSelector:
    matchLabels:
      role: db
  policyTypes:
    - Ingress
    - Egress
  ingress:
    - from:
        - ipBlock:
            cidr: 172.17.0.0/16
            except:
              - 172.17.1.0/24
        - namespaceSelector:
            matchLabels:
              project: myproject
        - podSelector:
            matchExpressions:
              - {key: role, operator: In, values: [frontend, api]}
        - namespaceSelector: {}
          podSelector: {matchLabels: {app: x}}
      ports:
        - protocol: TCP
          port: 6379
        - port: http
        - protocol: UDP
          port: 32000
          endPort: 32768
        - protocol: SCTP
  egress:
    - to:
        - ipBlock:
            cidr: 10.0.0.0/24
      ports:
        - protocol: TCP
          port: 5978
"#;

#[test]
fn the_upstream_example_parses_field_by_field() {
    let p = one(FULL).unwrap();
    assert_eq!(p.key.to_string(), "default/test-network-policy");
    assert_eq!(p.pod_selector.match_labels.get("role"), Some("db"));
    assert!(p.ingress_isolates && p.egress_isolates);
    let r = &p.ingress[0];
    assert_eq!(r.peers.len(), 4);
    match &r.peers[0] {
        Peer::Block(b) => {
            assert_eq!(b.cidr.to_string(), "172.17.0.0/16");
            assert_eq!(b.except[0].to_string(), "172.17.1.0/24");
        }
        o => panic!("{o:?}"),
    }
    assert!(matches!(
        &r.peers[1],
        Peer::Pods {
            pods: None,
            namespaces: Some(_)
        }
    ));
    match &r.peers[2] {
        Peer::Pods {
            pods: Some(s),
            namespaces: None,
        } => {
            assert_eq!(s.match_expressions[0].op, Operator::In);
            assert_eq!(s.match_expressions[0].values, ["api", "frontend"]);
        }
        o => panic!("{o:?}"),
    }
    assert!(matches!(
        &r.peers[3],
        Peer::Pods {
            pods: Some(_),
            namespaces: Some(_)
        }
    ));
    assert_eq!(
        r.ports[0],
        Port {
            proto: Proto::Tcp,
            port: PortMatch::Range {
                port: 6379,
                end: 6379
            }
        }
    );
    assert_eq!(
        r.ports[1],
        Port {
            proto: Proto::Tcp,
            port: PortMatch::Named("http".into())
        }
    );
    assert_eq!(
        r.ports[2],
        Port {
            proto: Proto::Udp,
            port: PortMatch::Range {
                port: 32000,
                end: 32768
            }
        }
    );
    assert_eq!(
        r.ports[3],
        Port {
            proto: Proto::Sctp,
            port: PortMatch::Any
        }
    );
    assert_eq!(p.egress.len(), 1);
}

#[test]
fn policy_types_are_implied_as_kubernetes_implies_them() {
    let base = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec:\n  podSelector: {}\n";
    let p = one(base).unwrap();
    assert!(
        p.ingress_isolates && !p.egress_isolates,
        "no rules at all: ingress isolation"
    );
    assert_eq!(p.key.namespace, "default");
    let p = one(&format!("{base}  egress: []\n")).unwrap();
    assert!(
        p.ingress_isolates && p.egress_isolates,
        "an egress section implies Egress"
    );
    let p = one(&format!("{base}  policyTypes: [Egress]\n")).unwrap();
    assert!(!p.ingress_isolates && p.egress_isolates);
    // `ingress: [{}]` is one rule that allows everything.
    let p = one(&format!("{base}  ingress: [{{}}]\n")).unwrap();
    assert_eq!(p.ingress, [Rule::default()]);
}

#[test]
fn refusals_name_the_field() {
    let cases = [
        (
            FULL.replace("endPort: 32768", "endPort: 100"),
            "spec.ingress[0].ports[2].endPort: 100 is below port 32000",
        ),
        (
            FULL.replace("operator: In", "operator: Has"),
            "spec.ingress[0].from[2].podSelector.matchExpressions[0].operator",
        ),
        (
            FULL.replace("cidr: 172.17.0.0/16", "cidr: 172.17.0.0/40"),
            "spec.ingress[0].from[0].ipBlock.cidr",
        ),
        (
            FULL.replace("- 172.17.1.0/24", "- 10.1.0.0/24"),
            "spec.ingress[0].from[0].ipBlock.except[0]: must be an IPv4 CIDR inside 172.17.0.0/16",
        ),
        (
            FULL.replace("protocol: UDP", "protocol: ICMP"),
            "spec.ingress[0].ports[2].protocol",
        ),
        (
            FULL.replace("port: http", "port: HTTP_x"),
            "spec.ingress[0].ports[1].port",
        ),
        (
            FULL.replace("port: 5978", "port: 70000"),
            "spec.egress[0].ports[0].port: must be a port number",
        ),
        (
            FULL.replace("policyTypes:", "policyTipes:"),
            "spec.policyTipes: unknown field",
        ),
        (
            FULL.replace("role: db", "role: [db]"),
            "spec.podSelector.matchLabels.role: must be a string",
        ),
        (
            FULL.replace("name: test-network-policy", "name: Test_Policy"),
            "metadata.name",
        ),
        (
            FULL.replace("networking.k8s.io/v1", "networking.k8s.io/v1beta1"),
            "only networking.k8s.io/v1",
        ),
        (
            FULL.replace(
                "- namespaceSelector: {}\n          podSelector",
                "- ipBlock: {cidr: 10.0.0.0/8}\n          podSelector",
            ),
            "cannot be combined",
        ),
    ];
    for (text, want) in cases {
        let e = parse("t.yaml", &text).unwrap_err().0;
        assert!(e.contains(want), "{e:?} should contain {want:?}");
        assert!(e.starts_with("t.yaml: document 1"), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }
}

#[test]
fn json_lists_namespaces_and_several_documents() {
    let json = r#"{"apiVersion":"v1","kind":"List","items":[
        {"apiVersion":"v1","kind":"Namespace","metadata":{"name":"prod","labels":{"env":"prod"}}},
        {"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"deny","namespace":"prod"},"spec":{"podSelector":{}}}]}"#;
    let objs = parse("x.json", json).unwrap();
    assert_eq!(objs.len(), 2);
    assert!(
        matches!(&objs[0], Object::Namespace(n, l) if n == "prod" && l.get("env") == Some("prod"))
    );
    let yaml =
        format!("{FULL}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: a}}\n---\n");
    assert_eq!(parse("y", &yaml).unwrap().len(), 2);
    let e = parse("y", "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n")
        .unwrap_err()
        .0;
    assert!(e.contains("kind Pod"), "{e}");
    let e = parse("y", "{ not json").unwrap_err().0;
    assert!(e.starts_with("y: not JSON"), "{e}");
    let e = parse("y", "a: [b\n").unwrap_err().0;
    assert!(e.starts_with("y: not YAML"), "{e}");
}

#[test]
fn an_ipv6_only_rule_allows_no_ipv4_peer() {
    let text = FULL.replace("cidr: 10.0.0.0/24", "cidr: fd00::/64");
    let p = one(&text).unwrap();
    assert!(
        p.egress.is_empty(),
        "the rule must go, not become allow-all: {:?}",
        p.egress
    );
    assert!(p.egress_isolates);
}

#[test]
fn label_arguments() {
    let c = label_changes(&["app=web".into(), "tier-".into(), "x.io/y=".into()]).unwrap();
    assert_eq!(c["app"], Some("web".into()));
    assert_eq!(c["tier"], None);
    assert_eq!(c["x.io/y"], Some(String::new()));
    assert!(label_changes(&["app".into()]).is_err());
    assert!(label_changes(&["-bad=x".into()]).is_err());
    assert!(label_changes(&["k=bad value".into()]).is_err());
}
