//! This driver's VolumeAttachments, the source of truth for which node holds which volume, and
//! the PersistentVolumes that name the volumes (a VolumeAttachment names a PV, not a volume id).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};

use k8s_openapi::api::core::v1::PersistentVolume;
use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};

use super::{Cluster, KubeError};

/// One VolumeAttachment of this driver, as the fencing rebuild needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub volume: String,
    pub node: String,
    /// The attacher has confirmed the publish (`status.attached`).
    pub attached: bool,
    /// Being detached (the object has a deletion timestamp): since when, in Unix ms.
    pub detaching_since_ms: Option<u64>,
    /// When the object was created, in Unix ms.
    pub since_ms: u64,
    /// The PV allows a single node only (ReadWriteOnce, ReadWriteOncePod or ReadOnlyMany are
    /// not all single-node, so: anything but ReadWriteMany/ReadOnlyMany, or an unknown PV).
    pub exclusive: bool,
}

/// Volume id → PV name, learned from listing PVs.
#[derive(Default)]
pub(super) struct PvIndex(Mutex<HashMap<String, String>>);

fn unix_ms(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> u64 {
    t.0.as_millisecond().max(0) as u64
}

impl Cluster {
    /// This driver's PVs, by name; also refreshes the volume → PV index.
    async fn driver_pvs(&self) -> Result<HashMap<String, PersistentVolume>, KubeError> {
        let list = Api::<PersistentVolume>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .map_err(KubeError::api("list persistent volumes"))?;
        let mine: HashMap<String, PersistentVolume> = list
            .items
            .into_iter()
            .filter(|pv| {
                pv.spec
                    .as_ref()
                    .and_then(|s| s.csi.as_ref())
                    .is_some_and(|c| c.driver == self.driver)
            })
            .filter_map(|pv| Some((pv.metadata.name.clone()?, pv)))
            .collect();
        let mut index = self.pvs.0.lock().unwrap_or_else(|e| e.into_inner());
        index.clear();
        for (name, pv) in &mine {
            if let Some(csi) = pv.spec.as_ref().and_then(|s| s.csi.as_ref()) {
                index.insert(csi.volume_handle.clone(), name.clone());
            }
        }
        Ok(mine)
    }

    /// The PV of a volume, if the cluster has one.
    pub(super) async fn pv_of(&self, volume: &str) -> Result<Option<PersistentVolume>, KubeError> {
        let known = self
            .pvs
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(volume)
            .cloned();
        if let Some(name) = known {
            let pv = Api::<PersistentVolume>::all(self.client.clone())
                .get_opt(&name)
                .await
                .map_err(KubeError::api(format!("get persistent volume {name}")))?;
            let same = pv
                .as_ref()
                .and_then(|pv| pv.spec.as_ref()?.csi.as_ref())
                .is_some_and(|c| c.driver == self.driver && c.volume_handle == volume);
            if same {
                return Ok(pv);
            }
        }
        let mut pvs = self.driver_pvs().await?;
        let name = self
            .pvs
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(volume)
            .cloned();
        Ok(name.and_then(|n| pvs.remove(&n)))
    }

    /// Every VolumeAttachment of this driver, with the volume id its PV names. Attachments whose
    /// PV is gone are left out (nothing can publish a volume the cluster no longer names).
    pub async fn attachments(&self) -> Result<Vec<Seen>, KubeError> {
        let pvs = self.driver_pvs().await?;
        let list = Api::<VolumeAttachment>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .map_err(KubeError::api("list volume attachments"))?;
        let mut seen = Vec::new();
        for va in &list.items {
            let pv = va.spec.source.persistent_volume_name.as_ref();
            if let Some(s) = self.seen(va, pv.and_then(|name| pvs.get(name))) {
                seen.push(s);
            }
        }
        Ok(seen)
    }

    /// A VolumeAttachment of this driver, given its PV (`None`: not this driver's, or its
    /// volume cannot be named).
    fn seen(&self, va: &VolumeAttachment, pv: Option<&PersistentVolume>) -> Option<Seen> {
        if va.spec.attacher != self.driver {
            return None;
        }
        let source = &va.spec.source;
        let (volume, exclusive) = if source.persistent_volume_name.is_some() {
            let spec = pv?.spec.as_ref()?;
            let csi = spec.csi.as_ref().filter(|c| c.driver == self.driver)?;
            let shared = spec
                .access_modes
                .iter()
                .flatten()
                .any(|m| m == "ReadWriteMany" || m == "ReadOnlyMany");
            (csi.volume_handle.clone(), !shared)
        } else {
            let csi = source.inline_volume_spec.as_ref()?.csi.as_ref()?;
            (csi.volume_handle.clone(), true)
        };
        Some(Seen {
            volume,
            node: va.spec.node_name.clone(),
            attached: va.status.as_ref().is_some_and(|s| s.attached),
            detaching_since_ms: va.metadata.deletion_timestamp.as_ref().map(unix_ms),
            since_ms: va.metadata.creation_timestamp.as_ref().map_or(0, unix_ms),
            exclusive,
        })
    }

    /// This driver's VolumeAttachments as they change, each with whether it was deleted, so
    /// that every controller replica's record follows the cluster, not only the one that
    /// published. A broken watch is re-established with backoff (and replays what exists).
    pub fn attachment_changes(self: Arc<Self>) -> impl Stream<Item = (Seen, bool)> + Send {
        let api: Api<VolumeAttachment> = Api::all(self.watch_client.clone());
        watcher(api, watcher::Config::default())
            .default_backoff()
            .filter_map(move |event| {
                let cluster = self.clone();
                async move {
                    let (va, deleted) = match event {
                        Ok(watcher::Event::Apply(va) | watcher::Event::InitApply(va)) => {
                            (va, false)
                        }
                        Ok(watcher::Event::Delete(va)) => (va, true),
                        Ok(_) => return None,
                        Err(e) => {
                            tracing::warn!("watching volume attachments: {e}");
                            return None;
                        }
                    };
                    if va.spec.attacher != cluster.driver {
                        return None;
                    }
                    let pv = match &va.spec.source.persistent_volume_name {
                        Some(name) => match Api::<PersistentVolume>::all(cluster.client.clone())
                            .get_opt(name)
                            .await
                        {
                            Ok(pv) => pv,
                            Err(e) => {
                                tracing::warn!(
                                    pv = name,
                                    "cannot read the PV of an attachment: {e}"
                                );
                                None
                            }
                        },
                        None => None,
                    };
                    cluster.seen(&va, pv.as_ref()).map(|s| (s, deleted))
                }
            })
    }

    /// Writes the nodes a volume is attached to on its PV, for people (`kubectl describe pv`);
    /// never read back. Best effort: a failure is logged.
    pub async fn annotate(&self, volume: &str, nodes: &[String]) {
        let result = async {
            let Some(pv) = self.pv_of(volume).await? else {
                return Ok(());
            };
            let name = pv.metadata.name.unwrap_or_default();
            let value = (!nodes.is_empty()).then(|| nodes.join(","));
            let patch = serde_json::json!({"metadata": {"annotations": {ATTACHED_NODES: value}}});
            Api::<PersistentVolume>::all(self.client.clone())
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(drop)
                .map_err(KubeError::api(format!("annotate persistent volume {name}")))
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(volume, "cannot note the attached nodes on the PV: {e}");
        }
    }
}

/// The PV annotation naming the nodes a volume is attached to (information only).
pub const ATTACHED_NODES: &str = "modcsi.io/attached-nodes";
