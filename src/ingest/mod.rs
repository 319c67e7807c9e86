//! The upload path: the request body streams into the object store while its SHA-256, size and
//! rows are computed on the way. Memory stays bounded by the store's part size whatever the
//! upload's size; the size limit and an idle timeout are enforced while streaming.

pub mod convert;
pub mod inspect;
pub mod intake;
pub mod plugin_stage;
pub mod rows;
pub mod schema;
pub mod sniff;

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, ReadBuf};

use crate::domain::{Application, BindingScope, Format, PluginStamp, Resource};
use crate::storage::{ObjectStore, PutError, StoreError};
use convert::Converting;
use export_plugin_host::Violation;
use export_plugin_host::{
    DataFormat, LoadedPlugin, PluginFailure, PluginHost, PluginLimits, SessionOptions,
};
use inspect::Inspector;
use intake::{BodyStream, Intake};
use plugin_stage::{PluginStage, SessionFigures};
use schema::SchemaCheck;

/// What an upload became: the values the pipeline measured on the way.
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
    /// What the plugin's session cost, when one ran to its end.
    pub session: Option<SessionFigures>,
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
    pub application: Application,
    /// The requested resource.
    pub resource: Resource,
    /// The JSON Schema the stored records must satisfy, if the binding has one.
    pub schema: Option<Arc<jsonschema::Validator>>,
    /// How specific the binding that chose the plugin is (`None` when no binding did: a trial).
    pub scope: Option<BindingScope>,
    /// The limits of the session (the host's, or the binding's own).
    pub limits: PluginLimits,
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
    /// The records do not satisfy the JSON Schema the host checks for the plugin's binding.
    #[error("plugin {plugin}'s JSON Schema rejected the data")]
    Schema {
        /// The plugin whose binding (or declaration) holds the schema.
        plugin: String,
        /// What is wrong, record by record (at most [`schema::MAX_VIOLATIONS`]).
        violations: Vec<Violation>,
    },
    /// The application's plugin failed or rejected the data.
    #[error(transparent)]
    Plugin(PluginFailure),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<Format> for DataFormat {
    fn from(format: Format) -> Self {
        match format {
            Format::Csv => Self::Csv,
            Format::Json => Self::Json,
        }
    }
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

/// What a pipeline is asked to do with one upload.
pub struct Plan {
    /// The format the upload says it is in (`Content-Type`); sniffed when `None`.
    pub declared_format: Option<Format>,
    /// The body's length, when the request declared it (`Content-Length`).
    pub declared_length: Option<u64>,
    /// The export's format: what is stored.
    pub stored_format: Format,
    /// The limits the upload runs under.
    pub limits: Limits,
    /// The plugin in force for the upload, if any.
    pub plugin: Option<PluginRun>,
}

/// The stage before the format step: the body itself, or the plugin's output.
enum Upstream {
    Direct(Intake),
    Plugin(PluginStage<Intake>),
}

impl Stream for Upstream {
    type Item = Result<Bytes, IngestError>;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match &mut *self {
            Self::Direct(intake) => intake.poll_next_unpin(context),
            Self::Plugin(stage) => stage.poll_next_unpin(context),
        }
    }
}

/// One upload's way from its body to the stored bytes: intake (limits, sniffing), the plugin
/// in force, the default format conversion, and the inspection of what is stored (checksum,
/// rows, stored-size limit, the binding's JSON Schema). The service drives it into the object
/// store; `export-service plugin run` drives the same pipeline into a file.
pub struct Pipeline {
    stages: Inspector<Converting<Upstream>>,
    /// How many bytes will be stored, when that is known before they arrive: the body passes
    /// through unchanged (no plugin, no conversion) and declared its length.
    stored_length: Option<u64>,
    uploaded_format: Format,
    stored_format: Format,
    plugin: Option<PluginStamp>,
}

impl Pipeline {
    /// Starts the pipeline of `body` under `plan`: settles the uploaded format (reading the
    /// body's first bytes when it must be sniffed) and opens the plugin's session.
    pub async fn start(body: BodyStream, plan: Plan) -> Result<Self, IngestError> {
        let Plan {
            declared_format,
            declared_length,
            stored_format,
            limits,
            plugin,
        } = plan;
        let mut intake = Intake::new(body, limits.max_bytes, limits.idle_timeout);
        let uploaded_format = intake.settle_format(declared_format, stored_format).await?;
        let (upstream, produced, schema, stamp) = match plugin {
            None => (Upstream::Direct(intake), uploaded_format, None, None),
            Some(run) => {
                let stamp = PluginStamp {
                    name: run.plugin.info.name.clone(),
                    version: run.plugin.info.version.clone(),
                    digest: run.plugin.digest.clone(),
                    scope: run.scope,
                };
                // A plugin that does not convert gets (and gives back) the uploaded format;
                // the default converter then turns its output into the export's format.
                let produced = if run.plugin.info.capabilities.convert {
                    stored_format
                } else {
                    uploaded_format
                };
                let options = SessionOptions {
                    application: run.application.into(),
                    resource: run.resource.into(),
                    input_format: DataFormat::from(uploaded_format),
                    output_format: DataFormat::from(produced),
                    config: run.config,
                };
                let schema = run.schema.map(|validator| {
                    (
                        SchemaCheck::new(validator, stored_format)
                            .limit_json(limits.max_stored_bytes),
                        stamp.name.clone(),
                    )
                });
                let stage = PluginStage::start(run.host, run.plugin, options, run.limits, intake);
                (Upstream::Plugin(stage), produced, schema, Some(stamp))
            }
        };
        let passes_through = stamp.is_none() && uploaded_format == stored_format;
        let converting = Converting::new(upstream, produced, stored_format);
        Ok(Self {
            stored_length: declared_length.filter(|_| passes_through),
            stages: Inspector::new(converting, stored_format, limits.max_stored_bytes, schema),
            uploaded_format,
            stored_format,
            plugin: stamp,
        })
    }

    /// Streams the stored bytes into `key`; nothing is left there when the pipeline stops.
    pub async fn store(mut self, store: &ObjectStore, key: &str) -> Result<Ingested, IngestError> {
        let mut feed = StoreFeed {
            stages: &mut self.stages,
            chunk: Bytes::new(),
            stopped: None,
        };
        let content_type = content_type(self.stored_format);
        let stored = match self.stored_length {
            Some(length) => store.put_exact(key, length, &mut feed, content_type).await,
            None => store.put(key, &mut feed, content_type).await,
        };
        match stored {
            Ok(_) => {}
            Err(PutError::Store(error)) => return Err(IngestError::Store(error)),
            // The typed reason the pipeline stopped for, kept when the store saw only an
            // `io::Error`.
            Err(PutError::Body(error)) => {
                return Err(feed
                    .stopped
                    .take()
                    .unwrap_or_else(|| IngestError::Body(error.to_string())));
            }
        }
        Ok(self.finish().await)
    }

    /// Runs the pipeline to its end, handing each stored chunk to `sink` (the author's tool
    /// writes them to a file).
    pub async fn drain(
        mut self,
        mut sink: impl FnMut(&[u8]) -> io::Result<()>,
    ) -> Result<Ingested, IngestError> {
        while let Some(chunk) = self.stages.next().await {
            sink(&chunk?).map_err(|error| IngestError::Body(error.to_string()))?;
        }
        Ok(self.finish().await)
    }

    /// The outcome, once every stage ran to its end.
    async fn finish(self) -> Ingested {
        let inspected = self.stages.into_outcome();
        let (uploaded_bytes, session) = match inspected.inner.into_inner() {
            Upstream::Direct(intake) => (intake.received(), None),
            Upstream::Plugin(stage) => {
                let (intake, figures) = stage.finish().await;
                (intake.map_or(0, |intake| intake.received()), figures)
            }
        };
        Ingested {
            sha256: inspected.sha256,
            bytes: inspected.bytes,
            rows: inspected.rows,
            uploaded_bytes,
            uploaded_format: Some(self.uploaded_format),
            plugin: self.plugin,
            session,
        }
    }
}

/// The pipeline as the object store reads it: bytes, and at a stop a plain `io::Error` while
/// the typed reason stays here for [`Pipeline::store`].
struct StoreFeed<'a, S> {
    stages: &'a mut S,
    chunk: Bytes,
    stopped: Option<IngestError>,
}

impl<S> AsyncRead for StoreFeed<'_, S>
where
    S: Stream<Item = Result<Bytes, IngestError>> + Unpin,
{
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        while this.chunk.is_empty() {
            if let Some(stopped) = &this.stopped {
                return Poll::Ready(Err(io::Error::other(stopped.to_string())));
            }
            match ready!(this.stages.poll_next_unpin(context)) {
                Some(Ok(chunk)) => this.chunk = chunk,
                Some(Err(stopped)) => this.stopped = Some(stopped),
                None => return Poll::Ready(Ok(())),
            }
        }
        let count = this.chunk.len().min(buffer.remaining());
        buffer.put_slice(&this.chunk[..count]);
        this.chunk.advance(count);
        Poll::Ready(Ok(()))
    }
}

/// The `Content-Type` of data in `format`.
pub fn content_type(format: Format) -> &'static str {
    match format {
        Format::Csv => "text/csv",
        Format::Json => "application/json",
    }
}
