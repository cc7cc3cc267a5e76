//! Staging block storage for real, on loop devices: a `disk` attachment is found by its by-id
//! name, formatted only when blank (ext4 or xfs), mounted at the staging path, published by
//! binding the staging path read-write and read-only, unpublished and unstaged; data survives a
//! second stage (no reformat), a device holding another filesystem is refused, and a device
//! already mounted is not mounted again.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use modcsi::node::device::{AllowedDisks, DeviceDirs};
use modcsi::node::mountinfo::MountTable;
use modcsi::node::nvme::Nvme;
use modcsi::proto::volume_capability::{
    AccessMode, AccessType, BlockVolume, MountVolume, access_mode::Mode,
};
use modcsi::proto::*;
use modcsi_tests::fabric::TestFabric;
use modcsi_tests::loop_disk::LoopDisk;
use modcsi_tests::{RULE_BREAKER, TestHost, requests};
use tonic::Code;

async fn host(by_id: PathBuf) -> TestHost {
    host_allowing(by_id, "").await
}

/// A host whose disk allow-list admits by-id names beginning with `prefix`.
async fn host_allowing(by_id: PathBuf, prefix: &str) -> TestHost {
    let prefix = prefix.to_owned();
    TestHost::start_with(RULE_BREAKER, |c| {
        c.devices = DeviceDirs {
            by_id,
            sysfs: PathBuf::from("/sys"),
            wait: Duration::from_millis(500),
            nvme: Nvme::kernel(Path::new("/sys")),
            allowed_disks: AllowedDisks {
                by_id_prefixes: vec![prefix],
                serials: vec![],
            },
        }
    })
    .await
}

const HOST_NQN: &str = "nqn.2014-08.org.nvmexpress:uuid:7e3a8f00-0000-4000-8000-000000000001";

/// A host whose NVMe seam is the test fabric, managing the `prefix` subsystems.
async fn nvme_host(fabric: &Arc<TestFabric>, prefix: &str) -> TestHost {
    let fabric = fabric.clone();
    let prefix = prefix.to_owned();
    TestHost::start_with(RULE_BREAKER, move |c| {
        c.devices = DeviceDirs {
            by_id: PathBuf::from("/nonexistent"),
            sysfs: fabric.sysfs().to_owned(),
            wait: Duration::from_millis(500),
            nvme: Nvme {
                fabric,
                managed_prefix: Some(prefix),
                host_nqn: Some(HOST_NQN.into()),
            },
            allowed_disks: Default::default(),
        }
    })
    .await
}

fn capability(fs_type: &str, mode: Mode) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: fs_type.into(),
            ..Default::default()
        })),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

const CAP_SYS_RESOURCE: u32 = 24;

/// Whether this process holds a capability (from /proc/self/status).
fn has_capability(bit: u32) -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << bit) != 0)
}

fn stage_request(v: &Volume, staging: &str, fs_type: &str) -> NodeStageVolumeRequest {
    NodeStageVolumeRequest {
        volume_id: v.volume_id.clone(),
        staging_target_path: staging.into(),
        volume_capability: Some(capability(fs_type, Mode::SingleNodeWriter)),
        volume_context: v.volume_context.clone(),
        ..Default::default()
    }
}

fn unstage_request(v: &Volume, staging: &str) -> NodeUnstageVolumeRequest {
    NodeUnstageVolumeRequest {
        volume_id: v.volume_id.clone(),
        staging_target_path: staging.into(),
    }
}

fn publish_request(
    v: &Volume,
    staging: &str,
    target: &str,
    readonly: bool,
) -> NodePublishVolumeRequest {
    let mut r = requests::publish(v, target, readonly);
    r.staging_target_path = staging.into();
    r
}

fn mounted(path: &str) -> bool {
    MountTable::read().unwrap().at(Path::new(path)).is_some()
}

async fn lifecycle(fs_type: &str, mib: u64) {
    let by_id = tempfile::tempdir().unwrap();
    let host = host(by_id.path().to_owned()).await;
    let disk = LoopDisk::new(by_id.path(), &format!("{fs_type}-disk"), mib);
    let v = host.create(&format!("disk-{fs_type}-disk")).await;
    let mut node = host.client.node.clone();
    let staging = host.target("staging");
    let (rw, ro) = (host.target("rw"), host.target("ro"));

    for _ in 0..2 {
        node.node_stage_volume(stage_request(&v, &staging, fs_type))
            .await
            .unwrap();
    }
    assert_eq!(disk.blkid("TYPE"), fs_type, "formatted when blank");
    let uuid = disk.blkid("UUID");
    node.node_publish_volume(publish_request(&v, &staging, &rw, false))
        .await
        .unwrap();
    node.node_publish_volume(publish_request(&v, &staging, &ro, true))
        .await
        .unwrap();
    std::fs::write(Path::new(&rw).join("data"), b"block bytes").unwrap();
    assert_eq!(
        std::fs::read(Path::new(&ro).join("data")).unwrap(),
        b"block bytes"
    );
    assert!(
        std::fs::write(Path::new(&ro).join("x"), b"no").is_err(),
        "read-only"
    );
    let stats = node
        .node_get_volume_stats(requests::stats(&v.volume_id, &rw))
        .await
        .unwrap()
        .into_inner();
    let total = stats.usage[0].total;
    assert!(
        total > 0 && total <= (mib << 20) as i64,
        "the volume's own filesystem: {total}"
    );

    // Asked to grow before the storage grew the device: UNAVAILABLE (the CO retries), nothing
    // grown to less than asked.
    let expand = NodeExpandVolumeRequest {
        volume_id: v.volume_id.clone(),
        volume_path: rw.clone(),
        staging_target_path: staging.clone(),
        volume_capability: Some(capability(fs_type, Mode::SingleNodeWriter)),
        capacity_range: Some(CapacityRange {
            required_bytes: ((mib * 2) << 20) as i64,
            limit_bytes: 0,
        }),
        ..Default::default()
    };
    let err = node.node_expand_volume(expand.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert!(err.message().contains("not grown"), "{}", err.message());
    // Grown under the published volume: NodeExpandVolume grows the filesystem online.
    disk.grow(mib * 2);
    let expanded = node.node_expand_volume(expand).await;
    if fs_type == "ext4" && !has_capability(CAP_SYS_RESOURCE) {
        // The kernel grows ext4 online only for CAP_SYS_RESOURCE, which this sandbox withholds
        // even from root: the call must say so rather than pretend.
        let err = expanded.unwrap_err();
        assert_eq!(err.code(), Code::Internal);
        assert!(err.message().contains("EPERM"), "{}", err.message());
    } else {
        let expanded = expanded.unwrap().into_inner();
        assert_eq!(expanded.capacity_bytes, ((mib * 2) << 20) as i64);
        let grown = node
            .node_get_volume_stats(requests::stats(&v.volume_id, &rw))
            .await
            .unwrap()
            .into_inner()
            .usage[0]
            .total;
        assert!(grown > total + (mib << 19) as i64, "{total} -> {grown}");
    }
    assert_eq!(
        std::fs::read(Path::new(&ro).join("data")).unwrap(),
        b"block bytes"
    );

    for target in [&rw, &ro] {
        for _ in 0..2 {
            node.node_unpublish_volume(requests::unpublish(&v.volume_id, target))
                .await
                .unwrap();
        }
    }
    for _ in 0..2 {
        node.node_unstage_volume(unstage_request(&v, &staging))
            .await
            .unwrap();
    }
    assert!(!mounted(&staging) && !Path::new(&staging).exists());

    // Staged again: the filesystem is kept, data and all.
    node.node_stage_volume(stage_request(&v, &staging, fs_type))
        .await
        .unwrap();
    assert_eq!(disk.blkid("UUID"), uuid, "not reformatted");
    assert_eq!(
        std::fs::read(Path::new(&staging).join("data")).unwrap(),
        b"block bytes"
    );
    node.node_unstage_volume(unstage_request(&v, &staging))
        .await
        .unwrap();
}

#[tokio::test]
async fn ext4_stage_publish_and_back() {
    lifecycle("ext4", 64).await;
}

#[tokio::test]
async fn xfs_stage_publish_and_back() {
    lifecycle("xfs", 320).await;
}

#[tokio::test]
async fn a_disk_holding_another_filesystem_or_already_mounted_is_refused() {
    let by_id = tempfile::tempdir().unwrap();
    let host = host(by_id.path().to_owned()).await;
    let disk = LoopDisk::new(by_id.path(), "used", 64);
    let v = host.create("disk-used").await;
    let mut node = host.client.node.clone();
    let (a, b) = (host.target("a"), host.target("b"));

    node.node_stage_volume(stage_request(&v, &a, "ext4"))
        .await
        .unwrap();
    // The same device at a second staging path: a mount storm, refused.
    let err = node
        .node_stage_volume(stage_request(&v, &b, "ext4"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(
        err.message().contains("already mounted"),
        "{}",
        err.message()
    );
    assert!(!mounted(&b));
    node.node_unstage_volume(unstage_request(&v, &a))
        .await
        .unwrap();

    // It holds ext4; asked for xfs, nothing is formatted or mounted.
    let err = node
        .node_stage_volume(stage_request(&v, &a, "xfs"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert_eq!(disk.blkid("TYPE"), "ext4");
    assert!(!mounted(&a));

    // A by-id name that is not there: NOT_FOUND naming what was looked for.
    let ghost = host.create("disk-ghost").await;
    let err = node
        .node_stage_volume(stage_request(&ghost, &a, "ext4"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{}", err.message());
    assert!(err.message().contains("ghost"), "{}", err.message());
}

#[tokio::test]
async fn publish_checks_the_staging_path_it_is_given() {
    let by_id = tempfile::tempdir().unwrap();
    let host = host(by_id.path().to_owned()).await;
    let _disk = LoopDisk::new(by_id.path(), "checked", 64);
    let v = host.create("disk-checked").await;
    let mut node = host.client.node.clone();
    let (staging, target) = (host.target("staging-c"), host.target("c"));
    node.node_stage_volume(stage_request(&v, &staging, "ext4"))
        .await
        .unwrap();
    // A directory outside the kubelet root: a pod must never get the host's own files.
    let outside = tempfile::tempdir().unwrap();
    let plain = host.target("plain");
    std::fs::create_dir(&plain).unwrap();
    let link = host.target("link");
    std::os::unix::fs::symlink(&staging, &link).unwrap();
    for (given, code) in [
        (outside.path().to_str().unwrap(), Code::InvalidArgument),
        // Inside the root but nothing staged there.
        (plain.as_str(), Code::FailedPrecondition),
        // The staged mount, but through a link.
        (link.as_str(), Code::InvalidArgument),
    ] {
        let err = node
            .node_publish_volume(publish_request(&v, given, &target, false))
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "{given}: {}", err.message());
        assert!(!mounted(&target), "{given}");
    }
    node.node_publish_volume(publish_request(&v, &staging, &target, false))
        .await
        .unwrap();
    node.node_unpublish_volume(requests::unpublish(&v.volume_id, &target))
        .await
        .unwrap();
    node.node_unstage_volume(unstage_request(&v, &staging))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_volume_another_driver_staged_unpublishes_and_unstages() {
    let by_id = tempfile::tempdir().unwrap();
    let host = host(by_id.path().to_owned()).await;
    let mut node = host.client.node.clone();
    // Staged and published by hand, as the driver this one replaces left them: this host has
    // no record of either. The second one's disk has gone since.
    for (name, gone) in [("foreign-1", false), ("foreign-2", true)] {
        let disk = LoopDisk::new(by_id.path(), name, 64);
        assert!(
            Command::new("mkfs.ext4")
                .args(["-q", &disk.device])
                .status()
                .unwrap()
                .success()
        );
        let (staging, target) = (host.target(&format!("{name}-staging")), host.target(name));
        std::fs::create_dir(&staging).unwrap();
        std::fs::create_dir(&target).unwrap();
        use nix::mount::{MsFlags, mount};
        mount(
            Some(disk.device.as_str()),
            staging.as_str(),
            Some("ext4"),
            MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        mount(
            Some(staging.as_str()),
            target.as_str(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap();
        if gone {
            disk.vanish();
        }
        let id = format!("pvc-{name}");
        node.node_unpublish_volume(requests::unpublish(&id, &target))
            .await
            .unwrap();
        assert!(!Path::new(&target).exists(), "{name}: unpublished");
        node.node_unstage_volume(NodeUnstageVolumeRequest {
            volume_id: id,
            staging_target_path: staging.clone(),
        })
        .await
        .unwrap();
        assert!(!mounted(&staging), "{name}: unstaged");
    }
}

fn block_capability() -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Block(BlockVolume {})),
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
    }
}

#[tokio::test]
async fn a_disk_not_allowed_or_not_free_is_refused_and_nothing_is_formatted() {
    let by_id = tempfile::tempdir().unwrap();
    let host = host_allowing(by_id.path().to_owned(), "pvc-").await;
    let mut node = host.client.node.clone();
    let staging = host.target("staging");
    // Asks the node to stage (a filesystem, then a block volume) and expects a refusal
    // naming `reason`, with nothing mounted.
    let refused =
        async |node: &mut modcsi::proto::node_client::NodeClient<_>, name: &str, reason: &str| {
            let v = host.create(&format!("disk-{name}")).await;
            let mut block = stage_request(&v, &staging, "");
            block.volume_capability = Some(block_capability());
            for request in [stage_request(&v, &staging, "ext4"), block] {
                let err = node.node_stage_volume(request).await.unwrap_err();
                assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
                assert!(err.message().contains(reason), "{}", err.message());
                assert!(!mounted(&staging));
            }
        };

    // Outside the operator's allow-list (a node's own disk, say).
    let system = LoopDisk::new(by_id.path(), "system-disk", 64);
    refused(&mut node, "system-disk", "allow-list").await;
    assert_eq!(system.blkid("TYPE"), "");

    let partitioned = LoopDisk::partitioned(by_id.path(), "pvc-partitioned", 64);
    refused(&mut node, "pvc-partitioned", "partitions").await;
    assert_eq!(partitioned.blkid("TYPE"), "");

    // Mounted elsewhere, by someone else.
    let mounted_disk = LoopDisk::new(by_id.path(), "pvc-mounted", 64);
    assert!(
        Command::new("mkfs.ext4")
            .args(["-q", &mounted_disk.device])
            .status()
            .unwrap()
            .success()
    );
    let elsewhere = tempfile::tempdir().unwrap();
    nix::mount::mount(
        Some(mounted_disk.device.as_str()),
        elsewhere.path(),
        Some("ext4"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    refused(&mut node, "pvc-mounted", "already mounted").await;
    nix::mount::umount(elsewhere.path()).unwrap();

    // Held open exclusively by another user; once let go, it is staged (and formatted).
    let held = LoopDisk::new(by_id.path(), "pvc-held", 64);
    let holder = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_EXCL)
            .open(&held.device)
            .unwrap()
    };
    refused(&mut node, "pvc-held", "open exclusively").await;
    assert_eq!(held.blkid("TYPE"), "");
    drop(holder);
    let v = host.create("disk-pvc-held").await;
    node.node_stage_volume(stage_request(&v, &staging, "ext4"))
        .await
        .unwrap();
    assert_eq!(held.blkid("TYPE"), "ext4");
    node.node_unstage_volume(unstage_request(&v, &staging))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_block_volume_is_the_device_at_a_target_file() {
    let by_id = tempfile::tempdir().unwrap();
    let host = host(by_id.path().to_owned()).await;
    let disk = LoopDisk::new(by_id.path(), "raw", 16);
    let v = host.create("disk-raw").await;
    let mut node = host.client.node.clone();
    let staging = host.target("staging-raw");
    let target = host.target("raw");
    let block = VolumeCapability {
        access_type: Some(AccessType::Block(BlockVolume {})),
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
    };
    let mut stage = stage_request(&v, &staging, "");
    stage.volume_capability = Some(block.clone());
    node.node_stage_volume(stage).await.unwrap();
    assert_eq!(disk.blkid("TYPE"), "", "a block volume is never formatted");
    let mut publish = publish_request(&v, &staging, &target, false);
    publish.volume_capability = Some(block);
    for _ in 0..2 {
        node.node_publish_volume(publish.clone()).await.unwrap();
    }
    assert!(Path::new(&target).is_file() || mounted(&target));

    // I/O through the target file reaches the device.
    {
        use std::io::{Read, Seek, SeekFrom, Write};
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&target)
            .unwrap();
        file.seek(SeekFrom::Start(1 << 20)).unwrap();
        file.write_all(b"raw block bytes").unwrap();
        file.sync_all().unwrap();
        let mut device = std::fs::File::open(&disk.device).unwrap();
        device.seek(SeekFrom::Start(1 << 20)).unwrap();
        let mut read = [0u8; 15];
        device.read_exact(&mut read).unwrap();
        assert_eq!(&read, b"raw block bytes");
    }
    let stats = node
        .node_get_volume_stats(requests::stats(&v.volume_id, &target))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.usage.len(), 1, "block: size only");
    assert_eq!(stats.usage[0].total, 16 << 20);

    for _ in 0..2 {
        node.node_unpublish_volume(requests::unpublish(&v.volume_id, &target))
            .await
            .unwrap();
    }
    assert!(!Path::new(&target).exists() && !mounted(&target));
    node.node_unstage_volume(unstage_request(&v, &staging))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_device_gone_under_a_staged_mount_is_reported_abnormal() {
    let by_id = tempfile::tempdir().unwrap();
    let host = host(by_id.path().to_owned()).await;
    let disk = LoopDisk::new(by_id.path(), "fragile", 64);
    let v = host.create("disk-fragile").await;
    let mut node = host.client.node.clone();
    let staging = host.target("staging-f");
    let target = host.target("f");
    node.node_stage_volume(stage_request(&v, &staging, "ext4"))
        .await
        .unwrap();
    node.node_publish_volume(publish_request(&v, &staging, &target, false))
        .await
        .unwrap();
    let condition = |stats: NodeGetVolumeStatsResponse| stats.volume_condition.unwrap();
    let healthy = condition(
        node.node_get_volume_stats(requests::stats(&v.volume_id, &target))
            .await
            .unwrap()
            .into_inner(),
    );
    assert!(!healthy.abnormal, "{}", healthy.message);

    // The disk disappears under the mount (its size drops to nothing).
    disk.file.as_file().set_len(0).unwrap();
    Command::new("losetup")
        .args(["-c", &disk.device])
        .status()
        .unwrap();
    let sick = condition(
        node.node_get_volume_stats(requests::stats(&v.volume_id, &target))
            .await
            .unwrap()
            .into_inner(),
    );
    assert!(
        sick.abnormal && sick.message.contains("gone"),
        "{}",
        sick.message
    );

    node.node_unpublish_volume(requests::unpublish(&v.volume_id, &target))
        .await
        .unwrap();
    node.node_unstage_volume(unstage_request(&v, &staging))
        .await
        .unwrap();
}

#[tokio::test]
async fn the_next_stage_recovers_a_renumbered_disk_and_applies_the_mount_group() {
    let by_id = tempfile::tempdir().unwrap();
    let host = host(by_id.path().to_owned()).await;
    let first = LoopDisk::new(by_id.path(), "moving", 64);
    let v = host.create("disk-moving").await;
    let mut node = host.client.node.clone();
    let staging = host.target("staging-m");
    let mut stage = stage_request(&v, &staging, "ext4");
    if let Some(AccessType::Mount(m)) = stage
        .volume_capability
        .as_mut()
        .and_then(|c| c.access_type.as_mut())
    {
        m.volume_mount_group = "4321".into();
    }
    node.node_stage_volume(stage.clone()).await.unwrap();
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&staging).unwrap();
    assert_eq!(meta.gid(), 4321, "the mount group owns the volume");
    assert_ne!(meta.mode() & 0o2070, 0);
    std::fs::write(Path::new(&staging).join("data"), b"survives").unwrap();
    Command::new("sync").status().unwrap();
    let target = host.target("m");
    node.node_publish_volume(publish_request(&v, &staging, &target, false))
        .await
        .unwrap();

    // The disk comes back under another device (a reconnect renumbered it): a second loop
    // device over a copy of the image, and the by-id name now leads there.
    let copy = tempfile::NamedTempFile::new().unwrap();
    std::fs::copy(first.file.path(), copy.path()).unwrap();
    let second = modcsi_tests::loop_disk::attach(copy.path());
    std::fs::remove_file(by_id.path().join("moving")).unwrap();
    std::os::unix::fs::symlink(&second, by_id.path().join("moving")).unwrap();

    // Stats notice: the mount is no longer on the device the attachment resolves to.
    let condition = node
        .node_get_volume_stats(requests::stats(&v.volume_id, &target))
        .await
        .unwrap()
        .into_inner()
        .volume_condition
        .unwrap();
    assert!(
        condition.abnormal && condition.message.contains(&format!("now {second}")),
        "{}",
        condition.message
    );
    // The pod's bind still holds the staged filesystem: unstage waits for its unpublish.
    let err = node
        .node_unstage_volume(unstage_request(&v, &staging))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(err.message().contains(&target), "{}", err.message());
    node.node_unpublish_volume(requests::unpublish(&v.volume_id, &target))
        .await
        .unwrap();

    // The old device is still alive (the new one may be the same disk by another path):
    // mounting the new one too could give the filesystem two live superblocks.
    let err = node.node_stage_volume(stage.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    let mounted_from = |staging: &str| {
        MountTable::read()
            .unwrap()
            .at(Path::new(staging))
            .map(|m| m.source.clone())
    };
    assert_eq!(
        mounted_from(&staging).as_deref(),
        Some(first.device.as_str())
    );
    first.vanish();

    node.node_stage_volume(stage).await.unwrap();
    let mounted_from = MountTable::read()
        .unwrap()
        .at(Path::new(&staging))
        .map(|m| m.source.clone());
    assert_eq!(mounted_from.as_deref(), Some(second.as_str()), "remounted");
    assert_eq!(
        std::fs::read(Path::new(&staging).join("data")).unwrap(),
        b"survives"
    );
    node.node_unstage_volume(unstage_request(&v, &staging))
        .await
        .unwrap();
    let _ = Command::new("losetup").args(["-d", &second]).status();
}

#[tokio::test]
async fn a_first_stage_that_fails_after_connecting_disconnects() {
    let by_id = tempfile::tempdir().unwrap();
    let disk = LoopDisk::new(by_id.path(), "ns1", 320);
    assert!(
        Command::new("mkfs.xfs")
            .args(["-q", &disk.device])
            .status()
            .unwrap()
            .success()
    );
    let fabric = Arc::new(TestFabric::default());
    let nqn = "nqn.2000-02.com.mikrotik:foreign";
    fabric.export(nqn, 1, &disk.device);
    let host = nvme_host(&fabric, "nqn.2000-02.com.mikrotik:").await;
    let v = host.create("nvme-foreign-1").await;
    let mut node = host.client.node.clone();
    let staging = host.target("s");
    // The namespace holds xfs; ext4 was asked for: a final error kubelet never unstages.
    let err = node
        .node_stage_volume(stage_request(&v, &staging, "ext4"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    let written = fabric.written();
    assert_eq!(written.len(), 4, "{written:?}");
    assert!(
        written[2..].iter().all(|w| w.starts_with("delete ")),
        "both controllers disconnected: {written:?}"
    );
    assert_eq!(disk.blkid("TYPE"), "xfs", "nothing formatted");
}

#[tokio::test]
async fn an_nvme_tcp_volume_is_connected_staged_and_disconnected_with_its_last_user() {
    let by_id = tempfile::tempdir().unwrap();
    let (one, two) = (
        LoopDisk::new(by_id.path(), "ns1", 64),
        LoopDisk::new(by_id.path(), "ns2", 320),
    );
    let fabric = Arc::new(TestFabric::default());
    let nqn = "nqn.2000-02.com.mikrotik:shared";
    fabric.export(nqn, 1, &one.device);
    fabric.export(nqn, 2, &two.device);
    let host = nvme_host(&fabric, "nqn.2000-02.com.mikrotik:").await;
    // Two volumes, two namespaces of one subsystem.
    let (v1, v2) = (
        host.create("nvme-shared-1").await,
        host.create("nvme-shared-2").await,
    );
    let mut node = host.client.node.clone();
    let (s1, s2, target) = (host.target("s1"), host.target("s2"), host.target("t1"));

    for _ in 0..2 {
        node.node_stage_volume(stage_request(&v1, &s1, "ext4"))
            .await
            .unwrap();
    }
    let connect = |traddr: &str| {
        format!(
            "nqn={nqn},transport=tcp,traddr={traddr},trsvcid=4420,hostnqn={HOST_NQN},ctrl_loss_tmo=-1,reconnect_delay=5"
        )
    };
    assert_eq!(
        fabric.written(),
        [connect("192.0.2.10"), connect("192.0.2.11")],
        "both portals connected once"
    );
    node.node_stage_volume(stage_request(&v2, &s2, "xfs"))
        .await
        .unwrap();
    assert_eq!(
        fabric.written().len(),
        2,
        "the subsystem is already connected"
    );
    assert_eq!(
        (one.blkid("TYPE"), two.blkid("TYPE")),
        ("ext4".into(), "xfs".into())
    );
    let source = |path: &str| {
        MountTable::read()
            .unwrap()
            .at(Path::new(path))
            .map(|m| m.source.clone())
    };
    assert_eq!(
        source(&s1).as_deref(),
        Some(one.device.as_str()),
        "namespace 1"
    );
    assert_eq!(
        source(&s2).as_deref(),
        Some(two.device.as_str()),
        "namespace 2"
    );

    // Expanding rescans the subsystem's controllers, so a grown namespace shows its size.
    node.node_expand_volume(NodeExpandVolumeRequest {
        volume_id: v2.volume_id.clone(),
        volume_path: s2.clone(),
        staging_target_path: s2.clone(),
        volume_capability: Some(capability("xfs", Mode::SingleNodeWriter)),
        capacity_range: Some(CapacityRange {
            required_bytes: 320 << 20,
            limit_bytes: 0,
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let rescans: Vec<String> = fabric
        .written()
        .into_iter()
        .filter(|w| w.starts_with("rescan "))
        .collect();
    assert_eq!(rescans.len(), 2, "both controllers: {rescans:?}");
    node.node_publish_volume(publish_request(&v1, &s1, &target, false))
        .await
        .unwrap();
    std::fs::write(Path::new(&target).join("data"), b"over nvme").unwrap();
    assert_eq!(
        std::fs::read(Path::new(&s1).join("data")).unwrap(),
        b"over nvme"
    );
    let healthy = node
        .node_get_volume_stats(requests::stats(&v1.volume_id, &target))
        .await
        .unwrap()
        .into_inner()
        .volume_condition
        .unwrap();
    assert!(!healthy.abnormal, "{}", healthy.message);
    // A reconnect brings namespace 1 back as another device: stats say so.
    fabric.export(nqn, 1, &two.device);
    let moved = node
        .node_get_volume_stats(requests::stats(&v1.volume_id, &target))
        .await
        .unwrap()
        .into_inner()
        .volume_condition
        .unwrap();
    assert!(
        moved.abnormal && moved.message.contains(&two.device),
        "{}",
        moved.message
    );
    fabric.export(nqn, 1, &one.device);
    node.node_unpublish_volume(requests::unpublish(&v1.volume_id, &target))
        .await
        .unwrap();

    // The first unstage leaves the subsystem connected for the second volume.
    let deletes = || -> Vec<String> {
        fabric
            .written()
            .into_iter()
            .filter(|w| w.starts_with("delete "))
            .collect()
    };
    node.node_unstage_volume(unstage_request(&v1, &s1))
        .await
        .unwrap();
    assert!(deletes().is_empty(), "still in use by {}", v2.volume_id);
    for _ in 0..2 {
        node.node_unstage_volume(unstage_request(&v2, &s2))
            .await
            .unwrap();
    }
    assert_eq!(
        deletes(),
        ["delete nvme1".to_owned(), "delete nvme2".to_owned()],
        "the last user's unstage disconnects every controller, once"
    );
    assert!(!mounted(&s1) && !mounted(&s2));
}

#[tokio::test]
async fn an_nvme_subsystem_outside_the_managed_prefix_is_never_connected() {
    let by_id = tempfile::tempdir().unwrap();
    let disk = LoopDisk::new(by_id.path(), "root", 16);
    let fabric = Arc::new(TestFabric::default());
    fabric.export("nqn.2000-02.com.mikrotik:node-root", 1, &disk.device);
    fabric.export("nqn.2000-02.com.mikrotik:pvc-gone", 1, &disk.device);
    let host = nvme_host(&fabric, "nqn.2000-02.com.mikrotik:pvc-").await;
    let mut node = host.client.node.clone();
    let staging = host.target("s");

    // The node's own disk (outside the prefix): refused before anything is written.
    let root = host.create("nvme-node-root-1").await;
    let err = node
        .node_stage_volume(stage_request(&root, &staging, "ext4"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(
        err.message().contains("outside the managed prefix"),
        "{}",
        err.message()
    );
    assert!(fabric.written().is_empty());
    assert_eq!(disk.blkid("TYPE"), "", "nothing formatted");

    // A managed subsystem no portal serves: UNAVAILABLE naming both portals.
    let unserved = host.create("nvme-pvc-unserved-1").await;
    let err = node
        .node_stage_volume(stage_request(&unserved, &staging, "ext4"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert!(
        err.message().contains("192.0.2.10:4420") && err.message().contains("192.0.2.11:4420"),
        "{}",
        err.message()
    );
    assert!(!mounted(&staging));
}

#[tokio::test]
async fn mkfs_options_come_only_from_the_allow_list() {
    let by_id = tempfile::tempdir().unwrap();
    let host = host(by_id.path().to_owned()).await;
    let disk = LoopDisk::new(by_id.path(), "tuned", 64);
    let mut controller = host.client.controller.clone();
    let with_options = |name: &str, options: &str| {
        let mut r = requests::create(name);
        r.parameters
            .insert("modcsi.io/mkfs-options".into(), options.into());
        r
    };

    // An option outside the list fails provisioning, naming it.
    let err = controller
        .create_volume(with_options("disk-tuned", "-m 0 -F"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("\"-F\""), "{}", err.message());

    let v = controller
        .create_volume(with_options("disk-tuned", "-m 0 -I 512"))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    let mut node = host.client.node.clone();
    let staging = host.target("staging-t");

    // A context changed on its way back is checked again: nothing formatted.
    let mut tampered = stage_request(&v, &staging, "ext4");
    tampered
        .volume_context
        .insert("modcsi.io/mkfs-options".into(), "-E root_owner=0:0".into());
    let err = node.node_stage_volume(tampered).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert_eq!(disk.blkid("TYPE"), "");

    node.node_stage_volume(stage_request(&v, &staging, "ext4"))
        .await
        .unwrap();
    let out = Command::new("dumpe2fs")
        .args(["-h", &disk.device])
        .output()
        .unwrap();
    let header = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| {
        header
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
    };
    assert_eq!(field("Reserved block count:").as_deref(), Some("0"), "-m 0");
    assert_eq!(field("Inode size:").as_deref(), Some("512"), "-I 512");
    node.node_unstage_volume(unstage_request(&v, &staging))
        .await
        .unwrap();
}
