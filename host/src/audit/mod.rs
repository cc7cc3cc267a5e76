//! `modcsi audit`: what is wrong between Kubernetes and the backend, for any backend the host
//! loads. [`correlate`] turns facts into findings (pure, table-tested); [`scan`] gathers the
//! facts: this driver's PVs and pending claims from the API server, the backend's volumes from
//! its `list-volumes` (or, for a backend that cannot list, the host's own volume records), with
//! each volume's age from the host's record.

mod correlate;
mod finding;
mod scan;

pub use correlate::{BackendVolume, Facts, Thresholds, correlate};
pub use finding::{Finding, Report, Severity};
pub use scan::{ScanOptions, scan};
