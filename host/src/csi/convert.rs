//! Translation between CSI messages and the backend's WIT types, with the checks the CSI spec
//! asks of every request (capabilities present and complete, sane capacity ranges).

use super::Error;
use crate::proto;
use crate::proto::volume_capability::access_mode::Mode as CsiMode;
use crate::runtime::{Backend, Optional};
use crate::volume::types;
use crate::volume::validate;

pub use crate::volume::types::key_values;

pub fn capability(cap: &proto::VolumeCapability) -> Result<types::Capability, Error> {
    let access_type = match &cap.access_type {
        Some(proto::volume_capability::AccessType::Block(_)) => types::AccessType::Block,
        Some(proto::volume_capability::AccessType::Mount(m)) => {
            types::AccessType::Mount(types::MountVolume {
                fs_type: m.fs_type.clone(),
                mount_flags: m.mount_flags.clone(),
                volume_mount_group: m.volume_mount_group.clone(),
            })
        }
        None => {
            return Err(invalid(
                "volume capability has no access type (block or mount)",
            ));
        }
    };
    let mode = cap
        .access_mode
        .as_ref()
        .map(|m| m.mode())
        .ok_or_else(|| invalid("volume capability has no access mode"))?;
    let access_mode = match mode {
        CsiMode::SingleNodeWriter => types::AccessMode::SingleNodeWriter,
        CsiMode::SingleNodeReaderOnly => types::AccessMode::SingleNodeReaderOnly,
        CsiMode::MultiNodeReaderOnly => types::AccessMode::MultiNodeReaderOnly,
        CsiMode::MultiNodeSingleWriter => types::AccessMode::MultiNodeSingleWriter,
        CsiMode::MultiNodeMultiWriter => types::AccessMode::MultiNodeMultiWriter,
        CsiMode::SingleNodeSingleWriter => types::AccessMode::SingleNodeSingleWriter,
        CsiMode::SingleNodeMultiWriter => types::AccessMode::SingleNodeMultiWriter,
        CsiMode::Unknown => return Err(invalid("volume capability has an unknown access mode")),
    };
    Ok(types::Capability {
        access_type,
        access_mode,
    })
}

/// Converts a non-empty list of capabilities and checks each against what the backend offers.
pub fn capabilities(
    caps: &[proto::VolumeCapability],
    info: &types::BackendInfo,
) -> Result<Vec<types::Capability>, Error> {
    if caps.is_empty() {
        return Err(invalid("volume capabilities are required"));
    }
    let converted = caps.iter().map(capability).collect::<Result<Vec<_>, _>>()?;
    for cap in &converted {
        crate::lifecycle::rules::supported(cap, info)?;
    }
    Ok(converted)
}

pub fn capacity_range(range: Option<&proto::CapacityRange>) -> Result<types::CapacityRange, Error> {
    let Some(range) = range else {
        return Ok(types::CapacityRange {
            required_bytes: 0,
            limit_bytes: 0,
        });
    };
    let required = u64::try_from(range.required_bytes).map_err(|_| {
        invalid(format!(
            "required_bytes {} is negative",
            range.required_bytes
        ))
    })?;
    let limit = u64::try_from(range.limit_bytes)
        .map_err(|_| invalid(format!("limit_bytes {} is negative", range.limit_bytes)))?;
    if limit != 0 && required > limit {
        return Err(invalid(format!(
            "required_bytes {required} exceeds limit_bytes {limit}"
        )));
    }
    Ok(types::CapacityRange {
        required_bytes: required,
        limit_bytes: limit,
    })
}

/// The volume's content source, with a valid id, refused unless the backend declares it can
/// start volumes from snapshots (and exports `snapshots`) or from other volumes.
pub fn content_source(
    source: Option<&proto::VolumeContentSource>,
    backend: &Backend,
) -> Result<Option<types::ContentSource>, Error> {
    use proto::volume_content_source::Type;
    let Some(kind) = source.and_then(|s| s.r#type.as_ref()) else {
        return Ok(None);
    };
    let declared = backend.info().content_sources;
    let (source, offered, what) = match kind {
        Type::Snapshot(s) => (
            types::ContentSource::Snapshot(
                validate::token("source snapshot id", &s.snapshot_id)?.to_owned(),
            ),
            declared.snapshot && backend.offers(Optional::Snapshots),
            "snapshots",
        ),
        Type::Volume(v) => (
            types::ContentSource::Volume(
                validate::token("source volume id", &v.volume_id)?.to_owned(),
            ),
            declared.volume,
            "other volumes",
        ),
    };
    if !offered {
        return Err(invalid(format!(
            "backend {} cannot create volumes from {what}",
            backend.name()
        )));
    }
    Ok(Some(source))
}

fn topology_list(list: &[proto::Topology]) -> Vec<types::Topology> {
    list.iter().map(|t| key_values(&t.segments)).collect()
}

pub fn topology_requirement(
    req: Option<&proto::TopologyRequirement>,
) -> Option<types::TopologyRequirement> {
    req.map(|r| types::TopologyRequirement {
        requisite: topology_list(&r.requisite),
        preferred: topology_list(&r.preferred),
    })
}

pub fn topology_to_csi(topology: &[types::Topology]) -> Vec<proto::Topology> {
    topology
        .iter()
        .map(|segments| proto::Topology {
            segments: segments.iter().cloned().collect(),
        })
        .collect()
}

/// Clamps a byte count into the proto's signed field.
pub fn bytes_to_csi(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidArgument(message.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};

    fn cap(access_type: Option<AccessType>, mode: Option<CsiMode>) -> proto::VolumeCapability {
        proto::VolumeCapability {
            access_type,
            access_mode: mode.map(|m| AccessMode { mode: m as i32 }),
        }
    }

    fn info(modes: types::VolumeModes) -> types::BackendInfo {
        types::BackendInfo {
            name: "test".into(),
            version: "0".into(),
            access_modes: vec![types::AccessMode::SingleNodeWriter],
            volume_modes: modes,
            content_sources: types::ContentSources::default(),
            topology: false,
            parameters: vec![],
        }
    }

    #[test]
    fn capabilities_must_be_complete_and_offered() {
        let fs = info(types::VolumeModes {
            filesystem: true,
            block: false,
        });
        let mount = Some(AccessType::Mount(MountVolume::default()));
        let block = Some(AccessType::Block(BlockVolume {}));
        assert!(capabilities(&[cap(mount.clone(), Some(CsiMode::SingleNodeWriter))], &fs).is_ok());
        for (caps, reason) in [
            (vec![], "required"),
            (
                vec![cap(None, Some(CsiMode::SingleNodeWriter))],
                "no access type",
            ),
            (vec![cap(mount.clone(), None)], "no access mode"),
            (
                vec![cap(mount.clone(), Some(CsiMode::Unknown))],
                "unknown access mode",
            ),
            (
                vec![cap(block, Some(CsiMode::SingleNodeWriter))],
                "does not offer block",
            ),
            (
                vec![cap(mount, Some(CsiMode::MultiNodeMultiWriter))],
                "access mode",
            ),
        ] {
            let err = capabilities(&caps, &fs).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
            assert!(err.to_string().contains(reason), "{err}");
        }
    }

    #[test]
    fn capacity_ranges() {
        let range = |required_bytes, limit_bytes| proto::CapacityRange {
            required_bytes,
            limit_bytes,
        };
        assert_eq!(capacity_range(None).unwrap().required_bytes, 0);
        assert_eq!(
            capacity_range(Some(&range(10, 0))).unwrap().required_bytes,
            10
        );
        assert_eq!(
            capacity_range(Some(&range(10, 10))).unwrap().limit_bytes,
            10
        );
        assert!(capacity_range(Some(&range(11, 10))).is_err());
        assert!(capacity_range(Some(&range(-1, 0))).is_err());
        assert!(capacity_range(Some(&range(0, -5))).is_err());
    }
}
