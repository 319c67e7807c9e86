//! The upload use case: a source application delivers the data of one pending source. This
//! layer owns the flow — the hold on the source and its renewal, the plugin binding in force,
//! the ingest pipeline into the object store, the plugin metrics, and settling the source
//! (recorded, failed with a reason the tenant reads, or released for the application's retry)
//! — and answers with one typed result. The HTTP handler only authenticates, parses and maps.

pub mod hold;
pub mod trial;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::DataPathConfig;
use crate::db::sources::{BeginUpload, Lookup, Settled, SourceTarget, StoredUpload};
use crate::db::{DbError, SourceRepository};
use crate::domain::psk::Grant;
use crate::domain::{Application, BindingKey, ExportId, Format, SourceId, SourceStatus};
use crate::ingest::intake::BodyStream;
use crate::ingest::{IngestError, Ingested, Limits, Pipeline, Plan, PluginRun};
use crate::metrics::Metrics;
use crate::registry::binding::{CanaryTicket, LiveBindings, Resolved};
use crate::storage::{KeyLayout, ObjectStore, StoreError};
use export_plugin_host::{PluginFailure, Violation};
use hold::{HeldUploads, UploadHold};

/// What the upload use case needs: the repositories, the store and the plugins of one replica.
pub struct Delivery<'a> {
    /// Source transitions.
    pub sources: &'a SourceRepository,
    /// Object storage.
    pub store: &'a ObjectStore,
    /// Object keys.
    pub keys: &'a KeyLayout,
    /// The holds running uploads have (released when a shutdown abandons them).
    pub holds: &'a Arc<HeldUploads>,
    /// The plugins bound to applications, if plugins are enabled.
    pub plugins: Option<&'a Arc<LiveBindings>>,
    /// Metrics.
    pub metrics: &'a Metrics,
    /// Limits and leases of the data path.
    pub data_path: &'a DataPathConfig,
    /// The longest pause between two chunks of a body.
    pub idle_timeout: Duration,
}

/// The plugin an upload runs through (if any), chosen once when it arrives.
#[derive(Default)]
pub struct PluginChoice {
    /// The plugin and its session's settings.
    pub run: Option<PluginRun>,
    /// The upload's side of a canary, when one runs where it was bound.
    pub canary: Option<CanaryTicket>,
}

impl PluginChoice {
    /// The linear memory the plugin session may use, when one runs.
    pub fn memory_bytes(&self) -> Option<u64> {
        self.run.as_ref().map(|run| run.limits.memory_bytes as u64)
    }
}

/// One delivery: the body of an upload and what its headers say about it.
pub struct Upload {
    /// The `Content-Length`, when declared.
    pub declared_length: Option<u64>,
    /// The format the `Content-Type` names, if it names one.
    pub declared_format: Option<Format>,
    /// The body.
    pub body: BodyStream,
}

/// A delivery that was stored and recorded.
#[derive(Debug)]
pub struct Delivered {
    /// The source it settled.
    pub source_id: SourceId,
    /// The export's format, as stored.
    pub stored_format: Format,
    /// What the pipeline measured.
    pub ingested: Ingested,
}

/// Why a delivery was not recorded. [`settles_source`](DeliveryError::settles_source) tells
/// whether the source was failed for good or stays pending for a retry.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The declared or received body exceeds `MAX_PAYLOAD_SIZE`; the source stays pending.
    #[error("payload is too large, max size: {}MB", .limit / (1024 * 1024))]
    TooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
    /// The plugin bound to the upload is not loaded on this replica yet.
    #[error(
        "the plugin bound to {binding} is not loaded on this replica yet (its component could \
         not be fetched or compiled); the source stays pending, upload again shortly"
    )]
    PluginNotLoaded {
        /// The binding whose plugin is missing.
        binding: BindingKey,
    },
    /// No export has this id.
    #[error("export '{0}' not found")]
    ExportNotFound(ExportId),
    /// The export has no source with this id.
    #[error("source '{0}' not found")]
    SourceNotFound(SourceId),
    /// The caller may not write to this source.
    #[error("{0}")]
    NotYours(String),
    /// The source was settled before (or meanwhile).
    #[error("this resource has already been processed")]
    AlreadyProcessed,
    /// Another upload holds the source.
    #[error("an upload for this source is already in progress")]
    InProgress,
    /// Another upload took the source over while this one ran; nothing was recorded.
    #[error("another upload took this source over; this one was not recorded")]
    TakenOver,
    /// The export was deleted while the data streamed in; the data was removed again.
    #[error("the export was deleted while the upload ran")]
    ExportGone,
    /// The upload ran past `UPLOAD_MAX_DURATION`; the source stays pending.
    #[error(
        "the upload did not finish within UPLOAD_MAX_DURATION ({0:?}); nothing was stored and \
         the source is still pending: upload again, faster"
    )]
    TooSlow(Duration),
    /// The client paused longer than the idle timeout; the source stays pending.
    #[error("no data received for {} ms; upload again", .0.as_millis())]
    Idle(Duration),
    /// The body could not be read; the source stays pending.
    #[error("the payload could not be read: {0}")]
    Body(String),
    /// The data was refused and the source failed with `message`, which the tenant reads.
    #[error("{message}")]
    Refused {
        /// Why, in a form that fits the failure kind.
        refusal: Refusal,
        /// The message recorded on the source.
        message: String,
        /// The problems found, record by record.
        violations: Vec<Violation>,
    },
    /// Object storage is unavailable; the source stays pending.
    #[error("object storage is unavailable; the source stays pending, upload again shortly")]
    StoreUnavailable(#[source] StoreError),
    /// Object storage failed otherwise.
    #[error(transparent)]
    Store(StoreError),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] DbError),
}

impl DeliveryError {
    /// Whether the upload was refused with its source left pending, so the application may
    /// upload again (and the tenant should see why it is still waiting).
    pub fn leaves_source_pending(&self) -> bool {
        matches!(
            self,
            Self::TooLarge { .. }
                | Self::PluginNotLoaded { .. }
                | Self::TooSlow(_)
                | Self::Idle(_)
                | Self::Body(_)
                | Self::StoreUnavailable(_)
        )
    }
}

/// The kinds of data refusal, which answer differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The data is wrong: it does not convert, or a plugin or schema rejected it (422).
    Data,
    /// The data as stored would exceed the stored-size limit (413).
    StoredTooLarge,
}

impl Delivery<'_> {
    /// Finds the pending source `source_id` of `export_id` that a caller of `application`,
    /// authorised by `grant`, may write to.
    pub async fn pending_target(
        &self,
        export_id: ExportId,
        source_id: SourceId,
        application: &Application,
        grant: Grant,
    ) -> Result<SourceTarget, DeliveryError> {
        let target = match self.sources.lookup(export_id, source_id).await? {
            Lookup::NoExport => return Err(DeliveryError::ExportNotFound(export_id)),
            Lookup::NoSource => return Err(DeliveryError::SourceNotFound(source_id)),
            Lookup::Found(target) => target,
        };
        // The key (and the URL) must name the application the source was requested from.
        if target.application != *application {
            return Err(DeliveryError::NotYours(match grant {
                Grant::Application(application) => format!(
                    "the key of application '{application}' cannot write to a source of another application"
                ),
                Grant::AnySource => {
                    format!("source '{source_id}' does not belong to application '{application}'")
                }
            }));
        }
        if target.status != SourceStatus::Pending {
            return Err(DeliveryError::AlreadyProcessed);
        }
        Ok(target)
    }

    /// Remembers on its source why an upload was refused while the source stays pending.
    /// Best effort: the uploader already has its answer, and the next attempt overwrites it.
    pub async fn remember_refusal(&self, source_id: SourceId, code: u16, message: &str) {
        if let Err(error) = self.sources.note_refusal(source_id, code, message).await {
            tracing::warn!(%error, %source_id, "cannot record the refused upload on its source");
        }
    }

    /// Stores `upload` as the data of `target` and records it; on any failure the source is
    /// either failed with a reason (the same bytes would fail again) or left pending.
    pub async fn accept(
        &self,
        target: SourceTarget,
        upload: Upload,
        choice: PluginChoice,
    ) -> Result<Delivered, DeliveryError> {
        let limit = self.data_path.max_payload_bytes;
        if upload.declared_length.is_some_and(|length| length > limit) {
            self.metrics.failed_uploads.inc();
            self.metrics.refuse("payload_size");
            return Err(DeliveryError::TooLarge { limit });
        }
        // The binding chosen stays with this upload to its end, whatever changes.
        let PluginChoice {
            run: plugin,
            canary,
        } = choice;
        let lease = self.data_path.upload_lease;
        let token = match self.sources.begin_upload(&target, lease).await? {
            BeginUpload::Started(token) => token,
            BeginUpload::AlreadyProcessed => return Err(DeliveryError::AlreadyProcessed),
            BeginUpload::InProgress => return Err(DeliveryError::InProgress),
        };
        // If the client goes away mid-upload this future is dropped: the guard still frees
        // the source at once, so the application's retry is not refused for the whole lease.
        let mut hold = UploadHold::start(
            self.sources.clone(),
            self.holds.clone(),
            target.source_id,
            token,
            lease,
        );
        let started = Instant::now();
        let key = self.keys.source_key(
            &target.org_id,
            target.export_id,
            target.source_id,
            target.format,
        );
        let plugin_labels = plugin.as_ref().map(|run| {
            [
                run.plugin.info.name.clone(),
                run.plugin.info.version.clone(),
            ]
        });
        if let Some(labels) = &plugin_labels {
            self.metrics
                .plugin_invocations
                .with_label_values(labels)
                .inc();
        }
        let plan = Plan {
            declared_format: upload.declared_format,
            declared_length: upload.declared_length,
            stored_format: target.format,
            limits: Limits {
                max_bytes: limit,
                max_stored_bytes: self.data_path.max_stored_bytes,
                idle_timeout: self.idle_timeout,
            },
            plugin,
        };
        let run = async {
            Pipeline::start(upload.body, plan)
                .await?
                .store(self.store, &key)
                .await
        };
        // However steadily the body trickles in (each pause under the idle timeout), the
        // upload ends at UPLOAD_MAX_DURATION and frees its slot.
        let max_duration = self.data_path.upload_max_duration;
        let Ok(ingested) = tokio::time::timeout(max_duration, run).await else {
            return Err(self.too_slow(&target, &mut hold, max_duration).await);
        };
        hold.renewal.stop();
        if let Some(labels) = &plugin_labels {
            self.observe_plugin(labels, started, &ingested);
        }
        if let Some(ticket) = &canary
            && let Some(failed) = plugin_fault(&ingested)
        {
            ticket.record(failed);
        }
        match ingested {
            Ok(ingested) => self.record(target, hold, key, ingested, started).await,
            Err(error) => Err(self.settle_failure(&target, &mut hold, error).await),
        }
    }

    /// The plugin bound to the target's application, resource and organisation now, if any. An
    /// upload bound to a plugin this replica could not load yet waits (503) rather than being
    /// stored without the checks its binding promises. The caller holds the upload slots the
    /// choice's memory needs (see [`PluginChoice::memory_bytes`]) and hands it to
    /// [`accept`](Self::accept).
    pub fn plugin_in_force(&self, target: &SourceTarget) -> Result<PluginChoice, DeliveryError> {
        let Some(bindings) = self.plugins else {
            return Ok(PluginChoice::default());
        };
        match bindings.resolve(&target.application, &target.resource, &target.org_id) {
            Resolved::Bound(binding, key, canary) => Ok(PluginChoice {
                run: Some(PluginRun {
                    scope: Some(key.scope()),
                    host: bindings.host.clone(),
                    plugin: binding.plugin.clone(),
                    config: binding.config.clone(),
                    application: target.application.clone(),
                    resource: target.resource.clone(),
                    schema: binding.schema_for(target.resource.as_str()),
                    limits: bindings.session_limits(&binding),
                }),
                canary,
            }),
            Resolved::Unloaded(binding) => Err(DeliveryError::PluginNotLoaded { binding }),
            Resolved::Unbound => Ok(PluginChoice::default()),
        }
    }

    fn observe_plugin(
        &self,
        [name, version]: &[String; 2],
        started: Instant,
        ingested: &Result<Ingested, IngestError>,
    ) {
        self.metrics
            .plugin_seconds
            .with_label_values(&[name, version])
            .observe(started.elapsed().as_secs_f64());
        let reason = match ingested {
            Err(IngestError::Plugin(failure)) => failure.kind(),
            // The host's check of the binding's schema: counted apart from the plugin's own.
            Err(IngestError::Schema { .. }) => "schema",
            _ => return,
        };
        self.metrics
            .plugin_failures
            .with_label_values(&[name.as_str(), version.as_str(), reason])
            .inc();
    }

    /// Records a stored upload on its source.
    async fn record(
        &self,
        target: SourceTarget,
        mut hold: UploadHold,
        key: String,
        ingested: Ingested,
        started: Instant,
    ) -> Result<Delivered, DeliveryError> {
        let stored = StoredUpload {
            object_key: key.clone(),
            sha256: ingested.sha256.clone(),
            bytes: ingested.bytes,
            rows: ingested.rows,
            plugin: ingested.plugin.clone(),
        };
        let settled = self
            .sources
            .complete(&target, hold.token(), &stored)
            .await?;
        hold.armed = false;
        match settled {
            Settled::Recorded(_) => {}
            Settled::AlreadyProcessed => return Err(DeliveryError::AlreadyProcessed),
            Settled::Held => return Err(DeliveryError::TakenOver),
            Settled::Gone => {
                // The export was deleted (or expired) while the data streamed in.
                if let Err(error) = self.store.delete(&key).await {
                    tracing::warn!(error = %error, key, "cannot delete the upload of a deleted export");
                }
                return Err(DeliveryError::ExportGone);
            }
        }
        self.metrics.uploads.inc();
        self.metrics
            .upload_sizes
            .with_label_values(&[target.application.as_str()])
            .observe(ingested.bytes as f64);
        tracing::info!(
            source_id = %target.source_id,
            bytes = ingested.bytes,
            rows = ingested.rows,
            elapsed_ms = started.elapsed().as_millis(),
            "upload stored"
        );
        Ok(Delivered {
            source_id: target.source_id,
            stored_format: target.format,
            ingested,
        })
    }

    /// Settles a failed upload: data that would fail again fails the source with its reason;
    /// anything else releases the source for the application's retry.
    async fn settle_failure(
        &self,
        target: &SourceTarget,
        hold: &mut UploadHold,
        error: IngestError,
    ) -> DeliveryError {
        self.metrics.failed_uploads.inc();
        let (refusal, message, violations) =
            match disposition(error, target.format, self.data_path.max_payload_bytes) {
                Disposition::Fail {
                    refusal,
                    message,
                    violations,
                } => (refusal, message, violations),
                Disposition::Retry(error) => return self.release_for_retry(hold, error).await,
            };
        tracing::info!(source_id = %target.source_id, reason = %message, "upload refused");
        let code = match refusal {
            Refusal::Data => 422,
            Refusal::StoredTooLarge => {
                self.metrics.refuse("stored_size");
                413
            }
        };
        // Release first: failing may not touch a source an upload holds.
        if let Err(error) = self
            .sources
            .release_upload(target.source_id, hold.token())
            .await
        {
            return error.into();
        }
        hold.armed = false;
        if let Err(error) = self.sources.fail(target, code, &message).await {
            return error.into();
        }
        DeliveryError::Refused {
            refusal,
            message,
            violations,
        }
    }

    /// Frees the source for a retry after a failure that is not the data's.
    async fn release_for_retry(
        &self,
        hold: &mut UploadHold,
        error: DeliveryError,
    ) -> DeliveryError {
        // The tenant-facing message hides the store's own error; the operator needs it.
        let cause =
            std::iter::successors(std::error::Error::source(&error), |cause| cause.source())
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(": ");
        tracing::warn!(error = %error, cause = %cause, "upload not stored");
        if let DeliveryError::TooLarge { .. } = error {
            self.metrics.refuse("payload_size");
        }
        if self
            .sources
            .release_upload(hold.source_id(), hold.token())
            .await
            .is_ok()
        {
            hold.armed = false;
        }
        error
    }

    /// Ends an upload that ran past `UPLOAD_MAX_DURATION`: nothing is recorded, the source is
    /// freed for the application's next attempt at once.
    async fn too_slow(
        &self,
        target: &SourceTarget,
        hold: &mut UploadHold,
        max_duration: Duration,
    ) -> DeliveryError {
        self.metrics.failed_uploads.inc();
        self.metrics.refuse("upload_duration");
        tracing::info!(
            source_id = %target.source_id,
            limit_ms = max_duration.as_millis(),
            "upload stopped at UPLOAD_MAX_DURATION"
        );
        if let Err(error) = hold.release().await {
            // The guard keeps trying when it is dropped.
            tracing::warn!(error = %error, "cannot release the hold of an upload that took too long");
        }
        DeliveryError::TooSlow(max_duration)
    }
}

/// What a failed upload does to its source.
enum Disposition {
    /// The data is at fault: the source fails with `message`.
    Fail {
        refusal: Refusal,
        message: String,
        violations: Vec<Violation>,
    },
    /// The data may yet be delivered: the source stays pending.
    Retry(DeliveryError),
}

/// The disposition of `error`, for an upload stored in `format` under a `max_payload` limit.
fn disposition(error: IngestError, format: Format, max_payload: u64) -> Disposition {
    let message = error.to_string();
    let fail = |refusal, message, violations| Disposition::Fail {
        refusal,
        message,
        violations,
    };
    match error {
        IngestError::Plugin(PluginFailure::Rejected { violations, .. })
        | IngestError::Schema { violations, .. } => {
            fail(Refusal::Data, summary(message, &violations), violations)
        }
        IngestError::Plugin(_) => fail(Refusal::Data, message, Vec::new()),
        IngestError::Rejected(reason) => fail(
            Refusal::Data,
            format!("upload rejected: {reason}"),
            vec![Violation {
                row: reason.record,
                field: None,
                message: reason.message,
            }],
        ),
        IngestError::StoredTooLarge { limit } => fail(
            Refusal::StoredTooLarge,
            format!(
                "upload rejected: the data as stored would exceed {limit} bytes \
                 (MAX_PAYLOAD_SIZE × MAX_STORED_EXPANSION); upload it in the export's format \
                 ({}) or split it",
                format.as_str()
            ),
            Vec::new(),
        ),
        IngestError::TooLarge { .. } => {
            Disposition::Retry(DeliveryError::TooLarge { limit: max_payload })
        }
        IngestError::Idle(timeout) => Disposition::Retry(DeliveryError::Idle(timeout)),
        IngestError::Body(reason) => Disposition::Retry(DeliveryError::Body(reason)),
        IngestError::Store(error @ StoreError::Unavailable(_)) => {
            Disposition::Retry(DeliveryError::StoreUnavailable(error))
        }
        IngestError::Store(error) => Disposition::Retry(DeliveryError::Store(error)),
    }
}

/// `message`, with the number of violations and the first one.
fn summary(message: String, violations: &[Violation]) -> String {
    match violations.first() {
        Some(first) => format!(
            "{message}: {} violation(s), first: {}{}{}",
            violations.len(),
            first
                .row
                .map(|row| format!("row {row}: "))
                .unwrap_or_default(),
            first
                .field
                .as_ref()
                .map(|field| format!("field '{field}': "))
                .unwrap_or_default(),
            first.message
        ),
        None => message,
    }
}

/// Whether the plugin failed on an upload, as a canary counts it: traps, deadlines, memory and
/// output limits are the plugin's faults; data it rightly rejected, and a schema the data does
/// not meet, are not. `None` when the upload ended before the plugin's work could tell (the
/// client went away, the store failed).
fn plugin_fault(ingested: &Result<Ingested, IngestError>) -> Option<bool> {
    match ingested {
        Ok(_) | Err(IngestError::Schema { .. }) => Some(false),
        Err(IngestError::Plugin(failure)) => Some(matches!(
            failure.kind(),
            "crashed" | "timeout" | "memory" | "output" | "failed"
        )),
        Err(_) => None,
    }
}
