//! ControllerPublish and ControllerUnpublish: fencing decides, one decision at a time per
//! volume, and records a new attachment before the backend publishes (undone if it fails).

use std::collections::HashMap;
use std::time::Duration;

use super::{Controller, Error, NODES_NAMESPACE, backend_error, rules, store_error};
use crate::fencing::{self, Admitted};
use crate::state::StoreError;
use crate::volume::types::{Capability, KeyValues, PublishRequest};

impl Controller {
    /// The attributes node `node` reported through NodeGetInfo (kept in the shared store: with
    /// Kubernetes, every node's; standalone, this host's own).
    fn node_attributes(&self, node: &str) -> Result<KeyValues, StoreError> {
        Ok(self
            .parts
            .shared
            .get(NODES_NAMESPACE, node)?
            .and_then(|e| serde_json::from_slice(&e.value).ok())
            .unwrap_or_default())
    }

    /// Writes the volume's attached nodes on its PV for people, in the background (with
    /// Kubernetes; best effort).
    fn note_attachments(&self, volume: &str) {
        let (Some(cluster), Ok(nodes)) = (&self.parts.cluster, self.parts.fencing.nodes(volume))
        else {
            return;
        };
        let (cluster, volume) = (cluster.clone(), volume.to_owned());
        tokio::spawn(async move { cluster.annotate(&volume, &nodes).await });
    }

    /// Publishes the volume to `node` if fencing admits it; answers the publish context (the
    /// backend's keys plus its attachment under the host's keys).
    #[allow(clippy::too_many_arguments)]
    pub async fn controller_publish(
        &self,
        id: &str,
        node: &str,
        capability: Capability,
        readonly: bool,
        context: KeyValues,
        secrets: KeyValues,
        timeout: Option<Duration>,
    ) -> Result<HashMap<String, String>, Error> {
        let subject = format!("volume {id} on node {node}");
        let node_attributes = self.node_attributes(node).map_err(store_error(&subject))?;
        let migration_window = context
            .iter()
            .find(|(k, _)| k == fencing::MIGRATION_KEY)
            .and_then(|(_, v)| v.parse().ok())
            .map_or(fencing::DEFAULT_MIGRATION_WINDOW, Duration::from_secs);
        let fencing = &self.parts.fencing;
        let turn = fencing.turn(id).await;
        let admitted = fencing
            .admit(
                &turn,
                &fencing::Request {
                    volume: id,
                    node,
                    capability: &capability,
                    readonly,
                    migration_window,
                },
            )
            .await?;
        let backend = self.backend();
        let published = match backend
            .controller_publish(
                PublishRequest {
                    volume_id: id.to_owned(),
                    node_id: node.to_owned(),
                    node_attributes,
                    capability,
                    readonly,
                    context,
                    secrets,
                },
                timeout,
            )
            .await
        {
            Ok(published) => published,
            Err(e) => {
                if admitted == Admitted::New
                    && let Err(undo) = fencing.forget(&turn, id, Some(node))
                {
                    tracing::error!(
                        volume = id,
                        node,
                        "cannot undo a failed publish's record: {undo}"
                    );
                }
                // The attacher reports this on the VolumeAttachment; the claim hears it too.
                return self
                    .events
                    .note(id, "AttachFailed", Err(backend_error(subject)(e)));
            }
        };
        let publish_context = rules::host_context(
            backend.name(),
            &subject,
            published.context,
            published.attachment.as_ref(),
        )?;
        if admitted == Admitted::New {
            self.note_attachments(id);
        }
        tracing::info!(volume = id, node, "volume published to node");
        Ok(publish_context)
    }

    /// Unpublishes the volume from `node` (every node when None). Idempotent.
    pub async fn controller_unpublish(
        &self,
        id: &str,
        node: Option<&str>,
        secrets: KeyValues,
        timeout: Option<Duration>,
    ) -> Result<(), Error> {
        let fencing = &self.parts.fencing;
        let turn = fencing.turn(id).await;
        fencing.begin_detach(&turn, id, node)?;
        self.backend()
            .controller_unpublish(
                id.to_owned(),
                node.unwrap_or_default().to_owned(),
                secrets,
                timeout,
            )
            .await
            .map_err(backend_error(format!("volume {id}")))?;
        fencing.forget(&turn, id, node)?;
        self.note_attachments(id);
        tracing::info!(
            volume = id,
            node = node.unwrap_or_default(),
            "volume unpublished from node"
        );
        Ok(())
    }
}
