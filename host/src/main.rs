//! The `modcsi` binary: `serve` runs the CSI driver; `csi` is a CSI client for people;
//! `backend` is for backend authors (new, inspect, check, push, contract); `audit` finds
//! orphans.

mod cli;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use modcsi::csi::Mode;
use modcsi::serve::{ServeConfig, Server};

#[derive(Parser)]
#[command(
    name = "modcsi",
    version,
    about = "CSI driver host for WebAssembly storage backends"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How log lines are written to stderr: `text` for people, `json` (one object a line, the
    /// call's span fields included) for log collectors.
    #[arg(
        long,
        value_enum,
        default_value = "text",
        global = true,
        env = "MODCSI_LOG_FORMAT"
    )]
    log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the CSI Identity, Controller and/or Node services with one backend component.
    Serve(Box<ServeArgs>),
    /// Talk to any CSI endpoint: create, delete, publish, unpublish, stats, info.
    Csi(cli::csi::CsiArgs),
    /// For backend authors: make a new backend crate, inspect a component, check one against
    /// the host's rules.
    Backend(cli::backend::BackendArgs),
    /// Find what is wrong between Kubernetes and the backend: PVs whose volume is gone,
    /// volumes no PV names, PVs released but never deleted, claims that wait; exits 3 when a
    /// finding reaches --fail-on.
    Audit(Box<cli::audit::AuditArgs>),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// The backend component to load: a .wasm file, or an OCI artifact
    /// (oci://registry/repository:tag, or pinned: oci://registry/repository@sha256:…), pulled,
    /// verified by digest and cached under the cache directory.
    #[arg(long)]
    backend: String,
    #[command(flatten)]
    registry: cli::backend::RegistryArgs,
    /// CSI driver name, e.g. node-local-cache.csi.io.
    #[arg(long)]
    driver_name: String,
    /// This node's id (defaults to the host name).
    #[arg(long, env = "NODE_ID")]
    node_id: Option<String>,
    /// Where to listen.
    #[arg(long, env = "CSI_ENDPOINT", default_value = "unix:///csi/csi.sock")]
    endpoint: String,
    /// Which services to serve.
    #[arg(long, value_enum, default_value = "all")]
    mode: Mode,
    /// State: local volume directories and the precompiled component cache.
    #[arg(long, default_value = "/var/lib/modcsi")]
    state_dir: PathBuf,
    /// Where precompiled components are cached (default: <state-dir>/cache).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Upper bound on one backend call, e.g. 30s or 500ms (a shorter gRPC deadline wins).
    #[arg(long, default_value = "30s", value_parser = cli::parse_duration)]
    call_timeout: Duration,
    /// Linear-memory cap of one backend instance, in MiB.
    #[arg(long, default_value_t = 128)]
    backend_memory_mib: usize,
    /// Backend instances that may run at once.
    #[arg(long, default_value_t = 32)]
    max_concurrent_calls: u32,
    /// The backend's configuration (TOML); `{ secret-file = "/path" }` values are secrets.
    #[arg(long)]
    backend_config: Option<PathBuf>,
    /// Target and staging paths must lie beneath this directory.
    #[arg(long, default_value = "/var/lib/kubelet")]
    kubelet_root: PathBuf,
    /// Node operations (mounts, formatting, stats) running at once.
    #[arg(long, default_value_t = 16)]
    max_node_operations: usize,
    /// NVMe subsystems whose NQN begins with this are the driver's to connect and disconnect
    /// (e.g. nqn.2000-02.com.mikrotik:pvc-); without it, nvme-tcp volumes are refused. Keeps a
    /// node's own NVMe-oF disks out of reach.
    #[arg(long, env = "MODCSI_MANAGED_NQN_PREFIX")]
    managed_nqn_prefix: Option<String>,
    /// A prefix of /dev/disk/by-id names that backends' `disk` attachments may name
    /// (repeatable, or comma-separated); without it or --allow-disk-serial, disks are refused.
    /// Keeps the node's own disks and other drivers' volumes out of reach.
    #[arg(long, env = "MODCSI_ALLOW_DISK_BY_ID", value_delimiter = ',')]
    allow_disk_by_id: Vec<String>,
    /// A disk serial number backends' `disk` attachments may name, `*` matching any run of
    /// characters (repeatable, or comma-separated), e.g. `pvc-*`.
    #[arg(long, env = "MODCSI_ALLOW_DISK_SERIAL", value_delimiter = ',')]
    allow_disk_serial: Vec<String>,
    /// Where node-local volume directories live (default <state-dir>/local; the public
    /// node-local-cache driver uses /var/node-local-cache).
    #[arg(long)]
    local_dir_root: Option<PathBuf>,
    /// The project ids node-local directories get for their quotas, FROM-TO (keep it clear of
    /// /etc/projects and of kubelet's fsquota ids, 1048577 up).
    #[arg(long, default_value = "2000000000-2099999999", value_parser = cli::parse_range)]
    project_ids: std::ops::RangeInclusive<u32>,
    /// Use the Kubernetes API with this kubeconfig. Without it, in-cluster credentials are used
    /// in a pod; elsewhere the host is standalone (state in the embedded store only).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Namespace of the driver's ConfigMaps (default: the pod's, or the kubeconfig's).
    #[arg(long, env = "POD_NAMESPACE")]
    namespace: Option<String>,
    /// How often the reconcilers look for deleted nodes, e.g. 60s.
    #[arg(long, default_value = "60s", value_parser = cli::parse_duration)]
    reconcile_interval: Duration,
    /// Attachments younger than this are never cleared by the reconciler.
    #[arg(long, default_value = "30s", value_parser = cli::parse_duration)]
    attachment_grace: Duration,
    /// A node whose detach began less than this ago (and failed) does not block another. 0
    /// (the default): a holder gives the volume up only once its unpublish succeeded. Set it
    /// only for storage that fences writers itself.
    #[arg(long, default_value = "0s", value_parser = cli::parse_duration)]
    detach_grace: Duration,
    /// Serve Prometheus metrics (`/metrics`) and a readiness check (`/healthz`) over HTTP on
    /// this address, e.g. 0.0.0.0:9810; started once the backend is loaded and the socket bound.
    #[arg(long, env = "MODCSI_METRICS_ADDRESS")]
    metrics_address: Option<std::net::SocketAddr>,
}

/// nvme-cli's record of this node's host NQN, sent on connect when present.
const HOST_NQN_FILE: &str = "/etc/nvme/hostnqn";

fn main() {
    if let Err(err) = run(Cli::parse()) {
        // Our errors carry their causes in their messages; print the outermost only.
        eprintln!("modcsi: {err}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().with_current_span(true).init(),
    }
    // Node work runs on blocking threads (`node/pool.rs`). Tokio lets an idle one exit after
    // 10 s, less than the gap between two volumes' calls in a cluster, so nearly every call
    // started a thread; kept 5 minutes, kubelet's minutely stats calls keep one warm. A parked
    // thread costs no wakeups, only its stack.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_keep_alive(Duration::from_secs(300))
        .build()
        .map_err(|e| anyhow::anyhow!("starting the async runtime: {e}"))?;
    runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(*args).await,
            Command::Csi(args) => cli::csi::run(args).await,
            Command::Backend(args) => cli::backend::run(args).await,
            Command::Audit(args) => cli::audit::run(*args).await,
        }
    })
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let node_id = match args.node_id {
        Some(id) => id,
        None => nix::unistd::gethostname()
            .map_err(|e| anyhow::anyhow!("reading the host name for --node-id: {e}"))?
            .to_string_lossy()
            .into_owned(),
    };
    let mut devices = modcsi::node::device::DeviceDirs::default();
    devices.nvme.managed_prefix = args.managed_nqn_prefix;
    devices.allowed_disks = modcsi::node::device::AllowedDisks {
        by_id_prefixes: args.allow_disk_by_id,
        serials: args.allow_disk_serial,
    };
    devices.nvme.host_nqn = match std::fs::read_to_string(HOST_NQN_FILE) {
        Ok(text) => Some(text.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => anyhow::bail!("reading {HOST_NQN_FILE}: {e}"),
    };
    let cache_dir = args
        .cache_dir
        .unwrap_or_else(|| args.state_dir.join("cache"));
    let backend = args.registry.resolve(&args.backend, &cache_dir).await?;
    cli::backend::precompile_in_child(
        &backend,
        &cache_dir,
        args.max_concurrent_calls,
        args.backend_memory_mib,
    );
    let server = Server::prepare(ServeConfig {
        backend,
        driver_name: args.driver_name,
        node_id,
        endpoint: args.endpoint,
        mode: args.mode,
        cache_dir,
        state_dir: args.state_dir,
        call_timeout: args.call_timeout,
        memory_limit_mib: args.backend_memory_mib,
        max_concurrent_calls: args.max_concurrent_calls,
        backend_config: args.backend_config,
        kubelet_root: args.kubelet_root,
        max_node_operations: args.max_node_operations,
        devices,
        local_dir_root: args.local_dir_root,
        project_ids: args.project_ids,
        cluster: modcsi::serve::ClusterOptions {
            kubeconfig: args.kubeconfig,
            namespace: args.namespace,
            reconcile_interval: args.reconcile_interval,
            attachment_grace: args.attachment_grace,
            detach_grace: args.detach_grace,
        },
    })
    .await?;
    // Loading may still have compiled the component (the child could not): return the
    // compiler's freed memory to the system instead of keeping it in the allocator's arenas.
    // SAFETY: malloc_trim only releases free memory; it touches no live allocation.
    unsafe { nix::libc::malloc_trim(0) };
    if let Some(address) = args.metrics_address {
        modcsi::scrape::start(address)
            .await
            .map_err(|e| anyhow::anyhow!("metrics endpoint on {address}: {e}"))?;
    }
    server.run(shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutdown requested");
}
