//! The optional Kubernetes client: the cluster's word on nodes, attachments and node-local
//! cleanup records, and Events for people. Off unless `--kubeconfig` is given or the process runs
//! in a pod (in-cluster credentials); then Kubernetes is the source of truth where the embedded
//! store is otherwise.
//!
//! Every call is bounded ([`REQUEST_TIMEOUT`]); callers that decide on safety (fencing) treat any
//! error as "cannot tell" and refuse.

mod attachments;
mod config_maps;
mod events;
pub mod inventory;
mod nodes;
pub mod quantity;
pub mod records;
mod store;

use std::path::Path;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};

pub use attachments::{AttachmentChange, Seen};
pub use store::KubeStore;

/// Longest a single API request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A client whose every request is bounded by [`REQUEST_TIMEOUT`], connecting included. The
/// bound is per request, not a socket read timeout: one of those also closed every kept
/// connection after 10 s idle, and the next request paid a new TLS handshake (40-50 ms).
fn bounded_client(config: &kube::Config) -> Result<kube::Client, KubeError> {
    let mut config = config.clone();
    config.connect_timeout = Some(REQUEST_TIMEOUT);
    Ok(kube::client::ClientBuilder::try_from(config)
        .map_err(KubeError::api("client"))?
        .with_layer(&tower::timeout::TimeoutLayer::new(REQUEST_TIMEOUT))
        .build())
}
/// The namespace for the driver's own objects when none is given and none is known.
pub const DEFAULT_NAMESPACE: &str = "default";

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("Kubernetes client configuration: {0}")]
    Config(String),
    #[error("Kubernetes API, {0}: changed by another writer meanwhile")]
    Conflict(String),
    #[error("Kubernetes API, {what}: {source}")]
    Api {
        what: String,
        #[source]
        source: Box<kube::Error>,
    },
}

impl KubeError {
    fn api(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let what = what.into();
        move |source| Self::Api {
            what,
            source: Box::new(source),
        }
    }
}

/// A connection to the cluster, for one driver.
pub struct Cluster {
    config: kube::Config,
    client: kube::Client,
    /// Without a read timeout, for watches.
    watch_client: kube::Client,
    driver: String,
    namespace: String,
    pvs: attachments::PvIndex,
    events: events::Limiter,
    node_ids: nodes::NodeIds,
}

impl Cluster {
    /// Connects with `kubeconfig`, or with in-cluster credentials when running in a pod; `None`
    /// when neither is available (standalone). The namespace for ConfigMaps defaults to the
    /// pod's own (in-cluster), the kubeconfig context's, or `default`.
    pub async fn connect(
        kubeconfig: Option<&Path>,
        namespace: Option<String>,
        driver: &str,
    ) -> Result<Option<Self>, KubeError> {
        let config = match kubeconfig {
            Some(path) => {
                let file = Kubeconfig::read_from(path)
                    .map_err(|e| KubeError::Config(format!("{}: {e}", path.display())))?;
                kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                    .await
                    .map_err(|e| KubeError::Config(format!("{}: {e}", path.display())))?
            }
            None if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() => {
                kube::Config::incluster()
                    .map_err(|e| KubeError::Config(format!("in-cluster: {e}")))?
            }
            None => return Ok(None),
        };
        let namespace = namespace.unwrap_or_else(|| config.default_namespace.clone());
        let client = bounded_client(&config)?;
        let watch_client =
            kube::Client::try_from(config.clone()).map_err(KubeError::api("client"))?;
        Ok(Some(Self {
            config,
            client,
            watch_client,
            driver: driver.to_owned(),
            namespace,
            pvs: attachments::PvIndex::default(),
            events: events::Limiter::default(),
            node_ids: nodes::NodeIds::default(),
        }))
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }
}
