//! What a backend declares, the host serves: ControllerPublish/Unpublish (with the backend's
//! attachment encoded into the publish context), expansion, capacity and node identity; what it
//! does not declare is UNIMPLEMENTED. Uses the full-featured test backend, which keeps its
//! volumes in the host's cache capability, across per-call instances.

use modcsi::proto::volume_capability::access_mode::Mode;
use modcsi::proto::*;
use modcsi_tests::requests::{self, mount_capability};
use modcsi_tests::{FULL_FEATURED, NODE_LOCAL_CACHE, TestHost};
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
    let volume = host
        .client
        .controller
        .create_volume(requests::create("pv1"))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
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
    assert_eq!(get("modcsi.io/nvme-address"), Some("192.0.2.10"));
    assert_eq!(get("modcsi.io/nvme-port"), Some("4420"));
    assert_eq!(get("modcsi.io/nvme-nqn"), Some("nqn.2000-02.test:ff-pv1"));
    assert_eq!(get("modcsi.io/nvme-ctrl-loss-tmo"), Some("-1"));
    assert_eq!(get("published-to"), Some("node-1"));

    // The node side reads that context; NVMe/TCP attach is not in this host yet, and says so.
    let mut node_publish = requests::publish(&volume, &host.target("t"), false);
    node_publish.publish_context = context;
    let err = host
        .client
        .node
        .node_publish_volume(node_publish)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(err.message().contains("nvme-tcp"), "{}", err.message());

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
    let volume = c
        .create_volume(requests::create("pv2"))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
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
    let volume = c
        .create_volume(requests::create("pv3"))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
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
    let volume = c
        .create_volume(requests::create("pv4"))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
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
