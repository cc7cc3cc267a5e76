//! node-local-cache: every volume is a scratch directory that exists separately on each node
//! that publishes it. The backend only names volumes; the host creates and removes the
//! directories (`attachment::local-dir`). Volumes carry no topology, so a pod may land anywhere.
//! What `info` declares (filesystem only, no snapshots or clones) the host enforces for every
//! backend, so the calls below only see requests this backend can serve.

use modcsi_backend_sdk::controller::Guest as Controller;
use modcsi_backend_sdk::identity::Guest as Identity;
use modcsi_backend_sdk::types::{
    AccessMode, Attachment, BackendInfo, Capability, CapacityRange, ControllerCapabilities,
    CreateRequest, Error, ExpandResult, KeyValues, LogLevel, NodeInfo, PublishRequest,
    PublishResult, Snapshot, SnapshotPage, Validation, Volume, VolumeModes, VolumePage,
};
use modcsi_backend_sdk::{log_at, unimplemented};
use uuid::Uuid;

/// Namespace for the deterministic volume ids (UUID v5 of the request name).
const ID_NAMESPACE: Uuid = Uuid::NAMESPACE_OID;
const ID_PREFIX: &str = "nlc-";

struct NodeLocalCache;

fn volume_id(name: &str) -> String {
    format!(
        "{ID_PREFIX}{}",
        Uuid::new_v5(&ID_NAMESPACE, name.as_bytes())
    )
}

fn is_our_id(id: &str) -> bool {
    id.strip_prefix(ID_PREFIX)
        .is_some_and(|uuid| Uuid::try_parse(uuid).is_ok_and(|u| u.get_version_num() == 5))
}

impl Identity for NodeLocalCache {
    fn info() -> BackendInfo {
        BackendInfo {
            name: "node-local-cache".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            capabilities: ControllerCapabilities::empty(),
            access_modes: vec![
                AccessMode::SingleNodeWriter,
                AccessMode::SingleNodeReaderOnly,
                AccessMode::MultiNodeReaderOnly,
                AccessMode::MultiNodeSingleWriter,
                AccessMode::MultiNodeMultiWriter,
                AccessMode::SingleNodeSingleWriter,
                AccessMode::SingleNodeMultiWriter,
            ],
            volume_modes: VolumeModes::FILESYSTEM,
            topology: false,
            parameters: vec![],
        }
    }

    fn probe() -> Result<(), Error> {
        Ok(())
    }
}

impl Controller for NodeLocalCache {
    fn create_volume(request: CreateRequest) -> Result<Volume, Error> {
        let id = volume_id(&request.name);
        log_at(
            LogLevel::Debug,
            "volume named",
            &[("name", &request.name), ("volume", &id)],
        );
        Ok(Volume {
            id,
            capacity_bytes: request.capacity.required_bytes,
            context: vec![],
            topology: vec![],
            attachment: Some(Attachment::LocalDir),
        })
    }

    fn delete_volume(_volume_id: String, _secrets: KeyValues) -> Result<(), Error> {
        // Nothing exists outside the nodes; the host removes the local directories.
        Ok(())
    }

    fn validate_capabilities(
        volume_id: String,
        _capabilities: Vec<Capability>,
        _context: KeyValues,
        _parameters: KeyValues,
    ) -> Result<Validation, Error> {
        if !is_our_id(&volume_id) {
            return Err(Error::NotFound(format!(
                "{volume_id} is not a node-local-cache volume id"
            )));
        }
        Ok(Validation {
            confirmed: true,
            message: String::new(),
        })
    }

    fn controller_publish(_request: PublishRequest) -> Result<PublishResult, Error> {
        Err(unimplemented("controller-publish"))
    }

    fn controller_unpublish(_: String, _: String, _: KeyValues) -> Result<(), Error> {
        Err(unimplemented("controller-unpublish"))
    }

    fn expand_volume(_: String, _: CapacityRange, _: KeyValues) -> Result<ExpandResult, Error> {
        Err(unimplemented("expand-volume"))
    }

    fn list_volumes(_: u32, _: String) -> Result<VolumePage, Error> {
        Err(unimplemented("list-volumes"))
    }

    fn get_capacity(_: KeyValues) -> Result<u64, Error> {
        Err(unimplemented("get-capacity"))
    }

    fn create_snapshot(
        _: String,
        _: String,
        _: KeyValues,
        _: KeyValues,
    ) -> Result<Snapshot, Error> {
        Err(unimplemented("create-snapshot"))
    }

    fn delete_snapshot(_: String, _: KeyValues) -> Result<(), Error> {
        Err(unimplemented("delete-snapshot"))
    }

    fn list_snapshots(_: u32, _: String, _: String, _: String) -> Result<SnapshotPage, Error> {
        Err(unimplemented("list-snapshots"))
    }

    fn node_identity() -> Result<NodeInfo, Error> {
        Err(unimplemented("node-identity"))
    }
}

modcsi_backend_sdk::export_backend!(NodeLocalCache);
