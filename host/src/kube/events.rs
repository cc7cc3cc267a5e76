//! Events: warnings on the PersistentVolumeClaim of a volume, so that `kubectl describe pvc` says
//! why a pod cannot start (best effort, and at most one per volume and reason a minute), and
//! notes on the driver's CSIDriver object of what the audit deleted.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Api;
use kube::api::PostParams;

use super::{Cluster, KubeError};

const REPEAT_AFTER: Duration = Duration::from_secs(60);

#[derive(Default)]
pub(super) struct Limiter(Mutex<HashMap<String, (Instant, Duration)>>);

impl Limiter {
    fn allows(&self, key: String) -> bool {
        self.allows_every(key, REPEAT_AFTER)
    }

    /// Whether `key` was not let through in the last `every`.
    fn allows_every(&self, key: String, every: Duration) -> bool {
        let mut last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        last.retain(|_, (at, window)| now.duration_since(*at) < *window);
        match last.entry(key) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert((now, every));
                true
            }
        }
    }
}

impl Cluster {
    /// Posts a Warning Event on the claim of `volume`'s PV (nothing if it has none).
    pub async fn warn_claim(&self, volume: &str, key: &str, reason: &str, message: &str) {
        if !self.events.allows(format!("{volume}/{reason}/{key}")) {
            return;
        }
        if let Err(e) = self.post_warning(volume, reason, message).await {
            tracing::warn!(volume, reason, "cannot post an Event: {e}");
        }
    }

    async fn post_warning(
        &self,
        volume: &str,
        reason: &str,
        message: &str,
    ) -> Result<(), KubeError> {
        let Some(claim) = self.pv_of(volume).await?.and_then(|pv| pv.spec?.claim_ref) else {
            return Ok(());
        };
        let involved = ObjectReference {
            kind: Some("PersistentVolumeClaim".into()),
            api_version: Some("v1".into()),
            ..claim
        };
        self.post(involved, "Warning", reason, message).await
    }

    /// Posts a Normal Event on this driver's CSIDriver object, in the driver's namespace: what
    /// the audit did (a deletion).
    pub async fn note_on_driver(&self, reason: &str, message: &str) -> Result<(), KubeError> {
        let involved = ObjectReference {
            kind: Some("CSIDriver".into()),
            api_version: Some("storage.k8s.io/v1".into()),
            name: Some(self.driver.clone()),
            namespace: Some(self.namespace().to_owned()),
            ..Default::default()
        };
        self.post(involved, "Normal", reason, message).await
    }

    /// Posts a Warning Event on the cleanup record (a ConfigMap in the driver's namespace) of
    /// `volume`, at most once per `every`.
    pub async fn warn_record(&self, volume: &str, reason: &str, message: &str, every: Duration) {
        if !self
            .events
            .allows_every(format!("{volume}/{reason}/record"), every)
        {
            return;
        }
        let involved = ObjectReference {
            kind: Some("ConfigMap".into()),
            api_version: Some("v1".into()),
            name: Some(super::records::name_of(volume)),
            namespace: Some(self.namespace().to_owned()),
            ..Default::default()
        };
        if let Err(e) = self.post(involved, "Warning", reason, message).await {
            tracing::warn!(volume, reason, "cannot post an Event: {e}");
        }
    }

    async fn post(
        &self,
        involved: ObjectReference,
        type_: &str,
        reason: &str,
        message: &str,
    ) -> Result<(), KubeError> {
        let Some(namespace) = involved.namespace.clone() else {
            return Ok(());
        };
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let event = Event {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}.", involved.name.as_deref().unwrap_or("modcsi"))),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            involved_object: involved,
            reason: Some(reason.into()),
            message: Some(message.chars().take(1024).collect()),
            type_: Some(type_.into()),
            source: Some(EventSource {
                component: Some(self.driver.clone()),
                host: None,
            }),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            ..Default::default()
        };
        Api::<Event>::namespaced(self.client.clone(), &namespace)
            .create(&PostParams::default(), &event)
            .await
            .map(drop)
            .map_err(KubeError::api(format!(
                "post an event in namespace {namespace}"
            )))
    }
}
