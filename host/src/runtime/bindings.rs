//! Host-side bindings for the `modcsi:backend@0.1.0` world (wit/backend.wit).

wasmtime::component::bindgen!({
    world: "backend",
    path: "../wit",
    imports: { default: trappable },
    exports: { default: async },
});

pub use modcsi::backend::types;
