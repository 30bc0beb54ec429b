//! Why a job could not be placed: the [`Explanation`] of a failed placement, worded once per reason.

use super::{Placer, Plan};
use crate::decision::{Explanation, FilterKind, FilterReport, ReasonCount, RejectReason};
use crate::filter::{Reason, model_reason, pool_reason};
use crate::snapshot::{ClusterState, Topology};
use sovra_domain::{GPU_MILLI, Job, NvlinkWish};
use std::collections::BTreeMap;

impl Placer {
    pub(super) fn explain(
        &mut self,
        state: &ClusterState,
        job: &Job,
        plan: &Plan,
        counts: &[u32; Reason::ALL.len()],
        failed_replica: u32,
    ) -> Explanation {
        let topo = state.topology().clone();
        let class = topo.class(&job.residency).expect("explain runs only for known classes");
        // Pool rejections, aggregated: one row for the purpose filter, one row per zone for residency (its words
        // are cached per class and zone: they only depend on configuration).
        let mut purpose_nodes = 0u32;
        let mut purpose_pools = 0u32;
        let mut by_zone: BTreeMap<usize, u32> = BTreeMap::new();
        let mut model_zones: BTreeMap<usize, u32> = BTreeMap::new();
        for &(kind, pool) in &plan.pool_rejections {
            let nodes = topo.pool_nodes[pool as usize].len() as u32;
            match kind {
                FilterKind::Purpose => {
                    purpose_pools += 1;
                    purpose_nodes += nodes;
                }
                FilterKind::Model => *model_zones.entry(topo.pools[pool as usize].zone).or_default() += nodes,
                _ => *by_zone.entry(topo.pools[pool as usize].zone).or_default() += nodes,
            }
        }
        let topo_key = topo.generation();
        if self.zone_reasons.0 != topo_key {
            self.zone_reasons = (topo_key, BTreeMap::new());
        }
        let mut filters = Vec::new();
        for f in FilterKind::ALL {
            let mut reasons: Vec<ReasonCount> = Vec::new();
            if f == FilterKind::Purpose && purpose_pools > 0 {
                use sovra_domain::Purpose;
                let other = if job.kind == Purpose::Training { Purpose::Inference } else { Purpose::Training };
                reasons.push(ReasonCount {
                    reason: RejectReason::Purpose { pools: purpose_pools, pool_purpose: other, job_kind: job.kind },
                    nodes: purpose_nodes,
                });
            }
            if f == FilterKind::Residency {
                for (&zone, &nodes) in &by_zone {
                    let why = self
                        .zone_reasons
                        .1
                        .entry((class.name.clone(), zone))
                        .or_insert_with(|| {
                            let pool = topo.pools.iter().find(|p| p.zone == zone && p.purpose == job.kind);
                            pool.and_then(|p| pool_reason(p, &topo, job, class)).map(|(_, w)| w).unwrap_or_default()
                        })
                        .clone();
                    let reason = RejectReason::Residency {
                        zone: topo.zones[zone].id.clone(),
                        class: class.name.clone(),
                        failed: why,
                    };
                    reasons.push(ReasonCount { reason, nodes });
                }
            }
            if f == FilterKind::Model {
                for (&zone, &nodes) in &model_zones {
                    let failed = model_reason(&topo.zones[zone], job, class, &self.models, &topo).unwrap_or_default();
                    let model = job.model.as_ref().map(ToString::to_string).unwrap_or_default();
                    let reason = RejectReason::Model { zone: topo.zones[zone].id.clone(), model, failed };
                    reasons.push(ReasonCount { reason, nodes });
                }
            }
            for r in Reason::ALL {
                if r.filter() == f && counts[r as usize] > 0 {
                    let reason = RejectReason::Node { reason: r, resources: job.resources.clone() };
                    reasons.push(ReasonCount { reason, nodes: counts[r as usize] });
                }
            }
            // Most nodes first, then by the words (as before reasons were data: the order users see is unchanged).
            reasons.sort_by_cached_key(|r| (std::cmp::Reverse(r.nodes), r.reason.to_string()));
            filters.push(FilterReport { filter: f, rejected_nodes: reasons.iter().map(|r| r.nodes).sum(), reasons });
        }
        let capacity = self.capacity_when_empty(&topo, plan, &plan.pools);
        let mut unresolvable = capacity < u64::from(job.replicas);
        // The model filter: a version that does not exist (or a prefix naming several) never comes; one promoted
        // elsewhere may still come here, so the job waits if the pools it rejected could hold it.
        let model_words =
            model_zones.keys().next().and_then(|&z| model_reason(&topo.zones[z], job, class, &self.models, &topo));
        let model_missing = job.model.as_ref().is_some_and(|r| {
            matches!(self.models.resolve(r), sovra_domain::Resolved::NoVersion | sovra_domain::Resolved::Ambiguous(_))
        });
        if !model_zones.is_empty() && !model_missing {
            let mut wider = plan.pools.clone();
            wider.extend(plan.pool_rejections.iter().filter(|r| r.0 == FilterKind::Model).map(|r| r.1));
            unresolvable = self.capacity_when_empty(&topo, plan, &wider) < u64::from(job.replicas);
        }
        unresolvable |= model_missing;
        let summary = if let (true, Some(words)) = (plan.pools.is_empty(), &model_words) {
            if model_missing {
                format!("{words}; name a version of the registry (`sovra model list`)")
            } else {
                format!("{words}; it is placed once the version is available in a zone the class permits")
            }
        } else if plan.pools.is_empty() {
            let purpose = plan.pool_rejections.iter().filter(|r| r.0 == FilterKind::Purpose).count();
            let residency = plan.pool_rejections.iter().filter(|r| r.0 == FilterKind::Residency).count();
            format!(
                "no permitted pool: {purpose} pool(s) are not for {} and {residency} pool(s) are in zones that fail \
                 residency class {}; use another class or add a {} pool in a zone that satisfies it",
                job.kind, job.residency, job.kind
            )
        } else if unresolvable {
            format!(
                "the permitted pools could hold at most {capacity} replica(s) even when empty, the job needs {}; \
                 ask for less per replica or fewer replicas, or add nodes",
                job.replicas
            )
        } else {
            let top = filters
                .iter()
                .flat_map(|f| f.reasons.iter().map(move |r| (f.filter, r)))
                .filter(|(f, _)| f.is_resolvable())
                .max_by_key(|(_, r)| r.nodes);
            let because =
                top.map(|(_, r)| format!("; most nodes rejected: {} ({})", r.reason, r.nodes)).unwrap_or_default();
            format!(
                "no room now for replica {failed_replica} of {}{because}; it fits when capacity frees up \
                 (the permitted pools could hold {capacity} replica(s) when empty)",
                job.replicas
            )
        };
        Explanation {
            job: job.name.clone(),
            summary,
            failed_replica: Some(failed_replica),
            replicas_placed_before_failure: failed_replica,
            total_nodes: topo.nodes.len() as u32,
            filters,
            unresolvable,
        }
    }

    /// How many replicas the permitted pools could hold if every node were empty and healthy (capped at the job's
    /// replica count + 1): below the job's replica count, waiting can never help.
    fn capacity_when_empty(&self, topo: &Topology, plan: &Plan, pools: &[u32]) -> u64 {
        let n = &plan.needs;
        let mut total = 0u64;
        for &pool in pools {
            for &node in &topo.pool_nodes[pool as usize] {
                let info = &topo.nodes[node as usize];
                let mut fit = (info.cpu_milli / n.cpu.max(1)).min(info.memory_mib / n.mem.max(1));
                if n.gpus > 0 {
                    let devices = &topo.devices[topo.device_range(node)];
                    let allowed = match info.uniform_model {
                        Some(m) => u64::from(info.dev_count) * u64::from(n.model_ok(m)),
                        None => devices.iter().filter(|d| n.model_ok(d.model)).count() as u64,
                    };
                    let per_device = u64::from(GPU_MILLI) / u64::from(n.milli.max(1));
                    let mut gpu_fit = allowed * per_device / u64::from(n.gpus);
                    if n.nvlink == NvlinkWish::Require {
                        let mut islands: BTreeMap<u16, u64> = BTreeMap::new();
                        for d in devices.iter().filter(|d| n.model_ok(d.model)) {
                            *islands.entry(d.island).or_default() += 1;
                        }
                        gpu_fit = islands.values().map(|c| c / u64::from(n.gpus)).sum();
                    }
                    fit = fit.min(gpu_fit);
                }
                total += fit;
                if total > 1 << 40 {
                    return total;
                }
            }
        }
        total
    }
}

pub(super) fn refusal(job: &Job, topo: &Topology, summary: String) -> Explanation {
    Explanation {
        job: job.name.clone(),
        summary,
        failed_replica: None,
        replicas_placed_before_failure: 0,
        total_nodes: topo.nodes.len() as u32,
        filters: Vec::new(),
        unresolvable: true,
    }
}
