//! Every gRPC client can talk to the socket, not only those that send a URI authority: a stock
//! Python grpcio client (gRPC C-core sends the socket path as `:authority`) and a raw HTTP/2
//! request whose authority is a kubelet plugin socket path.

use std::process::Command;

use modcsi_tests::{NODE_LOCAL_CACHE, TestHost};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn socket_path(host: &TestHost) -> String {
    host.endpoint.trim_start_matches("unix://").to_owned()
}

#[tokio::test]
async fn a_python_grpcio_client_gets_answers() {
    let host = TestHost::start(NODE_LOCAL_CACHE).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/grpcio_probe.py");
    let socket = socket_path(&host);
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .arg(socket)
            .output()
            .expect("python3 runs (CI installs grpcio)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "grpcio client failed: {}{}",
        stdout,
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        ["test.modcsi.io", "probe ok"]
    );
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend([kind, flags]);
    f.extend(stream.to_be_bytes());
    f.extend(payload);
    f
}

#[tokio::test]
async fn a_raw_http2_request_with_a_socket_path_authority_is_served() {
    let host = TestHost::start(NODE_LOCAL_CACHE).await;
    let mut stream = tokio::net::UnixStream::connect(socket_path(&host))
        .await
        .unwrap();
    let mut encoder = loona_hpack::Encoder::new();
    let headers: Vec<(&[u8], &[u8])> = vec![
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", b"/csi.v1.Identity/GetPluginInfo"),
        (b":authority", b"/var/lib/kubelet/plugins/x/csi.sock"),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
    ];
    let mut request = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    request.extend(frame(0x4, 0, 0, &[])); // SETTINGS
    request.extend(frame(0x1, 0x4, 1, &encoder.encode(headers))); // HEADERS, END_HEADERS
    request.extend(frame(0x0, 0x1, 1, &[0, 0, 0, 0, 0])); // DATA: one empty message, END_STREAM
    stream.write_all(&request).await.unwrap();

    // Read frames until the stream ends (trailers with END_STREAM) or is reset.
    let mut decoder = loona_hpack::Decoder::new();
    let mut headers_seen = vec![];
    let mut body = vec![];
    let mut buf = vec![];
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    'frames: loop {
        while buf.len() >= 9 {
            let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
            if buf.len() < 9 + len {
                break;
            }
            let (kind, flags, id) = (
                buf[3],
                buf[4],
                u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]),
            );
            let payload = buf[9..9 + len].to_vec();
            buf.drain(..9 + len);
            match (kind, id) {
                (0x3, 1) => panic!("the stream was reset (RST_STREAM {payload:?})"),
                (0x1, 1) => {
                    headers_seen.extend(decoder.decode(&payload).unwrap());
                    if flags & 0x1 != 0 {
                        break 'frames;
                    }
                }
                (0x0, 1) => body.extend(payload),
                (0x4, 0) if flags & 0x1 == 0 => {
                    stream.write_all(&frame(0x4, 0x1, 0, &[])).await.unwrap()
                }
                _ => {}
            }
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .expect("an answer")
            .unwrap();
        assert!(
            n > 0,
            "the server closed the connection; headers so far {headers_seen:?}"
        );
        buf.extend_from_slice(&chunk[..n]);
    }
    let get = |name: &[u8]| {
        headers_seen
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(get(b":status"), Some(b"200".to_vec()));
    assert_eq!(get(b"grpc-status"), Some(b"0".to_vec()), "{headers_seen:?}");
    assert!(
        body.windows(14).any(|w| w == b"test.modcsi.io"),
        "the plugin info names the driver"
    );
}
