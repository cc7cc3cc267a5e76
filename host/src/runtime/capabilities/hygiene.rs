//! What a backend writes reaches operators' logs and tenants' PVC events: it is capped in size,
//! its control characters are escaped (no forged log lines), and secret values are scrubbed.

use std::fmt::Write;

/// Log bytes one call may emit; past this, one notice and silence.
pub(crate) const LOG_BYTES_PER_CALL: usize = 64 * 1024;
const MAX_MESSAGE: usize = 2048;
const MAX_FIELDS: usize = 32;
const MAX_FIELD_KEY: usize = 64;
const MAX_FIELD_VALUE: usize = 512;
/// Shorter secret values are not scrubbed: a one-letter "secret" would blank every message.
const MIN_SCRUBBED: usize = 3;
const SCRUBBED: &str = "<redacted>";

/// The secret values of one call (its request's secrets and the configuration's secrets).
#[derive(Debug, Clone, Default)]
pub(crate) struct Scrubber {
    secrets: Vec<String>,
}

impl Scrubber {
    pub(crate) fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let mut secrets: Vec<String> = secrets
            .into_iter()
            .filter(|s| s.len() >= MIN_SCRUBBED)
            .collect();
        // Longest first, so a secret containing another is scrubbed whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Self { secrets }
    }

    /// `text` with every secret value replaced.
    pub(crate) fn scrub(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for secret in &self.secrets {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), SCRUBBED);
            }
        }
        text
    }

    /// Scrubbed, control characters escaped, at most `max` bytes.
    pub(crate) fn clean(&self, text: &str, max: usize) -> String {
        escape_controls(&truncate(&self.scrub(text), max))
    }
}

/// Escapes control characters (newlines included) so one log call is one log line.
pub(crate) fn escape_controls(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            let _ = write!(out, "{}", c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// At most `max` bytes, cut on a character boundary, marked when cut.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…[{} bytes cut]", &text[..end], text.len() - end)
}

/// Keys whose values never reach a log.
fn is_sensitive(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["secret", "token", "password", "passwd", "credential", "key"]
        .iter()
        .any(|s| key.contains(s))
}

/// The log allowance of one call.
#[derive(Debug)]
pub(crate) struct LogBudget {
    left: usize,
    exhausted: bool,
}

impl Default for LogBudget {
    fn default() -> Self {
        Self {
            left: LOG_BYTES_PER_CALL,
            exhausted: false,
        }
    }
}

impl LogBudget {
    /// The cleaned message and rendered fields, or `None` once this call has logged enough.
    pub(crate) fn admit(
        &mut self,
        message: &str,
        fields: &[(String, String)],
        scrubber: &Scrubber,
    ) -> Option<(String, String)> {
        if self.exhausted {
            return None;
        }
        let message = scrubber.clean(message, MAX_MESSAGE);
        let mut rendered = String::new();
        for (k, v) in fields.iter().take(MAX_FIELDS) {
            let k = scrubber.clean(k, MAX_FIELD_KEY);
            if is_sensitive(&k) {
                let _ = write!(rendered, "{k}=<redacted> ");
            } else {
                let _ = write!(
                    rendered,
                    "{k}={:?} ",
                    scrubber.scrub(&truncate(v, MAX_FIELD_VALUE))
                );
            }
        }
        if fields.len() > MAX_FIELDS {
            let _ = write!(rendered, "(+{} fields cut)", fields.len() - MAX_FIELDS);
        }
        let cost = message.len() + rendered.len();
        if cost > self.left {
            self.exhausted = true;
            return Some((
                format!(
                    "backend exceeded its log allowance of {LOG_BYTES_PER_CALL} bytes for this call; further lines dropped"
                ),
                String::new(),
            ));
        }
        self.left -= cost;
        Some((message, rendered.trim_end().to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubs_escapes_and_truncates() {
        let s = Scrubber::new(["hunter2".to_owned(), "x".to_owned()]);
        assert_eq!(s.scrub("pw=hunter2 x"), "pw=<redacted> x");
        assert_eq!(
            s.clean("line\nINFO forged line", 100),
            "line\\nINFO forged line"
        );
        let cut = s.clean(&"é".repeat(100), 11);
        assert!(cut.starts_with("ééééé…"), "{cut}");
    }

    #[test]
    fn fields_are_redacted_capped_and_escaped() {
        let s = Scrubber::new(["hunter2".to_owned()]);
        let mut budget = LogBudget::default();
        let (message, fields) = budget
            .admit(
                "token is hunter2",
                &[
                    ("volume".into(), "v1".into()),
                    ("api-token".into(), "abc".into()),
                    ("note".into(), "has hunter2\n".into()),
                ],
                &s,
            )
            .unwrap();
        assert_eq!(message, "token is <redacted>");
        assert!(fields.contains("volume=\"v1\""), "{fields}");
        assert!(fields.contains("api-token=<redacted>"), "{fields}");
        assert!(fields.contains("note=\"has <redacted>\\n\""), "{fields}");
        assert!(
            !fields.contains("hunter2") && !fields.contains("abc"),
            "{fields}"
        );
    }

    #[test]
    fn a_call_cannot_log_without_bound() {
        let s = Scrubber::default();
        let mut budget = LogBudget::default();
        let line = "x".repeat(MAX_MESSAGE);
        let mut admitted = 0;
        while let Some((message, _)) = budget.admit(&line, &[], &s) {
            admitted += message.len();
            assert!(admitted < 2 * LOG_BYTES_PER_CALL, "never stops");
        }
        assert!(admitted <= LOG_BYTES_PER_CALL + 200);
    }
}
