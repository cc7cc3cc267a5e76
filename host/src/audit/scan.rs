//! Gathers the audit's facts: this driver's PVs and pending claims from the API server, the
//! volumes from the backend's `list-volumes` (every volume it has) or else from the host's own
//! volume records (those the host made), each volume's age from the host's record.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::correlate::{BackendVolume, Facts, Thresholds, correlate};
use super::finding::Report;
use crate::kube::{Cluster, KubeError, KubeStore};
use crate::runtime::{
    Backend, BackendConfig, CallError, ConfigError, LoadError, Optional, RuntimeOptions,
};
use crate::state::{StateStore, StoreError};
use crate::volume::records;

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
    #[error("listing the backend's volumes: {0}")]
    List(#[from] CallError),
}

/// The most pages of `list-volumes` one scan reads.
const MOST_PAGES: usize = 10_000;

pub async fn scan(options: &ScanOptions) -> Result<Report, ScanError> {
    let started = Instant::now();
    let cluster = Cluster::connect(
        options.kubeconfig.as_deref(),
        options.namespace.clone(),
        &options.driver_name,
    )
    .await?
    .ok_or(ScanError::NoCluster)?;
    let shared: Arc<dyn StateStore> = Arc::new(KubeStore::new(&cluster)?);
    let recorded = records::all(shared.as_ref())?;
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
            store: Some(shared),
            node_addresses: Arc::from([]),
        },
    )
    .await?;
    let created: HashMap<&str, Option<i64>> = recorded
        .iter()
        .map(|r| (r.id.as_str(), r.created_unix))
        .collect();
    let (volumes, complete) = if backend.offers(Optional::ListVolumes) {
        let mut volumes = vec![];
        let mut token = String::new();
        for _ in 0..MOST_PAGES {
            let page = backend.list_volumes(500, token, None).await?;
            volumes.extend(page.volumes.into_iter().map(|v| BackendVolume {
                created_unix: created.get(v.id.as_str()).copied().flatten(),
                id: v.id,
                capacity_bytes: v.capacity_bytes,
            }));
            if page.next_token.is_empty() {
                break;
            }
            token = page.next_token;
        }
        (volumes, true)
    } else {
        let volumes = recorded
            .iter()
            .map(|r| BackendVolume {
                id: r.id.clone(),
                capacity_bytes: r.capacity_bytes,
                created_unix: r.created_unix,
            })
            .collect();
        (volumes, false)
    };
    let facts = Facts {
        pvs: cluster.driver_pvs().await?,
        volumes: Some(volumes),
        complete,
        claims: cluster.pending_claims().await?,
        now_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
    };
    let findings = correlate(&facts, &options.thresholds);
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
    ]
    .into_iter()
    .collect();
    Ok(Report {
        driver: options.driver_name.clone(),
        backend: format!("{} {}", backend.info().name, backend.info().version),
        scanned,
        findings,
        scan_ms: started.elapsed().as_secs_f64() * 1e3,
    })
}
