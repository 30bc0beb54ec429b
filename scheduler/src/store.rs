//! Durable state behind one small interface, [`Store`]: the scheduler's single writer hands it one [`Batch`] per
//! group commit (every job record, node inventory and event line that a batch of requests changed) and
//! acknowledges those requests only after [`Store::commit`] returned — the batch is then on disk (docs/design.md
//! invariant 7).
//!
//! Backends:
//! - [`SledStore`] (sled, embedded; the default for `serve --data`): checksummed records, a manifest outside sled
//!   that detects truncation and roll-back, `--recover` (see [`sled_backend`]).
//! - [`EtcdStore`] (etcd v3, `serve --store etcd --etcd-endpoints …`): a 3-member cluster keeps the state through
//!   the loss of one member; every commit is one transaction, fenced by the leader's key (see [`etcd_backend`]).
//! - [`MemoryStore`]: nothing survives the process; what `serve` without `--data` and most tests use. It keeps the
//!   committed records, so the writer can rebuild its engine from it after a failed request exactly as it would
//!   from disk.
//!
//! The backend-agnostic suite `scheduler/tests/store_contract.rs` runs the same checks against every backend, so a
//! distributed one (etcd) can be added without touching the engine or the service.
//!
//! **Audit log.** Each batch may carry audit entries (the signed placement receipts, docs/receipts.md), already
//! chained by the writer ([`sovra_audit`]); the backend appends them and moves the head in the same atomic write
//! as the job records they describe, and indexes them by job so that one job's receipts are found without a scan.
//!
//! **Retention.** Finished jobs leave the hot state after the retention period: the batch that archives them
//! moves their records to the backend's archive (atomically with the batch's other writes). Archived records are
//! still counted by the damage checks and can be read one by one ([`Store::archived`]).

use sovra_audit::{AuditEntry, AuditHead};
use sovra_engine::{JobId, JobRecord};
use std::collections::BTreeMap;
use std::sync::Mutex;

mod damage;
pub mod etcd_backend;
pub mod sled_backend;

pub use damage::Damage;
pub use etcd_backend::{EtcdStore, Fence};
pub use sled_backend::{EVENTS_KEPT, MANIFEST_FILE, SledStore};

/// What a node's daemon last reported, as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NodeRecord {
    /// The daemon's backend (`nvml`, `fake (…)`).
    pub backend: String,
    /// Driver version, when known.
    pub driver_version: String,
    /// The GPUs, in the domain's terms (health included).
    pub gpus: Vec<sovra_domain::Gpu>,
    /// Why the daemon cannot read the node's GPUs (then `gpus` is empty); empty when it can.
    #[serde(default)]
    pub gpu_error: String,
}

/// What the store has acknowledged, as the manifest records it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    /// Job records written (hot and archived).
    pub jobs: u64,
    /// The highest job id written.
    pub last_id: JobId,
    /// The highest submission number written.
    pub last_seq: u64,
    /// Job records written with a request id.
    pub request_ids: u64,
    /// Audit entries (placement receipts) written. Absent from manifests written before the audit log (it is then
    /// 0, and the manifest's checksum is unchanged).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub audit_entries: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Manifest {
    /// The manifest after `records` were written, `is_new` telling whether a record's id was never written before.
    pub fn after<'a>(mut self, records: impl IntoIterator<Item = (&'a JobRecord, bool)>) -> Manifest {
        for (r, is_new) in records {
            if is_new {
                self.jobs += 1;
                self.request_ids += u64::from(r.request_id.is_some());
            }
            self.last_id = self.last_id.max(r.id);
            self.last_seq = self.last_seq.max(r.seq);
        }
        self
    }
}

/// Everything one group commit writes.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// Job records, new or changed (the latest version of each).
    pub jobs: Vec<JobRecord>,
    /// Finished jobs to move out of the hot state into the archive (their latest record is in the store already
    /// or in `jobs`).
    pub archive: Vec<JobId>,
    /// Node inventories, new or changed.
    pub nodes: Vec<(String, NodeRecord)>,
    /// Event lines, oldest first.
    pub events: Vec<String>,
    /// Audit entries to append, in order, each with the job it is about (for the receipt index); the first
    /// follows the store's [`Store::audit_head`].
    pub audit: Vec<(Option<JobId>, AuditEntry)>,
}

impl Batch {
    /// Whether the batch writes nothing.
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
            && self.archive.is_empty()
            && self.nodes.is_empty()
            && self.events.is_empty()
            && self.audit.is_empty()
    }
}

/// Why a store could not be opened, read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend failed to read or write (disk full, I/O error, …): what was being done and the backend's error.
    #[error("{0}")]
    Backend(String),
    /// What is stored is damaged: what is wrong and the ways out.
    #[error("{0}")]
    Damaged(String),
    /// The state directory is used by another process.
    #[error("{0}")]
    InUse(String),
    /// A conditioned write was refused: this replica is no longer the leader (etcd backend, docs/etcd.md).
    #[error("{0}")]
    Fenced(String),
}

/// A place the scheduler keeps its state. Implementations must make [`Store::commit`] atomic (all of a batch or
/// none of it survives a crash) and durable on return, and must never hand back a record that fails its checks.
pub trait Store: Send + Sync {
    /// A short name for messages (`sled`, `memory`).
    fn backend(&self) -> &'static str;
    /// Every job record in the hot state, in id order.
    fn load(&self) -> Result<Vec<JobRecord>, StoreError>;
    /// Every node inventory, by name.
    fn load_nodes(&self) -> Result<Vec<(String, NodeRecord)>, StoreError>;
    /// What has been acknowledged: job ids and submission numbers continue after its `last_id` and `last_seq`.
    fn manifest(&self) -> Manifest;
    /// Writes a batch atomically and durably.
    fn commit(&self, batch: &Batch) -> Result<(), StoreError>;
    /// An archived job's record, if it was archived.
    fn archived(&self, id: JobId) -> Result<Option<JobRecord>, StoreError>;
    /// The last `n` event lines, oldest first.
    fn events(&self, n: usize) -> Vec<String>;
    /// The audit log's head: entries written and the last hash.
    fn audit_head(&self) -> Result<AuditHead, StoreError>;
    /// Up to `limit` audit entries from position `from`, in order.
    fn audit_entries(&self, from: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError>;
    /// The positions of a job's audit entries (its receipts), in order.
    fn job_audit(&self, job: JobId) -> Result<Vec<u64>, StoreError>;
}

#[derive(Default)]
struct Memory {
    jobs: BTreeMap<JobId, JobRecord>,
    archive: BTreeMap<JobId, JobRecord>,
    nodes: BTreeMap<String, NodeRecord>,
    events: std::collections::VecDeque<String>,
    manifest: Manifest,
    audit: Vec<AuditEntry>,
    by_job: BTreeMap<JobId, Vec<u64>>,
}

/// The in-memory backend: nothing survives the process.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Memory>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Memory>, StoreError> {
        self.inner.lock().map_err(|_| StoreError::Backend("the memory store's lock is poisoned".into()))
    }
}

impl Store for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    fn load(&self) -> Result<Vec<JobRecord>, StoreError> {
        Ok(self.lock()?.jobs.values().cloned().collect())
    }

    fn load_nodes(&self) -> Result<Vec<(String, NodeRecord)>, StoreError> {
        Ok(self.lock()?.nodes.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    fn manifest(&self) -> Manifest {
        self.lock().map(|m| m.manifest).unwrap_or_default()
    }

    fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        let mut m = self.lock()?;
        let m = &mut *m;
        // All or nothing: the audit entries must follow the log before anything is written.
        for (i, (_, e)) in batch.audit.iter().enumerate() {
            let expected = (m.audit.len() + i) as u64;
            if e.seq != expected {
                return Err(StoreError::Backend(format!(
                    "audit entry {} does not follow the log's {expected} entries",
                    e.seq
                )));
            }
        }
        let next = m
            .manifest
            .after(batch.jobs.iter().map(|r| (r, !m.jobs.contains_key(&r.id) && !m.archive.contains_key(&r.id))));
        for r in &batch.jobs {
            m.jobs.insert(r.id, r.clone());
        }
        for id in &batch.archive {
            if let Some(r) = m.jobs.remove(id) {
                m.archive.insert(*id, r);
            }
        }
        for (name, rec) in &batch.nodes {
            m.nodes.insert(name.clone(), rec.clone());
        }
        for e in &batch.events {
            m.events.push_back(e.clone());
            if m.events.len() as u64 > EVENTS_KEPT {
                m.events.pop_front();
            }
        }
        for (job, e) in &batch.audit {
            if let Some(j) = job {
                m.by_job.entry(*j).or_default().push(e.seq);
            }
            m.audit.push(e.clone());
        }
        m.manifest = Manifest { audit_entries: m.audit.len() as u64, ..next };
        Ok(())
    }

    fn archived(&self, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        Ok(self.lock()?.archive.get(&id).cloned())
    }

    fn events(&self, n: usize) -> Vec<String> {
        let Ok(m) = self.lock() else { return vec![] };
        let skip = m.events.len().saturating_sub(n);
        m.events.iter().skip(skip).cloned().collect()
    }

    fn audit_head(&self) -> Result<AuditHead, StoreError> {
        Ok(self.lock()?.audit.last().map_or_else(AuditHead::empty, AuditHead::after))
    }

    fn audit_entries(&self, from: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let m = self.lock()?;
        Ok(m.audit.iter().skip(usize::try_from(from).unwrap_or(usize::MAX)).take(limit).cloned().collect())
    }

    fn job_audit(&self, job: JobId) -> Result<Vec<u64>, StoreError> {
        Ok(self.lock()?.by_job.get(&job).cloned().unwrap_or_default())
    }
}

/// A shared store (the etcd store is shared by the writer and the leadership task).
impl<S: Store + ?Sized> Store for std::sync::Arc<S> {
    fn backend(&self) -> &'static str {
        (**self).backend()
    }
    fn load(&self) -> Result<Vec<JobRecord>, StoreError> {
        (**self).load()
    }
    fn load_nodes(&self) -> Result<Vec<(String, NodeRecord)>, StoreError> {
        (**self).load_nodes()
    }
    fn manifest(&self) -> Manifest {
        (**self).manifest()
    }
    fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        (**self).commit(batch)
    }
    fn archived(&self, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        (**self).archived(id)
    }
    fn events(&self, n: usize) -> Vec<String> {
        (**self).events(n)
    }
    fn audit_head(&self) -> Result<AuditHead, StoreError> {
        (**self).audit_head()
    }
    fn audit_entries(&self, from: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        (**self).audit_entries(from, limit)
    }
    fn job_audit(&self, job: JobId) -> Result<Vec<u64>, StoreError> {
        (**self).job_audit(job)
    }
}
