//! RDS against the fake RouterOS (a real sshd on the node's address, which pods reach, its
//! forced command the fake router): the real provisioner creates the disk, the attach-detach controller's
//! VolumeAttachment reaches the real attacher and ControllerPublish, a second node's attachment
//! is refused by fencing with an Event, the resizer grows the disk, the snapshotter snapshots
//! it and a claim is restored from the snapshot, and deleting everything removes the disks.
//!
//! Where the line is: the node plugin's NodeStage connects to the router's NVMe/TCP export, and
//! no NVMe/TCP target exists here (the fake router keeps disks as files; the in-process test
//! fabric that serves them as loop devices in `rds_backend` cannot stand in for the kernel's
//! fabrics in a pod). The stage fails there, and the test checks that it fails at that step,
//! told on the claim.

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use modcsi_tests::e2e::{Cluster, sample};
use modcsi_tests::sshd::Sshd;

const RELEASE: &str = "e2e-rds";
const SECOND_NODE: &str = "e2e-node-b";
const MINUTE: Duration = Duration::from_secs(60);

fn claim_and_pod() -> String {
    r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: rds-a, namespace: default}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: rds
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: Pod
metadata: {name: rds-a, namespace: default}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: user
      image: modcsi.local/busybox:1
      imagePullPolicy: Never
      command: [sleep, "3600"]
      volumeMounts: [{name: data, mountPath: /data}]
  volumes:
    - name: data
      persistentVolumeClaim: {claimName: rds-a}
"#
    .into()
}

/// A second Node (no kubelet behind it) the attacher can name, and a VolumeAttachment of the
/// volume to it: what a racing or stale attach-detach controller would make. (The real one
/// refuses a second pod of a ReadWriteOnce claim itself, so fencing is the line behind it.)
fn second_attachment(pv: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Node
metadata:
  name: {SECOND_NODE}
  annotations: {{volumes.kubernetes.io/controller-managed-attach-detach: "true"}}
---
apiVersion: storage.k8s.io/v1
kind: CSINode
metadata: {{name: {SECOND_NODE}}}
spec:
  drivers:
    - {{name: rds.csi.srvlab.io, nodeID: {SECOND_NODE}}}
---
apiVersion: storage.k8s.io/v1
kind: VolumeAttachment
metadata: {{name: e2e-second}}
spec:
  attacher: rds.csi.srvlab.io
  nodeName: {SECOND_NODE}
  source: {{persistentVolumeName: {pv}}}
"#
    )
}

const SNAPSHOT_AND_RESTORE: &str = r#"
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata: {name: rds-a-snap, namespace: default}
spec:
  volumeSnapshotClassName: rds
  source: {persistentVolumeClaimName: rds-a}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: rds-b, namespace: default}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: rds
  resources: {requests: {storage: 2Gi}}
  dataSource: {apiGroup: snapshot.storage.k8s.io, kind: VolumeSnapshot, name: rds-a-snap}
"#;

/// The router's disk files (one `.img` per volume and snapshot).
fn disks(router: &Path) -> Vec<(String, u64)> {
    let dir = router.join("files/storage-pool/metal-csi");
    let mut found: Vec<(String, u64)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.ends_with(".img")
                .then(|| (name, e.metadata().map_or(0, |m| m.len())))
        })
        .collect();
    found.sort();
    found
}

/// The message of a Warning Event of `reason` on claim `claim` in `default` that names
/// `about` (events of earlier runs may be there too), once there is one.
fn event(c: &Cluster, reason: &str, claim: &str, about: &str) -> String {
    let selector = format!(
        "reason={reason},involvedObject.kind=PersistentVolumeClaim,involvedObject.name={claim}"
    );
    c.wait(&format!("a {reason} event on {claim}"), 2 * MINUTE, || {
        c.try_kubectl(&[
            "-n",
            "default",
            "get",
            "events",
            "--field-selector",
            &selector,
            "-o",
            "jsonpath={range .items[*]}{.message}{\"\\n\"}{end}",
        ])
        .unwrap_or_default()
        .lines()
        .find(|m| m.contains(about))
        .map(str::to_owned)
    })
}

struct Stopped(Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
#[ignore = "needs the single-node cluster: just e2e"]
fn a_claim_is_provisioned_attached_fenced_expanded_snapshotted_restored_and_deleted() {
    let c = Cluster::from_env();
    let state = tempfile::tempdir().unwrap();
    let forced = format!(
        "{} --state {}",
        env!("CARGO_BIN_EXE_fake-routeros"),
        state.path().display()
    );
    let node_ip = c.field(
        "",
        &format!("node/{}", c.node),
        "{.status.addresses[?(@.type==\"InternalIP\")].address}",
    );
    let router = Sshd::start_at(Some(&forced), &node_ip);

    // Snapshots need the cluster's part (CRDs and snapshot-controller), as a cluster with
    // snapshots has it; the controller runs here as a process with the admin's credentials.
    let crds = c.tools().join("crds");
    for kind in [
        "volumesnapshotclasses",
        "volumesnapshotcontents",
        "volumesnapshots",
    ] {
        let file = crds.join(format!("snapshot.storage.k8s.io_{kind}.yaml"));
        // Their CEL rules (x-kubernetes-validations) are newer than this v1.20 API server,
        // which cannot check them: applied without them.
        c.kubectl(&["apply", "--validate=false", "-f", file.to_str().unwrap()]);
    }
    let log = std::fs::File::create(state.path().join("snapshot-controller.log")).unwrap();
    let _snapshot_controller = Stopped(
        Command::new(c.tools().join("snapshot-controller"))
            .args(["--kubeconfig", c.kubeconfig(), "--leader-election=false"])
            .stderr(log)
            .spawn()
            .unwrap(),
    );

    let port = format!(
        "backend.config.controller.ssh.targets.rds.port={}",
        router.port
    );
    let address = format!("backend.config.controller.ssh.targets.rds.address={node_ip}");
    let nvme = format!("backend.config.common.rds.nvme-address={node_ip}");
    let key = format!(
        "backend.secret.files.ssh-key={}",
        router.path("client_key").display()
    );
    let known = format!(
        "backend.secret.files.known_hosts={}",
        router.known_hosts().display()
    );
    c.install(
        RELEASE,
        "rds",
        &[
            "--set-string",
            &address,
            "--set",
            &port,
            "--set-string",
            &nvme,
            "--set-string",
            "backend.config.controller.ssh.targets.rds.user=root",
            "--set",
            "backend.secret.create=true",
            "--set-file",
            &key,
            "--set-file",
            &known,
            "--set",
            "volumeSnapshotClass.create=true",
        ],
    );

    // Provisioned: the router has the disk.
    c.apply(&claim_and_pod());
    let pv = c.wait("rds-a to be bound", 2 * MINUTE, || {
        let pv = c.field("default", "pvc/rds-a", "{.spec.volumeName}");
        (!pv.is_empty()).then_some(pv)
    });
    let handle = c.field("", &format!("pv/{pv}"), "{.spec.csi.volumeHandle}");
    assert_eq!(
        disks(state.path()).len(),
        1,
        "{handle}: {:?}",
        disks(state.path())
    );

    // Attached to the pod's node by the attach-detach controller and the attacher.
    let attached =
        format!("{{.items[?(@.spec.source.persistentVolumeName==\"{pv}\")].status.attached}}");
    c.wait("the volume to attach to the node", 2 * MINUTE, || {
        (c.field("", "volumeattachments", &attached) == "true").then_some(())
    });
    // The node stage reaches the NVMe/TCP connect, and no target answers here.
    let staged = event(&c, "StageFailed", "rds-a", &handle);
    assert!(
        staged.contains(&handle) && staged.contains("NVMe"),
        "{staged}"
    );

    // A second node is refused while the first holds the volume.
    c.apply(&second_attachment(&pv));
    let conflict = event(&c, "AttachmentConflict", "rds-a", &handle);
    assert!(
        conflict.contains(SECOND_NODE) && conflict.contains(&c.node),
        "{conflict}"
    );
    let refused = c.wait("the second attachment's error", MINUTE, || {
        let e = c.field(
            "",
            "volumeattachment/e2e-second",
            "{.status.attachError.message}",
        );
        (!e.is_empty()).then_some(e)
    });
    assert!(refused.contains(&c.node), "{refused}");
    c.kubectl(&["delete", "volumeattachment", "e2e-second", "--wait=true"]);

    // Expanded by the resizer: the PV and the router's disk grow.
    c.kubectl(&[
        "-n",
        "default",
        "patch",
        "pvc",
        "rds-a",
        "-p",
        r#"{"spec":{"resources":{"requests":{"storage":"2Gi"}}}}"#,
    ]);
    c.wait("the PV to grow to 2Gi", 2 * MINUTE, || {
        (c.field("", &format!("pv/{pv}"), "{.spec.capacity.storage}") == "2Gi").then_some(())
    });
    assert!(
        disks(state.path())[0].1 >= 2 << 30,
        "{:?}",
        disks(state.path())
    );

    // Snapshotted, and a claim restored from the snapshot.
    c.apply(SNAPSHOT_AND_RESTORE);
    c.wait("the snapshot to be ready", 2 * MINUTE, || {
        (c.field(
            "default",
            "volumesnapshot/rds-a-snap",
            "{.status.readyToUse}",
        ) == "true")
            .then_some(())
    });
    c.wait("rds-b to be restored", 2 * MINUTE, || {
        (c.field("default", "pvc/rds-b", "{.status.phase}") == "Bound").then_some(())
    });
    assert!(disks(state.path()).len() >= 3, "{:?}", disks(state.path()));

    // Deleted: the pod, the claims and the snapshot; the router keeps nothing.
    for object in [
        "pod/rds-a",
        "pvc/rds-b",
        "volumesnapshot/rds-a-snap",
        "pvc/rds-a",
    ] {
        c.kubectl(&["-n", "default", "delete", object, "--wait=false"]);
    }
    c.wait("the router's disks to go", 3 * MINUTE, || {
        disks(state.path()).is_empty().then_some(())
    });

    let controller = c.scrape(RELEASE, "controller", 9810);
    for series in [
        r#"modcsi_csi_operations_total{method="CreateVolume",code="OK"}"#,
        r#"modcsi_csi_operations_total{method="ControllerPublishVolume",code="OK"}"#,
        r#"modcsi_csi_operations_total{method="ControllerExpandVolume",code="OK"}"#,
        r#"modcsi_csi_operations_total{method="CreateSnapshot",code="OK"}"#,
        r#"modcsi_csi_operations_total{method="DeleteVolume",code="OK"}"#,
        r#"modcsi_fencing_decisions_total{verdict="refused"}"#,
        r#"modcsi_ssh_calls_total{target="rds",outcome="ok"}"#,
    ] {
        assert!(
            sample(&controller, series) >= 1.0,
            "{series} missing in\n{controller}"
        );
    }
    c.uninstall(RELEASE);
    let _ = c.try_kubectl(&["delete", "csinode", SECOND_NODE]);
    let _ = c.try_kubectl(&["delete", "node", SECOND_NODE]);
}
