//! The state store kept in the cluster: the same contract as the embedded store, and state that
//! every process of the driver shares: a controller that lost its disk still knows the volumes
//! it created, and what a node process said about itself reaches the controller process.

use modcsi::kube::{Cluster, KubeStore};
use modcsi::proto::volume_capability::access_mode::Mode;
use modcsi::proto::*;
use modcsi::state::{EmbeddedStore, MemoryStore};
use modcsi_tests::kube_api::{KubeApi, objects};
use modcsi_tests::process::{ServeProcess, cluster_flags, modcsi_binary};
use modcsi_tests::{RULE_BREAKER, requests, store_contract};
use tonic::Code;

#[tokio::test]
async fn every_store_keeps_the_same_contract() {
    let dir = tempfile::tempdir().unwrap();
    store_contract::check(&EmbeddedStore::open(&dir.path().join("s.redb")).unwrap());
    store_contract::check(&MemoryStore::default());
    let api = KubeApi::start().await;
    let cluster = Cluster::connect(Some(&api.kubeconfig()), Some("default".into()), "a.csi.io")
        .await
        .unwrap()
        .unwrap();
    store_contract::check(&KubeStore::new(&cluster).unwrap());
    // Another driver in the same namespace has a store of its own.
    let cluster = Cluster::connect(Some(&api.kubeconfig()), Some("default".into()), "b.csi.io")
        .await
        .unwrap()
        .unwrap();
    store_contract::check(&KubeStore::new(&cluster).unwrap());
}

#[tokio::test]
async fn processes_of_one_driver_share_state_through_the_cluster() {
    // Each process has the rights deploy/kubernetes/rbac.yaml grants its component.
    let api = KubeApi::start_deployed().await;
    let client = api.client().await;
    objects::add_node(&client, "n1").await;
    let (kubeconfig, node_kubeconfig) = (api.controller_kubeconfig(), api.node_kubeconfig());
    let (kubeconfig, node_kubeconfig) = (
        kubeconfig.to_str().unwrap(),
        node_kubeconfig.to_str().unwrap(),
    );
    let (controller_root, node_root) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let controller = start(
        controller_root.path(),
        "controller",
        "controller",
        kubeconfig,
    )
    .await;
    let mut c = controller.client.controller.clone();
    c.create_volume(requests::create("kept")).await.unwrap();
    // The controller is replaced (stopped, which writes what its calls answered) on another
    // machine without its disk: the cluster still knows the volume and its size.
    drop(controller);
    std::fs::remove_dir_all(controller_root.path().join("state")).unwrap();
    let controller = start(
        controller_root.path(),
        "controller",
        "controller",
        kubeconfig,
    )
    .await;
    let mut c = controller.client.controller.clone();
    let mut bigger = requests::create("kept");
    bigger.capacity_range = Some(CapacityRange {
        required_bytes: 5 << 30,
        limit_bytes: 0,
    });
    let err = c.create_volume(bigger).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{}", err.message());

    // A node process says who it is; the controller process publishes with what it said.
    let node = start(node_root.path(), "n1", "node", node_kubeconfig).await;
    let info = node
        .client
        .node
        .clone()
        .node_get_info(NodeGetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.node_id, "n1");
    let published = c
        .controller_publish_volume(ControllerPublishVolumeRequest {
            volume_id: "hostile-kept".into(),
            node_id: "n1".into(),
            volume_capability: Some(requests::mount_capability(Mode::SingleNodeWriter)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        published.publish_context.get("hostnqn").map(String::as_str),
        Some("nqn.2014-08.org.nvmexpress:uuid:test"),
        "{:?}",
        published.publish_context
    );
}

async fn start(root: &std::path::Path, node: &str, mode: &str, kubeconfig: &str) -> ServeProcess {
    let flags = cluster_flags(node, mode, kubeconfig);
    ServeProcess::start_with(&modcsi_binary(), RULE_BREAKER, root, &flags).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_api_server_holds_up_only_the_calls_that_need_it() {
    use modcsi_tests::stall_proxy::StallProxy;
    let api = KubeApi::start_deployed().await;
    let proxy = StallProxy::start(api.port()).await;
    // The controller's credentials, through the proxy.
    let kubeconfig = std::fs::read_to_string(api.controller_kubeconfig())
        .unwrap()
        .replace(
            &format!("127.0.0.1:{}", api.port()),
            &format!("127.0.0.1:{}", proxy.port),
        );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, kubeconfig).unwrap();
    let host = modcsi_tests::TestHost::start_with(modcsi_tests::NODE_LOCAL_CACHE, |c| {
        c.cluster.kubeconfig = Some(path);
        c.cluster.namespace = Some("default".into());
    })
    .await;
    proxy.stall(true);
    // More CreateVolumes than the runtime has workers, each waiting on the shared store.
    let creates: Vec<_> = (0..4)
        .map(|i| {
            let mut c = host.client.controller.clone();
            tokio::spawn(async move {
                c.create_volume(modcsi_tests::requests::create(&format!("stalled-{i}")))
                    .await
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    host.client
        .identity
        .clone()
        .probe(modcsi::proto::ProbeRequest {})
        .await
        .unwrap();
    assert!(
        creates.iter().all(|c| !c.is_finished()),
        "Probe answered while every create still waited on the API server"
    );
    proxy.stall(false);
    for create in creates {
        create.await.unwrap().unwrap();
    }
}
