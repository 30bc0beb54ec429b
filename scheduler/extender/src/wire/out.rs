//! The extender/v1 response types, written in the Go field names (PascalCase) as kube-scheduler writes them, and
//! the hand-rolled encoder of the filter result (the hot path of a filter call).

use serde::Serialize;
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The `Nodes` field of a filter result: a `v1.NodeList` of the passing nodes, echoed verbatim.
#[derive(Debug, Clone, Serialize)]
pub struct NodeListOut {
    /// Always `{}`.
    pub metadata: BTreeMap<String, String>,
    /// The passing Node objects, as received.
    pub items: Vec<Box<RawValue>>,
}

/// `ExtenderFilterResult`, written with Go's field names.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExtenderFilterResult<'a> {
    /// Passing nodes as objects (`nodeCacheCapable: false`), else `null`.
    pub nodes: Option<NodeListOut>,
    /// Passing node names (`nodeCacheCapable: true`), in request order, else `null`.
    pub node_names: Option<Vec<&'a str>>,
    /// Nodes that fail for now (capacity): preemption may still consider them.
    pub failed_nodes: ReasonMap<'a>,
    /// Nodes that can never pass (residency, purpose, hardware): preemption skips them.
    pub failed_and_unresolvable_nodes: ReasonMap<'a>,
    /// Non-empty when the call failed as a whole.
    pub error: String,
}

/// Node name → reason (`FailedNodesMap`), written as a JSON object in insertion order — the request's order, so
/// the same request always gives the same bytes. Reasons are shared between the nodes that fail for the same one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReasonMap<'a>(pub Vec<(&'a str, Arc<str>)>);

impl<'a> ReasonMap<'a> {
    /// Adds a node and its reason.
    pub fn insert(&mut self, node: &'a str, reason: impl Into<Arc<str>>) {
        self.0.push((node, reason.into()));
    }

    /// The reason given for `node`, if any (the last one when a node is named twice).
    pub fn get(&self, node: &str) -> Option<&str> {
        self.0.iter().rev().find(|(n, _)| *n == node).map(|(_, r)| &**r)
    }

    /// The nodes, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(n, _)| *n)
    }

    /// The reasons, in order.
    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(_, r)| &**r)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::ops::Index<&str> for ReasonMap<'_> {
    type Output = str;
    fn index(&self, node: &str) -> &str {
        self.get(node).unwrap_or_else(|| panic!("no reason for node {node}"))
    }
}

impl Serialize for ReasonMap<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (n, r) in &self.0 {
            m.serialize_entry(n, &**r)?;
        }
        m.end()
    }
}

/// One `HostPriority` of a prioritize result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct HostPriority<'a> {
    /// Node name.
    pub host: &'a str,
    /// 0..=10.
    pub score: i64,
}

/// `MetaVictims` of a preemption result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct MetaVictimsOut {
    /// Victims by UID (at least one).
    pub pods: Vec<MetaPodOut>,
    /// As received.
    #[serde(rename = "NumPDBViolations")]
    pub num_pdb_violations: i64,
}

/// A victim named by UID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MetaPodOut {
    /// The pod's UID.
    #[serde(rename = "UID")]
    pub uid: String,
}

/// `ExtenderPreemptionResult`: always in the meta (UID) form.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExtenderPreemptionResult {
    /// The nodes on which preemption may happen, with their victims.
    #[serde(rename = "NodeNameToMetaVictims")]
    pub node_name_to_meta_victims: BTreeMap<String, MetaVictimsOut>,
}

/// `ExtenderBindingResult`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExtenderBindingResult {
    /// Non-empty when binding failed.
    pub error: String,
}

/// Writes `s` as a JSON string.
fn push_json_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(&mut *out, s).expect("writing a string to a Vec cannot fail");
    }
}

/// Encodes a filter result: the same bytes as `serde_json::to_vec`, faster — each distinct reason (shared by
/// many nodes) is escaped once. At 5,000 candidates most of the answer is reasons.
pub fn encode_filter_result(r: &ExtenderFilterResult<'_>) -> Vec<u8> {
    let entries = r.failed_nodes.len() + r.failed_and_unresolvable_nodes.len();
    let mut out = Vec::with_capacity(64 + entries * 96 + r.node_names.as_ref().map_or(0, |n| n.len() * 24));
    out.extend_from_slice(b"{\"Nodes\":");
    serde_json::to_writer(&mut out, &r.nodes).expect("writing to a Vec cannot fail");
    out.extend_from_slice(b",\"NodeNames\":");
    match &r.node_names {
        None => out.extend_from_slice(b"null"),
        Some(names) => {
            out.push(b'[');
            for (i, n) in names.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                push_json_str(&mut out, n);
            }
            out.push(b']');
        }
    }
    let mut encoded: rustc_hash::FxHashMap<*const u8, Vec<u8>> = Default::default();
    for (key, map) in
        [("FailedNodes", &r.failed_nodes), ("FailedAndUnresolvableNodes", &r.failed_and_unresolvable_nodes)]
    {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":{");
        for (i, (node, reason)) in map.0.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_json_str(&mut out, node);
            out.push(b':');
            let text = encoded.entry(reason.as_ptr()).or_insert_with(|| {
                let mut v = Vec::with_capacity(reason.len() + 2);
                push_json_str(&mut v, reason);
                v
            });
            out.extend_from_slice(text);
        }
        out.push(b'}');
    }
    out.extend_from_slice(b",\"Error\":");
    push_json_str(&mut out, &r.error);
    out.push(b'}');
    out
}
