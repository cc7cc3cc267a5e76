//! Node paths are confined to the kubelet root and race-free: a path outside it is refused
//! with nothing created, a directory swapped for a symbolic link while publishing never
//! redirects the mount, unpublish leaves alone a mount that is not the volume's, and one volume
//! publishes to many targets at once.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use modcsi::node::mountinfo::MountTable;
use modcsi::proto::Volume;
use modcsi_tests::{CreateVolume, NODE_LOCAL_CACHE, TestHost, requests};
use tonic::Code;

async fn volume(host: &TestHost, name: &str) -> Volume {
    host.client.controller.clone().create(name).await
}

fn mounted_at_or_below(path: &Path) -> Vec<PathBuf> {
    MountTable::read()
        .unwrap()
        .entries()
        .iter()
        .filter(|e| e.mount_point.starts_with(path))
        .map(|e| e.mount_point.clone())
        .collect()
}

#[tokio::test]
async fn a_path_outside_the_kubelet_root_is_refused_with_nothing_created() {
    let host = TestHost::start(NODE_LOCAL_CACHE).await;
    let v = volume(&host, "pv-outside").await;
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("target");
    let err = host
        .client
        .node
        .clone()
        .node_publish_volume(requests::publish(&v, &target.display().to_string(), false))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(
        err.message().contains("not under the kubelet root"),
        "{}",
        err.message()
    );
    assert!(!target.exists(), "nothing created outside the root");
    assert!(mounted_at_or_below(outside.path()).is_empty());
}

#[tokio::test]
async fn a_parent_swapped_for_a_symlink_never_redirects_the_mount() {
    let host = TestHost::start(NODE_LOCAL_CACHE).await;
    let v = volume(&host, "pv-race").await;
    let outside = tempfile::tempdir().unwrap();
    let outside = std::fs::canonicalize(outside.path()).unwrap();
    let root = host.root().join("targets");
    let parent = root.join("race");
    let real = root.join("race-real");
    let link = root.join("race-link");
    std::fs::create_dir(&real).unwrap();
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    std::fs::rename(&real, &parent).unwrap();

    // A racing thread keeps swapping the parent between the real directory and a link out of
    // the root (rename(2) is atomic, so the path is always one or the other).
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (stop, parent, real, link) = (stop.clone(), parent.clone(), real.clone(), link.clone());
        std::thread::spawn(move || {
            let mut swaps = 0u32;
            while !stop.load(Ordering::Relaxed) {
                std::fs::rename(&parent, &real).unwrap();
                std::fs::rename(&link, &parent).unwrap();
                std::fs::rename(&parent, &link).unwrap();
                std::fs::rename(&real, &parent).unwrap();
                swaps += 1;
            }
            swaps
        })
    };
    let target = parent.join("volume").display().to_string();
    let mut node = host.client.node.clone();
    let (mut published, mut refused) = (0, 0);
    for _ in 0..200 {
        match node
            .node_publish_volume(requests::publish(&v, &target, false))
            .await
        {
            Ok(_) => {
                published += 1;
                // Wherever the parent is now, the mount sits in the real directory.
                node.node_unpublish_volume(requests::unpublish(&v.volume_id, &target))
                    .await
                    .ok();
            }
            Err(_) => refused += 1,
        }
        assert!(
            mounted_at_or_below(&outside).is_empty(),
            "a mount landed outside the kubelet root"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    eprintln!("{published} published, {refused} refused, {swaps} swaps");
    assert!(swaps > 0 && published + refused == 200);
    assert!(
        !outside.join("volume").exists(),
        "nothing created outside the root"
    );
    // Whatever is left mounted is in the real directory; clean it up through the host.
    if std::fs::symlink_metadata(&parent).unwrap().is_symlink() {
        std::fs::rename(&parent, &link).unwrap();
        std::fs::rename(&real, &parent).unwrap();
    }
    node.node_unpublish_volume(requests::unpublish(&v.volume_id, &target))
        .await
        .unwrap();
    assert!(mounted_at_or_below(&root).is_empty());
}

#[tokio::test]
async fn unpublish_leaves_a_mount_that_is_not_the_volumes() {
    let host = TestHost::start(NODE_LOCAL_CACHE).await;
    let a = volume(&host, "pv-a").await;
    let b = volume(&host, "pv-b").await;
    let mut node = host.client.node.clone();

    // Somebody else's tmpfs at a target.
    let foreign = host.target("foreign");
    std::fs::create_dir(&foreign).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        foreign.as_str(),
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    let err = node
        .node_unpublish_volume(requests::unpublish(&a.volume_id, &foreign))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(
        MountTable::read()
            .unwrap()
            .at(Path::new(&foreign))
            .is_some(),
        "still mounted"
    );

    // Volume A at a target; unpublishing it as volume B is refused.
    let target = host.target("a");
    node.node_publish_volume(requests::publish(&a, &target, false))
        .await
        .unwrap();
    let err = node
        .node_unpublish_volume(requests::unpublish(&b.volume_id, &target))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    node.node_unpublish_volume(requests::unpublish(&a.volume_id, &target))
        .await
        .unwrap();
    assert!(!Path::new(&target).exists());
}

#[tokio::test]
async fn one_volume_publishes_to_many_targets_at_once() {
    let host = Arc::new(TestHost::start(NODE_LOCAL_CACHE).await);
    let v = volume(&host, "pv-many").await;
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let (host, v) = (host.clone(), v.clone());
            tokio::spawn(async move {
                let target = host.target(&format!("pod-{i}"));
                host.client
                    .node
                    .clone()
                    .node_publish_volume(requests::publish(&v, &target, false))
                    .await
                    .map(|_| target)
            })
        })
        .collect();
    let mut targets = vec![];
    for task in tasks {
        targets.push(task.await.unwrap().expect("every target publishes"));
    }
    for target in &targets {
        assert!(MountTable::read().unwrap().at(Path::new(target)).is_some());
        host.client
            .node
            .clone()
            .node_unpublish_volume(requests::unpublish(&v.volume_id, target))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_mount_gone_from_under_a_published_volume_is_reported_abnormal() {
    let host = TestHost::start(NODE_LOCAL_CACHE).await;
    let v = volume(&host, "pv-lost").await;
    let target = host.target("lost");
    let mut node = host.client.node.clone();
    node.node_publish_volume(requests::publish(&v, &target, false))
        .await
        .unwrap();
    // Someone unmounts the target behind the driver's back; the directory stays.
    nix::mount::umount(Path::new(&target)).unwrap();
    let stats = node
        .node_get_volume_stats(requests::stats(&v.volume_id, &target))
        .await
        .unwrap()
        .into_inner();
    let condition = stats.volume_condition.unwrap();
    assert!(
        condition.abnormal && condition.message.contains("mount is missing"),
        "{}",
        condition.message
    );
    assert!(
        stats.usage.is_empty(),
        "no figures for a volume that is not there"
    );
    // Unpublish still succeeds and cleans up; the path is then simply not the volume's.
    node.node_unpublish_volume(requests::unpublish(&v.volume_id, &target))
        .await
        .unwrap();
    assert!(!Path::new(&target).exists());
    let err = node
        .node_get_volume_stats(requests::stats(&v.volume_id, &target))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}
