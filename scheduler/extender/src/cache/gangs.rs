//! What preemption needs to know about gangs: which gang a victim belongs to, and which members of a gang are
//! bound (a gang is evicted whole or not at all).

use super::Cache;
use crate::pod::Gang;

impl Cache {
    /// The gang of a pod the cache knows: `Some(Some(gang))` for a gang member, `Some(None)` for a pod of no gang
    /// (or one whose request Sovra cannot read, which Sovra never placed as a gang), `None` when the cache does not
    /// know the pod at all.
    pub fn gang_of(&self, uid: &str) -> Option<Option<Gang>> {
        let inner = self.lock();
        let record = inner.pods.get(uid).or_else(|| inner.pending.get(uid).map(|(_, p)| p))?;
        Some(record.request.as_ref().ok().and_then(|r| r.gang.clone()))
    }

    /// The UIDs of the members of gang `key` (`namespace/group`) that are bound to a node, sorted.
    pub fn bound_gang_members(&self, key: &str) -> Vec<String> {
        let inner = self.lock();
        inner
            .pods
            .values()
            .filter(|p| {
                p.node.is_some() && p.request.as_ref().is_ok_and(|r| r.gang.as_ref().is_some_and(|g| g.key == key))
            })
            .map(|p| p.uid.clone())
            .collect() // `pods` is a BTreeMap by UID: sorted
    }
}
