//! The plugin step of an upload: the bytes stream through the application's Wasm plugin on a
//! blocking thread (the plugin's calls must not stall the async workers), chunk by chunk, and its
//! output streams on towards the store. Violations are collected and reject the upload at the end.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio_util::io::StreamReader;

use crate::plugin_host::{
    CHUNK_BYTES, LoadedPlugin, PluginFailure, PluginHost, SessionOptions, Violation,
};

/// The most violations collected (the rest are counted, not kept).
pub const MAX_VIOLATIONS: usize = 100;

/// Carried inside `io::Error` when the plugin failed or rejected the data.
#[derive(Debug)]
pub struct PluginStopped(pub PluginFailure);

impl std::fmt::Display for PluginStopped {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(formatter)
    }
}

impl std::error::Error for PluginStopped {}

enum Input {
    Chunk(Bytes),
    End,
    Failed(io::Error),
}

enum Output {
    Chunk(Bytes),
    Done,
    Failed(io::Error),
}

/// Runs `input` through a session of `plugin` and returns a reader of its output, plus a counter
/// of the input bytes read.
pub fn through_plugin<R>(
    host: Arc<PluginHost>,
    plugin: Arc<LoadedPlugin>,
    options: SessionOptions,
    mut input: R,
) -> (impl AsyncRead + Send + Unpin + 'static, Arc<AtomicU64>)
where
    R: AsyncRead + Send + Unpin + 'static,
{
    let (input_sender, mut input_receiver) = mpsc::channel::<Input>(2);
    let (output_sender, output_receiver) = mpsc::channel::<Output>(2);
    let read_bytes = Arc::new(AtomicU64::new(0));
    let counter = read_bytes.clone();
    tokio::spawn(async move {
        let mut buffer = vec![0u8; CHUNK_BYTES];
        loop {
            let message = match input.read(&mut buffer).await {
                Ok(0) => Input::End,
                Ok(read) => {
                    counter.fetch_add(read as u64, Ordering::Relaxed);
                    Input::Chunk(Bytes::copy_from_slice(&buffer[..read]))
                }
                Err(error) => Input::Failed(error),
            };
            let last = !matches!(message, Input::Chunk(_));
            if input_sender.send(message).await.is_err() || last {
                return;
            }
        }
    });
    tokio::task::spawn_blocking(move || {
        let stopped = |failure: PluginFailure| {
            Output::Failed(io::Error::new(
                io::ErrorKind::InvalidData,
                PluginStopped(failure),
            ))
        };
        let mut session = match host.open(&plugin, &options) {
            Ok(session) => session,
            Err(failure) => {
                let _ = output_sender.blocking_send(stopped(failure));
                return;
            }
        };
        let mut violations: Vec<Violation> = Vec::new();
        loop {
            let (step, at_end) = match input_receiver.blocking_recv() {
                Some(Input::Chunk(chunk)) => (session.push(&chunk), false),
                Some(Input::End) => (session.finish(), true),
                Some(Input::Failed(error)) => {
                    let _ = output_sender.blocking_send(Output::Failed(error));
                    return;
                }
                // The forwarder went away without an end: the upload was abandoned.
                None => return,
            };
            match step {
                Ok(mut step) => {
                    let room = MAX_VIOLATIONS.saturating_sub(violations.len());
                    violations.extend(std::mem::take(&mut step.violations).into_iter().take(room));
                    // The one copy out of the plugin's memory.
                    let mut output = Vec::new();
                    step.append_output_to(&mut output);
                    if !output.is_empty()
                        && output_sender
                            .blocking_send(Output::Chunk(Bytes::from(output)))
                            .is_err()
                    {
                        return;
                    }
                }
                Err(failure) => {
                    let _ = output_sender.blocking_send(stopped(failure));
                    return;
                }
            }
            if at_end {
                break;
            }
        }
        let last = if violations.is_empty() {
            Output::Done
        } else {
            stopped(PluginFailure::Rejected {
                plugin: plugin.info.name.clone(),
                violations,
            })
        };
        let _ = output_sender.blocking_send(last);
    });
    let chunks = futures::stream::unfold(output_receiver, |mut receiver| async move {
        match receiver.recv().await {
            Some(Output::Chunk(bytes)) => Some((Ok(bytes), receiver)),
            Some(Output::Done) => None,
            Some(Output::Failed(error)) => Some((Err(error), receiver)),
            None => Some((
                Err(io::Error::other("the plugin stage stopped unexpectedly")),
                receiver,
            )),
        }
    });
    (StreamReader::new(Box::pin(chunks)), read_bytes)
}
