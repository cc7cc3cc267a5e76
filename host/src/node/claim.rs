//! Whether a block device is free to become this volume: no partitions on it, no holders
//! (device-mapper, md, bcache: a layer built on it), not mounted anywhere, and not open
//! exclusively by anyone. The device stays open exclusively (O_EXCL) while the node probes it,
//! so nothing can claim it in between; the claim is let go just before mkfs and mount, which
//! open it exclusively themselves (so a claim racing them fails them, not the other user).

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::NodeError;
use super::mountinfo::MountTable;

/// An exclusive open of a free device; dropping it lets the device go.
#[derive(Debug)]
pub struct Claim {
    _device: File,
}

fn taken(device: &Path, why: String) -> NodeError {
    NodeError::DeviceTaken {
        device: device.to_owned(),
        why,
    }
}

/// The device's directory in sysfs (`/sys/class/block/<name>`).
fn sysfs_dir(device: &Path) -> Result<PathBuf, NodeError> {
    let canonical = std::fs::canonicalize(device).map_err(super::io_error("resolve", device))?;
    let name = canonical.file_name().unwrap_or_default();
    Ok(Path::new("/sys/class/block").join(name))
}

/// Names of the entries of `dir` for which `pick` holds (none when `dir` is absent).
fn entries(dir: &Path, pick: impl Fn(&Path) -> bool) -> Vec<String> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut names: Vec<String> = read
        .flatten()
        .filter(|e| pick(&e.path()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Claims `device` for this node's volume, or says who has it.
pub fn claim(device: &Path, table: &MountTable) -> Result<Claim, NodeError> {
    let sysfs = sysfs_dir(device)?;
    let partitions = entries(&sysfs, |p| p.join("partition").exists());
    if !partitions.is_empty() {
        return Err(taken(
            device,
            format!("it has partitions ({})", partitions.join(", ")),
        ));
    }
    let holders = entries(&sysfs.join("holders"), |_| true);
    if !holders.is_empty() {
        return Err(taken(
            device,
            format!("it is held by {}", holders.join(", ")),
        ));
    }
    let number = std::fs::metadata(device)
        .map(|meta| super::device_number(&meta))
        .map_err(super::io_error("inspect", device))?;
    if let Some(mounted) = table.entries().iter().find(|e| e.device == number) {
        return Err(NodeError::DeviceInUse {
            device: device.to_owned(),
            at: mounted.mount_point.clone(),
        });
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_EXCL | nix::libc::O_CLOEXEC)
        .open(device)
        .map_err(|e| match e.raw_os_error() {
            Some(nix::libc::EBUSY) => taken(device, "another user has it open exclusively".into()),
            _ => super::io_error("open", device)(e),
        })?;
    Ok(Claim { _device: file })
}
