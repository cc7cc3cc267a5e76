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

    /// A disk with an MBR partition table holding one partition, attached with its partitions
    /// scanned (the kernel shows `<device>p1`).
    pub fn partitioned(by_id: &Path, name: &str, mib: u64) -> Self {
        use std::io::{Seek, SeekFrom, Write};
        let file = tempfile::NamedTempFile::new().unwrap();
        file.as_file().set_len(mib << 20).unwrap();
        let (start, sectors) = (2048u32, ((mib << 20) / 512) as u32 - 2048);
        let mut entry = [0u8; 16];
        entry[4] = 0x83; // Linux
        entry[8..12].copy_from_slice(&start.to_le_bytes());
        entry[12..16].copy_from_slice(&sectors.to_le_bytes());
        let mut f = file.as_file();
        f.seek(SeekFrom::Start(446)).unwrap();
        f.write_all(&entry).unwrap();
        f.seek(SeekFrom::Start(510)).unwrap();
        f.write_all(&[0x55, 0xAA]).unwrap();
        let out = Command::new("losetup")
            .args(["-f", "--show", "-P"])
            .arg(file.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "losetup -P");
        let device = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        // Kernels without a partition-table parser (CONFIG_MSDOS_PARTITION unset) learn of the
        // partition from partx (BLKPG); where the kernel already added it, partx finds it there.
        let _ = Command::new("partx").args(["-a", &device]).output();
        let kernel_name = Path::new(&device)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let partition = Path::new("/sys/class/block")
            .join(&kernel_name)
            .join(format!("{kernel_name}p1/partition"));
        assert!(partition.exists(), "{} has no partition", device);
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

    /// Takes the disk's capacity away: what a detached or disconnected disk looks like to a
    /// node that still has it mounted.
    pub fn vanish(&self) {
        self.grow(0);
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
