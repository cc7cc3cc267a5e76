//! Cleanup requests made after DeleteVolume answers, in a host that is also a node.
//!
//! Such a host removes its own directory of the volume before it answers. What is left is a
//! change to the record (ask the other nodes, or remove the record when no other node held the
//! volume): an API request that waits on etcd's disk. It is made after the answer, from a note
//! kept in this node's embedded store and on disk (fsync) before the answer, written while the
//! directory goes: a crash between the answer and the request leaves the note, and the next
//! start removes what is left of the directory and makes the request. The note lives in the
//! node's own state directory, beside the node-local directories themselves.
//!
//! Until the request is made, the volume counts as being deleted: a create of its name and a
//! publish of its id are refused (UNAVAILABLE), as while any node is still removing its
//! directory, so no new volume of the same id can meet the old volume's request.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use super::CleanupError;
use crate::state::{Durability, StateStore, StoreError};

const NAMESPACE: &str = "host/cleanup-deferred";

pub struct Deferred {
    store: Arc<dyn StateStore>,
    /// The noted volumes whose request is not yet made.
    pending: Mutex<HashSet<String>>,
}

fn store_err(volume: &str) -> impl FnOnce(StoreError) -> CleanupError {
    let volume = volume.to_owned();
    move |source| CleanupError::Store { volume, source }
}

impl Deferred {
    pub fn new(store: Arc<dyn StateStore>) -> Self {
        Self {
            store,
            pending: Mutex::default(),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes on disk that the volume's request is still to be made; false when it was noted
    /// already (a repeated DeleteVolume: the first one's request is under way).
    pub fn note(&self, volume: &str) -> Result<bool, CleanupError> {
        let mut pending = self.pending();
        match self
            .store
            .put_with(NAMESPACE, volume, b"", None, Durability::Now)
        {
            Ok(_) => {}
            Err(StoreError::Conflict { .. }) => return Ok(false),
            Err(e) => return Err(store_err(volume)(e)),
        }
        Ok(pending.insert(volume.to_owned()))
    }

    /// Whether the volume's request is still to be made.
    pub fn is_pending(&self, volume: &str) -> bool {
        self.pending().contains(volume)
    }

    /// The request is made, or none will be (this node could not remove its directory): the
    /// note goes. (Lost in a crash, the note makes the next start repeat a request that then
    /// changes nothing, or find the directory still there and drop it.)
    pub fn done(&self, volume: &str) {
        let mut pending = self.pending();
        if let Err(e) = self
            .store
            .delete_with(NAMESPACE, volume, None, Durability::Soon)
        {
            tracing::warn!(
                volume,
                "cannot remove the note of a made cleanup request: {e}"
            );
        }
        pending.remove(volume);
    }

    /// The notes a previous run left, now pending again.
    pub fn load(&self) -> Result<Vec<String>, CleanupError> {
        let volumes = self.store.keys(NAMESPACE).map_err(store_err("(notes)"))?;
        self.pending().extend(volumes.iter().cloned());
        Ok(volumes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemoryStore;

    #[test]
    fn a_note_is_pending_until_done_and_outlives_the_process() {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::default());
        let first = Deferred::new(store.clone());
        assert!(first.note("v1").unwrap());
        assert!(
            !first.note("v1").unwrap(),
            "a repeated delete starts nothing"
        );
        assert!(first.note("v2").unwrap());
        assert!(first.is_pending("v1") && !first.is_pending("v3"));
        first.done("v1");
        assert!(!first.is_pending("v1"));

        // The next run finds what the first left undone, and only that.
        let next = Deferred::new(store);
        assert!(!next.is_pending("v2"));
        assert_eq!(next.load().unwrap(), ["v2"]);
        assert!(next.is_pending("v2"));
    }
}
