//! `modcsi audit` on a real API server, against a driver whose backend lists its volumes
//! (check-breaker, its volumes in the driver's ConfigMaps): a PV whose volume is gone and a
//! volume no PV names are found with their evidence, a healthy bound volume is not, nothing is
//! found while everything is younger than the grace and orphan ages, and the exit status
//! follows --fail-on.

use k8s_openapi::api::core::v1::PersistentVolume;
use kube::Api;
use kube::api::{Patch, PatchParams};
use modcsi::proto::CreateVolumeRequest;
use modcsi_tests::kube_api::KubeApi;
use modcsi_tests::kube_api::objects::{self, DRIVER};
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

fn create(name: &str) -> CreateVolumeRequest {
    let mut request = requests::create(name);
    request.parameters.insert("flavour".into(), "plain".into());
    request
}

/// `modcsi audit` with `flags`: its exit status and its JSON report.
fn audit(api: &KubeApi, flags: &[&str]) -> (Option<i32>, serde_json::Value) {
    let out = std::process::Command::new(modcsi_binary())
        .args(["audit", "--driver-name", DRIVER, "--namespace", "default"])
        .arg("--kubeconfig")
        .arg(api.kubeconfig())
        .arg("--backend")
        .arg(component(CHECK_BREAKER))
        .arg("--cache-dir")
        .arg(shared_cache_dir())
        .args(["--output", "json"])
        .args(flags)
        .output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), report)
}

#[tokio::test]
async fn orphans_both_ways_are_found_and_healthy_or_young_volumes_are_not() {
    let api = KubeApi::start_deployed().await;
    let client = api.client().await;
    let root = tempfile::tempdir().unwrap();
    let config = api.controller_kubeconfig().to_str().unwrap().to_owned();
    let flags = cluster_flags("controller", "controller", &config);
    let host = ServeProcess::start_with(&modcsi_binary(), CHECK_BREAKER, root.path(), &flags).await;
    let mut controller = host.client.controller.clone();
    for name in ["pvc-healthy", "pvc-leak"] {
        controller.create_volume(create(name)).await.unwrap();
    }
    bound(&client, "pv-healthy", "cb-pvc-healthy").await;
    bound(&client, "pv-lost", "cb-gone").await;
    // The host writes its records after answering: let them land.
    drop(host);

    // Everything is seconds old: inside the grace and orphan ages, nothing is called an orphan.
    let (status, young) = audit(&api, &[]);
    assert_eq!(status, Some(0), "{young:#}");
    assert_eq!(young["findings"], serde_json::json!([]), "{young:#}");
    assert_eq!(young["scanned"]["PVs"], 2);
    assert_eq!(young["scanned"]["backend volumes"], 2);

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
            ("volume-without-pv", "HIGH", "volume/cb-pvc-leak"),
        ],
        "{report:#}"
    );
    let evidence = report["findings"][0]["evidence"].to_string();
    assert!(
        evidence.contains("cb-gone") && evidence.contains("default/pv-lost"),
        "{evidence}"
    );
    assert!(report["findings"][1]["age_seconds"].as_i64() >= Some(0));
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
