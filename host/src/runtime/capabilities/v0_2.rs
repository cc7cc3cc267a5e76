//! The 0.2 imports, linked to the shared capabilities.

use std::time::{Duration, Instant};

use super::super::backend::CallState;
use super::super::v0_2::{cache, config, host, log, store, types};
use super::fits_cache;
use crate::state::{self, StoreError};

impl types::Host for CallState {}

impl log::Host for CallState {
    fn log(
        &mut self,
        level: types::LogLevel,
        message: String,
        fields: types::KeyValues,
    ) -> wasmtime::Result<()> {
        self.emit_log(level, &message, &fields);
        Ok(())
    }
}

impl cache::Host for CallState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.cache.get(&key))
    }

    fn set(&mut self, key: String, value: Vec<u8>, ttl_ms: u64) -> wasmtime::Result<()> {
        self.cache_set(key, value, ttl_ms);
        Ok(())
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        self.cache.delete(&key);
        Ok(())
    }

    fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
        ttl_ms: u64,
    ) -> wasmtime::Result<bool> {
        Ok(fits_cache(&key, &value)
            && self.cache.compare_and_swap(
                key,
                expected.as_deref(),
                value,
                Duration::from_millis(ttl_ms),
            ))
    }
}

impl config::Host for CallState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.config.get(&key).map(str::to_owned))
    }

    fn keys(&mut self) -> wasmtime::Result<Vec<String>> {
        Ok(self.config.keys().map(str::to_owned).collect())
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

fn to_wit(error: StoreError) -> store::StoreError {
    match error {
        StoreError::Conflict { current } => store::StoreError::Conflict(current),
        StoreError::TooLarge(m) => store::StoreError::TooLarge(m),
        StoreError::Unavailable(m) => store::StoreError::Unavailable(m),
    }
}

type StoreResult<T> = wasmtime::Result<Result<T, store::StoreError>>;

impl CallState {
    /// Runs a store operation off the async workers (a commit waits for the disk). Returns a
    /// future that holds no borrow of the call state.
    fn on_store<T: Send + 'static>(
        &self,
        op: impl FnOnce(&dyn state::StateStore, &str) -> Result<T, StoreError> + Send + 'static,
    ) -> impl std::future::Future<Output = StoreResult<T>> + Send + 'static {
        let store = self.store.clone();
        let namespace = self.namespace.clone();
        on_store(store, namespace, op)
    }
}

async fn on_store<T: Send + 'static>(
    store: Option<std::sync::Arc<dyn state::StateStore>>,
    namespace: std::sync::Arc<str>,
    op: impl FnOnce(&dyn state::StateStore, &str) -> Result<T, StoreError> + Send + 'static,
) -> StoreResult<T> {
    {
        let Some(store) = store else {
            return Ok(Err(store::StoreError::Unavailable(
                "this host runs without a state store".into(),
            )));
        };
        let result = tokio::task::spawn_blocking(move || op(&*store, &namespace))
            .await
            .unwrap_or_else(|e| Err(StoreError::Unavailable(format!("store task failed: {e}"))));
        Ok(result.map_err(to_wit))
    }
}

impl store::Host for CallState {
    async fn get(&mut self, key: String) -> StoreResult<Option<store::Entry>> {
        if let Err(e) = state::check_sizes(&key, None) {
            return Ok(Err(to_wit(e)));
        }
        self.on_store(move |s, ns| s.get(ns, &key)).await.map(|r| {
            r.map(|found| {
                found.map(|e| store::Entry {
                    value: e.value,
                    version: e.version,
                })
            })
        })
    }

    async fn put(
        &mut self,
        key: String,
        value: Vec<u8>,
        expected: Option<u64>,
    ) -> StoreResult<u64> {
        if let Err(e) = state::check_sizes(&key, Some(&value)) {
            return Ok(Err(to_wit(e)));
        }
        self.on_store(move |s, ns| s.put(ns, &key, &value, expected))
            .await
    }

    async fn delete(&mut self, key: String, expected: Option<u64>) -> StoreResult<()> {
        if let Err(e) = state::check_sizes(&key, None) {
            return Ok(Err(to_wit(e)));
        }
        self.on_store(move |s, ns| s.delete(ns, &key, expected))
            .await
    }

    async fn list_keys(
        &mut self,
        prefix: String,
        start_after: String,
        limit: u32,
    ) -> StoreResult<Vec<String>> {
        let limit = (limit as usize).min(1000);
        self.on_store(move |s, ns| s.list(ns, &prefix, &start_after, limit))
            .await
    }
}
