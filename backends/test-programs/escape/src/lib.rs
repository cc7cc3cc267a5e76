//! Test backend: `create-volume` for the trigger name tries to reach the node's filesystem and
//! the network, and panics with what it managed; the host must have granted neither.
fn try_to_escape() {
    let read = std::fs::read("/etc/hostname").map(|b| b.len());
    let list = std::fs::read_dir("/").map(|d| d.count());
    let write = std::fs::write("/tmp/escaped-from-wasm", b"x");
    let connect = std::net::TcpStream::connect("127.0.0.1:22").map(|_| ());
    let outcome = [
        ("read", read.is_ok()),
        ("list", list.is_ok()),
        ("write", write.is_ok()),
        ("connect", connect.is_ok()),
    ]
    .iter()
    .map(|(what, ok)| format!("{what}={}", if *ok { "ALLOWED" } else { "denied" }))
    .collect::<Vec<_>>()
    .join(" ");
    panic!("escape attempt: {outcome}");
}
hostile_backend::hostile_backend!(try_to_escape);
