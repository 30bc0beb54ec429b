//! The PKCS#11 key provider: a zone's key-encryption key is an AES-256 secret key inside a token (an HSM, a cloud
//! HSM's PKCS#11 library, or SoftHSM), found by its label; data keys are wrapped and unwrapped by the token with
//! `CKM_AES_GCM` (a random 12-byte IV, the blob's additional data, a 128-bit tag), so the key never leaves it.

use crate::error::{Error, Result};
use crate::keys::{DataKey, KeyProvider};
use cryptoki::context::{CInitializeArgs, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use zeroize::Zeroizing;

/// Where a zone's key sits in a PKCS#11 token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Spec {
    /// The PKCS#11 module (e.g. `/usr/lib/softhsm/libsofthsm2.so`).
    pub module: PathBuf,
    /// The token's label.
    pub token: String,
    /// The label of the AES key in the token.
    pub key_label: String,
    /// The environment variable that holds the user PIN (default `SOVRA_PKCS11_PIN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_env: Option<String>,
}

/// A module is initialised once per process and never finalised: a second `C_Initialize` of the same library
/// fails, and finalising one handle would end every other session on it.
fn context(module: &std::path::Path) -> std::result::Result<Pkcs11, String> {
    static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut map = CONTEXTS.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = map.get(module) {
        return Ok(c.clone());
    }
    let ctx = Pkcs11::new(module).map_err(|e| format!("cannot load the PKCS#11 module: {e}"))?;
    match ctx.initialize(CInitializeArgs::OsThreads) {
        Ok(()) | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(format!("cannot initialise the PKCS#11 module: {e}")),
    }
    map.insert(module.to_path_buf(), ctx.clone());
    Ok(ctx)
}

/// A key-encryption key inside a PKCS#11 token.
pub struct Pkcs11Key {
    spec: Pkcs11Spec,
    session: Mutex<Session>,
    key: ObjectHandle,
}

impl std::fmt::Debug for Pkcs11Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Key").field("spec", &self.spec).finish()
    }
}

impl Pkcs11Key {
    /// Opens a session on the token, logs in with the PIN from the environment and finds the key by label.
    pub fn open(spec: &Pkcs11Spec) -> Result<Pkcs11Key> {
        let name = format!("PKCS#11 token `{}` key `{}` ({})", spec.token, spec.key_label, spec.module.display());
        let bad = |message: String| Error::Key { key: name.clone(), message };
        let ctx = context(&spec.module).map_err(bad)?;
        let slots = ctx.get_slots_with_token().map_err(|e| bad(format!("cannot list the slots: {e}")))?;
        let mut labels = Vec::new();
        let mut found = None;
        for slot in slots {
            let info = ctx.get_token_info(slot).map_err(|e| bad(format!("cannot read a token: {e}")))?;
            let label = info.label().trim().to_string();
            if label == spec.token {
                found = Some(slot);
                break;
            }
            labels.push(label);
        }
        let slot = found.ok_or_else(|| bad(format!("no token with that label (tokens: {})", labels.join(", "))))?;
        let var = spec.pin_env.clone().unwrap_or_else(|| "SOVRA_PKCS11_PIN".into());
        let pin = std::env::var(&var)
            .map_err(|_| bad(format!("the environment variable {var} (the user PIN) is not set")))?;
        let session = ctx.open_ro_session(slot).map_err(|e| bad(format!("cannot open a session: {e}")))?;
        match session.login(UserType::User, Some(&AuthPin::new(pin))) {
            Ok(()) | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) => return Err(bad(format!("cannot log in with the PIN from {var}: {e}"))),
        }
        let template =
            [Attribute::Class(ObjectClass::SECRET_KEY), Attribute::Label(spec.key_label.as_bytes().to_vec())];
        let keys = session.find_objects(&template).map_err(|e| bad(format!("cannot search the token: {e}")))?;
        let key = match keys.as_slice() {
            [k] => *k,
            [] => return Err(bad("no secret key with that label in the token".into())),
            _ => return Err(bad(format!("{} secret keys carry that label; labels must be unique", keys.len()))),
        };
        Ok(Pkcs11Key { spec: spec.clone(), session: Mutex::new(session), key })
    }
}

impl KeyProvider for Pkcs11Key {
    fn key_id(&self) -> String {
        format!("pkcs11:{}/{}", self.spec.token, self.spec.key_label)
    }

    fn describe(&self) -> String {
        format!("PKCS#11 token `{}` key `{}`", self.spec.token, self.spec.key_label)
    }

    fn wrap(&self, key: &DataKey, aad: &[u8]) -> Result<Vec<u8>> {
        let mut iv = [0u8; 12];
        aws_lc_rs::rand::fill(&mut iv).map_err(|_| Error::Crypto("the random number generator failed".into()))?;
        let mut iv_used = iv;
        let params = GcmParams::new(&mut iv_used, aad, 128.into())
            .map_err(|e| Error::Crypto(format!("{}: {e}", self.describe())))?;
        let session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        let sealed = session
            .encrypt(&Mechanism::AesGcm(params), self.key, key.as_ref())
            .map_err(|e| Error::Crypto(format!("{} cannot wrap a data key: {e}", self.describe())))?;
        let mut out = iv.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<DataKey> {
        let fail = |why: String| Error::Crypto(format!("{} does not unwrap this data key{why}", self.describe()));
        if wrapped.len() != 12 + 32 + 16 {
            return Err(fail(String::new()));
        }
        let mut iv = [0u8; 12];
        iv.copy_from_slice(&wrapped[..12]);
        let params = GcmParams::new(&mut iv, aad, 128.into()).map_err(|e| fail(format!(" ({e})")))?;
        let session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        let plain = Zeroizing::new(
            session
                .decrypt(&Mechanism::AesGcm(params), self.key, &wrapped[12..])
                .map_err(|e| fail(format!(" ({e})")))?,
        );
        if plain.len() != 32 {
            return Err(fail(String::new()));
        }
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&plain);
        Ok(key)
    }
}
