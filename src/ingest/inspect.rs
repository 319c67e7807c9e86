//! The last step of an upload: the bytes as stored pass through, hashed and counted, bounded
//! by the stored-size limit and, when the binding has one, checked against its JSON Schema —
//! whose violations reject the upload at its end, before the store keeps anything.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};

use super::IngestError;
use super::rows::RowCounter;
use super::schema::SchemaCheck;
use crate::domain::Format;

/// The stored bytes of `inner`, inspected on their way.
pub struct Inspector<S> {
    inner: S,
    hasher: Sha256,
    rows: RowCounter,
    bytes: u64,
    max_bytes: u64,
    /// The JSON Schema check, and the plugin whose binding it belongs to.
    schema: Option<(SchemaCheck, String)>,
    ended: bool,
}

/// What the inspection found, with the stage it read from.
pub struct Inspected<S> {
    /// The stage the inspector read from.
    pub inner: S,
    /// SHA-256 of the bytes, hex.
    pub sha256: String,
    /// Bytes passed on.
    pub bytes: u64,
    /// Data rows, when the format tells.
    pub rows: Option<u64>,
}

impl<S> Inspector<S> {
    /// Inspects `inner`, data in `format`, refusing more than `max_bytes`.
    pub fn new(
        inner: S,
        format: Format,
        max_bytes: u64,
        schema: Option<(SchemaCheck, String)>,
    ) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            rows: RowCounter::new(Some(format)),
            bytes: 0,
            max_bytes,
            schema,
            ended: false,
        }
    }

    /// What was found, once the stream ended.
    pub fn into_outcome(self) -> Inspected<S> {
        Inspected {
            sha256: hex::encode(self.hasher.finalize()),
            bytes: self.bytes,
            rows: self.rows.finish(),
            inner: self.inner,
        }
    }
}

impl<S> Stream for Inspector<S>
where
    S: Stream<Item = Result<Bytes, IngestError>> + Unpin,
{
    type Item = Result<Bytes, IngestError>;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        let chunk = match ready!(this.inner.poll_next_unpin(context)) {
            Some(Ok(chunk)) => chunk,
            Some(Err(error)) => {
                this.ended = true;
                return Poll::Ready(Some(Err(error)));
            }
            None => {
                this.ended = true;
                // The end: any violation rejects the upload before the store keeps it.
                if let Some((mut check, plugin)) = this.schema.take() {
                    let violations = check.finish();
                    if !violations.is_empty() {
                        return Poll::Ready(Some(Err(IngestError::Schema { plugin, violations })));
                    }
                }
                return Poll::Ready(None);
            }
        };
        this.bytes += chunk.len() as u64;
        if this.bytes > this.max_bytes {
            this.ended = true;
            return Poll::Ready(Some(Err(IngestError::StoredTooLarge {
                limit: this.max_bytes,
            })));
        }
        this.hasher.update(&chunk);
        this.rows.feed(&chunk);
        if let Some((check, _)) = &mut this.schema {
            check.feed(&chunk);
        }
        Poll::Ready(Some(Ok(chunk)))
    }
}
