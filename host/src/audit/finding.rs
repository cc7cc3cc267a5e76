//! A finding: what is wrong, how bad, the evidence, how old, and what to do about it.

use serde::Serialize;

use super::checks::{Check, Status};
use super::usage::Usage;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "UPPERCASE")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Low => "LOW",
            Severity::Medium => "MEDIUM",
            Severity::High => "HIGH",
            Severity::Critical => "CRITICAL",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// `pv-without-volume`, `volume-without-pv`, `released-not-deleted`, `claim-pending`.
    pub kind: &'static str,
    pub severity: Severity,
    /// The PV, volume or claim it is about.
    pub subject: String,
    pub evidence: Vec<String>,
    /// How long it has been so, when known, in seconds.
    pub age_seconds: Option<i64>,
    pub remediation: String,
}

/// Sorts findings the worst first (then by kind and subject, for a stable order).
pub fn worst_first(findings: &mut [Finding]) {
    findings
        .sort_by(|a, b| (b.severity, a.kind, &a.subject).cmp(&(a.severity, b.kind, &b.subject)));
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub driver: String,
    pub backend: String,
    /// When the scan looked (unix seconds).
    pub scanned_unix: i64,
    /// What was looked at: PVs, backend volumes, pending claims.
    pub scanned: std::collections::BTreeMap<&'static str, usize>,
    /// The worst first; failed configuration checks among them.
    pub findings: Vec<Finding>,
    pub usage: Usage,
    pub checks: Vec<Check>,
    pub scan_ms: f64,
}

/// Bytes for people: `1.5 GiB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn age(seconds: Option<i64>) -> String {
    match seconds {
        None => "?".into(),
        Some(s) if s >= 86_400 => format!("{}d", s / 86_400),
        Some(s) if s >= 3_600 => format!("{}h", s / 3_600),
        Some(s) if s >= 60 => format!("{}m", s / 60),
        Some(s) => format!("{s}s"),
    }
}

impl Finding {
    /// Whether it is about an object or volume left behind, rather than usage or configuration.
    pub fn is_orphan(&self) -> bool {
        !matches!(self.kind, "config-check" | "capacity-low")
    }
}

impl Report {
    /// The worst severity found.
    pub fn worst(&self) -> Option<Severity> {
        self.findings.iter().map(|f| f.severity).max()
    }

    /// A table for people: one finding a block, the worst first.
    pub fn text(&self) -> String {
        let scanned: Vec<String> = self
            .scanned
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        let mut out = format!(
            "driver {} (backend {}): looked at {} in {:.0} ms\n",
            self.driver,
            self.backend,
            scanned.join(", "),
            self.scan_ms
        );
        if self.usage.volumes > 0 || !self.usage.classes.is_empty() {
            out += &format!(
                "\nusage: {} volumes, {} provisioned\n",
                self.usage.volumes,
                size(self.usage.provisioned_bytes)
            );
            for c in &self.usage.classes {
                out += &format!(
                    "  class {:<24} {:>5} volumes {:>11} provisioned, {}\n",
                    c.class,
                    c.volumes,
                    size(c.provisioned_bytes),
                    c.storage_text()
                );
            }
            for n in &self.usage.namespaces {
                out += &format!(
                    "  namespace {:<20} {:>5} volumes {:>11} provisioned\n",
                    n.namespace,
                    n.volumes,
                    size(n.provisioned_bytes)
                );
            }
        }
        if !self.checks.is_empty() {
            out += "\nchecks:\n";
            for c in &self.checks {
                let status = match c.status {
                    Status::Pass => "pass",
                    Status::Fail => "FAIL",
                    Status::Skip => "skip",
                };
                out += &format!("  {status}  {:<14} {}\n", c.name, c.detail);
            }
        }
        if self.findings.is_empty() {
            out += "\nno findings\n";
            return out;
        }
        out += &format!(
            "\n{:<9} {:<21} {:<6} {}\n",
            "SEVERITY", "KIND", "AGE", "SUBJECT"
        );
        for f in &self.findings {
            out += &format!(
                "{:<9} {:<21} {:<6} {}\n",
                f.severity.name(),
                f.kind,
                age(f.age_seconds),
                f.subject
            );
            for e in &f.evidence {
                out += &format!("          evidence: {e}\n");
            }
            out += &format!("          remedy:   {}\n", f.remediation);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_each_finding_with_its_evidence_and_remedy() {
        let report = Report {
            driver: "d.csi".into(),
            backend: "rds 0.1.0".into(),
            scanned_unix: 0,
            usage: Usage::default(),
            checks: vec![],
            scanned: [("PVs", 2)].into_iter().collect(),
            findings: vec![Finding {
                kind: "volume-without-pv",
                severity: Severity::High,
                subject: "volume/v1".into(),
                evidence: vec!["named by no PV".into()],
                age_seconds: Some(7200),
                remediation: "delete it".into(),
            }],
            scan_ms: 3.0,
        };
        let text = report.text();
        assert!(
            text.contains("HIGH      volume-without-pv     2h     volume/v1"),
            "{text}"
        );
        assert!(text.contains("evidence: named by no PV") && text.contains("remedy:   delete it"));
        assert_eq!(report.worst(), Some(Severity::High));
    }

    #[test]
    fn sizes_for_people() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(3 << 29), "1.5 GiB");
        assert_eq!(size(16 << 20), "16.0 MiB");
    }
}
