//! The Wasm plugin host (wasmtime with the component model).
//!
//! One [`Engine`] for the process; components compiled once and cached by the SHA-256 of their
//! bytes, with an [`InstancePre`](wasmtime::component::InstancePre) so each upload only pays for
//! a fresh store and an instantiation. Every call is bounded: epoch interruption (a deadline per
//! call and per session) while the plugin's code runs, the same deadline on every WASI wait
//! (see [`waits`]), a memory cap summed over all of the instance's memories, and a cap on the
//! output of one call. The cache of compiled components is bounded by bytes (least recently
//! used evicted; see [`cache`]). Plugins get a log import and an empty WASI context — no files,
//! network, environment, arguments or real clock. A trap, a deadline, a limit or a malformed
//! component fails that session with a message naming the plugin and the reason; the process
//! and other sessions are not affected.

pub mod binding;
pub mod cache;
pub mod directory;
mod limits;
pub mod tool;
pub mod waits;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker, ResourceAny, ResourceTable, WasmList};
use wasmtime::{Config, Engine, ProfilingStrategy, Store, StoreContextMut, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use cache::ComponentCache;
use limits::MemoryCap;
pub use limits::{DEFAULT_CACHE_MIB, PluginLimits};
use waits::{WaitCut, WaitDeadline};

#[expect(
    missing_docs,
    reason = "generated from wit/plugin.wit, documented there"
)]
mod bindings {
    wasmtime::component::bindgen!({
        world: "plugin",
        path: "wit",
    });
}

use bindings::export_service::plugin::host::LogLevel;
pub use bindings::export_service::plugin::types::{
    Capabilities, DataFormat, PluginError as GuestError, PluginInfo, ResourceInfo, SessionOptions,
    StepOutput, Violation,
};

impl From<crate::domain::Format> for DataFormat {
    fn from(format: crate::domain::Format) -> Self {
        match format {
            crate::domain::Format::Csv => Self::Csv,
            crate::domain::Format::Json => Self::Json,
        }
    }
}

/// The most input the service hands a plugin in one `push` (the upload path and the author's
/// tool both read in chunks of this size).
pub const CHUNK_BYTES: usize = 256 * 1024;

/// How often the epoch advances: the granularity of deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);
/// The longest log line a plugin can write.
pub const MAX_LOG_LINE: usize = 1024;
/// Log lines one session may write (more are dropped).
pub const MAX_LOG_LINES: u32 = 1000;

/// Why a plugin could not be loaded or failed a session.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PluginFailure {
    /// The bytes are not a usable component for our world.
    #[error("plugin rejected: {0}")]
    Invalid(String),
    /// The plugin trapped (panicked, hit `unreachable`, overflowed its stack…).
    #[error("plugin {plugin} crashed: {reason}")]
    Trapped {
        /// The plugin's name.
        plugin: String,
        /// What happened.
        reason: String,
    },
    /// The plugin ran past its deadline.
    #[error("plugin {plugin} exceeded its time limit of {limit_ms} ms")]
    Timeout {
        /// The plugin's name.
        plugin: String,
        /// The limit.
        limit_ms: u128,
    },
    /// The plugin asked for more memory than allowed.
    #[error("plugin {plugin} exceeded its memory limit of {limit_mib} MiB")]
    OutOfMemory {
        /// The plugin's name.
        plugin: String,
        /// The limit.
        limit_mib: usize,
    },
    /// One call produced more output than allowed.
    #[error("plugin {plugin} produced more than {limit_mib} MiB from one chunk")]
    OutputTooLarge {
        /// The plugin's name.
        plugin: String,
        /// The limit.
        limit_mib: usize,
    },
    /// One call emitted its output in too many pieces.
    #[error("plugin {plugin} emitted more than {limit} pieces of output in one call")]
    OutputPieces {
        /// The plugin's name.
        plugin: String,
        /// The limit.
        limit: usize,
    },
    /// The plugin refused its configuration.
    #[error("plugin {plugin} refused its configuration: {reason}")]
    InvalidConfig {
        /// The plugin's name.
        plugin: String,
        /// Its reason.
        reason: String,
    },
    /// The plugin rejected the data.
    #[error("plugin {plugin} rejected the data")]
    Rejected {
        /// The plugin's name.
        plugin: String,
        /// The problems it found.
        violations: Vec<Violation>,
    },
    /// The plugin reported another failure.
    #[error("plugin {plugin} failed: {reason}")]
    Failed {
        /// The plugin's name.
        plugin: String,
        /// Its reason.
        reason: String,
    },
}

impl PluginFailure {
    /// A short name of the failure's kind (a metric label).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "invalid",
            Self::Trapped { .. } => "crashed",
            Self::Timeout { .. } => "timeout",
            Self::OutOfMemory { .. } => "memory",
            Self::OutputTooLarge { .. } | Self::OutputPieces { .. } => "output",
            Self::InvalidConfig { .. } => "config",
            Self::Rejected { .. } => "rejected",
            Self::Failed { .. } => "failed",
        }
    }
}

/// The state of one store.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    memory: MemoryCap,
    plugin: String,
    log_lines: u32,
    emitted: Emitted,
    wait_deadline: WaitDeadline,
}

/// The most pieces of output one call may `emit` (each costs the host a record, whatever its
/// size).
pub const MAX_EMITS_PER_CALL: usize = 4096;

/// What the running call `emit`ted: places in the plugin's memory, read when the call returns.
#[derive(Default)]
struct Emitted {
    lists: Vec<WasmList<u8>>,
    bytes: usize,
    /// Output limit of one call; `emit` past it traps the plugin.
    limit: usize,
    /// Whether a `push` or `finish` is running (output has nowhere to go during `open` or
    /// `describe`).
    in_call: bool,
    /// Why an `emit` was refused (the plugin then traps), when one was.
    refused: Option<EmitRefused>,
}

/// Why the host refused an `emit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EmitRefused {
    /// More bytes than the output limit of one call.
    Bytes,
    /// More than [`MAX_EMITS_PER_CALL`] pieces.
    Pieces,
    /// Outside `push` and `finish`.
    OutsideCall,
}

impl Emitted {
    fn start_call(&mut self) {
        self.lists.clear();
        self.bytes = 0;
        self.in_call = true;
        self.refused = None;
    }

    fn add(&mut self, list: WasmList<u8>) -> wasmtime::Result<()> {
        let refused = if !self.in_call {
            Some(EmitRefused::OutsideCall)
        } else if self.bytes.saturating_add(list.len()) > self.limit {
            Some(EmitRefused::Bytes)
        } else if list.len() > 0 && self.lists.len() == MAX_EMITS_PER_CALL {
            Some(EmitRefused::Pieces)
        } else {
            None
        };
        if let Some(reason) = refused {
            self.refused = Some(reason);
            wasmtime::bail!("the host refused an emit: {reason:?}");
        }
        self.bytes += list.len();
        if list.len() > 0 {
            self.lists.push(list);
        }
        Ok(())
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl HostState {
    /// `host.log`: one line in our log, truncated, at most [`MAX_LOG_LINES`] per session.
    fn log(&mut self, level: LogLevel, message: String) {
        if self.log_lines >= MAX_LOG_LINES {
            return;
        }
        self.log_lines += 1;
        let mut line = message;
        if line.len() > MAX_LOG_LINE {
            let mut end = MAX_LOG_LINE;
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            line.truncate(end);
            line.push('…');
        }
        let plugin = self.plugin.as_str();
        match level {
            LogLevel::Debug => tracing::debug!(plugin, "{line}"),
            LogLevel::Info => tracing::info!(plugin, "{line}"),
            LogLevel::Warn => tracing::warn!(plugin, "{line}"),
            LogLevel::Error => tracing::error!(plugin, "{line}"),
        }
    }
}

/// The version of the contract (`wit/plugin.wit`) this host implements. Plugins built against
/// an earlier minor version of the same major version run unchanged.
pub const CONTRACT_VERSION: &str = "1.1.0";

/// The `host` interface's name in the contract.
const HOST_INTERFACE: &str = "export-service:plugin/host@1.1.0";

/// The prefix of the contract's interface names; each ends in `@<version>`.
const CONTRACT_PREFIX: &str = "export-service:plugin/";

/// `major.minor.patch` of a version, when it is one.
fn version_numbers(version: &str) -> Option<(u64, u64, u64)> {
    let mut parts = version.split('.');
    let mut next = || parts.next()?.parse().ok();
    Some((next()?, next()?, next()?))
}

/// The contract version a component was built against: the latest named by the contract
/// interfaces it imports and exports (a version that does not parse counts as the latest, so it
/// is what a refusal names), or `None` when it names none.
fn built_against(engine: &Engine, component: &Component) -> Option<String> {
    let component_type = component.component_type();
    let imports = component_type.imports(engine).map(|(name, _)| name);
    let exports = component_type.exports(engine).map(|(name, _)| name);
    imports
        .chain(exports)
        .filter_map(|name| {
            let (_, version) = name.strip_prefix(CONTRACT_PREFIX)?.split_once('@')?;
            Some(version.to_owned())
        })
        .max_by_key(|version| version_numbers(version).unwrap_or((u64::MAX, 0, 0)))
}

/// Why a component built against `version` cannot run here, when that is the reason: another
/// major version, or a later minor one (it may use what this host lacks).
fn unsupported_contract(version: &str) -> Option<String> {
    let ours = version_numbers(CONTRACT_VERSION)?;
    match version_numbers(version) {
        Some((major, minor, _)) if major == ours.0 && minor <= ours.1 => None,
        _ => Some(format!(
            "it was built against export-service:plugin@{version}; this host runs plugins of \
             {}.0 to {CONTRACT_VERSION} (rebuild it with a matching SDK)",
            ours.0
        )),
    }
}

/// Defines the `host` interface. By hand rather than generated: `emit` takes its bytes as a
/// [`WasmList`] (where they lie in the plugin's memory) instead of a copy.
fn add_host_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let mut host = linker.instance(HOST_INTERFACE)?;
    host.func_wrap(
        "log",
        |mut store: StoreContextMut<'_, HostState>, (level, message): (LogLevel, String)| {
            store.data_mut().log(level, message);
            Ok(())
        },
    )?;
    host.func_wrap(
        "emit",
        |mut store: StoreContextMut<'_, HostState>, (bytes,): (WasmList<u8>,)| {
            store.data_mut().emitted.add(bytes)
        },
    )?;
    Ok(())
}

impl bindings::export_service::plugin::types::Host for HostState {}

/// A compiled, checked plugin, ready to run sessions.
pub struct LoadedPlugin {
    /// SHA-256 of the component's bytes, hex.
    pub digest: String,
    /// What the plugin says about itself.
    pub info: PluginInfo,
    /// The contract version it was built against (e.g. `1.1.0`).
    pub contract: String,
    /// What it is estimated to hold in memory once compiled (its weight in the host's cache).
    pub size_bytes: usize,
    pre: bindings::PluginPre<HostState>,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("LoadedPlugin")
            .field("name", &self.info.name)
            .field("version", &self.info.version)
            .field("digest", &self.digest)
            .finish()
    }
}

/// The process's plugin host.
pub struct PluginHost {
    engine: Engine,
    linker: Linker<HostState>,
    cache: Mutex<ComponentCache<LoadedPlugin>>,
    limits: PluginLimits,
    ticker_stop: Arc<AtomicBool>,
}

impl Drop for PluginHost {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for PluginHost {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PluginHost")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// What a host measures besides running plugins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Instrumentation {
    None,
    Fuel,
    PerfMap,
}

impl PluginHost {
    /// A host with these limits.
    pub fn new(limits: PluginLimits) -> Result<Self, PluginFailure> {
        Self::build(limits, Instrumentation::None)
    }

    /// A host that writes `/tmp/perf-<pid>.map`, so that `perf record` / `perf report` name the
    /// plugins' compiled functions (for profiling a plugin, e.g. in the benchmark).
    pub fn with_perf_map(limits: PluginLimits) -> Result<Self, PluginFailure> {
        Self::build(limits, Instrumentation::PerfMap)
    }

    /// A host that also counts fuel (roughly, executed instructions) — for the author's tool;
    /// the service itself runs without the metering overhead.
    pub fn with_fuel_metering(limits: PluginLimits) -> Result<Self, PluginFailure> {
        Self::build(limits, Instrumentation::Fuel)
    }

    fn build(
        limits: PluginLimits,
        instrumentation: Instrumentation,
    ) -> Result<Self, PluginFailure> {
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .consume_fuel(instrumentation == Instrumentation::Fuel);
        if instrumentation == Instrumentation::PerfMap {
            config.profiler(ProfilingStrategy::PerfMap);
        }
        let engine =
            Engine::new(&config).map_err(|error| PluginFailure::Invalid(error.to_string()))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .and_then(|()| waits::shadow_poll(&mut linker))
            .map_err(|error| PluginFailure::Invalid(error.to_string()))?;
        bindings::export_service::plugin::types::add_to_linker::<HostState, HasSelf<HostState>>(
            &mut linker,
            |state| state,
        )
        .and_then(|()| add_host_to_linker(&mut linker))
        .map_err(|error| PluginFailure::Invalid(error.to_string()))?;
        let ticking = engine.clone();
        let ticker_stop = Arc::new(AtomicBool::new(false));
        let stop = ticker_stop.clone();
        std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    ticking.increment_epoch();
                }
            })
            .map_err(|error| PluginFailure::Invalid(error.to_string()))?;
        Ok(Self {
            engine,
            linker,
            cache: Mutex::new(ComponentCache::new(limits.cache_bytes)),
            limits,
            ticker_stop,
        })
    }

    /// The limits sessions run under.
    pub fn limits(&self) -> &PluginLimits {
        &self.limits
    }

    /// The compiled plugin with this digest, if the host's cache has it.
    pub fn cached(&self, digest: &str) -> Option<Arc<LoadedPlugin>> {
        self.cache
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .get(digest, |plugin| plugin.size_bytes)
    }

    /// How many compiled plugins the cache's byte budget holds, and their estimated bytes.
    pub fn cache_usage(&self) -> (usize, usize) {
        self.cache
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .usage()
    }

    /// Compiles (or finds in the cache) a component, checks that it implements our world and
    /// that `describe` works.
    pub fn load(&self, bytes: &[u8]) -> Result<Arc<LoadedPlugin>, PluginFailure> {
        let digest = hex::encode(Sha256::digest(bytes));
        if let Some(loaded) = self.cached(&digest) {
            return Ok(loaded);
        }
        let component = Component::new(&self.engine, bytes).map_err(|error| {
            PluginFailure::Invalid(format!("not a valid WebAssembly component: {error:#}"))
        })?;
        let contract = built_against(&self.engine, &component);
        if let Some(reason) = contract.as_deref().and_then(unsupported_contract) {
            return Err(PluginFailure::Invalid(format!(
                "unsupported contract: {reason}"
            )));
        }
        let instance_pre = self.linker.instantiate_pre(&component).map_err(|error| {
            PluginFailure::Invalid(format!(
                "the component imports something the host does not grant: {error:#}"
            ))
        })?;
        let pre = bindings::PluginPre::new(instance_pre).map_err(|error| {
            PluginFailure::Invalid(format!(
                "the component does not export the export-service:plugin/processor interface: {error:#}"
            ))
        })?;
        let mut store = self.store("(loading)");
        let instance = pre
            .instantiate(&mut store)
            .map_err(|error| PluginFailure::Invalid(format!("cannot instantiate: {error:#}")))?;
        let info = instance
            .export_service_plugin_processor()
            .call_describe(&mut store)
            .map_err(|error| PluginFailure::Invalid(format!("describe failed: {error:#}")))?;
        let loaded = Arc::new(LoadedPlugin {
            digest: digest.clone(),
            info,
            contract: contract.unwrap_or_else(|| CONTRACT_VERSION.to_owned()),
            size_bytes: compiled_size(&component, bytes.len()),
            pre,
        });
        let evicted = self
            .cache
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .insert(digest, loaded.clone(), loaded.size_bytes);
        for digest in evicted {
            tracing::info!(%digest, "compiled plugin evicted from the cache");
        }
        Ok(loaded)
    }

    fn store(&self, plugin: &str) -> Store<HostState> {
        let wasi = WasiCtx::builder()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .wall_clock(FrozenClock)
            .monotonic_clock(FrozenClock)
            .build();
        let mut store = Store::new(
            &self.engine,
            HostState {
                wasi,
                table: ResourceTable::new(),
                memory: MemoryCap::new(self.limits.memory_bytes),
                plugin: plugin.to_owned(),
                log_lines: 0,
                emitted: Emitted {
                    limit: self.limits.output_bytes_per_call,
                    ..Emitted::default()
                },
                wait_deadline: WaitDeadline::at(Instant::now()),
            },
        );
        store.limiter(|state| &mut state.memory);
        // Fails (harmlessly) unless the engine meters fuel.
        let _ = store.set_fuel(u64::MAX);
        arm(&mut store, self.limits.call_timeout);
        store
    }

    /// Starts a session of `plugin` for one upload.
    pub fn open(
        &self,
        plugin: &Arc<LoadedPlugin>,
        options: &SessionOptions,
    ) -> Result<PluginSession, PluginFailure> {
        let name = plugin.info.name.clone();
        let mut store = self.store(&name);
        let started = Instant::now();
        arm(
            &mut store,
            self.limits.call_timeout.min(self.limits.session_timeout),
        );
        let instance = plugin
            .pre
            .instantiate(&mut store)
            .map_err(|error| failure(&name, &store, &self.limits, error))?;
        let guest = instance.export_service_plugin_processor().session();
        let opened = guest
            .call_open(&mut store, options)
            .map_err(|error| failure(&name, &store, &self.limits, error))?;
        let resource = opened.map_err(|error| guest_failure(&name, error))?;
        Ok(PluginSession {
            plugin: plugin.clone(),
            store,
            instance,
            resource,
            limits: self.limits.clone(),
            guest_time: started.elapsed(),
            returned: Vec::new(),
        })
    }
}

/// One upload going through a plugin.
pub struct PluginSession {
    plugin: Arc<LoadedPlugin>,
    store: Store<HostState>,
    instance: bindings::Plugin,
    resource: ResourceAny,
    limits: PluginLimits,
    guest_time: Duration,
    /// The output the last call returned (as opposed to `emit`ted).
    returned: Vec<u8>,
}

/// What one call produced: its output, read in place from the plugin's memory (what it
/// `emit`ted) and from what it returned, and the problems it found. Borrows the session: the
/// output stays valid until the next call.
#[derive(Debug)]
pub struct Step<'a> {
    output: Vec<&'a [u8]>,
    /// Problems the plugin found in the data.
    pub violations: Vec<Violation>,
}

impl<'a> Step<'a> {
    /// The output, in order, in the pieces the plugin handed over (no empty piece).
    pub fn output(&self) -> &[&'a [u8]] {
        &self.output
    }

    /// The output's length in bytes.
    pub fn output_len(&self) -> usize {
        self.output.iter().map(|piece| piece.len()).sum()
    }

    /// Appends the output to `buffer`.
    pub fn append_output_to(&self, buffer: &mut Vec<u8>) {
        buffer.reserve(self.output_len());
        for piece in &self.output {
            buffer.extend_from_slice(piece);
        }
    }
}

impl PluginSession {
    /// The plugin running this session.
    pub fn plugin(&self) -> &Arc<LoadedPlugin> {
        &self.plugin
    }

    /// Time spent inside the plugin so far.
    pub fn guest_time(&self) -> Duration {
        self.guest_time
    }

    /// Fuel consumed so far, when the host meters it.
    pub fn fuel_consumed(&self) -> Option<u64> {
        self.store.get_fuel().ok().map(|left| u64::MAX - left)
    }

    /// Peak memory of the plugin's instance so far, in bytes.
    pub fn peak_memory(&self) -> usize {
        self.store.data().memory.peak()
    }

    /// Processes one chunk.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Step<'_>, PluginFailure> {
        self.call(|instance, store, resource| {
            instance
                .export_service_plugin_processor()
                .session()
                .call_push(store, resource, chunk)
        })
    }

    /// Ends the upload.
    pub fn finish(&mut self) -> Result<Step<'_>, PluginFailure> {
        self.call(|instance, store, resource| {
            instance
                .export_service_plugin_processor()
                .session()
                .call_finish(store, resource)
        })
    }

    fn call(
        &mut self,
        run: impl FnOnce(
            &bindings::Plugin,
            &mut Store<HostState>,
            ResourceAny,
        ) -> wasmtime::Result<Result<StepOutput, GuestError>>,
    ) -> Result<Step<'_>, PluginFailure> {
        let name = self.plugin.info.name.clone();
        let remaining = self.limits.session_timeout.saturating_sub(self.guest_time);
        if remaining.is_zero() {
            return Err(PluginFailure::Timeout {
                plugin: name,
                limit_ms: self.limits.session_timeout.as_millis(),
            });
        }
        arm(&mut self.store, self.limits.call_timeout.min(remaining));
        let state = self.store.data_mut();
        state.emitted.start_call();
        state.memory.start_call();
        let started = Instant::now();
        let result = run(&self.instance, &mut self.store, self.resource);
        self.guest_time += started.elapsed();
        self.store.data_mut().emitted.in_call = false;
        let step = result
            .map_err(|error| {
                let mut failure = failure(&name, &self.store, &self.limits, error);
                // A session deadline reads better than the per-call one it tripped.
                if let PluginFailure::Timeout { limit_ms, .. } = &mut failure
                    && self.guest_time >= self.limits.session_timeout
                {
                    *limit_ms = self.limits.session_timeout.as_millis();
                }
                failure
            })?
            .map_err(|error| guest_failure(&name, error))?;
        let emitted = self.store.data().emitted.bytes;
        if emitted.saturating_add(step.output.len()) > self.limits.output_bytes_per_call {
            return Err(output_too_large(&name, &self.limits));
        }
        self.returned = step.output;
        // What was emitted lies in the plugin's memory, checked in bounds when it was emitted;
        // memory only grows, and the plugin does not run again before this borrow ends.
        let store = &self.store;
        let mut output: Vec<&[u8]> = store
            .data()
            .emitted
            .lists
            .iter()
            .map(|list| list.as_le_slice(store))
            .collect();
        if !self.returned.is_empty() {
            output.push(&self.returned);
        }
        Ok(Step {
            output,
            violations: step.violations,
        })
    }
}

fn output_too_large(plugin: &str, limits: &PluginLimits) -> PluginFailure {
    PluginFailure::OutputTooLarge {
        plugin: plugin.to_owned(),
        limit_mib: limits.output_bytes_per_call / (1024 * 1024),
    }
}

/// Gives the store's next call `budget`: the epoch deadline for the plugin's code and the same
/// deadline for its WASI waits.
fn arm(store: &mut Store<HostState>, budget: Duration) {
    store.set_epoch_deadline(ticks(budget));
    store.data_mut().wait_deadline = WaitDeadline::at(Instant::now() + budget);
}

/// How much memory a compiled component is estimated to hold: its compiled image (code and
/// data, as mapped) plus the wasm size again for what compilation keeps on the heap (types,
/// the pre-instantiation's lookups).
fn compiled_size(component: &Component, wasm_bytes: usize) -> usize {
    let image = component.image_range();
    (image.end as usize - image.start as usize).saturating_add(wasm_bytes)
}

fn ticks(duration: Duration) -> u64 {
    (duration.as_micros() / EPOCH_TICK.as_micros()).max(1) as u64 + 1
}

/// Classifies a failed call: deadline, memory, or a trap.
fn failure(
    plugin: &str,
    store: &Store<HostState>,
    limits: &PluginLimits,
    error: wasmtime::Error,
) -> PluginFailure {
    // What this call's emits were refused for first: the memory flag may be from a growth the
    // plugin survived.
    match store.data().emitted.refused {
        Some(EmitRefused::Bytes) => return output_too_large(plugin, limits),
        Some(EmitRefused::Pieces) => {
            return PluginFailure::OutputPieces {
                plugin: plugin.to_owned(),
                limit: MAX_EMITS_PER_CALL,
            };
        }
        Some(EmitRefused::OutsideCall) => {
            return PluginFailure::Trapped {
                plugin: plugin.to_owned(),
                reason: "it called emit outside push and finish".to_owned(),
            };
        }
        None => {}
    }
    // A wait cut at the deadline: the same timeout as a plugin whose code ran past it.
    if store.data().wait_deadline.cut || error.downcast_ref::<WaitCut>().is_some() {
        return PluginFailure::Timeout {
            plugin: plugin.to_owned(),
            limit_ms: limits.call_timeout.as_millis(),
        };
    }
    if store.data().memory.exceeded() {
        return PluginFailure::OutOfMemory {
            plugin: plugin.to_owned(),
            limit_mib: limits.memory_bytes / (1024 * 1024),
        };
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => PluginFailure::Timeout {
            plugin: plugin.to_owned(),
            limit_ms: limits.call_timeout.as_millis(),
        },
        Some(trap) => PluginFailure::Trapped {
            plugin: plugin.to_owned(),
            reason: trap.to_string(),
        },
        None => PluginFailure::Trapped {
            plugin: plugin.to_owned(),
            reason: format!("{error:#}"),
        },
    }
}

fn guest_failure(plugin: &str, error: GuestError) -> PluginFailure {
    let plugin = plugin.to_owned();
    match error {
        GuestError::InvalidConfig(reason) => PluginFailure::InvalidConfig { plugin, reason },
        GuestError::Rejected(violations) => PluginFailure::Rejected { plugin, violations },
        GuestError::Failed(reason) => PluginFailure::Failed { plugin, reason },
    }
}

/// A clock that never moves: plugins get no real time (their output cannot depend on it).
struct FrozenClock;

impl wasmtime_wasi::HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl wasmtime_wasi::HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }

    fn now(&self) -> u64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_version_is_the_wit_package_version() {
        let wit = include_str!("../../wit/plugin.wit");
        assert!(
            wit.contains(&format!(
                "package export-service:plugin@{CONTRACT_VERSION};"
            )),
            "wit/plugin.wit declares another version than CONTRACT_VERSION"
        );
        assert!(HOST_INTERFACE.ends_with(&format!("@{CONTRACT_VERSION}")));
    }

    #[test]
    fn earlier_minor_versions_run_and_later_or_other_majors_do_not() {
        assert_eq!(unsupported_contract("1.0.0"), None);
        assert_eq!(unsupported_contract(CONTRACT_VERSION), None);
        for version in ["1.2.0", "2.0.0", "0.9.0", "1.1.0-rc1", "one"] {
            let reason = unsupported_contract(version).expect(version);
            assert!(reason.contains(version), "{reason}");
            assert!(reason.contains("1.0 to 1.1.0"), "{reason}");
        }
    }
}
