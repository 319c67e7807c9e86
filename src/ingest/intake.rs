//! The first step of an upload: the body as it arrives, with the limits that bound reading it —
//! the size limit, the idle timeout and, for JSON, the nesting depth — and the bytes the format
//! sniffer looked at, replayed first. It counts what it received; the count is read back from
//! the stage itself when the upload ends.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use export_convert::JsonDepth;
use futures::Stream;
use futures::stream::BoxStream;
use tokio::time::{Instant, Sleep};

use super::IngestError;
use super::sniff::{self, Sniffed};
use crate::domain::Format;

/// An upload's body: chunks, or the reason the next one cannot be read.
pub type BodyStream = BoxStream<'static, Result<Bytes, String>>;

/// The body of an upload as it arrives, limited; yields its chunks in order.
pub struct Intake {
    body: BodyStream,
    /// Chunks the sniffer read, handed out before the rest of the body.
    replay: VecDeque<Bytes>,
    idle: Duration,
    idle_timer: Pin<Box<Sleep>>,
    /// Whether the last poll of the body was pending (the idle timer runs).
    waiting: bool,
    received: u64,
    max_bytes: u64,
    depth: Option<JsonDepth>,
    ended: bool,
}

impl Intake {
    /// Reads `body`, refusing more than `max_bytes` and pauses longer than `idle`.
    pub fn new(body: BodyStream, max_bytes: u64, idle: Duration) -> Self {
        Self {
            body,
            replay: VecDeque::new(),
            idle,
            idle_timer: Box::pin(tokio::time::sleep(idle)),
            waiting: false,
            received: 0,
            max_bytes,
            depth: None,
            ended: false,
        }
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Settles the format the body is in: `declared` (from `Content-Type`) or, without one,
    /// sniffed from the first non-blank byte (`stored` when the body is blank). Data sniffed to
    /// be in another format than `stored` loses its leading blanks, which mean nothing to the
    /// converter (spaces would join the first CSV name). JSON is depth-checked from here on.
    pub async fn settle_format(
        &mut self,
        declared: Option<Format>,
        stored: Format,
    ) -> Result<Format, IngestError> {
        let format = match declared {
            Some(format) => format,
            None => {
                let Sniffed { format, mut prefix } =
                    sniff::sniff_format(&mut RawChunks(self), stored).await?;
                if format != stored {
                    sniff::drop_leading_blanks(&mut prefix);
                }
                self.replay.extend(prefix);
                format
            }
        };
        self.depth = (format == Format::Json).then(JsonDepth::default);
        Ok(format)
    }

    /// The next chunk of the body itself, counted and limited.
    fn poll_body(&mut self, context: &mut Context<'_>) -> Poll<Option<Result<Bytes, IngestError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let polled = self.body.as_mut().poll_next(context);
        if polled.is_ready() {
            self.waiting = false;
        }
        let chunk = match polled {
            Poll::Pending => {
                // The pause is timed from when this stage started waiting: time the rest of the
                // pipeline spends on earlier chunks is not the client's.
                if !self.waiting {
                    self.waiting = true;
                    let deadline = Instant::now() + self.idle;
                    self.idle_timer.as_mut().reset(deadline);
                }
                ready!(self.idle_timer.as_mut().poll(context));
                self.ended = true;
                return Poll::Ready(Some(Err(IngestError::Idle(self.idle))));
            }
            Poll::Ready(None) => {
                self.ended = true;
                return Poll::Ready(None);
            }
            Poll::Ready(Some(Err(reason))) => {
                self.ended = true;
                return Poll::Ready(Some(Err(IngestError::Body(reason))));
            }
            Poll::Ready(Some(Ok(chunk))) => chunk,
        };
        self.received += chunk.len() as u64;
        if self.received > self.max_bytes {
            self.ended = true;
            return Poll::Ready(Some(Err(IngestError::TooLarge {
                limit_mib: self.max_bytes / (1024 * 1024),
            })));
        }
        Poll::Ready(Some(Ok(chunk)))
    }
}

impl Stream for Intake {
    type Item = Result<Bytes, IngestError>;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let chunk = match this.replay.pop_front() {
            Some(chunk) => chunk,
            None => match ready!(this.poll_body(context)) {
                Some(Ok(chunk)) => chunk,
                other => return Poll::Ready(other),
            },
        };
        if let Some(depth) = &mut this.depth
            && let Err(error) = depth.feed(&chunk)
        {
            this.ended = true;
            this.replay.clear();
            return Poll::Ready(Some(Err(IngestError::Rejected(error))));
        }
        Poll::Ready(Some(Ok(chunk)))
    }
}

/// The body's chunks without the replay or the depth check: what the sniffer reads.
struct RawChunks<'a>(&'a mut Intake);

impl Stream for RawChunks<'_> {
    type Item = Result<Bytes, IngestError>;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_body(context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn body(chunks: &[&'static [u8]]) -> BodyStream {
        futures::stream::iter(
            chunks
                .iter()
                .map(|chunk| Ok(Bytes::from_static(chunk)))
                .collect::<Vec<_>>(),
        )
        .boxed()
    }

    /// An intake of `body` whose format is declared as `format`, the export's too.
    async fn declared(body: BodyStream, format: Format, limit: u64, idle: Duration) -> Intake {
        let mut intake = Intake::new(body, limit, idle);
        let settled = intake.settle_format(Some(format), format).await.unwrap();
        assert_eq!(settled, format);
        intake
    }

    async fn collect(intake: &mut Intake) -> Result<Vec<u8>, IngestError> {
        let mut all = Vec::new();
        while let Some(chunk) = intake.next().await {
            all.extend_from_slice(&chunk?);
        }
        Ok(all)
    }

    #[tokio::test]
    async fn sniffed_bytes_are_replayed_and_counted_once() {
        let mut intake = Intake::new(body(&[b"  ", b"[1,", b"2]"]), 100, Duration::from_secs(5));
        let format = intake.settle_format(None, Format::Json).await.unwrap();
        assert_eq!(format, Format::Json);
        assert_eq!(collect(&mut intake).await.unwrap(), b"  [1,2]");
        assert_eq!(intake.received(), 7);
    }

    #[tokio::test]
    async fn blanks_before_data_of_the_other_format_are_dropped() {
        let mut intake = Intake::new(body(&[b" \n", b"id\n1\n"]), 100, Duration::from_secs(5));
        let format = intake.settle_format(None, Format::Json).await.unwrap();
        assert_eq!(format, Format::Csv);
        assert_eq!(collect(&mut intake).await.unwrap(), b"id\n1\n");
        assert_eq!(intake.received(), 7, "the dropped blanks were received");
    }

    #[tokio::test]
    async fn a_body_over_the_limit_stops_at_the_chunk_that_passes_it() {
        let mut intake = declared(
            body(&[b"1234", b"5678"]),
            Format::Csv,
            6,
            Duration::from_secs(5),
        )
        .await;
        assert!(matches!(
            collect(&mut intake).await,
            Err(IngestError::TooLarge { .. })
        ));
    }

    #[tokio::test]
    async fn json_nested_too_deep_is_rejected_while_streaming() {
        let deep: &'static [u8] = Box::leak("[".repeat(1000).into_boxed_str()).as_bytes();
        let mut intake =
            declared(body(&[deep]), Format::Json, 10_000, Duration::from_secs(5)).await;
        assert!(matches!(
            collect(&mut intake).await,
            Err(IngestError::Rejected(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_longer_than_the_idle_timeout_ends_the_body() {
        let stalled = futures::stream::pending::<Result<Bytes, String>>().boxed();
        let mut intake = declared(stalled, Format::Csv, 100, Duration::from_secs(3)).await;
        assert!(matches!(
            collect(&mut intake).await,
            Err(IngestError::Idle(idle)) if idle == Duration::from_secs(3)
        ));
    }
}
