//! modcsi backend for MikroTik RDS ("ROSE Data Server", RouterOS): each volume is a file-backed
//! disk on the router's pool, exported over NVMe/TCP; the router is managed with RouterOS
//! commands over the host's `ssh` capability (contract 0.2.1). The host attaches, formats,
//! mounts and fences; this component only talks to the router.
//!
//! A drop-in for the public rds-csi driver: volume ids are the provisioner's names
//! (`pvc-<uuid>`; any other name maps to a `pvc-<uuid>` of its own), the NQN is
//! `nqn.2000-02.com.mikrotik:<id>`, and its existing PVs (volume context
//! `nvmeAddress`/`rdsAddress`, `nvmePort`, `nqn`) are found with `locate`.
//!
//! Configuration (`--backend-config`): `rds.target` (the ssh target, default `rds`),
//! `rds.nvme-address` (the portal the nodes connect to; default the parameter `nvmeAddress`),
//! `rds.nvme-port` (4420), `rds.volume-path` (`/storage-pool/metal-csi`), `rds.pool`
//! (`storage-pool`). StorageClass parameters `nvmeAddress`, `nvmePort`, `volumePath`,
//! `ctrlLossTmo` (-1), `reconnectDelay` (5), `keepAliveTmo` override them per class.

mod routeros;

use std::time::Duration;

use modcsi_backend_sdk::params::{Params, config_or};
use modcsi_backend_sdk::types::{
    AccessMode, AccessType, Attachment, BackendInfo, Capability, Capacity, CapacityRange,
    ContentSource, ContentSources, CreateRequest, Error, ExpandResult, KeyValues, NvmeTarget,
    ParameterSpec, Portal, PublishRequest, PublishResult, Snapshot, SnapshotFilter, SnapshotPage,
    Topology, Validation, Volume, VolumeModes, VolumePage, VolumeStatus,
};
use modcsi_backend_sdk::{err, page, put_if_absent, remote, store, unix_seconds};
use routeros::{Entry, Refusal};

const NQN_PREFIX: &str = "nqn.2000-02.com.mikrotik:";
const MIB: u64 = 1 << 20;
/// The public driver's bounds: at least 1 GiB, at most 16 TiB.
const MIN_BYTES: u64 = 1 << 30;
const MAX_BYTES: u64 = 16 << 40;
const SNAPSHOT_PREFIX: &str = "snap-";
/// The longest one RouterOS command may take.
const COMMAND_TIME: Duration = Duration::from_secs(30);

struct Rds;

/// Where volumes live and how nodes reach them: configuration, overridden per StorageClass.
struct Settings {
    target: String,
    volume_path: String,
    pool: String,
    nvme_address: Option<String>,
    nvme_port: u16,
    ctrl_loss_tmo: i32,
    reconnect_delay: u32,
    keep_alive_tmo: Option<u32>,
}

fn invalid(what: &str, value: &str) -> Error {
    err!(
        InvalidArgument,
        "{what} {value:?} may hold only letters, digits and . _ - : / (it reaches a RouterOS command)"
    )
}

fn safe(what: &str, value: &str) -> Result<(), Error> {
    if routeros::is_safe(value) {
        Ok(())
    } else {
        Err(invalid(what, value))
    }
}

impl Settings {
    fn load(parameters: &[(String, String)]) -> Result<Self, Error> {
        let p = Params::new(parameters).or_config(&[
            ("volumePath", "rds.volume-path"),
            ("nvmeAddress", "rds.nvme-address"),
            ("nvmePort", "rds.nvme-port"),
            ("ctrlLossTmo", "rds.ctrl-loss-tmo"),
            ("reconnectDelay", "rds.reconnect-delay"),
            ("keepAliveTmo", "rds.keep-alive-tmo"),
        ]);
        let settings = Self {
            target: config_or("rds.target", "rds"),
            volume_path: p
                .get("volumePath")
                .unwrap_or("/storage-pool/metal-csi")
                .to_owned(),
            pool: config_or("rds.pool", "storage-pool"),
            nvme_address: p.get("nvmeAddress").map(str::to_owned),
            nvme_port: p.parse("nvmePort")?.unwrap_or(4420),
            ctrl_loss_tmo: p.parse("ctrlLossTmo")?.unwrap_or(-1),
            reconnect_delay: p.parse("reconnectDelay")?.unwrap_or(5),
            keep_alive_tmo: p.parse("keepAliveTmo")?,
        };
        safe("volumePath", &settings.volume_path)?;
        if !settings.volume_path.starts_with('/') {
            return Err(invalid("volumePath", &settings.volume_path));
        }
        safe("pool", &settings.pool)?;
        if let Some(a) = &settings.nvme_address {
            safe("nvmeAddress", a)?;
        }
        Ok(settings)
    }

    fn attachment(&self, nqn: String) -> Result<Attachment, Error> {
        let address = self.nvme_address.clone().ok_or_else(|| {
            err!(
                FailedPrecondition,
                "no NVMe/TCP portal: set rds.nvme-address or the nvmeAddress parameter"
            )
        })?;
        Ok(Attachment::NvmeTcp(NvmeTarget {
            portals: vec![Portal {
                address,
                port: self.nvme_port,
            }],
            nqn,
            namespace_id: None,
            ctrl_loss_tmo_seconds: Some(self.ctrl_loss_tmo),
            reconnect_delay_seconds: Some(self.reconnect_delay),
            keep_alive_tmo_seconds: self.keep_alive_tmo,
        }))
    }
}

/// A volume or snapshot id: the slot name on the router.
fn check_id(id: &str) -> Result<(), Error> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && id.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(err!(
            InvalidArgument,
            "id {id:?}: only letters, digits and '-', starting with a letter or digit"
        ))
    }
}

fn nqn_of(id: &str) -> String {
    format!("{NQN_PREFIX}{}", id.to_ascii_lowercase())
}

/// Runs one RouterOS command; a refusal is returned as such, transport trouble as an error. A
/// non-zero exit status or anything on stderr is a refusal too, whatever stdout says.
fn run(settings: &Settings, command: &str) -> Result<Result<String, Refusal>, Error> {
    let out = remote::run(&settings.target, command, COMMAND_TIME)?;
    if let Some(r) = routeros::refusal(&out.stdout) {
        return Ok(Err(r));
    }
    Ok(out.checked().map_err(Refusal::Failure))
}

/// Runs a command that answers nothing when it succeeds (`add`, `set`, `remove`): any answer
/// at all is a refusal, even in words this backend has never seen.
fn run_silent(settings: &Settings, command: &str) -> Result<Result<(), Refusal>, Error> {
    Ok(run(settings, command)?.and_then(|out| match out.trim() {
        "" => Ok(()),
        said => Err(Refusal::Failure(
            said.lines().next().unwrap_or(said).to_owned(),
        )),
    }))
}

/// A refusal of a command that had to succeed, as the call's error.
fn refused(command: &str) -> impl FnOnce(Refusal) -> Error + '_ {
    move |r| match r {
        Refusal::NoSuchItem => err!(NotFound, "router: no such item ({command})"),
        Refusal::Failure(m) if m.contains("not enough space") => {
            err!(ResourceExhausted, "router: {m}")
        }
        Refusal::Failure(m) => err!(Internal, "router refused {command:?}: {m}"),
    }
}

/// Runs a command that must succeed.
fn must(settings: &Settings, command: &str) -> Result<String, Error> {
    run(settings, command)?.map_err(refused(command))
}

/// Runs a command that must succeed and answer nothing.
fn must_silent(settings: &Settings, command: &str) -> Result<(), Error> {
    run_silent(settings, command)?.map_err(refused(command))
}

fn find_disk(settings: &Settings, slot: &str) -> Result<Option<Entry>, Error> {
    let out = must(settings, &format!("/disk print detail where slot={slot}"))?;
    Ok(routeros::parse_detail(&out)
        .into_iter()
        .find(|e| e.get("slot").map(String::as_str) == Some(slot)))
}

fn size_of(entry: &Entry) -> u64 {
    entry
        .get("size")
        .and_then(|s| routeros::number(s))
        .unwrap_or(0)
}

/// The size to ask the router for: at least `required` (and the minimum), rounded up to whole
/// MiB, never down; within `limit` and the maximum.
fn rounded_size(required: u64, limit: u64) -> Result<u64, Error> {
    let bytes = required.max(MIN_BYTES).div_ceil(MIB) * MIB;
    if bytes > MAX_BYTES || (limit > 0 && bytes > limit) {
        return Err(err!(
            OutOfRange,
            "{bytes} bytes (requested {required}, limit {limit}) is outside 1 GiB to 16 TiB or the limit"
        ));
    }
    Ok(bytes)
}

fn volume_of(settings: &Settings, id: &str, bytes: u64) -> Result<Volume, Error> {
    let nqn = nqn_of(id);
    let mut context = vec![
        ("nqn".into(), nqn.clone()),
        ("nvmePort".into(), settings.nvme_port.to_string()),
        ("volumePath".into(), settings.volume_path.clone()),
    ];
    if let Some(a) = &settings.nvme_address {
        context.push(("nvmeAddress".into(), a.clone()));
    }
    Ok(Volume {
        id: id.to_owned(),
        capacity_bytes: bytes,
        context,
        topology: vec![],
        attachment: Some(settings.attachment(nqn)?),
    })
}

fn file_path(settings: &Settings, id: &str) -> String {
    format!("{}/{id}.img", settings.volume_path.trim_end_matches('/'))
}

impl modcsi_backend_sdk::identity::Guest for Rds {
    fn info() -> BackendInfo {
        let parameter = |name: &str, description: &str| ParameterSpec {
            name: name.into(),
            description: description.into(),
            required: false,
        };
        BackendInfo {
            name: "rds".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            access_modes: vec![
                AccessMode::SingleNodeWriter,
                AccessMode::SingleNodeReaderOnly,
            ],
            volume_modes: VolumeModes::FILESYSTEM | VolumeModes::BLOCK,
            content_sources: ContentSources::SNAPSHOT,
            topology: false,
            parameters: vec![
                parameter("nvmeAddress", "the NVMe/TCP portal nodes connect to"),
                parameter("nvmePort", "its port (4420)"),
                parameter(
                    "volumePath",
                    "where disk files live (/storage-pool/metal-csi)",
                ),
                parameter(
                    "ctrlLossTmo",
                    "seconds to retry a lost controller (-1: for ever)",
                ),
                parameter("reconnectDelay", "seconds between reconnects (5)"),
                parameter("keepAliveTmo", "NVMe keep-alive timeout in seconds"),
            ],
        }
    }

    fn probe() -> Result<(), Error> {
        let settings = Settings::load(&[])?;
        must(&settings, "/system identity print").map(drop)
    }
}

impl modcsi_backend_sdk::controller::Guest for Rds {
    fn create_volume(request: CreateRequest) -> Result<Volume, Error> {
        let id = volume_id_of(&request.name);
        check_id(&id)?;
        if id.starts_with(SNAPSHOT_PREFIX) {
            return Err(err!(
                InvalidArgument,
                "volume name {id:?}: the {SNAPSHOT_PREFIX} prefix is for snapshots"
            ));
        }
        let settings = Settings::load(&request.parameters)?;
        let mut bytes = rounded_size(
            request.capacity.required_bytes,
            request.capacity.limit_bytes,
        )?;
        let source = match &request.source {
            None => None,
            Some(ContentSource::Volume(_)) => {
                return Err(err!(
                    InvalidArgument,
                    "cloning a volume is not supported: take a snapshot and restore it"
                ));
            }
            Some(ContentSource::Snapshot(snap)) => {
                check_id(snap)?;
                let found =
                    find_ours(&settings, snap)?.ok_or_else(|| err!(NotFound, "snapshot {snap}"))?;
                bytes = bytes.max(size_of(&found));
                Some(snap.clone())
            }
        };
        if let Some(existing) = find_ours(&settings, &id)? {
            let size = size_of(&existing);
            if size != bytes {
                return Err(err!(
                    AlreadyExists,
                    "volume {id} exists with {size} bytes, not {bytes}"
                ));
            }
            return volume_of(&settings, &id, size);
        }
        let copy = source
            .map(|s| format!(" copy-from=[find slot={s}]"))
            .unwrap_or_default();
        let file = file_path(&settings, &id);
        // Kept for DeleteVolume, which is told only the id: the StorageClass's volume path
        // may not be the configuration's.
        keep_file(&id, &file)?;
        must_silent(
            &settings,
            &format!(
                "/disk add type=file{copy} file-path={file} file-size={}M slot={id} nvme-tcp-export=yes nvme-tcp-server-port={} nvme-tcp-server-nqn={}",
                bytes / MIB,
                settings.nvme_port,
                nqn_of(&id)
            ),
        )?;
        // The router says nothing on success: check that the disk is there, at the size.
        let created = find_ours(&settings, &id)?.ok_or_else(|| {
            err!(
                Internal,
                "volume {id}: the router accepted the disk but does not show it"
            )
        })?;
        volume_of(&settings, &id, size_of(&created))
    }

    fn delete_volume(id: String, _secrets: KeyValues) -> Result<(), Error> {
        if check_id(&id).is_err() {
            return Err(err!(NotFound, "{id} is not an id this driver makes"));
        }
        remove_disk(&id)
    }

    fn validate_capabilities(
        id: String,
        capabilities: Vec<Capability>,
        _: KeyValues,
        parameters: KeyValues,
        _: KeyValues,
    ) -> Result<Validation, Error> {
        check_id(&id)?;
        let settings = Settings::load(&parameters)?;
        find_ours(&settings, &id)?.ok_or_else(|| err!(NotFound, "volume {id}"))?;
        let multi = capabilities.iter().any(|c| {
            !matches!(
                c.access_mode,
                AccessMode::SingleNodeWriter | AccessMode::SingleNodeReaderOnly
            )
        });
        Ok(Validation {
            confirmed: !multi,
            message: if multi {
                "an RDS volume is attached to one node at a time".into()
            } else {
                String::new()
            },
        })
    }
}

/// Whether a disk on the router is this driver's: a volume (`pvc-…`, as [`volume_id_of`] names
/// every one) exported under its own NQN, or a snapshot (never exported). Anything else (the
/// router's other disks, another driver's) is left alone, and never listed.
fn is_ours(id: &str, entry: &Entry) -> bool {
    match entry.get("nvme-tcp-server-nqn") {
        Some(nqn) => id.starts_with("pvc-") && *nqn == nqn_of(id),
        None => id.starts_with(SNAPSHOT_PREFIX),
    }
}

/// Finds a disk that must be this driver's.
fn find_ours(settings: &Settings, id: &str) -> Result<Option<Entry>, Error> {
    match find_disk(settings, id)? {
        Some(entry) if !is_ours(id, &entry) => Err(err!(
            FailedPrecondition,
            "disk {id} on the router is not one this driver manages (its NQN is not {})",
            nqn_of(id)
        )),
        found => Ok(found),
    }
}

/// Removes a disk and then its file (RouterOS keeps the file after `/disk remove`). A disk
/// already gone whose file was removed too is NOT_FOUND (a repeated delete sends the router
/// nothing); a disk gone whose file remains (a delete cut short) has its file removed.
fn remove_disk(id: &str) -> Result<(), Error> {
    let settings = Settings::load(&[])?;
    let kept = kept_file(id)?;
    let path = match find_ours(&settings, id)? {
        Some(entry) => {
            let path = entry
                .get("file-path")
                .cloned()
                .or(kept)
                .unwrap_or_else(|| file_path(&settings, id));
            if let Err(Refusal::Failure(m)) =
                run_silent(&settings, &format!("/disk remove [find slot={id}]"))?
            {
                return Err(err!(Internal, "removing disk {id}: {m}"));
            }
            path
        }
        None => kept.ok_or_else(|| err!(NotFound, "volume {id} is not on the router"))?,
    };
    safe("file-path", &path)?;
    let name = path.trim_start_matches('/');
    if let Err(Refusal::Failure(m)) =
        run_silent(&settings, &format!("/file remove [find name=\"{name}\"]"))?
    {
        return Err(err!(Internal, "removing file {name}: {m}"));
    }
    Ok(store::delete(&format!("file/{id}"), None)?)
}

/// Notes where a disk's file is.
fn keep_file(id: &str, path: &str) -> Result<(), Error> {
    put_if_absent(&format!("file/{id}"), path.as_bytes()).map(drop)
}

/// Where a disk's file was noted to be, if it was.
fn kept_file(id: &str) -> Result<Option<String>, Error> {
    Ok(store::get(&format!("file/{id}"))?.and_then(|e| String::from_utf8(e.value).ok()))
}

/// The volume id of a CO's volume name: the provisioner's `pvc-<uuid>` as it is (drop-in with
/// the public driver), any other name (a Nomad volume, say) a `pvc-<uuid>` derived from it
/// (UUID v5, so the same name always gets the same id), so every NQN stays under
/// `nqn.2000-02.com.mikrotik:pvc-`.
fn volume_id_of(name: &str) -> String {
    let is_pvc = name
        .strip_prefix("pvc-")
        .is_some_and(|rest| uuid::Uuid::try_parse(rest).is_ok() && rest.len() == 36);
    if is_pvc {
        name.to_owned()
    } else {
        let namespace = uuid::Uuid::from_u128(0x6d6f_6463_7369_4000_8000_7264_732d_6964);
        format!("pvc-{}", uuid::Uuid::new_v5(&namespace, name.as_bytes()))
    }
}

/// The snapshot id of a CO's snapshot name: `snap-<name>` when that is a usable id, else a
/// readable prefix of the name and a digest of all of it, so any name (up to the CSI maximum
/// of 128 bytes) gets an id that fits, and always the same one.
fn snapshot_id_of(name: &str) -> String {
    let plain = format!("{SNAPSHOT_PREFIX}{}", name.to_ascii_lowercase());
    if check_id(&plain).is_ok() {
        return plain;
    }
    let readable: String = name
        .to_ascii_lowercase()
        .chars()
        .take(64)
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let digest = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes()).simple();
    format!("{SNAPSHOT_PREFIX}{}-{digest}", readable.trim_matches('-'))
}

impl modcsi_backend_sdk::publish::Guest for Rds {
    fn controller_publish(request: PublishRequest) -> Result<PublishResult, Error> {
        check_id(&request.volume_id)?;
        let settings = Settings::load(&request.context)?;
        find_ours(&settings, &request.volume_id)?
            .ok_or_else(|| err!(NotFound, "volume {}", request.volume_id))?;
        let attachment = settings.attachment(nqn_of(&request.volume_id))?;
        Ok(PublishResult {
            context: vec![],
            attachment: Some(attachment),
        })
    }

    fn controller_unpublish(_: String, _: String, _: KeyValues) -> Result<(), Error> {
        // Every node may connect (allow-host-name is empty); nothing to revoke.
        Ok(())
    }
}

impl modcsi_backend_sdk::expand::Guest for Rds {
    fn expand_volume(
        id: String,
        capacity: CapacityRange,
        capability: Option<Capability>,
        _: KeyValues,
    ) -> Result<ExpandResult, Error> {
        check_id(&id)?;
        let settings = Settings::load(&[])?;
        let current = find_ours(&settings, &id)?.ok_or_else(|| err!(NotFound, "volume {id}"))?;
        let now = size_of(&current);
        let wanted = rounded_size(capacity.required_bytes, capacity.limit_bytes)?;
        if wanted > now {
            must_silent(
                &settings,
                &format!("/disk set [find slot={id}] file-size={}M", wanted / MIB),
            )?;
        }
        let block = capability.is_some_and(|c| matches!(c.access_type, AccessType::Block));
        Ok(ExpandResult {
            capacity_bytes: wanted.max(now),
            node_expansion_required: !block,
        })
    }
}

impl modcsi_backend_sdk::capacity::Guest for Rds {
    fn get_capacity(
        parameters: KeyValues,
        _: Vec<Capability>,
        _: Option<Topology>,
    ) -> Result<Capacity, Error> {
        let [free] = pool_figures(&Settings::load(&parameters)?, ["free"])?;
        Ok(Capacity {
            available_bytes: free,
            maximum_volume_bytes: Some(MAX_BYTES.min(free)),
            minimum_volume_bytes: Some(MIN_BYTES),
        })
    }
}

/// Figures (`size`, `free`) of the pool the disk files live on, from one command.
fn pool_figures<const N: usize>(settings: &Settings, fields: [&str; N]) -> Result<[u64; N], Error> {
    let out = must(
        settings,
        &format!("/disk print detail where mount-point=\"{}\"", settings.pool),
    )?;
    let entries = routeros::parse_detail(&out);
    let mut figures = [0; N];
    for (figure, field) in figures.iter_mut().zip(fields) {
        *figure = (entries.iter())
            .find_map(|e| e.get(field).and_then(|f| routeros::number(f)))
            .ok_or_else(|| err!(Internal, "pool {} shows no {field}", settings.pool))?;
    }
    Ok(figures)
}

/// The pool the disk files live on, for the audit's overcommit figure.
impl modcsi_backend_sdk::pool::Guest for Rds {
    fn get_pool(parameters: KeyValues) -> Result<modcsi_backend_sdk::pool::PoolSize, Error> {
        let [total_bytes, free_bytes] =
            pool_figures(&Settings::load(&parameters)?, ["size", "free"])?;
        Ok(modcsi_backend_sdk::pool::PoolSize {
            total_bytes,
            free_bytes,
        })
    }
}

/// The router's disks this driver exported (each under its own NQN), by slot.
fn volumes(settings: &Settings) -> Result<Vec<Entry>, Error> {
    let out = must(settings, "/disk print detail")?;
    let mut found: Vec<Entry> = routeros::parse_detail(&out)
        .into_iter()
        .filter(|e| {
            e.contains_key("nvme-tcp-server-nqn")
                && e.get("slot").is_some_and(|slot| is_ours(slot, e))
        })
        .collect();
    found.sort_by(|a, b| a.get("slot").cmp(&b.get("slot")));
    Ok(found)
}

impl modcsi_backend_sdk::list_volumes::Guest for Rds {
    fn list_volumes(max_entries: u32, starting_token: String) -> Result<VolumePage, Error> {
        let settings = Settings::load(&[])?;
        let all = volumes(&settings)?;
        let (entries, next_token) = page(
            all,
            |e| e.get("slot").map_or("", String::as_str),
            max_entries,
            &starting_token,
        );
        let volumes = entries
            .iter()
            .filter_map(|e| {
                let slot = e.get("slot")?;
                volume_of(&settings, slot, size_of(e)).ok()
            })
            .collect();
        Ok(VolumePage {
            volumes,
            next_token,
        })
    }
}

impl modcsi_backend_sdk::get_volume::Guest for Rds {
    fn get_volume(id: String) -> Result<VolumeStatus, Error> {
        check_id(&id)?;
        let settings = Settings::load(&[])?;
        let entry = find_ours(&settings, &id)?.ok_or_else(|| err!(NotFound, "volume {id}"))?;
        Ok(VolumeStatus {
            capacity_bytes: size_of(&entry),
            condition: None,
            published_nodes: vec![],
        })
    }
}

/// What the backend keeps about a snapshot (RouterOS does not record the source).
fn snapshot_record(id: &str) -> Result<Option<(String, i64)>, Error> {
    let entry = store::get(&format!("snapshot/{id}"))?;
    Ok(entry.and_then(|e| {
        let text = String::from_utf8(e.value).ok()?;
        let (source, at) = text.split_once(' ')?;
        Some((source.to_owned(), at.parse().ok()?))
    }))
}

fn snapshot_of(id: &str, entry: &Entry) -> Result<Snapshot, Error> {
    let (source, created) = snapshot_record(id)?.unwrap_or_default();
    Ok(Snapshot {
        id: id.to_owned(),
        source_volume_id: source,
        size_bytes: size_of(entry),
        created_unix_seconds: created,
        ready: true,
    })
}

impl modcsi_backend_sdk::snapshots::Guest for Rds {
    fn create_snapshot(
        source: String,
        name: String,
        parameters: KeyValues,
        _: KeyValues,
    ) -> Result<Snapshot, Error> {
        check_id(&source)?;
        let id = snapshot_id_of(&name);
        let settings = Settings::load(&parameters)?;
        if let Some(existing) = find_ours(&settings, &id)? {
            return match snapshot_record(&id)? {
                Some((of, _)) if of != source => Err(err!(
                    AlreadyExists,
                    "snapshot {id} exists of volume {of}, not {source}"
                )),
                _ => snapshot_of(&id, &existing),
            };
        }
        find_ours(&settings, &source)?.ok_or_else(|| err!(NotFound, "volume {source}"))?;
        // A copy-on-write copy of the source's file, not exported.
        let file = file_path(&settings, &id);
        keep_file(&id, &file)?;
        must_silent(
            &settings,
            &format!(
                "/disk add type=file copy-from=[find slot={source}] file-path={file} slot={id}"
            ),
        )?;
        // A retry of this very create finds the record already there, and keeps it.
        let record = format!("{source} {}", unix_seconds());
        put_if_absent(&format!("snapshot/{id}"), record.as_bytes())?;
        let entry = find_ours(&settings, &id)?
            .ok_or_else(|| err!(Internal, "snapshot {id} is not shown after its copy"))?;
        snapshot_of(&id, &entry)
    }

    fn delete_snapshot(id: String, _: KeyValues) -> Result<(), Error> {
        if check_id(&id).is_err() || !id.starts_with(SNAPSHOT_PREFIX) {
            // Nothing this driver made can have that id: there is nothing to delete.
            return Err(err!(NotFound, "{id} is not a snapshot id of this driver"));
        }
        // The record goes with the disk, also when an earlier delete removed the disk only.
        let removed = remove_disk(&id);
        if matches!(removed, Ok(()) | Err(Error::NotFound(_))) {
            store::delete(&format!("snapshot/{id}"), None)?;
        }
        removed
    }

    fn list_snapshots(
        max_entries: u32,
        starting_token: String,
        filter: SnapshotFilter,
        _: KeyValues,
    ) -> Result<SnapshotPage, Error> {
        let settings = Settings::load(&[])?;
        let out = must(
            &settings,
            &format!("/disk print detail where slot~\"{SNAPSHOT_PREFIX}\""),
        )?;
        let mut all = vec![];
        for entry in routeros::parse_detail(&out) {
            let Some(id) = entry.get("slot").filter(|s| s.starts_with(SNAPSHOT_PREFIX)) else {
                continue;
            };
            let snapshot = snapshot_of(id, &entry)?;
            let wanted = (filter.snapshot_id.is_empty() || filter.snapshot_id == snapshot.id)
                && (filter.source_volume_id.is_empty()
                    || filter.source_volume_id == snapshot.source_volume_id);
            if wanted {
                all.push(snapshot);
            }
        }
        all.sort_by(|a, b| a.id.cmp(&b.id));
        let (snapshots, next_token) = page(all, |s| s.id.as_str(), max_entries, &starting_token);
        Ok(SnapshotPage {
            snapshots,
            next_token,
        })
    }
}

impl modcsi_backend_sdk::locate::Guest for Rds {
    /// A public-driver PV: its volume context names the portal and the NQN.
    fn locate(id: String, context: KeyValues) -> Result<Attachment, Error> {
        check_id(&id)?;
        let mut settings = Settings::load(&[])?;
        let context = Params::new(&context);
        if let Some(a) = context
            .get("nvmeAddress")
            .or_else(|| context.get("rdsAddress"))
        {
            safe("nvmeAddress", a)?;
            settings.nvme_address = Some(a.to_owned());
        }
        if let Some(port) = context.parse("nvmePort")? {
            settings.nvme_port = port;
        }
        let nqn = context
            .get("nqn")
            .map_or_else(|| nqn_of(&id), str::to_owned);
        if !nqn.starts_with(NQN_PREFIX) || !routeros::is_safe(&nqn) {
            return Err(err!(
                InvalidArgument,
                "volume {id}: NQN {nqn:?} is not one of this driver's ({NQN_PREFIX}…)"
            ));
        }
        settings.attachment(nqn)
    }
}

/// What create-volume reads of a StorageClass ([`Settings::load`]), read the same way.
impl modcsi_backend_sdk::parameters::Guest for Rds {
    fn validate_parameters(parameters: KeyValues) -> Result<Vec<String>, Error> {
        use modcsi_backend_sdk::identity::Guest;
        modcsi_backend_sdk::params::problems(&parameters, &Self::info().parameters, |p| {
            Settings::load(p).map(drop)
        })
    }
}

modcsi_backend_sdk::export_backend!(Rds);
modcsi_backend_sdk::export_publish!(Rds);
modcsi_backend_sdk::export_expand!(Rds);
modcsi_backend_sdk::export_list_volumes!(Rds);
modcsi_backend_sdk::export_capacity!(Rds);
modcsi_backend_sdk::export_snapshots!(Rds);
modcsi_backend_sdk::export_get_volume!(Rds);
modcsi_backend_sdk::export_locate!(Rds);
modcsi_backend_sdk::export_parameters!(Rds);
modcsi_backend_sdk::export_pool!(Rds);
