//! Where cleanup records are kept: ConfigMaps with Kubernetes, the embedded store without.

use std::sync::Arc;

use super::{CleanupError, Status};
use crate::kube::Cluster;
use crate::kube::records::RecordCache;
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

impl Book {
    fn cluster_err(volume: &str) -> impl FnOnce(crate::kube::KubeError) -> CleanupError {
        let volume = volume.to_owned();
        move |source| CleanupError::Cluster { volume, source }
    }

    fn store_err(volume: &str) -> impl FnOnce(crate::state::StoreError) -> CleanupError {
        let volume = volume.to_owned();
        move |source| CleanupError::Store { volume, source }
    }

    /// The record and its version.
    pub async fn get(&self, volume: &str) -> Result<Option<(Status, String)>, CleanupError> {
        match self {
            Book::Cluster(c, _) => {
                match c.record(volume).await.map_err(Self::cluster_err(volume))? {
                    Some(s) => {
                        let status = parse(volume, s.text.as_bytes())?;
                        if !s.is_of(&status.volume_id) || status.volume_id != volume {
                            return Err(CleanupError::Malformed {
                                volume: volume.to_owned(),
                                why: format!(
                                    "its body names volume {:?}, not the one its name and label do",
                                    status.volume_id
                                ),
                            });
                        }
                        Ok(Some((status, s.version)))
                    }
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
            Book::Cluster(c, _) => c
                .put_record(volume, &text, version)
                .await
                .map_err(Self::cluster_err(volume)),
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
            Book::Cluster(c, _) => c
                .delete_record(volume, version)
                .await
                .map_err(Self::cluster_err(volume)),
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
        let texts: Vec<(String, Vec<u8>)> = match self {
            Book::Cluster(c, cache) => {
                let records = match cache.records() {
                    Some(records) => records,
                    None => c.records().await.map_err(Self::cluster_err("(all)"))?,
                };
                let mut out = vec![];
                for s in records {
                    match parse("(a config map)", s.text.as_bytes()) {
                        Ok(status) if s.is_of(&status.volume_id) => {
                            out.push((status.volume_id, s.text.into_bytes()))
                        }
                        Ok(status) => tracing::warn!(
                            volume = status.volume_id,
                            "skipping a cleanup record whose name and label name another volume"
                        ),
                        Err(e) => tracing::warn!("skipping a cleanup record: {e}"),
                    }
                }
                out
            }
            Book::Embedded(store) => {
                let mut out = Vec::new();
                let mut after = String::new();
                loop {
                    let keys = store
                        .list(NAMESPACE, "", &after, 500)
                        .map_err(Self::store_err("(all)"))?;
                    let Some(last) = keys.last().cloned() else {
                        break;
                    };
                    for key in keys {
                        if let Some(e) =
                            store.get(NAMESPACE, &key).map_err(Self::store_err(&key))?
                        {
                            out.push((key, e.value));
                        }
                    }
                    after = last;
                }
                out
            }
        };
        Ok(texts
            .into_iter()
            .filter_map(|(key, text)| match parse(&key, &text) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!("skipping a cleanup record: {e}");
                    None
                }
            })
            .collect())
    }
}
