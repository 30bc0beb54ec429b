//! Verifying a model (model-transparency's `verifying` module, key mode), in `model_signing` 1.1.1's order: parse
//! the bundle strictly, check the media type and the key hint, verify the ECDSA signature over the PAE *before*
//! trusting any field, check the payload type and the statement, then re-hash the model and compare manifests.
//!
//! Unlike the `model_signing` CLI, the bundle's `method` and `shard_size` are used to re-hash, so shard bundles
//! verify too; `allow_symlinks` comes from the caller, as in Python.

use crate::bundle::{BUNDLE_MEDIA_TYPE, Bundle, PAYLOAD_TYPE, pae};
use crate::error::{Error, Result};
use crate::hashing::{HashConfig, hash_model};
use crate::keys::PublicKey;
use crate::manifest::{Manifest, Method, Resource, SHA256, StatementError};
use crate::paths::normalize_name;
use crate::signing::ignore_list;
use std::path::{Path, PathBuf};

/// Options of [`verify_model`].
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Extra paths to leave out (the bundle's own `ignore_paths` are always honoured).
    pub ignore_paths: Vec<PathBuf>,
    /// Leave out the top-level git paths (default true).
    pub ignore_git_paths: bool,
    /// Follow symbolic links that stay inside the model.
    pub allow_symlinks: bool,
    /// Hashing threads; `None` = all cores.
    pub threads: Option<usize>,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions { ignore_paths: Vec::new(), ignore_git_paths: true, allow_symlinks: false, threads: None }
    }
}

/// A successful verification.
#[derive(Debug, Clone)]
pub struct VerifyOutcome {
    /// The signed manifest (names normalised).
    pub manifest: Manifest,
    /// The subject (root) digest.
    pub root_digest: String,
    /// Bytes re-hashed.
    pub bytes: u64,
    /// Things accepted for compatibility that the user should know (e.g. a bundle without a key hint).
    pub warnings: Vec<String>,
}

/// Checks a bundle against a public key and returns its signed manifest, without looking at the model.
pub fn verify_bundle(
    bundle_json: &[u8],
    key: &PublicKey,
    signature: &Path,
    key_path: &Path,
) -> Result<(Manifest, Vec<String>)> {
    let invalid = |message: String| Error::BundleInvalid { path: signature.to_path_buf(), message };
    let bundle = Bundle::from_json(bundle_json).map_err(|e| invalid(e.to_string()))?;
    if bundle.media_type != BUNDLE_MEDIA_TYPE {
        return Err(invalid(format!("mediaType is `{}`, expected `{BUNDLE_MEDIA_TYPE}`", bundle.media_type)));
    }
    let mut warnings = Vec::new();
    match bundle.verification_material.public_key.hint.as_deref() {
        Some(hint) if !hint.is_empty() => {
            let actual = key.hint();
            if !hint.eq_ignore_ascii_case(&actual) {
                return Err(Error::KeyMismatch {
                    path: signature.to_path_buf(),
                    key: key_path.to_path_buf(),
                    expected: hint.to_string(),
                    actual,
                });
            }
        }
        _ => warnings.push(format!(
            "{}: the bundle has no public key hint; verified with {} as given",
            signature.display(),
            key_path.display()
        )),
    }
    let payload = bundle.payload().map_err(|e| invalid(e.to_string()))?;
    let sig = bundle.signature().map_err(|e| invalid(e.to_string()))?;
    if !key.verify(&pae(PAYLOAD_TYPE, &payload), &sig) {
        return Err(Error::BadSignature { path: signature.to_path_buf(), key: key_path.to_path_buf() });
    }
    if bundle.dsse_envelope.payload_type != PAYLOAD_TYPE {
        return Err(invalid(format!(
            "dsseEnvelope.payloadType is `{}`, expected `{PAYLOAD_TYPE}`",
            bundle.dsse_envelope.payload_type
        )));
    }
    let mut manifest = Manifest::from_statement_json(&payload).map_err(|e| match e {
        StatementError::Invalid(m) => invalid(m),
        StatementError::Root { declared, computed } => {
            Error::RootDigestMismatch { path: signature.to_path_buf(), declared, computed }
        }
    })?;
    let s = &manifest.serialization;
    if s.hash_type != SHA256 {
        return Err(invalid(format!("hash_type `{}` is not supported (only sha256)", s.hash_type)));
    }
    let expected_algorithm = match s.method {
        Method::Files => SHA256.to_string(),
        Method::Shards { shard_size } => format!("{SHA256}-sharded-{shard_size}"),
    };
    let method = s.method;
    for r in &mut manifest.resources {
        let outside = || Error::ManifestPathOutside { path: signature.to_path_buf(), name: r.name.clone() };
        r.name = match method {
            Method::Files => normalize_name(&r.name).ok_or_else(outside)?,
            Method::Shards { .. } => {
                let mut it = r.name.rsplitn(3, ':');
                let (end, start, file) = (it.next(), it.next(), it.next());
                let (Some(end), Some(start), Some(file)) = (end, start, file) else {
                    return Err(invalid(format!("shard resource `{}` is not `path:start:end`", r.name)));
                };
                let file = normalize_name(file).ok_or_else(outside)?;
                format!("{file}:{start}:{end}")
            }
        };
        if r.algorithm != expected_algorithm && !(matches!(method, Method::Shards { .. }) && r.algorithm == SHA256) {
            return Err(invalid(format!(
                "resource `{}` uses algorithm `{}`, which is not supported",
                r.name, r.algorithm
            )));
        }
        // Compare shards under one algorithm name whichever spelling the signer used.
        r.algorithm = expected_algorithm.clone();
    }
    Ok((manifest, warnings))
}

/// Verifies the model at `model` against the bundle at `signature` with the PEM public key at `public_key`.
///
/// `Err(Error::ManifestMismatch { diff, .. })` lists changed, added and missing files when the signature is good
/// but the model differs.
pub fn verify_model(
    model: &Path,
    signature: &Path,
    public_key: &Path,
    options: &VerifyOptions,
) -> Result<VerifyOutcome> {
    let key = PublicKey::from_pem_file(public_key)?;
    verify_model_with_key(model, signature, &key, public_key, options)
}

/// [`verify_model`] with a key already loaded; `key_label` names it in messages.
pub fn verify_model_with_key(
    model: &Path,
    signature: &Path,
    key: &PublicKey,
    key_label: &Path,
    options: &VerifyOptions,
) -> Result<VerifyOutcome> {
    let json = std::fs::read(signature).map_err(Error::io(signature, "cannot read the signature"))?;
    let (manifest, warnings) = verify_bundle(&json, key, signature, key_label)?;
    if !model.exists() {
        return Err(Error::ModelNotFound { path: model.to_path_buf() });
    }
    let mut ignore = ignore_list(model, signature, &options.ignore_paths, options.ignore_git_paths);
    for p in &manifest.serialization.ignore_paths {
        if let Some(p) = normalize_name(&p.replace('\\', "/"))
            && p != "."
            && !ignore.contains(&p)
        {
            ignore.push(p);
        }
    }
    let config = HashConfig {
        method: manifest.serialization.method,
        allow_symlinks: options.allow_symlinks,
        ignore_paths: ignore,
        threads: options.threads,
    };
    let (mut actual, bytes) = hash_model(model, &config)?;
    if let Method::Shards { shard_size } = manifest.serialization.method {
        let algorithm = format!("{SHA256}-sharded-{shard_size}");
        actual.resources.iter_mut().for_each(|r: &mut Resource| r.algorithm = algorithm.clone());
    }
    let diff = manifest.diff(&actual);
    if !diff.is_empty() {
        return Err(Error::ManifestMismatch { model: model.to_path_buf(), diff });
    }
    let root_digest = manifest.root_digest()?;
    Ok(VerifyOutcome { manifest, root_digest, bytes, warnings })
}
