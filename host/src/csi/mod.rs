//! The CSI surface: Identity, Controller and Node over gRPC, and nothing else. Each RPC decodes
//! its request (ids, paths, sizes, capabilities checked on the way in), calls one operation of
//! the lifecycle layer (`lifecycle/`) and encodes the answer; `error.rs` is the one mapping to
//! gRPC status codes.

mod controller;
mod convert;
mod deadline;
mod error;
mod identity;
mod measure;
mod node;

pub use controller::ControllerService;
pub use error::{Error, canonical_name};
pub use identity::IdentityService;
pub use measure::Measured;
pub use node::NodeService;

use crate::runtime::Backend;
use crate::volume::types::AccessMode;

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

/// Names the call's volume in its span (the one `serve` opens per call).
fn note_volume(id: &str) {
    tracing::Span::current().record("volume", id);
}

/// Names the call's node in its span.
fn note_node(id: &str) {
    tracing::Span::current().record("node", id);
}

/// Whether the backend offers the single-node multi-writer modes (a capability both the
/// controller and the node advertise).
fn offers_single_node_multi_writer(backend: &Backend) -> bool {
    backend.info().access_modes.iter().any(|m| {
        matches!(
            m,
            AccessMode::SingleNodeSingleWriter | AccessMode::SingleNodeMultiWriter
        )
    })
}
