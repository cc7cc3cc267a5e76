//! How the node learns where a volume lives. The controller side writes the backend's
//! `attachment` into the volume context (CreateVolume) or publish context (ControllerPublish)
//! under the reserved `modcsi.io/` prefix; the node side reads it back.

use std::collections::HashMap;

use crate::runtime::types::{Attachment, DiskLocator, NvmeTarget};

/// Context keys with this prefix belong to the host; a backend may not set them.
pub const RESERVED_PREFIX: &str = "modcsi.io/";
pub const KIND: &str = "modcsi.io/attachment";
const NVME_ADDRESS: &str = "modcsi.io/nvme-address";
const NVME_PORT: &str = "modcsi.io/nvme-port";
const NVME_NQN: &str = "modcsi.io/nvme-nqn";
const NVME_CTRL_LOSS_TMO: &str = "modcsi.io/nvme-ctrl-loss-tmo";
const NVME_RECONNECT_DELAY: &str = "modcsi.io/nvme-reconnect-delay";
const NVME_KEEP_ALIVE_TMO: &str = "modcsi.io/nvme-keep-alive-tmo";
const DISK_SERIAL: &str = "modcsi.io/disk-serial";
const DISK_BY_ID: &str = "modcsi.io/disk-by-id";
const DISK_PATH: &str = "modcsi.io/disk-path";

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AttachmentError {
    #[error(
        "the volume context has no {KIND} key: pass the volume_context that CreateVolume returned"
    )]
    Missing,
    #[error("unknown attachment kind {0:?}")]
    UnknownKind(String),
    #[error("attachment {kind} lacks {key}")]
    MissingField {
        kind: &'static str,
        key: &'static str,
    },
    #[error("attachment field {key} has an invalid value {value:?}")]
    BadValue { key: &'static str, value: String },
}

/// Writes `attachment` into `context`.
pub fn encode(attachment: &Attachment, context: &mut HashMap<String, String>) {
    let mut put = |k: &str, v: String| {
        context.insert(k.to_owned(), v);
    };
    match attachment {
        Attachment::LocalDir => put(KIND, "local-dir".into()),
        Attachment::NvmeTcp(t) => {
            put(KIND, "nvme-tcp".into());
            put(NVME_ADDRESS, t.address.clone());
            put(NVME_PORT, t.port.to_string());
            put(NVME_NQN, t.nqn.clone());
            if let Some(v) = t.ctrl_loss_tmo_seconds {
                put(NVME_CTRL_LOSS_TMO, v.to_string());
            }
            if let Some(v) = t.reconnect_delay_seconds {
                put(NVME_RECONNECT_DELAY, v.to_string());
            }
            if let Some(v) = t.keep_alive_tmo_seconds {
                put(NVME_KEEP_ALIVE_TMO, v.to_string());
            }
        }
        Attachment::Disk(locator) => {
            put(KIND, "disk".into());
            match locator {
                DiskLocator::Serial(s) => put(DISK_SERIAL, s.clone()),
                DiskLocator::ById(s) => put(DISK_BY_ID, s.clone()),
                DiskLocator::Path(s) => put(DISK_PATH, s.clone()),
            }
        }
    }
}

/// Reads the attachment from the publish context, falling back to the volume context.
pub fn decode(
    publish_context: &HashMap<String, String>,
    volume_context: &HashMap<String, String>,
) -> Result<Attachment, AttachmentError> {
    let context = if publish_context.contains_key(KIND) {
        publish_context
    } else {
        volume_context
    };
    let kind = context.get(KIND).ok_or(AttachmentError::Missing)?;
    let field = |kind: &'static str, key: &'static str| {
        context
            .get(key)
            .cloned()
            .ok_or(AttachmentError::MissingField { kind, key })
    };
    fn parse<T: std::str::FromStr>(
        context: &HashMap<String, String>,
        key: &'static str,
    ) -> Result<Option<T>, AttachmentError> {
        context
            .get(key)
            .map(|v| {
                v.parse().map_err(|_| AttachmentError::BadValue {
                    key,
                    value: v.clone(),
                })
            })
            .transpose()
    }
    match kind.as_str() {
        "local-dir" => Ok(Attachment::LocalDir),
        "nvme-tcp" => Ok(Attachment::NvmeTcp(NvmeTarget {
            address: field("nvme-tcp", NVME_ADDRESS)?,
            port: parse(context, NVME_PORT)?.ok_or(AttachmentError::MissingField {
                kind: "nvme-tcp",
                key: NVME_PORT,
            })?,
            nqn: field("nvme-tcp", NVME_NQN)?,
            ctrl_loss_tmo_seconds: parse(context, NVME_CTRL_LOSS_TMO)?,
            reconnect_delay_seconds: parse(context, NVME_RECONNECT_DELAY)?,
            keep_alive_tmo_seconds: parse(context, NVME_KEEP_ALIVE_TMO)?,
        })),
        "disk" => {
            let locator = if let Some(s) = context.get(DISK_SERIAL) {
                DiskLocator::Serial(s.clone())
            } else if let Some(s) = context.get(DISK_BY_ID) {
                DiskLocator::ById(s.clone())
            } else {
                DiskLocator::Path(field("disk", DISK_PATH)?)
            };
            Ok(Attachment::Disk(locator))
        }
        other => Err(AttachmentError::UnknownKind(other.to_owned())),
    }
}

/// The attachment kind's name, for messages.
pub fn kind_name(attachment: &Attachment) -> &'static str {
    match attachment {
        Attachment::LocalDir => "local-dir",
        Attachment::NvmeTcp(_) => "nvme-tcp",
        Attachment::Disk(_) => "disk",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(attachment: Attachment) -> Attachment {
        let mut context = HashMap::new();
        encode(&attachment, &mut context);
        assert!(context.keys().all(|k| k.starts_with(RESERVED_PREFIX)));
        decode(&HashMap::new(), &context).unwrap()
    }

    #[test]
    fn every_kind_round_trips() {
        assert!(matches!(
            round_trip(Attachment::LocalDir),
            Attachment::LocalDir
        ));
        let target = NvmeTarget {
            address: "10.0.0.5".into(),
            port: 4420,
            nqn: "nqn.2000-02.com.mikrotik:pvc-1".into(),
            ctrl_loss_tmo_seconds: Some(-1),
            reconnect_delay_seconds: None,
            keep_alive_tmo_seconds: Some(5),
        };
        match round_trip(Attachment::NvmeTcp(target.clone())) {
            Attachment::NvmeTcp(t) => assert_eq!(format!("{t:?}"), format!("{target:?}")),
            other => panic!("{other:?}"),
        }
        match round_trip(Attachment::Disk(DiskLocator::Serial("abc".into()))) {
            Attachment::Disk(DiskLocator::Serial(s)) => assert_eq!(s, "abc"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn publish_context_wins_and_errors_are_named() {
        let mut volume = HashMap::new();
        encode(&Attachment::LocalDir, &mut volume);
        let mut publish = HashMap::new();
        publish.insert(KIND.to_owned(), "disk".to_owned());
        publish.insert(DISK_PATH.to_owned(), "/dev/vdb".to_owned());
        assert!(matches!(decode(&publish, &volume), Ok(Attachment::Disk(_))));

        assert_eq!(
            decode(&HashMap::new(), &HashMap::new()).unwrap_err(),
            AttachmentError::Missing
        );
        let mut bad = HashMap::new();
        bad.insert(KIND.to_owned(), "floppy".to_owned());
        assert_eq!(
            decode(&HashMap::new(), &bad).unwrap_err(),
            AttachmentError::UnknownKind("floppy".into())
        );
        bad.insert(KIND.to_owned(), "nvme-tcp".to_owned());
        bad.insert(NVME_ADDRESS.to_owned(), "10.0.0.5".to_owned());
        bad.insert(NVME_PORT.to_owned(), "not-a-port".to_owned());
        assert!(matches!(
            decode(&HashMap::new(), &bad),
            Err(AttachmentError::BadValue { .. })
        ));
    }
}
