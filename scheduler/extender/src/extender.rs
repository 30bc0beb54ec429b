//! The four verbs — filter, prioritize, preempt, bind — on top of the placement core. Pure functions of the request
//! and a cache snapshot, except bind, which calls the Kubernetes API.

use crate::cache::{Cache, PodRecord, Snapshot};
use crate::pod::{PodRequest, pod_key, pod_request};
use crate::wire::{
    ExtenderArgs, ExtenderBindingArgs, ExtenderBindingResult, ExtenderFilterResult, HostPriority,
    MAX_EXTENDER_PRIORITY, NodeListOut, clamp_score,
};
use sovra_domain::PolicySpec;
use sovra_placement::filter::{JobNeeds, Reason, node_verdict, pool_reason};
use sovra_placement::{FilterKind, NodeIdx, Placer, Verdict as CoreVerdict};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// How bind reaches the cluster.
#[derive(Clone)]
pub enum Binder {
    /// No Kubernetes client (`serve` without `--kube`): every bind is refused with an error naming `--kube`, so
    /// that a kube-scheduler pointed at this extender never believes a pod was bound when nothing was.
    NoClient,
    /// Dry run (`--dry-run-bind`, for benchmarks and tests only): bind checks the pod and the node as usual and
    /// records the placement in the cache, but binds nothing. Never for a real kube-scheduler's `bindVerb`.
    DryRun,
    /// Creates the pod's `Binding` subresource through the Kubernetes API.
    Kube(kube::Client),
}

pub use crate::metrics::Metrics;

mod preempt;

/// The verdict on one candidate node: the core's [`sovra_placement::Verdict`] with the words kube-scheduler shows.
/// `Fit` passes; `Unschedulable` is not now (capacity, readiness, gang waiting): `FailedNodes`; `Unresolvable` is
/// never (residency, purpose, unknown zone, hardware): `FailedAndUnresolvableNodes`. Which of the two is the core's
/// call ([`sovra_placement::filter::node_verdict`], [`Placer::verdict`]), never re-derived here.
pub type Verdict = sovra_placement::Verdict<(), Arc<str>>;

/// The extender: a cache, the placement core, and a binder. Safe to share between concurrent requests.
pub struct Extender {
    cache: Arc<Cache>,
    placer: Mutex<Placer>,
    binder: Binder,
    /// Gang reservations and binds in flight (src/reserve.rs).
    ledger: crate::reserve::Ledger,
    /// With leader election, whether this replica leads (only the leader binds and reserves).
    leader: Option<crate::leader::Leadership>,
    /// Request counters.
    pub metrics: Metrics,
}

impl Extender {
    /// An extender scoring with `policy` (ties broken by `seed`; the service and the CLI default to
    /// [`sovra_placement::DEFAULT_SEED`]) and FGD's target workload from the cluster config
    /// (`scheduling.fgd_target_workload`) — the same placer the scheduler service builds, so both choose the same node
    /// for the same snapshot and job. With no declared workload, FGD learns it from the pods bound
    /// ([`Placer::observe_admitted`] on bind).
    pub fn new(cache: Arc<Cache>, policy: PolicySpec, seed: u64, binder: Binder) -> Extender {
        let placer = Placer::new(policy, seed)
            .with_target_workload(&cache.fgd_target_workload())
            .with_max_feasible_nodes(cache.max_feasible_nodes());
        Extender {
            cache,
            placer: Mutex::new(placer),
            binder,
            ledger: crate::reserve::Ledger::default(),
            leader: None,
            metrics: Metrics::default(),
        }
    }

    /// Binds (and reserves gangs) only while `leadership` says this replica leads.
    pub fn with_leadership(mut self, leadership: crate::leader::Leadership) -> Extender {
        self.leader = Some(leadership);
        self
    }

    /// Gang reservations last `timeout` (default [`crate::reserve::DEFAULT_GANG_RESERVATION_TIMEOUT`]).
    pub fn with_gang_reservation_timeout(mut self, timeout: std::time::Duration) -> Extender {
        self.ledger = crate::reserve::Ledger::new(timeout);
        self
    }

    /// Gang reservations and binds in flight.
    pub fn ledger(&self) -> &crate::reserve::Ledger {
        &self.ledger
    }

    /// Whether this replica may bind: it leads, or runs without leader election.
    pub fn leads(&self) -> bool {
        self.leader.as_ref().is_none_or(|l| l.is_leader())
    }

    fn check_leader(&self) -> Result<(), String> {
        match &self.leader {
            Some(l) if !l.is_leader() => Err(l.not_leader()),
            _ => Ok(()),
        }
    }

    /// The placer's policy and seed.
    pub fn policy_and_seed(&self) -> (PolicySpec, u64) {
        let p = self.placer.lock().unwrap_or_else(|e| e.into_inner());
        (p.policy().clone(), p.seed())
    }

    /// The cache.
    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    /// Filter: which candidates may take the pod. Answers in the request's mode: `NodeNames` (in request order)
    /// when the request carried `NodeNames`, `Nodes` (the passing objects, verbatim) when it carried only `Nodes`.
    pub fn filter<'a>(&self, args: &'a ExtenderArgs<'_>) -> ExtenderFilterResult<'a> {
        self.metrics.filter.inc();
        let names = candidate_names(args);
        let verdicts = match (self.cache.readiness().not_ready(), &args.pod) {
            // Before the watches have synced, no node is known to be free: every node fails for now.
            (Some(why), _) => {
                let why: Arc<str> = why.into();
                names.iter().map(|_| Verdict::Unschedulable(why.clone())).collect()
            }
            (None, None) => {
                return ExtenderFilterResult {
                    error: "the filter request has no Pod; kube-scheduler always sends one".into(),
                    ..Default::default()
                };
            }
            (None, Some(pod)) => {
                let request = pod_request(pod);
                if let Ok(req) = &request {
                    self.cache.remember(
                        PodRecord {
                            uid: pod.metadata.uid.clone(),
                            key: pod_key(pod),
                            node: None,
                            request: request.clone(),
                            devices: None,
                        },
                        req.gang.is_some(),
                    );
                }
                let snap = self.cache.snapshot();
                match request {
                    Ok(req) => {
                        crate::reserve::filter_verdicts(&self.ledger, snap, &req, &names, &self.placer, self.leads())
                    }
                    Err(why) => {
                        let why: Arc<str> = why.into();
                        names.iter().map(|_| Verdict::Unresolvable(why.clone())).collect()
                    }
                }
            }
        };
        let mut out = ExtenderFilterResult::default();
        out.failed_and_unresolvable_nodes.0.reserve(names.len());
        let mut pass = vec![false; names.len()];
        for (i, (name, v)) in names.iter().zip(verdicts).enumerate() {
            match v {
                Verdict::Fit(()) => pass[i] = true,
                Verdict::Unschedulable(why) => {
                    out.failed_nodes.insert(name, why);
                }
                Verdict::Unresolvable(why) => {
                    out.failed_and_unresolvable_nodes.insert(name, why);
                }
            }
        }
        match (&args.node_names, &args.nodes) {
            (None, Some(list)) => {
                out.nodes = Some(NodeListOut {
                    metadata: BTreeMap::new(),
                    items: list.items.iter().zip(&pass).filter(|(_, p)| **p).map(|((_, raw), _)| raw.clone()).collect(),
                });
            }
            _ => {
                out.node_names = Some(names.iter().zip(&pass).filter(|(_, p)| **p).map(|(n, _)| *n).collect());
            }
        }
        out
    }

    /// Prioritize: a score in 0..=10 for every candidate, in request order. The node the placement core would
    /// choose gets 10; every other feasible node gets `round(10 × its total / the best total)`, at most 9; nodes the
    /// core rejects (or does not know) get 0.
    pub fn prioritize<'a>(&self, args: &'a ExtenderArgs<'_>) -> Vec<HostPriority<'a>> {
        self.metrics.prioritize.inc();
        let names = candidate_names(args);
        let zero = |names: &[&'a str]| names.iter().map(|n| HostPriority { host: n, score: 0 }).collect();
        if self.cache.readiness().not_ready().is_some() {
            return zero(&names); // the server answers 503 before this; a library caller gets no preference
        }
        let Some(Ok(req)) = args.pod.as_ref().map(pod_request) else { return zero(&names) };
        let snap = self.cache.snapshot();
        if let Some(scores) = crate::reserve::reserved_scores(&self.ledger, &snap, &req, &names) {
            return names.iter().zip(scores).map(|(n, s)| HostPriority { host: n, score: clamp_score(s) }).collect();
        }
        let snap = self.ledger.view(snap, req.gang.as_ref().map(|g| g.key.as_str()));
        let idx: Vec<Option<NodeIdx>> = names.iter().map(|n| snap.node_index(n)).collect();
        let known: Vec<NodeIdx> = idx.iter().flatten().copied().collect();
        let scored = self.placer.lock().unwrap_or_else(|e| e.into_inner()).score_nodes(
            &snap.state,
            &crate::mig::job_for(&req, snap.state.topology()),
            &known,
        );
        // Scores aligned with `names`.
        let mut scored = scored.into_iter();
        let per_name: Vec<Option<(u64, u64)>> = idx.iter().map(|i| i.and_then(|_| scored.next().flatten())).collect();
        let best = per_name.iter().flatten().max_by_key(|(total, rank)| (*total, std::cmp::Reverse(*rank))).copied();
        names
            .iter()
            .zip(&per_name)
            .map(|(name, s)| {
                let score = match (s, best) {
                    (Some(s), Some(b)) if *s == b => MAX_EXTENDER_PRIORITY,
                    (Some((total, _)), Some((best_total, _))) if best_total > 0 => {
                        (((10 * u128::from(*total) + u128::from(best_total) / 2) / u128::from(best_total)) as i64)
                            .min(9)
                    }
                    _ => 0,
                };
                HostPriority { host: name, score: clamp_score(score) }
            })
            .collect()
    }

    /// Bind: checks the node is offered and permitted for the pod, then creates the pod's Binding (idempotent: a pod
    /// already bound to this node is a success, to another node an error).
    pub async fn bind(&self, args: &ExtenderBindingArgs) -> ExtenderBindingResult {
        self.metrics.bind.inc();
        let result = self.bind_inner(args).await;
        if let Err(e) = &result {
            self.metrics.bind_errors.inc();
            tracing::warn!(pod = %args.pod_name, node = %args.node, error = %e, "bind refused");
        }
        ExtenderBindingResult { error: result.err().unwrap_or_default() }
    }

    async fn bind_inner(&self, a: &ExtenderBindingArgs) -> Result<(), String> {
        if a.pod_name.is_empty() || a.node.is_empty() {
            return Err("the bind request needs PodName and Node".into());
        }
        self.check_leader()?;
        let ns = if a.pod_namespace.is_empty() { "default" } else { a.pod_namespace.as_str() };
        let key = format!("{ns}/{}", a.pod_name);
        if let Binder::NoClient = self.binder {
            return Err(no_client_error(&key, &a.node));
        }
        if let Some(why) = self.cache.readiness().not_ready() {
            return Err(format!("refusing to bind {key} to {}: {why}", a.node));
        }
        let snap = self.cache.snapshot();
        if let Some(why) = snap.not_offered.get(&a.node) {
            return Err(format!("refusing to bind {key} to {}: {why}", a.node));
        }
        if snap.node_index(&a.node).is_none() {
            return Err(format!("refusing to bind {key} to {}: the node is not in Sovra's node cache", a.node));
        }
        // The pod's request: from a filter call or the watch; else, with the API, read the pod. Sovra binds only pods
        // whose residency it could check.
        let record = match (self.cache.record(&a.pod_uid), &self.binder) {
            (Some(r), _) => Some(r),
            (None, Binder::Kube(client)) => crate::k8s::fetch_pod(client, ns, &a.pod_name).await?,
            (None, Binder::NoClient | Binder::DryRun) => None,
        };
        let Some(rec) = record else {
            return Err(format!(
                "refusing to bind {key}: Sovra has not seen this pod (no filter call, not in its Pod watch), so it \
                 cannot check its residency class"
            ));
        };
        if !a.pod_uid.is_empty() && !rec.uid.is_empty() && rec.uid != a.pod_uid {
            return Err(format!(
                "refusing to bind {key}: the pod has UID {}, the request names {}",
                rec.uid, a.pod_uid
            ));
        }
        let req = rec.request.as_ref().map_err(|why| format!("refusing to bind {key}: {why}"))?;
        if let Some(Verdict::Unresolvable(why)) = evaluate_nodes(&snap, req, &[a.node.as_str()]).pop() {
            return Err(format!("refusing to bind {key} to {}: {why}", a.node));
        }
        match &rec.node {
            Some(n) if *n == a.node => return Ok(()),
            Some(n) => return Err(format!("pod {key} is already bound to node {n}")),
            None => {}
        }
        if self.cache.record(&a.pod_uid).is_none() {
            self.cache.remember(rec.clone(), false);
        }
        // Devices: a slot of the pod's gang reservation, or the core's choice there (claimed until accounted).
        let claim_id = if a.pod_uid.is_empty() { key.as_str() } else { a.pod_uid.as_str() };
        let placement = self.ledger.claim(&self.cache.snapshot(), req, claim_id, &a.node, &self.placer)?;
        let assigned = crate::assign::Assigned { node: a.node.clone(), devices: placement.devices };
        let written = async {
            if let Binder::Kube(client) = &self.binder {
                // The devices are on the pod before it is bound: a bound pod Sovra bound always records them.
                crate::k8s::annotate_pod(client, ns, &a.pod_name, &a.pod_uid, &assigned).await?;
                self.check_leader()?;
                crate::k8s::bind_pod(client, ns, &a.pod_name, &a.pod_uid, &a.node).await?;
            }
            Ok::<(), String>(())
        }
        .await;
        if let Err(e) = written {
            self.ledger.finish(claim_id, false);
            return Err(e);
        }
        self.cache.assume_bound_on(&a.pod_uid, &key, &a.node, Some(assigned));
        self.ledger.finish(claim_id, true);
        // Bound: the pod is admitted, so FGD's learned mix counts it (once, however often it was filtered).
        self.placer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .observe_admitted(&crate::mig::job_for(req, snap.state.topology()));
        Ok(())
    }
}

/// Why a bind is refused without a Kubernetes client ([`Binder::NoClient`]).
pub fn no_client_error(key: &str, node: &str) -> String {
    format!(
        "refusing to bind {key} to {node}: this extender has no Kubernetes client, so it cannot create the pod's \
         Binding; start it with --kube (or, for benchmarks and dry runs only, --dry-run-bind, which binds nothing)"
    )
}

/// The candidate names of a filter or prioritize request: `NodeNames` when present, else the names of `Nodes`.
pub fn candidate_names<'a>(args: &'a ExtenderArgs<'_>) -> Vec<&'a str> {
    match (&args.node_names, &args.nodes) {
        (Some(names), _) => names.iter().map(|n| &**n).collect(),
        (None, Some(list)) => list.items.iter().map(|(n, _)| n.as_str()).collect(),
        (None, None) => vec![],
    }
}

/// Verdicts for the candidate nodes, gang rules included. Whether a gang's unbound pods fit together is asked of
/// `placer` — the extender's own, with the configured policy, seed and FGD target — never of a placer with other
/// settings.
pub fn evaluate(snap: &Snapshot, req: &PodRequest, names: &[&str], placer: &Mutex<Placer>) -> Vec<Verdict> {
    let mut verdicts = evaluate_nodes(snap, req, names);
    let Some(gang) = &req.gang else { return verdicts };
    if !verdicts.contains(&Verdict::Fit(())) {
        return verdicts;
    }
    let mut count = snap.gangs.get(&gang.key).copied().unwrap_or_default();
    // The pod itself counts (a remembered gang member already does).
    if count.members == 0 {
        count.members = 1;
    }
    // (why, whether it can never fit): the core's verdict on the unbound members placed together.
    let wait = if count.members < gang.min_member {
        Some((
            format!(
                "gang {} waits for its members: {} of {} pods exist; it holds no GPU while it waits",
                gang.key, count.members, gang.min_member
            ),
            false,
        ))
    } else {
        let remaining = gang.min_member.saturating_sub(count.bound).max(1);
        if remaining > 1 {
            let mut job = crate::mig::job_for(req, snap.state.topology()).into_owned();
            job.replicas = remaining;
            let verdict = placer.lock().unwrap_or_else(|e| e.into_inner()).verdict(&snap.state, &job);
            verdict.reason().map(|e| {
                let when = if verdict.is_unresolvable() { "can never fit together" } else { "do not fit together now" };
                (
                    format!(
                        "gang {}: its {remaining} unbound pods {when} ({}); the gang waits, holding no GPU",
                        gang.key, e.summary
                    ),
                    verdict.is_unresolvable(),
                )
            })
        } else {
            None
        }
    };
    if let Some((why, never)) = wait {
        let why: Arc<str> = why.into();
        for v in verdicts.iter_mut() {
            if *v == Verdict::Fit(()) {
                *v = if never { Verdict::Unresolvable(why.clone()) } else { Verdict::Unschedulable(why.clone()) };
            }
        }
    }
    verdicts
}

/// Verdicts for the candidate nodes, one pod on its own. Reasons are worded once per pool and once per node
/// reason, and shared.
pub fn evaluate_nodes(snap: &Snapshot, req: &PodRequest, names: &[&str]) -> Vec<Verdict> {
    let topo = snap.state.topology();
    let resolved = crate::mig::job_for(req, topo);
    let job = &*resolved;
    let Some(class) = topo.class(&job.residency) else {
        let known: Vec<&str> = topo.classes.iter().map(|c| c.name.as_str()).collect();
        let why: Arc<str> = format!(
            "residency class {:?} (label {} of pod {}) is not in the Sovra cluster config; known classes: {}",
            job.residency,
            crate::pod::RESIDENCY_LABEL,
            job.name,
            known.join(", ")
        )
        .into();
        return names.iter().map(|_| Verdict::Unresolvable(why.clone())).collect();
    };
    let needs = JobNeeds::of(job, topo);
    let mut pool_verdicts: Vec<Option<Option<Arc<str>>>> = vec![None; topo.pools.len()];
    let mut reason_words: [Option<Arc<str>>; Reason::ALL.len()] = Default::default();
    let mut unknown_words: Option<Arc<str>> = None;
    names
        .iter()
        .map(|name| {
            let Some(i) = snap.node_index(name) else {
                if let Some(why) = snap.not_offered.get(*name) {
                    return Verdict::Unresolvable(why.clone());
                }
                let why = unknown_words.get_or_insert_with(|| {
                    "node not in Sovra's node cache (not in the cluster config and not seen through the Kubernetes \
                     API yet)"
                        .into()
                });
                return Verdict::Unschedulable(why.clone());
            };
            let info = &topo.nodes[i as usize];
            let pool = info.pool as usize;
            let pv = pool_verdicts[pool].get_or_insert_with(|| {
                pool_reason(&topo.pools[pool], topo, job, class).map(|(filter, why)| match filter {
                    // One wording for every pool of the other purpose, so that the FailedScheduling event
                    // aggregates them into one line.
                    FilterKind::Purpose => Arc::from(format!(
                        "{} pool, the pod is {} (label {})",
                        topo.pools[pool].purpose,
                        job.kind,
                        crate::pod::KIND_LABEL
                    )),
                    _ => Arc::from(why),
                })
            });
            if let Some(why) = pv {
                return Verdict::Unresolvable(why.clone());
            }
            match node_verdict(&snap.state, i, &needs) {
                CoreVerdict::Fit(()) => Verdict::Fit(()),
                CoreVerdict::Unresolvable(r) if r != Reason::NoAllowedModel => Verdict::Unresolvable(
                    format!(
                        "node too small: {} GPUs, {}m CPU, {} MiB; the pod asks for {} GPUs, {}m CPU, {} MiB",
                        info.dev_count,
                        info.cpu_milli,
                        info.memory_mib,
                        job.resources.gpus,
                        job.resources.cpu_milli,
                        job.resources.memory_mib
                    )
                    .into(),
                ),
                CoreVerdict::Unresolvable(r) => Verdict::Unresolvable(
                    reason_words[r as usize].get_or_insert_with(|| r.describe(job).into()).clone(),
                ),
                CoreVerdict::Unschedulable(r) => Verdict::Unschedulable(
                    reason_words[r as usize].get_or_insert_with(|| r.describe(job).into()).clone(),
                ),
            }
        })
        .collect()
}
