//! The store data of one backend call: its WASI context, its limits and what its capabilities
//! act on (the shared cache, the configuration, the store namespace, the deadline, the
//! scrubber and log budget). Every contract version's imports are implemented on it.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::capabilities::http::CallHttp;
use super::capabilities::{BackendConfig, LogBudget, Scrubber, SharedCache};
use super::limits::CallLimits;
use crate::state::StateStore;

/// A backend log line's level, whatever contract version sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// The store data of one call.
pub(crate) struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    http_hooks: CallHttp,
    pub(crate) limits: CallLimits,
    pub(crate) backend: Arc<str>,
    pub(crate) cache: Arc<SharedCache>,
    pub(crate) config: Arc<BackendConfig>,
    pub(crate) store: Option<Arc<dyn StateStore>>,
    /// The backend's namespace in the state store.
    pub(crate) namespace: Arc<str>,
    pub(crate) deadline: Instant,
    /// The node's addresses (`node` import).
    pub(crate) node_addresses: Arc<[String]>,
    pub(crate) scrubber: Scrubber,
    pub(crate) log_budget: LogBudget,
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for CallState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_hooks,
        }
    }
}

impl CallState {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        wasi: WasiCtx,
        limits: CallLimits,
        backend: Arc<str>,
        cache: Arc<SharedCache>,
        config: Arc<BackendConfig>,
        store: Option<Arc<dyn StateStore>>,
        deadline: Instant,
        node_addresses: Arc<[String]>,
        scrubber: Scrubber,
    ) -> Self {
        Self {
            wasi,
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            http_hooks: CallHttp {
                config: config.clone(),
                backend: backend.clone(),
                deadline,
            },
            limits,
            namespace: Arc::from(format!("backend/{backend}")),
            backend,
            cache,
            config,
            store,
            deadline,
            node_addresses,
            scrubber,
            log_budget: LogBudget::default(),
        }
    }
}

impl CallState {
    /// Emits one backend log line: size-capped per call, control characters escaped, this
    /// call's secrets scrubbed, secret-looking fields redacted.
    pub(crate) fn emit_log(&mut self, level: LogLevel, message: &str, fields: &[(String, String)]) {
        let enabled = match level {
            LogLevel::Trace => tracing::enabled!(tracing::Level::TRACE),
            LogLevel::Debug => tracing::enabled!(tracing::Level::DEBUG),
            LogLevel::Info => tracing::enabled!(tracing::Level::INFO),
            LogLevel::Warn => tracing::enabled!(tracing::Level::WARN),
            LogLevel::Error => tracing::enabled!(tracing::Level::ERROR),
        };
        if !enabled {
            return;
        }
        let Some((message, fields)) = self.log_budget.admit(message, fields, &self.scrubber) else {
            return;
        };
        let backend = &*self.backend;
        match level {
            LogLevel::Trace => tracing::trace!(backend, fields = %fields, "{message}"),
            LogLevel::Debug => tracing::debug!(backend, fields = %fields, "{message}"),
            LogLevel::Info => tracing::info!(backend, fields = %fields, "{message}"),
            LogLevel::Warn => tracing::warn!(backend, fields = %fields, "{message}"),
            LogLevel::Error => tracing::error!(backend, fields = %fields, "{message}"),
        }
    }
}
