//! Commands on the machines the host's `ssh` targets name (a storage appliance managed over
//! SSH): [`run`] sends one within the call's time, and [`Output::checked`] tells a command that
//! succeeded from one that did not.
//!
//! ```no_run
//! use std::time::Duration;
//! use modcsi_backend_sdk::remote;
//! # fn f() -> Result<(), modcsi_backend_sdk::types::Error> {
//! match remote::run("appliance", "zfs list -H", Duration::from_secs(30))?.checked() {
//!     Ok(stdout) => { /* parse it */ }
//!     Err(said) => { /* the command failed: exit status and what it said */ }
//! }
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

use std::time::Duration;

use crate::ssh::{self, Output};
use crate::types::Error;

/// Runs `command` on the ssh target `target`, waiting at most `limit` (the host also stops at
/// the call's deadline). A target that cannot be reached, refuses, or answers too late is the
/// call's error (see the `From<SshError>` conversion); the command's own failure is in the
/// [`Output`].
pub fn run(target: &str, command: &str, limit: Duration) -> Result<Output, Error> {
    let limit = limit.as_millis().min(u32::MAX.into()) as u32;
    let left = crate::host::time_left_ms().min(u32::MAX.into()) as u32;
    Ok(ssh::run(target, command, limit.min(left))?)
}

impl Output {
    /// The command's stdout when it succeeded; otherwise `exit status <n>: <what it said>` (its
    /// stderr, else its stdout). A command failed when it exited non-zero or wrote to stderr;
    /// one without an exit status (a server that sends none) and a clean stderr succeeded.
    pub fn checked(self) -> Result<String, String> {
        let failed = self.exit_status.is_some_and(|s| s != 0) || !self.stderr.trim().is_empty();
        if !failed {
            return Ok(self.stdout);
        }
        let said = [self.stderr.trim(), self.stdout.trim()]
            .into_iter()
            .find(|s| !s.is_empty())
            .unwrap_or("nothing");
        Err(format!(
            "exit status {}: {said}",
            self.exit_status.map_or("unknown".into(), |s| s.to_string())
        ))
    }
}

#[cfg(test)]
mod tests {
    use crate::ssh::Output;

    fn output(exit_status: Option<u32>, stdout: &str, stderr: &str) -> Output {
        Output {
            exit_status,
            stdout: stdout.into(),
            stderr: stderr.into(),
        }
    }

    #[test]
    fn failures_are_a_status_or_stderr() {
        assert_eq!(output(Some(0), "ok\n", "").checked(), Ok("ok\n".into()));
        assert_eq!(output(None, "ok", " \n").checked(), Ok("ok".into()));
        assert_eq!(
            output(Some(2), "out", "").checked(),
            Err("exit status 2: out".into())
        );
        assert_eq!(
            output(Some(0), "out", "warning\n").checked(),
            Err("exit status 0: warning".into())
        );
        assert_eq!(
            output(None, "", "killed").checked(),
            Err("exit status unknown: killed".into())
        );
        assert_eq!(
            output(Some(1), "", "").checked(),
            Err("exit status 1: nothing".into())
        );
    }
}
