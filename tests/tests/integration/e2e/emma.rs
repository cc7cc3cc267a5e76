//! Emma against the fake Emma API (HTTPS on the node's address, which pods reach, with a test CA
//! given to the chart): the node plugin finds its VM and data center through the API, the real
//! provisioner creates the volume where the pod's node is (WaitForFirstConsumer), the attacher
//! attaches it (the fake's loop device appears under /dev/disk/by-id, as a cloud disk would),
//! kubelet stages and publishes it, the pod writes, the resizer and kubelet grow it, and deleting
//! everything removes the volume at Emma. The scrape shows the HTTP requests per target.

use std::time::Duration;

use modcsi_tests::e2e::{Cluster, sample};
use modcsi_tests::fake_emma::{FakeEmma, FakeEmmaOptions};

const RELEASE: &str = "e2e-emma";
const MINUTE: Duration = Duration::from_secs(60);

const CLAIM_AND_POD: &str = r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: emma-a, namespace: default}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: emma-ssd
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: Pod
metadata: {name: emma-a, namespace: default}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: user
      image: modcsi.local/busybox:1
      imagePullPolicy: Never
      command: [sh, -c, "echo kept at Emma > /data/note && sleep 3600"]
      volumeMounts: [{name: data, mountPath: /data}]
  volumes:
    - name: data
      persistentVolumeClaim: {claimName: emma-a}
"#;

#[test]
#[ignore = "needs the single-node cluster: just e2e"]
fn a_claim_is_provisioned_attached_used_expanded_and_deleted_through_the_api() {
    let c = Cluster::from_env();
    let node_ip = c.field(
        "",
        &format!("node/{}", c.node),
        "{.status.addresses[?(@.type==\"InternalIP\")].address}",
    );
    // The fake serves from its own runtime's threads while this test waits on the cluster.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fake = runtime.block_on(FakeEmma::start(FakeEmmaOptions {
        listen: format!("{node_ip}:0").parse().unwrap(),
        extra_names: vec![node_ip.clone()],
        // Where the node plugin (the node's /dev) looks for attached disks.
        by_id: Some("/dev/disk/by-id".into()),
        ..Default::default()
    }));

    let base = format!(
        "backend.config.common.http.targets.emma.base-url={}",
        fake.base_url()
    );
    let ca = format!("backend.secret.files.ca={}", fake.ca_file().display());
    let id = format!("backend.secret.files.client-id={}", fake.client_id());
    let secret = format!(
        "backend.secret.files.client-secret={}",
        fake.client_secret()
    );
    c.install(
        RELEASE,
        "emma",
        &[
            "--set-string",
            &base,
            "--set-string",
            "backend.config.common.http.targets.emma.ca-file=/etc/modcsi/secrets/ca",
            // The fake's VMs have made-up addresses: this node is VM 101 by configuration.
            "--set-string",
            "backend.config.node.emma.vm-id=101",
            "--set",
            "backend.secret.create=true",
            "--set-file",
            &ca,
            "--set-string",
            &id,
            "--set-string",
            &secret,
            // This sandbox grows xfs online, not ext4 (no CAP_SYS_RESOURCE).
            "--set-json",
            r#"storageClasses=[{"name":"emma-ssd","volumeBindingMode":"WaitForFirstConsumer","allowVolumeExpansion":true,"parameters":{"type":"ssd","csi.storage.k8s.io/fstype":"xfs"}}]"#,
        ],
    );
    c.wait_registered("csi.emma.ms");
    let node_id = c.field(
        "",
        &format!("csinode/{}", c.node),
        "{.spec.drivers[?(@.name==\"csi.emma.ms\")].nodeID}",
    );
    assert_eq!(node_id, "101", "the node is its VM");

    // Provisioned where the pod's node is, attached, staged and written by the pod.
    c.apply(CLAIM_AND_POD);
    let started = std::time::Instant::now();
    while c.field("default", "pod/emma-a", "{.status.phase}") != "Running" {
        assert!(
            started.elapsed() < 3 * MINUTE,
            "the pod did not run in 3 min\n{}\n{}\n{}",
            c.describe("default"),
            c.logs(RELEASE, "controller"),
            c.logs(RELEASE, "node")
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let pv = c.field("default", "pvc/emma-a", "{.spec.volumeName}");
    let handle = c.field("", &format!("pv/{pv}"), "{.spec.csi.volumeHandle}");
    let volumes = fake.data_volumes();
    assert_eq!(volumes.len(), 1, "{volumes:?}");
    assert_eq!(volumes[0]["id"].to_string(), handle);
    assert_eq!(volumes[0]["attachedToId"], 101);
    assert_eq!(volumes[0]["dataCenter"]["id"], "aws-eu-central-1");
    let note = c.kubectl(&["-n", "default", "exec", "emma-a", "--", "cat", "/data/note"]);
    assert_eq!(note.trim(), "kept at Emma");

    // Expanded: Emma's volume grows (the resizer), then the filesystem (kubelet).
    c.kubectl(&[
        "-n",
        "default",
        "patch",
        "pvc",
        "emma-a",
        "-p",
        r#"{"spec":{"resources":{"requests":{"storage":"2Gi"}}}}"#,
    ]);
    c.wait("the claim to grow to 2Gi", 3 * MINUTE, || {
        (c.field("default", "pvc/emma-a", "{.status.capacity.storage}") == "2Gi").then_some(())
    });
    assert_eq!(fake.data_volumes()[0]["sizeGb"], 2);
    let df = c.kubectl(&["-n", "default", "exec", "emma-a", "--", "df", "-k", "/data"]);
    let kib: u64 = df
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert!(kib > 1 << 20, "the filesystem grew past 1 GiB: {df}");

    // Deleted: detached and gone at Emma.
    c.kubectl(&["-n", "default", "delete", "pod/emma-a", "--wait=true"]);
    c.kubectl(&["-n", "default", "delete", "pvc/emma-a", "--wait=false"]);
    c.wait("the volume to go at Emma", 3 * MINUTE, || {
        fake.data_volumes().is_empty().then_some(())
    });

    let controller = c.scrape(RELEASE, "controller", 9810);
    for series in [
        r#"modcsi_csi_operations_total{method="CreateVolume",code="OK"}"#,
        r#"modcsi_csi_operations_total{method="ControllerPublishVolume",code="OK"}"#,
        r#"modcsi_csi_operations_total{method="ControllerExpandVolume",code="OK"}"#,
        r#"modcsi_csi_operations_total{method="DeleteVolume",code="OK"}"#,
        r#"modcsi_http_requests_total{target="emma",outcome="2xx"}"#,
    ] {
        assert!(
            sample(&controller, series) >= 1.0,
            "{series} missing in\n{controller}"
        );
    }
    c.uninstall(RELEASE);
    drop(fake);
}
