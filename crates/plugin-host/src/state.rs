//! The state of one store: the WASI context plugins get (nothing but a frozen clock), the
//! memory cap, the output a call `emit`s, the log, and the hand-linked `host` interface.

use std::time::Duration;

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, ResourceTable, WasmList};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings;
use crate::bindings::export_service::plugin::host::LogLevel;
use crate::contract::HOST_INTERFACE;
use crate::limits::MemoryCap;
use crate::waits::WaitDeadline;
use crate::{MAX_LOG_LINE, MAX_LOG_LINES};

/// The state of one store.
pub struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) memory: MemoryCap,
    pub(crate) plugin: String,
    pub(crate) log_lines: u32,
    pub(crate) emitted: Emitted,
    pub(crate) wait_deadline: WaitDeadline,
}

/// The most pieces of output one call may `emit` (each costs the host a record, whatever its
/// size).
pub const MAX_EMITS_PER_CALL: usize = 4096;

/// What the running call `emit`ted: places in the plugin's memory, read when the call returns.
#[derive(Default)]
pub(crate) struct Emitted {
    pub(crate) lists: Vec<WasmList<u8>>,
    pub(crate) bytes: usize,
    /// Output limit of one call; `emit` past it traps the plugin.
    pub(crate) limit: usize,
    /// Whether a `push` or `finish` is running (output has nowhere to go during `open` or
    /// `describe`).
    pub(crate) in_call: bool,
    /// Why an `emit` was refused (the plugin then traps), when one was.
    pub(crate) refused: Option<EmitRefused>,
}

/// Why the host refused an `emit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EmitRefused {
    /// More bytes than the output limit of one call.
    Bytes,
    /// More than [`MAX_EMITS_PER_CALL`] pieces.
    Pieces,
    /// Outside `push` and `finish`.
    OutsideCall,
}

impl Emitted {
    pub(crate) fn start_call(&mut self) {
        self.lists.clear();
        self.bytes = 0;
        self.in_call = true;
        self.refused = None;
    }

    pub(crate) fn add(&mut self, list: WasmList<u8>) -> wasmtime::Result<()> {
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

/// Defines the `host` interface. By hand rather than generated: `emit` takes its bytes as a
/// [`WasmList`] (where they lie in the plugin's memory) instead of a copy.
pub(crate) fn add_host_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
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

/// A clock that never moves: plugins get no real time (their output cannot depend on it).
pub(crate) struct FrozenClock;

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
