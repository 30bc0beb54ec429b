//! Manifest data types (model-transparency's `manifest` module): the resources of a model with their digests, the
//! serialization parameters, and the in-toto Statement v1 that carries them in the signature.

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;

/// `_type` of an in-toto Statement v1.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// `predicateType` of an OMS v1.0 signature.
pub const PREDICATE_TYPE: &str = "https://model_signing/signature/v1.0";
/// The only hash this crate computes (and the only one the `model_signing` CLI verifies).
pub const SHA256: &str = "sha256";

/// One signed resource: a whole file (`files` method) or one shard of a file (`shards` method).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resource {
    /// POSIX path relative to the model root (`.` for a single-file model); `path:start:end` for a shard.
    pub name: String,
    /// `sha256`, or `sha256-sharded-<shard_size>` for shards.
    pub algorithm: String,
    /// Lowercase hex digest.
    pub digest: String,
}

/// How the model was cut into resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// One resource per file.
    Files,
    /// One resource per `shard_size` bytes of each file (empty files produce none).
    Shards {
        /// Bytes per shard (the last shard of a file is shorter).
        shard_size: u64,
    },
}

/// The `predicate.serialization` object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Serialization {
    /// Files or shards.
    pub method: Method,
    /// The hash of each resource (`sha256`).
    pub hash_type: String,
    /// Whether symbolic links were followed when signing.
    pub allow_symlinks: bool,
    /// Model-relative paths left out of the manifest (POSIX form).
    pub ignore_paths: Vec<String>,
}

/// A model manifest: what the statement's predicate says, plus the subject name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The subject name: the model directory's (or file's) name. Verifiers do not check it.
    pub model_name: String,
    /// Resources in signing order; the root digest is computed over them in this order.
    pub resources: Vec<Resource>,
    /// Serialization parameters.
    pub serialization: Serialization,
}

impl Manifest {
    /// The subject digest: SHA-256 over the raw bytes of every resource digest, in array order.
    pub fn root_digest(&self) -> Result<String, ManifestError> {
        root_digest(&self.resources)
    }

    /// The statement bytes to sign: pretty JSON with two-space indents like `model_signing`, keys in a fixed order.
    pub fn to_statement_json(&self) -> Result<Vec<u8>, ManifestError> {
        #[derive(Serialize)]
        struct Statement<'a> {
            #[serde(rename = "_type")]
            type_: &'a str,
            subject: [Subject<'a>; 1],
            #[serde(rename = "predicateType")]
            predicate_type: &'a str,
            predicate: Predicate<'a>,
        }
        #[derive(Serialize)]
        struct Subject<'a> {
            name: &'a str,
            digest: SubjectDigest,
        }
        #[derive(Serialize)]
        struct SubjectDigest {
            sha256: String,
        }
        #[derive(Serialize)]
        struct Predicate<'a> {
            serialization: Ser<'a>,
            resources: &'a [Resource],
        }
        #[derive(Serialize)]
        struct Ser<'a> {
            method: &'a str,
            hash_type: &'a str,
            allow_symlinks: bool,
            #[serde(skip_serializing_if = "<[String]>::is_empty")]
            ignore_paths: &'a [String],
            /// A float, as `model_signing` writes it (protobuf Struct numbers are doubles).
            #[serde(skip_serializing_if = "Option::is_none")]
            shard_size: Option<f64>,
        }
        let s = &self.serialization;
        let (method, shard_size) = match s.method {
            Method::Files => ("files", None),
            Method::Shards { shard_size } => ("shards", Some(shard_size as f64)),
        };
        let statement = Statement {
            type_: STATEMENT_TYPE,
            subject: [Subject { name: &self.model_name, digest: SubjectDigest { sha256: self.root_digest()? } }],
            predicate_type: PREDICATE_TYPE,
            predicate: Predicate {
                serialization: Ser {
                    method,
                    hash_type: &s.hash_type,
                    allow_symlinks: s.allow_symlinks,
                    ignore_paths: &s.ignore_paths,
                    shard_size,
                },
                resources: &self.resources,
            },
        };
        serde_json::to_vec_pretty(&statement).map_err(|e| ManifestError::Encoding(e.to_string()))
    }

    /// Reads a statement the way `model_signing` 1.1.1 does: any key order or whitespace, unknown predicate fields
    /// ignored, `shard_size` as an integer or a float. Checks `_type`, `predicateType`, exactly one subject, and that
    /// the subject digest matches the resources (an `Err((declared, computed))` in [`StatementError::Root`]).
    pub fn from_statement_json(bytes: &[u8]) -> Result<Manifest, StatementError> {
        let bad = |m: &str| StatementError::Invalid(m.to_string());
        let v: Value = serde_json::from_slice(bytes).map_err(|e| bad(&format!("the payload is not JSON: {e}")))?;
        let str_at = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_string);
        if str_at(&v, "_type").as_deref() != Some(STATEMENT_TYPE) {
            return Err(bad(&format!("the payload's _type is not {STATEMENT_TYPE}")));
        }
        if str_at(&v, "predicateType").as_deref() != Some(PREDICATE_TYPE) {
            return Err(bad(&format!("the payload's predicateType is not {PREDICATE_TYPE}")));
        }
        let subjects = v.get("subject").and_then(Value::as_array).ok_or_else(|| bad("the payload has no subject"))?;
        let [subject] = subjects.as_slice() else {
            return Err(bad(&format!("the statement must have exactly one subject, it has {}", subjects.len())));
        };
        let model_name = str_at(subject, "name").unwrap_or_default();
        let declared = subject
            .get("digest")
            .and_then(|d| str_at(d, "sha256"))
            .ok_or_else(|| bad("the subject has no sha256 digest"))?;
        let predicate = v.get("predicate").ok_or_else(|| bad("the payload has no predicate"))?;
        let ser = predicate.get("serialization").ok_or_else(|| bad("the predicate has no serialization"))?;
        let method_name = str_at(ser, "method").ok_or_else(|| bad("serialization.method is missing"))?;
        let hash_type = str_at(ser, "hash_type").ok_or_else(|| bad("serialization.hash_type is missing"))?;
        let allow_symlinks = ser
            .get("allow_symlinks")
            .and_then(Value::as_bool)
            .ok_or_else(|| bad("serialization.allow_symlinks is missing"))?;
        let method = match method_name.as_str() {
            "files" => Method::Files,
            "shards" => {
                let size = ser.get("shard_size").and_then(|s| {
                    s.as_u64().or_else(|| s.as_f64().filter(|f| f.fract() == 0.0 && *f >= 1.0).map(|f| f as u64))
                });
                match size {
                    Some(shard_size) if shard_size > 0 => Method::Shards { shard_size },
                    _ => return Err(bad("serialization.shard_size is missing or not a positive integer")),
                }
            }
            other => return Err(bad(&format!("serialization method `{other}` is not supported (files, shards)"))),
        };
        let ignore_paths = match ser.get("ignore_paths") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a.iter().filter_map(|p| p.as_str().map(str::to_string)).collect(),
            Some(_) => return Err(bad("serialization.ignore_paths is not a list")),
        };
        let mut resources = Vec::new();
        for r in
            predicate.get("resources").and_then(Value::as_array).ok_or_else(|| bad("predicate.resources is missing"))?
        {
            let field = |k: &str| str_at(r, k).ok_or_else(|| bad(&format!("a resource has no string `{k}`")));
            resources.push(Resource { name: field("name")?, algorithm: field("algorithm")?, digest: field("digest")? });
        }
        let manifest = Manifest {
            model_name,
            resources,
            serialization: Serialization { method, hash_type, allow_symlinks, ignore_paths },
        };
        let computed = manifest.root_digest().map_err(|e| StatementError::Invalid(e.to_string()))?;
        if computed != declared.to_ascii_lowercase() {
            return Err(StatementError::Root { declared, computed });
        }
        Ok(manifest)
    }

    /// `name → (algorithm, digest)`, the form in which two manifests are compared.
    pub fn digest_map(&self) -> BTreeMap<&str, (&str, &str)> {
        self.resources.iter().map(|r| (r.name.as_str(), (r.algorithm.as_str(), r.digest.as_str()))).collect()
    }

    /// What differs between this (signed) manifest and `actual` (the model on disk).
    pub fn diff(&self, actual: &Manifest) -> ManifestDiff {
        let expected = self.digest_map();
        let actual = actual.digest_map();
        let mut diff = ManifestDiff::default();
        for (name, e) in &expected {
            match actual.get(name) {
                None => diff.missing.push(name.to_string()),
                Some(a) if a != e => diff.changed.push(name.to_string()),
                Some(_) => {}
            }
        }
        diff.added = actual.keys().filter(|n| !expected.contains_key(*n)).map(|n| n.to_string()).collect();
        diff
    }
}

/// Why a statement was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StatementError {
    /// Not an OMS v1.0 statement.
    #[error("{0}")]
    Invalid(String),
    /// The subject digest is not the digest of the resources.
    #[error("the subject digest is {declared}, but the signed resources hash to {computed}")]
    Root {
        /// The subject's digest.
        declared: String,
        /// The digest recomputed from the resources.
        computed: String,
    },
}

/// Why a manifest cannot be digested or written as a statement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// A resource digest that is not hexadecimal.
    #[error("resource `{name}` has a digest that is not hex")]
    DigestNotHex {
        /// The resource's name.
        name: String,
    },
    /// The statement could not be serialised.
    #[error("the statement cannot be encoded: {0}")]
    Encoding(String),
}

/// The subject digest over `resources` in the given order (never re-sorted).
pub fn root_digest(resources: &[Resource]) -> Result<String, ManifestError> {
    let mut h = Sha256::new();
    for r in resources {
        let raw = from_hex(&r.digest).ok_or_else(|| ManifestError::DigestNotHex { name: r.name.clone() })?;
        h.update(&raw);
    }
    Ok(to_hex(&h.finalize()))
}

/// Files (or shards) that differ between the signed manifest and the model on disk; each list is sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ManifestDiff {
    /// In both, with different digests.
    pub changed: Vec<String>,
    /// On disk but not signed.
    pub added: Vec<String>,
    /// Signed but not on disk.
    pub missing: Vec<String>,
}

impl ManifestDiff {
    /// True when the model matches its manifest.
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.added.is_empty() && self.missing.is_empty()
    }
}

impl fmt::Display for ManifestDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        for (what, list) in [("changed", &self.changed), ("added", &self.added), ("missing", &self.missing)] {
            if !list.is_empty() {
                parts.push(format!("{} {what} ({})", list.len(), list.join(", ")));
            }
        }
        if parts.is_empty() { f.write_str("no difference") } else { f.write_str(&parts.join("; ")) }
    }
}

/// Lowercase hex.
pub fn to_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// Decodes hex (either case); `None` if it is not hex.
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    s.as_bytes().chunks(2).map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        assert_eq!(root_digest(&[]).unwrap(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(from_hex(&to_hex(&[0, 1, 0xab, 0xff])).unwrap(), vec![0, 1, 0xab, 0xff]);
        assert!(from_hex("abc").is_none());
        assert!(from_hex("zz").is_none());
    }

    #[test]
    fn diff_lists_each_kind() {
        let r = |n: &str, d: &str| Resource { name: n.into(), algorithm: SHA256.into(), digest: d.into() };
        let ser = Serialization {
            method: Method::Files,
            hash_type: SHA256.into(),
            allow_symlinks: false,
            ignore_paths: vec![],
        };
        let signed = Manifest {
            model_name: "m".into(),
            resources: vec![r("a", "00"), r("b", "11")],
            serialization: ser.clone(),
        };
        let disk = Manifest { model_name: "m".into(), resources: vec![r("a", "01"), r("c", "22")], serialization: ser };
        let d = signed.diff(&disk);
        assert_eq!(
            (d.changed, d.added, d.missing),
            (vec!["a".to_string()], vec!["c".to_string()], vec!["b".to_string()])
        );
    }
}
