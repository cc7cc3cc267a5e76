//! A loaded backend component and the one way to call it: a fresh instance per call, with a
//! deadline, a memory cap and a bounded number of concurrent instances.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store, UpdateDeadline};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::artifact_cache::{ArtifactCache, CacheError, Origin};
use super::bindings::{Backend as Bindings, BackendPre, types};
use super::capabilities::SharedCache;
use super::engine::{self, WIT_VERSION};
use super::limits::CallLimits;

/// How much of a failing call's stderr (a panic message, say) is kept for the error.
const STDERR_CAPTURE: usize = 16 * 1024;
const STDERR_IN_ERROR: usize = 400;
/// Extra time the outer timeout allows beyond the epoch deadline before abandoning the call.
const OUTER_GRACE: Duration = Duration::from_millis(250);

#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Where precompiled components are cached.
    pub cache_dir: PathBuf,
    /// Linear-memory cap of one instance, in bytes.
    pub memory_limit: usize,
    /// Upper bound on any one backend call (a shorter gRPC deadline wins).
    pub call_timeout: Duration,
    /// Instances that may run at once; further calls wait for a slot within their deadline.
    pub max_concurrent_calls: u32,
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
        "backend component {path} is built for modcsi:backend@{found}; this host accepts modcsi:backend@{accepted}"
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
    #[error("backend {backend}: {operation}: {}", describe(error))]
    Refused {
        backend: Arc<str>,
        operation: &'static str,
        error: types::Error,
    },
}

/// Marker error raised by the epoch callback when a call's deadline passes.
#[derive(Debug, thiserror::Error)]
#[error("deadline exceeded")]
struct DeadlineExceeded;

/// The store data of one call.
pub(crate) struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: CallLimits,
    pub(crate) backend: Arc<str>,
    pub(crate) cache: Arc<SharedCache>,
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

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

type CallFuture<'a, R> = Pin<Box<dyn Future<Output = wasmtime::Result<R>> + Send + 'a>>;

/// Defines a public method for one WIT export: it runs the export through [`Backend::invoke`]
/// (fresh instance, deadline, memory cap) and turns the backend's error value into
/// [`CallError::Refused`]. `arg: Type => how-it-is-passed` lists the arguments.
macro_rules! backend_call {
    ($name:ident, $op:literal, identity.$call:ident($($arg:ident: $ty:ty => $pass:expr),*) -> $ret:ty) => {
        backend_call!(@method $name, $op, modcsi_backend_identity, $call, ($($arg: $ty => $pass),*), $ret);
    };
    ($name:ident, $op:literal, controller.$call:ident($($arg:ident: $ty:ty => $pass:expr),*) -> $ret:ty) => {
        backend_call!(@method $name, $op, modcsi_backend_controller, $call, ($($arg: $ty => $pass),*), $ret);
    };
    (@method $name:ident, $op:literal, $iface:ident, $call:ident, ($($arg:ident: $ty:ty => $pass:expr),*), $ret:ty) => {
        #[doc = concat!("Calls the backend's `", $op, "`.")]
        pub async fn $name(&self, $($arg: $ty,)* timeout: Option<Duration>) -> Result<$ret, CallError> {
            let result = self
                .invoke($op, timeout, move |store, b| {
                    Box::pin(async move { b.$iface().$call(store, $($pass),*).await })
                })
                .await?;
            self.refused($op, result)
        }
    };
}

pub struct Backend {
    name: Arc<str>,
    info: types::BackendInfo,
    origin: Origin,
    engine: Engine,
    pre: BackendPre<CallState>,
    options: RuntimeOptions,
    slots: Semaphore,
    cache: Arc<SharedCache>,
    timings: TimingCounters,
}

impl Backend {
    /// Loads the component at `path` (from the artifact cache when possible), checks that it
    /// speaks this host's WIT version, links its imports and asks it to describe itself.
    pub async fn load(path: &Path, options: RuntimeOptions) -> Result<Self, LoadError> {
        let wasm = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.to_owned(),
            source,
        })?;
        check_header(&wasm).map_err(|reason| LoadError::NotAComponent {
            path: path.to_owned(),
            reason,
        })?;
        let engine = engine::build(options.max_concurrent_calls, options.memory_limit)
            .map_err(LoadError::Engine)?;
        let cache_err = |source| LoadError::Cache {
            path: path.to_owned(),
            source,
        };
        let cache = ArtifactCache::open(&options.cache_dir).map_err(cache_err)?;
        let (component, origin) = cache.load(&engine, &wasm).map_err(cache_err)?;
        check_wit_version(path, &engine, &component)?;

        let link_err = |source| LoadError::Link {
            path: path.to_owned(),
            source,
        };
        let mut linker = Linker::<CallState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(link_err)?;
        Bindings::add_to_linker::<_, HasSelf<CallState>>(&mut linker, |state| state)
            .map_err(link_err)?;
        let pre = BackendPre::new(linker.instantiate_pre(&component).map_err(link_err)?)
            .map_err(link_err)?;

        let mut backend = Backend {
            name: Arc::from(
                path.file_stem()
                    .map_or("backend".into(), |s| s.to_string_lossy()),
            ),
            info: placeholder_info(),
            origin,
            engine,
            pre,
            slots: Semaphore::new(options.max_concurrent_calls as usize),
            options,
            cache: Arc::default(),
            timings: TimingCounters::default(),
        };
        let info = backend
            .invoke("info", None, |store, b| {
                Box::pin(b.modcsi_backend_identity().call_info(store))
            })
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

    pub fn info(&self) -> &types::BackendInfo {
        &self.info
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

    backend_call!(probe, "probe", identity.call_probe() -> ());
    backend_call!(create_volume, "create-volume",
        controller.call_create_volume(request: types::CreateRequest => &request) -> types::Volume);
    backend_call!(delete_volume, "delete-volume",
        controller.call_delete_volume(volume_id: String => &volume_id,
            secrets: types::KeyValues => &secrets) -> ());
    backend_call!(validate_capabilities, "validate-capabilities",
        controller.call_validate_capabilities(volume_id: String => &volume_id,
            capabilities: Vec<types::Capability> => &capabilities,
            context: types::KeyValues => &context,
            parameters: types::KeyValues => &parameters) -> types::Validation);
    backend_call!(controller_publish, "controller-publish",
        controller.call_controller_publish(request: types::PublishRequest => &request)
            -> types::PublishResult);
    backend_call!(controller_unpublish, "controller-unpublish",
        controller.call_controller_unpublish(volume_id: String => &volume_id,
            node_id: String => &node_id, secrets: types::KeyValues => &secrets) -> ());
    backend_call!(expand_volume, "expand-volume",
        controller.call_expand_volume(volume_id: String => &volume_id,
            capacity: types::CapacityRange => capacity,
            secrets: types::KeyValues => &secrets) -> types::ExpandResult);
    backend_call!(get_capacity, "get-capacity",
        controller.call_get_capacity(parameters: types::KeyValues => &parameters) -> u64);
    backend_call!(node_identity, "node-identity", controller.call_node_identity() -> types::NodeInfo);
    backend_call!(list_volumes, "list-volumes",
        controller.call_list_volumes(max_entries: u32 => max_entries,
            starting_token: String => &starting_token) -> types::VolumePage);
    backend_call!(create_snapshot, "create-snapshot",
        controller.call_create_snapshot(source_volume_id: String => &source_volume_id,
            name: String => &name, parameters: types::KeyValues => &parameters,
            secrets: types::KeyValues => &secrets) -> types::Snapshot);
    backend_call!(delete_snapshot, "delete-snapshot",
        controller.call_delete_snapshot(snapshot_id: String => &snapshot_id,
            secrets: types::KeyValues => &secrets) -> ());
    backend_call!(list_snapshots, "list-snapshots",
        controller.call_list_snapshots(max_entries: u32 => max_entries,
            starting_token: String => &starting_token,
            source_volume_id: String => &source_volume_id,
            snapshot_id: String => &snapshot_id) -> types::SnapshotPage);

    fn refused<T>(
        &self,
        operation: &'static str,
        result: Result<T, types::Error>,
    ) -> Result<T, CallError> {
        result.map_err(|error| CallError::Refused {
            backend: self.name.clone(),
            operation,
            error,
        })
    }

    /// Runs `call` on a fresh instance within the call's deadline and memory cap.
    async fn invoke<R, F>(
        &self,
        operation: &'static str,
        timeout: Option<Duration>,
        call: F,
    ) -> Result<R, CallError>
    where
        F: for<'a> FnOnce(&'a mut Store<CallState>, &'a Bindings) -> CallFuture<'a, R>,
    {
        let budget = timeout.map_or(self.options.call_timeout, |t| {
            t.min(self.options.call_timeout)
        });
        let deadline = Instant::now() + budget;
        let timed_out = || CallError::Timeout {
            backend: self.name.clone(),
            operation,
            deadline: budget,
        };
        let _slot = tokio::time::timeout(budget, self.slots.acquire())
            .await
            .map_err(|_| CallError::Busy {
                backend: self.name.clone(),
                operation,
            })?
            .expect("the slot semaphore is never closed");

        let started = Instant::now();
        let stderr = MemoryOutputPipe::new(STDERR_CAPTURE);
        let mut store = Store::new(
            &self.engine,
            CallState {
                wasi: WasiCtxBuilder::new().stderr(stderr.clone()).build(),
                table: ResourceTable::new(),
                limits: CallLimits::new(self.options.memory_limit),
                backend: self.name.clone(),
                cache: self.cache.clone(),
            },
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

        let run = async {
            let instance = self.pre.instantiate_async(&mut store).await?;
            let instantiated = Instant::now();
            let result = call(&mut store, &instance).await?;
            Ok::<_, wasmtime::Error>((result, instantiated))
        };
        // Epochs stop a spinning guest; this outer bound also stops one parked in a host call.
        let outcome = tokio::time::timeout(budget + OUTER_GRACE, run).await;
        let (result, instantiated) = match outcome {
            Err(_elapsed) => return Err(timed_out()),
            Ok(Ok(done)) => done,
            Ok(Err(err)) => {
                let stderr = stderr_excerpt(&stderr);
                return Err(if err.downcast_ref::<DeadlineExceeded>().is_some() {
                    timed_out()
                } else if store.data().limits.memory_refused {
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
                        trap: format!("{err:#}"),
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
            .fetch_add(nanos(instantiated - started), Ordering::Relaxed);
        self.timings
            .call_ns
            .fetch_add(nanos(finished - instantiated), Ordering::Relaxed);
        Ok(result)
    }
}

/// A backend's error value as a message: its kind, then its own words.
fn describe(error: &types::Error) -> String {
    use types::Error as E;
    let (kind, message) = match error {
        E::InvalidArgument(m) => ("invalid argument", m),
        E::NotFound(m) => ("not found", m),
        E::AlreadyExists(m) => ("already exists", m),
        E::FailedPrecondition(m) => ("failed precondition", m),
        E::ResourceExhausted(m) => ("resource exhausted", m),
        E::OutOfRange(m) => ("out of range", m),
        E::Unavailable(m) => ("unavailable", m),
        E::Aborted(m) => ("aborted", m),
        E::Internal(m) => ("internal error", m),
        E::Unimplemented(m) => ("unimplemented", m),
    };
    format!("{kind}: {message}")
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

fn check_wit_version(
    path: &Path,
    engine: &Engine,
    component: &wasmtime::component::Component,
) -> Result<(), LoadError> {
    let exported = component.component_type();
    let found = exported
        .exports(engine)
        .find_map(|(name, _)| {
            name.strip_prefix("modcsi:backend/identity@")
                .map(str::to_owned)
        })
        .ok_or_else(|| LoadError::NotABackend {
            path: path.to_owned(),
        })?;
    if found != WIT_VERSION {
        return Err(LoadError::Version {
            path: path.to_owned(),
            found,
            accepted: WIT_VERSION,
        });
    }
    Ok(())
}

/// Stands in until the backend's own `info` answers during `load`.
fn placeholder_info() -> types::BackendInfo {
    types::BackendInfo {
        name: String::new(),
        version: String::new(),
        capabilities: types::ControllerCapabilities::empty(),
        access_modes: vec![],
        volume_modes: types::VolumeModes::empty(),
        topology: false,
        parameters: vec![],
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
            },
        )
        .await
    }

    #[tokio::test]
    async fn refuses_a_component_of_another_wit_version_naming_both() {
        let err = load_wat(
            r#"(component (instance $i) (export "modcsi:backend/identity@0.2.0" (instance $i)))"#,
        )
        .await
        .err()
        .expect("refused");
        assert!(matches!(err, LoadError::Version { .. }), "{err}");
        let message = err.to_string();
        assert!(
            message.contains("modcsi:backend@0.2.0") && message.contains("modcsi:backend@0.1.0"),
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
