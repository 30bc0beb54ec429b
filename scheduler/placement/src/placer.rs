//! The placement pipeline: pool filters → node filters → scorers → choose → device choice, per replica, with gangs
//! placed atomically on a tentative copy of the state.

use crate::decision::{Decision, DeviceAssignment, FilterKind, Outcome, ReplicaPlacement, ScoreBreakdown, Verdict};
use crate::fgd::{FragMemo, Shape, Workload};
use crate::filter::{JobNeeds, Reason, check_node, check_pool};
use crate::score;
use crate::snapshot::{ClusterState, NodeIdx, Topology};

mod adaptive;
mod explain;
mod fgd_score;
use explain::refusal;
use sovra_domain::{GPU_MILLI, Job, NvlinkWish, PolicySpec, ScorerKind, WorkloadShare};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Where FGD's target workload comes from.
#[derive(Debug, Clone)]
enum Target {
    /// Declared in configuration.
    Declared(Workload),
    /// Learned from the jobs the caller reported admitted ([`Placer::observe_admitted`]): `counts` of replica
    /// shapes (weighted by replicas) over `seen` jobs; `mix` is the copy of `counts` taken at the last re-derivation
    /// (`version`), the one FGD scores with — so the mix is a function of the admitted jobs only, never of when or
    /// how often `place` was called between them.
    Learned { counts: BTreeMap<Shape, u64>, seen: u64, version: u64, mix: BTreeMap<Shape, u64> },
}

/// Coverage of the learned or declared mix kept by FGD (the simulator's `podPopularityThreshold` of 95%).
const TYPICAL_COVERAGE: f64 = 0.95;

/// Multi-GPU share of the admitted GPU demand up to which `adaptive-first-fit` pulls whole-GPU replicas fully.
pub const ADAPTIVE_LOW: f64 = 0.08;
/// Multi-GPU share of the admitted GPU demand from which `adaptive-first-fit` leaves whole-GPU replicas to the
/// other scorers.
pub const ADAPTIVE_HIGH: f64 = 0.18;

/// The seed every Sovra component uses when none is configured: the scheduler service, `sovra place`, scenarios
/// of `sovra replay`/`sovra plan`, and the Kubernetes extender. One value everywhere, so that the same snapshot and
/// job get the same node whichever component decides.
pub const DEFAULT_SEED: u64 = 42;

/// The placement engine: a policy, a seed, and memos that make repeated decisions fast.
///
/// `place` is a pure function of (snapshot, job, seed) and, for FGD with a learned mix, of the jobs seen before
/// (docs/design.md invariant 5: same snapshot, admitted jobs, job order and seed → same decisions). The memos never change a result:
/// they key on the exact inputs of what they store.
#[derive(Debug)]
pub struct Placer {
    policy: PolicySpec,
    seed: u64,
    target: Target,
    /// The fragmentation memo, keyed by (topology generation id, target mix version).
    memo: Option<(u64, u64, FragMemo)>,
    uses_fgd: bool,
    /// Residency rejection words per (class, zone) of one topology (keyed by its generation id).
    zone_reasons: (u64, BTreeMap<(String, usize), String>),
    /// FGD scores per (replica shape, node), valid while the node's epoch is unchanged. Cleared with the memo.
    fgd_cache: FgdCache,
    /// Stop looking once this many feasible nodes were scored for a replica (0: look at every candidate).
    max_feasible: u32,
    /// The tie-break rank of each node when the caller gave the order ([`Placer::with_tie_order`]).
    tie_ranks: Option<Arc<[u64]>>,
    /// GPU milli asked by the admitted jobs ([`Placer::observe_admitted`]): (by multi-GPU replicas, by all).
    demand: (u64, u64),
    /// Where model versions are available for inference (the `model` filter's fact; empty: none anywhere).
    models: std::sync::Arc<sovra_domain::ModelAvailability>,
}

/// Replica shapes as FGD scores them: (cpu, milli, gpus, models, NVLink wish).
type ShapeKey = (u64, u32, u32, Vec<String>, NvlinkWish);

/// FGD's score of a node depends only on the node's state (its epoch) and the replica's shape, so it is cached
/// per (shape, node) and reused until the node changes — in a fill run only one node changes per decision.
#[derive(Debug, Default)]
struct FgdCache {
    shapes: rustc_hash::FxHashMap<ShapeKey, u32>,
    entries: Vec<Vec<CacheEntry>>,
}

#[derive(Debug, Clone, Copy, Default)]
struct CacheEntry {
    /// Node epoch the entry is valid for; 0 = empty (epochs start at 1).
    epoch: u64,
    score: u32,
    /// Chosen device, `u16::MAX` for none.
    device: u16,
}

/// At most this many cache entries (shapes × nodes): 32 MiB.
const FGD_CACHE_MAX_ENTRIES: usize = 2 << 20;

impl FgdCache {
    fn shape(&mut self, job: &Job, nodes: usize) -> Option<usize> {
        let r = &job.resources;
        let key: ShapeKey = (r.cpu_milli, r.gpu_milli, r.gpus, r.gpu_models.clone(), job.nvlink);
        if let Some(&id) = self.shapes.get(&key) {
            return Some(id as usize);
        }
        if (self.entries.len() + 1) * nodes > FGD_CACHE_MAX_ENTRIES {
            return None;
        }
        let id = self.entries.len();
        self.shapes.insert(key, id as u32);
        self.entries.push(vec![CacheEntry::default(); nodes]);
        Some(id)
    }
}

/// The scorers of one job: weights by scorer index, the scorers with a weight, whether ties go to a per-job random
/// order, and the job's FGD shape id when FGD scores.
struct Scoring {
    weights: [u32; SCORERS],
    active: Vec<(usize, ScorerKind)>,
    random_ties: bool,
    shape: Option<usize>,
}

/// Per-job facts computed once: permitted pools and what rejected the others.
struct Plan {
    needs: JobNeeds,
    pools: Vec<u32>,
    /// (filter, pool index) of each rejected pool; worded only when explaining.
    pool_rejections: Vec<(FilterKind, u32)>,
    job_hash: u64,
    /// Nodes the caller excluded (quotas, reservations).
    excluded: Option<Vec<bool>>,
    /// The one node the caller allows ([`Placer::place_on`]), if any.
    only: Option<NodeIdx>,
}

/// A feasible node and its score.
#[derive(Clone, Copy)]
struct Candidate {
    node: NodeIdx,
    total: u64,
    rank: u64,
    parts: [u32; SCORERS],
    fgd_device: Option<u16>,
}

/// Number of scorers.
const SCORERS: usize = ScorerKind::ALL.len();

impl Placer {
    /// A placer with `policy` and `seed` (callers without a configured seed use [`DEFAULT_SEED`]). FGD (if in the
    /// policy) learns its target mix from the jobs reported to [`Placer::observe_admitted`] unless
    /// [`Placer::with_target_workload`] declares one.
    pub fn new(policy: PolicySpec, seed: u64) -> Placer {
        let uses_fgd = policy.weight(ScorerKind::Fgd) > 0;
        Placer {
            policy,
            seed,
            target: Target::Learned { counts: BTreeMap::new(), seen: 0, version: 0, mix: BTreeMap::new() },
            memo: None,
            uses_fgd,
            zone_reasons: (0, BTreeMap::new()),
            fgd_cache: FgdCache::default(),
            max_feasible: 0,
            tie_ranks: None,
            demand: (0, 0),
            models: std::sync::Arc::default(),
        }
    }

    /// Sets the model availability fact the `model` filter reads for jobs naming a model (`job.model`): a pool is
    /// permitted only in a zone whose inference data zone holds that version. Until it is set no version is
    /// available anywhere, so model-bound jobs wait (fail closed).
    pub fn set_models(&mut self, models: std::sync::Arc<sovra_domain::ModelAvailability>) {
        self.models = models;
    }

    /// The model availability fact in use.
    pub fn models(&self) -> &sovra_domain::ModelAvailability {
        &self.models
    }

    /// Declares FGD's target workload (e.g. `scheduling.fgd_target_workload`); an empty list keeps learning.
    pub fn with_target_workload(mut self, shares: &[WorkloadShare]) -> Placer {
        if !shares.is_empty() {
            let counts: BTreeMap<Shape, u64> = shares
                .iter()
                .map(|s| (Shape::of(&s.resources), u64::from(s.weight)))
                .fold(BTreeMap::new(), |mut m, (k, v)| {
                    *m.entry(k).or_default() += v;
                    m
                });
            self.target = Target::Declared(Workload::from_counts(&counts, 1.0));
            self.memo = None;
        }
        self
    }

    /// Uses a ready-made FGD workload (the simulator hands FGD the trace's typical mix this way).
    pub fn with_workload(mut self, workload: Workload) -> Placer {
        self.target = Target::Declared(workload);
        self.memo = None;
        self
    }

    /// Whether `random` has the largest weight of the policy (then ties and shares are decided at random).
    fn random_leads(&self) -> bool {
        let w = self.policy.weight(ScorerKind::Random);
        w > 0 && self.policy.scorers.iter().all(|(k, x)| *k == ScorerKind::Random || *x < w)
    }

    /// The policy.
    pub fn policy(&self) -> &PolicySpec {
        &self.policy
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The generation id ([`Topology::generation`]) of the topology the placer's FGD memo was built for, or `None`
    /// before FGD has scored anything. Lets callers (and tests) see that the memo follows the topology they pass.
    pub fn memo_generation(&self) -> Option<u64> {
        self.memo.as_ref().map(|(g, _, _)| *g)
    }

    /// FGD's current target workload, if FGD is used and a mix is known.
    pub fn workload(&self) -> Option<Workload> {
        match &self.target {
            Target::Declared(w) => Some(w.clone()),
            Target::Learned { mix, .. } if !mix.is_empty() => Some(Workload::from_counts(mix, TYPICAL_COVERAGE)),
            Target::Learned { .. } => None,
        }
    }

    /// Reports that the caller *admitted* `job` (accepted it for scheduling: the service on submission, the
    /// simulator on arrival, the extender on bind, the CLI once per job). FGD with a learned target mix learns the
    /// job's replica shape from it, and `adaptive-first-fit` its GPU demand. Call it once per admitted job, never per placement
    /// attempt: [`Placer::place`] and [`Placer::score_nodes`] observe nothing, so two callers that retry a job a
    /// different number of times keep the same mix and decide alike.
    ///
    /// The mix is re-derived after the 1st, 2nd, 4th, 8th, … observation and then every 1024th: early on the mix
    /// changes fast, later it has converged, and each re-derivation empties the fragmentation memo and score cache.
    pub fn observe_admitted(&mut self, job: &Job) {
        let r = &job.resources;
        let milli = u64::from(job.replicas.max(1)) * u64::from(r.gpus) * u64::from(r.gpu_milli.min(GPU_MILLI));
        self.demand.1 = self.demand.1.saturating_add(milli);
        if r.gpus >= 2 {
            self.demand.0 = self.demand.0.saturating_add(milli);
        }
        if !self.uses_fgd {
            return;
        }
        if let Target::Learned { counts, seen, version, mix } = &mut self.target {
            *counts.entry(Shape::of(&job.resources)).or_default() += u64::from(job.replicas.max(1));
            *seen += 1;
            if seen.is_power_of_two() || seen.is_multiple_of(1024) {
                *version += 1;
                mix.clone_from(counts);
            }
        }
    }

    fn memo_for(&mut self, topo: &Arc<Topology>) -> &mut FragMemo {
        let key = topo.generation();
        let version = match &self.target {
            Target::Declared(_) => 0,
            Target::Learned { version, .. } => *version,
        };
        let stale = !matches!(&self.memo, Some((k, v, _)) if *k == key && *v == version);
        if stale {
            let workload = self.workload().unwrap_or_default();
            self.memo = Some((key, version, FragMemo::new(&workload, topo)));
            self.fgd_cache = FgdCache::default();
        }
        &mut self.memo.as_mut().expect("memo was just set").2
    }

    /// Places every replica of `job` on `state`, or explains why not. Nothing is changed: apply the decision with
    /// [`ClusterState::apply`].
    pub fn place(&mut self, state: &ClusterState, job: &Job) -> Outcome {
        self.place_excluding(state, job, None)
    }

    /// [`Placer::place`] as a [`Verdict`]: fits, not now, or never — the form the engine, the simulator, the
    /// extender and the CLI act on.
    pub fn verdict(&mut self, state: &ClusterState, job: &Job) -> Verdict {
        Verdict::of(self.place(state, job))
    }

    /// [`Placer::place`], never using the nodes whose entry in `excluded` (indexed by node) is true — for quotas
    /// and reservations decided by the caller. Excluded nodes count as rejected by no filter in explanations.
    pub fn place_excluding(&mut self, state: &ClusterState, job: &Job, excluded: Option<&[bool]>) -> Outcome {
        self.place_with(state, job, excluded, None)
    }

    /// [`Placer::place`] on `node` only: the placement (devices included) the core makes there, or why not. The
    /// Kubernetes extender accounts a pod bound to a node with it, so it holds the devices the scheduler service
    /// would have given it. Costs the node's checks, not a scan of the cluster.
    pub fn place_on(&mut self, state: &ClusterState, job: &Job, node: NodeIdx) -> Outcome {
        self.place_with(state, job, None, Some(node))
    }

    fn place_with(
        &mut self,
        state: &ClusterState,
        job: &Job,
        excluded: Option<&[bool]>,
        only: Option<NodeIdx>,
    ) -> Outcome {
        let topo = state.topology().clone();
        let Some(class) = topo.class(&job.residency) else {
            return Err(refusal(job, &topo, format!("unknown residency class {:?}", job.residency)));
        };
        let mut plan = self.plan(&topo, job, class);
        plan.excluded = excluded.map(<[bool]>::to_vec);
        plan.only = only;
        let mut counts = [0u32; Reason::ALL.len()];
        if job.replicas <= 1 {
            return match self.place_replica(state, job, &plan, 0, &mut counts) {
                Some(r) => Ok(Decision { job: job.name.clone(), replicas: vec![r] }),
                None => Err(self.explain(state, job, &plan, &counts, 0)),
            };
        }
        // A gang: place replicas one at a time on a tentative copy; on the first failure drop the copy, so no
        // partial gang ever holds resources (docs/design.md invariant 4).
        let mut tentative = state.clone();
        // Job files bound replicas (`sovra_domain::limits::MAX_REPLICAS`); a job built in code is not checked, so
        // the vector grows as replicas are placed rather than being sized from the request up front.
        let mut replicas = Vec::with_capacity((job.replicas as usize).min(1024));
        for r in 0..job.replicas {
            counts = [0; Reason::ALL.len()];
            let Some(p) = self.place_replica(&tentative, job, &plan, r, &mut counts) else {
                return Err(self.explain(state, job, &plan, &counts, r));
            };
            let one = Decision { job: job.name.clone(), replicas: vec![p.clone()] };
            tentative.apply(&one).expect("the filters admitted this replica, so it fits the tentative state");
            replicas.push(p);
        }
        Ok(Decision { job: job.name.clone(), replicas })
    }

    /// Scores `nodes` for one replica of `job` on `state` as [`Placer::place`] ranks them, without choosing: for
    /// each node, `None` when a filter rejects it (or it does not exist), else `Some((total, rank))` — the weighted
    /// score total (higher wins) and the tie-break rank (lower wins on equal totals). The Kubernetes extender's
    /// prioritize verb ranks the nodes kube-scheduler proposes with it. Like `place`,
    /// it observes nothing ([`Placer::observe_admitted`]).
    pub fn score_nodes(&mut self, state: &ClusterState, job: &Job, nodes: &[NodeIdx]) -> Vec<Option<(u64, u64)>> {
        let topo = state.topology().clone();
        let Some(class) = topo.class(&job.residency) else { return vec![None; nodes.len()] };
        let plan = self.plan(&topo, job, class);
        let scoring = self.scoring(&topo, job);
        let mut permitted = vec![false; topo.pools.len()];
        for &p in &plan.pools {
            permitted[p as usize] = true;
        }
        nodes
            .iter()
            .map(|&node| {
                let info = topo.nodes.get(node as usize)?;
                if !permitted[info.pool as usize] || check_node(state, node, &plan.needs).is_err() {
                    return None;
                }
                let c = self.score_node(state, &topo, node, &plan, 0, &scoring);
                Some((c.total, c.rank))
            })
            .collect()
    }

    fn plan(&self, topo: &Topology, job: &Job, class: &sovra_domain::ResidencyClass) -> Plan {
        let mut pools = Vec::new();
        let mut pool_rejections = Vec::new();
        let mut model_ok: BTreeMap<usize, bool> = BTreeMap::new();
        for (i, pool) in topo.pools.iter().enumerate() {
            match check_pool(pool, topo, job, class) {
                None if job.model.is_some()
                    && !*model_ok.entry(pool.zone).or_insert_with(|| {
                        crate::filter::model_reason(&topo.zones[pool.zone], job, class, &self.models, topo).is_none()
                    }) =>
                {
                    pool_rejections.push((FilterKind::Model, i as u32))
                }
                None => pools.push(i as u32),
                Some(filter) => pool_rejections.push((filter, i as u32)),
            }
        }
        let job_hash = score::job_hash(&job.name);
        Plan { needs: JobNeeds::of(job, topo), pools, pool_rejections, job_hash, excluded: None, only: None }
    }

    fn place_replica(
        &mut self,
        state: &ClusterState,
        job: &Job,
        plan: &Plan,
        replica: u32,
        counts: &mut [u32; Reason::ALL.len()],
    ) -> Option<ReplicaPlacement> {
        let topo = state.topology().clone();
        let scoring = self.scoring(&topo, job);
        let mut best: Option<Candidate> = None;
        let mut feasible = 0u32;
        let single: [NodeIdx; 1];
        let lists: Vec<&[NodeIdx]> = match plan.only {
            Some(n) => {
                single = [n];
                let permitted = topo.nodes.get(n as usize).is_some_and(|info| plan.pools.contains(&info.pool));
                if permitted { vec![&single[..]] } else { Vec::new() }
            }
            None => plan.pools.iter().map(|&p| &topo.pool_nodes[p as usize][..]).collect(),
        };
        let cap = if self.max_feasible == 0 { u32::MAX } else { self.max_feasible };
        'scan: for nodes in lists {
            for &node in nodes {
                if plan.excluded.as_ref().is_some_and(|x| x.get(node as usize).copied().unwrap_or(false)) {
                    continue;
                }
                if let Err(reason) = check_node(state, node, &plan.needs) {
                    counts[reason as usize] += 1;
                    continue;
                }
                feasible += 1;
                let c = self.score_node(state, &topo, node, plan, replica, &scoring);
                if best.is_none_or(|b| (c.total, std::cmp::Reverse(c.rank)) > (b.total, std::cmp::Reverse(b.rank))) {
                    best = Some(c);
                }
                if feasible >= cap {
                    break 'scan;
                }
            }
        }
        let best = best?;
        let devices =
            self.choose_devices(state, &topo, best.node, &plan.needs, best.fgd_device, plan.job_hash, replica);
        let info = &topo.nodes[best.node as usize];
        let pool = &topo.pools[info.pool as usize];
        Some(ReplicaPlacement {
            replica,
            node: best.node,
            node_name: info.name.clone(),
            pool: pool.id.clone(),
            zone: topo.zones[pool.zone].id.clone(),
            devices,
            cpu_milli: job.resources.cpu_milli,
            memory_mib: job.resources.memory_mib,
            scores: ScoreBreakdown {
                parts: ScorerKind::ALL
                    .iter()
                    .zip(scoring.weights)
                    .zip(best.parts)
                    .filter(|((_, w), _)| *w > 0)
                    .map(|((k, w), s)| (*k, w, s))
                    .collect(),
                total: best.total,
            },
            feasible_nodes: feasible,
        })
    }

    /// How a job's nodes are scored, computed once per replica (or per `score_nodes` call) and read for every node.
    fn scoring(&mut self, topo: &Arc<Topology>, job: &Job) -> Scoring {
        let mut weights: [u32; SCORERS] = ScorerKind::ALL.map(|k| self.policy.weight(k));
        let adaptive = ScorerKind::ALL.iter().position(|&k| k == ScorerKind::AdaptiveFirstFit).unwrap_or(0);
        if weights[adaptive] > 0 {
            // Weights in hundredths, so that the adaptive scorer's factor keeps every other scorer's weight exact.
            let percent = self.adaptive_first_fit_percent(job);
            for (i, w) in weights.iter_mut().enumerate() {
                *w = w.saturating_mul(if i == adaptive { percent } else { 100 });
            }
        }
        let active = ScorerKind::ALL.iter().copied().enumerate().filter(|(i, _)| weights[*i] > 0).collect();
        let random_ties = self.random_leads();
        let shape = if weights[1] > 0 {
            self.memo_for(topo);
            self.fgd_cache.shape(job, topo.nodes.len())
        } else {
            None
        };
        Scoring { weights, active, random_ties, shape }
    }

    /// Scores one feasible node.
    fn score_node(
        &mut self,
        state: &ClusterState,
        topo: &Arc<Topology>,
        node: NodeIdx,
        plan: &Plan,
        replica: u32,
        scoring: &Scoring,
    ) -> Candidate {
        let Scoring { weights, active, random_ties, shape } = scoring;
        let (random_ties, shape) = (*random_ties, *shape);
        let s = state.summary(node);
        let needs = &plan.needs;
        let mut parts = [0u32; SCORERS];
        let mut fgd_device = None;
        let mut total = 0u64;
        for &(i, kind) in active {
            let v = match kind {
                ScorerKind::BestFit => score::best_fit(s, needs, topo),
                ScorerKind::Fgd => {
                    let (v, d) = self.fgd_cached(state, topo, node, needs, plan.job_hash, replica, shape);
                    fgd_device = d;
                    v
                }
                ScorerKind::Random => score::random(self.seed, plan.job_hash, replica, node),
                ScorerKind::Spread => score::spread(s, needs, topo, node),
                ScorerKind::Topology => score::topology(s, needs),
                ScorerKind::DotProduct => score::dot_product(s, needs, topo),
                ScorerKind::GpuPacking => score::gpu_packing(state, node, needs, topo),
                ScorerKind::GpuClustering => score::gpu_clustering(state, node, needs, topo),
                ScorerKind::FirstFit | ScorerKind::AdaptiveFirstFit => score::first_fit_of_rank(self.tie_rank(node)),
            };
            parts[i] = v;
            total += u64::from(v) * u64::from(weights[i]);
        }
        // Ties go to the fixed seeded node order — except when `random` leads the policy: then to a per-job random
        // order, so that the choice is uniform over the feasible nodes (a fixed order would favour low-rank nodes,
        // a hidden first-fit).
        let rank =
            if random_ties { score::random_rank(self.seed, plan.job_hash, replica, node) } else { self.tie_rank(node) };
        Candidate { node, total, rank, parts, fgd_device }
    }

    /// The devices a replica takes on its node.
    ///
    /// - Whole GPUs: with an NVLink wish and 2+ GPUs, the fullest NVLink island that can hold them all (best fit
    ///   on islands, ties to the lower device index), its lowest-index free devices; otherwise the lowest-index
    ///   fully free devices (FGD protocol §4).
    /// - A share of one GPU: FGD's pick when FGD scores; a seeded random pick when `random` is the heaviest scorer;
    ///   otherwise the device with the least free milli that fits (ties to the lowest index).
    #[allow(clippy::too_many_arguments)]
    fn choose_devices(
        &self,
        state: &ClusterState,
        topo: &Topology,
        node: NodeIdx,
        needs: &JobNeeds,
        fgd_device: Option<u16>,
        job_hash: u64,
        replica: u32,
    ) -> Vec<DeviceAssignment> {
        let range = topo.device_range(node);
        let start = range.start;
        let fits = |d: usize| state.device_free(d) >= needs.milli && needs.model_ok(topo.devices[d].model);
        if needs.gpus == 0 {
            return Vec::new();
        }
        if needs.is_sharing() {
            let pick = fgd_device.map(|i| start + i as usize).or_else(|| {
                let candidates = range.clone().filter(|&d| fits(d));
                if self.random_leads() {
                    candidates.min_by_key(|&d| score::mix(self.seed ^ job_hash ^ (u64::from(replica) << 32) ^ d as u64))
                } else {
                    candidates.min_by_key(|&d| (state.device_free(d), d))
                }
            });
            return pick
                .map(|d| vec![DeviceAssignment { device: (d - start) as u16, milli: needs.milli }])
                .unwrap_or_default();
        }
        let free: Vec<usize> = range.filter(|&d| u32::from(state.device_free(d)) == GPU_MILLI && fits(d)).collect();
        let k = needs.gpus as usize;
        let mut chosen: Vec<usize> = Vec::new();
        if k >= 2 && needs.nvlink != NvlinkWish::None {
            let mut islands: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
            for &d in &free {
                islands.entry(topo.devices[d].island).or_default().push(d);
            }
            if let Some(best) = islands.values().filter(|v| v.len() >= k).min_by_key(|v| (v.len(), v[0])) {
                chosen = best[..k].to_vec();
            }
        }
        if chosen.is_empty() {
            chosen = free.into_iter().take(k).collect();
        }
        chosen.into_iter().map(|d| DeviceAssignment { device: (d - start) as u16, milli: GPU_MILLI as u16 }).collect()
    }
}

/// Places one job with a fresh [`Placer`]: the pure function `(snapshot, job, policy, seed) → outcome`.
pub fn place(state: &ClusterState, job: &Job, policy: &PolicySpec, seed: u64) -> Outcome {
    Placer::new(policy.clone(), seed).place(state, job)
}

#[cfg(test)]
mod tests;
