//! What a modcsi backend author builds against: the bindings for the `modcsi:backend@0.2.2`
//! contract, one export macro per interface, and a few helpers.
//!
//! The required core: implement [`identity::Guest`] and [`controller::Guest`] on one type and
//! register it with [`export_backend!`]. Each optional interface has its own trait and its own
//! export macro; export any subset of them next to the core. Every trait uses the one set of
//! contract types in [`types`], so a backend never converts between copies of them:
//!
//! ```no_run
//! use modcsi_backend_sdk::types::{Attachment, Error, KeyValues};
//! # use modcsi_backend_sdk::types::{BackendInfo, Capability, CreateRequest, Validation, Volume};
//!
//! struct MyBackend;
//!
//! impl modcsi_backend_sdk::identity::Guest for MyBackend {
//!     // info, probe
//! #   fn info() -> BackendInfo { unimplemented!() }
//! #   fn probe() -> Result<(), Error> { Ok(()) }
//! }
//! impl modcsi_backend_sdk::controller::Guest for MyBackend {
//!     // create-volume, delete-volume, validate-capabilities
//! #   fn create_volume(_: CreateRequest) -> Result<Volume, Error> { unimplemented!() }
//! #   fn delete_volume(_: String, _: KeyValues) -> Result<(), Error> { Ok(()) }
//! #   fn validate_capabilities(
//! #       _: String, _: Vec<Capability>, _: KeyValues, _: KeyValues, _: KeyValues,
//! #   ) -> Result<Validation, Error> { unimplemented!() }
//! }
//!
//! impl modcsi_backend_sdk::locate::Guest for MyBackend {
//!     fn locate(volume_id: String, context: KeyValues) -> Result<Attachment, Error> {
//!         Ok(Attachment::LocalDir)
//!     }
//! }
//!
//! modcsi_backend_sdk::export_backend!(MyBackend);
//! modcsi_backend_sdk::export_locate!(MyBackend);
//! ```
//!
//! | interface | trait | export macro |
//! |---|---|---|
//! | identity, controller (required) | [`identity::Guest`], [`controller::Guest`] | [`export_backend!`] |
//! | publish | [`publish::Guest`] | [`export_publish!`] |
//! | expand | [`expand::Guest`] | [`export_expand!`] |
//! | list-volumes | [`list_volumes::Guest`] | [`export_list_volumes!`] |
//! | capacity | [`capacity::Guest`] | [`export_capacity!`] |
//! | snapshots | [`snapshots::Guest`] | [`export_snapshots!`] |
//! | node-identity | [`node_identity::Guest`] | [`export_node_identity!`] |
//! | get-volume | [`get_volume::Guest`] | [`export_get_volume!`] |
//! | locate | [`locate::Guest`] | [`export_locate!`] |
//!
//! The component exports exactly the interfaces whose macros were invoked; the host detects
//! them by their presence and advertises exactly that. A backend crate depends on this one
//! only (not on `wit-bindgen`) and is a `cdylib` built for `wasm32-wasip2`.
//!
//! Helpers: [`log_at`] (logging), [`lookup`] (key-value lists), [`page`] (list-volumes and
//! list-snapshots pages), [`unix_seconds`] (the clock), [`http`] (blocking HTTPS requests to the
//! host's configured targets, credentials as placeholders), [`pending`] (long operations that
//! finish across CSI retries and host restarts), and `From` conversions of the [`store`],
//! [`ssh`] and [`http`] errors into [`types::Error`], so `?` works on those imports.

wit_bindgen::generate!({
    world: "backend",
    path: "../../wit/0.2.2",
    pub_export_macro: true,
    export_macro_name: "export_backend",
    default_bindings_module: "modcsi_backend_sdk",
    // The optional interfaces' types too: their bindings below use these.
    generate_unused_types: true,
    // The standard WASI interfaces the world imports (wasi:http and what it uses).
    generate_all,
});

pub use exports::modcsi::backend::{controller, identity};
pub use modcsi::backend::types;
pub use modcsi::backend::{cache, config, host, log, node, ssh, store};

pub mod http;
pub mod pending;

pub use optional::capacity::exports::modcsi::backend::capacity;
pub use optional::expand::exports::modcsi::backend::expand;
pub use optional::get_volume::exports::modcsi::backend::get_volume;
pub use optional::list_volumes::exports::modcsi::backend::list_volumes;
pub use optional::locate::exports::modcsi::backend::locate;
pub use optional::node_identity::exports::modcsi::backend::node_identity;
pub use optional::publish::exports::modcsi::backend::publish;
pub use optional::snapshots::exports::modcsi::backend::snapshots;

/// The bindings of each optional interface, generated from a world that exports only it, with
/// the contract's types mapped onto [`types`]. One world per interface keeps them independent:
/// the export macro of each carries the component-type section naming that one export.
#[doc(hidden)]
pub mod optional {
    pub mod publish {
        wit_bindgen::generate!({
            inline: "package modcsi:backend-sdk; world publish { export modcsi:backend/publish@0.2.2; }",
            path: "../../wit/0.2.2",
            with: { "modcsi:backend/types@0.2.2": crate::types },
            pub_export_macro: true,
            export_macro_name: "export",
            default_bindings_module: "modcsi_backend_sdk::optional::publish",
        });
    }
    pub mod expand {
        wit_bindgen::generate!({
            inline: "package modcsi:backend-sdk; world expand { export modcsi:backend/expand@0.2.2; }",
            path: "../../wit/0.2.2",
            with: { "modcsi:backend/types@0.2.2": crate::types },
            pub_export_macro: true,
            export_macro_name: "export",
            default_bindings_module: "modcsi_backend_sdk::optional::expand",
        });
    }
    pub mod list_volumes {
        wit_bindgen::generate!({
            inline: "package modcsi:backend-sdk; world list-volumes { export modcsi:backend/list-volumes@0.2.2; }",
            path: "../../wit/0.2.2",
            with: { "modcsi:backend/types@0.2.2": crate::types },
            pub_export_macro: true,
            export_macro_name: "export",
            default_bindings_module: "modcsi_backend_sdk::optional::list_volumes",
        });
    }
    pub mod capacity {
        wit_bindgen::generate!({
            inline: "package modcsi:backend-sdk; world capacity { export modcsi:backend/capacity@0.2.2; }",
            path: "../../wit/0.2.2",
            with: { "modcsi:backend/types@0.2.2": crate::types },
            pub_export_macro: true,
            export_macro_name: "export",
            default_bindings_module: "modcsi_backend_sdk::optional::capacity",
        });
    }
    pub mod snapshots {
        wit_bindgen::generate!({
            inline: "package modcsi:backend-sdk; world snapshots { export modcsi:backend/snapshots@0.2.2; }",
            path: "../../wit/0.2.2",
            with: { "modcsi:backend/types@0.2.2": crate::types },
            pub_export_macro: true,
            export_macro_name: "export",
            default_bindings_module: "modcsi_backend_sdk::optional::snapshots",
        });
    }
    pub mod node_identity {
        wit_bindgen::generate!({
            inline: "package modcsi:backend-sdk; world node-identity { export modcsi:backend/node-identity@0.2.2; }",
            path: "../../wit/0.2.2",
            with: { "modcsi:backend/types@0.2.2": crate::types },
            pub_export_macro: true,
            export_macro_name: "export",
            default_bindings_module: "modcsi_backend_sdk::optional::node_identity",
        });
    }
    pub mod get_volume {
        wit_bindgen::generate!({
            inline: "package modcsi:backend-sdk; world get-volume { export modcsi:backend/get-volume@0.2.2; }",
            path: "../../wit/0.2.2",
            with: { "modcsi:backend/types@0.2.2": crate::types },
            pub_export_macro: true,
            export_macro_name: "export",
            default_bindings_module: "modcsi_backend_sdk::optional::get_volume",
        });
    }
    pub mod locate {
        wit_bindgen::generate!({
            inline: "package modcsi:backend-sdk; world locate { export modcsi:backend/locate@0.2.2; }",
            path: "../../wit/0.2.2",
            with: { "modcsi:backend/types@0.2.2": crate::types },
            pub_export_macro: true,
            export_macro_name: "export",
            default_bindings_module: "modcsi_backend_sdk::optional::locate",
        });
    }
}

/// Exports the optional `publish` interface (ControllerPublish/Unpublish) from a type that
/// implements [`publish::Guest`].
#[macro_export]
macro_rules! export_publish {
    ($ty:ident) => {
        $crate::__export_publish_impl!($ty with_types_in $crate::optional::publish);
    };
}

/// Exports the optional `expand` interface (ControllerExpandVolume) from a type that
/// implements [`expand::Guest`].
#[macro_export]
macro_rules! export_expand {
    ($ty:ident) => {
        $crate::__export_expand_impl!($ty with_types_in $crate::optional::expand);
    };
}

/// Exports the optional `list-volumes` interface (ListVolumes) from a type that implements
/// [`list_volumes::Guest`].
#[macro_export]
macro_rules! export_list_volumes {
    ($ty:ident) => {
        $crate::__export_list_volumes_impl!($ty with_types_in $crate::optional::list_volumes);
    };
}

/// Exports the optional `capacity` interface (GetCapacity) from a type that implements
/// [`capacity::Guest`].
#[macro_export]
macro_rules! export_capacity {
    ($ty:ident) => {
        $crate::__export_capacity_impl!($ty with_types_in $crate::optional::capacity);
    };
}

/// Exports the optional `snapshots` interface from a type that implements
/// [`snapshots::Guest`].
#[macro_export]
macro_rules! export_snapshots {
    ($ty:ident) => {
        $crate::__export_snapshots_impl!($ty with_types_in $crate::optional::snapshots);
    };
}

/// Exports the optional `node-identity` interface (NodeGetInfo) from a type that implements
/// [`node_identity::Guest`].
#[macro_export]
macro_rules! export_node_identity {
    ($ty:ident) => {
        $crate::__export_node_identity_impl!($ty with_types_in $crate::optional::node_identity);
    };
}

/// Exports the optional `get-volume` interface (ControllerGetVolume, fencing, audit) from a
/// type that implements [`get_volume::Guest`].
#[macro_export]
macro_rules! export_get_volume {
    ($ty:ident) => {
        $crate::__export_get_volume_impl!($ty with_types_in $crate::optional::get_volume);
    };
}

/// Exports the optional `locate` interface (volumes the host did not create) from a type that
/// implements [`locate::Guest`].
#[macro_export]
macro_rules! export_locate {
    ($ty:ident) => {
        $crate::__export_locate_impl!($ty with_types_in $crate::optional::locate);
    };
}

use types::{Error, LogLevel};

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

/// One page of a list call (`list-volumes`, `list-snapshots`) whose token is the id of the
/// previous page's last item: the `items` after `starting_token`, at most `max_entries` of
/// them (0: no limit), and the next token (empty on the last page).
///
/// `items` must be sorted by `id`; ids must be unique and not empty.
pub fn page<T>(
    items: Vec<T>,
    id: impl Fn(&T) -> &str,
    max_entries: u32,
    starting_token: &str,
) -> (Vec<T>, String) {
    let max = if max_entries == 0 {
        usize::MAX
    } else {
        max_entries as usize
    };
    let mut rest: Vec<T> = items
        .into_iter()
        .filter(|i| id(i) > starting_token)
        .collect();
    let next = if rest.len() > max {
        rest.truncate(max);
        rest.last().map(|i| id(i).to_owned()).unwrap_or_default()
    } else {
        String::new()
    };
    (rest, next)
}

/// Now, in seconds since the Unix epoch (the WASI wall clock), as `snapshot` records it.
pub fn unix_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A store failure as a call's error: a lost compare-and-swap is `aborted` (the caller may
/// retry), an entry over the host's limits `resource-exhausted`, an unreachable store
/// `unavailable`.
impl From<store::StoreError> for Error {
    fn from(e: store::StoreError) -> Self {
        use store::StoreError as E;
        match e {
            E::Conflict(version) => Error::Aborted(format!(
                "store: the entry changed concurrently (now version {version:?})"
            )),
            E::TooLarge(m) => Error::ResourceExhausted(format!("store: {m}")),
            E::Unavailable(m) => Error::Unavailable(format!("store: {m}")),
        }
    }
}

/// An ssh failure as a call's error: a target that cannot be reached or answers too late is
/// `unavailable` (worth retrying), a configuration problem (unknown target, host key, refused
/// key) `failed-precondition`, too much output `internal`.
impl From<ssh::SshError> for Error {
    fn from(e: ssh::SshError) -> Self {
        use ssh::SshError as E;
        match e {
            E::Unavailable(m) | E::Timeout(m) => Error::Unavailable(format!("ssh: {m}")),
            E::HostKey(m) | E::Denied(m) | E::UnknownTarget(m) => {
                Error::FailedPrecondition(format!("ssh: {m}"))
            }
            E::TooLarge(m) => Error::Internal(format!("ssh: {m}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::page;

    fn ids(n: u32) -> Vec<String> {
        (0..n).map(|i| format!("v{i}")).collect()
    }

    #[test]
    fn pages_follow_the_last_id() {
        let (first, token) = page(ids(5), String::as_str, 2, "");
        assert_eq!(first, ["v0", "v1"]);
        assert_eq!(token, "v1");
        let (second, token) = page(ids(5), String::as_str, 2, &token);
        assert_eq!(second, ["v2", "v3"]);
        let (last, token) = page(ids(5), String::as_str, 2, &token);
        assert_eq!(last, ["v4"]);
        assert_eq!(token, "");
    }

    #[test]
    fn zero_means_everything() {
        let (all, token) = page(ids(3), String::as_str, 0, "");
        assert_eq!(all.len(), 3);
        assert_eq!(token, "");
    }
}
