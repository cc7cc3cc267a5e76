//! A CSI client over a unix socket, for `modcsi csi`, the tests and the benchmark.

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::proto::{
    controller_client::ControllerClient, identity_client::IdentityClient, node_client::NodeClient,
};
use crate::serve::{ServeError, socket_path};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Endpoint(#[from] ServeError),
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
