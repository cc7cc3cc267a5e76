//! What the host counts, for Prometheus: CSI calls, backend calls, fencing, live migrations, node
//! operations, node-local cleanup and SSH. One process-wide registry, so that every layer records
//! where it acts without a handle threaded through it; `encode` renders it for the scrape
//! endpoint (`crate::scrape`).
//!
//! The client is `prometheus-client`, the Prometheus project's own Rust client: typed label sets,
//! no global default registry of its own, the OpenMetrics text format.

use std::sync::LazyLock;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CsiCall {
    method: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Method {
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendCall {
    backend: String,
    operation: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendOperation {
    backend: String,
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Verdict {
    verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeOperation {
    operation: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RecordState {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetCall {
    target: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Target {
    target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuditFinding {
    kind: String,
    severity: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Class {
    class: String,
}

/// 0.5 ms to about 16 s.
fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// 64 KiB to 512 MiB.
fn bytes() -> Histogram {
    Histogram::new(exponential_buckets(65536.0, 2.0, 14))
}

struct Metrics {
    registry: Registry,
    csi_calls: Family<CsiCall, Counter>,
    csi_seconds: Family<Method, Histogram>,
    backend_calls: Family<BackendCall, Counter>,
    backend_seconds: Family<BackendOperation, Histogram>,
    backend_memory: Family<BackendOperation, Histogram>,
    fencing: Family<Verdict, Counter>,
    migrations_started: Counter,
    migrations_timed_out: Counter,
    migration_seconds: Histogram,
    migrations_active: Gauge,
    node_operations: Family<NodeOperation, Counter>,
    stale_mounts: Counter,
    cleanup_records: Family<RecordState, Gauge>,
    cleanup_oldest: Gauge<f64, AtomicU64>,
    ssh_calls: Family<TargetCall, Counter>,
    ssh_seconds: Family<Target, Histogram>,
    http_requests: Family<TargetCall, Counter>,
    http_seconds: Family<Target, Histogram>,
    audit_findings: Family<AuditFinding, Gauge>,
    audit_scans: Family<Outcome, Counter>,
    audit_seconds: Histogram,
    audit_last_scan: Gauge,
    audit_provisioned: Family<Class, Gauge>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("modcsi");
    let m = Metrics {
        csi_calls: Family::default(),
        csi_seconds: Family::new_with_constructor(seconds),
        backend_calls: Family::default(),
        backend_seconds: Family::new_with_constructor(seconds),
        backend_memory: Family::new_with_constructor(bytes),
        fencing: Family::default(),
        migrations_started: Counter::default(),
        migrations_timed_out: Counter::default(),
        migration_seconds: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
        migrations_active: Gauge::default(),
        node_operations: Family::default(),
        stale_mounts: Counter::default(),
        cleanup_records: Family::default(),
        cleanup_oldest: Gauge::default(),
        ssh_calls: Family::default(),
        ssh_seconds: Family::new_with_constructor(seconds),
        http_requests: Family::default(),
        http_seconds: Family::new_with_constructor(seconds),
        audit_findings: Family::default(),
        audit_scans: Family::default(),
        audit_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
        audit_last_scan: Gauge::default(),
        audit_provisioned: Family::default(),
        registry: Registry::default(),
    };
    let r = &mut registry;
    r.register(
        "csi_operations",
        "CSI calls by method and gRPC status code",
        m.csi_calls.clone(),
    );
    r.register(
        "csi_operation_duration_seconds",
        "Time from a CSI call's arrival to its answer",
        m.csi_seconds.clone(),
    );
    r.register(
        "backend_calls",
        "Backend component calls by outcome (ok, refused, timeout, trap, memory_limit, busy)",
        m.backend_calls.clone(),
    );
    r.register(
        "backend_call_duration_seconds",
        "Time of one backend call, waiting for an instance slot included",
        m.backend_seconds.clone(),
    );
    r.register(
        "backend_call_memory_bytes",
        "Peak linear memory of one backend call's instance",
        m.backend_memory.clone(),
    );
    r.register(
        "fencing_decisions",
        "ReadWriteOnce fencing decisions: admitted (new), again (already held), refused (a conflict)",
        m.fencing.clone(),
    );
    r.register(
        "migrations_started",
        "Live migrations begun (a second node joined a multi-writer block volume)",
        m.migrations_started.clone(),
    );
    r.register(
        "migrations_timed_out",
        "Live-migration secondaries refused because the window had passed",
        m.migrations_timed_out.clone(),
    );
    r.register(
        "migration_duration_seconds",
        "Time from a live migration's start to one of its two nodes leaving",
        m.migration_seconds.clone(),
    );
    r.register(
        "migrations_active",
        "Live migrations under way (since this process started)",
        m.migrations_active.clone(),
    );
    r.register(
        "node_operations",
        "Node operations (stage, unstage, publish, unpublish, expand, nvme_connect, nvme_disconnect) by outcome",
        m.node_operations.clone(),
    );
    r.register(
        "node_stale_mounts",
        "Stale staged mounts found and replaced (the device changed under them)",
        m.stale_mounts.clone(),
    );
    r.register(
        "cleanup_records",
        "Node-local cleanup records of this driver: active (volume in use) or deleting (waiting on nodes)",
        m.cleanup_records.clone(),
    );
    r.register(
        "cleanup_oldest_deletion_age_seconds",
        "Age of the oldest node-local cleanup still waiting on a node (0: none)",
        m.cleanup_oldest.clone(),
    );
    r.register(
        "ssh_calls",
        "SSH commands by target and outcome (ok, error, timeout)",
        m.ssh_calls.clone(),
    );
    r.register(
        "ssh_call_duration_seconds",
        "Time of one SSH command, connecting included",
        m.ssh_seconds.clone(),
    );
    r.register(
        "http_requests",
        "Backend HTTP requests by target and outcome (2xx..5xx answers, denied, error)",
        m.http_requests.clone(),
    );
    r.register(
        "http_request_duration_seconds",
        "Time of one backend HTTP request to its answer's last byte",
        m.http_seconds.clone(),
    );
    r.register(
        "audit_findings",
        "Findings of the last audit scan by kind and severity",
        m.audit_findings.clone(),
    );
    r.register(
        "audit_scans",
        "Audit scans by outcome (ok, error)",
        m.audit_scans.clone(),
    );
    r.register(
        "audit_scan_duration_seconds",
        "Time of one audit scan",
        m.audit_seconds.clone(),
    );
    r.register(
        "audit_last_scan_timestamp_seconds",
        "When the last successful audit scan looked (unix seconds)",
        m.audit_last_scan.clone(),
    );
    r.register(
        "audit_provisioned_bytes",
        "Bytes this driver's PVs provision, by StorageClass, at the last audit scan",
        m.audit_provisioned.clone(),
    );
    Metrics { registry, ..m }
});

/// The registry in the OpenMetrics text format.
pub fn encode() -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &METRICS.registry)
        .expect("writing to a String cannot fail");
    out
}

/// The content type of [`encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A CSI call answered with `code` (the gRPC code's name) after `took`.
pub fn csi_call(method: &str, code: &str, took: Duration) {
    let method = method.to_owned();
    METRICS
        .csi_calls
        .get_or_create(&CsiCall {
            method: method.clone(),
            code: code.to_owned(),
        })
        .inc();
    METRICS
        .csi_seconds
        .get_or_create(&Method { method })
        .observe(took.as_secs_f64());
}

/// A backend call's outcome and time.
pub fn backend_call(backend: &str, operation: &'static str, outcome: &'static str, took: Duration) {
    let backend = backend.to_owned();
    METRICS
        .backend_calls
        .get_or_create(&BackendCall {
            backend: backend.clone(),
            operation,
            outcome,
        })
        .inc();
    METRICS
        .backend_seconds
        .get_or_create(&BackendOperation { backend, operation })
        .observe(took.as_secs_f64());
}

/// The peak linear memory one backend call's instance reached.
pub fn backend_memory(backend: &str, operation: &'static str, bytes: usize) {
    METRICS
        .backend_memory
        .get_or_create(&BackendOperation {
            backend: backend.to_owned(),
            operation,
        })
        .observe(bytes as f64);
}

/// A fencing decision: `admitted`, `again` or `refused`.
pub fn fencing_decision(verdict: &'static str) {
    METRICS.fencing.get_or_create(&Verdict { verdict }).inc();
}

pub fn migration_started() {
    METRICS.migrations_started.inc();
    METRICS.migrations_active.inc();
}

pub fn migration_timed_out() {
    METRICS.migrations_timed_out.inc();
}

pub fn migration_completed(took: Duration) {
    METRICS.migration_seconds.observe(took.as_secs_f64());
    // A migration begun before this process started is not counted as active.
    if METRICS.migrations_active.get() > 0 {
        METRICS.migrations_active.dec();
    }
}

/// A node operation's outcome.
pub fn node_operation<T, E>(operation: &'static str, result: &Result<T, E>) {
    let outcome = if result.is_ok() { "ok" } else { "error" };
    METRICS
        .node_operations
        .get_or_create(&NodeOperation { operation, outcome })
        .inc();
}

pub fn stale_mount() {
    METRICS.stale_mounts.inc();
}

/// What a controller's cleanup pass saw: records in use, records being deleted, and how long
/// the oldest deletion has waited.
pub fn cleanup_records(active: usize, deleting: usize, oldest: Duration) {
    for (state, n) in [("active", active), ("deleting", deleting)] {
        METRICS
            .cleanup_records
            .get_or_create(&RecordState { state })
            .set(n as i64);
    }
    METRICS.cleanup_oldest.set(oldest.as_secs_f64());
}

/// An SSH command's outcome (`ok`, `error`, `timeout`) and time.
pub fn ssh_call(target: &str, outcome: &'static str, took: Duration) {
    target_call(
        &METRICS.ssh_calls,
        &METRICS.ssh_seconds,
        target,
        outcome,
        took,
    );
}

/// A backend HTTP request's outcome (the answer's status class, `denied`, `error`) and time.
pub fn http_request(target: &str, outcome: &'static str, took: Duration) {
    target_call(
        &METRICS.http_requests,
        &METRICS.http_seconds,
        target,
        outcome,
        took,
    );
}

fn target_call(
    calls: &Family<TargetCall, Counter>,
    seconds: &Family<Target, Histogram>,
    target: &str,
    outcome: &'static str,
    took: Duration,
) {
    let target = target.to_owned();
    calls
        .get_or_create(&TargetCall {
            target: target.clone(),
            outcome,
        })
        .inc();
    seconds
        .get_or_create(&Target { target })
        .observe(took.as_secs_f64());
}

/// An audit scan that failed after `took`.
pub fn audit_failed(took: Duration) {
    let m = &*METRICS;
    m.audit_scans
        .get_or_create(&Outcome { outcome: "error" })
        .inc();
    m.audit_seconds.observe(took.as_secs_f64());
}

/// An audit scan that looked at `at_unix` and took `took`: its findings by (kind, severity),
/// and the bytes provisioned by class. The previous scan's series are replaced.
pub fn audit_scanned<'a>(
    at_unix: i64,
    took: Duration,
    findings: impl IntoIterator<Item = (&'a str, &'a str)>,
    provisioned: impl IntoIterator<Item = (&'a str, u64)>,
) {
    let m = &*METRICS;
    m.audit_scans
        .get_or_create(&Outcome { outcome: "ok" })
        .inc();
    m.audit_seconds.observe(took.as_secs_f64());
    m.audit_last_scan.set(at_unix);
    m.audit_findings.clear();
    for (kind, severity) in findings {
        let labels = AuditFinding {
            kind: kind.into(),
            severity: severity.into(),
        };
        m.audit_findings.get_or_create(&labels).inc();
    }
    m.audit_provisioned.clear();
    for (class, bytes) in provisioned {
        let labels = Class {
            class: class.into(),
        };
        m.audit_provisioned
            .get_or_create(&labels)
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_recorded_is_rendered_with_its_labels() {
        csi_call("CreateVolume", "OK", Duration::from_millis(3));
        csi_call("CreateVolume", "OK", Duration::from_millis(5));
        backend_call("rds", "create-volume", "trap", Duration::from_millis(1));
        migration_started();
        migration_completed(Duration::from_secs(3));
        migration_completed(Duration::from_secs(3));
        let text = encode();
        assert!(
            text.contains(r#"modcsi_csi_operations_total{method="CreateVolume",code="OK"} 2"#),
            "{text}"
        );
        assert!(text.contains(
            r#"modcsi_backend_calls_total{backend="rds",operation="create-volume",outcome="trap"} 1"#
        ));
        assert!(
            text.contains(
                r#"modcsi_csi_operation_duration_seconds_count{method="CreateVolume"} 2"#
            )
        );
        // A completion of a migration this process did not see begin never goes below zero.
        assert!(text.contains("modcsi_migrations_active 0"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
