//! Mount syscalls on opened handles. No shelling out: bind, read-only remount and unmount go
//! straight to the kernel, which is both faster and free of quoting problems; and they name
//! their paths by `/proc/self/fd/N` of a handle opened beneath the kubelet root, so nothing can
//! redirect them between the check and the call.

use std::ffi::OsStr;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::unistd::fchdir;

use super::NodeError;
use super::confined::Handle;

fn mount_err<'a>(op: &'static str, target: &'a Handle) -> impl FnOnce(Errno) -> NodeError + 'a {
    move |errno| NodeError::Mount {
        op,
        target: target.path().to_owned(),
        errno,
    }
}

/// Bind-mounts `source` onto `target`.
pub fn bind(source: &Handle, target: &Handle) -> Result<(), NodeError> {
    mount(
        Some(&source.proc_path()),
        &target.proc_path(),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(mount_err("bind mount onto", target))
}

/// Makes the bind mount whose root `mount_root` is read-only (the first bind ignores
/// MS_RDONLY).
pub fn remount_read_only(mount_root: &Handle) -> Result<(), NodeError> {
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    mount(
        None::<&str>,
        &mount_root.proc_path(),
        None::<&str>,
        flags,
        None::<&str>,
    )
    .map_err(mount_err("read-only remount of", mount_root))
}

thread_local! {
    /// Whether this thread has its own working directory (unshare(CLONE_FS)).
    static OWN_CWD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Unmounts the mount at `name` in the directory `parent`, if it is still mount `mount_id`.
///
/// umount2(2) takes a path, and an open handle on the mount itself would keep it busy; so the
/// calling thread (which gets its own working directory first) changes into the parent's
/// handle and unmounts `name` relative to it with UMOUNT_NOFOLLOW: no component before the
/// last is looked up again, and the last is no link. Never a lazy detach: a busy mount is an
/// error the CO retries, not a mount that lingers unseen.
pub fn unmount_in(parent: &Handle, name: &OsStr, mount_id: u32) -> Result<(), NodeError> {
    let path = parent.path().join(name);
    let err = |op| {
        let path = path.clone();
        move |errno| NodeError::Mount {
            op,
            target: path,
            errno,
        }
    };
    if !OWN_CWD.get() {
        unshare(CloneFlags::CLONE_FS).map_err(err("unshare the working directory for"))?;
        OWN_CWD.set(true);
    }
    fchdir(parent.fd()).map_err(err("change into the parent of"))?;
    let result = (|| {
        // Still the mount that was checked?
        let current = match parent.open_child(name)? {
            Some(child) => child.mount_id()?,
            None => 0,
        };
        if current != mount_id {
            return Err(NodeError::OtherMount {
                target: path.clone(),
                what: "a mount that changed while unpublishing".into(),
            });
        }
        umount2(name, MntFlags::UMOUNT_NOFOLLOW).map_err(|errno| match errno {
            Errno::EBUSY => NodeError::Busy {
                target: path.clone(),
            },
            errno => err("unmount")(errno),
        })
    })();
    // Leave no directory pinned by this thread's working directory.
    let _ = nix::unistd::chdir("/");
    result
}
