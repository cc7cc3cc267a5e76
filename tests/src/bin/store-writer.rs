//! Test helper: writes one key of an embedded state store in a loop, printing the number of
//! every committed write, until it is killed. `store-writer STORE_PATH`; with `soon`, writes
//! once with `Durability::Soon`, prints `written` and waits to be killed.

use std::io::Write;

use modcsi::state::{Durability, EmbeddedStore, StateStore};

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: store-writer STORE_PATH [soon]");
    let store = EmbeddedStore::open(std::path::Path::new(&path)).expect("store opens");
    if std::env::args().nth(2).as_deref() == Some("soon") {
        store
            .put_with("test", "soon", b"kept", None, Durability::Soon)
            .expect("write");
        println!("written");
        loop {
            std::thread::park();
        }
    }
    let mut version = store.get("test", "k").expect("readable").map(|e| e.version);
    let mut out = std::io::stdout().lock();
    for i in 0u64.. {
        // 16 KiB of one repeated number: a torn write would mix two.
        let value = format!("{i:016}").repeat(1024);
        version = Some(
            store
                .put("test", "k", value.as_bytes(), version)
                .expect("write"),
        );
        writeln!(out, "{i}")
            .and_then(|()| out.flush())
            .expect("stdout");
    }
}
