//! What the host can ask of a backend, whatever WIT version it was built for. Each version
//! module (`v0_1`, `v0_2`) implements [`Calls`] over its own exports, in the 0.2 types.

use wasmtime::Store;
use wasmtime::component::Instance;

use super::backend::CallState;
use super::v0_2::types::*;

/// The optional exported interfaces of the 0.2 contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Optional {
    Publish,
    Expand,
    ListVolumes,
    Capacity,
    Snapshots,
    NodeIdentity,
    GetVolume,
    Locate,
}

impl Optional {
    pub const ALL: [Optional; 8] = [
        Optional::Publish,
        Optional::Expand,
        Optional::ListVolumes,
        Optional::Capacity,
        Optional::Snapshots,
        Optional::NodeIdentity,
        Optional::GetVolume,
        Optional::Locate,
    ];

    /// The interface's WIT name.
    pub fn name(self) -> &'static str {
        match self {
            Optional::Publish => "publish",
            Optional::Expand => "expand",
            Optional::ListVolumes => "list-volumes",
            Optional::Capacity => "capacity",
            Optional::Snapshots => "snapshots",
            Optional::NodeIdentity => "node-identity",
            Optional::GetVolume => "get-volume",
            Optional::Locate => "locate",
        }
    }
}

/// A call's outcome: a trap (outer error) or the backend's own answer.
pub(crate) type R<T> = wasmtime::Result<Result<T, Error>>;

/// One function per exported WIT function, on a freshly instantiated component.
#[allow(clippy::too_many_arguments)]
pub(crate) trait Calls {
    async fn info(
        &self,
        store: &mut Store<CallState>,
        instance: &Instance,
    ) -> wasmtime::Result<BackendInfo>;
    async fn probe(&self, store: &mut Store<CallState>, instance: &Instance) -> R<()>;
    async fn create_volume(
        &self,
        store: &mut Store<CallState>,
        instance: &Instance,
        request: CreateRequest,
    ) -> R<Volume>;
    async fn delete_volume(
        &self,
        store: &mut Store<CallState>,
        instance: &Instance,
        volume_id: String,
        secrets: KeyValues,
    ) -> R<()>;
    async fn validate_capabilities(
        &self,
        store: &mut Store<CallState>,
        instance: &Instance,
        volume_id: String,
        capabilities: Vec<Capability>,
        context: KeyValues,
        parameters: KeyValues,
        secrets: KeyValues,
    ) -> R<Validation>;
    async fn controller_publish(
        &self,
        store: &mut Store<CallState>,
        instance: &Instance,
        request: PublishRequest,
    ) -> R<PublishResult>;
    async fn controller_unpublish(
        &self,
        store: &mut Store<CallState>,
        instance: &Instance,
        volume_id: String,
        node_id: String,
        secrets: KeyValues,
    ) -> R<()>;
    async fn expand_volume(
        &self,
        store: &mut Store<CallState>,
        instance: &Instance,
        volume_id: String,
        capacity: CapacityRange,
        capability: Option<Capability>,
        secrets: KeyValues,
    ) -> R<ExpandResult>;
    async fn list_volumes(
        &self,
        store: &mut Store<CallState>,
        instance: &Instance,
        max_entries: u32,
        starting_token: String,
    ) -> R<VolumePage>;
    async fn get_capacity(
        &self,
        store: &mut Store<CallState>,
        instance: &Instance,
        parameters: KeyValues,
        capabilities: Vec<Capability>,
        topology: Option<Topology>,
    ) -> R<Capacity>;
    async fn create_snapshot(
        &self,
        store: &mut Store<CallState>,
        instance: &Instance,
        source_volume_id: String,
        name: String,
        parameters: KeyValues,
        secrets: KeyValues,
    ) -> R<Snapshot>;
    async fn delete_snapshot(
        &self,
        store: &mut Store<CallState>,
        instance: &Instance,
        snapshot_id: String,
        secrets: KeyValues,
    ) -> R<()>;
    async fn list_snapshots(
        &self,
        store: &mut Store<CallState>,
        instance: &Instance,
        max_entries: u32,
        starting_token: String,
        filter: SnapshotFilter,
        secrets: KeyValues,
    ) -> R<SnapshotPage>;
    async fn node_identity(&self, store: &mut Store<CallState>, instance: &Instance)
    -> R<NodeInfo>;
    async fn get_volume(
        &self,
        store: &mut Store<CallState>,
        instance: &Instance,
        volume_id: String,
    ) -> R<VolumeStatus>;
    async fn locate(
        &self,
        store: &mut Store<CallState>,
        instance: &Instance,
        volume_id: String,
        context: KeyValues,
    ) -> R<Attachment>;
}
