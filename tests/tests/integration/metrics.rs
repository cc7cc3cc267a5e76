//! The metrics endpoint of a `modcsi serve` process (`--metrics-address`), scraped over HTTP as
//! Prometheus would, after real calls: CSI calls by method and code, backend calls, node
//! operations, and the node-local cleanup loop, which a driver starts only once it has a record.

use modcsi_tests::process::{ServeProcess, modcsi_binary};
use modcsi_tests::requests::{delete, publish, unpublish};
use modcsi_tests::{CreateVolume, NODE_LOCAL_CACHE, free_port};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `GET path` over a fresh connection: the status line and the body.
async fn get(port: u16, path: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// The value of the sample `series` (name and labels exactly as rendered), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn start(root: &std::path::Path, port: u16) -> ServeProcess {
    let address = format!("127.0.0.1:{port}");
    let flags = ["--node-id", "test-node", "--metrics-address", &address];
    ServeProcess::start_with(&modcsi_binary(), NODE_LOCAL_CACHE, root, &flags).await
}

#[tokio::test]
async fn a_scrape_counts_csi_backend_and_node_work_by_outcome() {
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = start(root.path(), port).await;
    let (mut c, mut n) = (server.client.controller.clone(), server.client.node.clone());
    let volume = c.create("pv-scraped").await;
    let target = server.targets().join("pod").display().to_string();
    n.node_publish_volume(publish(&volume, &target, false))
        .await
        .unwrap();
    n.node_unpublish_volume(unpublish(&volume.volume_id, &target))
        .await
        .unwrap();
    c.delete_volume(delete(&volume.volume_id)).await.unwrap();
    // A refusal: an id that cannot be a volume's.
    c.delete_volume(delete("../escape")).await.unwrap_err();

    let (status, text) = get(port, "/metrics").await;
    assert!(status.contains(" 200 "), "{status}");
    for (series, value) in [
        (
            r#"modcsi_csi_operations_total{method="CreateVolume",code="OK"}"#,
            1.0,
        ),
        (
            r#"modcsi_csi_operations_total{method="DeleteVolume",code="OK"}"#,
            1.0,
        ),
        (
            r#"modcsi_csi_operations_total{method="DeleteVolume",code="INVALID_ARGUMENT"}"#,
            1.0,
        ),
        (
            r#"modcsi_csi_operation_duration_seconds_count{method="NodePublishVolume"}"#,
            1.0,
        ),
        (
            r#"modcsi_backend_calls_total{backend="node-local-cache",operation="create-volume",outcome="ok"}"#,
            1.0,
        ),
        (
            r#"modcsi_node_operations_total{operation="publish",outcome="ok"}"#,
            1.0,
        ),
        (
            r#"modcsi_node_operations_total{operation="unpublish",outcome="ok"}"#,
            1.0,
        ),
    ] {
        assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
    }
    let peak = sample(
        &text,
        r#"modcsi_backend_call_memory_bytes_sum{backend="node-local-cache",operation="create-volume"}"#,
    );
    assert!(peak.is_some_and(|b| b > 0.0), "{text}");
    assert!(get(port, "/healthz").await.0.contains(" 200 "));
    assert!(get(port, "/other").await.0.contains(" 404 "));
}

#[tokio::test]
async fn the_cleanup_loop_starts_only_once_the_driver_has_a_node_local_record() {
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = start(root.path(), port).await;
    let (mut c, mut n) = (server.client.controller.clone(), server.client.node.clone());
    // A volume created and deleted without ever reaching a node leaves no record: no loop.
    let unused = c.create("pv-unused").await;
    c.delete_volume(delete(&unused.volume_id)).await.unwrap();
    let loop_ran = |text: &str| text.contains("modcsi_cleanup_records{");
    assert!(!loop_ran(&get(port, "/metrics").await.1));

    // A node publish records the node's directory: the loop starts and counts the record.
    let volume = c.create("pv-used").await;
    let target = server.targets().join("pod").display().to_string();
    n.node_publish_volume(publish(&volume, &target, false))
        .await
        .unwrap();
    let series = r#"modcsi_cleanup_records{state="active"}"#;
    for _ in 0..100 {
        if sample(&get(port, "/metrics").await.1, series) == Some(1.0) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{series} never became 1");
}
