//! The call's errors: [`err!`](crate::err) builds one from a format string, and the `store` and
//! `ssh` imports' errors convert into one, so `?` works on them.

#![warn(missing_docs)]

use crate::types::Error;
use crate::{ssh, store};

/// A contract [`Error`](crate::types::Error) of the given case, its message formatted as by
/// `format!`: `err!(NotFound, "volume {id}")` is `Error::NotFound(format!("volume {id}"))`.
///
/// ```no_run
/// use modcsi_backend_sdk::err;
/// # fn check(id: &str) -> Result<(), modcsi_backend_sdk::types::Error> {
/// if id.is_empty() {
///     return Err(err!(InvalidArgument, "the volume id is empty"));
/// }
/// # Ok(()) }
/// ```
#[macro_export]
macro_rules! err {
    ($case:ident, $($message:tt)+) => {
        $crate::types::Error::$case(::std::format!($($message)+))
    };
}

/// A store failure as a call's error: a lost compare-and-swap is `aborted` (the caller may
/// retry), an entry over the host's limits `resource-exhausted`, an unreachable store
/// `unavailable`.
impl From<store::StoreError> for Error {
    fn from(e: store::StoreError) -> Self {
        use store::StoreError as E;
        match e {
            E::Conflict(version) => Error::Aborted(format!(
                "store: the entry changed concurrently (now version {version:?})"
            )),
            E::TooLarge(m) => Error::ResourceExhausted(format!("store: {m}")),
            E::Unavailable(m) => Error::Unavailable(format!("store: {m}")),
        }
    }
}

/// An ssh failure as a call's error: a target that cannot be reached or answers too late is
/// `unavailable` (worth retrying), a configuration problem (unknown target, host key, refused
/// key) `failed-precondition`, too much output `internal`.
impl From<ssh::SshError> for Error {
    fn from(e: ssh::SshError) -> Self {
        use ssh::SshError as E;
        match e {
            E::Unavailable(m) | E::Timeout(m) => Error::Unavailable(format!("ssh: {m}")),
            E::HostKey(m) | E::Denied(m) | E::UnknownTarget(m) => {
                Error::FailedPrecondition(format!("ssh: {m}"))
            }
            E::TooLarge(m) => Error::Internal(format!("ssh: {m}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::types::Error;

    #[test]
    fn err_formats_into_the_case() {
        let id = "pvc-1";
        assert!(matches!(err!(NotFound, "volume {id}"), Error::NotFound(m) if m == "volume pvc-1"));
        assert!(matches!(err!(Internal, "plain"), Error::Internal(m) if m == "plain"));
        assert!(matches!(
            err!(OutOfRange, "{} of {}", 3, 2),
            Error::OutOfRange(m) if m == "3 of 2"
        ));
    }
}
