//! Finding the block device behind an attachment: a `disk` by its by-id name (one entry of
//! `/dev/disk/by-id`) or by the serial number sysfs shows, an `nvme-tcp` namespace by its
//! subsystem NQN (connected first through [`Nvme`]); never by a guessed device name. The wait
//! for a device that is still appearing is bounded, and the message says what was looked for
//! and where.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::NodeError;
use super::nvme::{self, Nvme};
use crate::volume::types::{Attachment, DiskLocator};

/// Where devices are looked up, and how NVMe/TCP targets are connected; tests point these at
/// their own trees and fabric.
#[derive(Debug, Clone)]
pub struct DeviceDirs {
    /// `/dev/disk/by-id`.
    pub by_id: PathBuf,
    /// `/sys` (serials under `class/block/*/serial` or `class/block/*/device/serial`, NVMe
    /// controllers under `class/nvme`).
    pub sysfs: PathBuf,
    /// How long to wait for a device to appear.
    pub wait: Duration,
    pub nvme: Nvme,
    /// Which disks `disk` attachments may name (none unless the operator says).
    pub allowed_disks: AllowedDisks,
}

/// The operator's allow-list of disks a backend's `disk` attachments may name, so that no
/// backend can hand a pod the node's system disk or another driver's volume. Empty (no disk
/// at all) unless configured.
#[derive(Debug, Clone, Default)]
pub struct AllowedDisks {
    /// Prefixes of `/dev/disk/by-id` names, e.g. `scsi-0QEMU_QEMU_HARDDISK_pvc-`.
    pub by_id_prefixes: Vec<String>,
    /// Serial numbers, where `*` matches any run of characters, e.g. `pvc-*`.
    pub serials: Vec<String>,
}

impl AllowedDisks {
    pub fn check(&self, locator: &DiskLocator) -> Result<(), NodeError> {
        let (allowed, what) = match locator {
            DiskLocator::ById(name) => (
                self.by_id_prefixes
                    .iter()
                    .any(|p| name.starts_with(p.as_str())),
                format!("by-id name {name:?}"),
            ),
            DiskLocator::Serial(serial) => (
                self.serials.iter().any(|p| glob(p, serial)),
                format!("serial {serial:?}"),
            ),
        };
        if allowed {
            Ok(())
        } else {
            Err(NodeError::DiskNotAllowed { what })
        }
    }
}

/// Whether `text` matches `pattern`, where `*` matches any run of characters.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, rest)) => {
            let Some(tail) = text.strip_prefix(head) else {
                return false;
            };
            (0..=tail.len())
                .filter(|&i| tail.is_char_boundary(i))
                .any(|i| glob(rest, &tail[i..]))
        }
    }
}

impl Default for DeviceDirs {
    fn default() -> Self {
        let sysfs = PathBuf::from("/sys");
        Self {
            by_id: PathBuf::from("/dev/disk/by-id"),
            nvme: Nvme::kernel(&sysfs),
            sysfs,
            wait: Duration::from_secs(10),
            allowed_disks: AllowedDisks::default(),
        }
    }
}

impl DeviceDirs {
    /// Makes the attachment's device appear (connects an NVMe/TCP target) and returns it.
    pub fn attach(&self, attachment: &Attachment) -> Result<PathBuf, NodeError> {
        if let Attachment::NvmeTcp(target) = attachment {
            self.nvme.connect(&self.sysfs, target)?;
        }
        self.resolve(attachment)
    }

    /// Lets go of what [`attach`](Self::attach) connected: an NVMe/TCP subsystem's controllers.
    pub fn detach(&self, attachment: &Attachment) -> Result<(), NodeError> {
        if let Attachment::NvmeTcp(target) = attachment {
            self.nvme.disconnect(&self.sysfs, &target.nqn)?;
        }
        Ok(())
    }

    /// Has the storage path look again at the attachment's device, so a device the storage grew
    /// shows its new size: NVMe/TCP controllers are rescanned (a disk's size is the kernel's
    /// to notice).
    pub fn rescan(&self, attachment: &Attachment) -> Result<(), NodeError> {
        if let Attachment::NvmeTcp(target) = attachment {
            self.nvme.rescan(&self.sysfs, &target.nqn)?;
        }
        Ok(())
    }

    /// The block device (`/dev/...`) the attachment names, waiting for it to appear.
    pub fn resolve(&self, attachment: &Attachment) -> Result<PathBuf, NodeError> {
        let started = Instant::now();
        loop {
            if let Some(device) = self.find(attachment)? {
                return Ok(device);
            }
            if started.elapsed() >= self.wait {
                let (what, place) = match attachment {
                    Attachment::Disk(DiskLocator::ById(name)) => {
                        (format!("by-id name {name:?}"), self.by_id.clone())
                    }
                    Attachment::Disk(DiskLocator::Serial(serial)) => {
                        (format!("serial {serial:?}"), self.sysfs.join("class/block"))
                    }
                    Attachment::NvmeTcp(t) => (
                        match t.namespace_id {
                            Some(ns) => format!("namespace {ns} of NVMe subsystem {}", t.nqn),
                            None => format!("a namespace of NVMe subsystem {}", t.nqn),
                        },
                        self.sysfs.join("class/nvme"),
                    ),
                    Attachment::LocalDir => ("a block device".into(), PathBuf::new()),
                };
                return Err(NodeError::NoDevice {
                    what,
                    place,
                    waited: self.wait,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The attachment's block device if it is there now.
    pub fn find(&self, attachment: &Attachment) -> Result<Option<PathBuf>, NodeError> {
        match attachment {
            Attachment::LocalDir => Err(NodeError::Unsupported {
                what: "a local-dir volume has no block device".into(),
            }),
            Attachment::NvmeTcp(t) => nvme::find_namespace(&self.sysfs, &t.nqn, t.namespace_id),
            Attachment::Disk(locator) => {
                self.allowed_disks.check(locator)?;
                self.find_disk(locator)
            }
        }
    }

    fn find_disk(&self, locator: &DiskLocator) -> Result<Option<PathBuf>, NodeError> {
        match locator {
            DiskLocator::ById(name) => {
                let link = self.by_id.join(name);
                match std::fs::canonicalize(&link) {
                    Ok(device) => check_block_device(&device).map(Some),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(super::io_error("resolve", &link)(e)),
                }
            }
            DiskLocator::Serial(serial) => {
                let class = self.sysfs.join("class/block");
                let Ok(entries) = std::fs::read_dir(&class) else {
                    return Ok(None);
                };
                // Whole disks only (a partition has a `partition` file).
                let mut matches: Vec<String> = entries
                    .flatten()
                    .filter(|entry| {
                        let dir = entry.path();
                        !dir.join("partition").exists()
                            && ["serial", "device/serial"].iter().any(|file| {
                                std::fs::read_to_string(dir.join(file))
                                    .is_ok_and(|s| s.trim() == serial.as_str())
                            })
                    })
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
                    .collect();
                matches.sort();
                match matches.as_slice() {
                    [] => Ok(None),
                    [name] => check_block_device(&Path::new("/dev").join(name)).map(Some),
                    // Namespaces of one NVMe controller, or paths to one disk, share a serial:
                    // taking the first would be a guess.
                    several => Err(NodeError::Ambiguous {
                        what: format!("serial {serial:?}"),
                        found: several.join(", "),
                    }),
                }
            }
        }
    }
}

/// A block device node under /dev, nothing else.
fn check_block_device(device: &Path) -> Result<PathBuf, NodeError> {
    let meta = std::fs::metadata(device).map_err(super::io_error("inspect", device))?;
    if !device.starts_with("/dev") || !meta.file_type().is_block_device() {
        return Err(NodeError::NotABlockDevice {
            path: device.to_owned(),
        });
    }
    Ok(device.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs(root: &Path) -> DeviceDirs {
        DeviceDirs {
            by_id: root.join("by-id"),
            sysfs: root.join("sys"),
            wait: Duration::from_millis(300),
            nvme: Nvme::kernel(&root.join("sys")),
            allowed_disks: AllowedDisks {
                by_id_prefixes: vec![String::new()],
                serials: vec!["*".into()],
            },
        }
    }

    fn serial(s: &str) -> Attachment {
        Attachment::Disk(DiskLocator::Serial(s.into()))
    }

    fn by_id_name(s: &str) -> Attachment {
        Attachment::Disk(DiskLocator::ById(s.into()))
    }

    #[test]
    fn serials_name_whole_disks_in_sysfs() {
        // The fixture names its disks after real block devices of this machine, so a match
        // must resolve to an existing /dev node.
        let mut real: Vec<String> = std::fs::read_dir("/sys/class/block")
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| Path::new("/dev").join(n).exists())
            .collect();
        real.sort();
        let (disk, other) = (real[0].clone(), real[1].clone());
        let root = tempfile::tempdir().unwrap();
        let class = root.path().join("sys/class/block");
        for (name, file, serial) in [
            (disk.as_str(), "serial", "disk-a"),
            (other.as_str(), "device/serial", "disk-b"),
            ("vdz1", "serial", "disk-c"),
            ("nvme9n1", "device/serial", "shared"),
            ("nvme9n2", "device/serial", "shared"),
        ] {
            let path = class.join(name).join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, format!("{serial}\n")).unwrap();
        }
        std::fs::write(class.join("vdz1/partition"), "1").unwrap();
        let d = dirs(root.path());
        assert_eq!(
            d.resolve(&serial("disk-a")).unwrap(),
            Path::new("/dev").join(&disk)
        );
        assert_eq!(
            d.resolve(&serial("disk-b")).unwrap(),
            Path::new("/dev").join(&other),
            "device/serial is read too"
        );
        // One serial on two disks (namespaces of one NVMe controller): refused, naming both.
        let message = d.resolve(&serial("shared")).unwrap_err().to_string();
        assert!(
            message.contains("nvme9n1") && message.contains("nvme9n2"),
            "{message}"
        );
        // A partition is never chosen: nothing matches, and the message says what and where.
        let message = d.resolve(&serial("disk-c")).unwrap_err().to_string();
        assert!(
            message.contains("serial \"disk-c\"") && message.contains("class/block"),
            "{message}"
        );
    }

    #[test]
    fn by_id_links_must_lead_to_a_block_device() {
        let root = tempfile::tempdir().unwrap();
        let by_id = root.path().join("by-id");
        std::fs::create_dir_all(&by_id).unwrap();
        std::os::unix::fs::symlink("/dev/null", by_id.join("not-a-disk")).unwrap();
        let d = dirs(root.path());
        assert!(matches!(
            d.resolve(&by_id_name("not-a-disk")),
            Err(NodeError::NotABlockDevice { .. })
        ));
        assert!(matches!(
            d.resolve(&by_id_name("absent")),
            Err(NodeError::NoDevice { .. })
        ));
    }
}
