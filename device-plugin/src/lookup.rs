//! Which pod is being started: the kubelet's Allocate call names device IDs, not the pod, so the plugin finds the
//! pod the way HAMi and gpushare do, among the pods bound to its node, and reads the GPU Sovra chose from the pod's
//! `sovra.io/gpu-devices` annotation.
//!
//! **The rule.** For a container request of `n` device IDs (`n` milli-GPU), the candidates are the containers
//! (init or regular) that request exactly `n` of `sovra.io/gpu-milli`, in pods on this node that are `Pending` and
//! not being deleted, and that this plugin has not allocated yet. Each candidate's pod must carry a share
//! annotation `<index>:<milli>` with `milli ≥ n`, and `sovra.io/gpu-devices-node` naming this node. Then:
//!
//! - no candidate → refused (the kubelet fails the pod's admission; nothing is handed out);
//! - one candidate, or several whose pods all name **the same GPU** (the answer is then the same whichever pod it
//!   is) → that GPU; the earliest-created candidate is recorded as allocated;
//! - candidates naming different GPUs, or any candidate without a valid annotation → refused as ambiguous, naming
//!   the pods. Never a guess: a wrong guess would give a container another tenant's GPU.

use sovra_domain::gpu_devices::{self, GPU_DEVICES_ANNOTATION, GPU_DEVICES_NODE_ANNOTATION, GpuDevices};
use std::collections::BTreeSet;
use std::future::Future;

/// What the plugin needs to know of a pod bound to its node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodView {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
    /// Creation time, seconds since the Unix epoch (orders candidates; 0 when unknown).
    pub created_s: i64,
    /// Phase `Pending` (or no phase yet) and no deletion timestamp: its containers may still be starting.
    pub starting: bool,
    /// The value of the `sovra.io/gpu-devices` annotation, when present.
    pub gpu_devices: Option<String>,
    /// The value of the `sovra.io/gpu-devices-node` annotation, when present.
    pub gpu_devices_node: Option<String>,
    /// Init containers, then containers.
    pub containers: Vec<ContainerView>,
}

/// One container of a [`PodView`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerView {
    /// Name.
    pub name: String,
    /// Its `sovra.io/gpu-milli` request (requests, else limits); 0 when it asks for none.
    pub gpu_milli: u64,
}

/// Lists the pods bound to this plugin's node.
pub trait PodSource: Send + Sync + 'static {
    /// The pods whose `spec.nodeName` is this node.
    fn pods_on_node(&self) -> impl Future<Output = Result<Vec<PodView>, LookupError>> + Send;
}

/// The pod source could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("listing the pods on node {node}: {message}")]
pub struct LookupError {
    /// The node.
    pub node: String,
    /// What went wrong.
    pub message: String,
}

/// The containers this plugin has already allocated, as `(pod UID, container name)`.
pub type Ledger = BTreeSet<(String, String)>;

/// The answer for one container request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// `namespace/name` of the pod recorded as allocated.
    pub pod: String,
    /// Its UID.
    pub uid: String,
    /// The container.
    pub container: String,
    /// The GPU's NVML index, from the annotation.
    pub gpu: u32,
}

/// Why no GPU is handed out for a container request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoMatch {
    /// No pending pod on the node asks for this amount.
    #[error(
        "no pending pod on node {node} has a container asking for {milli} sovra.io/gpu-milli that is not allocated yet; refusing rather than handing out a GPU nobody chose"
    )]
    NoPod {
        /// The node.
        node: String,
        /// The amount asked.
        milli: u64,
    },
    /// The one candidate has no usable annotation.
    #[error("pod {pod} asks for {milli} sovra.io/gpu-milli but {problem}; was it bound by Sovra's scheduler?")]
    Annotation {
        /// `namespace/name`.
        pod: String,
        /// The amount asked.
        milli: u64,
        /// What is wrong with its annotation.
        problem: String,
    },
    /// Several candidates that would get different answers.
    #[error(
        "cannot tell which pod is starting: {count} pending pods on node {node} ask for {milli} sovra.io/gpu-milli and their {GPU_DEVICES_ANNOTATION} differ ({detail}); refusing rather than guessing"
    )]
    Ambiguous {
        /// The node.
        node: String,
        /// The amount asked.
        milli: u64,
        /// How many candidates.
        count: usize,
        /// Each candidate and what its annotation says.
        detail: String,
    },
}

fn resolve(p: &PodView, milli: u64, node: &str) -> Result<u32, String> {
    let Some(text) = &p.gpu_devices else {
        return Err(format!("has no {GPU_DEVICES_ANNOTATION} annotation"));
    };
    match p.gpu_devices_node.as_deref() {
        Some(n) if n == node => {}
        Some(n) => return Err(format!("its {GPU_DEVICES_NODE_ANNOTATION} names node {n}, not {node}")),
        None => return Err(format!("has no {GPU_DEVICES_NODE_ANNOTATION} annotation")),
    }
    match gpu_devices::parse(text) {
        Ok(GpuDevices::Share { gpu, milli: m }) if u64::from(m) >= milli => Ok(gpu),
        Ok(GpuDevices::Share { milli: m, .. }) => {
            Err(format!("its {GPU_DEVICES_ANNOTATION} reserves {m} milli, less than the {milli} asked"))
        }
        Ok(GpuDevices::Whole(_)) => Err(format!("its {GPU_DEVICES_ANNOTATION} {text:?} names whole GPUs, not a share")),
        Err(e) => Err(e.to_string()),
    }
}

/// Applies the rule above to the pods on `node`, for a container request of `milli` device IDs.
pub fn choose(node: &str, pods: &[PodView], milli: u64, ledger: &Ledger) -> Result<Choice, NoMatch> {
    let mut candidates: Vec<(&PodView, &ContainerView)> = pods
        .iter()
        .filter(|p| p.starting)
        .flat_map(|p| p.containers.iter().map(move |c| (p, c)))
        .filter(|(p, c)| c.gpu_milli == milli && !ledger.contains(&(p.uid.clone(), c.name.clone())))
        .collect();
    // Earliest first, then by name: which identical candidate is recorded does not depend on listing order.
    candidates
        .sort_by(|(a, _), (b, _)| (a.created_s, &a.namespace, &a.name).cmp(&(b.created_s, &b.namespace, &b.name)));
    let Some(&(first, container)) = candidates.first() else {
        return Err(NoMatch::NoPod { node: node.to_string(), milli });
    };
    let resolved: Vec<Result<u32, String>> = candidates.iter().map(|(p, _)| resolve(p, milli, node)).collect();
    let pod = format!("{}/{}", first.namespace, first.name);
    match &resolved[0] {
        Err(problem) if candidates.len() == 1 => {
            return Err(NoMatch::Annotation { pod, milli, problem: problem.clone() });
        }
        Ok(gpu) if resolved.iter().all(|r| r.as_ref() == Ok(gpu)) => {
            return Ok(Choice { pod, uid: first.uid.clone(), container: container.name.clone(), gpu: *gpu });
        }
        _ => {}
    }
    let detail = candidates
        .iter()
        .zip(&resolved)
        .map(|((p, _), r)| match r {
            Ok(gpu) => format!("{}/{}: GPU {gpu}", p.namespace, p.name),
            Err(e) => format!("{}/{}: {e}", p.namespace, p.name),
        })
        .collect::<Vec<_>>()
        .join("; ");
    Err(NoMatch::Ambiguous { node: node.to_string(), milli, count: candidates.len(), detail })
}

/// Forgets allocations of pods that are no longer on the node, so the ledger stays as small as the node's pods.
pub fn prune(ledger: &mut Ledger, pods: &[PodView]) {
    let live: BTreeSet<&str> = pods.iter().map(|p| p.uid.as_str()).collect();
    ledger.retain(|(uid, _)| live.contains(uid.as_str()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, created_s: i64, milli: u64, annotation: Option<&str>) -> PodView {
        PodView {
            namespace: "ml".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            created_s,
            starting: true,
            gpu_devices: annotation.map(str::to_string),
            gpu_devices_node: Some("n1".into()),
            containers: vec![ContainerView { name: "main".into(), gpu_milli: milli }],
        }
    }

    #[test]
    fn the_one_pending_pod_asking_that_amount_gets_its_annotated_gpu() {
        let pods = vec![pod("a", 1, 250, Some("2:250")), pod("b", 2, 500, Some("0:500"))];
        let c = choose("n1", &pods, 250, &Ledger::new()).unwrap();
        assert_eq!((c.pod.as_str(), c.gpu, c.container.as_str()), ("ml/a", 2, "main"));
        assert_eq!(choose("n1", &pods, 500, &Ledger::new()).unwrap().gpu, 0);
    }

    #[test]
    fn running_deleted_and_allocated_pods_are_not_candidates() {
        let mut running = pod("a", 1, 250, Some("2:250"));
        running.starting = false;
        let pods = vec![running, pod("b", 2, 250, Some("1:250"))];
        let mut ledger = Ledger::new();
        let c = choose("n1", &pods, 250, &ledger).unwrap();
        assert_eq!((c.pod.as_str(), c.gpu), ("ml/b", 1));
        ledger.insert((c.uid, c.container));
        let e = choose("n1", &pods, 250, &ledger).unwrap_err();
        assert!(matches!(e, NoMatch::NoPod { milli: 250, .. }), "{e}");
        assert!(e.to_string().contains("no pending pod on node n1"), "{e}");
    }

    #[test]
    fn pods_naming_the_same_gpu_are_interchangeable_the_earliest_is_recorded() {
        let pods = vec![pod("late", 9, 250, Some("2:250")), pod("early", 3, 250, Some("2:250"))];
        let c = choose("n1", &pods, 250, &Ledger::new()).unwrap();
        assert_eq!((c.pod.as_str(), c.gpu), ("ml/early", 2));
    }

    #[test]
    fn different_gpus_for_the_same_amount_are_refused_as_ambiguous() {
        let pods = vec![pod("a", 1, 250, Some("2:250")), pod("b", 2, 250, Some("3:250"))];
        let e = choose("n1", &pods, 250, &Ledger::new()).unwrap_err().to_string();
        assert!(e.contains("cannot tell which pod") && e.contains("ml/a: GPU 2") && e.contains("ml/b: GPU 3"), "{e}");
        // One of two candidates without an annotation is ambiguous too.
        let pods = vec![pod("a", 1, 250, Some("2:250")), pod("b", 2, 250, None)];
        let e = choose("n1", &pods, 250, &Ledger::new()).unwrap_err().to_string();
        assert!(e.contains("cannot tell which pod") && e.contains("ml/b: has no sovra.io/gpu-devices"), "{e}");
    }

    #[test]
    fn a_single_candidate_with_a_bad_annotation_is_refused_naming_it() {
        for (ann, want) in [
            (None, "has no sovra.io/gpu-devices annotation"),
            (Some("2:100"), "reserves 100 milli, less than the 250 asked"),
            (Some("0,1"), "names whole GPUs"),
            (Some("2:abc"), "annotation sovra.io/gpu-devices=\"2:abc\""),
        ] {
            let e = choose("n1", &[pod("a", 1, 250, ann)], 250, &Ledger::new()).unwrap_err().to_string();
            assert!(e.starts_with("pod ml/a asks for 250 sovra.io/gpu-milli") && e.contains(want), "{ann:?}: {e}");
        }
    }

    #[test]
    fn indices_recorded_for_another_node_are_refused() {
        let mut p = pod("a", 1, 250, Some("2:250"));
        p.gpu_devices_node = Some("n2".into());
        let e = choose("n1", &[p.clone()], 250, &Ledger::new()).unwrap_err().to_string();
        assert!(e.contains("sovra.io/gpu-devices-node names node n2, not n1"), "{e}");
        p.gpu_devices_node = None;
        let e = choose("n1", &[p], 250, &Ledger::new()).unwrap_err().to_string();
        assert!(e.contains("has no sovra.io/gpu-devices-node annotation"), "{e}");
    }

    #[test]
    fn prune_forgets_pods_that_left() {
        let mut ledger: Ledger = [("uid-a".into(), "main".into()), ("uid-gone".into(), "main".into())].into();
        prune(&mut ledger, &[pod("a", 1, 250, None)]);
        assert_eq!(ledger.len(), 1);
    }
}
