//! Test backend for `modcsi backend check`: exports every optional interface and keeps every
//! rule of the checker, except the one named by the configuration key `break` (a rule id),
//! which it breaks in the way an author most likely would. Volumes and snapshots are records
//! in the host's store. It declares one required StorageClass parameter, `flavour`.

use modcsi_backend_sdk::types::*;
use modcsi_backend_sdk::{config, lookup, page, store};

struct CheckBreaker;

const MODES: [AccessMode; 2] = [
    AccessMode::SingleNodeWriter,
    AccessMode::MultiNodeMultiWriter,
];
const MAX_BYTES: u64 = 1 << 40;

fn breaks(rule: &str) -> bool {
    config::get("break").as_deref() == Some(rule)
}

fn get(key: &str) -> Result<Option<String>, Error> {
    Ok(store::get(key)?.map(|e| String::from_utf8_lossy(&e.value).into_owned()))
}

/// Every key under `prefix`, through as many pages of `list-keys` as it takes (the host answers
/// at most 1,000 keys a call).
fn all_keys(prefix: &str) -> Result<Vec<String>, Error> {
    let mut keys: Vec<String> = vec![];
    loop {
        let after = keys.last().cloned().unwrap_or_default();
        let page = store::list_keys(prefix, &after, 1000)?;
        if page.is_empty() {
            return Ok(keys);
        }
        keys.extend(page);
    }
}

fn capacity(id: &str) -> Result<u64, Error> {
    get(&format!("volume/{id}"))?
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Error::NotFound(format!("no volume {id}")))
}

fn volume(id: String, capacity_bytes: u64) -> Volume {
    Volume {
        id,
        capacity_bytes,
        context: vec![],
        topology: vec![],
        attachment: Some(Attachment::LocalDir),
    }
}

/// A number that grows with every call that asks: makes ids that change between calls.
fn counter() -> Result<u64, Error> {
    let current = store::get("counter")?;
    let n = current
        .as_ref()
        .and_then(|e| String::from_utf8_lossy(&e.value).parse().ok())
        .unwrap_or(0u64)
        + 1;
    store::put(
        "counter",
        n.to_string().as_bytes(),
        current.map(|e| e.version),
    )?;
    Ok(n)
}

impl modcsi_backend_sdk::identity::Guest for CheckBreaker {
    fn info() -> BackendInfo {
        let flavour = ParameterSpec {
            name: "flavour".into(),
            description: "any value; required".into(),
            required: true,
        };
        BackendInfo {
            name: "check-breaker".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            access_modes: MODES.into(),
            volume_modes: VolumeModes::FILESYSTEM,
            content_sources: ContentSources::empty(),
            topology: breaks("declarations-match"),
            parameters: match breaks("describes-itself") {
                true => vec![flavour.clone(), flavour],
                false => vec![flavour],
            },
        }
    }

    fn probe() -> Result<(), Error> {
        match breaks("probe") {
            true => Err(Error::Unavailable("the storage does not answer".into())),
            false => Ok(()),
        }
    }
}

impl modcsi_backend_sdk::controller::Guest for CheckBreaker {
    fn create_volume(request: CreateRequest) -> Result<Volume, Error> {
        if lookup(&request.parameters, "flavour").is_none() && !breaks("required-parameters") {
            return Err(Error::InvalidArgument(
                "parameter flavour is required".into(),
            ));
        }
        let bytes = request.capacity.required_bytes.max(1 << 20);
        if bytes > MAX_BYTES {
            return Err(match breaks("huge-volume") {
                true => Error::Internal("the size overflowed".into()),
                false => Error::OutOfRange(format!("at most {MAX_BYTES} bytes")),
            });
        }
        let mut id = format!("cb-{}", request.name);
        if breaks("create-idempotent") {
            id = format!("{id}-{}", counter()?);
        }
        if get(&format!("volume/{id}"))?.is_none() {
            store::put(&format!("volume/{id}"), bytes.to_string().as_bytes(), None)?;
        }
        let answered = match breaks("create") {
            true => bytes / 2,
            false => bytes,
        };
        Ok(volume(id, answered))
    }

    fn delete_volume(volume_id: String, _: KeyValues) -> Result<(), Error> {
        let key = format!("volume/{volume_id}");
        if breaks("delete") && get(&key)?.is_none() {
            return Err(Error::FailedPrecondition(format!(
                "{volume_id} is already deleted"
            )));
        }
        Ok(store::delete(&key, None)?)
    }

    fn validate_capabilities(
        volume_id: String,
        capabilities: Vec<Capability>,
        _: KeyValues,
        _: KeyValues,
        _: KeyValues,
    ) -> Result<Validation, Error> {
        if capacity(&volume_id).is_err() && !breaks("validate-unknown") {
            return Err(Error::NotFound(format!("no volume {volume_id}")));
        }
        Ok(Validation {
            confirmed: !breaks("validate")
                && capabilities.iter().all(|c| MODES.contains(&c.access_mode)),
            message: String::new(),
        })
    }
}

impl modcsi_backend_sdk::locate::Guest for CheckBreaker {
    fn locate(volume_id: String, _: KeyValues) -> Result<Attachment, Error> {
        capacity(&volume_id)?;
        Ok(match breaks("locate") {
            true => Attachment::Disk(DiskLocator::ById(format!("virtio-{volume_id}"))),
            false => Attachment::LocalDir,
        })
    }
}

impl modcsi_backend_sdk::get_volume::Guest for CheckBreaker {
    fn get_volume(volume_id: String) -> Result<VolumeStatus, Error> {
        let capacity_bytes = match capacity(&volume_id) {
            Err(_) if breaks("get-volume") => 1,
            found => found?,
        };
        Ok(VolumeStatus {
            capacity_bytes,
            condition: None,
            published_nodes: vec![],
        })
    }
}

impl modcsi_backend_sdk::list_volumes::Guest for CheckBreaker {
    fn list_volumes(max_entries: u32, starting_token: String) -> Result<VolumePage, Error> {
        // This page's keys and one more (is there a next page?), read no further than that.
        let max = if max_entries == 0 {
            usize::MAX
        } else {
            max_entries as usize
        };
        let mut keys: Vec<String> = vec![];
        let mut after = match starting_token.as_str() {
            "" => String::new(),
            token => format!("volume/{token}"),
        };
        while keys.len() <= max {
            let page = store::list_keys("volume/", &after, 1000)?;
            let Some(last) = page.last() else { break };
            after = last.clone();
            keys.extend(page);
        }
        let more = keys.len() > max;
        keys.truncate(max);
        let mut volumes = vec![];
        for key in keys {
            let id = key["volume/".len()..].to_owned();
            volumes.push(volume(id.clone(), capacity(&id)?));
        }
        let next_token = match (more, volumes.last()) {
            (true, Some(last)) => last.id.clone(),
            _ => String::new(),
        };
        if breaks("list-volumes") && starting_token.is_empty() {
            volumes.insert(0, volume("cb-0-phantom".into(), 1));
        }
        Ok(VolumePage {
            volumes,
            next_token,
        })
    }
}

impl modcsi_backend_sdk::capacity::Guest for CheckBreaker {
    fn get_capacity(
        _: KeyValues,
        _: Vec<Capability>,
        _: Option<Topology>,
    ) -> Result<Capacity, Error> {
        Ok(Capacity {
            available_bytes: MAX_BYTES,
            maximum_volume_bytes: Some(MAX_BYTES),
            minimum_volume_bytes: Some(match breaks("capacity") {
                true => 2 * MAX_BYTES,
                false => 1 << 20,
            }),
        })
    }
}

impl modcsi_backend_sdk::pool::Guest for CheckBreaker {
    fn get_pool(_: KeyValues) -> Result<modcsi_backend_sdk::pool::PoolSize, Error> {
        Ok(modcsi_backend_sdk::pool::PoolSize {
            total_bytes: match breaks("pool") {
                // The volumes' sizes summed up, not the pool's: less than is free.
                true => MAX_BYTES / 2,
                false => 2 * MAX_BYTES,
            },
            free_bytes: MAX_BYTES,
        })
    }
}

impl modcsi_backend_sdk::node_identity::Guest for CheckBreaker {
    fn node_identity() -> Result<NodeInfo, Error> {
        Ok(NodeInfo {
            node_id: breaks("node-identity").then(|| "node/with/slashes".into()),
            topology: vec![],
            max_volumes: 0,
            attributes: vec![],
        })
    }
}

impl modcsi_backend_sdk::publish::Guest for CheckBreaker {
    fn controller_publish(request: PublishRequest) -> Result<PublishResult, Error> {
        if !breaks("publish-unknown") {
            capacity(&request.volume_id)?;
        }
        store::put(
            &format!("published/{}/{}", request.volume_id, request.node_id),
            b"",
            None,
        )
        .or_else(|e| match e {
            store::StoreError::Conflict(_) => Ok(0),
            e => Err(e),
        })?;
        Ok(PublishResult {
            context: vec![],
            attachment: None,
        })
    }

    fn controller_unpublish(volume_id: String, node_id: String, _: KeyValues) -> Result<(), Error> {
        let key = format!("published/{volume_id}/{node_id}");
        if breaks("publish") && get(&key)?.is_none() {
            return Err(Error::FailedPrecondition(format!(
                "{volume_id} is not published to {node_id}"
            )));
        }
        Ok(store::delete(&key, None)?)
    }
}

impl modcsi_backend_sdk::expand::Guest for CheckBreaker {
    fn expand_volume(
        volume_id: String,
        wanted: CapacityRange,
        _: Option<Capability>,
        _: KeyValues,
    ) -> Result<ExpandResult, Error> {
        let key = format!("volume/{volume_id}");
        let entry =
            store::get(&key)?.ok_or_else(|| Error::NotFound(format!("no volume {volume_id}")))?;
        let bytes = String::from_utf8_lossy(&entry.value)
            .parse::<u64>()
            .unwrap_or(0)
            .max(wanted.required_bytes);
        store::put(&key, bytes.to_string().as_bytes(), Some(entry.version))?;
        Ok(ExpandResult {
            capacity_bytes: match breaks("expand") {
                true => bytes / 2,
                false => bytes,
            },
            node_expansion_required: false,
        })
    }
}

impl modcsi_backend_sdk::snapshots::Guest for CheckBreaker {
    fn create_snapshot(
        source: String,
        name: String,
        _: KeyValues,
        _: KeyValues,
    ) -> Result<Snapshot, Error> {
        let size_bytes = capacity(&source)?;
        let mut id = format!("cs-{name}");
        if breaks("snapshots") {
            id = format!("{id}-{}", counter()?);
        }
        if get(&format!("snapshot/{id}"))?.is_none() {
            store::put(&format!("snapshot/{id}"), source.as_bytes(), None)?;
        }
        Ok(Snapshot {
            id,
            source_volume_id: source,
            size_bytes,
            created_unix_seconds: 0,
            ready: true,
        })
    }

    fn delete_snapshot(snapshot_id: String, _: KeyValues) -> Result<(), Error> {
        Ok(store::delete(&format!("snapshot/{snapshot_id}"), None)?)
    }

    fn list_snapshots(
        max_entries: u32,
        starting_token: String,
        filter: SnapshotFilter,
        _: KeyValues,
    ) -> Result<SnapshotPage, Error> {
        let mut snapshots = vec![];
        for key in all_keys("snapshot/")? {
            let id = key["snapshot/".len()..].to_owned();
            let Some(source) = get(&key)? else { continue };
            let wanted = (filter.snapshot_id.is_empty() || filter.snapshot_id == id)
                && (filter.source_volume_id.is_empty() || filter.source_volume_id == source);
            if wanted {
                snapshots.push(Snapshot {
                    size_bytes: capacity(&source).unwrap_or(0),
                    id,
                    source_volume_id: source,
                    created_unix_seconds: 0,
                    ready: true,
                });
            }
        }
        let (snapshots, next_token) = page(snapshots, |s| &s.id, max_entries, &starting_token);
        Ok(SnapshotPage {
            snapshots,
            next_token,
        })
    }
}

impl modcsi_backend_sdk::parameters::Guest for CheckBreaker {
    fn validate_parameters(parameters: KeyValues) -> Result<Vec<String>, Error> {
        use modcsi_backend_sdk::identity::Guest;
        if breaks("parameters") {
            // A stub: nothing is ever wrong.
            return Ok(vec![]);
        }
        modcsi_backend_sdk::params::problems(&parameters, &Self::info().parameters, |_| Ok(()))
    }
}

modcsi_backend_sdk::export_backend!(CheckBreaker);
modcsi_backend_sdk::export_locate!(CheckBreaker);
modcsi_backend_sdk::export_get_volume!(CheckBreaker);
modcsi_backend_sdk::export_list_volumes!(CheckBreaker);
modcsi_backend_sdk::export_capacity!(CheckBreaker);
modcsi_backend_sdk::export_node_identity!(CheckBreaker);
modcsi_backend_sdk::export_publish!(CheckBreaker);
modcsi_backend_sdk::export_expand!(CheckBreaker);
modcsi_backend_sdk::export_snapshots!(CheckBreaker);
modcsi_backend_sdk::export_parameters!(CheckBreaker);
modcsi_backend_sdk::export_pool!(CheckBreaker);
