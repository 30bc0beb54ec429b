//! The registry's error type. Every message names the model, file or store path it is about and what to do.

use std::path::PathBuf;

/// Everything that can go wrong in the registry.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A local file could not be read or written.
    #[error("{}: {action}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The metadata store (sled) failed.
    #[error("registry metadata at {}: {message}", path.display())]
    Store {
        /// The sled directory.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The blob store failed.
    #[error("blob store: {0}")]
    Blob(String),
    /// A blob's content does not hash to its name (a corrupt or tampered blob, or a file changed during upload).
    #[error("blob {location}: content hashes to sha256:{actual}, expected sha256:{expected}; the copy is corrupt")]
    DigestMismatch {
        /// Where the blob is.
        location: String,
        /// Its expected digest.
        expected: String,
        /// What its content hashes to.
        actual: String,
    },
    /// No such model or version.
    #[error("{0}")]
    NotFound(String),
    /// A name (model, zone, alias) that cannot be used as a key or path component.
    #[error("{0}")]
    InvalidName(String),
    /// A stored record that cannot be decoded (the store was edited or is corrupt).
    #[error("registry metadata: record {key} is not valid: {message}; run `sovra audit verify`")]
    Corrupt {
        /// The record key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

impl Error {
    pub(crate) fn store(path: &std::path::Path) -> impl FnOnce(sled::Error) -> Error + '_ {
        move |e| Error::Store { path: path.to_path_buf(), message: e.to_string() }
    }
}

/// The registry's result type.
pub type Result<T> = std::result::Result<T, Error>;
