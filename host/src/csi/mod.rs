//! The CSI surface: Identity, Controller and Node over gRPC. This layer validates requests,
//! maps errors to the spec's status codes and keeps calls idempotent; it asks the backend
//! (runtime/) what to do and the node layer (node/) to do it.

mod controller;
mod convert;
mod deadline;
mod error;
mod identity;
mod node;

use std::sync::Arc;

pub use controller::ControllerService;
pub use error::CsiError;
pub use identity::IdentityService;
pub use node::NodeService;

use crate::node::local_dir::LocalDirs;
use crate::runtime::{Backend, types};
use crate::volume::locks::{OperationGuard, OperationLocks};

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
    pub locks: OperationLocks,
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
