//! Counters of live migrations (a second node joining a multi-writer block volume), for the
//! metrics endpoint and the log.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct Migrations {
    started: AtomicU64,
    completed: AtomicU64,
    timed_out: AtomicU64,
    /// Sum of completed migrations' durations, in milliseconds.
    duration_ms: AtomicU64,
}

/// A reading of [`Migrations`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigrationCounts {
    pub started: u64,
    pub completed: u64,
    pub timed_out: u64,
    pub total_duration: Duration,
}

impl Migrations {
    pub(super) fn started(&self) {
        self.started.fetch_add(1, Relaxed);
        crate::metrics::migration_started();
    }

    pub(super) fn completed(&self, took: Duration) {
        self.completed.fetch_add(1, Relaxed);
        self.duration_ms.fetch_add(took.as_millis() as u64, Relaxed);
        crate::metrics::migration_completed(took);
        tracing::info!(seconds = took.as_secs_f64(), "live migration completed");
    }

    pub(super) fn timed_out(&self) {
        self.timed_out.fetch_add(1, Relaxed);
        crate::metrics::migration_timed_out();
    }

    pub fn counts(&self) -> MigrationCounts {
        MigrationCounts {
            started: self.started.load(Relaxed),
            completed: self.completed.load(Relaxed),
            timed_out: self.timed_out.load(Relaxed),
            total_duration: Duration::from_millis(self.duration_ms.load(Relaxed)),
        }
    }
}
