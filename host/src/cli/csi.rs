//! `modcsi csi <verb>`: drive any CSI endpoint by hand. Each verb prints what the driver
//! answered, one `key=value` a line, and how long the call took.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand};
use modcsi::client::CsiClient;
use modcsi::proto::volume_capability::{
    AccessMode, AccessType, BlockVolume, MountVolume, access_mode,
};
use modcsi::proto::*;

#[derive(Args)]
pub struct CsiArgs {
    /// The CSI endpoint to talk to.
    #[arg(long, env = "CSI_ENDPOINT", default_value = "unix:///csi/csi.sock")]
    endpoint: String,
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Subcommand)]
enum Verb {
    /// Plugin info, capabilities, readiness and node info.
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

fn status_error(verb: &str, status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{verb} failed: {:?}: {}", status.code(), status.message())
}

pub async fn run(args: CsiArgs) -> anyhow::Result<()> {
    let mut client = CsiClient::connect(&args.endpoint).await?;
    let started = Instant::now();
    let verb = match args.verb {
        Verb::Info => {
            let info = client
                .identity
                .get_plugin_info(GetPluginInfoRequest {})
                .await
                .map_err(|s| status_error("GetPluginInfo", s))?
                .into_inner();
            println!("name={}\nvendor_version={}", info.name, info.vendor_version);
            let mut manifest: Vec<_> = info.manifest.into_iter().collect();
            manifest.sort();
            for (k, v) in manifest {
                println!("manifest.{k}={v}");
            }
            let caps = client
                .identity
                .get_plugin_capabilities(GetPluginCapabilitiesRequest {})
                .await
                .map_err(|s| status_error("GetPluginCapabilities", s))?
                .into_inner();
            for cap in caps.capabilities {
                println!("plugin_capability={:?}", cap.r#type);
            }
            let probe = client
                .identity
                .probe(ProbeRequest {})
                .await
                .map_err(|s| status_error("Probe", s))?
                .into_inner();
            println!("ready={}", probe.ready.unwrap_or(false));
            if let Ok(node) = client.node.node_get_info(NodeGetInfoRequest {}).await {
                println!("node_id={}", node.into_inner().node_id);
            }
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
            println!(
                "volume_id={}\ncapacity_bytes={}",
                volume.volume_id, volume.capacity_bytes
            );
            let mut context: Vec<_> = volume.volume_context.into_iter().collect();
            context.sort();
            for (k, v) in context {
                println!("context={k}={v}");
            }
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
            for usage in stats.usage {
                let unit =
                    volume_usage::Unit::try_from(usage.unit).map_or("unknown", |u| u.as_str_name());
                println!(
                    "{unit}: total={} used={} available={}",
                    usage.total, usage.used, usage.available
                );
            }
            if let Some(condition) = stats.volume_condition {
                println!(
                    "abnormal={} message={}",
                    condition.abnormal, condition.message
                );
            }
            "stats"
        }
    };
    println!(
        "{verb} ok in {:.2} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}
