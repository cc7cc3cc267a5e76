//! The wasmtime engine shared by every call: component model, pooling allocator sized for the
//! host's concurrency, and epoch interruption driven by a ticker thread.

use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances; deadlines are checked (and long guest runs yield) at this pace.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Builds the engine. `slots` bounds concurrent instances; `memory_limit` is each instance's cap.
pub(crate) fn build(slots: u32, memory_limit: usize) -> wasmtime::Result<Engine> {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(slots)
        .total_core_instances(slots * 8)
        .max_core_instances_per_component(16)
        .total_memories(slots * 2)
        .max_memories_per_component(4)
        .total_tables(slots * 8)
        .max_tables_per_component(16)
        .total_stacks(slots)
        .max_memory_size(memory_limit);

    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    let engine = Engine::new(&config)?;
    start_epoch_ticker(engine.weak());
    Ok(engine)
}

/// Advances the engine's epoch until the engine is dropped.
fn start_epoch_ticker(engine: wasmtime::EngineWeak) {
    std::thread::Builder::new()
        .name("modcsi-epoch".into())
        .spawn(move || {
            while let Some(engine) = engine.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawning the epoch ticker thread");
}
