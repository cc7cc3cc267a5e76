//! A real OpenSSH server on loopback for tests: its own host key, a client key for root, a
//! known_hosts file holding the host key, and (optionally) a forced command that every session
//! runs instead of the one sent (the command sent is in `SSH_ORIGINAL_COMMAND`). Stopped when
//! dropped. Needs `/usr/sbin/sshd` (Debian's openssh-server, which `.ci/run` installs).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Sshd {
    dir: tempfile::TempDir,
    /// The address it listens on (loopback unless started with [`Sshd::start_at`]).
    pub address: String,
    pub port: u16,
    child: Option<Child>,
    forced: Option<String>,
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "modcsi-test", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen");
    assert!(status.success());
}

/// The processes whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let child: u32 = e.file_name().to_str()?.parse().ok()?;
            let parent = crate::process::proc_stat(child)?
                .get(1)?
                .parse::<u32>()
                .ok()?;
            (parent == pid).then_some(child)
        })
        .collect()
}

impl Sshd {
    /// Starts a server on loopback; with `forced`, every session runs that command.
    pub fn start(forced: Option<&str>) -> Self {
        Self::start_at(forced, "127.0.0.1")
    }

    /// [`Sshd::start`] listening on `address` (e.g. one pods reach).
    pub fn start_at(forced: Option<&str>, address: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        keygen(&dir.path().join("host_key"));
        keygen(&dir.path().join("client_key"));
        let mut sshd = Self {
            dir,
            address: address.to_owned(),
            port: crate::free_port(),
            child: None,
            forced: forced.map(str::to_owned),
        };
        sshd.authorize(&sshd.path("client_key.pub"));
        sshd.run();
        sshd
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Lets the key in `public_key` log in as root (under the forced command, if any).
    pub fn authorize(&self, public_key: &Path) {
        let key = std::fs::read_to_string(public_key).unwrap();
        let options = match &self.forced {
            Some(command) => format!("command=\"{command}\",no-pty,no-port-forwarding "),
            None => "no-pty,no-port-forwarding ".into(),
        };
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("authorized_keys"))
            .unwrap();
        writeln!(file, "{options}{}", key.trim()).unwrap();
    }

    fn run(&mut self) {
        std::fs::create_dir_all("/run/sshd").unwrap();
        let config = format!(
            "Port {port}\nListenAddress {address}\nHostKey {dir}/host_key\n\
             AuthorizedKeysFile {dir}/authorized_keys\nPidFile {dir}/sshd.pid\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
             StrictModes no\nPermitRootLogin prohibit-password\nAllowUsers root\n\
             MaxSessions 64\nMaxStartups 64\nLogLevel ERROR\n",
            port = self.port,
            address = self.address,
            dir = self.dir.path().display()
        );
        std::fs::write(self.path("sshd_config"), config).unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(self.path("sshd_config"))
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(self.path("sshd.log")).unwrap())
            .spawn()
            .expect("/usr/sbin/sshd (openssh-server)");
        self.child = Some(child);
        let started = Instant::now();
        while TcpStream::connect((self.address.as_str(), self.port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "sshd did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server (every connection drops) and starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The per-connection processes leave the group (setsid): find them by parentage.
            let mut doomed = vec![child.id()];
            let mut i = 0;
            while i < doomed.len() {
                doomed.extend(children(doomed[i]));
                i += 1;
            }
            for pid in doomed {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.wait();
        }
    }

    /// The host's public key line (`ssh-ed25519 AAAA… comment`).
    pub fn host_key(&self) -> String {
        std::fs::read_to_string(self.path("host_key.pub"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// A known_hosts file that holds the server's host key.
    pub fn known_hosts(&self) -> PathBuf {
        let path = self.path("known_hosts");
        std::fs::write(
            &path,
            format!("[{}]:{} {}\n", self.address, self.port, self.host_key()),
        )
        .unwrap();
        path
    }

    /// A backend configuration (TOML) with one ssh target `name` for this server.
    pub fn target_config(&self, name: &str, trust: &str) -> String {
        format!(
            "[ssh.targets.{name}]\naddress = \"{address}\"\nport = {port}\nuser = \"root\"\n\
             key = {{ secret-file = \"{key}\" }}\n{trust}\n",
            address = self.address,
            port = self.port,
            key = self.path("client_key").display()
        )
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}
