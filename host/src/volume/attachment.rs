//! How the node learns where a volume lives. The controller side writes the backend's
//! `attachment` into the volume context (CreateVolume) or publish context (ControllerPublish)
//! under the reserved `modcsi.io/` prefix; the node side reads it back.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::volume::types::{Attachment, DiskLocator, NvmeTarget, Portal};

/// Context keys with this prefix belong to the host; a backend may not set them.
pub const RESERVED_PREFIX: &str = "modcsi.io/";
pub const KIND: &str = "modcsi.io/attachment";
/// Comma-separated `address:port` portals (`[v6]:port` for IPv6).
const NVME_PORTALS: &str = "modcsi.io/nvme-portals";
const NVME_NQN: &str = "modcsi.io/nvme-nqn";
const NVME_NAMESPACE: &str = "modcsi.io/nvme-namespace";
const NVME_CTRL_LOSS_TMO: &str = "modcsi.io/nvme-ctrl-loss-tmo";
const NVME_RECONNECT_DELAY: &str = "modcsi.io/nvme-reconnect-delay";
const NVME_KEEP_ALIVE_TMO: &str = "modcsi.io/nvme-keep-alive-tmo";
const DISK_SERIAL: &str = "modcsi.io/disk-serial";
const DISK_BY_ID: &str = "modcsi.io/disk-by-id";
/// A local-dir volume's size in bytes, which the node enforces where it can (a project quota).
pub const LOCAL_DIR_BYTES: &str = "modcsi.io/local-dir-bytes";

/// Portals one target may list.
const MAX_PORTALS: usize = 16;
/// The NVMe specification's bound on an NQN, in bytes.
const MAX_NQN: usize = 223;

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
    #[error("attachment field {key} has an invalid value {value:?}: {reason}")]
    BadValue {
        key: &'static str,
        value: String,
        reason: &'static str,
    },
}

fn bad(key: &'static str, value: impl Into<String>, reason: &'static str) -> AttachmentError {
    AttachmentError::BadValue {
        key,
        value: value.into(),
        reason,
    }
}

/// Checks every field that will reach the node's kernel: addresses are IPs or DNS names,
/// ports are not zero, NQNs follow the NVMe grammar, by-id names are one path component.
pub fn validate(attachment: &Attachment) -> Result<(), AttachmentError> {
    match attachment {
        Attachment::LocalDir => Ok(()),
        Attachment::NvmeTcp(t) => {
            if t.portals.is_empty() || t.portals.len() > MAX_PORTALS {
                return Err(bad(
                    NVME_PORTALS,
                    t.portals.len().to_string(),
                    "a target needs 1 to 16 portals",
                ));
            }
            for portal in &t.portals {
                if !is_host(&portal.address) {
                    return Err(bad(
                        NVME_PORTALS,
                        &portal.address,
                        "not an IP address or DNS name",
                    ));
                }
                if portal.port == 0 {
                    return Err(bad(NVME_PORTALS, "0", "port 0"));
                }
            }
            check_nqn(&t.nqn)?;
            if t.ctrl_loss_tmo_seconds.is_some_and(|v| v < -1) {
                return Err(bad(
                    NVME_CTRL_LOSS_TMO,
                    format!("{:?}", t.ctrl_loss_tmo_seconds),
                    "below -1",
                ));
            }
            Ok(())
        }
        Attachment::Disk(DiskLocator::Serial(serial)) => {
            if serial.is_empty()
                || serial.len() > 256
                || serial.chars().any(|c| c.is_control() || c == '/')
            {
                return Err(bad(
                    DISK_SERIAL,
                    serial,
                    "not a disk serial (1-256 printable characters, no '/')",
                ));
            }
            Ok(())
        }
        Attachment::Disk(DiskLocator::ById(name)) => {
            let one_component = !name.is_empty()
                && name.len() <= 255
                && name != "."
                && name != ".."
                && !name.chars().any(|c| c.is_control() || c == '/');
            if !one_component {
                return Err(bad(DISK_BY_ID, name, "not one /dev/disk/by-id entry name"));
            }
            Ok(())
        }
    }
}

/// An IP address, or a DNS name of letters, digits and hyphens in dot-separated labels.
pub fn is_host(address: &str) -> bool {
    if address.parse::<IpAddr>().is_ok() {
        return true;
    }
    !address.is_empty()
        && address.len() <= 253
        && address.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// The NVMe qualified name grammar: `nqn.yyyy-mm.<reverse domain>[:<string>]`, at most 223
/// bytes, printable ASCII without spaces, commas or `=` (which would break the fabrics
/// option string).
pub fn check_nqn(nqn: &str) -> Result<(), AttachmentError> {
    let reason = if nqn.len() > MAX_NQN {
        Some("longer than 223 bytes")
    } else if nqn
        .bytes()
        .any(|b| !b.is_ascii_graphic() || b == b',' || b == b'=')
    {
        Some("contains a space, comma, '=' or a non-printable character")
    } else {
        let date_ok = nqn.strip_prefix("nqn.").is_some_and(|rest| {
            let b = rest.as_bytes();
            b.len() > 8
                && b[..4].iter().all(u8::is_ascii_digit)
                && b[4] == b'-'
                && b[5..7].iter().all(u8::is_ascii_digit)
                && b[7] == b'.'
        });
        let domain_ok = nqn.get(12..).is_some_and(|rest| {
            let domain = rest.split(':').next().unwrap_or("");
            !domain.is_empty()
                && domain
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        });
        (!(date_ok && domain_ok)).then_some("not of the form nqn.yyyy-mm.<reverse domain>[:<name>]")
    };
    match reason {
        Some(reason) => Err(bad(NVME_NQN, nqn, reason)),
        None => Ok(()),
    }
}

fn format_portal(p: &Portal) -> String {
    if p.address.contains(':') {
        format!("[{}]:{}", p.address, p.port)
    } else {
        format!("{}:{}", p.address, p.port)
    }
}

fn parse_portal(text: &str) -> Result<Portal, AttachmentError> {
    let malformed = || bad(NVME_PORTALS, text, "not address:port");
    let (address, port) = text.rsplit_once(':').ok_or_else(malformed)?;
    let address = address
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(address);
    Ok(Portal {
        address: address.to_owned(),
        port: port.parse().map_err(|_| malformed())?,
    })
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
            put(
                NVME_PORTALS,
                t.portals
                    .iter()
                    .map(format_portal)
                    .collect::<Vec<_>>()
                    .join(","),
            );
            put(NVME_NQN, t.nqn.clone());
            if let Some(v) = t.namespace_id {
                put(NVME_NAMESPACE, v.to_string());
            }
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
            }
        }
    }
}

/// Whether a context carries a host-encoded attachment (volumes this host created do; volumes
/// of the driver a backend replaces do not, and are found through `locate`).
pub fn present(
    publish_context: &HashMap<String, String>,
    volume_context: &HashMap<String, String>,
) -> bool {
    publish_context.contains_key(KIND) || volume_context.contains_key(KIND)
}

/// Reads the attachment from the publish context, falling back to the volume context, and
/// validates it.
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
            .map(|v| v.parse().map_err(|_| bad(key, v.clone(), "not a number")))
            .transpose()
    }
    let attachment = match kind.as_str() {
        "local-dir" => Attachment::LocalDir,
        "nvme-tcp" => Attachment::NvmeTcp(NvmeTarget {
            portals: field("nvme-tcp", NVME_PORTALS)?
                .split(',')
                .map(parse_portal)
                .collect::<Result<_, _>>()?,
            nqn: field("nvme-tcp", NVME_NQN)?,
            namespace_id: parse(context, NVME_NAMESPACE)?,
            ctrl_loss_tmo_seconds: parse(context, NVME_CTRL_LOSS_TMO)?,
            reconnect_delay_seconds: parse(context, NVME_RECONNECT_DELAY)?,
            keep_alive_tmo_seconds: parse(context, NVME_KEEP_ALIVE_TMO)?,
        }),
        "disk" => Attachment::Disk(if let Some(s) = context.get(DISK_SERIAL) {
            DiskLocator::Serial(s.clone())
        } else {
            DiskLocator::ById(field("disk", DISK_BY_ID)?)
        }),
        other => return Err(AttachmentError::UnknownKind(other.to_owned())),
    };
    validate(&attachment)?;
    Ok(attachment)
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
            portals: vec![
                Portal {
                    address: "10.0.0.5".into(),
                    port: 4420,
                },
                Portal {
                    address: "fd00::5".into(),
                    port: 4421,
                },
                Portal {
                    address: "rds.example.net".into(),
                    port: 4420,
                },
            ],
            nqn: "nqn.2000-02.com.mikrotik:pvc-1".into(),
            namespace_id: Some(1),
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
        publish.insert(DISK_BY_ID.to_owned(), "virtio-123".to_owned());
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
        bad.insert(
            NVME_NQN.to_owned(),
            "nqn.2000-02.com.mikrotik:pvc-1".to_owned(),
        );
        bad.insert(NVME_PORTALS.to_owned(), "10.0.0.5:not-a-port".to_owned());
        assert!(matches!(
            decode(&HashMap::new(), &bad),
            Err(AttachmentError::BadValue { .. })
        ));
    }

    #[test]
    fn fields_bound_for_the_kernel_are_validated() {
        let nvme = |address: &str, port: u16, nqn: &str| {
            Attachment::NvmeTcp(NvmeTarget {
                portals: vec![Portal {
                    address: address.into(),
                    port,
                }],
                nqn: nqn.into(),
                namespace_id: None,
                ctrl_loss_tmo_seconds: None,
                reconnect_delay_seconds: None,
                keep_alive_tmo_seconds: None,
            })
        };
        let nqn = "nqn.2000-02.com.mikrotik:pvc-1";
        assert!(validate(&nvme("10.0.0.5", 4420, nqn)).is_ok());
        assert!(
            validate(&nvme(
                "rds-1.example.net",
                4420,
                "nqn.2014-08.org.nvmexpress:uuid:1b4e28ba-2fa1"
            ))
            .is_ok()
        );
        for (attachment, reason) in [
            (nvme("10.0.0.5;reboot", 4420, nqn), "DNS name"),
            (nvme("-bad.example", 4420, nqn), "DNS name"),
            (nvme("", 4420, nqn), "DNS name"),
            (nvme("10.0.0.5", 0, nqn), "port 0"),
            (
                nvme("10.0.0.5", 4420, "nqn.2000-02.com.mikrotik:a,b=c"),
                "comma",
            ),
            (nvme("10.0.0.5", 4420, "iqn.2000-02.com.mikrotik:x"), "form"),
            (
                nvme(
                    "10.0.0.5",
                    4420,
                    &format!("nqn.2000-02.com.x:{}", "a".repeat(220)),
                ),
                "223",
            ),
            (Attachment::Disk(DiskLocator::ById("../sda".into())), "one"),
            (Attachment::Disk(DiskLocator::ById("..".into())), "one"),
            (
                Attachment::Disk(DiskLocator::Serial("a\nb".into())),
                "serial",
            ),
        ] {
            let err = validate(&attachment).unwrap_err().to_string();
            assert!(err.contains(reason), "{attachment:?}: {err}");
        }
    }
}
