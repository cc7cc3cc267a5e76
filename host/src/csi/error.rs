//! The one mapping from everything that can fail to a gRPC status. Messages name the volume
//! (or request), the backend where one is involved, and the cause.

use tonic::{Code, Status};

pub use crate::lifecycle::Error;
use crate::node::NodeError;
use crate::node::confined::ConfinedError;
use crate::runtime::CallError;
use crate::volume::types;

/// The status code of a failure.
pub fn code(error: &Error) -> Code {
    match error {
        Error::Invalid(_) | Error::InvalidArgument(_) => Code::InvalidArgument,
        Error::Attachment { .. } => Code::InvalidArgument,
        Error::Backend { source, .. } => call_code(source),
        Error::Node { source, .. } => match source {
            NodeError::InUse { .. } => Code::FailedPrecondition,
            NodeError::OtherMount { .. } => Code::AlreadyExists,
            NodeError::Missing { .. } => Code::NotFound,
            NodeError::NotOurs { .. } | NodeError::Busy { .. } | NodeError::NotStaged { .. } => {
                Code::FailedPrecondition
            }
            NodeError::TimedOut { .. } => Code::DeadlineExceeded,
            NodeError::StillRunning { .. } => Code::Unavailable,
            NodeError::NoDevice { .. } => Code::NotFound,
            NodeError::DeviceInUse { .. }
            | NodeError::DeviceTaken { .. }
            | NodeError::DiskNotAllowed { .. }
            | NodeError::Ambiguous { .. }
            | NodeError::NotABlockDevice { .. } => Code::FailedPrecondition,
            NodeError::Unsupported { .. } => Code::InvalidArgument,
            NodeError::Unmanaged { .. } | NodeError::NoFabrics { .. } => Code::FailedPrecondition,
            NodeError::Unreachable { .. } | NodeError::TooSmall { .. } => Code::Unavailable,
            NodeError::Confined(c) => match c {
                ConfinedError::Outside { .. } | ConfinedError::Symlink { .. } => {
                    Code::InvalidArgument
                }
                ConfinedError::NoParent { .. }
                | ConfinedError::WrongKind { .. }
                | ConfinedError::NotEmpty { .. } => Code::FailedPrecondition,
                ConfinedError::Sys { .. } => Code::Internal,
            },
            _ => Code::Internal,
        },
        Error::Fence(f) => match f {
            crate::fencing::FenceError::Held { .. } => Code::FailedPrecondition,
            crate::fencing::FenceError::Incompatible { .. } => Code::AlreadyExists,
            crate::fencing::FenceError::Store { .. } => Code::Unavailable,
            crate::fencing::FenceError::Unreadable { .. } => Code::Internal,
            crate::fencing::FenceError::UnknownNode { .. } => Code::NotFound,
            crate::fencing::FenceError::Cluster { .. } => Code::Unavailable,
        },
        Error::Cleanup(c) => match c {
            crate::cleanup::CleanupError::Contended { .. } => Code::Aborted,
            crate::cleanup::CleanupError::Malformed { .. } => Code::Internal,
            // Retried by the caller: a deletion finishing, or the API coming back.
            crate::cleanup::CleanupError::Deleting { .. }
            | crate::cleanup::CleanupError::Recording { .. }
            | crate::cleanup::CleanupError::Cluster { .. }
            | crate::cleanup::CleanupError::Store { .. } => Code::Unavailable,
        },
        Error::Pending(_) => Code::Aborted,
        Error::NotFound(_) => Code::NotFound,
        Error::FailedPrecondition(_) => Code::FailedPrecondition,
        Error::AlreadyExists(_) => Code::AlreadyExists,
        Error::Internal(_) => Code::Internal,
        Error::Unavailable(_) => Code::Unavailable,
        Error::Unimplemented(_) => Code::Unimplemented,
    }
}

/// The canonical name (`OK`, `NOT_FOUND`, …) of a `grpc-status` header's value; none is `OK`.
pub(super) fn code_name(status: Option<&str>) -> &'static str {
    canonical_name(
        status
            .and_then(|s| s.parse::<i32>().ok())
            .map_or(Code::Ok, Code::from_i32),
    )
}

/// A gRPC code's canonical name: `NOT_FOUND`, `FAILED_PRECONDITION`, …
pub fn canonical_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

fn call_code(error: &CallError) -> Code {
    match error {
        CallError::Timeout { .. } => Code::DeadlineExceeded,
        // Not RESOURCE_EXHAUSTED: the provisioner would reschedule the volume elsewhere.
        CallError::MemoryLimit { .. } => Code::Internal,
        CallError::Trap { .. } => Code::Internal,
        CallError::Busy { .. } => Code::Unavailable,
        CallError::Refused { error, .. } => match error {
            types::BackendError::InvalidArgument(_) => Code::InvalidArgument,
            types::BackendError::NotFound(_) => Code::NotFound,
            types::BackendError::AlreadyExists(_) => Code::AlreadyExists,
            types::BackendError::FailedPrecondition(_) => Code::FailedPrecondition,
            types::BackendError::ResourceExhausted(_) => Code::ResourceExhausted,
            types::BackendError::OutOfRange(_) => Code::OutOfRange,
            types::BackendError::Unavailable(_) => Code::Unavailable,
            types::BackendError::Aborted(_) => Code::Aborted,
            types::BackendError::Internal(_) => Code::Internal,
            types::BackendError::Unimplemented(_) => Code::Unimplemented,
        },
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let code = code(&error);
        let message = error.to_string();
        // Every refusal is in the log with its reason: the host's or backend's faults as
        // errors, what the CO must change (or wait for) as warnings, the answers kubelet and
        // the sidecars expect in the normal course (not there, busy, not offered) as info.
        match code {
            Code::Internal | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Unknown => {
                tracing::error!(code = ?code, "{message}")
            }
            Code::NotFound | Code::Aborted | Code::Unimplemented => {
                tracing::info!(code = ?code, "{message}")
            }
            _ => tracing::warn!(code = ?code, "{message}"),
        }
        Status::new(code, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_host_problem_no_retry_mends_is_not_unavailable() {
        let node = |source| Error::Node {
            volume: "v1".into(),
            source,
        };
        let no_fabrics = node(NodeError::NoFabrics {
            nqn: "nqn.2000-02.com.mikrotik:pvc-1".into(),
        });
        assert_eq!(code(&no_fabrics), Code::FailedPrecondition);
        let unreachable = node(NodeError::Unreachable {
            nqn: "nqn.2000-02.com.mikrotik:pvc-1".into(),
            failures: vec![],
        });
        assert_eq!(
            code(&unreachable),
            Code::Unavailable,
            "a network fault is retried"
        );
    }

    #[test]
    fn backend_errors_keep_their_code_and_name_the_backend() {
        let refused = Error::Backend {
            subject: "volume v1".into(),
            source: CallError::Refused {
                backend: Arc::from("emma"),
                operation: "delete-volume",
                error: types::BackendError::FailedPrecondition("volume is attached".into()),
            },
        };
        assert_eq!(code(&refused), Code::FailedPrecondition);
        assert_eq!(
            refused.to_string(),
            "volume v1: backend emma: delete-volume: failed precondition: volume is attached"
        );
        let timeout = Error::Backend {
            subject: "volume v1".into(),
            source: CallError::Timeout {
                backend: Arc::from("rds"),
                operation: "create-volume",
                deadline: std::time::Duration::from_secs(1),
            },
        };
        assert_eq!(code(&timeout), Code::DeadlineExceeded);
        assert!(timeout.to_string().contains("backend rds"));
    }
}
