//! Node-local cleanup records as ConfigMaps, in the public node-local-cache driver's format so
//! either driver can take over volumes in flight: one ConfigMap `nlc-vol-<volume-id>` per
//! volume, labelled `node-local-cache.csi.io/volume=<volume-id>`, its `data.status` the record's
//! JSON (the cleanup module owns its meaning; this module stores text). Writes are
//! compare-and-swap on `resourceVersion`.
//!
//! A record belongs to one driver: this host labels its own `modcsi.io/cleanup-driver=<driver>`
//! and reads only those, so drivers sharing a namespace never act on each other's records; the
//! public driver's records (no such label) are read by a driver of the public driver's name
//! only.

use std::collections::BTreeMap;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::ListParams;
use kube::runtime::{WatchStreamExt, watcher};

use super::{Cluster, KubeError, config_maps};

/// The label that marks a cleanup record and names its volume.
pub const LABEL: &str = "node-local-cache.csi.io/volume";
/// The label that says which driver a record belongs to.
const DRIVER_LABEL: &str = "modcsi.io/cleanup-driver";
/// The public node-local-cache driver's name: its records carry no driver label.
pub const PUBLIC_DRIVER: &str = "node-local-cache.csi.io";
const PREFIX: &str = "nlc-vol-";
const KEY: &str = "status";

/// A record's text and the version to write it back at, with the name and volume label it
/// was stored under (a record whose body names another volume is forged or corrupt).
#[derive(Debug, Clone)]
pub struct Stored {
    pub text: String,
    pub version: String,
    name: String,
    label: Option<String>,
}

impl Stored {
    /// Whether the record's name and label are those of volume `volume` (its body's id).
    pub fn is_of(&self, volume: &str) -> bool {
        let (name, label) = names(volume);
        self.name == name && self.label.as_deref() == Some(label.as_str())
    }
}

fn dns_safe(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// The ConfigMap name and label value for a volume: the id itself where Kubernetes allows it
/// (the public driver's ids always are), else a digest of it.
/// The name of `volume`'s record.
pub(super) fn name_of(volume: &str) -> String {
    names(volume).0
}

fn names(volume: &str) -> (String, String) {
    if dns_safe(volume, 63) {
        (format!("{PREFIX}{volume}"), volume.to_owned())
    } else {
        let digest = config_maps::digest(&[volume], 20);
        (format!("{PREFIX}x-{digest}"), format!("x-{digest}"))
    }
}

fn stored(cm: ConfigMap) -> Option<Stored> {
    let label = cm
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL).cloned());
    Some(Stored {
        name: cm.metadata.name?,
        label,
        version: cm.metadata.resource_version?,
        text: cm.data?.remove(KEY)?,
    })
}

impl Cluster {
    pub(super) fn config_maps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Whether a record is this driver's to act on.
    fn owns(&self, cm: &ConfigMap) -> bool {
        match cm
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(DRIVER_LABEL))
        {
            Some(driver) => *driver == self.driver,
            None => self.driver == PUBLIC_DRIVER,
        }
    }

    /// The records this driver lists and watches (the public driver's name also sees
    /// unlabelled ones, and filters the rest out itself).
    fn record_selector(&self) -> String {
        if self.driver == PUBLIC_DRIVER {
            LABEL.to_owned()
        } else {
            format!("{LABEL},{DRIVER_LABEL}={}", self.driver)
        }
    }

    pub async fn record(&self, volume: &str) -> Result<Option<Stored>, KubeError> {
        let (name, _) = names(volume);
        self.config_maps()
            .get_opt(&name)
            .await
            .map(|cm| cm.filter(|cm| self.owns(cm)).and_then(stored))
            .map_err(KubeError::api(format!("get config map {name}")))
    }

    /// Writes a record: creates it when `version` is `None`, else replaces that version. `None`
    /// back means another writer came first.
    pub async fn put_record(
        &self,
        volume: &str,
        text: &str,
        version: Option<&str>,
    ) -> Result<Option<String>, KubeError> {
        let (name, label) = names(volume);
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(self.namespace.clone()),
                labels: Some(BTreeMap::from([
                    (LABEL.to_owned(), label),
                    (DRIVER_LABEL.to_owned(), self.driver.clone()),
                ])),
                resource_version: version.map(str::to_owned),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(KEY.to_owned(), text.to_owned())])),
            ..Default::default()
        };
        config_maps::write(&self.config_maps(), &cm)
            .await
            .map(|written| written.and_then(|cm| cm.metadata.resource_version))
            .map_err(KubeError::api(format!("write config map {name}")))
    }

    /// Removes a record at `version`; `false` when it changed (or is gone) meanwhile.
    pub async fn delete_record(&self, volume: &str, version: &str) -> Result<bool, KubeError> {
        let (name, _) = names(volume);
        config_maps::delete(&self.config_maps(), &name, Some(version.to_owned()))
            .await
            .map_err(KubeError::api(format!("delete config map {name}")))
    }

    /// Every record.
    pub async fn records(&self) -> Result<Vec<Stored>, KubeError> {
        self.config_maps()
            .list(&ListParams::default().labels(&self.record_selector()))
            .await
            .map(|list| {
                list.items
                    .into_iter()
                    .filter(|cm| self.owns(cm))
                    .filter_map(stored)
                    .collect()
            })
            .map_err(KubeError::api("list cleanup config maps"))
    }

    /// Follows this driver's records into `cache`, yielding whenever one is written or removed
    /// (and once a listing is complete); a broken watch is re-established with backoff and
    /// lists again, replacing the cache. The passes read the cache, so an event costs no LIST.
    pub fn watch_records(
        self: std::sync::Arc<Self>,
        cache: std::sync::Arc<RecordCache>,
    ) -> impl Stream<Item = ()> + Send + 'static {
        let api: Api<ConfigMap> = Api::namespaced(self.watch_client.clone(), &self.namespace);
        watcher(
            api,
            watcher::Config::default().labels(&self.record_selector()),
        )
        .default_backoff()
        .filter_map(move |event| {
            let (cluster, cache) = (self.clone(), cache.clone());
            async move {
                let mut state = cache.state.lock().unwrap_or_else(|e| e.into_inner());
                match event {
                    Ok(watcher::Event::Init) => {
                        state.relisting = Some(BTreeMap::new());
                        None
                    }
                    Ok(watcher::Event::InitApply(cm)) => {
                        let name = cm.metadata.name.clone().unwrap_or_default();
                        if let (Some(relisting), true) =
                            (state.relisting.as_mut(), cluster.owns(&cm))
                            && let Some(stored) = stored(cm)
                        {
                            relisting.insert(name, stored);
                        }
                        None
                    }
                    Ok(watcher::Event::InitDone) => {
                        if let Some(listed) = state.relisting.take() {
                            state.records = Some(listed);
                        }
                        Some(())
                    }
                    Ok(watcher::Event::Apply(cm)) => {
                        let name = cm.metadata.name.clone().unwrap_or_default();
                        if let (Some(records), true) = (state.records.as_mut(), cluster.owns(&cm))
                            && let Some(stored) = stored(cm)
                            && !older(&stored, records.get(&name))
                        {
                            records.insert(name, stored);
                        }
                        Some(())
                    }
                    Ok(watcher::Event::Delete(cm)) => {
                        let name = cm.metadata.name.clone().unwrap_or_default();
                        if let Some(records) = state.records.as_mut() {
                            records.remove(&name);
                        }
                        Some(())
                    }
                    Err(e) => {
                        tracing::warn!("watching cleanup records: {e}");
                        None
                    }
                }
            }
        })
    }
}

/// This driver's records as the watch last showed them: what the cleanup passes read instead of
/// listing the namespace at every change.
#[derive(Debug, Default)]
pub struct RecordCache {
    state: std::sync::Mutex<CacheState>,
}

#[derive(Debug, Default)]
struct CacheState {
    /// None until the first listing is complete.
    records: Option<BTreeMap<String, Stored>>,
    relisting: Option<BTreeMap<String, Stored>>,
}

impl RecordCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every record, once the watch has listed them all (None before).
    pub fn records(&self) -> Option<Vec<Stored>> {
        let state = self.lock();
        state
            .records
            .as_ref()
            .map(|r| r.values().cloned().collect())
    }

    /// `volume`'s record as the watch last showed it, once it has listed them all (None
    /// before; `Some(None)`: there is none).
    pub fn get(&self, volume: &str) -> Option<Option<Stored>> {
        let state = self.lock();
        let records = state.records.as_ref()?;
        Some(records.get(&name_of(volume)).cloned())
    }

    /// This process's own write of `volume`'s record (`None`: removed), seen before the
    /// watch shows it, so that the next read here does not miss it.
    pub fn wrote(&self, volume: &str, written: Option<(&str, String)>) {
        let mut state = self.lock();
        let Some(records) = state.records.as_mut() else {
            return;
        };
        let (name, label) = names(volume);
        match written {
            Some((text, version)) => records.insert(
                name.clone(),
                Stored {
                    text: text.to_owned(),
                    version,
                    name,
                    label: Some(label),
                },
            ),
            None => records.remove(&name),
        };
    }
}

/// Whether `event` is older than `cached`: resource versions are etcd revisions, so a write
/// this process made (and cached) is not undone by the watch's late event of an earlier one.
fn older(event: &Stored, cached: Option<&Stored>) -> bool {
    let revision = |s: &Stored| s.version.parse::<u64>().ok();
    matches!((revision(event), cached.and_then(revision)), (Some(e), Some(c)) if e < c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(version: &str) -> Stored {
        Stored {
            text: String::new(),
            version: version.into(),
            name: "n".into(),
            label: None,
        }
    }

    #[test]
    fn a_late_event_does_not_undo_a_newer_write() {
        assert!(older(&at("41"), Some(&at("42"))));
        assert!(!older(&at("43"), Some(&at("42"))));
        assert!(!older(&at("42"), None));
        // Not numbers: no order is assumed, the event wins.
        assert!(!older(&at("a"), Some(&at("b"))));
    }

    #[test]
    fn the_cache_answers_once_listed_and_sees_this_processs_writes() {
        let cache = RecordCache::default();
        assert!(
            cache.get("v1").is_none(),
            "nothing is known before the listing"
        );
        cache.wrote("v1", Some(("{}", "7".into())));
        assert!(cache.get("v1").is_none(), "nor after a write");
        cache.lock().records = Some(BTreeMap::new());
        assert!(matches!(cache.get("v1"), Some(None)));
        cache.wrote("v1", Some(("{}", "7".into())));
        let cached = cache.get("v1").flatten().unwrap();
        assert!(cached.is_of("v1") && cached.version == "7");
        cache.wrote("v1", None);
        assert!(matches!(cache.get("v1"), Some(None)));
    }
}
