//! The audit service's one page: what was scanned, the findings table (the worst first), a
//! usage chart per StorageClass (provisioned and free), provisioned bytes over time, the
//! configuration checks and the namespaces' totals. Plain HTML with inline SVG: no script, no
//! request beyond the page itself; it reloads every minute.

use std::fmt::Write;

use super::checks::Status;
use super::finding::{Report, Severity, size};
use super::history::UsagePoint;

/// Colours the page and its test agree on.
pub const PROVISIONED: &str = "#2b6cb0";
pub const FREE: &str = "#9ae6b4";
pub const GROWTH: &str = "#6b46c1";

fn severity_colour(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "#c53030",
        Severity::High => "#dd6b20",
        Severity::Medium => "#d69e2e",
        Severity::Low => "#718096",
    }
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn age(seconds: i64) -> String {
    match seconds {
        s if s >= 86_400 => format!("{}d", s / 86_400),
        s if s >= 3_600 => format!("{}h", s / 3_600),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

const STYLE: &str = "body{font-family:sans-serif;margin:24px;color:#1a202c}\
table{border-collapse:collapse;margin:8px 0 24px}\
th,td{border:1px solid #cbd5e0;padding:4px 8px;text-align:left;vertical-align:top;font-size:14px}\
th{background:#edf2f7}.sev{color:#fff;font-weight:bold;padding:2px 6px;border-radius:3px}\
.error{background:#fed7d7;padding:8px}.muted{color:#718096}";

/// Bars per class: provisioned, then free where the backend says.
fn usage_chart(report: &Report, out: &mut String) {
    let classes = &report.usage.classes;
    let widest = classes
        .iter()
        .map(|c| c.provisioned_bytes + c.available_bytes.unwrap_or(0))
        .max()
        .unwrap_or(0)
        .max(1);
    let (label, bar, row) = (180.0, 480.0, 28.0);
    let height = row * classes.len().max(1) as f64 + 10.0;
    let _ = write!(
        out,
        "<svg id=\"usage-chart\" width=\"{}\" height=\"{height}\" role=\"img\" \
         aria-label=\"provisioned and free bytes per StorageClass\">",
        label + bar + 320.0
    );
    for (i, c) in classes.iter().enumerate() {
        let y = 5.0 + row * i as f64;
        let used = bar * c.provisioned_bytes as f64 / widest as f64;
        let free = bar * c.available_bytes.unwrap_or(0) as f64 / widest as f64;
        let _ = write!(
            out,
            "<text x=\"0\" y=\"{}\" font-size=\"13\">{}</text>\
             <rect x=\"{label}\" y=\"{y}\" width=\"{used:.1}\" height=\"20\" fill=\"{PROVISIONED}\"/>\
             <rect x=\"{:.1}\" y=\"{y}\" width=\"{free:.1}\" height=\"20\" fill=\"{FREE}\"/>\
             <text x=\"{:.1}\" y=\"{}\" font-size=\"12\">{} in {} volumes, {}</text>",
            y + 15.0,
            escape(&c.class),
            label + used,
            label + used + free + 6.0,
            y + 15.0,
            size(c.provisioned_bytes),
            c.volumes,
            c.storage_text(),
        );
    }
    out.push_str("</svg>");
}

/// Provisioned bytes over the service's own history.
fn growth_chart(history: &[UsagePoint], out: &mut String) {
    if history.len() < 2 {
        out.push_str("<p class=\"muted\">Growth appears after the second scan.</p>");
        return;
    }
    let (left, w, h) = (70.0, 600.0, 120.0);
    let first = history[0].unix;
    let last = history[history.len() - 1];
    let span = (last.unix - first).max(1) as f64;
    // From zero to a tenth above the largest value, so a flat line is not on the frame.
    let largest = history
        .iter()
        .map(|p| p.provisioned_bytes)
        .max()
        .unwrap_or(0);
    let top = (largest as f64 * 1.1).max(1.0);
    let points: Vec<String> = history
        .iter()
        .map(|p| {
            let x = left + w * (p.unix - first) as f64 / span;
            let y = h - h * p.provisioned_bytes as f64 / top;
            format!("{x:.1},{y:.1}")
        })
        .collect();
    let _ = write!(
        out,
        "<svg id=\"growth-chart\" width=\"{}\" height=\"{}\" role=\"img\" \
         aria-label=\"provisioned bytes over time\">\
         <rect x=\"{left}\" y=\"0\" width=\"{w}\" height=\"{h}\" fill=\"#f7fafc\" stroke=\"#cbd5e0\"/>\
         <text x=\"0\" y=\"12\" font-size=\"11\">{}</text>\
         <text x=\"0\" y=\"{h}\" font-size=\"11\">0</text>\
         <text x=\"{left}\" y=\"{}\" font-size=\"11\">{} ago</text>\
         <text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">now</text>\
         <polyline fill=\"none\" stroke=\"{GROWTH}\" stroke-width=\"3\" points=\"{}\"/></svg>\
         <p class=\"muted\">{} scans; now {} in {} volumes</p>",
        left + w + 10.0,
        h + 20.0,
        size(top as u64),
        h + 16.0,
        age(last.unix - first),
        left + w,
        h + 16.0,
        points.join(" "),
        history.len(),
        size(last.provisioned_bytes),
        last.volumes
    );
}

pub fn render(report: &Report, history: &[UsagePoint], error: Option<&str>, now: i64) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" \
         content=\"60\"><title>modcsi audit: {driver}</title><style>{STYLE}</style></head><body>\
         <h1>modcsi audit: {driver}</h1><p>Backend {backend}; scanned {ago} ago in {ms:.0} ms: \
         {scanned}.</p>",
        driver = escape(&report.driver),
        backend = escape(&report.backend),
        ago = age(now - report.scanned_unix),
        ms = report.scan_ms,
        scanned = escape(
            &report
                .scanned
                .iter()
                .map(|(k, n)| format!("{n} {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    if let Some(error) = error {
        let _ = write!(
            out,
            "<p class=\"error\">The last scan failed (this is the one before): {}</p>",
            escape(error)
        );
    }
    let _ = write!(out, "<h2>Findings ({})</h2>", report.findings.len());
    if report.findings.is_empty() {
        out.push_str("<p>No findings.</p>");
    } else {
        out.push_str(
            "<table id=\"findings\"><tr><th>Severity</th><th>Kind</th><th>Subject</th>\
             <th>Age</th><th>Evidence</th><th>What to do</th></tr>",
        );
        for f in &report.findings {
            let _ = write!(
                out,
                "<tr><td><span class=\"sev\" style=\"background:{}\">{}</span></td><td>{}</td>\
                 <td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                severity_colour(f.severity),
                f.severity.name(),
                f.kind,
                escape(&f.subject),
                f.age_seconds.map_or("?".into(), age),
                f.evidence
                    .iter()
                    .map(|e| escape(e))
                    .collect::<Vec<_>>()
                    .join("<br>"),
                escape(&f.remediation),
            );
        }
        out.push_str("</table>");
    }
    let _ = write!(
        out,
        "<h2>Usage: {} volumes, {} provisioned</h2>",
        report.usage.volumes,
        size(report.usage.provisioned_bytes)
    );
    usage_chart(report, &mut out);
    out.push_str("<h3>Provisioned over time</h3>");
    growth_chart(history, &mut out);
    out.push_str(
        "<h3>By namespace</h3><table id=\"namespaces\"><tr><th>Namespace</th><th>Volumes</th>\
         <th>Provisioned</th></tr>",
    );
    for n in &report.usage.namespaces {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&n.namespace),
            n.volumes,
            size(n.provisioned_bytes)
        );
    }
    out.push_str(
        "</table><h2>Configuration checks</h2><table id=\"checks\"><tr><th>Check</th>\
         <th>Result</th><th>What was seen</th></tr>",
    );
    for c in &report.checks {
        let result = match c.status {
            Status::Pass => "pass",
            Status::Fail => "FAIL",
            Status::Skip => "skipped",
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{result}</td><td>{}</td></tr>",
            c.name,
            escape(&c.detail)
        );
    }
    out.push_str(
        "</table><p class=\"muted\">JSON: <a href=\"/api/v1/orphans\">orphans</a>, \
         <a href=\"/api/v1/usage\">usage</a>, <a href=\"/api/v1/checks\">checks</a>; \
         <a href=\"/metrics\">metrics</a>.</p></body></html>",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_the_cluster_is_escaped() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }
}
