//! What the audit reads of the cluster, as plain facts: this driver's PersistentVolumes, and
//! the claims of its StorageClasses still waiting for a volume, with the last warning about
//! each.

use k8s_openapi::api::core::v1::{Event, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::Api;
use kube::api::ListParams;

use super::{Cluster, KubeError};

/// One of this driver's PVs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverPv {
    pub name: String,
    /// Its volume handle: the volume id.
    pub volume: String,
    /// `Bound`, `Released`, `Available`, `Failed` or `Pending`.
    pub phase: String,
    /// `Delete` or `Retain`.
    pub reclaim: String,
    /// `namespace/name` of its claim.
    pub claim: Option<String>,
    pub created_unix: i64,
}

/// A claim of one of this driver's StorageClasses that has no volume yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingClaim {
    /// `namespace/name`.
    pub claim: String,
    pub class: String,
    pub created_unix: i64,
    /// The newest Warning Event about it (the provisioner's error), if any.
    pub warning: Option<String>,
}

fn created(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> i64 {
    meta.creation_timestamp
        .as_ref()
        .map_or(0, |t| t.0.as_second())
}

impl Cluster {
    /// Every PV whose CSI driver is this one.
    pub async fn driver_pvs(&self) -> Result<Vec<DriverPv>, KubeError> {
        let list = Api::<PersistentVolume>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .map_err(KubeError::api("list persistent volumes"))?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|pv| {
                let spec = pv.spec.as_ref()?;
                let csi = spec.csi.as_ref().filter(|c| c.driver == self.driver)?;
                Some(DriverPv {
                    name: pv.metadata.name.clone()?,
                    volume: csi.volume_handle.clone(),
                    phase: pv.status.as_ref()?.phase.clone().unwrap_or_default(),
                    reclaim: spec
                        .persistent_volume_reclaim_policy
                        .clone()
                        .unwrap_or_else(|| "Delete".into()),
                    claim: spec.claim_ref.as_ref().map(|c| {
                        format!(
                            "{}/{}",
                            c.namespace.as_deref().unwrap_or_default(),
                            c.name.as_deref().unwrap_or_default()
                        )
                    }),
                    created_unix: created(&pv.metadata),
                })
            })
            .collect())
    }

    /// Every Pending claim of a StorageClass this driver provisions.
    pub async fn pending_claims(&self) -> Result<Vec<PendingClaim>, KubeError> {
        let classes: Vec<String> = Api::<StorageClass>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .map_err(KubeError::api("list storage classes"))?
            .items
            .into_iter()
            .filter(|c| c.provisioner == self.driver)
            .filter_map(|c| c.metadata.name)
            .collect();
        // Claims have no field selector on their phase: every claim is listed.
        let claims = Api::<PersistentVolumeClaim>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .map_err(KubeError::api("list persistent volume claims"))?;
        let mut pending = vec![];
        for pvc in claims.items {
            let phase = pvc.status.as_ref().and_then(|s| s.phase.as_deref());
            if phase.is_some_and(|p| p != "Pending") {
                continue;
            }
            let Some(class) = pvc
                .spec
                .as_ref()
                .and_then(|s| s.storage_class_name.clone())
                .filter(|c| classes.contains(c))
            else {
                continue;
            };
            let namespace = pvc.metadata.namespace.clone().unwrap_or_default();
            let name = pvc.metadata.name.clone().unwrap_or_default();
            let warning = Api::<Event>::namespaced(self.client.clone(), &namespace)
                .list(&ListParams::default().fields(&format!(
                    "involvedObject.kind=PersistentVolumeClaim,involvedObject.name={name},type=Warning"
                )))
                .await
                .map_err(KubeError::api(format!("list events of claim {namespace}/{name}")))?
                .items
                .into_iter()
                .max_by_key(|e| e.last_timestamp.as_ref().map(|t| t.0))
                .and_then(|e| e.message);
            pending.push(PendingClaim {
                claim: format!("{namespace}/{name}"),
                class,
                created_unix: created(&pvc.metadata),
                warning,
            });
        }
        Ok(pending)
    }
}
