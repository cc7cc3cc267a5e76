//! Configuration checks: is what is installed what this backend needs? The backend answers its
//! probe; the CSIDriver object exists and says what the backend needs; the backend takes every
//! StorageClass's parameters; every node registered the driver; the sidecars the backend's
//! features need run and are ready; the audit may read what it reads. Pure:
//! [`scan`](super::scan) gathers the facts.

use std::collections::BTreeMap;

use serde::Serialize;

use super::finding::{Finding, Severity};
use crate::kube::inventory::{DriverObject, RunningContainer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    /// Nothing to look at (no nodes yet; the driver runs no pods here).
    Skip,
}

impl Status {
    fn of(passed: bool) -> Self {
        if passed { Status::Pass } else { Status::Fail }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    /// What was seen, passed or not.
    pub detail: String,
    /// How bad a failure is.
    #[serde(skip)]
    pub severity: Severity,
    #[serde(skip)]
    pub remediation: &'static str,
}

#[derive(Debug, Clone)]
pub struct ConfigFacts {
    /// The backend's probe: `Err` with why it is not ready.
    pub probe: Result<(), String>,
    pub driver_object: Option<DriverObject>,
    /// StorageClass name → the backend's `validate-parameters` answer for its parameters (`Err`:
    /// it could not tell); `None` when the backend does not export `parameters`.
    pub class_parameters: Option<BTreeMap<String, Result<Vec<String>, String>>>,
    /// The backend publishes through the controller (ControllerPublishVolume).
    pub needs_attach: bool,
    pub snapshots: bool,
    pub expansion: bool,
    /// Node name → whether its CSINode registers the driver.
    pub registrations: BTreeMap<String, bool>,
    pub containers: Vec<RunningContainer>,
    /// What the audit must be allowed, and whether it is.
    pub rights: Vec<(String, bool)>,
}

/// The sidecar a feature needs, by its container name in the chart (`csi-<name>`) or image.
fn sidecar<'a>(containers: &'a [RunningContainer], name: &str) -> Vec<&'a RunningContainer> {
    containers
        .iter()
        .filter(|c| c.name.contains(name) || c.image.contains(name))
        .collect()
}

fn version(image: &str) -> &str {
    image
        .rsplit_once(':')
        .filter(|(_, tag)| !tag.contains('/'))
        .map_or("untagged", |(_, tag)| tag)
}

pub fn checks(f: &ConfigFacts) -> Vec<Check> {
    let mut out = vec![];
    let mut check = |name, status, detail: String, severity, remediation| {
        out.push(Check {
            name,
            status,
            detail,
            severity,
            remediation,
        })
    };
    check(
        "backend-probe",
        Status::of(f.probe.is_ok()),
        match &f.probe {
            Ok(()) => "the backend answers its probe".into(),
            Err(e) => format!("the backend's probe failed: {e}"),
        },
        Severity::Critical,
        "see the backend's configuration and whether its storage system is reachable",
    );
    match &f.driver_object {
        None => check(
            "csidriver",
            Status::Fail,
            "no CSIDriver object of this name".into(),
            Severity::High,
            "install the chart's csidriver.yaml: without it kubelet and the attach-detach \
             controller guess what the driver needs",
        ),
        Some(d) => {
            let mut wrong = vec![];
            if d.attach_required != f.needs_attach {
                wrong.push(format!(
                    "attachRequired is {} but the backend {} ControllerPublishVolume",
                    d.attach_required,
                    if f.needs_attach { "needs" } else { "has no" }
                ));
            }
            check(
                "csidriver",
                Status::of(wrong.is_empty()),
                if wrong.is_empty() {
                    format!(
                        "attachRequired {}, podInfoOnMount {}, storageCapacity {}",
                        d.attach_required, d.pod_info_on_mount, d.storage_capacity
                    )
                } else {
                    wrong.join("; ")
                },
                Severity::High,
                "set the chart's csiDriver values to what the backend needs",
            )
        }
    }
    let (status, detail) = class_parameters(f.class_parameters.as_ref());
    check(
        "storageclass-parameters",
        status,
        detail,
        Severity::High,
        "a StorageClass's parameters cannot be edited: make a class with the parameters the \
         backend takes and move new claims to it, then delete the old one",
    );
    let missing: Vec<&str> = f
        .registrations
        .iter()
        .filter(|(_, ok)| !**ok)
        .map(|(n, _)| n.as_str())
        .collect();
    check(
        "csinode",
        match (f.registrations.is_empty(), missing.is_empty()) {
            (true, _) => Status::Skip,
            (false, ok) => Status::of(ok),
        },
        if f.registrations.is_empty() {
            "the cluster has no nodes".into()
        } else if missing.is_empty() {
            format!("registered on all {} nodes", f.registrations.len())
        } else {
            format!(
                "not registered on {} of {} nodes: {}",
                missing.len(),
                f.registrations.len(),
                missing.join(", ")
            )
        },
        Severity::Medium,
        "pods using the driver cannot start there: see the node plugin's pod and its \
         node-driver-registrar on those nodes (a nodeSelector or taint keeping it away?)",
    );
    let mut wanted = vec![("provisioner", true), ("node-driver-registrar", true)];
    wanted.push(("attacher", f.needs_attach));
    wanted.push(("resizer", f.expansion));
    wanted.push(("snapshotter", f.snapshots));
    let mut seen = vec![];
    let mut absent = vec![];
    for (name, needed) in wanted {
        let running = sidecar(&f.containers, name);
        if running.is_empty() {
            if needed {
                absent.push(name.to_owned());
            }
            continue;
        }
        let ready = running.iter().filter(|c| c.ready).count();
        let mut versions: Vec<&str> = running.iter().map(|c| version(&c.image)).collect();
        versions.dedup();
        seen.push(format!(
            "{name} {} ({ready}/{} ready)",
            versions.join(","),
            running.len()
        ));
        if ready < running.len() {
            absent.push(format!("{name} not ready"));
        }
    }
    check(
        "sidecars",
        match (f.containers.is_empty(), absent.is_empty()) {
            (true, _) => Status::Skip,
            (false, ok) => Status::of(ok),
        },
        if f.containers.is_empty() {
            "the driver runs no pods in its namespace (not installed by the chart?)".into()
        } else if absent.is_empty() {
            seen.join("; ")
        } else {
            format!(
                "missing: {}; running: {}",
                absent.join(", "),
                seen.join("; ")
            )
        },
        Severity::High,
        "enable the sidecars the backend's features need in the chart's values",
    );
    let denied: Vec<&str> = f
        .rights
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(r, _)| r.as_str())
        .collect();
    check(
        "rbac",
        Status::of(denied.is_empty()),
        if denied.is_empty() {
            format!("all {} rights the audit uses are granted", f.rights.len())
        } else {
            format!("denied: {}", denied.join(", "))
        },
        Severity::Medium,
        "bind the audit's ClusterRole from the chart to the account it runs as",
    );
    out
}

/// What the backend said of each StorageClass's parameters: a failure naming each class with
/// a problem; a skip when there is nothing to ask, or the backend could not tell.
fn class_parameters(
    answers: Option<&BTreeMap<String, Result<Vec<String>, String>>>,
) -> (Status, String) {
    let Some(answers) = answers else {
        return (
            Status::Skip,
            "the backend does not check parameters (no `parameters` interface, contract 0.2.3)"
                .into(),
        );
    };
    if answers.is_empty() {
        return (Status::Skip, "no StorageClass names the driver".into());
    }
    let said = |pick: fn(&Result<Vec<String>, String>) -> Option<String>| -> Vec<String> {
        answers
            .iter()
            .filter_map(|(class, answer)| Some(format!("{class}: {}", pick(answer)?)))
            .collect()
    };
    let wrong = said(|a| {
        a.as_ref()
            .ok()
            .filter(|p| !p.is_empty())
            .map(|p| p.join("; "))
    });
    let unknown = said(|a| a.as_ref().err().map(|e| format!("could not tell ({e})")));
    match (wrong.is_empty(), unknown.is_empty()) {
        (false, _) => (Status::Fail, [wrong, unknown].concat().join(" | ")),
        (true, false) => (Status::Skip, unknown.join(" | ")),
        (true, true) => (
            Status::Pass,
            format!(
                "the backend takes the parameters of all {} classes",
                answers.len()
            ),
        ),
    }
}

/// A finding for each failed check.
pub fn check_findings(checks: &[Check]) -> Vec<Finding> {
    checks
        .iter()
        .filter(|c| c.status == Status::Fail)
        .map(|c| Finding {
            kind: "config-check",
            severity: c.severity,
            subject: format!("check/{}", c.name),
            evidence: vec![c.detail.clone()],
            age_seconds: None,
            remediation: c.remediation.into(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(name: &str, image: &str, ready: bool) -> RunningContainer {
        RunningContainer {
            pod: "p".into(),
            node: None,
            name: name.into(),
            image: image.into(),
            ready,
        }
    }

    fn healthy() -> ConfigFacts {
        ConfigFacts {
            probe: Ok(()),
            driver_object: Some(DriverObject {
                attach_required: true,
                pod_info_on_mount: false,
                storage_capacity: false,
            }),
            class_parameters: Some([("fast".to_owned(), Ok(vec![]))].into_iter().collect()),
            needs_attach: true,
            snapshots: false,
            expansion: true,
            registrations: [("n1".to_owned(), true)].into_iter().collect(),
            containers: vec![
                container("csi-provisioner", "r/csi-provisioner:v6.3.0", true),
                container("csi-attacher", "r/csi-attacher:v4.12.0", true),
                container("csi-resizer", "localhost:5000/csi-resizer:v2.1.0", true),
                container(
                    "node-driver-registrar",
                    "r/node-driver-registrar:v2.17.0",
                    true,
                ),
            ],
            rights: vec![("list persistentvolumes".into(), true)],
        }
    }

    fn failed(f: &ConfigFacts) -> Vec<(&'static str, String)> {
        checks(f)
            .into_iter()
            .filter(|c| c.status == Status::Fail)
            .map(|c| (c.name, c.detail))
            .collect()
    }

    fn detail_of<'a>(failures: &'a [(&'static str, String)], name: &str) -> &'a str {
        &failures.iter().find(|(n, _)| *n == name).unwrap().1
    }

    #[test]
    fn a_healthy_install_passes_every_check_and_names_versions() {
        let all = checks(&healthy());
        assert!(all.iter().all(|c| c.status == Status::Pass), "{all:?}");
        let sidecars = all.iter().find(|c| c.name == "sidecars").unwrap();
        assert!(
            sidecars.detail.contains("provisioner v6.3.0 (1/1 ready)")
                && sidecars.detail.contains("resizer v2.1.0"),
            "{}",
            sidecars.detail
        );
        assert!(check_findings(&all).is_empty());
    }

    #[test]
    fn each_misconfiguration_fails_its_check() {
        let mut f = healthy();
        f.probe = Err("storage unreachable".into());
        f.driver_object.as_mut().unwrap().attach_required = false;
        f.registrations.insert("n2".into(), false);
        f.containers.retain(|c| c.name != "csi-attacher");
        f.containers[0].ready = false;
        f.rights.push(("create events".into(), false));
        let parameters = f.class_parameters.as_mut().unwrap();
        parameters.insert(
            "typo".into(),
            Ok(vec!["the parameter tpye is unread".into()]),
        );
        parameters.insert("dark".into(), Err("storage unreachable".into()));
        let failures = failed(&f);
        let names: Vec<&str> = failures.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "backend-probe",
                "csidriver",
                "storageclass-parameters",
                "csinode",
                "sidecars",
                "rbac"
            ]
        );
        assert_eq!(
            detail_of(&failures, "storageclass-parameters"),
            "typo: the parameter tpye is unread | dark: could not tell (storage unreachable)"
        );
        let detail = |name| detail_of(&failures, name);
        assert!(detail("csidriver").contains("attachRequired is false but the backend needs"));
        assert!(detail("csinode").contains("1 of 2 nodes: n2"));
        assert!(
            detail("sidecars").contains("attacher")
                && detail("sidecars").contains("provisioner not ready"),
            "{}",
            detail("sidecars")
        );
        assert!(detail("rbac").contains("create events"));
        let findings = check_findings(&checks(&f));
        assert_eq!(findings[0].severity, Severity::Critical);
        assert_eq!(findings[0].subject, "check/backend-probe");
        // A sidecar nothing needs is no failure when absent.
        let mut f = healthy();
        f.expansion = false;
        f.containers.retain(|c| c.name != "csi-resizer");
        assert_eq!(failed(&f), []);
        // No nodes, no pods of the driver, a backend that does not check parameters: nothing
        // to check, not a failure.
        let mut f = healthy();
        f.registrations.clear();
        f.containers.clear();
        f.class_parameters = None;
        let skipped: Vec<&str> = checks(&f)
            .into_iter()
            .filter(|c| c.status == Status::Skip)
            .map(|c| c.name)
            .collect();
        assert_eq!(skipped, ["storageclass-parameters", "csinode", "sidecars"]);
        // Nor is a backend that cannot tell.
        let mut f = healthy();
        let unknown = Err("storage unreachable".to_owned());
        f.class_parameters = Some([("dark".to_owned(), unknown)].into_iter().collect());
        assert_eq!(failed(&f), []);
    }
}
