//! EC P-256 and P-384 keys in PEM form, as `model_signing` loads them.
//!
//! Signing and verification go through the `sigstore` crate (`SigStoreSigner`, `CosignVerificationKey`, ECDSA with
//! the hash of the curve: P-256 → SHA-256, P-384 → SHA-384, ASN.1 DER signatures). Key *parsing* uses the RustCrypto
//! `p256`/`p384` crates, because sigstore's loaders accept only PKCS#8 `PRIVATE KEY` blocks and take a public key's
//! DER as given: `openssl ecparam -genkey` writes SEC1 `EC PRIVATE KEY` blocks (often after an `EC PARAMETERS`
//! block), public keys may carry a compressed point, and the key hint must be computed over the *re-encoded*
//! uncompressed SPKI PEM. So the key is parsed here, re-encoded as PKCS#8 / uncompressed SPKI, and handed to sigstore.

use crate::error::{Error, Result};
use crate::keyuri::KeyUri;
use crate::manifest::to_hex;
use crate::token::TokenKey;
use base64::Engine;
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use sha2::{Digest, Sha256};
use sigstore::crypto::signing_key::SigStoreKeyPair;
use sigstore::crypto::{CosignVerificationKey, SigStoreSigner, Signature, SigningScheme};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Why a key could not be read, used or made. The messages say what to do; [`Error::Key`] adds the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The file is not UTF-8 text.
    #[error("not a PEM file (DER keys are not supported; convert with openssl)")]
    NotPem,
    /// A PEM block opened with one label and closed with another.
    #[error("PEM block BEGIN {open} ends with END {close}")]
    MismatchedBlock {
        /// The `BEGIN` label.
        open: String,
        /// The `END` label.
        close: String,
    },
    /// A PEM block with `Proc-Type`/`DEK-Info` headers (an OpenSSL-encrypted key).
    #[error("encrypted PEM keys are not supported; decrypt the key first")]
    EncryptedPem,
    /// A PEM body that is not base64.
    #[error("the {label} block is not valid base64: {message}")]
    Base64 {
        /// The block's label.
        label: String,
        /// The decoder's complaint.
        message: String,
    },
    /// No `PUBLIC KEY` block.
    #[error("no `-----BEGIN PUBLIC KEY-----` block; give the signer's public key in PEM form")]
    NoPublicKey,
    /// An `ENCRYPTED PRIVATE KEY` block (encrypted PKCS#8) named without a passphrase source.
    #[error(
        "an encrypted private key: name it `file:PATH?passphrase-env=VAR` or `file:PATH?passphrase-file=FILE` \
         (see docs/keys.md)"
    )]
    EncryptedPrivateKey,
    /// The passphrase does not decrypt the encrypted PKCS#8 key (or the key is corrupt).
    #[error("the passphrase does not decrypt this encrypted PKCS#8 key (wrong passphrase, or a damaged file)")]
    WrongPassphrase,
    /// A passphrase given for a key that is not encrypted.
    #[error(
        "a passphrase is given but the key is not encrypted (no `ENCRYPTED PRIVATE KEY` block); drop the passphrase"
    )]
    NotEncrypted,
    /// A key name (`file:…`, `pkcs11:…`) that does not parse.
    #[error("bad key name: {0}")]
    Uri(String),
    /// A passphrase or PIN could not be read.
    #[error("{0}")]
    Secret(String),
    /// A PKCS#11 token, object or login problem.
    #[error("PKCS#11: {0}")]
    Pkcs11(String),
    /// No `EC PRIVATE KEY` or `PRIVATE KEY` block.
    #[error("no `EC PRIVATE KEY` or `PRIVATE KEY` PEM block; give an EC P-256 or P-384 private key")]
    NoPrivateKey,
    /// A public key on another curve, or not an EC key.
    #[error("not an EC P-256 or P-384 public key (only those curves are supported)")]
    UnsupportedPublicKey,
    /// A private key on another curve, or not an EC key.
    #[error("not an EC P-256 or P-384 private key (only those curves are supported)")]
    UnsupportedPrivateKey,
    /// Re-encoding a parsed key failed.
    #[error("the key cannot be re-encoded: {0}")]
    Encoding(String),
    /// The signing backend refused the key.
    #[error("the key cannot be used for signing: {0}")]
    Unusable(String),
    /// The signing backend failed to sign.
    #[error("signing failed: {0}")]
    Signing(String),
}

/// The curves `model_signing` key mode accepts and this crate supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    /// NIST P-256 (secp256r1), signed with SHA-256.
    P256,
    /// NIST P-384 (secp384r1), signed with SHA-384.
    P384,
}

impl Curve {
    fn scheme(self) -> SigningScheme {
        match self {
            Curve::P256 => SigningScheme::ECDSA_P256_SHA256_ASN1,
            Curve::P384 => SigningScheme::ECDSA_P384_SHA384_ASN1,
        }
    }
}

/// A PEM block: its label and decoded body.
struct Block {
    label: String,
    der: Vec<u8>,
}

/// Every PEM block in `text`; text outside blocks (an `openssl ec -text` preamble) is skipped, CRLF accepted.
fn pem_blocks(text: &str) -> std::result::Result<Vec<Block>, KeyError> {
    let mut blocks = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(label) = line.strip_prefix("-----BEGIN ").and_then(|l| l.strip_suffix("-----")) {
            current = Some((label.to_string(), String::new()));
        } else if let Some(label) = line.strip_prefix("-----END ").and_then(|l| l.strip_suffix("-----")) {
            if let Some((open, body)) = current.take() {
                if open != label {
                    return Err(KeyError::MismatchedBlock { open, close: label.to_string() });
                }
                if body.contains(':') {
                    return Err(KeyError::EncryptedPem);
                }
                let der = base64::engine::general_purpose::STANDARD
                    .decode(body.replace(|c: char| c.is_whitespace(), ""))
                    .map_err(|e| KeyError::Base64 { label: open.clone(), message: e.to_string() })?;
                blocks.push(Block { label: open, der });
            }
        } else if let Some((_, body)) = current.as_mut() {
            body.push_str(line);
            if line.contains(':') {
                body.push(':');
            }
        }
    }
    Ok(blocks)
}

fn key_err(path: &Path) -> impl FnOnce(KeyError) -> Error + '_ {
    move |reason| Error::Key { path: path.to_path_buf(), reason }
}

fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(Error::io(path, "cannot read the key file"))?;
    String::from_utf8(bytes).map_err(|_| key_err(path)(KeyError::NotPem))
}

/// A public key: its curve and its uncompressed SPKI encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// The curve.
    pub curve: Curve,
    spki_der: Vec<u8>,
    spki_pem: String,
}

fn encoding(e: impl std::fmt::Display) -> KeyError {
    KeyError::Encoding(e.to_string())
}

impl PublicKey {
    fn from_spki_der(der: &[u8]) -> std::result::Result<PublicKey, KeyError> {
        let (curve, doc, pem) = if let Ok(k) = p256::PublicKey::from_public_key_der(der) {
            (
                Curve::P256,
                k.to_public_key_der().map_err(encoding)?,
                k.to_public_key_pem(LineEnding::LF).map_err(encoding)?,
            )
        } else if let Ok(k) = p384::PublicKey::from_public_key_der(der) {
            (
                Curve::P384,
                k.to_public_key_der().map_err(encoding)?,
                k.to_public_key_pem(LineEnding::LF).map_err(encoding)?,
            )
        } else {
            return Err(KeyError::UnsupportedPublicKey);
        };
        Ok(PublicKey { curve, spki_der: doc.as_bytes().to_vec(), spki_pem: pem })
    }

    /// A public key from its SEC1 point (uncompressed or compressed), P-256 or P-384.
    pub fn from_sec1_point(point: &[u8]) -> std::result::Result<PublicKey, KeyError> {
        let spki = if let Ok(k) = p256::PublicKey::from_sec1_bytes(point) {
            k.to_public_key_der().map_err(encoding)?
        } else if let Ok(k) = p384::PublicKey::from_sec1_bytes(point) {
            k.to_public_key_der().map_err(encoding)?
        } else {
            return Err(KeyError::UnsupportedPublicKey);
        };
        Self::from_spki_der(spki.as_bytes())
    }

    /// Loads a PEM `PUBLIC KEY` (SPKI) file.
    pub fn from_pem_file(path: &Path) -> Result<PublicKey> {
        let text = read_text(path)?;
        Self::from_pem(&text).map_err(key_err(path))
    }

    /// Parses PEM text holding a `PUBLIC KEY` block.
    pub fn from_pem(text: &str) -> std::result::Result<PublicKey, KeyError> {
        let blocks = pem_blocks(text)?;
        let block = blocks.iter().find(|b| b.label == "PUBLIC KEY").ok_or(KeyError::NoPublicKey)?;
        Self::from_spki_der(&block.der)
    }

    /// The re-encoded public key: PEM SPKI with an uncompressed point, 64-column lines, LF endings.
    pub fn to_pem(&self) -> &str {
        &self.spki_pem
    }

    /// The bundle's `hint`: lowercase hex SHA-256 of [`PublicKey::to_pem`].
    pub fn hint(&self) -> String {
        to_hex(&Sha256::digest(self.spki_pem.as_bytes()))
    }

    /// Checks an ASN.1 DER ECDSA signature over `message` (with the curve's hash), through sigstore.
    pub fn verify(&self, message: &[u8], signature_der: &[u8]) -> bool {
        CosignVerificationKey::from_der(&self.spki_der, &self.curve.scheme())
            .and_then(|k| k.verify_signature(Signature::Raw(signature_der), message))
            .is_ok()
    }
}

/// Who holds the private key.
enum Backend {
    /// In this process's memory (a PEM file, plain or encrypted).
    Memory(SigStoreSigner),
    /// In a PKCS#11 token.
    Token(TokenKey),
}

/// A private key ready to sign, with its public key. The private key is either in memory or in a PKCS#11 token;
/// neither `Debug` nor any error shows key material.
pub struct SigningKey {
    backend: Backend,
    public: PublicKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("public", &self.public).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Opens the key a name gives ([`crate::keyuri`]): `PATH`, `file:PATH[?passphrase-env=VAR|passphrase-file=F]`
    /// or `pkcs11:token=…;object=…[?module-path=…&pin-env=…]`. Errors name the key (never a secret).
    pub fn open(name: &Path) -> Result<SigningKey> {
        let text = name.to_string_lossy();
        // A name that does not parse is shown without its query (where a refused `pin-value` would be).
        let shown = match text.split_once('?') {
            Some((head, _)) if text.starts_with("pkcs11:") || text.starts_with("file:") => PathBuf::from(head),
            _ => name.to_path_buf(),
        };
        let uri = KeyUri::parse(&text).map_err(key_err(&shown))?;
        Self::open_uri(&uri).map_err(|e| match e {
            Error::Key { reason, .. } => Error::Key { path: name.to_path_buf(), reason },
            other => other,
        })
    }

    /// Opens the key a parsed name gives.
    pub fn open_uri(uri: &KeyUri) -> Result<SigningKey> {
        match uri {
            KeyUri::File { path, passphrase: None } => Self::from_pem_file(path),
            KeyUri::File { path, passphrase: Some(source) } => {
                let pass = Zeroizing::new(source.read("passphrase").map_err(key_err(path))?);
                let text = read_text(path)?;
                Self::from_encrypted_pem(&text, pass.as_bytes()).map_err(key_err(path))
            }
            KeyUri::Pkcs11(p) => {
                let name = PathBuf::from(uri.to_string());
                let (token, point) = TokenKey::open(p).map_err(|e| key_err(&name)(KeyError::Pkcs11(e)))?;
                let public = PublicKey::from_sec1_point(&point).map_err(key_err(&name))?;
                Ok(SigningKey { backend: Backend::Token(token), public })
            }
        }
    }

    /// Parses an encrypted PKCS#8 PEM (`ENCRYPTED PRIVATE KEY`, PBES2) with its passphrase.
    pub fn from_encrypted_pem(text: &str, passphrase: &[u8]) -> std::result::Result<SigningKey, KeyError> {
        let blocks = pem_blocks(text)?;
        let Some(block) = blocks.iter().find(|b| b.label == "ENCRYPTED PRIVATE KEY") else {
            return Err(KeyError::NotEncrypted);
        };
        let info =
            pkcs8::EncryptedPrivateKeyInfoRef::try_from(block.der.as_slice()).map_err(|_| KeyError::WrongPassphrase)?;
        let doc = info.decrypt(passphrase).map_err(|_| KeyError::WrongPassphrase)?;
        Self::from_der(doc.as_bytes(), false)
    }

    /// Loads a PEM private key file: SEC1 `EC PRIVATE KEY` or unencrypted PKCS#8 `PRIVATE KEY`, P-256 or P-384;
    /// `EC PARAMETERS` blocks and text around the blocks are skipped.
    pub fn from_pem_file(path: &Path) -> Result<SigningKey> {
        let text = read_text(path)?;
        Self::from_pem(&text).map_err(key_err(path))
    }

    /// Parses PEM text holding a private key.
    pub fn from_pem(text: &str) -> std::result::Result<SigningKey, KeyError> {
        let blocks = pem_blocks(text)?;
        if blocks.iter().any(|b| b.label == "ENCRYPTED PRIVATE KEY") {
            return Err(KeyError::EncryptedPrivateKey);
        }
        let block = blocks
            .iter()
            .find(|b| b.label == "EC PRIVATE KEY" || b.label == "PRIVATE KEY")
            .ok_or(KeyError::NoPrivateKey)?;
        Self::from_der(&block.der, block.label == "EC PRIVATE KEY")
    }

    /// A SEC1 (`sec1`) or PKCS#8 DER private key, P-256 or P-384.
    fn from_der(der: &[u8], sec1: bool) -> std::result::Result<SigningKey, KeyError> {
        // P-256 first: a 48-byte scalar is never accepted as P-256, and named-curve parameters are checked.
        let p256_key = if sec1 {
            p256::SecretKey::from_sec1_der(der)
        } else {
            p256::SecretKey::from_pkcs8_der(der).map_err(Into::into)
        };
        let (curve, pkcs8, spki) = if let Ok(k) = p256_key {
            let pkcs8 = Zeroizing::new(k.to_pkcs8_der().map_err(encoding)?.as_bytes().to_vec());
            (Curve::P256, pkcs8, k.public_key().to_public_key_der().map_err(encoding)?)
        } else {
            let k = if sec1 {
                p384::SecretKey::from_sec1_der(der)
            } else {
                p384::SecretKey::from_pkcs8_der(der).map_err(Into::into)
            }
            .map_err(|_| KeyError::UnsupportedPrivateKey)?;
            let pkcs8 = Zeroizing::new(k.to_pkcs8_der().map_err(encoding)?.as_bytes().to_vec());
            (Curve::P384, pkcs8, k.public_key().to_public_key_der().map_err(encoding)?)
        };
        let public = PublicKey::from_spki_der(spki.as_bytes())?;
        let signer = SigStoreKeyPair::from_der(&pkcs8)
            .and_then(|kp| kp.to_sigstore_signer(&curve.scheme()))
            .map_err(|e| KeyError::Unusable(e.to_string()))?;
        Ok(SigningKey { backend: Backend::Memory(signer), public })
    }

    /// The public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// Whether the private key is held in a PKCS#11 token.
    pub fn in_token(&self) -> bool {
        matches!(self.backend, Backend::Token(_))
    }

    /// ECDSA over `message` with the curve's hash; ASN.1 DER signature.
    pub fn sign(&self, message: &[u8]) -> std::result::Result<Vec<u8>, KeyError> {
        match &self.backend {
            Backend::Memory(signer) => signer.sign(message).map_err(|e| KeyError::Signing(e.to_string())),
            Backend::Token(token) => {
                let bad = |_| KeyError::Pkcs11("the token returned a malformed ECDSA signature".into());
                match self.public.curve {
                    Curve::P256 => {
                        let raw = token.sign_digest(&Sha256::digest(message)).map_err(KeyError::Pkcs11)?;
                        p256::ecdsa::Signature::from_slice(&raw).map(|s| s.to_der().as_bytes().to_vec()).map_err(bad)
                    }
                    Curve::P384 => {
                        let raw = token.sign_digest(&sha2::Sha384::digest(message)).map_err(KeyError::Pkcs11)?;
                        p384::ecdsa::Signature::from_slice(&raw).map(|s| s.to_der().as_bytes().to_vec()).map_err(bad)
                    }
                }
            }
        }
    }
}

/// Generates a fresh EC P-256 key pair from the operating system's randomness: (PKCS#8 `PRIVATE KEY` PEM,
/// `PUBLIC KEY` PEM).
pub fn generate_p256() -> std::result::Result<(String, String), KeyError> {
    let secret = p256::SecretKey::random(&mut rand_core::OsRng);
    let private = secret.to_pkcs8_pem(LineEnding::LF).map_err(encoding)?.to_string();
    let public = secret.public_key().to_public_key_pem(LineEnding::LF).map_err(encoding)?;
    Ok((private, public))
}
