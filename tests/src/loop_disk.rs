//! Loop devices for tests and benchmarks: a real block device over a sparse file.

use std::path::Path;
use std::process::Command;

/// A loop device over a sparse file, with a by-id link, detached when dropped.
pub struct LoopDisk {
    pub device: String,
    pub file: tempfile::NamedTempFile,
}

/// Attaches `file` to a free loop device; returns the device (the caller detaches it).
pub fn attach(file: &Path) -> String {
    let out = Command::new("losetup")
        .args(["-f", "--show"])
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "losetup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

impl LoopDisk {
    pub fn new(by_id: &Path, name: &str, mib: u64) -> Self {
        let file = tempfile::NamedTempFile::new().unwrap();
        file.as_file().set_len(mib << 20).unwrap();
        let device = attach(file.path());
        std::fs::create_dir_all(by_id).unwrap();
        std::os::unix::fs::symlink(&device, by_id.join(name)).unwrap();
        Self { device, file }
    }

    /// Grows the backing file and tells the loop driver (what a storage system's resize does).
    pub fn grow(&self, mib: u64) {
        self.file.as_file().set_len(mib << 20).unwrap();
        let status = Command::new("losetup")
            .args(["-c", &self.device])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn blkid(&self, tag: &str) -> String {
        let out = Command::new("blkid")
            .args(["-p", "-s", tag, "-o", "value", &self.device])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}
