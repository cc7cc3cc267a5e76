//! The `ssh` capability against a real OpenSSH server on loopback: commands run with their
//! output and exit status; unknown, changed or unpinned host keys and refused client keys are
//! errors of their own; time and output are bounded; one connection serves many calls and a
//! dropped one is replaced; a backend sees neither the keys nor the ssh configuration.

use std::time::Duration;

use modcsi::runtime::capabilities::BackendConfig;
use modcsi::runtime::capabilities::ssh::SshError;
use modcsi_tests::sshd::Sshd;

fn config(sshd: &Sshd, trust: &str) -> BackendConfig {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("backend.toml");
    std::fs::write(
        &path,
        format!("router = \"rds\"\n{}", sshd.target_config("rds", trust)),
    )
    .unwrap();
    BackendConfig::load(&path).unwrap()
}

fn known_hosts(sshd: &Sshd) -> String {
    format!("known-hosts = \"{}\"", sshd.known_hosts().display())
}

const SECOND: Duration = Duration::from_secs(10);

#[tokio::test]
async fn commands_run_with_their_output_over_one_kept_connection() {
    let sshd = Sshd::start(None);
    let config = config(&sshd, &known_hosts(&sshd));
    let ssh = config.ssh();
    let out = ssh
        .run("rds", "echo hello; echo oops >&2; exit 3", SECOND)
        .await
        .unwrap();
    assert_eq!(
        (out.exit_status, out.stdout.as_str(), out.stderr.as_str()),
        (Some(3), "hello\n", "oops\n")
    );
    for i in 0..20 {
        let out = ssh.run("rds", &format!("echo {i}"), SECOND).await.unwrap();
        assert_eq!(out.stdout, format!("{i}\n"));
    }
    assert_eq!(
        ssh.connections_opened(),
        1,
        "one connection for 21 commands"
    );
    // The backend cannot read the host's ssh section, key included.
    assert_eq!(config.get("router"), Some("rds"));
    assert!(config.keys().all(|k| !k.starts_with("ssh")));
    assert_eq!(
        ssh.run("other", "true", SECOND).await.unwrap_err(),
        SshError::UnknownTarget("other".into())
    );
}

#[tokio::test]
async fn unknown_changed_and_unpinned_host_keys_are_refused() {
    let sshd = Sshd::start(None);
    let other = Sshd::start(None);
    // The known_hosts file knows another host only.
    let unknown = config(&sshd, &known_hosts(&other));
    let err = unknown.ssh().run("rds", "true", SECOND).await.unwrap_err();
    assert!(
        matches!(&err, SshError::HostKey(m) if m.contains("is not in")),
        "{err:?}"
    );
    // The known_hosts file holds another key for this very host and port: changed.
    let changed_file = sshd.path("changed_known_hosts");
    std::fs::write(
        &changed_file,
        format!("[127.0.0.1]:{} {}\n", sshd.port, other.host_key()),
    )
    .unwrap();
    let changed = config(
        &sshd,
        &format!("known-hosts = \"{}\"", changed_file.display()),
    );
    let err = changed.ssh().run("rds", "true", SECOND).await.unwrap_err();
    assert!(
        matches!(&err, SshError::HostKey(m) if m.contains("CHANGED")),
        "{err:?}"
    );
    // Pinned: the right key works, another is refused.
    let pinned = config(&sshd, &format!("host-key = \"{}\"", sshd.host_key()));
    assert!(pinned.ssh().run("rds", "true", SECOND).await.is_ok());
    let wrong = config(&sshd, &format!("host-key = \"{}\"", other.host_key()));
    let err = wrong.ssh().run("rds", "true", SECOND).await.unwrap_err();
    assert!(
        matches!(&err, SshError::HostKey(m) if m.contains("not the pinned one")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_key_the_server_does_not_know_is_denied() {
    let sshd = Sshd::start(None);
    let stranger = Sshd::start(None);
    // This server's known host, the other server's client key.
    let text = sshd.target_config("rds", &known_hosts(&sshd)).replace(
        &sshd.path("client_key").display().to_string(),
        &stranger.path("client_key").display().to_string(),
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("b.toml"), text).unwrap();
    let config = BackendConfig::load(&dir.path().join("b.toml")).unwrap();
    let err = config.ssh().run("rds", "true", SECOND).await.unwrap_err();
    assert!(matches!(err, SshError::Denied(_)), "{err:?}");
}

#[tokio::test]
async fn time_and_output_are_bounded() {
    let sshd = Sshd::start(None);
    let config = config(&sshd, &known_hosts(&sshd));
    let err = config
        .ssh()
        .run("rds", "sleep 5", Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(err, SshError::Timeout(_)), "{err:?}");
    let err = config
        .ssh()
        .run("rds", "head -c 2000000 /dev/zero", SECOND)
        .await
        .unwrap_err();
    assert!(matches!(err, SshError::TooLarge(_)), "{err:?}");
    // The connection is still good for the next command.
    assert_eq!(
        config
            .ssh()
            .run("rds", "echo ok", SECOND)
            .await
            .unwrap()
            .stdout,
        "ok\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_target_holds_up_no_other() {
    let sshd = Sshd::start(None);
    // A host that takes connections and never says a word: the key exchange hangs.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("backend.toml");
    let hung = sshd
        .target_config("hung", &known_hosts(&sshd))
        .replace(&format!("port = {}", sshd.port), &format!("port = {port}"));
    std::fs::write(
        &path,
        format!("{}{hung}", sshd.target_config("rds", &known_hosts(&sshd))),
    )
    .unwrap();
    let config = std::sync::Arc::new(BackendConfig::load(&path).unwrap());
    let stuck = {
        let config = config.clone();
        tokio::spawn(async move { config.ssh().run("hung", "true", SECOND).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    let out = config
        .ssh()
        .run("rds", "echo fine", Duration::from_secs(3))
        .await
        .unwrap();
    assert_eq!(out.stdout, "fine\n");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(!stuck.is_finished(), "the hung target is still connecting");
    stuck.abort();
    drop(silent);
}

#[tokio::test]
async fn a_dropped_connection_is_replaced_by_the_next_call() {
    let mut sshd = Sshd::start(None);
    let config = config(&sshd, &known_hosts(&sshd));
    assert!(config.ssh().run("rds", "true", SECOND).await.is_ok());
    sshd.restart();
    // The kept connection is dead; the call opens a new one (or, if the drop is noticed only
    // once the command was sent, says the session dropped), and the one after certainly works.
    match config.ssh().run("rds", "echo again", SECOND).await {
        Ok(out) => assert_eq!(out.stdout, "again\n"),
        Err(err) => assert!(matches!(err, SshError::Unavailable(_)), "{err:?}"),
    }
    assert_eq!(
        config
            .ssh()
            .run("rds", "echo later", SECOND)
            .await
            .unwrap()
            .stdout,
        "later\n"
    );
    assert_eq!(config.ssh().connections_opened(), 2);
}

#[tokio::test]
async fn a_backend_runs_commands_through_the_import_and_never_sees_the_key() {
    use modcsi::proto::CreateVolumeRequest;
    let sshd = Sshd::start(None);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backend.toml");
    std::fs::write(&file, sshd.target_config("rds", &known_hosts(&sshd))).unwrap();
    let host = modcsi_tests::TestHost::start_with(modcsi_tests::RULE_BREAKER, |c| {
        c.backend_config = Some(file.clone())
    })
    .await;
    let mut controller = host.client.controller.clone();
    let create = |name: &str, params: &[(&str, &str)]| {
        let mut r: CreateVolumeRequest = modcsi_tests::requests::create(name);
        for (k, v) in params {
            r.parameters.insert((*k).into(), (*v).into());
        }
        r
    };
    let context = controller
        .create_volume(create(
            "via-ssh",
            &[
                ("break", "ssh"),
                ("command", "echo from-the-router; exit 4"),
            ],
        ))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap()
        .volume_context;
    assert_eq!(context["ssh-stdout"], "from-the-router\n");
    assert_eq!(context["ssh-exit"], "Some(4)");
    // Everything the backend can read of its configuration: no ssh key, no ssh key path.
    let context = controller
        .create_volume(create("config", &[("break", "config")]))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap()
        .volume_context;
    assert!(context.keys().all(|k| !k.contains("ssh")), "{context:?}");
    let key = std::fs::read_to_string(sshd.path("client_key")).unwrap();
    assert!(context.values().all(|v| !v.contains(key.trim())));
}
