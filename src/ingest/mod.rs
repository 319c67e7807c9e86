//! The upload path: the request body streams into the object store while its SHA-256, size and
//! rows are computed on the way. Memory stays bounded by the store's part size whatever the
//! upload's size; the size limit and an idle timeout are enforced while streaming.

pub mod convert;
pub mod plugin_stage;
pub mod rows;
pub mod schema;

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
use schema::SchemaCheck;
use std::sync::Arc;
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
    /// The longest pause between two chunks of the body.
    pub idle_timeout: Duration,
}

/// Marker carried inside `io::Error` so the limit can be told from other read errors.
#[derive(Debug)]
struct LimitExceeded;

impl std::fmt::Display for LimitExceeded {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("size limit exceeded")
    }
}

impl std::error::Error for LimitExceeded {}

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
    let limited = Limited {
        inner: StreamReader::new(Box::pin(chunks)),
        seen: 0,
        limit: limits.max_bytes,
    };
    if let Some(run) = plugin {
        return ingest_through_plugin(
            store,
            key,
            limited,
            uploaded_format,
            stored_format,
            limits,
            run,
        )
        .await;
    }
    let mut reader = Inspector {
        inner: Converting::new(limited, uploaded_format, stored_format),
        hasher: Sha256::new(),
        rows: RowCounter::new(Some(stored_format)),
        bytes: 0,
        schema: None,
    };
    let content_type = match stored_format {
        Format::Csv => "text/csv",
        Format::Json => "application/json",
    };
    match store.put(key, &mut reader, content_type).await {
        Ok(_) => Ok(Ingested {
            sha256: hex::encode(reader.hasher.finalize()),
            bytes: reader.bytes,
            rows: reader.rows.finish(),
            uploaded_bytes: reader.inner.inner_ref().seen,
            uploaded_format: reader.inner.uploaded,
            plugin: None,
        }),
        Err(PutError::Store(error)) => Err(IngestError::Store(error)),
        Err(PutError::Body(error)) => Err(classify_body_error(error, limits)),
    }
}

/// The upload with a plugin: sniff the format if undeclared, then stream through the plugin.
async fn ingest_through_plugin<R: AsyncRead + Send + Unpin + 'static>(
    store: &ObjectStore,
    key: &str,
    mut input: R,
    declared: Option<Format>,
    stored_format: Format,
    limits: Limits,
    run: PluginRun,
) -> Result<Ingested, IngestError> {
    let mut peeked = Vec::new();
    let uploaded = match declared {
        Some(format) => format,
        None => loop {
            let mut buffer = [0u8; 4096];
            let read = input
                .read(&mut buffer)
                .await
                .map_err(|error| classify_body_error(error, limits))?;
            peeked.extend_from_slice(&buffer[..read]);
            match peeked.iter().find(|byte| !byte.is_ascii_whitespace()) {
                Some(first) => break rows::sniff(*first),
                None if read == 0 => break stored_format,
                None => {}
            }
        },
    };
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
    let chained = std::io::Cursor::new(peeked).chain(input);
    let schema = run.schema.map(|validator| {
        (
            SchemaCheck::new(validator, stored_format),
            format!("{}'s JSON Schema", stamp.name),
        )
    });
    let (output, read_bytes) = plugin_stage::through_plugin(run.host, run.plugin, options, chained);
    let mut reader = Inspector {
        inner: Converting::new(output, Some(produced), stored_format),
        hasher: Sha256::new(),
        rows: RowCounter::new(Some(stored_format)),
        bytes: 0,
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
            uploaded_bytes: read_bytes.load(std::sync::atomic::Ordering::Relaxed),
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
        if inner.is::<LimitExceeded>() {
            return IngestError::TooLarge {
                limit_mib: limits.max_bytes / (1024 * 1024),
            };
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
    seen: u64,
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
            this.seen += (buffer.filled().len() - before) as u64;
            if this.seen > this.limit {
                return Poll::Ready(Err(io::Error::other(LimitExceeded)));
            }
        }
        polled
    }
}

/// Passes the stored bytes through, hashing and counting them.
struct Inspector<R> {
    inner: R,
    hasher: Sha256,
    rows: RowCounter,
    bytes: u64,
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
