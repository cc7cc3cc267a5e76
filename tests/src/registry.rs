//! A real OCI registry on loopback: Debian's `docker-registry` (the CNCF distribution
//! registry, v2 API) over plain HTTP, its storage in a temporary directory the tests can reach
//! into to tamper with a blob. Limits: no TLS and no authentication (the host's client speaks
//! both, but these tests use plain HTTP on loopback and anonymous pulls).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = "/usr/bin/docker-registry";

pub struct TestRegistry {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// `127.0.0.1:<port>`.
    pub address: String,
}

impl TestRegistry {
    pub fn start() -> Self {
        assert!(
            std::path::Path::new(BINARY).is_file(),
            "{BINARY} is missing: apt-get install docker-registry (.ci/run does)"
        );
        let dir = tempfile::tempdir().unwrap();
        let address = format!("127.0.0.1:{}", crate::free_port());
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: {address}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new(BINARY)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry starts");
        let started = Instant::now();
        while std::net::TcpStream::connect(&address).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the registry did not listen on {address}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child: Some(child),
            dir,
            address,
        }
    }

    /// Where the registry keeps the blob `digest` (`sha256:<hex>`).
    pub fn blob(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Stops the registry: what is pulled from now on must come from a cache.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}
