//! Counts every CSI call by method and gRPC code, with its latency (`crate::metrics`): a layer
//! around all three services, so no handler can be missed.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

/// The tower layer: `Server::builder().layer(tower::layer::layer_fn(Measured))`.
#[derive(Debug, Clone)]
pub struct Measured<S>(pub S);

impl<S, B, R> tower::Service<http::Request<B>> for Measured<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        let method = path.rsplit('/').next().unwrap_or(path).to_owned();
        let started = Instant::now();
        let answer = self.0.call(request);
        Box::pin(async move {
            let response = answer.await;
            if let Ok(r) = &response {
                // A refusal is a trailers-only answer, its status in the headers; a success
                // carries grpc-status 0 in the trailers.
                let status = r.headers().get("grpc-status").and_then(|v| v.to_str().ok());
                crate::metrics::csi_call(
                    &method,
                    super::error::code_name(status),
                    started.elapsed(),
                );
            }
            response
        })
    }
}
