//! Why a plugin could not be loaded or failed a session, classified from wasmtime's errors so
//! that every failure names the plugin and the limit or reason.

use wasmtime::{Store, Trap};

use crate::limits::PluginLimits;
use crate::state::{EmitRefused, HostState};
use crate::waits::WaitCut;
use crate::{GuestError, MAX_EMITS_PER_CALL, Violation};

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

pub(crate) fn output_too_large(plugin: &str, limits: &PluginLimits) -> PluginFailure {
    PluginFailure::OutputTooLarge {
        plugin: plugin.to_owned(),
        limit_mib: limits.output_bytes_per_call / (1024 * 1024),
    }
}

/// Classifies a failed call: deadline, memory, or a trap.
pub(crate) fn failure(
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

pub(crate) fn guest_failure(plugin: &str, error: GuestError) -> PluginFailure {
    let plugin = plugin.to_owned();
    match error {
        GuestError::InvalidConfig(reason) => PluginFailure::InvalidConfig { plugin, reason },
        GuestError::Rejected(violations) => PluginFailure::Rejected { plugin, violations },
        GuestError::Failed(reason) => PluginFailure::Failed { plugin, reason },
    }
}
