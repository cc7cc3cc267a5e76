//! Node: make a volume appear at a target path, take it away, report its usage. The work itself
//! is done by node/; this layer validates, locks the volume and picks the attachment handler.

use std::collections::HashMap;

use tonic::{Request, Response, Status};

use super::convert::{self, bytes_to_csi};
use super::{CsiError, SharedDriver, deadline};
use crate::node::confined::ConfinedError;
use crate::node::publish::Shows;
use crate::node::{NodeError, publish, stage, stats};
use crate::proto::node_server::Node;
use crate::proto::node_service_capability::{Rpc, Type, rpc};
use crate::proto::*;
use crate::runtime::Optional;
use crate::volume::staged::{self, Staged};
use crate::volume::types;
use crate::volume::{attachment, mkfs, validate};

pub struct NodeService(pub SharedDriver);

fn node_err(volume: &str) -> impl FnOnce(NodeError) -> CsiError + '_ {
    move |source| CsiError::Node {
        volume: volume.to_owned(),
        source,
    }
}

/// What a volume is published from on this node: its local directory, or what it was staged
/// from (the staging path, or a block volume's device). Looks at the filesystem: node work only.
fn source_of(
    dirs: &crate::node::local_dir::LocalDirs,
    record: Option<&Staged>,
    id: &str,
) -> std::path::PathBuf {
    if dirs.exists(id) {
        return dirs.path(id);
    }
    record.map_or_else(|| dirs.path(id), |r| r.source.clone())
}

fn record_err(source: crate::state::StoreError) -> NodeError {
    NodeError::Record {
        what: "the staged volume",
        source,
    }
}

/// How long a stats call may wait for a (possibly stale) mount before giving up.
const STATS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl NodeService {
    /// The volume's attachment: the one the host encoded in the contexts, or, for a volume it
    /// did not create, the backend's `locate`.
    async fn resolve_attachment(
        &self,
        id: &str,
        publish_context: &HashMap<String, String>,
        volume_context: &HashMap<String, String>,
    ) -> Result<types::Attachment, CsiError> {
        super::rules::map_from_co("volume context", volume_context)?;
        super::rules::map_from_co("publish context", publish_context)?;
        if !attachment::present(publish_context, volume_context) {
            return self.locate(id, volume_context).await;
        }
        attachment::decode(publish_context, volume_context).map_err(|source| CsiError::Attachment {
            volume: id.to_owned(),
            source,
        })
    }

    /// The node's record of staging the volume, if it staged it.
    fn staged(&self, id: &str) -> Option<Staged> {
        staged::load(self.0.state.as_ref(), id).ok().flatten()
    }

    /// Asks the backend where a volume this host did not create lives (a volume of the driver
    /// the backend replaces, whose context has no `modcsi.io/` keys).
    async fn locate(
        &self,
        id: &str,
        volume_context: &std::collections::HashMap<String, String>,
    ) -> Result<types::Attachment, CsiError> {
        let backend = &self.0.backend;
        if !backend.offers(Optional::Locate) {
            return Err(CsiError::Attachment {
                volume: id.to_owned(),
                source: attachment::AttachmentError::Missing,
            });
        }
        let subject = format!("volume {id}");
        let located = backend
            .locate(id.to_owned(), convert::key_values(volume_context), None)
            .await
            .map_err(|source| CsiError::Backend {
                subject: subject.clone(),
                source,
            })?;
        attachment::validate(&located).map_err(|e| {
            super::rules::broken(
                backend.name(),
                &subject,
                format!("located an unusable attachment: {e}"),
            )
        })?;
        Ok(located)
    }
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_publish_volume(
        &self,
        request: Request<NodePublishVolumeRequest>,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        let r = request.into_inner();
        let driver = &self.0;
        let id = validate::volume_id(&r.volume_id).map_err(CsiError::from)?;
        let target =
            validate::target_path("target path", &r.target_path).map_err(CsiError::from)?;
        let capability = r.volume_capability.as_ref().ok_or_else(|| {
            CsiError::InvalidArgument(format!("volume {id}: volume capability is required"))
        })?;
        let capability = convert::capability(capability)?;
        let attachment = self
            .resolve_attachment(id, &r.publish_context, &r.volume_context)
            .await?;
        let block = matches!(capability.access_type, types::AccessType::Block);
        // Where the bind comes from: the node-local directory, the staged filesystem, or (block
        // volumes) the device node itself.
        enum Source {
            /// With the volume's size, when the context carries it.
            LocalDir(Option<u64>),
            Staged(std::path::PathBuf),
            Device(types::Attachment),
        }
        let source = match attachment {
            types::Attachment::LocalDir if block => {
                return Err(CsiError::InvalidArgument(format!(
                    "volume {id}: a local-dir volume is a directory and cannot be published as a block device"
                ))
                .into());
            }
            types::Attachment::LocalDir => Source::LocalDir(
                r.volume_context
                    .get(attachment::LOCAL_DIR_BYTES)
                    .and_then(|v| v.parse().ok()),
            ),
            device if block => Source::Device(device),
            _ => {
                let staging = validate::target_path("staging target path", &r.staging_target_path)
                    .map_err(CsiError::from)?;
                Source::Staged(staging.to_owned())
            }
        };
        let read_only = r.readonly
            || matches!(
                capability.access_mode,
                types::AccessMode::SingleNodeReaderOnly | types::AccessMode::MultiNodeReaderOnly
            );
        let _guard = driver.lock_target(id, target)?;
        if matches!(source, Source::LocalDir(_)) {
            // Noted before the directory exists, so a deletion always reaches this node.
            driver.cleanup.register(id).await.map_err(CsiError::from)?;
        }
        let (root, dirs, devices) = (
            driver.kubelet_root.clone(),
            driver.local_dirs.clone(),
            driver.devices.clone(),
        );
        let (volume, target_path) = (id.to_owned(), target.to_owned());
        driver
            .node_ops
            .run(move || {
                publish::check_target(&root, &target_path)?;
                match source {
                    Source::LocalDir(size) => {
                        let dir = dirs.ensure(&volume, size)?;
                        publish::bind_dir(&root, &dir, &target_path, read_only)
                    }
                    Source::Staged(staging) => {
                        publish::bind_dir(&root, &staging, &target_path, read_only)
                    }
                    Source::Device(attachment) => {
                        let device = devices.resolve(&attachment)?;
                        publish::bind_device(&root, &device, &target_path, read_only)
                    }
                }
            })
            .await
            .map_err(node_err(id))?;
        tracing::info!(volume = id, target = %target.display(), read_only, "volume published");
        Ok(Response::new(NodePublishVolumeResponse {}))
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<NodeUnpublishVolumeRequest>,
    ) -> Result<Response<NodeUnpublishVolumeResponse>, Status> {
        let r = request.into_inner();
        let driver = &self.0;
        let id = validate::volume_id(&r.volume_id).map_err(CsiError::from)?;
        let target =
            validate::target_path("target path", &r.target_path).map_err(CsiError::from)?;
        let _guard = driver.lock_target(id, target)?;
        // Absent or already unmounted is success: kubelet retries until it hears OK.
        let (root, dirs, record) = (
            driver.kubelet_root.clone(),
            driver.local_dirs.clone(),
            self.staged(id),
        );
        let (volume, target_path) = (id.to_owned(), target.to_owned());
        let found = driver
            .node_ops
            .run(move || {
                let source = source_of(&dirs, record.as_ref(), &volume);
                publish::unpublish(&root, &source, &target_path)
            })
            .await
            .map_err(node_err(id))?;
        tracing::info!(volume = id, target = %target.display(), existed = found.existed, "volume unpublished");
        Ok(Response::new(NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_volume_stats(
        &self,
        request: Request<NodeGetVolumeStatsRequest>,
    ) -> Result<Response<NodeGetVolumeStatsResponse>, Status> {
        // The caller's deadline, when shorter, bounds the wait on a possibly stale mount, with a
        // tenth to spare so the caller hears why rather than only its own timer.
        let timeout =
            deadline::of(&request).map_or(STATS_TIMEOUT, |d| (d * 9 / 10).min(STATS_TIMEOUT));
        let r = request.into_inner();
        let driver = &self.0;
        let id = validate::volume_id(&r.volume_id).map_err(CsiError::from)?;
        // A path that is not absolute and normal cannot be where the volume is published.
        let not_published = || {
            CsiError::NotFound(format!(
                "volume {id} is not published at {:?} on node {}",
                r.volume_path, driver.node_id
            ))
        };
        if r.volume_path.is_empty() {
            return Err(CsiError::from(validate::InvalidInput::Missing {
                what: "volume path",
            })
            .into());
        }
        let Ok(path) = validate::target_path("volume path", &r.volume_path) else {
            return Err(not_published().into());
        };
        // Off the async workers and bounded in time: a stale mount must not hang the call.
        let (root, devices, dirs) = (
            driver.kubelet_root.clone(),
            driver.devices.clone(),
            driver.local_dirs.clone(),
        );
        let record = self.staged(id);
        let (volume, volume_path) = (id.to_owned(), path.to_owned());
        let block = record.as_ref().is_some_and(Staged::is_block);
        let found = driver
            .node_ops
            .run_within("volume stats", id, timeout, move || {
                let source = source_of(&dirs, record.as_ref(), &volume);
                if !source.exists() {
                    return Ok(None);
                }
                match publish::shows(&root, &source, &volume_path) {
                    // A block volume: its size only.
                    Ok(Shows::Source) if block => stage::device_size(&source).map(|size| {
                        let usage = stats::Usage {
                            total_bytes: size,
                            ..Default::default()
                        };
                        Some((Some(usage), None))
                    }),
                    // The volume is here, and its mount at the path is not: no usage to give,
                    // but the CO should hear that the pod's volume is gone from under it.
                    Ok(Shows::Unmounted) => Ok(Some((
                        None,
                        Some(format!(
                            "nothing is mounted at {}: the volume's mount is missing",
                            volume_path.display()
                        )),
                    ))),
                    Ok(Shows::Source) => {
                        let usage = stats::usage(&volume_path)?;
                        // The device behind the mount gone, or no longer the one the volume's
                        // attachment resolves to (renumbered after a reconnect).
                        let trouble = stage::device_trouble(&volume_path).or_else(|| {
                            let attachment = record.as_ref()?.attachment()?;
                            match devices.find(&attachment) {
                                Ok(Some(now)) => stage::mounted_from_other(&volume_path, &now),
                                Ok(None) => Some(format!(
                                    "the volume's {} device is no longer present",
                                    attachment::kind_name(&attachment)
                                )),
                                Err(e) => Some(format!("cannot find the volume's device: {e}")),
                            }
                        });
                        Ok(Some((Some(usage), trouble)))
                    }
                    Ok(Shows::Absent | Shows::Other)
                    | Err(NodeError::Confined(
                        ConfinedError::Outside { .. }
                        | ConfinedError::Symlink { .. }
                        | ConfinedError::NoParent { .. },
                    )) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .await
            .map_err(node_err(id))?;
        let (usage, trouble) = found.ok_or_else(not_published)?;
        let volume_condition = Some(match trouble {
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
        let mut entries = vec![];
        if let Some(usage) = usage {
            entries.push(entry(
                volume_usage::Unit::Bytes,
                usage.total_bytes,
                usage.available_bytes,
                usage.used_bytes,
            ));
            if !block {
                entries.push(entry(
                    volume_usage::Unit::Inodes,
                    usage.total_inodes,
                    usage.free_inodes,
                    usage.used_inodes,
                ));
            }
        }
        Ok(Response::new(NodeGetVolumeStatsResponse {
            usage: entries,
            volume_condition,
        }))
    }

    async fn node_stage_volume(
        &self,
        request: Request<NodeStageVolumeRequest>,
    ) -> Result<Response<NodeStageVolumeResponse>, Status> {
        let r = request.into_inner();
        let driver = &self.0;
        let id = validate::volume_id(&r.volume_id).map_err(CsiError::from)?;
        let staging = validate::target_path("staging target path", &r.staging_target_path)
            .map_err(CsiError::from)?;
        let capability = r.volume_capability.as_ref().ok_or_else(|| {
            CsiError::InvalidArgument(format!("volume {id}: volume capability is required"))
        })?;
        let capability = convert::capability(capability)?;
        super::rules::map_from_co("secrets", &r.secrets)?;
        let attachment = self
            .resolve_attachment(id, &r.publish_context, &r.volume_context)
            .await?;
        if let types::Attachment::LocalDir = attachment {
            // Nothing to stage: the directory is bound at publish.
            return Ok(Response::new(NodeStageVolumeResponse {}));
        }
        // A block volume has nothing to format or mount: staging finds the device and records
        // it, so that unpublish and stats know it.
        let mount = match capability.access_type {
            types::AccessType::Mount(mount) => Some(mount),
            types::AccessType::Block => None,
        };
        // Checked again here: the context came back through the CO.
        let mkfs_args = match (&mount, r.volume_context.get(mkfs::KEY)) {
            (Some(m), Some(text)) => mkfs::parse(&m.fs_type, text)
                .map_err(|e| CsiError::InvalidArgument(format!("volume {id}: {e}")))?,
            _ => vec![],
        };
        let _guard = driver.lock_target(id, staging)?;
        let (root, devices, state) = (
            driver.kubelet_root.clone(),
            driver.devices.clone(),
            driver.state.clone(),
        );
        let (volume, staging_path) = (id.to_owned(), staging.to_owned());
        let formatted = driver
            .node_ops
            .run(move || {
                let device = devices.attach(&attachment)?;
                let (staged, source) = match mount {
                    Some(mount) => {
                        let staged = stage::stage(
                            &root,
                            &staging_path,
                            &device,
                            &mount.fs_type,
                            &mount.mount_flags,
                            &mkfs_args,
                        )?;
                        if !mount.volume_mount_group.is_empty() {
                            stage::apply_mount_group(
                                &root,
                                &staging_path,
                                &mount.volume_mount_group,
                            )?;
                        }
                        (staged, staging_path)
                    }
                    None => (false, device),
                };
                // Unpublish, stats and unstage find the staged filesystem (or device) and its
                // attachment by volume id.
                staged::save(state.as_ref(), &volume, &Staged::new(source, &attachment))
                    .map_err(record_err)?;
                Ok(staged)
            })
            .await
            .map_err(node_err(id))?;
        tracing::info!(volume = id, staging = %staging.display(), mounted = formatted, "volume staged");
        Ok(Response::new(NodeStageVolumeResponse {}))
    }

    async fn node_unstage_volume(
        &self,
        request: Request<NodeUnstageVolumeRequest>,
    ) -> Result<Response<NodeUnstageVolumeResponse>, Status> {
        let r = request.into_inner();
        let driver = &self.0;
        let id = validate::volume_id(&r.volume_id).map_err(CsiError::from)?;
        let staging = validate::target_path("staging target path", &r.staging_target_path)
            .map_err(CsiError::from)?;
        let _guard = driver.lock_target(id, staging)?;
        let (root, state) = (driver.kubelet_root.clone(), driver.state.clone());
        let (volume, staging_path) = (id.to_owned(), staging.to_owned());
        let (devices, record) = (driver.devices.clone(), self.staged(id));
        driver
            .node_ops
            .run(move || {
                stage::unstage(&root, &staging_path)?;
                // An NVMe subsystem is disconnected when its last staged volume goes; the record
                // goes last, so a failed disconnect is retried with the next unstage.
                if let Some(attachment) = record.as_ref().and_then(Staged::attachment)
                    && let types::Attachment::NvmeTcp(target) = &attachment
                {
                    let users = staged::nvme_users(state.as_ref(), &target.nqn, &volume)
                        .map_err(record_err)?;
                    if users.is_empty() {
                        devices.detach(&attachment)?;
                    } else {
                        tracing::info!(volume = %volume, nqn = %target.nqn, ?users, "NVMe subsystem still in use; staying connected");
                    }
                }
                staged::remove(state.as_ref(), &volume).map_err(record_err)
            })
            .await
            .map_err(node_err(id))?;
        tracing::info!(volume = id, staging = %staging.display(), "volume unstaged");
        Ok(Response::new(NodeUnstageVolumeResponse {}))
    }

    async fn node_expand_volume(
        &self,
        request: Request<NodeExpandVolumeRequest>,
    ) -> Result<Response<NodeExpandVolumeResponse>, Status> {
        let r = request.into_inner();
        let driver = &self.0;
        let id = validate::volume_id(&r.volume_id).map_err(CsiError::from)?;
        let path = validate::target_path("volume path", &r.volume_path).map_err(CsiError::from)?;
        // The staging mount is read-write; a published path may be a read-only bind.
        let grow_at = if r.staging_target_path.is_empty() {
            path
        } else {
            validate::target_path("staging target path", &r.staging_target_path)
                .map_err(CsiError::from)?
        };
        super::rules::map_from_co("secrets", &r.secrets)?;
        let block = r
            .volume_capability
            .as_ref()
            .map(convert::capability)
            .transpose()?
            .is_some_and(|c| matches!(c.access_type, types::AccessType::Block));
        if block {
            // A block volume is its device: nothing to grow on the node.
            return Ok(Response::new(NodeExpandVolumeResponse {
                capacity_bytes: 0,
            }));
        }
        let _guard = driver.lock_target(id, path)?;
        let (root, grow_path) = (driver.kubelet_root.clone(), grow_at.to_owned());
        let bytes = driver
            .node_ops
            .run(move || stage::expand(&root, &grow_path))
            .await
            .map_err(node_err(id))?;
        tracing::info!(volume = id, path = %path.display(), bytes, "filesystem expanded");
        Ok(Response::new(NodeExpandVolumeResponse {
            capacity_bytes: bytes_to_csi(bytes),
        }))
    }

    async fn node_get_capabilities(
        &self,
        _request: Request<NodeGetCapabilitiesRequest>,
    ) -> Result<Response<NodeGetCapabilitiesResponse>, Status> {
        let mut rpcs = vec![rpc::Type::GetVolumeStats, rpc::Type::VolumeCondition];
        // Backends that attach storage to nodes (they export `publish`) hand out devices, which
        // are staged; node-local directories need no staging.
        if self.0.backend.offers(Optional::Publish) {
            rpcs.push(rpc::Type::StageUnstageVolume);
            rpcs.push(rpc::Type::ExpandVolume);
            rpcs.push(rpc::Type::VolumeMountGroup);
        }
        if self.0.offers_single_node_multi_writer() {
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
        let driver = &self.0;
        let mut info = NodeGetInfoResponse {
            node_id: driver.node_id.clone(),
            max_volumes_per_node: 0,
            accessible_topology: None,
        };
        // A backend that knows better (a cloud VM id, a zone) describes the node itself.
        if driver.backend.offers(Optional::NodeIdentity) {
            let identity = driver
                .backend
                .node_identity(deadline::of(&request))
                .await
                .map_err(|source| CsiError::Backend {
                    subject: format!("node {}", driver.node_id),
                    source,
                })?;
            if let Some(id) = identity.node_id {
                validate::node_id(&id).map_err(|e| {
                    CsiError::Internal(format!(
                        "backend {} returned an unusable node id: {e}",
                        driver.backend.name()
                    ))
                })?;
                info.node_id = id;
            }
            info.max_volumes_per_node = i64::from(identity.max_volumes);
            // Kept for controller-publish (an NVMe host NQN, a cloud VM id).
            let attributes = serde_json::to_vec(&identity.attributes).unwrap_or_default();
            if let Err(e) =
                driver
                    .shared
                    .put_any(super::NODES_NAMESPACE, &info.node_id, &attributes)
            {
                tracing::warn!(node = %info.node_id, "cannot keep the node's attributes: {e}");
            }
            if !identity.topology.is_empty() {
                info.accessible_topology = convert::topology_to_csi(&[identity.topology]).pop();
            }
        }
        Ok(Response::new(info))
    }
}
