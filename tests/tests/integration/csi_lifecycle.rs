//! CSI integration over the unix socket with the node-local-cache backend: the whole lifecycle
//! with real bind mounts, idempotency, the spec's status codes, and refusal of unsafe input.

use std::collections::HashMap;
use std::path::Path;

use modcsi::proto::volume_capability::access_mode::Mode;
use modcsi::proto::*;
use modcsi_tests::requests::{self, block_capability, mount_capability};
use modcsi_tests::{CreateVolume, NODE_LOCAL_CACHE, TestHost};
use tonic::Code;

fn code<T>(result: Result<T, tonic::Status>) -> Code {
    match result {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test]
async fn full_lifecycle_with_real_mounts() {
    let mut host = TestHost::start(NODE_LOCAL_CACHE).await;
    let volume = host.create("pvc-lifecycle").await;
    assert!(volume.volume_id.starts_with("nlc-"), "{}", volume.volume_id);
    assert!(
        volume.accessible_topology.is_empty(),
        "node-local-cache volumes carry no topology"
    );
    assert_eq!(
        volume
            .volume_context
            .get("modcsi.io/attachment")
            .map(String::as_str),
        Some("local-dir")
    );

    let (rw, ro) = (host.target("rw"), host.target("ro"));
    host.client
        .node
        .node_publish_volume(requests::publish(&volume, &rw, false))
        .await
        .unwrap();
    std::fs::write(
        Path::new(&rw).join("hello.txt"),
        b"written through the rw publish",
    )
    .unwrap();
    assert!(
        host.local_dir(&volume.volume_id)
            .join("hello.txt")
            .is_file(),
        "data lands in the node directory"
    );

    host.client
        .node
        .node_publish_volume(requests::publish(&volume, &ro, true))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(Path::new(&ro).join("hello.txt")).unwrap(),
        b"written through the rw publish"
    );
    let refused = std::fs::write(Path::new(&ro).join("nope.txt"), b"x").unwrap_err();
    assert_eq!(refused.raw_os_error(), Some(nix::libc::EROFS), "{refused}");
    assert_eq!(host.mounts().len(), 2);

    let stats = host
        .client
        .node
        .node_get_volume_stats(requests::stats(&volume.volume_id, &rw))
        .await
        .unwrap()
        .into_inner();
    let bytes = stats
        .usage
        .iter()
        .find(|u| u.unit == volume_usage::Unit::Bytes as i32)
        .unwrap();
    assert!(
        bytes.total > 0 && bytes.used >= 0 && bytes.available <= bytes.total,
        "{bytes:?}"
    );
    assert!(
        stats
            .usage
            .iter()
            .any(|u| u.unit == volume_usage::Unit::Inodes as i32)
    );
    assert!(!stats.volume_condition.unwrap().abnormal);

    for target in [&rw, &ro] {
        host.client
            .node
            .node_unpublish_volume(requests::unpublish(&volume.volume_id, target))
            .await
            .unwrap();
        assert!(!Path::new(target).exists(), "unpublish removes the target");
    }
    assert!(host.mounts().is_empty());
    assert!(
        host.local_dir(&volume.volume_id)
            .join("hello.txt")
            .is_file(),
        "unpublish keeps the data"
    );

    host.client
        .controller
        .delete_volume(requests::delete(&volume.volume_id))
        .await
        .unwrap();
    assert!(
        !host.local_dir(&volume.volume_id).exists(),
        "delete removes the node directory"
    );
}

#[tokio::test]
async fn every_call_is_idempotent() {
    let mut host = TestHost::start(NODE_LOCAL_CACHE).await;
    let first = host.create("pvc-twice").await;
    let second = host.create("pvc-twice").await;
    assert_eq!(first, second, "same name, same volume");
    assert_ne!(host.create("pvc-other").await.volume_id, first.volume_id);

    let target = host.target("t");
    for readonly in [false, false] {
        host.client
            .node
            .node_publish_volume(requests::publish(&first, &target, readonly))
            .await
            .unwrap();
    }
    assert_eq!(host.mounts().len(), 1, "a repeated publish mounts once");
    for _ in 0..2 {
        host.client
            .node
            .node_unpublish_volume(requests::unpublish(&first.volume_id, &target))
            .await
            .unwrap();
    }
    assert!(host.mounts().is_empty());
    for _ in 0..2 {
        host.client
            .controller
            .delete_volume(requests::delete(&first.volume_id))
            .await
            .unwrap();
    }
    host.client
        .controller
        .delete_volume(requests::delete("nlc-never-created"))
        .await
        .unwrap();
}

#[tokio::test]
async fn identity_and_capabilities() {
    let mut host = TestHost::start(NODE_LOCAL_CACHE).await;
    let info = host
        .client
        .identity
        .get_plugin_info(GetPluginInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.name, "test.modcsi.io");
    assert_eq!(
        info.manifest.get("backend").map(String::as_str),
        Some("node-local-cache")
    );
    let probe = host
        .client
        .identity
        .probe(ProbeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(probe.ready, Some(true));

    let plugin = host
        .client
        .identity
        .get_plugin_capabilities(GetPluginCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    let services: Vec<_> = plugin
        .capabilities
        .iter()
        .filter_map(|c| match &c.r#type {
            Some(plugin_capability::Type::Service(s)) => Some(s.r#type()),
            _ => None,
        })
        .collect();
    assert_eq!(
        services,
        vec![plugin_capability::service::Type::ControllerService],
        "no topology constraints"
    );

    let rpc_types = |caps: Vec<controller_service_capability::Type>| {
        caps.into_iter()
            .map(|t| match t {
                controller_service_capability::Type::Rpc(r) => r.r#type(),
            })
            .collect::<Vec<_>>()
    };
    let controller = host
        .client
        .controller
        .controller_get_capabilities(ControllerGetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        rpc_types(
            controller
                .capabilities
                .into_iter()
                .filter_map(|c| c.r#type)
                .collect()
        )
        .contains(&controller_service_capability::rpc::Type::CreateDeleteVolume)
    );

    let node = host
        .client
        .node
        .node_get_capabilities(NodeGetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    let node_types: Vec<_> = node
        .capabilities
        .iter()
        .filter_map(|c| c.r#type.as_ref())
        .map(|node_service_capability::Type::Rpc(r)| r.r#type())
        .collect();
    assert!(node_types.contains(&node_service_capability::rpc::Type::GetVolumeStats));
    assert!(
        !node_types.contains(&node_service_capability::rpc::Type::StageUnstageVolume),
        "local dirs need no staging"
    );
    let info = host
        .client
        .node
        .node_get_info(NodeGetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.node_id, "test-node");
    assert!(info.accessible_topology.is_none());
}

#[tokio::test]
async fn controller_status_codes() {
    let mut host = TestHost::start(NODE_LOCAL_CACHE).await;
    let c = &mut host.client.controller;
    let mut unnamed = requests::create("x");
    unnamed.name.clear();
    assert_eq!(code(c.create_volume(unnamed).await), Code::InvalidArgument);
    let mut no_caps = requests::create("x");
    no_caps.volume_capabilities.clear();
    assert_eq!(code(c.create_volume(no_caps).await), Code::InvalidArgument);
    let mut block = requests::create("x");
    block.volume_capabilities = vec![block_capability()];
    let err = c.create_volume(block).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("block"), "{}", err.message());
    let mut bad_range = requests::create("x");
    bad_range.capacity_range = Some(CapacityRange {
        required_bytes: 10,
        limit_bytes: 5,
    });
    assert_eq!(
        code(c.create_volume(bad_range).await),
        Code::InvalidArgument
    );

    let mut clone = requests::create("x");
    clone.volume_content_source = Some(VolumeContentSource {
        r#type: Some(volume_content_source::Type::Volume(
            volume_content_source::VolumeSource {
                volume_id: "nlc-other".into(),
            },
        )),
    });
    let err = c.create_volume(clone).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .contains("cannot create volumes from other volumes"),
        "{}",
        err.message()
    );

    assert_eq!(
        code(c.delete_volume(requests::delete("")).await),
        Code::InvalidArgument
    );

    let validate = |id: &str, caps: Vec<VolumeCapability>| ValidateVolumeCapabilitiesRequest {
        volume_id: id.into(),
        volume_capabilities: caps,
        ..Default::default()
    };
    let volume = c.create("pvc-validate").await;
    let id = volume.volume_id.as_str();
    assert_eq!(
        code(
            c.validate_volume_capabilities(validate(
                "",
                vec![mount_capability(Mode::SingleNodeWriter)]
            ))
            .await
        ),
        Code::InvalidArgument
    );
    assert_eq!(
        code(c.validate_volume_capabilities(validate(id, vec![])).await),
        Code::InvalidArgument
    );
    let err = c
        .validate_volume_capabilities(validate(
            "pvc-unknown",
            vec![mount_capability(Mode::SingleNodeWriter)],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(
        err.message().contains("pvc-unknown") && err.message().contains("node-local-cache"),
        "{}",
        err.message()
    );
    let ok = c
        .validate_volume_capabilities(validate(
            id,
            vec![mount_capability(Mode::MultiNodeMultiWriter)],
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(ok.confirmed.is_some(), "{}", ok.message);
    let no = c
        .validate_volume_capabilities(validate(id, vec![block_capability()]))
        .await
        .unwrap()
        .into_inner();
    assert!(
        no.confirmed.is_none() && no.message.contains("block"),
        "{no:?}"
    );
}

#[tokio::test]
async fn node_status_codes() {
    let mut host = TestHost::start(NODE_LOCAL_CACHE).await;
    let volume = host.create("pvc-node-codes").await;
    let target = host.target("t");
    let n = &mut host.client.node;

    let mut no_id = requests::publish(&volume, &target, false);
    no_id.volume_id.clear();
    assert_eq!(
        code(n.node_publish_volume(no_id).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(
            n.node_publish_volume(requests::publish(&volume, "", false))
                .await
        ),
        Code::InvalidArgument
    );
    let mut no_cap = requests::publish(&volume, &target, false);
    no_cap.volume_capability = None;
    assert_eq!(
        code(n.node_publish_volume(no_cap).await),
        Code::InvalidArgument
    );
    let mut block = requests::publish(&volume, &target, false);
    block.volume_capability = Some(block_capability());
    assert_eq!(
        code(n.node_publish_volume(block).await),
        Code::InvalidArgument
    );
    // A volume of the public node-local-cache driver has an empty context: the backend's
    // `locate` says where it lives, and it publishes.
    let mut no_context = requests::publish(&volume, &target, false);
    no_context.volume_context = HashMap::new();
    n.node_publish_volume(no_context).await.unwrap();
    n.node_unpublish_volume(requests::unpublish(&volume.volume_id, &target))
        .await
        .unwrap();

    assert_eq!(
        code(
            n.node_unpublish_volume(requests::unpublish(&volume.volume_id, ""))
                .await
        ),
        Code::InvalidArgument
    );
    assert_eq!(
        code(
            n.node_unpublish_volume(requests::unpublish("", &target))
                .await
        ),
        Code::InvalidArgument
    );
    // Unpublishing what is not there succeeds: kubelet retries until it hears OK, and a pod
    // would stay Terminating.
    n.node_unpublish_volume(requests::unpublish("nlc-unknown", &target))
        .await
        .unwrap();
    n.node_unpublish_volume(requests::unpublish(
        &volume.volume_id,
        &format!("{target}-never"),
    ))
    .await
    .unwrap();
    assert_eq!(
        code(
            n.node_get_volume_stats(requests::stats("nlc-unknown", &target))
                .await
        ),
        Code::NotFound
    );
    assert_eq!(
        code(
            n.node_get_volume_stats(requests::stats(&volume.volume_id, ""))
                .await
        ),
        Code::InvalidArgument
    );
    // NodeExpandVolume of a volume that is not on this node: NOT_FOUND, whatever the path.
    for path in ["relative/path", target.as_str()] {
        let expand = NodeExpandVolumeRequest {
            volume_id: "nlc-unknown".into(),
            volume_path: path.into(),
            ..Default::default()
        };
        assert_eq!(
            code(n.node_expand_volume(expand).await),
            Code::NotFound,
            "{path}"
        );
    }

    n.node_publish_volume(requests::publish(&volume, &target, false))
        .await
        .unwrap();
    // Not published at a relative path, nor at an absolute one that is not the target.
    for path in ["relative/path", "t"] {
        assert_eq!(
            code(
                host.client
                    .node
                    .node_get_volume_stats(requests::stats(&volume.volume_id, path))
                    .await
            ),
            Code::NotFound,
            "{path}"
        );
    }
    let missing = host.target("missing");
    assert_eq!(
        code(
            host.client
                .node
                .node_get_volume_stats(requests::stats(&volume.volume_id, &missing))
                .await
        ),
        Code::NotFound
    );
    let err = host
        .client
        .node
        .node_publish_volume(requests::publish(&volume, &target, true))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::AlreadyExists,
        "same target, other read-only flag: {}",
        err.message()
    );

    let err = host
        .client
        .controller
        .delete_volume(requests::delete(&volume.volume_id))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(
        err.message().contains(&target),
        "names where it is still mounted: {}",
        err.message()
    );
    assert!(
        host.local_dir(&volume.volume_id).is_dir(),
        "a refused delete keeps the data"
    );
}

#[tokio::test]
async fn bad_ids_and_paths_change_nothing() {
    let mut host = TestHost::start(NODE_LOCAL_CACHE).await;
    let volume = host.create("pvc-safety").await;
    let outside = host.root().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::create_dir_all(host.root().join("targets")).unwrap();
    let link = host.target("link");
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    let through_link = format!("{link}/inner");

    for bad_id in [
        "../../etc",
        "a/b",
        "x\ny",
        ".",
        "..",
        "-rf",
        "a b",
        &"n".repeat(129),
    ] {
        let mut request = requests::publish(&volume, &host.target("t"), false);
        request.volume_id = bad_id.into();
        let err = host
            .client
            .node
            .node_publish_volume(request)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad_id:?}");
        assert_eq!(
            code(
                host.client
                    .controller
                    .delete_volume(requests::delete(bad_id))
                    .await
            ),
            Code::InvalidArgument
        );
    }
    let relative = "relative/target".to_owned();
    let dotdot = format!("{}/../escape", host.target("t"));
    for bad_path in [&relative, &dotdot, &link, &through_link] {
        let err = host
            .client
            .node
            .node_publish_volume(requests::publish(&volume, bad_path, false))
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{bad_path}: {}",
            err.message()
        );
        assert_eq!(
            code(
                host.client
                    .node
                    .node_unpublish_volume(requests::unpublish(&volume.volume_id, bad_path))
                    .await
            ),
            Code::InvalidArgument
        );
    }
    assert!(host.mounts().is_empty(), "nothing mounted");
    assert_eq!(
        std::fs::read_dir(host.root().join("state/local"))
            .unwrap()
            .count(),
        0,
        "no volume directory created"
    );
    assert!(!Path::new(&host.target("t")).exists(), "no target created");
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing created through the symlink"
    );
    assert!(!host.root().join("etc").exists());
}

#[tokio::test]
async fn node_mode_serves_no_controller() {
    let mut host =
        TestHost::start_with(NODE_LOCAL_CACHE, |c| c.mode = modcsi::csi::Mode::Node).await;
    let err = host
        .client
        .controller
        .create_volume(requests::create("x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    let plugin = host
        .client
        .identity
        .get_plugin_capabilities(GetPluginCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        plugin.capabilities.is_empty(),
        "a node-only process does not claim the controller service"
    );
}

/// A `--local-dir-root` reached through a symbolic link: the bind mounts the table shows are of
/// the real directory, and a delete still sees that the volume is published.
#[tokio::test]
async fn a_local_dir_root_behind_a_symlink_still_guards_a_published_volume() {
    let real = tempfile::tempdir().unwrap();
    let link = real.path().join("link");
    std::os::unix::fs::symlink(real.path(), &link).unwrap();
    let root = link.join("local");
    let host =
        TestHost::start_with(NODE_LOCAL_CACHE, |c| c.local_dir_root = Some(root.clone())).await;
    let mut c = host.client.clone();
    let volume = c.controller.create("behind-a-link").await;
    let target = host.target("t");
    c.node
        .node_publish_volume(requests::publish(&volume, &target, false))
        .await
        .unwrap();
    let err = c
        .controller
        .delete_volume(requests::delete(&volume.volume_id))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(root.join(&volume.volume_id).is_dir(), "the data stays");
    c.node
        .node_unpublish_volume(requests::unpublish(&volume.volume_id, &target))
        .await
        .unwrap();
    c.controller
        .delete_volume(requests::delete(&volume.volume_id))
        .await
        .unwrap();
    assert!(!root.join(&volume.volume_id).exists());
}
