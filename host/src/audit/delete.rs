//! `modcsi audit --delete`: deletes the volumes no PV names, through the driver's own
//! DeleteVolume (its CSI endpoint), so that every rule the driver keeps on deletion holds
//! (node-local cleanup, a published volume refused, idempotency). Dry run unless asked
//! otherwise. Only a volume whose age the host recorded and that is older than both the grace
//! and the orphan age is a candidate, and the PVs are read again just before: a volume a PV
//! names by then is left alone. Every deletion is logged and noted by an Event on the driver's
//! CSIDriver object.

use std::collections::HashSet;

use serde::Serialize;

use super::finding::{Report, Severity};
use super::scan::{Auditor, ScanError};
use crate::client::CsiClient;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deletion {
    pub volume: String,
    /// `would delete` (dry run), `deleted`, `left alone: …` or `failed: …`.
    pub outcome: String,
}

/// The volumes a deletion may take: orphans of a known age past the orphan age (correlation
/// gives those HIGH; an unknown age is LOW and never deleted).
fn candidates(report: &Report) -> Vec<String> {
    report
        .findings
        .iter()
        .filter(|f| f.kind == "volume-without-pv" && f.severity >= Severity::High)
        .filter_map(|f| f.subject.strip_prefix("volume/").map(str::to_owned))
        .collect()
}

impl Auditor {
    /// Deletes (or, in a dry run, lists) the orphaned volumes of `report` through the CSI
    /// controller at `endpoint`.
    pub async fn delete_orphans(
        &self,
        report: &Report,
        endpoint: &str,
        dry_run: bool,
    ) -> Result<Vec<Deletion>, ScanError> {
        let wanted = candidates(report);
        if wanted.is_empty() {
            return Ok(vec![]);
        }
        let named: HashSet<String> = self
            .cluster()
            .driver_pvs()
            .await?
            .into_iter()
            .map(|pv| pv.volume)
            .collect();
        let mut client = match dry_run {
            true => None,
            false => Some(
                CsiClient::connect(endpoint)
                    .await
                    .map_err(|e| ScanError::Csi(e.to_string()))?,
            ),
        };
        let mut done = vec![];
        for volume in wanted {
            let outcome = if named.contains(&volume) {
                "left alone: a PV names it now".to_owned()
            } else if let Some(client) = &mut client {
                let request = crate::proto::DeleteVolumeRequest {
                    volume_id: volume.clone(),
                    ..Default::default()
                };
                match client.controller.delete_volume(request).await {
                    Ok(_) => {
                        tracing::info!(volume, "audit: deleted a volume no PV names");
                        let message = format!(
                            "modcsi audit deleted volume {volume}: no PersistentVolume named it"
                        );
                        if let Err(e) = self
                            .cluster()
                            .note_on_driver("OrphanDeleted", &message)
                            .await
                        {
                            tracing::warn!(volume, "cannot post an Event: {e}");
                        }
                        "deleted".to_owned()
                    }
                    Err(status) => {
                        let why = format!(
                            "failed: {} {}",
                            crate::csi::canonical_name(status.code()),
                            status.message()
                        );
                        tracing::warn!(volume, "audit: {why}");
                        why
                    }
                }
            } else {
                "would delete".to_owned()
            };
            done.push(Deletion { volume, outcome });
        }
        Ok(done)
    }
}
