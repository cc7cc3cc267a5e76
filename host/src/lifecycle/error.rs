//! Why a CSI operation failed, in the host's terms: validation, the backend, the node, fencing,
//! cleanup. `csi/error.rs` is the one place that turns these into gRPC status codes.

use crate::node::NodeError;
use crate::runtime::CallError;
use crate::volume::attachment::AttachmentError;
use crate::volume::validate::InvalidInput;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Invalid(#[from] InvalidInput),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("volume {volume}: {source}")]
    Attachment {
        volume: String,
        source: AttachmentError,
    },
    #[error("{subject}: {source}")]
    Backend { subject: String, source: CallError },
    #[error("volume {volume}: {source}")]
    Node { volume: String, source: NodeError },
    #[error(transparent)]
    Fence(#[from] crate::fencing::FenceError),
    #[error(transparent)]
    Cleanup(#[from] crate::cleanup::CleanupError),
    #[error("{0}: another operation on it is in progress")]
    Pending(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    Internal(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Unimplemented(String),
}
