//! The `x-rh-identity` gate of the public API: every request under `/api/export/v1` must carry
//! a valid identity, which handlers then receive as an extension.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::domain::identity::Identity;

/// The identity header's name.
pub const IDENTITY_HEADER: &str = "x-rh-identity";

/// Parses the identity header; answers 400 with the reason when it is unusable.
pub async fn require_identity(mut request: Request, next: Next) -> Response {
    let header = request
        .headers()
        .get(IDENTITY_HEADER)
        .map(|value| value.to_str().unwrap_or("\u{0}invalid"));
    match Identity::from_header(header) {
        Ok(identity) => {
            tracing::Span::current().record("org_id", identity.owner.org_id.as_str());
            request.extensions_mut().insert(identity);
            next.run(request).await
        }
        Err(error) => ApiError::bad_request(error.to_string()).into_response(),
    }
}
