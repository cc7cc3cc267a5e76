//! Staging a block device: find it, format it only when blank, mount it at the staging path
//! (through a confined handle), and take it away again. A device that is not free (mounted
//! anywhere, partitioned, held, open exclusively: `claim.rs`) is refused, and unstage unmounts
//! only a device filesystem at that path, once no pod's bind holds it.

use std::path::Path;

use nix::mount::{MsFlags, mount};

use super::confined::KubeletRoot;
use super::format::{self, FILESYSTEMS, Probe};
use super::mountinfo::MountTable;
use super::publish::Target;
use super::{NodeError, io_error};

/// Mount flags a volume capability may ask for, and the data options passed on.
fn mount_options(flags: &[String]) -> Result<(MsFlags, String), NodeError> {
    let mut ms = MsFlags::empty();
    let mut data = vec![];
    for flag in flags {
        match flag.as_str() {
            "ro" => ms |= MsFlags::MS_RDONLY,
            "noatime" => ms |= MsFlags::MS_NOATIME,
            "nodiratime" => ms |= MsFlags::MS_NODIRATIME,
            "relatime" => ms |= MsFlags::MS_RELATIME,
            "nosuid" => ms |= MsFlags::MS_NOSUID,
            "nodev" => ms |= MsFlags::MS_NODEV,
            "noexec" => ms |= MsFlags::MS_NOEXEC,
            "sync" => ms |= MsFlags::MS_SYNCHRONOUS,
            "discard" => data.push("discard"),
            other => {
                return Err(NodeError::Unsupported {
                    what: format!("mount flag {other:?}"),
                });
            }
        }
    }
    Ok((ms, data.join(",")))
}

/// `major:minor` of a block device, as /proc/self/mountinfo shows it.
fn device_number(device: &Path) -> Result<String, NodeError> {
    std::fs::metadata(device)
        .map(|meta| super::device_number(&meta))
        .map_err(io_error("inspect", device))
}

/// Where else the filesystem of mount `m` is mounted (binds of it, or the same device mounted
/// again).
fn others_of(table: &MountTable, m: &super::mountinfo::MountEntry) -> Vec<std::path::PathBuf> {
    table
        .entries()
        .iter()
        .filter(|e| e.device == m.device && e.id != m.id)
        .map(|e| e.mount_point.clone())
        .collect()
}

/// Whether the block device `major:minor` is gone: no longer in the kernel, or without a size
/// (a detached or disconnected disk keeps its mounts but has no capacity).
fn device_gone(number: &str) -> bool {
    let size = Path::new("/sys/dev/block").join(number).join("size");
    std::fs::read_to_string(size)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .is_none_or(|sectors| sectors == 0)
}

/// Mounts `device` at `staging` with `fs_type` (empty: ext4), formatting it first (with the
/// allow-listed `mkfs_args`) only when it is blank. Returns false when it was already staged
/// there.
pub fn stage(
    root: &KubeletRoot,
    staging: &Path,
    device: &Path,
    fs_type: &str,
    flags: &[String],
    mkfs_args: &[String],
) -> Result<bool, NodeError> {
    let fs_type = crate::volume::mkfs::fs_type_or_default(fs_type);
    if !FILESYSTEMS.contains(&fs_type) {
        return Err(NodeError::Unsupported {
            what: format!("filesystem {fs_type:?} (ext4 or xfs)"),
        });
    }
    let (ms_flags, data) = mount_options(flags)?;
    let number = device_number(device)?;
    let target = Target::resolve(root, staging)?;
    let mut table = MountTable::read()?;
    let mut existing = target.open()?;
    if let Some(handle) = &existing
        && let Some(m) = target.mount(&table, handle)?
    {
        if m.device == number {
            return Ok(false);
        }
        // A device filesystem from another device: the volume's disk came back under another
        // device (a reconnect renumbered it). Recover (unmount the stale mount and mount what
        // the attachment resolves to now) only when the old device is gone and nothing else
        // holds its filesystem: otherwise the new device may be the same disk by another path
        // (a multipath map over it), and mounting it too would give one filesystem two live
        // superblocks. Anything else is not ours.
        let stale = m.source.starts_with("/dev/") && FILESYSTEMS.contains(&m.fs_type.as_str());
        if !stale {
            return Err(NodeError::OtherMount {
                target: staging.to_owned(),
                what: format!("{} from {}", m.fs_type, m.source),
            });
        }
        if !device_gone(&m.device) {
            return Err(NodeError::DeviceInUse {
                device: m.source.clone().into(),
                at: staging.to_owned(),
            });
        }
        let holders = others_of(&table, m);
        if !holders.is_empty() {
            return Err(NodeError::InUse {
                path: staging.to_owned(),
                targets: holders,
            });
        }
        tracing::warn!(
            staging = %staging.display(),
            stale = %m.source,
            device = %device.display(),
            "replacing a stale staged mount"
        );
        crate::metrics::stale_mount();
        let id = m.id;
        // The handle pins the stale mount: let go of it before unmounting.
        drop(existing.take());
        target.unmount(id)?;
        table = MountTable::read()?;
        existing = target.open()?;
    }
    // Nobody else's (not mounted, no partitions or holders, not open exclusively), and held
    // so while it is probed.
    let claim = super::claim::claim(device, &table)?;
    let probe = format::probe(device)?;
    drop(claim);
    match probe {
        Probe::Blank => format::format(device, fs_type, mkfs_args)?,
        Probe::Filesystem(found) if found == fs_type => {}
        Probe::Filesystem(found) => {
            return Err(NodeError::Unsupported {
                what: format!(
                    "{} holds {found}, not the requested {fs_type}",
                    device.display()
                ),
            });
        }
        Probe::Other(what) => {
            return Err(NodeError::Unsupported {
                what: format!(
                    "{} holds {what}; refusing to format or mount it",
                    device.display()
                ),
            });
        }
    }
    let handle = match existing {
        Some(h) => h,
        None => target.create_dir()?,
    };
    mount(
        Some(device),
        &handle.proc_path(),
        Some(fs_type),
        ms_flags,
        (!data.is_empty()).then_some(data.as_str()),
    )
    .map_err(|errno| NodeError::Mount {
        op: "mount device at",
        target: staging.to_owned(),
        errno,
    })?;
    Ok(true)
}

/// Gives the filesystem mounted at `staging` to the volume mount group (a pod's fsGroup): its
/// root directory owned by that group, group-writable and set-group-id, so files created in it
/// belong to the group too.
pub fn apply_mount_group(root: &KubeletRoot, staging: &Path, group: &str) -> Result<(), NodeError> {
    let gid: u32 = group.parse().map_err(|_| NodeError::Unsupported {
        what: format!("volume mount group {group:?} (a numeric group id)"),
    })?;
    let target = Target::resolve(root, staging)?;
    let handle = target.open()?.ok_or_else(|| NodeError::Missing {
        path: staging.to_owned(),
    })?;
    // Through the handle: an O_PATH descriptor reopened as the directory itself.
    let dir = std::fs::File::open(handle.proc_path()).map_err(io_error("open", staging))?;
    nix::unistd::fchown(&dir, None, Some(nix::unistd::Gid::from_raw(gid))).map_err(|errno| {
        NodeError::Mount {
            op: "give the volume mount group",
            target: staging.to_owned(),
            errno,
        }
    })?;
    let mode = dir
        .metadata()
        .map_err(io_error("inspect", staging))?
        .permissions();
    use std::os::unix::fs::PermissionsExt;
    let mode = mode.mode() | 0o2070;
    dir.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io_error("chmod", staging))?;
    Ok(())
}

/// Unmounts the device filesystem at `staging` and removes the directory. Absent is success; a
/// mount that is not a device filesystem is left alone.
pub fn unstage(root: &KubeletRoot, staging: &Path) -> Result<bool, NodeError> {
    let target = match Target::resolve(root, staging) {
        Ok(t) => t,
        Err(NodeError::Confined(super::confined::ConfinedError::NoParent { .. })) => {
            return Ok(false);
        }
        Err(e) => return Err(e),
    };
    let Some(handle) = target.open()? else {
        return Ok(false);
    };
    let table = MountTable::read()?;
    let mounted = target.mount(&table, &handle)?.cloned();
    drop(handle);
    if let Some(m) = mounted {
        if !(m.source.starts_with("/dev/") && FILESYSTEMS.contains(&m.fs_type.as_str())) {
            return Err(NodeError::NotOurs {
                target: staging.to_owned(),
                what: format!("{} from {}", m.fs_type, m.source),
            });
        }
        // Pods' binds of the staged filesystem still in place: unpublish comes first.
        let binds = others_of(&table, &m);
        if !binds.is_empty() {
            return Err(NodeError::InUse {
                path: staging.to_owned(),
                targets: binds,
            });
        }
        target.unmount(m.id)?;
    }
    root.remove_dir(staging)?;
    Ok(true)
}

/// Grows the filesystem mounted at `path` (beneath the kubelet root; the staging path when
/// there is one, as a published path may be a read-only bind) to fill its device, online: the
/// kernel's resize ioctl for ext4, xfs_growfs for xfs, once the device has at least `required`
/// bytes (waiting up to `wait` for it). Returns the device's size in bytes.
pub fn expand(
    root: &KubeletRoot,
    path: &Path,
    required: u64,
    wait: std::time::Duration,
) -> Result<u64, NodeError> {
    let target = Target::resolve(root, path)?;
    let handle = target.open()?.ok_or_else(|| NodeError::Missing {
        path: path.to_owned(),
    })?;
    let table = MountTable::read()?;
    // The path may be a bind of the staging mount: the device is what counts.
    let id = handle.mount_id()?;
    let mounted = table
        .entries()
        .iter()
        .find(|e| e.id == id)
        .cloned()
        .ok_or_else(|| NodeError::Missing {
            path: path.to_owned(),
        })?;
    drop(handle);
    let device = Path::new(&mounted.source);
    if !mounted.source.starts_with("/dev/") || !FILESYSTEMS.contains(&mounted.fs_type.as_str()) {
        return Err(NodeError::Unsupported {
            what: format!(
                "growing {} ({} from {}): only ext4 and xfs on a block device",
                path.display(),
                mounted.fs_type,
                mounted.source
            ),
        });
    }
    // The storage may grow the device a moment after it said so: wait, bounded, for the size
    // asked for, rather than grow to less.
    let started = std::time::Instant::now();
    let mut size = device_size(device)?;
    while size < required && started.elapsed() < wait {
        std::thread::sleep(std::time::Duration::from_millis(100));
        size = device_size(device)?;
    }
    if size < required {
        return Err(NodeError::TooSmall {
            device: device.to_owned(),
            size,
            required,
        });
    }
    if mounted.fs_type == "ext4" {
        grow_ext4(&target, path, size)?;
    } else {
        grow_xfs(path, device)?;
    }
    Ok(size)
}

nix::ioctl_write_ptr!(ext4_resize_fs, b'f', 16, u64);

/// Online ext4 growth through the kernel's resize ioctl on the opened mount (resize2fs would
/// look the mount point up itself and may pick a read-only bind of it).
fn grow_ext4(target: &Target<'_>, path: &Path, size: u64) -> Result<(), NodeError> {
    let handle = target.open()?.ok_or_else(|| NodeError::Missing {
        path: path.to_owned(),
    })?;
    let dir = std::fs::File::open(handle.proc_path()).map_err(io_error("open", path))?;
    let stat = nix::sys::statvfs::fstatvfs(&dir).map_err(|errno| NodeError::Mount {
        op: "statvfs",
        target: path.to_owned(),
        errno,
    })?;
    let blocks = size / stat.block_size();
    // SAFETY: the ioctl reads one u64 from the pointer, which outlives the call.
    unsafe { ext4_resize_fs(std::os::fd::AsRawFd::as_raw_fd(&dir), &blocks) }.map_err(|errno| {
        NodeError::Mount {
            op: "grow the ext4 filesystem at",
            target: path.to_owned(),
            errno,
        }
    })?;
    Ok(())
}

fn grow_xfs(path: &Path, device: &Path) -> Result<(), NodeError> {
    format::run_tool("xfs_growfs", &[], path, device, &[0]).map(drop)
}

/// A block device's size from sysfs (512-byte sectors).
pub fn device_size(device: &Path) -> Result<u64, NodeError> {
    let canonical = std::fs::canonicalize(device).map_err(io_error("resolve", device))?;
    let name = canonical.file_name().unwrap_or_default();
    let size = Path::new("/sys/class/block").join(name).join("size");
    let sectors: u64 = std::fs::read_to_string(&size)
        .map_err(io_error("read", &size))?
        .trim()
        .parse()
        .map_err(|_| NodeError::Unsupported {
            what: format!("the size in {}", size.display()),
        })?;
    Ok(sectors * 512)
}

/// Why the device behind the filesystem mounted at `path` is unusable, if it is: gone from the
/// kernel (a detached or disconnected disk keeps its mount but has no size). `None` when the
/// device looks healthy or the mount is not a device filesystem.
pub fn device_trouble(path: &Path) -> Option<String> {
    let table = MountTable::read().ok()?;
    let covering = table.covering(path)?;
    if !covering.source.starts_with("/dev/") {
        return None;
    }
    let device = Path::new(&covering.source);
    match device_size(device) {
        Ok(0) => Some(format!(
            "device {} behind the mount has no size: it is gone",
            device.display()
        )),
        Ok(_) => {
            // Still the device that was mounted? (A renumbered disk gets another node.)
            match device_number(device) {
                Ok(number) if number == covering.device => None,
                Ok(number) => Some(format!(
                    "device {} is now {number}, not the mounted {}",
                    device.display(),
                    covering.device
                )),
                Err(_) => Some(format!(
                    "device {} behind the mount is gone",
                    device.display()
                )),
            }
        }
        Err(_) => Some(format!(
            "device {} behind the mount is gone",
            device.display()
        )),
    }
}

/// Why the filesystem mounted at `path` is not the device `now` (what the volume's attachment
/// resolves to at present), if it is not: a reconnect renumbered the disk and the mount still
/// holds the old one.
pub fn mounted_from_other(path: &Path, now: &Path) -> Option<String> {
    let table = MountTable::read().ok()?;
    let covering = table.covering(path)?;
    let number = device_number(now).ok()?;
    (number != covering.device).then(|| {
        format!(
            "the volume's device is now {} ({number}), but the staged mount is on {} ({})",
            now.display(),
            covering.source,
            covering.device
        )
    })
}
