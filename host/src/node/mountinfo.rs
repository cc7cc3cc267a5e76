//! Parser for /proc/self/mountinfo and the questions the node asks of it: what is mounted at a
//! path, and where a directory is bind-mounted.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub id: u32,
    pub parent: u32,
    /// `major:minor` of the filesystem.
    pub device: String,
    /// The path inside the filesystem that is mounted (a subdirectory for bind mounts).
    pub root: PathBuf,
    pub mount_point: PathBuf,
    /// Per-mount options, e.g. `ro`, `nosuid`.
    pub options: Vec<String>,
    pub fs_type: String,
    pub source: String,
}

impl MountEntry {
    pub fn is_read_only(&self) -> bool {
        self.options.iter().any(|o| o == "ro")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MountTableError {
    #[error("reading /proc/self/mountinfo: {0}")]
    Read(#[from] std::io::Error),
    #[error("mountinfo line {line}: {reason}: {text:?}")]
    Parse {
        line: usize,
        reason: &'static str,
        text: String,
    },
}

#[derive(Debug, Clone)]
pub struct MountTable {
    entries: Vec<MountEntry>,
}

impl MountTable {
    /// Reads this process's mount table, into room for a typical table at once: the file has
    /// no size to go by, and growing a buffer from 32 bytes took ten reads, twice the time of
    /// one (the kernel prints the table as it is read).
    pub fn read() -> Result<Self, MountTableError> {
        use std::io::Read;
        let mut text = String::with_capacity(16 * 1024);
        std::fs::File::open("/proc/self/mountinfo")?.read_to_string(&mut text)?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self, MountTableError> {
        let entries = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                parse_line(l).map_err(|reason| MountTableError::Parse {
                    line: i + 1,
                    reason,
                    text: l.to_owned(),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { entries })
    }

    pub fn entries(&self) -> &[MountEntry] {
        &self.entries
    }

    /// The visible mount at exactly `path` (the last one mounted there), if any.
    pub fn at(&self, path: &Path) -> Option<&MountEntry> {
        self.entries.iter().rev().find(|e| e.mount_point == path)
    }

    /// The visible mount that holds `path`: the one with the longest mount point above it.
    /// `path` must be canonical.
    pub fn covering(&self, path: &Path) -> Option<&MountEntry> {
        self.entries
            .iter()
            .rev()
            .filter(|e| path.starts_with(&e.mount_point))
            .max_by_key(|e| e.mount_point.components().count())
    }

    /// The filesystem (device) and the path within it that `path` refers to, using the mount
    /// with the longest mount point above it. `path` must be canonical.
    pub fn origin_of(&self, path: &Path) -> Option<(String, PathBuf)> {
        let covering = self.covering(path)?;
        let rest = path.strip_prefix(&covering.mount_point).ok()?;
        Some((covering.device.clone(), covering.root.join(rest)))
    }

    /// True when the mount at `target` shows the directory `source` (a bind mount of it).
    pub fn is_bind_of(&self, target: &MountEntry, source: &Path) -> bool {
        self.origin_of(source)
            .is_some_and(|(device, root)| target.device == device && target.root == root)
    }

    /// Every mount point that shows `source` or something below it.
    pub fn binds_of(&self, source: &Path) -> Vec<PathBuf> {
        let Some((device, root)) = self.origin_of(source) else {
            return vec![];
        };
        self.entries
            .iter()
            .filter(|e| e.device == device && e.root.starts_with(&root))
            .map(|e| e.mount_point.clone())
            .collect()
    }
}

fn parse_line(line: &str) -> Result<MountEntry, &'static str> {
    let (head, tail) = line.split_once(" - ").ok_or("no ' - ' separator")?;
    let mut fields = head.split(' ');
    let mut next = |what| fields.next().ok_or(what);
    let id = next("no mount id")?.parse().map_err(|_| "bad mount id")?;
    let parent = next("no parent id")?.parse().map_err(|_| "bad parent id")?;
    let device = next("no device")?.to_owned();
    if !device.contains(':') {
        return Err("device is not major:minor");
    }
    let root = unescape(next("no root")?);
    let mount_point = unescape(next("no mount point")?);
    let options = next("no mount options")?
        .split(',')
        .map(str::to_owned)
        .collect();
    let mut tail = tail.split(' ');
    let fs_type = tail.next().ok_or("no filesystem type")?.to_owned();
    let source = unescape(tail.next().ok_or("no mount source")?)
        .to_string_lossy()
        .into_owned();
    Ok(MountEntry {
        id,
        parent,
        device,
        root,
        mount_point,
        options,
        fs_type,
        source,
    })
}

/// Undoes the kernel's octal escapes (`\040` space, `\011` tab, `\012` newline, `\134` `\`).
fn unescape(field: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|d| {
            (b'0'..=b'3').contains(&d[0]) && d[1..].iter().all(|b| (b'0'..=b'7').contains(b))
        });
        if let (b'\\', Some(d)) = (bytes[i], octal) {
            out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node with a root filesystem, a separate /var, kubelet pod bind mounts (one read-only)
    /// and a path with a space.
    const FIXTURE: &str = "\
22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
25 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
30 22 254:2 / /var rw,relatime shared:2 - xfs /dev/vdb rw,attr2
40 30 254:2 /lib/modcsi/local/nlc-1 /var/lib/kubelet/pods/p1/volumes/v rw,relatime shared:2 - xfs /dev/vdb rw
41 30 254:2 /lib/modcsi/local/nlc-1 /var/lib/kubelet/pods/p2/volumes/v ro,relatime shared:2 - xfs /dev/vdb rw
42 30 254:2 /lib/modcsi/local/nlc-2 /var/lib/kubelet/pods/p3/volumes/v rw,relatime shared:2 - xfs /dev/vdb rw
43 22 254:1 /srv/a\\040b /mnt/with\\040space rw,relatime shared:1 - ext4 /dev/vda1 rw
";

    #[test]
    fn parses_fields_and_escapes() {
        let table = MountTable::parse(FIXTURE).unwrap();
        assert_eq!(table.entries().len(), 7);
        let e = table.at(Path::new("/mnt/with space")).unwrap();
        assert_eq!(e.root, Path::new("/srv/a b"));
        assert_eq!((e.id, e.parent, e.device.as_str()), (43, 22, "254:1"));
        assert_eq!(
            (e.fs_type.as_str(), e.source.as_str()),
            ("ext4", "/dev/vda1")
        );
        assert!(
            table
                .at(Path::new("/var/lib/kubelet/pods/p2/volumes/v"))
                .unwrap()
                .is_read_only()
        );
        assert!(
            !table
                .at(Path::new("/var/lib/kubelet/pods/p1/volumes/v"))
                .unwrap()
                .is_read_only()
        );
        assert!(table.at(Path::new("/var/lib")).is_none());
    }

    #[test]
    fn finds_binds_of_a_directory() {
        let table = MountTable::parse(FIXTURE).unwrap();
        let source = Path::new("/var/lib/modcsi/local/nlc-1");
        assert_eq!(
            table.origin_of(source),
            Some(("254:2".to_owned(), PathBuf::from("/lib/modcsi/local/nlc-1")))
        );
        assert_eq!(
            table.binds_of(source),
            vec![
                PathBuf::from("/var/lib/kubelet/pods/p1/volumes/v"),
                PathBuf::from("/var/lib/kubelet/pods/p2/volumes/v"),
            ]
        );
        let p3 = table
            .at(Path::new("/var/lib/kubelet/pods/p3/volumes/v"))
            .unwrap();
        assert!(!table.is_bind_of(p3, source));
        assert!(table.is_bind_of(p3, Path::new("/var/lib/modcsi/local/nlc-2")));
        assert!(
            table
                .binds_of(Path::new("/var/lib/modcsi/local/nlc-3"))
                .is_empty()
        );
    }

    #[test]
    fn rejects_malformed_lines() {
        for bad in [
            "22 1 254:1 / / rw",
            "x 1 254:1 / / rw - ext4 /dev/vda1 rw",
            "22 1 nodev / / rw - ext4 a rw",
        ] {
            assert!(
                matches!(
                    MountTable::parse(bad),
                    Err(MountTableError::Parse { line: 1, .. })
                ),
                "{bad}"
            );
        }
    }
}
