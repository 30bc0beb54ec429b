//! MIG (multi-instance GPU) slices: pods asking for `nvidia.com/mig-<profile>` (NVIDIA's device plugin, `mixed`
//! strategy) are Sovra's too.
//!
//! The placement core schedules each MIG instance as a device of its own, of model `<gpu model>-MIG-<profile>`
//! (`A100-80GB-MIG-3g.40gb`), with 1000 milli of capacity ([`sovra_domain::MigInstance`]). A pod asking for `n`
//! slices of one profile is therefore a job of `n` whole devices whose allowed models are the MIG models of that
//! profile in the cluster ([`job_for`]), restricted to the base models of `sovra.io/gpu-models` when the pod names
//! some. Residency, pool purpose and capacity are then checked by the core as for whole GPUs.
//!
//! MIG instances come from the cluster file (`gpus.mig`), or, for a Node from the API, from its allocatable
//! `nvidia.com/mig-<profile>` counts ([`mig_gpus`]): the API does not say which physical GPU holds which slice, so
//! the slices of one profile are grouped, at most [`sovra_domain::limits::MAX_MIG_PER_GPU`] per GPU, into GPUs of
//! the node's product model. Capacity is counted per slice, which is what the device plugin hands out.

use crate::cache::KubeNode;
use crate::pod::PodRequest;
use sovra_domain::{Gpu, Health, Job, MigInstance};
use sovra_placement::Topology;
use std::borrow::Cow;

/// The prefix of NVIDIA's MIG resources (`nvidia.com/mig-1g.10gb`).
pub const MIG_RESOURCE_PREFIX: &str = "nvidia.com/mig-";

/// The MIG profile a resource name asks for (`nvidia.com/mig-3g.40gb` → `3g.40gb`), if it is a MIG resource.
pub fn mig_profile(resource: &str) -> Option<&str> {
    resource.strip_prefix(MIG_RESOURCE_PREFIX).filter(|p| !p.is_empty())
}

/// The device model name of a MIG instance, as the placement core names it.
pub fn mig_model(gpu_model: &str, profile: &str) -> String {
    format!("{gpu_model}-MIG-{profile}")
}

/// The job to place for a request on `topo`: the request's own job, except for a MIG request, whose allowed models
/// become the MIG models of its profile present in `topo` (of the base models the pod names, if any). When there is
/// none, the allowed model is `*-MIG-<profile>`, which no device has: the pod fails on every node with "no GPU of
/// an allowed model", never on "any model".
pub fn job_for<'a>(req: &'a PodRequest, topo: &Topology) -> Cow<'a, Job> {
    let Some(profile) = &req.mig_profile else { return Cow::Borrowed(&req.job) };
    let suffix = format!("-MIG-{profile}");
    let wanted = &req.job.resources.gpu_models;
    let mut models: Vec<String> = topo
        .models
        .iter()
        .filter(|m| {
            m.strip_suffix(suffix.as_str())
                .is_some_and(|base| wanted.is_empty() || wanted.iter().any(|w| w == base || w == *m))
        })
        .cloned()
        .collect();
    models.sort();
    if models.is_empty() {
        models.push(mig_model("*", profile));
    }
    let mut job = req.job.clone();
    job.resources.gpu_models = models;
    Cow::Owned(job)
}

/// The MIG slices a pod asks for: `(profile, count)` by the same effective-request rules as any resource
/// ([`crate::pod::pod_amount`]), `None` when it asks for none. Slices of two profiles in one pod are refused (the
/// core places one device model per job), naming both.
pub fn mig_request(pod: &crate::wire::Pod) -> Result<Option<(String, u64)>, String> {
    let names: std::collections::BTreeSet<&str> = pod
        .spec
        .containers
        .iter()
        .chain(&pod.spec.init_containers)
        .flatten()
        .flat_map(|c| c.resources.requests.keys().chain(c.resources.limits.keys()))
        .map(String::as_str)
        .filter(|n| mig_profile(n).is_some())
        .collect();
    let mut asked = Vec::new();
    for name in names {
        let n = crate::pod::pod_amount(pod, name, crate::quantity::count)?;
        if n > 0 {
            asked.push((name, n));
        }
    }
    match asked.as_slice() {
        [] => Ok(None),
        [(name, n)] => Ok(mig_profile(name).map(|p| (p.to_string(), *n))),
        [(a, _), (b, _), ..] => Err(format!(
            "pod {}: asks for MIG slices of two profiles ({a} and {b}); Sovra places one MIG profile per pod — split \
             the pod or ask for one profile",
            crate::pod::pod_key(pod)
        )),
    }
}

/// GPUs in MIG mode for a Node from the API: its allocatable slices of each profile (in profile order), at most
/// seven per GPU, on at most `room` GPUs, of model `model`. Each slice's memory is GPU feature discovery's
/// `nvidia.com/mig-<profile>.memory` label when present, else 0 (the core does not place by it).
pub fn mig_gpus(k: &KubeNode, model: &str, room: usize) -> Vec<Gpu> {
    let per_gpu = sovra_domain::limits::MAX_MIG_PER_GPU as u32;
    let mut gpus = Vec::new();
    for (profile, &count) in &k.mig {
        let memory_mib = k.labels.get(&format!("{MIG_RESOURCE_PREFIX}{profile}.memory")).and_then(|m| m.parse().ok());
        let mut left = count;
        while left > 0 && gpus.len() < room {
            let here = left.min(per_gpu);
            gpus.push(Gpu {
                uuid: format!("{}/{MIG_RESOURCE_PREFIX}{profile}/{}", k.name, gpus.len()),
                model: model.to_string(),
                memory_mib: 0,
                numa_node: None,
                nvlink_peers: vec![],
                health: Health::Healthy,
                mig: (0..here)
                    .map(|_| MigInstance {
                        profile: profile.clone(),
                        memory_mib: memory_mib.unwrap_or(0),
                        uuid: String::new(),
                    })
                    .collect(),
            });
            left -= here;
        }
    }
    gpus
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_are_grouped_seven_per_gpu_in_profile_order() {
        let k = KubeNode {
            name: "n".into(),
            mig: [("3g.40gb".to_string(), 2), ("1g.10gb".to_string(), 9)].into_iter().collect(),
            labels: [("nvidia.com/mig-1g.10gb.memory".to_string(), "9856".to_string())].into_iter().collect(),
            ..Default::default()
        };
        let g = mig_gpus(&k, "A100-80GB", 64);
        let shape: Vec<(String, usize)> = g.iter().map(|g| (g.mig[0].profile.clone(), g.mig.len())).collect();
        assert_eq!(shape, vec![("1g.10gb".into(), 7), ("1g.10gb".into(), 2), ("3g.40gb".into(), 2)]);
        assert_eq!(g[0].mig[0].memory_mib, 9856);
        assert_eq!(mig_gpus(&k, "A100-80GB", 1).len(), 1, "room caps the GPUs");
    }

    #[test]
    fn resource_names() {
        assert_eq!(mig_profile("nvidia.com/mig-1g.10gb"), Some("1g.10gb"));
        assert_eq!(mig_profile("nvidia.com/mig-"), None);
        assert_eq!(mig_profile("nvidia.com/gpu"), None);
    }
}
