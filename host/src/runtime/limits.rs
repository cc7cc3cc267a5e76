//! Per-call resource limits: a memory cap enforced through wasmtime's `ResourceLimiter`, which
//! remembers that it refused so a resulting trap can be reported as "memory limit".

use wasmtime::ResourceLimiter;

pub(crate) struct CallLimits {
    memory_limit: usize,
    pub(crate) memory_refused: bool,
    /// The most linear memory granted in the call.
    pub(crate) peak: usize,
}

impl CallLimits {
    pub(crate) fn new(memory_limit: usize) -> Self {
        Self {
            memory_limit,
            memory_refused: false,
            peak: 0,
        }
    }
}

impl ResourceLimiter for CallLimits {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.memory_refused = true;
            return Ok(false);
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}
