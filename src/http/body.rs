//! Reading request bodies with a size cap and a deadline.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use futures::StreamExt;

use super::error::ApiError;

/// Reads the whole body, refusing more than `limit` bytes (413) or a body that is still
/// arriving after `timeout` (408).
pub async fn read_limited(body: Body, limit: usize, timeout: Duration) -> Result<Bytes, ApiError> {
    let read = async {
        let mut stream = body.into_data_stream();
        let mut collected = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|error| {
                ApiError::bad_request(format!("could not read the request body: {error}"))
            })?;
            if collected.len() + chunk.len() > limit {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body is larger than the limit of {limit} bytes"),
                ));
            }
            collected.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(collected))
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or_else(|_| {
            Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body was not received within {} ms",
                    timeout.as_millis()
                ),
            ))
        })
}
