//! The writer's side of running jobs: which replicas each node must run (sent through [`super::dispatch`]), and
//! what the daemons report of them, which drives the job's lifecycle.
//!
//! A job with a `run:` section is placed by the engine as any other; once the placement is committed each replica
//! is assigned to its node with the UUIDs of its devices, its run spec and the gang's rendezvous (replica 0's node
//! address and a port derived from the job id). The daemon reports `waiting`, `starting`, `running`, then
//! `succeeded`, `failed` or `stopped`:
//! - the job is `running` once every replica runs (or has already succeeded);
//! - it `succeeded` once every replica succeeded;
//! - it `failed` as soon as one replica failed (after its restarts), with that replica's reason; the scheduler then
//!   withdraws the others, which the daemons stop.
//!
//! Reports of another attempt (a job re-placed after a preemption or a lost node) or from a node the replica is
//! not assigned to are ignored; the assignment set the daemon receives then stops that stale work.

use super::apply::Changes;
use super::writer::{Outcome, Writer};
use sovra_api::v1::{AssignedDevice, Assignment, Assignments, ReplicaStatus};
use sovra_domain::Gpu;
use sovra_engine::{JobId, JobRecord, JobState};
use std::collections::{BTreeMap, BTreeSet};
use tonic::Status;

/// The port of a job's rendezvous (`MASTER_PORT`): 29500 (torch.distributed's default) plus the job id modulo
/// 10,000, so that gangs sharing a master node do not collide.
pub(crate) fn master_port(job: JobId) -> u32 {
    29_500 + (job % 10_000) as u32
}

/// Stop reasons kept per node (the most recent), so that a daemon can say why it stopped something.
const KEEP_STOP_REASONS: usize = 256;

/// One node's assignment set as the writer keeps it.
#[derive(Debug, Default)]
pub(crate) struct NodeSet {
    /// The replicas, by job and replica index.
    pub work: BTreeMap<(JobId, u32), Assignment>,
    /// Why jobs that left the set did, by job id; bounded (the lowest ids, the oldest jobs, go first).
    pub stop_reasons: BTreeMap<JobId, String>,
    /// The generation last sent.
    pub generation: u64,
}

/// The GPU index and UUID of device `dev` of a node (devices are the GPUs in order, a MIG-enabled GPU counting
/// one device per instance, as the placement core numbers them).
pub(crate) fn device_of(gpus: &[Gpu], dev: u16) -> Option<(u32, String)> {
    let mut d = 0usize;
    for (g, gpu) in gpus.iter().enumerate() {
        let n = gpu.mig.len().max(1);
        if usize::from(dev) < d + n {
            let uuid = match gpu.mig.get(usize::from(dev) - d) {
                Some(m) => m.uuid.clone(),
                None => gpu.uuid.clone(),
            };
            return Some((g as u32, uuid));
        }
        d += n;
    }
    None
}

/// Why a job's replicas left their nodes' sets, in words, from its record (when the writer noted no better
/// reason: a preemption, a lost node).
fn stop_reason(r: Option<&JobRecord>) -> String {
    let Some(r) = r else { return "the job was archived".into() };
    match r.state {
        JobState::Cancelled => "cancelled".into(),
        JobState::Succeeded => "the job succeeded".into(),
        JobState::Failed => match &r.ended_reason {
            Some(why) => format!("the job failed: {why}"),
            None => "the job failed".into(),
        },
        JobState::Pending => "requeued".into(),
        JobState::Placed | JobState::Running => format!("re-placed (attempt {})", r.attempt),
        other => format!("the job is {}", super::jobs::state_name(other)),
    }
}

impl Writer {
    /// The assignments of a job that must run now, by node.
    fn assignments_of(&self, r: &JobRecord) -> Vec<(String, Assignment)> {
        let (Some(run), Some(d)) = (r.job.run.as_deref(), r.placement.as_ref()) else { return Vec::new() };
        if !matches!(r.state, JobState::Placed | JobState::Running) {
            return Vec::new();
        }
        // Plain data: serialising cannot fail.
        let run_json = serde_json::to_string(run).unwrap_or_default();
        let mut peers: Vec<(u32, String)> = d.replicas.iter().map(|p| (p.replica, p.node_name.clone())).collect();
        peers.sort();
        let master = peers.first().map(|(_, n)| n.clone()).unwrap_or_default();
        let master_addr = self.addresses.get(&master).cloned().unwrap_or(master);
        let peers: Vec<String> = peers.into_iter().map(|(_, n)| n).collect();
        d.replicas
            .iter()
            .map(|p| {
                let gpus = self.position(&p.node_name).and_then(|i| self.cluster.nodes.get(i)).map(|n| &n.gpus);
                let devices = p
                    .devices
                    .iter()
                    .map(|a| {
                        let (gpu, uuid) = gpus.and_then(|g| device_of(g, a.device)).unwrap_or_default();
                        AssignedDevice { gpu, uuid, milli: u32::from(a.milli) }
                    })
                    .collect();
                let a = Assignment {
                    job: r.id,
                    replica: p.replica,
                    replicas: r.job.replicas,
                    attempt: r.attempt,
                    job_name: r.job.name.clone(),
                    devices,
                    run_json: run_json.clone(),
                    master_addr: master_addr.clone(),
                    master_port: master_port(r.id),
                    peers: peers.clone(),
                    cpu_milli: p.cpu_milli,
                    memory_mib: p.memory_mib,
                };
                (p.node_name.clone(), a)
            })
            .collect()
    }

    /// Brings the nodes' assignment sets up to date with `jobs` (every job when `all`) and publishes each set that
    /// changed. Runs after a commit: only durable placements are ever sent.
    pub(crate) fn dispatch(&mut self, jobs: &BTreeSet<JobId>, all: bool) {
        let ids: BTreeSet<JobId> = if all {
            self.engine.jobs().map(|r| r.id).chain(self.job_nodes.keys().copied()).collect()
        } else {
            jobs.clone()
        };
        let mut dirty: BTreeSet<String> = BTreeSet::new();
        for id in ids {
            let rec = self.engine.job(id);
            let new = rec.map(|r| self.assignments_of(r)).unwrap_or_default();
            let new_nodes: BTreeSet<String> = new.iter().map(|(n, _)| n.clone()).collect();
            // Unchanged (most rounds touch a job for its runs only): nothing to send.
            let before: Vec<(&String, &Assignment)> = self
                .job_nodes
                .get(&id)
                .into_iter()
                .flatten()
                .filter_map(|n| self.assigned.get(n).map(|s| (n, s)))
                .flat_map(|(n, s)| s.work.range((id, 0)..=(id, u32::MAX)).map(move |(_, a)| (n, a)))
                .collect();
            let mut after: Vec<(&String, &Assignment)> = new.iter().map(|(n, a)| (n, a)).collect();
            after.sort_by_key(|(n, a)| (n.as_str(), a.replica));
            if before == after {
                self.stop_why.remove(&id);
                if rec.is_none() {
                    self.runs.remove(&id);
                }
                continue;
            }
            let old_nodes = self.job_nodes.remove(&id).unwrap_or_default();
            let noted = self.stop_why.remove(&id);
            for node in &old_nodes {
                let set = self.assigned.entry(node.clone()).or_default();
                let old_attempt = set.work.iter().find(|((j, _), _)| *j == id).map(|(_, a)| a.attempt);
                set.work.retain(|(j, _), _| *j != id);
                if let Some(old) = old_attempt {
                    dirty.insert(node.clone());
                    if !new_nodes.contains(node) || rec.is_some_and(|r| r.attempt != old) {
                        let why = noted.clone().unwrap_or_else(|| stop_reason(rec));
                        set.stop_reasons.remove(&id);
                        set.stop_reasons.insert(id, why);
                    }
                }
            }
            if let Some(r) = rec
                && !new.is_empty()
            {
                // The replicas' runs start as `assigned`, until their daemons report.
                let runs = self.runs.entry(id).or_default();
                for (node, a) in &new {
                    let fresh = runs.get(&a.replica).is_none_or(|s| s.attempt != r.attempt || s.node != *node);
                    if fresh {
                        runs.insert(
                            a.replica,
                            ReplicaStatus {
                                job: id,
                                replica: a.replica,
                                attempt: r.attempt,
                                state: "assigned".into(),
                                node: node.clone(),
                                ..Default::default()
                            },
                        );
                    }
                }
            }
            for (node, a) in new {
                let set = self.assigned.entry(node.clone()).or_default();
                set.stop_reasons.remove(&id);
                if set.work.get(&(id, a.replica)) != Some(&a) {
                    dirty.insert(node.clone());
                }
                set.work.insert((id, a.replica), a);
            }
            if !new_nodes.is_empty() {
                self.job_nodes.insert(id, new_nodes);
            }
            if rec.is_none() {
                self.runs.remove(&id);
            }
        }
        for node in dirty {
            let set = self.assigned.entry(node.clone()).or_default();
            while set.stop_reasons.len() > KEEP_STOP_REASONS {
                set.stop_reasons.pop_first();
            }
            set.generation += 1;
            let msg = Assignments {
                generation: set.generation,
                replicas: set.work.values().cloned().collect(),
                stop_reasons: set.stop_reasons.iter().map(|(k, v)| (*k, v.clone())).collect(),
            };
            self.dispatch.publish(&node, msg);
        }
    }

    /// A daemon's report of one replica: recorded on the job's runs, and the job's state follows.
    pub(crate) fn replica_report(
        &mut self,
        node: &str,
        mut s: ReplicaStatus,
        ch: &mut Changes,
    ) -> Result<Outcome, Status> {
        let Some(r) = self.engine.job(s.job) else { return Ok(Outcome::Unit) };
        let (attempt, state) = (r.attempt, r.state);
        let known = self.runs.get(&s.job).and_then(|m| m.get(&s.replica));
        if s.attempt != attempt || known.is_none_or(|k| k.node != node || k.attempt != attempt) {
            tracing::debug!(
                node,
                job = s.job,
                replica = s.replica,
                attempt = s.attempt,
                "stale replica report ignored"
            );
            return Ok(Outcome::Unit);
        }
        s.node = node.to_string();
        let runs = self.runs.entry(s.job).or_default();
        if runs.get(&s.replica) == Some(&s) {
            return Ok(Outcome::Unit);
        }
        runs.insert(s.replica, s.clone());
        ch.jobs.insert(s.job);
        if !state.holds_resources() {
            return Ok(Outcome::Unit);
        }
        let replicas = r.job.replicas;
        let current: Vec<&ReplicaStatus> = runs.values().filter(|x| x.attempt == attempt).collect();
        let all = |f: &dyn Fn(&str) -> bool| current.len() as u32 == replicas && current.iter().all(|x| f(&x.state));
        let id = s.job;
        if let Some(f) = current.iter().find(|x| x.state == "failed") {
            let why = format!("replica {} on {} failed: {}", f.replica, f.node, f.reason);
            tracing::info!(job = id, reason = %why, "job failed");
            ch.events.push(format!("job {id} failed: {why}"));
            let _ = self.engine.finished_because(id, false, Some(why));
            ch.cycle = true;
        } else if all(&|st| st == "succeeded") {
            let _ = self.engine.finished_because(id, true, None);
            ch.cycle = true;
        } else if state == JobState::Placed && all(&|st| st == "running" || st == "succeeded") {
            let _ = self.engine.started(id);
        }
        Ok(Outcome::Unit)
    }
}
