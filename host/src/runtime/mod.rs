//! The backend runtime: loads a backend component, instantiates it afresh for every call from an
//! `InstancePre` on a pooling allocator, and bounds each call by a deadline and a memory cap. A
//! trap, timeout or limit becomes a [`CallError`] that names the backend and the cause; nothing
//! a backend does can take the host down.
//!
//! WIT versions are kept apart like wasmtime keeps WASI p2 and p3: `v0_2` is the contract the
//! host speaks (its types are the host's types), `v0_1` adapts the frozen 0.1 contract into
//! them. `exports.rs` is what either can be asked.

mod artifact_cache;
mod backend;
pub mod capabilities;
mod engine;
mod exports;
mod limits;
mod v0_1;
mod v0_2;

pub use artifact_cache::{ArtifactCache, Origin};
pub use backend::{ACCEPTED_VERSIONS, Backend, CallError, CallTimings, LoadError, RuntimeOptions};
pub use capabilities::{BackendConfig, ConfigError};
pub use exports::Optional;
pub use v0_2::types;
