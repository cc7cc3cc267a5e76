//! The CSI rules the host enforces for every backend, whatever the backend does. Each row is
//! tested with a test backend that breaks it (tests/tests/integration/csi_rules.rs).
//!
//! | RPC | rule | answer |
//! |---|---|---|
//! | CreateVolume | same name, compatible request → the recorded volume, from the host's record | OK |
//! | CreateVolume | same name, other capacity, capabilities, parameters or source | ALREADY_EXISTS |
//! | CreateVolume | returned capacity outside the requested range | INTERNAL naming the backend |
//! | CreateVolume | content-source ids are identifiers | INVALID_ARGUMENT |
//! | DeleteVolume, DeleteSnapshot | NOT_FOUND from the backend | OK |
//! | ValidateVolumeCapabilities | a volume neither recorded nor known to the backend (get-volume) | NOT_FOUND |
//! | ListVolumes, ListSnapshots | a page longer than max_entries, or with an unusable id | INTERNAL naming the backend |
//! | ListVolumes, ListSnapshots | a starting token this host did not hand out | ABORTED |
//! | capabilities | advertised only when served: online expansion only where the node grows filesystems (backends exporting `publish`), PUBLISH_READONLY needs the publish interface | — |
//! | NodeGetVolumeStats | a volume not published at the path (relative or absolute) | NOT_FOUND |
//! | every RPC | node ids ≤ 256 bytes; parameters, contexts and secrets ≤ 4 KiB | INVALID_ARGUMENT |
//! | backend output | ids, contexts (≤ 4 KiB, no `modcsi.io/` key) and attachment fields (IP or DNS addresses, non-zero ports, NQN grammar, one-component by-id names) | INTERNAL naming the backend |

use std::collections::HashMap;

use super::Error;
use crate::volume::attachment::{self, RESERVED_PREFIX};
use crate::volume::types;
use crate::volume::validate;

/// A broken rule on the backend's side: INTERNAL, naming the backend.
pub fn broken(backend: &str, subject: &str, what: impl std::fmt::Display) -> Error {
    Error::Internal(format!("{subject}: backend {backend} {what}"))
}

/// The returned capacity must lie inside the requested range.
pub fn capacity_in_range(
    backend: &str,
    subject: &str,
    returned: u64,
    range: &types::CapacityRange,
) -> Result<(), Error> {
    let too_small = returned < range.required_bytes;
    let too_big = range.limit_bytes != 0 && returned > range.limit_bytes;
    if too_small || too_big {
        return Err(broken(
            backend,
            subject,
            format!(
                "returned a volume of {returned} bytes for the range [{}, {}]",
                range.required_bytes,
                if range.limit_bytes == 0 {
                    "unbounded".to_owned()
                } else {
                    range.limit_bytes.to_string()
                }
            ),
        ));
    }
    Ok(())
}

/// A list page must not exceed what was asked for (0 means no limit).
pub fn page_len(backend: &str, subject: &str, len: usize, max_entries: u32) -> Result<(), Error> {
    if max_entries != 0 && len > max_entries as usize {
        return Err(broken(
            backend,
            subject,
            format!("returned {len} entries for max_entries {max_entries}"),
        ));
    }
    Ok(())
}

/// An id the backend returned must be usable as an id.
pub fn returned_id<'a>(
    backend: &str,
    subject: &str,
    what: &'static str,
    id: &'a str,
) -> Result<&'a str, Error> {
    validate::token(what, id).map_err(|e| {
        broken(
            backend,
            subject,
            format!("returned an unusable {what}: {e}"),
        )
    })
}

/// The context the CO gets back: the backend's keys (≤ 4 KiB, none reserved) plus the
/// validated attachment under the host's reserved prefix.
pub fn host_context(
    backend: &str,
    subject: &str,
    context: types::KeyValues,
    attachment: Option<&types::Attachment>,
) -> Result<HashMap<String, String>, Error> {
    if let Some((key, _)) = context.iter().find(|(k, _)| k.starts_with(RESERVED_PREFIX)) {
        return Err(broken(
            backend,
            subject,
            format!("set the reserved context key {key}"),
        ));
    }
    let mut map: HashMap<String, String> = context.into_iter().collect();
    validate::map_size("context", &map).map_err(|e| {
        broken(
            backend,
            subject,
            format!("returned a context that is too large: {e}"),
        )
    })?;
    if let Some(a) = attachment {
        attachment::validate(a).map_err(|e| {
            broken(
                backend,
                subject,
                format!("returned an unusable attachment: {e}"),
            )
        })?;
        attachment::encode(a, &mut map);
    }
    Ok(map)
}

/// A created or listed volume's context: [`host_context`], and for a node-local directory the
/// size the node enforces on it.
pub fn volume_context(
    backend: &str,
    subject: &str,
    volume: &types::Volume,
) -> Result<HashMap<String, String>, Error> {
    let mut map = host_context(
        backend,
        subject,
        volume.context.clone(),
        volume.attachment.as_ref(),
    )?;
    if matches!(volume.attachment, Some(types::Attachment::LocalDir)) && volume.capacity_bytes > 0 {
        map.insert(
            attachment::LOCAL_DIR_BYTES.to_owned(),
            volume.capacity_bytes.to_string(),
        );
    }
    Ok(map)
}

/// Refuses a capability the backend did not declare.
pub fn supported(cap: &types::Capability, info: &types::BackendInfo) -> Result<(), Error> {
    let (mode_name, offered) = match cap.access_type {
        types::AccessType::Block => ("block", info.volume_modes.block),
        types::AccessType::Mount(_) => ("filesystem", info.volume_modes.filesystem),
    };
    if !offered {
        return Err(Error::InvalidArgument(format!(
            "backend {} does not offer {mode_name} volumes",
            info.name
        )));
    }
    if !info.access_modes.contains(&cap.access_mode) {
        return Err(Error::InvalidArgument(format!(
            "backend {} does not offer access mode {:?}",
            info.name, cap.access_mode
        )));
    }
    Ok(())
}

/// Refuses a CO-supplied map over 4 KiB.
pub fn map_from_co(what: &'static str, map: &HashMap<String, String>) -> Result<(), Error> {
    validate::map_size(what, map).map_err(Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_and_pages() {
        let range = types::CapacityRange {
            required_bytes: 10,
            limit_bytes: 20,
        };
        assert!(capacity_in_range("b", "s", 10, &range).is_ok());
        assert!(capacity_in_range("b", "s", 20, &range).is_ok());
        for bad in [9, 21] {
            let err = capacity_in_range("b", "create volume x", bad, &range).unwrap_err();
            assert!(matches!(err, Error::Internal(_)), "{err}");
            assert!(err.to_string().contains("backend b"), "{err}");
        }
        let open = types::CapacityRange {
            required_bytes: 0,
            limit_bytes: 0,
        };
        assert!(capacity_in_range("b", "s", u64::MAX, &open).is_ok());
        assert!(page_len("b", "s", 3, 3).is_ok());
        assert!(page_len("b", "s", 300, 0).is_ok());
        assert!(page_len("b", "s", 4, 3).is_err());
    }

    #[test]
    fn backend_contexts() {
        assert!(host_context("b", "s", vec![("modcsi.io/x".into(), "1".into())], None).is_err());
        assert!(host_context("b", "s", vec![("k".into(), "v".repeat(5000))], None).is_err());
        let bad = types::Attachment::Disk(types::DiskLocator::ById("../../sda".into()));
        assert!(host_context("b", "s", vec![], Some(&bad)).is_err());
        let ok = host_context(
            "b",
            "s",
            vec![("k".into(), "v".into())],
            Some(&types::Attachment::LocalDir),
        )
        .unwrap();
        assert_eq!(ok.len(), 2);
    }
}
