//! What a backend declares, the host serves: ControllerPublish/Unpublish (with the backend's
//! attachment encoded into the publish context), expansion, capacity, listing, snapshots and
//! node identity; what it
//! does not declare is UNIMPLEMENTED. Uses the full-featured test backend, which keeps its
//! volumes in the host's cache capability, across per-call instances.

use modcsi::proto::volume_capability::access_mode::Mode;
use modcsi::proto::*;
use modcsi_tests::requests::{self, mount_capability};
use modcsi_tests::{CreateVolume, FULL_FEATURED, NODE_LOCAL_CACHE, TestHost};
use tonic::Code;

fn publish(volume_id: &str, node_id: &str) -> ControllerPublishVolumeRequest {
    ControllerPublishVolumeRequest {
        volume_id: volume_id.into(),
        node_id: node_id.into(),
        volume_capability: Some(mount_capability(Mode::SingleNodeWriter)),
        ..Default::default()
    }
}

fn rpc_types(
    response: ControllerGetCapabilitiesResponse,
) -> Vec<controller_service_capability::rpc::Type> {
    response
        .capabilities
        .into_iter()
        .filter_map(|c| c.r#type)
        .map(|controller_service_capability::Type::Rpc(r)| r.r#type())
        .collect()
}

#[tokio::test]
async fn declared_capabilities_are_advertised() {
    use controller_service_capability::rpc::Type as T;
    let mut host = TestHost::start(FULL_FEATURED).await;
    let caps = host
        .client
        .controller
        .controller_get_capabilities(ControllerGetCapabilitiesRequest {})
        .await
        .unwrap();
    let caps = rpc_types(caps.into_inner());
    for expected in [
        T::CreateDeleteVolume,
        T::PublishUnpublishVolume,
        T::ExpandVolume,
        T::GetCapacity,
        T::SingleNodeMultiWriter,
    ] {
        assert!(
            caps.contains(&expected),
            "{expected:?} missing from {caps:?}"
        );
    }
    assert!(!caps.contains(&T::CloneVolume));
    let plugin = host
        .client
        .identity
        .get_plugin_capabilities(GetPluginCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    let kinds: Vec<_> = plugin
        .capabilities
        .into_iter()
        .filter_map(|c| c.r#type)
        .collect();
    assert!(
        kinds
            .iter()
            .any(|k| matches!(k, plugin_capability::Type::VolumeExpansion(_)))
    );
    assert!(kinds.contains(&plugin_capability::Type::Service(
        plugin_capability::Service {
            r#type: plugin_capability::service::Type::VolumeAccessibilityConstraints as i32,
        }
    )));

    let mut nlc = TestHost::start(NODE_LOCAL_CACHE).await;
    let caps = rpc_types(
        nlc.client
            .controller
            .controller_get_capabilities(ControllerGetCapabilitiesRequest {})
            .await
            .unwrap()
            .into_inner(),
    );
    assert!(!caps.contains(&T::PublishUnpublishVolume));
    let err = nlc
        .client
        .controller
        .controller_publish_volume(publish("nlc-x", "n1"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(
        err.message().contains("node-local-cache"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn controller_publish_carries_the_attachment_to_the_node() {
    let mut host = TestHost::start(FULL_FEATURED).await;
    let volume = host.client.controller.create("pv1").await;
    assert_eq!(
        volume.volume_context.get("origin").map(String::as_str),
        Some("full-featured")
    );
    assert_eq!(
        volume.accessible_topology[0]
            .segments
            .get("topology.test/zone")
            .map(String::as_str),
        Some("a")
    );

    let context = host
        .client
        .controller
        .controller_publish_volume(publish(&volume.volume_id, "node-1"))
        .await
        .unwrap()
        .into_inner()
        .publish_context;
    let get = |k: &str| context.get(k).map(String::as_str);
    assert_eq!(get("modcsi.io/attachment"), Some("nvme-tcp"));
    assert_eq!(get("modcsi.io/nvme-portals"), Some("192.0.2.10:4420"));
    assert_eq!(get("modcsi.io/nvme-nqn"), Some("nqn.2000-02.test:ff-pv1"));
    assert_eq!(get("modcsi.io/nvme-ctrl-loss-tmo"), Some("-1"));
    assert_eq!(get("published-to"), Some("node-1"));

    // The node side reads that context: an nvme-tcp volume is a staged one, and a publish
    // without a staging path is refused as such.
    let mut node_publish = requests::publish(&volume, &host.target("t"), false);
    node_publish.publish_context = context;
    let err = host
        .client
        .node
        .node_publish_volume(node_publish)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("staging target path"),
        "{}",
        err.message()
    );

    host.client
        .controller
        .controller_unpublish_volume(ControllerUnpublishVolumeRequest {
            volume_id: volume.volume_id.clone(),
            node_id: "node-1".into(),
            ..Default::default()
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn controller_publish_status_codes() {
    let mut host = TestHost::start(FULL_FEATURED).await;
    let c = &mut host.client.controller;
    let volume = c.create("pv2").await;
    assert_eq!(
        c.controller_publish_volume(publish(&volume.volume_id, ""))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    assert_eq!(
        c.controller_publish_volume(publish("", "n1"))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    assert_eq!(
        c.controller_publish_volume(publish(&volume.volume_id, "n/1"))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    let mut no_cap = publish(&volume.volume_id, "n1");
    no_cap.volume_capability = None;
    assert_eq!(
        c.controller_publish_volume(no_cap)
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    let err = c
        .controller_publish_volume(publish("ff-unknown", "n1"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(
        err.message().contains("ff-unknown") && err.message().contains("full-featured"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn backend_state_lives_in_the_host_cache_across_instances() {
    let mut host = TestHost::start(FULL_FEATURED).await;
    let c = &mut host.client.controller;
    let volume = c.create("pv3").await;
    let validate = |id: &str| ValidateVolumeCapabilitiesRequest {
        volume_id: id.into(),
        volume_capabilities: vec![mount_capability(Mode::SingleNodeWriter)],
        ..Default::default()
    };
    assert!(
        c.validate_volume_capabilities(validate(&volume.volume_id))
            .await
            .unwrap()
            .into_inner()
            .confirmed
            .is_some()
    );
    c.delete_volume(requests::delete(&volume.volume_id))
        .await
        .unwrap();
    assert_eq!(
        c.validate_volume_capabilities(validate(&volume.volume_id))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn expansion_capacity_and_node_identity() {
    let mut host = TestHost::start(FULL_FEATURED).await;
    let c = &mut host.client.controller;
    let volume = c.create("pv4").await;
    let expand = |required_bytes| ControllerExpandVolumeRequest {
        volume_id: volume.volume_id.clone(),
        capacity_range: Some(CapacityRange {
            required_bytes,
            limit_bytes: 0,
        }),
        ..Default::default()
    };
    let grown = c
        .controller_expand_volume(expand(4 << 20))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(grown.capacity_bytes, 4 << 20);
    assert!(grown.node_expansion_required);
    assert_eq!(
        c.controller_expand_volume(expand(1))
            .await
            .unwrap_err()
            .code(),
        Code::OutOfRange
    );
    let mut no_range = expand(0);
    no_range.capacity_range = None;
    assert_eq!(
        c.controller_expand_volume(no_range)
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );

    let capacity = c
        .get_capacity(GetCapacityRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(capacity.available_capacity, 42 << 30);

    let info = host
        .client
        .node
        .node_get_info(NodeGetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        info.node_id, "test-node",
        "the backend did not override the node id"
    );
    assert_eq!(info.max_volumes_per_node, 7);
    assert_eq!(
        info.accessible_topology
            .unwrap()
            .segments
            .get("topology.test/zone")
            .map(String::as_str),
        Some("a")
    );
}

#[tokio::test]
async fn list_volumes_pages_through_everything() {
    let mut host = TestHost::start(FULL_FEATURED).await;
    let c = &mut host.client.controller;
    let mut created = Vec::new();
    for name in ["l1", "l2", "l3"] {
        created.push(c.create(name).await.volume_id);
    }
    let first = c
        .list_volumes(ListVolumesRequest {
            max_entries: 2,
            starting_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.entries.len(), 2);
    assert!(!first.next_token.is_empty());
    let rest = c
        .list_volumes(ListVolumesRequest {
            max_entries: 2,
            starting_token: first.next_token,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(rest.next_token.is_empty());
    let mut listed: Vec<_> = first
        .entries
        .iter()
        .chain(&rest.entries)
        .map(|e| e.volume.as_ref().unwrap().volume_id.clone())
        .collect();
    listed.sort();
    assert_eq!(listed, created);
    let bad = c
        .list_volumes(ListVolumesRequest {
            max_entries: 0,
            starting_token: "bogus".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        bad.code(),
        Code::Aborted,
        "the spec's code for an invalid starting token"
    );
    assert_eq!(
        c.list_volumes(ListVolumesRequest {
            max_entries: -1,
            starting_token: String::new()
        })
        .await
        .unwrap_err()
        .code(),
        Code::InvalidArgument
    );
}

#[tokio::test]
async fn snapshots_are_idempotent_and_listed() {
    let mut host = TestHost::start(FULL_FEATURED).await;
    let c = &mut host.client.controller;
    let volume = c.create("s1").await;
    let create = |name: &str, source: &str| CreateSnapshotRequest {
        name: name.into(),
        source_volume_id: source.into(),
        ..Default::default()
    };
    let snap = c
        .create_snapshot(create("daily", &volume.volume_id))
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    assert_eq!(snap.source_volume_id, volume.volume_id);
    assert!(snap.ready_to_use && snap.creation_time.is_some());
    let again = c
        .create_snapshot(create("daily", &volume.volume_id))
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    assert_eq!(again, snap);
    assert_eq!(
        c.create_snapshot(create("", &volume.volume_id))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    assert_eq!(
        c.create_snapshot(create("x", "")).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(
        c.create_snapshot(create("x", "ff-missing"))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );

    let by_id = ListSnapshotsRequest {
        snapshot_id: snap.snapshot_id.clone(),
        ..Default::default()
    };
    let listed = c.list_snapshots(by_id.clone()).await.unwrap().into_inner();
    assert_eq!(listed.entries.len(), 1);
    c.delete_snapshot(DeleteSnapshotRequest {
        snapshot_id: snap.snapshot_id.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    c.delete_snapshot(DeleteSnapshotRequest {
        snapshot_id: snap.snapshot_id.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(
        c.list_snapshots(by_id)
            .await
            .unwrap()
            .into_inner()
            .entries
            .is_empty()
    );
    assert_eq!(
        c.delete_snapshot(DeleteSnapshotRequest::default())
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
}

#[tokio::test]
async fn a_refused_delete_keeps_the_node_directory() {
    let mut host = TestHost::start(FULL_FEATURED).await;
    let c = &mut host.client.controller;
    let volume = c.create("d1").await;
    c.create_snapshot(CreateSnapshotRequest {
        name: "keep".into(),
        source_volume_id: volume.volume_id.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    // Data of this volume in the node's directory, as a local-dir publish would leave it.
    let dir = host.local_dir(&volume.volume_id);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("data"), b"precious").unwrap();

    let err = host
        .client
        .controller
        .delete_volume(requests::delete(&volume.volume_id))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert_eq!(
        std::fs::read(dir.join("data")).unwrap(),
        b"precious",
        "the backend said no: data stays"
    );

    host.client
        .controller
        .delete_snapshot(DeleteSnapshotRequest {
            snapshot_id: "snap-keep".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    host.client
        .controller
        .delete_volume(requests::delete(&volume.volume_id))
        .await
        .unwrap();
    assert!(!dir.exists(), "removed once the backend agreed");
}
