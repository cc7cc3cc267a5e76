//! modcsi backend for the Emma cloud: block volumes created, attached to the node's VM, grown and
//! deleted through Emma's public API (contract 0.2.2: the host's `http` capability holds the
//! API's address and the client credentials). The host finds the disk on the node, formats,
//! mounts and fences; this component only talks to the API.
//!
//! Long operations survive CSI retries and host restarts (`pending`): a volume takes minutes from
//! DRAFT to AVAILABLE, so CreateVolume records name → volume id in the durable store before and
//! after asking Emma for it, answers ABORTED ("in progress") while the volume is not ready, and
//! the provisioner's retry resumes the wait instead of creating a second volume. Attach and
//! detach need no record: the volume's own state at Emma says how far they got.
//!
//! A drop-in for the public emma-csi-driver: volume ids are Emma's numeric ids, the volume
//! context is `type`/`dataCenterId`, the publish context `devicePath`, and its existing PVs are
//! served through `locate`.
//!
//! Configuration (`--backend-config`): `emma.target` (the http target, default `emma`, whose
//! secrets `client-id` and `client-secret` are the API credentials), `emma.vm-id` (this node's
//! VM, when its address cannot find it), `emma.nodes.<node>` (a node name's VM, for the
//! controller), `emma.data-center` and `emma.type` (defaults for StorageClasses that name none).
//! StorageClass parameters: `type` (ssd, hdd, ssd-plus) and `dataCenterId`.

mod api;

use std::time::Duration;

use api::{Api, Retry, refused};
use modcsi_backend_sdk::http::Method;
use modcsi_backend_sdk::params::{Params, config_or};
use modcsi_backend_sdk::pending::{self, Step};
use modcsi_backend_sdk::time::parse_utc;
use modcsi_backend_sdk::types::{
    AccessMode, Attachment, BackendInfo, Capability, CapacityRange, ContentSources, CreateRequest,
    DiskLocator, Error, ExpandResult, KeyValues, NodeInfo, ParameterSpec, PublishRequest,
    PublishResult, Topology, Validation, Volume, VolumeModes, VolumePage, VolumeStatus,
};
use modcsi_backend_sdk::{config, err, lookup, node, page, put_if_absent, store, unix_seconds};
use serde_json::{Value, json};

const GIB: u64 = 1 << 30;
pub const TOPOLOGY_KEY: &str = "topology.csi.emma.ms/datacenter";
const TYPES: [&str; 3] = ["ssd", "hdd", "ssd-plus"];
/// Emma attaches at most this many data volumes to one VM (the public driver's figure).
const MAX_VOLUMES: u32 = 16;
const POLL: Duration = Duration::from_secs(2);

struct Emma;

fn api() -> Api {
    Api::new(config_or("emma.target", "emma"))
}

/// An Emma id (a volume's or a VM's): digits only, so it is safe in a path.
fn numeric<'a>(what: &str, id: &'a str) -> Result<&'a str, Error> {
    if !id.is_empty() && id.len() <= 19 && id.bytes().all(|b| b.is_ascii_digit()) {
        Ok(id)
    } else {
        Err(err!(
            NotFound,
            "{what} {id:?} is not an Emma id (digits only)"
        ))
    }
}

/// A data center id or a volume type, as it goes into a query string.
fn plain(what: &str, value: &str) -> Result<(), Error> {
    if !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(())
    } else {
        Err(err!(
            InvalidArgument,
            "{what} {value:?}: letters, digits, '-' and '_' only"
        ))
    }
}

/// The parts of an Emma volume this backend reads.
struct EmmaVolume {
    id: String,
    size_gb: u64,
    kind: String,
    status: String,
    attached_to: Option<String>,
    data_center: String,
}

impl EmmaVolume {
    fn from_json(v: &Value) -> Self {
        let text = |v: &Value| match v {
            Value::Number(n) => Some(n.to_string()),
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            _ => None,
        };
        Self {
            id: text(&v["id"]).unwrap_or_default(),
            size_gb: v["sizeGb"].as_u64().unwrap_or(0),
            kind: v["type"].as_str().unwrap_or_default().to_owned(),
            status: v["status"].as_str().unwrap_or_default().to_owned(),
            attached_to: text(&v["attachedToId"]),
            data_center: v["dataCenter"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        }
    }

    fn volume(&self) -> Volume {
        Volume {
            id: self.id.clone(),
            capacity_bytes: self.size_gb * GIB,
            context: vec![
                ("type".into(), self.kind.clone()),
                ("dataCenterId".into(), self.data_center.clone()),
            ],
            topology: vec![vec![(TOPOLOGY_KEY.into(), self.data_center.clone())]],
            attachment: Some(disk(&self.id)),
        }
    }
}

/// How the node finds a volume's disk: its by-id name on Emma's KVM VMs.
fn disk(id: &str) -> Attachment {
    Attachment::Disk(DiskLocator::ById(format!("virtio-{id}")))
}

/// The volume `id` as Emma shows it, `None` when Emma does not know it (or deleted it).
fn fetch(id: &str) -> Result<Option<EmmaVolume>, Error> {
    match api().get(&format!("/v1/volumes/{id}")) {
        Ok(v) => {
            let volume = EmmaVolume::from_json(&v);
            Ok((volume.status != "DELETED").then_some(volume))
        }
        Err(e) if e.status() == Some(404) => Ok(None),
        Err(e) => Err(refused(&format!("GET /v1/volumes/{id}"), e)),
    }
}

/// The data volume sizes (GB) Emma offers for a type in a data center, ascending.
fn offers(data_center: &str, kind: &str) -> Result<Vec<u64>, Error> {
    let mut sizes = Vec::new();
    for page in 0..20 {
        let path = format!(
            "/v1/volume-configs?isBootable=false&dataCenterId={data_center}&volumeType={kind}&page={page}&size=100"
        );
        let answer = api().get(&path).map_err(|e| refused(&path, e))?;
        for offer in answer["content"].as_array().into_iter().flatten() {
            if offer["dataCenterId"]
                .as_str()
                .is_none_or(|d| d == data_center)
                && offer["volumeType"].as_str().is_none_or(|t| t == kind)
                && let Some(gb) = offer["volumeGb"].as_u64()
            {
                sizes.push(gb);
            }
        }
        if answer["last"].as_bool().unwrap_or(true) {
            break;
        }
    }
    sizes.sort_unstable();
    sizes.dedup();
    Ok(sizes)
}

/// The smallest offered size holding `capacity`, or OUT_OF_RANGE listing the offers.
fn fit(capacity: &CapacityRange, data_center: &str, kind: &str) -> Result<u64, Error> {
    let sizes = offers(data_center, kind)?;
    let wanted = capacity.required_bytes.max(1).div_ceil(GIB);
    let limit = (capacity.limit_bytes > 0).then_some(capacity.limit_bytes / GIB);
    sizes
        .iter()
        .copied()
        .find(|&gb| gb >= wanted && limit.is_none_or(|l| gb <= l))
        .ok_or_else(|| {
            err!(
                OutOfRange,
                "no {kind} volume size in {data_center} holds {wanted} GiB{}; Emma offers {:?} GB",
                limit
                    .map(|l| format!(" within {l} GiB"))
                    .unwrap_or_default(),
                sizes
            )
        })
}

/// The data center: the parameter, the topology asked for, or the configured default; checked
/// against the API's list.
fn data_center(request: &CreateRequest) -> Result<String, Error> {
    let from_topology = request.accessibility.as_ref().and_then(|a| {
        a.preferred
            .iter()
            .chain(&a.requisite)
            .find_map(|t| lookup(t, TOPOLOGY_KEY).map(str::to_owned))
    });
    let dc = lookup(&request.parameters, "dataCenterId")
        .map(str::to_owned)
        .or(from_topology)
        .or_else(|| config::get("emma.data-center"))
        .ok_or_else(|| {
            err!(
                InvalidArgument,
                "no data center: set the StorageClass parameter dataCenterId (or emma.data-center)"
            )
        })?;
    known_data_center(&dc)?;
    Ok(dc)
}

/// `dc` is a plain id and one of the API's data centers.
fn known_data_center(dc: &str) -> Result<(), Error> {
    plain("dataCenterId", dc)?;
    let known = api()
        .get("/v1/data-centers")
        .map_err(|e| refused("GET /v1/data-centers", e))?;
    let ids: Vec<&str> = known
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["id"].as_str())
        .collect();
    if !ids.contains(&dc) {
        return Err(err!(
            InvalidArgument,
            "data center {dc:?} is not one of Emma's ({} known, e.g. {})",
            ids.len(),
            ids.iter().take(5).copied().collect::<Vec<_>>().join(", ")
        ));
    }
    Ok(())
}

/// The volume type: the parameter, emma.type, or ssd.
fn volume_type(parameters: &[(String, String)]) -> Result<String, Error> {
    Ok(Params::new(parameters)
        .or_config(&[("type", "emma.type")])
        .one_of("type", &TYPES)?
        .unwrap_or("ssd")
        .to_owned())
}

fn claim_key(id: &str) -> String {
    format!("volume/{id}")
}

/// Records that volume `id` belongs to the create of `name` (kept when already there).
fn claim(id: &str, name: &str) -> Result<(), Error> {
    put_if_absent(&claim_key(id), name.as_bytes()).map(drop)
}

fn create_key(name: &str) -> String {
    format!("create/{name}")
}

/// After a create that died between asking Emma and recording the answer: the one volume of the
/// recorded type, size and data center made since then that no record claims, if there is one.
fn recover(intent: &[u8]) -> Result<Option<Vec<u8>>, Error> {
    let intent: Value = serde_json::from_slice(intent)
        .map_err(|e| err!(Internal, "a create record that is not JSON: {e}"))?;
    let all = api()
        .get("/v1/volumes")
        .map_err(|e| refused("GET /v1/volumes", e))?;
    let mut found = Vec::new();
    for v in all.as_array().into_iter().flatten() {
        let volume = EmmaVolume::from_json(v);
        let matches = volume.kind == intent["type"].as_str().unwrap_or_default()
            && volume.data_center == intent["dataCenterId"].as_str().unwrap_or_default()
            && volume.size_gb == intent["volumeGb"].as_u64().unwrap_or(0)
            && volume.status != "DELETED"
            && created_since(v, intent["startedAt"].as_i64().unwrap_or(0));
        if matches && store::get(&claim_key(&volume.id))?.is_none() {
            found.push(volume.id);
        }
    }
    match found.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.clone().into_bytes())),
        many => Err(err!(
            Aborted,
            "an interrupted create may have made any of volumes {many:?}; none is claimed, so \
             none is adopted: delete the extra ones by hand"
        )),
    }
}

/// Whether Emma's `createdAt` ("2021-11-26 14:54:11", UTC) is at most a minute before `since`.
fn created_since(v: &Value, since: i64) -> bool {
    let Some(at) = v["createdAt"].as_str().and_then(parse_utc) else {
        return true;
    };
    at >= since - 60
}

/// Waits for a volume to reach `want` (and, when given, to be attached to `vm`), within the
/// call; FAILED ends the wait.
fn settle(id: &str, want: &str, vm: Option<&str>) -> Result<EmmaVolume, Error> {
    pending::wait(&format!("Emma volume {id}"), POLL, || {
        let volume = fetch(id)?.ok_or_else(|| err!(NotFound, "Emma volume {id} is gone"))?;
        if volume.status == "FAILED" {
            return Err(err!(Internal, "Emma reports volume {id} FAILED"));
        }
        if volume.status == want && (vm.is_none() || volume.attached_to.as_deref() == vm) {
            Ok(Step::Done(volume))
        } else {
            Ok(Step::Pending(format!(
                "{} {}",
                volume.status,
                volume
                    .attached_to
                    .as_deref()
                    .map(|vm| format!("attached to VM {vm}"))
                    .unwrap_or_default()
            )))
        }
    })
}

impl modcsi_backend_sdk::identity::Guest for Emma {
    fn info() -> BackendInfo {
        BackendInfo {
            name: "emma".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            // A disk attached to one VM: any number of writers on that node (ReadWriteOnce).
            access_modes: vec![
                AccessMode::SingleNodeWriter,
                AccessMode::SingleNodeSingleWriter,
                AccessMode::SingleNodeMultiWriter,
            ],
            volume_modes: VolumeModes::FILESYSTEM | VolumeModes::BLOCK,
            content_sources: ContentSources::empty(),
            topology: true,
            parameters: vec![
                ParameterSpec {
                    name: "type".into(),
                    description: "ssd, hdd or ssd-plus (default ssd, or emma.type)".into(),
                    required: false,
                },
                ParameterSpec {
                    name: "dataCenterId".into(),
                    description: "Emma data center, e.g. aws-eu-central-1 (default: the \
                                  topology asked for, or emma.data-center)"
                        .into(),
                    required: false,
                },
            ],
        }
    }

    fn probe() -> Result<(), Error> {
        api()
            .get("/v1/data-centers")
            .map(drop)
            .map_err(|e| refused("GET /v1/data-centers", e))
    }
}

impl modcsi_backend_sdk::controller::Guest for Emma {
    fn create_volume(request: CreateRequest) -> Result<Volume, Error> {
        if request.source.is_some() {
            return Err(err!(
                InvalidArgument,
                "Emma volumes cannot be created from a snapshot or another volume"
            ));
        }
        let kind = volume_type(&request.parameters)?;
        let key = create_key(&request.name);
        let id = match pending::started(&key)? {
            Some(id) => String::from_utf8_lossy(&id).into_owned(),
            None => {
                let dc = data_center(&request)?;
                let gb = fit(&request.capacity, &dc, &kind)?;
                let intent = json!({
                    "dataCenterId": dc, "volumeGb": gb, "type": kind, "startedAt": unix_seconds(),
                });
                let id = pending::once(&key, intent.to_string().as_bytes(), recover, || {
                    let body = json!({ "dataCenterId": dc, "volumeGb": gb, "volumeType": kind });
                    let made = api()
                        .call(Method::Post, "/v1/volumes", Some(&body), Retry::Once)
                        .map_err(|e| refused("POST /v1/volumes", e))?;
                    let id = EmmaVolume::from_json(&made).id;
                    if id.is_empty() {
                        return Err(err!(Unavailable, "emma: POST /v1/volumes answered no id"));
                    }
                    // Claimed at once, so no other create's recovery can adopt it.
                    claim(&id, &request.name)?;
                    Ok(id.into_bytes())
                })?;
                String::from_utf8_lossy(&id).into_owned()
            }
        };
        claim(&id, &request.name)?;
        let Some(volume) = fetch(&id)? else {
            // Deleted behind our back: forget it, so the retry creates a new one.
            pending::forget(&key)?;
            store::delete(&claim_key(&id), None)?;
            return Err(err!(
                Aborted,
                "Emma volume {id} made for {} is gone; the retry creates a new one",
                request.name
            ));
        };
        if volume.kind != kind
            || volume.size_gb * GIB < request.capacity.required_bytes
            || (request.capacity.limit_bytes > 0
                && volume.size_gb * GIB > request.capacity.limit_bytes)
        {
            return Err(err!(
                AlreadyExists,
                "volume {} exists as Emma volume {id} ({} GB {}), which this request does not fit",
                request.name,
                volume.size_gb,
                volume.kind
            ));
        }
        let ready = match settle(&id, "AVAILABLE", None) {
            Err(Error::Internal(m)) if m.contains("FAILED") => {
                // Emma gave up on it: remove it and the record, so a retry starts afresh.
                let _ = api().call(
                    Method::Delete,
                    &format!("/v1/volumes/{id}"),
                    None,
                    Retry::Safe,
                );
                pending::forget(&key)?;
                store::delete(&claim_key(&id), None)?;
                return Err(err!(
                    ResourceExhausted,
                    "Emma could not create a volume for {} ({m}); it was deleted",
                    request.name
                ));
            }
            other => other?,
        };
        Ok(ready.volume())
    }

    fn delete_volume(volume_id: String, _secrets: KeyValues) -> Result<(), Error> {
        let Ok(id) = numeric("volume", &volume_id) else {
            // Nothing Emma could know: deleting it is done.
            return Ok(());
        };
        if let Some(volume) = fetch(id)? {
            match volume.status.as_str() {
                "ACTIVE" => {
                    return Err(err!(
                        FailedPrecondition,
                        "Emma volume {id} is attached to VM {}",
                        volume.attached_to.unwrap_or_default()
                    ));
                }
                "DRAFT" | "BUSY" => {
                    return Err(err!(
                        Aborted,
                        "Emma volume {id} is {}; delete it once it settles",
                        volume.status
                    ));
                }
                _ => {}
            }
            let path = format!("/v1/volumes/{id}");
            match api().call(Method::Delete, &path, None, Retry::Safe) {
                Ok(_) => {}
                Err(e) if e.status() == Some(404) => {}
                Err(e) => return Err(refused(&format!("DELETE {path}"), e)),
            }
        }
        if let Some(name) = store::get(&claim_key(id))? {
            pending::forget(&create_key(&String::from_utf8_lossy(&name.value)))?;
            store::delete(&claim_key(id), None)?;
        }
        Ok(())
    }

    fn validate_capabilities(
        volume_id: String,
        capabilities: Vec<Capability>,
        _context: KeyValues,
        _parameters: KeyValues,
        _secrets: KeyValues,
    ) -> Result<Validation, Error> {
        let id = numeric("volume", &volume_id)?;
        if fetch(id)?.is_none() {
            return Err(err!(NotFound, "Emma volume {id} does not exist"));
        }
        let single = capabilities.iter().all(|c| {
            matches!(
                c.access_mode,
                AccessMode::SingleNodeWriter
                    | AccessMode::SingleNodeSingleWriter
                    | AccessMode::SingleNodeMultiWriter
            )
        });
        Ok(Validation {
            confirmed: single,
            message: if single {
                String::new()
            } else {
                "Emma volumes attach to one VM at a time".into()
            },
        })
    }
}

/// The VM behind a CSI node id: the id itself when numeric (what node-identity reports), else
/// `emma.nodes.<node>`; never guessed.
fn vm_of(node_id: &str, attributes: &KeyValues) -> Result<String, Error> {
    if let Some(vm) = lookup(attributes, "vm-id") {
        return Ok(numeric("VM", vm)?.to_owned());
    }
    if numeric("VM", node_id).is_ok() {
        return Ok(node_id.to_owned());
    }
    match config::get(&format!("emma.nodes.{node_id}")) {
        Some(vm) => Ok(numeric("VM", &vm)?.to_owned()),
        None => Err(err!(
            NotFound,
            "node {node_id:?}: no Emma VM: the node id is not numeric, the node reported no \
             vm-id, and emma.nodes.{node_id} is not configured"
        )),
    }
}

fn vm_action(vm: &str, action: &str, volume: &str) -> Result<(), Error> {
    let path = format!("/v1/vms/{vm}/actions");
    let body = json!({ "action": action, "volumeId": volume.parse::<u64>().unwrap_or(0) });
    api()
        .call(Method::Post, &path, Some(&body), Retry::WhenBusy)
        .map(drop)
        .map_err(|e| refused(&format!("POST {path} ({action} volume {volume})"), e))
}

impl modcsi_backend_sdk::publish::Guest for Emma {
    fn controller_publish(request: PublishRequest) -> Result<PublishResult, Error> {
        let id = numeric("volume", &request.volume_id)?;
        let vm = vm_of(&request.node_id, &request.node_attributes)?;
        let volume = fetch(id)?.ok_or_else(|| err!(NotFound, "Emma volume {id} does not exist"))?;
        match (volume.status.as_str(), volume.attached_to.as_deref()) {
            ("ACTIVE", Some(on)) if on == vm => {}
            (_, Some(on)) if on != vm => {
                return Err(err!(
                    FailedPrecondition,
                    "Emma volume {id} is attached to VM {on}, not {vm}"
                ));
            }
            ("AVAILABLE", None) => {
                // An attach whose answer was lost may have gone through: its effect decides.
                vm_action(&vm, "attach", id).or_else(|e| match fetch(id)? {
                    Some(v) if v.status == "BUSY" || v.attached_to.as_deref() == Some(&vm) => {
                        Ok(())
                    }
                    _ => Err(e),
                })?;
                settle(id, "ACTIVE", Some(&vm))?;
            }
            // DRAFT, BUSY, or attaching to this VM: wait for it.
            _ => {
                settle(id, "ACTIVE", Some(&vm))?;
            }
        }
        Ok(PublishResult {
            context: vec![("devicePath".into(), format!("/dev/disk/by-id/virtio-{id}"))],
            attachment: Some(disk(id)),
        })
    }

    fn controller_unpublish(
        volume_id: String,
        node_id: String,
        _secrets: KeyValues,
    ) -> Result<(), Error> {
        let Ok(id) = numeric("volume", &volume_id) else {
            return Ok(());
        };
        let Some(volume) = fetch(id)? else {
            return Ok(());
        };
        let vm = match (volume.attached_to.clone(), node_id.is_empty()) {
            (None, _) => {
                if volume.status == "BUSY" {
                    settle(id, "AVAILABLE", None)?;
                }
                return Ok(());
            }
            (Some(on), true) => on,
            (Some(on), false) => {
                let vm = vm_of(&node_id, &Vec::new())?;
                if on != vm {
                    // Attached elsewhere: not this node's to detach.
                    return Ok(());
                }
                vm
            }
        };
        if volume.status == "ACTIVE" {
            vm_action(&vm, "detach", id).or_else(|e| match fetch(id)? {
                Some(v) if v.status == "BUSY" || v.attached_to.is_none() => Ok(()),
                None => Ok(()),
                _ => Err(e),
            })?;
        }
        settle(id, "AVAILABLE", None).map(drop)
    }
}

impl modcsi_backend_sdk::expand::Guest for Emma {
    fn expand_volume(
        volume_id: String,
        capacity: CapacityRange,
        _capability: Option<Capability>,
        _secrets: KeyValues,
    ) -> Result<ExpandResult, Error> {
        let id = numeric("volume", &volume_id)?;
        let volume = fetch(id)?.ok_or_else(|| err!(NotFound, "Emma volume {id} does not exist"))?;
        let mut size = volume.size_gb;
        if size * GIB < capacity.required_bytes {
            let gb = fit(&capacity, &volume.data_center, &volume.kind)?;
            let path = format!("/v1/volumes/{id}/actions");
            let body = json!({ "action": "edit", "volumeGb": gb });
            match volume.status.as_str() {
                "AVAILABLE" | "ACTIVE" => {
                    let edited = api().call(Method::Post, &path, Some(&body), Retry::WhenBusy);
                    if let Err(e) = edited {
                        // A repeated edit is refused once the first took: its effect decides.
                        match fetch(id)? {
                            Some(v) if v.status == "BUSY" || v.size_gb >= gb => {}
                            _ => return Err(refused(&format!("POST {path} (edit to {gb} GB)"), e)),
                        }
                    }
                }
                _ => {} // Busy already (an earlier edit, say): wait below.
            }
            let settled = pending::wait(
                &format!("Emma volume {id} growing to {gb} GB"),
                POLL,
                || {
                    let v = fetch(id)?.ok_or_else(|| err!(NotFound, "Emma volume {id} is gone"))?;
                    Ok(match v.status.as_str() {
                        "AVAILABLE" | "ACTIVE" if v.size_gb >= gb => Step::Done(v),
                        "AVAILABLE" | "ACTIVE" => {
                            return Err(err!(
                                Aborted,
                                "Emma volume {id} settled at {} GB, not {gb}; retry",
                                v.size_gb
                            ));
                        }
                        other => Step::Pending(other.to_owned()),
                    })
                },
            )?;
            size = settled.size_gb;
        }
        Ok(ExpandResult {
            capacity_bytes: size * GIB,
            node_expansion_required: true,
        })
    }
}

impl modcsi_backend_sdk::list_volumes::Guest for Emma {
    fn list_volumes(max_entries: u32, starting_token: String) -> Result<VolumePage, Error> {
        let all = api()
            .get("/v1/volumes")
            .map_err(|e| refused("GET /v1/volumes", e))?;
        let mut volumes: Vec<Volume> = all
            .as_array()
            .into_iter()
            .flatten()
            .filter(|v| !v["isSystem"].as_bool().unwrap_or(false))
            .map(EmmaVolume::from_json)
            .filter(|v| v.status != "DELETED" && !v.id.is_empty())
            .map(|v| v.volume())
            .collect();
        volumes.sort_by(|a, b| a.id.cmp(&b.id));
        if !starting_token.is_empty() && !volumes.iter().any(|v| v.id == starting_token) {
            return Err(err!(
                Aborted,
                "starting token {starting_token:?} is no volume"
            ));
        }
        let (volumes, next_token) = page(volumes, |v| &v.id, max_entries, &starting_token);
        Ok(VolumePage {
            volumes,
            next_token,
        })
    }
}

impl modcsi_backend_sdk::get_volume::Guest for Emma {
    fn get_volume(volume_id: String) -> Result<VolumeStatus, Error> {
        let id = numeric("volume", &volume_id)?;
        let volume = fetch(id)?.ok_or_else(|| err!(NotFound, "Emma volume {id} does not exist"))?;
        Ok(VolumeStatus {
            capacity_bytes: volume.size_gb * GIB,
            condition: None,
            published_nodes: volume.attached_to.into_iter().collect(),
        })
    }
}

impl modcsi_backend_sdk::node_identity::Guest for Emma {
    /// This node's VM: `emma.vm-id`, else the VM one of whose addresses is the node's; the
    /// answer names what was tried.
    fn node_identity() -> Result<NodeInfo, Error> {
        let vms = api()
            .get("/v1/vms")
            .map_err(|e| refused("GET /v1/vms", e))?;
        let vms: Vec<&Value> = vms.as_array().into_iter().flatten().collect();
        let id_of = |vm: &Value| match &vm["id"] {
            Value::Number(n) => n.to_string(),
            Value::String(s) => s.clone(),
            _ => String::new(),
        };
        let addresses = node::addresses();
        let vm = match config::get("emma.vm-id") {
            Some(configured) => vms
                .iter()
                .find(|vm| id_of(vm) == configured)
                .ok_or_else(|| err!(NotFound, "emma.vm-id {configured}: no such VM at Emma"))?,
            None => {
                let matching: Vec<&&Value> = vms
                    .iter()
                    .filter(|vm| {
                        vm["networks"].as_array().into_iter().flatten().any(|n| {
                            n["ip"]
                                .as_str()
                                .is_some_and(|ip| addresses.iter().any(|a| a == ip))
                        })
                    })
                    .collect();
                match matching.as_slice() {
                    [one] => *one,
                    [] => {
                        return Err(err!(
                            NotFound,
                            "no Emma VM has one of this node's addresses {addresses:?} ({} VMs \
                             looked at); set emma.vm-id",
                            vms.len()
                        ));
                    }
                    many => {
                        return Err(err!(
                            FailedPrecondition,
                            "Emma VMs {:?} all share an address with this node; set emma.vm-id",
                            many.iter().map(|vm| id_of(vm)).collect::<Vec<_>>()
                        ));
                    }
                }
            }
        };
        let id = id_of(vm);
        let data_center = vm["dataCenter"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let topology: Topology = vec![(TOPOLOGY_KEY.into(), data_center)];
        Ok(NodeInfo {
            node_id: Some(id.clone()),
            topology,
            max_volumes: MAX_VOLUMES,
            attributes: vec![("vm-id".into(), id)],
        })
    }
}

impl modcsi_backend_sdk::locate::Guest for Emma {
    /// A public-driver PV: its id is Emma's and its disk the KVM by-id name, the one that
    /// driver published as `devicePath` too.
    fn locate(volume_id: String, _context: KeyValues) -> Result<Attachment, Error> {
        Ok(disk(numeric("volume", &volume_id)?))
    }
}

/// What create-volume reads of a StorageClass: the type, and a data center Emma has (without
/// one, the topology or emma.data-center decides at create time).
impl modcsi_backend_sdk::parameters::Guest for Emma {
    fn validate_parameters(parameters: KeyValues) -> Result<Vec<String>, Error> {
        use modcsi_backend_sdk::identity::Guest;
        modcsi_backend_sdk::params::problems(&parameters, &Self::info().parameters, |p| {
            volume_type(p)?;
            lookup(p, "dataCenterId").map_or(Ok(()), known_data_center)
        })
    }
}

modcsi_backend_sdk::export_backend!(Emma);
modcsi_backend_sdk::export_publish!(Emma);
modcsi_backend_sdk::export_expand!(Emma);
modcsi_backend_sdk::export_list_volumes!(Emma);
modcsi_backend_sdk::export_get_volume!(Emma);
modcsi_backend_sdk::export_node_identity!(Emma);
modcsi_backend_sdk::export_locate!(Emma);
modcsi_backend_sdk::export_parameters!(Emma);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_digits() {
        assert!(numeric("volume", "123").is_ok());
        assert!(numeric("volume", "12/../3").is_err());
        assert!(numeric("volume", "").is_err());
    }
}
