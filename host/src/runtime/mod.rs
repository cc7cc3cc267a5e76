//! The backend runtime: loads a backend component, instantiates it afresh for every call from an
//! `InstancePre` on a pooling allocator, and bounds each call by a deadline and a memory cap. A
//! trap, timeout or limit becomes a [`CallError`] that names the backend and the cause; nothing
//! a backend does can take the host down.

mod artifact_cache;
mod backend;
mod bindings;
mod capabilities;
mod engine;
mod limits;

pub use artifact_cache::{ArtifactCache, Origin};
pub use backend::{Backend, CallError, CallTimings, LoadError, RuntimeOptions};
pub use bindings::types;
pub use engine::WIT_VERSION;
