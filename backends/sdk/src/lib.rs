//! What a modcsi backend author builds against: the bindings for the `modcsi:backend@0.2.3`
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
//! | parameters (0.2.3) | [`parameters::Guest`] | [`export_parameters!`] (see [`params::problems`]) |
//! | pool (0.2.3) | [`pool::Guest`] | [`export_pool!`] |
//!
//! The component exports exactly the interfaces whose macros were invoked; the host detects
//! them by their presence and advertises exactly that. A backend crate depends on this one
//! only (not on `wit-bindgen`) and is a `cdylib` built for `wasm32-wasip2`.
//!
//! Helpers, so a backend reads as its storage logic only:
//!
//! | helper | for |
//! |---|---|
//! | [`err!`] | a call's error in one line: `err!(NotFound, "volume {id}")`; the [`store`] and [`ssh`] errors (and [`http::HttpError`]) convert into [`types::Error`], so `?` works on those imports |
//! | [`params::Params`], [`params::config_or`] | parameters and volume contexts read by name and type (`parse`, `bool`, `size`, `one_of`, `required`), falling back to configuration keys; a bad value is `invalid-argument` naming it |
//! | [`info!`], [`debug!`], [`warn!`], [`error!`], [`trace!`], [`log_at`] | logs with `key = value` fields, attributed to the backend by the host |
//! | [`retry::Backoff`] | a request repeated with exponential backoff and jitter, within the call's deadline |
//! | [`http`] | blocking HTTPS requests to the host's configured targets, credentials as placeholders |
//! | [`remote`] | commands on the host's ssh targets, bounded in time, their failures told apart |
//! | [`pending`] | long operations that finish across CSI retries and host restarts |
//! | [`page`] | list-volumes and list-snapshots pages |
//! | [`lookup`], [`put_if_absent`] | a key in a key-value list; a durable record written once |
//! | [`time`] ([`unix_seconds`], [`time::parse_utc`]) | the clock, and API timestamps |

wit_bindgen::generate!({
    world: "backend",
    path: "../../wit/0.2.3",
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

mod errors;
pub mod http;
mod logging;
pub mod params;
pub mod pending;
pub mod remote;
pub mod retry;
pub mod time;

pub use logging::log_at;
pub use time::unix_seconds;

pub use optional::capacity::exports::modcsi::backend::capacity;
pub use optional::expand::exports::modcsi::backend::expand;
pub use optional::get_volume::exports::modcsi::backend::get_volume;
pub use optional::list_volumes::exports::modcsi::backend::list_volumes;
pub use optional::locate::exports::modcsi::backend::locate;
pub use optional::node_identity::exports::modcsi::backend::node_identity;
pub use optional::parameters::exports::modcsi::backend::parameters;
pub use optional::pool::exports::modcsi::backend::pool;
pub use optional::publish::exports::modcsi::backend::publish;
pub use optional::snapshots::exports::modcsi::backend::snapshots;

/// The bindings of each optional interface, generated from a world that exports only it, with
/// the contract's types mapped onto [`types`]. One world per interface keeps them independent:
/// the export macro of each carries the component-type section naming that one export.
#[doc(hidden)]
pub mod optional {
    pub mod publish {
        wit_bindgen::generate!({
            inline: "package modcsi:backend-sdk; world publish { export modcsi:backend/publish@0.2.3; }",
            path: "../../wit/0.2.3",
            with: { "modcsi:backend/types@0.2.3": crate::types },
            pub_export_macro: true,
            export_macro_name: "export",
            default_bindings_module: "modcsi_backend_sdk::optional::publish",
        });
    }
    pub mod expand {
        wit_bindgen::generate!({
            inline: "package modcsi:backend-sdk; world expand { export modcsi:backend/expand@0.2.3; }",
            path: "../../wit/0.2.3",
            with: { "modcsi:backend/types@0.2.3": crate::types },
            pub_export_macro: true,
            export_macro_name: "export",
            default_bindings_module: "modcsi_backend_sdk::optional::expand",
        });
    }
    pub mod list_volumes {
        wit_bindgen::generate!({
            inline: "package modcsi:backend-sdk; world list-volumes { export modcsi:backend/list-volumes@0.2.3; }",
            path: "../../wit/0.2.3",
            with: { "modcsi:backend/types@0.2.3": crate::types },
            pub_export_macro: true,
            export_macro_name: "export",
            default_bindings_module: "modcsi_backend_sdk::optional::list_volumes",
        });
    }
    pub mod capacity {
        wit_bindgen::generate!({
            inline: "package modcsi:backend-sdk; world capacity { export modcsi:backend/capacity@0.2.3; }",
            path: "../../wit/0.2.3",
            with: { "modcsi:backend/types@0.2.3": crate::types },
            pub_export_macro: true,
            export_macro_name: "export",
            default_bindings_module: "modcsi_backend_sdk::optional::capacity",
        });
    }
    pub mod snapshots {
        wit_bindgen::generate!({
            inline: "package modcsi:backend-sdk; world snapshots { export modcsi:backend/snapshots@0.2.3; }",
            path: "../../wit/0.2.3",
            with: { "modcsi:backend/types@0.2.3": crate::types },
            pub_export_macro: true,
            export_macro_name: "export",
            default_bindings_module: "modcsi_backend_sdk::optional::snapshots",
        });
    }
    pub mod node_identity {
        wit_bindgen::generate!({
            inline: "package modcsi:backend-sdk; world node-identity { export modcsi:backend/node-identity@0.2.3; }",
            path: "../../wit/0.2.3",
            with: { "modcsi:backend/types@0.2.3": crate::types },
            pub_export_macro: true,
            export_macro_name: "export",
            default_bindings_module: "modcsi_backend_sdk::optional::node_identity",
        });
    }
    pub mod get_volume {
        wit_bindgen::generate!({
            inline: "package modcsi:backend-sdk; world get-volume { export modcsi:backend/get-volume@0.2.3; }",
            path: "../../wit/0.2.3",
            with: { "modcsi:backend/types@0.2.3": crate::types },
            pub_export_macro: true,
            export_macro_name: "export",
            default_bindings_module: "modcsi_backend_sdk::optional::get_volume",
        });
    }
    pub mod locate {
        wit_bindgen::generate!({
            inline: "package modcsi:backend-sdk; world locate { export modcsi:backend/locate@0.2.3; }",
            path: "../../wit/0.2.3",
            with: { "modcsi:backend/types@0.2.3": crate::types },
            pub_export_macro: true,
            export_macro_name: "export",
            default_bindings_module: "modcsi_backend_sdk::optional::locate",
        });
    }
    pub mod parameters {
        wit_bindgen::generate!({
            inline: "package modcsi:backend-sdk; world parameters { export modcsi:backend/parameters@0.2.3; }",
            path: "../../wit/0.2.3",
            with: { "modcsi:backend/types@0.2.3": crate::types },
            pub_export_macro: true,
            export_macro_name: "export",
            default_bindings_module: "modcsi_backend_sdk::optional::parameters",
        });
    }
    pub mod pool {
        wit_bindgen::generate!({
            inline: "package modcsi:backend-sdk; world pool { export modcsi:backend/pool@0.2.3; }",
            path: "../../wit/0.2.3",
            with: { "modcsi:backend/types@0.2.3": crate::types },
            pub_export_macro: true,
            export_macro_name: "export",
            default_bindings_module: "modcsi_backend_sdk::optional::pool",
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

/// Exports the optional `parameters` interface (StorageClass parameters checked without
/// creating anything; contract 0.2.3) from a type that implements [`parameters::Guest`].
#[macro_export]
macro_rules! export_parameters {
    ($ty:ident) => {
        $crate::__export_parameters_impl!($ty with_types_in $crate::optional::parameters);
    };
}

/// Exports the optional `pool` interface (the size of the storage volumes are carved from;
/// contract 0.2.3) from a type that implements [`pool::Guest`].
#[macro_export]
macro_rules! export_pool {
    ($ty:ident) => {
        $crate::__export_pool_impl!($ty with_types_in $crate::optional::pool);
    };
}

use types::Error;

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

/// Writes `value` under `key` in the durable [`store`] unless the key is there already (written
/// by an earlier try of the same call, say); whether this call wrote it.
pub fn put_if_absent(key: &str, value: &[u8]) -> Result<bool, Error> {
    match store::put(key, value, None) {
        Ok(_) => Ok(true),
        Err(store::StoreError::Conflict(_)) => Ok(false),
        Err(e) => Err(e.into()),
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
