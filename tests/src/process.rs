//! A `modcsi serve` process (the real binary) on a socket under a root directory the caller
//! owns: it can be killed (SIGKILL) and started again on the same state, and its CPU time is
//! read from outside. Dropping it stops it (SIGTERM) and waits.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use modcsi::client::CsiClient;
use modcsi::proto::ProbeRequest;

use crate::{component, shared_cache_dir};

/// The fields of `/proc/<pid>/stat` after the command name: `[0]` is the state, `[1]` the
/// parent, `[11]` and `[12]` user and system time in clock ticks.
pub fn proc_stat(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// User + system CPU time process `pid` has used.
pub fn cpu(pid: u32) -> Duration {
    let fields = proc_stat(pid).expect("the process is alive");
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap() as u64;
    Duration::from_micros(ticks * 1_000_000 / per_second)
}

/// Context switches of every thread of process `pid` so far: how often it woke up.
pub fn wakeups(pid: u32) -> u64 {
    wakeups_by_thread(pid).values().sum()
}

/// Context switches so far of each thread of `pid`, by thread name.
pub fn wakeups_by_thread(pid: u32) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"));
    for task in tasks.into_iter().flatten().flatten() {
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let switches: u64 = std::fs::read_to_string(task.path().join("status"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("ctxt_switches"))
            .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
            .sum();
        *out.entry(name.trim().to_owned()).or_default() += switches;
    }
    out
}

/// The flags of a `modcsi serve` process of the test API server's cluster: its node id and mode,
/// the credentials of `kubeconfig`, and the namespace the deployed RBAC is applied in.
pub fn cluster_flags<'a>(node: &'a str, mode: &'a str, kubeconfig: &'a str) -> Vec<&'a str> {
    vec![
        "--node-id",
        node,
        "--mode",
        mode,
        "--kubeconfig",
        kubeconfig,
        "--namespace",
        "default",
    ]
}

/// The `modcsi` binary of this workspace's debug build.
pub fn modcsi_binary() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/modcsi")
}

/// Runs the `modcsi` binary to its end with `args`, and `XDG_CACHE_HOME` (where it caches
/// what it pulls) when `cache` is given: whether it succeeded, its stdout, its stderr.
pub fn run_modcsi(args: &[&str], cache: Option<&Path>) -> (bool, String, String) {
    let mut command = Command::new(modcsi_binary());
    if let Some(cache) = cache {
        command.env("XDG_CACHE_HOME", cache);
    }
    let out = command.args(args).output().expect("modcsi runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub struct ServeProcess {
    child: Child,
    root: PathBuf,
    pub client: CsiClient,
}

impl ServeProcess {
    /// Starts `binary serve` with the backend component `backend`, its state in `root/state`,
    /// targets under `root/targets` (the kubelet root is `root`), node id `test-node`.
    pub async fn start(binary: &Path, backend: &str, root: &Path) -> Self {
        Self::start_with(binary, backend, root, &["--node-id", "test-node"]).await
    }

    /// [`ServeProcess::start`] with more flags (`--node-id` among them; `--driver-name`, when
    /// given, replaces `test.modcsi.io`).
    pub async fn start_with(binary: &Path, backend: &str, root: &Path, flags: &[&str]) -> Self {
        Self::serve(binary, &component(backend), root, flags).await
    }

    /// [`ServeProcess::start_with`] for the component at `backend`, wherever it was built.
    pub async fn serve(binary: &Path, backend: &Path, root: &Path, flags: &[&str]) -> Self {
        let root = std::fs::canonicalize(root).unwrap();
        std::fs::create_dir_all(root.join("targets")).unwrap();
        let endpoint = format!("unix://{}/csi.sock", root.display());
        let driver = if flags.contains(&"--driver-name") {
            &[][..]
        } else {
            &["--driver-name", "test.modcsi.io"][..]
        };
        let child = Command::new(binary)
            .arg("serve")
            .args(driver)
            .args(flags)
            .arg("--backend")
            .arg(backend)
            .args(["--endpoint", &endpoint])
            .arg("--state-dir")
            .arg(root.join("state"))
            .arg("--kubelet-root")
            .arg(&root)
            // Precompiled components shared with the in-process hosts (same engine config).
            .arg("--cache-dir")
            .arg(shared_cache_dir())
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("start modcsi serve");
        let started = Instant::now();
        let client = loop {
            if let Ok(client) = CsiClient::connect(&endpoint).await
                && client.identity.clone().probe(ProbeRequest {}).await.is_ok()
            {
                break client;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the server did not come up"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Self {
            child,
            root,
            client,
        }
    }

    pub fn targets(&self) -> PathBuf {
        self.root.join("targets")
    }

    /// User + system CPU time the server process has used.
    pub fn cpu(&self) -> Duration {
        cpu(self.child.id())
    }
}

impl ServeProcess {
    /// Context switches of every thread of the process so far: how often it woke up.
    pub fn wakeups(&self) -> u64 {
        wakeups(self.child.id())
    }

    /// Kills the process outright (SIGKILL), as a crash or an OOM kill would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}
