//! Node-local cleanup: a deleted volume's directory goes from every node that held it. With
//! Kubernetes, three node processes and a controller process share a real API server: the
//! directories on two nodes go and the record with them; a node deleted mid-cleanup is
//! decommissioned and the record completes; a record written in the public node-local-cache
//! driver's format is honoured; a storm of create/delete of the same names leaves nothing
//! behind. Standalone, the same records live in the embedded store.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Event};
use kube::Api;
use kube::api::{ListParams, PostParams};
use modcsi::client::CsiClient;
use modcsi::proto::Volume;
use modcsi_tests::kube_api::{KubeApi, objects};
use modcsi_tests::process::{ServeProcess, cluster_flags, modcsi_binary};
use modcsi_tests::{CreateVolume, NODE_LOCAL_CACHE, TestHost, requests};
use tonic::Code;

const LABEL: &str = objects::RECORD_LABEL;

async fn wait_until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn standalone_the_record_lives_in_the_embedded_store_until_the_node_has_cleaned_up() {
    let host = TestHost::start(NODE_LOCAL_CACHE).await;
    let mut c = host.client.clone();
    let volume = c.controller.create("standalone").await;
    let target = host.target("t");
    c.node
        .node_publish_volume(requests::publish(&volume, &target, false))
        .await
        .unwrap();
    let record = host
        .state
        .get("host/cleanup", &volume.volume_id)
        .unwrap()
        .expect("the publish registered the node");
    let status: serde_json::Value = serde_json::from_slice(&record.value).unwrap();
    assert_eq!(
        status["nodes_with_volume"],
        serde_json::json!(["test-node"])
    );
    c.node
        .node_unpublish_volume(requests::unpublish(&volume.volume_id, &target))
        .await
        .unwrap();
    c.controller
        .delete_volume(requests::delete(&volume.volume_id))
        .await
        .unwrap();
    let state = host.state.clone();
    let id = volume.volume_id.clone();
    wait_until("the record is gone", async || {
        state.get("host/cleanup", &id).unwrap().is_none()
    })
    .await;
    assert!(!host.local_dir(&volume.volume_id).exists());
}

/// A node plugin process with its own node-local root.
struct NodeHost {
    name: String,
    /// `node`, or `all` (the controller too).
    mode: &'static str,
    process: ServeProcess,
    root: tempfile::TempDir,
    dirs: PathBuf,
}

fn flags<'a>(node: &'a str, mode: &'a str, kubeconfig: &'a str) -> Vec<&'a str> {
    // The public driver's name: it takes over that driver's records.
    let mut flags = vec!["--driver-name", "node-local-cache.csi.io"];
    flags.extend(cluster_flags(node, mode, kubeconfig));
    flags.extend(["--reconcile-interval", "1s"]);
    flags
}

impl NodeHost {
    async fn start(name: &str, mode: &'static str, kubeconfig: &str) -> Self {
        let root = tempfile::tempdir().unwrap();
        let dirs = std::fs::canonicalize(root.path()).unwrap().join("nlc");
        let process = Self::spawn(name, mode, kubeconfig, root.path(), &dirs).await;
        Self {
            name: name.into(),
            mode,
            process,
            root,
            dirs,
        }
    }

    async fn spawn(
        name: &str,
        mode: &str,
        kubeconfig: &str,
        root: &Path,
        dirs: &Path,
    ) -> ServeProcess {
        let mut flags = flags(name, mode, kubeconfig);
        flags.extend(["--local-dir-root", dirs.to_str().unwrap()]);
        ServeProcess::start_with(&modcsi_binary(), NODE_LOCAL_CACHE, root, &flags).await
    }

    /// Stops the process and starts it again on the same state.
    async fn restart(&mut self, kubeconfig: &str) {
        self.process.kill();
        self.process = Self::spawn(
            &self.name,
            self.mode,
            kubeconfig,
            self.root.path(),
            &self.dirs,
        )
        .await;
    }

    fn dir(&self, volume: &str) -> PathBuf {
        self.dirs.join(volume)
    }

    /// Publishes, writes a file, unpublishes: the directory stays on the node.
    async fn use_volume(&self, volume: &Volume) {
        let target = self
            .process
            .targets()
            .join(format!("t-{}", volume.volume_id));
        let target = target.to_str().unwrap();
        let mut node = self.process.client.node.clone();
        node.node_publish_volume(requests::publish(volume, target, false))
            .await
            .unwrap();
        std::fs::write(Path::new(target).join("data"), self.name.as_bytes()).unwrap();
        node.node_unpublish_volume(requests::unpublish(&volume.volume_id, target))
            .await
            .unwrap();
        assert!(self.dir(&volume.volume_id).join("data").is_file());
    }
}

struct Cluster {
    api: KubeApi,
    client: kube::Client,
    controller: ServeProcess,
    controller_root: tempfile::TempDir,
    nodes: Vec<NodeHost>,
}

impl Cluster {
    async fn start() -> Self {
        // The processes have the rights deploy/kubernetes/rbac.yaml grants, no more.
        let api = KubeApi::start_deployed().await;
        let client = api.client().await;
        let kubeconfig = api.node_kubeconfig().to_str().unwrap().to_owned();
        let mut nodes = Vec::new();
        for name in ["n1", "n2", "n3"] {
            objects::add_node(&client, name).await;
            nodes.push(NodeHost::start(name, "node", &kubeconfig).await);
        }
        let root = tempfile::tempdir().unwrap();
        let controller = Self::spawn_controller(&api, root.path()).await;
        Self {
            api,
            client,
            controller,
            controller_root: root,
            nodes,
        }
    }

    async fn spawn_controller(api: &KubeApi, root: &Path) -> ServeProcess {
        let kubeconfig = api.controller_kubeconfig().to_str().unwrap().to_owned();
        let flags = flags("controller", "controller", &kubeconfig);
        ServeProcess::start_with(&modcsi_binary(), NODE_LOCAL_CACHE, root, &flags).await
    }

    /// Stops every process and starts it again on its state.
    async fn restart(&mut self) {
        let kubeconfig = self.api.node_kubeconfig().to_str().unwrap().to_owned();
        for node in &mut self.nodes {
            node.restart(&kubeconfig).await;
        }
        self.controller.kill();
        self.controller = Self::spawn_controller(&self.api, self.controller_root.path()).await;
    }

    fn controller(&self) -> CsiClient {
        self.controller.client.clone()
    }

    async fn create(&self, name: &str) -> Result<Volume, tonic::Status> {
        self.controller()
            .controller
            .create_volume(requests::create(name))
            .await
            .map(|r| r.into_inner().volume.unwrap())
    }

    async fn delete(&self, volume: &str) {
        self.controller()
            .controller
            .delete_volume(requests::delete(volume))
            .await
            .unwrap();
    }

    async fn add_record(&self, record: &ConfigMap) {
        self.config_maps()
            .create(&PostParams::default(), record)
            .await
            .unwrap();
    }

    fn config_maps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), "default")
    }

    async fn record(&self, volume: &str) -> Option<serde_json::Value> {
        let cm = self
            .config_maps()
            .get_opt(&format!("nlc-vol-{volume}"))
            .await
            .unwrap()?;
        assert_eq!(
            cm.metadata.labels.unwrap_or_default().get(LABEL),
            Some(&volume.to_owned())
        );
        Some(serde_json::from_str(&cm.data.unwrap()["status"]).unwrap())
    }

    async fn records(&self) -> usize {
        self.config_maps()
            .list(&ListParams::default().labels(LABEL))
            .await
            .unwrap()
            .items
            .len()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_volume_leaves_every_node_and_a_gone_node_is_decommissioned() {
    let mut cluster = Cluster::start().await;
    // Published on two nodes, deleted: both directories go, then the record.
    let volume = cluster.create("shared-cache").await.unwrap();
    let id = volume.volume_id.clone();
    for node in &cluster.nodes[..2] {
        node.use_volume(&volume).await;
    }
    let status = cluster
        .record(&id)
        .await
        .expect("the publishes made a record");
    assert_eq!(status["volume_id"], serde_json::json!(id));
    assert_eq!(status["nodes_with_volume"], serde_json::json!(["n1", "n2"]));
    assert!(status["created_at"].is_string());
    cluster.delete(&id).await;
    wait_until("the record is gone", async || {
        cluster.record(&id).await.is_none()
    })
    .await;
    for node in &cluster.nodes[..2] {
        assert!(!node.dir(&id).exists(), "{} still has {id}", node.name);
    }

    // n3 goes away mid-cleanup: n1 cleans up, the record waits for n3...
    let volume = cluster.create("orphaned").await.unwrap();
    let id = volume.volume_id.clone();
    cluster.nodes[0].use_volume(&volume).await;
    cluster.nodes[2].use_volume(&volume).await;
    cluster.nodes[2].process.kill();
    cluster.delete(&id).await;
    wait_until("n1 has cleaned up", async || {
        cluster
            .record(&id)
            .await
            .is_some_and(|s| s["nodes_completed"] == serde_json::json!(["n1"]))
    })
    .await;
    assert!(!cluster.nodes[0].dir(&id).exists());
    // ...and the name cannot be created again meanwhile: its directory on n3 is not yet gone.
    let err = cluster.create("orphaned").await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert!(err.message().contains("n3"), "{}", err.message());
    // The cluster deletes the node: it is decommissioned and the record completes.
    objects::delete_node(&cluster.client, "n3").await;
    wait_until("the record is gone", async || {
        cluster.record(&id).await.is_none()
    })
    .await;
    cluster.create("orphaned").await.unwrap();
}

/// A node that is the controller too answers DeleteVolume once its own directory is gone and
/// changes the record after (the API write waits on etcd), even with the API server down; a note
/// in its own store says what is still to be done, and until it is done the volume's name and id
/// are refused. Killed before doing it, it does it when it starts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_is_the_controller_too_finishes_a_deletion_after_a_crash() {
    let mut api = KubeApi::start_deployed().await;
    let client = api.client().await;
    objects::add_node(&client, "solo").await;
    let records: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    // The volume's record: None when gone, else whether its cleanup was requested.
    let requested = async |id: &str| {
        let cm = records.get_opt(&format!("nlc-vol-{id}")).await.unwrap()?;
        let status: serde_json::Value = serde_json::from_str(&cm.data.unwrap()["status"]).unwrap();
        Some(!status["cleanup_requested_at"].is_null())
    };
    let record = async |id: &str| requested(id).await.is_some();
    let uid = async |id: &str| {
        let cm = records.get(&format!("nlc-vol-{id}")).await.unwrap();
        cm.metadata.uid.unwrap()
    };
    let kubeconfig = api.controller_kubeconfig().to_str().unwrap().to_owned();
    let mut host = NodeHost::start("solo", "all", &kubeconfig).await;
    let create = async |host: &NodeHost, name: &str| {
        let mut controller = host.process.client.controller.clone();
        let volume = controller
            .create_volume(requests::create(name))
            .await
            .unwrap()
            .into_inner()
            .volume
            .unwrap();
        host.use_volume(&volume).await;
        volume
    };

    let id = create(&host, "answered").await.volume_id;
    assert!(record(&id).await, "the publish made a record");
    let mut controller = host.process.client.controller.clone();
    controller
        .delete_volume(requests::delete(&id))
        .await
        .unwrap();
    assert!(!host.dir(&id).exists(), "removed before the answer");
    wait_until("the record is gone", async || !record(&id).await).await;

    // The API server down: the delete still answers, the request waiting in the note. Until it
    // is made, the name cannot be created again nor the id published; another name can.
    let volume = create(&host, "outage").await;
    let id = volume.volume_id.clone();
    let outage = requests::create("outage");
    api.stop_apiserver();
    controller
        .delete_volume(requests::delete(&id))
        .await
        .unwrap();
    assert!(!host.dir(&id).exists());
    let refused = controller.create_volume(outage.clone()).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains(&id), "{refused:?}");
    assert!(refused.message().contains("being deleted"), "{refused:?}");
    let target = host.process.targets().join("t-outage");
    let refused = host
        .process
        .client
        .node
        .clone()
        .node_publish_volume(requests::publish(&volume, target.to_str().unwrap(), false))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("being deleted"), "{refused:?}");
    assert!(!target.exists() && !host.dir(&id).exists());
    controller
        .create_volume(requests::create("during-the-outage"))
        .await
        .unwrap();
    api.start_apiserver().await;
    wait_until("the noted request is made", async || !record(&id).await).await;
    wait_until("the name is free again", async || {
        controller.create_volume(outage.clone()).await.is_ok()
    })
    .await;

    // A directory that cannot be removed (a file in it immutable): the delete fails and leaves
    // no note, so the volume is not taken for one being deleted; removable again, it goes.
    let volume = create(&host, "stuck").await;
    let id = volume.volume_id.clone();
    let immutable = Immutable::set(&host.dir(&id).join("data"));
    let failed = controller
        .delete_volume(requests::delete(&id))
        .await
        .unwrap_err();
    assert!(failed.message().contains(&id), "{failed:?}");
    let mut node = host.process.client.node.clone();
    let target = host.process.targets().join("t-stuck");
    let target = target.to_str().unwrap();
    node.node_publish_volume(requests::publish(&volume, target, false))
        .await
        .unwrap();
    node.node_unpublish_volume(requests::unpublish(&id, target))
        .await
        .unwrap();
    assert_eq!(requested(&id).await, Some(false), "nothing was requested");
    drop(immutable);
    controller
        .delete_volume(requests::delete(&id))
        .await
        .unwrap();
    assert!(!host.dir(&id).exists());
    wait_until("the record is gone", async || !record(&id).await).await;

    // Killed while its directory went, after the note: the next start removes what is left of
    // the directory, then makes the request.
    let id = create(&host, "crashed").await.volume_id;
    host.process.kill();
    let note = |host: &NodeHost, id: &str| {
        use modcsi::state::{EmbeddedStore, StateStore};
        let store = EmbeddedStore::open(&host.root.path().join("state/state.redb")).unwrap();
        store.put("host/cleanup-deferred", id, b"", None).unwrap();
    };
    note(&host, &id);
    assert!(host.dir(&id).join("data").exists() && record(&id).await);
    host.restart(&kubeconfig).await;
    wait_until("the noted request is made", async || !record(&id).await).await;
    assert!(!host.dir(&id).exists(), "what was left is removed");

    // Killed before its directory went, the volume published again meanwhile (its delete could
    // not have answered OK): the next start drops the note and the volume stays as it was.
    let volume = create(&host, "in-use").await;
    let id = volume.volume_id.clone();
    let target = host.process.targets().join("t-in-use");
    let target = target.to_str().unwrap();
    let mut node = host.process.client.node.clone();
    node.node_publish_volume(requests::publish(&volume, target, false))
        .await
        .unwrap();
    let before = uid(&id).await;
    host.process.kill();
    note(&host, &id);
    host.restart(&kubeconfig).await;
    let mut node = host.process.client.node.clone();
    let again = host.process.targets().join("t-in-use-again");
    let again = again.to_str().unwrap();
    wait_until("the id publishes again", async || {
        node.node_publish_volume(requests::publish(&volume, again, false))
            .await
            .is_ok()
    })
    .await;
    assert!(host.dir(&id).join("data").is_file());
    assert_eq!(requested(&id).await, Some(false), "nothing was requested");
    assert_eq!(uid(&id).await, before, "the same record");
    for t in [target, again] {
        node.node_unpublish_volume(requests::unpublish(&id, t))
            .await
            .unwrap();
    }
}

/// Makes a file immutable (chattr +i) until dropped: nothing, root included, can remove it.
struct Immutable(PathBuf);

impl Immutable {
    fn set(path: &Path) -> Self {
        Self::chattr("+i", path);
        Self(path.to_owned())
    }

    fn chattr(flag: &str, path: &Path) {
        let status = std::process::Command::new("chattr")
            .arg(flag)
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success(), "chattr {flag} {}", path.display());
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        Self::chattr("-i", &self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_of_the_public_driver_is_honoured() {
    let mut cluster = Cluster::start().await;
    // A volume the public node-local-cache driver created on n1 and was asked to delete.
    let id = "nlc-0a1b2c3d-0000-5000-8000-000000000001";
    std::fs::create_dir_all(cluster.nodes[0].dir(id)).unwrap();
    std::fs::write(cluster.nodes[0].dir(id).join("cached"), b"x").unwrap();
    let status = serde_json::json!({
        "volume_id": id,
        "created_at": "2026-11-01T10:00:00Z",
        "cleanup_requested_at": "2026-11-02T10:00:00Z",
        "nodes_with_volume": ["n1"],
        "nodes_completed": [],
        "nodes_failed": [],
        "nodes_decommissioned": [],
    });
    cluster
        .add_record(&objects::cleanup_record(id, id, None, status))
        .await;
    // modcsi replaces the public driver: its processes start with the record already there (an
    // idle process starts its cleanup loop only for records it finds at start or writes itself).
    cluster.restart().await;
    wait_until("the record is gone", async || {
        cluster.record(id).await.is_none()
    })
    .await;
    assert!(!cluster.nodes[0].dir(id).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_creates_and_deletes_of_the_same_names_leaves_nothing_behind() {
    let cluster = Cluster::start().await;
    let names: Vec<String> = (0..4).map(|i| format!("storm-{i}")).collect();
    let mut tasks = tokio::task::JoinSet::new();
    let cluster = std::sync::Arc::new(cluster);
    for name in names {
        let cluster = cluster.clone();
        tasks.spawn(async move {
            for round in 0..3 {
                // A create refused while the previous round's directories are still going is
                // retried, as the provisioner would.
                let volume = loop {
                    match cluster.create(&name).await {
                        Ok(v) => break v,
                        Err(e) if e.code() == Code::Unavailable => {
                            tokio::time::sleep(Duration::from_millis(50)).await
                        }
                        Err(e) => panic!("{name} round {round}: {e}"),
                    }
                };
                for node in &cluster.nodes[..2] {
                    node.use_volume(&volume).await;
                }
                cluster.delete(&volume.volume_id).await;
            }
        });
    }
    tasks.join_all().await;
    wait_until("every record is gone", async || {
        cluster.records().await == 0
    })
    .await;
    for node in &cluster.nodes {
        let left: Vec<_> = std::fs::read_dir(&node.dirs)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "{} kept {left:?}", node.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_drivers_records_and_forged_records_remove_nothing() {
    let cluster = Cluster::start().await;
    let n1 = &cluster.nodes[0];
    let record = |name: &str, label: &str, body_id: &str, driver: Option<&str>| {
        let status = serde_json::json!({
            "volume_id": body_id,
            "created_at": "2026-11-01T10:00:00Z",
            "cleanup_requested_at": "2026-11-02T10:00:00Z",
            "nodes_with_volume": ["n1"],
        });
        objects::cleanup_record(name, label, driver, status)
    };
    let (theirs, victim, forged) = ("nlc-theirs-1", "nlc-victim-1", "nlc-forged-1");
    for id in [theirs, victim] {
        std::fs::create_dir_all(n1.dir(id)).unwrap();
        std::fs::write(n1.dir(id).join("data"), b"keep").unwrap();
    }
    for cm in [
        // Another driver's volume, in the same namespace.
        record(theirs, theirs, theirs, Some("rds.csi.srvlab.io")),
        // A record whose name and label say one volume and whose body another.
        record(forged, forged, victim, None),
    ] {
        cluster.add_record(&cm).await;
    }
    // A record n1 does act on, made after them: once it is gone, n1 has had its passes.
    let mine = cluster.create("mine").await.unwrap();
    n1.use_volume(&mine).await;
    cluster.delete(&mine.volume_id).await;
    wait_until("n1 has cleaned up its own volume", async || {
        cluster.record(&mine.volume_id).await.is_none()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for id in [theirs, victim] {
        assert!(n1.dir(id).join("data").is_file(), "{id} was removed");
    }
    let untouched = |cm: ConfigMap| -> serde_json::Value {
        serde_json::from_str(&cm.data.unwrap()["status"]).unwrap()
    };
    for name in [theirs, forged] {
        let cm = cluster
            .config_maps()
            .get(&format!("nlc-vol-{name}"))
            .await
            .unwrap();
        let status = untouched(cm);
        assert!(
            status.get("nodes_completed").is_none(),
            "{name} was reported on: {status}"
        );
    }
    // With the manifest's rights, a node plugin cannot delete a record (only the controller
    // removes completed ones).
    let kubeconfig = kube::config::Kubeconfig::read_from(cluster.api.node_kubeconfig()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let as_node: Api<ConfigMap> =
        Api::namespaced(kube::Client::try_from(config).unwrap(), "default");
    let refused = as_node
        .delete(&format!("nlc-vol-{theirs}"), &Default::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, kube::Error::Api(e) if e.code == 403),
        "{refused}"
    );
}

/// Waits for a Warning Event of `reason` on object `name` in the test namespace; its message.
async fn event(client: &kube::Client, reason: &str, name: &str) -> String {
    let events = Api::<Event>::namespaced(client.clone(), "default");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = events.list(&ListParams::default()).await.unwrap();
        if let Some(e) = list.items.iter().find(|e| {
            e.reason.as_deref() == Some(reason) && e.involved_object.name.as_deref() == Some(name)
        }) {
            assert_eq!(e.type_.as_deref(), Some("Warning"));
            return e.message.clone().unwrap_or_default();
        }
        assert!(Instant::now() < deadline, "no {reason} event on {name}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_publish_and_a_stuck_cleanup_are_told_in_events() {
    let mut cluster = Cluster::start().await;
    // A node's failure reaches the volume's claim, for `kubectl describe pvc`.
    let volume = cluster.create("told").await.unwrap();
    let driver = "node-local-cache.csi.io";
    objects::add_driver_pv(
        &cluster.client,
        driver,
        "pv-told",
        &volume.volume_id,
        "ReadWriteOnce",
        "claim-told",
    )
    .await;
    let outside = "/var/tmp/modcsi-not-under-the-kubelet-root";
    let refused = cluster.nodes[0]
        .process
        .client
        .node
        .clone()
        .node_publish_volume(requests::publish(&volume, outside, false))
        .await
        .unwrap_err();
    let message = event(&cluster.client, "PublishFailed", "claim-told").await;
    assert!(message.contains(&volume.volume_id), "{message}");
    assert!(
        message.contains(outside),
        "{message} / {}",
        refused.message()
    );

    // A deletion that has waited an hour on a node whose plugin never answers.
    objects::add_node(&cluster.client, "n9").await;
    let id = "nlc-0a1b2c3d-0000-5000-8000-00000000dead";
    let an_hour_ago =
        k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_hours(1);
    let status = serde_json::json!({
        "volume_id": id,
        "created_at": "2026-11-01T10:00:00Z",
        "cleanup_requested_at": an_hour_ago.to_string(),
        "nodes_with_volume": ["n9"],
    });
    cluster
        .add_record(&objects::cleanup_record(id, id, Some(driver), status))
        .await;
    // The controller finds it when it starts.
    cluster.restart().await;
    let message = event(&cluster.client, "CleanupStuck", &format!("nlc-vol-{id}")).await;
    assert!(
        message.contains("n9") && message.contains("60 min"),
        "{message}"
    );
}
