//! The backend runtime: loads a backend component, instantiates it afresh for every call from an
//! `InstancePre` on a pooling allocator, and bounds each call by a deadline and a memory cap. A
//! trap, timeout or limit becomes a [`CallError`] that names the backend and the cause; nothing
//! a backend does can take the host down.
//!
//! WIT versions are kept apart like wasmtime keeps WASI p2 and p3: `v0_2` and `v0_1` each adapt
//! one contract to the host's own types (`volume::types`), which never depend on wasmtime.
//! `operations.rs` is the one table of what a backend can be asked.

mod artifact_cache;
mod backend;
mod call_state;
pub mod capabilities;
mod convert;
mod engine;
mod limits;
mod operations;
pub mod registry;
mod v0_1;
mod v0_2;

pub use artifact_cache::{ArtifactCache, Origin};
pub use backend::{
    ACCEPTED_VERSIONS, Backend, CallError, CallTimings, LoadError, RuntimeOptions, precompile,
};
pub use capabilities::{BackendConfig, ConfigError};
pub use operations::Optional;
