//! Node work runs off the async workers, bounded: every syscall and child process of a node
//! operation goes through [`NodeOps::run`], a blocking thread under a semaphore
//! (`--max-node-operations`). A hung mount then holds one permit and one thread, never an async
//! worker, so Probe and every other RPC keep answering.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

use super::NodeError;

#[derive(Clone)]
pub struct NodeOps {
    permits: Arc<Semaphore>,
    /// Keys of [`NodeOps::run_within`] work still running, hung or not.
    running: Arc<Mutex<HashSet<String>>>,
}

/// Holds a key in `running` until the work that claimed it returns.
struct Claim {
    running: Arc<Mutex<HashSet<String>>>,
    key: String,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

impl NodeOps {
    pub fn new(max_concurrent: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
            running: Default::default(),
        }
    }

    /// Runs `work` on a blocking thread once a permit is free; the thread keeps the permit
    /// until `work` returns.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, NodeError> + Send + 'static,
    ) -> Result<T, NodeError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| NodeError::Pool(e.to_string()))?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(|e| NodeError::Pool(e.to_string()))?
    }

    /// Like [`NodeOps::run`], for the work of one volume at one path (`key`): while earlier
    /// work for `key` still runs (hung on a stale mount, say, after its caller gave up), more is
    /// refused at once instead of stacking another blocked thread behind it. The claim belongs
    /// to the thread doing the work and is let go only when the work returns.
    pub async fn run_claimed<T: Send + 'static>(
        &self,
        op: &'static str,
        key: &str,
        work: impl FnOnce() -> Result<T, NodeError> + Send + 'static,
    ) -> Result<T, NodeError> {
        let claim = {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            if !running.insert(key.to_owned()) {
                return Err(NodeError::StillRunning {
                    op,
                    key: key.to_owned(),
                });
            }
            Claim {
                running: self.running.clone(),
                key: key.to_owned(),
            }
        };
        let done = self
            .run(move || {
                let _claim = claim;
                work()
            })
            .await;
        crate::metrics::node_operation(op, &done);
        done
    }

    /// [`NodeOps::run_claimed`] for work that may hang on a stale mount, where the caller gives
    /// up after `timeout` while the thread stays blocked, holding its permit and its claim.
    pub async fn run_within<T: Send + 'static>(
        &self,
        op: &'static str,
        key: &str,
        timeout: Duration,
        work: impl FnOnce() -> Result<T, NodeError> + Send + 'static,
    ) -> Result<T, NodeError> {
        tokio::time::timeout(timeout, self.run_claimed(op, key, work))
            .await
            .map_err(|_| NodeError::TimedOut { op, timeout })?
    }
}
