//! The CSI surface: Identity, Controller and Node over gRPC. This layer validates requests,
//! maps errors to the spec's status codes and keeps calls idempotent; it asks the backend
//! (runtime/) what to do and the node layer (node/) to do it.

mod controller;
mod convert;
mod deadline;
mod error;
mod identity;
mod node;
pub mod rules;

use std::sync::Arc;

pub use controller::ControllerService;
pub use error::CsiError;
pub use identity::IdentityService;
pub use node::NodeService;

use crate::node::confined::KubeletRoot;
use crate::node::device::DeviceDirs;
use crate::node::local_dir::LocalDirs;
use crate::node::pool::NodeOps;
use crate::runtime::Backend;
use crate::state::{StateStore, StoreError};
use crate::volume::locks::{OperationGuard, OperationLocks};
use crate::volume::records::Records;
use crate::volume::tokens::ListTokens;
use crate::volume::types;

/// Where the host keeps what a node said about itself (`node-info.attributes`), by node id.
pub const NODES_NAMESPACE: &str = "host/nodes";

/// Which CSI services a process serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Controller,
    Node,
    All,
}

impl Mode {
    pub fn serves_controller(self) -> bool {
        matches!(self, Mode::Controller | Mode::All)
    }

    pub fn serves_node(self) -> bool {
        matches!(self, Mode::Node | Mode::All)
    }
}

/// What the services share.
pub struct Driver {
    pub backend: Backend,
    pub driver_name: String,
    pub node_id: String,
    pub mode: Mode,
    pub local_dirs: LocalDirs,
    /// Target and staging paths must lie beneath it.
    pub kubelet_root: Arc<KubeletRoot>,
    /// Every node syscall and child process runs here, bounded.
    pub node_ops: NodeOps,
    /// Where block devices are looked up.
    pub devices: DeviceDirs,
    pub locks: OperationLocks,
    /// This host's own state (what it staged): the embedded store.
    pub state: Arc<dyn StateStore>,
    /// State every process of the driver shares (the volumes it created, what nodes said about
    /// themselves, the backend's `store`): in the cluster with Kubernetes, else `state`.
    pub shared: Arc<dyn StateStore>,
    pub records: Arc<Records>,
    /// Which nodes each volume is published to, and who may join.
    pub fencing: crate::fencing::Fencing,
    /// Node-local directories of deleted volumes, removed on every node.
    pub cleanup: Arc<crate::cleanup::Cleanup>,
    /// The cluster, when there is one (Kubernetes is optional).
    pub cluster: Option<Arc<crate::kube::Cluster>>,
    pub tokens: ListTokens,
}

impl Driver {
    /// Takes the operation lock of a volume id (ABORTED while another operation holds it).
    fn lock(&self, id: &str) -> Result<OperationGuard<'_>, CsiError> {
        self.lock_key(id, &format!("volume {id}"))
    }

    /// Takes the lock for `key`; `subject` names it in the ABORTED error.
    fn lock_key(&self, key: &str, subject: &str) -> Result<OperationGuard<'_>, CsiError> {
        self.locks
            .try_lock(key)
            .ok_or_else(|| CsiError::Pending(subject.to_owned()))
    }

    /// Takes the lock of one (volume, target) pair: a volume may be published at many targets
    /// at once, one operation per target at a time.
    fn lock_target(
        &self,
        id: &str,
        target: &std::path::Path,
    ) -> Result<OperationGuard<'_>, CsiError> {
        self.lock_key(
            &format!("{id}@{}", target.display()),
            &format!("volume {id} at {}", target.display()),
        )
    }

    /// ABORTED for a list token this host did not hand out.
    fn check_token(&self, list: &'static str, token: &str) -> Result<(), CsiError> {
        if self.tokens.known(list, token) {
            Ok(())
        } else {
            Err(CsiError::Pending(format!(
                "list {list}: starting token {token:?} is not one this host handed out (list again from the start)"
            )))
        }
    }

    /// The attributes node `node` reported through NodeGetInfo (kept in the shared store: with
    /// Kubernetes, every node's; standalone, this host's own).
    fn node_attributes(&self, node: &str) -> Result<types::KeyValues, StoreError> {
        Ok(self
            .shared
            .get(NODES_NAMESPACE, node)?
            .and_then(|e| serde_json::from_slice(&e.value).ok())
            .unwrap_or_default())
    }

    /// Writes the volume's attached nodes on its PV for people, in the background (with
    /// Kubernetes; best effort).
    fn note_attachments(&self, volume: &str) {
        let (Some(cluster), Ok(nodes)) = (&self.cluster, self.fencing.nodes(volume)) else {
            return;
        };
        let (cluster, volume) = (cluster.clone(), volume.to_owned());
        tokio::spawn(async move { cluster.annotate(&volume, &nodes).await });
    }

    /// Whether the backend offers the single-node multi-writer modes (a capability both the
    /// controller and the node advertise).
    fn offers_single_node_multi_writer(&self) -> bool {
        self.backend.info().access_modes.iter().any(|m| {
            matches!(
                m,
                types::AccessMode::SingleNodeSingleWriter
                    | types::AccessMode::SingleNodeMultiWriter
            )
        })
    }
}

pub type SharedDriver = Arc<Driver>;
