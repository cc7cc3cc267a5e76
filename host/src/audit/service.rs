//! `modcsi audit --serve`: scans on an interval, one at a time, and serves the latest report:
//! the page (`/`), the JSON API (`/api/v1/orphans`, `/api/v1/usage`, `/api/v1/checks`),
//! Prometheus metrics (`/metrics`) and `/healthz`. Read-only: the service never deletes.
//!
//! Who may read: a peer on the loopback address (`kubectl port-forward` arrives there) always;
//! anyone else with a bearer token the API server's TokenReview authenticates, for a user
//! allowed to list PersistentVolumes (a SubjectAccessReview), since the report is about them.
//! `/healthz` and `/metrics` are open (probes and Prometheus carry no token).

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use hyper::{Request, StatusCode};

use super::finding::Report;
use super::history::{self, UsagePoint};
use super::page;
use super::scan::Auditor;
use crate::scrape::Answer;
use crate::volume::records::now_unix;

/// The key of the history ConfigMap that holds the points.
const HISTORY_KEY: &str = "usage";

#[derive(Default)]
struct Latest {
    report: Option<Report>,
    /// Oldest first, thinned after each scan.
    history: Vec<UsagePoint>,
    /// The last scan's error, if it failed.
    error: Option<String>,
    /// When a scan last succeeded.
    ok_at: Option<Instant>,
}

/// Whether requests from other than loopback need a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Access {
    /// A TokenReview'd token of a user who may list PersistentVolumes (loopback is trusted).
    Tokenreview,
    /// Anyone who reaches the address (behind a proxy that authenticates).
    Open,
}

pub struct Service {
    auditor: Auditor,
    interval: Duration,
    access: Access,
    /// The ConfigMap the history is kept in, when it is kept.
    history_map: Option<String>,
    latest: RwLock<Latest>,
}

impl Service {
    pub fn new(
        auditor: Auditor,
        interval: Duration,
        access: Access,
        history_map: Option<String>,
    ) -> Arc<Self> {
        Arc::new(Self {
            auditor,
            interval,
            access,
            history_map,
            latest: RwLock::default(),
        })
    }

    /// The history kept before this start, if it is kept; a failure to read it starts an
    /// empty one (the chart begins again) rather than no service.
    async fn load_history(&self) {
        let Some(name) = &self.history_map else {
            return;
        };
        match self.auditor.cluster().read_text(name, HISTORY_KEY).await {
            Ok(text) => {
                let points = history::decode(text.as_deref().unwrap_or_default());
                tracing::info!(configmap = %name, points = points.len(), "audit history read");
                self.latest
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .history = points;
            }
            Err(e) => tracing::warn!(configmap = %name, "audit history not read: {e}"),
        }
    }

    /// Keeps `points` in the history ConfigMap, if there is one; a failure is logged and the
    /// next scan writes again.
    async fn save_history(&self, points: &[UsagePoint]) {
        let Some(name) = &self.history_map else {
            return;
        };
        let text = history::encode(points);
        if let Err(e) = self
            .auditor
            .cluster()
            .write_text(name, HISTORY_KEY, &text)
            .await
        {
            tracing::warn!(configmap = %name, "audit history not kept: {e}");
        }
    }

    /// Serves on `address` and scans every interval (the first at once), until dropped.
    pub async fn run(self: Arc<Self>, address: SocketAddr) -> std::io::Result<SocketAddr> {
        let me = self.clone();
        let (bound, _task) = crate::scrape::serve(address, "the audit", move |request, peer| {
            let me = me.clone();
            async move { me.answer(request, peer).await }
        })
        .await?;
        tokio::spawn(async move {
            self.load_history().await;
            loop {
                self.scan_once().await;
                tokio::time::sleep(self.interval).await;
            }
        });
        Ok(bound)
    }

    async fn scan_once(&self) {
        let started = Instant::now();
        match self.auditor.scan().await {
            Ok(report) => {
                crate::metrics::audit_scanned(
                    report.scanned_unix,
                    started.elapsed(),
                    report.findings.iter().map(|f| (f.kind, f.severity.name())),
                    report
                        .usage
                        .classes
                        .iter()
                        .map(|c| (c.class.as_str(), c.provisioned_bytes)),
                );
                tracing::info!(
                    findings = report.findings.len(),
                    ms = report.scan_ms as u64,
                    "audit scan"
                );
                let points = {
                    let mut latest = self.latest.write().unwrap_or_else(|e| e.into_inner());
                    latest.history.push(UsagePoint {
                        unix: report.scanned_unix,
                        volumes: report.usage.volumes,
                        provisioned_bytes: report.usage.provisioned_bytes,
                        findings: report.findings.len(),
                    });
                    latest.history = history::thin(&latest.history, report.scanned_unix);
                    latest.report = Some(report);
                    latest.error = None;
                    latest.ok_at = Some(Instant::now());
                    latest.history.clone()
                };
                self.save_history(&points).await;
            }
            Err(e) => {
                crate::metrics::audit_failed(started.elapsed());
                tracing::warn!("audit scan failed: {e}");
                let mut latest = self.latest.write().unwrap_or_else(|e| e.into_inner());
                latest.error = Some(e.to_string());
            }
        }
    }

    /// Whether this request may read the report.
    async fn allowed(&self, request: &Request<hyper::body::Incoming>, peer: SocketAddr) -> bool {
        if self.access == Access::Open || peer.ip().is_loopback() {
            return true;
        }
        let Some(token) = request
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        let cluster = self.auditor.cluster();
        match cluster.review_token(token.trim()).await {
            Ok(Some(who)) => cluster
                .may_they(&who, "list", "", "persistentvolumes")
                .await
                .unwrap_or_else(|e| {
                    tracing::warn!("audit: access review failed: {e}");
                    false
                }),
            Ok(None) => false,
            Err(e) => {
                tracing::warn!("audit: token review failed: {e}");
                false
            }
        }
    }

    async fn answer(&self, request: Request<hyper::body::Incoming>, peer: SocketAddr) -> Answer {
        let path = request.uri().path().to_owned();
        if request.method() != hyper::Method::GET {
            return (
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "read-only: GET only\n".into(),
            );
        }
        match path.as_str() {
            "/healthz" => return self.health(),
            "/metrics" => {
                return (
                    StatusCode::OK,
                    crate::metrics::CONTENT_TYPE,
                    crate::metrics::encode(),
                );
            }
            _ => {}
        }
        if !self.allowed(&request, peer).await {
            return (
                StatusCode::UNAUTHORIZED,
                "text/plain",
                "a bearer token of a user who may list PersistentVolumes is needed\n".into(),
            );
        }
        let latest = self.latest.read().unwrap_or_else(|e| e.into_inner());
        let history = &latest.history;
        let Some(report) = &latest.report else {
            let why = latest
                .error
                .clone()
                .unwrap_or_else(|| "the first scan is running".into());
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("no report yet: {why}\n"),
            );
        };
        let json = |value: serde_json::Value| {
            (
                StatusCode::OK,
                "application/json",
                serde_json::to_string_pretty(&value).expect("JSON of plain values"),
            )
        };
        let meta = serde_json::json!({
            "driver": report.driver,
            "backend": report.backend,
            "scanned_unix": report.scanned_unix,
            "last_error": latest.error,
        });
        match path.as_str() {
            "/" => (
                StatusCode::OK,
                "text/html; charset=utf-8",
                page::render(report, history, latest.error.as_deref(), now_unix()),
            ),
            "/api/v1/orphans" => json(serde_json::json!({
                "meta": meta,
                "findings": report.findings.iter().filter(|f| f.is_orphan()).collect::<Vec<_>>(),
            })),
            "/api/v1/usage" => json(serde_json::json!({
                "meta": meta,
                "usage": report.usage,
                "history": history,
            })),
            "/api/v1/checks" => json(serde_json::json!({
                "meta": meta,
                "checks": report.checks,
            })),
            _ => (
                StatusCode::NOT_FOUND,
                "text/plain",
                "not found: try /, /api/v1/orphans, /api/v1/usage, /api/v1/checks, /metrics, /healthz\n"
                    .into(),
            ),
        }
    }

    /// 200 while the last successful scan is at most three intervals old (or the first is
    /// under way), else 503: the service is up but cannot see the cluster or the backend.
    fn health(&self) -> Answer {
        let latest = self.latest.read().unwrap_or_else(|e| e.into_inner());
        let stale = match latest.ok_at {
            Some(at) => at.elapsed() > self.interval * 3 + Duration::from_secs(60),
            None => latest.error.is_some(),
        };
        if stale {
            let why = latest.error.clone().unwrap_or_default();
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("scans are failing: {why}\n"),
            )
        } else {
            (StatusCode::OK, "text/plain", "ok\n".into())
        }
    }
}
