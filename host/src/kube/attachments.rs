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

/// What the watch of this driver's VolumeAttachments reports.
#[derive(Debug)]
pub enum AttachmentChange {
    /// One attachment, made or changed (`deleted`: gone).
    Seen { seen: Seen, deleted: bool },
    /// The watch listed everything again (after starting, or a break): `present` is every
    /// (volume, node) attached now; anything else older than `started_ms` is gone.
    Relisted {
        present: Vec<(String, String)>,
        started_ms: u64,
    },
}

/// A relist in progress: when it began, and the (volume, node) pairs it has shown so far.
type Relist = (u64, Vec<(String, String)>);

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

/// What fencing needs of one of this driver's PVs.
#[derive(Debug, Clone)]
pub(super) struct PvFacts {
    volume: String,
    /// Its access modes allow a single node only.
    exclusive: bool,
}

/// PV name → facts, and volume id → PV name.
type PvMaps = (HashMap<String, PvFacts>, HashMap<String, String>);

/// This driver's PVs, learned from listing them and kept current from single reads.
#[derive(Default)]
pub(super) struct PvIndex(Mutex<PvMaps>);

impl PvIndex {
    fn lock(&self) -> std::sync::MutexGuard<'_, PvMaps> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn unix_ms(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> u64 {
    t.0.as_millisecond().max(0) as u64
}

impl Cluster {
    /// A PV's facts, if it is this driver's.
    fn facts(&self, pv: &PersistentVolume) -> Option<(String, PvFacts)> {
        let spec = pv.spec.as_ref()?;
        let csi = spec.csi.as_ref().filter(|c| c.driver == self.driver)?;
        let shared = spec
            .access_modes
            .iter()
            .flatten()
            .any(|m| m == "ReadWriteMany" || m == "ReadOnlyMany");
        let facts = PvFacts {
            volume: csi.volume_handle.clone(),
            exclusive: !shared,
        };
        Some((pv.metadata.name.clone()?, facts))
    }

    fn remember(&self, name: String, facts: PvFacts) {
        let mut index = self.pvs.lock();
        index.1.insert(facts.volume.clone(), name.clone());
        index.0.insert(name, facts);
    }

    /// Lists this driver's PVs into the index.
    async fn list_pvs(&self) -> Result<(), KubeError> {
        let list = Api::<PersistentVolume>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .map_err(KubeError::api("list persistent volumes"))?;
        *self.pvs.lock() = Default::default();
        for (name, facts) in list.items.iter().filter_map(|pv| self.facts(pv)) {
            self.remember(name, facts);
        }
        Ok(())
    }

    /// The facts of PV `name`, read from the API when the index does not have them.
    async fn pv_facts(&self, name: &str) -> Result<Option<PvFacts>, KubeError> {
        if let Some(facts) = self.pvs.lock().0.get(name).cloned() {
            return Ok(Some(facts));
        }
        let pv = Api::<PersistentVolume>::all(self.client.clone())
            .get_opt(name)
            .await
            .map_err(KubeError::api(format!("get persistent volume {name}")))?;
        Ok(pv
            .as_ref()
            .and_then(|pv| self.facts(pv))
            .map(|(name, facts)| {
                self.remember(name, facts.clone());
                facts
            }))
    }

    /// The PV of a volume, if the cluster has one (the index first, then a fresh list).
    pub(super) async fn pv_of(&self, volume: &str) -> Result<Option<PersistentVolume>, KubeError> {
        for listed in [false, true] {
            if listed {
                self.list_pvs().await?;
            }
            let Some(name) = self.pvs.lock().1.get(volume).cloned() else {
                continue;
            };
            let pv = Api::<PersistentVolume>::all(self.client.clone())
                .get_opt(&name)
                .await
                .map_err(KubeError::api(format!("get persistent volume {name}")))?;
            if pv
                .as_ref()
                .and_then(|pv| self.facts(pv))
                .is_some_and(|(_, f)| f.volume == volume)
            {
                return Ok(pv);
            }
        }
        Ok(None)
    }

    /// Every VolumeAttachment of this driver, with the volume id its PV names. Attachments whose
    /// PV is gone are left out (nothing can publish a volume the cluster no longer names).
    pub async fn attachments(&self) -> Result<Vec<Seen>, KubeError> {
        self.list_pvs().await?;
        let list = Api::<VolumeAttachment>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .map_err(KubeError::api("list volume attachments"))?;
        // Nodes by their CSI ids; where CSINodes cannot be read, ids are node names.
        let ids = self.csi_ids().await.unwrap_or_default();
        let index = self.pvs.lock();
        Ok(list
            .items
            .iter()
            .filter_map(|va| {
                let pv = va.spec.source.persistent_volume_name.as_ref();
                let name = &va.spec.node_name;
                let node = ids.get(name).unwrap_or(name).clone();
                self.seen(va, node, pv.and_then(|name| index.0.get(name)))
            })
            .collect())
    }

    /// A VolumeAttachment of this driver, given its node's CSI id and its PV's facts (`None`:
    /// not this driver's, or its volume cannot be named).
    fn seen(&self, va: &VolumeAttachment, node: String, pv: Option<&PvFacts>) -> Option<Seen> {
        if va.spec.attacher != self.driver {
            return None;
        }
        let (volume, exclusive) = if va.spec.source.persistent_volume_name.is_some() {
            let pv = pv?;
            (pv.volume.clone(), pv.exclusive)
        } else {
            let csi = va.spec.source.inline_volume_spec.as_ref()?.csi.as_ref()?;
            (csi.volume_handle.clone(), true)
        };
        Some(Seen {
            volume,
            node,
            attached: va.status.as_ref().is_some_and(|s| s.attached),
            detaching_since_ms: va.metadata.deletion_timestamp.as_ref().map(unix_ms),
            since_ms: va.metadata.creation_timestamp.as_ref().map_or(0, unix_ms),
            exclusive,
        })
    }

    /// This driver's VolumeAttachments as they change, so that every controller replica's
    /// record follows the cluster, not only the one that published. A broken watch is
    /// re-established with backoff; what it lists again then is a full account
    /// ([`AttachmentChange::Relisted`]), so a deletion made while it was broken is not missed.
    pub fn attachment_changes(self: Arc<Self>) -> impl Stream<Item = AttachmentChange> + Send {
        let api: Api<VolumeAttachment> = Api::all(self.watch_client.clone());
        let relist: Arc<Mutex<Option<Relist>>> = Arc::default();
        watcher(api, watcher::Config::default())
            .default_backoff()
            .filter_map(move |event| {
                let (cluster, relist) = (self.clone(), relist.clone());
                async move {
                    let (va, deleted) = match event {
                        Ok(watcher::Event::Init) => {
                            let now = std::time::SystemTime::now()
                                .duration_since(std::time::UNIX_EPOCH)
                                .map_or(0, |d| d.as_millis() as u64);
                            *relist.lock().unwrap_or_else(|e| e.into_inner()) = Some((now, vec![]));
                            return None;
                        }
                        Ok(watcher::Event::InitDone) => {
                            let (started_ms, present) =
                                relist.lock().unwrap_or_else(|e| e.into_inner()).take()?;
                            return Some(AttachmentChange::Relisted {
                                present,
                                started_ms,
                            });
                        }
                        Ok(watcher::Event::Apply(va) | watcher::Event::InitApply(va)) => {
                            (va, false)
                        }
                        Ok(watcher::Event::Delete(va)) => (va, true),
                        Err(e) => {
                            tracing::warn!("watching volume attachments: {e}");
                            return None;
                        }
                    };
                    if va.spec.attacher != cluster.driver {
                        return None;
                    }
                    let pv = match &va.spec.source.persistent_volume_name {
                        Some(name) => cluster.pv_facts_until_read(name).await,
                        None => None,
                    };
                    let node = cluster.csi_id(&va.spec.node_name).await;
                    let seen = cluster.seen(&va, node, pv.as_ref())?;
                    if let Some((_, present)) =
                        relist.lock().unwrap_or_else(|e| e.into_inner()).as_mut()
                    {
                        present.push((seen.volume.clone(), seen.node.clone()));
                    }
                    Some(AttachmentChange::Seen { seen, deleted })
                }
            })
    }

    /// A PV's facts, read again (with backoff) until the API answers: an attachment event is
    /// never dropped for a failed read, since a missed attachment would let another node in.
    async fn pv_facts_until_read(&self, name: &str) -> Option<PvFacts> {
        let mut wait = std::time::Duration::from_millis(100);
        loop {
            match self.pv_facts(name).await {
                Ok(facts) => return facts,
                Err(e) => {
                    tracing::warn!(
                        pv = name,
                        "cannot read the PV of an attachment, retrying: {e}"
                    );
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(std::time::Duration::from_secs(5));
                }
            }
        }
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
