//! Handing a step's output to the host without copying it.
//!
//! The host reads what a call `emit`s straight from the plugin's memory when the call returns
//! (`host.emit` in `wit/plugin.wit`), so those bytes must stay where they are until then. Output
//! borrowed from the session stays put by itself: nothing touches the session between the
//! `emit` and the next call. Output in a buffer the call would free (an owned `Vec`, or the
//! chunk itself, passed on unchanged) is kept here instead, and freed at the start of the next
//! call, once the host has read it.

use std::borrow::Cow;
use std::cell::RefCell;

use crate::bindings::export_service::plugin::host;
use crate::bindings::export_service::plugin::types::StepOutput as Handed;
use crate::{PluginError, Session, StepOutput};

thread_local! {
    /// Buffers the host reads from once the running call returns (a plugin has one thread).
    static KEPT: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// Frees what the previous call kept: the host has read it.
fn release() {
    KEPT.with_borrow_mut(Vec::clear);
}

/// Keeps `buffer` until the next call.
fn keep(buffer: Vec<u8>) {
    if buffer.capacity() > 0 {
        KEPT.with_borrow_mut(|kept| kept.push(buffer));
    }
}

/// Emits a step's output, keeps it when it is the step's own, and returns what the call itself
/// returns: the step's violations (the output went by `emit`). `input` is the call's chunk,
/// kept too when the output lies in it.
fn hand_over(step: StepOutput<'_>, input: &[u8]) -> (Handed, bool) {
    let StepOutput { output, violations } = step;
    if !output.is_empty() {
        host::emit(&output);
    }
    let in_input = !output.is_empty() && input.as_ptr_range().contains(&output.as_ptr());
    if let Cow::Owned(buffer) = output {
        keep(buffer);
    }
    let handed = Handed {
        output: Vec::new(),
        violations,
    };
    (handed, in_input)
}

/// `push` of the exported session: runs [`Session::push`] and hands its output over.
pub fn push_session<S: Session>(session: &mut S, chunk: Vec<u8>) -> Result<Handed, PluginError> {
    release();
    let (handed, in_chunk) = hand_over(session.push(&chunk)?, &chunk);
    if in_chunk {
        // Moving the `Vec` does not move its bytes.
        keep(chunk);
    }
    Ok(handed)
}

/// `finish` of the exported session: runs [`Session::finish`] and hands its output over.
pub fn finish_session<S: Session>(session: &mut S) -> Result<Handed, PluginError> {
    release();
    Ok(hand_over(session.finish()?, &[]).0)
}
