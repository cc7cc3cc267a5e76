//! Gathers the audit's facts: this driver's PVs, StorageClasses and pending claims from the API
//! server, the volumes from the backend's `list-volumes` (every volume it has) or else from the
//! host's own volume records (those the host made), each volume's age from the host's record,
//! what is free per class (`get-capacity`), and what the configuration checks look at. An
//! [`Auditor`] loads the backend once and scans as often as asked.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::checks::{ConfigFacts, check_findings, checks};
use super::correlate::{
    Attachment, BackendSnapshot, BackendVolume, CleanupRecord, Facts, LocalDir, NodeFacts,
    PublishedVolume, Thresholds, VolumeView, correlate, underused, unexplained_dirs,
};
use super::finding::{Report, worst_first};
use super::usage::{BackendFigures, capacity_findings, overcommit_findings, usage};
use crate::kube::inventory::{DriverClass, DriverPv};
use crate::kube::{Cluster, KubeError, KubeStore};
use crate::runtime::{
    Backend, BackendConfig, CallError, ConfigError, LoadError, Optional, RuntimeOptions,
};
use crate::state::{StateStore, StoreError};
use crate::volume::records::{self, now_unix};
use crate::volume::types::KeyValues;

pub struct ScanOptions {
    pub backend: PathBuf,
    pub backend_config: Option<PathBuf>,
    pub driver_name: String,
    pub kubeconfig: Option<PathBuf>,
    /// The driver's namespace (its records' ConfigMaps).
    pub namespace: Option<String>,
    pub cache_dir: PathBuf,
    pub call_timeout: Duration,
    pub thresholds: Thresholds,
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("the audit reads the cluster: give --kubeconfig, or run it in a pod")]
    NoCluster,
    #[error(transparent)]
    Kube(#[from] KubeError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("the host's volume records: {0}")]
    Store(#[from] StoreError),
    #[error("asking the backend: {0}")]
    List(#[from] CallError),
    #[error("the driver's CSI endpoint: {0}")]
    Csi(String),
    #[error("the node's local directories: {0}")]
    LocalDirs(#[from] crate::node::NodeError),
}

/// The most pages of `list-volumes` or `list-snapshots` one scan reads, and their size.
const MOST_PAGES: usize = 10_000;
const PAGE: u32 = 500;

/// Every item of a paged list call, following its tokens (`page` answers the items after a
/// token, and the next token, empty on the last page); `false` when there were more than
/// [`MOST_PAGES`] pages and the rest went unread, so that nothing is called missing.
async fn all_pages<T, F, Next>(mut page: F) -> Result<(Vec<T>, bool), CallError>
where
    F: FnMut(String) -> Next,
    Next: Future<Output = Result<(Vec<T>, String), CallError>>,
{
    let mut items = vec![];
    let mut token = String::new();
    for _ in 0..MOST_PAGES {
        let (more, next) = page(token).await?;
        items.extend(more);
        if next.is_empty() {
            return Ok((items, true));
        }
        token = next;
    }
    Ok((items, false))
}

/// What the audit reads, and the verb it reads it with: the `rbac` check asks for each.
const RIGHTS: [(&str, &str, &str, bool); 11] = [
    ("list", "", "persistentvolumes", false),
    ("list", "", "persistentvolumeclaims", false),
    ("list", "", "events", false),
    ("list", "storage.k8s.io", "storageclasses", false),
    ("get", "storage.k8s.io", "csidrivers", false),
    ("list", "storage.k8s.io", "csinodes", false),
    ("list", "", "nodes", false),
    ("list", "", "configmaps", true),
    ("list", "", "pods", true),
    (
        "list",
        "snapshot.storage.k8s.io",
        "volumesnapshotcontents",
        false,
    ),
    ("list", "storage.k8s.io", "volumeattachments", false),
];

pub struct Auditor {
    cluster: Arc<Cluster>,
    shared: Arc<dyn StateStore>,
    backend: Backend,
    driver_name: String,
    thresholds: Thresholds,
}

impl Auditor {
    /// Connects to the cluster and loads the backend (as the driver does: its configuration,
    /// the driver's ConfigMaps as its store).
    pub async fn connect(options: ScanOptions) -> Result<Self, ScanError> {
        let cluster = Cluster::connect(
            options.kubeconfig.as_deref(),
            options.namespace.clone(),
            &options.driver_name,
        )
        .await?
        .ok_or(ScanError::NoCluster)?;
        let shared: Arc<dyn StateStore> = Arc::new(KubeStore::new(&cluster)?);
        let backend = Backend::load(
            &options.backend,
            RuntimeOptions {
                cache_dir: options.cache_dir.clone(),
                memory_limit: 128 << 20,
                call_timeout: options.call_timeout,
                max_concurrent_calls: 2,
                config: Arc::new(match &options.backend_config {
                    Some(path) => BackendConfig::load(path)?,
                    None => BackendConfig::default(),
                }),
                store: Some(shared.clone()),
                node_addresses: Arc::from([]),
            },
        )
        .await?;
        Ok(Self {
            cluster: Arc::new(cluster),
            shared,
            backend,
            driver_name: options.driver_name,
            thresholds: options.thresholds,
        })
    }

    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// Every volume the backend lists, or (`false`) those the host recorded.
    async fn volumes(
        &self,
        recorded: &[records::VolumeRecord],
    ) -> Result<(Vec<BackendVolume>, bool), ScanError> {
        if !self.backend.offers(Optional::ListVolumes) {
            let volumes = recorded
                .iter()
                .map(|r| BackendVolume {
                    id: r.id.clone(),
                    capacity_bytes: r.capacity_bytes,
                    created_unix: r.created_unix,
                })
                .collect();
            return Ok((volumes, false));
        }
        let created: HashMap<&str, Option<i64>> = recorded
            .iter()
            .map(|r| (r.id.as_str(), r.created_unix))
            .collect();
        let (listed, complete) = all_pages(|token| async move {
            let page = self.backend.list_volumes(PAGE, token, None).await?;
            Ok((page.volumes, page.next_token))
        })
        .await?;
        let volumes = listed
            .into_iter()
            .map(|v| BackendVolume {
                created_unix: created.get(v.id.as_str()).copied().flatten(),
                id: v.id,
                capacity_bytes: v.capacity_bytes,
            })
            .collect();
        Ok((volumes, complete))
    }

    /// This driver's VolumeAttachments, and what the backend's `get-volume` says of each
    /// attached volume (a volume it does not know, or an error, says nothing).
    async fn attachments(
        &self,
    ) -> Result<(Vec<Attachment>, HashMap<String, VolumeView>), ScanError> {
        let attachments: Vec<Attachment> = self
            .cluster
            .attachments()
            .await?
            .into_iter()
            .map(|a| Attachment {
                volume: a.volume,
                node: a.node,
                attached: a.attached,
                exclusive: a.exclusive,
                detaching_since_unix: a.detaching_since_ms.map(|ms| (ms / 1000) as i64),
            })
            .collect();
        let mut views = HashMap::new();
        if self.backend.offers(Optional::GetVolume) {
            let attached: std::collections::BTreeSet<&str> = attachments
                .iter()
                .filter(|a| a.attached)
                .map(|a| a.volume.as_str())
                .collect();
            for volume in attached {
                if let Ok(status) = self.backend.get_volume(volume.to_owned(), None).await {
                    let view = VolumeView {
                        published_nodes: status.published_nodes,
                        abnormal: status.condition.filter(|c| c.abnormal).map(|c| c.message),
                    };
                    views.insert(volume.to_owned(), view);
                }
            }
        }
        Ok((attachments, views))
    }

    /// Every snapshot the backend lists; `None` when it has no `snapshots` interface, or more
    /// than one scan reads (then nothing is judged missing).
    async fn snapshots(&self) -> Result<Option<Vec<BackendSnapshot>>, ScanError> {
        if !self.backend.offers(Optional::Snapshots) {
            return Ok(None);
        }
        let (listed, complete) = all_pages(|token| async move {
            let page = (self.backend)
                .list_snapshots(PAGE, token, Default::default(), vec![], None)
                .await?;
            Ok((page.snapshots, page.next_token))
        })
        .await?;
        Ok(complete.then(|| {
            listed
                .into_iter()
                .map(|s| BackendSnapshot {
                    id: s.id,
                    source_volume_id: s.source_volume_id,
                    size_bytes: s.size_bytes,
                    created_unix: (s.created_unix_seconds > 0).then_some(s.created_unix_seconds),
                })
                .collect()
        }))
    }

    /// What the backend says of a class's storage: free (`get-capacity`), and its pool's whole
    /// size (`get-pool`). A figure the backend cannot give is left out, not an error.
    async fn figures(&self, class: &DriverClass) -> BackendFigures {
        let parameters: KeyValues = class.parameters.clone().into_iter().collect();
        let mut figures = BackendFigures::default();
        if self.backend.offers(Optional::Capacity) {
            let answer = (self.backend)
                .get_capacity(parameters.clone(), vec![], None, None)
                .await;
            figures.available_bytes = answer.ok().map(|c| c.available_bytes);
        }
        if self.backend.offers(Optional::Pool) {
            let answer = self.backend.get_pool(parameters, None).await;
            figures.pool_bytes = answer.ok().map(|p| p.total_bytes);
        }
        figures
    }

    /// Every volume id the backend lists (or the host recorded), and those of every cleanup
    /// record.
    async fn known_volumes(&self) -> Result<std::collections::HashSet<String>, ScanError> {
        let recorded = records::all(self.shared.as_ref())?;
        let (volumes, _) = self.volumes(&recorded).await?;
        let mut known: std::collections::HashSet<String> =
            volumes.into_iter().map(|v| v.id).collect();
        known.extend(recorded.into_iter().map(|r| r.id));
        known.extend(
            self.cleanup_statuses()
                .await?
                .into_iter()
                .map(|s| s.volume_id),
        );
        Ok(known)
    }

    /// The driver's volumes mounted into pods under `kubelet_root`, with their PVs' size and age
    /// (one LIST of PVs, only when something is mounted).
    async fn published(&self, kubelet_root: &Path) -> Result<Vec<PublishedVolume>, ScanError> {
        let mounted = crate::node::kubelet::published(kubelet_root, &self.driver_name)?;
        if mounted.is_empty() {
            return Ok(vec![]);
        }
        let pvs: HashMap<String, DriverPv> = (self.cluster.driver_pvs().await?.into_iter())
            .map(|pv| (pv.name.clone(), pv))
            .collect();
        Ok(mounted
            .into_iter()
            .map(|m| {
                let pv = pvs.get(&m.pv).filter(|pv| pv.volume == m.volume_id);
                PublishedVolume {
                    path: m.path.display().to_string(),
                    used_bytes: m.usage.used_bytes,
                    total_bytes: m.usage.total_bytes,
                    pv_capacity_bytes: pv.map(|pv| pv.capacity_bytes),
                    pv_created_unix: pv.map(|pv| pv.created_unix),
                    pv: m.pv,
                }
            })
            .collect())
    }

    /// The node part, with the node plugin's rights (the driver's namespace, reading PVs) and
    /// the backend: directories under this node's local-dir root (`root`) that no volume the
    /// backend lists (or the host recorded) and no cleanup record explains; volumes mounted into
    /// pods under `kubelet_root` whose own filesystem stays nearly empty.
    pub async fn scan_node(
        &self,
        root: Option<&Path>,
        kubelet_root: Option<&Path>,
    ) -> Result<Report, ScanError> {
        let started = Instant::now();
        let mut facts = NodeFacts {
            now_unix: now_unix(),
            ..Default::default()
        };
        if let Some(root) = root {
            facts.root = root.display().to_string();
            facts.dirs = crate::node::local_dir::directories(root)?
                .into_iter()
                .map(|(name, changed_unix)| LocalDir { name, changed_unix })
                .collect();
            facts.known = self.known_volumes().await?;
        }
        if let Some(kubelet_root) = kubelet_root {
            facts.published = self.published(kubelet_root).await?;
        }
        let mut findings = unexplained_dirs(&facts, &self.thresholds);
        findings.extend(underused(&facts, &self.thresholds));
        worst_first(&mut findings);
        let info = self.backend.info();
        Ok(Report {
            driver: self.driver_name.clone(),
            backend: format!("{} {}", info.name, info.version),
            scanned_unix: facts.now_unix,
            scanned: [
                ("directories", facts.dirs.len()),
                ("volumes and records", facts.known.len()),
                ("volumes mounted into pods", facts.published.len()),
            ]
            .into_iter()
            .collect(),
            findings,
            usage: Default::default(),
            checks: vec![],
            scan_ms: started.elapsed().as_secs_f64() * 1e3,
        })
    }

    /// Every node-local cleanup record (a record that does not parse is the cleanup loop's to
    /// warn about, not the audit's).
    async fn cleanup_statuses(&self) -> Result<Vec<crate::cleanup::Status>, ScanError> {
        Ok(self
            .cluster
            .records()
            .await?
            .into_iter()
            .filter_map(|r| serde_json::from_str(&r.text).ok())
            .collect())
    }

    /// The node-local cleanup records whose deletion was requested.
    async fn cleanups(&self) -> Result<Vec<CleanupRecord>, ScanError> {
        Ok(self
            .cleanup_statuses()
            .await?
            .into_iter()
            .filter_map(|s| {
                Some(CleanupRecord {
                    waited_seconds: s.waited()?.as_secs() as i64,
                    pending: s.pending().into_iter().map(str::to_owned).collect(),
                    failed: s.nodes_failed.clone(),
                    volume: s.volume_id,
                })
            })
            .collect())
    }

    /// The backend's word on each class's parameters, as the provisioner passes them on (without
    /// its own `csi.storage.k8s.io/` keys); `None` when it does not export `parameters`.
    async fn class_parameters(
        &self,
        classes: &[DriverClass],
    ) -> Option<BTreeMap<String, Result<Vec<String>, String>>> {
        if !self.backend.offers(Optional::Parameters) {
            return None;
        }
        let mut answers = BTreeMap::new();
        for class in classes {
            let parameters = (class.parameters.iter())
                .filter(|(k, _)| !k.starts_with("csi.storage.k8s.io/"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let answer = self.backend.validate_parameters(parameters, None).await;
            answers.insert(class.name.clone(), answer.map_err(|e| e.to_string()));
        }
        Some(answers)
    }

    async fn config_facts(&self, classes: &[DriverClass]) -> Result<ConfigFacts, ScanError> {
        let c = &self.cluster;
        let mut rights = vec![];
        for (verb, group, resource, namespaced) in RIGHTS {
            let namespace = namespaced.then(|| c.namespace());
            let allowed = c.may(verb, group, resource, namespace).await?;
            let place = namespace.map_or(String::new(), |n| format!(" in {n}"));
            rights.push((format!("{verb} {resource}{place}"), allowed));
        }
        Ok(ConfigFacts {
            probe: self.backend.probe(None).await.map_err(|e| e.to_string()),
            driver_object: c.driver_object().await?,
            class_parameters: self.class_parameters(classes).await,
            needs_attach: self.backend.offers(Optional::Publish),
            snapshots: self.backend.offers(Optional::Snapshots),
            expansion: self.backend.offers(Optional::Expand),
            registrations: c.registrations().await?,
            containers: c.containers().await?,
            rights,
        })
    }

    /// One scan: facts in, findings, usage and checks out.
    pub async fn scan(&self) -> Result<Report, ScanError> {
        let started = Instant::now();
        let recorded = records::all(self.shared.as_ref())?;
        let (volumes, complete) = self.volumes(&recorded).await?;
        let classes = self.cluster.driver_classes().await?;
        let mut figures = BTreeMap::new();
        for class in &classes {
            figures.insert(class.name.clone(), self.figures(class).await);
        }
        let (attachments, views) = self.attachments().await?;
        let facts = Facts {
            attachments,
            views,
            pvs: self.cluster.driver_pvs().await?,
            volumes: Some(volumes),
            complete,
            claims: self.cluster.pending_claims(&classes).await?,
            cleanups: self.cleanups().await?,
            contents: self.cluster.snapshot_contents().await?,
            snapshots: self.snapshots().await?,
            now_unix: now_unix(),
        };
        let class_names: Vec<String> = classes.iter().map(|c| c.name.clone()).collect();
        let usage = usage(&facts.pvs, &class_names, &figures);
        let checks = checks(&self.config_facts(&classes).await?);
        let mut findings = correlate(&facts, &self.thresholds);
        findings.extend(capacity_findings(&usage));
        findings.extend(overcommit_findings(&usage));
        findings.extend(check_findings(&checks));
        worst_first(&mut findings);
        let scanned = [
            ("PVs", facts.pvs.len()),
            (
                if complete {
                    "backend volumes"
                } else {
                    "volumes the host recorded"
                },
                facts.volumes.as_ref().map_or(0, Vec::len),
            ),
            ("pending claims", facts.claims.len()),
            ("VolumeAttachments", facts.attachments.len()),
            ("cleanup records being deleted", facts.cleanups.len()),
            (
                "backend snapshots",
                facts.snapshots.as_ref().map_or(0, Vec::len),
            ),
            (
                "VolumeSnapshotContents",
                facts.contents.as_ref().map_or(0, Vec::len),
            ),
        ]
        .into_iter()
        .collect();
        let info = self.backend.info();
        Ok(Report {
            driver: self.driver_name.clone(),
            backend: format!("{} {}", info.name, info.version),
            scanned_unix: facts.now_unix,
            scanned,
            findings,
            usage,
            checks,
            scan_ms: started.elapsed().as_secs_f64() * 1e3,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{MOST_PAGES, all_pages};

    #[tokio::test]
    async fn pages_are_followed_to_the_end_or_said_to_be_unfinished() {
        let (items, complete) = all_pages(|token: String| async move {
            let n: u32 = token.parse().unwrap_or(0);
            let next = if n < 2 {
                (n + 1).to_string()
            } else {
                String::new()
            };
            Ok((vec![n], next))
        })
        .await
        .unwrap();
        assert_eq!((items, complete), (vec![0, 1, 2], true));
        // A list that never ends is read as far as a scan reads, and said to be unfinished.
        let (items, complete) = all_pages(|_| async { Ok((vec![()], "more".to_owned())) })
            .await
            .unwrap();
        assert_eq!((items.len(), complete), (MOST_PAGES, false));
    }
}
