//! Snapshots: created once per name, deleted idempotently, listed in pages this host hands out.

use std::time::Duration;

use super::{Controller, Error, backend_error, is_not_found, lock, rules};
use crate::volume::types::{KeyValues, Snapshot, SnapshotFilter, SnapshotPage};

impl Controller {
    pub async fn create_snapshot(
        &self,
        source: &str,
        name: &str,
        parameters: KeyValues,
        secrets: KeyValues,
        timeout: Option<Duration>,
    ) -> Result<Snapshot, Error> {
        let subject = format!("snapshot {name:?} of volume {source}");
        let _guard = lock(&self.locks, &format!("snapshot/{name}"), &subject)?;
        let backend = self.backend();
        let snapshot = backend
            .create_snapshot(
                source.to_owned(),
                name.to_owned(),
                parameters,
                secrets,
                timeout,
            )
            .await
            .map_err(backend_error(subject.clone()))?;
        rules::returned_id(backend.name(), &subject, "snapshot id", &snapshot.id)?;
        tracing::info!(snapshot = %snapshot.id, volume = source, "snapshot created");
        Ok(snapshot)
    }

    /// Deletes a snapshot; one the backend no longer knows is deleted.
    pub async fn delete_snapshot(
        &self,
        id: &str,
        secrets: KeyValues,
        timeout: Option<Duration>,
    ) -> Result<(), Error> {
        let subject = format!("snapshot {id}");
        let _guard = lock(&self.locks, &format!("snapshot-id/{id}"), &subject)?;
        match self
            .backend()
            .delete_snapshot(id.to_owned(), secrets, timeout)
            .await
        {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(backend_error(subject)(e)),
        }
        tracing::info!(snapshot = id, "snapshot deleted");
        Ok(())
    }

    pub async fn list_snapshots(
        &self,
        max_entries: u32,
        starting_token: String,
        filter: SnapshotFilter,
        secrets: KeyValues,
        timeout: Option<Duration>,
    ) -> Result<SnapshotPage, Error> {
        self.check_token("snapshots", &starting_token)?;
        let subject = "list snapshots";
        let backend = self.backend();
        let page = backend
            .list_snapshots(max_entries, starting_token, filter, secrets, timeout)
            .await
            .map_err(backend_error(subject))?;
        let name = backend.name();
        rules::page_len(name, subject, page.snapshots.len(), max_entries)?;
        for snapshot in &page.snapshots {
            rules::returned_id(name, subject, "snapshot id", &snapshot.id)?;
            rules::returned_id(
                name,
                subject,
                "source volume id",
                &snapshot.source_volume_id,
            )?;
        }
        self.tokens.issue("snapshots", &page.next_token);
        Ok(page)
    }
}
