//! `modcsi csi <verb>`: drive any CSI endpoint by hand. Each verb prints what the driver
//! answered, one `key=value` a line, and how long the call took; with `--json`, one JSON object
//! with the same facts instead.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Display;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand};
use modcsi::client::CsiClient;
use modcsi::proto::volume_capability::{
    AccessMode, AccessType, BlockVolume, MountVolume, access_mode,
};
use modcsi::proto::*;
use serde::Serialize;
use serde_json::{Map, Value, json};

#[derive(Args)]
pub struct CsiArgs {
    /// The CSI endpoint to talk to.
    #[arg(long, env = "CSI_ENDPOINT", default_value = "unix:///csi/csi.sock")]
    endpoint: String,
    /// Print one JSON object per verb instead of `key=value` lines.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Subcommand)]
enum Verb {
    /// Plugin info, capabilities (plugin, controller, node), readiness and node info.
    Info,
    /// CreateVolume.
    Create {
        name: String,
        /// Requested capacity, e.g. 1Gi.
        #[arg(long, value_parser = super::parse_size)]
        size: Option<i64>,
        /// A StorageClass parameter, key=value (repeatable).
        #[arg(long = "param", value_parser = super::parse_pair)]
        params: Vec<(String, String)>,
        /// Request a block volume instead of a filesystem.
        #[arg(long)]
        block: bool,
    },
    /// DeleteVolume.
    Delete { volume_id: String },
    /// NodePublishVolume.
    Publish {
        volume_id: String,
        target: String,
        #[arg(long)]
        readonly: bool,
        /// Volume context from create, key=value (repeatable).
        #[arg(long = "context", value_parser = super::parse_pair)]
        context: Vec<(String, String)>,
    },
    /// NodeUnpublishVolume.
    Unpublish { volume_id: String, target: String },
    /// NodeGetVolumeStats.
    Stats { volume_id: String, path: String },
}

/// Where a verb's facts go: `key=value` lines printed as they come, or the fields of one JSON
/// object printed when the verb is done.
struct Out(Option<Map<String, Value>>);

impl Out {
    /// A fact: JSON field `key` holding `value`, or the text `lines`.
    fn put(&mut self, key: &str, value: impl Serialize, lines: impl IntoIterator<Item = String>) {
        match &mut self.0 {
            Some(fields) => {
                let value = serde_json::to_value(value).expect("CSI answers serialize as JSON");
                fields.insert(key.to_owned(), value);
            }
            None => lines.into_iter().for_each(|line| println!("{line}")),
        }
    }

    /// A fact printed as `key=value`.
    fn fact(&mut self, key: &str, value: impl Serialize + Display) {
        let line = format!("{key}={value}");
        self.put(key, value, [line]);
    }

    /// A service's capabilities, `<service>_capability=NAME` a line; or why it would not say.
    fn capabilities(&mut self, service: &str, answer: Result<Vec<String>, tonic::Status>) {
        match answer {
            Ok(names) => {
                let lines = names.iter().map(|n| format!("{service}_capability={n}"));
                self.put(&format!("{service}_capabilities"), &names, lines);
            }
            Err(status) => {
                let error = describe(&status);
                let line = format!("{service}_capability_error={error}");
                self.put(&format!("{service}_capabilities_error"), error, [line]);
            }
        }
    }

    /// The last line, `<verb> ok in <ms> ms`; or the JSON object, with `elapsed_ms`.
    fn finish(self, verb: &str, started: Instant) {
        let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
        match self.0 {
            Some(mut fields) => {
                fields.insert("elapsed_ms".into(), elapsed_ms.into());
                println!("{}", Value::Object(fields));
            }
            None => println!("{verb} ok in {elapsed_ms:.2} ms"),
        }
    }
}

/// A proto enum value by its proto name (`CONTROLLER_SERVICE`), or `UNKNOWN(<number>)` for a
/// number this build does not know.
fn enum_name<T: TryFrom<i32>>(number: i32, name: fn(&T) -> &'static str) -> String {
    T::try_from(number).map_or_else(|_| format!("UNKNOWN({number})"), |t| name(&t).to_owned())
}

fn plugin_capability(capability: &PluginCapability) -> String {
    use plugin_capability::{Type, service, volume_expansion};
    match capability.r#type {
        Some(Type::Service(s)) => enum_name(s.r#type, service::Type::as_str_name),
        Some(Type::VolumeExpansion(v)) => format!(
            "VOLUME_EXPANSION_{}",
            enum_name(v.r#type, volume_expansion::Type::as_str_name)
        ),
        None => "UNSET".into(),
    }
}

fn controller_capability(capability: &ControllerServiceCapability) -> String {
    use controller_service_capability::{Type, rpc};
    match capability.r#type {
        Some(Type::Rpc(r)) => enum_name(r.r#type, rpc::Type::as_str_name),
        None => "UNSET".into(),
    }
}

fn node_capability(capability: &NodeServiceCapability) -> String {
    use node_service_capability::{Type, rpc};
    match capability.r#type {
        Some(Type::Rpc(r)) => enum_name(r.r#type, rpc::Type::as_str_name),
        None => "UNSET".into(),
    }
}

fn mount_capability(block: bool) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(if block {
            AccessType::Block(BlockVolume {})
        } else {
            AccessType::Mount(MountVolume::default())
        }),
        access_mode: Some(AccessMode {
            mode: access_mode::Mode::SingleNodeWriter as i32,
        }),
    }
}

/// `CODE: message`.
fn describe(status: &tonic::Status) -> String {
    format!(
        "{}: {}",
        modcsi::csi::canonical_name(status.code()),
        status.message()
    )
}

fn status_error(verb: &str, status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{verb} failed: {}", describe(&status))
}

/// GetPluginInfo, the plugin, controller and node capabilities, Probe and NodeGetInfo. A
/// node-only or controller-only endpoint does not serve the other service: what it answers
/// instead is shown, and `info` goes on.
async fn info(client: &mut CsiClient, out: &mut Out) -> anyhow::Result<()> {
    let info = client
        .identity
        .get_plugin_info(GetPluginInfoRequest {})
        .await
        .map_err(|s| status_error("GetPluginInfo", s))?
        .into_inner();
    out.fact("name", info.name);
    out.fact("vendor_version", info.vendor_version);
    let manifest: BTreeMap<_, _> = info.manifest.into_iter().collect();
    let lines = manifest.iter().map(|(k, v)| format!("manifest.{k}={v}"));
    out.put("manifest", &manifest, lines);

    let plugin = client
        .identity
        .get_plugin_capabilities(GetPluginCapabilitiesRequest {})
        .await
        .map_err(|s| status_error("GetPluginCapabilities", s))?
        .into_inner()
        .capabilities;
    out.capabilities("plugin", Ok(plugin.iter().map(plugin_capability).collect()));
    let controller = client
        .controller
        .controller_get_capabilities(ControllerGetCapabilitiesRequest {})
        .await
        .map(|r| r.into_inner().capabilities);
    let controller = controller.map(|c| c.iter().map(controller_capability).collect());
    out.capabilities("controller", controller);
    let node = client
        .node
        .node_get_capabilities(NodeGetCapabilitiesRequest {})
        .await
        .map(|r| r.into_inner().capabilities);
    let node = node.map(|c| c.iter().map(node_capability).collect());
    out.capabilities("node", node);

    let probe = client
        .identity
        .probe(ProbeRequest {})
        .await
        .map_err(|s| status_error("Probe", s))?
        .into_inner();
    // The spec: a driver that leaves `ready` unset is ready.
    out.fact("ready", probe.ready.unwrap_or(true));

    match client.node.node_get_info(NodeGetInfoRequest {}).await {
        Ok(node) => {
            let node = node.into_inner();
            // 0 is "no limit".
            let max_volumes = (node.max_volumes_per_node > 0).then_some(node.max_volumes_per_node);
            let topology: Option<BTreeMap<_, _>> = node
                .accessible_topology
                .map(|t| t.segments.into_iter().collect());
            let segments = topology.iter().flatten();
            let lines = std::iter::once(format!("node_id={}", node.node_id))
                .chain(max_volumes.map(|n| format!("max_volumes_per_node={n}")))
                .chain(segments.map(|(k, v)| format!("topology.{k}={v}")));
            let value =
                json!({"id": node.node_id, "max_volumes": max_volumes, "topology": topology});
            out.put("node", value, lines);
        }
        Err(status) => {
            let error = describe(&status);
            let line = format!("node_info_error={error}");
            out.put("node_error", error, [line]);
        }
    }
    Ok(())
}

pub async fn run(args: CsiArgs) -> anyhow::Result<()> {
    let mut client = CsiClient::connect(&args.endpoint).await?;
    let mut out = Out(args.json.then(Map::new));
    let started = Instant::now();
    let verb = match args.verb {
        Verb::Info => {
            info(&mut client, &mut out).await?;
            "info"
        }
        Verb::Create {
            name,
            size,
            params,
            block,
        } => {
            let response = client
                .controller
                .create_volume(CreateVolumeRequest {
                    name,
                    capacity_range: size.map(|required_bytes| CapacityRange {
                        required_bytes,
                        limit_bytes: 0,
                    }),
                    volume_capabilities: vec![mount_capability(block)],
                    parameters: params.into_iter().collect(),
                    ..Default::default()
                })
                .await
                .map_err(|s| status_error("CreateVolume", s))?
                .into_inner();
            let volume = response.volume.context("CreateVolume returned no volume")?;
            out.fact("volume_id", volume.volume_id);
            out.fact("capacity_bytes", volume.capacity_bytes);
            let context: BTreeMap<_, _> = volume.volume_context.into_iter().collect();
            let lines = context.iter().map(|(k, v)| format!("context={k}={v}"));
            out.put("context", &context, lines);
            "create"
        }
        Verb::Delete { volume_id } => {
            client
                .controller
                .delete_volume(DeleteVolumeRequest {
                    volume_id,
                    ..Default::default()
                })
                .await
                .map_err(|s| status_error("DeleteVolume", s))?;
            "delete"
        }
        Verb::Publish {
            volume_id,
            target,
            readonly,
            context,
        } => {
            client
                .node
                .node_publish_volume(NodePublishVolumeRequest {
                    volume_id,
                    target_path: target,
                    volume_capability: Some(mount_capability(false)),
                    readonly,
                    volume_context: context.into_iter().collect::<HashMap<_, _>>(),
                    ..Default::default()
                })
                .await
                .map_err(|s| status_error("NodePublishVolume", s))?;
            "publish"
        }
        Verb::Unpublish { volume_id, target } => {
            client
                .node
                .node_unpublish_volume(NodeUnpublishVolumeRequest {
                    volume_id,
                    target_path: target,
                })
                .await
                .map_err(|s| status_error("NodeUnpublishVolume", s))?;
            "unpublish"
        }
        Verb::Stats { volume_id, path } => {
            let stats = client
                .node
                .node_get_volume_stats(NodeGetVolumeStatsRequest {
                    volume_id,
                    volume_path: path,
                    staging_target_path: String::new(),
                })
                .await
                .map_err(|s| status_error("NodeGetVolumeStats", s))?
                .into_inner();
            let usage: Vec<_> = stats
                .usage
                .iter()
                .map(|u| (enum_name(u.unit, volume_usage::Unit::as_str_name), u))
                .collect();
            let value: Vec<_> = usage
                .iter()
                .map(|(unit, u)| {
                    json!({"unit": unit, "total": u.total, "used": u.used, "available": u.available})
                })
                .collect();
            let lines = usage.iter().map(|(unit, u)| {
                format!(
                    "{unit}: total={} used={} available={}",
                    u.total, u.used, u.available
                )
            });
            out.put("usage", value, lines);
            let condition = stats.volume_condition;
            let value = condition
                .as_ref()
                .map(|c| json!({"abnormal": c.abnormal, "message": c.message}));
            let lines = condition
                .iter()
                .map(|c| format!("abnormal={} message={}", c.abnormal, c.message));
            out.put("condition", value, lines);
            "stats"
        }
    };
    out.finish(verb, started);
    Ok(())
}
