//! `modcsi:backend@0.2.x` (wit/0.2.1): the host's own types, and the exports of a 0.2 component,
//! the required core plus whichever optional interfaces it has.

use wasmtime::Store;
use wasmtime::component::{Instance, InstancePre, Linker};

use super::backend::CallState;
use super::exports::{Calls, Optional, R};

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
pub use bindings::modcsi::backend::{config, host, ssh, store, types};
use types::*;

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

fn absent<T>(operation: &str) -> R<T> {
    Ok(Err(Error::Unimplemented(format!(
        "the backend does not export {operation}"
    ))))
}

/// Calls an optional interface's function, or answers UNIMPLEMENTED when it is absent.
macro_rules! optional_call {
    ($self:ident, $field:ident, $store:ident, $instance:ident, $op:literal, $call:ident($($arg:expr),*)) => {
        match &$self.$field {
            Some(indices) => {
                indices.load(&mut *$store, $instance)?.$call(&mut *$store, $($arg),*).await
            }
            None => absent($op),
        }
    };
}

impl Calls for Exports {
    async fn info(
        &self,
        store: &mut Store<CallState>,
        instance: &Instance,
    ) -> wasmtime::Result<BackendInfo> {
        self.identity
            .load(&mut *store, instance)?
            .call_info(&mut *store)
            .await
    }

    async fn probe(&self, store: &mut Store<CallState>, instance: &Instance) -> R<()> {
        self.identity
            .load(&mut *store, instance)?
            .call_probe(&mut *store)
            .await
    }

    async fn create_volume(
        &self,
        store: &mut Store<CallState>,
        instance: &Instance,
        request: CreateRequest,
    ) -> R<Volume> {
        self.controller
            .load(&mut *store, instance)?
            .call_create_volume(&mut *store, &request)
            .await
    }

    async fn delete_volume(
        &self,
        store: &mut Store<CallState>,
        instance: &Instance,
        volume_id: String,
        secrets: KeyValues,
    ) -> R<()> {
        self.controller
            .load(&mut *store, instance)?
            .call_delete_volume(&mut *store, &volume_id, &secrets)
            .await
    }

    async fn validate_capabilities(
        &self,
        store: &mut Store<CallState>,
        instance: &Instance,
        volume_id: String,
        capabilities: Vec<Capability>,
        context: KeyValues,
        parameters: KeyValues,
        secrets: KeyValues,
    ) -> R<Validation> {
        self.controller
            .load(&mut *store, instance)?
            .call_validate_capabilities(
                &mut *store,
                &volume_id,
                &capabilities,
                &context,
                &parameters,
                &secrets,
            )
            .await
    }

    async fn controller_publish(
        &self,
        store: &mut Store<CallState>,
        instance: &Instance,
        request: PublishRequest,
    ) -> R<PublishResult> {
        optional_call!(
            self,
            publish,
            store,
            instance,
            "publish",
            call_controller_publish(&request)
        )
    }

    async fn controller_unpublish(
        &self,
        store: &mut Store<CallState>,
        instance: &Instance,
        volume_id: String,
        node_id: String,
        secrets: KeyValues,
    ) -> R<()> {
        optional_call!(
            self,
            publish,
            store,
            instance,
            "publish",
            call_controller_unpublish(&volume_id, &node_id, &secrets)
        )
    }

    async fn expand_volume(
        &self,
        store: &mut Store<CallState>,
        instance: &Instance,
        volume_id: String,
        capacity: CapacityRange,
        capability: Option<Capability>,
        secrets: KeyValues,
    ) -> R<ExpandResult> {
        optional_call!(
            self,
            expand,
            store,
            instance,
            "expand",
            call_expand_volume(&volume_id, capacity, capability.as_ref(), &secrets)
        )
    }

    async fn list_volumes(
        &self,
        store: &mut Store<CallState>,
        instance: &Instance,
        max_entries: u32,
        starting_token: String,
    ) -> R<VolumePage> {
        optional_call!(
            self,
            list_volumes,
            store,
            instance,
            "list-volumes",
            call_list_volumes(max_entries, &starting_token)
        )
    }

    async fn get_capacity(
        &self,
        store: &mut Store<CallState>,
        instance: &Instance,
        parameters: KeyValues,
        capabilities: Vec<Capability>,
        topology: Option<Topology>,
    ) -> R<Capacity> {
        optional_call!(
            self,
            capacity,
            store,
            instance,
            "capacity",
            call_get_capacity(&parameters, &capabilities, topology.as_ref())
        )
    }

    async fn create_snapshot(
        &self,
        store: &mut Store<CallState>,
        instance: &Instance,
        source_volume_id: String,
        name: String,
        parameters: KeyValues,
        secrets: KeyValues,
    ) -> R<Snapshot> {
        optional_call!(
            self,
            snapshots,
            store,
            instance,
            "snapshots",
            call_create_snapshot(&source_volume_id, &name, &parameters, &secrets)
        )
    }

    async fn delete_snapshot(
        &self,
        store: &mut Store<CallState>,
        instance: &Instance,
        snapshot_id: String,
        secrets: KeyValues,
    ) -> R<()> {
        optional_call!(
            self,
            snapshots,
            store,
            instance,
            "snapshots",
            call_delete_snapshot(&snapshot_id, &secrets)
        )
    }

    async fn list_snapshots(
        &self,
        store: &mut Store<CallState>,
        instance: &Instance,
        max_entries: u32,
        starting_token: String,
        filter: SnapshotFilter,
        secrets: KeyValues,
    ) -> R<SnapshotPage> {
        optional_call!(
            self,
            snapshots,
            store,
            instance,
            "snapshots",
            call_list_snapshots(max_entries, &starting_token, &filter, &secrets)
        )
    }

    async fn node_identity(
        &self,
        store: &mut Store<CallState>,
        instance: &Instance,
    ) -> R<NodeInfo> {
        optional_call!(
            self,
            node_identity,
            store,
            instance,
            "node-identity",
            call_node_identity()
        )
    }

    async fn get_volume(
        &self,
        store: &mut Store<CallState>,
        instance: &Instance,
        volume_id: String,
    ) -> R<VolumeStatus> {
        optional_call!(
            self,
            get_volume,
            store,
            instance,
            "get-volume",
            call_get_volume(&volume_id)
        )
    }

    async fn locate(
        &self,
        store: &mut Store<CallState>,
        instance: &Instance,
        volume_id: String,
        context: KeyValues,
    ) -> R<Attachment> {
        optional_call!(
            self,
            locate,
            store,
            instance,
            "locate",
            call_locate(&volume_id, &context)
        )
    }
}
