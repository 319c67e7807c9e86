//! The one error envelope of every HTTP response the service produces itself:
//! `{"message": "<what is wrong>", "code": <status>}`.
//!
//! Client errors carry a message that says what to fix. Server errors are logged (with the
//! request's span, so with its request id) and answered with a generic message: internal
//! details never reach the client.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::db::DbError;

/// The JSON body of an error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for a person to read.
    #[schema(example = "'abc' is not a valid export UUID")]
    pub message: String,
    /// The HTTP status code.
    #[schema(example = 400)]
    pub code: u16,
    /// Row-level problems of rejected data (uploads only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub violations: Option<Vec<Violation>>,
}

/// One problem in rejected data.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Violation {
    /// The data record (from 1; the CSV header is 0), when the problem is in one.
    pub row: Option<u64>,
    /// The field, when the problem is in one.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl From<export_plugin_host::Violation> for Violation {
    fn from(violation: export_plugin_host::Violation) -> Self {
        Self {
            row: violation.row,
            field: violation.field,
            message: violation.message,
        }
    }
}

/// An error answered to the client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    retry_after_secs: Option<u64>,
    violations: Option<Vec<Violation>>,
}

impl ApiError {
    /// An error with `status` and a message for the client.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after_secs: None,
            violations: None,
        }
    }

    /// Adds the row-level problems of rejected data.
    pub fn with_violations(
        mut self,
        violations: impl IntoIterator<Item = impl Into<Violation>>,
    ) -> Self {
        self.violations = Some(violations.into_iter().map(Into::into).collect());
        self
    }

    /// 400 Bad Request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404 Not Found for an export the caller cannot see.
    pub fn export_not_found(id: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("record '{id}' not found"))
    }

    /// Adds a `Retry-After` header (seconds).
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_secs = Some(seconds);
        self
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message the caller reads.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// 500 for a failure the client cannot fix; `cause` is logged, not sent.
    pub fn internal(cause: &dyn std::error::Error) -> Self {
        tracing::error!(error = %cause, "request failed");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal server error")
    }
}

impl From<DbError> for ApiError {
    fn from(error: DbError) -> Self {
        match error {
            DbError::Unavailable(_) => {
                tracing::warn!(error = %error, "database unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the database is unavailable; retry shortly",
                )
                .retry_after(2)
            }
            other => Self::internal(&other),
        }
    }
}

/// The message of an error answer, kept on the response for the layers around the handler
/// (the audit trail records it as the reason).
#[derive(Debug, Clone)]
pub struct ErrorMessage(pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = ErrorMessage(self.message.clone());
        let mut response = (
            self.status,
            Json(ErrorBody {
                message: self.message,
                code: self.status.as_u16(),
                violations: self.violations,
            }),
        )
            .into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        if let Some(seconds) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response.extensions_mut().insert(message);
        response
    }
}

/// Fallback for unknown paths: 404 in the JSON envelope.
pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such endpoint")
}

/// Fallback for a known path with the wrong method: 405 in the JSON envelope.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this endpoint",
    )
}
