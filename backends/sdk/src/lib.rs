//! What a modcsi backend author builds against: the bindings for the `modcsi:backend` world and a
//! few helpers. A backend implements `exports::modcsi::backend::identity::Guest` and
//! `exports::modcsi::backend::controller::Guest` on one type and registers it with
//! `modcsi_backend_sdk::export_backend!(MyBackend);`, then builds for `wasm32-wasip2`.

wit_bindgen::generate!({
    world: "backend",
    path: "../../wit",
    pub_export_macro: true,
    export_macro_name: "export_backend",
    default_bindings_module: "modcsi_backend_sdk",
});

pub use exports::modcsi::backend::{controller, identity};
pub use modcsi::backend::types;
pub use modcsi::backend::{cache, log};

use types::{Error, LogLevel};

/// Logs a message through the host, which attributes it to this backend.
pub fn log_at(level: LogLevel, message: &str, fields: &[(&str, &str)]) {
    let fields: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    log::log(level, message, &fields);
}

/// The error for an operation this backend does not offer.
pub fn unimplemented(operation: &str) -> Error {
    Error::Unimplemented(format!("{operation} is not supported by this backend"))
}

/// Looks a key up in a list of key-value pairs (parameters, context, secrets).
pub fn lookup<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}
