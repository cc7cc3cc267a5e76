//! The Emma backend end to end against the fake Emma API over real HTTPS (a test CA the host's
//! `http` target trusts, credentials the host substitutes): create → publish → stage (format,
//! mount, write) → expand on both sides (the fake's loop device and the filesystem really grow)
//! → unpublish → delete, every call repeated, with a DRAFT and an attach longer than the call's
//! deadline so that the retry path is the one exercised. Plus: one volume per name after a lost
//! answer and after a host restart, faults absorbed or named, tokens refreshed, a wrong secret
//! told without the secret, offers enforced, a public-driver PV staged through `locate`, a node
//! finding its VM by its address (or naming what it tried), and the `http` capability's
//! refusals (targets, config, redirects, answers over the cap) with the rule-breaker backend.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use modcsi::proto::volume_capability::{AccessMode, AccessType, MountVolume, access_mode::Mode};
use modcsi::proto::*;
use modcsi_tests::fake_emma::rig::{EMMA, EmmaRig, host_config, start_host};
use modcsi_tests::fake_emma::{FakeEmma, FakeEmmaOptions, default_vms};
use modcsi_tests::{RULE_BREAKER, TestHost, requests};
use tonic::Code;

const GIB: i64 = 1 << 30;

async fn rig() -> EmmaRig {
    EmmaRig::start(FakeEmmaOptions::default(), Duration::from_secs(10)).await
}

fn capability() -> VolumeCapability {
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

fn create(name: &str, bytes: i64, parameters: &[(&str, &str)]) -> CreateVolumeRequest {
    let mut r = requests::create(name);
    r.capacity_range = Some(CapacityRange {
        required_bytes: bytes,
        limit_bytes: 0,
    });
    r.volume_capabilities = vec![capability()];
    r.parameters = parameters
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    r
}

fn ssd(name: &str, bytes: i64) -> CreateVolumeRequest {
    create(
        name,
        bytes,
        &[("type", "ssd"), ("dataCenterId", "aws-eu-central-1")],
    )
}

/// Repeats a call the way the sidecars do: again after ABORTED or UNAVAILABLE (at most 60
/// times); gives the answer and how many "in progress" answers came first.
macro_rules! until_done {
    ($call:expr) => {{
        let mut pending = 0;
        let mut tries = 0;
        loop {
            tries += 1;
            match $call.await {
                Ok(answer) => break (answer.into_inner(), pending),
                Err(s) if matches!(s.code(), Code::Aborted | Code::Unavailable) && tries < 60 => {
                    pending += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(s) => panic!("{:?}: {}", s.code(), s.message()),
            }
        }
    }};
}

fn publish_request(id: &str) -> ControllerPublishVolumeRequest {
    ControllerPublishVolumeRequest {
        volume_id: id.into(),
        node_id: "test-node".into(),
        volume_capability: Some(capability()),
        ..Default::default()
    }
}

fn stage(id: &str, staging: &str, context: &HashMap<String, String>) -> NodeStageVolumeRequest {
    NodeStageVolumeRequest {
        volume_id: id.into(),
        staging_target_path: staging.into(),
        volume_capability: Some(capability()),
        publish_context: context.clone(),
        ..Default::default()
    }
}

/// Size of the filesystem mounted at `path`.
fn filesystem_bytes(path: &str) -> u64 {
    let stat = nix::sys::statvfs::statvfs(path).unwrap();
    stat.blocks() * stat.fragment_size()
}

#[tokio::test]
async fn a_volume_lives_through_retries_from_create_to_delete() {
    // DRAFT and every attach, detach and edit last longer than one call may: the provisioner's
    // and attacher's retries carry each operation to its end.
    let options = FakeEmmaOptions {
        draft: Duration::from_secs(5),
        busy: Duration::from_secs(4),
        ..Default::default()
    };
    let rig = EmmaRig::start(options, Duration::from_secs(3)).await;
    let mut controller = rig.host.client.controller.clone();
    let mut node = rig.host.client.node.clone();

    let (created, pending) = until_done!(controller.create_volume(ssd("pvc-life", 3 * GIB / 2)));
    let volume = created.volume.unwrap();
    assert!(
        pending > 0,
        "a DRAFT longer than a call is answered as in progress first"
    );
    assert_eq!(
        volume.capacity_bytes,
        2 * GIB,
        "rounded up to the smallest offer"
    );
    assert_eq!(volume.volume_context["type"], "ssd");
    assert_eq!(volume.volume_context["dataCenterId"], "aws-eu-central-1");
    let again = controller
        .create_volume(ssd("pvc-life", 3 * GIB / 2))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(again.volume_id, volume.volume_id);
    assert_eq!(
        rig.fake.count("POST", "/v1/volumes"),
        1,
        "one volume per name"
    );
    let topology = &volume.accessible_topology[0].segments;
    assert_eq!(
        topology["topology.csi.emma.ms/datacenter"],
        "aws-eu-central-1"
    );

    let id = volume.volume_id.clone();
    let (published, pending) =
        until_done!(controller.controller_publish_volume(publish_request(&id)));
    assert!(
        pending > 0,
        "an attach longer than a call is answered as in progress first"
    );
    let context = published.publish_context;
    assert_eq!(
        context["devicePath"],
        format!("/dev/disk/by-id/virtio-{id}")
    );
    let again = controller
        .controller_publish_volume(publish_request(&id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.publish_context, context);
    assert_eq!(
        rig.fake.count("POST", "/v1/vms/101/actions"),
        1,
        "one attach, whatever the retries"
    );

    let (staging, target) = (rig.host.target("s"), rig.host.target("t"));
    for _ in 0..2 {
        node.node_stage_volume(stage(&id, &staging, &context))
            .await
            .unwrap();
    }
    let mut publish = requests::publish(&volume, &target, false);
    publish.staging_target_path = staging.clone();
    publish.publish_context = context.clone();
    publish.volume_capability = Some(capability());
    for _ in 0..2 {
        node.node_publish_volume(publish.clone()).await.unwrap();
    }
    std::fs::write(Path::new(&target).join("data"), b"kept at Emma").unwrap();
    let before = filesystem_bytes(&target);

    let expand = ControllerExpandVolumeRequest {
        volume_id: id.clone(),
        capacity_range: Some(CapacityRange {
            required_bytes: 3 * GIB,
            limit_bytes: 0,
        }),
        volume_capability: Some(capability()),
        ..Default::default()
    };
    let (grown, _) = until_done!(controller.controller_expand_volume(expand.clone()));
    assert_eq!(grown.capacity_bytes, 4 * GIB, "grown to the next offer");
    assert!(grown.node_expansion_required);
    let edits: Vec<_> = rig
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.api_path() == format!("/v1/volumes/{id}/actions"))
        .filter_map(|r| r.json())
        .collect();
    assert_eq!(edits.len(), 1, "{edits:?}");
    assert_eq!(edits[0]["volumeGb"], 4, "the spec's field: {edits:?}");
    let expanded = node
        .node_expand_volume(NodeExpandVolumeRequest {
            volume_id: id.clone(),
            volume_path: target.clone(),
            staging_target_path: staging.clone(),
            volume_capability: Some(capability()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(expanded.capacity_bytes, 4 * GIB);
    let after = filesystem_bytes(&target);
    assert!(
        after > before + (GIB as u64),
        "the filesystem grew: {before} → {after}"
    );
    assert_eq!(
        std::fs::read(Path::new(&target).join("data")).unwrap(),
        b"kept at Emma"
    );

    for _ in 0..2 {
        node.node_unpublish_volume(requests::unpublish(&id, &target))
            .await
            .unwrap();
        node.node_unstage_volume(NodeUnstageVolumeRequest {
            volume_id: id.clone(),
            staging_target_path: staging.clone(),
        })
        .await
        .unwrap();
    }
    let unpublish = ControllerUnpublishVolumeRequest {
        volume_id: id.clone(),
        node_id: "test-node".into(),
        ..Default::default()
    };
    for _ in 0..2 {
        until_done!(controller.controller_unpublish_volume(unpublish.clone()));
    }
    assert!(rig.fake.device(id.parse().unwrap()).is_none(), "detached");
    for _ in 0..2 {
        until_done!(controller.delete_volume(requests::delete(&id)));
    }
    assert!(
        rig.fake.data_volumes().is_empty(),
        "{:?}",
        rig.fake.data_volumes()
    );
    // A pooled, kept-alive connection served the whole life (a reconnect now and then at most).
    let requests = rig.fake.requests().len();
    assert!(
        rig.fake.connections() * 10 <= requests,
        "{} connections for {requests} requests",
        rig.fake.connections()
    );
}

#[tokio::test]
async fn a_create_whose_answer_was_lost_makes_one_volume() {
    let rig = rig().await;
    let mut controller = rig.host.client.controller.clone();
    // Emma makes the volume, and the answer never arrives.
    rig.fake
        .faults()
        .matching("POST", "/v1/volumes")
        .lose_responses(1);
    let err = controller
        .create_volume(ssd("pvc-lost", GIB))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert_eq!(rig.fake.data_volumes().len(), 1);
    // The provisioner's retry finds that volume instead of making a second one.
    let (created, _) = until_done!(controller.create_volume(ssd("pvc-lost", GIB)));
    assert_eq!(
        rig.fake.data_volumes().len(),
        1,
        "{:?}",
        rig.fake.data_volumes()
    );
    assert_eq!(rig.fake.count("POST", "/v1/volumes"), 1);
    assert_eq!(
        created.volume.unwrap().volume_id,
        rig.fake.data_volumes()[0]["id"].to_string()
    );
}

#[tokio::test]
async fn a_host_restarted_mid_create_finishes_the_same_volume() {
    let options = FakeEmmaOptions {
        draft: Duration::from_secs(4),
        ..Default::default()
    };
    let fake = FakeEmma::start(options).await;
    let files = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let path = host_config(&fake, files.path(), fake.client_secret());
    let host = start_host(
        EMMA,
        &fake,
        path.clone(),
        Duration::from_secs(2),
        Some(state.path().join("state")),
    )
    .await;
    let err = host
        .client
        .controller
        .clone()
        .create_volume(ssd("pvc-restart", GIB))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted, "in progress: {}", err.message());
    drop(host);
    // The store's file is released once the old host has stopped.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let host = start_host(
        EMMA,
        &fake,
        path,
        Duration::from_secs(2),
        Some(state.path().join("state")),
    )
    .await;
    let (created, _) = until_done!(
        host.client
            .controller
            .clone()
            .create_volume(ssd("pvc-restart", GIB))
    );
    assert_eq!(
        fake.count("POST", "/v1/volumes"),
        1,
        "one volume across the restart"
    );
    assert_eq!(
        created.volume.unwrap().volume_id,
        fake.data_volumes()[0]["id"].to_string()
    );
}

#[tokio::test]
async fn throttling_and_errors_are_absorbed_within_the_budget_and_named_beyond_it() {
    let rig = rig().await;
    let mut controller = rig.host.client.controller.clone();
    rig.fake.faults().throttle(1, 1);
    rig.fake.faults().matching("GET", "/v1/").fail(2);
    let (created, pending) = until_done!(controller.create_volume(ssd("pvc-burst", GIB)));
    assert_eq!(pending, 0, "absorbed inside the call");
    assert!(created.volume.is_some());
    let statuses: Vec<_> = rig
        .fake
        .requests()
        .iter()
        .filter_map(|r| r.status)
        .collect();
    assert!(
        statuses.contains(&429) && statuses.contains(&500),
        "{statuses:?}"
    );

    rig.fake.faults().matching("GET", "/v1/").fail(50);
    let err = controller
        .create_volume(ssd("pvc-burst-2", GIB))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert!(
        err.message().contains("500") && err.message().contains("INTERNAL_SERVER_ERROR"),
        "names the API's answer: {}",
        err.message()
    );
}

#[tokio::test]
async fn expired_tokens_are_refreshed_or_reissued_without_failing_the_call() {
    let rig = rig().await;
    let mut controller = rig.host.client.controller.clone();
    until_done!(controller.create_volume(ssd("pvc-t1", GIB)));
    assert_eq!(
        rig.fake.count("POST", "/v1/issue-token"),
        1,
        "one token for many calls"
    );
    rig.fake.expire_access_tokens();
    until_done!(controller.create_volume(ssd("pvc-t2", GIB)));
    assert_eq!(rig.fake.count("POST", "/v1/refresh-token"), 1);
    rig.fake.expire_access_tokens();
    rig.fake.expire_refresh_tokens();
    until_done!(controller.create_volume(ssd("pvc-t3", GIB)));
    assert_eq!(rig.fake.count("POST", "/v1/issue-token"), 2, "re-issued");
    // The credentials reached the API only in the host's substitution.
    let issued = rig
        .fake
        .requests()
        .into_iter()
        .find(|r| r.api_path() == "/v1/issue-token")
        .unwrap();
    assert_eq!(
        issued.json().unwrap()["clientSecret"],
        rig.fake.client_secret()
    );
}

#[tokio::test]
async fn a_wrong_secret_is_refused_without_showing_it() {
    let logs = modcsi_tests::capture_logs();
    let fake = FakeEmma::start(FakeEmmaOptions::default()).await;
    let files = tempfile::tempdir().unwrap();
    let wrong = "wr0ng-s3cret-value";
    let path = host_config(&fake, files.path(), wrong);
    let host = start_host(EMMA, &fake, path, Duration::from_secs(10), None).await;
    let err = host
        .client
        .controller
        .clone()
        .create_volume(ssd("pvc-denied", GIB))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(err.message().contains("credentials"), "{}", err.message());
    assert!(!err.message().contains(wrong), "{}", err.message());
    let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(!logs.contains(wrong), "the secret is in the log");
    assert!(fake.data_volumes().is_empty());
}

#[tokio::test]
async fn unknown_data_centers_and_unoffered_sizes_are_refused_with_the_offers() {
    let rig = rig().await;
    let mut controller = rig.host.client.controller.clone();
    let err = controller
        .create_volume(create("pvc-dc", GIB, &[("dataCenterId", "moon-base-1")]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(err.message().contains("moon-base-1"), "{}", err.message());
    let err = controller
        .create_volume(ssd("pvc-huge", 200 * GIB))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{}", err.message());
    assert!(
        err.message().contains("128"),
        "lists the offers: {}",
        err.message()
    );
    // The spec's required isBootable was sent with every offer query.
    assert!(
        rig.fake
            .requests()
            .iter()
            .filter(|r| r.api_path() == "/v1/volume-configs")
            .all(|r| r.path.contains("isBootable=false"))
    );
    assert_eq!(rig.fake.count("POST", "/v1/volumes"), 0);
}

#[tokio::test]
async fn a_public_driver_volume_stages_through_locate() {
    let rig = rig().await;
    let mut controller = rig.host.client.controller.clone();
    let (created, _) = until_done!(controller.create_volume(ssd("pvc-public", GIB)));
    let id = created.volume.unwrap().volume_id;
    until_done!(controller.controller_publish_volume(publish_request(&id)));
    // What the public driver left in the PV and the VolumeAttachment: no modcsi keys.
    let public_context: HashMap<String, String> = [(
        "devicePath".to_string(),
        format!("/dev/disk/by-id/virtio-{id}"),
    )]
    .into();
    let mut request = stage(&id, &rig.host.target("s"), &public_context);
    request.volume_context = [
        ("type".to_string(), "ssd".to_string()),
        ("dataCenterId".to_string(), "aws-eu-central-1".to_string()),
        ("fsType".to_string(), "ext4".to_string()),
    ]
    .into();
    rig.host
        .client
        .node
        .clone()
        .node_stage_volume(request)
        .await
        .unwrap();
    assert!(
        rig.host
            .mounts()
            .contains(&PathBuf::from(rig.host.target("s")))
    );
}

/// The volume context of a rule-breaker create with these parameters.
async fn rule_breaker(
    host: &TestHost,
    name: &str,
    parameters: &[(&str, &str)],
) -> HashMap<String, String> {
    let mut request = requests::create(name);
    request.parameters = parameters
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let volume = host
        .client
        .controller
        .clone()
        .create_volume(request)
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    volume.volume_context
}

/// The rule-breaker backend's `http` request, answered in its volume context.
async fn http_probe(host: &TestHost, name: &str, parameters: &[(&str, &str)]) -> String {
    let parameters: Vec<_> = [("break", "http")]
        .iter()
        .chain(parameters)
        .copied()
        .collect();
    rule_breaker(host, name, &parameters).await["http"].clone()
}

#[tokio::test]
async fn backends_reach_only_their_targets_and_never_hold_the_credentials() {
    let logs = modcsi_tests::capture_logs();
    let fake = FakeEmma::start(FakeEmmaOptions::default()).await;
    let files = tempfile::tempdir().unwrap();
    let path = host_config(&fake, files.path(), fake.client_secret());
    let host = start_host(RULE_BREAKER, &fake, path, Duration::from_secs(10), None).await;
    // A listener standing for any other host: nothing may reach it.
    let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    elsewhere.set_nonblocking(true).unwrap();
    let other = elsewhere.local_addr().unwrap().to_string();

    let answer = http_probe(&host, "t1", &[("target", &other), ("path", "/")]).await;
    assert!(answer.contains("refused by the host"), "{answer}");
    let answer = http_probe(&host, "t2", &[("target", "api.emma.ms"), ("path", "/")]).await;
    assert!(answer.contains("refused by the host"), "{answer}");

    // The configured target works, with the credentials substituted on the way.
    let body = r#"{"clientId":"{{secret:client-id}}","clientSecret":"{{secret:client-secret}}"}"#;
    let answer = http_probe(
        &host,
        "t3",
        &[
            ("target", "emma"),
            ("path", "/v1/issue-token"),
            ("body", body),
        ],
    )
    .await;
    assert!(
        answer.starts_with("200 ") && answer.contains("accessToken"),
        "{answer}"
    );
    // A placeholder for a secret the target does not have is refused, not sent.
    let before = fake.requests().len();
    let answer = http_probe(
        &host,
        "t4",
        &[
            ("target", "emma"),
            ("path", "/v1/issue-token"),
            ("body", "{{secret:ssh-key}}"),
        ],
    )
    .await;
    assert!(answer.contains("refused by the host"), "{answer}");
    assert_eq!(fake.requests().len(), before);

    // A redirect off the target comes back to the backend; following it is refused.
    fake.redirect("/v1/steal", &format!("https://{other}/collect"));
    let answer = http_probe(
        &host,
        "t5",
        &[
            ("target", "emma"),
            ("path", "/v1/steal"),
            ("body", body),
            ("follow", "1"),
        ],
    )
    .await;
    assert!(
        answer.contains("followed: error: refused by the host"),
        "{answer}"
    );
    assert!(
        elsewhere.accept().is_err(),
        "a connection reached the other host"
    );

    // The configuration the backend can read holds neither the target nor its secrets.
    let context = rule_breaker(&host, "t6", &[("break", "config")]).await;
    for (key, value) in &context {
        assert!(
            !key.contains("http") && !key.contains("secret"),
            "{key} = {value}"
        );
        assert!(!value.contains(fake.client_secret()), "{key} = {value}");
    }
    let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(
        logs.contains("http request refused"),
        "the operator sees the refusal"
    );
    assert!(
        !logs.contains(fake.client_secret()),
        "the secret is in the log"
    );
}

/// A host whose backend configuration names no VM for its node.
async fn host_without_vm_id(fake: &FakeEmma, files: &Path) -> TestHost {
    let path = host_config(fake, files, fake.client_secret());
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("vm-id = \"101\"\n", "")).unwrap();
    start_host(EMMA, fake, path, Duration::from_secs(10), None).await
}

#[tokio::test]
async fn a_node_finds_its_vm_by_its_address_or_names_what_it_tried() {
    let addresses = modcsi::node::addresses::addresses();
    assert!(!addresses.is_empty(), "this machine has no address");
    // VM 102 has one of this machine's addresses.
    let mut vms = default_vms();
    vms[1].ip = addresses[0].clone();
    let fake = FakeEmma::start(FakeEmmaOptions {
        vms,
        ..Default::default()
    })
    .await;
    let files = tempfile::tempdir().unwrap();
    let host = host_without_vm_id(&fake, files.path()).await;
    let info = host
        .client
        .node
        .clone()
        .node_get_info(NodeGetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.node_id, "102");
    assert_eq!(info.max_volumes_per_node, 16);
    let topology = info.accessible_topology.unwrap().segments;
    assert_eq!(
        topology["topology.csi.emma.ms/datacenter"],
        "aws-eu-central-1"
    );

    // No VM has any of them: no guess, and the answer says what was looked at.
    let fake = FakeEmma::start(FakeEmmaOptions::default()).await;
    let files = tempfile::tempdir().unwrap();
    let host = host_without_vm_id(&fake, files.path()).await;
    let err = host
        .client
        .node
        .clone()
        .node_get_info(NodeGetInfoRequest {})
        .await
        .unwrap_err();
    assert!(
        err.message().contains(&addresses[0]) && err.message().contains("emma.vm-id"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn an_answer_over_the_targets_cap_is_an_error_not_a_truncation() {
    let fake = FakeEmma::start(FakeEmmaOptions::default()).await;
    let files = tempfile::tempdir().unwrap();
    let path = host_config(&fake, files.path(), fake.client_secret());
    let text = std::fs::read_to_string(&path).unwrap();
    let capped = text.replace(
        "[http.targets.emma.secrets]",
        "max-response-bytes = 64\n[http.targets.emma.secrets]",
    );
    std::fs::write(&path, capped).unwrap();
    let host = start_host(RULE_BREAKER, &fake, path, Duration::from_secs(10), None).await;
    let body = r#"{"clientId":"{{secret:client-id}}","clientSecret":"{{secret:client-secret}}"}"#;
    let answer = http_probe(
        &host,
        "capped",
        &[
            ("target", "emma"),
            ("path", "/v1/issue-token"),
            ("body", body),
        ],
    )
    .await;
    assert!(answer.contains("answer too large"), "{answer}");
}
