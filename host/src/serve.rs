//! `modcsi serve`: load the backend, bind the CSI socket, serve until told to stop.

use std::future::Future;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnixListenerStream;

use crate::authority::AuthorityFix;
use crate::client::{BadEndpoint, socket_path};
use crate::kube::AttachmentChange;

use crate::cleanup::Cleanup;
use crate::csi::{ControllerService, IdentityService, Mode, NodeService};
use crate::lifecycle::{Controller, ControllerParts, Node};
use crate::node::confined::KubeletRoot;
use crate::node::local_dir::LocalDirs;
use crate::proto::{
    controller_server::ControllerServer, identity_server::IdentityServer, node_server::NodeServer,
};
use crate::runtime::{Backend, BackendConfig, ConfigError, LoadError, RuntimeOptions};
use crate::state::{EmbeddedStore, LockError, StateDirLock, StateStore, StoreError};
use crate::volume::records::Records;
use crate::volume::validate::{self, InvalidInput};

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub backend: PathBuf,
    pub driver_name: String,
    pub node_id: String,
    pub endpoint: String,
    pub mode: Mode,
    pub state_dir: PathBuf,
    pub cache_dir: PathBuf,
    pub call_timeout: Duration,
    pub memory_limit_mib: usize,
    pub max_concurrent_calls: u32,
    /// The backend's configuration document (TOML), handed to it through the `config` import.
    pub backend_config: Option<PathBuf>,
    /// Target and staging paths must lie beneath this directory.
    pub kubelet_root: PathBuf,
    /// Node operations (mounts, mkfs, stats) running at once.
    pub max_node_operations: usize,
    /// Where block devices are looked up (`/dev/disk/by-id`, `/sys`).
    pub devices: crate::node::device::DeviceDirs,
    /// Where node-local volume directories live (default `<state-dir>/local`).
    pub local_dir_root: Option<PathBuf>,
    /// The project ids node-local directories get (their quotas).
    pub project_ids: std::ops::RangeInclusive<u32>,
    pub cluster: ClusterOptions,
}

/// Kubernetes (optional) and the background work on cluster state.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// A kubeconfig file; without one, in-cluster credentials when in a pod, else standalone.
    pub kubeconfig: Option<PathBuf>,
    /// The namespace of the driver's ConfigMaps (default: the pod's, or the kubeconfig's).
    pub namespace: Option<String>,
    /// How often the reconcilers look for deleted nodes (node-local cleanup also acts on every
    /// change it is told of).
    pub reconcile_interval: Duration,
    /// Attachments younger than this are left alone by the reconciler.
    pub attachment_grace: Duration,
    /// A holder whose detach began less than this ago does not block another node.
    pub detach_grace: Duration,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            kubeconfig: None,
            namespace: None,
            reconcile_interval: Duration::from_secs(60),
            attachment_grace: Duration::from_secs(30),
            detach_grace: crate::fencing::DEFAULT_DETACH_GRACE,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Endpoint(#[from] BadEndpoint),
    #[error(
        "driver name {0:?} must be 1-63 characters of [a-zA-Z0-9.-], beginning and ending with a letter or digit"
    )]
    DriverName(String),
    #[error(transparent)]
    NodeId(InvalidInput),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("node-local volume directory: {0}")]
    LocalDirs(crate::node::NodeError),
    #[error("kubelet root: {0}")]
    KubeletRoot(#[from] crate::node::confined::ConfinedError),
    #[error("state store {path}: {source}")]
    Store { path: PathBuf, source: StoreError },
    #[error("socket {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("socket {0} is in use by a running server")]
    InUse(PathBuf),
    #[error("{path} exists and is not a socket")]
    NotASocket { path: PathBuf },
    #[error("{what} {value:?} is not an NVMe qualified name: {source}")]
    Nqn {
        what: &'static str,
        value: String,
        source: crate::volume::attachment::AttachmentError,
    },
    #[error(transparent)]
    Kube(#[from] crate::kube::KubeError),
    #[error("rebuilding attachments from the cluster: {0}")]
    Rebuild(#[from] crate::fencing::FenceError),
    #[error("reading the cleanup requests noted before a restart: {0}")]
    Cleanup(#[from] crate::cleanup::CleanupError),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

fn check_driver_name(name: &str) -> Result<(), ServeError> {
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    let ok = (1..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        && edge_ok(name.chars().next())
        && edge_ok(name.chars().last());
    if ok {
        Ok(())
    } else {
        Err(ServeError::DriverName(name.to_owned()))
    }
}

/// A loaded backend and a bound socket, ready to serve.
pub struct Server {
    driver_name: String,
    mode: Mode,
    backend: Arc<Backend>,
    controller: Arc<Controller>,
    node: Arc<Node>,
    host: Arc<crate::node::Host>,
    cleanup: Arc<Cleanup>,
    cluster: Option<Arc<crate::kube::Cluster>>,
    /// This host's own state (what it staged): the embedded store.
    state: Arc<dyn StateStore>,
    listener: UnixListener,
    socket: PathBuf,
    options: ClusterOptions,
    /// Held while serving: one host per state directory.
    _lock: StateDirLock,
}

impl Server {
    /// Validates the configuration, loads the backend and binds the socket.
    pub async fn prepare(config: ServeConfig) -> Result<Self, ServeError> {
        check_driver_name(&config.driver_name)?;
        validate::token("node id", &config.node_id).map_err(ServeError::NodeId)?;
        let nvme = &config.devices.nvme;
        for (what, value) in [
            ("the managed NQN prefix", &nvme.managed_prefix),
            ("the host NQN", &nvme.host_nqn),
        ] {
            if let Some(value) = value {
                crate::volume::attachment::check_nqn(value).map_err(|source| ServeError::Nqn {
                    what,
                    value: value.clone(),
                    source,
                })?;
            }
        }
        let socket = socket_path(&config.endpoint)?;
        let lock = StateDirLock::acquire(&config.state_dir)?;
        // A controller-only process mounts nothing here: its node facade (which only ever
        // finds no node-local directory to remove) is rooted in its own state directory, so
        // it needs no kubelet directory on its machine.
        let kubelet_root = match config.mode.serves_node() {
            true => KubeletRoot::open(&config.kubelet_root)?,
            false => KubeletRoot::open(&config.state_dir.join("no-kubelet"))?,
        };
        let local_dirs = LocalDirs::open(
            &config
                .local_dir_root
                .clone()
                .unwrap_or_else(|| config.state_dir.join("local")),
            config.project_ids.clone(),
        )
        .map_err(ServeError::LocalDirs)?;
        let store_path = config.state_dir.join("state.redb");
        let state: Arc<dyn StateStore> = Arc::new(EmbeddedStore::open(&store_path).map_err(
            |source| ServeError::Store {
                path: store_path.clone(),
                source,
            },
        )?);
        let options = &config.cluster;
        let cluster = crate::kube::Cluster::connect(
            options.kubeconfig.as_deref(),
            options.namespace.clone(),
            &config.driver_name,
        )
        .await?
        .map(Arc::new);
        let shared: Arc<dyn StateStore> = match &cluster {
            Some(c) => Arc::new(crate::kube::KubeStore::new(c)?),
            None => state.clone(),
        };
        let records = Records::open(shared.clone()).map_err(|source| ServeError::Store {
            path: match &cluster {
                Some(_) => "(the cluster's ConfigMaps)".into(),
                None => store_path,
            },
            source,
        })?;
        let backend_config = match &config.backend_config {
            Some(path) => BackendConfig::load(path)?,
            None => BackendConfig::default(),
        };
        let backend = Backend::load(
            &config.backend,
            RuntimeOptions {
                cache_dir: config.cache_dir,
                memory_limit: config.memory_limit_mib << 20,
                call_timeout: config.call_timeout,
                max_concurrent_calls: config.max_concurrent_calls,
                config: Arc::new(backend_config),
                store: Some(shared.clone()),
                node_addresses: match config.mode.serves_node() {
                    true => crate::node::addresses::addresses().into(),
                    false => Arc::from([]),
                },
            },
        )
        .await?;
        tracing::info!(
            backend = backend.name(),
            version = %backend.info().version,
            wit = backend.wit_version(),
            origin = ?backend.origin(),
            "backend loaded"
        );
        let fencing = match &cluster {
            // The cluster's VolumeAttachments are the record; rebuilt before serving.
            Some(c) => {
                let fencing = crate::fencing::Fencing::new(
                    Arc::new(crate::state::MemoryStore::default()),
                    Arc::new(c.clone()),
                    options.detach_grace,
                );
                if config.mode.serves_controller() {
                    let started = std::time::Instant::now();
                    let volumes = fencing.rebuild(c.attachments().await?)?;
                    tracing::info!(
                        volumes,
                        ms = started.elapsed().as_millis() as u64,
                        "attachments rebuilt from VolumeAttachments"
                    );
                }
                fencing
            }
            None => crate::fencing::Fencing::new(
                state.clone(),
                Arc::new(crate::fencing::Standalone),
                options.detach_grace,
            ),
        };
        let book = match &cluster {
            Some(c) => crate::cleanup::Book::Cluster(c.clone(), Default::default()),
            None => crate::cleanup::Book::Embedded(state.clone()),
        };
        // A node's requests after DeleteVolume are noted in its own store (its state directory
        // holds its node-local directories too, so it outlives the process).
        let notes = config.mode.serves_node().then(|| state.clone());
        let cleanup = Arc::new(crate::cleanup::Cleanup::new(book, &config.node_id, notes));
        let listener = bind(&socket).await?;
        let backend = Arc::new(backend);
        let host = Arc::new(crate::node::Host::new(
            kubelet_root,
            local_dirs,
            config.devices,
            config.max_node_operations,
            state.clone(),
        ));
        cleanup.resume(host.local_dirs())?;
        let controller = Arc::new(Controller::new(ControllerParts {
            backend: backend.clone(),
            node: host.clone(),
            serves_node: config.mode.serves_node(),
            shared: shared.clone(),
            records,
            fencing,
            cleanup: cleanup.clone(),
            cluster: cluster.clone(),
        }));
        let node = Arc::new(Node::new(
            backend.clone(),
            config.node_id,
            host.clone(),
            shared,
            cleanup.clone(),
            crate::lifecycle::Events::new(cluster.clone()),
        ));
        Ok(Self {
            driver_name: config.driver_name,
            mode: config.mode,
            backend,
            controller,
            node,
            host,
            cleanup,
            cluster,
            state,
            listener,
            socket,
            options: config.cluster,
            _lock: lock,
        })
    }

    /// The controller side, as the Controller service calls it.
    pub fn controller(&self) -> &Arc<Controller> {
        &self.controller
    }

    /// The node side, as the Node service calls it.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// This host's own state store.
    pub fn state(&self) -> &Arc<dyn StateStore> {
        &self.state
    }

    /// Serves until `shutdown` resolves, then finishes in-flight calls and removes the socket.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
        let mode = self.mode;
        tracing::info!(socket = %self.socket.display(), ?mode, driver = %self.driver_name, "serving CSI");
        let background = self.background();
        // Startup is over: what it alone ran (arguments, loading the component, the clients'
        // set-up) need not stay mapped. The calls map back the code they run, which the
        // release build places together (host/build.rs).
        match crate::node::code_pages::release() {
            Ok(bytes) => {
                tracing::debug!(mib = bytes >> 20, "released the mappings of startup's code")
            }
            Err(e) => tracing::warn!("cannot release the mappings of startup's code: {e}"),
        }
        let controller = mode
            .serves_controller()
            .then(|| ControllerServer::new(ControllerService(self.controller.clone())));
        let node = mode
            .serves_node()
            .then(|| NodeServer::new(NodeService(self.node.clone())));
        // Shutdown stops accepting and lets calls in flight finish, but a client that keeps its
        // connection open (kubelet does) must not hold the process past the drain time.
        let (fired, heard) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            shutdown.await;
            let _ = fired.send(());
        };
        let serve = tonic::transport::Server::builder()
            .trace_fn(call_span)
            .layer(tower::layer::layer_fn(crate::csi::Measured))
            .add_service(IdentityServer::new(IdentityService {
                driver_name: self.driver_name.clone(),
                serves_controller: mode.serves_controller(),
                backend: self.backend.clone(),
            }))
            .add_optional_service(controller)
            .add_optional_service(node)
            .serve_with_incoming_shutdown(
                UnixListenerStream::new(self.listener).map(|s| s.map(AuthorityFix::new)),
                shutdown,
            );
        let drained = async {
            if heard.await.is_ok() {
                tokio::time::sleep(DRAIN).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        let result = tokio::select! {
            result = serve => result,
            () = drained => {
                tracing::warn!("connections still open {DRAIN:?} after shutdown; stopping anyway");
                Ok(())
            }
        };
        for task in background {
            task.abort();
        }
        // What the calls answered is written before the process goes.
        if !self.controller.settle(DRAIN) {
            tracing::warn!("volume records still unwritten {DRAIN:?} after shutdown");
        }
        let _ = std::fs::remove_file(&self.socket);
        tracing::info!("stopped");
        Ok(result?)
    }

    /// Starts the reconcilers: node-local cleanup (the node's part and/or the controller's)
    /// and, with Kubernetes, the controller's clearing of attachments of deleted nodes.
    fn background(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let (mode, options) = (self.mode, &self.options);
        let node = mode.serves_node().then(|| self.host.local_dirs());
        let mut tasks = vec![tokio::spawn(self.cleanup.clone().run(
            node,
            mode.serves_controller(),
            options.reconcile_interval,
        ))];
        if let (Some(cluster), true) = (&self.cluster, mode.serves_controller()) {
            // Every replica's record follows the VolumeAttachments, whoever published.
            let changes = cluster.clone().attachment_changes();
            let follower = self.controller.clone();
            tasks.push(tokio::spawn(async move {
                let mut changes = std::pin::pin!(changes);
                while let Some(change) = changes.next().await {
                    let fencing = follower.fencing();
                    let done = match change {
                        AttachmentChange::Seen { seen, deleted } => {
                            fencing.observe(seen, deleted).await
                        }
                        AttachmentChange::Relisted {
                            present,
                            started_ms,
                        } => fencing
                            .observe_relist(&present, started_ms)
                            .await
                            .map(|gone| {
                                if gone > 0 {
                                    tracing::info!(
                                        gone,
                                        "attachments deleted while the watch was away"
                                    );
                                }
                            }),
                    };
                    if let Err(e) = done {
                        tracing::warn!("following volume attachments: {e}");
                    }
                }
            }));
            let (controller, interval, grace) = (
                self.controller.clone(),
                options.reconcile_interval,
                options.attachment_grace,
            );
            tasks.push(tokio::spawn(async move {
                loop {
                    tokio::time::sleep(interval).await;
                    if let Err(e) = controller.fencing().reconcile(grace).await {
                        tracing::warn!("attachment reconciler: {e}");
                    }
                }
            }));
        }
        tasks
    }
}

/// One span per CSI call: its method and a request id, and the volume and node once the service
/// has decoded them (`csi::note_volume`). What is logged during the call, the backend's own
/// lines included, carries it.
fn call_span(request: &http::Request<()>) -> tracing::Span {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let method = request.uri().path().rsplit('/').next().unwrap_or_default();
    let span = tracing::info_span!(
        "csi",
        method,
        request = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        volume = tracing::field::Empty,
        node = tracing::field::Empty,
    );
    tracing::debug!(parent: &span, "call");
    span
}

/// How long shutdown waits for open connections to finish.
const DRAIN: Duration = Duration::from_secs(5);

/// Binds the socket, replacing a stale one left by a crash but never a live server's.
async fn bind(path: &Path) -> Result<UnixListener, ServeError> {
    let socket_err = |source| ServeError::Socket {
        path: path.to_owned(),
        source,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(ServeError::NotASocket {
                path: path.to_owned(),
            });
        }
        if UnixStream::connect(path).await.is_ok() {
            return Err(ServeError::InUse(path.to_owned()));
        }
        std::fs::remove_file(path).map_err(socket_err)?;
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(socket_err)?;
    }
    UnixListener::bind(path).map_err(socket_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_names() {
        for ok in ["node-local-cache.csi.io", "a", "rds.csi.srvlab.io"] {
            assert!(check_driver_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "a_b", "a/b", &"a".repeat(64)] {
            assert!(check_driver_name(bad).is_err(), "{bad}");
        }
    }
}
