//! `modcsi audit`: orphans and stuck objects between Kubernetes and the backend, as a table or
//! JSON; the exit code follows a severity threshold, for cron jobs and CI.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use modcsi::audit::{ScanOptions, Severity, Thresholds, scan};

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
    /// `table` for people, `json` for programs.
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
    /// Upper bound on one backend call.
    #[arg(long, default_value = "30s", value_parser = super::parse_duration)]
    call_timeout: Duration,
    /// Where compiled components are cached (default: $XDG_CACHE_HOME/modcsi or
    /// ~/.cache/modcsi).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Output {
    Table,
    Json,
}

/// The exit status of an audit whose findings reach `--fail-on`.
const FINDINGS_STATUS: i32 = 3;

pub async fn run(args: AuditArgs) -> anyhow::Result<()> {
    let cache_dir = match args.cache_dir {
        Some(dir) => dir,
        None => super::backend::user_cache_dir()?,
    };
    let backend = args.registry.resolve(&args.backend, &cache_dir).await?;
    let report = scan(&ScanOptions {
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
        },
    })
    .await?;
    match args.output {
        Output::Table => print!("{}", report.text()),
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    if report.worst().is_some_and(|worst| worst >= args.fail_on) {
        std::process::exit(FINDINGS_STATUS);
    }
    Ok(())
}
