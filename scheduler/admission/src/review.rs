//! AdmissionReview `admission.k8s.io/v1`: the request kube-apiserver sends and the response it reads.
//!
//! Objects stay JSON values (the webhook reads a few fields and must not lose the others when it patches). A body
//! that is not a well-formed review is answered with a denial naming what is wrong ([`deny_malformed`]), never an
//! allow: kube-apiserver then refuses the object (the answer's `uid` does not match, or it says not allowed).

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// API version of the reviews this webhook speaks.
pub const API_VERSION: &str = "admission.k8s.io/v1";

/// A group/version/kind or group/version/resource.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupVersionKind {
    /// API group (`""` for the core group).
    #[serde(default)]
    pub group: String,
    /// Version.
    #[serde(default)]
    pub version: String,
    /// Kind (or, for a resource, absent).
    #[serde(default)]
    pub kind: String,
    /// Resource (for `resource`, absent for `kind`).
    #[serde(default)]
    pub resource: String,
}

/// Who sends the request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct UserInfo {
    /// User name, e.g. `system:node:n1` or `alice`.
    #[serde(default)]
    pub username: String,
    /// Groups.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// The request part of an AdmissionReview.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    /// Echoed in the response.
    pub uid: String,
    /// The object's kind.
    #[serde(default)]
    pub kind: GroupVersionKind,
    /// The resource.
    #[serde(default)]
    pub resource: GroupVersionKind,
    /// The subresource (`status`, `binding`, …) or empty.
    #[serde(default)]
    pub sub_resource: String,
    /// The object's name (may be empty on CREATE with `generateName`).
    #[serde(default)]
    pub name: String,
    /// The namespace (empty for cluster-scoped objects).
    #[serde(default)]
    pub namespace: String,
    /// `CREATE`, `UPDATE`, `DELETE` or `CONNECT`.
    #[serde(default)]
    pub operation: String,
    /// Who asks.
    #[serde(default)]
    pub user_info: UserInfo,
    /// The new object (CREATE, UPDATE).
    #[serde(default)]
    pub object: Value,
    /// The old object (UPDATE, DELETE).
    #[serde(default)]
    pub old_object: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewIn {
    api_version: String,
    kind: String,
    request: Option<Request>,
}

/// A review that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed AdmissionReview: {reason}")]
pub struct Malformed {
    /// The request's uid, when the body had one where it belongs.
    pub uid: String,
    /// What is wrong.
    pub reason: String,
}

/// Reads an AdmissionReview v1 request.
pub fn decode(body: &[u8]) -> Result<Request, Malformed> {
    let uid = || {
        serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.pointer("/request/uid").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_default()
    };
    let review: ReviewIn = serde_json::from_slice(body).map_err(|e| Malformed {
        uid: uid(),
        reason: format!("the body is not an AdmissionReview ({e}); kube-apiserver sends {API_VERSION} reviews"),
    })?;
    if review.api_version != API_VERSION || review.kind != "AdmissionReview" {
        return Err(Malformed {
            uid: uid(),
            reason: format!(
                "apiVersion {:?} kind {:?}: this webhook speaks only {API_VERSION} AdmissionReview (set \
                 admissionReviewVersions: [v1])",
                review.api_version, review.kind
            ),
        });
    }
    let request =
        review.request.ok_or_else(|| Malformed { uid: String::new(), reason: "the review has no request".into() })?;
    if request.uid.is_empty() {
        return Err(Malformed { uid: String::new(), reason: "the review's request has no uid".into() });
    }
    Ok(request)
}

/// One JSON Patch (RFC 6902) operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PatchOp {
    /// `add` (which replaces an existing member) is the only one the webhook uses.
    pub op: &'static str,
    /// JSON pointer.
    pub path: String,
    /// The value.
    pub value: Value,
}

/// What the webhook answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Admitted, with a patch for a mutating call (empty: unchanged).
    Allow(Vec<PatchOp>),
    /// Refused, with the reason shown to the user.
    Deny(String),
}

/// The response review for `uid`.
pub fn encode(uid: &str, verdict: &Verdict) -> Value {
    let response = match verdict {
        Verdict::Allow(patch) if patch.is_empty() => serde_json::json!({"uid": uid, "allowed": true}),
        Verdict::Allow(patch) => serde_json::json!({
            "uid": uid, "allowed": true, "patchType": "JSONPatch",
            "patch": base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(patch).unwrap_or_default()),
        }),
        Verdict::Deny(message) => serde_json::json!({
            "uid": uid, "allowed": false,
            "status": {"code": 403, "reason": "Forbidden", "message": message},
        }),
    };
    serde_json::json!({"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response})
}

/// The denial for a body that could not be read.
pub fn deny_malformed(m: &Malformed) -> Value {
    encode(&m.uid, &Verdict::Deny(format!("sovra-admission refuses a {m}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_bodies_are_denied_with_the_reason_never_allowed() {
        for (body, needle) in [
            (&b"not json"[..], "not an AdmissionReview"),
            (br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"u"}}"#, "v1beta1"),
            (br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#, "no request"),
            (br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":""}}"#, "no uid"),
            (br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":7}}"#, "not an"),
        ] {
            let m = decode(body).expect_err("malformed");
            assert!(m.reason.contains(needle), "{}: {}", String::from_utf8_lossy(body), m.reason);
            let out = deny_malformed(&m);
            assert_eq!(out["response"]["allowed"], false);
            assert!(out["response"]["status"]["message"].as_str().unwrap_or("").contains(needle));
        }
        // The uid is echoed when it can be read, so kube-apiserver shows the reason.
        let m =
            decode(br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"u-1"}}"#)
                .expect_err("malformed");
        assert_eq!(deny_malformed(&m)["response"]["uid"], "u-1");
    }

    #[test]
    fn a_patch_is_base64_json_patch() {
        let v = encode("u", &Verdict::Allow(vec![PatchOp { op: "add", path: "/a".into(), value: 1.into() }]));
        assert_eq!(v["response"]["patchType"], "JSONPatch");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(v["response"]["patch"].as_str().unwrap_or(""))
            .unwrap_or_default();
        assert_eq!(String::from_utf8_lossy(&raw), r#"[{"op":"add","path":"/a","value":1}]"#);
        assert_eq!(encode("u", &Verdict::Allow(vec![]))["response"], serde_json::json!({"uid": "u", "allowed": true}));
    }
}
