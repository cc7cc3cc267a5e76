//! Project quotas, which give a node-local directory the size its volume was created with. A
//! volume directory becomes its own project: the project id is the directory's inode number
//! (unique on its filesystem for as long as the directory lives, never 0), set with the
//! inherit flag so everything created inside counts, and the project's hard block limit is the
//! volume's size. With the project's limit in place, statfs(2) on the directory reports the
//! quota (ext4 and xfs do), so stats need nothing of their own.
//!
//! Needs a filesystem with project quotas on (ext4: `mkfs.ext4 -O project,quota` and mount
//! option `prjquota`; xfs: `prjquota`). [`supported`] says whether the state directory's has.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::errno::Errno;

use super::NodeError;

const PRJQUOTA: i32 = 2;
const Q_GETQUOTA: i32 = 0x800007;
const Q_SETQUOTA: i32 = 0x800008;
/// `dqb_valid`: the block limits are being set.
const QIF_BLIMITS: u32 = 1;
const FS_XFLAG_PROJINHERIT: u32 = 0x0000_0200;
/// Quota block limits are in 1 KiB units.
const QUOTA_BLOCK: u64 = 1024;

fn qcmd(cmd: i32, kind: i32) -> i32 {
    (cmd << 8) | (kind & 0xff)
}

/// The kernel's `struct fsxattr`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct FsXattr {
    xflags: u32,
    extsize: u32,
    nextents: u32,
    projid: u32,
    cowextsize: u32,
    pad: [u8; 8],
}

nix::ioctl_read!(fs_get_xattr, b'X', 31, FsXattr);
nix::ioctl_write_ptr!(fs_set_xattr, b'X', 32, FsXattr);

/// `quotactl_fd(2)` on the filesystem holding `fd` (no device path needed).
fn quotactl(fd: &File, cmd: i32, id: u32, quota: &mut nix::libc::dqblk) -> Result<(), Errno> {
    // SAFETY: the kernel reads or writes one `struct if_dqblk` (libc's dqblk) at `quota`, which
    // lives across the call.
    let rc = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_quotactl_fd,
            fd.as_raw_fd(),
            cmd,
            id,
            quota as *mut nix::libc::dqblk,
        )
    };
    Errno::result(rc).map(drop)
}

fn empty_dqblk() -> nix::libc::dqblk {
    // SAFETY: dqblk is plain integers; all zeroes is a valid value.
    unsafe { std::mem::zeroed() }
}

/// Whether the filesystem holding `dir` enforces project quotas; the reason when it does not.
pub fn supported(dir: &Path) -> Result<(), String> {
    let file = File::open(dir).map_err(|e| format!("cannot open {}: {e}", dir.display()))?;
    let mut quota = empty_dqblk();
    match quotactl(&file, qcmd(Q_GETQUOTA, PRJQUOTA), 0, &mut quota) {
        Ok(()) => Ok(()),
        Err(Errno::ESRCH) => Err("project quotas are not turned on (mount option prjquota)".into()),
        Err(errno @ (Errno::ENOSYS | Errno::EOPNOTSUPP | Errno::ENOTTY | Errno::EINVAL)) => Err(
            format!("the filesystem does not support project quotas ({errno})"),
        ),
        Err(errno) => Err(format!("the project quota check failed: {errno}")),
    }
}

/// Makes `dir` its own project limited to `bytes` (rounded up to whole KiB). Idempotent.
pub fn limit(dir: &Path, bytes: u64) -> Result<u32, NodeError> {
    let fail = |op: &'static str| {
        move |errno: Errno| NodeError::Mount {
            op,
            target: dir.to_owned(),
            errno,
        }
    };
    let file = File::open(dir).map_err(super::io_error("open", dir))?;
    let inode = file
        .metadata()
        .map_err(super::io_error("inspect", dir))?
        .ino();
    let project = u32::try_from(inode).map_err(|_| NodeError::Unsupported {
        what: format!(
            "a project quota on {}: its inode number {inode} does not fit a project id",
            dir.display()
        ),
    })?;
    let mut attr = FsXattr::default();
    // SAFETY: the ioctls read and write one `struct fsxattr` at a valid pointer.
    unsafe { fs_get_xattr(file.as_raw_fd(), &mut attr) }.map_err(fail("read the attributes of"))?;
    if attr.projid != project || attr.xflags & FS_XFLAG_PROJINHERIT == 0 {
        attr.projid = project;
        attr.xflags |= FS_XFLAG_PROJINHERIT;
        unsafe { fs_set_xattr(file.as_raw_fd(), &attr) }.map_err(fail("set the project of"))?;
    }
    let mut quota = empty_dqblk();
    let blocks = bytes.div_ceil(QUOTA_BLOCK);
    quota.dqb_bhardlimit = blocks;
    quota.dqb_bsoftlimit = blocks;
    quota.dqb_valid = QIF_BLIMITS;
    quotactl(&file, qcmd(Q_SETQUOTA, PRJQUOTA), project, &mut quota)
        .map_err(fail("set the project quota of"))?;
    Ok(project)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_interface_matches_its_headers() {
        // QCMD(Q_SETQUOTA, PRJQUOTA) from <sys/quota.h>; struct fsxattr from <linux/fs.h>.
        assert_eq!(qcmd(Q_SETQUOTA, PRJQUOTA) as u32, 0x8000_0802);
        assert_eq!(qcmd(Q_GETQUOTA, PRJQUOTA) as u32, 0x8000_0702);
        assert_eq!(std::mem::size_of::<FsXattr>(), 28);
        assert_eq!(std::mem::size_of::<nix::libc::dqblk>(), 72);
    }
}
