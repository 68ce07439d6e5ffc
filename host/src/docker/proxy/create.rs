//! `POST /containers/create` through the proxy: which containers weft takes, and how
//! their request is changed.
//!
//! Taken: every container whose network mode is Docker's default (`""`, `default`,
//! `bridge`) unless its environment says `WEFT_CIDR=none`. Left alone: `host`, `none`,
//! `container:...` and named networks (a weft network is the plugin's). A body that is
//! not a JSON object is passed on untouched: Docker answers it.
//!
//! A taken container gets [`WAIT_PATH`] (bind-mounted read-only from the host) in front
//! of its entrypoint, with the image's entrypoint and command filled in when the request
//! has none (as Docker would run them); its hostname from its name unless
//! `--hostname` is given; the domain; and weftDNS as its resolver, with the search domain.

use serde_json::{Value, json};

/// Where the wait program is mounted in the container.
pub(crate) const WAIT_PATH: &str = "/.weft/wait";
/// The environment variable that picks a container's addresses.
pub(crate) const CIDR_ENV: &str = "WEFT_CIDR";

/// What the proxy knows when it rewrites.
#[derive(Clone, Debug, Default)]
pub(crate) struct Context {
    /// The wait program's path on the host.
    pub(crate) wait_host_path: String,
    /// weftDNS's address, when it listens somewhere.
    pub(crate) dns_server: Option<String>,
    /// The DNS domain, without the final dot (`weave.local`).
    pub(crate) domain: String,
}

/// The image's own entrypoint and command (`Config` of `GET /images/NAME/json`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ImageConfig {
    pub(crate) entrypoint: Vec<String>,
    pub(crate) cmd: Vec<String>,
}

impl ImageConfig {
    /// From an image inspect reply.
    pub(crate) fn of_inspect(v: &Value) -> Self {
        Self {
            entrypoint: strings(&v["Config"]["Entrypoint"]).unwrap_or_default(),
            cmd: strings(&v["Config"]["Cmd"]).unwrap_or_default(),
        }
    }
}

/// A list of strings as Docker's API gives one: an array, or a single string.
pub(crate) fn strings_of(v: &Value) -> Option<Vec<String>> {
    strings(v)
}

fn strings(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(a) => a.iter().map(|x| x.as_str().map(str::to_owned)).collect(),
        _ => None,
    }
}

/// Whether weft takes the container `body` asks for: `None` if not (and why, for the
/// log); else the image to inspect when the request leaves its entrypoint or command to it.
pub(crate) fn taken(body: &Value) -> Result<Option<String>, &'static str> {
    let Some(obj) = body.as_object() else {
        return Err("not a JSON object");
    };
    let mode = body["HostConfig"]["NetworkMode"].as_str().unwrap_or("");
    if !matches!(mode, "" | "default" | "bridge") {
        return Err("network mode is not Docker's default");
    }
    let env = strings(&body["Env"]).unwrap_or_default();
    if env.iter().any(|e| e == &format!("{CIDR_ENV}=none")) {
        return Err("WEFT_CIDR=none");
    }
    if strings(&body["Entrypoint"])
        .is_some_and(|e| e.first().map(String::as_str) == Some(WAIT_PATH))
    {
        return Err("already waits for weft");
    }
    let has_ep = !obj.get("Entrypoint").is_none_or(Value::is_null);
    let has_cmd = !obj.get("Cmd").is_none_or(Value::is_null);
    let image = body["Image"].as_str().unwrap_or("").to_owned();
    Ok((!has_ep || !has_cmd)
        .then_some(image)
        .filter(|i| !i.is_empty()))
}

/// Changes `body` (one [`taken`]) for container `name` (the `name` query parameter),
/// with the image's config when [`taken`] asked for it. `Err` when there is nothing to
/// run: the body is then passed on untouched and Docker says so.
pub(crate) fn rewrite(
    mut body: Value,
    name: Option<&str>,
    image: Option<&ImageConfig>,
    ctx: &Context,
) -> Result<Value, &'static str> {
    let req_ep = strings(&body["Entrypoint"]);
    let req_cmd = strings(&body["Cmd"]);
    let image = image.cloned().unwrap_or_default();
    // Docker's rule: an entrypoint given drops the image's command.
    let (ep, cmd) = match req_ep {
        None => (image.entrypoint, req_cmd.unwrap_or(image.cmd)),
        Some(ep) => (ep, req_cmd.unwrap_or_default()),
    };
    let ep: Vec<String> = ep.into_iter().filter(|s| !s.is_empty()).collect();
    if ep.is_empty() && cmd.is_empty() {
        return Err("no entrypoint or command to run");
    }
    let mut new_ep = vec![WAIT_PATH.to_owned()];
    new_ep.extend(ep);
    body["Entrypoint"] = json!(new_ep);
    body["Cmd"] = json!(cmd);
    if body["Hostname"].as_str().unwrap_or("").is_empty() {
        if let Some(h) = name
            .map(|n| n.trim_start_matches('/'))
            .filter(|n| hostname_ok(n))
        {
            body["Hostname"] = json!(h);
        }
    }
    if body["Domainname"].as_str().unwrap_or("").is_empty() && !ctx.domain.is_empty() {
        body["Domainname"] = json!(ctx.domain);
    }
    if !body["HostConfig"].is_object() {
        body["HostConfig"] = json!({});
    }
    let hc = &mut body["HostConfig"];
    let mut binds = strings(&hc["Binds"]).unwrap_or_default();
    binds.push(format!("{}:{WAIT_PATH}:ro", ctx.wait_host_path));
    hc["Binds"] = json!(binds);
    if let Some(server) = &ctx.dns_server {
        if strings(&hc["Dns"]).unwrap_or_default().is_empty() {
            hc["Dns"] = json!([server]);
        }
        if strings(&hc["DnsSearch"]).unwrap_or_default().is_empty() && !ctx.domain.is_empty() {
            hc["DnsSearch"] = json!([ctx.domain]);
        }
    }
    Ok(body)
}

/// Whether `h` can be a hostname (a DNS label: letters, digits, inner hyphens).
fn hostname_ok(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 63
        && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !h.starts_with('-')
        && !h.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        Context {
            wait_host_path: "/var/lib/weft/weft-wait".into(),
            dns_server: Some("10.32.0.1".into()),
            domain: "weave.local".into(),
        }
    }

    #[test]
    fn which_containers_are_taken() {
        let body = |v: Value| taken(&v);
        assert_eq!(
            body(json!({"Image": "bb", "Cmd": ["sh"]})),
            Ok(Some("bb".into()))
        );
        assert_eq!(
            body(json!({"Image": "bb", "Cmd": ["sh"], "Entrypoint": ["x"]})),
            Ok(None)
        );
        assert_eq!(
            body(json!({"Image": "bb", "HostConfig": {"NetworkMode": "bridge"}, "Cmd": null})),
            Ok(Some("bb".into()))
        );
        for mode in ["host", "none", "container:abc", "weft", "mynet"] {
            assert!(
                body(json!({"Image": "bb", "HostConfig": {"NetworkMode": mode}})).is_err(),
                "{mode}"
            );
        }
        assert!(body(json!({"Image": "bb", "Env": ["A=1", "WEFT_CIDR=none"]})).is_err());
        assert!(body(json!({"Entrypoint": [WAIT_PATH, "sh"], "Cmd": []})).is_err());
        assert!(body(json!([1, 2])).is_err());
    }

    #[test]
    fn the_wait_program_goes_first_and_the_rest_is_as_docker_would_run_it() {
        let image = ImageConfig {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["serve".into()],
        };
        let r = |v: Value| rewrite(v, Some("/web"), Some(&image), &ctx()).unwrap();
        // Nothing given: the image's entrypoint and command.
        let v = r(json!({"Image": "bb", "Keep": 1}));
        assert_eq!(v["Entrypoint"], json!([WAIT_PATH, "/entry"]));
        assert_eq!(v["Cmd"], json!(["serve"]));
        assert_eq!(v["Keep"], 1, "fields weft does not know stay");
        assert_eq!(v["Hostname"], "web");
        assert_eq!(v["Domainname"], "weave.local");
        assert_eq!(
            v["HostConfig"]["Binds"],
            json!(["/var/lib/weft/weft-wait:/.weft/wait:ro"])
        );
        assert_eq!(v["HostConfig"]["Dns"], json!(["10.32.0.1"]));
        assert_eq!(v["HostConfig"]["DnsSearch"], json!(["weave.local"]));
        // A command given replaces the image's; the entrypoint stays.
        let v = r(json!({"Cmd": ["ip", "-o", "addr"]}));
        assert_eq!(v["Entrypoint"], json!([WAIT_PATH, "/entry"]));
        assert_eq!(v["Cmd"], json!(["ip", "-o", "addr"]));
        // An entrypoint given drops the image's command; "" resets it.
        let v = r(json!({"Entrypoint": ["/bin/sh"]}));
        assert_eq!(
            (&v["Entrypoint"], &v["Cmd"]),
            (&json!([WAIT_PATH, "/bin/sh"]), &json!([]))
        );
        let v = r(json!({"Entrypoint": [""], "Cmd": ["ls"]}));
        assert_eq!(
            (&v["Entrypoint"], &v["Cmd"]),
            (&json!([WAIT_PATH]), &json!(["ls"]))
        );
        let v = r(json!({"Entrypoint": "/bin/sh", "Cmd": "x"}));
        assert_eq!(
            (&v["Entrypoint"], &v["Cmd"]),
            (&json!([WAIT_PATH, "/bin/sh"]), &json!(["x"]))
        );
        // What the user gave wins; binds are added to.
        let v = r(
            json!({"Hostname": "h", "Domainname": "d", "HostConfig": {"Binds": ["/a:/b"], "Dns": ["1.1.1.1"]}}),
        );
        assert_eq!(
            (&v["Hostname"], &v["Domainname"]),
            (&json!("h"), &json!("d"))
        );
        assert_eq!(
            v["HostConfig"]["Binds"],
            json!(["/a:/b", "/var/lib/weft/weft-wait:/.weft/wait:ro"])
        );
        assert_eq!(v["HostConfig"]["Dns"], json!(["1.1.1.1"]));
        // A name that cannot be a hostname is not used as one.
        let v = rewrite(json!({"Cmd": ["x"]}), Some("/my_app.1"), None, &ctx()).unwrap();
        assert!(v["Hostname"].is_null());
        // Nothing to run: left to Docker.
        assert!(rewrite(json!({}), None, Some(&ImageConfig::default()), &ctx()).is_err());
    }
}
