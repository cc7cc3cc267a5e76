//! The `http` capability (contract 0.2.2): a backend's `wasi:http/outgoing-handler` requests,
//! served only to the targets its configuration names, with credentials it never holds.
//!
//! Configuration, under the host's own `http` section of `--backend-config`:
//!
//! ```toml
//! [http.targets.emma]
//! base-url = "https://api.emma.ms/external"   # https only
//! ca-file = "/etc/modcsi/emma-ca.pem"          # optional: trust these CAs only (default: the system's)
//! max-response-bytes = 4194304                 # optional, default 4 MiB
//! [http.targets.emma.secrets]
//! client-secret = { secret-file = "/etc/modcsi/emma/client-secret" }
//! ```
//!
//! A request names its target as its URL's authority (`https://emma/v1/volumes`); the host sends
//! it to the target's base URL joined with the request's path. Any other authority is refused
//! before anything is sent. The backend writes `{{secret:NAME}}` where a credential goes (a
//! header value or the body); the host substitutes the target's secret NAME on the way out, so a
//! secret only ever travels to the target that owns it, and scrubs secret values from what comes
//! back. Connections are pooled per target (keep-alive, TCP_NODELAY); TLS is always verified;
//! redirects are handed to the backend, never followed; a response over the cap is an error;
//! every request ends by the call's deadline.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use wasmtime_wasi_http::{Error as HttpError, WasiBody};

/// Largest request body a backend may send.
pub const MAX_REQUEST_BODY: usize = 1 << 20;
const DEFAULT_MAX_RESPONSE: usize = 4 << 20;
/// How long an idle pooled connection is kept.
const IDLE: Duration = Duration::from_secs(90);
const PLACEHOLDER_OPEN: &str = "{{secret:";
const PLACEHOLDER_CLOSE: &str = "}}";
const SCRUBBED: &[u8] = b"<redacted>";

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

struct Target {
    scheme: Scheme,
    authority: Authority,
    /// The base URL's path, without a trailing slash.
    prefix: String,
    secrets: HashMap<String, String>,
    max_response: usize,
    client: Client<Connector, Full<Bytes>>,
}

/// Every configured target, and the pooled connections to them.
#[derive(Default)]
pub struct HttpTargets {
    targets: HashMap<String, Arc<Target>>,
}

impl std::fmt::Debug for HttpTargets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<_> = self.targets.keys().collect();
        names.sort();
        f.debug_struct("HttpTargets")
            .field("targets", &names)
            .finish()
    }
}

/// Why a request was not answered; what the backend sees as a `wasi:http` error code, and the
/// operator as a log line.
#[derive(Debug)]
pub enum Refusal {
    Denied(String),
    Failed(HttpError, String),
}

impl HttpTargets {
    /// Targets from the `http` section's flattened keys (`targets.<name>.<key>`).
    pub fn from_config(values: &BTreeMap<String, String>) -> Result<Self, String> {
        let mut by_target: BTreeMap<&str, BTreeMap<&str, &str>> = BTreeMap::new();
        for (key, value) in values {
            let rest = key
                .strip_prefix("targets.")
                .ok_or_else(|| format!("http.{key}: only http.targets.<name> is known"))?;
            let (name, field) = rest
                .split_once('.')
                .ok_or_else(|| format!("http.{key}: expected http.targets.<name>.<key>"))?;
            by_target.entry(name).or_default().insert(field, value);
        }
        let mut targets = HashMap::new();
        for (name, fields) in by_target {
            let target =
                Target::new(name, &fields).map_err(|e| format!("http target {name}: {e}"))?;
            targets.insert(name.to_owned(), Arc::new(target));
        }
        Ok(Self { targets })
    }

    /// Sends a backend's request to the target its authority names, within `deadline`.
    pub async fn send(
        &self,
        request: http::Request<WasiBody>,
        deadline: Instant,
    ) -> Result<http::Response<WasiBody>, Refusal> {
        let name = request
            .uri()
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default();
        let Some(target) = self.targets.get(&name).cloned() else {
            // One series for every unknown name: a backend cannot grow the metrics.
            crate::metrics::http_request("(none)", "denied", Duration::ZERO);
            return Err(Refusal::Denied(format!(
                "{name:?} is not a configured http target"
            )));
        };
        let started = Instant::now();
        let answer = tokio::time::timeout_at(deadline.into(), target.send(request)).await;
        let answer = answer.unwrap_or_else(|_| {
            Err(Refusal::Failed(
                HttpError::ConnectionTimeout,
                "no answer before the call's deadline".into(),
            ))
        });
        let outcome = match &answer {
            Ok(response) => status_class(response.status()),
            Err(Refusal::Denied(_)) => "denied",
            Err(Refusal::Failed(..)) => "error",
        };
        crate::metrics::http_request(&name, outcome, started.elapsed());
        answer.map_err(|refusal| match refusal {
            Refusal::Denied(m) => Refusal::Denied(format!("http target {name}: {m}")),
            Refusal::Failed(code, m) => Refusal::Failed(code, format!("http target {name}: {m}")),
        })
    }
}

/// One call's `wasi:http` hooks: every request goes through [`HttpTargets::send`] within the
/// call's deadline; a refusal is logged for the operator and answered to the backend.
pub(crate) struct CallHttp {
    pub(crate) config: Arc<super::BackendConfig>,
    pub(crate) backend: Arc<str>,
    pub(crate) deadline: Instant,
}

type IoFuture = Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>;

impl wasmtime_wasi_http::WasiHttpHooks for CallHttp {
    fn set_host_header(&mut self) -> bool {
        // The client names the target's real host; the backend's authority is a target name.
        false
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: IoFuture,
    ) -> Box<
        dyn Future<Output = wasmtime_wasi_http::Result<(http::Response<WasiBody>, IoFuture)>>
            + Send,
    > {
        let (config, backend, deadline) =
            (self.config.clone(), self.backend.clone(), self.deadline);
        Box::new(async move {
            match config.http().send(request, deadline).await {
                Ok(response) => Ok((response, Box::new(async { Ok(()) }) as IoFuture)),
                Err(Refusal::Denied(reason)) => {
                    tracing::warn!(backend = &*backend, "http request refused: {reason}");
                    Err(HttpError::HttpRequestDenied)
                }
                Err(Refusal::Failed(code, reason)) => {
                    tracing::debug!(backend = &*backend, "http request failed: {reason}");
                    Err(code)
                }
            }
        })
    }
}

fn status_class(status: http::StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

impl Target {
    fn new(name: &str, fields: &BTreeMap<&str, &str>) -> Result<Self, String> {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err("a target name is letters, digits and '-'".into());
        }
        let mut secrets = HashMap::new();
        let mut base = None;
        let mut ca_file = None;
        let mut max_response = DEFAULT_MAX_RESPONSE;
        for (&field, &value) in fields {
            match field {
                "base-url" => base = Some(value),
                "ca-file" => ca_file = Some(value),
                "max-response-bytes" => {
                    max_response = value
                        .parse()
                        .map_err(|_| format!("max-response-bytes {value:?} is not a number"))?
                }
                _ => match field.strip_prefix("secrets.") {
                    Some(secret) if !secret.contains('.') => {
                        secrets.insert(secret.to_owned(), value.to_owned());
                    }
                    _ => return Err(format!("unknown key {field:?}")),
                },
            }
        }
        let base: http::Uri = base
            .ok_or("base-url is missing")?
            .parse()
            .map_err(|e| format!("base-url: {e}"))?;
        if base.scheme() != Some(&Scheme::HTTPS) {
            return Err("base-url must be https".into());
        }
        if base.query().is_some() {
            return Err("base-url cannot have a query".into());
        }
        let authority = base.authority().ok_or("base-url has no host")?.clone();
        let tls = tls_config(ca_file.map(Path::new))?;
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(IDLE)
            .pool_max_idle_per_host(16)
            .build(connector);
        Ok(Self {
            scheme: Scheme::HTTPS,
            authority,
            prefix: base.path().trim_end_matches('/').to_owned(),
            secrets,
            max_response,
            client,
        })
    }

    async fn send(
        &self,
        request: http::Request<WasiBody>,
    ) -> Result<http::Response<WasiBody>, Refusal> {
        let (parts, body) = request.into_parts();
        let body = Limited::new(body, MAX_REQUEST_BODY)
            .collect()
            .await
            .map_err(|e| {
                Refusal::Failed(
                    HttpError::HttpRequestBodySize(None),
                    format!("request body not read (at most {MAX_REQUEST_BODY} bytes): {e}"),
                )
            })?
            .to_bytes();
        let body = self.substitute(&body)?;
        let path = parts.uri.path_and_query().map_or("/", PathAndQuery::as_str);
        let uri = http::Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(format!("{}{path}", self.prefix))
            .build()
            .map_err(|e| Refusal::Failed(HttpError::HttpRequestUriInvalid, e.to_string()))?;
        let mut outgoing = http::Request::builder().method(parts.method).uri(uri);
        for (name, value) in &parts.headers {
            if name == http::header::HOST {
                continue;
            }
            let value = self.substitute(value.as_bytes())?;
            let value = http::HeaderValue::from_bytes(&value).map_err(|_| {
                Refusal::Failed(
                    HttpError::HttpRequestHeaderSize {
                        field_name: Some(name.to_string()),
                        field_size: None,
                    },
                    format!("header {name} is not a valid value after substitution"),
                )
            })?;
            outgoing = outgoing.header(name, value);
        }
        let outgoing = outgoing.body(Full::new(Bytes::from(body))).map_err(|e| {
            Refusal::Failed(HttpError::InternalError(Some(e.to_string())), e.to_string())
        })?;
        let response = self.client.request(outgoing).await.map_err(|e| {
            let code = if e.is_connect() {
                HttpError::ConnectionRefused
            } else {
                HttpError::HttpProtocolError
            };
            // The error chain names the cause (refused, certificate, reset), never a header.
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                message = format!("{message}: {s}");
                source = s.source();
            }
            Refusal::Failed(code, message)
        })?;
        let (mut parts, body) = response.into_parts();
        let body = Limited::new(body, self.max_response)
            .collect()
            .await
            .map_err(|e| {
                Refusal::Failed(
                    HttpError::HttpResponseBodySize(None),
                    format!(
                        "response body not read (at most {} bytes): {e}",
                        self.max_response
                    ),
                )
            })?
            .to_bytes();
        let body = self.scrub(body);
        parts.headers.remove(http::header::TRANSFER_ENCODING);
        parts.headers.insert(
            http::header::CONTENT_LENGTH,
            http::HeaderValue::from(body.len()),
        );
        for value in parts.headers.values_mut() {
            if self.leaks(value.as_bytes()) {
                *value = http::HeaderValue::from_static("<redacted>");
            }
        }
        Ok(http::Response::from_parts(
            parts,
            Full::new(body)
                .map_err(|never| match never {})
                .boxed_unsync(),
        ))
    }

    /// `text` with every `{{secret:NAME}}` replaced by this target's secret NAME; an unknown
    /// name refuses the request.
    fn substitute(&self, text: &[u8]) -> Result<Vec<u8>, Refusal> {
        let open = PLACEHOLDER_OPEN.as_bytes();
        let Some(mut at) = find(text, open) else {
            return Ok(text.to_vec());
        };
        let mut out = Vec::with_capacity(text.len());
        let mut rest = text;
        loop {
            out.extend_from_slice(&rest[..at]);
            let after = &rest[at + open.len()..];
            let end = find(after, PLACEHOLDER_CLOSE.as_bytes())
                .ok_or_else(|| Refusal::Denied("an unterminated secret placeholder".into()))?;
            let name = String::from_utf8_lossy(&after[..end]);
            let secret = self
                .secrets
                .get(name.as_ref())
                .ok_or_else(|| Refusal::Denied(format!("no secret {name:?} for this target")))?;
            out.extend_from_slice(secret.as_bytes());
            rest = &after[end + PLACEHOLDER_CLOSE.len()..];
            match find(rest, open) {
                Some(next) => at = next,
                None => {
                    out.extend_from_slice(rest);
                    return Ok(out);
                }
            }
        }
    }

    fn leaks(&self, bytes: &[u8]) -> bool {
        self.secrets
            .values()
            .any(|s| !s.is_empty() && find(bytes, s.as_bytes()).is_some())
    }

    /// A response body with this target's secret values replaced.
    fn scrub(&self, body: Bytes) -> Bytes {
        if !self.leaks(&body) {
            return body;
        }
        let mut text = body.to_vec();
        for secret in self.secrets.values().filter(|s| !s.is_empty()) {
            while let Some(at) = find(&text, secret.as_bytes()) {
                text.splice(at..at + secret.len(), SCRUBBED.iter().copied());
            }
        }
        Bytes::from(text)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > haystack.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// rustls with the given CA bundle only, or the system's trust store.
fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(file) => {
            let pem =
                std::fs::read(file).map_err(|e| format!("ca-file {}: {e}", file.display()))?;
            use rustls::pki_types::{CertificateDer, pem::PemObject};
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| format!("ca-file {}: {e}", file.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("ca-file {}: {e}", file.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("ca-file {} holds no certificate", file.display()));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err("the system trust store holds no certificate; set ca-file".into());
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(secrets: &[(&str, &str)]) -> Target {
        let mut fields = BTreeMap::new();
        fields.insert("base-url", "https://api.example/external/");
        let keys: Vec<String> = secrets
            .iter()
            .map(|(k, _)| format!("secrets.{k}"))
            .collect();
        for (key, (_, value)) in keys.iter().zip(secrets) {
            fields.insert(key.as_str(), *value);
        }
        Target::new("t", &fields).unwrap()
    }

    #[test]
    fn placeholders_become_the_targets_secrets_only() {
        let t = target(&[("client-secret", "s3cr3t")]);
        let out = t
            .substitute(br#"{"clientSecret":"{{secret:client-secret}}","x":1}"#)
            .unwrap();
        assert_eq!(out, br#"{"clientSecret":"s3cr3t","x":1}"#);
        assert!(matches!(
            t.substitute(b"{{secret:other}}"),
            Err(Refusal::Denied(m)) if m.contains("other")
        ));
        assert!(matches!(
            t.substitute(b"{{secret:client-secret"),
            Err(Refusal::Denied(_))
        ));
        assert_eq!(t.substitute(b"plain").unwrap(), b"plain");
    }

    #[test]
    fn secrets_in_answers_are_scrubbed() {
        let t = target(&[("k", "s3cr3t")]);
        let body = t.scrub(Bytes::from_static(b"echo s3cr3t and s3cr3t"));
        assert_eq!(&body[..], b"echo <redacted> and <redacted>");
    }

    #[test]
    fn bad_targets_are_refused_with_the_reason() {
        let config = |pairs: &[(&str, &str)]| {
            HttpTargets::from_config(
                &pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        let err = config(&[("targets.e.base-url", "http://plain.example")]).unwrap_err();
        assert!(err.contains("https"), "{err}");
        let err = config(&[("targets.e.bogus", "x")]).unwrap_err();
        assert!(err.contains("bogus"), "{err}");
        let err = config(&[("other", "x")]).unwrap_err();
        assert!(err.contains("http.other"), "{err}");
    }
}
