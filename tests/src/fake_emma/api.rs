//! The HTTPS server: connections, faults, authentication and routing to the cloud's state.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::faults::Kind;
use super::state::{ApiError, ApiResult, Query};
use super::{Recorded, Shared};

/// The API's base path.
pub(crate) const BASE: &str = "/external";

/// The connection is closed without an answer.
#[derive(Debug)]
pub(crate) struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by the fake")
    }
}

impl std::error::Error for Dropped {}

type Answer = Response<Full<Bytes>>;

/// Accepts connections until the task is aborted (which also ends every connection).
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shared: Arc<Shared>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let tcp = match accepted {
                    Ok((tcp, _)) => tcp,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                shared.connections.fetch_add(1, Ordering::SeqCst);
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let shared = shared.clone();
                connections.spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |request| {
                        let shared = shared.clone();
                        async move {
                            // In a task of its own: a request is carried out even when the
                            // client gives up waiting, as a real server would.
                            tokio::spawn(handle(shared, request))
                                .await
                                .unwrap_or(Err(Dropped))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn handle(shared: Arc<Shared>, request: Request<Incoming>) -> Result<Answer, Dropped> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.map_err(|_| Dropped)?.to_bytes();
    let method = parts.method.clone();
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| parts.uri.path().to_owned());
    let index = {
        let mut requests = shared.requests.lock().unwrap();
        requests.push(Recorded {
            method: method.to_string(),
            path: target,
            headers: parts
                .headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: body.to_vec(),
            status: None,
        });
        requests.len() - 1
    };
    let path = parts.uri.path();
    let api_path = path.strip_prefix(BASE).filter(|p| p.starts_with('/'));
    let fault_path = api_path.unwrap_or(path);

    let delay = shared.faults.delay_for(method.as_str(), fault_path);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let segments: Vec<&str> = fault_path.split('/').skip(1).collect();
    let vm_action =
        method == Method::POST && matches!(segments.as_slice(), ["v1", "vms", _, "actions"]);
    let mut lose = false;
    let answer = match shared.faults.take(method.as_str(), fault_path, vm_action) {
        Some(Kind::Drop) => return Err(Dropped),
        Some(Kind::Throttle(secs)) => {
            let mut answer = error(&ApiError {
                status: 429,
                code: "TOO_MANY_REQUESTS",
                message: format!("Too many requests; retry after {secs} s"),
            });
            answer
                .headers_mut()
                .insert("retry-after", secs.to_string().parse().unwrap());
            Some(answer)
        }
        Some(Kind::Fail) => Some(error(&ApiError {
            status: 500,
            code: "INTERNAL_SERVER_ERROR",
            message: "Internal server error (injected)".into(),
        })),
        Some(Kind::BusyVm) => Some(error(&ApiError::conflict(
            "Action rejected: the virtual machine is in a transitional state (injected)",
        ))),
        Some(Kind::LoseResponse) => {
            lose = true;
            None
        }
        None => None,
    };
    let answer = match answer {
        Some(answer) => answer,
        None => {
            let redirect = shared
                .redirects
                .lock()
                .unwrap()
                .iter()
                .find(|(prefix, _)| fault_path.starts_with(prefix.as_str()))
                .map(|(_, location)| location.clone());
            match (redirect, api_path) {
                (Some(location), _) => Response::builder()
                    .status(StatusCode::TEMPORARY_REDIRECT)
                    .header("location", location)
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
                (None, None) => error(&ApiError::not_found(format!("No API at {path}"))),
                (None, Some(_)) => {
                    let authorization = parts
                        .headers
                        .get("authorization")
                        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
                    let query = Query::parse(parts.uri.query());
                    match route(
                        &shared,
                        &method,
                        &segments,
                        &query,
                        authorization.as_deref(),
                        &body,
                    ) {
                        Ok(value) => json_answer(StatusCode::OK, &value),
                        Err(e) => error(&e),
                    }
                }
            }
        }
    };
    if lose {
        return Err(Dropped);
    }
    shared.requests.lock().unwrap()[index].status = Some(answer.status().as_u16());
    Ok(answer)
}

fn route(
    shared: &Shared,
    method: &Method,
    segments: &[&str],
    query: &Query,
    authorization: Option<&str>,
    body: &[u8],
) -> ApiResult {
    let json_body = || -> Result<Value, ApiError> {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("Malformed JSON request: {e}")))
    };
    let id = |s: &str, what: &str| -> Result<u64, ApiError> {
        s.parse()
            .map_err(|_| ApiError::bad_request(format!("{what}: {s:?} is not a valid integer")))
    };
    let mut cloud = shared.cloud.lock().unwrap();
    cloud.settle();
    let get = method == Method::GET;
    let post = method == Method::POST;
    match segments {
        ["v1", "issue-token"] if post => return cloud.issue_token(&json_body()?),
        ["v1", "refresh-token"] if post => return cloud.refresh_token(&json_body()?),
        ["v1", "issue-token" | "refresh-token"] => return Err(not_allowed(method)),
        _ => {}
    }
    cloud.authorize(authorization)?;
    let mut deadline: Option<Instant> = None;
    let result = match segments {
        ["v1", "data-centers"] if get => cloud.list_data_centers(query),
        ["v1", "data-centers", dc] if get => cloud.get_data_center(dc),
        ["v1", "volume-configs"] if get => cloud.volume_configs(query),
        ["v1", "volumes"] if get => cloud.list_volumes(),
        ["v1", "volumes"] if post => cloud.create_volume(&json_body()?).map(|(v, at)| {
            deadline = Some(at);
            v
        }),
        ["v1", "volumes", v] if get => cloud.get_volume(id(v, "volumeId")?),
        ["v1", "volumes", v] if method == Method::DELETE => cloud.delete_volume(id(v, "volumeId")?),
        ["v1", "volumes", v, "actions"] if post => {
            let v = id(v, "volumeId")?;
            cloud.edit_volume(v, &json_body()?).map(|(v, at)| {
                deadline = Some(at);
                v
            })
        }
        ["v1", "vms"] if get => cloud.list_vms(),
        ["v1", "vms", vm] if get => cloud.get_vm(id(vm, "vmId")?),
        ["v1", "vms", vm, "actions"] if post => {
            let vm = id(vm, "vmId")?;
            cloud.vm_action(vm, &json_body()?).map(|(v, at)| {
                deadline = Some(at);
                v
            })
        }
        ["v1", "data-centers"]
        | ["v1", "data-centers", _]
        | ["v1", "volume-configs"]
        | ["v1", "volumes"]
        | ["v1", "volumes", _]
        | ["v1", "volumes", _, "actions"]
        | ["v1", "vms"]
        | ["v1", "vms", _]
        | ["v1", "vms", _, "actions"] => Err(not_allowed(method)),
        _ => Err(ApiError::not_found(format!(
            "No API at /{}",
            segments.join("/")
        ))),
    };
    drop(cloud);
    if deadline.is_some() {
        shared.wake.notify_one();
    }
    result
}

fn not_allowed(method: &Method) -> ApiError {
    ApiError {
        status: 405,
        code: "METHOD_NOT_ALLOWED",
        message: format!("Request method '{method}' is not supported"),
    }
}

fn json_answer(status: StatusCode, value: &Value) -> Answer {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(value.to_string())))
        .unwrap()
}

fn error(e: &ApiError) -> Answer {
    json_answer(
        StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &json!({"code": e.code, "message": e.message}),
    )
}
