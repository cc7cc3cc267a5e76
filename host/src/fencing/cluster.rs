//! What fencing asks of the cluster, as a small trait: does this node exist, and tell the
//! people who look at the volume why a publish was refused. Kubernetes answers from its Nodes
//! and posts an Event; standalone, there is no directory of nodes, so every node may ask and
//! nobody is told. Tests can stand in for either.

use std::collections::HashSet;
use std::sync::Arc;

use futures::future::BoxFuture;

use crate::kube::{Cluster, KubeError};

pub trait Nodes: Send + Sync {
    /// Whether the cluster has `node`; an error when it cannot tell.
    fn exists<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<bool, KubeError>>;

    /// Every node the cluster has, in one request (a pass over many attachments asks once);
    /// `None` when there is no directory of nodes.
    fn names(&self) -> BoxFuture<'_, Result<Option<HashSet<String>>, KubeError>>;

    /// A publish of `volume` to `node` was refused with `message` (in the background: the
    /// volume's turn is not held for it).
    fn refused(&self, volume: &str, node: &str, message: String);
}

/// No cluster: every node exists.
pub struct Standalone;

impl Nodes for Standalone {
    fn exists<'a>(&'a self, _node: &'a str) -> BoxFuture<'a, Result<bool, KubeError>> {
        Box::pin(std::future::ready(Ok(true)))
    }

    fn names(&self) -> BoxFuture<'_, Result<Option<HashSet<String>>, KubeError>> {
        Box::pin(std::future::ready(Ok(None)))
    }

    fn refused(&self, _volume: &str, _node: &str, _message: String) {}
}

impl Nodes for Arc<Cluster> {
    fn exists<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<bool, KubeError>> {
        Box::pin(self.node_exists(node))
    }

    fn names(&self) -> BoxFuture<'_, Result<Option<HashSet<String>>, KubeError>> {
        Box::pin(async move { self.node_names().await.map(Some) })
    }

    fn refused(&self, volume: &str, node: &str, message: String) {
        let (cluster, volume, node) = (self.clone(), volume.to_owned(), node.to_owned());
        tokio::spawn(async move {
            cluster
                .warn_claim(&volume, &node, "AttachmentConflict", &message)
                .await
        });
    }
}
