//! Retention: finished jobs leave the engine once the caller has archived them.

use crate::{Engine, JobId, JobRecord};

impl Engine {
    /// Removes a finished job (succeeded, failed, cancelled or refused) from the engine and returns its record; a
    /// job that is not finished stays (`None`). Its request id stays known, so resending the request still answers
    /// with this job's id instead of creating a new job.
    pub fn forget(&mut self, id: JobId) -> Option<JobRecord> {
        if !self.jobs.get(&id)?.state.is_final() {
            return None;
        }
        self.jobs.remove(&id)
    }
}
