//! What the audit reads of the cluster, as plain facts: this driver's PersistentVolumes and
//! StorageClasses, the claims of those classes still waiting for a volume (with the last
//! warning about each), and what its configuration checks look at: the CSIDriver object, the
//! CSINodes, the sidecars' images, and what the audit's own account may do.

use std::collections::BTreeMap;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec, SubjectAccessReview,
    SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Event, Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::{CSIDriver, CSINode, StorageClass};
use kube::Api;
use kube::api::{ListParams, PostParams};

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
    /// Its StorageClass, if it has one.
    pub class: Option<String>,
    /// Its size (`spec.capacity.storage`).
    pub capacity_bytes: u64,
    pub created_unix: i64,
}

/// One of this driver's StorageClasses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverClass {
    pub name: String,
    pub parameters: BTreeMap<String, String>,
}

/// What the CSIDriver object of this driver says, if there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverObject {
    pub attach_required: bool,
    pub pod_info_on_mount: bool,
    pub storage_capacity: bool,
}

/// A container of a pod in the driver's namespace: its pod and node, name and image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningContainer {
    pub pod: String,
    pub node: Option<String>,
    pub name: String,
    pub image: String,
    pub ready: bool,
}

/// A VolumeSnapshotContent of this driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverSnapshotContent {
    pub name: String,
    /// The backend's snapshot id (`status.snapshotHandle`, or `spec.source.snapshotHandle` for
    /// a pre-provisioned one); `None` while it is being made.
    pub handle: Option<String>,
    /// `namespace/name` of its VolumeSnapshot.
    pub snapshot: Option<String>,
    pub created_unix: i64,
}

/// Who a bearer token belongs to, by the API server's TokenReview.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reviewed {
    pub user: String,
    pub groups: Vec<String>,
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
                    class: spec.storage_class_name.clone(),
                    capacity_bytes: spec
                        .capacity
                        .as_ref()
                        .and_then(|c| c.get("storage"))
                        .and_then(|q| crate::kube::quantity::bytes(&q.0))
                        .unwrap_or_default(),
                    created_unix: created(&pv.metadata),
                })
            })
            .collect())
    }

    /// Every StorageClass whose provisioner is this driver.
    pub async fn driver_classes(&self) -> Result<Vec<DriverClass>, KubeError> {
        Ok(Api::<StorageClass>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .map_err(KubeError::api("list storage classes"))?
            .items
            .into_iter()
            .filter(|c| c.provisioner == self.driver)
            .filter_map(|c| {
                Some(DriverClass {
                    name: c.metadata.name?,
                    parameters: c.parameters.unwrap_or_default(),
                })
            })
            .collect())
    }

    /// Every Pending claim of one of `classes` (this driver's).
    pub async fn pending_claims(
        &self,
        classes: &[DriverClass],
    ) -> Result<Vec<PendingClaim>, KubeError> {
        let classes: Vec<&str> = classes.iter().map(|c| c.name.as_str()).collect();
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
                .filter(|c| classes.contains(&c.as_str()))
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

impl Cluster {
    /// This driver's VolumeSnapshotContents; `None` when the cluster has no snapshot API (the
    /// CRDs of the external snapshotter are not installed).
    pub async fn snapshot_contents(&self) -> Result<Option<Vec<DriverSnapshotContent>>, KubeError> {
        use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshotContent"),
            "volumesnapshotcontents",
        );
        let list = match Api::<DynamicObject>::all_with(self.client.clone(), &resource)
            .list(&ListParams::default())
            .await
        {
            Ok(list) => list,
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(None),
            Err(e) => return Err(KubeError::api("list VolumeSnapshotContents")(e)),
        };
        let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
        Ok(Some(
            list.items
                .into_iter()
                .filter(|c| c.data["spec"]["driver"] == self.driver.as_str())
                .map(|c| {
                    let spec = &c.data["spec"];
                    let reference = &spec["volumeSnapshotRef"];
                    DriverSnapshotContent {
                        handle: text(&c.data["status"]["snapshotHandle"])
                            .or_else(|| text(&spec["source"]["snapshotHandle"])),
                        snapshot: text(&reference["name"]).map(|name| {
                            format!(
                                "{}/{name}",
                                text(&reference["namespace"]).unwrap_or_default()
                            )
                        }),
                        created_unix: created(&c.metadata),
                        name: c.metadata.name.unwrap_or_default(),
                    }
                })
                .collect(),
        ))
    }

    /// This driver's CSIDriver object, if it exists.
    pub async fn driver_object(&self) -> Result<Option<DriverObject>, KubeError> {
        let found = Api::<CSIDriver>::all(self.client.clone())
            .get_opt(&self.driver)
            .await
            .map_err(KubeError::api(format!("read CSIDriver {}", self.driver)))?;
        Ok(found.map(|d| DriverObject {
            attach_required: d.spec.attach_required.unwrap_or(true),
            pod_info_on_mount: d.spec.pod_info_on_mount.unwrap_or(false),
            storage_capacity: d.spec.storage_capacity.unwrap_or(false),
        }))
    }

    /// For every Node: whether its CSINode registers this driver.
    pub async fn registrations(&self) -> Result<BTreeMap<String, bool>, KubeError> {
        let nodes = Api::<Node>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .map_err(KubeError::api("list nodes"))?;
        let csinodes = Api::<CSINode>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .map_err(KubeError::api("list CSINodes"))?;
        let registered: Vec<String> = csinodes
            .items
            .into_iter()
            .filter(|n| n.spec.drivers.iter().any(|d| d.name == self.driver))
            .filter_map(|n| n.metadata.name)
            .collect();
        Ok(nodes
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .map(|name| {
                let ok = registered.contains(&name);
                (name, ok)
            })
            .collect())
    }

    /// Every container of this driver's pods: those in its namespace with a container whose
    /// arguments name the driver.
    pub async fn containers(&self) -> Result<Vec<RunningContainer>, KubeError> {
        let pods = Api::<Pod>::namespaced(self.client.clone(), &self.namespace)
            .list(&ListParams::default())
            .await
            .map_err(KubeError::api(format!("list pods in {}", self.namespace)))?;
        let mut out = vec![];
        for pod in pods.items {
            let ours = pod.spec.as_ref().is_some_and(|s| {
                s.containers
                    .iter()
                    .flat_map(|c| c.args.iter().flatten())
                    .any(|a| a.contains(&self.driver))
            });
            if !ours {
                continue;
            }
            let name = pod.metadata.name.clone().unwrap_or_default();
            let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
            let statuses = pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.clone())
                .unwrap_or_default();
            for c in pod.spec.map(|s| s.containers).unwrap_or_default() {
                let ready = statuses.iter().any(|s| s.name == c.name && s.ready);
                out.push(RunningContainer {
                    pod: name.clone(),
                    node: node.clone(),
                    name: c.name,
                    image: c.image.unwrap_or_default(),
                    ready,
                });
            }
        }
        Ok(out)
    }

    /// Whether this process's own account may `verb` `resource` (in `namespace`, or
    /// cluster-wide), by a SelfSubjectAccessReview.
    pub async fn may(
        &self,
        verb: &str,
        group: &str,
        resource: &str,
        namespace: Option<&str>,
    ) -> Result<bool, KubeError> {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(attributes(verb, group, resource, namespace)),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = Api::<SelfSubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(KubeError::api("review this account's access"))?;
        Ok(answer.status.is_some_and(|s| s.allowed))
    }

    /// Who `token` is, if the API server knows it (TokenReview).
    pub async fn review_token(&self, token: &str) -> Result<Option<Reviewed>, KubeError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(KubeError::api("review a bearer token"))?;
        let Some(status) = answer.status.filter(|s| s.authenticated == Some(true)) else {
            return Ok(None);
        };
        let user = status.user.unwrap_or_default();
        Ok(Some(Reviewed {
            user: user.username.unwrap_or_default(),
            groups: user.groups.unwrap_or_default(),
        }))
    }

    /// Whether `who` may `verb` `resource` cluster-wide (SubjectAccessReview).
    pub async fn may_they(
        &self,
        who: &Reviewed,
        verb: &str,
        group: &str,
        resource: &str,
    ) -> Result<bool, KubeError> {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(who.user.clone()),
                groups: Some(who.groups.clone()),
                resource_attributes: Some(attributes(verb, group, resource, None)),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(KubeError::api("review a user's access"))?;
        Ok(answer.status.is_some_and(|s| s.allowed))
    }
}

fn attributes(
    verb: &str,
    group: &str,
    resource: &str,
    namespace: Option<&str>,
) -> ResourceAttributes {
    ResourceAttributes {
        verb: Some(verb.to_owned()),
        group: Some(group.to_owned()),
        resource: Some(resource.to_owned()),
        namespace: namespace.map(str::to_owned),
        ..Default::default()
    }
}
