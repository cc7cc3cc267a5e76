//! The capabilities the host grants a backend (the world's imports), shared by every WIT
//! version: logging with output hygiene, a process-wide cache, the backend's configuration, the
//! durable store and facts about the host. `v0_2.rs` links them to the 0.2 imports; the frozen
//! 0.1 imports (log, cache) reach the same code from `runtime/v0_1.rs`.

pub mod config;
pub mod http;
mod hygiene;
pub mod ssh;
mod v0_2;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use config::{BackendConfig, ConfigError};
pub(crate) use hygiene::{LogBudget, Scrubber};
pub(crate) use v0_2::add_to_linker as add_v0_2_to_linker;

/// Bounds on the shared cache, so a backend cannot grow the host without limit.
pub(crate) const CACHE_MAX_ENTRIES: usize = 1024;
pub(crate) const CACHE_MAX_VALUE: usize = 64 * 1024;
pub(crate) const CACHE_MAX_KEY: usize = 256;

/// A backend's cache, shared by all its instances.
#[derive(Default)]
pub(crate) struct SharedCache {
    entries: Mutex<HashMap<String, (Vec<u8>, Instant)>>,
}

impl SharedCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Vec<u8>, Instant)>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn get(&self, key: &str) -> Option<Vec<u8>> {
        let mut entries = self.lock();
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
    pub(crate) fn set(&self, key: String, value: Vec<u8>, ttl: Duration) {
        let mut entries = self.lock();
        Self::insert(&mut entries, key, value, ttl);
    }

    pub(crate) fn delete(&self, key: &str) {
        self.lock().remove(key);
    }

    /// Sets `value` only if the live value equals `expected` (`None`: absent or expired).
    pub(crate) fn compare_and_swap(
        &self,
        key: String,
        expected: Option<&[u8]>,
        value: Vec<u8>,
        ttl: Duration,
    ) -> bool {
        let mut entries = self.lock();
        let now = Instant::now();
        let current = entries
            .get(&key)
            .filter(|(_, expires)| *expires > now)
            .map(|(v, _)| v.as_slice());
        if current != expected {
            return false;
        }
        Self::insert(&mut entries, key, value, ttl)
    }

    fn insert(
        entries: &mut HashMap<String, (Vec<u8>, Instant)>,
        key: String,
        value: Vec<u8>,
        ttl: Duration,
    ) -> bool {
        if key.len() > CACHE_MAX_KEY || value.len() > CACHE_MAX_VALUE {
            return false;
        }
        let now = Instant::now();
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
        true
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
        cache.delete("a");
        assert_eq!(cache.get("a"), None);
    }

    #[test]
    fn cache_compare_and_swap() {
        let cache = SharedCache::default();
        let ttl = Duration::from_secs(60);
        assert!(cache.compare_and_swap("k".into(), None, b"1".to_vec(), ttl));
        assert!(!cache.compare_and_swap("k".into(), None, b"2".to_vec(), ttl));
        assert!(!cache.compare_and_swap("k".into(), Some(b"x"), b"2".to_vec(), ttl));
        assert!(cache.compare_and_swap("k".into(), Some(b"1"), b"2".to_vec(), ttl));
        assert_eq!(cache.get("k"), Some(b"2".to_vec()));
    }

    #[test]
    fn cache_is_bounded() {
        let cache = SharedCache::default();
        for i in 0..CACHE_MAX_ENTRIES + 10 {
            cache.set(format!("k{i}"), vec![0], Duration::from_secs(60 + i as u64));
        }
        assert_eq!(cache.lock().len(), CACHE_MAX_ENTRIES);
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
}
