//! A node-local volume has the size it was created with: on a filesystem with project quotas
//! the directory is its own project, held to that size, and stats report the quota; elsewhere
//! the host says at start that sizes are not enforced, and stats report the real filesystem's
//! figures, never a size the volume does not have.

use std::path::{Path, PathBuf};
use std::process::Command;

use modcsi::proto::Volume;
use modcsi_tests::loop_disk::LoopDisk;
use modcsi_tests::{NODE_LOCAL_CACHE, TestHost, capture_logs, requests};

/// A filesystem mounted for the test, unmounted when dropped.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

fn run(tool: &str, args: &[&str]) {
    let out = Command::new(tool).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{tool}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn published(host: &TestHost, name: &str, bytes: i64) -> (Volume, String) {
    let mut create = requests::create(name);
    create.capacity_range.as_mut().unwrap().required_bytes = bytes;
    let volume = host
        .client
        .controller
        .clone()
        .create_volume(create)
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    let target = host.target(name);
    host.client
        .node
        .clone()
        .node_publish_volume(requests::publish(&volume, &target, false))
        .await
        .unwrap();
    (volume, target)
}

async fn total_bytes(host: &TestHost, volume: &Volume, target: &str) -> i64 {
    host.client
        .node
        .clone()
        .node_get_volume_stats(requests::stats(&volume.volume_id, target))
        .await
        .unwrap()
        .into_inner()
        .usage[0]
        .total
}

/// Holds a node-local volume to its size with a project quota on a `fs_type` filesystem made
/// with `mkfs_args`. Needs a kernel with project quotas for that filesystem: ext4's need
/// CONFIG_QUOTA and CONFIG_QFMT_V2, xfs's CONFIG_XFS_QUOTA. Kernels without them cannot run it,
/// so its tests are marked ignored, with the reason, and run by `just test-quotas` where the
/// kernel has them (nextest shows them as skipped everywhere else).
async fn a_project_quota_holds_the_volume_to_its_size(fs_type: &str, mkfs_args: &[&str]) {
    let scratch = tempfile::tempdir().unwrap();
    let disk = LoopDisk::new(&scratch.path().join("by-id"), "quota", 320);
    let mkfs = format!("mkfs.{fs_type}");
    let mut args = mkfs_args.to_vec();
    args.push(&disk.device);
    run(&mkfs, &args);
    let state = scratch.path().join("state");
    std::fs::create_dir(&state).unwrap();
    run(
        "mount",
        &["-o", "prjquota", &disk.device, state.to_str().unwrap()],
    );
    let _mounted = Mounted(state.clone());
    let host = TestHost::start_with(NODE_LOCAL_CACHE, |c| c.state_dir = state.clone()).await;

    let (volume, target) = published(&host, "sized", 2 << 20).await;
    assert_eq!(
        total_bytes(&host, &volume, &target).await,
        2 << 20,
        "stats report the quota"
    );
    // Writing past the size fails with the quota error; within it, writes succeed.
    std::fs::write(Path::new(&target).join("fits"), vec![1u8; 1 << 20]).unwrap();
    let err = std::fs::write(Path::new(&target).join("too-much"), vec![1u8; 2 << 20]).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(nix::libc::EDQUOT), "{err}");
    // Its project id is from the host's own range, whatever the directory's inode number.
    let dir = state.join("local").join(&volume.volume_id);
    let out = Command::new("lsattr")
        .arg("-pd")
        .arg(&dir)
        .output()
        .unwrap();
    let project: u32 = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|id| id.parse().ok())
        .expect("lsattr -p names the project");
    assert!(
        modcsi::node::quota::DEFAULT_PROJECT_IDS.contains(&project),
        "{project}"
    );
    // Another volume on the same filesystem has its own project and its own size.
    let (other, other_target) = published(&host, "other", 4 << 20).await;
    assert_eq!(total_bytes(&host, &other, &other_target).await, 4 << 20);
    std::fs::write(Path::new(&other_target).join("fits"), vec![1u8; 3 << 20]).unwrap();
}

#[tokio::test]
#[ignore = "needs a kernel with ext4 project quotas (CONFIG_QFMT_V2); run by `just test-quotas`"]
async fn an_ext4_project_quota_holds_the_volume_to_its_size() {
    a_project_quota_holds_the_volume_to_its_size("ext4", &["-q", "-O", "project,quota"]).await;
}

#[tokio::test]
#[ignore = "needs a kernel with xfs project quotas (CONFIG_XFS_QUOTA); run by `just test-quotas`"]
async fn an_xfs_project_quota_holds_the_volume_to_its_size() {
    a_project_quota_holds_the_volume_to_its_size("xfs", &["-q"]).await;
}

#[tokio::test]
async fn without_quotas_stats_report_the_real_filesystem() {
    let logs = capture_logs();
    let host = TestHost::start(NODE_LOCAL_CACHE).await;
    let said = || String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    // Nothing to warn about until this node holds a node-local volume (a controller, or a
    // backend that attaches storage, never does).
    assert!(!said().contains("sizes are not enforced"), "{}", said());
    let (volume, target) = published(&host, "unsized", 2 << 20).await;
    let filesystem = nix::sys::statvfs::statvfs(host.root().as_path()).unwrap();
    let real = (filesystem.blocks() * filesystem.fragment_size()) as i64;
    assert_eq!(total_bytes(&host, &volume, &target).await, real);
    assert!(
        said().contains("node-local volume sizes are not enforced"),
        "{}",
        said()
    );
}
