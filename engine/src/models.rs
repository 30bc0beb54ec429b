//! Model-aware placement: the model availability fact (where each model version is available for inference),
//! handed to the placement core's `model` filter, and what a change of it does to placed jobs.

use crate::{Engine, JobId, JobState};
use sovra_domain::{ModelAvailability, Resolved};
use std::sync::Arc;

impl Engine {
    /// Takes a new model availability fact (docs/receipts.md, "Model-aware placement"). Placed and running jobs
    /// whose model version is known to be gone from a zone one of their replicas is in (withdrawn, or no longer a
    /// version of the registry) are stopped and requeued; they are returned with the reason, for the caller to
    /// stop their replicas and record it. An unavailable fact (`unavailable`: the promotion service cannot be
    /// reached) stops nothing: what is not known to be withdrawn keeps running, and nothing new is placed.
    pub fn set_models(&mut self, facts: Arc<ModelAvailability>) -> Vec<(JobId, String)> {
        self.models = facts.clone();
        self.placer.set_models(facts.clone());
        // Submit verdicts of model-bound shapes depend on the fact.
        self.verdicts.clear();
        self.dirty = true;
        if facts.unavailable.is_some() {
            return Vec::new();
        }
        let mut stopped = Vec::new();
        for r in self.jobs.values() {
            let (Some(model), Some(d)) = (&r.job.model, &r.placement) else { continue };
            if !r.state.holds_resources() {
                continue;
            }
            let why = match facts.resolve(model) {
                Resolved::Version { zones, .. } => {
                    let gone: Vec<&str> =
                        d.replicas.iter().map(|p| p.zone.as_str()).filter(|z| !zones.contains(*z)).collect();
                    match gone.first() {
                        Some(z) => format!("model {model} was withdrawn from zone {z}"),
                        None => continue,
                    }
                }
                Resolved::NoVersion => format!("model {model} is no longer a version of the registry"),
                Resolved::Ambiguous(_) | Resolved::Unavailable(_) => continue,
            };
            stopped.push((r.id, why));
        }
        for (id, _) in &stopped {
            self.release(*id);
            if let Some(r) = self.jobs.get_mut(id) {
                r.state = JobState::Pending; // requeued: it may run again where the version still is
            }
        }
        stopped
    }

    /// The model availability fact in use.
    pub fn models(&self) -> &Arc<ModelAvailability> {
        &self.models
    }
}
