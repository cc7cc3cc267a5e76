//! The HTTP endpoint Prometheus scrapes (`--metrics-address`): `GET /metrics` renders
//! [`crate::metrics`]; `GET /healthz` answers 200 once the backend is loaded and the CSI socket
//! bound (the endpoint starts only then), for a readiness probe.

use std::convert::Infallible;
use std::net::SocketAddr;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// A response: status, content type and body.
pub type Answer = (StatusCode, &'static str, String);

/// Binds `address` (port 0 picks one; the bound address is returned) and serves `/metrics`
/// and `/healthz` until the task is aborted.
pub async fn start(
    address: SocketAddr,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    serve(
        address,
        "metrics",
        |request, _| async move { answer(&request) },
    )
    .await
}

/// Binds `address` and answers each HTTP/1 request with `handler` (given the request and the
/// peer's address) until the task is aborted. `what` names the endpoint in logs.
pub async fn serve<H, F>(
    address: SocketAddr,
    what: &'static str,
    handler: H,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)>
where
    H: Fn(Request<hyper::body::Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Answer> + Send + 'static,
{
    let listener = TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    tracing::info!(address = %bound, "serving {what}");
    let task = tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, say: wait rather than spin.
                    tracing::warn!("{what} endpoint: accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let answer = handler(request, peer);
                    async move {
                        let (status, content_type, body) = answer.await;
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(status)
                                .header(hyper::header::CONTENT_TYPE, content_type)
                                .body(Full::new(Bytes::from(body)))
                                .expect("a response of valid parts"),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((bound, task))
}

fn answer(request: &Request<hyper::body::Incoming>) -> Answer {
    match (request.method(), request.uri().path()) {
        (&hyper::Method::GET, "/metrics") => (
            StatusCode::OK,
            crate::metrics::CONTENT_TYPE,
            crate::metrics::encode(),
        ),
        (&hyper::Method::GET, "/healthz") => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics or /healthz\n".to_owned(),
        ),
    }
}
