//! The outermost middleware of every API listener: request id, a tracing span per request, the
//! access log line and the HTTP metrics.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use super::request_id::RequestIdGenerator;
use crate::metrics::Metrics;

/// What the observe middleware needs.
#[derive(Debug, Clone)]
pub struct Observer {
    /// Source of request ids.
    pub request_ids: Arc<RequestIdGenerator>,
    /// Which header carries the request id on this listener.
    pub request_id_header: &'static str,
    /// Where HTTP metrics go.
    pub metrics: Metrics,
}

/// Assigns the request id, runs the request inside a span carrying it (handlers add `org_id`
/// and `export_id`), echoes the id, logs one access line and records metrics.
pub async fn observe(
    State(observer): State<Observer>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let request_id = observer
        .request_ids
        .for_request(request.headers(), observer.request_id_header);
    let method = request.method().clone();
    // Only standard methods become metric labels: arbitrary ones would create unbounded series.
    let method_label = match method.as_str() {
        known @ ("GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS") => known,
        _ => "OTHER",
    };
    let span = tracing::info_span!(
        "request",
        request_id = %request_id.0,
        method = %method,
        path = %request.uri().path(),
        org_id = tracing::field::Empty,
        export_id = tracing::field::Empty,
    );
    request.extensions_mut().insert(request_id.clone());
    let mut response = next.run(request).instrument(span.clone()).await;

    let elapsed = started.elapsed();
    let status = response.status();
    span.in_scope(|| {
        tracing::info!(
            status = status.as_u16(),
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            "request served"
        );
    });
    observer
        .metrics
        .http_requests
        .with_label_values(&[status.as_str(), method_label])
        .inc();
    observer
        .metrics
        .http_response_time
        .with_label_values(&[method_label])
        .observe(elapsed.as_secs_f64());
    if let Ok(value) = HeaderValue::from_str(&request_id.0) {
        response
            .headers_mut()
            .insert(observer.request_id_header, value);
    }
    response
}
