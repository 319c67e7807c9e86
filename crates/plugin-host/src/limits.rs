//! What one plugin session may use.

use std::time::Duration;

/// The default size of the compiled-component cache, in MiB (`PLUGIN_CACHE_SIZE`): an eighth of
/// the 512 MiB pod of `deploy/`, leaving the rest to upload buffers and plugin memory. It holds
/// every reference plugin of `plugins/` several times over (about 17 MiB estimated for all of
/// them; the largest, `schema-validator`, about 13 MiB), so a fleet's bound plugins and their
/// previous versions (for a rollback) stay compiled.
pub const DEFAULT_CACHE_MIB: usize = 64;

/// Limits of every session, and of what the host keeps between sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginLimits {
    /// Linear memory, summed over all of the instance's memories.
    pub memory_bytes: usize,
    /// Time one call (`open`, `push`, `finish`) may run.
    pub call_timeout: Duration,
    /// Time all calls of one session may run together.
    pub session_timeout: Duration,
    /// Output one call may return.
    pub output_bytes_per_call: usize,
    /// Estimated bytes of compiled components the host caches (least recently used evicted).
    pub cache_bytes: usize,
}

/// The service's defaults (`PLUGIN_MEMORY_LIMIT`, `PLUGIN_CALL_TIMEOUT`,
/// `PLUGIN_SESSION_TIMEOUT`, `PLUGIN_OUTPUT_LIMIT`), which the author's tool applies too. Memory
/// and output are chosen so that a session on every upload slot fits a 512 MiB container
/// (docs/OPERATIONS.md, "Sizing").
impl Default for PluginLimits {
    fn default() -> Self {
        Self {
            memory_bytes: 32 * 1024 * 1024,
            call_timeout: Duration::from_secs(2),
            session_timeout: Duration::from_secs(300),
            output_bytes_per_call: 4 * 1024 * 1024,
            cache_bytes: DEFAULT_CACHE_MIB * 1024 * 1024,
        }
    }
}

/// A resource limiter that caps the sum of all memories of a store (wasmtime's own
/// `StoreLimits` caps each memory separately).
#[derive(Debug)]
pub struct MemoryCap {
    limit: usize,
    total: usize,
    peak: usize,
    exceeded: bool,
}

impl MemoryCap {
    /// A cap of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            total: 0,
            peak: 0,
            exceeded: false,
        }
    }

    /// The most memory the store held at once.
    pub fn peak(&self) -> usize {
        self.peak
    }

    /// Whether a growth was refused since the last [`Self::start_call`].
    pub fn exceeded(&self) -> bool {
        self.exceeded
    }

    /// Forgets a refusal: a plugin may survive one (a failed `try_reserve`, say), and a later
    /// call's failure is then not for want of memory.
    pub fn start_call(&mut self) {
        self.exceeded = false;
    }
}

impl wasmtime::ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.total - current.min(self.total) + desired;
        if total > self.limit {
            self.exceeded = true;
            return Ok(false);
        }
        self.total = total;
        self.peak = self.peak.max(total);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}
