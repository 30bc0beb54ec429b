//! Preempt: which of kube-scheduler's candidate nodes, with which victims, Sovra approves.
//!
//! A node is kept only when
//! - its victims are **whole gangs**: a victim that is a member of a `sovra.io/pod-group` gang is approved only
//!   when every bound member of that gang is among the victims of that node (a gang runs whole or not at all, as
//!   the scheduler service's whole-gang preemption has it); a victim Sovra does not know at all is refused, since
//!   whether it belongs to a gang cannot be checked;
//! - once the victims Sovra accounts on that node are released (and only those), the pod passes the same verdict
//!   filter gives: the node's pool may take it and it fits by Sovra's accounting, and for a gang member, the
//!   placement core places the gang's unbound members together on the freed cluster ([`super::evaluate`]).
//!
//! Victims are always answered by UID; nodes without victims are dropped.

use super::{Extender, Verdict, evaluate};
use crate::cache::Snapshot;
use crate::pod::pod_gang;
use crate::wire::{ExtenderPreemptionArgs, ExtenderPreemptionResult, MetaPodOut, MetaVictimsOut, Pod};
use sovra_placement::Decision;
use std::collections::{BTreeMap, BTreeSet};

/// A candidate node as kube-scheduler offers it.
struct Candidate {
    node: String,
    /// Victim UIDs, with the pod object when the request carried full pods (`nodeCacheCapable: false`).
    victims: Vec<(String, Option<Pod>)>,
    pdb: i64,
}

fn candidates(args: &ExtenderPreemptionArgs) -> Vec<Candidate> {
    match (&args.node_name_to_meta_victims, &args.node_name_to_victims) {
        (Some(meta), _) => meta
            .iter()
            .map(|(n, v)| {
                let v = v.clone().unwrap_or_default();
                Candidate {
                    node: n.clone(),
                    victims: v.pods.into_iter().flatten().map(|p| (p.uid, None)).collect(),
                    pdb: v.num_pdb_violations,
                }
            })
            .collect(),
        (None, Some(full)) => full
            .iter()
            .map(|(n, v)| {
                let v = v.clone().unwrap_or_default();
                Candidate {
                    node: n.clone(),
                    victims: v.pods.into_iter().flatten().map(|p| (p.metadata.uid.clone(), Some(p))).collect(),
                    pdb: v.num_pdb_violations,
                }
            })
            .collect(),
        (None, None) => vec![],
    }
}

impl Extender {
    /// Preempt (see the module documentation).
    pub fn preempt(&self, args: &ExtenderPreemptionArgs) -> ExtenderPreemptionResult {
        self.metrics.preempt.inc();
        let mut out = ExtenderPreemptionResult::default();
        if self.cache.readiness().not_ready().is_some() {
            return out; // no node: nothing is evicted on a partial cache
        }
        let Some(Ok(req)) = args.pod.as_ref().map(crate::pod::pod_request) else { return out };
        // Reserved devices (another gang's reservation) count as used, as in filter.
        let snap = self.ledger.view(self.cache.snapshot(), req.gang.as_ref().map(|g| g.key.as_str()));
        // One scratch state: each node's victims are released, the verdict asked, and the victims put back.
        let mut work: Snapshot = (*snap).clone();
        let mut gang_members: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for Candidate { node, victims, pdb } in candidates(args) {
            let mut set = BTreeSet::new();
            let victims: Vec<(String, Option<Pod>)> =
                victims.into_iter().filter(|(u, _)| !u.is_empty() && set.insert(u.clone())).collect();
            if victims.is_empty() {
                continue;
            }
            if let Err(why) = self.whole_gangs_only(&victims, &set, &mut gang_members) {
                tracing::debug!(pod = %req.job.name, %node, %why, "preemption refused on this node");
                continue;
            }
            let here = snap.node_index(&node);
            let freed: Vec<Decision> = self
                .cache
                .accounted(victims.iter().map(|(u, _)| u.as_str()))
                .into_iter()
                .filter(|d| here.is_some() && d.replicas.iter().all(|r| Some(r.node) == here))
                .collect();
            for d in &freed {
                work.state.release(d);
            }
            let verdict = evaluate(&work, &req, &[node.as_str()], &self.placer).pop();
            for d in &freed {
                if work.state.apply(d).is_err() {
                    work.state = snap.state.clone(); // cannot happen (it was applied before); start over clean
                    break;
                }
            }
            if verdict == Some(Verdict::Fit(())) {
                let pods = victims.into_iter().map(|(uid, _)| MetaPodOut { uid }).collect();
                out.node_name_to_meta_victims.insert(node, MetaVictimsOut { pods, num_pdb_violations: pdb });
            }
        }
        out
    }

    /// `Ok` when every victim that belongs to a gang comes with all of its gang's bound members; else why not.
    fn whole_gangs_only(
        &self,
        victims: &[(String, Option<Pod>)],
        set: &BTreeSet<String>,
        gang_members: &mut BTreeMap<String, Vec<String>>,
    ) -> Result<(), String> {
        for (uid, pod) in victims {
            let gang = match (self.cache.gang_of(uid), pod) {
                (Some(g), _) => g,
                // Full mode: the victim's own object says whether it belongs to a gang.
                (None, Some(p)) => pod_gang(p).map_err(|e| format!("victim {uid}: {e}"))?,
                (None, None) => {
                    return Err(format!(
                        "victim {uid} is not in Sovra's Pod cache, so whether it belongs to a gang cannot be checked"
                    ));
                }
            };
            let Some(gang) = gang else { continue };
            let bound =
                gang_members.entry(gang.key.clone()).or_insert_with(|| self.cache.bound_gang_members(&gang.key));
            if let Some(missing) = bound.iter().find(|m| !set.contains(*m)) {
                return Err(format!(
                    "victim {uid} belongs to gang {}, whose bound member {missing} is not among this node's victims; \
                     a gang is evicted whole or not at all",
                    gang.key
                ));
            }
        }
        Ok(())
    }
}
