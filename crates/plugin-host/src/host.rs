//! The process's plugin host: one engine with epoch ticks, the linker, and the cache of
//! compiled components; it loads components and opens sessions.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, ProfilingStrategy, Store};
use wasmtime_wasi::WasiCtx;

use crate::artefact::{self, ArtefactDir};
use crate::cache::ComponentCache;
use crate::contract::{CONTRACT_VERSION, built_against, unsupported_contract};
use crate::failure::{PluginFailure, failure, guest_failure};
use crate::limits::{MemoryCap, PluginLimits};
use crate::records::{RecordSplitter, RecordWriter};
use crate::session::{Guest, PluginSession, arm};
use crate::state::{Emitted, FrozenClock, HostState, add_host_to_linker};
use crate::waits::{self, WaitDeadline};
use crate::{
    EPOCH_TICK, PluginInfo, SessionOptions, bindings, record_bindings, transform_bindings,
};

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
    pub(crate) pre: Pre,
}

/// A plugin ready to instantiate, by the world it implements.
pub(crate) enum Pre {
    /// The streaming world: it gets the upload's bytes.
    Streaming(bindings::PluginPre<HostState>),
    /// The record world (1.2.0): it gets batches of records the host split.
    Records(record_bindings::RecordPluginPre<HostState>),
    /// The record-transform world (1.3.0): it returns the records to store.
    Transforms(transform_bindings::RecordTransformPluginPre<HostState>),
}

impl Pre {
    fn instance_pre(&self) -> &wasmtime::component::InstancePre<HostState> {
        match self {
            Self::Streaming(pre) => pre.instance_pre(),
            Self::Records(pre) => pre.instance_pre(),
            Self::Transforms(pre) => pre.instance_pre(),
        }
    }
}

impl LoadedPlugin {
    /// Whether it is a record-mode plugin (the host splits uploads into records for it).
    pub fn record_mode(&self) -> bool {
        matches!(self.pre, Pre::Records(_) | Pre::Transforms(_))
    }

    /// Whether it is a record-mode plugin that returns the records to store (contract 1.3.0).
    pub fn transforms_records(&self) -> bool {
        matches!(self.pre, Pre::Transforms(_))
    }

    /// The compiled component as bytes, for [`PluginHost::load_artefact`] on hosts of the same
    /// fingerprint.
    pub fn artefact(&self) -> Result<Vec<u8>, PluginFailure> {
        self.pre
            .instance_pre()
            .component()
            .serialize()
            .map_err(|error| PluginFailure::Invalid(format!("cannot serialise: {error:#}")))
    }
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
    fingerprint: String,
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
            fingerprint: artefact::fingerprint(&engine),
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
        self.check(digest, &component, bytes.len())
    }

    /// The engine's fingerprint: artefacts are usable by hosts of the same fingerprint only.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Loads the component with `digest` from its artefact (the output of
    /// [`LoadedPlugin::artefact`] on a host of the same [`fingerprint`](Self::fingerprint)),
    /// with the same checks as [`load`](Self::load) but without compiling. The artefact must
    /// come from a place only the fleet writes (see [`crate::artefact`]); one that is truncated
    /// or of another engine is refused.
    pub fn load_artefact(
        &self,
        digest: &str,
        artefact: &[u8],
    ) -> Result<Arc<LoadedPlugin>, PluginFailure> {
        if let Some(loaded) = self.cached(digest) {
            return Ok(loaded);
        }
        let component = artefact::deserialize(&self.engine, artefact)?;
        self.check(digest.to_owned(), &component, artefact.len())
    }

    /// [`load`](Self::load), through the artefacts of `directory`: an artefact held there is
    /// loaded instead of compiling, and a component compiled here is kept there.
    pub fn load_through(
        &self,
        bytes: &[u8],
        directory: &ArtefactDir,
    ) -> Result<Arc<LoadedPlugin>, PluginFailure> {
        let digest = hex::encode(Sha256::digest(bytes));
        if let Some(loaded) = self.cached(&digest) {
            return Ok(loaded);
        }
        if let Some(artefact) = directory.read(&digest, &self.fingerprint) {
            match self.load_artefact(&digest, &artefact) {
                Ok(loaded) => return Ok(loaded),
                Err(failure) => {
                    tracing::warn!(%digest, %failure, "a cached artefact is unusable; compiling");
                    directory.remove(&digest, &self.fingerprint);
                }
            }
        }
        let loaded = self.load(bytes)?;
        match loaded.artefact() {
            Ok(artefact) => {
                if let Err(error) = directory.write(&digest, &self.fingerprint, &artefact) {
                    tracing::warn!(%digest, %error, "cannot keep the compiled artefact");
                }
            }
            Err(failure) => tracing::warn!(%digest, %failure, "cannot serialise the component"),
        }
        Ok(loaded)
    }

    /// Checks a compiled component: its contract version, that it implements our world and
    /// that `describe` works; keeps it in the cache.
    fn check(
        &self,
        digest: String,
        component: &Component,
        source_bytes: usize,
    ) -> Result<Arc<LoadedPlugin>, PluginFailure> {
        let contract = built_against(&self.engine, component);
        if let Some(reason) = contract.as_deref().and_then(unsupported_contract) {
            return Err(PluginFailure::Invalid(format!(
                "unsupported contract: {reason}"
            )));
        }
        let instance_pre = self.linker.instantiate_pre(component).map_err(|error| {
            PluginFailure::Invalid(format!(
                "the component imports something the host does not grant: {error:#}"
            ))
        })?;
        let pre = world_of(instance_pre)?;
        let mut store = self.store("(loading)", &self.limits);
        let cannot_instantiate =
            |error| PluginFailure::Invalid(format!("cannot instantiate: {error:#}"));
        let described = match &pre {
            Pre::Streaming(pre) => pre
                .instantiate(&mut store)
                .map_err(cannot_instantiate)?
                .export_service_plugin_processor()
                .call_describe(&mut store),
            Pre::Records(pre) => pre
                .instantiate(&mut store)
                .map_err(cannot_instantiate)?
                .export_service_plugin_records()
                .call_describe(&mut store),
            Pre::Transforms(pre) => pre
                .instantiate(&mut store)
                .map_err(cannot_instantiate)?
                .export_service_plugin_record_transforms()
                .call_describe(&mut store),
        };
        let info = described
            .map_err(|error| PluginFailure::Invalid(format!("describe failed: {error:#}")))?;
        let loaded = Arc::new(LoadedPlugin {
            digest: digest.clone(),
            info,
            contract: contract.unwrap_or_else(|| CONTRACT_VERSION.to_owned()),
            size_bytes: compiled_size(component, source_bytes),
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

    fn store(&self, plugin: &str, limits: &PluginLimits) -> Store<HostState> {
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
                memory: MemoryCap::new(limits.memory_bytes),
                plugin: plugin.to_owned(),
                log_lines: 0,
                emitted: Emitted {
                    limit: limits.output_bytes_per_call,
                    ..Emitted::default()
                },
                wait_deadline: WaitDeadline::at(Instant::now()),
            },
        );
        store.limiter(|state| &mut state.memory);
        // Fails (harmlessly) unless the engine meters fuel.
        let _ = store.set_fuel(u64::MAX);
        arm(&mut store, limits.call_timeout);
        store
    }

    /// Starts a session of `plugin` for one upload, under the host's limits.
    pub fn open(
        &self,
        plugin: &Arc<LoadedPlugin>,
        options: &SessionOptions,
    ) -> Result<PluginSession, PluginFailure> {
        self.open_with(plugin, options, &self.limits)
    }

    /// Starts a session of `plugin` under `limits` (a binding's own memory and call time; the
    /// caller bounds them).
    pub fn open_with(
        &self,
        plugin: &Arc<LoadedPlugin>,
        options: &SessionOptions,
        limits: &PluginLimits,
    ) -> Result<PluginSession, PluginFailure> {
        let name = plugin.info.name.clone();
        let mut store = self.store(&name, limits);
        let started = Instant::now();
        arm(&mut store, limits.call_timeout.min(limits.session_timeout));
        let fail = |store: &Store<HostState>, error| failure(&name, store, limits, error);
        let (guest, opened) = match &plugin.pre {
            Pre::Streaming(pre) => {
                let instance = pre.instantiate(&mut store).map_err(|e| fail(&store, e))?;
                let opened = instance
                    .export_service_plugin_processor()
                    .session()
                    .call_open(&mut store, options)
                    .map_err(|e| fail(&store, e))?;
                (Guest::Streaming(instance), opened)
            }
            Pre::Records(pre) => {
                let instance = pre.instantiate(&mut store).map_err(|e| fail(&store, e))?;
                let opened = instance
                    .export_service_plugin_records()
                    .checker()
                    .call_open(&mut store, options)
                    .map_err(|e| fail(&store, e))?;
                let splitter = RecordSplitter::new(options.input_format);
                (Guest::Records(instance, Box::new(splitter)), opened)
            }
            Pre::Transforms(pre) => {
                let instance = pre.instantiate(&mut store).map_err(|e| fail(&store, e))?;
                let opened = instance
                    .export_service_plugin_record_transforms()
                    .transformer()
                    .call_open(&mut store, options)
                    .map_err(|e| fail(&store, e))?;
                let records = Box::new((
                    RecordSplitter::new(options.input_format),
                    RecordWriter::new(options.output_format),
                ));
                (Guest::Transforms(instance, records), opened)
            }
        };
        let resource = opened.map_err(|error| guest_failure(&name, error))?;
        Ok(PluginSession {
            plugin: plugin.clone(),
            store,
            guest,
            resource,
            limits: limits.clone(),
            guest_time: started.elapsed(),
            returned: Vec::new(),
        })
    }
}

/// The world a component implements, by the interface it exports.
fn world_of(
    instance_pre: wasmtime::component::InstancePre<HostState>,
) -> Result<Pre, PluginFailure> {
    let streaming = match bindings::PluginPre::new(instance_pre.clone()) {
        Ok(pre) => return Ok(Pre::Streaming(pre)),
        Err(error) => error,
    };
    let records = match record_bindings::RecordPluginPre::new(instance_pre.clone()) {
        Ok(pre) => return Ok(Pre::Records(pre)),
        Err(error) => error,
    };
    transform_bindings::RecordTransformPluginPre::new(instance_pre)
        .map(Pre::Transforms)
        .map_err(|transforms| {
            PluginFailure::Invalid(format!(
                "the component exports none of the export-service:plugin interfaces \
                 `processor` ({streaming:#}), `records` ({records:#}) or `record-transforms` \
                 ({transforms:#})"
            ))
        })
}

/// How much memory a compiled component is estimated to hold: its compiled image (code and
/// data, as mapped) plus the size of what it was made from (the wasm or the artefact) again
/// for what loading keeps on the heap (types, the pre-instantiation's lookups).
fn compiled_size(component: &Component, source_bytes: usize) -> usize {
    let image = component.image_range();
    (image.end as usize - image.start as usize).saturating_add(source_bytes)
}
