//! Test backend: declares publish/unpublish, expansion, capacity and node identity, and keeps
//! its volumes in the host's `cache` capability, the only state that outlives the per-call
//! instances. Publishing answers with an NVMe/TCP attachment so the host's publish-context
//! encoding can be checked.

use modcsi_backend_sdk::cache;
use modcsi_backend_sdk::controller::Guest as Controller;
use modcsi_backend_sdk::identity::Guest as Identity;
use modcsi_backend_sdk::types::*;
use modcsi_backend_sdk::unimplemented;

const DAY_MS: u64 = 24 * 3600 * 1000;
const CAPACITY: u64 = 42 << 30;

struct FullFeatured;

fn key(id: &str) -> String {
    format!("volume/{id}")
}

fn load(id: &str) -> Result<u64, Error> {
    cache::get(&key(id))
        .filter(|v| v.len() == 8)
        .map(|v| u64::from_le_bytes(v.try_into().unwrap()))
        .ok_or_else(|| Error::NotFound(format!("volume {id} does not exist")))
}

fn store(id: &str, capacity: u64, ttl_ms: u64) {
    cache::set(&key(id), &capacity.to_le_bytes(), ttl_ms);
}

impl Identity for FullFeatured {
    fn info() -> BackendInfo {
        BackendInfo {
            name: "full-featured".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            capabilities: ControllerCapabilities::PUBLISH_UNPUBLISH
                | ControllerCapabilities::EXPAND
                | ControllerCapabilities::GET_CAPACITY
                | ControllerCapabilities::NODE_IDENTITY,
            access_modes: vec![
                AccessMode::SingleNodeWriter,
                AccessMode::SingleNodeMultiWriter,
            ],
            volume_modes: VolumeModes::FILESYSTEM | VolumeModes::BLOCK,
            topology: true,
            parameters: vec![],
        }
    }

    fn probe() -> Result<(), Error> {
        Ok(())
    }
}

impl Controller for FullFeatured {
    fn create_volume(request: CreateRequest) -> Result<Volume, Error> {
        let id = format!("ff-{}", request.name);
        let capacity = request.capacity.required_bytes;
        store(&id, capacity, DAY_MS);
        Ok(Volume {
            id,
            capacity_bytes: capacity,
            context: vec![("origin".into(), "full-featured".into())],
            topology: vec![vec![("topology.test/zone".into(), "a".into())]],
            attachment: None,
        })
    }

    fn delete_volume(volume_id: String, _: KeyValues) -> Result<(), Error> {
        store(&volume_id, 0, 0);
        Ok(())
    }

    fn validate_capabilities(
        volume_id: String,
        _: Vec<Capability>,
        _: KeyValues,
        _: KeyValues,
    ) -> Result<Validation, Error> {
        load(&volume_id)?;
        Ok(Validation {
            confirmed: true,
            message: String::new(),
        })
    }

    fn controller_publish(request: PublishRequest) -> Result<PublishResult, Error> {
        load(&request.volume_id)?;
        Ok(PublishResult {
            context: vec![("published-to".into(), request.node_id)],
            attachment: Some(Attachment::NvmeTcp(NvmeTarget {
                address: "192.0.2.10".into(),
                port: 4420,
                nqn: format!("nqn.2000-02.test:{}", request.volume_id),
                ctrl_loss_tmo_seconds: Some(-1),
                reconnect_delay_seconds: Some(5),
                keep_alive_tmo_seconds: None,
            })),
        })
    }

    fn controller_unpublish(volume_id: String, _: String, _: KeyValues) -> Result<(), Error> {
        load(&volume_id).map(|_| ())
    }

    fn expand_volume(
        volume_id: String,
        capacity: CapacityRange,
        _: KeyValues,
    ) -> Result<ExpandResult, Error> {
        let current = load(&volume_id)?;
        if capacity.required_bytes < current {
            return Err(Error::OutOfRange(format!(
                "volume {volume_id} cannot shrink below {current} bytes"
            )));
        }
        store(&volume_id, capacity.required_bytes, DAY_MS);
        Ok(ExpandResult {
            capacity_bytes: capacity.required_bytes,
            node_expansion_required: true,
        })
    }

    fn list_volumes(_: u32, _: String) -> Result<VolumePage, Error> {
        Err(unimplemented("list-volumes"))
    }

    fn get_capacity(_: KeyValues) -> Result<u64, Error> {
        Ok(CAPACITY)
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
        Ok(NodeInfo {
            node_id: None,
            topology: vec![("topology.test/zone".into(), "a".into())],
            max_volumes: 7,
        })
    }
}

modcsi_backend_sdk::export_backend!(FullFeatured);
