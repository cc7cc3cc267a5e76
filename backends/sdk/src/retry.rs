//! Repeating a request that failed in a way worth repeating (a 5xx, a 429, a broken
//! connection), with exponential backoff and jitter, a bounded number of times, and never past
//! the call's deadline.
//!
//! ```no_run
//! use modcsi_backend_sdk::http::{Method, Request};
//! use modcsi_backend_sdk::retry::{Backoff, Next};
//! let (answer, attempts) = Backoff::default().retry(
//!     "GET /v1/things",
//!     || Request::new(Method::Get, "api", "/v1/things").send(),
//!     |answer| match answer {
//!         Ok(r) if r.status == 429 => r.retry_after().map_or(Next::Retry, Next::RetryAfter),
//!         Ok(r) if r.status >= 500 => Next::Retry,
//!         _ => Next::Stop,
//!     },
//! );
//! ```

#![warn(missing_docs)]

use std::time::Duration;

use crate::host;

/// How many attempts, and how long between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// The ceiling of the first pause; it doubles with each attempt, up to `max`.
    pub first: Duration,
    /// The longest pause, also for one an answer asks for ([`Next::RetryAfter`]).
    pub max: Duration,
    /// Time kept back from the call's deadline: no pause starts that would leave less.
    pub reserve: Duration,
}

impl Default for Backoff {
    /// 5 attempts, pauses of up to 200 ms, 400 ms, … 5 s, 1 s kept back.
    fn default() -> Self {
        Self {
            attempts: 5,
            first: Duration::from_millis(200),
            max: Duration::from_secs(5),
            reserve: Duration::from_secs(1),
        }
    }
}

/// Whether to make another attempt after an outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// The outcome stands: a success, or a failure that repeating would not mend.
    Stop,
    /// Worth another attempt after the backoff's pause.
    Retry,
    /// Worth another attempt after this pause (what a `Retry-After` asks for), at most `max`.
    RetryAfter(Duration),
}

impl Backoff {
    /// The pause after attempt `attempt` (1 for the first): at random between half and all of
    /// `first` doubled for each attempt before, at most `max`.
    pub fn pause(&self, attempt: u32) -> Duration {
        self.pause_with(attempt, random())
    }

    fn pause_with(&self, attempt: u32, random: u64) -> Duration {
        let ceiling = self
            .first
            .saturating_mul(1 << attempt.saturating_sub(1).min(31))
            .min(self.max);
        let ms = ceiling.as_millis() as u64;
        Duration::from_millis(ms / 2 + random % (ms / 2 + 1))
    }

    /// Makes `attempt` until `next` answers [`Next::Stop`] for its outcome, the attempts are
    /// spent, or the pause would leave less than `reserve` of the call; returns the last
    /// outcome and the number of attempts made. Each repeat is logged (debug) naming `what`.
    pub fn retry<T>(
        &self,
        what: &str,
        attempt: impl FnMut() -> T,
        next: impl FnMut(&T) -> Next,
    ) -> (T, u32) {
        self.retry_with(
            attempt,
            next,
            || Duration::from_millis(host::time_left_ms()),
            |made, pause| {
                crate::debug!("retrying", request = what, attempt = made);
                std::thread::sleep(pause);
            },
            random,
        )
    }

    /// [`Backoff::retry`] with its clock, its sleep and its randomness given.
    fn retry_with<T>(
        &self,
        mut attempt: impl FnMut() -> T,
        mut next: impl FnMut(&T) -> Next,
        mut time_left: impl FnMut() -> Duration,
        mut sleep: impl FnMut(u32, Duration),
        mut random: impl FnMut() -> u64,
    ) -> (T, u32) {
        let mut made = 0;
        loop {
            made += 1;
            let outcome = attempt();
            let pause = match next(&outcome) {
                Next::Stop => None,
                Next::Retry => Some(self.pause_with(made, random())),
                Next::RetryAfter(pause) => Some(pause.min(self.max)),
            };
            match pause {
                Some(pause) if made < self.attempts && time_left() > pause + self.reserve => {
                    sleep(made, pause);
                }
                _ => return (outcome, made),
            }
        }
    }
}

/// A random number, from the hasher the standard library seeds from the system.
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn pauses_double_up_to_the_cap_with_jitter() {
        let b = Backoff::default();
        // The least (random 0) and the most (random at the top) of each attempt's pause.
        let least: Vec<_> = (1..=6).map(|a| b.pause_with(a, 0)).collect();
        let most: Vec<_> = (1..=6).map(|a| b.pause_with(a, u64::MAX - 1)).collect();
        assert_eq!(
            least,
            [MS(100), MS(200), MS(400), MS(800), MS(1600), MS(2500)]
        );
        for (attempt, pause) in (1..).zip(&most) {
            assert!(*pause <= MS(200 << (attempt - 1)).min(b.max), "{pause:?}");
        }
        assert_eq!(b.pause_with(40, 10_001), MS(2500 + 10_001 % 2501));
    }

    /// Runs `retry_with` over `outcomes` with `left` of the call; the outcome returned, the
    /// attempts made and the pauses slept.
    fn run(b: Backoff, outcomes: &[Next], left: Duration) -> (usize, u32, Vec<(u32, Duration)>) {
        let mut slept = vec![];
        let mut i = 0;
        let (outcome, made) = b.retry_with(
            || {
                i += 1;
                i - 1
            },
            |&n| outcomes[n.min(outcomes.len() - 1)],
            || left,
            |made, pause| slept.push((made, pause)),
            || 0,
        );
        (outcome, made, slept)
    }

    #[test]
    fn retries_until_stop_or_the_attempts_are_spent() {
        let b = Backoff::default();
        let (outcome, made, slept) = run(
            b,
            &[Next::Retry, Next::Retry, Next::Stop],
            Duration::MAX / 2,
        );
        assert_eq!((outcome, made), (2, 3));
        assert_eq!(slept, [(1, MS(100)), (2, MS(200))]);

        let (outcome, made, slept) = run(b, &[Next::Retry], Duration::MAX / 2);
        assert_eq!((outcome, made), (4, 5));
        assert_eq!(slept.len(), 4);
    }

    #[test]
    fn an_asked_for_pause_is_capped_and_the_deadline_ends_it() {
        let b = Backoff::default();
        let (_, made, slept) = run(
            b,
            &[Next::RetryAfter(Duration::from_secs(60)), Next::Stop],
            Duration::MAX / 2,
        );
        assert_eq!((made, slept), (2, vec![(1, b.max)]));
        // 1.05 s left: a 100 ms pause would leave less than the 1 s kept back.
        let (outcome, made, slept) = run(b, &[Next::Retry], MS(1050));
        assert_eq!((outcome, made, slept), (0, 1, vec![]));
    }
}
