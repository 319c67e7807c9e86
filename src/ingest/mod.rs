//! The upload path: the request body streams into the object store while its SHA-256, size and
//! rows are computed on the way. Memory stays bounded by the store's part size whatever the
//! upload's size; the size limit and an idle timeout are enforced while streaming.

pub mod convert;
pub mod plugin_stage;
pub mod rows;
pub mod schema;
pub mod sniff;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::io::StreamReader;

use crate::domain::Format;
use crate::storage::{ObjectStore, PutError, StoreError};
use convert::{Converting, Rejected};
use export_convert::JsonDepth;
use schema::SchemaCheck;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::AsyncReadExt;

use crate::domain::PluginStamp;
use crate::plugin_host::{DataFormat, LoadedPlugin, PluginFailure, PluginHost, SessionOptions};
use rows::RowCounter;

/// What was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingested {
    /// SHA-256 of the stored bytes, hex.
    pub sha256: String,
    /// Stored bytes.
    pub bytes: u64,
    /// Data rows, when the format tells.
    pub rows: Option<u64>,
    /// Bytes received.
    pub uploaded_bytes: u64,
    /// The format the upload was in (converted when it differs from the stored format).
    pub uploaded_format: Option<Format>,
    /// The plugin the upload went through, if any.
    pub plugin: Option<PluginStamp>,
}

/// An upload's plugin, with what its session needs to know.
#[derive(Clone)]
pub struct PluginRun {
    /// The host.
    pub host: Arc<PluginHost>,
    /// The plugin.
    pub plugin: Arc<LoadedPlugin>,
    /// The binding's configuration (JSON text).
    pub config: Option<String>,
    /// The uploading application.
    pub application: String,
    /// The requested resource.
    pub resource: String,
    /// The JSON Schema the stored records must satisfy, if the binding has one.
    pub schema: Option<Arc<jsonschema::Validator>>,
}

/// Why an upload was not stored. Nothing is left in the store in any of these cases.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The body exceeded the size limit.
    #[error("payload is too large: the limit is {limit_mib} MiB")]
    TooLarge {
        /// The limit, in MiB.
        limit_mib: u64,
    },
    /// The client sent nothing for too long.
    #[error("no data received for {0:?}")]
    Idle(Duration),
    /// The body could not be read (the client went away).
    #[error("the payload could not be read: {0}")]
    Body(String),
    /// The data is not in a shape that converts to the export's format.
    #[error("the payload was rejected: {0}")]
    Rejected(export_convert::ConvertError),
    /// The data, as stored (converted, or as the plugin gave it), would exceed the limit.
    #[error("the stored data would exceed {limit} bytes")]
    StoredTooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
    /// The application's plugin failed or rejected the data.
    #[error(transparent)]
    Plugin(PluginFailure),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Upload limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest body.
    pub max_bytes: u64,
    /// The most bytes stored for the upload (after conversion or the plugin).
    pub max_stored_bytes: u64,
    /// The longest pause between two chunks of the body.
    pub idle_timeout: Duration,
}

/// Marker carried inside `io::Error` so a limit can be told from other read errors.
#[derive(Debug, thiserror::Error)]
enum Exceeded {
    /// The body passed `Limits::max_bytes`.
    #[error("size limit exceeded")]
    Payload,
    /// The stored bytes would pass `Limits::max_stored_bytes`.
    #[error("stored size limit exceeded")]
    Stored,
}

/// Streams `body` into `key`. `uploaded_format` is what the `Content-Type` said (sniffed when
/// `None`), used to count rows; `stored_format` is the export's format, the object's type.
pub async fn ingest(
    store: &ObjectStore,
    key: &str,
    body: Body,
    uploaded_format: Option<Format>,
    stored_format: Format,
    limits: Limits,
    plugin: Option<PluginRun>,
) -> Result<Ingested, IngestError> {
    let idle = limits.idle_timeout;
    let chunks = futures::stream::unfold(body.into_data_stream(), move |mut stream| async move {
        match tokio::time::timeout(idle, stream.next()).await {
            Ok(Some(chunk)) => Some((chunk.map_err(io::Error::other), stream)),
            Ok(None) => None,
            Err(_) => Some((
                Err(io::Error::new(io::ErrorKind::TimedOut, "idle upload")),
                stream,
            )),
        }
    });
    let seen = Arc::new(AtomicU64::new(0));
    let mut limited = Limited {
        inner: StreamReader::new(Box::pin(chunks)),
        seen: seen.clone(),
        limit: limits.max_bytes,
    };
    let fail = |error| classify_body_error(error, limits);
    let (uploaded, mut prefix) = match uploaded_format {
        Some(format) => (format, Vec::new()),
        None => {
            let sniffed = sniff::sniff_format(&mut limited, stored_format)
                .await
                .map_err(fail)?;
            (sniffed.format, sniffed.prefix)
        }
    };
    let checked = |prefix: Vec<u8>| JsonDepthChecked {
        inner: std::io::Cursor::new(prefix).chain(limited),
        depth: (uploaded == Format::Json).then(JsonDepth::default),
    };
    if let Some(run) = plugin {
        let input = checked(prefix);
        return ingest_through_plugin(store, key, input, uploaded, stored_format, limits, run)
            .await;
    }
    if uploaded_format.is_none() && uploaded != stored_format {
        // The blanks before a sniffed upload's first character mean nothing to the converter
        // (spaces would join the first CSV name).
        let blanks = prefix
            .iter()
            .take_while(|byte| byte.is_ascii_whitespace())
            .count();
        prefix.drain(..blanks);
    }
    let input = checked(prefix);
    let mut reader = Inspector {
        inner: Converting::new(input, uploaded, stored_format),
        hasher: Sha256::new(),
        rows: RowCounter::new(Some(stored_format)),
        bytes: 0,
        max_bytes: limits.max_stored_bytes,
        schema: None,
    };
    match store
        .put(key, &mut reader, content_type(stored_format))
        .await
    {
        Ok(_) => Ok(Ingested {
            sha256: hex::encode(reader.hasher.finalize()),
            bytes: reader.bytes,
            rows: reader.rows.finish(),
            uploaded_bytes: seen.load(Ordering::Relaxed),
            uploaded_format: Some(uploaded),
            plugin: None,
        }),
        Err(PutError::Store(error)) => Err(IngestError::Store(error)),
        Err(PutError::Body(error)) => Err(fail(error)),
    }
}

/// The upload with a plugin: stream `input` (in `uploaded` format) through the plugin.
async fn ingest_through_plugin<R: AsyncRead + Send + Unpin + 'static>(
    store: &ObjectStore,
    key: &str,
    input: R,
    uploaded: Format,
    stored_format: Format,
    limits: Limits,
    run: PluginRun,
) -> Result<Ingested, IngestError> {
    let stamp = PluginStamp {
        name: run.plugin.info.name.clone(),
        version: run.plugin.info.version.clone(),
        digest: run.plugin.digest.clone(),
    };
    // A plugin that does not convert gets (and gives back) the uploaded format; the default
    // converter then turns its output into the export's format.
    let produced = if run.plugin.info.capabilities.convert {
        stored_format
    } else {
        uploaded
    };
    let options = SessionOptions {
        application: run.application,
        resource: run.resource,
        input_format: DataFormat::from(uploaded),
        output_format: DataFormat::from(produced),
        config: run.config,
    };
    let schema = run.schema.map(|validator| {
        (
            SchemaCheck::new(validator, stored_format).limit_json(limits.max_stored_bytes),
            format!("{}'s JSON Schema", stamp.name),
        )
    });
    let (output, read_bytes) = plugin_stage::through_plugin(run.host, run.plugin, options, input);
    let mut reader = Inspector {
        inner: Converting::new(output, produced, stored_format),
        hasher: Sha256::new(),
        rows: RowCounter::new(Some(stored_format)),
        bytes: 0,
        max_bytes: limits.max_stored_bytes,
        schema,
    };
    match store
        .put(key, &mut reader, content_type(stored_format))
        .await
    {
        Ok(_) => Ok(Ingested {
            sha256: hex::encode(reader.hasher.finalize()),
            bytes: reader.bytes,
            rows: reader.rows.finish(),
            uploaded_bytes: read_bytes.load(Ordering::Relaxed),
            uploaded_format: Some(uploaded),
            plugin: Some(stamp),
        }),
        Err(PutError::Store(error)) => Err(IngestError::Store(error)),
        Err(PutError::Body(error)) => Err(classify_body_error(error, limits)),
    }
}

fn content_type(format: Format) -> &'static str {
    match format {
        Format::Csv => "text/csv",
        Format::Json => "application/json",
    }
}

fn classify_body_error(error: io::Error, limits: Limits) -> IngestError {
    if let Some(inner) = error.get_ref() {
        if let Some(plugin_stage::PluginStopped(failure)) =
            inner.downcast_ref::<plugin_stage::PluginStopped>()
        {
            return IngestError::Plugin(failure.clone());
        }
        match inner.downcast_ref::<Exceeded>() {
            Some(Exceeded::Payload) => {
                return IngestError::TooLarge {
                    limit_mib: limits.max_bytes / (1024 * 1024),
                };
            }
            Some(Exceeded::Stored) => {
                return IngestError::StoredTooLarge {
                    limit: limits.max_stored_bytes,
                };
            }
            None => {}
        }
        if let Some(Rejected(reason)) = inner.downcast_ref::<Rejected>() {
            return IngestError::Rejected(reason.clone());
        }
    }
    if error.kind() == io::ErrorKind::TimedOut {
        IngestError::Idle(limits.idle_timeout)
    } else {
        IngestError::Body(error.to_string())
    }
}

/// Fails the read once more than `limit` bytes arrived.
struct Limited<R> {
    inner: R,
    /// Bytes received so far (shared: the reader itself moves down the pipeline).
    seen: Arc<AtomicU64>,
    limit: u64,
}

impl<R: AsyncRead + Unpin> AsyncRead for Limited<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buffer.filled().len();
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_read(context, buffer);
        if let Poll::Ready(Ok(())) = polled {
            let fresh = (buffer.filled().len() - before) as u64;
            if this.seen.fetch_add(fresh, Ordering::Relaxed) + fresh > this.limit {
                return Poll::Ready(Err(io::Error::other(Exceeded::Payload)));
            }
        }
        polled
    }
}

/// Fails the read once JSON nests deeper than [`MAX_JSON_DEPTH`](export_convert::MAX_JSON_DEPTH)
/// (`depth` is `None` for CSV): before any parser sees it.
struct JsonDepthChecked<R> {
    inner: R,
    depth: Option<JsonDepth>,
}

impl<R: AsyncRead + Unpin> AsyncRead for JsonDepthChecked<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buffer.filled().len();
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_read(context, buffer);
        if let (Poll::Ready(Ok(())), Some(depth)) = (&polled, &mut this.depth)
            && let Err(error) = depth.feed(&buffer.filled()[before..])
        {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                Rejected(error),
            )));
        }
        polled
    }
}

/// Passes the stored bytes through, hashing and counting them; fails the read (so the store
/// keeps nothing) before the count passes `max_bytes`.
struct Inspector<R> {
    inner: R,
    hasher: Sha256,
    rows: RowCounter,
    bytes: u64,
    max_bytes: u64,
    /// The binding's JSON Schema check, and whose schema it is.
    schema: Option<(SchemaCheck, String)>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Inspector<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buffer.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(context, buffer) {
            Poll::Ready(Ok(())) => {
                let fresh = &buffer.filled()[before..];
                this.bytes += fresh.len() as u64;
                if this.bytes > this.max_bytes {
                    return Poll::Ready(Err(io::Error::other(Exceeded::Stored)));
                }
                this.hasher.update(fresh);
                this.rows.feed(fresh);
                if let Some((check, owner)) = &mut this.schema {
                    if fresh.is_empty() {
                        // The end: any violation rejects the upload before the store keeps it.
                        let violations = check.finish();
                        let owner = owner.clone();
                        this.schema = None;
                        if !violations.is_empty() {
                            return Poll::Ready(Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                plugin_stage::PluginStopped(PluginFailure::Rejected {
                                    plugin: owner,
                                    violations,
                                }),
                            )));
                        }
                    } else {
                        check.feed(fresh);
                    }
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}
