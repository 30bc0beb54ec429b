//! Gang reservations and in-flight binds: devices held in the extender's accounting that no Pod shows yet
//! (docs/kubernetes.md, "Gang reservations").
//!
//! - A **gang reservation** is made when a gang's unbound members fit together (in the leader's filter, or at the
//!   bind of a member when there is none): the placement core places the remaining members all together, with the
//!   extender's policy, seed and FGD target, and the placement of every member but those already bound is kept
//!   as *slots* (node and devices) until a deadline (`--gang-reservation-timeout`, default 60 s). Slots count as
//!   used for every other pod's filter, prioritize, preempt and bind.
//! - The gang's own members are steered to the reservation: filter passes only nodes with a free slot, prioritize
//!   gives them 10 and every other node 0. Members are interchangeable (a gang's members are assumed to ask for
//!   the same resources): any free slot on the node a member is bound to is its slot.
//! - Bind consumes a slot. A member bound to a node without a free slot (its filter was answered by a replica that
//!   does not hold the reservation, or the reservation expired) is bound only if, at that moment, it fits there
//!   *and* all the gang's other unbound members still fit together elsewhere: the reservation is then made anew
//!   around it. Otherwise the bind is refused, so that a gang never runs partly while the rest cannot fit.
//! - A **claim** holds the devices of a bind in flight (between choosing them and the cache accounting the bound
//!   pod), so that two concurrent binds never choose the same device.
//! - A reservation ends when its last slot is taken, at its deadline (the gang then starts over), or when fewer
//!   than its minimum number of members still exist (pods deleted).

use crate::cache::Snapshot;
use crate::extender::{Verdict, evaluate, evaluate_nodes};
use crate::pod::PodRequest;
use sovra_domain::{Job, PolicySpec, Resources};
use sovra_placement::{ClusterState, DEFAULT_SEED, Decision, NodeIdx, Placer, ReplicaPlacement};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Default `--gang-reservation-timeout`: how long a gang's reserved devices wait for its members' binds.
pub const DEFAULT_GANG_RESERVATION_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
struct GangReservation {
    min_member: u32,
    /// What each member asks for (the reservation is for members asking this).
    resources: Resources,
    deadline: Instant,
    /// Free slots, one per member still to bind.
    slots: Vec<ReplicaPlacement>,
}

#[derive(Debug, Clone)]
struct Claim {
    placement: ReplicaPlacement,
    /// The gang whose slot it took (given back if the bind fails while the reservation lives).
    gang: Option<String>,
}

#[derive(Debug, Default)]
struct Inner {
    gangs: BTreeMap<String, GangReservation>,
    claims: BTreeMap<String, Claim>,
    generation: u64,
    /// The last view for pods outside any reserved gang: (source snapshot, generation, view).
    memo: Option<(Arc<Snapshot>, u64, Arc<Snapshot>)>,
}

/// Free slots of a gang's reservation, by node name.
pub type Slots = BTreeMap<String, u32>;

/// The reservations and claims (see the module documentation). Shared by all requests of one extender.
#[derive(Debug)]
pub struct Ledger {
    inner: Mutex<Inner>,
    timeout: Duration,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger::new(DEFAULT_GANG_RESERVATION_TIMEOUT)
    }
}

fn one(job: &Job) -> Job {
    Job { replicas: 1, ..job.clone() }
}

/// The placement with its node index in `snap` (the topology may have been rebuilt since it was made).
fn remap(snap: &Snapshot, p: &ReplicaPlacement) -> Option<ReplicaPlacement> {
    let node = snap.node_index(&p.node_name)?;
    Some(ReplicaPlacement { node, ..p.clone() })
}

fn decision(key: &str, p: ReplicaPlacement) -> Decision {
    Decision { job: key.to_string(), replicas: vec![p] }
}

impl Ledger {
    /// A ledger whose gang reservations last `timeout`.
    pub fn new(timeout: Duration) -> Ledger {
        Ledger { inner: Mutex::new(Inner::default()), timeout }
    }

    /// How long a gang reservation lasts.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The number of live gang reservations and in-flight claims (for tests and metrics).
    pub fn counts(&self, snap: &Snapshot) -> (usize, usize) {
        let mut inner = self.lock();
        inner.prune(snap);
        (inner.gangs.len(), inner.claims.len())
    }

    /// The snapshot as the pods of `own_gang` (or any other pod, with `None`) must see it: claims and every other
    /// gang's free slots count as used.
    pub fn view(&self, snap: Arc<Snapshot>, own_gang: Option<&str>) -> Arc<Snapshot> {
        let mut inner = self.lock();
        inner.prune(&snap);
        inner.view(snap, own_gang)
    }

    /// The free slots of `gang`'s live reservation, when it has one for members asking for `resources`.
    pub fn slots(&self, snap: &Snapshot, gang: &str, resources: &Resources) -> Option<Slots> {
        let mut inner = self.lock();
        inner.prune(snap);
        inner.gangs.get(gang).filter(|g| g.resources == *resources).map(|g| slot_map(&g.slots))
    }

    /// Reserves the devices of `remaining` members of `req`'s gang (placed together by `placer`), unless the gang
    /// already has a reservation. The gang's free slots, or `None` when they do not fit.
    pub fn reserve(
        &self,
        snap: &Arc<Snapshot>,
        req: &PodRequest,
        remaining: u32,
        placer: &Mutex<Placer>,
    ) -> Option<Slots> {
        let gang = req.gang.as_ref()?;
        let mut inner = self.lock();
        inner.prune(snap);
        if let Some(g) = inner.gangs.get(&gang.key) {
            // One reservation per gang: a member asking for other resources does not replace it.
            return (g.resources == req.job.resources).then(|| slot_map(&g.slots));
        }
        let view = inner.view(snap.clone(), Some(&gang.key));
        let job = Job { replicas: remaining, ..req.job.clone() };
        let placed = placer.lock().unwrap_or_else(|e| e.into_inner()).place(&view.state, &job).ok()?;
        let slots = slot_map(&placed.replicas);
        tracing::info!(gang = %gang.key, members = remaining, ?slots, "gang reserved");
        inner.gangs.insert(
            gang.key.clone(),
            GangReservation {
                min_member: gang.min_member,
                resources: req.job.resources.clone(),
                deadline: Instant::now() + self.timeout,
                slots: placed.replicas,
            },
        );
        inner.generation += 1;
        Some(slots)
    }

    /// Chooses and claims the devices of pod `uid` (`key`) bound to node `node`: a free slot of its gang's
    /// reservation there, or the placement core's choice on that node (for a gang member, only if the gang's other
    /// unbound members still fit together, which makes a new reservation for them). `Err` says why not. Call
    /// [`Ledger::finish`] once the bind is over.
    pub fn claim(
        &self,
        snap: &Arc<Snapshot>,
        req: &PodRequest,
        uid: &str,
        node: &str,
        placer: &Mutex<Placer>,
    ) -> Result<ReplicaPlacement, String> {
        let key = &req.job.name;
        let idx = snap.node_index(node).ok_or_else(|| format!("node {node} is not in Sovra's node cache"))?;
        let mut inner = self.lock();
        inner.prune(snap);
        if let Some(c) = inner.claims.get(uid) {
            return Err(format!("a bind of {key} is already in progress (on {})", c.placement.node_name));
        }
        let gang = req.gang.as_ref().filter(|g| g.min_member > 1);
        let view = inner.view(snap.clone(), gang.map(|g| g.key.as_str()));
        let Some(gang) = gang else {
            let p = choose(&view.state, idx, key, &req.job)?;
            inner.add_claim(uid, p.clone(), None);
            return Ok(p);
        };
        // A free slot of the gang's reservation on this node.
        if let Some(res) = inner.gangs.get_mut(&gang.key).filter(|g| g.resources == req.job.resources)
            && let Some(pos) = res.slots.iter().position(|p| p.node_name == node)
        {
            let slot = remap(snap, &res.slots[pos]).filter(|s| view.state.check(&decision(key, s.clone())).is_ok());
            if let Some(slot) = slot {
                res.slots.remove(pos);
                if res.slots.is_empty() {
                    inner.gangs.remove(&gang.key);
                }
                inner.add_claim(uid, slot.clone(), Some(gang.key.clone()));
                return Ok(slot);
            }
            // The slot's devices were taken by something Sovra did not place: the reservation cannot hold.
            tracing::warn!(gang = %gang.key, %node, "reserved devices taken meanwhile; the gang is placed anew");
            inner.gangs.remove(&gang.key);
            inner.generation += 1;
        }
        let view = inner.view(snap.clone(), Some(&gang.key));
        let count = snap.gangs.get(&gang.key).copied().unwrap_or_default();
        if count.members.max(1) < gang.min_member {
            return Err(format!(
                "gang {} waits for its members: {} of {} pods exist; no member is bound before all exist",
                gang.key,
                count.members.max(1),
                gang.min_member
            ));
        }
        // Members whose binds are in flight hold their claims: they are not part of the rest.
        let in_flight = inner.claims.values().filter(|c| c.gang.as_deref() == Some(gang.key.as_str())).count();
        let rest = gang.min_member.saturating_sub(count.bound).saturating_sub(in_flight as u32).saturating_sub(1);
        let p = choose(&view.state, idx, key, &req.job)?;
        if rest == 0 {
            inner.gangs.remove(&gang.key);
            inner.add_claim(uid, p.clone(), Some(gang.key.clone()));
            return Ok(p);
        }
        let mut tentative = view.state.clone();
        tentative.apply(&decision(key, p.clone())).map_err(|e| e.to_string())?;
        let job = Job { replicas: rest, ..req.job.clone() };
        let others = placer.lock().unwrap_or_else(|e| e.into_inner()).place(&tentative, &job).map_err(|e| {
            format!(
                "gang {}: with {key} on {node}, its other {rest} unbound pods would not fit together ({}); refused so \
                 that the gang never runs partly",
                gang.key, e.summary
            )
        })?;
        tracing::info!(gang = %gang.key, members = rest, slots = ?slot_map(&others.replicas), "gang reserved at bind");
        inner.gangs.insert(
            gang.key.clone(),
            GangReservation {
                min_member: gang.min_member,
                resources: req.job.resources.clone(),
                deadline: Instant::now() + self.timeout,
                slots: others.replicas,
            },
        );
        inner.add_claim(uid, p.clone(), Some(gang.key.clone()));
        Ok(p)
    }

    /// Ends the bind of `uid`: bound (the cache now accounts the pod) or not (a gang slot it took is freed again
    /// while its reservation lives).
    pub fn finish(&self, uid: &str, bound: bool) {
        let mut inner = self.lock();
        let Some(c) = inner.claims.remove(uid) else { return };
        if !bound && let Some(g) = c.gang.as_ref().and_then(|g| inner.gangs.get_mut(g)) {
            g.slots.push(c.placement);
        }
        inner.generation += 1;
    }
}

fn slot_map(slots: &[ReplicaPlacement]) -> Slots {
    let mut m = Slots::new();
    for s in slots {
        *m.entry(s.node_name.clone()).or_default() += 1;
    }
    m
}

/// The devices the placement core gives one replica of `job` on `node` (the choice [`crate::cache::account`]
/// makes for a bound pod), or why it does not fit there.
fn choose(state: &ClusterState, node: NodeIdx, key: &str, job: &Job) -> Result<ReplicaPlacement, String> {
    match Placer::new(PolicySpec::default(), DEFAULT_SEED).place_on(state, &one(job), node) {
        Ok(mut d) if d.replicas.len() == 1 => Ok(d.replicas.remove(0)),
        Ok(_) => Err(format!("{key}: the placement core placed no replica")),
        Err(e) => Err(format!(
            "no room for {key} on node {} in Sovra's accounting ({})",
            state.topology().nodes[node as usize].name,
            e.summary
        )),
    }
}

impl Inner {
    fn add_claim(&mut self, uid: &str, placement: ReplicaPlacement, gang: Option<String>) {
        self.claims.insert(uid.to_string(), Claim { placement, gang });
        self.generation += 1;
    }

    /// Drops reservations past their deadline and those whose gang lost members.
    fn prune(&mut self, snap: &Snapshot) {
        let now = Instant::now();
        let before = self.gangs.len();
        self.gangs.retain(|key, g| {
            let members = snap.gangs.get(key).map_or(0, |c| c.members);
            let keep = now < g.deadline && members >= g.min_member && !g.slots.is_empty();
            if !keep {
                tracing::info!(gang = %key, members, expired = now >= g.deadline, "gang reservation released");
            }
            keep
        });
        if self.gangs.len() != before {
            self.generation += 1;
        }
    }

    fn view(&mut self, snap: Arc<Snapshot>, own_gang: Option<&str>) -> Arc<Snapshot> {
        let held = self.claims.values().map(|c| &c.placement);
        let reserved = self.gangs.iter().filter(|(k, _)| Some(k.as_str()) != own_gang).flat_map(|(_, g)| &g.slots);
        let mut held = held.chain(reserved).peekable();
        if held.peek().is_none() {
            return snap;
        }
        let memo_ok = own_gang.is_none() || !self.gangs.contains_key(own_gang.unwrap_or_default());
        if memo_ok
            && let Some((src, generation, view)) = &self.memo
            && Arc::ptr_eq(src, &snap)
            && *generation == self.generation
        {
            return view.clone();
        }
        let mut state = snap.state.clone();
        for p in held {
            let Some(p) = remap(&snap, p) else { continue };
            if let Err(e) = state.apply(&decision("reserved", p)) {
                tracing::warn!(error = %e, "reserved devices no longer fit the node; not counted");
            }
        }
        let view = Arc::new(Snapshot { state, ..(*snap).clone() });
        if memo_ok {
            self.memo = Some((snap, self.generation, view.clone()));
        }
        view
    }
}

/// Filter verdicts with reservations: a member of a reserved gang passes only the nodes with a free slot; any
/// other pod sees reserved and claimed devices as used; a gang that fits gets a reservation when `may_reserve`
/// (the replica leads).
pub fn filter_verdicts(
    ledger: &Ledger,
    snap: Arc<Snapshot>,
    req: &PodRequest,
    names: &[&str],
    placer: &Mutex<Placer>,
    may_reserve: bool,
) -> Vec<Verdict> {
    let Some(gang) = req.gang.as_ref().filter(|g| g.min_member > 1) else {
        return evaluate(&ledger.view(snap, None), req, names, placer);
    };
    let view = ledger.view(snap.clone(), Some(&gang.key));
    if let Some(slots) = ledger.slots(&snap, &gang.key, &req.job.resources) {
        let mut v = evaluate_nodes(&view, req, names);
        restrict(&mut v, names, &slots, &gang.key);
        return v;
    }
    let mut v = evaluate(&view, req, names, placer);
    let bound = snap.gangs.get(&gang.key).map_or(0, |c| c.bound);
    let remaining = gang.min_member.saturating_sub(bound);
    if may_reserve && remaining > 1 && v.contains(&Verdict::Fit(())) {
        match ledger.reserve(&snap, req, remaining, placer) {
            Some(slots) => restrict(&mut v, names, &slots, &gang.key),
            None => tracing::debug!(gang = %gang.key, "gang passed its check but could not be reserved"),
        }
    }
    v
}

/// Scores for a member of a reserved gang: 10 on nodes with a free slot, 0 elsewhere; `None` for other pods.
pub fn reserved_scores(ledger: &Ledger, snap: &Snapshot, req: &PodRequest, names: &[&str]) -> Option<Vec<i64>> {
    let gang = req.gang.as_ref().filter(|g| g.min_member > 1)?;
    let slots = ledger.slots(snap, &gang.key, &req.job.resources)?;
    Some(names.iter().map(|n| if slots.get(*n).is_some_and(|c| *c > 0) { 10 } else { 0 }).collect())
}

fn restrict(verdicts: &mut [Verdict], names: &[&str], slots: &Slots, gang: &str) {
    let mut why: Option<Arc<str>> = None;
    for (v, name) in verdicts.iter_mut().zip(names) {
        if *v == Verdict::Fit(()) && slots.get(*name).is_none_or(|c| *c == 0) {
            let w = why.get_or_insert_with(|| {
                let nodes: Vec<&str> = slots.keys().map(String::as_str).collect();
                format!(
                    "gang {gang}: its members' GPUs are reserved on {}; this node is not one of them",
                    nodes.join(", ")
                )
                .into()
            });
            *v = Verdict::Unschedulable(w.clone());
        }
    }
}
