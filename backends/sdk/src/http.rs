//! Blocking HTTPS requests to the targets the host's configuration names (`http.targets.<name>`),
//! over the standard `wasi:http/outgoing-handler` import.
//!
//! A request names its target, not a URL: the host holds the base URL, the CA and the
//! credentials. Where a credential goes, write [`secret`]`("NAME")`; the host substitutes the
//! target's secret on the way out and the backend never sees it. Redirects come back as they are
//! (3xx); time is bounded by the call's deadline; the host caps the answer's size.
//!
//! ```no_run
//! use modcsi_backend_sdk::http::{Method, Request, secret};
//! let body = format!(r#"{{"clientSecret":"{}"}}"#, secret("client-secret"));
//! let answer = Request::new(Method::Post, "emma", "/v1/issue-token")
//!     .body("application/json", body)
//!     .send()?;
//! # Ok::<(), modcsi_backend_sdk::http::HttpError>(())
//! ```

#![warn(missing_docs)]

use std::time::Duration;

use crate::types::Error;
use crate::wasi::http::outgoing_handler;
use crate::wasi::http::types as wasi;
use crate::wasi::io::streams::StreamError;

/// Bytes written to, or read from, a body stream at a time.
const CHUNK: usize = 4096;

/// A request's method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`
    Get,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `PATCH`
    Patch,
    /// `DELETE`
    Delete,
}

impl Method {
    /// The method's name on the wire, e.g. `GET`.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

/// A request to one of the host's configured targets.
#[derive(Debug, Clone)]
pub struct Request {
    method: Method,
    target: String,
    path: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

/// An answer, whatever its status.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code, e.g. 200.
    pub status: u16,
    /// The headers, names as the target wrote them (values with invalid UTF-8 replaced).
    pub headers: Vec<(String, String)>,
    /// The whole body.
    pub body: Vec<u8>,
}

/// Why no answer came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The host refused the request (no such target, an unknown secret): nothing was sent.
    Denied(String),
    /// No answer before the call's deadline: the request may or may not have been acted on.
    Timeout(String),
    /// The target could not be reached, or the connection broke.
    Unavailable(String),
    /// An answer over the host's size cap.
    TooLarge(String),
    /// A request the host or the target could not take as written.
    Invalid(String),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::Denied(m) => write!(f, "refused by the host: {m}"),
            HttpError::Timeout(m) => write!(f, "no answer in time: {m}"),
            HttpError::Unavailable(m) => write!(f, "unreachable: {m}"),
            HttpError::TooLarge(m) => write!(f, "answer too large: {m}"),
            HttpError::Invalid(m) => write!(f, "invalid request: {m}"),
        }
    }
}

/// An HTTP failure as a call's error: unreachable or late is `unavailable` (worth retrying), a
/// request the host refuses is a configuration problem (`failed-precondition`), the rest
/// `internal`.
impl From<HttpError> for Error {
    fn from(e: HttpError) -> Self {
        match e {
            HttpError::Timeout(_) | HttpError::Unavailable(_) => {
                Error::Unavailable(format!("http: {e}"))
            }
            HttpError::Denied(_) => Error::FailedPrecondition(format!("http: {e}")),
            HttpError::TooLarge(_) | HttpError::Invalid(_) => Error::Internal(format!("http: {e}")),
        }
    }
}

/// The placeholder the host replaces with the target's secret `name`.
pub fn secret(name: &str) -> String {
    format!("{{{{secret:{name}}}}}")
}

impl Response {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The pause a `Retry-After` header in seconds asks for (a 429's, a 503's), if it does.
    pub fn retry_after(&self) -> Option<Duration> {
        let seconds: u64 = self.header("retry-after")?.trim().parse().ok()?;
        Some(Duration::from_secs(seconds))
    }
}

impl Request {
    /// A request to `path_and_query` (starting with `/`) of the configured target `target`.
    pub fn new(method: Method, target: &str, path_and_query: &str) -> Self {
        Self {
            method,
            target: target.to_owned(),
            path: path_and_query.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_owned(), value.as_bytes().to_vec()));
        self
    }

    /// Sets the body, and the `content-type` header to `content_type`.
    pub fn body(mut self, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self.header("content-type", content_type)
    }

    /// Sends the request and reads the whole answer.
    pub fn send(self) -> Result<Response, HttpError> {
        let headers = wasi::Fields::from_list(&self.headers)
            .map_err(|e| HttpError::Invalid(format!("headers: {e:?}")))?;
        let request = wasi::OutgoingRequest::new(headers);
        let method = match self.method {
            Method::Get => wasi::Method::Get,
            Method::Post => wasi::Method::Post,
            Method::Put => wasi::Method::Put,
            Method::Patch => wasi::Method::Patch,
            Method::Delete => wasi::Method::Delete,
        };
        let invalid = |what: &str| HttpError::Invalid(what.to_owned());
        request
            .set_method(&method)
            .map_err(|()| invalid("method"))?;
        request
            .set_scheme(Some(&wasi::Scheme::Https))
            .map_err(|()| invalid("scheme"))?;
        request
            .set_authority(Some(&self.target))
            .map_err(|()| invalid("target name"))?;
        request
            .set_path_with_query(Some(&self.path))
            .map_err(|()| invalid("path"))?;
        let body = request.body().map_err(|()| invalid("body taken twice"))?;
        if !self.body.is_empty() {
            let stream = body.write().map_err(|()| invalid("body stream"))?;
            for chunk in self.body.chunks(CHUNK) {
                stream
                    .blocking_write_and_flush(chunk)
                    .map_err(|e| HttpError::Invalid(format!("writing the body: {e:?}")))?;
            }
        }
        let pending = outgoing_handler::handle(request, None).map_err(from_code)?;
        wasi::OutgoingBody::finish(body, None).map_err(from_code)?;
        pending.subscribe().block();
        let answer = match pending.get() {
            Some(Ok(Ok(answer))) => answer,
            Some(Ok(Err(code))) => return Err(from_code(code)),
            Some(Err(())) | None => return Err(HttpError::Invalid("answer taken twice".into())),
        };
        let status = answer.status();
        let headers = answer
            .headers()
            .entries()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect();
        let incoming = answer.consume().map_err(|()| invalid("answer body"))?;
        let mut body = Vec::new();
        {
            let stream = incoming.stream().map_err(|()| invalid("answer stream"))?;
            loop {
                match stream.blocking_read(CHUNK as u64 * 16) {
                    Ok(bytes) => body.extend_from_slice(&bytes),
                    Err(StreamError::Closed) => break,
                    Err(StreamError::LastOperationFailed(e)) => {
                        return Err(HttpError::Unavailable(format!(
                            "reading the answer: {}",
                            e.to_debug_string()
                        )));
                    }
                }
            }
        }
        drop(wasi::IncomingBody::finish(incoming));
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

fn from_code(code: wasi::ErrorCode) -> HttpError {
    use wasi::ErrorCode as C;
    let text = format!("{code:?}");
    match code {
        C::HttpRequestDenied => HttpError::Denied(text),
        C::ConnectionTimeout | C::ConnectionReadTimeout | C::HttpResponseTimeout => {
            HttpError::Timeout(text)
        }
        C::HttpResponseBodySize(_) => HttpError::TooLarge(text),
        C::HttpRequestBodySize(_)
        | C::HttpRequestUriInvalid
        | C::HttpRequestMethodInvalid
        | C::HttpRequestHeaderSize(_) => HttpError::Invalid(text),
        _ => HttpError::Unavailable(text),
    }
}
