//! The body of a single streamed `PutObject`: exactly the declared number of bytes, read from
//! the upload as they arrive, with memory bounded by a few frames. Its last frame is withheld
//! until the reader has ended cleanly, so a pipeline that stops — even at its very end, as a
//! schema check does — leaves the request short of its `Content-Length`, and no store keeps an
//! object from a request whose body did not arrive whole.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use std::task::ready;

use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf, Take};
use tokio::sync::mpsc;

use super::{PutError, StoreError};

/// Bytes per frame: large enough that the channel costs nothing per byte, small enough that
/// the frames in flight stay far below one multipart part.
const FRAME: usize = 256 * 1024;
/// Frames queued between the reader and the connection.
const QUEUED: usize = 2;

/// The request body: frames from the feeding reader, with the exact length as its size hint.
pub struct ExactBody {
    frames: mpsc::Receiver<Bytes>,
    length: u64,
}

impl Body for ExactBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.frames
            .poll_recv(context)
            .map(|frame| frame.map(|data| Ok(Frame::data(data))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.length)
    }
}

/// What feeding the body came to.
#[derive(Debug)]
pub enum Fed {
    /// Every byte was queued; the body ends after them.
    Whole,
    /// The request went away (the store answered or failed) before the body was whole.
    RequestGone,
}

/// A body of `length` bytes and the sender [`feed`] fills it through.
pub fn channel(length: u64) -> (ExactBody, mpsc::Sender<Bytes>) {
    let (sender, frames) = mpsc::channel(QUEUED);
    (ExactBody { frames, length }, sender)
}

/// Reads `reader` (an [`ExactLength`], so it ends exactly at the declared length or fails)
/// to its end into `sender`. The last frame is sent only after the reader ended without error.
/// A store that takes no frame for `stall` has hung: the time the client takes to send is the
/// upload's own limits' business, the time the store takes to accept is this one's.
pub async fn feed(
    reader: &mut (dyn AsyncRead + Unpin + Send),
    sender: mpsc::Sender<Bytes>,
    stall: Duration,
) -> Result<Fed, PutError> {
    let mut withheld: Option<Bytes> = None;
    loop {
        let frame = read_frame(reader).await.map_err(PutError::Body)?;
        if frame.is_empty() {
            break;
        }
        if let Some(previous) = withheld.replace(frame)
            && !send(&sender, previous, stall).await?
        {
            return Ok(Fed::RequestGone);
        }
    }
    if let Some(last) = withheld
        && !send(&sender, last, stall).await?
    {
        return Ok(Fed::RequestGone);
    }
    Ok(Fed::Whole)
}

/// Queues `frame`; `Ok(false)` when the request is gone.
async fn send(
    sender: &mpsc::Sender<Bytes>,
    frame: Bytes,
    stall: Duration,
) -> Result<bool, PutError> {
    match tokio::time::timeout(stall, sender.send(frame)).await {
        Ok(sent) => Ok(sent.is_ok()),
        Err(_) => Err(StoreError::Unavailable(format!(
            "the store accepted no bytes of the object for {stall:?}"
        ))
        .into()),
    }
}

/// A reader that yields exactly `length` bytes of its inner reader and fails when the inner
/// one ends sooner or has more.
pub struct ExactLength<'a> {
    inner: Take<&'a mut (dyn AsyncRead + Unpin + Send)>,
    length: u64,
}

impl<'a> ExactLength<'a> {
    /// `inner`, which must yield `length` bytes.
    pub fn new(inner: &'a mut (dyn AsyncRead + Unpin + Send), length: u64) -> Self {
        Self {
            inner: inner.take(length),
            length,
        }
    }
}

impl AsyncRead for ExactLength<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let remaining = this.inner.limit();
        if remaining == 0 {
            // Past the length, the inner reader must be at its end.
            let mut probe = [0u8; 1];
            let mut probe = ReadBuf::new(&mut probe);
            ready!(Pin::new(&mut **this.inner.get_mut()).poll_read(context, &mut probe))?;
            if !probe.filled().is_empty() {
                return Poll::Ready(Err(io::Error::other(format!(
                    "the body is longer than the {} bytes it declared",
                    this.length
                ))));
            }
            return Poll::Ready(Ok(()));
        }
        let before = buffer.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(context, buffer))?;
        if buffer.filled().len() == before && buffer.remaining() > 0 {
            return Poll::Ready(Err(io::Error::other(format!(
                "the body ended after {} of the {} bytes it declared",
                this.length - remaining,
                this.length
            ))));
        }
        Poll::Ready(Ok(()))
    }
}

/// Up to [`FRAME`] bytes; empty at the reader's end.
async fn read_frame(reader: &mut (dyn AsyncRead + Unpin + Send)) -> io::Result<Bytes> {
    let mut frame = BytesMut::with_capacity(FRAME);
    while frame.len() < FRAME {
        let room = (FRAME - frame.len()) as u64;
        if (&mut *reader).take(room).read_buf(&mut frame).await? == 0 {
            break;
        }
    }
    Ok(frame.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn fed(data: Vec<u8>, length: u64) -> (Result<Fed, PutError>, Vec<u8>) {
        let (body, sender) = channel(length);
        let mut data = std::io::Cursor::new(data);
        let mut reader = ExactLength::new(&mut data, length);
        let feeding = feed(&mut reader, sender, Duration::from_secs(5));
        let collecting = async {
            let mut body = body;
            let mut all = Vec::new();
            while let Some(frame) = body.frame().await {
                all.extend_from_slice(&frame.unwrap().into_data().unwrap());
            }
            all
        };
        tokio::join!(feeding, collecting)
    }

    #[tokio::test]
    async fn the_whole_body_arrives_in_order() {
        let data: Vec<u8> = (0..FRAME * 3 + 17).map(|index| index as u8).collect();
        let (result, received) = fed(data.clone(), data.len() as u64).await;
        assert!(matches!(result, Ok(Fed::Whole)));
        assert_eq!(received, data);
    }

    #[tokio::test]
    async fn a_short_body_never_sends_its_last_frame() {
        let data = vec![7u8; FRAME * 2 + 5];
        let (result, received) = fed(data, (FRAME * 3) as u64).await;
        assert!(matches!(result, Err(PutError::Body(_))));
        assert_eq!(
            received.len(),
            FRAME,
            "the frame before the failed read was withheld"
        );
    }

    #[tokio::test]
    async fn a_long_body_is_refused_before_its_excess_is_sent() {
        let data = vec![7u8; FRAME + 1];
        let (result, received) = fed(data, FRAME as u64).await;
        assert!(matches!(result, Err(PutError::Body(_))));
        assert!(received.is_empty());
    }

    /// A reader that yields some bytes, then fails: what the pipeline does when it stops.
    struct FailingAfter(Option<Vec<u8>>);

    impl AsyncRead for FailingAfter {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buffer: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            match self.0.take() {
                Some(data) => {
                    buffer.put_slice(&data);
                    Poll::Ready(Ok(()))
                }
                None => Poll::Ready(Err(io::Error::other("schema violated"))),
            }
        }
    }

    #[tokio::test]
    async fn a_reader_failing_at_its_end_leaves_the_body_short() {
        let (mut body, sender) = channel(10);
        let mut failing = FailingAfter(Some(vec![1; 10]));
        let mut reader = ExactLength::new(&mut failing, 10);
        let result = feed(&mut reader, sender, Duration::from_secs(5)).await;
        assert!(matches!(result, Err(PutError::Body(_))));
        assert!(body.frame().await.is_none(), "no byte of the body was sent");
    }
}

#[cfg(test)]
mod stall_tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_store_that_takes_no_frame_is_unavailable_after_the_stall() {
        let (_body, sender) = channel((FRAME * 8) as u64);
        let mut data = std::io::Cursor::new(vec![0u8; FRAME * 8]);
        let mut reader = ExactLength::new(&mut data, (FRAME * 8) as u64);
        let result = feed(&mut reader, sender, Duration::from_secs(30)).await;
        assert!(
            matches!(result, Err(PutError::Store(StoreError::Unavailable(_)))),
            "{result:?}"
        );
    }
}
