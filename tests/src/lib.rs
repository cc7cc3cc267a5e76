//! Test support: the backend components built in this repo, and a modcsi host started
//! in-process on a temporary unix socket with its own state directory.
//!
//! Tests here are root tests: they make real bind mounts under their temporary directories and
//! remove them again when the host is dropped, even after a failed assertion.

pub mod browser;
pub mod e2e;
pub mod fabric;
pub mod fake_emma;
pub mod fake_rds;
pub mod kube_api;
pub mod loop_disk;
pub mod process;
pub mod registry;
pub mod sshd;
pub mod stall_proxy;
pub mod store_contract;

use std::path::{Path, PathBuf};
use std::time::Duration;

use modcsi::client::CsiClient;
use modcsi::csi::Mode;
use modcsi::node::mountinfo::MountTable;
use modcsi::serve::{ServeConfig, Server};
use tokio::sync::oneshot;

/// The node-local-cache backend.
pub const NODE_LOCAL_CACHE: &str = "node_local_cache";
/// The MikroTik RDS backend (`backends/rds`).
pub const RDS: &str = "rds";
/// A test backend built from the frozen 0.1 WIT that declares every optional controller
/// capability the host forwards (through the 0.1 adapter).
pub const FULL_FEATURED: &str = "full_featured";
/// A backend built from the frozen 0.2.0 WIT (the SDK tracks the newest 0.2.x), exporting
/// `expand`.
pub const CONTRACT_0_2_0: &str = "contract_0_2_0";
/// A 0.2 test backend that exports every optional interface and breaks CSI rules on request.
pub const RULE_BREAKER: &str = "rule_breaker";
/// Keeps every rule of `modcsi backend check`, or breaks the one its `break` key names.
pub const CHECK_BREAKER: &str = "check_breaker";
/// Test backends that misbehave in `create-volume` for a volume named [`TRIGGER`].
pub const LOOP_FOREVER: &str = "loop_forever";
pub const MEMORY_BOMB: &str = "memory_bomb";
pub const PANIC: &str = "panic";
/// Tries to reach the filesystem and the network, and panics with what it managed.
pub const ESCAPE: &str = "escape";
pub const TRIGGER: &str = "misbehave";

/// Path of a backend component built by `just build-backends`.
pub fn component(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../backends/target/wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: run `just build-backends` first",
        path.display()
    );
    path
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Precompiled components shared by all tests, so each component compiles once per build.
pub fn shared_cache_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/modcsi-test-cache")
}

pub struct TestHost {
    pub client: CsiClient,
    /// The lifecycle's two sides, for tests that call them without gRPC.
    pub controller: std::sync::Arc<modcsi::lifecycle::Controller>,
    pub node: std::sync::Arc<modcsi::lifecycle::Node>,
    /// This host's own state store (what it staged, standalone cleanup records).
    pub state: std::sync::Arc<dyn modcsi::state::StateStore>,
    pub endpoint: String,
    dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
}

impl TestHost {
    pub async fn start(backend: &str) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    /// Starts a host serving every service, after letting `adjust` change its configuration.
    pub async fn start_with(backend: &str, adjust: impl FnOnce(&mut ServeConfig)) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let endpoint = format!("unix://{}/csi.sock", root.display());
        let mut config = ServeConfig {
            backend: component(backend),
            driver_name: "test.modcsi.io".into(),
            node_id: "test-node".into(),
            endpoint: endpoint.clone(),
            mode: Mode::All,
            state_dir: root.join("state"),
            cache_dir: shared_cache_dir(),
            call_timeout: Duration::from_secs(10),
            memory_limit_mib: 64,
            max_concurrent_calls: 8,
            backend_config: None,
            kubelet_root: root.clone(),
            max_node_operations: 8,
            devices: Default::default(),
            local_dir_root: None,
            project_ids: modcsi::node::quota::DEFAULT_PROJECT_IDS,
            cluster: Default::default(),
        };
        // Like kubelet, the host's "pod directory" exists before anything is published in it.
        std::fs::create_dir_all(root.join("targets")).unwrap();
        adjust(&mut config);
        let server = Server::prepare(config).await.expect("host starts");
        let (controller, node, state) = (
            server.controller().clone(),
            server.node().clone(),
            server.state().clone(),
        );
        let (tx, rx) = oneshot::channel();
        tokio::spawn(server.run(async {
            let _ = rx.await;
        }));
        let client = CsiClient::connect(&endpoint)
            .await
            .expect("client connects");
        Self {
            client,
            controller,
            node,
            state,
            endpoint,
            dir,
            shutdown: Some(tx),
        }
    }

    /// The host's temporary root (canonical).
    pub fn root(&self) -> PathBuf {
        std::fs::canonicalize(self.dir.path()).unwrap()
    }

    /// A target path under the host's temporary root (not created).
    pub fn target(&self, name: &str) -> String {
        self.root().join("targets").join(name).display().to_string()
    }

    /// Where the node keeps a local-dir volume.
    pub fn local_dir(&self, volume_id: &str) -> PathBuf {
        self.root().join("state/local").join(volume_id)
    }

    /// Mount points under this host's temporary root.
    pub fn mounts(&self) -> Vec<PathBuf> {
        let root = self.root();
        MountTable::read()
            .unwrap()
            .entries()
            .iter()
            .filter(|e| e.mount_point.starts_with(&root))
            .map(|e| e.mount_point.clone())
            .collect()
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        // Leave no mounts behind, whatever the test did.
        for mount in self.mounts().into_iter().rev() {
            let _ = nix::mount::umount2(&mount, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// CreateVolume with the default request for `name` (1 MiB, single-node writer), which must
/// succeed: the start of most tests.
#[allow(async_fn_in_trait)] // used by the tests only, never as a dyn or Send bound
pub trait CreateVolume {
    async fn create(&mut self, name: &str) -> modcsi::proto::Volume;
}

impl CreateVolume
    for modcsi::proto::controller_client::ControllerClient<tonic::transport::Channel>
{
    async fn create(&mut self, name: &str) -> modcsi::proto::Volume {
        self.create_volume(requests::create(name))
            .await
            .unwrap_or_else(|e| panic!("create volume {name:?}: {e}"))
            .into_inner()
            .volume
            .expect("CreateVolume answers a volume")
    }
}

impl TestHost {
    /// Creates volume `name` with the default request (see [`CreateVolume`]).
    pub async fn create(&self, name: &str) -> modcsi::proto::Volume {
        self.client.controller.clone().create(name).await
    }
}

/// Captures every log line of this test process (nextest runs each test in its own process).
pub fn capture_logs() -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    use std::sync::{Arc, Mutex};
    #[derive(Clone)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let sink = Sink(buffer.clone());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .init();
    buffer
}

/// Request builders shared by the tests and the benchmark.
pub mod requests {
    use modcsi::proto::volume_capability::{
        AccessMode, AccessType, BlockVolume, MountVolume, access_mode::Mode,
    };
    use modcsi::proto::*;

    pub fn mount_capability(mode: Mode) -> VolumeCapability {
        VolumeCapability {
            access_type: Some(AccessType::Mount(MountVolume::default())),
            access_mode: Some(AccessMode { mode: mode as i32 }),
        }
    }

    pub fn block_capability() -> VolumeCapability {
        VolumeCapability {
            access_type: Some(AccessType::Block(BlockVolume {})),
            access_mode: Some(AccessMode {
                mode: Mode::SingleNodeWriter as i32,
            }),
        }
    }

    pub fn create(name: &str) -> CreateVolumeRequest {
        CreateVolumeRequest {
            name: name.into(),
            capacity_range: Some(CapacityRange {
                required_bytes: 1 << 20,
                limit_bytes: 0,
            }),
            volume_capabilities: vec![mount_capability(Mode::SingleNodeWriter)],
            ..Default::default()
        }
    }

    pub fn delete(volume_id: &str) -> DeleteVolumeRequest {
        DeleteVolumeRequest {
            volume_id: volume_id.into(),
            ..Default::default()
        }
    }

    pub fn publish(volume: &Volume, target: &str, readonly: bool) -> NodePublishVolumeRequest {
        NodePublishVolumeRequest {
            volume_id: volume.volume_id.clone(),
            target_path: target.into(),
            volume_capability: Some(mount_capability(Mode::SingleNodeWriter)),
            readonly,
            volume_context: volume.volume_context.clone(),
            ..Default::default()
        }
    }

    pub fn unpublish(volume_id: &str, target: &str) -> NodeUnpublishVolumeRequest {
        NodeUnpublishVolumeRequest {
            volume_id: volume_id.into(),
            target_path: target.into(),
        }
    }

    pub fn stats(volume_id: &str, path: &str) -> NodeGetVolumeStatsRequest {
        NodeGetVolumeStatsRequest {
            volume_id: volume_id.into(),
            volume_path: path.into(),
            ..Default::default()
        }
    }
}
