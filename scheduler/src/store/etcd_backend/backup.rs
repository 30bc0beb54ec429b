//! Backup and restore of the etcd store (docs/etcd.md): a logical snapshot of every key under the store's prefix,
//! read in one range request, so at one etcd revision — exactly the batches acknowledged up to it.
//!
//! The file: one header line (JSON: format, prefix, etcd cluster id, revision, key count, SHA-256 of the body),
//! then the body, one `HEXKEY HEXVALUE` line per key (keys relative to the prefix). A file whose body fails the
//! checksum, or that is truncated, is refused before anything is written.

use super::EtcdStore;
use etcd_client::{Compare, CompareOp, DeleteOptions, GetOptions, Txn, TxnOp};
use sha2::{Digest, Sha256};
use std::path::Path;

/// One key (relative to the prefix) and its stored value.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// The header's `format`.
pub const FORMAT: &str = "sovra-etcd-backup/1";

/// What a backup's first line says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Header {
    /// [`FORMAT`].
    pub format: String,
    /// The prefix the keys were under.
    pub prefix: String,
    /// The etcd cluster the backup was taken from.
    pub cluster_id: u64,
    /// The etcd revision the backup reproduces.
    pub revision: i64,
    /// Keys in the body.
    pub keys: u64,
    /// SHA-256 (hex) of the body.
    pub sha256: String,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// Writes a backup of `store` to `out` (through a temporary file, renamed when complete); returns its header.
pub fn backup(store: &EtcdStore, out: &Path) -> Result<Header, String> {
    let (mut c, prefix) = (store.client(), store.prefix().to_string());
    let p = prefix.clone();
    let r = store
        .run(async move { c.get(p, Some(GetOptions::new().with_prefix())).await })
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("--etcd-endpoints {}: reading the store: {e}", store.endpoints()))?;
    let header = r.header().ok_or("etcd answered without a header")?;
    let mut body = String::new();
    let mut keys = 0u64;
    for kv in r.kvs() {
        let k = &kv.key()[prefix.len()..];
        // The leadership key belongs to a live replica's lease, not to the state.
        if k == b"leader" {
            continue;
        }
        body.push_str(&format!("{} {}\n", hex(k), hex(kv.value())));
        keys += 1;
    }
    let h = Header {
        format: FORMAT.into(),
        prefix,
        cluster_id: header.cluster_id(),
        revision: header.revision(),
        keys,
        sha256: hex(&Sha256::digest(body.as_bytes())),
    };
    let line = serde_json::to_string(&h).map_err(|e| e.to_string())?;
    let tmp = out.with_extension("partial");
    std::fs::write(&tmp, format!("{line}\n{body}")).map_err(|e| format!("--out {}: {e}", out.display()))?;
    std::fs::rename(&tmp, out).map_err(|e| format!("--out {}: {e}", out.display()))?;
    Ok(h)
}

/// Reads and checks a backup file: its header and its keys (relative to the prefix).
pub fn read(from: &Path) -> Result<(Header, Vec<KeyValue>), String> {
    let what = format!("--from {}", from.display());
    let text = std::fs::read_to_string(from).map_err(|e| format!("{what}: {e}"))?;
    let (first, body) = text.split_once('\n').ok_or_else(|| format!("{what}: not a Sovra backup (no header line)"))?;
    let h: Header = serde_json::from_str(first).map_err(|e| format!("{what}: not a Sovra backup ({e})"))?;
    if h.format != FORMAT {
        return Err(format!("{what}: format {:?}, this version reads {FORMAT:?}", h.format));
    }
    if hex(&Sha256::digest(body.as_bytes())) != h.sha256 {
        return Err(format!("{what}: the backup fails its checksum (damaged or truncated); use another backup"));
    }
    let mut kvs = Vec::new();
    for (i, line) in body.lines().enumerate() {
        let kv = line.split_once(' ').and_then(|(k, v)| Some((unhex(k)?, unhex(v)?)));
        kvs.push(kv.ok_or_else(|| format!("{what}: line {} is not a key and a value", i + 2))?);
    }
    if kvs.len() as u64 != h.keys {
        return Err(format!("{what}: {} keys, the header says {}", kvs.len(), h.keys));
    }
    Ok((h, kvs))
}

/// Restores a backup into `store`'s prefix, in one transaction. Refuses a prefix that holds state unless `force`
/// (which first deletes it, in the same transaction). Returns the header.
pub fn restore(store: &EtcdStore, from: &Path, force: bool) -> Result<Header, String> {
    let (h, kvs) = read(from)?;
    let prefix = store.prefix().to_string();
    let (mut c, p) = (store.client(), prefix.clone());
    let present = store
        .run(async move { c.get(p, Some(GetOptions::new().with_prefix().with_count_only())).await })
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("--etcd-endpoints {}: reading the store: {e}", store.endpoints()))?
        .count();
    if present > 0 && !force {
        return Err(format!(
            "restore: the store under {prefix} at {} is not empty ({present} keys); restore into an empty store, or \
             give --force to replace it",
            store.endpoints()
        ));
    }
    let mut ops = Vec::with_capacity(kvs.len() + 1);
    if force {
        ops.push(TxnOp::delete(prefix.clone(), Some(DeleteOptions::new().with_prefix())));
    }
    for (k, v) in kvs {
        let mut key = prefix.as_bytes().to_vec();
        key.extend_from_slice(&k);
        ops.push(TxnOp::put(key, v, None));
    }
    // Nobody may lead while the store is replaced: the leadership key must not exist.
    let txn = Txn::new().when([Compare::create_revision(format!("{prefix}leader"), CompareOp::Equal, 0)]).and_then(ops);
    let mut c = store.client();
    let r = store
        .run(async move { c.txn(txn).await })
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("restore: writing the store: {e}"))?;
    if !r.succeeded() {
        return Err("restore: a scheduler replica leads on this store; stop every replica, then restore".into());
    }
    store.refresh().map_err(|e| format!("restore: reading back: {e}"))?;
    Ok(h)
}
