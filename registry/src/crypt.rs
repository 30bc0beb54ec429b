//! Encryption at rest: every blob under its own random data key, AES-256-GCM in authenticated chunks (the STREAM
//! construction of Hoang, Reyhanitabar, Rogaway and Vizár, "Online Authenticated-Encryption and its Nonce-Reuse
//! Misuse-Resistance", CRYPTO 2015).
//!
//! The plaintext is cut into chunks of [`CHUNK_BYTES`] (the last one shorter, possibly empty). Chunk `i` is sealed
//! with the nonce `prefix (7 random bytes) || i (32-bit big-endian) || last (1 byte: 1 for the final chunk, else
//! 0)` and the additional data `sovra-blob-v1\0<data zone>\0<sha256 of the plaintext>`; the stored object is the
//! sealed chunks (each 16 bytes longer than its plaintext) back to back. Reordering, dropping or appending chunks,
//! cutting the object short, or moving it to another blob name or data zone all fail authentication.
//!
//! The data key is wrapped by the zone's key-encryption key ([`crate::keys::KeyProvider`]) and stored beside the
//! blob as `<digest>.key`, a small JSON [`KeyObject`] that names the key id and its rotation version. Content
//! addresses stay those of the plaintext: readers hash while decrypting.

use crate::error::{Error, Result};
use crate::keys::{DataKey, KeyProvider};
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

/// Plaintext bytes per sealed chunk: 1 MiB.
pub const CHUNK_BYTES: usize = 1 << 20;
/// The authentication tag added to every chunk.
pub const TAG_BYTES: usize = 16;
/// `format` of a key object.
pub const FORMAT: &str = "sovra-blob-v1";
/// `cipher` of a key object.
pub const CIPHER: &str = "AES-256-GCM-STREAM";

/// The object stored beside each blob (`<digest>.key`): how to decrypt it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyObject {
    /// [`FORMAT`].
    pub format: String,
    /// [`CIPHER`].
    pub cipher: String,
    /// Plaintext bytes per chunk.
    pub chunk_bytes: usize,
    /// The 7-byte nonce prefix, hex.
    pub nonce_prefix: String,
    /// The data zone the blob was encrypted for (`zone/stage`).
    pub data_zone: String,
    /// The key-encryption key that wraps the data key.
    pub kek: KekRef,
    /// The wrapped data key, hex.
    pub wrapped_key: String,
}

/// Which key-encryption key wrapped a data key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KekRef {
    /// The zone whose key it is.
    pub zone: String,
    /// [`KeyProvider::key_id`].
    pub id: String,
    /// 1 when written, +1 at every `sovra registry rotate-key`.
    pub version: u32,
}

/// The additional data of a blob's chunks.
pub fn chunk_aad(data_zone: &str, digest: &str) -> Vec<u8> {
    format!("{FORMAT}\0{data_zone}\0{digest}").into_bytes()
}

/// The additional data of a wrapped data key.
pub fn wrap_aad(data_zone: &str, digest: &str) -> Vec<u8> {
    format!("sovra-data-key-v1\0{data_zone}\0{digest}").into_bytes()
}

fn aead(key: &DataKey) -> Result<LessSafeKey> {
    UnboundKey::new(&AES_256_GCM, key.as_ref())
        .map(LessSafeKey::new)
        .map_err(|_| Error::Crypto("cannot set up AES-256-GCM".into()))
}

fn nonce(prefix: &[u8; 7], counter: u32, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[..7].copy_from_slice(prefix);
    n[7..11].copy_from_slice(&counter.to_be_bytes());
    n[11] = u8::from(last);
    Nonce::assume_unique_for_key(n)
}

/// A new blob's data key, its key object and its encryptor.
pub fn seal_new(
    provider: &dyn KeyProvider,
    zone: &str,
    data_zone: &str,
    digest: &str,
) -> Result<(KeyObject, Encryptor)> {
    let key = crate::keys::random_data_key()?;
    let mut prefix = [0u8; 7];
    aws_lc_rs::rand::fill(&mut prefix).map_err(|_| Error::Crypto("the random number generator failed".into()))?;
    let wrapped = provider.wrap(&key, &wrap_aad(data_zone, digest))?;
    let object = KeyObject {
        format: FORMAT.into(),
        cipher: CIPHER.into(),
        chunk_bytes: CHUNK_BYTES,
        nonce_prefix: hex::encode(prefix),
        data_zone: data_zone.into(),
        kek: KekRef { zone: zone.into(), id: provider.key_id(), version: 1 },
        wrapped_key: hex::encode(wrapped),
    };
    let enc =
        Encryptor { key: aead(&key)?, prefix, counter: 0, buf: BytesMut::new(), aad: chunk_aad(data_zone, digest) };
    Ok((object, enc))
}

/// Parses a key object and unwraps its data key for reading blob `digest` of `data_zone` with `provider`; errors
/// name the location, both zones when they differ, and the key.
pub fn open_existing(
    provider: &dyn KeyProvider,
    bytes: &[u8],
    location: &str,
    data_zone: &str,
    digest: &str,
) -> Result<(KeyObject, DataKey)> {
    let object: KeyObject = serde_json::from_slice(bytes).map_err(|e| Error::Tampered {
        location: location.into(),
        message: format!("its key object does not parse: {e}"),
    })?;
    if object.format != FORMAT || object.cipher != CIPHER || object.chunk_bytes == 0 || object.chunk_bytes > 64 << 20 {
        return Err(Error::Tampered {
            location: location.into(),
            message: format!(
                "its key object has format {} / {} / {} bytes per chunk, which this version does not read",
                object.format, object.cipher, object.chunk_bytes
            ),
        });
    }
    if object.data_zone != data_zone {
        return Err(Error::WrongZoneKey {
            location: location.into(),
            zone: data_zone.into(),
            wrapped_for: object.data_zone.clone(),
            key_id: object.kek.id.clone(),
        });
    }
    if object.kek.id != provider.key_id() {
        return Err(Error::Key {
            key: provider.describe(),
            message: format!(
                "blob {location} of data zone {data_zone}: its data key is wrapped by key {} (version {}), but the \
                 zone's configured key is {}; if the key was rotated, name the new key in the zone's `stores:` \
                 entry (or finish the rotation with `sovra registry rotate-key`)",
                object.kek.id,
                object.kek.version,
                provider.key_id()
            ),
        });
    }
    let wrapped = hex::decode(&object.wrapped_key).map_err(|e| Error::Tampered {
        location: location.into(),
        message: format!("its wrapped key is not hex: {e}"),
    })?;
    let key = provider.unwrap(&wrapped, &wrap_aad(data_zone, digest)).map_err(|e| Error::Tampered {
        location: location.into(),
        message: format!("its data key does not unwrap ({e})"),
    })?;
    Ok((object, key))
}

/// The decryptor of a blob whose key object and data key [`open_existing`] returned.
pub fn decryptor(object: &KeyObject, key: &DataKey, location: &str, digest: &str) -> Result<Decryptor> {
    let mut prefix = [0u8; 7];
    hex::decode_to_slice(&object.nonce_prefix, &mut prefix).map_err(|e| Error::Tampered {
        location: location.into(),
        message: format!("its nonce prefix is not 7 hex bytes: {e}"),
    })?;
    Ok(Decryptor {
        key: aead(key)?,
        prefix,
        counter: 0,
        chunk: object.chunk_bytes,
        buf: BytesMut::new(),
        aad: chunk_aad(&object.data_zone, digest),
        location: location.into(),
    })
}

/// Seals plaintext pushed in pieces of any size into chunks.
pub struct Encryptor {
    key: LessSafeKey,
    prefix: [u8; 7],
    counter: u32,
    buf: BytesMut,
    aad: Vec<u8>,
}

impl Encryptor {
    fn seal(&mut self, n: usize, last: bool) -> Result<Bytes> {
        let mut chunk = self.buf.split_to(n);
        chunk.reserve(TAG_BYTES);
        let nonce = nonce(&self.prefix, self.counter, last);
        self.key
            .seal_in_place_append_tag(nonce, Aad::from(&self.aad), &mut chunk)
            .map_err(|_| Error::Crypto("AES-256-GCM sealing failed".into()))?;
        self.counter = self
            .counter
            .checked_add(1)
            .ok_or_else(|| Error::Crypto("a blob of more than 4 PiB cannot be sealed".into()))?;
        Ok(chunk.freeze())
    }

    /// Adds plaintext; returns the chunks completed. The last full chunk is held back until more arrives or
    /// [`Encryptor::finish`], because only then is it known whether it is the final one.
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<Bytes>> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        while self.buf.len() > CHUNK_BYTES {
            out.push(self.seal(CHUNK_BYTES, false)?);
        }
        Ok(out)
    }

    /// Seals what is left as the final chunk.
    pub fn finish(mut self) -> Result<Bytes> {
        let n = self.buf.len();
        self.seal(n, true)
    }
}

/// Opens sealed chunks pushed in pieces of any size.
pub struct Decryptor {
    key: LessSafeKey,
    prefix: [u8; 7],
    counter: u32,
    chunk: usize,
    buf: BytesMut,
    aad: Vec<u8>,
    location: String,
}

impl Decryptor {
    fn open(&mut self, n: usize, last: bool) -> Result<Bytes> {
        let mut sealed = self.buf.split_to(n);
        let nonce = nonce(&self.prefix, self.counter, last);
        let counter = self.counter;
        let len = self.key.open_in_place(nonce, Aad::from(&self.aad), &mut sealed).map(|p| p.len()).map_err(|_| {
            Error::Tampered {
                location: self.location.clone(),
                message: format!("chunk {counter}{} fails authentication", if last { " (the final one)" } else { "" }),
            }
        })?;
        sealed.truncate(len);
        self.counter = self.counter.wrapping_add(1);
        Ok(sealed.freeze())
    }

    /// Adds ciphertext; returns the plaintext of the chunks completed (a full chunk is held back until it is known
    /// not to be the final one).
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<Bytes>> {
        self.buf.extend_from_slice(data);
        let sealed = self.chunk + TAG_BYTES;
        let mut out = Vec::new();
        while self.buf.len() > sealed {
            out.push(self.open(sealed, false)?);
        }
        Ok(out)
    }

    /// Opens the final chunk; fails when the object ended early or was cut short.
    pub fn finish(mut self) -> Result<Bytes> {
        if self.buf.len() < TAG_BYTES {
            return Err(Error::Tampered {
                location: self.location.clone(),
                message: "the ciphertext ends inside a chunk (cut short)".into(),
            });
        }
        let n = self.buf.len();
        self.open(n, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::FileKey;

    fn roundtrip(len: usize, pieces: usize) {
        let dir = tempfile::tempdir().unwrap();
        let kek = FileKey::generate(&dir.path().join("k")).unwrap();
        let plain: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        let (obj, mut enc) = seal_new(&kek, "fr", "fr/registry", "d1").unwrap();
        let mut sealed = Vec::new();
        for p in plain.chunks(pieces.max(1)) {
            for c in enc.push(p).unwrap() {
                sealed.extend_from_slice(&c);
            }
        }
        sealed.extend_from_slice(&enc.finish().unwrap());
        assert_eq!(sealed.len(), len + TAG_BYTES * len.div_ceil(CHUNK_BYTES).max(1));
        let bytes = serde_json::to_vec(&obj).unwrap();
        let (obj, key) = open_existing(&kek, &bytes, "loc", "fr/registry", "d1").unwrap();
        let decrypt = |ct: &[u8]| -> Result<Vec<u8>> {
            let mut dec = decryptor(&obj, &key, "loc", "d1")?;
            let mut out = Vec::new();
            for p in ct.chunks(777_777) {
                for c in dec.push(p)? {
                    out.extend_from_slice(&c);
                }
            }
            out.extend_from_slice(&dec.finish()?);
            Ok(out)
        };
        assert_eq!(decrypt(&sealed).unwrap(), plain);
        let mut flipped = sealed.clone();
        flipped[len / 2] ^= 1;
        assert!(matches!(decrypt(&flipped), Err(Error::Tampered { .. })));
        if len > CHUNK_BYTES {
            // Dropping the final chunk leaves a chunk not sealed as final.
            let cut = &sealed[..CHUNK_BYTES + TAG_BYTES];
            assert!(matches!(decrypt(cut), Err(Error::Tampered { .. })));
        }
        // Another blob name, another zone, another key: refused.
        assert!(
            decryptor(&obj, &key, "loc", "d2")
                .and_then(|mut d| {
                    d.push(&sealed)?;
                    d.finish()
                })
                .is_err()
        );
        assert!(matches!(open_existing(&kek, &bytes, "loc", "de/registry", "d1"), Err(Error::WrongZoneKey { .. })));
        let other = FileKey::generate(&dir.path().join("other")).unwrap();
        assert!(open_existing(&other, &bytes, "loc", "fr/registry", "d1").is_err());
    }

    #[test]
    fn stream_roundtrips_and_detects_changes() {
        roundtrip(0, 1);
        roundtrip(5, 2);
        roundtrip(CHUNK_BYTES, 100_000);
        roundtrip(2 * CHUNK_BYTES + 3, 3_000_000);
    }
}
