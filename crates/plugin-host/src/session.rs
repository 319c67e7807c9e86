//! One upload's session with a plugin: `push` each chunk, `finish`, and read the output in
//! place; every call is armed with its deadline and classified when it fails.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::Store;
use wasmtime::component::ResourceAny;

use crate::failure::{PluginFailure, failure, guest_failure, output_too_large};
use crate::host::LoadedPlugin;
use crate::limits::PluginLimits;
use crate::records::{RecordSplitter, RecordWriter, unsplittable, with_rows};
use crate::state::HostState;
use crate::waits::WaitDeadline;
use crate::{
    EPOCH_TICK, GuestError, StepOutput, Violation, bindings, record_bindings, transform_bindings,
};

/// One upload going through a plugin.
pub struct PluginSession {
    pub(crate) plugin: Arc<LoadedPlugin>,
    pub(crate) store: Store<HostState>,
    pub(crate) guest: Guest,
    pub(crate) resource: ResourceAny,
    pub(crate) limits: PluginLimits,
    pub(crate) guest_time: Duration,
    /// The output the last call returned (as opposed to `emit`ted).
    pub(crate) returned: Vec<u8>,
}

/// The instance a session runs, by the world it implements.
pub(crate) enum Guest {
    /// A streaming plugin: chunks go in as they are.
    Streaming(bindings::Plugin),
    /// A record-mode plugin, with the splitter that turns chunks into its batches.
    Records(record_bindings::RecordPlugin, Box<RecordSplitter>),
    /// A record-transforming plugin, with the splitter and the writer of what it returns.
    Transforms(
        transform_bindings::RecordTransformPlugin,
        Box<(RecordSplitter, RecordWriter)>,
    ),
}

/// What one call produced: its output, read in place from the plugin's memory (what it
/// `emit`ted) and from what it returned, and the problems it found. Borrows the session: the
/// output stays valid until the next call.
#[derive(Debug)]
pub struct Step<'a> {
    pub(crate) output: Vec<&'a [u8]>,
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
        self.call(|guest, store, resource| match guest {
            Guest::Streaming(instance) => instance
                .export_service_plugin_processor()
                .session()
                .call_push(store, resource, chunk),
            Guest::Records(instance, splitter) => {
                if let Err(error) = splitter.push(chunk) {
                    return Ok(Err(GuestError::Rejected(vec![unsplittable(error)])));
                }
                // A record-mode plugin only checks: the upload goes on as it came.
                check_batches(instance, splitter, store, resource, chunk.to_vec())
            }
            Guest::Transforms(instance, records) => {
                let (splitter, writer) = &mut **records;
                if let Err(error) = splitter.push(chunk) {
                    return Ok(Err(GuestError::Rejected(vec![unsplittable(error)])));
                }
                transform_batches(instance, splitter, writer, store, resource)
            }
        })
    }

    /// Ends the upload.
    pub fn finish(&mut self) -> Result<Step<'_>, PluginFailure> {
        self.call(|guest, store, resource| match guest {
            Guest::Streaming(instance) => instance
                .export_service_plugin_processor()
                .session()
                .call_finish(store, resource),
            Guest::Records(instance, splitter) => {
                if let Err(error) = splitter.finish() {
                    return Ok(Err(GuestError::Rejected(vec![unsplittable(error)])));
                }
                let mut step = match check_batches(instance, splitter, store, resource, Vec::new())?
                {
                    Ok(step) => step,
                    Err(error) => return Ok(Err(error)),
                };
                match instance
                    .export_service_plugin_records()
                    .checker()
                    .call_finish(store, resource)?
                {
                    Ok(found) => step.violations.extend(found),
                    Err(error) => return Ok(Err(error)),
                }
                Ok(Ok(step))
            }
            Guest::Transforms(instance, records) => {
                let (splitter, writer) = &mut **records;
                if let Err(error) = splitter.finish() {
                    return Ok(Err(GuestError::Rejected(vec![unsplittable(error)])));
                }
                let mut step = match transform_batches(instance, splitter, writer, store, resource)?
                {
                    Ok(step) => step,
                    Err(error) => return Ok(Err(error)),
                };
                let (last, found) = match instance
                    .export_service_plugin_record_transforms()
                    .transformer()
                    .call_finish(store, resource)?
                {
                    Ok(ended) => ended,
                    Err(error) => return Ok(Err(error)),
                };
                step.violations.extend(found);
                let written = writer
                    .write(&last, &mut step.output)
                    .and_then(|()| writer.finish(&mut step.output));
                Ok(written.map(|()| step).map_err(GuestError::Failed))
            }
        })
    }

    fn call(
        &mut self,
        run: impl FnOnce(
            &mut Guest,
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
        let result = run(&mut self.guest, &mut self.store, self.resource);
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

/// Hands every batch the splitter holds to a record-mode plugin's `check`; the step's output
/// is `output`, its violations those found, with their rows.
fn check_batches(
    instance: &record_bindings::RecordPlugin,
    splitter: &mut RecordSplitter,
    store: &mut Store<HostState>,
    resource: ResourceAny,
    output: Vec<u8>,
) -> wasmtime::Result<Result<StepOutput, GuestError>> {
    let mut violations = Vec::new();
    while let Some((first, batch)) = splitter.next_batch() {
        let found = instance
            .export_service_plugin_records()
            .checker()
            .call_check(&mut *store, resource, &batch)?;
        match found {
            Ok(found) => violations.extend(with_rows(first, batch.len(), found)),
            Err(error) => return Ok(Err(error)),
        }
    }
    Ok(Ok(StepOutput { output, violations }))
}

/// Hands every batch the splitter holds to a transforming plugin; the step's output is the
/// records it returned, written in the output format, its violations those found, with their
/// rows.
fn transform_batches(
    instance: &transform_bindings::RecordTransformPlugin,
    splitter: &mut RecordSplitter,
    writer: &mut RecordWriter,
    store: &mut Store<HostState>,
    resource: ResourceAny,
) -> wasmtime::Result<Result<StepOutput, GuestError>> {
    let mut output = Vec::new();
    let mut violations = Vec::new();
    while let Some((first, batch)) = splitter.next_batch() {
        let transformed = match instance
            .export_service_plugin_record_transforms()
            .transformer()
            .call_transform(&mut *store, resource, &batch)?
        {
            Ok(transformed) => transformed,
            Err(error) => return Ok(Err(error)),
        };
        violations.extend(with_rows(first, batch.len(), transformed.violations));
        if let Err(reason) = writer.write(&transformed.records, &mut output) {
            return Ok(Err(GuestError::Failed(reason)));
        }
    }
    Ok(Ok(StepOutput { output, violations }))
}

/// Gives the store's next call `budget`: the epoch deadline for the plugin's code and the same
/// deadline for its WASI waits.
pub(crate) fn arm(store: &mut Store<HostState>, budget: Duration) {
    store.set_epoch_deadline(ticks(budget));
    store.data_mut().wait_deadline = WaitDeadline::at(Instant::now() + budget);
}

fn ticks(duration: Duration) -> u64 {
    (duration.as_micros() / EPOCH_TICK.as_micros()).max(1) as u64 + 1
}
