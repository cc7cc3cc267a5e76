//! Durable host state: the backends' `store` namespaces and the host's record of the volumes it
//! created. One trait, [`StateStore`], so a Kubernetes-backed implementation can stand beside the
//! embedded one ([`embedded::EmbeddedStore`], redb on local disk under `--state-dir`).
//!
//! Every write is a compare-and-swap on the entry's version. Versions come from one counter per
//! store, so a key deleted and written again never reuses a version an old reader still holds.

pub mod embedded;
mod lock;
mod memory;

pub use embedded::EmbeddedStore;
pub use lock::{LockError, StateDirLock};
pub use memory::MemoryStore;

/// Longest key, in bytes.
pub const MAX_KEY: usize = 512;
/// Largest value, in bytes.
pub const MAX_VALUE: usize = 256 * 1024;

/// When a write must be on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Before the write returns.
    Now,
    /// Within [`FLUSH_INTERVAL`]: a crash may lose the last moments of such writes (never a
    /// `Now` write, and never leaving a torn state). For writes whose loss is benign.
    Soon,
}

/// How soon a [`Durability::Soon`] write reaches the disk.
pub const FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub value: Vec<u8>,
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("version conflict: the entry is now at {}", current.map_or("absent".to_owned(), |v| format!("version {v}")))]
    Conflict { current: Option<u64> },
    #[error("{0}")]
    TooLarge(String),
    #[error("state store unavailable: {0}")]
    Unavailable(String),
}

/// A durable key-value store split into namespaces, with compare-and-swap writes.
pub trait StateStore: Send + Sync {
    fn get(&self, namespace: &str, key: &str) -> Result<Option<Entry>, StoreError>;
    /// Writes `value` if the entry's version is `expected` (`None`: the key must be absent);
    /// returns the new version. Durable before it returns.
    fn put(
        &self,
        namespace: &str,
        key: &str,
        value: &[u8],
        expected: Option<u64>,
    ) -> Result<u64, StoreError> {
        self.put_with(namespace, key, value, expected, Durability::Now)
    }

    /// [`StateStore::put`] with a choice of when the write must be on disk.
    fn put_with(
        &self,
        namespace: &str,
        key: &str,
        value: &[u8],
        expected: Option<u64>,
        durability: Durability,
    ) -> Result<u64, StoreError>;
    /// Removes the entry: unconditionally with `None`, otherwise only at version `expected`.
    /// Durable before it returns.
    fn delete(&self, namespace: &str, key: &str, expected: Option<u64>) -> Result<(), StoreError> {
        self.delete_with(namespace, key, expected, Durability::Now)
    }

    /// [`StateStore::delete`] with a choice of when the removal must be on disk.
    fn delete_with(
        &self,
        namespace: &str,
        key: &str,
        expected: Option<u64>,
        durability: Durability,
    ) -> Result<(), StoreError>;
    /// Keys of `namespace` starting with `prefix`, in order, after `start_after`, at most `limit`.
    fn list(
        &self,
        namespace: &str,
        prefix: &str,
        start_after: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;

    /// Every key of `namespace`, in order ([`StateStore::list`] page by page).
    fn keys(&self, namespace: &str) -> Result<Vec<String>, StoreError> {
        let mut all: Vec<String> = vec![];
        loop {
            let after = all.last().cloned().unwrap_or_default();
            let page = self.list(namespace, "", &after, 500)?;
            if page.is_empty() {
                return Ok(all);
            }
            all.extend(page);
        }
    }

    /// The entries of the keys [`StateStore::list`] gives, with their keys: a store that reads
    /// keys and values in one request overrides it.
    fn entries(
        &self,
        namespace: &str,
        prefix: &str,
        start_after: &str,
        limit: usize,
    ) -> Result<Vec<(String, Entry)>, StoreError> {
        let mut out = vec![];
        for key in self.list(namespace, prefix, start_after, limit)? {
            if let Some(entry) = self.get(namespace, &key)? {
                out.push((key, entry));
            }
        }
        Ok(out)
    }

    /// Writes `value` whatever is there (last writer wins); returns the new version.
    fn put_any(&self, namespace: &str, key: &str, value: &[u8]) -> Result<u64, StoreError> {
        let mut expected = self.get(namespace, key)?.map(|e| e.version);
        loop {
            match self.put(namespace, key, value, expected) {
                Err(StoreError::Conflict { current }) => expected = current,
                other => return other,
            }
        }
    }
}

/// Refuses keys and values over the limits before anything is written.
pub fn check_sizes(key: &str, value: Option<&[u8]>) -> Result<(), StoreError> {
    if key.is_empty() || key.len() > MAX_KEY {
        return Err(StoreError::TooLarge(format!(
            "key of {} bytes (1 to {MAX_KEY} allowed)",
            key.len()
        )));
    }
    if let Some(value) = value.filter(|v| v.len() > MAX_VALUE) {
        return Err(StoreError::TooLarge(format!(
            "value of {} bytes (at most {MAX_VALUE})",
            value.len()
        )));
    }
    Ok(())
}
