//! DSSE envelopes signed by several keys (the DSSE format allows any number of signatures over one payload): a
//! record that needs N of M approvers — a placement exception — is one envelope that each approver adds a
//! signature to, so that every approver signs exactly the same bytes.

use crate::bundle::pae;
use crate::dsse::{Envelope, EnvelopeError, EnvelopeSignature};
use crate::keys::{PublicKey, SigningKey};
use base64::Engine;

/// Adds `key`'s signature over the envelope's payload to `env`, replacing an earlier signature by the same key
/// (signing twice does not count twice). The payload is not changed.
pub fn add_signature(env: &mut Envelope, key: &SigningKey) -> Result<(), EnvelopeError> {
    let b64 = &base64::engine::general_purpose::STANDARD;
    let payload =
        b64.decode(&env.payload).map_err(|e| EnvelopeError::Base64 { field: "payload", message: e.to_string() })?;
    let sig = key.sign(&pae(&env.payload_type, &payload))?;
    let keyid = key.public_key().hint();
    env.signatures.retain(|s| s.keyid != keyid);
    env.signatures.push(EnvelopeSignature { keyid, sig: b64.encode(sig) });
    Ok(())
}

/// An envelope with no signature yet, for [`add_signature`].
pub fn unsigned(payload_type: &str, payload: &[u8]) -> Envelope {
    Envelope {
        payload: base64::engine::general_purpose::STANDARD.encode(payload),
        payload_type: payload_type.to_string(),
        signatures: Vec::new(),
    }
}

/// What [`verify_all`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signers {
    /// The payload bytes.
    pub payload: Vec<u8>,
    /// The names of the keys (of those given) with a valid signature, each once, sorted.
    pub valid: Vec<String>,
    /// A line for each signature that counts for nothing: no key given has its key id, or it does not verify.
    pub rejected: Vec<String>,
}

/// Checks every signature of `env` against `keys` (name, key) and returns which named keys signed the payload.
/// A signature counts only if its key id names one of `keys` and it verifies with that key; a key counts once
/// however many signatures it has. Fails on another payload type or undecodable base64.
pub fn verify_all(env: &Envelope, payload_type: &str, keys: &[(String, PublicKey)]) -> Result<Signers, EnvelopeError> {
    let b64 = &base64::engine::general_purpose::STANDARD;
    if env.payload_type != payload_type {
        return Err(EnvelopeError::PayloadType { found: env.payload_type.clone(), expected: payload_type.into() });
    }
    let payload =
        b64.decode(&env.payload).map_err(|e| EnvelopeError::Base64 { field: "payload", message: e.to_string() })?;
    let message = pae(payload_type, &payload);
    let mut valid = Vec::new();
    let mut rejected = Vec::new();
    for (i, s) in env.signatures.iter().enumerate() {
        let Some((name, key)) = keys.iter().find(|(_, k)| k.hint() == s.keyid) else {
            rejected.push(format!("signature {i}: key {} is not a configured approver", s.keyid));
            continue;
        };
        let ok = b64.decode(&s.sig).is_ok_and(|sig| key.verify(&message, &sig));
        if ok {
            valid.push(name.clone());
        } else {
            rejected.push(format!("signature {i} ({name}): does not verify over the payload"));
        }
    }
    valid.sort();
    valid.dedup();
    Ok(Signers { payload, valid, rejected })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_pem(&crate::keys::generate_p256().unwrap().0).unwrap()
    }

    #[test]
    fn several_signers_over_one_payload() {
        let (a, b, c) = (key(), key(), key());
        let keys = vec![("alice".to_string(), a.public_key().clone()), ("bob".to_string(), b.public_key().clone())];
        let mut env = unsigned("application/x-test", b"{}");
        add_signature(&mut env, &a).unwrap();
        add_signature(&mut env, &a).unwrap();
        assert_eq!(env.signatures.len(), 1, "signing twice replaces");
        add_signature(&mut env, &c).unwrap();
        add_signature(&mut env, &b).unwrap();
        let s = verify_all(&env, "application/x-test", &keys).unwrap();
        assert_eq!(s.valid, ["alice", "bob"]);
        assert_eq!(s.rejected.len(), 1, "{:?}", s.rejected);
        // A changed payload invalidates every signature.
        env.payload = base64::engine::general_purpose::STANDARD.encode(b"{\"x\":1}");
        let s = verify_all(&env, "application/x-test", &keys).unwrap();
        assert!(s.valid.is_empty());
        assert_eq!(s.rejected.len(), 3);
        assert!(verify_all(&env, "application/x-other", &keys).is_err());
    }
}
