//! A host running a backend against the fake Emma API: the backend configuration (the
//! host-owned `http` target with the test CA and the credentials as secret files) and a
//! [`TestHost`] whose node looks for disks where the fake links them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use modcsi::node::device::{AllowedDisks, DeviceDirs};

use super::{FakeEmma, FakeEmmaOptions};
use crate::TestHost;

/// The Emma backend (`backends/emma`).
pub const EMMA: &str = "emma";

/// The fake API and a host running the Emma backend against it.
pub struct EmmaRig {
    pub fake: FakeEmma,
    pub host: TestHost,
    _files: tempfile::TempDir,
}

impl EmmaRig {
    pub async fn start(options: FakeEmmaOptions, call_timeout: Duration) -> Self {
        let fake = FakeEmma::start(options).await;
        let files = tempfile::tempdir().unwrap();
        let config = host_config(&fake, files.path(), fake.client_secret());
        let host = start_host(EMMA, &fake, config, call_timeout, None).await;
        Self {
            fake,
            host,
            _files: files,
        }
    }
}

/// Writes the backend configuration for `fake` into `dir` (the client secret's file holding
/// `client_secret`) and returns its path. The node is VM 101, and so is `test-node`.
pub fn host_config(fake: &FakeEmma, dir: &Path, client_secret: &str) -> PathBuf {
    std::fs::write(dir.join("client-id"), fake.client_id()).unwrap();
    std::fs::write(dir.join("client-secret"), format!("{client_secret}\n")).unwrap();
    let path = dir.join("backend.toml");
    std::fs::write(
        &path,
        format!(
            "[emma]\nvm-id = \"101\"\nnodes.test-node = \"101\"\n\n\
             [http.targets.emma]\nbase-url = \"{}\"\nca-file = \"{}\"\n\
             [http.targets.emma.secrets]\n\
             client-id = {{ secret-file = \"{}\" }}\n\
             client-secret = {{ secret-file = \"{}\" }}\n",
            fake.base_url(),
            fake.ca_file().display(),
            dir.join("client-id").display(),
            dir.join("client-secret").display(),
        ),
    )
    .unwrap();
    path
}

/// A host running `backend` with `config`, its node finding disks in the fake's by-id
/// directory (`virtio-` names allowed); `state` keeps its state directory across hosts.
pub async fn start_host(
    backend: &str,
    fake: &FakeEmma,
    config: PathBuf,
    call_timeout: Duration,
    state: Option<PathBuf>,
) -> TestHost {
    let by_id = fake.by_id().to_owned();
    TestHost::start_with(backend, move |c| {
        c.backend_config = Some(config);
        c.call_timeout = call_timeout;
        if let Some(state) = state {
            c.state_dir = state;
        }
        c.devices = DeviceDirs {
            by_id,
            wait: Duration::from_secs(5),
            allowed_disks: AllowedDisks {
                by_id_prefixes: vec!["virtio-".into()],
                serials: vec![],
            },
            ..Default::default()
        };
    })
    .await
}
