//! `modcsi audit` on a real API server, against a driver whose backend lists its volumes
//! (check-breaker, its volumes in the driver's ConfigMaps): a PV whose volume is gone and a
//! volume no PV names are found with their evidence, a healthy bound volume is not, nothing is
//! found while everything is younger than the grace and orphan ages, and the exit status
//! follows --fail-on; snapshots against their contents and attachments against one writer and
//! the backend; usage and configuration checks; `--delete` in a dry run changes nothing
//! and for real removes only what it listed; `--serve` answers its API, metrics and page (the
//! page rendered in headless Chromium) to loopback and to tokens the API server vouches for.

use k8s_openapi::api::core::v1::PersistentVolume;
use kube::Api;
use kube::api::{Patch, PatchParams};
use modcsi::proto::CreateVolumeRequest;
use modcsi_tests::kube_api::objects::{self, DRIVER};
use modcsi_tests::kube_api::{CONTROLLER_ACCOUNT, KubeApi};
use modcsi_tests::process::{ServeProcess, cluster_flags, modcsi_binary};
use modcsi_tests::{CHECK_BREAKER, component, requests, shared_cache_dir};

async fn bound(client: &kube::Client, pv: &str, volume: &str) {
    objects::add_pv(client, pv, volume, "ReadWriteOnce", pv).await;
    Api::<PersistentVolume>::all(client.clone())
        .patch_status(
            pv,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {"phase": "Bound"}})),
        )
        .await
        .unwrap();
}

/// Merges `fields` and a capacity of `storage` into the spec of PV `pv`.
async fn spec(client: &kube::Client, pv: &str, mut fields: serde_json::Value, storage: &str) {
    fields["capacity"] = serde_json::json!({ "storage": storage });
    Api::<PersistentVolume>::all(client.clone())
        .patch(
            pv,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": fields })),
        )
        .await
        .unwrap();
}

fn create(name: &str) -> CreateVolumeRequest {
    let mut request = requests::create(name);
    request.parameters.insert("flavour".into(), "plain".into());
    request
}

/// The test API server with the driver's RBAC and a controller process of check-breaker (its
/// root directory beside it), with the volumes `names` made through CSI: ids `cb-<name>`.
async fn driver(names: &[&str]) -> (KubeApi, kube::Client, ServeProcess, tempfile::TempDir) {
    let api = KubeApi::start_deployed().await;
    let client = api.client().await;
    let root = tempfile::tempdir().unwrap();
    let config = api.controller_kubeconfig().to_str().unwrap().to_owned();
    let flags = cluster_flags("controller", "controller", &config);
    let host = ServeProcess::start_with(&modcsi_binary(), CHECK_BREAKER, root.path(), &flags).await;
    let mut controller = host.client.controller.clone();
    for name in names {
        controller.create_volume(create(name)).await.unwrap();
    }
    (api, client, host, root)
}

/// `modcsi audit` for the test driver, with `flags`.
fn audit_command(api: &KubeApi, flags: &[&str]) -> std::process::Command {
    audit_of(&component(CHECK_BREAKER), &api.kubeconfig(), flags)
}

/// `modcsi audit` of the test driver with the component `backend`, as the user of `kubeconfig`.
fn audit_of(
    backend: &std::path::Path,
    kubeconfig: &std::path::Path,
    flags: &[&str],
) -> std::process::Command {
    let mut command = std::process::Command::new(modcsi_binary());
    command
        .args(["audit", "--driver-name", DRIVER, "--namespace", "default"])
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--backend")
        .arg(backend)
        .arg("--cache-dir")
        .arg(shared_cache_dir())
        .args(flags);
    command
}

/// The driver's CSIDriver object, as the chart makes it for a backend that publishes.
async fn csidriver(client: &kube::Client) {
    use k8s_openapi::api::storage::v1::{CSIDriver, CSIDriverSpec};
    let driver = CSIDriver {
        metadata: kube::api::ObjectMeta {
            name: Some(DRIVER.into()),
            ..Default::default()
        },
        spec: CSIDriverSpec {
            attach_required: Some(true),
            ..Default::default()
        },
    };
    Api::<CSIDriver>::all(client.clone())
        .create(&Default::default(), &driver)
        .await
        .unwrap();
}

/// A StorageClass of the test driver, with `parameters`.
async fn class(client: &kube::Client, name: &str, parameters: &[(&str, &str)]) {
    use k8s_openapi::api::storage::v1::StorageClass;
    let class = StorageClass {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        provisioner: DRIVER.into(),
        parameters: Some(
            (parameters.iter())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    };
    Api::<StorageClass>::all(client.clone())
        .create(&Default::default(), &class)
        .await
        .unwrap();
}

/// `modcsi audit` with `flags`: its exit status and its JSON report.
fn audit(api: &KubeApi, flags: &[&str]) -> (Option<i32>, serde_json::Value) {
    let out = audit_command(api, &["--output", "json"])
        .args(flags)
        .output()
        .unwrap();
    (out.status.code(), report_of(&out))
}

/// The JSON report an audit printed.
fn report_of(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Creates `pvc-kept` and `pvc-leaked` through the driver at `controller`, each request
/// finished by `fill`; their volume ids.
async fn kept_and_leaked(
    mut controller: modcsi::proto::controller_client::ControllerClient<tonic::transport::Channel>,
    fill: impl Fn(&mut CreateVolumeRequest),
) -> Vec<String> {
    let mut made = vec![];
    for name in ["pvc-kept", "pvc-leaked"] {
        let mut request = requests::create(name);
        fill(&mut request);
        let answer = controller
            .create_volume(request)
            .await
            .unwrap()
            .into_inner();
        made.push(answer.volume.unwrap().volume_id);
    }
    made
}

#[tokio::test]
async fn orphans_both_ways_are_found_and_healthy_or_young_volumes_are_not() {
    let (api, client, host, _root) = driver(&["pvc-healthy", "pvc-leak"]).await;
    bound(&client, "pv-healthy", "cb-pvc-healthy").await;
    bound(&client, "pv-lost", "cb-gone").await;
    csidriver(&client).await;
    class(&client, "audit-fast", &[("flavour", "plain")]).await;
    // The host writes its records after answering: let them land.
    drop(host);

    // Everything is seconds old: inside the grace and orphan ages, nothing is called an orphan.
    let (status, young) = audit(&api, &[]);
    assert_eq!(status, Some(0), "{young:#}");
    assert_eq!(young["findings"], serde_json::json!([]), "{young:#}");
    assert_eq!(young["scanned"]["PVs"], 2);
    assert_eq!(young["scanned"]["backend volumes"], 2);
    // Usage: two 1 GiB PVs without a class; the driver's class, empty, with what the backend
    // says is free for it.
    assert_eq!(young["usage"]["volumes"], 2);
    assert_eq!(young["usage"]["provisioned_bytes"], 2u64 << 30);
    let classes = young["usage"]["classes"].as_array().unwrap();
    let fast = classes.iter().find(|c| c["class"] == "audit-fast").unwrap();
    assert_eq!(fast["volumes"], 0);
    assert!(fast["available_bytes"].as_u64() > Some(0), "{fast}");
    assert_eq!(young["usage"]["namespaces"][0]["namespace"], "default");
    // Checks: the probe, the CSIDriver, the class's parameters and the audit's rights pass; no
    // nodes and no pods of the driver leave nothing to check.
    let checks: Vec<(&str, &str)> = young["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        checks,
        [
            ("backend-probe", "pass"),
            ("csidriver", "pass"),
            ("storageclass-parameters", "pass"),
            ("csinode", "skip"),
            ("sidecars", "skip"),
            ("rbac", "pass")
        ]
    );
    // The same report as YAML.
    let yaml = audit_command(&api, &["--output", "yaml"]).output().unwrap();
    let yaml: serde_json::Value = serde_saphyr::from_slice(&yaml.stdout).unwrap();
    assert_eq!(yaml["checks"], young["checks"]);
    assert_eq!(yaml["usage"], young["usage"]);

    // A volume deleted two hours ago whose directory one node still holds.
    let requested = k8s_openapi::jiff::Timestamp::now() - std::time::Duration::from_secs(7200);
    let record = objects::cleanup_record(
        "nlc-old",
        "nlc-old",
        Some(DRIVER),
        serde_json::json!({
            "volume_id": "nlc-old",
            "created_at": requested.to_string(),
            "cleanup_requested_at": requested.to_string(),
            "nodes_with_volume": ["n1", "n2"],
            "nodes_completed": ["n1"],
        }),
    );
    Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), "default")
        .create(&Default::default(), &record)
        .await
        .unwrap();

    let (status, report) = audit(&api, &["--grace", "0s", "--orphan-age", "0s"]);
    let findings: Vec<(&str, &str, &str)> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["kind"].as_str().unwrap(),
                f["severity"].as_str().unwrap(),
                f["subject"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        findings,
        [
            ("pv-without-volume", "CRITICAL", "pv/pv-lost"),
            ("cleanup-stuck", "HIGH", "volume/nlc-old"),
            ("volume-without-pv", "HIGH", "volume/cb-pvc-leak"),
        ],
        "{report:#}"
    );
    let stuck = report["findings"][1]["evidence"].to_string();
    assert!(
        stuck.contains("node(s) n2") && !stuck.contains("n1"),
        "{stuck}"
    );
    let evidence = report["findings"][0]["evidence"].to_string();
    assert!(
        evidence.contains("cb-gone") && evidence.contains("default/pv-lost"),
        "{evidence}"
    );
    assert!(report["findings"][2]["age_seconds"].as_i64() >= Some(0));
    assert_eq!(
        status,
        Some(3),
        "a finding at or above HIGH fails the audit"
    );
    let (status, _) = audit(
        &api,
        &[
            "--grace",
            "0s",
            "--orphan-age",
            "0s",
            "--fail-on",
            "critical",
        ],
    );
    assert_eq!(status, Some(3));
    let (status, _) = audit(&api, &["--orphan-age", "0s", "--fail-on", "critical"]);
    assert_eq!(
        status,
        Some(0),
        "only the HIGH orphan volume: below the threshold"
    );
}

/// The kinds and subjects of a report's findings.
fn found(report: &serde_json::Value) -> Vec<(String, String)> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["kind"].as_str().unwrap().into(),
                f["subject"].as_str().unwrap().into(),
            )
        })
        .collect()
}

#[tokio::test]
async fn delete_is_a_dry_run_unless_asked_and_then_removes_only_what_it_listed() {
    let (api, client, host, root) = driver(&["pvc-keep", "pvc-orphan-a", "pvc-orphan-b"]).await;
    bound(&client, "pv-keep", "cb-pvc-keep").await;
    csidriver(&client).await;
    let endpoint = format!(
        "unix://{}/csi.sock",
        root.path().canonicalize().unwrap().display()
    );
    let delete = ["--delete", "--csi-endpoint", &endpoint];
    let now = ["--grace", "0s", "--orphan-age", "0s"];
    let orphans = |report: &serde_json::Value| -> Vec<String> {
        found(report)
            .into_iter()
            .filter(|(kind, _)| kind == "volume-without-pv")
            .map(|(_, subject)| subject)
            .collect()
    };
    // The records land after the answers: wait until the audit sees both orphans.
    let mut seen = vec![];
    for _ in 0..50 {
        seen = orphans(&audit(&api, &now).1);
        if seen.len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(seen, ["volume/cb-pvc-orphan-a", "volume/cb-pvc-orphan-b"]);

    // Younger than the orphan age (1h by default): nothing to delete, even for real.
    let (_, young) = audit(&api, &[&delete[..], &["--dry-run=false"]].concat());
    assert_eq!(young["deletions"], serde_json::json!([]), "{young:#}");

    // A dry run lists both and changes nothing.
    let (_, dry) = audit(&api, &[&delete[..], &now[..]].concat());
    let outcomes = |r: &serde_json::Value| -> Vec<(String, String)> {
        r["deletions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["volume"].as_str().unwrap().into(),
                    d["outcome"].as_str().unwrap().into(),
                )
            })
            .collect()
    };
    assert_eq!(
        outcomes(&dry),
        [
            ("cb-pvc-orphan-a".into(), "would delete".into()),
            ("cb-pvc-orphan-b".into(), "would delete".into())
        ]
    );
    assert_eq!(
        orphans(&audit(&api, &now).1).len(),
        2,
        "a dry run deletes nothing"
    );

    // For real: both go through the driver's DeleteVolume; the PV's volume stays.
    let (_, real) = audit(
        &api,
        &[&delete[..], &now[..], &["--dry-run=false"]].concat(),
    );
    assert_eq!(
        outcomes(&real),
        [
            ("cb-pvc-orphan-a".into(), "deleted".into()),
            ("cb-pvc-orphan-b".into(), "deleted".into())
        ]
    );
    let (_, after) = audit(&api, &now);
    assert_eq!(orphans(&after), Vec::<String>::new(), "{after:#}");
    assert_eq!(
        after["scanned"]["backend volumes"], 1,
        "cb-pvc-keep is still there"
    );
    let events = Api::<k8s_openapi::api::core::v1::Event>::namespaced(client.clone(), "default")
        .list(&Default::default())
        .await
        .unwrap();
    let noted: Vec<String> = events
        .items
        .iter()
        .filter(|e| e.reason.as_deref() == Some("OrphanDeleted"))
        .filter_map(|e| e.message.clone())
        .collect();
    assert_eq!(noted.len(), 2, "{noted:?}");
    assert!(noted.iter().any(|m| m.contains("cb-pvc-orphan-a")));
    drop(host);
}

/// This machine's first IPv4 address that is not loopback: a peer the service does not trust.
fn outside_address() -> std::net::Ipv4Addr {
    nix::ifaddrs::getifaddrs()
        .unwrap()
        .filter_map(|i| i.address?.as_sockaddr_in().map(|a| a.ip()))
        .find(|ip| !ip.is_loopback())
        .expect("a non-loopback IPv4 address")
}

#[tokio::test]
async fn the_service_answers_its_api_metrics_and_page_to_whom_it_may() {
    use modcsi_tests::browser;
    use modcsi_tests::e2e::{http_get, http_get_as};
    let (api, client, host, _root) = driver(&["pvc-big", "pvc-leak"]).await;
    drop(host);
    // A big volume of the class, so both bars of the usage chart show; a PV whose volume is
    // gone (CRITICAL); the leaked volume (HIGH).
    class(&client, "audit-fast", &[("flavour", "plain")]).await;
    csidriver(&client).await;
    for (pv, volume) in [("pv-big", "cb-pvc-big"), ("pv-lost", "cb-gone")] {
        bound(&client, pv, volume).await;
        spec(
            &client,
            pv,
            serde_json::json!({"storageClassName": "audit-fast"}),
            "400Gi",
        )
        .await;
    }
    let port = modcsi_tests::free_port();
    let serve = |interval: &str| {
        audit_command(
            &api,
            &[
                "--grace",
                "0s",
                "--orphan-age",
                "0s",
                "--interval",
                interval,
            ],
        )
        .args(["--history-configmap", "audit-history", "--serve"])
        .arg(format!("0.0.0.0:{port}"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
    };
    // The times of the usage history's points, once there are two or more and the newest is
    // past `after`.
    let history = async |after: i64| {
        let mut usage = serde_json::Value::Null;
        for _ in 0..600 {
            let (status, body) = std::net::TcpStream::connect(("127.0.0.1", port))
                .map(|_| http_get_as("127.0.0.1", port, "/api/v1/usage", None))
                .unwrap_or((0, String::new()));
            if status == 200 {
                usage = serde_json::from_str(&body).unwrap();
                let unix: Vec<i64> = (usage["history"].as_array().unwrap().iter())
                    .map(|p| p["unix"].as_i64().unwrap())
                    .collect();
                if unix.len() >= 2 && unix.last() > Some(&after) {
                    return (usage, unix);
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("no history past {after} within a minute: {usage:#}");
    };
    let mut service = serve("1s");
    // Two scans at least: the growth chart needs two points.
    let (usage, _) = history(0).await;
    assert_eq!(usage["usage"]["provisioned_bytes"], 800u64 << 30);
    assert_eq!(http_get("127.0.0.1", port, "/healthz"), "ok\n");
    let orphans: serde_json::Value =
        serde_json::from_str(&http_get("127.0.0.1", port, "/api/v1/orphans")).unwrap();
    assert_eq!(
        found(&orphans),
        [
            ("pv-without-volume".into(), "pv/pv-lost".into()),
            ("volume-without-pv".into(), "volume/cb-pvc-leak".into())
        ]
    );
    let checks: serde_json::Value =
        serde_json::from_str(&http_get("127.0.0.1", port, "/api/v1/checks")).unwrap();
    assert_eq!(checks["checks"][0]["name"], "backend-probe");
    let metrics = http_get("127.0.0.1", port, "/metrics");
    assert!(
        metrics
            .contains("modcsi_audit_findings{kind=\"pv-without-volume\",severity=\"CRITICAL\"} 1")
            && metrics
                .contains("modcsi_audit_provisioned_bytes{class=\"audit-fast\"} 858993459200"),
        "{metrics}"
    );

    // From another address: only a token the API server vouches for, of a user who may list
    // PVs; the probes' endpoints stay open.
    let outside = outside_address().to_string();
    let get = |token| http_get_as(&outside, port, "/api/v1/orphans", token).0;
    assert_eq!(get(None), 401);
    assert_eq!(get(Some("no-such-token")), 401);
    assert_eq!(get(Some(CONTROLLER_ACCOUNT.1)), 200);
    assert_eq!(http_get_as(&outside, port, "/healthz", None).0, 200);

    // The page, as a browser shows it: the findings table with its severity badges, the usage
    // bars (provisioned and free) and the growth line.
    let url = format!("http://127.0.0.1:{port}/");
    let dom = browser::dom(&url);
    assert!(
        dom.contains("id=\"findings\"")
            && dom.contains("pv/pv-lost")
            && dom.contains("volume/cb-pvc-leak"),
        "{dom}"
    );
    let shot = browser::screenshot(&url, 1280, 1600);
    let keep = || {
        let path = std::env::temp_dir().join("modcsi-audit-page.png");
        std::fs::write(&path, &shot.png).unwrap();
        path.display().to_string()
    };
    let rgb = |hex: &str| -> [u8; 3] {
        let n = u32::from_str_radix(hex.trim_start_matches('#'), 16).unwrap();
        [(n >> 16) as u8, (n >> 8) as u8, n as u8]
    };
    for (what, colour, least) in [
        ("the CRITICAL badge", "#c53030", 100),
        ("the HIGH badge", "#dd6b20", 100),
        ("the provisioned bar", "#2b6cb0", 2000),
        ("the free bar", "#9ae6b4", 2000),
        ("the growth line", "#6b46c1", 300),
    ] {
        let n = shot.count(rgb(colour), 8);
        assert!(
            n >= least,
            "{what}: {n} pixels of {colour}; the page is in {}",
            keep()
        );
    }
    // The table comes before the chart: badges above the bars.
    let badge = shot.rows_with(rgb("#c53030"), 8, 10)[0];
    let bar = shot.rows_with(rgb("#2b6cb0"), 8, 50)[0];
    assert!(
        badge < bar,
        "the findings table is above the chart; see {}",
        keep()
    );
    let _ = service.kill();
    let _ = service.wait();

    // The history outlives the service: a new one starts from what the ConfigMap kept (a line
    // a point, its time first) and adds its own first scan.
    let kept: Vec<i64> =
        Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), "default")
            .get("audit-history")
            .await
            .unwrap()
            .data
            .unwrap()["usage"]
            .lines()
            .map(|line| line.split(' ').next().unwrap().parse().unwrap())
            .collect();
    assert!(!kept.is_empty());
    // Points are to the second: the new service's first scan is in a later one.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let mut service = serve("1h");
    let (_, unix) = history(*kept.last().unwrap()).await;
    assert_eq!(unix[0], kept[0], "the oldest point kept is still the first");
    let _ = service.kill();
    let _ = service.wait();
}

/// The external snapshotter's VolumeSnapshotContent API, as far as the audit reads it (the test
/// API server has no CRDs of its own).
async fn snapshot_content_api(client: &kube::Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crd: CustomResourceDefinition = serde_json::from_value(serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": "volumesnapshotcontents.snapshot.storage.k8s.io",
            // A *.k8s.io group needs this; "unapproved" is the accepted way to say a stand-in.
            "annotations": {"api-approved.kubernetes.io": "unapproved, a test stand-in"}
        },
        "spec": {
            "group": "snapshot.storage.k8s.io",
            "scope": "Cluster",
            "names": {
                "plural": "volumesnapshotcontents",
                "singular": "volumesnapshotcontent",
                "kind": "VolumeSnapshotContent",
                "listKind": "VolumeSnapshotContentList"
            },
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object", "x-kubernetes-preserve-unknown-fields": true
                }}
            }]
        }
    }))
    .unwrap();
    Api::<CustomResourceDefinition>::all(client.clone())
        .create(&Default::default(), &crd)
        .await
        .unwrap();
}

/// A VolumeSnapshotContent of the test driver naming snapshot `handle`, bound to VolumeSnapshot
/// default/`name`.
async fn snapshot_content(client: &kube::Client, name: &str, handle: &str) {
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshotContent"),
        "volumesnapshotcontents",
    );
    let object: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshotContent",
        "metadata": {"name": name},
        "spec": {
            "driver": DRIVER,
            "deletionPolicy": "Delete",
            "source": {"snapshotHandle": handle},
            "volumeSnapshotRef": {"namespace": "default", "name": name}
        }
    }))
    .unwrap();
    // The CRD takes a moment to be served.
    for attempt in 0.. {
        match Api::<DynamicObject>::all_with(client.clone(), &resource)
            .create(&Default::default(), &object)
            .await
        {
            Ok(_) => return,
            Err(e) if attempt < 50 => {
                let _ = e;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[tokio::test]
async fn snapshots_and_attachments_are_compared_with_the_backend() {
    let (api, client, host, _root) = driver(&["pvc-a"]).await;
    let controller = host.client.controller.clone();
    let snapshot = |name: &str| {
        let mut controller = controller.clone();
        let request = modcsi::proto::CreateSnapshotRequest {
            source_volume_id: "cb-pvc-a".into(),
            name: name.into(),
            ..Default::default()
        };
        async move {
            let answer = controller.create_snapshot(request).await.unwrap();
            answer.into_inner().snapshot.unwrap().snapshot_id
        }
    };
    let kept = snapshot("snap-kept").await;
    let leaked = snapshot("snap-leak").await;
    drop(host);
    bound(&client, "pv-a", "cb-pvc-a").await;
    csidriver(&client).await;
    snapshot_content_api(&client).await;
    snapshot_content(&client, "content-kept", &kept).await;
    snapshot_content(&client, "content-lost", "cb-snap-gone").await;
    // The single-node volume attached to two nodes; a volume the backend lost, still attached.
    objects::add_attachment(&client, DRIVER, "pv-a", "n1", true).await;
    objects::add_attachment(&client, DRIVER, "pv-a", "n2", true).await;
    bound(&client, "pv-ghost", "cb-ghost").await;
    objects::add_attachment(&client, DRIVER, "pv-ghost", "n1", true).await;

    let (_, report) = audit(&api, &["--grace", "0s", "--orphan-age", "0s"]);
    assert_eq!(
        found(&report),
        [
            ("attachment-conflict".into(), "volume/cb-pvc-a".into()),
            ("pv-without-volume".into(), "pv/pv-ghost".into()),
            ("attachment-without-volume".into(), "volume/cb-ghost".into()),
            (
                "snapshot-content-without-snapshot".into(),
                "volumesnapshotcontent/content-lost".into()
            ),
            (
                "snapshot-without-content".into(),
                format!("snapshot/{leaked}")
            ),
        ],
        "{report:#}"
    );
    let conflict = report["findings"][0]["evidence"].to_string();
    assert!(conflict.contains("n1, n2"), "{conflict}");
    let severities: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["severity"].as_str().unwrap())
        .collect();
    // The lost content is bound to a VolumeSnapshot (a restore would fail); the leaked
    // snapshot's age is unknown (check-breaker says none).
    assert_eq!(severities, ["CRITICAL", "CRITICAL", "HIGH", "HIGH", "LOW"]);
    assert_eq!(report["scanned"]["backend snapshots"], 2);
    assert_eq!(report["scanned"]["VolumeSnapshotContents"], 2);
}

#[tokio::test]
async fn the_node_part_finds_directories_nothing_explains_with_the_node_plugins_rights() {
    let (api, client, host, _root) = driver(&["pvc-x"]).await;
    drop(host);
    // A volume being deleted, whose directory this node has not removed yet.
    let record = objects::cleanup_record(
        "nlc-known",
        "nlc-known",
        Some(DRIVER),
        serde_json::json!({"volume_id": "nlc-known", "created_at": "2026-01-01T00:00:00Z"}),
    );
    Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), "default")
        .create(&Default::default(), &record)
        .await
        .unwrap();
    // The node's directories: the backend's volume, the recorded one, a stray one and a stray
    // one made a moment ago; all but the last two hours old.
    let dirs = tempfile::tempdir().unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    for name in ["cb-pvc-x", "nlc-known", "stray", "fresh"] {
        let dir = dirs.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        if name != "fresh" {
            std::fs::File::open(&dir)
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
    }
    // As the node plugin's account: its namespace's ConfigMaps, nothing cluster-wide.
    let root = dirs.path().to_str().unwrap();
    let out = audit_of(
        &component(CHECK_BREAKER),
        &api.node_kubeconfig(),
        &["--local-dir-root", root, "--output", "json"],
    )
    .output()
    .unwrap();
    let report = report_of(&out);
    let stray = format!("dir:{}/stray", dirs.path().display());
    assert_eq!(
        found(&report),
        [("directory-unexplained".into(), stray)],
        "{report:#}"
    );
    assert_eq!(report["scanned"]["directories"], 4);
    assert_eq!(
        out.status.code(),
        Some(0),
        "MEDIUM is below the HIGH threshold"
    );
}

/// RDS on the fake router: its disks against the PVs. A disk of the router that is not this
/// driver's (another slot and NQN) is never called an orphan, and a disk the host made outside
/// the cluster (no record there) is one of unknown age. The backend itself checks each
/// StorageClass's parameters: a typo and a value create-volume would refuse fail the check.
#[tokio::test]
async fn rds_disks_against_pvs_only_this_drivers_and_classes_the_backend_refuses() {
    use modcsi_tests::fake_rds::FakeRds;
    let router = FakeRds::start(std::path::Path::new(env!("CARGO_BIN_EXE_fake-routeros"))).await;
    let made = kept_and_leaked(router.host.client.controller.clone(), |request| {
        request.capacity_range = Some(modcsi::proto::CapacityRange {
            required_bytes: 1 << 30,
            limit_bytes: 0,
        });
    })
    .await;
    let state = router.state.path().join("state.json");
    let mut disks: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    disks["disks"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "slot": "backup-1",
            "file_path": "storage-pool/backup-1.img",
            "file_size": 1u64 << 30,
            "nvme_export": true,
            "nvme_port": 4420,
            "nvme_nqn": "nqn.2000-02.com.mikrotik:backup-1"
        }));
    std::fs::write(&state, serde_json::to_vec(&disks).unwrap()).unwrap();
    let api = KubeApi::start_deployed().await;
    let client = api.client().await;
    csidriver(&client).await;
    bound(&client, "pv-kept", &made[0]).await;
    bound(
        &client,
        "pv-lost",
        "pvc-00000000-0000-4000-8000-000000000000",
    )
    .await;
    let provisioners = ("csi.storage.k8s.io/fstype", "xfs");
    class(&client, "rds-good", &[("nvmePort", "4420"), provisioners]).await;
    class(&client, "rds-typo", &[("nvmePrt", "4420")]).await;
    class(&client, "rds-bad-port", &[("nvmePort", "70000")]).await;
    // The kept volume's PV promises more than the router's pool holds (64 GiB): overcommitted.
    let good = serde_json::json!({"storageClassName": "rds-good"});
    spec(&client, "pv-kept", good, "100Gi").await;
    let config = router.state.path().join("backend.toml");
    let out = audit_of(
        &component(modcsi_tests::RDS),
        &api.kubeconfig(),
        &["--backend-config", config.to_str().unwrap()],
    )
    .args(["--grace", "0s", "--orphan-age", "0s", "--output", "json"])
    .output()
    .unwrap();
    let report = report_of(&out);
    assert_eq!(
        found(&report),
        [
            ("pv-without-volume".into(), "pv/pv-lost".into()),
            (
                "config-check".into(),
                "check/storageclass-parameters".into()
            ),
            ("overcommitted".into(), "storageclass/rds-good".into()),
            ("volume-without-pv".into(), format!("volume/{}", made[1])),
        ],
        "{report:#}"
    );
    assert_eq!(report["findings"][3]["severity"], "LOW", "{report:#}");
    let good = (report["usage"]["classes"].as_array().unwrap().iter())
        .find(|c| c["class"] == "rds-good")
        .unwrap();
    assert_eq!(
        (&good["pool_bytes"], &good["overcommit_percent"]),
        (&serde_json::json!(64u64 << 30), &serde_json::json!(156)),
        "{good}"
    );
    assert_eq!(
        report["scanned"]["backend volumes"], 2,
        "not the router's backup disk"
    );
    let evidence = report["findings"][1]["evidence"][0].as_str().unwrap();
    assert!(
        evidence.contains("rds-typo: the parameter nvmePrt is not one this backend reads")
            && evidence.contains("rds-bad-port: nvmePort \"70000\"")
            && !evidence.contains("rds-good"),
        "{evidence}"
    );
}

/// Emma on the fake API: its data volumes against the PVs (the VMs' system disks are not
/// volumes), and its StorageClasses as the backend reads them, data centers asked of the API.
#[tokio::test]
async fn emma_volumes_against_pvs_and_classes_the_api_refuses() {
    use modcsi_tests::fake_emma::FakeEmmaOptions;
    use modcsi_tests::fake_emma::rig::{EMMA, EmmaRig, host_config};
    let rig = EmmaRig::start(
        FakeEmmaOptions::default(),
        std::time::Duration::from_secs(10),
    )
    .await;
    let made = kept_and_leaked(rig.host.client.controller.clone(), |request| {
        request.parameters = [("dataCenterId", "aws-eu-central-1")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into();
    })
    .await;
    let api = KubeApi::start_deployed().await;
    let client = api.client().await;
    csidriver(&client).await;
    bound(&client, "pv-kept", &made[0]).await;
    bound(&client, "pv-lost", "999999").await;
    class(&client, "emma-ssd", &[("type", "ssd")]).await;
    let here = [("dataCenterId", "aws-eu-central-1"), ("type", "hdd")];
    class(&client, "emma-here", &here).await;
    class(&client, "emma-moon", &[("dataCenterId", "moon-base-1")]).await;
    class(&client, "emma-nvme", &[("type", "nvme")]).await;
    let files = tempfile::tempdir().unwrap();
    let config = host_config(&rig.fake, files.path(), rig.fake.client_secret());
    let mut audit = audit_of(
        &component(EMMA),
        &api.kubeconfig(),
        &["--backend-config", config.to_str().unwrap()],
    );
    audit.args(["--grace", "0s", "--orphan-age", "0s", "--output", "json"]);
    // The fake API answers on this test's runtime: wait for the audit off it.
    let out = tokio::task::spawn_blocking(move || audit.output())
        .await
        .unwrap()
        .unwrap();
    let report = report_of(&out);
    let mut kinds = found(&report);
    kinds.sort();
    assert_eq!(
        kinds,
        [
            (
                "config-check".into(),
                "check/storageclass-parameters".into()
            ),
            ("pv-without-volume".into(), "pv/pv-lost".into()),
            ("volume-without-pv".into(), format!("volume/{}", made[1])),
        ],
        "{report:#}"
    );
    assert_eq!(report["scanned"]["backend volumes"], 2, "data volumes only");
    let checks = report["checks"].as_array().unwrap();
    let parameters = checks
        .iter()
        .find(|c| c["name"] == "storageclass-parameters")
        .unwrap();
    let detail = parameters["detail"].as_str().unwrap();
    assert!(
        detail.contains("emma-moon: data center \"moon-base-1\" is not one of Emma's")
            && detail.contains("emma-nvme: type \"nvme\": not one of ssd, hdd, ssd-plus")
            && !detail.contains("emma-ssd")
            && !detail.contains("emma-here"),
        "{detail}"
    );
}

/// tmpfs mounts of 64 MiB, lazily unmounted when dropped, whatever the test did.
#[derive(Default)]
struct Tmpfs(Vec<std::path::PathBuf>);

impl Tmpfs {
    fn mount(&mut self, at: &std::path::Path) {
        nix::mount::mount(
            Some("tmpfs"),
            at,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=64m"),
        )
        .unwrap();
        self.0.push(at.to_owned());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        for at in &self.0 {
            let _ = nix::mount::umount2(at, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// The node part with kubelet's directory: the driver's volumes mounted into pods there (real
/// mounts, kubelet's `vol_data.json` beside each) whose own filesystem holds under a tenth of the
/// PV's size; a fuller one, another driver's and a mount point kubelet has not mounted yet are
/// not findings.
#[tokio::test]
async fn volumes_mounted_into_pods_that_stay_nearly_empty_are_found_on_their_node() {
    let api = KubeApi::start_deployed().await;
    let client = api.client().await;
    let kubelet = tempfile::tempdir().unwrap();
    let mut mounted = Tmpfs::default();
    for (pv, driver, used_mib, mount) in [
        ("pv-empty", DRIVER, 1, true),
        ("pv-full", DRIVER, 40, true),
        ("pv-foreign", "other.csi.example.com", 1, true),
        ("pv-unmounted", DRIVER, 0, false),
    ] {
        bound(&client, pv, &format!("cb-{pv}")).await;
        spec(&client, pv, serde_json::json!({}), "64Mi").await;
        let dir = kubelet
            .path()
            .join(format!("pods/uid-{pv}/volumes/kubernetes.io~csi/{pv}"));
        std::fs::create_dir_all(dir.join("mount")).unwrap();
        let data = serde_json::json!({
            "driverName": driver, "volumeHandle": format!("cb-{pv}"), "specVolID": pv,
            "nodeName": "test-node", "attachmentID": "", "volumeLifecycleMode": "Persistent",
        });
        std::fs::write(dir.join("vol_data.json"), data.to_string()).unwrap();
        if !mount {
            continue;
        }
        let target = dir.join("mount");
        mounted.mount(&target);
        std::fs::write(target.join("data"), vec![7u8; used_mib << 20]).unwrap();
    }
    let dir = kubelet.path().to_str().unwrap();
    let out = audit_of(
        &component(CHECK_BREAKER),
        &api.node_kubeconfig(),
        &[
            "--kubelet-root",
            dir,
            "--underused-age",
            "0s",
            "--output",
            "json",
        ],
    )
    .output()
    .unwrap();
    let report = report_of(&out);
    assert_eq!(
        found(&report),
        [("volume-underused".into(), "pv/pv-empty".into())],
        "{report:#}"
    );
    assert_eq!(report["scanned"]["volumes mounted into pods"], 2);
    let evidence = report["findings"][0]["evidence"][0].as_str().unwrap();
    assert!(
        evidence.contains("of 67108864 bytes") && evidence.contains("asks for 67108864"),
        "{evidence}"
    );
    // Younger than the default week: nothing yet.
    let out = audit_of(
        &component(CHECK_BREAKER),
        &api.node_kubeconfig(),
        &["--kubelet-root", dir, "--output", "json"],
    )
    .output()
    .unwrap();
    assert_eq!(found(&report_of(&out)), []);
}
