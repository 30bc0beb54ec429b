//! Whether the extender may answer: with `--kube`, not before both the Node and the Pod watch have delivered their
//! initial list (kube-rs `watcher::Event::InitDone`). Until then the cache may be empty or partial, and a verdict on
//! it could pass a pod on a node whose GPUs are in use. Without `--kube` the nodes are the config's: ready at once.

use std::sync::atomic::{AtomicBool, Ordering};

/// One of the watches the cache waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    /// The Node watch.
    Nodes,
    /// The Pod watch.
    Pods,
}

/// Which watches have synced. Starts ready; [`Readiness::expect_watches`] makes it wait for both.
#[derive(Debug)]
pub struct Readiness {
    nodes: AtomicBool,
    pods: AtomicBool,
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness { nodes: AtomicBool::new(true), pods: AtomicBool::new(true) }
    }
}

impl Readiness {
    /// From now on, not ready until both watches report their initial list.
    pub fn expect_watches(&self) {
        self.nodes.store(false, Ordering::Release);
        self.pods.store(false, Ordering::Release);
    }

    /// A watch delivered its initial list. A relist after a restart keeps the cache serving (it was synced
    /// once; what the relist changes is applied as it arrives).
    pub fn synced(&self, watch: Watch) {
        match watch {
            Watch::Nodes => self.nodes.store(true, Ordering::Release),
            Watch::Pods => self.pods.store(true, Ordering::Release),
        }
    }

    /// `None` when ready; else why not, as a sentence for kube-scheduler's events and `/readyz`.
    pub fn not_ready(&self) -> Option<&'static str> {
        match (self.nodes.load(Ordering::Acquire), self.pods.load(Ordering::Acquire)) {
            (true, true) => None,
            (false, false) => Some(
                "Sovra's cache is not synced yet: the initial lists of Nodes and Pods from the Kubernetes API have \
                 not arrived; Sovra answers nothing on a partial cache, kube-scheduler retries the pod",
            ),
            (false, true) => Some(
                "Sovra's cache is not synced yet: the initial list of Nodes from the Kubernetes API has not \
                 arrived; Sovra answers nothing on a partial cache, kube-scheduler retries the pod",
            ),
            (true, false) => Some(
                "Sovra's cache is not synced yet: the initial list of Pods from the Kubernetes API has not arrived \
                 (what is bound where is unknown); Sovra answers nothing on a partial cache, kube-scheduler retries \
                 the pod",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_once_both_watches_synced() {
        let r = Readiness::default();
        assert_eq!(r.not_ready(), None, "without watches: ready at once");
        r.expect_watches();
        assert!(r.not_ready().unwrap().contains("Nodes and Pods"));
        r.synced(Watch::Pods);
        assert!(r.not_ready().unwrap().contains("list of Nodes"));
        r.synced(Watch::Nodes);
        assert_eq!(r.not_ready(), None);
    }
}
