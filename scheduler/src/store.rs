//! Durable state in sled: every job record, written before a request is acknowledged.
//!
//! One tree, `jobs`: key = the job id (big-endian u64, so iteration is in id order), value = the record as JSON.
//! Writes go in one atomic batch per request, then `flush` — a submit is only acknowledged once it is on disk
//! (DESIGN.md invariant 7). sled's last release is from 2021 and has open reports of trouble after abrupt stops;
//! it stays behind this small interface so that the kill -9 tests can judge it and another store can replace it.

use crate::engine::JobRecord;
use std::path::Path;

/// The job store.
pub struct Store {
    db: sled::Db,
    jobs: sled::Tree,
}

impl Store {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Store, String> {
        let db = sled::open(dir).map_err(|e| format!("{}: cannot open the state directory: {e}", dir.display()))?;
        let jobs = db.open_tree("jobs").map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Store { db, jobs })
    }

    /// Every stored record, in id order. A record that cannot be read is an error naming its key.
    pub fn load(&self) -> Result<Vec<JobRecord>, String> {
        let mut out = Vec::new();
        for item in self.jobs.iter() {
            let (k, v) = item.map_err(|e| format!("reading the job store: {e}"))?;
            let id = k.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(0);
            let rec: JobRecord =
                serde_json::from_slice(&v).map_err(|e| format!("job store entry {id} is unreadable: {e}"))?;
            out.push(rec);
        }
        Ok(out)
    }

    /// Writes `records` atomically and flushes them to disk.
    pub fn save<'a>(&self, records: impl IntoIterator<Item = &'a JobRecord>) -> Result<(), String> {
        let mut batch = sled::Batch::default();
        for r in records {
            let v = serde_json::to_vec(r).map_err(|e| format!("encoding job {}: {e}", r.id))?;
            batch.insert(&r.id.to_be_bytes(), v);
        }
        self.jobs.apply_batch(batch).map_err(|e| format!("writing the job store: {e}"))?;
        self.db.flush().map_err(|e| format!("flushing the job store: {e}"))?;
        Ok(())
    }
}
