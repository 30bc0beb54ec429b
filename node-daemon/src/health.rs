//! XID health policy: which XID critical errors take a GPU out of service.

use crate::inventory::GpuHealth;
use std::collections::BTreeSet;

/// XIDs ignored by default: the list NVIDIA's Kubernetes device plugin skips, because they are caused by the
/// application (13 graphics engine exception, 31 GPU memory page fault, 43 GPU stopped processing, 45 preemptive
/// cleanup, 68 video processor exception, 109 context switch timeout) rather than by the hardware.
pub const DEFAULT_IGNORED_XIDS: [u64; 6] = [13, 31, 43, 45, 68, 109];

/// Decides what an XID event means for a GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthPolicy {
    /// XIDs that leave the GPU healthy.
    pub ignored: BTreeSet<u64>,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy { ignored: DEFAULT_IGNORED_XIDS.into_iter().collect() }
    }
}

impl HealthPolicy {
    /// A policy ignoring exactly `ignored`.
    pub fn ignoring(ignored: impl IntoIterator<Item = u64>) -> HealthPolicy {
        HealthPolicy { ignored: ignored.into_iter().collect() }
    }

    /// The verdict for an XID: `None` when ignored (the GPU keeps its health), else unhealthy.
    pub fn verdict(&self, xid: u64) -> Option<GpuHealth> {
        (!self.ignored.contains(&xid)).then(|| GpuHealth::Unhealthy { reason: format!("XID {xid}") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ignore_list_matches_the_device_plugin() {
        let p = HealthPolicy::default();
        for xid in [13, 31, 43, 45, 68, 109] {
            assert_eq!(p.verdict(xid), None, "XID {xid} is ignored");
        }
        for xid in [48, 63, 64, 74, 79, 94, 95] {
            assert_eq!(p.verdict(xid), Some(GpuHealth::Unhealthy { reason: format!("XID {xid}") }));
        }
        assert_eq!(HealthPolicy::ignoring([79]).verdict(79), None);
    }
}
