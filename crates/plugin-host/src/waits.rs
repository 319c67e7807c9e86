//! WASI waits bounded by the running call's deadline.
//!
//! Epoch interruption stops a plugin only while its own code runs: a plugin blocked inside a
//! host call (`std::thread::sleep`, i.e. `wasi:clocks/monotonic-clock.subscribe-duration` then
//! `wasi:io/poll.pollable.block`, or `poll` on a far deadline) never reaches an epoch check, so
//! the deadline alone would not stop it and its upload would hold the source for as long as the
//! plugin liked.
//!
//! Two ways out were weighed: refusing every wait (a trap on the first `subscribe` or `poll`),
//! or bounding each wait by the deadline of the call it happens in. This host bounds them. A
//! call's time limit is then one rule whatever the plugin does with its time — compute, wait, or
//! both — and a plugin that waits past it fails with the same timeout as one that spins, which
//! is what the operator's metrics and the tenant's message already say. Refusing would fail
//! plugins for a harmless short wait inside a library, with a reason ("crashed") that hides the
//! cause; it would free the blocked thread sooner, but never later than a spinning plugin holds
//! it, which the call deadline already accepts.
//!
//! Every WASI wait of this host goes through `wasi:io/poll` (`poll` and `pollable.block`), which
//! is shadowed here. The other calls named `blocking-*` (on streams) wait only for a stream to
//! be ready, and the only streams a plugin can reach are always ready: stdin is closed, stdout
//! and stderr discard what they get, and there are no files (no preopens) nor sockets (the
//! context refuses TCP, UDP and name lookups). A host that ever grants a stream that can stall
//! must bound those calls the same way.

use std::time::Instant;

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::p2::bindings::io::poll::{Host as AsyncPoll, HostPollable as AsyncPollable};
use wasmtime_wasi::p2::bindings::sync::io::poll as sync_poll;
use wasmtime_wasi::runtime::in_tokio;

use super::HostState;

/// The error a wait cut at its deadline fails the call with (the session reports a timeout).
#[derive(Debug, thiserror::Error)]
#[error("the plugin waited past the deadline of its call")]
pub struct WaitCut;

/// Where the running call's waits end, and whether one was cut there.
#[derive(Debug)]
pub struct WaitDeadline {
    /// When waits of the running call end.
    pub until: Instant,
    /// Whether a wait of the running call was cut at `until`.
    pub cut: bool,
}

impl WaitDeadline {
    /// A deadline at `until`, with no wait cut yet.
    pub fn at(until: Instant) -> Self {
        Self { until, cut: false }
    }
}

/// The `wasi:io/poll` view of a store: its resource table and its call's deadline.
struct Waits<'a> {
    table: &'a mut ResourceTable,
    deadline: &'a mut WaitDeadline,
}

struct BoundedWaits;

impl HasData for BoundedWaits {
    type Data<'a> = Waits<'a>;
}

impl Waits<'_> {
    /// Runs `wait` until it ends or the call's deadline passes, whichever comes first.
    fn bounded<R>(
        deadline: &mut WaitDeadline,
        wait: impl Future<Output = wasmtime::Result<R>>,
    ) -> wasmtime::Result<R> {
        let until = tokio::time::Instant::from_std(deadline.until);
        // A wait that is ready at once returns even past the deadline: only waiting is cut.
        // The timer is made inside the runtime `in_tokio` enters (the plugin runs outside one).
        match in_tokio(async move { tokio::time::timeout_at(until, wait).await }) {
            Ok(result) => result,
            Err(_elapsed) => {
                deadline.cut = true;
                Err(WaitCut.into())
            }
        }
    }
}

impl sync_poll::Host for Waits<'_> {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> wasmtime::Result<Vec<u32>> {
        Self::bounded(self.deadline, AsyncPoll::poll(self.table, pollables))
    }
}

impl sync_poll::HostPollable for Waits<'_> {
    fn ready(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<bool> {
        // Never waits: it checks readiness once.
        in_tokio(AsyncPollable::ready(self.table, pollable))
    }

    fn block(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        Self::bounded(self.deadline, AsyncPollable::block(self.table, pollable))
    }

    fn drop(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        AsyncPollable::drop(self.table, pollable)
    }
}

/// Replaces the `wasi:io/poll` that `wasmtime_wasi::p2::add_to_linker_sync` defined with one
/// whose waits end at the running call's deadline.
pub fn shadow_poll(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let shadowed = sync_poll::add_to_linker::<HostState, BoundedWaits>(linker, |state| Waits {
        table: &mut state.table,
        deadline: &mut state.wait_deadline,
    });
    linker.allow_shadowing(false);
    shadowed
}
