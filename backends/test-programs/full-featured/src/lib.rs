//! Test backend built from the frozen `modcsi:backend@0.1.0` WIT, so the host's 0.1 adapter
//! stays under test. It declares publish/unpublish, expansion, capacity, listing, snapshots and node
//! identity, and keeps
//! its volumes in the host's `cache` capability, the only state that outlives the per-call
//! instances. Publishing answers with an NVMe/TCP attachment so the host's publish-context
//! encoding can be checked.

wit_bindgen::generate!({
    world: "backend",
    path: "../../../wit/0.1.0",
});

use exports::modcsi::backend::controller::Guest as Controller;
use exports::modcsi::backend::identity::Guest as Identity;
use modcsi::backend::cache;
use modcsi::backend::types::*;

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
    if ttl_ms == 0 {
        unindex("volumes", id);
    } else {
        index_add("volumes", id);
    }
}

fn index(name: &str) -> Vec<String> {
    cache::get(&format!("index/{name}"))
        .map(|v| {
            String::from_utf8_lossy(&v)
                .lines()
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn set_index(name: &str, ids: &[String]) {
    cache::set(&format!("index/{name}"), ids.join("\n").as_bytes(), DAY_MS);
}

fn index_add(name: &str, id: &str) {
    let mut ids = index(name);
    if !ids.iter().any(|i| i == id) {
        ids.push(id.to_owned());
        set_index(name, &ids);
    }
}

fn unindex(name: &str, id: &str) {
    let mut ids = index(name);
    ids.retain(|i| i != id);
    set_index(name, &ids);
}

/// One page of `items` from the offset in `token`; the next token is the following offset.
fn page<T>(items: Vec<T>, max_entries: u32, token: &str) -> Result<(Vec<T>, String), Error> {
    let start: usize = if token.is_empty() {
        0
    } else {
        token
            .parse()
            .map_err(|_| Error::Aborted(format!("invalid starting token {token:?}")))?
    };
    let take = if max_entries == 0 {
        usize::MAX
    } else {
        max_entries as usize
    };
    let total = items.len();
    let page: Vec<T> = items.into_iter().skip(start).take(take).collect();
    let end = start + page.len();
    Ok((
        page,
        if end < total {
            end.to_string()
        } else {
            String::new()
        },
    ))
}

fn snapshot(id: &str) -> Option<Snapshot> {
    let source = String::from_utf8(cache::get(&format!("snapshot/{id}"))?).ok()?;
    Some(Snapshot {
        id: id.to_owned(),
        size_bytes: load(&source).unwrap_or(0),
        source_volume_id: source,
        created_unix_seconds: 1_700_000_000,
        ready: true,
    })
}

impl Identity for FullFeatured {
    fn info() -> BackendInfo {
        BackendInfo {
            name: "full-featured".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            capabilities: ControllerCapabilities::PUBLISH_UNPUBLISH
                | ControllerCapabilities::EXPAND
                | ControllerCapabilities::GET_CAPACITY
                | ControllerCapabilities::LIST_VOLUMES
                | ControllerCapabilities::SNAPSHOTS
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
        let snapshots = index("snapshots")
            .into_iter()
            .filter_map(|id| snapshot(&id));
        if let Some(s) = snapshots
            .into_iter()
            .find(|s| s.source_volume_id == volume_id)
        {
            return Err(Error::FailedPrecondition(format!(
                "volume {volume_id} still has snapshot {}",
                s.id
            )));
        }
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

    fn list_volumes(max_entries: u32, starting_token: String) -> Result<VolumePage, Error> {
        let volumes = index("volumes")
            .into_iter()
            .filter_map(|id| {
                let capacity = load(&id).ok()?;
                Some(Volume {
                    id,
                    capacity_bytes: capacity,
                    context: vec![],
                    topology: vec![],
                    attachment: None,
                })
            })
            .collect();
        let (volumes, next_token) = page(volumes, max_entries, &starting_token)?;
        Ok(VolumePage {
            volumes,
            next_token,
        })
    }

    fn get_capacity(_: KeyValues) -> Result<u64, Error> {
        Ok(CAPACITY)
    }

    fn create_snapshot(
        source: String,
        name: String,
        _: KeyValues,
        _: KeyValues,
    ) -> Result<Snapshot, Error> {
        load(&source)?;
        let id = format!("snap-{name}");
        if let Some(existing) = snapshot(&id) {
            if existing.source_volume_id != source {
                return Err(Error::AlreadyExists(format!(
                    "snapshot {name} exists for another volume"
                )));
            }
            return Ok(existing);
        }
        cache::set(&format!("snapshot/{id}"), source.as_bytes(), DAY_MS);
        index_add("snapshots", &id);
        snapshot(&id).ok_or_else(|| Error::Internal("snapshot vanished".into()))
    }

    fn delete_snapshot(id: String, _: KeyValues) -> Result<(), Error> {
        cache::set(&format!("snapshot/{id}"), &[], 0);
        unindex("snapshots", &id);
        Ok(())
    }

    fn list_snapshots(
        max_entries: u32,
        starting_token: String,
        source_volume_id: String,
        snapshot_id: String,
    ) -> Result<SnapshotPage, Error> {
        let snapshots = index("snapshots")
            .iter()
            .filter(|id| snapshot_id.is_empty() || **id == snapshot_id)
            .filter_map(|id| snapshot(id))
            .filter(|s| source_volume_id.is_empty() || s.source_volume_id == source_volume_id)
            .collect();
        let (snapshots, next_token) = page(snapshots, max_entries, &starting_token)?;
        Ok(SnapshotPage {
            snapshots,
            next_token,
        })
    }

    fn node_identity() -> Result<NodeInfo, Error> {
        Ok(NodeInfo {
            node_id: None,
            topology: vec![("topology.test/zone".into(), "a".into())],
            max_volumes: 7,
        })
    }
}

export!(FullFeatured);
