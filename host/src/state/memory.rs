//! A [`StateStore`] in memory, for state whose durable copy lives elsewhere: with Kubernetes,
//! the fencing record is rebuilt from VolumeAttachments at every start. It keeps the same
//! contract as every store (`tests/src/store_contract.rs` checks it).

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{Durability, Entry, StateStore, StoreError, check_sizes};

/// Entries by (namespace, key), and the version counter.
type Entries = (BTreeMap<(String, String), Entry>, u64);

#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Entries>,
}

impl StateStore for MemoryStore {
    fn get(&self, namespace: &str, key: &str) -> Result<Option<Entry>, StoreError> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        Ok(inner
            .0
            .get(&(namespace.to_owned(), key.to_owned()))
            .cloned())
    }

    fn put_with(
        &self,
        namespace: &str,
        key: &str,
        value: &[u8],
        expected: Option<u64>,
        _durability: Durability,
    ) -> Result<u64, StoreError> {
        check_sizes(key, Some(value))?;
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (map, counter) = &mut *inner;
        let slot = (namespace.to_owned(), key.to_owned());
        let current = map.get(&slot).map(|e| e.version);
        if current != expected {
            return Err(StoreError::Conflict { current });
        }
        *counter += 1;
        map.insert(
            slot,
            Entry {
                value: value.to_vec(),
                version: *counter,
            },
        );
        Ok(*counter)
    }

    fn delete_with(
        &self,
        namespace: &str,
        key: &str,
        expected: Option<u64>,
        _durability: Durability,
    ) -> Result<(), StoreError> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let slot = (namespace.to_owned(), key.to_owned());
        let current = inner.0.get(&slot).map(|e| e.version);
        if expected.is_some() && current != expected {
            return Err(StoreError::Conflict { current });
        }
        inner.0.remove(&slot);
        Ok(())
    }

    fn list(
        &self,
        namespace: &str,
        prefix: &str,
        start_after: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let from = (namespace.to_owned(), start_after.max(prefix).to_owned());
        Ok(inner
            .0
            .range(from..)
            .take_while(|((ns, _), _)| ns == namespace)
            .map(|((_, key), _)| key)
            .filter(|key| key.as_str() > start_after && key.starts_with(prefix))
            .take(limit)
            .cloned()
            .collect())
    }
}
