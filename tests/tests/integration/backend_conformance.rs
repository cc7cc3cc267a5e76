//! The backend conformance kit: drives backend components through the real runtime (no gRPC)
//! and checks the contract every backend owes the host. `MODCSI_BACKEND=/path/to/backend.wasm`
//! points it at any component; by default it checks node-local-cache (0.2) and the
//! full-featured test component built from the frozen 0.1 WIT, so the promise that a host
//! upgrade never breaks a backend that worked stays under test. node-local-cache's own promises
//! (the public driver's `nlc-<uuid v5>` ids, local-dir attachment, `locate`) follow.

use std::path::PathBuf;
use std::time::Duration;

use modcsi::runtime::{Backend, CallError, Optional, RuntimeOptions};
use modcsi::volume::types::{
    AccessMode, AccessType, Attachment, BackendError, Capability, CapacityRange, CreateRequest,
    MountVolume,
};
use modcsi::volume::validate;
use modcsi_tests::{CONTRACT_0_2_0, FULL_FEATURED, NODE_LOCAL_CACHE, component, shared_cache_dir};

fn backend_paths() -> Vec<PathBuf> {
    match std::env::var_os("MODCSI_BACKEND") {
        Some(path) => vec![PathBuf::from(path)],
        None => vec![
            component(NODE_LOCAL_CACHE),
            component(FULL_FEATURED),
            component(CONTRACT_0_2_0),
        ],
    }
}

async fn load_path(path: &std::path::Path) -> Backend {
    Backend::load(
        path,
        RuntimeOptions {
            cache_dir: shared_cache_dir(),
            memory_limit: 64 << 20,
            call_timeout: Duration::from_secs(10),
            max_concurrent_calls: 4,
            config: Default::default(),
            store: None,
            node_addresses: std::sync::Arc::from([]),
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{} loads: {e}", path.display()))
}

/// Every backend under test.
async fn backends() -> Vec<Backend> {
    let mut loaded = vec![];
    for path in backend_paths() {
        loaded.push(load_path(&path).await);
    }
    loaded
}

/// node-local-cache alone.
async fn load() -> Backend {
    load_path(&component(NODE_LOCAL_CACHE)).await
}

fn filesystem(mode: AccessMode) -> Capability {
    Capability {
        access_type: AccessType::Mount(MountVolume {
            fs_type: String::new(),
            mount_flags: vec![],
            volume_mount_group: String::new(),
        }),
        access_mode: mode,
    }
}

fn request(name: &str, capabilities: Vec<Capability>) -> CreateRequest {
    CreateRequest {
        name: name.into(),
        capacity: CapacityRange {
            required_bytes: 1 << 30,
            limit_bytes: 0,
        },
        capabilities,
        parameters: vec![],
        secrets: vec![("token".into(), "never-logged".into())],
        source: None,
        accessibility: None,
    }
}

/// A capability the backend says it supports.
fn supported(backend: &Backend) -> Capability {
    filesystem(
        *backend
            .info()
            .access_modes
            .first()
            .expect("at least one access mode"),
    )
}

#[tokio::test]
async fn the_frozen_0_1_component_is_served_through_the_adapter() {
    if std::env::var_os("MODCSI_BACKEND").is_some() {
        return;
    }
    let old = load_path(&component(FULL_FEATURED)).await;
    assert_eq!(old.wit_version(), "0.1.0");
    assert!(old.offers(Optional::Publish) && old.offers(Optional::Snapshots));
    assert!(!old.offers(Optional::Locate), "0.1 has no locate");
    let nlc = load().await;
    assert_eq!(nlc.wit_version(), "0.2.2");
}

#[tokio::test]
async fn a_component_of_an_older_0_2_minor_loads_with_its_optional_exports() {
    if std::env::var_os("MODCSI_BACKEND").is_some() {
        return;
    }
    let older = load_path(&component(CONTRACT_0_2_0)).await;
    assert_eq!(older.wit_version(), "0.2.0");
    assert!(older.offers(Optional::Expand), "its 0.2.0 export is found");
    assert!(!older.offers(Optional::Publish));
    drop(older);
    // Served end to end: its imports (the cache) link and its expand answers.
    let host = modcsi_tests::TestHost::start(CONTRACT_0_2_0).await;
    let mut controller = host.client.controller.clone();
    let volume = controller
        .create_volume(modcsi_tests::requests::create("old"))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    let grown = controller
        .controller_expand_volume(modcsi::proto::ControllerExpandVolumeRequest {
            volume_id: volume.volume_id.clone(),
            capacity_range: Some(modcsi::proto::CapacityRange {
                required_bytes: 8 << 20,
                limit_bytes: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(grown.capacity_bytes, 8 << 20);
}

#[tokio::test]
async fn describes_itself_and_is_ready() {
    for backend in backends().await {
        let info = backend.info();
        assert!(!info.name.is_empty() && !info.version.is_empty());
        assert!(!info.access_modes.is_empty(), "declares its access modes");
        assert!(
            info.volume_modes != modcsi::volume::types::VolumeModes::default(),
            "declares filesystem and/or block"
        );
        backend.probe(None).await.unwrap();
    }
}

#[tokio::test]
async fn create_is_idempotent_and_ids_are_safe() {
    for backend in backends().await {
        let cap = supported(&backend);
        let first = backend
            .create_volume(request("pvc-a", vec![cap.clone()]), None)
            .await
            .unwrap();
        let again = backend
            .create_volume(request("pvc-a", vec![cap.clone()]), None)
            .await
            .unwrap();
        let other = backend
            .create_volume(request("pvc-b", vec![cap]), None)
            .await
            .unwrap();
        assert_eq!(first.id, again.id, "the same name yields the same volume");
        assert_ne!(
            first.id, other.id,
            "different names yield different volumes"
        );
        for volume in [&first, &other] {
            validate::volume_id(&volume.id).expect("ids are safe for paths and commands");
            assert!(
                volume
                    .context
                    .iter()
                    .all(|(k, _)| !k.starts_with("modcsi.io/")),
                "reserved keys"
            );
        }
    }
}

#[tokio::test]
async fn delete_is_idempotent() {
    for backend in backends().await {
        let volume = backend
            .create_volume(request("pvc-del", vec![supported(&backend)]), None)
            .await
            .unwrap();
        backend
            .delete_volume(volume.id.clone(), vec![], None)
            .await
            .unwrap();
        backend
            .delete_volume(volume.id, vec![], None)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn validates_what_it_created() {
    for backend in backends().await {
        let cap = supported(&backend);
        let volume = backend
            .create_volume(request("pvc-val", vec![cap.clone()]), None)
            .await
            .unwrap();
        let validation = backend
            .validate_capabilities(volume.id, vec![cap], vec![], vec![], vec![], None)
            .await
            .unwrap();
        assert!(validation.confirmed, "{}", validation.message);
    }
}

// node-local-cache's own promises.

fn is_node_local_cache() -> bool {
    std::env::var_os("MODCSI_BACKEND").is_none()
}

#[tokio::test]
async fn node_local_cache_ids_are_uuid_v5_of_the_name() {
    if !is_node_local_cache() {
        return;
    }
    let backend = load().await;
    let volume = backend
        .create_volume(
            request(
                "pvc-123",
                vec![filesystem(AccessMode::MultiNodeMultiWriter)],
            ),
            None,
        )
        .await
        .unwrap();
    let uuid = volume.id.strip_prefix("nlc-").expect("nlc- prefix");
    let parts: Vec<_> = uuid.split('-').map(str::len).collect();
    assert_eq!(parts, [8, 4, 4, 4, 12], "{uuid}");
    assert_eq!(&uuid[14..15], "5", "version 5");
    // The public node-local-cache driver's ids for the same names.
    for (name, id) in [
        ("pvc-12345", "nlc-da2c015b-ead8-5c44-8d3d-00cc2583f371"),
        ("pvc-abc-123", "nlc-24fd37c9-eb20-576a-8fce-481b19db68f6"),
    ] {
        let cap = filesystem(AccessMode::SingleNodeWriter);
        let v = backend
            .create_volume(request(name, vec![cap]), None)
            .await
            .unwrap();
        assert_eq!(v.id, id, "{name}");
        let located = backend.locate(v.id, vec![], None).await.unwrap();
        assert!(matches!(located, Attachment::LocalDir));
    }
    assert!(matches!(volume.attachment, Some(Attachment::LocalDir)));
    assert!(volume.topology.is_empty());
    assert_eq!(volume.capacity_bytes, 1 << 30);
}

#[tokio::test]
async fn node_local_cache_does_not_know_foreign_ids() {
    if !is_node_local_cache() {
        return;
    }
    let backend = load().await;
    let unknown = backend
        .validate_capabilities("pvc-not-ours".into(), vec![], vec![], vec![], vec![], None)
        .await;
    match unknown {
        Err(CallError::Refused {
            error: BackendError::NotFound(message),
            ..
        }) => {
            assert!(message.contains("pvc-not-ours"), "{message}")
        }
        other => panic!("a foreign id was accepted: {other:?}"),
    }
}
