//! Key-encryption keys (KEKs): each data zone's data keys are wrapped by its zone's KEK, held by a
//! [`KeyProvider`]. Two providers: [`FileKey`] (32 random bytes in a file, hex or raw, readable by its owner only)
//! and [`crate::pkcs11::Pkcs11Key`] (an AES key inside a PKCS#11 token: an HSM, or SoftHSM in the tests).
//!
//! A wrapped data key is `nonce (12 bytes) || AES-256-GCM(KEK, data key, aad)`, where the additional data names
//! the data zone and the blob (see [`crate::crypt`]), so a wrapped key moved to another blob or zone does not
//! unwrap.

use crate::error::{Error, Result};
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// A 256-bit data key (zeroed when dropped).
pub type DataKey = Zeroizing<[u8; 32]>;

/// Holds one zone's key-encryption key: wraps and unwraps the per-blob data keys. The key itself never leaves
/// the provider through this interface.
pub trait KeyProvider: Send + Sync + std::fmt::Debug {
    /// A stable identifier of the key (its fingerprint), recorded beside every blob it wraps: a file key's is
    /// `file:` and 16 hex characters of SHA-256 over a label and the key; a PKCS#11 key's names the token and
    /// the key label.
    fn key_id(&self) -> String;
    /// Where the key is, for messages (`key file /etc/sovra/fr.kek`, `PKCS#11 token sovra / key fr-kek`).
    fn describe(&self) -> String;
    /// Wraps a data key; `aad` binds it to its blob and data zone.
    fn wrap(&self, key: &DataKey, aad: &[u8]) -> Result<Vec<u8>>;
    /// Unwraps a data key wrapped by [`KeyProvider::wrap`] with the same `aad`; fails when this is not the key
    /// that wrapped it or the wrapped bytes were changed.
    fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<DataKey>;
}

/// A fresh random data key.
pub fn random_data_key() -> Result<DataKey> {
    let mut k = Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(k.as_mut()).map_err(|_| Error::Crypto("the random number generator failed".into()))?;
    Ok(k)
}

/// A KEK held in a file: 32 bytes, raw or as 64 hex characters (surrounding whitespace allowed).
pub struct FileKey {
    path: PathBuf,
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for FileKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileKey").field("path", &self.path).field("id", &self.key_id()).finish()
    }
}

impl FileKey {
    /// Reads a key file; refuses one that group or others may read (or write), and one that is not 32 bytes.
    pub fn load(path: &Path) -> Result<FileKey> {
        let bad = |message: String| Error::Key { key: path.display().to_string(), message };
        let meta = std::fs::metadata(path).map_err(|e| bad(format!("cannot read the key file: {e}")))?;
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(bad(format!(
                "the key file has mode {mode:04o}: group or others may read it; run `chmod 600 {}`",
                path.display()
            )));
        }
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| bad(format!("cannot read the key file: {e}")))?);
        let mut key = Zeroizing::new([0u8; 32]);
        if bytes.len() == 32 {
            key.copy_from_slice(&bytes);
        } else {
            let text = std::str::from_utf8(&bytes).map(str::trim).unwrap_or("");
            if text.len() != 64 || hex::decode_to_slice(text, key.as_mut()).is_err() {
                return Err(bad(format!(
                    "a key file holds 32 bytes, raw or as 64 hex characters; this one has {} bytes",
                    bytes.len()
                )));
            }
        }
        Ok(FileKey { path: path.to_path_buf(), key })
    }

    /// Writes a new random key (64 hex characters, mode 0600) to `path`, which must not exist, and loads it.
    pub fn generate(path: &Path) -> Result<FileKey> {
        let bad = |message: String| Error::Key { key: path.display().to_string(), message };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| bad(format!("cannot create the key directory: {e}")))?;
        }
        let key = random_data_key()?;
        let text = Zeroizing::new(hex::encode(key.as_ref()) + "\n");
        let mut tmp = tempfile::Builder::new()
            .prefix(crate::sweep::TEMP_PREFIX)
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .tempfile_in(path.parent().unwrap_or(Path::new(".")))
            .map_err(|e| bad(format!("cannot create the key file: {e}")))?;
        use std::io::Write;
        tmp.write_all(text.as_bytes())
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|e| bad(format!("cannot write the key file: {e}")))?;
        // Never replace an existing key: persist_noclobber fails when the file appeared meanwhile.
        tmp.persist_noclobber(path).map_err(|e| bad(format!("cannot create the key file: {}", e.error)))?;
        FileKey::load(path)
    }

    /// A random key held in memory only (for stores that live no longer than the process: tests, tools).
    pub fn ephemeral() -> Result<FileKey> {
        Ok(FileKey { path: PathBuf::from("<in memory>"), key: random_data_key()? })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn aead(&self) -> Result<LessSafeKey> {
        UnboundKey::new(&AES_256_GCM, self.key.as_ref())
            .map(LessSafeKey::new)
            .map_err(|_| Error::Crypto("cannot set up AES-256-GCM".into()))
    }
}

impl KeyProvider for FileKey {
    fn key_id(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"sovra-kek-fingerprint-v1\0");
        h.update(self.key.as_ref());
        format!("file:{}", &hex::encode(h.finalize())[..16])
    }

    fn describe(&self) -> String {
        format!("key file {}", self.path.display())
    }

    fn wrap(&self, key: &DataKey, aad: &[u8]) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| Error::Crypto("the random number generator failed".into()))?;
        let mut buf = key.to_vec();
        self.aead()?
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut buf)
            .map_err(|_| Error::Crypto("cannot wrap a data key".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(out)
    }

    fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<DataKey> {
        let fail = || Error::Crypto(format!("{} does not unwrap this data key", self.describe()));
        if wrapped.len() != NONCE_LEN + 32 + 16 {
            return Err(fail());
        }
        let nonce = Nonce::try_assume_unique_for_key(&wrapped[..NONCE_LEN]).map_err(|_| fail())?;
        let mut buf = Zeroizing::new(wrapped[NONCE_LEN..].to_vec());
        let plain = self.aead()?.open_in_place(nonce, Aad::from(aad), &mut buf).map_err(|_| fail())?;
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(plain);
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_keys_wrap_unwrap_and_refuse_the_wrong_key_or_mode() {
        let dir = tempfile::tempdir().unwrap();
        let a = FileKey::generate(&dir.path().join("a.kek")).unwrap();
        let b = FileKey::generate(&dir.path().join("b.kek")).unwrap();
        assert!(FileKey::generate(&dir.path().join("a.kek")).is_err(), "an existing key is never replaced");
        assert_ne!(a.key_id(), b.key_id());
        let dk = random_data_key().unwrap();
        let w = a.wrap(&dk, b"blob-1").unwrap();
        assert_eq!(*a.unwrap(&w, b"blob-1").unwrap(), *dk);
        assert!(a.unwrap(&w, b"blob-2").is_err(), "bound to its blob");
        assert!(b.unwrap(&w, b"blob-1").is_err(), "another key does not unwrap it");
        // Raw 32-byte files load too; a group-readable one is refused.
        let raw = dir.path().join("raw.kek");
        std::fs::write(&raw, [7u8; 32]).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&raw, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = FileKey::load(&raw).unwrap_err().to_string();
        assert!(e.contains("chmod 600") && e.contains("raw.kek"), "{e}");
        std::fs::set_permissions(&raw, std::fs::Permissions::from_mode(0o600)).unwrap();
        FileKey::load(&raw).unwrap();
        std::fs::write(&raw, b"short").unwrap();
        assert!(FileKey::load(&raw).unwrap_err().to_string().contains("32 bytes"));
    }
}
