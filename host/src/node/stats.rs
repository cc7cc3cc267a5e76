//! Volume usage from statvfs(3).

use std::path::Path;

use nix::sys::statvfs::statvfs;

use super::NodeError;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub total_bytes: u64,
    pub available_bytes: u64,
    pub used_bytes: u64,
    pub total_inodes: u64,
    pub free_inodes: u64,
    pub used_inodes: u64,
}

pub fn usage(path: &Path) -> Result<Usage, NodeError> {
    let s = statvfs(path).map_err(|errno| match errno {
        nix::errno::Errno::ENOENT => NodeError::Missing {
            path: path.to_owned(),
        },
        _ => NodeError::Io {
            op: "statvfs",
            path: path.to_owned(),
            source: errno.into(),
        },
    })?;
    let block = s.fragment_size();
    let total_bytes = s.blocks() * block;
    let free_bytes = s.blocks_free() * block;
    Ok(Usage {
        total_bytes,
        available_bytes: s.blocks_available() * block,
        used_bytes: total_bytes.saturating_sub(free_bytes),
        total_inodes: s.files(),
        free_inodes: s.files_free(),
        used_inodes: s.files().saturating_sub(s.files_free()),
    })
}
