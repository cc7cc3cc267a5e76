//! The one table of backend operations. Each WIT export the host calls is declared once below,
//! in [`for_each_operation!`]: its name, its arguments and answer in the host's types, which
//! arguments are secrets, and how a 0.2 component is asked. Each consumer expands the table
//! with a macro of its own: the [`Calls`] trait every contract adapter implements (here), the
//! public `Backend` methods (`backend.rs`: a fresh instance, deadline, memory cap, the
//! backend's error value as `CallError::Refused`) and the 0.2 adapter (`v0_2.rs`). Adding an
//! operation touches this table and the older adapters (`v0_1.rs`) only.

use wasmtime::Store;
use wasmtime::component::Instance;

use super::call_state::CallState;
use crate::volume::types::*;

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
    Parameters,
    Pool,
}

impl Optional {
    pub const ALL: [Optional; 10] = [
        Optional::Publish,
        Optional::Expand,
        Optional::ListVolumes,
        Optional::Capacity,
        Optional::Snapshots,
        Optional::NodeIdentity,
        Optional::GetVolume,
        Optional::Locate,
        Optional::Parameters,
        Optional::Pool,
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
            Optional::Parameters => "parameters",
            Optional::Pool => "pool",
        }
    }
}

/// A call's outcome: a trap (outer error) or the backend's own answer.
pub(crate) type R<T> = wasmtime::Result<Result<T, BackendError>>;

/// Expands `$then!` over the table of operations. Each row: the operation, its WIT name, its
/// arguments and answer, the secret values to scrub from what the backend writes during the
/// call, and the 0.2 call (`core` interface, or the optional one in parentheses).
macro_rules! for_each_operation {
    ($then:ident) => {
        $then! {
            probe "probe" () -> (),
                secrets: no_secrets(),
                v0_2: core identity.call_probe();
            create_volume "create-volume" (request: CreateRequest) -> Volume,
                secrets: values(&request.secrets),
                v0_2: core controller.call_create_volume(&to_wit::<wit::CreateRequest>(request));
            delete_volume "delete-volume" (volume_id: String, secrets: KeyValues) -> (),
                secrets: values(&secrets),
                v0_2: core controller.call_delete_volume(&volume_id, &secrets);
            validate_capabilities "validate-capabilities" (volume_id: String,
                capabilities: Vec<Capability>, context: KeyValues, parameters: KeyValues,
                secrets: KeyValues) -> Validation,
                secrets: values(&secrets),
                v0_2: core controller.call_validate_capabilities(
                    &volume_id,
                    &to_wit::<Vec<wit::Capability>>(capabilities),
                    &context,
                    &parameters,
                    &secrets
                );
            controller_publish "controller-publish" (request: PublishRequest) -> PublishResult,
                secrets: values(&request.secrets),
                v0_2: (Publish) publish.call_controller_publish(&to_wit::<wit::PublishRequest>(request));
            controller_unpublish "controller-unpublish" (volume_id: String, node_id: String,
                secrets: KeyValues) -> (),
                secrets: values(&secrets),
                v0_2: (Publish) publish.call_controller_unpublish(&volume_id, &node_id, &secrets);
            expand_volume "expand-volume" (volume_id: String, capacity: CapacityRange,
                capability: Option<Capability>, secrets: KeyValues) -> ExpandResult,
                secrets: values(&secrets),
                v0_2: (Expand) expand.call_expand_volume(
                    &volume_id,
                    to_wit(capacity),
                    to_wit::<Option<wit::Capability>>(capability).as_ref(),
                    &secrets
                );
            list_volumes "list-volumes" (max_entries: u32, starting_token: String) -> VolumePage,
                secrets: no_secrets(),
                v0_2: (ListVolumes) list_volumes.call_list_volumes(max_entries, &starting_token);
            get_capacity "get-capacity" (parameters: KeyValues, capabilities: Vec<Capability>,
                topology: Option<Topology>) -> Capacity,
                secrets: no_secrets(),
                v0_2: (Capacity) capacity.call_get_capacity(
                    &parameters,
                    &to_wit::<Vec<wit::Capability>>(capabilities),
                    topology.as_ref()
                );
            create_snapshot "create-snapshot" (source_volume_id: String, name: String,
                parameters: KeyValues, secrets: KeyValues) -> Snapshot,
                secrets: values(&secrets),
                v0_2: (Snapshots) snapshots.call_create_snapshot(
                    &source_volume_id,
                    &name,
                    &parameters,
                    &secrets
                );
            delete_snapshot "delete-snapshot" (snapshot_id: String, secrets: KeyValues) -> (),
                secrets: values(&secrets),
                v0_2: (Snapshots) snapshots.call_delete_snapshot(&snapshot_id, &secrets);
            list_snapshots "list-snapshots" (max_entries: u32, starting_token: String,
                filter: SnapshotFilter, secrets: KeyValues) -> SnapshotPage,
                secrets: values(&secrets),
                v0_2: (Snapshots) snapshots.call_list_snapshots(
                    max_entries,
                    &starting_token,
                    &to_wit::<wit::SnapshotFilter>(filter),
                    &secrets
                );
            node_identity "node-identity" () -> NodeInfo,
                secrets: no_secrets(),
                v0_2: (NodeIdentity) node_identity.call_node_identity();
            get_volume "get-volume" (volume_id: String) -> VolumeStatus,
                secrets: no_secrets(),
                v0_2: (GetVolume) get_volume.call_get_volume(&volume_id);
            locate "locate" (volume_id: String, context: KeyValues) -> Attachment,
                secrets: no_secrets(),
                v0_2: (Locate) locate.call_locate(&volume_id, &context);
            validate_parameters "validate-parameters" (parameters: KeyValues) -> Vec<String>,
                secrets: no_secrets(),
                v0_2: (Parameters) parameters.call_validate_parameters(&parameters);
            get_pool "get-pool" (parameters: KeyValues) -> PoolSize,
                secrets: no_secrets(),
                v0_2: (Pool) pool.call_get_pool(&parameters);
        }
    };
}

pub(crate) use for_each_operation;

macro_rules! calls_trait {
    ($(
        $name:ident $op:literal ($($arg:ident: $ty:ty),*) -> $ret:ty,
            secrets: $secrets:expr,
            v0_2: $kind:tt $iface:ident . $call:ident($($warg:expr),*);
    )*) => {
        /// What the host can ask of a component, whatever contract version it was built for:
        /// one function per operation, on a freshly instantiated component.
        #[allow(clippy::too_many_arguments)]
        pub(crate) trait Calls {
            async fn info(
                &self,
                store: &mut Store<CallState>,
                instance: &Instance,
            ) -> wasmtime::Result<BackendInfo>;
            $(async fn $name(
                &self,
                store: &mut Store<CallState>,
                instance: &Instance,
                $($arg: $ty),*
            ) -> R<$ret>;)*
        }
    };
}

for_each_operation!(calls_trait);
