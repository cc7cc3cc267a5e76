//! Node-local cleanup: a deleted volume's directory disappears from every node that ever held
//! it, including nodes that are gone. The protocol is the public node-local-cache driver's, so
//! that either driver can take over volumes in flight:
//!
//! 1. NodePublish of a `local-dir` volume adds the node to the record's `nodes_with_volume`
//!    before the directory is made (a volume being deleted is refused instead).
//! 2. DeleteVolume sets `cleanup_requested_at` and returns (a host that is a node too removes
//!    its own directory first and may set it just after returning: [`deferred`]).
//! 3. Every node plugin removes its directory and adds itself to `nodes_completed` (or, when the
//!    removal fails for another reason than the directory still being mounted, `nodes_failed`).
//! 4. The controller marks listed nodes that no longer exist `nodes_decommissioned`, and removes
//!    the record once every listed node is accounted for (nodes never delete records).
//!
//! Records live in ConfigMaps with Kubernetes ([`crate::kube::records`]) and in the embedded
//! store without it. Every change is a compare-and-swap, retried with jittered backoff. A name
//! created again while its previous volume is still being removed is refused (UNAVAILABLE) until
//! the record is gone, so a directory of the new volume is never taken for the old one's.

mod book;
mod deferred;

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use book::Book;
use deferred::Deferred;

use crate::kube::KubeError;
use crate::node::NodeError;
use crate::node::local_dir::LocalDirs;
use crate::node::pool::NodeOps;
use crate::state::{StateStore, StoreError};

/// How long changes are gathered into one pass.
const DEBOUNCE: Duration = Duration::from_millis(100);
/// Attempts at one compare-and-swap change before giving up (the public driver's figure).
const ATTEMPTS: u32 = 15;
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// A deletion waiting this long on a node is stuck: a Warning Event on its record says so
/// (again after as long).
const STUCK: Duration = Duration::from_secs(600);

/// A volume's cleanup record: the `status` JSON of the public driver's ConfigMap. Fields this
/// version does not know are kept as they are.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub volume_id: String,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleanup_requested_at: Option<String>,
    #[serde(default)]
    pub nodes_with_volume: Vec<String>,
    #[serde(default)]
    pub nodes_completed: Vec<String>,
    #[serde(default)]
    pub nodes_failed: Vec<String>,
    #[serde(default)]
    pub nodes_decommissioned: Vec<String>,
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

impl Status {
    fn new(volume: &str) -> Self {
        Self {
            volume_id: volume.to_owned(),
            created_at: now(),
            ..Default::default()
        }
    }

    fn accounted(&self, node: &str) -> bool {
        [
            &self.nodes_completed,
            &self.nodes_failed,
            &self.nodes_decommissioned,
        ]
        .iter()
        .any(|list| list.iter().any(|n| n == node))
    }

    /// Listed nodes that have not yet reported.
    pub fn pending(&self) -> Vec<&str> {
        self.nodes_with_volume
            .iter()
            .filter(|n| !self.accounted(n))
            .map(String::as_str)
            .collect()
    }

    /// Cleanup was requested and every listed node is accounted for.
    pub fn complete(&self) -> bool {
        self.cleanup_requested_at.is_some() && self.pending().is_empty()
    }

    /// How long the record has waited since its cleanup was requested.
    pub fn waited(&self) -> Option<Duration> {
        let at = self.cleanup_requested_at.as_deref()?;
        let at = at.parse::<k8s_openapi::jiff::Timestamp>().ok()?;
        Duration::try_from(k8s_openapi::jiff::Timestamp::now().duration_since(at)).ok()
    }
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

/// Records the controller's view of the records for the metrics: how many are in use, how many
/// wait on nodes, and how long the oldest has waited.
fn observe(records: &[Status]) {
    let deleting = records
        .iter()
        .filter(|s| s.cleanup_requested_at.is_some())
        .count();
    let oldest = records
        .iter()
        .filter_map(Status::waited)
        .max()
        .unwrap_or_default();
    crate::metrics::cleanup_records(records.len() - deleting, deleting, oldest);
}

fn add(list: &mut Vec<String>, node: &str) -> bool {
    if list.iter().any(|n| n == node) {
        return false;
    }
    list.push(node.to_owned());
    true
}

#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    #[error(
        "volume {volume} is being deleted (its directory is still being removed from nodes: {pending})"
    )]
    Deleting { volume: String, pending: String },
    #[error("volume {volume} is being deleted (its cleanup request is still being recorded)")]
    Recording { volume: String },
    #[error(
        "the cleanup record of volume {volume} changed {ATTEMPTS} times under this host; try again"
    )]
    Contended { volume: String },
    #[error("the cleanup record of volume {volume} is not readable: {why}")]
    Malformed { volume: String, why: String },
    #[error("cleanup record of volume {volume}: {source}")]
    Cluster { volume: String, source: KubeError },
    #[error("cleanup record of volume {volume}: {source}")]
    Store { volume: String, source: StoreError },
}

/// What a change to a record does.
enum Change {
    Write(Status),
    Delete,
    Nothing,
}

/// One host's part in the protocol.
pub struct Cleanup {
    book: Book,
    node: String,
    /// Woken when this host requests a cleanup (standalone has no watch).
    wake: tokio::sync::Notify,
    /// Told when this host first writes a record: the loop starts then (or at once when the
    /// driver has records already), so a driver without node-local volumes never runs it.
    wanted: tokio::sync::Notify,
    /// With Kubernetes, in a host that is also a node: requests made after DeleteVolume answers.
    deferred: Option<Deferred>,
}

/// Removes what is left of this node's directory of a volume with a noted request.
async fn remove_left(volume: &str, dirs: LocalDirs, ops: NodeOps) -> Result<(), String> {
    crate::volume::validate::volume_id(volume).map_err(|e| e.to_string())?;
    let volume = volume.to_owned();
    ops.run(move || dirs.remove(&volume))
        .await
        .map(drop)
        .map_err(|e| format!("its directory remains ({e})"))
}

fn jitter(attempt: u32) -> Duration {
    let cap = (FIRST_BACKOFF * 2u32.saturating_pow(attempt)).min(MAX_BACKOFF);
    let random = RandomState::new().build_hasher().finish();
    cap.mul_f64((random % 1000) as f64 / 1000.0) + Duration::from_millis(1)
}

impl Cleanup {
    /// `notes`: this node's own store, where a host that is a node too (with Kubernetes) keeps
    /// the requests it makes after DeleteVolume answers ([`deferred`]).
    pub fn new(book: Book, node: &str, notes: Option<Arc<dyn StateStore>>) -> Self {
        let deferred = match &book {
            Book::Cluster(..) => notes.map(Deferred::new),
            Book::Embedded(_) => None,
        };
        Self {
            book,
            node: node.to_owned(),
            wake: tokio::sync::Notify::new(),
            wanted: tokio::sync::Notify::new(),
            deferred,
        }
    }

    /// Refuses a volume whose cleanup request is still to be made.
    fn check_not_recording(&self, volume: &str) -> Result<(), CleanupError> {
        match &self.deferred {
            Some(d) if d.is_pending(volume) => Err(CleanupError::Recording {
                volume: volume.to_owned(),
            }),
            _ => Ok(()),
        }
    }

    /// Applies `change` to the volume's record by compare-and-swap, reading again and retrying
    /// with jittered backoff when another writer came first. Returns the record as written.
    ///
    /// The first read is the watch's copy when there is one: a write based on it is checked by
    /// the compare-and-swap, and a decision to leave the record alone is made again on a fresh
    /// read, so a copy behind the API server costs a request, never a wrong answer.
    async fn update(
        &self,
        volume: &str,
        mut change: impl FnMut(Option<Status>) -> Result<Change, CleanupError>,
    ) -> Result<Option<Status>, CleanupError> {
        let mut fresh = false;
        for attempt in 0..ATTEMPTS {
            let (current, cached) = match self.book.cached(volume) {
                Some(read) if !fresh => (read?, true),
                _ => (self.book.get(volume).await?, false),
            };
            fresh = true;
            let (status, version) = match current {
                Some((s, v)) => (Some(s), Some(v)),
                None => (None, None),
            };
            let done = match change(status.clone())? {
                Change::Nothing if cached => continue,
                Change::Nothing => return Ok(status),
                Change::Write(new) => self
                    .book
                    .put(volume, &new, version.as_deref())
                    .await?
                    .map(|_| Some(new)),
                Change::Delete => match &version {
                    Some(v) => self.book.delete(volume, v).await?.then_some(None),
                    None => Some(None),
                },
            };
            if let Some(result) = done {
                return Ok(result);
            }
            tokio::time::sleep(jitter(attempt)).await;
        }
        Err(CleanupError::Contended {
            volume: volume.to_owned(),
        })
    }

    fn deleting(volume: &str, status: &Status) -> CleanupError {
        CleanupError::Deleting {
            volume: volume.to_owned(),
            pending: status.pending().join(", "),
        }
    }

    /// NodePublish: notes that this node holds the volume's directory, before it is made.
    pub async fn register(&self, volume: &str) -> Result<(), CleanupError> {
        self.check_not_recording(volume)?;
        self.wanted.notify_one();
        self.update(volume, |status| {
            let mut status = status.unwrap_or_else(|| Status::new(volume));
            if status.cleanup_requested_at.is_some() {
                return Err(Self::deleting(volume, &status));
            }
            Ok(if add(&mut status.nodes_with_volume, &self.node) {
                Change::Write(status)
            } else {
                Change::Nothing
            })
        })
        .await
        .map(drop)
    }

    /// CreateVolume: refuses while a volume of the same id is still being removed from nodes.
    /// With a cluster, the watch's copy answers once it has listed the records (this process's
    /// own deletion requests are in it at once; another's after the watch's lag, milliseconds):
    /// a create then costs no request. The watch runs once the driver has a record.
    pub async fn check_not_deleting(&self, volume: &str) -> Result<(), CleanupError> {
        self.check_not_recording(volume)?;
        let current = match self.book.cached(volume) {
            Some(read) => read?,
            None => self.book.get(volume).await?,
        };
        match current {
            Some((status, _)) if status.cleanup_requested_at.is_some() => {
                Err(Self::deleting(volume, &status))
            }
            _ => Ok(()),
        }
    }

    /// DeleteVolume: `removal` removes this host's own directory of the volume (refusing while
    /// it is mounted; true when there was one), then every other node that held the volume is
    /// asked to remove its own; nothing to ask when no node ever published it. `removed_here`:
    /// this host serves as a node, so its removal is its node's part. With Kubernetes in a host
    /// that is a node too, the request is noted on disk while the directory goes, and made
    /// after the call answers ([`deferred`]).
    pub async fn request<E: From<CleanupError>>(
        self: &Arc<Self>,
        volume: &str,
        removed_here: bool,
        removal: impl Future<Output = Result<bool, E>>,
    ) -> Result<bool, E> {
        let Some(deferred) = self.deferred.as_ref().filter(|_| removed_here) else {
            let removed = removal.await?;
            self.request_now(volume, removed_here).await?;
            return Ok(removed);
        };
        // The removal's thread starts first; the note's fsync runs meanwhile.
        let (removed, noted) = tokio::join!(biased; removal, async { deferred.note(volume) });
        let removed = match removed {
            Ok(removed) => removed,
            Err(e) => {
                // This node still holds the directory: no request, so no note of one.
                if matches!(noted, Ok(true)) {
                    deferred.done(volume);
                }
                return Err(e);
            }
        };
        if noted? {
            tokio::spawn(self.clone().make_deferred(volume.to_owned()));
        }
        Ok(removed)
    }

    /// Makes a noted request, retrying while the cluster cannot take it, then drops the note.
    async fn make_deferred(self: Arc<Self>, volume: String) {
        let mut attempt = 0;
        loop {
            match self.request_now(&volume, true).await {
                Ok(()) => break,
                // Corrupt or forged: no retry will read it; the audit shows the record.
                Err(e @ CleanupError::Malformed { .. }) => {
                    tracing::error!(volume, "cannot make the cleanup request: {e}");
                    break;
                }
                Err(e) => {
                    tracing::warn!(volume, "cleanup request not made yet, retrying: {e}");
                    tokio::time::sleep(jitter(attempt).max(FIRST_BACKOFF)).await;
                    attempt = (attempt + 1).min(ATTEMPTS);
                }
            }
        }
        if let Some(deferred) = &self.deferred {
            deferred.done(&volume);
        }
    }

    /// Makes the requests a previous run noted but did not make (before this host serves: until
    /// each is made, its volume counts as being deleted). A note is written while the directory
    /// goes, so the directory may remain: it is removed first. One that cannot be removed (still
    /// mounted) belongs to a DeleteVolume that never answered OK, which its caller retries: its
    /// note goes.
    pub fn resume(self: &Arc<Self>, (dirs, ops): (LocalDirs, NodeOps)) -> Result<(), CleanupError> {
        let Some(deferred) = &self.deferred else {
            return Ok(());
        };
        for volume in deferred.load()? {
            tracing::info!(volume, "making a cleanup request noted before a restart");
            let (this, dirs, ops) = (self.clone(), dirs.clone(), ops.clone());
            tokio::spawn(async move {
                match remove_left(&volume, dirs, ops).await {
                    Ok(()) => this.make_deferred(volume).await,
                    Err(e) => {
                        tracing::warn!(
                            volume,
                            "dropping a noted cleanup request: {e}; the DeleteVolume that noted it did not finish, and its caller retries it"
                        );
                        if let Some(deferred) = &this.deferred {
                            deferred.done(&volume);
                        }
                    }
                }
            });
        }
        Ok(())
    }

    async fn request_now(&self, volume: &str, removed_here: bool) -> Result<(), CleanupError> {
        let written = self
            .update(volume, |status| {
                let Some(mut s) = status else {
                    return Ok(Change::Nothing);
                };
                let mut changed = s.cleanup_requested_at.is_none();
                s.cleanup_requested_at.get_or_insert_with(now);
                if removed_here && s.nodes_with_volume.contains(&self.node) {
                    changed |= add(&mut s.nodes_completed, &self.node);
                }
                Ok(if s.complete() {
                    Change::Delete
                } else if changed {
                    Change::Write(s)
                } else {
                    Change::Nothing
                })
            })
            .await?;
        if written.is_some() {
            self.wanted.notify_one();
        }
        // Standalone there is no watch: this host's own node part is woken directly.
        if written.is_some_and(|s| !s.complete()) {
            // Kept as a permit if the loop is busy with a pass right now.
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Removes this node's directories of volumes being deleted and reports each; removes a
    /// record once it is complete.
    pub async fn node_pass(&self, dirs: &LocalDirs, ops: &NodeOps) -> Result<(), CleanupError> {
        for status in self.book.list().await? {
            if status.cleanup_requested_at.is_none() || status.accounted(&self.node) {
                continue;
            }
            let volume = status.volume_id.clone();
            // The id names a directory: only a valid one reaches the filesystem.
            if let Err(e) = crate::volume::validate::volume_id(&volume) {
                tracing::warn!("skipping a cleanup record: {e}");
                continue;
            }
            let (d, v) = (dirs.clone(), volume.clone());
            let removed = ops.run(move || d.remove(&v)).await;
            let report = match removed {
                Ok(_) => true,
                // Still mounted here: try again on the next pass.
                Err(NodeError::InUse { .. }) => {
                    tracing::info!(volume, "node-local directory still mounted; cleanup waits");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(volume, "cannot remove the node-local directory: {e}");
                    false
                }
            };
            if let Err(e) = self.report(&volume, report).await {
                tracing::warn!(volume, "cannot report node-local cleanup: {e}");
            }
        }
        Ok(())
    }

    /// Reports that this node removed its directory of a volume being deleted (or failed to).
    /// Nothing when this node is not listed or no cleanup was requested.
    async fn report(&self, volume: &str, completed: bool) -> Result<(), CleanupError> {
        let mut reported = false;
        self.update(volume, |status| {
            let Some(mut s) = status else {
                return Ok(Change::Nothing);
            };
            if s.cleanup_requested_at.is_none() || !s.nodes_with_volume.contains(&self.node) {
                return Ok(Change::Nothing);
            }
            let list = if completed {
                &mut s.nodes_completed
            } else {
                &mut s.nodes_failed
            };
            reported = add(list, &self.node);
            // A complete record is the controller's to remove: nodes never delete.
            Ok(if reported {
                Change::Write(s)
            } else {
                Change::Nothing
            })
        })
        .await?;
        if reported {
            tracing::info!(volume, node = %self.node, completed, "node-local cleanup reported");
        }
        Ok(())
    }

    /// Marks listed nodes that the cluster no longer has as decommissioned, and removes complete
    /// records. Without Kubernetes there is no other node to ask about.
    pub async fn controller_pass(&self) -> Result<(), CleanupError> {
        let records = self.book.list().await?;
        observe(&records);
        // One LIST of the nodes for the pass (when anything waits on a node); a node it lacks
        // is asked about on its own before it is decommissioned.
        let cluster = match &self.book {
            Book::Cluster(cluster, _) => Some(cluster),
            Book::Embedded(_) => None,
        };
        let listed = match cluster {
            Some(cluster) if records.iter().any(|s| s.cleanup_requested_at.is_some()) => Some(
                cluster
                    .node_names()
                    .await
                    .map_err(|source| CleanupError::Cluster {
                        volume: "(all)".into(),
                        source,
                    })?,
            ),
            _ => None,
        };
        for status in records {
            if status.cleanup_requested_at.is_none() {
                continue;
            }
            let volume = status.volume_id.clone();
            if let Some(cluster) = cluster
                && let Some(waited) = status.waited()
                && waited >= STUCK
            {
                let message = format!(
                    "the node-local directory of deleted volume {volume} has waited {} min for node(s) {} to remove it (is the node plugin running there?)",
                    waited.as_secs() / 60,
                    status.pending().join(", ")
                );
                cluster
                    .warn_record(&volume, "CleanupStuck", &message, STUCK)
                    .await;
            }
            let mut gone = Vec::new();
            if let Some(cluster) = cluster {
                for node in status.pending() {
                    if listed.as_ref().is_some_and(|names| names.contains(node)) {
                        continue;
                    }
                    match cluster.node_exists(node).await {
                        Ok(false) => gone.push(node.to_owned()),
                        Ok(true) => {}
                        Err(source) => return Err(CleanupError::Cluster { volume, source }),
                    }
                }
            }
            if gone.is_empty() && !status.complete() {
                continue;
            }
            self.update(&volume, |status| {
                let Some(mut s) = status else {
                    return Ok(Change::Nothing);
                };
                for node in &gone {
                    if s.nodes_with_volume.contains(node) && !s.accounted(node) {
                        add(&mut s.nodes_decommissioned, node);
                    }
                }
                Ok(if s.complete() {
                    Change::Delete
                } else {
                    Change::Write(s)
                })
            })
            .await?;
            tracing::info!(volume, decommissioned = ?gone, "node-local cleanup advanced");
        }
        Ok(())
    }

    /// Waits until the driver has a record: one from before this process (a single LIST), or
    /// the first this host writes. Until then there is nothing to clean up and nothing to
    /// watch.
    async fn until_wanted(&self) {
        match self.book.list().await {
            Ok(records) if records.is_empty() => self.wanted.notified().await,
            Ok(_) => {}
            // Unknown: better to run (and retry the reads) than to miss a cleanup.
            Err(e) => tracing::warn!("node-local cleanup: listing records: {e}"),
        }
    }

    /// Runs the node's part (`dirs`) and/or the controller's (`controller`) until the process
    /// ends, once the driver has records (`until_wanted`): on every change the cluster
    /// reports, on this host's own requests, and every `interval` (which also notices nodes
    /// that were deleted).
    pub async fn run(
        self: Arc<Self>,
        node: Option<(LocalDirs, NodeOps)>,
        controller: bool,
        interval: Duration,
    ) {
        self.until_wanted().await;
        tracing::info!("node-local cleanup running");
        let mut changes: std::pin::Pin<Box<dyn futures::Stream<Item = ()> + Send>> = match &self
            .book
        {
            Book::Cluster(cluster, cache) => Box::pin(cluster.clone().watch_records(cache.clone())),
            Book::Embedded(_) => Box::pin(futures::stream::pending()),
        };
        loop {
            if let Some((dirs, ops)) = &node
                && let Err(e) = self.node_pass(dirs, ops).await
            {
                tracing::warn!("node-local cleanup pass: {e}");
            }
            if controller && let Err(e) = self.controller_pass().await {
                tracing::warn!("node-local cleanup check of nodes: {e}");
            }
            use futures::StreamExt;
            tokio::select! {
                _ = changes.next() => {
                    // A burst of changes (a volume deleted on many nodes) is one pass: what
                    // arrives within a moment joins it.
                    let debounce = tokio::time::sleep(DEBOUNCE);
                    tokio::pin!(debounce);
                    loop {
                        tokio::select! {
                            _ = changes.next() => {}
                            () = &mut debounce => break,
                        }
                    }
                }
                () = self.wake.notified() => {}
                () = tokio::time::sleep(interval) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_the_public_drivers_status_keeping_unknown_fields() {
        let text = r#"{"volume_id":"nlc-1","created_at":"2026-11-01T10:00:00Z",
            "cleanup_requested_at":"2026-11-02T10:00:00Z","nodes_with_volume":["a","b","c"],
            "nodes_completed":["a"],"nodes_failed":[],"nodes_decommissioned":["c"],
            "future_field":{"x":1}}"#;
        let status: Status = serde_json::from_str(text).unwrap();
        assert_eq!(status.pending(), ["b"]);
        assert!(!status.complete());
        let back: serde_json::Value = serde_json::to_value(&status).unwrap();
        assert_eq!(back["future_field"], serde_json::json!({"x": 1}));
        assert_eq!(back["nodes_decommissioned"], serde_json::json!(["c"]));
        let mut done = status;
        add(&mut done.nodes_failed, "b");
        assert!(done.complete());
    }

    #[test]
    fn a_record_without_a_request_is_never_complete() {
        let mut status = Status::new("v");
        assert!(!status.complete());
        status.cleanup_requested_at = Some(now());
        assert!(status.complete(), "nobody held it: nothing to wait for");
    }

    #[test]
    fn backoff_grows_to_its_cap() {
        for attempt in 0..ATTEMPTS {
            let cap = (FIRST_BACKOFF * 2u32.saturating_pow(attempt)).min(MAX_BACKOFF);
            assert!(jitter(attempt) <= cap + Duration::from_millis(1));
        }
    }
}
