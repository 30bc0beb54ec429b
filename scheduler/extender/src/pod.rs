//! From a Kubernetes pod to a Sovra job: GPUs, GPU share, residency class, kind and gang, read from documented
//! resources, labels and annotations (docs/kubernetes.md lists them).

use crate::quantity;
use crate::wire::Pod;
use sovra_domain::{GPU_MILLI, Job, JobKind, NvlinkWish, Resources};

pub mod effective;

pub use effective::pod_amount;

/// Whole GPUs, as NVIDIA's device plugin advertises them.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";
/// A share of one GPU in milli-GPU (1..=999): an extended resource Sovra's device plugin advertises (1,000 per GPU);
/// kube-scheduler checks a node's total, Sovra accounts per GPU.
pub const GPU_MILLI_RESOURCE: &str = "sovra.io/gpu-milli";
/// Label: the residency class every replica's zone must satisfy (required).
pub const RESIDENCY_LABEL: &str = "sovra.io/residency";
/// Label: `training` (default) or `inference`; must equal the pool's purpose.
pub const KIND_LABEL: &str = "sovra.io/kind";
/// Label: the queue the pod is charged to (informational here; default `kubernetes`).
pub const QUEUE_LABEL: &str = "sovra.io/queue";
/// Label: the pod group (gang) the pod belongs to, within its namespace.
pub const POD_GROUP_LABEL: &str = "sovra.io/pod-group";
/// Annotation (or label): how many pods of the group must be placeable together before any is let through.
pub const MIN_MEMBER_ANNOTATION: &str = "sovra.io/pod-group-min-member";
/// Annotation: allowed GPU models, comma-separated (`H100-80GB,A100-80GB`), as in the cluster file.
pub const GPU_MODELS_ANNOTATION: &str = "sovra.io/gpu-models";
/// Annotation: `none`, `prefer` (default for 2+ GPUs) or `require`: the pod's GPUs on one NVLink island.
pub const NVLINK_ANNOTATION: &str = "sovra.io/nvlink";

/// Most MIG slices one pod may ask for: 64 GPUs of 7 slices.
pub const MAX_MIG_SLICES: u64 = 64 * sovra_domain::limits::MAX_MIG_PER_GPU;

/// Largest gang Sovra accepts.
pub const MAX_GANG: u32 = 10_000;

/// A gang: the pods of one group in one namespace, placed all together or not at all.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Gang {
    /// `namespace/group`.
    pub key: String,
    /// The pod group's minimum member count.
    pub min_member: u32,
}

/// What a pod asks for, as a Sovra job of one replica, and its gang.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRequest {
    /// The job (`replicas: 1`; its name is `namespace/name`).
    pub job: Job,
    /// The gang, when the pod has a `sovra.io/pod-group` label.
    pub gang: Option<Gang>,
    /// The MIG profile when the pod asks for `nvidia.com/mig-<profile>` slices (then `job.resources.gpus` counts
    /// slices, and the allowed models are resolved on the cluster by [`crate::mig::job_for`]).
    pub mig_profile: Option<String>,
}

impl PodRequest {
    /// Whether the pod asks for any GPU.
    pub fn wants_gpu(&self) -> bool {
        self.job.resources.gpus > 0
    }
}

/// `namespace/name` of a pod (`default` when the namespace is empty).
pub fn pod_key(pod: &Pod) -> String {
    let ns = if pod.metadata.namespace.is_empty() { "default" } else { &pod.metadata.namespace };
    format!("{ns}/{}", pod.metadata.name)
}

/// The pod's gang, from its `sovra.io/pod-group` label and `sovra.io/pod-group-min-member` annotation (or label):
/// `None` for a pod of no group; an error when the minimum member count is not a whole number from 1 to
/// [`MAX_GANG`].
pub fn pod_gang(pod: &Pod) -> Result<Option<Gang>, String> {
    let meta = &pod.metadata;
    let label = |k: &str| meta.labels.0.get(k).or_else(|| meta.annotations.0.get(k)).map(|v| v.trim());
    let annotation = |k: &str| meta.annotations.0.get(k).or_else(|| meta.labels.0.get(k)).map(|v| v.trim());
    let name = pod_key(pod);
    Ok(match label(POD_GROUP_LABEL) {
        None | Some("") => None,
        Some(group) => {
            let min_member = match annotation(MIN_MEMBER_ANNOTATION) {
                None | Some("") => 1,
                Some(v) => v.parse::<u32>().ok().filter(|n| (1..=MAX_GANG).contains(n)).ok_or_else(|| {
                    format!("pod {name}: {MIN_MEMBER_ANNOTATION} is {v:?}; write a whole number from 1 to {MAX_GANG}")
                })?,
            };
            let ns = if meta.namespace.is_empty() { "default" } else { &meta.namespace };
            Some(Gang { key: format!("{ns}/{group}"), min_member })
        }
    })
}

/// Reads a pod's request. Errors name the label, annotation or resource and say what to write instead.
pub fn pod_request(pod: &Pod) -> Result<PodRequest, String> {
    let meta = &pod.metadata;
    let name = pod_key(pod);
    let label = |k: &str| meta.labels.0.get(k).or_else(|| meta.annotations.0.get(k)).map(|v| v.trim());
    let annotation = |k: &str| meta.annotations.0.get(k).or_else(|| meta.labels.0.get(k)).map(|v| v.trim());
    let residency = match label(RESIDENCY_LABEL) {
        Some(v) if !v.is_empty() => v.to_string(),
        _ => {
            return Err(format!(
                "pod {name} has no {RESIDENCY_LABEL} label; add one naming a residency class of the Sovra cluster \
                 config, e.g. {RESIDENCY_LABEL}: eu-restricted"
            ));
        }
    };
    let kind = match label(KIND_LABEL) {
        None | Some("") | Some("training") => JobKind::Training,
        Some("inference") => JobKind::Inference,
        Some(other) => {
            return Err(format!("pod {name}: label {KIND_LABEL} is {other:?}; write training or inference"));
        }
    };
    let gpus = pod_amount(pod, GPU_RESOURCE, quantity::count)?;
    let milli = pod_amount(pod, GPU_MILLI_RESOURCE, quantity::count)?;
    let (gpus, gpu_milli) = match (gpus, milli) {
        (0, 0) => (0, 0),
        (g, 0) => (g, u64::from(GPU_MILLI)),
        (0, m) if m < u64::from(GPU_MILLI) => (1, m),
        (0, m) => {
            return Err(format!(
                "pod {name}: {GPU_MILLI_RESOURCE} is {m}; a share is 1 to 999 milli-GPU of one GPU — ask for whole \
                 GPUs with {GPU_RESOURCE}"
            ));
        }
        (_, _) => {
            return Err(format!(
                "pod {name} asks for both {GPU_RESOURCE} and {GPU_MILLI_RESOURCE}; ask for whole GPUs or for a share \
                 of one, not both"
            ));
        }
    };
    let (gpus, gpu_milli, mig_profile) = match crate::mig::mig_request(pod)? {
        None => (gpus, gpu_milli, None),
        Some((profile, n)) if gpus == 0 => {
            if n > MAX_MIG_SLICES {
                return Err(format!(
                    "pod {name}: {}{profile} is {n}; a node has at most {MAX_MIG_SLICES} MIG slices",
                    crate::mig::MIG_RESOURCE_PREFIX
                ));
            }
            (n, u64::from(GPU_MILLI), Some(profile))
        }
        Some((profile, _)) => {
            return Err(format!(
                "pod {name} asks for both {} and {}{profile}; ask for whole GPUs, a share or MIG slices, one of them",
                if milli > 0 { GPU_MILLI_RESOURCE } else { GPU_RESOURCE },
                crate::mig::MIG_RESOURCE_PREFIX
            ));
        }
    };
    let gpus = u32::try_from(gpus)
        .ok()
        .filter(|&g| g <= 64 || (mig_profile.is_some() && u64::from(g) <= MAX_MIG_SLICES))
        .ok_or_else(|| format!("pod {name}: {GPU_RESOURCE} is {gpus}; a node has at most 64 GPUs"))?;
    let gpu_models: Vec<String> = annotation(GPU_MODELS_ANNOTATION)
        .map(|v| v.split(',').map(str::trim).filter(|m| !m.is_empty()).map(String::from).collect())
        .unwrap_or_default();
    let nvlink = match annotation(NVLINK_ANNOTATION) {
        None | Some("") => {
            // MIG slices are isolated devices: no NVLink between them.
            if gpus >= 2 && mig_profile.is_none() { NvlinkWish::Prefer } else { NvlinkWish::None }
        }
        Some("none") => NvlinkWish::None,
        Some("prefer") => NvlinkWish::Prefer,
        Some("require") => NvlinkWish::Require,
        Some(other) => {
            return Err(format!(
                "pod {name}: annotation {NVLINK_ANNOTATION} is {other:?}; write none, prefer or require"
            ));
        }
    };
    let cpu_milli = pod_amount(pod, "cpu", quantity::cpu_milli)?;
    let memory_mib = pod_amount(pod, "memory", quantity::memory_mib)?;
    let gang = pod_gang(pod)?;
    Ok(PodRequest {
        job: Job {
            name,
            kind,
            queue: label(QUEUE_LABEL).filter(|q| !q.is_empty()).unwrap_or("kubernetes").to_string(),
            priority: pod.spec.priority.unwrap_or(0),
            residency,
            replicas: 1,
            resources: Resources { gpus, gpu_milli: gpu_milli as u32, gpu_models, cpu_milli, memory_mib },
            nvlink,
            run: None,
            model: None,
            exception: None,
        },
        gang,
        mig_profile,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: &str) -> Pod {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn whole_gpus_share_and_errors() {
        let p = pod(
            r#"{"metadata":{"name":"a","namespace":"ml","labels":{"sovra.io/residency":"eu-restricted","sovra.io/kind":"inference"}},
                "spec":{"containers":[{"name":"c","resources":{"limits":{"nvidia.com/gpu":"2"},"requests":{"cpu":"500m","memory":"1Gi"}}},
                                      {"name":"d","resources":{"requests":{"nvidia.com/gpu":"1","cpu":"1"}}}],
                        "initContainers":[{"name":"i","resources":{"requests":{"cpu":"4"}}}]}}"#,
        );
        let r = pod_request(&p).unwrap();
        assert_eq!(r.job.name, "ml/a");
        assert_eq!(r.job.kind, JobKind::Inference);
        assert_eq!((r.job.resources.gpus, r.job.resources.gpu_milli), (3, 1000));
        assert_eq!(r.job.resources.cpu_milli, 4000, "init container larger than the sum");
        assert_eq!(r.job.resources.memory_mib, 1024);
        assert_eq!(r.job.nvlink, NvlinkWish::Prefer);

        let share = pod(
            r#"{"metadata":{"name":"s","labels":{"sovra.io/residency":"x","sovra.io/pod-group":"g"},"annotations":{"sovra.io/pod-group-min-member":"3","sovra.io/gpu-models":"L4, A100"}},
                "spec":{"containers":[{"resources":{"requests":{"sovra.io/gpu-milli":"250"}}}]}}"#,
        );
        let r = pod_request(&share).unwrap();
        assert_eq!((r.job.resources.gpus, r.job.resources.gpu_milli), (1, 250));
        assert_eq!(r.gang, Some(Gang { key: "default/g".into(), min_member: 3 }));
        assert_eq!(r.job.resources.gpu_models, vec!["L4", "A100"]);

        for (json, want) in [
            (r#"{"metadata":{"name":"n"}}"#, "has no sovra.io/residency label"),
            (
                r#"{"metadata":{"name":"n","labels":{"sovra.io/residency":"x","sovra.io/kind":"batch"}}}"#,
                "training or inference",
            ),
            (
                r#"{"metadata":{"name":"n","labels":{"sovra.io/residency":"x"}},"spec":{"containers":[{"resources":{"requests":{"nvidia.com/gpu":"1","sovra.io/gpu-milli":"500"}}}]}}"#,
                "not both",
            ),
            (
                r#"{"metadata":{"name":"n","labels":{"sovra.io/residency":"x"}},"spec":{"containers":[{"resources":{"requests":{"sovra.io/gpu-milli":"1000"}}}]}}"#,
                "1 to 999",
            ),
            (
                r#"{"metadata":{"name":"n","labels":{"sovra.io/residency":"x"}},"spec":{"containers":[{"resources":{"requests":{"nvidia.com/gpu":"-1"}}}]}}"#,
                "negative",
            ),
            (
                r#"{"metadata":{"name":"n","labels":{"sovra.io/residency":"x","sovra.io/pod-group":"g"},"annotations":{"sovra.io/pod-group-min-member":"0"}}}"#,
                "from 1 to",
            ),
            (
                r#"{"metadata":{"name":"n","labels":{"sovra.io/residency":"x"},"annotations":{"sovra.io/nvlink":"maybe"}}}"#,
                "none, prefer or require",
            ),
        ] {
            let e = pod_request(&pod(json)).unwrap_err();
            assert!(e.contains(want), "{json}: {e}");
        }
    }
}
