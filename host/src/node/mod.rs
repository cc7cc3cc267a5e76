//! OS work on the node, and the only place that calls mount(2), umount(2), mkdir, statvfs or
//! madvise(2) (on the process's own code: [`code_pages`]).
//! [`Host`] is the facade the layers above use; the modules under it do one thing each. Pure
//! parsing (mountinfo) is kept apart from the syscalls so it can be tested on fixtures.

pub mod addresses;
pub mod claim;
pub mod code_pages;
pub mod confined;
pub mod device;
pub mod format;
mod host;
pub mod kubelet;
pub mod local_dir;
pub mod mount;
pub mod mountinfo;
pub mod nvme;
pub mod pool;
pub mod publish;
pub mod quota;
pub mod stage;
pub mod stats;

use std::path::PathBuf;

pub use host::{Host, Source, VolumeStats};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{op} {target}: {errno}")]
    Mount {
        op: &'static str,
        target: PathBuf,
        errno: nix::errno::Errno,
    },
    #[error("cannot read the mount table: {0}")]
    MountTable(#[from] mountinfo::MountTableError),
    #[error("{path} is still mounted at {}", targets.iter().map(|t| t.display().to_string()).collect::<Vec<_>>().join(", "))]
    InUse {
        path: PathBuf,
        targets: Vec<PathBuf>,
    },
    #[error("{target} already holds a different mount ({what})")]
    OtherMount { target: PathBuf, what: String },
    #[error("{path} does not exist")]
    Missing { path: PathBuf },
    #[error("{path} holds no staged volume (NodeStageVolume comes first)")]
    NotStaged { path: PathBuf },
    #[error("{target} holds a mount that is not this volume's ({what}); leaving it alone")]
    NotOurs { target: PathBuf, what: String },
    #[error("{target} is still in use; not detaching it lazily")]
    Busy { target: PathBuf },
    #[error(transparent)]
    Confined(#[from] confined::ConfinedError),
    #[error("{op} did not finish within {timeout:?}")]
    TimedOut {
        op: &'static str,
        timeout: std::time::Duration,
    },
    #[error("{op} for {key} is still running (hung on a stale mount?); not starting another")]
    StillRunning { op: &'static str, key: String },
    #[error("node operation failed to run: {0}")]
    Pool(String),
    #[error("cannot keep the node's record of {what}: {source}")]
    Record {
        what: &'static str,
        source: crate::state::StoreError,
    },
    #[error("no disk with {what} in {place} (waited {waited:?})")]
    NoDevice {
        what: String,
        place: PathBuf,
        waited: std::time::Duration,
    },
    #[error("{what} names several disks ({found}); name the disk by its by-id name")]
    Ambiguous { what: String, found: String },
    #[error(
        "{device} has {size} bytes, not the {required} asked for: the storage has not grown it (yet)"
    )]
    TooSmall {
        device: PathBuf,
        size: u64,
        required: u64,
    },
    #[error("{path} is not a block device under /dev")]
    NotABlockDevice { path: PathBuf },
    #[error("{device} is already mounted at {at}; refusing to mount it again")]
    DeviceInUse { device: PathBuf, at: PathBuf },
    #[error("{device} is not free ({why}); refusing to format, mount or publish it")]
    DeviceTaken { device: PathBuf, why: String },
    #[error(
        "disk {what} is not in this node's allow-list (--allow-disk-by-id, --allow-disk-serial); refusing it"
    )]
    DiskNotAllowed { what: String },
    #[error("{tool} on {device} failed ({status}): {stderr}")]
    Tool {
        tool: &'static str,
        device: PathBuf,
        status: String,
        stderr: String,
    },
    #[error("NVMe/TCP subsystem {nqn}: {why}")]
    Unmanaged { nqn: String, why: String },
    #[error(
        "NVMe/TCP subsystem {nqn}: this node cannot connect NVMe/TCP targets: /dev/nvme-fabrics is missing (load the nvme-tcp kernel module)"
    )]
    NoFabrics { nqn: String },
    #[error("NVMe/TCP subsystem {nqn}: no portal could be connected ({})", failures.join("; "))]
    Unreachable { nqn: String, failures: Vec<String> },
    #[error("unsupported: {what}")]
    Unsupported { what: String },
}

pub(crate) fn io_error(
    op: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(std::io::Error) -> NodeError {
    let path = path.to_owned();
    move |source| NodeError::Io { op, path, source }
}

/// A device node's number as `major:minor`, the form mountinfo and sysfs's `dev` use.
pub(crate) fn device_number(meta: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    let rdev = meta.rdev();
    format!(
        "{}:{}",
        nix::sys::stat::major(rdev),
        nix::sys::stat::minor(rdev)
    )
}
