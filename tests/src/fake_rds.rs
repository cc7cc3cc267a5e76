//! The RDS backend's test rig: a fake RouterOS (`fake-routeros`, the forced command of a real
//! sshd) with its state directory, a host running the RDS backend configured for it, and the
//! test NVMe fabric on which the router's disk files appear as loop devices under their NQNs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use modcsi::node::device::DeviceDirs;
use modcsi::node::nvme::Nvme;

use crate::fabric::TestFabric;
use crate::sshd::Sshd;
use crate::{RDS, TestHost};

pub struct FakeRds {
    /// Serves the router while the rig lives.
    _sshd: Sshd,
    pub state: tempfile::TempDir,
    pub fabric: Arc<TestFabric>,
    pub host: TestHost,
    loops: Vec<String>,
}

impl FakeRds {
    /// Starts the router (`fake` is the fake-routeros binary) and a host for it.
    pub async fn start(fake: &Path) -> Self {
        Self::start_with(fake, Duration::from_secs(10)).await
    }

    /// Like [`FakeRds::start`], with the host's bound on one backend call.
    pub async fn start_with(fake: &Path, call_timeout: Duration) -> Self {
        let state = tempfile::tempdir().unwrap();
        let forced = format!("{} --state {}", fake.display(), state.path().display());
        let sshd = Sshd::start(Some(&forced));
        let config = state.path().join("backend.toml");
        std::fs::write(
            &config,
            format!(
                "[rds]\nnvme-address = \"192.0.2.10\"\n\n{}",
                sshd.target_config(
                    "rds",
                    &format!("known-hosts = \"{}\"", sshd.known_hosts().display())
                )
            ),
        )
        .unwrap();
        let fabric = Arc::new(TestFabric::default());
        let f = fabric.clone();
        let host = TestHost::start_with(RDS, move |c| {
            c.backend_config = Some(config);
            c.call_timeout = call_timeout;
            c.devices = DeviceDirs {
                by_id: PathBuf::from("/nonexistent"),
                sysfs: f.sysfs().to_owned(),
                wait: Duration::from_secs(2),
                nvme: Nvme {
                    fabric: f,
                    managed_prefix: Some("nqn.2000-02.com.mikrotik:pvc-".into()),
                    host_nqn: None,
                },
                allowed_disks: Default::default(),
            };
        })
        .await;
        Self {
            _sshd: sshd,
            state,
            fabric,
            host,
            loops: vec![],
        }
    }

    /// The router's file for `slot`.
    pub fn file(&self, slot: &str) -> PathBuf {
        self.state
            .path()
            .join("files/storage-pool/metal-csi")
            .join(format!("{slot}.img"))
    }

    /// Serves the router's file of `slot` on the test fabric under its NQN (what the router's
    /// NVMe/TCP export does), as a loop device.
    pub fn export(&mut self, slot: &str) -> String {
        let device = crate::loop_disk::attach(&self.file(slot));
        self.fabric
            .export(&format!("nqn.2000-02.com.mikrotik:{slot}"), 1, &device);
        self.loops.push(device.clone());
        device
    }

    pub fn commands(&self) -> String {
        std::fs::read_to_string(self.state.path().join("commands.log")).unwrap_or_default()
    }

    pub fn fault(&self, faults: &str) {
        std::fs::write(self.state.path().join("faults"), faults).unwrap();
    }
}

impl Drop for FakeRds {
    fn drop(&mut self) {
        for device in &self.loops {
            let _ = Command::new("losetup").args(["-d", device]).status();
        }
    }
}
