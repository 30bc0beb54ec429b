//! Signing a model (model-transparency's `signing` module, key mode): hash, build the statement, sign its PAE,
//! write the bundle. Nothing is written unless every step succeeded; the bundle is written to a temporary file
//! beside the target and renamed into place.

use crate::bundle::{Bundle, PAYLOAD_TYPE, pae};
use crate::error::{Error, Result};
use crate::hashing::{GIT_PATHS, HashConfig, hash_model};
use crate::keys::{Curve, SigningKey};
use crate::manifest::{Manifest, Method};
use crate::paths::{ignore_path, model_relative};
use std::path::{Path, PathBuf};

/// Options of [`sign_model`].
#[derive(Debug, Clone)]
pub struct SignOptions {
    /// Paths to leave out: resolved against the current directory (as `model_signing` does), or else relative to
    /// the model; values outside the model are dropped.
    pub ignore_paths: Vec<PathBuf>,
    /// Leave out the top-level `.git`, `.github`, `.gitignore` and `.gitattributes` (default true).
    pub ignore_git_paths: bool,
    /// Follow symbolic links that stay inside the model (refused otherwise).
    pub allow_symlinks: bool,
    /// Sign shards of this many bytes instead of whole files (`model_signing`'s API-only `shards` method; its CLI
    /// cannot verify such bundles, `sovra model verify` can).
    pub shard_size: Option<u64>,
    /// Hashing threads; `None` = all cores.
    pub threads: Option<usize>,
    /// Sign a model with no files (refused by default: it is almost always a wrong path or ignore list, and the
    /// registry refuses to store one).
    pub allow_empty: bool,
}

impl Default for SignOptions {
    fn default() -> Self {
        SignOptions {
            ignore_paths: Vec::new(),
            ignore_git_paths: true,
            allow_symlinks: false,
            shard_size: None,
            threads: None,
            allow_empty: false,
        }
    }
}

/// What [`sign_model`] did.
#[derive(Debug, Clone)]
pub struct SignOutcome {
    /// Where the bundle was written.
    pub signature: PathBuf,
    /// The signed manifest.
    pub manifest: Manifest,
    /// The subject (root) digest.
    pub root_digest: String,
    /// Bytes hashed.
    pub bytes: u64,
    /// The key's curve.
    pub curve: Curve,
    /// The key hint written in the bundle.
    pub hint: String,
}

/// The ignore list recorded in the manifest: git paths, the signature file if it lies inside the model, and the
/// user's paths, without duplicates.
pub(crate) fn ignore_list(model: &Path, signature: &Path, user: &[PathBuf], git: bool) -> Vec<String> {
    let mut list: Vec<String> = if git { GIT_PATHS.iter().map(|s| s.to_string()).collect() } else { Vec::new() };
    let extra = model_relative(model, signature).into_iter().chain(user.iter().filter_map(|p| ignore_path(model, p)));
    for p in extra {
        if !list.contains(&p) {
            list.push(p);
        }
    }
    list
}

/// Builds the bundle for a manifest: statement JSON, PAE, ECDSA signature, Sigstore bundle JSON.
pub fn sign_manifest(manifest: &Manifest, key: &SigningKey) -> Result<Vec<u8>> {
    let payload = manifest.to_statement_json()?;
    let signature = key.sign(&pae(PAYLOAD_TYPE, &payload)).map_err(|reason| Error::Signing { reason })?;
    Ok(Bundle::new(&payload, &signature, key.public_key().hint()).to_json())
}

/// Signs the model at `model` with the PEM private key at `private_key` and writes the bundle to `signature`.
pub fn sign_model(model: &Path, private_key: &Path, signature: &Path, options: &SignOptions) -> Result<SignOutcome> {
    if signature.is_dir() {
        return Err(Error::InvalidOption(format!(
            "{}: is a directory; give the path of the signature file to write",
            signature.display()
        )));
    }
    let key = SigningKey::open(private_key)?;
    let method = match options.shard_size {
        None => Method::Files,
        Some(0) => return Err(Error::InvalidOption("--shard-size 0: use a shard size of at least 1 byte".into())),
        Some(shard_size) => Method::Shards { shard_size },
    };
    let config = HashConfig {
        method,
        allow_symlinks: options.allow_symlinks,
        ignore_paths: ignore_list(model, signature, &options.ignore_paths, options.ignore_git_paths),
        threads: options.threads,
    };
    let (manifest, bytes) = hash_model(model, &config)?;
    if manifest.resources.is_empty() && !options.allow_empty {
        return Err(Error::EmptyModel { path: model.to_path_buf() });
    }
    let root_digest = manifest.root_digest()?;
    let json = sign_manifest(&manifest, &key).map_err(|e| match e {
        Error::Signing { reason } => Error::Key { path: private_key.to_path_buf(), reason },
        other => other,
    })?;
    write_atomically(signature, &json)?;
    Ok(SignOutcome {
        signature: signature.to_path_buf(),
        manifest,
        root_digest,
        bytes,
        curve: key.public_key().curve,
        hint: key.public_key().hint(),
    })
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model.sig".into());
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(Error::io(path, "cannot write the signature"))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::Io { path: path.to_path_buf(), action: "cannot write the signature", source: e }
    })
}
