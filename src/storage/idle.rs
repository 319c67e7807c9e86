//! A reader that fails when its source produces nothing for too long, so a store that stops
//! sending in the middle of a body frees whoever is reading it (the SDK's own timeouts end at
//! the response head).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Wraps `inner`: a read that waits longer than `timeout` for data fails with `TimedOut`.
pub struct IdleTimeout<R> {
    inner: R,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<R> IdleTimeout<R> {
    /// `inner`, failing after `timeout` without data.
    pub fn new(inner: R, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for IdleTimeout<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(context, buffer) {
            Poll::Ready(result) => {
                let next = Instant::now() + this.timeout;
                this.deadline.as_mut().reset(next);
                Poll::Ready(result)
            }
            Poll::Pending => match this.deadline.as_mut().poll(context) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the object store sent nothing for {} ms",
                        this.timeout.as_millis()
                    ),
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test(start_paused = true)]
    async fn a_stalled_source_times_out_and_a_steady_one_does_not() {
        let (mut writer, reader) = tokio::io::duplex(64);
        let mut reader = IdleTimeout::new(reader, Duration::from_secs(5));
        let feeding = tokio::spawn(async move {
            for _ in 0..4 {
                tokio::time::sleep(Duration::from_secs(3)).await;
                tokio::io::AsyncWriteExt::write_all(&mut writer, b"abc")
                    .await
                    .unwrap();
            }
            // Then stall without closing.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(writer);
        });
        let mut received = Vec::new();
        let mut buffer = [0u8; 16];
        let error = loop {
            match reader.read(&mut buffer).await {
                Ok(read) => received.extend_from_slice(&buffer[..read]),
                Err(error) => break error,
            }
        };
        // Twelve seconds of data at three-second gaps passed a five-second idle limit.
        assert_eq!(received, b"abcabcabcabc");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        feeding.abort();
    }
}
