//! Per-organisation quotas on creating exports, against the real PostgreSQL: each one refuses
//! with 429, `Retry-After` and a message naming it, counts the refusal, leaves other
//! organisations alone, and holds under concurrent creates.

use serde_json::{Value, json};

use crate::helpers::{Caller, TestApp, export_request};

const EXPORTS: &str = "/api/export/v1/exports";

async fn try_create(app: &TestApp, caller: &Caller, body: &Value) -> crate::helpers::Reply {
    app.post_raw(EXPORTS, caller, body.to_string()).await
}

fn one_source() -> Value {
    export_request("q", "csv", &[("exampleApp", "exampleResource")])
}

/// `count` sources of one resource, told apart by their filters.
fn many_sources(count: usize) -> Value {
    let sources: Vec<Value> = (0..count)
        .map(|part| json!({"application": "exampleApp", "resource": "exampleResource", "filters": {"part": part}}))
        .collect();
    json!({"name": "many", "format": "csv", "sources": sources})
}

#[tokio::test]
async fn unfinished_exports_are_capped_per_organisation() {
    let app = TestApp::spawn_with(&[("QUOTA_ACTIVE_EXPORTS", "2")]).await;
    let caller = Caller::user("org-busy", "alice");
    let first = app.create(&caller, one_source()).await;
    app.create(&caller, one_source()).await;
    let refused = try_create(&app, &caller, &one_source()).await;
    refused.assert_error_containing(429, "quota active_exports exceeded");
    assert!(
        refused.text.contains("QUOTA_ACTIVE_EXPORTS"),
        "{}",
        refused.text
    );
    assert_eq!(refused.header("retry-after"), Some("30"));
    assert_eq!(
        app.metric(r#"export_service_refusals_total{limit="quota_active_exports"}"#)
            .await,
        Some(1.0)
    );
    // Another organisation, and another user of it, are counted apart / together.
    app.create(&Caller::user("org-other", "bob"), one_source())
        .await;
    try_create(&app, &Caller::user("org-busy", "carol"), &one_source())
        .await
        .assert_error_containing(429, "active_exports");
    // A finished export frees its place.
    let id = first["id"].as_str().unwrap();
    let source = first["sources"][0]["id"].as_str().unwrap();
    app.report_error(
        id,
        "exampleApp",
        source,
        Some("psk-example"),
        json!({"message": "gone", "error": 500}),
    )
    .await;
    app.wait_for_status(&caller, id, "failed").await;
    app.create(&caller, one_source()).await;
}

#[tokio::test]
async fn sources_requested_per_hour_are_capped_and_deleting_does_not_refund_them() {
    let app = TestApp::spawn_with(&[("QUOTA_SOURCES_PER_HOUR", "100")]).await;
    let caller = Caller::user("org-hourly", "alice");
    let big = app.create(&caller, many_sources(60)).await;
    app.delete(
        &format!("{EXPORTS}/{}", big["id"].as_str().unwrap()),
        &caller,
    )
    .await;
    let refused = try_create(&app, &caller, &many_sources(41)).await;
    refused.assert_error_containing(429, "quota sources_per_hour exceeded");
    assert!(
        refused
            .text
            .contains("requested 60 sources in the last hour"),
        "{}",
        refused.text
    );
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((3500..=3600).contains(&retry), "{retry}");
    // Up to the quota exactly.
    app.create(&caller, many_sources(40)).await;
    try_create(&app, &caller, &one_source())
        .await
        .assert_error_containing(429, "sources_per_hour");
    // Requests older than the window no longer count.
    sqlx::query(
        "UPDATE source_requests SET requested_at = now() - interval '61 minutes' \
         WHERE org_id = 'org-hourly'",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    app.create(&caller, one_source()).await;
    let ledger: i64 =
        sqlx::query_scalar("SELECT count(*) FROM source_requests WHERE org_id = 'org-hourly'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(ledger, 1, "rows past the window are removed");
}

#[tokio::test]
async fn bytes_stored_are_capped_until_exports_go() {
    let app = TestApp::spawn_with(&[("QUOTA_STORED_BYTES", "100")]).await;
    let caller = Caller::user("org-full", "alice");
    let created = app.create(&caller, one_source()).await;
    let id = created["id"].as_str().unwrap();
    let data = format!("id,text\n1,{}\n", "x".repeat(120));
    let reply = app
        .upload(
            id,
            "exampleApp",
            created["sources"][0]["id"].as_str().unwrap(),
            Some("psk-example"),
            data,
        )
        .await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    app.wait_for_status(&caller, id, "complete").await;
    let refused = try_create(&app, &caller, &one_source()).await;
    refused.assert_error_containing(429, "quota stored_bytes exceeded");
    assert!(
        refused.text.contains("QUOTA_STORED_BYTES"),
        "{}",
        refused.text
    );
    assert_eq!(refused.header("retry-after"), Some("3600"));
    app.delete(&format!("{EXPORTS}/{id}"), &caller).await;
    app.create(&caller, one_source()).await;
}

#[tokio::test]
async fn concurrent_creates_cannot_overshoot_a_quota() {
    let app = TestApp::spawn_with(&[("QUOTA_ACTIVE_EXPORTS", "3")]).await;
    let caller = Caller::user("org-race", "alice");
    let body = one_source();
    let replies = futures::future::join_all((0..8).map(|_| try_create(&app, &caller, &body))).await;
    let mut statuses: Vec<u16> = replies.iter().map(|reply| reply.status).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [202, 202, 202, 429, 429, 429, 429, 429]);
}
