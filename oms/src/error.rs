//! The one error type of the crate. Every message names the file it is about and, where there is one, what to do.

use crate::keys::KeyError;
use crate::manifest::{ManifestDiff, ManifestError};
use std::path::PathBuf;

/// Everything that can go wrong while hashing, signing or verifying a model.
///
/// [`Error::exit_code`] sorts them for the command line: a signature that does not verify is `1`, anything that
/// prevented the check from being made (a missing file, a bad key, a malformed bundle) is `2`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or directory could not be read or written.
    #[error("{}: {action}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done, e.g. "cannot read".
        action: &'static str,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The model path does not exist.
    #[error("{}: no such model file or directory; give the path of the model to sign or verify", path.display())]
    ModelNotFound {
        /// The model path as given.
        path: PathBuf,
    },
    /// A symbolic link was found and links are not allowed.
    #[error(
        "{}: is a symbolic link; links are refused by default, pass --allow-symlinks to hash the file it points to \
         (it must stay inside the model directory) or --ignore-paths to leave it out",
        path.display()
    )]
    SymlinkRefused {
        /// The link.
        path: PathBuf,
    },
    /// A symbolic link (or a path through `..`) resolves outside the model directory.
    #[error(
        "{}: leads outside the model directory (to {}); copy the file into the model or remove the link",
        path.display(), target.display()
    )]
    OutsideModel {
        /// The link or path inside the model.
        path: PathBuf,
        /// Where it leads.
        target: PathBuf,
    },
    /// A symbolic link whose target does not exist.
    #[error("{}: broken symbolic link (its target does not exist); remove it or pass --ignore-paths", path.display())]
    BrokenSymlink {
        /// The link.
        path: PathBuf,
    },
    /// A FIFO, socket or device inside the model.
    #[error("{}: not a regular file, directory or symbolic link; remove it or pass --ignore-paths", path.display())]
    UnsupportedFileType {
        /// The entry.
        path: PathBuf,
    },
    /// A file name that is not UTF-8 (OMS manifests hold UTF-8 names only).
    #[error("{}: the file name is not valid UTF-8, which OMS manifests cannot hold; rename the file", path.display())]
    NonUtf8Name {
        /// The entry.
        path: PathBuf,
    },
    /// A key file that cannot be used.
    #[error("{}: {reason}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: KeyError,
    },
    /// A signature bundle that is not valid JSON or not an OMS v1.0 key-mode bundle.
    #[error("{}: not a valid OMS signature bundle: {message}", path.display())]
    BundleInvalid {
        /// The bundle file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The signed manifest names a path outside the model directory (absolute, or through `..`).
    #[error(
        "{}: the signed manifest names `{name}`, a path outside the model directory; the bundle is malformed or \
         malicious, do not use this model",
        path.display()
    )]
    ManifestPathOutside {
        /// The bundle file.
        path: PathBuf,
        /// The offending resource name.
        name: String,
    },
    /// The bundle's key hint is not the hash of the given public key.
    #[error(
        "{}: key mismatch: the bundle was signed with the key whose hash is {expected}, but {} hashes to {actual}; \
         use the signer's public key",
        path.display(), key.display()
    )]
    KeyMismatch {
        /// The bundle file.
        path: PathBuf,
        /// The public key file.
        key: PathBuf,
        /// The hint in the bundle.
        expected: String,
        /// The hint of the given key.
        actual: String,
    },
    /// The ECDSA signature does not verify over the DSSE PAE.
    #[error(
        "{}: the signature does not verify with the public key {}: wrong key, or the bundle was altered",
        path.display(), key.display()
    )]
    BadSignature {
        /// The bundle file.
        path: PathBuf,
        /// The public key file.
        key: PathBuf,
    },
    /// The subject digest does not match the signed resources.
    #[error(
        "{}: manifest is inconsistent: the subject digest is {declared}, but the signed resources hash to {computed}",
        path.display()
    )]
    RootDigestMismatch {
        /// The bundle file.
        path: PathBuf,
        /// The digest in the subject.
        declared: String,
        /// The digest recomputed from the resources.
        computed: String,
    },
    /// The model on disk differs from the signed manifest.
    #[error("{}: the model does not match its signature: {diff}", model.display())]
    ManifestMismatch {
        /// The model path.
        model: PathBuf,
        /// Changed, added and missing files.
        diff: ManifestDiff,
    },
    /// The model has no files to sign (after the ignore list); nothing was written.
    #[error(
        "{}: the model has no files to sign (after leaving out the ignored paths); check the path, or pass \
         --allow-empty if an empty model is really meant (the registry refuses to store one)",
        path.display()
    )]
    EmptyModel {
        /// The model path as given.
        path: PathBuf,
    },
    /// An option value that cannot be used.
    #[error("{0}")]
    InvalidOption(String),
    /// A manifest that cannot be digested or written (a resource digest that is not hex).
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The key refused to sign ([`crate::sign_manifest`], which has no key file to name; [`crate::sign_model`]
    /// reports it as [`Error::Key`] with the file).
    #[error("{reason}")]
    Signing {
        /// What the signing backend said.
        reason: KeyError,
    },
}

impl Error {
    /// True when the check was made and failed (wrong key, altered bundle, changed model), as opposed to bad input.
    pub fn is_verification_failure(&self) -> bool {
        matches!(
            self,
            Error::KeyMismatch { .. }
                | Error::BadSignature { .. }
                | Error::RootDigestMismatch { .. }
                | Error::ManifestMismatch { .. }
        )
    }

    /// The command line's exit code: 1 when verification failed, 2 for bad input.
    pub fn exit_code(&self) -> u8 {
        if self.is_verification_failure() { 1 } else { 2 }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, action: &'static str) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, action, source }
    }
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
