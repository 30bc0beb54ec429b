//! The extender/v1 wire types of kube-scheduler, decoded the way the scheduler's Go decoder reads them.
//!
//! kube-scheduler's extender structs carry no JSON tags, so it writes the Go field names (`Pod`, `NodeNames`,
//! `FailedNodes`, …) and its decoder matches keys **case-insensitively**. Go also writes nil maps, slices and
//! pointers as `null`. The request types here therefore:
//! - match every key ASCII-case-insensitively (`NodeNames`, `nodeNames`, `nodenames` are one key; when a key is
//!   repeated the last one wins, as in Go);
//! - read `null` as "absent" for every field, at every depth;
//! - ignore unknown keys, inside the Kubernetes objects too.
//!
//! The embedded Kubernetes objects (`v1.Pod`, `v1.Node`) are decoded only as far as the extender needs them, with
//! the same leniency. Responses are written in the Go field names (PascalCase), as the scheduler writes them itself.

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

/// `MaxExtenderPriority` of extender/v1: the highest score prioritize may give.
pub const MAX_EXTENDER_PRIORITY: i64 = 10;

/// `MinExtenderPriority` of extender/v1: the lowest score prioritize may give.
pub const MIN_EXTENDER_PRIORITY: i64 = 0;

/// `MaxNodeScore` of the scheduler framework: an extender score of 10 is scaled to this (× 10).
pub const MAX_NODE_SCORE: i64 = 100;

/// A value that reads `null` as the type's default (Go's nil).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrNull<T>(pub T);

impl<'de, T: Deserialize<'de> + Default> Deserialize<'de> for OrNull<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(OrNull(Option::<T>::deserialize(d)?.unwrap_or_default()))
    }
}

/// A string-to-string map (labels, annotations) in which a `null` value reads as the empty string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StrMap(pub BTreeMap<String, String>);

impl<'de> Deserialize<'de> for StrMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let m = Option::<BTreeMap<String, Option<String>>>::deserialize(d)?.unwrap_or_default();
        Ok(StrMap(m.into_iter().map(|(k, v)| (k, v.unwrap_or_default())).collect()))
    }
}

/// A Kubernetes quantity as written in JSON: normally a string (`"500m"`, `"1Gi"`), a number accepted too.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuantityText(pub String);

impl<'de> Deserialize<'de> for QuantityText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = QuantityText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a quantity such as \"2\", \"500m\" or \"1Gi\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<QuantityText, E> {
                Ok(QuantityText(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<QuantityText, E> {
                Ok(QuantityText(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<QuantityText, E> {
                Ok(QuantityText(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<QuantityText, E> {
                Ok(QuantityText(v.to_string()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<QuantityText, E> {
                Ok(QuantityText::default())
            }
        }
        d.deserialize_any(V)
    }
}

/// Reads a JSON object into a struct, matching keys ASCII-case-insensitively; unknown keys are skipped and `null`
/// fields keep their default. One `key => field: Type` line per field; the field type must implement `Default`.
macro_rules! ci_struct {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* $key:literal => $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        write!(f, "a JSON object ({})", stringify!($name))
                    }
                    fn visit_unit<E: de::Error>(self) -> Result<$name, E> {
                        Ok($name::default())
                    }
                    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<$name, A::Error> {
                        #[allow(unused_mut)]
                        let mut out = $name::default();
                        while let Some(key) = map.next_key::<KeyText<'de>>()? {
                            let key = key.as_str();
                            $(
                                if key.eq_ignore_ascii_case($key) {
                                    out.$field = map.next_value::<OrNull<$ty>>()?.0;
                                    continue;
                                }
                            )*
                            map.next_value::<IgnoredAny>()?;
                        }
                        Ok(out)
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

/// A JSON string, borrowed from the request body when it has no escapes (node names: no allocation per name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyText<'de>(pub Cow<'de, str>);

impl KeyText<'_> {
    fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for KeyText<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeyText<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<KeyText<'de>, E> {
                Ok(KeyText(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyText<'de>, E> {
                Ok(KeyText(std::borrow::Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<KeyText<'de>, E> {
                Ok(KeyText(std::borrow::Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

ci_struct! {
    /// `metadata` of a Kubernetes object: only what the extender reads.
    pub struct ObjectMeta {
        /// Object name.
        "name" => name: String,
        /// Namespace (pods).
        "namespace" => namespace: String,
        /// UID.
        "uid" => uid: String,
        /// Resource version (the watches resume from it).
        "resourceVersion" => resource_version: String,
        /// Labels (`null` values read as "").
        "labels" => labels: StrMap,
        /// Annotations (`null` values read as "").
        "annotations" => annotations: StrMap,
    }
}

ci_struct! {
    /// `resources` of a container.
    pub struct ResourceRequirements {
        /// `requests`: resource name → quantity.
        "requests" => requests: BTreeMap<String, QuantityText>,
        /// `limits`: resource name → quantity.
        "limits" => limits: BTreeMap<String, QuantityText>,
    }
}

ci_struct! {
    /// A container of a pod: only its name, resources and restart policy.
    pub struct Container {
        /// Container name.
        "name" => name: String,
        /// Requests and limits.
        "resources" => resources: ResourceRequirements,
        /// `Always` on an init container makes it a native sidecar (runs beside the containers); empty otherwise.
        "restartPolicy" => restart_policy: String,
    }
}

ci_struct! {
    /// `spec` of a pod: only what the extender reads.
    pub struct PodSpec {
        /// Containers (`null` reads as none).
        "containers" => containers: Vec<Option<Container>>,
        /// Init containers.
        "initContainers" => init_containers: Vec<Option<Container>>,
        /// The node the pod is bound to; empty while pending.
        "nodeName" => node_name: String,
        /// The scheduler that places the pod.
        "schedulerName" => scheduler_name: String,
        /// The pod's priority (from its PriorityClass).
        "priority" => priority: Option<i32>,
        /// Pod-level requests and limits (KEP-2837; only CPU, memory and huge pages count at pod level).
        "resources" => resources: ResourceRequirements,
        /// The runtime class's overhead, added to the pod's requests.
        "overhead" => overhead: BTreeMap<String, QuantityText>,
    }
}

ci_struct! {
    /// `status` of a pod: only its phase.
    pub struct PodStatus {
        /// `Pending`, `Running`, `Succeeded`, `Failed` or `Unknown`.
        "phase" => phase: String,
    }
}

ci_struct! {
    /// A `v1.Pod`, as far as the extender reads it.
    pub struct Pod {
        /// Name, namespace, UID, labels, annotations.
        "metadata" => metadata: ObjectMeta,
        /// Containers, node name, priority.
        "spec" => spec: PodSpec,
        /// Phase.
        "status" => status: PodStatus,
    }
}

ci_struct! {
    /// The `metadata` of a Node, as read from a `Nodes.items[]` entry.
    pub struct NodeHeader {
        /// `metadata.name` and labels.
        "metadata" => metadata: ObjectMeta,
    }
}

/// A `v1.NodeList` (the `Nodes` field when `nodeCacheCapable` is false). The items are kept verbatim so that the
/// nodes that pass can be echoed back unchanged.
#[derive(Debug, Clone, Default)]
pub struct NodeList {
    /// Each item as the scheduler sent it, with its decoded name (empty when it has none).
    pub items: Vec<(String, Box<RawValue>)>,
}

impl<'de> Deserialize<'de> for NodeList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        ci_struct! {
            /// The raw list.
            pub struct RawList {
                /// Items, verbatim.
                "items" => items: Vec<Option<Box<RawValue>>>,
            }
        }
        let raw = RawList::deserialize(d)?;
        let mut items = Vec::with_capacity(raw.items.len());
        for item in raw.items.into_iter().flatten() {
            let header: NodeHeader = serde_json::from_str(item.get()).map_err(de::Error::custom)?;
            items.push((header.metadata.name, item));
        }
        Ok(NodeList { items })
    }
}

/// `ExtenderArgs`: the body of a filter or prioritize call. Node names are borrowed from the body.
#[derive(Debug, Clone, Default)]
pub struct ExtenderArgs<'a> {
    /// The pod being scheduled.
    pub pod: Option<Pod>,
    /// Candidate nodes as full objects (`nodeCacheCapable: false`), else `null`.
    pub nodes: Option<NodeList>,
    /// Candidate node names (`nodeCacheCapable: true`), else `null`.
    pub node_names: Option<Vec<Cow<'a, str>>>,
}

impl<'de> Deserialize<'de> for ExtenderArgs<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ExtenderArgs<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object (ExtenderArgs)")
            }
            fn visit_unit<E: de::Error>(self) -> Result<ExtenderArgs<'de>, E> {
                Ok(ExtenderArgs::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ExtenderArgs<'de>, A::Error> {
                let mut out = ExtenderArgs::default();
                while let Some(key) = map.next_key::<KeyText<'de>>()? {
                    let key = key.as_str();
                    if key.eq_ignore_ascii_case("Pod") {
                        out.pod = map.next_value()?;
                    } else if key.eq_ignore_ascii_case("Nodes") {
                        out.nodes = map.next_value()?;
                    } else if key.eq_ignore_ascii_case("NodeNames") {
                        out.node_names = match map.next_value::<Option<&'de RawValue>>()? {
                            None => None,
                            Some(raw) => Some(node_names(raw.get()).map_err(de::Error::custom)?),
                        };
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_any(V)
    }
}

/// Reads the `NodeNames` array (already checked to be one JSON value): names are borrowed from the body. The
/// common case — plain strings — is scanned directly (thousands of names per call); anything else (escapes, `null`
/// entries, other values) goes through the JSON decoder.
fn node_names(text: &str) -> Result<Vec<Cow<'_, str>>, String> {
    if let Some(names) = plain_names(text) {
        return Ok(names);
    }
    let v: Vec<OrNull<Option<KeyText<'_>>>> =
        serde_json::from_str(text).map_err(|e| format!("NodeNames must be an array of strings: {e}"))?;
    Ok(v.into_iter().map(|n| n.0.map(|t| t.0).unwrap_or_default()).collect())
}

/// `["a", "b", …]` of strings without escapes or control characters, or `None`.
fn plain_names(text: &str) -> Option<Vec<Cow<'_, str>>> {
    let b = text.as_bytes();
    let ws = |i: &mut usize| {
        while *i < b.len() && matches!(b[*i], b' ' | b'\t' | b'\n' | b'\r') {
            *i += 1;
        }
    };
    let mut i = 0;
    ws(&mut i);
    if b.get(i) != Some(&b'[') {
        return None;
    }
    i += 1;
    let mut out = Vec::with_capacity(b.len() / 16);
    ws(&mut i);
    if b.get(i) == Some(&b']') {
        return Some(out);
    }
    loop {
        ws(&mut i);
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let start = i + 1;
        let len = b[start..].iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
        if b[start + len] != b'"' {
            return None;
        }
        out.push(Cow::Borrowed(&text[start..start + len]));
        i = start + len + 1;
        ws(&mut i);
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b']') => return Some(out),
            _ => return None,
        }
    }
}

ci_struct! {
    /// `MetaPod`: a victim named by UID only.
    pub struct MetaPod {
        /// The pod's UID.
        "UID" => uid: String,
    }
}

ci_struct! {
    /// `Victims`: full victim pods on one node (`nodeCacheCapable: false`).
    pub struct Victims {
        /// The pods the scheduler would evict.
        "Pods" => pods: Vec<Option<Pod>>,
        /// PodDisruptionBudget violations that evicting them causes.
        "NumPDBViolations" => num_pdb_violations: i64,
    }
}

ci_struct! {
    /// `MetaVictims`: victim UIDs on one node (`nodeCacheCapable: true`).
    pub struct MetaVictims {
        /// The pods the scheduler would evict.
        "Pods" => pods: Vec<Option<MetaPod>>,
        /// PodDisruptionBudget violations that evicting them causes.
        "NumPDBViolations" => num_pdb_violations: i64,
    }
}

ci_struct! {
    /// `ExtenderPreemptionArgs`: the body of a preempt call.
    pub struct ExtenderPreemptionArgs {
        /// The pod that needs room.
        "Pod" => pod: Option<Pod>,
        /// Candidate nodes with full victim pods (`nodeCacheCapable: false`).
        "NodeNameToVictims" => node_name_to_victims: Option<BTreeMap<String, Option<Victims>>>,
        /// Candidate nodes with victim UIDs (`nodeCacheCapable: true`).
        "NodeNameToMetaVictims" => node_name_to_meta_victims: Option<BTreeMap<String, Option<MetaVictims>>>,
    }
}

ci_struct! {
    /// `ExtenderBindingArgs`: the body of a bind call.
    pub struct ExtenderBindingArgs {
        /// Pod name.
        "PodName" => pod_name: String,
        /// Pod namespace.
        "PodNamespace" => pod_namespace: String,
        /// Pod UID.
        "PodUID" => pod_uid: String,
        /// The node to bind to.
        "Node" => node: String,
    }
}

mod out;

pub use out::*;

/// A request body that could not be decoded: the verb and the JSON error (with line and column).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "cannot decode the {verb} request: {message}; the body must be the JSON kube-scheduler sends (extender/v1 {ty})"
)]
pub struct DecodeError {
    /// `filter`, `prioritize`, `bind` or `preempt`.
    pub verb: &'static str,
    /// The Go type expected.
    pub ty: &'static str,
    /// What the JSON decoder said.
    pub message: String,
}

/// Decodes a request body of `verb` into `T`. The top level must be a JSON object (or `null`, read as empty).
pub fn decode<'a, T: Deserialize<'a> + Default>(
    verb: &'static str,
    ty: &'static str,
    body: &'a [u8],
) -> Result<T, DecodeError> {
    let err = |message: String| DecodeError { verb, ty, message };
    // JSON is UTF-8: validate the whole body once (fast), so that the parser need not check every string.
    let text = std::str::from_utf8(body).map_err(|e| err(format!("the body is not UTF-8 ({e})")))?;
    let mut de = serde_json::Deserializer::from_str(text);
    let value = Option::<T>::deserialize(&mut de).map_err(|e| err(e.to_string()))?;
    // Trailing data: Go's decoder ignores it for responses; for requests we are strict but allow whitespace.
    de.end().map_err(|e| err(e.to_string()))?;
    Ok(value.unwrap_or_default())
}

/// Decodes a filter or prioritize body.
pub fn decode_args<'a>(verb: &'static str, body: &'a [u8]) -> Result<ExtenderArgs<'a>, DecodeError> {
    decode(verb, "ExtenderArgs", body)
}

/// Decodes a preempt body.
pub fn decode_preemption(body: &[u8]) -> Result<ExtenderPreemptionArgs, DecodeError> {
    decode("preempt", "ExtenderPreemptionArgs", body)
}

/// Decodes a bind body.
pub fn decode_binding(body: &[u8]) -> Result<ExtenderBindingArgs, DecodeError> {
    decode("bind", "ExtenderBindingArgs", body)
}

/// What kube-scheduler adds to a node's score for an extender score: `score × weight × (MaxNodeScore /
/// MaxExtenderPriority)` = `score × weight × 10`. The scheduler does not clamp; Sovra's scores are already in 0..=10.
pub fn scheduler_contribution(score: i64, weight: i64) -> i64 {
    score.saturating_mul(weight).saturating_mul(MAX_NODE_SCORE / MAX_EXTENDER_PRIORITY)
}

/// Clamps a score to 0..=10 (`MinExtenderPriority..=MaxExtenderPriority`).
pub fn clamp_score(score: i64) -> i64 {
    score.clamp(MIN_EXTENDER_PRIORITY, MAX_EXTENDER_PRIORITY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn node_names_fast_path_agrees_with_the_decoder() {
        for text in [
            r#"["a","b"]"#,
            r#" [ "a" , "b" ] "#,
            "[]",
            "[ ]",
            r#"["a\"b","c"]"#,
            r#"["a",null,"c"]"#,
            r#"["\u00e9t\u00e9", "x"]"#,
            r#"["é"]"#,
        ] {
            let slow: Vec<OrNull<Option<KeyText<'_>>>> = serde_json::from_str(text).unwrap();
            let slow: Vec<String> =
                slow.into_iter().map(|n| n.0.map(|t| t.0.into_owned()).unwrap_or_default()).collect();
            let fast: Vec<String> = node_names(text).unwrap().into_iter().map(Cow::into_owned).collect();
            assert_eq!(fast, slow, "{text}");
        }
        assert!(plain_names(r#"["a\"b"]"#).is_none(), "escapes take the decoder");
        assert!(node_names("[1]").unwrap_err().contains("NodeNames must be an array of strings"));
        let args = decode_args("filter", br#"{"NodeNames":["x","y"],"nodenames":["z"]}"#).unwrap();
        assert_eq!(args.node_names.unwrap(), vec!["z"], "the last key wins, as in Go");
        assert!(decode_args("filter", br#"{"NodeNames":"x"}"#).is_err());
    }

    #[test]
    fn fast_filter_encoding_equals_serde() {
        let shared: Arc<str> = Arc::from("zone z fails class c: \"quoted\" \\ and \u{1} and é");
        let mut r = ExtenderFilterResult { node_names: Some(vec!["a", "b\"c", "ü"]), ..Default::default() };
        r.failed_nodes.insert("x", shared.clone());
        r.failed_nodes.insert("y\n", shared.clone());
        r.failed_and_unresolvable_nodes.insert("z", "plain");
        r.failed_and_unresolvable_nodes.insert("w", shared);
        r.error = "err \"x\"".into();
        assert_eq!(encode_filter_result(&r), serde_json::to_vec(&r).unwrap());
        let empty = ExtenderFilterResult::default();
        assert_eq!(encode_filter_result(&empty), serde_json::to_vec(&empty).unwrap());
        let raw = RawValue::from_string("{\"metadata\":{\"name\":\"n\"}}".into()).unwrap();
        let nodes = ExtenderFilterResult {
            nodes: Some(NodeListOut { metadata: BTreeMap::new(), items: vec![raw] }),
            ..Default::default()
        };
        assert_eq!(encode_filter_result(&nodes), serde_json::to_vec(&nodes).unwrap());
    }
}
