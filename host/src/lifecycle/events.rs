//! Warning Events on a volume's claim for the failures its owner should see in `kubectl
//! describe pvc`: the backend's refusals and the node's failures (stage, publish, expand),
//! posted in the background, at most one per volume and reason a minute. Fencing conflicts
//! have their own (`fencing::Nodes::refused`); the CO's own mistakes (invalid arguments) and
//! passing states (an operation in progress) get none.

use std::sync::Arc;

use super::Error;
use crate::kube::Cluster;

/// The cluster to tell, when there is one.
#[derive(Clone, Default)]
pub struct Events(Option<Arc<Cluster>>);

impl Events {
    pub fn new(cluster: Option<Arc<Cluster>>) -> Self {
        Self(cluster)
    }

    /// Passes `result` through; a failure worth telling posts `reason` with its message.
    pub fn note<T>(
        &self,
        volume: &str,
        reason: &'static str,
        result: Result<T, Error>,
    ) -> Result<T, Error> {
        if let (Err(e), Some(cluster)) = (&result, &self.0)
            && worth_telling(e)
        {
            let (cluster, volume, message) = (cluster.clone(), volume.to_owned(), e.to_string());
            tokio::spawn(
                async move { cluster.warn_claim(&volume, reason, reason, &message).await },
            );
        }
        result
    }
}

fn worth_telling(error: &Error) -> bool {
    matches!(
        error,
        Error::Backend { .. }
            | Error::Node { .. }
            | Error::Attachment { .. }
            | Error::Cleanup(_)
            | Error::Internal(_)
            | Error::Unavailable(_)
    )
}
