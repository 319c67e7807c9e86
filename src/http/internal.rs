//! The internal API for source applications (contract §6): upload a source's data or report
//! its error. Mounted under `/app/export/v1` and `/internal/export/v1`, accepting both path
//! shapes (`/{export}/{application}/{source}/upload` and `/upload/{export}/{application}/{source}`).

use std::time::Instant;

use axum::body::Body;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use uuid::Uuid;

use super::AppState;
use super::body::read_limited;
use super::error::{ApiError, Violation};
use super::upload_hold::UploadHold;
use super::upload_slots::UploadSlot;
use crate::db::sources::{BeginUpload, Lookup, Settled, SourceTarget, StoredUpload};
use crate::domain::SourceStatus;
use crate::domain::psk::{Grant, PskError, authorize};
use crate::ingest::rows::format_of_content_type;
use crate::ingest::{IngestError, Limits, PluginRun, ingest};
use crate::plugin_host::PluginFailure;
use crate::storage::StoreError;

/// The header carrying the pre-shared key.
pub const PSK_HEADER: &str = "x-rh-exports-psk";
/// The two mounts of the internal API.
pub const MOUNTS: [&str; 2] = ["/app/export/v1", "/internal/export/v1"];
/// The largest error report body.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// The longest error message kept.
const MAX_ERROR_MESSAGE_CHARS: usize = 4096;

/// The routes of one mount.
pub fn routes(state: AppState, base_path: &'static str) -> Router<AppState> {
    Router::new()
        .route(
            "/ping",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                    "Hello world",
                )
            }),
        )
        .route("/{export}/{application}/{source}/upload", post(upload))
        .route("/upload/{export}/{application}/{source}", post(upload))
        .route("/{export}/{application}/{source}/error", post(report_error))
        .route("/error/{export}/{application}/{source}", post(report_error))
        .layer(from_fn_with_state((state, base_path), count_request))
}

async fn count_request(
    State((state, base_path)): State<(AppState, &'static str)>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    state
        .metrics
        .internal_requests
        .with_label_values(&[base_path])
        .inc();
    next.run(request).await
}

/// The path of an upload or error call, validated in the upstream's order.
pub struct SourcePath {
    export_id: Uuid,
    application: String,
    source_id: Uuid,
}

impl<S: Send + Sync> FromRequestParts<S> for SourcePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path((export, application, source)) =
            Path::<(String, String, String)>::from_request_parts(parts, state)
                .await
                .map_err(|rejection| {
                    ApiError::bad_request(format!("invalid path: {}", rejection.body_text()))
                })?;
        let export_id = Uuid::try_parse(&export)
            .map_err(|_| ApiError::bad_request(format!("'{export}' is not a valid export UUID")))?;
        let source_id = Uuid::try_parse(&source).map_err(|_| {
            ApiError::bad_request(format!("'{source}' is not a valid resource UUID"))
        })?;
        let span = tracing::Span::current();
        span.record("export_id", tracing::field::display(export_id));
        Ok(Self {
            export_id,
            application,
            source_id,
        })
    }
}

impl From<PskError> for ApiError {
    fn from(error: PskError) -> Self {
        let status = match error {
            PskError::Missing => StatusCode::BAD_REQUEST,
            PskError::Invalid | PskError::InvalidForApplication => StatusCode::UNAUTHORIZED,
            PskError::Closed | PskError::NoKeyForApplication => StatusCode::FORBIDDEN,
        };
        ApiError::new(status, error.to_string())
    }
}

/// Authenticates the caller and finds a pending source it may write to.
async fn authorised_target(
    state: &AppState,
    headers: &HeaderMap,
    path: &SourcePath,
) -> Result<SourceTarget, ApiError> {
    let grant = authorize_caller(state, headers, path)?;
    pending_target(state, path, grant).await
}

/// Checks the caller's key against the application in the path (no database work).
fn authorize_caller(
    state: &AppState,
    headers: &HeaderMap,
    path: &SourcePath,
) -> Result<Grant, ApiError> {
    let keys: Vec<&[u8]> = headers
        .get_all(PSK_HEADER)
        .iter()
        .map(|value| value.as_bytes())
        .collect();
    Ok(authorize(&state.config.psks, &keys, &path.application)?)
}

/// Finds the pending source of `path` that an authorised caller with `grant` may write to.
async fn pending_target(
    state: &AppState,
    path: &SourcePath,
    grant: Grant,
) -> Result<SourceTarget, ApiError> {
    let target = match state.sources.lookup(path.export_id, path.source_id).await? {
        Lookup::NoExport => return Err(ApiError::export_not_found(path.export_id)),
        Lookup::NoSource => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("source '{}' not found", path.source_id),
            ));
        }
        Lookup::Found(target) => target,
    };
    // The key (and the URL) must name the application the source was requested from.
    if target.application != path.application {
        let reason = match grant {
            Grant::Application(application) => {
                format!(
                    "the key of application '{application}' cannot write to a source of another application"
                )
            }
            Grant::AnySource => format!(
                "source '{}' does not belong to application '{}'",
                path.source_id, path.application
            ),
        };
        return Err(ApiError::new(StatusCode::FORBIDDEN, reason));
    }
    if target.status != SourceStatus::Pending {
        return Err(already_processed());
    }
    Ok(target)
}

/// An upload bound to a plugin this replica could not load yet waits (503) rather than being
/// stored without the checks its binding promises.
fn refuse_without_its_plugin(state: &AppState, target: &SourceTarget) -> Result<(), ApiError> {
    let Some(bindings) = &state.plugins else {
        return Ok(());
    };
    if bindings.is_unloaded(&target.application, &target.resource)
        && bindings
            .binding_for(&target.application, &target.resource)
            .is_none()
    {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the plugin bound to application '{}' is not loaded on this replica yet \
                 (its component could not be fetched or compiled); the source stays pending, \
                 upload again shortly",
                target.application
            ),
        )
        .retry_after(5));
    }
    Ok(())
}

fn already_processed() -> ApiError {
    ApiError::new(StatusCode::GONE, "this resource has already been processed")
}

/// `POST …/upload`: stream the source's data into the object store.
pub async fn upload(
    State(state): State<AppState>,
    path: SourcePath,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let grant = authorize_caller(&state, &headers, &path)?;
    // A slot before any database work or byte of the body: refusing costs nothing. (The path's
    // application is the one the key was checked against; the lookup below confirms it owns
    // the source.)
    let _slot = take_upload_slot(&state, &path.application)?;
    let target = pending_target(&state, &path, grant).await?;
    let limit = state.config.data_path.max_payload_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "payload is too large, max size: {}MB",
                limit / (1024 * 1024)
            ),
        )
    };
    let declared: Option<u64> = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok());
    if declared.is_some_and(|length| length > limit) {
        state.metrics.failed_uploads.inc();
        state.metrics.refuse("payload_size");
        return Err(too_large());
    }
    refuse_without_its_plugin(&state, &target)?;
    let lease = state.config.data_path.upload_lease;
    let token = match state.sources.begin_upload(&target, lease).await? {
        BeginUpload::Started(token) => token,
        BeginUpload::AlreadyProcessed => return Err(already_processed()),
        BeginUpload::InProgress => return Err(upload_in_progress()),
    };
    // If the client goes away mid-upload the handler is dropped: the guard still frees the
    // source at once, so the application's retry is not refused for the whole lease. While the
    // upload runs, its hold on the source is renewed.
    let mut hold = UploadHold::start(
        state.sources.clone(),
        state.upload_holds.clone(),
        target.source_id,
        token,
        lease,
    );
    let started = Instant::now();
    let key = state.keys.source_key(
        &target.org_id,
        target.export_id,
        target.source_id,
        target.format,
    );
    let limits = Limits {
        max_bytes: limit,
        max_stored_bytes: state.config.data_path.max_stored_bytes,
        idle_timeout: state.config.private_timeouts.read,
    };
    let uploaded_format = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(format_of_content_type);
    // The binding in force now stays with this upload to its end, whatever changes meanwhile.
    let plugin = state.plugins.as_ref().and_then(|bindings| {
        bindings
            .binding_for(&target.application, &target.resource)
            .map(|binding| PluginRun {
                host: bindings.host.clone(),
                plugin: binding.plugin.clone(),
                config: binding.config.clone(),
                application: target.application.clone(),
                resource: target.resource.clone(),
                schema: binding.schema_for(&target.resource),
            })
    });
    let plugin_labels = plugin.as_ref().map(|run| {
        [
            run.plugin.info.name.clone(),
            run.plugin.info.version.clone(),
        ]
    });
    if let Some(labels) = &plugin_labels {
        state
            .metrics
            .plugin_invocations
            .with_label_values(labels)
            .inc();
    }
    // However steadily the body trickles in (each pause under the idle timeout), the upload
    // ends at UPLOAD_MAX_DURATION and frees its slot.
    let max_duration = state.config.data_path.upload_max_duration;
    let Ok(ingested) = tokio::time::timeout(
        max_duration,
        ingest(
            &state.store,
            &key,
            body,
            uploaded_format,
            target.format,
            limits,
            plugin,
        ),
    )
    .await
    else {
        return Err(upload_too_slow(&state, &target, &mut hold, max_duration).await);
    };
    hold.renewal.abort();
    if let Some(labels) = &plugin_labels {
        state
            .metrics
            .plugin_seconds
            .with_label_values(labels)
            .observe(started.elapsed().as_secs_f64());
        if let Err(IngestError::Plugin(failure)) = &ingested {
            let [name, version] = labels;
            state
                .metrics
                .plugin_failures
                .with_label_values(&[name.as_str(), version.as_str(), failure.kind()])
                .inc();
        }
    }
    let ingested = match ingested {
        Ok(ingested) => ingested,
        Err(IngestError::Plugin(failure)) => {
            // The plugin rejected the data or failed on it: the source fails, visibly.
            state.metrics.failed_uploads.inc();
            let message = failure.to_string();
            tracing::info!(source_id = %target.source_id, reason = %message, "upload stopped by its plugin");
            state
                .sources
                .release_upload(target.source_id, token)
                .await?;
            hold.armed = false;
            let violations: Vec<Violation> = match &failure {
                PluginFailure::Rejected { violations, .. } => violations
                    .iter()
                    .map(|violation| Violation {
                        row: violation.row,
                        field: violation.field.clone(),
                        message: violation.message.clone(),
                    })
                    .collect(),
                _ => Vec::new(),
            };
            let summary = match violations.first() {
                Some(first) => format!(
                    "{message}: {} violation(s), first: {}{}",
                    violations.len(),
                    first
                        .row
                        .map(|row| format!("row {row}: "))
                        .unwrap_or_default(),
                    first.message
                ),
                None => message,
            };
            state.sources.fail(&target, 422, &summary).await?;
            return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, summary)
                .with_violations(violations));
        }
        Err(IngestError::Rejected(reason)) => {
            // The data itself is wrong: the source fails with a message the tenant sees.
            state.metrics.failed_uploads.inc();
            let message = format!("upload rejected: {reason}");
            tracing::info!(source_id = %target.source_id, reason = %reason, "upload rejected");
            // Release first: an error report may not fail a source an upload holds.
            state
                .sources
                .release_upload(target.source_id, token)
                .await?;
            hold.armed = false;
            state.sources.fail(&target, 422, &message).await?;
            return Err(
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message).with_violations(vec![
                    Violation {
                        row: reason.record,
                        field: None,
                        message: reason.message,
                    },
                ]),
            );
        }
        Err(IngestError::StoredTooLarge { limit }) => {
            // Like data that does not convert: the same bytes would be refused again, so the
            // source fails with the reason the tenant sees.
            state.metrics.failed_uploads.inc();
            state.metrics.refuse("stored_size");
            let message = format!(
                "upload rejected: the data as stored would exceed {limit} bytes \
                 (MAX_PAYLOAD_SIZE × MAX_STORED_EXPANSION); upload it in the export's format \
                 ({}) or split it",
                target.format.as_str()
            );
            tracing::info!(source_id = %target.source_id, limit, "upload over the stored size limit");
            state
                .sources
                .release_upload(target.source_id, token)
                .await?;
            hold.armed = false;
            state.sources.fail(&target, 413, &message).await?;
            return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, message));
        }
        Err(error) => {
            state.metrics.failed_uploads.inc();
            tracing::warn!(error = %error, "upload not stored");
            if let IngestError::TooLarge { .. } = error {
                state.metrics.refuse("payload_size");
            }
            if state
                .sources
                .release_upload(target.source_id, token)
                .await
                .is_ok()
            {
                hold.armed = false;
            }
            return Err(match error {
                IngestError::TooLarge { .. } => too_large(),
                IngestError::Idle(timeout) => ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "no data received for {} ms; upload again",
                        timeout.as_millis()
                    ),
                ),
                IngestError::Body(reason) => {
                    ApiError::bad_request(format!("the payload could not be read: {reason}"))
                }
                IngestError::Store(StoreError::Unavailable(_)) => ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "object storage is unavailable; the source stays pending, upload again shortly",
                )
                .retry_after(5),
                IngestError::Store(other) => ApiError::internal(&other),
                IngestError::Rejected(_)
                | IngestError::Plugin(_)
                | IngestError::StoredTooLarge { .. } => unreachable!("handled above"),
            });
        }
    };
    let stored = StoredUpload {
        object_key: key.clone(),
        sha256: ingested.sha256.clone(),
        bytes: ingested.bytes,
        rows: ingested.rows,
        plugin: ingested.plugin.clone(),
    };
    let settled = state.sources.complete(&target, token, &stored).await?;
    hold.armed = false;
    match settled {
        Settled::Recorded(_) => {}
        Settled::AlreadyProcessed => return Err(already_processed()),
        Settled::Held => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "another upload took this source over; this one was not recorded",
            ));
        }
        Settled::Gone => {
            // The export was deleted (or expired) while the data streamed in: remove it again.
            if let Err(error) = state.store.delete(&key).await {
                tracing::warn!(error = %error, key, "cannot delete the upload of a deleted export");
            }
            return Err(ApiError::new(
                StatusCode::GONE,
                "the export was deleted while the upload ran",
            ));
        }
    }
    state.metrics.uploads.inc();
    state
        .metrics
        .upload_sizes
        .with_label_values(&[&target.application])
        .observe(ingested.bytes as f64);
    tracing::info!(
        source_id = %target.source_id,
        bytes = ingested.bytes,
        rows = ingested.rows,
        elapsed_ms = started.elapsed().as_millis(),
        "upload stored"
    );
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "message": "payload delivered",
            "source": target.source_id,
            "sha256": ingested.sha256,
            "bytes": ingested.bytes,
            "rows": ingested.rows,
            "uploaded_bytes": ingested.uploaded_bytes,
                        "converted_from": ingested.uploaded_format.filter(|format| *format != target.format),
            "plugin": ingested.plugin.as_ref().map(|plugin| json!({
                "name": plugin.name,
                "version": plugin.version,
                "digest": plugin.digest,
            })),
        })),
    )
        .into_response())
}

fn upload_in_progress() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "an upload for this source is already in progress",
    )
}

/// Takes an upload slot for `application`, or refuses with 503 naming the limit reached.
fn take_upload_slot(state: &AppState, application: &str) -> Result<UploadSlot, ApiError> {
    state.upload_slots.try_take(application).map_err(|refusal| {
        state.metrics.refuse(refusal.metric_label());
        tracing::info!(application, reason = %refusal, "upload refused: no slot");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, refusal.to_string()).retry_after(2)
    })
}

/// Ends an upload that ran past `UPLOAD_MAX_DURATION`: nothing is recorded, the source is freed
/// for the application's next attempt at once, and the client is told which limit it hit.
async fn upload_too_slow(
    state: &AppState,
    target: &SourceTarget,
    hold: &mut UploadHold,
    max_duration: std::time::Duration,
) -> ApiError {
    state.metrics.failed_uploads.inc();
    state.metrics.refuse("upload_duration");
    tracing::info!(
        source_id = %target.source_id,
        limit_ms = max_duration.as_millis(),
        "upload stopped at UPLOAD_MAX_DURATION"
    );
    if let Err(error) = hold.release().await {
        // The guard keeps trying when it is dropped.
        tracing::warn!(error = %error, "cannot release the hold of an upload that took too long");
    }
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        format!(
            "the upload did not finish within UPLOAD_MAX_DURATION ({max_duration:?}); nothing was stored and the source is still pending: upload again, faster"
        ),
    )
}

/// `POST …/error`: the application reports that it cannot deliver the source.
pub async fn report_error(
    State(state): State<AppState>,
    path: SourcePath,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // Authenticate before reading anything the caller sends.
    let keys: Vec<&[u8]> = headers
        .get_all(PSK_HEADER)
        .iter()
        .map(|value| value.as_bytes())
        .collect();
    authorize(&state.config.psks, &keys, &path.application)?;
    let body = read_limited(body, MAX_ERROR_BODY, state.config.private_timeouts.read).await?;
    let (code, message) = parse_error_report(&body)?;
    let target = authorised_target(&state, &headers, &path).await?;
    match state.sources.fail(&target, code, &message).await? {
        Settled::Recorded(_) => {}
        Settled::AlreadyProcessed => return Err(already_processed()),
        Settled::Held => return Err(upload_in_progress()),
        Settled::Gone => return Err(ApiError::export_not_found(target.export_id)),
    }
    tracing::info!(source_id = %target.source_id, code, "source failed by its application");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"message": "error recorded"})),
    )
        .into_response())
}

/// `{"message": "...", "error": 503}` (`"code"` accepted for `"error"`; keys in any case).
fn parse_error_report(body: &[u8]) -> Result<(i32, String), ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|error| {
        ApiError::bad_request(format!("request body is not valid JSON: {error}"))
    })?;
    let Value::Object(fields) = value else {
        return Err(ApiError::bad_request("request body must be a JSON object"));
    };
    let field = |names: &[&str]| {
        fields
            .iter()
            .find(|(key, _)| names.contains(&key.to_lowercase().as_str()))
            .map(|(_, value)| value)
    };
    let message = field(&["message"])
        .and_then(Value::as_str)
        .unwrap_or_default()
        .trim();
    let code = field(&["error", "code"])
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if message.is_empty() || code == 0 {
        return Err(ApiError::bad_request(
            "Both 'message' and 'code' are required fields",
        ));
    }
    if !(400..=599).contains(&code) {
        return Err(ApiError::bad_request(format!(
            "'error' must be an HTTP status code between 400 and 599, got {code}"
        )));
    }
    if message.chars().count() > MAX_ERROR_MESSAGE_CHARS || message.contains('\0') {
        return Err(ApiError::bad_request(format!(
            "'message' must be at most {MAX_ERROR_MESSAGE_CHARS} characters without NUL"
        )));
    }
    Ok((code as i32, message.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_reports() {
        assert_eq!(
            parse_error_report(br#"{"message":"down","error":503}"#).unwrap(),
            (503, "down".into())
        );
        assert_eq!(
            parse_error_report(br#"{"Message":"down","CODE":404}"#).unwrap(),
            (404, "down".into())
        );
        for (body, status) in [
            (&br#"{"message":"x"}"#[..], 400),
            (br#"{"error":500}"#, 400),
            (br#"{"message":"x","error":200}"#, 400),
            (br#"{"message":"x","error":"500"}"#, 400),
            (br#"[1]"#, 400),
            (b"nope", 400),
        ] {
            assert_eq!(
                parse_error_report(body).unwrap_err().status().as_u16(),
                status
            );
        }
    }
}
