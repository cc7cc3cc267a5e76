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
use crate::volume::locks::OperationLocks;

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
