//! The control API's policy endpoints: `/policy/apply`, `/policy/delete`,
//! `/policy/explain`, `GET /policy` (ls), `GET /status/policy` and `/label`.

use super::k8s;
use super::types::{
    LabelRequest, PolicyApplyReply, PolicyApplyRequest, PolicyDeleteReply, PolicyDeleteRequest,
    PolicyExplainReply, PolicyExplainRequest, PolicyLine,
};
use crate::api::Api;
use crate::driver::{Input, PolicyRequest, ask};
use crate::messages::ApiError;
use crate::state::Attachment;
use weft_core::policy::{PolicyKey, check_name};

/// Most documents in one apply.
pub(crate) const DOCUMENTS_MAX: usize = 1024;

/// `POST /policy/apply`: everything parsed and checked first; nothing applied on error.
pub(crate) async fn apply(api: &Api, b: PolicyApplyRequest) -> Result<PolicyApplyReply, ApiError> {
    if b.documents.len() > DOCUMENTS_MAX {
        return Err(ApiError::BadRequest(format!(
            "more than {DOCUMENTS_MAX} documents"
        )));
    }
    let mut objects = Vec::new();
    for d in &b.documents {
        objects.extend(k8s::parse(&d.source, &d.text).map_err(|e| ApiError::BadRequest(e.0))?);
    }
    if objects.is_empty() {
        return Err(ApiError::BadRequest(
            "no NetworkPolicy or Namespace objects in the input".to_owned(),
        ));
    }
    let applied = ask(&api.inbox, |answer| {
        Input::Policy(PolicyRequest::Apply { objects, answer })
    })
    .await??;
    Ok(PolicyApplyReply { applied })
}

/// `POST /policy/delete`.
pub(crate) async fn delete(
    api: &Api,
    b: PolicyDeleteRequest,
) -> Result<PolicyDeleteReply, ApiError> {
    for (what, v) in [("namespace", &b.namespace), ("name", &b.name)] {
        check_name(v).map_err(|e| ApiError::BadRequest(format!("{what} {v:?}: {e}")))?;
    }
    let key = PolicyKey {
        namespace: b.namespace,
        name: b.name,
    };
    let deleted = key.to_string();
    ask(&api.inbox, |answer| {
        Input::Policy(PolicyRequest::Delete { key, answer })
    })
    .await??;
    Ok(PolicyDeleteReply { deleted })
}

/// `GET /policy`.
pub(crate) fn list(api: &Api) -> Vec<PolicyLine> {
    api.policy.status().policies
}

/// The IP protocol number of `tcp`, `udp`, `sctp`, `icmp` or a number.
fn proto_number(p: &str) -> Result<u8, ApiError> {
    match p.to_ascii_lowercase().as_str() {
        "tcp" => Ok(6),
        "udp" => Ok(17),
        "sctp" => Ok(132),
        "icmp" => Ok(1),
        n => n.parse().map_err(|_| {
            ApiError::BadRequest(format!("protocol {p:?}: tcp, udp, sctp, icmp or a number"))
        }),
    }
}

/// `POST /policy/explain`.
pub(crate) fn explain(api: &Api, b: &PolicyExplainRequest) -> Result<PolicyExplainReply, ApiError> {
    let proto = proto_number(&b.proto)?;
    let (allowed, reason) = api.policy.explain(b.src, b.dst, proto, b.port);
    Ok(PolicyExplainReply { allowed, reason })
}

/// `POST /label`: the attachment's labels (and namespace) changed; replicated at once.
pub(crate) async fn label(api: &Api, b: LabelRequest) -> Result<Attachment, ApiError> {
    let inode = crate::plumbing::netns_inode(&b.netns)?;
    let mut p = api.plumbing.lock().await;
    let a = p
        .attachments()
        .iter()
        .find(|a| a.netns_inode == inode)
        .cloned()
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "{} is not attached; `weft attach` it first",
                b.netns.display()
            ))
        })?;
    let meta = super::pods::relabel(a.pod.clone(), &b.labels, b.namespace)
        .map_err(ApiError::BadRequest)?;
    p.set_pod_meta(&a.id, meta.clone())?;
    tracing::info!(
        "attachment {}: namespace {}, labels {:?}",
        a.id,
        meta.namespace.as_deref().unwrap_or("default"),
        meta.labels
    );
    Ok(Attachment { pod: meta, ..a })
}
