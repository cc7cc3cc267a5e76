//! The Node service: each RPC decodes its request, calls the lifecycle layer's node side and
//! encodes the answer.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert::{self, bytes_to_csi};
use super::{Error, deadline, offers_single_node_multi_writer};
use crate::lifecycle::{Node, rules};
use crate::proto::node_server::Node as NodeRpc;
use crate::proto::node_service_capability::{Rpc, Type, rpc};
use crate::proto::*;
use crate::runtime::Optional;
use crate::volume::validate;

pub struct NodeService(pub Arc<Node>);

fn volume_id(id: &str) -> Result<&str, Error> {
    let id = validate::volume_id(id)?;
    super::note_volume(id);
    Ok(id)
}

fn path<'a>(what: &'static str, path: &'a str) -> Result<&'a std::path::Path, Error> {
    Ok(validate::target_path(what, path)?)
}

/// The capability a request must carry.
fn capability(
    id: &str,
    capability: Option<&VolumeCapability>,
) -> Result<crate::volume::types::Capability, Error> {
    let capability = capability.ok_or_else(|| {
        Error::InvalidArgument(format!("volume {id}: volume capability is required"))
    })?;
    convert::capability(capability)
}

#[tonic::async_trait]
impl NodeRpc for NodeService {
    async fn node_publish_volume(
        &self,
        request: Request<NodePublishVolumeRequest>,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        let r = request.into_inner();
        let id = volume_id(&r.volume_id)?;
        let target = path("target path", &r.target_path)?;
        let capability = capability(id, r.volume_capability.as_ref())?;
        rules::map_from_co("volume context", &r.volume_context)?;
        rules::map_from_co("publish context", &r.publish_context)?;
        self.0
            .publish(
                id,
                target,
                &r.staging_target_path,
                &capability,
                r.readonly,
                &r.publish_context,
                &r.volume_context,
            )
            .await?;
        Ok(Response::new(NodePublishVolumeResponse {}))
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<NodeUnpublishVolumeRequest>,
    ) -> Result<Response<NodeUnpublishVolumeResponse>, Status> {
        let r = request.into_inner();
        let id = volume_id(&r.volume_id)?;
        let target = path("target path", &r.target_path)?;
        self.0.unpublish(id, target).await?;
        Ok(Response::new(NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_volume_stats(
        &self,
        request: Request<NodeGetVolumeStatsRequest>,
    ) -> Result<Response<NodeGetVolumeStatsResponse>, Status> {
        let timeout = deadline::of(&request);
        let r = request.into_inner();
        let id = volume_id(&r.volume_id)?;
        let stats = self.0.stats(id, &r.volume_path, timeout).await?;
        let volume_condition = Some(match stats.trouble {
            None => VolumeCondition {
                abnormal: false,
                message: "volume is published".into(),
            },
            Some(reason) => VolumeCondition {
                abnormal: true,
                message: reason,
            },
        });
        let entry = |unit: volume_usage::Unit, total: u64, available: u64, used: u64| VolumeUsage {
            total: bytes_to_csi(total),
            available: bytes_to_csi(available),
            used: bytes_to_csi(used),
            unit: unit as i32,
        };
        let mut usage = vec![];
        if let Some(u) = stats.usage {
            usage.push(entry(
                volume_usage::Unit::Bytes,
                u.total_bytes,
                u.available_bytes,
                u.used_bytes,
            ));
            if !stats.block {
                usage.push(entry(
                    volume_usage::Unit::Inodes,
                    u.total_inodes,
                    u.free_inodes,
                    u.used_inodes,
                ));
            }
        }
        Ok(Response::new(NodeGetVolumeStatsResponse {
            usage,
            volume_condition,
        }))
    }

    async fn node_stage_volume(
        &self,
        request: Request<NodeStageVolumeRequest>,
    ) -> Result<Response<NodeStageVolumeResponse>, Status> {
        let r = request.into_inner();
        let id = volume_id(&r.volume_id)?;
        let staging = path("staging target path", &r.staging_target_path)?;
        let capability = capability(id, r.volume_capability.as_ref())?;
        rules::map_from_co("secrets", &r.secrets)?;
        rules::map_from_co("volume context", &r.volume_context)?;
        rules::map_from_co("publish context", &r.publish_context)?;
        self.0
            .stage(
                id,
                staging,
                capability,
                &r.publish_context,
                &r.volume_context,
            )
            .await?;
        Ok(Response::new(NodeStageVolumeResponse {}))
    }

    async fn node_unstage_volume(
        &self,
        request: Request<NodeUnstageVolumeRequest>,
    ) -> Result<Response<NodeUnstageVolumeResponse>, Status> {
        let r = request.into_inner();
        let id = volume_id(&r.volume_id)?;
        let staging = path("staging target path", &r.staging_target_path)?;
        self.0.unstage(id, staging).await?;
        Ok(Response::new(NodeUnstageVolumeResponse {}))
    }

    async fn node_expand_volume(
        &self,
        request: Request<NodeExpandVolumeRequest>,
    ) -> Result<Response<NodeExpandVolumeResponse>, Status> {
        let r = request.into_inner();
        let id = volume_id(&r.volume_id)?;
        let staging = if r.staging_target_path.is_empty() {
            None
        } else {
            Some(path("staging target path", &r.staging_target_path)?)
        };
        rules::map_from_co("secrets", &r.secrets)?;
        let block = r
            .volume_capability
            .as_ref()
            .map(convert::capability)
            .transpose()?
            .is_some_and(|c| c.is_block());
        let required = convert::capacity_range(r.capacity_range.as_ref())?.required_bytes;
        let bytes = self
            .0
            .expand(id, &r.volume_path, staging, block, required)
            .await?;
        Ok(Response::new(NodeExpandVolumeResponse {
            capacity_bytes: bytes_to_csi(bytes),
        }))
    }

    async fn node_get_capabilities(
        &self,
        _request: Request<NodeGetCapabilitiesRequest>,
    ) -> Result<Response<NodeGetCapabilitiesResponse>, Status> {
        let backend = self.0.backend();
        let mut rpcs = vec![rpc::Type::GetVolumeStats, rpc::Type::VolumeCondition];
        // Backends that attach storage to nodes (they export `publish`) hand out devices, which
        // are staged; node-local directories need no staging.
        if backend.offers(Optional::Publish) {
            rpcs.push(rpc::Type::StageUnstageVolume);
            rpcs.push(rpc::Type::ExpandVolume);
            rpcs.push(rpc::Type::VolumeMountGroup);
        }
        if offers_single_node_multi_writer(backend) {
            rpcs.push(rpc::Type::SingleNodeMultiWriter);
        }
        let capabilities = rpcs
            .into_iter()
            .map(|t| NodeServiceCapability {
                r#type: Some(Type::Rpc(Rpc { r#type: t as i32 })),
            })
            .collect();
        Ok(Response::new(NodeGetCapabilitiesResponse { capabilities }))
    }

    async fn node_get_info(
        &self,
        request: Request<NodeGetInfoRequest>,
    ) -> Result<Response<NodeGetInfoResponse>, Status> {
        let info = self.0.info(deadline::of(&request)).await?;
        Ok(Response::new(NodeGetInfoResponse {
            node_id: info.node_id,
            max_volumes_per_node: i64::from(info.max_volumes),
            accessible_topology: info
                .topology
                .and_then(|t| convert::topology_to_csi(&[t]).pop()),
        }))
    }
}
