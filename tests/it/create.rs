//! `POST /exports`: every validation error of contract §5.1, and what a valid request stores.

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};

use crate::helpers::{Caller, TestApp, export_request};

const EXPORTS: &str = "/api/export/v1/exports";

#[tokio::test]
async fn a_valid_request_is_accepted_and_stored() {
    let app = TestApp::spawn().await;
    let caller = Caller::user_with_account("org-1", "alice", "acct-1");
    let body = r#"{"name":"Quarterly","format":"csv","status":"complete","id":"00000000-0000-0000-0000-000000000000",
        "sources":[{"application":"exampleApp","resource":"exampleResource","filters":{"zeta":1,"alpha":"x"}},
                   {"application":"exampleApp","resource":"anotherExampleResource"}]}"#;
    let reply = app
        .client
        .post(app.url(EXPORTS))
        .header("x-rh-identity", caller.header())
        .header("x-rh-insights-request-id", "req-123")
        .body(body)
        .send()
        .await
        .unwrap();
    let reply = crate::helpers::Reply::from(reply).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    assert_eq!(reply.header("x-rh-insights-request-id"), Some("req-123"));
    let created = reply.json();

    // Client-supplied id and status are ignored.
    assert_ne!(created["id"], json!("00000000-0000-0000-0000-000000000000"));
    assert_eq!(created["status"], "pending");
    assert_eq!(created["name"], "Quarterly");
    assert_eq!(created["format"], "csv");
    assert!(created.get("completed_at").is_none());
    let keys: Vec<&str> = created
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "id",
            "created_at",
            "expires_at",
            "name",
            "format",
            "status",
            "sources",
            // Ours, after the upstream's keys (docs/API-DIFFERENCES.md, "Progress").
            "sources_answered"
        ]
    );

    // Default expiry: EXPORT_EXPIRY_DAYS (7) after creation.
    let created_at: DateTime<Utc> = created["created_at"].as_str().unwrap().parse().unwrap();
    let expires_at: DateTime<Utc> = created["expires_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(expires_at - created_at, Duration::days(7));
    assert!((Utc::now() - created_at).num_seconds().abs() < 60);

    let sources = created["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 2);
    assert_eq!(sources[0]["status"], "pending");
    assert_eq!(sources[0]["application"], "exampleApp");
    assert_eq!(sources[0]["resource"], "exampleResource");
    // Filters are echoed in the client's key order, and read back the same.
    assert_eq!(
        serde_json::to_string(&sources[0]["filters"]).unwrap(),
        r#"{"zeta":1,"alpha":"x"}"#
    );
    assert_eq!(sources[1]["filters"], Value::Null);
    let source_keys: Vec<&str> = sources[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        source_keys,
        ["id", "application", "status", "resource", "filters"]
    );

    let id = created["id"].as_str().unwrap();
    let status = app.get(&format!("{EXPORTS}/{id}/status"), &caller).await;
    assert_eq!(status.status, 200);
    assert_eq!(
        status.json(),
        created,
        "status must read back exactly what create returned"
    );

    let (request_id, account): (Option<String>, String) =
        sqlx::query_as("SELECT request_id, account_id FROM exports WHERE id = $1::uuid")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(request_id.as_deref(), Some("req-123"));
    assert_eq!(account, "acct-1");
}

#[tokio::test]
async fn a_generated_request_id_is_echoed_and_stored() {
    let app = TestApp::spawn().await;
    let caller = Caller::user("org-1", "alice");
    let reply = app
        .post_raw(
            EXPORTS,
            &caller,
            export_request("n", "json", &[("exampleApp", "exampleResource")]).to_string(),
        )
        .await;
    assert_eq!(reply.status, 202);
    let generated = reply
        .header("x-rh-insights-request-id")
        .unwrap()
        .to_string();
    assert!(generated.starts_with("test-host/"), "{generated}");
    let stored: Option<String> = sqlx::query_scalar("SELECT request_id FROM exports")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, Some(generated));
}

#[tokio::test]
async fn explicit_expiry_and_case_insensitive_fields() {
    let app = TestApp::spawn_with(&[("EXPORT_MAX_EXPIRY_DAYS", "3650")]).await;
    let caller = Caller::user("org-1", "alice");
    let created = app
        .create(
            &caller,
            json!({"Name": "n", "FORMAT": "json", "expires_at": "2031-02-03T04:05:06+01:00",
                   "Sources": [{"Application": "exampleApp", "RESOURCE": "exampleResource", "filters": null}]}),
        )
        .await;
    assert_eq!(created["expires_at"], "2031-02-03T03:05:06Z");
    assert_eq!(created["format"], "json");
}

#[tokio::test]
async fn every_validation_error_in_upstream_order() {
    let app = TestApp::spawn().await;
    let caller = Caller::user("org-1", "alice");
    let post = |body: &'static str| app.post_raw(EXPORTS, &caller, body);

    post("")
        .await
        .assert_error(400, "request body is empty: expected a JSON object");
    post("{\"name\": ")
        .await
        .assert_error_containing(400, "request body is not valid JSON");
    post("[1,2]")
        .await
        .assert_error(400, "request body must be a JSON object");
    post(r#"{"name": 1}"#)
        .await
        .assert_error(400, "'name' must be a string");
    post(r#"{"expires_at": "next week"}"#)
        .await
        .assert_error_containing(400, "'expires_at' must be an RFC 3339 timestamp");
    post(r#"{"format": "csv"}"#)
        .await
        .assert_error(400, "no sources provided");
    post(r#"{"format": "csv", "sources": null}"#)
        .await
        .assert_error(400, "no sources provided");
    post(r#"{"format": "csv", "sources": []}"#)
        .await
        .assert_error(400, "no sources provided");
    post(r#"{"format": "csv", "sources": [{"application": "exampleApp", "resource": "secret"}]}"#)
        .await
        .assert_error(406, "Payload does not match Configured Exports");
    post(r#"{"format": "csv", "sources": [{"application": "exampleapp", "resource": "exampleResource"}]}"#)
        .await
        .assert_error(406, "Payload does not match Configured Exports");
    // 406 is checked before filters and format.
    post(r#"{"format": "xml", "sources": [{"application": "nope", "resource": "x", "filters": "{}"}]}"#)
        .await
        .assert_error(406, "Payload does not match Configured Exports");
    post(r#"{"format": "xml", "sources": [{"application": "exampleApp", "resource": "exampleResource", "filters": "{}"}]}"#)
        .await
        .assert_error(400, "invalid json format of filters");
    post(r#"{"format": "csv", "sources": [{"application": "exampleApp", "resource": "exampleResource", "filters": [1]}]}"#)
        .await
        .assert_error(400, "invalid json format of filters");
    post(r#"{"format": "xml", "sources": [{"application": "exampleApp", "resource": "exampleResource"}]}"#)
        .await
        .assert_error(400, "invalid or missing payload format");
    post(r#"{"sources": [{"application": "exampleApp", "resource": "exampleResource"}]}"#)
        .await
        .assert_error(400, "invalid or missing payload format");

    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM exports")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 0, "no rejected request may store anything");
}

#[tokio::test]
async fn limits_are_enforced_with_clear_errors() {
    let app = TestApp::spawn().await;
    let caller = Caller::user("org-1", "alice");
    let too_many = export_request("n", "csv", &vec![("exampleApp", "exampleResource"); 101]);
    app.post_raw(EXPORTS, &caller, too_many.to_string())
        .await
        .assert_error(
            400,
            "too many sources: 101 requested, at most 100 are allowed",
        );
    let long_name = export_request(
        &"n".repeat(1025),
        "csv",
        &[("exampleApp", "exampleResource")],
    );
    app.post_raw(EXPORTS, &caller, long_name.to_string())
        .await
        .assert_error_containing(400, "'name' is too long");
    let huge = format!(r#"{{"name": "{}"}}"#, "x".repeat(2 * 1024 * 1024));
    app.post_raw(EXPORTS, &caller, huge)
        .await
        .assert_error_containing(413, "request body is larger than the limit");
}

#[tokio::test]
async fn a_slow_body_times_out_with_408() {
    let app = TestApp::spawn_with(&[("PUBLIC_HTTP_SERVER_READ_TIMEOUT", "300ms")]).await;
    let caller = Caller::user("org-1", "alice");
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let stream = tokio_stream_from(receiver);
    let request = app
        .client
        .post(app.url(EXPORTS))
        .header("x-rh-identity", caller.header())
        .body(reqwest::Body::wrap_stream(stream))
        .send();
    sender.send(Ok(b"{\"name\":".to_vec())).await.unwrap();
    let reply = crate::helpers::Reply::from(request.await.unwrap()).await;
    drop(sender);
    reply.assert_error_containing(408, "was not received within 300 ms");
}

fn tokio_stream_from(
    mut receiver: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures::stream::poll_fn(move |context| receiver.poll_recv(context))
}

#[tokio::test]
async fn a_create_is_never_answered_503_once_it_may_have_committed() {
    // A response deadline far shorter than any create: reads answer 503, a create still
    // answers for what it stored, so a client never retries into a second export.
    let app = TestApp::spawn_with(&[("PUBLIC_HTTP_SERVER_WRITE_TIMEOUT", "1ms")]).await;
    let caller = Caller::user("org-1", "alice");
    for _ in 0..5 {
        let reply = app
            .post_raw(
                EXPORTS,
                &caller,
                export_request("deadline", "json", &[("exampleApp", "exampleResource")])
                    .to_string(),
            )
            .await;
        assert_eq!(reply.status, 202, "{:?}", reply.json());
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM exports")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, 5, "one export per accepted create");
}

#[tokio::test]
async fn repeated_sources_and_expiry_beyond_the_maximum_are_refused() {
    let app = TestApp::spawn_with(&[("EXPORT_MAX_EXPIRY_DAYS", "30")]).await;
    let caller = Caller::user("org-1", "alice");
    let source = json!({"application": "exampleApp", "resource": "exampleResource"});
    let repeated = json!({"format": "csv", "sources": [source, source]});
    app.post_raw(EXPORTS, &caller, repeated.to_string())
        .await
        .assert_error(
            400,
            "sources[1] repeats sources[0] (exampleApp/exampleResource with the same filters); \
             request each source once",
        );
    let far = (Utc::now() + Duration::days(31)).to_rfc3339();
    let late = json!({"format": "csv", "expires_at": far, "sources": [source]});
    app.post_raw(EXPORTS, &caller, late.to_string())
        .await
        .assert_error_containing(400, "'expires_at' may be at most 30 days from now");
    let exports: i64 = sqlx::query_scalar("SELECT count(*) FROM exports")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(exports, 0, "a refused request stores nothing");

    let near = (Utc::now() + Duration::days(29)).to_rfc3339();
    app.create(
        &caller,
        json!({"format": "csv", "expires_at": near, "sources": [source]}),
    )
    .await;
}
