//! The metrics listener: Prometheus metrics under the upstream names, liveness and readiness.

use crate::helpers::{Caller, TestApp, export_request};

#[tokio::test]
async fn metrics_count_requests_under_upstream_names() {
    let app = TestApp::spawn().await;
    let caller = Caller::user("org-1", "alice");
    app.create(
        &caller,
        export_request("n", "csv", &[("exampleApp", "exampleResource")]),
    )
    .await;
    app.get("/api/export/v1/exports?limit=x", &caller).await;
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains(r#"export_service_http_requests_total{code="202",method="POST"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"export_service_http_requests_total{code="400",method="GET"} 1"#));
    assert!(metrics.contains("export_service_http_response_time_seconds_bucket{method=\"POST\""));
    assert!(metrics.contains(r#"export_service_exports_created_total{format="csv"} 1"#));
    assert!(metrics.contains("process_resident_memory_bytes"));
}

#[tokio::test]
async fn health_and_readiness() {
    let app = TestApp::spawn().await;
    let healthz = app
        .client
        .get(app.metrics_url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(healthz.status(), 200);
    let readyz = app
        .client
        .get(app.metrics_url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(readyz.status(), 200);
}

#[tokio::test]
async fn readiness_fails_and_api_answers_503_when_the_database_is_unreachable() {
    // Nothing listens on port 1: every connection attempt fails at once.
    let app = TestApp::spawn_on("postgres://postgres@127.0.0.1:1/none", &[]).await;
    let readyz = app
        .client
        .get(app.metrics_url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(readyz.status(), 503);
    assert_eq!(
        app.client
            .get(app.metrics_url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let caller = Caller::user("org-1", "alice");
    let reply = app.get("/api/export/v1/exports", &caller).await;
    reply.assert_error(503, "the database is unavailable; retry shortly");
    assert_eq!(reply.header("retry-after"), Some("2"));
}
