//! Test helper: writes one key of an embedded state store in a loop, printing the number of
//! every committed write, until it is killed. `store-writer STORE_PATH`.

use std::io::Write;

use modcsi::state::{EmbeddedStore, StateStore};

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: store-writer STORE_PATH");
    let store = EmbeddedStore::open(std::path::Path::new(&path)).expect("store opens");
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
