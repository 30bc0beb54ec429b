//! The Sigstore bundle v0.3 (JSON) around a DSSE envelope, as `model_signing` writes it in key mode.
//!
//! Written by hand on purpose: the `sigstore` crate's bundle support is built for keyless signing (Fulcio
//! certificates, Rekor transparency-log entries) and needs network features to produce a bundle; it cannot write a
//! public-key-hint bundle with a DSSE envelope offline. The format is small: the PAE is one line of bytes, the JSON
//! is five nested objects.

use base64::Engine;
use serde::{Deserialize, Serialize};

/// `mediaType` of a Sigstore bundle v0.3.
pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// DSSE `payloadType` of an in-toto statement.
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// DSSE pre-authentication encoding: `"DSSEv1" SP len(type) SP type SP len(payload) SP payload`, lengths in decimal
/// ASCII bytes. This is what is signed.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!("DSSEv1 {} {} {} ", payload_type.len(), payload_type, payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out
}

/// Why bundle JSON could not be read or decoded. [`crate::Error::BundleInvalid`] adds the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// Not JSON, or not the bundle's shape (a missing or unknown key, a wrong type).
    #[error("{0}")]
    Json(String),
    /// `dsseEnvelope.signatures` is empty.
    #[error("dsseEnvelope.signatures is empty")]
    NoSignature,
    /// A field that must be standard base64 is not.
    #[error("{field} is not standard base64: {message}")]
    Base64 {
        /// The JSON path of the field.
        field: &'static str,
        /// The decoder's complaint.
        message: String,
    },
}

/// The bundle. Unknown keys anywhere are refused, as `model_signing` (pydantic `extra="forbid"`) does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Bundle {
    /// Must be [`BUNDLE_MEDIA_TYPE`].
    pub media_type: String,
    /// The key hint.
    pub verification_material: VerificationMaterial,
    /// The signed statement.
    pub dsse_envelope: DsseEnvelope,
}

/// `verificationMaterial`: a public key hint and (always empty here) transparency-log entries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VerificationMaterial {
    /// The public key identifier.
    pub public_key: PublicKeyIdentifier,
    /// Transparency-log entries: `[]` in key mode (missing is read as empty).
    #[serde(default)]
    pub tlog_entries: Vec<serde_json::Value>,
}

/// `publicKey`: the hint, or (legacy bundles) raw key fields, which are accepted and make the hint check skip.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PublicKeyIdentifier {
    /// Lowercase hex SHA-256 of the signer's public key as PEM SPKI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Legacy field (pre-1.0 bundles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_bytes: Option<serde_json::Value>,
    /// Legacy field (pre-1.0 bundles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_details: Option<serde_json::Value>,
}

/// The DSSE envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DsseEnvelope {
    /// Standard base64 of the statement bytes.
    pub payload: String,
    /// Must be [`PAYLOAD_TYPE`].
    pub payload_type: String,
    /// Only the first is checked, as `model_signing` does.
    pub signatures: Vec<DsseSignature>,
}

/// One DSSE signature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DsseSignature {
    /// Standard base64 of the ASN.1 DER ECDSA signature.
    pub sig: String,
    /// Always `""` when written; absent or null accepted.
    #[serde(default)]
    pub keyid: Option<String>,
}

impl Bundle {
    /// A key-mode bundle for `payload` signed with `signature_der` by the key whose hint is `hint`.
    pub fn new(payload: &[u8], signature_der: &[u8], hint: String) -> Bundle {
        let b64 = &base64::engine::general_purpose::STANDARD;
        Bundle {
            media_type: BUNDLE_MEDIA_TYPE.into(),
            verification_material: VerificationMaterial {
                public_key: PublicKeyIdentifier { hint: Some(hint), raw_bytes: None, key_details: None },
                tlog_entries: Vec::new(),
            },
            dsse_envelope: DsseEnvelope {
                payload: b64.encode(payload),
                payload_type: PAYLOAD_TYPE.into(),
                signatures: vec![DsseSignature { sig: b64.encode(signature_der), keyid: Some(String::new()) }],
            },
        }
    }

    /// Compact JSON with no trailing newline, in `model_signing`'s key order.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses bundle JSON (any whitespace or key order; unknown keys refused).
    pub fn from_json(bytes: &[u8]) -> Result<Bundle, BundleError> {
        serde_json::from_slice(bytes).map_err(|e| {
            // Another signing mode is named as such, not reported as a parse error of key mode.
            let v: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
            let m = &v["verificationMaterial"];
            let mode = if m.get("x509CertificateChain").is_some() {
                Some("certificate (an X.509 chain, `model_signing sign certificate`)")
            } else if m.get("certificate").is_some() {
                Some("Sigstore keyless (a Fulcio certificate, `model_signing sign sigstore`)")
            } else {
                None
            };
            match mode {
                Some(mode) if m.get("publicKey").is_none() => BundleError::Json(format!(
                    "unsupported signing mode: the bundle is signed in {mode} mode; Sovra verifies key-mode bundles \
                     (`model_signing sign key`, `sovra model sign`)"
                )),
                _ => BundleError::Json(e.to_string()),
            }
        })
    }

    /// The decoded statement bytes.
    pub fn payload(&self) -> Result<Vec<u8>, BundleError> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.dsse_envelope.payload)
            .map_err(|e| BundleError::Base64 { field: "dsseEnvelope.payload", message: e.to_string() })
    }

    /// The decoded first signature.
    pub fn signature(&self) -> Result<Vec<u8>, BundleError> {
        let first = self.dsse_envelope.signatures.first().ok_or(BundleError::NoSignature)?;
        base64::engine::general_purpose::STANDARD
            .decode(&first.sig)
            .map_err(|e| BundleError::Base64 { field: "dsseEnvelope.signatures[0].sig", message: e.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_signing_modes_are_named_not_misparsed() {
        let cert = br#"{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json", "verificationMaterial":
            {"x509CertificateChain": {"certificates": [{"rawBytes": "AA=="}]}, "tlogEntries": []},
            "dsseEnvelope": {"payload": "", "payloadType": "application/vnd.in-toto+json", "signatures": []}}"#;
        let e = Bundle::from_json(cert).unwrap_err().to_string();
        assert!(e.starts_with("unsupported signing mode: the bundle is signed in certificate"), "{e}");
        let keyless = br#"{"verificationMaterial": {"certificate": {"rawBytes": "AA=="}}}"#;
        let e = Bundle::from_json(keyless).unwrap_err().to_string();
        assert!(e.contains("unsupported signing mode") && e.contains("Sigstore keyless"), "{e}");
        assert!(!Bundle::from_json(b"{}").unwrap_err().to_string().contains("unsupported"));
    }

    #[test]
    fn pae_is_the_dsse_v1_encoding() {
        assert_eq!(pae(PAYLOAD_TYPE, b"{}"), b"DSSEv1 28 application/vnd.in-toto+json 2 {}".to_vec());
        assert_eq!(pae("", b""), b"DSSEv1 0  0 ".to_vec());
    }

    #[test]
    fn written_key_order_matches_model_signing() {
        let json = String::from_utf8(Bundle::new(b"x", b"y", "00".into()).to_json()).unwrap();
        assert_eq!(
            json,
            r#"{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","verificationMaterial":{"publicKey":{"hint":"00"},"tlogEntries":[]},"dsseEnvelope":{"payload":"eA==","payloadType":"application/vnd.in-toto+json","signatures":[{"sig":"eQ==","keyid":""}]}}"#
        );
    }
}
