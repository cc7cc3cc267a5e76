//! NVMe over TCP on the node. Connecting and disconnecting go through one seam, [`Fabric`]: the
//! kernel's `/dev/nvme-fabrics` (write an option string, read back the new controller) and a
//! controller's `delete_controller` attribute. The option string is built here from validated
//! fields only. The namespace is then found by its subsystem NQN in sysfs, never by a device
//! name. Only subsystems under the managed NQN prefix are ever connected or disconnected, so a
//! node's own NVMe-oF disks are out of reach.

use std::net::{IpAddr, ToSocketAddrs};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{NodeError, io_error};
use crate::volume::types::NvmeTarget;

/// The kernel's NVMe-over-Fabrics interface; tests put a fabric of their own here.
pub trait Fabric: Send + Sync + std::fmt::Debug {
    /// Writes a connect option string; returns the kernel's answer (`instance=N,cntlid=M`).
    fn connect(&self, options: &str) -> std::io::Result<String>;
    /// Deletes the controller named `controller` (`nvme3`).
    fn delete_controller(&self, controller: &str) -> std::io::Result<()>;
    /// Has the controller look at its namespaces again (a grown one shows its new size).
    fn rescan_controller(&self, controller: &str) -> std::io::Result<()>;
}

/// The real kernel: `/dev/nvme-fabrics` and `/sys/class/nvme/<controller>/delete_controller`.
#[derive(Debug)]
pub struct KernelFabric {
    pub sysfs: PathBuf,
}

impl Fabric for KernelFabric {
    fn connect(&self, options: &str) -> std::io::Result<String> {
        use std::io::{Read, Write};
        let mut dev = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/nvme-fabrics")?;
        dev.write_all(options.as_bytes())?;
        let mut answer = String::new();
        dev.read_to_string(&mut answer)?;
        Ok(answer)
    }

    fn delete_controller(&self, controller: &str) -> std::io::Result<()> {
        let path = self
            .sysfs
            .join("class/nvme")
            .join(controller)
            .join("delete_controller");
        std::fs::write(path, "1")
    }

    fn rescan_controller(&self, controller: &str) -> std::io::Result<()> {
        let path = self
            .sysfs
            .join("class/nvme")
            .join(controller)
            .join("rescan_controller");
        std::fs::write(path, "1")
    }
}

/// How this node attaches NVMe/TCP volumes.
#[derive(Debug, Clone)]
pub struct Nvme {
    pub fabric: Arc<dyn Fabric>,
    /// Subsystems whose NQN begins with this are the driver's to connect and disconnect. With
    /// none, nvme-tcp volumes are refused.
    pub managed_prefix: Option<String>,
    /// This node's host NQN (nvme-cli keeps it in `/etc/nvme/hostnqn`), sent on connect.
    pub host_nqn: Option<String>,
}

impl Nvme {
    pub fn kernel(sysfs: &Path) -> Self {
        Self {
            fabric: Arc::new(KernelFabric {
                sysfs: sysfs.to_owned(),
            }),
            managed_prefix: None,
            host_nqn: None,
        }
    }

    fn check_managed(&self, nqn: &str) -> Result<(), NodeError> {
        let why = match &self.managed_prefix {
            None => {
                "this node manages no NVMe subsystems (start the host with --managed-nqn-prefix)"
                    .to_owned()
            }
            Some(prefix) if !nqn.starts_with(prefix.as_str()) => {
                format!("outside the managed prefix {prefix:?}; leaving it alone")
            }
            Some(_) => return Ok(()),
        };
        Err(NodeError::Unmanaged {
            nqn: nqn.to_owned(),
            why,
        })
    }

    /// Connects every portal of `target` that has no controller yet. Succeeds when at least one
    /// controller for the subsystem exists afterwards; the failures of the others are logged.
    pub fn connect(&self, sysfs: &Path, target: &NvmeTarget) -> Result<(), NodeError> {
        self.check_managed(&target.nqn)?;
        let existing = controllers(sysfs, &target.nqn);
        let mut failures = vec![];
        let mut missing = false;
        for portal in &target.portals {
            let address = resolve(&portal.address);
            let connected = existing.iter().any(|c| {
                c.transport == "tcp"
                    && c.trsvcid == portal.port.to_string()
                    && c.traddr.parse::<IpAddr>().ok() == address.clone().ok()
            });
            if connected {
                continue;
            }
            let attempt = address.and_then(|address| {
                let options =
                    connect_options(target, address, portal.port, self.host_nqn.as_deref());
                let answer = self.fabric.connect(&options).map_err(|e| {
                    // No fabrics device at all: a host problem no retry mends.
                    if e.kind() == std::io::ErrorKind::NotFound {
                        missing = true;
                    }
                    e.to_string()
                })?;
                controller_of(&answer).ok_or_else(|| format!("unexpected answer {answer:?}"))
            });
            crate::metrics::node_operation("nvme_connect", &attempt);
            match attempt {
                Ok(controller) => tracing::info!(
                    nqn = %target.nqn, portal = %portal.address, port = portal.port, %controller,
                    "NVMe/TCP controller connected"
                ),
                Err(e) => {
                    tracing::warn!(nqn = %target.nqn, portal = %portal.address, port = portal.port, "NVMe/TCP connect failed: {e}");
                    failures.push(format!("{}:{}: {e}", portal.address, portal.port));
                }
            }
        }
        if controllers(sysfs, &target.nqn).is_empty() {
            if missing {
                return Err(NodeError::NoFabrics {
                    nqn: target.nqn.clone(),
                });
            }
            return Err(NodeError::Unreachable {
                nqn: target.nqn.clone(),
                failures,
            });
        }
        Ok(())
    }

    /// Rescans every controller of the subsystem `nqn` (managed prefix only), so a namespace
    /// the storage grew shows its new size.
    pub fn rescan(&self, sysfs: &Path, nqn: &str) -> Result<(), NodeError> {
        self.check_managed(nqn)?;
        for c in controllers(sysfs, nqn) {
            self.fabric
                .rescan_controller(&c.name)
                .map_err(io_error("rescan NVMe controller", &c.dir))?;
        }
        Ok(())
    }

    /// Deletes every controller of the subsystem `nqn` (managed prefix only). Returns their names.
    pub fn disconnect(&self, sysfs: &Path, nqn: &str) -> Result<Vec<String>, NodeError> {
        self.check_managed(nqn)?;
        let mut gone = vec![];
        for c in controllers(sysfs, nqn) {
            let deleted = self.fabric.delete_controller(&c.name);
            crate::metrics::node_operation("nvme_disconnect", &deleted);
            deleted.map_err(io_error("disconnect NVMe controller", &c.dir))?;
            tracing::info!(%nqn, controller = %c.name, "NVMe/TCP controller disconnected");
            gone.push(c.name);
        }
        Ok(gone)
    }
}

/// A portal's address as an IP (the kernel's TCP transport takes only addresses).
fn resolve(address: &str) -> Result<IpAddr, String> {
    if let Ok(ip) = address.parse() {
        return Ok(ip);
    }
    (address, 0)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {address}: {e}"))?
        .next()
        .map(|a| a.ip())
        .ok_or_else(|| format!("{address} resolves to no address"))
}

/// The `/dev/nvme-fabrics` connect string for one portal. Every value is validated before it
/// gets here (an IP, a port, an NQN without `,` or `=`, numbers), so none can add an option.
pub fn connect_options(
    target: &NvmeTarget,
    address: IpAddr,
    port: u16,
    host_nqn: Option<&str>,
) -> String {
    let mut options = format!(
        "nqn={},transport=tcp,traddr={address},trsvcid={port}",
        target.nqn
    );
    if let Some(host_nqn) = host_nqn {
        options.push_str(&format!(",hostnqn={host_nqn}"));
    }
    if let Some(v) = target.ctrl_loss_tmo_seconds {
        options.push_str(&format!(",ctrl_loss_tmo={v}"));
    }
    if let Some(v) = target.reconnect_delay_seconds {
        options.push_str(&format!(",reconnect_delay={v}"));
    }
    if let Some(v) = target.keep_alive_tmo_seconds {
        options.push_str(&format!(",keep_alive_tmo={v}"));
    }
    options
}

/// `instance=3,cntlid=1` → `nvme3`.
fn controller_of(answer: &str) -> Option<String> {
    let instance = answer
        .trim()
        .split(',')
        .find_map(|kv| kv.strip_prefix("instance="))?;
    instance.parse::<u32>().ok().map(|n| format!("nvme{n}"))
}

/// One NVMe controller as sysfs shows it.
#[derive(Debug, Clone)]
pub struct Controller {
    pub name: String,
    pub dir: PathBuf,
    pub transport: String,
    pub traddr: String,
    pub trsvcid: String,
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

/// The controllers of subsystem `nqn` (`/sys/class/nvme/nvme*` whose `subsysnqn` is `nqn`).
pub fn controllers(sysfs: &Path, nqn: &str) -> Vec<Controller> {
    let Ok(entries) = std::fs::read_dir(sysfs.join("class/nvme")) else {
        return vec![];
    };
    let mut found: Vec<Controller> = entries
        .flatten()
        .filter_map(|entry| {
            let dir = entry.path();
            (read_trimmed(&dir.join("subsysnqn"))? == nqn).then_some(())?;
            let address = read_trimmed(&dir.join("address")).unwrap_or_default();
            let field = |key: &str| {
                address
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                    .unwrap_or_default()
                    .to_owned()
            };
            Some(Controller {
                name: entry.file_name().to_string_lossy().into_owned(),
                transport: read_trimmed(&dir.join("transport")).unwrap_or_default(),
                traddr: field("traddr"),
                trsvcid: field("trsvcid"),
                dir,
            })
        })
        .collect();
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

/// The namespace block device name a controller's child entry stands for: `nvme0n1` itself, or
/// for a native-multipath path device `nvme0c2n1`, its head `nvme0n1`.
fn namespace_head(entry: &str) -> Option<String> {
    let rest = entry.strip_prefix("nvme")?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (subsystem, namespace) = rest.split_once('n')?;
    let subsystem = match subsystem.split_once('c') {
        Some((s, c)) if digits(s) && digits(c) => s,
        None if digits(subsystem) => subsystem,
        _ => return None,
    };
    digits(namespace).then(|| format!("nvme{subsystem}n{namespace}"))
}

/// The block device of the subsystem's namespace (`nsid`, or its only one), if it is there yet:
/// every controller's namespace entries, multipath paths folded onto their head, the device node
/// named by the head's `uevent` and checked against its `dev` number.
pub fn find_namespace(
    sysfs: &Path,
    nqn: &str,
    nsid: Option<u32>,
) -> Result<Option<PathBuf>, NodeError> {
    let mut heads: Vec<String> = controllers(sysfs, nqn)
        .iter()
        .filter_map(|c| std::fs::read_dir(&c.dir).ok())
        .flat_map(|entries| entries.flatten())
        .filter_map(|e| namespace_head(&e.file_name().to_string_lossy()))
        .collect();
    heads.sort();
    heads.dedup();
    let block = sysfs.join("class/block");
    if let Some(nsid) = nsid {
        heads.retain(|head| read_trimmed(&block.join(head).join("nsid")) == Some(nsid.to_string()));
    }
    let head = match heads.as_slice() {
        [] => return Ok(None),
        [one] => one,
        several => {
            return Err(NodeError::Unsupported {
                what: format!(
                    "NVMe subsystem {nqn} has several namespaces ({}); the attachment must name one",
                    several.join(", ")
                ),
            });
        }
    };
    let dir = block.join(head);
    let uevent = std::fs::read_to_string(dir.join("uevent")).unwrap_or_default();
    let Some(name) = uevent.lines().find_map(|l| l.strip_prefix("DEVNAME=")) else {
        return Ok(None);
    };
    let device = Path::new("/dev").join(name);
    let expected = read_trimmed(&dir.join("dev")).unwrap_or_default();
    match std::fs::metadata(&device) {
        Ok(meta) if meta.file_type().is_block_device() => {
            if super::device_number(&meta) != expected {
                return Err(NodeError::NotABlockDevice { path: device });
            }
            Ok(Some(device))
        }
        Ok(_) => Err(NodeError::NotABlockDevice { path: device }),
        // The node is not there yet (udev has not made it).
        Err(_) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::types::Portal;

    fn target(nqn: &str) -> NvmeTarget {
        NvmeTarget {
            portals: vec![Portal {
                address: "10.0.0.5".into(),
                port: 4420,
            }],
            nqn: nqn.into(),
            namespace_id: None,
            ctrl_loss_tmo_seconds: None,
            reconnect_delay_seconds: None,
            keep_alive_tmo_seconds: None,
        }
    }

    #[test]
    fn option_strings() {
        let mut t = target("nqn.2000-02.com.mikrotik:pvc-1");
        assert_eq!(
            connect_options(&t, "10.0.0.5".parse().unwrap(), 4420, None),
            "nqn=nqn.2000-02.com.mikrotik:pvc-1,transport=tcp,traddr=10.0.0.5,trsvcid=4420"
        );
        t.ctrl_loss_tmo_seconds = Some(-1);
        t.reconnect_delay_seconds = Some(5);
        t.keep_alive_tmo_seconds = Some(30);
        assert_eq!(
            connect_options(
                &t,
                "fd00::5".parse().unwrap(),
                4421,
                Some("nqn.2014-08.org.nvmexpress:uuid:1b4e28ba-2fa1-11d2-883f-0016d3cca427")
            ),
            "nqn=nqn.2000-02.com.mikrotik:pvc-1,transport=tcp,traddr=fd00::5,trsvcid=4421,\
             hostnqn=nqn.2014-08.org.nvmexpress:uuid:1b4e28ba-2fa1-11d2-883f-0016d3cca427,\
             ctrl_loss_tmo=-1,reconnect_delay=5,keep_alive_tmo=30"
        );
        assert!(
            resolve("localhost").unwrap().is_loopback(),
            "a DNS name resolves"
        );
    }

    #[test]
    fn kernel_answers_and_namespace_names() {
        assert_eq!(
            controller_of("instance=3,cntlid=1\n").as_deref(),
            Some("nvme3")
        );
        assert_eq!(controller_of("cntlid=1"), None);
        assert_eq!(namespace_head("nvme0n1").as_deref(), Some("nvme0n1"));
        assert_eq!(namespace_head("nvme2c5n3").as_deref(), Some("nvme2n3"));
        for not_a_namespace in [
            "nvme0",
            "nvme0n",
            "nvmeXn1",
            "nvme0c1",
            "device",
            "nvme0n1p1",
        ] {
            assert_eq!(namespace_head(not_a_namespace), None, "{not_a_namespace}");
        }
    }

    /// A fixture sysfs tree whose namespaces name real block devices of this machine, so the
    /// device-node check runs for real.
    struct Sysfs {
        dir: tempfile::TempDir,
        devices: Vec<String>,
    }

    impl Sysfs {
        fn new() -> Self {
            let mut devices: Vec<String> = std::fs::read_dir("/sys/class/block")
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| Path::new("/dev").join(n).exists())
                .collect();
            devices.sort();
            Self {
                dir: tempfile::tempdir().unwrap(),
                devices,
            }
        }

        fn root(&self) -> &Path {
            self.dir.path()
        }

        fn controller(&self, name: &str, nqn: &str, traddr: &str, namespaces: &[&str]) {
            let dir = self.root().join("class/nvme").join(name);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("subsysnqn"), format!("{nqn}\n")).unwrap();
            std::fs::write(dir.join("transport"), "tcp\n").unwrap();
            std::fs::write(
                dir.join("address"),
                format!("traddr={traddr},trsvcid=4420\n"),
            )
            .unwrap();
            for ns in namespaces {
                std::fs::create_dir_all(dir.join(ns)).unwrap();
            }
        }

        /// The head block device `head`, standing for this machine's `index`th block device.
        fn head(&self, head: &str, nsid: u32, index: usize) -> PathBuf {
            let real = &self.devices[index];
            let dev = std::fs::read_to_string(Path::new("/sys/class/block").join(real).join("dev"))
                .unwrap();
            let dir = self.root().join("class/block").join(head);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(
                dir.join("uevent"),
                format!("MAJOR=0\nDEVNAME={real}\nDEVTYPE=disk\n"),
            )
            .unwrap();
            std::fs::write(dir.join("dev"), dev).unwrap();
            std::fs::write(dir.join("nsid"), format!("{nsid}\n")).unwrap();
            Path::new("/dev").join(real)
        }
    }

    const MANAGED: &str = "nqn.2000-02.com.mikrotik:pvc-a";

    #[test]
    fn a_single_path_namespace() {
        let sys = Sysfs::new();
        sys.controller("nvme0", MANAGED, "10.0.0.5", &["nvme0n1"]);
        let device = sys.head("nvme0n1", 1, 0);
        assert_eq!(
            find_namespace(sys.root(), MANAGED, None).unwrap(),
            Some(device.clone())
        );
        assert_eq!(
            find_namespace(sys.root(), MANAGED, Some(1)).unwrap(),
            Some(device)
        );
        assert_eq!(find_namespace(sys.root(), MANAGED, Some(2)).unwrap(), None);
        assert_eq!(
            find_namespace(sys.root(), "nqn.2000-02.com.mikrotik:pvc-b", None).unwrap(),
            None
        );
    }

    #[test]
    fn multipath_paths_fold_onto_their_head() {
        let sys = Sysfs::new();
        // Two controllers (two portals) of subsystem 4: hidden path devices, one head.
        sys.controller("nvme1", MANAGED, "10.0.0.5", &["nvme4c1n1"]);
        sys.controller("nvme2", MANAGED, "10.0.0.6", &["nvme4c2n1"]);
        let device = sys.head("nvme4n1", 1, 1);
        assert_eq!(
            find_namespace(sys.root(), MANAGED, None).unwrap(),
            Some(device)
        );
        assert_eq!(controllers(sys.root(), MANAGED).len(), 2);
    }

    #[test]
    fn several_subsystems_and_namespaces() {
        let sys = Sysfs::new();
        let other = "nqn.2000-02.com.mikrotik:pvc-b";
        sys.controller("nvme0", MANAGED, "10.0.0.5", &["nvme0n1", "nvme0n2"]);
        sys.controller("nvme1", other, "10.0.0.5", &["nvme1n1"]);
        let first = sys.head("nvme0n1", 1, 0);
        let second = sys.head("nvme0n2", 2, 1);
        let theirs = sys.head("nvme1n1", 1, 2);
        assert_eq!(
            find_namespace(sys.root(), MANAGED, Some(2)).unwrap(),
            Some(second)
        );
        assert_eq!(
            find_namespace(sys.root(), MANAGED, Some(1)).unwrap(),
            Some(first)
        );
        assert_eq!(
            find_namespace(sys.root(), other, None).unwrap(),
            Some(theirs)
        );
        // Two namespaces and none named: ambiguous, refused.
        let ambiguous = find_namespace(sys.root(), MANAGED, None)
            .unwrap_err()
            .to_string();
        assert!(ambiguous.contains("nvme0n1, nvme0n2"), "{ambiguous}");
    }

    #[test]
    fn a_device_node_that_is_not_the_namespace_is_refused() {
        let sys = Sysfs::new();
        sys.controller("nvme0", MANAGED, "10.0.0.5", &["nvme0n1"]);
        sys.head("nvme0n1", 1, 0);
        // The node /dev/<DEVNAME> now has another device number than sysfs says.
        let dev = sys.root().join("class/block/nvme0n1/dev");
        std::fs::write(&dev, "259:99\n").unwrap();
        assert!(matches!(
            find_namespace(sys.root(), MANAGED, None),
            Err(NodeError::NotABlockDevice { .. })
        ));
    }

    /// Records what it is asked; every connect makes controller `nvme<n>` of the subsystem.
    #[derive(Debug)]
    struct Recorder {
        sysfs: PathBuf,
        written: std::sync::Mutex<Vec<String>>,
    }

    impl Fabric for Recorder {
        fn connect(&self, options: &str) -> std::io::Result<String> {
            let mut written = self.written.lock().unwrap();
            written.push(options.to_owned());
            let n = written.len() + 10;
            let field = |key: &str| {
                options
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(key))
                    .unwrap()
                    .to_owned()
            };
            let dir = self.sysfs.join(format!("class/nvme/nvme{n}"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("subsysnqn"), field("nqn=")).unwrap();
            std::fs::write(dir.join("transport"), "tcp").unwrap();
            let address = format!("traddr={},trsvcid={}", field("traddr="), field("trsvcid="));
            std::fs::write(dir.join("address"), address).unwrap();
            Ok(format!("instance={n},cntlid=1\n"))
        }

        fn delete_controller(&self, controller: &str) -> std::io::Result<()> {
            self.written
                .lock()
                .unwrap()
                .push(format!("delete {controller}"));
            std::fs::remove_dir_all(self.sysfs.join("class/nvme").join(controller))
        }

        fn rescan_controller(&self, controller: &str) -> std::io::Result<()> {
            self.written
                .lock()
                .unwrap()
                .push(format!("rescan {controller}"));
            Ok(())
        }
    }

    #[test]
    fn connect_skips_connected_portals_and_disconnect_takes_all_controllers() {
        let sys = Sysfs::new();
        let recorder = Arc::new(Recorder {
            sysfs: sys.root().to_owned(),
            written: Default::default(),
        });
        let nvme = Nvme {
            fabric: recorder.clone(),
            managed_prefix: Some("nqn.2000-02.com.mikrotik:pvc-".into()),
            host_nqn: None,
        };
        // The node's own root disk, connected outside the driver.
        sys.controller(
            "nvme0",
            "nqn.2000-02.com.mikrotik:node-root",
            "10.0.0.5",
            &[],
        );
        let mut t = target(MANAGED);
        t.portals.push(Portal {
            address: "10.0.0.6".into(),
            port: 4420,
        });
        nvme.connect(sys.root(), &t).unwrap();
        nvme.connect(sys.root(), &t).unwrap();
        assert_eq!(
            *recorder.written.lock().unwrap(),
            [
                format!("nqn={MANAGED},transport=tcp,traddr=10.0.0.5,trsvcid=4420"),
                format!("nqn={MANAGED},transport=tcp,traddr=10.0.0.6,trsvcid=4420"),
            ],
            "a second connect finds both controllers and writes nothing"
        );
        assert_eq!(
            nvme.disconnect(sys.root(), MANAGED).unwrap(),
            ["nvme11", "nvme12"]
        );
        assert!(controllers(sys.root(), MANAGED).is_empty());
        assert_eq!(
            controllers(sys.root(), "nqn.2000-02.com.mikrotik:node-root").len(),
            1
        );
    }

    /// A node without the nvme-tcp module: no `/dev/nvme-fabrics` to write to.
    #[derive(Debug)]
    struct NoModule;

    impl Fabric for NoModule {
        fn connect(&self, _: &str) -> std::io::Result<String> {
            Err(std::io::ErrorKind::NotFound.into())
        }

        fn delete_controller(&self, _: &str) -> std::io::Result<()> {
            Ok(())
        }

        fn rescan_controller(&self, _: &str) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_node_without_the_fabrics_device_says_so_and_is_not_retried_as_a_network_fault() {
        let sys = Sysfs::new();
        let nvme = Nvme {
            fabric: Arc::new(NoModule),
            managed_prefix: Some("nqn.2000-02.com.mikrotik:pvc-".into()),
            host_nqn: None,
        };
        let err = nvme.connect(sys.root(), &target(MANAGED)).unwrap_err();
        assert!(matches!(err, NodeError::NoFabrics { .. }), "{err}");
        assert!(err.to_string().contains("/dev/nvme-fabrics"), "{err}");
    }

    #[test]
    fn only_managed_subsystems_are_touched() {
        let mut nvme = Nvme::kernel(Path::new("/nonexistent"));
        let t = target("nqn.2000-02.com.mikrotik:pvc-1");
        let unmanaged = nvme.connect(Path::new("/nonexistent"), &t).unwrap_err();
        assert!(
            unmanaged.to_string().contains("--managed-nqn-prefix"),
            "{unmanaged}"
        );
        nvme.managed_prefix = Some("nqn.2000-02.com.mikrotik:pvc-".into());
        let root_disk = nvme
            .disconnect(
                Path::new("/nonexistent"),
                "nqn.2000-02.com.mikrotik:node-root",
            )
            .unwrap_err();
        assert!(
            root_disk.to_string().contains("outside the managed prefix"),
            "{root_disk}"
        );
    }
}
