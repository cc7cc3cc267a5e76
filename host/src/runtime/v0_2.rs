//! `modcsi:backend@0.2.x` (wit/0.2.3): the exports of a 0.2 component (the required core plus
//! whichever optional interfaces it has) and the conversion of its types to and from the host's
//! own (`volume::types`). The calls themselves come from the table in `operations.rs`.

use wasmtime::Store;
use wasmtime::component::{Instance, InstancePre};

use super::call_state::CallState;
use super::convert::{Convert, records, variants};
use super::operations::{Calls, Optional, R, for_each_operation};
use crate::volume::types as host;
use crate::volume::types::*;
use types as wit;

mod bindings {
    wasmtime::component::bindgen!({
        // Every modcsi interface a 0.2 backend may import or export (wasi:http is linked from
        // wasmtime-wasi-http); a component has the core and any subset of the optional
        // exports, looked up one by one (`Exports::new`).
        inline: "
            package modcsi:host;
            world host-view {
                import modcsi:backend/log@0.2.3;
                import modcsi:backend/cache@0.2.3;
                import modcsi:backend/config@0.2.3;
                import modcsi:backend/store@0.2.3;
                import modcsi:backend/host@0.2.3;
                import modcsi:backend/ssh@0.2.3;
                import modcsi:backend/node@0.2.3;
                export modcsi:backend/identity@0.2.3;
                export modcsi:backend/controller@0.2.3;
                export modcsi:backend/publish@0.2.3;
                export modcsi:backend/expand@0.2.3;
                export modcsi:backend/list-volumes@0.2.3;
                export modcsi:backend/capacity@0.2.3;
                export modcsi:backend/snapshots@0.2.3;
                export modcsi:backend/node-identity@0.2.3;
                export modcsi:backend/get-volume@0.2.3;
                export modcsi:backend/locate@0.2.3;
                export modcsi:backend/parameters@0.2.3;
                export modcsi:backend/pool@0.2.3;
            }
        ",
        path: "../wit/0.2.3",
        world: "host-view",
        imports: { default: trappable },
        exports: { default: async },
    });
}

use bindings::exports::modcsi::backend as ex;
pub(crate) use bindings::modcsi::backend::{config, host as host_info, node, ssh, store, types};
use ex::pool as pool_types;

/// Export indices of a 0.2 component, resolved once at load.
pub struct Exports {
    identity: ex::identity::GuestIndices,
    controller: ex::controller::GuestIndices,
    publish: Option<ex::publish::GuestIndices>,
    expand: Option<ex::expand::GuestIndices>,
    list_volumes: Option<ex::list_volumes::GuestIndices>,
    capacity: Option<ex::capacity::GuestIndices>,
    snapshots: Option<ex::snapshots::GuestIndices>,
    node_identity: Option<ex::node_identity::GuestIndices>,
    get_volume: Option<ex::get_volume::GuestIndices>,
    locate: Option<ex::locate::GuestIndices>,
    parameters: Option<ex::parameters::GuestIndices>,
    pool: Option<ex::pool::GuestIndices>,
}

/// Looks an optional interface up: absent is `None`, present but malformed is an error.
fn optional<T>(
    pre: &InstancePre<CallState>,
    interface: &str,
    indices: impl FnOnce(&InstancePre<CallState>) -> wasmtime::Result<T>,
) -> wasmtime::Result<Option<T>> {
    let name = format!("modcsi:backend/{interface}@0.2.3");
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
            parameters: optional(pre, "parameters", ex::parameters::GuestIndices::new)?,
            pool: optional(pre, "pool", ex::pool::GuestIndices::new)?,
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
            Optional::Parameters => self.parameters.is_some(),
            Optional::Pool => self.pool.is_some(),
        }
    }
}

/// A host value as a 0.2 one (the target named where inference cannot see it).
fn to_wit<T>(value: impl Convert<T>) -> T {
    value.convert()
}

/// The 0.2 adapter: each operation of the table called on the component's export, its
/// arguments and answer converted at this edge; an optional interface the component does not
/// export answers UNIMPLEMENTED.
macro_rules! v0_2_calls {
    ($(
        $name:ident $op:literal ($($arg:ident: $ty:ty),*) -> $ret:ty,
            secrets: $secrets:expr,
            v0_2: $kind:tt $iface:ident . $call:ident($($warg:expr),*);
    )*) => {
        impl Calls for Exports {
            async fn info(
                &self,
                store: &mut Store<CallState>,
                instance: &Instance,
            ) -> wasmtime::Result<BackendInfo> {
                let info = self.identity.load(&mut *store, instance)?.call_info(&mut *store).await?;
                Ok(info.convert())
            }
            $(
                async fn $name(
                    &self,
                    store: &mut Store<CallState>,
                    instance: &Instance,
                    $($arg: $ty),*
                ) -> R<$ret> {
                    v0_2_calls!(@call $kind self store instance $iface $call ($($warg),*))
                }
            )*
        }
    };
    (@call core $self:ident $store:ident $instance:ident $iface:ident $call:ident ($($warg:expr),*)) => {{
        let answer = $self.$iface.load(&mut *$store, $instance)?.$call(&mut *$store, $($warg),*).await?;
        Ok(answer.convert())
    }};
    (@call ($optional:ident) $self:ident $store:ident $instance:ident $iface:ident $call:ident ($($warg:expr),*)) => {{
        match &$self.$iface {
            Some(indices) => {
                let answer = indices.load(&mut *$store, $instance)?.$call(&mut *$store, $($warg),*).await?;
                Ok(answer.convert())
            }
            None => Ok(Err(BackendError::Unimplemented(format!(
                "the backend does not export {}",
                Optional::$optional.name()
            )))),
        }
    }};
}

for_each_operation!(v0_2_calls);

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

records!(pool_types, host: PoolSize { total_bytes, free_bytes });

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
