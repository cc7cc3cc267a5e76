//! Facts in, findings out: no I/O, so every rule is tested by a table below.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use super::finding::{Finding, Severity, worst_first};
use crate::kube::inventory::{DriverPv, DriverSnapshotContent, PendingClaim};

/// A volume the backend has (or, for a backend that cannot list, the host recorded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendVolume {
    pub id: String,
    pub capacity_bytes: u64,
    /// From the host's record of its creation; unknown for a volume the host did not make.
    pub created_unix: Option<i64>,
}

/// A snapshot the backend has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSnapshot {
    pub id: String,
    pub source_volume_id: String,
    pub size_bytes: u64,
    /// When the backend made it, if it says.
    pub created_unix: Option<i64>,
}

/// A VolumeAttachment of this driver, its node by its CSI id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub volume: String,
    pub node: String,
    pub attached: bool,
    /// Only one node may hold the volume (its PV is not ReadWriteMany/ReadOnlyMany).
    pub exclusive: bool,
    /// Being detached since (unix seconds).
    pub detaching_since_unix: Option<i64>,
}

/// What the backend's `get-volume` says of an attached volume.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeView {
    /// The nodes the storage system exports it to; empty: it does not say.
    pub published_nodes: Vec<String>,
    /// Its condition, when abnormal.
    pub abnormal: Option<String>,
}

/// A node-local cleanup record whose deletion was requested (the host's, in the driver's
/// namespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanupRecord {
    pub volume: String,
    /// Since its deletion was requested.
    pub waited_seconds: i64,
    /// Nodes that held the directory and have not said they removed it.
    pub pending: Vec<String>,
    /// Nodes that could not remove it.
    pub failed: Vec<String>,
}

/// A directory under a node's local-dir root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalDir {
    pub name: String,
    pub changed_unix: i64,
}

/// What the node part of the audit holds: the directories under the local-dir root
/// (`--local-dir-root`) and every volume id a record or the backend explains them by; the
/// volumes mounted into pods here (`--kubelet-root`).
#[derive(Debug, Clone, Default)]
pub struct NodeFacts {
    pub root: String,
    pub dirs: Vec<LocalDir>,
    /// Volumes the backend lists (or the host recorded), and those of every cleanup record.
    pub known: HashSet<String>,
    pub published: Vec<PublishedVolume>,
    pub now_unix: i64,
}

/// A volume of the driver mounted into a pod on this node, with its filesystem's figures and
/// its PV's, when the PV is this driver's.
#[derive(Debug, Clone, Default)]
pub struct PublishedVolume {
    pub pv: String,
    pub path: String,
    pub used_bytes: u64,
    pub total_bytes: u64,
    pub pv_capacity_bytes: Option<u64>,
    pub pv_created_unix: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub pvs: Vec<DriverPv>,
    /// `None` when neither the backend nor the host can say which volumes exist.
    pub volumes: Option<Vec<BackendVolume>>,
    /// `volumes` is every volume the backend has (its `list-volumes`), not only those the host
    /// recorded: only then is a PV whose volume is missing a finding.
    pub complete: bool,
    pub claims: Vec<PendingClaim>,
    /// Cleanup records being deleted.
    pub cleanups: Vec<CleanupRecord>,
    /// This driver's VolumeSnapshotContents; `None` without the snapshot API.
    pub contents: Option<Vec<DriverSnapshotContent>>,
    /// The backend's snapshots; `None` when it has none to list (no `snapshots` interface).
    pub snapshots: Option<Vec<BackendSnapshot>>,
    pub attachments: Vec<Attachment>,
    /// By volume id, for attached volumes, where the backend answers `get-volume`.
    pub views: HashMap<String, VolumeView>,
    pub now_unix: i64,
}

#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// A PV younger than this is left alone: it may be being made or bound right now.
    pub grace: Duration,
    /// A volume no PV names is an orphan once it is this old.
    pub orphan_age: Duration,
    /// A claim pending this long is a finding.
    pub pending: Duration,
    /// A deleted node-local volume's directory waiting this long on a node is stuck.
    pub cleanup: Duration,
    /// A volume this old that still uses under a tenth of its size is a finding.
    pub underused: Duration,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(300),
            orphan_age: Duration::from_secs(3600),
            pending: Duration::from_secs(900),
            cleanup: Duration::from_secs(600),
            underused: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

fn secs(d: Duration) -> i64 {
    d.as_secs() as i64
}

/// Every finding the facts show, the worst first.
pub fn correlate(facts: &Facts, t: &Thresholds) -> Vec<Finding> {
    let mut found = vec![];
    // Every volume the backend has, when it said: only then is a missing one a finding.
    let listed: Option<HashSet<&str>> = (facts.volumes.as_ref())
        .filter(|_| facts.complete)
        .map(|v| v.iter().map(|v| v.id.as_str()).collect());
    for pv in &facts.pvs {
        let age = facts.now_unix - pv.created_unix;
        if age < secs(t.grace) {
            continue;
        }
        let claim = pv
            .claim
            .as_ref()
            .map_or(String::new(), |c| format!(", claim {c}"));
        if let Some(listed) = &listed
            && !listed.contains(pv.volume.as_str())
        {
            let bound = pv.phase == "Bound";
            found.push(Finding {
                kind: "pv-without-volume",
                severity: if bound {
                    Severity::Critical
                } else {
                    Severity::Medium
                },
                subject: format!("pv/{}", pv.name),
                evidence: vec![
                    format!(
                        "PV {} ({}{claim}) names volume {}",
                        pv.name, pv.phase, pv.volume
                    ),
                    format!("the backend has {} volumes, and not this one", listed.len()),
                ],
                age_seconds: Some(age),
                remediation: if bound {
                    format!(
                        "the workload's data is not on the storage: find where volume {} went \
                         (restore it from a backup), then delete the claim and PV {}",
                        pv.volume, pv.name
                    )
                } else {
                    format!("nothing uses it: kubectl delete pv {}", pv.name)
                },
            });
        } else if pv.phase == "Released" && pv.reclaim == "Delete" {
            found.push(Finding {
                kind: "released-not-deleted",
                severity: Severity::Medium,
                subject: format!("pv/{}", pv.name),
                evidence: vec![format!(
                    "PV {} is Released with reclaim policy Delete, and its volume {} is still \
                     there",
                    pv.name, pv.volume
                )],
                age_seconds: Some(age),
                remediation: format!(
                    "the provisioner failed to delete it: see `kubectl describe pv {}` and the \
                     provisioner's log",
                    pv.name
                ),
            });
        }
    }
    if let Some(volumes) = &facts.volumes {
        let named: HashSet<&str> = facts.pvs.iter().map(|pv| pv.volume.as_str()).collect();
        for v in volumes.iter().filter(|v| !named.contains(v.id.as_str())) {
            let age = v.created_unix.map(|c| facts.now_unix - c);
            let (severity, evidence) = match age {
                Some(age) if age < secs(t.orphan_age) => continue,
                Some(_) => (
                    Severity::High,
                    format!(
                        "volume {} ({} bytes) is named by no PV of this driver",
                        v.id, v.capacity_bytes
                    ),
                ),
                None => (
                    Severity::Low,
                    format!(
                        "volume {} ({} bytes) is named by no PV of this driver, and its age is \
                         unknown (the host has no record of it): a volume provisioned right now \
                         looks like this too",
                        v.id, v.capacity_bytes
                    ),
                ),
            };
            found.push(Finding {
                kind: "volume-without-pv",
                severity,
                subject: format!("volume/{}", v.id),
                evidence: vec![evidence],
                age_seconds: age,
                remediation: format!(
                    "if nothing needs it, delete it: modcsi csi delete {} (look again later \
                     when its age is unknown)",
                    v.id
                ),
            });
        }
    }
    for claim in &facts.claims {
        let age = facts.now_unix - claim.created_unix;
        if age < secs(t.pending) {
            continue;
        }
        let mut evidence = vec![format!(
            "claim {} of StorageClass {} has no volume",
            claim.claim, claim.class
        )];
        evidence.extend(claim.warning.iter().map(|w| format!("last warning: {w}")));
        found.push(Finding {
            kind: "claim-pending",
            severity: Severity::Medium,
            subject: format!("pvc/{}", claim.claim),
            evidence,
            age_seconds: Some(age),
            remediation: "see the warning: a parameter the backend refuses, a full storage \
                          system or a provisioner that is not running"
                .into(),
        });
    }
    if let (Some(contents), Some(snapshots)) = (&facts.contents, &facts.snapshots) {
        snapshot_findings(contents, snapshots, facts.now_unix, t, &mut found);
    }
    attachment_findings(facts, listed.as_ref(), t, &mut found);
    for record in &facts.cleanups {
        let stuck = record.pending.iter().chain(&record.failed);
        let nodes: Vec<&str> = stuck.map(String::as_str).collect();
        if record.waited_seconds < secs(t.cleanup) || nodes.is_empty() {
            continue;
        }
        let mut evidence = vec![format!(
            "volume {} was deleted {} min ago; its directory is still on node(s) {}",
            record.volume,
            record.waited_seconds / 60,
            nodes.join(", ")
        )];
        if !record.failed.is_empty() {
            evidence.push(format!(
                "node(s) {} reported that they could not remove it",
                record.failed.join(", ")
            ));
        }
        found.push(Finding {
            kind: "cleanup-stuck",
            severity: Severity::High,
            subject: format!("volume/{}", record.volume),
            evidence,
            age_seconds: Some(record.waited_seconds),
            remediation: "the node plugin must run on those nodes to remove the directory (see \
                          its pod and log there); until it does, the space stays used and the \
                          volume's name cannot be reused. A node gone for good is struck off by \
                          the controller once its Node object is deleted"
                .into(),
        });
    }
    worst_first(&mut found);
    found
}

/// Directories under a node's local-dir root that no volume or record explains, once older than
/// the orphan age (a directory being made right now has its record already, but its mtime is
/// the safety margin).
pub fn unexplained_dirs(facts: &NodeFacts, t: &Thresholds) -> Vec<Finding> {
    let mut found: Vec<Finding> = facts
        .dirs
        .iter()
        .filter(|d| !facts.known.contains(&d.name))
        .filter(|d| facts.now_unix - d.changed_unix >= secs(t.orphan_age))
        .map(|d| Finding {
            kind: "directory-unexplained",
            severity: Severity::Medium,
            subject: format!("dir:{}/{}", facts.root, d.name),
            evidence: vec![format!(
                "{}/{} is named by no volume the backend lists, no host record and no cleanup \
                 record of this driver",
                facts.root, d.name
            )],
            age_seconds: Some(facts.now_unix - d.changed_unix),
            remediation: "if nothing mounts it (findmnt) and no other driver shares this root, \
                          remove it: it takes the node's disk"
                .into(),
        })
        .collect();
    worst_first(&mut found);
    found
}

/// Volumes mounted here whose filesystem, their own (its size within a half and a fifth more
/// of the PV's; not a node-local directory on the node's disk), holds under a tenth of it once
/// the PV is older than the underused age: a smaller volume would do.
pub fn underused(facts: &NodeFacts, t: &Thresholds) -> Vec<Finding> {
    let mut found: Vec<Finding> = vec![];
    for v in &facts.published {
        let (Some(capacity), Some(created)) = (v.pv_capacity_bytes, v.pv_created_unix) else {
            continue;
        };
        let own = v.total_bytes >= capacity / 2 && v.total_bytes <= capacity + capacity / 5;
        let age = facts.now_unix - created;
        if !own || v.used_bytes * 10 >= v.total_bytes || age < secs(t.underused) {
            continue;
        }
        found.push(Finding {
            kind: "volume-underused",
            severity: Severity::Low,
            subject: format!("pv/{}", v.pv),
            evidence: vec![format!(
                "its filesystem at {} uses {} of {} bytes ({:.1}%); the PV asks for {capacity} \
                 bytes",
                v.path,
                v.used_bytes,
                v.total_bytes,
                v.used_bytes as f64 * 100.0 / v.total_bytes.max(1) as f64
            )],
            age_seconds: Some(age),
            remediation: "volumes only grow: if it stays this empty, a smaller claim would do \
                          (copy the data to a new, smaller volume and delete this one)"
                .into(),
        });
    }
    worst_first(&mut found);
    found
}

/// VolumeAttachments against each other (one writer), against the volumes the backend lists,
/// against what the backend says it exports, and detaches that never end.
fn attachment_findings(
    facts: &Facts,
    listed: Option<&HashSet<&str>>,
    t: &Thresholds,
    found: &mut Vec<Finding>,
) {
    let mut holders: BTreeMap<&str, (bool, BTreeSet<&str>)> = BTreeMap::new();
    for a in &facts.attachments {
        if let Some(since) = a.detaching_since_unix {
            let waited = facts.now_unix - since;
            if waited >= secs(t.cleanup) {
                found.push(Finding {
                    kind: "detach-stuck",
                    severity: Severity::Medium,
                    subject: format!("volume/{}", a.volume),
                    evidence: vec![format!(
                        "the VolumeAttachment of volume {} to node {} has been deleted {} min \
                         ago and is still there",
                        a.volume,
                        a.node,
                        waited / 60
                    )],
                    age_seconds: Some(waited),
                    remediation: "the attacher cannot finish ControllerUnpublishVolume: see \
                                  `kubectl describe volumeattachment` and the csi-attacher's log"
                        .into(),
                });
            }
            continue;
        }
        if a.attached {
            let entry = holders.entry(&a.volume).or_default();
            entry.0 |= a.exclusive;
            entry.1.insert(&a.node);
        }
    }
    for (volume, (exclusive, nodes)) in &holders {
        let nodes_text = nodes.iter().copied().collect::<Vec<_>>().join(", ");
        if *exclusive && nodes.len() > 1 {
            found.push(Finding {
                kind: "attachment-conflict",
                severity: Severity::Critical,
                subject: format!("volume/{volume}"),
                evidence: vec![format!(
                    "single-node volume {volume} is attached to {} nodes: {nodes_text}",
                    nodes.len()
                )],
                age_seconds: None,
                remediation: "two writers can corrupt it: stop the pods on all but one node \
                              now, then find how the second attach got past fencing"
                    .into(),
            });
        }
        if let Some(listed) = listed
            && !listed.contains(volume)
        {
            found.push(Finding {
                kind: "attachment-without-volume",
                severity: Severity::High,
                subject: format!("volume/{volume}"),
                evidence: vec![format!(
                    "volume {volume} is attached to {nodes_text}, and the backend does not list it"
                )],
                age_seconds: None,
                remediation: "the pods there write to nothing: stop them, and see the \
                              pv-without-volume finding"
                    .into(),
            });
        }
        let Some(view) = facts.views.get(*volume) else {
            continue;
        };
        let exported: BTreeSet<&str> = view.published_nodes.iter().map(String::as_str).collect();
        if !exported.is_empty() && exported != *nodes {
            found.push(Finding {
                kind: "attachment-mismatch",
                severity: Severity::High,
                subject: format!("volume/{volume}"),
                evidence: vec![
                    format!("VolumeAttachments hold volume {volume} on {nodes_text}"),
                    format!(
                        "the storage system exports it to {}",
                        exported.iter().copied().collect::<Vec<_>>().join(", ")
                    ),
                ],
                age_seconds: None,
                remediation: "an export Kubernetes does not know of is a second writer: remove \
                              it in the storage system once the pods' nodes are checked"
                    .into(),
            });
        }
        if let Some(message) = &view.abnormal {
            found.push(Finding {
                kind: "volume-abnormal",
                severity: Severity::High,
                subject: format!("volume/{volume}"),
                evidence: vec![format!(
                    "the backend says volume {volume} is abnormal: {message}"
                )],
                age_seconds: None,
                remediation: "see the storage system about this volume".into(),
            });
        }
    }
}

/// VolumeSnapshotContents whose snapshot the backend no longer has, and backend snapshots no
/// content names.
fn snapshot_findings(
    contents: &[DriverSnapshotContent],
    snapshots: &[BackendSnapshot],
    now: i64,
    t: &Thresholds,
    found: &mut Vec<Finding>,
) {
    let listed: HashSet<&str> = snapshots.iter().map(|s| s.id.as_str()).collect();
    for content in contents {
        let age = now - content.created_unix;
        let Some(handle) = &content.handle else {
            continue;
        };
        if age < secs(t.grace) || listed.contains(handle.as_str()) {
            continue;
        }
        let (severity, whose) = match &content.snapshot {
            Some(snapshot) => (Severity::High, format!(", of VolumeSnapshot {snapshot}")),
            None => (Severity::Medium, String::new()),
        };
        found.push(Finding {
            kind: "snapshot-content-without-snapshot",
            severity,
            subject: format!("volumesnapshotcontent/{}", content.name),
            evidence: vec![
                format!(
                    "VolumeSnapshotContent {}{whose} names snapshot {handle}",
                    content.name
                ),
                format!(
                    "the backend has {} snapshots, and not this one",
                    listed.len()
                ),
            ],
            age_seconds: Some(age),
            remediation: "a restore from it will fail: delete the VolumeSnapshot (and the \
                          content), and take a new one"
                .into(),
        });
    }
    let named: HashSet<&str> = contents
        .iter()
        .filter_map(|c| c.handle.as_deref())
        .collect();
    for snapshot in snapshots.iter().filter(|s| !named.contains(s.id.as_str())) {
        let age = snapshot.created_unix.map(|c| now - c);
        let (severity, unknown) = match age {
            Some(age) if age < secs(t.orphan_age) => continue,
            Some(_) => (Severity::High, ""),
            None => (
                Severity::Low,
                ", and its age is unknown: one being made right now looks like this too",
            ),
        };
        found.push(Finding {
            kind: "snapshot-without-content",
            severity,
            subject: format!("snapshot/{}", snapshot.id),
            evidence: vec![format!(
                "snapshot {} of volume {} ({} bytes) is named by no VolumeSnapshotContent of this \
                 driver{unknown}",
                snapshot.id, snapshot.source_volume_id, snapshot.size_bytes
            )],
            age_seconds: age,
            remediation: "if nothing needs it, delete it in the storage system (it takes space \
                          no Kubernetes object accounts for)"
                .into(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;
    const HOUR: i64 = 3600;

    fn pv(name: &str, volume: &str, phase: &str, age: i64) -> DriverPv {
        DriverPv {
            name: name.into(),
            volume: volume.into(),
            phase: phase.into(),
            reclaim: "Delete".into(),
            claim: Some(format!("default/{name}")),
            class: None,
            capacity_bytes: 1 << 30,
            created_unix: NOW - age,
        }
    }

    fn volume(id: &str, age: Option<i64>) -> BackendVolume {
        BackendVolume {
            id: id.into(),
            capacity_bytes: 1 << 30,
            created_unix: age.map(|a| NOW - a),
        }
    }

    fn kinds(facts: Facts) -> Vec<(&'static str, Severity, String)> {
        correlate(
            &Facts {
                now_unix: NOW,
                complete: facts.volumes.is_some(),
                ..facts
            },
            &Thresholds::default(),
        )
        .into_iter()
        .map(|f| (f.kind, f.severity, f.subject))
        .collect()
    }

    #[test]
    fn healthy_and_young_things_are_no_findings() {
        let healthy = Facts {
            pvs: vec![pv("pv-a", "v-a", "Bound", 10 * HOUR)],
            volumes: Some(vec![volume("v-a", Some(10 * HOUR))]),
            ..Default::default()
        };
        assert_eq!(kinds(healthy), []);
        // Made seconds ago: its PV is not there yet, or is, without the backend listing it yet.
        let young = Facts {
            pvs: vec![pv("pv-new", "v-elsewhere", "Bound", 5)],
            volumes: Some(vec![volume("v-new", Some(5))]),
            claims: vec![PendingClaim {
                claim: "default/c".into(),
                class: "fast".into(),
                created_unix: NOW - 5,
                warning: None,
            }],
            ..Default::default()
        };
        assert_eq!(kinds(young), []);
    }

    #[test]
    fn orphans_both_ways_released_and_pending_with_their_severities() {
        let facts = Facts {
            pvs: vec![
                pv("pv-lost", "v-lost", "Bound", 2 * HOUR),
                pv("pv-stale", "v-gone", "Released", 2 * HOUR),
                pv("pv-stuck", "v-stuck", "Released", 2 * HOUR),
            ],
            volumes: Some(vec![
                volume("v-stuck", Some(3 * HOUR)),
                volume("v-leak", Some(2 * HOUR)),
                volume("v-foreign", None),
            ]),
            claims: vec![PendingClaim {
                claim: "default/waiting".into(),
                class: "fast".into(),
                created_unix: NOW - HOUR,
                warning: Some("invalid parameter type".into()),
            }],
            ..Default::default()
        };
        assert_eq!(
            kinds(facts),
            [
                ("pv-without-volume", Severity::Critical, "pv/pv-lost".into()),
                ("volume-without-pv", Severity::High, "volume/v-leak".into()),
                (
                    "claim-pending",
                    Severity::Medium,
                    "pvc/default/waiting".into()
                ),
                ("pv-without-volume", Severity::Medium, "pv/pv-stale".into()),
                (
                    "released-not-deleted",
                    Severity::Medium,
                    "pv/pv-stuck".into()
                ),
                (
                    "volume-without-pv",
                    Severity::Low,
                    "volume/v-foreign".into()
                ),
            ]
        );
    }

    #[test]
    fn snapshots_and_their_contents_both_ways() {
        let content =
            |name: &str, handle: Option<&str>, bound: bool, age: i64| DriverSnapshotContent {
                name: name.into(),
                handle: handle.map(Into::into),
                snapshot: bound.then(|| format!("default/{name}")),
                created_unix: NOW - age,
            };
        let snapshot = |id: &str, age: Option<i64>| BackendSnapshot {
            id: id.into(),
            source_volume_id: "v".into(),
            size_bytes: 1,
            created_unix: age.map(|a| NOW - a),
        };
        let facts = Facts {
            contents: Some(vec![
                content("c-ok", Some("s-ok"), true, HOUR),
                content("c-lost", Some("s-gone"), true, HOUR),
                content("c-loose", Some("s-gone-too"), false, HOUR),
                content("c-new", Some("s-not-yet"), true, 5),
                content("c-making", None, true, HOUR),
            ]),
            snapshots: Some(vec![
                snapshot("s-ok", Some(HOUR)),
                snapshot("s-leak", Some(2 * HOUR)),
                snapshot("s-young", Some(60)),
                snapshot("s-ageless", None),
            ]),
            ..Default::default()
        };
        assert_eq!(
            kinds(facts),
            [
                (
                    "snapshot-content-without-snapshot",
                    Severity::High,
                    "volumesnapshotcontent/c-lost".into()
                ),
                (
                    "snapshot-without-content",
                    Severity::High,
                    "snapshot/s-leak".into()
                ),
                (
                    "snapshot-content-without-snapshot",
                    Severity::Medium,
                    "volumesnapshotcontent/c-loose".into()
                ),
                (
                    "snapshot-without-content",
                    Severity::Low,
                    "snapshot/s-ageless".into()
                ),
            ]
        );
        // Without the snapshot API, or a backend that lists none, nothing is judged.
        let facts = Facts {
            contents: None,
            snapshots: Some(vec![snapshot("s-leak", Some(2 * HOUR))]),
            ..Default::default()
        };
        assert_eq!(kinds(facts), []);
    }

    #[test]
    fn attachments_against_fencing_the_backend_and_time() {
        let attachment = |volume: &str, node: &str, exclusive: bool| Attachment {
            volume: volume.into(),
            node: node.into(),
            attached: true,
            exclusive,
            detaching_since_unix: None,
        };
        let mut stuck = attachment("v-ok", "n9", true);
        stuck.detaching_since_unix = Some(NOW - HOUR);
        let mut going = attachment("v-ok", "n8", true);
        going.detaching_since_unix = Some(NOW - 30);
        let view = |nodes: &[&str], abnormal: Option<&str>| VolumeView {
            published_nodes: nodes.iter().map(|n| n.to_string()).collect(),
            abnormal: abnormal.map(Into::into),
        };
        let listed = ["v-ok", "v-two", "v-shared", "v-extra", "v-sick"];
        let facts = Facts {
            volumes: Some(listed.iter().map(|v| volume(v, Some(HOUR))).collect()),
            pvs: listed
                .iter()
                .map(|v| pv(&format!("pv-{v}"), v, "Bound", HOUR))
                .collect(),
            attachments: vec![
                attachment("v-ok", "n1", true),
                stuck,
                going,
                attachment("v-two", "n1", true),
                attachment("v-two", "n2", true),
                attachment("v-shared", "n1", false),
                attachment("v-shared", "n2", false),
                attachment("v-gone", "n1", true),
                attachment("v-extra", "n1", true),
                attachment("v-sick", "n1", true),
            ],
            views: [
                ("v-ok".to_owned(), view(&["n1"], None)),
                ("v-shared".to_owned(), view(&[], None)),
                ("v-extra".to_owned(), view(&["n1", "n7"], None)),
                ("v-sick".to_owned(), view(&[], Some("disk failed"))),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        };
        assert_eq!(
            kinds(facts),
            [
                (
                    "attachment-conflict",
                    Severity::Critical,
                    "volume/v-two".into()
                ),
                (
                    "attachment-mismatch",
                    Severity::High,
                    "volume/v-extra".into()
                ),
                (
                    "attachment-without-volume",
                    Severity::High,
                    "volume/v-gone".into()
                ),
                ("volume-abnormal", Severity::High, "volume/v-sick".into()),
                ("detach-stuck", Severity::Medium, "volume/v-ok".into()),
            ]
        );
    }

    #[test]
    fn a_node_directory_nothing_explains_is_found_once_old() {
        let dir = |name: &str, age: i64| LocalDir {
            name: name.into(),
            changed_unix: NOW - age,
        };
        let facts = NodeFacts {
            root: "/var/node-local-cache".into(),
            dirs: vec![
                dir("v-known", 2 * HOUR),
                dir("stray", 2 * HOUR),
                dir("new", 60),
            ],
            known: ["v-known".to_owned()].into_iter().collect(),
            now_unix: NOW,
            ..Default::default()
        };
        let found: Vec<String> = unexplained_dirs(&facts, &Thresholds::default())
            .into_iter()
            .map(|f| f.subject)
            .collect();
        assert_eq!(found, ["dir:/var/node-local-cache/stray"]);
    }

    #[test]
    fn an_old_volume_whose_own_filesystem_is_nearly_empty_is_underused() {
        const GIB: u64 = 1 << 30;
        const WEEK: i64 = 7 * 24 * HOUR;
        let volume = |pv: &str, used: u64, total: u64, age: Option<i64>| PublishedVolume {
            pv: pv.into(),
            path: format!("/pods/p/{pv}/mount"),
            used_bytes: used,
            total_bytes: total,
            pv_capacity_bytes: age.map(|_| 100 * GIB),
            pv_created_unix: age.map(|a| NOW - a),
        };
        let facts = NodeFacts {
            published: vec![
                volume("empty", GIB, 98 * GIB, Some(2 * WEEK)),
                volume("used", 30 * GIB, 98 * GIB, Some(2 * WEEK)),
                volume("young", GIB, 98 * GIB, Some(HOUR)),
                // A node-local directory: the figures are the node's disk's, not the volume's.
                volume("shared-disk", GIB, 900 * GIB, Some(2 * WEEK)),
                // No PV of this driver by that name: nothing to hold the figures against.
                volume("no-pv", GIB, 98 * GIB, None),
            ],
            now_unix: NOW,
            ..Default::default()
        };
        let found = underused(&facts, &Thresholds::default());
        let subjects: Vec<&str> = found.iter().map(|f| f.subject.as_str()).collect();
        assert_eq!(subjects, ["pv/empty"]);
        assert_eq!(found[0].severity, Severity::Low);
        assert!(
            found[0].evidence[0].contains("uses 1073741824 of 105226698752 bytes (1.0%)"),
            "{}",
            found[0].evidence[0]
        );
    }

    #[test]
    fn a_cleanup_waiting_on_a_node_past_its_time_is_stuck() {
        let record = |volume: &str, waited: i64, pending: &[&str]| CleanupRecord {
            volume: volume.into(),
            waited_seconds: waited,
            pending: pending.iter().map(|n| n.to_string()).collect(),
            failed: vec![],
        };
        let facts = Facts {
            cleanups: vec![
                record("v-stuck", HOUR, &["n2"]),
                record("v-just-deleted", 30, &["n2"]),
                record("v-done", HOUR, &[]),
            ],
            ..Default::default()
        };
        assert_eq!(
            kinds(facts),
            [("cleanup-stuck", Severity::High, "volume/v-stuck".into())]
        );
    }

    #[test]
    fn without_a_list_of_volumes_no_orphan_is_claimed() {
        let facts = Facts {
            pvs: vec![pv("pv-a", "v-a", "Bound", 10 * HOUR)],
            volumes: None,
            ..Default::default()
        };
        assert_eq!(kinds(facts), []);
        // Only what the host recorded: a PV of a volume the host did not make (the public
        // driver's) is no finding, a recorded volume no PV names is.
        let recorded = Facts {
            pvs: vec![pv("pv-public", "v-public", "Bound", 10 * HOUR)],
            volumes: Some(vec![volume("v-ours", Some(10 * HOUR))]),
            now_unix: NOW,
            complete: false,
            ..Default::default()
        };
        let found = correlate(&recorded, &Thresholds::default());
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].subject, "volume/v-ours");
    }
}
