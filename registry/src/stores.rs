//! The `stores:` configuration: which object store holds each zone's data zones, and which key-encryption key
//! protects them. Keys of the map are a zone id (every stage of that zone) or `zone/stage` (one data zone; it
//! wins over the zone's entry). A zone without an entry keeps the default: `<registry>/blobs` on the local disk,
//! under a key generated at `<registry>/keys/<zone>.kek`. See docs/registry.md.

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::keys::{FileKey, KeyProvider};
use serde::{Deserialize, Serialize};
use sovra_domain::datazone::{DataZone, Stage, check_name};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The `stores:` map: zone id or `zone/stage` → its store.
pub type Stores = BTreeMap<String, StoreSpec>;

/// The file under a registry root that records the stores it was last opened with (so that commands that do
/// not read the promotion config — `sovra registry gc`, `rotate-key` — find every zone's store).
pub const STORES_FILE: &str = "stores.json";

/// One zone's store and key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSpec {
    /// A local directory holding the zone's blobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<PathBuf>,
    /// An S3 (or S3-compatible) bucket holding the zone's blobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Spec>,
    /// The zone's key-encryption key; default: `<registry>/keys/<zone>.kek`, generated on first use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<KeySpec>,
}

/// An S3 bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Spec {
    /// The endpoint URL, e.g. `https://s3.fr-par.scw.cloud` or `http://127.0.0.1:3900`.
    pub endpoint: String,
    /// The bucket.
    pub bucket: String,
    /// The region (`garage` for a default Garage).
    pub region: String,
    /// An object prefix inside the bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The environment variable holding the access key id (default `AWS_ACCESS_KEY_ID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id_env: Option<String>,
    /// The environment variable holding the secret key (default `AWS_SECRET_ACCESS_KEY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key_env: Option<String>,
    /// Instead of the environment: a JSON file `{"access_key_id": …, "secret_access_key": …}` readable by its
    /// owner only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<PathBuf>,
}

/// A key-encryption key: exactly one of `file` and `pkcs11`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySpec {
    /// A file of 32 random bytes (raw or 64 hex characters), mode 0600, ideally on another volume than the data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// An AES key in a PKCS#11 token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pkcs11: Option<crate::pkcs11::Pkcs11Spec>,
}

impl StoreSpec {
    /// The spec with relative paths taken relative to `base` (the config file's directory).
    pub fn resolved(&self, base: &Path) -> StoreSpec {
        let at = |p: &PathBuf| if p.is_absolute() { p.clone() } else { base.join(p) };
        let mut s = self.clone();
        s.local = s.local.as_ref().map(at);
        if let Some(s3) = &mut s.s3 {
            s3.credentials_file = s3.credentials_file.as_ref().map(at);
        }
        if let Some(k) = &mut s.key {
            k.file = k.file.as_ref().map(at);
            if let Some(p) = &mut k.pkcs11 {
                p.module = at(&p.module);
            }
        }
        s
    }
}

/// Checks the map: keys are `zone` or `zone/stage`, each entry names exactly one store and at most one key.
pub fn validate(stores: &Stores) -> Result<()> {
    for (name, spec) in stores {
        parse_name(name)?;
        match (&spec.local, &spec.s3) {
            (Some(_), None) | (None, Some(_)) => {}
            _ => return Err(Error::Config(format!("`{name}`: give exactly one of `local` and `s3`"))),
        }
        if let Some(k) = &spec.key
            && k.file.is_some() == k.pkcs11.is_some()
        {
            return Err(Error::Config(format!("`{name}.key`: give exactly one of `file` and `pkcs11`")));
        }
        if let Some(s3) = &spec.s3 {
            for (field, v) in [("endpoint", &s3.endpoint), ("bucket", &s3.bucket), ("region", &s3.region)] {
                if v.trim().is_empty() {
                    return Err(Error::Config(format!("`{name}.s3.{field}` is empty")));
                }
            }
        }
    }
    Ok(())
}

/// `zone` or `zone/stage`.
pub(crate) fn parse_name(name: &str) -> Result<(String, Option<Stage>)> {
    let (zone, stage) = match name.split_once('/') {
        Some((z, s)) => {
            let stage = s.parse::<Stage>().map_err(|_| {
                Error::Config(format!("`{name}`: `{s}` is not a stage (training, registry, inference)"))
            })?;
            (z, Some(stage))
        }
        None => (name, None),
    };
    check_name("zone", zone).map_err(|e| Error::Config(format!("`{name}`: {e}")))?;
    Ok((zone.to_string(), stage))
}

/// The entry that applies to a data zone: `zone/stage`, else `zone`.
pub(crate) fn entry_for<'a>(stores: &'a Stores, dz: &DataZone) -> Option<(&'a str, &'a StoreSpec)> {
    let exact = dz.to_string();
    stores.get_key_value(&exact).or_else(|| stores.get_key_value(&dz.zone)).map(|(k, v)| (k.as_str(), v))
}

/// Builds the store of one entry.
pub(crate) fn build_backend(name: &str, spec: &StoreSpec) -> Result<Backend> {
    if let Some(dir) = &spec.local {
        return local_backend(dir);
    }
    let Some(s3) = &spec.s3 else {
        return Err(Error::Config(format!("`{name}`: give exactly one of `local` and `s3`")));
    };
    let (id, secret) = credentials(name, s3)?;
    let options = object_store::ClientOptions::new()
        .with_connect_timeout(std::time::Duration::from_secs(5))
        .with_timeout(std::time::Duration::from_secs(120))
        .with_allow_http(s3.endpoint.starts_with("http://"));
    let retry = object_store::RetryConfig {
        max_retries: 3,
        retry_timeout: std::time::Duration::from_secs(20),
        ..Default::default()
    };
    let s3store = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(&s3.endpoint)
        .with_bucket_name(&s3.bucket)
        .with_region(&s3.region)
        .with_access_key_id(id)
        .with_secret_access_key(secret)
        .with_virtual_hosted_style_request(false)
        .with_client_options(options)
        .with_retry(retry)
        .build()
        .map_err(|e| Error::Config(format!("`{name}.s3`: {e}")))?;
    let mut description = format!("S3 bucket {} at {}", s3.bucket, s3.endpoint);
    let store: Arc<dyn object_store::ObjectStore> = match s3.prefix.as_deref().filter(|p| !p.is_empty()) {
        Some(p) => {
            description.push_str(&format!(" (prefix {p})"));
            Arc::new(object_store::prefix::PrefixStore::new(s3store, p))
        }
        None => Arc::new(s3store),
    };
    Ok(Backend { store, description: format!("data zone store `{name}`: {description}"), local: None })
}

/// A local filesystem store under `dir` (created if missing).
pub(crate) fn local_backend(dir: &Path) -> Result<Backend> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        action: "cannot create the blob directory",
        source,
    })?;
    let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)
        .map_err(|e| Error::Blob(format!("{}: {e}", dir.display())))?;
    Ok(Backend {
        store: Arc::new(fs),
        description: format!("local filesystem {}", dir.display()),
        local: Some(dir.to_path_buf()),
    })
}

fn credentials(name: &str, s3: &S3Spec) -> Result<(String, String)> {
    if let Some(file) = &s3.credentials_file {
        let bad = |m: String| Error::Config(format!("`{name}.s3.credentials_file` {}: {m}", file.display()));
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(file).map_err(|e| bad(e.to_string()))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(bad(format!("group or others may read it; run `chmod 600 {}`", file.display())));
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Creds {
            access_key_id: String,
            secret_access_key: String,
        }
        let text = std::fs::read(file).map_err(|e| bad(e.to_string()))?;
        let c: Creds = serde_json::from_slice(&text).map_err(|e| bad(format!("not the expected JSON: {e}")))?;
        return Ok((c.access_key_id, c.secret_access_key));
    }
    let var = |field: &str, v: &Option<String>, default: &str| -> Result<String> {
        let var = v.clone().unwrap_or_else(|| default.to_string());
        std::env::var(&var).ok().filter(|s| !s.is_empty()).ok_or_else(|| {
            Error::Config(format!(
                "`{name}.s3.{field}`: the environment variable {var} is not set; set it, or name another variable \
                 or a credentials_file"
            ))
        })
    };
    Ok((
        var("access_key_id_env", &s3.access_key_id_env, "AWS_ACCESS_KEY_ID")?,
        var("secret_access_key_env", &s3.secret_access_key_env, "AWS_SECRET_ACCESS_KEY")?,
    ))
}

/// Loads the key an entry names.
pub(crate) fn load_key(name: &str, spec: &KeySpec) -> Result<Arc<dyn KeyProvider>> {
    let wrap = |e: Error| Error::Key { key: format!("of `{name}`"), message: e.to_string() };
    if let Some(file) = &spec.file {
        return Ok(Arc::new(FileKey::load(file).map_err(wrap)?));
    }
    if let Some(p) = &spec.pkcs11 {
        return Ok(Arc::new(crate::pkcs11::Pkcs11Key::open(p).map_err(wrap)?));
    }
    Err(Error::Config(format!("`{name}.key`: give exactly one of `file` and `pkcs11`")))
}

/// Reads `<root>/stores.json` (an empty map when missing).
pub fn read_recorded(root: &Path) -> Result<Stores> {
    let path = root.join(STORES_FILE);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| Error::Config(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Stores::new()),
        Err(source) => Err(Error::Io { path, action: "cannot read", source }),
    }
}

/// Records the stores under `root` (atomically; nothing is written when it is unchanged).
pub fn record(root: &Path, stores: &Stores) -> Result<()> {
    if read_recorded(root).ok().as_ref() == Some(stores) && root.join(STORES_FILE).exists() {
        return Ok(());
    }
    if stores.is_empty() && !root.join(STORES_FILE).exists() {
        return Ok(());
    }
    let path = root.join(STORES_FILE);
    let io = |source| Error::Io { path: path.clone(), action: "cannot write", source };
    let mut tmp = tempfile::Builder::new().prefix(crate::sweep::TEMP_PREFIX).tempfile_in(root).map_err(io)?;
    use std::io::Write;
    tmp.write_all(&serde_json::to_vec_pretty(stores).unwrap_or_default()).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(&path).map_err(|e| io(e.error))?;
    Ok(())
}
