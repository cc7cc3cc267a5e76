//! Finding the block device behind a `disk` attachment: by its by-id name (one entry of
//! `/dev/disk/by-id`) or by the serial number sysfs shows, never by a guessed device name. The
//! wait for a device that is still appearing is bounded, and the message says what was looked
//! for and where.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::NodeError;
use crate::runtime::types::DiskLocator;

/// Where devices are looked up; tests point these at their own trees.
#[derive(Debug, Clone)]
pub struct DeviceDirs {
    /// `/dev/disk/by-id`.
    pub by_id: PathBuf,
    /// `/sys` (serials under `class/block/*/serial` or `class/block/*/device/serial`).
    pub sysfs: PathBuf,
    /// How long to wait for a device to appear.
    pub wait: Duration,
}

impl Default for DeviceDirs {
    fn default() -> Self {
        Self {
            by_id: PathBuf::from("/dev/disk/by-id"),
            sysfs: PathBuf::from("/sys"),
            wait: Duration::from_secs(10),
        }
    }
}

impl DeviceDirs {
    /// The block device (`/dev/...`) the locator names, waiting for it to appear.
    pub fn resolve(&self, locator: &DiskLocator) -> Result<PathBuf, NodeError> {
        let started = Instant::now();
        loop {
            if let Some(device) = self.find(locator)? {
                return Ok(device);
            }
            if started.elapsed() >= self.wait {
                let (what, place) = match locator {
                    DiskLocator::ById(name) => (format!("by-id name {name:?}"), self.by_id.clone()),
                    DiskLocator::Serial(serial) => {
                        (format!("serial {serial:?}"), self.sysfs.join("class/block"))
                    }
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

    fn find(&self, locator: &DiskLocator) -> Result<Option<PathBuf>, NodeError> {
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
                for entry in entries.flatten() {
                    let dir = entry.path();
                    let found = ["serial", "device/serial"].iter().any(|file| {
                        std::fs::read_to_string(dir.join(file))
                            .is_ok_and(|s| s.trim() == serial.as_str())
                    });
                    // Whole disks only: a partition has a `partition` file.
                    if found && !dir.join("partition").exists() {
                        let device = Path::new("/dev").join(entry.file_name());
                        return check_block_device(&device).map(Some);
                    }
                }
                Ok(None)
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
        }
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
        ] {
            let path = class.join(name).join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, format!("{serial}\n")).unwrap();
        }
        std::fs::write(class.join("vdz1/partition"), "1").unwrap();
        let d = dirs(root.path());
        assert_eq!(
            d.resolve(&DiskLocator::Serial("disk-a".into())).unwrap(),
            Path::new("/dev").join(&disk)
        );
        assert_eq!(
            d.resolve(&DiskLocator::Serial("disk-b".into())).unwrap(),
            Path::new("/dev").join(&other),
            "device/serial is read too"
        );
        // A partition is never chosen: nothing matches, and the message says what and where.
        let message = d
            .resolve(&DiskLocator::Serial("disk-c".into()))
            .unwrap_err()
            .to_string();
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
            d.resolve(&DiskLocator::ById("not-a-disk".into())),
            Err(NodeError::NotABlockDevice { .. })
        ));
        assert!(matches!(
            d.resolve(&DiskLocator::ById("absent".into())),
            Err(NodeError::NoDevice { .. })
        ));
    }
}
