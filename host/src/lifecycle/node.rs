//! The node side: where a volume comes from on this node (the attachment the host encoded in
//! the contexts, or the backend's `locate`), the cleanup record a node-local directory needs
//! before it exists, one operation per (volume, path) at a time, and the node facade's work.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::{Error, NODES_NAMESPACE, backend_error, lock_target, rules};
use crate::cleanup::Cleanup;
use crate::node::{Host, Source};
use crate::runtime::{Backend, Optional};
use crate::state::StateStore;
use crate::volume::locks::OperationLocks;
use crate::volume::types::{AccessType, Attachment, Capability, Topology, key_values};
use crate::volume::{attachment, mkfs, validate};

pub use crate::node::VolumeStats as NodeStats;

/// How long a stats call may wait for a (possibly stale) mount before giving up.
const STATS_TIMEOUT: Duration = Duration::from_secs(5);

/// What NodeGetInfo answers.
#[derive(Debug, Default)]
pub struct NodeInfo {
    pub node_id: String,
    pub max_volumes: u32,
    pub topology: Option<Topology>,
}

pub struct Node {
    backend: Arc<Backend>,
    node_id: String,
    host: Arc<Host>,
    /// Where what this node says about itself is kept for the controller.
    shared: Arc<dyn StateStore>,
    cleanup: Arc<Cleanup>,
    locks: OperationLocks,
    events: super::Events,
}

fn node_err(volume: &str) -> impl FnOnce(crate::node::NodeError) -> Error + '_ {
    move |source| Error::Node {
        volume: volume.to_owned(),
        source,
    }
}

impl Node {
    pub fn new(
        backend: Arc<Backend>,
        node_id: String,
        host: Arc<Host>,
        shared: Arc<dyn StateStore>,
        cleanup: Arc<Cleanup>,
        events: super::Events,
    ) -> Self {
        Self {
            backend,
            node_id,
            host,
            shared,
            cleanup,
            locks: OperationLocks::default(),
            events,
        }
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The volume's attachment: the one the host encoded in the contexts, or, for a volume it
    /// did not create (one of the driver the backend replaces), the backend's `locate`.
    async fn attachment(
        &self,
        id: &str,
        publish_context: &HashMap<String, String>,
        volume_context: &HashMap<String, String>,
    ) -> Result<Attachment, Error> {
        if attachment::present(publish_context, volume_context) {
            return attachment::decode(publish_context, volume_context).map_err(|source| {
                Error::Attachment {
                    volume: id.to_owned(),
                    source,
                }
            });
        }
        let backend = &self.backend;
        if !backend.offers(Optional::Locate) {
            return Err(Error::Attachment {
                volume: id.to_owned(),
                source: attachment::AttachmentError::Missing,
            });
        }
        let subject = format!("volume {id}");
        let located = backend
            .locate(id.to_owned(), key_values(volume_context), None)
            .await
            .map_err(backend_error(subject.clone()))?;
        attachment::validate(&located).map_err(|e| {
            rules::broken(
                backend.name(),
                &subject,
                format!("located an unusable attachment: {e}"),
            )
        })?;
        Ok(located)
    }

    /// Makes the volume appear at `target`: its node-local directory (noted in the volume's
    /// cleanup record first, so a deletion reaches this node), the filesystem staged at
    /// `staging`, or a block volume's device. Read-only when asked or when the mode only reads.
    #[allow(clippy::too_many_arguments)]
    pub async fn publish(
        &self,
        id: &str,
        target: &Path,
        staging: &str,
        capability: &Capability,
        readonly: bool,
        publish_context: &HashMap<String, String>,
        volume_context: &HashMap<String, String>,
    ) -> Result<(), Error> {
        let attachment = self.attachment(id, publish_context, volume_context).await?;
        let block = capability.is_block();
        let source = match attachment {
            Attachment::LocalDir if block => {
                return Err(Error::InvalidArgument(format!(
                    "volume {id}: a local-dir volume is a directory and cannot be published as a block device"
                )));
            }
            Attachment::LocalDir => Source::LocalDir(
                volume_context
                    .get(attachment::LOCAL_DIR_BYTES)
                    .and_then(|v| v.parse().ok()),
            ),
            device if block => Source::Device(device),
            _ => Source::Staged(validate::target_path("staging target path", staging)?.to_owned()),
        };
        let read_only = readonly || capability.access_mode.read_only();
        let _guard = lock_target(&self.locks, id, target)?;
        if matches!(source, Source::LocalDir(_)) {
            self.cleanup.register(id).await?;
        }
        let published = self.host.publish(id, target, source, read_only).await;
        self.events
            .note(id, "PublishFailed", published.map_err(node_err(id)))?;
        tracing::info!(volume = id, target = %target.display(), read_only, "volume published");
        Ok(())
    }

    /// Takes the volume away from `target`. Absent or already unmounted is success: kubelet
    /// retries until it hears OK.
    pub async fn unpublish(&self, id: &str, target: &Path) -> Result<(), Error> {
        let _guard = lock_target(&self.locks, id, target)?;
        let existed = self
            .host
            .unpublish(id, target)
            .await
            .map_err(node_err(id))?;
        tracing::info!(volume = id, target = %target.display(), existed, "volume unpublished");
        Ok(())
    }

    /// Usage and condition of the volume at `volume_path`: NOT_FOUND when it is not published
    /// there (a path that is not absolute and normal cannot be). The caller's deadline, when
    /// shorter, bounds the wait on a possibly stale mount, with a tenth to spare so the caller
    /// hears why rather than only its own timer.
    pub async fn stats(
        &self,
        id: &str,
        volume_path: &str,
        deadline: Option<Duration>,
    ) -> Result<NodeStats, Error> {
        let timeout = deadline.map_or(STATS_TIMEOUT, |d| (d * 9 / 10).min(STATS_TIMEOUT));
        let path = self.published_path(id, volume_path)?;
        self.host
            .stats(id, path, timeout)
            .await
            .map_err(node_err(id))?
            .ok_or_else(|| self.not_published(id, volume_path))
    }

    fn not_published(&self, id: &str, volume_path: &str) -> Error {
        Error::NotFound(format!(
            "volume {id} is not published at {volume_path:?} on node {}",
            self.node_id
        ))
    }

    /// The path a published volume is asked about: required, and NOT_FOUND when it is not an
    /// absolute, normal path (the volume cannot be published there).
    fn published_path<'a>(&self, id: &str, volume_path: &'a str) -> Result<&'a Path, Error> {
        if volume_path.is_empty() {
            return Err(validate::InvalidInput::Missing {
                what: "volume path",
            }
            .into());
        }
        validate::target_path("volume path", volume_path)
            .map_err(|_| self.not_published(id, volume_path))
    }

    /// Stages the volume at `staging`: nothing for a node-local directory (bound at publish);
    /// a device found, formatted when blank and mounted, or only found for a block volume.
    pub async fn stage(
        &self,
        id: &str,
        staging: &Path,
        capability: Capability,
        publish_context: &HashMap<String, String>,
        volume_context: &HashMap<String, String>,
    ) -> Result<(), Error> {
        let attachment = self.attachment(id, publish_context, volume_context).await?;
        if let Attachment::LocalDir = attachment {
            return Ok(());
        }
        let mount = match capability.access_type {
            AccessType::Mount(mount) => Some(mount),
            AccessType::Block => None,
        };
        // Checked again here: the context came back through the CO.
        let mkfs_args = match (&mount, volume_context.get(mkfs::KEY)) {
            (Some(m), Some(text)) => mkfs::parse(&m.fs_type, text)
                .map_err(|e| Error::InvalidArgument(format!("volume {id}: {e}")))?,
            _ => vec![],
        };
        let _guard = lock_target(&self.locks, id, staging)?;
        let staged = (self.host)
            .stage(id, staging, attachment, mount, mkfs_args)
            .await;
        let mounted = self
            .events
            .note(id, "StageFailed", staged.map_err(node_err(id)))?;
        tracing::info!(volume = id, staging = %staging.display(), mounted, "volume staged");
        Ok(())
    }

    pub async fn unstage(&self, id: &str, staging: &Path) -> Result<(), Error> {
        let _guard = lock_target(&self.locks, id, staging)?;
        self.host.unstage(id, staging).await.map_err(node_err(id))?;
        tracing::info!(volume = id, staging = %staging.display(), "volume unstaged");
        Ok(())
    }

    /// Grows the filesystem published at `path` (at `staging` when given: the staging mount is
    /// read-write, a published path may be a read-only bind). A block volume is its device:
    /// nothing to grow, and 0 is answered.
    pub async fn expand(
        &self,
        id: &str,
        volume_path: &str,
        staging: Option<&Path>,
        block: bool,
        required_bytes: u64,
    ) -> Result<u64, Error> {
        let path = self.published_path(id, volume_path)?;
        if block {
            return Ok(0);
        }
        let _guard = lock_target(&self.locks, id, path)?;
        let expanded = (self.host)
            .expand(id, staging.unwrap_or(path), required_bytes)
            .await;
        let bytes = self
            .events
            .note(id, "ExpandFailed", expanded.map_err(node_err(id)))?;
        tracing::info!(volume = id, path = %path.display(), bytes, "filesystem expanded");
        Ok(bytes)
    }

    /// Who this node is: its configured id, or what a backend that knows better (a cloud VM
    /// id, a zone) says; the backend's node attributes are kept for controller-publish.
    pub async fn info(&self, timeout: Option<Duration>) -> Result<NodeInfo, Error> {
        let mut info = NodeInfo {
            node_id: self.node_id.clone(),
            ..Default::default()
        };
        if !self.backend.offers(Optional::NodeIdentity) {
            return Ok(info);
        }
        let identity = self
            .backend
            .node_identity(timeout)
            .await
            .map_err(backend_error(format!("node {}", self.node_id)))?;
        if let Some(id) = identity.node_id {
            validate::node_id(&id).map_err(|e| {
                Error::Internal(format!(
                    "backend {} returned an unusable node id: {e}",
                    self.backend.name()
                ))
            })?;
            info.node_id = id;
        }
        info.max_volumes = identity.max_volumes;
        // Kept for controller-publish (an NVMe host NQN, a cloud VM id).
        let attributes = serde_json::to_vec(&identity.attributes).unwrap_or_default();
        if let Err(e) = self
            .shared
            .put_any(NODES_NAMESPACE, &info.node_id, &attributes)
        {
            tracing::warn!(node = %info.node_id, "cannot keep the node's attributes: {e}");
        }
        if !identity.topology.is_empty() {
            info.topology = Some(identity.topology);
        }
        Ok(info)
    }
}
