//! A pod's effective request of one resource, by Kubernetes' rules (`PodRequests` of
//! `k8s.io/component-helpers/resource`, which kube-scheduler's `NodeResourcesFit` uses):
//!
//! 1. the regular containers are summed, and so are the **native sidecars** (init containers with
//!    `restartPolicy: Always`), which keep running beside them;
//! 2. each regular init container runs alone after the sidecars declared before it have started, so it needs its
//!    own request plus theirs; the pod needs the largest of those (and of the sidecars' running sums);
//! 3. the effective request is the larger of 1 and 2;
//! 4. **pod-level resources** (`spec.resources`, KEP-2837), when set, replace the result for the resources they
//!    name — only CPU, memory and huge pages are pod-level resources; extended resources such as GPUs always come
//!    from the containers;
//! 5. the runtime class's `spec.overhead` is added.
//!
//! A container's request is its `requests` entry, else its `limits` entry (the API server copies limits into
//! missing requests, for extended resources always).

use crate::quantity;
use crate::wire::{Container, Pod, QuantityText};
use std::collections::BTreeMap;

/// Reads a quantity of one resource.
pub type Read = fn(&str) -> Result<u64, quantity::QuantityError>;

/// Whether Kubernetes lets `resource` be set at pod level (KEP-2837: CPU, memory, huge pages).
pub fn is_pod_level_resource(resource: &str) -> bool {
    matches!(resource, "cpu" | "memory") || resource.starts_with("hugepages-")
}

fn entry(
    requests: &BTreeMap<String, QuantityText>,
    limits: &BTreeMap<String, QuantityText>,
    resource: &str,
) -> Option<String> {
    requests.get(resource).or_else(|| limits.get(resource)).map(|q| q.0.clone())
}

fn read_field(text: Option<String>, resource: &str, read: Read, field: impl FnOnce() -> String) -> Result<u64, String> {
    match text {
        None => Ok(0),
        Some(t) => read(&t).map_err(|e| format!("{}: {resource}: {e}", field())),
    }
}

/// A container's request of `resource` (0 when it names none).
pub fn container_amount(c: &Container, resource: &str, read: Read) -> Result<u64, String> {
    let text = entry(&c.resources.requests, &c.resources.limits, resource);
    read_field(text, resource, read, || format!("container {:?}", c.name))
}

/// Whether an init container is a native sidecar (`restartPolicy: Always`).
pub fn is_sidecar(c: &Container) -> bool {
    c.restart_policy == "Always"
}

/// The pod's effective request of `resource` (see the module documentation). Errors name the container or the
/// pod field whose quantity cannot be read.
pub fn pod_amount(pod: &Pod, resource: &str, read: Read) -> Result<u64, String> {
    let mut running = 0u64;
    for c in pod.spec.containers.iter().flatten() {
        running = running.saturating_add(container_amount(c, resource, read)?);
    }
    let mut sidecars = 0u64;
    let mut init_peak = 0u64;
    for c in pod.spec.init_containers.iter().flatten() {
        let own = container_amount(c, resource, read)?;
        if is_sidecar(c) {
            sidecars = sidecars.saturating_add(own);
            running = running.saturating_add(own);
            init_peak = init_peak.max(sidecars);
        } else {
            init_peak = init_peak.max(own.saturating_add(sidecars));
        }
    }
    let mut amount = running.max(init_peak);
    let pod_level = &pod.spec.resources;
    if is_pod_level_resource(resource)
        && let Some(text) = entry(&pod_level.requests, &pod_level.limits, resource)
    {
        amount = read_field(Some(text), resource, read, || "pod-level spec.resources".to_string())?;
    }
    let overhead = read_field(pod.spec.overhead.get(resource).map(|q| q.0.clone()), resource, read, || {
        "spec.overhead".to_string()
    })?;
    Ok(amount.saturating_add(overhead))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}, "spec": spec})).unwrap()
    }

    fn gpus(p: &Pod) -> u64 {
        pod_amount(p, "nvidia.com/gpu", quantity::count).unwrap()
    }

    fn cpu(p: &Pod) -> u64 {
        pod_amount(p, "cpu", quantity::cpu_milli).unwrap()
    }

    fn c(name: &str, requests: serde_json::Value) -> serde_json::Value {
        serde_json::json!({"name": name, "resources": {"requests": requests}})
    }

    fn sidecar(name: &str, requests: serde_json::Value) -> serde_json::Value {
        serde_json::json!({"name": name, "restartPolicy": "Always", "resources": {"requests": requests}})
    }

    #[test]
    fn a_native_sidecar_runs_beside_the_containers_and_adds_to_them() {
        // The case: 8 GPUs in the main container, 8 in a sidecar. Kubernetes counts 16 (the old code 8).
        let p = pod(serde_json::json!({
            "containers": [c("main", serde_json::json!({"nvidia.com/gpu": "8"}))],
            "initContainers": [sidecar("side", serde_json::json!({"nvidia.com/gpu": "8"}))]}));
        assert_eq!(gpus(&p), 16);
    }

    #[test]
    fn a_regular_init_container_needs_the_sidecars_started_before_it() {
        // side-a (2 CPU) starts, then init (4 CPU) runs beside it: 6; side-b starts after init, so init does not
        // see it. Containers: 1 + sidecars 2 + 3 = 6 while running. Peak: max(6, 6) = 6; with init at 5: 7.
        let spec = |init_cpu: &str| {
            serde_json::json!({
                "containers": [c("main", serde_json::json!({"cpu": "1"}))],
                "initContainers": [sidecar("side-a", serde_json::json!({"cpu": "2"})),
                                   c("init", serde_json::json!({"cpu": init_cpu})),
                                   sidecar("side-b", serde_json::json!({"cpu": "3"}))]})
        };
        assert_eq!(cpu(&pod(spec("4"))), 6000);
        assert_eq!(cpu(&pod(spec("5"))), 7000, "init 5 + side-a 2 exceeds the running 6");
        // The old rule (max of the container sum and the largest init container) gave max(1, 5) = 5.
    }

    #[test]
    fn a_plain_init_container_larger_than_the_sum_still_wins() {
        let p = pod(serde_json::json!({
            "containers": [c("a", serde_json::json!({"nvidia.com/gpu": "1"})), c("b", serde_json::json!({"nvidia.com/gpu": "1"}))],
            "initContainers": [c("i", serde_json::json!({"nvidia.com/gpu": "4"}))]}));
        assert_eq!(gpus(&p), 4);
    }

    #[test]
    fn pod_level_resources_replace_cpu_and_memory_but_never_gpus() {
        let p = pod(serde_json::json!({
            "resources": {"requests": {"cpu": "16", "nvidia.com/gpu": "8"}, "limits": {"memory": "64Gi"}},
            "containers": [c("a", serde_json::json!({"cpu": "2", "memory": "1Gi", "nvidia.com/gpu": "2"})),
                           c("b", serde_json::json!({"cpu": "2", "memory": "1Gi"}))]}));
        assert_eq!(cpu(&p), 16_000, "pod-level requests.cpu replaces the containers' 4");
        assert_eq!(
            pod_amount(&p, "memory", quantity::memory_mib).unwrap(),
            65_536,
            "pod-level limits default requests"
        );
        assert_eq!(gpus(&p), 2, "GPUs are not a pod-level resource: the containers' count stands");
    }

    #[test]
    fn overhead_is_added() {
        let p = pod(serde_json::json!({
            "overhead": {"cpu": "250m", "memory": "120Mi"},
            "resources": {"requests": {"cpu": "2"}},
            "containers": [c("a", serde_json::json!({"cpu": "1", "memory": "1Gi"}))]}));
        assert_eq!(cpu(&p), 2250, "pod-level 2 CPU + 250m overhead");
        assert_eq!(pod_amount(&p, "memory", quantity::memory_mib).unwrap(), 1024 + 120);
    }

    #[test]
    fn bad_quantities_name_the_field() {
        let p = pod(serde_json::json!({"resources": {"requests": {"cpu": "lots"}}}));
        let e = pod_amount(&p, "cpu", quantity::cpu_milli).unwrap_err();
        assert!(e.starts_with("pod-level spec.resources: cpu: "), "{e}");
        let p = pod(serde_json::json!({"overhead": {"memory": "-1Gi"}}));
        let e = pod_amount(&p, "memory", quantity::memory_mib).unwrap_err();
        assert!(e.starts_with("spec.overhead: memory: "), "{e}");
        let p = pod(serde_json::json!({"initContainers": [sidecar("s", serde_json::json!({"nvidia.com/gpu": "x"}))]}));
        assert!(pod_amount(&p, "nvidia.com/gpu", quantity::count).unwrap_err().starts_with("container \"s\""));
    }
}
