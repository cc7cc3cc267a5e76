//! The end-to-end suites' side of the single-node cluster `scripts/e2e.sh` starts
//! (`scripts/cluster.sh`): its environment, kubectl and helm as an operator runs them, waits,
//! and scrapes of the driver's metrics endpoints. The suites are ignored in `just test` and run
//! by `just e2e`, which sets `MODCSI_E2E_ENV` to the cluster's env file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct Cluster {
    env: HashMap<String, String>,
    /// kubelet's root directory (the node plugin's kubelet dir).
    pub kubelet_root: String,
    /// The one real node's name.
    pub node: String,
    helm: PathBuf,
}

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

impl Cluster {
    /// The cluster `MODCSI_E2E_ENV` describes (`scripts/e2e.sh` sets it).
    pub fn from_env() -> Self {
        let file = std::env::var("MODCSI_E2E_ENV")
            .expect("MODCSI_E2E_ENV names the cluster's env file: run `just e2e`");
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file}: {e}"));
        let env: HashMap<String, String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("export ")?.split_once('='))
            .map(|(k, v)| {
                let path = std::env::var("PATH").unwrap_or_default();
                (k.to_owned(), v.replace("$PATH", &path))
            })
            .collect();
        let helm = std::env::var("HELM").unwrap_or_else(|_| "helm".into());
        Self {
            kubelet_root: env["KUBELET_ROOT"].clone(),
            node: env["MODCSI_CLUSTER_NODE"].clone(),
            helm: helm.into(),
            env,
        }
    }

    fn command(&self, program: &Path) -> Command {
        let mut c = Command::new(program);
        c.envs(&self.env).current_dir(repo());
        c
    }

    fn run(&self, program: &Path, args: &[&str], input: Option<&str>) -> Result<String, String> {
        let mut child = self
            .command(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
        if let Some(input) = input {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(text)
        } else {
            Err(format!(
                "{} {}: {}{text}",
                program.display(),
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// `kubectl args…`, which must succeed; its output.
    pub fn kubectl(&self, args: &[&str]) -> String {
        self.try_kubectl(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `kubectl args…`, which may fail.
    pub fn try_kubectl(&self, args: &[&str]) -> Result<String, String> {
        self.run(Path::new(&self.kubectl_path()), args, None)
    }

    /// `kubectl apply -f -` of `yaml`.
    pub fn apply(&self, yaml: &str) {
        self.run(
            Path::new(&self.kubectl_path()),
            &["apply", "-f", "-"],
            Some(yaml),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Installs the chart as `release` in namespace `modcsi` with a values file of
    /// deploy/helm/values and more helm arguments (`--set …`), as an operator would, adjusted
    /// to this cluster: its kubelet root, images imported locally (never pulled). Waits until
    /// its pods are ready.
    pub fn install(&self, release: &str, values: &str, more: &[&str]) {
        let values = format!("deploy/helm/values/{values}.yaml");
        let kubelet = format!("node.kubeletDir={}", self.kubelet_root);
        let mut args = vec![
            "upgrade",
            "--install",
            release,
            "deploy/helm/modcsi",
            "--namespace",
            "modcsi",
            "--create-namespace",
            "-f",
            &values,
            "--set",
            &kubelet,
            "--set",
            "image.pullPolicy=Never",
            "--wait",
            "--timeout",
            "3m",
        ];
        args.extend(more);
        self.run(&self.helm, &args, None)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.describe("modcsi")));
    }

    pub fn uninstall(&self, release: &str) {
        let _ = self.run(
            &self.helm,
            &["uninstall", release, "--namespace", "modcsi", "--wait"],
            None,
        );
    }

    /// What `kubectl describe pods` and the recent Events say in `namespace`, for a failure's
    /// message.
    pub fn describe(&self, namespace: &str) -> String {
        let pods = self
            .try_kubectl(&["-n", namespace, "describe", "pods"])
            .unwrap_or_else(|e| e);
        let events = self
            .try_kubectl(&["-n", namespace, "get", "events", "--sort-by=.lastTimestamp"])
            .unwrap_or_else(|e| e);
        format!("{pods}\n{events}")
    }

    /// The last lines of every container of `release`'s `component` pods (for a failure's message).
    pub fn logs(&self, release: &str, component: &str) -> String {
        let selector =
            format!("app.kubernetes.io/instance={release},app.kubernetes.io/component={component}");
        self.try_kubectl(&[
            "-n",
            "modcsi",
            "logs",
            "-l",
            &selector,
            "--all-containers",
            "--prefix",
            "--tail=30",
        ])
        .unwrap_or_else(|e| e)
    }

    /// `kubectl get … -o jsonpath=…` of one field ("" when absent).
    pub fn field(&self, namespace: &str, object: &str, path: &str) -> String {
        let jsonpath = format!("jsonpath={path}");
        self.try_kubectl(&["-n", namespace, "get", object, "-o", &jsonpath])
            .unwrap_or_default()
    }

    /// Polls `check` every 250 ms until it answers `Some`, for at most `timeout`.
    pub fn wait<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut() -> Option<T>,
    ) -> T {
        let started = Instant::now();
        loop {
            if let Some(found) = check() {
                return found;
            }
            assert!(started.elapsed() < timeout, "waited {timeout:?} for {what}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Waits until kubelet has registered `driver` on the node (its CSINode lists it).
    pub fn wait_registered(&self, driver: &str) {
        let csinode = format!("csinode/{}", self.node);
        self.wait(
            "kubelet to register the driver",
            Duration::from_secs(60),
            || {
                self.field("", &csinode, "{.spec.drivers[*].name}")
                    .contains(driver)
                    .then_some(())
            },
        );
    }

    /// The metrics of the pods of `release`'s `component` (controller or node), scraped on
    /// their pod IP at `port`, concatenated.
    pub fn scrape(&self, release: &str, component: &str, port: u16) -> String {
        self.get(release, component, port, "/metrics")
    }

    /// `path` of every pod of `component` of `release` (in namespace modcsi) on `port`, the
    /// answers one after the other.
    pub fn get(&self, release: &str, component: &str, port: u16, path: &str) -> String {
        let selector =
            format!("app.kubernetes.io/instance={release},app.kubernetes.io/component={component}");
        let ips = self.kubectl(&[
            "-n",
            "modcsi",
            "get",
            "pods",
            "-l",
            &selector,
            "-o",
            "jsonpath={.items[*].status.podIP}",
        ]);
        let mut all = String::new();
        for ip in ips.split_whitespace() {
            all.push_str(&http_get(ip, port, path));
        }
        assert!(
            !all.is_empty(),
            "no {component} pod of {release} answers {path}"
        );
        all
    }
}

impl Cluster {
    /// The directory of the Go tools `scripts/go-tools.sh` built (helm's).
    pub fn tools(&self) -> PathBuf {
        self.helm.parent().expect("helm's directory").to_owned()
    }

    /// The cluster's kubectl.
    pub fn kubectl_path(&self) -> String {
        format!("{}/bin/kubectl", self.env["MODCSI_CLUSTER_DIR"])
    }

    /// The kubeconfig of the cluster's administrator.
    pub fn kubeconfig(&self) -> &str {
        &self.env["KUBECONFIG"]
    }
}

/// A plain HTTP/1.1 GET's body.
pub fn http_get(host: &str, port: u16, path: &str) -> String {
    http_get_as(host, port, path, None).1
}

/// A GET of `path` with `Authorization: Bearer <token>` when given: the status and the body.
pub fn http_get_as(host: &str, port: u16, path: &str, token: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect((host, port)).unwrap_or_else(|e| panic!("{host}:{port}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The value of the sample `series` (name and labels exactly as rendered), summed over the
/// scrapes in `text`.
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .filter_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .parse::<f64>()
                .ok()
        })
        .sum()
}
