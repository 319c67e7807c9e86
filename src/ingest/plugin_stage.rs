//! The plugin step of an upload: the chunks stream through the application's Wasm plugin on a
//! blocking thread (the plugin's calls must not stall the async workers), and its output
//! streams on towards the store. Violations are collected and reject the upload at the end.
//! When the step is done it hands back what it measured: the bytes it read and the session's
//! figures.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::IngestError;
use export_plugin_host::{
    CHUNK_BYTES, LoadedPlugin, PluginFailure, PluginHost, PluginLimits, SessionOptions, Violation,
};

/// The most violations collected (the rest are counted, not kept).
pub const MAX_VIOLATIONS: usize = 100;

/// What a plugin session cost, read when it ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionFigures {
    /// Time inside the plugin.
    pub guest_time: Duration,
    /// Fuel consumed, when the host meters it.
    pub fuel: Option<u64>,
    /// Peak linear memory of the plugin, in bytes.
    pub peak_memory: usize,
}

enum Input {
    Chunk(Bytes),
    End,
}

/// What the session thread sends on. `Done` is explicit so that a session that died without
/// saying so (a panic) is a failure, not a short but complete output.
enum Output {
    Data(Bytes),
    Failed(IngestError),
    Done,
}

/// The plugin's output, chunk by chunk; the stage's figures come from [`PluginStage::finish`].
pub struct PluginStage<S> {
    output: mpsc::Receiver<Output>,
    /// Forwards the input to the plugin's thread, and gives the input stage back at its end.
    /// Aborted when the stage is dropped: an abandoned upload stops reading its body.
    forwarder: Option<JoinHandle<S>>,
    /// Runs the session, and gives its figures back at its end.
    session: Option<JoinHandle<Option<SessionFigures>>>,
    ended: bool,
}

impl<S> PluginStage<S>
where
    S: Stream<Item = Result<Bytes, IngestError>> + Send + Unpin + 'static,
{
    /// Runs `input` through a session of `plugin` under `limits`.
    pub fn start(
        host: Arc<PluginHost>,
        plugin: Arc<LoadedPlugin>,
        options: SessionOptions,
        limits: PluginLimits,
        mut input: S,
    ) -> Self {
        let (input_sender, input_receiver) = mpsc::channel::<Input>(2);
        let (output_sender, output) = mpsc::channel(2);
        let failures = output_sender.clone();
        let forwarder = tokio::spawn(async move {
            while let Some(chunk) = input.next().await {
                match chunk {
                    Ok(mut chunk) => {
                        // A plugin call takes at most one chunk of the size the host promises.
                        while !chunk.is_empty() {
                            let piece = chunk.split_to(chunk.len().min(CHUNK_BYTES));
                            if input_sender.send(Input::Chunk(piece)).await.is_err() {
                                return input;
                            }
                        }
                    }
                    Err(error) => {
                        // The input's own failure ends the upload; the session is abandoned.
                        drop(input_sender);
                        let _ = failures.send(Output::Failed(error)).await;
                        return input;
                    }
                }
            }
            let _ = input_sender.send(Input::End).await;
            input
        });
        let session = tokio::task::spawn_blocking(move || {
            run_session(
                &host,
                &plugin,
                &options,
                &limits,
                input_receiver,
                &output_sender,
            )
        });
        Self {
            output,
            forwarder: Some(forwarder),
            session: Some(session),
            ended: false,
        }
    }

    /// Waits for both sides to end and gives back the input stage and the session's figures
    /// (`None` when the session did not finish).
    pub async fn finish(mut self) -> (Option<S>, Option<SessionFigures>) {
        self.output.close();
        let input = match self.forwarder.take() {
            Some(forwarder) => forwarder.await.ok(),
            None => None,
        };
        let figures = match self.session.take() {
            Some(session) => session.await.ok().flatten(),
            None => None,
        };
        (input, figures)
    }
}

/// The blocking side: one session over the chunks received; its output and its failure go to
/// `output`. Returns the session's figures when it finished.
fn run_session(
    host: &PluginHost,
    plugin: &Arc<LoadedPlugin>,
    options: &SessionOptions,
    limits: &PluginLimits,
    mut input: mpsc::Receiver<Input>,
    output: &mpsc::Sender<Output>,
) -> Option<SessionFigures> {
    let stop = |failure: PluginFailure| {
        let _ = output.blocking_send(Output::Failed(IngestError::Plugin(failure)));
        None
    };
    let mut session = match host.open_with(plugin, options, limits) {
        Ok(session) => session,
        Err(failure) => return stop(failure),
    };
    let mut violations: Vec<Violation> = Vec::new();
    loop {
        let (step, at_end) = match input.blocking_recv() {
            Some(Input::Chunk(chunk)) => (session.push(&chunk), false),
            Some(Input::End) => (session.finish(), true),
            // The forwarder went away without an end: the input failed or was abandoned.
            None => return None,
        };
        let mut step = match step {
            Ok(step) => step,
            Err(failure) => return stop(failure),
        };
        let room = MAX_VIOLATIONS.saturating_sub(violations.len());
        violations.extend(std::mem::take(&mut step.violations).into_iter().take(room));
        // The one copy out of the plugin's memory.
        let mut produced = Vec::new();
        step.append_output_to(&mut produced);
        if !produced.is_empty()
            && output
                .blocking_send(Output::Data(Bytes::from(produced)))
                .is_err()
        {
            return None;
        }
        if at_end {
            break;
        }
    }
    let figures = SessionFigures {
        guest_time: session.guest_time(),
        fuel: session.fuel_consumed(),
        peak_memory: session.peak_memory(),
    };
    if violations.is_empty() {
        let _ = output.blocking_send(Output::Done);
    } else {
        stop(PluginFailure::Rejected {
            plugin: plugin.info.name.clone(),
            violations,
        });
    }
    Some(figures)
}

impl<S> Drop for PluginStage<S> {
    fn drop(&mut self) {
        if let Some(forwarder) = &self.forwarder {
            forwarder.abort();
        }
    }
}

impl<S> Stream for PluginStage<S> {
    type Item = Result<Bytes, IngestError>;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let next = match ready!(self.output.poll_recv(context)) {
            Some(Output::Data(chunk)) => return Poll::Ready(Some(Ok(chunk))),
            Some(Output::Failed(error)) => Some(Err(error)),
            Some(Output::Done) => None,
            None => Some(Err(IngestError::Body(
                "the plugin stage stopped unexpectedly".into(),
            ))),
        };
        self.ended = true;
        Poll::Ready(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Idle = futures::stream::Empty<Result<Bytes, IngestError>>;

    fn stage(sent: Vec<Output>) -> PluginStage<Idle> {
        let (sender, output) = mpsc::channel(sent.len().max(1));
        for item in sent {
            assert!(sender.try_send(item).is_ok());
        }
        PluginStage {
            output,
            forwarder: None,
            session: None,
            ended: false,
        }
    }

    #[tokio::test]
    async fn a_session_that_says_it_is_done_ends_the_output() {
        let mut stage = stage(vec![Output::Data(Bytes::from_static(b"a")), Output::Done]);
        assert_eq!(stage.next().await.unwrap().unwrap(), "a");
        assert!(stage.next().await.is_none());
    }

    #[tokio::test]
    async fn a_session_that_dies_without_saying_so_fails_the_upload() {
        let mut stage = stage(vec![Output::Data(Bytes::from_static(b"a"))]);
        assert_eq!(stage.next().await.unwrap().unwrap(), "a");
        assert!(matches!(
            stage.next().await,
            Some(Err(IngestError::Body(reason))) if reason.contains("stopped unexpectedly")
        ));
        assert!(stage.next().await.is_none());
    }
}
