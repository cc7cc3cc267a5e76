//! The Controller service: each RPC decodes its request, calls the lifecycle layer's
//! controller and encodes the answer.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert::{self, bytes_to_csi};
use super::{Error, deadline, offers_single_node_multi_writer};
use crate::lifecycle::{Controller, rules};
use crate::proto::controller_server::Controller as ControllerRpc;
use crate::proto::controller_service_capability::{Rpc, Type, rpc};
use crate::proto::*;
use crate::runtime::Optional;
use crate::volume::records::VolumeRecord;
use crate::volume::{mkfs, types, validate};

pub struct ControllerService(pub Arc<Controller>);

fn record_to_csi(record: VolumeRecord, source: Option<VolumeContentSource>) -> Volume {
    Volume {
        capacity_bytes: bytes_to_csi(record.capacity_bytes),
        volume_id: record.id,
        volume_context: record.context.into_iter().collect(),
        content_source: source,
        accessible_topology: record
            .topology
            .into_iter()
            .map(|segments| Topology {
                segments: segments.into_iter().collect(),
            })
            .collect(),
    }
}

fn volume_id(id: &str) -> Result<&str, Error> {
    let id = validate::volume_id(id)?;
    super::note_volume(id);
    Ok(id)
}

#[tonic::async_trait]
impl ControllerRpc for ControllerService {
    async fn create_volume(
        &self,
        request: Request<CreateVolumeRequest>,
    ) -> Result<Response<CreateVolumeResponse>, Status> {
        let timeout = deadline::of(&request);
        let r = request.into_inner();
        let backend = self.0.backend();
        let name = validate::volume_name(&r.name).map_err(Error::from)?;
        super::note_volume(name);
        rules::map_from_co("parameters", &r.parameters)?;
        rules::map_from_co("secrets", &r.secrets)?;
        let create = types::CreateRequest {
            name: name.to_owned(),
            capabilities: convert::capabilities(&r.volume_capabilities, backend.info())?,
            capacity: convert::capacity_range(r.capacity_range.as_ref())?,
            parameters: convert::key_values(&r.parameters),
            secrets: convert::key_values(&r.secrets),
            source: convert::content_source(r.volume_content_source.as_ref(), backend)?,
            accessibility: convert::topology_requirement(r.accessibility_requirements.as_ref()),
        };
        let record = self
            .0
            .create_volume(
                create,
                r.parameters.get(mkfs::KEY).map(String::as_str),
                timeout,
            )
            .await?;
        Ok(Response::new(CreateVolumeResponse {
            volume: Some(record_to_csi(record, r.volume_content_source)),
        }))
    }

    async fn delete_volume(
        &self,
        request: Request<DeleteVolumeRequest>,
    ) -> Result<Response<DeleteVolumeResponse>, Status> {
        let timeout = deadline::of(&request);
        let r = request.into_inner();
        let id = volume_id(&r.volume_id)?;
        rules::map_from_co("secrets", &r.secrets)?;
        self.0
            .delete_volume(id, convert::key_values(&r.secrets), timeout)
            .await?;
        Ok(Response::new(DeleteVolumeResponse {}))
    }

    async fn validate_volume_capabilities(
        &self,
        request: Request<ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<ValidateVolumeCapabilitiesResponse>, Status> {
        let timeout = deadline::of(&request);
        let r = request.into_inner();
        let id = volume_id(&r.volume_id)?;
        rules::map_from_co("volume context", &r.volume_context)?;
        rules::map_from_co("parameters", &r.parameters)?;
        rules::map_from_co("secrets", &r.secrets)?;
        if r.volume_capabilities.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "volume {id}: volume capabilities are required"
            ))
            .into());
        }
        let capabilities = r
            .volume_capabilities
            .iter()
            .map(convert::capability)
            .collect::<Result<Vec<_>, _>>()?;
        let validation = self
            .0
            .validate_capabilities(
                id,
                capabilities,
                convert::key_values(&r.volume_context),
                convert::key_values(&r.parameters),
                convert::key_values(&r.secrets),
                timeout,
            )
            .await?;
        let confirmed =
            validation
                .confirmed
                .then_some(validate_volume_capabilities_response::Confirmed {
                    volume_context: r.volume_context,
                    volume_capabilities: r.volume_capabilities,
                    parameters: r.parameters,
                    mutable_parameters: r.mutable_parameters,
                });
        Ok(Response::new(ValidateVolumeCapabilitiesResponse {
            confirmed,
            message: validation.message,
        }))
    }

    async fn controller_get_capabilities(
        &self,
        _request: Request<ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<ControllerGetCapabilitiesResponse>, Status> {
        let backend = self.0.backend();
        let mut rpcs = vec![rpc::Type::CreateDeleteVolume];
        for (interface, rpc) in [
            (Optional::Publish, rpc::Type::PublishUnpublishVolume),
            // The node host honours readonly for every attachment it publishes.
            (Optional::Publish, rpc::Type::PublishReadonly),
            (Optional::Expand, rpc::Type::ExpandVolume),
            (Optional::Capacity, rpc::Type::GetCapacity),
            (Optional::ListVolumes, rpc::Type::ListVolumes),
            (Optional::Snapshots, rpc::Type::CreateDeleteSnapshot),
            (Optional::Snapshots, rpc::Type::ListSnapshots),
            (Optional::GetVolume, rpc::Type::GetVolume),
            (Optional::GetVolume, rpc::Type::VolumeCondition),
        ] {
            if backend.offers(interface) {
                rpcs.push(rpc);
            }
        }
        if backend.info().content_sources.volume {
            rpcs.push(rpc::Type::CloneVolume);
        }
        if offers_single_node_multi_writer(backend) {
            rpcs.push(rpc::Type::SingleNodeMultiWriter);
        }
        let capabilities = rpcs
            .into_iter()
            .map(|t| ControllerServiceCapability {
                r#type: Some(Type::Rpc(Rpc { r#type: t as i32 })),
            })
            .collect();
        Ok(Response::new(ControllerGetCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn controller_publish_volume(
        &self,
        request: Request<ControllerPublishVolumeRequest>,
    ) -> Result<Response<ControllerPublishVolumeResponse>, Status> {
        self.0
            .require(Optional::Publish, "ControllerPublishVolume")?;
        let timeout = deadline::of(&request);
        let r = request.into_inner();
        let id = volume_id(&r.volume_id)?;
        let node = validate::node_id(&r.node_id).map_err(Error::from)?;
        super::note_node(node);
        rules::map_from_co("volume context", &r.volume_context)?;
        rules::map_from_co("secrets", &r.secrets)?;
        let capability = r.volume_capability.as_ref().ok_or_else(|| {
            Error::InvalidArgument(format!("volume {id}: volume capability is required"))
        })?;
        let capability = convert::capability(capability)?;
        rules::supported(&capability, self.0.backend().info())?;
        let publish_context = self
            .0
            .controller_publish(
                id,
                node,
                capability,
                r.readonly,
                convert::key_values(&r.volume_context),
                convert::key_values(&r.secrets),
                timeout,
            )
            .await?;
        Ok(Response::new(ControllerPublishVolumeResponse {
            publish_context,
        }))
    }

    async fn controller_unpublish_volume(
        &self,
        request: Request<ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<ControllerUnpublishVolumeResponse>, Status> {
        self.0
            .require(Optional::Publish, "ControllerUnpublishVolume")?;
        let timeout = deadline::of(&request);
        let r = request.into_inner();
        let id = volume_id(&r.volume_id)?;
        // An empty node id detaches the volume from every node.
        let node = if r.node_id.is_empty() {
            None
        } else {
            Some(validate::node_id(&r.node_id).map_err(Error::from)?)
        };
        rules::map_from_co("secrets", &r.secrets)?;
        self.0
            .controller_unpublish(id, node, convert::key_values(&r.secrets), timeout)
            .await?;
        Ok(Response::new(ControllerUnpublishVolumeResponse {}))
    }

    async fn controller_expand_volume(
        &self,
        request: Request<ControllerExpandVolumeRequest>,
    ) -> Result<Response<ControllerExpandVolumeResponse>, Status> {
        self.0.require(Optional::Expand, "ControllerExpandVolume")?;
        let timeout = deadline::of(&request);
        let r = request.into_inner();
        let id = volume_id(&r.volume_id)?;
        rules::map_from_co("secrets", &r.secrets)?;
        let range = r.capacity_range.as_ref().ok_or_else(|| {
            Error::InvalidArgument(format!("volume {id}: capacity range is required"))
        })?;
        let capacity = convert::capacity_range(Some(range))?;
        let capability = r
            .volume_capability
            .as_ref()
            .map(convert::capability)
            .transpose()?;
        let expanded = self
            .0
            .expand_volume(
                id,
                capacity,
                capability,
                convert::key_values(&r.secrets),
                timeout,
            )
            .await?;
        Ok(Response::new(ControllerExpandVolumeResponse {
            capacity_bytes: bytes_to_csi(expanded.capacity_bytes),
            node_expansion_required: expanded.node_expansion_required,
        }))
    }

    async fn get_capacity(
        &self,
        request: Request<GetCapacityRequest>,
    ) -> Result<Response<GetCapacityResponse>, Status> {
        self.0.require(Optional::Capacity, "GetCapacity")?;
        let timeout = deadline::of(&request);
        let r = request.into_inner();
        rules::map_from_co("parameters", &r.parameters)?;
        let capabilities = r
            .volume_capabilities
            .iter()
            .map(convert::capability)
            .collect::<Result<Vec<_>, _>>()?;
        let topology = r
            .accessible_topology
            .as_ref()
            .map(|t| convert::key_values(&t.segments));
        let capacity = self
            .0
            .get_capacity(
                convert::key_values(&r.parameters),
                capabilities,
                topology,
                timeout,
            )
            .await?;
        Ok(Response::new(GetCapacityResponse {
            available_capacity: bytes_to_csi(capacity.available_bytes),
            maximum_volume_size: capacity.maximum_volume_bytes.map(bytes_to_csi),
            minimum_volume_size: capacity.minimum_volume_bytes.map(bytes_to_csi),
        }))
    }

    async fn list_volumes(
        &self,
        request: Request<ListVolumesRequest>,
    ) -> Result<Response<ListVolumesResponse>, Status> {
        self.0.require(Optional::ListVolumes, "ListVolumes")?;
        let timeout = deadline::of(&request);
        let r = request.into_inner();
        let max_entries = max_entries(r.max_entries)?;
        let (volumes, next_token) = self
            .0
            .list_volumes(max_entries, r.starting_token, timeout)
            .await?;
        let entries = volumes
            .into_iter()
            .map(|(volume, volume_context)| list_volumes_response::Entry {
                volume: Some(Volume {
                    capacity_bytes: bytes_to_csi(volume.capacity_bytes),
                    volume_context,
                    accessible_topology: convert::topology_to_csi(&volume.topology),
                    volume_id: volume.id,
                    content_source: None,
                }),
                status: None,
            })
            .collect();
        Ok(Response::new(ListVolumesResponse {
            entries,
            next_token,
        }))
    }

    async fn create_snapshot(
        &self,
        request: Request<CreateSnapshotRequest>,
    ) -> Result<Response<CreateSnapshotResponse>, Status> {
        self.0.require(Optional::Snapshots, "CreateSnapshot")?;
        let timeout = deadline::of(&request);
        let r = request.into_inner();
        let name = validate::volume_name(&r.name).map_err(Error::from)?;
        let source =
            validate::token("source volume id", &r.source_volume_id).map_err(Error::from)?;
        rules::map_from_co("parameters", &r.parameters)?;
        rules::map_from_co("secrets", &r.secrets)?;
        let snapshot = self
            .0
            .create_snapshot(
                source,
                name,
                convert::key_values(&r.parameters),
                convert::key_values(&r.secrets),
                timeout,
            )
            .await?;
        Ok(Response::new(CreateSnapshotResponse {
            snapshot: Some(snapshot_to_csi(snapshot)),
        }))
    }

    async fn delete_snapshot(
        &self,
        request: Request<DeleteSnapshotRequest>,
    ) -> Result<Response<DeleteSnapshotResponse>, Status> {
        self.0.require(Optional::Snapshots, "DeleteSnapshot")?;
        let timeout = deadline::of(&request);
        let r = request.into_inner();
        let id = validate::token("snapshot id", &r.snapshot_id).map_err(Error::from)?;
        rules::map_from_co("secrets", &r.secrets)?;
        self.0
            .delete_snapshot(id, convert::key_values(&r.secrets), timeout)
            .await?;
        Ok(Response::new(DeleteSnapshotResponse {}))
    }

    async fn list_snapshots(
        &self,
        request: Request<ListSnapshotsRequest>,
    ) -> Result<Response<ListSnapshotsResponse>, Status> {
        self.0.require(Optional::Snapshots, "ListSnapshots")?;
        let timeout = deadline::of(&request);
        let r = request.into_inner();
        let max_entries = max_entries(r.max_entries)?;
        rules::map_from_co("secrets", &r.secrets)?;
        // Filters are compared, never used as paths, but must still be sane identifiers.
        for (what, value) in [
            ("source volume id", &r.source_volume_id),
            ("snapshot id", &r.snapshot_id),
        ] {
            if !value.is_empty() {
                validate::token(what, value).map_err(Error::from)?;
            }
        }
        let page = self
            .0
            .list_snapshots(
                max_entries,
                r.starting_token,
                types::SnapshotFilter {
                    source_volume_id: r.source_volume_id,
                    snapshot_id: r.snapshot_id,
                },
                convert::key_values(&r.secrets),
                timeout,
            )
            .await?;
        let entries = page
            .snapshots
            .into_iter()
            .map(|s| list_snapshots_response::Entry {
                snapshot: Some(snapshot_to_csi(s)),
            })
            .collect();
        Ok(Response::new(ListSnapshotsResponse {
            entries,
            next_token: page.next_token,
        }))
    }

    async fn controller_get_volume(
        &self,
        request: Request<ControllerGetVolumeRequest>,
    ) -> Result<Response<ControllerGetVolumeResponse>, Status> {
        self.0.require(Optional::GetVolume, "ControllerGetVolume")?;
        let timeout = deadline::of(&request);
        let r = request.into_inner();
        let id = volume_id(&r.volume_id)?;
        let status = self.0.get_volume(id, timeout).await?;
        Ok(Response::new(ControllerGetVolumeResponse {
            volume: Some(Volume {
                capacity_bytes: bytes_to_csi(status.capacity_bytes),
                volume_id: id.to_owned(),
                ..Default::default()
            }),
            status: Some(controller_get_volume_response::VolumeStatus {
                published_node_ids: status.published_nodes,
                volume_condition: status.condition.map(|c| VolumeCondition {
                    abnormal: c.abnormal,
                    message: c.message,
                }),
            }),
        }))
    }
}

fn max_entries(requested: i32) -> Result<u32, Error> {
    u32::try_from(requested)
        .map_err(|_| Error::InvalidArgument(format!("max_entries {requested} is negative")))
}

fn snapshot_to_csi(snapshot: types::Snapshot) -> Snapshot {
    Snapshot {
        size_bytes: bytes_to_csi(snapshot.size_bytes),
        snapshot_id: snapshot.id,
        source_volume_id: snapshot.source_volume_id,
        creation_time: Some(prost_types::Timestamp {
            seconds: snapshot.created_unix_seconds,
            nanos: 0,
        }),
        ready_to_use: snapshot.ready,
        group_snapshot_id: String::new(),
    }
}
