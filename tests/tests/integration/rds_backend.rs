//! The RDS backend end to end against the fake RouterOS behind a real OpenSSH server: the
//! volume's bytes live in the "router's" sparse file, which the test fabric attaches as a loop
//! device when the host connects to its NQN, so create → publish → stage → write → expand →
//! snapshot → restore → unstage → delete runs through real SSH, real loop devices and real
//! mounts. Plus: names with metacharacters never reach the router, a session dropped mid-call
//! is UNAVAILABLE and the retry finds the disk, and a public-driver PV stages through `locate`.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use modcsi::proto::volume_capability::{AccessMode, AccessType, MountVolume, access_mode::Mode};
use modcsi::proto::*;
use modcsi_tests::fake_rds::FakeRds;
use modcsi_tests::requests;
use tonic::Code;

const GIB: i64 = 1 << 30;

/// The fake router and a host driving it.
async fn router() -> FakeRds {
    FakeRds::start(Path::new(env!("CARGO_BIN_EXE_fake-routeros"))).await
}

fn create(name: &str, bytes: i64) -> CreateVolumeRequest {
    let mut r = requests::create(name);
    r.capacity_range = Some(CapacityRange {
        required_bytes: bytes,
        limit_bytes: 0,
    });
    r
}

/// `pvc-` and a UUID, the form of every volume id (and NQN suffix) this backend makes.
fn is_pvc_uuid(id: &str) -> bool {
    id.strip_prefix("pvc-").is_some_and(|u| {
        u.len() == 36
            && u.split('-').map(str::len).eq([8, 4, 4, 4, 12])
            && u.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
    })
}

fn xfs() -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: "xfs".into(),
            ..Default::default()
        })),
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
    }
}

fn stage(id: &str, staging: &str, context: &HashMap<String, String>) -> NodeStageVolumeRequest {
    NodeStageVolumeRequest {
        volume_id: id.into(),
        staging_target_path: staging.into(),
        volume_capability: Some(xfs()),
        publish_context: context.clone(),
        ..Default::default()
    }
}

fn unstage(id: &str, staging: &str) -> NodeUnstageVolumeRequest {
    NodeUnstageVolumeRequest {
        volume_id: id.into(),
        staging_target_path: staging.into(),
    }
}

const VOLUME: &str = "pvc-3f1c2a9e-1b2c-4d5e-8f90-0a1b2c3d4e5f";
const RESTORED: &str = "pvc-7b8c9d0e-1f2a-4b3c-9d4e-5f6a7b8c9d0e";

#[tokio::test]
async fn a_volume_lives_in_the_routers_file_from_create_to_delete() {
    let mut router = router().await;
    let mut controller = router.host.client.controller.clone();
    let mut node = router.host.client.node.clone();

    // 1.5 GiB asked: rounded up to whole MiB, never down; the same request twice is one disk.
    let volume = controller
        .create_volume(create(VOLUME, 3 * GIB / 2))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    let again = controller
        .create_volume(create(VOLUME, 3 * GIB / 2))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(volume.capacity_bytes, 3 * GIB / 2);
    assert_eq!(again.volume_id, volume.volume_id);
    assert_eq!(
        std::fs::metadata(router.file(VOLUME)).unwrap().len(),
        3 << 29
    );
    let err = controller
        .create_volume(create(VOLUME, 2 * GIB))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{}", err.message());
    let capacity = controller
        .get_capacity(GetCapacityRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(capacity.available_capacity, (64 * GIB) - 3 * GIB / 2);

    let published = controller
        .controller_publish_volume(ControllerPublishVolumeRequest {
            volume_id: VOLUME.into(),
            node_id: "test-node".into(),
            volume_capability: Some(xfs()),
            volume_context: volume.volume_context.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .publish_context;
    assert_eq!(
        published["modcsi.io/nvme-nqn"],
        format!("nqn.2000-02.com.mikrotik:{VOLUME}")
    );
    assert_eq!(published["modcsi.io/nvme-portals"], "192.0.2.10:4420");

    let device = router.export(VOLUME);
    let (staging, target) = (router.host.target("s"), router.host.target("t"));
    for _ in 0..2 {
        node.node_stage_volume(stage(VOLUME, &staging, &published))
            .await
            .unwrap();
    }
    let mut publish = requests::publish(&volume, &target, false);
    publish.staging_target_path = staging.clone();
    publish.publish_context = published.clone();
    publish.volume_capability = Some(xfs());
    node.node_publish_volume(publish.clone()).await.unwrap();
    std::fs::write(Path::new(&target).join("data"), b"in the router's file").unwrap();
    Command::new("sync").status().unwrap();

    // Grown on the router (the file), then on the node (the filesystem, for real).
    let grown = controller
        .controller_expand_volume(ControllerExpandVolumeRequest {
            volume_id: VOLUME.into(),
            capacity_range: Some(CapacityRange {
                required_bytes: 2 * GIB,
                limit_bytes: 0,
            }),
            volume_capability: Some(xfs()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(grown.capacity_bytes, 2 * GIB);
    assert!(grown.node_expansion_required);
    assert_eq!(
        std::fs::metadata(router.file(VOLUME)).unwrap().len(),
        2 << 30
    );
    Command::new("losetup")
        .args(["-c", &device])
        .status()
        .unwrap();
    let expanded = node
        .node_expand_volume(NodeExpandVolumeRequest {
            volume_id: VOLUME.into(),
            volume_path: target.clone(),
            staging_target_path: staging.clone(),
            volume_capability: Some(xfs()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(expanded.capacity_bytes, 2 * GIB);

    // A snapshot, restored into a new volume whose content matches.
    let snapshot = controller
        .create_snapshot(CreateSnapshotRequest {
            source_volume_id: VOLUME.into(),
            name: "nightly-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    assert_eq!(snapshot.source_volume_id, VOLUME);
    let listed = controller
        .list_snapshots(ListSnapshotsRequest {
            source_volume_id: VOLUME.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.entries.len(), 1);
    // Down on the node, every call twice (xfs will not mount the restored copy, which has
    // the same UUID, while the original is mounted).
    for _ in 0..2 {
        node.node_unpublish_volume(requests::unpublish(VOLUME, &target))
            .await
            .unwrap();
    }
    for _ in 0..2 {
        node.node_unstage_volume(unstage(VOLUME, &staging))
            .await
            .unwrap();
    }
    assert!(
        router
            .fabric
            .written()
            .iter()
            .any(|w| w.starts_with("delete")),
        "disconnected"
    );
    let mut restore = create(RESTORED, GIB);
    restore.volume_content_source = Some(VolumeContentSource {
        r#type: Some(volume_content_source::Type::Snapshot(
            volume_content_source::SnapshotSource {
                snapshot_id: snapshot.snapshot_id.clone(),
            },
        )),
    });
    let restored = controller
        .create_volume(restore)
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(
        restored.capacity_bytes,
        2 * GIB,
        "at least the snapshot's size"
    );
    router.export(RESTORED);
    let restored_staging = router.host.target("rs");
    // A public-driver style context would work too; this one carries the host's keys.
    node.node_stage_volume(stage(RESTORED, &restored_staging, &restored.volume_context))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(Path::new(&restored_staging).join("data")).unwrap(),
        b"in the router's file"
    );
    node.node_unstage_volume(unstage(RESTORED, &restored_staging))
        .await
        .unwrap();

    for _ in 0..2 {
        controller
            .controller_unpublish_volume(ControllerUnpublishVolumeRequest {
                volume_id: VOLUME.into(),
                node_id: "test-node".into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    for _ in 0..2 {
        controller
            .delete_snapshot(DeleteSnapshotRequest {
                snapshot_id: snapshot.snapshot_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        for id in [VOLUME, RESTORED] {
            controller
                .delete_volume(requests::delete(id))
                .await
                .unwrap();
        }
    }
    for slot in [VOLUME, RESTORED, &snapshot.snapshot_id] {
        assert!(!router.file(slot).exists(), "{slot}: disk and file gone");
    }
    let log = router.commands();
    assert!(
        log.contains(&format!(
            "/file remove [find name=\"storage-pool/metal-csi/{VOLUME}.img\"]"
        )),
        "{log}"
    );
}

#[tokio::test]
async fn names_with_metacharacters_never_reach_the_router() {
    let router = router().await;
    let mut controller = router.host.client.controller.clone();
    for name in [
        "pvc-1;reboot",
        "pvc-$(id)",
        "pvc-\"x\"",
        "pvc-[find]",
        "pvc-a b",
    ] {
        // Refused by the host's name rules, or (a name that is not the provisioner's
        // `pvc-<uuid>`) given an id of its own: either way the name never reaches the router.
        match controller.create_volume(create(name, GIB)).await {
            Ok(created) => {
                let id = created.into_inner().volume.unwrap().volume_id;
                assert!(is_pvc_uuid(&id), "{name} → {id}");
            }
            Err(err) => assert_eq!(
                err.code(),
                Code::InvalidArgument,
                "{name}: {}",
                err.message()
            ),
        }
    }
    let mut bad_path = create("pvc-ok-1", GIB);
    bad_path
        .parameters
        .insert("volumePath".into(), "/storage-pool/x y".into());
    let err = controller.create_volume(bad_path).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    let log = router.commands();
    for fragment in ["reboot", "$(id)", "\"x\"", "x y", "a b"] {
        assert!(!log.contains(fragment), "{fragment} was sent: {log}");
    }
}

#[tokio::test]
async fn a_session_dropped_mid_create_is_unavailable_and_the_retry_finds_the_disk() {
    let router = router().await;
    let mut controller = router.host.client.controller.clone();
    // The router makes the disk, then the session drops before the answer.
    router.fault("drop=disk-add\n");
    let err = controller
        .create_volume(create(VOLUME, GIB))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert!(router.file(VOLUME).exists(), "the disk was made");
    router.fault("");
    let volume = controller
        .create_volume(create(VOLUME, GIB))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(volume.capacity_bytes, GIB);
    let adds = router
        .commands()
        .lines()
        .filter(|l| l.starts_with("/disk add"))
        .count();
    assert_eq!(
        adds, 1,
        "the retry found the disk instead of adding another"
    );
}

#[tokio::test]
async fn a_public_driver_pv_stages_through_locate() {
    let mut router = router().await;
    let mut controller = router.host.client.controller.clone();
    controller.create_volume(create(VOLUME, GIB)).await.unwrap();
    router.export(VOLUME);
    // Only the public driver's context keys: no modcsi.io/ keys at all.
    let context: HashMap<String, String> = [
        ("nvmeAddress", "192.0.2.10"),
        ("nvmePort", "4420"),
        ("nqn", &format!("nqn.2000-02.com.mikrotik:{VOLUME}")),
        ("volumePath", "/storage-pool/metal-csi"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let staging = router.host.target("legacy");
    let mut request = stage(VOLUME, &staging, &HashMap::new());
    request.volume_context = context;
    let mut node = router.host.client.node.clone();
    node.node_stage_volume(request).await.unwrap();
    assert!(
        modcsi::node::mountinfo::MountTable::read()
            .unwrap()
            .at(Path::new(&staging))
            .is_some()
    );
    node.node_unstage_volume(unstage(VOLUME, &staging))
        .await
        .unwrap();
}

#[tokio::test]
async fn the_routers_other_disks_are_left_alone() {
    let router = router().await;
    let mut controller = router.host.client.controller.clone();
    controller.create_volume(create(VOLUME, GIB)).await.unwrap();
    // A disk the driver did not make: the node's own root disk, say.
    let foreign = Command::new(env!("CARGO_BIN_EXE_fake-routeros"))
        .arg("--state")
        .arg(router.state.path())
        .env(
            "SSH_ORIGINAL_COMMAND",
            "/disk add type=file file-path=/storage-pool/root.img file-size=1G slot=node-root \
             nvme-tcp-export=yes nvme-tcp-server-port=4420 \
             nvme-tcp-server-nqn=nqn.2000-02.com.mikrotik:node-root-disk",
        )
        .status()
        .unwrap();
    assert!(foreign.success());
    let listed = controller
        .list_volumes(ListVolumesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<_> = listed
        .entries
        .iter()
        .filter_map(|e| e.volume.as_ref().map(|v| v.volume_id.as_str()))
        .collect();
    assert_eq!(ids, [VOLUME], "only this driver's volumes are listed");
    let err = controller
        .delete_volume(requests::delete("node-root"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(
        router
            .state
            .path()
            .join("files/storage-pool/root.img")
            .exists()
    );
    // A clone is refused, with the way to do it instead.
    let mut clone = create("pvc-clone-1", GIB);
    clone.volume_content_source = Some(VolumeContentSource {
        r#type: Some(volume_content_source::Type::Volume(
            volume_content_source::VolumeSource {
                volume_id: VOLUME.into(),
            },
        )),
    });
    let err = controller.create_volume(clone).await.unwrap_err();
    assert!(
        matches!(err.code(), Code::InvalidArgument | Code::Unimplemented),
        "{}",
        err.message()
    );
    // Outside the sizes RouterOS takes: OUT_OF_RANGE, nothing sent.
    let err = controller
        .create_volume(create("pvc-huge-1", 17 << 40))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{}", err.message());
    assert!(!router.commands().contains("pvc-huge-1"));
}

#[tokio::test]
async fn router_errors_and_slow_answers_are_reported_not_hidden() {
    let router = FakeRds::start_with(
        Path::new(env!("CARGO_BIN_EXE_fake-routeros")),
        std::time::Duration::from_millis(1500),
    )
    .await;
    let mut controller = router.host.client.controller.clone();
    controller.create_volume(create(VOLUME, GIB)).await.unwrap();
    // RouterOS refuses: the call fails naming the router's words, the disk keeps its size.
    router.fault("fail=disk-set\n");
    let expand = ControllerExpandVolumeRequest {
        volume_id: VOLUME.into(),
        capacity_range: Some(CapacityRange {
            required_bytes: 2 * GIB,
            limit_bytes: 0,
        }),
        ..Default::default()
    };
    let err = controller
        .controller_expand_volume(expand.clone())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{}", err.message());
    assert!(
        err.message().contains("failure: injected"),
        "{}",
        err.message()
    );
    assert_eq!(
        std::fs::metadata(router.file(VOLUME)).unwrap().len(),
        1 << 30
    );
    // The router answers later than the host's call bound (1.5 s; the fake sleeps 5 s and
    // would then succeed): the host answers the caller itself, naming the router.
    router.fault("slow=5000\n");
    let err = controller
        .controller_expand_volume(expand)
        .await
        .unwrap_err();
    assert!(
        matches!(err.code(), Code::DeadlineExceeded | Code::Unavailable),
        "{:?}: {}",
        err.code(),
        err.message()
    );
    assert!(
        err.message().contains("rds"),
        "the backend is named: {}",
        err.message()
    );
}

#[tokio::test]
async fn any_name_gets_a_stable_id_under_the_managed_nqn_prefix() {
    let router = router().await;
    let mut controller = router.host.client.controller.clone();
    let first = controller
        .create_volume(create("nomad-data-1", GIB))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert!(is_pvc_uuid(&first.volume_id), "{}", first.volume_id);
    assert_eq!(
        first.volume_context["nqn"],
        format!("nqn.2000-02.com.mikrotik:{}", first.volume_id)
    );
    let again = controller
        .create_volume(create("nomad-data-1", GIB))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(
        again.volume_id, first.volume_id,
        "the same name, the same id"
    );
    assert!(!router.commands().contains("nomad-data-1"));

    // A snapshot name at the CSI maximum still gives an id that fits, the same every time.
    let name = format!("nightly-{}", "x".repeat(120));
    let snapshot = |name: String| CreateSnapshotRequest {
        source_volume_id: first.volume_id.clone(),
        name,
        ..Default::default()
    };
    let taken = controller
        .create_snapshot(snapshot(name.clone()))
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    assert!(taken.snapshot_id.len() <= 128, "{}", taken.snapshot_id);
    let retaken = controller
        .create_snapshot(snapshot(name))
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    assert_eq!(retaken.snapshot_id, taken.snapshot_id);
    // Deleting what this driver cannot have made: nothing to delete, OK.
    for id in ["someone-elses", "snap_with_underscore"] {
        controller
            .delete_snapshot(DeleteSnapshotRequest {
                snapshot_id: id.into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn deletes_never_lose_data_and_never_repeat_themselves() {
    let router = router().await;
    let mut controller = router.host.client.controller.clone();
    // In the StorageClass's own directory, not the configuration's.
    let mut elsewhere = create(VOLUME, GIB);
    elsewhere
        .parameters
        .insert("volumePath".into(), "/storage-pool/other".into());
    controller.create_volume(elsewhere).await.unwrap();
    let file = router
        .file(VOLUME)
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join(format!("other/{VOLUME}.img"));
    assert!(file.exists(), "{}", file.display());
    let delete = || requests::delete(VOLUME);

    // An answer in words the backend has never seen: the call fails and the file stays.
    router.fault("odd=disk-remove\n");
    let err = controller.delete_volume(delete()).await.unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{}", err.message());
    assert!(err.message().contains("try again"), "{}", err.message());
    assert!(file.exists(), "the data is kept");

    // The disk goes, the session drops before the file: the retry removes the file from the
    // StorageClass's directory.
    router.fault("drop=disk-remove\n");
    controller.delete_volume(delete()).await.unwrap_err();
    router.fault("");
    controller.delete_volume(delete()).await.unwrap();
    assert!(!file.exists(), "{}", file.display());

    // Deleted already: the router is asked nothing more than whether it has the disk.
    let before = router.commands().lines().count();
    controller.delete_volume(delete()).await.unwrap();
    let after: Vec<String> = router
        .commands()
        .lines()
        .skip(before)
        .map(str::to_owned)
        .collect();
    assert!(after.iter().all(|c| !c.contains("remove")), "{after:?}");
}

#[tokio::test]
async fn a_node_plugin_is_alive_without_reaching_the_router() {
    // No SSH target configured (a node holds no router credentials): the backend's own probe
    // fails, which is the controller's answer; a node's is the host's.
    for (mode, ready) in [
        (modcsi::csi::Mode::Node, true),
        (modcsi::csi::Mode::All, false),
    ] {
        let host = modcsi_tests::TestHost::start_with(modcsi_tests::RDS, |c| c.mode = mode).await;
        let probe = host.client.identity.clone().probe(ProbeRequest {}).await;
        assert_eq!(probe.is_ok(), ready, "{mode:?}: {probe:?}");
    }
}
