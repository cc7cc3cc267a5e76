//! Controller: volume lifecycle, delegated to the backend with the host's validation around it.

use std::collections::BTreeMap;
use std::time::Duration;

use tonic::{Request, Response, Status};

use super::convert::{self, bytes_to_csi};
use super::rules;
use super::{CsiError, SharedDriver, deadline};
use crate::proto::controller_server::Controller;
use crate::proto::controller_service_capability::{Rpc, Type, rpc};
use crate::proto::*;
use crate::runtime::{CallError, Optional};
use crate::volume::records::{RequestShape, VolumeRecord};
use crate::volume::types;
use crate::volume::{mkfs, validate};

pub struct ControllerService(pub SharedDriver);

/// Whether the backend answered "not found" (a finished deletion, for the CO).
fn is_not_found(error: &CallError) -> bool {
    matches!(
        error,
        CallError::Refused {
            error: types::BackendError::NotFound(_),
            ..
        }
    )
}

impl ControllerService {
    fn backend_error(subject: String) -> impl FnOnce(CallError) -> CsiError {
        move |source| CsiError::Backend { subject, source }
    }

    fn backend_name(&self) -> &str {
        self.0.backend.name()
    }

    /// Refuses an RPC whose interface the backend does not offer.
    fn require(&self, interface: Optional, rpc: &str) -> Result<(), CsiError> {
        if self.0.backend.offers(interface) {
            Ok(())
        } else {
            Err(CsiError::Unimplemented(format!(
                "{rpc} is not offered by backend {} (it does not export modcsi:backend/{})",
                self.0.backend.name(),
                interface.name()
            )))
        }
    }

    fn store_error(subject: &str) -> impl FnOnce(crate::state::StoreError) -> CsiError + '_ {
        move |e| CsiError::Unavailable(format!("{subject}: host state store: {e}"))
    }
}

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
        rules::map_from_co("parameters", &r.parameters)?;
        rules::map_from_co("secrets", &r.secrets)?;
        let capabilities = convert::capabilities(&r.volume_capabilities, driver.backend.info())?;
        // The host's own parameter: checked now for every filesystem asked for, used at stage.
        let mkfs_options = r.parameters.get(mkfs::KEY);
        if let Some(text) = mkfs_options {
            for capability in &capabilities {
                if let types::AccessType::Mount(m) = &capability.access_type {
                    mkfs::parse(&m.fs_type, text).map_err(|e| {
                        CsiError::InvalidArgument(format!("create volume {name:?}: {e}"))
                    })?;
                }
            }
        }
        let create = types::CreateRequest {
            name: name.to_owned(),
            capacity: convert::capacity_range(r.capacity_range.as_ref())?,
            capabilities,
            parameters: convert::key_values(&r.parameters),
            secrets: convert::key_values(&r.secrets),
            source: convert::content_source(r.volume_content_source.as_ref(), &driver.backend)?,
            accessibility: convert::topology_requirement(r.accessibility_requirements.as_ref()),
        };
        let subject = format!("create volume {name:?}");
        let _guard = self.0.lock_key(&format!("name/{name}"), &subject)?;

        // The record is a check; the backend (idempotent by contract) gives the answer.
        let shape = RequestShape::of(&create);
        if let Some(record) = driver
            .records
            .by_name(name)
            .map_err(Self::store_error(&subject))?
            && let Some(why) = record.mismatch(&shape)
        {
            return Err(CsiError::AlreadyExists(format!(
                "{subject}: volume {} already exists with this name, but {why}",
                record.id
            ))
            .into());
        }

        let range = create.capacity;
        let volume = driver
            .backend
            .create_volume(create, timeout)
            .await
            .map_err(Self::backend_error(subject.clone()))?;
        let backend = self.backend_name();
        rules::returned_id(backend, &subject, "volume id", &volume.id)?;
        rules::capacity_in_range(backend, &subject, volume.capacity_bytes, &range)?;
        let mut context = rules::volume_context(backend, &subject, &volume)?;
        if let Some(text) = mkfs_options {
            context.insert(mkfs::KEY.to_owned(), text.clone());
        }
        // The same id again while its previous volume's directories are still being removed
        // from nodes would have them removed under the new volume.
        if matches!(volume.attachment, Some(types::Attachment::LocalDir)) {
            driver
                .cleanup
                .check_not_deleting(&volume.id)
                .await
                .map_err(CsiError::from)?;
        }
        let record = VolumeRecord::new(
            name,
            shape,
            &volume,
            &context.into_iter().collect::<BTreeMap<_, _>>(),
        );
        driver
            .records
            .insert(record.clone())
            .map_err(Self::store_error(&subject))?;
        tracing::info!(volume = %volume.id, name, "volume created");
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
        let driver = &self.0;
        let id = validate::volume_id(&r.volume_id).map_err(CsiError::from)?;
        rules::map_from_co("secrets", &r.secrets)?;
        let _guard = driver.lock(id)?;
        // This node's directory of the volume goes with it: refused while still published, and
        // removed only once the backend has agreed to the deletion.
        let node_err = |source| CsiError::Node {
            volume: id.to_owned(),
            source,
        };
        let dirs = driver.local_dirs.clone();
        let volume = id.to_owned();
        driver
            .node_ops
            .run(move || dirs.check_unused(&volume))
            .await
            .map_err(node_err)?;
        match driver
            .backend
            .delete_volume(id.to_owned(), convert::key_values(&r.secrets), timeout)
            .await
        {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {
                tracing::debug!(volume = id, "backend no longer knows the volume: deleted")
            }
            Err(e) => return Err(Self::backend_error(format!("volume {id}"))(e).into()),
        }
        let (dirs, volume) = (driver.local_dirs.clone(), id.to_owned());
        let removed = driver
            .node_ops
            .run(move || dirs.remove(&volume))
            .await
            .map_err(node_err)?;
        // Every other node that held a directory of it removes its own; this one has (when it
        // serves as a node too).
        driver
            .cleanup
            .request(id, driver.mode.serves_node())
            .await
            .map_err(CsiError::from)?;
        let subject = format!("volume {id}");
        driver
            .records
            .remove(id)
            .map_err(Self::store_error(&subject))?;
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
        rules::map_from_co("volume context", &r.volume_context)?;
        rules::map_from_co("parameters", &r.parameters)?;
        rules::map_from_co("secrets", &r.secrets)?;
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
        // An unknown volume is NOT_FOUND before anything is confirmed: the host's record knows
        // the volumes it created; the backend's get-volume, when it has one, the others.
        if !driver.records.knows_id(id) && driver.backend.offers(Optional::GetVolume) {
            match driver.backend.get_volume(id.to_owned(), timeout).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {
                    return Err(CsiError::NotFound(format!(
                        "volume {id} does not exist in backend {}",
                        driver.backend.name()
                    ))
                    .into());
                }
                Err(e) => return Err(Self::backend_error(format!("volume {id}"))(e).into()),
            }
        }
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
                convert::key_values(&r.secrets),
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
        let backend = &self.0.backend;
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
        self.require(Optional::Publish, "ControllerPublishVolume")?;
        let timeout = deadline::of(&request);
        let r = request.into_inner();
        let id = validate::volume_id(&r.volume_id).map_err(CsiError::from)?;
        let node = validate::node_id(&r.node_id).map_err(CsiError::from)?;
        rules::map_from_co("volume context", &r.volume_context)?;
        rules::map_from_co("secrets", &r.secrets)?;
        let capability = r.volume_capability.as_ref().ok_or_else(|| {
            CsiError::InvalidArgument(format!("volume {id}: volume capability is required"))
        })?;
        let capability = convert::capability(capability)?;
        convert::supported(&capability, self.0.backend.info())?;
        let subject = format!("volume {id} on node {node}");
        let node_attributes = self
            .0
            .node_attributes(node)
            .map_err(Self::store_error(&subject))?;
        // Fencing: one decision at a time per volume, recorded before the backend publishes.
        let fencing = &self.0.fencing;
        let turn = fencing.turn(id).await;
        let admitted = fencing
            .admit(
                &turn,
                &crate::fencing::Request {
                    volume: id,
                    node,
                    capability: &capability,
                    readonly: r.readonly,
                    migration_window: r
                        .volume_context
                        .get(crate::fencing::MIGRATION_KEY)
                        .and_then(|v| v.parse().ok())
                        .map_or(
                            crate::fencing::DEFAULT_MIGRATION_WINDOW,
                            Duration::from_secs,
                        ),
                },
            )
            .await
            .map_err(CsiError::from)?;
        let published = match self
            .0
            .backend
            .controller_publish(
                types::PublishRequest {
                    volume_id: id.to_owned(),
                    node_id: node.to_owned(),
                    node_attributes,
                    capability,
                    readonly: r.readonly,
                    context: convert::key_values(&r.volume_context),
                    secrets: convert::key_values(&r.secrets),
                },
                timeout,
            )
            .await
        {
            Ok(published) => published,
            Err(e) => {
                if admitted == crate::fencing::Admitted::New
                    && let Err(undo) = fencing.forget(&turn, id, Some(node))
                {
                    tracing::error!(
                        volume = id,
                        node,
                        "cannot undo a failed publish's record: {undo}"
                    );
                }
                return Err(Self::backend_error(subject.clone())(e).into());
            }
        };
        let publish_context = rules::host_context(
            self.backend_name(),
            &subject,
            published.context,
            published.attachment.as_ref(),
        )?;
        if admitted == crate::fencing::Admitted::New {
            self.0.note_attachments(id);
        }
        tracing::info!(volume = id, node, "volume published to node");
        Ok(Response::new(ControllerPublishVolumeResponse {
            publish_context,
        }))
    }

    async fn controller_unpublish_volume(
        &self,
        request: Request<ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<ControllerUnpublishVolumeResponse>, Status> {
        self.require(Optional::Publish, "ControllerUnpublishVolume")?;
        let timeout = deadline::of(&request);
        let r = request.into_inner();
        let id = validate::volume_id(&r.volume_id).map_err(CsiError::from)?;
        if !r.node_id.is_empty() {
            validate::node_id(&r.node_id).map_err(CsiError::from)?;
        }
        rules::map_from_co("secrets", &r.secrets)?;
        // An empty node id detaches the volume from every node.
        let node = (!r.node_id.is_empty()).then_some(r.node_id.as_str());
        let turn = self.0.fencing.turn(id).await;
        self.0
            .fencing
            .begin_detach(&turn, id, node)
            .map_err(CsiError::from)?;
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
        self.0
            .fencing
            .forget(&turn, id, node)
            .map_err(CsiError::from)?;
        self.0.note_attachments(id);
        tracing::info!(volume = id, node = %r.node_id, "volume unpublished from node");
        Ok(Response::new(ControllerUnpublishVolumeResponse {}))
    }

    async fn controller_expand_volume(
        &self,
        request: Request<ControllerExpandVolumeRequest>,
    ) -> Result<Response<ControllerExpandVolumeResponse>, Status> {
        self.require(Optional::Expand, "ControllerExpandVolume")?;
        let timeout = deadline::of(&request);
        let r = request.into_inner();
        let id = validate::volume_id(&r.volume_id).map_err(CsiError::from)?;
        rules::map_from_co("secrets", &r.secrets)?;
        let range = r.capacity_range.as_ref().ok_or_else(|| {
            CsiError::InvalidArgument(format!("volume {id}: capacity range is required"))
        })?;
        let capacity = convert::capacity_range(Some(range))?;
        let capability = r
            .volume_capability
            .as_ref()
            .map(convert::capability)
            .transpose()?;
        let subject = format!("volume {id}");
        let _guard = self.0.lock(id)?;
        let expanded = self
            .0
            .backend
            .expand_volume(
                id.to_owned(),
                capacity,
                capability,
                convert::key_values(&r.secrets),
                timeout,
            )
            .await
            .map_err(Self::backend_error(subject.clone()))?;
        rules::capacity_in_range(
            self.backend_name(),
            &subject,
            expanded.capacity_bytes,
            &capacity,
        )?;
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
        self.require(Optional::Capacity, "GetCapacity")?;
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
            .backend
            .get_capacity(
                convert::key_values(&r.parameters),
                capabilities,
                topology,
                timeout,
            )
            .await
            .map_err(Self::backend_error("capacity".to_owned()))?;
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
        self.require(Optional::ListVolumes, "ListVolumes")?;
        let timeout = deadline::of(&request);
        let r = request.into_inner();
        let max_entries = max_entries(r.max_entries)?;
        self.0.check_token("volumes", &r.starting_token)?;
        let subject = "list volumes";
        let page = self
            .0
            .backend
            .list_volumes(max_entries, r.starting_token, timeout)
            .await
            .map_err(Self::backend_error(subject.to_owned()))?;
        let backend = self.backend_name();
        rules::page_len(backend, subject, page.volumes.len(), max_entries)?;
        let mut entries = Vec::with_capacity(page.volumes.len());
        for volume in page.volumes {
            rules::returned_id(backend, subject, "volume id", &volume.id)?;
            let subject = format!("list volumes: volume {}", volume.id);
            entries.push(list_volumes_response::Entry {
                volume: Some(Volume {
                    capacity_bytes: bytes_to_csi(volume.capacity_bytes),
                    volume_context: rules::volume_context(backend, &subject, &volume)?,
                    accessible_topology: convert::topology_to_csi(&volume.topology),
                    volume_id: volume.id,
                    content_source: None,
                }),
                status: None,
            });
        }
        self.0.tokens.issue("volumes", &page.next_token);
        Ok(Response::new(ListVolumesResponse {
            entries,
            next_token: page.next_token,
        }))
    }

    async fn create_snapshot(
        &self,
        request: Request<CreateSnapshotRequest>,
    ) -> Result<Response<CreateSnapshotResponse>, Status> {
        self.require(Optional::Snapshots, "CreateSnapshot")?;
        let timeout = deadline::of(&request);
        let r = request.into_inner();
        let name = validate::volume_name(&r.name).map_err(CsiError::from)?;
        let source =
            validate::token("source volume id", &r.source_volume_id).map_err(CsiError::from)?;
        rules::map_from_co("parameters", &r.parameters)?;
        rules::map_from_co("secrets", &r.secrets)?;
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
        rules::returned_id(self.backend_name(), &subject, "snapshot id", &snapshot.id)?;
        tracing::info!(snapshot = %snapshot.id, volume = source, "snapshot created");
        Ok(Response::new(CreateSnapshotResponse {
            snapshot: Some(snapshot_to_csi(snapshot)),
        }))
    }

    async fn delete_snapshot(
        &self,
        request: Request<DeleteSnapshotRequest>,
    ) -> Result<Response<DeleteSnapshotResponse>, Status> {
        self.require(Optional::Snapshots, "DeleteSnapshot")?;
        let timeout = deadline::of(&request);
        let r = request.into_inner();
        let id = validate::token("snapshot id", &r.snapshot_id).map_err(CsiError::from)?;
        rules::map_from_co("secrets", &r.secrets)?;
        let subject = format!("snapshot {id}");
        let _guard = self.0.lock_key(&format!("snapshot-id/{id}"), &subject)?;
        match self
            .0
            .backend
            .delete_snapshot(id.to_owned(), convert::key_values(&r.secrets), timeout)
            .await
        {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(Self::backend_error(subject)(e).into()),
        }
        tracing::info!(snapshot = id, "snapshot deleted");
        Ok(Response::new(DeleteSnapshotResponse {}))
    }

    async fn list_snapshots(
        &self,
        request: Request<ListSnapshotsRequest>,
    ) -> Result<Response<ListSnapshotsResponse>, Status> {
        self.require(Optional::Snapshots, "ListSnapshots")?;
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
                validate::token(what, value).map_err(CsiError::from)?;
            }
        }
        self.0.check_token("snapshots", &r.starting_token)?;
        let subject = "list snapshots";
        let page = self
            .0
            .backend
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
            .await
            .map_err(Self::backend_error(subject.to_owned()))?;
        let backend = self.backend_name();
        rules::page_len(backend, subject, page.snapshots.len(), max_entries)?;
        for snapshot in &page.snapshots {
            rules::returned_id(backend, subject, "snapshot id", &snapshot.id)?;
            rules::returned_id(
                backend,
                subject,
                "source volume id",
                &snapshot.source_volume_id,
            )?;
        }
        self.0.tokens.issue("snapshots", &page.next_token);
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
        self.require(Optional::GetVolume, "ControllerGetVolume")?;
        let timeout = deadline::of(&request);
        let r = request.into_inner();
        let id = validate::volume_id(&r.volume_id).map_err(CsiError::from)?;
        let subject = format!("volume {id}");
        let status = self
            .0
            .backend
            .get_volume(id.to_owned(), timeout)
            .await
            .map_err(Self::backend_error(subject.clone()))?;
        for node in &status.published_nodes {
            validate::node_id(node).map_err(|e| {
                rules::broken(
                    self.backend_name(),
                    &subject,
                    format!("returned an unusable node id: {e}"),
                )
            })?;
        }
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
