//! Directories published at target paths: idempotent bind mounts, and their removal. Targets
//! are resolved beneath the kubelet root (`confined.rs`) as a parent handle and a name, and the
//! target is always opened relative to that parent; a mount is recognised by mount ids (the
//! target's differs from its parent's) and checked in /proc/self/mountinfo by id, never by
//! path, so a renamed or swapped directory cannot make the node mistake one mount for another,
//! and only what this driver mounted for this volume is ever unmounted.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

use super::confined::{Handle, KubeletRoot};
use super::mountinfo::{MountEntry, MountTable};
use super::{NodeError, io_error, mount};

/// A target resolved beneath the kubelet root: its parent's handle and its name.
pub(crate) struct Target<'a> {
    parent: Handle,
    name: &'a OsStr,
    path: &'a Path,
}

impl<'a> Target<'a> {
    pub(crate) fn resolve(root: &KubeletRoot, path: &'a Path) -> Result<Self, NodeError> {
        let (parent, name) = root.parent(path)?;
        Ok(Self { parent, name, path })
    }

    /// The target's handle, if it exists.
    pub(crate) fn open(&self) -> Result<Option<Handle>, NodeError> {
        Ok(self.parent.open_child(self.name)?)
    }

    /// Creates the target directory inside its parent (if needed) and opens it.
    pub(crate) fn create_dir(&self) -> Result<Handle, NodeError> {
        Ok(self.parent.create_dir_child(self.name)?)
    }

    /// The mount whose root `handle` (opened from this target) is, if it is one.
    pub(crate) fn mount<'t>(
        &self,
        table: &'t MountTable,
        handle: &Handle,
    ) -> Result<Option<&'t MountEntry>, NodeError> {
        let id = handle.mount_id()?;
        if id == self.parent.mount_id()? {
            return Ok(None);
        }
        Ok(table.entries().iter().find(|e| e.id == id))
    }

    pub(crate) fn unmount(&self, mount_id: u32) -> Result<(), NodeError> {
        mount::unmount_in(&self.parent, self.name, mount_id)
    }
}

fn canonical(source: &Path) -> Result<PathBuf, NodeError> {
    fs::canonicalize(source).map_err(io_error("resolve", source))
}

/// Refuses a target outside the kubelet root, through a link or without a parent, before
/// anything is created for it.
pub fn check_target(root: &KubeletRoot, target: &Path) -> Result<(), NodeError> {
    Target::resolve(root, target)?.open()?;
    Ok(())
}

/// Bind-mounts the block device node `device` onto the file `target` (created inside its
/// existing parent if missing), read-only when asked: a block volume. Returns false when it was
/// already published there exactly so.
pub fn bind_device(
    root: &KubeletRoot,
    device: &Path,
    target: &Path,
    read_only: bool,
) -> Result<bool, NodeError> {
    let source = Handle::open_device(device)?;
    let target = Target::resolve(root, target)?;
    let handle = match target.open()? {
        Some(existing) => {
            let table = MountTable::read()?;
            if let Some(m) = target.mount(&table, &existing)? {
                if table.is_bind_of(m, device) && m.is_read_only() == read_only {
                    return Ok(false);
                }
                return Err(NodeError::OtherMount {
                    target: target.path.to_owned(),
                    what: format!("{} from {}", m.fs_type, m.source),
                });
            }
            existing
        }
        None => target.parent.create_file_child(target.name)?,
    };
    mount::bind(&source, &handle)?;
    drop(handle);
    if read_only {
        let top = target.open()?.ok_or_else(|| NodeError::Missing {
            path: target.path.to_owned(),
        })?;
        let id = top.mount_id()?;
        if let Err(e) = mount::remount_read_only(&top) {
            drop(top);
            let _ = target.unmount(id);
            return Err(e);
        }
    }
    Ok(true)
}

/// Bind-mounts this host's own directory `dir` (a node-local volume) at `target` (created
/// inside its existing parent if missing), read-only when asked. Returns false when it was
/// already published there exactly so; a different mount at `target` is an error.
pub fn bind_dir(
    root: &KubeletRoot,
    dir: &Path,
    target: &Path,
    read_only: bool,
) -> Result<bool, NodeError> {
    let source_path = canonical(dir)?;
    let source = if source_path.starts_with(root.path()) {
        root.open_path(&source_path)?
            .ok_or_else(|| NodeError::Missing {
                path: source_path.clone(),
            })?
    } else {
        Handle::open_own_dir(&source_path)?
    };
    bind(root, source, &source_path, target, read_only)
}

/// Bind-mounts the filesystem staged at `staging` at `target`. The staging path is resolved
/// beneath the kubelet root like a target (no links, no way out), and must hold a staged
/// device filesystem: the CO's word for where the volume was staged is checked, not trusted.
pub fn bind_staged(
    root: &KubeletRoot,
    staging: &Path,
    target: &Path,
    read_only: bool,
) -> Result<bool, NodeError> {
    let staged = Target::resolve(root, staging)?;
    let not_staged = || NodeError::NotStaged {
        path: staging.to_owned(),
    };
    let handle = staged.open()?.ok_or_else(not_staged)?;
    let table = MountTable::read()?;
    match staged.mount(&table, &handle)? {
        Some(m)
            if m.source.starts_with("/dev/")
                && super::format::FILESYSTEMS.contains(&m.fs_type.as_str()) => {}
        _ => return Err(not_staged()),
    }
    bind(root, handle, staging, target, read_only)
}

/// Bind-mounts the opened `source` (known as `source_path`) at `target`.
fn bind(
    root: &KubeletRoot,
    source: Handle,
    source_path: &Path,
    target: &Path,
    read_only: bool,
) -> Result<bool, NodeError> {
    let target = Target::resolve(root, target)?;
    let handle = match target.open()? {
        Some(existing) => {
            let table = MountTable::read()?;
            if let Some(m) = target.mount(&table, &existing)? {
                let ours = table.is_bind_of(m, source_path);
                if ours && m.is_read_only() == read_only {
                    return Ok(false);
                }
                let what = if ours {
                    let mode = if m.is_read_only() {
                        "read-only"
                    } else {
                        "read-write"
                    };
                    format!("this volume, {mode}")
                } else {
                    format!("{} from {}", m.fs_type, m.source)
                };
                return Err(NodeError::OtherMount {
                    target: target.path.to_owned(),
                    what,
                });
            }
            existing
        }
        None => target.create_dir()?,
    };
    mount::bind(&source, &handle)?;
    drop(handle);
    if read_only {
        // The new mount's own root is what the name resolves to now.
        let top = target.open()?.ok_or_else(|| NodeError::Missing {
            path: target.path.to_owned(),
        })?;
        let table = MountTable::read()?;
        let mounted = target.mount(&table, &top)?;
        let id = mounted.map(|m| m.id);
        let done = match mounted {
            Some(m) if table.is_bind_of(m, source_path) => mount::remount_read_only(&top),
            _ => Err(NodeError::OtherMount {
                target: target.path.to_owned(),
                what: "a mount that appeared while publishing".into(),
            }),
        };
        drop(top);
        if let Err(e) = done {
            if let Some(id) = id {
                let _ = target.unmount(id);
            }
            return Err(e);
        }
    }
    Ok(true)
}

/// Whether a mount at a volume's target looks like a staged volume published there: the
/// whole of a device filesystem (a bind of a staging mount), or a device node (a block
/// volume). That is how a target is recognised when the source this node knows for the volume
/// does not match: a volume another driver staged (no record here), or one whose device has
/// gone or been renumbered since. A bind of a directory inside a filesystem (another volume's
/// node-local directory, say) is never taken for one.
fn staged_look(m: &MountEntry) -> bool {
    let whole_device_fs = m.source.starts_with("/dev/")
        && super::format::FILESYSTEMS.contains(&m.fs_type.as_str())
        && m.root == Path::new("/");
    let device_node = m.fs_type == "devtmpfs" && m.root != Path::new("/");
    whole_device_fs || device_node
}

/// What [`unpublish`] found at the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unpublished {
    pub was_mounted: bool,
    pub existed: bool,
}

/// Unmounts `target` if this volume's directory (`source`) is mounted there, or a staged
/// volume's filesystem or device is ([`staged_look`]), then removes the (empty) directory. A
/// mount of anything else is refused and left alone, as is a non-empty directory: it is
/// somebody's data, not our mount point.
pub fn unpublish(
    root: &KubeletRoot,
    source: &Path,
    target: &Path,
) -> Result<Unpublished, NodeError> {
    let absent = Unpublished {
        was_mounted: false,
        existed: false,
    };
    let target = match Target::resolve(root, target) {
        Ok(t) => t,
        Err(NodeError::Confined(super::confined::ConfinedError::NoParent { .. })) => {
            return Ok(absent);
        }
        Err(e) => return Err(e),
    };
    let Some(handle) = target.open()? else {
        return Ok(absent);
    };
    let table = MountTable::read()?;
    let mounted = target.mount(&table, &handle)?.cloned();
    drop(handle);
    if let Some(m) = &mounted {
        let ours =
            fs::canonicalize(source).is_ok_and(|s| table.is_bind_of(m, &s)) || staged_look(m);
        if !ours {
            return Err(NodeError::NotOurs {
                target: target.path.to_owned(),
                what: format!("{} from {}", m.fs_type, m.source),
            });
        }
        target.unmount(m.id)?;
    }
    root.remove_dir(target.path)?;
    Ok(Unpublished {
        was_mounted: mounted.is_some(),
        existed: true,
    })
}

/// What a path beneath the kubelet root shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shows {
    /// Nothing is there.
    Absent,
    /// The path exists and nothing is mounted on it.
    Unmounted,
    /// A mount of something else.
    Other,
    /// A mount that shows `source`.
    Source,
}

/// What `path` (beneath the kubelet root) shows, measured against the directory `source`.
pub fn shows(root: &KubeletRoot, source: &Path, path: &Path) -> Result<Shows, NodeError> {
    let source = canonical(source)?;
    let target = Target::resolve(root, path)?;
    let Some(handle) = target.open()? else {
        return Ok(Shows::Absent);
    };
    let table = MountTable::read()?;
    Ok(match target.mount(&table, &handle)? {
        None => Shows::Unmounted,
        Some(m) if table.is_bind_of(m, &source) => Shows::Source,
        Some(_) => Shows::Other,
    })
}
