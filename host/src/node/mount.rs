//! Mount syscalls. No shelling out: bind, read-only remount and unmount go straight to the
//! kernel, which is both faster and free of quoting problems.

use std::path::Path;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};

use super::NodeError;

/// Bind-mounts `source` onto `target`; with `read_only`, remounts the bind read-only (the first
/// bind ignores MS_RDONLY). A failed remount undoes the bind.
pub fn bind(source: &Path, target: &Path, read_only: bool) -> Result<(), NodeError> {
    let err = |op| {
        move |errno| NodeError::Mount {
            op,
            target: target.to_owned(),
            errno,
        }
    };
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(err("bind mount onto"))?;
    if read_only {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        if let Err(errno) = mount(None::<&str>, target, None::<&str>, flags, None::<&str>) {
            let _ = unmount(target);
            return Err(err("read-only remount of")(errno));
        }
    }
    Ok(())
}

/// Unmounts `target`. Returns false when nothing was mounted there. A busy mount is detached
/// lazily so it disappears once its last user leaves.
pub fn unmount(target: &Path) -> Result<bool, NodeError> {
    let err = |errno| NodeError::Mount {
        op: "unmount",
        target: target.to_owned(),
        errno,
    };
    match umount2(target, MntFlags::empty()) {
        Ok(()) => Ok(true),
        Err(Errno::EINVAL) => Ok(false),
        Err(Errno::EBUSY) => umount2(target, MntFlags::MNT_DETACH)
            .map(|()| true)
            .map_err(err),
        Err(errno) => Err(err(errno)),
    }
}
