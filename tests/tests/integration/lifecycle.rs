//! The lifecycle layer called directly, without gRPC: the order of each operation's steps
//! (the host's record and fencing before the backend, the node before the backend on delete)
//! is observable in what the backend was asked and what the host kept.

use std::collections::HashMap;
use std::path::Path;

use modcsi::lifecycle::Error;
use modcsi::volume::types::{
    AccessMode, AccessType, Capability, CapacityRange, CreateRequest, MountVolume,
};
use modcsi_tests::{NODE_LOCAL_CACHE, RULE_BREAKER, TestHost};

fn rwo() -> Capability {
    Capability {
        access_type: AccessType::Mount(MountVolume {
            fs_type: String::new(),
            mount_flags: vec![],
            volume_mount_group: String::new(),
        }),
        access_mode: AccessMode::SingleNodeWriter,
    }
}

fn request(name: &str, bytes: u64) -> CreateRequest {
    CreateRequest {
        name: name.into(),
        capacity: CapacityRange {
            required_bytes: bytes,
            limit_bytes: 0,
        },
        capabilities: vec![rwo()],
        parameters: vec![],
        secrets: vec![],
        source: None,
        accessibility: None,
    }
}

/// How many calls the backend has answered so far.
fn backend_calls(host: &TestHost) -> u64 {
    host.controller.backend().timings().calls
}

#[tokio::test]
async fn a_mismatched_create_is_refused_from_the_record_without_asking_the_backend() {
    let host = TestHost::start(NODE_LOCAL_CACHE).await;
    let c = &host.controller;
    let record = c
        .create_volume(request("pvc-1", 1 << 20), None, None)
        .await
        .unwrap();
    // The same request again: the backend answers (idempotent by contract), same volume.
    let again = c
        .create_volume(request("pvc-1", 1 << 20), None, None)
        .await
        .unwrap();
    assert_eq!(again.id, record.id);
    let before = backend_calls(&host);
    let err = c
        .create_volume(request("pvc-1", 2 << 20), None, None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AlreadyExists(_)), "{err}");
    assert!(err.to_string().contains(&record.id), "{err}");
    assert_eq!(backend_calls(&host), before, "the backend was not asked");
}

#[tokio::test]
async fn mkfs_options_are_checked_before_anything_else() {
    let host = TestHost::start(NODE_LOCAL_CACHE).await;
    let mut create = request("pvc-mkfs", 1 << 20);
    create.capabilities[0].access_type = AccessType::Mount(MountVolume {
        fs_type: "ext4".into(),
        mount_flags: vec![],
        volume_mount_group: String::new(),
    });
    let before = backend_calls(&host);
    let err = host
        .controller
        .create_volume(create, Some("-O ^has_journal; rm -rf /"), None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    assert_eq!(backend_calls(&host), before);
}

#[tokio::test]
async fn delete_asks_the_node_before_the_backend_and_keeps_the_volume_while_published() {
    let host = TestHost::start(NODE_LOCAL_CACHE).await;
    let record = host
        .controller
        .create_volume(request("pvc-busy", 1 << 20), None, None)
        .await
        .unwrap();
    let context: HashMap<String, String> = record.context.clone().into_iter().collect();
    let target = host.target("busy");
    host.node
        .publish(
            &record.id,
            Path::new(&target),
            "",
            &rwo(),
            false,
            &HashMap::new(),
            &context,
        )
        .await
        .unwrap();
    let before = backend_calls(&host);
    let err = host
        .controller
        .delete_volume(&record.id, vec![], None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Node { .. }), "{err}");
    assert_eq!(backend_calls(&host), before, "the backend was not asked");
    assert!(host.local_dir(&record.id).exists(), "the data is kept");

    host.node
        .unpublish(&record.id, Path::new(&target))
        .await
        .unwrap();
    host.controller
        .delete_volume(&record.id, vec![], None)
        .await
        .unwrap();
    assert!(!host.local_dir(&record.id).exists());
    // Stats of what is gone: NOT_FOUND, from the node side alone.
    let err = host
        .node
        .stats(&record.id, &target, None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err}");
}

#[tokio::test]
async fn a_publish_the_backend_refuses_leaves_no_attachment() {
    let host = TestHost::start(RULE_BREAKER).await;
    let c = &host.controller;
    let publish = |id: &'static str, node: &'static str| {
        c.controller_publish(id, node, rwo(), false, vec![], vec![], None)
    };
    let err = publish("rb-unpublishable", "node-a").await.unwrap_err();
    assert!(matches!(err, Error::Backend { .. }), "{err}");
    assert!(
        c.fencing().nodes("rb-unpublishable").unwrap().is_empty(),
        "the attachment recorded before the backend call was undone"
    );
    // So another node is not fenced out by a publish that never happened.
    publish("rb-other", "node-a").await.unwrap();
    assert_eq!(c.fencing().nodes("rb-other").unwrap(), ["node-a"]);
    let err = publish("rb-other", "node-b").await.unwrap_err();
    assert!(matches!(err, Error::Fence(_)), "{err}");
}
