//! A CSI client over a unix socket, for `modcsi csi`, the tests and the benchmark.

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::proto::{
    controller_client::ControllerClient, identity_client::IdentityClient, node_client::NodeClient,
};

/// An endpoint that is not a unix socket address.
#[derive(Debug, thiserror::Error)]
#[error("endpoint {0:?} is not a unix socket address (unix:///path/to/csi.sock)")]
pub struct BadEndpoint(pub String);

/// The path of a `unix://` endpoint (`unix:///abs/path`, `unix:/abs/path` or `/abs/path`).
pub fn socket_path(endpoint: &str) -> Result<std::path::PathBuf, BadEndpoint> {
    let path = endpoint
        .strip_prefix("unix://")
        .or_else(|| endpoint.strip_prefix("unix:"))
        .unwrap_or(endpoint);
    if path.starts_with('/') && path.len() > 1 {
        Ok(std::path::PathBuf::from(path))
    } else {
        Err(BadEndpoint(endpoint.to_owned()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Endpoint(#[from] BadEndpoint),
    #[error("cannot connect to {endpoint}: {}", with_causes(cause))]
    Connect {
        endpoint: String,
        cause: tonic::transport::Error,
    },
}

/// An error and its causes on one line (tonic's transport error alone says little).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let line = c.to_string();
        if !text.ends_with(&line) {
            text = format!("{text}: {line}");
        }
        cause = c.source();
    }
    text
}

/// Clients for the three services on one connection.
#[derive(Clone)]
pub struct CsiClient {
    pub identity: IdentityClient<Channel>,
    pub controller: ControllerClient<Channel>,
    pub node: NodeClient<Channel>,
}

impl CsiClient {
    pub async fn connect(endpoint: &str) -> Result<Self, ClientError> {
        let path = socket_path(endpoint)?;
        // The URI is required by tonic but unused: the connector below dials the socket.
        let channel =
            Endpoint::from_static("http://[::1]:50051")
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?))
                    }
                }))
                .await
                .map_err(|cause| ClientError::Connect {
                    endpoint: endpoint.to_owned(),
                    cause,
                })?;
        Ok(Self {
            identity: IdentityClient::new(channel.clone()),
            controller: ControllerClient::new(channel.clone()),
            node: NodeClient::new(channel),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn endpoints() {
        assert_eq!(
            socket_path("unix:///csi/csi.sock").unwrap(),
            Path::new("/csi/csi.sock")
        );
        assert_eq!(
            socket_path("unix:/csi/csi.sock").unwrap(),
            Path::new("/csi/csi.sock")
        );
        assert_eq!(
            socket_path("/tmp/x.sock").unwrap(),
            Path::new("/tmp/x.sock")
        );
        for bad in ["tcp://127.0.0.1:1", "unix://relative.sock", "", "unix://"] {
            assert!(socket_path(bad).is_err(), "{bad}");
        }
    }
}
