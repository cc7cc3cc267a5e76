//! Per-volume operation locks. A second operation on a volume while one is in flight is
//! refused at once (the CSI spec's ABORTED, "operation pending for volume") instead of queueing,
//! and operations on different volumes never wait for each other.

use std::collections::HashSet;
use std::sync::Mutex;

#[derive(Default)]
pub struct OperationLocks {
    busy: Mutex<HashSet<String>>,
}

/// Holds a key until dropped.
pub struct OperationGuard<'a> {
    locks: &'a OperationLocks,
    key: String,
}

impl OperationLocks {
    /// Takes `key`, or returns `None` when an operation already holds it.
    pub fn try_lock(&self, key: &str) -> Option<OperationGuard<'_>> {
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        busy.insert(key.to_owned()).then(|| OperationGuard {
            locks: self,
            key: key.to_owned(),
        })
    }
}

impl Drop for OperationGuard<'_> {
    fn drop(&mut self) {
        let mut busy = self.locks.busy.lock().unwrap_or_else(|e| e.into_inner());
        busy.remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_operation_per_key_and_released_on_drop() {
        let locks = OperationLocks::default();
        let first = locks.try_lock("vol-a").expect("free");
        assert!(locks.try_lock("vol-a").is_none());
        let other = locks.try_lock("vol-b");
        assert!(other.is_some(), "other volumes are independent");
        drop(first);
        assert!(locks.try_lock("vol-a").is_some());
    }
}
