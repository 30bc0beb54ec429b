//! Typed payloads: what approvals, exceptions and withdrawals sign, and the document the gates read.
//!
//! Each signed payload carries its `_type` (`https://sovra.dev/approval/v1`, …): the version of its shape. A
//! payload is parsed into its struct, refusing unknown fields, so a grant that does not say exactly what this
//! version of Sovra means is refused rather than half-read. The gate input carries `version` and ships a JSON
//! Schema (`sovra model gate-schema`, committed as `promotion/policies/gate-input.schema.json`): the contract a
//! policy author writes against. [`unknown_input_paths`] lists the `input.…` paths a policy reads that the schema
//! does not have; the policies' loader turns them into warnings.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `_type` of approvals.
pub const APPROVAL_V1: &str = "https://sovra.dev/approval/v1";
/// `_type` of exceptions.
pub const EXCEPTION_V1: &str = "https://sovra.dev/exception/v1";
/// `_type` of withdrawals.
pub const WITHDRAWAL_V1: &str = "https://sovra.dev/withdrawal/v1";
/// `version` of the gate input.
pub const GATE_INPUT_VERSION: u32 = 1;

/// What an approver signs: `model@digest` may go `from` → `to` until `expires_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// [`APPROVAL_V1`].
    #[serde(rename = "_type")]
    pub kind: String,
    /// Model name.
    pub model: String,
    /// The version (OMS root digest).
    pub digest: String,
    /// Source stage.
    pub from: String,
    /// Target stage.
    pub to: String,
    /// The approver, as the promotion config names the key.
    pub approver: String,
    /// Unix time it was signed.
    pub issued_at: u64,
    /// Unix time it stops counting.
    pub expires_at: u64,
}

/// What an admin signs to let one gate pass for one version until `expires_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Exception {
    /// [`EXCEPTION_V1`].
    #[serde(rename = "_type")]
    pub kind: String,
    /// Model name.
    pub model: String,
    /// The version.
    pub digest: String,
    /// The policy gate it overrides (never a built-in check).
    pub gate: String,
    /// Why (audited).
    pub reason: String,
    /// The admin, as the promotion config names the key.
    pub admin: String,
    /// Unix time it was signed.
    pub granted_at: u64,
    /// Unix time it stops applying.
    pub expires_at: u64,
}

/// What an admin signs to take a version out of one data zone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WithdrawalGrant {
    /// [`WITHDRAWAL_V1`].
    #[serde(rename = "_type")]
    pub kind: String,
    /// Model name.
    pub model: String,
    /// The version.
    pub digest: String,
    /// The zone of the data zone.
    pub zone: String,
    /// Its stage.
    pub stage: String,
    /// Why (audited, shown to refused pulls).
    pub reason: String,
    /// The admin, as the promotion config names the key.
    pub admin: String,
    /// Unix time it was signed.
    pub issued_at: u64,
}

/// Parses a signed payload into `T`, checking its `_type`; the error says what is wrong with it.
pub fn parse<T: serde::de::DeserializeOwned>(payload: &[u8], kind: &str) -> Result<T, String> {
    let v: Value = serde_json::from_slice(payload).map_err(|e| format!("the payload is not JSON: {e}"))?;
    if v["_type"].as_str() != Some(kind) {
        return Err(format!("the payload's `_type` is {}, expected {kind}", v["_type"]));
    }
    serde_json::from_value(v).map_err(|e| format!("the payload is not a {kind} payload: {e}"))
}

/// The model, as the gates see it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct InputModel {
    /// Model name.
    pub name: String,
    /// The version (OMS root digest).
    pub digest: String,
    /// Residency class of its training data.
    pub residency_class: String,
    /// Number of files.
    pub files: usize,
    /// Total bytes.
    pub bytes: u64,
}

/// One signed file.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct InputResource {
    /// Its path in the model.
    pub name: String,
    /// Its SHA-256.
    pub digest: String,
}

/// The signed manifest.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct InputManifest {
    /// The root digest.
    pub root_digest: String,
    /// The files.
    pub resources: Vec<InputResource>,
}

/// The result of the built-in signature check (made in Rust; policies may read it, never decide it).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct InputSignature {
    /// Whether it verified.
    pub verified: bool,
    /// Why not (empty when it did).
    pub error: String,
}

/// The model's signer.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct InputSigner {
    /// Its key hint.
    pub hint: String,
    /// Its name in the config, if it is a configured signer.
    pub name: Option<String>,
    /// Whether it is a configured signer.
    pub allowed: bool,
    /// The configured signers.
    pub allowed_names: Vec<String>,
}

/// The evaluation thresholds of the config.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct InputEvaluation {
    /// Metric name → `{min, max}`.
    pub thresholds: std::collections::BTreeMap<String, InputThreshold>,
}

/// One threshold.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct InputThreshold {
    /// Lowest value allowed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Highest value allowed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

/// One approval that counts.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct InputApproval {
    /// The approver.
    pub approver: String,
    /// Its record (none for an approval passed as a file).
    pub record: Option<u64>,
}

/// Approvals of this promotion's edge.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct InputApprovals {
    /// How many the config requires for the target stage.
    pub required: usize,
    /// Those that count.
    pub valid: Vec<InputApproval>,
    /// Why the others do not.
    pub rejected: Vec<String>,
    /// The configured approvers.
    pub approvers: Vec<String>,
}

/// A data zone.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct InputDataZone {
    /// `training`, `registry` or `inference`.
    pub stage: String,
    /// The zone.
    pub zone: String,
}

/// The target zone and how it fares against the model's residency class.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct InputTarget {
    /// The zone's attributes as the cluster config gives them (country, jurisdiction, operator, certifications…).
    pub zone: Option<Value>,
    /// Whether it satisfies the residency class.
    pub satisfies_residency: bool,
    /// What it violates.
    pub residency_violations: Vec<String>,
}

/// Where the model was trained.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct InputTraining {
    /// `training_zones` of the config.
    pub permitted_zones: Vec<String>,
    /// Whether every zone the training job ran in satisfies the residency class.
    pub zone_satisfies_residency: bool,
    /// What they violate (each message names the zone).
    pub residency_violations: Vec<String>,
    /// Where the training facts come from: `receipts` (signed by the scheduler, verified), `self-declared` (the
    /// provenance's `training_zone`, accepted only when `provenance.require_receipts` is false) or `none`.
    pub source: String,
    /// `provenance.require_receipts` of the config.
    pub receipts_required: bool,
    /// Why the placement receipts were refused (empty when they verified or there are none).
    pub receipt_errors: Vec<String>,
    /// The zones the training job ran in: every replica of every attempt (or the self-declared zone).
    pub zones: Vec<String>,
    /// The training job the receipts are about.
    pub job: Option<u64>,
    /// Whether the job's last attempt ended with every replica succeeded (receipts only).
    pub job_succeeded: bool,
    /// The scheduler key that signed the receipts (its configured name).
    pub scheduler_key: Option<String>,
    /// Every replica run: attempt, replica, node, zone, outcome.
    pub runs: Vec<Value>,
}

/// The document every gate evaluates (`input` in Rego); `sovra model promote --dry-run --explain` prints it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct GateInput {
    /// [`GATE_INPUT_VERSION`].
    pub version: u32,
    /// The model version.
    pub model: InputModel,
    /// The signed manifest.
    pub manifest: InputManifest,
    /// The built-in signature check's result.
    pub signature: InputSignature,
    /// The signer.
    pub signer: InputSigner,
    /// Provenance as pushed (training job, training zone, …).
    pub provenance: Value,
    /// Evaluation metrics as pushed (name → number).
    pub metrics: Value,
    /// The thresholds.
    pub evaluation: InputEvaluation,
    /// Approvals.
    pub approvals: InputApprovals,
    /// The source data zone.
    pub from: InputDataZone,
    /// The target data zone.
    pub to: InputDataZone,
    /// The target zone.
    pub target: InputTarget,
    /// The residency class's definition.
    pub residency_class: Option<Value>,
    /// Training.
    pub training: InputTraining,
    /// The service's clock (Unix seconds).
    pub now: u64,
}

/// The gate input's JSON Schema.
pub fn gate_input_schema() -> Value {
    schema().clone()
}

/// The schema, generated once per process (the policies' loader walks it for every file).
fn schema() -> &'static Value {
    static SCHEMA: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(|| serde_json::to_value(schemars::schema_for!(GateInput)).unwrap_or(Value::Null))
}

/// The `input.a.b` paths `policy` reads (dotted and `input["a"]` forms are not told apart: only dotted paths are
/// read), in order of first appearance.
fn input_paths(policy: &str) -> Vec<Vec<String>> {
    let bytes = policy.as_bytes();
    let mut out: Vec<Vec<String>> = Vec::new();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while let Some(pos) = policy[i..].find("input.") {
        let start = i + pos;
        i = start + "input.".len();
        if start > 0 && (ident(bytes[start - 1]) || bytes[start - 1] == b'.') {
            continue;
        }
        let mut path = Vec::new();
        let mut j = i;
        loop {
            let k = j;
            while j < bytes.len() && ident(bytes[j]) {
                j += 1;
            }
            if j == k {
                break;
            }
            path.push(policy[k..j].to_string());
            if j < bytes.len() && bytes[j] == b'.' {
                j += 1;
            } else {
                break;
            }
        }
        if !path.is_empty() && !out.contains(&path) {
            out.push(path);
        }
        i = j.max(i);
    }
    out
}

/// Follows `$ref`s and `anyOf`/`oneOf` (an `Option` is `anyOf [T, null]`) to the object schemas `s` may be.
fn objects<'a>(root: &'a Value, s: &'a Value, depth: usize) -> Vec<&'a Value> {
    if depth > 16 {
        return Vec::new();
    }
    if let Some(r) = s["$ref"].as_str() {
        let name = r.rsplit('/').next().unwrap_or("");
        return objects(root, &root["$defs"][name], depth + 1);
    }
    let alts: Vec<&Value> = ["anyOf", "oneOf", "allOf"].iter().filter_map(|k| s[*k].as_array()).flatten().collect();
    if !alts.is_empty() {
        return alts.into_iter().flat_map(|a| objects(root, a, depth + 1)).collect();
    }
    vec![s]
}

/// True when `path` can exist in a document of `schema` (any key under a free-form value or a map).
fn has_path(root: &Value, schema: &Value, path: &[String]) -> bool {
    let Some((first, rest)) = path.split_first() else { return true };
    objects(root, schema, 0).into_iter().any(|s| {
        const CONSTRAINTS: [&str; 6] = ["type", "properties", "additionalProperties", "items", "enum", "const"];
        if s.as_bool() == Some(true) || s.as_object().is_some_and(|o| !CONSTRAINTS.iter().any(|k| o.contains_key(*k))) {
            return true; // any value (a free-form document such as provenance or a zone's attributes)
        }
        if let Some(p) = s["properties"].get(first) {
            return has_path(root, p, rest);
        }
        match &s["additionalProperties"] {
            Value::Bool(true) => true,
            extra @ Value::Object(_) => has_path(root, extra, rest),
            _ => false,
        }
    })
}

/// The `input.…` paths `policy` reads that the gate input schema does not have, dotted.
pub fn unknown_input_paths(policy: &str) -> Vec<String> {
    let schema = schema();
    input_paths(policy)
        .into_iter()
        .filter(|p| !has_path(schema, schema, p))
        .map(|p| format!("input.{}", p.join(".")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_found_and_checked_against_the_schema() {
        let rego = "deny contains m if { input.metrics.accuracy < input.evaluation.thresholds.accuracy.min\n\
                    not input.signer.allowed; x := input.target.zone.country; input.modle.name == \"a\"\n\
                    myinput.x == 1; input.approvals.valid[_].approver; input.signature.verifed }";
        let paths: Vec<String> = input_paths(rego).into_iter().map(|p| p.join(".")).collect();
        assert!(paths.contains(&"metrics.accuracy".to_string()), "{paths:?}");
        assert!(!paths.iter().any(|p| p == "x"), "myinput is not input: {paths:?}");
        assert_eq!(unknown_input_paths(rego), ["input.modle.name", "input.signature.verifed"]);
    }

    #[test]
    fn the_builtin_policies_read_only_what_the_schema_has() {
        for (name, text) in crate::gates::BUILTIN_POLICIES {
            assert_eq!(unknown_input_paths(text), Vec::<String>::new(), "{name}");
        }
    }

    #[test]
    fn the_committed_schema_is_the_generated_one() {
        let committed: Value =
            serde_json::from_str(include_str!("../policies/gate-input.schema.json")).expect("the committed schema");
        assert_eq!(
            committed,
            gate_input_schema(),
            "run `sovra model gate-schema > promotion/policies/gate-input.schema.json`"
        );
    }

    #[test]
    fn signed_payloads_refuse_unknown_fields_and_other_types() {
        let ok = br#"{"_type":"https://sovra.dev/approval/v1","model":"m","digest":"d","from":"registry",
            "to":"inference","approver":"alice","issued_at":1,"expires_at":2}"#;
        assert_eq!(parse::<Approval>(ok, APPROVAL_V1).unwrap().approver, "alice");
        let extra = br#"{"_type":"https://sovra.dev/approval/v1","model":"m","digest":"d","from":"registry",
            "to":"inference","approver":"alice","issued_at":1,"expires_at":2,"zone":"any"}"#;
        assert!(parse::<Approval>(extra, APPROVAL_V1).unwrap_err().contains("zone"));
        assert!(parse::<Approval>(ok, EXCEPTION_V1).unwrap_err().contains("_type"));
    }
}
