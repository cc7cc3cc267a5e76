//! `modcsi backend check`: the conformance run a backend author needs no checkout for. It loads
//! the component through the host's own runtime (artifact cache, memory cap, deadlines, the
//! capabilities its configuration grants), asks it what a CO would, applies to each answer the
//! rules the host applies when serving ([`crate::lifecycle::rules`]), and reports each rule of
//! [`RULES`] as passed, failed or skipped, with every call's time. What it creates it deletes.

mod report;
mod rules;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use report::{CallTime, Finding, Report, Verdict};
pub use rules::{RULES, Rule, markdown};

use crate::lifecycle::rules as host_rules;
use crate::runtime::{Backend, BackendConfig, CallError, Optional, RuntimeOptions};
use crate::state::MemoryStore;
use crate::volume::attachment;
use crate::volume::types::{
    AccessType, BackendError, Capability, CapacityRange, CreateRequest, KeyValues, MountVolume,
    PublishRequest, SnapshotFilter, Volume,
};
use crate::volume::validate;

/// What the checker asks with.
pub struct CheckOptions {
    /// Where compiled components are cached.
    pub cache_dir: PathBuf,
    /// The backend's configuration, as `modcsi serve --backend-config` reads it.
    pub config: BackendConfig,
    pub call_timeout: Duration,
    /// Linear-memory cap of one instance, in bytes.
    pub memory_limit: usize,
    /// Requested capacity of the test volume, in bytes.
    pub size: u64,
    /// StorageClass parameters of every CreateVolume.
    pub parameters: KeyValues,
    /// Secrets of every call that carries them.
    pub secrets: KeyValues,
    /// The node ControllerPublish publishes to (the backend's own node id wins when
    /// `node-identity` names one).
    pub node_id: String,
}

/// Runs every rule against the component at `path`.
pub async fn check(path: &Path, options: &CheckOptions) -> Report {
    let mut report = Report::new(path);
    let started = Instant::now();
    let loaded = Backend::load(
        path,
        RuntimeOptions {
            cache_dir: options.cache_dir.clone(),
            memory_limit: options.memory_limit,
            call_timeout: options.call_timeout,
            max_concurrent_calls: 2,
            config: Arc::new(options.config.clone()),
            store: Some(Arc::new(MemoryStore::default())),
            node_addresses: crate::node::addresses::addresses().into(),
        },
    )
    .await;
    let backend = match loaded {
        Ok(backend) => backend,
        Err(e) => {
            report.record("loads", Verdict::Fail(e.to_string()));
            for rule in &RULES[1..] {
                report.record(rule.id, Verdict::Skip("the component did not load".into()));
            }
            return report;
        }
    };
    report.describe(&backend);
    report.record(
        "loads",
        Verdict::Pass(format!(
            "contract {}, loaded in {:.0} ms ({:?})",
            backend.wit_version(),
            started.elapsed().as_secs_f64() * 1e3,
            backend.origin()
        )),
    );
    let mut run = Run {
        backend: &backend,
        options,
        report,
        volume: None,
        leftovers: BTreeSet::new(),
        stamp: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis()),
    };
    run.all().await;
    run.clean_up().await;
    run.report
}

/// Something the run made on the storage.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Made {
    Volume(String),
    Snapshot(String),
}

/// A rule's outcome before it is recorded: passed with a detail, or failed with the reason.
type Outcome = Result<String, String>;

struct Run<'a> {
    backend: &'a Backend,
    options: &'a CheckOptions,
    report: Report,
    /// The volume `create` made, with the request that made it.
    volume: Option<(CreateRequest, Volume)>,
    /// Volumes and snapshots made and not (yet) deleted: removed at the end, whatever failed.
    leftovers: BTreeSet<Made>,
    /// Makes this run's names its own, so runs against one storage system never meet.
    stamp: u128,
}

impl Run<'_> {
    /// Every rule after `loads`, in the table's order.
    async fn all(&mut self) {
        for rule in &RULES[1..] {
            let verdict = self.rule(rule).await;
            self.report.record(rule.id, verdict);
        }
    }

    /// Runs one rule, or says why it does not apply.
    async fn rule(&mut self, rule: &Rule) -> Verdict {
        if let Some(interface) = rule.needs
            && !self.backend.offers(interface)
        {
            return Verdict::Skip(format!("the backend does not export {}", interface.name()));
        }
        let made = self.volume.clone();
        let outcome = match (rule.id, &made) {
            ("describes-itself", _) => self.describes_itself(),
            ("probe", _) => self.probe().await,
            ("create", _) => self.create().await,
            ("declarations-match", made) => self.declarations(made.as_ref().map(|(_, v)| v)),
            ("required-parameters", _) => self.required_parameters().await,
            ("parameters", _) => self.parameters().await,
            ("huge-volume", _) => self.huge_volume().await,
            ("validate-unknown", _) => self.validate_unknown().await,
            ("capacity", _) => self.capacity().await,
            ("pool", _) => self.pool().await,
            ("node-identity", _) => self.node_identity().await,
            ("publish-unknown", _) => self.publish_unknown().await,
            (_, None) => return Verdict::Skip("no volume to check: create failed".into()),
            ("create-idempotent", Some((request, volume))) => {
                self.create_again(request, volume).await
            }
            ("validate", Some((request, volume))) => self.validate(request, volume).await,
            ("locate", Some((_, volume))) => self.locate(volume).await,
            ("get-volume", Some((request, volume))) => self.get_volume(request, volume).await,
            ("list-volumes", Some((_, volume))) => self.list_volumes(volume).await,
            ("publish", Some((request, volume))) => self.publish(request, volume).await,
            ("expand", Some((request, volume))) => self.expand(request, volume).await,
            ("snapshots", Some((_, volume))) => self.snapshots(volume).await,
            ("delete", Some((_, volume))) => self.delete(volume).await,
            (id, _) => unreachable!("rule {id} has no check"),
        };
        outcome.into()
    }

    /// Awaits a backend call, recording its time under `operation`.
    async fn timed<T>(
        &mut self,
        operation: &'static str,
        call: impl Future<Output = Result<T, CallError>>,
    ) -> Result<T, CallError> {
        let started = Instant::now();
        let result = call.await;
        self.report.time(operation, started.elapsed());
        result
    }

    fn name(&self, what: &str) -> String {
        format!("modcsi-check-{what}-{}", self.stamp)
    }

    /// The capability the test volume asks for: the first declared access mode, as a
    /// filesystem when the backend serves those, else as a block device.
    fn capability(&self) -> Option<Capability> {
        let info = self.backend.info();
        let mode = *info.access_modes.first()?;
        let access_type = if info.volume_modes.filesystem {
            AccessType::Mount(MountVolume {
                fs_type: String::new(),
                mount_flags: vec![],
                volume_mount_group: String::new(),
            })
        } else if info.volume_modes.block {
            AccessType::Block
        } else {
            return None;
        };
        Some(Capability {
            access_type,
            access_mode: mode,
        })
    }

    fn request(&self, name: String, bytes: u64) -> Option<CreateRequest> {
        Some(CreateRequest {
            name,
            capacity: CapacityRange {
                required_bytes: bytes,
                limit_bytes: 0,
            },
            capabilities: vec![self.capability()?],
            parameters: self.options.parameters.clone(),
            secrets: self.options.secrets.clone(),
            source: None,
            accessibility: None,
        })
    }

    async fn probe(&mut self) -> Outcome {
        self.timed("probe", self.backend.probe(None))
            .await
            .map(|()| "ready".to_owned())
            .map_err(|e| e.to_string())
    }

    fn describes_itself(&self) -> Outcome {
        let info = self.backend.info();
        let mut problems = vec![];
        if info.name.trim().is_empty() {
            problems.push("it has no name".to_owned());
        }
        if info.version.trim().is_empty() {
            problems.push("it has no version".to_owned());
        }
        if info.access_modes.is_empty() {
            problems.push("it offers no access mode".to_owned());
        }
        if !info.volume_modes.filesystem && !info.volume_modes.block {
            problems.push("it offers neither filesystem nor block volumes".to_owned());
        }
        let mut seen = BTreeSet::new();
        for p in &info.parameters {
            if p.name.trim().is_empty() {
                problems.push("a parameter has no name".to_owned());
            } else if !seen.insert(p.name.as_str()) {
                problems.push(format!("parameter {:?} is listed twice", p.name));
            }
        }
        if !problems.is_empty() {
            return Err(format!("info: {}", problems.join("; ")));
        }
        Ok(format!(
            "{} {}, {} access mode(s), {} parameter(s)",
            info.name,
            info.version,
            info.access_modes.len(),
            info.parameters.len()
        ))
    }

    /// CreateVolume, its answer checked as the host checks it.
    async fn create(&mut self) -> Outcome {
        let request = self
            .request(self.name("volume"), self.options.size)
            .ok_or("info offers no capability to ask for")?;
        let volume = self
            .timed(
                "create-volume",
                self.backend.create_volume(request.clone(), None),
            )
            .await
            .map_err(|e| e.to_string())?;
        self.leftovers.insert(Made::Volume(volume.id.clone()));
        self.accepts_volume(&request, &volume)?;
        let detail = format!(
            "volume {} of {} bytes for {:?}",
            volume.id, volume.capacity_bytes, request.name
        );
        self.volume = Some((request, volume));
        Ok(detail)
    }

    /// The host's checks of a created volume.
    fn accepts_volume(&self, request: &CreateRequest, volume: &Volume) -> Result<(), String> {
        let backend = self.backend.name();
        let subject = format!("volume {:?}", request.name);
        host_rules::returned_id(backend, &subject, "volume id", &volume.id)
            .map_err(|e| e.to_string())?;
        host_rules::capacity_in_range(backend, &subject, volume.capacity_bytes, &request.capacity)
            .map_err(|e| e.to_string())?;
        host_rules::volume_context(backend, &subject, volume).map_err(|e| e.to_string())?;
        Ok(())
    }

    async fn create_again(&mut self, request: &CreateRequest, first: &Volume) -> Outcome {
        let again = self
            .timed(
                "create-volume",
                self.backend.create_volume(request.clone(), None),
            )
            .await
            .map_err(|e| format!("the second CreateVolume of {:?}: {e}", request.name))?;
        if again.id != first.id {
            self.leftovers.insert(Made::Volume(again.id.clone()));
        }
        if (again.id.as_str(), again.capacity_bytes) != (first.id.as_str(), first.capacity_bytes) {
            return Err(format!(
                "the same CreateVolume of {:?} answered volume {} of {} bytes, then {} of {} bytes",
                request.name, first.id, first.capacity_bytes, again.id, again.capacity_bytes
            ));
        }
        Ok(format!("{} again", first.id))
    }

    fn declarations(&self, volume: Option<&Volume>) -> Outcome {
        let info = self.backend.info();
        if info.content_sources.snapshot && !self.backend.offers(Optional::Snapshots) {
            return Err(
                "info declares volumes made from snapshots, but the component does \
                        not export snapshots"
                    .into(),
            );
        }
        let Some(volume) = volume else {
            return Ok("content sources match the exports (no volume to check topology on)".into());
        };
        match (info.topology, volume.topology.is_empty()) {
            (true, true) => Err(format!(
                "info declares topology, but volume {} says nowhere it is reachable",
                volume.id
            )),
            (false, false) => Err(format!(
                "volume {} is reachable only from {:?}, but info does not declare topology",
                volume.id, volume.topology
            )),
            _ => Ok(format!(
                "topology {}",
                if info.topology {
                    "declared and answered"
                } else {
                    "neither declared nor answered"
                }
            )),
        }
    }

    async fn parameters(&mut self) -> Outcome {
        const UNREAD: &str = "modcsi-check-unread";
        let given = self.options.parameters.clone();
        let mut problems = self
            .timed(
                "validate-parameters",
                self.backend.validate_parameters(given.clone(), None),
            )
            .await
            .map_err(|e| e.to_string())?;
        if !problems.is_empty() {
            return Err(format!(
                "the parameters CreateVolume is asked with ({}) have problems: {}",
                given.len(),
                problems.join("; ")
            ));
        }
        let mut odd = given;
        odd.push((UNREAD.into(), "1".into()));
        problems = self
            .timed(
                "validate-parameters",
                self.backend.validate_parameters(odd, None),
            )
            .await
            .map_err(|e| e.to_string())?;
        if !problems.iter().any(|p| p.contains(UNREAD)) {
            return Err(format!(
                "a parameter the backend does not read ({UNREAD}) is no problem: {problems:?}"
            ));
        }
        Ok(format!(
            "{} parameters fine, an unread one named",
            self.options.parameters.len()
        ))
    }

    async fn required_parameters(&mut self) -> Outcome {
        let required: Vec<String> = (self.backend.info().parameters.iter())
            .filter(|p| p.required)
            .map(|p| p.name.clone())
            .collect();
        if required.is_empty() {
            return Ok("info marks no parameter required".into());
        }
        for name in &required {
            let Some(mut request) = self.request(self.name("without"), self.options.size) else {
                return Err("info offers no capability to ask for".into());
            };
            request.parameters.retain(|(k, _)| k != name);
            match self
                .timed("create-volume", self.backend.create_volume(request, None))
                .await
            {
                Err(CallError::Refused {
                    error: BackendError::InvalidArgument(message),
                    ..
                }) if message.contains(name.as_str()) => {}
                Err(CallError::Refused {
                    error: BackendError::InvalidArgument(message),
                    ..
                }) => {
                    return Err(format!(
                        "without required parameter {name:?}: INVALID_ARGUMENT, but the message \
                         does not name it: {message}"
                    ));
                }
                Err(e) => {
                    return Err(format!(
                        "without required parameter {name:?}: {e} (expected INVALID_ARGUMENT)"
                    ));
                }
                Ok(volume) => {
                    self.leftovers.insert(Made::Volume(volume.id.clone()));
                    return Err(format!(
                        "without required parameter {name:?} the backend created volume {}",
                        volume.id
                    ));
                }
            }
        }
        Ok(format!("refused without {}", required.join(", ")))
    }

    async fn huge_volume(&mut self) -> Outcome {
        let request = self
            .request(self.name("huge"), 1 << 60)
            .ok_or("info offers no capability to ask for")?;
        match self
            .timed(
                "create-volume",
                self.backend.create_volume(request.clone(), None),
            )
            .await
        {
            Err(CallError::Refused {
                error:
                    e @ (BackendError::OutOfRange(_)
                    | BackendError::ResourceExhausted(_)
                    | BackendError::InvalidArgument(_)),
                ..
            }) => Ok(format!("refused: {}", e.parts().0)),
            Err(e) => Err(format!(
                "a volume of 1 EiB: {e} (expected OUT_OF_RANGE, RESOURCE_EXHAUSTED, \
                 INVALID_ARGUMENT or the volume)"
            )),
            Ok(volume) => {
                self.leftovers.insert(Made::Volume(volume.id.clone()));
                self.accepts_volume(&request, &volume)?;
                Ok(format!("made in full: {} bytes", volume.capacity_bytes))
            }
        }
    }

    async fn validate(&mut self, request: &CreateRequest, volume: &Volume) -> Outcome {
        let validation = self
            .timed(
                "validate-capabilities",
                self.backend.validate_capabilities(
                    volume.id.clone(),
                    request.capabilities.clone(),
                    volume.context.clone(),
                    request.parameters.clone(),
                    request.secrets.clone(),
                    None,
                ),
            )
            .await
            .map_err(|e| e.to_string())?;
        if !validation.confirmed {
            return Err(format!(
                "the capability volume {} was created with is not confirmed{}",
                volume.id,
                match validation.message.as_str() {
                    "" => String::new(),
                    message => format!(": {message}"),
                }
            ));
        }
        Ok("confirmed".into())
    }

    async fn validate_unknown(&mut self) -> Outcome {
        let capability = self
            .capability()
            .ok_or("info offers no capability to ask for")?;
        let unknown = self.name("never-made");
        let answer = self
            .timed(
                "validate-capabilities",
                self.backend.validate_capabilities(
                    unknown.clone(),
                    vec![capability],
                    vec![],
                    self.options.parameters.clone(),
                    self.options.secrets.clone(),
                    None,
                ),
            )
            .await;
        not_found(answer, &format!("volume {unknown}"))
    }

    async fn locate(&mut self, volume: &Volume) -> Outcome {
        let located = self
            .timed(
                "locate",
                self.backend
                    .locate(volume.id.clone(), volume.context.clone(), None),
            )
            .await
            .map_err(|e| e.to_string())?;
        attachment::validate(&located)
            .map_err(|e| format!("volume {}: an unusable attachment: {e}", volume.id))?;
        if let Some(created) = &volume.attachment
            && *created != located
        {
            return Err(format!(
                "volume {} was created with attachment {created:?} but is located at {located:?}",
                volume.id
            ));
        }
        Ok(attachment::kind_name(&located).to_owned())
    }

    async fn get_volume(&mut self, request: &CreateRequest, volume: &Volume) -> Outcome {
        let status = self
            .timed(
                "get-volume",
                self.backend.get_volume(volume.id.clone(), None),
            )
            .await
            .map_err(|e| format!("volume {}: {e}", volume.id))?;
        if status.capacity_bytes < request.capacity.required_bytes {
            return Err(format!(
                "volume {} has {} bytes, less than the {} it was created with",
                volume.id, status.capacity_bytes, request.capacity.required_bytes
            ));
        }
        let unknown = self.name("never-made");
        let answer = self
            .timed("get-volume", self.backend.get_volume(unknown.clone(), None))
            .await;
        not_found(answer, &format!("volume {unknown}"))?;
        Ok(format!(
            "{} bytes; unknown volumes not found",
            status.capacity_bytes
        ))
    }

    async fn list_volumes(&mut self, volume: &Volume) -> Outcome {
        const MOST_PAGES: usize = 10_000;
        let backend = self.backend.name().to_owned();
        let mut token = String::new();
        let mut seen_tokens = BTreeSet::new();
        let mut listed = 0;
        for page_number in 0..MOST_PAGES {
            // The first page is small, to see that max_entries bounds it.
            let max = if page_number == 0 { 1 } else { 500 };
            let page = self
                .timed(
                    "list-volumes",
                    self.backend.list_volumes(max, token.clone(), None),
                )
                .await
                .map_err(|e| e.to_string())?;
            host_rules::page_len(&backend, "ListVolumes", page.volumes.len(), max)
                .map_err(|e| e.to_string())?;
            for v in &page.volumes {
                host_rules::returned_id(&backend, "ListVolumes", "volume id", &v.id)
                    .map_err(|e| e.to_string())?;
            }
            listed += page.volumes.len();
            if page.volumes.iter().any(|v| v.id == volume.id) {
                return Ok(format!(
                    "found {} on page {} ({listed} volumes listed)",
                    volume.id,
                    page_number + 1
                ));
            }
            if page.next_token.is_empty() {
                break;
            }
            if !seen_tokens.insert(page.next_token.clone()) {
                return Err(format!(
                    "token {:?} was answered twice: the pages go round in a circle",
                    page.next_token
                ));
            }
            token = page.next_token;
        }
        Err(format!(
            "volume {} is not among the {listed} volumes listed",
            volume.id
        ))
    }

    async fn capacity(&mut self) -> Outcome {
        let capability = self
            .capability()
            .ok_or("info offers no capability to ask for")?;
        let capacity = self
            .timed(
                "get-capacity",
                self.backend.get_capacity(
                    self.options.parameters.clone(),
                    vec![capability],
                    None,
                    None,
                ),
            )
            .await
            .map_err(|e| e.to_string())?;
        if let (Some(min), Some(max)) =
            (capacity.minimum_volume_bytes, capacity.maximum_volume_bytes)
            && min > max
        {
            return Err(format!(
                "the minimum volume size ({min} bytes) is above the maximum ({max} bytes)"
            ));
        }
        Ok(format!("{} bytes available", capacity.available_bytes))
    }

    async fn pool(&mut self) -> Outcome {
        let pool = self
            .timed(
                "get-pool",
                self.backend.get_pool(self.options.parameters.clone(), None),
            )
            .await
            .map_err(|e| e.to_string())?;
        if pool.total_bytes == 0 || pool.total_bytes < pool.free_bytes {
            return Err(format!(
                "a pool of {} bytes with {} bytes free",
                pool.total_bytes, pool.free_bytes
            ));
        }
        Ok(format!(
            "{} of {} bytes free",
            pool.free_bytes, pool.total_bytes
        ))
    }

    async fn node_identity(&mut self) -> Outcome {
        let node = self
            .timed("node-identity", self.backend.node_identity(None))
            .await
            .map_err(|e| e.to_string())?;
        if let Some(id) = &node.node_id {
            validate::node_id(id).map_err(|e| format!("an unusable node id: {e}"))?;
        }
        validate::map_size(
            "node attributes",
            node.attributes.iter().map(|(k, v)| (k, v)),
        )
        .map_err(|e| e.to_string())?;
        if !node.topology.is_empty() && !self.backend.info().topology {
            return Err(format!(
                "the node says it is in {:?}, but info does not declare topology",
                node.topology
            ));
        }
        Ok(match &node.node_id {
            Some(id) => format!("node {id}"),
            None => "the host's node id".into(),
        })
    }

    /// The node to publish to and what the node says about itself.
    async fn node(&mut self) -> Result<(String, KeyValues), String> {
        if !self.backend.offers(Optional::NodeIdentity) {
            return Ok((self.options.node_id.clone(), vec![]));
        }
        let node = self
            .timed("node-identity", self.backend.node_identity(None))
            .await
            .map_err(|e| format!("node-identity: {e}"))?;
        Ok((
            node.node_id.unwrap_or_else(|| self.options.node_id.clone()),
            node.attributes,
        ))
    }

    async fn publish(&mut self, request: &CreateRequest, volume: &Volume) -> Outcome {
        let (node_id, node_attributes) = self.node().await?;
        let publish = PublishRequest {
            volume_id: volume.id.clone(),
            node_id: node_id.clone(),
            node_attributes,
            capability: request.capabilities[0].clone(),
            readonly: false,
            context: volume.context.clone(),
            secrets: self.options.secrets.clone(),
        };
        let subject = format!("volume {} on node {node_id}", volume.id);
        let first = self
            .timed(
                "controller-publish",
                self.backend.controller_publish(publish.clone(), None),
            )
            .await
            .map_err(|e| format!("{subject}: {e}"))?;
        host_rules::host_context(
            self.backend.name(),
            &subject,
            first.context.clone(),
            first.attachment.as_ref(),
        )
        .map_err(|e| e.to_string())?;
        let again = self
            .timed(
                "controller-publish",
                self.backend.controller_publish(publish, None),
            )
            .await
            .map_err(|e| format!("{subject}, published again: {e}"))?;
        if again != first {
            return Err(format!(
                "{subject}: the same ControllerPublish answered {first:?}, then {again:?}"
            ));
        }
        for round in ["", " again"] {
            self.timed(
                "controller-unpublish",
                self.backend.controller_unpublish(
                    volume.id.clone(),
                    node_id.clone(),
                    self.options.secrets.clone(),
                    None,
                ),
            )
            .await
            .map_err(|e| format!("{subject}, unpublished{round}: {e}"))?;
        }
        Ok(format!("published to and unpublished from node {node_id}"))
    }

    async fn publish_unknown(&mut self) -> Outcome {
        let capability = self
            .capability()
            .ok_or("info offers no capability to ask for")?;
        let (node_id, node_attributes) = self.node().await?;
        let unknown = self.name("never-made");
        let answer = self
            .timed(
                "controller-publish",
                self.backend.controller_publish(
                    PublishRequest {
                        volume_id: unknown.clone(),
                        node_id,
                        node_attributes,
                        capability,
                        readonly: false,
                        context: vec![],
                        secrets: self.options.secrets.clone(),
                    },
                    None,
                ),
            )
            .await;
        not_found(answer, &format!("volume {unknown}"))
    }

    async fn expand(&mut self, request: &CreateRequest, volume: &Volume) -> Outcome {
        let wanted = CapacityRange {
            required_bytes: volume.capacity_bytes.max(1) * 2,
            limit_bytes: 0,
        };
        let mut answers = vec![];
        for _ in 0..2 {
            let result = self
                .timed(
                    "expand-volume",
                    self.backend.expand_volume(
                        volume.id.clone(),
                        wanted,
                        Some(request.capabilities[0].clone()),
                        self.options.secrets.clone(),
                        None,
                    ),
                )
                .await
                .map_err(|e| format!("volume {}: {e}", volume.id))?;
            if result.capacity_bytes < wanted.required_bytes {
                return Err(format!(
                    "volume {} expanded to {} bytes answered {} bytes",
                    volume.id, wanted.required_bytes, result.capacity_bytes
                ));
            }
            answers.push(result.capacity_bytes);
        }
        if answers[0] != answers[1] {
            return Err(format!(
                "volume {}: the same expansion answered {} bytes, then {}",
                volume.id, answers[0], answers[1]
            ));
        }
        Ok(format!("{} bytes", answers[0]))
    }

    async fn snapshots(&mut self, volume: &Volume) -> Outcome {
        let name = self.name("snapshot");
        let mut ids = vec![];
        for round in ["", " again"] {
            let snapshot = self
                .timed(
                    "create-snapshot",
                    self.backend.create_snapshot(
                        volume.id.clone(),
                        name.clone(),
                        self.options.parameters.clone(),
                        self.options.secrets.clone(),
                        None,
                    ),
                )
                .await
                .map_err(|e| format!("snapshot {name:?} of {}{round}: {e}", volume.id))?;
            self.leftovers.insert(Made::Snapshot(snapshot.id.clone()));
            host_rules::returned_id(
                self.backend.name(),
                "CreateSnapshot",
                "snapshot id",
                &snapshot.id,
            )
            .map_err(|e| e.to_string())?;
            if snapshot.source_volume_id != volume.id {
                return Err(format!(
                    "snapshot {} of volume {} names {:?} as its source",
                    snapshot.id, volume.id, snapshot.source_volume_id
                ));
            }
            ids.push(snapshot.id);
        }
        if ids[0] != ids[1] {
            return Err(format!(
                "the same CreateSnapshot {name:?} answered snapshot {}, then {}",
                ids[0], ids[1]
            ));
        }
        let id = ids.swap_remove(0);
        let page = self
            .timed(
                "list-snapshots",
                self.backend.list_snapshots(
                    0,
                    String::new(),
                    SnapshotFilter {
                        source_volume_id: String::new(),
                        snapshot_id: id.clone(),
                    },
                    self.options.secrets.clone(),
                    None,
                ),
            )
            .await
            .map_err(|e| format!("ListSnapshots of {id}: {e}"))?;
        if !page.snapshots.iter().any(|s| s.id == id) {
            return Err(format!(
                "ListSnapshots of snapshot id {id} does not list it"
            ));
        }
        for round in ["", " again"] {
            let answer = self
                .timed(
                    "delete-snapshot",
                    self.backend
                        .delete_snapshot(id.clone(), self.options.secrets.clone(), None),
                )
                .await;
            gone(answer).map_err(|e| format!("DeleteSnapshot {id}{round}: {e}"))?;
        }
        self.leftovers.remove(&Made::Snapshot(id.clone()));
        Ok(format!("snapshot {id}"))
    }

    async fn delete(&mut self, volume: &Volume) -> Outcome {
        let never_made = self.name("never-made");
        for (id, what) in [
            (&volume.id, ""),
            (&volume.id, " again"),
            (&never_made, " (never made)"),
        ] {
            let answer = self
                .timed(
                    "delete-volume",
                    self.backend
                        .delete_volume(id.clone(), self.options.secrets.clone(), None),
                )
                .await;
            gone(answer).map_err(|e| format!("DeleteVolume {id}{what}: {e}"))?;
        }
        self.leftovers.remove(&Made::Volume(volume.id.clone()));
        self.volume = None;
        Ok(format!("deleted {}", volume.id))
    }

    /// Deletes whatever this run made and did not delete; what fails is named in the report.
    async fn clean_up(&mut self) {
        for made in std::mem::take(&mut self.leftovers) {
            let secrets = self.options.secrets.clone();
            let (answer, id) = match made {
                Made::Snapshot(id) => (
                    self.backend
                        .delete_snapshot(id.clone(), secrets, None)
                        .await,
                    id,
                ),
                Made::Volume(id) => (
                    self.backend.delete_volume(id.clone(), secrets, None).await,
                    id,
                ),
            };
            if let Err(e) = gone(answer) {
                self.report.left_behind.push(format!("{id}: {e}"));
            }
        }
    }
}

/// A deletion's answer: done, or already gone.
fn gone(answer: Result<(), CallError>) -> Result<(), CallError> {
    match answer {
        Err(CallError::Refused {
            error: BackendError::NotFound(_),
            ..
        }) => Ok(()),
        other => other,
    }
}

/// The answer about something the backend never made must be NOT_FOUND.
fn not_found<T: std::fmt::Debug>(answer: Result<T, CallError>, what: &str) -> Outcome {
    match answer {
        Err(CallError::Refused {
            error: BackendError::NotFound(_),
            ..
        }) => Ok(format!("{what}: not found")),
        Err(e) => Err(format!("{what}, never made: {e} (expected NOT_FOUND)")),
        Ok(answer) => Err(format!(
            "{what}, never made, was answered as if it existed: {answer:?}"
        )),
    }
}
