//! `just bench`: node-local-cache volume lifecycles (create → publish → unpublish → delete)
//! against a `modcsi serve` process through its socket, with 1 and 16 concurrent clients: the
//! rate, per-call latency percentiles, and the driver's CPU time per lifecycle read from outside
//! (/proc/<pid>/stat of the server process). Then block-volume lifecycles on a loop device
//! (stage → publish → unpublish → unstage), the RDS backend's calls through the fake RouterOS
//! over real SSH and what keeping the SSH connection saves, the Emma backend's lifecycle through
//! the fake Emma API over HTTPS and one HTTPS request from a component against a native client, what a backend call costs inside
//! the runtime, and a durable state-store write; `modcsi audit` of 1,000 PVs against a backend
//! with 1,000 volumes (wall time, API requests, peak RSS). Prints figures; asserts nothing about
//! them (only that each set-up is what it should be).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use modcsi::client::CsiClient;
use modcsi::fencing::Fencing;
use modcsi::kube::Cluster;
use modcsi::proto::volume_capability::{AccessMode, AccessType, MountVolume, access_mode::Mode};
use modcsi::proto::*;
use modcsi::runtime::{Backend, RuntimeOptions};
use modcsi::state::MemoryStore;
use modcsi_tests::kube_api::{KubeApi, objects};
use modcsi_tests::loop_disk::LoopDisk;
use modcsi_tests::process::{ServeProcess, cluster_flags};
use modcsi_tests::{
    CHECK_BREAKER, CreateVolume, NODE_LOCAL_CACHE, RULE_BREAKER, TestHost, component, requests,
};

const RUN_FOR: Duration = Duration::from_secs(3);
const CALLS: [&str; 4] = [
    "CreateVolume",
    "NodePublishVolume",
    "NodeUnpublishVolume",
    "DeleteVolume",
];

#[derive(Default)]
struct Samples(Vec<Vec<Duration>>);

impl Samples {
    /// Times `call` as sample `i`.
    async fn time<T>(&mut self, i: usize, call: impl std::future::Future<Output = T>) -> T {
        let t = Instant::now();
        let out = call.await;
        if self.0.len() <= i {
            self.0.resize(i + 1, Vec::new());
        }
        self.0[i].push(t.elapsed());
        out
    }

    fn print(all: &[Samples], names: &[&str]) {
        for (i, name) in names.iter().enumerate() {
            let mut merged: Vec<Duration> = all
                .iter()
                .flat_map(|s| s.0.get(i).into_iter().flatten().copied())
                .collect();
            merged.sort();
            println!(
                "  {name:<20} p50 {:>8}  p99 {:>8}",
                us(percentile(&merged, 0.5)),
                us(percentile(&merged, 0.99))
            );
        }
    }
}

async fn client_loop(
    mut csi: CsiClient,
    targets: PathBuf,
    client: usize,
    until: Instant,
) -> (u64, Samples) {
    let mut samples = Samples::default();
    let mut done = 0;
    while Instant::now() < until {
        let target = targets
            .join(format!("c{client}-{done}"))
            .display()
            .to_string();
        let create = requests::create(&format!("bench-{client}-{done}"));
        let volume = samples
            .time(0, csi.controller.create_volume(create))
            .await
            .expect("create")
            .into_inner()
            .volume
            .expect("volume");
        let publish = requests::publish(&volume, &target, false);
        samples
            .time(1, csi.node.node_publish_volume(publish))
            .await
            .expect("publish");
        let unpublish = requests::unpublish(&volume.volume_id, &target);
        samples
            .time(2, csi.node.node_unpublish_volume(unpublish))
            .await
            .expect("unpublish");
        let delete = requests::delete(&volume.volume_id);
        samples
            .time(3, csi.controller.delete_volume(delete))
            .await
            .expect("delete");
        done += 1;
    }
    (done, samples)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

async fn lifecycles(server: &ServeProcess, clients: usize) {
    let until = Instant::now() + RUN_FOR;
    let (started, cpu_before) = (Instant::now(), server.cpu());
    // One task per client, so clients run in parallel on both cores.
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let (csi, targets) = (server.client.clone(), server.targets());
            tokio::spawn(client_loop(csi, targets, client, until))
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("client task"));
    }
    let (elapsed, cpu) = (started.elapsed(), server.cpu() - cpu_before);
    let total: u64 = results.iter().map(|(n, _)| n).sum();
    println!(
        "\n{clients} client(s): {total} lifecycles in {:.2} s = {:.0} lifecycles/s; driver CPU {:.2} ms per lifecycle",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        cpu.as_secs_f64() * 1e3 / total as f64
    );
    let samples: Vec<Samples> = results.into_iter().map(|(_, s)| s).collect();
    Samples::print(&samples, &CALLS);
}

/// Stage → publish → unpublish → unstage of an ext4 volume on a loop device, repeatedly (the
/// first stage formats it).
async fn block_lifecycles() {
    let by_id = tempfile::tempdir().unwrap();
    let disk = LoopDisk::new(by_id.path(), "bench", 64);
    let dirs = by_id.path().to_owned();
    let host = TestHost::start_with(RULE_BREAKER, move |c| {
        c.devices.by_id = dirs;
        c.devices.allowed_disks.by_id_prefixes = vec!["bench".into()];
    })
    .await;
    let mut csi = host.client.clone();
    let volume = csi.controller.create("disk-bench").await;
    let (staging, target) = (host.target("staging"), host.target("published"));
    let capability = VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: "ext4".into(),
            ..Default::default()
        })),
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
    };
    let stage = NodeStageVolumeRequest {
        volume_id: volume.volume_id.clone(),
        staging_target_path: staging.clone(),
        volume_capability: Some(capability),
        volume_context: volume.volume_context.clone(),
        ..Default::default()
    };
    let mut publish = requests::publish(&volume, &target, false);
    publish.staging_target_path = staging.clone();
    let unstage = NodeUnstageVolumeRequest {
        volume_id: volume.volume_id.clone(),
        staging_target_path: staging.clone(),
    };
    let t = Instant::now();
    csi.node.node_stage_volume(stage.clone()).await.unwrap();
    let first = t.elapsed();
    csi.node.node_unstage_volume(unstage.clone()).await.unwrap();

    let (mut samples, mut done) = (Samples::default(), 0);
    let until = Instant::now() + RUN_FOR;
    while Instant::now() < until {
        samples
            .time(0, csi.node.node_stage_volume(stage.clone()))
            .await
            .unwrap();
        samples
            .time(1, csi.node.node_publish_volume(publish.clone()))
            .await
            .unwrap();
        let unpublish = requests::unpublish(&volume.volume_id, &target);
        samples
            .time(2, csi.node.node_unpublish_volume(unpublish))
            .await
            .unwrap();
        samples
            .time(3, csi.node.node_unstage_volume(unstage.clone()))
            .await
            .unwrap();
        done += 1;
    }
    println!(
        "\nblock volume (ext4 on {}): first stage with mkfs {}; then {done} lifecycles in {RUN_FOR:?} = {:.0}/s",
        disk.device,
        us(first),
        done as f64 / RUN_FOR.as_secs_f64()
    );
    Samples::print(
        &[samples],
        &[
            "NodeStageVolume",
            "NodePublishVolume",
            "NodeUnpublishVolume",
            "NodeUnstageVolume",
        ],
    );
}

async fn backend_overhead() {
    let dir = tempfile::tempdir().unwrap();
    let options = RuntimeOptions {
        cache_dir: dir.path().join("cache"),
        memory_limit: 64 << 20,
        call_timeout: Duration::from_secs(10),
        max_concurrent_calls: 8,
        config: Default::default(),
        store: None,
        node_addresses: std::sync::Arc::from([]),
    };
    let path = component(NODE_LOCAL_CACHE);
    let t = Instant::now();
    let _cold = Backend::load(&path, options.clone()).await.unwrap();
    let cold = t.elapsed();
    let t = Instant::now();
    let backend = Backend::load(&path, options).await.unwrap();
    let warm = t.elapsed();
    println!(
        "\nbackend load: {} compiling, {} from the precompiled cache ({:?})",
        us(cold),
        us(warm),
        backend.origin()
    );

    const N: u32 = 5000;
    let t = Instant::now();
    for _ in 0..N {
        backend.probe(None).await.unwrap();
    }
    let per_probe = t.elapsed() / N;
    let before = backend.timings();
    println!(
        "backend call (probe, a no-op in the component), {N} calls: {} per call end to end",
        us(per_probe)
    );
    println!(
        "  of which: instantiate {} + call into the component {} (mean over {} calls)",
        us(before.mean_instantiate),
        us(before.mean_call),
        before.calls
    );
}

/// One command over a kept SSH connection against one over a new connection each time.
async fn ssh_reuse() {
    use modcsi::runtime::capabilities::BackendConfig;
    let sshd = modcsi_tests::sshd::Sshd::start(None);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("b.toml");
    let trust = format!("known-hosts = \"{}\"", sshd.known_hosts().display());
    std::fs::write(&file, sshd.target_config("t", &trust)).unwrap();
    const N: u32 = 20;
    let kept = BackendConfig::load(&file).unwrap();
    kept.ssh()
        .run("t", "true", Duration::from_secs(10))
        .await
        .unwrap();
    let t = Instant::now();
    for _ in 0..N {
        kept.ssh()
            .run("t", "true", Duration::from_secs(10))
            .await
            .unwrap();
    }
    let reused = t.elapsed() / N;
    let t = Instant::now();
    for _ in 0..N {
        let fresh = BackendConfig::load(&file).unwrap();
        fresh
            .ssh()
            .run("t", "true", Duration::from_secs(10))
            .await
            .unwrap();
    }
    let new = t.elapsed() / N;
    println!(
        "\nssh command (`true` on a loopback OpenSSH): {} over the kept connection, {} with a new connection each ({:.1}x)",
        us(reused),
        us(new),
        new.as_secs_f64() / reused.as_secs_f64()
    );
}

/// The RDS backend's controller calls through the fake RouterOS over real SSH.
async fn rds_calls() {
    use modcsi_tests::fake_rds::FakeRds;
    let fake = std::env::current_exe()
        .unwrap()
        .with_file_name("fake-routeros");
    let rig = FakeRds::start(&fake).await;
    let mut csi = rig.host.client.clone();
    let names = [
        "CreateVolume",
        "ControllerExpandVolume",
        "GetCapacity",
        "DeleteVolume",
    ];
    let (mut samples, mut done) = (Samples::default(), 0);
    let until = Instant::now() + RUN_FOR;
    while Instant::now() < until {
        let mut create = requests::create(&format!("bench-{done}"));
        create.capacity_range.as_mut().unwrap().required_bytes = 1 << 30;
        let id = samples
            .time(0, csi.controller.create_volume(create))
            .await
            .unwrap()
            .into_inner()
            .volume
            .unwrap()
            .volume_id;
        let expand = ControllerExpandVolumeRequest {
            volume_id: id.clone(),
            capacity_range: Some(CapacityRange {
                required_bytes: 2 << 30,
                limit_bytes: 0,
            }),
            ..Default::default()
        };
        samples
            .time(1, csi.controller.controller_expand_volume(expand))
            .await
            .unwrap();
        let capacity = GetCapacityRequest::default();
        samples
            .time(2, csi.controller.get_capacity(capacity))
            .await
            .unwrap();
        samples
            .time(3, csi.controller.delete_volume(requests::delete(&id)))
            .await
            .unwrap();
        done += 1;
    }
    let commands = rig.commands().lines().count();
    println!(
        "\nRDS through the fake RouterOS over SSH: {done} create/expand/capacity/delete rounds in {RUN_FOR:?}, {:.1} RouterOS commands per round",
        commands as f64 / done.max(1) as f64
    );
    Samples::print(&[samples], &names);
}

/// The Emma backend's whole lifecycle through the fake Emma API over HTTPS, DRAFT and BUSY
/// shortened to nothing: wall time per call, and the API requests a round takes.
async fn emma_calls() {
    use modcsi_tests::fake_emma::FakeEmmaOptions;
    use modcsi_tests::fake_emma::rig::EmmaRig;
    let options = FakeEmmaOptions {
        draft: Duration::ZERO,
        busy: Duration::ZERO,
        ..Default::default()
    };
    let rig = EmmaRig::start(options, Duration::from_secs(10)).await;
    let mut c = rig.host.client.controller.clone();
    let names = [
        "CreateVolume",
        "ControllerPublish",
        "ControllerExpand",
        "ControllerUnpublish",
        "DeleteVolume",
    ];
    let (mut samples, mut done) = (Samples::default(), 0);
    let until = Instant::now() + RUN_FOR;
    while Instant::now() < until {
        let mut create = requests::create(&format!("bench-{done}"));
        create.capacity_range.as_mut().unwrap().required_bytes = 1 << 30;
        create.parameters = [("dataCenterId".to_string(), "aws-eu-central-1".to_string())].into();
        let id = samples
            .time(0, c.create_volume(create))
            .await
            .unwrap()
            .into_inner()
            .volume
            .unwrap()
            .volume_id;
        let publish = ControllerPublishVolumeRequest {
            volume_id: id.clone(),
            node_id: "101".into(),
            volume_capability: Some(requests::mount_capability(Mode::SingleNodeWriter)),
            ..Default::default()
        };
        samples
            .time(1, c.controller_publish_volume(publish))
            .await
            .unwrap();
        let expand = ControllerExpandVolumeRequest {
            volume_id: id.clone(),
            capacity_range: Some(CapacityRange {
                required_bytes: 2 << 30,
                limit_bytes: 0,
            }),
            ..Default::default()
        };
        samples
            .time(2, c.controller_expand_volume(expand))
            .await
            .unwrap();
        let unpublish = ControllerUnpublishVolumeRequest {
            volume_id: id.clone(),
            node_id: "101".into(),
            ..Default::default()
        };
        samples
            .time(3, c.controller_unpublish_volume(unpublish))
            .await
            .unwrap();
        samples
            .time(4, c.delete_volume(requests::delete(&id)))
            .await
            .unwrap();
        done += 1;
    }
    println!(
        "\nEmma through the fake API over HTTPS: {done} create/publish/expand/unpublish/delete rounds in {RUN_FOR:?}, {:.1} API requests per round over {} connections",
        rig.fake.requests().len() as f64 / done.max(1) as f64,
        rig.fake.connections()
    );
    Samples::print(&[samples], &names);
}

/// One HTTPS request's cost made by a backend through the host's `http` capability (the
/// rule-breaker component sends N in one call; an empty call's time subtracted) against the
/// same request from a native pooled client (hyper over rustls) in the same process.
async fn https_cost() {
    use modcsi_tests::fake_emma::rig::{host_config, start_host};
    use modcsi_tests::fake_emma::{FakeEmma, FakeEmmaOptions};
    const N: usize = 200;
    const PLACEHOLDERS: &str =
        r#"{"clientId":"{{secret:client-id}}","clientSecret":"{{secret:client-secret}}"}"#;
    let fake = FakeEmma::start(FakeEmmaOptions::default()).await;
    let files = tempfile::tempdir().unwrap();
    let config = host_config(&fake, files.path(), fake.client_secret());
    let host = start_host(RULE_BREAKER, &fake, config, Duration::from_secs(30), None).await;
    let mut c = host.client.controller.clone();
    let call = |name: String, repeat: usize| {
        let mut create = requests::create(&name);
        create.parameters = [
            ("break", "http"),
            ("target", "emma"),
            ("path", "/v1/issue-token"),
            ("body", PLACEHOLDERS),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain([("repeat".to_string(), repeat.to_string())])
        .collect();
        create
    };
    let best = |d: &mut Option<Duration>, t: Duration| *d = Some(d.map_or(t, |b| b.min(t)));
    let (mut one, mut many) = (None, None);
    for round in 0..5 {
        let t = Instant::now();
        c.create_volume(call(format!("one-{round}"), 1))
            .await
            .unwrap();
        best(&mut one, t.elapsed());
        let t = Instant::now();
        c.create_volume(call(format!("many-{round}"), N + 1))
            .await
            .unwrap();
        best(&mut many, t.elapsed());
    }
    let component = (many.unwrap() - one.unwrap()) / N as u32;

    let client = fake.client();
    let uri: http::Uri = format!("{}/v1/issue-token", fake.base_url())
        .parse()
        .unwrap();
    let body = PLACEHOLDERS
        .replace("{{secret:client-id}}", fake.client_id())
        .replace("{{secret:client-secret}}", fake.client_secret());
    let get = || {
        use http_body_util::BodyExt;
        let request = http::Request::post(uri.clone())
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(body.clone())))
            .unwrap();
        let client = client.clone();
        async move {
            let answer = client.request(request).await.unwrap();
            assert_eq!(answer.status(), 200);
            answer.into_body().collect().await.unwrap();
        }
    };
    get().await;
    let mut native = None;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..N {
            get().await;
        }
        best(&mut native, t.elapsed() / N as u32);
    }
    let native = native.unwrap();
    println!(
        "\nHTTPS POST /v1/issue-token to the fake Emma API (loopback, pooled, TLS 1.3): {} per request from a backend component through the host, {} from a native pooled client ({:.2}x)",
        us(component),
        us(native),
        component.as_secs_f64() / native.as_secs_f64()
    );
}

/// Fencing decisions under contention: 16 clients publishing one single-node volume to their
/// own nodes (one holds it, every other call is refused after reading the record). Standalone
/// the record is the embedded store's; with Kubernetes each decision also asks the API server
/// whether the node exists.
async fn fencing_decisions(api: Option<&KubeApi>) {
    use modcsi::proto::volume_capability::access_mode::Mode;
    let kubeconfig = api.map(KubeApi::kubeconfig);
    if let Some(api) = api {
        let client = api.client().await;
        for node in 0..16 {
            objects::add_node(&client, &format!("node-{node}")).await;
        }
    }
    let host = TestHost::start_with(modcsi_tests::RULE_BREAKER, |c| {
        c.driver_name = objects::DRIVER.into();
        c.cluster.kubeconfig = kubeconfig;
    })
    .await;
    let volume = host.create("contended").await;
    let until = Instant::now() + RUN_FOR;
    let tasks: Vec<_> = (0..16)
        .map(|client| {
            let mut c = host.client.controller.clone();
            let volume = volume.clone();
            tokio::spawn(async move {
                let mut decided = 0u64;
                while Instant::now() < until {
                    let request = ControllerPublishVolumeRequest {
                        volume_id: volume.volume_id.clone(),
                        node_id: format!("node-{client}"),
                        volume_capability: Some(requests::mount_capability(Mode::SingleNodeWriter)),
                        ..Default::default()
                    };
                    let _ = c.controller_publish_volume(request).await;
                    decided += 1;
                }
                decided
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    let source = if api.is_some() {
        "Kubernetes"
    } else {
        "standalone"
    };
    println!(
        "\nfencing ({source}): {total} publish decisions on one contended volume from 16 clients in {RUN_FOR:?} = {:.0}/s",
        total as f64 / RUN_FOR.as_secs_f64()
    );
}

/// How long a starting controller takes to rebuild its attachments from 10,000 of the driver's
/// VolumeAttachments (and their PVs) on a real API server.
async fn state_rebuild(api: &KubeApi) {
    const N: usize = 10_000;
    let client = api.client().await;
    let made = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..N {
        if set.len() >= 32 {
            set.join_next().await;
        }
        let client = client.clone();
        set.spawn(async move {
            let (pv, node) = (format!("pv-{i:05}"), format!("node-{}", i % 100));
            objects::add_pv(&client, &pv, &format!("vol-{i:05}"), "ReadWriteOnce", &pv).await;
            objects::add_attachment(&client, objects::DRIVER, &pv, &node, true).await;
        });
    }
    set.join_all().await;
    println!(
        "\nstate rebuild: {N} PVs and VolumeAttachments written in {:.1} s",
        made.elapsed().as_secs_f64()
    );
    let mut samples = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let cluster = Cluster::connect(Some(&api.kubeconfig()), None, objects::DRIVER)
            .await
            .unwrap()
            .unwrap();
        let seen = cluster.attachments().await.unwrap();
        let fencing = Fencing::new(
            std::sync::Arc::new(MemoryStore::default()),
            std::sync::Arc::new(modcsi::fencing::Standalone),
            Duration::ZERO,
        );
        assert_eq!(fencing.rebuild(seen).unwrap(), N);
        samples.push(started.elapsed());
    }
    samples.sort();
    println!(
        "state rebuild from {N} VolumeAttachments (list VAs + PVs, decide, record): min {:.0} ms  p50 {:.0} ms  (target <= 1 s)",
        samples[0].as_secs_f64() * 1e3,
        percentile(&samples, 0.5).as_secs_f64() * 1e3
    );
}

/// Latency of one durable compare-and-swap write to the embedded state store.
fn store_writes() {
    use modcsi::state::{EmbeddedStore, StateStore};
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("state.redb")).unwrap();
    const N: usize = 2000;
    let mut version = None;
    let mut samples = Vec::with_capacity(N);
    for i in 0..N {
        let t = Instant::now();
        version = Some(
            store
                .put("bench", "key", format!("value {i}").as_bytes(), version)
                .unwrap(),
        );
        samples.push(t.elapsed());
    }
    samples.sort();
    println!(
        "
state store (redb, durable commit per write), {N} compare-and-swap writes: p50 {}  p99 {}",
        us(percentile(&samples, 0.5)),
        us(percentile(&samples, 0.99))
    );
}

/// Requests the API server has served so far (its `apiserver_request_total` counters).
async fn api_requests(client: &kube::Client) -> u64 {
    api_requests_by_kind(client).await.values().sum::<f64>() as u64
}

/// Node-local cleanup at scale: 200 volumes, each published on 3 of 20 node processes, then
/// deleted; the API requests the driver makes from the first delete until every record is
/// gone, per volume.
async fn cleanup_at_scale(binary: &Path) {
    const NODES: usize = 20;
    const VOLUMES: usize = 200;
    let api = KubeApi::start_deployed().await;
    let client = api.client().await;
    let node_config = api.node_kubeconfig().to_str().unwrap().to_owned();
    let controller_config = api.controller_kubeconfig().to_str().unwrap().to_owned();
    let mut roots = vec![];
    let mut nodes = vec![];
    for i in 0..NODES {
        let name = format!("n{i:02}");
        modcsi_tests::kube_api::objects::add_node(&client, &name).await;
        let root = tempfile::tempdir().unwrap();
        let dirs = root.path().join("nlc").display().to_string();
        let mut flags = cluster_flags(&name, "node", &node_config);
        flags.extend(["--reconcile-interval", "5s", "--local-dir-root", &dirs]);
        nodes.push(ServeProcess::start_with(binary, NODE_LOCAL_CACHE, root.path(), &flags).await);
        roots.push(root);
    }
    let root = tempfile::tempdir().unwrap();
    let mut flags = cluster_flags("controller", "controller", &controller_config);
    flags.extend(["--reconcile-interval", "5s"]);
    let controller = ServeProcess::start_with(binary, NODE_LOCAL_CACHE, root.path(), &flags).await;
    let mut ids = vec![];
    for v in 0..VOLUMES {
        let volume = controller
            .client
            .controller
            .clone()
            .create(&format!("scale-{v}"))
            .await;
        for k in 0..3 {
            let node = &nodes[(v * 7 + k * 3) % NODES];
            let target = node.targets().join(format!("t-{v}"));
            let target = target.to_str().unwrap();
            let mut csi = node.client.node.clone();
            csi.node_publish_volume(requests::publish(&volume, target, false))
                .await
                .unwrap();
            csi.node_unpublish_volume(requests::unpublish(&volume.volume_id, target))
                .await
                .unwrap();
        }
        ids.push(volume.volume_id);
    }
    let configmaps: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(client.clone(), "default");
    let records = kube::api::ListParams::default().labels("node-local-cache.csi.io/volume");
    let before = api_requests(&client).await;
    let started = Instant::now();
    for id in &ids {
        controller
            .client
            .controller
            .clone()
            .delete_volume(requests::delete(id))
            .await
            .unwrap();
    }
    let mut polls = 0;
    while !configmaps.list(&records).await.unwrap().items.is_empty() {
        polls += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let took = started.elapsed();
    // The bench's own requests: its polls and the metrics reads.
    let after = api_requests(&client).await - (polls + 2);
    println!(
        "node-local cleanup at scale: {VOLUMES} volumes, each on 3 of {NODES} node processes, deleted and cleaned up in {:.1} s: {:.1} API requests per volume",
        took.as_secs_f64(),
        (after - before) as f64 / VOLUMES as f64
    );
    drop(nodes);
}

/// The API server's request counters by verb and resource (`apiserver_request_total`).
async fn api_requests_by_kind(client: &kube::Client) -> std::collections::BTreeMap<String, f64> {
    let text = client
        .request_text(http::Request::get("/metrics").body(Vec::new()).unwrap())
        .await
        .unwrap();
    let mut out = std::collections::BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let label = |name: &str| {
            let start = line.find(&format!("{name}=\""))? + name.len() + 2;
            Some(line[start..].split('"').next()?.to_owned())
        };
        let (Some(verb), Some(resource), Some(n)) = (
            label("verb"),
            label("resource"),
            line.rsplit(' ').next().and_then(|n| n.parse::<f64>().ok()),
        ) else {
            continue;
        };
        *out.entry(format!("{verb} {resource}")).or_default() += n;
    }
    out
}

/// CreateVolume and DeleteVolume of node-local-cache through a controller process with the
/// Kubernetes API (its records in ConfigMaps): latency, and which API requests each costs.
async fn volume_path_in_cluster(binary: &Path) {
    const VOLUMES: usize = 50;
    let api = KubeApi::start_deployed().await;
    let client = api.client().await;
    let root = tempfile::tempdir().unwrap();
    let config = api.controller_kubeconfig().to_str().unwrap().to_owned();
    let flags = cluster_flags("controller", "controller", &config);
    let controller = ServeProcess::start_with(binary, NODE_LOCAL_CACHE, root.path(), &flags).await;
    let mut c = controller.client.controller.clone();
    for (what, create) in [("CreateVolume", true), ("DeleteVolume", false)] {
        let before = api_requests_by_kind(&client).await;
        let mut times = vec![];
        for v in 0..VOLUMES {
            let name = format!("path-{v}");
            let took = if create {
                let started = Instant::now();
                c.create(&name).await;
                started.elapsed()
            } else {
                // The same name again first (idempotent: answered from the record).
                let id = c.create(&name).await.volume_id;
                let started = Instant::now();
                c.delete_volume(requests::delete(&id)).await.unwrap();
                started.elapsed()
            };
            times.push(took);
        }
        let after = api_requests_by_kind(&client).await;
        times.sort();
        // A delete's loop repeats a CreateVolume (idempotent, answered from the record).
        let per: Vec<String> = after
            .iter()
            .filter_map(|(k, n)| {
                let d = n - before.get(k).copied().unwrap_or_default();
                (d >= 1.0 && !k.starts_with("get metrics"))
                    .then(|| format!("{k} {:.1}", d / VOLUMES as f64))
            })
            .collect();
        println!(
            "{what} in a cluster (node-local-cache, records in ConfigMaps): p50 {}, p90 {}; API requests per call{}: {}",
            us(percentile(&times, 0.5)),
            us(percentile(&times, 0.9)),
            if create {
                ""
            } else {
                " (with the repeated CreateVolume before it)"
            },
            per.join(", ")
        );
    }
    drop(controller);

    // A host that is its node too (`--mode all`, a single-node cluster's driver): DeleteVolume
    // of a volume the node published, wrote to and unpublished, whose directory goes before
    // the answer (and the note of the record's change with it).
    objects::add_node(&client, "bench-node").await;
    let root = tempfile::tempdir().unwrap();
    let flags = cluster_flags("bench-node", "all", &config);
    let host = ServeProcess::start_with(binary, NODE_LOCAL_CACHE, root.path(), &flags).await;
    let mut c = host.client.clone();
    let mut times = vec![];
    for v in 0..VOLUMES {
        let volume = c.controller.create(&format!("used-{v}")).await;
        let id = &volume.volume_id;
        let target = host.targets().join(format!("t-{v}"));
        let target = target.to_str().unwrap();
        c.node
            .node_publish_volume(requests::publish(&volume, target, false))
            .await
            .unwrap();
        std::fs::write(Path::new(target).join("data"), b"x").unwrap();
        c.node
            .node_unpublish_volume(requests::unpublish(id, target))
            .await
            .unwrap();
        let started = Instant::now();
        c.controller
            .delete_volume(requests::delete(id))
            .await
            .unwrap();
        times.push(started.elapsed());
    }
    times.sort();
    println!(
        "DeleteVolume of a used node-local volume in a host that is its node too (--mode all, with Kubernetes): p50 {}, p90 {}",
        us(percentile(&times, 0.5)),
        us(percentile(&times, 0.9)),
    );
}

/// Runs `command` to its end, its stdout captured and its stderr in `stderr`: the wall time from
/// spawn to exit, the exit code, the stdout, and the process's peak RSS in KiB (`ru_maxrss` of
/// its own rusage, which wait4 returns with its exit).
fn run_measured(
    mut command: std::process::Command,
    stderr: &Path,
) -> (Duration, Option<i32>, Vec<u8>, i64) {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    command
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(stderr).unwrap());
    let started = Instant::now();
    #[expect(
        clippy::zombie_processes,
        reason = "wait4 below reaps it, for its rusage"
    )]
    let mut child = command.spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = vec![];
        stdout.read_to_end(&mut out).unwrap();
        out
    });
    let pid = child.id() as nix::libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value; wait4 reaps our own child (std's Child does
    // not wait on drop) and writes only into these two locals.
    let (waited, usage) = unsafe {
        let mut usage: nix::libc::rusage = std::mem::zeroed();
        (nix::libc::wait4(pid, &mut status, 0, &mut usage), usage)
    };
    let took = started.elapsed();
    assert_eq!(waited, pid, "wait4: {}", std::io::Error::last_os_error());
    let stdout = reader.join().unwrap();
    let code = std::process::ExitStatus::from_raw(status).code();
    (took, code, stdout, usage.ru_maxrss)
}

/// `modcsi audit` at scale: 5,000 bound PVs of the driver against check-breaker holding 5,000
/// volumes (its records in the driver's ConfigMaps, made through CreateVolume of a controller
/// process), of which 10 PVs name a volume that does not exist and 10 volumes no PV names. One
/// `--output json` run of the binary: its wall time, the API requests it made (the API server's
/// own counters), its peak RSS (ru_maxrss from wait4) and the report's scan time; then one
/// `--output table` run's wall time.
async fn audit_at_scale(binary: &Path) {
    use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume};
    use k8s_openapi::api::storage::v1::{CSIDriver, CSIDriverSpec};
    use kube::api::{ListParams, Patch, PatchParams};
    // PVs, and volumes.
    const PVS: usize = 5_000;
    const ORPHANS: usize = 10;
    const IN_FLIGHT: usize = 32;
    const SERIAL: usize = 100;
    let api = KubeApi::start_deployed().await;
    let client = api.client().await;
    let root = tempfile::tempdir().unwrap();
    let config = api.controller_kubeconfig().to_str().unwrap().to_owned();
    let flags = cluster_flags("controller", "controller", &config);
    let host = ServeProcess::start_with(binary, CHECK_BREAKER, root.path(), &flags).await;

    // The backend's volumes, made through the driver: cb-pvc-00000 ... cb-pvc-00999; the last
    // ORPHANS are named by no PV. The first SERIAL one at a time, the rest IN_FLIGHT at once.
    let create = |v: usize| {
        let mut c = host.client.controller.clone();
        async move {
            let mut request = requests::create(&format!("pvc-{v:05}"));
            request.parameters.insert("flavour".into(), "plain".into());
            c.create_volume(request).await.unwrap();
        }
    };
    let started = Instant::now();
    for v in 0..SERIAL {
        create(v).await;
    }
    let serial = started.elapsed();
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for v in SERIAL..PVS {
        if set.len() >= IN_FLIGHT {
            set.join_next().await.unwrap().unwrap();
        }
        set.spawn(create(v));
    }
    set.join_all().await;
    let concurrent = started.elapsed();
    // The host writes its records after answering: stopping it lets them land.
    drop(host);
    println!(
        "\naudit at scale: {PVS} volumes made through CreateVolume (check-breaker, in ConfigMaps) in {:.1} s: the first {SERIAL} one at a time {:.1} ms each, the other {} {IN_FLIGHT} in flight {:.0}/s",
        (serial + concurrent).as_secs_f64(),
        serial.as_secs_f64() * 1e3 / SERIAL as f64,
        PVS - SERIAL,
        (PVS - SERIAL) as f64 / concurrent.as_secs_f64()
    );
    let state = kube::Api::<ConfigMap>::namespaced(client.clone(), "default")
        .list_metadata(&ListParams::default().labels("modcsi.io/state-driver"))
        .await
        .unwrap()
        .items
        .len();

    // PVs, all Bound: pv-00000 ... pv-00999; the last ORPHANS name volumes that do not exist.
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..PVS {
        if set.len() >= IN_FLIGHT {
            set.join_next().await.unwrap().unwrap();
        }
        let client = client.clone();
        set.spawn(async move {
            let pv = format!("pv-{i:05}");
            let volume = match i < PVS - ORPHANS {
                true => format!("cb-pvc-{i:05}"),
                false => format!("cb-gone-{i:05}"),
            };
            objects::add_pv(&client, &pv, &volume, "ReadWriteOnce", &pv).await;
            kube::Api::<PersistentVolume>::all(client)
                .patch_status(
                    &pv,
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({"status": {"phase": "Bound"}})),
                )
                .await
                .unwrap();
        });
    }
    set.join_all().await;
    // The driver's CSIDriver object, as the chart makes it: its check passes.
    let driver = CSIDriver {
        metadata: kube::api::ObjectMeta {
            name: Some(objects::DRIVER.into()),
            ..Default::default()
        },
        spec: CSIDriverSpec {
            attach_required: Some(true),
            ..Default::default()
        },
    };
    kube::Api::<CSIDriver>::all(client.clone())
        .create(&Default::default(), &driver)
        .await
        .unwrap();
    println!(
        "  {PVS} PVs created and marked Bound ({IN_FLIGHT} in flight) in {:.1} s; {state} ConfigMaps of the driver's state",
        started.elapsed().as_secs_f64()
    );

    let audit = |output: &str| {
        let mut command = std::process::Command::new(binary);
        command
            .args(["audit", "--driver-name", objects::DRIVER])
            .args(["--namespace", "default", "--output", output])
            .args(["--grace", "0s", "--orphan-age", "0s"])
            .arg("--kubeconfig")
            .arg(api.kubeconfig())
            .arg("--backend")
            .arg(component(CHECK_BREAKER))
            .arg("--cache-dir")
            .arg(modcsi_tests::shared_cache_dir());
        command
    };
    let stderr = root.path().join("audit.stderr");
    let before = api_requests_by_kind(&client).await;
    let (took, code, stdout, peak_kib) = {
        let (command, stderr) = (audit("json"), stderr.clone());
        tokio::task::spawn_blocking(move || run_measured(command, &stderr))
            .await
            .unwrap()
    };
    let after = api_requests_by_kind(&client).await;
    let report: serde_json::Value = serde_json::from_slice(&stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&stdout),
            std::fs::read_to_string(&stderr).unwrap_or_default()
        )
    });
    let findings = report["findings"].as_array().unwrap();
    // Findings by kind and severity: "pv-without-volume CRITICAL" → count.
    let mut found = std::collections::BTreeMap::<String, usize>::new();
    for f in findings {
        *found
            .entry(format!("{} {}", f["kind"], f["severity"]).replace('"', ""))
            .or_default() += 1;
    }
    // The bench's own read of the metrics (the first) is counted in the second.
    let mut by_kind = vec![];
    let mut by_verb = std::collections::BTreeMap::<String, f64>::new();
    for (k, n) in &after {
        let mut d = n - before.get(k).copied().unwrap_or_default();
        if k == "GET " {
            d -= 1.0;
        }
        if d >= 1.0 {
            by_kind.push(format!("{k} {d:.0}"));
            *by_verb
                .entry(k.split(' ').next().unwrap().to_owned())
                .or_default() += d;
        }
    }
    let by_verb: Vec<String> = by_verb.iter().map(|(v, n)| format!("{v} {n:.0}")).collect();
    println!(
        "  `modcsi audit --output json` of {PVS} PVs against {PVS} backend volumes: {:.2} s wall (report's scan_ms {:.0}), peak RSS {:.1} MiB (ru_maxrss from wait4); scanned {}; {} findings: {}",
        took.as_secs_f64(),
        report["scan_ms"].as_f64().unwrap(),
        peak_kib as f64 / 1024.0,
        report["scanned"],
        findings.len(),
        found
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  API requests it made: {} (by verb and resource: {})",
        by_verb.join(", "),
        by_kind.join(", ")
    );
    // The set-up, as made: every PV and volume seen, and only the orphans made found.
    let count = |kind: &str| findings.iter().filter(|f| f["kind"] == kind).count();
    assert_eq!(report["scanned"]["PVs"], PVS, "{:#}", report["scanned"]);
    assert_eq!(report["scanned"]["backend volumes"], PVS);
    assert_eq!(count("pv-without-volume"), ORPHANS);
    assert_eq!(count("volume-without-pv"), ORPHANS);
    assert_eq!(findings.len(), 2 * ORPHANS, "{findings:#?}");
    assert_eq!(code, Some(3), "findings at HIGH and above fail the audit");
    let command = audit("table");
    let (took, code, stdout, peak_kib) =
        tokio::task::spawn_blocking(move || run_measured(command, &stderr))
            .await
            .unwrap();
    assert_eq!(code, Some(3), "{}", String::from_utf8_lossy(&stdout));
    println!(
        "  `modcsi audit --output table`, the same audit again: {:.2} s wall, peak RSS {:.1} MiB, {} lines",
        took.as_secs_f64(),
        peak_kib as f64 / 1024.0,
        String::from_utf8_lossy(&stdout).lines().count()
    );
}

/// How much of host/code-order.txt the binary still has: names a dependency update or a rename
/// changed are placed anywhere, and their pages come back to a serving process's memory.
fn code_order(binary: &Path) {
    let list = Path::new(env!("CARGO_MANIFEST_DIR")).join("../host/code-order.txt");
    let list = std::fs::read_to_string(list).unwrap();
    let nm = std::process::Command::new("nm")
        .arg("--defined-only")
        .arg(binary)
        .output()
        .expect("nm (binutils)");
    let defined: std::collections::HashSet<&str> = std::str::from_utf8(&nm.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    let found = list.lines().filter(|name| defined.contains(name)).count();
    println!(
        "code order: {found} of the {} functions host/code-order.txt lists are in {} (below 90%: run scripts/code-order.sh)",
        list.lines().count(),
        binary.display()
    );
}

#[tokio::main]
async fn main() {
    println!(
        "modcsi benchmark: node-local-cache against a `modcsi serve` process, real bind mounts, {RUN_FOR:?} per run"
    );
    // MODCSI_BENCH_BINARY: another build (the debug one, to count requests without a release
    // build).
    let binary = std::env::var_os("MODCSI_BENCH_BINARY").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/modcsi"),
        std::path::PathBuf::from,
    );
    assert!(
        binary.is_file(),
        "{} is missing: `just bench` builds it",
        binary.display()
    );
    code_order(&binary);
    // `lifecycle-bench cleanup`, `volume-path`, `audit` or `emma`: that part alone.
    match std::env::args().nth(1).as_deref() {
        Some("cleanup") => return cleanup_at_scale(&binary).await,
        Some("volume-path") => return volume_path_in_cluster(&binary).await,
        Some("audit") => return audit_at_scale(&binary).await,
        Some("emma") => {
            emma_calls().await;
            return https_cost().await;
        }
        _ => {}
    }
    let root = tempfile::tempdir().unwrap();
    let server = ServeProcess::start(&binary, NODE_LOCAL_CACHE, root.path()).await;
    // Idle: no call runs, so nothing should wake the process.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (before, cpu_before) = (server.wakeups(), server.cpu());
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!(
        "idle `modcsi serve` (node-local-cache, standalone): {:.1} wakeups/s, {:.2} ms CPU/s",
        (server.wakeups() - before) as f64 / 3.0,
        (server.cpu() - cpu_before).as_secs_f64() * 1e3 / 3.0
    );
    for clients in [1, 16] {
        lifecycles(&server, clients).await;
    }
    drop(server);
    block_lifecycles().await;
    fencing_decisions(None).await;
    let api = KubeApi::start().await;
    fencing_decisions(Some(&api)).await;
    state_rebuild(&api).await;
    drop(api);
    cleanup_at_scale(&binary).await;
    volume_path_in_cluster(&binary).await;
    audit_at_scale(&binary).await;
    ssh_reuse().await;
    rds_calls().await;
    emma_calls().await;
    https_cost().await;
    backend_overhead().await;
    store_writes();
}
