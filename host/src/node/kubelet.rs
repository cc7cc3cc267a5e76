//! What kubelet published of a driver on this node, as kubelet's own directory shows it: each
//! pod's CSI volume directory (`<kubelet-root>/pods/<pod>/volumes/kubernetes.io~csi/<pv>/`) holds
//! the mount point `mount` and kubelet's `vol_data.json` (the driver, the volume handle, the PV's
//! name). Read only, links never followed; what `modcsi audit --kubelet-root` measures.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::mountinfo::MountTable;
use super::stats::{Usage, usage};
use super::{NodeError, io_error};

/// A filesystem volume published to a pod here, with what its filesystem holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub volume_id: String,
    /// The PersistentVolume's name (kubelet's spec name).
    pub pv: String,
    /// The pod's mount point.
    pub path: PathBuf,
    pub usage: Usage,
}

/// The part of kubelet's `vol_data.json` read here.
#[derive(Deserialize)]
struct VolData {
    #[serde(rename = "driverName")]
    driver: String,
    #[serde(rename = "volumeHandle")]
    volume_id: String,
    #[serde(rename = "specVolID")]
    pv: String,
}

/// The directories in `dir` (none when it does not exist), links left out.
fn subdirectories(dir: &Path) -> Result<Vec<PathBuf>, NodeError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(io_error("read", dir)(e)),
    };
    let mut out = vec![];
    for entry in entries {
        let path = entry.map_err(io_error("read", dir))?.path();
        if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// Every volume of `driver` mounted into a pod under `kubelet_root`, with its filesystem's
/// usage. A directory whose `vol_data.json` does not read, whose mount point holds no mount
/// (kubelet between two steps) or cannot be measured (a stale mount; the node's own checks
/// report those), is left out: one bad mount does not hide the others.
pub fn published(kubelet_root: &Path, driver: &str) -> Result<Vec<Published>, NodeError> {
    let mounts = MountTable::read()?;
    let mut out = vec![];
    for pod in subdirectories(&kubelet_root.join("pods"))? {
        for volume in subdirectories(&pod.join("volumes/kubernetes.io~csi"))? {
            let Some(data) = fs::read(volume.join("vol_data.json"))
                .ok()
                .and_then(|bytes| serde_json::from_slice::<VolData>(&bytes).ok())
            else {
                continue;
            };
            let path = volume.join("mount");
            if data.driver != driver || mounts.at(&path).is_none() {
                continue;
            }
            let Ok(usage) = usage(&path) else {
                continue;
            };
            out.push(Published {
                volume_id: data.volume_id,
                pv: data.pv,
                usage,
                path,
            });
        }
    }
    Ok(out)
}
