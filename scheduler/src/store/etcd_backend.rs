//! The etcd backend: the scheduler's state in an etcd v3 cluster (docs/etcd.md), so that it survives the loss of the
//! scheduler's machine and of a minority of etcd members, and so that standby replicas read what the leader wrote.
//!
//! **Layout.** Under a prefix (`/sovra/` by default): `meta` (the manifest and the event counter), `job/ID`,
//! `arc/ID` (archived jobs), `node/NAME`, `ev/N` (the last [`EVENTS_KEPT`] event lines), `au/N` (audit entries)
//! and `aj/JOB/N` (the receipt index). Numbers are zero-padded to 20 digits so that keys sort as numbers. Every
//! value is checksummed ([`seal`]): a value that fails its check is reported as damage, never handed back.
//!
//! **One commit, one transaction.** A [`Batch`] is one etcd transaction: all of it or none of it is applied, and it
//! is durable (on a quorum's disks) when etcd answers. The transaction is conditioned on `meta`'s mod revision
//! being the one this handle last wrote or read, so that two writers can never interleave; and, when a [`Fence`]
//! is set, on the leadership key still being the one this replica created — a deposed leader's write is refused
//! ([`StoreError::Fenced`]).
//!
//! **Limits.** etcd's defaults (128 operations and 1.5 MiB per transaction) are below what one group commit may
//! write: members must run with `--max-txn-ops 65536 --max-request-bytes 33554432` (docs/etcd.md). A batch over
//! the members' limits is refused by etcd and reported; nothing of it is written.

pub mod backup;
mod codec;

use super::{Batch, EVENTS_KEPT, Manifest, NodeRecord, Store, StoreError};
use codec::{Meta, num_key, seal, unseal};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, SortOrder, SortTarget, Txn, TxnOp,
};
use sovra_audit::{AuditEntry, AuditHead};
use sovra_engine::{JobId, JobRecord};
use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "/sovra/";

/// How long one etcd request may take before it fails (connecting, or a request while etcd has no quorum).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The leadership a write depends on: the key this replica created under its lease and that key's create
/// revision. While the key exists with this revision the replica is the leader; once its lease expired (or it was
/// deleted) and another replica created it again, the revision differs and the transaction fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The full leadership key.
    pub key: String,
    /// Its create revision when this replica won it.
    pub create_revision: i64,
}

struct State {
    /// `meta`'s mod revision as this handle last saw it (0: no meta yet).
    meta_rev: i64,
    meta: Meta,
    /// Every job id written (hot and archived): whether a record is new.
    known: BTreeSet<JobId>,
}

/// The etcd store.
pub struct EtcdStore {
    rt: Option<tokio::runtime::Runtime>,
    client: Client,
    prefix: String,
    endpoints: String,
    state: Mutex<State>,
    fence: Mutex<Option<Fence>>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore").field("endpoints", &self.endpoints).field("prefix", &self.prefix).finish()
    }
}

fn backend(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("etcd: {what}: {e}"))
}

impl EtcdStore {
    /// Connects to the cluster at `endpoints` (`http://host:port`), checks that it answers with a quorum (a
    /// linearizable read) and reads what is stored under `prefix`. Fails with a message naming
    /// `--etcd-endpoints` when etcd cannot be reached.
    pub fn open(endpoints: &[String], prefix: &str) -> Result<EtcdStore, String> {
        let joined = endpoints.join(",");
        if endpoints.is_empty() || endpoints.iter().any(|e| e.trim().is_empty()) {
            return Err(
                "--etcd-endpoints: give one or more etcd client URLs, e.g. http://10.0.0.1:2379,http://10.0.0.2:2379"
                    .into(),
            );
        }
        for e in endpoints {
            if !(e.starts_with("http://") || e.starts_with("https://")) || e.parse::<tonic::transport::Uri>().is_err() {
                return Err(format!("--etcd-endpoints {joined}: {e} is not a URL; give http://host:port"));
            }
        }
        if prefix.is_empty() || !prefix.ends_with('/') {
            return Err(format!("--etcd-prefix {prefix}: give a prefix ending in '/', e.g. {DEFAULT_PREFIX}"));
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sovra-etcd")
            .enable_all()
            .build()
            .map_err(|e| format!("etcd store: starting its runtime: {e}"))?;
        let eps = endpoints.to_vec();
        let opts = ConnectOptions::new().with_connect_timeout(REQUEST_TIMEOUT).with_timeout(REQUEST_TIMEOUT);
        let client = block(&rt, async move { Client::connect(eps, Some(opts)).await })
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map_err(|e| format!("--etcd-endpoints {joined}: etcd is unreachable ({e}); start etcd or fix the flag"))?;
        let store = EtcdStore {
            rt: Some(rt),
            client,
            prefix: prefix.to_string(),
            endpoints: joined.clone(),
            state: Mutex::new(State { meta_rev: 0, meta: Meta::default(), known: BTreeSet::new() }),
            fence: Mutex::new(None),
        };
        store.refresh().map_err(|e| {
            format!(
                "--etcd-endpoints {joined}: etcd is unreachable or has no quorum ({e}); start its members or fix the flag"
            )
        })?;
        Ok(store)
    }

    /// The endpoints, comma-separated (for messages).
    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A client on the same cluster (for leader election and snapshots).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Runs a future on the store's runtime and waits for it (from any thread, async context or not).
    pub fn run<F>(&self, f: F) -> Result<F::Output, StoreError>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let rt = self.rt.as_ref().ok_or_else(|| StoreError::Backend("etcd store: closed".into()))?;
        block(rt, f).map_err(StoreError::Backend)
    }

    /// From now on, every commit requires `fence` (this replica's leadership); `None` lifts the condition.
    pub fn set_fence(&self, fence: Option<Fence>) {
        if let Ok(mut f) = self.fence.lock() {
            *f = fence;
        }
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>, StoreError> {
        self.state.lock().map_err(|_| StoreError::Backend("etcd store: its lock is poisoned".into()))
    }

    /// Re-reads `meta` and the known ids (at open, and by a standby before it takes over).
    pub fn refresh(&self) -> Result<(), StoreError> {
        let meta_key = self.key("meta");
        let (job, arc) = (self.key("job/"), self.key("arc/"));
        let mut c = self.client.clone();
        let (meta, ids) = self
            .run(async move {
                let m = c.get(meta_key, None).await?;
                let mut ids = Vec::new();
                for p in [job, arc] {
                    let r = c.get(p.clone(), Some(GetOptions::new().with_prefix().with_keys_only())).await?;
                    ids.extend(r.kvs().iter().map(|kv| (p.len(), kv.key().to_vec())));
                }
                Ok::<_, etcd_client::Error>((m.kvs().first().map(|kv| (kv.mod_revision(), kv.value().to_vec())), ids))
            })?
            .map_err(|e| backend("reading the manifest", e))?;
        let mut known = BTreeSet::new();
        for (skip, k) in ids {
            let id = std::str::from_utf8(&k[skip..]).ok().and_then(|s| s.parse::<JobId>().ok());
            known.insert(id.ok_or_else(|| {
                StoreError::Damaged(format!("etcd: a job key {:?} is not a job id", String::from_utf8_lossy(&k)))
            })?);
        }
        let (meta_rev, meta) = match meta {
            None => (0, Meta::default()),
            Some((rev, v)) => {
                let json = unseal(&v).map_err(|why| StoreError::Damaged(format!("etcd: the manifest: {why}")))?;
                (
                    rev,
                    serde_json::from_slice(json)
                        .map_err(|e| StoreError::Damaged(format!("etcd: the manifest: {e}")))?,
                )
            }
        };
        *self.lock()? = State { meta_rev, meta, known };
        Ok(())
    }

    fn get_prefix(&self, rest: &str, opts: GetOptions) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let key = self.key(rest);
        let skip = self.prefix.len();
        let mut c = self.client.clone();
        let r = self
            .run(async move { c.get(key, Some(opts)).await })?
            .map_err(|e| backend(&format!("reading {rest}"), e))?;
        Ok(r.kvs()
            .iter()
            .map(|kv| (String::from_utf8_lossy(&kv.key()[skip..]).into_owned(), kv.value().to_vec()))
            .collect())
    }

    fn decode<T: serde::de::DeserializeOwned>(key: &str, v: &[u8]) -> Result<T, StoreError> {
        let json = unseal(v).map_err(|why| StoreError::Damaged(format!("etcd: {key}: {why}")))?;
        serde_json::from_slice(json).map_err(|e| StoreError::Damaged(format!("etcd: {key}: undecodable: {e}")))
    }

    fn job(&self, rest: String, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        let got = self.get_prefix(&rest, GetOptions::new())?;
        let Some((k, v)) = got.into_iter().next() else { return Ok(None) };
        let r: JobRecord = Self::decode(&k, &v)?;
        if r.id != id {
            return Err(StoreError::Damaged(format!("etcd: {k} holds job {}", r.id)));
        }
        Ok(Some(r))
    }

    fn seal_json<T: serde::Serialize>(what: &str, v: &T) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(v).map(|j| seal(&j)).map_err(|e| StoreError::Backend(format!("encoding {what}: {e}")))
    }

    fn write(&self, batch: &Batch) -> Result<(), StoreError> {
        let fence =
            self.fence.lock().map_err(|_| StoreError::Backend("etcd store: fence lock poisoned".into()))?.clone();
        let mut st = self.lock()?;
        let m = st.meta.manifest;
        for (i, (_, e)) in batch.audit.iter().enumerate() {
            let expected = m.audit_entries + i as u64;
            if e.seq != expected {
                return Err(StoreError::Backend(format!(
                    "audit entry {} does not follow the log's {expected} entries",
                    e.seq
                )));
            }
        }
        let mut ops = Vec::new();
        let mut known = st.known.clone();
        let next = m.after(batch.jobs.iter().map(|r| (r, known.insert(r.id))));
        for r in &batch.jobs {
            ops.push(TxnOp::put(self.key(&num_key("job/", r.id)), Self::seal_json("a job record", r)?, None));
        }
        for id in &batch.archive {
            let rec = match batch.jobs.iter().rev().find(|r| r.id == *id) {
                Some(r) => Some(r.clone()),
                None => self.job(num_key("job/", *id), *id)?,
            };
            if let Some(r) = rec {
                ops.push(TxnOp::delete(self.key(&num_key("job/", *id)), None));
                ops.push(TxnOp::put(self.key(&num_key("arc/", *id)), Self::seal_json("a job record", &r)?, None));
            }
        }
        for (name, rec) in &batch.nodes {
            ops.push(TxnOp::put(self.key(&format!("node/{name}")), Self::seal_json("a node record", rec)?, None));
        }
        let mut events_next = st.meta.events_next;
        for e in &batch.events {
            ops.push(TxnOp::put(self.key(&num_key("ev/", events_next)), seal(e.as_bytes()), None));
            events_next += 1;
        }
        if !batch.events.is_empty() && events_next > EVENTS_KEPT {
            let end = self.key(&num_key("ev/", events_next - EVENTS_KEPT));
            ops.push(TxnOp::delete(self.key("ev/"), Some(DeleteOptions::new().with_range(end))));
        }
        for (job, e) in &batch.audit {
            ops.push(TxnOp::put(self.key(&num_key("au/", e.seq)), Self::seal_json("an audit entry", e)?, None));
            if let Some(j) = job {
                ops.push(TxnOp::put(self.key(&format!("{}/{:020}", num_key("aj/", *j), e.seq)), seal(b""), None));
            }
        }
        let meta = Meta {
            version: 1,
            manifest: Manifest { audit_entries: m.audit_entries + batch.audit.len() as u64, ..next },
            events_next,
            commits: st.meta.commits + 1,
        };
        let sealed_meta = Self::seal_json("the manifest", &meta)?;
        ops.push(TxnOp::put(self.key("meta"), sealed_meta.clone(), None));
        let mut when = vec![Compare::mod_revision(self.key("meta"), CompareOp::Equal, st.meta_rev)];
        if let Some(f) = &fence {
            when.push(Compare::create_revision(f.key.clone(), CompareOp::Equal, f.create_revision));
        }
        let txn = Txn::new().when(when).and_then(ops);
        // A request to a member that just died fails in transport; the client then routes to another (it may take
        // a few tries to leave the dead member: up to 4 attempts, but none started 6 s after the first, so that a
        // lost quorum is still refused within two request timeouts). A retry is safe: it is conditioned like the
        // first attempt, and if that one was applied after all, `meta` holds exactly this commit's value.
        let mut retried = false;
        let (first, mut attempts) = (std::time::Instant::now(), 1u32);
        let rev = loop {
            let (mut c, t) = (self.client.clone(), txn.clone());
            match self.run(async move { c.txn(t).await })? {
                Ok(r) if r.succeeded() => break r.header().map(|h| h.revision()).unwrap_or_default(),
                Ok(_) if retried => match self.applied(&sealed_meta) {
                    Some(rev) => break rev,
                    None => {
                        drop(st);
                        return Err(self.why_refused(fence));
                    }
                },
                Ok(_) => {
                    drop(st);
                    return Err(self.why_refused(fence));
                }
                Err(e) if attempts < 4 && first.elapsed() < std::time::Duration::from_secs(6) => {
                    tracing::warn!(error = %e, attempt = attempts, "etcd: a commit failed in transport; retrying");
                    retried = true;
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err(e) => return Err(backend("committing a batch", e)),
            }
        };
        *st = State { meta_rev: rev, meta, known };
        Ok(())
    }

    /// The mod revision of `meta` if it holds `sealed` (a retried commit's first attempt was applied).
    fn applied(&self, sealed: &[u8]) -> Option<i64> {
        let (mut c, k) = (self.client.clone(), self.key("meta"));
        let r = self.run(async move { c.get(k, None).await }).ok()?.ok()?;
        r.kvs().first().filter(|kv| kv.value() == sealed).map(|kv| kv.mod_revision())
    }

    /// Why a conditioned commit was refused: the fence (another replica leads) or another writer.
    fn why_refused(&self, fence: Option<Fence>) -> StoreError {
        if let Some(f) = fence {
            let key = f.key.clone();
            let mut c = self.client.clone();
            let now = self
                .run(async move { c.get(key, None).await })
                .ok()
                .and_then(|r| r.ok())
                .map(|r| r.kvs().first().map(|kv| (kv.create_revision(), kv.value().to_vec())));
            match now {
                Some(Some((rev, _))) if rev == f.create_revision => {}
                Some(Some((rev, holder))) => {
                    return StoreError::Fenced(format!(
                        "etcd: write refused: this replica's leadership (key {}, revision {}) was lost; {} leads \
                         since revision {rev}",
                        f.key,
                        f.create_revision,
                        String::from_utf8_lossy(&holder)
                    ));
                }
                Some(None) => {
                    return StoreError::Fenced(format!(
                        "etcd: write refused: this replica's leadership (key {}, revision {}) expired",
                        f.key, f.create_revision
                    ));
                }
                None => {}
            }
        }
        StoreError::Fenced(
            "etcd: write refused: another writer committed to this store since this replica last read it".into(),
        )
    }
}

/// Spawns `f` on `rt` and waits for it on a plain channel, without entering the runtime, so that it works from
/// any thread, inside async code too (polling a join handle there would spin on tokio's cooperative budget).
fn block<F>(rt: &tokio::runtime::Runtime, f: F) -> Result<F::Output, String>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    rt.spawn(async move {
        let _ = tx.send(f.await);
    });
    rx.recv().map_err(|_| "etcd store: its task failed".to_string())
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Store for EtcdStore {
    fn backend(&self) -> &'static str {
        "etcd"
    }

    fn load(&self) -> Result<Vec<JobRecord>, StoreError> {
        let mut out = Vec::new();
        for (k, v) in self.get_prefix("job/", GetOptions::new().with_prefix())? {
            out.push(Self::decode::<JobRecord>(&k, &v)?);
        }
        out.sort_by_key(|r| r.id);
        Ok(out)
    }

    fn load_nodes(&self) -> Result<Vec<(String, NodeRecord)>, StoreError> {
        let mut out = Vec::new();
        for (k, v) in self.get_prefix("node/", GetOptions::new().with_prefix())? {
            let rec = Self::decode(&k, &v)?;
            out.push((k.trim_start_matches("node/").to_string(), rec));
        }
        Ok(out)
    }

    fn manifest(&self) -> Manifest {
        self.lock().map(|s| s.meta.manifest).unwrap_or_default()
    }

    fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.write(batch)
    }

    fn archived(&self, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        self.job(num_key("arc/", id), id)
    }

    fn events(&self, n: usize) -> Vec<String> {
        if n == 0 {
            return vec![];
        }
        let opts = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Key, SortOrder::Descend)
            .with_limit(i64::try_from(n).unwrap_or(i64::MAX));
        let Ok(got) = self.get_prefix("ev/", opts) else { return vec![] };
        let mut out: Vec<String> =
            got.iter().filter_map(|(_, v)| unseal(v).ok().map(|b| String::from_utf8_lossy(b).into_owned())).collect();
        out.reverse();
        out
    }

    fn audit_head(&self) -> Result<AuditHead, StoreError> {
        let opts = GetOptions::new().with_prefix().with_sort(SortTarget::Key, SortOrder::Descend).with_limit(1);
        match self.get_prefix("au/", opts)?.first() {
            None => Ok(AuditHead::empty()),
            Some((k, v)) => Ok(AuditHead::after(&Self::decode::<AuditEntry>(k, v)?)),
        }
    }

    fn audit_entries(&self, from: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        if limit == 0 {
            return Ok(vec![]);
        }
        let opts = GetOptions::new().with_range(self.key("au0")).with_limit(i64::try_from(limit).unwrap_or(i64::MAX));
        let start = num_key("au/", from);
        let mut out = Vec::new();
        for (k, v) in self.get_prefix(&start, opts)? {
            out.push(Self::decode(&k, &v)?);
        }
        Ok(out)
    }

    fn job_audit(&self, job: JobId) -> Result<Vec<u64>, StoreError> {
        let rest = format!("{}/", num_key("aj/", job));
        let mut out = Vec::new();
        for (k, _) in self.get_prefix(&rest, GetOptions::new().with_prefix().with_keys_only())? {
            let n = k.rsplit('/').next().and_then(|s| s.parse::<u64>().ok());
            out.push(n.ok_or_else(|| StoreError::Damaged(format!("etcd: {k} is not a receipt index key")))?);
        }
        Ok(out)
    }
}
