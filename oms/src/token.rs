//! EC signing keys inside a PKCS#11 token (an HSM, a cloud HSM's PKCS#11 library, SoftHSM), through `cryptoki`.
//!
//! The private key never leaves the token: the message is hashed here (SHA-256 for P-256, SHA-384 for P-384), the
//! token signs the digest with `CKM_ECDSA` and returns the raw `r‖s` signature, which is re-encoded as ASN.1 DER
//! (what OMS bundles and DSSE envelopes carry). The public key is read from the public key object with the same
//! label (`CKA_EC_POINT`), or from the private key object where the token keeps the point there.

use crate::keyuri::Pkcs11Uri;
use cryptoki::context::{CInitializeArgs, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// A module is initialised once per process and never finalised: a second `C_Initialize` of the same library
/// fails, and finalising one handle would end every other session on it (the registry's key provider does the same).
fn context(module: &Path) -> Result<Pkcs11, String> {
    static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut map = CONTEXTS.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = map.get(module) {
        return Ok(c.clone());
    }
    let ctx = Pkcs11::new(module).map_err(|e| format!("cannot load the PKCS#11 module {}: {e}", module.display()))?;
    match ctx.initialize(CInitializeArgs::OsThreads) {
        Ok(()) | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(format!("cannot initialise the PKCS#11 module {}: {e}", module.display())),
    }
    map.insert(module.to_path_buf(), ctx.clone());
    Ok(ctx)
}

/// An opened token key: a logged-in session and the private key's handle.
pub(crate) struct TokenKey {
    session: Mutex<Session>,
    key: ObjectHandle,
}

/// The uncompressed SEC1 point from `CKA_EC_POINT`: tokens return it wrapped in a DER OCTET STRING (as PKCS#11
/// says) or, some of them, bare.
fn ec_point(value: &[u8]) -> &[u8] {
    match value {
        [0x04, len, rest @ ..] if usize::from(*len) == rest.len() && matches!(rest.len(), 65 | 97) => rest,
        [0x04, 0x81, len, rest @ ..] if usize::from(*len) == rest.len() => rest,
        other => other,
    }
}

impl TokenKey {
    /// Opens a session on the token, logs in with the PIN and finds the key pair by label. Returns the key and the
    /// public key's uncompressed SEC1 point.
    pub(crate) fn open(uri: &Pkcs11Uri) -> Result<(TokenKey, Vec<u8>), String> {
        let ctx = context(&uri.module_path())?;
        let slots = ctx.get_slots_with_token().map_err(|e| format!("cannot list the slots: {e}"))?;
        let mut labels = Vec::new();
        let mut found = None;
        for slot in slots {
            let info = ctx.get_token_info(slot).map_err(|e| format!("cannot read a token: {e}"))?;
            let label = info.label().trim().to_string();
            if label == uri.token {
                found = Some(slot);
                break;
            }
            labels.push(label);
        }
        let slot = found.ok_or_else(|| {
            format!(
                "no token labelled `{}` (tokens: {})",
                uri.token,
                if labels.is_empty() { "none".into() } else { labels.join(", ") }
            )
        })?;
        let pin = uri.pin_source().read("PIN").map_err(|e| e.to_string())?;
        let session = ctx.open_ro_session(slot).map_err(|e| format!("cannot open a session: {e}"))?;
        match session.login(UserType::User, Some(&AuthPin::new(pin))) {
            Ok(()) | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) => return Err(format!("cannot log in to token `{}` with the PIN: {e}", uri.token)),
        }
        let find = |class: ObjectClass| {
            session
                .find_objects(&[Attribute::Class(class), Attribute::Label(uri.object.as_bytes().to_vec())])
                .map_err(|e| format!("cannot search the token: {e}"))
        };
        let key = match find(ObjectClass::PRIVATE_KEY)?.as_slice() {
            [k] => *k,
            [] => return Err(format!("no private key object labelled `{}` in token `{}`", uri.object, uri.token)),
            many => {
                return Err(format!(
                    "{} private keys are labelled `{}`; labels must be unique",
                    many.len(),
                    uri.object
                ));
            }
        };
        let point_of = |handle: ObjectHandle| -> Result<Option<Vec<u8>>, String> {
            let attrs = session
                .get_attributes(handle, &[AttributeType::EcPoint])
                .map_err(|e| format!("cannot read the key's EC point: {e}"))?;
            Ok(attrs.into_iter().find_map(|a| match a {
                Attribute::EcPoint(p) => Some(ec_point(&p).to_vec()),
                _ => None,
            }))
        };
        let point = match find(ObjectClass::PUBLIC_KEY)?.as_slice() {
            [p] => point_of(*p)?,
            _ => None,
        };
        let point = match point {
            Some(p) => p,
            None => point_of(key).ok().flatten().ok_or_else(|| {
                format!(
                    "no public key object labelled `{}` beside the private key; import the public key too",
                    uri.object
                )
            })?,
        };
        Ok((TokenKey { session: Mutex::new(session), key }, point))
    }

    /// `CKM_ECDSA` over `digest`: the raw `r‖s` signature.
    pub(crate) fn sign_digest(&self, digest: &[u8]) -> Result<Vec<u8>, String> {
        let session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        session.sign(&Mechanism::Ecdsa, self.key, digest).map_err(|e| format!("the token refused to sign: {e}"))
    }
}
