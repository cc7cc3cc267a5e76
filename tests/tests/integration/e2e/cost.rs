//! What a volume costs in a cluster, side by side with the reference hostpath driver: each
//! driver a host process on the single-node cluster with the same sidecars (csi-provisioner and
//! the registrar), five interleaved rounds of claim + pod → running → both deleted → PV gone.
//! Printed, not asserted (speed is the benchmark's, never a test's).
//!
//! modcsi runs as a cluster driver does (node-local-cache, all services, its records in
//! ConfigMaps). hostpath runs when `MODCSI_BENCH_HOSTPATH` names its `hostpathplugin` binary:
//! the Go module proxy does not serve csi-driver-host-path, so nothing here builds it. A build
//! of one's own needs `-ldflags "-X main.version=…"`: without a version the plugin answers
//! GetPluginInfo UNAVAILABLE and the registrar never registers it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use modcsi_tests::e2e::{Cluster, repo};
use modcsi_tests::process::{cpu, wakeups, wakeups_by_thread};

const ROUNDS: usize = 5;

/// A driver under test and its sidecars, stopped (and its cluster objects deleted) when dropped.
struct Driver {
    kubectl: Vec<String>,
    label: &'static str,
    name: &'static str,
    pid: u32,
    children: Vec<Child>,
    _dir: tempfile::TempDir,
    rounds: Vec<[Duration; 3]>,
    cpu: Duration,
    /// The provisioner's metrics: its own timing of each CSI call, the same for every driver.
    metrics_port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let class = format!("storageclass/bench-{}", self.label);
        let driver = format!("csidriver/{}", self.name);
        let _ = Command::new(&self.kubectl[0])
            .args(&self.kubectl[1..])
            .args(["delete", &class, &driver])
            .output();
    }
}

/// A line of /proc/PID/status in MiB: `VmRSS` (all resident pages) or `RssAnon` (the heap and
/// stacks, without the binary's pages, which the kernel can drop and read again).
fn status_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_default();
    kib / 1024.0
}

fn spawn(command: &mut Command, log: &Path) -> Child {
    command
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"))
}

impl Driver {
    /// Starts `driver` (given its socket) with the sidecars, and the cluster objects that name it.
    fn start(
        c: &Cluster,
        label: &'static str,
        name: &'static str,
        driver: impl FnOnce(&str, &Path) -> Command,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let plugin_dir = PathBuf::from(&c.kubelet_root).join("plugins").join(name);
        std::fs::create_dir_all(&plugin_dir).unwrap();
        let socket = plugin_dir.join("csi.sock");
        let _ = std::fs::remove_file(&socket);
        let endpoint = format!("unix://{}", socket.display());
        let main = spawn(
            &mut driver(&endpoint, dir.path()),
            &dir.path().join("driver.log"),
        );
        let pid = main.id();
        c.wait("the driver's socket", Duration::from_secs(60), || {
            socket.exists().then_some(())
        });
        let tools = c.tools();
        let sock = socket.to_str().unwrap();
        let registry = format!("{}/plugins_registry", c.kubelet_root);
        let registrar = spawn(
            Command::new(tools.join("modcsi-registrar")).args([
                "--csi-address",
                sock,
                "--kubelet-registration-path",
                sock,
                "--plugin-registration-path",
                &registry,
            ]),
            &dir.path().join("registrar.log"),
        );
        let metrics_port = modcsi_tests::free_port();
        let metrics = format!("--http-endpoint=127.0.0.1:{metrics_port}");
        let provisioner = spawn(
            Command::new(tools.join("csi-provisioner")).args([
                "--csi-address",
                sock,
                "--kubeconfig",
                c.kubeconfig(),
                "--leader-election=false",
                "--timeout=30s",
                &metrics,
            ]),
            &dir.path().join("provisioner.log"),
        );
        c.apply(&format!(
            r#"
apiVersion: storage.k8s.io/v1
kind: CSIDriver
metadata: {{name: {name}}}
spec: {{attachRequired: false, podInfoOnMount: false, volumeLifecycleModes: [Persistent]}}
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {{name: bench-{label}}}
provisioner: {name}
reclaimPolicy: Delete
volumeBindingMode: Immediate
"#
        ));
        c.wait_registered(name);
        Self {
            kubectl: vec![c.kubectl_path(), format!("--kubeconfig={}", c.kubeconfig())],
            label,
            name,
            pid,
            children: vec![main, registrar, provisioner],
            _dir: dir,
            rounds: vec![],
            cpu: Duration::ZERO,
            metrics_port,
        }
    }

    /// One claim and pod, to running and gone: times to bound, to running, and from the
    /// deletes to the PV gone.
    fn round(&mut self, c: &Cluster, i: usize) {
        let object = format!("bench-{}-{i}", self.label);
        let before = cpu(self.pid);
        let started = Instant::now();
        c.apply(&format!(
            r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: {object}, namespace: default}}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: bench-{label}
  resources: {{requests: {{storage: 16Mi}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: {object}, namespace: default}}
spec:
  # Not 0: a pod deleted at once leaves kubelet unmounting after it is gone, and a driver
  # that refuses to delete a volume still mounted (modcsi does) would be timed on that.
  terminationGracePeriodSeconds: 1
  containers:
    - name: writer
      image: modcsi.local/busybox:1
      imagePullPolicy: Never
      command: [sh, -c, "echo x > /data/x && sleep 3600"]
      volumeMounts: [{{name: data, mountPath: /data}}]
  volumes:
    - name: data
      persistentVolumeClaim: {{claimName: {object}}}
"#,
            label = self.label
        ));
        let claim = format!("pvc/{object}");
        let pod = format!("pod/{object}");
        let pv = c.wait("the claim to bind", Duration::from_secs(60), || {
            let pv = c.field("default", &claim, "{.spec.volumeName}");
            (!pv.is_empty()).then_some(pv)
        });
        let bound = started.elapsed();
        c.wait("the pod to run", Duration::from_secs(120), || {
            (c.field("default", &pod, "{.status.phase}") == "Running").then_some(())
        });
        let running = started.elapsed();
        let deleting = Instant::now();
        c.kubectl(&["-n", "default", "delete", &pod, "--wait=true"]);
        c.kubectl(&["-n", "default", "delete", &claim, "--wait=true"]);
        c.wait("the PV to go", Duration::from_secs(120), || {
            c.try_kubectl(&["get", "pv", &pv]).is_err().then_some(())
        });
        self.rounds.push([bound, running, deleting.elapsed()]);
        self.cpu += cpu(self.pid) - before;
    }

    fn report(&self) {
        let median = |k: usize| {
            let mut v: Vec<Duration> = self.rounds.iter().map(|r| r[k]).collect();
            v.sort();
            v[v.len() / 2].as_secs_f64() * 1e3
        };
        // Idle: nothing runs, so nothing should wake the driver. First the last round's
        // aftermath settles: kubelet's last calls, and tokio's blocking threads, which exit
        // after 10 s without work.
        std::thread::sleep(Duration::from_secs(12));
        let (w0, c0, t0) = (
            wakeups(self.pid),
            cpu(self.pid),
            wakeups_by_thread(self.pid),
        );
        std::thread::sleep(Duration::from_secs(5));
        let (w1, c1, t1) = (
            wakeups(self.pid),
            cpu(self.pid),
            wakeups_by_thread(self.pid),
        );
        let woke: Vec<String> = t1
            .iter()
            .filter_map(|(name, n)| {
                let d = n - t0.get(name).copied().unwrap_or_default();
                (d > 0).then(|| format!("{name} {d}"))
            })
            .collect();
        // Mean time of the driver's successful CreateVolume and DeleteVolume, as the
        // provisioner timed them.
        let sidecar = modcsi_tests::e2e::http_get("127.0.0.1", self.metrics_port, "/metrics");
        let mean = |method: &str| {
            let series = |part: &str| {
                format!(
                    "csi_sidecar_operations_seconds_{part}{{driver_name=\"{}\",grpc_status_code=\"OK\",method_name=\"/csi.v1.Controller/{method}\"}}",
                    self.name
                )
            };
            let sum = modcsi_tests::e2e::sample(&sidecar, &series("sum"));
            let count = modcsi_tests::e2e::sample(&sidecar, &series("count"));
            sum * 1e3 / count
        };
        println!(
            "{:<10} {:>9.1} {:>9.1} {:>9.0} {:>11.0} {:>12.0} {:>13.1} {:>9.1} {:>12.1} {:>8.1} {:>9.1}  {}",
            self.label,
            mean("CreateVolume"),
            mean("DeleteVolume"),
            median(0),
            median(1),
            median(2),
            self.cpu.as_secs_f64() * 1e3 / self.rounds.len() as f64,
            (w1 - w0) as f64 / 5.0,
            (c1 - c0).as_secs_f64() * 1e3 / 5.0,
            status_mib(self.pid, "VmRSS"),
            status_mib(self.pid, "RssAnon"),
            woke.join(", "),
        );
    }
}

#[test]
#[ignore = "needs the single-node cluster: just e2e"]
fn cost_per_volume_side_by_side_with_hostpath() {
    let c = Cluster::from_env();
    let backend = repo().join("backends/target/wasm32-wasip2/release/node_local_cache.wasm");
    let binary = repo().join("target/release/modcsi");
    let mut drivers = vec![Driver::start(
        &c,
        "modcsi",
        "bench.modcsi.io",
        |endpoint, dir| {
            let mut command = Command::new(&binary);
            command
                .args(["serve", "--driver-name", "bench.modcsi.io", "--mode", "all"])
                .args(["--node-id", &c.node, "--endpoint", endpoint])
                .args(["--kubeconfig", c.kubeconfig(), "--namespace", "default"])
                .args(["--kubelet-root", &c.kubelet_root])
                .arg("--backend")
                .arg(&backend)
                .arg("--state-dir")
                .arg(dir.join("state"));
            command
        },
    )];
    match std::env::var_os("MODCSI_BENCH_HOSTPATH") {
        Some(hostpath) => drivers.push(Driver::start(
            &c,
            "hostpath",
            "hostpath.csi.k8s.io",
            |endpoint, dir| {
                let mut command = Command::new(&hostpath);
                command
                    .args(["--drivername=hostpath.csi.k8s.io", "--v=0"])
                    .arg(format!("--endpoint={endpoint}"))
                    .arg(format!("--nodeid={}", c.node))
                    .arg(format!("--statedir={}", dir.join("state").display()));
                command
            },
        )),
        None => println!(
            "hostpath not measured: set MODCSI_BENCH_HOSTPATH to a hostpathplugin binary (the Go module proxy does not serve csi-driver-host-path)"
        ),
    }
    for i in 0..ROUNDS {
        for driver in &mut drivers {
            driver.round(&c, i);
        }
    }
    println!(
        "cost in a cluster, {ROUNDS} interleaved rounds of claim + pod -> running -> deleted (medians; CPU and memory of the driver process):"
    );
    println!(
        "{:<10} {:>9} {:>9} {:>9} {:>11} {:>12} {:>13} {:>9} {:>12} {:>8} {:>9}  threads woken while idle",
        "driver",
        "create ms",
        "delete ms",
        "bound ms",
        "running ms",
        "PV gone ms",
        "CPU ms/round",
        "idle w/s",
        "idle CPU ms/s",
        "RSS MiB",
        "anon MiB",
    );
    for driver in &drivers {
        driver.report();
    }
}
