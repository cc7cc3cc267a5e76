//! Long operations that outlast one CSI call: a cloud volume that takes minutes to become ready,
//! an attach polled for minutes. A sidecar's call lasts seconds, and it retries the same request
//! after a non-final error, so a backend:
//!
//! 1. starts the operation at most once per idempotency key ([`once`]), recording in the durable
//!    `store` first what it is about to do and then what it started, so a retry, or a host
//!    restarted in between, finds it instead of starting a second one;
//! 2. waits for it within the call's deadline ([`wait`]), and when time runs out answers
//!    `aborted` ("in progress"), which the sidecars retry; the retry resumes the wait.

#![warn(missing_docs)]

use std::time::Duration;

use crate::store;
use crate::types::Error;

/// Time kept back from the call's deadline for answering.
const MARGIN_MS: u64 = 1500;

/// How an operation stands.
pub enum Step<T> {
    /// Finished, with its result.
    Done(T),
    /// Still running; the text says how it stands (for the "in progress" answer).
    Pending(String),
}

const INTENT: u8 = b'i';
const STARTED: u8 = b's';

/// Runs `start` at most once for `key` and returns what it answered (an id, say), now or on any
/// later call with the same key.
///
/// Before starting, `intent` is recorded; if a call dies between starting and recording the
/// answer, the next call gives that intent to `recover`, which looks at the storage system and
/// returns what the interrupted start made (`Some`) or `None` when it made nothing (then `start`
/// runs again). Two calls starting at once: the second answers `aborted`.
pub fn once(
    key: &str,
    intent: &[u8],
    recover: impl FnOnce(&[u8]) -> Result<Option<Vec<u8>>, Error>,
    start: impl FnOnce() -> Result<Vec<u8>, Error>,
) -> Result<Vec<u8>, Error> {
    let version = match store::get(key)? {
        Some(entry) => match entry.value.split_first() {
            Some((&STARTED, answer)) => return Ok(answer.to_vec()),
            Some((&INTENT, recorded)) => match recover(recorded)? {
                Some(found) => return record(key, &found, Some(entry.version)),
                None => entry.version,
            },
            _ => {
                return Err(Error::Internal(format!(
                    "store entry {key} is not an operation"
                )));
            }
        },
        None => match store::put(key, &tagged(INTENT, intent), None) {
            Ok(version) => version,
            Err(store::StoreError::Conflict(_)) => {
                return Err(Error::Aborted(format!(
                    "{key}: another call is starting it"
                )));
            }
            Err(e) => return Err(e.into()),
        },
    };
    let answer = start()?;
    record(key, &answer, Some(version))
}

fn tagged(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(value.len() + 1);
    bytes.push(tag);
    bytes.extend_from_slice(value);
    bytes
}

fn record(key: &str, answer: &[u8], expected: Option<u64>) -> Result<Vec<u8>, Error> {
    store::put(key, &tagged(STARTED, answer), expected)?;
    Ok(answer.to_vec())
}

/// What [`once`] recorded for `key`: `Some` once started.
pub fn started(key: &str) -> Result<Option<Vec<u8>>, Error> {
    Ok(store::get(key)?.and_then(|e| match e.value.split_first() {
        Some((&STARTED, answer)) => Some(answer.to_vec()),
        _ => None,
    }))
}

/// Forgets `key` (the operation's result is gone, e.g. the volume was deleted).
pub fn forget(key: &str) -> Result<(), Error> {
    Ok(store::delete(key, None)?)
}

/// Polls `check` every `every` until it is done, or until the call's deadline is near: then the
/// answer is `aborted` naming `what` and how it stands, and the caller's retry polls again.
pub fn wait<T>(
    what: &str,
    every: Duration,
    mut check: impl FnMut() -> Result<Step<T>, Error>,
) -> Result<T, Error> {
    loop {
        let status = match check()? {
            Step::Done(value) => return Ok(value),
            Step::Pending(status) => status,
        };
        let left = crate::host::time_left_ms();
        let pause = every.as_millis() as u64;
        if left <= MARGIN_MS + pause {
            return Err(Error::Aborted(format!(
                "{what}: in progress ({status}); the retry resumes it"
            )));
        }
        std::thread::sleep(every);
    }
}
