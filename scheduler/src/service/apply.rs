//! What each request does to the writer's state. Runs only on the writer thread; records what it changed in
//! [`Changes`] so that the round writes and publishes exactly that.

use super::inventory::{gpus_of, same_devices};
use super::snapshot::LiveCell;
use super::writer::{Outcome, Req, Writer};
use super::{overlay, queues_of};
use crate::store::NodeRecord;
use sovra_api::v1::{NodeInventory, Register, Registered, ReloadResponse};
use sovra_domain::{ClusterConfig, Health, Job};
use sovra_engine::{JobError, JobId, JobState, SubmitError};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;
use tonic::Status;

/// What a round changed.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    /// Jobs whose record changed (written and published).
    pub jobs: BTreeSet<JobId>,
    /// Finished jobs leaving the hot state.
    pub archive: Vec<JobId>,
    /// Nodes whose reported inventory changed (written).
    pub nodes: BTreeSet<String>,
    /// Nodes whose view must be rebuilt even if their state did not change (backend, connection, health text).
    pub views: BTreeSet<String>,
    /// Event lines for operators.
    pub events: Vec<String>,
    /// A scheduling cycle is due.
    pub cycle: bool,
    /// Events audited as they are, before the round's receipts (refused attempts, granted exceptions).
    pub audit: Vec<(Option<JobId>, sovra_audit::AuditEvent)>,
}

/// The gRPC status of a refused lifecycle change: NOT_FOUND for an unknown job, FAILED_PRECONDITION otherwise.
fn job_status(e: JobError) -> Status {
    match e {
        JobError::NoSuchJob { .. } => Status::not_found(e.to_string()),
        _ => Status::failed_precondition(e.to_string()),
    }
}

/// Each node's position in a cluster file (the same in the overlaid cluster, which keeps the file's order).
pub(crate) fn positions(cluster: &ClusterConfig) -> std::collections::BTreeMap<String, usize> {
    cluster.nodes.iter().enumerate().map(|(i, n)| (n.name.clone(), i)).collect()
}

impl Writer {
    /// A node's position in `base` and `cluster`.
    pub(crate) fn position(&self, name: &str) -> Option<usize> {
        self.positions.get(name).copied().filter(|&i| self.base.nodes.get(i).is_some_and(|n| n.name == name))
    }

    /// Applies one request.
    pub(crate) fn apply(&mut self, req: &Req, ch: &mut Changes) -> Result<Outcome, Status> {
        match req {
            Req::Submit { job, request_id } => self.submit(job, request_id.clone(), ch),
            Req::SetState { id, state } => {
                let r = match state.as_str() {
                    "running" => self.engine.started(*id),
                    "succeeded" => self.engine.finished(*id, true),
                    "failed" => self.engine.finished(*id, false),
                    other => {
                        return Err(Status::invalid_argument(format!(
                            "state: {other:?} is not one a runner reports; use running, succeeded or failed"
                        )));
                    }
                };
                r.map_err(job_status)?;
                ch.jobs.insert(*id);
                ch.cycle = true;
                Ok(Outcome::Job(*id))
            }
            Req::Cancel { id } => {
                self.engine.cancel(*id).map_err(job_status)?;
                ch.jobs.insert(*id);
                ch.cycle = true;
                Ok(Outcome::Job(*id))
            }
            Req::Register { identity, reg } => self.register(identity, reg, ch),
            Req::Health { identity, session, gpu, healthy, reason } => {
                self.check_session(identity, *session)?;
                self.health(identity, *gpu, *healthy, reason, ch)?;
                Ok(Outcome::Unit)
            }
            Req::Inventory { identity, session, inv } => {
                self.check_session(identity, *session)?;
                let touched = self.apply_inventory(identity, inv, "inventory", ch)?;
                ch.jobs.extend(touched);
                ch.cycle = true;
                Ok(Outcome::Unit)
            }
            Req::Ready { identity } => {
                if self.mark_ready(identity, ch) {
                    ch.cycle = true;
                }
                Ok(Outcome::Unit)
            }
            Req::Replica { identity, session, status } => {
                self.check_session(identity, *session)?;
                self.replica_report(identity, sovra_api::v1::ReplicaStatus::clone(status), ch)
            }
            Req::Disconnected { identity, session } => {
                if let Some(cell) = self.live.load().get(identity)
                    && cell.session.load(Ordering::Relaxed) == *session
                {
                    cell.connected.store(false, Ordering::Relaxed);
                    ch.views.insert(identity.clone());
                    ch.events.push(format!("node {identity}: report stream closed"));
                    tracing::info!(
                        node = %identity,
                        "report stream closed; NotReady unless it reconnects within the deadline"
                    );
                }
                Ok(Outcome::Unit)
            }
            Req::Sweep { now } => Ok(Outcome::Names(self.sweep(*now, ch))),
            Req::Reload => self.reload(ch).map(Outcome::Reload),
            Req::Touch { ids } => {
                ch.jobs.extend(ids.iter().copied());
                ch.cycle = true;
                Ok(Outcome::Unit)
            }
            Req::Models { facts } => {
                if self.engine.models() != facts {
                    let was = self.engine.models().unavailable.clone();
                    if was != facts.unavailable {
                        ch.events.push(match &facts.unavailable {
                            Some(why) => format!("model availability unknown: {why}; model-bound jobs wait"),
                            None => "model availability known again".to_string(),
                        });
                    }
                    for (id, why) in self.engine.set_models(facts.clone()) {
                        ch.events.push(format!("job {id}: {why}: its replicas there are stopped and it is requeued"));
                        self.stop_why.insert(id, why);
                        self.metrics.model_stops.inc();
                        ch.jobs.insert(id);
                    }
                    ch.cycle = true;
                }
                Ok(Outcome::Unit)
            }
            Req::GrantException { envelope } => self.grant_exception(envelope, ch),
            #[cfg(feature = "fault-injection")]
            Req::Panic => panic!("fault injection: a request that panics inside the writer"),
        }
    }

    fn submit(&mut self, job: &Job, request_id: Option<String>, ch: &mut Changes) -> Result<Outcome, Status> {
        match self.engine.submit(job.clone(), request_id) {
            Ok(id) => {
                // A retry of a request whose job was refused gets the refusal again, as the first attempt did.
                if let Some(r) = self.engine.job(id).filter(|r| r.state == JobState::Refused) {
                    let why = r.explanation.as_ref().map(|e| e.summary.clone()).unwrap_or_default();
                    return Err(Status::failed_precondition(format!("job {id} refused: {why}")));
                }
                self.metrics.submits.inc();
                ch.jobs.insert(id);
                ch.cycle = true;
                Ok(Outcome::Job(id))
            }
            Err(SubmitError::Refused { id, explanation }) => {
                ch.jobs.insert(id);
                Err(Status::failed_precondition(format!("job {id} refused: {}", explanation.summary)))
            }
            Err(e @ SubmitError::UnknownQueue { .. }) => Err(Status::invalid_argument(format!("job: queue: {e}"))),
            Err(e @ SubmitError::RequestReused { .. }) => Err(Status::already_exists(format!("request_id: {e}"))),
            // A refusal the engine may add later is still a refusal.
            Err(e) => Err(Status::failed_precondition(e.to_string())),
        }
    }

    fn check_session(&self, identity: &str, session: u64) -> Result<(), Status> {
        match self.live.load().get(identity) {
            Some(c) if c.session.load(Ordering::Relaxed) == session => Ok(()),
            _ => Err(Status::aborted("a newer report stream of this node replaced this one")),
        }
    }

    /// Marks NotReady every daemon-reported node silent for 1.5 heartbeat intervals at `now`; returns their names.
    pub(crate) fn sweep(&mut self, now: Instant, ch: &mut Changes) -> Vec<String> {
        let deadline = self.opts.heartbeat.mul_f64(1.5).as_millis() as u64;
        let live = self.live.load();
        let mut silent = Vec::new();
        for (name, cell) in live.iter() {
            let Some(age) = cell.age_ms(&self.clock, now) else { continue };
            let topo = self.engine.state().topology();
            if age > deadline && topo.node_index(name).is_some_and(|i| self.engine.state().node_ready(i)) {
                silent.push(name.clone());
            }
        }
        for n in &silent {
            let jobs = self.engine.node_lost(n);
            for j in &jobs {
                self.stop_why.insert(*j, format!("requeued: node {n} was lost (no heartbeat)"));
            }
            tracing::warn!(node = %n, lost_jobs = ?jobs, "no heartbeat for 1.5 intervals: node NotReady");
            ch.events.push(format!("node {n} NotReady: no heartbeat; jobs lost and requeued: {jobs:?}"));
            ch.jobs.extend(jobs);
            ch.views.insert(n.clone());
            ch.cycle = true;
        }
        silent
    }

    /// A NotReady node that reports is ready again; true when it was not ready.
    fn mark_ready(&mut self, node: &str, ch: &mut Changes) -> bool {
        let topo = self.engine.state().topology();
        match topo.node_index(node) {
            Some(i) if !self.engine.state().node_ready(i) => {
                self.engine.node_ready(node);
                ch.events.push(format!("node {node} ready"));
                ch.views.insert(node.to_string());
                tracing::info!(node, "node ready");
                true
            }
            _ => false,
        }
    }

    /// Records a registration (or a new inventory) from `node`'s daemon: a new report stream session.
    fn register(&mut self, identity: &str, reg: &Register, ch: &mut Changes) -> Result<Outcome, Status> {
        if reg.node != identity {
            return Err(Status::permission_denied(format!(
                "register.node: the client certificate is node {identity:?}'s; it cannot report for {:?}",
                reg.node
            )));
        }
        let Some(node) = self.position(identity).and_then(|i| self.base.nodes.get(i)) else {
            return Err(Status::permission_denied(format!(
                "node {identity:?} is not enrolled: add it (with its pool) to the scheduler's cluster file and reload"
            )));
        };
        let Some(pool) = self.base.pools.iter().find(|p| p.id == node.pool).cloned() else {
            return Err(Status::internal(format!("node {identity:?}: its pool {:?} is not in the cluster", node.pool)));
        };
        for (field, claimed, actual) in
            [("claimed_zone", &reg.claimed_zone, &pool.zone), ("claimed_pool", &reg.claimed_pool, &pool.id)]
        {
            if !claimed.is_empty() && claimed != actual {
                let why = format!("claimed {field} {claimed:?}, enrolled in {actual:?}");
                self.refused_attempt(ch, "node-zone-claim", &format!("node {identity}"), &why);
                return Err(Status::permission_denied(format!(
                    "register.{field}: node {identity:?} is enrolled in {actual:?}, not {claimed:?}; a node's zone and \
                     pool come from the scheduler's cluster file, never from the node"
                )));
            }
        }
        let inv = reg.inventory.clone().unwrap_or_default();
        let touched = self.apply_inventory(identity, &inv, "register.inventory", ch)?;
        let session = self.next_session;
        self.next_session += 1;
        let now = Instant::now();
        let cells = self.live.load_full();
        match cells.get(identity) {
            Some(c) => {
                c.session.store(session, Ordering::Relaxed);
                c.connected.store(true, Ordering::Relaxed);
                c.seen(&self.clock, now);
            }
            None => {
                let c = LiveCell::default();
                c.session.store(session, Ordering::Relaxed);
                c.connected.store(true, Ordering::Relaxed);
                c.seen(&self.clock, now);
                let mut m = super::snapshot::LiveMap::clone(&cells);
                m.insert(identity.to_string(), Arc::new(c));
                self.live.store(Arc::new(m));
            }
        }
        self.mark_ready(identity, ch);
        self.addresses.insert(identity.to_string(), reg.address.clone());
        self.isolation.insert(identity.to_string(), if reg.runs_jobs { reg.isolation.clone() } else { String::new() });
        // What the daemon runs or ran, re-adopted after its restart: the runs follow, stale ones are ignored (and
        // stopped by the assignment set the daemon gets next).
        for status in &reg.replicas {
            self.replica_report(identity, status.clone(), ch)?;
        }
        ch.views.insert(identity.to_string());
        ch.events.push(format!("node {identity} registered ({}, {} GPUs)", inv.backend, inv.gpus.len()));
        tracing::debug!(node = identity, backend = %inv.backend, gpus = inv.gpus.len(), "node registered");
        ch.jobs.extend(touched);
        ch.cycle = true;
        let topo = self.engine.state().topology();
        let devices = topo.node_index(identity).map_or(0, |i| u32::from(topo.nodes[i as usize].dev_count));
        let heartbeat_interval_ms = self.opts.heartbeat.as_millis() as u64;
        Ok(Outcome::Registered(
            session,
            Registered { node: identity.into(), zone: pool.zone, pool: pool.id, heartbeat_interval_ms, devices },
        ))
    }

    /// A GPU's health changed.
    fn health(&mut self, node: &str, gpu: u32, healthy: bool, reason: &str, ch: &mut Changes) -> Result<(), Status> {
        let Some(g) = self.reported.get_mut(node).and_then(|r| r.gpus.get_mut(gpu as usize)) else {
            return Err(Status::invalid_argument(format!("health.gpu_index: node {node} has no GPU {gpu}")));
        };
        g.health = if healthy { Health::Healthy } else { Health::Unhealthy { reason: reason.to_string() } };
        let gpus = self.reported.get(node).map(|r| r.gpus.clone()).unwrap_or_default();
        if let Some(n) = self.position(node).and_then(|i| self.cluster.nodes.get_mut(i)) {
            n.gpus = gpus;
        }
        self.engine.set_gpu_health(node, gpu, healthy);
        let verb = if healthy { "healthy again" } else { "unhealthy" };
        tracing::warn!(node, gpu, reason, "GPU {verb}");
        ch.events.push(format!("node {node} GPU {gpu} {verb}: {reason}"));
        ch.nodes.insert(node.to_string());
        ch.views.insert(node.to_string());
        ch.cycle = true;
        Ok(())
    }

    /// Takes a node's reported inventory: same devices → only health changes; different devices → the topology
    /// changes (jobs whose placement no longer fits are requeued and returned).
    fn apply_inventory(
        &mut self,
        node: &str,
        inv: &NodeInventory,
        field: &str,
        ch: &mut Changes,
    ) -> Result<Vec<JobId>, Status> {
        let gpus = gpus_of(inv, field).map_err(Status::invalid_argument)?;
        if !inv.backend_ready {
            tracing::warn!(node, reason = %inv.backend_reason, "the node's daemon cannot read its GPUs: none offered");
        }
        let gpu_error = if inv.backend_ready { String::new() } else { inv.backend_reason.clone() };
        let rec =
            NodeRecord { backend: inv.backend.clone(), driver_version: inv.driver_version.clone(), gpus, gpu_error };
        let Some(i) = self.position(node) else {
            return Err(Status::internal(format!("node {node:?} is not in the cluster")));
        };
        // The NVLink topology a daemon reports wins over the cluster file's; an operator hears when they differ.
        let links = |gpus: &[sovra_domain::Gpu]| gpus.iter().map(|g| g.nvlink_peers.clone()).collect::<Vec<_>>();
        let filed = links(&self.base.nodes[i].gpus);
        let reported = links(&rec.gpus);
        let before = self.reported.get(node).map(|r| links(&r.gpus));
        if inv.backend_ready && filed != reported && before.as_ref() != Some(&reported) {
            let line = format!(
                "node {node}: its daemon reports NVLink peers {reported:?} where the cluster file says {filed:?}; \
                 the reported ones are used (fix the cluster file to silence this)"
            );
            tracing::warn!(node, "{line}");
            ch.events.push(line);
        }
        let current = self.cluster.nodes.get(i).map(|n| n.gpus.clone()).unwrap_or_default();
        let requeued = if same_devices(&current, &rec.gpus) {
            for (g, gpu) in rec.gpus.iter().enumerate() {
                self.engine.set_gpu_health(node, g as u32, gpu.health.is_healthy());
            }
            Vec::new()
        } else {
            // Different devices: the node is patched in place (the rest of the topology and its usage stay).
            let mut changed = self.base.nodes[i].clone();
            changed.gpus = rec.gpus.clone();
            let requeued =
                self.engine.upsert_node(&changed).map_err(|e| Status::invalid_argument(format!("{field}: {e}")))?;
            if !requeued.is_empty() {
                tracing::warn!(node, jobs = ?requeued, "the node's GPUs changed: jobs requeued");
            }
            requeued
        };
        // Taken: record what the daemon reported.
        if let Some(n) = self.cluster.nodes.get_mut(i) {
            n.gpus = rec.gpus.clone();
        }
        if self.reported.get(node) != Some(&rec) {
            ch.nodes.insert(node.to_string());
        }
        ch.views.insert(node.to_string());
        self.reported.insert(node.into(), rec);
        Ok(requeued)
    }

    /// Reloads the cluster file.
    fn reload(&mut self, ch: &mut Changes) -> Result<ReloadResponse, Status> {
        let Some(path) = self.opts.config_path.clone() else {
            return Err(Status::failed_precondition("this scheduler was not started from a cluster file"));
        };
        let base = ClusterConfig::load(&path).map_err(|e| Status::invalid_argument(e.to_string()))?;
        // A node's zone is part of its enrolment: a reload never moves a node across a border (remove it in one
        // reload, enrol it again in another, each audited).
        let zone_of = |c: &ClusterConfig, pool: &str| c.pools.iter().find(|p| p.id == pool).map(|p| p.zone.clone());
        for n in &base.nodes {
            let Some(old) = self.position(&n.name).map(|i| &self.base.nodes[i]) else { continue };
            let (was, now) = (zone_of(&self.base, &old.pool), zone_of(&base, &n.pool));
            if was != now {
                let (was, now) = (was.unwrap_or_default(), now.unwrap_or_default());
                let why = format!(
                    "the file moves node {} from zone {was} to zone {now}; a node changes zone only by removing it from \
                     the cluster file (one reload) and enrolling it again (another)",
                    n.name
                );
                self.refused_attempt(ch, "reload-moves-node", &format!("node {}", n.name), &why);
                return Err(Status::failed_precondition(format!("reload refused: {why}; nothing was changed")));
            }
        }
        let policy_before = super::receipts::policy_digest(&self.base).unwrap_or_default();
        let enrolled: BTreeSet<String> = base.nodes.iter().map(|n| n.name.clone()).collect();
        let mut reported = self.reported.clone();
        reported.retain(|n, _| enrolled.contains(n));
        let cluster = overlay(&base, &reported);
        let requeued =
            self.engine.rebuild(&cluster, queues_of(&base)).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let live = self.live.load_full();
        let kept: super::snapshot::LiveMap =
            live.iter().filter(|(n, _)| enrolled.contains(*n)).map(|(n, c)| (n.clone(), c.clone())).collect();
        self.live.store(Arc::new(kept));
        let response = ReloadResponse {
            nodes: base.nodes.len() as u32,
            pools: base.pools.len() as u32,
            requeued: requeued.clone(),
        };
        ch.events.push(format!("configuration reloaded from {}; requeued {requeued:?}", path.display()));
        for j in &requeued {
            self.stop_why.insert(*j, "requeued: its placement no longer fits the reloaded configuration".into());
        }
        tracing::info!(file = %path.display(), ?requeued, "configuration reloaded");
        let details = serde_json::json!({"file": path.display().to_string(), "policyBefore": policy_before,
            "policyAfter": super::receipts::policy_digest(&base).unwrap_or_default(), "requeued": requeued});
        ch.audit.push((
            None,
            sovra_audit::AuditEvent {
                kind: "reload".into(),
                subject: "cluster file".into(),
                actor: "operator".into(),
                details,
            },
        ));
        self.positions = positions(&base);
        self.base = base;
        self.cluster = cluster;
        self.reported = reported;
        ch.jobs.extend(requeued);
        ch.cycle = true;
        Ok(response)
    }
}
