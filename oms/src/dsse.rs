//! DSSE envelopes for Sovra's own signed records (promotion statements, approvals, exceptions), signed with the same
//! keys and the same PAE as OMS bundles ([`crate::bundle::pae`]). `keyid` carries the signer's key hint, so a
//! verifier can pick the configured key without trying them all.

use crate::bundle::pae;
use crate::keys::{KeyError, PublicKey, SigningKey};
use base64::Engine;
use serde::{Deserialize, Serialize};

/// Why an envelope could not be signed or did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The key refused to sign.
    #[error("{0}")]
    Signing(#[from] KeyError),
    /// The envelope holds another kind of payload.
    #[error("payloadType is `{found}`, expected `{expected}`")]
    PayloadType {
        /// The envelope's `payloadType`.
        found: String,
        /// The type the caller asked for.
        expected: String,
    },
    /// The envelope has no signature.
    #[error("the envelope has no signature")]
    NoSignature,
    /// A field that must be standard base64 is not.
    #[error("{field} is not base64: {message}")]
    Base64 {
        /// `payload` or `signature`.
        field: &'static str,
        /// The decoder's complaint.
        message: String,
    },
    /// The signature does not verify with the key.
    #[error("the signature does not verify with the configured key")]
    BadSignature,
}

/// A DSSE envelope (JSON form).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Envelope {
    /// Standard base64 of the payload bytes.
    pub payload: String,
    /// The payload's media type.
    pub payload_type: String,
    /// Signatures; the first is the one checked.
    pub signatures: Vec<EnvelopeSignature>,
}

/// One signature of an [`Envelope`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvelopeSignature {
    /// The signer's key hint (SHA-256 of its PEM SPKI).
    pub keyid: String,
    /// Standard base64 of the ASN.1 DER ECDSA signature over the PAE.
    pub sig: String,
}

impl Envelope {
    /// Signs `payload` of type `payload_type`.
    pub fn sign(payload_type: &str, payload: &[u8], key: &SigningKey) -> Result<Envelope, EnvelopeError> {
        let b64 = &base64::engine::general_purpose::STANDARD;
        let sig = key.sign(&pae(payload_type, payload))?;
        Ok(Envelope {
            payload: b64.encode(payload),
            payload_type: payload_type.to_string(),
            signatures: vec![EnvelopeSignature { keyid: key.public_key().hint(), sig: b64.encode(sig) }],
        })
    }

    /// The key hint of the first signature.
    pub fn keyid(&self) -> Option<&str> {
        self.signatures.first().map(|s| s.keyid.as_str())
    }

    /// Checks the first signature with `key` and the payload type, and returns the payload bytes.
    pub fn verify(&self, payload_type: &str, key: &PublicKey) -> Result<Vec<u8>, EnvelopeError> {
        let b64 = &base64::engine::general_purpose::STANDARD;
        if self.payload_type != payload_type {
            return Err(EnvelopeError::PayloadType {
                found: self.payload_type.clone(),
                expected: payload_type.to_string(),
            });
        }
        let first = self.signatures.first().ok_or(EnvelopeError::NoSignature)?;
        let base64 = |field| move |e: base64::DecodeError| EnvelopeError::Base64 { field, message: e.to_string() };
        let payload = b64.decode(&self.payload).map_err(base64("payload"))?;
        let sig = b64.decode(&first.sig).map_err(base64("signature"))?;
        if !key.verify(&pae(payload_type, &payload), &sig) {
            return Err(EnvelopeError::BadSignature);
        }
        Ok(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_tamper() {
        let (private, _) = crate::keys::generate_p256().unwrap();
        let key = SigningKey::from_pem(&private).unwrap();
        let env = Envelope::sign("application/x-test", b"{\"a\":1}", &key).unwrap();
        assert_eq!(env.verify("application/x-test", key.public_key()).unwrap(), b"{\"a\":1}");
        assert!(matches!(env.verify("application/x-other", key.public_key()), Err(EnvelopeError::PayloadType { .. })));
        let mut bad = env.clone();
        bad.payload = base64::engine::general_purpose::STANDARD.encode(b"{\"a\":2}");
        assert_eq!(bad.verify("application/x-test", key.public_key()), Err(EnvelopeError::BadSignature));
        let (other, _) = crate::keys::generate_p256().unwrap();
        assert!(env.verify("application/x-test", SigningKey::from_pem(&other).unwrap().public_key()).is_err());
    }
}
