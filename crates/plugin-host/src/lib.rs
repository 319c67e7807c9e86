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
//!
//! The crate is a leaf: it knows wasmtime and the contract in `wit/`, nothing of the service.
//! The service builds [`PluginLimits`] from its configuration and decides what a plugin's
//! output means.

pub mod artefact;
pub mod cache;
mod contract;
mod failure;
mod host;
mod limits;
mod records;
mod session;
mod state;
pub mod tool;
pub mod waits;

use std::time::Duration;

pub use artefact::ArtefactDir;
pub use contract::CONTRACT_VERSION;
pub use failure::PluginFailure;
pub use host::{LoadedPlugin, PluginHost};
pub use limits::{DEFAULT_CACHE_MIB, PluginLimits};
pub use session::{PluginSession, Step};
pub use state::{HostState, MAX_EMITS_PER_CALL};

#[expect(
    missing_docs,
    reason = "generated from wit/plugin.wit, documented there"
)]
mod bindings {
    wasmtime::component::bindgen!({
        world: "plugin",
        path: "../../wit",
    });
}
mod record_bindings {
    wasmtime::component::bindgen!({
        world: "record-plugin",
        path: "../../wit",
        with: {
            "export-service:plugin/types": super::bindings::export_service::plugin::types,
            "export-service:plugin/host": super::bindings::export_service::plugin::host,
        },
    });
}
mod transform_bindings {
    wasmtime::component::bindgen!({
        world: "record-transform-plugin",
        path: "../../wit",
        with: {
            "export-service:plugin/types": super::bindings::export_service::plugin::types,
            "export-service:plugin/host": super::bindings::export_service::plugin::host,
        },
    });
}
pub use bindings::export_service::plugin::types::{
    Capabilities, DataFormat, PluginError as GuestError, PluginInfo, RecordViolation, ResourceInfo,
    SessionOptions, StepOutput, Violation,
};
/// The most input the service hands a plugin in one `push` (the upload path and the author's
/// tool both read in chunks of this size).
pub const CHUNK_BYTES: usize = 256 * 1024;

/// How often the epoch advances: the granularity of deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);
/// The longest log line a plugin can write.
pub const MAX_LOG_LINE: usize = 1024;
/// Log lines one session may write (more are dropped).
pub const MAX_LOG_LINES: u32 = 1000;
