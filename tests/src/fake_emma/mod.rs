//! A fake of the public Emma cloud API (OpenAPI "Public EMMA API" v1.0.50), served over HTTPS
//! with a test CA, for testing an Emma storage backend without the real cloud.
//!
//! # What it models
//!
//! The part of the API a CSI driver uses, under the base path `/external`:
//!
//! - Authentication: `POST /v1/issue-token` (client id and secret) and `POST /v1/refresh-token`.
//!   Tokens are random opaque strings, not JWTs. Access tokens live `access_ttl`, refresh tokens
//!   `refresh_ttl`; a refresh hands out a new pair and the old refresh token stays usable until it
//!   expires. Wrong credentials or a bad refresh token answer 400 `BAD_REQUEST` (the spec lists
//!   only 400 and 500 for these two). Every other endpoint wants `Authorization: Bearer <access
//!   token>`; a missing, unknown or expired one answers 401 `UNAUTHORIZED`.
//! - `GET /v1/data-centers` (bare array; filters `dataCenterName`, `locationId`, `providerName`)
//!   and `GET /v1/data-centers/{id}`.
//! - `GET /v1/volume-configs`: `isBootable` is required (400 without it); `isBootable=true` needs
//!   `vmId` and then answers an empty page (system-volume resize is not modelled). Filters
//!   `providerId`, `locationId`, `dataCenterId`, `volumeGbMin`, `volumeType`; a Spring page with
//!   `page` (0-based) and `size` (default 20, as Spring's).
//! - Volumes: list (bare array, system volumes included with `isSystem: true`), create, get,
//!   delete, and `edit` (grow only). Requests use `volumeGb`/`volumeType`/`dataCenterId`,
//!   answers `sizeGb`/`type`/`dataCenter`, as the spec has it. The server names volumes
//!   `volume-xxxxxx`; ids are integers counting up from 5001.
//! - VMs: list, get (with `disks[]`, its system disk first, then the attached data volumes, and a
//!   private `networks[]` entry), and the `attach`/`detach` actions.
//!
//! The state machine, with `draft` and `busy` from [`FakeEmmaOptions`]:
//!
//! - create: `DRAFT`, then `AVAILABLE` after `draft`; with `attachedToId`, `ACTIVE` on that VM
//!   after `draft` instead.
//! - attach: `BUSY` for `busy`, then `ACTIVE` with `attachedToId`; detach: `BUSY`, then
//!   `AVAILABLE` without `attachedToId`; edit: `BUSY`, then back to `AVAILABLE` or `ACTIVE` with
//!   the new `sizeGb`. While a volume is `BUSY` or `DRAFT`, `attachedToId` and `sizeGb` show the
//!   settled values (the new ones appear when the change completes). A VM is `BUSY` while an
//!   attach or detach on it is in progress, `POWERED_ON` otherwise.
//! - delete: 200 with the volume in `DELETED`, then 404. Deleting an `ACTIVE` or `BUSY` volume,
//!   or a system volume, answers 409 `CONFLICT` (our choice: the spec lists no conflict for
//!   delete, but the cloud cannot delete an attached disk).
//! - 409 `CONFLICT` for an attach or detach while the VM or the volume is busy (or in `DRAFT`),
//!   for an attach of a volume already attached (anywhere), for a detach of a volume not
//!   attached to that VM, and for a create with `attachedToId` of a busy VM. The spec does not
//!   list 409 for VM actions; real drivers see it.
//! - 422 `UNPROCESSABLE_ENTITY` for a create in an unknown data center, of a size or type not
//!   offered there, or attached to an unknown VM or one in another data center. 400 for an
//!   edit that does not grow the volume or asks for a size not offered (the spec lists only 400
//!   and 404 for volume actions), and 409 for an edit of a busy volume. 404 for unknown ids.
//! - Errors are always `{"code": "...", "message": "..."}`. A path outside `/external` answers
//!   404; below it, authentication comes first, then 404 for an unknown path and 405
//!   `METHOD_NOT_ALLOWED` for a known path with another method (not in the spec).
//! - `createdAt`/`modifiedAt` are UTC in the form of the spec's examples,
//!   `2021-11-26T14:54:11`.
//!
//! Status changes are kept as deadlines: every request first applies the ones that are due,
//! and a background task applies them on time when nobody asks.
//!
//! # Disks on this machine
//!
//! Every data volume is a sparse file `<state>/volume-<id>.img` of `sizeGb` GiB. The moment an
//! attach completes (when the volume turns `ACTIVE`, not when the request is accepted), the fake
//! attaches a loop device over the file and links `<by_id>/virtio-<id>` to it; the moment a
//! detach completes (the volume turns `AVAILABLE`) it removes the link and detaches the loop
//! device. A completed edit grows the file and, when attached, refreshes the loop device's size
//! (`losetup -c`). Deleting removes the file. Dropping the fake removes every link and detaches
//! every loop device it made (a device still mounted is freed by the kernel once unmounted).
//! If a loop device cannot be set up, the volume turns `FAILED`. Needs root.
//!
//! # Faults and observation
//!
//! [`Faults`] injects 429 (with `Retry-After`), 500, 409 on VM actions, delays, and connections
//! closed without an answer (before or after acting), each for the next N requests, optionally
//! only those matching a method and path prefix. [`FakeEmma::redirect`] answers 307 for a path.
//! [`FakeEmma::requests`] records every request, [`FakeEmma::connections`] counts TCP
//! connections (to check keep-alive pooling).
//!
//! # Limits
//!
//! - Only the endpoints above. Other VM actions (start, reboot, clone, ...) answer 400; VMs,
//!   Kubernetes clusters, projects, spot instances and every other resource are not modelled.
//!   `projectId` query parameters are ignored.
//! - No access levels (Read/Operate/Manage): any valid token may do anything, so 403 never
//!   happens.
//! - State lives in memory: a restarted fake starts with no volumes (old files under the state
//!   directory are overwritten as ids are reused).
//! - No rate limiting of its own (429 only when injected), no HTTP/2, no pagination beyond
//!   `volume-configs`, and no `ssd-plus` offers unless configured.
//! - Costs, user names, project ids and VM hardware are plausible constants, not the cloud's.
//! - The real cloud's timings (a create takes minutes) are compressed to `draft` and `busy`.

mod api;
mod faults;
pub mod rig;
mod state;
mod tls;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use faults::Faults;

/// A data center the fake offers.
#[derive(Debug, Clone)]
pub struct DataCenter {
    /// The data center's id, e.g. `aws-eu-central-1`.
    pub id: String,
    /// The provider's own name for it, e.g. `eu-central-1`.
    pub name: String,
    pub provider_id: u64,
    pub provider_name: String,
    pub location_id: u64,
    pub location_name: String,
    pub continent: String,
    pub region: String,
    pub latitude: f64,
    pub longitude: f64,
}

/// One data-volume configuration offered (`GET /v1/volume-configs?isBootable=false`).
#[derive(Debug, Clone)]
pub struct VolumeOffer {
    pub data_center_id: String,
    /// `hdd`, `ssd` or `ssd-plus`.
    pub volume_type: String,
    pub volume_gb: u64,
    /// EUR per month.
    pub price: f64,
}

/// A VM of the project, with one private network address and a system disk.
#[derive(Debug, Clone)]
pub struct VmSpec {
    pub id: u64,
    pub name: String,
    pub data_center_id: String,
    pub ip: String,
}

/// How to start a [`FakeEmma`].
#[derive(Debug, Clone)]
pub struct FakeEmmaOptions {
    pub client_id: String,
    pub client_secret: String,
    /// How long a new volume stays `DRAFT`.
    pub draft: Duration,
    /// How long an attach, detach or edit keeps the volume `BUSY`.
    pub busy: Duration,
    /// Lifetime of an access token (`expiresIn`).
    pub access_ttl: Duration,
    /// Lifetime of a refresh token (`refreshExpiresIn`).
    pub refresh_ttl: Duration,
    /// Where `virtio-<id>` links to attached volumes' loop devices appear (default: `by-id`
    /// under the state directory).
    pub by_id: Option<PathBuf>,
    /// Where the volumes' sparse files and `ca.pem` go (default: a temporary directory removed
    /// with the fake).
    pub state: Option<PathBuf>,
    /// Extra DNS names or IP addresses for the server certificate, besides `localhost`,
    /// `127.0.0.1` and the listen address.
    pub extra_names: Vec<String>,
    /// Where to listen (default `127.0.0.1:0`, a free port).
    pub listen: SocketAddr,
    pub data_centers: Vec<DataCenter>,
    pub offers: Vec<VolumeOffer>,
    pub vms: Vec<VmSpec>,
}

impl Default for FakeEmmaOptions {
    fn default() -> Self {
        let data_centers = default_data_centers();
        let offers = default_offers(&data_centers);
        Self {
            client_id: "modcsi-test-client".into(),
            client_secret: "modcsi-test-secret".into(),
            draft: Duration::from_millis(300),
            busy: Duration::from_millis(200),
            access_ttl: Duration::from_secs(300),
            refresh_ttl: Duration::from_secs(1800),
            by_id: None,
            state: None,
            extra_names: vec![],
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            data_centers,
            offers,
            vms: default_vms(),
        }
    }
}

/// `aws-eu-central-1` (AWS, Frankfurt) and `gcp-europe-west3` (GCP, Frankfurt).
pub fn default_data_centers() -> Vec<DataCenter> {
    let frankfurt = |id: &str, name: &str, provider_id, provider: &str| DataCenter {
        id: id.into(),
        name: name.into(),
        provider_id,
        provider_name: provider.into(),
        location_id: 3,
        location_name: "Frankfurt".into(),
        continent: "Europe".into(),
        region: "EMEA".into(),
        latitude: 50.110922,
        longitude: 8.682127,
    };
    vec![
        frankfurt("aws-eu-central-1", "eu-central-1", 2, "AWS"),
        frankfurt("gcp-europe-west3", "europe-west3", 4, "GCP"),
    ]
}

/// Data volumes of 1, 2, 4, ... 128 GB, `ssd` and `hdd`, in every data center.
pub fn default_offers(data_centers: &[DataCenter]) -> Vec<VolumeOffer> {
    let mut offers = vec![];
    for dc in data_centers {
        for (volume_type, per_gb) in [("ssd", 0.119), ("hdd", 0.054)] {
            for shift in 0..8 {
                let volume_gb = 1u64 << shift;
                offers.push(VolumeOffer {
                    data_center_id: dc.id.clone(),
                    volume_type: volume_type.into(),
                    volume_gb,
                    price: per_gb * volume_gb as f64,
                });
            }
        }
    }
    offers
}

/// `node-a` (101, 10.0.0.11) and `node-b` (102, 10.0.0.12) in `aws-eu-central-1`, `node-c`
/// (103, 10.1.0.13) in `gcp-europe-west3`.
pub fn default_vms() -> Vec<VmSpec> {
    let vm = |id, name: &str, dc: &str, ip: &str| VmSpec {
        id,
        name: name.into(),
        data_center_id: dc.into(),
        ip: ip.into(),
    };
    vec![
        vm(101, "node-a", "aws-eu-central-1", "10.0.0.11"),
        vm(102, "node-b", "aws-eu-central-1", "10.0.0.12"),
        vm(103, "node-c", "gcp-europe-west3", "10.1.0.13"),
    ]
}

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query as sent, base path included (`/external/v1/volumes`).
    pub path: String,
    /// Header names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The status answered; `None` when the connection was closed without an answer.
    pub status: Option<u16>,
}

impl Recorded {
    /// The path below the base path, without the query (`/v1/volumes`).
    pub fn api_path(&self) -> &str {
        let path = self.path.split('?').next().unwrap_or_default();
        path.strip_prefix(api::BASE).unwrap_or(path)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// What the server tasks share.
pub(crate) struct Shared {
    pub(crate) cloud: Mutex<state::Cloud>,
    pub(crate) faults: Faults,
    pub(crate) redirects: Mutex<Vec<(String, String)>>,
    pub(crate) requests: Mutex<Vec<Recorded>>,
    pub(crate) connections: AtomicUsize,
    /// Wakes the clock when a new deadline is set.
    pub(crate) wake: tokio::sync::Notify,
}

/// The fake Emma API, serving HTTPS in the background until dropped.
pub struct FakeEmma {
    shared: Arc<Shared>,
    base_url: String,
    ca_file: PathBuf,
    state_dir: PathBuf,
    by_id: PathBuf,
    client_id: String,
    client_secret: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _temp: Option<tempfile::TempDir>,
}

impl FakeEmma {
    /// Starts serving on `options.listen` on the current tokio runtime. Panics when it cannot
    /// (the port is taken, the state directory cannot be written, the options are inconsistent).
    pub async fn start(options: FakeEmmaOptions) -> FakeEmma {
        let temp = match options.state {
            Some(_) => None,
            None => Some(tempfile::tempdir().expect("temporary directory")),
        };
        let state_dir = match (&options.state, &temp) {
            (Some(dir), _) => dir.clone(),
            (None, Some(t)) => t.path().to_owned(),
            (None, None) => unreachable!(),
        };
        std::fs::create_dir_all(&state_dir)
            .unwrap_or_else(|e| panic!("state directory {}: {e}", state_dir.display()));
        let by_id = options
            .by_id
            .clone()
            .unwrap_or_else(|| state_dir.join("by-id"));
        std::fs::create_dir_all(&by_id)
            .unwrap_or_else(|e| panic!("by-id directory {}: {e}", by_id.display()));

        let listener = tokio::net::TcpListener::bind(options.listen)
            .await
            .unwrap_or_else(|e| panic!("listen on {}: {e}", options.listen));
        let addr = listener.local_addr().unwrap();
        let host: IpAddr = if addr.ip().is_unspecified() {
            Ipv4Addr::LOCALHOST.into()
        } else {
            addr.ip()
        };
        let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        if !names.contains(&host.to_string()) {
            names.push(host.to_string());
        }
        for name in &options.extra_names {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        let tls = tls::TestTls::new(&names);
        let ca_file = state_dir.join("ca.pem");
        std::fs::write(&ca_file, &tls.ca_pem)
            .unwrap_or_else(|e| panic!("{}: {e}", ca_file.display()));
        let base_url = match host {
            IpAddr::V4(ip) => format!("https://{ip}:{}{}", addr.port(), api::BASE),
            IpAddr::V6(ip) => format!("https://[{ip}]:{}{}", addr.port(), api::BASE),
        };

        let cloud = state::Cloud::new(&options, state_dir.clone(), by_id.clone());
        let shared = Arc::new(Shared {
            cloud: Mutex::new(cloud),
            faults: Faults::default(),
            redirects: Mutex::new(vec![]),
            requests: Mutex::new(vec![]),
            connections: AtomicUsize::new(0),
            wake: tokio::sync::Notify::new(),
        });
        let tasks = vec![
            tokio::spawn(api::serve(listener, tls.server_config, shared.clone())),
            tokio::spawn(state::clock(shared.clone())),
        ];
        FakeEmma {
            shared,
            base_url,
            ca_file,
            state_dir,
            by_id,
            client_id: options.client_id,
            client_secret: options.client_secret,
            tasks,
            _temp: temp,
        }
    }

    /// `https://127.0.0.1:PORT/external` (the listen address, or 127.0.0.1 when listening on
    /// every address).
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// A pooled HTTPS client (hyper over rustls) that trusts only the fake's test CA: what a
    /// native program would use, for the fake's own tests and the benchmark.
    pub fn client(
        &self,
    ) -> hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        http_body_util::Full<bytes::Bytes>,
    > {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&self.ca_file).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector)
    }

    /// The test CA's certificate (PEM), the only one the server's certificate chains to.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// Where the volumes' sparse files are.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Where `virtio-<id>` links to attached volumes appear.
    pub fn by_id(&self) -> &Path {
        &self.by_id
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    pub fn client_secret(&self) -> &str {
        &self.client_secret
    }

    /// Fault injection; see [`Faults`].
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// Answers every request whose path below the base path starts with `path_prefix` (e.g.
    /// `/v1/volumes`) with 307 to `location`, until [`FakeEmma::clear_redirects`].
    pub fn redirect(&self, path_prefix: &str, location: &str) {
        self.shared
            .redirects
            .lock()
            .unwrap()
            .push((path_prefix.to_owned(), location.to_owned()));
    }

    pub fn clear_redirects(&self) {
        self.shared.redirects.lock().unwrap().clear();
    }

    /// Makes every access token issued so far expired (refresh tokens stay valid).
    pub fn expire_access_tokens(&self) {
        self.shared.cloud.lock().unwrap().expire_access_tokens();
    }

    /// Makes every refresh token issued so far expired.
    pub fn expire_refresh_tokens(&self) {
        self.shared.cloud.lock().unwrap().expire_refresh_tokens();
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// How many requests had `method` and, below the base path, exactly `api_path` (query
    /// ignored): `count("POST", "/v1/volumes")`.
    pub fn count(&self, method: &str, api_path: &str) -> usize {
        self.shared
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.method.eq_ignore_ascii_case(method) && r.api_path() == api_path)
            .count()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Every volume as `GET /v1/volumes` would show it now (system volumes included).
    pub fn volumes(&self) -> Vec<serde_json::Value> {
        self.shared.cloud.lock().unwrap().volumes_now()
    }

    /// Data volumes only (`isSystem: false`), as the API shows them now.
    pub fn data_volumes(&self) -> Vec<serde_json::Value> {
        self.volumes()
            .into_iter()
            .filter(|v| v["isSystem"] == false)
            .collect()
    }

    /// The loop device of an attached volume (`/dev/loopN`), once its attach completed.
    pub fn device(&self, volume_id: u64) -> Option<String> {
        self.shared.cloud.lock().unwrap().device(volume_id)
    }
}

impl Drop for FakeEmma {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        // Whatever the tasks are doing, no device is made after this and none is left behind.
        match self.shared.cloud.lock() {
            Ok(mut cloud) => cloud.close(),
            Err(poisoned) => poisoned.into_inner().close(),
        }
    }
}
