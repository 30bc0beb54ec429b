//! The admission rules, pure: given the Sovra cluster config, what the webhook knows of namespaces and nodes
//! ([`Lookup`]) and one request, the [`Verdict`].
//!
//! - **Pods of a regulated namespace** (one whose `sovra.io/residency` label names a class), whatever they request
//!   (CPU only, GPUs, MIG, DRA claims), on CREATE: the mutating call sets the pod's `sovra.io/residency` label to
//!   the namespace's class, `spec.schedulerName` to Sovra's profile, and adds to every required node-affinity term
//!   `node-restriction.kubernetes.io/sovra-pool In [pools the class permits for the pod's kind]`, so that
//!   kube-scheduler itself confines the pod even where the extender is not called. The validating call checks that
//!   all of this holds (another mutating webhook may run after Sovra's) and that a preset `spec.nodeName` is a node
//!   of a permitted pool.
//! - **Bindings** (`pods/binding`) in a regulated namespace must target a node whose pool's zone satisfies the class.
//! - **Nodes**: creating a node with a pool label, or changing or removing it, is refused unless the requester is
//!   one of the configured administrators. **Namespaces**: the same for the residency label, since removing it
//!   would release the namespace's pods from these rules.
//! - Whatever cannot be checked (a namespace or node the webhook cannot read, an unknown class) is refused.

use crate::review::{PatchOp, Request, Verdict};
use serde_json::{Value, json};
use sovra_domain::{ClusterConfig, JobKind};
use sovra_extender::cache::POOL_LABEL;
use sovra_extender::pod::{KIND_LABEL, RESIDENCY_LABEL};
use std::collections::BTreeSet;

/// Who may change pool and residency labels: `user:NAME` or `group:NAME`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Identity {
    /// A user name as kube-apiserver authenticates it.
    User(String),
    /// A group.
    Group(String),
}

impl std::str::FromStr for Identity {
    type Err = String;
    fn from_str(s: &str) -> Result<Identity, String> {
        match s.split_once(':') {
            Some(("user", n)) if !n.is_empty() => Ok(Identity::User(n.to_string())),
            Some(("group", n)) if !n.is_empty() => Ok(Identity::Group(n.to_string())),
            _ => Err(format!("{s:?}: write user:NAME or group:NAME (e.g. group:sovra:pool-admins)")),
        }
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::User(n) => write!(f, "user:{n}"),
            Identity::Group(n) => write!(f, "group:{n}"),
        }
    }
}

/// What the webhook can find out about the cluster. `Err` means it cannot tell (not synced, API unreachable): the
/// request is then refused.
pub trait Lookup {
    /// The namespace's `sovra.io/residency` label; `Ok(None)` when it has none (not regulated).
    fn namespace_class(&self, namespace: &str) -> Result<Option<String>, String>;
    /// The node's pool label; `Ok(None)` when the node exists without one; `Err` when it does not exist or cannot
    /// be read.
    fn node_pool(&self, node: &str) -> Result<Option<String>, String>;
}

/// The rules with their settings.
#[derive(Debug, Clone)]
pub struct Policy {
    config: ClusterConfig,
    scheduler_name: String,
    admins: BTreeSet<Identity>,
}

/// The node-affinity requirement the webhook adds, and looks for.
fn requirement(pools: &[String]) -> Value {
    json!({"key": POOL_LABEL, "operator": "In", "values": pools})
}

impl Policy {
    /// Rules for `config`'s zones, pools and classes; pods go to `scheduler_name`; `admins` may change pool and
    /// residency labels (none: nobody may).
    pub fn new(config: ClusterConfig, scheduler_name: &str, admins: impl IntoIterator<Item = Identity>) -> Policy {
        Policy { config, scheduler_name: scheduler_name.to_string(), admins: admins.into_iter().collect() }
    }

    /// The pools `class` permits for `kind`, sorted; `Err` names what is wrong.
    pub fn permitted_pools(&self, class: &str, kind: JobKind) -> Result<Vec<String>, String> {
        let c = self.config.class(class).ok_or_else(|| {
            let known: Vec<&str> = self.config.residency_classes.iter().map(|c| c.name.as_str()).collect();
            format!(
                "residency class {class:?} (namespace label {RESIDENCY_LABEL}) is not in the Sovra cluster config; \
                 known classes: {}; fix the namespace label",
                known.join(", ")
            )
        })?;
        let mut pools: Vec<String> = self
            .config
            .pools
            .iter()
            .filter(|p| p.purpose == kind && self.config.zone(&p.zone).is_some_and(|z| c.is_satisfied_by(z)))
            .map(|p| p.id.clone())
            .collect();
        pools.sort();
        if pools.is_empty() {
            return Err(format!("residency class {class} permits no {kind} pool of this cluster"));
        }
        Ok(pools)
    }

    /// Pools whose zone satisfies `class`, whatever their purpose (for bindings, which do not carry the pod).
    fn residency_pools(&self, class: &str) -> Result<BTreeSet<String>, String> {
        let mut all = BTreeSet::new();
        for kind in [JobKind::Training, JobKind::Inference] {
            if let Ok(p) = self.permitted_pools(class, kind) {
                all.extend(p);
            }
        }
        if all.is_empty() {
            self.permitted_pools(class, JobKind::Training)?;
        }
        Ok(all)
    }

    /// The mutating call.
    pub fn mutate(&self, req: &Request, lookup: &dyn Lookup) -> Verdict {
        if req.kind.kind != "Pod" || req.operation != "CREATE" || !req.sub_resource.is_empty() {
            return Verdict::Allow(vec![]);
        }
        let pod = &req.object;
        let name = pod_name(req);
        let (class, pools) = match self.regulated(req, lookup) {
            Ok(None) => return Verdict::Allow(vec![]),
            Ok(Some(cp)) => cp,
            Err(why) => return Verdict::Deny(format!("pod {name}: {why}")),
        };
        let mut labels = pod.pointer("/metadata/labels").cloned().unwrap_or_else(|| json!({}));
        match labels.get(RESIDENCY_LABEL).and_then(Value::as_str) {
            Some(l) if l != class => {
                return Verdict::Deny(format!(
                    "pod {name}: its label {RESIDENCY_LABEL}={l} contradicts its namespace's class {class}; remove \
                     the label (the namespace's class applies)"
                ));
            }
            _ => labels[RESIDENCY_LABEL] = class.clone().into(),
        }
        let scheduler = pod.pointer("/spec/schedulerName").and_then(Value::as_str).unwrap_or("");
        if !matches!(scheduler, "" | "default-scheduler") && scheduler != self.scheduler_name {
            return Verdict::Deny(format!(
                "pod {name}: spec.schedulerName is {scheduler:?}; pods of namespace {} (residency class {class}) are \
                 scheduled by {:?}; remove schedulerName",
                req.namespace, self.scheduler_name
            ));
        }
        if let Err(why) = self.check_node_name(pod, &pools, lookup) {
            return Verdict::Deny(format!("pod {name}: {why}"));
        }
        let mut affinity = pod.pointer("/spec/affinity").cloned().unwrap_or_else(|| json!({}));
        let req_value = requirement(&pools);
        let terms = affinity
            .pointer_mut("/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
            .and_then(Value::as_array_mut);
        match terms {
            Some(terms) if !terms.is_empty() => {
                // Terms are ORed: the requirement goes into each, so that every way of matching is confined.
                for t in terms.iter_mut() {
                    match t.get_mut("matchExpressions").and_then(Value::as_array_mut) {
                        Some(exprs) => exprs.push(req_value.clone()),
                        None => t["matchExpressions"] = json!([req_value.clone()]),
                    }
                }
            }
            _ => {
                if !affinity.get("nodeAffinity").is_some_and(Value::is_object) {
                    affinity["nodeAffinity"] = json!({});
                }
                affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] =
                    json!({"nodeSelectorTerms": [{"matchExpressions": [req_value]}]});
            }
        }
        Verdict::Allow(vec![
            PatchOp { op: "add", path: "/metadata/labels".into(), value: labels },
            PatchOp { op: "add", path: "/spec/schedulerName".into(), value: self.scheduler_name.clone().into() },
            PatchOp { op: "add", path: "/spec/affinity".into(), value: affinity },
        ])
    }

    /// The validating call.
    pub fn validate(&self, req: &Request, lookup: &dyn Lookup) -> Verdict {
        match (req.kind.kind.as_str(), req.sub_resource.as_str()) {
            ("Pod", "") if matches!(req.operation.as_str(), "CREATE" | "UPDATE") => self.validate_pod(req, lookup),
            ("Binding", _) if req.operation == "CREATE" => self.validate_binding(req, lookup),
            ("Node", _) if matches!(req.operation.as_str(), "CREATE" | "UPDATE") => {
                self.validate_label_change(req, "node", POOL_LABEL)
            }
            ("Namespace", _) if matches!(req.operation.as_str(), "CREATE" | "UPDATE") => {
                self.validate_label_change(req, "namespace", RESIDENCY_LABEL)
            }
            _ => Verdict::Allow(vec![]),
        }
    }

    fn validate_pod(&self, req: &Request, lookup: &dyn Lookup) -> Verdict {
        let pod = &req.object;
        let name = pod_name(req);
        let (class, pools) = match self.regulated(req, lookup) {
            Ok(None) => return Verdict::Allow(vec![]),
            Ok(Some(cp)) => cp,
            Err(why) => return Verdict::Deny(format!("pod {name}: {why}")),
        };
        let label = pod.pointer(&format!("/metadata/labels/{}", RESIDENCY_LABEL.replace('/', "~1")));
        if label.and_then(Value::as_str) != Some(class.as_str()) {
            return Verdict::Deny(format!(
                "pod {name}: its label {RESIDENCY_LABEL} must be its namespace's class {class} (it is {}); Sovra's \
                 mutating webhook sets it — is it installed?",
                label.map(Value::to_string).unwrap_or_else(|| "missing".into())
            ));
        }
        let scheduler = pod.pointer("/spec/schedulerName").and_then(Value::as_str).unwrap_or("");
        if scheduler != self.scheduler_name {
            return Verdict::Deny(format!(
                "pod {name}: spec.schedulerName must be {:?} in namespace {} (it is {scheduler:?})",
                self.scheduler_name, req.namespace
            ));
        }
        let terms = pod
            .pointer("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
            .and_then(Value::as_array);
        let confined = |t: &Value| {
            t.get("matchExpressions").and_then(Value::as_array).is_some_and(|exprs| {
                exprs.iter().any(|e| {
                    e.get("key").and_then(Value::as_str) == Some(POOL_LABEL)
                        && e.get("operator").and_then(Value::as_str) == Some("In")
                        && e.get("values").and_then(Value::as_array).is_some_and(|v| {
                            !v.is_empty() && v.iter().all(|p| p.as_str().is_some_and(|p| pools.iter().any(|q| q == p)))
                        })
                })
            })
        };
        if !terms.is_some_and(|t| !t.is_empty() && t.iter().all(confined)) {
            return Verdict::Deny(format!(
                "pod {name}: every required node-affinity term must hold {POOL_LABEL} In [{}] (the pools residency \
                 class {class} permits); Sovra's mutating webhook adds it — is it installed?",
                pools.join(", ")
            ));
        }
        match self.check_node_name(pod, &pools, lookup) {
            Ok(()) => Verdict::Allow(vec![]),
            Err(why) => Verdict::Deny(format!("pod {name}: {why}")),
        }
    }

    fn validate_binding(&self, req: &Request, lookup: &dyn Lookup) -> Verdict {
        let class = match lookup.namespace_class(&req.namespace) {
            Ok(None) => return Verdict::Allow(vec![]),
            Ok(Some(c)) => c,
            Err(why) => return Verdict::Deny(format!("binding of pod {}/{}: {why}", req.namespace, req.name)),
        };
        let node = req.object.pointer("/target/name").and_then(Value::as_str).unwrap_or("");
        let key = format!("{}/{}", req.namespace, req.name);
        let pools = match self.residency_pools(&class) {
            Ok(p) => p,
            Err(why) => return Verdict::Deny(format!("binding of pod {key}: {why}")),
        };
        match lookup.node_pool(node) {
            Ok(Some(p)) if pools.contains(&p) => Verdict::Allow(vec![]),
            Ok(p) => Verdict::Deny(format!(
                "binding of pod {key} to node {node}: the node's pool ({}) is not one residency class {class} \
                 permits ({})",
                p.as_deref().unwrap_or("no pool label"),
                pools.iter().cloned().collect::<Vec<_>>().join(", ")
            )),
            Err(why) => Verdict::Deny(format!("binding of pod {key} to node {node}: {why}")),
        }
    }

    fn validate_label_change(&self, req: &Request, what: &str, key: &str) -> Verdict {
        let get = |o: &Value| {
            o.pointer("/metadata/labels").and_then(|l| l.get(key)).and_then(Value::as_str).map(str::to_string)
        };
        let (old, new) = (get(&req.old_object), get(&req.object));
        if old == new {
            return Verdict::Allow(vec![]);
        }
        let u = &req.user_info;
        let admin = self.admins.iter().any(|a| match a {
            Identity::User(n) => *n == u.username,
            Identity::Group(g) => u.groups.iter().any(|x| x == g),
        });
        if admin {
            return Verdict::Allow(vec![]);
        }
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "unset".into());
        let who = if self.admins.is_empty() {
            "nobody (no --admin is configured)".to_string()
        } else {
            self.admins.iter().map(Identity::to_string).collect::<Vec<_>>().join(", ")
        };
        Verdict::Deny(format!(
            "{what} {}: label {key} may be changed only by {who}; {} asked to change it from {} to {}",
            req.name,
            u.username,
            show(&old),
            show(&new)
        ))
    }

    /// `Ok(None)`: the pod's namespace is not regulated; else its class and permitted pools.
    fn regulated(&self, req: &Request, lookup: &dyn Lookup) -> Result<Option<(String, Vec<String>)>, String> {
        let Some(class) = lookup.namespace_class(&req.namespace)? else { return Ok(None) };
        let kind = match req.object.pointer("/metadata/labels").and_then(|l| l.get(KIND_LABEL)).and_then(Value::as_str)
        {
            None | Some("training") => JobKind::Training,
            Some("inference") => JobKind::Inference,
            Some(other) => return Err(format!("label {KIND_LABEL} is {other:?}; write training or inference")),
        };
        let pools = self.permitted_pools(&class, kind)?;
        Ok(Some((class, pools)))
    }

    fn check_node_name(&self, pod: &Value, pools: &[String], lookup: &dyn Lookup) -> Result<(), String> {
        let Some(node) = pod.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty()) else {
            return Ok(());
        };
        match lookup.node_pool(node)? {
            Some(p) if pools.contains(&p) => Ok(()),
            p => Err(format!(
                "spec.nodeName presets node {node}, whose pool ({}) is not one the namespace's residency class \
                 permits ({}); remove spec.nodeName and let Sovra place the pod",
                p.as_deref().unwrap_or("no pool label"),
                pools.join(", ")
            )),
        }
    }
}

fn pod_name(req: &Request) -> String {
    let name = req
        .object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .or_else(|| req.object.pointer("/metadata/generateName").and_then(Value::as_str))
        .unwrap_or(&req.name);
    format!("{}/{name}", req.namespace)
}

#[cfg(test)]
mod tests;
