//! Components of every contract version the host serves, through the real runtime (no gRPC):
//! node-local-cache (0.2.3), a component built from the frozen 0.2.0 WIT and the full-featured
//! one built from 0.1 load with their optional exports and pass `modcsi backend check`, so the
//! promise that a host upgrade never breaks a backend that worked stays under test.
//! node-local-cache's own promises (the public driver's `nlc-<uuid v5>` ids, local-dir
//! attachment, `locate`) follow. Another component is checked with `modcsi backend check`.

use std::time::Duration;

use modcsi::author::check::{self, CheckOptions};

use modcsi::runtime::{Backend, CallError, Optional, RuntimeOptions};
use modcsi::volume::types::{
    AccessMode, AccessType, Attachment, BackendError, Capability, CapacityRange, CreateRequest,
    MountVolume,
};
use modcsi_tests::{CONTRACT_0_2_0, FULL_FEATURED, NODE_LOCAL_CACHE, component, shared_cache_dir};

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

#[tokio::test]
async fn the_frozen_0_1_component_is_served_through_the_adapter() {
    let old = load_path(&component(FULL_FEATURED)).await;
    assert_eq!(old.wit_version(), "0.1.0");
    assert!(old.offers(Optional::Publish) && old.offers(Optional::Snapshots));
    assert!(!old.offers(Optional::Locate), "0.1 has no locate");
    let nlc = load().await;
    assert_eq!(nlc.wit_version(), "0.2.3");
}

#[tokio::test]
async fn a_component_of_an_older_0_2_minor_loads_with_its_optional_exports() {
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
async fn components_of_every_contract_version_pass_the_checker() {
    for name in [NODE_LOCAL_CACHE, FULL_FEATURED, CONTRACT_0_2_0] {
        let options = CheckOptions {
            cache_dir: shared_cache_dir(),
            config: Default::default(),
            call_timeout: Duration::from_secs(10),
            memory_limit: 64 << 20,
            size: 1 << 30,
            parameters: vec![],
            secrets: vec![],
            node_id: "test-node".into(),
        };
        let report = check::check(&component(name), &options).await;
        assert!(report.passed(), "{}", report.text());
    }
}

// node-local-cache's own promises.

#[tokio::test]
async fn node_local_cache_ids_are_uuid_v5_of_the_name() {
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
