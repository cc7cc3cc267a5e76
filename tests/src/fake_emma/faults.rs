//! Fault injection for the fake Emma API.

use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Faults to inject, shared with the server. Each call adds to what is already injected;
/// rules are tried in the order they were added, and the first that matches a request and has
/// uses left is used up. Faults act before authentication, like a gateway in front of the API.
///
/// By default a fault applies to any request; [`Faults::matching`] narrows it to a method and a
/// path prefix below the base path:
///
/// ```ignore
/// fake.faults().throttle(2, 3); // the next two requests: 429, Retry-After: 3
/// fake.faults().matching("POST", "/v1/volumes").lose_responses(1);
/// ```
#[derive(Clone, Default)]
pub struct Faults {
    table: Arc<Mutex<Table>>,
    scope: Scope,
}

#[derive(Clone, Debug, Default)]
struct Scope {
    /// Upper case; `None` for any method.
    method: Option<String>,
    /// Below the base path; `None` for any path.
    path_prefix: Option<String>,
}

impl Scope {
    fn matches(&self, method: &str, api_path: &str) -> bool {
        self.method
            .as_ref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self
                .path_prefix
                .as_ref()
                .is_none_or(|p| api_path.starts_with(p.as_str()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// 429 `TOO_MANY_REQUESTS` with `Retry-After: <seconds>`.
    Throttle(u64),
    /// 500 `INTERNAL_SERVER_ERROR`.
    Fail,
    /// 409 `CONFLICT`, for VM actions only.
    BusyVm,
    /// Closes the connection without answering and without acting.
    Drop,
    /// Acts on the request, then closes the connection without answering.
    LoseResponse,
}

#[derive(Debug)]
struct Rule {
    scope: Scope,
    kind: Kind,
    left: usize,
}

#[derive(Debug, Default)]
struct Table {
    rules: Vec<Rule>,
    delays: Vec<(Scope, Duration)>,
}

impl Faults {
    /// The same faults, with what is injected through the result applying only to requests with
    /// `method` (`"*"` or `""` for any) and a path below the base path starting with
    /// `path_prefix` (e.g. `/v1/vms/101/actions`).
    pub fn matching(&self, method: &str, path_prefix: &str) -> Faults {
        let method = (!method.is_empty() && method != "*").then(|| method.to_ascii_uppercase());
        Faults {
            table: self.table.clone(),
            scope: Scope {
                method,
                path_prefix: Some(path_prefix.to_owned()),
            },
        }
    }

    fn add(&self, kind: Kind, times: usize) -> &Self {
        if times > 0 {
            self.table.lock().unwrap().rules.push(Rule {
                scope: self.scope.clone(),
                kind,
                left: times,
            });
        }
        self
    }

    /// The next `times` requests answer 429 with `Retry-After: retry_after_secs`.
    pub fn throttle(&self, times: usize, retry_after_secs: u64) -> &Self {
        self.add(Kind::Throttle(retry_after_secs), times)
    }

    /// The next `times` requests answer 500.
    pub fn fail(&self, times: usize) -> &Self {
        self.add(Kind::Fail, times)
    }

    /// The next `times` VM actions (`POST /v1/vms/{id}/actions`) answer 409, as for a VM in a
    /// transitional state.
    pub fn busy_vm(&self, times: usize) -> &Self {
        self.add(Kind::BusyVm, times)
    }

    /// The next `times` requests are read, not acted on, and their connection is closed without
    /// an answer.
    pub fn drop_connections(&self, times: usize) -> &Self {
        self.add(Kind::Drop, times)
    }

    /// The next `times` requests are acted on, and then their connection is closed without an
    /// answer (the answer is lost: what a client's retry must cope with).
    pub fn lose_responses(&self, times: usize) -> &Self {
        self.add(Kind::LoseResponse, times)
    }

    /// Waits `delay` before answering every request (in this scope) from now on; a zero delay
    /// removes the delay of this scope.
    pub fn delay(&self, delay: Duration) -> &Self {
        let mut table = self.table.lock().unwrap();
        let scope = &self.scope;
        table
            .delays
            .retain(|(s, _)| s.method != scope.method || s.path_prefix != scope.path_prefix);
        if !delay.is_zero() {
            table.delays.push((scope.clone(), delay));
        }
        self
    }

    /// Removes every fault and delay, whatever its scope.
    pub fn clear(&self) {
        let mut table = self.table.lock().unwrap();
        table.rules.clear();
        table.delays.clear();
    }

    /// Uses of injected faults not yet spent.
    pub fn pending(&self) -> usize {
        self.table
            .lock()
            .unwrap()
            .rules
            .iter()
            .map(|r| r.left)
            .sum()
    }

    /// The longest delay that applies to this request.
    pub(crate) fn delay_for(&self, method: &str, api_path: &str) -> Duration {
        let table = self.table.lock().unwrap();
        table
            .delays
            .iter()
            .filter(|(s, _)| s.matches(method, api_path))
            .map(|(_, d)| *d)
            .max()
            .unwrap_or_default()
    }

    /// Uses up the first matching fault, if any. `vm_action` tells whether the request is a VM
    /// action (the only kind [`Kind::BusyVm`] applies to).
    pub(crate) fn take(&self, method: &str, api_path: &str, vm_action: bool) -> Option<Kind> {
        let mut table = self.table.lock().unwrap();
        let rule = table.rules.iter_mut().find(|r| {
            r.left > 0 && r.scope.matches(method, api_path) && (r.kind != Kind::BusyVm || vm_action)
        })?;
        rule.left -= 1;
        let kind = rule.kind;
        table.rules.retain(|r| r.left > 0);
        Some(kind)
    }
}
