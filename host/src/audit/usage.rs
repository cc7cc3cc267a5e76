//! What this driver's volumes take: provisioned bytes per StorageClass (against what the
//! backend says is still free, where it answers `get-capacity`, and against what its pool holds
//! in all, where it answers `get-pool`: thin-provisioning overcommit) and per namespace. Pure,
//! like [`super::correlate`].

use std::collections::BTreeMap;

use serde::Serialize;

use super::finding::{Finding, Severity, size};
use crate::kube::inventory::DriverPv;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClassUsage {
    pub class: String,
    pub volumes: usize,
    pub provisioned_bytes: u64,
    /// What the backend says is free for this class's parameters; `None` when it does not
    /// answer `get-capacity`.
    pub available_bytes: Option<u64>,
    /// What the pool this class's volumes come from holds in all; `None` when the backend does
    /// not answer `get-pool`.
    pub pool_bytes: Option<u64>,
    /// Provisioned bytes as a percentage of the pool's (over 100: overcommitted).
    pub overcommit_percent: Option<u64>,
}

impl ClassUsage {
    /// What the backend said of the class's storage, for people: `120 GiB free, 80% of a 1 TiB
    /// pool`.
    pub fn storage_text(&self) -> String {
        let mut text =
            (self.available_bytes).map_or("free unknown".into(), |b| format!("{} free", size(b)));
        if let (Some(pool), Some(percent)) = (self.pool_bytes, self.overcommit_percent) {
            text += &format!(", {percent}% of a {} pool", size(pool));
        }
        text
    }
}

/// What the backend says of a class's storage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackendFigures {
    pub available_bytes: Option<u64>,
    pub pool_bytes: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NamespaceUsage {
    pub namespace: String,
    pub volumes: usize,
    pub provisioned_bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub volumes: usize,
    pub provisioned_bytes: u64,
    /// By StorageClass name (`(none)` for PVs without one), largest first.
    pub classes: Vec<ClassUsage>,
    /// By the namespace of the volume's claim (`(unclaimed)` without one), largest first.
    pub namespaces: Vec<NamespaceUsage>,
}

/// What counts: PVs that still hold storage (every phase but `Failed` with its volume gone is
/// the backend's business, so every PV of the driver counts).
pub fn usage(
    pvs: &[DriverPv],
    classes: &[String],
    figures: &BTreeMap<String, BackendFigures>,
) -> Usage {
    let mut by_class: BTreeMap<String, ClassUsage> = classes
        .iter()
        .map(|c| {
            let figures = figures.get(c).copied().unwrap_or_default();
            let usage = ClassUsage {
                class: c.clone(),
                available_bytes: figures.available_bytes,
                pool_bytes: figures.pool_bytes,
                ..Default::default()
            };
            (c.clone(), usage)
        })
        .collect();
    let mut by_namespace: BTreeMap<String, NamespaceUsage> = BTreeMap::new();
    for pv in pvs {
        let class = pv.class.clone().unwrap_or_else(|| "(none)".into());
        let entry = by_class.entry(class.clone()).or_insert_with(|| ClassUsage {
            class,
            ..Default::default()
        });
        entry.volumes += 1;
        entry.provisioned_bytes += pv.capacity_bytes;
        let namespace = pv
            .claim
            .as_deref()
            .and_then(|c| c.split_once('/'))
            .map_or("(unclaimed)", |(ns, _)| ns)
            .to_owned();
        let entry = by_namespace
            .entry(namespace.clone())
            .or_insert_with(|| NamespaceUsage {
                namespace,
                ..Default::default()
            });
        entry.volumes += 1;
        entry.provisioned_bytes += pv.capacity_bytes;
    }
    let mut classes: Vec<ClassUsage> = by_class.into_values().collect();
    for c in &mut classes {
        c.overcommit_percent = (c.pool_bytes)
            .filter(|pool| *pool > 0)
            .map(|pool| (c.provisioned_bytes as u128 * 100 / pool as u128) as u64);
    }
    classes.sort_by_key(|c| std::cmp::Reverse(c.provisioned_bytes));
    let mut namespaces: Vec<NamespaceUsage> = by_namespace.into_values().collect();
    namespaces.sort_by_key(|n| std::cmp::Reverse(n.provisioned_bytes));
    Usage {
        volumes: pvs.len(),
        provisioned_bytes: pvs.iter().map(|p| p.capacity_bytes).sum(),
        classes,
        namespaces,
    }
}

/// Classes whose volumes were promised more than their pool holds: thin provisioning lets that
/// be, until the volumes fill the pool and every writer on it fails.
pub fn overcommit_findings(usage: &Usage) -> Vec<Finding> {
    (usage.classes.iter())
        .filter_map(|c| {
            let (pool, percent) = (c.pool_bytes?, c.overcommit_percent?);
            (percent > 100).then(|| Finding {
                kind: "overcommitted",
                severity: Severity::Medium,
                subject: format!("storageclass/{}", c.class),
                evidence: vec![format!(
                    "{} volumes were promised {} bytes; their pool holds {pool} ({percent}%)",
                    c.volumes, c.provisioned_bytes
                )],
                age_seconds: None,
                remediation: "watch the pool's free space (capacity-low comes next): grow the \
                              pool, or move volumes to other storage, before they fill it"
                    .into(),
            })
        })
        .collect()
}

/// Classes whose storage is nearly full: what is free is under a tenth (MEDIUM), a twentieth
/// (HIGH) of what is provisioned plus free, or nothing at all (CRITICAL).
pub fn capacity_findings(usage: &Usage) -> Vec<Finding> {
    let mut found = vec![];
    for c in &usage.classes {
        let Some(free) = c.available_bytes else {
            continue;
        };
        let whole = c.provisioned_bytes + free;
        let severity = match free {
            0 => Severity::Critical,
            _ if free * 20 < whole => Severity::High,
            _ if free * 10 < whole => Severity::Medium,
            _ => continue,
        };
        found.push(Finding {
            kind: "capacity-low",
            severity,
            subject: format!("storageclass/{}", c.class),
            evidence: vec![format!(
                "{} volumes provision {} bytes; the backend has {free} bytes free for this class",
                c.volumes, c.provisioned_bytes
            )],
            age_seconds: None,
            remediation: "add storage to the backend, or delete volumes nothing needs (see the \
                          orphan findings)"
                .into(),
        });
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pv(claim: Option<&str>, class: Option<&str>, gib: u64) -> DriverPv {
        DriverPv {
            name: "pv".into(),
            volume: "v".into(),
            phase: "Bound".into(),
            reclaim: "Delete".into(),
            claim: claim.map(Into::into),
            class: class.map(Into::into),
            capacity_bytes: gib << 30,
            created_unix: 0,
        }
    }

    #[test]
    fn totals_by_class_and_namespace_largest_first() {
        let pvs = [
            pv(Some("a/x"), Some("fast"), 1),
            pv(Some("a/y"), Some("slow"), 4),
            pv(Some("b/z"), Some("fast"), 2),
            pv(None, None, 1),
        ];
        let classes = ["fast".to_owned(), "slow".to_owned(), "empty".to_owned()];
        let figures = BackendFigures {
            available_bytes: Some(10 << 30),
            pool_bytes: Some(2 << 30),
        };
        let u = usage(&pvs, &classes, &[("fast".to_owned(), figures)].into());
        assert_eq!((u.volumes, u.provisioned_bytes), (4, 8 << 30));
        let classes: Vec<(&str, usize, u64, Option<u64>)> = u
            .classes
            .iter()
            .map(|c| {
                (
                    c.class.as_str(),
                    c.volumes,
                    c.provisioned_bytes >> 30,
                    c.available_bytes,
                )
            })
            .collect();
        assert_eq!(
            classes,
            [
                ("slow", 1, 4, None),
                ("fast", 2, 3, Some(10 << 30)),
                ("(none)", 1, 1, None),
                ("empty", 0, 0, None),
            ]
        );
        let namespaces: Vec<(&str, u64)> = u
            .namespaces
            .iter()
            .map(|n| (n.namespace.as_str(), n.provisioned_bytes >> 30))
            .collect();
        assert_eq!(namespaces, [("a", 5), ("b", 2), ("(unclaimed)", 1)]);
        // 3 GiB promised from a pool of 2: 150%, overcommitted; no figure, no finding.
        assert_eq!(u.classes[1].overcommit_percent, Some(150));
        assert_eq!(u.classes[0].overcommit_percent, None);
        let found: Vec<String> = overcommit_findings(&u)
            .into_iter()
            .map(|f| f.subject)
            .collect();
        assert_eq!(found, ["storageclass/fast"]);
    }

    #[test]
    fn nearly_full_classes_are_findings_by_how_full() {
        let class = |name: &str, provisioned: u64, free: Option<u64>| ClassUsage {
            class: name.into(),
            volumes: 1,
            provisioned_bytes: provisioned,
            available_bytes: free,
            ..Default::default()
        };
        let u = Usage {
            classes: vec![
                class("roomy", 50, Some(50)),
                class("tight", 92, Some(8)),
                class("tighter", 97, Some(3)),
                class("full", 100, Some(0)),
                class("unknown", 100, None),
            ],
            ..Default::default()
        };
        let found: Vec<(String, Severity)> = capacity_findings(&u)
            .into_iter()
            .map(|f| (f.subject, f.severity))
            .collect();
        assert_eq!(
            found,
            [
                ("storageclass/tight".into(), Severity::Medium),
                ("storageclass/tighter".into(), Severity::High),
                ("storageclass/full".into(), Severity::Critical),
            ]
        );
    }
}
