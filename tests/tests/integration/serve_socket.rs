//! The CSI socket: a live server's socket is never taken over, a stale one left by a crash is
//! replaced, and a clean shutdown removes it. The serving process never compiles its backend.

use std::time::Duration;

use modcsi::csi::Mode;
use modcsi::serve::{ServeConfig, ServeError, Server};
use modcsi_tests::{NODE_LOCAL_CACHE, TestHost, component, shared_cache_dir};

fn config(endpoint: &str, state: &std::path::Path) -> ServeConfig {
    ServeConfig {
        backend: component(NODE_LOCAL_CACHE),
        driver_name: "test.modcsi.io".into(),
        node_id: "n1".into(),
        endpoint: endpoint.into(),
        mode: Mode::All,
        state_dir: state.to_owned(),
        cache_dir: shared_cache_dir(),
        call_timeout: Duration::from_secs(5),
        memory_limit_mib: 64,
        max_concurrent_calls: 2,
        backend_config: None,
        kubelet_root: state.join("kubelet"),
        max_node_operations: 2,
        devices: Default::default(),
        local_dir_root: None,
        project_ids: modcsi::node::quota::DEFAULT_PROJECT_IDS,
        cluster: Default::default(),
    }
}

#[tokio::test]
async fn a_second_host_on_the_same_state_dir_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let first = Server::prepare(config(
        &format!("unix://{}/a.sock", dir.path().display()),
        &state,
    ))
    .await
    .expect("first host starts");
    let err = Server::prepare(config(
        &format!("unix://{}/b.sock", dir.path().display()),
        &state,
    ))
    .await
    .err()
    .expect("second host refused");
    let message = err.to_string();
    assert!(
        message.contains("in use by another modcsi host")
            && message.contains(&std::process::id().to_string()),
        "{message}"
    );
    assert!(
        !dir.path().join("b.sock").exists(),
        "the refused host bound no socket"
    );
    drop(first);
}

#[tokio::test]
async fn a_live_socket_is_refused() {
    let host = TestHost::start(NODE_LOCAL_CACHE).await;
    let state = tempfile::tempdir().unwrap();
    let err = Server::prepare(config(&host.endpoint, state.path()))
        .await
        .err()
        .expect("refused");
    assert!(matches!(err, ServeError::InUse(_)), "{err}");
}

#[tokio::test]
async fn a_stale_socket_is_replaced_and_shutdown_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("csi.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap()); // a crash leaves this behind
    assert!(socket.exists());
    let endpoint = format!("unix://{}", socket.display());
    let server = Server::prepare(config(&endpoint, &dir.path().join("state")))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async {
        let _ = rx.await;
    }));
    modcsi::client::CsiClient::connect(&endpoint)
        .await
        .expect("serving on the replaced socket");
    tx.send(()).unwrap();
    running.await.unwrap().unwrap();
    assert!(!socket.exists(), "a clean shutdown removes the socket");
}

#[tokio::test]
async fn a_path_that_is_not_a_socket_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("important.txt");
    std::fs::write(&file, b"keep me").unwrap();
    let endpoint = format!("unix://{}", file.display());
    let err = Server::prepare(config(&endpoint, &dir.path().join("state")))
        .await
        .err()
        .expect("refused");
    assert!(matches!(err, ServeError::NotASocket { .. }), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
}

#[tokio::test]
async fn a_controller_needs_no_kubelet_directory() {
    // In its pod the root filesystem is read-only and there is no kubelet directory; a node
    // cannot do without one.
    let unreachable = std::path::PathBuf::from("/proc/no-kubelet-here");
    let host = TestHost::start_with(NODE_LOCAL_CACHE, |c| {
        c.mode = Mode::Controller;
        c.kubelet_root = unreachable.clone();
    })
    .await;
    host.create("pv-controller-only").await;
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("unix://{}/csi.sock", dir.path().display());
    let mut node = config(&endpoint, &dir.path().join("state"));
    node.mode = Mode::Node;
    node.kubelet_root = unreachable;
    assert!(matches!(
        Server::prepare(node).await,
        Err(ServeError::KubeletRoot(_))
    ));
}

/// `modcsi serve` compiles its backend in a child process: the long-running driver only loads
/// the compiled artifact, so the compiler's code and memory never enter it.
#[test]
fn serve_leaves_compiling_to_a_child_process() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let mut child = std::process::Command::new(modcsi_tests::process::modcsi_binary())
        .args([
            "serve",
            "--driver-name",
            "test.modcsi.io",
            "--log-format",
            "json",
        ])
        .arg("--backend")
        .arg(component(NODE_LOCAL_CACHE))
        .arg(format!(
            "--endpoint=unix://{}/csi.sock",
            dir.path().display()
        ))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--kubelet-root")
        .arg(dir.path())
        .arg("--cache-dir")
        .arg(&cache)
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let loaded = lines
        .map_while(Result::ok)
        .find(|l| l.contains("backend loaded"));
    let _ = child.kill();
    let _ = child.wait();
    let loaded = loaded.expect("the server logs its backend");
    let line: serde_json::Value = serde_json::from_str(&loaded).unwrap();
    assert_eq!(line["fields"]["origin"], "Cached", "{loaded}");
    let artifacts = std::fs::read_dir(&cache).unwrap().count();
    assert_eq!(artifacts, 1, "the child wrote the compiled component");
}
