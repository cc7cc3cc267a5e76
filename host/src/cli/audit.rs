//! `modcsi audit`: orphans, usage and configuration checks between Kubernetes and the backend,
//! as a table, JSON or YAML; the exit code follows a severity threshold, for cron jobs and CI.
//! `--serve` keeps scanning and serves a page, a JSON API and metrics; `--delete` removes the
//! orphaned volumes through the driver's CSI endpoint (a dry run unless `--dry-run=false`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use modcsi::audit::{
    Access, Auditor, Deletion, Report, ScanOptions, Service, Severity, Thresholds,
};

use super::backend::RegistryArgs;

#[derive(Args)]
pub struct AuditArgs {
    /// The driver's backend component (a .wasm file or an oci:// reference), as it serves.
    #[arg(long)]
    backend: String,
    #[command(flatten)]
    registry: RegistryArgs,
    /// The backend's configuration, as `modcsi serve --backend-config` takes it.
    #[arg(long)]
    backend_config: Option<PathBuf>,
    /// The CSI driver name whose PVs and claims are audited.
    #[arg(long)]
    driver_name: String,
    /// Credentials for the API server (default: in-cluster).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The driver's namespace (its records' ConfigMaps).
    #[arg(long, env = "POD_NAMESPACE")]
    namespace: Option<String>,
    /// `table` for people, `json` or `yaml` for programs.
    #[arg(long, value_enum, default_value = "table")]
    output: Output,
    /// Exit with status 3 when a finding is at least this severe.
    #[arg(long, value_enum, default_value = "high")]
    fail_on: Severity,
    /// PVs younger than this are left alone (being made or bound right now).
    #[arg(long, default_value = "5m", value_parser = super::parse_duration)]
    grace: Duration,
    /// A volume no PV names is an orphan once it is this old.
    #[arg(long, default_value = "1h", value_parser = super::parse_duration)]
    orphan_age: Duration,
    /// A claim pending this long is a finding.
    #[arg(long, default_value = "15m", value_parser = super::parse_duration)]
    pending_age: Duration,
    /// A deleted node-local volume's directory still on a node after this is stuck.
    #[arg(long, default_value = "10m", value_parser = super::parse_duration)]
    cleanup_age: Duration,
    /// With --kubelet-root: a volume this old whose filesystem holds under a tenth of its size
    /// is a finding.
    #[arg(long, default_value = "7d", value_parser = super::parse_duration)]
    underused_age: Duration,
    /// Upper bound on one backend call.
    #[arg(long, default_value = "30s", value_parser = super::parse_duration)]
    call_timeout: Duration,
    /// Where compiled components are cached (default: $XDG_CACHE_HOME/modcsi or
    /// ~/.cache/modcsi).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Keep scanning every --interval and serve the page (`/`), the JSON API
    /// (`/api/v1/orphans|usage|checks`), `/metrics` and `/healthz` on this address.
    #[arg(long, conflicts_with = "delete")]
    serve: Option<SocketAddr>,
    /// How often `--serve` scans (one scan at a time).
    #[arg(long, default_value = "5m", value_parser = super::parse_duration)]
    interval: Duration,
    /// Who may read what `--serve` shows: `tokenreview` (a peer on loopback, as through
    /// `kubectl port-forward`, or a bearer token of a user who may list PersistentVolumes) or
    /// `open` (anyone who reaches the address).
    #[arg(long, value_enum, default_value = "tokenreview")]
    access: Access,
    /// Keep `--serve`'s usage history in this ConfigMap of --namespace, so growth survives a
    /// restart (the chart makes it and lets the audit update only it); without it the history
    /// lives in memory.
    #[arg(long, requires = "serve")]
    history_configmap: Option<String>,
    /// Delete the volumes no PV names (older than --orphan-age and --grace, of an age the host
    /// recorded) through the driver's DeleteVolume at --csi-endpoint. A dry run unless
    /// --dry-run=false.
    #[arg(long, requires = "csi_endpoint")]
    delete: bool,
    /// With --delete: only say what would be deleted.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    dry_run: bool,
    /// The node part, run on a node (in its node plugin's pod): report the directories under
    /// this local-dir root that no volume or record explains, instead of the cluster scan.
    #[arg(long, conflicts_with_all = ["serve", "delete"])]
    local_dir_root: Option<PathBuf>,
    /// The node part, run on a node (in its node plugin's pod, which mounts kubelet's
    /// directory): report the driver's volumes mounted into pods there whose own filesystem
    /// stays nearly empty, instead of the cluster scan.
    #[arg(long, conflicts_with_all = ["serve", "delete"])]
    kubelet_root: Option<PathBuf>,
    /// The driver's controller socket, for --delete (e.g. unix:///csi/csi.sock in its pod).
    #[arg(long)]
    csi_endpoint: Option<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Output {
    Table,
    Json,
    Yaml,
}

/// The exit status of an audit whose findings reach `--fail-on`.
const FINDINGS_STATUS: i32 = 3;

pub async fn run(args: AuditArgs) -> anyhow::Result<()> {
    let cache_dir = match args.cache_dir {
        Some(dir) => dir,
        None => super::backend::user_cache_dir()?,
    };
    let backend = args.registry.resolve(&args.backend, &cache_dir).await?;
    let auditor = Auditor::connect(ScanOptions {
        backend,
        backend_config: args.backend_config,
        driver_name: args.driver_name,
        kubeconfig: args.kubeconfig,
        namespace: args.namespace,
        cache_dir,
        call_timeout: args.call_timeout,
        thresholds: Thresholds {
            grace: args.grace,
            orphan_age: args.orphan_age,
            pending: args.pending_age,
            cleanup: args.cleanup_age,
            underused: args.underused_age,
        },
    })
    .await?;
    if let Some(address) = args.serve {
        let bound = Service::new(auditor, args.interval, args.access, args.history_configmap)
            .run(address)
            .await
            .map_err(|e| anyhow::anyhow!("serving the audit on {address}: {e}"))?;
        tracing::info!(address = %bound, "audit service started");
        tokio::signal::ctrl_c().await?;
        return Ok(());
    }
    let report = match (&args.local_dir_root, &args.kubelet_root) {
        (None, None) => auditor.scan().await?,
        (root, kubelet_root) => {
            (auditor.scan_node(root.as_deref(), kubelet_root.as_deref())).await?
        }
    };
    let deletions = match (&args.csi_endpoint, args.delete) {
        (Some(endpoint), true) => Some(
            auditor
                .delete_orphans(&report, endpoint, args.dry_run)
                .await?,
        ),
        _ => None,
    };
    let printed = Printed {
        report: &report,
        deletions,
    };
    match args.output {
        Output::Table => {
            print!("{}", report.text());
            for d in printed.deletions.iter().flatten() {
                println!("delete volume {}: {}", d.volume, d.outcome);
            }
        }
        Output::Json => println!("{}", serde_json::to_string_pretty(&printed)?),
        Output::Yaml => print!("{}", serde_saphyr::to_string(&printed)?),
    }
    if report.worst().is_some_and(|worst| worst >= args.fail_on) {
        std::process::exit(FINDINGS_STATUS);
    }
    Ok(())
}

/// The report, with `deletions` beside its fields when there were any.
#[derive(serde::Serialize)]
struct Printed<'a> {
    #[serde(flatten)]
    report: &'a Report,
    #[serde(skip_serializing_if = "Option::is_none")]
    deletions: Option<Vec<Deletion>>,
}
