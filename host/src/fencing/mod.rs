//! ReadWriteOnce fencing, once in the host for every backend that attaches volumes to nodes
//! (exports `publish`): which nodes a volume is published to, and whether another may join.
//!
//! - A single-node access mode holds the volume on one node: the same node again is the same
//!   answer (idempotent), another node is FAILED_PRECONDITION naming the holder.
//! - The same node with another capability or read-only flag is ALREADY_EXISTS.
//! - MULTI_NODE_MULTI_WRITER on a block volume is live migration: a second node may join for a
//!   window (the volume context's `migrationTimeoutSeconds`, default 5 minutes) after it first
//!   attached; a third node, or the second once the window has passed with both still attached,
//!   is refused.
//! - Unpublish is always idempotent; an empty node id detaches every node.
//!
//! - A holder keeps the volume until its unpublish succeeded. Only an operator's non-zero
//!   `--detach-grace` (storage that fences writers itself) lets a holder whose detach began
//!   less than that ago be passed over.
//! - With Kubernetes: a node the cluster does not have is NOT_FOUND; a holder the cluster no
//!   longer has is cleared (self-healing) and the publish proceeds; a refusal is also a Warning
//!   Event on the volume's claim; when the API cannot answer, the publish is refused (fail
//!   closed). A reconciler clears attachments of deleted nodes in the background.
//!
//! Decisions on one volume are serialised (callers wait their turn rather than get ABORTED, so
//! that of many concurrent publishes exactly one wins and the others hear why), and the record
//! is written to the state store before the backend is asked to publish. Standalone, that store
//! is the embedded one, so a restarted host fences exactly as before; with Kubernetes it is in
//! memory, rebuilt at start from this driver's VolumeAttachments (the source of truth).
//! Multi-node reader modes and filesystem multi-writers are not fenced: the backend's
//! declaration governs them.

mod cluster;
mod decide;
mod migrations;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use cluster::{Nodes, Standalone};
pub use decide::{Admitted, Request};
pub use migrations::Migrations;

use crate::kube::{KubeError, Seen};
use crate::state::{StateStore, StoreError};
use decide::{Attached, Record};

const NAMESPACE: &str = "host/attachments";
/// How long a second node may share a multi-writer block volume (live migration).
pub const DEFAULT_MIGRATION_WINDOW: Duration = Duration::from_secs(300);
/// The volume context key (the public RDS driver's) that sets the window, in seconds.
pub const MIGRATION_KEY: &str = "migrationTimeoutSeconds";
/// How long a holder whose detach has begun may be passed over by another node: not at all,
/// by default (a failed or unfinished unpublish keeps the holder), since nothing else stops a
/// second writer where no attach-detach controller runs (Nomad, standalone).
pub const DEFAULT_DETACH_GRACE: Duration = Duration::ZERO;

#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    #[error(
        "volume {volume} is attached to node {holder}; it cannot also be published to {node} ({why})"
    )]
    Held {
        volume: String,
        node: String,
        holder: String,
        why: &'static str,
    },
    #[error("volume {volume} is already published to node {node} with {what}")]
    Incompatible {
        volume: String,
        node: String,
        what: String,
    },
    #[error("cannot keep the attachment record of volume {volume}: {source}")]
    Store { volume: String, source: StoreError },
    #[error("the attachment record of volume {volume} is unreadable ({why}); refusing to decide")]
    Unreadable { volume: String, why: String },
    #[error("volume {volume} cannot be published to node {node}: the cluster has no such node")]
    UnknownNode { volume: String, node: String },
    #[error(
        "volume {volume}: cannot tell whether node {node} may have it, so it may not: {source}"
    )]
    Cluster {
        volume: String,
        node: String,
        source: KubeError,
    },
}

/// An attachment the cluster shows, which does not tell the capability or read-only flag.
fn rebuilt(s: Seen) -> Attached {
    Attached {
        node: s.node,
        readonly: false,
        capability: String::new(),
        exclusive: s.exclusive,
        since_unix_ms: s.since_ms,
        rebuilt: true,
        in_cluster: true,
        detaching_since_unix_ms: s.detaching_since_ms,
    }
}

pub struct Fencing {
    state: Arc<dyn StateStore>,
    turns: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    nodes: Arc<dyn Nodes>,
    detach_grace: Duration,
    pub migrations: Migrations,
}

/// One volume's turn: decisions on it are made one at a time while this is held.
pub struct Turn {
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Fencing {
    /// Fencing kept in `state`, asking `nodes` whether nodes exist.
    pub fn new(state: Arc<dyn StateStore>, nodes: Arc<dyn Nodes>, detach_grace: Duration) -> Self {
        Self {
            state,
            turns: Mutex::default(),
            nodes,
            detach_grace,
            migrations: Migrations::default(),
        }
    }

    /// Replaces the record with what the cluster's VolumeAttachments say: per volume, the nodes
    /// the attacher confirmed; a volume with none confirmed but one still being attached (a
    /// publish the attacher had not yet confirmed when this host stopped) is held by that one.
    /// Returns the number of volumes attached.
    pub fn rebuild(&self, seen: Vec<Seen>) -> Result<usize, FenceError> {
        let mut by_volume: HashMap<String, Vec<Seen>> = HashMap::new();
        for s in seen {
            by_volume.entry(s.volume.clone()).or_default().push(s);
        }
        let volumes = by_volume.len();
        for (volume, mut seen) in by_volume {
            seen.sort_by_key(|s| s.since_ms);
            let holders: Vec<Seen> = if seen.iter().any(|s| s.attached) {
                seen.into_iter().filter(|s| s.attached).collect()
            } else {
                seen.into_iter().take(1).collect()
            };
            let record = Record {
                nodes: holders.into_iter().map(rebuilt).collect(),
            };
            let (_, version) = self.load(&volume)?;
            self.save(&volume, &record, version)?;
        }
        Ok(volumes)
    }

    /// Waits for the volume's turn.
    pub async fn turn(&self, volume: &str) -> Turn {
        let lock = {
            let mut turns = self.turns.lock().unwrap_or_else(|e| e.into_inner());
            // Volumes nobody waits for any more leave the map.
            turns.retain(|_, l| Arc::strong_count(l) > 1);
            turns.entry(volume.to_owned()).or_default().clone()
        };
        Turn {
            _guard: lock.lock_owned().await,
        }
    }

    fn load(&self, volume: &str) -> Result<(Record, Option<u64>), FenceError> {
        let store_err = |source| FenceError::Store {
            volume: volume.to_owned(),
            source,
        };
        Ok(
            match self.state.get(NAMESPACE, volume).map_err(store_err)? {
                None => (Record::default(), None),
                // An unreadable record is not "no holders": it refuses (fail closed).
                Some(e) => (
                    serde_json::from_slice(&e.value).map_err(|e| FenceError::Unreadable {
                        volume: volume.to_owned(),
                        why: e.to_string(),
                    })?,
                    Some(e.version),
                ),
            },
        )
    }

    fn save(&self, volume: &str, record: &Record, version: Option<u64>) -> Result<(), FenceError> {
        let store_err = |source| FenceError::Store {
            volume: volume.to_owned(),
            source,
        };
        if record.nodes.is_empty() {
            if version.is_some() {
                self.state
                    .delete(NAMESPACE, volume, version)
                    .map_err(store_err)?;
            }
            return Ok(());
        }
        let value = serde_json::to_vec(record).expect("an attachment record serialises");
        self.state
            .put(NAMESPACE, volume, &value, version)
            .map(drop)
            .map_err(store_err)
    }

    fn cluster_error(request: &Request<'_>, node: &str) -> impl FnOnce(KubeError) -> FenceError {
        let (volume, node) = (request.volume.to_owned(), node.to_owned());
        move |source| FenceError::Cluster {
            volume,
            node,
            source,
        }
    }

    /// Decides whether `request.node` may have the volume, and records it if so. Call within
    /// the volume's [`Turn`]. A node the cluster does not have is refused; a holder it no
    /// longer has is cleared first; any question it cannot answer refuses (fail closed).
    pub async fn admit(&self, turn: &Turn, request: &Request<'_>) -> Result<Admitted, FenceError> {
        if !self
            .nodes
            .exists(request.node)
            .await
            .map_err(Self::cluster_error(request, request.node))?
        {
            return Err(FenceError::UnknownNode {
                volume: request.volume.to_owned(),
                node: request.node.to_owned(),
            });
        }
        loop {
            match self.decide(turn, request) {
                Err(FenceError::Held { holder, .. })
                    if !self
                        .nodes
                        .exists(&holder)
                        .await
                        .map_err(Self::cluster_error(request, &holder))? =>
                {
                    tracing::warn!(
                        volume = request.volume,
                        node = holder,
                        "the node holding the volume no longer exists: clearing its attachment"
                    );
                    self.forget(turn, request.volume, Some(&holder))?;
                }
                Err(held @ FenceError::Held { .. }) => {
                    self.nodes
                        .refused(request.volume, request.node, held.to_string());
                    return Err(held);
                }
                other => return other,
            }
        }
    }

    /// Follows a change to one of the driver's VolumeAttachments (made by any controller
    /// replica's publish): a confirmed attachment joins the record if missing; a deleted one,
    /// which the attacher removes only once the volume is detached, takes the node's
    /// attachment with it, unless that was made after the deletion was asked for (a publish
    /// to the same node again, decided before this watch caught up).
    pub async fn observe(&self, seen: Seen, deleted: bool) -> Result<(), FenceError> {
        let turn = self.turn(&seen.volume).await;
        if deleted {
            let asked = seen.detaching_since_ms.unwrap_or(u64::MAX);
            return self.forget_where(&turn, &seen.volume, |a| {
                a.node == seen.node && a.since_unix_ms <= asked
            });
        }
        if !seen.attached {
            return Ok(());
        }
        let (mut record, version) = self.load(&seen.volume)?;
        let volume = seen.volume.clone();
        match record.nodes.iter_mut().find(|a| a.node == seen.node) {
            Some(known) if known.in_cluster => return Ok(()),
            Some(known) => known.in_cluster = true,
            None => record.nodes.push(rebuilt(seen)),
        }
        self.save(&volume, &record, version)
    }

    /// Follows a relist of the driver's VolumeAttachments (the watch started or broke and
    /// listed again): an attachment the cluster had shown, older than the relist, that it no
    /// longer shows was deleted while the watch was away, and goes. One it never showed (a
    /// publish no VolumeAttachment stands for) stays: forgetting it would let a second node in.
    pub async fn observe_relist(
        &self,
        present: &[(String, String)],
        started_ms: u64,
    ) -> Result<usize, FenceError> {
        let mut gone = 0;
        for volume in self.volumes()? {
            let turn = self.turn(&volume).await;
            let missing = |a: &Attached| {
                a.in_cluster
                    && a.since_unix_ms <= started_ms
                    && !present.iter().any(|(v, n)| *v == volume && *n == a.node)
            };
            let before = self.nodes(&volume)?.len();
            self.forget_where(&turn, &volume, missing)?;
            gone += before - self.nodes(&volume)?.len();
        }
        Ok(gone)
    }

    /// Every volume with an attachment record.
    fn volumes(&self) -> Result<Vec<String>, FenceError> {
        self.state
            .keys(NAMESPACE)
            .map_err(|source| FenceError::Store {
                volume: "(all)".into(),
                source,
            })
    }

    /// The rules (`decide.rs`) on the volume's record, saved when they change it.
    fn decide(&self, _turn: &Turn, request: &Request<'_>) -> Result<Admitted, FenceError> {
        let (mut record, version) = self.load(request.volume)?;
        let decided = decide::decide(&mut record, request, now_ms(), self.detach_grace);
        crate::metrics::fencing_decision(match &decided {
            Ok(v) if v.admitted == Admitted::New => "admitted",
            Ok(_) => "again",
            Err(_) => "refused",
        });
        match decided {
            Ok(verdict) => {
                if verdict.migration_started {
                    self.migrations.started();
                }
                if verdict.changed {
                    self.save(request.volume, &record, version)?;
                }
                Ok(verdict.admitted)
            }
            Err(e) => {
                if matches!(e, FenceError::Held { why, .. } if why == decide::WINDOW_PASSED) {
                    self.migrations.timed_out();
                }
                Err(e)
            }
        }
    }

    /// Notes that the volume's detach from `node` (every node when `None`) has begun, so that
    /// a failed detach hands over within the grace period. Idempotent.
    pub fn begin_detach(
        &self,
        _turn: &Turn,
        volume: &str,
        node: Option<&str>,
    ) -> Result<(), FenceError> {
        let (mut record, version) = self.load(volume)?;
        let mut changed = false;
        for a in &mut record.nodes {
            if node.is_none_or(|n| a.node == n) && a.detaching_since_unix_ms.is_none() {
                a.detaching_since_unix_ms = Some(now_ms());
                changed = true;
            }
        }
        if changed {
            self.save(volume, &record, version)?;
        }
        Ok(())
    }

    /// Removes the volume's attachment to `node` (every node when `None`). Idempotent.
    pub fn forget(&self, turn: &Turn, volume: &str, node: Option<&str>) -> Result<(), FenceError> {
        self.forget_where(turn, volume, |a| node.is_none_or(|n| a.node == n))
    }

    /// Removes the volume's attachments that `gone` picks.
    fn forget_where(
        &self,
        _turn: &Turn,
        volume: &str,
        gone: impl Fn(&Attached) -> bool,
    ) -> Result<(), FenceError> {
        let (mut record, version) = self.load(volume)?;
        let before = record.nodes.len();
        let second_since = record.nodes.get(1).map(|a| a.since_unix_ms);
        record.nodes.retain(|a| !gone(a));
        if record.nodes.len() == before {
            return Ok(());
        }
        self.save(volume, &record, version)?;
        // One of a live migration's two nodes left: the migration is over.
        if let (2, 1, Some(since)) = (before, record.nodes.len(), second_since)
            && !record.nodes[0].exclusive
        {
            self.migrations
                .completed(Duration::from_millis(now_ms().saturating_sub(since)));
        }
        Ok(())
    }

    /// Clears attachments older than `older_than` whose node the cluster no longer has. Returns
    /// how many were cleared. Stops at the first API error (the next pass tries again).
    pub async fn reconcile(&self, older_than: Duration) -> Result<usize, FenceError> {
        // One LIST of the cluster's nodes for the pass; a node it lacks is asked about again,
        // on its own, within the volume's turn before anything is forgotten.
        let listed = self
            .nodes
            .names()
            .await
            .map_err(|source| FenceError::Cluster {
                volume: "(all)".into(),
                node: "(all)".into(),
                source,
            })?;
        let mut cleared = 0;
        for volume in self.volumes()? {
            let cutoff = now_ms().saturating_sub(older_than.as_millis() as u64);
            // Decided within the volume's turn: a publish cannot slip in between the cluster's
            // answer and the forgetting.
            let turn = self.turn(&volume).await;
            for node in self.nodes_since(&volume, cutoff)? {
                if listed.as_ref().is_some_and(|names| names.contains(&node)) {
                    continue;
                }
                let exists =
                    self.nodes
                        .exists(&node)
                        .await
                        .map_err(|source| FenceError::Cluster {
                            volume: volume.clone(),
                            node: node.clone(),
                            source,
                        })?;
                if !exists {
                    self.forget(&turn, &volume, Some(&node))?;
                    tracing::warn!(volume, node, "cleared the attachment of a deleted node");
                    cleared += 1;
                }
            }
        }
        Ok(cleared)
    }

    fn nodes_since(&self, volume: &str, before_ms: u64) -> Result<Vec<String>, FenceError> {
        Ok(self
            .load(volume)?
            .0
            .nodes
            .into_iter()
            .filter(|a| a.since_unix_ms <= before_ms)
            .map(|a| a.node)
            .collect())
    }

    /// The nodes the volume is recorded as attached to.
    pub fn nodes(&self, volume: &str) -> Result<Vec<String>, FenceError> {
        Ok(self
            .load(volume)?
            .0
            .nodes
            .into_iter()
            .map(|a| a.node)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemoryStore;
    use crate::volume::types::{AccessMode, AccessType, Capability};

    fn fencing(grace: Duration) -> Fencing {
        Fencing::new(
            Arc::new(MemoryStore::default()),
            Arc::new(Standalone),
            grace,
        )
    }

    fn request<'a>(node: &'a str, capability: &'a Capability) -> Request<'a> {
        Request {
            volume: "v",
            node,
            capability,
            readonly: false,
            migration_window: DEFAULT_MIGRATION_WINDOW,
        }
    }

    fn rwo() -> Capability {
        Capability {
            access_type: AccessType::Block,
            access_mode: AccessMode::SingleNodeWriter,
        }
    }

    fn migration() -> Capability {
        Capability {
            access_type: AccessType::Block,
            access_mode: AccessMode::MultiNodeMultiWriter,
        }
    }

    #[tokio::test]
    async fn a_failed_detach_hands_over_within_the_grace_period_only() {
        let cap = rwo();
        for (grace, hands_over) in [(Duration::from_secs(60), true), (Duration::ZERO, false)] {
            let f = fencing(grace);
            let turn = f.turn("v").await;
            f.admit(&turn, &request("a", &cap)).await.unwrap();
            // ControllerUnpublishVolume began for a; its backend call failed, so a stays.
            f.begin_detach(&turn, "v", Some("a")).unwrap();
            std::thread::sleep(Duration::from_millis(2));
            let b = f.admit(&turn, &request("b", &cap)).await;
            assert_eq!(b.is_ok(), hands_over, "grace {grace:?}: {b:?}");
            if !hands_over {
                assert!(matches!(b, Err(FenceError::Held { ref holder, .. }) if holder == "a"));
            }
        }
    }

    #[tokio::test]
    async fn a_rebuilt_holder_is_idempotent_with_any_capability_and_fences_others() {
        let f = fencing(Duration::ZERO);
        let seen = |node: &str, attached, since_ms| Seen {
            volume: "v".into(),
            node: node.into(),
            attached,
            detaching_since_ms: None,
            since_ms,
            exclusive: true,
        };
        // b is confirmed; c is only being attached: the confirmed one holds the volume. Of
        // another volume, only an unconfirmed attachment: the oldest holds it.
        let mut other = seen("d", false, 1);
        other.volume = "w".into();
        let mut newer = seen("e", false, 2);
        newer.volume = "w".into();
        assert_eq!(
            f.rebuild(vec![seen("c", false, 1), seen("b", true, 2), other, newer])
                .unwrap(),
            2
        );
        assert_eq!(f.nodes("v").unwrap(), ["b"]);
        assert_eq!(f.nodes("w").unwrap(), ["d"]);
        let turn = f.turn("v").await;
        let readonly = Capability {
            access_type: AccessType::Block,
            access_mode: AccessMode::SingleNodeReaderOnly,
        };
        let again = f.admit(&turn, &request("b", &readonly)).await.unwrap();
        assert_eq!(again, Admitted::Again);
        let cap = rwo();
        assert!(matches!(
            f.admit(&turn, &request("c", &cap)).await,
            Err(FenceError::Held { .. })
        ));
        // Once completed by the holder's request, the record compares capabilities again.
        assert!(matches!(
            f.admit(&turn, &request("b", &cap)).await,
            Err(FenceError::Incompatible { .. })
        ));
    }

    #[tokio::test]
    async fn a_deleted_attachment_takes_only_what_came_before_its_deletion() {
        let f = fencing(Duration::ZERO);
        let cap = rwo();
        let turn = f.turn("v").await;
        f.admit(&turn, &request("a", &cap)).await.unwrap();
        drop(turn);
        let deleted = |asked: u64| Seen {
            volume: "v".into(),
            node: "a".into(),
            attached: true,
            detaching_since_ms: Some(asked),
            since_ms: 0,
            exclusive: true,
        };
        // The watch reports an older attachment's deletion after a new publish to a.
        f.observe(deleted(now_ms() - 1000), true).await.unwrap();
        assert_eq!(f.nodes("v").unwrap(), ["a"]);
        f.observe(deleted(now_ms() + 1), true).await.unwrap();
        assert!(f.nodes("v").unwrap().is_empty());
        // A confirmed attachment another replica made joins the record.
        let mut made = deleted(0);
        made.detaching_since_ms = None;
        f.observe(made, false).await.unwrap();
        assert_eq!(f.nodes("v").unwrap(), ["a"]);
    }

    #[tokio::test]
    async fn a_relist_takes_what_was_deleted_while_the_watch_was_away() {
        let f = fencing(Duration::ZERO);
        let shown = |volume: &str, node: &str| Seen {
            volume: volume.into(),
            node: node.into(),
            attached: true,
            detaching_since_ms: None,
            since_ms: 1,
            exclusive: true,
        };
        // The cluster showed these two.
        f.observe(shown("v", "a"), false).await.unwrap();
        f.observe(shown("w", "a"), false).await.unwrap();
        // A publish no VolumeAttachment stands for (a CO that is not Kubernetes' attacher).
        let cap = rwo();
        {
            let turn = f.turn("y").await;
            let mut r = request("c", &cap);
            r.volume = "y";
            f.admit(&turn, &r).await.unwrap();
        }
        let started = now_ms() + 1;
        // Made after the relist began: kept whatever the list says.
        std::thread::sleep(Duration::from_millis(3));
        f.observe(
            Seen {
                since_ms: now_ms(),
                ..shown("x", "b")
            },
            false,
        )
        .await
        .unwrap();
        let present = [("v".to_owned(), "a".to_owned())];
        assert_eq!(f.observe_relist(&present, started).await.unwrap(), 1);
        assert_eq!(f.nodes("v").unwrap(), ["a"]);
        assert!(f.nodes("w").unwrap().is_empty(), "deleted while away");
        assert_eq!(f.nodes("x").unwrap(), ["b"]);
        assert_eq!(f.nodes("y").unwrap(), ["c"], "never shown, never forgotten");
    }

    #[tokio::test]
    async fn an_unreadable_record_refuses() {
        let state = Arc::new(MemoryStore::default());
        state.put(NAMESPACE, "v", b"{not json", None).unwrap();
        let f = Fencing::new(state, Arc::new(Standalone), Duration::ZERO);
        let turn = f.turn("v").await;
        let cap = rwo();
        assert!(matches!(
            f.admit(&turn, &request("a", &cap)).await,
            Err(FenceError::Unreadable { .. })
        ));
    }

    #[tokio::test]
    async fn live_migrations_are_counted() {
        let f = fencing(Duration::ZERO);
        let cap = migration();
        let turn = f.turn("v").await;
        f.admit(&turn, &request("source", &cap)).await.unwrap();
        f.admit(&turn, &request("target", &cap)).await.unwrap();
        f.forget(&turn, "v", Some("source")).unwrap();
        let mut late = request("late", &cap);
        late.migration_window = Duration::ZERO;
        f.admit(&turn, &late).await.unwrap();
        std::thread::sleep(Duration::from_millis(2));
        assert!(
            f.admit(&turn, &late).await.is_err(),
            "the window has passed"
        );
        let counts = f.migrations.counts();
        assert_eq!(
            (counts.started, counts.completed, counts.timed_out),
            (2, 1, 1)
        );
    }
}
