//! What a damage check found wrong with a state directory, and how it is told.

use sovra_engine::JobId;
use std::collections::BTreeSet;

/// The manifest as recorded, re-exported for [`Damage::recorded`].
pub use super::Manifest;

/// What [`super::SledStore::open`] found wrong with a state directory; empty when nothing is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Damage {
    /// The manifest is missing or unreadable (why), while the store holds jobs.
    pub manifest: Option<String>,
    /// The manifest as recorded, when it could be read.
    pub recorded: Option<Manifest>,
    /// Job ids at or below the manifest's last id that the store does not hold.
    pub missing: Vec<JobId>,
    /// Records that fail their checksum or cannot be decoded: the key (a job id when it is one) and why.
    pub corrupt: Vec<(String, String)>,
    /// Job ids among `corrupt`.
    pub corrupt_ids: Vec<JobId>,
    /// Node inventories that cannot be decoded (daemons report them again).
    pub nodes: Vec<String>,
}

impl Damage {
    /// Whether nothing is wrong.
    pub fn is_empty(&self) -> bool {
        self.manifest.is_none() && self.missing.is_empty() && self.corrupt.is_empty() && self.nodes.is_empty()
    }

    /// The jobs lost: missing ones and those whose record is damaged, in id order.
    pub fn lost_jobs(&self) -> Vec<JobId> {
        let set: BTreeSet<JobId> = self.missing.iter().chain(&self.corrupt_ids).copied().collect();
        set.into_iter().collect()
    }

    /// What is wrong, in one paragraph.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(m) = &self.manifest {
            parts.push(m.clone());
        }
        if let Some(r) = &self.recorded
            && !self.missing.is_empty()
        {
            parts.push(format!(
                "the manifest records {} job(s) up to id {}; {} of them are missing from the store (ids {})",
                r.jobs,
                r.last_id,
                self.missing.len(),
                ranges(&self.missing)
            ));
        }
        if !self.corrupt.is_empty() {
            let list: Vec<String> = self.corrupt.iter().take(10).map(|(k, why)| format!("{k}: {why}")).collect();
            let more =
                if self.corrupt.len() > 10 { format!(" and {} more", self.corrupt.len() - 10) } else { "".into() };
            parts.push(format!("{} record(s) are damaged ({}{more})", self.corrupt.len(), list.join("; ")));
        }
        if !self.nodes.is_empty() {
            parts.push(format!("node inventories are unreadable: {}", self.nodes.join(", ")));
        }
        parts.join("; ")
    }
}

/// `[1, 2, 3, 7]` → `1-3, 7`.
pub(crate) fn ranges(ids: &[JobId]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < ids.len() {
        let mut j = i;
        while j + 1 < ids.len() && ids[j + 1] == ids[j] + 1 {
            j += 1;
        }
        out.push(if i == j { ids[i].to_string() } else { format!("{}-{}", ids[i], ids[j]) });
        i = j + 1;
    }
    out.join(", ")
}
