//! The cloud behind the fake API: data centers, offers, VMs, volumes and tokens, and the loop
//! devices that stand for attached volumes on this machine.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::{DataCenter, FakeEmmaOptions, Shared, VmSpec, VolumeOffer};

const PROJECT_ID: u64 = 4711;
const USER_ID: u64 = 1207;
const USER_NAME: &str = "modcsi service app";
/// Volume ids count up from here; system disks get `SYSTEM_DISK_BASE + vm id`.
const FIRST_VOLUME_ID: u64 = 5001;
const SYSTEM_DISK_BASE: u64 = 900_000;
const SYSTEM_DISK_GB: u64 = 16;
const GIB: u64 = 1 << 30;

/// An error answer: status, `code` and `message`.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BAD_REQUEST", message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(401, "UNAUTHORIZED", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "NOT_FOUND", message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, "CONFLICT", message)
    }
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(422, "UNPROCESSABLE_ENTITY", message)
    }
}

pub(crate) type ApiResult = Result<Value, ApiError>;

/// What a volume becomes when its current DRAFT or BUSY period ends.
#[derive(Debug, Clone, Copy)]
enum Change {
    /// DRAFT ends: AVAILABLE, or ACTIVE on the VM given at create.
    Ready {
        attach_to: Option<u64>,
    },
    Attach(u64),
    Detach,
    Grow(u64),
}

#[derive(Debug)]
struct Volume {
    id: u64,
    name: String,
    size_gb: u64,
    kind: String,
    data_center: String,
    system: bool,
    /// The settled status (AVAILABLE, ACTIVE, FAILED); DRAFT or BUSY while `pending`.
    status: &'static str,
    attached_to: Option<u64>,
    pending: Option<(Instant, Change)>,
    created_at: SystemTime,
    modified_at: SystemTime,
    /// The loop device standing for the attached volume.
    device: Option<String>,
}

impl Volume {
    fn shown_status(&self) -> &'static str {
        match self.pending {
            Some((_, Change::Ready { .. })) => "DRAFT",
            Some(_) => "BUSY",
            None => self.status,
        }
    }

    /// The VM an attach or detach in progress concerns.
    fn busy_vm(&self) -> Option<u64> {
        match self.pending? {
            (_, Change::Attach(vm)) => Some(vm),
            (_, Change::Ready { attach_to }) => attach_to,
            (_, Change::Detach) => self.attached_to,
            (_, Change::Grow(_)) => None,
        }
    }
}

struct Token {
    expires: Instant,
}

pub(crate) struct Cloud {
    client_id: String,
    client_secret: String,
    draft: std::time::Duration,
    busy: std::time::Duration,
    access_ttl: std::time::Duration,
    refresh_ttl: std::time::Duration,
    state_dir: PathBuf,
    by_id: PathBuf,
    data_centers: Vec<DataCenter>,
    offers: Vec<VolumeOffer>,
    vms: Vec<VmSpec>,
    volumes: BTreeMap<u64, Volume>,
    next_id: u64,
    access: HashMap<String, Token>,
    refresh: HashMap<String, Token>,
    /// Set when the fake is dropped: no more devices.
    closed: bool,
    started: SystemTime,
}

impl Cloud {
    pub fn new(options: &FakeEmmaOptions, state_dir: PathBuf, by_id: PathBuf) -> Self {
        for vm in &options.vms {
            assert!(
                options
                    .data_centers
                    .iter()
                    .any(|d| d.id == vm.data_center_id),
                "VM {} is in unknown data center {}",
                vm.id,
                vm.data_center_id
            );
        }
        for offer in &options.offers {
            assert!(
                options
                    .data_centers
                    .iter()
                    .any(|d| d.id == offer.data_center_id),
                "an offer is in unknown data center {}",
                offer.data_center_id
            );
        }
        let started = SystemTime::now();
        let mut volumes = BTreeMap::new();
        for vm in &options.vms {
            let id = SYSTEM_DISK_BASE + vm.id;
            volumes.insert(
                id,
                Volume {
                    id,
                    name: format!("{}-system", vm.name),
                    size_gb: SYSTEM_DISK_GB,
                    kind: "ssd".into(),
                    data_center: vm.data_center_id.clone(),
                    system: true,
                    status: "ACTIVE",
                    attached_to: Some(vm.id),
                    pending: None,
                    created_at: started,
                    modified_at: started,
                    device: None,
                },
            );
        }
        Self {
            client_id: options.client_id.clone(),
            client_secret: options.client_secret.clone(),
            draft: options.draft,
            busy: options.busy,
            access_ttl: options.access_ttl,
            refresh_ttl: options.refresh_ttl,
            state_dir,
            by_id,
            data_centers: options.data_centers.clone(),
            offers: options.offers.clone(),
            vms: options.vms.clone(),
            volumes,
            next_id: FIRST_VOLUME_ID,
            access: HashMap::new(),
            refresh: HashMap::new(),
            closed: false,
            started,
        }
    }

    // ---- tokens ----

    fn token_pair(&mut self) -> Value {
        let now = Instant::now();
        let access = random_token();
        let refresh = random_token();
        self.access.insert(
            access.clone(),
            Token {
                expires: now + self.access_ttl,
            },
        );
        self.refresh.insert(
            refresh.clone(),
            Token {
                expires: now + self.refresh_ttl,
            },
        );
        let not_before = self
            .started
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        json!({
            "accessToken": access,
            "expiresIn": self.access_ttl.as_secs(),
            "refreshExpiresIn": self.refresh_ttl.as_secs(),
            "refreshToken": refresh,
            "tokenType": "Bearer",
            "idToken": null,
            "notBeforePolicy": not_before,
            "sessionState": uuid_like(),
            "otherClaims": {},
        })
    }

    pub fn issue_token(&mut self, body: &Value) -> ApiResult {
        let (Some(id), Some(secret)) = (body["clientId"].as_str(), body["clientSecret"].as_str())
        else {
            return Err(ApiError::bad_request(
                "clientId and clientSecret are required",
            ));
        };
        if id != self.client_id || secret != self.client_secret {
            return Err(ApiError::bad_request("Invalid client credentials"));
        }
        Ok(self.token_pair())
    }

    pub fn refresh_token(&mut self, body: &Value) -> ApiResult {
        let Some(token) = body["refreshToken"].as_str() else {
            return Err(ApiError::bad_request("refreshToken is required"));
        };
        match self.refresh.get(token) {
            None => Err(ApiError::bad_request("Invalid refresh token")),
            Some(t) if t.expires <= Instant::now() => {
                Err(ApiError::bad_request("Refresh token expired"))
            }
            Some(_) => Ok(self.token_pair()),
        }
    }

    /// Checks an `Authorization` header value.
    pub fn authorize(&self, header: Option<&str>) -> Result<(), ApiError> {
        let token = header
            .and_then(|h| {
                let (scheme, token) = h.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::unauthorized("Token is not provided"))?;
        match self.access.get(token) {
            None => Err(ApiError::unauthorized("Token is invalid")),
            Some(t) if t.expires <= Instant::now() => {
                Err(ApiError::unauthorized("Token is expired"))
            }
            Some(_) => Ok(()),
        }
    }

    pub fn expire_access_tokens(&mut self) {
        let now = Instant::now();
        for t in self.access.values_mut() {
            t.expires = t.expires.min(now);
        }
    }

    pub fn expire_refresh_tokens(&mut self) {
        let now = Instant::now();
        for t in self.refresh.values_mut() {
            t.expires = t.expires.min(now);
        }
    }

    // ---- data centers and offers ----

    fn data_center(&self, id: &str) -> Option<&DataCenter> {
        self.data_centers.iter().find(|d| d.id == id)
    }

    pub fn list_data_centers(&self, query: &Query) -> ApiResult {
        let location = query.int("locationId")?;
        let name = query.get("dataCenterName");
        let provider = query.get("providerName");
        let list: Vec<Value> = self
            .data_centers
            .iter()
            .filter(|d| name.is_none_or(|n| d.name == n))
            .filter(|d| location.is_none_or(|l| d.location_id == l))
            .filter(|d| provider.is_none_or(|p| d.provider_name.eq_ignore_ascii_case(p)))
            .map(data_center_json)
            .collect();
        Ok(Value::Array(list))
    }

    pub fn get_data_center(&self, id: &str) -> ApiResult {
        self.data_center(id)
            .map(data_center_json)
            .ok_or_else(|| ApiError::not_found(format!("Data center {id} not found")))
    }

    pub fn volume_configs(&self, query: &Query) -> ApiResult {
        let bootable = match query.get("isBootable") {
            None => {
                return Err(ApiError::bad_request(
                    "Required request parameter 'isBootable' is not present",
                ));
            }
            Some(v) if v.eq_ignore_ascii_case("true") => true,
            Some(v) if v.eq_ignore_ascii_case("false") => false,
            Some(v) => {
                return Err(ApiError::bad_request(format!(
                    "isBootable: invalid boolean {v:?}"
                )));
            }
        };
        let vm_id = query.int("vmId")?;
        let provider = query.int("providerId")?;
        let location = query.int("locationId")?;
        let data_center = query.get("dataCenterId");
        let min_gb = query.int("volumeGbMin")?;
        let volume_type = query.get("volumeType");
        if let Some(t) = volume_type {
            check_type(t)?;
        }
        let page = query.int("page")?.unwrap_or(0);
        let size = match query.int("size")? {
            None | Some(0) => 20,
            Some(n) => n.min(2000),
        };
        if bootable && vm_id.is_none() {
            return Err(ApiError::bad_request(
                "vmId is required when isBootable is true",
            ));
        }
        let matching: Vec<Value> = if bootable {
            vec![]
        } else {
            self.offers
                .iter()
                .filter_map(|o| Some((o, self.data_center(&o.data_center_id)?)))
                .filter(|(o, _)| data_center.is_none_or(|d| o.data_center_id == d))
                .filter(|(_, d)| provider.is_none_or(|p| d.provider_id == p))
                .filter(|(_, d)| location.is_none_or(|l| d.location_id == l))
                .filter(|(o, _)| min_gb.is_none_or(|m| o.volume_gb >= m))
                .filter(|(o, _)| volume_type.is_none_or(|t| o.volume_type == t))
                .map(|(o, d)| {
                    json!({
                        "providerId": d.provider_id,
                        "providerName": d.provider_name,
                        "locationId": d.location_id,
                        "locationName": d.location_name,
                        "dataCenterId": d.id,
                        "dataCenterName": d.name,
                        "volumeGb": o.volume_gb,
                        "volumeType": o.volume_type,
                        "cost": {"unit": "MONTHS", "currency": "EUR", "pricePerUnit": o.price},
                    })
                })
                .collect()
        };
        Ok(spring_page(matching, page, size))
    }

    fn offer(&self, data_center: &str, kind: &str, gb: u64) -> Option<&VolumeOffer> {
        self.offers
            .iter()
            .find(|o| o.data_center_id == data_center && o.volume_type == kind && o.volume_gb == gb)
    }

    // ---- volumes ----

    fn volume_file(&self, id: u64) -> PathBuf {
        self.state_dir.join(format!("volume-{id}.img"))
    }

    fn link(&self, id: u64) -> PathBuf {
        self.by_id.join(format!("virtio-{id}"))
    }

    fn volume_json(&self, v: &Volume) -> Value {
        self.volume_json_as(v, v.shown_status())
    }

    fn volume_json_as(&self, v: &Volume, status: &str) -> Value {
        let dc = self.data_center(&v.data_center).expect("known data center");
        let price = self
            .offer(&v.data_center, &v.kind, v.size_gb)
            .map(|o| o.price)
            .unwrap_or(0.1 * v.size_gb as f64);
        let mut out = json!({
            "id": v.id,
            "name": v.name,
            "projectId": PROJECT_ID,
            "sizeGb": v.size_gb,
            "type": v.kind,
            "isSystem": v.system,
            "status": status,
            "provider": {"id": dc.provider_id, "name": dc.provider_name},
            "location": location_json(dc),
            "dataCenter": data_center_json(dc),
            "createdAt": timestamp(v.created_at),
            "createdByName": USER_NAME,
            "createdById": USER_ID,
            "modifiedAt": timestamp(v.modified_at),
            "modifiedByName": USER_NAME,
            "modifiedById": USER_ID,
            "cost": {"unit": "MONTHS", "currency": "EUR", "price": price},
        });
        if let Some(vm) = v.attached_to {
            out["attachedToId"] = json!(vm);
        }
        out
    }

    pub fn volumes_now(&mut self) -> Vec<Value> {
        self.settle();
        self.volumes.values().map(|v| self.volume_json(v)).collect()
    }

    pub fn list_volumes(&self) -> ApiResult {
        Ok(Value::Array(
            self.volumes.values().map(|v| self.volume_json(v)).collect(),
        ))
    }

    fn volume(&self, id: u64) -> Result<&Volume, ApiError> {
        self.volumes
            .get(&id)
            .ok_or_else(|| ApiError::not_found(format!("Volume {id} not found")))
    }

    pub fn get_volume(&self, id: u64) -> ApiResult {
        Ok(self.volume_json(self.volume(id)?))
    }

    pub fn create_volume(&mut self, body: &Value) -> Result<(Value, Instant), ApiError> {
        let data_center = required_str(body, "dataCenterId")?;
        let gb = required_int(body, "volumeGb")?;
        let kind = required_str(body, "volumeType")?;
        check_type(kind)?;
        let attach_to = optional_int(body, "attachedToId")?;
        if self.data_center(data_center).is_none() {
            return Err(ApiError::unprocessable(format!(
                "Data center {data_center} does not exist"
            )));
        }
        if self.offer(data_center, kind, gb).is_none() {
            return Err(ApiError::unprocessable(format!(
                "The volume size must correspond to one of the available options \
                 ({gb} GB {kind} is not offered in {data_center})"
            )));
        }
        if let Some(vm) = attach_to {
            let spec = self.vm(vm).map_err(|_| {
                ApiError::unprocessable(format!("Virtual machine {vm} does not exist"))
            })?;
            if spec.data_center_id != data_center {
                return Err(ApiError::unprocessable(format!(
                    "Virtual machine {vm} is in data center {}, not {data_center}",
                    spec.data_center_id
                )));
            }
            if self.vm_busy(vm) {
                return Err(vm_busy_error(vm));
            }
        }
        let id = self.next_id;
        let file = self.volume_file(id);
        std::fs::File::create(&file)
            .and_then(|f| f.set_len(gb * GIB))
            .map_err(|e| {
                ApiError::new(
                    500,
                    "INTERNAL_SERVER_ERROR",
                    format!("{}: {e}", file.display()),
                )
            })?;
        self.next_id += 1;
        let now = SystemTime::now();
        let until = Instant::now() + self.draft;
        let volume = Volume {
            id,
            name: format!("volume-{}", random_name()),
            size_gb: gb,
            kind: kind.to_owned(),
            data_center: data_center.to_owned(),
            system: false,
            status: "AVAILABLE",
            attached_to: None,
            pending: Some((until, Change::Ready { attach_to })),
            created_at: now,
            modified_at: now,
            device: None,
        };
        let out = self.volume_json(&volume);
        self.volumes.insert(id, volume);
        Ok((out, until))
    }

    pub fn delete_volume(&mut self, id: u64) -> ApiResult {
        let v = self.volume(id)?;
        if v.system {
            return Err(ApiError::conflict(format!(
                "Volume {id} is the system volume of virtual machine {}",
                v.attached_to.unwrap_or_default()
            )));
        }
        match v.shown_status() {
            "ACTIVE" => {
                return Err(ApiError::conflict(format!(
                    "Volume {id} is attached to virtual machine {}; detach it first",
                    v.attached_to.unwrap_or_default()
                )));
            }
            "BUSY" => return Err(ApiError::conflict(format!("Volume {id} is busy"))),
            "DRAFT" if v.busy_vm().is_some() => {
                return Err(ApiError::conflict(format!("Volume {id} is being attached")));
            }
            _ => {}
        }
        let mut v = self.volumes.remove(&id).expect("present");
        v.pending = None;
        v.modified_at = SystemTime::now();
        let _ = std::fs::remove_file(self.volume_file(id));
        Ok(self.volume_json_as(&v, "DELETED"))
    }

    pub fn edit_volume(&mut self, id: u64, body: &Value) -> Result<(Value, Instant), ApiError> {
        let action = required_str(body, "action")?;
        if action != "edit" {
            return Err(ApiError::bad_request(format!(
                "Unknown volume action {action:?}"
            )));
        }
        let gb = required_int(body, "volumeGb")?;
        let busy = self.busy;
        let v = self.volume(id)?;
        if v.system {
            return Err(ApiError::bad_request(format!(
                "Volume {id} is a system volume: resize it with the VM's edithardware action"
            )));
        }
        if v.pending.is_some() {
            return Err(ApiError::conflict(format!(
                "Volume {id} is {}",
                v.shown_status()
            )));
        }
        if v.status == "FAILED" {
            return Err(ApiError::conflict(format!("Volume {id} has failed")));
        }
        if gb <= v.size_gb {
            return Err(ApiError::bad_request(format!(
                "The volume size can only be increased (volume {id} has {} GB)",
                v.size_gb
            )));
        }
        if self.offer(&v.data_center, &v.kind, gb).is_none() {
            return Err(ApiError::bad_request(format!(
                "The volume size must correspond to one of the available options \
                 ({gb} GB {} is not offered in {})",
                v.kind, v.data_center
            )));
        }
        let until = Instant::now() + busy;
        let v = self.volumes.get_mut(&id).expect("present");
        v.pending = Some((until, Change::Grow(gb)));
        v.modified_at = SystemTime::now();
        let v = self.volume(id)?;
        Ok((self.volume_json(v), until))
    }

    pub fn device(&mut self, id: u64) -> Option<String> {
        self.settle();
        self.volumes.get(&id)?.device.clone()
    }

    // ---- VMs ----

    fn vm(&self, id: u64) -> Result<&VmSpec, ApiError> {
        self.vms
            .iter()
            .find(|v| v.id == id)
            .ok_or_else(|| ApiError::not_found(format!("Virtual machine {id} not found")))
    }

    fn vm_busy(&self, vm: u64) -> bool {
        self.volumes.values().any(|v| v.busy_vm() == Some(vm))
    }

    fn vm_json(&self, spec: &VmSpec) -> Value {
        let dc = self.data_center(&spec.data_center_id).expect("known");
        let disks: Vec<Value> = self
            .volumes
            .values()
            .filter(|v| v.attached_to == Some(spec.id))
            .map(|v| {
                json!({
                    "id": v.id,
                    "sizeGb": v.size_gb,
                    "typeId": type_id(&v.kind),
                    "type": v.kind,
                    "isBootable": v.system,
                })
            })
            .collect();
        let status = if self.vm_busy(spec.id) {
            "BUSY"
        } else {
            "POWERED_ON"
        };
        json!({
            "id": spec.id,
            "createdAt": timestamp(self.started),
            "createdByName": USER_NAME,
            "createdById": USER_ID,
            "modifiedAt": timestamp(self.started),
            "modifiedByName": USER_NAME,
            "modifiedById": USER_ID,
            "name": spec.name,
            "projectId": PROJECT_ID,
            "status": status,
            "provider": {"id": dc.provider_id, "name": dc.provider_name},
            "location": location_json(dc),
            "dataCenter": data_center_json(dc),
            "os": {"id": 35, "family": "Linux", "type": "Ubuntu", "version": "24.04", "architecture": "x86-64"},
            "vCpu": 2,
            "vCpuType": "shared",
            "cloudNetworkType": "default",
            "ramGb": 4,
            "disks": disks,
            "localDisks": [],
            "networks": [{
                "id": 10_000 + spec.id,
                "ip": spec.ip,
                "ipVersion": 4,
                "networkTypeId": 2,
                "networkType": "PRIVATE",
            }],
            "securityGroup": {"id": 208, "name": "default"},
            "sshKeyId": null,
            "userName": "ubuntu",
            "tags": [],
            "cost": {"unit": "MONTHS", "currency": "EUR", "price": 24.5},
        })
    }

    pub fn list_vms(&self) -> ApiResult {
        Ok(Value::Array(
            self.vms.iter().map(|v| self.vm_json(v)).collect(),
        ))
    }

    pub fn get_vm(&self, id: u64) -> ApiResult {
        Ok(self.vm_json(self.vm(id)?))
    }

    /// `attach` or `detach`; answers the VM and when the volume's BUSY period ends.
    pub fn vm_action(&mut self, vm_id: u64, body: &Value) -> Result<(Value, Instant), ApiError> {
        let action = required_str(body, "action")?;
        let spec = self.vm(vm_id)?.clone();
        let attach = match action {
            "attach" => true,
            "detach" => false,
            "start" | "shutdown" | "reboot" | "transfer" | "clone" | "resizecompute"
            | "edithardware" | "rename" => {
                return Err(ApiError::bad_request(format!(
                    "The fake API does not model the {action:?} action"
                )));
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "Unknown virtual machine action {other:?}"
                )));
            }
        };
        let volume_id = required_int(body, "volumeId")?;
        let v = self.volume(volume_id)?;
        if v.system {
            return Err(ApiError::bad_request(format!(
                "Volume {volume_id} is a system volume"
            )));
        }
        if v.data_center != spec.data_center_id {
            return Err(ApiError::bad_request(format!(
                "Volume {volume_id} is in data center {}, virtual machine {vm_id} in {}",
                v.data_center, spec.data_center_id
            )));
        }
        if self.vm_busy(vm_id) {
            return Err(vm_busy_error(vm_id));
        }
        if v.pending.is_some() {
            return Err(ApiError::conflict(format!(
                "Action rejected: volume {volume_id} is {}",
                v.shown_status()
            )));
        }
        if v.status == "FAILED" {
            return Err(ApiError::conflict(format!(
                "Action rejected: volume {volume_id} has failed"
            )));
        }
        let change = match (attach, v.attached_to) {
            (true, Some(other)) if other == vm_id => {
                return Err(ApiError::conflict(format!(
                    "Action rejected: volume {volume_id} is already attached to virtual machine {vm_id}"
                )));
            }
            (true, Some(other)) => {
                return Err(ApiError::conflict(format!(
                    "Action rejected: volume {volume_id} is attached to virtual machine {other}"
                )));
            }
            (true, None) => Change::Attach(vm_id),
            (false, Some(other)) if other == vm_id => Change::Detach,
            (false, _) => {
                return Err(ApiError::conflict(format!(
                    "Action rejected: volume {volume_id} is not attached to virtual machine {vm_id}"
                )));
            }
        };
        let until = Instant::now() + self.busy;
        let v = self.volumes.get_mut(&volume_id).expect("present");
        v.pending = Some((until, change));
        v.modified_at = SystemTime::now();
        Ok((self.vm_json(&spec), until))
    }

    // ---- time and devices ----

    /// The earliest pending change.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.volumes
            .values()
            .filter_map(|v| v.pending.map(|(t, _)| t))
            .min()
    }

    /// Applies every change that is due.
    pub fn settle(&mut self) {
        if self.closed {
            return;
        }
        let now = Instant::now();
        let due: Vec<u64> = self
            .volumes
            .values()
            .filter(|v| v.pending.is_some_and(|(t, _)| t <= now))
            .map(|v| v.id)
            .collect();
        for id in due {
            let mut v = self.volumes.remove(&id).expect("present");
            let (_, change) = v.pending.take().expect("pending");
            self.apply(&mut v, change);
            v.modified_at = SystemTime::now();
            self.volumes.insert(id, v);
        }
    }

    fn apply(&self, v: &mut Volume, change: Change) {
        match change {
            Change::Ready { attach_to: None } => v.status = "AVAILABLE",
            Change::Ready {
                attach_to: Some(vm),
            }
            | Change::Attach(vm) => match self.attach_device(v.id) {
                Ok(device) => {
                    v.device = Some(device);
                    v.attached_to = Some(vm);
                    v.status = "ACTIVE";
                }
                Err(e) => {
                    eprintln!("fake-emma: volume {}: attach failed: {e}", v.id);
                    v.status = "FAILED";
                }
            },
            Change::Detach => {
                if let Some(device) = v.device.take() {
                    self.detach_device(v.id, &device);
                }
                v.attached_to = None;
                v.status = "AVAILABLE";
            }
            Change::Grow(gb) => {
                let grown = std::fs::OpenOptions::new()
                    .write(true)
                    .open(self.volume_file(v.id))
                    .and_then(|f| f.set_len(gb * GIB));
                match grown {
                    Ok(()) => {
                        v.size_gb = gb;
                        if let Some(device) = &v.device {
                            let _ = Command::new("losetup").args(["-c", device]).status();
                        }
                    }
                    Err(e) => {
                        eprintln!("fake-emma: volume {}: grow failed: {e}", v.id);
                        v.status = "FAILED";
                    }
                }
            }
        }
    }

    /// A loop device over the volume's file, linked as `<by_id>/virtio-<id>`.
    fn attach_device(&self, id: u64) -> Result<String, String> {
        let file = self.volume_file(id);
        if !file.is_file() {
            return Err(format!("{} is missing", file.display()));
        }
        let device = std::panic::catch_unwind(|| crate::loop_disk::attach(&file))
            .map_err(|_| "losetup failed".to_owned())?;
        let link = self.link(id);
        let _ = std::fs::remove_file(&link);
        if let Err(e) = std::os::unix::fs::symlink(&device, &link) {
            let _ = Command::new("losetup").args(["-d", &device]).status();
            return Err(format!("{}: {e}", link.display()));
        }
        Ok(device)
    }

    fn detach_device(&self, id: u64, device: &str) {
        let link = self.link(id);
        if std::fs::read_link(&link).is_ok_and(|target| target == Path::new(device)) {
            let _ = std::fs::remove_file(&link);
        }
        let _ = Command::new("losetup").args(["-d", device]).status();
    }

    /// Removes every link and loop device; nothing is attached after this.
    pub fn close(&mut self) {
        self.closed = true;
        let attached: Vec<(u64, String)> = self
            .volumes
            .values_mut()
            .filter_map(|v| Some((v.id, v.device.take()?)))
            .collect();
        for (id, device) in attached {
            self.detach_device(id, &device);
        }
    }
}

/// Applies due changes on time, also when no request comes.
pub(crate) async fn clock(shared: Arc<Shared>) {
    loop {
        // Registered before reading the deadline, so a deadline set meanwhile wakes us.
        let woken = shared.wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let next = {
            let mut cloud = shared.cloud.lock().unwrap();
            cloud.settle();
            cloud.next_deadline()
        };
        match next {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(tokio::time::Instant::from_std(at)) => {}
                    _ = &mut woken => {}
                }
            }
            None => woken.await,
        }
    }
}

// ---- JSON shapes and helpers ----

fn data_center_json(d: &DataCenter) -> Value {
    json!({
        "id": d.id,
        "name": d.name,
        "providerId": d.provider_id,
        "providerName": d.provider_name,
        "locationId": d.location_id,
        "locationName": d.location_name,
    })
}

fn location_json(d: &DataCenter) -> Value {
    json!({
        "id": d.location_id,
        "name": d.location_name,
        "continent": d.continent,
        "region": d.region,
        "latitude": d.latitude,
        "longitude": d.longitude,
    })
}

fn type_id(kind: &str) -> u64 {
    match kind {
        "hdd" => 1,
        "ssd" => 2,
        _ => 3,
    }
}

fn vm_busy_error(vm: u64) -> ApiError {
    ApiError::conflict(format!(
        "Action rejected: virtual machine {vm} is in a transitional state; try again later"
    ))
}

fn check_type(kind: &str) -> Result<(), ApiError> {
    match kind {
        "hdd" | "ssd" | "ssd-plus" => Ok(()),
        other => Err(ApiError::bad_request(format!(
            "volumeType: {other:?} is not one of hdd, ssd, ssd-plus"
        ))),
    }
}

fn required_str<'a>(body: &'a Value, field: &str) -> Result<&'a str, ApiError> {
    match &body[field] {
        Value::String(s) => Ok(s),
        Value::Null => Err(ApiError::bad_request(format!(
            "Required field is missing: {field}"
        ))),
        _ => Err(ApiError::bad_request(format!(
            "Invalid field value: {field} must be a string"
        ))),
    }
}

fn optional_int(body: &Value, field: &str) -> Result<Option<u64>, ApiError> {
    match &body[field] {
        Value::Null => Ok(None),
        v => v.as_u64().map(Some).ok_or_else(|| {
            ApiError::bad_request(format!(
                "Invalid field value: {field} must be a non-negative integer"
            ))
        }),
    }
}

fn required_int(body: &Value, field: &str) -> Result<u64, ApiError> {
    optional_int(body, field)?
        .ok_or_else(|| ApiError::bad_request(format!("Required field is missing: {field}")))
}

/// A Spring Data page of `items`.
fn spring_page(items: Vec<Value>, page: u64, size: u64) -> Value {
    let total = items.len() as u64;
    let total_pages = total.div_ceil(size);
    let content: Vec<Value> = items
        .into_iter()
        .skip((page * size) as usize)
        .take(size as usize)
        .collect();
    let sort = json!({"empty": true, "unsorted": true, "sorted": false});
    json!({
        "content": content,
        "pageable": {
            "offset": page * size,
            "sort": sort,
            "pageSize": size,
            "pageNumber": page,
            "paged": true,
            "unpaged": false,
        },
        "totalPages": total_pages,
        "totalElements": total,
        "last": page + 1 >= total_pages,
        "size": size,
        "number": page,
        "sort": sort,
        "first": page == 0,
        "numberOfElements": content.len(),
        "empty": content.is_empty(),
    })
}

/// A request's query parameters.
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(query: Option<&str>) -> Self {
        Self(
            query
                .unwrap_or_default()
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (percent_decode(k), percent_decode(v))
                })
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn int(&self, name: &str) -> Result<Option<u64>, ApiError> {
        self.get(name)
            .map(|v| {
                v.parse().map_err(|_| {
                    ApiError::bad_request(format!("{name}: {v:?} is not a valid integer"))
                })
            })
            .transpose()
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(b)) => {
                out.push(b);
                i += 2;
            }
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `2021-11-26T14:54:11` (UTC), the form of the spec's examples.
pub(crate) fn timestamp(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days since 1970-01-01 to a civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("/dev/urandom");
    buf
}

fn random_token() -> String {
    hex::encode(random_bytes::<32>())
}

fn random_name() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    random_bytes::<6>()
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

fn uuid_like() -> String {
    let h = hex::encode(random_bytes::<16>());
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_civil_utc() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00");
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_637_938_451);
        assert_eq!(timestamp(t), "2021-11-26T14:54:11");
        let leap = UNIX_EPOCH + std::time::Duration::from_secs(951_782_400);
        assert_eq!(timestamp(leap), "2000-02-29T00:00:00");
    }

    #[test]
    fn queries_decode() {
        let q = Query::parse(Some("a=1&b=x%20y+z&c&d=%zz"));
        assert_eq!(q.get("a"), Some("1"));
        assert_eq!(q.get("b"), Some("x y z"));
        assert_eq!(q.get("c"), Some(""));
        assert_eq!(q.get("d"), Some("%zz"));
    }
}
