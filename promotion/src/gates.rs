//! Gates as code: Rego policies evaluated with `regorus` over one input document.
//!
//! Each gate is a Rego package `sovra.gates.<name>` with a set rule `deny` of reasons; the gate passes when the set
//! is empty. The built-in policies (`promotion/policies/*.rego`) are embedded in the binary; a directory of `.rego`
//! files overrides them by file name (`evaluation.rego` replaces the built-in one) and may add gates.
//!
//! Some checks are not policies and no file can replace them: the OMS signature and every blob digest, the stage
//! order, the promotion chain, the content and the copy ([`BUILT_IN_CHECKS`]) are checked in Rust by the
//! promotion service. A policy file named after one of them, or declaring its package, is refused at load time,
//! and no break-glass exception waives them. A gate whose `deny` is undefined (the package has no `deny` rule, or
//! a complete `deny :=` rule whose body did not match) is an error that names the policy file: an undefined
//! answer is not a pass.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

/// Why a policy file may not take the name or package of a built-in check.
fn built_in_refusal(file: &str, check: &str) -> String {
    format!(
        "policy {file}: `{check}` is a check built into the promotion service (checked in Rust, never by a policy); \
         no policy file may replace it: remove the file or give it another name and package"
    )
}

/// The built-in policies: (file name, source).
pub const BUILTIN_POLICIES: [(&str, &str); 4] = [
    ("residency.rego", include_str!("../policies/residency.rego")),
    ("training_zone.rego", include_str!("../policies/training_zone.rego")),
    ("approvals.rego", include_str!("../policies/approvals.rego")),
    ("evaluation.rego", include_str!("../policies/evaluation.rego")),
];

/// The checks the promotion service makes in Rust, before and beside the policies: no policy file may take one of
/// these names, and no exception waives them.
pub const BUILT_IN_CHECKS: [&str; 5] = ["chain", "content", "copy", "signature", "stage_order"];

/// True for a check of [`BUILT_IN_CHECKS`].
pub fn is_built_in(gate: &str) -> bool {
    BUILT_IN_CHECKS.contains(&gate)
}

/// The outcome of one gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateResult {
    /// The gate (the last component of its package).
    pub gate: String,
    /// `pass`, `fail`, or `exception` (it failed, and a live break-glass exception overrides it).
    pub result: String,
    /// Why it failed (empty when it passed).
    pub reasons: Vec<String>,
    /// The exception that overrides it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception: Option<u64>,
}

impl GateResult {
    /// True unless the gate failed without an exception.
    pub fn allows(&self) -> bool {
        self.result != "fail"
    }
}

/// A loaded set of policies.
#[derive(Debug, Clone)]
pub struct Gates {
    sources: Vec<(String, String)>,
    digest: String,
    warnings: Vec<String>,
}

impl Gates {
    /// The built-in policies, overridden and extended by the `.rego` files of `dir` if given.
    pub fn load(dir: Option<&Path>) -> Result<Gates, String> {
        let mut sources: Vec<(String, String)> =
            BUILTIN_POLICIES.iter().map(|(n, s)| (n.to_string(), s.to_string())).collect();
        if let Some(dir) = dir {
            let entries = std::fs::read_dir(dir)
                .map_err(|e| format!("{}: cannot read the policy directory: {e}", dir.display()))?;
            let mut files: Vec<_> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "rego"))
                .collect();
            files.sort();
            for f in files {
                let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                if let Some(check) = BUILT_IN_CHECKS.iter().find(|c| format!("{c}.rego") == name) {
                    return Err(built_in_refusal(&f.display().to_string(), check));
                }
                let text =
                    std::fs::read_to_string(&f).map_err(|e| format!("{}: cannot read the policy: {e}", f.display()))?;
                match sources.iter_mut().find(|(n, _)| *n == name) {
                    Some(slot) => slot.1 = text,
                    None => sources.push((name, text)),
                }
            }
        }
        sources.sort();
        let mut h = Sha256::new();
        for (n, s) in &sources {
            h.update(n.as_bytes());
            h.update([0]);
            h.update(s.as_bytes());
            h.update([0]);
        }
        // A policy reading a field the gate input does not have would see `undefined` there: say so at load time.
        let warnings = sources
            .iter()
            .flat_map(|(name, text)| {
                crate::payloads::unknown_input_paths(text).into_iter().map(move |p| {
                    format!(
                        "policy {name}: reads `{p}`, which the gate input (version {}) does not have; see `sovra \
                         model gate-schema`",
                        crate::payloads::GATE_INPUT_VERSION
                    )
                })
            })
            .collect();
        let gates = Gates { sources, digest: sovra_registry::hex(&h.finalize()), warnings };
        gates.engine()?; // parse errors and packages of built-in checks surface at load time, naming the file
        Ok(gates)
    }

    /// SHA-256 over the policy files (names and contents, in name order): recorded in every promotion statement.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Warnings found at load time: `input.…` paths a policy reads that the gate input schema lacks.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The policy files.
    pub fn sources(&self) -> &[(String, String)] {
        &self.sources
    }

    /// The gate names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.engine().map(|(_, g)| g.into_keys().collect()).unwrap_or_default()
    }

    /// The engine with every policy loaded, and gate → the policy files declaring its package.
    fn engine(&self) -> Result<(regorus::Engine, BTreeMap<String, Vec<String>>), String> {
        let mut engine = regorus::Engine::new();
        let mut gates: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, text) in &self.sources {
            let package = engine.add_policy(name.clone(), text.clone()).map_err(|e| format!("policy {name}: {e}"))?;
            let gate = package
                .strip_prefix("data.sovra.gates.")
                .filter(|g| !g.contains('.'))
                .ok_or_else(|| format!("policy {name}: package `{package}` must be `sovra.gates.<gate>`"))?;
            if let Some(check) = BUILT_IN_CHECKS.iter().find(|c| **c == gate) {
                return Err(built_in_refusal(name, check));
            }
            gates.entry(gate.to_string()).or_default().push(name.clone());
        }
        Ok((engine, gates))
    }

    /// Evaluates every gate over `input`; results in gate-name order.
    pub fn evaluate(&self, input: &serde_json::Value) -> Result<Vec<GateResult>, String> {
        let (mut engine, gates) = self.engine()?;
        let input = regorus::Value::from_json_str(&input.to_string()).map_err(|e| format!("gate input: {e}"))?;
        engine.set_input(input);
        let mut out = Vec::new();
        for (gate, files) in gates {
            let files = files.join(", ");
            let value = engine.eval_rule(format!("data.sovra.gates.{gate}.deny")).map_err(|e| {
                if e.to_string().contains("not a valid rule path") {
                    format!("gate {gate} (policy {files}): `deny` is undefined: the package has no `deny` rule")
                } else {
                    format!("gate {gate} (policy {files}): evaluation failed: {e}")
                }
            })?;
            let json = value.to_json_str().map_err(|e| format!("gate {gate}: {e}"))?;
            let reasons: Vec<String> = match serde_json::from_str::<serde_json::Value>(&json) {
                Ok(serde_json::Value::Array(items)) => {
                    items.into_iter().map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())).collect()
                }
                // An undefined `deny` is not a pass: the policy is broken or misnamed.
                Ok(serde_json::Value::String(s)) if s == "<undefined>" => {
                    return Err(format!(
                        "gate {gate} (policy {files}): `deny` is undefined; define it as a set of reasons (`deny contains \
                         msg if {{ … }}`), or give a complete rule a default (`default deny := set()`)"
                    ));
                }
                Ok(other) => {
                    return Err(format!("gate {gate} (policy {files}): `deny` must be a set of strings, got {other}"));
                }
                Err(e) => return Err(format!("gate {gate}: {e}")),
            };
            let result = if reasons.is_empty() { "pass" } else { "fail" };
            out.push(GateResult { gate, result: result.into(), reasons, exception: None });
        }
        Ok(out)
    }
}
