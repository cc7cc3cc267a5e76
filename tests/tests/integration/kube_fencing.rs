//! Fencing with Kubernetes as the source of truth, against a real kube-apiserver, the host
//! holding only the rights deploy/kubernetes/rbac.yaml grants: of 200 concurrent publishes from
//! 200 nodes exactly one wins and the losers' claim gets an Event; the record is rebuilt from
//! VolumeAttachments after a SIGKILL; a holder whose Node was deleted is cleared (on publish,
//! and by the reconciler); every controller replica follows attachments another made; an
//! unknown node is NOT_FOUND; nodes a backend names by its own ids are found and fenced by
//! them; and with the API server down, a publish is refused rather than guessed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, PersistentVolume};
use kube::Api;
use kube::api::ListParams;
use modcsi::proto::volume_capability::access_mode::Mode;
use modcsi::proto::*;
use modcsi_tests::kube_api::KubeApi;
use modcsi_tests::kube_api::objects::{self, DRIVER};
use modcsi_tests::process::{ServeProcess, modcsi_binary};
use modcsi_tests::{CreateVolume, RULE_BREAKER, TestHost, requests};
use tokio::task::JoinSet;
use tonic::Code;

fn publish(volume: &str, node: &str) -> ControllerPublishVolumeRequest {
    ControllerPublishVolumeRequest {
        volume_id: volume.into(),
        node_id: node.into(),
        volume_capability: Some(requests::mount_capability(Mode::SingleNodeWriter)),
        ..Default::default()
    }
}

/// A controller host with the rights deploy/kubernetes/rbac.yaml grants (the API server must
/// come from [`KubeApi::start_deployed`]).
async fn host(api: &KubeApi, adjust: impl FnOnce(&mut modcsi::serve::ServeConfig)) -> TestHost {
    let kubeconfig = api.controller_kubeconfig();
    TestHost::start_with(RULE_BREAKER, |c| {
        c.driver_name = DRIVER.into();
        c.cluster.kubeconfig = Some(kubeconfig);
        adjust(c);
    })
    .await
}

/// A `modcsi serve --mode controller` process in `root` with the deployed controller's rights.
async fn controller_process(api: &KubeApi, root: &std::path::Path) -> ServeProcess {
    let kubeconfig = api.controller_kubeconfig();
    let flags = [
        "--node-id",
        "controller",
        "--mode",
        "controller",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
    ];
    ServeProcess::start_with(&modcsi_binary(), RULE_BREAKER, root, &flags).await
}

async fn add_nodes(client: &kube::Client, names: impl IntoIterator<Item = String>) {
    let mut set = JoinSet::new();
    for name in names {
        let client = client.clone();
        set.spawn(async move { objects::add_node(&client, &name).await });
    }
    set.join_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_200_concurrent_publishes_exactly_one_wins_and_the_claim_hears_why() {
    let api = KubeApi::start_deployed().await;
    let client = api.client().await;
    add_nodes(&client, (0..200).map(|i| format!("node-{i:03}"))).await;
    let host = host(&api, |_| {}).await;
    let volume = host.create("contended").await.volume_id;
    objects::add_pv(&client, "pv-contended", &volume, "ReadWriteOnce", "data").await;
    let mut calls = JoinSet::new();
    for i in 0..200 {
        let mut c = host.client.controller.clone();
        let request = publish(&volume, &format!("node-{i:03}"));
        calls.spawn(async move { c.controller_publish_volume(request).await });
    }
    let mut codes: HashMap<Code, usize> = HashMap::new();
    for result in calls.join_all().await {
        *codes
            .entry(result.map_or_else(|e| e.code(), |_| Code::Ok))
            .or_default() += 1;
    }
    assert_eq!(codes.get(&Code::Ok), Some(&1), "{codes:?}");
    assert_eq!(
        codes.get(&Code::FailedPrecondition),
        Some(&199),
        "{codes:?}"
    );
    let holder = host.controller.fencing().nodes(&volume).unwrap();
    assert_eq!(holder.len(), 1);
    // The PV names the holder for people (written in the background).
    let pvs = Api::<PersistentVolume>::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pv = pvs.get("pv-contended").await.unwrap();
        let noted = pv.metadata.annotations.unwrap_or_default();
        if noted.get("modcsi.io/attached-nodes") == Some(&holder[0]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the PV does not name {}",
            holder[0]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The claim says why its pod cannot start (Events are posted in the background).
    let message = claim_event(&client, "AttachmentConflict", "data").await;
    assert!(message.contains(&volume), "{message}");
}

/// The message of the Event of `reason` on claim `default/<claim>`, once there is one.
async fn claim_event(client: &kube::Client, reason: &str, claim: &str) -> String {
    let events = Api::<Event>::namespaced(client.clone(), "default");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let list = events.list(&ListParams::default()).await.unwrap();
        let found = list.items.into_iter().find(|e| {
            e.reason.as_deref() == Some(reason) && e.involved_object.name.as_deref() == Some(claim)
        });
        if let Some(e) = found {
            return e.message.unwrap_or_default();
        }
        assert!(Instant::now() < deadline, "no {reason} event on {claim}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_the_storage_refuses_is_told_on_the_claim() {
    let api = KubeApi::start_deployed().await;
    let client = api.client().await;
    add_nodes(&client, ["node-a".into()]).await;
    let host = host(&api, |_| {}).await;
    let volume = host.create("unpublishable").await.volume_id;
    objects::add_pv(&client, "pv-refused", &volume, "ReadWriteOnce", "refused").await;
    let err = host
        .client
        .controller
        .clone()
        .controller_publish_volume(publish(&volume, "node-a"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    let message = claim_event(&client, "AttachFailed", "refused").await;
    assert!(
        message.contains(&volume) && message.contains("the storage refused the export"),
        "{message}"
    );
}

#[tokio::test]
async fn a_restarted_host_rebuilds_attachments_from_volume_attachments() {
    let api = KubeApi::start_deployed().await;
    let client = api.client().await;
    add_nodes(&client, ["node-a".into(), "node-b".into()]).await;
    let root = tempfile::tempdir().unwrap();
    let mut first = controller_process(&api, root.path()).await;
    let mut c = first.client.controller.clone();
    let volume = c.create("kept").await.volume_id;
    objects::add_pv(&client, "pv-kept", &volume, "ReadWriteOnce", "kept").await;
    c.controller_publish_volume(publish(&volume, "node-a"))
        .await
        .unwrap();
    // The attacher records the publish; another driver's attachment of the same PV to node-b
    // is not this driver's business.
    objects::add_attachment(&client, DRIVER, "pv-kept", "node-a", true).await;
    objects::add_attachment(&client, "other.csi.io", "pv-kept", "node-b", true).await;
    first.kill();
    // The embedded store is not the record with Kubernetes: losing it changes nothing.
    std::fs::remove_dir_all(root.path().join("state")).unwrap();
    let second = controller_process(&api, root.path()).await;
    let mut c = second.client.controller.clone();
    let err = c
        .controller_publish_volume(publish(&volume, "node-b"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(err.message().contains("node-a"), "{}", err.message());
    // The holder publishing again is the same answer, whatever its capability was.
    c.controller_publish_volume(publish(&volume, "node-a"))
        .await
        .unwrap();
}

/// A backend may give nodes ids of their own (Emma: the VM id); kubelet records them in the
/// CSINodes. The host finds such a node by its id and reads the VolumeAttachments, which name
/// Kubernetes nodes, in those ids.
#[tokio::test]
async fn nodes_with_a_backends_own_ids_are_found_and_fenced_by_them() {
    let api = KubeApi::start_deployed().await;
    let client = api.client().await;
    add_nodes(&client, ["vm-a".into(), "vm-b".into()]).await;
    objects::add_csinode(&client, "vm-a", DRIVER, "101").await;
    objects::add_csinode(&client, "vm-b", DRIVER, "102").await;
    let root = tempfile::tempdir().unwrap();
    let mut first = controller_process(&api, root.path()).await;
    let mut c = first.client.controller.clone();
    let err = c
        .controller_publish_volume(publish("any", "103"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{}", err.message());
    let volume = c.create("by-id").await.volume_id;
    objects::add_pv(&client, "pv-by-id", &volume, "ReadWriteOnce", "by-id").await;
    c.controller_publish_volume(publish(&volume, "101"))
        .await
        .unwrap();
    objects::add_attachment(&client, DRIVER, "pv-by-id", "vm-a", true).await;
    first.kill();
    // Rebuilt from the VolumeAttachment of vm-a: held by 101, so 102 is refused.
    let second = controller_process(&api, root.path()).await;
    let mut c = second.client.controller.clone();
    let err = c
        .controller_publish_volume(publish(&volume, "102"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(err.message().contains("101"), "{}", err.message());
    c.controller_publish_volume(publish(&volume, "101"))
        .await
        .unwrap();
}

#[tokio::test]
async fn every_controller_replica_follows_the_attachments_another_made() {
    let api = KubeApi::start_deployed().await;
    let client = api.client().await;
    add_nodes(&client, ["node-a".into(), "node-b".into()]).await;
    // Two replicas, both started before anything was attached; the attacher talks to one.
    let (leader, standby) = (host(&api, |_| {}).await, host(&api, |_| {}).await);
    let volume = leader.create("replicated").await.volume_id;
    objects::add_pv(
        &client,
        "pv-replicated",
        &volume,
        "ReadWriteOnce",
        "replicated",
    )
    .await;
    leader
        .client
        .controller
        .clone()
        .controller_publish_volume(publish(&volume, "node-a"))
        .await
        .unwrap();
    objects::add_attachment(&client, DRIVER, "pv-replicated", "node-a", true).await;
    let follows = async |nodes: &[&str]| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while standby.controller.fencing().nodes(&volume).unwrap() != nodes {
            assert!(
                Instant::now() < deadline,
                "the standby does not see {nodes:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    follows(&["node-a"]).await;
    // Leadership moves: the standby refuses what the leader would have refused.
    let mut c = standby.client.controller.clone();
    let err = c
        .controller_publish_volume(publish(&volume, "node-b"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    // The attacher detaches through the leader, then deletes the attachment.
    leader
        .client
        .controller
        .clone()
        .controller_unpublish_volume(ControllerUnpublishVolumeRequest {
            volume_id: volume.clone(),
            node_id: "node-a".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    objects::delete_attachment(&client, "pv-replicated", "node-a").await;
    follows(&[]).await;
    c.controller_publish_volume(publish(&volume, "node-b"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_deleted_node_lets_go_of_its_volumes_and_unknown_nodes_are_not_found() {
    let api = KubeApi::start_deployed().await;
    let client = api.client().await;
    add_nodes(&client, ["gone".into(), "new".into(), "other".into()]).await;
    let host = host(&api, |c| {
        c.cluster.reconcile_interval = Duration::from_millis(200);
        c.cluster.attachment_grace = Duration::ZERO;
    })
    .await;
    let mut c = host.client.controller.clone();
    let err = c
        .controller_publish_volume(publish("any-volume", "nowhere"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{}", err.message());
    assert!(err.message().contains("nowhere"), "{}", err.message());

    let held = host.create("held").await.volume_id;
    let swept = host.create("swept").await.volume_id;
    for volume in [&held, &swept] {
        c.controller_publish_volume(publish(volume, "gone"))
            .await
            .unwrap();
    }
    let err = c
        .controller_publish_volume(publish(&held, "new"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    objects::delete_node(&client, "gone").await;
    // On publish: the holder is gone, so its attachment is cleared and the publish proceeds.
    c.controller_publish_volume(publish(&held, "new"))
        .await
        .unwrap();
    assert_eq!(host.controller.fencing().nodes(&held).unwrap(), ["new"]);
    // In the background: the reconciler clears the other volume without being asked.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !host.controller.fencing().nodes(&swept).unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the reconciler did not clear it");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.controller_publish_volume(publish(&swept, "other"))
        .await
        .unwrap();
}

#[tokio::test]
async fn with_the_api_server_down_a_publish_is_refused_not_guessed() {
    let mut api = KubeApi::start_deployed().await;
    let client = api.client().await;
    add_nodes(&client, ["node-a".into(), "node-b".into()]).await;
    let host = host(&api, |_| {}).await;
    let volume = host.create("outage").await.volume_id;
    let mut c = host.client.controller.clone();
    c.controller_publish_volume(publish(&volume, "node-a"))
        .await
        .unwrap();
    api.stop_apiserver();
    for node in ["node-a", "node-b"] {
        let err = c
            .controller_publish_volume(publish(&volume, node))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{node}: {}", err.message());
        assert!(err.message().contains(&volume), "{}", err.message());
    }
    assert_eq!(
        host.controller.fencing().nodes(&volume).unwrap(),
        ["node-a"]
    );
    api.start_apiserver().await;
    c.controller_publish_volume(publish(&volume, "node-a"))
        .await
        .unwrap();
    let err = c
        .controller_publish_volume(publish(&volume, "node-b"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
}
