//! A test NVMe/TCP fabric for the host's one NVMe seam ([`modcsi::node::nvme::Fabric`]). It
//! stands where the kernel's `/dev/nvme-fabrics` does: a connect string for an exported
//! subsystem makes a controller appear in a fixture sysfs tree, as the kernel's does, with the
//! subsystem's namespaces as native-multipath path devices (`nvme<S>c<K>n<N>`) folded onto a head
//! (`nvme<S>n<N>`) whose device node is a real loop device. Everything after the connect (finding
//! the namespace, formatting, mounting) then runs for real.
//!
//! Its limits: it speaks no NVMe/TCP on the wire (no target, no keep-alive, no reconnect), the
//! loop device's node keeps its own name (`/dev/loopN`, which the head's `uevent` names), and a
//! connect string is checked for its fields, not parsed by the kernel's rules.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use modcsi::node::nvme::Fabric;

#[derive(Debug, Default)]
struct State {
    /// NQN → (namespace id → loop device).
    exported: BTreeMap<String, BTreeMap<u32, PathBuf>>,
    /// Everything the host wrote: connect strings and `delete <controller>`.
    written: Vec<String>,
    next_controller: u32,
}

#[derive(Debug)]
pub struct TestFabric {
    sysfs: tempfile::TempDir,
    state: Mutex<State>,
}

impl Default for TestFabric {
    fn default() -> Self {
        Self {
            sysfs: tempfile::tempdir().expect("fixture sysfs"),
            state: Default::default(),
        }
    }
}

impl TestFabric {
    /// The fixture sysfs root the host must look in.
    pub fn sysfs(&self) -> &Path {
        self.sysfs.path()
    }

    /// Serves `device` as namespace `nsid` of subsystem `nqn`.
    pub fn export(&self, nqn: &str, nsid: u32, device: &str) {
        let mut state = self.state.lock().unwrap();
        state
            .exported
            .entry(nqn.to_owned())
            .or_default()
            .insert(nsid, PathBuf::from(device));
        // Already connected: the namespace shows up (a rescan).
        let index = Self::subsystem_index(&state, nqn);
        if self.controllers_of(nqn).next().is_some() {
            self.head(index, nsid, Path::new(device));
        }
    }

    /// What the host wrote to the fabric, in order.
    pub fn written(&self) -> Vec<String> {
        self.state.lock().unwrap().written.clone()
    }

    fn subsystem_index(state: &State, nqn: &str) -> usize {
        state.exported.keys().position(|k| k == nqn).unwrap_or(0)
    }

    fn controllers_of<'a>(&'a self, nqn: &'a str) -> impl Iterator<Item = PathBuf> + 'a {
        std::fs::read_dir(self.sysfs().join("class/nvme"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(move |dir| {
                std::fs::read_to_string(dir.join("subsysnqn")).is_ok_and(|s| s.trim() == nqn)
            })
    }

    /// The head block device of a namespace: its `uevent` names the loop device's node.
    fn head(&self, subsystem: usize, nsid: u32, device: &Path) {
        let name = device.file_name().unwrap().to_string_lossy();
        let dev = std::fs::read_to_string(Path::new("/sys/class/block").join(&*name).join("dev"))
            .expect("a loop device in sysfs");
        let dir = self
            .sysfs()
            .join(format!("class/block/nvme{subsystem}n{nsid}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("uevent"),
            format!("DEVNAME={name}\nDEVTYPE=disk\n"),
        )
        .unwrap();
        std::fs::write(dir.join("dev"), dev).unwrap();
        std::fs::write(dir.join("nsid"), format!("{nsid}\n")).unwrap();
    }
}

fn invalid(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, message)
}

impl Fabric for TestFabric {
    fn connect(&self, options: &str) -> std::io::Result<String> {
        let mut state = self.state.lock().unwrap();
        state.written.push(options.to_owned());
        let mut fields = BTreeMap::new();
        for kv in options.split(',') {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| invalid(format!("malformed option {kv:?}")))?;
            if fields.insert(k, v).is_some() {
                return Err(invalid(format!("option {k} given twice")));
            }
        }
        let field = |k: &str| {
            fields
                .get(k)
                .copied()
                .ok_or_else(|| invalid(format!("no {k}")))
        };
        if field("transport")? != "tcp" {
            return Err(invalid("transport is not tcp".into()));
        }
        let (nqn, traddr, trsvcid) = (field("nqn")?, field("traddr")?, field("trsvcid")?);
        let Some(namespaces) = state.exported.get(nqn).cloned() else {
            return Err(std::io::Error::from_raw_os_error(nix::libc::ECONNREFUSED));
        };
        state.next_controller += 1;
        let controller = state.next_controller;
        let subsystem = Self::subsystem_index(&state, nqn);
        let dir = self.sysfs().join(format!("class/nvme/nvme{controller}"));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("subsysnqn"), format!("{nqn}\n"))?;
        std::fs::write(dir.join("transport"), "tcp\n")?;
        std::fs::write(
            dir.join("address"),
            format!("traddr={traddr},trsvcid={trsvcid}\n"),
        )?;
        std::fs::write(dir.join("state"), "live\n")?;
        for (nsid, device) in &namespaces {
            std::fs::create_dir_all(dir.join(format!("nvme{subsystem}c{controller}n{nsid}")))?;
            self.head(subsystem, *nsid, device);
        }
        Ok(format!("instance={controller},cntlid={controller}\n"))
    }

    fn rescan_controller(&self, controller: &str) -> std::io::Result<()> {
        let mut state = self.state.lock().unwrap();
        state.written.push(format!("rescan {controller}"));
        Ok(())
    }

    fn delete_controller(&self, controller: &str) -> std::io::Result<()> {
        let mut state = self.state.lock().unwrap();
        state.written.push(format!("delete {controller}"));
        let dir = self.sysfs().join("class/nvme").join(controller);
        let nqn = std::fs::read_to_string(dir.join("subsysnqn"))?
            .trim()
            .to_owned();
        std::fs::remove_dir_all(&dir)?;
        // The last controller gone: the namespaces' heads go with it.
        if self.controllers_of(&nqn).next().is_none() {
            let subsystem = Self::subsystem_index(&state, &nqn);
            for nsid in state.exported.get(&nqn).into_iter().flat_map(|n| n.keys()) {
                let head = format!("class/block/nvme{subsystem}n{nsid}");
                let _ = std::fs::remove_dir_all(self.sysfs().join(head));
            }
        }
        Ok(())
    }
}
