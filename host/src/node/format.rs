//! Probing and formatting block devices. A device is formatted only when the probe says it
//! holds no signature at all; a failed or ambiguous probe refuses both formatting and mounting.

use std::path::Path;
use std::process::{Command, Stdio};

use super::NodeError;

/// Filesystems the node formats and mounts.
pub const FILESYSTEMS: [&str; 2] = ["ext4", "xfs"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// No signature of any kind.
    Blank,
    Filesystem(String),
    /// A signature that is not a filesystem (a partition table, a RAID member, ...).
    Other(String),
}

/// Runs a node tool on `subject` (a device or a mount path) with no input. Exit statuses in
/// `accepted` are the caller's to read; any other is a [`NodeError::Tool`] naming the device.
pub(crate) fn run_tool(
    tool: &'static str,
    args: &[&str],
    subject: &Path,
    device: &Path,
    accepted: &[i32],
) -> Result<std::process::Output, NodeError> {
    let output = Command::new(tool)
        .args(args)
        .arg(subject)
        .stdin(Stdio::null())
        .output()
        .map_err(super::io_error("run a tool on", subject))?;
    if output.status.code().is_some_and(|c| accepted.contains(&c)) {
        return Ok(output);
    }
    Err(NodeError::Tool {
        tool,
        device: device.to_owned(),
        status: output.status.to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    })
}

/// `blkid -p` (low-level probe, no cache): exit 2 means no signature.
pub fn probe(device: &Path) -> Result<Probe, NodeError> {
    let output = run_tool("blkid", &["-p", "-o", "export"], device, device, &[0, 2])?;
    Ok(match output.status.code() {
        Some(2) => Probe::Blank,
        _ => parse_probe(&String::from_utf8_lossy(&output.stdout)),
    })
}

fn parse_probe(export: &str) -> Probe {
    let get = |key: &str| {
        export
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(str::to_owned)
    };
    match (get("TYPE"), get("USAGE"), get("PTTYPE")) {
        (Some(t), Some(usage), _) if usage == "filesystem" => Probe::Filesystem(t),
        (Some(t), _, _) => Probe::Other(t),
        (None, _, Some(pt)) => Probe::Other(format!("{pt} partition table")),
        _ => Probe::Other("an unrecognised signature".into()),
    }
}

/// Makes a filesystem on a blank device; `extra` are mkfs options already checked against the
/// allow-list (crate::volume::mkfs).
pub fn format(device: &Path, fs_type: &str, extra: &[String]) -> Result<(), NodeError> {
    let tool = match fs_type {
        "ext4" => "mkfs.ext4",
        "xfs" => "mkfs.xfs",
        other => {
            return Err(NodeError::Unsupported {
                what: format!("filesystem {other:?}"),
            });
        }
    };
    let args: Vec<&str> = std::iter::once("-q")
        .chain(extra.iter().map(String::as_str))
        .collect();
    run_tool(tool, &args, device, device, &[0]).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_output() {
        assert_eq!(
            parse_probe("DEVNAME=/dev/loop0\nUUID=1\nTYPE=ext4\nUSAGE=filesystem\n"),
            Probe::Filesystem("ext4".into())
        );
        assert_eq!(
            parse_probe("DEVNAME=/dev/loop0\nPTUUID=x\nPTTYPE=gpt\n"),
            Probe::Other("gpt partition table".into())
        );
        assert_eq!(
            parse_probe("TYPE=linux_raid_member\nUSAGE=raid\n"),
            Probe::Other("linux_raid_member".into())
        );
        assert_eq!(
            parse_probe("DEVNAME=/dev/x\n"),
            Probe::Other("an unrecognised signature".into())
        );
    }
}
