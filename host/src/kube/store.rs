//! The [`StateStore`] kept in the cluster, for state every process of the driver must share
//! (which volumes the host created, the backends' `store` namespaces, what nodes said about
//! themselves): one ConfigMap per entry, named by a digest of (driver, namespace, key) and
//! labelled with the driver and a digest of the namespace. An entry's version is the object's
//! `resourceVersion` (etcd's revision: it only grows, so a key written again never reuses one),
//! and every write is a compare-and-swap on it.
//!
//! The trait is synchronous (a backend's store import runs on a blocking thread; the host's
//! records are written from request handlers, as the embedded store's are), while the client is
//! async: requests run on this store's own small runtime and the caller waits for the answer,
//! as it would for the embedded store's disk. Listing reads every entry of the namespace (the
//! API cannot select by key prefix): fine for the host's records, slow for millions.

use std::collections::BTreeMap;
use std::future::Future;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::ListParams;

use super::config_maps::{self, digest};
use super::{Cluster, KubeError};
use crate::state::{Durability, Entry, StateStore, StoreError, check_sizes};

const DRIVER_LABEL: &str = "modcsi.io/state-driver";
const NAMESPACE_LABEL: &str = "modcsi.io/state-namespace";

pub struct KubeStore {
    api: Api<ConfigMap>,
    driver: String,
    /// Taken on drop (a runtime must not be dropped in an async context, where this may be).
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for KubeStore {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn version(cm: &ConfigMap) -> Result<u64, StoreError> {
    let text = cm.metadata.resource_version.as_deref().unwrap_or_default();
    text.parse().map_err(|_| {
        StoreError::Unavailable(format!(
            "the API server's resourceVersion {text:?} is not a number"
        ))
    })
}

/// The entry a ConfigMap holds.
fn entry(cm: ConfigMap) -> Result<Entry, StoreError> {
    let version = version(&cm)?;
    let value = cm
        .binary_data
        .and_then(|mut d| d.remove("value"))
        .map(|b| b.0)
        .unwrap_or_default();
    Ok(Entry { value, version })
}

fn unavailable(e: kube::Error) -> StoreError {
    StoreError::Unavailable(format!("Kubernetes API: {e}"))
}

impl KubeStore {
    /// A store in the cluster's driver namespace, with a client and runtime of its own.
    pub fn new(cluster: &Cluster) -> Result<Self, KubeError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("modcsi-kube-store")
            .enable_all()
            .build()
            .map_err(|e| KubeError::Config(format!("state store runtime: {e}")))?;
        let client = {
            let _entered = runtime.enter();
            super::bounded_client(&cluster.config)?
        };
        Ok(Self {
            api: Api::namespaced(client, cluster.namespace()),
            driver: cluster.driver.clone(),
            runtime: Some(runtime),
        })
    }

    /// Runs `work` on the store's runtime and waits for it (from any thread, async or not,
    /// without holding up an async worker's other tasks).
    fn wait<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let runtime = self.runtime.as_ref().expect("taken only on drop");
        runtime.spawn(async move {
            let _ = tx.send(work.await);
        });
        let wait = || {
            rx.recv()
                .unwrap_or_else(|_| Err(StoreError::Unavailable("the state store stopped".into())))
        };
        // Called from an async handler on a multi-threaded runtime, the worker hands its other
        // tasks (Probe, every other RPC) to the rest before it waits: a slow API server then
        // delays only the calls that need it.
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        }
    }

    fn name(&self, namespace: &str, key: &str) -> String {
        format!(
            "modcsi-state-{}",
            digest(&[&self.driver, namespace, key], 20)
        )
    }

    fn labels(&self, namespace: &str) -> String {
        // Driver names (at most 63 characters of [a-zA-Z0-9.-]) are valid label values.
        format!(
            "{DRIVER_LABEL}={},{NAMESPACE_LABEL}={}",
            self.driver,
            digest(&[namespace], 16)
        )
    }

    /// The ConfigMaps of `namespace`'s keys starting with `prefix`, after `start_after`, at
    /// most `limit`, in key order, with their keys (names are digests: the keys are in the
    /// objects' data).
    fn listed(
        &self,
        namespace: &str,
        prefix: &str,
        start_after: &str,
        limit: usize,
    ) -> Result<Vec<(String, ConfigMap)>, StoreError> {
        let (api, labels) = (self.api.clone(), self.labels(namespace));
        let (namespace, prefix, start_after) = (
            namespace.to_owned(),
            prefix.to_owned(),
            start_after.to_owned(),
        );
        self.wait(async move {
            let mut listed: Vec<(String, ConfigMap)> = api
                .list(&ListParams::default().labels(&labels))
                .await
                .map_err(unavailable)?
                .items
                .into_iter()
                .filter_map(|cm| {
                    let data = cm.data.as_ref()?;
                    let key = (data.get("namespace")? == &namespace).then(|| data.get("key"))??;
                    Some((key.clone(), cm))
                })
                .filter(|(k, _)| k.starts_with(&prefix) && k.as_str() > start_after.as_str())
                .collect();
            listed.sort_by(|a, b| a.0.cmp(&b.0));
            listed.truncate(limit);
            Ok(listed)
        })
    }

    /// The current version of an entry (after a conflict).
    async fn current(api: &Api<ConfigMap>, name: &str) -> Result<Option<u64>, StoreError> {
        match api.get_opt(name).await.map_err(unavailable)? {
            Some(cm) => version(&cm).map(Some),
            None => Ok(None),
        }
    }
}

impl StateStore for KubeStore {
    fn get(&self, namespace: &str, key: &str) -> Result<Option<Entry>, StoreError> {
        check_sizes(key, None)?;
        let (api, name) = (self.api.clone(), self.name(namespace, key));
        self.wait(async move {
            let Some(cm) = api.get_opt(&name).await.map_err(unavailable)? else {
                return Ok(None);
            };
            entry(cm).map(Some)
        })
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
        let (api, name) = (self.api.clone(), self.name(namespace, key));
        let labels = BTreeMap::from([
            (DRIVER_LABEL.to_owned(), self.driver.clone()),
            (NAMESPACE_LABEL.to_owned(), digest(&[namespace], 16)),
        ]);
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(labels),
                resource_version: expected.map(|v| v.to_string()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([
                ("namespace".to_owned(), namespace.to_owned()),
                ("key".to_owned(), key.to_owned()),
            ])),
            binary_data: Some(BTreeMap::from([(
                "value".to_owned(),
                ByteString(value.to_vec()),
            )])),
            ..Default::default()
        };
        self.wait(async move {
            match config_maps::write(&api, &cm).await.map_err(unavailable)? {
                Some(cm) => version(&cm),
                None => Err(StoreError::Conflict {
                    current: Self::current(&api, &name).await?,
                }),
            }
        })
    }

    fn delete_with(
        &self,
        namespace: &str,
        key: &str,
        expected: Option<u64>,
        _durability: Durability,
    ) -> Result<(), StoreError> {
        check_sizes(key, None)?;
        let (api, name) = (self.api.clone(), self.name(namespace, key));
        self.wait(async move {
            let version = expected.map(|v| v.to_string());
            if config_maps::delete(&api, &name, version)
                .await
                .map_err(unavailable)?
            {
                Ok(())
            } else {
                Err(StoreError::Conflict {
                    current: Self::current(&api, &name).await?,
                })
            }
        })
    }

    fn list(
        &self,
        namespace: &str,
        prefix: &str,
        start_after: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let listed = self.listed(namespace, prefix, start_after, limit)?;
        Ok(listed.into_iter().map(|(key, _)| key).collect())
    }

    /// One LIST for the keys and their values (not a GET per key).
    fn entries(
        &self,
        namespace: &str,
        prefix: &str,
        start_after: &str,
        limit: usize,
    ) -> Result<Vec<(String, Entry)>, StoreError> {
        self.listed(namespace, prefix, start_after, limit)?
            .into_iter()
            .map(|(key, cm)| Ok((key, entry(cm)?)))
            .collect()
    }
}
