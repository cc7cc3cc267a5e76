//! The 0.2 imports, linked to the shared capabilities.
//!
//! `log`, `cache` and `store` take strings and byte lists from the guest. They are registered
//! by hand on the lifted-lazily `WasmStr`/`WasmList` types, so their sizes are checked while the
//! bytes are still in guest memory: a backend cannot make the host copy more than the limits
//! (a 100 MiB "log line" costs the host nothing). `config` and `host` take nothing large and use
//! the generated bindings.

use std::time::{Duration, Instant};

use wasmtime::StoreContextMut;
use wasmtime::component::{HasSelf, Linker, WasmList, WasmStr};

use super::super::call_state::{CallState, LogLevel};
use super::super::v0_2::{config, host_info as host, node, ssh, store, types};
use super::{CACHE_MAX_KEY, CACHE_MAX_VALUE};
use crate::state::{self, StoreError};

/// Longest log message or field the host copies out of the guest; longer ones are cut there.
const LOG_MAX_COPY: usize = 4096;
const LOG_MAX_FIELDS: usize = 64;

impl types::Host for CallState {}

impl config::Host for CallState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.config.get(&key).map(str::to_owned))
    }

    fn keys(&mut self) -> wasmtime::Result<Vec<String>> {
        Ok(self.config.keys().map(str::to_owned).collect())
    }
}

impl node::Host for CallState {
    fn addresses(&mut self) -> wasmtime::Result<Vec<String>> {
        Ok(self.node_addresses.to_vec())
    }
}

impl host::Host for CallState {
    fn version(&mut self) -> wasmtime::Result<String> {
        Ok(env!("CARGO_PKG_VERSION").to_owned())
    }

    fn time_left_ms(&mut self) -> wasmtime::Result<u64> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        Ok(u64::try_from(left.as_millis()).unwrap_or(u64::MAX))
    }
}

/// At most `max` bytes of a guest string, cut on a character boundary, copied.
fn bounded(
    store: &StoreContextMut<'_, CallState>,
    s: &WasmStr,
    max: usize,
) -> wasmtime::Result<String> {
    let text = s.to_str(store)?;
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Ok(text[..end].to_owned())
}

/// A guest string of at most `max` bytes, or `None`, without copying a longer one.
fn within(
    store: &StoreContextMut<'_, CallState>,
    s: &WasmStr,
    max: usize,
) -> wasmtime::Result<Option<String>> {
    let text = s.to_str(store)?;
    Ok((text.len() <= max).then(|| text.into_owned()))
}

fn to_wit(error: StoreError) -> store::StoreError {
    match error {
        StoreError::Conflict { current } => store::StoreError::Conflict(current),
        StoreError::TooLarge(m) => store::StoreError::TooLarge(m),
        StoreError::Unavailable(m) => store::StoreError::Unavailable(m),
    }
}

type StoreResult<T> = wasmtime::Result<(Result<T, store::StoreError>,)>;

/// Runs a store operation off the async workers (a commit waits for the disk), holding no
/// borrow of the call's state.
async fn on_store<T: Send + 'static>(
    store: Option<std::sync::Arc<dyn state::StateStore>>,
    namespace: std::sync::Arc<str>,
    op: impl FnOnce(&dyn state::StateStore, &str) -> Result<T, StoreError> + Send + 'static,
) -> StoreResult<T> {
    let Some(store) = store else {
        return Ok((Err(store::StoreError::Unavailable(
            "this host runs without a state store".into(),
        )),));
    };
    let result = tokio::task::spawn_blocking(move || op(&*store, &namespace))
        .await
        .unwrap_or_else(|e| Err(StoreError::Unavailable(format!("store task failed: {e}"))));
    Ok((result.map_err(to_wit),))
}

fn too_large(what: &str, len: usize, max: usize) -> store::StoreError {
    store::StoreError::TooLarge(format!("{what} of {len} bytes (at most {max})"))
}

/// Links the 0.2 imports.
pub(crate) fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    types::add_to_linker::<_, HasSelf<CallState>>(linker, |s| s)?;
    config::add_to_linker::<_, HasSelf<CallState>>(linker, |s| s)?;
    host::add_to_linker::<_, HasSelf<CallState>>(linker, |s| s)?;
    node::add_to_linker::<_, HasSelf<CallState>>(linker, |s| s)?;
    // 0.2.2: outgoing HTTP, served by the `http` capability's hooks on the call state.
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;

    let mut log = linker.instance("modcsi:backend/log@0.2.3")?;
    log.func_wrap(
        "log",
        |mut store: StoreContextMut<'_, CallState>,
         (level, message, fields): (types::LogLevel, WasmStr, WasmList<(WasmStr, WasmStr)>)| {
            let message = bounded(&store, &message, LOG_MAX_COPY)?;
            // Handles into guest memory first, then bounded copies.
            let handles = fields
                .iter(&mut store)?
                .take(LOG_MAX_FIELDS)
                .collect::<wasmtime::Result<Vec<_>>>()?;
            let mut copied = Vec::with_capacity(handles.len());
            for (k, v) in &handles {
                copied.push((bounded(&store, k, LOG_MAX_COPY)?, bounded(&store, v, LOG_MAX_COPY)?));
            }
            let level = match level {
                types::LogLevel::Trace => LogLevel::Trace,
                types::LogLevel::Debug => LogLevel::Debug,
                types::LogLevel::Info => LogLevel::Info,
                types::LogLevel::Warn => LogLevel::Warn,
                types::LogLevel::Error => LogLevel::Error,
            };
            store.data_mut().emit_log(level, &message, &copied);
            Ok(())
        },
    )?;

    let mut cache = linker.instance("modcsi:backend/cache@0.2.3")?;
    cache.func_wrap(
        "get",
        |store: StoreContextMut<'_, CallState>, (key,): (WasmStr,)| {
            let value =
                within(&store, &key, CACHE_MAX_KEY)?.and_then(|k| store.data().cache.get(&k));
            Ok((value,))
        },
    )?;
    cache.func_wrap(
        "set",
        |store: StoreContextMut<'_, CallState>,
         (key, value, ttl_ms): (WasmStr, WasmList<u8>, u64)| {
            if value.len() <= CACHE_MAX_VALUE
                && let Some(key) = within(&store, &key, CACHE_MAX_KEY)?
            {
                let value = value.as_le_slice(&store).to_vec();
                store
                    .data()
                    .cache
                    .set(key, value, Duration::from_millis(ttl_ms));
            }
            Ok(())
        },
    )?;
    cache.func_wrap(
        "delete",
        |store: StoreContextMut<'_, CallState>, (key,): (WasmStr,)| {
            if let Some(key) = within(&store, &key, CACHE_MAX_KEY)? {
                store.data().cache.delete(&key);
            }
            Ok(())
        },
    )?;
    cache.func_wrap(
        "compare-and-swap",
        |store: StoreContextMut<'_, CallState>,
         (key, expected, value, ttl_ms): (WasmStr, Option<WasmList<u8>>, WasmList<u8>, u64)| {
            if value.len() > CACHE_MAX_VALUE {
                return Ok((false,));
            }
            let Some(key) = within(&store, &key, CACHE_MAX_KEY)? else {
                return Ok((false,));
            };
            let expected = expected.map(|e| e.as_le_slice(&store).to_vec());
            let value = value.as_le_slice(&store).to_vec();
            let swapped = store.data().cache.compare_and_swap(
                key,
                expected.as_deref(),
                value,
                Duration::from_millis(ttl_ms),
            );
            Ok((swapped,))
        },
    )?;

    // 0.2.1: commands on configured machines, bounded by the call's deadline.
    let mut remote = linker.instance("modcsi:backend/ssh@0.2.3")?;
    remote.func_wrap_async(
        "run",
        |store: StoreContextMut<'_, CallState>,
         (target, command, timeout_ms): (WasmStr, WasmStr, u32)| {
            let target = within(&store, &target, 64);
            let command = within(&store, &command, super::ssh::MAX_COMMAND);
            let state = store.data();
            let (config, deadline) = (state.config.clone(), state.deadline);
            Box::new(async move {
                let (Some(target), Some(command)) = (target?, command?) else {
                    return Ok((Err(ssh::SshError::TooLarge(format!(
                        "a target name over 64 bytes or a command over {} bytes",
                        super::ssh::MAX_COMMAND
                    ))),));
                };
                let left = deadline.saturating_duration_since(Instant::now());
                let timeout = Duration::from_millis(timeout_ms.into()).min(left);
                let result = config.ssh().run(&target, &command, timeout).await;
                Ok((result
                    .map(|o| ssh::Output {
                        exit_status: o.exit_status,
                        stdout: o.stdout,
                        stderr: o.stderr,
                    })
                    .map_err(|e| {
                        use super::ssh::SshError as E;
                        match e {
                            E::UnknownTarget(m) => ssh::SshError::UnknownTarget(m),
                            E::HostKey(m) => ssh::SshError::HostKey(m),
                            E::Denied(m) => ssh::SshError::Denied(m),
                            E::Unavailable(m) => ssh::SshError::Unavailable(m),
                            E::Timeout(m) => ssh::SshError::Timeout(m),
                            E::TooLarge(m) => ssh::SshError::TooLarge(m),
                        }
                    }),))
            })
        },
    )?;

    let mut kv = linker.instance("modcsi:backend/store@0.2.3")?;
    kv.func_wrap_async(
        "get",
        |store: StoreContextMut<'_, CallState>, (key,): (WasmStr,)| {
            let key = within(&store, &key, state::MAX_KEY);
            let (handle, namespace) = (store.data().store.clone(), store.data().namespace.clone());
            Box::new(async move {
                let Some(key) = key? else {
                    return Ok((Err(too_large("key", state::MAX_KEY + 1, state::MAX_KEY)),));
                };
                on_store(handle, namespace, move |s, ns| s.get(ns, &key))
                    .await
                    .map(|(r,)| {
                        (r.map(|found| {
                            found.map(|e| store::Entry {
                                value: e.value,
                                version: e.version,
                            })
                        }),)
                    })
            })
        },
    )?;
    kv.func_wrap_async(
        "put",
        |store: StoreContextMut<'_, CallState>,
         (key, value, expected): (WasmStr, WasmList<u8>, Option<u64>)| {
            let checked = (|| -> wasmtime::Result<Result<(String, Vec<u8>), store::StoreError>> {
                if value.len() > state::MAX_VALUE {
                    return Ok(Err(too_large("value", value.len(), state::MAX_VALUE)));
                }
                let Some(key) = within(&store, &key, state::MAX_KEY)? else {
                    return Ok(Err(too_large("key", state::MAX_KEY + 1, state::MAX_KEY)));
                };
                Ok(Ok((key, value.as_le_slice(&store).to_vec())))
            })();
            let (handle, namespace) = (store.data().store.clone(), store.data().namespace.clone());
            Box::new(async move {
                let (key, value) = match checked? {
                    Ok(kv) => kv,
                    Err(e) => return Ok((Err(e),)),
                };
                on_store(handle, namespace, move |s, ns| {
                    s.put(ns, &key, &value, expected)
                })
                .await
            })
        },
    )?;
    kv.func_wrap_async(
        "delete",
        |store: StoreContextMut<'_, CallState>, (key, expected): (WasmStr, Option<u64>)| {
            let key = within(&store, &key, state::MAX_KEY);
            let (handle, namespace) = (store.data().store.clone(), store.data().namespace.clone());
            Box::new(async move {
                let Some(key) = key? else {
                    return Ok((Err(too_large("key", state::MAX_KEY + 1, state::MAX_KEY)),));
                };
                on_store(handle, namespace, move |s, ns| s.delete(ns, &key, expected)).await
            })
        },
    )?;
    kv.func_wrap_async(
        "list-keys",
        |store: StoreContextMut<'_, CallState>,
         (prefix, start_after, limit): (WasmStr, WasmStr, u32)| {
            let prefix = within(&store, &prefix, state::MAX_KEY);
            let start_after = within(&store, &start_after, state::MAX_KEY);
            let (handle, namespace) = (store.data().store.clone(), store.data().namespace.clone());
            Box::new(async move {
                let (Some(prefix), Some(start_after)) = (prefix?, start_after?) else {
                    return Ok((Err(too_large("key", state::MAX_KEY + 1, state::MAX_KEY)),));
                };
                let limit = (limit as usize).min(1000);
                on_store(handle, namespace, move |s, ns| {
                    s.list(ns, &prefix, &start_after, limit)
                })
                .await
            })
        },
    )?;
    Ok(())
}
