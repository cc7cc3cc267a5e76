//! ReadWriteOnce fencing in the host, for every backend that publishes to nodes (here the
//! rule-breaker test backend): of many concurrent publishes to different nodes exactly one wins,
//! the same node again is idempotent, an incompatible republish is ALREADY_EXISTS, unpublish is
//! idempotent (an empty node detaches all), a live migration gets two nodes for its window and
//! no third, and a host killed with SIGKILL and restarted on the same state fences as before.

use std::collections::HashMap;
use std::time::Duration;

use modcsi::proto::volume_capability::access_mode::Mode;
use modcsi::proto::*;
use modcsi_tests::process::{ServeProcess, modcsi_binary};
use modcsi_tests::{CreateVolume, RULE_BREAKER, TestHost, requests};
use tonic::Code;

fn publish(v: &Volume, node: &str, capability: VolumeCapability) -> ControllerPublishVolumeRequest {
    ControllerPublishVolumeRequest {
        volume_id: v.volume_id.clone(),
        node_id: node.into(),
        volume_capability: Some(capability),
        volume_context: v.volume_context.clone(),
        ..Default::default()
    }
}

fn unpublish(v: &Volume, node: &str) -> ControllerUnpublishVolumeRequest {
    ControllerUnpublishVolumeRequest {
        volume_id: v.volume_id.clone(),
        node_id: node.into(),
        ..Default::default()
    }
}

fn rwo() -> VolumeCapability {
    requests::mount_capability(Mode::SingleNodeWriter)
}

#[tokio::test]
async fn a_published_volume_is_not_deleted() {
    let host = TestHost::start(RULE_BREAKER).await;
    let v = host.create("in-use").await;
    let mut c = host.client.controller.clone();
    c.controller_publish_volume(publish(&v, "node-a", rwo()))
        .await
        .unwrap();
    let err = c
        .delete_volume(requests::delete(&v.volume_id))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(err.message().contains("node-a"), "{}", err.message());
    c.controller_unpublish_volume(ControllerUnpublishVolumeRequest {
        volume_id: v.volume_id.clone(),
        node_id: "node-a".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    c.delete_volume(requests::delete(&v.volume_id))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_failed_unpublish_keeps_the_holder() {
    let host = TestHost::start(RULE_BREAKER).await;
    let v = host.create("stuck").await;
    let mut c = host.client.controller.clone();
    c.controller_publish_volume(publish(&v, "node-a", rwo()))
        .await
        .unwrap();
    let err = c
        .controller_unpublish_volume(ControllerUnpublishVolumeRequest {
            volume_id: v.volume_id.clone(),
            node_id: "node-a".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    // node-a may still be writing: node-b must wait for a detach that succeeds.
    let err = c
        .controller_publish_volume(publish(&v, "node-b", rwo()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(err.message().contains("node-a"), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_200_concurrent_publishes_to_200_nodes_exactly_one_wins() {
    let host = TestHost::start(RULE_BREAKER).await;
    let v = host.create("contended").await;
    let calls: Vec<_> = (0..200)
        .map(|i| {
            let mut c = host.client.controller.clone();
            let request = publish(&v, &format!("node-{i:03}"), rwo());
            tokio::spawn(async move { c.controller_publish_volume(request).await })
        })
        .collect();
    let mut codes: HashMap<Code, usize> = HashMap::new();
    for call in calls {
        let code = match call.await.unwrap() {
            Ok(_) => Code::Ok,
            Err(e) => {
                if e.code() == Code::FailedPrecondition {
                    assert!(
                        e.message().contains("is attached to node node-"),
                        "{}",
                        e.message()
                    );
                }
                e.code()
            }
        };
        *codes.entry(code).or_default() += 1;
    }
    assert_eq!(codes.get(&Code::Ok), Some(&1), "{codes:?}");
    assert_eq!(
        codes.get(&Code::FailedPrecondition),
        Some(&199),
        "{codes:?}"
    );
    assert_eq!(
        host.controller.fencing().nodes(&v.volume_id).unwrap().len(),
        1
    );
}

#[tokio::test]
async fn the_same_node_is_idempotent_and_another_waits_for_unpublish() {
    let host = TestHost::start(RULE_BREAKER).await;
    let v = host.create("rwo").await;
    let mut c = host.client.controller.clone();
    for _ in 0..2 {
        c.controller_publish_volume(publish(&v, "node-a", rwo()))
            .await
            .unwrap();
    }
    let mut readonly = publish(&v, "node-a", rwo());
    readonly.readonly = true;
    let err = c.controller_publish_volume(readonly).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{}", err.message());
    let err = c
        .controller_publish_volume(publish(&v, "node-b", rwo()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains(&v.volume_id) && err.message().contains("node-a"),
        "names the volume and the holder: {}",
        err.message()
    );
    for _ in 0..2 {
        c.controller_unpublish_volume(unpublish(&v, "node-a"))
            .await
            .unwrap();
    }
    c.controller_publish_volume(publish(&v, "node-b", rwo()))
        .await
        .unwrap();
    // An empty node id detaches the volume from every node.
    c.controller_unpublish_volume(unpublish(&v, ""))
        .await
        .unwrap();
    c.controller_publish_volume(publish(&v, "node-c", rwo()))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_live_migration_gets_two_nodes_for_its_window_and_no_third() {
    let host = TestHost::start(RULE_BREAKER).await;
    let mut v = host.create("vm-disk").await;
    v.volume_context
        .insert("migrationTimeoutSeconds".into(), "1".into());
    let mut c = host.client.controller.clone();
    let block = VolumeCapability {
        access_type: Some(volume_capability::AccessType::Block(
            volume_capability::BlockVolume {},
        )),
        access_mode: Some(volume_capability::AccessMode {
            mode: Mode::MultiNodeMultiWriter as i32,
        }),
    };
    for node in ["source", "target"] {
        c.controller_publish_volume(publish(&v, node, block.clone()))
            .await
            .unwrap();
    }
    let err = c
        .controller_publish_volume(publish(&v, "third", block.clone()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    // The window passes with both nodes still attached: the target is refused from then on.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let err = c
        .controller_publish_volume(publish(&v, "target", block.clone()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("window"), "{}", err.message());
    // The migration completes: the source lets go, the target carries on alone.
    c.controller_unpublish_volume(unpublish(&v, "source"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_host_killed_and_restarted_fences_as_before() {
    let root = tempfile::tempdir().unwrap();
    let mut first = ServeProcess::start(&modcsi_binary(), RULE_BREAKER, root.path()).await;
    let mut c = first.client.controller.clone();
    let v = c.create("kept").await;
    c.controller_publish_volume(publish(&v, "node-a", rwo()))
        .await
        .unwrap();
    first.kill();
    let second = ServeProcess::start(&modcsi_binary(), RULE_BREAKER, root.path()).await;
    let mut c = second.client.controller.clone();
    let err = c
        .controller_publish_volume(publish(&v, "node-b", rwo()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(err.message().contains("node-a"), "{}", err.message());
    c.controller_publish_volume(publish(&v, "node-a", rwo()))
        .await
        .unwrap();
}
