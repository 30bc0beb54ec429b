//! DSSE envelopes for Sovra's own signed records (promotion statements, approvals, exceptions), signed with the same
//! keys and the same PAE as OMS bundles ([`crate::bundle::pae`]). `keyid` carries the signer's key hint, so a
//! verifier can pick the configured key without trying them all.

use crate::bundle::pae;
use crate::keys::{PublicKey, SigningKey};
use base64::Engine;
use serde::{Deserialize, Serialize};

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
    pub fn sign(payload_type: &str, payload: &[u8], key: &SigningKey) -> Result<Envelope, String> {
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
    pub fn verify(&self, payload_type: &str, key: &PublicKey) -> Result<Vec<u8>, String> {
        let b64 = &base64::engine::general_purpose::STANDARD;
        if self.payload_type != payload_type {
            return Err(format!("payloadType is `{}`, expected `{payload_type}`", self.payload_type));
        }
        let first = self.signatures.first().ok_or("the envelope has no signature")?;
        let payload = b64.decode(&self.payload).map_err(|e| format!("payload is not base64: {e}"))?;
        let sig = b64.decode(&first.sig).map_err(|e| format!("signature is not base64: {e}"))?;
        if !key.verify(&pae(payload_type, &payload), &sig) {
            return Err("the signature does not verify with the configured key".into());
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
        assert!(env.verify("application/x-other", key.public_key()).is_err());
        let mut bad = env.clone();
        bad.payload = base64::engine::general_purpose::STANDARD.encode(b"{\"a\":2}");
        assert!(bad.verify("application/x-test", key.public_key()).is_err());
        let (other, _) = crate::keys::generate_p256().unwrap();
        assert!(env.verify("application/x-test", SigningKey::from_pem(&other).unwrap().public_key()).is_err());
    }
}
