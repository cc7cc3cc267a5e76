//! Directories published at target paths: idempotent bind mounts, and their removal.

use std::fs;
use std::path::Path;

use super::mountinfo::MountTable;
use super::{NodeError, io_error, mount};

/// Bind-mounts the directory `source` at `target` (created if missing), read-only when asked.
/// Returns false when it was already published there exactly so; a different mount at
/// `target` is an error.
pub fn bind_dir(source: &Path, target: &Path, read_only: bool) -> Result<bool, NodeError> {
    let source = fs::canonicalize(source).map_err(io_error("resolve", source))?;
    let table = MountTable::read()?;
    if let Some(existing) = table.at(target) {
        let ours = table.is_bind_of(existing, &source);
        if ours && existing.is_read_only() == read_only {
            return Ok(false);
        }
        let what = if ours {
            let mode = if existing.is_read_only() {
                "read-only"
            } else {
                "read-write"
            };
            format!("this volume, {mode}")
        } else {
            format!("{} from {}", existing.fs_type, existing.source)
        };
        return Err(NodeError::OtherMount {
            target: target.to_owned(),
            what,
        });
    }
    fs::create_dir_all(target).map_err(io_error("create", target))?;
    mount::bind(&source, target, read_only)?;
    Ok(true)
}

/// What [`unpublish`] found at the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unpublished {
    pub was_mounted: bool,
    pub existed: bool,
}

/// Unmounts `target` if something is mounted there, then removes the (empty) directory.
/// A non-empty directory is left alone: it is somebody's data, not our mount point.
pub fn unpublish(target: &Path) -> Result<Unpublished, NodeError> {
    let was_mounted = MountTable::read()?.at(target).is_some();
    if was_mounted {
        mount::unmount(target)?;
    }
    let existed = fs::symlink_metadata(target).is_ok();
    if existed {
        match fs::remove_dir(target) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => {
                return Err(NodeError::NotEmpty {
                    path: target.to_owned(),
                });
            }
            Err(e) => return Err(io_error("remove", target)(e)),
        }
    }
    Ok(Unpublished {
        was_mounted,
        existed: existed || was_mounted,
    })
}

/// True when `path` is a mount that shows the directory `source`.
pub fn shows(source: &Path, path: &Path) -> Result<bool, NodeError> {
    let source = fs::canonicalize(source).map_err(io_error("resolve", source))?;
    let table = MountTable::read()?;
    Ok(table.at(path).is_some_and(|m| table.is_bind_of(m, &source)))
}
