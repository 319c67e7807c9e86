//! The internal API for source applications (contract §6): upload a source's data or report
//! its error. Mounted under `/app/export/v1` and `/internal/export/v1`, accepting both path
//! shapes (`/{export}/{application}/{source}/upload` and `/upload/{export}/{application}/{source}`).

use axum::body::Body;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};

use super::AppState;
use super::audit::record_auth_failure;
use super::body::read_limited;
use super::error::ApiError;
use super::upload_slots::UploadSlot;
use crate::config::upload_slots_for;
use crate::db::sources::{Settled, SourceTarget};
use crate::delivery::{Delivered, DeliveryError, PluginChoice, Refusal, Upload};
use crate::domain::audit::{AuditAction, AuditRecord, Outcome, Principal};
use crate::domain::psk::{Grant, PskError, authorize};
use crate::domain::{Application, ExportId, InvalidId, SourceId};
use crate::ingest::rows::format_of_content_type;
use crate::oidc::OidcError;

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
    export_id: ExportId,
    application: Application,
    source_id: SourceId,
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
        let export_id: ExportId = export.parse()?;
        let source_id: SourceId = source.parse()?;
        let span = tracing::Span::current();
        span.record("export_id", tracing::field::display(export_id));
        Ok(Self {
            export_id,
            application: application.into(),
            source_id,
        })
    }
}

impl From<InvalidId> for ApiError {
    fn from(error: InvalidId) -> Self {
        ApiError::bad_request(error.to_string())
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

/// Checks the caller against the application in the path (no database work): its bearer
/// token when OIDC is on and it sends one (a failed token is not rescued by a PSK), otherwise
/// its pre-shared key.
async fn authorize_caller(
    state: &AppState,
    headers: &HeaderMap,
    path: &SourcePath,
) -> Result<Grant, ApiError> {
    let checked = check_caller(state, headers, path).await;
    if let Err(refusal) = &checked
        && matches!(
            refusal.status(),
            StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        )
    {
        // The caller is not authenticated: it is named only by the URL it claims.
        let record = AuditRecord {
            action: AuditAction::AuthFailure,
            resource_id: path.source_id.to_string(),
            outcome: Outcome::Denied,
            principal: Principal {
                user_id: path.application.as_str().to_owned(),
                org_id: String::new(),
                kind: "application".into(),
            },
            reason: refusal.message().to_owned(),
            request_id: String::new(),
        };
        record_auth_failure(state, &record).await;
    }
    checked
}

async fn check_caller(
    state: &AppState,
    headers: &HeaderMap,
    path: &SourcePath,
) -> Result<Grant, ApiError> {
    let application = path.application.as_str();
    if let Some(verifier) = &state.oidc
        && let Some(token) = bearer_token(headers)
    {
        return match verifier.authorize(token, application).await {
            Ok(()) => Ok(Grant::Application(application.to_owned())),
            Err(error) => {
                state.metrics.refuse("oidc_token");
                tracing::info!(%error, application, "bearer token refused");
                let status = if error.is_forbidden() {
                    StatusCode::FORBIDDEN
                } else if matches!(error, OidcError::ProviderUnavailable(_)) {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::UNAUTHORIZED
                };
                let answer = ApiError::new(status, error.to_string());
                Err(if status == StatusCode::SERVICE_UNAVAILABLE {
                    answer.retry_after(5)
                } else {
                    answer
                })
            }
        };
    }
    let keys: Vec<&[u8]> = headers
        .get_all(PSK_HEADER)
        .iter()
        .map(|value| value.as_bytes())
        .collect();
    Ok(authorize(&state.config.psks, &keys, application)?)
}

/// The token of an `Authorization: Bearer …` header.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|token| !token.is_empty())
}

/// Finds the pending source of `path` that an authorised caller with `grant` may write to.
async fn pending_target(
    state: &AppState,
    path: &SourcePath,
    grant: Grant,
) -> Result<SourceTarget, ApiError> {
    Ok(state
        .delivery()
        .pending_target(path.export_id, path.source_id, &path.application, grant)
        .await?)
}

/// `POST …/upload`: stream the source's data into the object store.
pub async fn upload(
    State(state): State<AppState>,
    path: SourcePath,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let grant = authorize_caller(&state, &headers, &path).await?;
    // A slot before any database work or byte of the body: refusing costs nothing. (The path's
    // application is the one the key was checked against; the lookup below confirms it owns
    // the source.)
    let _slot = take_upload_slot(&state, path.application.as_str())?;
    let target = pending_target(&state, &path, grant).await?;
    let header = |name| headers.get(name).and_then(|value| value.to_str().ok());
    let upload = Upload {
        declared_length: header(header::CONTENT_LENGTH).and_then(|value| value.parse().ok()),
        declared_format: header(header::CONTENT_TYPE).and_then(format_of_content_type),
        body: body
            .into_data_stream()
            .map_err(|error| error.to_string())
            .boxed(),
    };
    let source_id = target.source_id;
    let delivery = state.delivery();
    let delivered = match delivery.plugin_in_force(&target) {
        Ok(choice) => {
            // A binding giving its plugin more memory than the default holds more slots.
            let _more_slots =
                take_slots_for_plugin_memory(&state, path.application.as_str(), &choice)?;
            delivery.accept(target, upload, choice).await
        }
        Err(error) => Err(error),
    };
    match delivered {
        Ok(delivered) => Ok((StatusCode::ACCEPTED, Json(receipt(&delivered))).into_response()),
        Err(error) if error.leaves_source_pending() => {
            let answer = ApiError::from(error);
            delivery
                .remember_refusal(source_id, answer.status().as_u16(), answer.message())
                .await;
            Err(answer)
        }
        Err(error) => Err(error.into()),
    }
}

/// The body of a 202 answer to an upload.
fn receipt(delivered: &Delivered) -> Value {
    let ingested = &delivered.ingested;
    json!({
        "message": "payload delivered",
        "source": delivered.source_id,
        "sha256": ingested.sha256,
        "bytes": ingested.bytes,
        "rows": ingested.rows,
        "uploaded_bytes": ingested.uploaded_bytes,
        "converted_from": ingested.uploaded_format.filter(|format| *format != delivered.stored_format),
        "plugin": ingested.plugin.as_ref().map(|plugin| json!({
            "name": plugin.name,
            "version": plugin.version,
            "digest": plugin.digest,
        })),
    })
}

/// The one mapping of the upload use case's failures to answers.
impl From<DeliveryError> for ApiError {
    fn from(error: DeliveryError) -> Self {
        let message = error.to_string();
        match error {
            DeliveryError::TooLarge { .. } => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, message),
            DeliveryError::PluginNotLoaded { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message).retry_after(5)
            }
            DeliveryError::ExportNotFound(export_id) => ApiError::export_not_found(export_id),
            DeliveryError::SourceNotFound(_) => ApiError::new(StatusCode::NOT_FOUND, message),
            DeliveryError::NotYours(_) => ApiError::new(StatusCode::FORBIDDEN, message),
            DeliveryError::AlreadyProcessed | DeliveryError::ExportGone => {
                ApiError::new(StatusCode::GONE, message)
            }
            DeliveryError::InProgress | DeliveryError::TakenOver => {
                ApiError::new(StatusCode::CONFLICT, message)
            }
            DeliveryError::TooSlow(_) | DeliveryError::Idle(_) => {
                ApiError::new(StatusCode::REQUEST_TIMEOUT, message)
            }
            DeliveryError::Body(_) => ApiError::bad_request(message),
            DeliveryError::Refused {
                refusal: Refusal::StoredTooLarge,
                ..
            } => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, message),
            DeliveryError::Refused { violations, .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message).with_violations(violations)
            }
            DeliveryError::StoreUnavailable(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message).retry_after(5)
            }
            DeliveryError::Store(error) => ApiError::internal(&error),
            DeliveryError::Database(error) => error.into(),
        }
    }
}

/// Takes an upload slot for `application`, or refuses with 503 naming the limit reached.
fn take_upload_slot(state: &AppState, application: &str) -> Result<UploadSlot, ApiError> {
    state.upload_slots.try_take(application).map_err(|refusal| {
        state.metrics.refuse(refusal.metric_label());
        tracing::info!(application, reason = %refusal, "upload refused: no slot");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, refusal.to_string()).retry_after(2)
    })
}

/// Takes the upload slots beyond its own that an upload holds while its plugin session may use
/// more memory than a slot budgets (a binding's `"limits"`), or refuses with 503.
fn take_slots_for_plugin_memory(
    state: &AppState,
    application: &str,
    choice: &PluginChoice,
) -> Result<Vec<UploadSlot>, ApiError> {
    let Some(memory) = choice.memory_bytes() else {
        return Ok(Vec::new());
    };
    let more = upload_slots_for(&state.config, memory).saturating_sub(1);
    if more == 0 {
        return Ok(Vec::new());
    }
    state
        .upload_slots
        .try_take_many(application, more)
        .map_err(|refusal| {
            state.metrics.refuse(refusal.metric_label());
            tracing::info!(application, more, reason = %refusal, "upload refused: no slots for its plugin's memory");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "{refusal}: this upload's plugin binding gives its session {} MiB, which holds \
                     {more} more upload slot(s); retry later",
                    memory / (1024 * 1024)
                ),
            )
            .retry_after(2)
        })
}

/// `POST …/error`: the application reports that it cannot deliver the source.
pub async fn report_error(
    State(state): State<AppState>,
    path: SourcePath,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // Authenticate before reading anything the caller sends.
    let grant = authorize_caller(&state, &headers, &path).await?;
    let body = read_limited(body, MAX_ERROR_BODY, state.config.private_timeouts.read).await?;
    let (code, message) = parse_error_report(&body)?;
    let target = pending_target(&state, &path, grant).await?;
    match state.sources.fail(&target, code, &message).await? {
        Settled::Recorded(_) => {}
        Settled::AlreadyProcessed => return Err(DeliveryError::AlreadyProcessed.into()),
        Settled::Held => return Err(DeliveryError::InProgress.into()),
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
