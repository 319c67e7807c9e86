//! The HTTP edge: routers for each listener, the middleware they share, and the mapping of
//! domain results to responses.

pub mod admin;
pub mod audit;
pub mod body;
pub mod error;
pub mod exports;
pub mod identity;
pub mod internal;
pub mod listener;
pub mod observe;
pub mod openapi;
pub mod probes;
pub mod rate_limit;
pub mod request_id;
pub mod upload_slots;
pub mod views;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sqlx::PgPool;
use tower_http::catch_panic::CatchPanicLayer;

use crate::config::Config;
use crate::db::{AuditRepository, CleanupRepository, ExportRepository, SourceRepository};
use crate::metrics::Metrics;
use crate::storage::{KeyLayout, ObjectStore};
use error::ApiError;
use observe::Observer;
use rate_limit::RateLimiter;
use request_id::RequestIdGenerator;

/// What handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The service configuration.
    pub config: Arc<Config>,
    /// Exports.
    pub exports: ExportRepository,
    /// Source transitions.
    pub sources: SourceRepository,
    /// Deferred object deletion.
    pub cleanup: CleanupRepository,
    /// The audit trail.
    pub audit: AuditRepository,
    /// How many authentication failures this second may still be written to the audit trail.
    pub auth_failure_audits: Arc<audit::AuthFailureBudget>,
    /// Bearer-token checks on the internal API, when OIDC is on.
    pub oidc: Option<Arc<crate::oidc::OidcVerifier>>,
    /// Object storage.
    pub store: ObjectStore,
    /// Object keys.
    pub keys: KeyLayout,
    /// Uploads this replica accepts at once (each holds up to two parts in memory), in total
    /// and per application.
    pub upload_slots: Arc<upload_slots::UploadSlots>,
    /// The holds running uploads have on their sources (released when a shutdown abandons them).
    pub upload_holds: Arc<crate::delivery::hold::HeldUploads>,
    /// The plugins bound to applications (from the registry and the plugin directory).
    pub plugins: Option<Arc<crate::registry::binding::LiveBindings>>,
    /// The plugin registry (the admin API's backend).
    pub registry: Option<crate::registry::Registry>,
    /// Metrics.
    pub metrics: Metrics,
}

impl AppState {
    /// State over a database pool and an object store.
    pub fn new(config: Arc<Config>, pool: PgPool, store: ObjectStore, metrics: Metrics) -> Self {
        Self {
            keys: KeyLayout::new(&config.layout.source_key_template),
            upload_slots: Arc::new(upload_slots::UploadSlots::new(
                config.data_path.max_concurrent_uploads,
                config.data_path.max_uploads_per_application,
                metrics.upload_slots_in_use.clone(),
            )),
            upload_holds: Arc::default(),
            auth_failure_audits: Arc::default(),
            oidc: config
                .oidc
                .clone()
                .map(|oidc| Arc::new(crate::oidc::OidcVerifier::new(oidc))),
            plugins: None,
            registry: None,
            config,
            exports: ExportRepository::new(pool.clone()),
            sources: SourceRepository::new(pool.clone()),
            audit: AuditRepository::new(pool.clone()),
            cleanup: CleanupRepository::new(pool),
            store,
            metrics,
        }
    }
}

impl AppState {
    /// The upload use case over this replica's repositories, store and plugins.
    pub fn delivery(&self) -> crate::delivery::Delivery<'_> {
        crate::delivery::Delivery {
            sources: &self.sources,
            store: &self.store,
            keys: &self.keys,
            holds: &self.upload_holds,
            plugins: self.plugins.as_ref(),
            metrics: &self.metrics,
            data_path: &self.config.data_path,
            idle_timeout: self.config.private_timeouts.read,
        }
    }
}

/// The public (tenant) API router.
pub fn public_router(state: AppState, request_ids: Arc<RequestIdGenerator>) -> Router {
    let limiter = Arc::new(RateLimiter::new(state.config.rate_limit));
    let deadline = state.config.public_timeouts.write;
    let exports = Router::new()
        .route(
            "/exports",
            axum::routing::post(exports::create_export).get(exports::list_exports),
        )
        .route(
            "/exports/{id}",
            get(exports::download_export).delete(exports::delete_export),
        )
        .route("/exports/{id}/status", get(exports::export_status))
        // Inside the rate limit: a request refused for its rate costs no audit write.
        .route_layer(from_fn_with_state(state.clone(), audit::audit_tenant))
        .route_layer(from_fn_with_state(limiter, rate_limit::rate_limit));
    let api = Router::new()
        .merge(exports)
        .route("/ping", get(ping))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(from_fn_with_state(
            state.clone(),
            identity::require_identity,
        ));
    let observer = Observer {
        request_ids,
        request_id_header: request_id::PUBLIC_REQUEST_ID_HEADER,
        metrics: state.metrics.clone(),
    };
    Router::new()
        .route("/", get(|| async { StatusCode::OK }))
        .route("/docs", get(openapi::docs_page))
        .route("/api/export/v1/openapi.json", get(openapi::openapi_json))
        .nest("/api/export/v1", api)
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(from_fn_with_state(deadline, response_deadline))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(from_fn_with_state(observer, observe::observe))
        .with_state(state)
}

/// The internal (source application) API router.
pub fn internal_router(state: AppState, request_ids: Arc<RequestIdGenerator>) -> Router {
    let observer = Observer {
        request_ids,
        request_id_header: request_id::INTERNAL_REQUEST_ID_HEADER,
        metrics: state.metrics.clone(),
    };
    let mut router = Router::new().route("/", get(|| async { StatusCode::OK }));
    for mount in internal::MOUNTS {
        router = router.nest(mount, internal::routes(state.clone(), mount));
    }
    router = router.nest(admin::ADMIN_BASE, admin::routes(&state));
    router
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(from_fn_with_state(observer, observe::observe))
        .with_state(state)
}

/// `GET /api/export/v1/ping`: a liveness check that also proves the identity is accepted.
async fn ping() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "Hello world",
    )
}

/// Bounds the time to produce a response head (a streamed body is not cut short). A create is
/// exempt: answering 503 after its transaction committed would make the client retry and
/// create a second export; its body read has its own deadline, and its statements the
/// database's (`DB_STATEMENT_TIMEOUT`) and the pool's acquire timeout, all before the commit.
async fn response_deadline(
    State(deadline): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() == axum::http::Method::POST {
        return next.run(request).await;
    }
    match tokio::time::timeout(deadline, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(deadline_ms = deadline.as_millis(), "request timed out");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the request took longer than {} ms; retry",
                    deadline.as_millis()
                ),
            )
            .retry_after(1)
            .into_response()
        }
    }
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("handler panicked");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal server error").into_response()
}
