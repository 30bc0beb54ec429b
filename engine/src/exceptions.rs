//! Break-glass for placement: granting a job a waiver ([`sovra_domain::Waiver`]) and ending it when it expires.
//! The engine reads no clock: expiry is judged against the time the caller passes (docs/receipts.md,
//! "Break-glass for placement").

use crate::{Engine, JobError, JobId, JobState, still_permitted};
use sovra_domain::Waiver;

/// What [`Engine::expire_exceptions`] did: the jobs released and requeued (with why), and every job whose waiver
/// ended (with the waiver).
pub type Expired = (Vec<(JobId, String)>, Vec<(JobId, Waiver)>);

impl Engine {
    /// Grants `waiver` to job `id`: from the next cycle on its replicas may also go to the waiver's zone. A job
    /// refused at submit for want of a compliant home is requeued (the waiver may give it one); a job that
    /// already holds resources keeps them. Finished or cancelled jobs are an error. A later grant replaces an
    /// earlier one.
    pub fn grant_exception(&mut self, id: JobId, waiver: Waiver) -> Result<(), JobError> {
        let r = self.jobs.get_mut(&id).ok_or(JobError::NoSuchJob { id })?;
        match r.state {
            JobState::Succeeded | JobState::Failed | JobState::Cancelled => {
                return Err(JobError::WrongState {
                    id,
                    state: r.state,
                    expected: "pending, refused, placed or running",
                });
            }
            JobState::Refused => {
                r.state = JobState::Pending;
                r.explanation = None;
            }
            _ => {}
        }
        r.job.exception = Some(waiver);
        self.excepted.insert(id);
        self.verdicts.clear();
        self.dirty = true;
        Ok(())
    }

    /// Ends every waiver that expired at `now_ms` (its `expires_at_ms` is not after it). A job that holds resources
    /// in a zone only its waiver permitted is released and requeued; it is returned with the reason, for the
    /// caller to stop its replicas and record it. A job that no longer needs its waiver keeps running. Returns
    /// the released jobs and, separately, every job whose waiver ended, with the waiver. Costs the jobs holding a
    /// waiver, not all jobs.
    pub fn expire_exceptions(&mut self, now_ms: u64) -> Expired {
        let mut released = Vec::new();
        let mut ended = Vec::new();
        let held: Vec<JobId> = self.excepted.iter().copied().collect();
        for id in held {
            let Some(r) = self.jobs.get_mut(&id) else {
                self.excepted.remove(&id); // archived
                continue;
            };
            if r.job.exception.as_ref().is_none_or(|w| w.expires_at_ms > now_ms) {
                continue;
            }
            let w = r.job.exception.take().expect("checked above");
            self.excepted.remove(&id);
            let topo = self.state.topology();
            let outside =
                r.state.holds_resources() && r.placement.as_ref().is_some_and(|d| !still_permitted(topo, &r.job, d));
            if outside {
                released
                    .push((id, format!("placement exception {} (zone {}, {}) expired", w.id, w.zone, w.requirement)));
            }
            ended.push((id, w));
        }
        for (id, _) in &released {
            self.release(*id);
            if let Some(r) = self.jobs.get_mut(id) {
                r.state = JobState::Pending; // requeued: it may run again where its class permits
            }
        }
        if !ended.is_empty() {
            self.verdicts.clear();
            self.dirty = true;
        }
        (released, ended)
    }

    /// The earliest expiry of a waiver held by any job (milliseconds), for a caller that wakes to expire it.
    pub fn next_exception_expiry(&self) -> Option<u64> {
        self.excepted.iter().filter_map(|id| self.jobs.get(id)?.job.exception.as_ref().map(|w| w.expires_at_ms)).min()
    }
}
