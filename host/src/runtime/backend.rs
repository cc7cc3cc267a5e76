//! A loaded backend component and the one way to call it: a fresh instance per call, with a
//! deadline, a memory cap and a bounded number of concurrent instances.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use wasmtime::component::{Component, Instance, Linker};
use wasmtime::{Engine, Store, UpdateDeadline};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

use super::artifact_cache::{ArtifactCache, CacheError, Origin};
use super::call_state::CallState;
use super::capabilities::{BackendConfig, Scrubber, SharedCache};
use super::engine;
use super::limits::CallLimits;
use super::operations::{Calls, Optional, for_each_operation};
use super::{v0_1, v0_2};
use crate::state::StateStore;
use crate::volume::types::*;

/// How much of a failing call's stderr (a panic message, say) is kept for the error.
const STDERR_CAPTURE: usize = 16 * 1024;
const STDERR_IN_ERROR: usize = 400;
/// Longest backend error message passed on to the CO.
const MAX_ERROR_MESSAGE: usize = 1024;
/// Extra time the outer timeout allows beyond the epoch deadline before abandoning the call.
const OUTER_GRACE: Duration = Duration::from_millis(250);

/// The WIT packages this host loads, for messages.
pub const ACCEPTED_VERSIONS: &str = "modcsi:backend@0.1.0 or modcsi:backend@0.2.x";

#[derive(Clone)]
pub struct RuntimeOptions {
    /// Where precompiled components are cached.
    pub cache_dir: PathBuf,
    /// Linear-memory cap of one instance, in bytes.
    pub memory_limit: usize,
    /// Upper bound on any one backend call (a shorter gRPC deadline wins).
    pub call_timeout: Duration,
    /// Instances that may run at once; further calls wait for a slot within their deadline.
    pub max_concurrent_calls: u32,
    /// The backend's configuration document (`config` import).
    pub config: Arc<BackendConfig>,
    /// The durable store behind the `store` import, if the host has one.
    pub store: Option<Arc<dyn StateStore>>,
    /// The node's IP addresses (`node` import; empty on a controller-only host).
    pub node_addresses: Arc<[String]>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read backend component {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("backend {path} is not a WebAssembly component: {reason}")]
    NotAComponent { path: PathBuf, reason: &'static str },
    #[error("cannot start the wasmtime engine: {0:#}")]
    Engine(wasmtime::Error),
    #[error("backend component {path}: {source}")]
    Cache { path: PathBuf, source: CacheError },
    #[error(
        "backend component {path} is not a modcsi backend: it exports no modcsi:backend/identity interface"
    )]
    NotABackend { path: PathBuf },
    #[error(
        "backend component {path} is built for modcsi:backend@{found}; this host accepts {accepted}"
    )]
    Version {
        path: PathBuf,
        found: String,
        accepted: &'static str,
    },
    #[error("backend component {path} cannot be linked: {source:#}")]
    Link {
        path: PathBuf,
        source: wasmtime::Error,
    },
    #[error("backend component {path} failed to describe itself: {source}")]
    Info { path: PathBuf, source: CallError },
}

/// Why a backend call failed. Every variant names the backend and the operation.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("backend {backend}: {operation} did not finish within {deadline:?}")]
    Timeout {
        backend: Arc<str>,
        operation: &'static str,
        deadline: Duration,
    },
    #[error("backend {backend}: {operation} exceeded the memory limit of {limit_mib} MiB{stderr}")]
    MemoryLimit {
        backend: Arc<str>,
        operation: &'static str,
        limit_mib: usize,
        stderr: String,
    },
    #[error("backend {backend}: {operation} trapped: {trap}{stderr}")]
    Trap {
        backend: Arc<str>,
        operation: &'static str,
        trap: String,
        stderr: String,
    },
    #[error("backend {backend}: no instance slot free for {operation} within its deadline")]
    Busy {
        backend: Arc<str>,
        operation: &'static str,
    },
    #[error("backend {backend}: {operation}: {error}")]
    Refused {
        backend: Arc<str>,
        operation: &'static str,
        error: BackendError,
    },
}

/// Marker error raised by the epoch callback when a call's deadline passes.
#[derive(Debug, thiserror::Error)]
#[error("deadline exceeded")]
struct DeadlineExceeded;

/// Mean cost of a backend call, split into instantiation (store, WASI context and instance)
/// and the call into the component itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallTimings {
    pub calls: u64,
    pub mean_instantiate: Duration,
    pub mean_call: Duration,
}

#[derive(Default)]
struct TimingCounters {
    calls: AtomicU64,
    instantiate_ns: AtomicU64,
    call_ns: AtomicU64,
}

/// The exports of a loaded component, by the WIT version it was built for.
enum Versions {
    V0_1(v0_1::Exports),
    V0_2(v0_2::Exports),
}

type CallFuture<'a, R> = Pin<Box<dyn Future<Output = wasmtime::Result<R>> + Send + 'a>>;

fn no_secrets() -> std::iter::Empty<String> {
    std::iter::empty()
}

fn values(pairs: &KeyValues) -> impl Iterator<Item = String> + '_ {
    pairs.iter().map(|(_, v)| v.clone())
}

/// One public method per operation of the table: it runs the operation through
/// [`Backend::invoke`] on whichever contract version the component speaks and turns the
/// backend's error value into [`CallError::Refused`]. The row's secrets are scrubbed from
/// everything the backend writes during the call.
macro_rules! backend_methods {
    ($(
        $name:ident $op:literal ($($arg:ident: $ty:ty),*) -> $ret:ty,
            secrets: $secrets:expr,
            v0_2: $kind:tt $iface:ident . $call:ident($($warg:expr),*);
    )*) => {
        impl Backend {
            $(
                #[doc = concat!("Calls the backend's `", $op, "`.")]
                #[allow(clippy::too_many_arguments)]
                pub async fn $name(
                    &self,
                    $($arg: $ty,)*
                    timeout: Option<Duration>,
                ) -> Result<$ret, CallError> {
                    let scrubber = self.scrubber($secrets);
                    let started = Instant::now();
                    let result = self
                        .invoke($op, timeout, scrubber.clone(), move |store, instance, versions| {
                            Box::pin(async move {
                                match versions {
                                    Versions::V0_1(e) => e.$name(store, instance, $($arg),*).await,
                                    Versions::V0_2(e) => e.$name(store, instance, $($arg),*).await,
                                }
                            })
                        })
                        .await
                        .and_then(|answer| {
                            answer.map_err(|error| self.refused($op, error, &scrubber))
                        });
                    crate::metrics::backend_call(
                        &self.name,
                        $op,
                        outcome(&result),
                        started.elapsed(),
                    );
                    result
                }
            )*
        }
    };
}

for_each_operation!(backend_methods);

pub struct Backend {
    name: Arc<str>,
    info: BackendInfo,
    origin: Origin,
    engine: Engine,
    /// Keeps the epoch (the deadlines' clock) advancing while a call runs.
    ticker: engine::Ticker,
    pre: wasmtime::component::InstancePre<CallState>,
    versions: Versions,
    wit_version: String,
    options: RuntimeOptions,
    slots: Semaphore,
    cache: Arc<SharedCache>,
    timings: TimingCounters,
}

impl Backend {
    /// Loads the component at `path` (from the artifact cache when possible), checks that it
    /// speaks a WIT version this host serves, links its imports and asks it to describe itself.
    pub async fn load(path: &Path, options: RuntimeOptions) -> Result<Self, LoadError> {
        let (engine, ticker) = engine::build(options.max_concurrent_calls, options.memory_limit)
            .map_err(LoadError::Engine)?;
        let (component, origin) = compiled(path, &engine, &options.cache_dir)?;
        let wit_version = wit_version(path, &engine, &component)?;

        let link_err = |source| LoadError::Link {
            path: path.to_owned(),
            source,
        };
        let mut linker = Linker::<CallState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(link_err)?;
        v0_1::add_to_linker(&mut linker).map_err(link_err)?;
        super::capabilities::add_v0_2_to_linker(&mut linker).map_err(link_err)?;
        let pre = linker.instantiate_pre(&component).map_err(link_err)?;
        let versions = if wit_version == "0.1.0" {
            Versions::V0_1(v0_1::Exports::new(&pre).map_err(link_err)?)
        } else {
            Versions::V0_2(v0_2::Exports::new(&pre).map_err(link_err)?)
        };

        let mut backend = Backend {
            name: Arc::from(
                path.file_stem()
                    .map_or("backend".into(), |s| s.to_string_lossy()),
            ),
            // Stands in until the backend's own `info` answers below.
            info: BackendInfo::default(),
            origin,
            engine,
            ticker,
            pre,
            versions,
            wit_version,
            slots: Semaphore::new(options.max_concurrent_calls as usize),
            options,
            cache: Arc::default(),
            timings: TimingCounters::default(),
        };
        let info = backend
            .invoke(
                "info",
                None,
                Scrubber::default(),
                |store, instance, versions| {
                    Box::pin(async move {
                        match versions {
                            Versions::V0_1(e) => e.info(store, instance).await,
                            Versions::V0_2(e) => e.info(store, instance).await,
                        }
                    })
                },
            )
            .await
            .map_err(|source| LoadError::Info {
                path: path.to_owned(),
                source,
            })?;
        backend.name = Arc::from(info.name.as_str());
        backend.info = info;
        Ok(backend)
    }

    /// The backend's own name, as used in logs and errors.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn info(&self) -> &BackendInfo {
        &self.info
    }

    /// The WIT package version the component was built for, e.g. `0.2.0`.
    pub fn wit_version(&self) -> &str {
        &self.wit_version
    }

    /// Whether the backend offers an optional interface (0.2: exports it; 0.1: declares the
    /// matching capability flag).
    pub fn offers(&self, interface: Optional) -> bool {
        match &self.versions {
            Versions::V0_1(e) => e.offers(interface),
            Versions::V0_2(e) => e.offers(interface),
        }
    }

    /// The names of the component's imports and of its exports, as the component states
    /// them (`modcsi:backend/ssh@0.2.3`, `wasi:http/outgoing-handler@0.2.6`).
    pub fn interfaces(&self) -> (Vec<String>, Vec<String>) {
        let ty = self.pre.component().component_type();
        let names = |items: &mut dyn Iterator<Item = (&str, _)>| {
            items.map(|(name, _)| name.to_owned()).collect::<Vec<_>>()
        };
        (
            names(&mut ty.imports(&self.engine)),
            names(&mut ty.exports(&self.engine)),
        )
    }

    /// Whether the component was compiled at load or came from the artifact cache.
    pub fn origin(&self) -> Origin {
        self.origin
    }

    pub fn timings(&self) -> CallTimings {
        let calls = self.timings.calls.load(Ordering::Relaxed);
        let mean = |ns: &AtomicU64| {
            Duration::from_nanos(ns.load(Ordering::Relaxed).checked_div(calls).unwrap_or(0))
        };
        CallTimings {
            calls,
            mean_instantiate: mean(&self.timings.instantiate_ns),
            mean_call: mean(&self.timings.call_ns),
        }
    }

    /// This call's secret values plus the configuration's.
    fn scrubber(&self, secrets: impl Iterator<Item = String>) -> Scrubber {
        Scrubber::new(secrets.chain(self.options.config.secrets().iter().cloned()))
    }

    /// The backend's error value as a [`CallError`], its message scrubbed, escaped and bounded.
    fn refused(
        &self,
        operation: &'static str,
        error: BackendError,
        scrubber: &Scrubber,
    ) -> CallError {
        CallError::Refused {
            backend: self.name.clone(),
            operation,
            error: error.map_message(|m| scrubber.clean(&m, MAX_ERROR_MESSAGE)),
        }
    }

    /// Runs `call` on a fresh instance within the call's deadline and memory cap. The deadline
    /// counts from the call's start, waiting for an instance slot included.
    async fn invoke<R, F>(
        &self,
        operation: &'static str,
        timeout: Option<Duration>,
        scrubber: Scrubber,
        call: F,
    ) -> Result<R, CallError>
    where
        F: for<'a> FnOnce(
            &'a mut Store<CallState>,
            &'a Instance,
            &'a Versions,
        ) -> CallFuture<'a, R>,
    {
        let budget = timeout.map_or(self.options.call_timeout, |t| {
            t.min(self.options.call_timeout)
        });
        let started = Instant::now();
        let deadline = started + budget;
        let timed_out = || CallError::Timeout {
            backend: self.name.clone(),
            operation,
            deadline: budget,
        };
        let _slot = tokio::time::timeout_at(deadline.into(), self.slots.acquire())
            .await
            .map_err(|_| CallError::Busy {
                backend: self.name.clone(),
                operation,
            })?
            .expect("the slot semaphore is never closed");

        let stderr = MemoryOutputPipe::new(STDERR_CAPTURE);
        let mut store = Store::new(
            &self.engine,
            CallState::new(
                WasiCtxBuilder::new().stderr(stderr.clone()).build(),
                CallLimits::new(self.options.memory_limit),
                self.name.clone(),
                self.cache.clone(),
                self.options.config.clone(),
                self.options.store.clone(),
                deadline,
                self.options.node_addresses.clone(),
                scrubber.clone(),
            ),
        );
        store.limiter(|state| &mut state.limits);
        // Deadline set before instantiating: with epochs on, the start function runs under it.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Err(DeadlineExceeded.into())
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });

        let _ticking = self.ticker.start();
        let slotted = Instant::now();
        let versions = &self.versions;
        let run = async {
            let instance = self.pre.instantiate_async(&mut store).await?;
            let instantiated = Instant::now();
            let result = call(&mut store, &instance, versions).await?;
            Ok::<_, wasmtime::Error>((result, instantiated))
        };
        // Epochs stop a spinning guest; this outer bound also stops one parked in a host call.
        let outcome = tokio::time::timeout_at((deadline + OUTER_GRACE).into(), run).await;
        // Not the load's own `info` call: the backend has no name of its own yet.
        if !self.info.name.is_empty() {
            crate::metrics::backend_memory(&self.name, operation, store.data().limits.peak);
        }
        let (result, instantiated) = match outcome {
            Err(_elapsed) => return Err(timed_out()),
            Ok(Ok(done)) => done,
            Ok(Err(err)) => {
                let stderr = scrubber.scrub(&stderr_excerpt(&stderr));
                if err.downcast_ref::<DeadlineExceeded>().is_some() {
                    return Err(timed_out());
                }
                // The full chain, wasm backtrace included, goes to the log; the status that
                // tenants may read gets the cause alone.
                tracing::error!(
                    backend = %self.name,
                    operation,
                    "backend call failed: {}",
                    scrubber.scrub(&format!("{err:?}"))
                );
                return Err(if store.data().limits.memory_refused {
                    CallError::MemoryLimit {
                        backend: self.name.clone(),
                        operation,
                        limit_mib: self.options.memory_limit >> 20,
                        stderr,
                    }
                } else {
                    CallError::Trap {
                        backend: self.name.clone(),
                        operation,
                        trap: scrubber.clean(&trap_cause(&err), STDERR_IN_ERROR),
                        stderr,
                    }
                });
            }
        };
        let finished = Instant::now();
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.timings.calls.fetch_add(1, Ordering::Relaxed);
        self.timings
            .instantiate_ns
            .fetch_add(nanos(instantiated - slotted), Ordering::Relaxed);
        self.timings
            .call_ns
            .fetch_add(nanos(finished - instantiated), Ordering::Relaxed);
        Ok(result)
    }
}

/// A call's outcome, as the metrics name it.
fn outcome<T>(result: &Result<T, CallError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(CallError::Refused { .. }) => "refused",
        Err(CallError::Timeout { .. }) => "timeout",
        Err(CallError::MemoryLimit { .. }) => "memory_limit",
        Err(CallError::Trap { .. }) => "trap",
        Err(CallError::Busy { .. }) => "busy",
    }
}

/// A trap's cause without the wasm backtrace wasmtime attaches as context.
fn trap_cause(err: &wasmtime::Error) -> String {
    if let Some(trap) = err.downcast_ref::<wasmtime::Trap>() {
        return trap.to_string();
    }
    err.root_cause().to_string()
}

/// The last part of what a failed call wrote to stderr, ready to append to an error message.
fn stderr_excerpt(pipe: &MemoryOutputPipe) -> String {
    let text = String::from_utf8_lossy(&pipe.contents()).trim().to_string();
    if text.is_empty() {
        return String::new();
    }
    let start = text.len().saturating_sub(STDERR_IN_ERROR);
    let start = (start..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    format!("; backend stderr: {}", &text[start..])
}

/// The component at `path`, from the artifact cache or compiled into it.
fn compiled(
    path: &Path,
    engine: &Engine,
    cache_dir: &Path,
) -> Result<(Component, Origin), LoadError> {
    let wasm = std::fs::read(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })?;
    check_header(&wasm).map_err(|reason| LoadError::NotAComponent {
        path: path.to_owned(),
        reason,
    })?;
    let cache_err = |source| LoadError::Cache {
        path: path.to_owned(),
        source,
    };
    let cache = ArtifactCache::open(cache_dir).map_err(cache_err)?;
    cache.load(engine, &wasm).map_err(cache_err)
}

/// Puts the component's compiled form in the artifact cache for the engine `Backend::load`
/// builds with these limits, compiling it if it is not there yet. `modcsi serve` runs this in a
/// child process, so that the compiler's code and memory never enter the long-running driver.
pub fn precompile(
    path: &Path,
    cache_dir: &Path,
    max_concurrent_calls: u32,
    memory_limit: usize,
) -> Result<Origin, LoadError> {
    let engine = Engine::new(&engine::config(max_concurrent_calls, memory_limit))
        .map_err(LoadError::Engine)?;
    compiled(path, &engine, cache_dir).map(|(_, origin)| origin)
}

/// Tells a component from a core module or a stray file before the compiler sees it (its own
/// message for these is a byte dump).
fn check_header(wasm: &[u8]) -> Result<(), &'static str> {
    match wasm.get(..8) {
        Some([0, b'a', b's', b'm', _, _, 1, 0]) => Ok(()),
        Some([0, b'a', b's', b'm', _, _, 0, 0]) => {
            Err("it is a core module; build the backend for wasm32-wasip2 to get a component")
        }
        _ => Err("it does not start with the WebAssembly magic number"),
    }
}

/// The version of the `modcsi:backend` package the component exports, if this host serves it.
fn wit_version(
    path: &Path,
    engine: &Engine,
    component: &wasmtime::component::Component,
) -> Result<String, LoadError> {
    let found = component
        .component_type()
        .exports(engine)
        .find_map(|(name, _)| {
            name.strip_prefix("modcsi:backend/identity@")
                .map(str::to_owned)
        })
        .ok_or_else(|| LoadError::NotABackend {
            path: path.to_owned(),
        })?;
    if found == "0.1.0" || found.starts_with("0.2.") {
        Ok(found)
    } else {
        Err(LoadError::Version {
            path: path.to_owned(),
            found,
            accepted: ACCEPTED_VERSIONS,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn load_wat(wat: &str) -> Result<Backend, LoadError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("component.wasm");
        std::fs::write(&path, wat::parse_str(wat).unwrap()).unwrap();
        Backend::load(
            &path,
            RuntimeOptions {
                cache_dir: dir.path().join("cache"),
                memory_limit: 16 << 20,
                call_timeout: Duration::from_secs(5),
                max_concurrent_calls: 2,
                config: Arc::default(),
                store: None,
                node_addresses: std::sync::Arc::from([]),
            },
        )
        .await
    }

    #[tokio::test]
    async fn refuses_a_component_of_another_wit_version_naming_both() {
        let err = load_wat(
            r#"(component (instance $i) (export "modcsi:backend/identity@0.3.0" (instance $i)))"#,
        )
        .await
        .err()
        .expect("refused");
        assert!(matches!(err, LoadError::Version { .. }), "{err}");
        let message = err.to_string();
        assert!(
            message.contains("modcsi:backend@0.3.0") && message.contains("modcsi:backend@0.2.x"),
            "{message}"
        );
    }

    #[test]
    fn headers() {
        assert_eq!(
            check_header(&wat::parse_str("(component)").unwrap()),
            Ok(())
        );
        assert!(
            check_header(&wat::parse_str("(module)").unwrap())
                .unwrap_err()
                .contains("core module")
        );
        assert!(
            check_header(b"not wasm at all")
                .unwrap_err()
                .contains("magic")
        );
        assert!(check_header(b"").is_err());
    }

    #[tokio::test]
    async fn refuses_a_component_that_is_not_a_backend() {
        let err = load_wat("(component)").await.err().expect("refused");
        assert!(matches!(err, LoadError::NotABackend { .. }), "{err}");
    }

    #[test]
    fn stderr_excerpt_keeps_the_tail() {
        use wasmtime_wasi::p2::{OutputStream, pipe::MemoryOutputPipe};
        let mut pipe = MemoryOutputPipe::new(4096);
        assert_eq!(stderr_excerpt(&pipe), "");
        let long = format!("{}panicked at src/lib.rs:1: boom\n", "x".repeat(1000));
        pipe.write(long.into()).unwrap();
        let excerpt = stderr_excerpt(&pipe);
        assert!(
            excerpt.starts_with("; backend stderr: ") && excerpt.ends_with("boom"),
            "{excerpt}"
        );
        assert!(excerpt.len() < 500);
    }
}
