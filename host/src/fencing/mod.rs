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
//! Decisions on one volume are serialised (callers wait their turn rather than get ABORTED, so
//! that of many concurrent publishes exactly one wins and the others hear why), and the record
//! is written durably to the state store before the backend is asked to publish, so a restarted
//! host fences exactly as before. Multi-node reader modes and filesystem multi-writers are not
//! fenced: the backend's declaration governs them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::runtime::types::{AccessMode, AccessType, Capability};
use crate::state::{StateStore, StoreError};

const NAMESPACE: &str = "host/attachments";
/// How long a second node may share a multi-writer block volume (live migration).
pub const DEFAULT_MIGRATION_WINDOW: Duration = Duration::from_secs(300);
/// The volume context key (the public RDS driver's) that sets the window, in seconds.
pub const MIGRATION_KEY: &str = "migrationTimeoutSeconds";

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
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Attached {
    node: String,
    readonly: bool,
    /// The capability it was published with, as text (compared, never parsed).
    capability: String,
    /// Published with a single-node access mode: nobody else may join.
    exclusive: bool,
    since_unix_ms: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    nodes: Vec<Attached>,
}

/// What a publish is asking for.
pub struct Request<'a> {
    pub volume: &'a str,
    pub node: &'a str,
    pub capability: &'a Capability,
    pub readonly: bool,
    pub migration_window: Duration,
}

/// What the caller must do after a decision to publish.
#[derive(Debug, PartialEq, Eq)]
pub enum Admitted {
    /// A new attachment, recorded: publish, and call [`Fencing::forget`] if that fails.
    New,
    /// Already attached there: publish again (idempotent), nothing to undo.
    Again,
}

pub struct Fencing {
    state: Arc<dyn StateStore>,
    turns: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
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

fn is_single_node(mode: AccessMode) -> bool {
    matches!(
        mode,
        AccessMode::SingleNodeWriter
            | AccessMode::SingleNodeReaderOnly
            | AccessMode::SingleNodeSingleWriter
            | AccessMode::SingleNodeMultiWriter
    )
}

impl Fencing {
    pub fn new(state: Arc<dyn StateStore>) -> Self {
        Self {
            state,
            turns: Mutex::default(),
        }
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
                Some(e) => (
                    serde_json::from_slice(&e.value).unwrap_or_default(),
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

    /// Decides whether `request.node` may have the volume, and records it if so. Call within
    /// the volume's [`Turn`].
    pub fn admit(&self, _turn: &Turn, request: &Request<'_>) -> Result<Admitted, FenceError> {
        let (mut record, version) = self.load(request.volume)?;
        let capability = format!("{:?}", request.capability);
        if let Some(mine) = record.nodes.iter().find(|a| a.node == request.node) {
            if mine.capability != capability || mine.readonly != request.readonly {
                return Err(FenceError::Incompatible {
                    volume: request.volume.to_owned(),
                    node: request.node.to_owned(),
                    what: format!(
                        "another capability or read-only flag (read-only: {})",
                        mine.readonly
                    ),
                });
            }
            return self
                .check_window(&record, request)
                .map(|()| Admitted::Again);
        }
        let held = |holder: &Attached, why| FenceError::Held {
            volume: request.volume.to_owned(),
            node: request.node.to_owned(),
            holder: holder.node.clone(),
            why,
        };
        let mode = request.capability.access_mode;
        let block = matches!(request.capability.access_type, AccessType::Block);
        if let Some(holder) = record.nodes.first() {
            if is_single_node(mode) {
                return Err(held(holder, "single-node access"));
            }
            if mode == AccessMode::MultiNodeMultiWriter && block {
                if record.nodes.len() >= 2 {
                    return Err(held(holder, "a live migration already has its two nodes"));
                }
            } else if record.nodes.iter().any(|a| a.exclusive) {
                return Err(held(holder, "held with single-node access"));
            }
        }
        record.nodes.push(Attached {
            node: request.node.to_owned(),
            readonly: request.readonly,
            capability,
            exclusive: is_single_node(mode),
            since_unix_ms: now_ms(),
        });
        self.save(request.volume, &record, version)?;
        Ok(Admitted::New)
    }

    /// A secondary of a live migration may be confirmed again only within its window.
    fn check_window(&self, record: &Record, request: &Request<'_>) -> Result<(), FenceError> {
        if record.nodes.len() < 2 || record.nodes[0].node == request.node {
            return Ok(());
        }
        let second = &record.nodes[1];
        let open_until = second.since_unix_ms + request.migration_window.as_millis() as u64;
        if now_ms() > open_until {
            return Err(FenceError::Held {
                volume: request.volume.to_owned(),
                node: request.node.to_owned(),
                holder: record.nodes[0].node.clone(),
                why: "the live-migration window has passed",
            });
        }
        Ok(())
    }

    /// Removes the volume's attachment to `node` (every node when `None`). Idempotent.
    pub fn forget(&self, _turn: &Turn, volume: &str, node: Option<&str>) -> Result<(), FenceError> {
        let (mut record, version) = self.load(volume)?;
        let before = record.nodes.len();
        record.nodes.retain(|a| node.is_some_and(|n| a.node != n));
        if record.nodes.len() != before {
            self.save(volume, &record, version)?;
        }
        Ok(())
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
