//! A mount that hangs every access (a FUSE filesystem whose server never answers, the way a
//! dead NFS server or a lost NVMe path behaves) must not hang the driver: the stats call on it
//! gives up at its deadline, a second one on the same volume is refused at once instead of
//! stacking another blocked thread, and Probe and other volumes are served all along. The test
//! runs the host on a single-threaded runtime, so node work done on the async worker would
//! hang the whole test.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use modcsi::proto::volume_capability::{AccessMode, AccessType, MountVolume, access_mode::Mode};
use modcsi::proto::{
    NodeGetVolumeStatsRequest, NodeStageVolumeRequest, NodeUnstageVolumeRequest, ProbeRequest,
    VolumeCapability,
};
use modcsi_tests::loop_disk::LoopDisk;
use modcsi_tests::{CreateVolume, NODE_LOCAL_CACHE, RULE_BREAKER, TestHost, requests};
use nix::mount::{MntFlags, MsFlags};
use tonic::Code;

/// A FUSE mount nobody serves: every lookup, stat or statvfs under it blocks until the
/// connection is aborted (the device closed), which drop does before unmounting.
struct HungMount {
    device: Option<std::fs::File>,
    path: PathBuf,
}

impl HungMount {
    fn over(path: &Path) -> Self {
        let device = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .expect("/dev/fuse");
        let options = format!(
            "fd={},rootmode=40000,user_id=0,group_id=0",
            device.as_raw_fd()
        );
        nix::mount::mount(
            Some("modcsi-hung"),
            path,
            Some("fuse"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(options.as_str()),
        )
        .expect("mount a FUSE filesystem");
        Self {
            device: Some(device),
            path: path.to_owned(),
        }
    }
}

impl Drop for HungMount {
    fn drop(&mut self) {
        drop(self.device.take());
        let _ = nix::mount::umount2(&self.path, MntFlags::MNT_DETACH);
    }
}

fn stats(
    volume_id: &str,
    path: &str,
    deadline: Duration,
) -> tonic::Request<NodeGetVolumeStatsRequest> {
    let mut request = tonic::Request::new(requests::stats(volume_id, path));
    request.set_timeout(deadline);
    request
}

#[tokio::test]
async fn a_stats_call_hung_on_a_mount_holds_up_neither_probe_nor_other_volumes() {
    let host = TestHost::start(NODE_LOCAL_CACHE).await;
    let mut controller = host.client.controller.clone();
    let mut node = host.client.node.clone();
    let mut volumes = vec![];
    for name in ["hung", "healthy"] {
        let v = controller.create(name).await;
        let target = host.target(name);
        node.node_publish_volume(requests::publish(&v, &target, false))
            .await
            .unwrap();
        volumes.push((v.volume_id, target));
    }
    let [(hung, hung_target), (healthy, healthy_target)] = volumes.try_into().unwrap();

    let hang = HungMount::over(&host.local_dir(&hung));
    let deadline = Duration::from_secs(1);
    let err = node
        .node_get_volume_stats(stats(&hung, &hung_target, deadline))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{}", err.message());
    assert!(
        err.message().contains("did not finish"),
        "the host's answer: {}",
        err.message()
    );
    // The first call's thread is still blocked on the mount: no second one joins it.
    let err = node
        .node_get_volume_stats(stats(&hung, &hung_target, deadline))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert!(err.message().contains("still running"), "{}", err.message());
    // Everything else is served meanwhile.
    host.client
        .identity
        .clone()
        .probe(ProbeRequest {})
        .await
        .unwrap();
    let fine = node
        .node_get_volume_stats(stats(&healthy, &healthy_target, deadline))
        .await
        .unwrap()
        .into_inner();
    assert!(!fine.volume_condition.unwrap().abnormal);

    // The mount aborted, the blocked thread returns and the volume answers again.
    drop(hang);
    let mut answered = None;
    for _ in 0..100 {
        match node
            .node_get_volume_stats(stats(&hung, &hung_target, Duration::from_secs(5)))
            .await
        {
            Err(e) if e.code() == Code::Unavailable => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            other => {
                answered = Some(other);
                break;
            }
        }
    }
    let stats = answered.expect("the blocked thread returned").unwrap();
    assert!(!stats.into_inner().volume_condition.unwrap().abnormal);
}

/// `request` with a deadline the client enforces.
fn within<T>(message: T, deadline: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(deadline);
    request
}

#[tokio::test]
async fn stage_and_unstage_hung_on_a_mount_do_not_pile_up_behind_retries() {
    let by_id = tempfile::tempdir().unwrap();
    let dirs = by_id.path().to_owned();
    let host = TestHost::start_with(RULE_BREAKER, move |c| {
        c.devices.by_id = dirs;
        c.devices.allowed_disks.by_id_prefixes = vec!["hung-".into()];
    })
    .await;
    let _disk = LoopDisk::new(by_id.path(), "hung-disk", 64);
    let v = host.create("disk-hung-disk").await;
    let mut node = host.client.node.clone();
    // The staging paths lie under a mount nobody serves: resolving them hangs.
    let hung_dir = host.target("hung");
    std::fs::create_dir(&hung_dir).unwrap();
    let hang = HungMount::over(Path::new(&hung_dir));
    let stage = NodeStageVolumeRequest {
        volume_id: v.volume_id.clone(),
        staging_target_path: format!("{hung_dir}/staging"),
        volume_capability: Some(VolumeCapability {
            access_type: Some(AccessType::Mount(MountVolume::default())),
            access_mode: Some(AccessMode {
                mode: Mode::SingleNodeWriter as i32,
            }),
        }),
        volume_context: v.volume_context.clone(),
        ..Default::default()
    };
    let unstage = NodeUnstageVolumeRequest {
        volume_id: v.volume_id.clone(),
        staging_target_path: format!("{hung_dir}/other"),
    };
    // kubelet's retries, each given up at its deadline: one thread stays blocked per
    // operation, the others are refused at once (or give up in time).
    let deadline = Duration::from_millis(300);
    for attempt in 0..20 {
        for result in [
            node.node_stage_volume(within(stage.clone(), deadline))
                .await
                .map(drop),
            node.node_unstage_volume(within(unstage.clone(), deadline))
                .await
                .map(drop),
        ] {
            let err = result.unwrap_err();
            assert!(
                matches!(
                    err.code(),
                    Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled
                ),
                "attempt {attempt}: {:?} {}",
                err.code(),
                err.message()
            );
        }
    }
    // Everything else is served, each within a second: the pool is not full of retries.
    let second = Duration::from_secs(1);
    host.client
        .identity
        .clone()
        .probe(within(ProbeRequest {}, second))
        .await
        .unwrap();
    let other = host.create("other").await;
    let target = host.target("other");
    node.node_publish_volume(within(requests::publish(&other, &target, false), second))
        .await
        .unwrap();
    let fine = node
        .node_get_volume_stats(stats(&other.volume_id, &target, second))
        .await
        .unwrap()
        .into_inner();
    assert!(!fine.volume_condition.unwrap().abnormal);
    drop(hang);
}
