//! Per-blob locks of one [`crate::Promoter`]: two promotions into the same data zone (or two pushes of the same
//! files), running at once through one promoter (the promotion service shares one), must not write the same blob
//! at the same time. A blob copy
//! writes the ciphertext and its key object one after the other, so two interleaved copies leave a pair that
//! fails authentication, and a copy that sees the other's half-written blob as existing verifies too early. Under
//! the lock the second copy finds the first one's complete blob and keeps it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Locks by name (`zone/stage/digest`), created on first use and dropped when nobody holds or waits for them.
#[derive(Debug, Default)]
pub(crate) struct BlobLocks {
    held: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl BlobLocks {
    /// Runs `f` holding the lock of `key`.
    pub(crate) fn with<T>(&self, key: &str, f: impl FnOnce() -> T) -> T {
        // A panic while holding a lock leaves nothing half-done in these maps: poisoning is ignored.
        let lock = self.held.lock().unwrap_or_else(PoisonError::into_inner).entry(key.to_string()).or_default().clone();
        let out = {
            let _guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
            f()
        };
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        // Only the map and this call hold it (a waiter would have cloned it under the map's lock): forget it.
        if Arc::strong_count(&lock) == 2 {
            held.remove(key);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::BlobLocks;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn one_holder_at_a_time_and_nothing_left_behind() {
        let locks = Arc::new(BlobLocks::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (locks, inside) = (locks.clone(), inside.clone());
                std::thread::spawn(move || {
                    locks.with("z/registry/ab", || {
                        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                        std::thread::sleep(std::time::Duration::from_millis(2));
                        inside.fetch_sub(1, Ordering::SeqCst);
                    })
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert!(locks.held.lock().unwrap().is_empty());
    }
}
