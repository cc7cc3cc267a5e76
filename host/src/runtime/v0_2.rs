//! `modcsi:backend@0.2.x` (wit/0.2.1): the exports of a 0.2 component (the required core plus
//! whichever optional interfaces it has) and the conversion of its types to and from the host's
//! own (`volume::types`). The calls themselves come from the table in `operations.rs`.

use wasmtime::component::{InstancePre, Linker};

use super::backend::CallState;
use super::convert::{Convert, records, variants};
use super::operations::Optional;
use crate::volume::types as host;

mod bindings {
    wasmtime::component::bindgen!({
        // Every interface a 0.2 backend may export; a component has the core and any subset of
        // the rest, looked up one by one (`Exports::new`).
        inline: "
            package modcsi:host;
            world host-view {
                include modcsi:backend/backend@0.2.1;
                export modcsi:backend/publish@0.2.1;
                export modcsi:backend/expand@0.2.1;
                export modcsi:backend/list-volumes@0.2.1;
                export modcsi:backend/capacity@0.2.1;
                export modcsi:backend/snapshots@0.2.1;
                export modcsi:backend/node-identity@0.2.1;
                export modcsi:backend/get-volume@0.2.1;
                export modcsi:backend/locate@0.2.1;
            }
        ",
        path: "../wit/0.2.1",
        world: "host-view",
        imports: { default: trappable },
        exports: { default: async },
    });
}

use bindings::exports::modcsi::backend as ex;
pub(crate) use bindings::modcsi::backend::{config, host as host_info, ssh, store, types};

/// Export indices of a 0.2 component, resolved once at load.
pub struct Exports {
    pub(super) identity: ex::identity::GuestIndices,
    pub(super) controller: ex::controller::GuestIndices,
    pub(super) publish: Option<ex::publish::GuestIndices>,
    pub(super) expand: Option<ex::expand::GuestIndices>,
    pub(super) list_volumes: Option<ex::list_volumes::GuestIndices>,
    pub(super) capacity: Option<ex::capacity::GuestIndices>,
    pub(super) snapshots: Option<ex::snapshots::GuestIndices>,
    pub(super) node_identity: Option<ex::node_identity::GuestIndices>,
    pub(super) get_volume: Option<ex::get_volume::GuestIndices>,
    pub(super) locate: Option<ex::locate::GuestIndices>,
}

/// Looks an optional interface up: absent is `None`, present but malformed is an error.
fn optional<T>(
    pre: &InstancePre<CallState>,
    interface: &str,
    indices: impl FnOnce(&InstancePre<CallState>) -> wasmtime::Result<T>,
) -> wasmtime::Result<Option<T>> {
    let name = format!("modcsi:backend/{interface}@0.2.1");
    if pre.component().get_export_index(None, &name).is_none() {
        return Ok(None);
    }
    indices(pre).map(Some)
}

impl Exports {
    pub fn new(pre: &InstancePre<CallState>) -> wasmtime::Result<Self> {
        Ok(Self {
            identity: ex::identity::GuestIndices::new(pre)?,
            controller: ex::controller::GuestIndices::new(pre)?,
            publish: optional(pre, "publish", ex::publish::GuestIndices::new)?,
            expand: optional(pre, "expand", ex::expand::GuestIndices::new)?,
            list_volumes: optional(pre, "list-volumes", ex::list_volumes::GuestIndices::new)?,
            capacity: optional(pre, "capacity", ex::capacity::GuestIndices::new)?,
            snapshots: optional(pre, "snapshots", ex::snapshots::GuestIndices::new)?,
            node_identity: optional(pre, "node-identity", ex::node_identity::GuestIndices::new)?,
            get_volume: optional(pre, "get-volume", ex::get_volume::GuestIndices::new)?,
            locate: optional(pre, "locate", ex::locate::GuestIndices::new)?,
        })
    }

    pub fn offers(&self, interface: Optional) -> bool {
        match interface {
            Optional::Publish => self.publish.is_some(),
            Optional::Expand => self.expand.is_some(),
            Optional::ListVolumes => self.list_volumes.is_some(),
            Optional::Capacity => self.capacity.is_some(),
            Optional::Snapshots => self.snapshots.is_some(),
            Optional::NodeIdentity => self.node_identity.is_some(),
            Optional::GetVolume => self.get_volume.is_some(),
            Optional::Locate => self.locate.is_some(),
        }
    }
}

/// Links the 0.2 imports (the capabilities in `capabilities/`) for `CallState`.
pub fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    super::capabilities::add_v0_2_to_linker(linker)
}

records!(types, host:
    MountVolume { fs_type, mount_flags, volume_mount_group },
    Capability { access_type, access_mode },
    CapacityRange { required_bytes, limit_bytes },
    TopologyRequirement { requisite, preferred },
    CreateRequest { name, capacity, capabilities, parameters, secrets, source, accessibility },
    Portal { address, port },
    NvmeTarget {
        portals, nqn, namespace_id, ctrl_loss_tmo_seconds, reconnect_delay_seconds,
        keep_alive_tmo_seconds,
    },
    Volume { id, capacity_bytes, context, topology, attachment },
    PublishRequest { volume_id, node_id, node_attributes, capability, readonly, context, secrets },
    PublishResult { context, attachment },
    Validation { confirmed, message },
    ExpandResult { capacity_bytes, node_expansion_required },
    VolumePage { volumes, next_token },
    Snapshot { id, source_volume_id, size_bytes, created_unix_seconds, ready },
    SnapshotPage { snapshots, next_token },
    SnapshotFilter { source_volume_id, snapshot_id },
    Capacity { available_bytes, maximum_volume_bytes, minimum_volume_bytes },
    NodeInfo { node_id, topology, max_volumes, attributes },
    VolumeCondition { abnormal, message },
    VolumeStatus { capacity_bytes, condition, published_nodes },
    ParameterSpec { name, description, required },
    BackendInfo { name, version, access_modes, volume_modes, content_sources, topology, parameters },
);

variants!(types, host:
    Error => BackendError {
        InvalidArgument(m), NotFound(m), AlreadyExists(m), FailedPrecondition(m),
        ResourceExhausted(m), OutOfRange(m), Unavailable(m), Aborted(m), Internal(m),
        Unimplemented(m),
    },
    AccessMode {
        SingleNodeWriter, SingleNodeReaderOnly, MultiNodeReaderOnly, MultiNodeSingleWriter,
        MultiNodeMultiWriter, SingleNodeSingleWriter, SingleNodeMultiWriter,
    },
    AccessType { Block, Mount(m) },
    ContentSource { Snapshot(id), Volume(id) },
    DiskLocator { Serial(s), ById(s) },
    Attachment { NvmeTcp(t), Disk(d), LocalDir },
);

impl Convert<host::VolumeModes> for types::VolumeModes {
    fn convert(self) -> host::VolumeModes {
        host::VolumeModes {
            filesystem: self.contains(types::VolumeModes::FILESYSTEM),
            block: self.contains(types::VolumeModes::BLOCK),
        }
    }
}

impl Convert<types::VolumeModes> for host::VolumeModes {
    fn convert(self) -> types::VolumeModes {
        let mut modes = types::VolumeModes::empty();
        if self.filesystem {
            modes |= types::VolumeModes::FILESYSTEM;
        }
        if self.block {
            modes |= types::VolumeModes::BLOCK;
        }
        modes
    }
}

impl Convert<host::ContentSources> for types::ContentSources {
    fn convert(self) -> host::ContentSources {
        host::ContentSources {
            snapshot: self.contains(types::ContentSources::SNAPSHOT),
            volume: self.contains(types::ContentSources::VOLUME),
        }
    }
}

impl Convert<types::ContentSources> for host::ContentSources {
    fn convert(self) -> types::ContentSources {
        let mut sources = types::ContentSources::empty();
        if self.snapshot {
            sources |= types::ContentSources::SNAPSHOT;
        }
        if self.volume {
            sources |= types::ContentSources::VOLUME;
        }
        sources
    }
}
