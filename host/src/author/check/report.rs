//! What `modcsi backend check` found: a verdict per rule, the time of every call, and what it
//! could not clean up; printed for people or as JSON.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::runtime::{Backend, Optional};

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "verdict", content = "detail", rename_all = "lowercase")]
pub enum Verdict {
    Pass(String),
    Fail(String),
    /// The rule does not apply (an interface not exported) or could not run (create failed).
    Skip(String),
}

impl From<Result<String, String>> for Verdict {
    fn from(outcome: Result<String, String>) -> Self {
        match outcome {
            Ok(detail) => Verdict::Pass(detail),
            Err(reason) => Verdict::Fail(reason),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub rule: &'static str,
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// The times of one operation's calls.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CallTime {
    pub calls: u32,
    pub total_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub component: String,
    pub backend: Option<String>,
    pub contract: Option<String>,
    pub exports: Vec<&'static str>,
    pub findings: Vec<Finding>,
    /// By WIT operation name.
    pub calls: BTreeMap<&'static str, CallTime>,
    /// Volumes and snapshots the run made and could not delete, with why.
    pub left_behind: Vec<String>,
}

impl Report {
    pub(super) fn new(path: &Path) -> Self {
        Self {
            component: path.display().to_string(),
            backend: None,
            contract: None,
            exports: vec![],
            findings: vec![],
            calls: BTreeMap::new(),
            left_behind: vec![],
        }
    }

    pub(super) fn describe(&mut self, backend: &Backend) {
        let info = backend.info();
        self.backend = Some(format!("{} {}", info.name, info.version));
        self.contract = Some(backend.wit_version().to_owned());
        self.exports = Optional::ALL
            .into_iter()
            .filter(|i| backend.offers(*i))
            .map(Optional::name)
            .collect();
    }

    pub(super) fn record(&mut self, rule: &'static str, verdict: Verdict) {
        self.findings.push(Finding { rule, verdict });
    }

    pub(super) fn time(&mut self, operation: &'static str, took: Duration) {
        let entry = self.calls.entry(operation).or_default();
        let ms = took.as_secs_f64() * 1e3;
        entry.calls += 1;
        entry.total_ms += ms;
        entry.max_ms = entry.max_ms.max(ms);
    }

    pub fn verdict(&self, rule: &str) -> Option<&Verdict> {
        self.findings
            .iter()
            .find(|f| f.rule == rule)
            .map(|f| &f.verdict)
    }

    pub fn failed(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| matches!(f.verdict, Verdict::Fail(_)))
    }

    /// Whether every rule that applies passed and nothing was left behind.
    pub fn passed(&self) -> bool {
        self.failed().next().is_none() && self.left_behind.is_empty()
    }

    /// The report for people: a line per rule, the call times, a summary.
    pub fn text(&self) -> String {
        let mut out = format!("component {}\n", self.component);
        if let (Some(backend), Some(contract)) = (&self.backend, &self.contract) {
            out += &format!(
                "backend   {backend}, contract modcsi:backend@{contract}, exports: {}\n",
                if self.exports.is_empty() {
                    "the core only".to_owned()
                } else {
                    self.exports.join(", ")
                }
            );
        }
        out.push('\n');
        let (mut passed, mut failed, mut skipped) = (0, 0, 0);
        for f in &self.findings {
            let (word, detail) = match &f.verdict {
                Verdict::Pass(d) => {
                    passed += 1;
                    ("pass", d)
                }
                Verdict::Fail(d) => {
                    failed += 1;
                    ("FAIL", d)
                }
                Verdict::Skip(d) => {
                    skipped += 1;
                    ("skip", d)
                }
            };
            out += &format!("{word}  {:<20} {detail}\n", f.rule);
        }
        if !self.calls.is_empty() {
            out += "\ncalls                   n    mean ms   max ms\n";
            for (op, t) in &self.calls {
                out += &format!(
                    "{op:<22} {:>3} {:>10.2} {:>8.2}\n",
                    t.calls,
                    t.total_ms / f64::from(t.calls),
                    t.max_ms
                );
            }
        }
        for left in &self.left_behind {
            out += &format!("\nleft behind: {left}");
        }
        out += &format!(
            "\n{passed} passed, {failed} failed, {skipped} skipped of {} rules\n",
            self.findings.len()
        );
        out
    }
}
