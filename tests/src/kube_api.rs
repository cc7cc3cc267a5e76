//! A real Kubernetes API server for tests: kube-apiserver v1.20.2 over Debian's etcd, both on
//! loopback, started by the test that needs it and stopped when dropped.
//!
//! The binary is built from Debian bookworm's `kubernetes` source package by
//! `scripts/kube-apiserver.sh` (which `.ci/run` runs) and cached outside the checkout, at
//! `$MODCSI_KUBE_APISERVER` or `/var/cache/modcsi/kube-apiserver-v1.20.2`. etcd keeps its data in
//! /dev/shm. Clients authenticate with static tokens: `admin` (system:masters), and any user a
//! test adds with [`KubeApi::start_with_users`], whose rights come from RBAC objects like those
//! in deploy/.
//!
//! What it lacks against a cluster: no controller manager, scheduler or kubelet, so nothing acts
//! on the objects (no garbage collection, no attach-detach controller, no external-attacher):
//! the tests play those parts by writing VolumeAttachments and Nodes themselves.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube::config::{KubeConfigOptions, Kubeconfig};

const DEFAULT_BINARY: &str = "/var/cache/modcsi/kube-apiserver-v1.20.2";
const ADMIN_TOKEN: &str = "modcsi-test-admin";
/// The service accounts of deploy/kubernetes/rbac.yaml, and the tokens that stand for them.
pub const CONTROLLER_ACCOUNT: (&str, &str) =
    ("modcsi-node-local-cache-controller", "controller-token");
const NODE_ACCOUNT: (&str, &str) = ("modcsi-node-local-cache-node", "node-token");

pub struct KubeApi {
    dir: tempfile::TempDir,
    /// etcd's data, in /dev/shm: removed when dropped, after etcd has stopped.
    _etcd_dir: tempfile::TempDir,
    etcd: Child,
    apiserver: Option<Child>,
    etcd_port: u16,
    pub port: u16,
}

fn binary() -> PathBuf {
    let path = std::env::var_os("MODCSI_KUBE_APISERVER")
        .map_or_else(|| PathBuf::from(DEFAULT_BINARY), PathBuf::from);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/kube-apiserver.sh (as .ci/run does) to build it",
        path.display()
    );
    path
}

fn openssl(dir: &Path, args: &str) {
    let out = Command::new("openssl")
        .args(args.split_whitespace())
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a serving certificate for 127.0.0.1 signed by it, and the service-account key pair.
fn certificates(dir: &Path) {
    openssl(
        dir,
        "req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=modcsi-test-ca",
    );
    openssl(
        dir,
        "req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1",
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        "x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile server.ext",
    );
    openssl(dir, "genrsa -out sa.key 2048");
    openssl(dir, "rsa -in sa.key -pubout -out sa.pub");
}

impl KubeApi {
    /// Starts etcd and the API server and waits until the server is ready.
    pub async fn start() -> Self {
        Self::start_with_users(&[]).await
    }

    /// Also lets each of `users` (name, token) authenticate, with no group: RBAC decides what
    /// they may do.
    pub async fn start_with_users(users: &[(&str, &str)]) -> Self {
        // Before anything starts: a missing binary says how to build it.
        let _ = binary();
        let dir = tempfile::tempdir().unwrap();
        certificates(dir.path());
        let mut tokens = format!("{ADMIN_TOKEN},admin,admin,\"system:masters\"\n");
        for (user, token) in users {
            tokens.push_str(&format!("{token},{user},{user}\n"));
        }
        std::fs::write(dir.path().join("tokens.csv"), tokens).unwrap();
        let etcd_dir = tempfile::tempdir_in("/dev/shm").unwrap();
        let (etcd_port, peer_port) = (crate::free_port(), crate::free_port());
        let client_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd = Command::new("etcd")
            .args(["--name", "test", "--data-dir"])
            .arg(etcd_dir.path())
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("test={peer_url}")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("etcd.log")).unwrap())
            .spawn()
            .expect("etcd (Debian's etcd-server; .ci/run installs it)");
        let mut api = Self {
            dir,
            _etcd_dir: etcd_dir,
            etcd,
            apiserver: None,
            etcd_port,
            port: crate::free_port(),
        };
        api.write_kubeconfig("admin", ADMIN_TOKEN);
        api.start_apiserver().await;
        api
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts (again) the API server on the same port and etcd, and waits until it is ready.
    pub async fn start_apiserver(&mut self) {
        assert!(self.apiserver.is_none(), "the API server is running");
        let file = |name: &str| self.path(name).into_os_string().into_string().unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("apiserver.log"))
            .unwrap();
        let child = Command::new(binary())
            .arg(format!(
                "--etcd-servers=http://127.0.0.1:{}",
                self.etcd_port
            ))
            .arg("--bind-address=127.0.0.1")
            .arg("--advertise-address=127.0.0.1")
            .arg(format!("--secure-port={}", self.port))
            .arg("--insecure-port=0")
            .arg(format!("--tls-cert-file={}", file("server.crt")))
            .arg(format!("--tls-private-key-file={}", file("server.key")))
            .arg(format!("--token-auth-file={}", file("tokens.csv")))
            .arg("--authorization-mode=RBAC")
            .arg("--service-account-issuer=https://kubernetes.default.svc")
            .arg(format!("--service-account-key-file={}", file("sa.pub")))
            .arg(format!(
                "--service-account-signing-key-file={}",
                file("sa.key")
            ))
            .arg("--service-cluster-ip-range=10.0.0.0/24")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("kube-apiserver");
        self.apiserver = Some(child);
        self.wait_ready().await;
    }

    /// Stops the API server (etcd keeps the data), as an outage.
    pub fn stop_apiserver(&mut self) {
        if let Some(mut child) = self.apiserver.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    async fn wait_ready(&self) {
        let client = self.client().await;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let request = http::Request::get("/readyz").body(Vec::new()).unwrap();
            match client.request_text(request).await {
                Ok(text) if text.trim() == "ok" => return,
                _ if Instant::now() > deadline => panic!(
                    "the API server is not ready after 60 s; its log:\n{}",
                    std::fs::read_to_string(self.path("apiserver.log")).unwrap_or_default()
                ),
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    fn write_kubeconfig(&self, user: &str, token: &str) -> PathBuf {
        let path = self.path(&format!("{user}.kubeconfig"));
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: https://127.0.0.1:{port}\n    certificate-authority: {ca}\nusers:\n- name: {user}\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: {user}\ncurrent-context: test\n",
            port = self.port,
            ca = self.path("ca.crt").display(),
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A kubeconfig file for the admin.
    pub fn kubeconfig(&self) -> PathBuf {
        self.path("admin.kubeconfig")
    }

    /// A kubeconfig file for `user`, authenticated by `token` (see [`KubeApi::start_with_users`]).
    pub fn kubeconfig_for(&self, user: &str, token: &str) -> PathBuf {
        self.write_kubeconfig(user, token)
    }

    /// Starts a server with the deployment's RBAC (deploy/kubernetes/rbac.yaml, moved to the
    /// `default` namespace) applied, and users standing for its service accounts: the
    /// controller's and the node plugin's kubeconfigs grant exactly what the manifest grants.
    pub async fn start_deployed() -> Self {
        let users: Vec<(String, &str)> = [CONTROLLER_ACCOUNT, NODE_ACCOUNT]
            .iter()
            .map(|(account, token)| (format!("system:serviceaccount:default:{account}"), *token))
            .collect();
        let users: Vec<(&str, &str)> = users.iter().map(|(u, t)| (u.as_str(), *t)).collect();
        let api = Self::start_with_users(&users).await;
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/rbac.yaml");
        api.apply(&manifest, "default").await;
        api
    }

    /// The controller's kubeconfig (after [`KubeApi::start_deployed`]).
    pub fn controller_kubeconfig(&self) -> PathBuf {
        self.kubeconfig_for(CONTROLLER_ACCOUNT.0, CONTROLLER_ACCOUNT.1)
    }

    /// The port the API server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The node plugin's kubeconfig (after [`KubeApi::start_deployed`]).
    pub fn node_kubeconfig(&self) -> PathBuf {
        self.kubeconfig_for(NODE_ACCOUNT.0, NODE_ACCOUNT.1)
    }

    /// Creates the objects of a manifest, every namespace in it replaced by `namespace`.
    pub async fn apply(&self, manifest: &Path, namespace: &str) {
        use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
        let text = std::fs::read_to_string(manifest).unwrap();
        let client = self.client().await;
        for mut doc in serde_saphyr::from_multiple::<serde_json::Value>(&text).unwrap() {
            if let Some(subjects) = doc.get_mut("subjects").and_then(|s| s.as_array_mut()) {
                for subject in subjects {
                    subject["namespace"] = namespace.into();
                }
            }
            let mut object: DynamicObject = serde_json::from_value(doc).unwrap();
            let types = object.types.clone().expect("apiVersion and kind");
            let resource = ApiResource::from_gvk(&GroupVersionKind::try_from(&types).unwrap());
            let api = match object.metadata.namespace.is_some() {
                true => {
                    object.metadata.namespace = Some(namespace.into());
                    Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &resource)
                }
                false => Api::all_with(client.clone(), &resource),
            };
            api.create(&PostParams::default(), &object)
                .await
                .unwrap_or_else(|e| panic!("{}: {}: {e}", manifest.display(), types.kind));
        }
    }

    /// An admin client.
    pub async fn client(&self) -> kube::Client {
        let config = Kubeconfig::read_from(self.kubeconfig()).unwrap();
        let config = kube::Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
            .await
            .unwrap();
        kube::Client::try_from(config).unwrap()
    }
}

/// Objects the tests write, playing the parts of kubelet (Nodes), the provisioner (PVs) and
/// the external-attacher (VolumeAttachments).
pub mod objects {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{
        CSIPersistentVolumeSource, Node, ObjectReference, PersistentVolume, PersistentVolumeSpec,
    };
    use k8s_openapi::api::storage::v1::{
        VolumeAttachment, VolumeAttachmentSource, VolumeAttachmentSpec, VolumeAttachmentStatus,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};

    /// The label every node-local cleanup record carries: its volume.
    pub const RECORD_LABEL: &str = "node-local-cache.csi.io/volume";

    /// A cleanup record as a driver writes it: ConfigMap `nlc-vol-<name>`, labelled with the
    /// volume `label` and `driver` (none: the public driver's), its body `status`.
    pub fn cleanup_record(
        name: &str,
        label: &str,
        driver: Option<&str>,
        status: serde_json::Value,
    ) -> k8s_openapi::api::core::v1::ConfigMap {
        let mut labels = BTreeMap::from([(RECORD_LABEL.to_owned(), label.to_owned())]);
        if let Some(driver) = driver {
            labels.insert("modcsi.io/cleanup-driver".into(), driver.into());
        }
        k8s_openapi::api::core::v1::ConfigMap {
            metadata: ObjectMeta {
                name: Some(format!("nlc-vol-{name}")),
                labels: Some(labels),
                ..Default::default()
            },
            data: Some(BTreeMap::from([("status".into(), status.to_string())])),
            ..Default::default()
        }
    }

    /// The driver name test hosts serve as.
    pub const DRIVER: &str = "test.modcsi.io";

    pub async fn add_node(client: &kube::Client, name: &str) {
        let node = Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Node>::all(client.clone())
            .create(&PostParams::default(), &node)
            .await
            .unwrap();
    }

    /// The CSINode kubelet writes for node `name` when `driver` registers with `node_id`.
    pub async fn add_csinode(client: &kube::Client, name: &str, driver: &str, node_id: &str) {
        use k8s_openapi::api::storage::v1::{CSINode, CSINodeDriver, CSINodeSpec};
        let csinode = CSINode {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: CSINodeSpec {
                drivers: vec![CSINodeDriver {
                    name: driver.into(),
                    node_id: node_id.into(),
                    ..Default::default()
                }],
            },
        };
        Api::<CSINode>::all(client.clone())
            .create(&PostParams::default(), &csinode)
            .await
            .unwrap();
    }

    pub async fn delete_node(client: &kube::Client, name: &str) {
        Api::<Node>::all(client.clone())
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }

    /// A PV of `volume` (its CSI volume handle) bound to claim `default/<claim>`.
    pub async fn add_pv(client: &kube::Client, name: &str, volume: &str, mode: &str, claim: &str) {
        add_driver_pv(client, DRIVER, name, volume, mode, claim).await
    }

    /// [`add_pv`] of driver `driver`.
    pub async fn add_driver_pv(
        client: &kube::Client,
        driver: &str,
        name: &str,
        volume: &str,
        mode: &str,
        claim: &str,
    ) {
        let pv = PersistentVolume {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(PersistentVolumeSpec {
                access_modes: Some(vec![mode.into()]),
                capacity: Some(BTreeMap::from([("storage".into(), Quantity("1Gi".into()))])),
                csi: Some(CSIPersistentVolumeSource {
                    driver: driver.into(),
                    volume_handle: volume.into(),
                    ..Default::default()
                }),
                claim_ref: Some(ObjectReference {
                    kind: Some("PersistentVolumeClaim".into()),
                    namespace: Some("default".into()),
                    name: Some(claim.into()),
                    uid: Some(format!("uid-{claim}")),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        Api::<PersistentVolume>::all(client.clone())
            .create(&PostParams::default(), &pv)
            .await
            .unwrap();
    }

    /// Deletes the VolumeAttachment [`add_attachment`] made, as the attacher does after a detach.
    pub async fn delete_attachment(client: &kube::Client, pv: &str, node: &str) {
        Api::<VolumeAttachment>::all(client.clone())
            .delete(&format!("va-{pv}-{node}"), &DeleteParams::default())
            .await
            .unwrap();
    }

    /// A VolumeAttachment of PV `pv` to `node` by `attacher`, marked attached or not.
    pub async fn add_attachment(
        client: &kube::Client,
        attacher: &str,
        pv: &str,
        node: &str,
        attached: bool,
    ) {
        let api = Api::<VolumeAttachment>::all(client.clone());
        let va = VolumeAttachment {
            metadata: ObjectMeta {
                name: Some(format!("va-{pv}-{node}")),
                ..Default::default()
            },
            spec: VolumeAttachmentSpec {
                attacher: attacher.into(),
                node_name: node.into(),
                source: VolumeAttachmentSource {
                    persistent_volume_name: Some(pv.into()),
                    ..Default::default()
                },
            },
            status: None,
        };
        let mut va = api.create(&PostParams::default(), &va).await.unwrap();
        if attached {
            va.status = Some(VolumeAttachmentStatus {
                attached: true,
                ..Default::default()
            });
            let name = va.metadata.name.clone().unwrap();
            api.replace_status(&name, &PostParams::default(), &va)
                .await
                .unwrap();
        }
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        self.stop_apiserver();
        let _ = self.etcd.kill();
        let _ = self.etcd.wait();
    }
}
