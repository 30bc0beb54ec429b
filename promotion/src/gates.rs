//! Gates as code: Rego policies evaluated with `regorus` over one input document.
//!
//! Each gate is a Rego package `sovra.gates.<name>` with a set rule `deny` of reasons; the gate passes when the set
//! is empty. The built-in policies (`promotion/policies/*.rego`) are embedded in the binary; a directory of `.rego`
//! files overrides them by file name (`signature.rego` replaces the built-in one) and may add gates.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;

/// The built-in policies: (file name, source).
pub const BUILTIN_POLICIES: [(&str, &str); 5] = [
    ("signature.rego", include_str!("../policies/signature.rego")),
    ("residency.rego", include_str!("../policies/residency.rego")),
    ("training_zone.rego", include_str!("../policies/training_zone.rego")),
    ("approvals.rego", include_str!("../policies/approvals.rego")),
    ("evaluation.rego", include_str!("../policies/evaluation.rego")),
];

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
        let gates = Gates { sources, digest: sovra_registry::hex(&h.finalize()) };
        gates.engine()?; // parse errors surface at load time, naming the file
        Ok(gates)
    }

    /// SHA-256 over the policy files (names and contents, in name order): recorded in every promotion statement.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The policy files.
    pub fn sources(&self) -> &[(String, String)] {
        &self.sources
    }

    /// The gate names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names = self.engine().map(|(_, g)| g).unwrap_or_default();
        names.sort();
        names
    }

    fn engine(&self) -> Result<(regorus::Engine, Vec<String>), String> {
        let mut engine = regorus::Engine::new();
        let mut gates = Vec::new();
        for (name, text) in &self.sources {
            let package = engine.add_policy(name.clone(), text.clone()).map_err(|e| format!("policy {name}: {e}"))?;
            let gate = package
                .strip_prefix("data.sovra.gates.")
                .filter(|g| !g.contains('.'))
                .ok_or_else(|| format!("policy {name}: package `{package}` must be `sovra.gates.<gate>`"))?;
            if !gates.iter().any(|g| g == gate) {
                gates.push(gate.to_string());
            }
        }
        Ok((engine, gates))
    }

    /// Evaluates every gate over `input`; results in gate-name order.
    pub fn evaluate(&self, input: &serde_json::Value) -> Result<Vec<GateResult>, String> {
        let (mut engine, mut gates) = self.engine()?;
        gates.sort();
        let input = regorus::Value::from_json_str(&input.to_string()).map_err(|e| format!("gate input: {e}"))?;
        engine.set_input(input);
        let mut out = Vec::new();
        for gate in gates {
            let value = engine
                .eval_rule(format!("data.sovra.gates.{gate}.deny"))
                .map_err(|e| format!("gate {gate}: evaluation failed: {e}"))?;
            let json = value.to_json_str().map_err(|e| format!("gate {gate}: {e}"))?;
            let reasons: Vec<String> = match serde_json::from_str::<serde_json::Value>(&json) {
                Ok(serde_json::Value::Array(items)) => {
                    items.into_iter().map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())).collect()
                }
                // An undefined `deny` (no rule body matched and no default) means nothing was denied.
                Ok(serde_json::Value::String(s)) if s == "<undefined>" => Vec::new(),
                Ok(serde_json::Value::Null) => Vec::new(),
                Ok(other) => return Err(format!("gate {gate}: `deny` must be a set of strings, got {other}")),
                Err(e) => return Err(format!("gate {gate}: {e}")),
            };
            let result = if reasons.is_empty() { "pass" } else { "fail" };
            out.push(GateResult { gate, result: result.into(), reasons, exception: None });
        }
        Ok(out)
    }
}
