//! Project quotas, which give a node-local directory the size its volume was created with. A
//! volume directory becomes its own project, set with the inherit flag so everything created
//! inside counts, and the project's hard block limit is the volume's size.
//!
//! Project ids come from a range of this host's own (`--project-ids`, by default
//! [`DEFAULT_PROJECT_IDS`], clear of the low ids of
//! /etc/projects and of kubelet's fsquota ids, which start at 1048577), never from inode
//! numbers (which outgrow 32 bits on large XFS filesystems with inode64). A volume's id is a
//! digest of its volume id within the range, probed onward past ids in use: an id whose project
//! holds blocks, inodes or limits, or one /etc/projects names. The assignment persists in the
//! directory's own attribute, so a directory keeps its id across restarts. With the project's limit in place, statfs(2) on the directory reports the
//! quota (ext4 and xfs do), so stats need nothing of their own.
//!
//! Needs a filesystem with project quotas on (ext4: `mkfs.ext4 -O project,quota` and mount
//! option `prjquota`; xfs: `prjquota`). [`supported`] says whether the state directory's has.

use std::fs::File;
use std::ops::RangeInclusive;
use std::os::fd::AsRawFd;
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

/// The project ids this host gives volume directories unless told otherwise.
pub const DEFAULT_PROJECT_IDS: RangeInclusive<u32> = 2_000_000_000..=2_099_999_999;
/// How many ids past a volume's first are tried before giving up.
const PROBES: u32 = 64;

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

/// The id volume `volume` gets: the first of its candidates (a digest of the id within `ids`,
/// then the ids after it) that `free` accepts.
fn pick(volume: &str, ids: &RangeInclusive<u32>, free: impl Fn(u32) -> bool) -> Option<u32> {
    // FNV-1a: stable across releases and machines, unlike std's hasher.
    let digest = volume.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let (start, span) = (*ids.start(), u64::from(ids.end() - ids.start()) + 1);
    let first = digest % span;
    (0..u64::from(PROBES).min(span))
        .map(|i| start + ((first + i) % span) as u32)
        .find(|&id| free(id))
}

/// Whether project `id` holds nothing and has no limits on the filesystem of `fd`.
fn unused(fd: &File, id: u32) -> bool {
    let mut quota = empty_dqblk();
    match quotactl(fd, qcmd(Q_GETQUOTA, PRJQUOTA), id, &mut quota) {
        Ok(()) => {
            quota.dqb_curspace == 0
                && quota.dqb_curinodes == 0
                && quota.dqb_bhardlimit == 0
                && quota.dqb_ihardlimit == 0
        }
        Err(Errno::ENOENT | Errno::ESRCH) => true,
        Err(_) => false,
    }
}

/// The project ids /etc/projects names (`id:path` lines), so an operator's projects are never
/// reused.
fn listed_projects() -> Vec<u32> {
    std::fs::read_to_string("/etc/projects")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(':').next()?.trim().parse().ok())
        .collect()
}

/// Makes `dir`, volume `volume`'s directory, its own project (an id from `ids`) limited to
/// `bytes` (rounded up to whole KiB). Idempotent.
pub fn limit(
    dir: &Path,
    volume: &str,
    bytes: u64,
    ids: &RangeInclusive<u32>,
) -> Result<u32, NodeError> {
    let fail = |op: &'static str| {
        move |errno: Errno| NodeError::Mount {
            op,
            target: dir.to_owned(),
            errno,
        }
    };
    let file = File::open(dir).map_err(super::io_error("open", dir))?;
    let mut attr = FsXattr::default();
    // SAFETY: the ioctls read and write one `struct fsxattr` at a valid pointer.
    unsafe { fs_get_xattr(file.as_raw_fd(), &mut attr) }.map_err(fail("read the attributes of"))?;
    // The directory's own attribute is the record of its id: kept once given.
    let project = if ids.contains(&attr.projid) {
        attr.projid
    } else {
        let listed = listed_projects();
        pick(volume, ids, |id| !listed.contains(&id) && unused(&file, id)).ok_or_else(|| {
            NodeError::Unsupported {
                what: format!(
                    "a project quota on {}: {PROBES} project ids in a row are in use",
                    dir.display()
                ),
            }
        })?
    };
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
    fn project_ids_are_stable_in_range_and_probe_past_ids_in_use() {
        let ids = DEFAULT_PROJECT_IDS;
        let first = pick("nlc-1", &ids, |_| true).unwrap();
        assert!(ids.contains(&first));
        assert_eq!(
            pick("nlc-1", &ids, |_| true),
            Some(first),
            "the same every time"
        );
        assert_ne!(pick("nlc-2", &ids, |_| true), Some(first));
        // In use: the next free one (wrapping inside the range).
        let next = pick("nlc-1", &ids, |id| id != first).unwrap();
        assert!(ids.contains(&next) && next != first);
        assert_eq!(
            pick("nlc-1", &ids, |_| false),
            None,
            "gives up after its probes"
        );
        // Large inode numbers no longer matter: ids never leave the range.
        for volume in [
            "a",
            "pvc-0a1b2c3d-0000-5000-8000-000000000001",
            &"x".repeat(128),
        ] {
            assert!(ids.contains(&pick(volume, &ids, |_| true).unwrap()));
        }
        // An operator's range, however small, is kept to (and wrapped inside).
        let small = 10..=12;
        for volume in ["a", "b", "c", "d"] {
            assert!(small.contains(&pick(volume, &small, |id| id != 11).unwrap()));
        }
        assert_eq!(pick("a", &(7..=7), |_| true), Some(7));
    }

    #[test]
    fn the_kernel_interface_matches_its_headers() {
        // QCMD(Q_SETQUOTA, PRJQUOTA) from <sys/quota.h>; struct fsxattr from <linux/fs.h>.
        assert_eq!(qcmd(Q_SETQUOTA, PRJQUOTA) as u32, 0x8000_0802);
        assert_eq!(qcmd(Q_GETQUOTA, PRJQUOTA) as u32, 0x8000_0702);
        assert_eq!(std::mem::size_of::<FsXattr>(), 28);
        assert_eq!(std::mem::size_of::<nix::libc::dqblk>(), 72);
    }
}
