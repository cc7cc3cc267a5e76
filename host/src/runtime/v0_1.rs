//! `modcsi:backend@0.1.0` (wit/0.1.0, frozen): components built for it keep loading. Their
//! calls are adapted into the host's own types (`volume::types`); their capability flags
//! become the optional interfaces they offer.
//!
//! What 0.1 cannot say is filled in the narrowest way: no secrets on validate and
//! list-snapshots, no node attributes, one NVMe portal, and no get-volume, locate,
//! parameters or pool. A 0.1 `disk` attachment by free device path is refused, as 0.2 has no
//! such thing.

use std::sync::OnceLock;

use wasmtime::Store;
use wasmtime::component::{HasSelf, Instance, InstancePre, Linker};

use super::call_state::{CallState, LogLevel};
use super::operations::{Calls, Optional, R};
use crate::volume::types as v2;

mod bindings {
    wasmtime::component::bindgen!({
        world: "backend",
        path: "../wit/0.1.0",
        imports: { default: trappable },
        exports: { default: async },
    });
}

use bindings::modcsi::backend::types as v1;
use bindings::modcsi::backend::{cache, log};

pub struct Exports {
    indices: bindings::BackendIndices,
    /// The capability flags of the component's `info`, known once it has answered.
    flags: OnceLock<v1::ControllerCapabilities>,
}

impl Exports {
    pub fn new(pre: &InstancePre<CallState>) -> wasmtime::Result<Self> {
        Ok(Self {
            indices: bindings::BackendIndices::new(pre)?,
            flags: OnceLock::new(),
        })
    }

    pub fn offers(&self, interface: Optional) -> bool {
        use v1::ControllerCapabilities as C;
        let flags = self.flags.get().copied().unwrap_or(C::empty());
        match interface {
            Optional::Publish => flags.contains(C::PUBLISH_UNPUBLISH),
            Optional::Expand => flags.contains(C::EXPAND),
            Optional::ListVolumes => flags.contains(C::LIST_VOLUMES),
            Optional::Capacity => flags.contains(C::GET_CAPACITY),
            Optional::Snapshots => flags.contains(C::SNAPSHOTS),
            Optional::NodeIdentity => flags.contains(C::NODE_IDENTITY),
            Optional::GetVolume | Optional::Locate | Optional::Parameters | Optional::Pool => false,
        }
    }
}

/// Links the 0.1 imports for `CallState`; they share their implementation with 0.2.
pub fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    bindings::Backend::add_to_linker::<_, HasSelf<CallState>>(linker, |s| s)
}

impl v1::Host for CallState {}

impl log::Host for CallState {
    fn log(
        &mut self,
        level: v1::LogLevel,
        message: String,
        fields: v1::KeyValues,
    ) -> wasmtime::Result<()> {
        let level = match level {
            v1::LogLevel::Trace => LogLevel::Trace,
            v1::LogLevel::Debug => LogLevel::Debug,
            v1::LogLevel::Info => LogLevel::Info,
            v1::LogLevel::Warn => LogLevel::Warn,
            v1::LogLevel::Error => LogLevel::Error,
        };
        self.emit_log(level, &message, &fields);
        Ok(())
    }
}

impl cache::Host for CallState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.cache.get(&key))
    }

    fn set(&mut self, key: String, value: Vec<u8>, ttl_ms: u64) -> wasmtime::Result<()> {
        self.cache
            .set(key, value, std::time::Duration::from_millis(ttl_ms));
        Ok(())
    }
}

// ---- 0.2 → 0.1: what the host sends ----

fn access_mode(mode: v2::AccessMode) -> v1::AccessMode {
    use v1::AccessMode as M;
    match mode {
        v2::AccessMode::SingleNodeWriter => M::SingleNodeWriter,
        v2::AccessMode::SingleNodeReaderOnly => M::SingleNodeReaderOnly,
        v2::AccessMode::MultiNodeReaderOnly => M::MultiNodeReaderOnly,
        v2::AccessMode::MultiNodeSingleWriter => M::MultiNodeSingleWriter,
        v2::AccessMode::MultiNodeMultiWriter => M::MultiNodeMultiWriter,
        v2::AccessMode::SingleNodeSingleWriter => M::SingleNodeSingleWriter,
        v2::AccessMode::SingleNodeMultiWriter => M::SingleNodeMultiWriter,
    }
}

fn capability(cap: v2::Capability) -> v1::Capability {
    v1::Capability {
        access_type: match cap.access_type {
            v2::AccessType::Block => v1::AccessType::Block,
            v2::AccessType::Mount(m) => v1::AccessType::Mount(v1::MountVolume {
                fs_type: m.fs_type,
                mount_flags: m.mount_flags,
                volume_mount_group: m.volume_mount_group,
            }),
        },
        access_mode: access_mode(cap.access_mode),
    }
}

fn capacity_range(range: v2::CapacityRange) -> v1::CapacityRange {
    v1::CapacityRange {
        required_bytes: range.required_bytes,
        limit_bytes: range.limit_bytes,
    }
}

fn create_request(r: v2::CreateRequest) -> v1::CreateRequest {
    v1::CreateRequest {
        name: r.name,
        capacity: capacity_range(r.capacity),
        capabilities: r.capabilities.into_iter().map(capability).collect(),
        parameters: r.parameters,
        secrets: r.secrets,
        source: r.source.map(|s| match s {
            v2::ContentSource::Snapshot(id) => v1::ContentSource::Snapshot(id),
            v2::ContentSource::Volume(id) => v1::ContentSource::Volume(id),
        }),
        accessibility: r.accessibility.map(|a| v1::TopologyRequirement {
            requisite: a.requisite,
            preferred: a.preferred,
        }),
    }
}

fn publish_request(r: v2::PublishRequest) -> v1::PublishRequest {
    v1::PublishRequest {
        volume_id: r.volume_id,
        node_id: r.node_id,
        capability: capability(r.capability),
        readonly: r.readonly,
        context: r.context,
        secrets: r.secrets,
    }
}

// ---- 0.1 → 0.2: what the backend answers ----

fn error(e: v1::Error) -> v2::BackendError {
    use v2::BackendError as E;
    match e {
        v1::Error::InvalidArgument(m) => E::InvalidArgument(m),
        v1::Error::NotFound(m) => E::NotFound(m),
        v1::Error::AlreadyExists(m) => E::AlreadyExists(m),
        v1::Error::FailedPrecondition(m) => E::FailedPrecondition(m),
        v1::Error::ResourceExhausted(m) => E::ResourceExhausted(m),
        v1::Error::OutOfRange(m) => E::OutOfRange(m),
        v1::Error::Unavailable(m) => E::Unavailable(m),
        v1::Error::Aborted(m) => E::Aborted(m),
        v1::Error::Internal(m) => E::Internal(m),
        v1::Error::Unimplemented(m) => E::Unimplemented(m),
    }
}

fn attachment(a: v1::Attachment) -> Result<v2::Attachment, v2::BackendError> {
    Ok(match a {
        v1::Attachment::LocalDir => v2::Attachment::LocalDir,
        v1::Attachment::NvmeTcp(t) => v2::Attachment::NvmeTcp(v2::NvmeTarget {
            portals: vec![v2::Portal {
                address: t.address,
                port: t.port,
            }],
            nqn: t.nqn,
            namespace_id: None,
            ctrl_loss_tmo_seconds: t.ctrl_loss_tmo_seconds,
            reconnect_delay_seconds: t.reconnect_delay_seconds,
            keep_alive_tmo_seconds: t.keep_alive_tmo_seconds,
        }),
        v1::Attachment::Disk(v1::DiskLocator::Serial(s)) => {
            v2::Attachment::Disk(v2::DiskLocator::Serial(s))
        }
        v1::Attachment::Disk(v1::DiskLocator::ById(s)) => {
            v2::Attachment::Disk(v2::DiskLocator::ById(s))
        }
        v1::Attachment::Disk(v1::DiskLocator::Path(path)) => {
            return Err(v2::BackendError::Internal(format!(
                "the backend names disk {path:?} by device path, which this host no longer \
                 accepts: name it by serial or by-id"
            )));
        }
    })
}

fn volume(v: v1::Volume) -> Result<v2::Volume, v2::BackendError> {
    Ok(v2::Volume {
        id: v.id,
        capacity_bytes: v.capacity_bytes,
        context: v.context,
        topology: v.topology,
        attachment: v.attachment.map(attachment).transpose()?,
    })
}

fn snapshot(s: v1::Snapshot) -> v2::Snapshot {
    v2::Snapshot {
        id: s.id,
        source_volume_id: s.source_volume_id,
        size_bytes: s.size_bytes,
        created_unix_seconds: s.created_unix_seconds,
        ready: s.ready,
    }
}

fn backend_info(info: v1::BackendInfo) -> v2::BackendInfo {
    use v1::ControllerCapabilities as C;
    let sources = v2::ContentSources {
        snapshot: info.capabilities.contains(C::SNAPSHOTS),
        volume: info.capabilities.contains(C::CLONE),
    };
    let modes = v2::VolumeModes {
        filesystem: info.volume_modes.contains(v1::VolumeModes::FILESYSTEM),
        block: info.volume_modes.contains(v1::VolumeModes::BLOCK),
    };
    v2::BackendInfo {
        name: info.name,
        version: info.version,
        access_modes: info
            .access_modes
            .into_iter()
            .map(|m| match m {
                v1::AccessMode::SingleNodeWriter => v2::AccessMode::SingleNodeWriter,
                v1::AccessMode::SingleNodeReaderOnly => v2::AccessMode::SingleNodeReaderOnly,
                v1::AccessMode::MultiNodeReaderOnly => v2::AccessMode::MultiNodeReaderOnly,
                v1::AccessMode::MultiNodeSingleWriter => v2::AccessMode::MultiNodeSingleWriter,
                v1::AccessMode::MultiNodeMultiWriter => v2::AccessMode::MultiNodeMultiWriter,
                v1::AccessMode::SingleNodeSingleWriter => v2::AccessMode::SingleNodeSingleWriter,
                v1::AccessMode::SingleNodeMultiWriter => v2::AccessMode::SingleNodeMultiWriter,
            })
            .collect(),
        volume_modes: modes,
        content_sources: sources,
        topology: info.topology,
        parameters: info
            .parameters
            .into_iter()
            .map(|p| v2::ParameterSpec {
                name: p.name,
                description: p.description,
                required: p.required,
            })
            .collect(),
    }
}

/// Converts a 0.1 answer: the error variant always, the value with `f` (which may refuse it).
fn adapt<A, B>(
    answer: wasmtime::Result<Result<A, v1::Error>>,
    f: impl FnOnce(A) -> Result<B, v2::BackendError>,
) -> R<B> {
    Ok(answer?.map_err(error).and_then(f))
}

fn unsupported<T>(operation: &str) -> R<T> {
    Ok(Err(v2::BackendError::Unimplemented(format!(
        "{operation} is not part of modcsi:backend@0.1.0"
    ))))
}

impl Exports {
    fn load(
        &self,
        store: &mut Store<CallState>,
        instance: &Instance,
    ) -> wasmtime::Result<bindings::Backend> {
        self.indices.load(store, instance)
    }
}

impl Calls for Exports {
    async fn info(
        &self,
        store: &mut Store<CallState>,
        instance: &Instance,
    ) -> wasmtime::Result<v2::BackendInfo> {
        let b = self.load(store, instance)?;
        let info = b.modcsi_backend_identity().call_info(&mut *store).await?;
        let _ = self.flags.set(info.capabilities);
        Ok(backend_info(info))
    }

    async fn probe(&self, store: &mut Store<CallState>, instance: &Instance) -> R<()> {
        let b = self.load(store, instance)?;
        adapt(
            b.modcsi_backend_identity().call_probe(&mut *store).await,
            Ok,
        )
    }

    async fn create_volume(
        &self,
        store: &mut Store<CallState>,
        instance: &Instance,
        request: v2::CreateRequest,
    ) -> R<v2::Volume> {
        let b = self.load(store, instance)?;
        let request = create_request(request);
        adapt(
            b.modcsi_backend_controller()
                .call_create_volume(&mut *store, &request)
                .await,
            volume,
        )
    }

    async fn delete_volume(
        &self,
        store: &mut Store<CallState>,
        instance: &Instance,
        volume_id: String,
        secrets: v2::KeyValues,
    ) -> R<()> {
        let b = self.load(store, instance)?;
        adapt(
            b.modcsi_backend_controller()
                .call_delete_volume(&mut *store, &volume_id, &secrets)
                .await,
            Ok,
        )
    }

    async fn validate_capabilities(
        &self,
        store: &mut Store<CallState>,
        instance: &Instance,
        volume_id: String,
        capabilities: Vec<v2::Capability>,
        context: v2::KeyValues,
        parameters: v2::KeyValues,
        _secrets: v2::KeyValues,
    ) -> R<v2::Validation> {
        let b = self.load(store, instance)?;
        let capabilities: Vec<_> = capabilities.into_iter().map(capability).collect();
        adapt(
            b.modcsi_backend_controller()
                .call_validate_capabilities(
                    &mut *store,
                    &volume_id,
                    &capabilities,
                    &context,
                    &parameters,
                )
                .await,
            |v| {
                Ok(v2::Validation {
                    confirmed: v.confirmed,
                    message: v.message,
                })
            },
        )
    }

    async fn controller_publish(
        &self,
        store: &mut Store<CallState>,
        instance: &Instance,
        request: v2::PublishRequest,
    ) -> R<v2::PublishResult> {
        let b = self.load(store, instance)?;
        let request = publish_request(request);
        adapt(
            b.modcsi_backend_controller()
                .call_controller_publish(&mut *store, &request)
                .await,
            |p| {
                Ok(v2::PublishResult {
                    context: p.context,
                    attachment: p.attachment.map(attachment).transpose()?,
                })
            },
        )
    }

    async fn controller_unpublish(
        &self,
        store: &mut Store<CallState>,
        instance: &Instance,
        volume_id: String,
        node_id: String,
        secrets: v2::KeyValues,
    ) -> R<()> {
        let b = self.load(store, instance)?;
        adapt(
            b.modcsi_backend_controller()
                .call_controller_unpublish(&mut *store, &volume_id, &node_id, &secrets)
                .await,
            Ok,
        )
    }

    async fn expand_volume(
        &self,
        store: &mut Store<CallState>,
        instance: &Instance,
        volume_id: String,
        capacity: v2::CapacityRange,
        _capability: Option<v2::Capability>,
        secrets: v2::KeyValues,
    ) -> R<v2::ExpandResult> {
        let b = self.load(store, instance)?;
        adapt(
            b.modcsi_backend_controller()
                .call_expand_volume(&mut *store, &volume_id, capacity_range(capacity), &secrets)
                .await,
            |e| {
                Ok(v2::ExpandResult {
                    capacity_bytes: e.capacity_bytes,
                    node_expansion_required: e.node_expansion_required,
                })
            },
        )
    }

    async fn list_volumes(
        &self,
        store: &mut Store<CallState>,
        instance: &Instance,
        max_entries: u32,
        starting_token: String,
    ) -> R<v2::VolumePage> {
        let b = self.load(store, instance)?;
        adapt(
            b.modcsi_backend_controller()
                .call_list_volumes(&mut *store, max_entries, &starting_token)
                .await,
            |page| {
                Ok(v2::VolumePage {
                    volumes: page
                        .volumes
                        .into_iter()
                        .map(volume)
                        .collect::<Result<_, _>>()?,
                    next_token: page.next_token,
                })
            },
        )
    }

    async fn get_capacity(
        &self,
        store: &mut Store<CallState>,
        instance: &Instance,
        parameters: v2::KeyValues,
        _capabilities: Vec<v2::Capability>,
        _topology: Option<v2::Topology>,
    ) -> R<v2::Capacity> {
        let b = self.load(store, instance)?;
        adapt(
            b.modcsi_backend_controller()
                .call_get_capacity(&mut *store, &parameters)
                .await,
            |available_bytes| {
                Ok(v2::Capacity {
                    available_bytes,
                    maximum_volume_bytes: None,
                    minimum_volume_bytes: None,
                })
            },
        )
    }

    async fn create_snapshot(
        &self,
        store: &mut Store<CallState>,
        instance: &Instance,
        source_volume_id: String,
        name: String,
        parameters: v2::KeyValues,
        secrets: v2::KeyValues,
    ) -> R<v2::Snapshot> {
        let b = self.load(store, instance)?;
        adapt(
            b.modcsi_backend_controller()
                .call_create_snapshot(&mut *store, &source_volume_id, &name, &parameters, &secrets)
                .await,
            |s| Ok(snapshot(s)),
        )
    }

    async fn delete_snapshot(
        &self,
        store: &mut Store<CallState>,
        instance: &Instance,
        snapshot_id: String,
        secrets: v2::KeyValues,
    ) -> R<()> {
        let b = self.load(store, instance)?;
        adapt(
            b.modcsi_backend_controller()
                .call_delete_snapshot(&mut *store, &snapshot_id, &secrets)
                .await,
            Ok,
        )
    }

    async fn list_snapshots(
        &self,
        store: &mut Store<CallState>,
        instance: &Instance,
        max_entries: u32,
        starting_token: String,
        filter: v2::SnapshotFilter,
        _secrets: v2::KeyValues,
    ) -> R<v2::SnapshotPage> {
        let b = self.load(store, instance)?;
        adapt(
            b.modcsi_backend_controller()
                .call_list_snapshots(
                    &mut *store,
                    max_entries,
                    &starting_token,
                    &filter.source_volume_id,
                    &filter.snapshot_id,
                )
                .await,
            |page| {
                Ok(v2::SnapshotPage {
                    snapshots: page.snapshots.into_iter().map(snapshot).collect(),
                    next_token: page.next_token,
                })
            },
        )
    }

    async fn node_identity(
        &self,
        store: &mut Store<CallState>,
        instance: &Instance,
    ) -> R<v2::NodeInfo> {
        let b = self.load(store, instance)?;
        adapt(
            b.modcsi_backend_controller()
                .call_node_identity(&mut *store)
                .await,
            |n| {
                Ok(v2::NodeInfo {
                    node_id: n.node_id,
                    topology: n.topology,
                    max_volumes: n.max_volumes,
                    attributes: vec![],
                })
            },
        )
    }

    async fn get_volume(
        &self,
        _store: &mut Store<CallState>,
        _instance: &Instance,
        _volume_id: String,
    ) -> R<v2::VolumeStatus> {
        unsupported("get-volume")
    }

    async fn locate(
        &self,
        _store: &mut Store<CallState>,
        _instance: &Instance,
        _volume_id: String,
        _context: v2::KeyValues,
    ) -> R<v2::Attachment> {
        unsupported("locate")
    }

    async fn validate_parameters(
        &self,
        _store: &mut Store<CallState>,
        _instance: &Instance,
        _parameters: v2::KeyValues,
    ) -> R<Vec<String>> {
        unsupported("validate-parameters")
    }

    async fn get_pool(
        &self,
        _store: &mut Store<CallState>,
        _instance: &Instance,
        _parameters: v2::KeyValues,
    ) -> R<v2::PoolSize> {
        unsupported("get-pool")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_free_device_path_is_refused_and_nvme_gets_one_portal() {
        let err = attachment(v1::Attachment::Disk(v1::DiskLocator::Path(
            "/dev/sda".into(),
        )))
        .unwrap_err();
        assert!(
            matches!(&err, v2::BackendError::Internal(m) if m.contains("/dev/sda")),
            "{err:?}"
        );
        let nvme = attachment(v1::Attachment::NvmeTcp(v1::NvmeTarget {
            address: "10.0.0.5".into(),
            port: 4420,
            nqn: "nqn.2000-02.com.mikrotik:pvc-1".into(),
            ctrl_loss_tmo_seconds: Some(-1),
            reconnect_delay_seconds: None,
            keep_alive_tmo_seconds: None,
        }))
        .unwrap();
        match nvme {
            v2::Attachment::NvmeTcp(t) => {
                assert_eq!(t.portals.len(), 1);
                assert_eq!(
                    (t.portals[0].address.as_str(), t.portals[0].port),
                    ("10.0.0.5", 4420)
                );
                assert_eq!(t.ctrl_loss_tmo_seconds, Some(-1));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn capability_flags_become_content_sources() {
        use v1::ControllerCapabilities as C;
        let info = backend_info(v1::BackendInfo {
            name: "old".into(),
            version: "1".into(),
            capabilities: C::SNAPSHOTS | C::CLONE | C::EXPAND,
            access_modes: vec![v1::AccessMode::SingleNodeWriter],
            volume_modes: v1::VolumeModes::FILESYSTEM,
            topology: true,
            parameters: vec![],
        });
        assert_eq!(
            info.content_sources,
            v2::ContentSources {
                snapshot: true,
                volume: true
            }
        );
        assert_eq!(
            info.volume_modes,
            v2::VolumeModes {
                filesystem: true,
                block: false
            }
        );
        assert!(info.topology);
    }
}
