//! The fencing rules as a pure decision: a volume's record, a publish request and the time in,
//! a verdict out. No store, no cluster, no clock of its own, so every rule is a table row in
//! the tests below.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::FenceError;
use crate::volume::types::{AccessMode, Capability};

/// One node's attachment of a volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Attached {
    pub node: String,
    pub readonly: bool,
    /// The capability it was published with, as text (compared, never parsed).
    pub capability: String,
    /// Published with a single-node access mode: nobody else may join.
    pub exclusive: bool,
    pub since_unix_ms: u64,
    /// Rebuilt from a VolumeAttachment, which does not tell the capability or read-only flag:
    /// the node's next publish supplies them.
    #[serde(default)]
    pub rebuilt: bool,
    /// ControllerUnpublishVolume began for this node at this time and has not finished.
    #[serde(default)]
    pub detaching_since_unix_ms: Option<u64>,
    /// The cluster has shown a VolumeAttachment for it, so a relist that no longer shows one
    /// means it was deleted (a publish no attachment stands for is never forgotten that way).
    #[serde(default)]
    pub in_cluster: bool,
}

/// Which nodes a volume is attached to, oldest first.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Record {
    pub nodes: Vec<Attached>,
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
    /// A new attachment, recorded: publish, and call `Fencing::forget` if that fails.
    New,
    /// Already attached there: publish again (idempotent), nothing to undo.
    Again,
}

/// A decision to admit, and what it did to the record.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Verdict {
    pub admitted: Admitted,
    /// The record changed and must be saved.
    pub changed: bool,
    /// A second node joined a multi-writer block volume.
    pub migration_started: bool,
}

/// Why a live-migration secondary was refused once its window had passed.
pub(super) const WINDOW_PASSED: &str = "the live-migration window has passed";

/// Decides whether `request.node` may have the volume, given its `record`, at `now_ms`; a
/// holder whose detach began less than `grace` ago does not block. On admission the record
/// holds the node.
pub(super) fn decide(
    record: &mut Record,
    request: &Request<'_>,
    now_ms: u64,
    grace: Duration,
) -> Result<Verdict, FenceError> {
    let capability = format!("{:?}", request.capability);
    let again = |changed| Verdict {
        admitted: Admitted::Again,
        changed,
        migration_started: false,
    };
    if let Some(mine) = record.nodes.iter_mut().find(|a| a.node == request.node) {
        if mine.rebuilt {
            // The attacher's record, completed by the node's own request.
            mine.rebuilt = false;
            mine.capability = capability;
            mine.readonly = request.readonly;
            return check_window(record, request, now_ms).map(|()| again(true));
        }
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
        return check_window(record, request, now_ms).map(|()| again(false));
    }
    let held = |holder: &Attached, why| FenceError::Held {
        volume: request.volume.to_owned(),
        node: request.node.to_owned(),
        holder: holder.node.clone(),
        why,
    };
    let mode = request.capability.access_mode;
    // A holder in the middle of a detach, within the grace period, is handing over.
    let grace = grace.as_millis() as u64;
    let blocking: Vec<&Attached> = record
        .nodes
        .iter()
        .filter(|a| a.detaching_since_unix_ms.is_none_or(|t| now_ms > t + grace))
        .collect();
    let migration = mode == AccessMode::MultiNodeMultiWriter && request.capability.is_block();
    if let Some(holder) = blocking.first() {
        if mode.single_node() {
            return Err(held(holder, "single-node access"));
        }
        if migration {
            if blocking.len() >= 2 {
                return Err(held(holder, "a live migration already has its two nodes"));
            }
        } else if blocking.iter().any(|a| a.exclusive) {
            return Err(held(holder, "held with single-node access"));
        }
    }
    let migration_started = migration && !blocking.is_empty();
    record.nodes.push(Attached {
        node: request.node.to_owned(),
        readonly: request.readonly,
        capability,
        exclusive: mode.single_node(),
        since_unix_ms: now_ms,
        rebuilt: false,
        detaching_since_unix_ms: None,
        in_cluster: false,
    });
    Ok(Verdict {
        admitted: Admitted::New,
        changed: true,
        migration_started,
    })
}

/// A secondary of a live migration may be confirmed again only within its window.
fn check_window(record: &Record, request: &Request<'_>, now_ms: u64) -> Result<(), FenceError> {
    if record.nodes.len() < 2 || record.nodes[0].node == request.node {
        return Ok(());
    }
    let open_until = record.nodes[1].since_unix_ms + request.migration_window.as_millis() as u64;
    if now_ms > open_until {
        return Err(FenceError::Held {
            volume: request.volume.to_owned(),
            node: request.node.to_owned(),
            holder: record.nodes[0].node.clone(),
            why: WINDOW_PASSED,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::types::{AccessType, MountVolume};

    const GRACE: Duration = Duration::from_secs(30);
    const WINDOW: Duration = Duration::from_secs(300);

    fn cap(block: bool, mode: AccessMode) -> Capability {
        Capability {
            access_type: if block {
                AccessType::Block
            } else {
                AccessType::Mount(MountVolume {
                    fs_type: "ext4".into(),
                    mount_flags: vec![],
                    volume_mount_group: String::new(),
                })
            },
            access_mode: mode,
        }
    }

    fn holder(node: &str, capability: &Capability, since: u64) -> Attached {
        Attached {
            node: node.into(),
            readonly: false,
            capability: format!("{capability:?}"),
            exclusive: capability.access_mode.single_node(),
            since_unix_ms: since,
            rebuilt: false,
            detaching_since_unix_ms: None,
            in_cluster: false,
        }
    }

    fn ask(
        record: &mut Record,
        node: &str,
        capability: &Capability,
        now: u64,
    ) -> Result<Verdict, FenceError> {
        let request = Request {
            volume: "v",
            node,
            capability,
            readonly: false,
            migration_window: WINDOW,
        };
        decide(record, &request, now, GRACE)
    }

    /// What a decision came to, for the table.
    #[derive(Debug, PartialEq, Eq)]
    enum Answer {
        New,
        Again,
        Held(&'static str),
        Incompatible,
    }

    fn answer(result: Result<Verdict, FenceError>) -> Answer {
        match result {
            Ok(v) if v.admitted == Admitted::New => Answer::New,
            Ok(_) => Answer::Again,
            Err(FenceError::Held { why, .. }) => Answer::Held(why),
            Err(FenceError::Incompatible { .. }) => Answer::Incompatible,
            Err(e) => panic!("unexpected {e}"),
        }
    }

    #[test]
    fn the_decision_table() {
        use AccessMode::*;
        let rwo = cap(false, SingleNodeWriter);
        let rox = cap(false, MultiNodeReaderOnly);
        let rwx_block = cap(true, MultiNodeMultiWriter);
        let rwx_fs = cap(false, MultiNodeMultiWriter);
        let now = 1_000_000;
        // (holders, who asks with what, the answer)
        let rows: Vec<(Vec<Attached>, &str, &Capability, Answer)> = vec![
            (vec![], "a", &rwo, Answer::New),
            (vec![holder("a", &rwo, 1)], "a", &rwo, Answer::Again),
            (vec![holder("a", &rwo, 1)], "a", &rox, Answer::Incompatible),
            (
                vec![holder("a", &rwo, 1)],
                "b",
                &rwo,
                Answer::Held("single-node access"),
            ),
            (
                vec![holder("a", &rwo, 1)],
                "b",
                &rox,
                Answer::Held("held with single-node access"),
            ),
            (vec![holder("a", &rox, 1)], "b", &rox, Answer::New),
            (vec![holder("a", &rwx_fs, 1)], "b", &rwx_fs, Answer::New),
            (
                vec![holder("a", &rwx_block, 1)],
                "b",
                &rwx_block,
                Answer::New,
            ),
            (
                vec![
                    holder("a", &rwx_block, 1),
                    holder("b", &rwx_block, now - 10),
                ],
                "c",
                &rwx_block,
                Answer::Held("a live migration already has its two nodes"),
            ),
            // The secondary again, inside and past its window.
            (
                vec![
                    holder("a", &rwx_block, 1),
                    holder("b", &rwx_block, now - 10),
                ],
                "b",
                &rwx_block,
                Answer::Again,
            ),
            (
                vec![holder("a", &rwx_block, 1), holder("b", &rwx_block, 1)],
                "b",
                &rwx_block,
                Answer::Held(WINDOW_PASSED),
            ),
        ];
        for (i, (holders, node, capability, expected)) in rows.into_iter().enumerate() {
            let mut record = Record { nodes: holders };
            let before = record.clone();
            let got = answer(ask(&mut record, node, capability, now));
            assert_eq!(got, expected, "row {i}");
            if got != Answer::New {
                assert_eq!(
                    record, before,
                    "row {i}: only an admission changes the record"
                );
            }
        }
    }

    #[test]
    fn a_detaching_holder_blocks_again_once_the_grace_period_is_over() {
        let rwo = cap(false, AccessMode::SingleNodeWriter);
        let mut detaching = holder("a", &rwo, 1);
        detaching.detaching_since_unix_ms = Some(10_000);
        let within = 10_000 + GRACE.as_millis() as u64;
        let mut record = Record {
            nodes: vec![detaching.clone()],
        };
        assert_eq!(answer(ask(&mut record, "b", &rwo, within)), Answer::New);
        let mut record = Record {
            nodes: vec![detaching],
        };
        assert_eq!(
            answer(ask(&mut record, "b", &rwo, within + 1)),
            Answer::Held("single-node access")
        );
    }

    #[test]
    fn a_rebuilt_holder_is_completed_by_its_own_request() {
        let rwo = cap(true, AccessMode::SingleNodeWriter);
        let mut rebuilt = holder("a", &rwo, 1);
        rebuilt.capability = String::new();
        rebuilt.rebuilt = true;
        let mut record = Record {
            nodes: vec![rebuilt],
        };
        let verdict = ask(&mut record, "a", &rwo, 5).unwrap();
        assert_eq!(
            verdict,
            Verdict {
                admitted: Admitted::Again,
                changed: true,
                migration_started: false
            }
        );
        assert_eq!(record.nodes[0], holder("a", &rwo, 1));
    }

    #[test]
    fn a_second_multi_writer_block_node_starts_a_migration() {
        let rwx = cap(true, AccessMode::MultiNodeMultiWriter);
        let mut record = Record::default();
        assert!(!ask(&mut record, "a", &rwx, 1).unwrap().migration_started);
        let second = ask(&mut record, "b", &rwx, 2).unwrap();
        assert!(second.migration_started && second.changed);
        assert_eq!(record.nodes.len(), 2);
    }
}
