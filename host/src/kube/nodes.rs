//! Nodes by their CSI node id. A backend's node-identity may give a node an id of its own (a
//! cloud VM id) instead of its Kubernetes name; kubelet records each driver's id in the node's
//! CSINode. VolumeAttachments name Kubernetes nodes and CSI calls name CSI ids: fencing compares
//! them in CSI ids, translated here.

use std::collections::{HashMap, HashSet};

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::storage::v1::CSINode;
use kube::Api;
use kube::api::ListParams;

use super::{Cluster, KubeError};

/// Kubernetes node name → this driver's CSI node id, for the ids learned so far (a node's id
/// does not change while kubelet keeps it registered).
#[derive(Default)]
pub(super) struct NodeIds(std::sync::Mutex<HashMap<String, String>>);

impl NodeIds {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Cluster {
    /// This driver's id in a CSINode, if kubelet registered it there.
    fn driver_id(&self, csinode: &CSINode) -> Option<String> {
        csinode
            .spec
            .drivers
            .iter()
            .find(|d| d.name == self.driver)
            .map(|d| d.node_id.clone())
            .filter(|id| !id.is_empty())
    }

    /// Every registered node's CSI id for this driver, by node name (one LIST).
    pub(super) async fn csi_ids(&self) -> Result<HashMap<String, String>, KubeError> {
        let list = Api::<CSINode>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .map_err(KubeError::api("list csinodes"))?;
        let ids: HashMap<String, String> = list
            .items
            .iter()
            .filter_map(|c| Some((c.metadata.name.clone()?, self.driver_id(c)?)))
            .collect();
        self.node_ids.lock().extend(ids.clone());
        Ok(ids)
    }

    /// The CSI id of the Kubernetes node `name`: its CSINode's for this driver, else the name
    /// (not registered, or the CSINode cannot be read: ids are names unless a backend says).
    pub(super) async fn csi_id(&self, name: &str) -> String {
        if let Some(id) = self.node_ids.lock().get(name) {
            return id.clone();
        }
        match Api::<CSINode>::all(self.client.clone()).get_opt(name).await {
            Ok(Some(csinode)) => match self.driver_id(&csinode) {
                Some(id) => {
                    self.node_ids.lock().insert(name.to_owned(), id.clone());
                    id
                }
                None => name.to_owned(),
            },
            _ => name.to_owned(),
        }
    }

    /// The CSI ids of every Node of the cluster: their names, and the ids their CSINodes give
    /// this driver (one LIST each).
    pub async fn node_names(&self) -> Result<HashSet<String>, KubeError> {
        let names: HashSet<String> = Api::<Node>::all(self.client.clone())
            .list_metadata(&ListParams::default())
            .await
            .map_err(KubeError::api("list nodes"))?
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect();
        let ids = self.csi_ids().await?;
        let mapped: Vec<String> = ids
            .into_iter()
            .filter(|(name, _)| names.contains(name))
            .map(|(_, id)| id)
            .collect();
        Ok(names.into_iter().chain(mapped).collect())
    }

    /// Whether the cluster has a node whose CSI id is `id`: a Node of that name, or one whose
    /// CSINode gives this driver that id.
    pub async fn node_exists(&self, id: &str) -> Result<bool, KubeError> {
        let nodes = Api::<Node>::all(self.client.clone());
        let named = |name: String| {
            let nodes = nodes.clone();
            async move {
                nodes
                    .get_metadata_opt(&name)
                    .await
                    .map(|n| n.is_some())
                    .map_err(KubeError::api(format!("get node {name}")))
            }
        };
        if named(id.to_owned()).await? {
            return Ok(true);
        }
        let found = self
            .node_ids
            .lock()
            .iter()
            .find(|(_, v)| *v == id)
            .map(|(k, _)| k.clone());
        let name = match found {
            Some(name) => Some(name),
            None => self
                .csi_ids()
                .await?
                .into_iter()
                .find(|(_, v)| v == id)
                .map(|(k, _)| k),
        };
        match name {
            Some(name) => named(name).await,
            None => Ok(false),
        }
    }
}
