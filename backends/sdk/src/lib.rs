//! What a modcsi backend author builds against: the bindings for the `modcsi:backend@0.2.1`
//! world and a few helpers.
//!
//! The required core: implement `identity::Guest` and `controller::Guest` on one type and
//! register it with `modcsi_backend_sdk::export_backend!(MyBackend);`. An optional interface
//! (publish, expand, list-volumes, capacity, snapshots, node-identity, get-volume, locate) is
//! exported by generating its bindings in the backend crate (wit-bindgen generates only the
//! types a world uses, so these get their own copy of the types they need):
//!
//! ```ignore
//! wit_bindgen::generate!({
//!     inline: "package my:backend; world extra { export modcsi:backend/locate@0.2.1; }",
//!     path: "path/to/wit/0.2.1",
//!     generate_all,
//! });
//! export!(MyBackend);
//! ```
//!
//! The host detects what is exported and advertises exactly that. Build for `wasm32-wasip2`.

wit_bindgen::generate!({
    world: "backend",
    path: "../../wit/0.2.1",
    pub_export_macro: true,
    export_macro_name: "export_backend",
    default_bindings_module: "modcsi_backend_sdk",
});

pub use exports::modcsi::backend::{controller, identity};
pub use modcsi::backend::types;
pub use modcsi::backend::{cache, config, host, log, ssh, store};

use types::LogLevel;

/// Logs a message through the host, which attributes it to this backend.
pub fn log_at(level: LogLevel, message: &str, fields: &[(&str, &str)]) {
    let fields: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    log::log(level, message, &fields);
}

/// Looks a key up in a list of key-value pairs (parameters, context, secrets).
pub fn lookup<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}
