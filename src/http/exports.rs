//! Handlers of the tenant-facing export routes. Each one extracts, calls the domain and the
//! repository, and maps the result to a response.

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{FromRequestParts, OriginalUri, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio_util::io::ReaderStream;

use super::AppState;
use super::audit::{Audited, record};
use super::body::read_limited;
use super::error::{ApiError, ErrorBody};
use super::request_id::RequestId;
use super::views::{ExportDetail, ExportList, ExportListItem, LinksView, ListMeta};
use crate::config::DownloadRedirect;
use crate::db::exports::{Creation, InsertError, KeyedInsert};
use crate::dispatch::event::{cancel_event, events_for};
use crate::domain::audit::{AuditAction, AuditRecord, Outcome, Principal};
use crate::domain::create::{CreateContext, CreateError, parse_create_request};
use crate::domain::idempotency::{IdempotencyKey, request_fingerprint};
use crate::domain::identity::Identity;
use crate::domain::listing::{page_links, parse_list_query};
use crate::domain::outbox::CancelledSource;
use crate::domain::range::{RangeRequest, parse_range};
use crate::domain::{ExportId, NewExport, timestamp};
use crate::storage::{ByteRange, ResponseHeaders, StoreError};
use crate::worker::cleaner::remove_objects;

/// The largest create request body accepted.
pub const MAX_CREATE_BODY_BYTES: usize = 1024 * 1024;

impl From<CreateError> for ApiError {
    fn from(error: CreateError) -> Self {
        let status = match error {
            CreateError::Invalid(_) => StatusCode::BAD_REQUEST,
            CreateError::NotEnabled => StatusCode::NOT_ACCEPTABLE,
        };
        ApiError::new(status, error.to_string())
    }
}

/// The export id of the path, in any form the upstream accepts (hyphenated, 32 hex digits,
/// braces, `urn:uuid:`). Anything else — including percent-encoded bytes that are not UTF-8 —
/// is a 400 in the JSON envelope.
pub struct ExportIdPath(pub ExportId);

impl<S: Send + Sync> FromRequestParts<S> for ExportIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| {
                ApiError::bad_request(format!(
                    "invalid export id in the path: {}",
                    rejection.body_text()
                ))
            })?;
        let id: ExportId = raw.parse()?;
        tracing::Span::current().record("export_id", tracing::field::display(id));
        Ok(Self(id))
    }
}

/// Request an export of one or more application resources.
#[utoipa::path(
    post, path = "/exports", tag = "exports",
    request_body(content = CreateExportRequest, content_type = "application/json"),
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "Makes the create idempotent for 24 hours per owner: resending the same body with the same key answers the export it created (202, the same body, `Idempotent-Replayed: true`) without creating another; another body with that key answers 422. 1 to 255 visible ASCII characters, e.g. a UUID."),
    ),
    responses(
        (status = 202, description = "Export accepted; sources are being asked for their data", body = ExportDetail,
            headers(("Idempotent-Replayed" = String, description = "`true` when this is the answer to an earlier request with the same Idempotency-Key"))),
        (status = 400, description = "Malformed request, identity or Idempotency-Key", body = ErrorBody),
        (status = 406, description = "A requested application resource is not enabled for export", body = ErrorBody),
        (status = 413, description = "Request body over 1 MiB", body = ErrorBody),
        (status = 422, description = "The Idempotency-Key was used with a different body", body = ErrorBody),
        (status = 429, description = "Too many requests for this organisation, or a quota of the organisation (unfinished exports, sources per hour, bytes stored) would be exceeded; the message names it", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
        (status = 503, description = "Database unavailable; retry", body = ErrorBody),
    ),
    security(("x-rh-identity" = []))
)]
pub async fn create_export(
    State(state): State<AppState>,
    axum::Extension(identity): axum::Extension<Identity>,
    axum::Extension(request_id): axum::Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let key = headers
        .get(IDEMPOTENCY_KEY)
        .map(|value| IdempotencyKey::parse(value.as_bytes()))
        .transpose()
        .map_err(|error| ApiError::bad_request(error.to_string()))?;
    let body = read_limited(
        body,
        MAX_CREATE_BODY_BYTES,
        state.config.public_timeouts.read,
    )
    .await?;
    let new_export = parse_create_request(
        &body,
        CreateContext {
            owner: &identity.owner,
            request_id: Some(&request_id.0),
            enabled_apps: &state.config.enabled_apps,
            expiry_days: state.config.export_expiry_days,
            max_expiry_days: state.config.export_max_expiry_days,
            now: timestamp::now(),
        },
    )?;
    let events = events_for(&new_export, identity.header.expose(), &state.config.events);
    let audit = AuditRecord {
        action: AuditAction::Create,
        resource_id: new_export.id.to_string(),
        outcome: Outcome::Success,
        principal: Principal::tenant(&identity.owner),
        reason: String::new(),
        request_id: request_id.0.clone(),
    };
    let creation = Creation {
        export: &new_export,
        events: &events,
        quotas: &state.config.quotas,
        audit: &audit,
    };
    let Some(key) = key else {
        state
            .exports
            .insert(&creation)
            .await
            .map_err(|error| not_inserted(&state, error))?;
        record_created(&state, &new_export);
        let detail = ExportDetail::from(new_export.into_export());
        return Ok(audited(
            (StatusCode::ACCEPTED, Json(detail)).into_response(),
        ));
    };
    // The answer is stored with the key, so it is made before the insert.
    let detail = ExportDetail::from(new_export.clone().into_export());
    // A body that parsed as a create request is JSON.
    let request: serde_json::Value =
        serde_json::from_slice(&body).map_err(|error| ApiError::internal(&error))?;
    let fingerprint = request_fingerprint(&request);
    let response = serde_json::to_string(&detail).map_err(|error| ApiError::internal(&error))?;
    match state
        .exports
        .insert_keyed(&creation, &key, &fingerprint, &response)
        .await
        .map_err(|error| not_inserted(&state, error))?
    {
        KeyedInsert::Stored => {
            record_created(&state, &new_export);
            Ok(audited(json_answer(response, false)))
        }
        KeyedInsert::Replay {
            fingerprint: earlier,
            response,
        } if earlier == fingerprint => {
            tracing::info!(%key, "create replayed under its idempotency key");
            let export_id = serde_json::from_str::<serde_json::Value>(&response)
                .ok()
                .and_then(|stored| stored["id"].as_str().map(str::to_owned))
                .unwrap_or_default();
            let replay = AuditRecord {
                resource_id: export_id,
                reason: format!("replayed under Idempotency-Key '{key}'"),
                ..audit
            };
            record(&state, &replay).await;
            Ok(audited(json_answer(response, true)))
        }
        KeyedInsert::Replay { .. } => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "Idempotency-Key '{key}' was used in the last 24 hours with a different request \
                 body; resend that body to get its export, or use a new key for a new export"
            ),
        )),
    }
}

/// The answer to a create that was not stored: 429 naming the quota it would exceed (counted
/// as `export_service_refusals_total{limit="quota_<name>"}`), or the database's failure.
fn not_inserted(state: &AppState, error: InsertError) -> ApiError {
    match error {
        InsertError::Quota(exceeded) => {
            state.metrics.refuse(&format!("quota_{}", exceeded.quota()));
            tracing::info!(quota = exceeded.quota(), "create refused: quota exceeded");
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, exceeded.to_string())
                .retry_after(exceeded.retry_after().as_secs().max(1))
        }
        InsertError::Database(error) => error.into(),
    }
}

/// Marks a response whose action was recorded in the audit trail in its own transaction.
fn audited(mut response: Response) -> Response {
    response.extensions_mut().insert(Audited);
    response
}

/// The header that makes a create idempotent.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Set on an answer replayed for a repeated `Idempotency-Key`.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

fn record_created(state: &AppState, export: &NewExport) {
    tracing::Span::current().record("export_id", tracing::field::display(export.id));
    state
        .metrics
        .exports_created
        .with_label_values(&[export.format.as_str()])
        .inc();
    tracing::info!(sources = export.sources.len(), "export created");
}

/// A 202 carrying `body` (JSON) as it was first answered.
fn json_answer(body: String, replayed: bool) -> Response {
    let mut response = (
        StatusCode::ACCEPTED,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response();
    if replayed {
        response
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    response
}

/// List the caller's exports.
#[utoipa::path(
    get, path = "/exports", tag = "exports",
    params(
        ("name" = Option<String>, Query, description = "Exact name"),
        ("status" = Option<String>, Query, description = "Exact status: pending, running, partial, complete, failed"),
        ("created_at" = Option<String>, Query, description = "Created within 24 h from this date (YYYY-MM-DD) or timestamp (RFC 3339)"),
        ("expires_at" = Option<String>, Query, description = "Expiring within 24 h from this date or timestamp"),
        ("application" = Option<String>, Query, description = "Some source has this application"),
        ("resource" = Option<String>, Query, description = "Some source has this resource (the same source as `application` when both are given)"),
        ("sort" = Option<String>, Query, description = "name, created_at (or created), expires_at (or expires), application, resource; default created_at"),
        ("dir" = Option<String>, Query, description = "asc (default) or desc"),
        ("offset" = Option<i64>, Query, description = "Exports to skip; default 0"),
        ("limit" = Option<i64>, Query, description = "Page size; default 100, at most 1000"),
    ),
    responses(
        (status = 200, description = "A page of exports", body = ExportList),
        (status = 400, description = "Invalid parameter or identity", body = ErrorBody),
        (status = 429, description = "Too many requests for this organisation", body = ErrorBody),
    ),
    security(("x-rh-identity" = []))
)]
pub async fn list_exports(
    State(state): State<AppState>,
    axum::Extension(identity): axum::Extension<Identity>,
    OriginalUri(uri): OriginalUri,
) -> Result<Json<ExportList>, ApiError> {
    let pairs: Vec<(String, String)> =
        url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let query = parse_list_query(&pairs).map_err(|error| ApiError::bad_request(error.0))?;
    let page = state.exports.list_owned(&identity.owner, &query).await?;
    let links = page_links(uri.path(), &pairs, query.offset, query.limit, page.count);
    Ok(Json(ExportList {
        meta: ListMeta { count: page.count },
        links: LinksView::from(links),
        data: page.exports.into_iter().map(ExportListItem::from).collect(),
    }))
}

/// The status of one export and of each of its sources.
#[utoipa::path(
    get, path = "/exports/{id}/status", tag = "exports",
    params(("id" = String, Path, description = "Export id")),
    responses(
        (status = 200, description = "The export and its sources", body = ExportDetail,
            headers(("Retry-After" = u32, description = "While the export is pending or running: seconds to wait before asking again"))),
        (status = 400, description = "Invalid id or identity", body = ErrorBody),
        (status = 404, description = "No such export for this caller", body = ErrorBody),
    ),
    security(("x-rh-identity" = []))
)]
pub async fn export_status(
    State(state): State<AppState>,
    axum::Extension(identity): axum::Extension<Identity>,
    ExportIdPath(id): ExportIdPath,
) -> Result<Response, ApiError> {
    let export = state
        .exports
        .find_owned(&identity.owner, id)
        .await?
        .ok_or_else(|| ApiError::export_not_found(id))?;
    let in_progress = export.status.is_in_progress();
    let mut response = Json(ExportDetail::from(export)).into_response();
    if in_progress {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(STATUS_POLL_SECONDS));
    }
    Ok(response)
}

/// How long `/status` asks a client to wait between polls of an export in progress: sources
/// answer in seconds to minutes, so polling faster only spends the rate limit.
pub const STATUS_POLL_SECONDS: u32 = 5;

/// Download the export's archive (a ZIP of every delivered source, `meta.json` and `README.md`).
///
/// An export is ready once every source has answered and its archive has been packaged; until
/// then the answer is 400, as upstream. After `expires_at` the answer is 410. `Range` (one
/// range, with `If-Range`) resumes a broken download with 206.
#[utoipa::path(
    get, path = "/exports/{id}", tag = "exports",
    params(("id" = String, Path, description = "Export id")),
    responses(
        (status = 200, description = "The archive", content_type = "application/zip"),
        (status = 302, description = "With DOWNLOAD_REDIRECT=presigned and no Range: the archive is at the short-lived URL in Location (fresh for each request)",
            headers(("Location" = String, description = "A presigned URL of the archive"))),
        (status = 206, description = "The requested range of the archive", content_type = "application/zip"),
        (status = 416, description = "The range lies outside the archive", body = ErrorBody),
        (status = 400, description = "Not ready for download, or invalid id", body = ErrorBody),
        (status = 404, description = "No such export for this caller", body = ErrorBody),
        (status = 410, description = "The export has expired", body = ErrorBody),
    ),
    security(("x-rh-identity" = []))
)]
pub async fn download_export(
    State(state): State<AppState>,
    axum::Extension(identity): axum::Extension<Identity>,
    ExportIdPath(id): ExportIdPath,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let export = state
        .exports
        .find_owned(&identity.owner, id)
        .await?
        .ok_or_else(|| ApiError::export_not_found(id))?;
    if export.is_expired(timestamp::now()) {
        return Err(ApiError::new(
            StatusCode::GONE,
            format!(
                "export '{id}' expired at {}",
                timestamp::format(&export.expires_at)
            ),
        ));
    }
    let archive = match (&export.archive, export.status.is_downloadable()) {
        (Some(archive), true) => archive,
        _ => {
            return Err(ApiError::bad_request(format!(
                "'{id}' is not ready for download"
            )));
        }
    };
    let completed = export.completed_at.unwrap_or(export.created_at);
    let filename = format!("{}-{id}.zip", completed.format("%Y-%m-%dT%H:%M:%SZ"));
    let disposition = format!("attachment; filename=\"{filename}\"");
    // A ranged request resumes a download against this service's ETag, which the store's
    // differs from: it is served here.
    if let DownloadRedirect::Presigned { expires_in } = state.config.download
        && !headers.contains_key(header::RANGE)
        && let Some(redirect) =
            presigned_redirect(&state, &archive.key, expires_in, &disposition).await
    {
        return Ok(redirect);
    }
    let etag = format!("\"{}\"", archive.sha256);
    // A resumed download names the version it started with; if that changed, send it all.
    let range_header = headers
        .get(header::RANGE)
        .and_then(|value| value.to_str().ok());
    let if_range_matches = headers
        .get(header::IF_RANGE)
        .and_then(|value| value.to_str().ok())
        .is_none_or(|value| value == etag);
    let range = if if_range_matches {
        parse_range(range_header, archive.bytes)
    } else {
        RangeRequest::Full
    };
    let mut response = Response::builder()
        .header(header::CONTENT_TYPE, "application/zip")
        .header(header::CONTENT_DISPOSITION, disposition)
        .header(header::ETAG, &etag)
        .header(header::ACCEPT_RANGES, "bytes");
    let (status, byte_range) = match range {
        RangeRequest::Full => (StatusCode::OK, None),
        RangeRequest::Partial { start, end } => {
            response = response.header(
                header::CONTENT_RANGE,
                format!("bytes {start}-{end}/{}", archive.bytes),
            );
            (StatusCode::PARTIAL_CONTENT, Some(ByteRange { start, end }))
        }
        RangeRequest::Unsatisfiable => {
            let mut error = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                format!("the archive has {} bytes", archive.bytes),
            )
            .into_response();
            error.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{}", archive.bytes))
                    .expect("a valid header value"),
            );
            return Ok(error);
        }
    };
    let object = state
        .store
        .get(&archive.key, byte_range)
        .await
        .map_err(|error| match error {
            StoreError::Unavailable(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "object storage is unavailable; retry shortly",
            )
            .retry_after(5),
            other => ApiError::internal(&other),
        })?;
    let body = Body::from_stream(ReaderStream::with_capacity(object.body, DOWNLOAD_FRAME));
    response
        .status(status)
        .header(header::CONTENT_LENGTH, object.length)
        .body(body)
        .map_err(|error| ApiError::internal(&error))
}

/// The largest frame a streamed download hands to the connection; each download holds about
/// one. Larger frames measured no faster (`bench/results/NOTES.md`).
const DOWNLOAD_FRAME: usize = 64 * 1024;

/// A 302 to a presigned URL of the archive, fresh for this request; `None` when the store
/// cannot presign, so the caller streams instead. A signing failure is logged and streamed
/// too: the tenant still gets the archive.
async fn presigned_redirect(
    state: &AppState,
    key: &str,
    expires_in: Duration,
    disposition: &str,
) -> Option<Response> {
    let headers = ResponseHeaders {
        content_type: "application/zip".to_owned(),
        content_disposition: disposition.to_owned(),
    };
    match state.store.presign_get(key, expires_in, &headers).await {
        Ok(Some(url)) => Some(
            (
                StatusCode::FOUND,
                [
                    (header::LOCATION, url),
                    // Each URL expires: no cache may hand it out again.
                    (header::CACHE_CONTROL, "no-store".to_owned()),
                ],
            )
                .into_response(),
        ),
        Ok(None) => None,
        Err(error) => {
            tracing::warn!(%error, "cannot presign the archive's URL; streaming it instead");
            None
        }
    }
}

/// Delete an export.
#[utoipa::path(
    delete, path = "/exports/{id}", tag = "exports",
    params(("id" = String, Path, description = "Export id")),
    responses(
        (status = 202, description = "Deleted"),
        (status = 400, description = "Invalid id or identity", body = ErrorBody),
        (status = 404, description = "No such export for this caller", body = ErrorBody),
    ),
    security(("x-rh-identity" = []))
)]
pub async fn delete_export(
    State(state): State<AppState>,
    axum::Extension(identity): axum::Extension<Identity>,
    axum::Extension(request_id): axum::Extension<RequestId>,
    ExportIdPath(id): ExportIdPath,
) -> Result<Response, ApiError> {
    let prefix = state.keys.export_prefix(identity.owner.org_id.as_str(), id);
    let cancel = |source: &CancelledSource| {
        cancel_event(
            source,
            &identity.owner.org_id,
            identity.header.expose(),
            &state.config.events,
        )
    };
    let audit = AuditRecord {
        action: AuditAction::Delete,
        resource_id: id.to_string(),
        outcome: Outcome::Success,
        principal: Principal::tenant(&identity.owner),
        reason: String::new(),
        request_id: request_id.0,
    };
    let Some(withdrawal) = state
        .exports
        .delete_owned(&identity.owner, id, &prefix, cancel, &audit)
        .await?
    else {
        return Err(ApiError::export_not_found(id));
    };
    tracing::info!(
        withdrawn_requests = withdrawal.withdrawn,
        cancelled_sources = withdrawal.cancelled,
        "export deleted"
    );
    // The objects go now if the store answers; otherwise the cleaner retries.
    let (store, cleanup, metrics) = (
        state.store.clone(),
        state.cleanup.clone(),
        state.metrics.clone(),
    );
    tokio::spawn(async move { remove_objects(&store, &cleanup, &prefix, &metrics).await });
    Ok(audited(StatusCode::ACCEPTED.into_response()))
}

/// The create request body, for the OpenAPI document (parsing is done by the domain, which is
/// more lenient about unknown keys and key case, as the upstream is).
#[derive(utoipa::ToSchema)]
pub struct CreateExportRequest {
    /// A label for the export.
    pub name: Option<String>,
    /// `csv` or `json`.
    pub format: crate::domain::Format,
    /// When the export expires (RFC 3339); default: `EXPORT_EXPIRY_DAYS` days from now.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<String>,
    /// The resources to export (at most 100).
    pub sources: Vec<CreateSourceRequest>,
}

/// One requested resource, for the OpenAPI document.
#[derive(utoipa::ToSchema)]
pub struct CreateSourceRequest {
    /// The application that owns the data.
    pub application: String,
    /// The resource within the application.
    pub resource: String,
    /// Filters passed to the application (a JSON object).
    #[schema(value_type = Option<Object>)]
    pub filters: Option<serde_json::Value>,
}
