//! Where cleanup records are kept: ConfigMaps with Kubernetes, the embedded store without.

use std::sync::Arc;

use super::{CleanupError, Status};
use crate::kube::Cluster;
use crate::kube::records::{RecordCache, Stored};
use crate::state::{Durability, StateStore};

const NAMESPACE: &str = "host/cleanup";
/// Standalone, the records are this host's own: its DeleteVolume removes its own directory
/// whatever the record says, so a record lost in a crash costs nothing and needs no fsync.
const DURABILITY: Durability = Durability::Soon;

pub enum Book {
    Embedded(Arc<dyn StateStore>),
    /// ConfigMaps, read through the cache the watch fills (a LIST until it has listed once).
    Cluster(Arc<Cluster>, Arc<RecordCache>),
}

fn parse(volume: &str, text: &[u8]) -> Result<Status, CleanupError> {
    serde_json::from_slice(text).map_err(|e| CleanupError::Malformed {
        volume: volume.to_owned(),
        why: e.to_string(),
    })
}

/// A ConfigMap's record, refused when its body names another volume than its name and label
/// do (forged or corrupt).
fn checked(stored: &Stored) -> Result<Status, CleanupError> {
    let status = parse("(a config map)", stored.text.as_bytes())?;
    if stored.is_of(&status.volume_id) {
        Ok(status)
    } else {
        Err(CleanupError::Malformed {
            volume: status.volume_id,
            why: "its body names another volume than its name and label do".into(),
        })
    }
}

impl Book {
    fn cluster_err(volume: &str) -> impl FnOnce(crate::kube::KubeError) -> CleanupError {
        let volume = volume.to_owned();
        move |source| CleanupError::Cluster { volume, source }
    }

    fn store_err(volume: &str) -> impl FnOnce(crate::state::StoreError) -> CleanupError {
        let volume = volume.to_owned();
        move |source| CleanupError::Store { volume, source }
    }

    /// The record and its version as the watch last showed it, once it has listed them all;
    /// `None` when only [`Book::get`] can tell (standalone, the store answers at once).
    pub fn cached(&self, volume: &str) -> Option<Result<Option<(Status, String)>, CleanupError>> {
        let Book::Cluster(_, cache) = self else {
            return None;
        };
        Some(match cache.get(volume)? {
            Some(s) => checked(&s).map(|status| Some((status, s.version))),
            None => Ok(None),
        })
    }

    /// The record and its version.
    pub async fn get(&self, volume: &str) -> Result<Option<(Status, String)>, CleanupError> {
        match self {
            Book::Cluster(c, _) => {
                match c.record(volume).await.map_err(Self::cluster_err(volume))? {
                    Some(s) => Ok(Some((checked(&s)?, s.version))),
                    None => Ok(None),
                }
            }
            Book::Embedded(store) => match store
                .get(NAMESPACE, volume)
                .map_err(Self::store_err(volume))?
            {
                Some(e) => Ok(Some((parse(volume, &e.value)?, e.version.to_string()))),
                None => Ok(None),
            },
        }
    }

    /// Writes at `version` (`None`: the record must not exist); `None` back on a conflict.
    pub async fn put(
        &self,
        volume: &str,
        status: &Status,
        version: Option<&str>,
    ) -> Result<Option<String>, CleanupError> {
        let text = serde_json::to_string(status).expect("a cleanup record serialises");
        match self {
            Book::Cluster(c, cache) => {
                let written = c
                    .put_record(volume, &text, version)
                    .await
                    .map_err(Self::cluster_err(volume))?;
                if let Some(version) = &written {
                    cache.wrote(volume, Some((&text, version.clone())));
                }
                Ok(written)
            }
            Book::Embedded(store) => {
                let expected = version.and_then(|v| v.parse().ok());
                match store.put_with(NAMESPACE, volume, text.as_bytes(), expected, DURABILITY) {
                    Ok(v) => Ok(Some(v.to_string())),
                    Err(crate::state::StoreError::Conflict { .. }) => Ok(None),
                    Err(e) => Err(Self::store_err(volume)(e)),
                }
            }
        }
    }

    /// Removes the record at `version`; `false` when it changed meanwhile.
    pub async fn delete(&self, volume: &str, version: &str) -> Result<bool, CleanupError> {
        match self {
            Book::Cluster(c, cache) => {
                let deleted = c
                    .delete_record(volume, version)
                    .await
                    .map_err(Self::cluster_err(volume))?;
                if deleted {
                    cache.wrote(volume, None);
                }
                Ok(deleted)
            }
            Book::Embedded(store) => {
                match store.delete_with(NAMESPACE, volume, version.parse().ok(), DURABILITY) {
                    Ok(()) => Ok(true),
                    Err(crate::state::StoreError::Conflict { .. }) => Ok(false),
                    Err(e) => Err(Self::store_err(volume)(e)),
                }
            }
        }
    }

    /// Every record (unreadable ones, and ones whose name, label and body disagree, are logged
    /// and left alone).
    pub async fn list(&self) -> Result<Vec<Status>, CleanupError> {
        let read: Vec<Result<Status, CleanupError>> = match self {
            Book::Cluster(c, cache) => {
                let records = match cache.records() {
                    Some(records) => records,
                    None => c.records().await.map_err(Self::cluster_err("(all)"))?,
                };
                records.iter().map(checked).collect()
            }
            Book::Embedded(store) => {
                let keys = store.keys(NAMESPACE).map_err(Self::store_err("(all)"))?;
                let mut out = Vec::new();
                for key in keys {
                    if let Some(e) = store.get(NAMESPACE, &key).map_err(Self::store_err(&key))? {
                        out.push(parse(&key, &e.value));
                    }
                }
                out
            }
        };
        Ok(read
            .into_iter()
            .filter_map(|r| {
                r.map_err(|e| tracing::warn!("skipping a cleanup record: {e}"))
                    .ok()
            })
            .collect())
    }
}
