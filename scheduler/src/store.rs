//! Durable state in sled: every job record, written before a request is acknowledged.
//!
//! Tree `jobs`: key = the job id (big-endian u64, so iteration is in id order), value = the record as JSON.
//! Tree `nodes`: key = the node name, value = the GPUs its daemon last reported ([`NodeRecord`], JSON), so that a
//! restarted scheduler rebuilds the same topology and its placements still fit before the daemons reconnect.
//! Tree `events`: key = a sequence number (big-endian u64), value = one line of what happened (node registered,
//! not ready, job lost …), for operators; bounded to the last [`EVENTS_KEPT`] entries.
//! Writes go in one atomic batch per request, then `flush` — a submit is only acknowledged once it is on disk
//! (docs/design.md invariant 7). sled's last release is from 2021 and has open reports of trouble after abrupt stops;
//! it stays behind this small interface so that the kill -9 tests can judge it and another store can replace it.

use crate::engine::JobRecord;
use std::path::Path;

/// Events kept in the `events` tree.
pub const EVENTS_KEPT: u64 = 10_000;

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

/// The state store.
pub struct Store {
    db: sled::Db,
    jobs: sled::Tree,
    nodes: sled::Tree,
    events: sled::Tree,
}

impl Store {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Store, String> {
        let db = sled::open(dir).map_err(|e| format!("{}: cannot open the state directory: {e}", dir.display()))?;
        let tree = |name: &str| db.open_tree(name).map_err(|e| format!("{}: {e}", dir.display()));
        let (jobs, nodes, events) = (tree("jobs")?, tree("nodes")?, tree("events")?);
        Ok(Store { db, jobs, nodes, events })
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

impl Store {
    /// Every stored node inventory, by name.
    pub fn load_nodes(&self) -> Result<Vec<(String, NodeRecord)>, String> {
        let mut out = Vec::new();
        for item in self.nodes.iter() {
            let (k, v) = item.map_err(|e| format!("reading the node store: {e}"))?;
            let name = String::from_utf8_lossy(&k).into_owned();
            let rec =
                serde_json::from_slice(&v).map_err(|e| format!("node store entry {name:?} is unreadable: {e}"))?;
            out.push((name, rec));
        }
        Ok(out)
    }

    /// Writes a node's inventory and flushes it.
    pub fn save_node(&self, name: &str, rec: &NodeRecord) -> Result<(), String> {
        let v = serde_json::to_vec(rec).map_err(|e| format!("encoding node {name}: {e}"))?;
        self.nodes.insert(name.as_bytes(), v).map_err(|e| format!("writing the node store: {e}"))?;
        self.db.flush().map_err(|e| format!("flushing the node store: {e}"))?;
        Ok(())
    }

    /// Appends an event line (not flushed on its own: the next flushed write carries it), dropping the oldest
    /// beyond [`EVENTS_KEPT`].
    pub fn event(&self, line: &str) -> Result<(), String> {
        let next = self
            .events
            .last()
            .ok()
            .flatten()
            .and_then(|(k, _)| k.as_ref().try_into().ok())
            .map_or(0, u64::from_be_bytes)
            + 1;
        self.events.insert(next.to_be_bytes(), line.as_bytes()).map_err(|e| format!("writing an event: {e}"))?;
        if next > EVENTS_KEPT {
            let _ = self.events.remove((next - EVENTS_KEPT).to_be_bytes());
        }
        Ok(())
    }

    /// The last `n` events, oldest first.
    pub fn events(&self, n: usize) -> Vec<String> {
        let mut v: Vec<String> = self
            .events
            .iter()
            .rev()
            .take(n)
            .filter_map(|i| i.ok())
            .map(|(_, v)| String::from_utf8_lossy(&v).into_owned())
            .collect();
        v.reverse();
        v
    }
}
