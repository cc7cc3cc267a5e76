//! Node work runs off the async workers, bounded: every syscall and child process of a node
//! operation goes through [`NodeOps::run`], a blocking thread under a semaphore
//! (`--max-node-operations`). A hung mount then holds one permit and one thread, never an async
//! worker, so Probe and every other RPC keep answering.

use std::time::Duration;

use tokio::sync::Semaphore;

use super::NodeError;

pub struct NodeOps {
    permits: Semaphore,
}

impl NodeOps {
    pub fn new(max_concurrent: usize) -> Self {
        Self {
            permits: Semaphore::new(max_concurrent.max(1)),
        }
    }

    /// Runs `work` on a blocking thread once a permit is free.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, NodeError> + Send + 'static,
    ) -> Result<T, NodeError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| NodeError::Pool(e.to_string()))?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| NodeError::Pool(e.to_string()))?
    }

    /// Like [`NodeOps::run`], giving up (not waiting further) after `timeout`: for calls that
    /// may hang on a stale mount. The thread may stay blocked; the caller does not.
    pub async fn run_within<T: Send + 'static>(
        &self,
        op: &'static str,
        timeout: Duration,
        work: impl FnOnce() -> Result<T, NodeError> + Send + 'static,
    ) -> Result<T, NodeError> {
        tokio::time::timeout(timeout, self.run(work))
            .await
            .map_err(|_| NodeError::TimedOut { op, timeout })?
    }
}
