//! node-local-cache: a claim is provisioned, a pod on the node writes and reads through
//! kubelet's real NodePublish, and deleting the pod and the claim takes the directory away.
//! The chart's audit service runs beside it: its configuration checks pass on the real
//! install (CSIDriver, CSINode, sidecars, rights) and a healthy claim is no finding.

use std::path::Path;
use std::time::Duration;

use modcsi_tests::e2e::{Cluster, sample};

const RELEASE: &str = "e2e-nlc";
const DRIVER: &str = "node-local-cache.csi.io";
const LOCAL_DIRS: &str = "/var/node-local-cache";

const CLAIM_AND_POD: &str = r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: e2e-nlc, namespace: default}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: node-local-cache-delete
  resources: {requests: {storage: 16Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: e2e-nlc, namespace: default}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: writer
      image: modcsi.local/busybox:1
      imagePullPolicy: Never
      command: [sh, -c, "echo written-through-kubelet > /data/file && sleep 3600"]
      volumeMounts: [{name: data, mountPath: /data}]
  volumes:
    - name: data
      persistentVolumeClaim: {claimName: e2e-nlc}
"#;

#[test]
#[ignore = "needs the single-node cluster: just e2e"]
fn a_pod_writes_through_kubelets_publish_and_the_directory_goes_with_the_claim() {
    let c = Cluster::from_env();
    // The audit service too, scanning every few seconds; open to the test's reads (the
    // TokenReview path is the integration tests').
    c.install(
        RELEASE,
        "node-local-cache",
        &[
            "--set",
            "audit.enabled=true",
            "--set",
            "audit.interval=3s",
            "--set",
            "audit.access=open",
        ],
    );
    c.wait_registered(DRIVER);

    c.apply(CLAIM_AND_POD);
    c.wait("the pod to run", Duration::from_secs(120), || {
        (c.field("default", "pod/e2e-nlc", "{.status.phase}") == "Running").then_some(())
    });
    let pv = c.field("default", "pvc/e2e-nlc", "{.spec.volumeName}");
    let handle = c.field("", &format!("pv/{pv}"), "{.spec.csi.volumeHandle}");
    assert!(!handle.is_empty(), "the claim's PV {pv} names no volume");
    let dir = Path::new(LOCAL_DIRS).join(&handle);
    let file = dir.join("file");
    // Written in the pod, kept in the node's directory of the volume.
    let written = c.wait("the pod's write", Duration::from_secs(30), || {
        std::fs::read_to_string(&file).ok()
    });
    assert_eq!(written, "written-through-kubelet\n");
    let read = c.kubectl(&[
        "-n",
        "default",
        "exec",
        "e2e-nlc",
        "--",
        "cat",
        "/data/file",
    ]);
    assert_eq!(read, written);

    // The audit of the running install: every check passes, and the bound claim is no finding.
    let checks = c.wait(
        "an audit scan that sees the claim",
        Duration::from_secs(60),
        || {
            let usage: serde_json::Value =
                serde_json::from_str(&c.get(RELEASE, "audit", 8090, "/api/v1/usage")).ok()?;
            (usage["usage"]["volumes"] == 1)
                .then(|| c.get(RELEASE, "audit", 8090, "/api/v1/checks"))
        },
    );
    let checks: serde_json::Value = serde_json::from_str(&checks).unwrap();
    for check in checks["checks"].as_array().unwrap() {
        assert_eq!(check["status"], "pass", "{check}");
    }
    let sidecars = checks["checks"].to_string();
    assert!(sidecars.contains("provisioner v"), "{sidecars}");
    let orphans: serde_json::Value =
        serde_json::from_str(&c.get(RELEASE, "audit", 8090, "/api/v1/orphans")).unwrap();
    assert_eq!(orphans["findings"], serde_json::json!([]), "{orphans:#}");

    // The node part, run in the node plugin's pod as the README shows: the pod's volume is
    // found where the real kubelet published it (its vol_data.json), too young to judge, and
    // the volume's directory is explained.
    let selector = format!("app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=node");
    let node_pod = c.kubectl(&[
        "-n",
        "modcsi",
        "get",
        "pod",
        "-l",
        &selector,
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    let report = c.kubectl(&[
        "-n",
        "modcsi",
        "exec",
        &node_pod,
        "-c",
        "modcsi",
        "--",
        "modcsi",
        "audit",
        "--backend",
        "/opt/modcsi/backends/node_local_cache.wasm",
        "--driver-name",
        DRIVER,
        "--cache-dir",
        "/var/lib/modcsi/node-local-cache.csi.io/cache",
        "--local-dir-root",
        LOCAL_DIRS,
        "--kubelet-root",
        &c.kubelet_root,
        "--output",
        "json",
    ]);
    let report: serde_json::Value =
        serde_json::from_str(&report).unwrap_or_else(|e| panic!("{e}: {report}"));
    assert_eq!(
        report["scanned"]["volumes mounted into pods"], 1,
        "{report:#}"
    );
    assert!(
        report["scanned"]["directories"].as_u64() >= Some(1),
        "{report:#}"
    );
    assert_eq!(report["findings"], serde_json::json!([]), "{report:#}");

    c.kubectl(&["-n", "default", "delete", "pod", "e2e-nlc", "--wait=true"]);
    c.kubectl(&["-n", "default", "delete", "pvc", "e2e-nlc", "--wait=true"]);
    c.wait("the PV to go", Duration::from_secs(60), || {
        c.try_kubectl(&["get", "pv", &pv]).is_err().then_some(())
    });
    c.wait("the directory to go", Duration::from_secs(60), || {
        (!dir.exists()).then_some(())
    });

    // What the driver did, as its metrics endpoints tell it.
    let controller = c.scrape(RELEASE, "controller", 9810);
    let node = c.scrape(RELEASE, "node", 9810);
    for (text, series) in [
        (
            &controller,
            r#"modcsi_csi_operations_total{method="CreateVolume",code="OK"}"#,
        ),
        (
            &controller,
            r#"modcsi_csi_operations_total{method="DeleteVolume",code="OK"}"#,
        ),
        (
            &node,
            r#"modcsi_csi_operations_total{method="NodePublishVolume",code="OK"}"#,
        ),
        (
            &node,
            r#"modcsi_csi_operations_total{method="NodeUnpublishVolume",code="OK"}"#,
        ),
        (
            &node,
            r#"modcsi_node_operations_total{operation="publish",outcome="ok"}"#,
        ),
    ] {
        assert!(sample(text, series) >= 1.0, "{series} missing in\n{text}");
    }
    let audit = c.scrape(RELEASE, "audit", 8090);
    let scans = r#"modcsi_audit_scans_total{outcome="ok"}"#;
    assert!(sample(&audit, scans) >= 1.0, "{scans} missing in\n{audit}");
    c.uninstall(RELEASE);
}
