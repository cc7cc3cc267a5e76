//! The embedded state store under a real crash: a writer process killed with SIGKILL in the
//! middle of its writes leaves a store that opens and holds a whole value, at least as new as
//! the last write it reported committed.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use modcsi::state::{EmbeddedStore, FLUSH_INTERVAL, StateStore};

#[test]
fn a_writer_killed_mid_write_leaves_a_consistent_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    for round in 0..3 {
        let mut writer = Command::new(env!("CARGO_BIN_EXE_store-writer"))
            .arg(&path)
            .stdout(Stdio::piped())
            .spawn()
            .expect("writer starts");
        let mut lines = BufReader::new(writer.stdout.take().unwrap()).lines();
        let mut last = 0u64;
        for _ in 0..(40 + round * 17) {
            last = lines
                .next()
                .expect("a committed write")
                .unwrap()
                .parse()
                .unwrap();
        }
        // SIGKILL: no destructor, no flush, whatever the writer was doing.
        writer.kill().unwrap();
        writer.wait().unwrap();

        let store = EmbeddedStore::open(&path).expect("the store opens after the crash");
        let entry = store.get("test", "k").unwrap().expect("the value is there");
        let text = String::from_utf8(entry.value).expect("whole text");
        assert_eq!(text.len(), 16 * 1024, "round {round}: a torn value");
        let first = &text[..16];
        assert!(
            text.as_bytes().chunks(16).all(|c| c == first.as_bytes()),
            "round {round}: two writes mixed"
        );
        let number: u64 = first.parse().unwrap();
        assert!(
            number >= last,
            "round {round}: write {last} was reported committed, the store holds {number}"
        );
        // Still writable.
        store
            .put(
                "test",
                "k",
                format!("{:016}", 0).repeat(1024).as_bytes(),
                Some(entry.version),
            )
            .unwrap();
    }
}

#[test]
fn a_deferred_write_is_on_disk_within_the_flush_interval() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let mut writer = Command::new(env!("CARGO_BIN_EXE_store-writer"))
        .arg(&path)
        .arg("soon")
        .stdout(Stdio::piped())
        .spawn()
        .expect("writer starts");
    let mut lines = BufReader::new(writer.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "written");
    std::thread::sleep(FLUSH_INTERVAL * 4);
    writer.kill().unwrap();
    writer.wait().unwrap();
    let store = EmbeddedStore::open(&path).unwrap();
    assert_eq!(
        store.get("test", "soon").unwrap().map(|e| e.value),
        Some(b"kept".to_vec())
    );
}
