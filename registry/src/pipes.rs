//! The streams of the blob layer: plaintext from a file, from memory or from a stored blob (decrypted,
//! authenticated and hashed), and the encryption of a plaintext stream into the pieces a store writes.

use crate::backend::{CHUNK, Pipe, Source, read_full};
use crate::crypt::{Decryptor, Encryptor};
use crate::error::{Error, Result};
use crate::hex;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::path::PathBuf;

/// A source of plaintext, and the check of what it hashed to.
pub(crate) trait Plain {
    fn next(&mut self, rt: &tokio::runtime::Runtime) -> Result<Option<Bytes>>;
    fn check(&mut self) -> Result<()>;
}

pub(crate) struct FilePlain {
    pub(crate) file: std::fs::File,
    pub(crate) path: PathBuf,
    pub(crate) hasher: Sha256,
    pub(crate) expected: String,
}

impl Plain for FilePlain {
    fn next(&mut self, _: &tokio::runtime::Runtime) -> Result<Option<Bytes>> {
        let mut buf = vec![0u8; CHUNK];
        let n = read_full(&mut self.file, &mut buf).map_err(|source| Error::Io {
            path: self.path.clone(),
            action: "cannot read",
            source,
        })?;
        buf.truncate(n);
        self.hasher.update(&buf);
        Ok((n > 0).then(|| Bytes::from(buf)))
    }

    fn check(&mut self) -> Result<()> {
        let actual = hex(&self.hasher.clone().finalize());
        if actual != self.expected {
            return Err(Error::DigestMismatch {
                location: self.path.display().to_string(),
                expected: self.expected.clone(),
                actual,
            });
        }
        Ok(())
    }
}

pub(crate) struct MemPlain(pub(crate) Option<Bytes>);

impl Plain for MemPlain {
    fn next(&mut self, _: &tokio::runtime::Runtime) -> Result<Option<Bytes>> {
        Ok(self.0.take())
    }

    fn check(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Decrypts a stored blob piece by piece, hashing the plaintext.
pub(crate) struct StoreReader {
    pub(crate) source: Source,
    pub(crate) dec: Option<Decryptor>,
    pub(crate) queue: VecDeque<Bytes>,
    pub(crate) hasher: Sha256,
    pub(crate) size: u64,
    pub(crate) expected: String,
    pub(crate) location: String,
}

impl Plain for StoreReader {
    fn next(&mut self, rt: &tokio::runtime::Runtime) -> Result<Option<Bytes>> {
        loop {
            if let Some(p) = self.queue.pop_front() {
                self.hasher.update(&p);
                self.size += p.len() as u64;
                return Ok(Some(p));
            }
            let Some(dec) = self.dec.as_mut() else { return Ok(None) };
            match self.source.next(rt) {
                Some(piece) => {
                    let piece = piece.map_err(|e| Error::Blob(format!("{}: {e}", self.location)))?;
                    self.queue.extend(dec.push(&piece)?);
                }
                None => {
                    let dec = self.dec.take().ok_or_else(|| Error::Crypto("decryptor gone".into()))?;
                    let last = dec.finish()?;
                    if !last.is_empty() {
                        self.queue.push_back(last);
                    }
                }
            }
        }
    }

    fn check(&mut self) -> Result<()> {
        let actual = hex(&self.hasher.clone().finalize());
        if actual != self.expected {
            return Err(Error::DigestMismatch {
                location: self.location.clone(),
                expected: self.expected.clone(),
                actual,
            });
        }
        Ok(())
    }
}

/// Encrypts a plaintext source into the pieces a store writes.
pub(crate) struct EncPipe<'a> {
    pub(crate) plain: &'a mut dyn Plain,
    pub(crate) enc: Option<Encryptor>,
    pub(crate) queue: VecDeque<Bytes>,
    pub(crate) size: u64,
}

impl Pipe for EncPipe<'_> {
    fn next(&mut self, rt: &tokio::runtime::Runtime) -> Result<Option<Bytes>> {
        loop {
            if let Some(c) = self.queue.pop_front() {
                return Ok(Some(c));
            }
            let Some(enc) = self.enc.as_mut() else { return Ok(None) };
            match self.plain.next(rt)? {
                Some(p) => {
                    self.size += p.len() as u64;
                    self.queue.extend(enc.push(&p)?);
                }
                None => {
                    let enc = self.enc.take().ok_or_else(|| Error::Crypto("encryptor gone".into()))?;
                    self.queue.push_back(enc.finish()?);
                }
            }
        }
    }

    fn check(&mut self) -> Result<()> {
        self.plain.check()
    }
}
