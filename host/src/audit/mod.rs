//! `modcsi audit`: what is wrong between Kubernetes and the backend, for any backend the host
//! loads. [`correlate`], [`usage`] and [`checks`] turn facts into findings, usage and check
//! results (pure, table-tested); [`scan`] gathers the facts: this driver's PVs, classes and
//! pending claims from the API server, the backend's volumes from its `list-volumes` (or, for a
//! backend that cannot list, the host's own volume records) with each volume's age from the
//! host's record, and what the configuration checks look at. [`service`] scans on an interval
//! and keeps a usage [`history`].

mod checks;
mod correlate;
mod delete;
mod finding;
mod history;
mod page;
mod scan;
mod service;
mod usage;

pub use checks::{Check, Status};
pub use correlate::{BackendVolume, Facts, Thresholds, correlate};
pub use delete::Deletion;
pub use finding::{Finding, Report, Severity, size};
pub use history::UsagePoint;
pub use scan::{Auditor, ScanOptions};
pub use service::{Access, Service};
pub use usage::Usage;
