//! `modcsi backend new | inspect | check | push | contract`: the backend author's commands.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use modcsi::author::check::{self, CheckOptions};
use modcsi::author::inspect::inspect;
use modcsi::author::scaffold::{SdkSource, new_backend};
use modcsi::runtime::BackendConfig;
use modcsi::runtime::registry::{self, Registry};

#[derive(Args)]
pub struct BackendArgs {
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Subcommand)]
enum Verb {
    /// Write a new backend crate that builds for wasm32-wasip2 and passes `check` as made.
    New(NewArgs),
    /// Say what a component is: contract, exports, capabilities it imports, what it declares,
    /// size and compile time.
    Inspect {
        /// A .wasm file, or an OCI reference (oci://registry/repository:tag or @sha256:…).
        component: String,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Push a component to an OCI registry (the Wasm artifact layout) and print the reference
    /// pinned by digest, for `modcsi serve --backend`.
    Push {
        component: PathBuf,
        /// Where to: oci://registry/repository:tag.
        reference: String,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Print the contract's reference (the newest WIT, as Markdown).
    Contract,
    /// Run a component through the host's rules and report each one; exits non-zero when one
    /// fails.
    Check(Box<CheckArgs>),
    /// Compile a component into the artifact cache for the engine `serve` builds with these
    /// limits (`serve` runs this as its child).
    #[command(hide = true)]
    Precompile {
        component: PathBuf,
        #[arg(long)]
        cache_dir: PathBuf,
        #[arg(long)]
        max_concurrent_calls: u32,
        #[arg(long)]
        backend_memory_mib: usize,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Lang {
    Rust,
}

#[derive(Args)]
#[command(group = clap::ArgGroup::new("sdk").required(true).args(["sdk_git", "sdk_version"]))]
struct NewArgs {
    /// The backend's name: lowercase letters, digits and dashes.
    name: String,
    /// The language of the crate (Rust is the one the SDK serves today).
    #[arg(long, value_enum, default_value = "rust")]
    lang: Lang,
    /// Where to make the crate's directory.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Take the SDK from this git repository (the modcsi repository or a fork of it).
    #[arg(long)]
    sdk_git: Option<String>,
    /// With --sdk-git: a branch, tag or commit (default: the repository's default branch).
    #[arg(long, requires = "sdk_git")]
    sdk_rev: Option<String>,
    /// Take the SDK from the crate registry, at this version requirement.
    #[arg(long)]
    sdk_version: Option<String>,
}

/// How OCI registries are reached.
#[derive(Args)]
pub struct RegistryArgs {
    /// A registry (host:port) spoken to over plain HTTP instead of HTTPS (repeatable, or
    /// comma-separated). A reference pinned by digest stays verified either way.
    #[arg(long, env = "MODCSI_INSECURE_REGISTRY", value_delimiter = ',')]
    pub insecure_registry: Vec<String>,
}

impl RegistryArgs {
    /// The component `value` names: the file itself, or the cached copy of the OCI artifact
    /// it references, pulled and verified into `cache_dir`.
    pub async fn resolve(&self, value: &str, cache_dir: &Path) -> anyhow::Result<PathBuf> {
        if registry::reference(value).is_none() {
            return Ok(PathBuf::from(value));
        }
        let registry = Registry::new(cache_dir, self.insecure_registry.clone());
        let pulled = registry.pull(value).await?;
        tracing::info!(
            reference = value,
            manifest = %pulled.manifest_digest,
            component = %pulled.digest,
            "backend pulled and verified"
        );
        Ok(pulled.path)
    }
}

#[derive(Args)]
struct CheckArgs {
    /// A .wasm file, or an OCI reference (oci://registry/repository:tag or @sha256:…).
    #[arg(required_unless_present = "rules")]
    component: Option<String>,
    #[command(flatten)]
    registry: RegistryArgs,
    /// The backend's configuration, as `modcsi serve --backend-config` takes it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// A StorageClass parameter for every CreateVolume, key=value (repeatable).
    #[arg(long = "param", value_parser = super::parse_pair)]
    params: Vec<(String, String)>,
    /// A secret for every call that carries secrets, key=value (repeatable).
    #[arg(long = "secret", value_parser = super::parse_pair)]
    secrets: Vec<(String, String)>,
    /// Capacity of the test volume, e.g. 1Gi.
    #[arg(long, default_value = "1Gi", value_parser = super::parse_size)]
    size: i64,
    /// The node ControllerPublish publishes to, unless the backend's node-identity names one.
    #[arg(long, default_value = "modcsi-check-node")]
    node_id: String,
    /// Upper bound on one backend call.
    #[arg(long, default_value = "30s", value_parser = super::parse_duration)]
    call_timeout: Duration,
    /// Linear-memory cap of one instance, in MiB.
    #[arg(long, default_value_t = 128)]
    memory_mib: usize,
    /// Where compiled components are cached (default: $XDG_CACHE_HOME/modcsi or
    /// ~/.cache/modcsi).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// The report as one JSON object.
    #[arg(long)]
    json: bool,
    /// Print the rules as a Markdown table and exit.
    #[arg(long)]
    rules: bool,
}

pub async fn run(args: BackendArgs) -> anyhow::Result<()> {
    match args.verb {
        Verb::New(new) => {
            let sdk = match (new.sdk_git, new.sdk_version) {
                (Some(url), _) => SdkSource::Git {
                    url,
                    rev: new.sdk_rev,
                },
                (None, Some(version)) => SdkSource::Version(version),
                (None, None) => unreachable!("clap requires one SDK source"),
            };
            let Lang::Rust = new.lang;
            let dir = new_backend(&new.dir, &new.name, &sdk)?;
            println!(
                "made {}\nnext: cd {} && cargo build --release && modcsi backend check \
                 target/wasm32-wasip2/release/{}.wasm",
                dir.display(),
                dir.display(),
                new.name.replace('-', "_")
            );
            Ok(())
        }
        Verb::Inspect {
            component,
            json,
            registry,
        } => {
            let scratch = Scratch::new()?;
            let component = registry.resolve(&component, &user_cache_dir()?).await?;
            let found = inspect(&component, &scratch.0).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&found)?);
            } else {
                print!("{}", found.text());
            }
            Ok(())
        }
        Verb::Contract => {
            print!("{}", modcsi::author::contract::markdown());
            Ok(())
        }
        Verb::Push {
            component,
            reference,
            registry,
        } => {
            // Only what loads is pushed; its interfaces go into the artifact's config.
            let scratch = Scratch::new()?;
            let found = inspect(&component, &scratch.0).await?;
            let wasm = std::fs::read(&component)
                .with_context(|| format!("reading {}", component.display()))?;
            let pinned = Registry::new(&scratch.0, registry.insecure_registry)
                .push(&reference, wasm, (found.imports, found.interfaces_exported))
                .await?;
            println!("{pinned}");
            Ok(())
        }
        Verb::Precompile {
            component,
            cache_dir,
            max_concurrent_calls,
            backend_memory_mib,
        } => {
            modcsi::runtime::precompile(
                &component,
                &cache_dir,
                max_concurrent_calls,
                backend_memory_mib << 20,
            )?;
            Ok(())
        }
        Verb::Check(args) => {
            if args.rules {
                print!("{}", check::markdown());
                return Ok(());
            }
            let cache_dir = match args.cache_dir {
                Some(dir) => dir,
                None => user_cache_dir()?,
            };
            let component = args.component.expect("clap requires a component");
            let component = args.registry.resolve(&component, &cache_dir).await?;
            let options = CheckOptions {
                cache_dir,
                config: match &args.config {
                    Some(path) => BackendConfig::load(path)?,
                    None => BackendConfig::default(),
                },
                call_timeout: args.call_timeout,
                memory_limit: args.memory_mib << 20,
                size: u64::try_from(args.size).context("--size must not be negative")?,
                parameters: args.params,
                secrets: args.secrets,
                node_id: args.node_id,
            };
            let report = check::check(&component, &options).await;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.text());
            }
            if !report.passed() {
                let failed = report.failed().count();
                anyhow::bail!(
                    "{} failed {failed} of {} rules{}",
                    component.display(),
                    report.findings.len(),
                    if report.left_behind.is_empty() {
                        String::new()
                    } else {
                        format!(" and left {} behind", report.left_behind.len())
                    }
                );
            }
            Ok(())
        }
    }
}

/// The per-user cache of compiled components: never a directory others can write, since the
/// host runs what it finds there.
pub fn user_cache_dir() -> anyhow::Result<PathBuf> {
    let base = match (std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME")) {
        (Some(dir), _) if !dir.is_empty() => PathBuf::from(dir),
        (_, Some(home)) if !home.is_empty() => Path::new(&home).join(".cache"),
        _ => anyhow::bail!("neither XDG_CACHE_HOME nor HOME is set: pass --cache-dir"),
    };
    Ok(base.join("modcsi"))
}

/// A directory of this process's own, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "modcsi-inspect-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Compiles the backend in a child process (`backend precompile`), so that the compiler's code
/// and memory stay out of the long-running driver and a compiler crash is the child's. On any
/// failure the driver compiles it itself, and reports what is wrong with it.
pub fn precompile_in_child(
    component: &Path,
    cache_dir: &Path,
    max_concurrent_calls: u32,
    backend_memory_mib: usize,
) {
    let status = std::env::current_exe().and_then(|exe| {
        std::process::Command::new(exe)
            .args(["backend", "precompile"])
            .arg(component)
            .arg("--cache-dir")
            .arg(cache_dir)
            .arg(format!("--max-concurrent-calls={max_concurrent_calls}"))
            .arg(format!("--backend-memory-mib={backend_memory_mib}"))
            .stdout(std::process::Stdio::null())
            .status()
    });
    match status {
        Ok(status) if status.success() => {}
        Ok(status) => {
            tracing::warn!(%status, "precompiling the backend in a child process failed; compiling it here")
        }
        Err(err) => {
            tracing::warn!(%err, "cannot start a child process to precompile the backend; compiling it here")
        }
    }
}
