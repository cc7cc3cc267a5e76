//! The capabilities the host grants a backend (the world's imports): structured logging and a
//! process-wide cache that outlives the per-call instances.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::backend::CallState;
use super::bindings::modcsi::backend::{cache, log, types};

/// Bounds on the shared cache, so a backend cannot grow the host without limit.
const CACHE_MAX_ENTRIES: usize = 1024;
const CACHE_MAX_VALUE: usize = 64 * 1024;
const CACHE_MAX_KEY: usize = 256;

/// A backend's cache, shared by all its instances.
#[derive(Default)]
pub(crate) struct SharedCache {
    entries: Mutex<HashMap<String, (Vec<u8>, Instant)>>,
}

impl SharedCache {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(key) {
            Some((value, expires)) if *expires > Instant::now() => Some(value.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Stores a value; oversized entries are dropped, and a full cache evicts expired entries
    /// first, then the entry closest to expiry.
    fn set(&self, key: String, value: Vec<u8>, ttl: Duration) {
        if key.len() > CACHE_MAX_KEY || value.len() > CACHE_MAX_VALUE {
            return;
        }
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CACHE_MAX_ENTRIES && !entries.contains_key(&key) {
            entries.retain(|_, (_, expires)| *expires > now);
            if entries.len() >= CACHE_MAX_ENTRIES {
                let soonest = entries
                    .iter()
                    .min_by_key(|(_, (_, e))| *e)
                    .map(|(k, _)| k.clone());
                if let Some(k) = soonest {
                    entries.remove(&k);
                }
            }
        }
        entries.insert(key, (value, now + ttl));
    }
}

/// Keys whose values never reach a log.
fn is_sensitive(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["secret", "token", "password", "passwd", "credential", "key"]
        .iter()
        .any(|s| key.contains(s))
}

fn render_fields(fields: &[(String, String)]) -> String {
    fields
        .iter()
        .map(|(k, v)| {
            if is_sensitive(k) {
                format!("{k}=<redacted>")
            } else {
                format!("{k}={v:?}")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl types::Host for CallState {}

impl log::Host for CallState {
    fn log(
        &mut self,
        level: types::LogLevel,
        message: String,
        fields: types::KeyValues,
    ) -> wasmtime::Result<()> {
        let backend = &*self.backend;
        // Field values are rendered only when the level is enabled.
        match level {
            types::LogLevel::Trace => {
                tracing::trace!(backend, fields = %render_fields(&fields), "{message}")
            }
            types::LogLevel::Debug => {
                tracing::debug!(backend, fields = %render_fields(&fields), "{message}")
            }
            types::LogLevel::Info => {
                tracing::info!(backend, fields = %render_fields(&fields), "{message}")
            }
            types::LogLevel::Warn => {
                tracing::warn!(backend, fields = %render_fields(&fields), "{message}")
            }
            types::LogLevel::Error => {
                tracing::error!(backend, fields = %render_fields(&fields), "{message}")
            }
        }
        Ok(())
    }
}

impl cache::Host for CallState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.cache.get(&key))
    }

    fn set(&mut self, key: String, value: Vec<u8>, ttl_ms: u64) -> wasmtime::Result<()> {
        self.cache.set(key, value, Duration::from_millis(ttl_ms));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_entries_expire() {
        let cache = SharedCache::default();
        cache.set("a".into(), b"1".to_vec(), Duration::from_secs(60));
        cache.set("b".into(), b"2".to_vec(), Duration::ZERO);
        assert_eq!(cache.get("a"), Some(b"1".to_vec()));
        assert_eq!(cache.get("b"), None);
    }

    #[test]
    fn cache_is_bounded() {
        let cache = SharedCache::default();
        for i in 0..CACHE_MAX_ENTRIES + 10 {
            cache.set(format!("k{i}"), vec![0], Duration::from_secs(60 + i as u64));
        }
        assert_eq!(cache.entries.lock().unwrap().len(), CACHE_MAX_ENTRIES);
        assert_eq!(
            cache.get("k0"),
            None,
            "the entry closest to expiry is evicted"
        );
        cache.set(
            "big".into(),
            vec![0; CACHE_MAX_VALUE + 1],
            Duration::from_secs(60),
        );
        assert_eq!(cache.get("big"), None);
    }

    #[test]
    fn secrets_are_redacted_in_log_fields() {
        let rendered = render_fields(&[
            ("volume".into(), "v1".into()),
            ("api-token".into(), "hunter2".into()),
            ("Password".into(), "hunter2".into()),
        ]);
        assert!(rendered.contains("volume=\"v1\""));
        assert!(!rendered.contains("hunter2"), "{rendered}");
    }
}
