//! The wasmtime engine shared by every call: component model, pooling allocator sized for the
//! host's concurrency, and epoch interruption driven by a ticker thread that ticks only while a
//! call runs (an idle host does not wake up 200 times a second on every node).

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances; deadlines are checked (and long guest runs yield) at this pace.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(5);

/// How often an idle ticker looks whether its engine is gone.
const IDLE_CHECK: Duration = Duration::from_secs(60);

/// Keeps the epoch advancing while any call holds a [`Ticking`].
#[derive(Clone, Default)]
pub(crate) struct Ticker {
    calls: Arc<(Mutex<usize>, Condvar)>,
}

/// A running call's hold on the ticker.
pub(crate) struct Ticking(Ticker);

impl Ticker {
    /// The ticker runs until the returned hold (and every other) is dropped.
    pub(crate) fn start(&self) -> Ticking {
        let (calls, wake) = &*self.calls;
        *calls.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        wake.notify_one();
        Ticking(self.clone())
    }
}

impl Drop for Ticking {
    fn drop(&mut self) {
        let (calls, _) = &*self.0.calls;
        *calls.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
    }
}

/// The engine's configuration. `slots` bounds concurrent instances; `memory_limit` is each
/// instance's cap.
pub(crate) fn config(slots: u32, memory_limit: usize) -> Config {
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
    config
}

/// Builds the engine (see [`config`]) and its epoch ticker.
pub(crate) fn build(slots: u32, memory_limit: usize) -> wasmtime::Result<(Engine, Ticker)> {
    let engine = Engine::new(&config(slots, memory_limit))?;
    let ticker = Ticker::default();
    start_epoch_ticker(engine.weak(), ticker.clone());
    Ok((engine, ticker))
}

/// Advances the engine's epoch while a call runs, until the engine is dropped; sleeps while
/// none does.
fn start_epoch_ticker(engine: wasmtime::EngineWeak, ticker: Ticker) {
    std::thread::Builder::new()
        .name("modcsi-epoch".into())
        .spawn(move || {
            let (calls, wake) = &*ticker.calls;
            loop {
                {
                    let mut running = calls.lock().unwrap_or_else(|e| e.into_inner());
                    while *running == 0 {
                        let (guard, _) = wake
                            .wait_timeout(running, IDLE_CHECK)
                            .unwrap_or_else(|e| e.into_inner());
                        running = guard;
                        if engine.upgrade().is_none() {
                            return;
                        }
                    }
                }
                let Some(engine) = engine.upgrade() else {
                    return;
                };
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawning the epoch ticker thread");
}
