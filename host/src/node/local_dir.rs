//! Per-node volume directories (`attachment::local-dir`) under `<root>/<volume-id>` (the root is
//! `--local-dir-root`, by default `<state-dir>/local`).
//! Callers pass validated volume ids only, so a path here is always one component below the root.
//! Where the filesystem has project quotas, each directory is held to its volume's size.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};

use super::mountinfo::MountTable;
use super::{NodeError, io_error};

#[derive(Debug, Clone)]
pub struct LocalDirs {
    root: PathBuf,
    /// Why sizes are not enforced (no project quotas on the root's filesystem), if they are not.
    unenforced: Option<String>,
    /// Says so in the log once, with the first volume: a process that never holds a node-local
    /// volume (a controller, a backend that attaches storage) has nothing to warn about.
    warned: Arc<Once>,
    /// The project ids the directories get.
    project_ids: std::ops::RangeInclusive<u32>,
}

/// The directories under `root` (not following links), with when each was last changed (unix
/// seconds): what `modcsi audit --local-dir-root` holds against the records.
pub fn directories(root: &Path) -> Result<Vec<(String, i64)>, NodeError> {
    use std::os::unix::fs::MetadataExt;
    let mut out = vec![];
    for entry in fs::read_dir(root).map_err(io_error("read", root))? {
        let entry = entry.map_err(io_error("read", root))?;
        let meta =
            fs::symlink_metadata(entry.path()).map_err(io_error("inspect", &entry.path()))?;
        if meta.is_dir() {
            out.push((
                entry.file_name().to_string_lossy().into_owned(),
                meta.mtime(),
            ));
        }
    }
    out.sort();
    Ok(out)
}

impl LocalDirs {
    /// Creates the root directory and learns whether volume sizes can be enforced there.
    pub fn open(
        root: &Path,
        project_ids: std::ops::RangeInclusive<u32>,
    ) -> Result<Self, NodeError> {
        let root = root.to_owned();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&root)
            .map_err(io_error("create", &root))?;
        // Canonical once, so that a volume's directory needs no resolving on every check.
        let root = fs::canonicalize(&root).map_err(io_error("resolve", &root))?;
        let unenforced = super::quota::supported(&root).err();
        Ok(Self {
            root,
            unenforced,
            warned: Arc::new(Once::new()),
            project_ids,
        })
    }

    pub fn path(&self, volume_id: &str) -> PathBuf {
        self.root.join(volume_id)
    }

    /// Whether this node holds the volume's directory.
    pub fn exists(&self, volume_id: &str) -> bool {
        fs::symlink_metadata(self.path(volume_id)).is_ok()
    }

    /// Creates the volume's directory if needed, world-writable like an emptyDir so pods of
    /// any user can write to it, and holds it to `size` bytes where sizes are enforced.
    pub fn ensure(&self, volume_id: &str, size: Option<u64>) -> Result<PathBuf, NodeError> {
        let path = self.path(volume_id);
        match fs::DirBuilder::new().mode(0o777).create(&path) {
            Ok(()) => fs::set_permissions(&path, fs::Permissions::from_mode(0o777))
                .map_err(io_error("chmod", &path))?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_error("create", &path)(e)),
        }
        match (&self.unenforced, size) {
            (None, Some(bytes)) => {
                super::quota::limit(&path, volume_id, bytes, &self.project_ids)?;
            }
            (Some(why), _) => self.warned.call_once(|| {
                tracing::warn!(
                    dir = %self.root.display(),
                    "node-local volume sizes are not enforced: {why}; stats report the filesystem's own figures"
                )
            }),
            (None, None) => {}
        }
        Ok(path)
    }

    /// Refuses while any mount still shows the volume's directory (nothing to check when this
    /// node has none).
    pub fn check_unused(&self, volume_id: &str) -> Result<(), NodeError> {
        let path = self.path(volume_id);
        let Ok(meta) = fs::symlink_metadata(&path) else {
            return Ok(());
        };
        // A directory one component below the canonical root is canonical itself.
        let canonical = if meta.is_dir() {
            path.clone()
        } else {
            fs::canonicalize(&path).map_err(io_error("resolve", &path))?
        };
        let targets = MountTable::read()?.binds_of(&canonical);
        if targets.is_empty() {
            Ok(())
        } else {
            Err(NodeError::InUse { path, targets })
        }
    }

    /// Removes the volume's directory and everything in it, refusing while it is mounted
    /// anywhere. Returns false when there was nothing to remove.
    pub fn remove(&self, volume_id: &str) -> Result<bool, NodeError> {
        self.check_unused(volume_id)?;
        let path = self.path(volume_id);
        // remove_dir_all does not follow symbolic links inside the directory.
        match fs::remove_dir_all(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_error("remove", &path)(e)),
        }
    }
}
