//! What the cycle records besides placements: the [`Blocker`]s of a job that stays pending and the
//! [`PreemptionRecord`] of a preempted one (see `explain.rs` for the types and their wording).

use crate::{Blocker, Engine, Event, JobId, JobState, MAX_PREEMPTION_RECORDS, PreemptionRecord, Usage, account};
use sovra_domain::{GPU_MILLI, Job};
use sovra_placement::{Decision, Explanation};

impl Engine {
    /// Records why a job stays pending: the core's explanation and the cycle's blockers.
    pub(crate) fn set_waiting(&mut self, id: JobId, explanation: Option<Explanation>, blockers: Vec<Blocker>) {
        if let Some(r) = self.jobs.get_mut(&id) {
            r.explanation = explanation;
            r.blockers = blockers;
        }
    }

    /// The quotas of the job's queue that stand in its way, in pools the job may use (its kind is the pool's
    /// purpose and the pool's zone satisfies its residency class): pools closed to it because one more replica
    /// would exceed the quota, and — when `overrun` is a placement found that would take the queue over its quota
    /// — the pools it would overrun.
    pub(crate) fn quota_blockers(&self, job: &Job, usage: &Usage, overrun: Option<&Decision>) -> Vec<Blocker> {
        let Some(q) = self.queues.get(&job.queue) else { return Vec::new() };
        if q.quota_milli.is_empty() {
            return Vec::new();
        }
        let topo = self.state.topology();
        let class = topo.class(&job.residency);
        let per_replica = u64::from(job.resources.gpus) * u64::from(job.resources.gpu_milli.min(GPU_MILLI));
        let held = |pool: &str| usage.get(&job.queue).and_then(|u| u.1.get(pool)).copied().unwrap_or(0);
        let blocker = |pool: &str, quota_milli: u64, needs_milli: u64| Blocker::Quota {
            queue: job.queue.clone(),
            pool: pool.to_string(),
            held_milli: held(pool),
            quota_milli,
            needs_milli,
        };
        let mut out = Vec::new();
        for pool in &topo.pools {
            let Some(&limit) = q.quota_milli.get(&pool.id) else { continue };
            let permitted = pool.purpose == job.kind
                && class.is_some_and(|c| topo.zones.get(pool.zone).is_some_and(|z| sovra_domain::satisfies(z, c)));
            if permitted && held(&pool.id) + per_replica > limit {
                out.push(blocker(&pool.id, limit, per_replica));
            }
        }
        for (pool, m) in overrun.map(Self::milli_by_pool).unwrap_or_default() {
            let named = out.iter().any(|b| matches!(b, Blocker::Quota { pool: p, .. } if *p == pool));
            if let Some(&limit) = q.quota_milli.get(&pool)
                && held(&pool) + m > limit
                && !named
            {
                out.push(blocker(&pool, limit, m));
            }
        }
        out
    }

    /// Whether the job would be placed now, within its quotas, were the reservation's nodes not excluded (only its
    /// quota mask): then the reservation is what keeps it waiting.
    pub(crate) fn fits_without_reservation(&mut self, job: &Job, quota: Option<&[bool]>, usage: &Usage) -> bool {
        match self.placer.place_excluding(&self.state, job, quota) {
            Ok(d) => self.within_quota(job, &d, usage),
            Err(_) => false,
        }
    }

    /// The blocker for a reservation held by `holder` (of `priority`) on the nodes of `mask`.
    pub(crate) fn reservation_blocker(&self, holder: JobId, priority: i32, mask: &[bool]) -> Blocker {
        let topo = self.state.topology();
        let nodes = mask
            .iter()
            .enumerate()
            .filter(|(_, r)| **r)
            .filter_map(|(i, _)| topo.nodes.get(i).map(|n| n.name.clone()))
            .collect();
        Blocker::Reservation { job: holder, priority, nodes }
    }

    /// Preempts `victim` (whole) for job `by` of priority `by_priority`: releases it, uncharges its queue, requeues
    /// it, keeps the record on it (the last [`MAX_PREEMPTION_RECORDS`]) and reports the event.
    pub(crate) fn preempt(
        &mut self,
        victim: JobId,
        by: JobId,
        by_priority: i32,
        usage: &mut Usage,
        events: &mut Vec<Event>,
    ) {
        let Some(r) = self.jobs.get(&victim) else { return };
        let (queue, victim_priority) = (r.job.queue.clone(), r.job.priority);
        let mut record = PreemptionRecord {
            victim,
            by,
            victim_priority,
            by_priority,
            at_ms: self.now_ms,
            freed_milli: 0,
            freed_devices: 0,
            nodes: Vec::new(),
        };
        if let Some(d) = r.placement.clone() {
            account(usage, &queue, &d, -1);
            for p in &d.replicas {
                record.freed_milli += p.devices.iter().map(|a| u64::from(a.milli)).sum::<u64>();
                record.freed_devices += p.devices.len() as u32;
                if !record.nodes.contains(&p.node_name) {
                    record.nodes.push(p.node_name.clone());
                }
            }
        }
        self.release(victim);
        if let Some(r) = self.jobs.get_mut(&victim) {
            r.state = JobState::Pending;
            r.preemptions += 1;
            r.preemption_records.push(record.clone());
            let excess = r.preemption_records.len().saturating_sub(MAX_PREEMPTION_RECORDS);
            r.preemption_records.drain(..excess);
        }
        events.push(Event::Preempted { job: victim, by, record });
    }
}
