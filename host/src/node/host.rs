//! The node facade: everything a node does to make a volume appear at a path and go away
//! again, as async operations over the kubelet root, the node-local directories, the devices,
//! the bounded blocking pool and this node's record of what it staged. The layers above give it
//! validated ids and paths and a decoded attachment; it alone looks at the filesystem, and it
//! alone answers "which device is this volume on" (the staged record, else the attachment).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::claim;
use super::confined::{ConfinedError, KubeletRoot};
use super::device::DeviceDirs;
use super::local_dir::LocalDirs;
use super::mountinfo::MountTable;
use super::pool::NodeOps;
use super::publish::{self, Shows};
use super::{NodeError, stage, stats};
use crate::state::{StateStore, StoreError};
use crate::volume::attachment;
use crate::volume::staged::{self, Staged};
use crate::volume::types::{Attachment, MountVolume};

/// What a volume is published from.
pub enum Source {
    /// Its node-local directory, held to its size when the context carries one.
    LocalDir(Option<u64>),
    /// The filesystem staged at this path.
    Staged(PathBuf),
    /// A block volume: its device node.
    Device(Attachment),
}

/// What a published volume looks like from its path.
#[derive(Debug, Default)]
pub struct VolumeStats {
    /// None when nothing is mounted at the path to measure.
    pub usage: Option<stats::Usage>,
    /// A block volume: bytes only, no inodes.
    pub block: bool,
    /// Why the volume is abnormal, if it is.
    pub trouble: Option<String>,
}

pub struct Host {
    root: Arc<KubeletRoot>,
    dirs: LocalDirs,
    devices: DeviceDirs,
    ops: NodeOps,
    /// This node's own state: what it staged.
    state: Arc<dyn StateStore>,
}

fn record_err(source: StoreError) -> NodeError {
    NodeError::Record {
        what: "the staged volume",
        source,
    }
}

impl Host {
    pub fn new(
        root: KubeletRoot,
        dirs: LocalDirs,
        devices: DeviceDirs,
        max_operations: usize,
        state: Arc<dyn StateStore>,
    ) -> Self {
        Self {
            root: Arc::new(root),
            dirs,
            devices,
            ops: NodeOps::new(max_operations),
            state,
        }
    }

    /// The node-local directories and the pool, for the cleanup loop.
    pub fn local_dirs(&self) -> (LocalDirs, NodeOps) {
        (self.dirs.clone(), self.ops.clone())
    }

    /// The node's record of staging the volume, if it staged it.
    fn staged(&self, id: &str) -> Result<Option<Staged>, NodeError> {
        staged::load(self.state.as_ref(), id).map_err(record_err)
    }

    /// Makes the volume appear at `target`, bound from `source`; returns whether it mounted
    /// (false: it was already there).
    pub async fn publish(
        &self,
        id: &str,
        target: &Path,
        source: Source,
        read_only: bool,
    ) -> Result<bool, NodeError> {
        let (root, dirs, devices) = (self.root.clone(), self.dirs.clone(), self.devices.clone());
        let (volume, target) = (id.to_owned(), target.to_owned());
        // A block volume's device: the one it was staged with, else the attachment's now.
        let staged_device = self.staged(id)?.filter(Staged::is_block).map(|r| r.source);
        let key = claim_key(id, &target);
        self.ops
            .run_claimed("publish", &key, move || {
                publish::check_target(&root, &target)?;
                match source {
                    Source::LocalDir(size) => {
                        let dir = dirs.ensure(&volume, size)?;
                        publish::bind_dir(&root, &dir, &target, read_only)
                    }
                    Source::Staged(staging) => {
                        publish::bind_staged(&root, &staging, &target, read_only)
                    }
                    Source::Device(attachment) => {
                        let device = match staged_device {
                            Some(device) => device,
                            None => {
                                let device = devices.resolve(&attachment)?;
                                claim::claim(&device, &MountTable::read()?)?;
                                device
                            }
                        };
                        publish::bind_device(&root, &device, &target, read_only)
                    }
                }
            })
            .await
    }

    /// Takes the volume away from `target`; absent or unmounted is success. Returns whether
    /// something was there.
    pub async fn unpublish(&self, id: &str, target: &Path) -> Result<bool, NodeError> {
        let (root, dirs, record) = (self.root.clone(), self.dirs.clone(), self.staged(id)?);
        let (volume, target) = (id.to_owned(), target.to_owned());
        let key = claim_key(id, &target);
        let found = self
            .ops
            .run_claimed("unpublish", &key, move || {
                let source = source_of(&dirs, record.as_ref(), &volume);
                publish::unpublish(&root, &source, &target)
            })
            .await?;
        Ok(found.existed)
    }

    /// Attaches the volume's device, formats it when blank and mounts it at `staging` (a
    /// filesystem), or only finds it (a block volume, `mount` None), and records what it
    /// staged. Returns whether it mounted a filesystem.
    pub async fn stage(
        &self,
        id: &str,
        staging: &Path,
        attachment: Attachment,
        mount: Option<MountVolume>,
        mkfs_args: Vec<String>,
    ) -> Result<bool, NodeError> {
        let (root, devices, state) = (self.root.clone(), self.devices.clone(), self.state.clone());
        let (volume, staging) = (id.to_owned(), staging.to_owned());
        let record = self.staged(id)?;
        let first = record.is_none();
        let staged_device = record.filter(Staged::is_block).map(|r| r.source);
        let key = claim_key(id, &staging);
        self.ops
            .run_claimed("stage", &key, move || {
                let device = devices.attach(&attachment)?;
                let staged =
                    stage_device(&root, &staging, &device, mount, &mkfs_args, staged_device)
                        .and_then(|(mounted, source)| {
                            // Unpublish, stats and unstage find the staged filesystem (or device)
                            // and its attachment by volume id.
                            staged::save(
                                state.as_ref(),
                                &volume,
                                &Staged::new(source, &attachment),
                            )
                            .map_err(record_err)?;
                            Ok(mounted)
                        });
                // A first stage that failed after connecting must not leave the subsystem
                // connected: kubelet does not unstage what never staged.
                if staged.is_err() && first {
                    release(&devices, state.as_ref(), &volume, &attachment);
                }
                staged
            })
            .await
    }

    /// Unmounts the staging path, disconnects an NVMe subsystem no other staged volume uses,
    /// and forgets the record (last, so a failed disconnect is retried by the next unstage).
    pub async fn unstage(&self, id: &str, staging: &Path) -> Result<(), NodeError> {
        let (root, devices, state) = (self.root.clone(), self.devices.clone(), self.state.clone());
        let (volume, staging, record) = (id.to_owned(), staging.to_owned(), self.staged(id)?);
        let key = claim_key(id, &staging);
        self.ops
            .run_claimed("unstage", &key, move || {
                stage::unstage(&root, &staging)?;
                if let Some(attachment) = record.as_ref().and_then(Staged::attachment)
                    && let Attachment::NvmeTcp(target) = &attachment
                {
                    let users = staged::nvme_users(state.as_ref(), &target.nqn, &volume)
                        .map_err(record_err)?;
                    if users.is_empty() {
                        devices.detach(&attachment)?;
                    } else {
                        tracing::info!(volume = %volume, nqn = %target.nqn, ?users, "NVMe subsystem still in use; staying connected");
                    }
                }
                staged::remove(state.as_ref(), &volume).map_err(record_err)
            })
            .await
    }

    /// Usage and condition of the volume published at `path`, or None when it is not
    /// published there. Gives up after `timeout` (a stale mount), and refuses at once while a
    /// previous stats call on the volume is still blocked.
    pub async fn stats(
        &self,
        id: &str,
        path: &Path,
        timeout: Duration,
    ) -> Result<Option<VolumeStats>, NodeError> {
        let (root, devices, dirs) = (self.root.clone(), self.devices.clone(), self.dirs.clone());
        let record = self.staged(id)?;
        let (volume, path) = (id.to_owned(), path.to_owned());
        let block = record.as_ref().is_some_and(Staged::is_block);
        self.ops
            .run_within("volume stats", id, timeout, move || {
                let source = source_of(&dirs, record.as_ref(), &volume);
                if !source.exists() {
                    return Ok(None);
                }
                let found = |usage, trouble| {
                    Ok(Some(VolumeStats {
                        usage,
                        block,
                        trouble,
                    }))
                };
                match publish::shows(&root, &source, &path) {
                    // A block volume: its size only.
                    Ok(Shows::Source) if block => {
                        let total_bytes = stage::device_size(&source)?;
                        found(
                            Some(stats::Usage {
                                total_bytes,
                                ..Default::default()
                            }),
                            None,
                        )
                    }
                    // The volume is here and its mount at the path is not: no usage to give,
                    // but the CO should hear that the pod's volume is gone from under it.
                    Ok(Shows::Unmounted) => found(
                        None,
                        Some(format!(
                            "nothing is mounted at {}: the volume's mount is missing",
                            path.display()
                        )),
                    ),
                    Ok(Shows::Source) => {
                        let usage = stats::usage(&path)?;
                        let trouble = diagnose(&devices, record.as_ref(), &path);
                        found(Some(usage), trouble)
                    }
                    Ok(Shows::Absent | Shows::Other)
                    | Err(NodeError::Confined(
                        ConfinedError::Outside { .. }
                        | ConfinedError::Symlink { .. }
                        | ConfinedError::NoParent { .. },
                    )) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .await
    }

    /// Grows the filesystem mounted at `path` to its device, once the device (rescanned) has
    /// `required` bytes; returns its size.
    pub async fn expand(&self, id: &str, path: &Path, required: u64) -> Result<u64, NodeError> {
        let (root, key, path) = (self.root.clone(), claim_key(id, path), path.to_owned());
        let (devices, attachment) = (
            self.devices.clone(),
            self.staged(id)?.and_then(|r| r.attachment()),
        );
        self.ops
            .run_claimed("expand", &key, move || {
                if let Some(attachment) = &attachment {
                    devices.rescan(attachment)?;
                }
                stage::expand(&root, &path, required, devices.wait)
            })
            .await
    }

    /// Refuses while this node's directory of the volume is still published.
    pub async fn check_local_dir_unused(&self, id: &str) -> Result<(), NodeError> {
        let (dirs, volume) = (self.dirs.clone(), id.to_owned());
        self.ops.run(move || dirs.check_unused(&volume)).await
    }

    /// Removes this node's directory of the volume; returns whether there was one.
    pub async fn remove_local_dir(&self, id: &str) -> Result<bool, NodeError> {
        let (dirs, volume) = (self.dirs.clone(), id.to_owned());
        self.ops.run(move || dirs.remove(&volume)).await
    }
}

/// What one operation on a volume at a path claims in the pool while its thread runs.
fn claim_key(id: &str, path: &Path) -> String {
    format!("{id}@{}", path.display())
}

/// Formats when blank and mounts `device` at `staging` (a filesystem), or checks that a block
/// volume's device is free; returns whether it mounted and what the volume is published from.
fn stage_device(
    root: &KubeletRoot,
    staging: &Path,
    device: &Path,
    mount: Option<MountVolume>,
    mkfs_args: &[String],
    staged_device: Option<PathBuf>,
) -> Result<(bool, PathBuf), NodeError> {
    let Some(mount) = mount else {
        // A block volume is handed to pods as it is: it must be nobody else's. (A filesystem's
        // device is checked, and held while probed, by `stage`.) Staging again what this node
        // staged is idempotent.
        if staged_device.as_deref() != Some(device) {
            claim::claim(device, &MountTable::read()?)?;
        }
        return Ok((false, device.to_owned()));
    };
    let mounted = stage::stage(
        root,
        staging,
        device,
        &mount.fs_type,
        &mount.mount_flags,
        mkfs_args,
    )?;
    if !mount.volume_mount_group.is_empty() {
        stage::apply_mount_group(root, staging, &mount.volume_mount_group)?;
    }
    Ok((mounted, staging.to_owned()))
}

/// Disconnects what attaching the volume connected when no staged volume uses it.
fn release(devices: &DeviceDirs, state: &dyn StateStore, volume: &str, attachment: &Attachment) {
    let Attachment::NvmeTcp(target) = attachment else {
        return;
    };
    match staged::nvme_users(state, &target.nqn, volume) {
        Ok(users) if users.is_empty() => {
            if let Err(e) = devices.detach(attachment) {
                tracing::warn!(volume, nqn = %target.nqn, "cannot disconnect after a failed stage: {e}");
            }
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(volume, nqn = %target.nqn, "not disconnecting after a failed stage: {e}")
        }
    }
}

/// What a volume is published from on this node: its local directory, or what it was staged
/// from (the staging path, or a block volume's device).
fn source_of(dirs: &LocalDirs, record: Option<&Staged>, id: &str) -> PathBuf {
    if dirs.exists(id) {
        return dirs.path(id);
    }
    record.map_or_else(|| dirs.path(id), |r| r.source.clone())
}

/// Why a mounted volume is abnormal: the device behind the mount gone, or no longer the one
/// the volume's attachment resolves to (renumbered after a reconnect).
fn diagnose(devices: &DeviceDirs, record: Option<&Staged>, path: &Path) -> Option<String> {
    stage::device_trouble(path).or_else(|| {
        let attachment = record?.attachment()?;
        match devices.find(&attachment) {
            Ok(Some(now)) => stage::mounted_from_other(path, &now),
            Ok(None) => Some(format!(
                "the volume's {} device is no longer present",
                attachment::kind_name(&attachment)
            )),
            Err(e) => Some(format!("cannot find the volume's device: {e}")),
        }
    })
}
