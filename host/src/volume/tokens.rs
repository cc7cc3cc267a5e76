//! The list tokens this host handed out. The CSI spec asks for ABORTED when a ListVolumes or
//! ListSnapshots starting token is not valid; backends differ in how they notice, so the host
//! accepts only tokens it passed out itself (a restart forgets them: the CO lists again).

use std::collections::VecDeque;
use std::sync::Mutex;

/// Tokens remembered; the oldest are forgotten first.
const REMEMBERED: usize = 4096;

#[derive(Default)]
pub struct ListTokens {
    issued: Mutex<VecDeque<(&'static str, String)>>,
}

impl ListTokens {
    /// Records a token the backend returned for `list`.
    pub fn issue(&self, list: &'static str, token: &str) {
        if token.is_empty() {
            return;
        }
        let mut issued = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        if issued.iter().any(|(l, t)| *l == list && t == token) {
            return;
        }
        if issued.len() >= REMEMBERED {
            issued.pop_front();
        }
        issued.push_back((list, token.to_owned()));
    }

    /// Whether a starting token is acceptable: empty, or one this host passed out.
    pub fn known(&self, list: &'static str, token: &str) -> bool {
        token.is_empty()
            || self
                .issued
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .any(|(l, t)| *l == list && t == token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_issued_tokens_are_known() {
        let tokens = ListTokens::default();
        assert!(tokens.known("volumes", ""));
        assert!(!tokens.known("volumes", "7"));
        tokens.issue("volumes", "7");
        assert!(tokens.known("volumes", "7"));
        assert!(!tokens.known("snapshots", "7"));
        for i in 0..REMEMBERED {
            tokens.issue("volumes", &format!("t{i}"));
        }
        assert!(
            !tokens.known("volumes", "7"),
            "the oldest token is forgotten"
        );
    }
}
