//! `modcsi csi`, the CSI client for people, run as the real binary against a modcsi host and
//! against a bare driver: capabilities and gRPC codes by their names, `ready` as the spec reads
//! it, a service the endpoint does not serve shown without failing `info`, and `--json`.

use std::path::Path;

use modcsi::proto::controller_server::{Controller, ControllerServer};
use modcsi::proto::identity_server::{Identity, IdentityServer};
use modcsi::proto::node_server::{Node, NodeServer};
use modcsi::proto::*;
use modcsi_tests::process::modcsi_binary;
use modcsi_tests::{NODE_LOCAL_CACHE, TestHost};
use serde_json::{Value, json};
use tonic::codegen::tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

/// What `modcsi csi --endpoint <endpoint> <args>` did.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not one JSON object ({e}): {}", self.stdout))
    }
}

async fn csi(endpoint: &str, args: &[&str]) -> Run {
    let output = tokio::process::Command::new(modcsi_binary())
        .args(["csi", "--endpoint", endpoint])
        .args(args)
        .output()
        .await
        .expect("modcsi runs");
    Run {
        ok: output.status.success(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

fn names(value: &Value) -> Vec<&str> {
    let list = value
        .as_array()
        .unwrap_or_else(|| panic!("a list: {value}"));
    list.iter().map(|v| v.as_str().unwrap()).collect()
}

#[tokio::test]
async fn info_names_every_capability_of_a_modcsi_host() {
    let host = TestHost::start(NODE_LOCAL_CACHE).await;

    let text = csi(&host.endpoint, &["info"]).await;
    assert!(text.ok, "{}", text.stderr);
    let lines: Vec<&str> = text.stdout.lines().collect();
    for line in [
        "name=test.modcsi.io",
        "plugin_capability=CONTROLLER_SERVICE",
        "controller_capability=CREATE_DELETE_VOLUME",
        "node_capability=GET_VOLUME_STATS",
        "ready=true",
        "node_id=test-node",
    ] {
        assert!(lines.contains(&line), "no {line:?} in:\n{}", text.stdout);
    }
    for debug in ["r#type", "Some(", "Service {", "_error="] {
        assert!(
            !text.stdout.contains(debug),
            "{debug:?} in:\n{}",
            text.stdout
        );
    }
    assert!(lines.last().unwrap().starts_with("info ok in "));

    let json = csi(&host.endpoint, &["--json", "info"]).await;
    assert!(json.ok, "{}", json.stderr);
    let info = json.json();
    assert_eq!(info["name"], "test.modcsi.io");
    assert!(names(&info["plugin_capabilities"]).contains(&"CONTROLLER_SERVICE"));
    assert!(names(&info["controller_capabilities"]).contains(&"CREATE_DELETE_VOLUME"));
    assert!(names(&info["node_capabilities"]).contains(&"GET_VOLUME_STATS"));
    assert_eq!(info["ready"], true);
    assert_eq!(info["node"]["id"], "test-node");
    assert!(info["elapsed_ms"].is_f64(), "{info}");
}

#[tokio::test]
async fn create_answers_json_and_a_refusal_exits_naming_its_code() {
    let host = TestHost::start(NODE_LOCAL_CACHE).await;

    let created = csi(
        &host.endpoint,
        &["create", "pv-cli", "--size", "1Mi", "--json"],
    )
    .await;
    assert!(created.ok, "{}", created.stderr);
    let volume = created.json();
    let id = volume["volume_id"].as_str().unwrap();
    assert!(!id.is_empty(), "{volume}");
    assert!(
        volume["capacity_bytes"].as_i64().unwrap() >= 1 << 20,
        "{volume}"
    );
    assert!(volume["context"].is_object(), "{volume}");
    let deleted = csi(&host.endpoint, &["delete", id]).await;
    assert!(deleted.ok, "{}", deleted.stderr);
    assert!(
        deleted.stdout.starts_with("delete ok in "),
        "{}",
        deleted.stdout
    );

    for args in [&["delete", ""][..], &["--json", "delete", ""]] {
        let refused = csi(&host.endpoint, args).await;
        assert!(!refused.ok, "{args:?} succeeded: {}", refused.stdout);
        assert!(refused.stdout.is_empty(), "{}", refused.stdout);
        let error = "DeleteVolume failed: INVALID_ARGUMENT: ";
        assert!(refused.stderr.contains(error), "{}", refused.stderr);
        assert!(
            !refused.stderr.contains("InvalidArgument"),
            "{}",
            refused.stderr
        );
    }
}

/// A driver that answers Identity (a plugin service this build does not know, online volume
/// expansion, `ready` left unset) and NodeGetInfo when it has a node: every other call is
/// UNIMPLEMENTED, as tonic's default stubs answer.
struct BareIdentity;

#[tonic::async_trait]
impl Identity for BareIdentity {
    async fn get_plugin_info(
        &self,
        _: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        Ok(Response::new(GetPluginInfoResponse {
            name: "bare.csi.io".into(),
            vendor_version: "0.1.0".into(),
            manifest: [("commit".into(), "abc".into())].into(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        use plugin_capability::{Service, Type, VolumeExpansion, volume_expansion};
        let online = volume_expansion::Type::Online as i32;
        let types = [
            Type::Service(Service { r#type: 42 }),
            Type::VolumeExpansion(VolumeExpansion { r#type: online }),
        ];
        Ok(Response::new(GetPluginCapabilitiesResponse {
            capabilities: types.map(|t| PluginCapability { r#type: Some(t) }).into(),
        }))
    }

    async fn probe(&self, _: Request<ProbeRequest>) -> Result<Response<ProbeResponse>, Status> {
        Ok(Response::new(ProbeResponse { ready: None }))
    }
}

struct BareController;

#[tonic::async_trait]
impl Controller for BareController {}

struct BareNode(Option<NodeGetInfoResponse>);

#[tonic::async_trait]
impl Node for BareNode {
    async fn node_get_info(
        &self,
        _: Request<NodeGetInfoRequest>,
    ) -> Result<Response<NodeGetInfoResponse>, Status> {
        let answer = self.0.clone().map(Response::new);
        answer.ok_or_else(|| Status::unimplemented("no node here"))
    }
}

/// Serves a bare driver on a socket in `dir`: its endpoint.
fn serve_bare(dir: &Path, node: Option<NodeGetInfoResponse>) -> String {
    let socket = dir.join(format!("bare-{}.sock", node.is_some()));
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(IdentityServer::new(BareIdentity))
            .add_service(ControllerServer::new(BareController))
            .add_service(NodeServer::new(BareNode(node)))
            .serve_with_incoming(UnixListenerStream::new(listener)),
    );
    format!("unix://{}", socket.display())
}

#[tokio::test]
async fn info_reads_a_bare_driver_as_the_spec_does() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeGetInfoResponse {
        node_id: "bare-node".into(),
        max_volumes_per_node: 7,
        accessible_topology: Some(Topology {
            segments: [("zone".into(), "z1".into())].into(),
        }),
    };
    let endpoint = serve_bare(dir.path(), Some(node));

    let text = csi(&endpoint, &["info"]).await;
    assert!(text.ok, "{}", text.stderr);
    let lines: Vec<&str> = text.stdout.lines().collect();
    assert_eq!(
        lines[..lines.len() - 1],
        [
            "name=bare.csi.io",
            "vendor_version=0.1.0",
            "manifest.commit=abc",
            "plugin_capability=UNKNOWN(42)",
            "plugin_capability=VOLUME_EXPANSION_ONLINE",
            "controller_capability_error=UNIMPLEMENTED: Not yet implemented",
            "node_capability_error=UNIMPLEMENTED: Not yet implemented",
            "ready=true",
            "node_id=bare-node",
            "max_volumes_per_node=7",
            "topology.zone=z1",
        ],
        "{}",
        text.stdout
    );

    let info = csi(&endpoint, &["info", "--json"]).await.json();
    assert_eq!(
        info["plugin_capabilities"],
        json!(["UNKNOWN(42)", "VOLUME_EXPANSION_ONLINE"])
    );
    assert_eq!(info["manifest"], json!({"commit": "abc"}));
    assert!(info.get("controller_capabilities").is_none(), "{info}");
    let error = info["controller_capabilities_error"].as_str().unwrap();
    assert!(error.starts_with("UNIMPLEMENTED"), "{info}");
    assert_eq!(info["ready"], true);
    assert_eq!(
        info["node"],
        json!({"id": "bare-node", "max_volumes": 7, "topology": {"zone": "z1"}})
    );

    // Without NodeGetInfo, `info` says why and still succeeds.
    let endpoint = serve_bare(dir.path(), None);
    let text = csi(&endpoint, &["info"]).await;
    assert!(text.ok, "{}", text.stderr);
    let error = "node_info_error=UNIMPLEMENTED: no node here";
    assert!(text.stdout.lines().any(|l| l == error), "{}", text.stdout);
    let info = csi(&endpoint, &["--json", "info"]).await.json();
    assert_eq!(info["node_error"], "UNIMPLEMENTED: no node here");
    assert!(info.get("node").is_none(), "{info}");
}
