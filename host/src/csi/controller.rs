//! Controller: volume lifecycle, delegated to the backend with the host's validation around it.

use std::collections::HashMap;

use tonic::{Request, Response, Status};

use super::convert::{self, bytes_to_csi};
use super::{CsiError, SharedDriver, deadline};
use crate::proto::controller_server::Controller;
use crate::proto::controller_service_capability::{Rpc, Type, rpc};
use crate::proto::*;
use crate::runtime::types;
use crate::volume::attachment::{self, RESERVED_PREFIX};
use crate::volume::validate;

pub struct ControllerService(pub SharedDriver);

impl ControllerService {
    fn backend_error(subject: String) -> impl FnOnce(crate::runtime::CallError) -> CsiError {
        move |source| CsiError::Backend { subject, source }
    }

    /// Refuses an RPC whose capability the backend did not declare.
    fn require(
        &self,
        capability: types::ControllerCapabilities,
        rpc: &str,
    ) -> Result<(), CsiError> {
        if self.0.backend.info().capabilities.contains(capability) {
            Ok(())
        } else {
            Err(CsiError::Unimplemented(format!(
                "{rpc} is not offered by backend {}",
                self.0.backend.name()
            )))
        }
    }

    /// The context the CO gets back: the backend's keys plus the attachment under the host's
    /// reserved prefix, which a backend may not use itself.
    fn host_context(
        &self,
        subject: &str,
        context: types::KeyValues,
        attachment: Option<&types::Attachment>,
    ) -> Result<HashMap<String, String>, CsiError> {
        if let Some((key, _)) = context.iter().find(|(k, _)| k.starts_with(RESERVED_PREFIX)) {
            return Err(CsiError::Internal(format!(
                "{subject}: backend {} set the reserved context key {key}",
                self.0.backend.name()
            )));
        }
        let mut map: HashMap<String, String> = context.into_iter().collect();
        if let Some(a) = attachment {
            attachment::encode(a, &mut map);
        }
        Ok(map)
    }
}

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn create_volume(
        &self,
        request: Request<CreateVolumeRequest>,
    ) -> Result<Response<CreateVolumeResponse>, Status> {
        let timeout = deadline::of(&request);
        let r = request.into_inner();
        let driver = &self.0;
        let name = validate::volume_name(&r.name).map_err(CsiError::from)?;
        let capabilities = convert::capabilities(&r.volume_capabilities, driver.backend.info())?;
        let create = types::CreateRequest {
            name: name.to_owned(),
            capacity: convert::capacity_range(r.capacity_range.as_ref())?,
            capabilities,
            parameters: convert::key_values(&r.parameters),
            secrets: convert::key_values(&r.secrets),
            source: convert::content_source(
                r.volume_content_source.as_ref(),
                driver.backend.info(),
            )?,
            accessibility: convert::topology_requirement(r.accessibility_requirements.as_ref()),
        };
        let subject = format!("create volume {name:?}");
        let _guard = self.0.lock_key(&format!("name/{name}"), &subject)?;

        let volume = driver
            .backend
            .create_volume(create, timeout)
            .await
            .map_err(Self::backend_error(subject.clone()))?;
        validate::volume_id(&volume.id).map_err(|e| {
            CsiError::Internal(format!(
                "{subject}: backend {} returned an unusable id: {e}",
                driver.backend.name()
            ))
        })?;
        let volume_context =
            self.host_context(&subject, volume.context, volume.attachment.as_ref())?;
        tracing::info!(volume = %volume.id, name, "volume created");
        Ok(Response::new(CreateVolumeResponse {
            volume: Some(Volume {
                capacity_bytes: bytes_to_csi(volume.capacity_bytes),
                volume_id: volume.id,
                volume_context,
                content_source: r.volume_content_source,
                accessible_topology: convert::topology_to_csi(&volume.topology),
            }),
        }))
    }

    async fn delete_volume(
        &self,
        request: Request<DeleteVolumeRequest>,
    ) -> Result<Response<DeleteVolumeResponse>, Status> {
        let timeout = deadline::of(&request);
        let r = request.into_inner();
        let driver = &self.0;
        let id = validate::volume_id(&r.volume_id).map_err(CsiError::from)?;
        let _guard = driver.lock(id)?;
        // This node's directory of the volume goes with it: refused while still published, and
        // removed only once the backend has agreed to the deletion.
        let node_err = |source| CsiError::Node {
            volume: id.to_owned(),
            source,
        };
        driver.local_dirs.check_unused(id).map_err(node_err)?;
        driver
            .backend
            .delete_volume(id.to_owned(), convert::key_values(&r.secrets), timeout)
            .await
            .map_err(Self::backend_error(format!("volume {id}")))?;
        let removed = driver.local_dirs.remove(id).map_err(node_err)?;
        tracing::info!(volume = id, local_dir_removed = removed, "volume deleted");
        Ok(Response::new(DeleteVolumeResponse {}))
    }

    async fn validate_volume_capabilities(
        &self,
        request: Request<ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<ValidateVolumeCapabilitiesResponse>, Status> {
        let timeout = deadline::of(&request);
        let r = request.into_inner();
        let driver = &self.0;
        let id = validate::volume_id(&r.volume_id).map_err(CsiError::from)?;
        if r.volume_capabilities.is_empty() {
            return Err(CsiError::InvalidArgument(format!(
                "volume {id}: volume capabilities are required"
            ))
            .into());
        }
        let capabilities = r
            .volume_capabilities
            .iter()
            .map(convert::capability)
            .collect::<Result<Vec<_>, _>>()?;
        // What the backend does not offer at all is answered without asking it.
        if let Some(Err(CsiError::InvalidArgument(message))) = capabilities
            .iter()
            .map(|c| convert::supported(c, driver.backend.info()))
            .find(Result::is_err)
        {
            return Ok(Response::new(ValidateVolumeCapabilitiesResponse {
                confirmed: None,
                message,
            }));
        }
        let validation = driver
            .backend
            .validate_capabilities(
                id.to_owned(),
                capabilities,
                convert::key_values(&r.volume_context),
                convert::key_values(&r.parameters),
                timeout,
            )
            .await
            .map_err(Self::backend_error(format!("volume {id}")))?;
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
        use types::ControllerCapabilities as C;
        let declared = self.0.backend.info().capabilities;
        let mut rpcs = vec![rpc::Type::CreateDeleteVolume];
        for (flag, rpc) in [
            (C::PUBLISH_UNPUBLISH, rpc::Type::PublishUnpublishVolume),
            (C::PUBLISH_UNPUBLISH, rpc::Type::PublishReadonly),
            (C::EXPAND, rpc::Type::ExpandVolume),
            (C::GET_CAPACITY, rpc::Type::GetCapacity),
            (C::LIST_VOLUMES, rpc::Type::ListVolumes),
            (C::SNAPSHOTS, rpc::Type::CreateDeleteSnapshot),
            (C::SNAPSHOTS, rpc::Type::ListSnapshots),
            (C::CLONE, rpc::Type::CloneVolume),
        ] {
            if declared.contains(flag) {
                rpcs.push(rpc);
            }
        }
        if self.0.offers_single_node_multi_writer() {
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
        self.require(
            types::ControllerCapabilities::PUBLISH_UNPUBLISH,
            "ControllerPublishVolume",
        )?;
        let timeout = deadline::of(&request);
        let r = request.into_inner();
        let id = validate::volume_id(&r.volume_id).map_err(CsiError::from)?;
        let node = validate::token("node id", &r.node_id).map_err(CsiError::from)?;
        let capability = r.volume_capability.as_ref().ok_or_else(|| {
            CsiError::InvalidArgument(format!("volume {id}: volume capability is required"))
        })?;
        let capability = convert::capability(capability)?;
        convert::supported(&capability, self.0.backend.info())?;
        let subject = format!("volume {id} on node {node}");
        let _guard = self.0.lock(id)?;
        let published = self
            .0
            .backend
            .controller_publish(
                types::PublishRequest {
                    volume_id: id.to_owned(),
                    node_id: node.to_owned(),
                    capability,
                    readonly: r.readonly,
                    context: convert::key_values(&r.volume_context),
                    secrets: convert::key_values(&r.secrets),
                },
                timeout,
            )
            .await
            .map_err(Self::backend_error(subject.clone()))?;
        let publish_context =
            self.host_context(&subject, published.context, published.attachment.as_ref())?;
        tracing::info!(volume = id, node, "volume published to node");
        Ok(Response::new(ControllerPublishVolumeResponse {
            publish_context,
        }))
    }

    async fn controller_unpublish_volume(
        &self,
        request: Request<ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<ControllerUnpublishVolumeResponse>, Status> {
        self.require(
            types::ControllerCapabilities::PUBLISH_UNPUBLISH,
            "ControllerUnpublishVolume",
        )?;
        let timeout = deadline::of(&request);
        let r = request.into_inner();
        let id = validate::volume_id(&r.volume_id).map_err(CsiError::from)?;
        if !r.node_id.is_empty() {
            validate::token("node id", &r.node_id).map_err(CsiError::from)?;
        }
        let _guard = self.0.lock(id)?;
        self.0
            .backend
            .controller_unpublish(
                id.to_owned(),
                r.node_id.clone(),
                convert::key_values(&r.secrets),
                timeout,
            )
            .await
            .map_err(Self::backend_error(format!("volume {id}")))?;
        tracing::info!(volume = id, node = %r.node_id, "volume unpublished from node");
        Ok(Response::new(ControllerUnpublishVolumeResponse {}))
    }

    async fn controller_expand_volume(
        &self,
        request: Request<ControllerExpandVolumeRequest>,
    ) -> Result<Response<ControllerExpandVolumeResponse>, Status> {
        self.require(
            types::ControllerCapabilities::EXPAND,
            "ControllerExpandVolume",
        )?;
        let timeout = deadline::of(&request);
        let r = request.into_inner();
        let id = validate::volume_id(&r.volume_id).map_err(CsiError::from)?;
        let range = r.capacity_range.as_ref().ok_or_else(|| {
            CsiError::InvalidArgument(format!("volume {id}: capacity range is required"))
        })?;
        let capacity = convert::capacity_range(Some(range))?;
        let _guard = self.0.lock(id)?;
        let expanded = self
            .0
            .backend
            .expand_volume(
                id.to_owned(),
                capacity,
                convert::key_values(&r.secrets),
                timeout,
            )
            .await
            .map_err(Self::backend_error(format!("volume {id}")))?;
        tracing::info!(
            volume = id,
            capacity = expanded.capacity_bytes,
            "volume expanded"
        );
        Ok(Response::new(ControllerExpandVolumeResponse {
            capacity_bytes: bytes_to_csi(expanded.capacity_bytes),
            node_expansion_required: expanded.node_expansion_required,
        }))
    }

    async fn get_capacity(
        &self,
        request: Request<GetCapacityRequest>,
    ) -> Result<Response<GetCapacityResponse>, Status> {
        self.require(types::ControllerCapabilities::GET_CAPACITY, "GetCapacity")?;
        let timeout = deadline::of(&request);
        let r = request.into_inner();
        let available = self
            .0
            .backend
            .get_capacity(convert::key_values(&r.parameters), timeout)
            .await
            .map_err(Self::backend_error("capacity".to_owned()))?;
        Ok(Response::new(GetCapacityResponse {
            available_capacity: bytes_to_csi(available),
            maximum_volume_size: None,
            minimum_volume_size: None,
        }))
    }

    async fn list_volumes(
        &self,
        request: Request<ListVolumesRequest>,
    ) -> Result<Response<ListVolumesResponse>, Status> {
        self.require(types::ControllerCapabilities::LIST_VOLUMES, "ListVolumes")?;
        let timeout = deadline::of(&request);
        let r = request.into_inner();
        let max_entries = max_entries(r.max_entries)?;
        let page = self
            .0
            .backend
            .list_volumes(max_entries, r.starting_token, timeout)
            .await
            .map_err(Self::backend_error("list volumes".to_owned()))?;
        let mut entries = Vec::with_capacity(page.volumes.len());
        for volume in page.volumes {
            let subject = format!("list volumes: volume {}", volume.id);
            validate::volume_id(&volume.id)
                .map_err(|e| CsiError::Internal(format!("{subject}: unusable id: {e}")))?;
            entries.push(list_volumes_response::Entry {
                volume: Some(Volume {
                    capacity_bytes: bytes_to_csi(volume.capacity_bytes),
                    volume_context: self.host_context(
                        &subject,
                        volume.context,
                        volume.attachment.as_ref(),
                    )?,
                    accessible_topology: convert::topology_to_csi(&volume.topology),
                    volume_id: volume.id,
                    content_source: None,
                }),
                status: None,
            });
        }
        Ok(Response::new(ListVolumesResponse {
            entries,
            next_token: page.next_token,
        }))
    }

    async fn create_snapshot(
        &self,
        request: Request<CreateSnapshotRequest>,
    ) -> Result<Response<CreateSnapshotResponse>, Status> {
        self.require(types::ControllerCapabilities::SNAPSHOTS, "CreateSnapshot")?;
        let timeout = deadline::of(&request);
        let r = request.into_inner();
        let name = validate::volume_name(&r.name).map_err(CsiError::from)?;
        let source =
            validate::token("source volume id", &r.source_volume_id).map_err(CsiError::from)?;
        let subject = format!("snapshot {name:?} of volume {source}");
        let _guard = self.0.lock_key(&format!("snapshot/{name}"), &subject)?;
        let snapshot = self
            .0
            .backend
            .create_snapshot(
                source.to_owned(),
                name.to_owned(),
                convert::key_values(&r.parameters),
                convert::key_values(&r.secrets),
                timeout,
            )
            .await
            .map_err(Self::backend_error(subject.clone()))?;
        validate::token("snapshot id", &snapshot.id).map_err(|e| {
            CsiError::Internal(format!("{subject}: backend returned an unusable id: {e}"))
        })?;
        tracing::info!(snapshot = %snapshot.id, volume = source, "snapshot created");
        Ok(Response::new(CreateSnapshotResponse {
            snapshot: Some(snapshot_to_csi(snapshot)),
        }))
    }

    async fn delete_snapshot(
        &self,
        request: Request<DeleteSnapshotRequest>,
    ) -> Result<Response<DeleteSnapshotResponse>, Status> {
        self.require(types::ControllerCapabilities::SNAPSHOTS, "DeleteSnapshot")?;
        let timeout = deadline::of(&request);
        let r = request.into_inner();
        let id = validate::token("snapshot id", &r.snapshot_id).map_err(CsiError::from)?;
        let subject = format!("snapshot {id}");
        let _guard = self.0.lock_key(&format!("snapshot-id/{id}"), &subject)?;
        self.0
            .backend
            .delete_snapshot(id.to_owned(), convert::key_values(&r.secrets), timeout)
            .await
            .map_err(Self::backend_error(subject))?;
        tracing::info!(snapshot = id, "snapshot deleted");
        Ok(Response::new(DeleteSnapshotResponse {}))
    }

    async fn list_snapshots(
        &self,
        request: Request<ListSnapshotsRequest>,
    ) -> Result<Response<ListSnapshotsResponse>, Status> {
        self.require(types::ControllerCapabilities::SNAPSHOTS, "ListSnapshots")?;
        let timeout = deadline::of(&request);
        let r = request.into_inner();
        let max_entries = max_entries(r.max_entries)?;
        // Filters are compared, never used as paths, but must still be sane identifiers.
        for (what, value) in [
            ("source volume id", &r.source_volume_id),
            ("snapshot id", &r.snapshot_id),
        ] {
            if !value.is_empty() {
                validate::token(what, value).map_err(CsiError::from)?;
            }
        }
        let page = self
            .0
            .backend
            .list_snapshots(
                max_entries,
                r.starting_token,
                r.source_volume_id,
                r.snapshot_id,
                timeout,
            )
            .await
            .map_err(Self::backend_error("list snapshots".to_owned()))?;
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
}

fn max_entries(requested: i32) -> Result<u32, CsiError> {
    u32::try_from(requested)
        .map_err(|_| CsiError::InvalidArgument(format!("max_entries {requested} is negative")))
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
