//! Paths confined to the kubelet root and resolved race-free.
//!
//! Every target path is resolved from a directory handle on `--kubelet-root` with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`: no symbolic link anywhere on the way (the
//! last component included), no `..` out of the root. What is resolved is kept as an `O_PATH`
//! handle, and mount(2) and umount2(2) act on the handle (through its `/proc/self/fd/N` magic
//! link, which names exactly the opened file and cannot be redirected), so a directory swapped
//! for a symbolic link after the check cannot redirect them. Targets are created only inside a
//! parent that exists, relative to the parent's handle.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::Mode;

#[derive(Debug, thiserror::Error)]
pub enum ConfinedError {
    #[error("{path} is not under the kubelet root {root}")]
    Outside { path: PathBuf, root: PathBuf },
    #[error("{path} leads through a symbolic link")]
    Symlink { path: PathBuf },
    #[error("the parent directory of {path} does not exist")]
    NoParent { path: PathBuf },
    #[error("{path} exists and is not a {expected}")]
    WrongKind {
        path: PathBuf,
        expected: &'static str,
    },
    #[error("{path} is not empty; refusing to remove it")]
    NotEmpty { path: PathBuf },
    #[error("{op} {path}: {errno}")]
    Sys {
        op: &'static str,
        path: PathBuf,
        errno: Errno,
    },
}

fn sys<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(Errno) -> ConfinedError + 'a {
    move |errno| ConfinedError::Sys {
        op,
        path: path.to_owned(),
        errno,
    }
}

/// An opened path: every operation goes through the handle, never the path again.
#[derive(Debug)]
pub struct Handle {
    fd: OwnedFd,
    path: PathBuf,
}

impl Handle {
    /// Opens a path the host itself controls (its state directory), refusing a symbolic link
    /// as the last component.
    pub fn open_own_dir(path: &Path) -> Result<Self, ConfinedError> {
        Self::open_own(path, OFlag::O_DIRECTORY)
    }

    /// Opens a device node the host resolved itself (under /dev), not through a link.
    pub fn open_device(path: &Path) -> Result<Self, ConfinedError> {
        Self::open_own(path, OFlag::empty())
    }

    fn open_own(path: &Path, extra: OFlag) -> Result<Self, ConfinedError> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | extra,
            Mode::empty(),
        )
        .map_err(sys("open", path))?;
        Ok(Self {
            fd,
            path: path.to_owned(),
        })
    }

    /// The path the handle was opened by (for messages and the mount table).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The magic link that names exactly the opened file.
    pub fn proc_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    /// The id of the mount the handle is on (as in /proc/self/mountinfo).
    pub fn mount_id(&self) -> Result<u32, ConfinedError> {
        let fdinfo = format!("/proc/self/fdinfo/{}", self.fd.as_raw_fd());
        let mut text = String::new();
        std::fs::File::open(&fdinfo)
            .and_then(|mut f| f.read_to_string(&mut text))
            .map_err(|e| ConfinedError::Sys {
                op: "read",
                path: PathBuf::from(&fdinfo),
                errno: Errno::from_raw(e.raw_os_error().unwrap_or(0)),
            })?;
        text.lines()
            .find_map(|l| l.strip_prefix("mnt_id:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| ConfinedError::Sys {
                op: "parse",
                path: PathBuf::from(fdinfo),
                errno: Errno::EINVAL,
            })
    }

    /// Opens `name` inside this directory handle, without following a link; `None` when it
    /// does not exist.
    pub fn open_child(&self, name: &std::ffi::OsStr) -> Result<Option<Handle>, ConfinedError> {
        let path = self.path.join(name);
        match openat2(self.fd.as_fd(), name, beneath(OFlag::empty())) {
            Ok(fd) => Ok(Some(Handle { fd, path })),
            Err(Errno::ENOENT) => Ok(None),
            Err(errno) => Err(KubeletRoot::resolve_err(&path, "open")(errno)),
        }
    }

    /// Opens the regular file `name` inside this directory handle, creating it (empty) if
    /// needed: the mount point of a block volume.
    pub fn create_file_child(&self, name: &std::ffi::OsStr) -> Result<Handle, ConfinedError> {
        let path = self.path.join(name);
        match nix::fcntl::openat(
            self.fd.as_fd(),
            name,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o640),
        ) {
            Ok(_) | Err(Errno::EEXIST) => {}
            Err(errno) => return Err(sys("create", &path)(errno)),
        }
        let handle = self
            .open_child(name)?
            .ok_or_else(|| sys("open", &path)(Errno::ENOENT))?;
        let stat = nix::sys::stat::fstat(handle.fd.as_fd()).map_err(sys("stat", &path))?;
        if stat.st_mode & nix::libc::S_IFMT != nix::libc::S_IFREG {
            return Err(ConfinedError::WrongKind {
                path,
                expected: "regular file",
            });
        }
        Ok(handle)
    }

    /// Opens the directory `name` inside this directory handle, creating it if needed.
    pub fn create_dir_child(&self, name: &std::ffi::OsStr) -> Result<Handle, ConfinedError> {
        let path = self.path.join(name);
        match nix::sys::stat::mkdirat(self.fd.as_fd(), name, Mode::from_bits_truncate(0o750)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(errno) => return Err(sys("create", &path)(errno)),
        }
        let handle = self
            .open_child(name)?
            .ok_or_else(|| sys("open", &path)(Errno::ENOENT))?;
        if !handle.is_dir()? {
            return Err(ConfinedError::WrongKind {
                path,
                expected: "directory",
            });
        }
        Ok(handle)
    }

    pub(crate) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn is_dir(&self) -> Result<bool, ConfinedError> {
        let stat = nix::sys::stat::fstat(self.fd.as_fd()).map_err(sys("stat", &self.path))?;
        Ok(stat.st_mode & nix::libc::S_IFMT == nix::libc::S_IFDIR)
    }
}

/// The kubelet root, held open.
#[derive(Debug)]
pub struct KubeletRoot {
    dir: OwnedFd,
    path: PathBuf,
}

/// No O_NOFOLLOW: with it a final symbolic link would be opened as the link itself; without
/// it, RESOLVE_NO_SYMLINKS refuses a link anywhere, the last component included (ELOOP).
fn beneath(flags: OFlag) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS)
}

impl KubeletRoot {
    /// Opens the root (created if missing); its canonical path is what target paths must
    /// start with.
    pub fn open(path: &Path) -> Result<Self, ConfinedError> {
        std::fs::create_dir_all(path).map_err(|e| ConfinedError::Sys {
            op: "create",
            path: path.to_owned(),
            errno: Errno::from_raw(e.raw_os_error().unwrap_or(0)),
        })?;
        let canonical = std::fs::canonicalize(path).map_err(|e| ConfinedError::Sys {
            op: "resolve",
            path: path.to_owned(),
            errno: Errno::from_raw(e.raw_os_error().unwrap_or(0)),
        })?;
        let handle = Handle::open_own_dir(&canonical)?;
        Ok(Self {
            dir: handle.fd,
            path: canonical,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `path` relative to the root; refused when it is not strictly below it.
    fn relative<'a>(&self, path: &'a Path) -> Result<&'a Path, ConfinedError> {
        match path.strip_prefix(&self.path) {
            Ok(rel) if !rel.as_os_str().is_empty() => Ok(rel),
            _ => Err(ConfinedError::Outside {
                path: path.to_owned(),
                root: self.path.clone(),
            }),
        }
    }

    fn resolve_err<'a>(
        path: &'a Path,
        op: &'static str,
    ) -> impl FnOnce(Errno) -> ConfinedError + 'a {
        move |errno| match errno {
            Errno::ELOOP | Errno::EXDEV => ConfinedError::Symlink {
                path: path.to_owned(),
            },
            errno => ConfinedError::Sys {
                op,
                path: path.to_owned(),
                errno,
            },
        }
    }

    /// Opens an existing path beneath the root; `None` when it does not exist.
    pub fn open_path(&self, path: &Path) -> Result<Option<Handle>, ConfinedError> {
        let rel = self.relative(path)?;
        match openat2(self.dir.as_fd(), rel, beneath(OFlag::empty())) {
            Ok(fd) => Ok(Some(Handle {
                fd,
                path: path.to_owned(),
            })),
            Err(Errno::ENOENT) => Ok(None),
            Err(errno) => Err(Self::resolve_err(path, "open")(errno)),
        }
    }

    /// The handle of `path`'s parent directory and the last component's name (which is not
    /// looked at).
    pub fn parent<'a>(
        &self,
        path: &'a Path,
    ) -> Result<(Handle, &'a std::ffi::OsStr), ConfinedError> {
        let rel = self.relative(path)?;
        let name = rel.file_name().ok_or_else(|| ConfinedError::Outside {
            path: path.to_owned(),
            root: self.path.clone(),
        })?;
        let parent_rel = rel.parent().unwrap_or(Path::new(""));
        let parent_path = self.path.join(parent_rel);
        let fd = if parent_rel.as_os_str().is_empty() {
            nix::unistd::dup(self.dir.as_fd()).map_err(sys("dup", &self.path))?
        } else {
            openat2(self.dir.as_fd(), parent_rel, beneath(OFlag::O_DIRECTORY)).map_err(|errno| {
                match errno {
                    Errno::ENOENT => ConfinedError::NoParent {
                        path: path.to_owned(),
                    },
                    errno => Self::resolve_err(path, "open parent of")(errno),
                }
            })?
        };
        Ok((
            Handle {
                fd,
                path: parent_path,
            },
            name,
        ))
    }

    /// Opens the directory `path`, creating it inside its existing parent if needed.
    pub fn create_dir(&self, path: &Path) -> Result<Handle, ConfinedError> {
        let (parent, name) = self.parent(path)?;
        parent.create_dir_child(name)
    }

    /// Removes the empty directory or the file `path` (a block volume's mount point) through
    /// its parent's handle. Returns false when there was nothing to remove.
    pub fn remove_dir(&self, path: &Path) -> Result<bool, ConfinedError> {
        let (parent, name) = match self.parent(path) {
            Ok(found) => found,
            Err(ConfinedError::NoParent { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        match nix::unistd::unlinkat(
            parent.fd.as_fd(),
            name,
            nix::unistd::UnlinkatFlags::RemoveDir,
        ) {
            Ok(()) => Ok(true),
            Err(Errno::ENOENT) => Ok(false),
            Err(Errno::ENOTDIR) => nix::unistd::unlinkat(
                parent.fd.as_fd(),
                name,
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            )
            .map(|()| true)
            .map_err(sys("remove", path)),
            Err(Errno::ENOTEMPTY | Errno::EEXIST) => Err(ConfinedError::NotEmpty {
                path: path.to_owned(),
            }),
            Err(errno) => Err(sys("remove", path)(errno)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> (tempfile::TempDir, KubeletRoot) {
        let dir = tempfile::tempdir().unwrap();
        let root = KubeletRoot::open(&dir.path().join("kubelet")).unwrap();
        (dir, root)
    }

    #[test]
    fn paths_outside_or_through_links_are_refused() {
        let (dir, root) = root();
        let base = root.path().to_owned();
        std::fs::create_dir(base.join("pods")).unwrap();
        std::os::unix::fs::symlink(dir.path(), base.join("escape")).unwrap();
        std::os::unix::fs::symlink(base.join("pods"), base.join("inside-link")).unwrap();

        assert!(matches!(
            root.open_path(Path::new("/etc")),
            Err(ConfinedError::Outside { .. })
        ));
        assert!(matches!(
            root.open_path(&base),
            Err(ConfinedError::Outside { .. })
        ));
        assert!(matches!(
            root.create_dir(&base.join("escape/x")),
            Err(ConfinedError::Symlink { .. })
        ));
        // Even a link that stays inside the root is refused: no link anywhere.
        assert!(matches!(
            root.open_path(&base.join("inside-link")),
            Err(ConfinedError::Symlink { .. })
        ));
        assert!(matches!(
            root.create_dir(&base.join("missing/target")),
            Err(ConfinedError::NoParent { .. })
        ));
        assert!(!dir.path().join("x").exists(), "nothing created outside");

        let target = base.join("pods/t");
        assert!(root.open_path(&target).unwrap().is_none());
        let handle = root.create_dir(&target).unwrap();
        assert!(target.is_dir());
        assert!(handle.mount_id().unwrap() > 0);
        assert!(root.remove_dir(&target).unwrap());
        assert!(!root.remove_dir(&target).unwrap());
    }
}
