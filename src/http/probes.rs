//! The metrics listener: Prometheus metrics and the liveness and readiness probes.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use sqlx::PgPool;

use crate::metrics::Metrics;

#[derive(Clone)]
struct ProbeState {
    pool: PgPool,
    metrics: Metrics,
}

/// Routes of the metrics listener: `/metrics`, `/healthz` (the process is up) and `/readyz`
/// (the database answers).
pub fn router(pool: PgPool, metrics: Metrics) -> Router {
    Router::new()
        .route("/", get(|| async { StatusCode::OK }))
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readiness))
        .with_state(ProbeState { pool, metrics })
}

async fn render_metrics(State(state): State<ProbeState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

async fn readiness(State(state): State<ProbeState>) -> impl IntoResponse {
    if crate::db::is_reachable(&state.pool, Duration::from_secs(2)).await {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "database unreachable")
    }
}
