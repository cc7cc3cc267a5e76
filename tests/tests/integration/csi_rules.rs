//! The CSI rules the host enforces for every backend (host/src/lifecycle/rules.rs), each against a
//! backend that breaks it: the rule-breaker test component (0.2, every optional interface), and
//! node-local-cache where a stateless backend matters.

use std::collections::HashMap;
use std::time::Duration;

use modcsi::proto::controller_service_capability::{Type as CType, rpc::Type as Rpc};
use modcsi::proto::plugin_capability::{Type as PType, volume_expansion::Type as Expansion};
use modcsi::proto::volume_capability::access_mode::Mode;
use modcsi::proto::*;
use modcsi_tests::requests::{self, mount_capability};
use modcsi_tests::{CreateVolume, NODE_LOCAL_CACHE, RULE_BREAKER, TestHost, capture_logs};
use tonic::Code;

fn breaking(name: &str, rule: &str) -> CreateVolumeRequest {
    let mut r = requests::create(name);
    r.parameters.insert("break".into(), rule.into());
    r
}

async fn code<T>(result: Result<tonic::Response<T>, tonic::Status>) -> Code {
    match result {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

async fn controller_rpcs(host: &TestHost) -> Vec<Rpc> {
    host.client
        .controller
        .clone()
        .controller_get_capabilities(ControllerGetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner()
        .capabilities
        .into_iter()
        .filter_map(|c| match c.r#type {
            Some(CType::Rpc(rpc)) => Some(rpc.r#type()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn same_name_is_the_same_volume_or_already_exists_even_for_a_stateless_backend() {
    for backend in [NODE_LOCAL_CACHE, RULE_BREAKER] {
        let host = TestHost::start(backend).await;
        let mut c = host.client.controller.clone();
        let first = c
            .create_volume(requests::create("pv-a"))
            .await
            .unwrap()
            .into_inner();
        let again = c
            .create_volume(requests::create("pv-a"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(first, again, "{backend}: same name, same volume");

        let mut bigger = requests::create("pv-a");
        bigger.capacity_range.as_mut().unwrap().required_bytes = 2 << 20;
        let err = c.create_volume(bigger).await.unwrap_err();
        assert_eq!(
            err.code(),
            Code::AlreadyExists,
            "{backend}: {}",
            err.message()
        );
        assert!(
            err.message().contains("outside the requested range"),
            "{}",
            err.message()
        );

        let mut other_params = requests::create("pv-a");
        other_params.parameters.insert("tier".into(), "gold".into());
        assert_eq!(
            code(c.create_volume(other_params).await).await,
            Code::AlreadyExists
        );

        let mut other_mode = requests::create("pv-a");
        other_mode.volume_capabilities = vec![mount_capability(Mode::MultiNodeMultiWriter)];
        assert_eq!(
            code(c.create_volume(other_mode).await).await,
            Code::AlreadyExists
        );

        // A range that the recorded volume satisfies is not refused: the same volume.
        let mut wider = requests::create("pv-a");
        wider.capacity_range = Some(CapacityRange {
            required_bytes: 1,
            limit_bytes: 1 << 30,
        });
        let wide = c
            .create_volume(wider)
            .await
            .unwrap()
            .into_inner()
            .volume
            .unwrap();
        assert_eq!(wide.volume_id, first.volume.as_ref().unwrap().volume_id);
    }
}

#[tokio::test]
async fn a_returned_capacity_outside_the_range_is_internal_and_records_nothing() {
    let host = TestHost::start(RULE_BREAKER).await;
    let mut c = host.client.controller.clone();
    let err = c
        .create_volume(breaking("pv-cap", "capacity"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert!(
        err.message().contains("backend rule-breaker")
            && err.message().contains("bytes for the range"),
        "{}",
        err.message()
    );
    // Nothing was recorded: the same name with other parameters is not ALREADY_EXISTS.
    c.create_volume(requests::create("pv-cap")).await.unwrap();
}

#[tokio::test]
async fn backend_output_is_validated_on_the_way_out() {
    let host = TestHost::start(RULE_BREAKER).await;
    let mut c = host.client.controller.clone();
    for (rule, says) in [
        ("reserved-key", "reserved context key"),
        ("bad-attachment", "not an IP address or DNS name"),
        ("bad-id", "unusable volume id"),
        ("big-context", "context that is too large"),
    ] {
        let err = c
            .create_volume(breaking(&format!("pv-{rule}"), rule))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Internal, "{rule}: {}", err.message());
        assert!(
            err.message().contains(says) && err.message().contains("rule-breaker"),
            "{rule}: {}",
            err.message()
        );
    }
}

#[tokio::test]
async fn co_input_limits_node_ids_maps_and_content_sources() {
    let host = TestHost::start(RULE_BREAKER).await;
    let mut c = host.client.controller.clone();
    let mut big = requests::create("pv-big");
    big.parameters.insert("p".into(), "x".repeat(5000));
    let err = c.create_volume(big).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("parameters"), "{}", err.message());

    let mut bad_source = requests::create("pv-src");
    bad_source.volume_content_source = Some(VolumeContentSource {
        r#type: Some(volume_content_source::Type::Snapshot(
            volume_content_source::SnapshotSource {
                snapshot_id: "../etc".into(),
            },
        )),
    });
    assert_eq!(
        code(c.create_volume(bad_source).await).await,
        Code::InvalidArgument
    );

    let volume = c.create("pv-n").await;
    let publish = |node: String| ControllerPublishVolumeRequest {
        volume_id: volume.volume_id.clone(),
        node_id: node,
        volume_capability: Some(mount_capability(Mode::SingleNodeWriter)),
        ..Default::default()
    };
    c.controller_publish_volume(publish("n".repeat(256)))
        .await
        .unwrap();
    assert_eq!(
        code(c.controller_publish_volume(publish("n".repeat(257))).await).await,
        Code::InvalidArgument
    );
}

#[tokio::test]
async fn not_found_on_delete_is_success() {
    let host = TestHost::start(RULE_BREAKER).await;
    let mut c = host.client.controller.clone();
    let volume = c.create("pv-d").await;
    // The rule-breaker answers NOT_FOUND to every deletion.
    c.delete_volume(requests::delete(&volume.volume_id))
        .await
        .unwrap();
    c.delete_volume(requests::delete(&volume.volume_id))
        .await
        .unwrap();
    c.delete_snapshot(DeleteSnapshotRequest {
        snapshot_id: "snap-x".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    // The record went with it: the name is free for a different volume.
    let mut other = requests::create("pv-d");
    other.parameters.insert("tier".into(), "gold".into());
    c.create_volume(other).await.unwrap();
}

#[tokio::test]
async fn validate_refuses_an_unknown_volume_before_confirming() {
    let host = TestHost::start(RULE_BREAKER).await;
    let mut c = host.client.controller.clone();
    let validate = |id: &str| ValidateVolumeCapabilitiesRequest {
        volume_id: id.into(),
        volume_capabilities: vec![mount_capability(Mode::SingleNodeWriter)],
        ..Default::default()
    };
    // The backend confirms anything; the host asks get-volume first.
    let err = c
        .validate_volume_capabilities(validate("rb-ghost"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{}", err.message());
    let known = c
        .validate_volume_capabilities(validate("rb-known-1"))
        .await
        .unwrap()
        .into_inner();
    assert!(known.confirmed.is_some());
    // Recorded volumes are known without asking.
    let volume = c.create("pv-v").await;
    let ok = c
        .validate_volume_capabilities(validate(&volume.volume_id))
        .await
        .unwrap()
        .into_inner();
    assert!(ok.confirmed.is_some());
}

#[tokio::test]
async fn list_pages_are_bounded_and_tokens_must_be_ours() {
    let host = TestHost::start(RULE_BREAKER).await;
    let mut c = host.client.controller.clone();
    let list = |max_entries, token: &str| ListVolumesRequest {
        max_entries,
        starting_token: token.into(),
    };
    // The backend returns one entry more than asked for.
    let err = c.list_volumes(list(2, "")).await.unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert!(
        err.message().contains("3 entries for max_entries 2"),
        "{}",
        err.message()
    );
    let first = c.list_volumes(list(0, "")).await.unwrap().into_inner();
    assert_eq!(
        (first.entries.len(), first.next_token.as_str()),
        (3, "next")
    );
    c.list_volumes(list(0, "next")).await.unwrap();
    let err = c.list_volumes(list(0, "made-up")).await.unwrap_err();
    assert_eq!(err.code(), Code::Aborted, "{}", err.message());

    let snapshots = |id: &str| ListSnapshotsRequest {
        snapshot_id: id.into(),
        ..Default::default()
    };
    c.list_snapshots(snapshots("")).await.unwrap();
    let err = c.list_snapshots(snapshots("bad")).await.unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{}", err.message());
    let err = c
        .list_snapshots(ListSnapshotsRequest {
            starting_token: "made-up".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
}

#[tokio::test]
async fn absent_interfaces_are_unimplemented_and_not_advertised() {
    let nlc = TestHost::start(NODE_LOCAL_CACHE).await;
    let rpcs = controller_rpcs(&nlc).await;
    for absent in [
        Rpc::PublishUnpublishVolume,
        Rpc::PublishReadonly,
        Rpc::ExpandVolume,
        Rpc::GetCapacity,
        Rpc::ListVolumes,
        Rpc::CreateDeleteSnapshot,
        Rpc::GetVolume,
    ] {
        assert!(!rpcs.contains(&absent), "{absent:?} advertised");
    }
    let mut c = nlc.client.controller.clone();
    let err = c
        .get_capacity(GetCapacityRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(
        err.message().contains("modcsi:backend/capacity"),
        "{}",
        err.message()
    );

    let rb = TestHost::start(RULE_BREAKER).await;
    let rpcs = controller_rpcs(&rb).await;
    for present in [
        Rpc::PublishUnpublishVolume,
        Rpc::PublishReadonly,
        Rpc::ExpandVolume,
        Rpc::GetCapacity,
        Rpc::ListVolumes,
        Rpc::CreateDeleteSnapshot,
        Rpc::ListSnapshots,
        Rpc::GetVolume,
    ] {
        assert!(rpcs.contains(&present), "{present:?} not advertised");
    }
    let capacity = rb
        .client
        .controller
        .clone()
        .get_capacity(GetCapacityRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(capacity.available_capacity, 7 << 30);
    assert_eq!(capacity.minimum_volume_size, Some(1 << 20));

    // Expansion: online, since the node grows filesystems for backends that attach storage.
    let plugin = rb
        .client
        .identity
        .clone()
        .get_plugin_capabilities(GetPluginCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    let expansion: Vec<_> = plugin
        .capabilities
        .iter()
        .filter_map(|c| match &c.r#type {
            Some(PType::VolumeExpansion(e)) => Some(e.r#type()),
            _ => None,
        })
        .collect();
    assert_eq!(expansion, [Expansion::Online]);
}

#[tokio::test]
async fn node_attributes_reach_controller_publish() {
    let host = TestHost::start(RULE_BREAKER).await;
    let info = host
        .client
        .node
        .clone()
        .node_get_info(NodeGetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.max_volumes_per_node, 7);
    let mut c = host.client.controller.clone();
    let volume = c.create("pv-attr").await;
    let context = c
        .controller_publish_volume(ControllerPublishVolumeRequest {
            volume_id: volume.volume_id,
            node_id: info.node_id,
            volume_capability: Some(mount_capability(Mode::SingleNodeWriter)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .publish_context;
    assert_eq!(
        context.get("hostnqn").map(String::as_str),
        Some("nqn.2014-08.org.nvmexpress:uuid:test")
    );
}

#[tokio::test]
async fn backend_output_is_scrubbed_escaped_and_capped() {
    let logs = capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("password");
    std::fs::write(&secret_file, "config-s3cret-value\n").unwrap();
    let config = dir.path().join("backend.toml");
    std::fs::write(
        &config,
        format!(
            "greeting = \"hello\"\n[auth]\npassword = {{ secret-file = \"{}\" }}\n",
            secret_file.display()
        ),
    )
    .unwrap();
    let host =
        TestHost::start_with(RULE_BREAKER, |c| c.backend_config = Some(config.clone())).await;
    let mut c = host.client.controller.clone();
    let with_secret = |name: &str, rule: &str| {
        let mut r = breaking(name, rule);
        r.secrets = HashMap::from([("token".into(), "request-s3cret-value".into())]);
        r
    };

    // The backend reads its configuration, the secret reference resolved.
    let volume = c
        .create_volume(breaking("pv-config", "config"))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(
        volume
            .volume_context
            .get("config.greeting")
            .map(String::as_str),
        Some("hello")
    );
    assert_eq!(
        volume
            .volume_context
            .get("config.auth.password")
            .map(String::as_str),
        Some("config-s3cret-value")
    );

    c.create_volume(with_secret("pv-log", "log-secret"))
        .await
        .unwrap();
    let err = c
        .create_volume(with_secret("pv-err", "error-secret"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert!(err.message().contains("<redacted>"), "{}", err.message());
    let trap = c
        .create_volume(with_secret("pv-panic", "panic-secret"))
        .await
        .unwrap_err();
    assert_eq!(trap.code(), Code::Internal);
    assert!(
        trap.message().contains("leaking <redacted>"),
        "{}",
        trap.message()
    );
    assert!(
        !trap.message().contains("wasm backtrace"),
        "{}",
        trap.message()
    );

    tokio::time::sleep(Duration::from_millis(50)).await;
    let logs = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    for (what, text) in [
        ("status", err.message()),
        ("status", trap.message()),
        ("logs", logs.as_str()),
    ] {
        for secret in ["request-s3cret-value", "config-s3cret-value"] {
            assert!(!text.contains(secret), "{secret} in the {what}");
        }
    }
    assert!(
        logs.contains("line one\\nINFO forged"),
        "control characters escaped"
    );
    assert!(
        !logs.lines().any(|l| l.starts_with("INFO forged")),
        "a forged log line"
    );
    let flood = logs
        .lines()
        .filter(|l| l.contains(&"f".repeat(100)))
        .count();
    assert!(
        flood < 40,
        "{flood} flood lines: the per-call allowance did not hold"
    );
    assert!(logs.contains("log allowance"));
    assert!(
        logs.contains("wasm backtrace") || logs.contains("backend call failed"),
        "the trap is logged in full"
    );
}

#[tokio::test]
async fn every_refusal_is_logged_with_its_reason_in_the_calls_span() {
    let logs = capture_logs();
    let host = TestHost::start(RULE_BREAKER).await;
    let v = host.create("held").await;
    let mut c = host.client.controller.clone();
    let publish = |node: &str| ControllerPublishVolumeRequest {
        volume_id: v.volume_id.clone(),
        node_id: node.into(),
        volume_capability: Some(mount_capability(
            modcsi::proto::volume_capability::access_mode::Mode::SingleNodeWriter,
        )),
        ..Default::default()
    };
    c.controller_publish_volume(publish("node-a"))
        .await
        .unwrap();
    c.controller_publish_volume(publish("node-b"))
        .await
        .unwrap_err();
    // A backend's own lines, written during a call, carry the call's span too.
    c.create_volume(breaking("pv-logged", "log-secret"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let logs = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    let refusal = logs
        .lines()
        .find(|l| l.contains("is attached to node node-a"))
        .expect("the refusal is logged");
    for part in ["WARN", "ControllerPublishVolume", &v.volume_id, "node-b"] {
        assert!(refusal.contains(part), "{part} missing: {refusal}");
    }
    assert!(
        logs.lines().any(|l| l.contains("rule-breaker")
            && l.contains("CreateVolume")
            && l.contains("pv-logged")),
        "{logs}"
    );
}

#[tokio::test]
async fn the_store_is_durable_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let count = |v: &Volume| v.volume_context.get("creates").cloned();
    for (round, names) in [(1, ["pv-s1", "pv-s2"]), (2, ["pv-s3", "pv-s4"])] {
        let host = TestHost::start_with(RULE_BREAKER, |c| c.state_dir = state.clone()).await;
        let mut c = host.client.controller.clone();
        for (i, name) in names.iter().enumerate() {
            let v = c
                .create_volume(breaking(name, "store"))
                .await
                .unwrap()
                .into_inner()
                .volume
                .unwrap();
            assert_eq!(count(&v), Some(((round - 1) * 2 + i + 1).to_string()));
        }
        // The host's record survives too: after a restart, the same name with another request
        // is still refused.
        if round == 2 {
            let mut other = breaking("pv-s1", "store");
            other.parameters.insert("tier".into(), "gold".into());
            let err = c.create_volume(other).await.unwrap_err();
            assert_eq!(err.code(), tonic::Code::AlreadyExists, "{}", err.message());
        }
        drop(host);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_located_attachment_is_validated_before_the_node_uses_it() {
    let host = TestHost::start(RULE_BREAKER).await;
    let mut node = host.client.node.clone();
    // A volume of the driver the backend replaces: no `modcsi.io/` keys, found by `locate`.
    let legacy = |id: &str| Volume {
        volume_id: id.into(),
        ..Default::default()
    };
    let target = host.target("legacy");
    node.node_publish_volume(requests::publish(&legacy("legacy-dir"), &target, false))
        .await
        .unwrap();
    node.node_unpublish_volume(requests::unpublish("legacy-dir", &target))
        .await
        .unwrap();
    // The backend locates one at a by-id name with a path in it.
    let err = node
        .node_publish_volume(requests::publish(&legacy("legacy-escape"), &target, false))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{}", err.message());
    assert!(
        err.message().contains("unusable attachment"),
        "{}",
        err.message()
    );
    assert!(!std::path::Path::new(&target).exists(), "nothing created");
}
