//! The scheduling cycle: fair-share order, quotas, whole-gang preemption and backfill reservations (see the
//! crate docs for the policy).

use crate::{Blocker, Engine, Event, JobId, JobRecord, JobState, Usage, account, exclude, shape_key};
use sovra_domain::{GPU_MILLI, Job};
use sovra_placement::{Decision, Explanation};
use std::collections::BTreeMap;

impl Engine {
    /// GPU milli a job holds or would hold per pool, from a decision.
    pub(crate) fn milli_by_pool(d: &Decision) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for r in &d.replicas {
            *m.entry(r.pool.clone()).or_default() += r.devices.iter().map(|a| u64::from(a.milli)).sum::<u64>();
        }
        m
    }

    /// Per queue: (GPU milli, CPU, memory) held, and GPU milli held per pool.
    pub(crate) fn usage(&self) -> Usage {
        self.held.clone()
    }

    /// DRF dominant share of a queue, divided by its weight.
    pub(crate) fn dominant_share(&self, queue: &str, usage: &Usage) -> f64 {
        let held = usage.get(queue).map(|u| u.0).unwrap_or_default();
        let share = (0..3).map(|i| held[i] as f64 / self.totals[i]).fold(0.0, f64::max);
        share / f64::from(self.queues.get(queue).map_or(1, |q| q.weight.max(1)))
    }

    /// Nodes excluded for a job by its queue's quotas: pools where one more replica would exceed the quota.
    pub(crate) fn quota_mask(&self, job: &Job, usage: &Usage) -> Option<Vec<bool>> {
        let q = self.queues.get(&job.queue)?;
        if q.quota_milli.is_empty() {
            return None;
        }
        let topo = self.state.topology();
        let per_replica = u64::from(job.resources.gpus) * u64::from(job.resources.gpu_milli.min(GPU_MILLI));
        let held = usage.get(&job.queue).map(|u| &u.1);
        let mut mask = vec![false; topo.nodes.len()];
        for (p, pool) in topo.pools.iter().enumerate() {
            if let Some(&limit) = q.quota_milli.get(&pool.id) {
                let used = held.and_then(|h| h.get(&pool.id)).copied().unwrap_or(0);
                if used + per_replica > limit {
                    for &n in &topo.pool_nodes[p] {
                        mask[n as usize] = true;
                    }
                }
            }
        }
        Some(mask)
    }

    /// Whether a decision keeps the job's queue within its quotas (a gang may put several replicas in one pool).
    pub(crate) fn within_quota(&self, job: &Job, d: &Decision, usage: &Usage) -> bool {
        let Some(q) = self.queues.get(&job.queue) else { return true };
        let held = usage.get(&job.queue).map(|u| &u.1);
        Self::milli_by_pool(d).iter().all(|(pool, m)| match q.quota_milli.get(pool) {
            Some(&limit) => held.and_then(|h| h.get(pool)).copied().unwrap_or(0) + m <= limit,
            None => true,
        })
    }

    /// One scheduling cycle; returns what it did.
    ///
    /// When nothing was released since the last cycle, every job that was pending then would fail again (the
    /// cluster only got fuller), so only the jobs submitted since are tried, in rank order, under the standing
    /// reservation — unless they outrank the job holding it. Otherwise a full cycle runs:
    ///
    /// Each step takes the best pending job under the *current* usage — the head of one queue's list (sorted by
    /// priority, then submission), choosing between queues by priority, then DRF share, then submission — so
    /// fair shares move as jobs start within the cycle. A job whose shape already failed in this cycle (same
    /// queue, same requirements) is not tried again until a preemption frees something.
    pub fn schedule(&mut self) -> Vec<Event> {
        if !self.dirty {
            return self.schedule_new();
        }
        self.dirty = false;
        self.untried.clear();
        self.reservation = None;
        let mut events = Vec::new();
        let mut usage = self.usage();
        let mut pending: Vec<&JobRecord> = self.jobs.values().filter(|r| r.state == JobState::Pending).collect();
        pending.sort_by(|a, b| b.job.priority.cmp(&a.job.priority).then(a.seq.cmp(&b.seq)));
        let mut queues: BTreeMap<String, std::collections::VecDeque<JobId>> = BTreeMap::new();
        for r in pending {
            queues.entry(r.job.queue.clone()).or_default().push_back(r.id);
        }
        let mut reserved: Option<(JobId, i32, Vec<bool>)> = None;
        let mut failed: BTreeMap<(String, String), (Option<Explanation>, Vec<Blocker>)> = BTreeMap::new();
        // Per queue: its jobs tried or skipped in this cycle that are still pending (they rank ahead of the rest).
        let mut waiting: BTreeMap<String, u32> = BTreeMap::new();
        while let Some(queue) = queues
            .iter()
            .filter_map(|(q, ids)| ids.front().map(|id| (q, &self.jobs[id])))
            .min_by(|(qa, ra), (qb, rb)| {
                rb.job
                    .priority
                    .cmp(&ra.job.priority)
                    .then(self.dominant_share(qa, &usage).total_cmp(&self.dominant_share(qb, &usage)))
                    .then(ra.seq.cmp(&rb.seq))
            })
            .map(|(q, _)| q.clone())
        {
            let id = queues.get_mut(&queue).and_then(|ids| ids.pop_front()).expect("the chosen queue has a head");
            let behind = queues.get(&queue).map_or(0, |ids| ids.len() as u32);
            let ahead = waiting.get(&queue).copied().unwrap_or(0);
            let position = Blocker::Position { queue: queue.clone(), position: ahead + 1, pending: ahead + 1 + behind };
            let job = self.jobs[&id].job.clone();
            let key = (job.queue.clone(), shape_key(&job));
            if let Some((why, blockers)) = failed.get(&key) {
                let (why, mut blockers) = (why.clone(), blockers.clone());
                blockers.push(position);
                self.set_waiting(id, why, blockers);
                *waiting.entry(queue).or_default() += 1;
                continue;
            }
            let quota = self.quota_mask(&job, &usage);
            let mut mask = quota.clone();
            // Honour a reservation made earlier in this cycle by a job of higher or equal rank.
            if let Some((_, _, r)) = &reserved {
                exclude(&mut mask, r);
            }
            match self.placer.place_excluding(&self.state, &job, mask.as_deref()) {
                Ok(d) if self.within_quota(&job, &d, &usage) => {
                    self.start(id, d, &mut usage, &mut events);
                }
                outcome => {
                    let (explanation, overrun) = match outcome {
                        Ok(d) => (None, Some(d)),
                        Err(e) => (Some(e), None),
                    };
                    if let Some(victims) = self.preemption_for(&job, mask.as_deref()) {
                        for &v in &victims {
                            self.preempt(v, id, job.priority, &mut usage, &mut events);
                        }
                        // Something was freed: shapes that failed may fit now.
                        failed.clear();
                        let d = self
                            .placer
                            .place_excluding(&self.state, &job, mask.as_deref())
                            .expect("preemption_for checked that the job fits after releasing the victims");
                        self.start(id, d, &mut usage, &mut events);
                        continue;
                    }
                    let mut blockers = self.quota_blockers(&job, &usage, overrun.as_ref());
                    if let Some((holder, priority, r)) = &reserved
                        && self.fits_without_reservation(&job, quota.as_deref(), &usage)
                    {
                        blockers.push(self.reservation_blocker(*holder, *priority, r));
                    }
                    failed.insert(key, (explanation.clone(), blockers.clone()));
                    blockers.push(position);
                    self.set_waiting(id, explanation, blockers);
                    *waiting.entry(queue).or_default() += 1;
                    if reserved.is_none()
                        && let Some(nodes) = self.reserve(id, &mut events)
                    {
                        // A reservation changes what later jobs may use: failures seen so far still hold.
                        reserved = Some((id, job.priority, nodes));
                    }
                }
            }
        }
        events
    }

    /// The incremental cycle: only jobs submitted since the last cycle (see [`Engine::schedule`]).
    fn schedule_new(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        let mut ids = std::mem::take(&mut self.untried);
        ids.retain(|id| self.jobs.get(id).is_some_and(|r| r.state == JobState::Pending));
        if ids.is_empty() {
            return events;
        }
        ids.sort_by(|a, b| {
            let (ra, rb) = (&self.jobs[a], &self.jobs[b]);
            rb.job.priority.cmp(&ra.job.priority).then(ra.seq.cmp(&rb.seq))
        });
        // Each queue's pending jobs in rank order (for positions); ids are tried in that same order, so the
        // queue's jobs started earlier in this cycle all ranked ahead.
        let mut ranks: BTreeMap<String, Vec<(std::cmp::Reverse<i32>, u64)>> = BTreeMap::new();
        for r in self.jobs.values().filter(|r| r.state == JobState::Pending) {
            ranks.entry(r.job.queue.clone()).or_default().push((std::cmp::Reverse(r.job.priority), r.seq));
        }
        ranks.values_mut().for_each(|v| v.sort_unstable());
        let mut started: BTreeMap<String, u32> = BTreeMap::new();
        let mut usage = self.usage();
        for id in ids {
            let job = self.jobs[&id].job.clone();
            let seq = self.jobs[&id].seq;
            let outranks = |r: &Option<(JobId, i32, u64, Vec<bool>)>| {
                r.as_ref()
                    .is_none_or(|(_, p, s, _)| (job.priority, std::cmp::Reverse(seq)) > (*p, std::cmp::Reverse(*s)))
            };
            let quota = self.quota_mask(&job, &usage);
            let mut mask = quota.clone();
            let honoured = !outranks(&self.reservation);
            if honoured && let Some((_, _, _, r)) = &self.reservation {
                exclude(&mut mask, r);
            }
            match self.placer.place_excluding(&self.state, &job, mask.as_deref()) {
                Ok(d) if self.within_quota(&job, &d, &usage) => {
                    self.start(id, d, &mut usage, &mut events);
                    *started.entry(job.queue.clone()).or_default() += 1;
                }
                outcome => {
                    let (explanation, overrun) = match outcome {
                        Ok(d) => (None, Some(d)),
                        Err(e) => (Some(e), None),
                    };
                    if self.preemption_for(&job, mask.as_deref()).is_some() {
                        // Preemption reshuffles what runs: let a full cycle decide, in rank order.
                        self.dirty = true;
                        self.jobs.get_mut(&id).expect("pending job exists").explanation = explanation;
                        let mut rest = self.schedule();
                        events.append(&mut rest);
                        return events;
                    }
                    let mut blockers = self.quota_blockers(&job, &usage, overrun.as_ref());
                    if honoured
                        && let Some((holder, priority, _, r)) = self.reservation.clone()
                        && self.fits_without_reservation(&job, quota.as_deref(), &usage)
                    {
                        blockers.push(self.reservation_blocker(holder, priority, &r));
                    }
                    let of_queue = ranks.get(&job.queue).map_or(&[][..], Vec::as_slice);
                    let gone = started.get(&job.queue).copied().unwrap_or(0);
                    let ahead = of_queue.partition_point(|&k| k < (std::cmp::Reverse(job.priority), seq)) as u32;
                    let ahead = ahead.saturating_sub(gone);
                    let pending = (of_queue.len() as u32).saturating_sub(gone).max(ahead + 1);
                    blockers.push(Blocker::Position { queue: job.queue.clone(), position: ahead + 1, pending });
                    self.set_waiting(id, explanation, blockers);
                    if outranks(&self.reservation) {
                        self.reserve(id, &mut events);
                    }
                }
            }
        }
        events
    }

    /// Gives job `id` the standing reservation (see [`Engine::reservation_for`]), recording the event; returns the
    /// reserved nodes, or `None` when the job could not fit even then.
    fn reserve(&mut self, id: JobId, events: &mut Vec<Event>) -> Option<Vec<bool>> {
        let job = self.jobs[&id].job.clone();
        let nodes = self.reservation_for(&job)?;
        let topo = self.state.topology();
        let names = nodes.iter().enumerate().filter(|(_, r)| **r).map(|(i, _)| topo.nodes[i].name.clone()).collect();
        events.push(Event::Reserved { job: id, nodes: names });
        self.reservation = Some((id, job.priority, self.jobs[&id].seq, nodes.clone()));
        Some(nodes)
    }

    /// Starts a pending job on `d` (decided on the current state): applies it, charges its queue, records it.
    fn start(&mut self, id: JobId, d: Decision, usage: &mut Usage, events: &mut Vec<Event>) {
        self.state.apply(&d).expect("the core placed it on this state");
        let rec = self.jobs.get_mut(&id).expect("pending job exists");
        account(usage, &rec.job.queue, &d, 1);
        account(&mut self.held, &rec.job.queue, &d, 1);
        rec.placement = Some(d);
        rec.state = JobState::Placed;
        rec.attempt += 1;
        rec.explanation = None;
        rec.blockers.clear();
        events.push(Event::Placed { job: id });
    }

    /// Running gangs of lower priority whose release makes `job` fit: greedy release (lowest priority, most
    /// recent first), then spare every victim not needed. `None` when no set of them makes it fit.
    fn preemption_for(&mut self, job: &Job, mask: Option<&[bool]>) -> Option<Vec<JobId>> {
        let mut candidates: Vec<&JobRecord> =
            self.jobs.values().filter(|r| r.state.holds_resources() && r.job.priority < job.priority).collect();
        if candidates.is_empty() {
            return None;
        }
        candidates.sort_by(|a, b| a.job.priority.cmp(&b.job.priority).then(b.seq.cmp(&a.seq)));
        let candidates: Vec<(JobId, Decision)> =
            candidates.iter().map(|r| (r.id, r.placement.clone().expect("holds resources"))).collect();
        let mut scratch = self.state.clone();
        let mut chosen = Vec::new();
        let mut fits = false;
        for (id, d) in &candidates {
            scratch.release(d);
            chosen.push((*id, d.clone()));
            if self.placer.place_excluding(&scratch, job, mask).is_ok() {
                fits = true;
                break;
            }
        }
        if !fits {
            return None;
        }
        // Spare victims whose release was not needed: put each back and keep it if the job still fits.
        let mut needed = Vec::new();
        for (id, d) in chosen.into_iter().rev() {
            let mut trial = scratch.clone();
            if trial.apply(&d).is_ok() && self.placer.place_excluding(&trial, job, mask).is_ok() {
                scratch = trial;
            } else {
                needed.push(id);
            }
        }
        needed.sort_unstable();
        Some(needed)
    }

    /// The nodes `job` would use if every running job of its priority or lower had finished: its reservation.
    fn reservation_for(&mut self, job: &Job) -> Option<Vec<bool>> {
        let mut scratch = self.state.clone();
        for r in self.jobs.values().filter(|r| r.state.holds_resources() && r.job.priority <= job.priority) {
            if let Some(d) = &r.placement {
                scratch.release(d);
            }
        }
        let d = self.placer.place(&scratch, job).ok()?;
        let mut mask = vec![false; self.state.topology().nodes.len()];
        for r in &d.replicas {
            mask[r.node as usize] = true;
        }
        Some(mask)
    }
}
