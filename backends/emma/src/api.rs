//! Emma's public API (v1, `https://api.emma.ms/external`) through the host's `http` target:
//! tokens issued and refreshed shortly before they expire (kept in the shared `cache`, so every
//! per-call instance reuses them), and each request retried within a bounded budget with backoff
//! and jitter on 5xx, 429 (honouring Retry-After) and, where asked, the 409 of a busy VM.
//!
//! The client credentials never pass through here: the body of `issue-token` carries the host's
//! placeholders for the target's secrets `client-id` and `client-secret`.

use modcsi_backend_sdk::http::{HttpError, Method, Request, Response, secret};
use modcsi_backend_sdk::retry::{Backoff, Next};
use modcsi_backend_sdk::types::Error;
use modcsi_backend_sdk::{cache, err, unix_seconds};
use serde_json::{Value, json};

const TOKEN_KEY: &str = "emma/token";
/// An access token with less than this left is refreshed first.
const REFRESH_BEFORE: i64 = 30;

/// Why a request failed, with what the API said.
#[derive(Debug)]
pub enum ApiError {
    /// The API answered with an error status: `code`/`message` from its `{code, message}` body.
    Status {
        status: u16,
        code: String,
        message: String,
    },
    /// No usable answer (transport, retry budget spent, an answer that is not JSON).
    Failed(Error),
}

impl ApiError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            ApiError::Failed(_) => None,
        }
    }
}

/// Which failures a request may be repeated after, within the call.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Repeating it changes nothing (reads, deletes, actions whose effect is checked after):
    /// on 429, 5xx and a broken connection.
    Safe,
    /// Like `Safe`, and also on 409: the VM is busy with another change.
    WhenBusy,
    /// Not repeatable (a create: Emma has no idempotency key), so only after a 429, which
    /// says the request was not acted on. Anything else is the caller's to resolve.
    Once,
}

pub struct Api {
    target: String,
}

impl Api {
    pub fn new(target: String) -> Self {
        Self { target }
    }

    /// `method path` with an optional JSON body; the answer's JSON, or why not.
    pub fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        retry: Retry,
    ) -> Result<Value, ApiError> {
        let what = format!("{} {path}", method.as_str());
        let mut token = self.token(false).map_err(ApiError::Failed)?;
        let mut refreshed = false;
        loop {
            let (outcome, attempts) = self.send(&what, retry, || {
                let request = Request::new(method, &self.target, path)
                    .header("authorization", &format!("Bearer {token}"))
                    .header("accept", "application/json");
                match body {
                    Some(body) => request.body("application/json", body.to_string()),
                    None => request,
                }
            });
            if matches!(&outcome, Ok(r) if r.status == 401) && !refreshed {
                // Expired early or revoked: one fresh token, then the same request.
                refreshed = true;
                token = self.token(true).map_err(ApiError::Failed)?;
                continue;
            }
            return answer(&what, outcome, attempts);
        }
    }

    /// Sends `request()` until it is answered, repeating it as `retry` allows within the
    /// attempt budget (5 attempts, pauses up to 5 s, honouring Retry-After) and the call's
    /// deadline; the last outcome and the attempts made.
    fn send(
        &self,
        what: &str,
        retry: Retry,
        request: impl Fn() -> Request,
    ) -> (Result<Response, HttpError>, u32) {
        let repeat = retry != Retry::Once;
        Backoff::default().retry(
            what,
            || request().send(),
            |outcome| match outcome {
                Ok(r) if r.status == 429 => r.retry_after().map_or(Next::Retry, Next::RetryAfter),
                Ok(r) if r.status >= 500 && repeat => Next::Retry,
                Ok(r) if r.status == 409 && retry == Retry::WhenBusy => Next::Retry,
                Err(HttpError::Unavailable(_)) if repeat => Next::Retry,
                _ => Next::Stop,
            },
        )
    }

    pub fn get(&self, path: &str) -> Result<Value, ApiError> {
        self.call(Method::Get, path, None, Retry::Safe)
    }

    /// A valid access token: the cached one, refreshed, or newly issued (`renew` skips the
    /// cached access token).
    fn token(&self, renew: bool) -> Result<String, Error> {
        let now = unix_seconds();
        let cached: Option<Value> =
            cache::get(TOKEN_KEY).and_then(|b| serde_json::from_slice(&b).ok());
        if let Some(t) = &cached {
            if !renew
                && t["accessExpires"].as_i64().unwrap_or(0) - now > REFRESH_BEFORE
                && let Some(access) = t["access"].as_str()
            {
                return Ok(access.to_owned());
            }
            if t["refreshExpires"].as_i64().unwrap_or(0) - now > REFRESH_BEFORE
                && let Some(refresh) = t["refresh"].as_str()
            {
                let body = json!({ "refreshToken": refresh });
                if let Ok(token) = self.obtain("/v1/refresh-token", body.to_string()) {
                    return Ok(token);
                }
                // A refresh token the API no longer takes: issue a new pair below.
            }
        }
        let body = format!(
            r#"{{"clientId":"{}","clientSecret":"{}"}}"#,
            secret("client-id"),
            secret("client-secret")
        );
        self.obtain("/v1/issue-token", body)
    }

    /// A token pair from `path` (issue or refresh), kept in the cache.
    fn obtain(&self, path: &str, body: String) -> Result<String, Error> {
        // A token asked for twice is harmless: repeated like a read.
        let (answer, attempts) = self.send(&format!("POST {path}"), Retry::Safe, || {
            Request::new(Method::Post, &self.target, path)
                .header("accept", "application/json")
                .body("application/json", body.clone())
        });
        let answer = answer?;
        if answer.status != 200 {
            let (code, message) = error_body(&answer);
            let text = format!(
                "emma: POST {path} answered {} {code}: {message} (after {attempts} attempts)",
                answer.status
            );
            return Err(if matches!(answer.status, 400 | 401 | 403) {
                err!(
                    FailedPrecondition,
                    "{text} (the API refused the client credentials of target {})",
                    self.target
                )
            } else {
                Error::Unavailable(text)
            });
        }
        let token: Value = serde_json::from_slice(&answer.body).map_err(|e| {
            err!(
                Unavailable,
                "emma: POST {path}: an answer that is not JSON: {e}"
            )
        })?;
        let access = token["accessToken"]
            .as_str()
            .ok_or_else(|| err!(Unavailable, "emma: POST {path}: no accessToken"))?
            .to_owned();
        let now = unix_seconds();
        let refresh_in = token["refreshExpiresIn"].as_i64().unwrap_or(0);
        let kept = json!({
            "access": access,
            "accessExpires": now + token["expiresIn"].as_i64().unwrap_or(60),
            "refresh": token["refreshToken"].as_str().unwrap_or(""),
            "refreshExpires": now + refresh_in,
        });
        let ttl_ms = (refresh_in.max(60) as u64) * 1000;
        cache::set(TOKEN_KEY, kept.to_string().as_bytes(), ttl_ms);
        Ok(access)
    }
}

/// The `{code, message}` of an error answer, or the status text.
fn error_body(r: &Response) -> (String, String) {
    let parsed: Option<Value> = serde_json::from_slice(&r.body).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|v| v[name].as_str())
            .map(str::to_owned)
    };
    let code = field("code").unwrap_or_else(|| format!("HTTP {}", r.status));
    let mut message = field("message").unwrap_or_else(|| r.text());
    message.truncate(300);
    (code, message)
}

fn answer(
    what: &str,
    outcome: Result<Response, HttpError>,
    attempts: u32,
) -> Result<Value, ApiError> {
    let r = outcome.map_err(|e| ApiError::Failed(Error::from(e)))?;
    if (200..300).contains(&r.status) {
        if r.body.is_empty() {
            return Ok(Value::Null);
        }
        return serde_json::from_slice(&r.body).map_err(|e| {
            ApiError::Failed(err!(
                Unavailable,
                "emma: {what}: an answer that is not JSON: {e}"
            ))
        });
    }
    let (code, message) = error_body(&r);
    if r.status == 429 || r.status >= 500 {
        return Err(ApiError::Failed(err!(
            Unavailable,
            "emma: {what} answered {} {code}: {message} (after {attempts} attempts)",
            r.status
        )));
    }
    Err(ApiError::Status {
        status: r.status,
        code,
        message,
    })
}

/// An API error as a call's error, naming the request.
pub fn refused(what: &str, e: ApiError) -> Error {
    match e {
        ApiError::Failed(e) => e,
        ApiError::Status {
            status,
            code,
            message,
        } => {
            let text = format!("emma: {what}: the API answered {status} {code}: {message}");
            match status {
                400 | 422 => Error::InvalidArgument(text),
                401 | 403 => Error::FailedPrecondition(text),
                404 => Error::NotFound(text),
                409 => Error::Aborted(text),
                _ => Error::Unavailable(text),
            }
        }
    }
}
