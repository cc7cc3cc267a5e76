//! The embedded state store: one redb database file. redb commits are atomic and durable when
//! `commit` returns (copy-on-write pages and a checksummed two-slot header), so a process killed
//! at any point leaves either the old or the new state, never a torn one.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{Durability, Entry, FLUSH_INTERVAL, StateStore, StoreError, check_sizes};

/// `namespace \0 key` → (version, value).
const ENTRIES: TableDefinition<&str, (u64, &[u8])> = TableDefinition::new("entries");
/// The version counter.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const LAST_VERSION: &str = "last-version";

pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    path: PathBuf,
    dirty: Arc<Dirty>,
}

/// Whether non-durable commits are waiting for the flusher, and how it is woken (it sleeps
/// while nothing waits). Shared apart from the store, so a sleeping flusher keeps no store open.
#[derive(Default)]
struct Dirty {
    set: AtomicBool,
    lock: std::sync::Mutex<()>,
    wake: std::sync::Condvar,
}

impl Inner {
    /// Notes a non-durable commit for the flusher, waking it if it was idle.
    fn mark_dirty(&self) {
        if !self.dirty.set.swap(true, Ordering::AcqRel) {
            let _held = self.dirty.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.dirty.wake.notify_one();
        }
    }

    /// Makes every earlier non-durable commit durable with one empty durable commit.
    fn flush(&self) -> Result<(), StoreError> {
        if self.dirty.set.swap(false, Ordering::AcqRel) {
            let fail = unavailable(&self.path);
            let txn = self.db.begin_write().map_err(|e| fail(&e))?;
            txn.commit().map_err(|e| fail(&e))?;
        }
        Ok(())
    }
}

/// How long an idle flusher sleeps before looking whether its store is gone.
const IDLE_CHECK: std::time::Duration = std::time::Duration::from_secs(60);

/// Flushes `Soon` writes within [`FLUSH_INTERVAL`] of the first one while the store lives, and
/// sleeps while there is nothing to flush.
fn start_flusher(inner: Weak<Inner>, dirty: Arc<Dirty>) {
    std::thread::Builder::new()
        .name("modcsi-store-flush".into())
        .spawn(move || {
            loop {
                {
                    let held = dirty.lock.lock().unwrap_or_else(|e| e.into_inner());
                    if !dirty.set.load(Ordering::Acquire) {
                        drop(dirty.wake.wait_timeout(held, IDLE_CHECK));
                    }
                }
                if inner.strong_count() == 0 {
                    return;
                }
                // Gathers the writes of the next moment into one durable commit.
                std::thread::sleep(FLUSH_INTERVAL);
                let Some(inner) = inner.upgrade() else { return };
                if let Err(e) = inner.flush() {
                    inner.mark_dirty();
                    tracing::warn!("state store flush failed, will retry: {e}");
                }
            }
        })
        .expect("spawning the state store flusher");
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        let _ = self.inner.flush();
    }
}

fn unavailable(path: &Path) -> impl Fn(&dyn std::fmt::Display) -> StoreError + '_ {
    move |e| StoreError::Unavailable(format!("{}: {e}", path.display()))
}

fn full_key(namespace: &str, key: &str) -> String {
    format!("{namespace}\0{key}")
}

impl EmbeddedStore {
    /// Opens (creating it if needed) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let fail = unavailable(path);
        let db = Database::create(path).map_err(|e| fail(&e))?;
        let txn = db.begin_write().map_err(|e| fail(&e))?;
        txn.open_table(ENTRIES).map_err(|e| fail(&e))?;
        txn.open_table(META).map_err(|e| fail(&e))?;
        txn.commit().map_err(|e| fail(&e))?;
        let inner = Arc::new(Inner {
            db,
            path: path.to_owned(),
            dirty: Arc::default(),
        });
        start_flusher(Arc::downgrade(&inner), inner.dirty.clone());
        Ok(Self { inner })
    }

    /// Runs `f` in one write transaction; its changes are committed only when it succeeds.
    fn write<T>(
        &self,
        durability: Durability,
        f: impl FnOnce(
            &mut redb::Table<&str, (u64, &[u8])>,
            &mut redb::Table<&str, u64>,
        ) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let fail = unavailable(&self.inner.path);
        let mut txn = self.inner.db.begin_write().map_err(|e| fail(&e))?;
        if durability == Durability::Soon {
            txn.set_durability(redb::Durability::None)
                .map_err(|e| fail(&e))?;
        }
        let result = {
            let mut entries = txn.open_table(ENTRIES).map_err(|e| fail(&e))?;
            let mut meta = txn.open_table(META).map_err(|e| fail(&e))?;
            f(&mut entries, &mut meta)
        };
        match result {
            Ok(value) => {
                txn.commit().map_err(|e| fail(&e))?;
                if durability == Durability::Soon {
                    self.inner.mark_dirty();
                }
                Ok(value)
            }
            Err(err) => {
                txn.abort().map_err(|e| fail(&e))?;
                Err(err)
            }
        }
    }
}

impl StateStore for EmbeddedStore {
    fn get(&self, namespace: &str, key: &str) -> Result<Option<Entry>, StoreError> {
        let fail = unavailable(&self.inner.path);
        let txn = self.inner.db.begin_read().map_err(|e| fail(&e))?;
        let table = txn.open_table(ENTRIES).map_err(|e| fail(&e))?;
        let found = table
            .get(full_key(namespace, key).as_str())
            .map_err(|e| fail(&e))?;
        Ok(found.map(|guard| {
            let (version, value) = guard.value();
            Entry {
                value: value.to_vec(),
                version,
            }
        }))
    }

    fn put_with(
        &self,
        namespace: &str,
        key: &str,
        value: &[u8],
        expected: Option<u64>,
        durability: Durability,
    ) -> Result<u64, StoreError> {
        check_sizes(key, Some(value))?;
        let fail = unavailable(&self.inner.path);
        let full = full_key(namespace, key);
        self.write(durability, |entries, meta| {
            let current = entries
                .get(full.as_str())
                .map_err(|e| fail(&e))?
                .map(|g| g.value().0);
            if current != expected {
                return Err(StoreError::Conflict { current });
            }
            let last = meta
                .get(LAST_VERSION)
                .map_err(|e| fail(&e))?
                .map_or(0, |g| g.value());
            let version = last + 1;
            meta.insert(LAST_VERSION, version).map_err(|e| fail(&e))?;
            entries
                .insert(full.as_str(), (version, value))
                .map_err(|e| fail(&e))?;
            Ok(version)
        })
    }

    fn delete_with(
        &self,
        namespace: &str,
        key: &str,
        expected: Option<u64>,
        durability: Durability,
    ) -> Result<(), StoreError> {
        check_sizes(key, None)?;
        let fail = unavailable(&self.inner.path);
        let full = full_key(namespace, key);
        self.write(durability, |entries, _| {
            let current = entries
                .get(full.as_str())
                .map_err(|e| fail(&e))?
                .map(|g| g.value().0);
            if expected.is_some() && current != expected {
                return Err(StoreError::Conflict { current });
            }
            if current.is_some() {
                entries.remove(full.as_str()).map_err(|e| fail(&e))?;
            }
            Ok(())
        })
    }

    fn list(
        &self,
        namespace: &str,
        prefix: &str,
        start_after: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let fail = unavailable(&self.inner.path);
        let txn = self.inner.db.begin_read().map_err(|e| fail(&e))?;
        let table = txn.open_table(ENTRIES).map_err(|e| fail(&e))?;
        let base = full_key(namespace, prefix);
        let after = full_key(namespace, start_after);
        let lower = if start_after.is_empty() || after < base {
            Bound::Included(base.as_str())
        } else {
            Bound::Excluded(after.as_str())
        };
        let ns_len = namespace.len() + 1;
        let mut keys = Vec::new();
        for item in table
            .range::<&str>((lower, Bound::Unbounded))
            .map_err(|e| fail(&e))?
        {
            if keys.len() >= limit {
                break;
            }
            let (key, _) = item.map_err(|e| fail(&e))?;
            let key = key.value();
            if !key.starts_with(&base) {
                break;
            }
            keys.push(key[ns_len..].to_owned());
        }
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn store() -> (tempfile::TempDir, EmbeddedStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("state.redb")).unwrap();
        (dir, store)
    }

    #[test]
    fn compare_and_swap_and_versions() {
        let (_dir, s) = store();
        assert_eq!(s.get("ns", "k").unwrap(), None);
        let v1 = s.put("ns", "k", b"one", None).unwrap();
        assert_eq!(
            s.put("ns", "k", b"again", None),
            Err(StoreError::Conflict { current: Some(v1) })
        );
        let v2 = s.put("ns", "k", b"two", Some(v1)).unwrap();
        assert!(v2 > v1);
        assert_eq!(
            s.get("ns", "k").unwrap(),
            Some(Entry {
                value: b"two".to_vec(),
                version: v2
            })
        );
        assert_eq!(
            s.delete("ns", "k", Some(v1)),
            Err(StoreError::Conflict { current: Some(v2) })
        );
        s.delete("ns", "k", Some(v2)).unwrap();
        s.delete("ns", "k", None).unwrap();
        // A re-created key never gets an old version back.
        assert!(s.put("ns", "k", b"three", None).unwrap() > v2);
        // Namespaces are apart.
        assert_eq!(s.get("other", "k").unwrap(), None);
    }

    #[test]
    fn lists_keys_by_prefix_in_pages() {
        let (_dir, s) = store();
        for k in ["a/1", "a/2", "a/3", "b/1"] {
            s.put("ns", k, b"x", None).unwrap();
        }
        s.put("ns2", "a/9", b"x", None).unwrap();
        assert_eq!(s.list("ns", "a/", "", 10).unwrap(), ["a/1", "a/2", "a/3"]);
        assert_eq!(s.list("ns", "a/", "", 2).unwrap(), ["a/1", "a/2"]);
        assert_eq!(s.list("ns", "a/", "a/2", 10).unwrap(), ["a/3"]);
        assert_eq!(s.list("ns", "", "", 10).unwrap().len(), 4);
    }

    #[test]
    fn oversized_input_changes_nothing() {
        let (_dir, s) = store();
        let big = vec![0; super::super::MAX_VALUE + 1];
        assert!(matches!(
            s.put("ns", "k", &big, None),
            Err(StoreError::TooLarge(_))
        ));
        assert!(matches!(
            s.put("ns", "", b"x", None),
            Err(StoreError::TooLarge(_))
        ));
        assert_eq!(s.get("ns", "k").unwrap(), None);
    }

    #[test]
    fn concurrent_writers_one_winner_per_version() {
        let (_dir, s) = store();
        let s = Arc::new(s);
        let v0 = s.put("ns", "k", b"0", None).unwrap();
        let writers = 8;
        let rounds = 20;
        let wins: Vec<Vec<u64>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..writers)
                .map(|w| {
                    let s = s.clone();
                    scope.spawn(move || {
                        let mut won = vec![];
                        for _ in 0..rounds {
                            let seen = s.get("ns", "k").unwrap().unwrap().version;
                            if s.put("ns", "k", format!("{w}").as_bytes(), Some(seen))
                                .is_ok()
                            {
                                won.push(seen);
                            }
                        }
                        won
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut all: Vec<u64> = wins.into_iter().flatten().collect();
        let total = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), total, "two writers won from the same version");
        assert!(all.contains(&v0));
    }
}
