//! The volume lifecycle, free of any transport: what each CSI operation does and in what
//! order (the host's records, fencing, node-local cleanup, the backend call, the checks of its
//! answer, the node's work), as plain async functions over the host's own types. `csi/` decodes
//! a request, calls one of these and encodes the answer; a test can call them directly.
//!
//! Two contexts, one per side: [`Controller`] (create, delete, publish, expand, snapshots,
//! lists) and [`Node`] (stage, publish, stats, expand, node info). Each holds what its side
//! uses and nothing else.

mod attach;
mod controller;
mod error;
mod events;
mod node;
pub mod rules;
mod snapshots;

use std::path::Path;

pub use controller::{Controller, ControllerParts};
pub use error::Error;
pub use events::Events;
pub use node::{Node, NodeInfo, NodeStats};

use crate::runtime::CallError;
use crate::volume::locks::{OperationGuard, OperationLocks};

/// Where the host keeps what a node said about itself (`node-info.attributes`), by node id.
pub const NODES_NAMESPACE: &str = "host/nodes";

/// The backend's failure, about `subject`.
fn backend_error(subject: impl Into<String>) -> impl FnOnce(CallError) -> Error {
    let subject = subject.into();
    move |source| Error::Backend { subject, source }
}

fn store_error(subject: &str) -> impl FnOnce(crate::state::StoreError) -> Error + '_ {
    move |e| Error::Unavailable(format!("{subject}: host state store: {e}"))
}

/// Whether the backend answered "not found" (a finished deletion, for the CO).
fn is_not_found(error: &CallError) -> bool {
    matches!(
        error,
        CallError::Refused {
            error: crate::volume::types::BackendError::NotFound(_),
            ..
        }
    )
}

/// Takes the lock for `key` (ABORTED while another operation holds it); `subject` names it in
/// the error.
fn lock<'a>(
    locks: &'a OperationLocks,
    key: &str,
    subject: &str,
) -> Result<OperationGuard<'a>, Error> {
    locks
        .try_lock(key)
        .ok_or_else(|| Error::Pending(subject.to_owned()))
}

/// The lock of one (volume, path) pair: a volume may be published at many targets at once,
/// one operation per target at a time.
fn lock_target<'a>(
    locks: &'a OperationLocks,
    id: &str,
    path: &Path,
) -> Result<OperationGuard<'a>, Error> {
    lock(
        locks,
        &format!("{id}@{}", path.display()),
        &format!("volume {id} at {}", path.display()),
    )
}
