//! The `ssh` capability: a backend runs a command on a machine its configuration names. The host
//! holds the private keys (never shown to the backend), checks every host key against a
//! known_hosts file or a pinned key (an unknown or changed key is refused), keeps one
//! authenticated connection per target and reuses it across calls, bounds each command's time
//! and output. Built on russh (a maintained pure-Rust SSH implementation; the `ring` backend
//! keeps the build free of C toolchains beyond cc).
//!
//! Configuration, under the host's own `ssh` section of `--backend-config`:
//!
//! ```toml
//! [ssh.targets.rds1]
//! address = "10.0.0.1"
//! port = 22                                 # default 22
//! user = "admin"
//! key = { secret-file = "/etc/modcsi/rds1.key" }   # an OpenSSH private key, no passphrase
//! known-hosts = "/etc/modcsi/known_hosts"   # or: host-key = "ssh-ed25519 AAAA…"
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use russh::ChannelMsg;
use russh::client::{self, Handle};
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};

/// Most output (stdout and stderr together) the host keeps from one command.
pub const MAX_OUTPUT: usize = 1 << 20;
/// Longest command a backend may send.
pub const MAX_COMMAND: usize = 8 << 10;
/// How long an idle connection is kept.
const IDLE: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SshError {
    #[error("no ssh target {0:?} in the configuration")]
    UnknownTarget(String),
    #[error("{0}")]
    HostKey(String),
    #[error("{0}")]
    Denied(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    TooLarge(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub exit_status: Option<u32>,
    pub stdout: String,
    pub stderr: String,
}

/// How a target's host key is checked.
#[derive(Debug, Clone)]
enum Trust {
    KnownHosts(PathBuf),
    Pinned(PublicKey),
}

#[derive(Debug)]
struct Target {
    name: String,
    address: String,
    port: u16,
    user: String,
    key: Arc<PrivateKey>,
    trust: Trust,
}

/// Checks the server's key while connecting; keeps the reason of a refusal for the error.
struct Checker {
    target: Arc<Target>,
    refusal: Arc<std::sync::Mutex<Option<String>>>,
}

impl client::Handler for Checker {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        offered: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let t = &self.target;
        let PublicKeyOrCertificate::PublicKey { key, .. } = offered else {
            *self.refusal.lock().unwrap() = Some(format!(
                "ssh target {}: the host offered a certificate; only plain host keys are checked",
                t.name
            ));
            return Ok(false);
        };
        let verdict = match &t.trust {
            Trust::Pinned(pinned) if pinned.key_data() == key.key_data() => Ok(()),
            Trust::Pinned(_) => Err(format!(
                "ssh target {} ({}:{}): host key {} is not the pinned one",
                t.name,
                t.address,
                t.port,
                key.fingerprint(Default::default())
            )),
            Trust::KnownHosts(file) => {
                match russh::keys::check_known_hosts_path(&t.address, t.port, key, file) {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(format!(
                        "ssh target {} ({}:{}): host key {} is not in {}",
                        t.name,
                        t.address,
                        t.port,
                        key.fingerprint(Default::default()),
                        file.display()
                    )),
                    Err(russh::keys::Error::KeyChanged { line }) => Err(format!(
                        "ssh target {} ({}:{}): host key {} differs from the one at {} line {line}: CHANGED",
                        t.name,
                        t.address,
                        t.port,
                        key.fingerprint(Default::default()),
                        file.display()
                    )),
                    Err(e) => Err(format!(
                        "ssh target {}: cannot read {}: {e}",
                        t.name,
                        file.display()
                    )),
                }
            }
        };
        match verdict {
            Ok(()) => Ok(true),
            Err(reason) => {
                *self.refusal.lock().unwrap() = Some(reason);
                Ok(false)
            }
        }
    }
}

/// A target's kept connection, behind a lock of its own: connecting to one target (which may
/// hang until the call's deadline on an unreachable host) never waits on another's.
type Slot = Arc<tokio::sync::Mutex<Option<Arc<Handle<Checker>>>>>;

/// Every configured target, and the connections to them.
pub struct SshClient {
    targets: HashMap<String, Arc<Target>>,
    sessions: std::sync::Mutex<HashMap<String, Slot>>,
    connects: AtomicU64,
}

impl Default for SshClient {
    /// No targets.
    fn default() -> Self {
        Self::from_config(&BTreeMap::new()).expect("an empty section is valid")
    }
}

impl std::fmt::Debug for SshClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshClient")
            .field("targets", &self.targets.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl SshClient {
    /// The targets of the configuration's `ssh.targets.*` keys (`section` holds them without
    /// the `ssh.` prefix).
    pub fn from_config(section: &BTreeMap<String, String>) -> Result<Self, String> {
        let mut names: Vec<&str> = section
            .keys()
            .filter_map(|k| k.strip_prefix("targets.")?.split('.').next())
            .collect();
        names.dedup();
        let mut targets = HashMap::new();
        for name in names {
            let get = |field: &str| section.get(&format!("targets.{name}.{field}"));
            let need = |field: &str| {
                get(field).ok_or_else(|| format!("ssh target {name}: {field} is required"))
            };
            let port = match get("port") {
                None => 22,
                Some(p) => p
                    .parse()
                    .map_err(|_| format!("ssh target {name}: port {p:?} is not a port"))?,
            };
            let key = russh::keys::decode_secret_key(need("key")?, None).map_err(|e| {
                format!("ssh target {name}: key is not an unencrypted OpenSSH private key: {e}")
            })?;
            let trust = match (get("known-hosts"), get("host-key")) {
                (Some(file), None) => Trust::KnownHosts(PathBuf::from(file)),
                (None, Some(pinned)) => {
                    let base64 = pinned.split_whitespace().nth(1).unwrap_or(pinned);
                    Trust::Pinned(russh::keys::parse_public_key_base64(base64).map_err(|e| {
                        format!("ssh target {name}: host-key is not an OpenSSH public key: {e}")
                    })?)
                }
                _ => {
                    return Err(format!(
                        "ssh target {name}: exactly one of known-hosts and host-key is required (unknown hosts are refused)"
                    ));
                }
            };
            let target = Target {
                name: name.to_owned(),
                address: need("address")?.clone(),
                port,
                user: need("user")?.clone(),
                key: Arc::new(key),
                trust,
            };
            targets.insert(name.to_owned(), Arc::new(target));
        }
        Ok(Self {
            targets,
            sessions: Default::default(),
            connects: AtomicU64::new(0),
        })
    }

    /// How many connections have been opened (each one a TCP connect, key exchange and
    /// authentication).
    pub fn connections_opened(&self) -> u64 {
        self.connects.load(Ordering::Relaxed)
    }

    async fn connect(&self, target: &Arc<Target>) -> Result<Arc<Handle<Checker>>, SshError> {
        let refusal = Arc::new(std::sync::Mutex::new(None));
        let config = Arc::new(client::Config {
            inactivity_timeout: Some(IDLE),
            keepalive_interval: Some(Duration::from_secs(30)),
            nodelay: true,
            ..Default::default()
        });
        let checker = Checker {
            target: target.clone(),
            refusal: refusal.clone(),
        };
        let t = target;
        self.connects.fetch_add(1, Ordering::Relaxed);
        let mut handle = client::connect(config, (t.address.as_str(), t.port), checker)
            .await
            .map_err(|e| match refusal.lock().unwrap().take() {
                Some(reason) => SshError::HostKey(reason),
                None => SshError::Unavailable(format!(
                    "ssh target {} ({}:{}): {e}",
                    t.name, t.address, t.port
                )),
            })?;
        let auth = handle
            .authenticate_publickey(&t.user, PrivateKeyWithHashAlg::new(t.key.clone(), None))
            .await
            .map_err(|e| SshError::Unavailable(format!("ssh target {}: {e}", t.name)))?;
        if !auth.success() {
            return Err(SshError::Denied(format!(
                "ssh target {}: {}@{}:{} refused the configured key",
                t.name, t.user, t.address, t.port
            )));
        }
        Ok(Arc::new(handle))
    }

    /// Runs `command` on the target named `target`, within `timeout`. A kept connection that
    /// turns out to be closed is replaced once, before the command is sent; a session that
    /// drops after it was sent is UNAVAILABLE (the command may or may not have run).
    pub async fn run(
        &self,
        target: &str,
        command: &str,
        timeout: Duration,
    ) -> Result<Output, SshError> {
        let t = self
            .targets
            .get(target)
            .ok_or_else(|| SshError::UnknownTarget(target.to_owned()))?
            .clone();
        let slot = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(target.to_owned())
            .or_default()
            .clone();
        let work = async {
            let mut fresh = false;
            loop {
                let handle = {
                    let mut kept = slot.lock().await;
                    match kept.as_ref() {
                        Some(h) if !h.is_closed() => h.clone(),
                        _ => {
                            let h = self.connect(&t).await?;
                            fresh = true;
                            *kept = Some(h.clone());
                            h
                        }
                    }
                };
                match handle.channel_open_session().await {
                    Ok(channel) => return exec(&t, channel, command).await,
                    // A live connection that refused one more session (the server's limit,
                    // say) stays for the calls using it; only a dead one is replaced, once.
                    Err(e) if fresh || !handle.is_closed() => {
                        return Err(SshError::Unavailable(format!(
                            "ssh target {}: cannot open a session: {e}",
                            t.name
                        )));
                    }
                    Err(_) => {
                        let mut kept = slot.lock().await;
                        if kept.as_ref().is_some_and(|h| Arc::ptr_eq(h, &handle)) {
                            *kept = None;
                        }
                    }
                }
            }
        };
        let started = std::time::Instant::now();
        let done = tokio::time::timeout(timeout, work).await;
        let outcome = match &done {
            Ok(Ok(_)) => "ok",
            Ok(Err(_)) => "error",
            Err(_) => "timeout",
        };
        crate::metrics::ssh_call(&t.name, outcome, started.elapsed());
        done.map_err(|_| {
            SshError::Timeout(format!(
                "ssh target {}: no answer within {timeout:?}",
                t.name
            ))
        })?
    }
}

async fn exec(
    t: &Target,
    mut channel: russh::Channel<client::Msg>,
    command: &str,
) -> Result<Output, SshError> {
    let dropped = |e: &dyn std::fmt::Display| {
        SshError::Unavailable(format!(
            "ssh target {}: the session dropped; the command may or may not have run: {e}",
            t.name
        ))
    };
    channel.exec(true, command).await.map_err(|e| dropped(&e))?;
    let (mut stdout, mut stderr, mut exit_status) = (Vec::new(), Vec::new(), None);
    let mut closed = false;
    while let Some(message) = channel.wait().await {
        match message {
            ChannelMsg::Data { data } => stdout.extend_from_slice(&data),
            ChannelMsg::ExtendedData { data, .. } => stderr.extend_from_slice(&data),
            ChannelMsg::ExitStatus { exit_status: s } => exit_status = Some(s),
            ChannelMsg::Close => {
                closed = true;
                break;
            }
            _ => {}
        }
        if stdout.len() + stderr.len() > MAX_OUTPUT {
            let _ = channel.close().await;
            return Err(SshError::TooLarge(format!(
                "ssh target {}: the command wrote more than {MAX_OUTPUT} bytes",
                t.name
            )));
        }
    }
    if !closed && exit_status.is_none() {
        return Err(dropped(&"no exit status"));
    }
    Ok(Output {
        exit_status,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}
