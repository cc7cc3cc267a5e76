//! Test backend on the 0.2 contract: exports every optional interface and, when a request asks
//! it to (the `break` parameter of CreateVolume, or special ids elsewhere), breaks a rule the
//! host must enforce. Otherwise it behaves: volumes are `rb-<name>` of the requested size.
//!
//! `break` values: `capacity` (returns less than required), `reserved-key` (sets a
//! `modcsi.io/` context key), `bad-attachment` (an NVMe address with a shell metacharacter),
//! `bad-id` (an id with `/`), `big-context` (a context over 4 KiB), `log-secret` (logs its
//! secrets, control characters and a flood), `error-secret` (fails naming its secret),
//! `panic-secret` (panics naming its secret), `config` (puts configuration values in the
//! context), `http` (sends a request to an http target, the answer in the context), `store`
//! (counts creates in the durable store, count in the context). Volume
//! `rb-unpublishable` cannot be published; `rb-stuck` cannot be unpublished.

use modcsi_backend_sdk::types::*;
use modcsi_backend_sdk::{config, log_at, lookup, store};

struct RuleBreaker;

fn volume(id: String, capacity_bytes: u64) -> Volume {
    Volume {
        id,
        capacity_bytes,
        context: vec![],
        topology: vec![],
        attachment: Some(Attachment::LocalDir),
    }
}

fn secret_text(secrets: &KeyValues) -> String {
    secrets
        .iter()
        .map(|(_, v)| v.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

impl modcsi_backend_sdk::identity::Guest for RuleBreaker {
    fn info() -> BackendInfo {
        BackendInfo {
            name: "rule-breaker".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            access_modes: vec![
                AccessMode::SingleNodeWriter,
                AccessMode::MultiNodeMultiWriter,
            ],
            volume_modes: VolumeModes::FILESYSTEM | VolumeModes::BLOCK,
            content_sources: ContentSources::SNAPSHOT,
            topology: false,
            parameters: vec![],
        }
    }

    fn probe() -> Result<(), Error> {
        Ok(())
    }
}

impl modcsi_backend_sdk::controller::Guest for RuleBreaker {
    fn create_volume(request: CreateRequest) -> Result<Volume, Error> {
        let mut v = volume(
            format!("rb-{}", request.name),
            request.capacity.required_bytes,
        );
        // `disk-<name>`: a disk the node finds by its by-id name.
        if let Some(disk) = request.name.strip_prefix("disk-") {
            v.attachment = Some(Attachment::Disk(DiskLocator::ById(disk.into())));
        }
        // `nvme-<subsystem>-<namespace>`: namespace <namespace> of an NVMe/TCP subsystem
        // reachable through two portals, with the reconnect settings of the RDS driver.
        if let Some((subsystem, namespace)) = request
            .name
            .strip_prefix("nvme-")
            .and_then(|rest| rest.rsplit_once('-'))
        {
            v.attachment = Some(Attachment::NvmeTcp(NvmeTarget {
                portals: ["192.0.2.10", "192.0.2.11"]
                    .map(|address| Portal {
                        address: address.into(),
                        port: 4420,
                    })
                    .into(),
                nqn: format!("nqn.2000-02.com.mikrotik:{subsystem}"),
                namespace_id: namespace.parse().ok(),
                ctrl_loss_tmo_seconds: Some(-1),
                reconnect_delay_seconds: Some(5),
                keep_alive_tmo_seconds: None,
            }));
        }
        let secrets = secret_text(&request.secrets);
        match lookup(&request.parameters, "break") {
            Some("capacity") => v.capacity_bytes = request.capacity.required_bytes / 2,
            Some("reserved-key") => v
                .context
                .push(("modcsi.io/attachment".into(), "local-dir".into())),
            Some("bad-attachment") => {
                v.attachment = Some(Attachment::NvmeTcp(NvmeTarget {
                    portals: vec![Portal {
                        address: "10.0.0.1;reboot".into(),
                        port: 4420,
                    }],
                    nqn: "nqn.2000-02.com.mikrotik:x".into(),
                    namespace_id: None,
                    ctrl_loss_tmo_seconds: None,
                    reconnect_delay_seconds: None,
                    keep_alive_tmo_seconds: None,
                }))
            }
            Some("bad-id") => v.id = "../etc".into(),
            Some("big-context") => v.context.push(("big".into(), "x".repeat(5000))),
            Some("log-secret") => {
                log_at(
                    LogLevel::Warn,
                    &format!("secret is {secrets}"),
                    &[("value", &secrets)],
                );
                log_at(LogLevel::Warn, "line one\nINFO forged: all good", &[]);
                // 8 MiB in one message: the host copies a bounded prefix.
                log_at(
                    LogLevel::Warn,
                    &"H".repeat(8 << 20),
                    &[("big", &"h".repeat(1 << 20))],
                );
                let flood = "f".repeat(2000);
                for _ in 0..200 {
                    log_at(LogLevel::Warn, &flood, &[]);
                }
            }
            Some("error-secret") => {
                return Err(Error::Internal(format!("cannot log in with {secrets}")));
            }
            Some("panic-secret") => panic!("leaking {secrets}"),
            // Runs the `ssh` parameter on the configured target `rds` (0.2.1's ssh import).
            Some("ssh") => {
                let command = lookup(&request.parameters, "command").unwrap_or("true");
                let out = modcsi_backend_sdk::ssh::run("rds", command, 5_000)
                    .map_err(|e| Error::Unavailable(format!("ssh: {e:?}")))?;
                v.context.push(("ssh-stdout".into(), out.stdout));
                v.context
                    .push(("ssh-exit".into(), format!("{:?}", out.exit_status)));
            }
            // Sends a request to the `target` http target (0.2.2's wasi:http import): a POST of
            // `body` when given; with `follow`, a redirect's Location is tried too; `repeat` times.
            Some("http") => {
                use modcsi_backend_sdk::http::{Method, Request};
                let send = |target: &str, path: &str| {
                    let request = match lookup(&request.parameters, "body") {
                        Some(body) => {
                            Request::new(Method::Post, target, path).body("application/json", body)
                        }
                        None => Request::new(Method::Get, target, path),
                    };
                    request.send()
                };
                let target = lookup(&request.parameters, "target").unwrap_or("api");
                let path = lookup(&request.parameters, "path").unwrap_or("/");
                // `repeat`: that many requests in this one call (for the benchmark).
                let repeat: usize = lookup(&request.parameters, "repeat")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1);
                let mut text = String::new();
                for _ in 0..repeat {
                    text = match send(target, path) {
                        Ok(r) => format!("{} {}", r.status, r.text()),
                        Err(e) => format!("error: {e}"),
                    };
                }
                if lookup(&request.parameters, "follow").is_some()
                    && let Ok(r) = send(target, path)
                    && let Some(location) = r.header("location")
                {
                    let rest = location.split_once("://").map_or(location, |(_, r)| r);
                    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
                    text = match send(authority, if path.is_empty() { "/" } else { path }) {
                        Ok(r) => format!("followed: {} {}", r.status, r.text()),
                        Err(e) => format!("followed: error: {e}"),
                    };
                }
                text.truncate(1000);
                v.context.push(("http".into(), text));
            }
            Some("config") => {
                for key in config::keys() {
                    let value = config::get(&key).unwrap_or_default();
                    v.context.push((format!("config.{key}"), value));
                }
            }
            Some("store") => {
                let count = loop {
                    let current = store::get("creates")?;
                    let (n, version) = match &current {
                        Some(e) => (
                            u64::from_le_bytes(e.value.clone().try_into().unwrap_or([0; 8])),
                            Some(e.version),
                        ),
                        None => (0, None),
                    };
                    match store::put("creates", &(n + 1).to_le_bytes(), version) {
                        Ok(_) => break n + 1,
                        Err(store::StoreError::Conflict(_)) => continue,
                        Err(e) => return Err(e.into()),
                    }
                };
                v.context.push(("creates".into(), count.to_string()));
            }
            _ => {}
        }
        Ok(v)
    }

    /// Says NOT_FOUND for every volume: the host must turn that into a successful deletion.
    fn delete_volume(volume_id: String, _: KeyValues) -> Result<(), Error> {
        Err(Error::NotFound(format!("{volume_id} is gone")))
    }

    /// Confirms anything, known or not: the host must check existence first.
    fn validate_capabilities(
        _: String,
        _: Vec<Capability>,
        _: KeyValues,
        _: KeyValues,
        _: KeyValues,
    ) -> Result<Validation, Error> {
        Ok(Validation {
            confirmed: true,
            message: String::new(),
        })
    }
}

impl modcsi_backend_sdk::publish::Guest for RuleBreaker {
    /// Publishes anything, except volume `rb-unpublishable`, which the storage refuses.
    fn controller_publish(request: PublishRequest) -> Result<PublishResult, Error> {
        if request.volume_id == "rb-unpublishable" {
            return Err(Error::Unavailable("the storage refused the export".into()));
        }
        Ok(PublishResult {
            context: request.node_attributes,
            attachment: None,
        })
    }
    /// Unpublishes anything, except volume `rb-stuck`, whose detach always fails.
    fn controller_unpublish(volume_id: String, _: String, _: KeyValues) -> Result<(), Error> {
        if volume_id == "rb-stuck" {
            return Err(Error::Unavailable(
                "the storage did not answer the detach".into(),
            ));
        }
        Ok(())
    }
}

impl modcsi_backend_sdk::expand::Guest for RuleBreaker {
    /// Grows to the requested size, except for volumes named `rb-shrinks`, which answer less.
    fn expand_volume(
        volume_id: String,
        capacity: CapacityRange,
        _: Option<Capability>,
        _: KeyValues,
    ) -> Result<ExpandResult, Error> {
        let bytes = if volume_id == "rb-shrinks" {
            1
        } else {
            capacity.required_bytes
        };
        Ok(ExpandResult {
            capacity_bytes: bytes,
            node_expansion_required: false,
        })
    }
}

impl modcsi_backend_sdk::list_volumes::Guest for RuleBreaker {
    /// Pages of one volume more than asked for; a first page ends with token `next`.
    fn list_volumes(max_entries: u32, starting_token: String) -> Result<VolumePage, Error> {
        let n = if max_entries == 0 { 3 } else { max_entries + 1 };
        Ok(VolumePage {
            volumes: (0..n)
                .map(|i| Volume {
                    id: format!("rb-listed-{i}"),
                    capacity_bytes: 1,
                    context: vec![],
                    topology: vec![],
                    attachment: Some(Attachment::LocalDir),
                })
                .collect(),
            next_token: if starting_token.is_empty() {
                "next".into()
            } else {
                String::new()
            },
        })
    }
}

impl modcsi_backend_sdk::capacity::Guest for RuleBreaker {
    fn get_capacity(
        _: KeyValues,
        _: Vec<Capability>,
        _: Option<Topology>,
    ) -> Result<Capacity, Error> {
        Ok(Capacity {
            available_bytes: 7 << 30,
            maximum_volume_bytes: Some(1 << 40),
            minimum_volume_bytes: Some(1 << 20),
        })
    }
}

impl modcsi_backend_sdk::snapshots::Guest for RuleBreaker {
    fn create_snapshot(
        source: String,
        name: String,
        _: KeyValues,
        _: KeyValues,
    ) -> Result<Snapshot, Error> {
        Ok(Snapshot {
            id: format!("snap-{name}"),
            source_volume_id: source,
            size_bytes: 1,
            created_unix_seconds: 0,
            ready: true,
        })
    }
    fn delete_snapshot(snapshot_id: String, _: KeyValues) -> Result<(), Error> {
        Err(Error::NotFound(format!("{snapshot_id} is gone")))
    }
    /// With a snapshot-id filter of `bad`, answers with an unusable id.
    fn list_snapshots(
        _: u32,
        _: String,
        filter: SnapshotFilter,
        _: KeyValues,
    ) -> Result<SnapshotPage, Error> {
        let id = if filter.snapshot_id == "bad" {
            "bad id/..".to_owned()
        } else {
            "snap-1".to_owned()
        };
        Ok(SnapshotPage {
            snapshots: vec![Snapshot {
                id,
                source_volume_id: "rb-1".into(),
                size_bytes: 1,
                created_unix_seconds: 0,
                ready: true,
            }],
            next_token: String::new(),
        })
    }
}

impl modcsi_backend_sdk::node_identity::Guest for RuleBreaker {
    fn node_identity() -> Result<NodeInfo, Error> {
        Ok(NodeInfo {
            node_id: None,
            topology: vec![],
            max_volumes: 7,
            attributes: vec![(
                "hostnqn".into(),
                "nqn.2014-08.org.nvmexpress:uuid:test".into(),
            )],
        })
    }
}

impl modcsi_backend_sdk::get_volume::Guest for RuleBreaker {
    /// Knows only volumes whose id starts with `rb-known`.
    fn get_volume(volume_id: String) -> Result<VolumeStatus, Error> {
        if volume_id.starts_with("rb-known") {
            Ok(VolumeStatus {
                capacity_bytes: 1,
                condition: None,
                published_nodes: vec![],
            })
        } else {
            Err(Error::NotFound(format!("no volume {volume_id}")))
        }
    }
}

impl modcsi_backend_sdk::locate::Guest for RuleBreaker {
    /// Volumes named `legacy-*` live on a disk found by its by-id name; `legacy-escape` names a
    /// path outside /dev/disk/by-id.
    fn locate(volume_id: String, _: KeyValues) -> Result<Attachment, Error> {
        match volume_id.as_str() {
            "legacy-escape" => Ok(Attachment::Disk(DiskLocator::ById("../../sda".into()))),
            _ => Ok(Attachment::LocalDir),
        }
    }
}

modcsi_backend_sdk::export_backend!(RuleBreaker);
modcsi_backend_sdk::export_publish!(RuleBreaker);
modcsi_backend_sdk::export_expand!(RuleBreaker);
modcsi_backend_sdk::export_list_volumes!(RuleBreaker);
modcsi_backend_sdk::export_capacity!(RuleBreaker);
modcsi_backend_sdk::export_snapshots!(RuleBreaker);
modcsi_backend_sdk::export_node_identity!(RuleBreaker);
modcsi_backend_sdk::export_get_volume!(RuleBreaker);
modcsi_backend_sdk::export_locate!(RuleBreaker);
