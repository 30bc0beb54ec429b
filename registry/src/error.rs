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
    /// A stored blob failed authenticated decryption: a changed, truncated or reordered ciphertext, or a key
    /// object that does not belong to it.
    #[error("blob {location}: {message}; the stored copy is corrupt or was changed")]
    Tampered {
        /// Where the blob is.
        location: String,
        /// What failed.
        message: String,
    },
    /// A blob's data key is wrapped by another zone's key-encryption key than the data zone it is read from.
    #[error(
        "blob {location} in data zone {zone}: its data key is wrapped for data zone {wrapped_for} (key {key_id}), \
         not by data zone {zone}'s key; a blob of one zone cannot be read with another zone's key"
    )]
    WrongZoneKey {
        /// Where the blob is.
        location: String,
        /// The data zone it is read from.
        zone: String,
        /// The data zone its key object names.
        wrapped_for: String,
        /// The key id its key object names.
        key_id: String,
    },
    /// A key-encryption key cannot be loaded or used.
    #[error("key {key}: {message}")]
    Key {
        /// The key (file path, PKCS#11 token and label, zone).
        key: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// A cryptographic operation failed.
    #[error("encryption: {0}")]
    Crypto(String),
    /// The `stores:` configuration is not usable (names the zone and field).
    #[error("stores: {0}")]
    Config(String),
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
    /// The registry's metadata does not match its audit head (rolled back, truncated or rewritten), or cannot be
    /// read: nothing was done. The message names what is missing and the way out.
    #[error("registry at {}: DAMAGED: {message}", path.display())]
    Damaged {
        /// The registry root (or the damaged file).
        path: PathBuf,
        /// What is wrong and what to do.
        message: String,
    },
    /// A compare-and-swap write of [`crate::Registry::commit`] found its key changed since it was read (another
    /// writer got there first): nothing was written; read again and retry.
    #[error("registry metadata: {key} changed concurrently; retry")]
    Conflict {
        /// The key (its `\0` separators shown as `/`).
        key: String,
    },
    /// The commit is durable but an audit head file could not be written; the next command rewrites it.
    #[error(
        "audit entry {seq} is committed, but the audit head {} could not be written: {message}; fix the disk or \
         permissions, the next sovra command writes it again",
        path.display()
    )]
    HeadNotWritten {
        /// The committed entry.
        seq: u64,
        /// The head file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

impl Error {
    /// True when the registry was found damaged (a rolled-back or unreadable metadata store): exit code 1 on the
    /// command line, as for any failed check, rather than 2 (bad input).
    pub fn is_damage(&self) -> bool {
        matches!(self, Error::Damaged { .. })
    }

    pub(crate) fn store(path: &std::path::Path) -> impl FnOnce(sled::Error) -> Error + '_ {
        move |e| match e {
            // What a truncated or overwritten file gives: corrupt data, a read past its end, a "bug" report.
            sled::Error::Corruption { .. } | sled::Error::ReportableBug(_) => Error::Damaged {
                path: path.to_path_buf(),
                message: format!("the metadata store is corrupt ({e}); restore meta.sled from a backup"),
            },
            sled::Error::Io(ref io) if io.kind() == std::io::ErrorKind::UnexpectedEof => Error::Damaged {
                path: path.to_path_buf(),
                message: format!("the metadata store is corrupt ({e}); restore meta.sled from a backup"),
            },
            e => Error::Store { path: path.to_path_buf(), message: e.to_string() },
        }
    }
}

/// The registry's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl From<sovra_domain::datazone::NameError> for Error {
    fn from(e: sovra_domain::datazone::NameError) -> Self {
        Error::InvalidName(e.to_string())
    }
}
