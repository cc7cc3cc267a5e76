//! The controller side: volumes created, deleted, validated, expanded, listed and described,
//! with the host's record and rules around every backend call. Publishing is in `attach.rs`,
//! snapshots in `snapshots.rs`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use super::{Error, backend_error, is_not_found, lock, rules, store_error};
use crate::cleanup::Cleanup;
use crate::fencing::Fencing;
use crate::kube::Cluster;
use crate::runtime::{Backend, Optional};
use crate::state::StateStore;
use crate::volume::locks::OperationLocks;
use crate::volume::records::{Records, RequestShape, VolumeRecord};
use crate::volume::tokens::ListTokens;
use crate::volume::types::{
    Attachment, Capability, Capacity, CapacityRange, CreateRequest, ExpandResult, KeyValues,
    Topology, Validation, Volume, VolumeStatus,
};
use crate::volume::{mkfs, validate};

/// What the controller side is made of.
pub struct ControllerParts {
    pub backend: Arc<Backend>,
    /// This host's node part, whose directory of a deleted volume goes with it.
    pub node: Arc<crate::node::Host>,
    /// Whether this process serves the node side too (it then removes its own directory).
    pub serves_node: bool,
    /// State every process of the driver shares: the volume records, what nodes said.
    pub shared: Arc<dyn StateStore>,
    pub records: Records,
    pub fencing: Fencing,
    pub cleanup: Arc<Cleanup>,
    /// The cluster, when there is one (Kubernetes is optional).
    pub cluster: Option<Arc<Cluster>>,
}

pub struct Controller {
    pub(super) parts: ControllerParts,
    pub(super) locks: OperationLocks,
    pub(super) tokens: ListTokens,
    pub(super) events: super::Events,
}

impl Controller {
    pub fn new(parts: ControllerParts) -> Self {
        Self {
            events: super::Events::new(parts.cluster.clone()),
            parts,
            locks: OperationLocks::default(),
            tokens: ListTokens::default(),
        }
    }

    pub fn backend(&self) -> &Backend {
        &self.parts.backend
    }

    /// Waits (at most `limit`) until the volume records' queued writes are in the store.
    pub fn settle(&self, limit: Duration) -> bool {
        self.parts.records.settle(limit)
    }

    /// Which nodes each volume is published to, and who may join.
    pub fn fencing(&self) -> &Fencing {
        &self.parts.fencing
    }

    /// Refuses an operation whose interface the backend does not offer (UNIMPLEMENTED).
    pub fn require(&self, interface: Optional, rpc: &str) -> Result<(), Error> {
        let backend = self.backend();
        if backend.offers(interface) {
            Ok(())
        } else {
            Err(Error::Unimplemented(format!(
                "{rpc} is not offered by backend {} (it does not export modcsi:backend/{})",
                backend.name(),
                interface.name()
            )))
        }
    }

    /// ABORTED for a list token this host did not hand out.
    pub fn check_token(&self, list: &'static str, token: &str) -> Result<(), Error> {
        if self.tokens.known(list, token) {
            Ok(())
        } else {
            Err(Error::Pending(format!(
                "list {list}: starting token {token:?} is not one this host handed out (list again from the start)"
            )))
        }
    }

    /// Creates a volume, or answers the one already created under the request's name.
    /// `mkfs_options` is the host's own parameter, checked now for every filesystem asked for
    /// and kept in the volume context for staging.
    pub async fn create_volume(
        &self,
        create: CreateRequest,
        mkfs_options: Option<&str>,
        timeout: Option<Duration>,
    ) -> Result<VolumeRecord, Error> {
        let name = create.name.clone();
        let subject = format!("create volume {name:?}");
        if let Some(text) = mkfs_options {
            for capability in &create.capabilities {
                if let crate::volume::types::AccessType::Mount(m) = &capability.access_type {
                    mkfs::parse(&m.fs_type, text)
                        .map_err(|e| Error::InvalidArgument(format!("{subject}: {e}")))?;
                }
            }
        }
        let _guard = lock(&self.locks, &format!("name/{name}"), &subject)?;

        // The record is a check; the backend (idempotent by contract) gives the answer.
        let parts = &self.parts;
        let shape = RequestShape::of(&create);
        let existing = parts
            .records
            .by_name(&name)
            .map_err(store_error(&subject))?;
        if let Some(record) = &existing
            && let Some(why) = record.mismatch(&shape)
        {
            return Err(Error::AlreadyExists(format!(
                "{subject}: volume {} already exists with this name, but {why}",
                record.id
            )));
        }

        let range = create.capacity;
        let volume = parts
            .backend
            .create_volume(create, timeout)
            .await
            .map_err(backend_error(subject.clone()))?;
        let backend = parts.backend.name();
        rules::returned_id(backend, &subject, "volume id", &volume.id)?;
        rules::capacity_in_range(backend, &subject, volume.capacity_bytes, &range)?;
        let mut context = rules::volume_context(backend, &subject, &volume)?;
        if let Some(text) = mkfs_options {
            context.insert(mkfs::KEY.to_owned(), text.to_owned());
        }
        // The same id again while its previous volume's directories are still being removed
        // from nodes would have them removed under the new volume.
        if matches!(volume.attachment, Some(Attachment::LocalDir)) {
            parts.cleanup.check_not_deleting(&volume.id).await?;
        }
        let mut record = VolumeRecord::new(
            &name,
            shape,
            &volume,
            &context.into_iter().collect::<BTreeMap<_, _>>(),
        );
        // A volume is as old as its first record.
        if let Some(first) = &existing {
            record.created_unix = first.created_unix;
        }
        // A repeated CreateVolume with the same answer writes nothing.
        if existing.as_ref() == Some(&record) {
            tracing::debug!(volume = %volume.id, name, "volume created already");
            return Ok(record);
        }
        parts.records.insert(record.clone());
        tracing::info!(volume = %volume.id, name, "volume created");
        Ok(record)
    }

    /// Deletes a volume: refused while this node still publishes its directory; the directory
    /// goes once the backend agreed, and every other node that has one is asked to remove it.
    /// A volume the backend no longer knows is deleted.
    pub async fn delete_volume(
        &self,
        id: &str,
        secrets: KeyValues,
        timeout: Option<Duration>,
    ) -> Result<(), Error> {
        let subject = format!("volume {id}");
        let _guard = lock(&self.locks, id, &subject)?;
        let parts = &self.parts;
        // Still attached to a node (fencing's record): a node may be writing to it.
        let nodes = parts.fencing.nodes(id)?;
        if !nodes.is_empty() {
            return Err(Error::FailedPrecondition(format!(
                "{subject} is still published to node(s) {}; unpublish it first",
                nodes.join(", ")
            )));
        }
        let node_err = |source| Error::Node {
            volume: id.to_owned(),
            source,
        };
        parts
            .node
            .check_local_dir_unused(id)
            .await
            .map_err(node_err)?;
        let deleted = match parts
            .backend
            .delete_volume(id.to_owned(), secrets, timeout)
            .await
        {
            Ok(()) => true,
            // Deleted already (a repeated DeleteVolume), or never the backend's.
            Err(e) if is_not_found(&e) => false,
            Err(e) => return Err(backend_error(subject)(e)),
        };
        // This node's directory goes (when it serves as a node too), and every other node that
        // held one is asked to remove its own.
        let removal = async { parts.node.remove_local_dir(id).await.map_err(node_err) };
        let removed = parts
            .cleanup
            .request(id, parts.serves_node, removal)
            .await?;
        parts.records.remove(id);
        if deleted || removed {
            tracing::info!(volume = id, local_dir_removed = removed, "volume deleted");
        } else {
            tracing::debug!(volume = id, "volume already deleted");
        }
        Ok(())
    }

    /// Whether the backend can serve `capabilities` for the volume. A volume neither recorded
    /// nor known to the backend's get-volume is NOT_FOUND; what the backend does not offer at
    /// all is answered without asking it.
    pub async fn validate_capabilities(
        &self,
        id: &str,
        capabilities: Vec<Capability>,
        context: KeyValues,
        parameters: KeyValues,
        secrets: KeyValues,
        timeout: Option<Duration>,
    ) -> Result<Validation, Error> {
        let backend = self.backend();
        let subject = format!("volume {id}");
        if !self.parts.records.knows_id(id) && backend.offers(Optional::GetVolume) {
            match backend.get_volume(id.to_owned(), timeout).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {
                    return Err(Error::NotFound(format!(
                        "volume {id} does not exist in backend {}",
                        backend.name()
                    )));
                }
                Err(e) => return Err(backend_error(subject)(e)),
            }
        }
        if let Some(Err(Error::InvalidArgument(message))) = capabilities
            .iter()
            .map(|c| rules::supported(c, backend.info()))
            .find(Result::is_err)
        {
            return Ok(Validation {
                confirmed: false,
                message,
            });
        }
        backend
            .validate_capabilities(
                id.to_owned(),
                capabilities,
                context,
                parameters,
                secrets,
                timeout,
            )
            .await
            .map_err(backend_error(subject))
    }

    pub async fn expand_volume(
        &self,
        id: &str,
        capacity: CapacityRange,
        capability: Option<Capability>,
        secrets: KeyValues,
        timeout: Option<Duration>,
    ) -> Result<ExpandResult, Error> {
        let subject = format!("volume {id}");
        let _guard = lock(&self.locks, id, &subject)?;
        let backend = self.backend();
        let expanded = backend
            .expand_volume(id.to_owned(), capacity, capability, secrets, timeout)
            .await
            .map_err(backend_error(subject.clone()))?;
        rules::capacity_in_range(backend.name(), &subject, expanded.capacity_bytes, &capacity)?;
        tracing::info!(
            volume = id,
            capacity = expanded.capacity_bytes,
            "volume expanded"
        );
        Ok(expanded)
    }

    pub async fn get_capacity(
        &self,
        parameters: KeyValues,
        capabilities: Vec<Capability>,
        topology: Option<Topology>,
        timeout: Option<Duration>,
    ) -> Result<Capacity, Error> {
        self.backend()
            .get_capacity(parameters, capabilities, topology, timeout)
            .await
            .map_err(backend_error("capacity"))
    }

    /// One page of the backend's volumes, each with the context the CO gets (its attachment
    /// under the host's keys), and the token of the next page.
    #[allow(clippy::type_complexity)]
    pub async fn list_volumes(
        &self,
        max_entries: u32,
        starting_token: String,
        timeout: Option<Duration>,
    ) -> Result<(Vec<(Volume, HashMap<String, String>)>, String), Error> {
        self.check_token("volumes", &starting_token)?;
        let subject = "list volumes";
        let backend = self.backend();
        let page = backend
            .list_volumes(max_entries, starting_token, timeout)
            .await
            .map_err(backend_error(subject))?;
        let name = backend.name();
        rules::page_len(name, subject, page.volumes.len(), max_entries)?;
        let mut entries = Vec::with_capacity(page.volumes.len());
        for volume in page.volumes {
            rules::returned_id(name, subject, "volume id", &volume.id)?;
            let subject = format!("list volumes: volume {}", volume.id);
            let context = rules::volume_context(name, &subject, &volume)?;
            entries.push((volume, context));
        }
        self.tokens.issue("volumes", &page.next_token);
        Ok((entries, page.next_token))
    }

    /// The backend's view of one volume; the node ids it names are checked.
    pub async fn get_volume(
        &self,
        id: &str,
        timeout: Option<Duration>,
    ) -> Result<VolumeStatus, Error> {
        let subject = format!("volume {id}");
        let backend = self.backend();
        let status = backend
            .get_volume(id.to_owned(), timeout)
            .await
            .map_err(backend_error(subject.clone()))?;
        for node in &status.published_nodes {
            validate::node_id(node).map_err(|e| {
                rules::broken(
                    backend.name(),
                    &subject,
                    format!("returned an unusable node id: {e}"),
                )
            })?;
        }
        Ok(status)
    }
}
